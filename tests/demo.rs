//! The instrumented microservices demo end to end: ducktrace, the registry and every service
//! run as real processes on free loopback ports, with faults injected by flag and at run time;
//! requests go through the gateway's REST API; every assertion reads ducktrace's `/api/sql`.
//!
//! The service binaries are other workspace members: build with `--workspace` (as `make test`
//! does) so they sit next to the `ducktrace` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value as Json};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ducktrace")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the whole workspace (cargo test --workspace)",
        path.display()
    );
    path
}

/// The demo's processes; all killed when dropped.
struct Demo {
    children: Vec<(String, Child)>,
    gateway: SocketAddr,
    inventory: [SocketAddr; 2],
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
        let data = tempfile::tempdir().unwrap();
        let registry = free_port();
        let gateway = free_port();
        let inventory = [free_port(), free_port()];
        let mut demo = Demo {
            children: Vec::new(),
            gateway,
            inventory,
            _data: data,
        };
        demo.spawn("demo-registry", &["--listen", &registry.to_string()]);
        let registry = registry.to_string();
        let otlp = ducktrace.grpc_endpoint();
        let data_dir = demo._data.path().to_str().unwrap().to_string();
        let common = |listen: SocketAddr| -> Vec<String> {
            [
                "--listen",
                &listen.to_string(),
                "--registry",
                &registry,
                "--otlp-endpoint",
                &otlp,
                "--data-dir",
                &data_dir,
            ]
            .map(String::from)
            .to_vec()
        };
        let nats: Vec<String> = nats_url
            .map(|url| vec!["--nats-url".to_string(), url.to_string()])
            .unwrap_or_default();
        for service in ["demo-auth", "demo-user"] {
            demo.spawn(service, &common(free_port()));
        }
        let mut order = common(free_port());
        order.extend(nats.iter().cloned());
        demo.spawn("demo-order", &order);
        let mut first = common(inventory[0]);
        first.extend(nats.iter().cloned());
        first.extend(["--instance-id", "inventory-1", "--fault-error-rate", "1.0"].map(String::from));
        demo.spawn("demo-inventory", &first);
        let mut second = common(inventory[1]);
        second.extend(["--instance-id", "inventory-2"].map(String::from));
        second.extend(nats.iter().cloned());
        demo.spawn("demo-inventory", &second);
        let mut edge = common(gateway);
        edge.extend(["--rate-limit", "5", "--rate-burst", "20"].map(String::from));
        demo.spawn("demo-api-gateway", &edge);
        demo
    }

    /// Starts a process and waits for its "ready" line (printed once it is registered).
    fn spawn<S: AsRef<std::ffi::OsStr>>(&mut self, name: &str, args: &[S]) {
        let mut child = Command::new(binary(name))
            .args(args)
            .env("DEMO_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("ready on"), "{name} did not get ready: {line:?}");
        self.children.push((name.to_string(), child));
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

fn set_faults(admin: SocketAddr, error_rate: f64) {
    let answer = call(
        "PUT",
        &format!("http://{admin}/admin/faults"),
        None,
        Some(json!({"latency_ms": 0, "error_rate": error_rate})),
    );
    assert_eq!(answer.status, 200, "admin/faults: {}", answer.body);
}

/// The rows of a query (spans arrive in batches, so callers poll with [`eventually`]).
fn rows(ducktrace: &Server, sql: &str) -> Vec<Vec<Json>> {
    let answer = ducktrace.sql(sql);
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().clone())
        .collect()
}

/// Polls `sql` until `accept` likes its rows; fails with the last rows after 20 s.
fn eventually(
    ducktrace: &Server,
    what: &str,
    sql: &str,
    accept: impl Fn(&[Vec<Json>]) -> bool,
) -> Vec<Vec<Json>> {
    let deadline = Instant::now() + Duration::from_secs(20);
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
    let mut placed = Vec::new();
    for _ in 0..6 {
        let answer = order(&demo, &alice, "SKU-BOOK");
        assert_eq!(answer.status, 201, "order: {}", answer.body);
        assert_eq!(answer.body["status"], "CONFIRMED");
        placed.push(answer.trace_id());
    }

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
    set_faults(demo.inventory[1], 1.0);
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
    set_faults(demo.inventory[0], 0.0);
    set_faults(demo.inventory[1], 0.0);
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

/// `ducktrace demo` starts collector, registry, services and load generator, whose traffic
/// arrives as traces; a service killed through `/admin/kill` is restarted; SIGINT (Ctrl-C)
/// stops every child and then itself.
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
    let mut placed = Vec::new();
    for _ in 0..4 {
        let answer = order(&demo, &alice, "SKU-LAMP");
        assert_eq!(answer.status, 201, "order: {}", answer.body);
        assert_eq!(answer.body["status"], "CONFIRMED");
        placed.push(answer.trace_id());
    }
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

#[test]
fn ducktrace_demo_runs_everything_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let (ui, gateway) = (free_port(), free_port());
    let mut demo = Command::new(env!("CARGO_BIN_EXE_ducktrace"))
        .arg("demo")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--http-addr", &ui.to_string()])
        .args(["--otlp-grpc-addr", &free_port().to_string()])
        .args(["--otlp-http-addr", &free_port().to_string()])
        .args(["--registry-addr", &free_port().to_string()])
        .args(["--gateway-addr", &gateway.to_string()])
        .args(["--rate", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = BufReader::new(demo.stdout.take().unwrap());
    let printed = std::thread::spawn(move || output.lines().map_while(Result::ok).collect::<Vec<_>>());

    let query = format!(
        "http://{ui}/api/sql?q={}",
        common::urlencode("SELECT list_sort(list_distinct(list(service_name))) FROM spans")
    );
    let expected = r#"["api-gateway","auth","inventory","loadgen","order","user"]"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = agent()
            .get(&query)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        let services = answer
            .and_then(|body| serde_json::from_str::<Json>(&body).ok())
            .map(|json| json["rows"][0][0].to_string());
        if services.as_deref() == Some(expected) {
            break;
        }
        assert!(Instant::now() < deadline, "the demo's traces cover {services:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Kill the gateway through its admin endpoint: the supervisor starts it again.
    let killed = call("POST", &format!("http://{gateway}/admin/kill"), None, None);
    assert_eq!(killed.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent().get(&format!("http://{gateway}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "the killed gateway was not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }

    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ducktrace demo did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let printed = printed.join().unwrap().join("\n");
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
