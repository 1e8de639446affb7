//! Upstream stream events → [`ChatChunk`]s, and the judgement of when a
//! stream is complete.
//!
//! Reading: each event's JSON is kept as the upstream sent it; a borrowed,
//! lenient view ([`AnswerView`]) reads the little the sidecar needs.
//!
//! Completion is judged per choice: a stream is complete after `[DONE]`
//! (the caller of this reader sees that), or when every choice that
//! appeared has a finish reason. A choice that never appears does not make
//! a stream incomplete; one that appeared without finishing does.
//!
//! Repairs (the only edits made to an event): streamed tool-call pieces
//! without an `index` (Gemini and Ollama send them so) get one, and the
//! piece that opens a call gets `"type": "function"` if it has none
//! (OpenAI's SDK stream helpers refuse a call without it). Without an
//! index, a piece with a new `id`, or with a `function.name` while the
//! current call already has a name, opens the next call of its choice; a
//! piece with neither continues the last opened call. Calls are never
//! merged.

use crate::model::sanitize::without_lone_surrogates;
use crate::model::view::{AnswerView, is_null};
use crate::model::{ChatChunk, Identity, ProtoChunk, ProtoChunkDecoder, Usage};
use bytes::Bytes;
use serde_json::Value;
use std::ops::Range;

/// Why an event cannot be passed on as a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum EventProblem {
    /// Not a JSON object.
    Malformed(String),
    /// An `{"error": ...}` event: the upstream failed midway.
    InBand(Value),
    /// A choice ended with `finish_reason: "error"`.
    FinishError,
}

/// The state of one stream: which choices appeared and finished, and the
/// tool calls each has opened.
#[derive(Debug, Default)]
pub struct StreamReader {
    choices: Vec<ChoiceState>,
    identity_seen: bool,
}

#[derive(Debug)]
struct ChoiceState {
    index: u32,
    finished: bool,
    /// Tool calls opened so far: the next index-less call gets this index.
    calls: u32,
    /// The call that index-less pieces continue.
    current: Option<CurrentCall>,
}

#[derive(Debug)]
struct CurrentCall {
    index: u32,
    id: Option<String>,
    named: bool,
}

/// An edit to one tool-call piece: at `choices[choice].delta.tool_calls[call]`.
#[derive(Debug)]
struct Repair {
    choice: usize,
    call: usize,
    index: Option<u32>,
    add_type: bool,
}

impl StreamReader {
    /// Reads one event's data (its JSON text).
    pub fn read(&mut self, data: String) -> Result<ChatChunk, EventProblem> {
        self.read_for(Bytes::from(data), None)
    }

    /// Reads one event's data, decoding it into protobuf in the same pass
    /// when `proto` is given (a gRPC caller) and the event has the usual
    /// shape; otherwise as [`StreamReader::read`].
    pub fn read_for(
        &mut self,
        mut event: Bytes,
        proto: Option<ProtoChunkDecoder>,
    ) -> Result<ChatChunk, EventProblem> {
        // Multi-line `data:` arrives joined by line breaks. A JSON string
        // cannot hold a raw one, so each is whitespace between tokens: a
        // space keeps the event on one line for the caller (same length).
        if memchr::memchr2(b'\n', b'\r', &event).is_some() {
            let mut joined = event.to_vec();
            for byte in &mut joined {
                if matches!(*byte, b'\n' | b'\r') {
                    *byte = b' ';
                }
            }
            event = Bytes::from(joined);
        }
        let Ok(data) = std::str::from_utf8(&event) else {
            return Err(EventProblem::Malformed(
                "a stream event is not UTF-8".to_owned(),
            ));
        };
        if let Some(decoded) = proto.and_then(|decode| decode(data)) {
            return self.judge_proto(decoded, event);
        }
        if !data.trim_start().starts_with('{') {
            return Err(EventProblem::Malformed(
                "a stream event is not a JSON object".to_owned(),
            ));
        }
        let malformed = |error: serde_json::Error| {
            EventProblem::Malformed(format!("a stream event is not a chat chunk: {error}"))
        };
        let (mut chunk, repairs) = match serde_json::from_str::<AnswerView>(data) {
            Ok(view) => self.facts(view, data)?,
            // A lone surrogate (a character split across events by a
            // UTF-16 upstream) is read as U+FFFD; the bytes pass as sent.
            Err(error) => {
                let readable = without_lone_surrogates(data).unwrap_or_else(|| data.to_owned());
                match serde_json::from_str::<AnswerView>(&readable) {
                    Ok(view) => self.facts(view, &readable)?,
                    // A member the view reads given twice (`"id"` twice):
                    // read as a JSON value reads it, the last one wins.
                    Err(_) => {
                        let canonical = canonical(&readable).ok_or_else(|| malformed(error))?;
                        let view =
                            serde_json::from_str::<AnswerView>(&canonical).map_err(malformed)?;
                        let (mut chunk, repairs) = self.facts(view, &canonical)?;
                        // Its offsets are the canonical text's, not the event's.
                        chunk.null_usage = None;
                        (chunk, repairs)
                    }
                }
            }
        };
        if repairs.is_empty() {
            chunk.json = event;
        } else {
            let readable = without_lone_surrogates(data).unwrap_or_else(|| data.to_owned());
            let repaired = repair(&readable, &repairs)?;
            chunk.null_usage = null_usage_of(&repaired);
            chunk.json = Bytes::from(repaired.into_bytes());
        }
        Ok(chunk)
    }

    /// What the sidecar reads from one event, and the repairs it needs.
    /// `text` is the event the view reads (its byte offsets are the
    /// event's).
    fn facts(
        &mut self,
        view: AnswerView<'_>,
        text: &str,
    ) -> Result<(ChatChunk, Vec<Repair>), EventProblem> {
        if let Some(error) = view.error.filter(|raw| !is_null(raw)) {
            return Err(EventProblem::InBand(
                serde_json::from_str(error.get()).unwrap_or(Value::Null),
            ));
        }
        let mut chunk = ChatChunk::default();
        let mut repairs = Vec::new();
        let mut any_choice = false;
        for (position, choice) in view.choices.0.iter().enumerate() {
            let Some(choice) = choice.0.as_ref() else {
                continue;
            };
            any_choice = true;
            let index = choice.index.0.unwrap_or(position as u32);
            let state = self.choice(index);
            // Ollama and SGLang send `""` on every unfinished chunk.
            if let Some(reason) = choice.finish_reason.as_deref().filter(|r| !r.is_empty()) {
                if reason == "error" {
                    return Err(EventProblem::FinishError);
                }
                state.finished = true;
                chunk.finish_reasons.push((index, reason.to_owned()));
            }
            let Some(delta) = choice.delta.0.as_ref() else {
                continue;
            };
            chunk.output_bytes += delta.output_bytes();
            for (call, piece) in delta.tool_calls.0.iter().enumerate() {
                if let Some(piece) = piece.0.as_ref() {
                    let (index, add_type) = state.place(PieceFacts {
                        index: piece.index.0,
                        id: piece.id.as_deref(),
                        named: piece.name().is_some_and(|name| !name.is_empty()),
                        typed: piece.kind.0.is_some(),
                    });
                    if index.is_some() || add_type {
                        repairs.push(Repair {
                            choice: position,
                            call,
                            index,
                            add_type,
                        });
                    }
                }
            }
        }
        chunk.no_choices = !any_choice;
        if let Some(raw) = view.usage.filter(|raw| is_null(raw)) {
            chunk.null_usage = null_member(text, raw.get(), "usage");
        }
        chunk.usage = view
            .usage_object()
            .and_then(|raw| Usage::from_json_text(raw.get()));
        if !self.identity_seen && !view.model.is_empty() {
            self.identity_seen = true;
            chunk.identity = Some(Box::new(Identity {
                id: view.id.as_deref().unwrap_or_default().to_owned(),
                model: view.model.as_deref().unwrap_or_default().to_owned(),
            }));
        }
        Ok((chunk, repairs))
    }

    /// Judges an event the gRPC edge's decoder read: the same facts as
    /// [`StreamReader::facts`] reads through the view, with the repairs
    /// made to the protobuf message instead of the JSON text.
    fn judge_proto(
        &mut self,
        decoded: ProtoChunk,
        event: Bytes,
    ) -> Result<ChatChunk, EventProblem> {
        let ProtoChunk {
            mut message,
            unindexed,
            usage,
        } = decoded;
        let mut chunk = ChatChunk {
            usage,
            no_choices: message.choices.is_empty(),
            ..ChatChunk::default()
        };
        for (position, choice) in message.choices.iter_mut().enumerate() {
            let state = self.choice(choice.index);
            // Ollama and SGLang send `""` on every unfinished chunk.
            if !choice.finish_reason.is_empty() {
                if choice.finish_reason == "error" {
                    return Err(EventProblem::FinishError);
                }
                state.finished = true;
                chunk
                    .finish_reasons
                    .push((choice.index, choice.finish_reason.clone()));
            }
            chunk.output_bytes += choice.content.len()
                + choice.refusal.len()
                + choice.reasoning_content.len()
                + choice
                    .tool_calls
                    .iter()
                    .map(|call| call.arguments.len())
                    .sum::<usize>();
            for (call, piece) in choice.tool_calls.iter_mut().enumerate() {
                let indexed = !unindexed.contains(&(position, call));
                let (index, add_type) = state.place(PieceFacts {
                    index: indexed.then_some(piece.index),
                    id: Some(piece.id.as_str()),
                    named: !piece.name.is_empty(),
                    typed: !piece.r#type.is_empty(),
                });
                if let Some(index) = index {
                    piece.index = index;
                }
                if add_type {
                    "function".clone_into(&mut piece.r#type);
                }
            }
        }
        if !self.identity_seen && !message.model.is_empty() {
            self.identity_seen = true;
            chunk.identity = Some(Box::new(Identity {
                id: message.id.clone(),
                model: message.model.clone(),
            }));
        }
        chunk.json = event;
        chunk.proto = Some(message);
        Ok(chunk)
    }

    /// Every choice that appeared has finished (and at least one appeared).
    pub fn all_choices_finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|choice| choice.finished)
    }

    /// The choices that appeared and did not finish, for error messages.
    pub fn unfinished_choices(&self) -> Vec<u32> {
        self.choices
            .iter()
            .filter(|choice| !choice.finished)
            .map(|choice| choice.index)
            .collect()
    }

    fn choice(&mut self, index: u32) -> &mut ChoiceState {
        let position = match self.choices.iter().position(|c| c.index == index) {
            Some(position) => position,
            None => {
                self.choices.push(ChoiceState {
                    index,
                    finished: false,
                    calls: 0,
                    current: None,
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[position]
    }
}

/// What placing a tool-call piece needs from it, however it was read.
struct PieceFacts<'a> {
    index: Option<u32>,
    id: Option<&'a str>,
    /// It has a non-empty `function.name`.
    named: bool,
    /// It has a `type`.
    typed: bool,
}

impl ChoiceState {
    /// Which call a piece belongs to; returns the index to write when the
    /// piece has none, and whether it opens a call without a `type`.
    fn place(&mut self, piece: PieceFacts) -> (Option<u32>, bool) {
        let id = piece.id.filter(|id| !id.is_empty());
        let name = piece.named;
        let add_type = id.is_some() && !piece.typed;
        let (index, missing) = match piece.index {
            Some(index) => (index, false),
            None => {
                let opens = match &self.current {
                    None => true,
                    // An id names its call: the same id continues it,
                    // even when the upstream repeats the name.
                    Some(current) => match id {
                        Some(id) => current.id.as_deref() != Some(id),
                        None => name && current.named,
                    },
                };
                let index = if opens {
                    self.calls
                } else {
                    self.current.as_ref().map_or(0, |current| current.index)
                };
                (index, true)
            }
        };
        // An upstream may send any index: never overflow on u32::MAX.
        self.calls = self.calls.max(index.saturating_add(1));
        match &mut self.current {
            Some(current) if current.index == index => {
                if let Some(id) = id {
                    current.id = Some(id.to_owned());
                }
                current.named |= name;
            }
            _ => {
                self.current = Some(CurrentCall {
                    index,
                    id: id.map(str::to_owned),
                    named: name,
                });
            }
        }
        (missing.then_some(index), add_type)
    }
}

/// The event decoded as a JSON value and written again (duplicate names
/// collapse to the last); `None` when it is not JSON at all.
fn canonical(text: &str) -> Option<String> {
    serde_json::to_string(&serde_json::from_str::<Value>(text).ok()?).ok()
}

/// Applies the repairs to the event (rare: decoding it whole is fine).
fn repair(data: &str, repairs: &[Repair]) -> Result<String, EventProblem> {
    let mut event: Value = serde_json::from_str(data)
        .map_err(|error| EventProblem::Malformed(format!("a stream event is invalid: {error}")))?;
    for repair in repairs {
        let piece = event
            .get_mut("choices")
            .and_then(|choices| choices.get_mut(repair.choice))
            .and_then(|choice| choice.get_mut("delta"))
            .and_then(|delta| delta.get_mut("tool_calls"))
            .and_then(|calls| calls.get_mut(repair.call))
            .and_then(Value::as_object_mut);
        if let Some(piece) = piece {
            if let Some(index) = repair.index {
                piece.shift_insert(0, "index".to_owned(), Value::from(index));
            }
            if repair.add_type {
                piece.insert("type".to_owned(), Value::from("function"));
            }
        }
    }
    serde_json::to_string(&event)
        .map_err(|error| EventProblem::Malformed(format!("a stream event is invalid: {error}")))
}

fn null_usage_of(text: &str) -> Option<Range<usize>> {
    let view: AnswerView = serde_json::from_str(text).ok()?;
    let raw = view.usage.filter(|raw| is_null(raw))?;
    null_member(text, raw.get(), "usage")
}

/// The byte range of the top-level member `"key": <value>` in `object`,
/// with the comma that separates it from its neighbour, given `value` (a
/// slice of `object`). `None` when the member is not written plainly (an
/// escaped key): the member then stays.
fn null_member(object: &str, value: &str, key: &str) -> Option<Range<usize>> {
    let bytes = object.as_bytes();
    let value_start = (value.as_ptr() as usize).checked_sub(object.as_ptr() as usize)?;
    let value_end = value_start + value.len();
    let is_space = |b: &u8| b" \t\r\n".contains(b);
    let before = |end: usize| bytes[..end].iter().rposition(|b| !is_space(b));
    let colon = before(value_start)?;
    (bytes[colon] == b':').then_some(())?;
    let key_end = before(colon)? + 1;
    let quoted = format!("\"{key}\"");
    let key_start = key_end.checked_sub(quoted.len())?;
    (object.get(key_start..key_end)? == quoted).then_some(())?;
    let opener = before(key_start)?;
    match bytes[opener] {
        // `, "usage": null`: take the comma before it.
        b',' => Some(opener..value_end),
        // `{"usage": null, ...}`: take the comma after it, if any.
        b'{' => {
            let after = bytes[value_end..]
                .iter()
                .position(|b| !is_space(b))
                .map_or(value_end, |offset| value_end + offset);
            match bytes.get(after) {
                Some(b',') => Some(key_start..after + 1),
                _ => Some(key_start..value_end),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
