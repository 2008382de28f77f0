//! The shared backend's file names, for the Python side that lists a host's objects.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::files;

/// The names of the breakers that have a shared file in `shared_dir`, sorted.
#[pyfunction]
fn shared_breaker_names(shared_dir: PathBuf) -> Vec<String> {
    files::breaker_names(&shared_dir)
}

/// Whether `shared_dir` holds a bucket file of the limiter `name`.
#[pyfunction]
fn shared_limiter_exists(shared_dir: PathBuf, name: &str) -> bool {
    files::limiter_has_files(&shared_dir, name)
}

/// The file a breaker named `name` maps in `shared_dir`.
#[pyfunction]
fn shared_breaker_file(shared_dir: PathBuf, name: &str) -> PathBuf {
    files::breaker_file(&shared_dir, name)
}

/// The file a limiter's bucket maps in `shared_dir` (its default bucket for `endpoint`
/// None).
#[pyfunction]
#[pyo3(signature = (shared_dir, name, endpoint=None))]
fn shared_bucket_file(shared_dir: PathBuf, name: &str, endpoint: Option<&str>) -> PathBuf {
    files::bucket_file(&shared_dir, name, endpoint)
}

pub fn add_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(shared_breaker_names, m)?)?;
    m.add_function(wrap_pyfunction!(shared_limiter_exists, m)?)?;
    m.add_function(wrap_pyfunction!(shared_breaker_file, m)?)?;
    m.add_function(wrap_pyfunction!(shared_bucket_file, m)?)?;
    Ok(())
}
