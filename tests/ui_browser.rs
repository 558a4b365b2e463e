//! Drives the web pages in headless Chromium (the scripts in tests/browser/) over stored data.

mod common;

use std::process::Command;

use common::{http_post, repo_path, Server};

/// A span whose name and service would run script if the UI did not escape them.
const HOSTILE_SPAN: &str = r#"{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"<img src=x onerror=window.__xss=1>"}}]},
  "scopeSpans":[{"scope":{"name":"ui-test"},"spans":[{
    "traceId":"11111111111111111111111111111111","spanId":"2222222222222222",
    "name":"<script>alert(1)</script>","kind":2,
    "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000150000000"
  }]}]
}]}"#;

/// Runs one script of tests/browser/ against `server` (it saves screenshots to tests/artifacts/)
/// and fails the test with the script's output when any of its checks fails.
fn run_browser_script(script: &str, server: &Server, extra_args: &[&str]) {
    let output = Command::new("node")
        .arg(repo_path(&format!("tests/browser/{script}")))
        .arg(server.ui_url(""))
        .arg(repo_path("tests/artifacts"))
        .args(extra_args)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn post_json(server: &Server, body: &[u8]) {
    let (status, _, response) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/json")],
        body,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
}

#[test]
fn pages_work_in_a_browser() {
    let server = Server::start();
    post_json(&server, HOSTILE_SPAN.as_bytes());
    run_browser_script("ui_test.mjs", &server, &[]);
}

#[test]
fn overview_pages_work_in_a_browser() {
    let server = Server::start();
    let shop = common::shop::send(&server, 30, 3);
    run_browser_script("overview_test.mjs", &server, &[&shop.trace_ids[0]]);
}

/// Trace A: a checkout through five services with an error, an event, a link to trace B, a span
/// whose name and attributes carry script, and an orphan whose parent never arrived.
/// Trace B: the same request, faster, without the database call and with a cache lookup.
fn explore_traces(now_ns: u64) -> serde_json::Value {
    let ms = 1_000_000u64;
    let (a0, b0) = (now_ns - 60_000 * ms, now_ns - 120_000 * ms);
    let trace_a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let trace_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let span = |trace: &str, id: &str, parent: &str, name: &str, kind: u8, start: u64, end: u64| {
        let mut span = serde_json::json!({
            "traceId": trace, "spanId": id, "name": name, "kind": kind,
            "startTimeUnixNano": start.to_string(), "endTimeUnixNano": end.to_string(),
        });
        if !parent.is_empty() {
            span["parentSpanId"] = parent.into();
        }
        span
    };
    let with = |mut span: serde_json::Value, key: &str, value: serde_json::Value| {
        span[key] = value;
        span
    };
    let resource = |service: &str, spans: Vec<serde_json::Value>| {
        serde_json::json!({
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
                {"key": "host.name", "value": {"stringValue": format!("{service}-1")}}]},
            "scopeSpans": [{"scope": {"name": "explore-test", "version": "1.0"}, "spans": spans}]
        })
    };
    let http = serde_json::json!([
        {"key": "http.method", "value": {"stringValue": "GET"}},
        {"key": "http.route", "value": {"stringValue": "/checkout"}},
        {"key": "http.status_code", "value": {"intValue": "500"}}]);
    serde_json::json!({"resourceSpans": [
        resource("frontend", vec![
            with(span(trace_a, "a000000000000001", "", "GET /checkout", 2, a0, a0 + 300 * ms), "attributes", http.clone()),
            span(trace_b, "b000000000000001", "", "GET /checkout", 2, b0, b0 + 180 * ms),
        ]),
        resource("checkout", vec![
            with(span(trace_a, "a000000000000002", "a000000000000001", "PlaceOrder", 2, a0 + 20 * ms, a0 + 280 * ms),
                "events", serde_json::json!([{"timeUnixNano": (a0 + 100 * ms).to_string(), "name": "retry",
                    "attributes": [{"key": "attempt", "value": {"intValue": "2"}}]}])),
            span(trace_b, "b000000000000002", "b000000000000001", "PlaceOrder", 2, b0 + 10 * ms, b0 + 170 * ms),
        ]),
        resource("payments", vec![
            with(with(span(trace_a, "a000000000000003", "a000000000000002", "Charge", 3, a0 + 40 * ms, a0 + 200 * ms),
                "status", serde_json::json!({"code": 2, "message": "card declined"})),
                "attributes", serde_json::json!([
                    {"key": "amount", "value": {"doubleValue": 12.5}},
                    {"key": "error", "value": {"boolValue": true}}])),
            span(trace_b, "b000000000000003", "b000000000000002", "Charge", 3, b0 + 20 * ms, b0 + 100 * ms),
        ]),
        resource("inventory", vec![
            with(span(trace_a, "a000000000000004", "a000000000000002", "Reserve", 3, a0 + 210 * ms, a0 + 270 * ms),
                "links", serde_json::json!([{"traceId": trace_b, "spanId": "b000000000000004",
                    "attributes": [{"key": "reason", "value": {"stringValue": "same basket"}}]}])),
            span(trace_b, "b000000000000004", "b000000000000002", "Reserve", 3, b0 + 110 * ms, b0 + 160 * ms),
            span(trace_b, "b000000000000005", "b000000000000004", "cache get", 3, b0 + 112 * ms, b0 + 115 * ms),
        ]),
        resource("db", vec![
            with(span(trace_a, "a000000000000005", "a000000000000004", "<script>window.__xss=3</script>", 3, a0 + 220 * ms, a0 + 260 * ms),
                "attributes", serde_json::json!([
                    {"key": "<img src=x onerror=window.__xss=4>", "value": {"stringValue": "\"><svg onload=window.__xss=5>"}}])),
        ]),
        resource("mailer", vec![
            span(trace_a, "a000000000000006", "f00000000000000f", "SendReceipt", 5, a0 + 250 * ms, a0 + 290 * ms),
        ]),
    ]})
}

#[test]
fn exploration_pages_work_in_a_browser() {
    let server = Server::start();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    post_json(&server, explore_traces(now_ns).to_string().as_bytes());
    run_browser_script("explore_test.mjs", &server, &[]);
}
