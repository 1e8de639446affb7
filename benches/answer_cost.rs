//! What one unary call's conversions cost the sidecar in CPU on the gRPC
//! edge, against the floor of reading the same JSON once, in the same run:
//! the request (protobuf → the body sent upstream), reading the answer
//! (what every edge pays) and the whole answer path (the upstream's body →
//! protobuf, encoded). Run with
//! `cargo bench --bench answer_cost`.

use bytes::Bytes;
use llm_sidecar::config::MaxTokensField;
use llm_sidecar::inbound::grpc::{request_from_proto, response_to_proto};
use llm_sidecar::model::ChatResponse;
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::upstream::openai::{BodyRules, UpstreamBody};
use prost::Message as _;
use serde::de::IgnoredAny;
use std::hint::black_box;
use support::per_call;

mod support;

const ROUNDS: u32 = 50_000;

const ANSWER: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"The image shows a wooden boardwalk path running through a lush green field.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;

fn request() -> pb::ChatRequest {
    let message = |role: pb::Role, text: &str| pb::Message {
        role: role as i32,
        content: Some(text.to_owned()),
        ..pb::Message::default()
    };
    pb::ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            message(pb::Role::System, "You are a helpful assistant."),
            message(
                pb::Role::User,
                "What is in this image? Describe it in one sentence.",
            ),
        ],
        temperature: Some(0.2),
        max_tokens: Some(256),
        ..pb::ChatRequest::default()
    }
}

fn main() {
    if !support::asked_to_run() {
        return;
    }
    let rules = BodyRules {
        include_usage: true,
        max_tokens_field: MaxTokensField::MaxTokens,
        forward_metadata: false,
    };
    let proto = request();
    let sent = serde_json::to_vec(&UpstreamBody {
        request: &request_from_proto(proto.clone()).unwrap(),
        rules,
    })
    .unwrap();
    let request_floor = per_call(ROUNDS, || {
        black_box(serde_json::from_slice::<IgnoredAny>(black_box(&sent)).unwrap());
    });
    let request_cost = per_call(ROUNDS, || {
        let request = request_from_proto(black_box(proto.clone())).unwrap();
        black_box(
            serde_json::to_vec(&UpstreamBody {
                request: &request,
                rules,
            })
            .unwrap(),
        );
    });
    let answer_floor = per_call(ROUNDS, || {
        black_box(serde_json::from_str::<IgnoredAny>(black_box(ANSWER)).unwrap());
    });
    let body = Bytes::from_static(ANSWER.as_bytes());
    let answer_cost = per_call(ROUNDS, || {
        let answer = ChatResponse::read(black_box(body.clone())).unwrap();
        black_box(
            response_to_proto(&answer, "openai")
                .unwrap()
                .encode_to_vec(),
        );
    });
    let read_cost = per_call(ROUNDS, || {
        black_box(ChatResponse::read(black_box(body.clone())).unwrap());
    });
    println!(
        "{:<12} {:>10} {:>10} {:>8}",
        "part", "floor ns", "cost ns", "×"
    );
    for (part, floor, cost) in [
        ("request", request_floor, request_cost),
        ("answer read", answer_floor, read_cost),
        ("answer", answer_floor, answer_cost),
    ] {
        println!(
            "{part:<12} {floor:>10.0} {cost:>10.0} {:>8.1}",
            cost / floor
        );
    }
}
