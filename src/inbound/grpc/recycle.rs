//! Stream events' protobuf messages, used again: a message the codec has
//! encoded goes back to a free list, and the next event is decoded into
//! it, its strings and lists keeping their capacity. A chunk of the usual
//! shape then costs no allocation on the gRPC path, as on the facade,
//! where the upstream's bytes are forwarded.
//!
//! Each thread has its own list, and a shared one takes what a thread's
//! list has no room for and gives what it lacks. An event is decoded and
//! encoded in the polls of one HTTP/2 stream's task; most often on one
//! thread, which then never locks. But a burst held for two runtime turns
//! (`inbound/gather.rs`) may be decoded on one worker and encoded on the
//! other, so messages (and the boxes they travel in) pile up on one thread
//! and run out on the other: the shared list evens that out, with a lock
//! only when a thread's own list is empty or full.
//!
//! Bounded: at most [`SPARE_MESSAGES`] messages and as many boxes per
//! thread, [`SHARED_SPARE_MESSAGES`] in the shared list, and only messages whose buffers hold at
//! most [`SPARE_MESSAGE_BYTES`] are kept (a long answer's one large chunk
//! is freed, not kept). The lists are empty until a stream has run.

use crate::proto::v1 as pb;
use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

/// Messages (and boxes) kept per thread: few, so that what one thread
/// encodes reaches a thread that decodes through the shared list rather
/// than waiting, unseen, in the encoder's own.
pub const SPARE_MESSAGES: usize = 8;

/// Messages (and boxes) kept in the shared list: bursts in flight on every
/// thread (`inbound/gather.rs` holds up to 16 chunks before they are
/// encoded).
pub const SHARED_SPARE_MESSAGES: usize = 64;

/// The most string and list capacity, in bytes, a message may hold to be
/// kept (the few hundred bytes of a usual chunk, with room to spare).
pub const SPARE_MESSAGE_BYTES: usize = 4096;

/// Choices and tool calls per choice a kept message may have.
const SPARE_LIST_ITEMS: usize = 4;

// Boxes in a list on purpose: the box's own allocation is what is kept
// (a `ProtoChunk` carries its message boxed).
#[allow(clippy::vec_box)]
#[derive(Default)]
struct Spares {
    /// Encoded messages, their buffers kept, ready to be decoded into.
    messages: Vec<Box<pb::ChatChunk>>,
    /// Boxes whose message was moved out for the codec (holding a default,
    /// which owns nothing), for a message to come back into.
    boxes: Vec<Box<pb::ChatChunk>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::default();
}

/// What the threads' lists spill into and refill from.
static SHARED: Mutex<Spares> = Mutex::new(Spares {
    messages: Vec::new(),
    boxes: Vec::new(),
});

/// Which of the two lists.
#[derive(Clone, Copy)]
enum Kind {
    Message,
    Box,
}

impl Spares {
    #[allow(clippy::vec_box)] // the boxes are what is kept (see `Spares`)
    fn list(&mut self, kind: Kind) -> &mut Vec<Box<pb::ChatChunk>> {
        match kind {
            Kind::Message => &mut self.messages,
            Kind::Box => &mut self.boxes,
        }
    }
}

/// One from the thread's list, else from the shared one.
fn take(kind: Kind) -> Option<Box<pb::ChatChunk>> {
    let local = SPARES
        .try_with(|spares| spares.borrow_mut().list(kind).pop())
        .ok()
        .flatten();
    local.or_else(|| {
        SHARED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .list(kind)
            .pop()
    })
}

/// Into the thread's list, else the shared one, else dropped.
fn keep(kind: Kind, boxed: Box<pb::ChatChunk>) {
    // A thread being torn down has no list: the box is dropped.
    let spilled = SPARES
        .try_with(|spares| {
            let mut spares = spares.borrow_mut();
            let list = spares.list(kind);
            if list.len() < SPARE_MESSAGES {
                list.push(boxed);
                None
            } else {
                Some(boxed)
            }
        })
        .unwrap_or_default();
    if let Some(boxed) = spilled {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        let list = shared.list(kind);
        if list.len() < SHARED_SPARE_MESSAGES {
            list.push(boxed);
        }
    }
}

/// A message to decode an event into: a kept one (its top-level strings
/// emptied, its choices left for [`choice_slot`] to reuse) or a new one.
pub fn message() -> Box<pb::ChatChunk> {
    match take(Kind::Message) {
        Some(mut message) => {
            empty_envelope(&mut message);
            message
        }
        None => Box::default(),
    }
}

/// The message out of its box, for the codec; the box is kept for a
/// message to come back into after it was encoded ([`give_back`]).
pub fn unbox(mut boxed: Box<pb::ChatChunk>) -> pb::ChatChunk {
    let message = std::mem::take(&mut *boxed);
    keep(Kind::Box, boxed);
    message
}

/// A message the codec has encoded, kept for a next event when it is
/// small and a list has room; dropped otherwise.
pub fn give_back(message: pb::ChatChunk) {
    if !worth_keeping(&message) {
        return;
    }
    let mut boxed = take(Kind::Box).unwrap_or_default();
    *boxed = message;
    keep(Kind::Message, boxed);
}

/// A message no longer needed before it was encoded (the event was read
/// another way), kept like an encoded one.
pub fn give_back_boxed(message: Box<pb::ChatChunk>) {
    if worth_keeping(&message) {
        keep(Kind::Message, message);
    }
}

/// The choice at `position` of `choices`, emptied for a new delta: a kept
/// one when the list has it (its strings and tool calls keep their
/// capacity), else a new one pushed. The caller truncates the list to the
/// choices it read.
pub fn choice_slot(choices: &mut Vec<pb::ChoiceDelta>, position: usize) -> &mut pb::ChoiceDelta {
    if position < choices.len() {
        let choice = &mut choices[position];
        empty_choice(choice);
        choice
    } else {
        choices.push(pb::ChoiceDelta::default());
        choices.last_mut().expect("just pushed")
    }
}

/// The tool call at `position` of `calls`, emptied, as [`choice_slot`].
pub fn tool_call_slot(
    calls: &mut Vec<pb::ToolCallDelta>,
    position: usize,
) -> &mut pb::ToolCallDelta {
    if position < calls.len() {
        let call = &mut calls[position];
        call.index = 0;
        call.id.clear();
        call.name.clear();
        call.arguments.clear();
        call.r#type.clear();
        call.extra = None;
        call
    } else {
        calls.push(pb::ToolCallDelta::default());
        calls.last_mut().expect("just pushed")
    }
}

/// The top level emptied; the choices stay for [`choice_slot`].
fn empty_envelope(message: &mut pb::ChatChunk) {
    message.id.clear();
    message.model.clear();
    message.provider.clear();
    message.created = 0;
    message.usage = None;
    message.system_fingerprint.clear();
    message.service_tier.clear();
    message.extra = None;
}

/// What a choice's delta carries, emptied (the tool calls stay for
/// [`tool_call_slot`]).
pub fn empty_delta(choice: &mut pb::ChoiceDelta) {
    choice.role.clear();
    choice.content.clear();
    choice.refusal.clear();
    choice.reasoning_content.clear();
    choice.delta_extra = None;
}

fn empty_choice(choice: &mut pb::ChoiceDelta) {
    empty_delta(choice);
    choice.index = 0;
    choice.finish_reason.clear();
    choice.logprobs = None;
    choice.extra = None;
}

/// Small enough to keep: few choices and tool calls, and little capacity.
/// Carriers (`extra`) and log probabilities are not counted: they are
/// dropped when the message is next used.
fn worth_keeping(message: &pb::ChatChunk) -> bool {
    if message.choices.capacity() > SPARE_LIST_ITEMS {
        return false;
    }
    let mut bytes = message.id.capacity()
        + message.model.capacity()
        + message.provider.capacity()
        + message.system_fingerprint.capacity()
        + message.service_tier.capacity();
    for choice in &message.choices {
        if choice.tool_calls.capacity() > SPARE_LIST_ITEMS {
            return false;
        }
        bytes += choice.role.capacity()
            + choice.content.capacity()
            + choice.refusal.capacity()
            + choice.reasoning_content.capacity()
            + choice.finish_reason.capacity();
        for call in &choice.tool_calls {
            bytes += call.id.capacity()
                + call.name.capacity()
                + call.arguments.capacity()
                + call.r#type.capacity();
        }
    }
    bytes <= SPARE_MESSAGE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(content: &str) -> pb::ChatChunk {
        pb::ChatChunk {
            id: "chatcmpl-1".to_owned(),
            model: "m".to_owned(),
            provider: "p".to_owned(),
            created: 7,
            choices: vec![pb::ChoiceDelta {
                content: content.to_owned(),
                finish_reason: "stop".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Runs on a thread of its own, so other tests' messages do not mix in.
    fn on_own_thread(test: impl FnOnce() + Send + 'static) {
        std::thread::spawn(test).join().unwrap();
    }

    #[test]
    fn an_encoded_message_comes_back_emptied_with_its_buffers() {
        on_own_thread(|| {
            let boxed = Box::new(sample("hello"));
            let message = unbox(boxed);
            let content = message.choices[0].content.as_ptr();
            give_back(message);
            let mut again = message_or_panic();
            assert_eq!(again.id, "");
            assert_eq!(again.created, 0);
            // The choices are left for `choice_slot`, which empties them.
            let choice = choice_slot(&mut again.choices, 0);
            assert_eq!(choice.content, "");
            assert_eq!(choice.finish_reason, "");
            assert_eq!(choice.content.as_ptr(), content, "the same buffer");
        });
    }

    fn message_or_panic() -> Box<pb::ChatChunk> {
        let kept = SPARES.with(|spares| spares.borrow().messages.len());
        assert_eq!(kept, 1);
        message()
    }

    #[test]
    fn a_large_message_is_not_kept() {
        on_own_thread(|| {
            give_back(sample(&"x".repeat(SPARE_MESSAGE_BYTES + 1)));
            assert_eq!(SPARES.with(|spares| spares.borrow().messages.len()), 0);
            give_back(sample("small"));
            assert_eq!(SPARES.with(|spares| spares.borrow().messages.len()), 1);
        });
    }

    #[test]
    fn the_lists_are_bounded_and_spill_into_the_shared_one() {
        on_own_thread(|| {
            for _ in 0..SPARE_MESSAGES + 5 {
                give_back(sample("a"));
            }
            assert_eq!(
                SPARES.with(|spares| spares.borrow().messages.len()),
                SPARE_MESSAGES
            );
            // Another thread finds what this one had no room for.
            let found = std::thread::spawn(|| take(Kind::Message).is_some())
                .join()
                .unwrap();
            assert!(found, "the spilled messages are shared");
        });
    }

    #[test]
    fn slots_past_the_kept_ones_are_new() {
        let mut choices = vec![sample("a").choices.remove(0)];
        choice_slot(&mut choices, 1).content.push('b');
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[0].content, "a", "position 0 untouched");
        let mut calls = Vec::new();
        tool_call_slot(&mut calls, 0).name.push('f');
        tool_call_slot(&mut calls, 0);
        assert_eq!(calls[0].name, "", "emptied when used again");
    }
}
