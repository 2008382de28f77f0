//! The order of a guarded call's steps, whoever runs them.
//!
//! A guarded call asks the breaker, then takes its tokens (waiting up to `max_wait` for
//! them), runs, and reports its outcome to what admitted it. The native `Guard` and the
//! coroutine wrapper for `async def` functions both follow these rules; the binding only
//! supplies the steps (Python calls, exceptions) as closures, which inline away.

use crate::bucket::Decision;
use crate::clock::Clock;

/// Takes a breaker admission, then the tokens; when the tokens are refused, the admission
/// is given back (a half-open trial permit must not be held by a call that never ran).
#[inline(always)]
pub fn admit<P: Copy, E>(
    enter: impl FnOnce() -> Result<P, E>,
    take: impl FnOnce() -> Result<(), E>,
    release: impl FnOnce(P),
) -> Result<P, E> {
    let pass = enter()?;
    if let Err(refused) = take() {
        release(pass);
        return Err(refused);
    }
    Ok(pass)
}

/// Why no token was taken within `max_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoToken {
    /// The cost is more than the bucket can ever hold.
    Impossible,
    /// Not within the wait allowed: this many ns until the tokens are there.
    Refused { wait: u64 },
}

/// Takes tokens, sleeping between attempts while the total wait stays within `max_wait`
/// ns (0: never waits). `decide` is one attempt; `sleep` waits (a test clock advances).
#[inline(always)]
pub fn take_within<E>(
    max_wait: u64,
    mut decide: impl FnMut() -> Result<Decision, E>,
    mut sleep: impl FnMut(u64) -> Result<(), E>,
) -> Result<Result<(), NoToken>, E> {
    let mut waited = 0u64;
    loop {
        match decide()? {
            Decision::Admitted => return Ok(Ok(())),
            Decision::Impossible => return Ok(Err(NoToken::Impossible)),
            Decision::Rejected { wait } => {
                if waited.saturating_add(wait) > max_wait {
                    return Ok(Err(NoToken::Refused { wait }));
                }
                sleep(wait)?;
                waited = waited.saturating_add(wait);
            }
        }
    }
}

/// How a guarded call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It returned a value.
    Returned,
    /// It raised an `Exception`: an outcome to judge.
    Raised,
    /// KeyboardInterrupt, SystemExit, GeneratorExit, CancelledError: no outcome at all; a
    /// trial's permit is given back.
    Interrupted,
}

impl Ending {
    /// Whether the caller gets the fallback instead of the exception raised.
    #[inline]
    pub fn falls_back(self, fallback_on_failure: bool) -> bool {
        self == Ending::Raised && fallback_on_failure
    }
}

/// `Timing` of a call whose duration nobody reads.
const NOT_TIMED: u64 = u64::MAX;
/// Set when the call is timed for its breaker's slow-call rule only, not for its stats.
const BREAKER_ONLY: u64 = 1 << 63;

/// When a call started, and who reads its duration: its operation's stats (latency
/// histogram), its breaker (slow-call duration), both or neither. Decided once, when the
/// call starts, so that a call in flight while recording is switched is recorded whole or
/// not at all. Fits one int, for the async wrapper to hand back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing(u64);

impl Timing {
    #[inline(always)]
    pub fn start(clock: &Clock, for_stats: bool, for_breaker: bool) -> Timing {
        match (for_stats, for_breaker) {
            (true, _) => Timing(clock.stopwatch_start() & !BREAKER_ONLY),
            (false, true) => Timing(clock.stopwatch_start() | BREAKER_ONLY),
            (false, false) => Timing(NOT_TIMED),
        }
    }

    /// The call's duration so far, if anyone reads it.
    #[inline(always)]
    pub fn elapsed(self, clock: &Clock) -> Option<u64> {
        (self.0 != NOT_TIMED).then(|| clock.nanos_since(self.0 & !BREAKER_ONLY))
    }

    /// Whether the operation's stats record this call.
    #[inline(always)]
    pub fn for_stats(self) -> bool {
        self.0 != NOT_TIMED && self.0 & BREAKER_ONLY == 0
    }

    /// The stopwatch reading the call started at, when it is one (timed, on the monotonic
    /// clock): a timeout's first deadline counts from it instead of reading the TSC again.
    #[inline(always)]
    pub fn stopwatch_reading(self, clock: &Clock) -> Option<u64> {
        (self.0 != NOT_TIMED && matches!(clock, Clock::Monotonic)).then_some(self.0 & !BREAKER_ONLY)
    }

    pub fn code(self) -> u64 {
        self.0
    }

    pub fn from_code(code: u64) -> Timing {
        Timing(code)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::cell::Cell;

    #[test]
    fn a_refused_token_gives_the_breaker_admission_back() {
        let released = Cell::new(None);
        let outcome: Result<u8, &str> =
            admit(|| Ok(7), || Err("no token"), |p| released.set(Some(p)));
        assert_eq!(outcome, Err("no token"));
        assert_eq!(released.get(), Some(7));
    }

    #[test]
    fn a_refused_breaker_takes_no_token() {
        let took = Cell::new(false);
        let outcome: Result<u8, &str> = admit(
            || Err("open"),
            || {
                took.set(true);
                Ok(())
            },
            |_| {},
        );
        assert_eq!(outcome, Err("open"));
        assert!(!took.get());
    }

    #[test]
    fn waiting_stops_before_the_total_wait_would_pass_max_wait() {
        let slept = Cell::new(0u64);
        let outcome: Result<_, ()> = take_within(
            250,
            || Ok(Decision::Rejected { wait: 100 }),
            |ns| {
                slept.set(slept.get() + ns);
                Ok(())
            },
        );
        assert_eq!(outcome, Ok(Err(NoToken::Refused { wait: 100 })));
        assert_eq!(slept.get(), 200);
    }

    #[test]
    fn a_token_that_comes_within_max_wait_is_taken() {
        let attempts = Cell::new(0);
        let outcome: Result<_, ()> = take_within(
            100,
            || {
                attempts.set(attempts.get() + 1);
                Ok(if attempts.get() < 2 {
                    Decision::Rejected { wait: 100 }
                } else {
                    Decision::Admitted
                })
            },
            |_| Ok(()),
        );
        assert_eq!(outcome, Ok(Ok(())));
    }

    #[test]
    fn an_impossible_cost_never_waits() {
        let outcome: Result<_, ()> = take_within(
            u64::MAX,
            || Ok(Decision::Impossible),
            |_| panic!("waited for a cost that never fits"),
        );
        assert_eq!(outcome, Ok(Err(NoToken::Impossible)));
    }

    #[test]
    fn only_an_exception_falls_back_and_only_when_asked() {
        assert!(Ending::Raised.falls_back(true));
        assert!(!Ending::Raised.falls_back(false));
        assert!(!Ending::Interrupted.falls_back(true));
        assert!(!Ending::Returned.falls_back(true));
    }

    #[test]
    fn a_call_is_timed_for_whoever_reads_its_duration() {
        let manual = ManualClock::new(1_000);
        let clock = Clock::Manual(manual.clone());
        let both = Timing::start(&clock, true, true);
        let breaker_only = Timing::start(&clock, false, true);
        let neither = Timing::start(&clock, false, false);
        manual.advance(250);
        assert_eq!(both.elapsed(&clock), Some(250));
        assert!(both.for_stats());
        assert_eq!(breaker_only.elapsed(&clock), Some(250));
        assert!(!breaker_only.for_stats());
        assert_eq!(neither.elapsed(&clock), None);
        assert!(!neither.for_stats());
        assert_eq!(Timing::from_code(both.code()), both);
    }

    #[test]
    fn only_a_timed_call_on_the_monotonic_clock_started_at_a_stopwatch_reading() {
        let monotonic = Clock::Monotonic;
        let before = crate::clock::stopwatch().raw();
        let breaker_only = Timing::start(&monotonic, false, true);
        let after = crate::clock::stopwatch().raw();
        let reading = breaker_only.stopwatch_reading(&monotonic).unwrap();
        assert!(before <= reading && reading <= after);
        assert_eq!(
            Timing::start(&monotonic, false, false).stopwatch_reading(&monotonic),
            None
        );
        let manual = Clock::Manual(ManualClock::new(1_000));
        assert_eq!(
            Timing::start(&manual, true, true).stopwatch_reading(&manual),
            None
        );
    }
}
