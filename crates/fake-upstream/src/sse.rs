//! Turns an [`Answer`] into the streamed SSE body: first a flat script of
//! frames and pauses (pure, so the misbehaviours are easy to reason about),
//! then a byte stream that plays the script with real delays, one body frame
//! per SSE frame (or per `events_per_write` frames, or per `split_bytes`
//! piece).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;

use super::Scenario;
use super::guard::DisconnectGuard;
use super::reply::{Answer, Content, ToolCall};
use super::wire::{Delta, FunctionDelta, ToolCallDelta};

/// Comment OpenRouter sends while a request is queued.
const PROCESSING_COMMENT: &str = ": OPENROUTER PROCESSING";

/// Stands for a chunk's send time in `stamp` scripts; replaced as the frame
/// is played, since the script is written before any pause is taken.
const STAMP: &str = "@stamp@";

/// One step of the streamed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Pause(Duration),
    /// Nothing more, and the body stays open until the client goes away.
    Stall,
    /// Text of one complete SSE frame, line ends already applied.
    Frame(String),
}

/// Writes the SSE frames; knows the line ending.
struct Script {
    steps: Vec<Step>,
    eol: &'static str,
    data_frames: usize,
    first_delay: Duration,
    chunk_delay: Duration,
    comments: bool,
}

impl Script {
    /// An empty script with the scenario's line ends and pacing.
    fn new(scenario: &Scenario) -> Script {
        Script {
            steps: Vec::new(),
            eol: if scenario.crlf { "\r\n" } else { "\n" },
            data_frames: 0,
            first_delay: Duration::from_millis(scenario.first_chunk_delay_ms),
            chunk_delay: Duration::from_millis(scenario.chunk_delay_ms),
            comments: scenario.comments,
        }
    }

    fn data(&mut self, payload: &str) {
        let pause = if self.data_frames == 0 {
            self.first_delay
        } else {
            self.chunk_delay
        };
        if !pause.is_zero() {
            self.steps.push(Step::Pause(pause));
        }
        self.data_frames += 1;
        let eol = self.eol;
        self.steps
            .push(Step::Frame(format!("data: {payload}{eol}{eol}")));
    }

    fn comment(&mut self, text: &str) {
        let eol = self.eol;
        self.steps.push(Step::Frame(format!("{text}{eol}{eol}")));
    }
}

/// The whole streamed body for `answer` as a script of frames and pauses.
///
/// "Content chunks" (what `cut_after`, `stall_after`, `malformed_after`
/// and `error_frame_after` count) are the text chunks, or for tool calls every
/// tool-call delta; reasoning deltas are not counted.
pub(crate) fn script<'a>(
    answer: &'a Answer,
    scenario: &Scenario,
    include_usage: bool,
) -> Vec<Step> {
    let mut s = Script::new(scenario);
    if s.comments {
        s.comment(PROCESSING_COMMENT);
    }
    let mut role_sent = false;
    let mut with_role = |mut delta: Delta<'a>| {
        if !role_sent {
            delta.role = Some("assistant");
            role_sent = true;
        }
        delta
    };
    for piece in &answer.reasoning {
        let delta = with_role(Delta {
            reasoning_content: Some(piece),
            ..Delta::default()
        });
        s.data(&answer.chunk_json(delta, None));
    }
    let deltas: Vec<Delta<'a>> = match &answer.content {
        Content::Text(chunks) => chunks
            .iter()
            .map(|c| {
                with_role(Delta {
                    content: Some(Some(if scenario.stamp { STAMP } else { c })),
                    ..Delta::default()
                })
            })
            .collect(),
        Content::ToolCalls(calls) => {
            let mut out = Vec::new();
            for (index, call) in calls.iter().enumerate() {
                let mut head = with_role(tool_delta(index, Some(call), String::new()));
                if head.role.is_some() {
                    // OpenAI's first tool-call delta carries `"content":null`.
                    head.content = Some(None);
                }
                out.push(head);
                for piece in &call.argument_pieces {
                    out.push(tool_delta(index, None, piece.clone()));
                }
            }
            out
        }
    };
    for sent in 0..=deltas.len() {
        if scenario.cut_after == Some(sent) {
            return s.steps;
        }
        if scenario.stall_after == Some(sent) {
            s.steps.push(Step::Stall);
            return s.steps;
        }
        if scenario.error_frame_after == Some(sent) {
            s.data(r#"{"error":{"message":"fake upstream error frame","code":502}}"#);
            return s.steps;
        }
        if scenario.malformed_after == Some(sent) {
            s.data("{not json");
        }
        if let Some(delta) = deltas.get(sent) {
            if s.comments {
                s.comment(if sent % 2 == 0 {
                    ":"
                } else {
                    PROCESSING_COMMENT
                });
            }
            s.data(&answer.chunk_json(delta.clone(), None));
        }
    }
    s.data(&answer.chunk_json(Delta::default(), Some(answer.finish_reason)));
    if include_usage && !scenario.no_usage {
        s.data(&answer.usage_chunk_json());
    }
    if !scenario.no_done {
        s.data("[DONE]");
    }
    s.steps
}

/// The streamed body for a scenario's `raw_events`: one data frame per
/// event, a string as its text verbatim, anything else as compact JSON.
pub(crate) fn raw_script(events: &[Value], scenario: &Scenario) -> Vec<Step> {
    let mut s = Script::new(scenario);
    for event in events {
        match event {
            Value::String(text) => s.data(text),
            other => s.data(&other.to_string()),
        }
    }
    s.steps
}

/// A one-call tool-call delta; `head` (id, type, name) only on the first.
fn tool_delta<'a>(index: usize, head: Option<&'a ToolCall>, arguments: String) -> Delta<'a> {
    Delta {
        tool_calls: Some(vec![ToolCallDelta {
            index: Some(index),
            id: head.map(|c| c.id.as_str()),
            kind: head.map(|_| "function"),
            function: FunctionDelta {
                name: head.map(|c| c.name),
                arguments,
            },
        }]),
        ..Delta::default()
    }
}

/// How the played frames are written: in how many body frames, and stamped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writes {
    /// Body frames of at most this many bytes (`None`: whole).
    pub(crate) split_bytes: Option<usize>,
    /// SSE frames joined into one body frame when no pause separates them.
    pub(crate) events_per_write: usize,
    /// Replace each frame's send-time placeholder with the time now.
    pub(crate) stamp: bool,
}

impl Default for Writes {
    fn default() -> Self {
        Writes {
            split_bytes: None,
            events_per_write: 1,
            stamp: false,
        }
    }
}

/// Plays `steps` as body frames, honouring pauses, `events_per_write` and
/// `split_bytes`. The guard counts a client disconnect if the stream is
/// dropped before its end.
pub(crate) fn body_stream(
    steps: Vec<Step>,
    writes: Writes,
    guard: DisconnectGuard,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let piece = writes.split_bytes.unwrap_or(usize::MAX).max(1);
    let per_write = writes.events_per_write.max(1);
    async_stream::stream! {
        // Frames waiting to go out together, and how many.
        let mut batch = String::new();
        let mut batched = 0;
        for step in steps {
            let wait = match step {
                Step::Frame(text) => {
                    batch.push_str(&if writes.stamp { stamped(text) } else { text });
                    batched += 1;
                    if batched < per_write {
                        continue;
                    }
                    None
                }
                wait => Some(wait),
            };
            // A full batch, or a pause or stall ahead: what waits goes out first.
            for bytes in pieces(std::mem::take(&mut batch), piece) {
                guard.note_frame();
                yield Ok(bytes);
            }
            batched = 0;
            match wait {
                Some(Step::Pause(d)) => tokio::time::sleep(d).await,
                // The guard stays armed: the client's leaving is counted.
                Some(Step::Stall) => std::future::pending::<()>().await,
                _ => {}
            }
        }
        for bytes in pieces(batch, piece) {
            guard.note_frame();
            yield Ok(bytes);
        }
        guard.disarm();
    }
}

/// `text` cut into body frames of at most `piece` bytes (none when empty).
fn pieces(text: String, piece: usize) -> impl Iterator<Item = Bytes> {
    let bytes = Bytes::from(text);
    (0..bytes.len())
        .step_by(piece)
        .map(move |start| bytes.slice(start..bytes.len().min(start.saturating_add(piece))))
}

/// `frame` with its send-time placeholder, if any, replaced by the time now.
fn stamped(frame: String) -> String {
    if !frame.contains(STAMP) {
        return frame;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    frame.replace(STAMP, &nanos.to_string())
}
