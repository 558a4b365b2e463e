//! How numbers read on the pages: durations, rates, percentages and counts, short and
//! with about three significant digits.

/// A duration given in nanoseconds: `850 ns`, `12.3 µs`, `4.56 ms`, `2.35 s`, then `3m 12s` and
/// `1h 05m`; negative for offsets before a reference.
pub fn duration(ns: i64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "s"), (1e6, "ms"), (1e3, "µs")];
    let sign = if ns < 0 { "-" } else { "" };
    let magnitude = ns.unsigned_abs();
    let seconds = magnitude / 1_000_000_000;
    if seconds >= 3600 {
        return format!("{sign}{}h {:02}m", seconds / 3600, seconds % 3600 / 60);
    }
    if seconds >= 60 {
        return format!("{sign}{}m {:02}s", seconds / 60, seconds % 60);
    }
    let value = magnitude as f64;
    let (scale, unit) = UNITS
        .into_iter()
        .find(|(scale, _)| value >= *scale)
        .unwrap_or((1.0, "ns"));
    format!("{sign}{} {unit}", significant(value / scale))
}

/// Events per second; slow rates read better per minute.
pub fn rate(per_second: f64) -> String {
    if per_second > 0.0 && per_second < 0.1 {
        format!("{}/min", significant(per_second * 60.0))
    } else {
        format!("{}/s", significant(per_second))
    }
}

/// A fraction as a percentage; a small non-zero fraction never reads as 0.
pub fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    if value > 0.0 && value < 0.1 {
        "<0.1%".into()
    } else {
        format!("{}%", significant(value))
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// About three significant digits, without trailing zeros: 0.0123, 1.5, 12.3, 456, 7890.
pub fn significant(value: f64) -> String {
    let decimals = match value.abs() {
        v if v == 0.0 || v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        v => (2 - v.log10().floor() as i32).clamp(0, 9) as usize,
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(duration(0), "0 ns");
        assert_eq!(duration(850), "850 ns");
        assert_eq!(duration(12_345), "12.3 µs");
        assert_eq!(duration(1_500_000), "1.5 ms");
        assert_eq!(duration(4_560_000), "4.56 ms");
        assert_eq!(duration(150_000_000), "150 ms");
        assert_eq!(duration(1_000_000_000), "1 s");
        assert_eq!(duration(2_350_000_000), "2.35 s");
        assert_eq!(duration(150_000_000_000), "2m 30s");
        assert_eq!(duration(192_000_000_000), "3m 12s");
        assert_eq!(duration(3_900_000_000_000), "1h 05m");
        assert_eq!(duration(-2_000_000), "-2 ms");
    }

    #[test]
    fn rates_percentages_and_counts() {
        assert_eq!(rate(12.34), "12.3/s");
        assert_eq!(rate(0.05), "3/min");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(percent(0.042), "4.2%");
        assert_eq!(percent(0.0004), "<0.1%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(significant(0.0123), "0.0123");
    }
}
