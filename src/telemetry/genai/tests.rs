use super::*;
use crate::model::{
    Choice, CompletionTokensDetails, FunctionCall, ImageUrl, PromptTokensDetails, ResponseMessage,
};

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            Message::text(Role::System, "be brief"),
            Message::text(Role::User, "hi"),
        ],
        ..ChatRequest::default()
    }
}

#[test]
fn request_attributes_carry_only_what_was_set() {
    let attributes = request_attributes(&request(), "openai", "api.openai.com", 443);
    assert_eq!(
        find(&attributes, GEN_AI_OPERATION_NAME),
        Some(&Value::from("chat"))
    );
    assert_eq!(
        find(&attributes, GEN_AI_PROVIDER_NAME),
        Some(&Value::from("openai"))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_MODEL),
        Some(&Value::from("gpt-4o-mini"))
    );
    assert_eq!(
        find(&attributes, SERVER_ADDRESS),
        Some(&Value::from("api.openai.com"))
    );
    assert_eq!(find(&attributes, SERVER_PORT), Some(&Value::I64(443)));
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_STREAM),
        Some(&Value::Bool(false))
    );
    for unset in [
        GEN_AI_REQUEST_TEMPERATURE,
        GEN_AI_REQUEST_TOP_P,
        GEN_AI_REQUEST_MAX_TOKENS,
        GEN_AI_REQUEST_SEED,
        GEN_AI_REQUEST_STOP_SEQUENCES,
        GEN_AI_REQUEST_FREQUENCY_PENALTY,
        GEN_AI_REQUEST_PRESENCE_PENALTY,
        GEN_AI_REQUEST_CHOICE_COUNT,
    ] {
        assert!(
            find(&attributes, unset).is_none(),
            "{unset} should be absent"
        );
    }
}

#[test]
fn request_attributes_map_every_sampling_parameter() {
    let request = ChatRequest {
        stream: true,
        temperature: Some(0.2),
        top_p: Some(0.9),
        max_tokens: Some(256),
        seed: Some(7),
        n: Some(2),
        stop: vec!["END".into(), "\n\n".into()],
        frequency_penalty: Some(0.5),
        presence_penalty: Some(-0.5),
        ..request()
    };
    let attributes = request_attributes(&request, "openai", "", 0);
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_TEMPERATURE),
        Some(&Value::F64(0.2))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_TOP_P),
        Some(&Value::F64(0.9))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_MAX_TOKENS),
        Some(&Value::I64(256))
    );
    assert_eq!(find(&attributes, GEN_AI_REQUEST_SEED), Some(&Value::I64(7)));
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_CHOICE_COUNT),
        Some(&Value::I64(2))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_FREQUENCY_PENALTY),
        Some(&Value::F64(0.5))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_PRESENCE_PENALTY),
        Some(&Value::F64(-0.5))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_STREAM),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_STOP_SEQUENCES),
        Some(&Value::Array(Array::String(vec![
            "END".into(),
            "\n\n".into()
        ])))
    );
    assert!(
        find(&attributes, SERVER_ADDRESS).is_none(),
        "no address, no server.* attributes"
    );
}

#[test]
fn max_completion_tokens_in_extra_counts_as_max_tokens() {
    let mut request = request();
    request
        .extra
        .insert("max_completion_tokens".into(), json!(1000));
    let attributes = request_attributes(&request, "openai", "", 0);
    assert_eq!(
        find(&attributes, GEN_AI_REQUEST_MAX_TOKENS),
        Some(&Value::I64(1000))
    );
}

#[test]
fn response_attributes_skip_empty_and_include_usage() {
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
        ..Usage::default()
    };
    let attributes = response_attributes("chatcmpl-1", "", ["stop", "length"], Some(&usage));
    assert_eq!(
        find(&attributes, GEN_AI_RESPONSE_ID),
        Some(&Value::from("chatcmpl-1"))
    );
    assert!(find(&attributes, GEN_AI_RESPONSE_MODEL).is_none());
    assert_eq!(
        find(&attributes, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(&Value::Array(Array::String(vec![
            "stop".into(),
            "length".into()
        ])))
    );
    assert_eq!(
        find(&attributes, GEN_AI_USAGE_INPUT_TOKENS),
        Some(&Value::I64(10))
    );
    assert_eq!(
        find(&attributes, GEN_AI_USAGE_OUTPUT_TOKENS),
        Some(&Value::I64(5))
    );

    let none = response_attributes("", "", Vec::<String>::new(), None);
    assert!(none.is_empty());
}

#[test]
fn usage_details_appear_only_when_reported() {
    let plain = Usage {
        prompt_tokens: 3,
        completion_tokens: 4,
        ..Usage::default()
    };
    let attributes = usage_attributes(&plain);
    assert_eq!(attributes.len(), 2);

    let detailed = Usage {
        prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 2 }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: 0,
        }),
        ..plain
    };
    let attributes = usage_attributes(&detailed);
    assert_eq!(
        find(&attributes, GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
        Some(&Value::I64(2))
    );
    assert_eq!(
        find(&attributes, GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
        Some(&Value::I64(0))
    );
}

#[test]
fn chat_response_attributes_read_the_choices() {
    let response = ChatResponse {
        id: "r1".into(),
        model: "gpt-4o-mini-2024".into(),
        choices: vec![Choice {
            finish_reason: Some("tool_calls".into()),
            ..Choice::default()
        }],
        ..ChatResponse::default()
    };
    let attributes = chat_response_attributes(&response);
    assert_eq!(
        find(&attributes, GEN_AI_RESPONSE_MODEL),
        Some(&Value::from("gpt-4o-mini-2024"))
    );
    assert_eq!(
        find(&attributes, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(&Value::Array(Array::String(vec!["tool_calls".into()])))
    );
}

#[test]
fn input_messages_follow_the_role_and_parts_shape() {
    let mut request = request();
    request.messages.push(Message {
        role: Role::User,
        content: Some(Content::Parts(vec![
            ContentPart::Text {
                text: "what is this?".into(),
            },
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "https://example.com/cat.png".into(),
                    detail: None,
                },
            },
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "data:image/png;base64,AAAA".into(),
                    detail: None,
                },
            },
        ])),
        name: Some("alice".into()),
        tool_calls: Vec::new(),
        tool_call_id: None,
    });
    request.messages.push(Message {
        role: Role::Assistant,
        content: None,
        name: None,
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
        }],
        tool_call_id: None,
    });
    request.messages.push(Message {
        role: Role::Tool,
        content: Some(Content::Text("sunny".into())),
        name: None,
        tool_calls: Vec::new(),
        tool_call_id: Some("call_1".into()),
    });

    let text = input_messages_json(&request, 64 * 1024);
    let parsed: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(
        parsed,
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
            {"role": "user", "name": "alice", "parts": [
                {"type": "text", "content": "what is this?"},
                {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
                {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "AAAA"},
            ]},
            {"role": "assistant", "parts": [
                {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}},
            ]},
            {"role": "tool", "parts": [
                {"type": "tool_call_response", "id": "call_1", "response": "sunny"},
            ]},
        ])
    );
}

#[test]
fn output_messages_carry_parts_and_the_mapped_finish_reason() {
    let response = ChatResponse {
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                content: Some("Paris".into()),
                reasoning_content: Some("thinking".into()),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "f".into(),
                        arguments: "not json".into(),
                    },
                }],
                ..ResponseMessage::default()
            },
            finish_reason: Some("tool_calls".into()),
        }],
        ..ChatResponse::default()
    };
    let parsed: Json = serde_json::from_str(&output_messages_json(&response, 4096)).unwrap();
    assert_eq!(
        parsed,
        json!([{
            "role": "assistant",
            "finish_reason": "tool_call",
            "parts": [
                {"type": "reasoning", "content": "thinking"},
                {"type": "text", "content": "Paris"},
                {"type": "tool_call", "id": "c", "name": "f", "arguments": "not json"},
            ],
        }])
    );
}

#[test]
fn capture_is_cut_on_a_char_boundary_with_a_marker() {
    let mut request = request();
    request.messages = vec![Message::text(Role::User, "é".repeat(100))];
    for cap in [20, 21, 33, 50] {
        let text = input_messages_json(&request, cap);
        assert!(text.len() <= cap, "{} > {cap}", text.len());
        assert!(text.ends_with(TRUNCATION_MARKER));
    }
    let whole = input_messages_json(&request, 1 << 20);
    assert!(!whole.ends_with(TRUNCATION_MARKER));
    serde_json::from_str::<Json>(&whole).unwrap();
}

#[test]
fn a_cap_smaller_than_the_marker_still_cuts() {
    let text = truncate("ééééé".into(), 3);
    assert_eq!(text, "é");
}
