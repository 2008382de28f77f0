//! Calls into a remote store and the conversion of its replies.
//!
//! A remote store is a Python object (today: Redis, running Lua scripts) that holds a
//! breaker's or a bucket's state for every host. Each method answers None when the store
//! cannot be reached; the breaker or bucket then applies its `OnBackendError` policy
//! (`crate::remote`). Times cross this boundary in nanoseconds, as everywhere in the core.
//!
//! A breaker's store: `configure(failure_threshold, recovery_timeout, half_open_max_calls,
//! failure_rate_ppm, minimum_calls, window_is_time, window_size, backoff_multiplier,
//! max_recovery_timeout)`, `enter() -> (admission, remaining, from, to)`,
//! `exit(admission, outcome) -> (from, to)` (outcome "ok", "fail", "slow" or "release";
//! admission -1: as the state now says), `read() -> (state, failure_count, remaining,
//! shadow_state, from, to)`, `command(op, argument) -> (from, to)` (op "reset", "force",
//! "disable", "open_for" (ns), "shadow" (0/1)), `window() -> (calls, failures,
//! failed_trials)`, `counters() -> [successes, failures, rejections, would_reject,
//! slow_calls, then the 36 transition counts from * 6 + to]`; `from` is -1 when nothing
//! changed. `enter_and_take(bucket_store, cost, high) -> ((admission, remaining, from,
//! to), (admitted, wait) or None)` is `enter` and, if admitted, the bucket's `take` in one
//! call (a trial refused its token given back); anything but a tuple: ask each.
//!
//! A bucket's store: `configure([(interval, burst), ...], reserve)`, `take(cost, high) ->
//! (admitted, wait)`, `peek(cost, high) -> (wait, allowed, rejected, paused, [available
//! per window])` (available: ns of tokens, as `interval * tokens`), `adjust(amount,
//! charge)`, `reserve(cost, high) -> (admitted, wait, [record per window])` (a take that
//! says what it left), `give_back(amount, records)` (a refund of that take, no more than
//! it still owes), `sync(window, used)`, `pause(nanos)` (0 lifts it). A limiter's store makes
//! one per bucket: `bucket(endpoint)` (None: the default bucket).
//!
//! Both have `retry_interval` (seconds until an unreachable store is tried again) and
//! `available` (False during an outage).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::breaker::{BreakerSettings, Transition};
use crate::bucket::{Decision, Quota, Taken, MAX_WINDOWS};
use crate::clock::seconds_to_nanos;
use crate::remote::OnBackendError;

use super::errors::report_unraisable;

/// A remote store and the policy for its outages.
pub struct Store {
    object: Py<PyAny>,
    pub policy: OnBackendError,
}

/// A breaker's state as the store reads it.
pub struct RemoteState {
    /// What the gauge shows (METRICS_ONLY in shadow mode).
    pub state: u8,
    pub failure_count: u64,
    pub remaining: u64,
    /// The state machine's own state.
    pub shadow: u8,
    pub transition: Option<Transition>,
}

/// A bucket as the store reads it.
pub struct Peek {
    pub wait: u64,
    pub allowed: u64,
    pub rejected: u64,
    pub paused: u64,
    /// Tokens available in each window (the store's own units may round the interval).
    pub tokens: Vec<f64>,
}

/// A breaker's admission and its bucket's take, from one call (`enter_and_take`).
pub struct EnteredAndTaken {
    /// The admission code (0: refused) and the ns until a trial, as `enter` gives them.
    pub code: u64,
    pub remaining: u64,
    pub transition: Option<Transition>,
    /// The take's decision; None when the breaker refused (nothing was taken).
    pub take: Option<Decision>,
}

fn decision(admitted: bool, wait: u64) -> Decision {
    if admitted {
        Decision::Admitted
    } else {
        Decision::Rejected { wait: wait.max(1) }
    }
}

/// The transition of a store's `(from, to)` reply (-1: nothing changed).
pub fn transition(from: i64, to: i64) -> Option<Transition> {
    (from >= 0 && to >= 0 && from != to).then_some(Transition {
        from: from as u8,
        to: to as u8,
    })
}

impl Store {
    pub fn new(object: Bound<'_, PyAny>, policy: OnBackendError) -> Self {
        Store {
            object: object.unbind(),
            policy,
        }
    }

    pub fn object(&self) -> &Py<PyAny> {
        &self.object
    }

    /// Calls `method`; Ok(None) when the store could not be reached.
    fn call<'py, A>(
        &self,
        py: Python<'py>,
        method: &Bound<'py, pyo3::types::PyString>,
        args: A,
    ) -> PyResult<Option<Bound<'py, PyAny>>>
    where
        A: pyo3::call::PyCallArgs<'py>,
    {
        let reply = self.object.bind(py).call_method1(method, args)?;
        Ok((!reply.is_none()).then_some(reply))
    }

    /// Nanoseconds until an unreachable store is tried again: how long a refusal during an
    /// outage tells its caller to wait.
    pub fn retry(&self, py: Python<'_>) -> u64 {
        self.object
            .bind(py)
            .getattr(intern!(py, "retry_interval"))
            .and_then(|v| v.extract::<f64>())
            .ok()
            .and_then(seconds_to_nanos)
            .unwrap_or(1_000_000_000)
    }

    /// False during an outage.
    pub fn available(&self, py: Python<'_>) -> PyResult<bool> {
        self.object
            .bind(py)
            .getattr(intern!(py, "available"))?
            .is_truthy()
    }

    // --- a breaker's store ---------------------------------------------------------------

    pub fn configure_breaker(&self, py: Python<'_>, s: &BreakerSettings) -> PyResult<()> {
        self.object.bind(py).call_method1(
            intern!(py, "configure"),
            (
                s.failure_threshold,
                s.recovery_timeout,
                s.half_open_max_calls,
                s.failure_rate_ppm,
                s.minimum_calls,
                s.window.is_time(),
                s.window.size(),
                s.backoff_multiplier,
                s.max_recovery_timeout,
            ),
        )?;
        Ok(())
    }

    /// (admission code, 0 refused; ns until a trial; the transition it caused).
    pub fn enter(&self, py: Python<'_>) -> PyResult<Option<(u64, u64, Option<Transition>)>> {
        let Some(reply) = self.call(py, intern!(py, "enter"), ())? else {
            return Ok(None);
        };
        let (code, remaining, from, to): (u64, u64, i64, i64) = reply.extract()?;
        Ok(Some((code, remaining, transition(from, to))))
    }

    /// Reports a call's outcome; None when the store could not be reached. Never raises:
    /// the call it reports has run, and its caller gets its value (an unexpected error is
    /// reported as unraisable and taken as an outage).
    pub fn exit(
        &self,
        py: Python<'_>,
        code: Option<u64>,
        outcome: &'static str,
    ) -> Option<Option<Transition>> {
        let admission = code.map_or(-1, |c| c as i64);
        let reply = self
            .call(py, intern!(py, "exit"), (admission, outcome))
            .and_then(|reply| match reply {
                None => Ok(None),
                Some(r) => r.extract::<(i64, i64)>().map(Some),
            });
        match reply {
            Ok(reply) => reply.map(|(from, to)| transition(from, to)),
            Err(err) => {
                report_unraisable(py, err, self.object.bind(py));
                None
            }
        }
    }

    pub fn read(&self, py: Python<'_>) -> PyResult<Option<RemoteState>> {
        let Some(reply) = self.call(py, intern!(py, "read"), ())? else {
            return Ok(None);
        };
        let (state, failure_count, remaining, shadow, from, to): (u8, u64, u64, u8, i64, i64) =
            reply.extract()?;
        Ok(Some(RemoteState {
            state,
            failure_count,
            remaining,
            shadow,
            transition: transition(from, to),
        }))
    }

    pub fn command(
        &self,
        py: Python<'_>,
        op: &'static str,
        argument: u64,
    ) -> PyResult<Option<Option<Transition>>> {
        let Some(reply) = self.call(py, intern!(py, "command"), (op, argument))? else {
            return Ok(None);
        };
        let (from, to): (i64, i64) = reply.extract()?;
        Ok(Some(transition(from, to)))
    }

    pub fn window(&self, py: Python<'_>) -> PyResult<Option<(u64, u64, u64)>> {
        match self.call(py, intern!(py, "window"), ())? {
            None => Ok(None),
            Some(reply) => Ok(Some(reply.extract()?)),
        }
    }

    pub fn counters(&self, py: Python<'_>) -> PyResult<Option<Vec<u64>>> {
        match self.call(py, intern!(py, "counters"), ())? {
            None => Ok(None),
            Some(reply) => Ok(Some(reply.extract()?)),
        }
    }

    /// A guarded call's whole admission in one call: the breaker's `enter` and, if it
    /// admits, `bucket`'s take of `cost` (a trial refused its token is given back by the
    /// store). None: ask each on its own (the two are not on one Redis node, or the store
    /// could not be reached, which each step then finds out and applies its policy to).
    pub fn enter_and_take(
        &self,
        py: Python<'_>,
        bucket: &Store,
        cost: u64,
        high: bool,
    ) -> PyResult<Option<EnteredAndTaken>> {
        let reply = self.object.bind(py).call_method1(
            intern!(py, "enter_and_take"),
            (bucket.object.bind(py), cost, high),
        )?;
        if !reply.is_instance_of::<PyTuple>() {
            return Ok(None);
        }
        type Reply = ((u64, u64, i64, i64), Option<(bool, u64)>);
        let ((code, remaining, from, to), take): Reply = reply.extract()?;
        Ok(Some(EnteredAndTaken {
            code,
            remaining,
            transition: transition(from, to),
            take: take.map(|(admitted, wait)| decision(admitted, wait)),
        }))
    }

    // --- a bucket's store ----------------------------------------------------------------

    pub fn configure_bucket(&self, py: Python<'_>, quotas: &[Quota], reserve: u64) -> PyResult<()> {
        let windows: Vec<(u64, u64, &str)> = quotas
            .iter()
            .map(|q| (q.interval, q.burst, q.kind.name()))
            .collect();
        self.object.bind(py).call_method1(
            intern!(py, "configure"),
            (PyList::new(py, windows)?, reserve),
        )?;
        Ok(())
    }

    pub fn take(&self, py: Python<'_>, cost: u64, high: bool) -> PyResult<Option<Decision>> {
        let Some(reply) = self.call(py, intern!(py, "take"), (cost, high))? else {
            return Ok(None);
        };
        let (admitted, wait): (bool, u64) = reply.extract()?;
        Ok(Some(decision(admitted, wait)))
    }

    pub fn peek(&self, py: Python<'_>, cost: u64, high: bool) -> PyResult<Option<Peek>> {
        let Some(reply) = self.call(py, intern!(py, "peek"), (cost, high))? else {
            return Ok(None);
        };
        let (wait, allowed, rejected, paused, tokens): (u64, u64, u64, u64, Vec<f64>) =
            reply.extract()?;
        Ok(Some(Peek {
            wait,
            allowed,
            rejected,
            paused,
            tokens,
        }))
    }

    /// A take of `cost` that also returns the store's record of what it left in each
    /// window (never all zero), for `give_back`.
    pub fn reserve(
        &self,
        py: Python<'_>,
        cost: u64,
        high: bool,
    ) -> PyResult<Option<(Decision, Taken)>> {
        let Some(reply) = self.call(py, intern!(py, "reserve"), (cost, high))? else {
            return Ok(None);
        };
        let (admitted, wait, records): (bool, u64, Vec<u64>) = reply.extract()?;
        let mut taken: Taken = [0; MAX_WINDOWS];
        for (slot, record) in taken.iter_mut().zip(records) {
            *slot = record;
        }
        Ok(Some((decision(admitted, wait), taken)))
    }

    /// Refunds `amount` tokens of the reservation whose take left `taken`; None when
    /// unreachable. Never raises, like `adjust`.
    pub fn give_back(&self, py: Python<'_>, amount: u64, taken: &Taken) -> Option<()> {
        match self.call(py, intern!(py, "give_back"), (amount, taken.to_vec())) {
            Ok(reply) => reply.map(|_| ()),
            Err(err) => {
                report_unraisable(py, err, self.object.bind(py));
                None
            }
        }
    }

    /// Charges (forced) or refunds `amount` tokens; None when unreachable. Never raises,
    /// like `exit`: a settlement reports a call that has happened.
    pub fn adjust(&self, py: Python<'_>, amount: u64, charge: bool) -> Option<()> {
        match self.call(py, intern!(py, "adjust"), (amount, charge)) {
            Ok(reply) => reply.map(|_| ()),
            Err(err) => {
                report_unraisable(py, err, self.object.bind(py));
                None
            }
        }
    }

    pub fn sync(&self, py: Python<'_>, window: usize, used: u64) -> PyResult<Option<()>> {
        Ok(self
            .call(py, intern!(py, "sync"), (window, used))?
            .map(|_| ()))
    }

    pub fn pause(&self, py: Python<'_>, nanos: u64) -> PyResult<Option<()>> {
        Ok(self.call(py, intern!(py, "pause"), (nanos,))?.map(|_| ()))
    }

    /// A limiter's store: the store of the bucket of `endpoint` (None: the default one).
    pub fn bucket<'py>(
        &self,
        py: Python<'py>,
        endpoint: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.object
            .bind(py)
            .call_method1(intern!(py, "bucket"), (endpoint,))
    }
}
