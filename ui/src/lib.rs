//! The HTTP server on :16686: the JSON API now, the web pages as they land.

mod api;

use axum::routing::get;
use axum::Router;
use ducktrace_store::Reader;

pub use api::{DEFAULT_MAX_ROWS, MAX_ROWS_LIMIT};

/// Every route of the UI server.
pub fn router(reader: Reader) -> Router {
    Router::new()
        .route("/api/v3/traces/{trace_id}", get(api::trace))
        .route("/api/sql", get(api::sql).post(api::sql))
        .with_state(reader)
}
