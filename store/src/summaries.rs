//! Per-trace summaries (`trace_summaries`) and the list of operations (`operations`), kept up to
//! date as spans arrive so that trace search reads one row per trace instead of grouping spans.
//!
//! Each indexer pass summarizes the newly committed spans per trace, in Rust over their columns
//! (about fifteen times fewer rows than spans come out), and merges that with the stored
//! summary of the same trace: counts add up, the time span widens, the root is the earliest span
//! without a parent (or the earliest span while none has arrived). Spans of one trace arriving
//! minutes apart therefore cost nothing extra, however old the trace.
//!
//! Finding the stored summaries to merge with must not read every stored trace id, or each
//! pass costs more as the store grows. A Bloom filter of the summarized trace ids
//! ([`SummarizedTraces`]) tells most new traces apart; the others are looked for among the
//! summaries that start near them, and among all older ones only for what that misses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;

use duckdb::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, ListArray, MapBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampNanosecondArray, UInt64Array, UInt64Builder, UInt8Array,
};
use duckdb::arrow::buffer::Buffer;
use duckdb::arrow::compute::{filter_record_batch, not};
use duckdb::arrow::datatypes::{Field, Schema};
use duckdb::{Appender, Connection};

use crate::batch::trace_id_field;
use crate::bloom::{trace_hash, ONE_IN_10_000};
use crate::indexer::{widest, NewSpans, Pass};
use crate::key_sets::column;
use crate::StoreError;

/// The pass that keeps `trace_summaries` and `operations` current.
pub(crate) const TRACE_SUMMARIES: Pass = Pass {
    name: "summaries",
    source: "span_data",
    columns: &SPAN_COLUMNS,
    run: summarize_new_spans,
};

/// The columns a summary is made of.
const SPAN_COLUMNS: [&str; 9] = [
    "trace_id",
    "start_time",
    "duration_ns",
    "parent_span_id",
    "status_code",
    "service_name",
    "span_name",
    "events",
    "links",
];

/// A pass's summaries of traces that may have a stored summary land here first (same columns
/// as `trace_summaries`), one row per trace; `stored_parts` gets the stored summaries of those
/// that do, and where they are.
const FRESH_TABLES: &str = "
CREATE TEMP TABLE IF NOT EXISTS fresh_summaries AS SELECT * FROM trace_summaries LIMIT 0;
CREATE TEMP TABLE IF NOT EXISTS stored_parts AS
    SELECT rowid AS stored_rowid, * FROM trace_summaries LIMIT 0;
CREATE TEMP TABLE IF NOT EXISTS fresh_operations AS SELECT * FROM operations LIMIT 0;";

/// The stored and fresh parts of the traces with both, merged and stored (the stored parts are
/// deleted first).
const MERGE_PARTS: &str = "
CREATE OR REPLACE TEMP TABLE touched_summaries AS
WITH parts AS (
    SELECT * FROM fresh_summaries SEMI JOIN stored_parts USING (trace_id)
    UNION ALL
    SELECT * EXCLUDE (stored_rowid) FROM stored_parts
),
keyed AS (
    SELECT *, epoch_ns(start_time) + duration_ns AS end_ns,
           {'has_parent': root_has_parent, 'start': root_start} AS root_key
    FROM parts
),
service_counts AS (
    SELECT trace_id, map_from_entries(list({'key': service, 'value': spans} ORDER BY service)) AS services
    FROM (
        SELECT trace_id, entry.key AS service, CAST(sum(entry.value) AS UBIGINT) AS spans
        FROM parts, unnest(map_entries(parts.services)) AS e(entry)
        GROUP BY ALL
    )
    GROUP BY trace_id
)
SELECT k.trace_id,
       min(k.start_time) AS start_time,
       max(k.end_ns) - epoch_ns(min(k.start_time)) AS duration_ns,
       CAST(sum(k.span_count) AS UBIGINT) AS span_count,
       CAST(sum(k.error_count) AS UBIGINT) AS error_count,
       arg_min(k.root_service, k.root_key) AS root_service,
       arg_min(k.root_operation, k.root_key) AS root_operation,
       min(k.root_key).has_parent AS root_has_parent,
       min(k.root_key).start AS root_start,
       any_value(c.services) AS services,
       CASE WHEN count(k.spans_with_events_or_links) = count(*)
            THEN CAST(sum(k.spans_with_events_or_links) AS UBIGINT) END AS spans_with_events_or_links
FROM keyed k JOIN service_counts c USING (trace_id)
GROUP BY k.trace_id;
INSERT INTO trace_summaries SELECT * FROM touched_summaries;
DROP TABLE touched_summaries;";

/// The fresh summaries of traces not stored after all (the filter's false positives) stored as
/// they are, and the temporary tables emptied.
const STORE_UNMATCHED: &str = "
INSERT INTO trace_summaries SELECT * FROM fresh_summaries ANTI JOIN stored_parts USING (trace_id);
DELETE FROM fresh_summaries;
DELETE FROM stored_parts;";

const STORE_OPERATIONS: &str = "
INSERT INTO operations SELECT * FROM fresh_operations EXCEPT SELECT * FROM operations;
DELETE FROM fresh_operations;";

/// How long before the earliest fresh part of a trace its stored summary is looked for by
/// start time first. Zone maps skip the summaries that start earlier, which are most of them:
/// spans of one trace arrive close together, and summaries are stored in arrival order.
const STORED_START_MARGIN_NS: i64 = 60_000_000_000;

/// Fresh parts starting longer than this before the newest one (a long trace, a late exporter)
/// do not widen that scan; their stored summaries are found by a scan of the older ones.
const START_WINDOW_NS: i64 = 600_000_000_000;

fn summarize_new_spans(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let mut summaries = Summaries::default();
    for batch in new_spans.columns(lo + 1..=hi, &SPAN_COLUMNS)? {
        summaries.add(&batch);
    }
    let conn = new_spans.conn;
    let mut summarized = new_spans.summarized_traces.borrow_mut();
    summarized.make_room(conn, summaries.traces.len())?;
    let fresh = summaries.finish(&mut summarized)?;
    conn.execute_batch(FRESH_TABLES)?;
    let temp_table = |table| conn.appender_to_catalog_and_db(table, "temp", "main");
    append(temp_table("fresh_operations")?, &fresh.operations)?;
    if let Some(starts) = fresh.maybe_stored_starts {
        append(temp_table("fresh_summaries")?, &fresh.maybe_stored)?;
        if let Some(oldest) = find_stored_parts(conn, starts)? {
            // Bounded by start time, so that zone maps skip most of the table.
            conn.execute(
                &format!(
                    "DELETE FROM trace_summaries WHERE start_time >= make_timestamp_ns({oldest})
                     AND rowid IN (SELECT stored_rowid FROM stored_parts)"
                ),
                [],
            )?;
            conn.execute_batch(MERGE_PARTS)?;
        }
        conn.execute_batch(STORE_UNMATCHED)?;
    }
    append(conn.appender("trace_summaries")?, &fresh.new)?;
    conn.execute_batch(STORE_OPERATIONS)?;
    Ok(hi)
}

fn append(mut appender: Appender<'_>, rows: &RecordBatch) -> Result<(), StoreError> {
    if rows.num_rows() > 0 {
        appender.append_record_batch(rows.clone())?;
        appender.flush()?;
    }
    Ok(())
}

/// Copies the stored summary, and its rowid, of every trace in `fresh_summaries` that has one
/// into `stored_parts`; returns the earliest start among them. `starts` is the range of the
/// fresh parts' starts. First among the summaries starting near them, then, only if that missed
/// any trace, among the older ones: a scan of their trace ids, ~120 ms at 10M traces, which the
/// few traces spanning minutes and the filter's false positives (1 in 10,000) cost.
fn find_stored_parts(conn: &Connection, starts: RangeInclusive<i64>) -> Result<Option<i64>, StoreError> {
    let (earliest, newest) = starts.into_inner();
    let from = earliest
        .max(newest.saturating_sub(START_WINDOW_NS))
        .saturating_sub(STORED_START_MARGIN_NS);
    let copy = |condition: &str| {
        conn.execute(
            &format!(
                "INSERT INTO stored_parts SELECT rowid, * FROM trace_summaries
                 WHERE {condition} AND trace_id IN (SELECT trace_id FROM fresh_summaries)"
            ),
            [],
        )
    };
    copy(&format!("start_time >= make_timestamp_ns({from})"))?;
    let missed: bool = conn.query_row(
        "SELECT EXISTS (FROM fresh_summaries ANTI JOIN stored_parts USING (trace_id))",
        [],
        |row| row.get(0),
    )?;
    if missed {
        copy(&format!("start_time < make_timestamp_ns({from})"))?;
    }
    Ok(
        conn.query_row("SELECT min(epoch_ns(start_time)) FROM stored_parts", [], |row| {
            row.get(0)
        })?,
    )
}

/// Which traces have a stored summary, as a Bloom filter of their ids in memory: the summaries
/// of traces it has never held are appended without looking for a stored one. Looking every
/// fresh trace up among the stored summaries scanned them all, a cost that grew with the
/// store.
#[derive(Default)]
pub(crate) struct SummarizedTraces {
    /// None until the first pass reads the stored trace ids.
    filter: Option<Vec<u8>>,
    /// About how many trace ids the filter holds (false positives go uncounted).
    held: usize,
}

/// Traces a filter is sized for at least; 4 MiB.
const MIN_FILTER_TRACES: usize = 1 << 20;

impl SummarizedTraces {
    /// Makes the filter hold every stored trace and room for `adding` more: built from the
    /// stored trace ids on the first pass, and again, twice as large, once it is full. A pass
    /// that fails after putting its traces in leaves only false positives, which the lookups
    /// sort out.
    fn make_room(&mut self, conn: &Connection, adding: usize) -> Result<(), StoreError> {
        if self
            .filter
            .as_ref()
            .is_some_and(|filter| self.held + adding <= ONE_IN_10_000.capacity(filter))
        {
            return Ok(());
        }
        let stored: usize = conn.query_row("SELECT count(*) FROM trace_summaries", [], |row| row.get(0))?;
        let mut filter = ONE_IN_10_000.empty((2 * (stored + adding)).max(MIN_FILTER_TRACES));
        let mut statement = conn.prepare("SELECT trace_id FROM trace_summaries")?;
        for batch in statement.query_arrow([])? {
            let ids = batch.column(0);
            for row in 0..batch.num_rows() {
                ONE_IN_10_000.insert(&mut filter, trace_hash(&trace_id_at(ids, row)));
            }
        }
        tracing::debug!(stored, bytes = filter.len(), "summarized trace ids read");
        self.filter = Some(filter);
        self.held = stored;
        Ok(())
    }

    /// Puts `trace_id` in; whether it may have been there already.
    fn put(&mut self, trace_id: &[u8; 16]) -> bool {
        let filter = self.filter.as_mut().expect("make_room comes first");
        let hash = trace_hash(trace_id);
        let held = ONE_IN_10_000.holds(filter, hash);
        if !held {
            ONE_IN_10_000.insert(filter, hash);
            self.held += 1;
        }
        held
    }
}

/// A pass's summaries, split by whether the trace may have a stored one to merge with.
struct FreshSummaries {
    maybe_stored: RecordBatch,
    /// The range of their starts; None when there are none.
    maybe_stored_starts: Option<RangeInclusive<i64>>,
    new: RecordBatch,
    operations: RecordBatch,
}

/// What the new spans of one trace add to its summary.
struct TracePart {
    start: i64,
    end: i64,
    spans: u64,
    errors: u64,
    with_events_or_links: u64,
    /// (has a parent, start): the root is the least.
    root_key: (bool, i64),
    root_service: String,
    root_operation: String,
    services: BTreeMap<String, u64>,
}

/// The new spans of a pass, summarized per trace, plus their (service, operation) pairs.
#[derive(Default)]
struct Summaries {
    traces: HashMap<[u8; 16], TracePart>,
    /// Span names by service.
    operations: HashMap<String, HashSet<String>>,
}

/// The status code of a failed span.
const STATUS_ERROR: u8 = 2;

/// Whether the span of `row` failed, by its stored status code.
pub(crate) fn failed_at(statuses: &UInt8Array, row: usize) -> bool {
    statuses.is_valid(row) && statuses.value(row) == STATUS_ERROR
}

impl Summaries {
    fn add(&mut self, batch: &RecordBatch) {
        let trace_ids = batch.column(0);
        let starts = column::<TimestampNanosecondArray>(batch.column(1));
        let durations = column::<Int64Array>(batch.column(2));
        let parents = column::<UInt64Array>(batch.column(3));
        let statuses = column::<UInt8Array>(batch.column(4));
        let services = column::<StringArray>(batch.column(5));
        let names = column::<StringArray>(batch.column(6));
        let (events, links) = (
            column::<ListArray>(batch.column(7)),
            column::<ListArray>(batch.column(8)),
        );
        for row in 0..batch.num_rows() {
            let start = starts.value(row);
            let end = start + durations.value(row);
            let failed = failed_at(statuses, row);
            let root_key = (parents.is_valid(row), start);
            let (service, name) = (services.value(row), names.value(row));
            let part = self
                .traces
                .entry(trace_id_at(trace_ids, row))
                .or_insert_with(|| TracePart {
                    start,
                    end,
                    spans: 0,
                    errors: 0,
                    with_events_or_links: 0,
                    root_key,
                    root_service: service.to_string(),
                    root_operation: name.to_string(),
                    services: BTreeMap::new(),
                });
            part.start = part.start.min(start);
            part.end = part.end.max(end);
            part.spans += 1;
            part.errors += u64::from(failed);
            let nested = events.value_length(row) > 0 || links.value_length(row) > 0;
            part.with_events_or_links += u64::from(nested);
            if root_key < part.root_key {
                part.root_key = root_key;
                part.root_service = service.to_string();
                part.root_operation = name.to_string();
            }
            match part.services.get_mut(service) {
                Some(count) => *count += 1,
                None => {
                    part.services.insert(service.to_string(), 1);
                }
            }
            let names_here = match self.operations.get_mut(service) {
                Some(names) => names,
                None => self.operations.entry(service.to_string()).or_default(),
            };
            if !names_here.contains(name) {
                names_here.insert(name.to_string());
            }
        }
    }

    /// The summaries and operations to store; each trace is put in `summarized` on the way.
    fn finish(self, summarized: &mut SummarizedTraces) -> Result<FreshSummaries, StoreError> {
        let mut trace_ids = Vec::with_capacity(self.traces.len() * 16);
        let (mut starts, mut durations, mut spans, mut errors) = (vec![], vec![], vec![], vec![]);
        let mut with_events_or_links = Vec::with_capacity(self.traces.len());
        let (mut root_services, mut root_operations) = (StringBuilder::new(), StringBuilder::new());
        let (mut root_has_parent, mut root_starts) = (vec![], vec![]);
        let mut services = MapBuilder::new(None, StringBuilder::new(), UInt64Builder::new());
        let mut maybe_stored = Vec::with_capacity(self.traces.len());
        let mut maybe_stored_starts: Option<RangeInclusive<i64>> = None;
        for (trace_id, part) in self.traces {
            trace_ids.extend_from_slice(&trace_id);
            let may_be_stored = summarized.put(&trace_id);
            maybe_stored.push(may_be_stored);
            if may_be_stored {
                let starts = part.start..=part.start;
                maybe_stored_starts = Some(match maybe_stored_starts {
                    Some(range) => widest(&range, &starts),
                    None => starts,
                });
            }
            starts.push(part.start);
            durations.push(part.end - part.start);
            spans.push(part.spans);
            errors.push(part.errors);
            with_events_or_links.push(part.with_events_or_links);
            root_services.append_value(&part.root_service);
            root_operations.append_value(&part.root_operation);
            root_has_parent.push(part.root_key.0);
            root_starts.push(part.root_key.1);
            for (service, count) in part.services {
                services.keys().append_value(service);
                services.values().append_value(count);
            }
            services.append(true)?;
        }
        let summaries: Vec<ArrayRef> = vec![
            Arc::new(FixedSizeBinaryArray::new(16, Buffer::from_vec(trace_ids), None)),
            Arc::new(TimestampNanosecondArray::from(starts)),
            Arc::new(Int64Array::from(durations)),
            Arc::new(UInt64Array::from(spans)),
            Arc::new(UInt64Array::from(errors)),
            Arc::new(root_services.finish()),
            Arc::new(root_operations.finish()),
            Arc::new(BooleanArray::from(root_has_parent)),
            Arc::new(TimestampNanosecondArray::from(root_starts)),
            Arc::new(services.finish()),
            Arc::new(UInt64Array::from(with_events_or_links)),
        ];
        let names = [
            "trace_id",
            "start_time",
            "duration_ns",
            "span_count",
            "error_count",
            "root_service",
            "root_operation",
            "root_has_parent",
            "root_start",
            "services",
            "spans_with_events_or_links",
        ];
        let fields: Vec<Field> = names
            .into_iter()
            .zip(&summaries)
            .map(|(name, array)| match name {
                "trace_id" => trace_id_field(),
                _ => Field::new(name, array.data_type().clone(), true),
            })
            .collect();
        let summaries = RecordBatch::try_new(Arc::new(Schema::new(fields)), summaries)?;
        let (operation_services, operation_names): (Vec<String>, Vec<String>) = self
            .operations
            .into_iter()
            .flat_map(|(service, names)| names.into_iter().map(move |name| (service.clone(), name)))
            .unzip();
        let operations = RecordBatch::try_from_iter([
            (
                "service_name",
                Arc::new(StringArray::from(operation_services)) as ArrayRef,
            ),
            ("span_name", Arc::new(StringArray::from(operation_names))),
        ])?;
        let maybe_stored = BooleanArray::from(maybe_stored);
        Ok(FreshSummaries {
            new: filter_record_batch(&summaries, &not(&maybe_stored)?)?,
            maybe_stored: filter_record_batch(&summaries, &maybe_stored)?,
            maybe_stored_starts,
            operations,
        })
    }
}

/// The trace id of a row as 16 bytes (see `NewSpans::columns`).
pub(crate) fn trace_id_at(trace_ids: &ArrayRef, row: usize) -> [u8; 16] {
    column::<FixedSizeBinaryArray>(trace_ids.as_ref())
        .value(row)
        .try_into()
        .expect("trace ids are 16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_NS: i64 = 3_600_000_000_000;
    const NOW_NS: i64 = 1_796_400_000_000_000_000;

    /// A store in memory with the summarizer's tables, on the indexer's kind of connection.
    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&crate::schema::ddl()).unwrap();
        let conn = crate::indexer::Indexer::connection(&conn).unwrap();
        conn.execute_batch(FRESH_TABLES).unwrap();
        conn
    }

    /// Trace ids 00…01, 00…02 and so on.
    fn trace_id(n: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[12..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// Adds to `table` the summary of one span of trace `n`, starting at `start_ns`.
    fn summarize(conn: &Connection, table: &str, n: u32, start_ns: i64) {
        conn.execute(
            &format!(
                "INSERT INTO {table} VALUES (CAST(? AS UUID), make_timestamp_ns(?), 5, 1, 0, 'shop',
                     'GET', false, make_timestamp_ns(?), MAP {{'shop': 1}}, 0)"
            ),
            duckdb::params![hex::encode(trace_id(n)), start_ns, start_ns],
        )
        .unwrap();
    }

    fn stored_parts(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT CAST(trace_id AS VARCHAR) FROM stored_parts ORDER BY trace_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn uuid_text(n: u32) -> String {
        let hex = hex::encode(trace_id(n));
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    #[test]
    fn stored_parts_are_found_near_the_fresh_starts_and_further_back() {
        let conn = store();
        // 1 started with the fresh parts, 2 two hours before them, 3 is not fresh; 4 is fresh
        // but not stored (as a false positive of the filter would be).
        summarize(&conn, "trace_summaries", 1, NOW_NS);
        summarize(&conn, "trace_summaries", 2, NOW_NS - 2 * HOUR_NS);
        summarize(&conn, "trace_summaries", 3, NOW_NS - 2 * HOUR_NS);
        for n in [1, 2, 4] {
            summarize(&conn, "fresh_summaries", n, NOW_NS + 1_000);
        }
        let oldest = find_stored_parts(&conn, NOW_NS + 1_000..=NOW_NS + 1_000).unwrap();
        assert_eq!(oldest, Some(NOW_NS - 2 * HOUR_NS));
        assert_eq!(stored_parts(&conn), [uuid_text(1), uuid_text(2)]);
    }

    #[test]
    fn the_filter_holds_the_traces_stored_before_it_was_made() {
        let conn = store();
        summarize(&conn, "trace_summaries", 1, NOW_NS);
        let mut summarized = SummarizedTraces::default();
        summarized.make_room(&conn, 10).unwrap();
        assert!(summarized.put(&trace_id(1)), "stored before");
        assert!(!summarized.put(&trace_id(2)), "new");
        assert!(summarized.put(&trace_id(2)), "put in just now");
        // Full: rebuilt from the table, which does not hold trace 2 yet, so a false positive
        // is the worst it can give.
        let capacity = ONE_IN_10_000.capacity(summarized.filter.as_ref().unwrap());
        summarized.make_room(&conn, capacity).unwrap();
        assert!(summarized.put(&trace_id(1)));
        assert!(ONE_IN_10_000.capacity(summarized.filter.as_ref().unwrap()) > capacity);
    }
}
