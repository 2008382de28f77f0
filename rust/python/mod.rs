//! The PyO3 binding: one file per Python class, converting arguments, calling the core
//! and raising the Python exceptions; the rules live in the core files.
//!
//! Hot methods (`acquire`, `allow`, calling a guarded function) take positional arguments,
//! return plain values and never release the GIL: the work is nanoseconds.

mod args;
mod async_guard;
mod bulkhead;
mod circuit_breaker;
mod errors;
mod guard;
mod manual_clock;
mod operation_stats;
mod rate_limiter;
mod recording;
mod registry;
mod reservation;
mod retry;
mod shared_files;
mod store;
mod token_bucket;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::breaker::{MAX_FAILURE_THRESHOLD, MAX_HALF_OPEN_CALLS};
use crate::clock::nanos_to_seconds;
use crate::stats::LATENCY_BOUNDS;

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<manual_clock::PyManualClock>()?;
    m.add_class::<token_bucket::PyTokenBucket>()?;
    m.add_class::<rate_limiter::PyRateLimiter>()?;
    m.add_class::<reservation::Reservation>()?;
    m.add_class::<circuit_breaker::PyCircuitBreaker>()?;
    m.add_class::<operation_stats::PyOperationStats>()?;
    m.add_class::<bulkhead::PyBulkhead>()?;
    m.add_class::<retry::PyRetry>()?;
    m.add_class::<registry::PyRegistry>()?;
    guard::add_to(m)?;
    async_guard::add_to(m)?;
    recording::add_functions(m)?;
    shared_files::add_functions(m)?;
    let bounds: Vec<f64> = LATENCY_BOUNDS
        .iter()
        .map(|n| nanos_to_seconds(*n))
        .collect();
    m.add("LATENCY_BOUNDS", PyTuple::new(m.py(), bounds)?)?;
    m.add("MAX_HALF_OPEN_CALLS", MAX_HALF_OPEN_CALLS)?;
    m.add("MAX_FAILURE_THRESHOLD", MAX_FAILURE_THRESHOLD)?;
    // backend="shared" needs a host-wide clock and mmap: Unix builds, not `peak_portable`.
    m.add("SHARED_SUPPORTED", cfg!(all(unix, not(peak_portable))))?;
    Ok(())
}
