//! The time a call may take: the caller's deadline (`grpc-timeout`) and our
//! own total for the call, whichever ends first. Which one ended decides the
//! error: the caller's is DEADLINE_EXCEEDED as the caller expects; ours is a
//! `Timeout` that says so.

use super::retry::Deadline;
use crate::error::{Error, TimeoutKind};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    started: Instant,
    caller: Option<Instant>,
    total: Instant,
}

impl Bounds {
    pub fn new(started: Instant, caller: Option<Instant>, total: std::time::Duration) -> Self {
        Bounds {
            started,
            caller,
            total: started + total,
        }
    }

    /// The bounds until the first byte of a stream: `first_byte` is when
    /// the caller stops waiting for it (an SDK's read timeout), if it said.
    pub fn until_first_byte(self, first_byte: Option<Instant>) -> Bounds {
        let caller = match (self.caller, first_byte) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Bounds { caller, ..self }
    }

    /// When the call ends, and whether the caller's deadline is what ends it.
    pub fn deadline(&self) -> Deadline {
        Deadline {
            end: self.end(),
            set_by_caller: self.caller.is_some(),
        }
    }

    pub fn end(&self) -> Instant {
        match self.caller {
            Some(caller) => caller.min(self.total),
            None => self.total,
        }
    }

    /// The error for having reached [`Bounds::end`].
    pub fn expired(&self, provider: &str, stage: &'static str) -> Error {
        let elapsed = Instant::now().saturating_duration_since(self.started);
        match self.caller {
            Some(caller) if caller <= self.total => Error::DeadlineExceeded { stage, elapsed },
            _ => Error::Timeout {
                provider: provider.to_owned(),
                kind: TimeoutKind::Total,
                after: elapsed,
            },
        }
    }
}
