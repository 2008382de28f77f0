//! `Retry`: which failures a guarded call may retry, how long it waits between attempts,
//! and the budget that bounds the retries of the calls that share it.

use std::sync::{Arc, RwLock};

use pyo3::exceptions::{PyBaseException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyTuple, PyType};

use crate::clock::{nanos_to_seconds, seconds_to_nanos, Clock};
use crate::retry::{backoff, random_fraction, RetryBudget};

use super::args::{clock_from, count, given, number, positive_int, seconds};

/// Retries a call that raised one of the exception classes `on` (none by default: an
/// order is never retried unless said so), at most `attempts` attempts in all, waiting a
/// random time up to `backoff * multiplier ** n` seconds (at most `max_backoff`) before
/// retry n, or the `retry_after` that the exception carries (or that the hook
/// `retry_after(exception)` returns) if longer. The retries of every call sharing the
/// budget stay within `budget` of the calls (0.2 = one retry per five calls) plus
/// `min_retries_per_second`.
#[pyclass(frozen, module = "peak_resilience._native", name = "Retry")]
pub struct PyRetry {
    /// Read only when a call failed or was refused; a configuration reload replaces it.
    policy: RwLock<Policy>,
    pub budget: Arc<RetryBudget>,
    clock: Clock,
}

/// What is retried and how long to wait: everything of a `Retry` but its budget.
struct Policy {
    attempts: u32,
    on: Py<PyTuple>,
    base: u64,
    multiplier: f64,
    cap: u64,
    hook: Option<Py<PyAny>>,
}

impl Policy {
    fn clone_ref(&self, py: Python<'_>) -> Policy {
        Policy {
            attempts: self.attempts,
            on: self.on.clone_ref(py),
            base: self.base,
            multiplier: self.multiplier,
            cap: self.cap,
            hook: self.hook.as_ref().map(|h| h.clone_ref(py)),
        }
    }
}

impl PyRetry {
    /// The policy in force (a copy: the lock is not held while Python code runs).
    fn policy(&self, py: Python<'_>) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone_ref(py)
    }

    /// The wait before retry `retries` (0: the first retry) of a call that failed with
    /// `err`, or None when it is not retried: the class is not retryable, the attempts are
    /// used up or the budget is spent.
    pub fn delay(&self, py: Python<'_>, err: &PyErr, retries: u32) -> PyResult<Option<u64>> {
        let policy = self.policy(py);
        if retries.saturating_add(1) >= policy.attempts
            || !err.value(py).is_instance(policy.on.bind(py))?
            || !self.budget.withdraw()
        {
            return Ok(None);
        }
        let jittered = backoff(
            policy.base,
            policy.multiplier,
            policy.cap,
            retries,
            random_fraction(),
        );
        Ok(Some(jittered.max(retry_after(py, &policy, err)?)))
    }
}

/// The wait the exception asks for: the hook's answer, else its `retry_after` attribute
/// (ours carry one), else none.
fn retry_after(py: Python<'_>, policy: &Policy, err: &PyErr) -> PyResult<u64> {
    let value = err.value(py);
    let asked = match &policy.hook {
        Some(hook) => hook.bind(py).call1((value,))?,
        None => match value.getattr("retry_after") {
            Ok(attr) => attr,
            Err(_) => return Ok(0),
        },
    };
    if asked.is_none() || !(asked.is_instance_of::<PyFloat>() || asked.is_instance_of::<PyInt>()) {
        return Ok(0);
    }
    let secs: f64 = asked.extract()?;
    Ok(seconds_to_nanos(secs.max(0.0)).unwrap_or(policy.cap))
}

impl PyRetry {
    /// This policy over `budget`, whose clock is `clock`.
    fn with_budget(&self, py: Python<'_>, budget: Arc<RetryBudget>, clock: Clock) -> Self {
        PyRetry {
            policy: RwLock::new(self.policy(py)),
            budget,
            clock,
        }
    }
}

fn exception_classes<'py>(on: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let classes = match on.cast::<PyTuple>() {
        Ok(tuple) => tuple.clone(),
        Err(_) => PyTuple::new(on.py(), [on])?,
    };
    for class in classes.iter() {
        let ok = class
            .cast::<PyType>()
            .is_ok_and(|t| t.is_subclass_of::<PyBaseException>().unwrap_or(false));
        if !ok {
            return Err(PyTypeError::new_err(format!(
                "on must be an exception class or a tuple of them, got {}",
                class.repr()?
            )));
        }
    }
    Ok(classes)
}

#[pymethods]
impl PyRetry {
    #[new]
    #[pyo3(signature = (attempts=None, *, on=None, backoff=None, multiplier=None, max_backoff=None,
                        budget=None, min_retries_per_second=None, retry_after=None, clock=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        attempts: Option<&Bound<'_, PyAny>>,
        on: Option<&Bound<'_, PyAny>>,
        backoff: Option<&Bound<'_, PyAny>>,
        multiplier: Option<&Bound<'_, PyAny>>,
        max_backoff: Option<&Bound<'_, PyAny>>,
        budget: Option<&Bound<'_, PyAny>>,
        min_retries_per_second: Option<&Bound<'_, PyAny>>,
        retry_after: Option<Py<PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let attempts = match given(attempts) {
            Some(a) => u32::try_from(positive_int(a, "attempts")?)
                .map_err(|_| PyValueError::new_err("attempts must be at most 4294967295"))?,
            None => 3,
        };
        let on = match given(on) {
            Some(on) => exception_classes(on)?.unbind(),
            None => PyTuple::empty(py).unbind(),
        };
        let multiplier = match given(multiplier) {
            Some(m) => number(m, "multiplier")?,
            None => 2.0,
        };
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(PyValueError::new_err(format!(
                "multiplier must be a finite number of at least 1, got {multiplier}"
            )));
        }
        let fraction = match given(budget) {
            Some(b) => number(b, "budget")?,
            None => 0.2,
        };
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(PyValueError::new_err(format!(
                "budget must be a fraction greater than 0 and at most 1 (0.2 = one retry \
                 per five calls), got {fraction}"
            )));
        }
        let min_per_second = match given(min_retries_per_second) {
            Some(m) => count(m, "min_retries_per_second")?,
            None => 10,
        };
        if let Some(hook) = &retry_after {
            if !hook.bind(py).is_none() && !hook.bind(py).is_callable() {
                return Err(PyTypeError::new_err(
                    "retry_after must be a callable taking the exception, or None",
                ));
            }
        }
        let clock = clock_from(clock)?;
        let policy = Policy {
            attempts,
            on,
            base: match given(backoff) {
                Some(b) => seconds(b, "backoff", true)?,
                None => 100_000_000,
            },
            multiplier,
            cap: match given(max_backoff) {
                Some(c) => seconds(c, "max_backoff", true)?,
                None => 10_000_000_000,
            },
            hook: retry_after.filter(|h| !h.bind(py).is_none()),
        };
        Ok(PyRetry {
            policy: RwLock::new(policy),
            budget: Arc::new(RetryBudget::new(fraction, min_per_second, clock.clone())),
            clock,
        })
    }

    /// The same policy with a budget of its own (each operation of `with_resilience`
    /// gets one), on `clock` if given.
    #[pyo3(signature = (clock=None))]
    fn with_own_budget(&self, py: Python<'_>, clock: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let clock = match given(clock) {
            Some(_) => clock_from(clock)?,
            None => self.clock.clone(),
        };
        let budget = Arc::new(RetryBudget::new(
            self.budget.fraction(),
            self.budget.min_per_second(),
            clock.clone(),
        ));
        Ok(self.with_budget(py, budget, clock))
    }

    /// This policy drawing on `other`'s budget: the functions decorated as one
    /// operation share its retry budget, whatever their own policies.
    fn sharing_budget_of(&self, py: Python<'_>, other: &Bound<'_, PyRetry>) -> Self {
        let other = other.get();
        self.with_budget(py, Arc::clone(&other.budget), other.clock.clone())
    }

    /// Takes `other`'s settings in place, its budget's rates included (the balance and
    /// counts stay): how a configuration reload reaches a decorated function's retries.
    fn _update_from(&self, py: Python<'_>, other: &Bound<'_, PyRetry>) {
        let other = other.get();
        let policy = other.policy(py);
        *self
            .policy
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = policy;
        self.budget
            .set_rates(other.budget.fraction(), other.budget.min_per_second());
    }

    /// Attempts in all, the first included.
    #[getter]
    fn attempts(&self, py: Python<'_>) -> u32 {
        self.policy(py).attempts
    }

    /// The exception classes that may be retried.
    #[getter]
    fn on(&self, py: Python<'_>) -> Py<PyTuple> {
        self.policy(py).on
    }

    #[getter]
    fn backoff(&self, py: Python<'_>) -> f64 {
        nanos_to_seconds(self.policy(py).base)
    }

    #[getter]
    fn max_backoff(&self, py: Python<'_>) -> f64 {
        nanos_to_seconds(self.policy(py).cap)
    }

    #[getter]
    fn multiplier(&self, py: Python<'_>) -> f64 {
        self.policy(py).multiplier
    }

    #[getter]
    fn budget(&self) -> f64 {
        self.budget.fraction()
    }

    /// Retries a second allowed however few the calls.
    #[getter]
    fn min_retries_per_second(&self) -> u64 {
        self.budget.min_per_second()
    }

    /// Retries made under this budget.
    #[getter]
    fn retries(&self) -> u64 {
        self.budget.retries()
    }

    /// Retries refused because the budget was spent.
    #[getter]
    fn budget_exhausted(&self) -> u64 {
        self.budget.exhausted()
    }

    /// For async wrappers: counts a call (not a retry) in the budget.
    fn _called(&self) {
        self.budget.deposit();
    }

    /// For async wrappers: seconds to wait before retry `retries` of a call that raised
    /// `error`, or None when it is not retried.
    fn _delay(
        &self,
        py: Python<'_>,
        error: Bound<'_, PyAny>,
        retries: u32,
    ) -> PyResult<Option<f64>> {
        let err = PyErr::from_value(error);
        Ok(self.delay(py, &err, retries)?.map(nanos_to_seconds))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let policy = self.policy(py);
        Ok(format!(
            "Retry(attempts={}, on={}, backoff={}, multiplier={}, max_backoff={}, budget={})",
            policy.attempts,
            policy.on.bind(py).repr()?,
            nanos_to_seconds(policy.base),
            policy.multiplier,
            nanos_to_seconds(policy.cap),
            self.budget.fraction()
        ))
    }
}
