//! State shared between the server task, the request handlers and the test
//! that owns the [`FakeUpstream`](super::FakeUpstream).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::{RecordedRequest, Scenario};

/// Everything the fake remembers. Locks are std mutexes held only for short,
/// non-async sections; poisoning is ignored because the data stays usable.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) defaults: Scenario,
    /// Defaults for requests naming one of these models instead.
    pub(crate) model_defaults: BTreeMap<String, Scenario>,
    requests: Mutex<Vec<RecordedRequest>>,
    fail_counts: Mutex<HashMap<String, u32>>,
    next_id: AtomicU64,
    disconnects: AtomicUsize,
    disconnect_notify: Notify,
    connections: AtomicUsize,
    frames: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(defaults: Scenario, model_defaults: BTreeMap<String, Scenario>) -> Self {
        Shared {
            defaults,
            model_defaults,
            ..Shared::default()
        }
    }

    /// The defaults for a request whose body names `model` (if any).
    pub(crate) fn defaults_for(&self, model: Option<&str>) -> &Scenario {
        model
            .and_then(|m| self.model_defaults.get(m))
            .unwrap_or(&self.defaults)
    }

    pub(crate) fn note_frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn frames_sent(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.requests).clear();
    }

    /// Model names seen in recorded request bodies, in first-seen order.
    pub(crate) fn models_seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for r in lock(&self.requests).iter() {
            if let Some(m) = r.body.get("model").and_then(|m| m.as_str())
                && !seen.iter().any(|s| s == m)
            {
                seen.push(m.to_owned());
            }
        }
        seen
    }

    /// Counts one request against `key` and says whether it should still fail
    /// (the first `fail_times` requests for a key fail).
    pub(crate) fn should_fail(&self, key: &str, fail_times: u32) -> bool {
        let mut counts = lock(&self.fail_counts);
        let seen = counts.entry(key.to_owned()).or_insert(0);
        *seen = seen.saturating_add(1);
        *seen <= fail_times
    }

    /// 1-based id for the next completion.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn note_disconnect(&self) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
        self.disconnect_notify.notify_waiters();
    }

    pub(crate) fn disconnects(&self) -> usize {
        self.disconnects.load(Ordering::SeqCst)
    }

    pub(crate) fn disconnect_notify(&self) -> &Notify {
        &self.disconnect_notify
    }

    pub(crate) fn note_connection(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
