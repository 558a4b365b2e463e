//! The PostgreSQL wire protocol, with the real `psql` and the psycopg driver.

mod common;

use std::process::Command;

use common::{free_port, post_protobuf, python_client_json, synthetic_request, Server};

fn start_with_postgres() -> (Server, u16) {
    let port = free_port().port();
    let server = Server::start_with(&["--pg-addr", &format!("127.0.0.1:{port}")]);
    post_protobuf(&server, &synthetic_request(6, 5));
    (server, port)
}

fn psql(port: u16, sql: &str) -> (bool, String, String) {
    psql_session(port, &[sql])
}

/// Runs each statement in turn in one psql session (one connection).
fn psql_session(port: u16, statements: &[&str]) -> (bool, String, String) {
    let commands: Vec<&str> = statements.iter().flat_map(|sql| ["-c", sql]).collect();
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "ducktrace",
            "-d",
            "spans",
            "-X",
            "-A",
            "-t",
        ])
        .args(commands)
        .output()
        .expect("psql is installed by the README's test command");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[test]
fn psql_runs_read_only_queries() {
    let (_server, port) = start_with_postgres();
    let (ok, out, err) = psql(
        port,
        "SELECT span_name, count(*) FROM spans GROUP BY 1 ORDER BY 1 LIMIT 2",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "operation 0|1\noperation 1|1\n");
    let (ok, out, _) = psql(port, "SELECT start_time FROM spans ORDER BY start_time LIMIT 1");
    assert!(ok);
    assert_eq!(out, "2023-11-14 22:13:20\n");
    let (ok, _, err) = psql(port, "DROP VIEW spans");
    assert!(!ok);
    assert!(err.contains("only read-only SELECT"), "{err}");
    let (ok, out, _) = psql(port, "SELECT count(*) FROM spans");
    assert!(ok);
    assert_eq!(out, "5\n");
}

#[test]
fn psycopg_binds_parameters_and_gets_typed_values() {
    let (_server, port) = start_with_postgres();
    let answer = python_client_json("pg_client.py", &[&port.to_string()]);
    assert_eq!(
        answer,
        serde_json::json!({
            "rows": [["operation 1", 500000, "2023-11-14T22:13:20.000001"]],
            "types": ["int", "float", "bool"],
            "refused": "25006",
        })
    );
}

#[test]
fn every_escape_route_is_refused_over_the_wire_too() {
    let (_server, port) = start_with_postgres();
    let refused = [
        ("DELETE FROM span_data", "only read-only SELECT"),
        (
            "INSERT INTO ducktrace_meta VALUES ('a', 'b')",
            "only read-only SELECT",
        ),
        (
            "CREATE TABLE stolen AS SELECT * FROM span_data",
            "only read-only SELECT",
        ),
        (
            "COPY span_data TO '/tmp/ducktrace-pg-stolen.csv'",
            "only read-only SELECT",
        ),
        (
            "ATTACH '/tmp/ducktrace-pg-other.db' AS other",
            "only read-only SELECT",
        ),
        ("INSTALL httpfs", "only read-only SELECT"),
        ("LOAD httpfs", "only read-only SELECT"),
        ("PRAGMA memory_limit = '100GB'", "only read-only SELECT"),
        ("CALL checkpoint()", "only read-only SELECT"),
        ("SELECT 1; DELETE FROM span_data", "only read-only SELECT"),
        (
            "SELECT * FROM read_csv('/etc/passwd')",
            "disabled by configuration",
        ),
        (
            "SELECT * FROM read_parquet('/etc/passwd')",
            "disabled by configuration",
        ),
        ("SELECT * FROM glob('/etc/*')", "disabled by configuration"),
    ];
    for (sql, why) in refused {
        let (ok, out, err) = psql(port, sql);
        assert!(!ok, "{sql:?} must be refused, got {out}");
        assert!(err.contains(why), "{sql:?}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/ducktrace-pg-stolen.csv").exists());
    // SET is acknowledged for drivers' sake but changes nothing: files stay out of reach.
    let (_, out, err) = psql_session(
        port,
        &[
            "SET enable_external_access = true",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access'",
        ],
    );
    assert!(err.contains("disabled by configuration"), "{err}");
    assert!(out.ends_with("false\n"), "{out}");
    let (ok, out, _) = psql(port, "SELECT count(*) FROM spans");
    assert!(ok);
    assert_eq!(out, "5\n", "nothing was deleted");
}
