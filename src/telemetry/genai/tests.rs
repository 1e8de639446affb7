use super::*;

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "gpt-4o-mini",
        vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": "hi"}),
        ],
    )
}

fn messages(request: &mut ChatRequest) -> &mut Vec<Json> {
    request.body["messages"].as_array_mut().unwrap()
}

fn answer(value: Json) -> ChatResponse {
    ChatResponse::read(value.to_string().into()).unwrap()
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
    let mut request = request();
    request.stream = true;
    request.max_output_tokens = Some(256);
    let sampling = json!({
        "temperature": 0.2, "top_p": 0.9, "seed": 7, "n": 2, "stop": ["END", "\n\n"],
        "frequency_penalty": 0.5, "presence_penalty": -0.5,
    });
    request.body.extend(sampling.as_object().cloned().unwrap());
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
fn max_completion_tokens_counts_as_max_tokens_and_odd_shapes_are_absent() {
    let mut request = request();
    request
        .body
        .insert("max_completion_tokens".into(), json!(1000));
    request.body.insert("temperature".into(), json!("warm"));
    assert!(
        find(
            &request_attributes(&request, "openai", "", 0),
            GEN_AI_REQUEST_TEMPERATURE
        )
        .is_none()
    );
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
        cache_read_tokens: Some(2),
        cache_write_tokens: Some(5),
        reasoning_tokens: Some(0),
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
    assert_eq!(
        find(&attributes, GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
        Some(&Value::I64(5))
    );
}

#[test]
fn chat_response_attributes_read_the_choices() {
    let response = answer(json!({
        "id": "r1", "model": "gpt-4o-mini-2024",
        "choices": [{"index": 0, "message": {"content": null}, "finish_reason": "tool_calls"}],
    }));
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
    messages(&mut request).extend([
        json!({"role": "user", "name": "alice", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        ]}),
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
        }]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
    ]);

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
                {"type": "input_audio"},
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
    let response = answer(json!({"choices": [{
        "index": 0,
        "message": {
            "role": "assistant", "content": "Paris", "reasoning_content": "thinking",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}],
        },
        "finish_reason": "tool_calls",
    }]}));
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
    *messages(&mut request) = vec![json!({"role": "user", "content": "é".repeat(100)})];
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
