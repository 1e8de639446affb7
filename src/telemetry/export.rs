//! The OTLP exporters, and the adapter that lets the SDK's background
//! threads drive them.
//!
//! Why the adapter: the SDK's batch span processor and periodic metric
//! reader run on their own OS threads and poll exports with a plain
//! `block_on`, outside any tokio runtime. The HTTP exporter's hyper client
//! (and tonic's retry sleeps) need the runtime's reactor and timer, so each
//! poll of an export enters the runtime captured at `init`. The export itself
//! still never runs on a request's task: requests only enqueue spans.

use super::config::{OtlpHeaders, OtlpTarget, Protocol};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::Handle;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

pub(super) fn span_exporter(
    target: &OtlpTarget,
    headers: &OtlpHeaders,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match target.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(&target.endpoint)
            .with_timeout(timeout)
            .with_metadata(metadata(headers)?)
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(&target.endpoint)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(timeout)
            .with_headers(headers.0.iter().cloned().collect())
            .build(),
    };
    exporter.map_err(|error| format!("the OTLP span exporter for {}: {error}", target.endpoint))
}

pub(super) fn metric_exporter(
    target: &OtlpTarget,
    headers: &OtlpHeaders,
    timeout: Duration,
) -> Result<opentelemetry_otlp::MetricExporter, String> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let exporter = match target.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(&target.endpoint)
            .with_timeout(timeout)
            .with_metadata(metadata(headers)?)
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(&target.endpoint)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(timeout)
            .with_headers(headers.0.iter().cloned().collect())
            .build(),
    };
    exporter.map_err(|error| format!("the OTLP metric exporter for {}: {error}", target.endpoint))
}

/// Headers as gRPC metadata. The config already checked them as HTTP
/// headers; gRPC adds only that names are lowercase, which they are.
fn metadata(headers: &OtlpHeaders) -> Result<MetadataMap, String> {
    let mut map = MetadataMap::with_capacity(headers.0.len());
    for (name, value) in &headers.0 {
        let key = MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid gRPC metadata name"))?;
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| format!("the value of `{name}` is not valid gRPC metadata"))?;
        map.insert(key, value);
    }
    Ok(map)
}

/// An exporter whose every poll runs inside the tokio runtime it was made in.
#[derive(Debug)]
pub(super) struct OnRuntime<E> {
    inner: E,
    runtime: Handle,
}

impl<E> OnRuntime<E> {
    pub(super) fn new(inner: E, runtime: Handle) -> Self {
        OnRuntime { inner, runtime }
    }
}

pin_project! {
    struct InRuntime<'a, F> {
        runtime: &'a Handle,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for InRuntime<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.runtime.enter();
        this.future.poll(cx)
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        InRuntime {
            runtime: &self.runtime,
            future: self.inner.export(batch),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        InRuntime {
            runtime: &self.runtime,
            future: self.inner.export(metrics),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
