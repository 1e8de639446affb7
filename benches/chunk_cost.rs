//! What one streamed chunk costs the sidecar in CPU, against the floor of
//! reading the same JSON once (a validating pass that keeps nothing),
//! measured in the same run: the upstream side (reading an event into a
//! chunk) and the gRPC side (converting it to protobuf and encoding it).
//! The facade writes the event's own bytes, so its cost per chunk is the
//! reader's plus a copy. Run with `cargo bench --bench chunk_cost`.

use llm_sidecar::inbound::grpc::chunk_to_proto;
use llm_sidecar::upstream::stream_reader::StreamReader;
use prost::Message as _;
use serde::de::IgnoredAny;
use std::hint::black_box;
use support::per_call;

mod support;

const ROUNDS: u32 = 100_000;

/// Chunks in the shapes providers send most.
const CHUNKS: &[(&str, &str)] = &[
    (
        "openai text, usage null",
        r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"aB3x"}"#,
    ),
    (
        "deepseek reasoning",
        r#"{"id":"0f4b7d2a","object":"chat.completion.chunk","created":1741570283,"model":"deepseek-reasoner","system_fingerprint":"fp_7e0991cad4_prod0820_fp8_kvcache","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let"},"logprobs":null,"finish_reason":null}]}"#,
    ),
    (
        "tool-call piece",
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"logprobs":null,"finish_reason":null}]}"#,
    ),
];

fn main() {
    if !support::asked_to_run() {
        return;
    }
    println!(
        "{:<26} {:>10} {:>12} {:>12} {:>14}",
        "chunk", "floor ns", "reader ×", "+gRPC ×", "reader+gRPC ns"
    );
    for (name, text) in CHUNKS {
        let floor = per_call(ROUNDS, || {
            black_box(serde_json::from_str::<IgnoredAny>(black_box(text)).unwrap());
        });
        // The reader takes the event's String: the allocation is part of
        // the cost (the SSE parser hands over its own).
        let reader = per_call(ROUNDS, || {
            let mut reader = StreamReader::default();
            black_box(reader.read(black_box(text).to_string()).unwrap());
        });
        let chunk = StreamReader::default().read(text.to_string()).unwrap();
        let grpc = per_call(ROUNDS, || {
            let proto = chunk_to_proto(black_box(&chunk), "openai").unwrap();
            black_box(proto.encode_to_vec());
        });
        println!(
            "{name:<26} {floor:>10.0} {:>12.1} {:>12.1} {:>14.0}",
            reader / floor,
            (reader + grpc) / floor,
            reader + grpc
        );
    }
}
