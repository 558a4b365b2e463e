//! `/search`: find traces by service, operation, attributes, duration, time and status; a
//! table of matching traces, a duration-over-time scatter plot, and a form to compare two.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use ducktrace_store::search::{AttributeFilter, Operation, TraceOrder, TraceQuery, TraceSummary, MAX_LIMIT};
use ducktrace_store::Reader;
use serde::Deserialize;

use super::chart::coord;
use super::palette::Palette;
use super::time_range::{self, now_ns, Lookback};
use super::{blocking, links, render, units, PageError};

/// Traces shown when the form does not say.
const DEFAULT_LIMIT: usize = 20;

/// The query string of `/search`, as submitted by its form (empty fields mean "any").
#[derive(Deserialize, Default)]
pub struct SearchParams {
    service: Option<String>,
    operation: Option<String>,
    attributes: Option<String>,
    min_duration: Option<String>,
    max_duration: Option<String>,
    lookback: Option<String>,
    start: Option<String>,
    end: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    sort: Option<String>,
}

/// What the form shows: the user's input, as typed.
struct SearchForm {
    service: String,
    operation: String,
    attributes: String,
    min_duration: String,
    max_duration: String,
    lookback: String,
    start: String,
    end: String,
    /// `any` or `error`.
    status: String,
    limit: String,
    /// A [`TraceOrder`] name.
    sort: String,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl SearchForm {
    fn new(params: SearchParams, now_ns: i64) -> Self {
        let lookback = non_empty(params.lookback).unwrap_or_else(|| Lookback::DEFAULT.param().into());
        let hour_ago = now_ns - 3_600_000_000_000;
        Self {
            service: non_empty(params.service).unwrap_or_default(),
            operation: non_empty(params.operation).unwrap_or_default(),
            attributes: non_empty(params.attributes).unwrap_or_default(),
            min_duration: non_empty(params.min_duration).unwrap_or_default(),
            max_duration: non_empty(params.max_duration).unwrap_or_default(),
            start: non_empty(params.start).unwrap_or_else(|| time_range::datetime_local(hour_ago)),
            end: non_empty(params.end).unwrap_or_else(|| time_range::datetime_local(now_ns)),
            lookback,
            status: non_empty(params.status).unwrap_or_else(|| "any".into()),
            limit: non_empty(params.limit).unwrap_or_else(|| DEFAULT_LIMIT.to_string()),
            sort: non_empty(params.sort).unwrap_or_else(|| TraceOrder::default().as_str().into()),
        }
    }

    fn errors_only(&self) -> bool {
        self.status == "error"
    }

    /// The store query this form asks for, or what is wrong with it.
    fn query(&self, now_ns: i64) -> Result<TraceQuery, String> {
        if !matches!(self.status.as_str(), "any" | "error") {
            return Err(format!("unknown status {:?}; use any or error", self.status));
        }
        let order: TraceOrder = self
            .sort
            .parse()
            .map_err(|e: ducktrace_store::search::InputError| e.to_string())?;
        let lookback = Lookback::ALL.into_iter().find(|l| l.param() == self.lookback);
        let (from_ns, to_ns) = match lookback.map(Lookback::length_ns) {
            Some(None) => {
                let read = |text: &str, what: &str| {
                    time_range::parse_utc(text).ok_or_else(|| {
                        format!("the {what} time {text:?} is not a date and time like 2026-01-31T14:05")
                    })
                };
                let (from, to) = (read(&self.start, "start")?, read(&self.end, "end")?);
                if from >= to {
                    return Err("the custom range must end after it starts".into());
                }
                (from, to)
            }
            // A minute of slack past now, for spans from hosts whose clocks run ahead.
            Some(Some(length)) => (now_ns - length, now_ns + 60_000_000_000),
            None => {
                return Err(format!(
                    "unknown time range {:?}; use 15m, 1h, 6h, 24h or custom",
                    self.lookback
                ))
            }
        };
        let duration = |text: &str| -> Result<_, String> {
            if text.is_empty() {
                Ok(None)
            } else {
                text.parse()
                    .map(Some)
                    .map_err(|e: ducktrace_store::search::InputError| e.to_string())
            }
        };
        let (min_duration, max_duration) = (duration(&self.min_duration)?, duration(&self.max_duration)?);
        if let (Some(min), Some(max)) = (min_duration, max_duration) {
            if min > max {
                return Err("the minimum duration is larger than the maximum".into());
            }
        }
        let limit: usize = self
            .limit
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("the limit must be a number from 1 to {MAX_LIMIT}"))?;
        if !self.operation.is_empty() && self.service.is_empty() {
            return Err("choose a service to search by operation".into());
        }
        Ok(TraceQuery {
            from_ns,
            to_ns,
            service: Some(self.service.clone()).filter(|s| !s.is_empty()),
            operation: Some(self.operation.clone()).filter(|s| !s.is_empty()),
            attributes: AttributeFilter::parse_list(&self.attributes).map_err(|e| e.to_string())?,
            min_duration,
            max_duration,
            errors_only: self.errors_only(),
            order,
            limit,
        })
    }

    /// The form's query string with another sort order, for sortable column headings.
    fn with_sort(&self, order: TraceOrder) -> String {
        let custom = self.lookback == Lookback::Custom.param();
        format!(
            "/search{}",
            links::query([
                ("service", self.service.as_str()),
                ("operation", &self.operation),
                ("attributes", &self.attributes),
                ("min_duration", &self.min_duration),
                ("max_duration", &self.max_duration),
                ("lookback", &self.lookback),
                ("start", if custom { &self.start } else { "" }),
                ("end", if custom { &self.end } else { "" }),
                ("status", if self.errors_only() { "error" } else { "" }),
                ("limit", &self.limit),
                ("sort", order.as_str()),
            ])
        )
    }
}

/// A service with its operations, for the operation picker.
struct ServiceOperations {
    service: String,
    operations: Vec<String>,
}

fn group_operations(operations: Vec<Operation>) -> Vec<ServiceOperations> {
    let mut groups: Vec<ServiceOperations> = Vec::new();
    for operation in operations {
        match groups.last_mut() {
            Some(group) if group.service == operation.service => group.operations.push(operation.name),
            _ => groups.push(ServiceOperations {
                service: operation.service,
                operations: vec![operation.name],
            }),
        }
    }
    groups
}

/// A trace as one row of the results.
struct ResultRow {
    trace_id: String,
    href: String,
    root_service: String,
    root_colour: &'static str,
    root_operation: String,
    root_missing: bool,
    start: String,
    duration: String,
    /// Duration relative to the longest trace shown, 0–100.
    duration_bar: String,
    spans: String,
    errors: u64,
    services: Vec<ServiceChip>,
}

struct ServiceChip {
    name: String,
    colour: &'static str,
    spans: String,
}

/// The scatter plot: one dot per trace, time across, duration up.
struct Scatter {
    dots: Vec<Dot>,
    first: String,
    last: String,
    longest: String,
}

struct Dot {
    href: String,
    cx: String,
    cy: String,
    error: bool,
    title: String,
}

const PLOT_WIDTH: f64 = 1000.0;
const PLOT_HEIGHT: f64 = 180.0;
const PLOT_MARGIN: f64 = 12.0;

fn scatter(traces: &[TraceSummary]) -> Option<Scatter> {
    let first = traces.iter().map(|t| t.start_ns).min()?;
    let last = traces.iter().map(|t| t.start_ns).max()?;
    let longest = traces.iter().map(|t| t.duration_ns).max()?.max(1);
    let span = (last - first).max(1) as f64;
    let dots = traces
        .iter()
        .map(|trace| {
            let x = if last == first {
                PLOT_WIDTH / 2.0
            } else {
                PLOT_MARGIN + (trace.start_ns - first) as f64 / span * (PLOT_WIDTH - 2.0 * PLOT_MARGIN)
            };
            let y = PLOT_HEIGHT
                - PLOT_MARGIN
                - trace.duration_ns as f64 / longest as f64 * (PLOT_HEIGHT - 2.0 * PLOT_MARGIN);
            Dot {
                href: format!("/trace/{}", trace.trace_id),
                cx: coord(x),
                cy: coord(y),
                error: trace.error_count > 0,
                title: format!(
                    "{}: {} · {} · {}",
                    trace.root_service,
                    trace.root_operation,
                    units::duration(trace.duration_ns),
                    time_range::timestamp(trace.start_ns)
                ),
            }
        })
        .collect();
    Some(Scatter {
        dots,
        first: time_range::timestamp(first),
        last: time_range::timestamp(last),
        longest: units::duration(longest),
    })
}

fn result_rows(traces: &[TraceSummary], palette: &Palette) -> Vec<ResultRow> {
    let longest = traces.iter().map(|t| t.duration_ns).max().unwrap_or(1).max(1);
    traces
        .iter()
        .map(|trace| ResultRow {
            trace_id: trace.trace_id.to_string(),
            href: format!("/trace/{}", trace.trace_id),
            root_colour: palette.class(&trace.root_service),
            root_service: trace.root_service.clone(),
            root_operation: trace.root_operation.clone(),
            root_missing: trace.root_missing,
            start: time_range::timestamp(trace.start_ns),
            duration: units::duration(trace.duration_ns),
            duration_bar: coord(trace.duration_ns as f64 * 100.0 / longest as f64),
            spans: units::count(trace.span_count),
            errors: trace.error_count,
            services: trace
                .services
                .iter()
                .map(|s| ServiceChip {
                    colour: palette.class(&s.service),
                    name: s.service.clone(),
                    spans: units::count(s.spans),
                })
                .collect(),
        })
        .collect()
}

/// What the page shows under the form.
enum Outcome {
    Found {
        rows: Vec<ResultRow>,
        scatter: Option<Scatter>,
        hit_limit: bool,
    },
    Invalid(String),
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    active: &'static str,
    form: SearchForm,
    lookbacks: [Lookback; 5],
    orders: Vec<(TraceOrder, &'static str, String)>,
    services: Vec<String>,
    operations: Vec<ServiceOperations>,
    outcome: Outcome,
    /// A link to this service's overview page, carrying the time range.
    service_link: Option<String>,
}

/// `GET /`: the search page is the home page.
pub async fn home() -> Redirect {
    Redirect::to("/search")
}

/// `GET /search?service=…&lookback=1h&…`
pub async fn page(
    State(reader): State<Reader>,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let now = now_ns();
    let form = SearchForm::new(params, now);
    let query = form.query(now);
    let (services, operations, found) = blocking(move || {
        let (services, operations) = reader.services_and_operations()?;
        let found = match query {
            Ok(query) => Ok((reader.search(&query)?, query.limit)),
            Err(message) => Err(message),
        };
        Ok((services, operations, found))
    })
    .await?;
    let (http_status, outcome) = match found {
        Ok((traces, limit)) => (
            StatusCode::OK,
            Outcome::Found {
                hit_limit: traces.len() >= limit,
                scatter: scatter(&traces),
                rows: result_rows(&traces, &Palette::new(services.clone())),
            },
        ),
        Err(message) => (StatusCode::BAD_REQUEST, Outcome::Invalid(message)),
    };
    let orders = TraceOrder::ALL
        .into_iter()
        .map(|order| {
            let label = match order {
                TraceOrder::MostRecent => "Most recent",
                TraceOrder::Longest => "Longest first",
                TraceOrder::MostSpans => "Most spans",
                TraceOrder::MostErrors => "Most errors",
            };
            (order, label, form.with_sort(order))
        })
        .collect();
    let service_link = (!form.service.is_empty() && form.lookback != Lookback::Custom.param()).then(|| {
        format!(
            "/services{}",
            links::query([("service", form.service.as_str()), ("lookback", &form.lookback)])
        )
    });
    let page = SearchPage {
        active: "search",
        form,
        lookbacks: Lookback::ALL,
        orders,
        services,
        operations: group_operations(operations),
        outcome,
        service_link,
    };
    render(http_status, &page)
}
