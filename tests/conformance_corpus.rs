//! Checks the conformance corpus itself (`tests/conformance/corpus`): every
//! case loads and is consistent with its own expectations, the fake upstream
//! replays it byte for byte, and the documented stream edits do what the
//! rule in `tests/conformance/README.md` says. Nothing here goes through the
//! sidecar; the pass-through tests that do live with the facade's tests.

mod common;

use common::corpus::{
    self, Case, expected_stream_events, finish_reasons, load_all, stream_completed,
};
use fake_upstream::FakeUpstream;
use serde_json::{Value, json};

const USAGE_KEYS: [&str; 5] = [
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
];

fn stream_cases() -> Vec<Case> {
    load_all()
        .into_iter()
        .filter(|case| case.events.is_some())
        .collect()
}

/// A hand-written stream case around `events`.
fn stream_case(events: Value) -> Case {
    Case {
        name: "hand_written".to_owned(),
        source: "written for this test".to_owned(),
        request: json!({"model": "fake-model", "stream": true}),
        response: None,
        events: Some(serde_json::from_value(events).expect("an events array")),
        expect: json!({}),
    }
}

#[test]
fn every_case_loads_with_a_source_and_the_fake_model() {
    let cases = load_all();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    for case in &cases {
        assert!(!case.source.trim().is_empty(), "{}: no source", case.name);
        assert_eq!(case.request["model"], "fake-model", "{}", case.name);
        assert!(
            case.request.get("metadata").is_none(),
            "{}: the sidecar keeps `metadata`; a corpus request must not use it",
            case.name
        );
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    let sorted = names.clone();
    names.sort_unstable();
    assert_eq!(names, sorted, "load_all sorts by name");
}

#[test]
fn expectations_match_each_answer() {
    for case in load_all() {
        let name = &case.name;
        let expect = &case.expect;
        let usage = expect["usage"].as_object().expect("expect.usage object");
        for (key, count) in usage {
            assert!(
                USAGE_KEYS.contains(&key.as_str()),
                "{name}: usage key {key}"
            );
            assert!(count.is_u64(), "{name}: usage.{key} is a count");
        }
        let expected: Vec<&str> = expect["finish_reasons"]
            .as_array()
            .expect("expect.finish_reasons array")
            .iter()
            .map(|r| r.as_str().expect("a finish reason string"))
            .collect();
        let (seen, complete) = match (&case.response, &case.events) {
            (Some(body), _) => {
                let choices = body["choices"].as_array().expect("answer choices");
                let reasons: Vec<String> = choices
                    .iter()
                    .filter_map(|c| c["finish_reason"].as_str().map(str::to_owned))
                    .collect();
                let complete = reasons.len() == choices.len();
                (reasons, complete)
            }
            (None, Some(events)) => (finish_reasons(events), stream_completed(events)),
            (None, None) => unreachable!("load_all checks this"),
        };
        assert_eq!(seen, expected, "{name}: finish reasons");
        assert_eq!(expect["complete"], json!(complete), "{name}: complete");
    }
}

#[test]
fn stream_cases_end_with_done_or_finish_every_choice() {
    let cases = stream_cases();
    assert!(cases.len() >= 10, "only {} stream cases", cases.len());
    for case in cases {
        let events = case.events.as_deref().unwrap_or_default();
        let ends_done = events.last() == Some(&json!("[DONE]"));
        assert!(
            ends_done || stream_completed(events),
            "{}: neither [DONE] nor a finish reason on every choice",
            case.name
        );
    }
}

/// What the fake upstream answers for `case` replayed with its scenario.
async fn replay(client: &reqwest::Client, fake: &FakeUpstream, case: &Case) -> Vec<Value> {
    let mut body = case.request.clone();
    body["fake"] = corpus::scenario(case);
    let res = client
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&body)
        .send()
        .await
        .expect("fake upstream answers");
    assert_eq!(res.status(), 200, "{}", case.name);
    let text = res.text().await.expect("answer body");
    if case.response.is_some() {
        return vec![serde_json::from_str(&text).expect("a JSON answer")];
    }
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
        .collect()
}

#[tokio::test]
async fn the_fake_upstream_replays_every_case_verbatim() {
    let fake = FakeUpstream::start().await.expect("fake upstream");
    let client = common::http_client();
    for case in load_all() {
        let recorded = match (&case.response, &case.events) {
            (Some(body), _) => vec![body.clone()],
            (None, events) => events.clone().unwrap_or_default(),
        };
        assert_eq!(
            replay(&client, &fake, &case).await,
            recorded,
            "{}",
            case.name
        );
    }
}

#[test]
fn without_usage_asked_every_edit_applies() {
    let chunk =
        |choices: Value, usage: Value| json!({"id": "c", "choices": choices, "usage": usage});
    let piece = |delta: Value| json!([{"index": 0, "delta": delta, "finish_reason": null}]);
    let case = stream_case(json!([
        chunk(
            piece(json!({"role": "assistant", "content": ""})),
            Value::Null
        ),
        chunk(
            piece(json!({"tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "{\"x\":"}},
                {"function": {"arguments": "1}"}},
            ]})),
            Value::Null
        ),
        chunk(
            piece(json!({"tool_calls": [
                {"function": {"name": "g", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "h", "arguments": ""}},
            ]})),
            Value::Null
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
            Value::Null
        ),
        chunk(
            json!([]),
            json!({"prompt_tokens": 3, "completion_tokens": 4})
        ),
    ]));
    let done = |choices: Value| json!({"id": "c", "choices": choices});
    assert_eq!(
        expected_stream_events(&case, false),
        vec![
            done(piece(json!({"role": "assistant", "content": ""}))),
            done(piece(json!({"tool_calls": [
                {"id": "a", "type": "function", "index": 0,
                 "function": {"name": "f", "arguments": "{\"x\":"}},
                {"index": 0, "function": {"arguments": "1}"}},
            ]}))),
            // A name while the current call is named opens the next call; a
            // new id opens the one after.
            done(piece(json!({"tool_calls": [
                {"index": 1, "function": {"name": "g", "arguments": "{}"}},
                {"id": "b", "type": "function", "index": 2,
                 "function": {"name": "h", "arguments": ""}},
            ]}))),
            done(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn with_usage_asked_usage_stays_and_only_a_finished_stream_gets_done() {
    let case = stream_case(json!([
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 3, "id": "x", "function": {"name": "f", "arguments": ""}},
            {"index": 3, "id": null, "function": {"name": null, "arguments": "{}"}},
        ]}, "finish_reason": null}], "usage": null},
        {"choices": [{"index": 1, "delta": {"content": "hi"}, "finish_reason": null}], "usage": null},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": null},
        {"choices": [], "usage": {"prompt_tokens": 1}},
    ]));
    let mut expected = case.events.clone().expect("events");
    // Only the opening piece changes: it has an id but no type.
    expected[0]["choices"][0]["delta"]["tool_calls"][0]["type"] = json!("function");
    // Choice 1 never finished, so no [DONE] is written.
    assert_eq!(expected_stream_events(&case, true), expected);

    let mut without_usage = expected_stream_events(&case, false);
    assert_eq!(without_usage.len(), 3, "the usage-only chunk is dropped");
    assert!(without_usage.iter().all(|e| e.get("usage").is_none()));
    without_usage
        .iter_mut()
        .for_each(|e| e["usage"] = Value::Null);
    assert_eq!(without_usage, &expected[..3]);
}

#[test]
fn corpus_streams_only_change_where_the_rule_says() {
    for case in stream_cases() {
        let events = case.events.clone().unwrap_or_default();
        let expected = expected_stream_events(&case, true);
        assert_eq!(
            expected.len(),
            events.len(),
            "{}: nothing dropped",
            case.name
        );
        assert_eq!(expected.last(), Some(&json!("[DONE]")), "{}", case.name);
    }
    let gemini = load_all()
        .into_iter()
        .find(|c| c.name == "gemini_parallel_tools_stream_separate_chunks")
        .expect("the Gemini index-less case");
    let indexes: Vec<Value> = expected_stream_events(&gemini, true)
        .iter()
        .filter_map(|e| e.pointer("/choices/0/delta/tool_calls/0/index").cloned())
        .collect();
    assert_eq!(indexes, [json!(0), json!(1), json!(1)]);
}
