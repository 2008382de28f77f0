//! Time for the state machines: monotonic nanoseconds, never the wall clock.
//!
//! The system clock is `CLOCK_MONOTONIC` on Unix, which every process on a host reads alike,
//! so a bucket kept in shared memory means the same instant to each of them. Elsewhere
//! (Windows, or any build with `--cfg peak_portable`, which is how CI runs this path on Linux)
//! it is std's `Instant` from a process-wide origin: monotonic, but private to the process,
//! which is why those builds have no shared backend. The manual clock is a shared atomic
//! counter: every copy of it agrees, and tests advance it by hand instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Nanoseconds per second, for the conversions at the boundary.
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Where a bucket or breaker reads the time.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The host's monotonic clock.
    #[default]
    Monotonic,
    /// A clock that only moves when a test advances it.
    Manual(ManualClock),
}

impl Clock {
    /// The current instant in nanoseconds on this clock.
    #[inline]
    pub fn now(&self) -> u64 {
        match self {
            Clock::Monotonic => monotonic_now(),
            Clock::Manual(manual) => manual.now(),
        }
    }

    /// `now` (an instant on this clock) as nanoseconds since the Unix epoch, for windows
    /// counted per calendar interval. A manual clock's reading is taken as epoch time; the
    /// monotonic clock is offset by the wall clock once per process.
    #[inline]
    pub fn wall(&self, now: u64) -> u64 {
        match self {
            Clock::Monotonic => now.wrapping_add(epoch_offset()),
            Clock::Manual(_) => now,
        }
    }

    /// A reading to time a call with: pass it to `nanos_since` when the call ends. It is
    /// not an instant: on the monotonic clock it is the raw TSC (see `stopwatch`), which
    /// no other process or state machine compares with anything; below 2^63 either way.
    #[inline(always)]
    pub fn stopwatch_start(&self) -> u64 {
        match self {
            Clock::Monotonic => stopwatch().raw(),
            Clock::Manual(manual) => manual.now(),
        }
    }

    /// Nanoseconds since `start`, a `stopwatch_start` reading of this clock (0 if the
    /// reading is later than now).
    #[inline(always)]
    pub fn nanos_since(&self, start: u64) -> u64 {
        match self {
            Clock::Monotonic => {
                let stopwatch = stopwatch();
                stopwatch.delta_as_nanos(start, stopwatch.raw())
            }
            Clock::Manual(manual) => manual.now().saturating_sub(start),
        }
    }
}

/// Epoch time less monotonic time, read once: calendar intervals then follow the
/// monotonic clock (never jumping back with an NTP step), aligned as the wall clock was.
fn epoch_offset() -> u64 {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};
    static OFFSET: OnceLock<u64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        wall.wrapping_sub(monotonic_now())
    })
}

/// The clock that times calls for the latency histogram and the slow-call rule: quanta's
/// TSC reading (`rdtsc`, ~7 ns here against ~18 ns for `clock_gettime` through the vDSO),
/// scaled to nanoseconds by a ratio calibrated against `CLOCK_MONOTONIC` once per process
/// (to within ~10 ns); quanta uses the monotonic clock itself where the TSC is not
/// invariant (or not there). Durations only: a coarse clock (CLOCK_MONOTONIC_COARSE, ticks
/// of 1-4 ms) would put every sub-millisecond call in one bucket, where an order path lives.
#[inline(always)]
pub fn stopwatch() -> &'static quanta::Clock {
    static STOPWATCH: OnceLock<quanta::Clock> = OnceLock::new();
    STOPWATCH.get_or_init(quanta::Clock::new)
}

/// `CLOCK_MONOTONIC` in nanoseconds: unaffected by wall-clock jumps, and the same for every
/// process on the host (which the shared-memory backend relies on).
#[cfg(all(unix, not(peak_portable)))]
#[inline]
pub fn monotonic_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on the
    // platforms we build for, and clock_gettime only writes through the pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ((ts.tv_sec as u64) * NANOS_PER_SECOND + ts.tv_nsec as u64).wrapping_sub(namespace_offset())
}

/// How far this process's time namespace moves `CLOCK_MONOTONIC` from the host's, in
/// nanoseconds (two's complement: it may be negative). A container started in a time
/// namespace (`unshare --time`, CRIU restores) reads the host's monotonic clock plus this
/// offset; subtracted, every process on the host reads the same instants again, which a
/// bucket or breaker in a shared file needs: one ahead by an hour would see every bucket
/// refilled and every open circuit due for a trial. A process's namespace is fixed once it
/// runs (it can only join one for its children), so the offset is read once.
#[cfg(all(unix, not(peak_portable)))]
#[inline]
fn namespace_offset() -> u64 {
    static OFFSET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/timens_offsets")
            .map_or(0, |text| parse_namespace_offset(&text))
    })
}

/// The `monotonic` line of `/proc/self/timens_offsets` ("monotonic <seconds> <nanoseconds>",
/// Linux 5.6 and later) in nanoseconds; 0 when absent or unreadable (no time namespaces).
#[cfg(all(unix, not(peak_portable)))]
fn parse_namespace_offset(text: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            if fields.next()? != "monotonic" {
                return None;
            }
            let seconds: i64 = fields.next()?.parse().ok()?;
            let nanos: i64 = fields.next()?.parse().ok()?;
            Some(
                seconds
                    .wrapping_mul(NANOS_PER_SECOND as i64)
                    .wrapping_add(nanos) as u64,
            )
        })
        .unwrap_or(0)
}

/// Nanoseconds of std's monotonic `Instant` (QueryPerformanceCounter on Windows) since the
/// first reading in this process, plus a day, so that instants look like those of a host
/// that has been up a while (no state machine ever sees a time near zero on either path).
#[cfg(not(all(unix, not(peak_portable))))]
#[inline]
pub fn monotonic_now() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    const ORIGIN_OFFSET: u64 = 86_400 * NANOS_PER_SECOND;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    ORIGIN_OFFSET + origin.elapsed().as_nanos() as u64
}

/// A clock that tests move by hand. Clones share the same instant.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock standing at `start` nanoseconds.
    pub fn new(start: u64) -> Self {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(start)),
        }
    }

    #[inline]
    pub fn now(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }

    /// Moves the clock forward by `nanos` (saturating: a clock never wraps into the past).
    pub fn advance(&self, nanos: u64) {
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(nanos))
            });
    }

    /// Sets the clock to `nanos`; refuses to go backwards, as a monotonic clock would.
    pub fn set(&self, nanos: u64) -> Result<(), u64> {
        self.nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (nanos >= now).then_some(nanos)
            })
            .map(|_| ())
    }
}

/// Seconds (as the user gives them) to nanoseconds, or `None` when the value is not a
/// finite, non-negative number that fits.
pub fn seconds_to_nanos(seconds: f64) -> Option<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    let nanos = (seconds * NANOS_PER_SECOND as f64).round();
    (nanos < u64::MAX as f64).then_some(nanos as u64)
}

/// Nanoseconds to seconds, for reporting.
#[inline]
pub fn nanos_to_seconds(nanos: u64) -> f64 {
    nanos as f64 / NANOS_PER_SECOND as f64
}

/// "60s", "1.5s": how a duration is named in messages and in a window's metrics label.
pub fn duration_label(nanos: u64) -> String {
    let secs = nanos_to_seconds(nanos);
    if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(unix, not(peak_portable)))]
    #[test]
    fn a_time_namespace_offset_is_read_in_nanoseconds_and_may_be_negative() {
        let ahead = "monotonic        3600         5\nboottime            0         0\n";
        assert_eq!(parse_namespace_offset(ahead), 3_600 * NANOS_PER_SECOND + 5);
        let behind = "boottime 0 0\nmonotonic -2 0\n";
        let reading = 10 * NANOS_PER_SECOND;
        assert_eq!(
            reading.wrapping_sub(parse_namespace_offset(behind)),
            12 * NANOS_PER_SECOND
        );
        assert_eq!(parse_namespace_offset(""), 0);
        assert_eq!(parse_namespace_offset("monotonic x y\n"), 0);
    }

    #[test]
    fn monotonic_clock_never_goes_backwards() {
        let mut last = monotonic_now();
        for _ in 0..10_000 {
            let now = monotonic_now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn the_stopwatch_times_a_sleep_within_a_millisecond_of_the_monotonic_clock() {
        let clock = Clock::Monotonic;
        let (start, reference) = (clock.stopwatch_start(), monotonic_now());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (timed, expected) = (clock.nanos_since(start), monotonic_now() - reference);
        assert!(
            timed.abs_diff(expected) < 1_000_000,
            "{timed} vs {expected}"
        );
    }

    #[test]
    fn the_manual_clock_times_what_a_test_advanced() {
        let manual = ManualClock::new(1_000);
        let clock = Clock::Manual(manual.clone());
        let start = clock.stopwatch_start();
        manual.advance(250);
        assert_eq!(clock.nanos_since(start), 250);
    }

    #[test]
    fn manual_clock_copies_share_one_instant() {
        let clock = ManualClock::new(5);
        let copy = Clock::Manual(clock.clone());
        clock.advance(10);
        assert_eq!(copy.now(), 15);
    }

    #[test]
    fn manual_clock_refuses_to_go_backwards() {
        let clock = ManualClock::new(100);
        assert_eq!(clock.set(50), Err(100));
        assert_eq!(clock.set(150), Ok(()));
        assert_eq!(clock.now(), 150);
    }

    #[test]
    fn manual_clock_saturates_instead_of_wrapping() {
        let clock = ManualClock::new(u64::MAX - 1);
        clock.advance(10);
        assert_eq!(clock.now(), u64::MAX);
    }

    #[test]
    fn seconds_convert_to_nanoseconds_and_reject_nonsense() {
        assert_eq!(seconds_to_nanos(1.5), Some(1_500_000_000));
        assert_eq!(seconds_to_nanos(0.0), Some(0));
        assert_eq!(seconds_to_nanos(-1.0), None);
        assert_eq!(seconds_to_nanos(f64::NAN), None);
        assert_eq!(seconds_to_nanos(f64::INFINITY), None);
        assert_eq!(seconds_to_nanos(1e300), None);
    }
}
