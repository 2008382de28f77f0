//! Retries: exponential back-off with full jitter, and the retry budget that keeps an
//! outage from multiplying the load.
//!
//! The budget follows Finagle's `RetryBudget`: every call deposits `fraction` of a retry,
//! every retry withdraws a whole one, and the balance is capped, so that the retries stay
//! at most `fraction` of the recent calls however many attempts each call is allowed. A
//! small floor (`min_per_second`, a GCRA bucket with a one-second burst) lets a quiet
//! operation retry at all. Two atomics, changed by compare-and-swap: no lock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::clock::Clock;

/// One retry, in the balance's fixed-point unit (a thousandth of a retry).
const ONE: i64 = 1000;
/// The balance holds at most the deposits of this many calls: "recent calls".
const REMEMBERED_CALLS: i64 = 1000;
const SECOND: u64 = 1_000_000_000;

/// How long to wait before retry `retry` (0 = the first retry): a uniform draw from
/// `[0, min(cap, base * multiplier^retry)]` ("full jitter"), `random` in `[0, 1)`.
pub fn backoff(base: u64, multiplier: f64, cap: u64, retry: u32, random: f64) -> u64 {
    let ceiling = (base as f64) * multiplier.powi(retry.min(1024) as i32);
    let ceiling = if ceiling.is_finite() {
        ceiling.min(cap as f64)
    } else {
        cap as f64
    };
    (ceiling * random.clamp(0.0, 1.0)) as u64
}

/// A uniform draw from `[0, 1)`: splitmix64 over a shared counter (jitter needs no
/// cryptographic randomness, only callers that do not wait in step).
pub fn random_fraction() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The retries an operation may still make.
#[derive(Debug)]
pub struct RetryBudget {
    /// The rates are atomics so that a configuration reload changes them in place.
    deposit: AtomicI64,
    cap: AtomicI64,
    balance: AtomicI64,
    /// The floor's GCRA state: when its next retry is due (0: never used).
    floor_due: AtomicU64,
    floor_interval: AtomicU64,
    retries: AtomicU64,
    exhausted: AtomicU64,
    clock: Clock,
}

impl RetryBudget {
    /// `fraction` of the calls (0.2 = one retry per five calls) plus `min_per_second`.
    pub fn new(fraction: f64, min_per_second: u64, clock: Clock) -> Self {
        let budget = RetryBudget {
            deposit: AtomicI64::new(0),
            cap: AtomicI64::new(0),
            balance: AtomicI64::new(0),
            floor_due: AtomicU64::new(0),
            floor_interval: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            clock,
        };
        budget.set_rates(fraction, min_per_second);
        budget
    }

    /// New rates for a live budget (a configuration reload): the balance saved so far
    /// stays, cut to the new cap.
    pub fn set_rates(&self, fraction: f64, min_per_second: u64) {
        let deposit = (fraction.clamp(0.0, 1.0) * ONE as f64).round() as i64;
        let cap = deposit * REMEMBERED_CALLS;
        self.deposit.store(deposit, Ordering::Relaxed);
        self.cap.store(cap, Ordering::Relaxed);
        self.floor_interval.store(
            SECOND.checked_div(min_per_second).unwrap_or(0),
            Ordering::Relaxed,
        );
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b > cap).then_some(cap)
            });
    }

    /// The fraction of the calls that may be retried.
    pub fn fraction(&self) -> f64 {
        self.deposit.load(Ordering::Relaxed) as f64 / ONE as f64
    }

    /// Retries a second allowed however few the calls.
    pub fn min_per_second(&self) -> u64 {
        SECOND
            .checked_div(self.floor_interval.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Counts a call (not a retry): it earns `fraction` of a retry.
    #[inline]
    pub fn deposit(&self) {
        let cap = self.cap.load(Ordering::Relaxed);
        if self.balance.load(Ordering::Relaxed) < cap {
            let deposit = self.deposit.load(Ordering::Relaxed);
            let _ = self
                .balance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    (b < cap).then(|| (b + deposit).min(cap))
                });
        }
    }

    /// Takes one retry from the balance, else from the floor. False: the budget is spent,
    /// the failure goes to the caller (counted as exhausted).
    pub fn withdraw(&self) -> bool {
        let taken = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= ONE).then_some(b - ONE)
            })
            .is_ok()
            || self.take_floor();
        if taken {
            self.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// GCRA with a burst of one second's worth of the floor.
    fn take_floor(&self) -> bool {
        let interval = self.floor_interval.load(Ordering::Relaxed);
        if interval == 0 {
            return false;
        }
        let now = self.clock.now();
        let tolerance = SECOND - interval;
        self.floor_due
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |due| {
                let due = due.max(now);
                (due - now <= tolerance).then(|| due + interval)
            })
            .is_ok()
    }

    /// Retries made since the budget was made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused because the budget was spent.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn budget(fraction: f64, floor: u64) -> (RetryBudget, ManualClock) {
        let manual = ManualClock::new(1_000 * SECOND);
        (
            RetryBudget::new(fraction, floor, Clock::Manual(manual.clone())),
            manual,
        )
    }

    #[test]
    fn the_back_off_grows_by_the_multiplier_up_to_the_cap() {
        assert_eq!(backoff(100, 2.0, 1_000, 0, 0.999_999), 99);
        assert_eq!(backoff(100, 2.0, 1_000, 2, 0.5), 200);
        assert_eq!(backoff(100, 2.0, 1_000, 60, 0.5), 500);
        assert_eq!(backoff(100, 2.0, 1_000, u32::MAX, 0.5), 500);
    }

    #[test]
    fn jitter_draws_spread_over_zero_to_one() {
        let draws: Vec<f64> = (0..1000).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(draws.iter().any(|d| *d < 0.1) && draws.iter().any(|d| *d > 0.9));
    }

    #[test]
    fn an_outage_retries_at_most_the_fraction_of_the_calls() {
        let (budget, _) = budget(0.2, 0);
        let mut retries = 0;
        for _ in 0..10_000 {
            budget.deposit();
            for _ in 0..3 {
                if budget.withdraw() {
                    retries += 1;
                }
            }
        }
        assert_eq!(retries, 2_000);
        assert_eq!(budget.retries(), 2_000);
    }

    #[test]
    fn the_balance_remembers_only_recent_calls() {
        let (budget, _) = budget(0.2, 0);
        for _ in 0..100_000 {
            budget.deposit();
        }
        let retries = (0..10_000).filter(|_| budget.withdraw()).count();
        assert_eq!(retries, 200);
    }

    #[test]
    fn new_rates_apply_to_the_calls_that_follow() {
        let (budget, _) = budget(0.2, 0);
        budget.set_rates(0.5, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..100).filter(|_| budget.withdraw()).count(), 5);
        assert_eq!(budget.fraction(), 0.5);
    }

    #[test]
    fn a_smaller_fraction_cuts_the_saved_balance_to_its_cap() {
        let (budget, _) = budget(1.0, 0);
        for _ in 0..5_000 {
            budget.deposit();
        }
        budget.set_rates(0.1, 0);
        assert_eq!((0..10_000).filter(|_| budget.withdraw()).count(), 100);
    }

    #[test]
    fn the_floor_allows_a_few_retries_a_second_without_calls() {
        let (budget, clock) = budget(0.2, 10);
        let first = (0..100).filter(|_| budget.withdraw()).count();
        clock.advance(SECOND / 2);
        let half_a_second_later = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(first, 10);
        assert_eq!(half_a_second_later, 5);
    }
}
