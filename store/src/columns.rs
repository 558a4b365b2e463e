//! Arrow column builders shared by every table that stores OTLP attributes, events and links.
//!
//! Attributes become `MAP(VARCHAR, attribute_value)` (see `schema::ATTRIBUTE_VALUE`): one typed
//! field per OTLP scalar kind, and arrays / key-value lists as their OTLP/JSON text.

use std::collections::HashSet;
use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListArray, MapArray,
    StringBuilder, StructArray, TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use duckdb::arrow::buffer::OffsetBuffer;
use duckdb::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

/// The fields of one attribute value, in `schema::ATTRIBUTE_VALUE` order.
fn attribute_value_fields() -> Fields {
    Fields::from(vec![
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("dbl", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
        Field::new("bytes", DataType::Binary, true),
        Field::new("json", DataType::Utf8, true),
    ])
}

fn attribute_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Struct(attribute_value_fields()), true),
        ])),
        false,
    ))
}

/// The Arrow type of an attribute map column.
pub fn attributes_type() -> DataType {
    DataType::Map(attribute_entries_field(), false)
}

fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("name", DataType::Utf8, true),
        Field::new("attributes", attributes_type(), true),
        Field::new("dropped_attributes_count", DataType::UInt32, true),
    ])
}

fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Binary, true),
        Field::new("span_id", DataType::UInt64, true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attributes_type(), true),
        Field::new("dropped_attributes_count", DataType::UInt32, true),
        Field::new("flags", DataType::UInt32, true),
    ])
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

/// Accumulates one attribute map per row.
#[derive(Default)]
pub struct AttributeColumn {
    offsets: Vec<i32>,
    keys: StringBuilder,
    str: StringBuilder,
    int: Int64Builder,
    dbl: Float64Builder,
    bool: BooleanBuilder,
    bytes: BinaryBuilder,
    json: StringBuilder,
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
        let mut written = 0;
        for (kv, keep) in attributes.iter().zip(keep) {
            if keep {
                self.keys.append_value(&kv.key);
                self.push_value(kv.value.as_ref());
                written += 1;
            }
        }
        let last = *self.offsets.last().unwrap_or(&0);
        self.offsets.push(last + written);
    }

    fn push_value(&mut self, value: Option<&AnyValue>) {
        let value = value.and_then(|v| v.value.as_ref());
        self.str.append_option(match value {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        });
        self.int.append_option(match value {
            Some(Value::IntValue(i)) => Some(*i),
            _ => None,
        });
        self.dbl.append_option(match value {
            Some(Value::DoubleValue(d)) => Some(*d),
            _ => None,
        });
        self.bool.append_option(match value {
            Some(Value::BoolValue(b)) => Some(*b),
            _ => None,
        });
        self.bytes.append_option(match value {
            Some(Value::BytesValue(b)) => Some(b.as_slice()),
            _ => None,
        });
        self.json.append_option(match value {
            Some(nested @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
                Some(crate::otlp_json::any_value_to_json(nested))
            }
            _ => None,
        });
    }

    pub fn finish(mut self) -> MapArray {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let values = StructArray::new(
            attribute_value_fields(),
            vec![
                Arc::new(self.str.finish()) as ArrayRef,
                Arc::new(self.int.finish()),
                Arc::new(self.dbl.finish()),
                Arc::new(self.bool.finish()),
                Arc::new(self.bytes.finish()),
                Arc::new(self.json.finish()),
            ],
            None,
        );
        let DataType::Struct(entry_fields) = attribute_entries_field().data_type().clone() else {
            unreachable!("attribute entries are a struct")
        };
        let entries = StructArray::new(
            entry_fields,
            vec![Arc::new(self.keys.finish()) as ArrayRef, Arc::new(values)],
            None,
        );
        MapArray::new(
            attribute_entries_field(),
            OffsetBuffer::new(self.offsets.into()),
            entries,
            None,
            false,
        )
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
                Arc::new(self.attributes.finish()),
                Arc::new(UInt32Array::from(self.dropped)),
            ],
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
                Arc::new(self.attributes.finish()),
                Arc::new(UInt32Array::from(self.dropped)),
                Arc::new(UInt32Array::from(self.flags)),
            ],
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
