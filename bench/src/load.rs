//! Concurrent exporters sending as fast as the collector acknowledges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::export::{Exporter, Outcome, Protocol};
use crate::usage::{self, Usage};
use crate::workload::Pool;

/// Wait after a failed export, so a broken collector is not hammered in a tight loop.
const FAILURE_BACKOFF: Duration = Duration::from_millis(100);
/// Never sleep longer than this on a refusal, whatever the collector asked for.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

pub struct LoadConfig<'a> {
    pub protocol: Protocol,
    pub endpoint: &'a str,
    pub clients: u32,
    pub gzip: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

/// The measured part of the run; only exports acknowledged inside it count.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        (self.start..self.end).contains(&at)
    }
}

/// What happened inside the window, per client and then summed.
#[derive(Default)]
pub struct Tally {
    pub requests: u64,
    /// Spans in acknowledged requests, minus those the collector reported as rejected.
    pub spans: u64,
    pub rejected_spans: u64,
    pub refusals: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latency of each acknowledged export, in microseconds.
    pub latencies_us: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.spans += other.spans;
        self.rejected_spans += other.rejected_spans;
        self.refusals += other.refusals;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latencies_us.extend(other.latencies_us);
    }
}

pub struct LoadResult {
    pub tally: Tally,
    pub client: Usage,
    pub server: Option<Usage>,
}

pub async fn run(config: &LoadConfig<'_>, pool: Arc<Pool>) -> Result<LoadResult> {
    let mut exporters = Vec::new();
    for _ in 0..config.clients {
        exporters.push(Exporter::connect(config.protocol, config.endpoint, config.gzip).await?);
    }
    let start = Instant::now() + config.warmup;
    let window = Window {
        start,
        end: start + config.duration,
    };

    let client_usage = tokio::spawn(usage::watch(std::process::id(), window));
    let server_usage = config
        .server_pid
        .map(|pid| tokio::spawn(usage::watch(pid, window)));
    let clients: Vec<_> = exporters
        .into_iter()
        .enumerate()
        .map(|(i, exporter)| tokio::spawn(client(exporter, pool.clone(), i, window)))
        .collect();

    let mut tally = Tally::default();
    for client in clients {
        tally.merge(client.await?);
    }
    let server = match server_usage {
        Some(watch) => Some(watch.await??),
        None => None,
    };
    Ok(LoadResult {
        tally,
        client: client_usage.await??,
        server,
    })
}

/// Exports until the window ends, retrying refused bodies and never resending acknowledged ones.
async fn client(mut exporter: Exporter, pool: Arc<Pool>, first_body: usize, window: Window) -> Tally {
    let mut tally = Tally::default();
    let mut next_body = first_body;
    let mut refused = None;
    while Instant::now() < window.end {
        let body = refused.take().unwrap_or_else(|| {
            next_body += 1;
            pool.fresh(next_body)
        });
        let sent = Instant::now();
        let outcome = exporter.export(body.clone()).await;
        let done = Instant::now();
        let counted = window.contains(done);
        let pause = match outcome {
            Outcome::Accepted { rejected_spans } => {
                if counted {
                    tally.requests += 1;
                    tally.spans += (pool.spans_per_body() as u64).saturating_sub(rejected_spans);
                    tally.rejected_spans += rejected_spans;
                    tally.latencies_us.push((done - sent).as_micros() as u64);
                }
                Duration::ZERO
            }
            Outcome::Refused { retry_after } => {
                tally.refusals += u64::from(counted);
                refused = Some(body);
                retry_after.min(MAX_RETRY_DELAY)
            }
            Outcome::Failed(error) => {
                if counted {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(error);
                }
                FAILURE_BACKOFF
            }
        };
        if !pause.is_zero() {
            tokio::time::sleep_until(window.end.min(Instant::now() + pause).into()).await;
        }
    }
    tally
}
