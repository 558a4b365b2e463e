//! The instrumented microservices demo end to end: ducktrace, the registry and every service
//! run as real processes on free loopback ports, with faults injected by flag and at run time;
//! requests go through the gateway's REST API; every assertion reads ducktrace's `/api/sql`.
//!
//! The service binaries are other workspace members: build with `--workspace` (as `make test`
//! does) so they sit next to the `ducktrace` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Server};
use serde_json::{json, Value as Json};

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ducktrace")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the whole workspace (cargo test --workspace)",
        path.display()
    );
    path
}

/// How the services find each other.
#[derive(Clone, Copy, PartialEq)]
enum Discovery {
    /// Through the registry process (two inventory instances, the first failing every request).
    Registry,
    /// Through DNS names (`localhost:<port>`), with no registry running: one healthy inventory
    /// instance per address that `localhost` resolves to, all on one port.
    Dns,
}

/// The demo's processes; all killed when dropped.
struct Demo {
    children: Vec<(String, Child)>,
    gateway: SocketAddr,
    inventory: Vec<SocketAddr>,
    _data: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Demo {
    /// Starts registry, auth, user, order, two inventories (the first failing every request,
    /// by flag) and the gateway (5 requests/s per client, bursts of 20); order events go
    /// through NATS JetStream when `nats_url` is given.
    fn start(ducktrace: &Server, nats_url: Option<&str>) -> Self {
        Self::start_with(ducktrace, nats_url, Discovery::Registry)
    }

    fn start_with(ducktrace: &Server, nats_url: Option<&str>, discovery: Discovery) -> Self {
        let data = tempfile::tempdir().unwrap();
        let registry = free_port();
        let gateway = free_port();
        let [auth, user, order] = [free_port(), free_port(), free_port()];
        let inventory: Vec<SocketAddr> = match discovery {
            Discovery::Registry => vec![free_port(), free_port()],
            Discovery::Dns => {
                let port = free_port().port();
                let mut addresses: Vec<SocketAddr> =
                    std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
                        .unwrap()
                        .collect();
                addresses.sort();
                addresses.dedup();
                addresses
            }
        };
        let mut demo = Demo {
            children: Vec::new(),
            gateway,
            inventory: inventory.clone(),
            _data: data,
        };
        // In DNS mode nothing listens on the registry's address: a service that tried to
        // register would never get ready.
        if discovery == Discovery::Registry {
            demo.spawn("demo-registry", &["--listen", &registry.to_string()]);
        }
        let mut shared = vec!["--registry".to_string(), registry.to_string()];
        if discovery == Discovery::Dns {
            shared.extend(["--discovery", "dns"].map(String::from));
            let port = |address: SocketAddr| address.port();
            for (service, port) in [
                ("auth", port(auth)),
                ("user", port(user)),
                ("order", port(order)),
                ("inventory", port(inventory[0])),
            ] {
                shared.extend(["--dns-name".to_string(), format!("{service}=localhost:{port}")]);
            }
        }
        let otlp = ducktrace.grpc_endpoint();
        let data_dir = demo._data.path().to_str().unwrap().to_string();
        let common = |listen: SocketAddr| -> Vec<String> {
            let mut args = [
                "--listen",
                &listen.to_string(),
                "--otlp-endpoint",
                &otlp,
                "--data-dir",
                &data_dir,
            ]
            .map(String::from)
            .to_vec();
            args.extend(shared.iter().cloned());
            args
        };
        let nats: Vec<String> = nats_url
            .map(|url| vec!["--nats-url".to_string(), url.to_string()])
            .unwrap_or_default();
        demo.spawn("demo-auth", &common(auth));
        demo.spawn("demo-user", &common(user));
        let mut args = common(order);
        args.extend(nats.iter().cloned());
        demo.spawn("demo-order", &args);
        for (n, address) in inventory.iter().enumerate() {
            let mut args = common(*address);
            args.extend(nats.iter().cloned());
            args.extend(["--instance-id".to_string(), format!("inventory-{}", n + 1)]);
            if discovery == Discovery::Registry && n == 0 {
                args.extend(["--fault-error-rate", "1.0"].map(String::from));
            }
            demo.spawn("demo-inventory", &args);
        }
        let mut edge = common(gateway);
        edge.extend(["--rate-limit", "5", "--rate-burst", "20"].map(String::from));
        demo.spawn("demo-api-gateway", &edge);
        demo
    }

    /// Starts a process and waits (at most 30 s) for its "ready" line, printed once it serves
    /// (and, in registry mode, is registered).
    fn spawn<S: AsRef<std::ffi::OsStr>>(&mut self, name: &str, args: &[S]) {
        let mut child = Command::new(binary(name))
            .args(args)
            .env("DEMO_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(30));
        self.children.push((name.to_string(), child));
        let line = line.unwrap_or_else(|_| panic!("{name} did not get ready within 30 s"));
        assert!(line.contains("ready on"), "{name} did not get ready: {line:?}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }
}

/// Debian's `nats-server` with JetStream on a free loopback port; killed when dropped.
struct Nats {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl Nats {
    fn start() -> Self {
        let store = tempfile::tempdir().unwrap();
        let port = free_port().port().to_string();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server does not start (scripts/test.sh installs it)");
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server does not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nats {
            child,
            url: format!("nats://{address}"),
            _store: store,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// An HTTP exchange: status, headers, JSON body (`null` when not JSON).
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Json,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn trace_id(&self) -> String {
        self.header("x-trace-id").to_string()
    }
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<Json>) -> Answer {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string()).unwrap_or_default())
        .unwrap();
    let mut response = agent()
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: serde_json::from_str(&text).unwrap_or(Json::Null),
    }
}

fn login(demo: &Demo, username: &str) -> String {
    let answer = call(
        "POST",
        &demo.url("/api/login"),
        None,
        Some(json!({"username": username, "password": "demo"})),
    );
    assert_eq!(answer.status, 200, "login {username}: {}", answer.body);
    answer.body["token"].as_str().unwrap().to_string()
}

fn order(demo: &Demo, token: &str, sku: &str) -> Answer {
    call(
        "POST",
        &demo.url("/api/orders"),
        Some(token),
        Some(json!({"sku": sku, "quantity": 1})),
    )
}

/// Places `count` orders of `sku`, each of which must be confirmed; their trace ids.
fn confirmed_orders(demo: &Demo, token: &str, sku: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let answer = order(demo, token, sku);
            assert_eq!(answer.status, 201, "order: {}", answer.body);
            assert_eq!(answer.body["status"], "CONFIRMED");
            answer.trace_id()
        })
        .collect()
}

/// Replaces a service's fault settings (fields left out are 0).
fn set_faults(admin: SocketAddr, faults: Json) {
    let answer = call("PUT", &format!("http://{admin}/admin/faults"), None, Some(faults));
    assert_eq!(answer.status, 200, "admin/faults: {}", answer.body);
}

/// Where `/api/sql` answers: a test's own ducktrace, or the one `ducktrace demo` started.
trait SqlApi {
    fn query(&self, sql: &str) -> Json;
}

impl SqlApi for Server {
    fn query(&self, sql: &str) -> Json {
        self.sql(sql)
    }
}

/// The UI address of a ducktrace not started by [`Server`]; no rows while it does not listen
/// yet.
impl SqlApi for SocketAddr {
    fn query(&self, sql: &str) -> Json {
        let url = format!("http://{self}/api/sql?q={}", common::urlencode(sql));
        let Ok(mut response) = agent().get(&url).call() else {
            return json!({"rows": []});
        };
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status(), 200, "SQL {sql:?} failed: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// The rows of a query (spans arrive in batches, so callers poll with [`eventually`]).
fn rows(ducktrace: &impl SqlApi, sql: &str) -> Vec<Vec<Json>> {
    let answer = ducktrace.query(sql);
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().clone())
        .collect()
}

/// Polls `sql` until `accept` likes its rows; fails with the last rows after 20 s.
fn eventually(
    ducktrace: &impl SqlApi,
    what: &str,
    sql: &str,
    accept: impl Fn(&[Vec<Json>]) -> bool,
) -> Vec<Vec<Json>> {
    eventually_within(ducktrace, Duration::from_secs(20), what, sql, accept)
}

fn eventually_within(
    ducktrace: &impl SqlApi,
    within: Duration,
    what: &str,
    sql: &str,
    accept: impl Fn(&[Vec<Json>]) -> bool,
) -> Vec<Vec<Json>> {
    let deadline = Instant::now() + within;
    loop {
        let found = rows(ducktrace, sql);
        if accept(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never true; last rows of {sql}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The sorted services of a trace, as JSON text.
fn services_of(ducktrace: &Server, trace_id: &str) -> String {
    let sql = format!(
        "SELECT list_sort(list_distinct(list(service_name))) FROM spans WHERE trace_id = '{trace_id}'"
    );
    rows(ducktrace, &sql)[0][0].to_string()
}

#[test]
fn demo_services_trace_sagas_retries_breakers_and_events() {
    let ducktrace = Server::start();
    let demo = Demo::start(&ducktrace, None);
    let alice = login(&demo, "alice");

    // Orders while inventory-1 fails everything: each Reserve that lands there first is
    // retried on inventory-2, so orders succeed.
    let placed = confirmed_orders(&demo, &alice, "SKU-BOOK", 6);

    // One trace across every service for an order.
    let all = r#"["api-gateway","auth","inventory","order","user"]"#;
    let trace = &placed[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    while services_of(&ducktrace, trace) != all {
        assert!(
            Instant::now() < deadline,
            "trace {trace} covers {}",
            services_of(&ducktrace, trace)
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A retry: one call made in two or more attempt spans (a Reserve of an order or a Deliver
    // of the outbox relay, whichever met inventory-1 first), the later ones after a delay.
    let retried = eventually(
        &ducktrace,
        "a retried call to inventory",
        "SELECT span_name, list(CAST(attributes['retry.attempt'] AS BIGINT) ORDER BY start_time) AS attempts,
                list(attributes['peer.instance.id'] ORDER BY start_time) AS instances
         FROM spans WHERE span_kind = 'CLIENT' AND attributes['peer.service'] = 'inventory'
         GROUP BY trace_id, parent_span_id, span_name HAVING max(CAST(attributes['retry.attempt'] AS BIGINT)) >= 2",
        |rows| !rows.is_empty(),
    );
    for row in &retried {
        let attempts: Vec<i64> = row[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_i64().unwrap())
            .collect();
        assert_eq!(
            attempts,
            (1..=attempts.len() as i64).collect::<Vec<_>>(),
            "{row:?}"
        );
        assert_eq!(row[2][0], "inventory-1", "only inventory-1 fails now: {row:?}");
    }

    // Calls spread over both inventory instances (round robin through the registry).
    eventually(
        &ducktrace,
        "both inventory instances served calls",
        "SELECT DISTINCT attributes['peer.instance.id'] FROM spans
         WHERE span_kind = 'CLIENT' AND attributes['peer.service'] = 'inventory'",
        |rows| rows.len() == 2,
    );

    // The outbox: each order's OrderCreated is consumed in inventory by a span that links to
    // the PRODUCER span in the order's trace.
    let linked = eventually(
        &ducktrace,
        "a consumer span linked to its producer",
        "SELECT p.trace_id FROM span_links l
         JOIN spans p ON p.trace_id = l.linked_trace_id AND p.span_id = l.linked_span_id
         WHERE l.span_name = 'orders process' AND p.span_kind = 'PRODUCER'
           AND p.span_name = 'orders create'",
        |rows| rows.len() >= placed.len(),
    );
    for trace in &placed {
        assert!(
            linked.iter().any(|row| row[0] == *trace),
            "no consumer links to {trace}"
        );
    }

    // Aggregation: profile and orders in one answer, user and order in one trace.
    let aggregated = call(
        "GET",
        &demo.url("/api/users/CUST-000001/orders"),
        Some(&alice),
        None,
    );
    assert_eq!(aggregated.status, 200, "{}", aggregated.body);
    assert_eq!(aggregated.body["profile"]["name"], "Alice Adams");
    assert_eq!(aggregated.body["orders"].as_array().unwrap().len(), placed.len());
    let services = eventually(
        &ducktrace,
        "the aggregation's trace",
        &format!(
            "SELECT DISTINCT service_name FROM spans WHERE trace_id = '{}' ORDER BY 1",
            aggregated.trace_id()
        ),
        |rows| rows.len() == 4,
    );
    assert_eq!(
        services,
        [["api-gateway"], ["auth"], ["order"], ["user"]].map(|row| vec![json!(row[0])])
    );

    // Now inventory-2 fails too (set at run time): the saga compensates, and the breaker
    // opens so that later orders fail fast.
    set_faults(demo.inventory[1], json!({"error_rate": 1.0}));
    let failed = order(&demo, &alice, "SKU-LAMP");
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(failed.body["error"], "UNAVAILABLE");
    let compensated = failed.trace_id();
    eventually(
        &ducktrace,
        "the compensation of the failed order",
        &format!(
            "SELECT span_name FROM spans WHERE trace_id = '{compensated}'
             AND span_name = 'saga compensate PlaceOrder' AND attributes['saga.compensation'] = 'true'"
        ),
        |rows| rows.len() == 1,
    );
    let listed = call(
        "GET",
        &demo.url("/api/users/CUST-000001/orders"),
        Some(&alice),
        None,
    );
    assert_eq!(listed.body["orders"][0]["status"], "CANCELLED", "{}", listed.body);

    let fast = order(&demo, &alice, "SKU-LAMP");
    assert_eq!(fast.status, 503, "{}", fast.body);
    eventually(
        &ducktrace,
        "a breaker.opened event",
        "SELECT service_name FROM span_events WHERE name = 'breaker.opened'",
        |rows| !rows.is_empty(),
    );
    eventually(
        &ducktrace,
        "a fast-failed call",
        &format!(
            "SELECT span_name FROM spans WHERE trace_id = '{}' AND attributes['breaker.fast_fail'] = 'true'
             AND status_code = 'ERROR'",
            fast.trace_id()
        ),
        |rows| !rows.is_empty(),
    );

    // Healthy again: after the open period a probe (an order's or the outbox relay's) goes
    // through and closes the breaker.
    set_faults(demo.inventory[0], json!({"error_rate": 0.0}));
    set_faults(demo.inventory[1], json!({"error_rate": 0.0}));
    std::thread::sleep(Duration::from_secs(4));
    let recovered = order(&demo, &alice, "SKU-MUG");
    assert_eq!(recovered.status, 201, "{}", recovered.body);
    eventually(
        &ducktrace,
        "the probe that closed the breaker",
        "SELECT o.time, c.time FROM span_events o, span_events c
         WHERE o.name = 'breaker.opened' AND c.name = 'breaker.closed' AND c.time > o.time
           AND o.service_name = 'order' AND c.service_name = 'order'",
        |rows| !rows.is_empty(),
    );

    // The rate limiter: one client past its burst gets 429 with Retry-After.
    let bob = login(&demo, "bob");
    let limited = (0..40)
        .map(|_| call("GET", &demo.url("/api/products/SKU-BOOK"), Some(&bob), None))
        .find(|answer| answer.status == 429)
        .expect("40 requests at once exceed a burst of 20");
    assert_eq!(limited.body["error"], "RATE_LIMITED");
    let retry_after: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    eventually(
        &ducktrace,
        "the 429's span",
        &format!(
            "SELECT span_name FROM spans WHERE trace_id = '{}' AND span_kind = 'SERVER'
             AND attributes['http.response.status_code'] = '429' AND attributes['rate_limit.exceeded'] = 'true'",
            limited.trace_id()
        ),
        |rows| rows.len() == 1,
    );
}

/// Order events through a real JetStream: published once each, consumed by a span linked to
/// its producer, and nothing over gRPC.
#[test]
fn demo_events_through_nats_jetstream() {
    let ducktrace = Server::start();
    let nats = Nats::start();
    let demo = Demo::start(&ducktrace, Some(&nats.url));
    let alice = login(&demo, "alice");
    let stock = |demo: &Demo| {
        let answer = call("GET", &demo.url("/api/products/SKU-LAMP"), Some(&alice), None);
        assert_eq!(answer.status, 200, "stock: {}", answer.body);
        answer.body["available"].as_i64().unwrap()
    };
    let before = stock(&demo);
    let placed = confirmed_orders(&demo, &alice, "SKU-LAMP", 4);
    assert_eq!(
        stock(&demo),
        before - placed.len() as i64,
        "every order reserved its stock"
    );

    // Each OrderCreated is published to JetStream by a PRODUCER span and consumed by a NATS
    // CONSUMER span that links to the `orders create` span in the order's trace.
    let linked = eventually(
        &ducktrace,
        "a NATS consumer span linked to its producer",
        "SELECT p.trace_id, c.attributes['messaging.consumer.duplicate'] = 'true' FROM span_links l
         JOIN spans c ON c.trace_id = l.trace_id AND c.span_id = l.span_id
         JOIN spans p ON p.trace_id = l.linked_trace_id AND p.span_id = l.linked_span_id
         WHERE l.span_name = 'orders process' AND c.span_kind = 'CONSUMER'
           AND c.attributes['messaging.system'] = 'nats'
           AND p.span_kind = 'PRODUCER' AND p.span_name = 'orders create'",
        |rows| rows.len() >= placed.len(),
    );
    for trace in &placed {
        assert!(
            linked.iter().any(|row| row[0] == *trace && row[1] == false),
            "no NATS consumer applied the event of {trace}: {linked:?}"
        );
    }
    let placed_count = placed.len() as i64;
    eventually(
        &ducktrace,
        "a successful NATS publish span per event",
        "SELECT count(*) FROM spans WHERE span_name = 'orders send' AND span_kind = 'PRODUCER'
           AND attributes['messaging.system'] = 'nats' AND status_code <> 'ERROR'",
        |rows| rows[0][0].as_i64().unwrap() >= placed_count,
    );
    // Nothing went the gRPC way.
    let direct = rows(
        &ducktrace,
        "SELECT count(*) FROM spans WHERE span_name LIKE '%EventSink/Deliver'",
    );
    assert_eq!(direct[0][0], 0, "events were delivered over gRPC");
}

/// DNS discovery: no registry runs; every service resolves the others through the system
/// resolver (`--dns-name inventory=localhost:<port>` …). Calls reach every address `localhost`
/// resolves to, each named as the chosen instance, and one request still makes one trace.
#[test]
fn demo_services_find_each_other_through_dns() {
    let ducktrace = Server::start();
    let demo = Demo::start_with(&ducktrace, None, Discovery::Dns);
    let alice = login(&demo, "alice");
    let placed = confirmed_orders(&demo, &alice, "SKU-BOOK", 4);
    eventually(
        &ducktrace,
        "one trace across every service",
        &format!(
            "SELECT list_sort(list_distinct(list(service_name))) FROM spans WHERE trace_id = '{}'",
            placed[0]
        ),
        |rows| rows[0][0] == json!(["api-gateway", "auth", "inventory", "order", "user"]),
    );
    let expected: std::collections::BTreeSet<String> = demo.inventory.iter().map(|a| a.to_string()).collect();
    let served = eventually(
        &ducktrace,
        "successful calls on every address of inventory's name",
        "SELECT DISTINCT attributes['peer.instance.id'], attributes['server.address']
         FROM spans WHERE span_kind = 'CLIENT' AND attributes['peer.service'] = 'inventory'
           AND status_code <> 'ERROR'",
        |rows| rows.len() >= expected.len(),
    );
    let chosen: std::collections::BTreeSet<String> = served
        .iter()
        .map(|row| {
            assert_eq!(row[0], row[1], "an instance found through DNS is its address");
            row[0].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(chosen, expected, "the instances are the addresses of localhost");
    // The outbox relay found inventory's event sink through DNS too.
    let linked = eventually(
        &ducktrace,
        "a consumer span linked to each order's producer",
        "SELECT p.trace_id FROM span_links l
         JOIN spans p ON p.trace_id = l.linked_trace_id AND p.span_id = l.linked_span_id
         WHERE l.span_name = 'orders process' AND p.span_name = 'orders create'",
        |rows| rows.len() >= placed.len(),
    );
    for trace in &placed {
        assert!(
            linked.iter().any(|row| row[0] == *trace),
            "no consumer links to {trace}"
        );
    }
}

/// At-least-once delivery through JetStream, proven: both inventory instances lose the
/// acknowledgement of every event they process (a fault injected at run time), so JetStream
/// delivers each event again and again; once the fault is lifted the next delivery is
/// acknowledged and redelivery stops. The idempotent consumer applied each event exactly once.
#[test]
fn demo_nats_redelivers_unacknowledged_events_and_applies_them_once() {
    let ducktrace = Server::start();
    let nats = Nats::start();
    let demo = Demo::start(&ducktrace, Some(&nats.url));
    set_faults(
        demo.inventory[0],
        json!({"error_rate": 1.0, "lost_ack_rate": 1.0}),
    );
    set_faults(demo.inventory[1], json!({"lost_ack_rate": 1.0}));
    let alice = login(&demo, "alice");
    let mut orders = Vec::new();
    for _ in 0..2 {
        let answer = order(&demo, &alice, "SKU-MUG");
        assert_eq!(answer.status, 201, "order: {}", answer.body);
        orders.push(answer.body["order_id"].as_str().unwrap().to_string());
    }
    let in_list = orders
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // Per order: its OrderCreated's event ids, deliveries, applications (not duplicates),
    // deliveries left unacknowledged (ERROR), and the last delivery's duplicate flag and status.
    let deliveries = format!(
        "SELECT attributes['order.id'] AS order_id,
                count(DISTINCT attributes['messaging.message.id']) AS event_ids,
                count(*) AS deliveries,
                count(*) FILTER (WHERE NOT (attributes['messaging.consumer.duplicate'] = 'true')) AS applied,
                count(*) FILTER (WHERE status_code = 'ERROR') AS unacknowledged,
                arg_max((attributes['messaging.consumer.duplicate'] = 'true'), start_time) AS last_duplicate,
                arg_max(status_code, start_time) AS last_status
         FROM spans
         WHERE span_name = 'orders process' AND span_kind = 'CONSUMER'
           AND attributes['messaging.system'] = 'nats'
           AND attributes['messaging.operation.type'] = 'process'
           AND attributes['messaging.destination.name'] = 'orders'
           AND attributes['messaging.message.type'] = 'OrderCreated'
           AND attributes['order.id'] IN ({in_list})
         GROUP BY 1 ORDER BY 1"
    );
    let count = |row: &Vec<Json>, column: usize| row[column].as_i64().unwrap();
    // While acknowledgements are lost: every event delivered three times or more, all
    // unacknowledged, applied by the first delivery only.
    eventually(
        &ducktrace,
        "repeated deliveries of each unacknowledged event",
        &deliveries,
        |rows| rows.len() == orders.len() && rows.iter().all(|row| count(row, 2) >= 3),
    );
    set_faults(demo.inventory[0], json!({"error_rate": 1.0}));
    set_faults(demo.inventory[1], json!({}));
    // The next delivery is acknowledged: the last one is a duplicate that succeeded.
    let acknowledged = eventually(
        &ducktrace,
        "each event acknowledged once the fault is lifted",
        &deliveries,
        |rows| rows.iter().all(|row| row[6] != "ERROR"),
    );
    assert_eq!(acknowledged.len(), orders.len());
    // And JetStream stops redelivering (it would within 0.5 s). The first wait also lets
    // spans of earlier deliveries that are still being exported arrive.
    std::thread::sleep(Duration::from_secs(3));
    let settled = rows(&ducktrace, &deliveries);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rows(&ducktrace, &deliveries),
        settled,
        "redelivered after the acknowledgement"
    );
    for row in &settled {
        assert_eq!(count(row, 1), 1, "one event id per order: {row:?}");
        assert!(count(row, 2) >= 4, "delivered again and again: {row:?}");
        assert_eq!(count(row, 3), 1, "applied exactly once: {row:?}");
        assert_eq!(
            count(row, 4),
            count(row, 2) - 1,
            "all but the last unacknowledged: {row:?}"
        );
        assert_eq!(
            row[5], true,
            "the acknowledged delivery found a duplicate: {row:?}"
        );
    }
    // Each lost acknowledgement is a `fault.injected` event on its consumer span, and every
    // delivery links to the order's `orders create` span.
    let faults = rows(
        &ducktrace,
        &format!(
            "SELECT count(*) FROM span_events e JOIN spans s USING (trace_id, span_id)
             WHERE e.name = 'fault.injected' AND s.span_name = 'orders process'
               AND s.attributes['order.id'] IN ({in_list})"
        ),
    );
    let lost: i64 = settled.iter().map(|row| count(row, 4)).sum();
    assert_eq!(faults[0][0], lost, "a fault event per lost acknowledgement");
    let unlinked = rows(
        &ducktrace,
        &format!(
            "SELECT count(*) FROM spans s WHERE s.span_name = 'orders process'
               AND s.attributes['order.id'] IN ({in_list})
               AND NOT EXISTS (SELECT 1 FROM span_links l
                               JOIN spans p ON p.trace_id = l.linked_trace_id AND p.span_id = l.linked_span_id
                               WHERE l.trace_id = s.trace_id AND l.span_id = s.span_id
                                 AND p.span_name = 'orders create')"
        ),
    );
    assert_eq!(unlinked[0][0], 0, "every delivery links to its producer");
}

/// `ducktrace demo` on free loopback ports, its stdout and stderr collected; killed when
/// dropped unless stopped.
struct DemoCommand {
    child: Child,
    ui: SocketAddr,
    gateway: SocketAddr,
    stdout: Option<std::thread::JoinHandle<Vec<String>>>,
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl DemoCommand {
    fn start(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let (ui, gateway) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_ducktrace"))
            .arg("demo")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--http-addr", &ui.to_string()])
            .args(["--otlp-grpc-addr", &free_port().to_string()])
            .args(["--otlp-http-addr", &free_port().to_string()])
            .args(["--registry-addr", &free_port().to_string()])
            .args(["--gateway-addr", &gateway.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>()
            })
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        DemoCommand {
            child,
            ui,
            gateway,
            stdout: Some(stdout),
            stderr: Some(stderr),
            _data: data,
        }
    }

    /// Waits (at most 60 s) until the traces cover `services` (sorted).
    fn wait_for_services(&self, services: &[&str]) {
        eventually_within(
            &self.ui,
            Duration::from_secs(60),
            "the demo's traces cover every service",
            "SELECT list_sort(list_distinct(list(service_name))) FROM spans",
            |rows| rows.first().is_some_and(|row| row[0] == json!(services)),
        );
    }

    /// Sends SIGINT (Ctrl-C) and waits at most 60 s for the exit: its status, stdout, stderr.
    fn interrupt(&mut self) -> (std::process::ExitStatus, String, String) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "ducktrace demo did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = |lines: Option<std::thread::JoinHandle<Vec<String>>>| {
            lines.map(|l| l.join().unwrap().join("\n")).unwrap_or_default()
        };
        (status, text(self.stdout.take()), text(self.stderr.take()))
    }
}

impl Drop for DemoCommand {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// `ducktrace demo` starts collector, registry, services and load generator, whose traffic
/// arrives as traces; a service killed through `/admin/kill` is restarted; SIGINT (Ctrl-C)
/// stops every child and then itself.
#[test]
fn ducktrace_demo_runs_everything_and_stops_on_ctrl_c() {
    let mut demo = DemoCommand::start(&["--rate", "20"]);
    let (ui, gateway) = (demo.ui, demo.gateway);
    demo.wait_for_services(&["api-gateway", "auth", "inventory", "loadgen", "order", "user"]);

    // Kill the gateway through its admin endpoint: the supervisor starts it again.
    let killed = call("POST", &format!("http://{gateway}/admin/kill"), None, None);
    assert_eq!(killed.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent().get(&format!("http://{gateway}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "the killed gateway was not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, printed, _) = demo.interrupt();
    assert!(status.success(), "{status}");
    assert!(
        printed.contains(&format!("http://{ui}/")),
        "the UI URL is printed: {printed}"
    );
    assert!(
        printed.contains("requests in"),
        "the load generator's summary: {printed}"
    );
    assert!(
        std::net::TcpStream::connect(gateway).is_err(),
        "the gateway still listens"
    );
    assert!(
        std::net::TcpStream::connect(ui).is_err(),
        "ducktrace still listens"
    );
}

/// A crash given at start: `--fault inventory-2:kill-after=5` makes inventory-2 exit five
/// seconds after each start and the supervisor restarts it `--restart-delay` later. While it is
/// down, calls that chose it fail and are retried on inventory-1, and it serves again after.
#[test]
fn ducktrace_demo_restarts_a_service_crashed_by_a_fault_flag() {
    let mut demo = DemoCommand::start(&[
        "--rate",
        "20",
        "--fault",
        "inventory-2:kill-after=5",
        "--restart-delay",
        "3",
    ]);
    let ui = demo.ui;
    // Failover: an attempt on inventory-2 failed (it was down), a later attempt of the same
    // call on inventory-1 succeeded.
    let failovers = eventually_within(
        &ui,
        Duration::from_secs(60),
        "a call failing over from the crashed inventory-2 to inventory-1",
        "SELECT list(attributes['peer.instance.id'] ORDER BY start_time) AS instances,
                list(status_code ORDER BY start_time) AS statuses,
                list(CAST(attributes['retry.attempt'] AS BIGINT) ORDER BY start_time) AS attempts,
                min(start_time)::VARCHAR
         FROM spans WHERE span_kind = 'CLIENT' AND attributes['peer.service'] = 'inventory'
         GROUP BY trace_id, parent_span_id, span_name
         HAVING list_contains(list(attributes['peer.instance.id']), 'inventory-2')
            AND list_contains(list(status_code), 'ERROR')",
        |rows| {
            rows.iter().any(|row| {
                row[0][0] == "inventory-2"
                    && row[1][0] == "ERROR"
                    && row[0].as_array().unwrap().last().unwrap() == "inventory-1"
                    && row[1].as_array().unwrap().last().unwrap() != "ERROR"
            })
        },
    );
    let first_failure = failovers
        .iter()
        .map(|row| row[3].as_str().unwrap().to_string())
        .min()
        .unwrap();
    // Restarted: inventory-2 serves requests again after the first failed call.
    eventually_within(
        &ui,
        Duration::from_secs(30),
        "inventory-2 serving again after its crash",
        &format!(
            "SELECT count(*) FROM spans WHERE service_name = 'inventory' AND span_kind = 'SERVER'
               AND resource_attributes['service.instance.id'] = 'inventory-2'
               AND start_time > '{first_failure}'::TIMESTAMP_NS"
        ),
        |rows| rows[0][0].as_i64().unwrap() > 0,
    );
    let (status, printed, logged) = demo.interrupt();
    assert!(status.success(), "{status}");
    assert!(
        printed.contains("fault at start: inventory-2 --fault-kill-after 5"),
        "{printed}"
    );
    assert!(
        logged.contains("inventory-2 exited") && logged.contains("restarting inventory-2"),
        "the supervisor saw the crash and restarted it: {logged}"
    );
    assert!(
        !logged.contains("inventory-1 exited"),
        "only inventory-2 crashes: {logged}"
    );
}
