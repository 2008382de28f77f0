//! The bulkhead: a cap on the calls of one operation in flight at once.
//!
//! One atomic count of the slots taken, changed by compare-and-swap so that it never
//! passes the cap, however many threads race for the last slot; no lock, no allocation.
//! On the shared backend the slots are in a file that every process of the host maps
//! instead (`shared_bulkhead`), so that the cap holds across them.

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(all(unix, not(peak_portable)))]
pub use crate::shared_bulkhead::SharedSlots;

/// Builds without the shared backend have no shared slots (none can be made).
#[cfg(not(all(unix, not(peak_portable))))]
#[derive(Debug)]
pub enum SharedSlots {}

#[cfg(not(all(unix, not(peak_portable))))]
impl SharedSlots {
    fn try_enter(&self) -> bool {
        match *self {}
    }
    fn leave(&self) {
        match *self {}
    }
    fn in_flight(&self) -> u64 {
        match *self {}
    }
    fn max_concurrent(&self) -> u64 {
        match *self {}
    }
    fn set_max_concurrent(&self, _: u64) {
        match *self {}
    }
}

/// The in-flight count of one bulkhead and how many calls it refused.
#[derive(Debug)]
pub struct Bulkhead {
    /// Settable: a configuration reload changes the cap of a live bulkhead.
    max_concurrent: AtomicU64,
    in_flight: AtomicU64,
    rejections: AtomicU64,
    /// The slots of the shared backend (then `max_concurrent` and `in_flight` are theirs).
    shared: Option<SharedSlots>,
}

impl Bulkhead {
    /// A bulkhead that lets `max_concurrent` calls (at least 1) run at once.
    pub fn new(max_concurrent: u64) -> Self {
        Bulkhead {
            max_concurrent: AtomicU64::new(max_concurrent.max(1)),
            in_flight: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            shared: None,
        }
    }

    /// A bulkhead whose slots are `shared` by the processes of the host.
    pub fn over(shared: SharedSlots) -> Self {
        Bulkhead {
            shared: Some(shared),
            ..Bulkhead::new(1)
        }
    }

    /// The shared slots, if the bulkhead is on the shared backend.
    pub fn shared(&self) -> Option<&SharedSlots> {
        self.shared.as_ref()
    }

    /// Takes a slot if one is free. A refusal is not counted here: a caller that waits
    /// for a slot counts only the refusal it finally gives up on (`refused`).
    #[inline]
    pub fn try_enter(&self) -> bool {
        if let Some(shared) = &self.shared {
            return shared.try_enter();
        }
        let cap = self.max_concurrent.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |taken| {
                (taken < cap).then_some(taken + 1)
            })
            .is_ok()
    }

    /// Gives a slot back. Never goes below zero, so that a stray release cannot open a
    /// slot beyond the cap.
    #[inline]
    pub fn leave(&self) {
        if let Some(shared) = &self.shared {
            return shared.leave();
        }
        let _ = self
            .in_flight
            .fetch_update(Ordering::Release, Ordering::Relaxed, |taken| {
                taken.checked_sub(1)
            });
    }

    /// Counts a call refused for want of a slot.
    #[cold]
    pub fn refused(&self) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn max_concurrent(&self) -> u64 {
        match &self.shared {
            Some(shared) => shared.max_concurrent(),
            None => self.max_concurrent.load(Ordering::Relaxed),
        }
    }

    /// A new cap (at least 1). Calls in flight keep their slots: a lower cap refuses new
    /// calls until enough of them have left.
    pub fn set_max_concurrent(&self, max_concurrent: u64) {
        match &self.shared {
            Some(shared) => shared.set_max_concurrent(max_concurrent.max(1)),
            None => self
                .max_concurrent
                .store(max_concurrent.max(1), Ordering::Relaxed),
        }
    }

    pub fn in_flight(&self) -> u64 {
        match &self.shared {
            Some(shared) => shared.in_flight(),
            None => self.in_flight.load(Ordering::Relaxed),
        }
    }

    pub fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }
}

/// The wait before the next look for a free slot: starts short (a slot is usually given
/// back within a call's time) and doubles up to a millisecond-scale ceiling.
pub fn next_poll(previous: u64) -> u64 {
    const FIRST: u64 = 50_000;
    const CEILING: u64 = 5_000_000;
    if previous == 0 {
        FIRST
    } else {
        previous.saturating_mul(2).min(CEILING)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_more_calls_than_the_cap_hold_a_slot() {
        let bulkhead = Bulkhead::new(2);
        assert!(bulkhead.try_enter());
        assert!(bulkhead.try_enter());
        assert!(!bulkhead.try_enter());
        assert_eq!(bulkhead.in_flight(), 2);
    }

    #[test]
    fn a_slot_given_back_is_taken_by_the_next_call() {
        let bulkhead = Bulkhead::new(1);
        assert!(bulkhead.try_enter());
        bulkhead.leave();
        assert!(bulkhead.try_enter());
    }

    #[test]
    fn a_stray_release_does_not_open_a_slot_past_the_cap() {
        let bulkhead = Bulkhead::new(1);
        bulkhead.leave();
        assert!(bulkhead.try_enter());
        assert!(!bulkhead.try_enter());
    }

    #[test]
    fn threads_racing_for_slots_never_pass_the_cap() {
        let bulkhead = Arc::new(Bulkhead::new(3));
        let taken: u64 = (0..8)
            .map(|_| {
                let bulkhead = Arc::clone(&bulkhead);
                std::thread::spawn(move || (0..1000).filter(|_| bulkhead.try_enter()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap() as u64)
            .sum();
        assert_eq!(taken, 3);
        assert_eq!(bulkhead.in_flight(), 3);
    }

    #[test]
    fn a_lower_cap_refuses_new_calls_until_enough_have_left() {
        let bulkhead = Bulkhead::new(3);
        assert!(bulkhead.try_enter() && bulkhead.try_enter() && bulkhead.try_enter());
        bulkhead.set_max_concurrent(2);
        assert!(!bulkhead.try_enter());
        bulkhead.leave();
        assert!(!bulkhead.try_enter());
        bulkhead.leave();
        assert!(bulkhead.try_enter());
    }

    #[test]
    fn a_higher_cap_lets_more_calls_in_at_once() {
        let bulkhead = Bulkhead::new(1);
        assert!(bulkhead.try_enter());
        bulkhead.set_max_concurrent(2);
        assert!(bulkhead.try_enter());
        assert!(!bulkhead.try_enter());
    }

    #[test]
    fn polling_backs_off_to_a_ceiling() {
        let mut wait = 0;
        for _ in 0..20 {
            wait = next_poll(wait);
        }
        assert_eq!(next_poll(0), 50_000);
        assert_eq!(wait, 5_000_000);
    }
}
