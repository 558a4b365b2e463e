//! Service-to-service calls, found as spans arrive rather than by a self-join at query time.
//!
//! An indexer pass (indexer.rs) joins the spans committed since the last pass with their
//! parents or children from a bounded recent time window, and appends one `service_calls` row
//! per parent/child pair whose services differ. A pair is recorded in the pass in which its
//! later half arrives, so children exported before their parents (the usual order) are matched
//! too. The `service_edges` view rolls the calls up per minute.

use duckdb::Connection;

use crate::indexer::Pass;
use crate::StoreError;

/// Pairs whose child is new (rowid in `($1, $2]`), or whose parent is new and child older; each side's partner is looked for in a time window, pruned by zone maps.
const MATCH_NEW_SPANS: &str = "
INSERT INTO service_calls
WITH window_start AS (
    SELECT min(start_time) - INTERVAL 1 HOUR AS t FROM span_data WHERE rowid > $1 AND rowid <= $2
),
pairs AS (
    SELECT c.*, p.service_name AS caller
    FROM span_data c JOIN span_data p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
    WHERE c.rowid > $1 AND c.rowid <= $2
      AND p.rowid <= $2 AND p.start_time >= (SELECT t FROM window_start)
    UNION ALL
    SELECT c.*, p.service_name AS caller
    FROM span_data c JOIN span_data p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
    WHERE p.rowid > $1 AND p.rowid <= $2
      AND c.rowid <= $1 AND c.start_time >= (SELECT t FROM window_start)
)
SELECT start_time, caller, service_name, span_name, duration_ns, coalesce(status_code = 2, false), trace_id
FROM pairs
WHERE caller <> service_name";

/// The pass that fills `service_calls`; its watermark keeps the name of earlier versions.
pub(crate) const SERVICE_CALLS: Pass = Pass {
    name: "edges",
    run: match_new_spans,
};

fn match_new_spans(conn: &Connection, lo: i64, hi: i64) -> Result<i64, StoreError> {
    conn.prepare_cached(MATCH_NEW_SPANS)?.execute([lo, hi])?;
    Ok(hi)
}
