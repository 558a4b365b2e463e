//! Per-trace summaries (`trace_summaries`) and the list of operations (`operations`), kept up to
//! date as spans arrive so that trace search reads one row per trace instead of grouping spans.
//!
//! Each indexer pass summarizes the newly committed spans per trace and merges that with the
//! stored summary of the same trace: counts add up, the time span widens, the root is the
//! earliest span without a parent (or the earliest span while none has arrived). Spans of one
//! trace arriving minutes apart therefore cost nothing extra, however old the trace.

use duckdb::Connection;

use crate::indexer::Pass;
use crate::StoreError;

/// Summaries of the traces touched by spans with rowid in `($1, $2]`, merged with their stored
/// summaries, into the temporary table `touched_summaries`.
const MERGE_TOUCHED: &str = "
CREATE OR REPLACE TEMP TABLE touched_summaries AS
WITH fresh AS (
    SELECT trace_id,
           min(start_time) AS start_time,
           max(epoch_ns(start_time) + duration_ns) AS end_ns,
           count(*) AS span_count,
           count(*) FILTER (WHERE status_code = 2) AS error_count,
           arg_min(service_name, {'has_parent': parent_span_id IS NOT NULL, 'start': start_time}) AS root_service,
           arg_min(span_name, {'has_parent': parent_span_id IS NOT NULL, 'start': start_time}) AS root_operation,
           min({'has_parent': parent_span_id IS NOT NULL, 'start': start_time}) AS root_key,
           histogram(service_name) AS services
    FROM span_data
    WHERE rowid > $1 AND rowid <= $2
    GROUP BY trace_id
),
parts AS (
    SELECT * FROM fresh
    UNION ALL
    SELECT trace_id, start_time, epoch_ns(start_time) + duration_ns, span_count, error_count,
           root_service, root_operation, {'has_parent': root_has_parent, 'start': root_start}, services
    FROM trace_summaries
    WHERE trace_id IN (SELECT trace_id FROM fresh)
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
SELECT p.trace_id,
       min(p.start_time) AS start_time,
       max(p.end_ns) - epoch_ns(min(p.start_time)) AS duration_ns,
       CAST(sum(p.span_count) AS UBIGINT) AS span_count,
       CAST(sum(p.error_count) AS UBIGINT) AS error_count,
       arg_min(p.root_service, p.root_key) AS root_service,
       arg_min(p.root_operation, p.root_key) AS root_operation,
       min(p.root_key).has_parent AS root_has_parent,
       min(p.root_key).start AS root_start,
       any_value(c.services) AS services
FROM parts p JOIN service_counts c USING (trace_id)
GROUP BY p.trace_id";

const REPLACE_TOUCHED: &str = "
DELETE FROM trace_summaries WHERE trace_id IN (SELECT trace_id FROM touched_summaries);
INSERT INTO trace_summaries SELECT * FROM touched_summaries;
DROP TABLE touched_summaries;";

const NEW_OPERATIONS: &str = "
INSERT INTO operations
SELECT DISTINCT service_name, span_name FROM span_data WHERE rowid > $1 AND rowid <= $2
EXCEPT
SELECT service_name, span_name FROM operations";

/// The pass that keeps `trace_summaries` and `operations` current.
pub(crate) const TRACE_SUMMARIES: Pass = Pass {
    name: "summaries",
    source: "span_data",
    run: summarize_new_spans,
};

fn summarize_new_spans(conn: &Connection, lo: i64, hi: i64) -> Result<i64, StoreError> {
    conn.prepare_cached(MERGE_TOUCHED)?.execute([lo, hi])?;
    conn.execute_batch(REPLACE_TOUCHED)?;
    conn.prepare_cached(NEW_OPERATIONS)?.execute([lo, hi])?;
    Ok(hi)
}
