//! The indexer builds its tables from the columns the writer hands it after each commit; a store
//! indexed afresh, reading every span back from `span_data`, must hold exactly the same tables.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{post_protobuf, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};

/// Traces of four spans each: 20,000 spans, two full blocks of attribute blooms.
const TRACES: u64 = 5_000;

/// The tables the indexer fills, each as a query whose rows must match between the two stores.
const INDEXED: [(&str, &str); 6] = [
    ("service_calls", "SELECT * FROM {}"),
    ("service_call_minutes", "SELECT * FROM {}"),
    (
        "trace_summaries",
        "SELECT * EXCLUDE (services), CAST(services AS VARCHAR) FROM {}",
    ),
    ("attribute_blooms", "SELECT * FROM {}"),
    ("trace_blooms", "SELECT * FROM {}"),
    ("operations", "SELECT * FROM {}"),
];

#[test]
fn indexes_built_as_spans_arrive_equal_indexes_built_from_the_table() {
    let data_dir = tempfile::tempdir().unwrap();
    // Outside the data directory; a failed pass is retried, so only the log tells of one.
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("ducktrace.log");
    let server = Server::start_logging_to(data_dir.path(), &log);
    // Children first, parents in a later indexing round: summaries and calls are completed by
    // merging with what the earlier round stored.
    for part in [Part::Children, Part::Parents] {
        for request in requests(part) {
            post_protobuf(&server, &request);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(server.terminate().success());

    let database = data_dir.path().join(ducktrace_store::DATABASE_FILE);
    let conn = duckdb::Connection::open(&database).unwrap();
    for (table, _) in INDEXED {
        conn.execute_batch(&format!(
            "CREATE TABLE live_{table} AS SELECT * FROM {table}; DELETE FROM {table};"
        ))
        .unwrap();
    }
    conn.execute(
        "DELETE FROM ducktrace_meta WHERE key LIKE '%_rowid_watermark'",
        [],
    )
    .unwrap();
    drop(conn);

    // A fresh start holds no columns from the writer: the indexer reads every span back.
    let server = Server::start_logging_to(data_dir.path(), &log);
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("failed"), "a pass failed:\n{log}");

    let conn = duckdb::Connection::open(&database).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM trace_summaries"), TRACES as i64);
    assert_eq!(count("SELECT count(*) FROM service_calls"), 3 * TRACES as i64);
    assert_eq!(count("SELECT count(*) FROM attribute_blooms"), 2);
    assert_eq!(count("SELECT count(*) FROM trace_blooms"), 3);
    for (table, select) in INDEXED {
        let (rebuilt, live) = (
            select.replace("{}", table),
            select.replace("{}", &format!("live_{table}")),
        );
        assert!(
            count(&format!("SELECT count(*) FROM {table}")) > 0,
            "{table} is empty"
        );
        let differing = count(&format!(
            "SELECT count(*) FROM (({rebuilt} EXCEPT ALL {live}) UNION ALL ({live} EXCEPT ALL {rebuilt}))"
        ));
        assert_eq!(
            differing, 0,
            "{table} built live differs from {table} built from the table"
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    /// auth and inventory, the leaves of each trace.
    Children,
    /// The gateway's root span and orders.
    Parents,
}

/// The spans of `part` for every trace, 1,000 to a request, in the last hour with distinct
/// starts and durations (so no root or slowest call is a tie).
fn requests(part: Part) -> Vec<ExportTraceServiceRequest> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    const MS: u64 = 1_000_000;
    let mut spans: Vec<(&str, Span)> = Vec::new();
    for trace in 0..TRACES {
        let start = now - 3_000_000 * MS + trace * 500 * MS;
        let trace_id = [trace.to_be_bytes(), 0xfeed_u64.to_be_bytes()].concat();
        let span =
            |n: u64, parent: Option<u64>, name: &str, offset_ms: u64, duration_ns: u64, error: bool| Span {
                trace_id: trace_id.clone(),
                span_id: (trace * 10 + n).to_be_bytes().to_vec(),
                parent_span_id: parent.map_or(vec![], |p| (trace * 10 + p).to_be_bytes().to_vec()),
                name: name.into(),
                kind: 2,
                start_time_unix_nano: start + offset_ms * MS,
                end_time_unix_nano: start + offset_ms * MS + duration_ns,
                attributes: vec![
                    string_attribute("user.id", &format!("user-{}", trace % 97)),
                    string_attribute("http.route", &format!("/{name}")),
                ],
                status: error.then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "out of stock".into(),
                }),
                ..Default::default()
            };
        let failed = trace % 4 == 0;
        match part {
            Part::Children => {
                spans.push(("auth", span(2, Some(1), "check token", 1, 2 * MS + trace, false)));
                spans.push((
                    "inventory",
                    span(4, Some(3), "reserve", 5, 3 * MS + 7 * trace, failed),
                ));
            }
            Part::Parents => {
                spans.push((
                    "gateway",
                    span(1, None, "POST /orders", 0, 40 * MS + trace, failed),
                ));
                spans.push((
                    "orders",
                    span(3, Some(1), "place order", 4, 20 * MS + 3 * trace, failed),
                ));
            }
        }
    }
    spans.chunks(1_000).map(request).collect()
}

fn request(spans: &[(&str, Span)]) -> ExportTraceServiceRequest {
    let resource_spans = spans
        .iter()
        .map(|(service, span)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope::default()),
                spans: vec![span.clone()],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Stores written before trace id filters carry an index of trace ids, which DuckDB held in
/// memory; opening one drops it and builds the filters from the stored spans, and its traces
/// read whole before and after.
#[test]
fn a_store_from_before_trace_filters_drops_its_trace_index_and_builds_them() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(data_dir.path(), &[]);
    // A full block of spans and some.
    let request = common::synthetic_request(3, 9000);
    post_protobuf(&server, &request);
    assert!(server.terminate().success());
    let database = data_dir.path().join(ducktrace_store::DATABASE_FILE);
    let conn = duckdb::Connection::open(&database).unwrap();
    conn.execute_batch(
        "CREATE INDEX trace_summaries_trace_id ON trace_summaries (trace_id);
         DELETE FROM trace_blooms;
         DELETE FROM ducktrace_meta WHERE key = 'trace_blooms_rowid_watermark';",
    )
    .unwrap();
    drop(conn);

    let server = Server::start_in(data_dir.path(), &[]);
    let indexes = server.sql("SELECT count(*) FROM duckdb_indexes()");
    assert_eq!(indexes["rows"], serde_json::json!([[0]]));
    common::assert_stored_exactly(&server, &request);
    server.sql_rows_when(
        "SELECT count(*), sum(spans) FROM trace_blooms",
        Duration::from_secs(30),
        |rows| rows[0] == serde_json::json!([2, 9000]),
    );
    common::assert_stored_exactly(&server, &request);
    assert!(server.terminate().success());
}
