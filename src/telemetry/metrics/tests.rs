use super::*;
use crate::call_record::{Caller, Edge};
use crate::model::Usage;
use crate::telemetry::Telemetry;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use std::collections::BTreeMap;
use std::time::SystemTime;

fn record(outcome: Outcome) -> CallRecord {
    CallRecord {
        request_id: "r".into(),
        started_at: SystemTime::UNIX_EPOCH,
        edge: Edge::Grpc,
        stream: true,
        caller: Caller::default(),
        tags: BTreeMap::new(),
        requested_model: "gpt-4o-mini".into(),
        route: Some("gpt-*".into()),
        served_model: Some("gpt-4o-mini-2024".into()),
        provider: Some("openai".into()),
        outcome,
        attempts: 1,
        queue_wait: Duration::ZERO,
        latency: Duration::from_millis(1100),
        time_to_first_chunk: Some(Duration::from_millis(100)),
        usage: Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 30,
            total_tokens: 42,
            ..Usage::default()
        }),
        usage_estimated: false,
        cost_usd: None,
        resumed: false,
    }
}

fn telemetry() -> Telemetry {
    Telemetry::for_tests(InMemorySpanExporter::default())
}

/// The sample lines of a family: `name{labels} value`.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[test]
fn families_render_with_prometheus_names() {
    let telemetry = telemetry();
    let metrics = telemetry.metrics();
    metrics.record_call_with_chunks(&record(Outcome::Ok), 11);
    metrics.in_flight_add(1);
    metrics.retry("openai", "rate_limited");
    metrics.upstream_response("openai", 429);
    metrics.queue_wait("openai", Duration::from_millis(30));
    metrics.observe_ledger_dropped(telemetry.meter(), || 2);
    metrics.observe_providers(telemetry.meter(), || {
        vec![ProviderState {
            provider: "openai".into(),
            queued: 3,
            circuit: 2,
        }]
    });

    let text = telemetry.prometheus_text();
    for (family, kind) in [
        ("gen_ai_client_operation_duration_seconds", "histogram"),
        ("gen_ai_client_token_usage", "histogram"),
        (
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "histogram",
        ),
        (
            "gen_ai_client_operation_time_per_output_chunk_seconds",
            "histogram",
        ),
        ("llm_sidecar_requests_in_flight", "gauge"),
        ("llm_sidecar_queue_wait_seconds", "histogram"),
        ("llm_sidecar_queue_depth", "gauge"),
        ("llm_sidecar_circuit_state", "gauge"),
        ("llm_sidecar_retries_total", "counter"),
        ("llm_sidecar_upstream_responses_total", "counter"),
        ("llm_sidecar_ledger_dropped_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "no {kind} {family} in\n{text}"
        );
    }
    // Every sample line is `name{labels} number`.
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "unparsable sample: {line}");
    }

    let duration = samples(&text, "gen_ai_client_operation_duration_seconds_bucket");
    assert_eq!(
        duration.len(),
        DURATION_BUCKETS.len() + 1,
        "the spec's buckets and +Inf"
    );
    assert!(duration.iter().any(|line| line.contains("le=\"81.92\"")));
    assert!(duration[0].contains("gen_ai_operation_name=\"chat\""));
    assert!(duration[0].contains("gen_ai_provider_name=\"openai\""));
    assert!(duration[0].contains("llm_sidecar_route=\"gpt-*\""));
    // The models are the caller's and the upstream's words: spans only.
    assert!(!text.contains("gpt-4o-mini"));
    assert!(!duration[0].contains("error_type"));

    let tokens = samples(&text, "gen_ai_client_token_usage_sum");
    assert!(
        tokens
            .iter()
            .any(|l| l.contains("gen_ai_token_type=\"input\"") && l.ends_with(" 12"))
    );
    assert!(
        tokens
            .iter()
            .any(|l| l.contains("gen_ai_token_type=\"output\"") && l.ends_with(" 30"))
    );
    assert_eq!(
        samples(&text, "gen_ai_client_token_usage_bucket").len(),
        2 * (TOKEN_BUCKETS.len() + 1)
    );

    // (1.1 s - 0.1 s) / 10 gaps = 0.1 s.
    let per_chunk = samples(
        &text,
        "gen_ai_client_operation_time_per_output_chunk_seconds_sum",
    );
    assert!(per_chunk[0].ends_with(" 0.1"), "{per_chunk:?}");
    assert_eq!(
        samples(
            &text,
            "gen_ai_client_operation_time_per_output_chunk_seconds_bucket"
        )
        .len(),
        CHUNK_INTERVAL_BUCKETS.len() + 1
    );

    assert!(samples(&text, "llm_sidecar_queue_depth")[0].ends_with(" 3"));
    assert!(samples(&text, "llm_sidecar_circuit_state")[0].ends_with(" 2"));
    let retries = samples(&text, "llm_sidecar_retries_total");
    assert!(retries[0].contains("error_type=\"rate_limited\""));
    let responses = samples(&text, "llm_sidecar_upstream_responses_total");
    assert!(responses[0].contains("http_response_status_code=\"429\""));
    assert!(samples(&text, "llm_sidecar_ledger_dropped_total")[0].ends_with(" 2"));
    assert!(samples(&text, "llm_sidecar_requests_in_flight")[0].ends_with(" 1"));
}

#[test]
fn failures_carry_error_type() {
    let telemetry = telemetry();
    telemetry.metrics().record_call(&record(Outcome::Error {
        code: "timeout_first_chunk".into(),
    }));
    telemetry
        .metrics()
        .record_call(&record(Outcome::Cancelled { partial: true }));
    let text = telemetry.prometheus_text();
    let counts = samples(&text, "gen_ai_client_operation_duration_seconds_count");
    assert!(
        counts
            .iter()
            .any(|l| l.contains("error_type=\"timeout_first_chunk\""))
    );
    assert!(
        counts
            .iter()
            .any(|l| l.contains("error_type=\"cancelled\""))
    );
}

#[test]
fn unary_calls_have_no_chunk_timings() {
    let telemetry = telemetry();
    let mut unary = record(Outcome::Ok);
    unary.stream = false;
    telemetry.metrics().record_call_with_chunks(&unary, 5);
    let text = telemetry.prometheus_text();
    assert!(
        samples(
            &text,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count"
        )
        .is_empty()
    );
    assert!(samples(&text, "gen_ai_client_operation_duration_seconds_count")[0].ends_with(" 1"));
}

#[test]
fn time_per_chunk_needs_two_chunks() {
    let latency = Duration::from_secs(2);
    let first = Duration::from_secs(1);
    assert_eq!(time_per_chunk(latency, first, None), None);
    assert_eq!(time_per_chunk(latency, first, Some(0)), None);
    assert_eq!(time_per_chunk(latency, first, Some(1)), None);
    assert_eq!(
        time_per_chunk(latency, first, Some(3)),
        Some(Duration::from_millis(500))
    );
}

#[test]
fn error_type_follows_the_outcome() {
    assert_eq!(error_type(&Outcome::Ok), None);
    assert_eq!(
        error_type(&Outcome::Partial {
            code: "idle_timeout".into()
        }),
        Some("idle_timeout")
    );
}
