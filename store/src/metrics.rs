//! Request metrics for the overview pages: calls between services, and rate, errors and
//! duration (RED) per service and operation, over a time window.
//!
//! Every query here is bounded by a [`TimeWindow`] on the column the rows arrive in order of
//! (`span_data.start_time`, `service_calls.time`), so DuckDB's zone maps skip the row groups
//! outside it. Calls between services come from `service_calls`, which the edge indexer fills
//! as spans arrive; nothing here joins spans with spans.
//!
//! A *request* is a span that a service handled for someone else: kind `SERVER` or `CONSUMER`,
//! or a root span (no parent). Counting only these keeps a service's rate and latency about
//! the work it was asked to do, not its internal or outgoing spans.

use std::str::FromStr;

use duckdb::types::Value;
use duckdb::{params_from_iter, Connection, Row};

use crate::edges::{bin_duration_ns, LATENCY_BIN};
use crate::ids::TraceId;
use crate::{Reader, StoreError};

/// The spans counted as requests to their service (see the module docs).
const REQUEST: &str = "(span_kind IN (2, 5) OR parent_span_id IS NULL)";
/// `status_code` of a failed span.
const ERROR: &str = "status_code = 2";
/// The quantiles every latency summary reports, in the order of [`Latency`]'s fields.
const QUANTILES: &str = "[0.5, 0.95, 0.99]";
/// Operations listed per service; a service with more shows its busiest ones.
pub const MAX_OPERATIONS: usize = 200;

/// A half-open interval `[start, end)` of Unix time in nanoseconds; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    start_ns: i64,
    end_ns: i64,
}

impl TimeWindow {
    /// `None` when `end_ns` is not after `start_ns`.
    pub fn new(start_ns: i64, end_ns: i64) -> Option<Self> {
        (end_ns > start_ns).then_some(Self { start_ns, end_ns })
    }

    pub fn start_ns(self) -> i64 {
        self.start_ns
    }

    pub fn end_ns(self) -> i64 {
        self.end_ns
    }

    pub fn duration_ns(self) -> i64 {
        self.end_ns - self.start_ns
    }

    /// The whole minutes inside the window, if there are any.
    fn whole_minutes(self) -> Option<Self> {
        const MINUTE_NS: i64 = 60_000_000_000;
        let start = self.start_ns.div_euclid(MINUTE_NS) * MINUTE_NS;
        let start = if start < self.start_ns {
            start + MINUTE_NS
        } else {
            start
        };
        Self::new(start, self.end_ns.div_euclid(MINUTE_NS) * MINUTE_NS)
    }

    /// The SQL condition keeping `column` inside the window. The bounds are integers formatted
    /// as literals, so the planner sees constants it can check against zone maps.
    fn condition(self, column: &str) -> String {
        format!(
            "{column} >= make_timestamp_ns({}) AND {column} < make_timestamp_ns({})",
            self.start_ns, self.end_ns
        )
    }
}

/// Duration quantiles of a set of spans, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_ns: f64,
    pub p95_ns: f64,
    pub p99_ns: f64,
}

/// Rate, errors and duration of a set of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestStats {
    pub requests: u64,
    pub errors: u64,
    /// `None` when there were no requests.
    pub latency: Option<Latency>,
}

impl RequestStats {
    /// Errors per request, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Calls from one service to another within a window: an edge of the dependency graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCallStats {
    pub caller: String,
    pub callee: String,
    /// Latency and errors of the called spans.
    pub stats: RequestStats,
    /// The trace holding the slowest of these calls.
    pub slowest_trace: Option<TraceId>,
}

/// One service's requests within a window.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSummary {
    pub name: String,
    pub stats: RequestStats,
}

/// One operation (span name) of a service, with traces worth opening.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationSummary {
    pub name: String,
    pub stats: RequestStats,
    /// The trace of the slowest request.
    pub slowest_trace: Option<TraceId>,
    /// The trace of the most recent failed request.
    pub latest_error_trace: Option<TraceId>,
}

/// Requests within one slot of a timeline: slot `index` covers
/// `[window.start + index * step, window.start + (index + 1) * step)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelineSlot {
    pub index: u32,
    pub stats: RequestStats,
}

/// The lower bounds of the duration buckets within each power of ten: six buckets per decade,
/// nearly even on a log scale, each starting at a round number (1, 1.5, 2, 3, 5, 7 × 10^k ns).
pub const BUCKET_STEPS: [f64; 6] = [1.0, 1.5, 2.0, 3.0, 5.0, 7.0];

/// How many requests took from [`DurationBucket::lower_ns`] of `index` up to that of `index + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationBucket {
    pub index: u32,
    pub requests: u64,
}

impl DurationBucket {
    /// Where bucket `index` starts, in nanoseconds.
    pub fn lower_ns(index: u32) -> f64 {
        let steps = BUCKET_STEPS.len() as u32;
        BUCKET_STEPS[(index % steps) as usize] * 10f64.powi((index / steps) as i32)
    }
}

/// Which requests of a service a metric covers: all of them, or one operation's.
#[derive(Debug, Clone, Copy)]
pub struct RequestFilter<'a> {
    pub service: &'a str,
    pub operation: Option<&'a str>,
}

impl RequestFilter<'_> {
    /// The SQL condition for `span_data`, with its parameters in order.
    fn condition(&self, window: TimeWindow) -> (String, Vec<&str>) {
        let mut condition = format!(
            "service_name = ? AND {REQUEST} AND {}",
            window.condition("start_time")
        );
        let mut params = vec![self.service];
        if let Some(operation) = self.operation {
            condition.push_str(" AND span_name = ?");
            params.push(operation);
        }
        (condition, params)
    }
}

impl Reader {
    /// Calls between services within `window`, by caller and callee. Whole minutes come from
    /// `service_call_minutes`, the ragged ends from `service_calls`, so counts are exact and
    /// a day's graph reads thousands of rows; quantiles come from latency bins (edges.rs).
    pub fn service_calls(&self, window: TimeWindow) -> Result<Vec<ServiceCallStats>, StoreError> {
        let (rolled_up, raw) = match window.whole_minutes() {
            Some(minutes) => (
                minutes.condition("minute"),
                format!(
                    "{} AND NOT ({})",
                    window.condition("time"),
                    minutes.condition("time")
                ),
            ),
            None => ("false".to_string(), window.condition("time")),
        };
        // A bin's middle can lie past the slowest call in it.
        let quantile = |q: f64| {
            let bin = format!("min(latency_bin) FILTER (WHERE upto >= {q} * total)");
            format!("least({}, max(slowest_ns))", bin_duration_ns(&bin))
        };
        let sql = format!(
            "WITH bins AS (
                 SELECT caller, callee, latency_bin, sum(calls) AS calls, sum(errors) AS errors,
                        max(slowest_ns) AS slowest_ns, arg_max(slowest_trace, slowest_ns) AS slowest_trace
                 FROM (SELECT caller, callee, latency_bin, calls, errors, slowest_ns, slowest_trace
                       FROM service_call_minutes WHERE {rolled_up}
                       UNION ALL
                       SELECT caller, callee, {LATENCY_BIN}, 1, CAST(error AS UBIGINT), duration_ns, trace_id
                       FROM service_calls WHERE {raw})
                 GROUP BY ALL),
             running AS (
                 SELECT *, sum(calls) OVER (PARTITION BY caller, callee ORDER BY latency_bin) AS upto,
                        sum(calls) OVER (PARTITION BY caller, callee) AS total
                 FROM bins)
             SELECT caller, callee, CAST(any_value(total) AS UBIGINT), CAST(sum(errors) AS UBIGINT),
                    [{}, {}, {}], {}
             FROM running GROUP BY caller, callee ORDER BY caller, callee",
            quantile(0.5),
            quantile(0.95),
            quantile(0.99),
            trace_hex("arg_max(slowest_trace, slowest_ns)"),
        );
        self.with_connection(|conn| {
            collect(conn, &sql, &[], |row| {
                Ok(ServiceCallStats {
                    caller: row.get(0)?,
                    callee: row.get(1)?,
                    stats: stats_at(row, 2)?,
                    slowest_trace: trace_at(row, 5)?,
                })
            })
        })
    }

    /// Every service ever seen, with its requests within `window` (zero when it had none).
    pub fn services(&self, window: TimeWindow) -> Result<Vec<ServiceSummary>, StoreError> {
        let sql = format!(
            "WITH stats AS (
                 SELECT service_name, count(*) AS requests, count(*) FILTER (WHERE {ERROR}) AS errors,
                        quantile_cont(duration_ns, {QUANTILES}) AS latency
                 FROM span_data WHERE {REQUEST} AND {}
                 GROUP BY service_name)
             SELECT service_name, coalesce(requests, 0), coalesce(errors, 0), latency
             FROM (SELECT DISTINCT service_name FROM resources) LEFT JOIN stats USING (service_name)
             ORDER BY service_name",
            window.condition("start_time")
        );
        self.with_connection(|conn| {
            collect(conn, &sql, &[], |row| {
                Ok(ServiceSummary {
                    name: row.get(0)?,
                    stats: stats_at(row, 1)?,
                })
            })
        })
    }

    /// Whether any span of `service` was ever stored.
    pub fn service_exists(&self, service: &str) -> Result<bool, StoreError> {
        self.with_connection(|conn| {
            Ok(conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM resources WHERE service_name = ?)")?
                .query_row([service], |row| row.get(0))?)
        })
    }

    /// A service's operations within `window`, busiest first, at most [`MAX_OPERATIONS`].
    pub fn operations(&self, service: &str, window: TimeWindow) -> Result<Vec<OperationSummary>, StoreError> {
        let filter = RequestFilter {
            service,
            operation: None,
        };
        let (condition, params) = filter.condition(window);
        let sql = format!(
            "SELECT span_name, count(*), count(*) FILTER (WHERE {ERROR}),
                    quantile_cont(duration_ns, {QUANTILES}), {}, {}
             FROM span_data WHERE {condition}
             GROUP BY span_name ORDER BY count(*) DESC, span_name LIMIT {MAX_OPERATIONS}",
            trace_hex("arg_max(trace_id, duration_ns)"),
            trace_hex(&format!("arg_max(trace_id, start_time) FILTER (WHERE {ERROR})")),
        );
        self.with_connection(|conn| {
            collect(conn, &sql, &params, |row| {
                Ok(OperationSummary {
                    name: row.get(0)?,
                    stats: stats_at(row, 1)?,
                    slowest_trace: trace_at(row, 4)?,
                    latest_error_trace: trace_at(row, 5)?,
                })
            })
        })
    }

    /// Requests per slot of `step_ns` across `window`; slots without requests are left out.
    pub fn timeline(
        &self,
        filter: RequestFilter<'_>,
        window: TimeWindow,
        step_ns: i64,
    ) -> Result<Vec<TimelineSlot>, StoreError> {
        let (condition, params) = filter.condition(window);
        let sql = format!(
            "SELECT CAST((epoch_ns(start_time) - {start}) // {step} AS UINTEGER) AS slot,
                    count(*), count(*) FILTER (WHERE {ERROR}), quantile_cont(duration_ns, {QUANTILES})
             FROM span_data WHERE {condition}
             GROUP BY slot ORDER BY slot",
            start = window.start_ns(),
            step = step_ns.max(1),
        );
        self.with_connection(|conn| {
            collect(conn, &sql, &params, |row| {
                Ok(TimelineSlot {
                    index: row.get(0)?,
                    stats: stats_at(row, 1)?,
                })
            })
        })
    }

    /// How request durations spread over the [`DurationBucket`]s, shortest first; empty
    /// buckets left out.
    pub fn duration_buckets(
        &self,
        filter: RequestFilter<'_>,
        window: TimeWindow,
    ) -> Result<Vec<DurationBucket>, StoreError> {
        let (condition, params) = filter.condition(window);
        let steps = BUCKET_STEPS.len();
        let above_steps: String = BUCKET_STEPS[1..]
            .iter()
            .map(|step| format!(" + CAST(mantissa >= {step} AS INTEGER)"))
            .collect();
        let sql = format!(
            "WITH durations AS (
                 SELECT floor(log10(greatest(duration_ns, 1))) AS decade,
                        greatest(duration_ns, 1) / pow(10, decade) AS mantissa
                 FROM span_data WHERE {condition})
             SELECT CAST(decade * {steps}{above_steps} AS UINTEGER) AS bucket, count(*)
             FROM durations GROUP BY bucket ORDER BY bucket"
        );
        self.with_connection(|conn| {
            collect(conn, &sql, &params, |row| {
                Ok(DurationBucket {
                    index: row.get(0)?,
                    requests: row.get(1)?,
                })
            })
        })
    }
}

/// A UUID trace id expression as the 32 hex digits [`TraceId`] parses.
fn trace_hex(expression: &str) -> String {
    format!("replace(CAST({expression} AS VARCHAR), '-', '')")
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: &[&str],
    mut convert: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query(params_from_iter(params))?;
    let mut result = Vec::new();
    while let Some(row) = rows.next()? {
        result.push(convert(row)?);
    }
    Ok(result)
}

/// Requests, errors and the quantile list, in three columns from `first`.
fn stats_at(row: &Row<'_>, first: usize) -> Result<RequestStats, StoreError> {
    let requests: u64 = row.get(first)?;
    let errors: u64 = row.get(first + 1)?;
    let latency = match row.get::<_, Value>(first + 2)? {
        Value::List(values) => match values.as_slice() {
            [Value::Double(p50_ns), Value::Double(p95_ns), Value::Double(p99_ns)] => Some(Latency {
                p50_ns: *p50_ns,
                p95_ns: *p95_ns,
                p99_ns: *p99_ns,
            }),
            _ => None,
        },
        _ => None,
    };
    Ok(RequestStats {
        requests,
        errors,
        latency,
    })
}

fn trace_at(row: &Row<'_>, index: usize) -> Result<Option<TraceId>, StoreError> {
    let text: Option<String> = row.get(index)?;
    Ok(text.and_then(|text| TraceId::from_str(&text).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_never_empty() {
        assert!(TimeWindow::new(5, 5).is_none());
        assert!(TimeWindow::new(6, 5).is_none());
        let window = TimeWindow::new(5, 15).unwrap();
        assert_eq!(window.duration_ns(), 10);
        assert_eq!(
            window.condition("t"),
            "t >= make_timestamp_ns(5) AND t < make_timestamp_ns(15)"
        );
    }

    #[test]
    fn whole_minutes_lie_inside_the_window() {
        const MINUTE: i64 = 60_000_000_000;
        let window = TimeWindow::new(MINUTE + 1, 4 * MINUTE - 1).unwrap();
        assert_eq!(window.whole_minutes(), TimeWindow::new(2 * MINUTE, 3 * MINUTE));
        let aligned = TimeWindow::new(MINUTE, 3 * MINUTE).unwrap();
        assert_eq!(aligned.whole_minutes(), Some(aligned));
        assert_eq!(
            TimeWindow::new(MINUTE + 1, 3 * MINUTE - 1)
                .unwrap()
                .whole_minutes(),
            None
        );
        let before_1970 = TimeWindow::new(-2 * MINUTE - 1, 0).unwrap();
        assert_eq!(before_1970.whole_minutes(), TimeWindow::new(-2 * MINUTE, 0));
    }

    #[test]
    fn duration_buckets_start_at_round_numbers() {
        assert_eq!(DurationBucket::lower_ns(0), 1.0);
        assert_eq!(DurationBucket::lower_ns(6 * 7), 1e7);
        assert_eq!(DurationBucket::lower_ns(6 * 7 + 3), 3e7);
    }

    #[test]
    fn error_rate_of_nothing_is_zero() {
        let stats = RequestStats {
            requests: 0,
            errors: 0,
            latency: None,
        };
        assert_eq!(stats.error_rate(), 0.0);
        let stats = RequestStats {
            requests: 4,
            errors: 1,
            latency: None,
        };
        assert_eq!(stats.error_rate(), 0.25);
    }
}
