//! `RateLimiter`'s native half: a default bucket and one bucket per added endpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::sync::critical_section::with_critical_section;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

use crate::bucket::Decision;
use crate::clock::{nanos_to_seconds, Clock};
use crate::files;

use super::args::{
    clock_from, cost_of, given, is_high, label, name_or, on_backend_error, path_or_none, seconds,
    windows_from,
};
use super::reservation::{reserve_on, Reservation};

/// The `endpoint` label of a limiter's own bucket in the metrics (`_limiter._export`).
const DEFAULT_ENDPOINT: &str = "default";
use super::store::Store;
use super::token_bucket::PyTokenBucket;

static LIMITER_SEQUENCE: AtomicU64 = AtomicU64::new(0);

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
    pub name: Py<PyString>,
    default: Py<PyTokenBucket>,
    /// The added endpoints, made by the first `add_endpoint` (most limiters have none:
    /// issue 19).
    endpoints: PyOnceLock<Box<Endpoints>>,
    pub clock: Clock,
    /// Where the budgets live when not in this process alone (None: in memory). Boxed: 8
    /// bytes in every limiter rather than 40 (issue 19).
    placement: Option<Box<Placement>>,
}

impl Drop for PyRateLimiter {
    fn drop(&mut self) {
        // Before its memory is freed, the object leaves the registry (see `registry`).
        super::registry::LIMITERS.leave(self as *const Self as usize);
    }
}

/// Where a limiter's budgets live besides this process.
struct Placement {
    /// The directory the buckets' shared files are in, or None.
    shared_dir: Option<PathBuf>,
    /// The remote store that makes each bucket's store, or None.
    store: Option<Store>,
}

/// A limiter's added endpoints.
struct Endpoints {
    /// Endpoint name -> TokenBucket. A dict, so the lookup uses the str's cached hash.
    /// An endpoint of this process not used yet holds the blank of its windows (shared,
    /// see `PyTokenBucket::blank`), replaced by a bucket of its own on first use.
    buckets: Py<PyDict>,
    /// Until when the endpoints not used yet are paused (ns on the limiter's clock; 0:
    /// not): the limiter's `pause` that their buckets would have had. One instant for
    /// them all: an endpoint is only left unused when added while this has passed, so
    /// what it would have had since is exactly what the limiter's pauses set this to.
    unused_paused_until: AtomicU64,
    /// The blanks of the windows added last.
    blanks: Mutex<Vec<Py<PyTokenBucket>>>,
}

impl PyRateLimiter {
    #[inline]
    pub fn bucket<'py>(
        &'py self,
        py: Python<'py>,
        endpoint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTokenBucket>> {
        if let (Some(endpoint), Some(endpoints)) = (endpoint, self.endpoints.get(py)) {
            if let Some(found) = endpoints.buckets.bind(py).get_item(endpoint)? {
                let found = found.cast_into::<PyTokenBucket>()?;
                if found.get().is_blank() {
                    return self.first_use(py, endpoints, endpoint, &found);
                }
                return Ok(found);
            }
        }
        Ok(self.default.bind(py).clone())
    }

    /// The bucket of an endpoint used for the first time, made now in place of `blank`:
    /// full, paused as the limiter paused its unused endpoints.
    #[cold]
    #[inline(never)]
    fn first_use<'py>(
        &self,
        py: Python<'py>,
        endpoints: &Endpoints,
        endpoint: &Bound<'py, PyAny>,
        blank: &Bound<'py, PyTokenBucket>,
    ) -> PyResult<Bound<'py, PyTokenBucket>> {
        let buckets = endpoints.buckets.bind(py);
        let mut blank = blank.clone();
        loop {
            let bucket = PyTokenBucket::build(
                py,
                &blank.get().windows_now(),
                self.clock.clone(),
                None,
                None,
            )?;
            let paused = endpoints.paused_for(&self.clock);
            if paused > 0 {
                bucket.pause_nanos(py, paused)?;
            }
            let bucket = Bound::new(py, bucket)?;
            // Put in place only if the blank is still there: another thread may have made
            // it meanwhile (its bucket is kept), removed the endpoint (the call draws on
            // the default bucket) or added it anew with other windows (made from those).
            let now = with_critical_section(buckets, || -> PyResult<_> {
                let now = buckets.get_item(endpoint)?;
                if now.as_ref().is_some_and(|now| now.is(&blank)) {
                    buckets.set_item(endpoint, &bucket)?;
                    return Ok(None);
                }
                Ok(Some(now))
            })?;
            match now {
                None => return Ok(bucket),
                Some(None) => return Ok(self.default.bind(py).clone()),
                Some(Some(now)) => {
                    let now = now.cast_into::<PyTokenBucket>()?;
                    if !now.get().is_blank() {
                        return Ok(now);
                    }
                    blank = now;
                }
            }
        }
    }

    fn shared_dir(&self) -> Option<&Path> {
        self.placement.as_ref()?.shared_dir.as_deref()
    }

    fn store_of(&self) -> Option<&Store> {
        self.placement.as_ref()?.store.as_ref()
    }

    /// Where the bucket of `endpoint` (None: the default one) lives: its shared file
    /// and its remote store.
    fn place_of(
        &self,
        py: Python<'_>,
        endpoint: Option<&str>,
    ) -> PyResult<(Option<PathBuf>, Option<Store>)> {
        place(
            py,
            self.name.bind(py).to_str()?,
            self.shared_dir(),
            self.store_of(),
            endpoint,
        )
    }
}

impl Endpoints {
    /// Nanoseconds the unused endpoints' pause still lasts.
    fn paused_for(&self, clock: &Clock) -> u64 {
        self.unused_paused_until
            .load(Ordering::Relaxed)
            .saturating_sub(clock.now())
    }
}

/// The shared file and the remote store of a limiter's bucket.
fn place(
    py: Python<'_>,
    limiter: &str,
    shared_dir: Option<&Path>,
    store: Option<&Store>,
    endpoint: Option<&str>,
) -> PyResult<(Option<PathBuf>, Option<Store>)> {
    let file = shared_dir.map(|dir| files::bucket_file(dir, limiter, endpoint));
    let remote = match store {
        Some(store) => Some(Store::new(store.bucket(py, endpoint)?, store.policy)),
        None => None,
    };
    Ok((file, remote))
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    #[pyo3(signature = (max_requests, window_seconds, *, burst=None, clock=None, name=None, shared_dir=None,
                        windows=None, kinds=None, priority_reserve=None, store=None, on_backend_error=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        shared_dir: Option<&Bound<'_, PyAny>>,
        windows: Option<&Bound<'_, PyAny>>,
        kinds: Option<&Bound<'_, PyAny>>,
        priority_reserve: Option<&Bound<'_, PyAny>>,
        store: Option<&Bound<'_, PyAny>>,
        on_backend_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let clock = clock_from(clock)?;
        let windows = windows_from(
            max_requests,
            window_seconds,
            burst,
            windows,
            kinds,
            priority_reserve,
        )?;
        let shared_dir = path_or_none(
            shared_dir,
            "shared_dir",
            "the directory of the limiter's shared file",
        )?;
        let policy = self::on_backend_error(on_backend_error)?;
        let name = name_or(py, name, "limiter", &LIMITER_SEQUENCE)?;
        let store = given(store).map(|s| Store::new(s.clone(), policy));
        let (file, remote) = place(
            py,
            name.bind(py).to_str()?,
            shared_dir.as_deref(),
            store.as_ref(),
            None,
        )?;
        let default = PyTokenBucket::build(py, &windows, clock.clone(), file.as_deref(), remote)?;
        let placement = (shared_dir.is_some() || store.is_some())
            .then(|| Box::new(Placement { shared_dir, store }));
        Ok(PyRateLimiter {
            name,
            default: Py::new(py, default)?,
            endpoints: PyOnceLock::new(),
            clock,
            placement,
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
        match bucket.decide_lane(py, cost, high)? {
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
        self.bucket(py, endpoint)?
            .get()
            .wait_time(py, cost, priority)
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
    #[pyo3(signature = (name, max_requests, window_seconds, *, burst=None, windows=None, kinds=None, priority_reserve=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_endpoint(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        windows: Option<&Bound<'_, PyAny>>,
        kinds: Option<&Bound<'_, PyAny>>,
        priority_reserve: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = label(name, "endpoint name")?;
        if name.to_str()? == DEFAULT_ENDPOINT {
            // The metrics label the limiter's own bucket "default": a bucket of that name
            // would be merged with it in every family.
            return Err(pyo3::exceptions::PyValueError::new_err(
                "endpoint name 'default' is how the metrics label the limiter's own bucket: \
                 choose another name",
            ));
        }
        let endpoints = self.endpoints.get_or_init(py, || {
            Box::new(Endpoints {
                buckets: PyDict::new(py).unbind(),
                unused_paused_until: AtomicU64::new(0),
                blanks: Mutex::new(Vec::new()),
            })
        });
        let buckets = endpoints.buckets.bind(py);
        let existing = buckets.get_item(name)?;
        if let Some(existing) = &existing {
            let existing = existing.cast::<PyTokenBucket>()?;
            if !existing.get().is_blank() {
                return existing.get().set_windows(
                    py,
                    max_requests,
                    window_seconds,
                    burst,
                    windows,
                    kinds,
                    priority_reserve,
                );
            }
        }
        let windows = windows_from(
            max_requests,
            window_seconds,
            burst,
            windows,
            kinds,
            priority_reserve,
        )?;
        // A limiter paused (say by a 429's Retry-After) keeps every new endpoint paused too.
        let paused = self.default.get().paused_nanos(py)?;
        if self.placement.is_none() && paused == 0 && endpoints.paused_for(&self.clock) == 0 {
            // In this process and not paused: nothing to keep until it is used (issue 19).
            // A blank replaces a blank (its windows changed before any use).
            let blank = PyTokenBucket::blank(py, &windows, &endpoints.blanks)?;
            match existing {
                Some(_) => buckets.set_item(name, blank)?,
                None => {
                    buckets.call_method1("setdefault", (name, blank))?;
                }
            }
            return Ok(());
        }
        let (file, remote) = self.place_of(py, Some(name.to_str()?))?;
        let bucket =
            PyTokenBucket::build(py, &windows, self.clock.clone(), file.as_deref(), remote)?;
        if paused > 0 {
            bucket.pause_nanos(py, paused)?;
        }
        match existing {
            // Paused meanwhile: the endpoint's own bucket now, as any added while paused.
            Some(_) => buckets.set_item(name, Py::new(py, bucket)?)?,
            // setdefault: two threads adding the same endpoint at once keep one bucket.
            None => {
                buckets.call_method1("setdefault", (name, Py::new(py, bucket)?))?;
            }
        }
        Ok(())
    }

    /// Drops the bucket of endpoint `name` and returns it (None if there was none): calls
    /// naming it draw on the default bucket again. A shared file or Redis key stays, so
    /// the budget is found again if the endpoint is added anew (per-key budgets evict
    /// their idle keys this way).
    fn remove_endpoint<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTokenBucket>>> {
        // pop: atomic under the GIL, so two threads removing the same endpoint get one bucket.
        let Some(endpoints) = self.endpoints.get(py) else {
            return Ok(None);
        };
        let removed = endpoints
            .buckets
            .bind(py)
            .call_method1("pop", (name, py.None()))?;
        if removed.is_none() {
            return Ok(None);
        }
        let removed = removed.cast_into::<PyTokenBucket>()?;
        if !removed.get().is_blank() {
            return Ok(Some(removed));
        }
        // Never used: its bucket as it would read (full, nothing counted); the blank
        // itself never leaves the limiter.
        let windows = removed.get().windows_now();
        let bucket = PyTokenBucket::build(py, &windows, self.clock.clone(), None, None)?;
        Ok(Some(Bound::new(py, bucket)?))
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

    /// The added endpoints and their buckets, as a new dict; the buckets of endpoints
    /// not used yet are made now (reading them needs no bucket: see
    /// `_endpoint_buckets_to_read`).
    fn endpoint_buckets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Some(endpoints) = self.endpoints.get(py) else {
            return Ok(PyDict::new(py));
        };
        let all = endpoints.buckets.bind(py).copy()?;
        for (name, bucket) in all.iter() {
            if bucket.cast::<PyTokenBucket>()?.get().is_blank() {
                all.set_item(&name, self.bucket(py, Some(&name))?)?;
            }
        }
        Ok(all)
    }

    /// The added endpoints and their buckets, as a new dict, an endpoint not used yet
    /// showing the blank of its windows (`TokenBucket.blank`: full, nothing counted; its
    /// pause is `_unused_paused_for`). For reading only: nothing is made.
    fn _endpoint_buckets_to_read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match self.endpoints.get(py) {
            Some(endpoints) => endpoints.buckets.bind(py).copy(),
            None => Ok(PyDict::new(py)),
        }
    }

    /// The bucket that `endpoint` draws on, or the blank of an endpoint not used yet
    /// (see `_endpoint_buckets_to_read`): for reading only, nothing is made.
    #[pyo3(signature = (endpoint=None))]
    fn _bucket_to_read<'py>(
        &self,
        py: Python<'py>,
        endpoint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTokenBucket>> {
        if let (Some(endpoint), Some(endpoints)) = (endpoint, self.endpoints.get(py)) {
            if let Some(found) = endpoints.buckets.bind(py).get_item(endpoint)? {
                return Ok(found.cast_into::<PyTokenBucket>()?);
            }
        }
        Ok(self.default.bind(py).clone())
    }

    /// Pauses the endpoints not used yet for `seconds` (the limiter's `pause`): a shorter
    /// pause never shortens a longer one; 0 changes nothing.
    fn _pause_unused(&self, py: Python<'_>, seconds_: &Bound<'_, PyAny>) -> PyResult<()> {
        let nanos = seconds(seconds_, "seconds", true)?;
        if let (Some(endpoints), true) = (self.endpoints.get(py), nanos > 0) {
            let until = self.clock.now().saturating_add(nanos);
            endpoints
                .unused_paused_until
                .fetch_max(until, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Lifts the pause of the endpoints not used yet (the limiter's `resume`).
    fn _resume_unused(&self, py: Python<'_>) {
        if let Some(endpoints) = self.endpoints.get(py) {
            endpoints.unused_paused_until.store(0, Ordering::Relaxed);
        }
    }

    /// Seconds the pause of the endpoints not used yet still lasts (0.0: not paused).
    #[getter]
    fn _unused_paused_for(&self, py: Python<'_>) -> f64 {
        self.endpoints
            .get(py)
            .map_or(0.0, |e| nanos_to_seconds(e.paused_for(&self.clock)))
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// The remote store this limiter's budgets live in, or None.
    #[getter]
    fn store(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.store_of().map(|s| s.object().clone_ref(py))
    }

    /// What a call gets while the remote store cannot be reached.
    #[getter]
    fn on_backend_error(&self) -> &'static str {
        self.store_of().map_or("local", |s| s.policy.name())
    }
}
