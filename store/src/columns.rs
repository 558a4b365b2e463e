//! Arrow column builders shared by every table that stores OTLP attributes, events and links.
//!
//! Attributes become a `MAP(VARCHAR, VARCHAR)` of value texts plus an `attribute_types` text of
//! one type letter per entry (see attribute_text.rs).

use std::collections::HashSet;
use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BinaryBuilder, ListArray, MapArray, StringArray, StringBuilder, StructArray,
    TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use duckdb::arrow::buffer::OffsetBuffer;
use duckdb::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::attribute_text;

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

/// Accumulates one attribute map, and its type letters, per row.
#[derive(Default)]
pub struct AttributeColumn {
    offsets: Vec<i32>,
    keys: StringBuilder,
    values: StringBuilder,
    types: StringBuilder,
    /// The current row's type letters.
    letters: Vec<u8>,
}

impl AttributeColumn {
    /// Appends one row. OTLP requires unique keys and DuckDB maps enforce it, so a repeated key
    /// keeps its last value (what a map assignment in any SDK would have produced).
    pub fn push(&mut self, attributes: &[KeyValue]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let mut seen_later: HashSet<&str> = HashSet::new();
        let keep: Vec<bool> = attributes
            .iter()
            .rev()
            .map(|kv| seen_later.insert(kv.key.as_str()))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        self.letters.clear();
        for (kv, keep) in attributes.iter().zip(keep) {
            if keep {
                let (letter, text) = attribute_text::encode(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                self.keys.append_value(&kv.key);
                self.values.append_option(text);
                self.letters.push(letter);
            }
        }
        let letters = std::str::from_utf8(&self.letters).expect("type letters are ASCII");
        self.types.append_value(letters);
        let last = *self.offsets.last().unwrap_or(&0);
        self.offsets.push(last + self.letters.len() as i32);
    }

    /// The map column and the type-letter column, in the order of [`attribute_fields`].
    pub fn finish(mut self) -> [ArrayRef; 2] {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let DataType::Struct(entry_fields) = attribute_entries_field().data_type().clone() else {
            unreachable!("attribute entries are a struct")
        };
        let entries = StructArray::new(
            entry_fields,
            vec![
                Arc::new(self.keys.finish()) as ArrayRef,
                Arc::new(self.values.finish()),
            ],
            None,
        );
        let map = MapArray::new(
            attribute_entries_field(),
            OffsetBuffer::new(self.offsets.into()),
            entries,
            None,
            false,
        );
        let types: StringArray = self.types.finish();
        [Arc::new(map), Arc::new(types)]
    }
}

/// One span event, validated.
pub struct EventRow<'a> {
    pub time_unix_nano: i64,
    pub name: &'a str,
    pub attributes: &'a [KeyValue],
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
    pub attributes: &'a [KeyValue],
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
