//! `demo-loadgen`: drives the demo through the gateway like a crowd of customers — log in,
//! then browse products, place orders and list orders — at a fixed total rate for a fixed
//! time, printing progress every second and a summary at the end. Each request is a CLIENT
//! span whose `traceparent` starts the request's trace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use demo_kernel::seed;
use demo_platform::telemetry::{self, ServiceIdentity};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Load generator for the demo (loopback targets only make sense: it is a demo).
#[derive(Parser, Clone)]
#[command(version, about)]
struct Args {
    /// The gateway's base URL.
    #[arg(long, env = "DEMO_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Requests per second, all users together.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// How long to run, in seconds; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Concurrent simulated customers (at most the 8 demo accounts).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=8))]
    users: u32,
    /// OTLP/gRPC endpoint for the client spans; `none` exports nothing.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4317"
    )]
    otlp_endpoint: String,
}

/// What a simulated customer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Login,
    Browse,
    Order,
    ListOrders,
}

/// Counts and latencies per action.
#[derive(Default)]
struct Stats {
    by_action: BTreeMap<Action, ActionStats>,
}

#[derive(Default)]
struct ActionStats {
    statuses: BTreeMap<u16, u64>,
    latencies_ms: Vec<f64>,
}

impl Stats {
    fn record(&mut self, action: Action, status: u16, latency: Duration) {
        let entry = self.by_action.entry(action).or_default();
        *entry.statuses.entry(status).or_default() += 1;
        entry.latencies_ms.push(latency.as_secs_f64() * 1000.0);
    }

    fn totals(&self) -> (u64, u64) {
        let mut all = 0;
        let mut failed = 0;
        for stats in self.by_action.values() {
            for (status, count) in &stats.statuses {
                all += count;
                if *status >= 400 || *status == 0 {
                    failed += count;
                }
            }
        }
        (all, failed)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Customer {
    agent: ureq::Agent,
    gateway: String,
    username: &'static str,
    token: Option<String>,
    customer_id: String,
}

impl Customer {
    /// One request in a CLIENT span; returns the status (0 when the gateway did not answer).
    fn request(
        &self,
        method: &str,
        route: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let span = tracing::info_span!(
            "http.client",
            otel.name = format!("{method} {route}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            url.full = format!("{}{path}", self.gateway),
            http.response.status_code = tracing::field::Empty,
            enduser.id = self.username,
        );
        let _entered = span.enter();
        let mut headers = ureq::http::HeaderMap::new();
        demo_platform::propagation::inject(&span.context(), &mut headers);
        let url = format!("{}{path}", self.gateway);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request.header("content-type", "application/json").body(body);
        let answer = match request {
            Ok(request) => self.agent.run(request),
            Err(error) => {
                tracing::error!("bad request {url}: {error}");
                return (0, String::new());
            }
        };
        match answer {
            Ok(mut response) => {
                let status = response.status().as_u16();
                span.record("http.response.status_code", i64::from(status));
                if status >= 500 {
                    span.record("otel.status_code", "error");
                }
                (status, response.body_mut().read_to_string().unwrap_or_default())
            }
            Err(error) => {
                span.record("otel.status_code", "error");
                tracing::warn!("{method} {url}: {error}");
                (0, String::new())
            }
        }
    }

    fn login(&mut self) -> u16 {
        let body = serde_json::json!({"username": self.username, "password": seed::PASSWORD});
        let (status, text) = self.request("POST", "/api/login", "/api/login", Some(body));
        if status == 200 {
            let session: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            self.token = session["token"].as_str().map(String::from);
            self.customer_id = session["customer_id"].as_str().unwrap_or_default().to_string();
        }
        status
    }

    fn act(&mut self) -> (Action, u16) {
        if self.token.is_none() {
            return (Action::Login, self.login());
        }
        let roll = fastrand::u32(0..10);
        let sku = seed::SKUS[fastrand::usize(0..seed::SKUS.len())].0;
        let (action, status) = if roll < 4 {
            let path = format!("/api/products/{sku}");
            (
                Action::Browse,
                self.request("GET", "/api/products/{sku}", &path, None).0,
            )
        } else if roll < 7 {
            let body = serde_json::json!({"sku": sku, "quantity": fastrand::u32(1..=3)});
            (
                Action::Order,
                self.request("POST", "/api/orders", "/api/orders", Some(body)).0,
            )
        } else {
            let path = format!("/api/users/{}/orders", self.customer_id);
            (
                Action::ListOrders,
                self.request("GET", "/api/users/{id}/orders", &path, None).0,
            )
        };
        if status == 401 {
            self.token = None;
        }
        (action, status)
    }
}

fn run_customer(args: Args, index: usize, stats: Arc<Mutex<Stats>>, stop: Arc<AtomicBool>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let mut customer = Customer {
        agent,
        gateway: args.gateway.trim_end_matches('/').to_string(),
        username: seed::CUSTOMERS[index % seed::CUSTOMERS.len()].0,
        token: None,
        customer_id: String::new(),
    };
    let interval = Duration::from_secs_f64(f64::from(args.users) / args.rate.max(0.01));
    let mut next = Instant::now() + interval.mul_f64(fastrand::f64());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let started = Instant::now();
        let (action, status) = customer.act();
        stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(action, status, started.elapsed());
    }
}

fn print_summary(stats: &Stats, elapsed: Duration) {
    println!(
        "\n{:<12} {:>8} {:>8} {:>9} {:>9}  statuses",
        "action", "requests", "errors", "p50 ms", "p99 ms"
    );
    for (action, s) in &stats.by_action {
        let mut sorted = s.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let errors: u64 = s
            .statuses
            .iter()
            .filter(|(code, _)| **code >= 400 || **code == 0)
            .map(|(_, n)| n)
            .sum();
        let statuses: Vec<String> = s.statuses.iter().map(|(code, n)| format!("{code}×{n}")).collect();
        println!(
            "{:<12} {:>8} {:>8} {:>9.1} {:>9.1}  {}",
            format!("{action:?}"),
            sorted.len(),
            errors,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            statuses.join(" ")
        );
    }
    let (all, failed) = stats.totals();
    println!(
        "{all} requests in {:.1} s ({:.1}/s), {failed} errors",
        elapsed.as_secs_f64(),
        all as f64 / elapsed.as_secs_f64().max(0.001)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let identity = ServiceIdentity {
        name: "loadgen",
        instance_id: format!("loadgen-{}", std::process::id()),
        version: env!("CARGO_PKG_VERSION"),
    };
    let endpoint = (args.otlp_endpoint != "none").then_some(args.otlp_endpoint.as_str());
    let telemetry = telemetry::init(&identity, endpoint)?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    println!(
        "loadgen: {} customers, {} requests/s against {} for {}",
        args.users,
        args.rate,
        args.gateway,
        if args.duration == 0 {
            "ever (Ctrl-C stops)".to_string()
        } else {
            format!("{} s", args.duration)
        }
    );
    let workers: Vec<_> = (0..args.users as usize)
        .map(|index| {
            let (args, stats, stop) = (args.clone(), stats.clone(), stop.clone());
            std::thread::spawn(move || run_customer(args, index, stats, stop))
        })
        .collect();
    let deadline = (args.duration > 0).then(|| started + Duration::from_secs(args.duration));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let shutdown = demo_platform::process::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => break,
        }
        let (all, failed) = stats.lock().unwrap_or_else(|p| p.into_inner()).totals();
        println!(
            "[{:>4.0} s] {all} requests, {failed} errors",
            started.elapsed().as_secs_f64()
        );
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    print_summary(
        &stats.lock().unwrap_or_else(|p| p.into_inner()),
        started.elapsed(),
    );
    telemetry.shutdown();
    Ok(())
}
