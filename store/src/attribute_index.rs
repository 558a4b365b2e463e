//! A Bloom filter of the `key = value` attribute pairs of every block of spans (blocks.rs), so
//! an attribute search reads only the blocks that may hold the pair.
//!
//! Values like `user.id` are spread over the whole day, so zone maps cannot prune them, and
//! scanning every span's attribute values costs seconds at 10M spans. Pairs are hashed in Rust
//! ([`bloom`]), so stored filters stay valid across DuckDB versions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use duckdb::arrow::array::{Array, ListArray, StringArray, TimestampNanosecondArray, UInt32Array};
use duckdb::Connection;

use crate::blocks::{self, BLOCK_ROWS};
use crate::bloom::{self, ONE_PERCENT};
use crate::columns::span_values;
use crate::indexer::{NewSpans, Pass, SpanRange};
use crate::key_sets;
use crate::reader::{self, Catalog};
use crate::StoreError;

/// What a block's filter is made of: each span's key set, values and start time. The pairs are
/// put together and hashed here: unnesting and de-duplicating them in SQL took four times longer.
const BLOCK_COLUMNS: [&str; 5] = [
    "attribute_key_set",
    "attribute_text",
    "attribute_values",
    "start_time",
    "attribute_keys",
];

/// The pass that adds a filter for every block the writer has filled since the last pass.
pub(crate) const ATTRIBUTE_BLOOMS: Pass = Pass {
    name: "attribute_blooms",
    source: "span_data",
    columns: &BLOCK_COLUMNS,
    run: index_full_blocks,
};

fn index_full_blocks(new_spans: &NewSpans<'_>, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let conn = new_spans.conn;
    // Each key's part of its pairs' hashes, hashed once per pass: a third of the pass's time
    // went to hashing.
    let key_hashes: HashMap<u32, Vec<u64>> = key_sets::stored_key_sets(conn, None)?
        .iter()
        .map(|(id, keys)| (*id, keys.iter().map(|key| key_hash(key)).collect()))
        .collect();
    let mut insert = conn.prepare_cached(
        "INSERT INTO attribute_blooms (block, first_start, last_start, bloom, plain)
         VALUES (?, make_timestamp_ns(?), make_timestamp_ns(?), CAST(? AS BIT), ?)",
    )?;
    blocks::index_filled(new_spans, (lo, hi), &BLOCK_COLUMNS, |block, batches| {
        let mut hashes = Vec::new();
        let mut starts = blocks::Starts::default();
        let mut plain = true;
        for batch in batches {
            let ids = key_sets::column::<UInt32Array>(batch.column(0));
            let texts = key_sets::column::<StringArray>(batch.column(1));
            let lists = key_sets::column::<ListArray>(batch.column(2));
            let inline = key_sets::column::<ListArray>(batch.column(4));
            for row in 0..batch.num_rows() {
                let values = span_values(texts, lists, row);
                let mut add = |key_hash: u64, value: Option<&str>| {
                    if let Some(value) = value {
                        hashes.push(bloom::fnv1a_on(key_hash, value.bytes()));
                    }
                };
                plain &= ids.is_valid(row) && texts.is_valid(row);
                if ids.is_valid(row) {
                    let id = ids.value(row);
                    let keys = key_hashes.get(&id).ok_or(StoreError::Dangling {
                        table: "attribute_key_sets",
                        id,
                    })?;
                    keys.iter().zip(values).for_each(|(&key, value)| add(key, value));
                } else {
                    let keys = inline.value(row);
                    let keys = key_sets::column::<StringArray>(&keys);
                    keys.iter()
                        .flatten()
                        .zip(values)
                        .for_each(|(key, value)| add(key_hash(key), value));
                }
            }
            starts.add(key_sets::column::<TimestampNanosecondArray>(batch.column(3)));
        }
        insert.execute(duckdb::params![
            block,
            starts.first,
            starts.last,
            ONE_PERCENT.filter_of(hashes),
            plain
        ])?;
        Ok(())
    })
}

/// Marks the blocks indexed before filters recorded whether a block is plain; once per store.
pub(crate) fn mark_plain_blocks(conn: &Connection) -> Result<(), StoreError> {
    let unmarked: i64 = conn.query_row(
        "SELECT count(*) FROM attribute_blooms WHERE plain IS NULL",
        [],
        |row| row.get(0),
    )?;
    if unmarked > 0 {
        conn.execute(
            &format!(
                "UPDATE attribute_blooms b SET plain = p.plain
                 FROM (SELECT rowid // {BLOCK_ROWS} AS block,
                              bool_and(attribute_key_set IS NOT NULL AND attribute_text IS NOT NULL) AS plain
                       FROM span_data GROUP BY block) p
                 WHERE b.block = p.block AND b.plain IS NULL"
            ),
            [],
        )?;
    }
    Ok(())
}

/// The hash of `key`, a NUL, and `value`.
fn pair_hash(key: &str, value: &str) -> u64 {
    bloom::fnv1a_on(key_hash(key), value.bytes())
}

/// The hash of `key` and a NUL, where the hashes of its pairs go on from.
fn key_hash(key: &str) -> u64 {
    bloom::fnv1a(key.bytes().chain([0]))
}

/// Spans that may hold an attribute pair.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub spans: SpanRange,
    /// Every span has its values joined in `attribute_text` and a stored key set, so a search
    /// can use the faster condition (`key_sets::AttributeEquals`).
    pub plain: bool,
}

/// The blocks whose filter may hold `key` = `value` and whose spans started between `from_ns`
/// and `to_ns`, newest first, after the `unfiltered` spans (always a candidate). Filters are
/// tested here, from the reader's catalog: each is read from the store once.
pub(crate) fn candidate_blocks(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    unfiltered: Option<SpanRange>,
    key: &str,
    value: &str,
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<Block>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT block, epoch_ns(first_start), epoch_ns(last_start), coalesce(plain, false)
         FROM attribute_blooms
         WHERE last_start >= make_timestamp_ns(?) AND first_start < make_timestamp_ns(?)
         ORDER BY block DESC",
    )?;
    let in_range: Vec<(u32, i64, i64, bool)> = statement
        .query_map([from_ns, to_ns], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let filters = reader::cached(
        catalog,
        |catalog| &mut catalog.block_filters,
        in_range.iter().map(|(block, ..)| *block).collect(),
        |blocks| stored_filters(conn, blocks),
    )?;
    let hash = pair_hash(key, value);
    let tail = unfiltered.map(|spans| Block { spans, plain: false });
    let filtered = in_range
        .into_iter()
        .filter(|(block, ..)| {
            filters
                .get(block)
                .is_some_and(|filter| ONE_PERCENT.holds(filter, hash))
        })
        .map(|(block, earliest, latest, plain)| Block {
            spans: blocks::spans(block.into(), earliest..=latest),
            plain,
        });
    Ok(tail.into_iter().chain(filtered).collect())
}

/// The stored filters of blocks `wanted`, as bytes in `BIT` order.
fn stored_filters(conn: &Connection, wanted: &[u32]) -> Result<HashMap<u32, Arc<[u8]>>, StoreError> {
    let mut filters = HashMap::with_capacity(wanted.len());
    for some in wanted.chunks(blocks::FILTERS_PER_READ) {
        let mut statement = conn.prepare(&format!(
            "SELECT block, CAST(bloom AS BLOB) FROM attribute_blooms WHERE block IN ({})",
            reader::id_list(some)
        ))?;
        for filter in statement.query_map([], |row| Ok((row.get(0)?, row.get::<_, Vec<u8>>(1)?.into())))? {
            let (block, bits) = filter?;
            filters.insert(block, bits);
        }
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_indexed_before_the_plain_flag_are_marked() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE span_data AS
                 SELECT CAST(1 AS UINTEGER) AS attribute_key_set, 'a' AS attribute_text FROM range(3 * {BLOCK_ROWS});
             UPDATE span_data SET attribute_text = NULL WHERE rowid = {BLOCK_ROWS} + 5;
             UPDATE span_data SET attribute_key_set = NULL WHERE rowid = 3 * {BLOCK_ROWS} - 1;
             CREATE TABLE attribute_blooms (block BIGINT, plain BOOLEAN);
             INSERT INTO attribute_blooms VALUES (0, NULL), (1, NULL), (2, NULL);"
        ))
        .unwrap();
        mark_plain_blocks(&conn).unwrap();
        let marked: Vec<bool> = conn
            .prepare("SELECT plain FROM attribute_blooms ORDER BY block")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marked, [true, false, false]);
    }

    #[test]
    fn filters_of_more_blocks_than_one_read_takes_are_all_read() {
        let conn = Connection::open_in_memory().unwrap();
        let count = 2 * blocks::FILTERS_PER_READ as u32 + 1;
        conn.execute_batch(&format!(
            "CREATE TABLE attribute_blooms (block BIGINT, bloom BIT);
             INSERT INTO attribute_blooms SELECT i, CAST(CASE WHEN i % 2 = 0 THEN '10000000' ELSE '01000000' END AS BIT)
             FROM range({count}) t(i);"
        ))
        .unwrap();
        let wanted: Vec<u32> = (0..count).collect();
        let filters = stored_filters(&conn, &wanted).unwrap();
        assert_eq!(filters.len(), count as usize);
        assert_eq!(*filters[&(count - 1)], [0x80]);
        assert_eq!(*filters[&(count - 2)], [0x40]);
    }

    #[test]
    fn key_and_value_are_separated() {
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
    }

    #[test]
    fn a_pair_hashes_as_stored_filters_were_built() {
        let whole = bloom::fnv1a(b"user.id\0u-42".iter().copied());
        assert_eq!(pair_hash("user.id", "u-42"), whole);
    }
}
