//! `/services` (every service's rate, errors and duration) and `/services/{name}` (one
//! service over time: RED charts, duration histogram, slow and failing operations).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ducktrace_store::metrics::{
    DurationBucket, OperationSummary, RequestFilter, RequestStats, TimeWindow, TimelineSlot,
};
use ducktrace_store::Reader;
use serde::Deserialize;

use super::chart::{Chart, Series, Slots, Style, Unit};
use super::palette::Palette;
use super::stats::StatsView;
use super::time_range::{RangeParams, RangePicker, TimeRange};
use super::{blocking, links, render, units, PageError};

/// Timelines get at most this many slots, so bars stay wide enough to see and hover.
const MAX_SLOTS: i64 = 60;
/// Slot lengths a timeline may use, in seconds: each a round length on a clock.
const SLOT_STEPS_S: [i64; 14] = [
    10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
];
/// Rows in the top slow and top failing tables.
const TOP_OPERATIONS: usize = 10;
/// The duration histogram spans at least this many buckets.
const MIN_BUCKETS: u32 = 12;
const ERROR_COLOUR: &str = "#e5484d";
const QUANTILE_COLOURS: [(&str, &str); 3] = [("p50", "#0ea5e9"), ("p95", "#8b5cf6"), ("p99", "#f59e0b")];

struct ServiceRow {
    name: String,
    href: String,
    colour: &'static str,
    idle: bool,
    stats: StatsView,
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesPage {
    active: &'static str,
    range_text: String,
    picker: RangePicker,
    rows: Vec<ServiceRow>,
}

/// `GET /services?lookback=1h`
pub async fn list(
    State(reader): State<Reader>,
    Query(params): Query<RangeParams>,
) -> Result<Response, PageError> {
    let range = TimeRange::from_params(&params)?;
    let window = range.window;
    let (services, palette) =
        blocking(move || Ok((reader.services(window)?, Palette::load(&reader)?))).await?;
    let rows = services
        .iter()
        .map(|service| ServiceRow {
            name: service.name.clone(),
            href: links::service(&service.name, None, &range),
            colour: palette.colour(&service.name),
            idle: service.stats.requests == 0,
            stats: StatsView::new(&service.stats, window, 0.0),
        })
        .collect();
    let page = ServicesPage {
        active: "services",
        range_text: range.describe(),
        picker: range.picker("/services", &[]),
        rows,
    };
    render(StatusCode::OK, &page)
}

/// The parameters of a service page: the range, and optionally one operation to chart.
#[derive(Deserialize)]
pub struct ServiceParams {
    #[serde(flatten)]
    range: RangeParams,
    operation: Option<String>,
}

/// One operation as listed, with its links.
#[derive(Clone)]
struct OperationRow {
    name: String,
    chart_href: String,
    search_href: String,
    slowest_trace: Option<String>,
    latest_error_trace: Option<String>,
    p99_ns: f64,
    error_count: u64,
    stats: StatsView,
}

/// Summary figures over the whole range.
struct Tile {
    label: &'static str,
    value: String,
    alert: bool,
}

#[derive(Template)]
#[template(path = "service.html")]
struct ServicePage {
    active: &'static str,
    name: String,
    colour: &'static str,
    range_text: String,
    picker: RangePicker,
    operation: Option<String>,
    all_operations_href: String,
    search_href: String,
    dependencies_href: String,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
    histogram: Chart,
    slowest: Vec<OperationRow>,
    failing: Vec<OperationRow>,
    operations: Vec<OperationRow>,
}

/// Everything a service page reads from the store.
struct ServiceData {
    total: Option<TimelineSlot>,
    timeline: Vec<TimelineSlot>,
    buckets: Vec<DurationBucket>,
    operations: Vec<OperationSummary>,
    palette: Palette,
}

/// `GET /services/{name}?lookback=1h&operation=…`
pub async fn detail(
    State(reader): State<Reader>,
    Path(name): Path<String>,
    Query(params): Query<ServiceParams>,
) -> Result<Response, PageError> {
    let range = TimeRange::from_params(&params.range)?;
    let window = range.window;
    let operation = params.operation.filter(|operation| !operation.is_empty());
    let step_ns = slot_step_ns(window);
    let (service, chosen) = (name.clone(), operation.clone());
    let data = blocking(move || {
        if !reader.service_exists(&service)? {
            return Ok(None);
        }
        let palette = Palette::load(&reader)?;
        let filter = RequestFilter {
            service: &service,
            operation: chosen.as_deref(),
        };
        Ok(Some(ServiceData {
            total: reader
                .timeline(filter, window, window.duration_ns())?
                .into_iter()
                .next(),
            timeline: reader.timeline(filter, window, step_ns)?,
            buckets: reader.duration_buckets(filter, window)?,
            operations: reader.operations(&service, window)?,
            palette,
        }))
    })
    .await?
    .ok_or_else(|| PageError::NotFound(format!("no service named {name:?} has sent spans")))?;

    let total = data.total.map_or(
        RequestStats {
            requests: 0,
            errors: 0,
            latency: None,
        },
        |slot| slot.stats,
    );
    let summary = StatsView::new(&total, window, 0.0);
    let tiles = vec![
        Tile {
            label: "Requests",
            value: summary.requests,
            alert: false,
        },
        Tile {
            label: "Rate",
            value: summary.rate,
            alert: false,
        },
        Tile {
            label: "Error rate",
            value: summary.error_rate,
            alert: summary.failing,
        },
        Tile {
            label: "p50",
            value: summary.p50,
            alert: false,
        },
        Tile {
            label: "p95",
            value: summary.p95,
            alert: false,
        },
        Tile {
            label: "p99",
            value: summary.p99,
            alert: false,
        },
    ];

    let colour = data.palette.colour(&name);
    let charts = red_charts(&data.timeline, window, step_ns, colour);
    let histogram = duration_histogram(&data.buckets, colour);
    let rows: Vec<OperationRow> = data
        .operations
        .iter()
        .map(|op| OperationRow {
            name: op.name.clone(),
            chart_href: links::service(&name, Some(&op.name), &range),
            search_href: links::search(&name, Some(&op.name), &range),
            slowest_trace: op.slowest_trace.map(links::trace),
            latest_error_trace: op.latest_error_trace.map(links::trace),
            p99_ns: op.stats.latency.map_or(0.0, |l| l.p99_ns),
            error_count: op.stats.errors,
            stats: StatsView::new(&op.stats, window, 0.0),
        })
        .collect();
    let slowest = top(
        &rows,
        |row| row.p99_ns > 0.0,
        |a, b| b.p99_ns.total_cmp(&a.p99_ns),
    );
    let failing = top(
        &rows,
        |row| row.error_count > 0,
        |a, b| b.error_count.cmp(&a.error_count),
    );

    let keep: Vec<(&str, &str)> = operation.iter().map(|op| ("operation", op.as_str())).collect();
    let page = ServicePage {
        active: "services",
        colour,
        range_text: range.describe(),
        picker: range.picker(&format!("/services/{}", links::encode(&name)), &keep),
        all_operations_href: links::service(&name, None, &range),
        search_href: links::search(&name, operation.as_deref(), &range),
        dependencies_href: format!("/dependencies?{}", range.query()),
        operation,
        tiles,
        charts,
        histogram,
        slowest,
        failing,
        operations: rows,
        name,
    };
    render(StatusCode::OK, &page)
}

/// The first [`TOP_OPERATIONS`] rows that qualify, in `order`.
fn top(
    rows: &[OperationRow],
    qualifies: impl Fn(&OperationRow) -> bool,
    order: impl Fn(&OperationRow, &OperationRow) -> std::cmp::Ordering,
) -> Vec<OperationRow> {
    let mut chosen: Vec<&OperationRow> = rows.iter().filter(|row| qualifies(row)).collect();
    chosen.sort_by(|a, b| order(a, b));
    chosen.into_iter().take(TOP_OPERATIONS).cloned().collect()
}

/// The shortest round slot length giving at most [`MAX_SLOTS`] slots over `window`.
fn slot_step_ns(window: TimeWindow) -> i64 {
    const SECOND: i64 = 1_000_000_000;
    SLOT_STEPS_S
        .into_iter()
        .map(|step| step * SECOND)
        .find(|step| window.duration_ns() / step <= MAX_SLOTS)
        .unwrap_or(7 * 86_400 * SECOND)
}

/// Requests per second (failed ones stacked on top), error rate, and duration quantiles.
fn red_charts(timeline: &[TimelineSlot], window: TimeWindow, step_ns: i64, colour: &str) -> Vec<Chart> {
    let count = (window.duration_ns() + step_ns - 1) / step_ns;
    let count = count.max(1) as usize;
    let mut slots: Vec<Option<RequestStats>> = vec![None; count];
    for slot in timeline {
        if let Some(entry) = slots.get_mut(slot.index as usize) {
            *entry = Some(slot.stats);
        }
    }
    let seconds = step_ns as f64 / 1e9;
    let time_slots = || Slots::Time {
        start_ns: window.start_ns(),
        step_ns,
        count,
    };
    let values = |pick: &dyn Fn(&RequestStats) -> Option<f64>| -> Vec<Option<f64>> {
        slots.iter().map(|slot| slot.as_ref().and_then(pick)).collect()
    };
    let requests = Chart::new(
        "Request rate",
        Unit::PerSecond,
        Style::StackedBars,
        time_slots(),
        vec![
            Series {
                name: "succeeded".into(),
                colour: colour.into(),
                values: values(&|s| Some((s.requests - s.errors) as f64 / seconds)),
            },
            Series {
                name: "failed".into(),
                colour: ERROR_COLOUR.into(),
                values: values(&|s| Some(s.errors as f64 / seconds)),
            },
        ],
    );
    let errors = Chart::new(
        "Error rate",
        Unit::Fraction,
        Style::Lines,
        time_slots(),
        vec![Series {
            name: "failed requests".into(),
            colour: ERROR_COLOUR.into(),
            values: values(&|s| (s.requests > 0).then(|| s.error_rate())),
        }],
    );
    let duration = Chart::new(
        "Duration",
        Unit::Duration,
        Style::Lines,
        time_slots(),
        QUANTILE_COLOURS
            .iter()
            .enumerate()
            .map(|(index, (name, colour))| Series {
                name: (*name).into(),
                colour: (*colour).into(),
                values: values(&|s| s.latency.map(|l| [l.p50_ns, l.p95_ns, l.p99_ns][index])),
            })
            .collect(),
    );
    vec![requests, errors, duration]
}

/// Requests by duration, one bar per [`DurationBucket`], from a bucket below the fastest to one
/// above the slowest seen, at least [`MIN_BUCKETS`] wide so a narrow spread still reads.
fn duration_histogram(buckets: &[DurationBucket], colour: &str) -> Chart {
    let (low, high) = match (buckets.first(), buckets.last()) {
        (Some(first), Some(last)) => {
            let (mut low, mut high) = (first.index.saturating_sub(1), last.index + 1);
            while high - low + 1 < MIN_BUCKETS {
                low = low.saturating_sub(1);
                high += 1;
            }
            (low, high)
        }
        _ => (0, 0),
    };
    let indexes = (low..=high).filter(|_| !buckets.is_empty());
    let names = indexes
        .clone()
        .map(|index| units::duration(DurationBucket::lower_ns(index).round() as i64))
        .collect();
    let counts = indexes
        .map(|index| {
            buckets
                .iter()
                .find(|bucket| bucket.index == index)
                .map(|bucket| bucket.requests as f64)
        })
        .collect();
    Chart::new(
        "Duration distribution (log scale)",
        Unit::Count,
        Style::StackedBars,
        Slots::Named(names),
        vec![Series {
            name: "requests".into(),
            colour: colour.into(),
            values: counts,
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_round_and_at_most_sixty() {
        let minutes = |m: i64| TimeWindow::new(0, m * 60_000_000_000).unwrap();
        assert_eq!(slot_step_ns(minutes(15)), 30_000_000_000);
        assert_eq!(slot_step_ns(minutes(60)), 60_000_000_000);
        assert_eq!(slot_step_ns(minutes(24 * 60)), 1_800_000_000_000);
    }

    #[test]
    fn histogram_spans_the_buckets_seen_and_some_room() {
        let chart = duration_histogram(
            &[
                DurationBucket {
                    index: 40,
                    requests: 5,
                },
                DurationBucket {
                    index: 43,
                    requests: 1,
                },
            ],
            "#000",
        );
        assert_eq!(chart.slots.len(), MIN_BUCKETS as usize);
        assert_eq!(chart.bars.len(), 2);
        assert!(
            chart.slots[0].tooltip.starts_with("1 ms\n"),
            "{}",
            chart.slots[0].tooltip
        );
        assert!(
            chart.slots[4].tooltip.starts_with("5 ms\n"),
            "{}",
            chart.slots[4].tooltip
        );
        let empty = duration_histogram(&[], "#000");
        assert!(!empty.has_data);
    }
}
