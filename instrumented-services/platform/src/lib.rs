//! Everything the demo services share, so that no service copies another's code:
//!
//! - [`telemetry`]: the OpenTelemetry pipeline (tracing → OTLP/gRPC) with the service's resource.
//! - [`propagation`]: W3C `traceparent`/`baggage` in HTTP headers, gRPC metadata and event headers.
//! - [`grpc`]: the server layer (server spans, injected faults) and the client interceptor.
//! - [`discovery`]: registration with the registry and resolution with round robin.
//! - [`resilience`]: timeouts, retries with backoff and jitter, circuit breakers — as
//!   [`resilience::Downstream`], the one way services call each other.
//! - [`faults`]: latency and error injection, set by flags or at run time over HTTP.
//! - [`broker`]: NATS JetStream as the optional event transport (`--nats-url`).
//! - [`db`]: a SQLite database per service with a span per statement.
//! - [`process`]: the common flags and the start/serve/stop sequence of a gRPC service.

pub mod broker;
pub mod db;
pub mod discovery;
pub mod faults;
pub mod grpc;
pub mod process;
pub mod propagation;
pub mod resilience;
pub mod telemetry;

/// The package of every demo contract, as gRPC paths spell it.
pub const GRPC_PACKAGE: &str = "ducktrace.demo.v1";
