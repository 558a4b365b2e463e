//! The overview pages over HTTP: /dependencies, /services and /services/{name} against
//! traces sent through OTLP, including a service whose name is an HTML payload.

mod common;

use common::shop::{self, HOSTILE_OPERATION, HOSTILE_SERVICE};
use common::{http_get, http_post, urlencode, Server};

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

/// For each `marker` in `body`: the name between the next `name_start` and `name_end` (trimmed),
/// and the value between `marker` and `value_end`.
fn pairs(
    body: &str,
    marker: &str,
    value_end: &str,
    name_start: &str,
    name_end: &str,
) -> Vec<(String, String)> {
    body.split(marker)
        .skip(1)
        .map(|rest| {
            let value = &rest[..rest.find(value_end).expect("the value ends")];
            let name = &rest[rest.find(name_start).expect("a name follows") + name_start.len()..];
            let name = &name[..name.find(name_end).expect("the name ends")];
            (name.trim().to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn services_have_distinct_colours_the_same_on_every_page() {
    let server = Server::start();
    let shop = shop::send(&server, 4, 2);
    let (_, css) = http_get(&server.ui_url("/static/style.css"));
    // `.c3 { --svc: #8b5cf6; }`: the colour each class stands for.
    let class_colour: std::collections::HashMap<String, String> = (0..12)
        .map(|place| {
            let rule = format!(".c{place} {{ --svc: ");
            let at = css
                .find(&rule)
                .unwrap_or_else(|| panic!("{rule} in the stylesheet"))
                + rule.len();
            (format!("c{place}"), css[at..at + 7].to_string())
        })
        .collect();

    // The trace pages: each service of a trace has its own colour, even inventory and db, which
    // a hash of their names put on the same colour.
    let store_db = r#"{"resourceSpans":[
      {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"inventory"}}]},
       "scopeSpans":[{"spans":[{"traceId":"d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0","spanId":"00000000000000d1",
         "name":"reserve","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000090000000"}]}]},
      {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"db"}}]},
       "scopeSpans":[{"spans":[{"traceId":"d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0","spanId":"00000000000000d2",
         "parentSpanId":"00000000000000d1","name":"UPDATE stock","kind":3,
         "startTimeUnixNano":"1700000000010000000","endTimeUnixNano":"1700000000080000000"}]}]}]}"#;
    let (status, _, _) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/json")],
        store_db.as_bytes(),
    );
    assert_eq!(status, 200);
    let mut in_trace = std::collections::HashMap::new();
    for (trace_id, services) in [
        (
            shop.trace_ids[0].as_str(),
            &["gateway", "auth", "orders", "inventory"][..],
        ),
        ("d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0", &["inventory", "db"][..]),
    ] {
        let (status, body) = http_get(&server.ui_url(&format!("/trace/{trace_id}")));
        assert_eq!(status, 200, "{body}");
        let chips = &body[body.find(r#"<dd class="chips">"#).expect("service chips")..];
        let chips = &chips[..chips.find("</dd>").unwrap()];
        let classes = pairs(chips, r#"<span class="svc "#, "\"", ">", "<");
        for service in services {
            assert!(
                classes.iter().any(|(name, _)| name == service),
                "{service} in {chips}"
            );
        }
        let mut distinct: Vec<&String> = classes.iter().map(|(_, class)| class).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), classes.len(), "one colour each: {classes:?}");
        for (name, class) in classes {
            assert_eq!(
                in_trace.entry(name).or_insert_with(|| class.clone()),
                &class,
                "{trace_id}"
            );
        }
    }
    let colour_of = |service: &str| class_colour[&in_trace[service]].clone();

    // Search results, the dependency graph, the services list and a service page agree.
    let mut search = String::new();
    for _ in 0..100 {
        search = http_get(&server.ui_url("/search")).1;
        if search.contains(&shop.trace_ids[0]) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let chips: Vec<(String, String)> = pairs(&search, r#"<span class="svc "#, "\"", ">", "<")
        .into_iter()
        .filter(|(service, _)| in_trace.contains_key(service))
        .collect();
    assert!(chips.len() >= 4, "{search}");
    for (service, class) in chips {
        assert_eq!(class_colour[&class], colour_of(&service), "search: {service}");
    }
    let (_, dependencies) = http_get(&server.ui_url("/dependencies"));
    let nodes: Vec<(String, String)> = pairs(&dependencies, r#"<a class="node""#, "</a>", "<title>", "<")
        .into_iter()
        .map(|(name, node)| {
            (
                name,
                node[node.find(r##"stroke="#"##).unwrap() + 8..][..7].to_string(),
            )
        })
        .collect();
    assert_eq!(nodes.len(), 5, "{dependencies}");
    for (service, hex) in nodes.iter().filter(|(name, _)| in_trace.contains_key(name)) {
        assert_eq!(*hex, colour_of(service), "dependencies: {service}");
    }
    let (_, services) = http_get(&server.ui_url("/services"));
    for service in in_trace.keys() {
        let row = row(&services, "service-table", &[&format!(">{service}</a>")]);
        assert!(
            row.contains(&format!(r#"fill="{}""#, colour_of(service))),
            "services: {row}"
        );
    }
    let (_, page) = http_get(&server.ui_url("/services/inventory"));
    assert!(
        page.contains(&format!(
            r#"rx="2" fill="{}"/></svg><span id="service-name">"#,
            colour_of("inventory")
        )),
        "{page}"
    );
}
