//! Links between pages, built in one place so every page carries the shared query parameters
//! (`service`, `operation`, `lookback`…) the same way and encodes names safely.

use ducktrace_store::TraceId;

use super::time_range::TimeRange;

/// `text` percent-encoded for a path segment or query value (RFC 3986 unreserved kept).
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(byte as char),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// A query string (`?a=1&b=2`) from `(name, value)` pairs, leaving out empty values.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// The page of one service over `range`, optionally showing one operation.
pub fn service(name: &str, operation: Option<&str>, range: &TimeRange) -> String {
    let mut href = format!("/services/{}?{}", encode(name), range.query());
    if let Some(operation) = operation {
        href.push_str(&format!("&operation={}", encode(operation)));
    }
    href
}

/// The trace search for a service (and operation) over `range`.
pub fn search(service: &str, operation: Option<&str>, range: &TimeRange) -> String {
    let mut href = format!("/search?service={}", encode(service));
    if let Some(operation) = operation {
        href.push_str(&format!("&operation={}", encode(operation)));
    }
    href.push('&');
    href.push_str(&range.query());
    href
}

/// One trace's page.
pub fn trace(trace_id: TraceId) -> String {
    format!("/trace/{trace_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::time_range::RangeParams;

    #[test]
    fn names_are_encoded() {
        let range = TimeRange::parse(&RangeParams::default(), 0).unwrap();
        assert_eq!(
            service("a b/<c>", Some("GET /x?y"), &range),
            "/services/a%20b%2F%3Cc%3E?lookback=1h&operation=GET%20%2Fx%3Fy"
        );
        assert_eq!(search("ü", None, &range), "/search?service=%C3%BC&lookback=1h");
        assert_eq!(
            query([("a", "x y&"), ("b", ""), ("c", "é")]),
            "?a=x%20y%26&c=%C3%A9"
        );
    }
}
