//! `/dependencies`: which services call which, over a time range, as a layered SVG graph and
//! as a table of the same edges. The edges come from `service_calls`, matched as spans arrive.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ducktrace_store::metrics::ServiceCallStats;
use ducktrace_store::Reader;

use super::graph::{self, EdgeSpec, Placed, Size};
use super::palette::Palette;
use super::stats::StatsView;
use super::time_range::{RangeParams, RangePicker, TimeRange};
use super::{blocking, links, render, units, PageError};

/// Edges where at least this share of calls failed are marked as error-heavy.
pub const ERROR_HEAVY: f64 = 0.05;
/// Service names longer than this are shortened in the graph (the full name is in the
/// tooltip and the table).
const MAX_NAME_CHARS: usize = 32;
/// Estimated advance of one character of the graph's monospace fonts, in pixels; boxes are
/// sized from it, so it errs wide.
const NODE_CHAR_WIDTH: f64 = 7.6;
const LABEL_CHAR_WIDTH: f64 = 6.9;
const NODE_HEIGHT: f64 = 38.0;
const LABEL_HEIGHT: f64 = 34.0;

/// One service as drawn.
struct NodeView {
    name: String,
    shown_name: String,
    href: String,
    colour: &'static str,
    place: Placed,
}

/// One edge as drawn, with its label text.
struct EdgeView {
    path: String,
    reversed: bool,
    error_heavy: bool,
    width: f64,
    label: Placed,
    counts: String,
    latency: String,
    tooltip: String,
}

struct GraphView {
    width: f64,
    height: f64,
    nodes: Vec<NodeView>,
    edges: Vec<EdgeView>,
}

/// One row of the edge table.
struct EdgeRow {
    caller: String,
    caller_href: String,
    callee: String,
    callee_href: String,
    stats: StatsView,
    slowest_trace: Option<String>,
}

#[derive(Template)]
#[template(path = "dependencies.html")]
struct DependenciesPage {
    active: &'static str,
    range_text: String,
    picker: RangePicker,
    graph: Option<GraphView>,
    rows: Vec<EdgeRow>,
    services: usize,
    error_heavy_percent: String,
}

/// `GET /dependencies?lookback=1h`
pub async fn page(
    State(reader): State<Reader>,
    Query(params): Query<RangeParams>,
) -> Result<Response, PageError> {
    let range = TimeRange::from_params(&params)?;
    let window = range.window;
    let (calls, palette) =
        blocking(move || Ok((reader.service_calls(window)?, Palette::load(&reader)?))).await?;
    let (graph, services) = graph_view(&calls, &range, &palette);
    let rows = calls.iter().map(|call| edge_row(call, &range)).collect();
    let page = DependenciesPage {
        active: "dependencies",
        range_text: range.describe(),
        picker: range.picker("/dependencies", &[]),
        graph,
        rows,
        services,
        error_heavy_percent: units::percent(ERROR_HEAVY),
    };
    render(StatusCode::OK, &page)
}

fn edge_row(call: &ServiceCallStats, range: &TimeRange) -> EdgeRow {
    EdgeRow {
        caller: call.caller.clone(),
        caller_href: links::service(&call.caller, None, range),
        callee: call.callee.clone(),
        callee_href: links::service(&call.callee, None, range),
        stats: StatsView::new(&call.stats, range.window, ERROR_HEAVY),
        slowest_trace: call.slowest_trace.map(links::trace),
    }
}

/// Lays out the services and calls; `None` when there are no calls. Also returns the number
/// of services drawn.
fn graph_view(
    calls: &[ServiceCallStats],
    range: &TimeRange,
    palette: &Palette,
) -> (Option<GraphView>, usize) {
    if calls.is_empty() {
        return (None, 0);
    }
    let mut names: Vec<&str> = calls
        .iter()
        .flat_map(|call| [call.caller.as_str(), call.callee.as_str()])
        .collect();
    names.sort_unstable();
    names.dedup();
    let index = |name: &str| {
        names
            .binary_search(&name)
            .expect("every caller and callee is listed")
    };
    let shown: Vec<String> = names.iter().map(|name| shorten(name)).collect();
    let node_sizes: Vec<Size> = shown
        .iter()
        .map(|name| Size {
            width: 30.0 + name.chars().count() as f64 * NODE_CHAR_WIDTH,
            height: NODE_HEIGHT,
        })
        .collect();
    let texts: Vec<(String, String)> = calls.iter().map(label_text).collect();
    let edge_specs: Vec<EdgeSpec> = calls
        .iter()
        .zip(&texts)
        .map(|(call, (counts, latency))| EdgeSpec {
            from: index(&call.caller),
            to: index(&call.callee),
            label: Size {
                width: 14.0 + counts.chars().count().max(latency.chars().count()) as f64 * LABEL_CHAR_WIDTH,
                height: LABEL_HEIGHT,
            },
        })
        .collect();
    let layout = graph::layout(&node_sizes, &edge_specs);
    let busiest = calls
        .iter()
        .map(|call| call.stats.requests)
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let nodes = names
        .iter()
        .zip(shown)
        .zip(&layout.nodes)
        .map(|((name, shown_name), place)| NodeView {
            name: name.to_string(),
            shown_name,
            href: links::service(name, None, range),
            colour: palette.colour(name),
            place: *place,
        })
        .collect();
    let edges = calls
        .iter()
        .zip(texts)
        .zip(layout.edges)
        .map(|((call, (counts, latency)), routed)| EdgeView {
            path: routed.path,
            reversed: routed.reversed,
            error_heavy: call.stats.error_rate() >= ERROR_HEAVY,
            width: 1.5 + 3.0 * (call.stats.requests.max(1) as f64).ln() / busiest.ln(),
            label: routed.label,
            tooltip: format!("{} → {}: {counts}, {latency}", call.caller, call.callee),
            counts,
            latency,
        })
        .collect();
    let graph = GraphView {
        width: layout.width,
        height: layout.height,
        nodes,
        edges,
    };
    (Some(graph), names.len())
}

/// The two lines of an edge label: volume and errors, then latency.
fn label_text(call: &ServiceCallStats) -> (String, String) {
    let stats = &call.stats;
    let calls = if stats.requests == 1 { "call" } else { "calls" };
    let counts = format!(
        "{} {calls} · {} err",
        units::count(stats.requests),
        units::percent(stats.error_rate())
    );
    let latency = stats.latency.map_or_else(String::new, |latency| {
        format!(
            "p50 {} · p99 {}",
            units::duration(latency.p50_ns.round() as i64),
            units::duration(latency.p99_ns.round() as i64)
        )
    });
    (counts, latency)
}

fn shorten(name: &str) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        name.to_string()
    } else {
        let head: String = name.chars().take(MAX_NAME_CHARS - 1).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ducktrace_store::metrics::{Latency, RequestStats};

    fn call(caller: &str, callee: &str, requests: u64, errors: u64) -> ServiceCallStats {
        ServiceCallStats {
            caller: caller.into(),
            callee: callee.into(),
            stats: RequestStats {
                requests,
                errors,
                latency: Some(Latency {
                    p50_ns: 2e6,
                    p95_ns: 9e6,
                    p99_ns: 12e6,
                }),
            },
            slowest_trace: None,
        }
    }

    #[test]
    fn labels_and_marks() {
        let (counts, latency) = label_text(&call("a", "b", 1200, 60));
        assert_eq!(counts, "1,200 calls · 5% err");
        assert_eq!(latency, "p50 2 ms · p99 12 ms");
        let range = TimeRange::parse(&RangeParams::default(), 0).unwrap();
        let palette = Palette::new(vec!["a".into(), "b".into(), "c".into()]);
        let calls = [call("a", "b", 1200, 60), call("b", "c", 10, 0)];
        let (graph, services) = graph_view(&calls, &range, &palette);
        let graph = graph.unwrap();
        assert_eq!(services, 3);
        assert!(graph.edges[0].error_heavy && !graph.edges[1].error_heavy);
        assert!(graph.edges[0].width > graph.edges[1].width);
        assert_eq!(graph.nodes[0].href, "/services/a?lookback=1h");
        assert_ne!(graph.nodes[0].colour, graph.nodes[1].colour);
        assert_eq!(shorten(&"x".repeat(40)).chars().count(), MAX_NAME_CHARS);
    }
}
