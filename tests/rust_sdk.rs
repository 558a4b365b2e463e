//! The Rust `opentelemetry-otlp` exporter, over gRPC and over HTTP protobuf.

mod common;

use common::{assert_sql_view_matches, assert_stored_exactly, Server};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use opentelemetry_sdk::Resource;

fn export_through(exporter: SpanExporter, service: &str) -> ExportTraceServiceRequest {
    let memory = InMemorySpanExporter::default();
    let resource = Resource::builder().with_service_name(service.to_string()).build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(exporter)
        .with_simple_exporter(memory.clone())
        .build();
    let tracer = provider.tracer("rust-test");
    let mut root = tracer
        .span_builder("handle request")
        .with_kind(SpanKind::Server)
        .start(&tracer);
    root.set_attribute(KeyValue::new("http.request.method", "GET"));
    root.set_attribute(KeyValue::new("retries", 3_i64));
    root.add_event("accepted", vec![KeyValue::new("queue.depth", 7_i64)]);
    let cx = Context::current_with_span(root);
    let mut child = tracer
        .span_builder("load user")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    child.set_status(Status::error("user store timed out"));
    child.end();
    cx.span().end();
    provider.force_flush().unwrap();
    // Read before shutdown: the in-memory exporter forgets its spans when shut down.
    let spans = memory.get_finished_spans().unwrap();
    provider.shutdown().unwrap();
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(&resource),
        ),
    }
}

/// Both exporters' clients (tonic, hyper) run on tokio, so the test provides a runtime.
fn round_trip(service: &str, exporter: impl FnOnce(&Server) -> SpanExporter) {
    let server = Server::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let exported = export_through(exporter(&server), service);
    assert_stored_exactly(&server, &exported);
    assert_sql_view_matches(&server, &exported);
}

#[test]
fn rust_otlp_grpc_exporter_round_trips() {
    round_trip("rust-grpc", |server| {
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(server.grpc_endpoint())
            .build()
            .unwrap()
    });
}

#[test]
fn rust_otlp_http_exporter_round_trips() {
    round_trip("rust-http", |server| {
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", server.http_endpoint()))
            .build()
            .unwrap()
    });
}
