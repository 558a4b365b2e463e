//! `/trace/{trace_id}`: one trace as a waterfall of collapsible spans with a time ruler and a
//! minimap; `?span=` opens one span's details under its row (`/trace/{trace_id}/detail?span=`
//! serves them alone, for explore.js to show in place), `?critical=1` highlights the critical
//! path, and self time is broken down by service and operation.
//!
//! Everything is plain HTML and SVG: the tree folds with `<details>`, bar positions are SVG
//! coordinates (the content security policy forbids inline styles), and selecting a span is a
//! link, so the page works without JavaScript.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ducktrace_store::trace_view::{Attribute, SpanView, TraceView};
use ducktrace_store::{Reader, SpanId, TraceId};
use serde::Deserialize;

use super::chart::coord;
use super::palette::Palette;
use super::{blocking, links, render, time_range, units, PageError};

/// Traces with more spans than this open only their top levels at first.
const OPEN_ALL_UP_TO: usize = 300;
/// Levels open at first in larger traces.
const OPEN_LEVELS: usize = 2;
/// Deeper than this, spans stop nesting in HTML (browsers cap element depth); they keep their
/// indentation and stay visible.
const MAX_NESTING: usize = 60;
/// Pixels of indentation per level, and the most a label is indented.
const INDENT_PX: usize = 14;
const MAX_INDENT_PX: usize = 280;
/// Width of the bar area in SVG units.
const BAR_UNITS: f64 = 1000.0;
/// Rows of the minimap at most: in larger traces spans share rows.
const MINIMAP_ROWS: usize = 120;
/// Operations listed in the self-time breakdown.
const TOP_OPERATIONS: usize = 12;

#[derive(Deserialize, Default)]
pub struct TraceParams {
    span: Option<String>,
    critical: Option<String>,
    expand: Option<String>,
}

/// The page's options, kept in every link it makes.
struct ViewOptions {
    critical: bool,
    expand_all: bool,
}

impl ViewOptions {
    fn href(&self, trace_id: TraceId, span: Option<&str>, critical: bool, expand_all: bool) -> String {
        let query = links::query([
            ("span", span.unwrap_or("")),
            ("critical", if critical { "1" } else { "" }),
            ("expand", if expand_all { "all" } else { "" }),
        ]);
        let anchor = span.map(|id| format!("#span-{id}")).unwrap_or_default();
        format!("/trace/{trace_id}{query}{anchor}")
    }
}

/// One line of the waterfall, or the structure around it.
enum Item {
    /// A span with children: opens a `<details>` whose summary is the row.
    Open(SpanRow),
    /// A span shown without a fold of its own.
    Leaf(SpanRow),
    /// Closes the last `Open`.
    Close,
    /// The selected span's details, right under its row.
    Detail(Box<SpanDetail>),
}

struct SpanRow {
    anchor: String,
    href: String,
    name: String,
    service: String,
    colour: &'static str,
    kind: &'static str,
    duration: String,
    indent_px: usize,
    bar_x: String,
    bar_width: String,
    event_xs: Vec<String>,
    error: bool,
    critical: bool,
    missing_parent: bool,
    outside_parent: bool,
    descendants: usize,
    open: bool,
    selected: bool,
}

struct AttributeRow {
    key: String,
    value: String,
    type_name: &'static str,
}

fn attribute_rows(attributes: &[Attribute]) -> Vec<AttributeRow> {
    attributes
        .iter()
        .map(|a| AttributeRow {
            key: a.key.clone(),
            value: a.value.to_string(),
            type_name: a.value.type_name(),
        })
        .collect()
}

struct EventRow {
    offset: String,
    x: String,
    name: String,
    attributes: Vec<AttributeRow>,
}

struct LinkRow {
    href: Option<String>,
    trace_id: String,
    span_id: String,
    same_trace: bool,
    trace_state: String,
    attributes: Vec<AttributeRow>,
}

struct SpanDetail {
    name: String,
    service: String,
    colour: &'static str,
    kind: &'static str,
    status: &'static str,
    status_message: String,
    error: bool,
    span_id: String,
    parent_span_id: String,
    parent_href: Option<String>,
    start: String,
    offset: String,
    duration: String,
    self_time: String,
    attributes: Vec<AttributeRow>,
    resource_attributes: Vec<AttributeRow>,
    resource_schema_url: String,
    scope_name: String,
    scope_version: String,
    scope_attributes: Vec<AttributeRow>,
    events: Vec<EventRow>,
    links: Vec<LinkRow>,
    trace_state: String,
    flags: u32,
    dropped: String,
    missing_parent: bool,
    outside_parent: bool,
    close_href: String,
}

struct MinimapBar {
    y: String,
    x: String,
    width: String,
    colour: &'static str,
    error: bool,
}

struct Breakdown {
    label: String,
    service: String,
    colour: &'static str,
    spans: usize,
    self_time: String,
    percent: String,
    bar: String,
}

struct ServiceChip {
    name: String,
    colour: &'static str,
    spans: usize,
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    active: &'static str,
    trace_id: String,
    root_service: String,
    root_colour: &'static str,
    root_name: String,
    start: String,
    duration: String,
    depth: usize,
    span_count: String,
    error_count: usize,
    missing_parents: usize,
    outside_parents: usize,
    services: Vec<ServiceChip>,
    ruler: Vec<String>,
    items: Vec<Item>,
    minimap: Vec<MinimapBar>,
    minimap_height: usize,
    by_service: Vec<Breakdown>,
    by_operation: Vec<Breakdown>,
    critical: bool,
    critical_href: String,
    expand_all: bool,
    expand_href: String,
    download_href: String,
    unknown_span: Option<String>,
}

/// What a request for a trace asks for, read and checked once for the page and the fragment.
struct TraceRequest {
    trace_id: TraceId,
    selected: Option<SpanId>,
    options: ViewOptions,
}

impl TraceRequest {
    fn parse(trace_id: &str, params: &TraceParams) -> Result<Self, PageError> {
        let trace_id: TraceId = trace_id
            .parse()
            .map_err(|e| PageError::BadRequest(format!("{e}")))?;
        let selected: Option<SpanId> = match params.span.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => Some(text.parse().map_err(|e| PageError::BadRequest(format!("{e}")))?),
            None => None,
        };
        let options = ViewOptions {
            critical: params.critical.as_deref().is_some_and(|v| !matches!(v, "" | "0")),
            expand_all: params.expand.as_deref() == Some("all"),
        };
        Ok(Self {
            trace_id,
            selected,
            options,
        })
    }

    /// The trace, and the colours of every service in the store.
    async fn load(&self, reader: Reader) -> Result<(TraceView, Palette), PageError> {
        let trace_id = self.trace_id;
        let (view, palette) = blocking(move || {
            // The trace first: the list read after it names every service it holds.
            let view = reader.trace_view(trace_id)?;
            Ok((view, Palette::load(&reader)?))
        })
        .await?;
        let view = view.ok_or_else(|| PageError::NotFound(format!("trace {trace_id} is not stored")))?;
        Ok((view, palette))
    }
}

/// `GET /trace/{trace_id}?span=…&critical=1&expand=all`
pub async fn page(
    State(reader): State<Reader>,
    Path(trace_id): Path<String>,
    Query(params): Query<TraceParams>,
) -> Result<Response, PageError> {
    let request = TraceRequest::parse(&trace_id, &params)?;
    let (view, palette) = request.load(reader).await?;
    let page = trace_page(&view, request.selected, &request.options, &palette);
    render(StatusCode::OK, &page)
}

/// One span's details alone: the markup the page shows under the span's row, from the same
/// template, for explore.js to show in place without loading the whole page again.
#[derive(Template)]
#[template(source = r#"{% include "span_detail.html" %}"#, ext = "html")]
struct DetailFragment {
    detail: SpanDetail,
}

/// `GET /trace/{trace_id}/detail?span=…&critical=1&expand=all`: the details of one span as an
/// HTML fragment, its links the same as on the page at `/trace/{trace_id}?span=…`.
pub async fn detail(
    State(reader): State<Reader>,
    Path(trace_id): Path<String>,
    Query(params): Query<TraceParams>,
) -> Result<Response, PageError> {
    let request = TraceRequest::parse(&trace_id, &params)?;
    let span = request
        .selected
        .ok_or_else(|| PageError::BadRequest("name the span: ?span= and its 16 hex digits".into()))?;
    let (view, palette) = request.load(reader).await?;
    let i = view
        .position(span)
        .ok_or_else(|| PageError::NotFound(format!("span {span} is not in trace {}", view.trace_id)))?;
    let self_ns = view.self_times()[i];
    let fragment = DetailFragment {
        detail: span_detail(&view, i, self_ns, &request.options, &palette),
    };
    render(StatusCode::OK, &fragment)
}

fn trace_page(
    view: &TraceView,
    selected: Option<SpanId>,
    options: &ViewOptions,
    palette: &Palette,
) -> TracePage {
    let trace_id = view.trace_id;
    let total = view.duration_ns().max(1) as f64;
    let x_of = |ns: i64| (ns - view.start_ns) as f64 / total * BAR_UNITS;
    let critical_path = view.critical_path();
    let self_times = view.self_times();
    let selected_index = selected.and_then(|id| view.position(id));

    // Parent of each span in tree order, to open the selected span's ancestors.
    let mut parent = vec![None; view.spans.len()];
    for (i, children) in view.children.iter().enumerate() {
        for &child in children {
            parent[child] = Some(i);
        }
    }
    let mut on_selected_path = vec![false; view.spans.len()];
    let mut cursor = selected_index.and_then(|i| parent[i]);
    while let Some(i) = cursor {
        if on_selected_path[i] {
            break;
        }
        on_selected_path[i] = true;
        cursor = parent[i];
    }
    let mut descendants = vec![0usize; view.spans.len()];
    for i in (0..view.spans.len()).rev() {
        descendants[i] = view.children[i].iter().map(|&c| 1 + descendants[c]).sum();
    }

    let small = view.spans.len() <= OPEN_ALL_UP_TO;
    let mut items = Vec::with_capacity(view.spans.len() + 16);
    let mut open_depths: Vec<usize> = Vec::new();
    for (i, span) in view.spans.iter().enumerate() {
        while open_depths.last().is_some_and(|&depth| depth >= span.depth) {
            open_depths.pop();
            items.push(Item::Close);
        }
        let id = span.span_id.map(|id| id.to_string());
        let start_x = x_of(span.start_ns).clamp(0.0, BAR_UNITS);
        let width = (x_of(span.end_ns()).clamp(0.0, BAR_UNITS) - start_x).max(1.5);
        let open = options.expand_all
            || small
            || span.depth < OPEN_LEVELS
            || on_selected_path[i]
            // Its details sit inside its fold.
            || selected_index == Some(i)
            || (options.critical && critical_path[i]);
        let row = SpanRow {
            anchor: format!("span-{}", id.as_deref().unwrap_or("unknown")),
            href: options.href(trace_id, id.as_deref(), options.critical, options.expand_all),
            name: span.name.clone(),
            service: span.service.clone(),
            colour: palette.class(&span.service),
            kind: span.kind,
            duration: units::duration(span.duration_ns),
            indent_px: (span.depth * INDENT_PX).min(MAX_INDENT_PX),
            bar_x: coord(start_x),
            bar_width: coord(width),
            event_xs: span.events.iter().map(|e| coord(x_of(e.time_ns))).collect(),
            error: span.is_error(),
            critical: options.critical && critical_path[i],
            missing_parent: span.missing_parent,
            outside_parent: span.outside_parent,
            descendants: descendants[i],
            open,
            selected: selected_index == Some(i),
        };
        let nests = !view.children[i].is_empty() && span.depth < MAX_NESTING;
        if nests {
            items.push(Item::Open(row));
            open_depths.push(span.depth);
        } else {
            items.push(Item::Leaf(row));
        }
        if selected_index == Some(i) {
            items.push(Item::Detail(Box::new(span_detail(
                view,
                i,
                self_times[i],
                options,
                palette,
            ))));
        }
    }
    items.extend(open_depths.iter().map(|_| Item::Close));

    let root = &view.spans[view.roots.first().copied().unwrap_or(0)];
    let services = view
        .services()
        .into_iter()
        .map(|(name, spans)| ServiceChip {
            colour: palette.class(&name),
            name,
            spans,
        })
        .collect();
    let minimap_height = view.spans.len().min(MINIMAP_ROWS);
    let minimap = view
        .spans
        .iter()
        .enumerate()
        .map(|(i, span)| {
            let x = x_of(span.start_ns).clamp(0.0, BAR_UNITS);
            MinimapBar {
                y: coord((i * minimap_height) as f64 / view.spans.len() as f64),
                x: coord(x),
                width: coord((x_of(span.end_ns()).clamp(0.0, BAR_UNITS) - x).max(1.0)),
                colour: palette.class(&span.service),
                error: span.is_error(),
            }
        })
        .collect();
    let breakdown = |by_operation: bool, limit: usize| -> Vec<Breakdown> {
        let rows = view.self_time_breakdown(by_operation);
        let sum: i64 = rows.iter().map(|r| r.self_ns).sum::<i64>().max(1);
        rows.into_iter()
            .take(limit)
            .map(|row| {
                let percent = row.self_ns as f64 * 100.0 / sum as f64;
                Breakdown {
                    label: if by_operation {
                        row.operation
                    } else {
                        row.service.clone()
                    },
                    colour: palette.class(&row.service),
                    service: row.service,
                    spans: row.spans,
                    self_time: units::duration(row.self_ns),
                    percent: format!("{percent:.1}%"),
                    bar: coord(percent),
                }
            })
            .collect()
    };
    let selected_text = selected.map(|id| id.to_string());
    TracePage {
        active: "search",
        trace_id: trace_id.to_string(),
        root_colour: palette.class(&root.service),
        root_service: root.service.clone(),
        root_name: root.name.clone(),
        start: time_range::timestamp(view.start_ns),
        duration: units::duration(view.duration_ns()),
        depth: view.depth(),
        span_count: units::count(view.spans.len() as u64),
        error_count: view.error_count(),
        missing_parents: view.spans.iter().filter(|s| s.missing_parent).count(),
        outside_parents: view.spans.iter().filter(|s| s.outside_parent).count(),
        services,
        ruler: (0..=4)
            .map(|quarter| units::duration(view.duration_ns() * quarter / 4))
            .collect(),
        items,
        minimap,
        minimap_height,
        by_service: breakdown(false, usize::MAX),
        by_operation: breakdown(true, TOP_OPERATIONS),
        critical: options.critical,
        critical_href: options.href(
            trace_id,
            selected_text.as_deref(),
            !options.critical,
            options.expand_all,
        ),
        expand_all: options.expand_all,
        expand_href: options.href(
            trace_id,
            selected_text.as_deref(),
            options.critical,
            !options.expand_all,
        ),
        download_href: format!("/api/v3/traces/{trace_id}"),
        unknown_span: selected
            .filter(|_| selected_index.is_none())
            .map(|id| id.to_string()),
    }
}

fn span_detail(
    view: &TraceView,
    i: usize,
    self_ns: i64,
    options: &ViewOptions,
    palette: &Palette,
) -> SpanDetail {
    let span: &SpanView = &view.spans[i];
    let duration = span.duration_ns.max(1) as f64;
    let parent_in_trace = span.parent_span_id.filter(|id| view.position(*id).is_some());
    let dropped = [
        (span.dropped_attributes_count, "attributes"),
        (span.dropped_events_count, "events"),
        (span.dropped_links_count, "links"),
    ]
    .iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect::<Vec<_>>()
    .join(", ");
    SpanDetail {
        name: span.name.clone(),
        service: span.service.clone(),
        colour: palette.class(&span.service),
        kind: span.kind,
        status: span.status.as_str(),
        status_message: span.status_message.clone(),
        error: span.is_error(),
        span_id: span.span_id.map(|id| id.to_string()).unwrap_or_default(),
        parent_span_id: span.parent_span_id.map(|id| id.to_string()).unwrap_or_default(),
        parent_href: parent_in_trace.map(|id| {
            options.href(
                view.trace_id,
                Some(&id.to_string()),
                options.critical,
                options.expand_all,
            )
        }),
        start: time_range::timestamp(span.start_ns),
        offset: units::duration(span.start_ns - view.start_ns),
        duration: units::duration(span.duration_ns),
        self_time: units::duration(self_ns),
        attributes: attribute_rows(&span.attributes),
        resource_attributes: attribute_rows(&span.resource.attributes),
        resource_schema_url: span.resource.schema_url.clone(),
        scope_name: span.scope.name.clone(),
        scope_version: span.scope.version.clone(),
        scope_attributes: attribute_rows(&span.scope.attributes),
        events: span
            .events
            .iter()
            .map(|event| EventRow {
                offset: units::duration(event.time_ns - span.start_ns),
                x: coord(
                    ((event.time_ns - span.start_ns) as f64 / duration * BAR_UNITS).clamp(0.0, BAR_UNITS),
                ),
                name: event.name.clone(),
                attributes: attribute_rows(&event.attributes),
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|link| {
                let span_id = link.span_id.map(|id| id.to_string()).unwrap_or_default();
                LinkRow {
                    href: link.trace_id.map(|trace| {
                        let query = links::query([("span", span_id.as_str())]);
                        let anchor = if span_id.is_empty() {
                            String::new()
                        } else {
                            format!("#span-{span_id}")
                        };
                        format!("/trace/{trace}{query}{anchor}")
                    }),
                    same_trace: link.trace_id == Some(view.trace_id),
                    trace_id: link.trace_id.map(|id| id.to_string()).unwrap_or_default(),
                    span_id,
                    trace_state: link.trace_state.clone(),
                    attributes: attribute_rows(&link.attributes),
                }
            })
            .collect(),
        trace_state: span.trace_state.clone(),
        flags: span.flags,
        dropped,
        missing_parent: span.missing_parent,
        outside_parent: span.outside_parent,
        close_href: options.href(view.trace_id, None, options.critical, options.expand_all),
    }
}
