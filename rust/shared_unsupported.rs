//! `backend="shared"` where it cannot be: builds without a host-wide monotonic clock and
//! `mmap` (Windows, and any build with `--cfg peak_portable`, which is how CI compiles and
//! tests this on Linux).
//!
//! The same names as `shared.rs`, so that the binding compiles alike on every platform;
//! nothing here can be built. The Python layer refuses `backend="shared"` first, naming the
//! alternatives (`_native.SHARED_SUPPORTED`); a direct native call gets
//! `SharedError::Unsupported`.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::breaker::{Breaker, BreakerSettings, BreakerState};
use crate::bucket::{Quota, SharedBucketState, TokenBucket};
use crate::clock::Clock;

/// A state block that could live in a shared file (none can in this build).
pub trait Layout: Send + Sync + 'static {}
impl Layout for SharedBucketState {}
impl Layout for BreakerState {}

/// Why a shared file cannot be used; here, always `Unsupported` (the other variants are the
/// ones the binding's error mapping names on every platform).
#[derive(Debug)]
pub enum SharedError {
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    NotOwner {
        path: PathBuf,
        owner: u32,
        me: u32,
    },
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    Unsupported {
        path: PathBuf,
    },
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "cannot {action} shared file {}: {source}",
                path.display()
            ),
            SharedError::NotOwner { path, owner, me } => write!(
                f,
                "shared file {} belongs to uid {owner}, not to this process (uid {me})",
                path.display()
            ),
            SharedError::Permissions { path, mode } => {
                write!(f, "shared file {} has mode {mode:o}", path.display())
            }
            SharedError::Unsupported { path } => write!(
                f,
                "cannot use shared file {}: this build has no shared backend (it needs a \
                 clock every process of the host reads alike, and mmap); use \
                 backend='memory' or backend='redis'",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SharedError {}

/// A mapped shared file: uninhabited in this build, so every method is unreachable.
pub struct Region<T: Layout> {
    never: Infallible,
    _state: PhantomData<T>,
}

impl<T: Layout> Region<T> {
    pub fn path(&self) -> &Path {
        match self.never {}
    }

    pub fn lost(&self) -> bool {
        match self.never {}
    }

    pub fn detached(&self) -> bool {
        match self.never {}
    }

    pub fn update<R>(&self, _apply: impl FnOnce() -> R) -> Option<R> {
        match self.never {}
    }
}

pub fn shared_windows(
    path: &Path,
    _quotas: &[Quota],
    _reserve: u64,
    _clock: Clock,
) -> Result<(TokenBucket, Region<SharedBucketState>), SharedError> {
    Err(SharedError::Unsupported {
        path: path.to_owned(),
    })
}

pub fn set_shared_windows(
    _bucket: &TokenBucket,
    region: &Region<SharedBucketState>,
    _quotas: &[Quota],
    _reserve: u64,
) -> bool {
    match region.never {}
}

pub fn shared_breaker(
    path: &Path,
    _settings: BreakerSettings,
    _clock: Clock,
) -> Result<(Breaker, Region<BreakerState>), SharedError> {
    Err(SharedError::Unsupported {
        path: path.to_owned(),
    })
}

pub fn set_shared_settings(
    _breaker: &Breaker,
    region: &Region<BreakerState>,
    _settings: BreakerSettings,
) -> bool {
    match region.never {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_bucket_is_refused_with_an_error_naming_the_alternatives() {
        let err = shared_windows(Path::new("/x/limiter.bucket"), &[], 0, Clock::Monotonic)
            .err()
            .expect("no shared backend in this build");
        let message = err.to_string();
        assert!(message.contains("/x/limiter.bucket"), "{message}");
        assert!(
            message.contains("backend='memory' or backend='redis'"),
            "{message}"
        );
    }
}
