//! Per-operation counters and the latency histogram that Prometheus reads at scrape time.
//!
//! Recording is a few relaxed atomic adds: no lock, no allocation. Failures are counted by
//! exception type in a small open-addressed table keyed by the type's identity; the type's
//! name is stored once, by the thread that claims the slot.
//!
//! A guarded call that succeeds costs two atomic adds (its bucket and the sum): the
//! successes are derived, every timed call being a success or a failure, as the
//! histogram's count less the failures (see `successes`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Upper bounds of the latency histogram, in nanoseconds: from 10 us (a local cache hit) to
/// 10 s (a stuck exchange). An order path lives in the low buckets that Prometheus'
/// defaults (5 ms and up) would lump together.
pub const LATENCY_BOUNDS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The `metrics_enabled` switch: when off, guards neither time calls nor count their
/// outcomes. One relaxed load per guarded call, so either setting costs nothing measurable.
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Whether guards record latency and outcomes into their operation's stats.
#[inline]
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Turns recording by guards on or off, process-wide.
pub fn set_recording(enabled: bool) {
    RECORDING.store(enabled, Ordering::Relaxed);
}

/// Distinct exception types counted per operation before the rest fold into "other".
pub const FAILURE_KINDS: usize = 32;

#[derive(Default)]
struct FailureSlot {
    /// The exception type's identity (0 while the slot is free).
    key: AtomicUsize,
    count: AtomicU64,
    name: OnceLock<String>,
}

/// Counters and a latency histogram for one operation.
pub struct OperationStats {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
    /// Recorded apart from a call's duration (`record_success`, `record_failure`,
    /// `record_latency` of the Python API), so that the derivation can allow for them.
    successes_apart: AtomicU64,
    failures_apart: AtomicU64,
    durations_apart: AtomicU64,
    /// The most successes a snapshot has reported: a scrape racing a failure between
    /// its two counts could derive one fewer, and a counter must never go down.
    reported_successes: AtomicU64,
    failures: [FailureSlot; FAILURE_KINDS],
    other_failures: AtomicU64,
    /// The shortest and longest call seen, so that a summary's quantiles (estimated from
    /// the buckets) can be held within what really happened. `u64::MAX`/0 while empty.
    min_nanos: AtomicU64,
    max_nanos: AtomicU64,
    /// This operation's own `metrics_enabled` (its module's): guards record into it only
    /// while it is on.
    enabled: AtomicBool,
}

impl Default for OperationStats {
    fn default() -> Self {
        OperationStats {
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            successes_apart: AtomicU64::new(0),
            failures_apart: AtomicU64::new(0),
            durations_apart: AtomicU64::new(0),
            reported_successes: AtomicU64::new(0),
            failures: std::array::from_fn(|_| FailureSlot::default()),
            other_failures: AtomicU64::new(0),
            min_nanos: AtomicU64::new(u64::MAX),
            max_nanos: AtomicU64::new(0),
            enabled: AtomicBool::new(true),
        }
    }
}

/// What a scrape reads of one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationSnapshot {
    /// Cumulative counts per bucket bound (the last is +Inf), as Prometheus wants them.
    pub cumulative: Vec<u64>,
    pub sum_nanos: u64,
    pub successes: u64,
    /// Failures by exception type name; `"other"` holds types past the table's size.
    pub failures: Vec<(String, u64)>,
    /// Failures counted under `"other"` because the table of types was full.
    pub folded_failures: u64,
    /// The shortest and longest recorded call; None before the first.
    pub min_nanos: Option<u64>,
    pub max_nanos: Option<u64>,
}

impl OperationStats {
    /// Records a guarded call that returned after `nanos`: a success, by derivation.
    #[inline]
    pub fn record_succeeded_call(&self, nanos: u64) {
        self.record_duration(nanos);
    }

    /// Records a guarded call that failed after `nanos` with the exception type `key`.
    #[inline]
    pub fn record_failed_call(&self, nanos: u64, key: usize, name: impl FnOnce() -> String) {
        // The failure before its duration (see `successes`).
        self.count_failure(key, name);
        self.record_duration(nanos);
    }

    /// Records a duration alone, whose outcome is recorded apart or not at all.
    pub fn record_latency(&self, nanos: u64) {
        self.durations_apart.fetch_add(1, Ordering::Relaxed);
        self.record_duration(nanos);
    }

    /// Counts a success whose duration is recorded apart or not at all.
    pub fn record_success(&self) {
        self.successes_apart.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure of the exception type identified by `key` (non-zero) whose
    /// duration is recorded apart or not at all; `name` is asked for only the first time
    /// that type is seen.
    pub fn record_failure(&self, key: usize, name: impl FnOnce() -> String) {
        self.failures_apart.fetch_add(1, Ordering::Relaxed);
        self.count_failure(key, name);
    }

    #[inline(always)]
    fn record_duration(&self, nanos: u64) {
        let index = LATENCY_BOUNDS.partition_point(|bound| *bound < nanos);
        // Release: whoever reads this count sees the failure counted before it.
        self.buckets[index].fetch_add(1, Ordering::Release);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        // A load first: once the extremes are known, almost no call writes them.
        if nanos < self.min_nanos.load(Ordering::Relaxed) {
            self.min_nanos.fetch_min(nanos, Ordering::Relaxed);
        }
        if nanos > self.max_nanos.load(Ordering::Relaxed) {
            self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
        }
    }

    /// Whether guards record into these stats (the module's `metrics_enabled`).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    fn count_failure(&self, key: usize, name: impl FnOnce() -> String) {
        debug_assert_ne!(key, 0);
        let start = (key >> 4) % FAILURE_KINDS;
        for probe in 0..FAILURE_KINDS {
            let slot = &self.failures[(start + probe) % FAILURE_KINDS];
            let mut current = slot.key.load(Ordering::Acquire);
            if current == 0 {
                match slot
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        slot.name.get_or_init(name);
                        slot.count.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(claimed) => current = claimed,
                }
            }
            if current == key {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The successes, from the histogram's `count` and `all_failures` read after it:
    /// every duration recorded is a call's that succeeded or failed, but for those
    /// recorded apart. A failure is counted before its duration, so a count read first
    /// never holds a failure that the failures read after it miss: at worst the
    /// derivation comes out short for a moment, and the highest value reported stands.
    fn successes(&self, count: u64, all_failures: u64) -> u64 {
        let timed_failures =
            all_failures.saturating_sub(self.failures_apart.load(Ordering::Relaxed));
        let derived = count
            .saturating_sub(timed_failures)
            .saturating_sub(self.durations_apart.load(Ordering::Relaxed))
            .saturating_add(self.successes_apart.load(Ordering::Relaxed));
        self.reported_successes
            .fetch_max(derived, Ordering::Relaxed)
            .max(derived)
    }

    pub fn snapshot(&self) -> OperationSnapshot {
        let mut total = 0;
        let cumulative: Vec<u64> = self
            .buckets
            .iter()
            .map(|count| {
                total += count.load(Ordering::Acquire);
                total
            })
            .collect();
        let mut failures: Vec<(String, u64)> = self
            .failures
            .iter()
            .filter_map(|slot| {
                let name = slot.name.get()?;
                Some((name.clone(), slot.count.load(Ordering::Relaxed)))
            })
            .collect();
        let other = self.other_failures.load(Ordering::Relaxed);
        if other > 0 {
            failures.push(("other".to_owned(), other));
        }
        let count = *cumulative.last().unwrap_or(&0);
        let all_failures: u64 = failures.iter().map(|(_, n)| n).sum();
        let successes = self.successes(count, all_failures);
        let (min, max) = (
            self.min_nanos.load(Ordering::Relaxed),
            self.max_nanos.load(Ordering::Relaxed),
        );
        let seen = count > 0 && min <= max;
        OperationSnapshot {
            cumulative,
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
            successes,
            failures,
            folded_failures: other,
            min_nanos: seen.then_some(min),
            max_nanos: seen.then_some(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_and_longest_calls_are_kept_exactly() {
        let stats = OperationStats::default();
        assert_eq!(stats.snapshot().min_nanos, None);
        stats.record_latency(10_100_000);
        stats.record_latency(30_000_000_000);
        stats.record_latency(2_000);
        let snap = stats.snapshot();
        assert_eq!(
            (snap.min_nanos, snap.max_nanos),
            (Some(2_000), Some(30_000_000_000))
        );
    }

    #[test]
    fn latencies_land_in_the_first_bucket_whose_bound_holds_them() {
        let stats = OperationStats::default();
        stats.record_latency(10_000); // exactly on a bound: le="1e-05"
        stats.record_latency(10_001);
        stats.record_latency(20_000_000_000); // past every bound: +Inf only
        let snap = stats.snapshot();
        assert_eq!(snap.cumulative[0], 1);
        assert_eq!(snap.cumulative[1], 2);
        assert_eq!(snap.cumulative[LATENCY_BOUNDS.len() - 1], 2);
        assert_eq!(*snap.cumulative.last().unwrap(), 3);
        assert_eq!(snap.sum_nanos, 20_000_020_001);
    }

    #[test]
    fn a_call_is_a_success_or_a_failure_by_type_and_one_duration() {
        let stats = OperationStats::default();
        stats.record_succeeded_call(1_000);
        stats.record_succeeded_call(2_000);
        stats.record_failed_call(3_000, 0x1000, || "ValueError".into());
        let snap = stats.snapshot();
        assert_eq!(snap.successes, 2);
        assert_eq!(snap.failures, vec![("ValueError".into(), 1)]);
        assert_eq!(*snap.cumulative.last().unwrap(), 3);
        assert_eq!(snap.sum_nanos, 6_000);
    }

    #[test]
    fn outcomes_and_durations_recorded_apart_count_as_given() {
        let stats = OperationStats::default();
        stats.record_latency(1_000);
        stats.record_latency(1_000);
        stats.record_success();
        stats.record_failure(0x1000, || "ValueError".into());
        stats.record_succeeded_call(500);
        let snap = stats.snapshot();
        assert_eq!(snap.successes, 2);
        assert_eq!(snap.failures, vec![("ValueError".into(), 1)]);
        assert_eq!(*snap.cumulative.last().unwrap(), 3);
    }

    #[test]
    fn successes_read_while_threads_record_never_go_down() {
        let stats = OperationStats::default();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut last = 0;
                while !done.load(Ordering::Relaxed) {
                    let now = stats.snapshot().successes;
                    assert!(now >= last, "{now} < {last}");
                    last = now;
                }
            });
            let writers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        for i in 0..20_000u64 {
                            if i % 3 == 0 {
                                stats.record_failed_call(i, 0x1000, || "E".into());
                            } else {
                                stats.record_succeeded_call(i);
                            }
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            reader.join().unwrap();
        });
        assert_eq!(stats.snapshot().successes, 3 * 13_333);
    }

    #[test]
    fn failures_are_counted_by_type_and_named_once() {
        let stats = OperationStats::default();
        let mut asked = 0;
        for _ in 0..3 {
            stats.record_failure(0x1000, || {
                asked += 1;
                "ValueError".into()
            });
        }
        stats.record_failure(0x2000, || "TimeoutError".into());
        let mut failures = stats.snapshot().failures;
        failures.sort();
        assert_eq!(
            failures,
            vec![("TimeoutError".into(), 1), ("ValueError".into(), 3)]
        );
        assert_eq!(asked, 1);
    }

    #[test]
    fn types_past_the_table_fold_into_other() {
        let stats = OperationStats::default();
        for key in 1..=(FAILURE_KINDS + 5) {
            stats.record_failure(key << 4, || format!("E{key}"));
        }
        let failures = stats.snapshot().failures;
        assert_eq!(failures.len(), FAILURE_KINDS + 1);
        assert_eq!(failures.last().unwrap(), &("other".to_owned(), 5));
    }

    #[test]
    fn concurrent_failures_of_one_type_share_one_slot() {
        let stats = OperationStats::default();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        stats.record_failure(0x4240, || "OSError".into());
                    }
                });
            }
        });
        assert_eq!(stats.snapshot().failures, vec![("OSError".into(), 80_000)]);
    }
}
