//! Budgets the whole fleet holds together (`crate::budget`), in the
//! shared store (`budget.lua`): per budget and window a hash of what was
//! spent and what calls in flight hold, and the holds themselves, each
//! under its call's id and expiring with the call's bounds. A call is
//! checked and reserved on every budget it falls under in one round trip,
//! and settled (or, when the reservation's answer was lost, undone) under
//! its id; a hold nobody settles (a pod killed) is released when it
//! expires. Windows are reckoned on the store's clock (`clock.rs`).

use super::store::{SharedStore, Unreachable};
use crate::config::UnavailableMode;
use std::time::Duration;

/// One budget's window as the store keeps it, for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedWindow {
    /// The window's hash (see [`SharedStore::budget_key`]); its holds are
    /// under `<key>:holds` and `<key>:held`.
    pub key: String,
    /// Tokens per window (`None`: no token limit).
    pub tokens_limit: Option<u64>,
    /// Millionths of a US dollar per window (`None`: no USD limit).
    pub usd_limit_micros: Option<i64>,
    /// When the window starts (unix seconds, the store's clock).
    pub start: i64,
    /// When the window ends (unix seconds): the keys live a day past it.
    pub end: i64,
}

/// The store's answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Held on every window: each one's tokens and micro-USD used (spent
    /// and held), this call's included.
    Held(Vec<(u64, i64)>),
    /// Refused by the window at `index`: over its tokens (`usd` false) or
    /// its dollars, of which `used` were spent or held before.
    Refused { index: usize, usd: bool, used: i64 },
    /// Nothing done: some window does not hold the store's now (the pod's
    /// guess of the store's clock was off, or a window just ended). Ask
    /// again with the windows holding [`SharedStore::now`].
    WindowsMoved,
}

/// A day past a window's end, the store forgets it.
const KEPT_PAST_END_S: i64 = 86_400;

impl SharedStore {
    /// The key of budget `name`'s window starting at `start` (unix
    /// seconds). One hash slot for every budget (the braces), so a call's
    /// windows can be reserved together on a cluster too.
    pub fn budget_key(&self, name: &str, start: i64) -> String {
        format!("{}:{{budgets}}:{name}:{start}", self.prefix)
    }

    /// Now on the store's clock as this pod last saw it: unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now_ms().div_euclid(1000)
    }

    /// Refuse calls while the store is away (`on_unavailable = "closed"`).
    pub fn fails_closed(&self) -> bool {
        self.on_unavailable == UnavailableMode::Closed
    }

    /// Reserves `tokens` and `usd_micros` for call `id` on every window, or
    /// on none; the hold expires after `hold_for` unless settled before.
    pub async fn reserve_budgets(
        &self,
        windows: &[SharedWindow],
        id: &str,
        hold_for: Duration,
        tokens: u64,
        usd_micros: i64,
    ) -> Result<Reserved, Unreachable> {
        let hold_ms = i64::try_from(hold_for.as_millis()).unwrap_or(i64::MAX);
        let mut args = vec![
            expiry(windows).to_string(),
            id.to_owned(),
            hold_ms.to_string(),
            tokens.to_string(),
            usd_micros.to_string(),
        ];
        for window in windows {
            let tokens_limit = window
                .tokens_limit
                .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
            args.push(window.start.to_string());
            args.push(window.end.to_string());
            args.push(tokens_limit.to_string());
            args.push(window.usd_limit_micros.unwrap_or(-1).to_string());
        }
        let answer = self.budget("reserve", &keys(windows), &args).await?;
        match answer.first() {
            Some(-1) => Ok(Reserved::WindowsMoved),
            Some(0) => Ok(Reserved::Held(
                answer[1..]
                    .chunks_exact(2)
                    .map(|pair| (u64::try_from(pair[0]).unwrap_or(0), pair[1]))
                    .collect(),
            )),
            Some(&index) => Ok(Reserved::Refused {
                index: usize::try_from(index - 1).unwrap_or(0),
                usd: answer.get(1) == Some(&2),
                used: answer.get(2).copied().unwrap_or(0),
            }),
            None => Err(Unreachable),
        }
    }

    /// Releases call `id`'s hold on `windows` (unless it expired already)
    /// and adds what it spent; with 0 and 0, undoes a reservation whose
    /// answer was lost.
    pub async fn settle_budgets(
        &self,
        windows: &[SharedWindow],
        id: &str,
        tokens: u64,
        usd_micros: i64,
    ) -> Result<(), Unreachable> {
        let args = [
            expiry(windows).to_string(),
            id.to_owned(),
            tokens.to_string(),
            usd_micros.to_string(),
        ];
        self.budget("settle", &keys(windows), &args).await.map(drop)
    }

    /// Adds `tokens` and `usd_micros` that a pod spent while it counted
    /// alone to `window`'s spend: once per `id`, however often it is sent.
    pub async fn add_alone_spend(
        &self,
        window: &SharedWindow,
        id: &str,
        tokens: u64,
        usd_micros: i64,
    ) -> Result<(), Unreachable> {
        let args = [
            expiry(std::slice::from_ref(window)).to_string(),
            id.to_owned(),
            tokens.to_string(),
            usd_micros.to_string(),
        ];
        self.budget("add", &triple(&window.key), &args)
            .await
            .map(drop)
    }

    /// Per window: tokens spent, tokens held, micro-USD spent, micro-USD
    /// held (expired holds released first); `None` when some window does
    /// not hold the store's now (as [`Reserved::WindowsMoved`]).
    pub async fn read_budgets(
        &self,
        windows: &[SharedWindow],
    ) -> Result<Option<Vec<[i64; 4]>>, Unreachable> {
        let mut args = vec!["0".to_owned(), String::new()];
        for window in windows {
            args.push(window.start.to_string());
            args.push(window.end.to_string());
        }
        let answer = self.budget("read", &keys(windows), &args).await?;
        if answer.first() != Some(&0) {
            return Ok(None);
        }
        Ok(Some(
            answer[1..]
                .chunks_exact(4)
                .map(|four| [four[0], four[1], four[2], four[3]])
                .collect(),
        ))
    }
}

/// A window's three keys: its hash, its holds by expiry, what each holds.
fn triple(key: &str) -> [String; 3] {
    [
        key.to_owned(),
        format!("{key}:holds"),
        format!("{key}:held"),
    ]
}

fn keys(windows: &[SharedWindow]) -> Vec<String> {
    windows
        .iter()
        .flat_map(|window| triple(&window.key))
        .collect()
}

fn expiry(windows: &[SharedWindow]) -> i64 {
    windows.iter().map(|window| window.end).max().unwrap_or(0) + KEPT_PAST_END_S
}
