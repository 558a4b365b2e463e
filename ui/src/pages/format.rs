//! How times, durations and ids read on the pages, plus the colour each service gets.

use std::fmt::Write;

/// `850ns`, `12.3µs`, `150ms`, `2.35s`, `3m 12s`, `1h 05m`: three significant digits at most.
pub fn duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    let scaled = |value: f64, unit: &str| {
        let digits = if value >= 100.0 {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        let text = format!("{value:.digits$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        };
        format!("{sign}{text}{unit}")
    };
    match ns {
        0..=999 => format!("{sign}{ns}ns"),
        1_000..=999_999 => scaled(ns as f64 / 1e3, "µs"),
        1_000_000..=999_999_999 => scaled(ns as f64 / 1e6, "ms"),
        1_000_000_000..=59_999_999_999 => scaled(ns as f64 / 1e9, "s"),
        _ => {
            let seconds = ns / 1_000_000_000;
            if seconds < 3600 {
                format!("{sign}{}m {:02}s", seconds / 60, seconds % 60)
            } else {
                format!("{sign}{}h {:02}m", seconds / 3600, seconds % 3600 / 60)
            }
        }
    }
}

/// `2026-11-25 11:08:24.123` (UTC, milliseconds).
pub fn timestamp(unix_ns: i64) -> String {
    let (date, time) = split(unix_ns);
    format!("{date} {time}")
}

/// The value of an `<input type="datetime-local">` for this time: `2026-11-25T11:08:24`.
pub fn datetime_local(unix_ns: i64) -> String {
    let (date, time) = split(unix_ns);
    format!("{date}T{}", &time[..8])
}

fn split(unix_ns: i64) -> (String, String) {
    let seconds = unix_ns.div_euclid(1_000_000_000);
    let millis = unix_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}.{millis:03}",
            second_of_day / 3600,
            second_of_day % 3600 / 60,
            second_of_day % 60
        ),
    )
}

/// Reads `2026-11-25T11:08`, `2026-11-25T11:08:24` or `2026-11-25 11:08:24` as UTC.
pub fn parse_datetime(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', ' '])?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let mut time_parts = time.split(':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: f64 = time_parts.next().map_or(Some(0.0), |s| s.parse().ok())?;
    let valid = date_parts.next().is_none()
        && time_parts.next().is_none()
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0.0..60.0).contains(&second)
        && (1970..=2262).contains(&year);
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60) * 1_000_000_000 + (second * 1e9).round() as i64)
}

/// Howard Hinnant's algorithm: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A number with thin separators between thousands: `12 345`.
pub fn count(n: impl Into<u64>) -> String {
    let digits = n.into().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(digit);
    }
    out
}

/// A coordinate for SVG attributes: two decimals, no trailing noise.
pub fn coord(value: f64) -> String {
    let mut text = String::new();
    let _ = write!(text, "{:.2}", if value.is_finite() { value } else { 0.0 });
    text
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// A query string from `(name, value)` pairs, leaving out empty values.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&url_encode(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_345), "12.3µs");
        assert_eq!(duration(150_000_000), "150ms");
        assert_eq!(duration(1_500_000), "1.5ms");
        assert_eq!(duration(2_350_000_000), "2.35s");
        assert_eq!(duration(192_000_000_000), "3m 12s");
        assert_eq!(duration(3_900_000_000_000), "1h 05m");
        assert_eq!(duration(-2_000_000), "-2ms");
    }

    #[test]
    fn timestamps_round_trip_through_datetime_inputs() {
        let ns = 1_700_000_000_123_000_000;
        assert_eq!(timestamp(ns), "2023-11-14 22:13:20.123");
        assert_eq!(datetime_local(ns), "2023-11-14T22:13:20");
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14 22:13"),
            Some(1_699_999_980_000_000_000)
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00"),
            Some(1_709_164_800_000_000_000)
        );
        for bad in [
            "",
            "2023-13-01T00:00",
            "yesterday",
            "2023-11-14",
            "2023-11-14T25:00",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_and_query_strings() {
        assert_eq!(count(1_234_567u64), "1\u{202f}234\u{202f}567");
        assert_eq!(
            query_string([("a", "x y&"), ("b", ""), ("c", "é")]),
            "?a=x%20y%26&c=%C3%A9"
        );
    }
}
