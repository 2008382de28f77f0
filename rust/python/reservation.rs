//! `Reservation`: tokens taken on an estimate, settled with the real cost.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::bucket::{Decision, Taken};
use crate::reservation::{Adjustment, Lifecycle, Stage};

use super::args::count;
use super::token_bucket::PyTokenBucket;

static RESERVATION_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Takes `cost` tokens from `bucket` as an estimate: a reservation, or None when refused.
pub fn reserve_on(
    bucket: &Bound<'_, PyTokenBucket>,
    cost: u64,
    high: bool,
    limiter: Option<Py<PyString>>,
) -> PyResult<Option<Reservation>> {
    let b = bucket.get();
    // A disabled bucket admits without taking: its reservation has nothing to settle.
    let charged = b.is_enabled();
    let (decision, taken) = b.reserve_lane(bucket.py(), cost, high)?;
    match decision {
        Decision::Admitted => Ok(Some(Reservation {
            bucket: bucket.clone().unbind(),
            limiter,
            cost,
            charged,
            taken,
            id: RESERVATION_SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1,
            lifecycle: Lifecycle::default(),
        })),
        Decision::Rejected { .. } => Ok(None),
        Decision::Impossible => Err(b.impossible(cost)),
    }
}

/// Tokens taken now on an estimate, settled once the response says what the call cost.
#[pyclass(frozen, module = "peak_resilience._native", name = "Reservation")]
pub struct Reservation {
    bucket: Py<PyTokenBucket>,
    limiter: Option<Py<PyString>>,
    cost: u64,
    charged: bool,
    /// What the take left in each window: the refund gives back no more than it owes.
    taken: Taken,
    id: u64,
    lifecycle: Lifecycle,
}

impl Reservation {
    fn describe(&self, py: Python<'_>) -> String {
        match &self.limiter {
            Some(name) => format!(
                "reservation #{} of limiter {} (cost {})",
                self.id,
                name.bind(py)
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                self.cost
            ),
            None => format!("reservation #{} (cost {})", self.id, self.cost),
        }
    }

    fn apply(&self, py: Python<'_>, outcome: Result<Adjustment, Stage>) -> PyResult<()> {
        let adjustment = outcome.map_err(|was| {
            PyRuntimeError::new_err(format!(
                "{} was already {}: a reservation is settled or cancelled once",
                self.describe(py),
                was.name()
            ))
        })?;
        if !self.charged {
            return Ok(());
        }
        let bucket = self.bucket.get();
        match adjustment {
            Adjustment::None => {}
            Adjustment::Charge(n) => bucket.adjust(py, n, true),
            Adjustment::Refund(n) => bucket.give_back(py, n, &self.taken),
        }
        Ok(())
    }
}

#[pymethods]
impl Reservation {
    /// The call really cost `actual`: charges the difference (forced, the exchange has
    /// counted it: the bucket may go into debt) or refunds it (never beyond full).
    fn settle(&self, py: Python<'_>, actual: &Bound<'_, PyAny>) -> PyResult<()> {
        let actual = count(actual, "actual")?;
        self.apply(py, self.lifecycle.settle(self.cost, actual))
    }

    /// The call did not happen: refunds the whole estimate.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.apply(py, self.lifecycle.cancel(self.cost))
    }

    /// The estimate taken.
    #[getter]
    fn cost(&self) -> u64 {
        self.cost
    }

    /// "open", "settled" or "cancelled".
    #[getter]
    fn state(&self) -> &'static str {
        self.lifecycle.stage().name()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("<{}, {}>", self.describe(py), self.state())
    }
}
