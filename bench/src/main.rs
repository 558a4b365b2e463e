//! ducktrace-bench: measures how many spans per second an OTLP collector acknowledges, fills a
//! ducktrace store through that path, and times the queries users run on it.

mod api;
mod export;
mod fill;
mod load;
mod query;
mod report;
mod server;
mod usage;
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::export::Protocol;
use crate::load::LoadConfig;
use crate::report::Report;
use crate::workload::Pool;

/// Distinct request shapes; ids are rewritten per send, so the pool only needs variety.
pub const POOL_BODIES: usize = 64;
const CEILING_TIME: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(version, about = "Load generator and benchmarks for ducktrace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export spans as fast as the collector acknowledges them and report the rate.
    Ingest(IngestArgs),
    /// Add N realistic spans to a ducktrace store through OTLP/gRPC, spread over a time range.
    Fill(fill::FillArgs),
    /// Time trace lookups, searches, the dependency graph and UI pages over the HTTP API, and
    /// ingest while searches run.
    Query(query::QueryArgs),
}

#[derive(Args)]
struct IngestArgs {
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// OTLP endpoint [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318/v1/traces for http]
    #[arg(long)]
    endpoint: Option<String>,
    /// Concurrent exporters, each with its own connection
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    /// Seconds measured
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Seconds of load before measuring starts
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    spans_per_request: u32,
    /// Gzip request bodies
    #[arg(long)]
    gzip: bool,
    /// Collector process whose CPU and peak RSS to report
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also print a one-line JSON summary
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Ingest(args) => ingest(args),
        Command::Fill(args) => tokio::runtime::Runtime::new()?.block_on(fill::run(args)),
        Command::Query(args) => tokio::runtime::Runtime::new()?.block_on(query::run(args)),
    }
}

fn ingest(args: IngestArgs) -> Result<()> {
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| args.protocol.default_endpoint().into());
    let config = LoadConfig {
        protocol: args.protocol,
        endpoint: &endpoint,
        clients: args.clients,
        gzip: args.gzip,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration),
        server_pid: args.server_pid,
        requests: None,
        spread: Duration::ZERO,
    };

    eprintln!(
        "encoding {POOL_BODIES} requests of {} spans…",
        args.spans_per_request
    );
    let pool = Arc::new(Pool::generate(POOL_BODIES, args.spans_per_request as usize));
    eprintln!(
        "measuring the single-thread decode ceiling for {} s…",
        CEILING_TIME.as_secs()
    );
    let decode_ceiling = decode_ceiling(&pool, CEILING_TIME)?;

    eprintln!(
        "exporting to {endpoint} with {} clients: {} s warm-up, then {} s measured…",
        args.clients, args.warmup, args.duration
    );
    let result = tokio::runtime::Runtime::new()?.block_on(load::run(&config, pool.clone()))?;

    let report = Report::new(&config, &pool, decode_ceiling, result);
    print!("{report}");
    if args.json {
        println!("{}", report.json());
    }
    Ok(())
}

/// Spans per second one thread can decode from the pool with prost: what a single core
/// could ingest if decoding were all a collector did.
fn decode_ceiling(pool: &Pool, for_at_least: Duration) -> Result<f64> {
    let started = Instant::now();
    let mut spans = 0;
    for body in pool.encoded().cycle() {
        let request = ExportTraceServiceRequest::decode(body)?;
        let scopes = request.resource_spans.iter().flat_map(|r| &r.scope_spans);
        spans += scopes.map(|s| s.spans.len()).sum::<usize>();
        if started.elapsed() >= for_at_least {
            break;
        }
    }
    Ok(spans as f64 / started.elapsed().as_secs_f64())
}
