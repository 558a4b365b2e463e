//! Per-trace summaries (`trace_summaries`) and the list of operations (`operations`), kept up to
//! date as spans arrive so that trace search reads one row per trace instead of grouping spans.
//!
//! Each indexer pass summarizes the newly committed spans per trace, in Rust over their columns
//! (about fifteen times fewer rows than spans come out), and merges that with the stored
//! summary of the same trace: counts add up, the time span widens, the root is the earliest span
//! without a parent (or the earliest span while none has arrived). Spans of one trace arriving
//! minutes apart therefore cost nothing extra, however old the trace.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use duckdb::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, ListArray, MapBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampNanosecondArray, UInt64Array, UInt64Builder, UInt8Array,
};
use duckdb::arrow::buffer::Buffer;
use duckdb::arrow::datatypes::{Field, Schema};

use crate::batch::trace_id_field;
use crate::indexer::{NewSpans, Pass};
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

/// A pass's summaries land here first (same columns as `trace_summaries`), one row per trace.
const FRESH_TABLES: &str = "
CREATE TEMP TABLE IF NOT EXISTS fresh_summaries AS SELECT * FROM trace_summaries LIMIT 0;
CREATE TEMP TABLE IF NOT EXISTS fresh_operations AS SELECT * FROM operations LIMIT 0;";

/// Traces both fresh and stored, merged, into the temporary table `touched_summaries`; then
/// the stored rows replaced by the merged ones and the traces new to the store added.
const MERGE_FRESH: &str = "
CREATE OR REPLACE TEMP TABLE touched_summaries AS
WITH parts AS (
    SELECT * FROM fresh_summaries SEMI JOIN trace_summaries USING (trace_id)
    UNION ALL
    SELECT * FROM trace_summaries SEMI JOIN fresh_summaries USING (trace_id)
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
DELETE FROM trace_summaries WHERE trace_id IN (SELECT trace_id FROM touched_summaries);
INSERT INTO trace_summaries SELECT * FROM touched_summaries;
INSERT INTO trace_summaries SELECT * FROM fresh_summaries ANTI JOIN touched_summaries USING (trace_id);
DROP TABLE touched_summaries;
DELETE FROM fresh_summaries;
INSERT INTO operations SELECT * FROM fresh_operations EXCEPT SELECT * FROM operations;
DELETE FROM fresh_operations;";

fn summarize_new_spans(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let mut summaries = Summaries::default();
    for batch in new_spans.columns(lo + 1..=hi, &SPAN_COLUMNS)? {
        summaries.add(&batch);
    }
    let conn = new_spans.conn;
    conn.execute_batch(FRESH_TABLES)?;
    let (traces, operations) = summaries.finish()?;
    for (table, rows) in [("fresh_summaries", traces), ("fresh_operations", operations)] {
        let mut appender = conn.appender_to_catalog_and_db(table, "temp", "main")?;
        appender.append_record_batch(rows)?;
        appender.flush()?;
    }
    conn.execute_batch(MERGE_FRESH)?;
    Ok(hi)
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

    /// Rows for `fresh_summaries` and `fresh_operations`.
    fn finish(self) -> Result<(RecordBatch, RecordBatch), StoreError> {
        let mut trace_ids = Vec::with_capacity(self.traces.len() * 16);
        let (mut starts, mut durations, mut spans, mut errors) = (vec![], vec![], vec![], vec![]);
        let mut with_events_or_links = Vec::with_capacity(self.traces.len());
        let (mut root_services, mut root_operations) = (StringBuilder::new(), StringBuilder::new());
        let (mut root_has_parent, mut root_starts) = (vec![], vec![]);
        let mut services = MapBuilder::new(None, StringBuilder::new(), UInt64Builder::new());
        for (trace_id, part) in self.traces {
            trace_ids.extend_from_slice(&trace_id);
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
        Ok((summaries, operations))
    }
}

/// The trace id of a row as 16 bytes (see `NewSpans::columns`).
pub(crate) fn trace_id_at(trace_ids: &ArrayRef, row: usize) -> [u8; 16] {
    column::<FixedSizeBinaryArray>(trace_ids.as_ref())
        .value(row)
        .try_into()
        .expect("trace ids are 16 bytes")
}
