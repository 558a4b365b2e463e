//! The overview pages over HTTP: /dependencies, /services and /services/{name} against
//! traces sent through OTLP, including a service whose name is an HTML payload.

mod common;

use common::shop::{self, HOSTILE_OPERATION, HOSTILE_SERVICE};
use common::{http_get, urlencode, Server};

/// The `<tr>` of `body`'s table `table_id` that contains every one of `cells`.
fn row<'a>(body: &'a str, table_id: &str, cells: &[&str]) -> &'a str {
    let start = body
        .find(&format!(r#"id="{table_id}""#))
        .unwrap_or_else(|| panic!("no table {table_id}: {body}"));
    let table = &body[start..start + body[start..].find("</table>").unwrap()];
    table
        .split("<tr")
        .find(|row| cells.iter().all(|cell| row.contains(cell)))
        .unwrap_or_else(|| panic!("no row of {table_id} with {cells:?}: {table}"))
}

fn num(value: impl std::fmt::Display) -> String {
    format!(r#"<td class="num">{value}</td>"#)
}

fn assert_escaped(body: &str) {
    assert!(!body.contains("<img src=x"), "raw service name in the page");
    assert!(!body.contains("<script>alert"), "raw operation name in the page");
    assert!(!body.contains("<script"), "pages carry no script");
}

#[test]
fn dependencies_show_the_calls_sent() {
    let server = Server::start();
    let shop = shop::send(&server, 12, 3);
    let (status, body) = http_get(&server.ui_url("/dependencies"));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);

    let calls = num(shop.calls_per_edge());
    let gateway = r#"href="/services/gateway?lookback=1h">gateway</a>"#;
    row(
        &body,
        "edge-table",
        &[gateway, ">auth</a>", &calls, &num(0), "0%"],
    );
    row(
        &body,
        "edge-table",
        &[gateway, ">orders</a>", &calls, &num(shop.failures())],
    );
    let inventory = row(&body, "edge-table", &[">orders</a>", ">inventory</a>", &calls]);
    assert!(inventory.contains(&num(shop.failures())), "{inventory}");
    assert!(
        inventory.contains("25%") && inventory.contains(r#"class="hot""#),
        "{inventory}"
    );
    assert!(
        inventory.contains(r#"href="/trace/"#),
        "an example trace: {inventory}"
    );
    // The hostile service is listed as text, its link encoded.
    let hostile = row(
        &body,
        "edge-table",
        &[gateway, "&#60;img src=x onerror=window.__xss=1&#62;"],
    );
    assert!(hostile.contains(&num(shop.hostile_calls)), "{hostile}");
    assert!(hostile.contains("/services/%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D1%3E?lookback=1h"));

    // The graph: one node per service, one labelled edge per pair, the failing one marked.
    let svg = &body[body.find(r#"<svg id="dependency-graph""#).expect("the graph")..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    assert_eq!(svg.matches(r#"<a class="node""#).count(), 5, "{svg}");
    assert_eq!(svg.matches(r#"<path class="edge"#).count(), 4, "{svg}");
    assert_eq!(svg.matches(r#"<path class="edge hot""#).count(), 2, "{svg}");
    assert!(
        svg.contains(&format!(">{} calls · 0% err<", shop.calls_per_edge())),
        "{svg}"
    );
    assert!(
        svg.contains(&format!(">{} calls · 25% err<", shop.calls_per_edge())),
        "{svg}"
    );
    assert!(
        svg.contains("&#60;img src=x onerror=window.__xss=1&#62;"),
        "{svg}"
    );
}

#[test]
fn dependencies_follow_the_range() {
    let server = Server::start();
    shop::send(&server, 20, 0);
    // Traces start 30 s, 90 s, … ago: 15 of them in the last 15 minutes.
    let (status, body) = http_get(&server.ui_url("/dependencies?lookback=15m"));
    assert_eq!(status, 200, "{body}");
    row(&body, "edge-table", &[">gateway</a>", ">auth</a>", &num(15)]);
    assert!(
        body.contains(r#"href="/services/gateway?lookback=15m""#),
        "links keep the range"
    );

    let (status, body) =
        http_get(&server.ui_url("/dependencies?lookback=custom&start=2020-01-01T00:00&end=2020-01-02T00:00"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("No calls between services in this range"), "{body}");
    assert!(
        body.contains(r#"value="2020-01-01T00:00:00""#),
        "the form shows the range"
    );
}

#[test]
fn services_list_every_service_with_its_requests() {
    let server = Server::start();
    let shop = shop::send(&server, 8, 2);
    let (status, body) = http_get(&server.ui_url("/services?lookback=6h"));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    // Requests are server spans: one per trace in each service, whatever the client spans.
    for service in ["gateway", "auth", "orders", "inventory"] {
        let link = format!(r#"href="/services/{service}?lookback=6h">{service}</a>"#);
        row(&body, "service-table", &[&link, &num(shop.traces)]);
    }
    let inventory = row(&body, "service-table", &[">inventory</a>"]);
    assert!(
        inventory.contains(r#"<span class="badge">25%</span>"#),
        "{inventory}"
    );
    let hostile = row(
        &body,
        "service-table",
        &["&#60;img src=x onerror=window.__xss=1&#62;"],
    );
    assert!(hostile.contains(&num(shop.hostile_calls)), "{hostile}");
}

#[test]
fn service_page_shows_red_metrics_and_examples() {
    let server = Server::start();
    let shop = shop::send(&server, 12, 0);
    let (status, body) = http_get(&server.ui_url("/services/inventory"));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    assert!(
        body.contains(r#"<span id="service-name">inventory</span>"#),
        "{body}"
    );
    assert_eq!(
        body.matches(r#"<svg class="chart-svg""#).count(),
        4,
        "three RED charts and the histogram"
    );
    assert!(body.contains("Request rate") && body.contains("Duration distribution"));

    // The failing operation links to its most recent failed trace (trace 0) and to search.
    let failing = row(&body, "failing", &[">GET /stock</a>", &num(shop.failures())]);
    assert!(
        failing.contains(&format!(r#"href="/trace/{}""#, shop.trace_ids[0])),
        "{failing}"
    );
    assert!(
        failing.contains(r#"href="/search?service=inventory&amp;operation=GET%20%2Fstock&amp;lookback=1h""#)
            || failing
                .contains(r#"href="/search?service=inventory&#38;operation=GET%20%2Fstock&#38;lookback=1h""#),
        "{failing}"
    );
    let slowest = row(&body, "slowest", &[">GET /stock</a>"]);
    assert!(slowest.contains(r#"class="example" href="/trace/"#), "{slowest}");
    row(
        &body,
        "operations",
        &[">GET /stock</a>", &num(shop.traces), &num(shop.failures())],
    );

    // One operation's charts; the orders service lists only what it served.
    let (status, body) = http_get(&server.ui_url("/services/orders?lookback=15m&operation=POST%20%2Forders"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"<span class="operation">· POST /orders</span>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"name="operation" value="POST /orders""#),
        "the custom range keeps the operation"
    );
    assert!(
        !body.contains(">compute total</a>"),
        "internal spans are not requests"
    );
}

#[test]
fn hostile_names_are_escaped_on_the_service_page() {
    let server = Server::start();
    shop::send(&server, 4, 2);
    let path = format!("/services/{}", urlencode(HOSTILE_SERVICE));
    let (status, body) = http_get(&server.ui_url(&path));
    assert_eq!(status, 200, "{body}");
    assert_escaped(&body);
    assert!(
        body.contains("&#60;img src=x onerror=window.__xss=1&#62;"),
        "{body}"
    );
    assert!(
        body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{body}"
    );
    assert!(!HOSTILE_OPERATION.is_empty());
}

#[test]
fn unknown_services_and_bad_input_are_refused() {
    let server = Server::start();
    shop::send(&server, 2, 0);
    let (status, body) = http_get(&server.ui_url("/services/no-such-service"));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no service named"), "{body}");

    for (path, reason) in [
        (
            "/dependencies?lookback=2w",
            "is not one of 15m, 1h, 6h, 24h, custom",
        ),
        (
            "/services?lookback=custom&start=2026-01-01T00:00",
            "needs both start and end",
        ),
        (
            "/services?lookback=custom&start=yesterday&end=2026-01-01T00:00",
            "is not a time",
        ),
        (
            "/services/gateway?lookback=custom&start=2026-01-02T00:00&end=2026-01-01T00:00",
            "must end after it starts",
        ),
        (
            "/dependencies?lookback=custom&start=2025-01-01T00:00&end=2026-01-01T00:00",
            "at most 31 days",
        ),
        ("/dependencies?lookback=%3Cscript%3E", "&#60;script&#62;"),
    ] {
        let (status, body) = http_get(&server.ui_url(path));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
        assert!(!body.contains("<script>"), "{path}: {body}");
    }
}
