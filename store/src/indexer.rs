//! Background passes that index spans as they arrive, so that reads never aggregate every span.
//!
//! Every [`PASS_INTERVAL`] one thread runs each [`Pass`] over the spans committed since that
//! pass last ran: a rowid watermark per pass (the single writer appends with increasing rowids),
//! moved in the same transaction as the pass's own writes, so a crash repeats a pass, never
//! skips one. `stop` runs a last round and checkpoints.

use std::ops::RangeInclusive;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use duckdb::Connection;

use crate::StoreError;

/// How often new spans are indexed.
pub const PASS_INTERVAL: Duration = Duration::from_secs(2);

/// One incremental index: `run` folds the rows of `source` with rowid in `(lo, hi]` into its
/// tables and returns the last rowid it has indexed (`hi`, or less when it indexes whole blocks
/// only).
pub(crate) struct Pass {
    /// Names the pass in logs and its watermark in `ducktrace_meta` (`<name>_rowid_watermark`).
    pub name: &'static str,
    /// The append-only table the pass follows: `span_data`, or one an earlier pass fills.
    pub source: &'static str,
    pub run: fn(&Connection, i64, i64) -> Result<i64, StoreError>,
}

impl Pass {
    /// The `ducktrace_meta` key of the last rowid this pass has indexed.
    fn watermark_key(&self) -> String {
        format!("{}_rowid_watermark", self.name)
    }

    /// The rowids of `source` committed but not yet indexed by this pass, if any: what the pass
    /// runs over next, and what readers look at directly meanwhile. Sources are append-only
    /// (rowids `0..count`), so the count bounds the range: a bare `rowid >` filter makes DuckDB
    /// visit every row group, even for no rows.
    pub(crate) fn unindexed(&self, conn: &Connection) -> Result<Option<RangeInclusive<i64>>, StoreError> {
        // Cached per connection: trace reads and searches ask this first, every time.
        let (watermark, last): (i64, i64) = conn
            .prepare_cached(&format!(
                "SELECT (SELECT coalesce(max(CAST(value AS BIGINT)), -1) FROM ducktrace_meta WHERE key = ?),
                        (SELECT count(*) - 1 FROM {})",
                self.source
            ))?
            .query_row([self.watermark_key()], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok((last > watermark).then_some(watermark + 1..=last))
    }
}

/// The running indexer thread.
pub(crate) struct Indexer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Indexer {
    pub(crate) fn start(conn: Connection, passes: &'static [Pass]) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel();
        let round = move |conn: &Connection| {
            for pass in passes {
                if let Err(error) = run_pass(conn, pass) {
                    tracing::warn!(%error, pass = pass.name, "indexing new spans failed; retrying next pass");
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("span-indexer".into())
            .spawn(move || loop {
                round(&conn);
                match stopped.recv_timeout(PASS_INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                        round(&conn);
                        if let Err(error) = conn.execute_batch("CHECKPOINT") {
                            tracing::warn!(%error, "checkpoint after the last indexing pass failed");
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
            tracing::error!("the span indexer panicked");
        }
    }
}

/// Runs `pass` over everything committed since its watermark, and moves the watermark, atomically.
fn run_pass(conn: &Connection, pass: &Pass) -> Result<(), StoreError> {
    crate::in_transaction(conn, || {
        if let Some(new) = pass.unindexed(conn)? {
            let lo = new.start() - 1;
            let started = std::time::Instant::now();
            let indexed = (pass.run)(conn, lo, *new.end())?;
            tracing::debug!(pass = pass.name, rows = new.end() - lo, elapsed = ?started.elapsed(), "indexed");
            if indexed > lo {
                conn.execute(
                    "INSERT OR REPLACE INTO ducktrace_meta VALUES (?, ?)",
                    [pass.watermark_key(), indexed.to_string()],
                )?;
            }
        }
        Ok(())
    })
}
