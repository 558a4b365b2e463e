//! One OTLP exporter connection per client, over gRPC or HTTP, sending pre-encoded bodies.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes};
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Wait before retrying a refusal that names no delay of its own.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }

    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://127.0.0.1:4317",
            Protocol::Http => "http://127.0.0.1:4318/v1/traces",
        }
    }
}

/// How the collector answered one export.
pub enum Outcome {
    /// Acknowledged; the spans it lists as rejected were not stored.
    Accepted { rejected_spans: u64 },
    /// Refused for now (overload or unavailable); the same body may be retried later.
    Refused { retry_after: Duration },
    /// Anything else: the spans are lost.
    Failed(String),
}

#[expect(clippy::large_enum_variant, reason = "one per client, created once")]
pub enum Exporter {
    Grpc(tonic::client::Grpc<Channel>),
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        endpoint: Uri,
        gzip: bool,
    },
}

impl Exporter {
    /// gRPC connects now, so an unreachable collector fails the run up front; HTTP connects
    /// on the first export and reports an unreachable collector as errors.
    pub async fn connect(protocol: Protocol, endpoint: &str, gzip: bool) -> Result<Self> {
        match protocol {
            Protocol::Grpc => {
                let channel = Endpoint::from_shared(endpoint.to_string())?
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {endpoint}"))?;
                let grpc = tonic::client::Grpc::new(channel);
                Ok(Self::Grpc(if gzip {
                    grpc.send_compressed(CompressionEncoding::Gzip)
                } else {
                    grpc
                }))
            }
            Protocol::Http => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let endpoint = endpoint.parse().with_context(|| format!("endpoint {endpoint}"))?;
                Ok(Self::Http {
                    client,
                    endpoint,
                    gzip,
                })
            }
        }
    }

    /// Sends one encoded `ExportTraceServiceRequest`; compression, if asked for, happens here.
    pub async fn export(&mut self, body: Bytes) -> Outcome {
        match self {
            Self::Grpc(grpc) => export_grpc(grpc, body).await,
            Self::Http {
                client,
                endpoint,
                gzip,
            } => export_http(client, endpoint, *gzip, body).await,
        }
    }
}

async fn export_grpc(grpc: &mut tonic::client::Grpc<Channel>, body: Bytes) -> Outcome {
    if let Err(error) = grpc.ready().await {
        return Outcome::Failed(format!("gRPC channel: {error}"));
    }
    let path = PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(tonic::Request::new(body), path, PreEncoded).await {
        Ok(response) => accepted(response.into_inner()),
        Err(status) if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) => {
            let hint = status.get_details_retry_info().and_then(|info| info.retry_delay);
            Outcome::Refused {
                retry_after: hint.unwrap_or(DEFAULT_RETRY_DELAY),
            }
        }
        Err(status) => Outcome::Failed(format!("gRPC {:?}: {}", status.code(), status.message())),
    }
}

async fn export_http(
    client: &Client<HttpConnector, Full<Bytes>>,
    endpoint: &Uri,
    gzip: bool,
    body: Bytes,
) -> Outcome {
    let mut request = Request::post(endpoint.clone()).header(CONTENT_TYPE, "application/x-protobuf");
    if gzip {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    let body = if gzip { compress(&body) } else { body };
    let request = request.body(Full::new(body)).expect("static headers are valid");
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) => return Outcome::Failed(format!("HTTP: {error}")),
    };
    let (parts, body) = response.into_parts();
    // Read the whole body even when refused, so the connection goes back to the pool.
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return Outcome::Failed(format!("HTTP body: {error}")),
    };
    match parts.status {
        StatusCode::OK => match ExportTraceServiceResponse::decode(body) {
            Ok(response) => accepted(response),
            Err(error) => Outcome::Failed(format!("HTTP 200 with an undecodable response: {error}")),
        },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            let seconds = parts
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            Outcome::Refused {
                retry_after: seconds.map_or(DEFAULT_RETRY_DELAY, Duration::from_secs),
            }
        }
        status => Outcome::Failed(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
    }
}

fn accepted(response: ExportTraceServiceResponse) -> Outcome {
    let rejected_spans = response
        .partial_success
        .map_or(0, |p| p.rejected_spans.max(0) as u64);
    Outcome::Accepted { rejected_spans }
}

/// Gzip at the default level, as tonic's gzip and the OpenTelemetry SDKs do.
pub fn compress(body: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    encoder.write_all(body).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail").into()
}

/// A gRPC codec whose requests are already protobuf bytes, so clients never re-encode.
#[derive(Clone, Copy)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let response = Message::decode(src).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(response))
    }
}
