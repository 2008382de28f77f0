//! The circuit breaker state machine, on one atomic word.
//!
//! The state and everything a transition must change with it share one `AtomicU64`, so
//! every transition is a single compare-and-swap and no reader ever sees a state with the
//! wrong payload:
//!
//! ```text
//!   bits 61..63  state: CLOSED, HALF_OPEN or OPEN
//!   CLOSED       bits 0..32  consecutive failures, bits 32..61 epoch
//!   OPEN         bits 0..61  the instant (ns) at which a trial becomes due
//!   HALF_OPEN    bits 0..20  trial calls admitted, bits 20..40 trial calls that succeeded,
//!                bits 40..61 epoch
//! ```
//!
//! A caller is told how it was admitted (`Admission`), with the epoch of the closed or
//! half-open period that admitted it. Every entry into CLOSED or HALF_OPEN starts a new
//! epoch, so a slow call's verdict only counts in the period that let it through: a call
//! admitted before the circuit opened cannot reopen it after a trial closed it, nor be
//! mistaken for a half-open trial. (loom found the first of these.)

use crate::sync::{AtomicU64, Ordering};

use crate::clock::Clock;
use crate::place::Place;

pub const CLOSED: u8 = 0;
pub const HALF_OPEN: u8 = 1;
pub const OPEN: u8 = 2;
const STATES: usize = 3;

const STATE_SHIFT: u32 = 61;
const PAYLOAD: u64 = (1 << STATE_SHIFT) - 1;
const TRIAL_BITS: u32 = 20;
const TRIAL_FIELD: u64 = (1 << TRIAL_BITS) - 1;
/// The most trial calls a half-open circuit can admit at once.
pub const MAX_HALF_OPEN_CALLS: u64 = TRIAL_FIELD;
const STREAK_BITS: u32 = 32;
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
}

impl Admission {
    /// The int the binding passes back and forth: the kind in the low 2 bits (0 rejected,
    /// 1 normal, 2 trial), the epoch above.
    pub fn code(self) -> u64 {
        match self {
            Admission::Rejected { .. } => 0,
            Admission::Normal { epoch } => 1 | (epoch << 2),
            Admission::Trial { epoch } => 2 | (epoch << 2),
        }
    }

    pub fn from_code(code: u64) -> Option<Admission> {
        let epoch = code >> 2;
        match code & 3 {
            0 if epoch == 0 => Some(Admission::Rejected { remaining: 0 }),
            1 => Some(Admission::Normal { epoch }),
            2 => Some(Admission::Trial { epoch }),
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

/// When the circuit opens and how it recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a closed circuit (1..=2^32-1).
    pub failure_threshold: u64,
    /// Nanoseconds an opened circuit stays open before a trial call is let through.
    pub recovery_timeout: u64,
    /// Trial calls admitted while half-open; all must succeed to close (1..=2^20-1).
    pub half_open_max_calls: u64,
}

/// The atomics of one breaker, laid out for shared memory as well as for this process.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BreakerState {
    word: AtomicU64,
    failure_threshold: AtomicU64,
    recovery_timeout: AtomicU64,
    half_open_max_calls: AtomicU64,
    /// Consecutive failures counted when the circuit last opened (for `failure_count`).
    opened_streak: AtomicU64,
    /// The last epoch handed out (see the module comment).
    epoch: AtomicU64,
    /// When the current half-open period began (ns). Trial permits not resolved within
    /// `recovery_timeout` of it are presumed lost (their caller died: a process killed
    /// while holding a trial of a shared breaker must not wedge it half-open for good).
    /// A hint written before the swap that half-opens, never a synchronisation point: a
    /// plain std atomic even under loom, which would otherwise explore it for nothing.
    trials_since: std::sync::atomic::AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rejections: AtomicU64,
    /// Transitions by `from * 3 + to`.
    transitions: [AtomicU64; STATES * STATES],
}

impl BreakerState {
    /// A closed breaker with these settings.
    pub fn new(settings: BreakerSettings) -> Self {
        let state = BreakerState::default();
        state.set_settings(settings);
        state
    }

    /// Changes thresholds in place; the current state and its counts stay.
    pub fn set_settings(&self, settings: BreakerSettings) {
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
    }
}

/// A circuit breaker: its state (local or shared) and the clock it reads.
#[derive(Clone)]
pub struct Breaker {
    state: Place<BreakerState>,
    clock: Clock,
}

impl Breaker {
    /// A closed breaker owned by this process.
    pub fn new(settings: BreakerSettings, clock: Clock) -> Self {
        Breaker {
            state: Place::local(BreakerState::new(settings)),
            clock,
        }
    }

    /// A breaker over existing state (for example in a shared mapping).
    pub fn over(state: Place<BreakerState>, clock: Clock) -> Self {
        Breaker { state, clock }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn settings(&self) -> BreakerSettings {
        let s = &*self.state;
        BreakerSettings {
            failure_threshold: s.failure_threshold.load(Ordering::Relaxed),
            recovery_timeout: s.recovery_timeout.load(Ordering::Relaxed),
            half_open_max_calls: s.half_open_max_calls.load(Ordering::Relaxed),
        }
    }

    pub fn set_settings(&self, settings: BreakerSettings) {
        self.state.set_settings(settings);
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
                        s.rejections.fetch_add(1, Ordering::Relaxed);
                        return (
                            Admission::Rejected {
                                remaining: due - now,
                            },
                            None,
                        );
                    }
                    // The first caller past the deadline takes the first trial permit in the
                    // same swap that half-opens the circuit.
                    s.trials_since.store(now, Ordering::Relaxed);
                    half_open(self.next_epoch(), 1)
                }
                _ => {
                    let max = s.half_open_max_calls.load(Ordering::Relaxed);
                    if trials_admitted(word) >= max {
                        match self.abandoned_trials() {
                            // A new half-open period: the lost trials' verdicts no longer count.
                            Some(now) => {
                                s.trials_since.store(now, Ordering::Relaxed);
                                half_open(self.next_epoch(), 1)
                            }
                            None => {
                                s.rejections.fetch_add(1, Ordering::Relaxed);
                                return (Admission::Rejected { remaining: 0 }, None);
                            }
                        }
                    } else {
                        word + 1
                    }
                }
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
        loop {
            if !self.same_period(admission, word) {
                return None;
            }
            let next = match admission {
                // A success ends a failure streak; skip the write when there is none.
                Admission::Normal { epoch } if streak_of(word) != 0 => closed(epoch, 0),
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
                Ok(previous) => return self.count_transition(state_of(previous), state_of(next)),
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
        loop {
            if !self.same_period(admission, word) {
                return None;
            }
            let (next, streak) = match admission {
                Admission::Normal { epoch } => {
                    let streak = streak_of(word) + 1;
                    if streak >= s.failure_threshold.load(Ordering::Relaxed) {
                        (self.open_word(), streak)
                    } else {
                        (closed(epoch, streak), streak)
                    }
                }
                Admission::Trial { .. } => (self.open_word(), 1),
                Admission::Rejected { .. } => return None,
            };
            match s
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(previous) => {
                    if state_of(next) == OPEN {
                        s.opened_streak.store(streak, Ordering::Relaxed);
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

    /// Closes the circuit and forgets the failure streak.
    pub fn reset(&self) -> Option<Transition> {
        let previous = self
            .state
            .word
            .swap(closed(self.next_epoch(), 0), Ordering::AcqRel);
        self.count_transition(state_of(previous), CLOSED)
    }

    /// Opens the circuit now, for its recovery timeout.
    pub fn force_open(&self) -> Option<Transition> {
        let next = self.open_word();
        let previous = self.state.word.swap(next, Ordering::AcqRel);
        self.count_transition(state_of(previous), OPEN)
    }

    /// Nanoseconds until an open circuit lets a trial through (0 when not open).
    pub fn remaining(&self) -> u64 {
        let word = self.state.word.load(Ordering::Acquire);
        if state_of(word) == OPEN {
            payload_of(word).saturating_sub(self.clock.now())
        } else {
            0
        }
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
        self.state.transitions[from as usize * STATES + to as usize].load(Ordering::Relaxed)
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
            Admission::Rejected { .. } => false,
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
        let timeout = self.state.recovery_timeout.load(Ordering::Relaxed);
        pack(OPEN, self.clock.now().saturating_add(timeout).min(PAYLOAD))
    }

    fn count_transition(&self, from: u8, to: u8) -> Option<Transition> {
        if from == to {
            return None;
        }
        self.state.transitions[from as usize * STATES + to as usize]
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
        };
        (Breaker::new(settings, Clock::Manual(clock.clone())), clock)
    }

    fn fail(breaker: &Breaker) -> Option<Transition> {
        let (admission, _) = breaker.enter();
        breaker.on_failure(admission)
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
        assert_eq!(Admission::from_code(3), None);
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
        assert_eq!(breaker.current_state().0, OPEN);
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
                        breaker.force_open();
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
        };
        (Breaker::new(settings, Clock::Manual(clock.clone())), clock)
    }

    #[test]
    fn loom_exactly_one_of_three_callers_gets_the_trial() {
        loom::model(|| {
            let (breaker, clock) = breaker(1, 1);
            breaker.force_open();
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
        loom::model(|| {
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
        loom::model(|| {
            let (breaker, clock) = breaker(1, 1);
            let (stale, _) = breaker.enter();
            breaker.force_open();
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
        });
    }
}
