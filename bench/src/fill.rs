//! Fills a store through the real write path (OTLP/gRPC, acknowledged after commit) with
//! realistic spans spread over a time range, so query benchmarks run on data stored once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use crate::export::Protocol;
use crate::load::{self, LoadConfig};
use crate::server::{load_average, Server, ServerArgs};
use crate::workload::Pool;
use crate::POOL_BODIES;

/// A fill that takes longer than this has gone wrong.
const MAX_FILL_TIME: Duration = Duration::from_secs(6 * 3600);

#[derive(clap::Args)]
pub struct FillArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Spans to add
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    spans: u64,
    /// Hours the spans' start times cover, oldest first, ending a minute before now
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// Concurrent exporters
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    spans_per_request: u32,
    /// Also print a one-line JSON summary
    #[arg(long)]
    json: bool,
}

pub async fn run(args: FillArgs) -> Result<()> {
    let server = Server::open(&args.server).await?;
    let before = server.stored_spans().await?;
    let per_request = u64::from(args.spans_per_request);
    let requests = args.spans.div_ceil(per_request);
    let pool = Arc::new(Pool::generate(POOL_BODIES, per_request as usize));
    let config = LoadConfig {
        protocol: Protocol::Grpc,
        endpoint: &server.grpc,
        clients: args.clients,
        gzip: false,
        warmup: Duration::ZERO,
        duration: MAX_FILL_TIME,
        server_pid: server.pid,
        requests: Some(requests),
        spread: Duration::from_secs(args.hours * 3600),
    };
    eprintln!(
        "sending {requests} requests of {per_request} spans to {} ({before} spans stored before)…",
        server.grpc
    );
    let load = load_average();
    let result = load::run(&config, pool).await?;
    let tally = &result.tally;
    let stored = server
        .stored_spans_reaching(before + tally.spans, Duration::from_secs(30))
        .await?;
    let started_here = args.server.ducktrace.is_some();
    if started_here {
        eprintln!("stopping the server (it checkpoints)…");
    }
    let disk = server.stop()?;

    let seconds = result.measured.as_secs_f64();
    let rate = tally.spans as f64 / seconds;
    println!(
        "filled {} spans in {seconds:.1} s: {rate:.0} spans/s over OTLP/gRPC, {} clients (load average at start {load})",
        tally.spans, args.clients
    );
    println!(
        "refusals {}, errors {}, rejected spans {}; the store holds {stored} spans",
        tally.refusals, tally.errors, tally.rejected_spans
    );
    if let Some(server) = &result.server {
        println!(
            "server: {:.2} CPU cores, peak RSS {:.0} MiB",
            server.cpu_cores,
            server.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    let bytes_per_span = disk.map(|disk| disk.report_per_span(stored, started_here));
    if args.json {
        let summary = json!({
            "acknowledged_spans": tally.spans,
            "seconds": seconds,
            "spans_per_s": rate.round(),
            "errors": tally.errors,
            "stored_spans": stored,
            "server_cpu_cores": result.server.as_ref().map(|s| s.cpu_cores),
            "server_peak_rss_bytes": result.server.as_ref().map(|s| s.peak_rss_bytes),
            "bytes_per_span": bytes_per_span,
            "checkpointed": started_here,
            "load_average": load,
        });
        println!("{summary}");
    }
    if let Some(error) = &tally.first_error {
        bail!("{} exports failed; the first: {error}", tally.errors);
    }
    Ok(())
}
