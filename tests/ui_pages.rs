//! The server-rendered pages: layout, security headers, escaping of span data, the SQL console.

mod common;

use common::{http_post, post_protobuf, synthetic_request, urlencode, Server};

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

/// Two spans of one trace whose names, attribute keys and values try to break out of HTML.
const HOSTILE_TRACE: &str = r#"{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"<img src=x onerror=window.__xss=1>"}}]},
  "scopeSpans":[{"scope":{"name":"<b>scope</b>"},"spans":[{
    "traceId":"33333333333333333333333333333333","spanId":"4444444444444444",
    "name":"<script>alert(1)</script>","kind":2,
    "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000150000000",
    "attributes":[{"key":"<i>key</i>","value":{"stringValue":"\"><svg onload=window.__xss=2>"}}],
    "events":[{"timeUnixNano":"1700000000050000000","name":"<u>event</u>"}],
    "status":{"code":2,"message":"<marquee>down</marquee>"}
  },{
    "traceId":"33333333333333333333333333333333","spanId":"5555555555555555","parentSpanId":"4444444444444444",
    "name":"child","kind":3,
    "startTimeUnixNano":"1700000000010000000","endTimeUnixNano":"1700000000100000000"
  }]}]
}]}"#;

/// The custom range around the hostile trace's time.
const HOSTILE_RANGE: &str = "lookback=custom&start=2023-11-14T00:00&end=2023-11-16T00:00";

/// GETs `path` until its body contains `needle` (trace summaries are built every 2 s).
fn get_until(server: &Server, path: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, _, body) = get(&server.ui_url(path));
        if body.contains(needle) || std::time::Instant::now() > deadline {
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(needle), "{needle} not in {body}");
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn store_hostile_trace(server: &Server) {
    let (status, _, body) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/json")],
        HOSTILE_TRACE.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// No markup from span data survives into a page as markup.
fn assert_escaped(body: &str) {
    for raw in [
        "<script>alert",
        "<img src=x",
        "<svg onload",
        "<i>key",
        "<u>event",
        "<marquee>",
        "<b>scope",
    ] {
        assert!(!body.contains(raw), "{raw} reached the page unescaped: {body}");
    }
}

#[test]
fn search_finds_traces_and_escapes_span_data() {
    let server = Server::start();
    store_hostile_trace(&server);
    let trace_id = "33333333333333333333333333333333";
    let body = get_until(&server, &format!("/search?{HOSTILE_RANGE}"), trace_id);
    assert_escaped(&body);
    assert!(
        body.contains("&#60;script&#62;") || body.contains("&lt;script&gt;"),
        "{body}"
    );
    assert!(body.contains(r#"<script src="/static/explore.js" defer></script>"#));
    assert!(body.contains(r#"id="scatter""#), "a scatter plot: {body}");

    // Filters: the hostile attribute matches as text, a wrong value matches nothing.
    let attribute = urlencode(r#"<i>key</i>="\"><svg onload=window.__xss=2>""#);
    let body = get_until(
        &server,
        &format!("/search?{HOSTILE_RANGE}&attributes={attribute}"),
        trace_id,
    );
    assert_escaped(&body);
    assert_no_results(&server, "a%3Db");
    for (filter, matches) in [
        ("status=error", true),
        ("min_duration=100ms", true),
        ("min_duration=1s", false),
        ("max_duration=10ms", false),
        (
            "service=%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D1%3E&operation=child",
            true,
        ),
        ("service=nobody", false),
    ] {
        let (status, _, body) = get(&server.ui_url(&format!("/search?{HOSTILE_RANGE}&{filter}")));
        assert_eq!(status, 200, "{filter}: {body}");
        assert_eq!(body.contains(trace_id), matches, "{filter}: {body}");
    }
    // The time range applies: the last hour holds nothing from 2023.
    let (_, _, body) = get(&server.ui_url("/search"));
    assert!(body.contains(r#"id="no-results""#), "{body}");
}

/// Asserts that searching the hostile range for `attributes` (URL-encoded) finds no trace.
fn assert_no_results(server: &Server, attributes: &str) {
    let (status, _, body) = get(&server.ui_url(&format!("/search?{HOSTILE_RANGE}&attributes={attributes}")));
    assert_eq!(status, 200, "{attributes}: {body}");
    assert!(body.contains(r#"id="no-results""#), "{attributes}: {body}");
}

/// Waits until the attribute indexer has built `blocks` Bloom filters.
fn wait_for_blooms(server: &Server, blocks: u64) {
    server.sql_rows_when(
        "SELECT count(*) FROM attribute_blooms",
        std::time::Duration::from_secs(60),
        |rows| rows[0][0] == blocks,
    );
}

/// Whether each indexed block, in order, is plain (`attribute_index.rs`).
fn assert_plain_blocks(server: &Server, plain: &[bool]) {
    let blocks = server.sql("SELECT plain FROM attribute_blooms ORDER BY block");
    let expected: Vec<[bool; 1]> = plain.iter().map(|&p| [p]).collect();
    assert_eq!(blocks["rows"], serde_json::json!(expected));
}

/// The id of `synthetic_request(seed, …)`'s trace.
fn synthetic_trace(seed: u8) -> String {
    format!("{seed:02x}{}", "07".repeat(15))
}

#[test]
fn attribute_search_reads_indexed_blocks_and_the_unindexed_tail() {
    let server = Server::start();
    // Three traces of 5,000 spans, each with `index` 0..4999: rowids 0..14999, so the first
    // 8,192 spans (trace 1 and part of trace 2) get a Bloom filter, the rest stay the tail.
    for seed in 1..=3 {
        post_protobuf(&server, &synthetic_request(seed, 5000));
    }
    wait_for_blooms(&server, 1);
    // Every span has joined values and a stored key set: searched by the plain condition.
    assert_plain_blocks(&server, &[true]);
    // index=100: in the filtered block for traces 1 and 2, in the tail for trace 3;
    // index=4999: trace 1 in the block, traces 2 and 3 in the tail.
    for value in ["100", "4999"] {
        let body = get_until(
            &server,
            &format!("/search?{HOSTILE_RANGE}&attributes=index%3D{value}"),
            &synthetic_trace(3),
        );
        for seed in 1..=3 {
            assert!(
                body.contains(&synthetic_trace(seed)),
                "index={value} misses trace {seed}: {body}"
            );
        }
    }
    for absent in [
        "index%3D5000",
        "http.route%3D%2Fy",
        "index%3D100%20http.route%3D%2Fy",
    ] {
        assert_no_results(&server, absent);
    }
}

#[test]
fn spans_past_the_key_set_limit_keep_their_keys_inline_and_are_found() {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    let text = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    let server = Server::start_with(&["--max-attribute-key-sets", "1"]);
    // One full block: the first span's keys (index, http.route) are the one stored key set; two
    // spans bring new lists, which must keep their keys inline.
    let mut request = synthetic_request(9, 8192);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[5000].attributes.push(text("user.id", "u-42"));
    spans[6000].attributes = vec![text("user.id", "u-43")];
    post_protobuf(&server, &request);
    wait_for_blooms(&server, 1);
    assert_plain_blocks(&server, &[false]);

    let stored = server.sql(
        "SELECT (SELECT count(*) FROM attribute_key_sets), count(*) FILTER (WHERE attribute_key_set IS NULL)
         FROM span_data",
    );
    assert_eq!(stored["rows"], serde_json::json!([[1, 2]]));
    let users = server.sql(
        "SELECT attributes['user.id'], attribute_values[list_position(attribute_keys, 'user.id')],
                attributes['index']
         FROM spans WHERE attributes['user.id'] IS NOT NULL ORDER BY 1",
    );
    assert_eq!(
        users["rows"],
        serde_json::json!([["u-42", "u-42", "5000"], ["u-43", "u-43", null]])
    );
    // Found through the block's Bloom filter, and by the span-level filter on inline keys.
    for user in ["u-42", "u-43"] {
        get_until(
            &server,
            &format!("/search?{HOSTILE_RANGE}&attributes=user.id%3D{user}"),
            &synthetic_trace(9),
        );
    }
    // Read back whole: inline keys with joined values, beside spans of the stored key set.
    common::assert_stored_exactly(&server, &request);
}

#[test]
fn values_that_cannot_be_joined_are_listed_and_read_back_and_found_the_same() {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    let route = |value: Option<&str>| KeyValue {
        key: "http.route".into(),
        value: Some(AnyValue {
            value: value.map(|v| Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let server = Server::start();
    // One full block, so its Bloom filter is built from both ways of storing values. A span's
    // values are joined by U+001F unless one holds it, one is empty (NULL), or there are none.
    let mut request = synthetic_request(8, 8192);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[10].attributes[1] = route(Some("/a\u{1f}b"));
    spans[11].attributes[1] = route(Some(""));
    spans[12].attributes.clear();
    spans[13].attributes[1] = route(None);
    post_protobuf(&server, &request);
    wait_for_blooms(&server, 1);
    assert_plain_blocks(&server, &[false]);

    let listed =
        server.sql("SELECT list(span_id ORDER BY span_id) FROM span_data WHERE attribute_text IS NULL");
    assert_eq!(listed["rows"], serde_json::json!([[[11, 13, 14]]]));
    let view = server.sql(
        "SELECT span_id, attributes['http.route'], attribute_values FROM spans
         WHERE span_id IN ('000000000000000b', '000000000000000c', '000000000000000d', '000000000000000e', '000000000000000f')
         ORDER BY span_id",
    );
    assert_eq!(
        view["rows"],
        serde_json::json!([
            ["000000000000000b", "/a\u{1f}b", ["10", "/a\u{1f}b"]],
            ["000000000000000c", "", ["11", ""]],
            ["000000000000000d", null, []],
            ["000000000000000e", null, ["13", null]],
            ["000000000000000f", "/x", ["14", "/x"]]
        ])
    );
    common::assert_stored_exactly(&server, &request);
    // Each filter holds for exactly one span, so a trace found means that span matched.
    for found in [
        "index%3D10%20http.route%3D%2Fa%1Fb",
        "index%3D11%20http.route%3D%22%22",
        "index%3D14%20http.route%3D%2Fx",
    ] {
        get_until(
            &server,
            &format!("/search?{HOSTILE_RANGE}&attributes={found}"),
            &synthetic_trace(8),
        );
    }
    for absent in [
        "index%3D10%20http.route%3D%2Fa",
        "index%3D10%20http.route%3Db",
        "index%3D13%20http.route%3D%22%22",
    ] {
        assert_no_results(&server, absent);
    }
}

#[test]
fn attribute_search_finds_a_trace_that_started_long_before_its_matching_span() {
    let server = Server::start();
    // The only span with index=1 starts ten minutes after the trace's root: its summary is
    // not among those starting near the span.
    let mut request = synthetic_request(5, 2);
    let late = &mut request.resource_spans[0].scope_spans[0].spans[1];
    late.start_time_unix_nano += 600_000_000_000;
    late.end_time_unix_nano += 600_000_000_000;
    post_protobuf(&server, &request);
    get_until(
        &server,
        &format!("/search?{HOSTILE_RANGE}&attributes=index%3D1"),
        &synthetic_trace(5),
    );
}

#[test]
fn attribute_search_newest_first_stops_early_and_stays_exact() {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    let server = Server::start();
    // 20 traces of 8,192 spans, one block each, trace n starting n seconds later than trace 1;
    // every trace has `index` 0..8191, and only trace 1 has `marker`.
    for seed in 1..=20u8 {
        let mut request = synthetic_request(seed, 8192);
        for span in &mut request.resource_spans[0].scope_spans[0].spans {
            span.start_time_unix_nano += u64::from(seed) * 1_000_000_000;
            span.end_time_unix_nano += u64::from(seed) * 1_000_000_000;
        }
        if seed == 1 {
            request.resource_spans[0].scope_spans[0].spans[0]
                .attributes
                .push(KeyValue {
                    key: "marker".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("first".into())),
                    }),
                    ..Default::default()
                });
        }
        post_protobuf(&server, &request);
    }
    wait_for_blooms(&server, 20);
    let body = get_until(
        &server,
        &format!("/search?{HOSTILE_RANGE}&attributes=index%3D5&limit=3"),
        &synthetic_trace(20),
    );
    for seed in 1..=20 {
        assert_eq!(
            body.contains(&synthetic_trace(seed)),
            seed >= 18,
            "trace {seed}: {body}"
        );
    }
    // The oldest block is read when the pair is only there, in every order.
    for sort in ["recent", "longest", "spans"] {
        let body = get_until(
            &server,
            &format!("/search?{HOSTILE_RANGE}&attributes=marker%3Dfirst&sort={sort}"),
            &synthetic_trace(1),
        );
        assert!(!body.contains(&synthetic_trace(2)), "{sort}: {body}");
    }
}

#[test]
fn bad_filters_and_ids_get_400_and_unknown_traces_404() {
    let server = Server::start();
    for (path, message) in [
        ("/search?min_duration=150", "not a duration"),
        ("/search?max_duration=fast", "not a duration"),
        (
            "/search?min_duration=2s&max_duration=1s",
            "larger than the maximum",
        ),
        ("/search?attributes=status", "key=value"),
        ("/search?attributes=a%3D%22open", "closing quote"),
        ("/search?lookback=2y", "unknown time range"),
        ("/search?lookback=custom&start=yesterday", "not a date and time"),
        (
            "/search?lookback=custom&start=2024-01-02T00:00&end=2024-01-01T00:00",
            "must end after",
        ),
        ("/search?limit=0", "the limit"),
        ("/search?limit=100000", "the limit"),
        ("/search?sort=sideways", "unknown sort order"),
        ("/search?status=maybe", "unknown status"),
        ("/search?operation=GET", "choose a service"),
        ("/trace/xyz", "32 hex digits"),
        ("/trace/00000000000000000000000000000000", "all zeros"),
        (
            "/trace/33333333333333333333333333333333?span=nothex",
            "16 hex digits",
        ),
        ("/compare?a=33333333333333333333333333333333&b=nothex", "trace B"),
        ("/compare?trace=33333333333333333333333333333333", "exactly two"),
        ("/compare", "two traces"),
    ] {
        let (status, headers, body) = get(&server.ui_url(path));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with("text/html"),
            "{path}"
        );
        assert!(body.contains(message), "{path}: {message} not in {body}");
        assert!(body.contains(r#"role="alert""#), "{path}");
    }
    let unknown = "0123456789abcdef0123456789abcdef";
    let (status, _, body) = get(&server.ui_url(&format!("/trace/{unknown}")));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("is not stored"), "{body}");
    let (status, _, _) = get(&server.ui_url(&format!("/compare?a={unknown}&b={unknown}")));
    assert_eq!(status, 404);

    // The home page is the search page.
    let (status, _, body) = get(&server.ui_url("/"));
    assert_eq!(status, 200);
    assert!(body.contains(r#"id="search-form""#), "{body}");
}

#[test]
fn trace_page_shows_the_tree_and_span_details_escaped() {
    let server = Server::start();
    store_hostile_trace(&server);
    let trace = "/trace/33333333333333333333333333333333";
    let (status, _, body) = get(&server.ui_url(trace));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    assert!(body.contains(r#"id="span-4444444444444444""#), "{body}");
    assert!(body.contains(r#"id="span-5555555555555555""#), "{body}");
    assert!(
        body.contains(r#"<details class="node" open>"#),
        "the root folds open: {body}"
    );
    assert!(body.contains(r#"href="/api/v3/traces/33333333333333333333333333333333""#));
    assert!(!body.contains(r#"id="detail""#), "no span selected yet");

    let (status, _, body) = get(&server.ui_url(&format!("{trace}?span=4444444444444444&critical=1")));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    assert!(body.contains(r#"id="detail""#), "{body}");
    assert!(
        body.contains("&#60;marquee&#62;down") || body.contains("&lt;marquee&gt;down"),
        "{body}"
    );
    assert!(body.contains(r#"class="waterfall critical""#), "{body}");
    assert!(body.contains("t-string"), "typed attributes: {body}");

    let (status, _, body) = get(&server.ui_url(&format!("{trace}?span=0000000000000009")));
    assert_eq!(status, 200);
    assert!(body.contains("is not in this trace"), "{body}");
}

#[test]
fn span_details_come_alone_as_on_the_page() {
    let server = Server::start();
    store_hostile_trace(&server);
    let trace = "/trace/33333333333333333333333333333333";
    let query = "?span=4444444444444444&critical=1";
    let (status, headers, fragment) = get(&server.ui_url(&format!("{trace}/detail{query}")));
    assert_eq!(status, 200, "{fragment}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_escaped(&fragment);
    assert!(
        fragment
            .trim_start()
            .starts_with(r#"<section class="detail" id="detail""#),
        "only the details: {fragment}"
    );
    assert!(!fragment.contains("<html") && !fragment.contains(r#"id="waterfall""#));
    assert!(fragment.contains(r#"<dd class="mono" id="detail-span-id">4444444444444444</dd>"#));
    // Its links keep the page's options, as on the page.
    assert!(
        fragment.contains(r#"href="/trace/33333333333333333333333333333333?critical=1""#),
        "closing keeps the critical path: {fragment}"
    );
    // The very markup the page has under the span's row.
    let (_, _, page) = get(&server.ui_url(&format!("{trace}{query}")));
    let start = page
        .find(r#"<section class="detail""#)
        .expect("details on the page");
    let on_page = &page[start..start + page[start..].find("</section>").unwrap()];
    assert!(fragment.contains(on_page), "{on_page}\n---\n{fragment}");

    for (path, status, message) in [
        (format!("{trace}/detail"), 400, "name the span"),
        (format!("{trace}/detail?span=nothex"), 400, "16 hex digits"),
        (
            format!("{trace}/detail?span=0000000000000009"),
            404,
            "is not in trace",
        ),
        (
            "/trace/0123456789abcdef0123456789abcdef/detail?span=4444444444444444".into(),
            404,
            "is not stored",
        ),
    ] {
        let (got, _, body) = get(&server.ui_url(&path));
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(message), "{path}: {body}");
    }
}

#[test]
fn trace_zooms_to_a_window_without_script() {
    let server = Server::start();
    store_hostile_trace(&server);
    // The root lasts 150 ms, its child runs from 10 to 100 ms.
    let trace = "/trace/33333333333333333333333333333333";
    let (status, _, body) = get(&server.ui_url(trace));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<form class="zoom" id="zoom-form""#), "{body}");
    assert!(!body.contains(r#"id="zoom-reset""#), "not zoomed yet");
    assert!(!body.contains(" outside"), "{body}");

    let (status, _, body) = get(&server.ui_url(&format!("{trace}?from=110&to=150&span=4444444444444444")));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    assert!(
        body.contains(r#"<div class="row leaf outside" id="span-5555555555555555""#),
        "the child ends before the window: {body}"
    );
    assert!(body.contains("Showing +110 ms to +150 ms"), "{body}");
    assert!(body.contains(r#"class="shade""#), "{body}");
    let reset = &body[body.find(r#"id="zoom-reset" href=""#).expect("a reset link")..];
    let reset = &reset[..reset.find('>').unwrap()];
    assert!(
        !reset.contains("from=") && reset.contains("span=4444444444444444"),
        "{reset}"
    );
    // Every link of the page keeps the window: rows, toggles, the details' links.
    let row_link = &body[body.find(r#"<a class="span-link" href="/trace/"#).unwrap()..];
    let row_link = &row_link[..row_link.find('>').unwrap()];
    assert!(
        row_link.contains("from=110") && row_link.contains("to=150"),
        "{row_link}"
    );
    assert!(
        body.contains(r#"name="span" value="4444444444444444""#),
        "the form keeps the span"
    );
    let (_, _, fragment) =
        get(&server.ui_url(&format!("{trace}/detail?span=5555555555555555&from=110&to=150")));
    let close = &fragment[fragment.find(r#"class="close" href=""#).expect("close link")..];
    assert!(close[..close.find('>').unwrap()].contains("to=150"), "{close}");
    let zoom_to = &fragment[fragment.find(r#"class="zoom-to" href=""#).expect("zoom link")..];
    assert!(
        zoom_to[..zoom_to.find('>').unwrap()].contains("from=10") && zoom_to.contains("to=100"),
        "{zoom_to}"
    );

    // One end may be left out; the window is cut to the trace.
    let (status, _, body) = get(&server.ui_url(&format!("{trace}?to=5")));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Showing +0 ns to +5 ms"), "{body}");
    let (status, _, body) = get(&server.ui_url(&format!("{trace}?from=100&to=9999")));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Showing +100 ms to +150 ms"), "{body}");
    for (query, message) in [
        ("from=soon", "not a number of milliseconds"),
        ("to=-5", "not a number of milliseconds"),
        ("from=NaN", "not a number of milliseconds"),
        ("from=50&to=20", "holds no time"),
        ("from=200&to=300", "lasts 150 ms"),
    ] {
        let (status, _, body) = get(&server.ui_url(&format!("{trace}?{query}")));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(message), "{query}: {body}");
    }
}

#[test]
fn compare_lines_up_two_traces() {
    let server = Server::start();
    store_hostile_trace(&server);
    store_hostile_span(&server);
    let (status, _, body) = get(&server
        .ui_url("/compare?trace=33333333333333333333333333333333&trace=11111111111111111111111111111111"));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    assert!(
        body.contains(r#"<tr class="removed">"#),
        "the child is only in A: {body}"
    );
    assert!(body.contains(r#"id="diff""#), "{body}");
}
