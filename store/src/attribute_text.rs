//! Attribute values as text plus one type letter each, so that attribute maps are plain
//! `MAP(VARCHAR, VARCHAR)` and still give back the exact OTLP value.
//!
//! One typed field per OTLP kind (the first layout) made every attribute seven nested columns:
//! appends, checkpoints, point reads and scans all paid for five mostly-NULL fields. As text,
//! `attributes['http.status_code'] = '500'` reads like the ClickHouse exporter's schema, and the
//! sibling `attribute_types` column (one letter per entry, in map order) restores the type.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

use crate::otlp_json::{any_value_from_json, any_value_to_json};

/// The type letter of an entry whose value is a string.
const STRING: u8 = b's';
const INT: u8 = b'i';
const DOUBLE: u8 = b'd';
const BOOL: u8 = b'b';
/// Bytes, as lowercase hex.
const BYTES: u8 = b'x';
/// An array, as its OTLP/JSON AnyValue text.
const ARRAY: u8 = b'a';
/// A key-value list, as its OTLP/JSON AnyValue text.
const KVLIST: u8 = b'k';
/// An index into a profile's string table (OTLP profiles only; kept for completeness).
const STRINDEX: u8 = b'r';
/// An empty AnyValue: the map value is NULL.
const EMPTY: u8 = b'n';

/// One attribute, borrowed from request bytes (otlp_wire.rs) or from a decoded message.
pub(crate) struct Attribute<'a> {
    pub key: &'a str,
    /// `None` for an empty AnyValue or none at all.
    pub value: Option<ValueRef<'a>>,
}

/// An OTLP attribute value, borrowed where it can be.
pub(crate) enum ValueRef<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An index into a profile's string table (OTLP profiles only; kept for completeness).
    Strindex(i32),
    /// Arrays and key-value lists; prost decodes them.
    Nested(Cow<'a, Value>),
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::StringValue(s) => ValueRef::String(s),
            Value::BoolValue(b) => ValueRef::Bool(*b),
            Value::IntValue(i) => ValueRef::Int(*i),
            Value::DoubleValue(d) => ValueRef::Double(*d),
            Value::BytesValue(b) => ValueRef::Bytes(b),
            Value::StringValueStrindex(i) => ValueRef::Strindex(*i),
            nested @ (Value::ArrayValue(_) | Value::KvlistValue(_)) => {
                ValueRef::Nested(Cow::Borrowed(nested))
            }
        }
    }
}

impl<'a> From<&'a KeyValue> for Attribute<'a> {
    fn from(kv: &'a KeyValue) -> Self {
        Attribute {
            key: &kv.key,
            value: kv
                .value
                .as_ref()
                .and_then(|any| any.value.as_ref())
                .map(ValueRef::from),
        }
    }
}

/// The attributes of a decoded message, borrowed.
pub(crate) fn borrowed(attributes: &[KeyValue]) -> Vec<Attribute<'_>> {
    attributes.iter().map(Attribute::from).collect()
}

/// The type letter and the text of one value (`None` for an empty AnyValue).
pub(crate) fn encode<'a>(value: Option<&ValueRef<'a>>) -> (u8, Option<Cow<'a, str>>) {
    match value {
        None => (EMPTY, None),
        Some(ValueRef::String(s)) => (STRING, Some(Cow::Borrowed(*s))),
        Some(ValueRef::Int(i)) => (INT, Some(Cow::Owned(i.to_string()))),
        // Rust prints the shortest text that parses back to the same double.
        Some(ValueRef::Double(d)) => (DOUBLE, Some(Cow::Owned(d.to_string()))),
        Some(ValueRef::Bool(b)) => (BOOL, Some(Cow::Borrowed(if *b { "true" } else { "false" }))),
        Some(ValueRef::Bytes(b)) => (BYTES, Some(Cow::Owned(hex::encode(b)))),
        Some(ValueRef::Strindex(i)) => (STRINDEX, Some(Cow::Owned(i.to_string()))),
        Some(ValueRef::Nested(nested)) => match nested.as_ref() {
            array @ Value::ArrayValue(_) => (ARRAY, Some(Cow::Owned(any_value_to_json(array)))),
            kvlist @ Value::KvlistValue(_) => (KVLIST, Some(Cow::Owned(any_value_to_json(kvlist)))),
            // What a sender's split value merged into.
            scalar => {
                let (letter, text) = encode(Some(&ValueRef::from(scalar)));
                (letter, text.map(|text| Cow::Owned(text.into_owned())))
            }
        },
    }
}

/// The OTLP value that [`encode`] turned into `letter` and `text`; text that does not parse
/// as its letter says (only possible in a damaged file) comes back as a string.
pub(crate) fn decode(letter: u8, text: Option<&str>) -> AnyValue {
    let Some(text) = text else {
        return AnyValue { value: None };
    };
    let typed = match letter {
        INT => text.parse().ok().map(Value::IntValue),
        DOUBLE => text.parse().ok().map(Value::DoubleValue),
        BOOL => text.parse().ok().map(Value::BoolValue),
        BYTES => hex::decode(text).ok().map(Value::BytesValue),
        ARRAY | KVLIST => any_value_from_json(text).ok().and_then(|any| any.value),
        STRINDEX => text.parse().ok().map(Value::StringValueStrindex),
        _ => None,
    };
    AnyValue {
        value: Some(typed.unwrap_or_else(|| Value::StringValue(text.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn round_trip(value: Option<Value>) -> Option<Value> {
        let (letter, text) = encode(value.as_ref().map(ValueRef::from).as_ref());
        decode(letter, text.as_deref()).value
    }

    #[test]
    fn every_kind_comes_back_exactly() {
        let nested = |v: Value| AnyValue { value: Some(v) };
        let values = [
            Value::StringValue("héllo <b>".into()),
            Value::StringValue(String::new()),
            Value::IntValue(i64::MIN),
            Value::IntValue(500),
            Value::DoubleValue(0.1),
            Value::DoubleValue(-1e300),
            Value::DoubleValue(5e-324),
            Value::DoubleValue(f64::INFINITY),
            Value::BoolValue(true),
            Value::BoolValue(false),
            Value::BytesValue(vec![0, 1, 0xfe, 0xff]),
            Value::BytesValue(Vec::new()),
            Value::StringValueStrindex(7),
            Value::ArrayValue(ArrayValue {
                values: vec![nested(Value::IntValue(1)), nested(Value::StringValue("a".into()))],
            }),
            Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(nested(Value::BoolValue(true))),
                    ..Default::default()
                }],
            }),
        ];
        for value in values {
            assert_eq!(round_trip(Some(value.clone())), Some(value));
        }
        assert_eq!(round_trip(None), None);
    }

    #[test]
    fn nan_stays_nan() {
        let Some(Value::DoubleValue(d)) = round_trip(Some(Value::DoubleValue(f64::NAN))) else {
            panic!("a double comes back as a double")
        };
        assert!(d.is_nan());
    }

    #[test]
    fn strings_that_look_typed_stay_strings() {
        for text in ["500", "true", "0.5", "ff"] {
            let value = Value::StringValue(text.into());
            assert_eq!(round_trip(Some(value.clone())), Some(value));
        }
    }
}
