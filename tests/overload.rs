//! Overload: a full span queue answers with OTLP's retryable errors, real exporters retry them,
//! and a refused request stores nothing, so every span is stored exactly once.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{http_post, synthetic_request, RpcStatus, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic_types::StatusExt;

/// Room for 1,000 queued spans: one flood request fills it.
const QUEUE: &str = "1000";
/// Spans of a flood request, far more than the queue holds, so that it takes all of it.
const FLOOD_SPANS: usize = 20_000;

/// Keeps the server's span queue full from two threads, posting large requests back to back
/// until `stop`; counts the spans of those it got accepted into `stored`.
fn flood<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    server: &'scope Server,
    stop: &'scope AtomicBool,
    stored: &'scope AtomicI64,
) {
    let body = synthetic_request(200, FLOOD_SPANS).encode_to_vec();
    let url = format!("{}/v1/traces", server.http_endpoint());
    for _ in 0..2 {
        let (body, url) = (body.clone(), url.clone());
        scope.spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let (status, _, _) = http_post(&url, &[("content-type", "application/x-protobuf")], &body);
                if status == 200 {
                    stored.fetch_add(FLOOD_SPANS as i64, Ordering::AcqRel);
                }
            }
        });
    }
}

/// Sets its flag when dropped, so that a failed assertion ends the flood too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits until the store holds `spans` spans: under load a span is acknowledged once its
/// ingest log is synced, and queryable a moment later.
fn assert_stored_spans(server: &Server, spans: i64) {
    server.sql_rows_when("SELECT count(*) FROM spans", Duration::from_secs(30), |rows| {
        rows[0][0] == spans
    });
}

/// Repeats `send` until it answers `Some` (refused), for at most 30 s.
fn first_refusal<T>(what: &str, mut send: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(refusal) = send() {
            return refusal;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never refused while the queue was full"
        );
    }
}

#[test]
fn a_full_queue_refuses_retryably_and_stores_nothing_it_refused() {
    let server = Server::start_with(&["--max-queued-spans", QUEUE]);
    let (stop, stored) = (AtomicBool::new(false), AtomicI64::new(0));
    let small = synthetic_request(1, 10);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        flood(scope, &server, &stop, &stored);
        let url = format!("{}/v1/traces", server.http_endpoint());
        let (headers, body) = first_refusal("OTLP/HTTP", || {
            let (status, headers, body) = http_post(
                &url,
                &[("content-type", "application/x-protobuf")],
                &small.encode_to_vec(),
            );
            match status {
                200 => {
                    stored.fetch_add(10, Ordering::AcqRel);
                    None
                }
                429 => Some((headers, body)),
                other => panic!("OTLP/HTTP answered {other}: {}", String::from_utf8_lossy(&body)),
            }
        });
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let status = RpcStatus::decode(body.as_slice()).unwrap();
        assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
        assert!(status.message.contains("queue is full"), "{}", status.message);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut client = runtime
            .block_on(TraceServiceClient::connect(server.grpc_endpoint()))
            .unwrap();
        let refused = first_refusal("OTLP/gRPC", || {
            match runtime.block_on(client.export(small.clone())) {
                Ok(_) => {
                    stored.fetch_add(10, Ordering::AcqRel);
                    None
                }
                Err(status) => Some(status),
            }
        });
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        let retry = refused.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    });
    // Exactly the spans of accepted requests.
    assert_stored_spans(&server, stored.load(Ordering::Acquire));
}

#[test]
fn sdk_exporters_retry_refused_exports_and_every_span_arrives_once() {
    let server = Server::start_with(&["--max-queued-spans", QUEUE]);
    let (stop, stored) = (AtomicBool::new(false), AtomicI64::new(0));
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let output = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        flood(scope, &server, &stop, &stored);
        let client = Command::new(common::test_python())
            .arg(common::repo_path("tests/clients/overload_client.py"))
            .args([server.grpc_endpoint(), server.http_endpoint()])
            .args(["4", "5"])
            .arg(&ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the test Python runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "overload_client.py never got ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The exporters try six times, 1 s apart: the queue empties while they still retry.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Release);
        client.wait_with_output().unwrap()
    });
    assert!(
        output.status.success(),
        "overload_client.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["failed"], serde_json::json!([]), "{answer}");
    assert!(
        answer["retries"].as_i64().unwrap() > 0,
        "the exporters were never refused: {answer}"
    );
    let mut exported: Vec<&str> = answer["exported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    exported.sort();
    assert_eq!(exported.len(), 20, "{answer}");
    assert_stored_spans(&server, stored.load(Ordering::Acquire) + 100);
    let per_trace = server.sql(
        "SELECT trace_id, count(*) FROM spans WHERE service_name LIKE 'overload-%' GROUP BY trace_id ORDER BY trace_id",
    );
    let expected: Vec<_> = exported.iter().map(|id| serde_json::json!([id, 5])).collect();
    assert_eq!(
        per_trace["rows"],
        serde_json::json!(expected),
        "each exported trace's five spans, once"
    );
}
