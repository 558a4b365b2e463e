//! Trace search: which traces match a set of filters, newest (or longest, largest, most failing)
//! first, read from the per-trace summaries so no request groups all spans.
//!
//! A trace matches when it started in the time range, its duration and error count pass the
//! trace-level filters, and — when a service, operation or attributes are given — one of its
//! spans matches all of those together. Candidate traces come from `trace_summaries` pruned by
//! its start-time zone maps; spans are scanned only for span-level filters, and only from the
//! range's start on.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use duckdb::types::Value;
use duckdb::Connection;

use crate::attribute_index::{self, Block, ATTRIBUTE_BLOOMS};
use crate::ids::TraceId;
use crate::indexer::{Progress, SpanRange};
use crate::key_sets::{self, Condition};
use crate::reader::Catalog;
use crate::StoreError;

/// How far past the range's end a matching span may start, for spans of long traces.
const SPAN_SLACK_NS: i64 = 3_600_000_000_000;

/// Largest number of traces one search returns.
pub const MAX_LIMIT: usize = 1000;

/// What a search asks for. Build it from user input with the parsers in this module.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceQuery {
    /// Traces that started at or after this time (Unix nanoseconds)…
    pub from_ns: i64,
    /// …and before this one.
    pub to_ns: i64,
    pub service: Option<String>,
    /// Only with `service`: an operation (span name) of that service.
    pub operation: Option<String>,
    pub attributes: Vec<AttributeFilter>,
    pub min_duration: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub errors_only: bool,
    pub order: TraceOrder,
    pub limit: usize,
}

/// The order of search results; the limit keeps the first ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceOrder {
    #[default]
    MostRecent,
    Longest,
    MostSpans,
    MostErrors,
}

impl TraceOrder {
    pub const ALL: [TraceOrder; 4] = [Self::MostRecent, Self::Longest, Self::MostSpans, Self::MostErrors];

    /// The name used in URLs (`sort=longest`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MostRecent => "recent",
            Self::Longest => "longest",
            Self::MostSpans => "spans",
            Self::MostErrors => "errors",
        }
    }

    fn order_by(self) -> &'static str {
        match self {
            Self::MostRecent => "start_time DESC, trace_id",
            Self::Longest => "duration_ns DESC, trace_id",
            Self::MostSpans => "span_count DESC, start_time DESC, trace_id",
            Self::MostErrors => "error_count DESC, start_time DESC, trace_id",
        }
    }
}

impl FromStr for TraceOrder {
    type Err = InputError;
    fn from_str(text: &str) -> Result<Self, InputError> {
        Self::ALL
            .into_iter()
            .find(|order| order.as_str() == text)
            .ok_or_else(|| {
                InputError(format!(
                    "unknown sort order {text:?}; use recent, longest, spans or errors"
                ))
            })
    }
}

/// A filter input that cannot be used, with what was wrong in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// A span attribute that must have this value (compared as text, so `500` matches the int 500
/// and `true` the boolean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeFilter {
    pub key: String,
    pub value: String,
}

impl AttributeFilter {
    /// Parses `key=value` pairs separated by spaces; a value with spaces is quoted:
    /// `http.status_code=500 error=true message="not found"`. Inside quotes `\"` and `\\` escape.
    pub fn parse_list(text: &str) -> Result<Vec<AttributeFilter>, InputError> {
        let mut filters = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                return Ok(filters);
            }
            let key: String =
                std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
            if chars.next_if_eq(&'=').is_none() || key.is_empty() {
                return Err(InputError(format!(
                    "attributes are key=value pairs separated by spaces; {:?} is not one",
                    key.chars().take(64).collect::<String>()
                )));
            }
            let value = if chars.next_if_eq(&'"').is_some() {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(c) => value.push(c),
                        None => {
                            return Err(InputError(format!(
                                "the value of {key:?} lacks its closing quote"
                            )))
                        }
                    }
                }
                if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                    return Err(InputError(format!(
                        "put a space after the quoted value of {key:?}"
                    )));
                }
                value
            } else {
                std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect()
            };
            filters.push(AttributeFilter { key, value });
        }
    }
}

impl fmt::Display for AttributeFilter {
    /// The form [`AttributeFilter::parse_list`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() || self.value.contains(|c: char| c.is_whitespace() || c == '"') {
            let escaped = self.value.replace('\\', "\\\\").replace('"', "\\\"");
            write!(f, "{}=\"{escaped}\"", self.key)
        } else {
            write!(f, "{}={}", self.key, self.value)
        }
    }
}

/// A span or trace duration in nanoseconds, written by people as `150ms`, `2s`, `1.5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub i64);

impl FromStr for Duration {
    type Err = InputError;
    fn from_str(text: &str) -> Result<Self, InputError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let bad = || InputError(format!("{text:?} is not a duration like 150ms, 2s or 1.5m"));
        let number: f64 = number.parse().map_err(|_| bad())?;
        let nanos_per_unit = match unit.trim() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        let nanos = number * nanos_per_unit;
        if !nanos.is_finite() || nanos > i64::MAX as f64 {
            return Err(InputError(format!("{text:?} is too long a duration")));
        }
        Ok(Duration(nanos.round() as i64))
    }
}

/// One trace in a search result.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    pub root_service: String,
    pub root_operation: String,
    /// The root span has not arrived: `root_*` name the earliest span instead.
    pub root_missing: bool,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub span_count: u64,
    pub error_count: u64,
    /// Every service in the trace with its number of spans, by name.
    pub services: Vec<ServiceSpans>,
}

/// How many spans of a trace one service produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpans {
    pub service: String,
    pub spans: u64,
}

/// An operation (span name) of a service, for pickers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub service: String,
    pub name: String,
}

/// The traces matching `query`, in its order, at most `query.limit` of them.
///
/// With attribute filters, spans are read only from the blocks whose Bloom filters may hold the
/// pairs (attribute_index.rs), newest first; for the newest-first order the search stops as
/// soon as no older block can hold a trace recent enough to make the list.
pub(crate) fn search(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    progress: &Progress,
    query: &TraceQuery,
) -> Result<Vec<TraceSummary>, StoreError> {
    // Before the snapshot, so that the snapshot holds every block filter this counts as made.
    let unfiltered = progress.unindexed(&ATTRIBUTE_BLOOMS);
    // One snapshot, so that the attribute key positions read first cover every span read later.
    crate::in_transaction(conn, || search_in_snapshot(conn, catalog, unfiltered, query))
}

fn search_in_snapshot(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    unfiltered: Option<SpanRange>,
    query: &TraceQuery,
) -> Result<Vec<TraceSummary>, StoreError> {
    let filter = span_filter(conn, query)?;
    let Some(blocks) = attribute_blocks(conn, catalog, unfiltered, query)? else {
        let spans = (query.operation.is_some() || !query.attributes.is_empty())
            .then_some(SpanScope::TimeRange(&filter));
        return summaries(conn, query, spans);
    };
    let wanted = query.limit.min(MAX_LIMIT);
    let mut found = FoundTraces::new();
    let mut traces = Vec::new();
    // Traces that matched so far, counting the trace-level filters once summaries are read.
    let mut yielded = 0;
    let mut scanned = 0;
    while scanned < blocks.len() {
        let take = match (scanned, query.order) {
            (0, _) => FIRST_SCAN_BLOCKS,
            (_, TraceOrder::MostRecent) => blocks_for_the_rest(yielded, wanted, scanned),
            // Every block is read.
            _ => MAX_SCAN_BLOCKS,
        };
        let chunk = &blocks[scanned..(scanned + take).min(blocks.len())];
        scanned += chunk.len();
        for (trace_id, matched_ns) in matching_traces(conn, &filter, chunk)? {
            let earliest = found.entry(trace_id).or_insert(matched_ns);
            *earliest = (*earliest).min(matched_ns);
        }
        // Summaries cost a scan of their trace ids: read only once they may fill the page.
        let may_stop = query.order == TraceOrder::MostRecent && found.len() >= wanted;
        if scanned < blocks.len() && !may_stop {
            yielded = found.len();
            continue;
        }
        traces = summaries(conn, query, Some(SpanScope::Traces(&found)))?;
        yielded = traces.len();
        let older_latest = blocks[scanned..]
            .iter()
            .map(|block| *block.spans.starts.end())
            .max();
        let full = traces.len() >= wanted;
        match (older_latest, traces.last()) {
            (None, _) => break,
            (Some(latest), Some(oldest_kept)) if full && oldest_kept.start_ns > latest => break,
            _ => {}
        }
    }
    Ok(traces)
}

/// Blocks scanned by the first query of an attribute search: most of what a page of 20 traces
/// needs when a value occurs in about one trace per block, as a user id does.
const FIRST_SCAN_BLOCKS: usize = 16;
/// Blocks per further query at most; each costs about 2 ms of scan at 10M spans.
const MAX_SCAN_BLOCKS: usize = 32;

/// Blocks for the next query when `scanned` blocks gave `found` of `wanted` traces: as many as
/// the same yield would need for the rest, so a rare value is not read in many small rounds.
fn blocks_for_the_rest(found: usize, wanted: usize, scanned: usize) -> usize {
    let missing = wanted.saturating_sub(found).max(1);
    (missing * scanned)
        .div_ceil(found.max(1))
        .clamp(4, MAX_SCAN_BLOCKS)
}

/// Which spans the span-level filters (service, operation, attributes) are checked on.
#[derive(Clone, Copy)]
enum SpanScope<'a> {
    /// Every span in the time range that passes the filter.
    TimeRange(&'a SpanFilter),
    /// Only these traces, already found to match.
    Traces(&'a FoundTraces),
}

/// Traces with a span that matches the span-level filters, by id (UUID text: hex digits and
/// dashes, safe to inline), with the earliest start among those spans: the trace started no
/// later.
type FoundTraces = HashMap<String, i64>;

/// How long before its earliest matching span a found trace's summary is looked for first.
/// Zone maps skip the summaries outside; a trace that started earlier still than this is found
/// by a second look through all of them.
const TRACE_START_MARGIN_NS: i64 = 60_000_000_000;

/// The candidate blocks of the most selective attribute filter, newest first, or `None` when
/// there are no attribute filters or the blocks are too many to beat one scan of the range.
fn attribute_blocks(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    unfiltered: Option<SpanRange>,
    query: &TraceQuery,
) -> Result<Option<Vec<Block>>, StoreError> {
    let mut best: Option<Vec<Block>> = None;
    let span_to_ns = query.to_ns.saturating_add(SPAN_SLACK_NS);
    for filter in &query.attributes {
        let blocks = attribute_index::candidate_blocks(
            conn,
            catalog,
            unfiltered.clone(),
            &filter.key,
            &filter.value,
            query.from_ns,
            span_to_ns,
        )?;
        if best.as_ref().is_none_or(|best| blocks.len() < best.len()) {
            best = Some(blocks);
        }
    }
    Ok(best.filter(|blocks| query.order == TraceOrder::MostRecent || blocks.len() <= MAX_SCANNED_BLOCKS))
}

/// Beyond this many blocks, an order other than newest-first reads the whole time range at once.
const MAX_SCANNED_BLOCKS: usize = 64;

/// Span-level filters as the `FROM span_data s WHERE …` part of a statement: one form for any
/// span, one for the spans of a plain block (`key_sets::AttributeEquals`).
struct SpanFilter {
    any_span: Condition,
    plain_span: Condition,
}

impl SpanFilter {
    fn for_block(&self, block: &Block) -> &Condition {
        if block.plain {
            &self.plain_span
        } else {
            &self.any_span
        }
    }
}

fn span_filter(conn: &Connection, query: &TraceQuery) -> Result<SpanFilter, StoreError> {
    let mut sql = String::from(
        "FROM span_data s
         WHERE start_time >= make_timestamp_ns(?) AND start_time < make_timestamp_ns(?)",
    );
    let mut params = vec![
        Value::BigInt(query.from_ns),
        Value::BigInt(query.to_ns.saturating_add(SPAN_SLACK_NS)),
    ];
    if let Some(service) = &query.service {
        sql.push_str(" AND service_name = ?");
        params.push(Value::Text(service.clone()));
    }
    if let Some(operation) = &query.operation {
        sql.push_str(" AND span_name = ?");
        params.push(Value::Text(operation.clone()));
    }
    let mut any_span = Condition { sql, params };
    let mut plain_span = any_span.clone();
    for filter in &query.attributes {
        let equals = key_sets::attribute_equals(conn, &filter.key, &filter.value)?;
        for (form, condition) in [
            (&mut any_span, equals.any_span),
            (&mut plain_span, equals.plain_span),
        ] {
            form.sql.push_str(&format!(" AND {}", condition.sql));
            form.params.extend(condition.params);
        }
    }
    Ok(SpanFilter { any_span, plain_span })
}

/// The traces with a span matching every span-level filter in these blocks, as
/// [`FoundTraces`] entries: one scan per block, each pruned to its rowids.
fn matching_traces(
    conn: &Connection,
    filter: &SpanFilter,
    blocks: &[Block],
) -> Result<Vec<(String, i64)>, StoreError> {
    let branches: Vec<String> = blocks
        .iter()
        .map(|block| {
            format!(
                "SELECT trace_id, start_time {} AND {}",
                filter.for_block(block).sql,
                block.spans.condition()
            )
        })
        .collect();
    let sql = format!(
        "SELECT CAST(trace_id AS VARCHAR), min(epoch_ns(start_time)) FROM ({}) GROUP BY trace_id",
        branches.join(" UNION ALL ")
    );
    let all_params = blocks.iter().flat_map(|block| &filter.for_block(block).params);
    let mut statement = conn.prepare(&sql)?;
    let found = statement
        .query_map(duckdb::params_from_iter(all_params), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(found)
}

/// The summaries of matching traces, in the query's order, limited.
fn summaries(
    conn: &Connection,
    query: &TraceQuery,
    spans: Option<SpanScope<'_>>,
) -> Result<Vec<TraceSummary>, StoreError> {
    let Some(SpanScope::Traces(found)) = spans else {
        return Ok(summaries_among(conn, query, spans, None)?.0);
    };
    // Found traces are looked up among the summaries starting near their matching spans
    // first; a CTE the optimizer must materialize keeps it from merging the other filters in
    // and scanning every summary instead. Only when that misses a trace, among all of them.
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<&str> = found.keys().map(String::as_str).collect();
    let list = format!("'{}'", list.join("', '"));
    let found_where = |bounds: &str| {
        format!(
            "WITH found AS MATERIALIZED (SELECT * FROM trace_summaries WHERE trace_id IN ({list}){bounds}) "
        )
    };
    let earliest = found.values().copied().min().unwrap_or_default();
    let latest = found.values().copied().max().unwrap_or_default();
    let near = found_where(&format!(
        " AND start_time >= make_timestamp_ns({}) AND start_time <= make_timestamp_ns({latest})",
        earliest.saturating_sub(TRACE_START_MARGIN_NS)
    ));
    let (traces, looked_up) = summaries_among(conn, query, spans, Some(&near))?;
    if looked_up == Some(found.len() as u64) {
        return Ok(traces);
    }
    Ok(summaries_among(conn, query, spans, Some(&found_where("")))?.0)
}

/// The summaries in `trace_summaries`, or in the `found` that `found` defines (a `WITH`
/// clause), that match `query`, in its order, limited; and with any, how many `found` holds.
fn summaries_among(
    conn: &Connection,
    query: &TraceQuery,
    spans: Option<SpanScope<'_>>,
    found: Option<&str>,
) -> Result<(Vec<TraceSummary>, Option<u64>), StoreError> {
    let (prefix, table, found_count) = match found {
        Some(with) => (with, "found", "(SELECT count(*) FROM found)"),
        None => ("", "trace_summaries", "NULL"),
    };
    let mut sql = format!(
        "{prefix}SELECT replace(CAST(trace_id AS VARCHAR), '-', ''), epoch_ns(start_time), duration_ns,
                span_count, error_count, root_service, root_operation, root_has_parent,
                map_keys(services), map_values(services), {found_count}
         FROM {table}
         WHERE start_time >= make_timestamp_ns(?) AND start_time < make_timestamp_ns(?)",
    );
    let mut params = vec![Value::BigInt(query.from_ns), Value::BigInt(query.to_ns)];
    if query.errors_only {
        sql.push_str(" AND error_count > 0");
    }
    if let Some(Duration(min)) = query.min_duration {
        sql.push_str(" AND duration_ns >= ?");
        params.push(Value::BigInt(min));
    }
    if let Some(Duration(max)) = query.max_duration {
        sql.push_str(" AND duration_ns <= ?");
        params.push(Value::BigInt(max));
    }
    if let Some(service) = &query.service {
        sql.push_str(" AND map_contains(services, ?)");
        params.push(Value::Text(service.clone()));
    }
    if let Some(SpanScope::TimeRange(filter)) = spans {
        sql.push_str(&format!(
            " AND trace_id IN (SELECT trace_id {})",
            filter.any_span.sql
        ));
        params.extend(filter.any_span.params.iter().cloned());
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(query.order.order_by());
    sql.push_str(" LIMIT ?");
    params.push(Value::BigInt(query.limit.min(MAX_LIMIT) as i64));

    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query(duckdb::params_from_iter(params))?;
    let mut traces = Vec::new();
    let mut found_count = None;
    while let Some(row) = rows.next()? {
        found_count = row.get(10)?;
        let trace_id: String = row.get(0)?;
        let Ok(trace_id) = trace_id.parse() else {
            continue;
        };
        let names = texts(row.get(8)?);
        let counts = unsigned_list(row.get(9)?);
        traces.push(TraceSummary {
            trace_id,
            start_ns: row.get(1)?,
            duration_ns: row.get(2)?,
            span_count: row.get(3)?,
            error_count: row.get(4)?,
            root_service: row.get(5)?,
            root_operation: row.get(6)?,
            root_missing: row.get(7)?,
            services: names
                .into_iter()
                .zip(counts)
                .map(|(service, spans)| ServiceSpans { service, spans })
                .collect(),
        });
    }
    Ok((traces, found_count))
}

/// Every service that sent spans, by name.
pub fn services(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT DISTINCT service_name FROM resources")?;
    let names = statement.query_map([], |row| row.get(0))?;
    let mut names: Vec<String> = names.collect::<Result<_, _>>()?;
    // Sorted here, not in SQL: reading `DISTINCT`/`ORDER BY` results of two text columns
    // through the duckdb crate returned mangled strings (seen with DuckDB 1.5).
    names.sort_unstable();
    Ok(names)
}

/// Every operation of every service, by service and name.
pub fn operations(conn: &Connection) -> Result<Vec<Operation>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT service_name, span_name FROM operations")?;
    let operations = statement.query_map([], |row| {
        Ok(Operation {
            service: row.get(0)?,
            name: row.get(1)?,
        })
    })?;
    let mut operations: Vec<Operation> = operations.collect::<Result<_, _>>()?;
    operations.sort_unstable_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    operations.dedup();
    Ok(operations)
}

fn texts(value: Value) -> Vec<String> {
    match value {
        Value::List(items) | Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Text(text) => text,
                _ => String::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn unsigned_list(value: Value) -> Vec<u64> {
    match value {
        Value::List(items) | Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::UBigInt(n) => n,
                Value::BigInt(n) => n.max(0) as u64,
                _ => 0,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value: &str) -> AttributeFilter {
        AttributeFilter {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn attribute_filters_parse_plain_and_quoted_values() {
        let parsed =
            AttributeFilter::parse_list(r#" http.status_code=500  error=true msg="not \"found\"" e= "#);
        assert_eq!(
            parsed.unwrap(),
            vec![
                pair("http.status_code", "500"),
                pair("error", "true"),
                pair("msg", r#"not "found""#),
                pair("e", "")
            ]
        );
        assert_eq!(AttributeFilter::parse_list("").unwrap(), vec![]);
        for filter in [pair("a", "x y"), pair("b", r#"q"\"#), pair("c", "")] {
            let text = filter.to_string();
            assert_eq!(
                AttributeFilter::parse_list(&text).unwrap(),
                vec![filter],
                "{text}"
            );
        }
    }

    #[test]
    fn bad_attribute_filters_say_why() {
        let error = AttributeFilter::parse_list("status").unwrap_err().to_string();
        assert!(error.contains("key=value"), "{error}");
        let error = AttributeFilter::parse_list(r#"a="open"#).unwrap_err().to_string();
        assert!(error.contains("closing quote"), "{error}");
        assert!(AttributeFilter::parse_list("=x").is_err());
        assert!(AttributeFilter::parse_list(r#"a="x"b"#).is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!("150ms".parse(), Ok(Duration(150_000_000)));
        assert_eq!("2s".parse(), Ok(Duration(2_000_000_000)));
        assert_eq!("1.5m".parse(), Ok(Duration(90_000_000_000)));
        assert_eq!("250us".parse(), Ok(Duration(250_000)));
        assert_eq!(" 7 ns".parse(), Ok(Duration(7)));
        for bad in ["150", "ms", "1.2.3s", "5 parsecs", "-1s", "1e999s"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn later_scans_are_sized_by_the_yield_so_far() {
        // 9 of 20 traces from 16 blocks: the other 11 need about 20 more.
        assert_eq!(blocks_for_the_rest(9, 20, 16), 20);
        // Nearly full, or nothing found yet: the bounds.
        assert_eq!(blocks_for_the_rest(19, 20, 16), 4);
        assert_eq!(blocks_for_the_rest(0, 20, 16), MAX_SCAN_BLOCKS);
        // A full page whose order still needs older blocks checked.
        assert_eq!(blocks_for_the_rest(20, 20, 16), 4);
    }

    #[test]
    fn sort_orders_round_trip() {
        for order in TraceOrder::ALL {
            assert_eq!(order.as_str().parse(), Ok(order));
        }
        assert!("sideways".parse::<TraceOrder>().is_err());
    }
}
