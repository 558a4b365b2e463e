//! Rate, errors and latency of a set of requests or calls, formatted once for every table that
//! shows them (services, a service's operations, the edges between services).

use ducktrace_store::metrics::{Latency, RequestStats, TimeWindow};

use super::units;

/// One row's figures as text; `templates/stats.html` lays out its cells.
#[derive(Clone)]
pub struct StatsView {
    pub requests: String,
    pub rate: String,
    pub errors: String,
    pub error_rate: String,
    /// Whether the error rate is drawn as a badge, i.e. reached the table's threshold.
    pub failing: bool,
    pub p50: String,
    pub p95: String,
    pub p99: String,
}

impl StatsView {
    /// `failing_from` is the error rate drawn as a badge; 0 marks any error.
    pub fn new(stats: &RequestStats, window: TimeWindow, failing_from: f64) -> Self {
        let seconds = window.duration_ns() as f64 / 1e9;
        let latency = |pick: fn(&Latency) -> f64| {
            stats.latency.as_ref().map_or_else(
                || "–".to_string(),
                |latency| units::duration(pick(latency).round() as i64),
            )
        };
        Self {
            requests: units::count(stats.requests),
            rate: units::rate(stats.requests as f64 / seconds),
            errors: units::count(stats.errors),
            error_rate: units::percent(stats.error_rate()),
            failing: stats.errors > 0 && stats.error_rate() >= failing_from,
            p50: latency(|l| l.p50_ns),
            p95: latency(|l| l.p95_ns),
            p99: latency(|l| l.p99_ns),
        }
    }
}
