//! Blocks of [`BLOCK_ROWS`] spans by rowid (block `b` holds rowids `b * BLOCK_ROWS` and up), the
//! unit of the stored Bloom filters of attribute pairs (attribute_index.rs) and of trace ids
//! (trace_index.rs). Spans get consecutive rowids and are never deleted, so a block's spans
//! never change once the writer has filled it.

use std::ops::{Range, RangeInclusive};

use duckdb::arrow::array::{RecordBatch, TimestampNanosecondArray};

use crate::indexer::{NewSpans, SpanRange};
use crate::StoreError;

/// Spans per block: four DuckDB vectors. Smaller blocks prune finer but cost more filters.
pub(crate) const BLOCK_ROWS: i64 = 8192;

/// Stored filters read per query. DuckDB holds a query's whole result in its memory: a day of
/// 100M spans' attribute filters (12,200 blocks, 195 MiB) read in one query ran out of the
/// default 300MB, and every attribute search failed. 1,024 attribute filters take 16 MiB,
/// trace filters 4 MiB.
pub(crate) const FILTERS_PER_READ: usize = 1_024;

/// Blocks whose spans are read back from the table in one query. Block by block, the query's
/// own cost came first: reading events and links took 2.3 µs a span for 8,192 spans and 0.36
/// for 65,536; the attribute columns 1.0 and 0.31.
const READ_BLOCKS: i64 = 8;

/// Runs `index` on every block filled among rowids `(lo, hi]` (after a pass's watermark `lo`)
/// with its spans' `columns`, and returns the pass's new watermark: the last rowid of the last
/// full block, or `lo`.
pub(crate) fn index_filled(
    new_spans: &NewSpans<'_>,
    (lo, hi): (i64, i64),
    columns: &[&str],
    index: impl FnMut(i64, &[RecordBatch]) -> Result<(), StoreError>,
) -> Result<i64, StoreError> {
    let blocks = (lo + 1) / BLOCK_ROWS..(hi + 1) / BLOCK_ROWS;
    if blocks.is_empty() {
        return Ok(lo);
    }
    let last = blocks.end * BLOCK_ROWS - 1;
    index_blocks(new_spans, blocks, last, columns, index)?;
    Ok(last)
}

/// Runs `index` on each of `blocks` with the `columns` of its spans up to rowid `last`, in
/// rowid order, which DuckDB keeps for a scan of one table (`preserve_insertion_order`).
pub(crate) fn index_blocks(
    new_spans: &NewSpans<'_>,
    blocks: Range<i64>,
    last: i64,
    columns: &[&str],
    mut index: impl FnMut(i64, &[RecordBatch]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut first = blocks.start;
    while first < blocks.end {
        let end = (first + READ_BLOCKS).min(blocks.end);
        let rows = first * BLOCK_ROWS..=(end * BLOCK_ROWS - 1).min(last);
        let (mut block, mut rowid) = (first, *rows.start());
        let mut parts = Vec::new();
        for batch in new_spans.columns(rows.clone(), columns)? {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let block_end = (block + 1) * BLOCK_ROWS;
                let take = ((block_end - rowid) as usize).min(batch.num_rows() - offset);
                parts.push(batch.slice(offset, take));
                offset += take;
                rowid += take as i64;
                if rowid == block_end {
                    index(block, &parts)?;
                    parts.clear();
                    block += 1;
                }
            }
        }
        debug_assert_eq!(rowid, rows.end() + 1, "every span of the blocks read");
        if !parts.is_empty() {
            index(block, &parts)?;
        }
        first = end;
    }
    Ok(())
}

/// The rowids of `block`.
pub(crate) fn rowids(block: i64) -> RangeInclusive<i64> {
    block * BLOCK_ROWS..=(block + 1) * BLOCK_ROWS - 1
}

/// The spans of `block`, which start within `starts`.
pub(crate) fn spans(block: i64, starts: RangeInclusive<i64>) -> SpanRange {
    SpanRange {
        rowids: rowids(block),
        starts,
    }
}

/// The earliest and latest start of a block's spans, as stored beside its filter.
pub(crate) struct Starts {
    pub first: i64,
    pub last: i64,
}

impl Default for Starts {
    fn default() -> Self {
        Starts {
            first: i64::MAX,
            last: i64::MIN,
        }
    }
}

impl Starts {
    pub(crate) fn add(&mut self, starts: &TimestampNanosecondArray) {
        for start in starts.iter().flatten() {
            self.first = self.first.min(start);
            self.last = self.last.max(start);
        }
    }
}
