//! Service-to-service calls, found as spans arrive rather than by a self-join at query time.
//!
//! An indexer pass (indexer.rs) joins the spans committed since the last pass with their
//! parents or children from a bounded recent time window, and appends one `service_calls` row
//! per parent/child pair whose services differ. A pair is recorded in the pass in which its
//! later half arrives, so children exported before their parents (the usual order) are matched
//! too. The `service_edges` view rolls the calls up per minute.
//!
//! A second pass folds the new calls into `service_call_minutes`: calls per minute, caller,
//! callee and latency bin, which is what the dependency graph reads. A day is then thousands
//! of rows instead of every call, and latency quantiles come from the bins (within 4.5%).

use duckdb::arrow::array::TimestampNanosecondArray;

use crate::indexer::{NewSpans, Pass};
use crate::key_sets::column;
use crate::StoreError;

/// Pairs whose child is new (rowid in `({lo}, {hi}]`), or whose parent is new and child older;
/// each side's partner is looked for from `{window_start}` (ns) on. The bounds are inlined
/// constants: DuckDB prunes row groups by zone maps only for constants, and with the window as a
/// subquery every pass read the partners' columns of the whole table.
const MATCH_NEW_SPANS: &str = "
INSERT INTO service_calls
WITH pairs AS (
    SELECT c.*, p.service_name AS caller
    FROM span_data c JOIN span_data p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
    WHERE c.rowid > {lo} AND c.rowid <= {hi}
      AND p.rowid <= {hi} AND p.start_time >= make_timestamp_ns({window_start})
    UNION ALL
    SELECT c.*, p.service_name AS caller
    FROM span_data c JOIN span_data p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
    WHERE p.rowid > {lo} AND p.rowid <= {hi}
      AND c.rowid <= {lo} AND c.start_time >= make_timestamp_ns({window_start})
)
SELECT start_time, caller, service_name, span_name, duration_ns, coalesce(status_code = 2, false), trace_id
FROM pairs
WHERE caller <> service_name";

/// The pass that fills `service_calls`; its watermark keeps the name of earlier versions.
pub(crate) const SERVICE_CALLS: Pass = Pass {
    name: "edges",
    source: "span_data",
    columns: &START_COLUMN,
    run: match_new_spans,
};

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

const REPLACE_TOUCHED: &str = "
DELETE FROM service_call_minutes stored USING touched_call_minutes touched
WHERE stored.minute = touched.minute AND stored.caller = touched.caller
  AND stored.callee = touched.callee AND stored.latency_bin = touched.latency_bin;
INSERT INTO service_call_minutes SELECT * FROM touched_call_minutes;
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

/// How far back a new span's parent or child is looked for.
const PARTNER_WINDOW_NS: i64 = 3_600_000_000_000;

/// What the partner window is set from: the new spans' earliest start.
const START_COLUMN: [&str; 1] = ["start_time"];

fn match_new_spans(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let earliest = new_spans
        .columns(lo + 1..=hi, &START_COLUMN)?
        .iter()
        .flat_map(|batch| {
            column::<TimestampNanosecondArray>(batch.column(0))
                .iter()
                .flatten()
        })
        .min();
    if let Some(earliest) = earliest {
        let window_start = earliest.saturating_sub(PARTNER_WINDOW_NS);
        new_spans.conn.execute_batch(
            &MATCH_NEW_SPANS
                .replace("{lo}", &lo.to_string())
                .replace("{hi}", &hi.to_string())
                .replace("{window_start}", &window_start.to_string()),
        )?;
    }
    Ok(hi)
}
