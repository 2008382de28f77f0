//! The circuit breaker state machine, on one atomic word.
//!
//! The state and everything a transition must change with it share one `AtomicU64`, so
//! every transition is a single compare-and-swap and no reader ever sees a state with the
//! wrong payload:
//!
//! ```text
//!   bits 61..63  state: CLOSED, HALF_OPEN, OPEN, FORCED_OPEN or DISABLED
//!   CLOSED       bits 0..24  consecutive failures, bits 24..61 epoch
//!   OPEN         bits 0..61  the instant (ns) at which a trial becomes due
//!   HALF_OPEN    bits 0..12  trial calls admitted, bits 12..24 trial calls that succeeded,
//!                bits 24..61 epoch
//!   FORCED_OPEN  (no payload) refuses every call until reset
//!   DISABLED     (no payload) admits every call, counts outcomes, never changes state
//! ```
//!
//! METRICS_ONLY is not a value of the word but a mode beside it: the word keeps running
//! the ordinary state machine (the "shadow" state), and a call it would refuse is admitted
//! and counted as `would_reject` instead. The mode is read on the refusal path only.
//!
//! Beside the consecutive-failure streak, an optional failure rate over a rolling window
//! (`FailureWindow`) opens the circuit, and a failed trial reopens it for longer each time
//! (exponential back-off, capped). Both cost nothing unless configured.
//!
//! A caller is told how it was admitted (`Admission`), with the epoch of the closed or
//! half-open period that admitted it. Every entry into CLOSED or HALF_OPEN starts a new
//! epoch, so a slow call's verdict only counts in the period that let it through: a call
//! admitted before the circuit opened cannot reopen it after a trial closed it, nor be
//! mistaken for a half-open trial. (loom found the first of these.) An epoch is drawn from
//! a counter before the compare-and-swap that installs it, so a caller that loses the
//! race burns one: the 37 bits an epoch keeps in the word (not 21, as once) are what makes
//! a stale verdict meeting a later period of the same number impossible in practice, as
//! that takes 2^37 transitions and lost races while one call is outstanding.

use crate::sync::{AtomicU64, Ordering};

use crate::clock::{Clock, NANOS_PER_SECOND};
use crate::place::Place;
use std::ptr::NonNull;

pub const CLOSED: u8 = 0;
pub const HALF_OPEN: u8 = 1;
pub const OPEN: u8 = 2;
/// Opened by hand: refuses every call until `reset()`.
pub const FORCED_OPEN: u8 = 3;
/// Switched off by hand: admits every call, keeps counting, never transitions.
pub const DISABLED: u8 = 4;
/// Reported (never stored) while the breaker decides but does not enforce.
pub const METRICS_ONLY: u8 = 5;
/// Every state a transition can name.
pub const STATES: usize = 6;
const ROLLING_BUCKETS: usize = 10;

const STATE_SHIFT: u32 = 61;
const PAYLOAD: u64 = (1 << STATE_SHIFT) - 1;
/// Trial calls admitted and succeeded: 4,095 at once is far more than anyone half-opens
/// with, and the bits left give the epoch 37.
const TRIAL_BITS: u32 = 12;
const TRIAL_FIELD: u64 = (1 << TRIAL_BITS) - 1;
/// The most trial calls a half-open circuit can admit at once.
pub const MAX_HALF_OPEN_CALLS: u64 = TRIAL_FIELD;
/// Consecutive failures: a threshold up to 16.7 million, the rest of the word the epoch.
const STREAK_BITS: u32 = 24;
const STREAK_FIELD: u64 = (1 << STREAK_BITS) - 1;
/// The largest failure threshold (the streak field's size).
pub const MAX_FAILURE_THRESHOLD: u64 = STREAK_FIELD;
const CLOSED_EPOCH_FIELD: u64 = (1 << (STATE_SHIFT - STREAK_BITS)) - 1;
const HALF_OPEN_EPOCH_SHIFT: u32 = 2 * TRIAL_BITS;
const HALF_OPEN_EPOCH_FIELD: u64 = (1 << (STATE_SHIFT - HALF_OPEN_EPOCH_SHIFT)) - 1;

#[inline]
const fn pack(state: u8, payload: u64) -> u64 {
    ((state as u64) << STATE_SHIFT) | (payload & PAYLOAD)
}

#[inline]
const fn state_of(word: u64) -> u8 {
    (word >> STATE_SHIFT) as u8
}

#[inline]
const fn payload_of(word: u64) -> u64 {
    word & PAYLOAD
}

#[inline]
const fn streak_of(word: u64) -> u64 {
    word & STREAK_FIELD
}

#[inline]
const fn closed(epoch: u64, streak: u64) -> u64 {
    pack(
        CLOSED,
        ((epoch & CLOSED_EPOCH_FIELD) << STREAK_BITS) | streak,
    )
}

#[inline]
const fn half_open(epoch: u64, admitted: u64) -> u64 {
    pack(
        HALF_OPEN,
        ((epoch & HALF_OPEN_EPOCH_FIELD) << HALF_OPEN_EPOCH_SHIFT) | admitted,
    )
}

/// The epoch of the closed or half-open period `word` is in (0 when open).
#[inline]
const fn epoch_of(word: u64) -> u64 {
    match state_of(word) {
        CLOSED => (payload_of(word) >> STREAK_BITS) & CLOSED_EPOCH_FIELD,
        HALF_OPEN => (payload_of(word) >> HALF_OPEN_EPOCH_SHIFT) & HALF_OPEN_EPOCH_FIELD,
        _ => 0,
    }
}

#[inline]
const fn trials_admitted(word: u64) -> u64 {
    word & TRIAL_FIELD
}

#[inline]
const fn trials_succeeded(word: u64) -> u64 {
    (word >> TRIAL_BITS) & TRIAL_FIELD
}

/// How a call was let through, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Refused: the circuit is open (`remaining` ns until a trial), or every half-open
    /// trial permit is taken (`remaining` 0).
    Rejected { remaining: u64 },
    /// Admitted while CLOSED, in the closed period `epoch`.
    Normal { epoch: u64 },
    /// Admitted as one of the trial calls of the half-open period `epoch`.
    Trial { epoch: u64 },
    /// Admitted outside the state machine (DISABLED, or a call that METRICS_ONLY would
    /// have refused): its outcome is counted but changes no state.
    Bypass,
}

impl Admission {
    /// The int the binding passes back and forth: the kind in the low 2 bits (0 rejected,
    /// 1 normal, 2 trial, 3 bypass), the epoch above.
    pub fn code(self) -> u64 {
        match self {
            Admission::Rejected { .. } => 0,
            Admission::Normal { epoch } => 1 | (epoch << 2),
            Admission::Trial { epoch } => 2 | (epoch << 2),
            Admission::Bypass => 3,
        }
    }

    pub fn from_code(code: u64) -> Option<Admission> {
        let epoch = code >> 2;
        match code & 3 {
            0 if epoch == 0 => Some(Admission::Rejected { remaining: 0 }),
            1 => Some(Admission::Normal { epoch }),
            2 => Some(Admission::Trial { epoch }),
            3 if epoch == 0 => Some(Admission::Bypass),
            _ => None,
        }
    }

    pub fn is_rejected(self) -> bool {
        matches!(self, Admission::Rejected { .. })
    }
}

/// A state change, reported to the caller so that the binding can log it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: u8,
    pub to: u8,
}

/// How the failure-rate window counts: the last N calls, or the last N nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Calls(u64),
    Nanos(u64),
}

/// When the circuit opens and how it recovers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a closed circuit (1..=2^32-1).
    pub failure_threshold: u64,
    /// Nanoseconds an opened circuit stays open before a trial call is let through.
    pub recovery_timeout: u64,
    /// Trial calls admitted while half-open; all must succeed to close (1..=2^20-1).
    pub half_open_max_calls: u64,
    /// Failures per million calls in `window` that open a closed circuit (0: no rate).
    pub failure_rate_ppm: u64,
    /// Calls the window must hold before its rate can open the circuit.
    pub minimum_calls: u64,
    /// What the failure rate is measured over.
    pub window: Window,
    /// A successful call lasting at least this many ns counts as a failure (0: never).
    pub slow_call_duration: u64,
    /// Each failed trial in a row multiplies the next open period by this (1.0: none).
    pub backoff_multiplier: f64,
    /// The longest open period back-off may reach (ns).
    pub max_recovery_timeout: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            recovery_timeout: 60 * NANOS_PER_SECOND,
            half_open_max_calls: 1,
            failure_rate_ppm: 0,
            minimum_calls: 10,
            window: Window::Calls(100),
            slow_call_duration: 0,
            backoff_multiplier: 1.0,
            max_recovery_timeout: 600 * NANOS_PER_SECOND,
        }
    }
}

impl Window {
    /// A window of this kind at its default size: the last 100 calls, or the last 60 s
    /// (what a window gets when its kind changes and no size is given).
    pub fn default_of(time: bool) -> Window {
        if time {
            Window::Nanos(60 * NANOS_PER_SECOND)
        } else {
            Window::Calls(100)
        }
    }

    pub fn is_time(self) -> bool {
        matches!(self, Window::Nanos(_))
    }

    /// Calls or nanoseconds, as the kind says.
    pub fn size(self) -> u64 {
        match self {
            Window::Calls(n) | Window::Nanos(n) => n,
        }
    }
}

impl BreakerSettings {
    /// The settings as a breaker keeps them: back-off never shortens an open period below
    /// `recovery_timeout`.
    pub fn normalized(mut self) -> Self {
        self.max_recovery_timeout = self.max_recovery_timeout.max(self.recovery_timeout);
        self
    }
}

/// One slice of the rolling window: a count, tagged with the slice's number so that a
/// stale slice is recognised (and restarted) by the first caller of a later slice.
const STAMP_SHIFT: u32 = 40;
const COUNT_FIELD: u64 = (1 << STAMP_SHIFT) - 1;

#[inline]
const fn stamped(slice: u64, count: u64) -> u64 {
    (slice << STAMP_SHIFT) | count
}

/// Slice numbers are compared modulo 2^24: a slot left untouched for an exact multiple of
/// 2^24 slices (over a year for a 60 s window, 28 min for a 1 ms one) would be misread as
/// current; any call in between restamps it.
#[inline]
const fn same_slice(word: u64, slice: u64) -> bool {
    word >> STAMP_SHIFT == slice & ((1 << (64 - STAMP_SHIFT)) - 1)
}

/// Calls and failures over the last N calls or N nanoseconds, in `ROLLING_BUCKETS` slices
/// (Hystrix-style rolling counters: the oldest slice drops out whole). Each counter is
/// one word (slice number and count), changed by CAS, so no count is lost; calls and
/// failures are two words, so a reader may see one call more than failures, never less.
/// Plain std atomics: pure counters, never a synchronisation point.
#[repr(C)]
#[derive(Debug, Default)]
struct FailureWindow {
    calls: [std::sync::atomic::AtomicU64; ROLLING_BUCKETS],
    failures: [std::sync::atomic::AtomicU64; ROLLING_BUCKETS],
    /// Calls counted by a count-based window (its clock).
    sequence: std::sync::atomic::AtomicU64,
}

impl FailureWindow {
    fn add(slot: &std::sync::atomic::AtomicU64, slice: u64) {
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
            Some(if same_slice(word, slice) {
                word + ((word & COUNT_FIELD) < COUNT_FIELD) as u64
            } else {
                stamped(slice, 1)
            })
        });
    }

    fn record(&self, slice: u64, failed: bool) {
        let i = (slice % ROLLING_BUCKETS as u64) as usize;
        FailureWindow::add(&self.calls[i], slice);
        if failed {
            FailureWindow::add(&self.failures[i], slice);
        }
    }

    /// (calls, failures) in the `span` slices ending with `slice`.
    fn totals(&self, slice: u64, span: u64) -> (u64, u64) {
        let (mut calls, mut failures) = (0, 0);
        for back in 0..span.min(slice + 1) {
            let n = slice - back;
            let i = (n % ROLLING_BUCKETS as u64) as usize;
            let c = self.calls[i].load(Ordering::Relaxed);
            if same_slice(c, n) {
                calls += c & COUNT_FIELD;
            }
            let f = self.failures[i].load(Ordering::Relaxed);
            if same_slice(f, n) {
                failures += f & COUNT_FIELD;
            }
        }
        (calls, failures)
    }

    fn clear(&self) {
        for slot in self.calls.iter().chain(self.failures.iter()) {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

/// The atomics of one breaker, laid out for shared memory as well as for this process:
/// the state machine's, then what only a breaker that transitioned or counts a failure
/// rate needs. A breaker of this process allocates the second part on first use (most
/// never transition: 456 bytes of zeros each, issue 19); a shared file holds both.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BreakerState {
    pub core: BreakerCore,
    pub extras: BreakerExtras,
}

/// The failure-rate window and the transition counters.
#[repr(C)]
#[derive(Debug)]
pub struct BreakerExtras {
    window: FailureWindow,
    /// Transitions by `from * STATES + to`.
    transitions: [std::sync::atomic::AtomicU64; STATES * STATES],
}

impl Default for BreakerExtras {
    fn default() -> Self {
        BreakerExtras {
            window: FailureWindow::default(),
            transitions: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

/// The state machine's atomics.
#[repr(C)]
#[derive(Debug)]
pub struct BreakerCore {
    word: AtomicU64,
    failure_threshold: AtomicU64,
    recovery_timeout: AtomicU64,
    half_open_max_calls: AtomicU64,
    /// Consecutive failures counted when the circuit last opened (for `failure_count`).
    opened_streak: AtomicU64,
    /// The last epoch handed out (see the module comment).
    epoch: AtomicU64,
    /// When the last trial permit of the current half-open period was granted (ns; the
    /// period's start until one is). Permits not resolved within `recovery_timeout` of it
    /// are presumed lost (their caller died: a process killed while holding a trial of a
    /// shared breaker must not wedge it half-open for good).
    /// A hint written before the swap that half-opens, never a synchronisation point: a
    /// plain std atomic even under loom, which would otherwise explore it for nothing.
    trials_since: std::sync::atomic::AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rejections: AtomicU64,
    // The policies below are settings and counters read off the hot path (or, for the
    // failure rate and slow calls, only when configured): plain std atomics.
    failure_rate_ppm: std::sync::atomic::AtomicU64,
    minimum_calls: std::sync::atomic::AtomicU64,
    /// The window's size: calls when `window_is_time` is 0, ns otherwise.
    window_size: std::sync::atomic::AtomicU64,
    window_is_time: std::sync::atomic::AtomicU64,
    slow_call_duration: std::sync::atomic::AtomicU64,
    /// `f64::to_bits` of the back-off multiplier.
    backoff_multiplier: std::sync::atomic::AtomicU64,
    max_recovery_timeout: std::sync::atomic::AtomicU64,
    /// Trials failed in a row since the circuit last closed (the back-off exponent).
    failed_trials: std::sync::atomic::AtomicU64,
    /// 1 while in METRICS_ONLY mode (decide, do not enforce).
    metrics_only: std::sync::atomic::AtomicU64,
    /// Successful calls that counted as failures for being slow.
    slow_calls: std::sync::atomic::AtomicU64,
    /// Calls admitted in METRICS_ONLY mode that the state machine would have refused.
    would_reject: std::sync::atomic::AtomicU64,
}

impl Default for BreakerCore {
    fn default() -> Self {
        use std::sync::atomic::AtomicU64 as Std;
        BreakerCore {
            word: AtomicU64::new(0),
            failure_threshold: AtomicU64::new(0),
            recovery_timeout: AtomicU64::new(0),
            half_open_max_calls: AtomicU64::new(0),
            opened_streak: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            trials_since: Std::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            failure_rate_ppm: Std::new(0),
            minimum_calls: Std::new(0),
            window_size: Std::new(0),
            window_is_time: Std::new(0),
            slow_call_duration: Std::new(0),
            backoff_multiplier: Std::new(1f64.to_bits()),
            max_recovery_timeout: Std::new(0),
            failed_trials: Std::new(0),
            metrics_only: Std::new(0),
            slow_calls: Std::new(0),
            would_reject: Std::new(0),
        }
    }
}

impl BreakerState {
    /// A closed breaker with these settings.
    pub fn new(settings: BreakerSettings) -> Self {
        BreakerState {
            core: BreakerCore::new(settings),
            extras: BreakerExtras::default(),
        }
    }

    /// A breaker held open (FORCED_OPEN) with the default settings: what a shared
    /// breaker's memory becomes when its file is truncated under the process (see
    /// `sigbus`), so that every call is refused. Plain stores, no allocation.
    pub fn refusing() -> Self {
        let state = BreakerState::new(BreakerSettings::default());
        state
            .core
            .word
            .store(pack(FORCED_OPEN, 0), Ordering::Relaxed);
        state
    }
}

impl BreakerCore {
    fn new(settings: BreakerSettings) -> Self {
        let core = BreakerCore::default();
        core.set_settings(settings);
        core
    }

    /// Changes thresholds in place; the current state and its counts stay. True when the
    /// failure-rate window changed kind or size: its slices would then be misread.
    fn set_settings(&self, settings: BreakerSettings) -> bool {
        self.failure_threshold.store(
            settings.failure_threshold.clamp(1, MAX_FAILURE_THRESHOLD),
            Ordering::Relaxed,
        );
        self.recovery_timeout
            .store(settings.recovery_timeout, Ordering::Relaxed);
        self.half_open_max_calls.store(
            settings.half_open_max_calls.clamp(1, MAX_HALF_OPEN_CALLS),
            Ordering::Relaxed,
        );
        let (is_time, size) = match settings.window {
            Window::Calls(n) => (0, n.max(1)),
            Window::Nanos(n) => (1, n.max(1)),
        };
        let relaxed = Ordering::Relaxed;
        let kind_changed = self.window_is_time.swap(is_time, relaxed) != is_time;
        let size_changed = self.window_size.swap(size, relaxed) != size;
        self.minimum_calls
            .store(settings.minimum_calls.max(1), relaxed);
        self.failure_rate_ppm
            .store(settings.failure_rate_ppm.min(1_000_000), relaxed);
        self.slow_call_duration
            .store(settings.slow_call_duration, relaxed);
        let multiplier = if settings.backoff_multiplier.is_finite() {
            settings.backoff_multiplier.max(1.0)
        } else {
            1.0
        };
        self.backoff_multiplier.store(multiplier.to_bits(), relaxed);
        self.max_recovery_timeout.store(
            settings.max_recovery_timeout.max(settings.recovery_timeout),
            relaxed,
        );
        kind_changed || size_changed
    }
}

/// A breaker of this process: its core, and its extras once one is needed.
struct LocalBreaker {
    core: BreakerCore,
    extras: std::sync::OnceLock<Box<BreakerExtras>>,
}

/// Where a breaker's extras are: in the memory its `state` place keeps alive (a plain
/// pointer, not a second place: one owner handle per breaker is enough).
#[derive(Clone, Copy)]
enum Extras {
    /// Beside the core (a shared file).
    Within(NonNull<BreakerExtras>),
    /// Made on first use (this process).
    Lazy(NonNull<std::sync::OnceLock<Box<BreakerExtras>>>),
}

// SAFETY: both point to atomics or a OnceLock (Sync) that the breaker's `state` place
// keeps alive; only shared references are handed out.
unsafe impl Send for Extras {}
unsafe impl Sync for Extras {}

/// A circuit breaker: its state (local or shared) and the clock it reads.
#[derive(Clone)]
pub struct Breaker {
    state: Place<BreakerCore>,
    extras: Extras,
    clock: Clock,
}

impl Breaker {
    /// A closed breaker owned by this process.
    pub fn new(settings: BreakerSettings, clock: Clock) -> Self {
        let local = Place::local(LocalBreaker {
            core: BreakerCore::new(settings),
            extras: std::sync::OnceLock::new(),
        });
        Breaker {
            state: local.project(|l| &l.core),
            extras: Extras::Lazy(NonNull::from(&local.extras)),
            clock,
        }
    }

    /// A breaker over existing state (for example in a shared mapping).
    pub fn over(state: Place<BreakerState>, clock: Clock) -> Self {
        Breaker {
            state: state.project(|s| &s.core),
            extras: Extras::Within(NonNull::from(&state.extras)),
            clock,
        }
    }

    /// The window and the transition counters, made now if they were not yet.
    fn extras(&self) -> &BreakerExtras {
        // SAFETY (both): `self.state` keeps the memory behind the pointer alive (see Extras).
        match self.extras {
            Extras::Within(extras) => unsafe { extras.as_ref() },
            Extras::Lazy(cell) => unsafe { cell.as_ref() }.get_or_init(Box::default),
        }
    }

    /// The window and the transition counters if they exist (all zero otherwise).
    fn extras_if_made(&self) -> Option<&BreakerExtras> {
        // SAFETY (both): `self.state` keeps the memory behind the pointer alive (see Extras).
        match self.extras {
            Extras::Within(extras) => Some(unsafe { extras.as_ref() }),
            Extras::Lazy(cell) => unsafe { cell.as_ref() }.get().map(|extras| &**extras),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn settings(&self) -> BreakerSettings {
        let s = &*self.state;
        let relaxed = Ordering::Relaxed;
        let size = s.window_size.load(relaxed);
        BreakerSettings {
            failure_threshold: s.failure_threshold.load(relaxed),
            recovery_timeout: s.recovery_timeout.load(relaxed),
            half_open_max_calls: s.half_open_max_calls.load(relaxed),
            failure_rate_ppm: s.failure_rate_ppm.load(relaxed),
            minimum_calls: s.minimum_calls.load(relaxed),
            window: if s.window_is_time.load(relaxed) == 0 {
                Window::Calls(size)
            } else {
                Window::Nanos(size)
            },
            slow_call_duration: s.slow_call_duration.load(relaxed),
            backoff_multiplier: f64::from_bits(s.backoff_multiplier.load(relaxed)),
            max_recovery_timeout: s.max_recovery_timeout.load(relaxed),
        }
    }

    /// Nanoseconds from which a successful call counts as a failure (0: never). One relaxed
    /// load, read per call by the guard to decide whether to time it.
    #[inline]
    pub fn slow_call_duration(&self) -> u64 {
        self.state.slow_call_duration.load(Ordering::Relaxed)
    }

    pub fn set_settings(&self, settings: BreakerSettings) {
        if self.state.set_settings(settings) {
            if let Some(extras) = self.extras_if_made() {
                extras.window.clear();
            }
        }
    }

    /// Asks to run one call. In CLOSED this reads nothing but the state word.
    #[inline]
    pub fn enter(&self) -> (Admission, Option<Transition>) {
        let s = &*self.state;
        let mut word = s.word.load(Ordering::Acquire);
        loop {
            let next = match state_of(word) {
                CLOSED => {
                    return (
                        Admission::Normal {
                            epoch: epoch_of(word),
                        },
                        None,
                    )
                }
                OPEN => {
                    let due = payload_of(word);
                    let now = self.clock.now();
                    if now < due {
                        return (self.refuse(due - now), None);
                    }
                    // The first caller past the deadline takes the first trial permit in the
                    // same swap that half-opens the circuit.
                    s.trials_since.store(now, Ordering::Relaxed);
                    half_open(self.next_epoch(), 1)
                }
                HALF_OPEN => {
                    let max = s.half_open_max_calls.load(Ordering::Relaxed);
                    if trials_admitted(word) >= max {
                        match self.abandoned_trials() {
                            // A new half-open period: the lost trials' verdicts no longer count.
                            Some(now) => {
                                s.trials_since.store(now, Ordering::Relaxed);
                                half_open(self.next_epoch(), 1)
                            }
                            None => return (self.refuse(0), None),
                        }
                    } else {
                        // The permit's own time, stamped as it is granted: a period begun by
                        // a state read long before must not make this trial look abandoned
                        // to the next caller.
                        let now = self.clock.now();
                        s.trials_since.fetch_max(now, Ordering::Relaxed);
                        word + 1
                    }
                }
                FORCED_OPEN => {
                    // No deadline: the recovery timeout is the hint given to callers.
                    let hint = s.recovery_timeout.load(Ordering::Relaxed);
                    s.rejections.fetch_add(1, Ordering::Relaxed);
                    return (Admission::Rejected { remaining: hint }, None);
                }
                _ => return (Admission::Bypass, None),
            };
            match s
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(previous) => {
                    let transition = self.count_transition(state_of(previous), HALF_OPEN);
                    let epoch = epoch_of(next);
                    return (Admission::Trial { epoch }, transition);
                }
                Err(current) => word = current,
            }
        }
    }

    /// The call admitted as `admission` succeeded.
    #[inline]
    pub fn on_success(&self, admission: Admission) -> Option<Transition> {
        let s = &*self.state;
        s.successes.fetch_add(1, Ordering::Relaxed);
        let mut word = s.word.load(Ordering::Acquire);
        if s.failure_rate_ppm.load(Ordering::Relaxed) != 0 {
            self.count_in_window(admission, word, false);
        }
        loop {
            if !self.same_period(admission, word) {
                return None;
            }
            let next = match admission {
                // A success ends a failure streak; skip the write when there is none.
                Admission::Normal { epoch } if streak_of(word) != 0 => closed(epoch, 0),
                // Only a trial holding a permit counts: a success recorded by hand while
                // half-open with no permit out (none taken, or given back) proves nothing
                // and must not close the circuit under a real trial still running.
                Admission::Trial { .. } if trials_admitted(word) <= trials_succeeded(word) => {
                    return None
                }
                Admission::Trial { .. } => {
                    let succeeded = trials_succeeded(word) + 1;
                    if succeeded >= s.half_open_max_calls.load(Ordering::Relaxed) {
                        closed(self.next_epoch(), 0)
                    } else {
                        word + (1 << TRIAL_BITS)
                    }
                }
                _ => return None,
            };
            match s
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(previous) => {
                    if state_of(previous) == HALF_OPEN && state_of(next) == CLOSED {
                        self.closed_again();
                    }
                    return self.count_transition(state_of(previous), state_of(next));
                }
                Err(current) => word = current,
            }
        }
    }

    /// The call admitted as `admission` failed.
    #[inline]
    pub fn on_failure(&self, admission: Admission) -> Option<Transition> {
        let s = &*self.state;
        s.failures.fetch_add(1, Ordering::Relaxed);
        let mut word = s.word.load(Ordering::Acquire);
        let rate_trips = s.failure_rate_ppm.load(Ordering::Relaxed) != 0
            && self.count_in_window(admission, word, true);
        loop {
            if !self.same_period(admission, word) {
                return None;
            }
            let (next, streak) = match admission {
                Admission::Normal { epoch } => {
                    let streak = streak_of(word) + 1;
                    if rate_trips || streak >= s.failure_threshold.load(Ordering::Relaxed) {
                        (self.open_word(), streak)
                    } else {
                        (closed(epoch, streak), streak)
                    }
                }
                Admission::Trial { .. } => (self.open_word_for(self.backoff_timeout()), 1),
                Admission::Rejected { .. } | Admission::Bypass => return None,
            };
            match s
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(previous) => {
                    if state_of(next) == OPEN {
                        s.opened_streak.store(streak, Ordering::Relaxed);
                    }
                    if state_of(previous) == HALF_OPEN {
                        s.failed_trials.fetch_add(1, Ordering::Relaxed);
                    }
                    return self.count_transition(state_of(previous), state_of(next));
                }
                Err(current) => word = current,
            }
        }
    }

    /// A call ended with no verdict on the dependency (cancelled, interrupted): a trial
    /// gives its permit back so that another call can try.
    pub fn release(&self, admission: Admission) {
        if !matches!(admission, Admission::Trial { .. }) {
            return;
        }
        let _ = self
            .state
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (self.same_period(admission, word)
                    && trials_admitted(word) > trials_succeeded(word))
                .then(|| word - 1)
            });
    }

    /// How a call reported by hand (no admission kept) counts: in the current period.
    pub fn admission_now(&self) -> Admission {
        let word = self.state.word.load(Ordering::Acquire);
        let epoch = epoch_of(word);
        match state_of(word) {
            CLOSED => Admission::Normal { epoch },
            HALF_OPEN => Admission::Trial { epoch },
            DISABLED => Admission::Bypass,
            _ => Admission::Rejected { remaining: 0 },
        }
    }

    /// The state now. An open circuit whose recovery timeout has passed is moved to
    /// HALF_OPEN here, so that a dashboard never shows a breaker stuck open.
    pub fn current_state(&self) -> (u8, Option<Transition>) {
        let s = &*self.state;
        let word = s.word.load(Ordering::Acquire);
        let now = if state_of(word) == OPEN {
            self.clock.now()
        } else {
            0
        };
        if state_of(word) == OPEN && now >= payload_of(word) {
            s.trials_since.store(now, Ordering::Relaxed);
            let next = half_open(self.next_epoch(), 0);
            if s.word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return (HALF_OPEN, self.count_transition(OPEN, HALF_OPEN));
            }
            return (state_of(s.word.load(Ordering::Acquire)), None);
        }
        (state_of(word), None)
    }

    /// The state as the gauge shows it: METRICS_ONLY while the machine runs in shadow
    /// mode (its own state is then `current_state`), else the machine's state.
    pub fn reported_state(&self) -> (u8, Option<Transition>) {
        let (state, transition) = self.current_state();
        if state <= OPEN && self.metrics_only() {
            (METRICS_ONLY, transition)
        } else {
            (state, transition)
        }
    }

    /// Closes the circuit and forgets the failure streak, the failure window and the
    /// back-off (also ends FORCED_OPEN and DISABLED).
    pub fn reset(&self) -> Option<Transition> {
        let previous = self
            .state
            .word
            .swap(closed(self.next_epoch(), 0), Ordering::AcqRel);
        self.closed_again();
        self.count_transition(state_of(previous), CLOSED)
    }

    /// Holds the circuit open, refusing every call (even in METRICS_ONLY mode: a decision
    /// taken by hand), until `reset()`.
    pub fn force_open(&self) -> Option<Transition> {
        let previous = self.state.word.swap(pack(FORCED_OPEN, 0), Ordering::AcqRel);
        self.count_transition(state_of(previous), FORCED_OPEN)
    }

    /// Opens the circuit for exactly `nanos` (an exchange's Retry-After), then half-opens
    /// it as usual.
    pub fn open_for(&self, nanos: u64) -> Option<Transition> {
        let next = self.open_word_for(nanos);
        let previous = self.state.word.swap(next, Ordering::AcqRel);
        self.count_transition(state_of(previous), OPEN)
    }

    /// Admits every call and keeps counting outcomes, never changing state, until `reset()`.
    pub fn disable(&self) -> Option<Transition> {
        let previous = self.state.word.swap(pack(DISABLED, 0), Ordering::AcqRel);
        self.count_transition(state_of(previous), DISABLED)
    }

    /// Whether the breaker decides without enforcing (see the module comment).
    pub fn metrics_only(&self) -> bool {
        self.state.metrics_only.load(Ordering::Relaxed) != 0
    }

    /// Enters or leaves METRICS_ONLY mode; the machine's own state carries on either way.
    pub fn set_metrics_only(&self, enabled: bool) -> Option<Transition> {
        let before = self
            .state
            .metrics_only
            .swap(enabled as u64, Ordering::Relaxed)
            != 0;
        let (state, _) = self.current_state();
        if before == enabled || state > OPEN {
            return None;
        }
        if enabled {
            self.count_transition(state, METRICS_ONLY)
        } else {
            self.count_transition(METRICS_ONLY, state)
        }
    }

    /// Nanoseconds until an open circuit lets a trial through (0 when not open); a
    /// forced-open circuit has no deadline and answers its recovery timeout as a hint.
    pub fn remaining(&self) -> u64 {
        let word = self.state.word.load(Ordering::Acquire);
        match state_of(word) {
            OPEN => payload_of(word).saturating_sub(self.clock.now()),
            FORCED_OPEN => self.state.recovery_timeout.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Successful calls that counted as failures for lasting `slow_call_duration` or more.
    pub fn slow_calls(&self) -> u64 {
        self.state.slow_calls.load(Ordering::Relaxed)
    }

    /// Calls admitted in METRICS_ONLY mode that an enforcing breaker would have refused.
    pub fn would_reject(&self) -> u64 {
        self.state.would_reject.load(Ordering::Relaxed)
    }

    /// Trials failed in a row since the circuit last closed.
    pub fn failed_trials(&self) -> u64 {
        self.state.failed_trials.load(Ordering::Relaxed)
    }

    /// (calls, failures) in the failure-rate window now (both 0 when no rate is set).
    pub fn window_totals(&self) -> (u64, u64) {
        let s = &*self.state;
        if s.failure_rate_ppm.load(Ordering::Relaxed) == 0 {
            return (0, 0);
        }
        let Some(extras) = self.extras_if_made() else {
            return (0, 0);
        };
        let (slice, span) = self.slice_now(false);
        extras.window.totals(slice, span)
    }

    /// A successful call that lasted `slow_call_duration` or longer: counted as a slow
    /// call, and as a failure by the state machine.
    pub fn on_slow_success(&self, admission: Admission) -> Option<Transition> {
        self.state.slow_calls.fetch_add(1, Ordering::Relaxed);
        self.on_failure(admission)
    }

    /// Consecutive failures: the running streak while closed, the streak that opened the
    /// circuit otherwise.
    pub fn failure_count(&self) -> u64 {
        let word = self.state.word.load(Ordering::Acquire);
        if state_of(word) == CLOSED {
            streak_of(word)
        } else {
            self.state.opened_streak.load(Ordering::Relaxed)
        }
    }

    pub fn successes(&self) -> u64 {
        self.state.successes.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::Relaxed)
    }

    pub fn rejections(&self) -> u64 {
        self.state.rejections.load(Ordering::Relaxed)
    }

    /// How many times the circuit went from `from` to `to`.
    pub fn transitions(&self, from: u8, to: u8) -> u64 {
        self.extras_if_made().map_or(0, |extras| {
            extras.transitions[from as usize * STATES + to as usize].load(Ordering::Relaxed)
        })
    }

    /// Whether `word` is still in the closed or half-open period that made `admission`.
    #[inline]
    fn same_period(&self, admission: Admission, word: u64) -> bool {
        match admission {
            Admission::Normal { epoch } => {
                state_of(word) == CLOSED && epoch_of(word) == epoch & CLOSED_EPOCH_FIELD
            }
            Admission::Trial { epoch } => {
                state_of(word) == HALF_OPEN && epoch_of(word) == epoch & HALF_OPEN_EPOCH_FIELD
            }
            Admission::Rejected { .. } | Admission::Bypass => false,
        }
    }

    /// The slice a call falls in now and how many slices the window spans; `take` counts
    /// the call in a count-based window's sequence.
    #[inline]
    fn slice_now(&self, take: bool) -> (u64, u64) {
        let s = &*self.state;
        let size = s.window_size.load(Ordering::Relaxed).max(1);
        let width = size.div_ceil(ROLLING_BUCKETS as u64);
        if s.window_is_time.load(Ordering::Relaxed) == 0 {
            let window = &self.extras().window;
            let n = if take {
                window.sequence.fetch_add(1, Ordering::Relaxed)
            } else {
                window.sequence.load(Ordering::Relaxed).saturating_sub(1)
            };
            (n / width, size.div_ceil(width))
        } else {
            (self.clock.now() / width, ROLLING_BUCKETS as u64)
        }
    }

    /// Counts a call admitted while closed in the failure-rate window; true when it was a
    /// failure that brings the rate to the threshold (with at least `minimum_calls`).
    #[inline(never)]
    fn count_in_window(&self, admission: Admission, word: u64, failed: bool) -> bool {
        if !matches!(admission, Admission::Normal { .. }) || !self.same_period(admission, word) {
            return false;
        }
        let s = &*self.state;
        let (slice, span) = self.slice_now(true);
        let window = &self.extras().window;
        window.record(slice, failed);
        if !failed {
            return false;
        }
        let (calls, failures) = window.totals(slice, span);
        let ppm = s.failure_rate_ppm.load(Ordering::Relaxed);
        calls >= s.minimum_calls.load(Ordering::Relaxed)
            && failures as u128 * 1_000_000 >= ppm as u128 * calls as u128
    }

    /// A refusal, or in METRICS_ONLY mode an admission outside the machine.
    #[cold]
    fn refuse(&self, remaining: u64) -> Admission {
        let s = &*self.state;
        if s.metrics_only.load(Ordering::Relaxed) != 0 {
            s.would_reject.fetch_add(1, Ordering::Relaxed);
            return Admission::Bypass;
        }
        s.rejections.fetch_add(1, Ordering::Relaxed);
        Admission::Rejected { remaining }
    }

    /// After every entry into CLOSED: a fresh window and no back-off.
    fn closed_again(&self) {
        let s = &*self.state;
        s.failed_trials.store(0, Ordering::Relaxed);
        if s.failure_rate_ppm.load(Ordering::Relaxed) != 0 {
            if let Some(extras) = self.extras_if_made() {
                extras.window.clear();
            }
        }
    }

    /// How long a failed trial reopens the circuit: the recovery timeout times the
    /// back-off multiplier once per trial failed in a row, capped.
    #[cold]
    fn backoff_timeout(&self) -> u64 {
        let s = &*self.state;
        let base = s.recovery_timeout.load(Ordering::Relaxed);
        let multiplier = f64::from_bits(s.backoff_multiplier.load(Ordering::Relaxed));
        if multiplier <= 1.0 {
            return base;
        }
        let cap = s.max_recovery_timeout.load(Ordering::Relaxed).max(base);
        let failed = s.failed_trials.load(Ordering::Relaxed).saturating_add(1);
        let timeout = base as f64 * multiplier.powi(failed.min(1_000) as i32);
        if timeout >= cap as f64 {
            cap
        } else {
            timeout as u64
        }
    }

    /// `Some(now)` when every trial permit of the current half-open period has been out for
    /// `recovery_timeout` or longer without a verdict (cold path: only when permits are taken).
    #[cold]
    fn abandoned_trials(&self) -> Option<u64> {
        let s = &*self.state;
        let now = self.clock.now();
        let since = s.trials_since.load(Ordering::Relaxed);
        let timeout = s.recovery_timeout.load(Ordering::Relaxed);
        (now >= since.saturating_add(timeout)).then_some(now)
    }

    fn next_epoch(&self) -> u64 {
        self.state.epoch.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn open_word(&self) -> u64 {
        self.open_word_for(self.state.recovery_timeout.load(Ordering::Relaxed))
    }

    fn open_word_for(&self, nanos: u64) -> u64 {
        pack(OPEN, self.clock.now().saturating_add(nanos).min(PAYLOAD))
    }

    fn count_transition(&self, from: u8, to: u8) -> Option<Transition> {
        if from == to {
            return None;
        }
        self.extras().transitions[from as usize * STATES + to as usize]
            .fetch_add(1, Ordering::Relaxed);
        Some(Transition { from, to })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, NANOS_PER_SECOND};
    use proptest::prelude::*;

    const SECOND: u64 = NANOS_PER_SECOND;

    fn breaker(threshold: u64, recovery: u64, half_open: u64) -> (Breaker, ManualClock) {
        let clock = ManualClock::new(1_000 * SECOND);
        let settings = BreakerSettings {
            failure_threshold: threshold,
            recovery_timeout: recovery,
            half_open_max_calls: half_open,
            ..BreakerSettings::default()
        };
        (Breaker::new(settings, Clock::Manual(clock.clone())), clock)
    }

    fn fail(breaker: &Breaker) -> Option<Transition> {
        let (admission, _) = breaker.enter();
        breaker.on_failure(admission)
    }

    #[test]
    fn a_stale_trial_verdict_2_pow_21_epochs_later_does_not_reopen_a_new_half_open_period() {
        let (breaker, clock) = breaker(1, SECOND, 1);
        fail(&breaker);
        clock.advance(SECOND);
        let (stale, _) = breaker.enter();
        let Admission::Trial { epoch } = stale else {
            panic!("expected a trial, got {stale:?}");
        };
        // Lost races burned epochs (each caller draws one before its CAS) until the next
        // half-open period draws the stale trial's number plus 2^21.
        breaker
            .state
            .epoch
            .store(epoch + (1 << 21) - 1, Ordering::Relaxed);
        clock.advance(2 * SECOND); // the stale trial's permit is presumed lost
        let (fresh, _) = breaker.enter();
        assert_eq!(
            fresh,
            Admission::Trial {
                epoch: epoch + (1 << 21)
            }
        );
        assert_eq!(breaker.on_failure(stale), None);
        assert_eq!(breaker.current_state().0, HALF_OPEN);
        assert!(breaker.on_success(fresh).is_some());
        assert_eq!(breaker.current_state().0, CLOSED);
    }

    #[test]
    fn opens_after_exactly_threshold_consecutive_failures() {
        let (breaker, _clock) = breaker(3, 60 * SECOND, 1);
        assert_eq!(fail(&breaker), None);
        assert_eq!(fail(&breaker), None);
        assert_eq!(
            fail(&breaker),
            Some(Transition {
                from: CLOSED,
                to: OPEN
            })
        );
        assert_eq!(
            breaker.enter().0,
            Admission::Rejected {
                remaining: 60 * SECOND
            }
        );
        assert_eq!(breaker.failure_count(), 3);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let (breaker, _clock) = breaker(3, SECOND, 1);
        fail(&breaker);
        fail(&breaker);
        breaker.on_success(breaker.enter().0);
        assert_eq!(breaker.failure_count(), 0);
        fail(&breaker);
        fail(&breaker);
        assert_eq!(breaker.current_state().0, CLOSED);
    }

    #[test]
    fn exactly_at_the_recovery_timeout_one_trial_is_let_through() {
        let (breaker, clock) = breaker(1, 10 * SECOND, 1);
        fail(&breaker);
        clock.advance(10 * SECOND - 1);
        assert_eq!(breaker.enter().0, Admission::Rejected { remaining: 1 });
        clock.advance(1);
        assert!(matches!(breaker.enter().0, Admission::Trial { .. }));
        assert_eq!(breaker.enter().0, Admission::Rejected { remaining: 0 });
    }

    #[test]
    fn a_successful_trial_closes_and_a_failed_one_reopens() {
        let (breaker, clock) = breaker(1, SECOND, 1);
        fail(&breaker);
        clock.advance(SECOND);
        let (trial, _) = breaker.enter();
        assert_eq!(
            breaker.on_failure(trial),
            Some(Transition {
                from: HALF_OPEN,
                to: OPEN
            })
        );
        assert_eq!(breaker.remaining(), SECOND);
        clock.advance(SECOND);
        let (trial, _) = breaker.enter();
        assert_eq!(
            breaker.on_success(trial),
            Some(Transition {
                from: HALF_OPEN,
                to: CLOSED
            })
        );
        assert_eq!(breaker.current_state().0, CLOSED);
        assert_eq!(breaker.transitions(CLOSED, OPEN), 1);
        assert_eq!(breaker.transitions(OPEN, HALF_OPEN), 2);
        assert_eq!(breaker.transitions(HALF_OPEN, OPEN), 1);
        assert_eq!(breaker.transitions(HALF_OPEN, CLOSED), 1);
    }

    #[test]
    fn the_state_reads_half_open_as_soon_as_the_timeout_passes() {
        let (breaker, clock) = breaker(1, SECOND, 1);
        fail(&breaker);
        assert_eq!(breaker.current_state().0, OPEN);
        clock.advance(SECOND);
        let (state, transition) = breaker.current_state();
        assert_eq!(state, HALF_OPEN);
        assert!(transition.is_some());
        // Reading the state took no permit: the next call is still the trial.
        assert!(matches!(breaker.enter().0, Admission::Trial { .. }));
    }

    #[test]
    fn a_late_failure_of_a_call_admitted_while_closed_does_not_reopen_a_half_open_circuit() {
        let (breaker, clock) = breaker(1, SECOND, 1);
        let (slow_call, _) = breaker.enter();
        fail(&breaker);
        clock.advance(SECOND);
        let (trial, _) = breaker.enter();
        assert_eq!(breaker.on_failure(slow_call), None);
        assert_eq!(breaker.current_state().0, HALF_OPEN);
        assert!(breaker.on_success(trial).is_some());
        assert_eq!(breaker.current_state().0, CLOSED);
    }

    #[test]
    fn a_late_failure_of_a_call_admitted_before_the_circuit_opened_does_not_reopen_it() {
        let (breaker, clock) = breaker(1, SECOND, 1);
        let (slow_call, _) = breaker.enter();
        fail(&breaker);
        clock.advance(SECOND);
        let (trial, _) = breaker.enter();
        assert!(breaker.on_success(trial).is_some());
        assert_eq!(breaker.on_failure(slow_call), None);
        assert_eq!(breaker.current_state().0, CLOSED);
        assert_eq!(breaker.failures(), 2, "the stale failure is still counted");
    }

    #[test]
    fn admission_codes_round_trip_with_their_epoch() {
        for admission in [
            Admission::Normal { epoch: 0 },
            Admission::Normal { epoch: 12345 },
            Admission::Trial { epoch: 7 },
        ] {
            assert_eq!(Admission::from_code(admission.code()), Some(admission));
        }
        assert_eq!(Admission::from_code(3), Some(Admission::Bypass));
        assert_eq!(Admission::from_code(7), None);
    }

    #[test]
    fn a_trial_that_never_reports_is_presumed_lost_after_the_recovery_timeout() {
        let (breaker, clock) = breaker(1, 10 * SECOND, 1);
        fail(&breaker);
        clock.advance(10 * SECOND);
        let (lost, _) = breaker.enter(); // its caller dies without a verdict
        assert!(matches!(lost, Admission::Trial { .. }));
        clock.advance(10 * SECOND - 1);
        assert!(breaker.enter().0.is_rejected());
        clock.advance(1);
        let (next, transition) = breaker.enter();
        assert!(matches!(next, Admission::Trial { .. }));
        assert_eq!(transition, None);
        // The lost trial's verdict, should it ever come, belongs to a period that is over.
        assert_eq!(breaker.on_failure(lost), None);
        assert_eq!(
            breaker.on_success(next),
            Some(Transition {
                from: HALF_OPEN,
                to: CLOSED
            })
        );
    }

    #[test]
    fn a_trial_granted_long_after_the_circuit_half_opened_is_not_presumed_lost() {
        // A state read (a Prometheus scrape) half-opens the circuit; the first real trial
        // comes a whole minute later. A second caller right after it must be refused, and
        // the trial's failure must reopen the circuit.
        let (breaker, clock) = breaker(1, 10 * SECOND, 1);
        fail(&breaker);
        clock.advance(10 * SECOND);
        assert_eq!(breaker.current_state().0, HALF_OPEN);
        clock.advance(60 * SECOND);
        let (trial, _) = breaker.enter();
        assert!(matches!(trial, Admission::Trial { .. }));
        assert_eq!(breaker.enter().0, Admission::Rejected { remaining: 0 });
        assert_eq!(
            breaker.on_failure(trial),
            Some(Transition {
                from: HALF_OPEN,
                to: OPEN
            })
        );
    }

    #[test]
    fn a_success_recorded_by_hand_with_no_trial_permit_out_does_not_close_the_circuit() {
        // A state read half-opens the circuit; `record_success()` with no `allow()` before
        // it (so no permit taken) must not close it.
        let (breaker, clock) = breaker(1, 10 * SECOND, 1);
        fail(&breaker);
        clock.advance(10 * SECOND);
        assert_eq!(breaker.current_state().0, HALF_OPEN);
        assert_eq!(breaker.on_success(breaker.admission_now()), None);
        assert_eq!(breaker.current_state().0, HALF_OPEN);
        // The real trial still decides.
        let (trial, _) = breaker.enter();
        assert_eq!(
            breaker.on_success(trial),
            Some(Transition {
                from: HALF_OPEN,
                to: CLOSED
            })
        );
    }

    #[test]
    fn a_released_trial_gives_its_permit_back() {
        let (breaker, clock) = breaker(1, SECOND, 1);
        fail(&breaker);
        clock.advance(SECOND);
        let (trial, _) = breaker.enter();
        assert_eq!(breaker.enter().0, Admission::Rejected { remaining: 0 });
        breaker.release(trial);
        assert!(matches!(breaker.enter().0, Admission::Trial { .. }));
    }

    #[test]
    fn several_trials_must_all_succeed_to_close() {
        let (breaker, clock) = breaker(1, SECOND, 3);
        fail(&breaker);
        clock.advance(SECOND);
        let trials: Vec<_> = (0..3).map(|_| breaker.enter().0).collect();
        assert!(trials.iter().all(|a| matches!(a, Admission::Trial { .. })));
        assert_eq!(breaker.enter().0, Admission::Rejected { remaining: 0 });
        assert_eq!(breaker.on_success(trials[0]), None);
        assert_eq!(breaker.on_success(trials[1]), None);
        assert!(breaker.on_success(trials[2]).is_some());
        assert_eq!(breaker.current_state().0, CLOSED);
    }

    #[test]
    fn reset_and_force_open_change_the_state_at_once() {
        let (breaker, _clock) = breaker(5, SECOND, 1);
        assert!(breaker.force_open().is_some());
        assert_eq!(breaker.current_state().0, FORCED_OPEN);
        assert!(breaker.reset().is_some());
        assert_eq!(breaker.current_state().0, CLOSED);
        assert_eq!(breaker.reset(), None);
    }

    #[test]
    fn a_lower_threshold_applies_to_the_running_streak() {
        let (breaker, _clock) = breaker(5, SECOND, 1);
        fail(&breaker);
        fail(&breaker);
        breaker.set_settings(BreakerSettings {
            failure_threshold: 3,
            recovery_timeout: SECOND,
            half_open_max_calls: 1,
            ..BreakerSettings::default()
        });
        assert!(fail(&breaker).is_some());
    }

    #[test]
    fn eight_threads_lose_no_count_and_transitions_balance() {
        let (breaker, clock) = breaker(3, 1_000, 1);
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let breaker = breaker.clone();
                let clock = clock.clone();
                scope.spawn(move || {
                    for i in 0..20_000u64 {
                        if i % 7 == 0 {
                            clock.advance(100);
                        }
                        let (admission, _) = breaker.enter();
                        match admission {
                            Admission::Rejected { .. } => {}
                            _ if (i + t) % 3 == 0 => {
                                breaker.on_failure(admission);
                            }
                            _ => {
                                breaker.on_success(admission);
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(
            breaker.successes() + breaker.failures() + breaker.rejections(),
            160_000
        );
        let (state, _) = breaker.current_state();
        for s in [CLOSED, HALF_OPEN, OPEN] {
            let into: u64 = [CLOSED, HALF_OPEN, OPEN]
                .iter()
                .map(|f| breaker.transitions(*f, s))
                .sum();
            let out: u64 = [CLOSED, HALF_OPEN, OPEN]
                .iter()
                .map(|t| breaker.transitions(s, *t))
                .sum();
            let expected = (state == s) as i64 - (s == CLOSED) as i64;
            assert_eq!(into as i64 - out as i64, expected, "state {s}");
        }
    }

    fn with(settings: BreakerSettings) -> (Breaker, ManualClock) {
        let clock = ManualClock::new(1_000 * SECOND);
        (Breaker::new(settings, Clock::Manual(clock.clone())), clock)
    }

    fn succeed(breaker: &Breaker) -> Option<Transition> {
        let (admission, _) = breaker.enter();
        breaker.on_success(admission)
    }

    fn rate(ppm: u64, minimum_calls: u64, window: Window) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: MAX_FAILURE_THRESHOLD,
            recovery_timeout: SECOND,
            failure_rate_ppm: ppm,
            minimum_calls,
            window,
            ..BreakerSettings::default()
        }
    }

    #[test]
    fn a_failure_rate_opens_only_once_the_minimum_number_of_calls_is_seen() {
        let (breaker, _clock) = with(rate(500_000, 4, Window::Calls(10)));
        succeed(&breaker);
        fail(&breaker);
        succeed(&breaker);
        assert_eq!(breaker.current_state().0, CLOSED, "3 calls < minimum 4");
        assert_eq!(
            fail(&breaker),
            Some(Transition {
                from: CLOSED,
                to: OPEN
            }),
            "2 failures in 4 calls is 50%"
        );
    }

    #[test]
    fn a_count_window_forgets_calls_older_than_its_size() {
        let (breaker, _clock) = with(rate(500_000, 2, Window::Calls(4)));
        fail(&breaker);
        for _ in 0..4 {
            succeed(&breaker);
        }
        // The early failure fell out: 1 failure in the last 4 calls is 25%.
        assert_eq!(fail(&breaker), None);
        assert_eq!(breaker.window_totals(), (4, 1));
        assert!(fail(&breaker).is_some(), "2 in the last 4 calls");
    }

    #[test]
    fn a_time_window_forgets_calls_older_than_its_duration() {
        let (breaker, clock) = with(rate(500_000, 2, Window::Nanos(10 * SECOND)));
        fail(&breaker);
        clock.advance(10 * SECOND);
        succeed(&breaker);
        succeed(&breaker);
        assert_eq!(
            fail(&breaker),
            None,
            "1 failure in 3 calls of the last 10 s"
        );
        clock.advance(SECOND);
        assert!(fail(&breaker).is_some(), "2 failures in 4 calls");
    }

    #[test]
    fn the_window_starts_empty_after_the_circuit_closes() {
        let (breaker, clock) = with(rate(500_000, 2, Window::Calls(100)));
        fail(&breaker);
        assert!(fail(&breaker).is_some());
        clock.advance(SECOND);
        assert!(succeed(&breaker).is_some(), "the trial closes it");
        assert_eq!(breaker.window_totals(), (0, 0));
        assert_eq!(fail(&breaker), None, "1 call is below the minimum");
    }

    #[test]
    fn the_consecutive_threshold_still_opens_beside_a_rate() {
        let mut settings = rate(900_000, 100, Window::Calls(100));
        settings.failure_threshold = 2;
        let (breaker, _clock) = with(settings);
        fail(&breaker);
        assert!(fail(&breaker).is_some());
    }

    #[test]
    fn each_failed_trial_in_a_row_doubles_the_open_period_up_to_the_cap() {
        let (breaker, clock) = with(BreakerSettings {
            failure_threshold: 1,
            recovery_timeout: SECOND,
            backoff_multiplier: 2.0,
            max_recovery_timeout: 5 * SECOND,
            ..BreakerSettings::default()
        });
        fail(&breaker);
        let mut periods = vec![breaker.remaining()];
        for _ in 0..4 {
            clock.advance(breaker.remaining());
            fail(&breaker); // the trial
            periods.push(breaker.remaining());
        }
        assert_eq!(
            periods,
            [1, 2, 4, 5, 5].map(|s| s * SECOND).to_vec(),
            "open periods"
        );
        clock.advance(breaker.remaining());
        succeed(&breaker);
        fail(&breaker);
        assert_eq!(breaker.remaining(), SECOND, "closing forgets the back-off");
    }

    #[test]
    fn open_for_holds_the_circuit_open_exactly_that_long() {
        let (breaker, clock) = breaker(5, 60 * SECOND, 1);
        assert_eq!(
            breaker.open_for(7 * SECOND),
            Some(Transition {
                from: CLOSED,
                to: OPEN
            })
        );
        clock.advance(7 * SECOND - 1);
        assert_eq!(breaker.enter().0, Admission::Rejected { remaining: 1 });
        clock.advance(1);
        assert!(matches!(breaker.enter().0, Admission::Trial { .. }));
    }

    #[test]
    fn a_forced_open_circuit_stays_open_past_any_timeout_until_reset() {
        let (breaker, clock) = breaker(5, SECOND, 1);
        breaker.force_open();
        clock.advance(3_600 * SECOND);
        assert!(breaker.enter().0.is_rejected());
        assert_eq!(breaker.current_state().0, FORCED_OPEN);
        breaker.reset();
        assert!(matches!(breaker.enter().0, Admission::Normal { .. }));
    }

    #[test]
    fn a_disabled_breaker_admits_every_call_and_keeps_counting() {
        let (breaker, _clock) = breaker(1, SECOND, 1);
        assert_eq!(
            breaker.disable(),
            Some(Transition {
                from: CLOSED,
                to: DISABLED
            })
        );
        for _ in 0..5 {
            assert_eq!(fail(&breaker), None);
        }
        assert_eq!(breaker.current_state().0, DISABLED);
        assert_eq!(breaker.failures(), 5);
        assert_eq!(breaker.rejections(), 0);
    }

    #[test]
    fn metrics_only_admits_what_it_would_refuse_and_counts_it() {
        let (breaker, clock) = breaker(2, SECOND, 1);
        assert_eq!(
            breaker.set_metrics_only(true),
            Some(Transition {
                from: CLOSED,
                to: METRICS_ONLY
            })
        );
        fail(&breaker);
        assert!(fail(&breaker).is_some(), "the shadow machine opens");
        assert_eq!(breaker.current_state().0, OPEN);
        assert_eq!(breaker.reported_state().0, METRICS_ONLY);
        for _ in 0..3 {
            assert_eq!(breaker.enter().0, Admission::Bypass);
        }
        assert_eq!(breaker.would_reject(), 3);
        assert_eq!(breaker.rejections(), 0);
        clock.advance(SECOND);
        let (trial, _) = breaker.enter();
        assert!(matches!(trial, Admission::Trial { .. }), "it still trials");
        assert_eq!(breaker.enter().0, Admission::Bypass);
        assert!(breaker.on_success(trial).is_some());
        breaker.set_metrics_only(false);
        assert_eq!(breaker.reported_state().0, CLOSED);
    }

    #[test]
    fn a_slow_success_counts_as_a_failure() {
        let (breaker, _clock) = breaker(2, SECOND, 1);
        let (admission, _) = breaker.enter();
        breaker.on_slow_success(admission);
        let (admission, _) = breaker.enter();
        assert!(breaker.on_slow_success(admission).is_some());
        assert_eq!(breaker.slow_calls(), 2);
    }

    #[test]
    fn eight_threads_lose_no_call_or_failure_in_the_window() {
        // A window larger than every call made: the totals are exact counts.
        let (breaker, _clock) = with(rate(1_000_000, u64::MAX, Window::Calls(1 << 30)));
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let breaker = breaker.clone();
                scope.spawn(move || {
                    for i in 0..10_000u64 {
                        let (admission, _) = breaker.enter();
                        if (i + t) % 4 == 0 {
                            breaker.on_failure(admission);
                        } else {
                            breaker.on_success(admission);
                        }
                    }
                });
            }
        });
        assert_eq!(breaker.window_totals(), (80_000, 20_000));
        assert_eq!(
            breaker.current_state().0,
            CLOSED,
            "minimum_calls is never reached"
        );
    }

    proptest! {
        #[test]
        fn a_count_window_agrees_with_a_list_of_the_last_calls(
            size in 1u64..40,
            minimum in 1u64..10,
            ppm in 1u64..=1_000_000,
            failed in proptest::collection::vec(any::<bool>(), 1..200),
        ) {
            let (breaker, _clock) = with(rate(ppm, minimum, Window::Calls(size)));
            // The model: every call's slice; the window is the last `span` slices.
            let width = size.div_ceil(ROLLING_BUCKETS as u64);
            let span = size.div_ceil(width);
            let mut calls: Vec<(u64, bool)> = Vec::new();
            for (n, fail) in failed.into_iter().enumerate() {
                let slice = n as u64 / width;
                calls.push((slice, fail));
                let in_window = calls.iter().filter(|(s, _)| s + span > slice);
                let (total, failures) = in_window.fold((0u64, 0u64), |(c, f), (_, x)| (c + 1, f + *x as u64));
                let opens = fail && total >= minimum && failures * 1_000_000 >= ppm * total;
                let transition = if fail { self::fail(&breaker) } else { succeed(&breaker) };
                prop_assert_eq!(transition.is_some(), opens, "call {} of a window of {}", n, size);
                if opens {
                    break;
                }
                prop_assert_eq!(breaker.window_totals(), (total, failures));
            }
        }
    }

    /// A plain sequential breaker: the reference model.
    #[derive(Debug)]
    struct ReferenceBreaker {
        state: u8,
        streak: u64,
        due: u64,
        admitted: u64,
        succeeded: u64,
        threshold: u64,
        recovery: u64,
        max_trials: u64,
    }

    #[derive(Clone, Copy, Debug)]
    enum Outcome {
        Success,
        Failure,
        Interrupted,
    }

    impl ReferenceBreaker {
        /// Returns whether the call ran.
        fn call(&mut self, now: u64, outcome: Outcome) -> bool {
            if self.state == OPEN && now >= self.due {
                self.state = HALF_OPEN;
                self.admitted = 0;
                self.succeeded = 0;
            }
            match self.state {
                OPEN => false,
                HALF_OPEN if self.admitted >= self.max_trials => false,
                HALF_OPEN => {
                    self.admitted += 1;
                    match outcome {
                        Outcome::Success => {
                            self.succeeded += 1;
                            if self.succeeded >= self.max_trials {
                                self.state = CLOSED;
                                self.streak = 0;
                            }
                        }
                        Outcome::Failure => self.open(now),
                        Outcome::Interrupted => self.admitted -= 1,
                    }
                    true
                }
                _ => {
                    match outcome {
                        Outcome::Success => self.streak = 0,
                        Outcome::Failure => {
                            self.streak += 1;
                            if self.streak >= self.threshold {
                                self.open(now);
                            }
                        }
                        Outcome::Interrupted => {}
                    }
                    true
                }
            }
        }

        fn open(&mut self, now: u64) {
            self.state = OPEN;
            self.due = now + self.recovery;
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Call(Outcome),
        Advance(u64),
        Reset,
        ForceOpen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop_oneof![
                Just(Outcome::Success),
                Just(Outcome::Failure),
                Just(Outcome::Interrupted)
            ]
            .prop_map(Op::Call),
            2 => (0u64..3_000).prop_map(Op::Advance),
            1 => Just(Op::Reset),
            1 => Just(Op::ForceOpen),
        ]
    }

    proptest! {
        #[test]
        fn the_breaker_agrees_with_a_plain_state_machine(
            threshold in 1u64..6,
            recovery in 1u64..2_000,
            max_trials in 1u64..4,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let (breaker, clock) = breaker(threshold, recovery, max_trials);
            let mut model = ReferenceBreaker {
                state: CLOSED, streak: 0, due: 0, admitted: 0, succeeded: 0,
                threshold, recovery, max_trials,
            };
            for op in ops {
                match op {
                    Op::Call(outcome) => {
                        let (admission, _) = breaker.enter();
                        let ran = !matches!(admission, Admission::Rejected { .. });
                        match (ran, outcome) {
                            (false, _) => {}
                            (true, Outcome::Success) => { breaker.on_success(admission); }
                            (true, Outcome::Failure) => { breaker.on_failure(admission); }
                            (true, Outcome::Interrupted) => breaker.release(admission),
                        }
                        prop_assert_eq!(ran, model.call(clock.now(), outcome));
                    }
                    Op::Advance(nanos) => clock.advance(nanos),
                    Op::Reset => {
                        breaker.reset();
                        model.state = CLOSED;
                        model.streak = 0;
                    }
                    Op::ForceOpen => {
                        breaker.open_for(recovery);
                        model.open(clock.now());
                    }
                }
                let expected = if model.state == OPEN && clock.now() >= model.due {
                    HALF_OPEN
                } else {
                    model.state
                };
                let observed = state_of(breaker.state.word.load(Ordering::Acquire));
                let observed = if observed == OPEN && breaker.remaining() == 0 { HALF_OPEN } else { observed };
                prop_assert_eq!(observed, expected);
                if model.state == CLOSED {
                    prop_assert_eq!(breaker.failure_count(), model.streak);
                }
            }
        }
    }
}

/// Every interleaving of the transitions (loom): `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker(threshold: u64, half_open: u64) -> (Breaker, ManualClock) {
        let clock = ManualClock::new(1_000);
        let settings = BreakerSettings {
            failure_threshold: threshold,
            recovery_timeout: 10,
            half_open_max_calls: half_open,
            ..BreakerSettings::default()
        };
        (Breaker::new(settings, Clock::Manual(clock.clone())), clock)
    }

    #[test]
    fn loom_exactly_one_of_three_callers_gets_the_trial() {
        crate::sync::model("loom_exactly_one_of_three_callers_gets_the_trial", || {
            let (breaker, clock) = breaker(1, 1);
            breaker.open_for(10);
            clock.advance(10);
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let breaker = breaker.clone();
                    loom::thread::spawn(move || {
                        matches!(breaker.enter().0, Admission::Trial { .. })
                    })
                })
                .collect();
            let trials = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|t| *t)
                .count();
            assert_eq!(trials, 1);
            assert_eq!(breaker.transitions(OPEN, HALF_OPEN), 1);
            assert_eq!(breaker.rejections(), 2);
        });
    }

    #[test]
    fn loom_concurrent_failures_open_the_circuit_once() {
        crate::sync::model("loom_concurrent_failures_open_the_circuit_once", || {
            let (breaker, _clock) = breaker(2, 1);
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let breaker = breaker.clone();
                    loom::thread::spawn(move || {
                        let (admission, _) = breaker.enter();
                        if matches!(admission, Admission::Normal { .. }) {
                            breaker.on_failure(admission);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(breaker.current_state().0, OPEN);
            assert_eq!(breaker.transitions(CLOSED, OPEN), 1);
        });
    }

    #[test]
    fn loom_a_trial_verdict_and_a_stale_failure_race_without_losing_the_verdict() {
        crate::sync::model(
            "loom_a_trial_verdict_and_a_stale_failure_race_without_losing_the_verdict",
            || {
                let (breaker, clock) = breaker(1, 1);
                let (stale, _) = breaker.enter();
                breaker.open_for(10);
                clock.advance(10);
                let (trial, _) = breaker.enter();
                assert!(matches!(trial, Admission::Trial { .. }));
                let a = {
                    let breaker = breaker.clone();
                    loom::thread::spawn(move || breaker.on_success(trial))
                };
                let b = {
                    let breaker = breaker.clone();
                    loom::thread::spawn(move || breaker.on_failure(stale))
                };
                a.join().unwrap();
                b.join().unwrap();
                // The stale failure was admitted while closed: it never reopens the circuit
                // that the trial closed, whichever ran first.
                assert_eq!(breaker.current_state().0, CLOSED);
                assert_eq!(breaker.transitions(HALF_OPEN, CLOSED), 1);
            },
        );
    }
}
