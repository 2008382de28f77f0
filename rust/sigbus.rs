//! A shared file truncated under a running process, survived.
//!
//! Touching a page of a `MAP_SHARED` mapping that lies past the end of its file raises
//! SIGBUS, whose default action kills the process: someone running `truncate` (or a full
//! disk's clean-up script) on a shared limiter's file would take every trading process on
//! the host down on its next acquire. So every live mapping is registered here, in a fixed
//! table read without locks, and a SIGBUS handler (installed once, chaining to whatever
//! was there before) replaces a faulting registered mapping by anonymous memory holding a
//! "lost" state (`Layout::lost`: a bucket that can admit nothing, a breaker held open),
//! marks it lost and returns, so the faulting instruction completes on valid memory. The
//! binding turns "lost" into a clear error on its refusal paths, which that state is
//! sure to take.
//!
//! Whatever handles SIGBUS when the first shared object is created (Python's faulthandler
//! when enabled at start-up, Rust's stack-overflow handler) is chained to. A handler
//! installed after that comes first: `faulthandler.enable()` called later treats the
//! fault as fatal before we see it.
//!
//! The handler does only what is async-signal-safe: atomic loads and stores, `mmap`,
//! plain stores into the new memory, `sigaction`. No allocation, no lock.

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

/// Writes the lost state into a mapping of `len` bytes at the pointer (in the handler).
pub type Poison = fn(*mut u8, usize);

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    /// The `Poison` of the mapping's kind, as an address.
    poison: AtomicUsize,
    lost: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array, never shared
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    poison: AtomicUsize::new(0),
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
}

impl Registration {
    /// Whether the mapping's file was truncated under us and its memory replaced by the
    /// lost state.
    #[inline]
    pub fn lost(&self) -> bool {
        TABLE[self.slot].lost.load(Ordering::Acquire)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        TABLE[self.slot].state.store(FREE, Ordering::Release);
    }
}

/// Protects the mapping of `len` bytes at `start`; `None` when the table is full.
pub fn register(start: *mut u8, len: usize, poison: Poison) -> Option<Registration> {
    INSTALL.call_once(install);
    for (slot, entry) in TABLE.iter().enumerate() {
        if entry
            .state
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            entry.start.store(start as usize, Ordering::Relaxed);
            entry.len.store(len, Ordering::Relaxed);
            entry.poison.store(poison as usize, Ordering::Relaxed);
            entry.lost.store(false, Ordering::Relaxed);
            entry.state.store(LIVE, Ordering::Release);
            return Some(Registration { slot });
        }
    }
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
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for entry in TABLE.iter() {
        if entry.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let start = entry.start.load(Ordering::Relaxed);
        let len = entry.len.load(Ordering::Relaxed);
        let end = start + len.div_ceil(page) * page;
        if !(start..end).contains(&address) {
            continue;
        }
        // SAFETY: [start, start + len) is our own live mapping (registered until unmapped);
        // replacing it in place keeps every pointer into it valid. mmap is
        // async-signal-safe.
        let replaced = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if replaced == libc::MAP_FAILED {
            break;
        }
        let poison = entry.poison.load(Ordering::Relaxed);
        // SAFETY: stored from a `Poison` in `register`.
        let poison: Poison = unsafe { std::mem::transmute::<usize, Poison>(poison) };
        poison(start as *mut u8, len);
        entry.lost.store(true, Ordering::Release);
        return;
    }
    chain(signal, info, context);
}

/// Not one of ours: whatever handled SIGBUS before us decides.
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written before this handler was installed.
    let previous = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
    let action = previous.sa_sigaction;
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Back to the default, as without us. A fault: return, the instruction faults
        // again and the process dies of SIGBUS. A signal sent by kill/raise (si_code <= 0)
        // would not come again: send it again (blocked until we return).
        // SAFETY: a zeroed sigaction with SIG_DFL (0) is valid; sigaction and raise are
        // async-signal-safe; `info` is the kernel's.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
            if (*info).si_code <= 0 {
                libc::raise(signal);
            }
        }
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
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
}
