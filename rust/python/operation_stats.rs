//! `OperationStats`: the counters and latency histogram of one operation.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyType};

use crate::clock::{nanos_to_seconds, seconds_to_nanos};
use crate::stats::OperationStats;

/// Counters and the latency histogram of one operation, read by the Prometheus collector.
#[pyclass(
    frozen,
    weakref,
    module = "peak_resilience._native",
    name = "OperationStats"
)]
pub struct PyOperationStats {
    pub stats: OperationStats,
    name: Py<PyString>,
    /// The exception types the failure table names, kept alive as long as the table: a
    /// type is keyed by its address, which a type made later could otherwise reuse and
    /// be counted under the freed one's name. At most `FAILURE_KINDS` of them.
    named_types: Mutex<Vec<Py<PyType>>>,
}

impl PyOperationStats {
    /// Records a guarded call that raised `err` after `nanos`.
    pub fn record_failed_call(&self, py: Python<'_>, nanos: u64, err: &PyErr) {
        let ty = err.get_type(py);
        self.stats
            .record_failed_call(nanos, ty.as_ptr() as usize, || {
                self.named_types
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(ty.clone().unbind());
                ty.name()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "Exception".to_owned())
            });
    }
}

/// A key for a failure recorded by name: odd, so it never equals a type's address.
fn name_key(name: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    (hasher.finish() as usize) | 1
}

#[pymethods]
impl PyOperationStats {
    #[new]
    fn new(name: Bound<'_, PyString>) -> Self {
        PyOperationStats {
            stats: OperationStats::default(),
            name: name.unbind(),
            named_types: Mutex::new(Vec::new()),
        }
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// Records one call's duration in seconds.
    fn record_latency(&self, seconds_: f64) -> PyResult<()> {
        let nanos = seconds_to_nanos(seconds_).ok_or_else(|| {
            PyValueError::new_err(format!(
                "latency must be a non-negative finite number of seconds, got {seconds_}"
            ))
        })?;
        self.stats.record_latency(nanos);
        Ok(())
    }

    fn record_success(&self) {
        self.stats.record_success();
    }

    /// Whether guards record into these stats (the module's `metrics_enabled`).
    #[getter]
    fn enabled(&self) -> bool {
        self.stats.enabled()
    }

    fn set_enabled(&self, enabled: bool) {
        self.stats.set_enabled(enabled);
    }

    /// Counts one failure of the exception type named `error_type`.
    fn record_failure(&self, error_type: &str) {
        self.stats
            .record_failure(name_key(error_type), || error_type.to_owned());
    }

    /// {"buckets": cumulative counts per bound (last +Inf), "sum": seconds,
    ///  "successes": n, "failures": {error_type: n}, "folded_failures": n (in "other"),
    ///  "min"/"max": seconds of the shortest/longest call, None before the first}
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snap = self.stats.snapshot();
        let out = PyDict::new(py);
        out.set_item("buckets", PyList::new(py, snap.cumulative)?)?;
        out.set_item("sum", nanos_to_seconds(snap.sum_nanos))?;
        out.set_item("successes", snap.successes)?;
        let failures = PyDict::new(py);
        for (name, count) in snap.failures {
            // A type recorded both by class and by name appears once, summed.
            let previous: u64 = failures
                .get_item(&name)?
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or(0);
            failures.set_item(name, previous + count)?;
        }
        out.set_item("failures", failures)?;
        out.set_item("folded_failures", snap.folded_failures)?;
        out.set_item("min", snap.min_nanos.map(nanos_to_seconds))?;
        out.set_item("max", snap.max_nanos.map(nanos_to_seconds))?;
        Ok(out)
    }
}
