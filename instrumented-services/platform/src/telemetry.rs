//! The tracing pipeline of a demo process: `tracing` spans become OpenTelemetry spans
//! (tracing-opentelemetry) exported in batches over OTLP/gRPC, with a resource naming the
//! service, its instance and version; logs go to stderr.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

/// Which process this is, as the resource of every span says.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    /// `service.name`, e.g. `inventory`.
    pub name: &'static str,
    /// `service.instance.id`, unique per process, e.g. `inventory-2`.
    pub instance_id: String,
    /// `service.version`.
    pub version: &'static str,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] sends the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// How long spans wait in the batch before export: short, so a demo shows requests at once.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

/// Installs the global subscriber and propagators. Must run inside a tokio runtime (the gRPC
/// exporter's channel lives on it). With `otlp_endpoint` = `None`, spans are only logged.
/// `DEMO_LOG` filters the log on stderr (default `info`).
pub fn init(identity: &ServiceIdentity, otlp_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry::propagation::TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]),
    );
    // DEMO_LOG filters the log only; spans are exported at info level whatever it says.
    // (Targets, not EnvFilter: as a per-layer filter, EnvFilter's level hint also silenced
    // the span layer, so `DEMO_LOG=warn` exported nothing.)
    let log_filter: Targets = std::env::var("DEMO_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(log_filter);
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(fmt).try_init()?;
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let resource = Resource::builder()
        .with_service_name(identity.name)
        .with_attributes([
            KeyValue::new("service.instance.id", identity.instance_id.clone()),
            KeyValue::new("service.version", identity.version),
            KeyValue::new("service.namespace", "ducktrace-demo"),
        ])
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_DELAY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("ducktrace-demo");
    // The transport crates' own spans would trace the exporter itself.
    let span_filter = Targets::new()
        .with_default(Level::INFO)
        .with_target("h2", Level::WARN)
        .with_target("hyper", Level::WARN)
        .with_target("tonic", Level::WARN)
        .with_target("tower", Level::WARN);
    tracing_subscriber::registry()
        .with(fmt)
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(span_filter),
        )
        .try_init()?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter; call before the process exits.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("telemetry: spans may be lost at shutdown: {error}");
            }
        }
    }
}
