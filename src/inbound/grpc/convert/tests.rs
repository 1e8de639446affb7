use super::*;
use crate::proto::v1 as pb;
use prost_types::value::Kind;

fn text(role: pb::Role, content: &str) -> pb::Message {
    pb::Message {
        role: role as i32,
        content: Some(content.to_owned()),
        ..pb::Message::default()
    }
}

fn number(value: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::NumberValue(value)),
    }
}

#[test]
fn a_full_request_converts_to_the_openai_shape() {
    let mut extra = prost_types::Struct::default();
    extra.fields.insert("top_k".into(), number(40.0));
    let request = pb::ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            text(pb::Role::System, "be brief"),
            pb::Message {
                role: pb::Role::User as i32,
                parts: vec![
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::Text("what is this?".into())),
                        extra: None,
                    },
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::ImageData(pb::ImageData {
                            data: vec![1, 2, 3],
                            mime_type: "image/png".into(),
                            detail: String::new(),
                        })),
                        extra: None,
                    },
                ],
                ..pb::Message::default()
            },
            pb::Message {
                role: pb::Role::Assistant as i32,
                tool_calls: vec![pb::ToolCall {
                    id: "call_1".into(),
                    function: Some(pb::FunctionCall {
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Oslo\"}".into(),
                    }),
                    ..pb::ToolCall::default()
                }],
                ..pb::Message::default()
            },
            pb::Message {
                role: pb::Role::Tool as i32,
                content: Some("12C".into()),
                tool_call_id: "call_1".into(),
                ..pb::Message::default()
            },
        ],
        temperature: Some(0.5),
        max_tokens: Some(100),
        stop: vec!["END".into()],
        seed: Some(7),
        reasoning_effort: "low".into(),
        tools: vec![pb::Tool {
            tool: Some(pb::tool::Tool::Function(pb::FunctionTool {
                name: "get_weather".into(),
                description: "weather".into(),
                parameters: Some(prost_types::Struct::default()),
                strict: None,
            })),
            extra: None,
        }],
        tool_choice: Some(pb::ToolChoice {
            choice: Some(pb::tool_choice::Choice::Mode(
                pb::ToolChoiceMode::Auto as i32,
            )),
        }),
        response_format: Some(pb::ResponseFormat {
            format: Some(pb::response_format::Format::JsonObject(
                pb::JsonObjectFormat {},
            )),
        }),
        metadata: [("team".to_owned(), "search".to_owned())].into(),
        extra: Some(extra),
        ..pb::ChatRequest::default()
    };
    let converted = request_from_proto(request).unwrap();
    assert_eq!(converted.metadata["team"], "search");
    assert_eq!(converted.model, "gpt-4o-mini");
    assert_eq!(converted.max_output_tokens, Some(100));
    assert_eq!(
        serde_json::Value::Object(converted.body),
        serde_json::json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AQID"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
                ]},
                {"role": "tool", "content": "12C", "tool_call_id": "call_1"}
            ],
            "temperature": 0.5,
            "stop": ["END"],
            "seed": 7,
            "reasoning_effort": "low",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {}}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_object"},
            "top_k": 40
        })
    );
}

#[test]
fn unset_and_unknown_roles_are_named() {
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![
            text(pb::Role::User, "hi"),
            pb::Message {
                content: Some("x".into()),
                ..pb::Message::default()
            },
        ],
        ..pb::ChatRequest::default()
    };
    let error = request_from_proto(request).unwrap_err().to_string();
    assert!(
        error.starts_with("messages[1]: `role` is not set"),
        "{error}"
    );
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![pb::Message {
            role: 42,
            content: Some("x".into()),
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    };
    assert!(
        request_from_proto(request)
            .unwrap_err()
            .to_string()
            .contains("42")
    );
}

#[test]
fn content_and_parts_together_are_rejected() {
    let mut message = text(pb::Role::User, "hi");
    message.parts.push(pb::ContentPart {
        part: Some(pb::content_part::Part::Text("x".into())),
        extra: None,
    });
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![message],
        ..pb::ChatRequest::default()
    };
    assert!(
        request_from_proto(request)
            .unwrap_err()
            .to_string()
            .contains("not both")
    );
}

#[test]
fn struct_numbers_keep_integers_integral() {
    let mut schema = prost_types::Struct::default();
    schema.fields.insert("maxItems".into(), number(3.0));
    schema.fields.insert("ratio".into(), number(0.25));
    assert_eq!(
        struct_to_json(schema),
        serde_json::json!({"maxItems": 3, "ratio": 0.25})
    );
}

#[test]
fn chunks_carry_tool_call_deltas_and_usage() {
    let event = serde_json::json!({
        "id": "c1", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "f", "arguments": "{\"a\""}}]}, "finish_reason": null}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}
    });
    let chunk = crate::upstream::stream_reader::StreamReader::default()
        .read(event.to_string())
        .unwrap();
    let proto = chunk_to_proto(&chunk, "openai").unwrap();
    assert_eq!(proto.provider, "openai");
    let call = &proto.choices[0].tool_calls[0];
    assert_eq!(
        (
            call.index,
            call.id.as_str(),
            call.name.as_str(),
            call.arguments.as_str()
        ),
        (1, "call_2", "f", "{\"a\"")
    );
    let usage = proto.usage.unwrap();
    assert_eq!(
        (
            usage.total_tokens,
            usage.cached_prompt_tokens,
            usage.reasoning_tokens
        ),
        (7, 2, 1)
    );
}

#[test]
fn choices_without_an_index_are_numbered_by_place() {
    let answer = crate::model::ChatResponse::read(
        serde_json::json!({"choices": [
            {"message": {"content": "a"}, "finish_reason": "stop"},
            {"message": {"content": "b"}, "finish_reason": "stop"},
        ]})
        .to_string()
        .into(),
    )
    .unwrap();
    let proto = response_to_proto(&answer, "p").unwrap();
    let indexes: Vec<u32> = proto.choices.iter().map(|choice| choice.index).collect();
    assert_eq!(indexes, [0, 1]);
}

#[test]
fn a_carrier_may_give_the_content_the_typed_fields_left_unset() {
    let mut extra = prost_types::Struct::default();
    extra.fields.insert(
        "content".into(),
        prost_types::Value {
            kind: Some(Kind::StringValue("from the carrier".into())),
        },
    );
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            extra: Some(extra),
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    };
    let converted = request_from_proto(request).unwrap();
    assert_eq!(converted.messages()[0]["content"], "from the carrier");
}

#[test]
fn carriers_add_inside_typed_objects_and_may_name_a_role() {
    let carrier = |value: serde_json::Value| Some(json_to_struct(value.as_object().unwrap()));
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![
            pb::Message {
                role: pb::Role::Unspecified as i32,
                content: Some("hi".into()),
                extra: carrier(serde_json::json!({"role": "ipython"})),
                ..pb::Message::default()
            },
            pb::Message {
                role: pb::Role::Assistant as i32,
                tool_calls: vec![pb::ToolCall {
                    id: "c".into(),
                    function: Some(pb::FunctionCall {
                        name: "f".into(),
                        arguments: "{}".into(),
                    }),
                    extra: carrier(serde_json::json!({"function": {"strict_args": true}})),
                    ..pb::ToolCall::default()
                }],
                ..pb::Message::default()
            },
        ],
        temperature: Some(-0.0),
        ..pb::ChatRequest::default()
    };
    let converted = request_from_proto(request).unwrap();
    let messages = converted.messages();
    assert_eq!(messages[0]["role"], "ipython");
    assert_eq!(
        messages[1]["tool_calls"][0]["function"],
        serde_json::json!({"name": "f", "arguments": "{}", "strict_args": true})
    );
    let mut repeated = pb::ToolCall {
        function: Some(pb::FunctionCall::default()),
        extra: carrier(serde_json::json!({"function": {"name": "g"}})),
        ..pb::ToolCall::default()
    };
    repeated.id = "c".into();
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![pb::Message {
            role: pb::Role::Assistant as i32,
            tool_calls: vec![repeated],
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    };
    let error = request_from_proto(request).unwrap_err().to_string();
    assert!(error.contains("extra.function.name"), "{error}");
    let zero = struct_to_json(carrier(serde_json::json!({"z": -0.0})).unwrap());
    assert!(zero["z"].as_f64().unwrap().is_sign_negative());
}

/// The one-pass chunk path gives what the JSON-value path gives, for every
/// event of the corpus and for odd ones; where it gives up, the other runs.
#[test]
fn the_fast_chunk_path_agrees_with_the_value_path() {
    use crate::upstream::stream_reader::StreamReader;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/corpus");
    let mut events: Vec<serde_json::Value> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        if let Some(list) = case["events"].as_array() {
            events.extend(list.iter().filter(|event| event.is_object()).cloned());
        }
    }
    assert!(events.len() > 50, "the corpus has streams");
    events.extend([
        serde_json::json!({"choices": [{"delta": {"reasoning": "r", "reasoning_content": "rc"}}]}),
        serde_json::json!({"choices": [{"delta": {"reasoning": null, "reasoning_content": ""}}]}),
        serde_json::json!({"object": "other", "usage": null, "x": [1, {"y": null}],
            "choices": [{"index": 2, "logprobs": {"odd": true}, "delta": {"tool_calls": [
                {"index": 1, "function": {"name": "f", "arguments": "{}", "more": 1}, "z": 2}]}}]}),
        serde_json::json!({"created": 1.0, "choices": [{"index": "1", "delta": null}]}),
        serde_json::json!({"choices": [null, 3]}),
    ]);
    let mut fast = 0;
    for event in events {
        let chunk = StreamReader::default().read(event.to_string()).unwrap();
        let slow = answer::chunk_via_value(&chunk, "p").unwrap();
        if let Some(quick) = chunk_fast::chunk_to_proto_fast(&chunk.json, chunk.usage, "p") {
            assert_eq!(quick, slow, "{event}");
            fast += 1;
            // The next event is decoded into this message, as on a stream.
            crate::inbound::grpc::recycle::give_back(quick);
        }
        assert_eq!(chunk_to_proto(&chunk, "p").unwrap(), slow);
    }
    assert!(fast > 50, "most events take the fast path ({fast})");
}

/// Every answer of the conformance corpus, and odd ones.
fn corpus_answers() -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/corpus");
    let mut answers: Vec<serde_json::Value> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        if case["response"].is_object() {
            answers.push(case["response"].clone());
        }
    }
    assert!(answers.len() > 10, "the corpus has answers");
    let choice = |message: serde_json::Value| serde_json::json!({"choices": [{"finish_reason": "stop", "message": message}]});
    answers.extend([
        choice(serde_json::json!({"role": "tool", "content": null, "reasoning": "r"})),
        choice(serde_json::json!({"reasoning": "r", "reasoning_content": "rc", "x": {}})),
        choice(serde_json::json!({"content": [1], "tool_calls": null})),
        choice(serde_json::json!({"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}", "z": 1}, "k": 2}]})),
        serde_json::json!({"object": "odd", "choices": [{"index": 1, "message": null, "logprobs": {"odd": 1}}], "usage": {"prompt_tokens": 1}}),
        serde_json::json!({"choices": [{"message": {"content": "a"}, "finish_reason": ""}, {"message": {"content": "b"}, "finish_reason": 7}]}),
        serde_json::json!({"choices": [{"message": {"content": "a"}}], "x_groq": {"usage": {"prompt_tokens": 3, "completion_tokens": 1}}}),
        serde_json::json!({"choices": [{"message": {"content": "a"}}], "error": {"message": "m"}}),
        serde_json::json!({"choices": [], "error": {"message": "m"}}),
        serde_json::json!({"choices": null}),
        serde_json::json!({"choices": [null, {"message": {"refusal": "no"}, "finish_reason": "stop"}]}),
        serde_json::json!({"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": 3, "prompt_cache_hit_tokens": 2, "completion_tokens": 1}}),
        serde_json::json!({"choices": [{"message": {"content": "a"}}], "usage": null}),
    ]);
    answers
}

/// The one-pass answer path gives what the JSON-value path gives, for every
/// answer of the corpus and for odd ones.
#[test]
fn the_fast_answer_path_agrees_with_the_value_path() {
    let mut fast = 0;
    for answer in corpus_answers() {
        let Ok(response) = crate::model::ChatResponse::read(answer.to_string().into()) else {
            continue;
        };
        let slow = answer::response_via_value(&response, "p").unwrap();
        if let Some(quick) =
            answer_fast::response_to_proto_fast(&response.json, response.usage, "p")
        {
            assert_eq!(quick, slow, "{answer}");
            fast += 1;
        }
        assert_eq!(response_to_proto(&response, "p").unwrap(), slow);
    }
    assert!(fast > 10, "most answers take the fast path ({fast})");
}

/// Reading an answer with the one-pass decoder gives what reading it
/// through the JSON view and converting it gives: the same facts for the
/// sidecar (and the ledger), the same message for the caller, the same
/// errors. Duplicated members and text that is not UTF-8 are covered too.
#[test]
fn decoding_an_answer_while_reading_agrees_with_reading_then_converting() {
    use crate::model::ChatResponse;
    let mut texts: Vec<String> = corpus_answers().iter().map(ToString::to_string).collect();
    texts.extend([
        r#"{"id": "i", "id": "j", "choices": [{"message": {"content": "a"}, "finish_reason": "stop"}]}"#.to_owned(),
        r#"{"choices": [{"message": {"content": "a \ud800"}, "finish_reason": "stop"}]}"#.to_owned(),
        "\u{feff}{\"choices\": [{\"message\": {\"content\": \"bom\"}, \"finish_reason\": \"stop\"}]}".to_owned(),
        r#"{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": 1}, "usage": {"prompt_tokens": 2, "completion_tokens": 3}}"#.to_owned(),
        "[1]".to_owned(),
    ]);
    texts.extend(TWICE.iter().map(|text| (*text).to_owned()));
    let (mut decoded, total) = (0, texts.len());
    for text in texts {
        let expected = ChatResponse::read(text.clone().into());
        let got = ChatResponse::read_for(text.clone().into(), Some(decode_answer));
        let (expected, mut got) = match (expected, got) {
            (Ok(expected), Ok(got)) => (expected, got),
            (expected, got) => {
                assert_eq!(expected.err(), got.err(), "{text}");
                continue;
            }
        };
        assert_eq!(expected.json, got.json, "{text}");
        assert_eq!(expected.id, got.id, "{text}");
        assert_eq!(expected.model, got.model, "{text}");
        assert_eq!(expected.finish_reasons, got.finish_reasons, "{text}");
        assert_eq!(expected.output_bytes, got.output_bytes, "{text}");
        assert_eq!(expected.usage, got.usage, "{text}");
        let message = match got.proto.take() {
            Some(mut proto) => {
                decoded += 1;
                proto.provider = "p".into();
                *proto
            }
            None => response_to_proto(&got, "p").unwrap(),
        };
        assert_eq!(
            message,
            response_to_proto(&expected, "p").unwrap(),
            "{text}"
        );
    }
    assert!(
        decoded * 10 > total * 7,
        "most answers decode in one pass ({decoded} of {total})"
    );
}

/// Answers with a member of a choice or a message given twice: only the
/// last one counts, as when the answer is read as a JSON value.
const TWICE: [&str; 3] = [
    r#"{"choices": [{"message": {"content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}, "message": {"content": "b"}, "finish_reason": "stop"}]}"#,
    r#"{"choices": [{"message": {"content": "first", "refusal": "no", "x": 1}, "message": null, "finish_reason": "stop"}]}"#,
    r#"{"choices": [{"message": {"content": "first", "content": null}, "finish_reason": "stop"}]}"#,
];

/// The one-pass decoder reads a member given twice as the JSON-value path
/// does: the last one, whole (not merged with the one before).
#[test]
fn a_member_given_twice_decodes_as_its_last_one() {
    use crate::model::ChatResponse;
    for text in TWICE {
        let expected = ChatResponse::read(text.into()).unwrap();
        let mut got = ChatResponse::read_for(text.into(), Some(decode_answer)).unwrap();
        assert_eq!(expected.output_bytes, got.output_bytes, "{text}");
        let mut message = match got.proto.take() {
            Some(proto) => *proto,
            None => response_to_proto(&got, "p").unwrap(),
        };
        message.provider = "p".into();
        assert_eq!(
            message,
            answer::response_via_value(&expected, "p").unwrap(),
            "{text}"
        );
    }
}

#[test]
fn a_carried_max_tokens_beside_the_typed_one_is_refused() {
    let mut extra = prost_types::Struct::default();
    extra.fields.insert("max_tokens".into(), number(5.0));
    let request = pb::ChatRequest {
        model: "m".into(),
        messages: vec![text(pb::Role::User, "hi")],
        max_tokens: Some(9),
        extra: Some(extra.clone()),
        ..pb::ChatRequest::default()
    };
    let error = request_from_proto(request).unwrap_err().to_string();
    assert!(error.contains("extra.max_tokens"), "{error}");
    let carried_only = pb::ChatRequest {
        model: "m".into(),
        messages: vec![text(pb::Role::User, "hi")],
        extra: Some(extra),
        ..pb::ChatRequest::default()
    };
    let converted = request_from_proto(carried_only).unwrap();
    assert_eq!(converted.body["max_tokens"], 5);
}

/// Reading a stream's events with the one-pass decoder gives, event by
/// event, what reading them through the JSON view and converting them
/// gives: the same facts for the sidecar, the same message for the caller,
/// the same repairs and the same errors. Each message is decoded into the
/// one before it, as the codec hands them back on a stream.
#[test]
fn decoding_while_reading_agrees_with_reading_then_converting() {
    use crate::upstream::stream_reader::StreamReader;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/corpus");
    let mut streams: Vec<Vec<String>> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        if let Some(list) = case["events"].as_array() {
            let events = list.iter().filter(|event| event.is_object());
            streams.push(events.map(ToString::to_string).collect());
        }
    }
    let odd = [
        r#"{"choices": [{"delta": {"tool_calls": [{"id": "a", "function": {"name": "f"}}, {"id": "b", "function": {"name": "g"}}]}}]}"#,
        r#"{"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}"#,
        r#"{"choices": [{"index": 1, "delta": {"content": "x"}, "finish_reason": ""}]}"#,
        r#"{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "prompt_cache_hit_tokens": 2}}"#,
        r#"{"choices": [], "x_groq": {"usage": {"prompt_tokens": 3, "completion_tokens": 1}}}"#,
        r#"{"choices": [{"delta": {"content": "a"}}], "error": {"message": "m"}}"#,
        r#"{"choices": [{"delta": {"content": "a"}, "finish_reason": "error"}]}"#,
        r#"{"id": "i", "id": "j", "model": "m", "choices": [{"delta": {"content": "\ud800"}}]}"#,
        r#"{"choices": [{"index": 0, "delta": {"content": "two"}}], "usage": null}"#,
        r#"{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "usage": null}"#,
        r#"{"choices": [{"delta": {"tool_calls": [{"id": "x", "function": {"name": "f"}}], "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}"#,
        r#"{"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "1"}}]}}], "choices": [{"delta": {"content": "c"}}]}"#,
    ];
    streams.push(odd.iter().map(ToString::to_string).collect());
    assert!(streams.len() > 10, "the corpus has streams");
    let (mut decoded, mut events) = (0, 0);
    for stream in streams {
        let (mut viewed, mut read) = (StreamReader::default(), StreamReader::default());
        for event in stream {
            events += 1;
            let expected = viewed.read(event.clone());
            let got = read.read_for(event.clone().into(), Some(decode_chunk));
            let (expected, mut got) = match (expected, got) {
                (Ok(expected), Ok(got)) => (expected, got),
                (expected, got) => {
                    assert_eq!(expected.err(), got.err(), "{event}");
                    continue;
                }
            };
            assert_eq!(expected.finish_reasons, got.finish_reasons, "{event}");
            assert_eq!(expected.output_bytes, got.output_bytes, "{event}");
            assert_eq!(expected.usage, got.usage, "{event}");
            assert_eq!(expected.identity, got.identity, "{event}");
            assert_eq!(expected.no_choices, got.no_choices, "{event}");
            let message = match got.proto.take() {
                Some(mut proto) => {
                    decoded += 1;
                    proto.provider = "p".into();
                    *proto
                }
                None => chunk_to_proto(&got, "p").unwrap(),
            };
            assert_eq!(message, chunk_to_proto(&expected, "p").unwrap(), "{event}");
            // As the codec does: the next event is decoded into this
            // message, whatever it held (other choices, tool calls ...).
            crate::inbound::grpc::recycle::give_back(message);
        }
        assert_eq!(viewed.unfinished_choices(), read.unfinished_choices());
    }
    assert!(
        decoded * 10 > events * 8,
        "most events decode in one pass ({decoded} of {events})"
    );
}
