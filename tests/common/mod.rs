//! Harness for end-to-end tests: runs the real `ducktrace` binary and talks to it over the wire.
#![allow(dead_code)] // each test binary uses its own subset

pub mod shop;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::Value as Json;

/// A running `ducktrace serve` on free loopback ports; killed when dropped.
pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub ui: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// A loopback port nothing listens on, for a process the test starts. Taken below Linux's
/// ephemeral range (32768 and up): a port the kernel handed out for `:0` and we released could
/// be given to some outgoing connection before the child binds it, which failed a test with
/// "address already in use". Each test binary walks its own stretch of ports, picked by pid.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 10_000;
    const SPAN: u16 = 22_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 100) as u16 * (SPAN / 100);
    loop {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let address = SocketAddr::from(([127, 0, 0, 1], FIRST + offset));
        if TcpListener::bind(address).is_ok() {
            return address;
        }
    }
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(temp.path(), extra_args);
        server._temp = Some(temp);
        server
    }

    /// Starts on an existing data directory, as after a restart.
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::spawn(data_dir, extra_args, Stdio::inherit())
    }

    /// Starts on `data_dir` with its log written to `log` (appended), for a test that reads it.
    pub fn start_logging_to(data_dir: &Path, log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Self::spawn(data_dir, &[], Stdio::from(file))
    }

    fn spawn(data_dir: &Path, extra_args: &[&str], log: Stdio) -> Self {
        let (grpc, http, ui) = (free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_ducktrace"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--otlp-grpc-addr", &grpc.to_string()])
            .args(["--otlp-http-addr", &http.to_string()])
            .args(["--http-addr", &ui.to_string()])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the ducktrace binary starts");
        let mut server = Server {
            child,
            grpc,
            http,
            ui,
            data_dir: data_dir.to_owned(),
            _temp: None,
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for addr in [self.grpc, self.http, self.ui] {
            while TcpStream::connect(addr).is_err() {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("ducktrace exited ({status}) before listening on {addr}; its log is above");
                }
                assert!(
                    Instant::now() < deadline,
                    "ducktrace did not listen on {addr} within 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn ui_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ui)
    }

    /// Stops the server the way an operator does (SIGTERM) and returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Kills the server without warning, as a crash or power loss would.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Runs read-only SQL through `/api/sql` and returns the parsed answer.
    pub fn sql(&self, sql: &str) -> Json {
        let (status, body) = http_get(&self.ui_url(&format!("/api/sql?q={}", urlencode(sql))));
        assert_eq!(status, 200, "SQL {sql:?} failed: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `sql` until `accept` takes its rows (for what background indexing fills in);
    /// fails with the last rows once `within` has passed.
    pub fn sql_rows_when(&self, sql: &str, within: Duration, accept: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.sql(sql)["rows"].clone();
            if accept(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{sql} did not give the rows awaited; last: {rows}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The trace as stored, read through `/api/v3/traces/{id}`; `None` on 404.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<ResourceSpans>> {
        let (status, body) = http_get(&self.ui_url(&format!("/api/v3/traces/{trace_id}")));
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "trace {trace_id}: {body}");
        let json: Json = serde_json::from_str(&body).unwrap();
        let request =
            ducktrace_store::otlp_json::decode_request(json["result"].to_string().as_bytes()).unwrap();
        Some(request.resource_spans)
    }

    /// Polls until `count` spans of the trace are stored (exporters may still be in flight).
    pub fn wait_for_spans(&self, trace_id: &str, count: usize) -> Vec<ResourceSpans> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = self.trace(trace_id).unwrap_or_default();
            if flatten(&stored).len() >= count || Instant::now() > deadline {
                return stored;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn agent() -> ureq::Agent {
    // A server that never answers fails the test instead of hanging it.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

pub fn http_get(url: &str) -> (u16, String) {
    let mut response = agent().get(url).call().unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

/// POSTs `body` with the given headers; returns status, headers and body bytes.
pub fn http_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.body_mut().read_to_vec().unwrap())
}

/// One span with everything it inherits, the unit the tests compare.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSpan {
    pub resource: Option<Resource>,
    pub resource_schema_url: String,
    pub scope: Option<InstrumentationScope>,
    pub scope_schema_url: String,
    pub span: Span,
}

/// Every span of `resource_spans`, sorted by span id.
pub fn flatten(resource_spans: &[ResourceSpans]) -> Vec<FlatSpan> {
    let mut flat: Vec<FlatSpan> = resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |span| FlatSpan {
                    resource: rs.resource.clone(),
                    resource_schema_url: rs.schema_url.clone(),
                    scope: ss.scope.clone(),
                    scope_schema_url: ss.schema_url.clone(),
                    span: span.clone(),
                })
            })
        })
        .collect();
    flat.sort_by(|a, b| a.span.span_id.cmp(&b.span.span_id));
    flat
}

/// Asserts that every span the SDK exported comes back from the API exactly, field by field.
pub fn assert_stored_exactly(server: &Server, exported: &ExportTraceServiceRequest) {
    let expected = flatten(&exported.resource_spans);
    assert!(!expected.is_empty(), "the client exported no spans");
    let mut trace_ids: Vec<Vec<u8>> = expected.iter().map(|f| f.span.trace_id.clone()).collect();
    trace_ids.sort();
    trace_ids.dedup();
    for trace_id in trace_ids {
        let hex_id = hex::encode(&trace_id);
        let want: Vec<&FlatSpan> = expected.iter().filter(|f| f.span.trace_id == trace_id).collect();
        let stored = flatten(&server.wait_for_spans(&hex_id, want.len()));
        assert_eq!(stored.len(), want.len(), "span count of trace {hex_id}");
        for (got, want) in stored.iter().zip(want) {
            assert_eq!(
                got.span,
                want.span,
                "span {} of trace {hex_id}",
                hex::encode(&want.span.span_id)
            );
            assert_eq!(got.resource, want.resource, "resource of span {}", want.span.name);
            assert_eq!(got.resource_schema_url, want.resource_schema_url);
            assert_eq!(got.scope, want.scope, "scope of span {}", want.span.name);
            assert_eq!(got.scope_schema_url, want.scope_schema_url);
        }
    }
}

/// Checks the `spans` view against the exported spans: one row per span with the right values.
pub fn assert_sql_view_matches(server: &Server, exported: &ExportTraceServiceRequest) {
    for flat in flatten(&exported.resource_spans) {
        let span = &flat.span;
        let answer = server.sql(&format!(
            "SELECT trace_id, parent_span_id, service_name, span_name, span_kind, duration_ns, status_code,
                    epoch_ns(start_time) AS start_ns
             FROM spans WHERE span_id = '{}'",
            hex::encode(&span.span_id)
        ));
        let rows = answer["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "one row for span {}", span.name);
        let row = &rows[0];
        let service = flat.resource.as_ref().and_then(|r| {
            r.attributes.iter().find(|kv| kv.key == "service.name").map(|kv| {
                match kv.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s,
                    _ => String::new(),
                }
            })
        });
        assert_eq!(row[0], Json::from(hex::encode(&span.trace_id)));
        let parent = (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id));
        assert_eq!(
            row[1],
            parent.map_or(Json::Null, Json::from),
            "parent of {}",
            span.name
        );
        assert_eq!(row[2], Json::from(service.unwrap()));
        assert_eq!(row[3], Json::from(span.name.as_str()));
        let kind = span.kind().as_str_name().trim_start_matches("SPAN_KIND_");
        assert_eq!(row[4], Json::from(kind));
        assert_eq!(
            row[5],
            Json::from(span.end_time_unix_nano as i64 - span.start_time_unix_nano as i64)
        );
        let status = span.status.as_ref().map_or("UNSET", |s| {
            s.code().as_str_name().trim_start_matches("STATUS_CODE_")
        });
        assert_eq!(row[6], Json::from(status));
        assert_eq!(row[7], Json::from(span.start_time_unix_nano as i64));
    }
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Runs the `ducktrace` command with `args`; says whether it succeeded, and what it printed on
/// stdout and then stderr.
pub fn ducktrace(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ducktrace"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A request with `spans` spans of one trace whose id starts with `seed`, from service "synthetic".
pub fn synthetic_request(seed: u8, spans: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    let attribute = |key: &str, value: Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let trace_id = [[seed; 1].as_slice(), &[7u8; 15]].concat();
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: trace_id.clone(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("operation {}", i % 5),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64 * 1000,
            attributes: vec![
                attribute("index", Value::IntValue(i as i64)),
                attribute("http.route", Value::StringValue("/x".into())),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", Value::StringValue("synthetic".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope::default()),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The `google.rpc.Status` an OTLP/HTTP protobuf error answer carries (its details left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Sends a request over OTLP/HTTP protobuf and asserts it was fully accepted.
pub fn post_protobuf(server: &Server, request: &ExportTraceServiceRequest) {
    use prost::Message;
    let (status, _, body) = http_post(
        &format!("{}/v1/traces", server.http_endpoint()),
        &[("content-type", "application/x-protobuf")],
        &request.encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// The number of stored spans, through SQL.
pub fn span_count(server: &Server) -> i64 {
    server.sql("SELECT count(*) FROM spans")["rows"][0][0]
        .as_i64()
        .unwrap()
}

/// The Python of the venv the test command makes (or `DUCKTRACE_TEST_PYTHON`).
pub fn test_python() -> PathBuf {
    std::env::var_os("DUCKTRACE_TEST_PYTHON")
        .map_or_else(|| repo_path("tests/.venv/bin/python"), PathBuf::from)
}

/// Runs `tests/clients/<script>` with the test Python and decodes the JSON it prints.
pub fn python_client_json(script: &str, args: &[&str]) -> Json {
    let output = Command::new(test_python())
        .arg(repo_path(&format!("tests/clients/{script}")))
        .args(args)
        .output()
        .expect("the test Python runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}
