//! Budgets the whole fleet holds together (`crate::budget`), in the
//! shared store: one hash per budget and window (`budget.lua`), checked
//! and reserved for a call on every budget it falls under in one round
//! trip, settled to the call's real usage when it ends.

use super::store::{SharedStore, Unreachable};
use crate::config::UnavailableMode;

/// One budget's window as the store keeps it, for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedWindow {
    /// The hash's key: the prefix, the budget's name, the window's start.
    pub key: String,
    /// Tokens per window (`None`: no token limit).
    pub tokens_limit: Option<u64>,
    /// Millionths of a US dollar per window (`None`: no USD limit).
    pub usd_limit_micros: Option<i64>,
    /// When the window ends (unix seconds): the key lives a day past it.
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

    /// Refuse calls while the store is away (`on_unavailable = "closed"`).
    pub fn fails_closed(&self) -> bool {
        self.on_unavailable == UnavailableMode::Closed
    }

    /// Reserves `tokens` and `usd_micros` on every window, or on none.
    pub async fn reserve_budgets(
        &self,
        windows: &[SharedWindow],
        tokens: u64,
        usd_micros: i64,
    ) -> Result<Reserved, Unreachable> {
        let mut args = vec![expiry(windows)];
        for window in windows {
            args.extend([
                window
                    .tokens_limit
                    .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX)),
                window.usd_limit_micros.unwrap_or(-1),
                i64::try_from(tokens).unwrap_or(i64::MAX),
                usd_micros,
            ]);
        }
        let keys: Vec<String> = windows.iter().map(|window| window.key.clone()).collect();
        let answer = self.budget_op("reserve", &keys, args).await?;
        match answer.first() {
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

    /// Releases what a call held on `windows` (`(window, tokens, micro-USD)`)
    /// and adds what it spent.
    pub async fn settle_budgets(
        &self,
        windows: &[(SharedWindow, u64, i64)],
        tokens: u64,
        usd_micros: i64,
    ) -> Result<(), Unreachable> {
        let plain: Vec<SharedWindow> = windows.iter().map(|(window, ..)| window.clone()).collect();
        let mut args = vec![expiry(&plain)];
        for (_, held_tokens, held_usd) in windows {
            args.extend([
                i64::try_from(*held_tokens).unwrap_or(i64::MAX),
                *held_usd,
                i64::try_from(tokens).unwrap_or(i64::MAX),
                usd_micros,
            ]);
        }
        let keys: Vec<String> = plain.into_iter().map(|window| window.key).collect();
        self.budget_op("settle", &keys, args).await.map(drop)
    }

    /// Per key: tokens spent, tokens held, micro-USD spent, micro-USD held.
    pub async fn read_budgets(&self, keys: &[String]) -> Result<Vec<[i64; 4]>, Unreachable> {
        let answer = self.budget_op("read", keys, vec![0]).await?;
        Ok(answer
            .chunks_exact(4)
            .map(|four| [four[0], four[1], four[2], four[3]])
            .collect())
    }

    /// The script's operation `op` on `keys`; `args` from the expiry on.
    async fn budget_op(
        &self,
        op: &str,
        keys: &[String],
        args: Vec<i64>,
    ) -> Result<Vec<i64>, Unreachable> {
        self.budget(keys, op, &args).await
    }
}

fn expiry(windows: &[SharedWindow]) -> i64 {
    windows.iter().map(|window| window.end).max().unwrap_or(0) + KEPT_PAST_END_S
}
