//! The process-wide subscriber: logs for the operator, spans for the collector.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, global};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// What [`init`] set up. Keep it for the life of the process and call
/// [`shutdown`](Self::shutdown) last, or the spans of the final seconds are lost.
#[derive(Debug)]
#[must_use = "dropping it without `shutdown` loses the spans not yet exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter; waits at most the exporter's
    /// timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default).
    ///
    /// Call it from a multi-threaded Tokio runtime (`#[tokio::main]`): the export runs on the
    /// runtime's other threads while this one waits.
    pub fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let shut_down = || provider.shutdown();
        let result = match tokio::runtime::Handle::try_current() {
            // Tells the runtime this worker is about to block, so its tasks move elsewhere.
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shut_down)
            }
            _ => shut_down(),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "failed to export the last spans");
        }
    }
}

/// Installs the global subscriber: logs (JSON lines when `json`) filtered by `RUST_LOG`
/// (default `info`), and an OpenTelemetry layer that exports spans over OTLP/gRPC when
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
///
/// The rest of the standard environment applies: `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` (e.g. `parentbased_traceidratio` and `0.1`),
/// `OTEL_SERVICE_NAME` (else `service_name`), `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_EXPORTER_OTLP_TIMEOUT` and `_HEADERS`. The endpoint must be plaintext `http://`
/// (a collector agent beside the pod); an unusable one is reported and no spans are
/// exported. Without an endpoint, trace context is still honoured and passed on, so the
/// trace ids in logs match the callers', but nothing is exported.
///
/// Call it once, first thing inside the Tokio runtime: the exporter's channel runs on it.
pub fn init(service_name: &'static str, json: bool) -> Telemetry {
    let configured = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    // The builder reads the endpoint and the other settings from the environment itself.
    let exporter = configured.then(|| build_exporter(SpanExporter::builder().with_tonic()));
    install(service_name, json, exporter)
}

/// [`init`] with the OTLP/gRPC endpoint given rather than read from the environment, and
/// plain-text logs: for tests and in-process suites. Global, so once per process.
pub fn init_with_endpoint(service_name: &'static str, endpoint: &str) -> Telemetry {
    let exporter = build_exporter(SpanExporter::builder().with_tonic().with_endpoint(endpoint));
    install(service_name, false, Some(exporter))
}

type ExporterResult = Result<SpanExporter, String>;

fn build_exporter(
    builder: opentelemetry_otlp::SpanExporterBuilder<opentelemetry_otlp::TonicExporterBuilderSet>,
) -> ExporterResult {
    // The exporter's channel spawns its connection task on the current runtime and would
    // panic outside one; say so instead.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("qupia_telemetry::init must be called inside a Tokio runtime".to_owned());
    }
    builder.build().map_err(|error| error.to_string())
}

fn install(service_name: &'static str, json: bool, exporter: Option<ExporterResult>) -> Telemetry {
    // Errors are kept until the subscriber exists to log them.
    let (exporter, exporter_error) = match exporter {
        Some(Ok(exporter)) => (Some(exporter), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let exporting = exporter.is_some();

    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG): the SDK's default config reads them.
    let mut builder = SdkTracerProvider::builder().with_resource(resource(service_name));
    if let Some(exporter) = exporter {
        // Batched on the SDK's own thread: a slow collector never holds up a request.
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("qupia");

    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if json { fmt::layer().json().boxed() } else { fmt::layer().boxed() };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Code locations, module paths, thread names and busy/idle times would be noise on
        // every span; the rpc.* names say where a span comes from.
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Spans only, never events: an event is a log line, and log lines stay in the
        // pod's logs rather than travel to the collector. INFO and above, whatever RUST_LOG
        // says, so quieter logs do not break traces, and the transport's own debug spans
        // (hyper, h2, tonic) — including the exporter's — stay out.
        .with_filter(filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO));
    let installed = tracing_subscriber::registry().with(logs.with_filter(log_filter)).with(spans).try_init();

    if let Err(error) = installed {
        // Another subscriber owns this process (a second call, or a test harness's); the
        // spans would go nowhere, so stop the exporter rather than keep a thread idle.
        let _ = provider.shutdown();
        tracing::warn!(%error, "a tracing subscriber was already installed; telemetry is not");
        return Telemetry { provider: None };
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    if let Some(error) = exporter_error {
        tracing::error!(%error, "failed to set up the OTLP span exporter; spans are not exported");
    }
    tracing::info!(exporting, "telemetry ready");
    Telemetry { provider: Some(provider) }
}

/// The standard resource from the environment, with `service_name` as the service's name
/// unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` already name it.
fn resource(service_name: &'static str) -> Resource {
    let from_env = Resource::builder().build();
    let named = from_env
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named { from_env } else { Resource::builder().with_service_name(service_name).build() }
}
