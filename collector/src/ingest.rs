//! The one path every receiver takes: decode, validate, hand to the writer, answer per OTLP.

use std::time::Duration;

use ducktrace_store::{otlp_json, Rejections, SpanBatch, SpanWriter, WriteError};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

/// How long a client asked to retry should wait first.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An OTLP export request body, in one of the encodings OTLP defines.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Protobuf(&'a [u8]),
    Json(&'a [u8]),
}

/// Why a request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload could not be decoded; retrying the same bytes cannot help.
    #[error("{0}")]
    Malformed(String),
    /// The store could not take the spans now; a retry later can succeed.
    #[error(transparent)]
    Unavailable(#[from] WriteError),
}

/// Shared by all receivers; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    writer: SpanWriter,
}

impl Ingest {
    pub fn new(writer: SpanWriter) -> Self {
        Self { writer }
    }

    /// Stores what can be stored and returns once it is committed.
    pub async fn export(&self, payload: Payload<'_>) -> Result<ExportTraceServiceResponse, IngestError> {
        let (batch, rejections) = match payload {
            Payload::Protobuf(bytes) => SpanBatch::from_protobuf(bytes)
                .map_err(|e| IngestError::Malformed(format!("invalid OTLP protobuf: {e}")))?,
            Payload::Json(bytes) => {
                let request =
                    otlp_json::decode_request(bytes).map_err(|e| IngestError::Malformed(e.to_string()))?;
                SpanBatch::from_request(&request)
            }
        };
        if rejections.count > 0 {
            tracing::debug!(rejected = rejections.count, reason = ?rejections.first_reason, "spans rejected");
        }
        self.writer.write(batch).await?;
        Ok(response(rejections))
    }
}

fn response(rejections: Rejections) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (rejections.count > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejections.count as i64,
            error_message: rejections.first_reason.unwrap_or_default(),
        }),
    }
}
