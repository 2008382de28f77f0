//! A bulkhead's slots in a shared file: one cap across the processes of a host.
//!
//! The state block is an array of slots, each free (0) or holding the token of the
//! process that took it (its pid and start time). A call takes a free slot below the cap
//! by compare-and-swap and frees one of its process's slots when it ends; the in-flight
//! count is the number of taken slots. Nothing is counted apart from the slots, so a
//! process killed at any instant leaves only slots marked with its token: whoever finds
//! the bulkhead full checks the owners of the slots and takes back those of processes
//! that are gone (or whose pid now names another process). No lock, as for the other
//! shared state (see `shared.rs`, whose file format, creation and checks this uses).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::clock::monotonic_now;
use crate::place::Place;
use crate::shared::{Layout, Region, SharedError};

/// The most slots a shared bulkhead has: its cap is at most this.
pub const MAX_SHARED_SLOTS: usize = 1024;
/// A process looks for slots of dead processes at most this often (a full bulkhead is
/// usually full of live calls, and each look costs a syscall per process holding slots).
const RECLAIM_INTERVAL: u64 = 1_000_000;

/// The shared state of one bulkhead.
#[repr(C)]
pub struct BulkheadState {
    max_concurrent: AtomicU64,
    /// Where the next search for a free slot starts: past the last slot taken.
    hint: AtomicU64,
    slots: [AtomicU64; MAX_SHARED_SLOTS],
}

impl BulkheadState {
    fn with_cap(max_concurrent: u64) -> Self {
        BulkheadState {
            max_concurrent: AtomicU64::new(max_concurrent),
            hint: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Default for BulkheadState {
    fn default() -> Self {
        BulkheadState::with_cap(1)
    }
}

impl Layout for BulkheadState {
    const KIND: u64 = 3;
    const WHAT: &'static str = "bulkhead";
    const PARAM_NAMES: [&'static str; 3] = ["max_concurrent", "", ""];

    /// A cap of 0: every call refused.
    fn lost() -> Self {
        BulkheadState::with_cap(0)
    }
}

/// A bulkhead's slots in the shared file, as this process uses them.
pub struct SharedSlots {
    region: Region<BulkheadState>,
    state: Place<BulkheadState>,
    /// Where this process last took a slot: where its release looks first.
    last_taken: AtomicUsize,
    /// When this process last looked for slots of dead processes.
    last_reclaim: AtomicU64,
}

impl std::fmt::Debug for SharedSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSlots")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl SharedSlots {
    /// The slots of the file at `path`, created with `max_concurrent` (at most
    /// `MAX_SHARED_SLOTS`) when missing; a file made with another cap is refused.
    pub fn open(path: &Path, max_concurrent: u64) -> Result<SharedSlots, SharedError> {
        let region = Region::open_or_create(path, [max_concurrent, 0, 0], || {
            BulkheadState::with_cap(max_concurrent)
        })?;
        let state = region.state();
        Ok(SharedSlots {
            region,
            state,
            last_taken: AtomicUsize::new(0),
            last_reclaim: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        self.region.path()
    }

    /// Whether the file was truncated under this process (every call is then refused).
    pub fn lost(&self) -> bool {
        self.region.lost()
    }

    pub fn max_concurrent(&self) -> u64 {
        self.state.max_concurrent.load(Ordering::Relaxed)
    }

    /// A new cap for every process (and for the header, which processes started later
    /// must agree with). Slots above a lowered cap are freed as their calls end, never
    /// taken again.
    pub fn set_max_concurrent(&self, max_concurrent: u64) {
        let cap = max_concurrent.min(MAX_SHARED_SLOTS as u64);
        self.region.update(|| {
            self.state.max_concurrent.store(cap, Ordering::Relaxed);
            self.region.set_params([cap, 0, 0]);
        });
    }

    /// Takes a free slot below the cap for this process; when there is none, takes back
    /// the slots of dead processes (at most every `RECLAIM_INTERVAL`) and tries again.
    pub fn try_enter(&self) -> bool {
        self.take() || (self.reclaim() > 0 && self.take())
    }

    fn take(&self) -> bool {
        let cap = self.cap();
        if cap == 0 {
            return false;
        }
        let me = own_token();
        let start = self.state.hint.load(Ordering::Relaxed) as usize;
        for offset in 0..cap {
            let index = (start + offset) % cap;
            let slot = &self.state.slots[index];
            if slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.state.hint.store(index as u64 + 1, Ordering::Relaxed);
                self.last_taken.store(index, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Frees one slot of this process (they are all alike), looking first where it last
    /// took one: calls of one thread end in the reverse order they began.
    pub fn leave(&self) {
        let me = own_token();
        let start = self.last_taken.load(Ordering::Relaxed);
        for offset in 0..MAX_SHARED_SLOTS {
            let index = (start + MAX_SHARED_SLOTS - offset) % MAX_SHARED_SLOTS;
            let slot = &self.state.slots[index];
            if slot.load(Ordering::Relaxed) == me
                && slot
                    .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
    }

    /// Slots taken now, by every process.
    pub fn in_flight(&self) -> u64 {
        let taken = self.state.slots.iter();
        taken.filter(|s| s.load(Ordering::Relaxed) != 0).count() as u64
    }

    /// Frees the slots of processes that are gone; how many. Skipped (0) when this
    /// process looked less than `RECLAIM_INTERVAL` ago.
    pub fn reclaim(&self) -> usize {
        let now = monotonic_now();
        let last = self.last_reclaim.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RECLAIM_INTERVAL
            || self
                .last_reclaim
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        let me = own_token();
        let mut judged: Vec<(u64, bool)> = Vec::new();
        let mut freed = 0;
        for slot in &self.state.slots {
            let owner = slot.load(Ordering::Relaxed);
            if owner == 0 || owner == me {
                continue;
            }
            let alive = match judged.iter().find(|(token, _)| *token == owner) {
                Some((_, alive)) => *alive,
                None => {
                    let alive = is_alive(owner);
                    judged.push((owner, alive));
                    alive
                }
            };
            if !alive
                && slot
                    .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                freed += 1;
            }
        }
        freed
    }

    fn cap(&self) -> usize {
        (self.max_concurrent() as usize).min(MAX_SHARED_SLOTS)
    }
}

/// This process's token: its pid above, the low 32 bits of its start time (in clock
/// ticks since boot) below, so that a pid reused by a later process is told apart.
/// Computed once per process: a forked child computes its own (see `forget_token`).
fn own_token() -> u64 {
    static AT_FORK: Once = Once::new();
    let token = OWN_TOKEN.load(Ordering::Relaxed);
    if token != 0 {
        return token;
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a plain function that only stores to an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(forget_token)) };
    });
    let token = token_of(std::process::id());
    OWN_TOKEN.store(token, Ordering::Relaxed);
    token
}

static OWN_TOKEN: AtomicU64 = AtomicU64::new(0);

/// In a forked child: its pid is not its parent's, so neither is its token.
extern "C" fn forget_token() {
    OWN_TOKEN.store(0, Ordering::Relaxed);
}

fn token_of(pid: u32) -> u64 {
    ((pid as u64) << 32) | start_time(pid).unwrap_or(0) as u32 as u64
}

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat`, field
/// 22), or None where there is no such file (the process is gone, or no /proc).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that `token` names still runs: its pid exists and, where its start
/// time can be read, started when the token says.
fn is_alive(token: u64) -> bool {
    let pid = (token >> 32) as libc::pid_t;
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match start_time(pid as u32) {
        Some(started) => started as u32 as u64 == token & 0xffff_ffff,
        // No stat of it: gone, where there is a /proc; elsewhere `kill` is all we know.
        None => !Path::new("/proc/self/stat").exists(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn slots(cap: u64) -> (tempfile_dir::Dir, SharedSlots) {
        let dir = tempfile_dir::Dir::new();
        let slots = SharedSlots::open(&dir.path().join("b.bulkhead"), cap).unwrap();
        (dir, slots)
    }

    mod tempfile_dir {
        /// A private directory removed when dropped.
        pub struct Dir(std::path::PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU64, Ordering};
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "peak-bulkhead-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }

            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn two_mappings_of_one_file_share_the_cap() {
        let (dir, first) = slots(2);
        let second = SharedSlots::open(&dir.path().join("b.bulkhead"), 2).unwrap();
        assert!(first.try_enter());
        assert!(second.try_enter());
        assert!(!first.try_enter() && !second.try_enter());
        second.leave();
        assert!(first.try_enter());
        assert_eq!(second.in_flight(), 2);
    }

    #[test]
    fn a_file_made_with_another_cap_is_refused_naming_it() {
        let (dir, _first) = slots(2);
        let refused = SharedSlots::open(&dir.path().join("b.bulkhead"), 3)
            .err()
            .unwrap();
        assert!(
            refused.to_string().contains("max_concurrent = 2"),
            "{refused}"
        );
    }

    #[test]
    fn the_slots_of_a_dead_process_are_taken_back_when_full() {
        let (_dir, slots) = slots(2);
        // A pid that cannot exist (above the kernel's pid_max of 2^22).
        let dead = (1u64 << 30) << 32 | 7;
        slots.state.slots[0].store(dead, Ordering::Relaxed);
        slots.state.slots[1].store(dead, Ordering::Relaxed);
        assert!(slots.try_enter());
        assert_eq!(slots.in_flight(), 1);
    }

    #[test]
    fn the_slots_of_a_live_process_are_kept() {
        let (_dir, slots) = slots(1);
        slots.state.slots[0].store(token_of(1), Ordering::Relaxed);
        assert!(!slots.try_enter());
        assert_eq!(slots.in_flight(), 1);
    }

    #[test]
    fn a_pid_that_now_names_a_later_process_does_not_hold_its_slot() {
        let (_dir, slots) = slots(1);
        let mine = own_token();
        slots.state.slots[0].store(mine ^ 1, Ordering::Relaxed);
        assert!(slots.try_enter());
    }

    #[test]
    fn a_lowered_cap_refuses_until_enough_calls_have_left() {
        let (_dir, slots) = slots(3);
        assert!(slots.try_enter() && slots.try_enter() && slots.try_enter());
        slots.set_max_concurrent(1);
        assert!(!slots.try_enter());
        slots.leave();
        slots.leave();
        slots.leave();
        assert!(slots.try_enter());
        assert!(!slots.try_enter());
    }
}
