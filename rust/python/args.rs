//! Argument checks: every bad value is a ValueError or TypeError that names the parameter
//! and the value.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString, PyTuple};

use crate::bucket::{
    check_windows, Kind, Quota, QuotaError, WindowsError, MAX_SLIDING, MAX_WINDOWS,
};
use crate::clock::{duration_label, seconds_to_nanos, Clock};
use crate::remote::OnBackendError;

use super::manual_clock::PyManualClock;

pub fn reject_bool(value: &Bound<'_, PyAny>, name: &str) -> PyResult<()> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a number, got {}",
            value.repr()?
        )));
    }
    Ok(())
}

pub fn positive_int(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    reject_bool(value, name)?;
    if !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {}",
            value.repr()?
        )));
    }
    match value.extract::<i128>() {
        Ok(n) if n >= 1 && n <= u64::MAX as i128 => Ok(n as u64),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a positive integer, got {}",
            value.repr()?
        ))),
    }
}

/// A non-negative int (a count of tokens used or actually spent).
pub fn count(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    reject_bool(value, name)?;
    value.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative int, got {}",
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })
}

pub fn seconds(value: &Bound<'_, PyAny>, name: &str, allow_zero: bool) -> PyResult<u64> {
    reject_bool(value, name)?;
    if !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number of seconds, got {}",
            value.repr()?
        )));
    }
    let secs: f64 = value.extract()?;
    match seconds_to_nanos(secs) {
        Some(nanos) if nanos > 0 || (allow_zero && secs == 0.0) => Ok(nanos),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a {} finite number of seconds, got {}",
            if allow_zero {
                "non-negative"
            } else {
                "positive"
            },
            value.repr()?
        ))),
    }
}

pub fn number(value: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    reject_bool(value, name)?;
    if !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number, got {}",
            value.repr()?
        )));
    }
    value.extract()
}

pub fn cost_of(cost: i64) -> PyResult<u64> {
    u64::try_from(cost).map_err(|_| PyValueError::new_err(format!("cost must be >= 0, got {cost}")))
}

/// The argument if given and not None.
pub fn given<'a, 'py>(value: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    value.filter(|v| !v.is_none())
}

pub fn clock_from(clock: Option<&Bound<'_, PyAny>>) -> PyResult<Clock> {
    match given(clock) {
        None => Ok(Clock::Monotonic),
        Some(obj) => match obj.cast::<PyManualClock>() {
            Ok(manual) => Ok(Clock::Manual(manual.get().clock.clone())),
            Err(_) => Err(PyTypeError::new_err(format!(
                "clock must be a peak_resilience.testing.ManualClock or None, got {}",
                obj.repr()?
            ))),
        },
    }
}

/// `priority=None | "normal" | "high"`: whether the call may use the reserve.
#[inline]
pub fn is_high(priority: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let Some(p) = priority else {
        return Ok(false);
    };
    if p.is_none() {
        return Ok(false);
    }
    if let Ok(s) = p.cast::<PyString>() {
        match s.to_str()? {
            "high" => return Ok(true),
            "normal" => return Ok(false),
            _ => {}
        }
    }
    Err(PyValueError::new_err(format!(
        "priority must be \"high\" or \"normal\" (or None), got {}",
        p.repr()?
    )))
}

/// `on_backend_error`: what a call gets while the remote store cannot be reached.
pub fn on_backend_error(value: Option<&Bound<'_, PyAny>>) -> PyResult<OnBackendError> {
    let Some(value) = given(value) else {
        return Ok(OnBackendError::Local);
    };
    value
        .cast::<PyString>()
        .ok()
        .and_then(|s| s.to_str().ok().and_then(OnBackendError::parse))
        .ok_or_else(|| {
            let names: Vec<String> = OnBackendError::NAMES
                .iter()
                .map(|(n, _)| format!("'{n}'"))
                .collect();
            PyValueError::new_err(format!(
                "on_backend_error must be one of {}, got {}",
                names.join(", "),
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })
}

/// A path argument (str or os.PathLike), or None; `what` says what it must be.
pub fn path_or_none(
    value: Option<&Bound<'_, PyAny>>,
    name: &str,
    what: &str,
) -> PyResult<Option<PathBuf>> {
    match given(value) {
        Some(p) => match p.extract::<PathBuf>() {
            Ok(path) if !path.as_os_str().is_empty() => Ok(Some(path)),
            _ => Err(PyTypeError::new_err(format!(
                "{name} must be {what} (str or os.PathLike) or None, got {}",
                p.repr()?
            ))),
        },
        None => Ok(None),
    }
}

/// A name that can become a Prometheus label value: a non-empty str that encodes as
/// UTF-8 (a lone surrogate would break every later scrape), or a ValueError naming
/// `argument`.
pub fn label<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    argument: &str,
) -> PyResult<&'a Bound<'py, PyString>> {
    let Ok(text) = value.cast::<PyString>() else {
        return Err(PyValueError::new_err(format!(
            "{argument} must be a non-empty str, got {}",
            value.repr()?
        )));
    };
    match text.to_str() {
        Ok(s) if !s.is_empty() => Ok(text),
        Ok(_) => Err(PyValueError::new_err(format!(
            "{argument} must be a non-empty str, got ''"
        ))),
        Err(_) => Err(PyValueError::new_err(format!(
            "{argument} must be text that encodes as UTF-8 (no lone surrogates), got {}",
            value.repr()?
        ))),
    }
}

/// A user-given name, or `<prefix>-<n>` for an unnamed object.
pub fn name_or(
    py: Python<'_>,
    name: Option<&Bound<'_, PyAny>>,
    prefix: &str,
    seq: &AtomicU64,
) -> PyResult<Py<PyString>> {
    match given(name) {
        Some(n) => label(n, "name").map(|s| s.clone().unbind()),
        None => {
            let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(PyString::new(py, &format!("{prefix}-{n}")).unbind())
        }
    }
}

/// A window's kind by name: "bucket" (GCRA), "fixed" or "sliding".
pub fn kind_from(value: &Bound<'_, PyAny>) -> PyResult<Kind> {
    value
        .cast::<PyString>()
        .ok()
        .and_then(|s| s.to_str().ok().and_then(Kind::parse))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "a window's kind must be 'bucket', 'fixed' or 'sliding', got {}",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })
}

pub fn quota_from(
    max_requests: &Bound<'_, PyAny>,
    window_seconds: &Bound<'_, PyAny>,
    burst: Option<&Bound<'_, PyAny>>,
    kind: Kind,
) -> PyResult<Quota> {
    let max = positive_int(max_requests, "max_requests")?;
    let window = seconds(window_seconds, "window_seconds", false)?;
    let burst = match given(burst) {
        Some(b) => positive_int(b, "burst")?,
        None => max,
    };
    if kind != Kind::Bucket {
        if burst != max {
            return Err(PyValueError::new_err(format!(
                "a {} window admits max_requests={max} per window and has no burst of its \
                 own: burst={burst} applies to token-bucket windows only",
                kind.name()
            )));
        }
        return Quota::counted(kind, max, window).map_err(|err| match err {
            QuotaError::SlidingTooLarge => PyValueError::new_err(format!(
                "a sliding window admits at most {MAX_SLIDING} requests (it logs each one), \
                 got {max} per {}: use a fixed window or a token bucket for larger budgets",
                duration_label(window)
            )),
            _ => PyValueError::new_err(format!(
                "max_requests={max} is out of range for a {} window",
                kind.name()
            )),
        });
    }
    Quota::per_window(max, window, burst).map_err(|err| match err {
        QuotaError::OutOfRange => PyValueError::new_err(format!(
            "max_requests={max} per window_seconds={} with burst={burst} is out of range: \
             at most one request per nanosecond, and burst * interval must fit in 584 years",
            window_seconds
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )),
        // Zero values were refused above with the parameter's own name.
        _ => PyValueError::new_err(format!("invalid quota: {err:?}")),
    })
}

/// A bucket's windows as checked arguments.
pub struct Windows {
    pub quotas: Vec<Quota>,
    /// (max_requests, window ns) as given, for reporting.
    pub limits: Vec<(u64, u64)>,
    pub reserve: u64,
}

/// Each window's kind from `kinds` (a sequence of "bucket" | "fixed" | "sliding", the
/// first window's first), or every window a token bucket when None.
fn kinds_from(kinds: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Kind>> {
    let Some(kinds) = given(kinds) else {
        return Ok(Vec::new());
    };
    if kinds.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "kinds must be a list of window kinds like ['fixed'], got {}",
            kinds.repr()?
        )));
    }
    kinds.try_iter()?.map(|k| kind_from(&k?)).collect()
}

/// The first window from `max_requests`/`window_seconds`/`burst`, the others from
/// `windows` (a sequence of `(max_requests, window_seconds)` or
/// `(max_requests, window_seconds, burst)`), how each counts from `kinds` (one per
/// window; None: every one a token bucket), and the priority reserve.
pub fn windows_from(
    max_requests: &Bound<'_, PyAny>,
    window_seconds: &Bound<'_, PyAny>,
    burst: Option<&Bound<'_, PyAny>>,
    more: Option<&Bound<'_, PyAny>>,
    kinds: Option<&Bound<'_, PyAny>>,
    reserve: Option<&Bound<'_, PyAny>>,
) -> PyResult<Windows> {
    let kinds = kinds_from(kinds)?;
    let kind = |i: usize| kinds.get(i).copied().unwrap_or_default();
    let mut quotas = vec![quota_from(max_requests, window_seconds, burst, kind(0))?];
    let mut limits = vec![(
        positive_int(max_requests, "max_requests")?,
        seconds(window_seconds, "window_seconds", false)?,
    )];
    if let Some(more) = given(more) {
        for item in more.try_iter()? {
            let item = item?;
            let shape = || {
                PyTypeError::new_err(format!(
                    "each extra window must be a (max_requests, window_seconds[, burst]) tuple, got {}",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            };
            let parts = item.cast::<PyTuple>().map_err(|_| shape())?;
            if !(2..=3).contains(&parts.len()) {
                return Err(PyValueError::new_err(shape().value(item.py()).to_string()));
            }
            let burst = if parts.len() == 3 {
                Some(parts.get_item(2)?)
            } else {
                None
            };
            quotas.push(quota_from(
                &parts.get_item(0)?,
                &parts.get_item(1)?,
                burst.as_ref(),
                kind(quotas.len()),
            )?);
            limits.push((
                positive_int(&parts.get_item(0)?, "max_requests")?,
                seconds(&parts.get_item(1)?, "window_seconds", false)?,
            ));
        }
    }
    if !kinds.is_empty() && kinds.len() != quotas.len() {
        return Err(PyValueError::new_err(format!(
            "kinds names {} window kind(s) for {} window(s): give one per window",
            kinds.len(),
            quotas.len()
        )));
    }
    let reserve = match given(reserve) {
        None => 0,
        Some(r) if r.extract::<i64>().ok() == Some(0) && !r.is_instance_of::<PyBool>() => 0,
        Some(r) => positive_int(r, "priority_reserve")?,
    };
    checked_windows(quotas, limits, reserve)
}

/// Windows and a reserve, checked together (`check_windows`), with the error naming the
/// window the reserve does not fit.
pub fn checked_windows(
    quotas: Vec<Quota>,
    limits: Vec<(u64, u64)>,
    reserve: u64,
) -> PyResult<Windows> {
    check_windows(&quotas, reserve).map_err(|err| match err {
        WindowsError::Count(n) => PyValueError::new_err(format!(
            "a rate limiter holds 1 to {MAX_WINDOWS} windows, got {n}"
        )),
        WindowsError::ReserveTooLarge { window, burst } => PyValueError::new_err(format!(
            "priority_reserve={reserve} leaves normal calls no token in window {} \
             (burst {burst}): it must be smaller than every window's burst",
            duration_label(limits[window].1)
        )),
        WindowsError::SlidingTooLarge(total) => PyValueError::new_err(format!(
            "the sliding windows of one budget admit at most {MAX_SLIDING} requests between \
             them (each one is logged), got {total}"
        )),
    })?;
    Ok(Windows {
        quotas,
        limits,
        reserve,
    })
}
