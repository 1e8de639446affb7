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
mod window;

use crate::config::budgets::{BudgetConfig, BudgetScope, UnpricedModels};
use crate::error::Error;
use crate::shared::{Reserved, SharedStore, SharedWindow};
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
        let matched: Vec<usize> = (0..tracked.len())
            .filter(|&index| tracked[index].counts(&subject))
            .collect();
        for &index in &matched {
            let budget = &mut tracked[index];
            budget.roll(now);
            budget.admits(charge, now)?;
        }
        let mut reservation = Reservation::default();
        let mut remaining: Option<Remaining> = None;
        for index in matched {
            let budget = &mut tracked[index];
            let reserved = Amounts {
                tokens: charge.tokens,
                // An unpriced model under an `allow` budget counts tokens.
                usd: charge.usd.unwrap_or(0.0),
            };
            budget.reserved.tokens += reserved.tokens;
            budget.reserved.usd += reserved.usd;
            reservation.holds.push(Hold {
                name: budget.config.name.clone(),
                start: budget.start,
                reserved,
                window: None,
                fleet_start: None,
            });
            let left = budget.left();
            if remaining
                .as_ref()
                .is_none_or(|tightest| left.is_tighter(tightest))
            {
                remaining = Some(left);
            }
        }
        Ok((reservation, remaining))
    }

    /// Reserves `charge` as [`Budgets::reserve`] does, in the fleet's
    /// `store`: every pod sharing it counts against the same budgets.
    /// While the store is away the pod's own count decides (counted in the
    /// store's fallback metric under `provider`), or, when it fails closed,
    /// the call is refused with [`Error::SharedStoreUnavailable`].
    pub async fn reserve_shared(
        &self,
        store: &Arc<SharedStore>,
        subject: Subject<'_>,
        charge: Charge,
        hold_for: Duration,
    ) -> Result<(Reservation, Option<Remaining>), Error> {
        let now = unix_now();
        let matched: Vec<BudgetConfig> = {
            let mut tracked = self.lock();
            let mut matched = Vec::new();
            for budget in tracked.iter_mut().filter(|budget| budget.counts(&subject)) {
                budget.roll(now);
                // Needs no store: a model without a price under a USD
                // budget, a call larger than a whole window.
                if let Some(refusal) = budget
                    .unpriced_refusal(charge)
                    .or_else(|| budget.too_large(charge))
                {
                    return Err(Error::BudgetExceeded(refusal));
                }
                matched.push(budget.config.clone());
            }
            matched
        };
        if matched.is_empty() {
            return Ok((Reservation::default(), None));
        }
        let usd = micros(charge.usd.unwrap_or(0.0));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut asked = 0;
        loop {
            // The windows holding the store's now, as this pod knows its
            // clock; turned back (and asked again) when that was off.
            let windows = shared_windows(store, &matched);
            asked += 1;
            match store
                .reserve_budgets(&windows, &id, hold_for, charge.tokens, usd)
                .await
            {
                Ok(Reserved::WindowsMoved) if asked < WINDOW_ASKS => {}
                Ok(Reserved::Held(used)) => {
                    self.note_fleet(store, &matched, &windows, &used);
                    self.push_alone(store);
                    return Ok(held(&matched, windows, &used, charge, usd, store, id));
                }
                Ok(Reserved::Refused { index, usd, used }) => {
                    self.push_alone(store);
                    let index = index.min(matched.len() - 1);
                    let refusal = refused(&matched[index], usd, used, charge);
                    return Err(Error::BudgetExceeded(BudgetExceeded {
                        retry_after: until(windows[index].end, store.now()),
                        ..refusal
                    }));
                }
                Ok(Reserved::WindowsMoved) | Err(_) => {
                    // The answer was lost, not necessarily the reservation:
                    // undone in the background (else it expires with its
                    // hold). (Windows that kept moving: the store's clock
                    // jumps; counted as away.)
                    settle_in_store(
                        Arc::clone(store),
                        windows,
                        id,
                        Charge {
                            tokens: 0,
                            usd: None,
                        },
                    );
                    store.count_fallback(subject.provider);
                    if store.fails_closed() {
                        return Err(store.refusal(subject.provider));
                    }
                    return self
                        .reserve_alone(store, subject, charge)
                        .map_err(Error::BudgetExceeded);
                }
            }
        }
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
            budget.reserved.tokens = budget.reserved.tokens.saturating_sub(hold.reserved.tokens);
            budget.reserved.usd = (budget.reserved.usd - hold.reserved.usd).max(0.0);
            let spent = Amounts {
                tokens: spent.tokens,
                usd: spent.usd.unwrap_or(0.0),
            };
            budget.spent.tokens += spent.tokens;
            budget.spent.usd += spent.usd;
            if reservation.alone {
                budget.alone = budget.alone.less(hold.reserved).plus(spent);
                let window = hold.fleet_start.unwrap_or(hold.start);
                self.alone.count(&hold.name, window, spent);
            }
        }
    }

    /// [`Budgets::status`], with the spend and holds of the fleet read from
    /// `store` (`source: "shared"`); the pod's own count where it cannot be
    /// read (`source: "local"`).
    pub async fn status_shared(&self, store: &SharedStore) -> Vec<BudgetStatus> {
        let mut status = self.status();
        if status.is_empty() {
            return status;
        }
        let configs = self.configs();
        for _ in 0..WINDOW_ASKS {
            let windows = shared_windows(store, &configs);
            match store.read_budgets(&windows).await {
                Ok(Some(read)) => {
                    for (((budget, config), window), read) in
                        status.iter_mut().zip(&configs).zip(windows).zip(read)
                    {
                        if budget.name != config.name {
                            // Reloaded meanwhile: this pod's count stands.
                            continue;
                        }
                        let [tokens_spent, tokens_reserved, usd_spent, usd_reserved] = read;
                        budget.window_start = window.start;
                        budget.window_end = window.end;
                        budget.tokens_spent = u64::try_from(tokens_spent).unwrap_or(0);
                        budget.tokens_reserved = u64::try_from(tokens_reserved).unwrap_or(0);
                        budget.usd_spent = dollars(usd_spent);
                        budget.usd_reserved = dollars(usd_reserved);
                        budget.source = "shared";
                    }
                    break;
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        status
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
                    _ => Amounts {
                        tokens: budget.spent.tokens + budget.reserved.tokens,
                        usd: budget.spent.usd + budget.reserved.usd,
                    },
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

    /// Keeps the fleet's figures a store's answer gave: `used` holds tokens
    /// and micro-USD per window of `configs`.
    fn note_fleet(
        &self,
        store: &SharedStore,
        configs: &[BudgetConfig],
        windows: &[SharedWindow],
        used: &[(u64, i64)],
    ) {
        // The store's clock, not this pod's, says when the window ends.
        let to_local = unix_now() - store.now();
        let mut tracked = self.lock();
        for ((config, window), &(tokens, usd)) in configs.iter().zip(windows).zip(used) {
            if let Some(budget) = tracked
                .iter_mut()
                .find(|budget| budget.config.name == config.name)
            {
                let used = Amounts {
                    tokens,
                    usd: dollars(usd),
                };
                budget.fleet = Some(FleetSeen {
                    start: window.start,
                    ends_at_local: window.end + to_local,
                    used,
                });
            }
        }
    }

    /// Hands what this pod spent alone to the store, now that it answers,
    /// and counts it in the fleet's figures as last seen.
    fn push_alone(&self, store: &Arc<SharedStore>) {
        let sent = self.alone.push(store, || self.configs());
        if sent.is_empty() {
            return;
        }
        let mut tracked = self.lock();
        for (name, start, amounts) in sent {
            if let Some(seen) = tracked
                .iter_mut()
                .find(|budget| budget.config.name == name)
                .and_then(|budget| budget.fleet.as_mut())
                && seen.start == start
            {
                seen.used = seen.used.plus(amounts);
            }
        }
    }

    /// A shared call's own change to the fleet's figures as last seen:
    /// its hold gone, what it spent added (the other pods' changes show
    /// with the next answer).
    fn settle_fleet_seen(&self, holds: &[Hold], spent: Charge) {
        let spent = Amounts {
            tokens: spent.tokens,
            usd: spent.usd.unwrap_or(0.0),
        };
        let mut tracked = self.lock();
        for hold in holds {
            let Some(window) = &hold.window else { continue };
            if let Some(seen) = tracked
                .iter_mut()
                .find(|budget| budget.config.name == hold.name)
                .and_then(|budget| budget.fleet.as_mut())
                && seen.start == window.start
            {
                seen.used = seen.used.less(hold.reserved).plus(spent);
            }
        }
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
        let used = Amounts {
            tokens: self.spent.tokens + self.reserved.tokens,
            usd: self.spent.usd + self.reserved.usd,
        };
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
        let used = Amounts {
            tokens: self.spent.tokens + self.reserved.tokens,
            usd: self.spent.usd + self.reserved.usd,
        };
        Remaining::of(&self.config, used)
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

    /// A smaller share of its limit left than `other` (a budget of
    /// $0.05 a day with $0.004 left is tighter than one of a million
    /// tokens a month with 999,974 left).
    fn is_tighter(&self, other: &Remaining) -> bool {
        self.share_left < other.share_left
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

/// How often a call asks the store with windows it reckoned anew, when
/// the store turned them back ([`Reserved::WindowsMoved`]): the second ask
/// uses the clock the first answer brought, a third covers a window that
/// ended in between.
const WINDOW_ASKS: u32 = 3;

/// Each budget's window holding the store's now, as this pod knows it.
fn shared_windows(store: &SharedStore, configs: &[BudgetConfig]) -> Vec<SharedWindow> {
    let now = store.now();
    configs
        .iter()
        .map(|config| {
            let (start, end) = window::bounds(config.window, now);
            SharedWindow {
                key: store.budget_key(&config.name, start),
                tokens_limit: config.tokens,
                usd_limit_micros: config.usd.map(micros),
                start,
                end,
            }
        })
        .collect()
}

/// The reservation of a call the store held on every window, and what is
/// left of the tightest budget: `used` holds tokens and micro-USD used per
/// window, this call's included.
fn held(
    configs: &[BudgetConfig],
    windows: Vec<SharedWindow>,
    used: &[(u64, i64)],
    charge: Charge,
    usd_micros: i64,
    store: &Arc<SharedStore>,
    id: String,
) -> (Reservation, Option<Remaining>) {
    let mut remaining: Option<Remaining> = None;
    let mut holds = Vec::with_capacity(configs.len());
    for ((config, window), &(tokens_used, usd_used)) in configs.iter().zip(windows).zip(used) {
        let left = Remaining::of(
            config,
            Amounts {
                tokens: tokens_used,
                usd: dollars(usd_used),
            },
        );
        if remaining
            .as_ref()
            .is_none_or(|tightest| left.is_tighter(tightest))
        {
            remaining = Some(left);
        }
        holds.push(Hold {
            name: config.name.clone(),
            start: window.start,
            reserved: Amounts {
                tokens: charge.tokens,
                usd: dollars(usd_micros),
            },
            window: Some(window),
            fleet_start: None,
        });
    }
    let reservation = Reservation {
        holds,
        shared: Some((Arc::clone(store), id)),
        alone: false,
    };
    (reservation, remaining)
}

/// The store's refusal by budget `config`: over its tokens (`usd` false)
/// or its dollars, of which `used` (tokens or micro-USD) were spent or
/// held. `retry_after` is left for the caller, who knows the window.
fn refused(config: &BudgetConfig, usd: bool, used: i64, charge: Charge) -> BudgetExceeded {
    let (used, limit) = if usd {
        (
            Amounts {
                tokens: 0,
                usd: dollars(used),
            },
            Amounts {
                tokens: 0,
                usd: config.usd.unwrap_or(0.0),
            },
        )
    } else {
        (
            Amounts {
                tokens: u64::try_from(used).unwrap_or(0),
                usd: 0.0,
            },
            Amounts {
                tokens: config.tokens.unwrap_or(0),
                usd: 0.0,
            },
        )
    };
    BudgetExceeded {
        budget: config.name.clone(),
        detail: over_limit(config, usd, used, limit, charge),
        retry_after: Duration::ZERO,
    }
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

/// Settles call `id`'s holds on `windows` in the store, off the caller's
/// path, trying again while the store is away (the store counts a settle
/// once, however often it is sent), for up to about a minute: after that
/// the holds are released when they expire, and the spend is not counted
/// in the store.
fn settle_in_store(store: Arc<SharedStore>, windows: Vec<SharedWindow>, id: String, spent: Charge) {
    const FIRST_WAIT: Duration = Duration::from_millis(100);
    const TRIES: u32 = 10;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let usd = micros(spent.usd.unwrap_or(0.0));
        let mut wait = FIRST_WAIT;
        for _ in 0..TRIES {
            if store
                .settle_budgets(&windows, &id, spent.tokens, usd)
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(15));
        }
        tracing::warn!(
            "budget: a call could not be settled in the shared store; what it held is released \
             when its hold expires, and what it spent is not counted there"
        );
    });
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
