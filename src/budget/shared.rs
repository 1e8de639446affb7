//! Budgets held in the fleet's `[shared]` store: reserving on every
//! budget a call falls under in one round trip, in windows on the store's
//! clock; settling in the background; reading the fleet's figures for the
//! admin view and the gauges.

use super::{
    Amounts, BudgetConfig, BudgetExceeded, BudgetStatus, Budgets, Charge, FleetSeen, Hold,
    Remaining, Reservation, Subject, dollars, micros, over_limit, unix_now, until, window,
};
use crate::error::Error;
use crate::shared::{Reserved, SharedStore, SharedWindow};
use std::sync::Arc;
use std::time::Duration;

impl Budgets {
    /// Reserves `charge` as [`Budgets::reserve`] does, in the fleet's
    /// `store`: every pod sharing it counts against the same budgets.
    /// While the store is away the pod counts alone, within its share
    /// (`fallback.rs`; counted in the store's fallback metric under
    /// `provider`), or, when it fails closed, the call is refused with
    /// [`Error::SharedStoreUnavailable`].
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

    /// Keeps the fleet's figures a store's answer gave: `used` holds tokens
    /// and micro-USD per window of `configs`.
    pub(super) fn note_fleet(
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
    pub(super) fn push_alone(&self, store: &Arc<SharedStore>) {
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
    pub(super) fn settle_fleet_seen(&self, holds: &[Hold], spent: Charge) {
        let spent = Amounts::from(spent);
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
}

/// How often a call asks the store with windows it reckoned anew, when
/// the store turned them back ([`Reserved::WindowsMoved`]): the second ask
/// uses the clock the first answer brought, a third covers a window that
/// ended in between.
const WINDOW_ASKS: u32 = 3;

/// Each budget's window holding the store's now, as this pod knows it.
pub(super) fn shared_windows(store: &SharedStore, configs: &[BudgetConfig]) -> Vec<SharedWindow> {
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
pub(super) fn held(
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
        left.keep_tightest(&mut remaining);
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
pub(super) fn refused(
    config: &BudgetConfig,
    usd: bool,
    used: i64,
    charge: Charge,
) -> BudgetExceeded {
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

/// Settles call `id`'s holds on `windows` in the store, off the caller's
/// path, trying again while the store is away (the store counts a settle
/// once, however often it is sent), for up to about a minute: after that
/// the holds are released when they expire, and the spend is not counted
/// in the store.
pub(super) fn settle_in_store(
    store: Arc<SharedStore>,
    windows: Vec<SharedWindow>,
    id: String,
    spent: Charge,
) {
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
