//! The W3C `traceparent` / `tracestate` an upstream request carries, so a
//! provider that traces (vLLM, a gateway in front of it) joins the caller's
//! trace. Written directly from the span context: one small string per
//! request, no propagator round trip through a header map.

use opentelemetry::trace::TraceContextExt;
use reqwest::header::HeaderValue;

/// `version-trace_id-parent_id-flags`: 2 + 1 + 32 + 1 + 16 + 1 + 2 bytes
/// (W3C Trace Context, section 3.2).
const TRACEPARENT_LEN: usize = 55;

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
    // Hex written straight into the header's bytes: `format!` through the
    // ids' `Display` cost some 2,500 instructions a call.
    let mut traceparent = [b'-'; TRACEPARENT_LEN];
    traceparent[..2].copy_from_slice(b"00");
    lower_hex(&span_context.trace_id().to_bytes(), &mut traceparent[3..35]);
    lower_hex(&span_context.span_id().to_bytes(), &mut traceparent[36..52]);
    lower_hex(
        &[span_context.trace_flags().to_u8()],
        &mut traceparent[53..],
    );
    let state = span_context.trace_state().header();
    let mut traceparent = HeaderValue::from_bytes(&traceparent).ok()?;
    // New on every request: over an HTTP/2 upstream, a never-indexed
    // literal (RFC 7541, 6.2.3) rather than an entry in the connection's
    // HPACK table that would push out the headers that do repeat.
    traceparent.set_sensitive(true);
    Some((
        traceparent,
        (!state.is_empty())
            .then(|| HeaderValue::from_str(&state).ok())
            .flatten(),
    ))
}

/// `bytes` as lower-case hex into `out`, which holds exactly twice as many.
fn lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
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
        assert!(parent.is_sensitive(), "kept out of the HPACK table");
    }

    #[test]
    fn any_ids_and_flags_are_written_as_their_display_writes_them() {
        for _ in 0..200 {
            let trace_id = TraceId::from(fastrand::u128(1..));
            let span_id = SpanId::from(fastrand::u64(1..));
            let flags = TraceFlags::new(fastrand::u8(..));
            let span_context =
                SpanContext::new(trace_id, span_id, flags, false, TraceState::default());
            let context = opentelemetry::Context::new().with_remote_span_context(span_context);
            let (parent, state) = trace_headers(&context).unwrap();
            let expected = format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8());
            assert_eq!(parent, expected.as_str());
            assert!(state.is_none(), "an empty tracestate is not sent");
        }
    }

    #[test]
    fn no_span_no_header() {
        assert!(trace_headers(&opentelemetry::Context::new()).is_none());
    }
}
