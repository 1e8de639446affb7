//! Building the SDK providers from a [`TelemetryConfig`], and taking them
//! down again within a bounded time.

use super::config::{RootSampler, SamplerConfig, TelemetryConfig};
use super::export::{self, OnRuntime};
use super::metrics::Metrics;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeFlavor};

/// How long [`Telemetry::shutdown`] waits for the last export before it
/// gives up on an unreachable collector: well inside Kubernetes' default
/// 30 s termination grace, after the servers have drained.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

const SCOPE_NAME: &str = "llm-sidecar";

/// The process's tracer and meter, their providers, and `/metrics`.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    tracer: SdkTracer,
    meter: Meter,
    metrics: Metrics,
    registry: prometheus::Registry,
    capture_limit: Option<usize>,
    shut_down: AtomicBool,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("capture_limit", &self.capture_limit)
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Builds the providers, sets them (and the W3C trace-context
    /// propagator) as the process globals. Must run inside a tokio runtime:
    /// the exporters' connections live on it.
    ///
    /// Spans go to a batch processor (a bounded queue drained by a
    /// background thread: a request never waits on an export, and a full
    /// queue drops spans rather than memory growing). With no traces
    /// endpoint, or with the SDK disabled, there is no processor at all and
    /// spans are not recorded, but each still gets a fresh span id in the
    /// caller's trace, so `traceparent` still flows upstream.
    pub fn init(config: &TelemetryConfig) -> Result<Telemetry, String> {
        let runtime = Handle::try_current()
            .map_err(|_| "telemetry must be started inside a tokio runtime".to_owned())?;
        let resource = resource(config);

        let mut traces = SdkTracerProvider::builder().with_resource(resource.clone());
        match config.traces.as_ref().filter(|_| !config.disabled) {
            Some(target) => {
                let exporter =
                    export::span_exporter(target, &config.headers, config.export_timeout)?;
                traces = traces
                    .with_batch_exporter(OnRuntime::new(exporter, runtime.clone()))
                    .with_sampler(sampler(config.sampler));
            }
            // No export: our own traces are not sampled, but a caller's
            // sampled trace stays sampled through us, so the provider (vLLM,
            // a tracing gateway) still records its part of it.
            None => {
                traces = traces.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
            }
        }

        let registry = prometheus::Registry::new();
        let mut metrics = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus_reader(&registry)?);
        if let Some(target) = config.metrics.as_ref().filter(|_| !config.disabled) {
            let exporter = export::metric_exporter(target, &config.headers, config.export_timeout)?;
            metrics = metrics.with_reader(
                PeriodicReader::builder(OnRuntime::new(exporter, runtime))
                    .with_interval(config.metric_export_interval)
                    .build(),
            );
        }

        let telemetry = Telemetry::assemble(
            traces.build(),
            metrics.build(),
            registry,
            config.capture_limit(),
        );
        global::set_tracer_provider(telemetry.tracer_provider.clone());
        global::set_meter_provider(telemetry.meter_provider.clone());
        global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(telemetry)
    }

    /// For tests: every span goes synchronously to `exporter` (such as
    /// `opentelemetry_sdk::trace::InMemorySpanExporter`), metrics to
    /// `/metrics` only. Sets no globals, so tests in one process do not
    /// see each other's spans; needs no runtime.
    pub fn for_tests<E: SpanExporter + 'static>(exporter: E) -> Telemetry {
        let resource = resource(&TelemetryConfig::default());
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_sampler(Sampler::AlwaysOn)
            .with_simple_exporter(exporter)
            .build();
        let registry = prometheus::Registry::new();
        let reader = prometheus_reader(&registry).expect("a fresh registry accepts the exporter");
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        Telemetry::assemble(tracer_provider, meter_provider, registry, None)
    }

    /// Content capture on (`Some(cap)`) or off, as
    /// `telemetry.capture_content` would set it: for tests built with
    /// [`for_tests`](Self::for_tests).
    pub fn with_capture_limit(mut self, limit: Option<usize>) -> Telemetry {
        self.capture_limit = limit;
        self
    }

    fn assemble(
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        registry: prometheus::Registry,
        capture_limit: Option<usize>,
    ) -> Telemetry {
        let tracer = tracer_provider.tracer_with_scope(scope());
        let meter = meter_provider.meter_with_scope(scope());
        let metrics = Metrics::new(&meter);
        Telemetry {
            tracer_provider,
            meter_provider,
            tracer,
            meter,
            metrics,
            registry,
            capture_limit,
            shut_down: AtomicBool::new(false),
        }
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// For instruments beyond [`Metrics`], and for
    /// [`Metrics::observe_providers`].
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The byte cap for captured message content, `None` when the operator
    /// has not opted in.
    pub fn capture_limit(&self) -> Option<usize> {
        self.capture_limit
    }

    /// The Prometheus text exposition of every instrument, for `/metrics`.
    /// Collecting runs the observable-gauge callbacks.
    pub fn prometheus_text(&self) -> String {
        let mut text = String::new();
        if let Err(error) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text)
        {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }

    /// Flushes what is queued and stops the exporters, giving up after
    /// [`SHUTDOWN_TIMEOUT`]. Later calls do nothing.
    pub fn shutdown(&self) {
        if let Err(error) = self.shutdown_within(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "telemetry did not shut down cleanly");
        }
    }

    /// [`shutdown`](Self::shutdown) with its own bound. The SDK's shutdown
    /// blocks on the last export; it runs on a thread of its own so an
    /// unreachable collector costs at most `limit`, and (on a multi-thread
    /// runtime) the calling worker is handed off so the runtime keeps
    /// driving the export's connection meanwhile. On a current-thread
    /// runtime call it from `spawn_blocking`: blocking the only thread would
    /// starve the export until the limit.
    pub fn shutdown_within(&self, limit: Duration) -> Result<(), String> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        let (done, result) = mpsc::channel();
        std::thread::Builder::new()
            .name("telemetry-shutdown".into())
            .spawn(move || {
                let traces = tracer_provider.shutdown_with_timeout(limit);
                let metrics = meter_provider.shutdown_with_timeout(limit);
                let _ = done.send((traces, metrics));
            })
            .map_err(|error| format!("cannot start the shutdown thread: {error}"))?;
        let wait = || result.recv_timeout(limit);
        let outcome = match Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        match outcome {
            Ok((Ok(()), Ok(()))) => Ok(()),
            Ok((traces, metrics)) => Err(format!("traces: {traces:?}; metrics: {metrics:?}")),
            Err(_) => Err(format!("gave up after {limit:?}")),
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Only what the config resolved, plus the SDK's own name and version: the
/// SDK's environment detectors are left out, as the config already read
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` through its seam.
fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_service_name(config.service_name.clone())
        .build()
}

fn sampler(config: SamplerConfig) -> Sampler {
    let root = match config.root {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    if config.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

/// A reader over its own registry (not Prometheus' process-wide default),
/// so several `Telemetry` values can live in one test process.
fn prometheus_reader(
    registry: &prometheus::Registry,
) -> Result<opentelemetry_prometheus::PrometheusExporter, String> {
    opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .map_err(|error| format!("cannot set up the Prometheus exporter: {error}"))
}
