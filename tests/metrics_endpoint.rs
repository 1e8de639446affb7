//! `/metrics` on the admin port, scraped over HTTP after real calls and
//! parsed sample by sample: every call counted once, failed and cancelled
//! ones included, retries and upstream statuses by label, gauges back to
//! rest when the calls are over.

mod common;

use common::{Harness, collect, request};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// One sample: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The text exposition format, parsed: metric name → samples. Panics on a
/// line that is not `name{labels} value` (or a comment), so a malformed
/// exposition fails the test.
fn parse(text: &str) -> BTreeMap<String, Vec<Sample>> {
    let mut metrics: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label {pair}"));
                (key.to_owned(), value.trim_end_matches('"').to_owned())
            })
            .collect();
        metrics
            .entry(name.to_owned())
            .or_default()
            .push(Sample { labels, value });
    }
    metrics
}

/// The sum of `name`'s samples whose labels include every pair in `with`.
fn total(metrics: &BTreeMap<String, Vec<Sample>>, name: &str, with: &[(&str, &str)]) -> f64 {
    metrics
        .get(name)
        .unwrap_or_else(|| panic!("no metric {name} among {:?}", metrics.keys()))
        .iter()
        .filter(|sample| {
            with.iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum()
}

async fn scrape(harness: &Harness) -> BTreeMap<String, Vec<Sample>> {
    let response = reqwest::get(format!("{}/metrics", harness.admin_base()))
        .await
        .expect("the admin port answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_every_call_whatever_became_of_it() {
    let mut harness = Harness::start().await;
    for _ in 0..2 {
        harness
            .client
            .complete(request("a b c", json!({"prompt_tokens": 10})))
            .await
            .unwrap();
    }
    harness
        .client
        .complete(request(
            "x",
            json!({"status": 503, "fail_times": 1, "key": "m"}),
        ))
        .await
        .expect("the retry succeeds");
    harness
        .client
        .complete(request("x", json!({"status": 400})))
        .await
        .expect_err("refused");
    let mut stream = harness
        .client
        .stream_complete(request("x", json!({"reply": "one two three"})))
        .await
        .unwrap()
        .into_inner();
    assert!(collect(&mut stream).await.1.is_none());
    // A stream the caller abandons still counts, as cancelled.
    let mut abandoned = harness
        .client
        .stream_complete(request(
            "x",
            json!({"reply": "a b c d e", "chunk_delay_ms": 300}),
        ))
        .await
        .unwrap()
        .into_inner();
    abandoned.message().await.unwrap();
    drop(abandoned);
    // The abandoned call is recorded when the sidecar sees the caller
    // gone: scrape until it is (bounded), then check everything.
    let began = std::time::Instant::now();
    let metrics = loop {
        let metrics = scrape(&harness).await;
        let recorded = metrics
            .get("gen_ai_client_operation_duration_seconds_count")
            .is_some_and(|_| {
                total(
                    &metrics,
                    "gen_ai_client_operation_duration_seconds_count",
                    &[("error_type", "cancelled")],
                ) > 0.0
            });
        if recorded || began.elapsed() > Duration::from_secs(5) {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let chat = [("gen_ai_operation_name", "chat")];
    assert_eq!(
        total(
            &metrics,
            "gen_ai_client_operation_duration_seconds_count",
            &chat
        ),
        6.0
    );
    assert_eq!(
        total(
            &metrics,
            "gen_ai_client_operation_duration_seconds_count",
            &[("error_type", "cancelled")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &metrics,
            "gen_ai_client_operation_duration_seconds_count",
            &[
                ("gen_ai_provider_name", "fake"),
                // The harness routes by its default provider.
                ("llm_sidecar_route", "*")
            ]
        ),
        6.0
    );
    // The spec's bucket boundaries, starting at 10 ms.
    assert!(
        metrics["gen_ai_client_operation_duration_seconds_bucket"]
            .iter()
            .any(|sample| sample.labels.get("le").map(String::as_str) == Some("0.01"))
    );
    // Two calls of 10 prompt tokens each, and the others' own.
    assert!(
        total(
            &metrics,
            "gen_ai_client_token_usage_sum",
            &[("gen_ai_token_type", "input")]
        ) >= 20.0
    );
    assert_eq!(
        total(
            &metrics,
            "gen_ai_client_token_usage_count",
            &[("gen_ai_token_type", "output")]
        ),
        total(
            &metrics,
            "gen_ai_client_token_usage_count",
            &[("gen_ai_token_type", "input")]
        )
    );
    assert_eq!(
        total(
            &metrics,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count",
            &[]
        ),
        2.0
    );
    assert_eq!(
        total(
            &metrics,
            "llm_sidecar_retries_total",
            &[("gen_ai_provider_name", "fake")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &metrics,
            "llm_sidecar_upstream_responses_total",
            &[("http_response_status_code", "503")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &metrics,
            "llm_sidecar_upstream_responses_total",
            &[("http_response_status_code", "400")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &metrics,
            "llm_sidecar_upstream_responses_total",
            &[("http_response_status_code", "200")]
        ),
        5.0
    );
    assert_eq!(total(&metrics, "llm_sidecar_requests_in_flight", &[]), 0.0);
    assert_eq!(
        total(
            &metrics,
            "llm_sidecar_circuit_state",
            &[("gen_ai_provider_name", "fake")]
        ),
        0.0
    );
    assert_eq!(
        total(&metrics, "llm_sidecar_ledger_dropped_total", &[]),
        0.0
    );
    harness.stop().await;
}
