//! peak-resilience's native core: lock-free state machines for the per-call hot path.
//!
//! Each concept has its own file with its tests beside it. The core is plain Rust; the
//! PyO3 binding (`python/`, one file per Python class) sits on top behind the `python`
//! feature, so `cargo test` needs no libpython.

pub mod breaker;
pub mod bucket;
pub mod bulkhead;
pub mod clock;
pub mod files;
pub mod fixed_window;
pub mod guard;
pub mod place;
pub mod remote;
pub mod reservation;
pub mod retry;
// The shared backend needs CLOCK_MONOTONIC and mmap: Unix, unless built as the portable
// core (`--cfg peak_portable`, how CI builds the Windows code paths on Linux).
#[cfg(all(unix, not(peak_portable)))]
pub mod shared;
#[cfg(not(all(unix, not(peak_portable))))]
#[path = "shared_unsupported.rs"]
pub mod shared;
#[cfg(all(unix, not(peak_portable)))]
pub mod shared_bulkhead;
#[cfg(all(unix, not(peak_portable)))]
mod sigbus;
pub mod sliding_window;
pub mod stats;
pub mod sync;

#[cfg(feature = "python")]
mod python;
