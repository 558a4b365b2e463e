//! `ducktrace export` and `ducktrace import`: spans to Parquet files per day and back, through a
//! running server and on a stopped data directory, checked with DuckDB's and pyarrow's readers
//! and by comparing the trace API of the original and the re-imported store.

mod common;

use std::path::Path;

use common::{ducktrace, http_get, post_protobuf, python_client_json, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// 2026-11-24T23:59:59.5Z: the trace's spans straddle midnight, so they fall into two days.
const START: u64 = 1_764_028_799_500_000_000;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Spans with every kind of field OTLP has: typed, nested and binary attributes, events, links,
/// statuses set and unset, trace state, flags and dropped counts, from two resources (one with
/// a schema URL) and two scopes.
fn rich_request(trace: u8) -> ExportTraceServiceRequest {
    let trace_id = vec![trace; 16];
    let span = |id: u64, parent: Option<u64>, offset_ms: u64| Span {
        trace_id: trace_id.clone(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: format!("operation {id}"),
        kind: (id % 6) as i32,
        start_time_unix_nano: START + offset_ms * 1_000_000,
        end_time_unix_nano: START + offset_ms * 1_000_000 + 123_456,
        attributes: vec![
            attribute("text", Value::StringValue(format!("value {id}"))),
            attribute("int", Value::IntValue(-(id as i64))),
            attribute("double", Value::DoubleValue(0.25)),
            attribute("bool", Value::BoolValue(true)),
            attribute("bytes", Value::BytesValue(vec![0, 1, 255])),
            attribute(
                "array",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::IntValue(7)),
                    }],
                }),
            ),
            attribute(
                "map",
                Value::KvlistValue(KeyValueList {
                    values: vec![attribute("inner", Value::StringValue("x".into()))],
                }),
            ),
        ],
        trace_state: "vendor=1".into(),
        flags: 0x301,
        dropped_attributes_count: 2,
        ..Default::default()
    };
    let mut root = span(1, None, 0);
    root.status = Some(Status {
        code: 2,
        message: "it broke".into(),
    });
    root.events = vec![Event {
        time_unix_nano: START + 1,
        name: "retry".into(),
        attributes: vec![attribute("attempt", Value::IntValue(2))],
        dropped_attributes_count: 1,
    }];
    root.dropped_events_count = 3;
    let mut child = span(2, Some(1), 700);
    child.status = Some(Status {
        code: 0,
        message: String::new(),
    });
    child.links = vec![Link {
        trace_id: vec![0xee; 16],
        span_id: 77u64.to_be_bytes().to_vec(),
        trace_state: "a=b".into(),
        attributes: vec![attribute("why", Value::StringValue("follows".into()))],
        dropped_attributes_count: 4,
        flags: 1,
    }];
    child.dropped_links_count = 5;
    let resource = |service: &str| Resource {
        attributes: vec![
            attribute("service.name", Value::StringValue(service.into())),
            attribute("host.name", Value::StringValue("box".into())),
        ],
        dropped_attributes_count: 1,
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "lib".into(),
        version: "1.2.3".into(),
        attributes: vec![attribute("scope.attr", Value::BoolValue(false))],
        dropped_attributes_count: 6,
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource("frontend")),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(scope.clone()),
                        spans: vec![root],
                        schema_url: "https://opentelemetry.io/schemas/1.9.0".into(),
                    },
                    ScopeSpans {
                        scope: None,
                        spans: vec![span(3, Some(1), 800), span(4, Some(1), 100)],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            },
            ResourceSpans {
                resource: Some(resource("backend")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope),
                    spans: vec![child],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The raw answer of `GET /api/v3/traces/{id}`.
fn trace_json(server: &Server, trace: u8) -> String {
    let (status, body) = http_get(&server.ui_url(&format!("/api/v3/traces/{}", hex::encode([trace; 16]))));
    assert_eq!(status, 200, "{body}");
    body
}

/// Reads the exported files with DuckDB, in a connection of its own: rows per day and a hash of
/// every value, so two exports can be compared.
fn read_with_duckdb(dir: &Path) -> (Vec<(String, i64)>, i64) {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let files = format!("{}/*/*.parquet", dir.display());
    let mut statement = conn
        .prepare(&format!(
            "SELECT day::VARCHAR, count(*) FROM read_parquet('{files}', hive_partitioning = true)
             GROUP BY 1 ORDER BY 1"
        ))
        .unwrap();
    let days = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<(String, i64)>, _>>()
        .unwrap();
    let hash: i64 = conn
        .query_row(
            &format!("SELECT CAST(bit_xor(hash(t)) % 1000000007 AS BIGINT) FROM read_parquet('{files}') t"),
            [],
            |row| row.get(0),
        )
        .unwrap();
    (days, hash)
}

#[test]
fn spans_export_per_day_and_import_into_a_new_store_exactly() {
    let original_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(original_dir.path(), &[]);
    post_protobuf(&server, &rich_request(0x11));
    post_protobuf(&server, &rich_request(0x22));
    let originals = [trace_json(&server, 0x11), trace_json(&server, 0x22)];

    // Through the running server's /api/sql?format=parquet.
    let exports = tempfile::tempdir().unwrap();
    let online = exports.path().join("online");
    let (ok, out) = ducktrace(&["export", "--out", path(&online), "--server", &server.ui_url("")]);
    assert!(ok, "{out}");
    assert!(out.contains("exported 8 spans into 2 files"), "{out}");
    for day in ["day=2025-11-24", "day=2025-11-25"] {
        assert!(online.join(day).join("spans.parquet").is_file(), "{day}: {out}");
    }
    let (online_days, online_hash) = read_with_duckdb(&online);
    assert_eq!(
        online_days,
        [("2025-11-24".to_string(), 4), ("2025-11-25".to_string(), 4)]
    );

    // A running server keeps its data directory to itself.
    let fresh = tempfile::tempdir().unwrap();
    let (ok, out) = ducktrace(&["import", path(&online), "--data-dir", path(original_dir.path())]);
    assert!(!ok);
    assert!(out.contains("in use by a running ducktrace server"), "{out}");

    // With the server stopped, the data directory read-only: the same files.
    assert!(server.terminate().success());
    let offline = exports.path().join("offline");
    let (ok, out) = ducktrace(&[
        "export",
        "--out",
        path(&offline),
        "--offline",
        "--data-dir",
        path(original_dir.path()),
    ]);
    assert!(ok, "{out}");
    assert_eq!(read_with_duckdb(&offline), (online_days.clone(), online_hash));

    // --since and --until pick whole spans by start time; the output folder is not overwritten.
    let late = exports.path().join("late");
    let (ok, out) = ducktrace(&[
        "export",
        "--out",
        path(&late),
        "--offline",
        "--data-dir",
        path(original_dir.path()),
        "--since",
        "2025-11-25",
        "--until",
        "2025-11-25 00:00:00.35",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("exported 4 spans into 1 files"), "{out}");
    assert_eq!(read_with_duckdb(&late).0, [("2025-11-25".to_string(), 4)]);
    let (ok, out) = ducktrace(&[
        "export",
        "--out",
        path(&late),
        "--offline",
        "--data-dir",
        path(original_dir.path()),
    ]);
    assert!(!ok);
    assert!(out.contains("already exists"), "{out}");

    // Into a new data directory, then both served side by side: the same traces, byte for byte.
    let (ok, out) = ducktrace(&["import", path(&online), "--data-dir", path(fresh.path())]);
    assert!(ok, "{out}");
    assert!(out.contains("imported 8 spans from 2 files"), "{out}");
    let original = Server::start_in(original_dir.path(), &[]);
    let imported = Server::start_in(fresh.path(), &[]);
    assert_eq!(trace_json(&imported, 0x11), originals[0]);
    assert_eq!(trace_json(&imported, 0x22), originals[1]);
    assert_eq!(trace_json(&original, 0x11), originals[0]);
    // Ids of resources, scopes and key sets are the store's own; what they stand for must match.
    let every_row = "SELECT s.* EXCLUDE (resource_id, scope_id, attribute_key_set), k.keys
                     FROM span_data s LEFT JOIN attribute_key_sets k ON k.key_set_id = s.attribute_key_set
                     ORDER BY trace_id, span_id";
    assert_eq!(imported.sql(every_row), original.sql(every_row));

    // pyarrow, a reader that shares no code with DuckDB, reads the files and the footer.
    let answer = python_client_json(
        "arrow_client.py",
        &[online.to_str().unwrap(), &imported.ui_url("")],
    );
    assert_eq!(
        answer,
        serde_json::json!({
            "rows": 8,
            "days": ["2025-11-24", "2025-11-25"],
            "trace_id": hex::encode([0x11; 16]),
            "truncated": "false",
            "arrow_rows": 8,
            "arrow_columns": ["span_name", "n"],
        })
    );
}

#[test]
fn import_refuses_files_that_are_not_span_exports() {
    let dir = tempfile::tempdir().unwrap();
    let not_parquet = dir.path().join("notes.parquet");
    std::fs::write(&not_parquet, "not a parquet file").unwrap();
    let data_dir = dir.path().join("data");
    let (ok, out) = ducktrace(&["import", path(&not_parquet), "--data-dir", path(&data_dir)]);
    assert!(!ok);
    assert!(
        out.contains("is not a span file written by ducktrace export"),
        "{out}"
    );
    let (ok, out) = ducktrace(&[
        "import",
        path(&dir.path().join("empty")),
        "--data-dir",
        path(&data_dir),
    ]);
    assert!(!ok);
    assert!(out.contains("No such file"), "{out}");
}
