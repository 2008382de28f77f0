//! A shared file truncated under a running process, survived.
//!
//! Touching a page of a `MAP_SHARED` mapping that lies past the end of its file raises
//! SIGBUS, whose default action kills the process: someone running `truncate` (or a full
//! disk's clean-up script) on a shared limiter's file would take every trading process on
//! the host down on its next acquire. So every live mapping is registered here, in a fixed
//! table read without locks, with a spare mapping of the same size prepared in advance
//! (outside any signal handler) to hold the "lost" state (`Layout::lost`: a bucket that
//! can admit nothing, a breaker held open). A SIGBUS handler (installed once, chaining to
//! whatever was there before) moves the spare over a faulting registered mapping with one
//! `mremap` (the address range never holds anything but the old file's pages or the
//! complete lost state: no thread can see a zero page), marks it lost and returns, so the
//! faulting instruction completes on valid memory. One faulting thread does the move;
//! any other that faults on the same mapping meanwhile waits for it. The binding turns
//! "lost" into a clear error on its refusal paths, which that state is sure to take.
//!
//! Whatever handles SIGBUS when the first shared object is created (Python's faulthandler
//! when enabled at start-up, Rust's stack-overflow handler) is chained to, and so is a
//! SIGBUS that is no fault on our mappings (another address, or one sent by `kill`). A
//! handler installed after that comes first: `faulthandler.enable()` called later treats
//! the fault as fatal before we see it.
//!
//! The handler does only what is async-signal-safe: atomic loads and stores, `mremap`,
//! `sched_yield`, `sigaction`, `pthread_sigmask`, and it keeps `errno` as it found it. No allocation, no
//! lock.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Once;

/// Mappings one process can have protected at once; a mapping beyond it works as before,
/// unprotected (a process with more than a thousand shared limiters and breakers is not
/// one we know of).
const SLOTS: usize = 1024;
const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const LIVE: u8 = 2;
/// A handler is moving the spare over the mapping: other faulting threads wait.
const REPLACING: u8 = 3;
/// Bounds the wait of a second faulting thread (each turn a `sched_yield`): far more than
/// one `mremap` takes, and still an end should the first thread never finish.
const WAIT_TURNS: usize = 1 << 20;

/// Writes the lost state into fresh memory of `len` bytes at the pointer (outside any
/// handler: when a mapping is registered, or when the lost state is installed again).
pub type Prepare = fn(*mut u8, usize);

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    /// The spare mapping holding the lost state (0: none, or moved into place).
    spare: AtomicUsize,
    lost: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array, never shared
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    spare: AtomicUsize::new(0),
    lost: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
/// The page size, read once before the handler is installed (sysconf is not
/// async-signal-safe).
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The action SIGBUS had before ours, written once before ours is installed.
struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once inside `INSTALL` before the handler that reads it exists.
unsafe impl Sync for Previous {}
static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::zeroed()));

/// A mapping's place in the table; frees it when dropped (before the unmap).
pub struct Registration {
    slot: usize,
    prepare: Prepare,
}

impl Registration {
    /// Whether the mapping's file was truncated under us and its memory replaced by the
    /// lost state.
    #[inline]
    pub fn lost(&self) -> bool {
        TABLE[self.slot].lost.load(Ordering::Acquire)
    }

    /// Installs the lost state again, whole, by one `mremap` of freshly prepared memory:
    /// for an update that wrote into the lost state after the loss (it must not revive the
    /// mapping as state of this process alone). Nothing when the mapping is not lost.
    pub fn reinstall(&self) {
        let entry = &TABLE[self.slot];
        if !self.lost() {
            return;
        }
        let (start, len) = (
            entry.start.load(Ordering::Relaxed),
            entry.len.load(Ordering::Relaxed),
        );
        if let Some(fresh) = prepared(len, self.prepare) {
            // SAFETY: `fresh` is our own private mapping of `len` bytes; [start, start +
            // len) is this registration's mapping, anonymous memory since the loss.
            let moved = unsafe { move_over(fresh, start, len) };
            if !moved {
                // SAFETY: `fresh` was not moved: still ours to unmap.
                unsafe { libc::munmap(fresh as *mut libc::c_void, len) };
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let entry = &TABLE[self.slot];
        let spare = entry.spare.swap(0, Ordering::AcqRel);
        if spare != 0 {
            // SAFETY: the spare is a mapping of `len` bytes made in `register` and never
            // moved (the swap took it): nothing else refers to it.
            unsafe {
                libc::munmap(
                    spare as *mut libc::c_void,
                    entry.len.load(Ordering::Relaxed),
                )
            };
        }
        entry.state.store(FREE, Ordering::Release);
    }
}

/// A fresh private mapping of `len` bytes holding what `prepare` writes, or None.
fn prepared(len: usize, prepare: Prepare) -> Option<usize> {
    // SAFETY: a fresh anonymous mapping; checked against MAP_FAILED before use.
    let spare = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if spare == libc::MAP_FAILED {
        return None;
    }
    prepare(spare.cast(), len);
    Some(spare as usize)
}

/// Moves the mapping at `from` over `[to, to + len)` in one `mremap`: the range holds
/// either its old pages or the moved ones, never nothing. Async-signal-safe (a syscall).
///
/// # Safety
/// `from` must be a mapping of `len` bytes that nothing else uses, `to` one of ours.
unsafe fn move_over(from: usize, to: usize, len: usize) -> bool {
    let moved = libc::mremap(
        from as *mut libc::c_void,
        len,
        len,
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        to as *mut libc::c_void,
    );
    moved != libc::MAP_FAILED
}

/// Protects the mapping of `len` bytes at `start`; `None` when the table is full or the
/// spare cannot be made (the mapping then works unprotected).
pub fn register(start: *mut u8, len: usize, prepare: Prepare) -> Option<Registration> {
    INSTALL.call_once(install);
    let spare = prepared(len, prepare)?;
    for (slot, entry) in TABLE.iter().enumerate() {
        if entry
            .state
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            entry.start.store(start as usize, Ordering::Relaxed);
            entry.len.store(len, Ordering::Relaxed);
            entry.spare.store(spare, Ordering::Relaxed);
            entry.lost.store(false, Ordering::Relaxed);
            entry.state.store(LIVE, Ordering::Release);
            return Some(Registration { slot, prepare });
        }
    }
    // SAFETY: the spare was made above and never shared.
    unsafe { libc::munmap(spare as *mut libc::c_void, len) };
    None
}

fn install() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        PAGE.store(page as usize, Ordering::Relaxed);
    }
    // SAFETY: a zeroed sigaction is a valid argument; PREVIOUS is written here only, before
    // our handler (its only reader) is installed.
    unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_sigbus as *const () as usize;
        // SA_ONSTACK: run on an alternate stack if the thread has one (Python's
        // faulthandler sets one up), in case the fault came from a thread short of stack.
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut ours.sa_mask);
        let previous = (*PREVIOUS.0.get()).as_mut_ptr();
        libc::sigaction(libc::SIGBUS, std::ptr::null(), previous);
        libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; the handler must leave it as the interrupted code had
    // it (mremap or sched_yield may set it).
    let errno = unsafe { *libc::__errno_location() };
    let handled = replace_faulting(info);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    if !handled {
        chain(signal, info, context);
    }
}

/// Puts the lost state in place of the registered mapping `info` faulted on; false when
/// the signal is not such a fault (sent by `kill`, another address, no spare left).
fn replace_faulting(info: *mut libc::siginfo_t) -> bool {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a fault on a mapped object's missing page; a signal sent by kill, raise or
    // sigqueue (si_code <= 0) carries no address of ours.
    if code != libc::BUS_ADRERR {
        return false;
    }
    let page = PAGE.load(Ordering::Relaxed);
    for entry in TABLE.iter() {
        let state = entry.state.load(Ordering::Acquire);
        if state != LIVE && state != REPLACING {
            continue;
        }
        let start = entry.start.load(Ordering::Relaxed);
        let len = entry.len.load(Ordering::Relaxed);
        let end = start + len.div_ceil(page) * page;
        if !(start..end).contains(&address) {
            continue;
        }
        if entry.lost.load(Ordering::Acquire) {
            // Replaced since this thread faulted: the instruction now finds valid memory.
            return true;
        }
        if entry
            .state
            .compare_exchange(LIVE, REPLACING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let spare = entry.spare.swap(0, Ordering::AcqRel);
            // SAFETY: the spare was prepared for this mapping and is used by nothing else
            // (the swap took it); [start, start + len) is our own live mapping.
            let moved = spare != 0 && unsafe { move_over(spare, start, len) };
            if moved {
                entry.lost.store(true, Ordering::Release);
            }
            entry.state.store(LIVE, Ordering::Release);
            return moved;
        }
        // Another thread is moving the spare in: wait for it, then retry the access.
        for _ in 0..WAIT_TURNS {
            if entry.lost.load(Ordering::Acquire) {
                return true;
            }
            if entry.state.load(Ordering::Acquire) != REPLACING {
                break;
            }
            // SAFETY: sched_yield has no preconditions and is async-signal-safe.
            unsafe { libc::sched_yield() };
        }
        return entry.lost.load(Ordering::Acquire);
    }
    false
}

/// Set when a previous handler installed with `SA_RESETHAND` has been called once: the
/// kernel would have put SIG_DFL back after that delivery, so later ones take the default.
static PREVIOUS_SPENT: AtomicBool = AtomicBool::new(false);

/// Not one of ours: whatever handled SIGBUS before us decides, as the kernel would have
/// delivered it to that handler: its `sa_mask` (and the signal itself, unless
/// `SA_NODEFER`) blocked while it runs, `SA_RESETHAND` honoured, SIG_IGN ignoring a signal
/// sent by `kill` (a real fault cannot be ignored: the kernel kills the process then).
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written before this handler was installed.
    let previous = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let sent = unsafe { (*info).si_code } <= 0;
    let mut action = previous.sa_sigaction;
    let resets = previous.sa_flags & libc::SA_RESETHAND != 0;
    if resets && PREVIOUS_SPENT.swap(true, Ordering::AcqRel) {
        action = libc::SIG_DFL;
    }
    if action == libc::SIG_IGN && sent {
        return;
    }
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Back to the default, as without us. A fault: return, the instruction faults
        // again and the process dies of SIGBUS. A signal sent by kill/raise would not come
        // again: send it again (blocked until we return).
        // SAFETY: a zeroed sigaction with SIG_DFL (0) is valid; sigaction and raise are
        // async-signal-safe.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
            if sent {
                libc::raise(signal);
            }
        }
        return;
    }
    // SAFETY: sigset operations on local sets and pthread_sigmask are async-signal-safe.
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut blocked = previous.sa_mask;
        if previous.sa_flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&mut blocked, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut before);
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO handler has this signature.
        let handler = unsafe {
            std::mem::transmute::<
                usize,
                extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
            >(action)
        };
        handler(signal, info, context);
    } else {
        // SAFETY: a plain handler has this signature.
        let handler = unsafe { std::mem::transmute::<usize, extern "C" fn(libc::c_int)>(action) };
        handler(signal);
    }
    // SAFETY: restores the mask this handler ran with.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
}
