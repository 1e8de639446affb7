//! The pure parts of resuming: which failures may be resumed, the prefill
//! in each provider's style, and the edits that splice a continuation into
//! the first answer.

use super::edit::{Seen, Splice, add_counts, with_prefill};
use super::*;
use crate::upstream::stream_reader::StreamReader;
use serde_json::{Value, json};

fn read(event: Value) -> ChatChunk {
    StreamReader::default().read(event.to_string()).unwrap()
}

fn text(content: &str) -> ChatChunk {
    read(json!({"id": "first", "created": 7, "model": "m",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]}))
}

fn in_band(code: &str, message: &str) -> Error {
    Error::Upstream(Box::new(UpstreamError {
        provider: "p".to_owned(),
        message: message.to_owned(),
        error_code: Some(code.to_owned()),
        in_band: true,
        ..UpstreamError::default()
    }))
}

#[test]
fn cuts_stalls_garbage_and_in_band_errors_are_resumable_moderation_and_our_own_ends_are_not() {
    let cut = Error::StreamIncomplete {
        provider: "p".into(),
        detail: "closed".into(),
    };
    let stall = Error::Timeout {
        provider: "p".into(),
        kind: TimeoutKind::Idle,
        after: Duration::from_secs(1),
    };
    let total = Error::Timeout {
        provider: "p".into(),
        kind: TimeoutKind::Total,
        after: Duration::from_secs(1),
    };
    assert!(resumable(&cut));
    assert!(resumable(&stall));
    assert!(resumable(&in_band("server_error", "overloaded")));
    assert!(!resumable(&in_band("content_filter", "flagged")));
    assert!(!resumable(&in_band(
        "400",
        "The response was filtered: ResponsibleAIPolicyViolation"
    )));
    assert!(!resumable(&total));
    assert!(!resumable(&Error::ShuttingDown));
}

#[test]
fn each_prefill_style_writes_its_own_body() {
    let request = ChatRequest::new("m", vec![json!({"role": "user", "content": "hi"})]);
    let trailing = with_prefill(&request, "Once upon", PrefillStyle::TrailingAssistant);
    assert_eq!(
        trailing.body["messages"][1],
        json!({"role": "assistant", "content": "Once upon"})
    );
    assert!(trailing.body.get("continue_final_message").is_none());

    let prefix = with_prefill(&request, "Once upon", PrefillStyle::PrefixFlag);
    assert_eq!(
        prefix.body["messages"][1],
        json!({"role": "assistant", "content": "Once upon", "prefix": true})
    );

    let vllm = with_prefill(&request, "Once upon", PrefillStyle::ContinueFinalMessage);
    assert_eq!(
        vllm.body["messages"][1],
        json!({"role": "assistant", "content": "Once upon"})
    );
    assert_eq!(vllm.body["continue_final_message"], true);
    assert_eq!(vllm.body["add_generation_prompt"], false);
    assert_eq!(
        request.body["messages"].as_array().unwrap().len(),
        1,
        "the caller's request is untouched"
    );
}

#[test]
fn a_callers_own_prefill_is_extended_not_repeated() {
    let request = ChatRequest::new(
        "m",
        vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "{\""}),
        ],
    );
    let continued = with_prefill(&request, "name\": ", PrefillStyle::TrailingAssistant);
    let messages = continued.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["content"], "{\"name\": ");
}

#[test]
fn usage_adds_member_by_member() {
    let mut usage = json!({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                           "prompt_tokens_details": {"cached_tokens": 2}, "cost": 0.5});
    add_counts(
        &mut usage,
        &json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11,
                "prompt_tokens_details": {"cached_tokens": 1}, "cost": 0.25}),
    );
    assert_eq!(
        usage,
        json!({"prompt_tokens": 18, "completion_tokens": 7, "total_tokens": 25,
               "prompt_tokens_details": {"cached_tokens": 3}, "cost": 0.75})
    );
}

#[test]
fn the_continuation_reads_as_the_rest_of_the_first_answer() {
    let mut seen = Seen::new(1024);
    seen.note(&text("Once "));
    seen.note(&text("upon"));
    assert!(seen.can_resume());
    let request = ChatRequest::new("m", vec![json!({"role": "user", "content": "12345678"})]);
    let earlier = seen.usage_so_far(&request);
    assert!(earlier.estimated);
    // 8 bytes of prompt: 3 tokens by the estimate; 9 bytes out: 3 tokens.
    assert_eq!(earlier.usage["total_tokens"], 6);
    let mut splice = Splice::new(&seen, earlier, "UPSTREAM_STREAM_INCOMPLETE", None);
    assert_eq!(seen.take_text(), "Once upon");

    let opening = read(json!({"id": "second", "created": 9, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}));
    assert!(splice.edit(opening).unwrap().is_none(), "no second role");

    let rest = splice
        .edit(read(json!({"id": "second", "created": 9, "model": "m",
            "choices": [{"index": 0, "delta": {"content": " a time"}, "finish_reason": null}]})))
        .unwrap()
        .unwrap();
    assert_eq!(rest.resumed_after, Some("UPSTREAM_STREAM_INCOMPLETE"));
    let event: Value = serde_json::from_slice(&rest.json).unwrap();
    assert_eq!(
        (event["id"].clone(), event["created"].clone()),
        (json!("first"), json!(7))
    );
    assert_eq!(event["choices"][0]["delta"]["content"], " a time");

    let usage = splice
        .edit(read(
            json!({"id": "second", "created": 9, "model": "m", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        ))
        .unwrap()
        .unwrap();
    assert_eq!(usage.resumed_after, None, "the seam is marked once");
    let counted = usage.usage.unwrap();
    assert_eq!(
        (
            counted.prompt_tokens,
            counted.completion_tokens,
            counted.total_tokens
        ),
        (8, 5, 13)
    );
}

#[test]
fn tool_calls_a_second_choice_a_finish_or_too_much_text_rule_resuming_out() {
    let tool = read(json!({"id": "c", "model": "m", "choices": [{"index": 0,
        "delta": {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": ""}}]}}]}));
    let second = read(
        json!({"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"content": "x"}}]}),
    );
    let filtered = read(json!({"id": "c", "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}));
    for ruled_out in [tool, second, filtered] {
        let mut seen = Seen::new(1024);
        seen.note(&text("some text"));
        seen.note(&ruled_out);
        assert!(!seen.can_resume(), "{:?}", ruled_out.json);
    }
    let mut seen = Seen::new(8);
    seen.note(&text("12345"));
    assert!(seen.can_resume());
    seen.note(&text("6789"));
    assert!(!seen.can_resume(), "past the cap");
    assert_eq!(seen.take_text(), "", "and the text is let go");
}

#[test]
fn only_reasoning_is_not_resumed() {
    let mut seen = Seen::new(1024);
    seen.note(&read(json!({"id": "c", "model": "m",
        "choices": [{"index": 0, "delta": {"reasoning_content": "thinking"}}]})));
    assert!(!seen.can_resume());
}

/// Only the text and what rules resuming out are read: a member resuming
/// does not read (a duplicated `id`, a lone surrogate in the reasoning)
/// cannot make an event unreadable and so end the stream unresumed, as
/// reading the whole event did (the gRPC edge resumed these already).
#[test]
fn members_resuming_does_not_read_do_not_rule_it_out() {
    let raw = |event: &str| StreamReader::default().read(event.to_owned()).unwrap();
    for event in [
        r#"{"id":"c","id":"c","model":"m","choices":[{"index":0,"delta":{"content":" wor"}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":" wor","reasoning_content":"\ud83d"}}]}"#,
    ] {
        let mut seen = Seen::new(1024);
        seen.note(&text("Hello"));
        seen.note(&raw(event));
        assert!(seen.can_resume(), "{event}");
        assert_eq!(seen.take_text(), "Hello wor", "{event}");
    }
}
