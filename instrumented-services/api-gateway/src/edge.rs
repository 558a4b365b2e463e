//! What every request goes through before its handler: a SERVER span (child of the client's
//! `traceparent`, with `http.*` attributes), injected faults, the per-client rate limit, and
//! afterwards an access log line. The response carries the trace id in `x-trace-id`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use demo_kernel::ErrorCode;
use demo_platform::faults::Faults;
use demo_platform::propagation;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::api::ApiError;
use crate::rate_limit::RateLimiter;

#[derive(Clone)]
struct Edge {
    limiter: RateLimiter,
    faults: Faults,
}

/// `router` with the edge middleware around every route.
pub fn wrap(router: Router, limiter: RateLimiter, faults: Faults) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Edge { limiter, faults },
        edge,
    ))
}

/// Whom the rate limit counts: the bearer token when there is one, else the address.
fn client_key(request: &Request, peer: SocketAddr) -> String {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map_or_else(|| peer.ip().to_string(), |token| format!("token:{token}"))
}

async fn edge(
    State(edge): State<Edge>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |matched| matched.as_str())
        .to_string();
    let user_agent = request
        .headers()
        .get(USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let span = tracing::info_span!(
        "http.server",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        client.address = %peer.ip(),
        user_agent.original = %user_agent,
        http.response.status_code = tracing::field::Empty,
        rate_limit.exceeded = tracing::field::Empty,
        enduser.id = tracing::field::Empty,
    );
    let _ = span.set_parent(propagation::extract(request.headers()));
    let client = client_key(&request, peer);
    let mut response = async {
        if let Err(fault) = edge.faults.inject().await {
            return ApiError::new(ErrorCode::Unavailable, fault.to_string()).into_response();
        }
        if let Err(wait) = edge.limiter.check(&client) {
            tracing::Span::current().record("rate_limit.exceeded", true);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry in {seconds} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            return response;
        }
        next.run(request).await
    }
    .instrument(span.clone())
    .await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let trace_id = span.context().span().span_context().trace_id();
    drop(span);
    if let Ok(value) = HeaderValue::from_str(&trace_id.to_string()) {
        response.headers_mut().insert("x-trace-id", value);
    }
    tracing::info!(
        target: "access",
        client = %peer.ip(),
        %method,
        %path,
        status,
        duration_ms = started.elapsed().as_millis() as u64,
        %trace_id,
        "access"
    );
    response
}
