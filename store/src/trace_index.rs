//! A Bloom filter of the trace ids of every block of spans (blocks.rs), so that reading a trace
//! reads only the blocks that may hold it.
//!
//! Trace ids are random, so zone maps cannot find a trace's spans. An ART index on
//! `trace_summaries(trace_id)` did, but DuckDB kept the parts of it a commit touched in memory
//! until a checkpoint, about 42 bytes per trace, which past ~7M traces stopped span commits at
//! the default memory limit; on disk it took 2.8 bytes per span. A filter lets through 1 in
//! 10,000 blocks without the trace. Every lookup tests them all, so all are kept in memory.
//!
//! A filter also holds [`nested_hash`] of the traces with a span that has events or links in
//! the block, so a read of a trace without any skips those two columns: reading them took a
//! sixth of the read at 10M spans. With ~550 traces per block, half of them with an event, a
//! filter takes 4 KiB (0.5 bytes per span, 4.8 MiB at 10M spans).

use std::ops::RangeInclusive;
use std::sync::Mutex;

use duckdb::arrow::array::{ListArray, RecordBatch, TimestampNanosecondArray};
use duckdb::Connection;

use crate::blocks;
use crate::bloom::{self, ONE_IN_10_000};
use crate::indexer::{NewSpans, Pass, SpanRange};
use crate::key_sets;
use crate::reader::Catalog;
use crate::summaries::trace_id_at;
use crate::StoreError;

const BLOCK_COLUMNS: [&str; 4] = ["trace_id", "start_time", "events", "links"];

/// The pass that keeps a filter for every block with spans, the last one as far as it is filled:
/// a filter for full blocks only left up to 8,191 spans to every read (0.7 ms at 10M spans).
pub(crate) const TRACE_BLOOMS: Pass = Pass {
    name: "trace_blooms",
    source: "span_data",
    columns: &BLOCK_COLUMNS,
    run: index_new_spans,
};

/// Builds the filter of every block with spans among rowids `(lo, hi]`, from the block's first
/// span: a block partly indexed by an earlier pass gets its filter replaced.
fn index_new_spans(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let conn = new_spans.conn;
    let mut replace = conn.prepare_cached("DELETE FROM trace_blooms WHERE block = ?")?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO trace_blooms (block, spans, first_start, last_start, bloom)
         VALUES (?, ?, make_timestamp_ns(?), make_timestamp_ns(?), CAST(? AS BIT))",
    )?;
    let touched = (lo + 1) / blocks::BLOCK_ROWS..hi / blocks::BLOCK_ROWS + 1;
    blocks::index_blocks(new_spans, touched, hi, &BLOCK_COLUMNS, |block, batches| {
        let mut hashes = Vec::with_capacity(blocks::BLOCK_ROWS as usize);
        let mut starts = blocks::Starts::default();
        for batch in batches {
            let ids = batch.column(0);
            let events = key_sets::column::<ListArray>(batch.column(2));
            let links = key_sets::column::<ListArray>(batch.column(3));
            for row in 0..batch.num_rows() {
                let trace_id = trace_id_at(ids, row);
                hashes.push(bloom::trace_hash(&trace_id));
                if events.value_length(row) > 0 || links.value_length(row) > 0 {
                    hashes.push(nested_hash(&trace_id));
                }
            }
            starts.add(key_sets::column::<TimestampNanosecondArray>(batch.column(1)));
        }
        if *blocks::rowids(block).start() <= lo {
            replace.execute([block])?;
        }
        let spans: usize = batches.iter().map(RecordBatch::num_rows).sum();
        insert.execute(duckdb::params![
            block,
            spans as i64,
            starts.first,
            starts.last,
            ONE_IN_10_000.filter_of(hashes)
        ])?;
        Ok(())
    })?;
    Ok(hi)
}

/// The element a block's filter holds for a trace with a span that has events or links there:
/// the hash of its id followed by a 1 byte.
fn nested_hash(trace_id: &[u8; 16]) -> u64 {
    bloom::fnv1a(trace_id.iter().copied().chain([1]))
}

/// Spans that may belong to a trace.
pub(crate) struct TraceSpans {
    pub spans: SpanRange,
    /// Whether some of the trace's spans among them may have events or links.
    pub events_or_links: bool,
}

/// One block's stored filter, as the reader's catalog keeps it.
pub(crate) struct TraceBlock {
    block: i64,
    /// The last span the filter covers: the block's last but in the newest block.
    last_rowid: i64,
    starts: RangeInclusive<i64>,
    filter: Box<[u8]>,
}

/// Reads the stored filters of the spans before rowid `before` that `catalog` lacks. A store
/// reads them as it opens, not on the first trace read: 17 ms at 10M spans.
pub(crate) fn read_filters(conn: &Connection, catalog: &mut Catalog, before: i64) -> Result<(), StoreError> {
    let known = &mut catalog.trace_blocks;
    if known.last().map_or(-1, |last| last.last_rowid) + 1 >= before {
        return Ok(());
    }
    // The newest block known may have grown since: read again, and replace it only once the
    // read has succeeded, so a failed read leaves every block known.
    let mut from = known.last().map_or(0, |last| last.block);
    let mut statement = conn.prepare_cached(
        "SELECT block, spans, epoch_ns(first_start), epoch_ns(last_start), CAST(bloom AS BLOB)
         FROM trace_blooms WHERE block >= ? ORDER BY block LIMIT ?",
    )?;
    let mut stored = Vec::new();
    loop {
        let read = statement
            .query_map(duckdb::params![from, blocks::FILTERS_PER_READ], |row| {
                let block: i64 = row.get(0)?;
                Ok(TraceBlock {
                    block,
                    last_rowid: *blocks::rowids(block).start() + row.get::<_, i64>(1)? - 1,
                    starts: row.get(2)?..=row.get(3)?,
                    filter: row.get::<_, Vec<u8>>(4)?.into(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let more = read.len() == blocks::FILTERS_PER_READ;
        from = read.last().map_or(from, |last| last.block + 1);
        stored.extend(read);
        if !more {
            break;
        }
    }
    known.pop();
    known.extend(stored);
    Ok(())
}

/// The spans before rowid `before` in blocks whose filter may hold `trace_id`, oldest first.
pub(crate) fn candidate_blocks(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    trace_id: &[u8; 16],
    before: i64,
) -> Result<Vec<TraceSpans>, StoreError> {
    let mut catalog = catalog.lock().unwrap_or_else(|e| e.into_inner());
    read_filters(conn, &mut catalog, before)?;
    let (hash, nested) = (bloom::trace_hash(trace_id), nested_hash(trace_id));
    Ok(catalog
        .trace_blocks
        .iter()
        .take_while(|known| *blocks::rowids(known.block).start() < before)
        .filter(|known| ONE_IN_10_000.holds(&known.filter, hash))
        .map(|known| TraceSpans {
            // A filter stored after `before` was taken may cover later spans, which the
            // caller reads as not yet indexed.
            spans: SpanRange {
                rowids: *blocks::rowids(known.block).start()..=known.last_rowid.min(before - 1),
                starts: known.starts.clone(),
            },
            events_or_links: ONE_IN_10_000.holds(&known.filter, nested),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_of_more_blocks_than_one_read_takes_are_all_read() {
        let conn = Connection::open_in_memory().unwrap();
        let count = 2 * blocks::FILTERS_PER_READ as i64 + 1;
        conn.execute_batch(&format!(
            "CREATE TABLE trace_blooms (block BIGINT, spans BIGINT, first_start TIMESTAMP_NS,
                                        last_start TIMESTAMP_NS, bloom BIT);
             INSERT INTO trace_blooms SELECT i, {rows}, make_timestamp_ns(i), make_timestamp_ns(i + 1),
                 CAST(CASE WHEN i % 2 = 0 THEN '10000000' ELSE '01000000' END AS BIT)
             FROM range({count}) t(i);",
            rows = blocks::BLOCK_ROWS
        ))
        .unwrap();
        let mut catalog = Catalog::default();
        read_filters(&conn, &mut catalog, count * blocks::BLOCK_ROWS).unwrap();
        let known = &catalog.trace_blocks;
        assert_eq!(known.len(), count as usize);
        assert!(known.iter().enumerate().all(|(i, block)| block.block == i as i64));
        assert_eq!(*known[count as usize - 1].filter, [0x80]);
        assert_eq!(*known[count as usize - 2].filter, [0x40]);
    }
}
