//! What a pod spent while it counted alone (`on_unavailable = "local"`,
//! the `[shared]` store away), handed to the store once it answers again,
//! so the fleet's count does not forget the calls made during an outage.
//!
//! Each budget's unsent spend is pushed under an id of its own and added
//! once per id (`add` in `shared/budget.lua`): a push whose answer is lost
//! is sent again with the same id. Spend counted in a window that is over
//! by the time the store answers (on the store's clock) is dropped: it
//! would count against a window it was not spent in.

use super::shared::shared_windows;
use super::{Amounts, micros};
use crate::config::budgets::BudgetConfig;
use crate::shared::SharedStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Spend counted alone, per budget name, waiting for the store.
#[derive(Debug, Default)]
pub(super) struct AloneSpend {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_budget: Mutex<HashMap<String, Unsent>>,
    /// Whether anything waits: read by every shared call, without the lock.
    waiting: AtomicBool,
}

#[derive(Debug, Default)]
struct Unsent {
    /// The window it was counted in (unix seconds, this pod's clock).
    start: i64,
    /// Counted since the last push began.
    counted: Amounts,
    /// Sent (or being sent) under an id, not yet confirmed.
    sending: Option<(String, Amounts)>,
}

impl AloneSpend {
    /// Notes `spent` on budget `name`, counted alone in the window starting
    /// at `start` (unix seconds); a new window forgets the last one's.
    pub(super) fn count(&self, name: &str, start: i64, spent: Amounts) {
        let mut by_budget = self.inner.lock();
        let unsent = by_budget.entry(name.to_owned()).or_default();
        if unsent.start != start {
            *unsent = Unsent {
                start,
                ..Unsent::default()
            };
        }
        unsent.counted = unsent.counted.plus(spent);
        self.inner.waiting.store(true, Ordering::Relaxed);
    }

    /// Hands what waits to `store` in the background, for the budgets
    /// configured now (`configs`, asked for only then); does nothing,
    /// without a lock, when nothing waits. Called once the store has
    /// answered a call. Returns what is sent for the first time: budget
    /// name, window start (the store's clock) and amounts.
    pub(super) fn push(
        &self,
        store: &Arc<SharedStore>,
        configs: impl FnOnce() -> Vec<BudgetConfig>,
    ) -> Vec<(String, i64, Amounts)> {
        let mut first_sent = Vec::new();
        if !self.inner.waiting.swap(false, Ordering::Relaxed) {
            return first_sent;
        }
        let configs = configs();
        let mut pushes = Vec::new();
        {
            let mut by_budget = self.inner.lock();
            // A budget removed by a reload has nowhere to go.
            by_budget.retain(|name, _| configs.iter().any(|config| &config.name == name));
            for (name, unsent) in by_budget.iter_mut() {
                if unsent.sending.is_none() && unsent.counted != Amounts::default() {
                    let id = uuid::Uuid::new_v4().simple().to_string();
                    let amounts = std::mem::take(&mut unsent.counted);
                    first_sent.push((name.clone(), unsent.start, amounts));
                    unsent.sending = Some((id, amounts));
                }
                if let Some((id, amounts)) = &unsent.sending {
                    let config = configs.iter().find(|config| &config.name == name);
                    if let Some(config) = config {
                        pushes.push((config.clone(), unsent.start, id.clone(), *amounts));
                    }
                }
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return first_sent;
        };
        let inner = Arc::clone(&self.inner);
        let store = Arc::clone(store);
        runtime.spawn(async move {
            for (config, start, id, amounts) in pushes {
                let [window] = &shared_windows(&store, std::slice::from_ref(&config))[..] else {
                    continue;
                };
                let delivered = window.start != start
                    || store
                        .add_alone_spend(window, &id, amounts.tokens, micros(amounts.usd))
                        .await
                        .is_ok();
                if delivered {
                    inner.confirm(&config.name, &id);
                } else {
                    // Sent again, under the same id, after the next call
                    // the store answers.
                    inner.waiting.store(true, Ordering::Relaxed);
                }
            }
        });
        first_sent
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Unsent>> {
        self.by_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The push under `id` is in the store (or its window is over).
    fn confirm(&self, name: &str, id: &str) {
        let mut by_budget = self.lock();
        if let Some(unsent) = by_budget.get_mut(name)
            && unsent.sending.as_ref().is_some_and(|(sent, _)| sent == id)
        {
            unsent.sending = None;
            if unsent.counted != Amounts::default() {
                self.waiting.store(true, Ordering::Relaxed);
            }
        }
    }
}
