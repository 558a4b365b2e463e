// Exports one two-service trace through the Node SDK's own OTLP exporters: frontend over
// OTLP/HTTP JSON (hex ids, chunked transfer encoding) and backend over OTLP/gRPC. Every span is
// also kept in memory and written, encoded by the SDK's own protobuf serializer, to OUT_FILE.
//
// usage: node node_client.mjs GRPC_ENDPOINT HTTP_ENDPOINT OUT_FILE
import { writeFileSync } from 'node:fs';
import { context, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { TracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPTraceExporter as HttpExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';

const [grpcEndpoint, httpEndpoint, outFile] = process.argv.slice(2);

function provider(service, exporter) {
  const memory = new InMemorySpanExporter();
  const tracerProvider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': service, 'service.version': '4.5.6' }),
    spanProcessors: [new SimpleSpanProcessor({ exporter }), new SimpleSpanProcessor({ exporter: memory })],
  });
  return { tracerProvider, memory };
}

const frontend = provider('node-frontend', new HttpExporter({ url: `${httpEndpoint}/v1/traces` }));
const backend = provider('node-backend', new GrpcExporter({ url: grpcEndpoint }));
const frontendTracer = frontend.tracerProvider.getTracer('node.http', '1.0.0');
const backendTracer = backend.tracerProvider.getTracer('node.db', '2.0.0');

const root = frontendTracer.startSpan('POST /orders', {
  kind: SpanKind.SERVER,
  attributes: { 'http.method': 'POST', 'http.status_code': 201, 'order.total': 99.5, 'vip': true, 'items': ['x', 'y'] },
});
root.addEvent('validated', { 'rules.checked': 7 });
const rootContext = trace.setSpan(context.active(), root);
const call = backendTracer.startSpan('INSERT orders', { kind: SpanKind.CLIENT, attributes: { 'db.system': 'sqlite' } }, rootContext);
call.setStatus({ code: SpanStatusCode.ERROR, message: 'constraint failed' });
call.end();
root.end();

await frontend.tracerProvider.forceFlush();
await backend.tracerProvider.forceFlush();
const spans = [...frontend.memory.getFinishedSpans(), ...backend.memory.getFinishedSpans()];
await frontend.tracerProvider.shutdown();
await backend.tracerProvider.shutdown();
writeFileSync(outFile, ProtobufTraceSerializer.serializeRequest(spans));
console.log(`exported ${spans.length} spans`);
