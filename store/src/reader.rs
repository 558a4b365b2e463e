//! Reads a stored trace back as OTLP, exactly as it was received (up to attribute key order
//! for keys an exporter sent twice, which OTLP forbids).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use prost::Message;

use crate::attribute_text;
use crate::columns;
use crate::ids::{SpanId, TraceId};
use crate::indexer::Progress;
use crate::key_sets;
use crate::trace_index::{self, TraceBlock, TraceSpans, TRACE_BLOOMS};
use crate::StoreError;

/// Resources, scopes, attribute key sets and block filters by id, kept once read: a stored row
/// never changes, so reading a trace whose services were read before needs no query for them.
/// Looking the key sets up here instead of joining them took 2 ms off reading a trace's spans
/// at 10M; reading every block's filter took 27 ms of each attribute search.
#[derive(Default)]
pub(crate) struct Catalog {
    resources: HashMap<u32, (Resource, String)>,
    scopes: HashMap<u32, (InstrumentationScope, String)>,
    key_sets: HashMap<u32, Arc<[String]>>,
    pub(crate) block_filters: HashMap<u32, Arc<[u8]>>,
    /// Every stored trace id filter in block order (trace_index.rs); the newest is read again
    /// as its block fills.
    pub(crate) trace_blocks: Vec<TraceBlock>,
}

/// Entries kept per kind at most (but trace id filters, which are all needed); past it that
/// kind starts over, since a store may hold any number of resources. Attribute block filters
/// are 16 KiB each: 10,000 of them cover 82M spans.
const CATALOG_ENTRIES: usize = 10_000;

/// `ids` as the items of a SQL `IN (…)` list: integers only, safe to inline.
pub(crate) fn id_list(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The entries of `ids` from `cache`, fetching the missing ones with `fetch`.
pub(crate) fn cached<V: Clone>(
    cache: &Mutex<Catalog>,
    part: fn(&mut Catalog) -> &mut HashMap<u32, V>,
    ids: BTreeSet<u32>,
    fetch: impl FnOnce(&[u32]) -> Result<HashMap<u32, V>, StoreError>,
) -> Result<HashMap<u32, V>, StoreError> {
    let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
    let mut found = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    {
        let mut catalog = lock();
        let entries = part(&mut catalog);
        for id in ids {
            match entries.get(&id) {
                Some(entry) => {
                    found.insert(id, entry.clone());
                }
                None => missing.push(id),
            }
        }
    }
    if !missing.is_empty() {
        let fetched = fetch(&missing)?;
        let mut catalog = lock();
        let entries = part(&mut catalog);
        if entries.len() + fetched.len() > CATALOG_ENTRIES {
            entries.clear();
        }
        entries.extend(fetched.iter().map(|(id, entry)| (*id, entry.clone())));
        found.extend(fetched);
    }
    Ok(found)
}

/// A span's attributes as read, before its key set is looked up.
struct StoredAttributes {
    key_set: Option<u32>,
    /// The values joined by `VALUE_SEPARATOR`, as nearly every span stores them.
    text: Option<String>,
    types: String,
    /// Where the span keeps its keys or values in the list columns instead (see
    /// [`StoredAttributes::listed`]): its rowid, to find them by.
    listed_at: Option<i64>,
}

impl StoredAttributes {
    /// Spans with attributes but no joined text, or no stored key set, keep their values or
    /// keys in the list columns.
    fn listed(key_set: Option<u32>, text: &Option<String>, types: &str) -> bool {
        !types.is_empty() && (text.is_none() || key_set.is_none())
    }
}

/// The list columns (`attribute_keys`, `attribute_values`) of a trace's listed spans, by rowid.
type Lists = HashMap<i64, (Value, Value)>;

/// All spans of one trace grouped by resource and scope, or an empty list when none is stored.
pub(crate) fn trace(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    progress: &Progress,
    trace_id: TraceId,
) -> Result<Vec<ResourceSpans>, StoreError> {
    // Taken before the filters are read, so that every span before the tail has a filter to
    // read; the spans of blocks indexed since are read with the tail.
    let unindexed = progress.unindexed(&TRACE_BLOOMS);
    let before = unindexed.as_ref().map_or_else(
        || progress.first_unindexed(&TRACE_BLOOMS),
        |tail| *tail.rowids.start(),
    );
    let mut runs = trace_index::candidate_blocks(conn, catalog, &trace_id.to_bytes(), before)?;
    // Spans not yet indexed may have events or links.
    runs.extend(unindexed.map(|spans| TraceSpans {
        spans,
        events_or_links: true,
    }));
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let trace_rows = TraceRows {
        trace_id: trace_id.to_string(),
        runs,
    };
    let sql = trace_rows.select(
        "span_id, parent_span_id, epoch_ns(start_time), duration_ns, span_name, span_kind,
         status_code, status_message, resource_id, scope_id, trace_state, flags,
         attribute_key_set, attribute_text, attribute_types, rowid,
         dropped_attributes_count, dropped_events_count, dropped_links_count",
        true,
        "",
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([])?;
    let mut spans: Vec<(u32, u32, Span)> = Vec::new();
    let mut attributes: Vec<StoredAttributes> = Vec::new();
    while let Some(row) = rows.next()? {
        let span = Span {
            trace_id: trace_id.to_bytes().to_vec(),
            span_id: span_id_bytes(row.get(0)?),
            parent_span_id: row
                .get::<_, Option<u64>>(1)?
                .map(span_id_bytes)
                .unwrap_or_default(),
            start_time_unix_nano: row.get::<_, i64>(2)? as u64,
            end_time_unix_nano: (row.get::<_, i64>(2)? + row.get::<_, i64>(3)?) as u64,
            name: row.get(4)?,
            kind: row.get::<_, u8>(5)?.into(),
            status: status(row.get(6)?, row.get(7)?),
            trace_state: row.get(10)?,
            flags: row.get(11)?,
            attributes: Vec::new(),
            dropped_attributes_count: row.get(16)?,
            events: list(&row.get(19)?).map(event).collect(),
            dropped_events_count: row.get(17)?,
            links: list(&row.get(20)?).map(link).collect(),
            dropped_links_count: row.get(18)?,
        };
        let (key_set, text, types) = (row.get(12)?, row.get(13)?, row.get::<_, String>(14)?);
        attributes.push(StoredAttributes {
            listed_at: match StoredAttributes::listed(key_set, &text, &types) {
                true => Some(row.get(15)?),
                false => None,
            },
            key_set,
            text,
            types,
        });
        spans.push((row.get(8)?, row.get(9)?, span));
    }
    let key_sets = cached(
        catalog,
        |c| &mut c.key_sets,
        attributes.iter().filter_map(|a| a.key_set).collect(),
        |ids| key_sets::stored_key_sets(conn, Some(ids)),
    )?;
    let lists = match attributes.iter().any(|a| a.listed_at.is_some()) {
        true => listed_attributes(conn, &trace_rows)?,
        false => Lists::new(),
    };
    for ((_, _, span), stored) in spans.iter_mut().zip(&attributes) {
        let (inline_keys, listed_values) = match stored.listed_at.and_then(|rowid| lists.get(&rowid)) {
            Some((keys, values)) => (keys, values),
            None => (&Value::Null, &Value::Null),
        };
        let inline: Vec<String>;
        let keys: &[String] = match stored.key_set {
            Some(id) => key_sets.get(&id).ok_or(StoreError::Dangling {
                table: "attribute_key_sets",
                id,
            })?,
            None => {
                inline = list(inline_keys).map(text).collect();
                &inline
            }
        };
        let joined = stored
            .text
            .as_deref()
            .map(|t| t.split(columns::VALUE_SEPARATOR).map(Some));
        let listed = stored
            .text
            .is_none()
            .then(|| list(listed_values).map(optional_text));
        let values = joined.into_iter().flatten().chain(listed.into_iter().flatten());
        span.attributes = key_values(keys.iter().map(String::as_str).zip(values), &stored.types);
    }
    // Sorted here: an ORDER BY in the statement above made DuckDB carry every nested column
    // through a sort, a fifth of the read.
    spans.sort_unstable_by(|(resource_a, scope_a, a), (resource_b, scope_b, b)| {
        (resource_a, scope_a, a.start_time_unix_nano, &a.span_id).cmp(&(
            resource_b,
            scope_b,
            b.start_time_unix_nano,
            &b.span_id,
        ))
    });
    group(conn, catalog, spans)
}

/// The spans of one trace, among the runs of `span_data` rows that may hold them.
struct TraceRows {
    /// Hex digits only (a parsed id), safe to inline.
    trace_id: String,
    runs: Vec<TraceSpans>,
}

impl TraceRows {
    /// A statement selecting `columns` of the trace's spans that meet `condition` (`AND …` or
    /// nothing), then with `nested` their `events` and `links`: NULLs from the runs whose filter
    /// says none has any, as reading the two took a sixth of the read at 10M spans. A scan per
    /// run, each pruned to its rows; one scan with the runs ORed took up to 18 instead of 4 ms
    /// at p99.
    fn select(&self, columns: &str, nested: bool, condition: &str) -> String {
        let scans: Vec<String> = self
            .runs
            .iter()
            .map(|run| {
                let nested = match (nested, run.events_or_links) {
                    (false, _) => "",
                    (true, true) => ", events, links",
                    (true, false) => ", NULL, NULL",
                };
                format!(
                    "SELECT {columns}{nested} FROM span_data s
                     WHERE s.trace_id = CAST('{}' AS UUID) AND {} {condition}",
                    self.trace_id,
                    run.spans.condition()
                )
            })
            .collect();
        scans.join(" UNION ALL ")
    }
}

/// The list columns of the trace's spans that keep their keys or values there.
fn listed_attributes(conn: &Connection, trace_rows: &TraceRows) -> Result<Lists, StoreError> {
    let sql = trace_rows.select(
        "rowid, attribute_keys, attribute_values",
        false,
        "AND (attribute_key_set IS NULL OR attribute_text IS NULL)",
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Spans sorted by resource and scope id, nested under their resource and scope.
fn group(
    conn: &Connection,
    catalog: &Mutex<Catalog>,
    spans: Vec<(u32, u32, Span)>,
) -> Result<Vec<ResourceSpans>, StoreError> {
    let resources = cached(
        catalog,
        |c| &mut c.resources,
        spans.iter().map(|s| s.0).collect(),
        |ids| stored_messages::<Resource>(conn, "resources", "resource_id", ids),
    )?;
    let scopes = cached(
        catalog,
        |c| &mut c.scopes,
        spans.iter().map(|s| s.1).collect(),
        |ids| stored_messages::<InstrumentationScope>(conn, "scopes", "scope_id", ids),
    )?;
    let mut result: Vec<ResourceSpans> = Vec::new();
    let mut current: Option<(u32, u32)> = None;
    for (resource_id, scope_id, span) in spans {
        if current != Some((resource_id, scope_id)) {
            if current.map(|(resource, _)| resource) != Some(resource_id) {
                let (resource, schema_url) = stored(&resources, "resources", resource_id)?;
                result.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: Vec::new(),
                    schema_url,
                });
            }
            let (scope, schema_url) = stored(&scopes, "scopes", scope_id)?;
            let group = result.last_mut().expect("a resource group was just pushed");
            group.scope_spans.push(ScopeSpans {
                scope: Some(scope),
                spans: Vec::new(),
                schema_url,
            });
            current = Some((resource_id, scope_id));
        }
        let group = result.last_mut().and_then(|r| r.scope_spans.last_mut());
        group.expect("a scope group was just pushed").spans.push(span);
    }
    Ok(result)
}

/// Resources or scopes by id, each exactly as received: the fingerprint is the message's own
/// protobuf encoding, so every field comes back, including ones newer than this schema. One
/// query for all of a trace's ids, however many services it crosses.
fn stored_messages<M: Message + Default>(
    conn: &Connection,
    table: &str,
    id_column: &str,
    ids: &[u32],
) -> Result<HashMap<u32, (M, String)>, StoreError> {
    let list = id_list(ids);
    let sql =
        format!("SELECT {id_column}, fingerprint, schema_url FROM {table} WHERE {id_column} IN ({list})");
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([])?;
    let mut messages = HashMap::with_capacity(ids.len());
    while let Some(row) = rows.next()? {
        let fingerprint: Vec<u8> = row.get(1)?;
        let message = M::decode_length_delimited(fingerprint.as_slice()).map_err(StoreError::Corrupt)?;
        messages.insert(row.get(0)?, (message, row.get(2)?));
    }
    Ok(messages)
}

/// A copy of a fetched resource or scope: one scope can be used under several resources.
fn stored<M: Clone>(messages: &HashMap<u32, M>, table: &'static str, id: u32) -> Result<M, StoreError> {
    messages
        .get(&id)
        .cloned()
        .ok_or(StoreError::Dangling { table, id })
}

fn span_id_bytes(id: u64) -> Vec<u8> {
    SpanId::from_u64(id)
        .map(|id| id.to_bytes().to_vec())
        .unwrap_or_default()
}

fn status(code: Option<u8>, message: String) -> Option<Status> {
    code.map(|code| Status {
        code: code.into(),
        message,
    })
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    let items = match value {
        Value::List(items) | Value::Array(items) => items.as_slice(),
        _ => &[],
    };
    items.iter()
}

fn field<'a>(value: &'a Value, name: &str) -> &'a Value {
    match value {
        Value::Struct(fields) => fields
            .iter()
            .find(|(key, _)| key == name)
            .map_or(&Value::Null, |(_, value)| value),
        _ => &Value::Null,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Text(text) | Value::Enum(text) => text.clone(),
        _ => String::new(),
    }
}

fn unsigned(value: &Value) -> u64 {
    match *value {
        Value::UTinyInt(v) => v.into(),
        Value::USmallInt(v) => v.into(),
        Value::UInt(v) => v.into(),
        Value::UBigInt(v) => v,
        _ => 0,
    }
}

fn unix_nanos(value: &Value) -> u64 {
    match *value {
        Value::Timestamp(unit, amount) => {
            let per_unit = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            (amount * per_unit) as u64
        }
        _ => 0,
    }
}

/// An attribute map and its type letters back to OTLP key-values, in stored order.
fn map_key_values(map: &Value, types: &Value) -> Vec<KeyValue> {
    let Value::Map(entries) = map else {
        return Vec::new();
    };
    let entries = entries.iter().map(|(key, value)| match key {
        Value::Text(key) | Value::Enum(key) => (key.as_str(), optional_text(value)),
        _ => ("", optional_text(value)),
    });
    key_values(entries, &text(types))
}

/// A value text; `None` for NULL, an empty AnyValue.
fn optional_text(value: &Value) -> Option<&str> {
    match value {
        Value::Text(text) => Some(text),
        _ => None,
    }
}

/// Keys with their value texts, and the type letters, back to OTLP key-values.
fn key_values<'a>(entries: impl Iterator<Item = (&'a str, Option<&'a str>)>, types: &str) -> Vec<KeyValue> {
    let letters = types.as_bytes();
    entries
        .enumerate()
        .map(|(i, (key, value))| KeyValue {
            key: key.to_string(),
            value: Some(attribute_text::decode(
                letters.get(i).copied().unwrap_or(b's'),
                value,
            )),
            ..Default::default()
        })
        .collect()
}

fn event(value: &Value) -> Event {
    Event {
        time_unix_nano: unix_nanos(field(value, "time")),
        name: text(field(value, "name")),
        attributes: map_key_values(field(value, "attributes"), field(value, "attribute_types")),
        dropped_attributes_count: unsigned(field(value, "dropped_attributes_count")) as u32,
    }
}

fn link(value: &Value) -> Link {
    Link {
        trace_id: match field(value, "trace_id") {
            Value::Blob(bytes) => bytes.clone(),
            _ => Vec::new(),
        },
        span_id: span_id_bytes(unsigned(field(value, "span_id"))),
        trace_state: text(field(value, "trace_state")),
        attributes: map_key_values(field(value, "attributes"), field(value, "attribute_types")),
        dropped_attributes_count: unsigned(field(value, "dropped_attributes_count")) as u32,
        flags: unsigned(field(value, "flags")) as u32,
    }
}
