//! Real OpenTelemetry SDKs export to ducktrace; what they exported must come back unchanged.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{assert_sql_view_matches, assert_stored_exactly, repo_path, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Checks that the test command installed a client's SDK.
fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run the README's test command, which installs the SDK clients",
        path.display()
    );
    path
}

/// Runs a client script and decodes the request it says it exported.
fn run_client(program: PathBuf, script: &str, server: &Server) -> ExportTraceServiceRequest {
    let out = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(&program)
        .arg(repo_path(&format!("tests/clients/{script}")))
        .args([server.grpc_endpoint(), server.http_endpoint()])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ExportTraceServiceRequest::decode(std::fs::read(out.path()).unwrap().as_slice()).unwrap()
}

#[test]
fn python_sdk_spans_round_trip_over_grpc_and_http() {
    let server = Server::start();
    let python = common::test_python();
    let exported = run_client(installed(python), "python_client.py", &server);
    let names: Vec<_> = common::flatten(&exported.resource_spans)
        .iter()
        .map(|f| f.span.name.clone())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_stored_exactly(&server, &exported);
    assert_sql_view_matches(&server, &exported);

    // One trace spans both services, joined through the propagated parent.
    let answer = server.sql(
        "SELECT count(DISTINCT service_name) AS services, count(*) AS spans FROM spans
         WHERE trace_id = (SELECT trace_id FROM spans WHERE span_name = 'GET /checkout')",
    );
    assert_eq!(answer["rows"][0], serde_json::json!([2, 4]));
    // Attribute values are queryable as text, and their types are kept beside them.
    let answer = server.sql(
        "SELECT attributes['http.status_code'], attr(attributes, 'retry'), CAST(attributes['load'] AS DOUBLE),
                attribute_types[list_position(map_keys(attributes), 'http.status_code')]
         FROM spans WHERE span_name = 'GET /checkout'",
    );
    assert_eq!(answer["rows"][0], serde_json::json!(["500", "true", 0.75, "i"]));
}

#[test]
fn node_sdk_spans_round_trip_over_http_json_and_grpc() {
    let server = Server::start();
    installed(repo_path("tests/clients/node_modules/@opentelemetry/sdk-trace"));
    let exported = run_client(PathBuf::from("node"), "node_client.mjs", &server);
    assert_eq!(common::flatten(&exported.resource_spans).len(), 2);
    assert_stored_exactly(&server, &exported);
    assert_sql_view_matches(&server, &exported);
}
