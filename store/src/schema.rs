//! The on-disk layout: storage tables written by the writer, and the stable views users query.
//!
//! Spans live in `span_data`, one row per span, with typed columns for what searches filter on
//! and nested columns for the rest. Resources and scopes repeat across thousands of spans, so each
//! distinct one is stored once in `resources` / `scopes` and referenced by a small integer id;
//! so is each distinct list of span attribute keys (`attribute_key_sets`), a span keeping only
//! its values.
//! See docs/schema.md for the user-facing description; keep the two in step.

/// Bumped whenever a table changes shape; a data directory of another version is refused.
pub const SCHEMA_VERSION: u32 = 5;

/// The table that records the schema version: created, and checked, before anything else.
pub const META_DDL: &str =
    "CREATE TABLE IF NOT EXISTS ducktrace_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);";

/// The value texts of span `s` as a list, in the order of its keys.
pub const SPAN_VALUES: &str = "coalesce(s.attribute_values, string_split(s.attribute_text, chr(31)))";

pub fn ddl() -> String {
    // Every attribute map is value texts plus one type letter per entry (attribute_text.rs).
    let attrs = "attributes MAP(VARCHAR, VARCHAR) NOT NULL, attribute_types VARCHAR NOT NULL";
    let nested_attrs = "attributes MAP(VARCHAR, VARCHAR), attribute_types VARCHAR";
    let values = SPAN_VALUES;
    format!(
        r#"
CREATE TABLE IF NOT EXISTS resources (
    resource_id UINTEGER NOT NULL,
    service_name VARCHAR NOT NULL,
    {attrs},
    dropped_attributes_count UINTEGER NOT NULL,
    schema_url VARCHAR NOT NULL,
    fingerprint BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS scopes (
    scope_id UINTEGER NOT NULL,
    name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    {attrs},
    dropped_attributes_count UINTEGER NOT NULL,
    schema_url VARCHAR NOT NULL,
    fingerprint BLOB NOT NULL
);

-- How far the ingest log is committed: every record before seq, and the first spans of record
-- seq. One row, written by the writer in each of its transactions.
CREATE TABLE IF NOT EXISTS ingest_log_position (
    seq UBIGINT NOT NULL,
    spans UBIGINT NOT NULL
);

-- Each distinct list of span attribute keys, in the order the span sent them; a span stores
-- its key set's id and its values in the same order (or, once the writer's limit of key sets is
-- reached, a new list of keys in its own attribute_keys, with a NULL key set).
CREATE TABLE IF NOT EXISTS attribute_key_sets (
    key_set_id UINTEGER NOT NULL,
    keys VARCHAR[] NOT NULL,
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
    attribute_key_set UINTEGER,
    attribute_keys VARCHAR[],
    -- The values joined by U+001F (columns::VALUE_SEPARATOR); NULL, and the values listed in
    -- attribute_values instead, when one is NULL or holds that character, or there are none.
    attribute_text VARCHAR USING COMPRESSION zstd,
    attribute_values VARCHAR[],
    attribute_types VARCHAR NOT NULL,
    dropped_attributes_count UINTEGER NOT NULL,
    events STRUCT("time" TIMESTAMP_NS, name VARCHAR, {nested_attrs}, dropped_attributes_count UINTEGER)[] NOT NULL,
    dropped_events_count UINTEGER NOT NULL,
    links STRUCT(trace_id BLOB, span_id UBIGINT, trace_state VARCHAR, {nested_attrs}, dropped_attributes_count UINTEGER, flags UINTEGER)[] NOT NULL,
    dropped_links_count UINTEGER NOT NULL
);

-- One row per call from one service to another: a parent span and its child in another
-- service, found by the edge indexer as spans arrive (see edges.rs).
CREATE TABLE IF NOT EXISTS service_calls (
    time TIMESTAMP_NS NOT NULL,
    caller VARCHAR NOT NULL,
    callee VARCHAR NOT NULL,
    callee_operation VARCHAR NOT NULL,
    duration_ns BIGINT NOT NULL,
    error BOOLEAN NOT NULL,
    trace_id UUID NOT NULL
);

-- Calls per minute, caller, callee and latency bin (floor(8 * log2(duration_ns))), folded in
-- from service_calls as they are found (see edges.rs): what the dependency graph reads.
CREATE TABLE IF NOT EXISTS service_call_minutes (
    minute TIMESTAMP_NS NOT NULL,
    caller VARCHAR NOT NULL,
    callee VARCHAR NOT NULL,
    latency_bin SMALLINT NOT NULL,
    calls UBIGINT NOT NULL,
    errors UBIGINT NOT NULL,
    slowest_ns BIGINT NOT NULL,
    slowest_trace UUID NOT NULL
);

-- One row per trace, kept up to date by the trace summarizer as spans arrive (summaries.rs),
-- so searching and sorting traces never groups all spans. The root is the first span without a
-- parent by start time; while none has arrived, the earliest span (root_has_parent is then true).
CREATE TABLE IF NOT EXISTS trace_summaries (
    trace_id UUID NOT NULL,
    start_time TIMESTAMP_NS NOT NULL,
    duration_ns BIGINT NOT NULL,
    span_count UBIGINT NOT NULL,
    error_count UBIGINT NOT NULL,
    root_service VARCHAR NOT NULL,
    root_operation VARCHAR NOT NULL,
    root_has_parent BOOLEAN NOT NULL,
    root_start TIMESTAMP_NS NOT NULL,
    services MAP(VARCHAR, UBIGINT) NOT NULL,
    -- NULL when part of the trace was summarized before this column existed: not known.
    spans_with_events_or_links UBIGINT
);
-- Added after stores were written without it; reading a trace skips the nested event and link
-- columns when it is 0.
ALTER TABLE trace_summaries ADD COLUMN IF NOT EXISTS spans_with_events_or_links UBIGINT;
-- Built by earlier versions to find a trace; trace_blooms does that now, without holding
-- memory (trace_index.rs).
DROP INDEX IF EXISTS trace_summaries_trace_id;

-- A Bloom filter of the key/value attribute pairs of each full block of 8192 spans (rowids
-- block * 8192 and up) and the block's start-time range, for attribute search
-- (attribute_index.rs).
CREATE TABLE IF NOT EXISTS attribute_blooms (
    block BIGINT NOT NULL,
    first_start TIMESTAMP_NS NOT NULL,
    last_start TIMESTAMP_NS NOT NULL,
    bloom BIT NOT NULL
);
-- Whether every span of the block has its values in attribute_text and a stored key set, which
-- lets a search skip the list columns. Blocks indexed by earlier builds get it from the open
-- that adds the column (attribute_index.rs mark_plain_blocks).
ALTER TABLE attribute_blooms ADD COLUMN IF NOT EXISTS plain BOOLEAN;

-- A Bloom filter of the trace ids of each block of 8192 spans (rowids block * 8192 and up; the
-- newest block's first `spans`, replaced as it fills) and their start-time range, for reading a
-- trace (trace_index.rs).
CREATE TABLE IF NOT EXISTS trace_blooms (
    block BIGINT NOT NULL,
    spans INTEGER NOT NULL,
    first_start TIMESTAMP_NS NOT NULL,
    last_start TIMESTAMP_NS NOT NULL,
    bloom BIT NOT NULL
);

-- Every (service, operation) pair seen, for pickers; appended by the trace summarizer.
CREATE TABLE IF NOT EXISTS operations (
    service_name VARCHAR NOT NULL,
    span_name VARCHAR NOT NULL
);

-- attr(attributes, 'http.route'): one attribute's value text, NULL when absent; the same as
-- attributes['http.route'].
CREATE OR REPLACE MACRO attr(attributes, key) AS attributes[key];
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
    map(coalesce(s.attribute_keys, key_sets[s.attribute_key_set + 1]), {values}) AS attributes,
    s.attribute_types,
    -- The same attributes as two lists: attribute_values[list_position(attribute_keys, 'k')]
    -- reads a value without building each span's map, many times faster over many spans.
    coalesce(s.attribute_keys, key_sets[s.attribute_key_set + 1]) AS attribute_keys,
    {values} AS attribute_values,
    resource_maps[s.resource_id + 1] AS resource_attributes,
    scope_names[s.scope_id + 1] AS scope_name,
    scope_versions[s.scope_id + 1] AS scope_version,
    s.trace_state,
    s.flags,
    s.events,
    s.links,
    s.dropped_attributes_count,
    s.dropped_events_count,
    s.dropped_links_count
-- Key sets, resources and scopes are looked up by position in one list of each: their ids run
-- 0, 1, 2, … without gaps (the writer hands them out in order), and DuckDB cannot drop a join
-- whose columns a query does not use, which cost a search over this view a quarter of its time.
FROM span_data s
CROSS JOIN (SELECT list(keys ORDER BY key_set_id) AS key_sets FROM attribute_key_sets)
CROSS JOIN (SELECT list(attributes ORDER BY resource_id) AS resource_maps FROM resources)
CROSS JOIN (
    SELECT list(name ORDER BY scope_id) AS scope_names, list(version ORDER BY scope_id) AS scope_versions
    FROM scopes
);

-- One row per trace. The root is the span without a parent (the earliest, if several); a trace
-- whose root has not arrived takes its earliest span.
CREATE OR REPLACE VIEW traces AS
SELECT
    replace(CAST(trace_id AS VARCHAR), '-', '') AS trace_id,
    arg_min(service_name, {{'orphan': parent_span_id IS NOT NULL, 'start': start_time}}) AS root_service,
    arg_min(span_name, {{'orphan': parent_span_id IS NOT NULL, 'start': start_time}}) AS root_operation,
    min(start_time) AS start_time,
    make_timestamp_ns(max(epoch_ns(start_time) + duration_ns)) AS end_time,
    max(epoch_ns(start_time) + duration_ns) - epoch_ns(min(start_time)) AS duration_ns,
    count(*) AS span_count,
    count(*) FILTER (WHERE status_code = 2) AS error_count,
    list(DISTINCT service_name ORDER BY service_name) AS services
FROM span_data
GROUP BY trace_id;

CREATE OR REPLACE VIEW span_events AS
SELECT
    replace(CAST(s.trace_id AS VARCHAR), '-', '') AS trace_id,
    span_id_hex(s.span_id) AS span_id,
    s.service_name,
    s.span_name,
    e.event.time AS time,
    e.event.name AS name,
    e.event.attributes AS attributes,
    e.event.attribute_types AS attribute_types,
    e.event.dropped_attributes_count AS dropped_attributes_count
FROM span_data s, unnest(s.events) AS e(event);

CREATE OR REPLACE VIEW span_links AS
SELECT
    replace(CAST(s.trace_id AS VARCHAR), '-', '') AS trace_id,
    span_id_hex(s.span_id) AS span_id,
    s.service_name,
    s.span_name,
    lower(hex(l.link.trace_id)) AS linked_trace_id,
    span_id_hex(l.link.span_id) AS linked_span_id,
    l.link.trace_state AS trace_state,
    l.link.attributes AS attributes,
    l.link.attribute_types AS attribute_types,
    l.link.dropped_attributes_count AS dropped_attributes_count,
    l.link.flags AS flags
FROM span_data s, unnest(s.links) AS l(link);

-- Calls between services per minute, with error counts and latency of the called span.
CREATE OR REPLACE VIEW service_edges AS
SELECT
    time_bucket(INTERVAL 1 MINUTE, time) AS bucket,
    caller,
    callee,
    count(*) AS calls,
    count(*) FILTER (WHERE error) AS errors,
    CAST(quantile_cont(duration_ns, 0.5) AS BIGINT) AS p50_ns,
    CAST(quantile_cont(duration_ns, 0.99) AS BIGINT) AS p99_ns
FROM service_calls
GROUP BY ALL;
"#
    )
}
