//! The pipeline core in memory, on tokio's paused clock: a scripted
//! provider replaces only the HTTP exchange; the slot's retry policy,
//! budget, circuit, fallbacks and shutdown run as they do in production.

use super::*;
use crate::upstream::scripted::{Outcome, ScriptedUpstream, Step};
use std::time::Duration;

fn config(tables: &str) -> Config {
    crate::config::from_toml_in(
        &format!(
            "[server]\nuds = \"/nonexistent/unused.sock\"\n\
             [providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\ncircuit_failures = 0\n\
             [providers.b]\nbase_url = \"http://127.0.0.1:9/v1\"\ncircuit_failures = 0\n\
             [providers.c]\nbase_url = \"http://127.0.0.1:9/v1\"\ncircuit_failures = 0\n\
             {tables}"
        ),
        "test.toml",
        std::path::Path::new("/nonexistent"),
    )
    .expect("the test config is valid")
}

/// `config(tables)` with provider `a`'s circuit opening after `failures`
/// for `cooldown` (set on the typed config: the TOML's table for `a` is
/// written once, by `config`).
fn with_circuit_on_a(tables: &str, failures: u32, cooldown: Duration) -> Config {
    let mut config = config(tables);
    let slot_a = config
        .providers
        .iter_mut()
        .find(|provider| provider.name == "a")
        .unwrap();
    slot_a.circuit_failures = failures;
    slot_a.circuit_cooldown = cooldown;
    config
}

fn pipeline(tables: &str, scripts: &[(&str, &Arc<ScriptedUpstream>)]) -> Pipeline {
    pipeline_of(&config(tables), scripts)
}

/// The pipeline of `config`, its named providers replaced by scripts.
fn pipeline_of(config: &Config, scripts: &[(&str, &Arc<ScriptedUpstream>)]) -> Pipeline {
    let mut pipeline = Pipeline::new(config, &|_| None).unwrap();
    for (name, script) in scripts {
        pipeline = pipeline.with_scripted(name, Arc::clone(script));
    }
    pipeline
}

fn script(name: &str, steps: impl IntoIterator<Item = Step>) -> Arc<ScriptedUpstream> {
    Arc::new(ScriptedUpstream::new(name, steps))
}

fn at_once(outcome: Outcome) -> Step {
    Step {
        delay: Duration::ZERO,
        outcome,
    }
}

fn ask(model: &str) -> ChatRequest {
    ChatRequest::new(
        model,
        vec![serde_json::json!({"role": "user", "content": "hi"})],
    )
}

const ROUTE_TO_A: &str = "[[routes]]\nmodel = \"m\"\nprovider = \"a\"\n";

#[tokio::test(start_paused = true)]
async fn retries_back_off_with_jitter_and_wait_as_long_as_retry_after_says() {
    let a = script(
        "a",
        [
            at_once(Outcome::Status(503, None)),
            at_once(Outcome::Status(429, Some(Duration::from_secs(2)))),
            at_once(Outcome::Answer("third time")),
        ],
    );
    let tables = format!("[retry]\nbase_delay_ms = 100\nmax_delay_ms = 1000\n{ROUTE_TO_A}");
    let pipeline = pipeline(&tables, &[("a", &a)]);
    let served = pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .expect("the third attempt answers");
    assert_eq!((&*served.provider, served.attempts), ("a", 3));
    let calls = a.calls();
    // Full jitter: the first wait is anywhere up to the base delay.
    assert!(calls[1] - calls[0] <= Duration::from_millis(100));
    // The upstream's Retry-After, not the backoff.
    let waited = calls[2] - calls[1];
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_callers_deadline_is_not_waited_for() {
    let a = script(
        "a",
        [at_once(Outcome::Status(429, Some(Duration::from_secs(20))))],
    );
    let pipeline = pipeline(ROUTE_TO_A, &[("a", &a)]);
    let began = Instant::now();
    let call = CallContext {
        deadline: Some(began + Duration::from_secs(3)),
        ..CallContext::default()
    };
    let error = pipeline.complete(ask("m"), &call).await.unwrap_err();
    assert!(
        matches!(error, Error::Upstream(ref upstream) if upstream.status == 429),
        "{error:?}"
    );
    assert_eq!(a.calls().len(), 1, "no second attempt");
    assert!(
        began.elapsed() < Duration::from_millis(10),
        "answered at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_provider_falls_back_then_opens_its_circuit_then_is_probed() {
    let a = script("a", (0..2).map(|_| at_once(Outcome::Connect)));
    let b = script("b", []);
    let tables = "[[routes]]\nmodel = \"m\"\nprovider = \"a\"\n\
                  max_attempts = 1\nfallbacks = [{ provider = \"b\" }]\n";
    let config = with_circuit_on_a(tables, 2, Duration::from_secs(30));
    let pipeline = pipeline_of(&config, &[("a", &a), ("b", &b)]);
    let served_by = async || {
        let served = pipeline
            .complete(ask("m"), &CallContext::default())
            .await
            .expect("the fallback answers");
        served.provider.to_string()
    };
    // Two failures: each call falls back to b; the second opens a's circuit.
    assert_eq!(served_by().await, "b");
    assert_eq!(served_by().await, "b");
    let state = |name: &str| {
        pipeline
            .provider_states()
            .find(|state| state.name == name)
            .unwrap()
            .circuit
    };
    assert_eq!(state("a"), CircuitState::Open);
    // While open, a is skipped without an attempt.
    assert_eq!(served_by().await, "b");
    assert_eq!(a.calls().len(), 2);
    // After the cooldown one probe goes to a; its answer closes the circuit.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(served_by().await, "a");
    assert_eq!(state("a"), CircuitState::Closed);
    assert_eq!(b.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_a_call_in_flight_with_shutting_down() {
    let a = script(
        "a",
        [Step {
            delay: Duration::from_secs(60),
            outcome: Outcome::Answer("too late"),
        }],
    );
    let stop = CancellationToken::new();
    let pipeline = Arc::new(pipeline(ROUTE_TO_A, &[("a", &a)]).with_stop(stop.clone()));
    let began = Instant::now();
    let call = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { pipeline.complete(ask("m"), &CallContext::default()).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::ShuttingDown), "{error:?}");
    assert!(began.elapsed() < Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_spent_retry_budget_refuses_the_retry_and_returns_the_upstreams_error() {
    let a = script(
        "a",
        [at_once(Outcome::Status(429, Some(Duration::from_secs(1))))],
    );
    let tables = format!("[retry]\nbudget_ratio = 0.0\nbudget_floor = 0\n{ROUTE_TO_A}");
    let pipeline = pipeline(&tables, &[("a", &a)]);
    let call = CallContext::default();
    let error = pipeline.complete(ask("m"), &call).await.unwrap_err();
    // The 429 as the upstream sent it (not a 503 of our own making) ...
    assert!(
        matches!(&error, Error::Upstream(upstream)
            if upstream.status == 429 && upstream.retry_after == Some(Duration::from_secs(1))),
        "{error:?}"
    );
    // ... and why it was not retried, beside it.
    assert_eq!(
        call.progress.snapshot().retry_stop,
        Some(RetryStop::BudgetExhausted)
    );
    assert_eq!(a.calls().len(), 1, "the retry was not sent");
}

/// A step that never answers within any test's timeouts.
fn silent() -> Step {
    Step {
        delay: Duration::from_secs(3600),
        outcome: Outcome::Answer("far too late"),
    }
}

const A_THEN_B: &str =
    "[[routes]]\nmodel = \"m\"\nprovider = \"a\"\nfallbacks = [{ provider = \"b\" }]\n";

#[tokio::test(start_paused = true)]
async fn a_silent_primary_is_left_for_the_fallback_after_one_unary_attempt() {
    let a = script("a", [silent()]);
    let b = script("b", []);
    let tables = format!("[timeouts]\nunary_attempt_ms = 1000\n{A_THEN_B}");
    let pipeline = pipeline(&tables, &[("a", &a), ("b", &b)]);
    let served = pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .expect("the fallback answers");
    assert_eq!((&*served.provider, served.attempts), ("b", 2));
    assert_eq!(a.calls().len(), 1, "the silent one is not tried again");
    let (a, b) = (a.calls(), b.calls());
    let handed_over = b[0] - a[0];
    assert!(
        handed_over >= Duration::from_secs(1) && handed_over < Duration::from_millis(1010),
        "{handed_over:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_whose_first_chunk_does_not_come_fails_over_at_the_first_chunk_limit() {
    let a = script("a", [silent()]);
    let b = script("b", []);
    let tables = format!("[timeouts]\nheaders_ms = 1000\nfirst_chunk_ms = 2000\n{A_THEN_B}");
    let pipeline = Arc::new(pipeline(&tables, &[("a", &a), ("b", &b)]));
    let began = Instant::now();
    let served = pipeline
        .stream(ask("m"), &CallContext::default())
        .await
        .expect("the fallback streams");
    assert_eq!(&*served.provider, "b");
    assert_eq!(a.calls().len(), 1);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2010),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_last_target_is_still_retried() {
    let a = script("a", [silent(), silent()]);
    let tables = format!(
        "[retry]\nbase_delay_ms = 10\n[timeouts]\nheaders_ms = 1000\nfirst_chunk_ms = 1000\n{ROUTE_TO_A}"
    );
    let pipeline = Arc::new(pipeline(&tables, &[("a", &a)]));
    let served = pipeline
        .stream(ask("m"), &CallContext::default())
        .await
        .expect("the third attempt answers");
    assert_eq!(served.attempts, 3, "nothing else could answer");
}

#[tokio::test(start_paused = true)]
async fn rate_limits_never_open_the_circuit() {
    let a = script("a", (0..4).map(|_| at_once(Outcome::Status(429, None))));
    let b = script("b", []);
    let tables = "[[routes]]\nmodel = \"m\"\nprovider = \"a\"\n\
                  max_attempts = 1\nfallbacks = [{ provider = \"b\" }]\n";
    let config = with_circuit_on_a(tables, 2, Duration::from_secs(30));
    let pipeline = pipeline_of(&config, &[("a", &a), ("b", &b)]);
    for _ in 0..4 {
        let served = pipeline
            .complete(ask("m"), &CallContext::default())
            .await
            .expect("the fallback answers a rate-limited call");
        assert_eq!(&*served.provider, "b");
    }
    let circuit = pipeline
        .provider_states()
        .find(|state| state.name == "a")
        .unwrap()
        .circuit;
    assert_eq!(circuit, CircuitState::Closed);
    assert_eq!(a.calls().len(), 4, "every call still tried a first");
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_with_no_caller_deadline_returns_at_once() {
    let a = script(
        "a",
        [at_once(Outcome::Status(429, Some(Duration::from_secs(20))))],
    );
    let impatient = pipeline(ROUTE_TO_A, &[("a", &a)]);
    let began = Instant::now();
    let call = CallContext::default();
    let error = impatient.complete(ask("m"), &call).await.unwrap_err();
    assert!(
        matches!(&error, Error::Upstream(upstream) if upstream.status == 429),
        "{error:?}"
    );
    assert_eq!(began.elapsed(), Duration::ZERO, "no wait at all");
    assert_eq!(
        call.progress.snapshot().retry_stop,
        Some(RetryStop::LeftToCaller)
    );
    // With a deadline that allows it, the same wait is taken.
    let a = script(
        "a",
        [at_once(Outcome::Status(429, Some(Duration::from_secs(20))))],
    );
    let patient = pipeline(ROUTE_TO_A, &[("a", &a)]);
    let call = CallContext {
        deadline: Some(Instant::now() + Duration::from_secs(60)),
        ..CallContext::default()
    };
    patient
        .complete(ask("m"), &call)
        .await
        .expect("answered after the wait");
    assert_eq!(a.calls()[1] - a.calls()[0], Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn a_callers_max_attempts_cannot_exceed_the_routes() {
    let a = script("a", (0..5).map(|_| at_once(Outcome::Status(503, None))));
    let tables = "[retry]\nbase_delay_ms = 1\n[[routes]]\nmodel = \"m\"\nprovider = \"a\"\nmax_attempts = 2\n";
    let impatient = pipeline(tables, &[("a", &a)]);
    let call = CallContext {
        max_attempts: Some(5),
        ..CallContext::default()
    };
    impatient.complete(ask("m"), &call).await.unwrap_err();
    assert_eq!(a.calls().len(), 2);
    // Fewer is always allowed.
    let b = script("a", (0..5).map(|_| at_once(Outcome::Status(503, None))));
    let modest = pipeline(tables, &[("a", &b)]);
    let call = CallContext {
        max_attempts: Some(1),
        ..CallContext::default()
    };
    modest.complete(ask("m"), &call).await.unwrap_err();
    assert_eq!(b.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_first_byte_deadline_bounds_a_streams_start_only() {
    let a = script(
        "a",
        [Step {
            delay: Duration::from_secs(10),
            outcome: Outcome::Answer("slow to start"),
        }],
    );
    let pipeline = Arc::new(pipeline(ROUTE_TO_A, &[("a", &a)]));
    let began = Instant::now();
    let call = CallContext {
        first_byte_deadline: Some(began + Duration::from_secs(3)),
        ..CallContext::default()
    };
    let Err(error) = pipeline.stream(ask("m"), &call).await else {
        panic!("the stream started after its first-byte deadline");
    };
    assert!(matches!(error, Error::DeadlineExceeded { .. }), "{error:?}");
    assert_eq!(began.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gives_up_at_the_callers_deadline_not_the_queue_wait() {
    let a = script(
        "a",
        [Step {
            delay: Duration::from_secs(60),
            outcome: Outcome::Answer("slow"),
        }],
    );
    let mut config = config(ROUTE_TO_A);
    let slot_a = config
        .providers
        .iter_mut()
        .find(|provider| provider.name == "a")
        .unwrap();
    slot_a.limit = Some(crate::config::LimitConfig {
        max_in_flight: 1,
        max_queue: 4,
        max_queue_wait: Duration::from_secs(10),
    });
    let pipeline = Arc::new(pipeline_of(&config, &[("a", &a)]));
    let holder = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { pipeline.complete(ask("m"), &CallContext::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let began = Instant::now();
    let call = CallContext {
        deadline: Some(began + Duration::from_secs(2)),
        ..CallContext::default()
    };
    let error = pipeline.complete(ask("m"), &call).await.unwrap_err();
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}: {error:?}"
    );
    // The wait for a slot is cut to the caller's deadline, and says so.
    assert!(
        matches!(
            error,
            Error::Overloaded {
                kind: crate::error::OverloadKind::QueueWait,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        a.calls().len(),
        1,
        "the queued call never reached the upstream"
    );
    holder.abort();
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_retried_before_its_first_chunk_and_never_after() {
    use futures::StreamExt as _;
    let a = script(
        "a",
        [
            at_once(Outcome::Status(503, None)),
            at_once(Outcome::CutAfterFirstChunk("partial")),
        ],
    );
    let tables = format!("[retry]\nbase_delay_ms = 10\n{ROUTE_TO_A}");
    let pipeline = Arc::new(pipeline(&tables, &[("a", &a)]));
    let served = pipeline
        .stream(ask("m"), &CallContext::default())
        .await
        .expect("the second attempt starts");
    assert_eq!(served.attempts, 2, "a failure before any chunk is retried");
    let items: Vec<Result<crate::model::ChatChunk, Error>> = served.value.collect().await;
    assert!(items[0].is_ok(), "the first chunk reaches the caller");
    assert!(
        matches!(items.last(), Some(Err(Error::StreamIncomplete { .. }))),
        "{items:?}"
    );
    assert_eq!(a.calls().len(), 2, "a break after output is not retried");
}

#[tokio::test(start_paused = true)]
async fn fallbacks_are_tried_in_their_order() {
    // Each failure takes a second, so the order shows in the call times.
    let after_a_second = |outcome| Step {
        delay: Duration::from_secs(1),
        outcome,
    };
    let a = script("a", [after_a_second(Outcome::Connect)]);
    let b = script("b", [after_a_second(Outcome::Status(503, None))]);
    let c = script("c", []);
    let tables = "[[routes]]\nmodel = \"m\"\nprovider = \"a\"\nmax_attempts = 1\n\
                  fallbacks = [{ provider = \"b\" }, { provider = \"c\" }]\n";
    let pipeline = pipeline(tables, &[("a", &a), ("b", &b), ("c", &c)]);
    let served = pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .expect("the last fallback answers");
    assert_eq!(&*served.provider, "c");
    let (a, b, c) = (a.calls(), b.calls(), c.calls());
    assert_eq!((a.len(), b.len(), c.len()), (1, 1, 1));
    assert!(b[0] - a[0] >= Duration::from_secs(1), "b after a failed");
    assert!(c[0] - b[0] >= Duration::from_secs(1), "c after b failed");
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_own_failures_open_the_circuit_ends_with_the_upstreams_error() {
    let a = script("a", (0..3).map(|_| at_once(Outcome::Status(500, None))));
    let tables = format!("[retry]\nbase_delay_ms = 10\n{ROUTE_TO_A}");
    let config = with_circuit_on_a(&tables, 2, Duration::from_secs(30));
    let pipeline = pipeline_of(&config, &[("a", &a)]);
    let error = pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .unwrap_err();
    // The second failure opened the circuit before the third attempt: the
    // caller still gets what the provider said, not `circuit_open`.
    assert!(
        matches!(&error, Error::Upstream(upstream) if upstream.status == 500),
        "{error:?}"
    );
    assert_eq!(a.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_the_provider_answers_with_a_rate_limit_closes_the_circuit() {
    let a = script(
        "a",
        [
            at_once(Outcome::Status(500, None)),
            at_once(Outcome::Status(429, Some(Duration::from_secs(1)))),
            at_once(Outcome::Answer("back")),
        ],
    );
    let tables = format!("[retry]\nmax_attempts = 1\n{ROUTE_TO_A}");
    let config = with_circuit_on_a(&tables, 1, Duration::from_secs(3));
    let pipeline = pipeline_of(&config, &[("a", &a)]);
    let state = || {
        pipeline
            .provider_states()
            .find(|state| state.name == "a")
            .unwrap()
            .circuit
    };
    pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .unwrap_err();
    assert_eq!(state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(4)).await;
    // The probe: a 429 is an answer, so the provider is up.
    let error = pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Upstream(upstream) if upstream.status == 429),
        "{error:?}"
    );
    assert_eq!(state(), CircuitState::Closed);
    pipeline
        .complete(ask("m"), &CallContext::default())
        .await
        .expect("calls flow again at once");
}

#[tokio::test(start_paused = true)]
async fn a_callers_short_deadline_leaves_half_for_the_fallback() {
    // The limits are their defaults (a minute and more); the caller waits
    // 4 s: the silent primary gets 2 of them, the fallback the rest.
    let a = script("a", [silent(), silent()]);
    let b = script("b", []);
    let pipeline = Arc::new(pipeline(A_THEN_B, &[("a", &a), ("b", &b)]));
    let began = Instant::now();
    let call = CallContext {
        deadline: Some(began + Duration::from_secs(4)),
        ..CallContext::default()
    };
    let served = pipeline.complete(ask("m"), &call).await.expect("b answers");
    assert_eq!(&*served.provider, "b");
    assert_eq!(b.calls()[0] - began, Duration::from_secs(2));
    let began = Instant::now();
    let call = CallContext {
        deadline: Some(began + Duration::from_secs(4)),
        ..CallContext::default()
    };
    let served = pipeline.stream(ask("m"), &call).await.expect("b streams");
    assert_eq!(&*served.provider, "b");
    assert_eq!(b.calls()[1] - began, Duration::from_secs(2));
    assert_eq!(a.calls().len(), 2, "one attempt each call");
}

#[tokio::test(start_paused = true)]
async fn the_wait_on_an_upstream_cut_by_the_deadline_is_upstream_time_not_ours() {
    let a = script("a", [silent()]);
    let pipeline = pipeline(ROUTE_TO_A, &[("a", &a)]);
    let began = Instant::now();
    let call = CallContext {
        deadline: Some(began + Duration::from_secs(3)),
        ..CallContext::default()
    };
    let error = pipeline.complete(ask("m"), &call).await.unwrap_err();
    assert!(matches!(error, Error::DeadlineExceeded { .. }), "{error:?}");
    let progress = call.progress.snapshot();
    assert_eq!(progress.upstream, Duration::from_secs(3));
    assert_eq!(progress.overhead(began.elapsed()), Duration::ZERO);
}

/// Every layer between the edge and the upstream moves the future it
/// awaits: a call's future of 9 KiB (the attempt's work held inline) was
/// copied some 24 times a call, 10,000 instructions of `memcpy`. The
/// attempt's work is boxed (`Routed::attempt`), so these stay small.
#[test]
fn a_calls_future_stays_small_enough_to_move_cheaply() {
    let a = script("a", []);
    let pipeline = Arc::new(pipeline(ROUTE_TO_A, &[("a", &a)]));
    let call = CallContext::default();
    let unary = size_of_val(&pipeline.complete(ask("m"), &call));
    let stream = size_of_val(&pipeline.stream(ask("m"), &call));
    assert!(unary <= 4096, "the unary call's future is {unary} bytes");
    assert!(stream <= 5120, "the stream's future is {stream} bytes");
}
