//! Service-to-service calls, found as spans arrive rather than by a self-join at query time.
//!
//! An indexer pass (indexer.rs) matches the spans committed since the last pass with their
//! parents or children among the spans that arrived shortly before ([`RecentCalls`], kept in
//! memory between passes), and appends one `service_calls` row per parent/child pair whose
//! services differ. A pair is recorded in the pass in which its later half arrives, so children
//! exported before their parents (the usual order) are matched too. The `service_edges` view
//! rolls the calls up per minute.
//!
//! A second pass folds the new calls into `service_call_minutes`: calls per minute, caller,
//! callee and latency bin, which is what the dependency graph reads. A day is then thousands
//! of rows instead of every call, and latency quantiles come from the bins (within 4.5%).

use std::sync::Arc;

use duckdb::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt32Array, UInt64Array, UInt8Array,
};
use duckdb::arrow::buffer::Buffer;
use duckdb::arrow::compute::take_record_batch;
use duckdb::arrow::datatypes::{Field, Schema};
// Randomly seeded like std's SipHash, so ids a client picks cannot collide on purpose, but
// several times faster on these keys; the window hashes each span up to five times.
use foldhash::HashMap;

use crate::batch::trace_id_field;
use crate::indexer::{NewSpans, Pass};
use crate::key_sets::column;
use crate::summaries::{failed_at, trace_id_at};
use crate::StoreError;

/// The pass that fills `service_calls`; its watermark keeps the name of earlier versions.
pub(crate) const SERVICE_CALLS: Pass = Pass {
    name: "edges",
    source: "span_data",
    columns: &CALL_COLUMNS,
    run: match_new_spans,
};

/// What a call is made of, of its two spans.
const CALL_COLUMNS: [&str; 8] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "service_name",
    "span_name",
    "start_time",
    "duration_ns",
    "status_code",
];

/// Spans per generation of [`RecentCalls`]: a span's parent or child is found if it arrived
/// within the last one to two generations, 448k to 896k spans (3 to 6 s at 150k spans/s,
/// minutes at common rates). Seven eighths of 512k: a hash map holding that many entries fits
/// in 512k slots (at most 7/8 full), 33 bytes each, where 512k entries took a million slots.
/// The self-join this replaces looked back an hour, scanning that hour of spans in every pass:
/// 17% of the server's CPU during sustained ingest, and growing with the rate.
const GENERATION_SPANS: usize = 7 * 64 * 1024;

/// Distinct service names a window holds at most before it starts over.
const MAX_SERVICES: usize = 100_000;

/// Rows read back from `span_data` at a time when the window is rebuilt.
const REBUILD_CHUNK_ROWS: i64 = 128 * 1024;

/// A span by trace id and span id; also a child's parent, by trace id and parent span id.
/// Eight-byte words: a `u128` would align the map's entries to 16 bytes and pad them to 48.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SpanKey {
    trace: [u64; 2],
    span: u64,
}

impl SpanKey {
    fn new(trace: u128, span: u64) -> Self {
        SpanKey {
            trace: [(trace >> 64) as u64, trace as u64],
            span,
        }
    }

    fn trace(&self) -> u128 {
        (u128::from(self.trace[0]) << 64) | u128::from(self.trace[1])
    }

    /// The key of span `span` in the same trace.
    fn with_span(self, span: u64) -> Self {
        SpanKey { span, ..self }
    }
}

/// A child span, with what its call row needs: `operation` borrowed from the pass's columns,
/// or owned while it waits for its parent.
struct Callee<S> {
    time_ns: i64,
    service: u32,
    operation: S,
    duration_ns: i64,
    error: bool,
}

impl Callee<&str> {
    fn owned(&self) -> Callee<Box<str>> {
        Callee {
            time_ns: self.time_ns,
            service: self.service,
            operation: self.operation.into(),
            duration_ns: self.duration_ns,
            error: self.error,
        }
    }
}

/// The window of recent spans the service-call pass matches new spans against, kept between
/// passes by the indexer. Two generations of each map: when the newer holds
/// [`GENERATION_SPANS`] spans, the older (and the children still waiting in it) is dropped.
#[derive(Default)]
pub(crate) struct RecentCalls {
    /// Each span's service, by trace and span id.
    services_by_span: [HashMap<SpanKey, u32>; 2],
    /// Children whose parent has not arrived, by trace and parent span id.
    waiting: [HashMap<SpanKey, Vec<Callee<Box<str>>>>; 2],
    /// Service names, interned: a window holds a handful of services over a million spans.
    services: Vec<Arc<str>>,
    service_ids: HashMap<Arc<str>, u32>,
    /// The last rowid taken in; the window holds what came before it. None until built.
    through: Option<i64>,
}

impl RecentCalls {
    /// Drops the window; the next pass rebuilds it from the table. Called after a pass whose
    /// calls may not have been stored.
    pub(crate) fn forget(&mut self) {
        *self = Self::default();
    }

    fn service_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.service_ids.get(name) {
            return id;
        }
        let name: Arc<str> = name.into();
        let id = self.services.len() as u32;
        self.services.push(name.clone());
        self.service_ids.insert(name, id);
        id
    }

    fn service_of(&self, key: &SpanKey) -> Option<u32> {
        self.services_by_span
            .iter()
            .find_map(|spans| spans.get(key).copied())
    }

    /// Takes in the spans of `batches` (consecutive rows of CALL_COLUMNS), adding to `calls`
    /// every pair they complete; with no `calls`, only fills the window.
    fn take_in(&mut self, batches: &[RecordBatch], mut calls: Option<&mut CallRows>) {
        if self.services.len() > MAX_SERVICES {
            // A client inventing service names without end would grow the names forever.
            *self = Self {
                through: self.through,
                ..Self::default()
            };
        }
        // Every span first, so that a child finds a parent in the same pass whatever the order.
        for batch in batches {
            let spans = Columns::of(batch);
            for row in 0..batch.num_rows() {
                if self.services_by_span[0].len() >= GENERATION_SPANS {
                    // The oldest generation is emptied for reuse: a new map would grow through
                    // every size again, each on freshly faulted pages (a fifth of the pass).
                    self.services_by_span.rotate_right(1);
                    self.services_by_span[0].clear();
                    self.waiting.rotate_right(1);
                    self.waiting[0].clear();
                }
                let service = self.service_id(spans.services.value(row));
                self.services_by_span[0].insert(spans.key(row), service);
            }
        }
        for batch in batches {
            let spans = Columns::of(batch);
            for row in 0..batch.num_rows() {
                let key = spans.key(row);
                let trace = key.trace();
                let service = self.service_id(spans.services.value(row));
                if spans.parents.is_valid(row) {
                    let parent = key.with_span(spans.parents.value(row));
                    let child = spans.callee(row, service);
                    match self.service_of(&parent) {
                        Some(caller) => {
                            if let Some(calls) = calls.as_deref_mut() {
                                calls.push(trace, &self.services, caller, &child);
                            }
                        }
                        None => {
                            self.waiting[0].entry(parent).or_default().push(child.owned());
                        }
                    }
                }
                for generation in &mut self.waiting {
                    let Some(children) = generation.remove(&key) else {
                        continue;
                    };
                    if let Some(calls) = calls.as_deref_mut() {
                        for child in &children {
                            calls.push(trace, &self.services, service, child);
                        }
                    }
                }
            }
        }
    }
}

/// The call columns of one batch of spans.
struct Columns<'a> {
    trace_ids: &'a ArrayRef,
    span_ids: &'a UInt64Array,
    parents: &'a UInt64Array,
    services: &'a StringArray,
    names: &'a StringArray,
    starts: &'a TimestampNanosecondArray,
    durations: &'a Int64Array,
    statuses: &'a UInt8Array,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Self {
        Self {
            trace_ids: batch.column(0),
            span_ids: column(batch.column(1)),
            parents: column(batch.column(2)),
            services: column(batch.column(3)),
            names: column(batch.column(4)),
            starts: column(batch.column(5)),
            durations: column(batch.column(6)),
            statuses: column(batch.column(7)),
        }
    }

    fn trace(&self, row: usize) -> u128 {
        u128::from_be_bytes(trace_id_at(self.trace_ids, row))
    }

    fn key(&self, row: usize) -> SpanKey {
        SpanKey::new(self.trace(row), self.span_ids.value(row))
    }

    fn callee(&self, row: usize, service: u32) -> Callee<&'a str> {
        Callee {
            time_ns: self.starts.value(row),
            service,
            operation: self.names.value(row),
            duration_ns: self.durations.value(row),
            error: failed_at(self.statuses, row),
        }
    }
}

/// `service_calls` rows, as columns.
#[derive(Default)]
struct CallRows {
    times: Vec<i64>,
    callers: StringBuilder,
    callees: StringBuilder,
    operations: StringBuilder,
    durations: Vec<i64>,
    errors: Vec<bool>,
    trace_ids: Vec<u8>,
}

impl CallRows {
    /// A call from service `caller` (of `services`) to `child`, if they are different services.
    fn push(&mut self, trace: u128, services: &[Arc<str>], caller: u32, child: &Callee<impl AsRef<str>>) {
        if caller == child.service {
            return;
        }
        self.times.push(child.time_ns);
        self.callers.append_value(&services[caller as usize]);
        self.callees.append_value(&services[child.service as usize]);
        self.operations.append_value(child.operation.as_ref());
        self.durations.push(child.duration_ns);
        self.errors.push(child.error);
        self.trace_ids.extend_from_slice(&trace.to_be_bytes());
    }

    /// The rows sorted by trace (stably, so a trace's calls keep their order): DuckDB then
    /// stores each trace id once per run of its calls, which takes the table from 5.4 to 3.7
    /// bytes a span at 10M spans.
    fn finish(mut self) -> Result<RecordBatch, StoreError> {
        let mut order: Vec<u32> = (0..self.times.len() as u32).collect();
        order.sort_by_key(|&row| &self.trace_ids[16 * row as usize..][..16]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(self.times)),
            Arc::new(self.callers.finish()),
            Arc::new(self.callees.finish()),
            Arc::new(self.operations.finish()),
            Arc::new(Int64Array::from(self.durations)),
            Arc::new(BooleanArray::from(self.errors)),
            Arc::new(FixedSizeBinaryArray::new(
                16,
                Buffer::from_vec(self.trace_ids),
                None,
            )),
        ];
        let names = [
            "time",
            "caller",
            "callee",
            "callee_operation",
            "duration_ns",
            "error",
        ];
        let mut fields: Vec<Field> = names
            .into_iter()
            .zip(&columns)
            .map(|(name, array)| Field::new(name, array.data_type().clone(), false))
            .collect();
        fields.push(trace_id_field());
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok(take_record_batch(&batch, &UInt32Array::from(order))?)
    }
}

fn match_new_spans(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let mut recent = new_spans.recent_calls.borrow_mut();
    if recent.through != Some(lo) {
        rebuild(new_spans, &mut recent, lo)?;
    }
    let mut calls = CallRows::default();
    recent.take_in(&new_spans.columns(lo + 1..=hi, &CALL_COLUMNS)?, Some(&mut calls));
    recent.through = Some(hi);
    let calls = calls.finish()?;
    if calls.num_rows() > 0 {
        let mut appender = new_spans.conn.appender("service_calls")?;
        appender.append_record_batch(calls)?;
        appender.flush()?;
    }
    Ok(hi)
}

/// Fills the window afresh with the spans up to rowid `through`, from the writer's columns or
/// read back from the table: after a start, or after a pass that failed.
fn rebuild(new_spans: &NewSpans<'_>, recent: &mut RecentCalls, through: i64) -> Result<(), StoreError> {
    recent.forget();
    let mut from = (through + 1 - 2 * GENERATION_SPANS as i64).max(0);
    while from <= through {
        let to = (from + REBUILD_CHUNK_ROWS - 1).min(through);
        recent.take_in(&new_spans.columns(from..=to, &CALL_COLUMNS)?, None);
        from = to + 1;
    }
    recent.through = Some(through);
    Ok(())
}

/// The latency bin of a call lasting `duration_ns`: eight bins per doubling, so a bin's upper
/// bound is 9% above its lower one and its geometric middle within 4.5% of either.
pub(crate) const LATENCY_BIN: &str = "CAST(floor(8 * log2(greatest(duration_ns, 1))) AS SMALLINT)";

/// The duration that stands for bin `bin`: its geometric middle.
pub(crate) fn bin_duration_ns(bin: &str) -> String {
    format!("pow(2, ({bin} + 0.5) / 8)")
}

/// The calls with rowid in `($1, $2]` merged with the stored rows of the same minute, edge and
/// bin, into the temporary table `touched_call_minutes`.
const MERGE_NEW_CALLS: &str = "
CREATE OR REPLACE TEMP TABLE touched_call_minutes AS
WITH fresh AS (
    SELECT date_trunc('minute', time) AS minute, caller, callee, {bin} AS latency_bin,
           count(*) AS calls, count(*) FILTER (WHERE error) AS errors,
           max(duration_ns) AS slowest_ns, arg_max(trace_id, duration_ns) AS slowest_trace
    FROM service_calls
    WHERE rowid > $1 AND rowid <= $2
    GROUP BY ALL
)
SELECT minute, caller, callee, latency_bin, CAST(sum(calls) AS UBIGINT) AS calls,
       CAST(sum(errors) AS UBIGINT) AS errors, max(slowest_ns) AS slowest_ns,
       arg_max(slowest_trace, slowest_ns) AS slowest_trace
FROM (
    SELECT * FROM fresh
    UNION ALL
    SELECT stored.* FROM service_call_minutes stored
    SEMI JOIN fresh USING (minute, caller, callee, latency_bin)
)
GROUP BY ALL";

/// Inserted in key order, in which the table compresses 20% better than in hash order.
const REPLACE_TOUCHED: &str = "
DELETE FROM service_call_minutes stored USING touched_call_minutes touched
WHERE stored.minute = touched.minute AND stored.caller = touched.caller
  AND stored.callee = touched.callee AND stored.latency_bin = touched.latency_bin;
INSERT INTO service_call_minutes SELECT * FROM touched_call_minutes
ORDER BY minute, caller, callee, latency_bin;
DROP TABLE touched_call_minutes;";

/// The pass that keeps `service_call_minutes` current; it follows `service_calls`.
pub(crate) const SERVICE_CALL_MINUTES: Pass = Pass {
    name: "call_minutes",
    source: "service_calls",
    columns: &[],
    run: roll_up_new_calls,
};

fn roll_up_new_calls(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let conn = new_spans.conn;
    conn.prepare_cached(&MERGE_NEW_CALLS.replace("{bin}", LATENCY_BIN))?
        .execute([lo, hi])?;
    conn.execute_batch(REPLACE_TOUCHED)?;
    Ok(hi)
}
