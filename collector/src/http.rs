//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip-compressed.
//!
//! Per the OTLP spec the response uses the request's content type: an
//! `ExportTraceServiceResponse` on success, a `google.rpc.Status` on failure.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flate2::read::GzDecoder;
use prost::Message;
use serde::Serialize;

use crate::ingest::{Ingest, IngestError, Payload, RETRY_AFTER};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone)]
struct Receiver {
    ingest: Ingest,
    max_body_bytes: usize,
}

/// The OTLP/HTTP router. Bodies, compressed or decompressed, over `max_body_bytes` get 413.
pub fn router(ingest: Ingest, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(Receiver {
            ingest,
            max_body_bytes,
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status` as OTLP/HTTP returns it on failure.
#[derive(Clone, PartialEq, Message, Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let encoding = match content_type.as_deref() {
        Some(PROTOBUF) => Encoding::Protobuf,
        Some(JSON) => Encoding::Json,
        other => {
            let message = format!(
                "unsupported Content-Type {:?}; send {PROTOBUF} or {JSON}",
                other.unwrap_or("(none)")
            );
            return failure(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                message,
            );
        }
    };
    let body = match headers.get(header::CONTENT_ENCODING).map(HeaderValue::to_str) {
        None | Some(Ok("identity")) => body,
        Some(Ok("gzip")) => match gunzip(&body, receiver.max_body_bytes) {
            Ok(body) => Bytes::from(body),
            Err((status, message)) => {
                return failure(encoding, status, tonic::Code::InvalidArgument, message)
            }
        },
        Some(other) => {
            let message = format!(
                "unsupported Content-Encoding {:?}; send gzip or none",
                other.unwrap_or("?")
            );
            return failure(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                message,
            );
        }
    };
    let payload = match encoding {
        Encoding::Protobuf => Payload::Protobuf(&body),
        Encoding::Json => Payload::Json(&body),
    };
    match receiver.ingest.export(payload).await {
        Ok(response) => match encoding {
            Encoding::Protobuf => {
                ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response()
            }
            Encoding::Json => json_response(StatusCode::OK, &response),
        },
        Err(error @ IngestError::Malformed(_)) => failure(
            encoding,
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            error.to_string(),
        ),
        Err(IngestError::Unavailable(error)) => {
            let (status, code) = if error.is_overload() {
                (StatusCode::TOO_MANY_REQUESTS, tonic::Code::ResourceExhausted)
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
            };
            let mut response = failure(encoding, status, code, error.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
            response
        }
    }
}

/// Decompresses at most `limit` bytes, so a small bomb cannot take the memory.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::new();
    match GzDecoder::new(body).take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(n) if n > limit => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the decompressed body exceeds the limit of {limit} bytes"),
        )),
        Ok(_) => Ok(out),
        Err(error) => Err((StatusCode::BAD_REQUEST, format!("invalid gzip body: {error}"))),
    }
}

fn failure(encoding: Encoding, status: StatusCode, code: tonic::Code, message: String) -> Response {
    let body = RpcStatus {
        code: code as i32,
        message,
    };
    match encoding {
        Encoding::Protobuf => {
            (status, [(header::CONTENT_TYPE, PROTOBUF)], body.encode_to_vec()).into_response()
        }
        Encoding::Json => json_response(status, &body),
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, JSON)], bytes).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
