//! The OTLP wire protocol at its edges: hand-written JSON, bad input, partial success.

mod common;

use std::io::Write;

use bytes::{Buf, BufMut, Bytes};
use common::{
    assert_stored_exactly, http_post, post_protobuf, span_count, synthetic_request, RpcStatus, Server,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value as Json;

const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";

fn kv(key: &str, value: Option<Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value }),
        ..Default::default()
    }
}

fn string(s: &str) -> Option<Value> {
    Some(Value::StringValue(s.into()))
}

const RAW_JSON: &str = r#"{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"raw-json"}}],"droppedAttributesCount":1},
  "schemaUrl":"https://opentelemetry.io/schemas/1.24.0",
  "scopeSpans":[{
    "scope":{"name":"handmade","version":"0.1","attributes":[{"key":"scope.attr","value":{"boolValue":true}}]},
    "schemaUrl":"https://example.com/scope",
    "spans":[{
      "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"",
      "traceState":"vendor=a1","flags":257,"name":"consume <b>order</b>","kind":"SPAN_KIND_CONSUMER",
      "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000250000000,
      "attributes":[
        {"key":"s","value":{"stringValue":"text"}},
        {"key":"i_string","value":{"intValue":"9223372036854775807"}},
        {"key":"i_number","value":{"intValue":-7}},
        {"key":"d","value":{"doubleValue":3.5}},
        {"key":"b","value":{"boolValue":false}},
        {"key":"bytes","value":{"bytesValue":"AAH/"}},
        {"key":"array","value":{"arrayValue":{"values":[{"stringValue":"x"},{"intValue":"1"},{"doubleValue":2.5}]}}},
        {"key":"kvlist","value":{"kvlistValue":{"values":[{"key":"inner","value":{"arrayValue":{"values":[{"boolValue":true}]}}}]}}},
        {"key":"empty","value":{}}
      ],
      "droppedAttributesCount":2,
      "events":[{"timeUnixNano":"1700000000100000000","name":"retry","attributes":[{"key":"attempt","value":{"intValue":"2"}}],"droppedAttributesCount":3}],
      "droppedEventsCount":4,
      "links":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","traceState":"x=y",
                "attributes":[{"key":"link.kind","value":{"stringValue":"follows"}}],"droppedAttributesCount":5,"flags":1}],
      "droppedLinksCount":6,
      "status":{"code":"STATUS_CODE_ERROR","message":"poison message"}
    }]
  }]
}]}"#;

fn raw_json_expected() -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: hex::decode(TRACE_ID).unwrap(),
        span_id: hex::decode("eee19b7ec3c1b174").unwrap(),
        parent_span_id: vec![],
        trace_state: "vendor=a1".into(),
        flags: 257,
        name: "consume <b>order</b>".into(),
        kind: 5,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            kv("s", string("text")),
            kv("i_string", Some(Value::IntValue(i64::MAX))),
            kv("i_number", Some(Value::IntValue(-7))),
            kv("d", Some(Value::DoubleValue(3.5))),
            kv("b", Some(Value::BoolValue(false))),
            kv("bytes", Some(Value::BytesValue(vec![0, 1, 255]))),
            kv(
                "array",
                Some(Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: string("x") },
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(Value::DoubleValue(2.5)),
                        },
                    ],
                })),
            ),
            kv(
                "kvlist",
                Some(Value::KvlistValue(KeyValueList {
                    values: vec![kv(
                        "inner",
                        Some(Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::BoolValue(true)),
                            }],
                        })),
                    )],
                })),
            ),
            kv("empty", None),
        ],
        dropped_attributes_count: 2,
        events: vec![Event {
            time_unix_nano: 1_700_000_000_100_000_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", Some(Value::IntValue(2)))],
            dropped_attributes_count: 3,
        }],
        dropped_events_count: 4,
        links: vec![Link {
            trace_id: hex::decode("0af7651916cd43dd8448eb211c80319c").unwrap(),
            span_id: hex::decode("b7ad6b7169203331").unwrap(),
            trace_state: "x=y".into(),
            attributes: vec![kv("link.kind", string("follows"))],
            dropped_attributes_count: 5,
            flags: 1,
        }],
        dropped_links_count: 6,
        status: Some(Status {
            message: "poison message".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("raw-json"))],
                dropped_attributes_count: 1,
                entity_refs: vec![],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "handmade".into(),
                    version: "0.1".into(),
                    attributes: vec![kv("scope.attr", Some(Value::BoolValue(true)))],
                    dropped_attributes_count: 0,
                }),
                spans: vec![span],
                schema_url: "https://example.com/scope".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
        }],
    }
}

fn post(
    server: &Server,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut headers = vec![("content-type", content_type)];
    headers.extend_from_slice(extra);
    http_post(&format!("{}/v1/traces", server.http_endpoint()), &headers, body)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn hand_written_json_keeps_every_value_type() {
    let server = Server::start();
    let (status, headers, body) = post(&server, "application/json", &[], RAW_JSON.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    assert_stored_exactly(&server, &raw_json_expected());

    // The export is OTLP/JSON as the spec writes it: hex ids, int64 as strings, camelCase.
    let (status, text) = common::http_get(&server.ui_url(&format!("/api/v3/traces/{TRACE_ID}")));
    assert_eq!(status, 200);
    let json: Json = serde_json::from_str(&text).unwrap();
    let span = &json["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], TRACE_ID);
    assert_eq!(span["spanId"], "eee19b7ec3c1b174");
    assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
    assert_eq!(span["attributes"][1]["value"]["intValue"], "9223372036854775807");
    assert_eq!(span["attributes"][5]["value"]["bytesValue"], "AAH/");

    // Sending the export back is the identity.
    let exported: ExportTraceServiceRequest =
        ducktrace_store::otlp_json::decode_request(json["result"].to_string().as_bytes()).unwrap();
    let again = Server::start();
    post_protobuf(&again, &exported);
    assert_stored_exactly(&again, &raw_json_expected());
}

/// The summary of `trace_id` (hex) once the summarizer has it: how many of its spans have
/// events or links, which decides whether a trace read fetches those columns.
fn summarized_spans_with_events_or_links(server: &Server, trace_id: &str) -> i64 {
    let sql = format!("SELECT spans_with_events_or_links FROM trace_summaries WHERE trace_id = '{trace_id}'");
    let rows = server.sql_rows_when(&sql, std::time::Duration::from_secs(20), |rows| {
        rows[0][0].is_i64()
    });
    rows[0][0].as_i64().unwrap()
}

#[test]
fn traces_read_the_same_before_and_after_they_are_summarized() {
    let server = Server::start();
    let with_nested = raw_json_expected();
    let without_nested = common::synthetic_request(3, 5);
    for request in [&with_nested, &without_nested] {
        post_protobuf(&server, request);
        // Read at once: the spans are not summarized yet.
        assert_stored_exactly(&server, request);
    }
    let plain_id = hex::encode(&without_nested.resource_spans[0].scope_spans[0].spans[0].trace_id);
    assert_eq!(summarized_spans_with_events_or_links(&server, TRACE_ID), 1);
    assert_eq!(summarized_spans_with_events_or_links(&server, &plain_id), 0);
    // Read through the summaries: the trace without events or links skips those columns, the
    // other still gets every event and link back.
    for request in [&with_nested, &without_nested] {
        assert_stored_exactly(&server, request);
    }
}

#[test]
fn malformed_requests_get_clear_errors_and_the_server_keeps_serving() {
    let server = Server::start();
    struct BadRequest {
        what: &'static str,
        content_type: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static [u8],
        status: u16,
        message: &'static str,
    }
    let gzip_header: &[(&str, &str)] = &[("content-encoding", "gzip")];
    let cases = [
        BadRequest {
            what: "garbage protobuf",
            content_type: "application/x-protobuf",
            headers: &[],
            body: &[0xff, 0xff, 0xff, 0x0f],
            status: 400,
            message: "invalid OTLP protobuf",
        },
        BadRequest {
            what: "broken JSON",
            content_type: "application/json",
            headers: &[],
            body: b"{\"resourceSpans\": [",
            status: 400,
            message: "invalid OTLP/JSON",
        },
        BadRequest {
            what: "wrong JSON shape",
            content_type: "application/json",
            headers: &[],
            body: br#"{"resourceSpans": 5}"#,
            status: 400,
            message: "invalid OTLP/JSON",
        },
        BadRequest {
            what: "bad gzip",
            content_type: "application/json",
            headers: gzip_header,
            body: b"{}",
            status: 400,
            message: "invalid gzip body",
        },
        BadRequest {
            what: "wrong content type",
            content_type: "text/plain",
            headers: &[],
            body: b"hello",
            status: 415,
            message: "unsupported Content-Type",
        },
        BadRequest {
            what: "unknown encoding",
            content_type: "application/json",
            headers: &[("content-encoding", "br")],
            body: b"{}",
            status: 415,
            message: "unsupported Content-Encoding",
        },
    ];
    for case in cases {
        let what = case.what;
        let (status, _, response) = post(&server, case.content_type, case.headers, case.body);
        assert_eq!(
            status,
            case.status,
            "{what}: {}",
            String::from_utf8_lossy(&response)
        );
        let message = if case.content_type == "application/x-protobuf" {
            let status = RpcStatus::decode(response.as_slice()).unwrap();
            assert_eq!(status.code, tonic::Code::InvalidArgument as i32, "{what}");
            status.message
        } else {
            let json: Json = serde_json::from_slice(&response).unwrap();
            json["message"].as_str().unwrap().to_string()
        };
        assert!(message.contains(case.message), "{what}: {message}");
    }
    // Empty requests are valid and store nothing.
    assert_eq!(post(&server, "application/x-protobuf", &[], b"").0, 200);
    assert_eq!(post(&server, "application/json", &[], b"{}").0, 200);
    // Gzip works for both encodings, and the server still serves.
    let (status, _, _) = post(
        &server,
        "application/json",
        &[("content-encoding", "gzip")],
        &gzip(RAW_JSON.as_bytes()),
    );
    assert_eq!(status, 200);
    let request = synthetic_request(1, 3).encode_to_vec();
    let (status, _, _) = post(
        &server,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        &gzip(&request),
    );
    assert_eq!(status, 200);
    assert_eq!(span_count(&server), 4);
}

#[test]
fn oversized_bodies_are_refused_before_decoding() {
    let server = Server::start_with(&["--max-request-bytes", "2000"]);
    let big = synthetic_request(1, 100).encode_to_vec();
    assert!(big.len() > 2000);
    assert_eq!(post(&server, "application/x-protobuf", &[], &big).0, 413);
    let bomb = gzip(&vec![b' '; 100_000]);
    assert!(bomb.len() < 2000);
    let (status, _, body) = post(
        &server,
        "application/json",
        &[("content-encoding", "gzip")],
        &bomb,
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    post_protobuf(&server, &synthetic_request(2, 2));
}

fn request_with_bad_ids() -> ExportTraceServiceRequest {
    let mut request = synthetic_request(3, 3);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[1].trace_id = vec![1, 2, 3];
    spans[2].span_id = vec![0; 8];
    request
}

#[test]
fn invalid_ids_are_rejected_as_partial_success_over_http() {
    let server = Server::start();
    let (status, _, body) = post(
        &server,
        "application/x-protobuf",
        &[],
        &request_with_bad_ids().encode_to_vec(),
    );
    assert_eq!(status, 200);
    let partial = ExportTraceServiceResponse::decode(body.as_slice())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("spans[1]: trace id must be 16 bytes long, got 3"),
        "{}",
        partial.error_message
    );
    assert_eq!(span_count(&server), 1);

    let json =
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"eee19b7ec3c1b174"}]}]}]}"#;
    let (status, _, body) = post(&server, "application/json", &[], json.as_bytes());
    assert_eq!(
        status,
        400,
        "non-hex ids are malformed JSON: {}",
        String::from_utf8_lossy(&body)
    );
}

/// Encodes raw bytes as the request, so the server sees exactly what a broken client sends.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[tokio::test]
async fn grpc_answers_bad_input_per_otlp() {
    let server = Server::start();
    let channel = tonic::transport::Channel::from_shared(server.grpc_endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let status = raw
        .unary(
            tonic::Request::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0x0f])),
            path,
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("invalid OTLP protobuf"), "{status:?}");

    let mut client =
        TraceServiceClient::new(channel).send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let response = client.export(request_with_bad_ids()).await.unwrap().into_inner();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 2);
    let response = client.export(synthetic_request(4, 5)).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    assert_eq!(span_count(&server), 6);
}
