//! W3C trace context and baggage across process boundaries. HTTP requests and gRPC calls both
//! carry them as headers (gRPC metadata is HTTP/2 headers); events carry them in the envelope's
//! header map, so the consumer can link back to the producer.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;

struct Headers<'a>(&'a HeaderMap);
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent (and baggage) a request arrived with; an empty context when none.
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)))
}

/// Writes `cx` as `traceparent`, `tracestate` and `baggage` headers.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeadersMut(headers))
    });
}

/// `cx` as event headers.
pub fn inject_map(cx: &Context) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(cx, &mut headers));
    headers
}

/// The context an event's headers carry.
pub fn extract_map(headers: &HashMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(headers))
}
