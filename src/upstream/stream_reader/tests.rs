use super::*;
use serde_json::json;

fn read_all(events: &[Value]) -> (StreamReader, Vec<Value>) {
    let mut reader = StreamReader::default();
    let chunks = events
        .iter()
        .map(|event| {
            reader
                .read(event.to_string())
                .expect("a chunk")
                .to_value()
                .unwrap()
        })
        .collect();
    (reader, chunks)
}

fn calls(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .flat_map(|chunk| {
            chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn index_less_parallel_calls_in_separate_chunks_stay_apart() {
    let call = |id: &str, name: &str, args: &str| {
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}}]})
    };
    let (_, chunks) = read_all(&[
        call("call_a", "get_weather", "{\"city\":\"Paris\"}"),
        call("call_b", "get_time", "{}"),
    ]);
    let calls = calls(&chunks);
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[1]["index"], 1);
    assert_eq!(calls[1]["function"]["name"], "get_time");
}

#[test]
fn index_less_calls_in_one_chunk_and_id_less_continuations() {
    let (_, chunks) = read_all(&[
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"function": {"name": "get_weather", "arguments": ""}},
            {"function": {"name": "get_time", "arguments": "{"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"function": {"arguments": "}"}}]}}]}),
    ]);
    let calls = calls(&chunks);
    let indexes: Vec<&Value> = calls.iter().map(|call| &call["index"]).collect();
    assert_eq!(indexes, [&json!(0), &json!(1), &json!(1)]);
}

#[test]
fn indexed_pieces_are_untouched_and_an_opening_piece_gets_its_type() {
    let first = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]});
    let second = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#;
    let mut reader = StreamReader::default();
    let opened = reader.read(first.to_string()).unwrap().to_value().unwrap();
    assert_eq!(
        opened["choices"][0]["delta"]["tool_calls"][0]["type"],
        "function"
    );
    let continued = reader.read(second.to_owned()).unwrap();
    assert_eq!(&continued.json[..], second.as_bytes());
}

#[test]
fn completion_is_judged_per_choice() {
    let mut reader = StreamReader::default();
    let piece = |index: u32, finish: Value| {
        json!({"choices": [{"index": index, "delta": {"content": "x"}, "finish_reason": finish}]})
            .to_string()
    };
    reader.read(piece(0, json!(null))).unwrap();
    reader.read(piece(1, json!(null))).unwrap();
    let chunk = reader.read(piece(0, json!("stop"))).unwrap();
    assert_eq!(chunk.finish_reasons, [(0, "stop".to_owned())]);
    assert!(!reader.all_choices_finished());
    assert_eq!(reader.unfinished_choices(), [1]);
    reader.read(piece(1, json!("length"))).unwrap();
    assert!(reader.all_choices_finished());
}

#[test]
fn usage_null_is_located_and_usage_read() {
    let mut reader = StreamReader::default();
    let text =
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;
    let chunk = reader.read(text.to_owned()).unwrap();
    let (head, tail) = chunk.json_without_null_usage().unwrap();
    let rest = [head, tail].concat();
    assert_eq!(
        std::str::from_utf8(&rest).unwrap(),
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}"#
    );
    assert_eq!(chunk.identity.as_deref().unwrap().model, "m");
    let first = r#"{ "usage" : null , "choices":[]}"#;
    let chunk = reader.read(first.to_owned()).unwrap();
    let (head, tail) = chunk.json_without_null_usage().unwrap();
    assert_eq!([head, tail].concat(), br#"{  "choices":[]}"#);
    let last = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_cache_hit_tokens":4}}"#;
    let chunk = reader.read(last.to_owned()).unwrap();
    assert!(chunk.is_usage_only());
    assert_eq!(chunk.usage.unwrap().cache_read_tokens, Some(4));
    assert!(chunk.identity.is_none());
}

#[test]
fn errors_and_garbage() {
    let mut reader = StreamReader::default();
    assert!(matches!(
        reader.read("{not json".into()),
        Err(EventProblem::Malformed(_))
    ));
    assert!(matches!(
        reader.read("[1]".into()),
        Err(EventProblem::Malformed(_))
    ));
    assert!(matches!(
        reader.read(r#"{"error":{"message":"boom","code":502}}"#.into()),
        Err(EventProblem::InBand(_))
    ));
    assert!(matches!(
        reader.read(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}"#.into()),
        Err(EventProblem::FinishError)
    ));
    // `tool_calls: null`, odd numbers and unknown keys are not errors.
    let odd = r#"{"choices":[{"index":0.0,"delta":{"content":null,"tool_calls":null,"x":{"y":[1]}},"finish_reason":"weird_new_reason","logprobs":null}],"usage":{"prompt_tokens":null}}"#;
    let chunk = reader.read(odd.into()).unwrap();
    assert_eq!(chunk.finish_reasons, [(0, "weird_new_reason".to_owned())]);
    assert_eq!(&chunk.json[..], odd.as_bytes());
}

#[test]
fn hostile_and_odd_events_are_read_not_refused() {
    let mut reader = StreamReader::default();
    // An index at the top of u32, then an index-less piece: no overflow.
    let top = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": u32::MAX, "id": "a", "type": "function", "function": {"name": "f"}}]}}]});
    reader.read(top.to_string()).unwrap();
    let next = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"id": "b", "type": "function", "function": {"name": "g"}}]}}]});
    let chunk = reader.read(next.to_string()).unwrap().to_value().unwrap();
    assert_eq!(
        chunk["choices"][0]["delta"]["tool_calls"][0]["index"],
        u32::MAX
    );

    // `""` is not a finish reason (Ollama, SGLang).
    let mut reader = StreamReader::default();
    let empty = r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":""}]}"#;
    assert!(reader.read(empty.into()).unwrap().finish_reasons.is_empty());
    assert!(!reader.all_choices_finished());

    // A character split across events: read as U+FFFD, forwarded as sent.
    let split = r#"{"choices":[{"index":0,"delta":{"content":"smile \ud83d"}}],"usage":null}"#;
    let chunk = reader.read(split.into()).unwrap();
    assert_eq!(&chunk.json[..], split.as_bytes());
    assert_eq!(chunk.output_bytes, "smile \u{fffd}".len());
    let (head, tail) = chunk.json_without_null_usage().unwrap();
    assert!(
        !String::from_utf8([head, tail].concat())
            .unwrap()
            .contains("usage")
    );

    // Multi-line data stays one line.
    let chunk = reader
        .read("{\"choices\":[{\"index\":0,\n\"delta\":{\"content\":\"x\"}}]}".into())
        .unwrap();
    assert!(!chunk.json.contains(&b'\n'));
}

#[test]
fn a_member_the_view_reads_given_twice_is_read_as_json_reads_it() {
    let mut reader = StreamReader::default();
    let twice = r#"{"id":"a","id":"b","model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#;
    let chunk = reader.read(twice.into()).unwrap();
    assert_eq!(&chunk.json[..], twice.as_bytes(), "forwarded as sent");
    assert_eq!(chunk.identity.unwrap().id, "b");
    assert!(reader.all_choices_finished());
}
