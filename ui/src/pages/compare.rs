//! `/compare?a={trace_id}&b={trace_id}`: the structural diff of two traces. The search page's
//! checkboxes submit `trace=…&trace=…`, which is read the same way.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ducktrace_store::trace_compare::{compare, Change, PathStats};
use ducktrace_store::trace_view::TraceView;
use ducktrace_store::{Reader, TraceId};

use super::palette::Palette;
use super::{blocking, render, units, PageError};

/// Pixels of indentation per level of the path tree.
const INDENT_PX: usize = 14;
const MAX_INDENT_PX: usize = 280;
/// A duration change smaller than this share of A's is not highlighted.
const NOTABLE_PERCENT: f64 = 10.0;

/// One side of the comparison, as shown in the header.
struct TraceSide {
    letter: &'static str,
    trace_id: String,
    href: String,
    root_service: String,
    root_colour: &'static str,
    root_name: String,
    duration: String,
    spans: usize,
    errors: usize,
}

impl TraceSide {
    fn new(letter: &'static str, view: &TraceView, palette: &Palette) -> Self {
        let root = &view.spans[view.roots.first().copied().unwrap_or(0)];
        Self {
            letter,
            trace_id: view.trace_id.to_string(),
            href: format!("/trace/{}", view.trace_id),
            root_colour: palette.class(&root.service),
            root_service: root.service.clone(),
            root_name: root.name.clone(),
            duration: units::duration(view.duration_ns()),
            spans: view.spans.len(),
            errors: view.error_count(),
        }
    }
}

struct DiffRow {
    indent_px: usize,
    service: String,
    colour: &'static str,
    operation: String,
    a: String,
    b: String,
    delta: String,
    /// `slower`, `faster` or empty.
    trend: &'static str,
    change: &'static str,
}

fn side(stats: Option<PathStats>) -> String {
    match stats {
        None => "—".into(),
        Some(s) if s.spans == 1 => units::duration(s.mean_ns()),
        Some(s) => format!("{} × {}", s.spans, units::duration(s.mean_ns())),
    }
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    active: &'static str,
    sides: [TraceSide; 2],
    rows: Vec<DiffRow>,
    added: usize,
    removed: usize,
    changed: usize,
}

fn trace_id(text: &str, which: &str) -> Result<TraceId, PageError> {
    text.trim()
        .parse()
        .map_err(|e| PageError::BadRequest(format!("trace {which}: {e}")))
}

/// `GET /compare?a=…&b=…` (or `?trace=…&trace=…`)
pub async fn page(
    State(reader): State<Reader>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let value = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.as_str())
    };
    let ticked: Vec<&str> = params
        .iter()
        .filter(|(key, _)| key == "trace")
        .map(|(_, v)| v.as_str())
        .collect();
    let (a, b) = match (value("a"), value("b"), ticked.as_slice()) {
        (Some(a), Some(b), _) => (a, b),
        (None, None, [a, b]) => (*a, *b),
        (None, None, ticked) => {
            return Err(PageError::BadRequest(format!(
                "tick exactly two traces to compare ({} ticked)",
                ticked.len()
            )))
        }
        _ => {
            return Err(PageError::BadRequest(
                "give two traces to compare: ?a=…&b=…".into(),
            ))
        }
    };
    let (a, b) = (trace_id(a, "A")?, trace_id(b, "B")?);
    let (view_a, view_b, palette) = blocking(move || {
        let (view_a, view_b) = (reader.trace_view(a)?, reader.trace_view(b)?);
        Ok((view_a, view_b, Palette::load(&reader)?))
    })
    .await?;
    let not_found = |id: TraceId| PageError::NotFound(format!("trace {id} is not stored"));
    let view_a = view_a.ok_or_else(|| not_found(a))?;
    let view_b = view_b.ok_or_else(|| not_found(b))?;

    let comparison = compare(&view_a, &view_b);
    let count = |change: Change| comparison.rows.iter().filter(|r| r.change() == change).count();
    let (added, removed, changed) = (
        count(Change::Added),
        count(Change::Removed),
        count(Change::Changed),
    );
    let rows = comparison
        .rows
        .iter()
        .map(|row| {
            let percent = row.delta_percent();
            DiffRow {
                indent_px: (row.depth * INDENT_PX).min(MAX_INDENT_PX),
                colour: palette.class(&row.service),
                service: row.service.clone(),
                operation: row.operation.clone(),
                a: side(row.a),
                b: side(row.b),
                delta: match (row.delta_ns(), percent) {
                    (Some(delta), Some(percent)) => {
                        format!(
                            "{}{} ({percent:+.0}%)",
                            if delta > 0 { "+" } else { "" },
                            units::duration(delta)
                        )
                    }
                    (Some(delta), None) => units::duration(delta),
                    _ => String::new(),
                },
                trend: match percent {
                    Some(p) if p >= NOTABLE_PERCENT => "slower",
                    Some(p) if p <= -NOTABLE_PERCENT => "faster",
                    _ => "",
                },
                change: match row.change() {
                    Change::Added => "added",
                    Change::Removed => "removed",
                    Change::Changed => "changed",
                    Change::Same => "same",
                },
            }
        })
        .collect();
    let page = ComparePage {
        active: "search",
        sides: [
            TraceSide::new("A", &view_a, &palette),
            TraceSide::new("B", &view_b, &palette),
        ],
        rows,
        added,
        removed,
        changed,
    };
    render(StatusCode::OK, &page)
}
