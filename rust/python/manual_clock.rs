//! `ManualClock`: the test clock as a Python class.

use pyo3::prelude::*;

use crate::clock::{nanos_to_seconds, ManualClock};

use super::args::seconds;

/// A clock that only moves when a test advances it; pass it as `clock=` so that no test
/// has to sleep to see a bucket refill or a breaker recover. Copies share one instant.
#[pyclass(frozen, module = "peak_resilience._native", name = "ManualClock")]
pub struct PyManualClock {
    pub clock: ManualClock,
}

#[pymethods]
impl PyManualClock {
    #[new]
    #[pyo3(signature = (start=None))]
    fn new(start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = match start {
            Some(s) => seconds(s, "start", true)?,
            None => 0,
        };
        Ok(PyManualClock {
            clock: ManualClock::new(start),
        })
    }

    /// The clock's current reading in seconds.
    fn now(&self) -> f64 {
        nanos_to_seconds(self.clock.now())
    }

    /// Moves the clock forward by `seconds`.
    fn advance(&self, seconds_: &Bound<'_, PyAny>) -> PyResult<()> {
        self.clock.advance(seconds(seconds_, "seconds", true)?);
        Ok(())
    }

    /// A stand-in for `time.sleep` that advances this clock instead of waiting.
    fn sleep(&self, seconds_: &Bound<'_, PyAny>) -> PyResult<()> {
        self.advance(seconds_)
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(now={})", nanos_to_seconds(self.clock.now()))
    }
}
