//! The token bucket, as GCRA on one atomic word.
//!
//! GCRA (the generic cell rate algorithm) keeps a single "theoretical arrival time" (TAT):
//! the instant at which the bucket would be full again. A request of `cost` tokens moves it
//! by `cost * interval`; it is admitted when the new TAT lies no further ahead of now than
//! the bucket's `tolerance` (`interval * burst`). That is exactly a token bucket holding
//! `burst` tokens refilled continuously at one token per `interval`, and its whole state is
//! one `AtomicU64`, so an acquire is a load, a little arithmetic and a compare-and-swap.

use std::ptr::NonNull;
// std's even under loom: a part is set once, as the `OnceLock` it replaces was.
use std::sync::atomic::{AtomicPtr, Ordering as PartOrdering};

use crate::sync::{yield_now, AtomicU64, Ordering};

use crate::clock::Clock;
use crate::place::Place;
use crate::{fixed_window, sliding_window};

/// How a window counts: a token bucket (GCRA, the default), per calendar interval
/// (`fixed`, as exchanges count), or over every interval of its length (`sliding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Bucket = 0,
    Fixed = 1,
    Sliding = 2,
}

impl Kind {
    /// The kind's name as a window spec writes it (`"1200/1m fixed"`); "bucket" for GCRA.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bucket => "bucket",
            Kind::Fixed => "fixed",
            Kind::Sliding => "sliding",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "bucket" => Some(Kind::Bucket),
            "fixed" => Some(Kind::Fixed),
            "sliding" => Some(Kind::Sliding),
            _ => None,
        }
    }

    fn from_bits(bits: u64) -> Kind {
        match bits & KIND_MASK {
            1 => Kind::Fixed,
            2 => Kind::Sliding,
            _ => Kind::Bucket,
        }
    }
}

/// How fast a bucket refills and how much it holds.
///
/// For a `Fixed` or `Sliding` window, `interval` is the window's length in nanoseconds and
/// `burst` the requests it admits per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds per token (the refill interval), at least 1.
    pub interval: u64,
    /// Tokens the bucket holds when full, at least 1.
    pub burst: u64,
    pub kind: Kind,
}

/// Why a quota cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaError {
    ZeroRequests,
    ZeroWindow,
    ZeroBurst,
    /// More than one token per nanosecond, or a burst so large the arithmetic overflows.
    OutOfRange,
    /// A sliding window admitting more than `MAX_SLIDING` requests (its log is that long).
    SlidingTooLarge,
}

impl Quota {
    /// `max_requests` tokens per `window` nanoseconds, holding `burst` tokens when full.
    ///
    /// The interval is rounded up to the nanosecond: 3 per second refills one token every
    /// 333,333,334 ns, never faster than the rate the exchange enforces (rounded to the
    /// nearest, 333,333,333 ns, a bucket would admit a call too many every 333 s).
    pub fn per_window(max_requests: u64, window: u64, burst: u64) -> Result<Quota, QuotaError> {
        if max_requests == 0 {
            return Err(QuotaError::ZeroRequests);
        }
        if window == 0 {
            return Err(QuotaError::ZeroWindow);
        }
        if max_requests > window {
            return Err(QuotaError::OutOfRange);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let interval = (window as u128).div_ceil(max_requests as u128) as u64;
        if interval == 0 || interval.checked_mul(burst).is_none() {
            return Err(QuotaError::OutOfRange);
        }
        Ok(Quota {
            interval,
            burst,
            kind: Kind::Bucket,
        })
    }

    /// A `Fixed` or `Sliding` window: `max_requests` per `window` nanoseconds, counted
    /// (never more than `max_requests`, no burst of its own).
    pub fn counted(kind: Kind, max_requests: u64, window: u64) -> Result<Quota, QuotaError> {
        if kind == Kind::Bucket {
            return Quota::per_window(max_requests, window, max_requests);
        }
        if max_requests == 0 {
            return Err(QuotaError::ZeroRequests);
        }
        if window == 0 {
            return Err(QuotaError::ZeroWindow);
        }
        if kind == Kind::Sliding && max_requests > MAX_SLIDING {
            return Err(QuotaError::SlidingTooLarge);
        }
        if max_requests > fixed_window::MAX_COUNT {
            return Err(QuotaError::OutOfRange);
        }
        Ok(Quota {
            interval: window,
            burst: max_requests,
            kind,
        })
    }

    /// How far ahead of now the theoretical arrival time may run.
    #[inline]
    pub fn tolerance(&self) -> u64 {
        self.interval * self.burst
    }
}

/// The outcome of an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admitted,
    /// Not enough tokens now; this many nanoseconds until there are.
    Rejected {
        wait: u64,
    },
    /// More tokens than the bucket can ever hold: no wait will help.
    Impossible,
}

/// Most windows one bucket holds (an exchange publishes two or three).
pub const MAX_WINDOWS: usize = 4;

/// Requests the sliding windows of one bucket admit between them: the length of the log
/// of admission times they share (8 bytes an entry, in every bucket, shared ones too).
pub const MAX_SLIDING: u64 = 128;

/// The `windows` word: the count in its low byte, each window's `Kind` in a byte above,
/// so that a bucket of one GCRA window reads as 1 (the hot path's single comparison).
const KIND_SHIFT: u64 = 8;
const KIND_MASK: u64 = 0xff;

/// The TAT one take left in each window (0 past the bucket's windows): the instant until
/// which that take's tokens are owed, which bounds what its refund may give back.
pub type Taken = [u64; MAX_WINDOWS];

/// The bit of a window's word that selects the parameter slot in force.
const SLOT_BIT: u64 = 1 << 63;
/// The TAT's bits of a window's word (ns: 292 years of a monotonic clock).
const TAT_BITS: u64 = SLOT_BIT - 1;

/// A window's rate: one of its two parameter slots.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Params {
    /// Nanoseconds per token (a counted window: its length).
    pub(crate) interval: AtomicU64,
    /// How far ahead of now the TAT may run for a high-priority acquire (the whole burst;
    /// a counted window: the requests it admits).
    pub(crate) tolerance: AtomicU64,
    /// The same for a normal acquire: the burst less the priority reserve.
    pub(crate) normal_tolerance: AtomicU64,
}

impl Params {
    fn store(&self, quota: Quota, reserve: u64) {
        self.interval.store(quota.interval, Ordering::Relaxed);
        let normal = quota.burst.saturating_sub(reserve) * quota.interval;
        self.normal_tolerance.store(normal, Ordering::Relaxed);
        self.tolerance.store(quota.tolerance(), Ordering::Relaxed);
    }

    /// A counted window's length and limits (requests, not nanoseconds).
    pub(crate) fn store_counted(&self, quota: Quota, reserve: u64) {
        self.interval.store(quota.interval, Ordering::Relaxed);
        let normal = quota.burst.saturating_sub(reserve);
        self.normal_tolerance.store(normal, Ordering::Relaxed);
        self.tolerance.store(quota.burst, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn tolerance(&self, high: bool) -> u64 {
        if high {
            self.tolerance.load(Ordering::Relaxed)
        } else {
            self.normal_tolerance.load(Ordering::Relaxed)
        }
    }
}

/// One window of a bucket: its own GCRA word with its own rate and burst.
///
/// The word holds the TAT and, in its top bit, which of the two parameter slots is in
/// force. A rate change fills the other slot, then switches to it and rescales the TAT
/// in one CAS of the word: an acquire reads the slot its word names, so it never sees an
/// interval of one rate with a tolerance of another, nor a TAT in the units of another.
/// Applying the same change twice (two processes loading one reload) rescales once: the
/// second finds the new rate already in force.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Window {
    /// Theoretical arrival time (when this window will be full again, ns on the clock)
    /// and the slot in force (`SLOT_BIT`). A `Fixed` or `Sliding` window keeps its own
    /// word here instead (see their files), and its limits in `slots[0]`.
    pub(crate) word: AtomicU64,
    pub(crate) slots: [Params; 2],
}

impl Window {
    #[inline(always)]
    fn params(&self, word: u64) -> &Params {
        &self.slots[(word >> 63) as usize]
    }

    /// Sets the rate of a window nobody reads yet (a new bucket, an added window): slot 0,
    /// full. A sliding window's log starts at `offset` of the bucket's log (cleared).
    fn init<'a>(
        &self,
        quota: Quota,
        reserve: u64,
        log: impl FnOnce() -> &'a SlidingLog,
        offset: u64,
    ) {
        match quota.kind {
            Kind::Bucket => self.slots[0].store(quota, reserve),
            Kind::Fixed => self.slots[0].store_counted(quota, reserve),
            Kind::Sliding => {
                self.slots[0].store_counted(quota, reserve);
                self.slots[1].interval.store(offset, Ordering::Relaxed);
                for entry in log().range(offset, quota.burst) {
                    entry.store(0, Ordering::Relaxed);
                }
            }
        }
        self.word.store(0, Ordering::Release);
    }

    /// Takes `cost` tokens by CAS; on success returns the TAT this take produced: the
    /// instant until which the tokens it took are owed (what bounds a later refund).
    #[inline(always)]
    fn take(&self, cost: u64, now: u64, high: bool) -> Result<u64, Decision> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let params = self.params(word);
            let interval = params.interval.load(Ordering::Relaxed);
            let new_tat = decide(word & TAT_BITS, now, cost, interval, params.tolerance(high))?;
            match self.word.compare_exchange_weak(
                word,
                new_tat.min(TAT_BITS) | (word & SLOT_BIT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(new_tat),
                Err(current) => word = current,
            }
        }
    }

    /// What `take` would decide now, without taking anything.
    fn peek(&self, cost: u64, now: u64, high: bool) -> Result<u64, Decision> {
        let word = self.word.load(Ordering::Acquire);
        let params = self.params(word);
        decide(
            word & TAT_BITS,
            now,
            cost,
            params.interval.load(Ordering::Relaxed),
            params.tolerance(high),
        )
    }

    /// Changes the TAT by `change` (given the TAT and the interval in force; `None`: leave
    /// it), keeping the slot, in one CAS.
    fn update(&self, change: impl Fn(u64, u64) -> Option<u64>) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let interval = self.params(word).interval.load(Ordering::Relaxed);
                change(word & TAT_BITS, interval).map(|tat| tat.min(TAT_BITS) | (word & SLOT_BIT))
            });
    }

    /// Gives back `cost` tokens, an operator's refund with no take to bound it. Below
    /// `now` the window is simply full, so the subtraction needs no floor other than zero.
    fn refund(&self, cost: u64) {
        self.update(|tat, interval| Some(tat.saturating_sub(cost.saturating_mul(interval))));
    }

    /// Gives back at most `cost` tokens of the debt that one take (which left the TAT at
    /// `own_tat`) still holds: `min(cost * interval, own_tat - now)`. Whatever of it the
    /// clock has already passed was refilled anyway, and a later take that found the
    /// window full (its `now` past `own_tat`) owes nothing to this one, so a late refund
    /// can never erase other calls' debt. The clock is read after the word is loaded, on
    /// every attempt: a take whose TAT this CAS sees read its clock before, so `now` is at
    /// least that take's `now`.
    fn give_back(&self, cost: u64, own_tat: u64, clock: &Clock) {
        self.update(|tat, interval| {
            let owed = own_tat
                .saturating_sub(clock.now())
                .min(cost.saturating_mul(interval));
            (owed > 0).then(|| tat.saturating_sub(owed))
        });
    }

    /// Charges `cost` tokens unconditionally: the call already happened, so the window
    /// may go into debt beyond its burst.
    fn charge(&self, cost: u64, now: u64) {
        self.update(|tat, interval| {
            Some(tat.max(now).saturating_add(cost.saturating_mul(interval)))
        });
    }

    /// Makes exactly `used` tokens count as spent at `now`.
    fn sync(&self, used: u64, now: u64) {
        self.update(|_, interval| Some(now.saturating_add(used.saturating_mul(interval))));
    }

    fn quota(&self) -> Quota {
        let params = self.params(self.word.load(Ordering::Acquire));
        let interval = params.interval.load(Ordering::Relaxed);
        Quota {
            interval,
            burst: params.tolerance.load(Ordering::Relaxed) / interval.max(1),
            kind: Kind::Bucket,
        }
    }

    fn tokens_at(&self, now: u64) -> f64 {
        let word = self.word.load(Ordering::Acquire);
        let params = self.params(word);
        let tat = (word & TAT_BITS).max(now);
        let interval = params.interval.load(Ordering::Relaxed).max(1);
        let limit = now.saturating_add(params.tolerance.load(Ordering::Relaxed));
        limit.saturating_sub(tat) as f64 / interval as f64
    }

    /// Switches to `quota` (and the reserve's share of it) in one CAS: the other slot is
    /// filled first, then the word names it and carries the TAT rescaled from the old
    /// interval to the new one, so the tokens already spent stay spent. Concurrent
    /// switches of one window to different rates are the caller's to serialise (the
    /// binding's lock in one process); the same rate applied twice rescales once.
    fn switch(&self, quota: Quota, reserve: u64, now: u64) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let old_interval = self.params(word).interval.load(Ordering::Relaxed);
            let next = &self.slots[1 - (word >> 63) as usize];
            next.store(quota, reserve);
            let tat = word & TAT_BITS;
            let tat = if tat > now && old_interval != quota.interval && old_interval != 0 {
                let debt = (tat - now) as u128 * quota.interval as u128 / old_interval as u128;
                now.saturating_add(debt.min(u64::MAX as u128) as u64)
            } else {
                tat
            };
            let switched = tat.min(TAT_BITS) | (!word & SLOT_BIT);
            match self.word.compare_exchange_weak(
                word,
                switched,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }
}

/// The atomics of one bucket, laid out for shared memory as well as for this process:
/// its head, its other windows, its tail (see `BucketPlace` for a bucket of this process,
/// which keeps its other windows apart and makes them only when it has several).
///
/// The first 64 bytes are the first window (its word and both parameter slots) and the
/// window count; the pause and the counters follow on the next line, so that a
/// one-window acquire touches two cache lines whatever the features configured.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BucketState {
    head: BucketHead,
    more: MoreWindows,
    tail: BucketTail,
    _spare: [AtomicU64; 2],
}

/// What every acquire reads: the first window, the window count, the pause, the counts.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BucketHead {
    first: Window,
    /// Windows in use (1..=MAX_WINDOWS).
    windows: AtomicU64,
    /// Every acquire is refused until this instant (ns on the bucket's clock; 0: never).
    paused_until: AtomicU64,
    allowed: AtomicU64,
    rejected: AtomicU64,
}

/// The windows after the first.
type MoreWindows = [Window; MAX_WINDOWS - 1];

/// What only a change of the windows reads.
#[repr(C)]
#[derive(Debug, Default)]
struct BucketTail {
    /// Tokens of every window kept for high-priority acquires.
    reserve: AtomicU64,
    /// Who is changing the windows (0: nobody; see `Changing`).
    changing: AtomicU64,
}

/// A bucket as a shared file holds it: its atomics, then its sliding windows' log (when
/// their last requests were admitted, each window its range). A bucket of this process
/// makes its log only once a sliding window needs it (`BucketPlace`): 1 KiB saved in
/// every other bucket (issue 19).
#[repr(C)]
#[derive(Debug, Default)]
pub struct SharedBucketState {
    pub bucket: BucketState,
    pub log: SlidingLog,
}

impl SharedBucketState {
    /// A full bucket of several windows (checked by `check_windows`) and a reserve.
    pub fn with_windows(quotas: &[Quota], reserve: u64) -> Self {
        let state = SharedBucketState::default();
        let bucket = &state.bucket;
        let window = |i: usize| {
            if i == 0 {
                &bucket.head.first
            } else {
                &bucket.more[i - 1]
            }
        };
        init(&bucket.head, &bucket.tail, window, quotas, reserve, || {
            &state.log
        });
        state
    }

    /// `BucketState::refusing`, its log empty (see `Layout::lost`): no allocation.
    pub fn refusing() -> Self {
        SharedBucketState {
            bucket: BucketState::refusing(),
            log: SlidingLog::default(),
        }
    }
}

/// Where a bucket's other windows and its log are: made on first use for a bucket of
/// this process (owned by its `LocalBucket`, which frees them), set from the start for a
/// shared one (places in its file, kept mapped by its `SharedCells`).
#[derive(Default)]
struct Cells {
    more: Part<MoreWindows>,
    log: Part<SlidingLog>,
}

/// Where a part of a bucket's state kept apart from its head is (null: not made yet). A
/// pointer set once rather than a `OnceLock`: 8 bytes rather than 16 in every bucket
/// (issue 19).
struct Part<T>(AtomicPtr<T>);

impl<T> Default for Part<T> {
    fn default() -> Self {
        Part(AtomicPtr::new(std::ptr::null_mut()))
    }
}

impl<T> Part<T> {
    /// A part at `place` (in a shared mapping), set from the start.
    fn at(place: &T) -> Self {
        Part(AtomicPtr::new(place as *const T as *mut T))
    }

    /// The part, if it was made or set.
    #[inline(always)]
    fn get(&self) -> Option<&T> {
        // SAFETY: a non-null pointer is set once (by `at` or `get_or_make`), to a block of
        // atomics (Sync, only read through shared references) that the bucket's owner keeps
        // alive as long as the bucket (see `Cells`).
        unsafe { self.0.load(PartOrdering::Acquire).as_ref() }
    }

    /// Takes a part of this process out, for its `LocalBucket` to free.
    fn take(&mut self) -> Option<Box<T>> {
        let part = std::mem::replace(self.0.get_mut(), std::ptr::null_mut());
        // SAFETY: in a `LocalBucket` a part is only ever made by `get_or_make` (a leaked
        // box), and `&mut self` means nothing reads it any more.
        (!part.is_null()).then(|| unsafe { Box::from_raw(part) })
    }
}

impl<T: Default> Part<T> {
    /// The part, made empty now if it was not: its `LocalBucket` frees it.
    #[inline(always)]
    fn get_or_make(&self) -> &T {
        match self.get() {
            Some(part) => part,
            None => self.make(),
        }
    }

    #[cold]
    #[inline(never)]
    fn make(&self) -> &T {
        let made = Box::into_raw(Box::<T>::default());
        let won = self.0.compare_exchange(
            std::ptr::null_mut(),
            made,
            PartOrdering::AcqRel,
            PartOrdering::Acquire,
        );
        match won {
            // SAFETY: just made, and from now on freed only with the bucket.
            Ok(_) => unsafe { &*made },
            Err(first) => {
                // Another thread made it first: its part is the one, ours goes.
                // SAFETY: ours was never shared; theirs is set once, as in `get`.
                unsafe {
                    drop(Box::from_raw(made));
                    &*first
                }
            }
        }
    }
}

/// A bucket of this process: its head, tail and cells, one allocation. Its other windows
/// (168 bytes) are made only once it has several: most buckets have one (issue 19).
#[derive(Default)]
struct LocalBucket {
    head: BucketHead,
    tail: BucketTail,
    cells: Cells,
}

impl Drop for LocalBucket {
    fn drop(&mut self) {
        // The last place of this bucket is gone: its parts go with it.
        drop(self.cells.more.take());
        drop(self.cells.log.take());
    }
}

/// The cells of a shared bucket, and the mapping they point into, kept alive together.
struct SharedCells {
    _block: Place<SharedBucketState>,
    cells: Cells,
}

/// Where a bucket's state is: what `TokenBucket::over` runs on. Derefs to the bucket's
/// head (what every acquire reads); the tail and the cells are kept alive by the head's
/// owner.
#[derive(Clone)]
pub struct BucketPlace {
    head: Place<BucketHead>,
    tail: NonNull<BucketTail>,
    cells: NonNull<Cells>,
}

// SAFETY: the tail and the cells are atomics and once-cells (Sync) that the head's owner
// keeps alive; a BucketPlace only hands out shared references.
unsafe impl Send for BucketPlace {}
unsafe impl Sync for BucketPlace {}

impl BucketPlace {
    /// The state of a shared bucket, inside its mapping.
    pub fn shared(block: Place<SharedBucketState>) -> Self {
        let cells = Cells {
            more: Part::at(&block.bucket.more),
            log: Part::at(&block.log),
        };
        let home = Place::local(SharedCells {
            _block: block.clone(),
            cells,
        });
        BucketPlace {
            head: home.project(|home| &home._block.bucket.head),
            tail: NonNull::from(&block.bucket.tail),
            cells: NonNull::from(&home.cells),
        }
    }

    /// A bucket of this process: its other windows and its log are made now if it needs
    /// them, so that on the hot path they are only ever read.
    fn local(quotas: &[Quota], reserve: u64) -> Self {
        let local = Place::local(LocalBucket::default());
        let place = BucketPlace {
            head: local.project(|l| &l.head),
            tail: NonNull::from(&local.tail),
            cells: NonNull::from(&local.cells),
        };
        init(
            &place.head,
            place.tail(),
            |i| place.window(i),
            quotas,
            reserve,
            || place.log(),
        );
        place
    }

    #[inline(always)]
    fn tail(&self) -> &BucketTail {
        // SAFETY: kept alive by the head's owner (see the constructors).
        unsafe { self.tail.as_ref() }
    }

    #[inline(always)]
    fn cells(&self) -> &Cells {
        // SAFETY: kept alive by the head's owner (see the constructors).
        unsafe { self.cells.as_ref() }
    }

    /// The log, made (empty) on first use.
    #[inline(always)]
    fn log(&self) -> &SlidingLog {
        self.cells().log.get_or_make()
    }

    /// Window `i`; the windows after the first are made (empty) on first use.
    #[inline(always)]
    fn window(&self, i: usize) -> &Window {
        if i == 0 {
            &self.head.first
        } else {
            &self.more()[i - 1]
        }
    }

    #[inline(always)]
    fn more(&self) -> &MoreWindows {
        self.cells().more.get_or_make()
    }

    /// The windows after the first if they were made (a bucket of this process that only
    /// ever had one has none).
    fn more_if_made(&self) -> Option<&MoreWindows> {
        self.cells().more.get()
    }

    #[inline(always)]
    fn count(&self) -> usize {
        count_of(self.head.windows.load(Ordering::Acquire))
    }

    /// Window `i`, for the tests of the kinds' own files.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn window_for_tests(&self, i: usize) -> &Window {
        self.window(i)
    }

    /// The kind of window `i`.
    #[inline(always)]
    fn kind(&self, i: usize) -> Kind {
        kind_of(self.head.windows.load(Ordering::Acquire), i)
    }
}

impl std::ops::Deref for BucketPlace {
    type Target = BucketHead;

    #[inline(always)]
    fn deref(&self) -> &BucketHead {
        &self.head
    }
}

/// The admission log of a bucket's sliding windows: `MAX_SLIDING` instants, each
/// window's entries a contiguous range of it (see `sliding_window`).
#[repr(C)]
#[derive(Debug)]
pub struct SlidingLog([AtomicU64; MAX_SLIDING as usize]);

impl Default for SlidingLog {
    fn default() -> Self {
        SlidingLog(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl SlidingLog {
    /// The `len` entries from `offset` (clamped to the log: a corrupt offset in a shared
    /// file reads a shorter range, never out of bounds).
    #[inline(always)]
    pub(crate) fn range(&self, offset: u64, len: u64) -> &[AtomicU64] {
        let start = (offset as usize).min(self.0.len());
        let end = start.saturating_add(len as usize).min(self.0.len());
        &self.0[start..end]
    }
}

/// Why a set of windows cannot be a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowsError {
    /// No window, or more than `MAX_WINDOWS`.
    Count(usize),
    /// The priority reserve leaves normal acquires no token in the window at this index.
    ReserveTooLarge { window: usize, burst: u64 },
    /// The sliding windows admit this many requests between them, more than `MAX_SLIDING`.
    SlidingTooLarge(u64),
}

/// Checks a bucket's windows and its priority reserve.
pub fn check_windows(quotas: &[Quota], reserve: u64) -> Result<(), WindowsError> {
    if quotas.is_empty() || quotas.len() > MAX_WINDOWS {
        return Err(WindowsError::Count(quotas.len()));
    }
    for (window, quota) in quotas.iter().enumerate() {
        if reserve >= quota.burst {
            return Err(WindowsError::ReserveTooLarge {
                window,
                burst: quota.burst,
            });
        }
    }
    let sliding: u64 = quotas
        .iter()
        .filter(|q| q.kind == Kind::Sliding)
        .map(|q| q.burst)
        .sum();
    if sliding > MAX_SLIDING {
        return Err(WindowsError::SlidingTooLarge(sliding));
    }
    Ok(())
}

/// The `windows` word of these quotas: their count and kinds.
fn windows_word(quotas: &[Quota]) -> u64 {
    quotas
        .iter()
        .enumerate()
        .fold(quotas.len() as u64, |word, (i, q)| {
            word | (q.kind as u64) << (KIND_SHIFT * (i as u64 + 1))
        })
}

/// Where each sliding window's entries start in the log: after those of the sliding
/// windows before it.
fn log_offsets(quotas: &[Quota]) -> [u64; MAX_WINDOWS] {
    let mut offsets = [0; MAX_WINDOWS];
    let mut next = 0;
    for (i, q) in quotas.iter().enumerate().take(MAX_WINDOWS) {
        offsets[i] = next;
        if q.kind == Kind::Sliding {
            next += q.burst;
        }
    }
    offsets
}

/// Fills a bucket nobody reads yet with several windows (checked by `check_windows`) and a
/// reserve; `log` is only called if a window is sliding, `window` for each window given.
fn init<'a, 'w>(
    head: &BucketHead,
    tail: &BucketTail,
    window: impl Fn(usize) -> &'w Window,
    quotas: &[Quota],
    reserve: u64,
    log: impl Fn() -> &'a SlidingLog,
) {
    tail.reserve.store(reserve, Ordering::Relaxed);
    let offsets = log_offsets(quotas);
    for (i, quota) in quotas.iter().enumerate() {
        window(i).init(*quota, reserve, &log, offsets[i]);
    }
    head.windows.store(windows_word(quotas), Ordering::Release);
}

impl BucketState {
    /// A bucket that can never admit anything: one window of interval 1 ns holding no
    /// token, so every cost is `Impossible` (never a wait that would mislead a caller
    /// into retrying). What a shared bucket's memory becomes when its file is truncated
    /// under the process (see `sigbus`): plain stores, no allocation.
    pub fn refusing() -> Self {
        let state = BucketState::default();
        state.head.first.slots[0]
            .interval
            .store(1, Ordering::Relaxed);
        state.head.windows.store(1, Ordering::Relaxed);
        state
    }
}

#[inline(always)]
fn count_of(word: u64) -> usize {
    ((word & KIND_MASK) as usize).clamp(1, MAX_WINDOWS)
}

#[inline(always)]
fn kind_of(word: u64, i: usize) -> Kind {
    Kind::from_bits(word >> (KIND_SHIFT * (i as u64 + 1)))
}

/// The pure decision: from the current TAT, admit `cost` tokens at `now` or say how long
/// to wait. `None` for the new TAT when the cost can never fit.
#[inline]
fn decide(tat: u64, now: u64, cost: u64, interval: u64, tolerance: u64) -> Result<u64, Decision> {
    let Some(increment) = cost.checked_mul(interval).filter(|inc| *inc <= tolerance) else {
        return Err(Decision::Impossible);
    };
    let new_tat = tat.max(now).saturating_add(increment);
    let limit = now.saturating_add(tolerance);
    if new_tat <= limit {
        Ok(new_tat)
    } else {
        Err(Decision::Rejected {
            wait: new_tat - limit,
        })
    }
}

/// Turns (each a yield) that a rate change waits seeing the same change in progress
/// before taking it over: seconds, against the microseconds a change holds it.
#[cfg(not(any(test, loom)))]
const CHANGE_STEAL_AFTER: u32 = 1 << 24;
#[cfg(all(test, not(loom)))]
const CHANGE_STEAL_AFTER: u32 = 1 << 12;
#[cfg(loom)]
const CHANGE_STEAL_AFTER: u32 = u32::MAX;

/// Rate changes of one bucket, one at a time, between processes as between threads. A
/// change fills each window's spare parameter slot before switching to it in one CAS;
/// two changes to different rates filling it together could leave one rate's interval
/// with the other's burst in force, or rescale the debt from an interval the other one
/// wrote (loom shows both). Held for the few stores of one change, in the bucket's own
/// word (a shared file's too); a holder killed inside it (its process gone) is taken over
/// after `CHANGE_STEAL_AFTER` turns of seeing that same holder.
struct Changing<'a> {
    word: &'a AtomicU64,
    token: u64,
}

impl<'a> Changing<'a> {
    fn hold(word: &'a AtomicU64) -> Self {
        let token = change_token();
        let (mut seen, mut turns) = (0, 0u32);
        loop {
            match word.compare_exchange(0, token, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Changing { word, token },
                Err(holder) => {
                    if holder == seen {
                        turns = turns.saturating_add(1);
                    } else {
                        (seen, turns) = (holder, 0);
                    }
                    if turns >= CHANGE_STEAL_AFTER
                        && word
                            .compare_exchange(holder, token, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                    {
                        return Changing { word, token };
                    }
                    yield_now();
                }
            }
        }
    }
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        // Not ours any more if it was taken over (we were presumed gone): leave it.
        let _ = self
            .word
            .compare_exchange(self.token, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// A token no other change holds at once: the process id and a count of this process's
/// changes (never 0).
fn change_token() -> u64 {
    static CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = CHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) | (n & 0xffff_ffff).max(1)
}

/// A token bucket: its state (local or shared) and the clock it reads.
#[derive(Clone)]
pub struct TokenBucket {
    state: BucketPlace,
    clock: Clock,
}

impl TokenBucket {
    /// A full bucket owned by this process.
    pub fn new(quota: Quota, clock: Clock) -> Self {
        TokenBucket::with_windows(&[quota], 0, clock)
    }

    /// A full bucket with several windows, all or nothing (see `check_windows`).
    pub fn with_windows(quotas: &[Quota], reserve: u64, clock: Clock) -> Self {
        TokenBucket {
            state: BucketPlace::local(quotas, reserve),
            clock,
        }
    }

    /// A bucket over existing state (for example in a shared mapping).
    pub fn over(state: BucketPlace, clock: Clock) -> Self {
        TokenBucket { state, clock }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The state this bucket reads, for another view of it (another clock, in tests).
    pub fn state_place(&self) -> BucketPlace {
        self.state.clone()
    }

    /// Whether this bucket's sliding-window log was made (a test of issue 19's saving).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn log_made(&self) -> bool {
        self.state.cells().log.get().is_some()
    }

    /// Whether this bucket's windows after the first were made (a test of issue 19's
    /// saving).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn more_windows_made(&self) -> bool {
        self.state.more_if_made().is_some()
    }

    /// Takes `cost` tokens if the bucket holds them now; never waits.
    #[inline]
    pub fn try_acquire(&self, cost: u64) -> Decision {
        let now = self.clock.now();
        self.acquire_at(cost, now, false)
    }

    /// `try_acquire` at a given instant (the clock already read by the caller).
    #[inline]
    pub fn try_acquire_at(&self, cost: u64, now: u64) -> Decision {
        self.acquire_at(cost, now, false)
    }

    /// Takes `cost` tokens from every window or from none; `high` may use the reserve.
    #[inline(always)]
    pub fn acquire_at(&self, cost: u64, now: u64, high: bool) -> Decision {
        match self.reserve_at(cost, now, high) {
            Ok(_) => Decision::Admitted,
            Err(decision) => decision,
        }
    }

    /// `acquire_at`, keeping what the take left in each window (`Taken`): a reservation
    /// needs it to refund no more than it still owes (`give_back`).
    #[inline(always)]
    pub fn reserve_at(&self, cost: u64, now: u64, high: bool) -> Result<Taken, Decision> {
        let state = &self.state;
        let paused_until = state.paused_until.load(Ordering::Relaxed);
        let outcome = if paused_until > now {
            Err(Decision::Rejected {
                wait: paused_until - now,
            })
        } else if state.windows.load(Ordering::Relaxed) <= 1 {
            state.first.take(cost, now, high).map(|tat| {
                let mut taken = [0; MAX_WINDOWS];
                taken[0] = tat;
                taken
            })
        } else {
            self.take_all(cost, now, high)
        };
        match outcome {
            Ok(taken) => {
                state.allowed.fetch_add(1, Ordering::Relaxed);
                Ok(taken)
            }
            Err(decision) => {
                state.rejected.fetch_add(1, Ordering::Relaxed);
                Err(decision)
            }
        }
    }

    /// Takes from each window in turn; when one refuses, gives back what the earlier ones
    /// took and still owe (`Window::give_back`: never another call's debt, whatever its
    /// `now`). Each window only ever admits within its own tolerance, so this never
    /// over-admits; while a refund is in flight another acquire may be refused although
    /// it would have fit (a conservative, transient error).
    #[inline(never)]
    fn take_all(&self, cost: u64, now: u64, high: bool) -> Result<Taken, Decision> {
        let word = self.state.windows.load(Ordering::Acquire);
        let count = count_of(word);
        let mut taken = [0u64; MAX_WINDOWS];
        for i in 0..count {
            match self.take_one(i, kind_of(word, i), cost, now, high) {
                Ok(own) => taken[i] = own,
                Err(decision) => {
                    for (j, own) in taken.iter().enumerate().take(i) {
                        self.give_back_one(j, kind_of(word, j), cost, *own);
                    }
                    return Err(self.worst(decision, i + 1, count, cost, now, high));
                }
            }
        }
        Ok(taken)
    }

    /// Takes `cost` from window `i` as its kind counts; `Ok` holds what a refund of this
    /// take needs (a GCRA window's TAT, a fixed window's interval, a sliding window's
    /// entries).
    #[inline(always)]
    fn take_one(
        &self,
        i: usize,
        kind: Kind,
        cost: u64,
        now: u64,
        high: bool,
    ) -> Result<u64, Decision> {
        let state = &self.state;
        let window = state.window(i);
        match kind {
            Kind::Bucket => window.take(cost, now, high),
            Kind::Fixed => fixed_window::take(window, cost, self.clock.wall(now), high),
            Kind::Sliding => sliding_window::take(window, self.state.log(), cost, now, high),
        }
    }

    /// What `take_one` would decide now, without taking anything.
    fn peek_one(&self, i: usize, cost: u64, now: u64, high: bool) -> Result<u64, Decision> {
        let state = &self.state;
        let window = state.window(i);
        match state.kind(i) {
            Kind::Bucket => window.peek(cost, now, high),
            Kind::Fixed => fixed_window::peek(window, cost, self.clock.wall(now), high),
            Kind::Sliding => sliding_window::peek(window, self.state.log(), cost, now, high),
        }
    }

    /// Gives back at most `cost` of what one take of window `i` (which returned `own`)
    /// still owes.
    fn give_back_one(&self, i: usize, kind: Kind, cost: u64, own: u64) {
        let state = &self.state;
        let window = state.window(i);
        match kind {
            Kind::Bucket => window.give_back(cost, own, &self.clock),
            Kind::Fixed => fixed_window::give_back(window, cost, own),
            Kind::Sliding => sliding_window::give_back(window, self.state.log(), cost, own),
        }
    }

    /// The refusal to report: impossible if any window can never fit the cost, else the
    /// longest wait among the refusing window and those after it.
    fn worst(
        &self,
        first: Decision,
        from: usize,
        count: usize,
        cost: u64,
        now: u64,
        high: bool,
    ) -> Decision {
        let mut worst = first;
        for i in from..count {
            match (worst, self.peek_one(i, cost, now, high)) {
                (Decision::Impossible, _) | (_, Ok(_)) => {}
                (_, Err(Decision::Impossible)) => worst = Decision::Impossible,
                (Decision::Rejected { wait: a }, Err(Decision::Rejected { wait: b })) => {
                    worst = Decision::Rejected { wait: a.max(b) }
                }
                (_, Err(other)) => worst = other,
            }
        }
        worst
    }

    /// Nanoseconds until `cost` tokens are available in every window (0 if they are now),
    /// or `None` if some window can never hold that many.
    pub fn wait_time(&self, cost: u64) -> Option<u64> {
        self.wait_time_lane(cost, false)
    }

    /// `wait_time` for a normal (`high == false`) or a high-priority acquire.
    pub fn wait_time_lane(&self, cost: u64, high: bool) -> Option<u64> {
        let state = &self.state;
        let now = self.clock.now();
        let paused = state
            .paused_until
            .load(Ordering::Relaxed)
            .saturating_sub(now);
        let mut wait = 0;
        for i in 0..state.count() {
            match self.peek_one(i, cost, now, high) {
                Ok(_) => {}
                Err(Decision::Rejected { wait: w }) => wait = wait.max(w),
                Err(_) => return None,
            }
        }
        Some(wait.max(paused))
    }

    /// Tokens available now to a high-priority acquire: the least over the windows,
    /// fractional while one is refilling.
    pub fn tokens_available(&self) -> f64 {
        let now = self.clock.now();
        self.window_tokens_at(now)
            .into_iter()
            .fold(f64::INFINITY, f64::min)
    }

    /// Tokens available now in each window (whole burst, reserve included).
    pub fn window_tokens(&self) -> Vec<f64> {
        self.window_tokens_at(self.clock.now())
    }

    fn window_tokens_at(&self, now: u64) -> Vec<f64> {
        let state = &self.state;
        (0..state.count())
            .map(|i| {
                let window = state.window(i);
                match state.kind(i) {
                    Kind::Bucket => window.tokens_at(now),
                    Kind::Fixed => fixed_window::tokens_at(window, self.clock.wall(now)),
                    Kind::Sliding => sliding_window::tokens_at(window, self.state.log(), now),
                }
            })
            .collect()
    }

    /// Refills the bucket to full at once (an operator's reset).
    pub fn refill(&self) {
        let state = &self.state;
        let count = state.count();
        // Every window made, in use or not (a window added back later starts afresh).
        let made = if state.more_if_made().is_some() {
            MAX_WINDOWS
        } else {
            1
        };
        for i in 0..made {
            let window = state.window(i);
            match state.kind(i) {
                Kind::Sliding if i < count => sliding_window::refill(window, self.state.log()),
                _ => window.update(|_, _| Some(0)),
            }
        }
    }

    /// Changes the first window's rate and burst in place. The tokens already spent stay
    /// spent: the debt that the TAT holds is rescaled from the old interval to the new
    /// one, in the same CAS that switches the rate (`Window::switch`).
    pub fn set_quota(&self, quota: Quota) {
        let state = &self.state;
        let reserve = state.tail().reserve.load(Ordering::Relaxed);
        if quota.kind == Kind::Bucket && state.kind(0) == Kind::Bucket {
            let _change = Changing::hold(&state.tail().changing);
            state.first.switch(quota, reserve, self.clock.now());
        } else {
            let mut quotas = self.quotas();
            quotas[0] = quota;
            self.set_windows(&quotas, reserve);
        }
    }

    /// Replaces every window and the reserve (checked by `check_windows`). A window that
    /// stays at its index keeps its spent tokens (rescaled); a new window starts full.
    ///
    /// A fixed window of the same length keeps its count; a window that changes kind, a
    /// fixed window that changes length and a sliding window that changes at all start
    /// afresh (full).
    pub fn set_windows(&self, quotas: &[Quota], reserve: u64) {
        let state = &self.state;
        let _change = Changing::hold(&state.tail().changing);
        let now = self.clock.now();
        let old = self.quotas();
        let offsets = log_offsets(quotas);
        state.tail().reserve.store(reserve, Ordering::Relaxed);
        for (i, quota) in quotas.iter().enumerate() {
            let window = state.window(i);
            let before = old.get(i);
            match (quota.kind, before) {
                (Kind::Bucket, Some(b)) if b.kind == Kind::Bucket => {
                    window.switch(*quota, reserve, now)
                }
                (Kind::Fixed, Some(b)) if b.kind == Kind::Fixed && b.interval == quota.interval => {
                    window.slots[0].store_counted(*quota, reserve)
                }
                (Kind::Sliding, Some(b))
                    if *b == *quota
                        && window.slots[1].interval.load(Ordering::Relaxed) == offsets[i] =>
                {
                    window.slots[0].store_counted(*quota, reserve)
                }
                _ => window.init(*quota, reserve, || self.state.log(), offsets[i]),
            }
        }
        state.windows.store(windows_word(quotas), Ordering::Release);
    }

    /// The first window's quota.
    pub fn quota(&self) -> Quota {
        self.quotas()[0]
    }

    /// Every window's quota, the first first.
    pub fn quotas(&self) -> Vec<Quota> {
        let state = &self.state;
        let word = state.windows.load(Ordering::Acquire);
        (0..count_of(word))
            .map(|i| {
                let window = state.window(i);
                match kind_of(word, i) {
                    Kind::Bucket => window.quota(),
                    kind => Quota {
                        interval: window.slots[0].interval.load(Ordering::Relaxed),
                        burst: window.slots[0].tolerance.load(Ordering::Relaxed),
                        kind,
                    },
                }
            })
            .collect()
    }

    /// Tokens of every window kept for high-priority acquires.
    pub fn reserve(&self) -> u64 {
        self.state.tail().reserve.load(Ordering::Relaxed)
    }

    /// Charges (`more == true`) or refunds `cost` tokens in every window: a reservation
    /// settled for more or less than it took. A charge is forced (the call happened), a
    /// refund never fills a window beyond full.
    pub fn adjust(&self, cost: u64, more: bool) {
        let state = &self.state;
        let now = self.clock.now();
        for i in 0..state.count() {
            let window = state.window(i);
            match (state.kind(i), more) {
                (Kind::Bucket, true) => window.charge(cost, now),
                (Kind::Bucket, false) => window.refund(cost),
                (Kind::Fixed, true) => fixed_window::charge(window, cost, self.clock.wall(now)),
                (Kind::Fixed, false) => fixed_window::refund(window, cost, self.clock.wall(now)),
                (Kind::Sliding, true) => {
                    sliding_window::charge(window, self.state.log(), cost, now)
                }
                (Kind::Sliding, false) => {
                    sliding_window::refund(window, self.state.log(), cost, now)
                }
            }
        }
    }

    /// Refunds `cost` tokens of the take that left `taken` (a reservation settled for
    /// less, or cancelled): in each window, no more than that take still owes, so a refund
    /// arriving after the window refilled and other calls took it gives nothing back.
    pub fn give_back(&self, cost: u64, taken: &Taken) {
        let state = &self.state;
        for (i, own) in taken.iter().enumerate().take(state.count()) {
            self.give_back_one(i, state.kind(i), cost, *own);
        }
    }

    /// Sets window `index` so that exactly `used` tokens count as spent now (the usage
    /// an exchange reports): `burst - used` remain, or a debt when `used` exceeds the burst.
    pub fn sync(&self, index: usize, used: u64) {
        let state = &self.state;
        let index = index.min(MAX_WINDOWS - 1);
        let window = state.window(index);
        let now = self.clock.now();
        match state.kind(index) {
            Kind::Bucket => window.sync(used, now),
            Kind::Fixed => fixed_window::sync(window, used, self.clock.wall(now)),
            Kind::Sliding => sliding_window::sync(window, self.state.log(), used, now),
        }
    }

    /// Refuses every acquire for `nanos` from now (never shortens a longer pause);
    /// `nanos == 0` lifts the pause.
    pub fn pause(&self, nanos: u64) {
        let state = &self.state;
        if nanos == 0 {
            state.paused_until.store(0, Ordering::Release);
        } else {
            let until = self.clock.now().saturating_add(nanos);
            state.paused_until.fetch_max(until, Ordering::AcqRel);
        }
    }

    /// Nanoseconds the pause still lasts (0: not paused).
    pub fn paused_for(&self) -> u64 {
        self.state
            .paused_until
            .load(Ordering::Acquire)
            .saturating_sub(self.clock.now())
    }

    /// Requests admitted so far.
    pub fn allowed(&self) -> u64 {
        self.state.allowed.load(Ordering::Relaxed)
    }

    /// Requests rejected so far.
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::*;
    use crate::clock::{ManualClock, NANOS_PER_SECOND};
    use proptest::prelude::*;

    const SECOND: u64 = NANOS_PER_SECOND;

    fn bucket(max: u64, window: u64, burst: u64) -> (TokenBucket, ManualClock) {
        let clock = ManualClock::new(1_000 * SECOND);
        let quota = Quota::per_window(max, window, burst).unwrap();
        (TokenBucket::new(quota, Clock::Manual(clock.clone())), clock)
    }

    #[test]
    fn a_new_bucket_starts_full_and_admits_exactly_its_burst() {
        let (bucket, _clock) = bucket(100, 60 * SECOND, 100);
        let admitted = (0..150)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 100);
        assert_eq!(bucket.allowed(), 100);
        assert_eq!(bucket.rejected(), 50);
    }

    #[test]
    fn a_rejection_says_how_long_until_the_next_token() {
        let (bucket, _clock) = bucket(100, 60 * SECOND, 100);
        for _ in 0..100 {
            bucket.try_acquire(1);
        }
        // 100 per 60 s refills one token every 0.6 s.
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 600_000_000 }
        );
        assert_eq!(bucket.wait_time(1), Some(600_000_000));
        assert_eq!(bucket.wait_time(3), Some(1_800_000_000));
    }

    #[test]
    fn tokens_refill_continuously_at_the_quota_rate() {
        let (bucket, clock) = bucket(10, SECOND, 10);
        for _ in 0..10 {
            bucket.try_acquire(1);
        }
        assert_eq!(bucket.tokens_available(), 0.0);
        clock.advance(SECOND / 4);
        assert!((bucket.tokens_available() - 2.5).abs() < 1e-9);
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 50_000_000 }
        );
    }

    #[test]
    fn does_not_allow_one_extra_token_after_a_long_idle_interval() {
        let (bucket, clock) = bucket(5, SECOND, 5);
        clock.advance(365 * 24 * 3600 * SECOND);
        let admitted = (0..10)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn the_last_nanosecond_of_refill_is_honoured() {
        let (bucket, clock) = bucket(1, SECOND, 1);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        clock.advance(SECOND - 1);
        assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: 1 });
        clock.advance(1);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
    }

    #[test]
    fn a_cost_larger_than_the_burst_is_impossible_not_merely_rejected() {
        let (bucket, _clock) = bucket(10, SECOND, 10);
        assert_eq!(bucket.try_acquire(11), Decision::Impossible);
        assert_eq!(bucket.wait_time(11), None);
        assert_eq!(bucket.try_acquire(10), Decision::Admitted);
    }

    #[test]
    fn a_burst_smaller_than_the_rate_caps_what_an_idle_bucket_holds() {
        let (bucket, _clock) = bucket(100, SECOND, 10);
        let admitted = (0..100)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn changing_the_quota_keeps_the_tokens_already_spent() {
        let (bucket, _clock) = bucket(10, SECOND, 10);
        for _ in 0..10 {
            bucket.try_acquire(1);
        }
        bucket.set_quota(Quota::per_window(20, SECOND, 20).unwrap());
        // Spent 10 of a now-20 burst: 10 remain, none more.
        let admitted = (0..30)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn the_same_rate_change_applied_twice_rescales_the_debt_once() {
        // "10/1s" -> "10/60s" with half the burst spent, applied by two processes (two
        // views of one state): 5 tokens owed at 6 s each, 30 s, not 30 minutes.
        let (bucket, clock) = bucket(10, SECOND, 10);
        assert_eq!(bucket.try_acquire(5), Decision::Admitted);
        let other = TokenBucket::over(bucket.state_place(), Clock::Manual(clock.clone()));
        let slower = Quota::per_window(10, 60 * SECOND, 10).unwrap();
        bucket.set_quota(slower);
        other.set_quota(slower);
        assert_eq!(bucket.wait_time(6), Some(6 * SECOND));
        assert_eq!(bucket.try_acquire(5), Decision::Admitted);
    }

    #[test]
    fn a_rate_change_never_shows_an_acquire_a_tolerance_of_one_rate_with_an_interval_of_another() {
        // 4 threads acquire while the rate flips between 1 per 10 s (burst 1) and 100 per
        // second (burst 100): a legal cost of 1 is never impossible.
        let (bucket, _clock) = bucket(1, 10 * SECOND, 1);
        let fast = Quota::per_window(100, SECOND, 100).unwrap();
        let slow = Quota::per_window(1, 10 * SECOND, 1).unwrap();
        let impossible = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20_000 {
                        if bucket.try_acquire(1) == Decision::Impossible {
                            impossible.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
            scope.spawn(|| {
                for i in 0..20_000 {
                    bucket.set_quota(if i % 2 == 0 { fast } else { slow });
                }
            });
        });
        assert_eq!(impossible.into_inner(), 0);
    }

    #[test]
    fn a_bucket_of_one_window_makes_no_other_windows_until_it_is_given_several() {
        let (bucket, clock) = bucket(2, SECOND, 2);
        let view = TokenBucket::over(bucket.state_place(), Clock::Manual(clock));
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        bucket.refill();
        bucket.set_quota(Quota::per_window(3, SECOND, 3).unwrap());
        assert!(!bucket.more_windows_made());
        let slower = Quota::per_window(1, SECOND, 1).unwrap();
        bucket.set_windows(&[bucket.quota(), slower], 0);
        assert!(view.more_windows_made());
        assert_eq!(view.try_acquire(1), Decision::Admitted);
        assert_eq!(bucket.try_acquire(1), Decision::Rejected { wait: SECOND });
    }

    #[test]
    fn a_rate_change_left_half_done_by_a_killed_process_is_taken_over() {
        let (bucket, _clock) = bucket(2, SECOND, 2);
        // A process killed inside its change: its token stays in the bucket's word.
        let gone = (u64::from(u32::MAX) << 32) | 7;
        bucket.state.tail().changing.store(gone, Ordering::Relaxed);
        let slower = Quota::per_window(2, 4 * SECOND, 2).unwrap();
        bucket.set_quota(slower);
        assert_eq!(bucket.quota(), slower);
        assert_eq!(bucket.state.tail().changing.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_rate_that_does_not_divide_its_window_never_refills_faster_than_the_rate() {
        // 3 per second: a token every 333,333,334 ns; at 333,333,333 ns, 3 tokens would
        // refill in 999,999,999 ns, faster than the exchange's 3 per second.
        assert_eq!(
            Quota::per_window(3, SECOND, 3).unwrap().interval,
            333_333_334
        );
        for (max, window) in [(3, SECOND), (7, 60 * SECOND), (1_200, 60 * SECOND), (9, 1)] {
            if let Ok(quota) = Quota::per_window(max, window, 1) {
                assert!(quota.interval * max >= window, "{max} per {window} ns");
            }
        }
    }

    #[test]
    fn quota_rejects_zero_and_overflowing_parameters() {
        assert_eq!(
            Quota::per_window(0, SECOND, 1),
            Err(QuotaError::ZeroRequests)
        );
        assert_eq!(Quota::per_window(1, 0, 1), Err(QuotaError::ZeroWindow));
        assert_eq!(Quota::per_window(1, SECOND, 0), Err(QuotaError::ZeroBurst));
        assert_eq!(Quota::per_window(10, 1, 1), Err(QuotaError::OutOfRange));
        assert_eq!(
            Quota::per_window(1, u64::MAX / 2, 4),
            Err(QuotaError::OutOfRange)
        );
    }

    #[test]
    fn eight_threads_admit_exactly_the_burst_between_them() {
        let quota = Quota::per_window(1_000, 3600 * SECOND, 1_000).unwrap();
        let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
        assert_eq!(admitted_by_eight_threads(&bucket, 10_000), 1_000);
        assert_eq!(bucket.allowed() + bucket.rejected(), 80_000);
    }

    /// Clock advances (ns, up to 1.5 s) and costs (1 to 3): what the counted windows'
    /// properties are driven by.
    pub(crate) fn advances_and_costs() -> impl Strategy<Value = Vec<(u64, u64)>> {
        proptest::collection::vec((0u64..1_500_000_000, 1u64..4), 1..200)
    }

    /// An acquire's outcome as a model states it: admitted, refused, or never (None).
    pub(crate) fn outcome(decision: Decision) -> Option<bool> {
        match decision {
            Decision::Admitted => Some(true),
            Decision::Rejected { .. } => Some(false),
            Decision::Impossible => None,
        }
    }

    /// What 8 threads admit between them, each trying `attempts` acquires of 1 at once.
    pub(crate) fn admitted_by_eight_threads(bucket: &TokenBucket, attempts: usize) -> usize {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(move || {
                        (0..attempts)
                            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }

    fn windows(specs: &[(u64, u64)], reserve: u64) -> (TokenBucket, ManualClock) {
        let clock = ManualClock::new(1_000 * SECOND);
        let quotas: Vec<Quota> = specs
            .iter()
            .map(|(max, window)| Quota::per_window(*max, *window, *max).unwrap())
            .collect();
        check_windows(&quotas, reserve).unwrap();
        let bucket = TokenBucket::with_windows(&quotas, reserve, Clock::Manual(clock.clone()));
        (bucket, clock)
    }

    #[test]
    fn the_tightest_window_decides_and_a_refusal_takes_from_no_window() {
        // 10 per second and 3 per 100 ms: the short window refuses the fourth call, and
        // the long one keeps the 7 tokens it would otherwise have lost.
        let (bucket, clock) = windows(&[(10, SECOND), (3, SECOND / 10)], 0);
        let admitted = (0..5)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 3);
        let tokens = bucket.window_tokens();
        assert!((tokens[0] - 7.0).abs() < 1e-9, "{tokens:?}");
        assert_eq!(tokens[1], 0.0);
        clock.advance(SECOND / 10 + 2); // 3 tokens of 33,333,334 ns (rounded up)
        assert_eq!(bucket.try_acquire(3), Decision::Admitted);
        assert!((bucket.window_tokens()[0] - 5.0).abs() < 1e-6);
    }

    #[test]
    fn a_refused_multi_window_acquire_reports_the_longest_wait() {
        let (bucket, _clock) = windows(&[(2, SECOND), (2, 10 * SECOND)], 0);
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        // Window 0 refills a token in 0.5 s, window 1 in 5 s.
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 5 * SECOND }
        );
        assert_eq!(bucket.wait_time(1), Some(5 * SECOND));
    }

    #[test]
    fn a_cost_one_window_can_never_hold_is_impossible() {
        let (bucket, _clock) = windows(&[(100, SECOND), (5, SECOND)], 0);
        assert_eq!(bucket.try_acquire(6), Decision::Impossible);
        assert_eq!(bucket.window_tokens()[0], 100.0);
    }

    #[test]
    fn normal_acquires_leave_the_reserve_to_high_priority_ones() {
        let (bucket, _clock) = windows(&[(10, SECOND)], 3);
        let normal = (0..10)
            .filter(|_| bucket.acquire_at(1, bucket.clock().now(), false) == Decision::Admitted)
            .count();
        assert_eq!(normal, 7);
        let high = (0..10)
            .filter(|_| bucket.acquire_at(1, bucket.clock().now(), true) == Decision::Admitted)
            .count();
        assert_eq!(high, 3);
    }

    #[test]
    fn a_pause_refuses_everything_until_it_ends() {
        let (bucket, clock) = bucket(10, SECOND, 10);
        bucket.pause(2 * SECOND);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: 2 * SECOND }
        );
        assert_eq!(
            bucket.acquire_at(1, clock.now(), true),
            Decision::Rejected { wait: 2 * SECOND }
        );
        bucket.pause(SECOND); // a shorter pause does not shorten the longer one
        clock.advance(SECOND);
        assert_eq!(bucket.wait_time(1), Some(SECOND));
        clock.advance(SECOND);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        bucket.pause(SECOND);
        bucket.pause(0);
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
    }

    #[test]
    fn settling_for_more_goes_into_debt_and_for_less_refunds_no_further_than_full() {
        let (bucket, _clock) = windows(&[(10, SECOND), (100, 60 * SECOND)], 0);
        assert_eq!(bucket.try_acquire(4), Decision::Admitted);
        bucket.adjust(12, true); // the call really cost 16
        assert_eq!(bucket.window_tokens()[0], 0.0);
        assert_eq!(bucket.wait_time(1), Some(SECOND * 7 / 10));
        bucket.adjust(100, false); // far more than was ever taken
        assert_eq!(bucket.window_tokens(), vec![10.0, 100.0]);
        assert_eq!(
            (0..20)
                .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
                .count(),
            10
        );
    }

    #[test]
    fn a_late_refund_gives_back_nothing_once_the_bucket_refilled_and_others_took_it() {
        // 10/s, burst 10: reserve 10; 2 s later others take all 10; settling for 2 must
        // not hand 8 more calls the budget (18 at one instant with burst 10).
        let (bucket, clock) = bucket(10, SECOND, 10);
        let taken = bucket.reserve_at(10, clock.now(), false).unwrap();
        clock.advance(2 * SECOND);
        let others = (0..10)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(others, 10);
        bucket.give_back(8, &taken);
        assert_eq!(
            bucket.try_acquire(1),
            Decision::Rejected { wait: SECOND / 10 }
        );
    }

    #[test]
    fn a_refund_gives_back_what_its_take_still_owes_and_no_more() {
        // Reserve 10 at t; at t + 0.5 s (5 refilled) others take 5; settling for 2 gives
        // back the 5 the reservation still owes, not 8: 2 used at t and 5 at t + 0.5 s
        // leave 5 of a burst of 10.
        let (bucket, clock) = bucket(10, SECOND, 10);
        let taken = bucket.reserve_at(10, clock.now(), false).unwrap();
        clock.advance(SECOND / 2);
        assert_eq!(bucket.try_acquire(5), Decision::Admitted);
        bucket.give_back(8, &taken);
        assert!((bucket.tokens_available() - 5.0).abs() < 1e-9);
        // At once, the whole unused estimate comes back, in every window.
        let (bucket, clock) = windows(&[(10, SECOND), (20, 60 * SECOND)], 0);
        let taken = bucket.reserve_at(6, clock.now(), false).unwrap();
        bucket.give_back(4, &taken);
        assert_eq!(bucket.window_tokens(), vec![8.0, 18.0]);
    }

    #[test]
    fn sync_makes_exactly_the_reported_usage_count_as_spent() {
        let (bucket, _clock) = windows(&[(1200, 60 * SECOND), (50, 10 * SECOND)], 0);
        bucket.sync(0, 1195);
        assert!((bucket.window_tokens()[0] - 5.0).abs() < 1e-9);
        assert_eq!(bucket.window_tokens()[1], 50.0);
        let admitted = (0..10)
            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
            .count();
        assert_eq!(admitted, 5);
        bucket.sync(0, 0);
        assert_eq!(bucket.window_tokens()[0], 1200.0);
    }

    #[test]
    fn changing_the_windows_keeps_spent_tokens_and_new_windows_start_full() {
        let (bucket, _clock) = windows(&[(10, SECOND)], 0);
        bucket.try_acquire(4);
        let quotas = [
            Quota::per_window(10, SECOND, 10).unwrap(),
            Quota::per_window(5, SECOND, 5).unwrap(),
        ];
        bucket.set_windows(&quotas, 0);
        assert_eq!(bucket.window_tokens(), vec![6.0, 5.0]);
    }

    #[test]
    fn windows_and_reserve_are_checked() {
        let q = Quota::per_window(5, SECOND, 5).unwrap();
        assert_eq!(check_windows(&[], 0), Err(WindowsError::Count(0)));
        assert_eq!(check_windows(&[q; 5], 0), Err(WindowsError::Count(5)));
        assert_eq!(
            check_windows(&[q], 5),
            Err(WindowsError::ReserveTooLarge {
                window: 0,
                burst: 5
            })
        );
        assert_eq!(check_windows(&[q; 4], 4), Ok(()));
    }

    #[test]
    fn a_bucket_state_keeps_the_first_window_on_one_cache_line_and_the_counters_on_the_next() {
        assert_eq!(std::mem::size_of::<Window>(), 56);
        assert_eq!(std::mem::offset_of!(BucketState, head.windows), 56);
        assert_eq!(std::mem::offset_of!(BucketState, head.paused_until), 64);
        assert_eq!(std::mem::offset_of!(BucketState, head.rejected), 80);
        assert_eq!(std::mem::offset_of!(BucketState, more), 88);
        assert_eq!(std::mem::offset_of!(BucketState, tail.reserve), 256);
        assert_eq!(std::mem::offset_of!(BucketState, tail.changing), 264);
        assert_eq!(std::mem::offset_of!(BucketState, _spare), 272);
        assert_eq!(std::mem::size_of::<BucketState>(), 288);
    }

    #[test]
    fn a_bucket_of_this_process_holds_one_window_in_120_bytes_not_the_shared_288() {
        // Head 88, tail 16, the pointers to its other windows and log 16 (issue 19).
        assert_eq!(std::mem::size_of::<LocalBucket>(), 120);
    }

    #[test]
    fn threads_making_a_part_at_once_all_get_the_one_that_was_set() {
        let part = Part::<SlidingLog>::default();
        let seen: Vec<usize> = std::thread::scope(|scope| {
            let makers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| part.get_or_make() as *const SlidingLog as usize))
                .collect();
            makers.into_iter().map(|m| m.join().unwrap()).collect()
        });
        let set = part.get().map(|log| log as *const SlidingLog as usize);
        assert!(seen.iter().all(|&address| Some(address) == set));
        let mut part = part;
        assert!(part.take().is_some());
        assert!(part.get().is_none());
    }

    #[test]
    fn a_shared_bucket_keeps_its_log_right_after_its_atomics_as_layout_7_did() {
        assert_eq!(std::mem::offset_of!(SharedBucketState, log), 288);
        assert_eq!(
            std::mem::size_of::<SharedBucketState>(),
            288 + 8 * MAX_SLIDING as usize
        );
    }

    /// A plain token bucket counting tokens in units of 1/interval ns: the reference model.
    struct ReferenceBucket {
        capacity_ns: u128,
        interval: u128,
        level_ns: u128,
        last: u64,
    }

    impl ReferenceBucket {
        fn acquire(&mut self, now: u64, cost: u64) -> bool {
            self.level_ns = (self.level_ns + (now - self.last) as u128).min(self.capacity_ns);
            self.last = now;
            let need = cost as u128 * self.interval;
            if need <= self.level_ns {
                self.level_ns -= need;
                true
            } else {
                false
            }
        }
    }

    /// Several plain token buckets, all or nothing: the reference for several windows.
    fn model_acquire(models: &mut [ReferenceBucket], now: u64, cost: u64) -> bool {
        for m in models.iter_mut() {
            m.level_ns = (m.level_ns + (now - m.last) as u128).min(m.capacity_ns);
            m.last = now;
        }
        if models
            .iter()
            .all(|m| cost as u128 * m.interval <= m.level_ns)
        {
            for m in models.iter_mut() {
                m.level_ns -= cost as u128 * m.interval;
            }
            true
        } else {
            false
        }
    }

    proptest! {
        #[test]
        fn several_windows_agree_with_plain_buckets_all_or_nothing(
            specs in proptest::collection::vec((1u64..30, 1u64..3_000, 1u64..30), 1..=MAX_WINDOWS),
            ops in proptest::collection::vec((0u64..500_000_000, 1u64..5), 1..200),
        ) {
            let quotas: Vec<Quota> = specs
                .iter()
                .map(|(max, ms, burst)| Quota::per_window(*max, ms * 1_000_000, *burst).unwrap())
                .collect();
            let clock = ManualClock::new(0);
            let bucket = TokenBucket::with_windows(&quotas, 0, Clock::Manual(clock.clone()));
            let mut models: Vec<ReferenceBucket> = quotas
                .iter()
                .map(|q| ReferenceBucket {
                    capacity_ns: q.tolerance() as u128,
                    interval: q.interval as u128,
                    level_ns: q.tolerance() as u128,
                    last: 0,
                })
                .collect();
            let smallest = quotas.iter().map(|q| q.burst).min().unwrap();
            for (advance, cost) in ops {
                clock.advance(advance);
                let expected = if cost > smallest {
                    None
                } else {
                    Some(model_acquire(&mut models, clock.now(), cost))
                };
                let actual = match bucket.try_acquire(cost) {
                    Decision::Admitted => Some(true),
                    Decision::Rejected { .. } => Some(false),
                    Decision::Impossible => None,
                };
                prop_assert_eq!(actual, expected);
            }
        }
    }

    proptest! {
        #[test]
        fn gcra_agrees_with_a_plain_token_bucket(
            max in 1u64..50,
            window_ms in 1u64..5_000,
            burst in 1u64..50,
            ops in proptest::collection::vec((0u64..2_000_000_000, 1u64..5), 1..200),
        ) {
            let quota = Quota::per_window(max, window_ms * 1_000_000, burst).unwrap();
            let clock = ManualClock::new(0);
            let bucket = TokenBucket::new(quota, Clock::Manual(clock.clone()));
            let mut model = ReferenceBucket {
                capacity_ns: quota.tolerance() as u128,
                interval: quota.interval as u128,
                level_ns: quota.tolerance() as u128,
                last: 0,
            };
            for (advance, cost) in ops {
                clock.advance(advance);
                let expected = if cost > burst {
                    None
                } else {
                    Some(model.acquire(clock.now(), cost))
                };
                let actual = match bucket.try_acquire(cost) {
                    Decision::Admitted => Some(true),
                    Decision::Rejected { .. } => Some(false),
                    Decision::Impossible => None,
                };
                prop_assert_eq!(actual, expected);
            }
        }
    }
}

/// Every interleaving of the CAS loop (loom): `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_`.
#[cfg(all(test, loom))]
pub(crate) mod loom_tests {
    use super::*;
    use crate::clock::ManualClock;

    /// What `threads` threads admit between them, one acquire of 1 each.
    pub(crate) fn admitted_by_threads(bucket: &TokenBucket, threads: usize) -> usize {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let bucket = bucket.clone();
                loom::thread::spawn(move || bucket.try_acquire(1) == Decision::Admitted)
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count()
    }

    /// A refund of `taken` (`cost`) racing a thread that tries two acquires of 1: what
    /// that thread admitted.
    pub(crate) fn admitted_beside_a_refund(bucket: &TokenBucket, cost: u64, taken: Taken) -> usize {
        let refund = {
            let bucket = bucket.clone();
            loom::thread::spawn(move || bucket.give_back(cost, &taken))
        };
        let take = {
            let bucket = bucket.clone();
            loom::thread::spawn(move || {
                (0..2)
                    .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
                    .count()
            })
        };
        refund.join().unwrap();
        take.join().unwrap()
    }

    #[test]
    fn loom_three_threads_share_a_budget_of_two_exactly() {
        crate::sync::model("loom_three_threads_share_a_budget_of_two_exactly", || {
            let quota = Quota::per_window(2, 1_000_000_000, 2).unwrap();
            let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
            let admitted = admitted_by_threads(&bucket, 3);
            assert_eq!(admitted, 2);
            assert_eq!(bucket.allowed(), 2);
            assert_eq!(bucket.rejected(), 1);
        });
    }

    #[test]
    fn loom_weighted_acquires_never_overdraw() {
        crate::sync::model("loom_weighted_acquires_never_overdraw", || {
            let quota = Quota::per_window(5, 1_000_000_000, 5).unwrap();
            let bucket = TokenBucket::new(quota, Clock::Manual(ManualClock::new(0)));
            let a = {
                let bucket = bucket.clone();
                loom::thread::spawn(move || bucket.try_acquire(3) == Decision::Admitted)
            };
            let b = {
                let bucket = bucket.clone();
                loom::thread::spawn(move || bucket.try_acquire(3) == Decision::Admitted)
            };
            let both = [a.join().unwrap(), b.join().unwrap()];
            assert_eq!(both.iter().filter(|ok| **ok).count(), 1);
            assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        });
    }

    #[test]
    fn loom_two_windows_never_over_admit() {
        // Window 0 holds 2 tokens, window 1 holds 1: whatever the interleaving (including
        // a refund in flight), at most one of three acquires is admitted, and the
        // tokens of a refused acquire always come back.
        crate::sync::model("loom_two_windows_never_over_admit", || {
            let quotas = [
                Quota::per_window(2, 1_000_000_000, 2).unwrap(),
                Quota::per_window(1, 1_000_000_000, 1).unwrap(),
            ];
            let bucket = TokenBucket::with_windows(&quotas, 0, Clock::Manual(ManualClock::new(0)));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let bucket = bucket.clone();
                    loom::thread::spawn(move || bucket.try_acquire(1) == Decision::Admitted)
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count();
            assert_eq!(admitted, 1);
            let tokens = bucket.window_tokens();
            assert_eq!(tokens[0], 2.0 - admitted as f64);
            assert_eq!(tokens[1], 1.0 - admitted as f64);
        });
    }

    #[test]
    fn loom_a_rollback_never_gives_back_a_later_take_at_a_later_now() {
        // Two windows of 1 token per second; window 1 is spent at t = 0. A (at t = 0)
        // takes window 0, is refused by window 1 and rolls back; B moves the clock to
        // t = 1 s and takes both. Whatever the interleaving, A's rollback never erases
        // B's debt: at t = 1 s each window holds one token less than was admitted.
        crate::sync::model(
            "loom_a_rollback_never_gives_back_a_later_take_at_a_later_now",
            || {
                let quotas = [
                    Quota::per_window(1, 1_000_000_000, 1).unwrap(),
                    Quota::per_window(1, 1_000_000_000, 1).unwrap(),
                ];
                let clock = ManualClock::new(0);
                let bucket = TokenBucket::with_windows(&quotas, 0, Clock::Manual(clock.clone()));
                bucket.sync(1, 1);
                let early = {
                    let bucket = bucket.clone();
                    loom::thread::spawn(move || bucket.try_acquire(1) == Decision::Admitted)
                };
                let late = {
                    let bucket = bucket.clone();
                    let clock = clock.clone();
                    loom::thread::spawn(move || {
                        clock.set(1_000_000_000).unwrap();
                        bucket.try_acquire(1) == Decision::Admitted
                    })
                };
                let admitted = [early.join().unwrap(), late.join().unwrap()]
                    .iter()
                    .filter(|ok| **ok)
                    .count();
                assert_eq!(admitted, 1);
                assert_eq!(bucket.window_tokens(), vec![0.0, 0.0]);
            },
        );
    }

    #[test]
    fn loom_a_late_refund_racing_takes_never_over_admits() {
        // Burst 2 at 1 token per second. A reservation of 2 is taken at t = 0; a thread
        // at t = 2 s (refilled) takes 2 while the reservation settles for 0. Whatever the
        // order, no third token is ever admitted at t = 2 s.
        crate::sync::model("loom_a_late_refund_racing_takes_never_over_admits", || {
            let clock = ManualClock::new(0);
            let quota = Quota::per_window(2, 2_000_000_000, 2).unwrap();
            let bucket = TokenBucket::new(quota, Clock::Manual(clock.clone()));
            let taken = bucket.reserve_at(2, 0, false).unwrap();
            clock.set(2_000_000_000).unwrap();
            let admitted = admitted_beside_a_refund(&bucket, 2, taken);
            assert_eq!(admitted, 2);
            assert_eq!(
                bucket.try_acquire(1),
                Decision::Rejected {
                    wait: 1_000_000_000
                }
            );
        });
    }

    #[test]
    fn loom_a_rate_change_racing_an_acquire_charges_it_in_one_rate_or_the_other() {
        // 2 per second (burst 2, 1 spent) changed to 2 per 4 s (burst 2): an acquire
        // racing the change is charged in the old units and rescaled, or in the new ones;
        // never `Impossible`, never under-charged. Afterwards the window holds exactly the
        // burst less what was admitted, in the new units.
        crate::sync::model(
            "loom_a_rate_change_racing_an_acquire_charges_it_in_one_rate_or_the_other",
            || {
                let clock = ManualClock::new(0);
                let quota = Quota::per_window(2, 1_000_000_000, 2).unwrap();
                let bucket = TokenBucket::new(quota, Clock::Manual(clock));
                assert_eq!(bucket.try_acquire(1), Decision::Admitted);
                let change = {
                    let bucket = bucket.clone();
                    loom::thread::spawn(move || {
                        bucket.set_quota(Quota::per_window(2, 4_000_000_000, 2).unwrap())
                    })
                };
                let acquire = {
                    let bucket = bucket.clone();
                    loom::thread::spawn(move || bucket.try_acquire(1))
                };
                change.join().unwrap();
                assert_eq!(acquire.join().unwrap(), Decision::Admitted);
                assert_eq!(bucket.window_tokens(), vec![0.0]);
                assert_eq!(
                    bucket.try_acquire(1),
                    Decision::Rejected {
                        wait: 2_000_000_000
                    }
                );
            },
        );
    }

    #[test]
    fn loom_two_different_rate_changes_at_once_leave_one_rate_whole_and_the_debt_in_it() {
        // Two processes applying two different reloads at the same instant: 2/s with one
        // token spent, changed to 2 per 4 s by one and to 2 per 8 s by the other. Whichever
        // lands last is in force whole, with the one token still owed in its units (2 s
        // or 4 s), never a mix of the two rates nor the debt scaled by the other's.
        crate::sync::model_bounded(
            "loom_two_different_rate_changes_at_once_leave_one_rate_whole_and_the_debt_in_it",
            2,
            || {
                let clock = ManualClock::new(0);
                let quota = Quota::per_window(2, 1_000_000_000, 2).unwrap();
                let bucket = TokenBucket::new(quota, Clock::Manual(clock));
                assert_eq!(bucket.try_acquire(1), Decision::Admitted);
                let four = Quota::per_window(2, 4_000_000_000, 2).unwrap();
                let eight = Quota::per_window(2, 8_000_000_000, 2).unwrap();
                let handles: Vec<_> = [four, eight]
                    .into_iter()
                    .map(|quota| {
                        let bucket = bucket.clone();
                        loom::thread::spawn(move || bucket.set_quota(quota))
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                let now = bucket.quota();
                assert!(now == four || now == eight, "a mix of two rates: {now:?}");
                assert_eq!(bucket.wait_time(2), Some(now.interval));
            },
        );
    }

    #[test]
    fn loom_the_same_rate_change_from_two_threads_rescales_once() {
        // Two processes loading one reload: 2/s -> 2 per 4 s with one token spent. Owed:
        // one token of the new rate (2 s), never two rescales (8 s).
        crate::sync::model_bounded(
            "loom_the_same_rate_change_from_two_threads_rescales_once",
            2,
            || {
                let clock = ManualClock::new(0);
                let quota = Quota::per_window(2, 1_000_000_000, 2).unwrap();
                let bucket = TokenBucket::new(quota, Clock::Manual(clock));
                assert_eq!(bucket.try_acquire(1), Decision::Admitted);
                let slower = Quota::per_window(2, 4_000_000_000, 2).unwrap();
                let handles: Vec<_> = (0..2)
                    .map(|_| {
                        let bucket = bucket.clone();
                        loom::thread::spawn(move || bucket.set_quota(slower))
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                assert_eq!(bucket.wait_time(2), Some(2_000_000_000));
            },
        );
    }

    #[test]
    fn loom_a_weighted_refusal_refunds_exactly_and_a_light_call_never_overdraws() {
        // Window 0 holds 2, window 1 holds 1. A heavy call (cost 2) always fails window 1
        // and refunds window 0; a light call (cost 1) may be refused while that refund is
        // in flight (the documented transient), but whatever happens, the tokens left are
        // exactly the burst less what was admitted, and at most one light call passes.
        crate::sync::model(
            "loom_a_weighted_refusal_refunds_exactly_and_a_light_call_never_overdraws",
            || {
                let quotas = [
                    Quota::per_window(2, 1_000_000_000, 2).unwrap(),
                    Quota::per_window(1, 1_000_000_000, 1).unwrap(),
                ];
                let bucket =
                    TokenBucket::with_windows(&quotas, 0, Clock::Manual(ManualClock::new(0)));
                let heavy = {
                    let bucket = bucket.clone();
                    loom::thread::spawn(move || bucket.try_acquire(2))
                };
                let lights: Vec<_> = (0..2)
                    .map(|_| {
                        let bucket = bucket.clone();
                        loom::thread::spawn(move || bucket.try_acquire(1) == Decision::Admitted)
                    })
                    .collect();
                assert_eq!(heavy.join().unwrap(), Decision::Impossible);
                let admitted = lights
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .filter(|ok| *ok)
                    .count();
                assert!(admitted <= 1);
                let tokens = bucket.window_tokens();
                assert_eq!(tokens[0], 2.0 - admitted as f64);
                assert_eq!(tokens[1], 1.0 - admitted as f64);
            },
        );
    }
}
