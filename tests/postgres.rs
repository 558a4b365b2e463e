//! The PostgreSQL wire protocol, with the real `psql` and the psycopg driver.

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::{post_protobuf, repo_path, synthetic_request, Server};

fn start_with_postgres() -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start_with(&["--pg-addr", &format!("127.0.0.1:{port}")]);
    post_protobuf(&server, &synthetic_request(6, 5));
    (server, port)
}

fn psql(port: u16, sql: &str) -> (bool, String, String) {
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
            "-c",
            sql,
        ])
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
    let python = std::env::var("DUCKTRACE_TEST_PYTHON")
        .unwrap_or_else(|_| repo_path("tests/.venv/bin/python").display().to_string());
    let output = Command::new(python)
        .arg(repo_path("tests/clients/pg_client.py"))
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({
            "rows": [["operation 1", 500000, "2023-11-14T22:13:20.000001"]],
            "types": ["int", "float", "bool"],
            "refused": "25006",
        })
    );
}
