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
fn new_stores_are_written_in_the_compact_storage_format() {
    let server = Server::start();
    let (status, answer) = post_sql(
        &server,
        "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = current_database()",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], serde_json::json!([["v1.5.0+"]]));
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
        ("PRAGMA memory_limit = '100GB'", "only read-only SELECT"),
        ("RESET memory_limit", "only read-only SELECT"),
        ("DETACH memory", "only read-only SELECT"),
        ("EXPORT DATABASE '/tmp/ducktrace-stolen'", "only read-only SELECT"),
        (
            "SELECT * FROM read_parquet('/etc/passwd')",
            "disabled by configuration",
        ),
        (
            "SELECT * FROM read_text('/etc/hostname')",
            "disabled by configuration",
        ),
        (
            "SELECT current_setting('memory_limit'); SET threads = 1",
            "only read-only SELECT",
        ),
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
    assert!(!std::path::Path::new("/tmp/ducktrace-stolen").exists());
    // Reading DuckDB's own settings is harmless and allowed; they show the sandbox in force.
    let (status, answer) = post_sql(
        &server,
        "SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access'",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], serde_json::json!([["false"]]));
    let (_, answer) = post_sql(&server, "SELECT count(*) FROM span_data");
    assert_eq!(answer["rows"][0][0], 3, "nothing was deleted");
}

#[test]
fn csv_format_streams_rfc4180() {
    let server = Server::start();
    let sql = "SELECT 'a,b' AS text, 42 AS n, NULL AS nothing UNION ALL SELECT 'say \"hi\"', 7, NULL";
    let (status, headers, body) = http_post(
        &server.ui_url("/api/sql?format=csv"),
        &[("content-type", "text/plain")],
        sql.as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text, "text,n,nothing\r\n\"a,b\",42,\r\n\"say \"\"hi\"\"\",7,\r\n");
}

#[test]
fn a_long_query_is_interrupted_at_the_time_limit() {
    let server = Server::start_with(&["--query-timeout", "1"]);
    let started = std::time::Instant::now();
    let (status, answer) = post_sql(&server, "SELECT sum(i) FROM range(1000000000000) t(i)");
    assert_eq!(status, 400);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("time limit of 1s"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The server is still there for the next query.
    assert_eq!(post_sql(&server, "SELECT 1").0, 200);
}

fn ducktrace_sql(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ducktrace"))
        .arg("sql")
        .args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[test]
fn the_cli_queries_a_running_server_and_a_stopped_data_dir() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(data_dir.path(), &[]);
    post_protobuf(&server, &synthetic_request(5, 4));
    let url = server.ui_url("");
    let (ok, out, err) = ducktrace_sql(&["--server", &url, "SELECT count(*) AS spans FROM spans"], "");
    assert!(ok, "{err}");
    assert_eq!(out, "spans\n-----\n4\n(1 row)\n");
    let (ok, out, _) = ducktrace_sql(
        &["--server", &url, "--format", "csv", "SELECT 1 AS a, 'x,y' AS b"],
        "",
    );
    assert!(ok);
    assert_eq!(out, "a,b\r\n1,\"x,y\"\r\n");
    let (ok, _, err) = ducktrace_sql(&["--server", &url, "DELETE FROM span_data"], "");
    assert!(!ok);
    assert!(err.contains("only read-only SELECT"), "{err}");

    assert!(server.terminate().success());
    let dir = data_dir.path().to_str().unwrap();
    let (ok, out, err) = ducktrace_sql(
        &["--server", "http://127.0.0.1:9", "--data-dir", dir, "SELECT 1"],
        "",
    );
    assert!(
        !ok,
        "an explicit --server that does not answer is an error: {out}"
    );
    assert!(err.contains("no ducktrace API answers"), "{err}");
    // Offline (as with no server given and none running), the data directory is opened
    // read-only; the interactive prompt reads statements ending in ';' across lines.
    let (ok, out, err) = ducktrace_sql(
        &["--offline", "--data-dir", dir, "--format", "json"],
        "SELECT count(*) AS n\nFROM spans;\nSELECT 2 AS two;\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains(r#""rows":[[4]]"#), "{out}");
    assert!(out.contains(r#""rows":[[2]]"#), "{out}");
}

/// Reads a Parquet answer with DuckDB, in a connection of its own: the values and the footer.
fn read_parquet(bytes: &[u8]) -> (Vec<(i64, String)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answer.parquet");
    std::fs::write(&file, bytes).unwrap();
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let file = file.display();
    let rows = conn
        .prepare(&format!("SELECT * FROM read_parquet('{file}')"))
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let truncated = conn
        .query_row(
            &format!("SELECT decode(value) FROM parquet_kv_metadata('{file}') WHERE decode(key) = 'ducktrace.truncated'"),
            [],
            |row| row.get(0),
        )
        .unwrap();
    (rows, truncated)
}

#[test]
fn parquet_and_arrow_answers_stream_batches_and_honour_max_rows() {
    let server = Server::start();
    let sql = "SELECT i AS n, 'row ' || i AS label FROM range(5000) t(i)";
    let url = |query: &str| server.ui_url(&format!("/api/sql?{query}&q={}", urlencode(sql)));

    let (status, headers, body) = http_post(&url("format=parquet&max_rows=10000"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apache.parquet");
    let (rows, truncated) = read_parquet(&body);
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999], (4999, "row 4999".to_string()));
    assert_eq!(truncated, "false");

    // 3000 rows end inside DuckDB's second chunk of 2048: the batch is cut there.
    let (status, _, body) = http_post(&url("format=parquet&max_rows=3000"), &[], b"");
    assert_eq!(status, 200);
    let (rows, truncated) = read_parquet(&body);
    assert_eq!(rows.len(), 3000);
    assert_eq!(truncated, "true");

    let (status, headers, body) = http_post(&url("format=arrow&max_rows=3000"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apache.arrow.stream");
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let schema = reader.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["n", "label"]);
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert!(batches.len() >= 2, "one batch per DuckDB chunk");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);

    // The same refusals as JSON, before any byte of the answer.
    let (status, _, body) = http_post(
        &server.ui_url("/api/sql?format=parquet"),
        &[],
        b"COPY span_data TO '/tmp/ducktrace-stolen.parquet'",
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("only read-only SELECT"));
    // A type Parquet cannot hold is named, not sent as a broken file.
    let (status, _, body) = http_post(
        &server.ui_url("/api/sql?format=parquet"),
        &[],
        b"SELECT INTERVAL 1 DAY AS wait",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("cannot be written as parquet: column wait is an INTERVAL")
    );
    let (status, _, body) = http_post(&server.ui_url("/api/sql?format=xml&q=SELECT%201"), &[], b"");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("use json, csv, parquet or arrow"));
}

#[test]
fn slow_queries_never_block_ingest() {
    let server = Server::start_with(&["--query-timeout", "10"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    std::thread::scope(|scope| {
        let queries: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    post_sql(
                        &server,
                        "SELECT count(*) FROM range(300000000) a(i) WHERE i % 7 = 3",
                    )
                })
            })
            .collect();
        // While all eight run, OTLP exports are still acknowledged one after another.
        for seed in 0..20u8 {
            post_protobuf(&server, &synthetic_request(seed, 50));
            assert!(std::time::Instant::now() < deadline, "ingest stalled");
        }
        for query in queries {
            let (status, answer) = query.join().unwrap();
            assert!(
                status == 200
                    || answer["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("time limit"),
                "{answer}"
            );
        }
    });
    assert_eq!(common::span_count(&server), 20 * 50);
}

#[test]
fn a_client_that_stops_reading_frees_its_query_slot_at_the_time_limit() {
    use std::io::{Read, Write};
    let server = Server::start_with(&["--max-concurrent-queries", "1", "--query-timeout", "2"]);
    // A large streamed answer that the client never reads holds the only query slot...
    let sql = urlencode("SELECT range AS n, repeat('x', 100) AS pad FROM range(1000000)");
    let mut stalled = std::net::TcpStream::connect(server.ui).unwrap();
    write!(
        stalled,
        "GET /api/sql?format=csv&max_rows=1000000&q={sql} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut first_bytes = [0u8; 64];
    stalled.read_exact(&mut first_bytes).unwrap();
    // ...until the query time limit; then other queries run again.
    let started = std::time::Instant::now();
    let (status, body) = http_get(&server.ui_url(&format!("/api/sql?q={}", urlencode("SELECT 42"))));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("42"), "{body}");
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(15),
        "a query waited {waited:?} behind a client that stopped reading"
    );
    drop(stalled);
}

/// `--duckdb-threads` reaches DuckDB; by default one thread per core.
#[test]
fn duckdb_threads_follow_the_flag() {
    let threads = |server: &Server| {
        let (status, answer) = post_sql(server, "SELECT current_setting('threads')::INT");
        assert_eq!(status, 200, "{answer}");
        answer["rows"][0][0].as_i64().unwrap()
    };
    let cores = std::thread::available_parallelism().unwrap().get() as i64;
    assert_eq!(threads(&Server::start()), cores);
    assert_eq!(threads(&Server::start_with(&["--duckdb-threads", "1"])), 1);
}
