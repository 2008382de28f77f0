//! The live breakers, limiters and bulkheads of the process, which the exporter and the
//! health checks read: held without a reference, and without a weak reference object
//! each (a `weakref.WeakSet` entry cost 185 bytes a limiter, issue 19), by address alone
//! (~20 bytes an object in a `BTreeSet`; a map from each native part's address to its
//! object's cost ~30).
//!
//! An object is entered by its Python constructor and leaves in its Python `__del__`
//! (before a cycle it is part of is cleared) and, in any case, as its native part is
//! dropped: before its memory is freed. Reading the members hands out only objects
//! whose reference count is above zero (one at zero is being torn down). Every step
//! runs with the GIL held, which orders them against every change of a reference count;
//! a process whose GIL is disabled keeps a `WeakSet` instead (see `_instances`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::bulkhead::PyBulkhead;
use super::circuit_breaker::PyCircuitBreaker;
use super::rate_limiter::PyRateLimiter;

/// The objects of one kind, by address.
pub struct Members {
    objects: Mutex<BTreeSet<usize>>,
    /// How far into its object the native part of each is: the same for every object of
    /// a kind (PyO3 lays out every object of a class alike, a Python subclass appending its
    /// slots after it), learnt from the first one entered; `UNKNOWN` until then.
    native_offset: AtomicUsize,
}

const UNKNOWN: usize = usize::MAX;

impl Members {
    const fn new() -> Self {
        Members {
            objects: Mutex::new(BTreeSet::new()),
            native_offset: AtomicUsize::new(UNKNOWN),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<usize>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called as the native part at `native` is dropped: its object is leaving. (Its
    /// object's memory is not freed yet, so no other live object has that address.)
    pub fn leave(&self, native: usize) {
        let offset = self.native_offset.load(Ordering::Relaxed);
        if offset != UNKNOWN {
            self.lock().remove(&native.wrapping_sub(offset));
        }
    }

    /// Enters `object`, whose native part is at `native`.
    fn enter(&self, object: usize, native: usize) -> PyResult<()> {
        let offset = native.wrapping_sub(object);
        let known = match self.native_offset.compare_exchange(
            UNKNOWN,
            offset,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => offset,
            Err(known) => known,
        };
        if known != offset {
            // Never seen: `leave` could not find it again, so it is not entered.
            return Err(PyRuntimeError::new_err(
                "this object's native part is not where the others' are: not registered",
            ));
        }
        self.lock().insert(object);
        Ok(())
    }
}

pub static BREAKERS: Members = Members::new();
pub static LIMITERS: Members = Members::new();
pub static BULKHEADS: Members = Members::new();

#[derive(Clone, Copy)]
enum Kind {
    Breakers,
    Limiters,
    Bulkheads,
}

/// The live objects of one kind, as a set: `add`, `discard`, `len` and iteration.
#[pyclass(frozen, module = "peak_resilience._native", name = "Registry")]
pub struct PyRegistry {
    kind: Kind,
}

impl PyRegistry {
    fn members(&self) -> &'static Members {
        match self.kind {
            Kind::Breakers => &BREAKERS,
            Kind::Limiters => &LIMITERS,
            Kind::Bulkheads => &BULKHEADS,
        }
    }

    /// The address of `object`'s native part: the key it is entered under.
    fn native(&self, object: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(match self.kind {
            Kind::Breakers => object.cast::<PyCircuitBreaker>()?.get() as *const _ as usize,
            Kind::Limiters => object.cast::<PyRateLimiter>()?.get() as *const _ as usize,
            Kind::Bulkheads => object.cast::<PyBulkhead>()?.get() as *const _ as usize,
        })
    }
}

#[pymethods]
impl PyRegistry {
    /// `kind`: "breakers", "limiters" or "bulkheads".
    #[new]
    fn new(kind: &str) -> PyResult<Self> {
        let kind = match kind {
            "breakers" => Kind::Breakers,
            "limiters" => Kind::Limiters,
            "bulkheads" => Kind::Bulkheads,
            other => {
                return Err(PyValueError::new_err(format!(
                    "a registry holds 'breakers', 'limiters' or 'bulkheads', not {other:?}"
                )))
            }
        };
        Ok(PyRegistry { kind })
    }

    #[pyo3(signature = (object, /))]
    fn add(&self, object: &Bound<'_, PyAny>) -> PyResult<()> {
        let native = self.native(object)?;
        self.members().enter(object.as_ptr() as usize, native)
    }

    #[pyo3(signature = (object, /))]
    fn discard(&self, object: &Bound<'_, PyAny>) -> PyResult<()> {
        self.native(object)?; // of this kind
        self.members().lock().remove(&(object.as_ptr() as usize));
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.members().lock().len()
    }

    /// The members now, in a list of their own (iterated while objects come and go).
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut alive: Vec<Bound<'py, PyAny>> = Vec::new();
        {
            // Nothing here calls Python or allocates a Python object: no garbage
            // collection runs (and drops a member, taking this lock) while it is held.
            let members = self.members().lock();
            alive.reserve(members.len());
            for &object in members.iter() {
                let object = object as *mut ffi::PyObject;
                // SAFETY: an object leaves before its memory is freed, and the GIL is held:
                // it is alive, unless being torn down (count at zero): then it is skipped.
                unsafe {
                    if ffi::Py_REFCNT(object) > 0 {
                        alive.push(Bound::from_borrowed_ptr(py, object));
                    }
                }
            }
        }
        PyList::new(py, alive)?
            .as_any()
            .try_iter()
            .map(Bound::into_any)
    }
}
