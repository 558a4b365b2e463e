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
    from: Option<String>,
    to: Option<String>,
}

/// The stretch of the trace the waterfall spreads across its width, in nanoseconds from the
/// trace's start; spans outside it keep their rows but lose their bars.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Zoom {
    from_ns: i64,
    to_ns: i64,
}

impl Zoom {
    /// The window `from`–`to` (milliseconds from the trace's start, as `?from=40&to=200.5`;
    /// either may be left out) of a trace lasting `duration_ns`, cut to the trace. `None` when
    /// both are left out.
    fn resolve(from_ms: Option<f64>, to_ms: Option<f64>, duration_ns: i64) -> Result<Option<Self>, String> {
        if from_ms.is_none() && to_ms.is_none() {
            return Ok(None);
        }
        let ns = |ms: f64| ((ms * 1e6).round() as i64).clamp(0, duration_ns);
        let zoom = Self {
            from_ns: from_ms.map_or(0, ns),
            to_ns: to_ms.map_or(duration_ns, ns),
        };
        if zoom.to_ns <= zoom.from_ns {
            return Err(format!(
                "the zoom window from {} to {} holds no time of this trace, which lasts {} ms",
                from_ms.map_or("the start".into(), |ms| format!("{ms} ms")),
                to_ms.map_or("the end".into(), |ms| format!("{ms} ms")),
                millis(duration_ns)
            ));
        }
        Ok(Some(zoom))
    }

    fn len_ns(self) -> i64 {
        self.to_ns - self.from_ns
    }
}

/// Reads a `from`/`to` parameter: milliseconds, not negative.
fn millis_param(name: &str, text: Option<&str>) -> Result<Option<f64>, PageError> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(ms)),
        _ => Err(PageError::BadRequest(format!(
            "{name}={text:?} is not a number of milliseconds from the trace's start"
        ))),
    }
}

/// `ns` as milliseconds for a link or a form: at most three decimals, no trailing zeros.
fn millis(ns: i64) -> String {
    let text = format!("{:.3}", ns as f64 / 1e6);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The page's options, kept in every link it makes.
#[derive(Clone, Copy)]
struct ViewOptions {
    critical: bool,
    expand_all: bool,
    zoom: Option<Zoom>,
}

impl ViewOptions {
    /// This page with `span` selected.
    fn href(&self, trace_id: TraceId, span: Option<&str>) -> String {
        let (from, to) = self
            .zoom
            .map(|zoom| (millis(zoom.from_ns), millis(zoom.to_ns)))
            .unwrap_or_default();
        let query = links::query([
            ("span", span.unwrap_or("")),
            ("critical", if self.critical { "1" } else { "" }),
            ("expand", if self.expand_all { "all" } else { "" }),
            ("from", &from),
            ("to", &to),
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
    /// Wholly outside the zoom window: the row stays, without a bar.
    outside: bool,
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
    /// The waterfall zoomed to this span.
    zoom_href: Option<String>,
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

/// The zoom window as the minimap and its form show it.
struct ZoomView {
    from: String,
    to: String,
    /// The minimap's shades left and right of the window, in its units.
    left_width: String,
    right_x: String,
    right_width: String,
    reset_href: String,
}

/// The zoom form: the window typed in milliseconds, and the page's other options kept.
struct ZoomForm {
    action: String,
    duration_ms: String,
    from_ms: String,
    to_ms: String,
    keep: Vec<(&'static str, String)>,
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
    zoom: Option<ZoomView>,
    zoom_form: ZoomForm,
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
    critical: bool,
    expand_all: bool,
    from_ms: Option<f64>,
    to_ms: Option<f64>,
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
        Ok(Self {
            trace_id,
            selected,
            critical: params.critical.as_deref().is_some_and(|v| !matches!(v, "" | "0")),
            expand_all: params.expand.as_deref() == Some("all"),
            from_ms: millis_param("from", params.from.as_deref())?,
            to_ms: millis_param("to", params.to.as_deref())?,
        })
    }

    /// The trace, the colours of every service in the store, and the options for this trace.
    async fn load(&self, reader: Reader) -> Result<(TraceView, Palette, ViewOptions), PageError> {
        let trace_id = self.trace_id;
        let (view, palette) = blocking(move || {
            // The trace first: the list read after it names every service it holds.
            let view = reader.trace_view(trace_id)?;
            Ok((view, Palette::load(&reader)?))
        })
        .await?;
        let view = view.ok_or_else(|| PageError::NotFound(format!("trace {trace_id} is not stored")))?;
        let options = ViewOptions {
            critical: self.critical,
            expand_all: self.expand_all,
            zoom: Zoom::resolve(self.from_ms, self.to_ms, view.duration_ns())
                .map_err(PageError::BadRequest)?,
        };
        Ok((view, palette, options))
    }
}

/// `GET /trace/{trace_id}?span=…&critical=1&expand=all`
pub async fn page(
    State(reader): State<Reader>,
    Path(trace_id): Path<String>,
    Query(params): Query<TraceParams>,
) -> Result<Response, PageError> {
    let request = TraceRequest::parse(&trace_id, &params)?;
    let (view, palette, options) = request.load(reader).await?;
    let page = trace_page(&view, request.selected, &options, &palette);
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
    let (view, palette, options) = request.load(reader).await?;
    let i = view
        .position(span)
        .ok_or_else(|| PageError::NotFound(format!("span {span} is not in trace {}", view.trace_id)))?;
    let self_ns = view.self_times()[i];
    let fragment = DetailFragment {
        detail: span_detail(&view, i, self_ns, &options, &palette),
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
    let window = options.zoom.unwrap_or(Zoom {
        from_ns: 0,
        to_ns: view.duration_ns(),
    });
    // Waterfall positions spread the window over the bar area; the minimap keeps the whole trace.
    let x_of =
        |ns: i64| (ns - view.start_ns - window.from_ns) as f64 / window.len_ns().max(1) as f64 * BAR_UNITS;
    let whole = view.duration_ns().max(1) as f64;
    let minimap_x = |ns: i64| ((ns - view.start_ns) as f64 / whole * BAR_UNITS).clamp(0.0, BAR_UNITS);
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
        let offset_ns = span.start_ns - view.start_ns;
        let outside = offset_ns > window.to_ns || offset_ns + span.duration_ns < window.from_ns;
        let open = options.expand_all
            || small
            || span.depth < OPEN_LEVELS
            || on_selected_path[i]
            // Its details sit inside its fold.
            || selected_index == Some(i)
            || (options.critical && critical_path[i]);
        let row = SpanRow {
            anchor: format!("span-{}", id.as_deref().unwrap_or("unknown")),
            outside,
            href: options.href(trace_id, id.as_deref()),
            name: span.name.clone(),
            service: span.service.clone(),
            colour: palette.class(&span.service),
            kind: span.kind,
            duration: units::duration(span.duration_ns),
            indent_px: (span.depth * INDENT_PX).min(MAX_INDENT_PX),
            bar_x: coord(start_x),
            bar_width: coord(width),
            event_xs: span
                .events
                .iter()
                .map(|e| x_of(e.time_ns))
                .filter(|x| (0.0..=BAR_UNITS).contains(x))
                .map(coord)
                .collect(),
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
            let x = minimap_x(span.start_ns);
            MinimapBar {
                y: coord((i * minimap_height) as f64 / view.spans.len() as f64),
                x: coord(x),
                width: coord((minimap_x(span.end_ns()) - x).max(1.0)),
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
            .map(|quarter| units::duration(window.from_ns + window.len_ns() * quarter / 4))
            .collect(),
        items,
        minimap,
        minimap_height,
        zoom: options.zoom.map(|zoom| {
            let (left, right) = (
                minimap_x(view.start_ns + zoom.from_ns),
                minimap_x(view.start_ns + zoom.to_ns),
            );
            ZoomView {
                from: units::duration(zoom.from_ns),
                to: units::duration(zoom.to_ns),
                left_width: coord(left),
                right_x: coord(right),
                right_width: coord(BAR_UNITS - right),
                reset_href: ViewOptions {
                    zoom: None,
                    ..*options
                }
                .href(trace_id, selected_text.as_deref()),
            }
        }),
        zoom_form: ZoomForm {
            action: format!("/trace/{trace_id}"),
            duration_ms: millis(view.duration_ns()),
            from_ms: options.zoom.map(|zoom| millis(zoom.from_ns)).unwrap_or_default(),
            to_ms: options.zoom.map(|zoom| millis(zoom.to_ns)).unwrap_or_default(),
            keep: [
                ("span", selected_text.clone().unwrap_or_default()),
                ("critical", if options.critical { "1" } else { "" }.to_string()),
                ("expand", if options.expand_all { "all" } else { "" }.to_string()),
            ]
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect(),
        },
        by_service: breakdown(false, usize::MAX),
        by_operation: breakdown(true, TOP_OPERATIONS),
        critical: options.critical,
        critical_href: ViewOptions {
            critical: !options.critical,
            ..*options
        }
        .href(trace_id, selected_text.as_deref()),
        expand_all: options.expand_all,
        expand_href: ViewOptions {
            expand_all: !options.expand_all,
            ..*options
        }
        .href(trace_id, selected_text.as_deref()),
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
        parent_href: parent_in_trace.map(|id| options.href(view.trace_id, Some(&id.to_string()))),
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
        close_href: options.href(view.trace_id, None),
        zoom_href: (span.duration_ns > 0).then(|| {
            let from_ns = (span.start_ns - view.start_ns).clamp(0, view.duration_ns());
            let zoom = Zoom {
                from_ns,
                to_ns: (from_ns + span.duration_ns).min(view.duration_ns()),
            };
            ViewOptions {
                zoom: (zoom.len_ns() > 0).then_some(zoom),
                ..*options
            }
            .href(view.trace_id, span.span_id.map(|id| id.to_string()).as_deref())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn zoom_windows_are_cut_to_the_trace() {
        assert_eq!(Zoom::resolve(None, None, 300 * MS), Ok(None));
        let zoom = |from, to| Zoom::resolve(from, to, 300 * MS).map(|z| z.map(|z| (z.from_ns, z.to_ns)));
        assert_eq!(zoom(Some(40.0), Some(200.5)), Ok(Some((40 * MS, 200_500_000))));
        assert_eq!(zoom(Some(100.0), None), Ok(Some((100 * MS, 300 * MS))));
        assert_eq!(zoom(None, Some(1e9)), Ok(Some((0, 300 * MS))));
        assert!(zoom(Some(400.0), Some(500.0))
            .unwrap_err()
            .contains("lasts 300 ms"));
        assert!(zoom(Some(50.0), Some(50.0))
            .unwrap_err()
            .contains("holds no time"));
    }

    #[test]
    fn milliseconds_are_written_short() {
        assert_eq!(millis(40 * MS), "40");
        assert_eq!(millis(200_500_000), "200.5");
        assert_eq!(millis(1_234), "0.001");
        assert_eq!(millis(0), "0");
        assert!(millis_param("from", Some("-1")).is_err());
        assert_eq!(millis_param("from", Some(" 2.5 ")).unwrap(), Some(2.5));
        assert_eq!(millis_param("from", Some("")).unwrap(), None);
    }
}
