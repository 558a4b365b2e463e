//! Reads the spans of an OTLP/protobuf trace request in place, borrowing every string and id
//! from the request bytes.
//!
//! prost's owned `ExportTraceServiceRequest` allocates a `String` for every attribute key and
//! value; decoding and freeing it took 2.9 of the 4.1 µs per span the receive side spent on one
//! thread. Read in place, decode and columns together take about a fifth less (BENCHMARKS.md).
//! Resources and scopes, a few per request, still decode with prost. Decoding follows protobuf's rules as prost applies them: fields in any order,
//! unknown fields skipped (groups too), a repeated singular field's last value wins (a message
//! one merges), strings must be UTF-8.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

use crate::attribute_text::{Attribute, ValueRef};

/// Why request bytes are not a valid OTLP protobuf message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("truncated or overlong varint")]
    Varint,
    #[error("a field runs past the end of its message")]
    Truncated,
    #[error("field number {0} is invalid")]
    FieldNumber(u64),
    #[error("wire type {wire_type} (field {field}) is not supported")]
    WireType { field: u32, wire_type: u64 },
    #[error("{field} has the wrong wire type; expected {expected}")]
    Mismatch {
        field: &'static str,
        expected: &'static str,
    },
    #[error("groups nest too deeply")]
    TooDeep,
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error(transparent)]
    Message(#[from] prost::DecodeError),
}

/// How deeply groups may nest: prost's limit for nested messages.
const RECURSION_LIMIT: u32 = 100;

/// One field's value as it appears on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    /// A deprecated group, skipped: no OTLP field is one.
    Group,
}

impl<'a> Wire<'a> {
    fn mismatch(field: &'static str, expected: &'static str) -> WireError {
        WireError::Mismatch { field, expected }
    }

    #[inline]
    pub(crate) fn bytes(self, field: &'static str) -> Result<&'a [u8], WireError> {
        match self {
            Wire::Bytes(bytes) => Ok(bytes),
            _ => Err(Self::mismatch(field, "length-delimited")),
        }
    }

    #[inline]
    pub(crate) fn str(self, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| WireError::Utf8(field))
    }

    #[inline]
    pub(crate) fn varint(self, field: &'static str) -> Result<u64, WireError> {
        match self {
            Wire::Varint(value) => Ok(value),
            _ => Err(Self::mismatch(field, "varint")),
        }
    }

    #[inline]
    fn fixed64(self, field: &'static str) -> Result<u64, WireError> {
        match self {
            Wire::Fixed64(value) => Ok(value),
            _ => Err(Self::mismatch(field, "fixed64")),
        }
    }

    #[inline]
    fn fixed32(self, field: &'static str) -> Result<u32, WireError> {
        match self {
            Wire::Fixed32(value) => Ok(value),
            _ => Err(Self::mismatch(field, "fixed32")),
        }
    }
}

/// The fields of one message, in wire order.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }

    #[inline]
    fn take(&mut self, length: u64) -> Result<&'a [u8], WireError> {
        let length = usize::try_from(length).map_err(|_| WireError::Truncated)?;
        if length > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    /// A base-128 varint of at most ten bytes, the last of which may only carry bit 63.
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0;
        for (i, &byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    break;
                }
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError::Varint)
    }

    /// A field's number and wire type.
    #[inline]
    fn key(&mut self) -> Result<(u32, u64), WireError> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .ok()
            .filter(|&field| field > 0 && field < 1 << 29)
            .ok_or(WireError::FieldNumber(key >> 3))?;
        Ok((field, key & 7))
    }

    #[inline]
    fn value(&mut self, field: u32, wire_type: u64, depth: u32) -> Result<Wire<'a>, WireError> {
        Ok(match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("took 8 bytes"),
            )),
            2 => {
                let length = self.varint()?;
                Wire::Bytes(self.take(length)?)
            }
            3 => {
                self.skip_group(field, depth)?;
                Wire::Group
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("took 4 bytes"),
            )),
            wire_type => return Err(WireError::WireType { field, wire_type }),
        })
    }

    /// Skips the fields of a group up to its end marker, as prost does for an unknown field.
    fn skip_group(&mut self, group: u32, depth: u32) -> Result<(), WireError> {
        if depth >= RECURSION_LIMIT {
            return Err(WireError::TooDeep);
        }
        loop {
            if self.rest.is_empty() {
                return Err(WireError::Truncated);
            }
            match self.key()? {
                (field, 4) if field == group => return Ok(()),
                (field, wire_type) => {
                    self.value(field, wire_type, depth + 1)?;
                }
            }
        }
    }

    #[inline]
    fn field(&mut self) -> Result<(u32, Wire<'a>), WireError> {
        let (field, wire_type) = self.key()?;
        Ok((field, self.value(field, wire_type, 0)?))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// A span's fields as the request carries them, before validation.
#[derive(Default)]
pub(crate) struct SpanFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventFields<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkFields<'a>>,
    pub dropped_links_count: u32,
    pub status: Option<StatusFields<'a>>,
}

#[derive(Default)]
pub(crate) struct EventFields<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Vec<Attribute<'a>>,
    pub dropped_attributes_count: u32,
}

#[derive(Default)]
pub(crate) struct LinkFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub attributes: Vec<Attribute<'a>>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

#[derive(Default)]
pub(crate) struct StatusFields<'a> {
    pub message: &'a str,
    pub code: i32,
}

impl<'a> SpanFields<'a> {
    /// Reads one `Span`; its attributes go to `attributes`, which the caller reuses from span
    /// to span so that a span without events or links allocates nothing.
    pub(crate) fn read(message: &'a [u8], attributes: &mut Vec<Attribute<'a>>) -> Result<Self, WireError> {
        attributes.clear();
        let mut span = SpanFields::default();
        for field in Fields::new(message) {
            match field? {
                (1, wire) => span.trace_id = wire.bytes("Span.trace_id")?,
                (2, wire) => span.span_id = wire.bytes("Span.span_id")?,
                (3, wire) => span.trace_state = wire.str("Span.trace_state")?,
                (4, wire) => span.parent_span_id = wire.bytes("Span.parent_span_id")?,
                (5, wire) => span.name = wire.str("Span.name")?,
                (6, wire) => span.kind = wire.varint("Span.kind")? as i32,
                (7, wire) => span.start_time_unix_nano = wire.fixed64("Span.start_time_unix_nano")?,
                (8, wire) => span.end_time_unix_nano = wire.fixed64("Span.end_time_unix_nano")?,
                (9, wire) => attributes.push(attribute(wire.bytes("Span.attributes")?)?),
                (10, wire) => {
                    span.dropped_attributes_count = wire.varint("Span.dropped_attributes_count")? as u32
                }
                (11, wire) => span.events.push(EventFields::read(wire.bytes("Span.events")?)?),
                (12, wire) => span.dropped_events_count = wire.varint("Span.dropped_events_count")? as u32,
                (13, wire) => span.links.push(LinkFields::read(wire.bytes("Span.links")?)?),
                (14, wire) => span.dropped_links_count = wire.varint("Span.dropped_links_count")? as u32,
                (15, wire) => {
                    let status = span.status.get_or_insert_default();
                    for field in Fields::new(wire.bytes("Span.status")?) {
                        match field? {
                            (2, wire) => status.message = wire.str("Status.message")?,
                            (3, wire) => status.code = wire.varint("Status.code")? as i32,
                            _ => {}
                        }
                    }
                }
                (16, wire) => span.flags = wire.fixed32("Span.flags")?,
                _ => {}
            }
        }
        Ok(span)
    }
}

impl<'a> EventFields<'a> {
    fn read(message: &'a [u8]) -> Result<Self, WireError> {
        let mut event = EventFields::default();
        for field in Fields::new(message) {
            match field? {
                (1, wire) => event.time_unix_nano = wire.fixed64("Event.time_unix_nano")?,
                (2, wire) => event.name = wire.str("Event.name")?,
                (3, wire) => event.attributes.push(attribute(wire.bytes("Event.attributes")?)?),
                (4, wire) => {
                    event.dropped_attributes_count = wire.varint("Event.dropped_attributes_count")? as u32
                }
                _ => {}
            }
        }
        Ok(event)
    }
}

impl<'a> LinkFields<'a> {
    fn read(message: &'a [u8]) -> Result<Self, WireError> {
        let mut link = LinkFields::default();
        for field in Fields::new(message) {
            match field? {
                (1, wire) => link.trace_id = wire.bytes("Link.trace_id")?,
                (2, wire) => link.span_id = wire.bytes("Link.span_id")?,
                (3, wire) => link.trace_state = wire.str("Link.trace_state")?,
                (4, wire) => link.attributes.push(attribute(wire.bytes("Link.attributes")?)?),
                (5, wire) => {
                    link.dropped_attributes_count = wire.varint("Link.dropped_attributes_count")? as u32
                }
                (6, wire) => link.flags = wire.fixed32("Link.flags")?,
                _ => {}
            }
        }
        Ok(link)
    }
}

/// Reads one `KeyValue`. Values that are arrays or key-value lists, or that a sender split
/// over several fields for protobuf to merge, decode with prost: rare, and exact that way.
fn attribute(message: &[u8]) -> Result<Attribute<'_>, WireError> {
    let mut key = "";
    let mut value_fields = 0;
    let mut value = InPlace::Value(None);
    for field in Fields::new(message) {
        match field? {
            (1, wire) => key = wire.str("KeyValue.key")?,
            // Profiles only; read to reject what prost would reject.
            (3, wire) => _ = wire.varint("KeyValue.key_strindex")?,
            (2, wire) => {
                value_fields += 1;
                value = any_value(wire.bytes("KeyValue.value")?)?;
            }
            _ => {}
        }
    }
    let value = match value {
        InPlace::Value(value) if value_fields <= 1 => value,
        _ => KeyValue::decode(message)?
            .value
            .and_then(|any| any.value)
            .map(|value| ValueRef::Nested(Cow::Owned(value))),
    };
    Ok(Attribute { key, value })
}

/// An `AnyValue` as read in place.
enum InPlace<'a> {
    Value(Option<ValueRef<'a>>),
    /// An array or a key-value list: prost decodes those.
    Nested,
}

fn any_value(message: &[u8]) -> Result<InPlace<'_>, WireError> {
    let mut value = None;
    for field in Fields::new(message) {
        value = Some(match field? {
            (1, wire) => ValueRef::String(wire.str("AnyValue.string_value")?),
            (2, wire) => ValueRef::Bool(wire.varint("AnyValue.bool_value")? != 0),
            (3, wire) => ValueRef::Int(wire.varint("AnyValue.int_value")? as i64),
            (4, wire) => ValueRef::Double(f64::from_bits(wire.fixed64("AnyValue.double_value")?)),
            (5 | 6, _) => return Ok(InPlace::Nested),
            (7, wire) => ValueRef::Bytes(wire.bytes("AnyValue.bytes_value")?),
            (8, wire) => ValueRef::Strindex(wire.varint("AnyValue.string_value_strindex")? as i32),
            _ => continue,
        });
    }
    Ok(InPlace::Value(value))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValueList,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;
    use crate::batch::SpanBatch;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// Every kind of value, nested ones included, and a repeated key.
    fn attributes() -> Vec<KeyValue> {
        let any = |value| AnyValue { value: Some(value) };
        vec![
            kv("s", Value::StringValue("héllo".into())),
            kv("i", Value::IntValue(-7)),
            kv("d", Value::DoubleValue(0.25)),
            kv("b", Value::BoolValue(true)),
            kv("x", Value::BytesValue(vec![0, 255])),
            kv("r", Value::StringValueStrindex(3)),
            kv(
                "a",
                Value::ArrayValue(ArrayValue {
                    values: vec![any(Value::IntValue(1)), any(Value::StringValue("two".into()))],
                }),
            ),
            kv(
                "k",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", Value::BoolValue(false))],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                ..Default::default()
            },
            kv("s", Value::StringValue("last".into())),
        ]
    }

    fn span(trace: u8, span: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![span; 8],
            parent_span_id: if span > 1 { vec![1; 8] } else { Vec::new() },
            trace_state: "k=v".into(),
            flags: 0x301,
            name: format!("op {span}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(span),
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: attributes(),
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "exception".into(),
                attributes: attributes(),
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "a=b".into(),
                attributes: vec![kv("l", Value::IntValue(1))],
                dropped_attributes_count: 4,
                flags: 1,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
        }
    }

    /// Two resources, two scopes, spans with every field, and two spans to reject.
    fn request() -> ExportTraceServiceRequest {
        let scope = |name: &str, spans| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: name.into(),
                version: "1.0".into(),
                attributes: vec![kv("scope.attr", Value::IntValue(1))],
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        };
        let resource = |service: &str, scope_spans| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans,
            schema_url: String::new(),
        };
        let mut invalid = span(2, 2);
        invalid.span_id = vec![1; 7];
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource(
                    "front",
                    vec![
                        scope("a", vec![span(1, 1), span(1, 2)]),
                        scope("b", vec![invalid]),
                    ],
                ),
                resource("back", vec![scope("a", vec![span(1, 3), Span::default()])]),
            ],
        }
    }

    /// Reads `bytes` both ways: in place, and as prost understands them re-encoded canonically.
    /// Either both fail, or both give the same columns, entries and rejections.
    fn reads_as_prost_does(bytes: &[u8]) -> bool {
        let ours = SpanBatch::from_protobuf(bytes);
        let Ok(request) = ExportTraceServiceRequest::decode(bytes) else {
            return ours.is_err();
        };
        let Ok((ours, ours_rejected)) = ours else {
            return false;
        };
        let (theirs, theirs_rejected) = SpanBatch::from_request(&request);
        let fingerprints = |batch: &SpanBatch| {
            let resources = batch.resources.iter().map(|r| r.fingerprint.clone());
            let scopes = batch.scopes.iter().map(|s| s.fingerprint.clone());
            let key_sets = batch.key_sets.iter().map(|k| k.fingerprint.clone());
            resources.chain(scopes).chain(key_sets).collect::<Vec<_>>()
        };
        ours.len() == theirs.len()
            && ours_rejected == theirs_rejected
            && fingerprints(&ours) == fingerprints(&theirs)
            && ours
                .columns
                .iter()
                .zip(&theirs.columns)
                .all(|(a, b)| a.to_data() == b.to_data())
    }

    /// The fields of a message in reverse order, and so on down every length-delimited field
    /// that reads as a message (a string that happens to is reversed too: still valid bytes to
    /// compare on).
    fn reversed(message: &[u8], depth: u32) -> Option<Vec<u8>> {
        let fields: Vec<(u32, Wire)> = Fields::new(message).collect::<Result<_, _>>().ok()?;
        let mut out = Vec::new();
        for (field, wire) in fields.into_iter().rev() {
            let key = |wire_type: u64, out: &mut Vec<u8>| {
                prost::encoding::encode_varint(u64::from(field) << 3 | wire_type, out)
            };
            match wire {
                Wire::Varint(v) => {
                    key(0, &mut out);
                    prost::encoding::encode_varint(v, &mut out);
                }
                Wire::Fixed64(v) => {
                    key(1, &mut out);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Wire::Fixed32(v) => {
                    key(5, &mut out);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Wire::Bytes(bytes) => {
                    let inner = (depth < 8).then(|| reversed(bytes, depth + 1)).flatten();
                    let inner = inner.unwrap_or_else(|| bytes.to_vec());
                    key(2, &mut out);
                    prost::encoding::encode_varint(inner.len() as u64, &mut out);
                    out.extend_from_slice(&inner);
                }
                Wire::Group => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn a_request_reads_as_prost_reads_it() {
        let canonical = request().encode_to_vec();
        let (batch, rejections) = SpanBatch::from_protobuf(&canonical).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(rejections.count, 2, "a short span id and an empty span");
        assert_eq!(
            rejections.first_reason.as_deref(),
            Some("resourceSpans[0].scopeSpans[1].spans[0]: span id must be 8 bytes long, got 7")
        );
        assert!(reads_as_prost_does(&canonical));

        let reordered = reversed(&canonical, 0).unwrap();
        assert_ne!(reordered, canonical);
        assert!(reads_as_prost_does(&reordered), "fields in any order");

        // A message repeated is a merge: singular fields take the last value, repeated ones add up.
        let mut merged = canonical.clone();
        merged.extend_from_slice(&reordered);
        assert!(reads_as_prost_does(&merged), "messages merged");

        // Unknown fields of every wire type, a group among them, are skipped.
        let mut unknown = canonical.clone();
        unknown.extend_from_slice(&[0xa8, 0x06, 0x01]); // field 101, varint
        unknown.extend_from_slice(&[0xab, 0x06, 0x08, 0x01, 0xac, 0x06]); // field 101, group
        unknown.extend_from_slice(&[0xad, 0x06, 1, 2, 3, 4]); // field 101, fixed32
        assert!(reads_as_prost_does(&unknown), "unknown fields");
        assert_eq!(SpanBatch::from_protobuf(&unknown).unwrap().0.len(), 3);
    }

    #[test]
    fn damaged_bytes_fail_or_read_as_they_do_in_prost() {
        let canonical = request().encode_to_vec();
        for end in 0..canonical.len() {
            assert!(reads_as_prost_does(&canonical[..end]), "cut at {end}");
        }
        let mut damaged = canonical.clone();
        for at in 0..canonical.len() {
            for value in [
                0x00,
                0x07,
                0x0c,
                0x80,
                0xff,
                canonical[at] ^ 0x01,
                canonical[at] ^ 0x08,
            ] {
                damaged[at] = value;
                assert!(reads_as_prost_does(&damaged), "byte {at} set to {value:#x}");
            }
            damaged[at] = canonical[at];
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let mut span = span(1, 1).encode_to_vec();
        span.extend_from_slice(&[0x2a, 0x02, 0xc3, 0x28]); // name: invalid UTF-8
        let error = SpanFields::read(&span, &mut Vec::new()).err().unwrap();
        assert_eq!(error.to_string(), "Span.name is not valid UTF-8");
        let error = SpanFields::read(&[0x38, 0x01], &mut Vec::new()).err().unwrap();
        assert_eq!(
            error.to_string(),
            "Span.start_time_unix_nano has the wrong wire type; expected fixed64"
        );
        let error = SpanFields::read(&[0x2a, 0x05, b'a'], &mut Vec::new())
            .err()
            .unwrap();
        assert_eq!(error.to_string(), "a field runs past the end of its message");
    }
}
