//! Per-operation counters and the latency histogram that Prometheus reads at scrape time.
//!
//! Recording is a few relaxed atomic adds: no lock, no allocation. Failures are counted by
//! exception type in a small open-addressed table keyed by the type's identity; the type's
//! name is stored once, by the thread that claims the slot.

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
    successes: AtomicU64,
    failures: [FailureSlot; FAILURE_KINDS],
    other_failures: AtomicU64,
}

impl Default for OperationStats {
    fn default() -> Self {
        OperationStats {
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: std::array::from_fn(|_| FailureSlot::default()),
            other_failures: AtomicU64::new(0),
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
}

impl OperationStats {
    /// Records how long one call took.
    #[inline]
    pub fn record_latency(&self, nanos: u64) {
        let index = LATENCY_BOUNDS.partition_point(|bound| *bound < nanos);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    #[inline]
    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure of the exception type identified by `key` (non-zero); `name` is
    /// asked for only the first time that type is seen.
    pub fn record_failure(&self, key: usize, name: impl FnOnce() -> String) {
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

    pub fn snapshot(&self) -> OperationSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|count| {
                total += count.load(Ordering::Relaxed);
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
        OperationSnapshot {
            cumulative,
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
