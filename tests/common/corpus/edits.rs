//! The documented edits a facade caller sees in a replayed stream (the rule
//! in `tests/conformance/README.md`), applied to a case's recorded events:
//! usage-only chunk and `"usage": null` dropped unless usage was asked for,
//! `[DONE]` written after a stream completed by finish reasons, and tool-call
//! pieces without `index` (or an opening piece without `type`) filled in.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::Case;

const DONE: &str = "[DONE]";

/// See [`super::expected_stream_events`].
pub(super) fn expected(case: &Case, caller_asked_usage: bool) -> Vec<Value> {
    let events = case
        .events
        .as_ref()
        .unwrap_or_else(|| panic!("{} is not a stream case", case.name));
    let mut calls = ToolCallIndexer::default();
    let mut out = Vec::with_capacity(events.len() + 1);
    for event in events {
        let Value::Object(chunk) = event else {
            out.push(event.clone());
            continue;
        };
        if !caller_asked_usage && is_usage_only(chunk) {
            continue;
        }
        let mut chunk = chunk.clone();
        if !caller_asked_usage && chunk.get("usage") == Some(&Value::Null) {
            chunk.remove("usage");
        }
        calls.fill_in(&mut chunk);
        out.push(Value::Object(chunk));
    }
    if !events.iter().any(is_done) && completed(events) {
        out.push(json!(DONE));
    }
    out
}

/// See [`super::stream_completed`].
pub(super) fn completed(events: &[Value]) -> bool {
    let mut finished: BTreeMap<u64, bool> = BTreeMap::new();
    for choice in events.iter().flat_map(choices) {
        let done = choice
            .get("finish_reason")
            .is_some_and(|reason| !reason.is_null());
        *finished.entry(choice_index(choice)).or_default() |= done;
    }
    !finished.is_empty() && finished.values().all(|done| *done)
}

/// See [`super::finish_reasons`].
pub(super) fn finish_reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .flat_map(choices)
        .filter_map(|choice| choice.get("finish_reason")?.as_str())
        .map(str::to_owned)
        .collect()
}

fn is_done(event: &Value) -> bool {
    event.as_str() == Some(DONE)
}

fn choices(event: &Value) -> impl Iterator<Item = &Value> {
    event
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn choice_index(choice: &Value) -> u64 {
    choice.get("index").and_then(Value::as_u64).unwrap_or(0)
}

/// `"choices": []` carrying a usage: the chunk `include_usage` asks for.
fn is_usage_only(chunk: &Map<String, Value>) -> bool {
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    no_choices && chunk.get("usage").is_some_and(|usage| !usage.is_null())
}

/// A string field of a piece; `null` counts as absent (SGLang sends
/// `"id": null` on continuation pieces).
fn text<'a>(piece: &'a Value, pointer: &str) -> Option<&'a str> {
    piece.pointer(pointer).and_then(Value::as_str)
}

/// Numbers index-less tool-call pieces per choice, as the rule says.
#[derive(Default)]
struct ToolCallIndexer {
    choices: BTreeMap<u64, CallState>,
}

/// The calls opened so far in one choice.
#[derive(Default)]
struct CallState {
    opened: u64,
    current_id: Option<String>,
    current_named: bool,
}

impl ToolCallIndexer {
    fn fill_in(&mut self, chunk: &mut Map<String, Value>) {
        let Some(Value::Array(choices)) = chunk.get_mut("choices") else {
            return;
        };
        for choice in choices {
            let state = self.choices.entry(choice_index(choice)).or_default();
            let pieces = choice
                .pointer_mut("/delta/tool_calls")
                .and_then(Value::as_array_mut);
            for piece in pieces.into_iter().flatten() {
                state.fill_in(piece);
            }
        }
    }
}

impl CallState {
    fn fill_in(&mut self, piece: &mut Value) {
        let id = text(piece, "/id").map(str::to_owned);
        let named = text(piece, "/function/name").is_some();
        let index = match piece.get("index").and_then(Value::as_u64) {
            Some(given) => self.follow(given, id.as_deref(), named),
            None => self.place(id.as_deref(), named),
        };
        let Value::Object(fields) = piece else {
            return;
        };
        fields.entry("index").or_insert(json!(index));
        if id.is_some() && !fields.contains_key("type") {
            fields.insert("type".to_owned(), json!("function"));
        }
    }

    /// The index of a piece that has none: a new id, or a name while the
    /// current call is named, opens the next call; anything else continues.
    fn place(&mut self, id: Option<&str>, named: bool) -> u64 {
        let new_id = id.is_some_and(|id| self.current_id.as_deref() != Some(id));
        let opens = self.opened == 0 || new_id || (named && self.current_named);
        if opens {
            self.opened += 1;
            self.current_id = id.map(str::to_owned);
            self.current_named = named;
        } else {
            self.current_named |= named;
            if let Some(id) = id {
                self.current_id = Some(id.to_owned());
            }
        }
        self.opened - 1
    }

    /// Keeps the count in step with pieces the upstream indexed itself.
    fn follow(&mut self, given: u64, id: Option<&str>, named: bool) -> u64 {
        if given + 1 > self.opened {
            self.opened = given + 1;
            self.current_id = None;
            self.current_named = false;
        }
        if let Some(id) = id {
            self.current_id = Some(id.to_owned());
        }
        self.current_named |= named;
        given
    }
}
