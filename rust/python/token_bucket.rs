//! `TokenBucket`: one budget of one or more windows, in this process, in a shared file or
//! in a remote store.

use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::bucket::{Decision, Kind, SharedBucketState, Taken, TokenBucket, MAX_WINDOWS};
use crate::clock::{duration_label, nanos_to_seconds, Clock};
use crate::remote::OnBackendError;
use crate::shared::{self, Region};

use super::args::{
    checked_windows, clock_from, cost_of, count, is_high, path_or_none, positive_int, quota_from,
    seconds, windows_from, Windows,
};
use super::errors::{lost_error, shared_error, shared_file_problem};
use super::reservation::{reserve_on, Reservation};
use super::store::Store;

/// One token bucket (GCRA): `max_requests` per `window_seconds`, holding `burst` tokens.
#[pyclass(
    frozen,
    weakref,
    module = "peak_resilience._native",
    name = "TokenBucket"
)]
pub struct PyTokenBucket {
    pub core: TokenBucket,
    enabled: AtomicBool,
    /// A blank: the state of every endpoint of these windows not used yet, shared by
    /// them (see `PyTokenBucket::blank`); never acted on, only read. Beside `enabled`, in
    /// what was padding.
    blank: bool,
    /// Every window as given (max_requests, window ns). Never read per call.
    limits: Limits,
    /// Where the budget lives besides this process's memory (None: only there). Boxed: 8
    /// bytes in every bucket rather than a shared file's 48 and a store's 32 (issue 19).
    elsewhere: Option<Box<Elsewhere>>,
}

/// A bucket's shared file and remote store (a bucket has one, the other or, in
/// principle, both).
struct Elsewhere {
    /// The shared file the state lives in (None: in this process). Never read per call:
    /// `core` already points into the mapping.
    shared: Option<Region<SharedBucketState>>,
    /// The remote store the budget lives in (None: `core` is the budget). `core` then
    /// holds the same windows and stands in during an outage (`on_backend_error="local"`).
    remote: Option<Remote>,
}

/// Held while any bucket's windows change, and while their `Limits` are read. Changes are
/// rare (a reload, an endpoint added again) and take microseconds: one lock for the
/// process rather than one in every bucket (issue 19). Nothing that may run Python, nor
/// wait for anything, is done under it.
static WINDOW_CHANGES: Mutex<()> = Mutex::new(());

fn window_changes() -> MutexGuard<'static, ()> {
    WINDOW_CHANGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Every window of a bucket as given (max_requests, window ns), the first first: the
/// first inline, the others in an allocation of their own, so that a bucket of one window
/// (most are) allocates nothing for them (issue 19). Read and written only under
/// `WINDOW_CHANGES` (each method takes its guard), so a reader never sees half a change.
struct Limits {
    first: [AtomicU64; 2],
    /// The windows after the first; null when there are none.
    more: AtomicPtr<Vec<(u64, u64)>>,
}

impl Limits {
    fn new(limits: &[(u64, u64)]) -> Self {
        let ((requests, window), more) = limits.split_first().expect("a bucket has a window");
        Limits {
            first: [AtomicU64::new(*requests), AtomicU64::new(*window)],
            more: AtomicPtr::new(boxed_or_null(more)),
        }
    }

    /// Every window's, the first first.
    fn get(&self, held: &MutexGuard<'static, ()>) -> Vec<(u64, u64)> {
        let mut all = vec![self.first_one(held)];
        let more = self.more.load(Ordering::Relaxed);
        if !more.is_null() {
            // SAFETY: `more` is replaced (and the old one freed) only under the lock this
            // caller holds, and freed otherwise only by `drop`: it is alive here.
            all.extend_from_slice(unsafe { &*more });
        }
        all
    }

    /// The first window's.
    fn first_one(&self, _held: &MutexGuard<'static, ()>) -> (u64, u64) {
        (
            self.first[0].load(Ordering::Relaxed),
            self.first[1].load(Ordering::Relaxed),
        )
    }

    /// Replaces them all with `limits` (at least one).
    fn set(&self, _held: &MutexGuard<'static, ()>, limits: &[(u64, u64)]) {
        let (first, more) = limits.split_first().expect("a bucket has a window");
        self.first[0].store(first.0, Ordering::Relaxed);
        self.first[1].store(first.1, Ordering::Relaxed);
        let old = self.more.swap(boxed_or_null(more), Ordering::Relaxed);
        if !old.is_null() {
            // SAFETY: made by `boxed_or_null` (`Box::into_raw`); swapped out under the lock
            // that every reader holds, so no reader holds a reference to it.
            drop(unsafe { Box::from_raw(old) });
        }
    }
}

/// `more` in an allocation of its own (freed by `Limits`), or null when empty.
fn boxed_or_null(more: &[(u64, u64)]) -> *mut Vec<(u64, u64)> {
    if more.is_empty() {
        ptr::null_mut()
    } else {
        Box::into_raw(Box::new(more.to_vec()))
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        let more = *self.more.get_mut();
        if !more.is_null() {
            // SAFETY: made by `boxed_or_null` (`Box::into_raw`); `&mut self`: nothing else
            // can read it any more.
            drop(unsafe { Box::from_raw(more) });
        }
    }
}

/// A remote budget's store, and this process's verdicts from it (the budget's own counts,
/// every host's, are in the store).
struct Remote {
    store: Store,
    allowed: AtomicU64,
    rejected: AtomicU64,
}

/// How a bucket reads now: counts, tokens per window, pause.
pub struct Reading {
    pub allowed: u64,
    pub rejected: u64,
    pub window_tokens: Vec<f64>,
    pub paused: u64,
    /// For a remote bucket, whether the store answered (else the local stand-in did).
    pub available: Option<bool>,
}

impl PyTokenBucket {
    /// A bucket of one or more windows, all or nothing: in this process, in the shared file
    /// at `shared`, or in `remote`.
    pub fn build(
        py: Python<'_>,
        windows: &Windows,
        clock: Clock,
        shared: Option<&Path>,
        remote: Option<Store>,
    ) -> PyResult<Self> {
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
        if let Some(store) = &remote {
            store.configure_bucket(py, &windows.quotas, windows.reserve)?;
        }
        let remote = remote.map(|store| Remote {
            store,
            allowed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        Ok(PyTokenBucket {
            core,
            enabled: AtomicBool::new(true),
            blank: false,
            limits: Limits::new(&windows.limits),
            elsewhere: (shared.is_some() || remote.is_some())
                .then(|| Box::new(Elsewhere { shared, remote })),
        })
    }

    /// The blank of `windows` in `blanks` (made and kept there if none is): what an
    /// endpoint of them reads before its first use (full, nothing counted, never paused by
    /// itself), shared by the endpoints of one limiter, so that an endpoint added and not
    /// used yet costs its name and its place in the limiter's dict (issue 19). A limiter's
    /// endpoints have few distinct windows (a key's budget has its limiter's): a few recent
    /// ones are kept. One limiter's only: the metrics fold an endpoint past their bound by
    /// the identity of its bucket, which must not reach another limiter's.
    pub fn blank(
        py: Python<'_>,
        windows: &Windows,
        blanks: &Mutex<Vec<Py<PyTokenBucket>>>,
    ) -> PyResult<Py<PyTokenBucket>> {
        /// Blanks kept, the most recent last.
        const KEPT: usize = 4;
        // Nothing that may run Python (an allocation's collection, a weakref's callback
        // as a blank goes) under the lock: another thread holding the GIL may wait for it.
        let lock = || blanks.lock().unwrap_or_else(|e| e.into_inner());
        let found = lock()
            .iter()
            .find(|b| b.get().has_windows(windows))
            .map(|b| b.clone_ref(py));
        if let Some(found) = found {
            return Ok(found);
        }
        let mut blank = PyTokenBucket::build(py, windows, Clock::Monotonic, None, None)?;
        blank.blank = true;
        let blank = Py::new(py, blank)?;
        let evicted = {
            let mut blanks = lock();
            let evicted = (blanks.len() >= KEPT).then(|| blanks.remove(0));
            blanks.push(blank.clone_ref(py));
            evicted
        };
        drop(evicted);
        Ok(blank)
    }

    /// Whether this is a blank (see `blank`).
    #[inline(always)]
    pub fn is_blank(&self) -> bool {
        self.blank
    }

    /// Whether this bucket's windows and reserve are `windows`.
    fn has_windows(&self, windows: &Windows) -> bool {
        self.core.reserve() == windows.reserve
            && self.core.quotas() == windows.quotas
            && self.limits() == windows.limits
    }

    /// This bucket's windows and reserve, as arguments for another bucket of them.
    pub fn windows_now(&self) -> Windows {
        Windows {
            quotas: self.core.quotas(),
            limits: self.limits(),
            reserve: self.core.reserve(),
        }
    }

    /// The remote store the budget lives in, or None.
    #[inline(always)]
    fn remote_store(&self) -> Option<&Store> {
        self.remote().map(|remote| &remote.store)
    }

    #[inline(always)]
    fn remote(&self) -> Option<&Remote> {
        self.elsewhere.as_deref()?.remote.as_ref()
    }

    /// The shared file the state lives in, or None.
    fn shared(&self) -> Option<&Region<SharedBucketState>> {
        self.elsewhere.as_deref()?.shared.as_ref()
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Takes `cost` tokens now, or says why not: the one decision every acquire, reserve
    /// and guarded call makes.
    #[inline(always)]
    pub fn decide_lane(&self, py: Python<'_>, cost: u64, high: bool) -> PyResult<Decision> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(Decision::Admitted);
        }
        if let Some(store) = self.remote_store() {
            return self.decide_remote(py, store, cost, high);
        }
        let now = self.core.clock().now();
        Ok(self.core.acquire_at(cost, now, high))
    }

    /// `decide_lane` for a reservation: also what the take left in each window, which
    /// bounds its refund (`give_back`): the core's, or the remote store's record. A
    /// disabled budget keeps none, nor a take decided while the store was unreachable.
    pub fn reserve_lane(
        &self,
        py: Python<'_>,
        cost: u64,
        high: bool,
    ) -> PyResult<(Decision, Taken)> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok((Decision::Admitted, [0; MAX_WINDOWS]));
        }
        if let Some(store) = self.remote_store() {
            if self.core.wait_time_lane(cost, high).is_none() {
                return Ok((Decision::Impossible, [0; MAX_WINDOWS]));
            }
            // The store unreachable: the policy decides, as for an acquire, and no record.
            let decision = match store.reserve(py, cost, high)? {
                Some((decision, taken)) => return Ok((self.tally(decision), taken)),
                None => match store.policy.decision(store.retry(py)) {
                    Some(decision) => self.tally(decision),
                    None => self.core.acquire_at(cost, self.core.clock().now(), high),
                },
            };
            return Ok((decision, [0; MAX_WINDOWS]));
        }
        let now = self.core.clock().now();
        Ok(match self.core.reserve_at(cost, now, high) {
            Ok(taken) => (Decision::Admitted, taken),
            Err(decision) => (decision, [0; MAX_WINDOWS]),
        })
    }

    /// Refunds `cost` tokens of a reservation whose take left `taken`: no more than it
    /// still owes in each window, in the core or in the remote store (which bounds it by
    /// its own record; a take without one is refunded as `adjust` does).
    pub fn give_back(&self, py: Python<'_>, cost: u64, taken: &Taken) {
        if let Some(store) = self.remote_store() {
            // A take recorded by the store: its refund bounded there. Without a record (the
            // store was unreachable when it was taken) a plain refund, as `adjust` makes.
            if taken.iter().all(|&record| record == 0) {
                self.adjust(py, cost, false);
            } else if store.give_back(py, cost, taken).is_none()
                && store.policy == OnBackendError::Local
            {
                self.core.adjust(cost, false);
            }
        } else {
            self.core.give_back(cost, taken);
        }
    }

    #[inline(never)]
    fn decide_remote(
        &self,
        py: Python<'_>,
        store: &Store,
        cost: u64,
        high: bool,
    ) -> PyResult<Decision> {
        // A cost no window can ever hold is refused here, as in-process, without a trip.
        if self.core.wait_time_lane(cost, high).is_none() {
            return Ok(Decision::Impossible);
        }
        let decision = match store.take(py, cost, high)? {
            Some(decision) => decision,
            None => match store.policy.decision(store.retry(py)) {
                Some(decision) => decision,
                // The local stand-in decides, and counts its own verdicts.
                None => return Ok(self.core.acquire_at(cost, self.core.clock().now(), high)),
            },
        };
        Ok(self.tally(decision))
    }

    /// The remote store that decides a take of `cost` now; None when the bucket decides
    /// without it (in process, disabled, or a cost no window can ever hold).
    pub fn remote_taker(&self, cost: u64, high: bool) -> Option<&Store> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let store = self.remote_store()?;
        self.core
            .wait_time_lane(cost, high)
            .is_some()
            .then_some(store)
    }

    /// Counts a remote store's decision in this process' tallies.
    pub fn tally(&self, decision: Decision) -> Decision {
        if let Some(remote) = self.remote() {
            let tally = match decision {
                Decision::Admitted => &remote.allowed,
                _ => &remote.rejected,
            };
            tally.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    pub fn impossible(&self, cost: u64) -> PyErr {
        // A truncated file's bucket refuses every cost as impossible: say why instead.
        if let Some(region) = self.shared().filter(|r| r.lost()) {
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

    /// Nanoseconds until `cost` tokens are there, or None when they never can be.
    fn wait_nanos(&self, py: Python<'_>, cost: u64, high: bool) -> PyResult<Option<u64>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(Some(0));
        }
        let local = self.core.wait_time_lane(cost, high);
        let (Some(store), Some(_)) = (self.remote_store(), local) else {
            return Ok(local);
        };
        if let Some(peek) = store.peek(py, cost, high)? {
            return Ok(Some(peek.wait));
        }
        Ok(match store.policy {
            OnBackendError::Local => local,
            OnBackendError::FailOpen => Some(0),
            OnBackendError::FailClosed => Some(store.retry(py)),
        })
    }

    /// Charges (`more`, forced) or refunds `cost` tokens in every window. A remote budget
    /// that cannot be reached is adjusted in the local stand-in (policy "local") or not at
    /// all, as every other budget change is while the store is away.
    pub fn adjust(&self, py: Python<'_>, cost: u64, more: bool) {
        if let Some(store) = self.remote_store() {
            if store.adjust(py, cost, more).is_some() || store.policy != OnBackendError::Local {
                return;
            }
        }
        self.core.adjust(cost, more);
    }

    /// Nanoseconds the pause still lasts, in the store for a remote budget.
    pub fn paused_nanos(&self, py: Python<'_>) -> PyResult<u64> {
        if let Some(store) = self.remote_store() {
            if let Some(peek) = store.peek(py, 0, true)? {
                return Ok(peek.paused);
            }
        }
        Ok(self.core.paused_for())
    }

    /// Refuses every acquire for `nanos` (0 lifts the pause): in the core, and for a remote
    /// budget in the store too (the stand-in stays paused alike).
    pub fn pause_nanos(&self, py: Python<'_>, nanos: u64) -> PyResult<()> {
        self.core.pause(nanos);
        if let Some(store) = self.remote_store() {
            store.pause(py, nanos)?;
        }
        Ok(())
    }

    /// Counts, tokens and pause in one read: one trip to a remote store.
    pub fn reading(&self, py: Python<'_>) -> PyResult<Reading> {
        if let Some(store) = self.remote_store() {
            if let Some(peek) = store.peek(py, 0, true)? {
                return Ok(Reading {
                    allowed: peek.allowed,
                    rejected: peek.rejected,
                    window_tokens: peek.tokens,
                    paused: peek.paused,
                    available: Some(true),
                });
            }
        }
        Ok(Reading {
            allowed: self.core.allowed(),
            rejected: self.core.rejected(),
            window_tokens: self.core.window_tokens(),
            paused: self.core.paused_for(),
            available: self.remote().map(|_| false),
        })
    }

    fn set_windows_checked(&self, py: Python<'_>, w: Windows) -> PyResult<()> {
        {
            // One change at a time: a window's switch fills its spare slot, which a second
            // concurrent change of another rate must not overwrite before the first
            // switches. No Python runs under the lock (it could wait for the GIL).
            let held = window_changes();
            match self.shared() {
                None => self.core.set_windows(&w.quotas, w.reserve),
                Some(region) => {
                    if !shared::set_shared_windows(&self.core, region, &w.quotas, w.reserve) {
                        return Err(lost_error(region.path(), "rate limiter"));
                    }
                }
            }
            self.limits.set(&held, &w.limits);
        }
        if let Some(store) = self.remote_store() {
            store.configure_bucket(py, &w.quotas, w.reserve)?;
        }
        Ok(())
    }

    /// The first window as given (max_requests, window ns).
    fn first_limit(&self) -> (u64, u64) {
        self.limits.first_one(&window_changes())
    }

    fn limits(&self) -> Vec<(u64, u64)> {
        self.limits.get(&window_changes())
    }
}

/// `TokenBucket.read()`: allowed, rejected, tokens per window, seconds paused, whether the
/// store answered.
type ReadOut = (u64, u64, Vec<f64>, f64, Option<bool>);

#[pymethods]
impl PyTokenBucket {
    #[new]
    #[pyo3(signature = (max_requests, window_seconds, burst=None, clock=None, *, shared=None))]
    fn new(
        py: Python<'_>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        shared: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let windows = windows_from(max_requests, window_seconds, burst, None, None, None)?;
        let shared = path_or_none(shared, "shared", "the path of the bucket's shared file")?;
        PyTokenBucket::build(py, &windows, clock_from(clock)?, shared.as_deref(), None)
    }

    /// The shared file this bucket lives in, or None for a bucket of this process.
    #[getter]
    fn shared_path(&self) -> Option<PathBuf> {
        self.shared().map(|r| r.path().to_owned())
    }

    /// None while the shared file is the one this process mapped (or the bucket is not
    /// shared); else what happened to it (truncated, deleted or replaced). Stats the
    /// file: for health checks.
    fn shared_file_problem(&self) -> Option<String> {
        shared_file_problem(self.shared(), "rate limiter")
    }

    /// The remote store this budget lives in, or None.
    #[getter]
    fn store(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.remote_store().map(|s| s.object().clone_ref(py))
    }

    /// Takes `cost` tokens if the bucket holds them now (in every window); never waits.
    #[pyo3(signature = (cost=1, /, *, priority=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        cost: i64,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let cost = cost_of(cost)?;
        match self.decide_lane(py, cost, is_high(priority)?)? {
            Decision::Admitted => Ok(true),
            Decision::Rejected { .. } => Ok(false),
            Decision::Impossible => Err(self.impossible(cost)),
        }
    }

    /// Seconds until `cost` tokens are available (0.0 when they are now).
    #[pyo3(signature = (cost=1, /, *, priority=None))]
    pub fn wait_time(
        &self,
        py: Python<'_>,
        cost: i64,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<f64> {
        let cost = cost_of(cost)?;
        match self.wait_nanos(py, cost, is_high(priority)?)? {
            Some(nanos) => Ok(nanos_to_seconds(nanos)),
            None => Err(self.impossible(cost)),
        }
    }

    /// Tokens in the bucket now (fractional while one refills): the least over its windows.
    #[getter]
    fn tokens_available(&self, py: Python<'_>) -> PyResult<f64> {
        let tokens = self.reading(py)?.window_tokens;
        Ok(tokens.into_iter().fold(f64::INFINITY, f64::min))
    }

    /// Tokens the bucket holds when full.
    #[getter]
    fn capacity(&self) -> u64 {
        self.core.quota().burst
    }

    #[getter]
    fn max_requests(&self) -> u64 {
        self.first_limit().0
    }

    #[getter]
    fn window_seconds(&self) -> f64 {
        nanos_to_seconds(self.first_limit().1)
    }

    /// Acquires this process admitted so far (a shared file's: every process's).
    #[getter]
    fn allowed(&self) -> u64 {
        self.core.allowed()
            + self
                .remote()
                .map_or(0, |r| r.allowed.load(Ordering::Relaxed))
    }

    /// Acquires this process rejected so far (a shared file's: every process's).
    #[getter]
    fn rejected(&self) -> u64 {
        self.core.rejected()
            + self
                .remote()
                .map_or(0, |r| r.rejected.load(Ordering::Relaxed))
    }

    /// `(allowed, rejected, [tokens per window], seconds paused, store answered)` read at
    /// once: the budget's own counts (every host's for a remote one); the last item is
    /// None unless the budget is remote, False when the local stand-in was read instead.
    fn read(&self, py: Python<'_>) -> PyResult<ReadOut> {
        let r = self.reading(py)?;
        Ok((
            r.allowed,
            r.rejected,
            r.window_tokens,
            nanos_to_seconds(r.paused),
            r.available,
        ))
    }

    /// True for the blank that endpoints not used yet read as (see `blank`).
    #[getter(blank)]
    fn blank_getter(&self) -> bool {
        self.blank
    }

    #[getter]
    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A disabled bucket admits everything (config `rate_limit_enabled = false`).
    fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Changes the first window's rate in place; tokens already spent stay spent. Checked
    /// as a whole new set of windows is (the priority reserve must still leave normal
    /// calls a token), and the windows and their labels report the new rate.
    #[pyo3(signature = (max_requests, window_seconds, burst=None))]
    fn set_rate(
        &self,
        py: Python<'_>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let quota = quota_from(max_requests, window_seconds, burst, self.core.quota().kind)?;
        let first = (
            positive_int(max_requests, "max_requests")?,
            seconds(window_seconds, "window_seconds", false)?,
        );
        let mut quotas = self.core.quotas();
        let mut limits = self.limits();
        // Another process may have changed a shared bucket's windows: its quotas decide.
        limits.resize(quotas.len(), first);
        quotas[0] = quota;
        limits[0] = first;
        self.set_windows_checked(py, checked_windows(quotas, limits, self.core.reserve())?)
    }

    /// Fills the bucket at once.
    fn refill(&self, py: Python<'_>) {
        self.core.refill();
        if let Some(store) = self.remote_store() {
            let most = self
                .core
                .quotas()
                .iter()
                .map(|q| q.burst)
                .max()
                .unwrap_or(1);
            store.adjust(py, most, false);
        }
    }

    /// Every window as `(max_requests, window_seconds, burst)`, the first first.
    #[getter]
    fn windows(&self) -> Vec<(u64, f64, u64)> {
        self.limits()
            .iter()
            .zip(self.core.quotas())
            .map(|((max, window), quota)| (*max, nanos_to_seconds(*window), quota.burst))
            .collect()
    }

    /// Each window's name ("60s", "60s fixed", "1s sliding"), the first first: the
    /// `window` label of the metrics.
    #[getter]
    fn window_labels(&self) -> Vec<String> {
        self.limits()
            .iter()
            .zip(self.core.quotas())
            .map(|((_, w), quota)| match quota.kind {
                Kind::Bucket => duration_label(*w),
                kind => format!("{} {}", duration_label(*w), kind.name()),
            })
            .collect()
    }

    /// How each window counts ("bucket", "fixed" or "sliding"), the first first.
    #[getter]
    fn window_kinds(&self) -> Vec<&'static str> {
        self.core.quotas().iter().map(|q| q.kind.name()).collect()
    }

    /// Tokens available now in each window (the reserve included), the first first.
    fn window_tokens(&self, py: Python<'_>) -> PyResult<Vec<f64>> {
        Ok(self.reading(py)?.window_tokens)
    }

    /// Tokens of every window kept for `priority="high"` acquires.
    #[getter]
    fn priority_reserve(&self) -> u64 {
        self.core.reserve()
    }

    /// Replaces every window and the priority reserve in place. Windows that stay keep
    /// their spent tokens (rescaled); added windows start full.
    #[pyo3(signature = (max_requests, window_seconds, burst=None, *, windows=None, kinds=None, priority_reserve=None))]
    #[allow(clippy::too_many_arguments)]
    pub fn set_windows(
        &self,
        py: Python<'_>,
        max_requests: &Bound<'_, PyAny>,
        window_seconds: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        windows: Option<&Bound<'_, PyAny>>,
        kinds: Option<&Bound<'_, PyAny>>,
        priority_reserve: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let w = windows_from(
            max_requests,
            window_seconds,
            burst,
            windows,
            kinds,
            priority_reserve,
        )?;
        self.set_windows_checked(py, w)
    }

    /// Makes exactly `used` tokens count as spent now in window `window` (its index):
    /// the usage an exchange reports, so that the exchange stays the authority.
    #[pyo3(signature = (used, window=0))]
    fn sync(&self, py: Python<'_>, used: &Bound<'_, PyAny>, window: usize) -> PyResult<()> {
        let used = count(used, "used")?;
        let windows = self.core.quotas().len();
        if window >= windows {
            return Err(PyValueError::new_err(format!(
                "window index {window} is out of range: this bucket has {windows} window(s)"
            )));
        }
        self.core.sync(window, used);
        if let Some(store) = self.remote_store() {
            store.sync(py, window, used)?;
        }
        Ok(())
    }

    /// Refuses every acquire, high priority included, for `seconds` from now, in every
    /// process sharing the bucket; a shorter pause never shortens a longer one.
    fn pause(&self, py: Python<'_>, seconds_: &Bound<'_, PyAny>) -> PyResult<()> {
        let nanos = seconds(seconds_, "seconds", true)?;
        if nanos > 0 {
            self.pause_nanos(py, nanos)?;
        }
        Ok(())
    }

    /// Charges `cost` tokens in every window unconditionally (the calls happened: the
    /// bucket may go into debt beyond its burst).
    fn charge(&self, py: Python<'_>, cost: i64) -> PyResult<()> {
        self.adjust(py, cost_of(cost)?, true);
        Ok(())
    }

    /// Gives `cost` tokens back to every window (never beyond full).
    fn refund(&self, py: Python<'_>, cost: i64) -> PyResult<()> {
        self.adjust(py, cost_of(cost)?, false);
        Ok(())
    }

    /// Lifts a pause at once.
    fn resume(&self, py: Python<'_>) -> PyResult<()> {
        self.pause_nanos(py, 0)
    }

    /// Seconds the pause still lasts (0.0: not paused).
    #[getter]
    fn paused_for(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(nanos_to_seconds(self.paused_nanos(py)?))
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
