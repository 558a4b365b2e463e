//! Arrow column builders shared by every table that stores OTLP attributes, events and links.
//!
//! Attributes become a `MAP(VARCHAR, VARCHAR)` of value texts plus an `attribute_types` text of
//! one type letter per entry (see attribute_text.rs); a span's own attributes are instead the id
//! of their key list plus their value texts joined in one (`KeySetColumn`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::attribute_text::{self, Attribute};
use duckdb::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, ListArray, ListBuilder, MapArray, RecordBatch, StringArray,
    StringBuilder, StructArray, TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use duckdb::arrow::buffer::OffsetBuffer;
use duckdb::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use duckdb::arrow::error::ArrowError;

fn attribute_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    ))
}

/// The Arrow type of an attribute map column.
pub fn attributes_type() -> DataType {
    DataType::Map(attribute_entries_field(), false)
}

/// The two fields every attribute map is stored as: the map and its type letters.
pub fn attribute_fields(nullable: bool) -> [Field; 2] {
    [
        Field::new("attributes", attributes_type(), nullable),
        Field::new("attribute_types", DataType::Utf8, nullable),
    ]
}

fn event_fields() -> Fields {
    [
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("name", DataType::Utf8, true),
    ]
    .into_iter()
    .chain(attribute_fields(true))
    .chain([Field::new("dropped_attributes_count", DataType::UInt32, true)])
    .collect()
}

fn link_fields() -> Fields {
    [
        Field::new("trace_id", DataType::Binary, true),
        Field::new("span_id", DataType::UInt64, true),
        Field::new("trace_state", DataType::Utf8, true),
    ]
    .into_iter()
    .chain(attribute_fields(true))
    .chain([
        Field::new("dropped_attributes_count", DataType::UInt32, true),
        Field::new("flags", DataType::UInt32, true),
    ])
    .collect()
}

pub fn events_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(event_fields()),
        true,
    )))
}

pub fn links_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(link_fields()),
        true,
    )))
}

/// Up to this many attributes, repeated keys are found by comparing each with the later ones.
const FEW_ATTRIBUTES: usize = 32;

/// The entries of one attribute list as stored: key, type letter and value text. OTLP requires
/// unique keys and DuckDB maps enforce it, so a repeated key keeps its last value (what a map
/// assignment in any SDK would have produced).
fn stored_entries<'a>(
    attributes: &'a [Attribute<'a>],
) -> impl Iterator<Item = (&'a str, u8, Option<Cow<'a, str>>)> {
    let keep: Vec<bool> = if attributes.len() <= FEW_ATTRIBUTES {
        // Comparing with the later keys beats hashing every key of every span.
        (0..attributes.len())
            .map(|i| {
                attributes[i + 1..]
                    .iter()
                    .all(|later| later.key != attributes[i].key)
            })
            .collect()
    } else {
        let mut seen_later: HashSet<&str> = HashSet::new();
        let mut keep: Vec<bool> = attributes
            .iter()
            .rev()
            .map(|attribute| seen_later.insert(attribute.key))
            .collect();
        keep.reverse();
        keep
    };
    attributes
        .iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(attribute, _)| {
            let (letter, text) = attribute_text::encode(attribute.value.as_ref());
            (attribute.key, letter, text)
        })
}

/// Value texts, one list per row, and their type letters, one text per row.
#[derive(Default)]
struct ValueLists {
    offsets: Vec<i32>,
    values: StringBuilder,
    types: StringBuilder,
    letters: Vec<u8>,
}

impl ValueLists {
    fn push_value(&mut self, letter: u8, text: Option<&str>) {
        self.values.append_option(text);
        self.letters.push(letter);
    }

    fn end_row(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let letters = std::str::from_utf8(&self.letters).expect("type letters are ASCII");
        self.types.append_value(letters);
        let last = *self.offsets.last().unwrap_or(&0);
        self.offsets.push(last + self.letters.len() as i32);
        self.letters.clear();
    }

    fn finish(mut self) -> (OffsetBuffer<i32>, StringArray, StringArray) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        (
            OffsetBuffer::new(self.offsets.into()),
            self.values.finish(),
            self.types.finish(),
        )
    }
}

/// Accumulates one attribute map, and its type letters, per row.
#[derive(Default)]
pub struct AttributeColumn {
    keys: StringBuilder,
    values: ValueLists,
}

impl AttributeColumn {
    pub fn push(&mut self, attributes: &[Attribute<'_>]) {
        for (key, letter, text) in stored_entries(attributes) {
            self.keys.append_value(key);
            self.values.push_value(letter, text.as_deref());
        }
        self.values.end_row();
    }

    /// The map column and the type-letter column, in the order of [`attribute_fields`].
    pub fn finish(mut self) -> [ArrayRef; 2] {
        let DataType::Struct(entry_fields) = attribute_entries_field().data_type().clone() else {
            unreachable!("attribute entries are a struct")
        };
        let (offsets, values, types) = self.values.finish();
        let entries = StructArray::new(
            entry_fields,
            vec![Arc::new(self.keys.finish()) as ArrayRef, Arc::new(values)],
            None,
        );
        let map = MapArray::new(attribute_entries_field(), offsets, entries, None, false);
        [Arc::new(map), Arc::new(types)]
    }
}

/// The Arrow type of a list of attribute keys or value texts.
fn value_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// Joins a span's value texts in `attribute_text`. A control character no SDK puts in a
/// value; a span whose values hold it keeps them in the `attribute_values` list instead.
pub const VALUE_SEPARATOR: char = '\u{1f}';

/// The five fields span attributes are stored as: key set id, the keys themselves when the key
/// set could not be stored, value texts (joined, or as a list), type letters.
pub fn key_set_fields() -> [Field; 5] {
    [
        Field::new("attribute_key_set", DataType::UInt32, true),
        Field::new("attribute_keys", value_list_type(), true),
        Field::new("attribute_text", DataType::Utf8, true),
        Field::new("attribute_values", value_list_type(), true),
        Field::new("attribute_types", DataType::Utf8, false),
    ]
}

/// The value texts of one row of the `attribute_text` and `attribute_values` columns, in the
/// order of its keys; `None` for an empty value.
pub(crate) fn span_values<'a>(
    texts: &'a StringArray,
    lists: &'a ListArray,
    row: usize,
) -> impl Iterator<Item = Option<&'a str>> {
    let joined = texts
        .is_valid(row)
        .then(|| texts.value(row).split(VALUE_SEPARATOR).map(Some));
    let listed = lists.is_valid(row).then(|| {
        let items = lists
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("attribute values are texts");
        let offsets = lists.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .map(|entry| items.is_valid(entry).then(|| items.value(entry)))
    });
    joined.into_iter().flatten().chain(listed.into_iter().flatten())
}

/// A list of attribute keys as first seen in a batch; the writer stores each distinct one once.
#[derive(Clone)]
pub struct KeySet {
    /// The keys, each preceded by its length (four bytes, little-endian): equal fingerprints,
    /// same list.
    pub fingerprint: Vec<u8>,
}

impl KeySet {
    fn keys(&self) -> impl Iterator<Item = &str> {
        let mut rest = self.fingerprint.as_slice();
        std::iter::from_fn(move || {
            let (length, tail) = rest.split_first_chunk::<4>()?;
            let (key, tail) = tail.split_at(u32::from_le_bytes(*length) as usize);
            rest = tail;
            Some(std::str::from_utf8(key).expect("fingerprints are made of str keys"))
        })
    }
}

/// Span attributes as the id of their key list plus the values in that order. The spans of one
/// instrumentation point repeat the same keys, so each distinct list is stored once
/// (`attribute_key_sets`) and a span row keeps only its values: joined into one text, which
/// DuckDB writes with ZSTD in a quarter of the time a list of texts takes and in fewer bytes.
pub struct KeySetColumn {
    /// The batch's distinct key lists, in first-seen order, found by fingerprint.
    key_sets: Vec<KeySet>,
    index: HashMap<Vec<u8>, u32>,
    /// Per row, an index into `key_sets` until the writer swaps in the stored id.
    key_set_ref: Vec<u32>,
    texts: StringBuilder,
    lists: ListBuilder<StringBuilder>,
    types: StringBuilder,
    /// The current row: its fingerprint, type letters, values joined, and where each value
    /// lies in `joined` (`None` for an empty value).
    fingerprint: Vec<u8>,
    letters: Vec<u8>,
    joined: String,
    entries: Vec<Option<(usize, usize)>>,
}

impl Default for KeySetColumn {
    fn default() -> Self {
        KeySetColumn {
            key_sets: Vec::new(),
            index: HashMap::new(),
            key_set_ref: Vec::new(),
            texts: StringBuilder::new(),
            lists: ListBuilder::new(StringBuilder::new()),
            types: StringBuilder::new(),
            fingerprint: Vec::new(),
            letters: Vec::new(),
            joined: String::new(),
            entries: Vec::new(),
        }
    }
}

impl KeySetColumn {
    pub fn push(&mut self, attributes: &[Attribute<'_>]) {
        for (key, letter, text) in stored_entries(attributes) {
            self.push_entry(key, letter, text.as_deref());
        }
        self.end_row();
    }

    /// Adds one entry to the current row; [`KeySetColumn::end_row`] completes it.
    pub fn push_entry(&mut self, key: &str, letter: u8, text: Option<&str>) {
        self.fingerprint
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.fingerprint.extend_from_slice(key.as_bytes());
        self.letters.push(letter);
        if !self.entries.is_empty() {
            self.joined.push(VALUE_SEPARATOR);
        }
        self.entries.push(text.map(|text| {
            let start = self.joined.len();
            self.joined.push_str(text);
            (start, self.joined.len())
        }));
    }

    pub fn end_row(&mut self) {
        let next = self.key_sets.len() as u32;
        let index = match self.index.get(&self.fingerprint) {
            Some(&index) => index,
            None => {
                self.index.insert(self.fingerprint.clone(), next);
                self.key_sets.push(KeySet {
                    fingerprint: self.fingerprint.clone(),
                });
                next
            }
        };
        self.key_set_ref.push(index);
        // Joined, the values must split back into exactly these entries.
        let joinable = !self.entries.is_empty()
            && self.entries.iter().all(Option::is_some)
            && self.joined.matches(VALUE_SEPARATOR).count() == self.entries.len() - 1;
        if joinable {
            self.texts.append_value(&self.joined);
            self.lists.append_null();
        } else {
            self.texts.append_null();
            for entry in &self.entries {
                let text = entry.map(|(start, end)| &self.joined[start..end]);
                self.lists.values().append_option(text);
            }
            self.lists.append(true);
        }
        let letters = std::str::from_utf8(&self.letters).expect("type letters are ASCII");
        self.types.append_value(letters);
        self.fingerprint.clear();
        self.letters.clear();
        self.joined.clear();
        self.entries.clear();
    }

    /// The columns in the order of [`key_set_fields`], and the key sets their ids index. No
    /// row has its keys inline yet: only the writer knows whether its key set can be stored.
    pub fn finish(mut self) -> ([ArrayRef; 5], Vec<KeySet>) {
        let rows = self.key_set_ref.len();
        (
            [
                Arc::new(UInt32Array::from(self.key_set_ref)),
                inline_keys(std::iter::repeat_n(None, rows)),
                Arc::new(self.texts.finish()),
                Arc::new(self.lists.finish()),
                Arc::new(self.types.finish()),
            ],
            self.key_sets,
        )
    }
}

/// The `attribute_keys` column: per row, the keys of a key set that is not stored, else NULL.
pub fn inline_keys<'a>(rows: impl Iterator<Item = Option<&'a KeySet>>) -> ArrayRef {
    Arc::new(key_lists(rows))
}

/// One list of keys per row, NULL for `None`.
fn key_lists<'a>(rows: impl Iterator<Item = Option<&'a KeySet>>) -> ListArray {
    let mut keys = ListBuilder::new(StringBuilder::new());
    for row in rows {
        match row {
            Some(key_set) => {
                for key in key_set.keys() {
                    keys.values().append_value(key);
                }
                keys.append(true);
            }
            None => keys.append(false),
        }
    }
    keys.finish()
}

/// A batch of rows for `attribute_key_sets`.
pub fn key_set_rows(ids: Vec<u32>, key_sets: &[&KeySet]) -> Result<RecordBatch, ArrowError> {
    let fields = vec![
        Field::new("key_set_id", DataType::UInt32, false),
        Field::new("keys", value_list_type(), false),
        Field::new("fingerprint", DataType::Binary, false),
    ];
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(key_lists(key_sets.iter().copied().map(Some))),
            Arc::new(BinaryArray::from_iter_values(
                key_sets.iter().map(|k| k.fingerprint.as_slice()),
            )),
        ],
    )
}

/// One span event, validated.
pub struct EventRow<'a> {
    pub time_unix_nano: i64,
    pub name: &'a str,
    pub attributes: &'a [Attribute<'a>],
    pub dropped_attributes_count: u32,
}

/// Accumulates one list of events per row.
#[derive(Default)]
pub struct EventColumn {
    offsets: Vec<i32>,
    time: Vec<i64>,
    name: StringBuilder,
    attributes: AttributeColumn,
    dropped: Vec<u32>,
}

impl EventColumn {
    pub fn push<'a>(&mut self, events: impl Iterator<Item = EventRow<'a>>) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        for event in events {
            self.time.push(event.time_unix_nano);
            self.name.append_value(event.name);
            self.attributes.push(event.attributes);
            self.dropped.push(event.dropped_attributes_count);
        }
        self.offsets.push(self.time.len() as i32);
    }

    pub fn finish(mut self) -> ListArray {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let items = StructArray::new(
            event_fields(),
            vec![
                Arc::new(TimestampNanosecondArray::from(self.time)) as ArrayRef,
                Arc::new(self.name.finish()),
            ]
            .into_iter()
            .chain(self.attributes.finish())
            .chain([Arc::new(UInt32Array::from(self.dropped)) as ArrayRef])
            .collect(),
            None,
        );
        list_array(events_type(), self.offsets, items)
    }
}

/// One span link, validated.
pub struct LinkRow<'a> {
    pub trace_id: [u8; 16],
    pub span_id: u64,
    pub trace_state: &'a str,
    pub attributes: &'a [Attribute<'a>],
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// Accumulates one list of links per row.
#[derive(Default)]
pub struct LinkColumn {
    offsets: Vec<i32>,
    trace_id: BinaryBuilder,
    span_id: Vec<u64>,
    trace_state: StringBuilder,
    attributes: AttributeColumn,
    dropped: Vec<u32>,
    flags: Vec<u32>,
}

impl LinkColumn {
    pub fn push<'a>(&mut self, links: impl Iterator<Item = LinkRow<'a>>) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        for link in links {
            self.trace_id.append_value(link.trace_id);
            self.span_id.push(link.span_id);
            self.trace_state.append_value(link.trace_state);
            self.attributes.push(link.attributes);
            self.dropped.push(link.dropped_attributes_count);
            self.flags.push(link.flags);
        }
        self.offsets.push(self.span_id.len() as i32);
    }

    pub fn finish(mut self) -> ListArray {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let items = StructArray::new(
            link_fields(),
            vec![
                Arc::new(self.trace_id.finish()) as ArrayRef,
                Arc::new(UInt64Array::from(self.span_id)),
                Arc::new(self.trace_state.finish()),
            ]
            .into_iter()
            .chain(self.attributes.finish())
            .chain([
                Arc::new(UInt32Array::from(self.dropped)) as ArrayRef,
                Arc::new(UInt32Array::from(self.flags)),
            ])
            .collect(),
            None,
        );
        list_array(links_type(), self.offsets, items)
    }
}

fn list_array(list_type: DataType, offsets: Vec<i32>, items: StructArray) -> ListArray {
    let DataType::List(item_field) = list_type else {
        unreachable!("list columns have a list type")
    };
    ListArray::new(
        item_field,
        OffsetBuffer::new(offsets.into()),
        Arc::new(items),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute_text::ValueRef;

    fn text<'a>(key: &'a str, value: &'a str) -> Attribute<'a> {
        Attribute {
            key,
            value: Some(ValueRef::String(value)),
        }
    }

    /// Both ways of finding repeated keys, a short list and one past FEW_ATTRIBUTES.
    #[test]
    fn a_repeated_key_keeps_its_last_value_and_key_sets_round_trip() {
        for filler in [0, FEW_ATTRIBUTES] {
            let filler_keys: Vec<String> = (0..filler).map(|i| format!("k{i}")).collect();
            let mut attributes: Vec<Attribute> = filler_keys.iter().map(|key| text(key, "v")).collect();
            attributes.extend([text("a", "first"), text("b", "x"), text("a", "last")]);
            let stored: Vec<(&str, Option<String>)> = stored_entries(&attributes)
                .map(|(key, _, text)| (key, text.map(String::from)))
                .collect();
            assert_eq!(stored.len(), filler + 2);
            assert_eq!(
                stored[filler..],
                [("b", Some("x".into())), ("a", Some("last".into()))]
            );

            let mut column = KeySetColumn::default();
            column.push(&attributes);
            column.push(&[text("b", "y")]);
            column.push(&attributes);
            let ([ids, _, _, _, _], key_sets) = column.finish();
            let ids = ids.as_any().downcast_ref::<UInt32Array>().unwrap();
            assert_eq!(
                ids.values().to_vec(),
                [0, 1, 0],
                "equal key lists share a key set"
            );
            let keys: Vec<&str> = key_sets[0].keys().collect();
            assert_eq!(keys.len(), filler + 2);
            assert_eq!(keys[filler..], ["b", "a"]);
            assert_eq!(key_sets[1].keys().collect::<Vec<_>>(), ["b"]);
        }
    }
}
