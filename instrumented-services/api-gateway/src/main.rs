//! `demo-api-gateway`: the REST/JSON edge of the demo. It authenticates bearer tokens through
//! `auth`, limits each client's request rate (429 with `Retry-After`), translates REST to gRPC
//! calls (with the shared timeouts, retries and breakers), aggregates `user` and `order` for
//! `GET /api/users/{id}/orders`, and writes an access log line per request.

mod api;
mod edge;
mod rate_limit;

use std::time::Duration;

use clap::Parser;
use demo_platform::process::{CommonArgs, Process};
use demo_platform::resilience::{CallPolicy, Downstream};

/// The demo's REST/JSON edge.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Requests per second each client (bearer token, else IP address) may make on average.
    #[arg(long, env = "DEMO_RATE_LIMIT", default_value_t = 20.0)]
    rate_limit: f64,
    /// Requests a client may make at once before the average rate applies.
    #[arg(long, env = "DEMO_RATE_BURST", default_value_t = 40)]
    rate_burst: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let process = Process::start("api-gateway", args.common).await?;
    let downstream = |service| Downstream::new(service, process.resolver.clone(), CallPolicy::default());
    // Placing an order runs a saga that may itself retry; give it the time to finish.
    let orders = Downstream::new(
        "order",
        process.resolver.clone(),
        CallPolicy {
            timeout: Duration::from_secs(10),
            ..CallPolicy::default()
        },
    );
    let state = api::Gateway {
        auth: downstream("auth"),
        users: downstream("user"),
        orders,
        inventory: downstream("inventory"),
    };
    let limiter = rate_limit::RateLimiter::new(args.rate_limit, args.rate_burst);
    let router = edge::wrap(api::router(state), limiter, process.faults.clone());
    process.serve_http(router).await
}
