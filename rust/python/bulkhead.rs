//! `Bulkhead`: the cap on calls in flight as a Python class (subclassed in
//! `peak_resilience._bulkhead`), and the wait for a slot, which the guard uses too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;

use crate::bulkhead::{next_poll, Bulkhead};
use crate::clock::{nanos_to_seconds, Clock};

use super::args::{clock_from, given, name_or, path_or_none, positive_int, seconds};

static BULKHEAD_FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UNNAMED: AtomicU64 = AtomicU64::new(0);

/// At most `max_concurrent` calls in flight at once; a call over the cap waits up to
/// `max_wait` seconds for a slot, then is refused with `BulkheadFull`.
#[pyclass(
    frozen,
    subclass,
    module = "peak_resilience._native",
    name = "Bulkhead"
)]
pub struct PyBulkhead {
    pub core: Bulkhead,
    #[pyo3(get)]
    pub name: Py<PyString>,
    /// Settable: a configuration reload changes it in place.
    max_wait: AtomicU64,
    clock: Clock,
}

impl Drop for PyBulkhead {
    fn drop(&mut self) {
        // Before its memory is freed, the object leaves the registry (see `registry`).
        super::registry::BULKHEADS.leave(self as *const Self as usize);
    }
}

impl PyBulkhead {
    /// Takes a slot, waiting up to `max_wait` for one (a manual clock is advanced instead
    /// of waiting). False: no slot came, and the refusal is counted.
    #[inline]
    pub fn enter(&self, py: Python<'_>) -> bool {
        if self.core.try_enter() {
            return true;
        }
        self.wait_for_slot(py)
    }

    /// Takes a slot if one is free, never waiting. A refusal is counted only when the
    /// bulkhead has no `max_wait`: otherwise the async wrapper waits on its loop and
    /// counts the refusal it finally gives.
    #[inline]
    pub fn try_enter_counted(&self) -> bool {
        if self.core.try_enter() {
            return true;
        }
        if self.max_wait.load(Ordering::Relaxed) == 0 {
            self.core.refused();
        }
        false
    }

    #[cold]
    fn wait_for_slot(&self, py: Python<'_>) -> bool {
        let max_wait = self.max_wait.load(Ordering::Relaxed);
        let (mut waited, mut poll) = (0u64, 0u64);
        while waited < max_wait {
            poll = next_poll(poll).min(max_wait - waited);
            match &self.clock {
                Clock::Manual(manual) => manual.advance(poll),
                _ => py.detach(|| std::thread::sleep(Duration::from_nanos(poll))),
            }
            waited += poll;
            if self.core.try_enter() {
                return true;
            }
        }
        self.core.refused();
        false
    }

    /// The `BulkheadFull(name, max_concurrent)` for a refused call; for a shared bulkhead
    /// whose file was truncated under the process (it refuses every call), the error that
    /// names the file, as a breaker's and a limiter's do.
    #[cold]
    pub fn full(&self, py: Python<'_>) -> PyErr {
        if let Some(lost) = lost_file(&self.core) {
            return super::errors::lost_error(&lost, "bulkhead");
        }
        let details = (self.name.clone_ref(py), self.core.max_concurrent());
        match BULKHEAD_FULL.import(py, "peak_resilience.errors", "BulkheadFull") {
            Ok(ty) => PyErr::from_type(ty.clone(), details),
            Err(err) => err,
        }
    }
}

/// A bulkhead over the shared file of `name` in `dir`: one cap for the host's processes.
#[cfg(all(unix, not(peak_portable)))]
fn shared_core(dir: &std::path::Path, name: &str, cap: u64) -> PyResult<Bulkhead> {
    use crate::shared_bulkhead::{SharedSlots, MAX_SHARED_SLOTS};
    if cap > MAX_SHARED_SLOTS as u64 {
        return Err(PyValueError::new_err(format!(
            "max_concurrent must be at most {MAX_SHARED_SLOTS} on the shared backend \
             (the slots of a shared file), got {cap}"
        )));
    }
    let path = crate::files::bulkhead_file(dir, name);
    let slots = SharedSlots::open(&path, cap).map_err(super::errors::shared_error)?;
    Ok(Bulkhead::over(slots))
}

#[cfg(not(all(unix, not(peak_portable))))]
fn shared_core(_dir: &std::path::Path, _name: &str, _cap: u64) -> PyResult<Bulkhead> {
    Err(PyValueError::new_err(
        "backend='shared' is not supported in this build: use backend='memory'",
    ))
}

#[cfg(all(unix, not(peak_portable)))]
fn shared_path(core: &Bulkhead) -> Option<PathBuf> {
    core.shared().map(|slots| slots.path().to_owned())
}

#[cfg(not(all(unix, not(peak_portable))))]
fn shared_path(_core: &Bulkhead) -> Option<PathBuf> {
    None
}

/// The file of a shared bulkhead truncated under this process, if it is one.
#[cfg(all(unix, not(peak_portable)))]
fn lost_file(core: &Bulkhead) -> Option<PathBuf> {
    core.shared()
        .filter(|slots| slots.lost())
        .map(|slots| slots.path().to_owned())
}

#[cfg(not(all(unix, not(peak_portable))))]
fn lost_file(_core: &Bulkhead) -> Option<PathBuf> {
    None
}

#[pymethods]
impl PyBulkhead {
    #[new]
    #[pyo3(signature = (max_concurrent, *, name=None, max_wait=None, clock=None, shared_dir=None))]
    fn new(
        py: Python<'_>,
        max_concurrent: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        max_wait: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        shared_dir: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let cap = positive_int(max_concurrent, "max_concurrent")?;
        let name = name_or(py, name, "bulkhead", &UNNAMED)?;
        let shared_dir = path_or_none(
            shared_dir,
            "shared_dir",
            "the directory of the bulkhead's shared file",
        )?;
        let core = match shared_dir {
            None => Bulkhead::new(cap),
            Some(dir) => shared_core(&dir, name.bind(py).to_str()?, cap)?,
        };
        Ok(PyBulkhead {
            core,
            name,
            max_wait: AtomicU64::new(match given(max_wait) {
                Some(w) => seconds(w, "max_wait", true)?,
                None => 0,
            }),
            clock: clock_from(clock)?,
        })
    }

    /// Takes a slot, waiting up to `max_wait` seconds; False when none came (counted as
    /// a rejection). Every True must be followed by one `release()`.
    fn acquire(&self, py: Python<'_>) -> bool {
        self.enter(py)
    }

    /// Takes a slot if one is free now, never waiting and counting no rejection.
    fn try_acquire(&self) -> bool {
        self.core.try_enter()
    }

    /// Gives back a slot taken by `acquire` or `try_acquire`.
    fn release(&self) {
        self.core.leave();
    }

    /// Raises `BulkheadFull` for this bulkhead (the Python class's refusals use it).
    fn _full(&self, py: Python<'_>) -> PyResult<()> {
        Err(self.full(py))
    }

    /// Counts a refusal decided outside `acquire` (an `async with` that polled in vain).
    fn _count_refusal(&self) {
        self.core.refused();
    }

    /// The file the slots are kept in (backend "shared"), else None.
    #[getter]
    fn shared_path(&self) -> Option<PathBuf> {
        shared_path(&self.core)
    }

    /// Calls that may run at once.
    #[getter]
    fn max_concurrent(&self) -> u64 {
        self.core.max_concurrent()
    }

    /// Calls holding a slot now.
    #[getter]
    fn in_flight(&self) -> u64 {
        self.core.in_flight()
    }

    /// Calls refused for want of a slot since the bulkhead was made.
    #[getter]
    fn rejections(&self) -> u64 {
        self.core.rejections()
    }

    /// Seconds a call waits for a slot before it is refused.
    #[getter]
    fn max_wait(&self) -> f64 {
        nanos_to_seconds(self.max_wait.load(Ordering::Relaxed))
    }

    /// A new cap and wait for a live bulkhead (a configuration reload). Calls in flight
    /// keep their slots: a lower cap refuses new calls until enough of them have left.
    #[pyo3(signature = (max_concurrent, max_wait))]
    fn _update(
        &self,
        max_concurrent: &Bound<'_, PyAny>,
        max_wait: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let cap = positive_int(max_concurrent, "max_concurrent")?;
        let wait = seconds(max_wait, "max_wait", true)?;
        self.core.set_max_concurrent(cap);
        self.max_wait.store(wait, Ordering::Relaxed);
        Ok(())
    }
}
