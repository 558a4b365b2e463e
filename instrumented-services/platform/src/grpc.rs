//! gRPC on both ends. Servers get [`ServerLayer`]: a SERVER span per call (child of the
//! caller's `traceparent`, with `rpc.*` attributes and the gRPC status) inside which the
//! configured faults are injected. Clients send the current span's context through
//! [`inject_context`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use axum::http::{Request, Response};
use tonic::service::Interceptor;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use demo_kernel::ErrorCode;

use crate::faults::Faults;
use crate::propagation;

/// Wraps a gRPC server (and its `/admin` HTTP routes, which it leaves untraced).
#[derive(Clone)]
pub struct ServerLayer {
    faults: Faults,
}

impl ServerLayer {
    pub fn new(faults: Faults) -> Self {
        Self { faults }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerService {
            inner,
            faults: self.faults.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ServerService<S> {
    inner: S,
    faults: Faults,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is ready only if polled; keep the polled one for this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_string();
        if path.starts_with("/admin/") {
            return Box::pin(inner.call(request));
        }
        let faults = self.faults.clone();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let _ = span.set_parent(propagation::extract(request.headers()));
        Box::pin(
            async move {
                let response = match faults.inject().await {
                    Err(fault) => tonic::Status::unavailable(fault.to_string()).into_http(),
                    Ok(()) => inner.call(request).await?,
                };
                record_grpc_status(&tracing::Span::current(), response.headers());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// `/ducktrace.demo.v1.Inventory/Reserve` → (`ducktrace.demo.v1.Inventory`, `Reserve`).
fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/').split_once('/').unwrap_or((path, ""))
}

/// A unary response with an error carries `grpc-status` in its headers (trailers-only); a
/// success carries it in trailers, so no header means OK.
fn record_grpc_status(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let code = tonic::Status::from_header_map(headers).map_or(tonic::Code::Ok, |status| status.code());
    span.record("rpc.grpc.status_code", code as i64);
    if is_server_error(code) {
        span.record("otel.status_code", "error");
    }
}

/// Codes that mean the server failed (not the caller), which mark a SERVER span as an error.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// Adds the current span's context to an outgoing call's metadata.
#[derive(Clone, Copy, Default)]
pub struct ContextInjector;

impl Interceptor for ContextInjector {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = tracing::Span::current().context();
        let mut headers = std::mem::take(request.metadata_mut()).into_headers();
        propagation::inject(&cx, &mut headers);
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        Ok(request)
    }
}

/// A channel that sends the trace context with every call: what generated clients are built on.
pub type TracedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, ContextInjector>;

/// `channel` with context propagation.
pub fn inject_context(channel: tonic::transport::Channel) -> TracedChannel {
    tonic::service::interceptor::InterceptedService::new(channel, ContextInjector)
}

/// The gRPC metadata key that carries a [`ErrorCode`] from the service that failed to the edge.
pub const ERROR_CODE_HEADER: &str = "x-error-code";

/// A gRPC error carrying a shared error code.
pub fn error(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let grpc_code = match code {
        ErrorCode::InvalidRequest => tonic::Code::InvalidArgument,
        ErrorCode::InvalidCredentials | ErrorCode::InvalidToken => tonic::Code::Unauthenticated,
        ErrorCode::UnknownCustomer | ErrorCode::UnknownSku | ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::OutOfStock => tonic::Code::FailedPrecondition,
        ErrorCode::RateLimited => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
    };
    let mut status = tonic::Status::new(grpc_code, message);
    status.metadata_mut().insert(
        ERROR_CODE_HEADER,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    status
}

/// A final answer (never retried, not a breaker failure) carrying `code`, even when the code
/// names a transient cause: an order cancelled because inventory was unavailable is an outcome
/// of a healthy order service, not a failure of it.
pub fn final_error(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::failed_precondition(message);
    status.metadata_mut().insert(
        ERROR_CODE_HEADER,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    status
}

/// The shared error code of a failed call: the one the failing service set, else one derived
/// from the gRPC code.
pub fn error_code(status: &tonic::Status) -> ErrorCode {
    if let Some(code) = status
        .metadata()
        .get(ERROR_CODE_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
    {
        return code;
    }
    match status.code() {
        tonic::Code::InvalidArgument => ErrorCode::InvalidRequest,
        tonic::Code::Unauthenticated => ErrorCode::InvalidToken,
        tonic::Code::NotFound => ErrorCode::NotFound,
        tonic::Code::FailedPrecondition => ErrorCode::OutOfStock,
        tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/ducktrace.demo.v1.Inventory/Reserve"),
            ("ducktrace.demo.v1.Inventory", "Reserve")
        );
    }
}
