"""Exports traces from several threads at once through the Python SDK's own OTLP exporters, to
a server that may refuse them as overloaded, and reports what the exporters made of it.

Every thread has its own exporter, OTLP/gRPC on even threads and OTLP/HTTP protobuf on odd
ones, and exports EXPORTS traces of 5 spans, one trace per export call. The exporters retry a
refusal after the delay the server gives; each retry is a warning in their log, counted here.
READY_FILE is created once every thread is about to export. Prints JSON: {"exported": [trace
ids whose export succeeded], "failed": [the others], "retries": retries logged}.

usage: overload_client.py GRPC_ENDPOINT HTTP_ENDPOINT THREADS EXPORTS READY_FILE
"""

import json
import logging
import sys
import threading

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

grpc_endpoint, http_endpoint = sys.argv[1:3]
threads, exports = int(sys.argv[3]), int(sys.argv[4])
ready_file = sys.argv[5]
SPANS_PER_TRACE = 5


class RetryCounter(logging.Handler):
    """Counts the exporters' retries; logging calls emit under the handler's own lock."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.retries = 0

    def emit(self, record):
        if record.getMessage().startswith("Transient error"):
            self.retries += 1


retry_counter = RetryCounter()
logging.getLogger("opentelemetry.exporter").addHandler(retry_counter)


def traces(thread):
    """EXPORTS finished traces of this thread, each a list of spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"overload-{thread}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("overload")
    for export in range(exports):
        with tracer.start_as_current_span(f"export {export}"):
            for child in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"step {child}"):
                    pass
    by_trace = {}
    for span in memory.get_finished_spans():
        by_trace.setdefault(span.context.trace_id, []).append(span)
    return list(by_trace.values())


exported, failed = [], []
outcomes = threading.Lock()
start = threading.Barrier(threads, action=lambda: open(ready_file, "w").close())


def run(thread):
    if thread % 2 == 0:
        exporter = GrpcExporter(endpoint=grpc_endpoint, insecure=True, timeout=30)
    else:
        exporter = HttpExporter(endpoint=http_endpoint + "/v1/traces", timeout=30)
    batches = traces(thread)
    start.wait()
    for spans in batches:
        result = exporter.export(spans)
        trace_id = format(spans[0].context.trace_id, "032x")
        with outcomes:
            (exported if result == SpanExportResult.SUCCESS else failed).append(trace_id)
    exporter.shutdown()


workers = [threading.Thread(target=run, args=(thread,)) for thread in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps({"exported": exported, "failed": failed, "retries": retry_counter.retries}))
