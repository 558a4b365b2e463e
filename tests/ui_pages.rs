//! The server-rendered pages: layout, security headers, escaping of span data, the SQL console.

mod common;

use common::{http_post, urlencode, Server};

/// A span whose name and attribute would run script if the UI did not escape them.
const HOSTILE_SPAN: &str = r#"{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"<img src=x onerror=window.__xss=1>"}}]},
  "scopeSpans":[{"scope":{"name":"ui-test"},"spans":[{
    "traceId":"11111111111111111111111111111111","spanId":"2222222222222222",
    "name":"<script>alert(1)</script>","kind":2,
    "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000150000000"
  }]}]
}]}"#;

/// GETs `url`; returns status, headers and body.
fn get(url: &str) -> (u16, ureq::http::HeaderMap, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().expect("the UI answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, headers, body)
}

fn store_hostile_span(server: &Server) {
    let (status, _, body) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/json")],
        HOSTILE_SPAN.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn pages_carry_security_headers_and_the_stylesheet() {
    let server = Server::start();
    let (status, headers, body) = get(&server.ui_url("/sql"));
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(body.contains(r#"<link rel="stylesheet" href="/static/style.css">"#));
    assert!(
        body.contains(r#"aria-current="page""#),
        "the current page is marked in the nav"
    );
    assert!(!body.contains("<script"), "pages work without script");

    let (status, headers, css) = get(&server.ui_url("/static/style.css"));
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(css.contains("prefers-color-scheme: dark"));

    // The API keeps working and gets the same headers.
    let (status, headers, _) = get(&server.ui_url("/api/sql?q=SELECT%201"));
    assert_eq!(status, 200);
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[test]
fn sql_console_offers_examples_that_run() {
    let server = Server::start();
    let (status, _, body) = get(&server.ui_url("/sql"));
    assert_eq!(status, 200);
    assert!(body.contains("Spans per service"), "{body}");
    assert!(body.contains(r#"<textarea id="q" name="q""#));

    let example = "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name";
    let (status, _, body) = get(&server.ui_url(&format!("/sql?q={}", urlencode(example))));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<table class="results">"#), "{body}");
    assert!(body.contains("0 rows"), "{body}");
}

#[test]
fn sql_console_escapes_span_data() {
    let server = Server::start();
    store_hostile_span(&server);
    let sql = "SELECT service_name, span_name FROM spans";
    let (status, _, body) = get(&server.ui_url(&format!("/sql?q={}", urlencode(sql))));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert(1)"), "{body}");
    assert!(!body.contains("<img src=x"), "{body}");
    assert!(body.contains("1 row"), "{body}");
}

#[test]
fn sql_console_shows_errors_and_refuses_writes() {
    let server = Server::start();
    let (status, _, body) = get(&server.ui_url(&format!("/sql?q={}", urlencode("DROP TABLE span_data"))));
    assert_eq!(status, 400);
    assert!(body.contains(r#"class="error""#), "{body}");
    assert!(
        body.contains("DROP TABLE span_data"),
        "the query stays in the editor: {body}"
    );
    let (status, _, _) = get(&server.ui_url("/api/sql?q=SELECT%20count(*)%20FROM%20span_data"));
    assert_eq!(status, 200, "the table is still there");
}
