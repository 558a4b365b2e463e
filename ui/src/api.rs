//! The JSON API: traces as OTLP JSON (the shape of Jaeger's API v3) and read-only SQL.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ducktrace_store::sql::output::{Encoder, Format};
use ducktrace_store::sql::{BatchSink, Column, RowSink, SinkClosed};
use ducktrace_store::{duckdb_value, Reader, TraceId};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

/// Rows returned when a query does not say `max_rows`.
pub const DEFAULT_MAX_ROWS: usize = 10_000;
/// Rows a single answer may hold at most.
pub use ducktrace_store::sql::MAX_ROWS_LIMIT;

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
    let result = TracesData { resource_spans };
    Ok(Json(TraceAnswer { result }).into_response())
}

/// The answer to a trace read, serialized directly: `json!` built the whole trace as a
/// `serde_json::Value` first (~0.1 ms of a 2.8 ms read at 10M spans).
#[derive(Serialize)]
struct TraceAnswer {
    result: TracesData,
}

#[derive(Deserialize)]
pub struct SqlParams {
    q: Option<String>,
    max_rows: Option<usize>,
    format: Option<String>,
}

/// Encoded result bytes are handed to the response in pieces of about this size.
const CHUNK_BYTES: usize = 64 * 1024;
/// Pieces buffered between the query thread and a slow client; the query waits beyond it.
const CHUNKS_IN_FLIGHT: usize = 8;

/// `GET /api/sql?q=...` and `POST /api/sql` with the SQL as the body;
/// `format=json|csv|parquet|arrow`, `max_rows`. The answer streams: rows (or record batches)
/// are encoded and sent as the query produces them. A query that fails after the first bytes
/// were sent ends a JSON answer with `"error"`; any other format's response is cut off, so no
/// client mistakes a partial CSV, Arrow or Parquet answer for a whole one.
pub async fn sql(
    State(reader): State<Reader>,
    Query(params): Query<SqlParams>,
    body: String,
) -> Result<Response, ApiError> {
    let bad_request = |message: String| ApiError(StatusCode::BAD_REQUEST, message);
    let sql = match params.q {
        Some(q) => q,
        None if !body.trim().is_empty() => body,
        None => return Err(bad_request("pass the SQL as ?q= or as the request body".into())),
    };
    let max_rows = params.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    if max_rows > MAX_ROWS_LIMIT {
        return Err(bad_request(format!("max_rows may be at most {MAX_ROWS_LIMIT}")));
    }
    let format: Format = params
        .format
        .as_deref()
        .unwrap_or("json")
        .parse()
        .map_err(bad_request)?;

    let (chunks, body) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let (started, start) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let limits = reader.limits(max_rows);
        let mut sink = Streaming {
            encoder: Encoder::new(format, ChunkWriter::new(chunks.clone(), limits.time_limit)),
            started: Some(started),
        };
        let result = reader.query_each(&sql, &[], limits, &mut sink);
        match sink.started.take() {
            // Failed before producing anything: the handler answers with an error status.
            Some(started) => {
                let _ = started.send(Err(result
                    .err()
                    .map_or_else(|| "the query produced no columns".into(), |e| e.to_string())));
            }
            None => {
                let finished = sink.encoder.finish(&result);
                if let Err(error) = finished {
                    tracing::debug!(%error, "SQL result stream ended early");
                    if format != Format::Json {
                        let _ = chunks.blocking_send(Err(error));
                    }
                }
            }
        }
    });
    match start.await {
        Ok(Ok(())) => {
            let stream = futures_util::stream::unfold(body, |mut body| async move {
                body.recv().await.map(|chunk| (chunk, body))
            });
            Ok((
                [(header::CONTENT_TYPE, format.content_type())],
                Body::from_stream(stream),
            )
                .into_response())
        }
        Ok(Err(message)) => Err(bad_request(message)),
        Err(_) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the query task failed".into(),
        )),
    }
}

/// Passes rows to the encoder and says, once, that the query is producing output.
struct Streaming {
    encoder: Encoder<ChunkWriter>,
    started: Option<oneshot::Sender<Result<(), String>>>,
}

impl RowSink for Streaming {
    fn columns(&mut self, columns: &[Column]) -> Result<(), SinkClosed> {
        self.encoder.columns(columns)?;
        if let Some(started) = self.started.take() {
            started.send(Ok(())).map_err(|_| SinkClosed)?;
        }
        Ok(())
    }

    fn row(&mut self, values: &[duckdb_value::Value]) -> Result<(), SinkClosed> {
        self.encoder.row(values)
    }

    fn as_batch_sink(&mut self) -> Option<&mut dyn BatchSink> {
        self.encoder.as_batch_sink()
    }
}

/// Collects encoded bytes and sends them on in chunks; fails once the response is dropped.
struct ChunkWriter {
    buffer: Vec<u8>,
    chunks: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    /// A query holds one of the store's few query slots while it streams, so a client that
    /// stops reading must not keep it past the query time limit.
    deadline: tokio::time::Instant,
    runtime: tokio::runtime::Handle,
}

impl ChunkWriter {
    fn new(
        chunks: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        time_limit: std::time::Duration,
    ) -> Self {
        Self {
            buffer: Vec::with_capacity(CHUNK_BYTES),
            chunks,
            deadline: tokio::time::Instant::now() + time_limit,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        let sent = self.runtime.block_on(tokio::time::timeout_at(
            self.deadline,
            self.chunks.send(Ok(chunk)),
        ));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read the answer within the query time limit",
            )),
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}
