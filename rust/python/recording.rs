//! The process-wide switches that every guard reads: recording latency and outcomes
//! (`metrics_enabled`), and handing refusals to the DEBUG rejection log.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;

use crate::stats;

/// Turns the recording of latency and outcomes by every guard on or off (`metrics_enabled`).
#[pyfunction]
fn set_recording_enabled(enabled: bool) {
    stats::set_recording(enabled);
}

/// Whether guards record latency and outcomes.
#[pyfunction]
fn recording_enabled() -> bool {
    stats::recording()
}

/// Whether refused calls are handed to the guards' `on_reject` hooks. Kept in line with
/// the rejection loggers' DEBUG level by `peak_resilience._logging`.
static REJECTION_LOG: AtomicBool = AtomicBool::new(false);

/// Whether the per-refusal hook is on.
#[inline]
pub fn rejection_log_on() -> bool {
    REJECTION_LOG.load(Ordering::Relaxed)
}

/// Turns the per-refusal hook (the DEBUG rejection log) on or off.
#[pyfunction]
fn set_rejection_log_enabled(enabled: bool) {
    REJECTION_LOG.store(enabled, Ordering::Relaxed);
}

/// Whether the per-refusal hook is on.
#[pyfunction]
fn rejection_log_enabled() -> bool {
    rejection_log_on()
}

pub fn add_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_recording_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(recording_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(set_rejection_log_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(rejection_log_enabled, m)?)?;
    Ok(())
}
