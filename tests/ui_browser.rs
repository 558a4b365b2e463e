//! Drives the web pages in headless Chromium (tests/browser/ui_test.mjs) over stored data.

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

#[test]
fn pages_work_in_a_browser() {
    let server = Server::start();
    let (status, _, body) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/json")],
        HOSTILE_SPAN.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let output = Command::new("node")
        .arg(repo_path("tests/browser/ui_test.mjs"))
        .arg(server.ui_url(""))
        .arg(repo_path("tests/artifacts"))
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "ui_test.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn overview_pages_work_in_a_browser() {
    let server = Server::start();
    let shop = common::shop::send(&server, 30, 3);
    let output = Command::new("node")
        .arg(repo_path("tests/browser/overview_test.mjs"))
        .arg(server.ui_url(""))
        .arg(repo_path("tests/artifacts"))
        .arg(&shop.trace_ids[0])
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "overview_test.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
