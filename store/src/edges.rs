//! Service-to-service calls, found as spans arrive rather than by a self-join at query time.
//!
//! A background pass every few seconds joins the spans committed since the last pass (a rowid
//! watermark: the single writer appends with increasing rowids) with their parents or children
//! from a bounded recent time window, and appends one `service_calls` row per parent/child pair
//! whose services differ. A pair is recorded in the pass in which its later half arrives, so
//! children exported before their parents (the usual order) are matched too. The
//! `service_edges` view rolls the calls up per minute.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use duckdb::Connection;

use crate::StoreError;

/// How often new spans are matched.
pub const PASS_INTERVAL: Duration = Duration::from_secs(2);

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

/// The running matcher; `stop` makes one last pass and ends it.
pub(crate) struct EdgeIndexer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl EdgeIndexer {
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new().name("edge-indexer".into()).spawn(move || loop {
            if let Err(error) = pass(&conn) {
                tracing::warn!(%error, "matching service calls failed; retrying next pass");
            }
            match stopped.recv_timeout(PASS_INTERVAL) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    if let Err(error) = pass(&conn).and_then(|()| Ok(conn.execute_batch("CHECKPOINT")?)) {
                        tracing::warn!(%error, "the last service-call pass failed; it reruns at next start");
                    }
                    break;
                }
            }
        })?;
        Ok(Self { stop, thread })
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the edge indexer panicked");
        }
    }
}

/// Matches everything committed since the watermark, and moves the watermark, atomically.
fn pass(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = (|| {
        let lo: i64 = conn.query_row(
            "SELECT coalesce(max(CAST(value AS BIGINT)), -1) FROM ducktrace_meta WHERE key = 'edges_rowid_watermark'",
            [],
            |row| row.get(0),
        )?;
        let hi: i64 = conn.query_row("SELECT coalesce(max(rowid), -1) FROM span_data", [], |row| {
            row.get(0)
        })?;
        if hi > lo {
            conn.prepare_cached(MATCH_NEW_SPANS)?.execute([lo, hi])?;
            conn.execute(
                "INSERT OR REPLACE INTO ducktrace_meta VALUES ('edges_rowid_watermark', ?)",
                [hi.to_string()],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => conn.execute_batch("ROLLBACK")?,
    }
    result
}
