//! `CircuitBreaker`'s native half: the state machine in this process, in a shared file or
//! in a remote store, what counts as a failure, and who is told of a transition.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString, PyTuple, PyType};

use crate::breaker::{
    Admission, Breaker, BreakerSettings, BreakerState, Transition, Window, MAX_FAILURE_THRESHOLD,
    MAX_HALF_OPEN_CALLS, STATES,
};
use crate::clock::nanos_to_seconds;
use crate::files;
use crate::remote::{OnBackendError, Ticket};
use crate::shared::{self, Region};

use super::args::{
    clock_from, given, name_or, number, on_backend_error, path_or_none, positive_int, seconds,
};
use super::errors::{
    circuit_open, lost_error, report_unraisable, shared_error, shared_file_problem,
};
use super::store::Store;

static BREAKER_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The native half of `peak_resilience.resilience.CircuitBreaker`.
#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "peak_resilience._native",
    name = "CircuitBreaker"
)]
pub struct PyCircuitBreaker {
    pub core: Breaker,
    /// The shared file the state lives in (None: in this process); not read per call.
    /// Boxed: 8 bytes in every breaker rather than the region's 48 (issue 19).
    shared: Option<Box<Region<BreakerState>>>,
    /// The remote store the state lives in (None: `core` is the state). `core` then holds
    /// the same settings and stands in during an outage (`on_backend_error="local"`).
    remote: Option<Store>,
    name: Py<PyString>,
    /// Called as listener(name, from_state, to_state) after each transition. Locked only
    /// on a transition, never on the per-call path.
    listener: Mutex<Option<Py<PyAny>>>,
    /// Which exceptions count as failures and which are ignored, and which return values
    /// count as failures: consulted only when set.
    outcomes: OutcomeRules,
}

impl Drop for PyCircuitBreaker {
    fn drop(&mut self) {
        // Before its memory is freed, the object leaves the registry (see `registry`).
        super::registry::BREAKERS.leave(self as *const Self as usize);
    }
}

/// What counts as a failure, beyond "the call raised an Exception".
#[derive(Default)]
struct OutcomeRules {
    /// When set, only these exception classes count as failures (others as successes).
    record: Option<Py<PyTuple>>,
    /// These exception classes count neither way (a trial gives its permit back).
    ignore: Option<Py<PyTuple>>,
    /// Called with a returned value; a true answer makes the call a failure.
    failure_result: Option<Py<PyAny>>,
}

/// How a guarded call counts for its breaker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Success,
    Failure,
    Ignored,
}

fn exception_classes(
    value: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<Option<Py<PyTuple>>> {
    let Some(value) = given(value) else {
        return Ok(None);
    };
    let items: Vec<Bound<'_, PyAny>> = if let Ok(ty) = value.cast::<PyType>() {
        vec![ty.clone().into_any()]
    } else {
        value
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "{name} must be an exception class or a tuple of them, got {}",
                    value.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
            .collect::<PyResult<_>>()?
    };
    let base = value.py().get_type::<pyo3::exceptions::PyBaseException>();
    for item in &items {
        let is_class = item
            .cast::<PyType>()
            .map(|t| t.is_subclass(&base).unwrap_or(false))
            .unwrap_or(false);
        if !is_class {
            return Err(PyTypeError::new_err(format!(
                "{name} must hold exception classes, got {}",
                item.repr()?
            )));
        }
    }
    Ok(Some(PyTuple::new(value.py(), items)?.unbind()))
}

/// Every setting of a breaker as keywords, each applied over `base` when given and not
/// None (so that `set_settings` keeps what it is not told).
struct Keywords<'a, 'py> {
    failure_threshold: Option<&'a Bound<'py, PyAny>>,
    recovery_timeout: Option<&'a Bound<'py, PyAny>>,
    half_open_max_calls: Option<&'a Bound<'py, PyAny>>,
    failure_rate_threshold: Option<&'a Bound<'py, PyAny>>,
    minimum_calls: Option<&'a Bound<'py, PyAny>>,
    window_type: Option<&'a Bound<'py, PyAny>>,
    window_size: Option<&'a Bound<'py, PyAny>>,
    slow_call_duration: Option<&'a Bound<'py, PyAny>>,
    backoff_multiplier: Option<&'a Bound<'py, PyAny>>,
    max_recovery_timeout: Option<&'a Bound<'py, PyAny>>,
}

impl Keywords<'_, '_> {
    fn apply(&self, mut settings: BreakerSettings) -> PyResult<BreakerSettings> {
        if let Some(n) = given(self.failure_threshold) {
            let threshold = positive_int(n, "failure_threshold")?;
            if threshold > MAX_FAILURE_THRESHOLD {
                return Err(PyValueError::new_err(format!(
                    "failure_threshold must be at most {MAX_FAILURE_THRESHOLD}, got {threshold}"
                )));
            }
            settings.failure_threshold = threshold;
        }
        if let Some(t) = given(self.recovery_timeout) {
            settings.recovery_timeout = seconds(t, "recovery_timeout", false)?;
        }
        if let Some(n) = given(self.half_open_max_calls) {
            let half_open = positive_int(n, "half_open_max_calls")?;
            if half_open > MAX_HALF_OPEN_CALLS {
                return Err(PyValueError::new_err(format!(
                    "half_open_max_calls must be at most {MAX_HALF_OPEN_CALLS}, got {half_open}"
                )));
            }
            settings.half_open_max_calls = half_open;
        }
        if let Some(rate) = given(self.failure_rate_threshold) {
            let r = number(rate, "failure_rate_threshold")?;
            if !(0.0..=1.0).contains(&r) {
                return Err(PyValueError::new_err(format!(
                    "failure_rate_threshold must be a fraction in (0, 1] (0.5 = half the calls; 0 turns the rate off), got {}",
                    rate.repr()?
                )));
            }
            // 0 turns the rate off; any other fraction is at least one part per million.
            settings.failure_rate_ppm = match r {
                0.0 => 0,
                _ => ((r * 1_000_000.0).round() as u64).max(1),
            };
        }
        if let Some(n) = given(self.minimum_calls) {
            settings.minimum_calls = positive_int(n, "minimum_calls")?;
        }
        let was_time = settings.window.is_time();
        let is_time = match given(self.window_type) {
            None => was_time,
            Some(kind) => match kind.extract::<String>().ok().as_deref() {
                Some("count") => false,
                Some("time") => true,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "window_type must be \"count\" (the last window_size calls) or \"time\" (the last window_size seconds), got {}",
                        kind.repr()?
                    )))
                }
            },
        };
        settings.window = match (given(self.window_size), is_time) {
            (Some(size), false) => Window::Calls(positive_int(size, "window_size")?),
            (Some(size), true) => Window::Nanos(seconds(size, "window_size", false)?),
            (None, _) if is_time != was_time => Window::default_of(is_time),
            (None, _) => settings.window,
        };
        if let Some(d) = given(self.slow_call_duration) {
            settings.slow_call_duration = seconds(d, "slow_call_duration", false)?;
        }
        if let Some(m) = given(self.backoff_multiplier) {
            let value = number(m, "backoff_multiplier")?;
            if !(value.is_finite() && value >= 1.0) {
                return Err(PyValueError::new_err(format!(
                    "backoff_multiplier must be a finite number >= 1 (1 = no back-off), got {}",
                    m.repr()?
                )));
            }
            settings.backoff_multiplier = value;
        }
        if let Some(cap) = given(self.max_recovery_timeout) {
            settings.max_recovery_timeout = seconds(cap, "max_recovery_timeout", false)?;
        }
        Ok(settings.normalized())
    }
}

impl PyCircuitBreaker {
    /// Tells the listener about a transition; a listener that raises is reported as
    /// unraisable and never breaks the guarded call.
    #[inline]
    fn notify(&self, py: Python<'_>, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.notify_slow(py, t);
        }
    }

    #[cold]
    fn notify_slow(&self, py: Python<'_>, t: Transition) {
        let listener = match self.listener.lock() {
            Ok(guard) => guard.as_ref().map(|l| l.clone_ref(py)),
            Err(poisoned) => poisoned.into_inner().as_ref().map(|l| l.clone_ref(py)),
        };
        if let Some(listener) = listener {
            if let Err(err) = listener.call1(py, (self.name.clone_ref(py), t.from, t.to)) {
                report_unraisable(py, err, listener.bind(py));
            }
        }
    }

    /// Asks to run one call: the ticket to report its outcome with (a refusal is a
    /// rejected ticket).
    #[inline]
    pub fn enter(&self, py: Python<'_>) -> PyResult<Ticket> {
        if let Some(store) = &self.remote {
            return self.enter_remote(py, store);
        }
        Ok(Ticket::Local(self.enter_local(py)))
    }

    #[inline]
    fn enter_local(&self, py: Python<'_>) -> Admission {
        let (admission, transition) = self.core.enter();
        self.notify(py, transition);
        admission
    }

    #[inline(never)]
    fn enter_remote(&self, py: Python<'_>, store: &Store) -> PyResult<Ticket> {
        match store.enter(py)? {
            Some((code, remaining, transition)) => {
                Ok(self.entered_remotely(py, code, remaining, transition))
            }
            None => match store.policy.admission(store.retry(py)) {
                Some(ticket) => Ok(ticket),
                None => Ok(Ticket::Local(self.enter_local(py))),
            },
        }
    }

    /// The ticket of the remote store's admission `code` (0: refused, `remaining` ns
    /// until a trial), its transition told to the hooks.
    pub fn entered_remotely(
        &self,
        py: Python<'_>,
        code: u64,
        remaining: u64,
        transition: Option<Transition>,
    ) -> Ticket {
        self.notify(py, transition);
        match code {
            0 => Ticket::Local(Admission::Rejected { remaining }),
            code => Ticket::Remote(code),
        }
    }

    /// The remote store the state lives in (None: in this process or a shared file).
    pub fn remote_store(&self) -> Option<&Store> {
        self.remote.as_ref()
    }

    /// How a raised exception counts: ignored, a failure, or (outside `record_exceptions`)
    /// a success. Without rules: a failure, decided without a Python call.
    #[inline]
    pub fn judge_error(&self, py: Python<'_>, err: &PyErr) -> Verdict {
        let rules = &self.outcomes;
        if rules.record.is_none() && rules.ignore.is_none() {
            return Verdict::Failure;
        }
        self.judge_error_slow(py, err)
    }

    #[cold]
    fn judge_error_slow(&self, py: Python<'_>, err: &PyErr) -> Verdict {
        let value = err.value(py);
        let is_a = |classes: &Py<PyTuple>| value.is_instance(classes.bind(py)).unwrap_or(false);
        if self.outcomes.ignore.as_ref().is_some_and(is_a) {
            return Verdict::Ignored;
        }
        match &self.outcomes.record {
            Some(record) if !is_a(record) => Verdict::Success,
            _ => Verdict::Failure,
        }
    }

    /// Whether a returned value counts as a failure (`failure_result`); a predicate that
    /// raises is reported as unraisable and the call counts as a success.
    #[inline]
    pub fn judge_result(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> Verdict {
        match &self.outcomes.failure_result {
            None => Verdict::Success,
            Some(predicate) => match predicate
                .bind(py)
                .call1((value,))
                .and_then(|v| v.is_truthy())
            {
                Ok(true) => Verdict::Failure,
                Ok(false) => Verdict::Success,
                Err(err) => {
                    report_unraisable(py, err, predicate.bind(py));
                    Verdict::Success
                }
            },
        }
    }

    /// Records a verdict for a call admitted with `ticket` that ran `elapsed` ns (None:
    /// not timed). Never raises: the call has run, and its caller gets its outcome.
    #[inline]
    pub fn settle(&self, py: Python<'_>, ticket: Ticket, verdict: Verdict, elapsed: Option<u64>) {
        // An untimed call (the common case) reads no slow-call setting at all.
        let slow = verdict == Verdict::Success
            && elapsed.is_some_and(|e| {
                let slow = self.core.slow_call_duration();
                slow != 0 && e >= slow
            });
        self.settle_as(py, ticket, verdict, slow);
    }

    /// Records a verdict, `slow` already judged, with whichever state machine admitted it.
    #[inline]
    fn settle_as(&self, py: Python<'_>, ticket: Ticket, verdict: Verdict, slow: bool) {
        match ticket {
            Ticket::Local(admission) => self.settle_local(py, admission, verdict, slow),
            Ticket::Remote(code) => self.settle_remote(py, code, verdict, slow),
        }
    }

    #[inline]
    fn settle_local(&self, py: Python<'_>, admission: Admission, verdict: Verdict, slow: bool) {
        let transition = match verdict {
            Verdict::Failure => self.core.on_failure(admission),
            Verdict::Ignored => {
                self.core.release(admission);
                None
            }
            Verdict::Success if slow => self.core.on_slow_success(admission),
            Verdict::Success => self.core.on_success(admission),
        };
        self.notify(py, transition);
    }

    #[inline(never)]
    fn settle_remote(&self, py: Python<'_>, code: u64, verdict: Verdict, slow: bool) {
        let Some(store) = &self.remote else {
            return;
        };
        let outcome = match verdict {
            Verdict::Failure => "fail",
            Verdict::Ignored => "release",
            Verdict::Success if slow => "slow",
            Verdict::Success => "ok",
        };
        match store.exit(py, Some(code), outcome) {
            Some(transition) => self.notify(py, transition),
            // The store's admission belongs to none of the stand-in's periods: the outcome
            // is counted there, and changes no state.
            None if store.policy == OnBackendError::Local => {
                self.settle_local(py, Admission::Bypass, verdict, slow)
            }
            None => {}
        }
    }

    /// Gives back the admission of a call that ended without an outcome (interrupted, or
    /// refused a token after the breaker admitted it).
    pub fn release(&self, py: Python<'_>, ticket: Ticket) {
        self.settle(py, ticket, Verdict::Ignored, None);
    }

    /// Records by hand the outcome of a call made after `allow()`.
    fn record(&self, py: Python<'_>, verdict: Verdict) {
        if let Some(store) = &self.remote {
            let outcome = if verdict == Verdict::Success {
                "ok"
            } else {
                "fail"
            };
            match store.exit(py, None, outcome) {
                Some(transition) => return self.notify(py, transition),
                None if store.policy != OnBackendError::Local => return,
                None => {}
            }
        }
        // Advance an expired OPEN to HALF_OPEN first, as `allow()` would have.
        let (_, transition) = self.core.reported_state();
        self.notify(py, transition);
        let admission = self.core.admission_now();
        self.settle_local(py, admission, verdict, false);
    }

    /// An error when the shared file was truncated under this process: closing or
    /// re-opening the lost state by hand would make it a breaker of this process alone.
    fn not_lost(&self) -> PyResult<()> {
        match self.shared.as_ref().filter(|r| r.lost()) {
            Some(region) => Err(lost_error(region.path(), "circuit breaker")),
            None => Ok(()),
        }
    }

    /// The CircuitBreakerError for a refused call.
    #[cold]
    pub fn rejection(&self, py: Python<'_>, remaining: u64) -> PyErr {
        // A truncated file's breaker is held open: say why instead.
        if let Some(region) = self.shared.as_ref().filter(|r| r.lost()) {
            return lost_error(region.path(), "circuit breaker");
        }
        circuit_open(py, (self.name.clone_ref(py), nanos_to_seconds(remaining)))
    }

    /// Runs an operator's command (reset, force open, ...) on the store, or on the core
    /// when there is none or it cannot be reached.
    fn command(
        &self,
        py: Python<'_>,
        op: &'static str,
        argument: u64,
        local: impl FnOnce(&Breaker) -> Option<Transition>,
    ) -> PyResult<()> {
        if let Some(store) = &self.remote {
            if let Some(transition) = store.command(py, op, argument)? {
                self.notify(py, transition);
                return Ok(());
            }
        }
        // A shared breaker's update checks loss, applies and checks again: a command must
        // not revive a truncated file's held-open state as a breaker of this process.
        let transition = match &self.shared {
            None => local(&self.core),
            Some(region) => region
                .update(|| local(&self.core))
                .ok_or_else(|| lost_error(region.path(), "circuit breaker"))?,
        };
        self.notify(py, transition);
        Ok(())
    }

    /// The store's counters (see `store`), or None to read the core's.
    fn remote_counters(&self, py: Python<'_>) -> PyResult<Option<Vec<u64>>> {
        match &self.remote {
            Some(store) => store.counters(py),
            None => Ok(None),
        }
    }

    fn counter(&self, py: Python<'_>, index: usize, local: u64) -> PyResult<u64> {
        Ok(self
            .remote_counters(py)?
            .and_then(|c| c.get(index).copied())
            .unwrap_or(local))
    }

    fn window_reading(&self, py: Python<'_>) -> PyResult<(u64, u64, u64)> {
        if let Some(store) = &self.remote {
            if let Some(window) = store.window(py)? {
                return Ok(window);
            }
        }
        let (calls, failures) = self.core.window_totals();
        Ok((calls, failures, self.core.failed_trials()))
    }

    /// (shown state, shadow state, failure count, ns until a trial) now.
    fn state_reading(&self, py: Python<'_>) -> PyResult<(u8, u8, u64, u64)> {
        if let Some(store) = &self.remote {
            if let Some(s) = store.read(py)? {
                self.notify(py, s.transition);
                return Ok((s.state, s.shadow, s.failure_count, s.remaining));
            }
            if let Some(state) = store.policy.state() {
                return Ok((state, state, 0, 0));
            }
        }
        let (state, transition) = self.core.reported_state();
        self.notify(py, transition);
        let (shadow, transition) = self.core.current_state();
        self.notify(py, transition);
        Ok((
            state,
            shadow,
            self.core.failure_count(),
            self.core.remaining(),
        ))
    }
}

/// Indexes into a store's counters.
const SUCCESSES: usize = 0;
const FAILURES: usize = 1;
const REJECTIONS: usize = 2;
const WOULD_REJECT: usize = 3;
const SLOW_CALLS: usize = 4;
const TRANSITIONS: usize = 5;

pub fn ticket_from(code: u64) -> PyResult<Ticket> {
    Ticket::from_code(code).ok_or_else(|| {
        PyValueError::new_err(format!(
            "admission must be a code returned by _enter/_admit, got {code}"
        ))
    })
}

#[pymethods]
impl PyCircuitBreaker {
    #[new]
    #[pyo3(signature = (failure_threshold=None, recovery_timeout=None, name=None, half_open_max_calls=None, *, clock=None, shared_dir=None,
                        failure_rate_threshold=None, minimum_calls=None, window_type=None, window_size=None,
                        slow_call_duration=None, backoff_multiplier=None, max_recovery_timeout=None,
                        record_exceptions=None, ignore_exceptions=None, failure_result=None, metrics_only=false,
                        store=None, on_backend_error=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        failure_threshold: Option<&Bound<'_, PyAny>>,
        recovery_timeout: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        half_open_max_calls: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        shared_dir: Option<&Bound<'_, PyAny>>,
        failure_rate_threshold: Option<&Bound<'_, PyAny>>,
        minimum_calls: Option<&Bound<'_, PyAny>>,
        window_type: Option<&Bound<'_, PyAny>>,
        window_size: Option<&Bound<'_, PyAny>>,
        slow_call_duration: Option<&Bound<'_, PyAny>>,
        backoff_multiplier: Option<&Bound<'_, PyAny>>,
        max_recovery_timeout: Option<&Bound<'_, PyAny>>,
        record_exceptions: Option<&Bound<'_, PyAny>>,
        ignore_exceptions: Option<&Bound<'_, PyAny>>,
        failure_result: Option<&Bound<'_, PyAny>>,
        metrics_only: bool,
        store: Option<&Bound<'_, PyAny>>,
        on_backend_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let settings = Keywords {
            failure_threshold,
            recovery_timeout,
            half_open_max_calls,
            failure_rate_threshold,
            minimum_calls,
            window_type,
            window_size,
            slow_call_duration,
            backoff_multiplier,
            max_recovery_timeout,
        }
        .apply(BreakerSettings::default())?;
        let failure_result = match given(failure_result) {
            None => None,
            Some(f) if f.is_callable() => Some(f.clone().unbind()),
            Some(f) => {
                return Err(PyTypeError::new_err(format!(
                    "failure_result must be a callable taking the returned value, got {}",
                    f.repr()?
                )))
            }
        };
        let outcomes = OutcomeRules {
            record: exception_classes(record_exceptions, "record_exceptions")?,
            ignore: exception_classes(ignore_exceptions, "ignore_exceptions")?,
            failure_result,
        };
        let clock = clock_from(clock)?;
        let shared_dir = path_or_none(
            shared_dir,
            "shared_dir",
            "the directory of the breaker's shared file",
        )?;
        let name = name_or(py, name, "breaker", &BREAKER_SEQUENCE)?;
        let (core, shared) = match shared_dir {
            None => (Breaker::new(settings, clock), None),
            Some(dir) => {
                let path = files::breaker_file(&dir, name.bind(py).to_str()?);
                let (core, region) =
                    shared::shared_breaker(&path, settings, clock).map_err(shared_error)?;
                (core, Some(Box::new(region)))
            }
        };
        let policy = self::on_backend_error(on_backend_error)?;
        let remote = given(store).map(|s| Store::new(s.clone(), policy));
        if let Some(store) = &remote {
            store.configure_breaker(py, &core.settings())?;
        }
        if metrics_only {
            // Before any listener is set: entering the mode at birth is no transition to log.
            core.set_metrics_only(true);
            if let Some(store) = &remote {
                store.command(py, "shadow", 1)?;
            }
        }
        Ok(PyCircuitBreaker {
            core,
            shared,
            remote,
            name,
            listener: Mutex::new(None),
            outcomes,
        })
    }

    /// Whether a call may run now; counts a rejection when not. In HALF_OPEN this takes a
    /// trial permit, so follow it with `record_success()` or `record_failure()`.
    fn allow(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.enter(py)?.is_rejected() {
            return Ok(true);
        }
        self.not_lost()?;
        Ok(false)
    }

    /// Records a successful call made after `allow()`.
    fn record_success(&self, py: Python<'_>) {
        self.record(py, Verdict::Success);
    }

    /// Records a failed call made after `allow()`.
    fn record_failure(&self, py: Python<'_>) {
        self.record(py, Verdict::Failure);
    }

    /// The state as an int (0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled,
    /// 5 metrics only); an open circuit whose recovery timeout has passed reads (and
    /// becomes) half-open.
    #[getter]
    pub fn state_code(&self, py: Python<'_>) -> PyResult<u8> {
        if self.remote.is_some() {
            return Ok(self.state_reading(py)?.0);
        }
        let (state, transition) = self.core.reported_state();
        self.notify(py, transition);
        Ok(state)
    }

    /// The state machine's own state (0..=4): under METRICS_ONLY, what an enforcing
    /// breaker would be in; otherwise `state_code`.
    #[getter]
    fn shadow_state_code(&self, py: Python<'_>) -> PyResult<u8> {
        if self.remote.is_some() {
            return Ok(self.state_reading(py)?.1);
        }
        let (state, transition) = self.core.current_state();
        self.notify(py, transition);
        Ok(state)
    }

    /// Opens the circuit for exactly `seconds` (e.g. an exchange's Retry-After), after
    /// which it half-opens as usual.
    #[pyo3(signature = (seconds))]
    fn open_for(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        let nanos = self::seconds(seconds, "seconds", false)?;
        self.not_lost()?;
        self.command(py, "open_for", nanos, |core| core.open_for(nanos))
    }

    /// Admits every call (outcomes still counted, no state change) until `reset()`.
    fn disable(&self, py: Python<'_>) -> PyResult<()> {
        self.command(py, "disable", 0, Breaker::disable)
    }

    /// Whether the breaker decides but does not enforce (calls it would refuse run, and
    /// are counted in `would_reject_total`).
    #[getter]
    fn metrics_only(&self, py: Python<'_>) -> PyResult<bool> {
        if self.remote.is_some() {
            return Ok(self.state_code(py)? == crate::breaker::METRICS_ONLY);
        }
        Ok(self.core.metrics_only())
    }

    /// Enters or leaves METRICS_ONLY mode (the state machine carries on either way).
    fn set_metrics_only(&self, py: Python<'_>, enabled: bool) -> PyResult<()> {
        // The local stand-in follows too, for an outage.
        let transition = self.core.set_metrics_only(enabled);
        if let Some(store) = &self.remote {
            if let Some(transition) = store.command(py, "shadow", enabled as u64)? {
                self.notify(py, transition);
            }
            return Ok(());
        }
        self.notify(py, transition);
        Ok(())
    }

    /// Successful calls counted as failures for lasting `slow_call_duration` or longer.
    #[getter]
    fn slow_call_total(&self, py: Python<'_>) -> PyResult<u64> {
        self.counter(py, SLOW_CALLS, self.core.slow_calls())
    }

    /// Calls admitted in METRICS_ONLY mode that an enforcing breaker would have refused.
    #[getter]
    fn would_reject_total(&self, py: Python<'_>) -> PyResult<u64> {
        self.counter(py, WOULD_REJECT, self.core.would_reject())
    }

    /// Trials failed in a row since the circuit last closed (the back-off exponent).
    #[getter]
    fn failed_trials(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.window_reading(py)?.2)
    }

    /// The failure rate over the window now (0.0 with no calls or no rate configured).
    #[getter]
    fn failure_rate(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(match self.window_reading(py)? {
            (0, _, _) => 0.0,
            (calls, failures, _) => failures as f64 / calls as f64,
        })
    }

    /// (calls, failures) in the failure-rate window now.
    #[getter]
    fn window_counts(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let (calls, failures, _) = self.window_reading(py)?;
        Ok((calls, failures))
    }

    /// The failure-rate threshold as a fraction, or None when only the streak counts.
    #[getter]
    fn failure_rate_threshold(&self) -> Option<f64> {
        match self.core.settings().failure_rate_ppm {
            0 => None,
            ppm => Some(ppm as f64 / 1_000_000.0),
        }
    }

    #[getter]
    fn minimum_calls(&self) -> u64 {
        self.core.settings().minimum_calls
    }

    /// "count" or "time".
    #[getter]
    fn window_type(&self) -> &'static str {
        if self.core.settings().window.is_time() {
            "time"
        } else {
            "count"
        }
    }

    /// Calls (count window) or seconds (time window).
    #[getter]
    fn window_size(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.core.settings().window {
            Window::Calls(n) => n.into_pyobject(py)?.into_any().unbind(),
            Window::Nanos(n) => PyFloat::new(py, nanos_to_seconds(n)).into_any().unbind(),
        })
    }

    /// Seconds from which a successful call counts as a failure, or None.
    #[getter]
    fn slow_call_duration(&self) -> Option<f64> {
        match self.core.settings().slow_call_duration {
            0 => None,
            n => Some(nanos_to_seconds(n)),
        }
    }

    #[getter]
    fn backoff_multiplier(&self) -> f64 {
        self.core.settings().backoff_multiplier
    }

    #[getter]
    fn max_recovery_timeout(&self) -> f64 {
        nanos_to_seconds(self.core.settings().max_recovery_timeout)
    }

    #[getter]
    fn record_exceptions(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.outcomes.record.as_ref().map(|t| t.clone_ref(py))
    }

    #[getter]
    fn ignore_exceptions(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.outcomes.ignore.as_ref().map(|t| t.clone_ref(py))
    }

    #[getter]
    fn failure_result(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.outcomes
            .failure_result
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// How an exception counts for this breaker: "failure", "success" or "ignored".
    fn classify_exception(
        &self,
        py: Python<'_>,
        error: Bound<'_, PyAny>,
    ) -> PyResult<&'static str> {
        if !error.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            return Err(PyTypeError::new_err(format!(
                "error must be an exception instance, got {}",
                error.repr()?
            )));
        }
        Ok(match self.judge_error(py, &PyErr::from_value(error)) {
            Verdict::Failure => "failure",
            Verdict::Success => "success",
            Verdict::Ignored => "ignored",
        })
    }

    /// Whether a returned value counts as a failure (by `failure_result`).
    fn is_failure_result(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> bool {
        self.judge_result(py, &value) == Verdict::Failure
    }

    /// Closes the circuit and clears the failure streak.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.not_lost()?;
        self.command(py, "reset", 0, Breaker::reset)
    }

    /// Holds the circuit open (FORCED_OPEN) until `reset()`.
    fn force_open(&self, py: Python<'_>) -> PyResult<()> {
        self.command(py, "force", 0, Breaker::force_open)
    }

    /// Changes the thresholds in place; the state and its counts stay. The policy keywords
    /// left out (or None) keep their current values.
    #[pyo3(signature = (failure_threshold, recovery_timeout, half_open_max_calls, *,
                        failure_rate_threshold=None, minimum_calls=None, window_type=None, window_size=None,
                        slow_call_duration=None, backoff_multiplier=None, max_recovery_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn set_settings(
        &self,
        py: Python<'_>,
        failure_threshold: &Bound<'_, PyAny>,
        recovery_timeout: &Bound<'_, PyAny>,
        half_open_max_calls: &Bound<'_, PyAny>,
        failure_rate_threshold: Option<&Bound<'_, PyAny>>,
        minimum_calls: Option<&Bound<'_, PyAny>>,
        window_type: Option<&Bound<'_, PyAny>>,
        window_size: Option<&Bound<'_, PyAny>>,
        slow_call_duration: Option<&Bound<'_, PyAny>>,
        backoff_multiplier: Option<&Bound<'_, PyAny>>,
        max_recovery_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        // The three thresholds are required here: None is an error naming them.
        for (value, name) in [
            (failure_threshold, "failure_threshold"),
            (recovery_timeout, "recovery_timeout"),
            (half_open_max_calls, "half_open_max_calls"),
        ] {
            if value.is_none() {
                positive_int(value, name)?;
            }
        }
        let settings = Keywords {
            failure_threshold: Some(failure_threshold),
            recovery_timeout: Some(recovery_timeout),
            half_open_max_calls: Some(half_open_max_calls),
            failure_rate_threshold,
            minimum_calls,
            window_type,
            window_size,
            slow_call_duration,
            backoff_multiplier,
            max_recovery_timeout,
        }
        .apply(self.core.settings())?;
        match &self.shared {
            None => self.core.set_settings(settings),
            Some(region) => {
                if !shared::set_shared_settings(&self.core, region, settings) {
                    return Err(lost_error(region.path(), "circuit breaker"));
                }
            }
        }
        if let Some(store) = &self.remote {
            store.configure_breaker(py, &self.core.settings())?;
        }
        Ok(())
    }

    /// The shared file this breaker lives in, or None for a breaker of this process.
    #[getter]
    fn shared_path(&self) -> Option<std::path::PathBuf> {
        self.shared.as_ref().map(|r| r.path().to_owned())
    }

    /// None while the shared file is the one this process mapped (or the breaker is not
    /// shared); else what happened to it (truncated, deleted or replaced). Stats the
    /// file: for health checks.
    fn shared_file_problem(&self) -> Option<String> {
        shared_file_problem(self.shared.as_deref(), "circuit breaker")
    }

    /// The remote store this breaker's state lives in, or None.
    #[getter]
    fn store(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.remote.as_ref().map(|s| s.object().clone_ref(py))
    }

    /// What a call gets while the remote store cannot be reached.
    #[getter]
    fn on_backend_error(&self) -> &'static str {
        self.remote.as_ref().map_or("local", |s| s.policy.name())
    }

    #[getter]
    fn failure_threshold(&self) -> u64 {
        self.core.settings().failure_threshold
    }

    #[getter]
    fn recovery_timeout(&self) -> f64 {
        nanos_to_seconds(self.core.settings().recovery_timeout)
    }

    #[getter]
    fn half_open_max_calls(&self) -> u64 {
        self.core.settings().half_open_max_calls
    }

    /// Consecutive failures: the running streak while closed, else the one that opened it.
    #[getter]
    fn failure_count(&self, py: Python<'_>) -> PyResult<u64> {
        if self.remote.is_some() {
            return Ok(self.state_reading(py)?.2);
        }
        Ok(self.core.failure_count())
    }

    /// Seconds until an open circuit lets a trial call through (0.0 when not open).
    #[getter]
    fn retry_after(&self, py: Python<'_>) -> PyResult<f64> {
        if self.remote.is_some() {
            return Ok(nanos_to_seconds(self.state_reading(py)?.3));
        }
        Ok(nanos_to_seconds(self.core.remaining()))
    }

    #[getter]
    fn success_total(&self, py: Python<'_>) -> PyResult<u64> {
        self.counter(py, SUCCESSES, self.core.successes())
    }

    #[getter]
    fn failure_total(&self, py: Python<'_>) -> PyResult<u64> {
        self.counter(py, FAILURES, self.core.failures())
    }

    #[getter]
    fn rejection_total(&self, py: Python<'_>) -> PyResult<u64> {
        self.counter(py, REJECTIONS, self.core.rejections())
    }

    /// How many times the circuit went from state `from_state` to `to_state` (0..=5).
    fn transition_count(&self, py: Python<'_>, from_state: u8, to_state: u8) -> PyResult<u64> {
        if from_state as usize >= STATES || to_state as usize >= STATES {
            return Err(PyValueError::new_err(format!(
                "states are 0 to {}, got from_state={from_state} to_state={to_state}",
                STATES - 1
            )));
        }
        let index = TRANSITIONS + from_state as usize * STATES + to_state as usize;
        self.counter(py, index, self.core.transitions(from_state, to_state))
    }

    /// Every transition that happened, as {(from_state, to_state): count} (one call per
    /// breaker per scrape, whatever the number of states).
    fn transition_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let remote = self.remote_counters(py)?;
        let out = PyDict::new(py);
        for from in 0..STATES as u8 {
            for to in 0..STATES as u8 {
                let count = match &remote {
                    Some(counters) => counters
                        .get(TRANSITIONS + from as usize * STATES + to as usize)
                        .copied()
                        .unwrap_or(0),
                    None => self.core.transitions(from, to),
                };
                if count != 0 {
                    out.set_item((from, to), count)?;
                }
            }
        }
        Ok(out)
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// Sets the callable told of each transition as listener(name, from, to), or None.
    fn set_listener(&self, listener: Option<Py<PyAny>>) {
        match self.listener.lock() {
            Ok(mut guard) => *guard = listener,
            Err(poisoned) => *poisoned.into_inner() = listener,
        }
    }

    /// Asks to run one call: an admission code for `_exit`; raises CircuitBreakerError
    /// when refused. For wrappers that run the call themselves.
    fn _enter(&self, py: Python<'_>) -> PyResult<u64> {
        match self.enter(py)? {
            Ticket::Local(Admission::Rejected { remaining }) => Err(self.rejection(py, remaining)),
            ticket => Ok(ticket.code()),
        }
    }

    /// Tells the listeners of a transition that a remote store reported after the step
    /// that caused it had returned: an async call's outcome is sent to Redis without
    /// blocking its loop, and its `(from, to)` reply is applied here when it comes.
    fn _transitioned(&self, py: Python<'_>, was: i64, now: i64) {
        self.notify(py, super::store::transition(was, now));
    }

    /// Reports how a call admitted by `_enter` ended: True success, False failure,
    /// None neither (cancelled or interrupted: a trial gives its permit back). `slow`: a
    /// success that took `slow_call_duration` or longer (counted as a failure).
    #[pyo3(signature = (admission, outcome, *, slow=false))]
    fn _exit(
        &self,
        py: Python<'_>,
        admission: u64,
        outcome: Option<bool>,
        slow: bool,
    ) -> PyResult<()> {
        let ticket = ticket_from(admission)?;
        let verdict = match outcome {
            Some(true) => Verdict::Success,
            Some(false) => Verdict::Failure,
            None => Verdict::Ignored,
        };
        self.settle_as(py, ticket, verdict, slow && verdict == Verdict::Success);
        Ok(())
    }
}
