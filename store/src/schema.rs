//! The on-disk layout: storage tables written by the writer, and the stable views users query.
//!
//! Spans live in `span_data`, one row per span, with typed columns for what searches filter on
//! and nested columns for the rest. Resources and scopes repeat across thousands of spans, so each
//! distinct one is stored once in `resources` / `scopes` and referenced by a small integer id.
//! See docs/schema.md for the user-facing description; keep the two in step.

/// Bumped whenever a table changes shape; a data directory of another version is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// One attribute value: exactly one field is non-NULL (all NULL for an empty OTLP AnyValue).
/// Arrays and key-value lists are kept as their OTLP/JSON AnyValue text in `json`, losslessly.
pub const ATTRIBUTE_VALUE: &str =
    "STRUCT(str VARCHAR, int BIGINT, dbl DOUBLE, bool BOOLEAN, bytes BLOB, json VARCHAR)";

pub fn ddl() -> String {
    let attrs = format!("MAP(VARCHAR, {ATTRIBUTE_VALUE})");
    format!(
        r#"
CREATE TABLE IF NOT EXISTS ducktrace_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);

CREATE TABLE IF NOT EXISTS resources (
    resource_id UINTEGER NOT NULL,
    service_name VARCHAR NOT NULL,
    attributes {attrs} NOT NULL,
    dropped_attributes_count UINTEGER NOT NULL,
    schema_url VARCHAR NOT NULL,
    fingerprint BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS scopes (
    scope_id UINTEGER NOT NULL,
    name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    attributes {attrs} NOT NULL,
    dropped_attributes_count UINTEGER NOT NULL,
    schema_url VARCHAR NOT NULL,
    fingerprint BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS span_data (
    trace_id UUID NOT NULL,
    span_id UBIGINT NOT NULL,
    parent_span_id UBIGINT,
    start_time TIMESTAMP_NS NOT NULL,
    duration_ns BIGINT NOT NULL,
    service_name VARCHAR NOT NULL,
    span_name VARCHAR NOT NULL,
    span_kind UTINYINT NOT NULL,
    status_code UTINYINT,
    status_message VARCHAR NOT NULL,
    resource_id UINTEGER NOT NULL,
    scope_id UINTEGER NOT NULL,
    trace_state VARCHAR NOT NULL,
    flags UINTEGER NOT NULL,
    attributes {attrs} NOT NULL,
    dropped_attributes_count UINTEGER NOT NULL,
    events STRUCT("time" TIMESTAMP_NS, name VARCHAR, attributes {attrs}, dropped_attributes_count UINTEGER)[] NOT NULL,
    dropped_events_count UINTEGER NOT NULL,
    links STRUCT(trace_id BLOB, span_id UBIGINT, trace_state VARCHAR, attributes {attrs}, dropped_attributes_count UINTEGER, flags UINTEGER)[] NOT NULL,
    dropped_links_count UINTEGER NOT NULL
);

-- The text form of one attribute value, for display and for comparisons in SQL.
CREATE OR REPLACE MACRO attr_text(v) AS
    coalesce(v.str, CAST(v.int AS VARCHAR), CAST(v.dbl AS VARCHAR), CAST(v.bool AS VARCHAR), v.json, lower(hex(v.bytes)));
-- attr(attributes, 'http.route'): the value of one attribute as text, NULL when absent.
CREATE OR REPLACE MACRO attr(attributes, key) AS attr_text(attributes[key]);
CREATE OR REPLACE MACRO span_id_hex(id) AS CASE WHEN id IS NULL THEN NULL ELSE format('{{:016x}}', id) END;
CREATE OR REPLACE MACRO span_kind_name(kind) AS
    ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'][kind + 1];
CREATE OR REPLACE MACRO status_code_name(code) AS ['UNSET', 'OK', 'ERROR'][code + 1];

CREATE OR REPLACE VIEW spans AS
SELECT
    replace(CAST(s.trace_id AS VARCHAR), '-', '') AS trace_id,
    span_id_hex(s.span_id) AS span_id,
    span_id_hex(s.parent_span_id) AS parent_span_id,
    s.service_name,
    s.span_name,
    span_kind_name(s.span_kind) AS span_kind,
    s.start_time,
    make_timestamp_ns(epoch_ns(s.start_time) + s.duration_ns) AS end_time,
    s.duration_ns,
    status_code_name(coalesce(s.status_code, 0)) AS status_code,
    s.status_message,
    s.attributes,
    r.attributes AS resource_attributes,
    sc.name AS scope_name,
    sc.version AS scope_version,
    s.trace_state,
    s.flags,
    s.events,
    s.links,
    s.dropped_attributes_count,
    s.dropped_events_count,
    s.dropped_links_count
FROM span_data s
JOIN resources r USING (resource_id)
JOIN scopes sc USING (scope_id);
"#
    )
}
