//! `/api/sql`: read-only, one statement, no files or network, over GET and POST.

mod common;

use common::{http_get, http_post, post_protobuf, synthetic_request, urlencode, Server};
use serde_json::Value as Json;

fn post_sql(server: &Server, sql: &str) -> (u16, Json) {
    let (status, _, body) = http_post(
        &server.ui_url("/api/sql"),
        &[("content-type", "text/plain")],
        sql.as_bytes(),
    );
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn queries_run_over_get_and_post_with_typed_columns() {
    let server = Server::start();
    post_protobuf(&server, &synthetic_request(9, 12));
    let (status, answer) = post_sql(
        &server,
        "SELECT span_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(status, 200);
    assert_eq!(
        answer["columns"],
        serde_json::json!([{"name": "span_name", "type": "VARCHAR"}, {"name": "n", "type": "BIGINT"}])
    );
    assert_eq!(answer["rows"][0], serde_json::json!(["operation 0", 3]));
    assert_eq!(answer["truncated"], false);

    let (status, body) = http_get(&server.ui_url(&format!(
        "/api/sql?max_rows=5&q={}",
        urlencode("SELECT * FROM spans")
    )));
    assert_eq!(status, 200, "{body}");
    let answer: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["rows"].as_array().unwrap().len(), 5);
    assert_eq!(answer["truncated"], true);
}

#[test]
fn writes_files_settings_and_multiple_statements_are_refused() {
    let server = Server::start();
    post_protobuf(&server, &synthetic_request(9, 3));
    let refused = [
        ("DELETE FROM span_data", "only read-only SELECT"),
        (
            "INSERT INTO ducktrace_meta VALUES ('a', 'b')",
            "only read-only SELECT",
        ),
        ("UPDATE span_data SET span_name = 'x'", "only read-only SELECT"),
        ("DROP VIEW spans", "only read-only SELECT"),
        (
            "CREATE TABLE stolen AS SELECT * FROM span_data",
            "only read-only SELECT",
        ),
        (
            "COPY span_data TO '/tmp/ducktrace-stolen.csv'",
            "only read-only SELECT",
        ),
        (
            "ATTACH '/tmp/ducktrace-other.db' AS other",
            "only read-only SELECT",
        ),
        ("SET enable_external_access = true", "only read-only SELECT"),
        ("INSTALL httpfs", "only read-only SELECT"),
        ("LOAD httpfs", "only read-only SELECT"),
        ("PRAGMA enable_profiling", "only read-only SELECT"),
        ("CALL checkpoint()", "only read-only SELECT"),
        ("SELECT 1; DELETE FROM span_data", "only read-only SELECT"),
        ("SELECT 1; SELECT 2", "single read-only SELECT"),
        (
            "SELECT * FROM read_csv('/etc/passwd')",
            "disabled by configuration",
        ),
        ("SELECT * FROM glob('/etc/*')", "disabled by configuration"),
        (
            "SELECT * FROM read_parquet('http://127.0.0.1:1/x.parquet')",
            "disabled by configuration",
        ),
        ("SELEC 1", "syntax error"),
        ("  ;  ", "empty"),
    ];
    for (sql, why) in refused {
        let (status, answer) = post_sql(&server, sql);
        assert_eq!(status, 400, "{sql:?} must be refused: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{sql:?}: {message}");
    }
    assert!(!std::path::Path::new("/tmp/ducktrace-stolen.csv").exists());
    let (_, answer) = post_sql(&server, "SELECT count(*) FROM span_data");
    assert_eq!(answer["rows"][0][0], 3, "nothing was deleted");
}
