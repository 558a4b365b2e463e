//! The time range of a page, from the query parameters every page shares: `lookback` (15m, 1h,
//! 6h, 24h or custom) and, for custom, `start` and `end` (UTC, `YYYY-MM-DDTHH:MM[:SS]`, the
//! format of an HTML `datetime-local` input, optionally with a trailing `Z`).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use ducktrace_store::metrics::TimeWindow;
use serde::Deserialize;

const SECOND_NS: i64 = 1_000_000_000;
const MINUTE_NS: i64 = 60 * SECOND_NS;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const DAY_NS: i64 = 24 * HOUR_NS;
/// The longest custom range: long enough for a month of history, short enough that an
/// overview query stays a bounded scan.
const MAX_RANGE_NS: i64 = 31 * DAY_NS;

/// The query parameters naming a range, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct RangeParams {
    pub lookback: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
}

/// A preset range ending now, or a custom one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookback {
    Minutes15,
    Hour1,
    Hours6,
    Hours24,
    Custom,
}

impl Lookback {
    /// Every choice, in the order the range picker offers them.
    pub const ALL: [Lookback; 5] = [
        Lookback::Minutes15,
        Lookback::Hour1,
        Lookback::Hours6,
        Lookback::Hours24,
        Lookback::Custom,
    ];
    pub const DEFAULT: Lookback = Lookback::Hour1;

    /// The value of the `lookback` parameter.
    pub fn param(self) -> &'static str {
        match self {
            Lookback::Minutes15 => "15m",
            Lookback::Hour1 => "1h",
            Lookback::Hours6 => "6h",
            Lookback::Hours24 => "24h",
            Lookback::Custom => "custom",
        }
    }

    /// What the range picker shows.
    pub fn label(self) -> &'static str {
        match self {
            Lookback::Minutes15 => "Last 15 minutes",
            Lookback::Hour1 => "Last hour",
            Lookback::Hours6 => "Last 6 hours",
            Lookback::Hours24 => "Last 24 hours",
            Lookback::Custom => "Custom range",
        }
    }

    /// How far back a preset reaches; `None` for a custom range.
    pub fn length_ns(self) -> Option<i64> {
        match self {
            Lookback::Minutes15 => Some(15 * MINUTE_NS),
            Lookback::Hour1 => Some(HOUR_NS),
            Lookback::Hours6 => Some(6 * HOUR_NS),
            Lookback::Hours24 => Some(DAY_NS),
            Lookback::Custom => None,
        }
    }
}

/// Why a range was refused; shown to the user with status 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("lookback {0:?} is not one of 15m, 1h, 6h, 24h, custom")]
    Lookback(String),
    #[error("a custom range needs both start and end")]
    MissingBound,
    #[error("{name} {value:?} is not a time like 2026-01-31T13:45 (UTC)")]
    Time { name: &'static str, value: String },
    #[error("the range must end after it starts")]
    Empty,
    #[error("the range may span at most 31 days")]
    TooLong,
}

/// The range a page covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub lookback: Lookback,
    pub window: TimeWindow,
}

impl TimeRange {
    /// The range named by `params`, presets ending at `now_ns`.
    pub fn parse(params: &RangeParams, now_ns: i64) -> Result<Self, RangeError> {
        let lookback = match params.lookback.as_deref().filter(|text| !text.is_empty()) {
            None => Lookback::DEFAULT,
            Some(text) => Lookback::ALL
                .into_iter()
                .find(|lookback| lookback.param() == text)
                .ok_or_else(|| RangeError::Lookback(text.chars().take(40).collect()))?,
        };
        let (start_ns, end_ns) = match lookback.length_ns() {
            Some(length) => (now_ns - length, now_ns),
            None => {
                let bound = |name, value: &Option<String>| match value.as_deref() {
                    None | Some("") => Err(RangeError::MissingBound),
                    Some(text) => parse_utc(text).ok_or_else(|| RangeError::Time {
                        name,
                        value: text.chars().take(40).collect(),
                    }),
                };
                (bound("start", &params.start)?, bound("end", &params.end)?)
            }
        };
        if end_ns - start_ns > MAX_RANGE_NS {
            return Err(RangeError::TooLong);
        }
        let window = TimeWindow::new(start_ns, end_ns).ok_or(RangeError::Empty)?;
        Ok(Self { lookback, window })
    }

    /// The range named by `params`, presets ending now.
    pub fn from_params(params: &RangeParams) -> Result<Self, RangeError> {
        Self::parse(params, now_ns())
    }

    /// The query string that names this range again, for links between pages.
    pub fn query(&self) -> String {
        match self.lookback {
            Lookback::Custom => format!(
                "lookback=custom&start={}&end={}",
                self.start_input(),
                self.end_input()
            ),
            preset => format!("lookback={}", preset.param()),
        }
    }

    /// The start as a `datetime-local` input value.
    pub fn start_input(&self) -> DateTimeInput {
        DateTimeInput(self.window.start_ns())
    }

    /// The end as a `datetime-local` input value.
    pub fn end_input(&self) -> DateTimeInput {
        DateTimeInput(self.window.end_ns())
    }
}

/// The range chooser shown on every overview page: preset links and a custom form, both
/// keeping the page's other parameters.
pub struct RangePicker {
    /// The page's path, where the custom form is sent.
    pub action: String,
    pub presets: Vec<PresetLink>,
    pub custom: bool,
    pub start: String,
    pub end: String,
    /// Other parameters of the page, kept by the custom form.
    pub keep: Vec<(String, String)>,
}

/// One preset of the range chooser.
pub struct PresetLink {
    pub label: &'static str,
    pub short: &'static str,
    pub href: String,
    pub current: bool,
}

impl TimeRange {
    /// The chooser for a page at `path` whose other parameters are `keep` (name, value).
    pub fn picker(&self, path: &str, keep: &[(&str, &str)]) -> RangePicker {
        let kept: String = keep
            .iter()
            .map(|(name, value)| format!("&{name}={}", super::links::encode(value)))
            .collect();
        let presets = Lookback::ALL
            .into_iter()
            .filter(|lookback| *lookback != Lookback::Custom)
            .map(|lookback| PresetLink {
                label: lookback.label(),
                short: lookback.param(),
                href: format!("{path}?lookback={}{kept}", lookback.param()),
                current: lookback == self.lookback,
            })
            .collect();
        RangePicker {
            action: path.to_string(),
            presets,
            custom: self.lookback == Lookback::Custom,
            start: self.start_input().to_string(),
            end: self.end_input().to_string(),
            keep: keep
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        }
    }

    /// The range in words, e.g. "Last hour" or "2026-11-25 10:00:00 – 11:00:00 UTC".
    pub fn describe(&self) -> String {
        match self.lookback {
            Lookback::Custom => format!(
                "{} – {} UTC",
                self.start_input().to_string().replace('T', " "),
                self.end_input().to_string().replace('T', " ")
            ),
            preset => preset.label().to_string(),
        }
    }
}

impl From<RangeError> for super::PageError {
    fn from(error: RangeError) -> Self {
        super::PageError::BadRequest(error.to_string())
    }
}

/// A time shown as `YYYY-MM-DDTHH:MM:SS` (UTC), the value format of `datetime-local`.
#[derive(Debug, Clone, Copy)]
pub struct DateTimeInput(pub i64);

impl fmt::Display for DateTimeInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, seconds) = split_days(self.0);
        let (year, month, day) = civil_from_days(date);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }
}

/// `2026-11-25 11:08:24.123` (UTC, milliseconds), how span and trace times read.
pub fn timestamp(unix_ns: i64) -> String {
    let millis = unix_ns.rem_euclid(SECOND_NS) / 1_000_000;
    format!("{}.{millis:03}", datetime_local(unix_ns).replace('T', " "))
}

/// The value of an `<input type="datetime-local">` for this time: `2026-11-25T11:08:24`.
pub fn datetime_local(unix_ns: i64) -> String {
    DateTimeInput(unix_ns).to_string()
}

/// Days since 1970-01-01 and seconds into that day.
pub fn split_days(unix_ns: i64) -> (i64, i64) {
    let seconds = unix_ns.div_euclid(SECOND_NS);
    (seconds.div_euclid(86_400), seconds.rem_euclid(86_400))
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i64)
}

/// `YYYY-MM-DDTHH:MM[:SS[.fff]][Z]` (or a space for the `T`) as Unix nanoseconds (UTC); years
/// 1970 to 2262, the span of nanoseconds in an `i64`.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once('T').or_else(|| text.split_once(' '))?;
    let mut date_parts = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let mut time_parts = time.splitn(3, ':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: f64 = time_parts.next().map_or(Some(0.0), |s| s.parse().ok())?;
    let valid = (1970..=2262).contains(&year)
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0.0..60.0).contains(&second);
    valid.then(|| {
        (days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60) * SECOND_NS
            + (second * 1e9).round() as i64
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number, inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(lookback: &str, start: &str, end: &str) -> RangeParams {
        let some = |text: &str| (!text.is_empty()).then(|| text.to_string());
        RangeParams {
            lookback: some(lookback),
            start: some(start),
            end: some(end),
        }
    }

    #[test]
    fn presets_end_now() {
        let now = 1_700_000_000 * SECOND_NS;
        let range = TimeRange::parse(&params("15m", "", ""), now).unwrap();
        assert_eq!(range.window.end_ns(), now);
        assert_eq!(range.window.duration_ns(), 15 * MINUTE_NS);
        assert_eq!(range.query(), "lookback=15m");
        let default = TimeRange::parse(&RangeParams::default(), now).unwrap();
        assert_eq!(default.lookback, Lookback::Hour1);
    }

    #[test]
    fn custom_ranges_round_trip() {
        let range =
            TimeRange::parse(&params("custom", "2026-11-25T10:00", "2026-11-25T11:30:15Z"), 0).unwrap();
        assert_eq!(range.window.start_ns(), 1_795_600_800 * SECOND_NS);
        assert_eq!(range.window.duration_ns(), 90 * MINUTE_NS + 15 * SECOND_NS);
        assert_eq!(
            range.query(),
            "lookback=custom&start=2026-11-25T10:00:00&end=2026-11-25T11:30:15"
        );
        let leap = parse_utc("2024-02-29T23:59:59").unwrap();
        assert_eq!(DateTimeInput(leap).to_string(), "2024-02-29T23:59:59");
    }

    #[test]
    fn times_read_and_written() {
        let ns = 1_700_000_000_123_000_000;
        assert_eq!(timestamp(ns), "2023-11-14 22:13:20.123");
        assert_eq!(datetime_local(ns), "2023-11-14T22:13:20");
        assert_eq!(parse_utc("2023-11-14T22:13:20"), Some(1_700_000_000 * SECOND_NS));
        assert_eq!(parse_utc("2023-11-14 22:13"), Some(1_699_999_980 * SECOND_NS));
        assert_eq!(
            parse_utc("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_utc("2024-02-29T00:00"), Some(1_709_164_800 * SECOND_NS));
        for bad in [
            "",
            "2023-13-01T00:00",
            "2023-02-29T00:00",
            "yesterday",
            "2023-11-14",
            "2023-11-14T25:00",
            "2263-01-01T00:00",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        let parse = |lookback, start, end| TimeRange::parse(&params(lookback, start, end), 0);
        assert_eq!(parse("2w", "", ""), Err(RangeError::Lookback("2w".into())));
        assert_eq!(
            parse("custom", "2026-01-01T00:00", ""),
            Err(RangeError::MissingBound)
        );
        assert!(matches!(
            parse("custom", "2026-02-30T00:00", "2026-03-01T00:00"),
            Err(RangeError::Time { name: "start", .. })
        ));
        assert!(matches!(
            parse("custom", "2026-01-01T00:00", "<script>"),
            Err(RangeError::Time { name: "end", .. })
        ));
        assert_eq!(
            parse("custom", "2026-01-02T00:00", "2026-01-01T00:00"),
            Err(RangeError::Empty)
        );
        assert_eq!(
            parse("custom", "2026-01-01T00:00", "2026-03-01T00:00"),
            Err(RangeError::TooLong)
        );
    }
}
