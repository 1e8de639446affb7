//! Detects responses the client abandoned before the fake finished them.
//!
//! hyper drops the in-flight handler future, or the response body stream, when
//! the connection goes away. A guard living inside that future/stream sees the
//! drop; if it was not disarmed first (the response completed), it counts a
//! client disconnect.

use std::sync::Arc;

use super::state::Shared;

pub(crate) struct DisconnectGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl DisconnectGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        DisconnectGuard {
            shared,
            armed: true,
        }
    }

    /// One body frame was handed to hyper (it asked for it: backpressure
    /// shows as frames not being asked for).
    pub(crate) fn note_frame(&self) {
        self.shared.note_frame();
    }

    /// The response was fully handed over; dropping is no longer a disconnect.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!("fake upstream: client went away before the response finished");
            self.shared.note_disconnect();
        }
    }
}
