//! The JSON API: traces as OTLP JSON (the shape of Jaeger's API v3) and read-only SQL.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ducktrace_store::{Reader, TraceId};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde::Deserialize;
use serde_json::json;

/// Rows returned when a query does not say `max_rows`.
pub const DEFAULT_MAX_ROWS: usize = 10_000;
/// Rows a single answer may hold at most.
pub const MAX_ROWS_LIMIT: usize = 1_000_000;

/// An error answered as `{"error": {"httpCode", "message"}}`, as Jaeger's API v3 does.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"httpCode": self.0.as_u16(), "message": self.1}});
        (self.0, Json(body)).into_response()
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task failed: {e}"),
        )
    })?
}

/// `GET /api/v3/traces/{trace_id}`
pub async fn trace(State(reader): State<Reader>, Path(trace_id): Path<String>) -> Result<Response, ApiError> {
    let trace_id: TraceId = trace_id
        .parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e}")))?;
    let resource_spans = blocking(move || {
        reader
            .trace(trace_id)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await?;
    if resource_spans.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("trace {trace_id} not found"),
        ));
    }
    Ok(Json(json!({"result": TracesData { resource_spans }})).into_response())
}

#[derive(Deserialize)]
pub struct SqlParams {
    q: Option<String>,
    max_rows: Option<usize>,
}

/// `GET /api/sql?q=...` and `POST /api/sql` with the SQL as the body.
pub async fn sql(
    State(reader): State<Reader>,
    Query(params): Query<SqlParams>,
    body: String,
) -> Result<Response, ApiError> {
    let sql = match params.q {
        Some(q) => q,
        None if !body.trim().is_empty() => body,
        None => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "pass the SQL as ?q= or as the request body".into(),
            ))
        }
    };
    let max_rows = params.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    if max_rows > MAX_ROWS_LIMIT {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("max_rows may be at most {MAX_ROWS_LIMIT}"),
        ));
    }
    let result = blocking(move || {
        reader
            .query(&sql, max_rows)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
    })
    .await?;
    Ok(Json(result).into_response())
}
