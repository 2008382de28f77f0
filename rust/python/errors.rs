//! The Python exceptions the binding raises: the package's own refusal classes (looked up
//! once in `peak_resilience.errors`) and the errors of the shared backend.

use std::path::Path;

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyPermissionError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::PyErrArguments;

use crate::shared::{self, Region, SharedError};

static CIRCUIT_BREAKER_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static RATE_LIMIT_EXCEEDED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
const ERRORS_MODULE: &str = "peak_resilience.errors";

/// Reports the error of a callback whose failure must not break the call around it (a
/// listener, a predicate, a hook, a remote store's bookkeeping) as unraisable; but a Ctrl-C
/// that landed while the callback ran is not swallowed with it: the KeyboardInterrupt is
/// delivered again as a fresh SIGINT, and reaches the program at its next bytecode.
#[cold]
pub fn report_unraisable(py: Python<'_>, err: PyErr, callback: &Bound<'_, PyAny>) {
    if err.is_instance_of::<PyKeyboardInterrupt>(py) {
        // SAFETY: only sets the flag that the eval loop checks (async-signal-safe); the
        // SIGINT handler in force (Python's default one raises KeyboardInterrupt) runs then.
        unsafe { pyo3::ffi::PyErr_SetInterrupt() };
        return;
    }
    err.write_unraisable(py, Some(callback));
}

/// A `CircuitBreakerError(name, retry_after)`. Its message is formatted by the Python class
/// only when asked for: a refusal costs little more than a plain raise.
#[cold]
pub fn circuit_open(py: Python<'_>, details: impl PyErrArguments + 'static) -> PyErr {
    refusal(py, &CIRCUIT_BREAKER_ERROR, "CircuitBreakerError", details)
}

/// A `RateLimitExceeded(limiter, endpoint, retry_after)`, formatted lazily as above.
#[cold]
pub fn rate_limited(py: Python<'_>, details: impl PyErrArguments + 'static) -> PyErr {
    refusal(py, &RATE_LIMIT_EXCEEDED, "RateLimitExceeded", details)
}

fn refusal(
    py: Python<'_>,
    cell: &PyOnceLock<Py<PyType>>,
    name: &str,
    details: impl PyErrArguments + 'static,
) -> PyErr {
    match cell.import(py, ERRORS_MODULE, name) {
        Ok(ty) => PyErr::from_type(ty.clone(), details),
        Err(err) => err,
    }
}

/// A shared file that cannot be used: PermissionError for another user's or a
/// world-writable file, OSError for the file system, ValueError for a corrupt file or one
/// created with other settings.
pub fn shared_error(err: SharedError) -> PyErr {
    let message = err.to_string();
    match err {
        SharedError::NotOwner { .. } | SharedError::Permissions { .. } => {
            PyPermissionError::new_err(message)
        }
        SharedError::Io { source, .. } => match source.raw_os_error() {
            Some(errno) => PyOSError::new_err((errno, message)),
            None => PyOSError::new_err(message),
        },
        _ => PyValueError::new_err(message),
    }
}

/// The error for every call on a shared object whose file was truncated under this
/// process (its memory now holds a state that refuses everything: see `sigbus`).
#[cold]
pub fn lost_error(path: &Path, what: &str) -> PyErr {
    PyOSError::new_err(format!(
        "shared file {} was truncated under this process: the {what}'s shared state is \
         lost; remove the file and recreate the {what}",
        path.display()
    ))
}

/// What a health check reports about a shared object's file: None while it is the file
/// this process mapped, else what happened to it.
pub fn shared_file_problem<T: shared::Layout>(
    region: Option<&Region<T>>,
    what: &str,
) -> Option<String> {
    let region = region?;
    if region.lost() {
        return Some(format!(
            "shared file {} was truncated under this process: the {what}'s shared state is lost",
            region.path().display()
        ));
    }
    region.detached().then(|| {
        format!(
            "shared file {} was deleted or replaced: processes started since use a \
             different {what} than this one",
            region.path().display()
        )
    })
}
