//! Query latency over the HTTP API users use, on a store filled through the real write path,
//! and ingest while searches run.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

use crate::api::Api;
use crate::export::Protocol;
use crate::load::{self, LoadConfig};
use crate::server::{load_average, Server, ServerArgs};
use crate::workload::Pool;
use crate::POOL_BODIES;

/// The same choices on every run against the same data.
const SEED: u64 = 0x5eed;
const SAMPLE: usize = 200;
const HOUR_S: i64 = 3600;
/// Searches ask for spans at least this slow, as the ClickHouse peer does.
const MIN_DURATION_MS: i64 = 20;
const MIXED_CLIENTS: u32 = 8;
const MIXED_WARMUP: Duration = Duration::from_secs(3);
const MIXED_SPANS_PER_REQUEST: usize = 1000;

/// `service`, `operation`, `min_ns`, `from_us`, `to_us` are filled in; times are epoch microseconds.
pub const SEARCH_SQL: &str = "SELECT trace_id, span_name, duration_ns, start_time FROM spans \
WHERE service_name = '{service}' AND span_name = '{operation}' AND duration_ns >= {min_ns} \
AND start_time >= make_timestamp({from_us}) AND start_time < make_timestamp({to_us}) \
ORDER BY start_time DESC LIMIT 20";
/// Reads the value by its position in the span's key set, as docs/schema.md advises for scans:
/// `attributes['user.id']` builds every span's map first.
pub const ATTRIBUTE_SQL: &str = "SELECT trace_id, span_name, start_time FROM spans \
WHERE attribute_values[list_position(attribute_keys, 'user.id')] = '{user}' ORDER BY start_time DESC LIMIT 20";
/// Trace search over the whole dataset for one `user.id`, as a user would on the search page:
/// it reads the attribute Bloom filters, which ad-hoc SQL cannot.
pub const ATTRIBUTE_SEARCH_PAGE: &str =
    "/search?lookback=custom&start={first}&end={last}&attributes=user.id%3D{user}&limit=20";
pub const DEPENDENCIES_SQL: &str = "SELECT caller, callee, sum(calls) AS calls, sum(errors) AS errors \
FROM service_call_minutes WHERE minute > make_timestamp({to_us}) - INTERVAL 24 HOUR \
GROUP BY ALL ORDER BY calls DESC";

#[derive(clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Runs of each fast query (trace by id, search, pages)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Runs of each full-scan query (attribute search, dependency graph)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    slow_iterations: u32,
    /// A UI page to time, repeatable; `{trace_id}`, `{service}`, `{operation}` and `{user}` are
    /// replaced by values sampled from the data, e.g. http://127.0.0.1:16686/trace/{trace_id}
    #[arg(long = "page")]
    pages: Vec<String>,
    /// Seconds of ingest alone, then as many with concurrent searches; 0 skips this
    #[arg(long, default_value_t = 20)]
    mixed_seconds: u64,
    /// Searches running at once during the mixed run
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    concurrent_searches: u32,
    /// Also print a one-line JSON summary
    #[arg(long)]
    json: bool,
}

/// What the data holds, sampled once so every query asks about something that exists.
struct Dataset {
    spans: u64,
    first_s: i64,
    last_s: i64,
    /// The dataset's time range as the search page's custom range takes it.
    first_input: String,
    last_input: String,
    trace_ids: Vec<String>,
    users: Vec<String>,
    /// (service, operation) of server spans.
    endpoints: Vec<(String, String)>,
}

impl Dataset {
    async fn sample(api: &Api) -> Result<Self> {
        let rows = api
            .sql("SELECT count(*), CAST(epoch(min(start_time)) AS BIGINT), CAST(epoch(max(start_time)) AS BIGINT),
                         strftime(min(start_time), '%Y-%m-%dT%H:%M:%S'),
                         strftime(max(start_time) + INTERVAL 1 SECOND, '%Y-%m-%dT%H:%M:%S')
                  FROM span_data")
            .await?;
        let row = rows.first().context("no summary row")?;
        let number = |i: usize| row.get(i).and_then(Json::as_i64).context("the store is empty");
        let (spans, first_s, last_s) = (number(0)? as u64, number(1)?, number(2)?);
        let text = |i: usize| {
            row.get(i)
                .and_then(Json::as_str)
                .map(str::to_string)
                .context("the store is empty")
        };
        let (first_input, last_input) = (text(3)?, text(4)?);
        let texts = |rows: Vec<Vec<Json>>| -> Vec<String> {
            rows.into_iter()
                .filter_map(|row| row.first()?.as_str().map(str::to_string))
                .collect()
        };
        let trace_ids = texts(api.sql(&format!(
            "SELECT DISTINCT replace(CAST(trace_id AS VARCHAR), '-', '') FROM span_data USING SAMPLE {SAMPLE} ROWS"
        )).await?);
        let users = texts(api.sql(&format!(
            "SELECT DISTINCT user_id FROM (SELECT attribute_values[list_position(attribute_keys, 'user.id')] AS user_id FROM spans USING SAMPLE {SAMPLE} ROWS) WHERE user_id IS NOT NULL"
        )).await?);
        let endpoints = api
            .sql("SELECT service_name, span_name FROM span_data WHERE span_kind = 2 GROUP BY ALL ORDER BY ALL LIMIT 1000")
            .await?
            .into_iter()
            .filter_map(|row| Some((row.first()?.as_str()?.to_string(), row.get(1)?.as_str()?.to_string())))
            .collect::<Vec<_>>();
        if trace_ids.is_empty() || users.is_empty() || endpoints.is_empty() {
            bail!("the store holds no spans with trace ids, user.id attributes and server spans; fill it with `ducktrace-bench fill` first");
        }
        Ok(Self {
            spans,
            first_s,
            last_s,
            first_input,
            last_input,
            trace_ids,
            users,
            endpoints,
        })
    }
}

/// One request of a benchmark, made before the clock starts.
enum Probe {
    Sql(String),
    Get(String),
}

impl Probe {
    /// Sends it; returns the rows answered (1 for a page or trace).
    async fn send(&self, api: &Api) -> Result<usize> {
        match self {
            Probe::Sql(sql) => Ok(api.sql(sql).await?.len()),
            Probe::Get(url) => api.get(url).await.map(|_| 1),
        }
    }
}

/// Makes the probes of each benchmark from the sampled data.
struct Probes {
    data: Dataset,
    rng: SmallRng,
}

/// Single quotes doubled, for a SQL string literal.
fn quoted(text: &str) -> String {
    text.replace('\'', "''")
}

impl Probes {
    fn trace_by_id(&mut self) -> Probe {
        let id = self.data.trace_ids.choose(&mut self.rng).expect("sampled");
        Probe::Get(format!("/api/v3/traces/{id}"))
    }

    fn search(&mut self) -> Probe {
        let (service, operation) = self.data.endpoints.choose(&mut self.rng).expect("sampled");
        let latest_from = (self.data.last_s - HOUR_S).max(self.data.first_s);
        let from = self.rng.random_range(self.data.first_s..=latest_from);
        Probe::Sql(
            SEARCH_SQL
                .replace("{service}", &quoted(service))
                .replace("{operation}", &quoted(operation))
                .replace("{min_ns}", &(MIN_DURATION_MS * 1_000_000).to_string())
                .replace("{from_us}", &(from * 1_000_000).to_string())
                .replace("{to_us}", &((from + HOUR_S) * 1_000_000).to_string()),
        )
    }

    fn attribute(&mut self) -> Probe {
        let user = self.data.users.choose(&mut self.rng).expect("sampled");
        Probe::Sql(ATTRIBUTE_SQL.replace("{user}", &quoted(user)))
    }

    fn attribute_search(&mut self) -> Probe {
        let user = self.data.users.choose(&mut self.rng).expect("sampled");
        Probe::Get(
            ATTRIBUTE_SEARCH_PAGE
                .replace("{first}", &self.data.first_input)
                .replace("{last}", &self.data.last_input)
                .replace("{user}", &url_encoded(user)),
        )
    }

    fn dependencies(&mut self) -> Probe {
        Probe::Sql(DEPENDENCIES_SQL.replace("{to_us}", &((self.data.last_s + 60) * 1_000_000).to_string()))
    }

    fn page(&mut self, template: &str) -> Probe {
        let (service, operation) = self.data.endpoints.choose(&mut self.rng).expect("sampled");
        let trace_id = self.data.trace_ids.choose(&mut self.rng).expect("sampled");
        let user = self.data.users.choose(&mut self.rng).expect("sampled");
        Probe::Get(
            template
                .replace("{trace_id}", trace_id)
                .replace("{service}", &url_encoded(service))
                .replace("{operation}", &url_encoded(operation))
                .replace("{user}", &url_encoded(user)),
        )
    }
}

fn url_encoded(text: &str) -> String {
    text.bytes().fold(String::new(), |mut out, b| {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out
    })
}

/// Latencies of one benchmark, in milliseconds, sorted.
struct Timing {
    name: String,
    latencies_ms: Vec<f64>,
    rows: usize,
    load: String,
}

impl Timing {
    fn quantile(&self, q: f64) -> f64 {
        let rank = (q * self.latencies_ms.len() as f64).ceil() as usize;
        self.latencies_ms[rank.saturating_sub(1).min(self.latencies_ms.len() - 1)]
    }

    fn json(&self) -> Json {
        json!({
            "name": self.name,
            "runs": self.latencies_ms.len(),
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
            "max_ms": self.quantile(1.0),
            "rows_per_answer": self.rows as f64 / self.latencies_ms.len() as f64,
            "load_average": self.load,
        })
    }
}

/// Sends `runs` probes one after another, timing each from request to the last byte.
async fn measure(api: &Api, name: &str, runs: u32, mut next: impl FnMut() -> Probe) -> Result<Timing> {
    let load = load_average();
    eprintln!("{name}: {runs} runs…");
    let mut latencies_ms = Vec::with_capacity(runs as usize);
    let mut rows = 0;
    for _ in 0..runs {
        let probe = next();
        let started = Instant::now();
        rows += probe.send(api).await.with_context(|| name.to_string())?;
        latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Timing {
        name: name.to_string(),
        latencies_ms,
        rows,
        load,
    })
}

/// Ingest alone, then ingest while searches run.
struct Mixed {
    alone: f64,
    with_searches: f64,
    searches: Timing,
    concurrent_searches: u32,
}

async fn mixed(server: &Server, probes: Probes, args: &QueryArgs) -> Result<Mixed> {
    let pool = Arc::new(Pool::generate(POOL_BODIES, MIXED_SPANS_PER_REQUEST));
    let config = LoadConfig {
        protocol: Protocol::Grpc,
        endpoint: &server.grpc,
        clients: MIXED_CLIENTS,
        gzip: false,
        warmup: MIXED_WARMUP,
        duration: Duration::from_secs(args.mixed_seconds),
        server_pid: None,
        requests: None,
        spread: Duration::ZERO,
    };
    let rate = |result: &load::LoadResult| result.tally.spans as f64 / config.duration.as_secs_f64();
    eprintln!("ingest alone for {} s…", args.mixed_seconds);
    let alone = rate(&load::run(&config, pool.clone()).await?);

    eprintln!(
        "ingest with {} concurrent searches for {} s…",
        args.concurrent_searches, args.mixed_seconds
    );
    let load = load_average();
    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(std::sync::Mutex::new(probes));
    let searchers: Vec<_> = (0..args.concurrent_searches)
        .map(|_| {
            let (api, probes, stop) = (server.api.clone(), probes.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies_ms = Vec::new();
                let mut rows = 0;
                while !stop.load(Ordering::Relaxed) {
                    let probe = probes.lock().expect("no panics while held").search();
                    let started = Instant::now();
                    rows += probe.send(&api).await?;
                    latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok((latencies_ms, rows))
            })
        })
        .collect();
    let with_searches = rate(&load::run(&config, pool).await?);
    stop.store(true, Ordering::Relaxed);
    let mut searches = Timing {
        name: format!("search during ingest ×{}", args.concurrent_searches),
        latencies_ms: Vec::new(),
        rows: 0,
        load,
    };
    for searcher in searchers {
        let (latencies_ms, rows) = searcher.await??;
        searches.latencies_ms.extend(latencies_ms);
        searches.rows += rows;
    }
    if searches.latencies_ms.is_empty() {
        bail!("no search finished during the mixed run");
    }
    searches.latencies_ms.sort_by(f64::total_cmp);
    Ok(Mixed {
        alone,
        with_searches,
        searches,
        concurrent_searches: args.concurrent_searches,
    })
}

pub async fn run(args: QueryArgs) -> Result<()> {
    let server = Server::open(&args.server).await?;
    let api = server.api.clone();
    eprintln!("sampling the data at {}…", api.base());
    let data = Dataset::sample(&api).await?;
    let spans = data.spans;
    let mut probes = Probes {
        data,
        rng: SmallRng::seed_from_u64(SEED),
    };

    let (fast, slow) = (args.iterations, args.slow_iterations);
    let mut timings = vec![
        measure(&api, "trace by id", fast, || probes.trace_by_id()).await?,
        measure(&api, "search svc+op+dur+1h", fast, || probes.search()).await?,
        measure(&api, "attribute user.id, search page", fast, || {
            probes.attribute_search()
        })
        .await?,
        measure(&api, "attribute user.id, SQL scan", slow, || probes.attribute()).await?,
        measure(&api, "dependencies 24 h", slow, || probes.dependencies()).await?,
    ];
    for page in &args.pages {
        timings.push(measure(&api, page, fast, || probes.page(page)).await?);
    }
    let mixed = if args.mixed_seconds > 0 {
        Some(mixed(&server, probes, &args).await?)
    } else {
        None
    };

    let stored = server.stored_spans().await?;
    let started_here = args.server.ducktrace.is_some();
    if started_here {
        eprintln!("stopping the server (it checkpoints)…");
    }
    let disk = server.stop()?;

    println!("query benchmarks over {} ({spans} spans)\n", api.base());
    println!(
        "{:<34}{:>6}{:>10}{:>10}{:>10}{:>9}  load average",
        "", "runs", "p50 ms", "p99 ms", "max ms", "rows"
    );
    let mixed_searches = mixed.as_ref().map(|m| &m.searches);
    for timing in timings.iter().chain(mixed_searches) {
        println!(
            "{:<34}{:>6}{:>10.1}{:>10.1}{:>10.1}{:>9.1}  {}",
            timing.name,
            timing.latencies_ms.len(),
            timing.quantile(0.5),
            timing.quantile(0.99),
            timing.quantile(1.0),
            timing.rows as f64 / timing.latencies_ms.len() as f64,
            timing.load
        );
    }
    if let Some(m) = &mixed {
        println!(
            "\ningest alone {:.0} spans/s; with {} concurrent searches {:.0} spans/s ({:.0}%)",
            m.alone,
            m.concurrent_searches,
            m.with_searches,
            100.0 * m.with_searches / m.alone
        );
    }
    let bytes_per_span = disk.map(|disk| disk.report_per_span(stored, started_here));
    if args.json {
        let summary = json!({
            "spans_queried": spans,
            "spans_stored_at_end": stored,
            "queries": timings.iter().map(Timing::json).collect::<Vec<_>>(),
            "ingest_alone_spans_per_s": mixed.as_ref().map(|m| m.alone.round()),
            "ingest_with_searches_spans_per_s": mixed.as_ref().map(|m| m.with_searches.round()),
            "searches_during_ingest": mixed.as_ref().map(|m| m.searches.json()),
            "bytes_per_span": bytes_per_span,
            "checkpointed": started_here,
        });
        println!("{summary}");
    }
    Ok(())
}
