//! W3C trace context (`traceparent`, `tracestate`) in and out of header
//! maps. One pair of functions serves both edges: tonic's
//! `MetadataMap::as_ref()` is an `http::HeaderMap`, as are axum's and
//! reqwest's headers.
//!
//! The propagator is used directly rather than through the global one, so
//! this works whether or not [`Telemetry::init`](super::Telemetry::init)
//! ran (the global defaults to a no-op) and costs no lock per request. The
//! Rust SDK does not read `OTEL_PROPAGATORS`; W3C is what we speak.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The caller's trace context, or an empty context when it sent none (or a
/// malformed one): the server span then starts a new trace.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderReader(headers))
}

/// Writes `traceparent` (and `tracestate` when there is one) for `cx`'s
/// span; nothing when it has no valid span.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderWriter(headers));
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extract_reads_the_callers_trace() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
        headers.insert("tracestate", HeaderValue::from_static("vendor=x"));
        let cx = extract(&headers);
        let span = cx.span();
        let span_context = span.span_context();
        assert!(span_context.is_valid());
        assert!(span_context.is_remote());
        assert!(span_context.is_sampled());
        assert_eq!(
            span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            span_context.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(span_context.trace_state().get("vendor"), Some("x"));
    }

    #[test]
    fn grpc_metadata_reads_the_same() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("traceparent", TRACEPARENT.parse().unwrap());
        let cx = extract(metadata.as_ref());
        assert_eq!(
            cx.span().span_context().trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
    }

    #[test]
    fn missing_or_malformed_traceparent_gives_an_empty_context() {
        assert!(!extract(&HeaderMap::new()).has_active_span());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-zz-01"));
        assert!(!extract(&headers).span().span_context().is_valid());
    }

    #[test]
    fn inject_writes_a_valid_traceparent() {
        let span_context = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(span_context);
        let mut headers = HeaderMap::new();
        inject(&cx, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(headers.get("tracestate").is_none_or(|v| v.is_empty()));
    }

    #[test]
    fn inject_without_a_span_writes_nothing() {
        let mut headers = HeaderMap::new();
        inject(&Context::new(), &mut headers);
        assert!(headers.get("traceparent").is_none());
    }

    #[test]
    fn extract_then_inject_round_trips() {
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
        let mut outgoing = HeaderMap::new();
        inject(&extract(&incoming), &mut outgoing);
        assert_eq!(outgoing["traceparent"], TRACEPARENT);
    }
}
