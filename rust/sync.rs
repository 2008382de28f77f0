//! The atomics the state machines are built from: std's, or loom's when the crate is
//! compiled with `--cfg loom` so that loom can explore every interleaving of the CAS loops.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU64, Ordering};

/// Lets another thread run while this one waits for a short critical section.
#[cfg(loom)]
pub use loom::thread::yield_now;
#[cfg(not(loom))]
pub use std::thread::yield_now;

/// `loom::model`, counting the interleavings it explores (one run of `body` each) and
/// printing the count, for the README's reliability numbers
/// (`scripts/test-loom` runs with `--nocapture`).
#[cfg(all(test, loom))]
pub fn model<F>(name: &str, body: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    loom::model(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        body();
    });
    println!(
        "loom: {name}: {} interleavings explored, every one passed",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}
