//! The atomics the state machines are built from: std's, or loom's when the crate is
//! compiled with `--cfg loom` so that loom can explore every interleaving of the CAS loops.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU64, Ordering};
