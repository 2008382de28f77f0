//! The PyO3 binding: converts arguments, raises the Python exceptions, and nothing else.
//!
//! Hot methods (`acquire`, `allow`, calling a guarded function) take positional arguments,
//! return plain values and never release the GIL: the work is nanoseconds. The exception
//! classes live in `peak_resilience.errors` and are looked up once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyException, PyOSError, PyPermissionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::breaker::{
    Admission, Breaker, BreakerSettings, BreakerState, Transition, Window, MAX_HALF_OPEN_CALLS,
    STATES,
};
use crate::bucket::{
    check_windows, BucketState, Decision, Quota, QuotaError, TokenBucket, WindowsError, MAX_WINDOWS,
};
use crate::clock::{nanos_to_seconds, seconds_to_nanos, Clock, ManualClock};
use crate::shared::{self, Region, SharedError};
use crate::stats::{self, OperationStats, LATENCY_BOUNDS};

static CIRCUIT_BREAKER_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static RATE_LIMIT_EXCEEDED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
const ERRORS_MODULE: &str = "peak_resilience.errors";

// ---------------------------------------------------------------------------------------
// Argument checks: every bad value is a ValueError that names the parameter and the value.

fn reject_bool(value: &Bound<'_, PyAny>, name: &str) -> PyResult<()> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a number, got {}",
            value.repr()?
        )));
    }
    Ok(())
}

fn positive_int(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
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

fn seconds(value: &Bound<'_, PyAny>, name: &str, allow_zero: bool) -> PyResult<u64> {
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

fn cost_of(cost: i64) -> PyResult<u64> {
    u64::try_from(cost).map_err(|_| PyValueError::new_err(format!("cost must be >= 0, got {cost}")))
}

fn clock_from(clock: Option<&Bound<'_, PyAny>>) -> PyResult<Clock> {
    match clock {
        None => Ok(Clock::Monotonic),
        Some(obj) if obj.is_none() => Ok(Clock::Monotonic),
        Some(obj) => match obj.cast::<PyManualClock>() {
            Ok(manual) => Ok(Clock::Manual(manual.get().clock.clone())),
            Err(_) => Err(PyTypeError::new_err(format!(
                "clock must be a peak_resilience.testing.ManualClock or None, got {}",
                obj.repr()?
            ))),
        },
    }
}

fn quota_from(
    max_requests: &Bound<'_, PyAny>,
    window_seconds: &Bound<'_, PyAny>,
    burst: Option<&Bound<'_, PyAny>>,
) -> PyResult<Quota> {
    let max = positive_int(max_requests, "max_requests")?;
    let window = seconds(window_seconds, "window_seconds", false)?;
    let burst = match burst {
        Some(b) if !b.is_none() => positive_int(b, "burst")?,
        _ => max,
    };
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

/// A shared file that cannot be used: PermissionError for another user's or a
/// world-writable file, OSError for the file system, ValueError for a corrupt file or one
/// created with other settings.
fn shared_error(err: SharedError) -> PyErr {
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
fn lost_error(path: &Path, what: &str) -> PyErr {
    PyOSError::new_err(format!(
        "shared file {} was truncated under this process: the {what}'s shared state is \
         lost; remove the file and recreate the {what}",
        path.display()
    ))
}

/// What a health check reports about a shared object's file: None while it is the file
/// this process mapped, else what happened to it.
fn shared_file_problem<T: shared::Layout>(
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

fn shared_path(shared: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<PathBuf>> {
    match shared {
        Some(p) if !p.is_none() => match p.extract::<PathBuf>() {
            Ok(path) if !path.as_os_str().is_empty() => Ok(Some(path)),
            _ => Err(PyTypeError::new_err(format!(
                "shared must be the path of the {what}'s shared file (str or os.PathLike) or None, got {}",
                p.repr()?
            ))),
        },
        _ => Ok(None),
    }
}

/// A name as it can stand in a file name: every byte outside `A-Za-z0-9_-` as `%XX`, so that
/// two different names never map to one file (`_shared.file_component` in Python alike).
fn file_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The shared file of a limiter's bucket: `<prefix>.default.bucket` or
/// `<prefix>.endpoint.<name>.bucket`.
fn bucket_file(prefix: &Path, endpoint: Option<&str>) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    match endpoint {
        None => name.push(".default.bucket"),
        Some(e) => name.push(format!(".endpoint.{}.bucket", file_component(e))),
    }
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------

/// A clock that only moves when a test advances it; pass it as `clock=` so that no test
/// has to sleep to see a bucket refill or a breaker recover. Copies share one instant.
#[pyclass(frozen, module = "peak_resilience._native", name = "ManualClock")]
pub struct PyManualClock {
    clock: ManualClock,
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

// ---------------------------------------------------------------------------------------

/// One token bucket (GCRA): `max_requests` per `window_seconds`, holding `burst` tokens.
#[pyclass(
    frozen,
    weakref,
    module = "peak_resilience._native",
    name = "TokenBucket"
)]
pub struct PyTokenBucket {
    core: TokenBucket,
    max_requests: AtomicU64,
    window: AtomicU64,
    enabled: AtomicBool,
    /// The shared file the state lives in (None: in this process). Never read per call:
    /// `core` already points into the mapping.
    shared: Option<Region<BucketState>>,
    /// Every window as given (max_requests, window ns), the first first. Never read per call.
    limits: Mutex<Vec<(u64, u64)>>,
}

impl PyTokenBucket {
    /// A bucket in this process, or in the shared file at `shared`.
    fn build(
        quota: Quota,
        max_requests: u64,
        window: u64,
        clock: Clock,
        shared: Option<&Path>,
    ) -> PyResult<Self> {
        PyTokenBucket::build_windows(
            &Windows {
                quotas: vec![quota],
                limits: vec![(max_requests, window)],
                reserve: 0,
            },
            clock,
            shared,
        )
    }

    /// A bucket of one or more windows, all or nothing.
    fn build_windows(windows: &Windows, clock: Clock, shared: Option<&Path>) -> PyResult<Self> {
        let (core, shared) = match shared {
            None => (
                TokenBucket::with_windows(&windows.quotas, windows.reserve, clock),
                None,
            ),
            Some(path) => {
                let (core, region) =
                    shared::shared_windows(path, &windows.quotas, windows.reserve, clock)
                        .map_err(shared_error)?;
                (core, Some(region))
            }
        };
        let (max_requests, window) = windows.limits[0];
        Ok(PyTokenBucket {
            core,
            max_requests: AtomicU64::new(max_requests),
            window: AtomicU64::new(window),
            enabled: AtomicBool::new(true),
            shared,
            limits: Mutex::new(windows.limits.clone()),
        })
    }

    #[inline(always)]
    fn decide_lane(&self, cost: u64, high: bool) -> Decision {
        if !self.enabled.load(Ordering::Relaxed) {
            return Decision::Admitted;
        }
        let now = self.core.clock().now();
        self.core.acquire_at(cost, now, high)
    }

    fn impossible(&self, cost: u64) -> PyErr {
        // A truncated file's bucket refuses every cost as impossible: say why instead.
        if let Some(region) = self.shared.as_ref().filter(|r| r.lost()) {
            return lost_error(region.path(), "rate limiter");
        }
        let bursts: Vec<u64> = self.core.quotas().iter().map(|q| q.burst).collect();
        let burst = bursts.iter().min().copied().unwrap_or(0);
        let reserve = self.core.reserve();
        let mut message =
            format!("cost {cost} is larger than the bucket can ever hold (burst {burst}");
        if bursts.len() > 1 {
            message.push_str(&format!(" of the windows' bursts {bursts:?}"));
        }
        if reserve > 0 {
            message.push_str(&format!(
                "; a normal-priority call may use {} of it, {reserve} being reserved for priority=\"high\"",
                burst.saturating_sub(reserve)
            ));
        }
        message.push(')');
        PyValueError::new_err(message)
    }
}

/// A bucket's windows as checked arguments.
struct Windows {
    quotas: Vec<Quota>,
    /// (max_requests, window ns) as given, for reporting.
    limits: Vec<(u64, u64)>,
    reserve: u64,
}

/// The first window from `max_requests`/`window_seconds`/`burst`, the others from
/// `windows` (a sequence of `(max_requests, window_seconds)` or
/// `(max_requests, window_seconds, burst)`), and the priority reserve.
fn windows_from(
    max_requests: &Bound<'_, PyAny>,
    window_seconds: &Bound<'_, PyAny>,
    burst: Option<&Bound<'_, PyAny>>,
    more: Option<&Bound<'_, PyAny>>,
    reserve: Option<&Bound<'_, PyAny>>,
) -> PyResult<Windows> {
    let mut quotas = vec![quota_from(max_requests, window_seconds, burst)?];
    let mut limits = vec![(
        positive_int(max_requests, "max_requests")?,
        seconds(window_seconds, "window_seconds", false)?,
    )];
    if let Some(more) = more.filter(|m| !m.is_none()) {
        for item in more.try_iter()? {
            let item = item?;
            let parts = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "each extra window must be a (max_requests, window_seconds[, burst]) tuple, got {}",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            if !(2..=3).contains(&parts.len()) {
                return Err(PyValueError::new_err(format!(
                    "each extra window must be a (max_requests, window_seconds[, burst]) tuple, got {}",
                    parts.repr()?
                )));
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
            )?);
            limits.push((
                positive_int(&parts.get_item(0)?, "max_requests")?,
                seconds(&parts.get_item(1)?, "window_seconds", false)?,
            ));
        }
    }
    let reserve = match reserve.filter(|r| !r.is_none()) {
        None => 0,
        Some(r) if r.extract::<i64>().ok() == Some(0) && !r.is_instance_of::<PyBool>() => 0,
        Some(r) => positive_int(r, "priority_reserve")?,
    };
    check_windows(&quotas, reserve).map_err(|err| match err {
        WindowsError::Count(n) => PyValueError::new_err(format!(
            "a rate limiter holds 1 to {MAX_WINDOWS} windows, got {n}"
        )),
        WindowsError::ReserveTooLarge { window, burst } => PyValueError::new_err(format!(
            "priority_reserve={reserve} leaves normal calls no token in window {} \
             (burst {burst}): it must be smaller than every window's burst",
            window_label(limits[window].1)
        )),
    })?;
    Ok(Windows {
        quotas,
        limits,
        reserve,
    })
}

/// "60s", "1.5s": how a window is named in messages and metrics labels.
fn window_label(window: u64) -> String {
    let secs = nanos_to_seconds(window);
    if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{secs}s")
    }
}

/// `priority=None | "normal" | "high"`: whether the call may use the reserve.
#[inline]
fn is_high(priority: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
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

#[pymethods]
impl PyTokenBucket {
    #[new]
    #[pyo3(signature = (max_requests, window_seconds, burst=None, clock=None, *, shared=None))]
    fn new(
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        shared: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let quota = quota_from(max_requests, window_seconds, burst)?;
        let max = positive_int(max_requests, "max_requests")?;
        let window = seconds(window_seconds, "window_seconds", false)?;
        let shared = shared_path(shared, "bucket")?;
        PyTokenBucket::build(quota, max, window, clock_from(clock)?, shared.as_deref())
    }

    /// The shared file this bucket lives in, or None for a bucket of this process.
    #[getter]
    fn shared_path(&self) -> Option<PathBuf> {
        self.shared.as_ref().map(|r| r.path().to_owned())
    }

    /// None while the shared file is the one this process mapped (or the bucket is not
    /// shared); else what happened to it (truncated, deleted or replaced). Stats the
    /// file: for health checks.
    fn shared_file_problem(&self) -> Option<String> {
        shared_file_problem(self.shared.as_ref(), "rate limiter")
    }

    /// Takes `cost` tokens if the bucket holds them now (in every window); never waits.
    #[pyo3(signature = (cost=1, /, *, priority=None))]
    fn acquire(&self, cost: i64, priority: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let cost = cost_of(cost)?;
        match self.decide_lane(cost, is_high(priority)?) {
            Decision::Admitted => Ok(true),
            Decision::Rejected { .. } => Ok(false),
            Decision::Impossible => Err(self.impossible(cost)),
        }
    }

    /// Seconds until `cost` tokens are available (0.0 when they are now).
    #[pyo3(signature = (cost=1, /, *, priority=None))]
    fn wait_time(&self, cost: i64, priority: Option<&Bound<'_, PyAny>>) -> PyResult<f64> {
        let cost = cost_of(cost)?;
        let high = is_high(priority)?;
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(0.0);
        }
        match self.core.wait_time_lane(cost, high) {
            Some(nanos) => Ok(nanos_to_seconds(nanos)),
            None => Err(self.impossible(cost)),
        }
    }

    /// Tokens in the bucket now (fractional while one refills).
    #[getter]
    fn tokens_available(&self) -> f64 {
        self.core.tokens_available()
    }

    /// Tokens the bucket holds when full.
    #[getter]
    fn capacity(&self) -> u64 {
        self.core.quota().burst
    }

    #[getter]
    fn max_requests(&self) -> u64 {
        self.max_requests.load(Ordering::Relaxed)
    }

    #[getter]
    fn window_seconds(&self) -> f64 {
        nanos_to_seconds(self.window.load(Ordering::Relaxed))
    }

    /// Acquires admitted so far.
    #[getter]
    fn allowed(&self) -> u64 {
        self.core.allowed()
    }

    /// Acquires rejected so far.
    #[getter]
    fn rejected(&self) -> u64 {
        self.core.rejected()
    }

    #[getter]
    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A disabled bucket admits everything (config `rate_limit_enabled = false`).
    fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Changes the rate in place; tokens already spent stay spent.
    #[pyo3(signature = (max_requests, window_seconds, burst=None))]
    fn set_rate(
        &self,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let quota = quota_from(max_requests, window_seconds, burst)?;
        match &self.shared {
            None => self.core.set_quota(quota),
            Some(region) => shared::set_shared_quota(&self.core, region, quota),
        }
        self.max_requests.store(
            positive_int(max_requests, "max_requests")?,
            Ordering::Relaxed,
        );
        self.window.store(
            seconds(window_seconds, "window_seconds", false)?,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Fills the bucket at once.
    fn refill(&self) {
        self.core.refill();
    }

    // --- issue 8: several windows, reservations, sync, priority, pause -------------------

    /// Every window as `(max_requests, window_seconds, burst)`, the first first.
    #[getter]
    fn windows(&self) -> Vec<(u64, f64, u64)> {
        let limits = self
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        limits
            .iter()
            .zip(self.core.quotas())
            .map(|((max, window), quota)| (*max, nanos_to_seconds(*window), quota.burst))
            .collect()
    }

    /// Each window's name ("60s"), the first first: the `window` label of the metrics.
    #[getter]
    fn window_labels(&self) -> Vec<String> {
        let limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.iter().map(|(_, w)| window_label(*w)).collect()
    }

    /// Tokens available now in each window (the reserve included), the first first.
    fn window_tokens(&self) -> Vec<f64> {
        self.core.window_tokens()
    }

    /// Tokens of every window kept for `priority="high"` acquires.
    #[getter]
    fn priority_reserve(&self) -> u64 {
        self.core.reserve()
    }

    /// Replaces every window and the priority reserve in place. Windows that stay keep
    /// their spent tokens (rescaled); added windows start full.
    #[pyo3(signature = (max_requests, window_seconds, burst=None, *, windows=None, priority_reserve=None))]
    fn set_windows(
        &self,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        windows: Option<&Bound<'_, PyAny>>,
        priority_reserve: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let w = windows_from(
            max_requests,
            window_seconds,
            burst,
            windows,
            priority_reserve,
        )?;
        match &self.shared {
            None => self.core.set_windows(&w.quotas, w.reserve),
            Some(region) => shared::set_shared_windows(&self.core, region, &w.quotas, w.reserve),
        }
        let (max, window) = w.limits[0];
        self.max_requests.store(max, Ordering::Relaxed);
        self.window.store(window, Ordering::Relaxed);
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = w.limits;
        Ok(())
    }

    /// Makes exactly `used` tokens count as spent now in window `window` (its index):
    /// the usage an exchange reports, so that the exchange stays the authority.
    #[pyo3(signature = (used, window=0))]
    fn sync(&self, used: &Bound<'_, PyAny>, window: usize) -> PyResult<()> {
        reject_bool(used, "used")?;
        let used: u64 = used.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "used must be a non-negative int, got {}",
                used.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let count = self.core.quotas().len();
        if window >= count {
            return Err(PyValueError::new_err(format!(
                "window index {window} is out of range: this bucket has {count} window(s)"
            )));
        }
        self.core.sync(window, used);
        Ok(())
    }

    /// Refuses every acquire, high priority included, for `seconds` from now, in every
    /// process sharing the bucket; a shorter pause never shortens a longer one.
    fn pause(&self, seconds_: &Bound<'_, PyAny>) -> PyResult<()> {
        let nanos = seconds(seconds_, "seconds", true)?;
        if nanos > 0 {
            self.core.pause(nanos);
        }
        Ok(())
    }

    /// Charges `cost` tokens in every window unconditionally (the calls happened: the
    /// bucket may go into debt beyond its burst).
    fn charge(&self, cost: i64) -> PyResult<()> {
        self.core.adjust(cost_of(cost)?, true);
        Ok(())
    }

    /// Gives `cost` tokens back to every window (never beyond full).
    fn refund(&self, cost: i64) -> PyResult<()> {
        self.core.adjust(cost_of(cost)?, false);
        Ok(())
    }

    /// Lifts a pause at once.
    fn resume(&self) {
        self.core.pause(0);
    }

    /// Seconds the pause still lasts (0.0: not paused).
    #[getter]
    fn paused_for(&self) -> f64 {
        nanos_to_seconds(self.core.paused_for())
    }

    /// Takes `cost` tokens now as an estimate: a `Reservation` to settle with the real
    /// cost (or cancel), or None when refused (nothing taken).
    #[pyo3(signature = (cost=1, *, priority=None))]
    fn reserve(
        slf: &Bound<'_, Self>,
        cost: i64,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Reservation>> {
        reserve_on(slf, cost_of(cost)?, is_high(priority)?, None)
    }
}

static RESERVATION_SEQUENCE: AtomicU64 = AtomicU64::new(0);
const OPEN: u8 = 0;
const SETTLED: u8 = 1;
const CANCELLED: u8 = 2;

fn reserve_on(
    bucket: &Bound<'_, PyTokenBucket>,
    cost: u64,
    high: bool,
    limiter: Option<Py<PyString>>,
) -> PyResult<Option<Reservation>> {
    let b = bucket.get();
    // A disabled bucket admits without taking: its reservation has nothing to settle.
    let charged = b.enabled.load(Ordering::Relaxed);
    match b.decide_lane(cost, high) {
        Decision::Admitted => Ok(Some(Reservation {
            bucket: bucket.clone().unbind(),
            limiter,
            cost,
            charged,
            id: RESERVATION_SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1,
            state: AtomicU8::new(OPEN),
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
    id: u64,
    state: AtomicU8,
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

    fn close(&self, py: Python<'_>, to: u8) -> PyResult<()> {
        if let Err(was) = self
            .state
            .compare_exchange(OPEN, to, Ordering::AcqRel, Ordering::Acquire)
        {
            let how = if was == SETTLED {
                "settled"
            } else {
                "cancelled"
            };
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "{} was already {how}: a reservation is settled or cancelled once",
                self.describe(py)
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl Reservation {
    /// The call really cost `actual`: charges the difference (forced, the exchange has
    /// counted it: the bucket may go into debt) or refunds it (never beyond full).
    fn settle(&self, py: Python<'_>, actual: &Bound<'_, PyAny>) -> PyResult<()> {
        reject_bool(actual, "actual")?;
        let actual: u64 = actual.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "actual must be a non-negative int, got {}",
                actual.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        self.close(py, SETTLED)?;
        if self.charged && actual != self.cost {
            let core = &self.bucket.get().core;
            if actual > self.cost {
                core.adjust(actual - self.cost, true);
            } else {
                core.adjust(self.cost - actual, false);
            }
        }
        Ok(())
    }

    /// The call did not happen: refunds the whole estimate.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.close(py, CANCELLED)?;
        if self.charged {
            self.bucket.get().core.adjust(self.cost, false);
        }
        Ok(())
    }

    /// The estimate taken.
    #[getter]
    fn cost(&self) -> u64 {
        self.cost
    }

    /// "open", "settled" or "cancelled".
    #[getter]
    fn state(&self) -> &'static str {
        match self.state.load(Ordering::Acquire) {
            OPEN => "open",
            SETTLED => "settled",
            _ => "cancelled",
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("<{}, {}>", self.describe(py), self.state())
    }
}

// ---------------------------------------------------------------------------------------

static LIMITER_SEQUENCE: AtomicU64 = AtomicU64::new(0);
static BREAKER_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn name_or(
    py: Python<'_>,
    name: Option<&Bound<'_, PyAny>>,
    prefix: &str,
    seq: &AtomicU64,
) -> PyResult<Py<PyString>> {
    match name {
        Some(n) if !n.is_none() => match n.cast::<PyString>() {
            Ok(s) if !s.to_str()?.is_empty() => Ok(s.clone().unbind()),
            _ => Err(PyValueError::new_err(format!(
                "name must be a non-empty str, got {}",
                n.repr()?
            ))),
        },
        _ => {
            let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(PyString::new(py, &format!("{prefix}-{n}")).unbind())
        }
    }
}

/// The native half of `peak_resilience.rate_limiter.RateLimiter`: a default bucket and
/// one bucket per added endpoint.
#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "peak_resilience._native",
    name = "RateLimiter"
)]
pub struct PyRateLimiter {
    name: Py<PyString>,
    default: Py<PyTokenBucket>,
    /// Endpoint name -> TokenBucket. A dict, so the lookup uses the str's cached hash.
    endpoints: Py<PyDict>,
    clock: Clock,
    /// Where the buckets' shared files go (`<prefix>.default.bucket`, ...), or None.
    shared: Option<PathBuf>,
}

impl PyRateLimiter {
    #[inline]
    fn bucket<'py>(
        &'py self,
        py: Python<'py>,
        endpoint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTokenBucket>> {
        if let Some(endpoint) = endpoint {
            if let Some(found) = self.endpoints.bind(py).get_item(endpoint)? {
                return Ok(found.cast_into::<PyTokenBucket>()?);
            }
        }
        Ok(self.default.bind(py).clone())
    }
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    #[pyo3(signature = (max_requests, window_seconds, *, burst=None, clock=None, name=None, shared=None,
                        windows=None, priority_reserve=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        shared: Option<&Bound<'_, PyAny>>,
        windows: Option<&Bound<'_, PyAny>>,
        priority_reserve: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let clock = clock_from(clock)?;
        let windows = windows_from(
            max_requests,
            window_seconds,
            burst,
            windows,
            priority_reserve,
        )?;
        let shared = shared_path(shared, "limiter")?;
        let bucket = PyTokenBucket::build_windows(
            &windows,
            clock.clone(),
            shared.as_deref().map(|p| bucket_file(p, None)).as_deref(),
        )?;
        Ok(PyRateLimiter {
            name: name_or(py, name, "limiter", &LIMITER_SEQUENCE)?,
            default: Py::new(py, bucket)?,
            endpoints: PyDict::new(py).unbind(),
            clock,
            shared,
        })
    }

    /// Takes `cost` tokens from the endpoint's bucket (the default bucket for `None` or an
    /// endpoint never added). Returns whether the request may go ahead; never waits.
    #[pyo3(signature = (endpoint=None, cost=1, *, priority=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        endpoint: Option<&Bound<'_, PyAny>>,
        cost: i64,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let cost = cost_of(cost)?;
        let high = match priority {
            None => false,
            Some(p) => is_high(Some(p))?,
        };
        let bucket = self.bucket(py, endpoint)?;
        let bucket = bucket.get();
        match bucket.decide_lane(cost, high) {
            Decision::Admitted => Ok(true),
            Decision::Rejected { .. } => Ok(false),
            Decision::Impossible => Err(bucket.impossible(cost)),
        }
    }

    /// Seconds until `cost` tokens are available on the endpoint's bucket.
    #[pyo3(signature = (endpoint=None, cost=1, *, priority=None))]
    fn get_wait_time(
        &self,
        py: Python<'_>,
        endpoint: Option<&Bound<'_, PyAny>>,
        cost: i64,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<f64> {
        self.bucket(py, endpoint)?.get().wait_time(cost, priority)
    }

    /// Takes `cost` tokens now from the endpoint's bucket as an estimate: a `Reservation`
    /// to settle with the real cost (or cancel), or None when refused (nothing taken).
    #[pyo3(signature = (cost=1, endpoint=None, *, priority=None))]
    fn reserve(
        &self,
        py: Python<'_>,
        cost: i64,
        endpoint: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Reservation>> {
        let bucket = self.bucket(py, endpoint)?;
        reserve_on(
            &bucket,
            cost_of(cost)?,
            is_high(priority)?,
            Some(self.name.clone_ref(py)),
        )
    }

    /// Gives `name` its own bucket of `max_requests` per `window_seconds`, standing on its
    /// own beside the default one. Adding it again changes its rate in place.
    #[pyo3(signature = (name, max_requests, window_seconds, *, burst=None, windows=None, priority_reserve=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_endpoint(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        windows: Option<&Bound<'_, PyAny>>,
        priority_reserve: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = match name.cast::<PyString>() {
            Ok(s) if !s.to_str()?.is_empty() => s,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "endpoint name must be a non-empty str, got {}",
                    name.repr()?
                )))
            }
        };
        let endpoints = self.endpoints.bind(py);
        if let Some(existing) = endpoints.get_item(name)? {
            return existing.cast::<PyTokenBucket>()?.get().set_windows(
                max_requests,
                window_seconds,
                burst,
                windows,
                priority_reserve,
            );
        }
        let windows = windows_from(
            max_requests,
            window_seconds,
            burst,
            windows,
            priority_reserve,
        )?;
        let file = match &self.shared {
            Some(prefix) => Some(bucket_file(prefix, Some(name.to_str()?))),
            None => None,
        };
        let bucket = PyTokenBucket::build_windows(&windows, self.clock.clone(), file.as_deref())?;
        // A limiter paused (say by a 429's Retry-After) keeps every new endpoint paused too.
        let paused = self.default.get().core.paused_for();
        if paused > 0 {
            bucket.core.pause(paused);
        }
        // setdefault: two threads adding the same endpoint at once keep one bucket.
        endpoints.call_method1("setdefault", (name, Py::new(py, bucket)?))?;
        Ok(())
    }

    /// The bucket that `endpoint` draws on.
    #[pyo3(signature = (endpoint=None))]
    fn bucket_for<'py>(
        &'py self,
        py: Python<'py>,
        endpoint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTokenBucket>> {
        self.bucket(py, endpoint)
    }

    /// The default bucket.
    #[getter]
    fn default_bucket(&self, py: Python<'_>) -> Py<PyTokenBucket> {
        self.default.clone_ref(py)
    }

    /// The added endpoints and their buckets, as a new dict.
    fn endpoint_buckets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.endpoints.bind(py).copy()
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }
}

// ---------------------------------------------------------------------------------------

/// The native half of `peak_resilience.resilience.CircuitBreaker`.
#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "peak_resilience._native",
    name = "CircuitBreaker"
)]
pub struct PyCircuitBreaker {
    core: Breaker,
    /// The shared file the state lives in (None: in this process); not read per call.
    shared: Option<Region<BreakerState>>,
    name: Py<PyString>,
    /// Called as listener(name, from_state, to_state) after each transition. Locked only
    /// on a transition, never on the per-call path.
    listener: Mutex<Option<Py<PyAny>>>,
    /// Which exceptions count as failures and which are ignored, and which return values
    /// count as failures: consulted only when set.
    outcomes: OutcomeRules,
}

/// What counts as a failure, beyond "the call raised an Exception".
#[derive(Default)]
struct OutcomeRules {
    /// When set, only these exception classes count as failures (others as successes).
    record: Option<Py<PyTuple>>,
    /// These exception classes count neither way (a trial gives its permit back).
    ignore: Option<Py<PyTuple>>,
    /// Called with a returned value; a true answer makes the call a failure.
    failure_result: Option<Py<PyAny>>,
}

/// How a guarded call counts for its breaker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Success,
    Failure,
    Ignored,
}

fn exception_classes(
    value: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<Option<Py<PyTuple>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let items: Vec<Bound<'_, PyAny>> = if let Ok(ty) = value.cast::<PyType>() {
        vec![ty.clone().into_any()]
    } else {
        value
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "{name} must be an exception class or a tuple of them, got {}",
                    value.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
            .collect::<PyResult<_>>()?
    };
    let base = value.py().get_type::<pyo3::exceptions::PyBaseException>();
    for item in &items {
        let is_class = item
            .cast::<PyType>()
            .map(|t| t.is_subclass(&base).unwrap_or(false))
            .unwrap_or(false);
        if !is_class {
            return Err(PyTypeError::new_err(format!(
                "{name} must hold exception classes, got {}",
                item.repr()?
            )));
        }
    }
    Ok(Some(PyTuple::new(value.py(), items)?.unbind()))
}

fn breaker_settings(
    failure_threshold: &Bound<'_, PyAny>,
    recovery_timeout: &Bound<'_, PyAny>,
    half_open_max_calls: &Bound<'_, PyAny>,
) -> PyResult<BreakerSettings> {
    let half_open = positive_int(half_open_max_calls, "half_open_max_calls")?;
    if half_open > MAX_HALF_OPEN_CALLS {
        return Err(PyValueError::new_err(format!(
            "half_open_max_calls must be at most {MAX_HALF_OPEN_CALLS}, got {half_open}"
        )));
    }
    Ok(BreakerSettings {
        failure_threshold: positive_int(failure_threshold, "failure_threshold")?,
        recovery_timeout: seconds(recovery_timeout, "recovery_timeout", false)?,
        half_open_max_calls: half_open,
        ..BreakerSettings::default()
    })
}

/// The failure-rate, slow-call and back-off keywords, each applied over `settings` when
/// given and not None (so that `set_settings` keeps what it is not told).
struct Policy<'a, 'py> {
    failure_rate_threshold: Option<&'a Bound<'py, PyAny>>,
    minimum_calls: Option<&'a Bound<'py, PyAny>>,
    window_type: Option<&'a Bound<'py, PyAny>>,
    window_size: Option<&'a Bound<'py, PyAny>>,
    slow_call_duration: Option<&'a Bound<'py, PyAny>>,
    backoff_multiplier: Option<&'a Bound<'py, PyAny>>,
    max_recovery_timeout: Option<&'a Bound<'py, PyAny>>,
}

fn given<'a, 'py>(value: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    value.filter(|v| !v.is_none())
}

fn number(value: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    reject_bool(value, name)?;
    if !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number, got {}",
            value.repr()?
        )));
    }
    value.extract()
}

impl Policy<'_, '_> {
    fn apply(&self, mut settings: BreakerSettings) -> PyResult<BreakerSettings> {
        if let Some(rate) = given(self.failure_rate_threshold) {
            let r = number(rate, "failure_rate_threshold")?;
            if !(0.0..=1.0).contains(&r) {
                return Err(PyValueError::new_err(format!(
                    "failure_rate_threshold must be a fraction in (0, 1] (0.5 = half the calls; 0 turns the rate off), got {}",
                    rate.repr()?
                )));
            }
            // 0 turns the rate off; any other fraction is at least one part per million.
            settings.failure_rate_ppm = match r {
                0.0 => 0,
                _ => ((r * 1_000_000.0).round() as u64).max(1),
            };
        }
        if let Some(n) = given(self.minimum_calls) {
            settings.minimum_calls = positive_int(n, "minimum_calls")?;
        }
        let is_time = match given(self.window_type) {
            None => matches!(settings.window, Window::Nanos(_)),
            Some(kind) => match kind.extract::<String>().ok().as_deref() {
                Some("count") => false,
                Some("time") => true,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "window_type must be \"count\" (the last window_size calls) or \"time\" (the last window_size seconds), got {}",
                        kind.repr()?
                    )))
                }
            },
        };
        let was_time = matches!(settings.window, Window::Nanos(_));
        settings.window = match (given(self.window_size), is_time) {
            (Some(size), false) => Window::Calls(positive_int(size, "window_size")?),
            (Some(size), true) => Window::Nanos(seconds(size, "window_size", false)?),
            // A kind changed without a size gets that kind's default size.
            (None, false) if was_time => Window::Calls(100),
            (None, true) if !was_time => Window::Nanos(60 * 1_000_000_000),
            (None, _) => settings.window,
        };
        if let Some(d) = given(self.slow_call_duration) {
            settings.slow_call_duration = seconds(d, "slow_call_duration", false)?;
        }
        if let Some(m) = given(self.backoff_multiplier) {
            let value = number(m, "backoff_multiplier")?;
            if !(value.is_finite() && value >= 1.0) {
                return Err(PyValueError::new_err(format!(
                    "backoff_multiplier must be a finite number >= 1 (1 = no back-off), got {}",
                    m.repr()?
                )));
            }
            settings.backoff_multiplier = value;
        }
        if let Some(cap) = given(self.max_recovery_timeout) {
            settings.max_recovery_timeout = seconds(cap, "max_recovery_timeout", false)?;
        }
        if settings.max_recovery_timeout < settings.recovery_timeout {
            settings.max_recovery_timeout = settings.recovery_timeout;
        }
        Ok(settings)
    }
}

impl PyCircuitBreaker {
    /// Tells the listener about a transition; a listener that raises is reported as
    /// unraisable and never breaks the guarded call.
    #[inline]
    fn notify(&self, py: Python<'_>, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.notify_slow(py, t);
        }
    }

    #[cold]
    fn notify_slow(&self, py: Python<'_>, t: Transition) {
        let listener = match self.listener.lock() {
            Ok(guard) => guard.as_ref().map(|l| l.clone_ref(py)),
            Err(poisoned) => poisoned.into_inner().as_ref().map(|l| l.clone_ref(py)),
        };
        if let Some(listener) = listener {
            if let Err(err) = listener.call1(py, (self.name.clone_ref(py), t.from, t.to)) {
                err.write_unraisable(py, Some(listener.bind(py)));
            }
        }
    }

    #[inline]
    fn enter(&self, py: Python<'_>) -> Admission {
        let (admission, transition) = self.core.enter();
        self.notify(py, transition);
        admission
    }

    #[inline]
    fn succeed(&self, py: Python<'_>, admission: Admission) {
        let transition = self.core.on_success(admission);
        self.notify(py, transition);
    }

    #[inline]
    fn fail(&self, py: Python<'_>, admission: Admission) {
        let transition = self.core.on_failure(admission);
        self.notify(py, transition);
    }

    /// How a raised exception counts: ignored, a failure, or (outside `record_exceptions`)
    /// a success. Without rules: a failure, decided without a Python call.
    #[inline]
    fn judge_error(&self, py: Python<'_>, err: &PyErr) -> Verdict {
        let rules = &self.outcomes;
        if rules.record.is_none() && rules.ignore.is_none() {
            return Verdict::Failure;
        }
        self.judge_error_slow(py, err)
    }

    #[cold]
    fn judge_error_slow(&self, py: Python<'_>, err: &PyErr) -> Verdict {
        let value = err.value(py);
        let is_a = |classes: &Py<PyTuple>| value.is_instance(classes.bind(py)).unwrap_or(false);
        if self.outcomes.ignore.as_ref().is_some_and(is_a) {
            return Verdict::Ignored;
        }
        match &self.outcomes.record {
            Some(record) if !is_a(record) => Verdict::Success,
            _ => Verdict::Failure,
        }
    }

    /// Whether a returned value counts as a failure (`failure_result`); a predicate that
    /// raises is reported as unraisable and the call counts as a success.
    #[inline]
    fn judge_result(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> Verdict {
        match &self.outcomes.failure_result {
            None => Verdict::Success,
            Some(predicate) => match predicate
                .bind(py)
                .call1((value,))
                .and_then(|v| v.is_truthy())
            {
                Ok(true) => Verdict::Failure,
                Ok(false) => Verdict::Success,
                Err(err) => {
                    err.write_unraisable(py, Some(predicate.bind(py)));
                    Verdict::Success
                }
            },
        }
    }

    /// Records a verdict for a call admitted as `admission` that ran `elapsed` ns (None:
    /// not timed).
    #[inline]
    fn settle(&self, py: Python<'_>, admission: Admission, verdict: Verdict, elapsed: Option<u64>) {
        match verdict {
            Verdict::Failure => self.fail(py, admission),
            Verdict::Ignored => self.core.release(admission),
            Verdict::Success => {
                // An untimed call (the common case) reads no slow-call setting at all.
                let slow = elapsed.is_some_and(|e| {
                    let slow = self.core.slow_call_duration();
                    slow != 0 && e >= slow
                });
                if slow {
                    let transition = self.core.on_slow_success(admission);
                    self.notify(py, transition);
                } else {
                    self.succeed(py, admission);
                }
            }
        }
    }

    /// How a call recorded by hand (`record_success` / `record_failure`) was admitted.
    fn inferred_admission(&self, py: Python<'_>) -> Admission {
        // Advance an expired OPEN to HALF_OPEN first, as `allow()` would have.
        self.state_code(py);
        self.core.admission_now()
    }

    /// An error when the shared file was truncated under this process: closing or
    /// re-opening the lost state by hand would make it a breaker of this process alone.
    fn not_lost(&self) -> PyResult<()> {
        match self.shared.as_ref().filter(|r| r.lost()) {
            Some(region) => Err(lost_error(region.path(), "circuit breaker")),
            None => Ok(()),
        }
    }

    /// The CircuitBreakerError for a refused call. Its message is formatted by the Python
    /// class only when asked for: a refusal costs little more than a plain raise.
    #[cold]
    fn rejection(&self, py: Python<'_>, remaining: u64) -> PyErr {
        // A truncated file's breaker is held open: say why instead.
        if let Some(region) = self.shared.as_ref().filter(|r| r.lost()) {
            return lost_error(region.path(), "circuit breaker");
        }
        let details = (self.name.clone_ref(py), nanos_to_seconds(remaining));
        match CIRCUIT_BREAKER_ERROR.import(py, ERRORS_MODULE, "CircuitBreakerError") {
            Ok(ty) => PyErr::from_type(ty.clone(), details),
            Err(err) => err,
        }
    }
}

/// The argument if given and not None, else the default.
fn given_or<'a, 'py>(
    value: Option<&'a Bound<'py, PyAny>>,
    default: &'a Bound<'py, PyAny>,
) -> &'a Bound<'py, PyAny> {
    value.filter(|v| !v.is_none()).unwrap_or(default)
}

fn admission_from(code: u64) -> PyResult<Admission> {
    Admission::from_code(code).ok_or_else(|| {
        PyValueError::new_err(format!(
            "admission must be a code returned by _enter/_admit, got {code}"
        ))
    })
}

#[pymethods]
impl PyCircuitBreaker {
    #[new]
    #[pyo3(signature = (failure_threshold=None, recovery_timeout=None, name=None, half_open_max_calls=None, *, clock=None, shared=None,
                        failure_rate_threshold=None, minimum_calls=None, window_type=None, window_size=None,
                        slow_call_duration=None, backoff_multiplier=None, max_recovery_timeout=None,
                        record_exceptions=None, ignore_exceptions=None, failure_result=None, metrics_only=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        failure_threshold: Option<&Bound<'_, PyAny>>,
        recovery_timeout: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        half_open_max_calls: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        shared: Option<&Bound<'_, PyAny>>,
        failure_rate_threshold: Option<&Bound<'_, PyAny>>,
        minimum_calls: Option<&Bound<'_, PyAny>>,
        window_type: Option<&Bound<'_, PyAny>>,
        window_size: Option<&Bound<'_, PyAny>>,
        slow_call_duration: Option<&Bound<'_, PyAny>>,
        backoff_multiplier: Option<&Bound<'_, PyAny>>,
        max_recovery_timeout: Option<&Bound<'_, PyAny>>,
        record_exceptions: Option<&Bound<'_, PyAny>>,
        ignore_exceptions: Option<&Bound<'_, PyAny>>,
        failure_result: Option<&Bound<'_, PyAny>>,
        metrics_only: bool,
    ) -> PyResult<Self> {
        let five = 5i64.into_pyobject(py)?.into_any();
        let sixty = PyFloat::new(py, 60.0).into_any();
        let one = 1i64.into_pyobject(py)?.into_any();
        let settings = breaker_settings(
            given_or(failure_threshold, &five),
            given_or(recovery_timeout, &sixty),
            given_or(half_open_max_calls, &one),
        )?;
        let settings = Policy {
            failure_rate_threshold,
            minimum_calls,
            window_type,
            window_size,
            slow_call_duration,
            backoff_multiplier,
            max_recovery_timeout,
        }
        .apply(settings)?;
        let failure_result = match given(failure_result) {
            None => None,
            Some(f) if f.is_callable() => Some(f.clone().unbind()),
            Some(f) => {
                return Err(PyTypeError::new_err(format!(
                    "failure_result must be a callable taking the returned value, got {}",
                    f.repr()?
                )))
            }
        };
        let outcomes = OutcomeRules {
            record: exception_classes(record_exceptions, "record_exceptions")?,
            ignore: exception_classes(ignore_exceptions, "ignore_exceptions")?,
            failure_result,
        };
        let clock = clock_from(clock)?;
        let (core, shared) = match shared_path(shared, "breaker")? {
            None => (Breaker::new(settings, clock), None),
            Some(path) => {
                let (core, region) =
                    shared::shared_breaker(&path, settings, clock).map_err(shared_error)?;
                (core, Some(region))
            }
        };
        if metrics_only {
            // Before any listener is set: entering the mode at birth is no transition to log.
            core.set_metrics_only(true);
        }
        Ok(PyCircuitBreaker {
            core,
            shared,
            name: name_or(py, name, "breaker", &BREAKER_SEQUENCE)?,
            listener: Mutex::new(None),
            outcomes,
        })
    }

    /// Whether a call may run now; counts a rejection when not. In HALF_OPEN this takes a
    /// trial permit, so follow it with `record_success()` or `record_failure()`.
    fn allow(&self, py: Python<'_>) -> PyResult<bool> {
        match self.enter(py) {
            Admission::Rejected { .. } => match self.shared.as_ref().filter(|r| r.lost()) {
                Some(region) => Err(lost_error(region.path(), "circuit breaker")),
                None => Ok(false),
            },
            _ => Ok(true),
        }
    }

    /// Records a successful call made after `allow()`.
    fn record_success(&self, py: Python<'_>) {
        let admission = self.inferred_admission(py);
        self.succeed(py, admission);
    }

    /// Records a failed call made after `allow()`.
    fn record_failure(&self, py: Python<'_>) {
        let admission = self.inferred_admission(py);
        self.fail(py, admission);
    }

    /// The state as an int (0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled,
    /// 5 metrics only); an open circuit whose recovery timeout has passed reads (and
    /// becomes) half-open.
    #[getter]
    fn state_code(&self, py: Python<'_>) -> u8 {
        let (state, transition) = self.core.reported_state();
        self.notify(py, transition);
        state
    }

    /// The state machine's own state (0..=4): under METRICS_ONLY, what an enforcing
    /// breaker would be in; otherwise `state_code`.
    #[getter]
    fn shadow_state_code(&self, py: Python<'_>) -> u8 {
        let (state, transition) = self.core.current_state();
        self.notify(py, transition);
        state
    }

    /// Opens the circuit for exactly `seconds` (e.g. an exchange's Retry-After), after
    /// which it half-opens as usual.
    #[pyo3(signature = (seconds))]
    fn open_for(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        let nanos = self::seconds(seconds, "seconds", false)?;
        self.not_lost()?;
        let transition = self.core.open_for(nanos);
        self.notify(py, transition);
        Ok(())
    }

    /// Admits every call (outcomes still counted, no state change) until `reset()`.
    fn disable(&self, py: Python<'_>) {
        let transition = self.core.disable();
        self.notify(py, transition);
    }

    /// Whether the breaker decides but does not enforce (calls it would refuse run, and
    /// are counted in `would_reject_total`).
    #[getter]
    fn metrics_only(&self) -> bool {
        self.core.metrics_only()
    }

    /// Enters or leaves METRICS_ONLY mode (the state machine carries on either way).
    fn set_metrics_only(&self, py: Python<'_>, enabled: bool) {
        let transition = self.core.set_metrics_only(enabled);
        self.notify(py, transition);
    }

    /// Successful calls counted as failures for lasting `slow_call_duration` or longer.
    #[getter]
    fn slow_call_total(&self) -> u64 {
        self.core.slow_calls()
    }

    /// Calls admitted in METRICS_ONLY mode that an enforcing breaker would have refused.
    #[getter]
    fn would_reject_total(&self) -> u64 {
        self.core.would_reject()
    }

    /// Trials failed in a row since the circuit last closed (the back-off exponent).
    #[getter]
    fn failed_trials(&self) -> u64 {
        self.core.failed_trials()
    }

    /// The failure rate over the window now (0.0 with no calls or no rate configured).
    #[getter]
    fn failure_rate(&self) -> f64 {
        match self.core.window_totals() {
            (0, _) => 0.0,
            (calls, failures) => failures as f64 / calls as f64,
        }
    }

    /// (calls, failures) in the failure-rate window now.
    #[getter]
    fn window_counts(&self) -> (u64, u64) {
        self.core.window_totals()
    }

    /// The failure-rate threshold as a fraction, or None when only the streak counts.
    #[getter]
    fn failure_rate_threshold(&self) -> Option<f64> {
        match self.core.settings().failure_rate_ppm {
            0 => None,
            ppm => Some(ppm as f64 / 1_000_000.0),
        }
    }

    #[getter]
    fn minimum_calls(&self) -> u64 {
        self.core.settings().minimum_calls
    }

    /// "count" or "time".
    #[getter]
    fn window_type(&self) -> &'static str {
        match self.core.settings().window {
            Window::Calls(_) => "count",
            Window::Nanos(_) => "time",
        }
    }

    /// Calls (count window) or seconds (time window).
    #[getter]
    fn window_size(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.core.settings().window {
            Window::Calls(n) => n.into_pyobject(py)?.into_any().unbind(),
            Window::Nanos(n) => PyFloat::new(py, nanos_to_seconds(n)).into_any().unbind(),
        })
    }

    /// Seconds from which a successful call counts as a failure, or None.
    #[getter]
    fn slow_call_duration(&self) -> Option<f64> {
        match self.core.settings().slow_call_duration {
            0 => None,
            n => Some(nanos_to_seconds(n)),
        }
    }

    #[getter]
    fn backoff_multiplier(&self) -> f64 {
        self.core.settings().backoff_multiplier
    }

    #[getter]
    fn max_recovery_timeout(&self) -> f64 {
        nanos_to_seconds(self.core.settings().max_recovery_timeout)
    }

    #[getter]
    fn record_exceptions(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.outcomes.record.as_ref().map(|t| t.clone_ref(py))
    }

    #[getter]
    fn ignore_exceptions(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.outcomes.ignore.as_ref().map(|t| t.clone_ref(py))
    }

    #[getter]
    fn failure_result(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.outcomes
            .failure_result
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// How an exception counts for this breaker: "failure", "success" or "ignored".
    fn classify_exception(
        &self,
        py: Python<'_>,
        error: Bound<'_, PyAny>,
    ) -> PyResult<&'static str> {
        if !error.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            return Err(PyTypeError::new_err(format!(
                "error must be an exception instance, got {}",
                error.repr()?
            )));
        }
        Ok(match self.judge_error(py, &PyErr::from_value(error)) {
            Verdict::Failure => "failure",
            Verdict::Success => "success",
            Verdict::Ignored => "ignored",
        })
    }

    /// Whether a returned value counts as a failure (by `failure_result`).
    fn is_failure_result(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> bool {
        self.judge_result(py, &value) == Verdict::Failure
    }

    /// Closes the circuit and clears the failure streak.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.not_lost()?;
        let transition = self.core.reset();
        self.notify(py, transition);
        Ok(())
    }

    /// Holds the circuit open (FORCED_OPEN) until `reset()`.
    fn force_open(&self, py: Python<'_>) {
        let transition = self.core.force_open();
        self.notify(py, transition);
    }

    /// Changes the thresholds in place; the state and its counts stay. The policy keywords
    /// left out (or None) keep their current values.
    #[pyo3(signature = (failure_threshold, recovery_timeout, half_open_max_calls, *,
                        failure_rate_threshold=None, minimum_calls=None, window_type=None, window_size=None,
                        slow_call_duration=None, backoff_multiplier=None, max_recovery_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn set_settings(
        &self,
        failure_threshold: &Bound<'_, PyAny>,
        recovery_timeout: &Bound<'_, PyAny>,
        half_open_max_calls: &Bound<'_, PyAny>,
        failure_rate_threshold: Option<&Bound<'_, PyAny>>,
        minimum_calls: Option<&Bound<'_, PyAny>>,
        window_type: Option<&Bound<'_, PyAny>>,
        window_size: Option<&Bound<'_, PyAny>>,
        slow_call_duration: Option<&Bound<'_, PyAny>>,
        backoff_multiplier: Option<&Bound<'_, PyAny>>,
        max_recovery_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let base = breaker_settings(failure_threshold, recovery_timeout, half_open_max_calls)?;
        let current = self.core.settings();
        let settings = Policy {
            failure_rate_threshold,
            minimum_calls,
            window_type,
            window_size,
            slow_call_duration,
            backoff_multiplier,
            max_recovery_timeout,
        }
        .apply(BreakerSettings {
            failure_threshold: base.failure_threshold,
            recovery_timeout: base.recovery_timeout,
            half_open_max_calls: base.half_open_max_calls,
            ..current
        })?;
        match &self.shared {
            None => self.core.set_settings(settings),
            Some(region) => shared::set_shared_settings(&self.core, region, settings),
        }
        Ok(())
    }

    /// The shared file this breaker lives in, or None for a breaker of this process.
    #[getter]
    fn shared_path(&self) -> Option<PathBuf> {
        self.shared.as_ref().map(|r| r.path().to_owned())
    }

    /// None while the shared file is the one this process mapped (or the breaker is not
    /// shared); else what happened to it (truncated, deleted or replaced). Stats the
    /// file: for health checks.
    fn shared_file_problem(&self) -> Option<String> {
        shared_file_problem(self.shared.as_ref(), "circuit breaker")
    }

    #[getter]
    fn failure_threshold(&self) -> u64 {
        self.core.settings().failure_threshold
    }

    #[getter]
    fn recovery_timeout(&self) -> f64 {
        nanos_to_seconds(self.core.settings().recovery_timeout)
    }

    #[getter]
    fn half_open_max_calls(&self) -> u64 {
        self.core.settings().half_open_max_calls
    }

    /// Consecutive failures: the running streak while closed, else the one that opened it.
    #[getter]
    fn failure_count(&self) -> u64 {
        self.core.failure_count()
    }

    /// Seconds until an open circuit lets a trial call through (0.0 when not open).
    #[getter]
    fn retry_after(&self) -> f64 {
        nanos_to_seconds(self.core.remaining())
    }

    #[getter]
    fn success_total(&self) -> u64 {
        self.core.successes()
    }

    #[getter]
    fn failure_total(&self) -> u64 {
        self.core.failures()
    }

    #[getter]
    fn rejection_total(&self) -> u64 {
        self.core.rejections()
    }

    /// How many times the circuit went from state `from_state` to `to_state` (0..=5).
    fn transition_count(&self, from_state: u8, to_state: u8) -> PyResult<u64> {
        if from_state as usize >= STATES || to_state as usize >= STATES {
            return Err(PyValueError::new_err(format!(
                "states are 0 to {}, got from_state={from_state} to_state={to_state}",
                STATES - 1
            )));
        }
        Ok(self.core.transitions(from_state, to_state))
    }

    /// Every transition that happened, as {(from_state, to_state): count} (one call per
    /// breaker per scrape, whatever the number of states).
    fn transition_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for from in 0..STATES as u8 {
            for to in 0..STATES as u8 {
                let count = self.core.transitions(from, to);
                if count != 0 {
                    out.set_item((from, to), count)?;
                }
            }
        }
        Ok(out)
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// Sets the callable told of each transition as listener(name, from, to), or None.
    fn set_listener(&self, listener: Option<Py<PyAny>>) {
        match self.listener.lock() {
            Ok(mut guard) => *guard = listener,
            Err(poisoned) => *poisoned.into_inner() = listener,
        }
    }

    /// Asks to run one call: an admission code (kind 1 closed, 2 half-open trial, 3 outside
    /// the state machine); raises CircuitBreakerError when refused. For wrappers that run
    /// the call themselves.
    fn _enter(&self, py: Python<'_>) -> PyResult<u64> {
        match self.enter(py) {
            Admission::Rejected { remaining } => Err(self.rejection(py, remaining)),
            admission => Ok(admission.code()),
        }
    }

    /// Reports how a call admitted by `_enter` ended: True success, False failure,
    /// None neither (cancelled or interrupted: a trial gives its permit back). `slow`: a
    /// success that took `slow_call_duration` or longer (counted as a failure).
    #[pyo3(signature = (admission, outcome, *, slow=false))]
    fn _exit(
        &self,
        py: Python<'_>,
        admission: u64,
        outcome: Option<bool>,
        slow: bool,
    ) -> PyResult<()> {
        let admission = admission_from(admission)?;
        match outcome {
            Some(true) if slow => {
                let transition = self.core.on_slow_success(admission);
                self.notify(py, transition);
            }
            Some(true) => self.succeed(py, admission),
            Some(false) => self.fail(py, admission),
            None => self.core.release(admission),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------

/// Counters and the latency histogram of one operation, read by the Prometheus collector.
#[pyclass(
    frozen,
    weakref,
    module = "peak_resilience._native",
    name = "OperationStats"
)]
pub struct PyOperationStats {
    stats: OperationStats,
    name: Py<PyString>,
}

impl PyOperationStats {
    fn record_exception(&self, py: Python<'_>, err: &PyErr) {
        let ty = err.get_type(py);
        self.stats.record_failure(ty.as_ptr() as usize, || {
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

    /// Counts one failure of the exception type named `error_type`.
    fn record_failure(&self, error_type: &str) {
        self.stats
            .record_failure(name_key(error_type), || error_type.to_owned());
    }

    /// {"buckets": cumulative counts per bound (last +Inf), "sum": seconds,
    ///  "successes": n, "failures": {error_type: n}}
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
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------

extern "C" {
    // CPython's bound-method constructor (stable since 2.x, not wrapped by pyo3-ffi): the
    // cheapest way to bind a guard to an instance.
    fn PyMethod_New(
        func: *mut pyo3::ffi::PyObject,
        instance: *mut pyo3::ffi::PyObject,
    ) -> *mut pyo3::ffi::PyObject;
}

/// `Guard::started` for a call whose latency and outcome are not recorded.
const NOT_TIMED: u64 = u64::MAX;
/// Set in `Guard::started` when the call is timed for its breaker's slow-call duration
/// only, not for the operation's stats.
const BREAKER_ONLY: u64 = 1 << 63;

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

/// Turns the per-refusal hook (the DEBUG rejection log) on or off.
#[pyfunction]
fn set_rejection_log_enabled(enabled: bool) {
    REJECTION_LOG.store(enabled, Ordering::Relaxed);
}

/// Whether the per-refusal hook is on.
#[pyfunction]
fn rejection_log_enabled() -> bool {
    REJECTION_LOG.load(Ordering::Relaxed)
}

/// A function guarded by a breaker and/or a limiter, recording into an operation's stats.
/// Calling it runs the whole guard natively: one Python-to-Rust call per invocation.
#[pyclass(frozen, dict, module = "peak_resilience._native", name = "Guard")]
pub struct Guard {
    func: Py<PyAny>,
    breaker: Option<Py<PyCircuitBreaker>>,
    limiter: Option<Py<PyRateLimiter>>,
    endpoint: Option<Py<PyAny>>,
    cost: u64,
    operation: Option<Py<PyOperationStats>>,
    fallback: Option<Py<PyAny>>,
    fallback_is_callable: bool,
    fallback_on_failure: AtomicBool,
    max_wait: u64,
    sleep: Option<Py<PyAny>>,
    /// Told of each refused call as on_reject(exception), for the rejection log.
    on_reject: Option<Py<PyAny>>,
    clock: Clock,
    /// priority="high": the guarded calls may use the limiter's priority reserve.
    high: bool,
}

impl Guard {
    /// Takes a breaker admission and a token; on refusal, the error to raise.
    #[inline]
    fn admit(&self, py: Python<'_>) -> PyResult<Admission> {
        let admission = match &self.breaker {
            Some(breaker) => {
                let breaker = breaker.get();
                match breaker.enter(py) {
                    Admission::Rejected { remaining } => {
                        return Err(breaker.rejection(py, remaining))
                    }
                    admission => admission,
                }
            }
            // No breaker: nothing reads the admission.
            None => Admission::Normal { epoch: 0 },
        };
        if let Some(limiter) = &self.limiter {
            if let Err(err) = self.take_token(py, limiter.get()) {
                if let Some(breaker) = &self.breaker {
                    breaker.get().core.release(admission);
                }
                return Err(err);
            }
        }
        Ok(admission)
    }

    #[inline]
    fn take_token(&self, py: Python<'_>, limiter: &PyRateLimiter) -> PyResult<()> {
        let endpoint = self.endpoint.as_ref().map(|e| e.bind(py));
        let bucket = limiter.bucket(py, endpoint)?;
        let bucket = bucket.get();
        let mut waited = 0u64;
        loop {
            match bucket.decide_lane(self.cost, self.high) {
                Decision::Admitted => return Ok(()),
                Decision::Impossible => return Err(bucket.impossible(self.cost)),
                Decision::Rejected { wait } => {
                    if waited.saturating_add(wait) > self.max_wait {
                        return Err(self.rate_limited(py, limiter, wait));
                    }
                    self.sleep_for(py, wait)?;
                    waited += wait;
                }
            }
        }
    }

    fn sleep_for(&self, py: Python<'_>, nanos: u64) -> PyResult<()> {
        match &self.sleep {
            Some(sleep) => sleep.call1(py, (nanos_to_seconds(nanos),)).map(|_| ()),
            None => {
                py.detach(|| std::thread::sleep(Duration::from_nanos(nanos)));
                Ok(())
            }
        }
    }

    /// The RateLimitExceeded for a refused call (message formatted lazily, as above).
    #[cold]
    fn rate_limited(&self, py: Python<'_>, limiter: &PyRateLimiter, wait: u64) -> PyErr {
        let endpoint = self.endpoint.as_ref().map(|e| e.clone_ref(py));
        let details = (limiter.name.clone_ref(py), endpoint, nanos_to_seconds(wait));
        match RATE_LIMIT_EXCEEDED.import(py, ERRORS_MODULE, "RateLimitExceeded") {
            Ok(ty) => PyErr::from_type(ty.clone(), details),
            Err(err) => err,
        }
    }

    /// When the call started, or NOT_TIMED when nothing will be recorded for it (no
    /// operation, or recording switched off, and no slow-call duration): the switch is read
    /// once per call, so a call in flight when it flips is recorded whole or not at all.
    /// With BREAKER_ONLY set, the call is timed for its breaker only.
    #[inline]
    fn started(&self) -> u64 {
        let for_stats = self.operation.is_some() && stats::recording();
        let for_breaker = self
            .breaker
            .as_ref()
            .is_some_and(|b| b.get().core.slow_call_duration() != 0);
        match (for_stats, for_breaker) {
            (true, _) => self.clock.now(),
            (false, true) => self.clock.now() | BREAKER_ONLY,
            (false, false) => NOT_TIMED,
        }
    }

    /// Records how the call ended: `Ok(value)` returned, `Err(error)` raised an Exception.
    #[inline]
    fn record(
        &self,
        py: Python<'_>,
        admission: Admission,
        started: u64,
        outcome: Result<&Bound<'_, PyAny>, &PyErr>,
    ) {
        let elapsed = (started != NOT_TIMED)
            .then(|| self.clock.now().saturating_sub(started & !BREAKER_ONLY));
        if let (Some(operation), Some(elapsed), false) =
            (&self.operation, elapsed, started & BREAKER_ONLY != 0)
        {
            let operation = operation.get();
            operation.stats.record_latency(elapsed);
            match outcome {
                Ok(_) => operation.stats.record_success(),
                Err(err) => operation.record_exception(py, err),
            }
        }
        if let Some(breaker) = &self.breaker {
            let breaker = breaker.get();
            let verdict = match outcome {
                Ok(value) => breaker.judge_result(py, value),
                Err(err) => breaker.judge_error(py, err),
            };
            breaker.settle(py, admission, verdict, elapsed);
        }
    }

    /// Hands a refusal to `on_reject`; a hook that raises is reported as unraisable and
    /// never changes what the caller gets. Skipped unless the rejection log is on (DEBUG),
    /// so a refusal costs no Python call when nobody reads the log.
    #[cold]
    fn rejected(&self, py: Python<'_>, rejection: &PyErr) {
        if !REJECTION_LOG.load(Ordering::Relaxed) {
            return;
        }
        if let Some(hook) = &self.on_reject {
            if let Err(err) = hook.call1(py, (rejection.value(py),)) {
                err.write_unraisable(py, Some(hook.bind(py)));
            }
        }
    }

    fn release(&self, admission: Admission) {
        if let Some(breaker) = &self.breaker {
            breaker.get().core.release(admission);
        }
    }

    fn call_fallback(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Option<PyResult<Py<PyAny>>> {
        let fallback = self.fallback.as_ref()?;
        Some(if self.fallback_is_callable {
            fallback.bind(py).call(args, kwargs).map(Bound::unbind)
        } else {
            Ok(fallback.clone_ref(py))
        })
    }
}

#[pymethods]
impl Guard {
    #[new]
    #[pyo3(signature = (func, *, breaker=None, limiter=None, endpoint=None, cost=1, operation=None,
                        fallback=None, has_fallback=false, fallback_on_failure=false, max_wait=None, sleep=None,
                        on_reject=None, priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        func: Bound<'_, PyAny>,
        breaker: Option<Py<PyCircuitBreaker>>,
        limiter: Option<Py<PyRateLimiter>>,
        endpoint: Option<Py<PyAny>>,
        cost: i64,
        operation: Option<Py<PyOperationStats>>,
        fallback: Option<Bound<'_, PyAny>>,
        has_fallback: bool,
        fallback_on_failure: bool,
        max_wait: Option<&Bound<'_, PyAny>>,
        sleep: Option<Py<PyAny>>,
        on_reject: Option<Py<PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let high = is_high(priority)?;
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "the guarded function must be callable, got {}",
                func.repr()?
            )));
        }
        let py = func.py();
        let clock = match (&breaker, &limiter) {
            (Some(b), _) => b.get().core.clock().clone(),
            (None, Some(l)) => l.get().clock.clone(),
            (None, None) => Clock::Monotonic,
        };
        let fallback = if has_fallback {
            Some(fallback.map_or_else(|| py.None(), Bound::unbind))
        } else {
            None
        };
        let fallback_is_callable = fallback.as_ref().is_some_and(|f| f.bind(py).is_callable());
        Ok(Guard {
            func: func.unbind(),
            breaker,
            limiter,
            endpoint: endpoint.filter(|e| !e.is_none(py)),
            cost: cost_of(cost)?,
            operation,
            fallback,
            fallback_is_callable,
            fallback_on_failure: AtomicBool::new(fallback_on_failure && has_fallback),
            max_wait: match max_wait {
                Some(w) if !w.is_none() => seconds(w, "max_wait", true)?,
                _ => 0,
            },
            sleep: sleep.filter(|s| !s.is_none(py)),
            on_reject: on_reject.filter(|h| !h.is_none(py)),
            clock,
            high,
        })
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let admission = match self.admit(py) {
            Ok(admission) => admission,
            Err(rejection) => {
                self.rejected(py, &rejection);
                return match self.call_fallback(py, args, kwargs) {
                    Some(result) => result,
                    None => Err(rejection),
                };
            }
        };
        let started = self.started();
        match self.func.bind(py).call(args, kwargs) {
            Ok(value) => {
                self.record(py, admission, started, Ok(&value));
                Ok(value.unbind())
            }
            Err(err) if err.is_instance_of::<PyException>(py) => {
                self.record(py, admission, started, Err(&err));
                if self.fallback_on_failure.load(Ordering::Relaxed) {
                    if let Some(result) = self.call_fallback(py, args, kwargs) {
                        return result;
                    }
                }
                Err(err)
            }
            // KeyboardInterrupt, SystemExit, GeneratorExit, CancelledError: no verdict.
            Err(err) => {
                self.release(admission);
                Err(err)
            }
        }
    }

    /// Binds the guard to an instance, so that it decorates methods too.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        instance: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match instance {
            Some(instance) if !instance.is_none() => {
                // SAFETY: both pointers are live objects; PyMethod_New returns a new
                // reference or NULL with an exception set.
                unsafe {
                    Bound::from_owned_ptr_or_err(
                        slf.py(),
                        PyMethod_New(slf.as_ptr(), instance.as_ptr()),
                    )
                }
            }
            _ => Ok(slf.clone().into_any()),
        }
    }

    /// For async wrappers: takes the breaker admission and a token (no waiting), returns
    /// the admission code, or raises CircuitBreakerError / RateLimitExceeded.
    fn _admit(&self, py: Python<'_>) -> PyResult<u64> {
        // No on_reject here: the async wrapper may retry after a wait, and reports only
        // the refusal it finally gives its caller.
        self.admit(py).map(Admission::code)
    }

    /// For async wrappers: the clock reading to pass back to `_exit`.
    fn _started(&self) -> u64 {
        self.started()
    }

    /// For async wrappers: records how the call ended. `error` is the exception raised,
    /// or None for success (then `result` is the value returned). Returns True when the
    /// fallback should replace the error.
    #[pyo3(signature = (admission, started, error=None, result=None))]
    fn _exit(
        &self,
        py: Python<'_>,
        admission: u64,
        started: u64,
        error: Option<Bound<'_, PyAny>>,
        result: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let admission = admission_from(admission)?;
        match error {
            None => {
                let value = result.unwrap_or_else(|| py.None().into_bound(py));
                self.record(py, admission, started, Ok(&value));
                Ok(false)
            }
            Some(exc) if exc.is_instance_of::<PyException>() => {
                let err = PyErr::from_value(exc);
                self.record(py, admission, started, Err(&err));
                Ok(self.fallback_on_failure.load(Ordering::Relaxed))
            }
            Some(_) => {
                self.release(admission);
                Ok(false)
            }
        }
    }

    /// The function this guard runs.
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.func.clone_ref(py)
    }

    #[getter]
    fn breaker(&self, py: Python<'_>) -> Option<Py<PyCircuitBreaker>> {
        self.breaker.as_ref().map(|b| b.clone_ref(py))
    }

    #[getter]
    fn limiter(&self, py: Python<'_>) -> Option<Py<PyRateLimiter>> {
        self.limiter.as_ref().map(|l| l.clone_ref(py))
    }

    #[getter]
    fn operation(&self, py: Python<'_>) -> Option<Py<PyOperationStats>> {
        self.operation.as_ref().map(|o| o.clone_ref(py))
    }

    /// Whether a failed call returns the fallback instead of raising (fail-safe modules).
    fn set_fallback_on_failure(&self, enabled: bool) {
        self.fallback_on_failure
            .store(enabled && self.fallback.is_some(), Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyManualClock>()?;
    m.add_class::<PyTokenBucket>()?;
    m.add_class::<PyRateLimiter>()?;
    m.add_class::<Reservation>()?;
    m.add_class::<PyCircuitBreaker>()?;
    m.add_class::<PyOperationStats>()?;
    m.add_class::<Guard>()?;
    m.add_function(wrap_pyfunction!(set_recording_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(recording_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(set_rejection_log_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(rejection_log_enabled, m)?)?;
    let bounds: Vec<f64> = LATENCY_BOUNDS
        .iter()
        .map(|n| nanos_to_seconds(*n))
        .collect();
    m.add("LATENCY_BOUNDS", PyTuple::new(m.py(), bounds)?)?;
    Ok(())
}
