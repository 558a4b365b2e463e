//! Realistic OTLP trace requests, encoded once and given fresh ids on every send.

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::encoding::decode_varint;
use prost::Message;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Fixed so that every run sends the same shapes and sizes; only the ids change.
const SEED: u64 = 0x0d0c_7ace;
const ERROR_RATE: f64 = 0.05;
const TRACE_SPANS: std::ops::RangeInclusive<usize> = 10..=20;
const MAX_CALL_DEPTH: u32 = 3;
const MILLI: u64 = 1_000_000;

/// A pool of encoded `ExportTraceServiceRequest` bodies.
pub struct Pool {
    bodies: Vec<Body>,
    spans_per_body: usize,
}

/// One encoded request and where its ids and timestamps sit, so a send can rewrite them in place.
struct Body {
    bytes: Vec<u8>,
    fields: Fields,
}

/// Positions in an encoded request of the fields a send rewrites.
#[derive(Default)]
struct Fields {
    ids: Vec<Range<usize>>,
    /// Offsets of the little-endian fixed64 span start/end and event times.
    times: Vec<usize>,
}

impl Pool {
    pub fn generate(bodies: usize, spans_per_body: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(SEED);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        let bodies = (0..bodies)
            .map(|_| {
                let bytes = request(&mut rng, spans_per_body, now - 60_000 * MILLI).encode_to_vec();
                let mut fields = Fields::default();
                fields.walk(&bytes, 0, Walk::Path(&SPAN_PATH));
                Body { bytes, fields }
            })
            .collect();
        Self {
            bodies,
            spans_per_body,
        }
    }

    pub fn spans_per_body(&self) -> usize {
        self.spans_per_body
    }

    pub fn encoded(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.bodies.iter().map(|body| body.bytes.as_slice())
    }

    pub fn bytes_per_span(&self) -> f64 {
        let total: usize = self.encoded().map(<[u8]>::len).sum();
        total as f64 / (self.bodies.len() * self.spans_per_body) as f64
    }

    /// Body `index` (modulo the pool) with every trace and span id XORed with one random key
    /// and every timestamp moved back by `earlier_ns`. The same key on every id keeps parent
    /// links and trace membership intact, while a fresh 128-bit key per send makes every span
    /// of the run a distinct span.
    pub fn fresh(&self, index: usize, earlier_ns: u64) -> Bytes {
        let body = &self.bodies[index % self.bodies.len()];
        let key: [u8; 16] = rand::random();
        let mut bytes = body.bytes.clone();
        for id in &body.fields.ids {
            bytes[id.clone()]
                .iter_mut()
                .zip(&key)
                .for_each(|(byte, k)| *byte ^= k);
        }
        if earlier_ns > 0 {
            for &at in &body.fields.times {
                let field: &mut [u8; 8] = (&mut bytes[at..at + 8]).try_into().expect("8 bytes");
                *field = (u64::from_le_bytes(*field) - earlier_ns).to_le_bytes();
            }
        }
        Bytes::from(bytes)
    }
}

/// Field numbers leading from the request to its spans: resource_spans → scope_spans → spans.
const SPAN_PATH: [u64; 3] = [1, 2, 2];
/// Span fields holding ids: trace_id, span_id, parent_span_id.
const ID_FIELDS: [u64; 3] = [1, 2, 4];
/// Span fields holding times (start and end), and the span's events field, whose field 1 is
/// the event time.
const TIME_FIELDS: [u64; 2] = [7, 8];
const EVENTS_FIELD: u64 = 11;
const EVENT_TIME_FIELD: u64 = 1;

/// Where a field sits in a message being walked.
enum Walk<'a> {
    /// Still descending from the request to a span along the remaining path.
    Path(&'a [u64]),
    /// Inside a span.
    Span,
    /// Inside an event of a span.
    Event,
}

impl Fields {
    /// Collects where span ids and times sit by walking the protobuf wire format of `message`,
    /// which starts at `offset` in the whole body.
    fn walk(&mut self, message: &[u8], offset: usize, walk: Walk<'_>) {
        const FIXED64: u64 = 1;
        const LEN: u64 = 2;
        let mut rest = message;
        while !rest.is_empty() {
            let key = decode_varint(&mut rest).expect("prost wrote a valid key");
            let (field, wire_type) = (key >> 3, key & 7);
            let len = match wire_type {
                0 => {
                    decode_varint(&mut rest).expect("prost wrote a valid varint");
                    continue;
                }
                FIXED64 => 8,
                5 => 4,
                LEN => decode_varint(&mut rest).expect("prost wrote a valid length") as usize,
                other => unreachable!("prost never writes wire type {other}"),
            };
            let start = offset + message.len() - rest.len();
            let (value, after) = rest.split_at(len);
            match (&walk, wire_type) {
                (Walk::Path([next, deeper @ ..]), LEN) if field == *next => {
                    let inner = if deeper.is_empty() {
                        Walk::Span
                    } else {
                        Walk::Path(deeper)
                    };
                    self.walk(value, start, inner);
                }
                (Walk::Span, LEN) if ID_FIELDS.contains(&field) => self.ids.push(start..start + len),
                (Walk::Span, LEN) if field == EVENTS_FIELD => self.walk(value, start, Walk::Event),
                (Walk::Span, FIXED64) if TIME_FIELDS.contains(&field) => self.times.push(start),
                (Walk::Event, FIXED64) if field == EVENT_TIME_FIELD => self.times.push(start),
                _ => {}
            }
            rest = after;
        }
    }
}

/// One service of a small online shop.
struct Service {
    name: &'static str,
    version: &'static str,
    language: &'static str,
    routes: &'static [&'static str],
    /// Indexes into `SERVICES` of the services this one calls.
    calls: &'static [usize],
    db_system: &'static str,
    table: &'static str,
}

const SERVICES: [Service; 8] = [
    Service {
        name: "frontend",
        version: "2.14.1",
        language: "nodejs",
        routes: &[
            "GET /api/orders/{id}",
            "POST /api/checkout",
            "GET /api/products/{id}",
        ],
        calls: &[1, 3, 4, 6],
        db_system: "redis",
        table: "sessions",
    },
    Service {
        name: "orders",
        version: "1.8.0",
        language: "go",
        routes: &["GET /orders/{id}", "POST /orders", "GET /orders/{id}/items"],
        calls: &[2, 3, 5],
        db_system: "postgresql",
        table: "orders",
    },
    Service {
        name: "payments",
        version: "3.2.7",
        language: "java",
        routes: &["POST /payments/charge", "GET /payments/{id}"],
        calls: &[7],
        db_system: "postgresql",
        table: "payments",
    },
    Service {
        name: "inventory",
        version: "0.9.3",
        language: "rust",
        routes: &["GET /inventory/items/{id}", "POST /inventory/reservations"],
        calls: &[],
        db_system: "mysql",
        table: "stock_levels",
    },
    Service {
        name: "users",
        version: "5.0.2",
        language: "python",
        routes: &["GET /users/{id}", "GET /users/{id}/preferences"],
        calls: &[],
        db_system: "mongodb",
        table: "profiles",
    },
    Service {
        name: "shipping",
        version: "1.1.4",
        language: "go",
        routes: &["POST /shipments", "GET /shipments/{id}/quote"],
        calls: &[7],
        db_system: "postgresql",
        table: "shipments",
    },
    Service {
        name: "recommendations",
        version: "0.4.0",
        language: "python",
        routes: &["GET /recommendations/{id}"],
        calls: &[3],
        db_system: "redis",
        table: "recs",
    },
    Service {
        name: "notifications",
        version: "2.0.0",
        language: "java",
        routes: &["POST /notifications/email"],
        calls: &[],
        db_system: "redis",
        table: "outbox",
    },
];

const INTERNAL_OPERATIONS: [&str; 6] = [
    "validate request",
    "render response",
    "compute price",
    "check feature flags",
    "serialize",
    "authorize",
];
const DB_OPERATIONS: [&str; 3] = ["SELECT", "INSERT", "UPDATE"];

/// A request of `spans` spans: whole traces of ~15 spans, grouped by service into resources.
fn request(rng: &mut SmallRng, spans: usize, mut start: u64) -> ExportTraceServiceRequest {
    let mut by_service: [Vec<Span>; SERVICES.len()] = Default::default();
    let mut remaining = spans;
    while remaining > 0 {
        let budget = rng.random_range(TRACE_SPANS).min(remaining);
        let trace = TraceBuilder {
            rng: &mut *rng,
            by_service: &mut by_service,
            trace_id: rand_id(),
            budget,
        };
        trace.build(start);
        remaining -= budget;
        start += rng.random_range(1..40) * MILLI;
    }
    let resource_spans = SERVICES
        .iter()
        .zip(by_service)
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(service, spans)| resource_spans(service, spans))
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn resource_spans(service: &Service, spans: Vec<Span>) -> ResourceSpans {
    let resource = Resource {
        attributes: vec![
            text("service.name", service.name),
            text("service.version", service.version),
            text("service.namespace", "shop"),
            text("host.name", format!("{}-7f9c4d-x2k8p", service.name)),
            text("deployment.environment.name", "production"),
            text("telemetry.sdk.name", "opentelemetry"),
            text("telemetry.sdk.language", service.language),
            text("telemetry.sdk.version", "1.31.0"),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: format!("io.opentelemetry.{}.http", service.language),
        version: "0.52.0".into(),
        ..Default::default()
    };
    ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Builds one trace depth-first until its span budget is spent, filing spans by service.
struct TraceBuilder<'a> {
    rng: &'a mut SmallRng,
    by_service: &'a mut [Vec<Span>; SERVICES.len()],
    trace_id: [u8; 16],
    budget: usize,
}

/// What every span of a trace is told about the work it belongs to.
struct SpanInfo<'a> {
    service: usize,
    kind: SpanKind,
    name: String,
    parent: &'a [u8],
    time: Range<u64>,
    attributes: Vec<KeyValue>,
    failed: bool,
}

impl TraceBuilder<'_> {
    fn build(mut self, start: u64) {
        let route = SERVICES[0].routes.choose(self.rng).expect("routes");
        let user = format!("user-{}", self.rng.random_range(1000..99_999));
        let duration = self.rng.random_range(5..300) * MILLI;
        self.serve(0, route, &[], start..start + duration, &user, 0);
    }

    /// A service handling one request: its SERVER span and the work done under it.
    /// The root keeps working until the trace's budget is spent.
    fn serve(
        &mut self,
        service: usize,
        route: &str,
        parent: &[u8],
        time: Range<u64>,
        user: &str,
        depth: u32,
    ) {
        let failed = self.rng.random_bool(ERROR_RATE);
        let attributes = server_attributes(self.rng, service, route, user, failed);
        let kind = SpanKind::Server;
        let info = SpanInfo {
            service,
            kind,
            name: route.into(),
            parent,
            time: time.clone(),
            attributes,
            failed,
        };
        let id = self.push(info);
        let children = if depth == 0 {
            usize::MAX
        } else {
            self.rng.random_range(1..=3)
        };
        let mut cursor = time.start;
        for _ in 0..children {
            if self.budget == 0 {
                break;
            }
            let slot = next_slot(self.rng, &mut cursor, time.end);
            self.child(service, &id, slot, user, depth);
        }
    }

    /// One piece of work inside a service: a call to another service, a query, or local code.
    fn child(&mut self, service: usize, parent: &[u8], time: Range<u64>, user: &str, depth: u32) {
        let failed = self.rng.random_bool(ERROR_RATE);
        let calls = SERVICES[service].calls;
        let roll = self.rng.random_range(0..10);
        if roll < 5 && depth < MAX_CALL_DEPTH && !calls.is_empty() {
            let callee = *calls.choose(self.rng).expect("calls");
            let route = SERVICES[callee].routes.choose(self.rng).expect("routes");
            let attributes = client_attributes(self.rng, callee, route, user, failed);
            let kind = SpanKind::Client;
            let info = SpanInfo {
                service,
                kind,
                name: route.to_string(),
                parent,
                time: time.clone(),
                attributes,
                failed,
            };
            let id = self.push(info);
            if self.budget > 0 {
                let inset = (time.end - time.start) / 20;
                self.serve(
                    callee,
                    route,
                    &id,
                    time.start + inset..time.end - inset,
                    user,
                    depth + 1,
                );
            }
        } else if roll < 8 {
            let operation = *DB_OPERATIONS.choose(self.rng).expect("operations");
            let attributes = db_attributes(self.rng, service, operation, user);
            let name = format!("{operation} {}", SERVICES[service].table);
            let kind = SpanKind::Client;
            self.push(SpanInfo {
                service,
                kind,
                name,
                parent,
                time,
                attributes,
                failed,
            });
        } else {
            let operation = *INTERNAL_OPERATIONS.choose(self.rng).expect("operations");
            let attributes = internal_attributes(self.rng, service, operation, user);
            let kind = SpanKind::Internal;
            self.push(SpanInfo {
                service,
                kind,
                name: operation.into(),
                parent,
                time,
                attributes,
                failed,
            });
        }
    }

    fn push(&mut self, info: SpanInfo) -> [u8; 8] {
        let span_id: [u8; 8] = rand_id();
        let (status, events) = if info.failed {
            let message = format!("{} failed: upstream timeout", info.name);
            let event = Event {
                time_unix_nano: info.time.end,
                name: "exception".into(),
                attributes: vec![
                    text("exception.type", "TimeoutError"),
                    text("exception.message", &message),
                ],
                ..Default::default()
            };
            (
                Some(Status {
                    code: status::StatusCode::Error.into(),
                    message,
                }),
                vec![event],
            )
        } else {
            (None, Vec::new())
        };
        self.by_service[info.service].push(Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: info.parent.to_vec(),
            name: info.name,
            kind: info.kind.into(),
            start_time_unix_nano: info.time.start,
            end_time_unix_nano: info.time.end,
            attributes: info.attributes,
            events,
            status,
            ..Default::default()
        });
        self.budget -= 1;
        span_id
    }
}

/// The next child's slot in its parent's time: a short gap after the previous sibling,
/// then part of what is left.
fn next_slot(rng: &mut SmallRng, cursor: &mut u64, end: u64) -> Range<u64> {
    let left = end.saturating_sub(*cursor);
    let start = *cursor + rng.random_range(0..=left / 10);
    let stop = start + rng.random_range(left / 10..=left / 2);
    *cursor = stop;
    start..stop
}

fn rand_id<const N: usize>() -> [u8; N] {
    rand::random()
}

fn server_attributes(
    rng: &mut SmallRng,
    service: usize,
    route: &str,
    user: &str,
    failed: bool,
) -> Vec<KeyValue> {
    let (method, path) = route.split_once(' ').expect("routes are 'METHOD /path'");
    vec![
        text("http.method", method),
        text("http.route", path),
        text("http.target", fill(rng, path)),
        text("http.scheme", "http"),
        int("http.status_code", if failed { 500 } else { 200 }),
        text("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
        text("net.host.name", SERVICES[service].name),
        int("net.host.port", 8080),
        text(
            "net.peer.ip",
            format!("10.0.{}.{}", rng.random_range(0..8), rng.random_range(2..250)),
        ),
        text("user.id", user),
        text("http.request_id", format!("{:016x}", rng.random::<u64>())),
        int("http.response_content_length", rng.random_range(200..20_000)),
    ]
}

fn client_attributes(
    rng: &mut SmallRng,
    callee: usize,
    route: &str,
    user: &str,
    failed: bool,
) -> Vec<KeyValue> {
    let (method, path) = route.split_once(' ').expect("routes are 'METHOD /path'");
    let callee = SERVICES[callee].name;
    vec![
        text("http.method", method),
        text("http.url", format!("http://{callee}:8080{}", fill(rng, path))),
        int("http.status_code", if failed { 503 } else { 200 }),
        text("net.peer.name", callee),
        int("net.peer.port", 8080),
        text("peer.service", callee),
        text("http.flavor", "1.1"),
        text("user.id", user),
        int("http.request_content_length", rng.random_range(0..4_000)),
        int("http.resend_count", 0),
        text("thread.name", format!("worker-{}", rng.random_range(0..16))),
        int("thread.id", rng.random_range(1..64)),
    ]
}

fn db_attributes(rng: &mut SmallRng, service: usize, operation: &str, user: &str) -> Vec<KeyValue> {
    let Service { db_system, table, .. } = SERVICES[service];
    vec![
        text("db.system", db_system),
        text("db.name", "shop"),
        text(
            "db.statement",
            format!("{operation} {table} WHERE id = $1 AND tenant_id = $2"),
        ),
        text("db.operation", operation),
        text("db.sql.table", table),
        text("net.peer.name", format!("{db_system}-primary.shop.svc")),
        int("net.peer.port", 5432),
        text("db.user", "shop_app"),
        int("db.rows_affected", rng.random_range(0..50)),
        text("user.id", user),
        text("thread.name", format!("db-pool-{}", rng.random_range(0..8))),
        int("thread.id", rng.random_range(1..64)),
    ]
}

fn internal_attributes(rng: &mut SmallRng, service: usize, operation: &str, user: &str) -> Vec<KeyValue> {
    let service = SERVICES[service].name;
    vec![
        text("code.function", operation.replace(' ', "_")),
        text("code.namespace", format!("shop.{service}.handlers")),
        text("code.filepath", format!("src/{service}/handlers.rs")),
        int("code.lineno", rng.random_range(10..900)),
        text("thread.name", format!("worker-{}", rng.random_range(0..16))),
        int("thread.id", rng.random_range(1..64)),
        text("user.id", user),
        boolean("cache.hit", rng.random_bool(0.8)),
        int("item.count", rng.random_range(1..20)),
        text("feature.flag", "new-checkout-flow"),
        text("tenant.id", format!("tenant-{}", rng.random_range(1..40))),
        text("cloud.region", "eu-west-1"),
    ]
}

/// `/orders/{id}` → `/orders/48213`.
fn fill(rng: &mut SmallRng, path: &str) -> String {
    path.replace("{id}", &rng.random_range(1000..999_999).to_string())
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn boolean(key: &str, value: bool) -> KeyValue {
    attribute(key, any_value::Value::BoolValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spans(body: &[u8]) -> Vec<Span> {
        let request = ExportTraceServiceRequest::decode(body).expect("decodes");
        let scopes = request.resource_spans.into_iter().flat_map(|r| r.scope_spans);
        scopes.flat_map(|s| s.spans).collect()
    }

    #[test]
    fn fresh_bodies_have_new_ids_and_intact_links() {
        let pool = Pool::generate(1, 300);
        let original = spans(pool.encoded().next().expect("one body"));
        let sent = spans(&pool.fresh(0, 0));
        assert_eq!(sent.len(), 300);

        let span_ids: HashSet<_> = sent
            .iter()
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect();
        assert_eq!(span_ids.len(), 300, "span ids are distinct");
        for span in sent.iter().filter(|s| !s.parent_span_id.is_empty()) {
            assert!(span_ids.contains(&(span.trace_id.clone(), span.parent_span_id.clone())));
        }
        let roots = sent.iter().filter(|s| s.parent_span_id.is_empty()).count();
        let traces: HashSet<_> = sent.iter().map(|s| &s.trace_id).collect();
        assert_eq!(roots, traces.len(), "one root per trace");

        let old_ids: HashSet<_> = original.iter().map(|s| &s.span_id).collect();
        assert!(
            sent.iter().all(|s| !old_ids.contains(&s.span_id)),
            "every id was rewritten"
        );
    }

    #[test]
    fn fresh_bodies_move_every_time_back() {
        let pool = Pool::generate(1, 300);
        let original = spans(pool.encoded().next().expect("one body"));
        let hour = 3_600_000_000_000;
        let sent = spans(&pool.fresh(0, hour));
        let events = |s: &Span| s.events.iter().map(|e| e.time_unix_nano).collect::<Vec<_>>();
        assert!(
            original.iter().any(|s| !s.events.is_empty()),
            "some spans have events"
        );
        for (before, after) in original.iter().zip(&sent) {
            assert_eq!(after.start_time_unix_nano, before.start_time_unix_nano - hour);
            assert_eq!(after.end_time_unix_nano, before.end_time_unix_nano - hour);
            let moved: Vec<u64> = events(before).iter().map(|t| t - hour).collect();
            assert_eq!(events(after), moved);
        }
    }
}
