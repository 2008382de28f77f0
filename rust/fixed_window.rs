//! A window counted per calendar interval, as exchanges count: `"1200/1m fixed"` admits
//! 1,200 in each minute that starts at a multiple of 60 s since the Unix epoch, and its
//! count starts again at 0 when the next one begins.
//!
//! The whole state is the window's one word: the interval's number (its low 31 bits) and
//! the count in it, so an acquire is a load, a division and a compare-and-swap, as GCRA's.
//! Time is epoch nanoseconds (`Clock::wall`).

use crate::bucket::{Decision, Window};
use crate::sync::Ordering;

/// The most a fixed window may admit per interval (its count is 32 bits of the word).
pub const MAX_COUNT: u64 = u32::MAX as u64;

const COUNT_BITS: u32 = 32;
/// The interval's number kept in the word: 31 bits, wrapping (after 2^31 intervals of
/// idleness a stale count could be taken for the current one: 68 years of seconds).
const PERIOD_MASK: u64 = (1 << 31) - 1;

/// How far ahead of ours another process's calendar may run: each process aligns its
/// monotonic clock to the wall clock once (`Clock::wall`), so their readings differ by
/// the error of that one reading, far below a second.
const SKEW_NANOS: u64 = 1_000_000_000;

/// The interval in force at `wall` and the count in it.
///
/// A word whose interval is a little ahead of ours (at most `SKEW_NANOS`, and at least
/// the next interval) was written by a thread or process whose clock already passed the
/// boundary: we count in that interval too, never reset it back to one that is over
/// (which would admit its budget a second time). Any other interval is over, and a fresh
/// word (0) holds none: its 31 bits of interval must not pass for one far ahead.
#[inline(always)]
fn current(word: u64, wall: u64, length: u64) -> (u64, u64) {
    let length = length.max(1);
    let ours = wall / length;
    let stored = (word >> COUNT_BITS) & PERIOD_MASK;
    let ahead = stored.wrapping_sub(ours) & PERIOD_MASK;
    if word != 0 && ahead <= (SKEW_NANOS / length).max(1) {
        (ours + ahead, word & MAX_COUNT)
    } else {
        (ours, 0)
    }
}

#[inline(always)]
fn word_of(period: u64, count: u64) -> u64 {
    (period & PERIOD_MASK) << COUNT_BITS | count.min(MAX_COUNT)
}

/// What a refund of a take needs: the interval it counted in (never 0).
#[inline(always)]
fn taken_in(period: u64) -> u64 {
    (period & PERIOD_MASK) | 1 << 40
}

#[inline(always)]
fn decide(
    word: u64,
    cost: u64,
    wall: u64,
    length: u64,
    limit: u64,
) -> Result<(u64, u64), Decision> {
    if cost > limit {
        return Err(Decision::Impossible);
    }
    let (period, count) = current(word, wall, length);
    if count + cost <= limit {
        Ok((period, count + cost))
    } else {
        // The next interval starts empty.
        let next = (period + 1).saturating_mul(length);
        Err(Decision::Rejected {
            wait: next.saturating_sub(wall).max(1),
        })
    }
}

/// Counts `cost` in the interval of `wall` if it stays within the limit.
#[inline(always)]
pub fn take(window: &Window, cost: u64, wall: u64, high: bool) -> Result<u64, Decision> {
    let params = &window.slots[0];
    let length = params.interval.load(Ordering::Relaxed);
    let limit = params.tolerance(high);
    let mut word = window.word.load(Ordering::Acquire);
    loop {
        let (period, count) = decide(word, cost, wall, length, limit)?;
        match window.word.compare_exchange_weak(
            word,
            word_of(period, count),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(taken_in(period)),
            Err(current) => word = current,
        }
    }
}

/// What `take` would decide, without counting.
pub fn peek(window: &Window, cost: u64, wall: u64, high: bool) -> Result<u64, Decision> {
    let params = &window.slots[0];
    let word = window.word.load(Ordering::Acquire);
    decide(
        word,
        cost,
        wall,
        params.interval.load(Ordering::Relaxed),
        params.tolerance(high),
    )
    .map(|(period, _)| taken_in(period))
}

fn update(window: &Window, change: impl Fn(u64, u64, u64) -> Option<u64>, wall: u64) {
    let length = window.slots[0].interval.load(Ordering::Relaxed);
    let _ = window
        .word
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (period, count) = current(word, wall, length);
            change(word, period, count).map(|count| word_of(period, count))
        });
}

/// Uncounts `cost` of the take made in interval `taken` (`take`'s `Ok`), if that interval
/// is still the one counted: a later interval owes it nothing.
pub fn give_back(window: &Window, cost: u64, taken: u64) {
    let _ = window
        .word
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let same = (word >> COUNT_BITS) & PERIOD_MASK == taken & PERIOD_MASK;
            (same && taken != 0).then(|| word_of(taken, (word & MAX_COUNT).saturating_sub(cost)))
        });
}

/// Uncounts `cost` in the current interval (an operator's refund, no take to bound it).
pub fn refund(window: &Window, cost: u64, wall: u64) {
    update(window, |_, _, count| Some(count.saturating_sub(cost)), wall);
}

/// Counts `cost` whatever the limit: the call already happened.
pub fn charge(window: &Window, cost: u64, wall: u64) {
    update(window, |_, _, count| Some(count.saturating_add(cost)), wall);
}

/// Makes exactly `used` count in the current interval (what the exchange reports).
pub fn sync(window: &Window, used: u64, wall: u64) {
    update(window, |_, _, _| Some(used), wall);
}

/// Requests the current interval still admits (the reserve included).
pub fn tokens_at(window: &Window, wall: u64) -> f64 {
    let params = &window.slots[0];
    let (_, count) = current(
        window.word.load(Ordering::Acquire),
        wall,
        params.interval.load(Ordering::Relaxed),
    );
    params.tolerance(true).saturating_sub(count) as f64
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::bucket::tests::{admitted_by_eight_threads, advances_and_costs, outcome};
    use crate::bucket::{Decision, Kind, Quota, TokenBucket};
    use crate::clock::{Clock, ManualClock, NANOS_PER_SECOND};
    use proptest::prelude::*;

    const SECOND: u64 = NANOS_PER_SECOND;
    const MINUTE: u64 = 60 * SECOND;

    fn fixed(max: u64, length: u64, start: u64) -> (TokenBucket, ManualClock) {
        let clock = ManualClock::new(start);
        let quota = Quota::counted(Kind::Fixed, max, length).unwrap();
        (TokenBucket::new(quota, Clock::Manual(clock.clone())), clock)
    }

    fn admitted(bucket: &TokenBucket, calls: usize) -> usize {
        (0..calls)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count()
    }

    #[test]
    fn a_fresh_one_second_window_counts_in_the_current_second_of_2026_not_one_far_ahead() {
        // 2026-12-02 in seconds: the low 31 bits of the second's number are above 2^30,
        // where a fresh (zero) word once read as an interval 14 years ahead.
        let start = 1_796_200_000 * SECOND;
        let (bucket, clock) = fixed(1, SECOND, start);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: SECOND });
        clock.advance(SECOND);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
    }

    #[test]
    fn a_count_of_an_interval_long_over_is_not_taken_for_one_ahead() {
        let start = 1_796_200_000 * SECOND;
        let (bucket, clock) = fixed(1, SECOND, start);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        clock.advance(3 * SECOND); // the stored interval is 3 behind: over
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
    }

    #[test]
    fn a_fixed_window_admits_its_count_per_calendar_interval_and_then_waits_for_the_next() {
        // 10:00:50 UTC of some day: 10 s before the minute ends.
        let start = 1_700_000_000 / 60 * 60 * SECOND + 50 * SECOND;
        let (bucket, clock) = fixed(5, MINUTE, start);
        assert_eq!(admitted(&bucket, 8), 5);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 10 * SECOND }
        );
        clock.advance(10 * SECOND - 1);
        assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: 1 });
        clock.advance(1);
        assert_eq!(admitted(&bucket, 8), 5);
    }

    #[test]
    fn a_fixed_window_never_admits_more_than_its_count_in_one_interval_however_calls_are_spread() {
        let (bucket, clock) = fixed(3, SECOND, 0);
        let mut per_second = std::collections::HashMap::new();
        for _ in 0..1_000 {
            if bucket.try_acquire(1) == Decision::Admitted {
                *per_second.entry(clock.now() / SECOND).or_insert(0) += 1;
            }
            clock.advance(SECOND / 7);
        }
        assert!(per_second.values().all(|n| *n <= 3));
        assert_eq!(
            per_second.values().sum::<u64>(),
            3 * per_second.len() as u64
        );
    }

    #[test]
    fn a_clock_a_hair_behind_counts_in_the_interval_another_already_started() {
        // One process's clock passed the boundary and counted 2 there; a process whose
        // clock is 1 us behind must not reset the count to the interval that is over.
        let (ahead, _clock) = fixed(3, SECOND, 10 * SECOND);
        assert_eq!(admitted(&ahead, 2), 2);
        let behind_clock = Clock::Manual(ManualClock::new(10 * SECOND - 1_000));
        let behind = TokenBucket::over(ahead.state_place(), behind_clock);
        assert_eq!(admitted(&behind, 5), 1);
    }

    #[test]
    fn settle_sync_and_refund_count_in_the_current_interval_only() {
        let (bucket, clock) = fixed(10, SECOND, 5 * SECOND);
        let taken = bucket.reserve_at(6, clock.now(), false).unwrap();
        bucket.give_back(4, &taken);
        assert_eq!(bucket.window_tokens(), vec![8.0]);
        clock.advance(SECOND);
        bucket.give_back(2, &taken); // the interval it counted in is over
        assert_eq!(bucket.window_tokens(), vec![10.0]);
        bucket.sync(0, 9);
        assert_eq!(admitted(&bucket, 5), 1);
        bucket.adjust(3, true);
        assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: SECOND });
        bucket.adjust(5, false);
        assert_eq!(bucket.window_tokens(), vec![2.0]);
    }

    #[test]
    fn a_cost_above_the_count_is_impossible_and_the_reserve_is_left_to_high_priority() {
        let clock = ManualClock::new(0);
        let quota = Quota::counted(Kind::Fixed, 10, SECOND).unwrap();
        let bucket = TokenBucket::with_windows(&[quota], 3, Clock::Manual(clock.clone()));
        assert_eq!(bucket.try_acquire(11), Decision::Impossible);
        assert_eq!(bucket.acquire_at(8, 0, false), Decision::Impossible);
        assert_eq!(bucket.acquire_at(7, 0, false), Decision::Admitted);
        assert!(matches!(
            bucket.acquire_at(1, 0, false),
            Decision::Rejected { .. }
        ));
        assert_eq!(bucket.acquire_at(3, 0, true), Decision::Admitted);
    }

    #[test]
    fn a_short_window_at_an_epoch_time_starts_empty_and_counts_in_its_own_millisecond() {
        // 1 ms windows at today's epoch time: interval numbers beyond the word's 31 bits.
        let (bucket, clock) = fixed(1, SECOND / 1_000, 1_699_956_000 * SECOND);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert_eq!(bucket.window_tokens(), vec![0.0]);
        clock.advance(SECOND / 1_000);
        assert_eq!(bucket.window_tokens(), vec![1.0]);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        // Idle for 2^31 ms and 5 more (25 days): the stale count is not taken for now.
        clock.advance((1 << 31) * SECOND / 1_000 + 5 * SECOND / 1_000);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
    }

    proptest! {
        #[test]
        fn a_fixed_window_agrees_with_a_plain_count_per_calendar_interval(
            max in 1u64..20,
            length_ms in 1u64..2_000,
            ops in advances_and_costs(),
        ) {
            let length = length_ms * 1_000_000;
            let (bucket, clock) = fixed(max, length, 1_699_956_000 * SECOND + 123);
            let mut counts = std::collections::HashMap::new();
            for (advance, cost) in ops {
                clock.advance(advance);
                let interval = clock.now() / length;
                let used = counts.get(&interval).copied().unwrap_or(0);
                let expected = if cost > max { None } else { Some(used + cost <= max) };
                let actual = outcome(bucket.try_acquire(cost));
                prop_assert_eq!(actual, expected);
                if actual == Some(true) {
                    *counts.entry(interval).or_insert(0) += cost;
                }
            }
        }
    }

    #[test]
    fn eight_threads_admit_exactly_the_count_of_a_fixed_window() {
        let (bucket, _clock) = fixed(1_000, 3600 * SECOND, 0);
        assert_eq!(admitted_by_eight_threads(&bucket, 10_000), 1_000);
    }
}

/// Every interleaving of the compare-and-swap (loom): `scripts/test-loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use crate::bucket::loom_tests::admitted_by_threads;
    use crate::bucket::{Decision, Kind, Quota, TokenBucket};
    use crate::clock::{Clock, ManualClock};

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn loom_three_threads_share_a_fixed_budget_of_two_exactly() {
        crate::sync::model(
            "loom_three_threads_share_a_fixed_budget_of_two_exactly",
            || {
                let quota = Quota::counted(Kind::Fixed, 2, SECOND).unwrap();
                let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
                let admitted = admitted_by_threads(&bucket, 3);
                assert_eq!(admitted, 2);
            },
        );
    }

    #[test]
    fn loom_a_clock_behind_the_boundary_never_reopens_the_interval_that_is_over() {
        // 1 per second, the interval [0, 1 s) already spent. A reads 1 s - 1 ns, B reads
        // 1 s: whatever the order, exactly one call (B's interval's) is admitted.
        crate::sync::model(
            "loom_a_clock_behind_the_boundary_never_reopens_the_interval_that_is_over",
            || {
                let quota = Quota::counted(Kind::Fixed, 1, SECOND).unwrap();
                let early = TokenBucket::new(quota, Clock::Manual(ManualClock::new(SECOND - 1)));
                assert_eq!(early.try_acquire(1), Decision::Admitted);
                let late =
                    TokenBucket::over(early.state_place(), Clock::Manual(ManualClock::new(SECOND)));
                let a = loom::thread::spawn(move || early.try_acquire(1) == Decision::Admitted);
                let b = loom::thread::spawn(move || late.try_acquire(1) == Decision::Admitted);
                let admitted = [a.join().unwrap(), b.join().unwrap()];
                assert_eq!(admitted, [false, true]);
            },
        );
    }
}
