//! The `ducktrace` binary: parses flags and hands over to one command module.

mod demo;
mod export_cli;
mod progress;
mod serve;
mod sql_cli;

use clap::{Parser, Subcommand};

/// mimalloc's per-thread free lists made ingest 7% faster than glibc's malloc when decoding still
/// allocated a string per attribute (BENCHMARKS.md); its `override` feature also serves
/// DuckDB's C++ allocations, a tenth of a trace read's CPU under glibc. Built without transparent
/// huge pages (`no_thp`): a 2 MB page stays resident while any block in it lives, and such
/// pages held half of a 1.1 GB peak under sustained ingest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One-binary OpenTelemetry trace collector and viewer, with every span queryable in SQL.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP traces, store them, and serve the UI and API.
    Serve(serve::ServeArgs),
    /// Run read-only SQL against a running server or, when none runs, the data directory.
    Sql(sql_cli::SqlArgs),
    /// Write the spans as Parquet files, one folder per day, from a server or the data directory.
    Export(export_cli::ExportArgs),
    /// Load files written by `export` into a data directory (its server must be stopped).
    Import(export_cli::ImportArgs),
    /// Run ducktrace with the instrumented microservices demo and its load generator.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUCKTRACE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Sql(args) => tokio::task::spawn_blocking(move || sql_cli::run(args)).await?,
        Command::Export(args) => tokio::task::spawn_blocking(move || export_cli::export(args)).await?,
        Command::Import(args) => export_cli::import(args).await,
    }
}
