//! One trace as a tree of spans, for the trace page: every span with what it inherits from its
//! resource and scope, its place in the tree, and what the trace as a whole tells (critical
//! path, self time per service and operation).
//!
//! Real traces are untidy, and every one of them still gets a tree: a span whose parent is not
//! in the trace (not arrived, or dropped) becomes a root marked `missing_parent`; a span that
//! starts before or ends after its parent (clock skew between hosts) is marked
//! `outside_parent`; parent cycles and duplicate span ids cannot loop.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use duckdb::Connection;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, Span};

use crate::ids::{SpanId, TraceId};
use crate::{StoreError, UNKNOWN_SERVICE};

/// A trace ready to show: spans in tree order (each parent before its children, siblings by
/// start time) with their depth.
#[derive(Debug, Clone)]
pub struct TraceView {
    pub trace_id: TraceId,
    pub spans: Vec<SpanView>,
    /// `children[i]`: indexes into `spans` of the children of span `i`, by start time.
    pub children: Vec<Vec<usize>>,
    /// Spans without a parent in this trace, by start time.
    pub roots: Vec<usize>,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// One span with everything it carries and inherits.
#[derive(Debug, Clone)]
pub struct SpanView {
    pub span_id: Option<SpanId>,
    pub parent_span_id: Option<SpanId>,
    pub service: String,
    pub name: String,
    pub kind: &'static str,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub status: SpanStatus,
    pub status_message: String,
    pub attributes: Vec<Attribute>,
    pub resource: Arc<ResourceView>,
    pub scope: Arc<ScopeView>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
    pub trace_state: String,
    pub flags: u32,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
    /// Levels below its root (0 for roots).
    pub depth: usize,
    /// It names a parent that is not in the trace.
    pub missing_parent: bool,
    /// It starts before or ends after its parent: the hosts' clocks disagree.
    pub outside_parent: bool,
}

impl SpanView {
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(self.duration_ns)
    }

    pub fn is_error(&self) -> bool {
        self.status == SpanStatus::Error
    }
}

/// The OTLP status code of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

impl SpanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "UNSET",
            Self::Ok => "OK",
            Self::Error => "ERROR",
        }
    }
}

/// The resource a span came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceView {
    pub attributes: Vec<Attribute>,
    pub schema_url: String,
}

/// The instrumentation scope that made a span.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeView {
    pub name: String,
    pub version: String,
    pub attributes: Vec<Attribute>,
}

/// One key and its typed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: String,
    pub value: AttributeValue,
}

/// An attribute value with its OTLP type kept, so `500` and `"500"` look different.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Array(Vec<AttributeValue>),
    KeyValues(Vec<Attribute>),
    Empty,
}

impl AttributeValue {
    /// The OTLP type, as shown next to the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::String(_) => "string",
            Self::Int(_) => "int",
            Self::Double(_) => "double",
            Self::Bool(_) => "bool",
            Self::Bytes(_) => "bytes",
            Self::Array(_) => "array",
            Self::KeyValues(_) => "map",
            Self::Empty => "empty",
        }
    }

    fn from_otlp(value: Option<&AnyValue>) -> Self {
        use any_value::Value as Any;
        match value.and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => Self::String(s.clone()),
            // Only in profiles-style string tables, which traces do not use.
            Some(Any::StringValueStrindex(index)) => Self::Int(i64::from(*index)),
            Some(Any::IntValue(i)) => Self::Int(*i),
            Some(Any::DoubleValue(d)) => Self::Double(*d),
            Some(Any::BoolValue(b)) => Self::Bool(*b),
            Some(Any::BytesValue(b)) => Self::Bytes(b.clone()),
            Some(Any::ArrayValue(array)) => {
                Self::Array(array.values.iter().map(|v| Self::from_otlp(Some(v))).collect())
            }
            Some(Any::KvlistValue(list)) => Self::KeyValues(attributes(&list.values)),
            None => Self::Empty,
        }
    }
}

impl fmt::Display for AttributeValue {
    /// Scalars as they are; strings inside arrays and maps quoted, so structure stays readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn nested(value: &AttributeValue, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match value {
                AttributeValue::String(s) => write!(f, "{s:?}"),
                other => write!(f, "{other}"),
            }
        }
        match self {
            Self::String(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Double(d) => write!(f, "{d}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Bytes(b) => f.write_str(&hex::encode(b)),
            Self::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    nested(item, f)?;
                }
                f.write_str("]")
            }
            Self::KeyValues(entries) => {
                f.write_str("{")?;
                for (i, entry) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{:?}: ", entry.key)?;
                    nested(&entry.value, f)?;
                }
                f.write_str("}")
            }
            Self::Empty => Ok(()),
        }
    }
}

/// Something that happened during a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Vec<Attribute>,
}

/// A reference from a span to another span, often in another trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanLink {
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub trace_state: String,
    pub attributes: Vec<Attribute>,
}

/// Time spent by one service or operation in a trace, not counting time in child spans.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTime {
    pub service: String,
    /// Empty in a breakdown by service.
    pub operation: String,
    pub spans: usize,
    pub self_ns: i64,
}

/// Loads and arranges the trace, or `None` when no span of it is stored.
pub(crate) fn load(
    conn: &Connection,
    catalog: &std::sync::Mutex<crate::reader::Catalog>,
    progress: &crate::indexer::Progress,
    trace_id: TraceId,
) -> Result<Option<TraceView>, StoreError> {
    let resource_spans = crate::reader::trace(conn, catalog, progress, trace_id)?;
    Ok(TraceView::from_otlp(trace_id, &resource_spans))
}

impl TraceView {
    /// Arranges the spans of one trace, as read back from the store, into a tree.
    pub fn from_otlp(trace_id: TraceId, resource_spans: &[ResourceSpans]) -> Option<TraceView> {
        let mut spans = Vec::new();
        for group in resource_spans {
            let resource = group.resource.clone().unwrap_or_default();
            let service = service_name(&resource.attributes);
            let resource = Arc::new(ResourceView {
                attributes: attributes(&resource.attributes),
                schema_url: group.schema_url.clone(),
            });
            for scope_group in &group.scope_spans {
                let scope = scope_group.scope.clone().unwrap_or_default();
                let scope = Arc::new(scope_view(&scope));
                for span in &scope_group.spans {
                    spans.push(span_view(span, &service, &resource, &scope));
                }
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|span| span.start_ns);
        Some(Self::arrange(trace_id, spans))
    }

    /// Orders `spans` (sorted by start time) depth-first and links parents to children.
    fn arrange(trace_id: TraceId, by_start: Vec<SpanView>) -> TraceView {
        let mut index_of: HashMap<SpanId, usize> = HashMap::with_capacity(by_start.len());
        for (i, span) in by_start.iter().enumerate() {
            if let Some(id) = span.span_id {
                index_of.entry(id).or_insert(i);
            }
        }
        let parent_of = |i: usize| -> Option<usize> {
            let parent = index_of.get(&by_start[i].parent_span_id?).copied()?;
            (parent != i).then_some(parent)
        };
        let mut children_by_start: Vec<Vec<usize>> = vec![Vec::new(); by_start.len()];
        let mut top: Vec<usize> = Vec::new();
        for i in 0..by_start.len() {
            match parent_of(i) {
                Some(parent) => children_by_start[parent].push(i),
                None => top.push(i),
            }
        }
        // Depth-first from the roots; spans caught in a parent cycle are unreachable from any
        // root and become roots themselves, in start order.
        let mut order: Vec<usize> = Vec::with_capacity(by_start.len());
        let mut depth = vec![0usize; by_start.len()];
        let mut visited = vec![false; by_start.len()];
        let mut stack: Vec<usize> = Vec::new();
        let mut roots_by_start = top.clone();
        let mut next_unvisited = 0;
        loop {
            for &root in roots_by_start.iter().rev() {
                if !visited[root] {
                    stack.push(root);
                    depth[root] = 0;
                }
            }
            roots_by_start.clear();
            while let Some(i) = stack.pop() {
                if visited[i] {
                    continue;
                }
                visited[i] = true;
                order.push(i);
                for &child in children_by_start[i].iter().rev() {
                    if !visited[child] {
                        depth[child] = depth[i] + 1;
                        stack.push(child);
                    }
                }
            }
            while next_unvisited < by_start.len() && visited[next_unvisited] {
                next_unvisited += 1;
            }
            if next_unvisited == by_start.len() {
                break;
            }
            top.push(next_unvisited);
            roots_by_start.push(next_unvisited);
        }

        let mut position = vec![0usize; by_start.len()];
        for (new, &old) in order.iter().enumerate() {
            position[old] = new;
        }
        let is_top: Vec<bool> = {
            let mut is_top = vec![false; by_start.len()];
            for &i in &top {
                is_top[i] = true;
            }
            is_top
        };
        let mut children = vec![Vec::new(); by_start.len()];
        for (old, kids) in children_by_start.iter().enumerate() {
            children[position[old]] = kids
                .iter()
                .filter(|&&kid| !is_top[kid])
                .map(|&kid| position[kid])
                .collect();
        }
        let mut roots: Vec<usize> = top.iter().map(|&old| position[old]).collect();
        roots.sort_by_key(|&i| (by_start[order[i]].start_ns, i));
        let mut outside = vec![false; by_start.len()];
        for (old, kids) in children_by_start.iter().enumerate() {
            let parent = &by_start[old];
            for &kid in kids {
                let child = &by_start[kid];
                outside[kid] =
                    !is_top[kid] && (child.start_ns < parent.start_ns || child.end_ns() > parent.end_ns());
            }
        }

        let mut slots: Vec<Option<SpanView>> = by_start.into_iter().map(Some).collect();
        let spans: Vec<SpanView> = order
            .iter()
            .map(|&old| {
                let mut span = slots[old].take().expect("each span is placed once");
                span.depth = depth[old];
                span.missing_parent = is_top[old] && span.parent_span_id.is_some();
                span.outside_parent = outside[old];
                span
            })
            .collect();
        let start_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end_ns = spans.iter().map(SpanView::end_ns).max().unwrap_or(start_ns);
        TraceView {
            trace_id,
            spans,
            children,
            roots,
            start_ns,
            end_ns,
        }
    }

    pub fn duration_ns(&self) -> i64 {
        self.end_ns - self.start_ns
    }

    /// Levels in the deepest branch.
    pub fn depth(&self) -> usize {
        self.spans.iter().map(|s| s.depth + 1).max().unwrap_or(0)
    }

    pub fn error_count(&self) -> usize {
        self.spans.iter().filter(|s| s.is_error()).count()
    }

    /// Services by first appearance in tree order, with their span counts.
    pub fn services(&self) -> Vec<(String, usize)> {
        let mut services: Vec<(String, usize)> = Vec::new();
        for span in &self.spans {
            match services.iter_mut().find(|(name, _)| *name == span.service) {
                Some((_, count)) => *count += 1,
                None => services.push((span.service.clone(), 1)),
            }
        }
        services
    }

    /// The index of the span with this id.
    pub fn position(&self, span_id: SpanId) -> Option<usize> {
        self.spans.iter().position(|s| s.span_id == Some(span_id))
    }

    /// For each span, whether it lies on the critical path: walking back from the end of each
    /// root, the child that finished last, then the one that finished last before that child
    /// started, and so on, down the tree. These spans set the trace's duration.
    pub fn critical_path(&self) -> Vec<bool> {
        let mut on_path = vec![false; self.spans.len()];
        let mut stack: Vec<(usize, i64)> = self.roots.iter().map(|&r| (r, self.spans[r].end_ns())).collect();
        while let Some((i, until)) = stack.pop() {
            if on_path[i] {
                continue;
            }
            on_path[i] = true;
            let mut by_end = self.children[i].clone();
            by_end.sort_by_key(|&c| std::cmp::Reverse(self.spans[c].end_ns()));
            let mut cursor = until.min(self.spans[i].end_ns());
            let mut first = true;
            for child in by_end {
                let span = &self.spans[child];
                if first || span.end_ns() <= cursor {
                    stack.push((child, span.end_ns().min(cursor.max(span.start_ns))));
                    cursor = span.start_ns;
                    first = false;
                }
            }
        }
        on_path
    }

    /// For each span, its duration minus the time covered by its children (within the span).
    pub fn self_times(&self) -> Vec<i64> {
        self.spans
            .iter()
            .enumerate()
            .map(|(i, span)| {
                let mut intervals: Vec<(i64, i64)> = self.children[i]
                    .iter()
                    .map(|&c| {
                        let child = &self.spans[c];
                        (
                            child.start_ns.max(span.start_ns),
                            child.end_ns().min(span.end_ns()),
                        )
                    })
                    .filter(|(start, end)| start < end)
                    .collect();
                intervals.sort_unstable();
                let mut covered = 0;
                let mut reach = span.start_ns;
                for (start, end) in intervals {
                    let start = start.max(reach);
                    if end > start {
                        covered += end - start;
                        reach = end;
                    }
                }
                (span.duration_ns - covered).max(0)
            })
            .collect()
    }

    /// Self time summed per service (`by_operation` false) or per service and operation,
    /// largest first.
    pub fn self_time_breakdown(&self, by_operation: bool) -> Vec<SelfTime> {
        let self_times = self.self_times();
        let mut rows: Vec<SelfTime> = Vec::new();
        let mut row_of: HashMap<(&str, &str), usize> = HashMap::new();
        for (span, self_ns) in self.spans.iter().zip(self_times) {
            let operation = if by_operation { span.name.as_str() } else { "" };
            let row = *row_of.entry((&span.service, operation)).or_insert_with(|| {
                rows.push(SelfTime {
                    service: span.service.clone(),
                    operation: operation.to_string(),
                    spans: 0,
                    self_ns: 0,
                });
                rows.len() - 1
            });
            rows[row].spans += 1;
            rows[row].self_ns += self_ns;
        }
        rows.sort_by(|a, b| b.self_ns.cmp(&a.self_ns).then_with(|| a.service.cmp(&b.service)));
        rows
    }
}

fn service_name(resource_attributes: &[KeyValue]) -> String {
    resource_attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string())
}

fn attributes(key_values: &[KeyValue]) -> Vec<Attribute> {
    key_values
        .iter()
        .map(|kv| Attribute {
            key: kv.key.clone(),
            value: AttributeValue::from_otlp(kv.value.as_ref()),
        })
        .collect()
}

fn scope_view(scope: &InstrumentationScope) -> ScopeView {
    ScopeView {
        name: scope.name.clone(),
        version: scope.version.clone(),
        attributes: attributes(&scope.attributes),
    }
}

fn span_view(span: &Span, service: &str, resource: &Arc<ResourceView>, scope: &Arc<ScopeView>) -> SpanView {
    let start_ns = span.start_time_unix_nano as i64;
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
    let (status, status_message) = match &span.status {
        Some(status) => (
            match StatusCode::try_from(status.code) {
                Ok(StatusCode::Ok) => SpanStatus::Ok,
                Ok(StatusCode::Error) => SpanStatus::Error,
                _ => SpanStatus::Unset,
            },
            status.message.clone(),
        ),
        None => (SpanStatus::Unset, String::new()),
    };
    SpanView {
        span_id: SpanId::try_from(span.span_id.as_slice()).ok(),
        parent_span_id: SpanId::try_from(span.parent_span_id.as_slice()).ok(),
        service: service.to_string(),
        name: span.name.clone(),
        kind: kind
            .as_str_name()
            .strip_prefix("SPAN_KIND_")
            .unwrap_or("UNSPECIFIED"),
        start_ns,
        duration_ns: (span.end_time_unix_nano as i64).saturating_sub(start_ns),
        status,
        status_message,
        attributes: attributes(&span.attributes),
        resource: Arc::clone(resource),
        scope: Arc::clone(scope),
        events: span
            .events
            .iter()
            .map(|event| SpanEvent {
                time_ns: event.time_unix_nano as i64,
                name: event.name.clone(),
                attributes: attributes(&event.attributes),
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|link| SpanLink {
                trace_id: TraceId::try_from(link.trace_id.as_slice()).ok(),
                span_id: SpanId::try_from(link.span_id.as_slice()).ok(),
                trace_state: link.trace_state.clone(),
                attributes: attributes(&link.attributes),
            })
            .collect(),
        trace_state: span.trace_state.clone(),
        flags: span.flags,
        dropped_attributes_count: span.dropped_attributes_count,
        dropped_events_count: span.dropped_events_count,
        dropped_links_count: span.dropped_links_count,
        depth: 0,
        missing_parent: false,
        outside_parent: false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    /// A trace of `(service, name, span id, parent id, start ms, end ms)` spans.
    pub(crate) fn trace(spans: &[(&str, &str, u64, u64, i64, i64)]) -> TraceView {
        let resource_spans = spans
            .iter()
            .map(|&(service, name, id, parent, start, end)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: name.into(),
                        span_id: id.to_be_bytes().to_vec(),
                        parent_span_id: if parent == 0 {
                            vec![]
                        } else {
                            parent.to_be_bytes().to_vec()
                        },
                        start_time_unix_nano: (start * 1_000_000) as u64,
                        end_time_unix_nano: (end * 1_000_000) as u64,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect::<Vec<_>>();
        let trace_id: TraceId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
        TraceView::from_otlp(trace_id, &resource_spans).unwrap()
    }

    fn names(view: &TraceView) -> Vec<(&str, usize)> {
        view.spans.iter().map(|s| (s.name.as_str(), s.depth)).collect()
    }

    #[test]
    fn spans_come_in_tree_order_with_depths() {
        let view = trace(&[
            ("api", "b", 3, 1, 50, 90),
            ("api", "root", 1, 0, 0, 100),
            ("db", "a", 2, 1, 10, 40),
            ("db", "a.child", 4, 2, 20, 30),
        ]);
        assert_eq!(names(&view), [("root", 0), ("a", 1), ("a.child", 2), ("b", 1)]);
        assert_eq!(view.children[0], [1, 3]);
        assert_eq!(view.roots, [0]);
        assert_eq!(view.depth(), 3);
        assert_eq!(view.duration_ns(), 100_000_000);
        assert_eq!(view.services(), [("api".to_string(), 2), ("db".to_string(), 2)]);
    }

    #[test]
    fn orphans_skew_and_cycles_still_make_a_tree() {
        let view = trace(&[
            ("api", "root", 1, 0, 0, 100),
            ("api", "skewed", 2, 1, 90, 120),
            ("w", "orphan", 5, 99, 10, 20),
            ("x", "loop-a", 6, 7, 30, 40),
            ("x", "loop-b", 7, 6, 31, 41),
            ("x", "self", 8, 8, 50, 60),
        ]);
        assert_eq!(view.spans.len(), 6);
        let by_name = |name: &str| view.spans.iter().find(|s| s.name == name).unwrap();
        assert!(by_name("orphan").missing_parent);
        assert_eq!(by_name("orphan").depth, 0);
        assert!(by_name("skewed").outside_parent);
        assert!(!by_name("root").missing_parent);
        assert_eq!(by_name("loop-b").depth, 1, "a cycle is cut at its earliest span");
        assert!(view.roots.len() >= 4);
    }

    #[test]
    fn critical_path_follows_the_last_finishing_children() {
        let view = trace(&[
            ("api", "root", 1, 0, 0, 100),
            ("api", "fast", 2, 1, 5, 20),
            ("db", "slow", 3, 1, 10, 60),
            ("db", "last", 4, 1, 65, 95),
            ("db", "parallel", 5, 1, 62, 70),
        ]);
        let on_path = view.critical_path();
        let critical: Vec<&str> = view
            .spans
            .iter()
            .zip(&on_path)
            .filter(|(_, on)| **on)
            .map(|(s, _)| s.name.as_str())
            .collect();
        assert_eq!(critical, ["root", "slow", "last"]);
    }

    #[test]
    fn self_time_excludes_overlapping_children_once() {
        let view = trace(&[
            ("api", "root", 1, 0, 0, 100),
            ("db", "q1", 2, 1, 10, 50),
            ("db", "q2", 3, 1, 30, 60),
            ("db", "late", 4, 1, 90, 130),
        ]);
        let self_ms: Vec<i64> = view.self_times().iter().map(|ns| ns / 1_000_000).collect();
        assert_eq!(self_ms, [40, 40, 30, 40]);
        let by_service = view.self_time_breakdown(false);
        assert_eq!(by_service[0].service, "db");
        assert_eq!(by_service[0].self_ns, 110_000_000);
        assert_eq!(by_service[0].spans, 3);
        assert_eq!(view.self_time_breakdown(true).len(), 4);
    }

    #[test]
    fn attribute_values_show_their_structure() {
        let value = AttributeValue::Array(vec![AttributeValue::String("a".into()), AttributeValue::Int(2)]);
        assert_eq!(value.to_string(), r#"["a", 2]"#);
        assert_eq!(value.type_name(), "array");
        let map = AttributeValue::KeyValues(vec![Attribute {
            key: "k".into(),
            value: AttributeValue::Bool(true),
        }]);
        assert_eq!(map.to_string(), r#"{"k": true}"#);
    }
}
