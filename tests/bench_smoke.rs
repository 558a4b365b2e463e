//! Smoke runs of the benchmarks against a real server: each command works end to end and
//! reports something measured. No timed assertions; figures belong in BENCHMARKS.md.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{repo_path, Server};
use serde_json::Value as Json;

/// `ducktrace-bench` is built beside `ducktrace` by `cargo build --workspace`.
fn bench_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ducktrace")).with_file_name("ducktrace-bench");
    assert!(
        path.exists(),
        "{} is missing; build the workspace (cargo build --release --workspace --all-targets)",
        path.display()
    );
    path
}

/// Runs `command` and returns what it printed; fails the test, showing both outputs, unless it
/// succeeds.
fn stdout_of(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs the bench with `args` and returns the JSON summary it prints last.
fn bench(args: &[&str]) -> Json {
    let stdout = stdout_of(Command::new(bench_binary()).args(args).arg("--json"));
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

#[test]
fn ingest_fill_and_query_report_what_they_measured() {
    let server = Server::start();
    let grpc = server.grpc_endpoint();
    let api = server.ui_url("");

    let ingest = bench(&[
        "ingest",
        "--endpoint",
        &grpc,
        "--clients",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--spans-per-request",
        "100",
    ]);
    assert!(ingest["acknowledged_spans"].as_u64().unwrap() > 0, "{ingest}");
    assert_eq!(ingest["errors"], 0, "{ingest}");

    let fill = bench(&[
        "fill",
        "--api",
        &api,
        "--grpc",
        &grpc,
        "--spans",
        "3000",
        "--spans-per-request",
        "500",
    ]);
    assert_eq!(fill["acknowledged_spans"], 3000, "{fill}");
    let stored = fill["stored_spans"].as_u64().unwrap();
    assert!(stored >= 3000, "{fill}");

    let page = format!("{api}/api/v3/traces/{{trace_id}}");
    // Three seconds per ingest window: a one-second window once fell entirely inside a
    // checkpoint (about a second per 500k spans here, commits wait for it) and counted nothing.
    let query = bench(&[
        "query",
        "--api",
        &api,
        "--grpc",
        &grpc,
        "--iterations",
        "3",
        "--slow-iterations",
        "2",
        "--mixed-seconds",
        "3",
        "--concurrent-searches",
        "2",
        "--page",
        &page,
    ]);
    let queries = query["queries"].as_array().unwrap();
    let names: Vec<&str> = queries.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "trace by id",
            "search svc+op+dur+1h",
            "attribute user.id, search page",
            "attribute user.id, SQL scan",
            "dependencies 24 h",
            &page
        ]
    );
    for timing in queries {
        assert!(timing["runs"].as_u64().unwrap() >= 2, "{timing}");
        assert!(timing["p50_ms"].as_f64().unwrap() > 0.0, "{timing}");
    }
    // Every sampled trace id and user exists, so those lookups must find something.
    assert_eq!(queries[0]["rows_per_answer"], 1.0);
    assert!(queries[2]["rows_per_answer"].as_f64().unwrap() >= 1.0, "{query}");
    assert!(
        query["ingest_alone_spans_per_s"].as_f64().unwrap() > 0.0,
        "{query}"
    );
    assert!(query["spans_stored_at_end"].as_u64().unwrap() > stored, "{query}");
}

#[test]
fn the_freshness_script_reports_how_soon_spans_are_readable() {
    let server = Server::start();
    let stdout = stdout_of(
        Command::new("python3")
            .arg(repo_path("scripts/freshness.py"))
            .args(["--otlp", &server.http_endpoint(), "--api", &server.ui_url("")])
            .args(["--probes", "2", "--interval", "0"]),
    );
    assert!(
        stdout.starts_with("readable after the answer: median ") && stdout.contains("(2 probes)"),
        "{stdout}"
    );
}
