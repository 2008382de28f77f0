//! The token bucket, as GCRA on one atomic word.
//!
//! GCRA (the generic cell rate algorithm) keeps a single "theoretical arrival time" (TAT):
//! the instant at which the bucket would be full again. A request of `cost` tokens moves it
//! by `cost * interval`; it is admitted when the new TAT lies no further ahead of now than
//! the bucket's `tolerance` (`interval * burst`). That is exactly a token bucket holding
//! `burst` tokens refilled continuously at one token per `interval`, and its whole state is
//! one `AtomicU64`, so an acquire is a load, a little arithmetic and a compare-and-swap.

use crate::sync::{AtomicU64, Ordering};

use crate::clock::Clock;
use crate::place::Place;

/// How fast a bucket refills and how much it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds per token (the refill interval), at least 1.
    pub interval: u64,
    /// Tokens the bucket holds when full, at least 1.
    pub burst: u64,
}

/// Why a quota cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaError {
    ZeroRequests,
    ZeroWindow,
    ZeroBurst,
    /// More than one token per nanosecond, or a burst so large the arithmetic overflows.
    OutOfRange,
}

impl Quota {
    /// `max_requests` tokens per `window` nanoseconds, holding `burst` tokens when full.
    ///
    /// The interval is rounded to the nanosecond (as governor does): 3 per second refills
    /// one token every 333,333,333 ns.
    pub fn per_window(max_requests: u64, window: u64, burst: u64) -> Result<Quota, QuotaError> {
        if max_requests == 0 {
            return Err(QuotaError::ZeroRequests);
        }
        if window == 0 {
            return Err(QuotaError::ZeroWindow);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let interval = ((window as u128 + max_requests as u128 / 2) / max_requests as u128) as u64;
        if interval == 0 || interval.checked_mul(burst).is_none() {
            return Err(QuotaError::OutOfRange);
        }
        Ok(Quota { interval, burst })
    }

    /// How far ahead of now the theoretical arrival time may run.
    #[inline]
    pub fn tolerance(&self) -> u64 {
        self.interval * self.burst
    }
}

/// The outcome of an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admitted,
    /// Not enough tokens now; this many nanoseconds until there are.
    Rejected {
        wait: u64,
    },
    /// More tokens than the bucket can ever hold: no wait will help.
    Impossible,
}

/// The atomics of one bucket, laid out for shared memory as well as for this process.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BucketState {
    /// Theoretical arrival time: when the bucket will be full again (ns on the bucket's clock).
    tat: AtomicU64,
    interval: AtomicU64,
    tolerance: AtomicU64,
    allowed: AtomicU64,
    rejected: AtomicU64,
}

impl BucketState {
    /// A full bucket with this quota.
    pub fn new(quota: Quota) -> Self {
        let state = BucketState::default();
        state.set_quota(quota);
        state
    }

    /// Sets the refill rate and the burst (the TAT is rescaled by `TokenBucket::set_quota`).
    fn set_quota(&self, quota: Quota) {
        self.interval.store(quota.interval, Ordering::Relaxed);
        self.tolerance.store(quota.tolerance(), Ordering::Release);
    }
}

/// The pure decision: from the current TAT, admit `cost` tokens at `now` or say how long
/// to wait. `None` for the new TAT when the cost can never fit.
#[inline]
fn decide(tat: u64, now: u64, cost: u64, interval: u64, tolerance: u64) -> Result<u64, Decision> {
    let Some(increment) = cost.checked_mul(interval).filter(|inc| *inc <= tolerance) else {
        return Err(Decision::Impossible);
    };
    let new_tat = tat.max(now).saturating_add(increment);
    let limit = now.saturating_add(tolerance);
    if new_tat <= limit {
        Ok(new_tat)
    } else {
        Err(Decision::Rejected {
            wait: new_tat - limit,
        })
    }
}

/// A token bucket: its state (local or shared) and the clock it reads.
#[derive(Clone)]
pub struct TokenBucket {
    state: Place<BucketState>,
    clock: Clock,
}

impl TokenBucket {
    /// A full bucket owned by this process.
    pub fn new(quota: Quota, clock: Clock) -> Self {
        TokenBucket {
            state: Place::local(BucketState::new(quota)),
            clock,
        }
    }

    /// A bucket over existing state (for example in a shared mapping).
    pub fn over(state: Place<BucketState>, clock: Clock) -> Self {
        TokenBucket { state, clock }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Takes `cost` tokens if the bucket holds them now; never waits.
    #[inline]
    pub fn try_acquire(&self, cost: u64) -> Decision {
        let now = self.clock.now();
        self.try_acquire_at(cost, now)
    }

    /// `try_acquire` at a given instant (the clock already read by the caller).
    #[inline]
    pub fn try_acquire_at(&self, cost: u64, now: u64) -> Decision {
        let state = &*self.state;
        let interval = state.interval.load(Ordering::Relaxed);
        let tolerance = state.tolerance.load(Ordering::Acquire);
        let mut tat = state.tat.load(Ordering::Acquire);
        loop {
            match decide(tat, now, cost, interval, tolerance) {
                Ok(new_tat) => {
                    match state.tat.compare_exchange_weak(
                        tat,
                        new_tat,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            state.allowed.fetch_add(1, Ordering::Relaxed);
                            return Decision::Admitted;
                        }
                        Err(current) => tat = current,
                    }
                }
                Err(decision) => {
                    state.rejected.fetch_add(1, Ordering::Relaxed);
                    return decision;
                }
            }
        }
    }

    /// Nanoseconds until `cost` tokens are available (0 if they are now), or `None` if the
    /// bucket can never hold that many.
    pub fn wait_time(&self, cost: u64) -> Option<u64> {
        let state = &*self.state;
        let now = self.clock.now();
        let tat = state.tat.load(Ordering::Acquire);
        match decide(
            tat,
            now,
            cost,
            state.interval.load(Ordering::Relaxed),
            state.tolerance.load(Ordering::Acquire),
        ) {
            Ok(_) => Some(0),
            Err(Decision::Rejected { wait }) => Some(wait),
            Err(_) => None,
        }
    }

    /// Tokens in the bucket now, fractional while one is refilling.
    pub fn tokens_available(&self) -> f64 {
        let state = &*self.state;
        let now = self.clock.now();
        let tat = state.tat.load(Ordering::Acquire).max(now);
        let interval = state.interval.load(Ordering::Relaxed);
        let limit = now.saturating_add(state.tolerance.load(Ordering::Acquire));
        limit.saturating_sub(tat) as f64 / interval as f64
    }

    /// Refills the bucket to full at once (an operator's reset).
    pub fn refill(&self) {
        self.state.tat.store(0, Ordering::Release);
    }

    /// Changes the rate and burst in place. The tokens already spent stay spent: the debt
    /// that the TAT holds is rescaled from the old interval to the new one.
    pub fn set_quota(&self, quota: Quota) {
        let state = &*self.state;
        let old_interval = state.interval.load(Ordering::Relaxed);
        state.set_quota(quota);
        let now = self.clock.now();
        let _ = state
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat > now && old_interval != quota.interval).then(|| {
                    let debt = (tat - now) as u128 * quota.interval as u128 / old_interval as u128;
                    now.saturating_add(debt.min(u64::MAX as u128) as u64)
                })
            });
    }

    pub fn quota(&self) -> Quota {
        let interval = self.state.interval.load(Ordering::Relaxed);
        Quota {
            interval,
            burst: self.state.tolerance.load(Ordering::Acquire) / interval,
        }
    }

    /// Requests admitted so far.
    pub fn allowed(&self) -> u64 {
        self.state.allowed.load(Ordering::Relaxed)
    }

    /// Requests rejected so far.
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, NANOS_PER_SECOND};
    use proptest::prelude::*;

    const SECOND: u64 = NANOS_PER_SECOND;

    fn bucket(max: u64, window: u64, burst: u64) -> (TokenBucket, ManualClock) {
        let clock = ManualClock::new(1_000 * SECOND);
        let quota = Quota::per_window(max, window, burst).unwrap();
        (TokenBucket::new(quota, Clock::Manual(clock.clone())), clock)
    }

    #[test]
    fn a_new_bucket_starts_full_and_admits_exactly_its_burst() {
        let (bucket, _clock) = bucket(100, 60 * SECOND, 100);
        let admitted = (0..150)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 100);
        assert_eq!(bucket.allowed(), 100);
        assert_eq!(bucket.rejected(), 50);
    }

    #[test]
    fn a_rejection_says_how_long_until_the_next_token() {
        let (bucket, _clock) = bucket(100, 60 * SECOND, 100);
        for _ in 0..100 {
            bucket.try_acquire(1);
        }
        // 100 per 60 s refills one token every 0.6 s.
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 600_000_000 }
        );
        assert_eq!(bucket.wait_time(1), Some(600_000_000));
        assert_eq!(bucket.wait_time(3), Some(1_800_000_000));
    }

    #[test]
    fn tokens_refill_continuously_at_the_quota_rate() {
        let (bucket, clock) = bucket(10, SECOND, 10);
        for _ in 0..10 {
            bucket.try_acquire(1);
        }
        assert_eq!(bucket.tokens_available(), 0.0);
        clock.advance(SECOND / 4);
        assert!((bucket.tokens_available() - 2.5).abs() < 1e-9);
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 50_000_000 }
        );
    }

    #[test]
    fn does_not_allow_one_extra_token_after_a_long_idle_interval() {
        let (bucket, clock) = bucket(5, SECOND, 5);
        clock.advance(365 * 24 * 3600 * SECOND);
        let admitted = (0..10)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn the_last_nanosecond_of_refill_is_honoured() {
        let (bucket, clock) = bucket(1, SECOND, 1);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        clock.advance(SECOND - 1);
        assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: 1 });
        clock.advance(1);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
    }

    #[test]
    fn a_cost_larger_than_the_burst_is_impossible_not_merely_rejected() {
        let (bucket, _clock) = bucket(10, SECOND, 10);
        assert_eq!(bucket.try_acquire(11), Decision::Impossible);
        assert_eq!(bucket.wait_time(11), None);
        assert_eq!(bucket.try_acquire(10), Decision::Admitted);
    }

    #[test]
    fn a_burst_smaller_than_the_rate_caps_what_an_idle_bucket_holds() {
        let (bucket, _clock) = bucket(100, SECOND, 10);
        let admitted = (0..100)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn changing_the_quota_keeps_the_tokens_already_spent() {
        let (bucket, _clock) = bucket(10, SECOND, 10);
        for _ in 0..10 {
            bucket.try_acquire(1);
        }
        bucket.set_quota(Quota::per_window(20, SECOND, 20).unwrap());
        // Spent 10 of a now-20 burst: 10 remain, none more.
        let admitted = (0..30)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn quota_rejects_zero_and_overflowing_parameters() {
        assert_eq!(
            Quota::per_window(0, SECOND, 1),
            Err(QuotaError::ZeroRequests)
        );
        assert_eq!(Quota::per_window(1, 0, 1), Err(QuotaError::ZeroWindow));
        assert_eq!(Quota::per_window(1, SECOND, 0), Err(QuotaError::ZeroBurst));
        assert_eq!(Quota::per_window(10, 1, 1), Err(QuotaError::OutOfRange));
        assert_eq!(
            Quota::per_window(1, u64::MAX / 2, 4),
            Err(QuotaError::OutOfRange)
        );
    }

    #[test]
    fn eight_threads_admit_exactly_the_burst_between_them() {
        let quota = Quota::per_window(1_000, 3600 * SECOND, 1_000).unwrap();
        let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
        let admitted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let bucket = bucket.clone();
                    scope.spawn(move || {
                        (0..10_000)
                            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 1_000);
        assert_eq!(bucket.allowed() + bucket.rejected(), 80_000);
    }

    /// A plain token bucket counting tokens in units of 1/interval ns: the reference model.
    struct ReferenceBucket {
        capacity_ns: u128,
        interval: u128,
        level_ns: u128,
        last: u64,
    }

    impl ReferenceBucket {
        fn acquire(&mut self, now: u64, cost: u64) -> bool {
            self.level_ns = (self.level_ns + (now - self.last) as u128).min(self.capacity_ns);
            self.last = now;
            let need = cost as u128 * self.interval;
            if need <= self.level_ns {
                self.level_ns -= need;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        #[test]
        fn gcra_agrees_with_a_plain_token_bucket(
            max in 1u64..50,
            window_ms in 1u64..5_000,
            burst in 1u64..50,
            ops in proptest::collection::vec((0u64..2_000_000_000, 1u64..5), 1..200),
        ) {
            let quota = Quota::per_window(max, window_ms * 1_000_000, burst).unwrap();
            let clock = ManualClock::new(0);
            let bucket = TokenBucket::new(quota, Clock::Manual(clock.clone()));
            let mut model = ReferenceBucket {
                capacity_ns: quota.tolerance() as u128,
                interval: quota.interval as u128,
                level_ns: quota.tolerance() as u128,
                last: 0,
            };
            for (advance, cost) in ops {
                clock.advance(advance);
                let expected = if cost > burst {
                    None
                } else {
                    Some(model.acquire(clock.now(), cost))
                };
                let actual = match bucket.try_acquire(cost) {
                    Decision::Admitted => Some(true),
                    Decision::Rejected { .. } => Some(false),
                    Decision::Impossible => None,
                };
                prop_assert_eq!(actual, expected);
            }
        }
    }
}

/// Every interleaving of the CAS loop (loom): `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn loom_three_threads_share_a_budget_of_two_exactly() {
        loom::model(|| {
            let quota = Quota::per_window(2, 1_000_000_000, 2).unwrap();
            let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let bucket = bucket.clone();
                    loom::thread::spawn(move || bucket.try_acquire(1) == Decision::Admitted)
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count();
            assert_eq!(admitted, 2);
            assert_eq!(bucket.allowed(), 2);
            assert_eq!(bucket.rejected(), 1);
        });
    }

    #[test]
    fn loom_weighted_acquires_never_overdraw() {
        loom::model(|| {
            let quota = Quota::per_window(5, 1_000_000_000, 5).unwrap();
            let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
            let a = {
                let bucket = bucket.clone();
                loom::thread::spawn(move || bucket.try_acquire(3) == Decision::Admitted)
            };
            let b = {
                let bucket = bucket.clone();
                loom::thread::spawn(move || bucket.try_acquire(3) == Decision::Admitted)
            };
            let both = [a.join().unwrap(), b.join().unwrap()];
            assert_eq!(both.iter().filter(|ok| **ok).count(), 1);
            assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        });
    }
}
