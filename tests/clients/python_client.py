"""Exports one two-service trace (plus a linked one) through the Python SDK's own OTLP exporters.

frontend exports over OTLP/gRPC and backend over OTLP/HTTP protobuf, both gzip-compressed.
Every span is also kept in memory and written, encoded by the SDK's own OTLP encoder, to
OUT_FILE as an ExportTraceServiceRequest: the exact bytes the test compares ducktrace's API with.

usage: python_client.py GRPC_ENDPOINT HTTP_ENDPOINT OUT_FILE
"""

import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
import grpc

grpc_endpoint, http_endpoint, out_file = sys.argv[1:4]


def provider(service, exporter):
    memory = InMemorySpanExporter()
    resource = Resource.create({"service.name": service, "service.version": "1.2.3", "deployment.environment": "test"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    return tracer_provider, memory


frontend, frontend_memory = provider(
    "frontend", GrpcExporter(endpoint=grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip)
)
backend, backend_memory = provider(
    "backend", HttpExporter(endpoint=http_endpoint + "/v1/traces", compression=HttpCompression.Gzip)
)
frontend_tracer = frontend.get_tracer("frontend.http", "0.9.0")
backend_tracer = backend.get_tracer("backend.db", "2.0.0", schema_url="https://opentelemetry.io/schemas/1.21.0")

with frontend_tracer.start_as_current_span("nightly-batch", kind=SpanKind.PRODUCER) as batch:
    linked = batch.get_span_context()

every_type = {
    "http.route": "/checkout/<id>",
    "http.status_code": 500,
    "retry": True,
    "load": 0.75,
    "tags": ["a", "b", "<script>"],
    "counts": [1, 2, 3],
    "ratios": [0.5, 1.5],
    "flags": [True, False],
    "big": 9007199254740993,
    "negative": -42,
}
with frontend_tracer.start_as_current_span(
    "GET /checkout", kind=SpanKind.SERVER, attributes=every_type, links=[Link(linked, {"link.kind": "follows-from"})]
) as root:
    root.add_event("cache.miss", {"cache.key": "user:42", "attempt": 2})
    with frontend_tracer.start_as_current_span("call backend", kind=SpanKind.CLIENT):
        carrier = {}
        TraceContextTextMapPropagator().inject(carrier)
        remote = TraceContextTextMapPropagator().extract(carrier)
        with backend_tracer.start_as_current_span(
            "SELECT orders", context=remote, kind=SpanKind.SERVER, attributes={"db.system": "postgresql"}
        ) as query:
            query.record_exception(ValueError("deadlock detected"))
            query.set_status(Status(StatusCode.ERROR, "deadlock detected"))
            with backend_tracer.start_as_current_span("fetch rows", kind=SpanKind.INTERNAL) as fetch:
                fetch.set_status(Status(StatusCode.OK))

frontend.shutdown()
backend.shutdown()
exported = list(frontend_memory.get_finished_spans()) + list(backend_memory.get_finished_spans())
with open(out_file, "wb") as out:
    out.write(encode_spans(exported).SerializeToString())
print(f"exported {len(exported)} spans")
