//! Small SVG charts, laid out on the server: a time axis or named buckets across, a value axis
//! with "nice" ticks up, stacked bars or lines, and a tooltip (`<title>`) per slot. The
//! geometry is computed here and drawn by templates/chart.html, so every text goes through
//! askama's escaping.

use std::fmt::Write;

use super::time_range::split_days;
use super::units;

/// The viewBox; the SVG scales to its container.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = WIDTH - 12.0;
const PLOT_TOP: f64 = 12.0;
const PLOT_BOTTOM: f64 = HEIGHT - 28.0;
/// About this many value ticks, so the axis reads at a glance.
const VALUE_TICKS: usize = 4;
/// At most this many labels on the horizontal axis, so they never collide.
const MAX_X_LABELS: usize = 7;
/// The widest character of an 11px axis label, in viewBox units: a label centred on a tick
/// closer than half its width to the chart's edge would be cut off, so it is left out.
const TICK_CHAR_WIDTH: f64 = 7.0;

/// What the values measure, which decides how they read on the axis and in tooltips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds.
    Duration,
    PerSecond,
    /// A fraction, shown as a percentage.
    Fraction,
    Count,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Duration => units::duration(value.round() as i64),
            Unit::PerSecond => units::rate(value),
            Unit::Fraction => units::percent(value),
            Unit::Count => units::count(value.round() as u64),
        }
    }
}

/// One named row of values, one per slot; `None` where there is nothing to show.
pub struct Series {
    pub name: String,
    /// A CSS colour.
    pub colour: String,
    pub values: Vec<Option<f64>>,
}

/// How series are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Bars, the series stacked in order from the axis up.
    StackedBars,
    Lines,
}

/// The horizontal axis: equal slots of time, or named buckets.
pub enum Slots {
    Time {
        start_ns: i64,
        step_ns: i64,
        count: usize,
    },
    Named(Vec<String>),
}

impl Slots {
    fn len(&self) -> usize {
        match self {
            Slots::Time { count, .. } => *count,
            Slots::Named(names) => names.len(),
        }
    }

    /// How slot `index` is named in its tooltip.
    fn describe(&self, index: usize) -> String {
        match self {
            Slots::Time {
                start_ns, step_ns, ..
            } => {
                let from = start_ns + step_ns * index as i64;
                format!("{} – {}", clock(from, *step_ns), clock(from + step_ns, *step_ns))
            }
            Slots::Named(names) => names[index].clone(),
        }
    }
}

/// A chart ready to draw: every position in viewBox units.
pub struct Chart {
    /// Also the accessible name of the SVG.
    pub title: String,
    pub width: f64,
    pub height: f64,
    pub plot: Area,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub bars: Vec<Bar>,
    pub lines: Vec<Line>,
    pub slots: Vec<SlotTarget>,
    pub legend: Vec<LegendEntry>,
    /// Whether any value is there at all; an empty chart says so instead of drawing axes.
    pub has_data: bool,
}

pub struct Area {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

pub struct Tick {
    pub position: f64,
    pub label: String,
}

pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub colour: String,
}

pub struct Line {
    pub colour: String,
    /// SVG path data; a gap in the values starts a new sub-path.
    pub path: String,
    /// Points drawn as dots, so a value between two gaps is still seen.
    pub dots: Vec<(f64, f64)>,
}

/// An invisible column over one slot carrying its tooltip.
pub struct SlotTarget {
    pub x: f64,
    pub width: f64,
    pub tooltip: String,
}

pub struct LegendEntry {
    pub name: String,
    pub colour: String,
}

impl Chart {
    /// Lays out `series` (all as long as `slots`) in `style`, values measured in `unit`.
    pub fn new(
        title: impl Into<String>,
        unit: Unit,
        style: Style,
        slots: Slots,
        series: Vec<Series>,
    ) -> Self {
        let count = slots.len().max(1);
        let plot = Area {
            left: PLOT_LEFT,
            top: PLOT_TOP,
            right: PLOT_RIGHT,
            bottom: PLOT_BOTTOM,
        };
        let slot_width = (plot.right - plot.left) / count as f64;
        let peak = (0..count)
            .map(|slot| {
                let values = series
                    .iter()
                    .filter_map(|s| s.values.get(slot).copied().flatten());
                match style {
                    Style::StackedBars => values.sum(),
                    Style::Lines => values.fold(0.0, f64::max),
                }
            })
            .fold(0.0, f64::max);
        let has_data = series.iter().any(|s| s.values.iter().any(Option::is_some));
        let value_ticks = nice_ticks(peak, VALUE_TICKS);
        let top_value = *value_ticks.last().expect("nice_ticks returns at least two ticks");
        let y_of = |value: f64| plot.bottom - (value / top_value) * (plot.bottom - plot.top);
        let y_ticks = value_ticks
            .iter()
            .map(|&value| Tick {
                position: y_of(value),
                // Zero needs no unit, and "0/s" under "0.3/min" would read as another scale.
                label: if value == 0.0 {
                    "0".into()
                } else {
                    unit.format(value)
                },
            })
            .collect();
        let x_ticks = match &slots {
            Slots::Time {
                start_ns,
                step_ns,
                count,
            } => time_ticks(*start_ns, *step_ns * *count as i64)
                .into_iter()
                .map(|(at_ns, label)| Tick {
                    position: plot.left + (at_ns - start_ns) as f64 / *step_ns as f64 * slot_width,
                    label,
                })
                .filter(|tick| {
                    tick.position + tick.label.chars().count() as f64 * TICK_CHAR_WIDTH / 2.0 <= WIDTH
                })
                .collect(),
            Slots::Named(names) => {
                let every = names.len().div_ceil(MAX_X_LABELS).max(1);
                names
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| index % every == 0)
                    .map(|(index, name)| Tick {
                        position: plot.left + (index as f64 + 0.5) * slot_width,
                        label: name.clone(),
                    })
                    .collect()
            }
        };

        let mut bars = Vec::new();
        let mut lines = Vec::new();
        match style {
            Style::StackedBars => {
                let gap = (slot_width * 0.15).min(4.0);
                let mut stacked = vec![0.0; count];
                for s in &series {
                    for (slot, value) in s.values.iter().enumerate() {
                        let Some(value) = value.filter(|v| *v > 0.0) else {
                            continue;
                        };
                        let (low, high) = (stacked[slot], stacked[slot] + value);
                        stacked[slot] = high;
                        bars.push(Bar {
                            x: plot.left + slot as f64 * slot_width + gap / 2.0,
                            y: y_of(high),
                            width: (slot_width - gap).max(0.5),
                            height: y_of(low) - y_of(high),
                            colour: s.colour.clone(),
                        });
                    }
                }
            }
            Style::Lines => {
                for s in &series {
                    let mut path = String::new();
                    let mut dots = Vec::new();
                    let mut drawing = false;
                    for (slot, value) in s.values.iter().enumerate() {
                        let Some(value) = value else {
                            drawing = false;
                            continue;
                        };
                        let (x, y) = (plot.left + (slot as f64 + 0.5) * slot_width, y_of(*value));
                        let command = if drawing { 'L' } else { 'M' };
                        let _ = write!(path, "{command}{x:.1} {y:.1} ");
                        dots.push((x, y));
                        drawing = true;
                    }
                    lines.push(Line {
                        colour: s.colour.clone(),
                        path: path.trim_end().to_string(),
                        dots,
                    });
                }
            }
        }

        let slot_targets = (0..slots.len())
            .map(|slot| {
                let mut tooltip = slots.describe(slot);
                for s in &series {
                    let value = s.values.get(slot).copied().flatten();
                    let shown = value.map_or_else(|| "–".to_string(), |v| unit.format(v));
                    let _ = write!(tooltip, "\n{}: {shown}", s.name);
                }
                SlotTarget {
                    x: plot.left + slot as f64 * slot_width,
                    width: slot_width,
                    tooltip,
                }
            })
            .collect();
        let legend = series
            .iter()
            .map(|s| LegendEntry {
                name: s.name.clone(),
                colour: s.colour.clone(),
            })
            .collect();
        Chart {
            title: title.into(),
            width: WIDTH,
            height: HEIGHT,
            plot,
            x_ticks,
            y_ticks,
            bars,
            lines,
            slots: slot_targets,
            legend,
            has_data,
        }
    }
}

/// Ticks from 0 to a round number at or above `peak`, about `target` steps of 1, 2 or 5
/// times a power of ten (at least two ticks, even when everything is 0).
pub fn nice_ticks(peak: f64, target: usize) -> Vec<f64> {
    let peak = if peak.is_finite() && peak > 0.0 { peak } else { 1.0 };
    let rough = peak / target.max(1) as f64;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    let steps = (peak / step - 1e-9).ceil().max(1.0) as usize;
    (0..=steps).map(|index| index as f64 * step).collect()
}

/// Steps a time axis may tick at, in seconds: each a round number on a clock.
const TIME_STEPS_S: [i64; 15] = [
    1,
    5,
    10,
    15,
    30,
    60,
    300,
    600,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
];

/// Ticks at round clock times across `[start_ns, start_ns + span_ns)`, with their labels
/// (UTC; with the date when the axis spans days).
pub fn time_ticks(start_ns: i64, span_ns: i64) -> Vec<(i64, String)> {
    const SECOND: i64 = 1_000_000_000;
    let step_s = TIME_STEPS_S
        .into_iter()
        .find(|step| span_ns / (step * SECOND) < MAX_X_LABELS as i64)
        .unwrap_or(7 * 86_400);
    let step = step_s * SECOND;
    let first = start_ns.div_euclid(step) * step + if start_ns.rem_euclid(step) == 0 { 0 } else { step };
    let with_seconds = step_s < 60;
    let with_date = span_ns > 86_400 * SECOND;
    (0..)
        .map(|index| first + index * step)
        .take_while(|at| *at < start_ns + span_ns)
        .map(|at| {
            let label = if with_date {
                format!("{} {}", date(at), clock(at, step))
            } else if with_seconds {
                clock(at, SECOND)
            } else {
                clock(at, step)
            };
            (at, label)
        })
        .collect()
}

/// `HH:MM`, or `HH:MM:SS` when `resolution_ns` is under a minute (UTC).
fn clock(at_ns: i64, resolution_ns: i64) -> String {
    let (_, seconds) = split_days(at_ns);
    if resolution_ns < 60_000_000_000 {
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    } else {
        format!("{:02}:{:02}", seconds / 3600, seconds / 60 % 60)
    }
}

/// `MM-DD` (UTC).
fn date(at_ns: i64) -> String {
    let text = super::time_range::DateTimeInput(at_ns).to_string();
    text[5..10].to_string()
}

/// A coordinate for SVG attributes: two decimals, no trailing noise.
pub fn coord(value: f64) -> String {
    let mut text = String::new();
    let _ = write!(text, "{:.2}", if value.is_finite() { value } else { 0.0 });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_cover_the_peak() {
        assert_eq!(nice_ticks(0.0, 4).last(), Some(&1.0));
        assert_eq!(nice_ticks(7.3, 4), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(100.0, 4), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        let ticks = nice_ticks(0.042, 4);
        assert!(ticks.last().copied().unwrap() >= 0.042, "{ticks:?}");
        assert!(ticks.len() <= 6, "{ticks:?}");
        let ticks = nice_ticks(3_456_789.0, 4);
        assert_eq!(ticks[1], 1_000_000.0, "{ticks:?}");
    }

    #[test]
    fn axis_labels_stay_inside_the_chart() {
        const MINUTE: i64 = 60_000_000_000;
        // 10:00:30 to 11:00:30: the 11:00 tick sits too close to the right edge for its label.
        let start = 1_795_600_800 * 1_000_000_000 + MINUTE / 2;
        let series = Series {
            name: "requests".into(),
            colour: "#000".into(),
            values: vec![Some(1.0); 60],
        };
        let slots = Slots::Time {
            start_ns: start,
            step_ns: MINUTE,
            count: 60,
        };
        let chart = Chart::new(
            "Requests",
            Unit::PerSecond,
            Style::StackedBars,
            slots,
            vec![series],
        );
        let labels: Vec<&str> = chart.x_ticks.iter().map(|tick| tick.label.as_str()).collect();
        assert_eq!(labels, ["10:10", "10:20", "10:30", "10:40", "10:50"]);
        assert_eq!(chart.y_ticks[0].label, "0", "zero needs no unit");
    }

    #[test]
    fn time_ticks_fall_on_round_clock_times() {
        const MINUTE: i64 = 60_000_000_000;
        // 10:07 to 11:07: ticks every 10 minutes, from 10:10.
        let start = (1_795_600_800 + 7 * 60) * 1_000_000_000;
        let ticks = time_ticks(start, 60 * MINUTE);
        let labels: Vec<_> = ticks.iter().map(|(_, label)| label.as_str()).collect();
        assert_eq!(labels, ["10:10", "10:20", "10:30", "10:40", "10:50", "11:00"]);
        assert!(ticks.len() <= MAX_X_LABELS);
        let short = time_ticks(start, MINUTE);
        assert_eq!(short[0].1, "10:07:00");
        let long = time_ticks(start, 3 * 24 * 60 * MINUTE);
        assert_eq!(long[0].1, "11-25 12:00", "{long:?}");
    }

    #[test]
    fn bars_stack_and_lines_break_at_gaps() {
        let series = |name: &str, values: Vec<Option<f64>>| Series {
            name: name.into(),
            colour: "#000".into(),
            values,
        };
        let slots = || Slots::Named(vec!["a".into(), "b".into(), "c".into()]);
        let bars = Chart::new(
            "Requests",
            Unit::Count,
            Style::StackedBars,
            slots(),
            vec![
                series("ok", vec![Some(3.0), None, Some(1.0)]),
                series("errors", vec![Some(1.0), None, None]),
            ],
        );
        assert_eq!(bars.bars.len(), 3);
        let (ok, error) = (&bars.bars[0], &bars.bars[2]);
        assert!((error.y + error.height - ok.y).abs() < 1e-9, "stacked on top");
        assert_eq!(bars.slots[1].tooltip, "b\nok: –\nerrors: –");

        let lines = Chart::new(
            "Latency",
            Unit::Duration,
            Style::Lines,
            slots(),
            vec![series("p50", vec![Some(1e6), None, Some(2e6)])],
        );
        assert_eq!(
            lines.lines[0].path.matches('M').count(),
            2,
            "{}",
            lines.lines[0].path
        );
        assert_eq!(lines.lines[0].dots.len(), 2);
        assert!(lines.has_data);
        assert_eq!(lines.y_ticks.last().unwrap().label, "2 ms");
    }
}
