//! `ducktrace serve`: the store, both OTLP receivers and the UI, until SIGINT or SIGTERM.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Args;
use ducktrace_collector::{Ingest, TraceGrpcService, DEFAULT_MAX_REQUEST_BYTES};
use ducktrace_store::{Store, StoreConfig, WriterConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Args)]
pub struct ServeArgs {
    /// Where the span database lives.
    #[arg(long, env = "DUCKTRACE_DATA_DIR", default_value = "./ducktrace-data")]
    data_dir: PathBuf,
    /// OTLP/gRPC listen address.
    #[arg(long, env = "DUCKTRACE_OTLP_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "DUCKTRACE_OTLP_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    otlp_http_addr: SocketAddr,
    /// UI and API listen address.
    #[arg(long, env = "DUCKTRACE_HTTP_ADDR", default_value = "127.0.0.1:16686")]
    http_addr: SocketAddr,
    /// Largest OTLP request body accepted, compressed or decompressed, in bytes.
    #[arg(long, env = "DUCKTRACE_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Spans received but not yet committed; beyond this, exporters are told to retry later.
    #[arg(long, env = "DUCKTRACE_MAX_QUEUED_SPANS", default_value_t = WriterConfig::default().max_queued_spans)]
    max_queued_spans: usize,
    /// Distinct lists of span attribute keys stored once each; spans with a new list past it
    /// keep their keys inline, which takes more space but bounds memory when keys keep changing.
    #[arg(long, env = "DUCKTRACE_MAX_ATTRIBUTE_KEY_SETS", default_value_t = WriterConfig::default().max_attribute_key_sets)]
    max_attribute_key_sets: usize,
    /// Seconds one SQL statement may run before it is interrupted.
    #[arg(long, env = "DUCKTRACE_QUERY_TIMEOUT", default_value_t = 30)]
    query_timeout: u64,
    /// Also speak the PostgreSQL wire protocol (read-only SQL, no authentication) here,
    /// e.g. 127.0.0.1:5433. Off unless given.
    #[arg(long, env = "DUCKTRACE_PG_ADDR")]
    pg_addr: Option<SocketAddr>,
    /// Queries (API, UI pages, SQL, PostgreSQL) running at once; more wait for a turn. More at
    /// once only take CPU from ingest.
    #[arg(long, env = "DUCKTRACE_MAX_CONCURRENT_QUERIES", default_value_t = ducktrace_store::DEFAULT_MAX_CONCURRENT_QUERIES)]
    max_concurrent_queries: usize,
    /// DuckDB's memory ceiling (ingest and queries together), e.g. 2GB.
    #[arg(long, env = "DUCKTRACE_MEMORY_LIMIT", default_value = ducktrace_store::DEFAULT_MEMORY_LIMIT)]
    memory_limit: String,
    /// Threads one DuckDB statement may use; by default one per core.
    #[arg(long, env = "DUCKTRACE_DUCKDB_THREADS")]
    duckdb_threads: Option<usize>,
}

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers leave at once: with Nagle's algorithm on, the last piece of a streamed response waits
/// for the client's delayed ACK on a kept-alive connection, adding ~40 ms to every query.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = StoreConfig::new(args.data_dir.clone());
    config.writer.max_queued_spans = args.max_queued_spans;
    config.writer.max_attribute_key_sets = args.max_attribute_key_sets;
    config.query_time_limit = Duration::from_secs(args.query_timeout);
    config.memory_limit = args.memory_limit.clone();
    config.max_concurrent_queries = args.max_concurrent_queries;
    if let Some(threads) = args.duckdb_threads {
        config.duckdb_threads = threads;
    }
    let store = tokio::task::spawn_blocking(move || Store::open(&config))
        .await?
        .with_context(|| format!("cannot open the span store in {}", args.data_dir.display()))?;

    let grpc_listener = bind(args.otlp_grpc_addr, "OTLP/gRPC").await?;
    let http_listener = bind(args.otlp_http_addr, "OTLP/HTTP").await?;
    let ui_listener = bind(args.http_addr, "the UI").await?;
    let pg_listener = match args.pg_addr {
        Some(addr) => Some(bind(addr, "PostgreSQL clients").await?),
        None => None,
    };
    println!("ducktrace {} is running", env!("CARGO_PKG_VERSION"));
    println!("  span store  {}", store.path().display());
    println!("  OTLP/gRPC   {}", grpc_listener.local_addr()?);
    println!("  OTLP/HTTP   http://{}/v1/traces", http_listener.local_addr()?);
    println!("  UI and API  http://{}/", ui_listener.local_addr()?);
    if let Some(listener) = &pg_listener {
        println!(
            "  PostgreSQL  {} (psql -h {} -p {})",
            listener.local_addr()?,
            listener.local_addr()?.ip(),
            listener.local_addr()?.port()
        );
    }

    let (stop, stopped) = watch::channel(false);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let ingest = Ingest::new(store.writer());
    let limit = ducktrace_collector::request_limit();
    let grpc = tonic::transport::Server::builder()
        .layer(limit.clone())
        .add_service(TraceGrpcService::new(ingest.clone(), args.max_request_bytes))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            shutdown(),
        );
    let otlp_router = ducktrace_collector::http_router(ingest, args.max_request_bytes).layer(limit);
    let otlp_http = axum::serve(http_listener.tap_io(no_delay), otlp_router)
        .with_graceful_shutdown(shutdown())
        .into_future();
    let ui = axum::serve(ui_listener.tap_io(no_delay), ducktrace_ui::router(store.reader()))
        .with_graceful_shutdown(shutdown())
        .into_future();
    let pg = {
        let reader = store.reader();
        let shutdown = shutdown();
        async move {
            if let Some(listener) = pg_listener {
                ducktrace_pg::serve(listener, reader, shutdown).await;
            }
        }
    };
    let mut servers = tokio::spawn(async move {
        let (grpc, otlp_http, ui, ()) = tokio::join!(grpc, otlp_http, ui, pg);
        grpc.context("OTLP/gRPC server")?;
        otlp_http.context("OTLP/HTTP server")?;
        ui.context("UI server")
    });

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    stop.send_replace(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut servers).await {
        Ok(joined) => joined??,
        Err(_) => {
            tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; stopping anyway");
            servers.abort();
        }
    }
    tokio::task::spawn_blocking(move || store.close()).await?;
    tracing::info!("all acknowledged spans are committed; bye");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
