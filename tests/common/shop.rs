//! A small shop's traces as OTLP/JSON, for the overview pages: gateway → auth,
//! gateway → orders → inventory (every fourth inventory call fails, and the failure travels up),
//! and a few calls to a service whose name is an HTML payload.

use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{http_post, Server};

/// A service name that runs script wherever the UI forgets to escape it.
pub const HOSTILE_SERVICE: &str = "<img src=x onerror=window.__xss=1>";
/// The operation of the hostile service, equally unfriendly.
pub const HOSTILE_OPERATION: &str = "<script>alert(1)</script>";

/// What [`send`] stored, so tests can check the pages against it.
pub struct Shop {
    pub traces: u32,
    pub hostile_calls: u32,
    /// Trace ids, index `i` being the trace that started `i` minutes and 30 s before sending.
    pub trace_ids: Vec<String>,
}

impl Shop {
    /// Calls on each of gateway → auth, gateway → orders, orders → inventory.
    pub fn calls_per_edge(&self) -> u32 {
        self.traces
    }

    /// Failed inventory calls (traces 0, 4, 8, …).
    pub fn failures(&self) -> u32 {
        self.traces.div_ceil(4)
    }

    /// Rows `service_calls` will hold once the edge indexer has seen everything.
    pub fn service_calls(&self) -> u32 {
        3 * self.traces + self.hostile_calls
    }

    /// Trace `i` failed.
    pub fn failed(i: u32) -> bool {
        i.is_multiple_of(4)
    }
}

struct SpanSpec<'a> {
    service: &'a str,
    name: &'a str,
    kind: u8,
    span_id: u64,
    parent: Option<u64>,
    start_ns: u64,
    duration_ns: u64,
    error: bool,
}

/// Sends `traces` traces (one a minute, the newest 30 s old) and `hostile_calls` calls from
/// gateway to the hostile service through OTLP/HTTP, then waits until the edge indexer has
/// matched every call.
pub fn send(server: &Server, traces: u32, hostile_calls: u32) -> Shop {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    const MS: u64 = 1_000_000;
    let mut spans: Vec<(String, SpanSpec)> = Vec::new();
    let mut trace_ids = Vec::new();
    for i in 0..traces {
        let trace_id = format!("{:016x}{:016x}", 0x5eed_0000_u64 + u64::from(i), 0xabcd_u64);
        trace_ids.push(trace_id.clone());
        let start = now - (u64::from(i) * 60 + 30) * 1_000_000_000;
        let id = |n: u64| (u64::from(i) + 1) * 100 + n;
        let failed = Shop::failed(i);
        let inventory_ms = 4 + u64::from(i % 7) * 3;
        let mut add =
            |service, name, kind, n, parent: Option<u64>, offset_ms: u64, duration_ms: u64, error| {
                spans.push((
                    trace_id.clone(),
                    SpanSpec {
                        service,
                        name,
                        kind,
                        span_id: id(n),
                        parent: parent.map(id),
                        start_ns: start + offset_ms * MS,
                        duration_ns: duration_ms * MS + u64::from(i) * 1000,
                        error,
                    },
                ))
            };
        add(
            "gateway",
            "GET /checkout",
            2,
            1,
            None,
            0,
            60 + inventory_ms,
            failed,
        );
        add("gateway", "POST /verify", 3, 2, Some(1), 1, 9, false);
        add("auth", "POST /verify", 2, 3, Some(2), 2, 7, false);
        add(
            "gateway",
            "POST /orders",
            3,
            4,
            Some(1),
            12,
            40 + inventory_ms,
            failed,
        );
        add(
            "orders",
            "POST /orders",
            2,
            5,
            Some(4),
            13,
            38 + inventory_ms,
            failed,
        );
        add("orders", "compute total", 1, 6, Some(5), 14, 2, false);
        add(
            "orders",
            "GET /stock",
            3,
            7,
            Some(5),
            17,
            1 + inventory_ms,
            failed,
        );
        add("inventory", "GET /stock", 2, 8, Some(7), 18, inventory_ms, failed);
        if i < hostile_calls {
            add("gateway", "GET /promo", 3, 9, Some(1), 55, 4, false);
            add(HOSTILE_SERVICE, HOSTILE_OPERATION, 2, 10, Some(9), 56, 3, false);
        }
    }

    let services = ["gateway", "auth", "orders", "inventory", HOSTILE_SERVICE];
    let mut body = String::from(r#"{"resourceSpans":["#);
    for (index, service) in services.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        let service_json = serde_json::to_string(service).unwrap();
        let _ = write!(
            body,
            r#"{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":{service_json}}}}}]}},"scopeSpans":[{{"scope":{{"name":"shop"}},"spans":["#
        );
        let mine = spans.iter().filter(|(_, span)| span.service == *service);
        for (n, (trace_id, span)) in mine.enumerate() {
            if n > 0 {
                body.push(',');
            }
            let parent = span.parent.map_or_else(String::new, |parent| {
                format!(r#""parentSpanId":"{parent:016x}","#)
            });
            let status = if span.error {
                r#","status":{"code":2,"message":"out of stock"}"#
            } else {
                ""
            };
            let _ = write!(
                body,
                r#"{{"traceId":"{trace_id}","spanId":"{:016x}",{parent}"name":{},"kind":{},"startTimeUnixNano":"{}","endTimeUnixNano":"{}"{status}}}"#,
                span.span_id,
                serde_json::to_string(span.name).unwrap(),
                span.kind,
                span.start_ns,
                span.start_ns + span.duration_ns,
            );
        }
        body.push_str("]}]}");
    }
    body.push_str("]}");

    let (status, _, answer) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let shop = Shop {
        traces,
        hostile_calls,
        trace_ids,
    };
    wait_for_calls(server, shop.service_calls());
    shop
}

/// Waits until the edge indexer (a pass every 2 s) has recorded `expected` calls and folded
/// them into the minute rollup, which the next pass of the same round does: the dependency
/// graph reads whole minutes from the rollup.
fn wait_for_calls(server: &Server, expected: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = server.sql(
            "SELECT (SELECT count(*) FROM service_calls), \
                    (SELECT coalesce(sum(calls), 0) FROM service_call_minutes)",
        );
        let found = answer["rows"][0][0].as_i64().unwrap_or_default();
        let rolled_up = answer["rows"][0][1].as_i64().unwrap_or_default();
        if found == i64::from(expected) && rolled_up == i64::from(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the edge indexer recorded {found} of {expected} calls and rolled up {rolled_up} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
