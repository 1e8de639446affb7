//! The W3C `traceparent` / `tracestate` an upstream request carries, so a
//! provider that traces (vLLM, a gateway in front of it) joins the caller's
//! trace. Written directly from the span context: one small string per
//! request, no propagator round trip through a header map.

use opentelemetry::trace::TraceContextExt;
use reqwest::header::HeaderValue;

/// `(traceparent, tracestate)` for the context's span; none when the
/// context has no valid span (telemetry off and no caller trace).
pub fn trace_headers(
    context: &opentelemetry::Context,
) -> Option<(HeaderValue, Option<HeaderValue>)> {
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    let state = span_context.trace_state().header();
    Some((
        HeaderValue::from_str(&traceparent).ok()?,
        (!state.is_empty())
            .then(|| HeaderValue::from_str(&state).ok())
            .flatten(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn a_sampled_span_becomes_a_version_00_traceparent() {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "x")]).unwrap(),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(span_context);
        let (parent, state) = trace_headers(&context).unwrap();
        assert_eq!(
            parent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(state.unwrap(), "vendor=x");
    }

    #[test]
    fn no_span_no_header() {
        assert!(trace_headers(&opentelemetry::Context::new()).is_none());
    }
}
