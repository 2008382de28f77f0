//! The names of the shared backend's files: the one owner of the naming scheme.
//!
//! Every process of a host that uses a limiter or breaker of the same name, in the same
//! `shared_dir`, must map the same file; the health process (`peak-resilience serve`)
//! finds the breakers of a host by listing them. A name is encoded so that two different
//! names never map to one file: every byte outside `A-Za-z0-9_-` becomes `%XX`.
//!
//! - a limiter's default bucket: `limiter.<name>.default.bucket`
//! - an endpoint's bucket: `limiter.<name>.endpoint.<endpoint>.bucket`
//! - a breaker: `breaker.<name>.breaker`
//! - a bulkhead: `bulkhead.<name>.bulkhead`

use std::path::{Path, PathBuf};

const BREAKER_PREFIX: &str = "breaker.";
const BREAKER_SUFFIX: &str = ".breaker";

/// `name` as it can stand in a file name.
pub fn file_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The name a `file_component` came from, or None if it is not one.
pub fn decode_component(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = component.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file of a limiter's bucket: its default bucket (`endpoint` None) or an endpoint's.
pub fn bucket_file(dir: &Path, limiter: &str, endpoint: Option<&str>) -> PathBuf {
    let limiter = file_component(limiter);
    dir.join(match endpoint {
        None => format!("limiter.{limiter}.default.bucket"),
        Some(e) => format!("limiter.{limiter}.endpoint.{}.bucket", file_component(e)),
    })
}

/// The file of a breaker.
pub fn breaker_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "{BREAKER_PREFIX}{}{BREAKER_SUFFIX}",
        file_component(name)
    ))
}

/// The file of a bulkhead's slots.
pub fn bulkhead_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("bulkhead.{}.bulkhead", file_component(name)))
}

/// Whether `dir` holds a bucket file of the limiter `name`.
pub fn limiter_has_files(dir: &Path, name: &str) -> bool {
    let prefix = format!("limiter.{}.", file_component(name));
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            file.starts_with(&prefix) && file.ends_with(".bucket")
        })
    })
}

/// The names of the breakers that have a file in `dir`, sorted.
pub fn breaker_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let component = file
                .strip_prefix(BREAKER_PREFIX)?
                .strip_suffix(BREAKER_SUFFIX)?;
            decode_component(component)
        })
        .collect();
    names.sort();
    names
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn two_different_names_never_share_a_file() {
        let dir = Path::new("/shm");
        assert_ne!(breaker_file(dir, "a.b"), breaker_file(dir, "a%2Eb"));
        assert_ne!(
            bucket_file(dir, "x", Some("a/b")),
            bucket_file(dir, "x", Some("a_b"))
        );
        assert_eq!(
            bucket_file(dir, "binance", None),
            dir.join("limiter.binance.default.bucket")
        );
        assert_eq!(
            bucket_file(dir, "binance", Some("order")),
            dir.join("limiter.binance.endpoint.order.bucket")
        );
    }

    #[test]
    fn every_name_comes_back_from_its_file_name() {
        for name in [
            "live.submit_order",
            "live-eu.fetch",
            "spaces and/slashes",
            "é",
            "",
        ] {
            assert_eq!(
                decode_component(&file_component(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(decode_component("%G1"), None);
        assert_eq!(decode_component("%4"), None);
    }

    #[test]
    fn the_breakers_of_a_directory_are_listed_by_name() {
        let dir = std::env::temp_dir().join(format!("peak-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["live.submit", "paper.fetch x"] {
            std::fs::write(breaker_file(&dir, name), b"").unwrap();
        }
        std::fs::write(bucket_file(&dir, "live", None), b"").unwrap();
        std::fs::write(dir.join("breaker.unrelated.txt"), b"").unwrap();
        assert_eq!(breaker_names(&dir), ["live.submit", "paper.fetch x"]);
        assert!(limiter_has_files(&dir, "live"));
        assert!(!limiter_has_files(&dir, "paper"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
