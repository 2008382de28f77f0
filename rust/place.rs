//! Where a state machine's atomics live.
//!
//! The same `#[repr(C)]` block of atomics is either owned by this process or mapped from a
//! shared-memory file; the state machines only ever see `&T`, so one implementation serves
//! both, with one pointer dereference and no branch on the hot path.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

/// A `&T` that stays valid as long as this value lives, whoever owns the memory.
pub struct Place<T> {
    ptr: NonNull<T>,
    // Keeps the memory behind `ptr` alive: the Arc<T> itself, or a shared mapping.
    _owner: Arc<dyn Send + Sync>,
}

// SAFETY: `T` is a block of atomics (Sync), and the owner keeps the memory alive; a Place
// only hands out shared references.
unsafe impl<T: Sync> Send for Place<T> {}
unsafe impl<T: Sync> Sync for Place<T> {}

impl<T: Send + Sync + 'static> Place<T> {
    /// State owned by this process.
    pub fn local(value: T) -> Self {
        let owner = Arc::new(value);
        let ptr = NonNull::from(&*owner);
        Place { ptr, _owner: owner }
    }

    /// State that lives inside memory kept alive by `owner` (a shared mapping).
    ///
    /// # Safety
    /// `ptr` must point to a properly aligned, initialised `T` that stays valid for as long
    /// as `owner` is alive, and that is only ever accessed through atomics.
    pub unsafe fn within(ptr: NonNull<T>, owner: Arc<dyn Send + Sync>) -> Self {
        Place { ptr, _owner: owner }
    }
}

impl<T> Place<T> {
    /// The place of a part of `T` (a field), kept alive by the same owner.
    pub fn project<U>(&self, part: impl FnOnce(&T) -> &U) -> Place<U> {
        Place {
            ptr: NonNull::from(part(self)),
            _owner: Arc::clone(&self._owner),
        }
    }
}

impl<T> Deref for Place<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the owner keeps the pointee alive and initialised (see constructors).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Clone for Place<T> {
    fn clone(&self) -> Self {
        Place {
            ptr: self.ptr,
            _owner: Arc::clone(&self._owner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn clones_of_a_local_place_share_the_same_state() {
        let place = Place::local(AtomicU64::new(1));
        let copy = place.clone();
        place.fetch_add(41, Ordering::Relaxed);
        assert_eq!(copy.load(Ordering::Relaxed), 42);
    }
}
