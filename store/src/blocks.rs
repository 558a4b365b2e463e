//! Blocks of [`BLOCK_ROWS`] spans by rowid (block `b` holds rowids `b * BLOCK_ROWS` and up), the
//! unit of the stored Bloom filters of attribute pairs (attribute_index.rs) and of trace ids
//! (trace_index.rs). Spans get consecutive rowids and are never deleted, so a block's filter is
//! built once, when the writer has filled it; the spans after the last full block are few and
//! always read directly.

use std::ops::RangeInclusive;

use duckdb::arrow::array::TimestampNanosecondArray;

use crate::indexer::SpanRange;
use crate::StoreError;

/// Spans per block: four DuckDB vectors. Smaller blocks prune finer but cost more filters.
pub(crate) const BLOCK_ROWS: i64 = 8192;

/// Runs `index` on every block filled among rowids `(lo, hi]` (after a pass's watermark `lo`)
/// and returns the pass's new watermark: the last rowid of the last full block, or `lo`.
pub(crate) fn index_filled(
    lo: i64,
    hi: i64,
    index: impl FnMut(i64) -> Result<(), StoreError>,
) -> Result<i64, StoreError> {
    let blocks = (lo + 1) / BLOCK_ROWS..(hi + 1) / BLOCK_ROWS;
    if blocks.is_empty() {
        return Ok(lo);
    }
    let end = blocks.end;
    blocks.into_iter().try_for_each(index)?;
    Ok(end * BLOCK_ROWS - 1)
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
