//! Reading span attributes, which are stored as the id of their key list plus the values in
//! that order (`KeySetColumn` in columns.rs; the keys inline past the writer's limit of key
//! sets), without building maps.
//!
//! DuckDB's `map()` costs about 2 µs per row, so `map(keys, values)['k']` over 10M spans takes
//! 20 s; the value's position looked up per key set reads the same spans in well under one.

use std::collections::HashMap;
use std::sync::Arc;

use duckdb::arrow::array::{Array, ListArray, StringArray, UInt32Array};
use duckdb::types::Value;
use duckdb::Connection;

use crate::StoreError;

/// The keys of the stored key sets with these ids, or of all of them.
pub(crate) fn stored_key_sets(
    conn: &Connection,
    ids: Option<&[u32]>,
) -> Result<HashMap<u32, Arc<[String]>>, StoreError> {
    let filter = match ids {
        Some(ids) => format!(" WHERE key_set_id IN ({})", crate::reader::id_list(ids)),
        None => String::new(),
    };
    let mut statement = conn.prepare(&format!(
        "SELECT key_set_id, keys FROM attribute_key_sets{filter}"
    ))?;
    let mut key_sets = HashMap::new();
    for batch in statement.query_arrow([])? {
        let ids = column::<UInt32Array>(batch.column(0));
        let lists = column::<ListArray>(batch.column(1));
        for row in 0..batch.num_rows() {
            let keys = lists.value(row);
            let keys = column::<StringArray>(&keys);
            key_sets.insert(ids.value(row), keys.iter().flatten().map(String::from).collect());
        }
    }
    Ok(key_sets)
}

/// A column of a query whose types the SQL fixes.
pub(crate) fn column<T: Array + 'static>(array: &dyn Array) -> &T {
    array
        .as_any()
        .downcast_ref::<T>()
        .expect("the query fixes the column types")
}

/// A condition on the `span_data s` row, as SQL and its parameters.
#[derive(Clone)]
pub(crate) struct Condition {
    pub sql: String,
    pub params: Vec<Value>,
}

/// The two forms of the condition that attribute `key` of the `span_data s` row has value text
/// `value`. Read it in the same transaction as the spans, so that it covers every key set they
/// use.
pub(crate) struct AttributeEquals {
    /// Holds for any span. The value's position comes from a list literal indexed by key set
    /// id, so that a scan needs no join, or from the span's own keys when its key set was not
    /// stored.
    pub any_span: Condition,
    /// Holds only for spans with joined value texts and a stored key set, as in a plain block
    /// (attribute_index.rs). It reads no list column, and its substring test is a filter DuckDB
    /// runs inside the scan, skipping the other columns of every vector without the value: a
    /// block scan costs about half of what `any_span` does.
    pub plain_span: Condition,
}

pub(crate) fn attribute_equals(
    conn: &Connection,
    key: &str,
    value: &str,
) -> Result<AttributeEquals, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT key_set_id, list_position(keys, ?) FROM attribute_key_sets
         WHERE list_contains(keys, ?) ORDER BY key_set_id",
    )?;
    let found: Vec<(u32, i64)> = statement
        .query_map([key, key], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let inline = "list_position(s.attribute_keys, ?)";
    // The value's position in each stored key set with the key, by key set id.
    let stored = found.last().map(|&(last, _)| {
        let mut positions = vec!["NULL".to_string(); last as usize + 1];
        for &(id, position) in &found {
            positions[id as usize] = position.to_string();
        }
        format!("[{}][s.attribute_key_set + 1]", positions.join(","))
    });
    let position = match &stored {
        Some(stored) => format!("coalesce({stored}, {inline})"),
        None => inline.to_string(),
    };
    let text = |t: &str| Value::Text(t.to_string());
    // Most spans fail the cheap substring test, and only the rest are split.
    let any_span = Condition {
        sql: format!(
            "(CASE WHEN s.attribute_text IS NULL THEN s.attribute_values[{position}]
                   WHEN contains(s.attribute_text, ?) THEN split_part(s.attribute_text, chr(31), {position})
              END) = ?"
        ),
        params: vec![text(key), text(value), text(key), text(value)],
    };
    let plain_span = match stored {
        Some(stored) => Condition {
            sql: format!(
                "contains(s.attribute_text, ?) AND split_part(s.attribute_text, chr(31), {stored}) = ?"
            ),
            params: vec![text(value), text(value)],
        },
        // Every span of a plain block has a stored key set, and none of those has the key.
        None => Condition {
            sql: "false".into(),
            params: Vec::new(),
        },
    };
    Ok(AttributeEquals { any_span, plain_span })
}
