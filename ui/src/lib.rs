//! The HTTP server on :16686: the JSON API and the server-rendered web pages.

mod api;
mod pages;

use axum::routing::get;
use axum::Router;
use ducktrace_store::Reader;

pub use api::{DEFAULT_MAX_ROWS, MAX_ROWS_LIMIT};

/// Every route of the UI server.
pub fn router(reader: Reader) -> Router {
    Router::new()
        .route("/api/v3/traces/{trace_id}", get(api::trace))
        .route("/api/sql", get(api::sql).post(api::sql))
        .route("/sql", get(pages::sql::page))
        .route("/", get(pages::search::home))
        .route("/search", get(pages::search::page))
        .route("/trace/{trace_id}", get(pages::trace::page))
        .route("/trace/{trace_id}/detail", get(pages::trace::detail))
        .route("/compare", get(pages::compare::page))
        .route("/static/explore.js", get(pages::explore_script))
        .route("/dependencies", get(pages::dependencies::page))
        .route("/services", get(pages::services::list))
        .route("/services/{name}", get(pages::services::detail))
        .route("/static/style.css", get(pages::stylesheet))
        .layer(axum::middleware::map_response(pages::security_headers))
        .with_state(reader)
}
