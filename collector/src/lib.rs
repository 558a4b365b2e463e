//! OTLP trace receivers (gRPC and HTTP) feeding the span store through one ingest path.

mod grpc;
mod http;
mod ingest;

pub use grpc::TraceGrpcService;
pub use http::router as http_router;
pub use ingest::{Ingest, IngestError, Payload, RETRY_AFTER};

/// The largest request body accepted, compressed or not, unless configured otherwise.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Export requests read and decoded at once, across both receivers. Further requests wait
/// unread in their sockets, so request bodies take at most this many times the body limit.
pub const MAX_CONCURRENT_REQUESTS: usize = 32;

/// The limit to put in front of both receivers; clones share one count.
pub fn request_limit() -> tower::limit::GlobalConcurrencyLimitLayer {
    tower::limit::GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS)
}
