//! `Guard`: a function guarded by a breaker and/or a limiter, recording into an
//! operation's stats. Calling it runs the whole guard natively: one Python-to-Rust call
//! per invocation, whatever backend the breaker and the limiter keep their state in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyAttributeError, PyException, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple};

use crate::breaker::Admission;
use crate::bucket::Decision;
use crate::clock::{nanos_to_seconds, Clock};
use crate::guard::{admit, take_within, Ending, NoToken, Timing};
use crate::remote::Ticket;
use crate::stats;

use super::args::{cost_of, is_high, seconds};
use super::bulkhead::PyBulkhead;
use super::circuit_breaker::{ticket_from, PyCircuitBreaker};
use super::errors::{rate_limited, report_unraisable};
use super::operation_stats::PyOperationStats;
use super::rate_limiter::PyRateLimiter;
use super::recording::rejection_log_on;
use super::retry::PyRetry;

/// `types.MethodType`, looked up once: binds a guard to an instance when a method is read
/// without being called (`f = obj.method`). Calls `obj.method(...)` never get here: the
/// type is a method descriptor (see `add_to`).
static METHOD_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Adds `Guard` to the module as a method descriptor: like a Python function, a guard
/// stored on a class is called as `guard(obj, *args)` by `obj.method(*args)`, with no bound
/// method built per call (CPython's LOAD_ATTR method path; PEP 590). Only pyo3-ffi's
/// declarations are used: no hand-declared CPython symbol, so it links wherever pyo3 does.
pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let class = m.py().get_type::<Guard>();
    as_method_descriptor(&class);
    // SAFETY: as in `as_method_descriptor`: no instance made yet, the cache cleared after.
    unsafe {
        let raw = class.as_type_ptr();
        doc_read_through(m.py(), raw)?;
        pyo3::ffi::PyType_Modified(raw);
    }
    m.add_class::<Guard>()
}

/// Marks a callable pyclass as a method descriptor (see `add_to`): to be called before
/// its first instance is made.
pub(super) fn as_method_descriptor(class: &Bound<'_, pyo3::types::PyType>) {
    // SAFETY: the type object is alive (we hold it) and no instance has been created or
    // looked up through a class yet, so no cache has seen the old flags; PyType_Modified
    // clears any that did.
    unsafe {
        let raw = class.as_type_ptr();
        (*raw).tp_flags |= pyo3::ffi::Py_TPFLAGS_METHOD_DESCRIPTOR;
        pyo3::ffi::PyType_Modified(raw);
    }
}

/// `callable` bound to `instance` as a method (`types.MethodType`), for `__get__`.
pub(super) fn bound_method<'py>(
    callable: &Bound<'py, PyAny>,
    instance: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match instance {
        Some(instance) if !instance.is_none() => {
            let py = callable.py();
            let method_type = METHOD_TYPE.get_or_try_init(py, || {
                Ok::<_, PyErr>(py.import("types")?.getattr("MethodType")?.unbind())
            })?;
            method_type.bind(py).call1((callable, instance))
        }
        _ => Ok(callable.clone()),
    }
}

/// Puts the `__doc__` getter (the wrapped function's docstring) back in the type's dict,
/// where creating the type put the class docstring over it: a guarded function's
/// `__doc__` is what FastAPI, Sphinx and `help()` show.
///
/// # Safety
/// `raw` is the `Guard` type object, not yet used by any instance (see `add_to`).
unsafe fn doc_read_through(py: Python<'_>, raw: *mut pyo3::ffi::PyTypeObject) -> PyResult<()> {
    let mut def = (*raw).tp_getset;
    while !def.is_null() && !(*def).name.is_null() {
        if std::ffi::CStr::from_ptr((*def).name) == c"__doc__" {
            let descriptor =
                Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyDescr_NewGetSet(raw, def))?;
            if pyo3::ffi::PyDict_SetItem(
                (*raw).tp_dict,
                intern!(py, "__doc__").as_ptr(),
                descriptor.as_ptr(),
            ) != 0
            {
                return Err(PyErr::fetch(py));
            }
            return Ok(());
        }
        def = def.add(1);
    }
    Ok(())
}

/// A function guarded by a breaker and/or a limiter, recording into an operation's stats.
/// Calling it runs the whole guard natively: one Python-to-Rust call per invocation.
#[pyclass(frozen, dict, module = "peak_resilience._native", name = "Guard")]
pub struct Guard {
    func: Py<PyAny>,
    breaker: Option<Py<PyCircuitBreaker>>,
    limiter: Option<Py<PyRateLimiter>>,
    endpoint: Option<Py<PyAny>>,
    cost: u64,
    operation: Option<Py<PyOperationStats>>,
    fallback: Option<Py<PyAny>>,
    fallback_is_callable: bool,
    fallback_on_failure: AtomicBool,
    max_wait: u64,
    sleep: Option<Py<PyAny>>,
    /// Told of each refused call as on_reject(exception), for the rejection log.
    on_reject: Option<Py<PyAny>>,
    clock: Clock,
    /// priority="high": the guarded calls may use the limiter's priority reserve.
    high: bool,
    /// The cap on calls in flight: a slot is the last thing a call takes.
    bulkhead: Option<Py<PyBulkhead>>,
    /// Which failures and refusals are tried again, and the budget of those retries.
    retry: Option<Py<PyRetry>>,
}

/// The ticket of a call guarded by no breaker: nothing reads it.
const NO_BREAKER: Ticket = Ticket::Local(Admission::Normal { epoch: 0 });

impl Guard {
    /// Takes a breaker admission, a token and a bulkhead slot, in that order; on refusal,
    /// the error to raise (the admission is given back; the tokens stay spent, as the
    /// exchange's budget would count a request sent).
    /// `waits`: false for the async wrapper, which waits for tokens and slots on its loop
    /// (a thread sleep here would freeze the event loop).
    #[inline]
    fn admit(&self, py: Python<'_>, waits: bool) -> PyResult<Ticket> {
        let max_wait = if waits { self.max_wait } else { 0 };
        let ticket = self.admit_breaker_and_limiter(py, max_wait)?;
        if let Some(bulkhead) = &self.bulkhead {
            let bulkhead = bulkhead.get();
            let entered = if waits {
                bulkhead.enter(py)
            } else {
                bulkhead.try_enter_counted()
            };
            if !entered {
                self.release(py, ticket);
                return Err(bulkhead.full(py));
            }
        }
        Ok(ticket)
    }

    /// Gives back the bulkhead slot of a call that ended.
    #[inline]
    fn leave(&self) {
        if let Some(bulkhead) = &self.bulkhead {
            bulkhead.get().core.leave();
        }
    }

    #[inline]
    fn admit_breaker_and_limiter(&self, py: Python<'_>, max_wait: u64) -> PyResult<Ticket> {
        // One round trip when nothing waits (the async wrapper waits on its own line).
        if max_wait == 0 {
            if let Some(admitted) = self.admit_in_one_call(py) {
                return admitted;
            }
        }
        admit(
            || match &self.breaker {
                Some(breaker) => {
                    let breaker = breaker.get();
                    match breaker.enter(py)? {
                        Ticket::Local(Admission::Rejected { remaining }) => {
                            Err(breaker.rejection(py, remaining))
                        }
                        ticket => Ok(ticket),
                    }
                }
                None => Ok(NO_BREAKER),
            },
            || match &self.limiter {
                Some(limiter) => self.take_token(py, limiter.get(), max_wait),
                None => Ok(()),
            },
            |ticket| self.release(py, ticket),
        )
    }

    /// Both steps of `admit` in one call to a remote store that holds the breaker and the
    /// budget alike (one round trip to Redis instead of two); None when it cannot (either
    /// decided here, or the two in different places): then each is asked on its own. A
    /// call that would wait for its token goes the two-step way.
    #[inline(never)]
    fn admit_in_one_call(&self, py: Python<'_>) -> Option<PyResult<Ticket>> {
        let breaker = self.breaker.as_ref()?.get();
        let limiter = self.limiter.as_ref()?.get();
        let breaker_store = breaker.remote_store()?;
        let endpoint = self.endpoint.as_ref().map(|e| e.bind(py));
        let bucket = match limiter.bucket(py, endpoint) {
            Ok(bucket) => bucket,
            Err(err) => return Some(Err(err)),
        };
        let bucket = bucket.get();
        let bucket_store = bucket.remote_taker(self.cost, self.high)?;
        let reply = match breaker_store.enter_and_take(py, bucket_store, self.cost, self.high) {
            Ok(reply) => reply?,
            Err(err) => return Some(Err(err)),
        };
        let ticket = breaker.entered_remotely(py, reply.code, reply.remaining, reply.transition);
        Some(match (ticket, reply.take.map(|d| bucket.tally(d))) {
            (Ticket::Local(Admission::Rejected { remaining }), _) => {
                Err(breaker.rejection(py, remaining))
            }
            // (A trial's permit was given back by the store.)
            (_, Some(Decision::Rejected { wait })) => Err(self.rate_limited(py, limiter, wait)),
            (ticket, _) => Ok(ticket),
        })
    }

    #[inline]
    fn take_token(&self, py: Python<'_>, limiter: &PyRateLimiter, max_wait: u64) -> PyResult<()> {
        let endpoint = self.endpoint.as_ref().map(|e| e.bind(py));
        let bucket = limiter.bucket(py, endpoint)?;
        let bucket = bucket.get();
        match take_within(
            max_wait,
            || bucket.decide_lane(py, self.cost, self.high),
            |nanos| self.sleep_for(py, nanos),
        )? {
            Ok(()) => Ok(()),
            Err(NoToken::Impossible) => Err(bucket.impossible(self.cost)),
            Err(NoToken::Refused { wait }) => Err(self.rate_limited(py, limiter, wait)),
        }
    }

    fn sleep_for(&self, py: Python<'_>, nanos: u64) -> PyResult<()> {
        match &self.sleep {
            Some(sleep) => sleep.call1(py, (nanos_to_seconds(nanos),)).map(|_| ()),
            None => {
                py.detach(|| std::thread::sleep(Duration::from_nanos(nanos)));
                Ok(())
            }
        }
    }

    /// The RateLimitExceeded for a refused call (message formatted lazily).
    #[cold]
    fn rate_limited(&self, py: Python<'_>, limiter: &PyRateLimiter, wait: u64) -> PyErr {
        let endpoint = self.endpoint.as_ref().map(|e| e.clone_ref(py));
        rate_limited(
            py,
            (limiter.name.clone_ref(py), endpoint, nanos_to_seconds(wait)),
        )
    }

    /// When the call started, and who reads its duration (see `crate::guard::Timing`).
    #[inline]
    fn timing(&self) -> Timing {
        let for_stats = self
            .operation
            .as_ref()
            .is_some_and(|operation| operation.get().stats.enabled())
            && stats::recording();
        let for_breaker = self
            .breaker
            .as_ref()
            .is_some_and(|b| b.get().core.slow_call_duration() != 0);
        Timing::start(&self.clock, for_stats, for_breaker)
    }

    /// Records how the call ended: `Ok(value)` returned, `Err(error)` raised an Exception.
    #[inline]
    fn record(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        timing: Timing,
        outcome: Result<&Bound<'_, PyAny>, &PyErr>,
    ) {
        let elapsed = timing.elapsed(&self.clock);
        if let (Some(operation), Some(elapsed), true) =
            (&self.operation, elapsed, timing.for_stats())
        {
            let operation = operation.get();
            match outcome {
                Ok(_) => operation.stats.record_succeeded_call(elapsed),
                Err(err) => operation.record_failed_call(py, elapsed, err),
            }
        }
        if let Some(breaker) = &self.breaker {
            let breaker = breaker.get();
            let verdict = match outcome {
                Ok(value) => breaker.judge_result(py, value),
                Err(err) => breaker.judge_error(py, err),
            };
            breaker.settle(py, ticket, verdict, elapsed);
        }
    }

    /// Hands a refusal to `on_reject`; a hook that raises is reported as unraisable and
    /// never changes what the caller gets. Skipped unless the rejection log is on (DEBUG),
    /// so a refusal costs no Python call when nobody reads the log.
    #[cold]
    fn rejected(&self, py: Python<'_>, rejection: &PyErr) {
        if !rejection_log_on() {
            return;
        }
        if let Some(hook) = &self.on_reject {
            if let Err(err) = hook.call1(py, (rejection.value(py),)) {
                report_unraisable(py, err, hook.bind(py));
            }
        }
    }

    /// Whether the call is tried again after `err`: if the retry policy allows it, waits
    /// its back-off first and counts the retry.
    #[cold]
    fn retried(&self, py: Python<'_>, err: &PyErr, retries: &mut u32) -> PyResult<bool> {
        let Some(retry) = &self.retry else {
            return Ok(false);
        };
        match retry.get().delay(py, err, *retries)? {
            Some(delay) => {
                if delay > 0 {
                    self.sleep_for(py, delay)?;
                }
                *retries += 1;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn release(&self, py: Python<'_>, ticket: Ticket) {
        if let Some(breaker) = &self.breaker {
            breaker.get().release(py, ticket);
        }
    }

    fn call_fallback(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Option<PyResult<Py<PyAny>>> {
        let fallback = self.fallback.as_ref()?;
        Some(if self.fallback_is_callable {
            fallback.bind(py).call(args, kwargs).map(Bound::unbind)
        } else {
            Ok(fallback.clone_ref(py))
        })
    }
}

/// The steps of an `async def` call for the native awaitable (`super::async_guard`),
/// which cannot await: nothing here waits on a thread.
impl Guard {
    /// The function guarded.
    pub(super) fn function(&self) -> &Py<PyAny> {
        &self.func
    }

    /// The clock the guard's breaker or limiter reads (and times calls on).
    pub(super) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether failures may be tried again (a retry policy is set).
    pub(super) fn retries(&self) -> bool {
        self.retry.is_some()
    }

    /// A call's first step: counts it in the retry budget, takes the breaker's admission,
    /// the tokens and a bulkhead slot without waiting, and starts its clock.
    /// (Never inlined, nor `returned` and `raised`: the steps they share with `__call__`
    /// stay inlined there as they were, the sync path's code unchanged.)
    #[inline(never)]
    pub(super) fn enter_now(&self, py: Python<'_>) -> PyResult<(Ticket, Timing)> {
        if let Some(retry) = &self.retry {
            retry.get().budget.deposit();
        }
        let ticket = self.admit(py, false)?;
        Ok((ticket, self.timing()))
    }

    /// The call admitted by `enter_now` returned `value`.
    #[inline(never)]
    pub(super) fn returned(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        timing: Timing,
        value: &Bound<'_, PyAny>,
    ) {
        self.leave();
        self.record(py, ticket, timing, Ok(value));
    }

    /// The call admitted by `enter_now` raised `err`: whether the fallback replaces it.
    #[inline(never)]
    pub(super) fn raised(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        timing: Timing,
        err: &PyErr,
    ) -> bool {
        self.leave();
        match ending_of(py, err) {
            Ending::Interrupted => {
                self.release(py, ticket);
                false
            }
            ending => {
                self.record(py, ticket, timing, Err(err));
                ending.falls_back(self.fallback_on_failure.load(Ordering::Relaxed))
            }
        }
    }

    /// The call admitted by `enter_now` was abandoned unfinished (closed, or dropped):
    /// no outcome; its slot and a trial's permit are given back.
    pub(super) fn abandoned(&self, py: Python<'_>, ticket: Ticket) {
        self.leave();
        self.release(py, ticket);
    }
}

fn ending_of(py: Python<'_>, err: &PyErr) -> Ending {
    if err.is_instance_of::<PyException>(py) {
        Ending::Raised
    } else {
        Ending::Interrupted
    }
}

#[pymethods]
impl Guard {
    #[new]
    #[pyo3(signature = (func, *, breaker=None, limiter=None, endpoint=None, cost=1, operation=None,
                        fallback=None, has_fallback=false, fallback_on_failure=false, max_wait=None, sleep=None,
                        on_reject=None, priority=None, bulkhead=None, retry=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        func: Bound<'_, PyAny>,
        breaker: Option<Py<PyCircuitBreaker>>,
        limiter: Option<Py<PyRateLimiter>>,
        endpoint: Option<Py<PyAny>>,
        cost: i64,
        operation: Option<Py<PyOperationStats>>,
        fallback: Option<Bound<'_, PyAny>>,
        has_fallback: bool,
        fallback_on_failure: bool,
        max_wait: Option<&Bound<'_, PyAny>>,
        sleep: Option<Py<PyAny>>,
        on_reject: Option<Py<PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
        bulkhead: Option<Py<PyBulkhead>>,
        retry: Option<Py<PyRetry>>,
    ) -> PyResult<Self> {
        let high = is_high(priority)?;
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "the guarded function must be callable, got {}",
                func.repr()?
            )));
        }
        let py = func.py();
        let clock = match (&breaker, &limiter) {
            (Some(b), _) => b.get().core.clock().clone(),
            (None, Some(l)) => l.get().clock.clone(),
            (None, None) => Clock::Monotonic,
        };
        let fallback = if has_fallback {
            Some(fallback.map_or_else(|| py.None(), Bound::unbind))
        } else {
            None
        };
        let fallback_is_callable = fallback.as_ref().is_some_and(|f| f.bind(py).is_callable());
        // Calibrated here, once per process, rather than in the first guarded call.
        crate::clock::stopwatch();
        Ok(Guard {
            func: func.unbind(),
            breaker,
            limiter,
            endpoint: endpoint.filter(|e| !e.is_none(py)),
            cost: cost_of(cost)?,
            operation,
            fallback,
            fallback_is_callable,
            fallback_on_failure: AtomicBool::new(fallback_on_failure && has_fallback),
            max_wait: match max_wait {
                Some(w) if !w.is_none() => seconds(w, "max_wait", true)?,
                _ => 0,
            },
            sleep: sleep.filter(|s| !s.is_none(py)),
            on_reject: on_reject.filter(|h| !h.is_none(py)),
            clock,
            high,
            bulkhead,
            retry,
        })
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(retry) = &self.retry {
            retry.get().budget.deposit();
        }
        let mut retries = 0u32;
        loop {
            let ticket = match self.admit(py, true) {
                Ok(ticket) => ticket,
                Err(rejection) => {
                    if self.retried(py, &rejection, &mut retries)? {
                        continue;
                    }
                    self.rejected(py, &rejection);
                    return match self.call_fallback(py, args, kwargs) {
                        Some(result) => result,
                        None => Err(rejection),
                    };
                }
            };
            let timing = self.timing();
            let called = self.func.bind(py).call(args, kwargs);
            self.leave();
            return match called {
                Ok(value) => {
                    self.record(py, ticket, timing, Ok(&value));
                    Ok(value.unbind())
                }
                Err(err) => match ending_of(py, &err) {
                    Ending::Interrupted => {
                        self.release(py, ticket);
                        Err(err)
                    }
                    ending => {
                        self.record(py, ticket, timing, Err(&err));
                        if self.retried(py, &err, &mut retries)? {
                            continue;
                        }
                        if ending.falls_back(self.fallback_on_failure.load(Ordering::Relaxed)) {
                            if let Some(result) = self.call_fallback(py, args, kwargs) {
                                return result;
                            }
                        }
                        Err(err)
                    }
                },
            };
        }
    }

    /// Binds the guard to an instance, so that it decorates methods too.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        instance: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        bound_method(slf.as_any(), instance)
    }

    /// For async wrappers: takes the breaker admission and a token, never waiting (the
    /// wrapper awaits on its loop, then tries again); returns the admission code, or
    /// raises CircuitBreakerError / RateLimitExceeded.
    fn _admit(&self, py: Python<'_>) -> PyResult<u64> {
        // No on_reject here: the async wrapper may retry after a wait, and reports only
        // the refusal it finally gives its caller.
        self.admit(py, false).map(Ticket::code)
    }

    /// For async wrappers: the clock reading to pass back to `_exit`.
    fn _started(&self) -> u64 {
        self.timing().code()
    }

    /// For async wrappers: records how the call ended. `error` is the exception raised,
    /// or None for success (then `result` is the value returned). Returns True when the
    /// fallback should replace the error.
    #[pyo3(signature = (admission, started, error=None, result=None))]
    fn _exit(
        &self,
        py: Python<'_>,
        admission: u64,
        started: u64,
        error: Option<Bound<'_, PyAny>>,
        result: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let ticket = ticket_from(admission)?;
        let timing = Timing::from_code(started);
        match error {
            None => {
                let value = result.unwrap_or_else(|| py.None().into_bound(py));
                self.returned(py, ticket, timing, &value);
                Ok(false)
            }
            Some(exc) => Ok(self.raised(py, ticket, timing, &PyErr::from_value(exc))),
        }
    }

    /// For async wrappers: `_exit` of a call that returned `result`, with no optional
    /// argument to parse (the common ending, on every call's path).
    fn _returned(
        &self,
        py: Python<'_>,
        admission: u64,
        started: u64,
        result: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ticket = ticket_from(admission)?;
        self.returned(py, ticket, Timing::from_code(started), &result);
        Ok(())
    }

    /// The function this guard runs.
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.func.clone_ref(py)
    }

    #[getter]
    fn breaker(&self, py: Python<'_>) -> Option<Py<PyCircuitBreaker>> {
        self.breaker.as_ref().map(|b| b.clone_ref(py))
    }

    #[getter]
    fn limiter(&self, py: Python<'_>) -> Option<Py<PyRateLimiter>> {
        self.limiter.as_ref().map(|l| l.clone_ref(py))
    }

    #[getter]
    fn retry(&self, py: Python<'_>) -> Option<Py<PyRetry>> {
        self.retry.as_ref().map(|r| r.clone_ref(py))
    }

    #[getter]
    fn bulkhead(&self, py: Python<'_>) -> Option<Py<PyBulkhead>> {
        self.bulkhead.as_ref().map(|b| b.clone_ref(py))
    }

    #[getter]
    fn operation(&self, py: Python<'_>) -> Option<Py<PyOperationStats>> {
        self.operation.as_ref().map(|o| o.clone_ref(py))
    }

    /// Whether a failed call returns the fallback instead of raising (fail-safe modules).
    fn set_fallback_on_failure(&self, enabled: bool) {
        self.fallback_on_failure
            .store(enabled && self.fallback.is_some(), Ordering::Relaxed);
    }

    /// The wrapped function's `__name__`, `__qualname__`, `__annotations__` and
    /// `__type_params__`, and the function itself as `__wrapped__`, read through it
    /// rather than copied into a dict of the guard's own as `functools.update_wrapper`
    /// does (272 bytes a guard). Asked only when the guard has no such attribute: one set
    /// on the guard is kept in its dict, and read first.
    fn __getattr__(&self, py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        match name.to_str()? {
            "__wrapped__" => Ok(self.func.clone_ref(py)),
            "__name__" | "__qualname__" | "__annotations__" | "__type_params__" => {
                Ok(self.func.bind(py).getattr(name)?.unbind())
            }
            _ => Err(PyAttributeError::new_err(format!(
                "'Guard' object has no attribute '{name}'"
            ))),
        }
    }

    /// The wrapped function's docstring, unless one was set on the guard.
    #[getter(__doc__)]
    fn doc(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        read_through(slf, intern!(slf.py(), "__doc__"))
    }

    #[setter(__doc__)]
    fn set_doc(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
        own_dict(slf)?.set_item(intern!(slf.py(), "__doc__"), value)
    }

    /// The wrapped function's module, unless one was set on the guard.
    #[getter(__module__)]
    fn module(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        read_through(slf, intern!(slf.py(), "__module__"))
    }

    #[setter(__module__)]
    fn set_module(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
        own_dict(slf)?.set_item(intern!(slf.py(), "__module__"), value)
    }
}

/// The guard's own dict (made on first use, as Python makes an instance's).
fn own_dict<'py>(slf: &Bound<'py, Guard>) -> PyResult<Bound<'py, PyDict>> {
    Ok(slf
        .as_any()
        .getattr(intern!(slf.py(), "__dict__"))?
        .cast_into::<PyDict>()?)
}

/// `name` as set on the guard, else as the wrapped function has it.
fn read_through(slf: &Bound<'_, Guard>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
    if let Some(own) = own_dict(slf)?.get_item(name)? {
        return Ok(own.unbind());
    }
    Ok(slf.get().func.bind(slf.py()).getattr(name)?.unbind())
}
