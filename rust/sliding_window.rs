//! A sliding window: `"10/1s sliding"` never admits more than 10 in any interval of 1 s.
//!
//! Exact, so it keeps a log: when each of its last N admitted requests expires (admitted
//! at t, it stops counting at t + length), in order. Request `cost` more fits when the
//! entry `cost` places after the oldest has expired: it and every older one are out of
//! any interval ending now. The log is a ring of N entries in the bucket's `SlidingLog`;
//! the window's word holds how many requests it ever admitted (the ring's head).
//!
//! Changing N entries cannot be one compare-and-swap, so a take holds the window for the
//! few loads and stores it makes (a minimal critical section: no allocation, no system
//! call, nothing that can fail inside). The lock is the word's top bit, in shared memory
//! as well: a process killed inside it would block the window, so a waiter that sees the
//! same locked word for `STEAL_AFTER` (a million times what a holder runs, even
//! descheduled on a loaded host) takes it over, flipping `TURN` so that two such waiters
//! cannot both succeed.

use crate::bucket::{Decision, SlidingLog, Window};
use crate::sync::{yield_now, AtomicU64, Ordering};

/// The word's lock bit.
const LOCKED: u64 = 1 << 63;
/// Flipped by a take-over of a lock whose holder is gone.
const TURN: u64 = 1 << 62;
const HEAD: u64 = TURN - 1;
/// Spins before each yield while the window is held.
const SPINS: u32 = 64;
/// How long a waiter sees the same locked word before taking the window over.
#[cfg(not(loom))]
const STEAL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A take's record (`take`'s `Ok`): its first entry and its cost, which a refund needs.
#[inline(always)]
fn taken_as(first: u64, cost: u64) -> u64 {
    first << 8 | cost
}

/// The window held: its head and the turn bit to put back.
struct Held<'a> {
    window: &'a Window,
    head: u64,
    turn: u64,
}

impl Held<'_> {
    fn release(self, head: u64) {
        self.window
            .word
            .store((head & HEAD) | self.turn, Ordering::Release);
    }
}

fn hold(window: &Window) -> Held<'_> {
    let mut seen = 0;
    let mut turns = 0u32;
    #[cfg(not(loom))]
    let mut since: Option<std::time::Instant> = None;
    loop {
        let word = window.word.load(Ordering::Relaxed);
        if word & LOCKED == 0 {
            if window
                .word
                .compare_exchange_weak(word, word | LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Held {
                    window,
                    head: word & HEAD,
                    turn: word & TURN,
                };
            }
            continue;
        }
        if word != seen {
            (seen, turns) = (word, 0);
            #[cfg(not(loom))]
            {
                since = None;
            }
        }
        turns = turns.wrapping_add(1);
        if cfg!(loom) || turns % SPINS == 0 {
            #[cfg(not(loom))]
            if since.get_or_insert_with(std::time::Instant::now).elapsed() >= STEAL_AFTER
                && window
                    .word
                    .compare_exchange(word, word ^ TURN, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Held {
                    window,
                    head: word & HEAD,
                    turn: (word ^ TURN) & TURN,
                };
            }
            yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The window's limits and its entries.
struct Log<'a> {
    length: u64,
    limit: u64,
    entries: &'a [AtomicU64],
}

impl<'a> Log<'a> {
    /// The window's log; None when it has no entries (only a corrupt shared file's
    /// offset can say so), which then admits nothing and changes nothing.
    fn of(window: &Window, log: &'a SlidingLog, high: bool) -> Option<Log<'a>> {
        let params = &window.slots[0];
        let size = params.tolerance(true);
        let entries = log.range(window.slots[1].interval.load(Ordering::Relaxed), size);
        (!entries.is_empty()).then(|| Log {
            length: params.interval.load(Ordering::Relaxed),
            limit: params.tolerance(high),
            entries,
        })
    }

    /// The entry of the `unit`-th request ever admitted (the ring wraps at N).
    #[inline(always)]
    fn entry(&self, unit: u64) -> &AtomicU64 {
        &self.entries[(unit % self.entries.len() as u64) as usize]
    }

    fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether `cost` more fit at `now` after `head` requests: the entry `cost` places
    /// after the oldest one kept must have expired (all older ones have too).
    #[inline(always)]
    fn decide(&self, head: u64, cost: u64, now: u64) -> Result<(), Decision> {
        if cost > self.limit || cost > self.size() {
            return Err(Decision::Impossible);
        }
        if cost == 0 {
            return Ok(());
        }
        if let Some(unit) = (head + cost).checked_sub(self.limit + 1) {
            let expiry = self.entry(unit).load(Ordering::Relaxed);
            if expiry > now {
                return Err(Decision::Rejected { wait: expiry - now });
            }
        }
        Ok(())
    }

    /// Appends `cost` entries admitted at `now` (the last N of them if more). An entry
    /// never expires before the one before it, so the log stays in order of expiry even
    /// when a thread's clock reading is a hair older than the last take's.
    fn append(&self, head: u64, cost: u64, now: u64) -> u64 {
        let last = match head {
            0 => 0,
            _ => self.entry(head - 1).load(Ordering::Relaxed),
        };
        let expiry = now.saturating_add(self.length).max(last);
        let end = head + cost;
        for unit in end.saturating_sub(self.size()).max(head)..end {
            self.entry(unit).store(expiry, Ordering::Relaxed);
        }
        end
    }

    /// Removes the entries of units `from..to` (within the log, before `head`): the older
    /// entries move up into their places and the oldest become expired. Entries after
    /// them keep their units, so another take's record still names its own entries or
    /// older ones: a refund never removes a request newer than its own.
    fn remove(&self, head: u64, from: u64, to: u64) {
        let from = from.max(head.saturating_sub(self.size()));
        let to = to.min(head);
        if from >= to {
            return;
        }
        let gone = to - from;
        let oldest = head.saturating_sub(self.size());
        for unit in (oldest..from).rev() {
            let moved = self.entry(unit).load(Ordering::Relaxed);
            self.entry(unit + gone).store(moved, Ordering::Relaxed);
        }
        for unit in oldest..(oldest + gone).min(to) {
            self.entry(unit).store(0, Ordering::Relaxed);
        }
    }
}

/// Admits `cost` at `now` (monotonic ns) if no interval of the window's length would then
/// hold more than its limit.
pub fn take(
    window: &Window,
    log: &SlidingLog,
    cost: u64,
    now: u64,
    high: bool,
) -> Result<u64, Decision> {
    let Some(entries) = Log::of(window, log, high) else {
        return Err(Decision::Impossible);
    };
    if cost == 0 {
        return Ok(0);
    }
    if cost > entries.limit {
        return Err(Decision::Impossible);
    }
    let held = hold(window);
    let head = held.head;
    match entries.decide(head, cost, now) {
        Ok(()) => {
            let end = entries.append(head, cost, now);
            held.release(end);
            Ok(taken_as(head, cost))
        }
        Err(refused) => {
            held.release(head);
            Err(refused)
        }
    }
}

/// What `take` would decide now, without taking (read without holding the window).
pub fn peek(
    window: &Window,
    log: &SlidingLog,
    cost: u64,
    now: u64,
    high: bool,
) -> Result<u64, Decision> {
    let head = window.word.load(Ordering::Acquire) & HEAD;
    Log::of(window, log, high)
        .ok_or(Decision::Impossible)?
        .decide(head, cost, now)
        .map(|()| taken_as(head, cost))
}

/// Gives back at most `cost` of one take (`taken`, what `take` returned): its newest
/// entries, if the log still holds them.
pub fn give_back(window: &Window, log: &SlidingLog, cost: u64, taken: u64) {
    let (first, took) = (taken >> 8, taken & 0xff);
    if took == 0 || cost == 0 {
        return;
    }
    let Some(entries) = Log::of(window, log, true) else {
        return;
    };
    let held = hold(window);
    let end = first + took;
    entries.remove(held.head, end - cost.min(took), end);
    let head = held.head;
    held.release(head);
}

/// Removes `cost` of the oldest entries still in the window (an operator's refund, or a
/// remote budget's stand-in refunding as its store does: no take to bound it).
pub fn refund(window: &Window, log: &SlidingLog, cost: u64, now: u64) {
    let Some(entries) = Log::of(window, log, true) else {
        return;
    };
    let held = hold(window);
    let head = held.head;
    // The oldest live entries: whoever's they are, they leave the window first (removing
    // the newest would let a later interval hold more than the limit).
    let oldest = head.saturating_sub(entries.size());
    let live = (oldest..head)
        .find(|unit| entries.entry(*unit).load(Ordering::Relaxed) > now)
        .unwrap_or(head);
    entries.remove(head, live, live.saturating_add(cost).min(head));
    held.release(head);
}

/// Appends `cost` entries whatever the limit: the call already happened.
pub fn charge(window: &Window, log: &SlidingLog, cost: u64, now: u64) {
    let Some(entries) = Log::of(window, log, true) else {
        return;
    };
    let held = hold(window);
    let end = entries.append(held.head, cost, now);
    held.release(end);
}

/// Makes exactly `used` requests count as admitted now (what the exchange reports): the
/// log is rewritten, `used` entries expiring one length from now, the rest expired.
pub fn sync(window: &Window, log: &SlidingLog, used: u64, now: u64) {
    let Some(entries) = Log::of(window, log, true) else {
        return;
    };
    let held = hold(window);
    let size = entries.size();
    let head = held.head;
    for unit in head..head + size {
        entries.entry(unit).store(0, Ordering::Relaxed);
    }
    let end = entries.append(head + size, used.min(size), now);
    held.release(end);
}

/// Empties the log (an operator's reset).
pub fn refill(window: &Window, log: &SlidingLog) {
    let Some(entries) = Log::of(window, log, true) else {
        return;
    };
    let held = hold(window);
    for entry in entries.entries {
        entry.store(0, Ordering::Relaxed);
    }
    let head = held.head;
    held.release(head);
}

/// Requests the window admits now (the reserve included): its limit less the entries
/// that have not expired.
pub fn tokens_at(window: &Window, log: &SlidingLog, now: u64) -> f64 {
    let Some(entries) = Log::of(window, log, true) else {
        return 0.0;
    };
    let live = entries
        .entries
        .iter()
        .filter(|e| e.load(Ordering::Relaxed) > now)
        .count() as u64;
    entries.limit.saturating_sub(live) as f64
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::bucket::tests::{admitted_by_eight_threads, advances_and_costs, outcome};
    use crate::bucket::{check_windows, Decision, Kind, Quota, TokenBucket, WindowsError};
    use crate::clock::{Clock, ManualClock, NANOS_PER_SECOND};
    use proptest::prelude::*;

    const SECOND: u64 = NANOS_PER_SECOND;

    fn sliding(max: u64, length: u64) -> (TokenBucket, ManualClock) {
        let clock = ManualClock::new(1_000 * SECOND);
        let quota = Quota::counted(Kind::Sliding, max, length).unwrap();
        (TokenBucket::new(quota, Clock::Manual(clock.clone())), clock)
    }

    #[test]
    fn a_sliding_window_admits_again_exactly_when_the_oldest_request_leaves_it() {
        let (bucket, clock) = sliding(3, SECOND);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        clock.advance(SECOND / 2);
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: SECOND / 2 }
        );
        clock.advance(SECOND / 2);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: SECOND / 2 }
        );
    }

    #[test]
    fn a_sliding_window_refuses_a_burst_at_the_calendar_edge_that_a_fixed_one_admits() {
        let (bucket, clock) = sliding(10, SECOND);
        clock.set(1_001 * SECOND - 1).unwrap();
        assert_eq!(bucket.try_acquire(10), Decision::Admitted);
        clock.advance(2);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: SECOND - 2 }
        );
    }

    #[test]
    fn only_a_bucket_with_a_sliding_window_makes_a_log() {
        let clock = Clock::Manual(ManualClock::new(SECOND));
        let gcra = TokenBucket::new(Quota::per_window(5, SECOND, 5).unwrap(), clock.clone());
        let fixed = Quota::counted(Kind::Fixed, 5, SECOND).unwrap();
        let fixed = TokenBucket::new(fixed, clock);
        assert_eq!(gcra.try_acquire(1), Decision::Admitted);
        assert_eq!(fixed.try_acquire(1), Decision::Admitted);
        assert!(!gcra.log_made() && !fixed.log_made());
        assert!(sliding(5, SECOND).0.log_made());
    }

    #[test]
    fn a_bucket_switched_to_a_sliding_window_makes_its_log_and_every_view_counts_in_it() {
        let clock = ManualClock::new(1_000 * SECOND);
        let quota = Quota::per_window(5, SECOND, 5).unwrap();
        let bucket = TokenBucket::new(quota, Clock::Manual(clock.clone()));
        let view = TokenBucket::over(bucket.state_place(), Clock::Manual(clock.clone()));
        let slide = Quota::counted(Kind::Sliding, 2, SECOND).unwrap();
        bucket.set_windows(&[quota, slide], 0);
        assert!(view.log_made());
        assert_eq!(view.try_acquire(1), Decision::Admitted);
        clock.advance(SECOND / 2);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert_eq!(view.try_acquire(1), Decision::Rejected { wait: SECOND / 2 });
        clock.advance(SECOND / 2);
        assert_eq!(view.try_acquire(1), Decision::Admitted);
    }

    #[test]
    fn too_large_sliding_windows_are_refused_naming_the_total() {
        assert_eq!(
            Quota::counted(Kind::Sliding, 129, SECOND),
            Err(crate::bucket::QuotaError::SlidingTooLarge)
        );
        let q = Quota::counted(Kind::Sliding, 100, SECOND).unwrap();
        assert_eq!(
            check_windows(&[q, q], 0),
            Err(WindowsError::SlidingTooLarge(200))
        );
    }

    #[test]
    fn a_refund_removes_the_takes_own_entries_and_never_a_later_one() {
        let (bucket, clock) = sliding(5, SECOND);
        let first = bucket.reserve_at(3, clock.now(), false).unwrap();
        clock.advance(SECOND / 2);
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        bucket.give_back(3, &first);
        assert_eq!(bucket.window_tokens(), vec![3.0]);
        bucket.give_back(3, &first); // again: removes older (expired) entries only
        assert_eq!(bucket.window_tokens(), vec![3.0]);
        clock.advance(SECOND / 2);
        assert_eq!(bucket.window_tokens(), vec![3.0]);
        clock.advance(SECOND / 2);
        assert_eq!(bucket.window_tokens(), vec![5.0]);
    }

    #[test]
    fn sync_charge_and_refund_move_the_log() {
        let (bucket, clock) = sliding(10, SECOND);
        bucket.sync(0, 7);
        assert_eq!(bucket.window_tokens(), vec![3.0]);
        bucket.adjust(5, true);
        assert_eq!(bucket.window_tokens(), vec![0.0]);
        // The log holds the last 10: a charge past the limit is remembered up to it.
        bucket.adjust(4, false);
        assert_eq!(bucket.window_tokens(), vec![4.0]);
        clock.advance(SECOND);
        assert_eq!(bucket.window_tokens(), vec![10.0]);
        bucket.refill();
        assert_eq!(bucket.try_acquire(10), Decision::Admitted);
    }

    #[test]
    fn eight_threads_admit_exactly_the_limit_of_a_sliding_window() {
        let (bucket, _clock) = sliding(100, 3600 * SECOND);
        assert_eq!(admitted_by_eight_threads(&bucket, 5_000), 100);
    }

    #[test]
    fn a_sliding_window_whose_log_offset_is_corrupt_refuses_and_never_panics() {
        let (bucket, _clock) = sliding(5, SECOND);
        let state = bucket.state_place();
        let window = state.window_for_tests(0);
        window.slots[1]
            .interval
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(bucket.try_acquire(1), Decision::Impossible);
        bucket.adjust(2, true);
        bucket.adjust(2, false);
        bucket.sync(0, 3);
        bucket.refill();
        assert_eq!(bucket.window_tokens(), vec![0.0]);
        assert_eq!(bucket.wait_time(1), None);
    }

    #[test]
    fn a_refund_without_a_take_removes_the_oldest_live_entries_never_letting_more_in() {
        // 2 per second: one at t, one at t + 0.9 s, then a refund of 1. At t + 1 s the
        // entry of t + 0.9 s still counts: one more fits, not two (3 in 0.9 s to 1.9 s).
        let (bucket, clock) = sliding(2, SECOND);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        clock.advance(SECOND * 9 / 10);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        bucket.adjust(1, false);
        assert_eq!(bucket.window_tokens(), vec![1.0]);
        clock.advance(SECOND / 10);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected {
                wait: SECOND * 9 / 10
            }
        );
    }

    #[test]
    fn a_cost_of_zero_always_fits_and_changes_nothing() {
        let (bucket, _clock) = sliding(2, SECOND);
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        for _ in 0..5 {
            assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: SECOND });
            assert_eq!(bucket.wait_time(0), Some(0));
            assert_eq!(bucket.try_acquire(0), Decision::Admitted);
        }
    }

    #[test]
    fn a_window_whose_holder_died_inside_is_taken_over_and_counts_on() {
        let (bucket, _clock) = sliding(2, SECOND);
        let state = bucket.state_place();
        // A process killed between taking the window and letting it go.
        let _dead = super::hold(state.window_for_tests(0));
        let started = std::time::Instant::now();
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert!(started.elapsed() >= super::STEAL_AFTER);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert!(matches!(bucket.try_acquire(1), Decision::Rejected { .. }));
    }

    proptest! {
        #[test]
        fn a_sliding_window_agrees_with_a_plain_log_of_admission_times(
            max in 1u64..20,
            length_ms in 1u64..2_000,
            ops in advances_and_costs(),
        ) {
            let length = length_ms * 1_000_000;
            let (bucket, clock) = sliding(max, length);
            let mut admitted: Vec<u64> = Vec::new();
            for (advance, cost) in ops {
                clock.advance(advance);
                let now = clock.now();
                let live = admitted.iter().filter(|t| **t + length > now).count() as u64;
                let expected = if cost > max { None } else { Some(live + cost <= max) };
                let actual = outcome(bucket.try_acquire(cost));
                prop_assert_eq!(actual, expected);
                if actual == Some(true) {
                    admitted.extend(std::iter::repeat_n(now, cost as usize));
                }
            }
        }
    }
}

/// Every interleaving of the critical section's entry and exit (loom): `scripts/test-loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use crate::bucket::loom_tests::{admitted_beside_a_refund, admitted_by_threads};
    use crate::bucket::{Kind, Quota, TokenBucket};
    use crate::clock::{Clock, ManualClock};

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn loom_two_threads_share_a_sliding_budget_of_one_exactly() {
        crate::sync::model_bounded(
            "loom_two_threads_share_a_sliding_budget_of_one_exactly",
            2,
            || {
                let quota = Quota::counted(Kind::Sliding, 1, SECOND).unwrap();
                let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(SECOND)));
                let admitted = admitted_by_threads(&bucket, 2);
                assert_eq!(admitted, 1);
                assert_eq!(bucket.window_tokens(), vec![0.0]);
            },
        );
    }

    #[test]
    fn loom_a_refund_racing_takes_gives_back_exactly_its_own_entries() {
        // A reservation of 2 (the whole budget) is given back while another thread tries
        // two calls: they are admitted only once the refund is in, and whatever the order
        // the window holds exactly the budget less what they took.
        crate::sync::model(
            "loom_a_refund_racing_takes_gives_back_exactly_its_own_entries",
            || {
                let quota = Quota::counted(Kind::Sliding, 2, SECOND).unwrap();
                let clock = ManualClock::new(SECOND);
                let bucket = TokenBucket::new(quota, Clock::Manual(clock.clone()));
                let taken = bucket.reserve_at(2, clock.now(), false).unwrap();
                let admitted = admitted_beside_a_refund(&bucket, 2, taken);
                assert!(admitted <= 2);
                assert_eq!(bucket.window_tokens(), vec![2.0 - admitted as f64]);
            },
        );
    }
}
