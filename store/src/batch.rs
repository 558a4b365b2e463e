//! Turns one OTLP export request into columns ready for the writer, validating every span once.
//!
//! This runs on the request's own task, so decoding and column building spread over all cores;
//! the single writer thread only assigns resource/scope ids and appends.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use duckdb::arrow::array::{
    ArrayRef, FixedSizeBinaryArray, Int64Array, RecordBatch, StringBuilder, TimestampNanosecondArray,
    UInt32Array, UInt64Array, UInt8Array,
};
use duckdb::arrow::buffer::Buffer;
use duckdb::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, InstrumentationScope};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::attribute_text::Attribute;
use crate::columns::{self, EventColumn, EventRow, KeySet, KeySetColumn, LinkColumn, LinkRow};
use crate::ids::{parent_span_id, SpanId, TraceId};
use crate::otlp_wire::{Fields, SpanFields, WireError};

/// The service name OTel SDKs report when none is configured.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Position of `start_time` in `span_schema`.
pub(crate) const START_TIME_COLUMN: usize = 3;
/// Positions of the id columns the writer fills in (see `span_schema`).
pub(crate) const RESOURCE_ID_COLUMN: usize = 10;
pub(crate) const SCOPE_ID_COLUMN: usize = 11;
pub(crate) const KEY_SET_COLUMN: usize = 14;
/// The keys of a span whose key set is not stored (see `columns::key_set_fields`).
pub(crate) const INLINE_KEYS_COLUMN: usize = KEY_SET_COLUMN + 1;

/// The Arrow schema of `span_data`, column for column.
pub(crate) fn span_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                trace_id_field(),
                Field::new("span_id", DataType::UInt64, false),
                Field::new("parent_span_id", DataType::UInt64, true),
                Field::new(
                    "start_time",
                    DataType::Timestamp(TimeUnit::Nanosecond, None),
                    false,
                ),
                Field::new("duration_ns", DataType::Int64, false),
                Field::new("service_name", DataType::Utf8, false),
                Field::new("span_name", DataType::Utf8, false),
                Field::new("span_kind", DataType::UInt8, false),
                Field::new("status_code", DataType::UInt8, true),
                Field::new("status_message", DataType::Utf8, false),
                Field::new("resource_id", DataType::UInt32, false),
                Field::new("scope_id", DataType::UInt32, false),
                Field::new("trace_state", DataType::Utf8, false),
                Field::new("flags", DataType::UInt32, false),
            ];
            fields.extend(columns::key_set_fields());
            fields.extend([
                Field::new("dropped_attributes_count", DataType::UInt32, false),
                Field::new("events", columns::events_type(), false),
                Field::new("dropped_events_count", DataType::UInt32, false),
                Field::new("links", columns::links_type(), false),
                Field::new("dropped_links_count", DataType::UInt32, false),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// A trace id column: 16 bytes, marked as a UUID so DuckDB stores it as one.
pub(crate) fn trace_id_field() -> Field {
    Field::new("trace_id", DataType::FixedSizeBinary(16), false)
        .with_metadata([("ARROW:extension:name".to_string(), "arrow.uuid".to_string())].into())
}

/// A resource as first seen in a batch; the writer stores each distinct one once.
pub struct ResourceEntry {
    /// Canonical bytes of the resource and its schema URL: equal fingerprints, same resource.
    pub fingerprint: Vec<u8>,
    pub service_name: String,
    pub resource: Resource,
    pub schema_url: String,
}

/// An instrumentation scope as first seen in a batch.
pub struct ScopeEntry {
    pub fingerprint: Vec<u8>,
    pub scope: InstrumentationScope,
    pub schema_url: String,
}

/// The accepted spans of one request as columns, plus the resources, scopes and attribute key
/// sets they refer to. `columns[RESOURCE_ID_COLUMN]`, `columns[SCOPE_ID_COLUMN]` and
/// `columns[KEY_SET_COLUMN]` hold indexes into `resources`, `scopes` and `key_sets` until the
/// writer swaps in the stored ids.
pub struct SpanBatch {
    /// `span_schema()`, or for imported spans the same columns with their nested types as read.
    pub(crate) schema: SchemaRef,
    pub(crate) columns: Vec<ArrayRef>,
    pub(crate) resources: Vec<ResourceEntry>,
    pub(crate) scopes: Vec<ScopeEntry>,
    pub(crate) key_sets: Vec<KeySet>,
    /// The OTLP/protobuf request the spans were read from, kept for the ingest log, which
    /// rebuilds the batch from it after a crash. Imported spans have none and are durable only
    /// once DuckDB commits them.
    pub(crate) request: Option<Vec<u8>>,
    len: usize,
}

/// Spans a request carried that cannot be stored, reported back as OTLP partial success.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    pub count: u64,
    /// The first reason, with where it happened; enough for a user to find the bad span.
    pub first_reason: Option<String>,
}

impl Rejections {
    fn add(&mut self, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.first_reason.is_none() {
            self.first_reason = Some(reason());
        }
    }
}

impl SpanBatch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A batch of columns in `span_schema` order whose id columns index `resources`, `scopes`
    /// and `key_sets`.
    pub(crate) fn from_columns(
        batch: RecordBatch,
        resources: Vec<ResourceEntry>,
        scopes: Vec<ScopeEntry>,
        key_sets: Vec<KeySet>,
    ) -> Self {
        SpanBatch {
            schema: batch.schema(),
            len: batch.num_rows(),
            columns: batch.columns().to_vec(),
            resources,
            scopes,
            key_sets,
            request: None,
        }
    }

    /// Converts an OTLP/protobuf request, setting aside spans that fail validation. Bytes that
    /// are not a valid request fail it whole, as they would with prost.
    pub fn from_protobuf(request: &[u8]) -> Result<(SpanBatch, Rejections), WireError> {
        let mut builder = BatchBuilder::default();
        let mut rejections = Rejections::default();
        let mut attributes = Vec::new();
        let mut r = 0;
        for field in Fields::new(request) {
            let (1, wire) = field? else { continue };
            let resource_spans = wire.bytes("ExportTraceServiceRequest.resource_spans")?;
            let (resource, schema_url, scope_spans) = read_level::<Resource>(resource_spans, RESOURCE_SPANS)?;
            let resource_index = builder.resource(resource, schema_url);
            for (s, scope_spans) in scope_spans.into_iter().enumerate() {
                let (scope, schema_url, spans) =
                    read_level::<InstrumentationScope>(scope_spans, SCOPE_SPANS)?;
                let scope_index = builder.scope(scope, schema_url);
                for (i, span) in spans.into_iter().enumerate() {
                    let span = SpanFields::read(span, &mut attributes)?;
                    match ValidSpan::check(&span) {
                        Ok(valid) => builder.push(&span, &attributes, valid, resource_index, scope_index),
                        Err(reason) => rejections
                            .add(|| format!("resourceSpans[{r}].scopeSpans[{s}].spans[{i}]: {reason}")),
                    }
                }
            }
            r += 1;
        }
        let mut batch = builder.finish();
        if !batch.is_empty() {
            batch.request = Some(request.to_vec());
        }
        Ok((batch, rejections))
    }

    /// Converts a decoded request (OTLP/JSON arrives as one) through [`SpanBatch::from_protobuf`].
    pub fn from_request(request: &ExportTraceServiceRequest) -> (SpanBatch, Rejections) {
        SpanBatch::from_protobuf(&request.encode_to_vec()).expect("prost encodes valid protobuf")
    }
}

/// The field names of a `ResourceSpans` or a `ScopeSpans`: both hold a resource or scope
/// (field 1), their parts (field 2: scope spans, or spans) and a schema URL (field 3).
const RESOURCE_SPANS: [&str; 3] = [
    "ResourceSpans.resource",
    "ResourceSpans.scope_spans",
    "ResourceSpans.schema_url",
];
const SCOPE_SPANS: [&str; 3] = ["ScopeSpans.scope", "ScopeSpans.spans", "ScopeSpans.schema_url"];

/// Reads a `ResourceSpans` or `ScopeSpans`: its resource or scope (decoded by prost, merged if
/// repeated), its schema URL and its parts in order. Fields come in any order, so the parts are
/// handled after the whole message is read.
fn read_level<'a, M: Message + Default>(
    message: &'a [u8],
    [head_field, parts_field, schema_url_field]: [&'static str; 3],
) -> Result<(M, &'a str, Vec<&'a [u8]>), WireError> {
    let (mut head, mut schema_url, mut parts) = (M::default(), "", Vec::new());
    for field in Fields::new(message) {
        match field? {
            (1, wire) => head.merge(wire.bytes(head_field)?)?,
            (2, wire) => parts.push(wire.bytes(parts_field)?),
            (3, wire) => schema_url = wire.str(schema_url_field)?,
            _ => {}
        }
    }
    Ok((head, schema_url, parts))
}

/// A span's ids, times and enums, converted to their storage types.
struct ValidSpan {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    start: i64,
    duration: i64,
    kind: u8,
    /// None when the span carried no status message at all (not even UNSET).
    status_code: Option<u8>,
    events: Vec<i64>,
    links: Vec<([u8; 16], u64)>,
}

impl ValidSpan {
    fn check(span: &SpanFields<'_>) -> Result<Self, String> {
        let trace_id = TraceId::try_from(span.trace_id).map_err(|e| e.to_string())?;
        let span_id = SpanId::try_from(span.span_id).map_err(|e| e.to_string())?;
        let parent_span_id = parent_span_id(span.parent_span_id).map_err(|e| format!("parent {e}"))?;
        let start = nanos(span.start_time_unix_nano, "start time")?;
        let end = nanos(span.end_time_unix_nano, "end time")?;
        let kind = u8::try_from(span.kind).map_err(|_| format!("span kind {} is out of range", span.kind))?;
        let status_code = span
            .status
            .as_ref()
            .map(|status| {
                u8::try_from(status.code).map_err(|_| format!("status code {} is out of range", status.code))
            })
            .transpose()?;
        let events = span
            .events
            .iter()
            .map(|event| nanos(event.time_unix_nano, "event time"))
            .collect::<Result<_, _>>()?;
        let links = span
            .links
            .iter()
            .map(|link| {
                let trace_id = TraceId::try_from(link.trace_id).map_err(|e| format!("link {e}"))?;
                let span_id = SpanId::try_from(link.span_id).map_err(|e| format!("link {e}"))?;
                Ok((trace_id.to_bytes(), span_id.to_u64()))
            })
            .collect::<Result<_, String>>()?;
        Ok(ValidSpan {
            trace_id,
            span_id,
            parent_span_id,
            start,
            duration: end - start,
            kind,
            status_code,
            events,
            links,
        })
    }
}

/// Timestamps are stored as signed nanoseconds (year 2262 at most).
fn nanos(unix_nano: u64, what: &str) -> Result<i64, String> {
    i64::try_from(unix_nano).map_err(|_| format!("{what} {unix_nano} ns is past the year 2262"))
}

/// The distinct resources (or scopes) of a batch in first-seen order, found by fingerprint.
struct Distinct<T> {
    entries: Vec<T>,
    index: HashMap<Vec<u8>, u32>,
}

impl<T> Default for Distinct<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> Distinct<T> {
    /// The batch-local index of the entry with this fingerprint, made by `entry` when new.
    fn index_of(&mut self, fingerprint: Vec<u8>, entry: impl FnOnce(Vec<u8>) -> T) -> u32 {
        if let Some(&index) = self.index.get(&fingerprint) {
            return index;
        }
        let index = self.entries.len() as u32;
        self.index.insert(fingerprint.clone(), index);
        self.entries.push(entry(fingerprint));
        index
    }
}

#[derive(Default)]
struct BatchBuilder {
    resources: Distinct<ResourceEntry>,
    scopes: Distinct<ScopeEntry>,
    /// Trace ids back to back, 16 bytes each.
    trace_id: Vec<u8>,
    span_id: Vec<u64>,
    parent_span_id: Vec<Option<u64>>,
    start_time: Vec<i64>,
    duration_ns: Vec<i64>,
    service_name: StringBuilder,
    span_name: StringBuilder,
    span_kind: Vec<u8>,
    status_code: Vec<Option<u8>>,
    status_message: StringBuilder,
    resource_ref: Vec<u32>,
    scope_ref: Vec<u32>,
    trace_state: StringBuilder,
    flags: Vec<u32>,
    attributes: KeySetColumn,
    dropped_attributes_count: Vec<u32>,
    events: EventColumn,
    dropped_events_count: Vec<u32>,
    links: LinkColumn,
    dropped_links_count: Vec<u32>,
}

/// The dedupe key of a resource or scope: its length-delimited protobuf encoding followed by
/// the schema URL that qualifies it. The reader decodes the message back from it.
fn fingerprint(message: &impl Message, schema_url: &str) -> Vec<u8> {
    let mut bytes = message.encode_length_delimited_to_vec();
    bytes.extend_from_slice(schema_url.as_bytes());
    bytes
}

pub(crate) fn service_name(resource: &Resource) -> String {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string())
}

impl BatchBuilder {
    fn resource(&mut self, resource: Resource, schema_url: &str) -> u32 {
        self.resources
            .index_of(fingerprint(&resource, schema_url), |fingerprint| ResourceEntry {
                fingerprint,
                service_name: service_name(&resource),
                resource,
                schema_url: schema_url.to_string(),
            })
    }

    fn scope(&mut self, scope: InstrumentationScope, schema_url: &str) -> u32 {
        self.scopes
            .index_of(fingerprint(&scope, schema_url), |fingerprint| ScopeEntry {
                fingerprint,
                scope,
                schema_url: schema_url.to_string(),
            })
    }

    fn push(
        &mut self,
        span: &SpanFields<'_>,
        attributes: &[Attribute<'_>],
        valid: ValidSpan,
        resource: u32,
        scope: u32,
    ) {
        self.trace_id.extend_from_slice(&valid.trace_id.to_bytes());
        self.span_id.push(valid.span_id.to_u64());
        self.parent_span_id.push(valid.parent_span_id.map(SpanId::to_u64));
        self.start_time.push(valid.start);
        self.duration_ns.push(valid.duration);
        self.service_name
            .append_value(&self.resources.entries[resource as usize].service_name);
        self.span_name.append_value(span.name);
        self.span_kind.push(valid.kind);
        self.status_code.push(valid.status_code);
        self.status_message
            .append_value(span.status.as_ref().map_or("", |status| status.message));
        self.resource_ref.push(resource);
        self.scope_ref.push(scope);
        self.trace_state.append_value(span.trace_state);
        self.flags.push(span.flags);
        self.attributes.push(attributes);
        self.dropped_attributes_count.push(span.dropped_attributes_count);
        self.events.push(
            span.events
                .iter()
                .zip(&valid.events)
                .map(|(event, &time)| EventRow {
                    time_unix_nano: time,
                    name: event.name,
                    attributes: &event.attributes,
                    dropped_attributes_count: event.dropped_attributes_count,
                }),
        );
        self.dropped_events_count.push(span.dropped_events_count);
        self.links.push(
            span.links
                .iter()
                .zip(&valid.links)
                .map(|(link, &(trace_id, span_id))| LinkRow {
                    trace_id,
                    span_id,
                    trace_state: link.trace_state,
                    attributes: &link.attributes,
                    dropped_attributes_count: link.dropped_attributes_count,
                    flags: link.flags,
                }),
        );
        self.dropped_links_count.push(span.dropped_links_count);
    }

    fn finish(mut self) -> SpanBatch {
        let len = self.span_id.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(FixedSizeBinaryArray::new(
                16,
                Buffer::from_vec(self.trace_id),
                None,
            )),
            Arc::new(UInt64Array::from(self.span_id)),
            Arc::new(UInt64Array::from(self.parent_span_id)),
            Arc::new(TimestampNanosecondArray::from(self.start_time)),
            Arc::new(Int64Array::from(self.duration_ns)),
            Arc::new(self.service_name.finish()),
            Arc::new(self.span_name.finish()),
            Arc::new(UInt8Array::from(self.span_kind)),
            Arc::new(UInt8Array::from(self.status_code)),
            Arc::new(self.status_message.finish()),
            Arc::new(UInt32Array::from(self.resource_ref)),
            Arc::new(UInt32Array::from(self.scope_ref)),
            Arc::new(self.trace_state.finish()),
            Arc::new(UInt32Array::from(self.flags)),
        ];
        let (attributes, key_sets) = self.attributes.finish();
        columns.extend(attributes);
        columns.extend([
            Arc::new(UInt32Array::from(self.dropped_attributes_count)) as ArrayRef,
            Arc::new(self.events.finish()),
            Arc::new(UInt32Array::from(self.dropped_events_count)),
            Arc::new(self.links.finish()),
            Arc::new(UInt32Array::from(self.dropped_links_count)),
        ]);
        SpanBatch {
            schema: span_schema(),
            columns,
            resources: self.resources.entries,
            scopes: self.scopes.entries,
            key_sets,
            request: None,
            len,
        }
    }
}
