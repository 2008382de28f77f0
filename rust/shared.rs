//! Shared memory: a bucket's or a breaker's atomics in a memory-mapped file, so that every
//! process on the host that opens the same file draws on one budget and sees one circuit.
//!
//! The file is a 64-byte header followed by the state block (`SharedBucketState` or
//! `BreakerState`, both `#[repr(C)]` atomics). The state machines are the in-process ones,
//! run `over` a `Place` inside the mapping, so the hot path is the same compare-and-swap.
//! Nothing here takes a lock: a process killed at any instant leaves at most one finished
//! or one unfinished CAS behind, never a held lock.
//!
//! Creation is race-safe without a lock as well: the creator writes the header and the
//! state into a private temporary file and then `link`s it into place. `link` fails if the
//! name exists, so the file under its final name is always complete, and exactly one of
//! many processes starting at once wins; the others open the winner's file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::breaker::{Breaker, BreakerSettings, BreakerState, Window};
use crate::bucket::{BucketPlace, Quota, SharedBucketState, TokenBucket};
use crate::clock::Clock;
use crate::place::Place;
use crate::sigbus;

/// "PEAKRSL" and a NUL, read as a little-endian word: the first 8 bytes of every file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PEAKRSL\0");
/// Bumped whenever the header or a state block changes shape (3: the breaker's failure-rate
/// window, back-off, slow calls and manual states; 4: a bucket holds up to four windows, a
/// pause and a priority reserve; 5: two parameter slots per window, switched with the TAT
/// in one CAS; 6: window kinds in the windows word and the sliding windows' log; 7: the
/// breaker word's epochs widened to 37 bits).
pub const LAYOUT_VERSION: u64 = 7;
const HEADER_SIZE: usize = 64;
const PARAMS: usize = 3;
/// How many times an open retries when the file vanishes between `link` and `open`
/// (someone removed it): bounded, so a hostile directory cannot spin us forever.
const OPEN_ATTEMPTS: usize = 8;

/// The first 64 bytes of a shared file.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    layout_version: AtomicU64,
    /// What the state block is (`Layout::KIND`).
    kind: AtomicU64,
    /// Size of the state block in bytes, a second guard against a layout change.
    state_size: AtomicU64,
    /// The parameters every process must agree on (see `Layout::PARAM_NAMES`); updated
    /// in place when one process changes the rate or the settings.
    params: [AtomicU64; PARAMS],
    /// The boot the file's instants belong to (`boot_id`; 0: unknown). The state holds
    /// absolute `CLOCK_MONOTONIC` instants, which restart from zero at every boot: a file
    /// kept on disk across a reboot would otherwise hold a breaker open, or a bucket
    /// empty, for as long as the old boot had been up.
    boot: AtomicU64,
}

/// `boot` while one process resets a file from another boot: others wait for it.
const RESETTING: u64 = u64::MAX;
/// How long a process waits for another to reset a file from another boot (1 ms turns).
const RESET_WAIT_TURNS: usize = 2_000;

/// This boot's identity: a hash of `/proc/sys/kernel/random/boot_id` (0 when unreadable:
/// files are then never judged by their boot).
fn boot_id() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
            return 0;
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.trim().bytes() {
            hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        hash.clamp(1, RESETTING - 1)
    })
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);

/// A state block that can live in a shared file.
pub trait Layout: Default + Send + Sync + 'static {
    /// Stored in the header so that a bucket file is never read as a breaker.
    const KIND: u64;
    /// What the file holds, in messages.
    const WHAT: &'static str;
    /// The header parameters, in messages (unused slots are "").
    const PARAM_NAMES: [&'static str; PARAMS];
    /// The state a mapping holds once its file was truncated under this process: one
    /// that refuses every call (so the binding's refusal path reports the loss) and that
    /// nothing divides by zero on. Built in a signal handler: no allocation.
    fn lost() -> Self;
}

/// Writes `T::lost()` into the state block of fresh memory of `len` bytes at `start` (the
/// SIGBUS guard's `Prepare`, run outside any handler), if it is large enough to hold one.
fn poison<T: Layout>(start: *mut u8, len: usize) {
    if len >= file_size::<T>() {
        // SAFETY: `start` is `len` fresh bytes of our own, not yet visible to anyone; the
        // block is 8-aligned (page + 64).
        unsafe { start.add(HEADER_SIZE).cast::<T>().write(T::lost()) }
    }
}

impl Layout for SharedBucketState {
    const KIND: u64 = 1;
    const WHAT: &'static str = "rate-limit bucket";
    const PARAM_NAMES: [&'static str; PARAMS] = [
        "refill interval (ns per token)",
        "burst",
        "other windows and priority reserve (fingerprint, with the kinds of every window)",
    ];

    fn lost() -> Self {
        SharedBucketState::refusing()
    }
}

impl Layout for BreakerState {
    const KIND: u64 = 2;
    const WHAT: &'static str = "circuit breaker";
    const PARAM_NAMES: [&'static str; PARAMS] = [
        "failure_threshold",
        "recovery_timeout (ns)",
        "half_open_max_calls",
    ];

    fn lost() -> Self {
        BreakerState::refusing()
    }
}

/// Why a shared file cannot be used. Every variant names the file.
#[derive(Debug)]
pub enum SharedError {
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The file belongs to another user: sharing a budget with them is not ours to decide.
    NotOwner {
        path: PathBuf,
        owner: u32,
        me: u32,
    },
    /// Group or others may write the file, so anyone could corrupt the budget.
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    Truncated {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    NotOurs {
        path: PathBuf,
    },
    Version {
        path: PathBuf,
        found: u64,
    },
    WrongKind {
        path: PathBuf,
        found: u64,
        expected: &'static str,
    },
    /// Another process created the file with different parameters.
    Mismatch {
        path: PathBuf,
        what: &'static str,
        parameter: &'static str,
        theirs: u64,
        ours: u64,
    },
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} shared file {}: {source}", path.display()),
            SharedError::NotOwner { path, owner, me } => write!(
                f,
                "shared file {} belongs to uid {owner}, not to this process (uid {me}): refusing to share it",
                path.display()
            ),
            SharedError::Permissions { path, mode } => write!(
                f,
                "shared file {} has mode {mode:o}: group or others may write it; it must be 0600",
                path.display()
            ),
            SharedError::Truncated {
                path,
                size,
                expected,
            } => write!(
                f,
                "shared file {} is truncated or corrupt: {size} bytes, expected {expected}; remove it",
                path.display()
            ),
            SharedError::NotOurs { path } => write!(
                f,
                "{} is not a peak-resilience shared file (bad magic number); remove it or choose another shared_dir",
                path.display()
            ),
            SharedError::Version { path, found } => write!(
                f,
                "shared file {} has layout version {found}, this build uses {LAYOUT_VERSION}: \
                 stop the processes of the other version, or remove the file",
                path.display()
            ),
            SharedError::WrongKind {
                path,
                found,
                expected,
            } => write!(
                f,
                "shared file {} holds state of kind {found}, not a {expected}",
                path.display()
            ),
            SharedError::Mismatch {
                path,
                what,
                parameter,
                theirs,
                ours,
            } => write!(
                f,
                "shared {what} {} was created with {parameter} = {theirs}, but this process \
                 asks for {ours}: every process sharing it must use the same settings \
                 (or remove the file)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SharedError {}

/// A live `mmap`, unmapped when the last `Place` into it is dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Its entry in the SIGBUS handler's table (None: the table was full).
    registration: Option<sigbus::Registration>,
}

// SAFETY: the mapping is only ever accessed through atomics (header and state blocks).
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new<T: Layout>(file: &File, len: usize, path: &Path) -> Result<Mapping, SharedError> {
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io_error(path, "map", io::Error::last_os_error()));
        }
        let ptr: NonNull<u8> =
            NonNull::new(ptr.cast()).expect("mmap never returns NULL on success");
        Ok(Mapping {
            ptr,
            len,
            registration: sigbus::register(ptr.as_ptr(), len, poison::<T>),
        })
    }

    /// Whether the file was truncated under this process (the state is `Layout::lost`).
    fn lost(&self) -> bool {
        self.registration.as_ref().is_some_and(|r| r.lost())
    }

    /// Installs the lost state again over whatever an update wrote into it.
    fn reinstall_lost(&self) {
        if let Some(registration) = &self.registration {
            registration.reinstall();
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes, page-aligned, and Header is
        // plain atomics (any bit pattern is valid).
        unsafe { &*self.ptr.as_ptr().cast::<Header>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Out of the handler's table before the address range can be reused.
        drop(self.registration.take());
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers to the
        // mapping any more (every Place holds an Arc to it).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> SharedError {
    SharedError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// One state block of kind `T` in a shared file.
pub struct Region<T: Layout> {
    mapping: Arc<Mapping>,
    path: PathBuf,
    /// The file's (st_dev, st_ino) when opened: `detached` compares the path's with it.
    identity: (u64, u64),
    _state: PhantomData<T>,
}

impl<T: Layout> Clone for Region<T> {
    fn clone(&self) -> Self {
        Region {
            mapping: Arc::clone(&self.mapping),
            path: self.path.clone(),
            identity: self.identity,
            _state: PhantomData,
        }
    }
}

impl<T: Layout> Region<T> {
    /// Opens the file at `path`, creating it with `fresh()` as its state when missing.
    /// Refuses a file whose header parameters differ from `params`.
    pub fn open_or_create(
        path: &Path,
        params: [u64; PARAMS],
        fresh: impl Fn() -> T,
    ) -> Result<Region<T>, SharedError> {
        let mut last = None;
        for _ in 0..OPEN_ATTEMPTS {
            match open_existing::<T>(path, params, &fresh) {
                Ok(region) => {
                    region.check_params(params)?;
                    return Ok(region);
                }
                Err(SharedError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    if let Some(region) = create::<T>(path, params, &fresh)? {
                        return Ok(region);
                    }
                    // Another process linked its file first: open theirs.
                    last = Some(source);
                }
                Err(err) => return Err(err),
            }
        }
        Err(io_error(
            path,
            "open",
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was truncated under this process: the mapping then holds the
    /// `Layout::lost` state (which refuses everything), not the host's shared one.
    #[inline]
    pub fn lost(&self) -> bool {
        self.mapping.lost()
    }

    /// Runs an update of the shared state (new settings, an operator's command): checks
    /// loss, applies, checks again. None, with the lost state left whole, when the file
    /// was truncated before or during the update: the update's own first access may be
    /// what faulted, and what it wrote then must not revive the lost state as state of
    /// this process alone.
    pub fn update<R>(&self, apply: impl FnOnce() -> R) -> Option<R> {
        if self.lost() {
            return None;
        }
        let result = apply();
        if self.lost() {
            self.mapping.reinstall_lost();
            return None;
        }
        Some(result)
    }

    /// Whether the path no longer names the file this process mapped (deleted, or
    /// replaced by another file): this process keeps its budget, but processes started
    /// since create or open another one, so the host's budget is split. A `stat` per
    /// call: for health checks, never for the hot path.
    pub fn detached(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.identity,
            Err(err) => err.kind() == io::ErrorKind::NotFound,
        }
    }

    /// The state block, kept alive by the mapping.
    pub fn state(&self) -> Place<T> {
        // SAFETY: the file was checked to hold HEADER_SIZE + size_of::<T>() bytes with a
        // header of kind T and this layout version, so the block is initialised; it is
        // 8-aligned (page + 64) and only accessed through atomics; the Arc keeps the
        // mapping alive for as long as the Place.
        unsafe {
            let ptr = self.mapping.ptr.as_ptr().add(HEADER_SIZE).cast::<T>();
            Place::within(NonNull::new_unchecked(ptr), self.mapping.clone())
        }
    }

    /// The parameters recorded in the header.
    pub fn params(&self) -> [u64; PARAMS] {
        let header = self.mapping.header();
        std::array::from_fn(|i| header.params[i].load(Ordering::Acquire))
    }

    /// Records new parameters after a process changed them in place, so that processes
    /// started later with the new settings agree with the file.
    pub fn set_params(&self, params: [u64; PARAMS]) {
        let header = self.mapping.header();
        for (slot, value) in header.params.iter().zip(params) {
            slot.store(value, Ordering::Release);
        }
    }

    fn check_params(&self, ours: [u64; PARAMS]) -> Result<(), SharedError> {
        for (i, (theirs, ours)) in self.params().into_iter().zip(ours).enumerate() {
            if theirs != ours {
                return Err(SharedError::Mismatch {
                    path: self.path.clone(),
                    what: T::WHAT,
                    parameter: T::PARAM_NAMES[i],
                    theirs,
                    ours,
                });
            }
        }
        Ok(())
    }
}

fn file_size<T>() -> usize {
    HEADER_SIZE + std::mem::size_of::<T>()
}

fn open_existing<T: Layout>(
    path: &Path,
    params: [u64; PARAMS],
    fresh: &impl Fn() -> T,
) -> Result<Region<T>, SharedError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error(path, "open", e))?;
    let meta = file.metadata().map_err(|e| io_error(path, "stat", e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(SharedError::NotOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(SharedError::Permissions {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    let expected = file_size::<T>() as u64;
    let truncated = || SharedError::Truncated {
        path: path.to_owned(),
        size: meta.len(),
        expected,
    };
    if meta.len() < HEADER_SIZE as u64 || meta.len() > 1 << 20 {
        return Err(truncated());
    }
    // Map what is there, so that the header can say what the file is before its size is
    // judged (a breaker file opened as a bucket is "the wrong kind", not "truncated").
    let mapping = Mapping::new::<T>(&file, meta.len() as usize, path)?;
    let header = mapping.header();
    if header.magic.load(Ordering::Acquire) != MAGIC {
        return Err(SharedError::NotOurs {
            path: path.to_owned(),
        });
    }
    let version = header.layout_version.load(Ordering::Acquire);
    if version != LAYOUT_VERSION {
        return Err(SharedError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let kind = header.kind.load(Ordering::Acquire);
    if kind != T::KIND {
        return Err(SharedError::WrongKind {
            path: path.to_owned(),
            found: kind,
            expected: T::WHAT,
        });
    }
    if meta.len() != expected
        || header.state_size.load(Ordering::Acquire) != std::mem::size_of::<T>() as u64
        // Truncated while we read the header: what we read was the handler's zeroes.
        || mapping.lost()
    {
        return Err(truncated());
    }
    same_boot::<T>(&mapping, params, fresh);
    Ok(Region {
        mapping: Arc::new(mapping),
        path: path.to_owned(),
        identity: (meta.dev(), meta.ino()),
        _state: PhantomData,
    })
}

/// Makes a file written during another boot fresh (`fresh()`, our parameters) before it
/// is used: its instants mean nothing on this boot's clock. Exactly one process resets
/// it (a CAS of the header's boot to `RESETTING`); the others wait for it, a bounded
/// while. Every process of this boot opens the file through here, so none can be using
/// the old state while it is reset.
fn same_boot<T: Layout>(mapping: &Mapping, params: [u64; PARAMS], fresh: &impl Fn() -> T) {
    let ours = boot_id();
    let header = mapping.header();
    for _ in 0..RESET_WAIT_TURNS {
        let theirs = header.boot.load(Ordering::Acquire);
        if ours == 0 || theirs == ours {
            return;
        }
        if theirs == RESETTING {
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        if header
            .boot
            .compare_exchange(theirs, RESETTING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: the block was checked to be a `T` of this layout, 8-aligned; no
            // process of this boot uses it until `boot` says ours (see above).
            unsafe {
                mapping
                    .ptr
                    .as_ptr()
                    .add(HEADER_SIZE)
                    .cast::<T>()
                    .write(fresh());
            }
            for (slot, value) in header.params.iter().zip(params) {
                slot.store(value, Ordering::Relaxed);
            }
            header.boot.store(ours, Ordering::Release);
            return;
        }
    }
}

/// Creates the file complete where no other process can see it and links it into place.
/// `None` when another process got there first.
fn create<T: Layout>(
    path: &Path,
    params: [u64; PARAMS],
    fresh: &impl Fn() -> T,
) -> Result<Option<Region<T>>, SharedError> {
    let (file, staged) = stage(path)?;
    let shown = match &staged {
        Staged::Unnamed => path.to_owned(),
        Staged::Named(tmp) => tmp.clone(),
    };
    let result =
        initialise::<T>(&file, &shown, path, params, fresh).and_then(|region| {
            match publish(&file, &staged, path) {
                Ok(()) => Ok(Some(region)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(io_error(path, "link", e)),
            }
        });
    // A temporary name goes in every case; the linked name keeps the inode alive.
    if let Staged::Named(tmp) = staged {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// Where a new file is written before it is linked into place.
enum Staged {
    /// `O_TMPFILE`: a file with no name at all, so a process killed while creating it
    /// leaves nothing behind to collide with.
    Unnamed,
    /// A name no other process can choose (the filesystem has no `O_TMPFILE`).
    Named(PathBuf),
}

fn stage(path: &Path) -> Result<(File, Staged), SharedError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Linking an unnamed file needs /proc (AT_EMPTY_PATH needs a capability we lack).
    if Path::new("/proc/self/fd").is_dir() {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir)
        {
            Ok(file) => return Ok((file, Staged::Unnamed)),
            // Not supported by this filesystem (or kernel): a random name instead.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) => {}
            Err(e) => return Err(io_error(path, "create", e)),
        }
    }
    let mut last = None;
    for _ in 0..OPEN_ATTEMPTS {
        let tmp = temporary_name(path);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => return Ok((file, Staged::Named(tmp))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_error(&tmp, "create", e)),
        }
    }
    Err(io_error(
        path,
        "create a temporary file beside",
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

/// Links the staged file under its final name; fails with `AlreadyExists` if taken.
fn publish(file: &File, staged: &Staged, path: &Path) -> io::Result<()> {
    match staged {
        Staged::Named(tmp) => std::fs::hard_link(tmp, path),
        Staged::Unnamed => {
            use std::os::unix::ffi::OsStrExt;
            let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_err(io::Error::other)?;
            let to = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
            // SAFETY: two valid NUL-terminated paths; linkat only reads them.
            let rc = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
    }
}

fn initialise<T: Layout>(
    file: &File,
    tmp: &Path,
    path: &Path,
    params: [u64; PARAMS],
    fresh: &impl Fn() -> T,
) -> Result<Region<T>, SharedError> {
    // The umask may have cleared bits of 0600, never added any; make it exactly 0600.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| io_error(tmp, "chmod", e))?;
    let size = file_size::<T>();
    file.set_len(size as u64)
        .map_err(|e| io_error(tmp, "size", e))?;
    let mapping = Mapping::new::<T>(file, size, tmp)?;
    // The linked name keeps this inode: its identity is the final file's.
    let meta = file.metadata().map_err(|e| io_error(tmp, "stat", e))?;
    // SAFETY: the mapping is `size` bytes of zeroes, private to us until linked; the state
    // block starts 64 bytes in (8-aligned) and is written once before anyone can see it.
    unsafe {
        mapping
            .ptr
            .as_ptr()
            .add(HEADER_SIZE)
            .cast::<T>()
            .write(fresh());
    }
    let header = mapping.header();
    header
        .layout_version
        .store(LAYOUT_VERSION, Ordering::Relaxed);
    header.kind.store(T::KIND, Ordering::Relaxed);
    header
        .state_size
        .store(std::mem::size_of::<T>() as u64, Ordering::Relaxed);
    for (slot, value) in header.params.iter().zip(params) {
        slot.store(value, Ordering::Relaxed);
    }
    header.boot.store(boot_id(), Ordering::Relaxed);
    // The magic last: a file with the magic is a complete file (link publishes it anyway).
    header.magic.store(MAGIC, Ordering::Release);
    Ok(Region {
        mapping: Arc::new(mapping),
        path: path.to_owned(),
        identity: (meta.dev(), meta.ino()),
        _state: PhantomData,
    })
}

/// `.{name}.{pid}.{random}.tmp`: the pid says who made it, 64 random bits make it a
/// name no other process (nor this pid's next life, a container restarted) will choose.
fn temporary_name(path: &Path) -> PathBuf {
    let mut random = [0u8; 8];
    // SAFETY: `random` is 8 writable bytes; getrandom writes at most that many.
    let filled = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    let mut n = u64::from_le_bytes(random);
    if filled != random.len() as isize {
        // No entropy source: the clock's nanoseconds and a counter, still unlike a restart.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        n = crate::clock::monotonic_now() ^ SEQUENCE.fetch_add(1, Ordering::Relaxed) << 48;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n:016x}.tmp", std::process::id()))
}

// ---------------------------------------------------------------------------------------

fn bucket_params(quotas: &[Quota], reserve: u64) -> [u64; PARAMS] {
    // The header has three slots: the first window's rate and burst, and a fingerprint
    // (FNV-1a) of everything else every process must agree on. 0 for one window and no
    // reserve, as layout 1 wrote.
    // The kinds of every window, the first's included, join the fingerprint only when
    // one is not a token bucket, so that files of token buckets keep their fingerprint.
    let rest = &quotas[1..];
    let kinds = quotas
        .iter()
        .enumerate()
        .fold(0u64, |k, (i, q)| k | (q.kind as u64) << (8 * i));
    let fingerprint = if rest.is_empty() && reserve == 0 && kinds == 0 {
        0
    } else {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let words = rest
            .iter()
            .flat_map(|q| [q.interval, q.burst])
            .chain([reserve, rest.len() as u64])
            .chain((kinds != 0).then_some(kinds));
        for word in words {
            for byte in word.to_le_bytes() {
                hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash.max(1)
    };
    [quotas[0].interval, quotas[0].burst, fingerprint]
}

fn breaker_params(settings: BreakerSettings) -> [u64; PARAMS] {
    [
        settings.failure_threshold,
        settings.recovery_timeout,
        settings.half_open_max_calls,
    ]
}

/// A token bucket whose state lives in the shared file at `path` (created full).
pub fn shared_bucket(
    path: &Path,
    quota: Quota,
    clock: Clock,
) -> Result<(TokenBucket, Region<SharedBucketState>), SharedError> {
    shared_windows(path, &[quota], 0, clock)
}

/// A bucket of several windows (checked by `bucket::check_windows`) and a priority
/// reserve, whose state lives in the shared file at `path` (created full).
pub fn shared_windows(
    path: &Path,
    quotas: &[Quota],
    reserve: u64,
    clock: Clock,
) -> Result<(TokenBucket, Region<SharedBucketState>), SharedError> {
    let region = Region::open_or_create(path, bucket_params(quotas, reserve), || {
        SharedBucketState::with_windows(quotas, reserve)
    })?;
    Ok((
        TokenBucket::over(BucketPlace::shared(region.state()), clock),
        region,
    ))
}

/// Changes a shared bucket's rate for every process, and records it in the header. False
/// when the file was truncated under this process (see `Region::update`).
pub fn set_shared_quota(
    bucket: &TokenBucket,
    region: &Region<SharedBucketState>,
    quota: Quota,
) -> bool {
    region
        .update(|| {
            bucket.set_quota(quota);
            region.set_params(bucket_params(&bucket.quotas(), bucket.reserve()));
        })
        .is_some()
}

/// Changes a shared bucket's windows and reserve for every process, and records them.
/// False when the file was truncated under this process (see `Region::update`).
pub fn set_shared_windows(
    bucket: &TokenBucket,
    region: &Region<SharedBucketState>,
    quotas: &[Quota],
    reserve: u64,
) -> bool {
    region
        .update(|| {
            bucket.set_windows(quotas, reserve);
            region.set_params(bucket_params(quotas, reserve));
        })
        .is_some()
}

/// A circuit breaker whose state lives in the shared file at `path` (created closed).
pub fn shared_breaker(
    path: &Path,
    settings: BreakerSettings,
    clock: Clock,
) -> Result<(Breaker, Region<BreakerState>), SharedError> {
    let region = Region::open_or_create(path, breaker_params(settings), || {
        BreakerState::new(settings)
    })?;
    let breaker = Breaker::over(region.state(), clock);
    check_policy(&breaker, &region, settings)?;
    Ok((breaker, region))
}

/// The failure-rate, slow-call and back-off settings live in the state block, not in the
/// header: a process opening the file with others is refused as for the header's.
fn check_policy(
    breaker: &Breaker,
    region: &Region<BreakerState>,
    ours: BreakerSettings,
) -> Result<(), SharedError> {
    let theirs = breaker.settings();
    // Compared as stored (clamped), so that a setting stored as given is never a mismatch.
    let ours = {
        let probe = BreakerState::new(ours);
        Breaker::over(Place::local(probe), breaker.clock().clone()).settings()
    };
    let window = |w: Window| match w {
        Window::Calls(n) => n,
        Window::Nanos(n) => n,
    };
    let is_time = |w: Window| matches!(w, Window::Nanos(_)) as u64;
    let pairs: [(&'static str, u64, u64); 8] = [
        (
            "failure_rate_threshold (ppm)",
            theirs.failure_rate_ppm,
            ours.failure_rate_ppm,
        ),
        ("minimum_calls", theirs.minimum_calls, ours.minimum_calls),
        (
            "window_type (0 calls, 1 time)",
            is_time(theirs.window),
            is_time(ours.window),
        ),
        (
            "window_size (calls or ns)",
            window(theirs.window),
            window(ours.window),
        ),
        (
            "slow_call_duration (ns)",
            theirs.slow_call_duration,
            ours.slow_call_duration,
        ),
        (
            "backoff_multiplier (f64 bits)",
            theirs.backoff_multiplier.to_bits(),
            ours.backoff_multiplier.to_bits(),
        ),
        (
            "max_recovery_timeout (ns)",
            theirs.max_recovery_timeout,
            ours.max_recovery_timeout,
        ),
        ("", 0, 0),
    ];
    for (parameter, theirs, ours) in pairs {
        if theirs != ours {
            return Err(SharedError::Mismatch {
                path: region.path().to_owned(),
                what: <BreakerState as Layout>::WHAT,
                parameter,
                theirs,
                ours,
            });
        }
    }
    Ok(())
}

/// Changes a shared breaker's settings for every process, and records them in the header.
/// False when the file was truncated under this process (see `Region::update`).
pub fn set_shared_settings(
    breaker: &Breaker,
    region: &Region<BreakerState>,
    settings: BreakerSettings,
) -> bool {
    region
        .update(|| {
            breaker.set_settings(settings);
            region.set_params(breaker_params(breaker.settings()));
        })
        .is_some()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::breaker::{Admission, OPEN};
    use crate::bucket::Decision;
    use crate::clock::ManualClock;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "peak-shared-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn quota(burst: u64) -> Quota {
        // One token per hour: nothing refills during a test.
        Quota::per_window(1, 3_600_000_000_000, burst).unwrap()
    }

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 2,
            recovery_timeout: 10_000_000_000,
            half_open_max_calls: 1,
            ..BreakerSettings::default()
        }
    }

    #[test]
    fn two_openings_of_one_file_draw_on_one_budget() {
        let dir = TempDir::new("budget");
        let path = dir.file("api.bucket");
        let (first, _r1) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        let (second, _r2) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        assert_eq!(first.try_acquire(2), Decision::Admitted);
        assert_eq!(second.try_acquire(1), Decision::Admitted);
        assert!(matches!(first.try_acquire(1), Decision::Rejected { .. }));
        assert!(matches!(second.try_acquire(1), Decision::Rejected { .. }));
        // The counters are shared too: either side sees the host's totals.
        assert_eq!(second.allowed(), 2);
        assert_eq!(first.rejected(), 2);
    }

    #[test]
    fn a_created_file_has_mode_0600_and_no_temporary_is_left() {
        let dir = TempDir::new("mode");
        let path = dir.file("api.bucket");
        let _ = shared_bucket(&path, quota(1), Clock::Monotonic).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["api.bucket".to_owned()]);
    }

    #[test]
    fn a_different_rate_is_refused_with_the_parameter_named() {
        let dir = TempDir::new("mismatch");
        let path = dir.file("api.bucket");
        let _ = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        let err = shared_bucket(&path, quota(4), Clock::Monotonic)
            .err()
            .expect("a different burst must be refused");
        let message = err.to_string();
        assert!(matches!(
            err,
            SharedError::Mismatch {
                theirs: 3,
                ours: 4,
                ..
            }
        ));
        assert!(message.contains("burst"), "{message}");
        assert!(message.contains("api.bucket"), "{message}");
    }

    #[test]
    fn a_rate_changed_in_place_is_what_later_processes_must_agree_with() {
        let dir = TempDir::new("set-rate");
        let path = dir.file("api.bucket");
        let (bucket, region) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        set_shared_quota(&bucket, &region, quota(5));
        assert!(shared_bucket(&path, quota(5), Clock::Monotonic).is_ok());
        assert!(shared_bucket(&path, quota(3), Clock::Monotonic).is_err());
    }

    #[test]
    fn a_truncated_file_is_reported_not_mapped() {
        let dir = TempDir::new("truncated");
        let path = dir.file("api.bucket");
        let _ = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let err = shared_bucket(&path, quota(3), Clock::Monotonic)
            .err()
            .unwrap();
        assert!(
            matches!(err, SharedError::Truncated { size: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("truncated"));
    }

    #[test]
    fn a_foreign_file_is_refused_for_its_magic() {
        let dir = TempDir::new("magic");
        let path = dir.file("api.bucket");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(&vec![7u8; file_size::<SharedBucketState>()])
            .unwrap();
        let err = shared_bucket(&path, quota(3), Clock::Monotonic)
            .err()
            .unwrap();
        assert!(matches!(err, SharedError::NotOurs { .. }), "{err}");
    }

    #[test]
    fn a_file_of_another_layout_version_is_refused() {
        let dir = TempDir::new("version");
        let path = dir.file("api.bucket");
        let (_, region) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        region
            .mapping
            .header()
            .layout_version
            .store(99, Ordering::Release);
        let err = shared_bucket(&path, quota(3), Clock::Monotonic)
            .err()
            .unwrap();
        assert!(
            matches!(err, SharedError::Version { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_breaker_file_is_never_read_as_a_bucket() {
        let dir = TempDir::new("kind");
        let path = dir.file("thing");
        let _ = shared_breaker(&path, settings(), Clock::Monotonic).unwrap();
        let err = shared_bucket(&path, quota(3), Clock::Monotonic)
            .err()
            .unwrap();
        assert!(
            matches!(err, SharedError::WrongKind { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        let dir = TempDir::new("perm");
        let path = dir.file("api.bucket");
        let _ = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = shared_bucket(&path, quota(3), Clock::Monotonic)
            .err()
            .unwrap();
        assert!(matches!(err, SharedError::Permissions { .. }), "{err}");
    }

    #[test]
    fn a_temporary_file_left_by_a_killed_process_of_the_same_pid_does_not_block_creation() {
        // A process killed in `create()` leaves `.{name}.{pid}.{n}.tmp`; the next one with
        // the same pid (a container's pid 1) must still create the file.
        let dir = TempDir::new("stale");
        let path = dir.file("api.bucket");
        for n in 0..2048 {
            let stale = dir.file(&format!(".api.bucket.{}.{n}.tmp", std::process::id()));
            std::fs::write(stale, b"").unwrap();
        }
        let (bucket, _region) = shared_bucket(&path, quota(2), Clock::Monotonic).unwrap();
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        // On a filesystem without O_TMPFILE the random name is never an old one either.
        let named = temporary_name(&path);
        assert_ne!(named, temporary_name(&path));
        assert!(!named.exists());
    }

    /// Writes `boot` into the header of the file at `path`, as another boot would have.
    fn stamp_boot(path: &Path, boot: u64) {
        use std::os::unix::fs::FileExt;
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&boot.to_le_bytes(), 56).unwrap();
    }

    #[test]
    fn a_file_from_another_boot_starts_fresh_and_one_from_this_boot_keeps_its_state() {
        // Absolute CLOCK_MONOTONIC instants restart at boot: an exhausted bucket and an
        // open breaker kept on disk must not stay so for as long as the old boot was up.
        let dir = TempDir::new("boot");
        let path = dir.file("api.bucket");
        let (bucket, region) = shared_bucket(&path, quota(2), Clock::Monotonic).unwrap();
        assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        drop((bucket, region));
        let (again, _region) = shared_bucket(&path, quota(2), Clock::Monotonic).unwrap();
        assert!(matches!(again.try_acquire(1), Decision::Rejected { .. }));
        stamp_boot(&path, 0x5eed);
        let (rebooted, _region) = shared_bucket(&path, quota(2), Clock::Monotonic).unwrap();
        assert_eq!(rebooted.try_acquire(2), Decision::Admitted);
        // Still the one file: the other opening sees the fresh state spent.
        assert!(matches!(again.try_acquire(1), Decision::Rejected { .. }));

        let path = dir.file("x.breaker");
        let (breaker, _region) = shared_breaker(&path, settings(), Clock::Monotonic).unwrap();
        breaker.force_open();
        stamp_boot(&path, 0x5eed);
        let (rebooted, _region) = shared_breaker(&path, settings(), Clock::Monotonic).unwrap();
        assert!(!rebooted.enter().0.is_rejected());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = TempDir::new("missing");
        let path = dir.file("no/such/dir/api.bucket");
        let err = shared_bucket(&path, quota(3), Clock::Monotonic)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }

    #[test]
    fn many_threads_creating_one_file_at_once_share_one_budget() {
        let dir = TempDir::new("race");
        let path = dir.file("api.bucket");
        let burst = 16;
        let admitted: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let (bucket, _region) =
                            shared_bucket(&path, quota(burst), Clock::Monotonic).unwrap();
                        (0..10)
                            .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, burst);
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn a_breaker_opened_through_one_mapping_is_open_through_another() {
        let dir = TempDir::new("breaker");
        let path = dir.file("exchange.breaker");
        let clock = Clock::Manual(ManualClock::new(1_000));
        let (one, _r1) = shared_breaker(&path, settings(), clock.clone()).unwrap();
        let (other, _r2) = shared_breaker(&path, settings(), clock).unwrap();
        for _ in 0..2 {
            let (admission, _) = one.enter();
            one.on_failure(admission);
        }
        assert_eq!(other.current_state().0, OPEN);
        assert!(matches!(other.enter().0, Admission::Rejected { .. }));
    }

    fn truncate(path: &Path) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    #[test]
    fn a_bucket_whose_file_is_truncated_under_it_is_lost_and_admits_nothing() {
        let dir = TempDir::new("truncated-live");
        let path = dir.file("api.bucket");
        let (bucket, region) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        assert_eq!(bucket.try_acquire(1), Decision::Admitted);
        assert!(!region.lost());
        truncate(&path);
        // The next touch faults (SIGBUS); the handler puts the lost state in its place.
        assert_eq!(bucket.try_acquire(1), Decision::Impossible);
        assert!(region.lost());
        assert_eq!(bucket.wait_time(1), None);
        assert_eq!(bucket.tokens_available(), 0.0);
        // New settings do not revive it as a bucket of this process alone.
        assert!(!set_shared_quota(&bucket, &region, quota(5)));
        assert_eq!(bucket.try_acquire(1), Decision::Impossible);
    }

    #[test]
    fn an_update_whose_own_first_access_faults_does_not_revive_a_truncated_bucket() {
        // Truncated while idle: `set_windows` is the first to touch the page, so the loss
        // is only seen once it has begun writing. It must leave the lost state whole.
        let dir = TempDir::new("truncated-update");
        let path = dir.file("api.bucket");
        let (bucket, region) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        truncate(&path);
        assert!(!region.lost());
        assert!(!set_shared_windows(&bucket, &region, &[quota(3)], 0));
        assert!(region.lost());
        let admitted: Vec<Decision> = (0..3).map(|_| bucket.try_acquire(1)).collect();
        assert_eq!(admitted, [Decision::Impossible; 3]);
        // The same for a breaker's operator command.
        let (breaker, region) =
            shared_breaker(&dir.file("x.breaker"), settings(), Clock::Monotonic).unwrap();
        truncate(&dir.file("x.breaker"));
        assert_eq!(region.update(|| breaker.reset()), None);
        assert!(breaker.enter().0.is_rejected());
    }

    #[test]
    fn threads_hammering_an_exhausted_bucket_never_see_a_zero_page_when_it_is_truncated() {
        // The lost state arrives whole, in one remap: no acquire between the fault and the
        // lost state ever finds a zero (admit-everything) bucket, whichever thread faults.
        let dir = TempDir::new("truncated-hammer");
        let mut admitted = 0;
        for round in 0..100 {
            let path = dir.file(&format!("r{round}.bucket"));
            let (bucket, region) = shared_bucket(&path, quota(1), Clock::Monotonic).unwrap();
            assert_eq!(bucket.try_acquire(1), Decision::Admitted);
            admitted += std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        let bucket = bucket.clone();
                        scope.spawn(move || {
                            (0..2_000)
                                .filter(|_| bucket.try_acquire(1) == Decision::Admitted)
                                .count()
                        })
                    })
                    .collect();
                truncate(&path);
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .sum::<usize>()
            });
            assert!(region.lost() || bucket.try_acquire(1) != Decision::Admitted);
        }
        assert_eq!(admitted, 0);
    }

    #[test]
    fn a_breaker_whose_file_is_truncated_under_it_is_lost_and_refuses() {
        let dir = TempDir::new("truncated-breaker");
        let path = dir.file("exchange.breaker");
        let (breaker, region) = shared_breaker(&path, settings(), Clock::Monotonic).unwrap();
        truncate(&path);
        assert!(matches!(breaker.enter().0, Admission::Rejected { .. }));
        assert!(region.lost());
        // Another mapping of another file is untouched.
        let (other, other_region) =
            shared_breaker(&dir.file("other.breaker"), settings(), Clock::Monotonic).unwrap();
        assert!(!other.enter().0.is_rejected());
        assert!(!other_region.lost());
    }

    #[test]
    fn a_file_deleted_or_replaced_under_a_region_is_detached() {
        let dir = TempDir::new("detached");
        let path = dir.file("api.bucket");
        let (_bucket, region) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        let (_again, reopened) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        assert!(!region.detached());
        assert!(!reopened.detached());
        std::fs::remove_file(&path).unwrap();
        assert!(region.detached());
        // A process started now creates a new file under the same name: still detached.
        let (_new, newer) = shared_bucket(&path, quota(3), Clock::Monotonic).unwrap();
        assert!(region.detached());
        assert!(!newer.detached());
    }

    #[test]
    fn state_outlives_the_opener_that_created_it() {
        let dir = TempDir::new("outlive");
        let path = dir.file("api.bucket");
        {
            let (bucket, _region) = shared_bucket(&path, quota(2), Clock::Monotonic).unwrap();
            assert_eq!(bucket.try_acquire(2), Decision::Admitted);
        }
        let (later, _region) = shared_bucket(&path, quota(2), Clock::Monotonic).unwrap();
        assert!(matches!(later.try_acquire(1), Decision::Rejected { .. }));
    }
}
