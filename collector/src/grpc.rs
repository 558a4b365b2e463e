//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! Written out instead of using the generated server so the request reaches `Ingest` as bytes:
//! a malformed message must be answered INVALID_ARGUMENT (as OTLP requires), not the INTERNAL
//! the generated prost codec returns, and both receivers then share one decode path.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ingest::{Ingest, IngestError, Payload, RETRY_AFTER};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The tonic service for the OTLP trace receiver.
#[derive(Clone)]
pub struct TraceGrpcService {
    ingest: Ingest,
    max_message_bytes: usize,
}

impl TraceGrpcService {
    pub fn new(ingest: Ingest, max_message_bytes: usize) -> Self {
        Self {
            ingest,
            max_message_bytes,
        }
    }
}

impl NamedService for TraceGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for TraceGrpcService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only TraceService/Export is served here").into_http())
            });
        }
        let export = Export(self.ingest.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut encodings = EnabledCompressionEncodings::default();
            encodings.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawRequestCodec)
                .apply_compression_config(encodings, encodings)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(export, request).await)
        })
    }
}

struct Export(Ingest);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let body = request.into_inner();
            match ingest.export(Payload::Protobuf(&body)).await {
                Ok(response) => Ok(tonic::Response::new(response)),
                Err(error) => Err(status(&error)),
            }
        })
    }
}

/// The gRPC status OTLP prescribes for each failure; retryable ones carry RetryInfo.
fn status(error: &IngestError) -> Status {
    let retry = || ErrorDetails::with_retry_info(Some(RETRY_AFTER));
    match error {
        IngestError::Malformed(message) => Status::invalid_argument(message.clone()),
        IngestError::Unavailable(overload) if overload.is_overload() => {
            Status::with_error_details(Code::ResourceExhausted, error.to_string(), retry())
        }
        IngestError::Unavailable(_) => {
            Status::with_error_details(Code::Unavailable, error.to_string(), retry())
        }
    }
}

/// Passes request bytes through undecoded and encodes responses with prost.
#[derive(Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RequestBytes;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestBytes
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding the response failed: {e}")))
    }
}

struct RequestBytes;

impl Decoder for RequestBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}
