//! Concurrent exporters sending as fast as the collector acknowledges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;

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
    /// Send this many distinct requests at most (each retried while refused), then stop, even
    /// before the window ends.
    pub requests: Option<u64>,
    /// Move the timestamps of request `n` of `requests` back so that the requests cover this
    /// much time, oldest first, ending at the pool's own times.
    pub spread: Duration,
}

/// Which request each client sends next; shared by all clients of a run.
struct Plan {
    next: AtomicU64,
    requests: Option<u64>,
    spread: Duration,
}

impl Plan {
    /// A fresh body for the next request, or `None` once all requests are handed out.
    fn next_body(&self, pool: &Pool) -> Option<Bytes> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let earlier_ns = match self.requests {
            Some(total) if n >= total => return None,
            Some(total) => (self.spread.as_nanos() * u128::from(total - n) / u128::from(total)) as u64,
            None => 0,
        };
        Some(pool.fresh(n as usize, earlier_ns))
    }
}

/// The measured part of the run; only exports acknowledged inside it count.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
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
    /// From the window's start to when the last client stopped.
    pub measured: Duration,
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
    let (finished, until) = tokio::sync::watch::channel(false);

    let client_usage = tokio::spawn(usage::watch(std::process::id(), window.start, until.clone()));
    let server_usage = config
        .server_pid
        .map(|pid| tokio::spawn(usage::watch(pid, window.start, until.clone())));
    let plan = Arc::new(Plan {
        next: AtomicU64::new(0),
        requests: config.requests,
        spread: config.spread,
    });
    let clients: Vec<_> = exporters
        .into_iter()
        .map(|exporter| {
            let plan = plan.clone();
            tokio::spawn(client(exporter, pool.clone(), plan, window))
        })
        .collect();

    let mut tally = Tally::default();
    for client in clients {
        tally.merge(client.await?);
    }
    let measured = Instant::now()
        .min(window.end)
        .saturating_duration_since(window.start);
    finished.send_replace(true);
    let server = match server_usage {
        Some(watch) => Some(watch.await??),
        None => None,
    };
    Ok(LoadResult {
        tally,
        measured,
        client: client_usage.await??,
        server,
    })
}

/// Exports until the window ends or the plan runs out, retrying refused bodies and never
/// resending acknowledged ones.
async fn client(mut exporter: Exporter, pool: Arc<Pool>, plan: Arc<Plan>, window: Window) -> Tally {
    let mut tally = Tally::default();
    let mut refused = None;
    while Instant::now() < window.end {
        let Some(body) = refused.take().or_else(|| plan.next_body(&pool)) else {
            break;
        };
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
