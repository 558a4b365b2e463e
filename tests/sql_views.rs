//! The documented views: traces, span_events, span_links and service_edges.

mod common;

use std::time::{Duration, Instant};

use common::{post_protobuf, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{json, Value as Json};

const TRACE: [u8; 16] = [0xab; 16];
const START: u64 = 1_700_000_000_000_000_000;

fn span(id: u64, parent: Option<u64>, name: &str, offset_ms: u64, millis: u64) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: START + offset_ms * 1_000_000,
        end_time_unix_nano: START + (offset_ms + millis) * 1_000_000,
        ..Default::default()
    }
}

fn from_service(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let name = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(service.into())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![name],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn rows(server: &Server, sql: &str) -> Json {
    server.sql(sql)["rows"].clone()
}

/// Waits for the edge indexer (a pass every 2 s) to show the expected edges.
fn wait_for_edges(server: &Server, expected: Json) {
    let query = "SELECT caller, callee, calls, errors, p50_ns FROM service_edges ORDER BY ALL";
    wait_for(server, query, expected);
}

/// Waits for the background indexer to make `query` answer `expected`.
fn wait_for(server: &Server, query: &str, expected: Json) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let edges = rows(server, query);
        if edges == expected || Instant::now() > deadline {
            assert_eq!(edges, expected);
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn service_edges_pair_children_with_parents_that_arrive_later() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(data_dir.path(), &[]);
    // The children end, and are exported, first: the database call, and an internal span.
    let mut query = span(3, Some(2), "SELECT orders", 10, 30);
    query.status = Some(Status {
        code: 2,
        message: "deadlock".into(),
    });
    post_protobuf(&server, &from_service("orders-db", vec![query]));
    post_protobuf(
        &server,
        &from_service("checkout", vec![span(2, Some(1), "load cart", 5, 40)]),
    );
    std::thread::sleep(Duration::from_millis(2500));
    // The root arrives a pass later; its child in the same service makes no edge.
    post_protobuf(
        &server,
        &from_service("checkout", vec![span(1, None, "POST /checkout", 0, 50)]),
    );
    wait_for_edges(&server, json!([["checkout", "orders-db", 1, 1, 30_000_000]]));

    // The watermark survives a restart: nothing is matched twice.
    assert!(server.terminate().success());
    let server = Server::start_in(data_dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(2500));
    wait_for_edges(&server, json!([["checkout", "orders-db", 1, 1, 30_000_000]]));

    let traces = rows(
        &server,
        "SELECT root_service, root_operation, duration_ns, span_count, error_count, services FROM traces",
    );
    assert_eq!(
        traces,
        json!([[
            "checkout",
            "POST /checkout",
            50_000_000,
            3,
            1,
            ["checkout", "orders-db"]
        ]])
    );
}

#[test]
fn call_minutes_merge_the_calls_of_one_minute_found_in_separate_passes() {
    let server = Server::start();
    let call = |id| span(id, Some(1), "SELECT orders", 10, 30);
    post_protobuf(
        &server,
        &from_service("checkout", vec![span(1, None, "POST /checkout", 0, 50)]),
    );
    post_protobuf(&server, &from_service("orders-db", vec![call(2)]));
    // Calls, stored rows, the 30 ms bin (8 * log2(3e7) = 198.6) and the slowest call.
    let query = "SELECT caller, callee, sum(calls), count(*), any_value(latency_bin), max(slowest_ns)
                 FROM service_call_minutes GROUP BY ALL";
    wait_for(
        &server,
        query,
        json!([["checkout", "orders-db", 1, 1, 198, 30_000_000]]),
    );
    post_protobuf(&server, &from_service("orders-db", vec![call(3)]));
    wait_for(
        &server,
        query,
        json!([["checkout", "orders-db", 2, 1, 198, 30_000_000]]),
    );
}

#[test]
fn a_trace_without_its_root_takes_its_earliest_span() {
    let server = Server::start();
    post_protobuf(
        &server,
        &from_service(
            "worker",
            vec![
                span(8, Some(7), "late child", 20, 5),
                span(9, Some(7), "first child", 10, 5),
            ],
        ),
    );
    let traces = rows(
        &server,
        "SELECT root_service, root_operation, span_count FROM traces",
    );
    assert_eq!(traces, json!([["worker", "first child", 2]]));
}

#[test]
fn events_and_links_unnest_one_row_each() {
    let server = Server::start();
    let mut consumer = span(5, None, "consume", 0, 10);
    consumer.events = vec![
        Event {
            time_unix_nano: START + 1_000_000,
            name: "received".into(),
            ..Default::default()
        },
        Event {
            time_unix_nano: START + 2_000_000,
            name: "acked".into(),
            ..Default::default()
        },
    ];
    consumer.links = vec![Link {
        trace_id: vec![0xcd; 16],
        span_id: 42u64.to_be_bytes().to_vec(),
        ..Default::default()
    }];
    post_protobuf(&server, &from_service("queue", vec![consumer]));
    let events = rows(
        &server,
        "SELECT span_name, name, epoch_ns(time) FROM span_events ORDER BY time",
    );
    assert_eq!(
        events,
        json!([
            ["consume", "received", START + 1_000_000],
            ["consume", "acked", START + 2_000_000]
        ])
    );
    let links = rows(
        &server,
        "SELECT span_id, linked_trace_id, linked_span_id FROM span_links",
    );
    assert_eq!(
        links,
        json!([["0000000000000005", "cd".repeat(16), "000000000000002a"]])
    );
}
