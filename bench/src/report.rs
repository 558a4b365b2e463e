//! The summary printed after a run: a plain-text table and, optionally, one JSON line.

use std::fmt;

use serde_json::json;

use crate::export::compress;
use crate::load::{LoadConfig, LoadResult};
use crate::usage::Usage;
use crate::workload::Pool;

pub struct Report<'a> {
    config: &'a LoadConfig<'a>,
    spans_per_request: usize,
    bytes_per_span: f64,
    /// Estimated from one body: what --gzip puts on the wire per span.
    gzip_bytes_per_span: Option<f64>,
    decode_ceiling: f64,
    result: LoadResult,
    /// Acknowledged-export latencies in milliseconds, sorted.
    latencies_ms: Vec<f64>,
}

impl<'a> Report<'a> {
    pub fn new(config: &'a LoadConfig<'a>, pool: &Pool, decode_ceiling: f64, result: LoadResult) -> Self {
        let spans_per_request = pool.spans_per_body();
        let gzip_bytes_per_span = config.gzip.then(|| {
            let body = pool.encoded().next().expect("pool is not empty");
            compress(body).len() as f64 / spans_per_request as f64
        });
        let mut latencies_ms: Vec<f64> = result
            .tally
            .latencies_us
            .iter()
            .map(|&us| us as f64 / 1000.0)
            .collect();
        latencies_ms.sort_by(f64::total_cmp);
        Self {
            config,
            spans_per_request,
            bytes_per_span: pool.bytes_per_span(),
            gzip_bytes_per_span,
            decode_ceiling,
            result,
            latencies_ms,
        }
    }

    fn spans_per_second(&self) -> f64 {
        self.result.tally.spans as f64 / self.config.duration.as_secs_f64()
    }

    fn requests_per_second(&self) -> f64 {
        self.result.tally.requests as f64 / self.config.duration.as_secs_f64()
    }

    fn percent_of_ceiling(&self) -> f64 {
        100.0 * self.spans_per_second() / self.decode_ceiling
    }

    /// Latency at quantile `q` in milliseconds (nearest rank), if anything was acknowledged.
    fn latency(&self, q: f64) -> Option<f64> {
        let rank = (q * self.latencies_ms.len() as f64).ceil() as usize;
        self.latencies_ms.get(rank.saturating_sub(1)).copied()
    }

    pub fn json(&self) -> serde_json::Value {
        let config = self.config;
        let tally = &self.result.tally;
        let server = self.result.server.as_ref();
        json!({
            "protocol": config.protocol.name(),
            "endpoint": config.endpoint,
            "gzip": config.gzip,
            "clients": config.clients,
            "spans_per_request": self.spans_per_request,
            "warmup_s": config.warmup.as_secs(),
            "duration_s": config.duration.as_secs(),
            "acknowledged_spans": tally.spans,
            "spans_per_s": self.spans_per_second().round(),
            "requests_per_s": self.requests_per_second(),
            "latency_ms": {"p50": self.latency(0.5), "p99": self.latency(0.99), "max": self.latency(1.0)},
            "refusals": tally.refusals,
            "errors": tally.errors,
            "rejected_spans": tally.rejected_spans,
            "bytes_per_span": self.bytes_per_span.round(),
            "gzip_bytes_per_span": self.gzip_bytes_per_span.map(f64::round),
            "decode_ceiling_spans_per_s": self.decode_ceiling.round(),
            "percent_of_decode_ceiling": self.percent_of_ceiling(),
            "client_cpu_cores": self.result.client.cpu_cores,
            "server_cpu_cores": server.map(|s| s.cpu_cores),
            "server_peak_rss_bytes": server.map(|s| s.peak_rss_bytes),
        })
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.config;
        let tally = &self.result.tally;
        let gzip = if config.gzip { "gzip" } else { "uncompressed" };
        writeln!(
            f,
            "ingest: {} {gzip}, {} clients × {} spans/request → {}",
            config.protocol.name(),
            config.clients,
            self.spans_per_request,
            config.endpoint
        )?;
        writeln!(
            f,
            "measured {} s after {} s warm-up\n",
            config.duration.as_secs(),
            config.warmup.as_secs()
        )?;

        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| writeln!(f, "{name:<22}{value}");
        let ms = |q| self.latency(q).map_or("-".into(), |ms| format!("{ms:.1}"));
        row(f, "acknowledged spans", tally.spans.to_string())?;
        row(f, "spans/s", format!("{:.0}", self.spans_per_second()))?;
        row(f, "requests/s", format!("{:.1}", self.requests_per_second()))?;
        row(
            f,
            "latency p50/p99/max",
            format!("{} / {} / {} ms", ms(0.5), ms(0.99), ms(1.0)),
        )?;
        row(f, "refusals", tally.refusals.to_string())?;
        row(f, "errors", tally.errors.to_string())?;
        row(f, "rejected spans", tally.rejected_spans.to_string())?;
        let wire = self
            .gzip_bytes_per_span
            .map_or(String::new(), |b| format!(" ({b:.0} gzipped)"));
        row(
            f,
            "encoded bytes/span",
            format!("{:.0}{wire}", self.bytes_per_span),
        )?;
        row(
            f,
            "decode ceiling",
            format!(
                "{:.0} spans/s on one thread; ingest is {:.1}% of it",
                self.decode_ceiling,
                self.percent_of_ceiling()
            ),
        )?;
        row(f, "client", usage(&self.result.client))?;
        if let Some(server) = &self.result.server {
            row(f, "server", usage(server))?;
        }
        if let Some(error) = &tally.first_error {
            row(f, "first error", error.clone())?;
        }
        Ok(())
    }
}

fn usage(usage: &Usage) -> String {
    let mib = usage.peak_rss_bytes as f64 / (1024.0 * 1024.0);
    format!("{:.2} CPU cores, peak RSS {mib:.0} MiB", usage.cpu_cores)
}
