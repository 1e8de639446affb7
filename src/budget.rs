//! Budgets: spend limits per caller, tag or provider, in tokens and/or US
//! dollars per UTC hour, day or month (`[[budgets]]`).
//!
//! A call is admitted before it goes upstream by **reserving** what it may
//! cost: the prompt's estimate plus the request's output cap
//! (`max_tokens`; without one, the prompt's estimate only), priced at the
//! model's configured price. A call that would take a budget past its
//! limit (spent plus reserved) is refused with [`BudgetExceeded`]
//! (RESOURCE_EXHAUSTED / 429, reason `BUDGET_EXCEEDED`, the window's reset
//! as Retry-After, `x-should-retry: false`). When the call ends, whatever
//! way (answered, failed, cut, cancelled), its reservation is **settled**
//! to the usage and cost its ledger record holds, estimated for a stream
//! that reported none.
//!
//! A call counts in the window it was admitted in. Without a `[shared]`
//! store the spend is kept here, in the process: it survives a reload for
//! every budget whose name, scope and window stay the same, and a restart
//! reads it back from the ledger. With one, every pod reserves and settles
//! in the store (`shared/budget.lua`), so the fleet holds each budget
//! together, in windows on the store's clock (`shared/clock.rs`); while
//! the store is away, each pod falls back to its own count
//! (`on_unavailable = "local"`, handed to the store once it is back:
//! `alone.rs`) or refuses (`"closed"`).

mod alone;
mod fallback;
mod shared;
mod window;

use crate::config::budgets::{BudgetConfig, BudgetScope, UnpricedModels};
use crate::shared::{SharedStore, SharedWindow};
use shared::settle_in_store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every configured budget and what was spent against it.
#[derive(Debug, Default)]
pub struct Budgets {
    tracked: Mutex<Vec<Tracked>>,
    /// Whether any is configured: read by every call, without the lock.
    configured: AtomicBool,
    /// Spent while the shared store was away, for the store once it is
    /// back.
    alone: alone::AloneSpend,
}

#[derive(Debug)]
struct Tracked {
    config: BudgetConfig,
    /// The window being counted, in unix seconds: `[start, end)`.
    start: i64,
    end: i64,
    spent: Amounts,
    reserved: Amounts,
    /// The fleet's spent and held, as the store last answered a call of
    /// this pod (with `[shared]`), and the window it was for.
    fleet: Option<FleetSeen>,
    /// Spent and held by this pod while it counted alone (the `[shared]`
    /// store away) in this window: held to its share of the limits.
    alone: Amounts,
}

/// A budget's figures in the fleet's store, as this pod last saw them.
#[derive(Debug, Clone, Copy)]
struct FleetSeen {
    /// The window they are for (unix seconds, the store's clock).
    start: i64,
    /// When that window ends on this pod's clock (unix seconds).
    ends_at_local: i64,
    /// Spent and held by the whole fleet.
    used: Amounts,
}

/// Tokens and US dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Amounts {
    tokens: u64,
    usd: f64,
}

impl From<Charge> for Amounts {
    /// An unpriced model's call (no USD) counts its tokens only.
    fn from(charge: Charge) -> Amounts {
        Amounts {
            tokens: charge.tokens,
            usd: charge.usd.unwrap_or(0.0),
        }
    }
}

impl Amounts {
    fn plus(self, other: Amounts) -> Amounts {
        Amounts {
            tokens: self.tokens + other.tokens,
            usd: self.usd + other.usd,
        }
    }

    /// Never below nothing.
    fn less(self, other: Amounts) -> Amounts {
        Amounts {
            tokens: self.tokens.saturating_sub(other.tokens),
            usd: (self.usd - other.usd).max(0.0),
        }
    }
}

/// Who a call is, for the budgets that count it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its caller token's name, else what `x-llm-caller` said.
    pub caller: Option<&'a str>,
    /// The request's `metadata`.
    pub tags: &'a BTreeMap<String, String>,
    /// The provider the call goes to first.
    pub provider: &'a str,
}

/// What a call may cost (when reserving) or did cost (when settling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// US dollars; `None` when the model has no price.
    pub usd: Option<f64>,
}

/// What a call holds against the budgets it matched, until it is settled.
#[derive(Debug, Default)]
pub struct Reservation {
    holds: Vec<Hold>,
    /// Where the holds were taken, when in the fleet's store, and the
    /// call's id there.
    shared: Option<(Arc<SharedStore>, String)>,
    /// Taken by this pod alone, the fleet's store away: what the call
    /// spends is handed to the store once it is back.
    alone: bool,
}

#[derive(Debug)]
struct Hold {
    name: String,
    /// The window it was taken in (unix seconds): the call counts there,
    /// and a call that ends after the window adds nothing to the next.
    start: i64,
    reserved: Amounts,
    /// The window in the store, for a shared hold.
    window: Option<SharedWindow>,
    /// For a hold taken alone: the window's start on the store's clock, as
    /// last known, where its spend is handed over once the store is back.
    fleet_start: Option<i64>,
}

/// What is left of the tightest budget a call matched, after its
/// reservation: `x-llm-budget-remaining-tokens` / `-usd`.
#[derive(Debug, Clone, PartialEq)]
pub struct Remaining {
    pub budget: String,
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
    /// The smallest share of a limit left (0.0 to 1.0): the tightest
    /// budget is the one with the least, whatever its unit.
    pub share_left: f64,
}

/// A call refused by a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetExceeded {
    /// The budget's name.
    pub budget: String,
    /// What was spent, the limit and what the call would take, in words.
    pub detail: String,
    /// Until the window resets.
    pub retry_after: Duration,
}

/// What one budget has used, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetUse {
    pub name: String,
    /// `hour`, `day` or `month` (UTC).
    pub window: &'static str,
    /// Tokens spent and held in the window.
    pub tokens: u64,
    pub tokens_limit: Option<u64>,
    /// US dollars spent and held in the window.
    pub usd: f64,
    pub usd_limit: Option<f64>,
}

/// One budget's state, for the admin view.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetStatus {
    pub name: String,
    /// `caller:search`, `tag:team=search`, `provider:openai`.
    pub scope: String,
    /// `hour`, `day` or `month` (UTC).
    pub window: &'static str,
    /// The window counted now, unix seconds.
    pub window_start: i64,
    pub window_end: i64,
    pub tokens_limit: Option<u64>,
    pub tokens_spent: u64,
    /// Held by calls in flight.
    pub tokens_reserved: u64,
    pub usd_limit: Option<f64>,
    pub usd_spent: f64,
    pub usd_reserved: f64,
    /// `shared`: the fleet's, read from the store; `local`: this pod's.
    pub source: &'static str,
}

impl Budgets {
    /// Budgets as `configs` says, with nothing spent.
    pub fn new(configs: &[BudgetConfig]) -> Budgets {
        let budgets = Budgets::default();
        let _all_new = budgets.configure(configs);
        budgets
    }

    /// Whether any budget is configured (calls skip them all otherwise).
    pub fn is_empty(&self) -> bool {
        !self.configured.load(Ordering::Relaxed)
    }

    /// The budgets of a reloaded configuration: one with the same name,
    /// scope and window as before keeps its spend (and reservations);
    /// another starts from nothing, and its name is returned (its spend so
    /// far this window is for the ledger to tell: [`Budgets::restore`]).
    pub fn configure(&self, configs: &[BudgetConfig]) -> Vec<String> {
        let now = unix_now();
        let mut tracked = self.lock();
        let mut before = std::mem::take(&mut *tracked);
        let mut added = Vec::new();
        for config in configs {
            let kept = before.iter().position(|old| {
                old.config.name == config.name
                    && old.config.scope == config.scope
                    && old.config.window == config.window
            });
            let entry = match kept {
                Some(index) => {
                    let mut old = before.swap_remove(index);
                    old.config = config.clone();
                    old
                }
                None => {
                    added.push(config.name.clone());
                    let (start, end) = window::bounds(config.window, now);
                    Tracked {
                        config: config.clone(),
                        start,
                        end,
                        spent: Amounts::default(),
                        reserved: Amounts::default(),
                        fleet: None,
                        alone: Amounts::default(),
                    }
                }
            };
            tracked.push(entry);
        }
        self.configured
            .store(!tracked.is_empty(), Ordering::Relaxed);
        added
    }

    /// Adds spend from before this process started (read back from the
    /// ledger) to budget `name`, when `window_start` is its current window.
    pub fn restore(&self, name: &str, window_start: i64, tokens: u64, usd: f64) {
        let now = unix_now();
        let mut tracked = self.lock();
        if let Some(budget) = tracked.iter_mut().find(|budget| budget.config.name == name) {
            budget.roll(now);
            if budget.start == window_start {
                budget.spent.tokens += tokens;
                budget.spent.usd += usd;
            }
        }
    }

    /// The windows spend must be read back for: `(name, scope, window
    /// start in unix seconds)` of each budget.
    pub fn windows(&self) -> Vec<(String, BudgetScope, i64)> {
        let now = unix_now();
        self.lock()
            .iter_mut()
            .map(|budget| {
                budget.roll(now);
                (
                    budget.config.name.clone(),
                    budget.config.scope.clone(),
                    budget.start,
                )
            })
            .collect()
    }

    /// Reserves `charge` on every budget `subject` falls under, or refuses
    /// the call with the first budget it would take past its limit (and
    /// reserves nothing). With the reservation, what is left of the
    /// tightest budget (`None` when no budget matched).
    pub fn reserve(
        &self,
        subject: Subject<'_>,
        charge: Charge,
    ) -> Result<(Reservation, Option<Remaining>), BudgetExceeded> {
        let now = unix_now();
        let mut tracked = self.lock();
        let matched = matching(&mut tracked, &subject, now);
        for &index in &matched {
            tracked[index].admits(charge, now)?;
        }
        let mut reservation = Reservation::default();
        let mut remaining: Option<Remaining> = None;
        // An unpriced model under an `allow` budget counts tokens.
        let reserved = Amounts::from(charge);
        for index in matched {
            let budget = &mut tracked[index];
            budget.reserved = budget.reserved.plus(reserved);
            reservation.holds.push(Hold {
                name: budget.config.name.clone(),
                start: budget.start,
                reserved,
                window: None,
                fleet_start: None,
            });
            let left = budget.left();
            left.keep_tightest(&mut remaining);
        }
        Ok((reservation, remaining))
    }

    /// Releases `reservation` and counts what the call really cost
    /// (`usd: None`, an unpriced model: its tokens only) in the window it
    /// was admitted in; a shared one in the store, in the background.
    pub fn settle(&self, reservation: Reservation, spent: Charge) {
        if reservation.holds.is_empty() {
            return;
        }
        if let Some((store, id)) = reservation.shared {
            self.settle_fleet_seen(&reservation.holds, spent);
            let windows = reservation
                .holds
                .into_iter()
                .filter_map(|hold| hold.window)
                .collect();
            settle_in_store(store, windows, id, spent);
            return;
        }
        let now = unix_now();
        let mut tracked = self.lock();
        for hold in reservation.holds {
            let Some(budget) = tracked
                .iter_mut()
                .find(|budget| budget.config.name == hold.name)
            else {
                // Removed by a reload meanwhile: nothing left to count.
                continue;
            };
            budget.roll(now);
            if budget.start != hold.start {
                // Its window is over, and counted no further.
                continue;
            }
            let spent = Amounts::from(spent);
            budget.reserved = budget.reserved.less(hold.reserved);
            budget.spent = budget.spent.plus(spent);
            if reservation.alone {
                budget.alone = budget.alone.less(hold.reserved).plus(spent);
                let window = hold.fleet_start.unwrap_or(hold.start);
                self.alone.count(&hold.name, window, spent);
            }
        }
    }

    /// Every budget's window, spend and limits now.
    pub fn status(&self) -> Vec<BudgetStatus> {
        let now = unix_now();
        self.lock()
            .iter_mut()
            .map(|budget| {
                budget.roll(now);
                BudgetStatus {
                    name: budget.config.name.clone(),
                    scope: budget.config.scope.label(),
                    window: budget.config.window.as_str(),
                    window_start: budget.start,
                    window_end: budget.end,
                    tokens_limit: budget.config.tokens,
                    tokens_spent: budget.spent.tokens,
                    tokens_reserved: budget.reserved.tokens,
                    usd_limit: budget.config.usd,
                    usd_spent: budget.spent.usd,
                    usd_reserved: budget.reserved.usd,
                    source: "local",
                }
            })
            .collect()
    }

    /// What each budget has used now (spent and held) against its limits:
    /// the fleet's figures as the store last gave them to this pod, while
    /// their window lasts, else this pod's own.
    pub fn used(&self) -> Vec<BudgetUse> {
        let now = unix_now();
        self.lock()
            .iter_mut()
            .map(|budget| {
                budget.roll(now);
                let used = match budget.fleet {
                    Some(seen) if now < seen.ends_at_local => seen.used,
                    _ => budget.spent.plus(budget.reserved),
                };
                BudgetUse {
                    name: budget.config.name.clone(),
                    window: budget.config.window.as_str(),
                    tokens: used.tokens,
                    tokens_limit: budget.config.tokens,
                    usd: used.usd,
                    usd_limit: budget.config.usd,
                }
            })
            .collect()
    }

    /// Every budget's configuration.
    fn configs(&self) -> Vec<BudgetConfig> {
        self.lock()
            .iter()
            .map(|budget| budget.config.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tracked>> {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tracked {
    fn counts(&self, subject: &Subject<'_>) -> bool {
        match &self.config.scope {
            BudgetScope::Caller(name) => subject.caller == Some(name.as_str()),
            BudgetScope::Tag { key, value } => subject.tags.get(key) == Some(value),
            BudgetScope::Provider(name) => subject.provider == name,
        }
    }

    /// A new window starts from nothing; calls still holding a reservation
    /// from the last one settle into it without freeing anything here.
    fn roll(&mut self, now: i64) {
        if now >= self.end || now < self.start {
            (self.start, self.end) = window::bounds(self.config.window, now);
            self.spent = Amounts::default();
            self.reserved = Amounts::default();
            self.alone = Amounts::default();
        }
    }

    fn admits(&self, charge: Charge, now: i64) -> Result<(), BudgetExceeded> {
        if let Some(refusal) = self
            .unpriced_refusal(charge)
            .or_else(|| self.too_large(charge))
        {
            return Err(refusal);
        }
        let refuse = |usd: bool, used: Amounts, limit: Amounts| BudgetExceeded {
            budget: self.config.name.clone(),
            detail: over_limit(&self.config, usd, used, limit, charge),
            retry_after: until(self.end, now),
        };
        let used = self.spent.plus(self.reserved);
        if let Some(limit) = self.config.tokens
            && used.tokens + charge.tokens > limit
        {
            return Err(refuse(
                false,
                used,
                Amounts {
                    tokens: limit,
                    usd: 0.0,
                },
            ));
        }
        if let (Some(limit), Some(usd)) = (self.config.usd, charge.usd)
            && used.usd + usd > limit
        {
            return Err(refuse(
                true,
                used,
                Amounts {
                    tokens: 0,
                    usd: limit,
                },
            ));
        }
        Ok(())
    }

    /// A call that may take more than the whole limit: no window admits
    /// it, so no Retry-After (the caller must ask for less).
    fn too_large(&self, charge: Charge) -> Option<BudgetExceeded> {
        let tokens = self.config.tokens.filter(|&limit| charge.tokens > limit);
        let usd = self
            .config
            .usd
            .filter(|&limit| charge.usd.is_some_and(|usd| usd > limit));
        let window = self.config.window.as_str();
        let detail = match (tokens, usd) {
            (Some(limit), _) => format!(
                "this call may take up to {} tokens (the prompt's estimate plus its max_tokens), \
                 more than the budget's whole {limit} a {window}; ask for fewer (a lower \
                 max_tokens)",
                charge.tokens
            ),
            (None, Some(limit)) => format!(
                "this call may cost up to ${:.4}, more than the budget's whole ${limit:.4} a \
                 {window}; ask for less (a lower max_tokens)",
                charge.usd.unwrap_or(0.0)
            ),
            (None, None) => return None,
        };
        Some(BudgetExceeded {
            budget: self.config.name.clone(),
            detail,
            retry_after: Duration::ZERO,
        })
    }

    /// A model without a price under a USD budget that refuses those.
    fn unpriced_refusal(&self, charge: Charge) -> Option<BudgetExceeded> {
        (self.config.usd.is_some()
            && charge.usd.is_none()
            && self.config.unpriced == UnpricedModels::Refuse)
            .then(|| BudgetExceeded {
                budget: self.config.name.clone(),
                detail: "the model has no price, so its cost cannot be held to a budget in US \
                         dollars (give it a price in [[prices]], or set `unpriced = \"allow\"` \
                         on the budget)"
                    .to_owned(),
                retry_after: Duration::ZERO,
            })
    }

    fn left(&self) -> Remaining {
        Remaining::of(&self.config, self.spent.plus(self.reserved))
    }
}

impl Remaining {
    /// What is left of budget `config` once `used` (spent and held) is.
    fn of(config: &BudgetConfig, used: Amounts) -> Remaining {
        let tokens = config.tokens.map(|limit| limit.saturating_sub(used.tokens));
        let usd = config.usd.map(|limit| (limit - used.usd).max(0.0));
        #[allow(clippy::cast_precision_loss)] // a share, not an amount
        let token_share = tokens
            .zip(config.tokens)
            .map(|(left, limit)| left as f64 / (limit.max(1) as f64));
        let usd_share = usd
            .zip(config.usd)
            .map(|(left, limit)| if limit > 0.0 { left / limit } else { 0.0 });
        let share_left = token_share
            .into_iter()
            .chain(usd_share)
            .fold(1.0_f64, f64::min);
        Remaining {
            budget: config.name.clone(),
            tokens,
            usd,
            share_left,
        }
    }

    /// Keeps in `tightest` whichever of it and `self` has the smaller share
    /// of its limit left (a budget of $0.05 a day with $0.004 left is
    /// tighter than one of a million tokens a month with 999,974 left):
    /// the one the `x-llm-budget-remaining-*` headers name.
    fn keep_tightest(self, tightest: &mut Option<Remaining>) {
        if tightest
            .as_ref()
            .is_none_or(|kept| self.share_left < kept.share_left)
        {
            *tightest = Some(self);
        }
    }
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "budget `{}` would be exceeded: {}",
            self.budget, self.detail
        )?;
        if !self.retry_after.is_zero() {
            write!(f, "; it starts again in {} s", self.retry_after.as_secs())?;
        }
        Ok(())
    }
}

/// What was used of a budget's limit and what the call would take, in
/// words (tokens, or dollars when `usd`).
fn over_limit(
    config: &BudgetConfig,
    usd: bool,
    used: Amounts,
    limit: Amounts,
    charge: Charge,
) -> String {
    let window = config.window.as_str();
    if usd {
        format!(
            "${:.4} of its ${:.4} this {window} (UTC) is spent or held by calls in flight, and \
             this call may cost up to ${:.4}",
            used.usd,
            limit.usd,
            charge.usd.unwrap_or(0.0)
        )
    } else {
        format!(
            "{} of its {} tokens this {window} (UTC) are spent or held by calls in flight, and \
             this call may take up to {} (the prompt's estimate plus its max_tokens, if any)",
            used.tokens, limit.tokens, charge.tokens
        )
    }
}

/// The indices of the budgets in `tracked` that count `subject`, each
/// rolled to the window holding `now` (unix seconds).
fn matching(tracked: &mut [Tracked], subject: &Subject<'_>, now: i64) -> Vec<usize> {
    let mut matched = Vec::new();
    for (index, budget) in tracked.iter_mut().enumerate() {
        if budget.counts(subject) {
            budget.roll(now);
            matched.push(index);
        }
    }
    matched
}

/// Until the window ending at `end` (unix seconds) is over: at least 1 s.
fn until(end: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(end - now).unwrap_or(0).max(1))
}

/// US dollars as the store counts them: whole millionths.
fn micros(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

fn dollars(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests;
