//! The OTLP/JSON encoding: hex ids, int64 as strings, lowerCamelCase keys.
//!
//! `opentelemetry-proto`'s serde support does the field mapping; this module adds what it lacks
//! for receivers: enum fields given by name (`"SPAN_KIND_SERVER"`) as well as by number.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use serde_json::Value as Json;

/// Why an OTLP/JSON body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid OTLP/JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("invalid OTLP/JSON: unknown {field} {name:?}")]
    UnknownEnum { field: &'static str, name: String },
}

/// Decodes an `ExportTraceServiceRequest` from OTLP/JSON bytes.
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonError> {
    let mut json: Json = serde_json::from_slice(body)?;
    for resource_spans in array_at(&mut json, "resourceSpans") {
        for scope_spans in array_at(resource_spans, "scopeSpans") {
            for span in array_at(scope_spans, "spans") {
                enum_name_to_number(span, "kind", "span kind", |name| {
                    SpanKind::from_str_name(name).map(|kind| kind as i32)
                })?;
                if let Some(status) = span.get_mut("status") {
                    enum_name_to_number(status, "code", "status code", |name| {
                        StatusCode::from_str_name(name).map(|code| code as i32)
                    })?;
                }
            }
        }
    }
    Ok(serde_json::from_value(json)?)
}

fn array_at<'a>(json: &'a mut Json, key: &str) -> impl Iterator<Item = &'a mut Json> {
    json.get_mut(key)
        .and_then(Json::as_array_mut)
        .into_iter()
        .flat_map(|items| items.iter_mut())
}

fn enum_name_to_number(
    object: &mut Json,
    key: &str,
    field: &'static str,
    from_name: impl Fn(&str) -> Option<i32>,
) -> Result<(), JsonError> {
    if let Some(Json::String(name)) = object.get(key) {
        let number = from_name(name).ok_or_else(|| JsonError::UnknownEnum {
            field,
            name: name.clone(),
        })?;
        object[key] = Json::from(number);
    }
    Ok(())
}

/// The OTLP/JSON text of a nested attribute value (an array or key-value list).
pub fn any_value_to_json(value: &Value) -> String {
    let any = AnyValue {
        value: Some(value.clone()),
    };
    serde_json::to_string(&any).expect("an AnyValue always serializes")
}

/// Reads back what `any_value_to_json` wrote.
pub fn any_value_from_json(text: &str) -> Result<AnyValue, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};

    #[test]
    fn enum_names_and_numbers_both_decode() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a",
             "kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"}},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b",
             "kind":2,"startTimeUnixNano":"1544712660000000000","status":{"code":1}}]}]}]}"#;
        let request = decode_request(body).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].kind, SpanKind::Client as i32);
        assert_eq!(spans[0].status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(spans[1].kind, SpanKind::Server as i32);
        assert_eq!(spans[1].start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(
            hex::encode(&spans[0].trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
    }

    #[test]
    fn unknown_enum_name_is_named_in_the_error() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#;
        let error = decode_request(body).unwrap_err().to_string();
        assert!(error.contains("SPAN_KIND_NOPE"), "{error}");
    }

    #[test]
    fn nested_values_round_trip() {
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key_strindex: 0,
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::IntValue(i64::MAX)),
                            },
                            AnyValue {
                                value: Some(Value::BytesValue(vec![0, 255])),
                            },
                            AnyValue {
                                value: Some(Value::DoubleValue(1.5)),
                            },
                        ],
                    })),
                }),
            }],
        });
        let text = any_value_to_json(&nested);
        assert_eq!(any_value_from_json(&text).unwrap().value, Some(nested));
    }
}
