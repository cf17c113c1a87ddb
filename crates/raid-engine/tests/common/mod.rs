//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raid_engine::{BlockDevice, CacheMode, FileDevice};

/// Create `n` member files of `size` bytes in `dir`.
pub fn members(dir: &Path, n: usize, size: u64) -> (Vec<PathBuf>, Vec<Arc<dyn BlockDevice>>) {
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("m{i}"))).collect();
    let devs = paths
        .iter()
        .map(|p| {
            Arc::new(FileDevice::create(p, size, CacheMode::DirectIfSupported).unwrap())
                as Arc<dyn BlockDevice>
        })
        .collect();
    (paths, devs)
}

/// Reopen member files.
pub fn reopen(paths: &[PathBuf]) -> Vec<Arc<dyn BlockDevice>> {
    paths
        .iter()
        .map(|p| {
            Arc::new(FileDevice::open(p, CacheMode::DirectIfSupported).unwrap())
                as Arc<dyn BlockDevice>
        })
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether tests must fail instead of skipping when a peer is missing.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skip (or, under CI=true, fail) with a clear message.
pub fn skip(why: &str) {
    if ci() {
        panic!("CI=true and the test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Make sure a Debian package's program exists, installing it if needed.
pub fn ensure_program(program: &str, package: &str) -> bool {
    let found = |p: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found(program) {
        return true;
    }
    let _ = std::process::Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y", package])
        .status();
    found(program)
}

/// A scratch directory on tmpfs when there is one (fast), else in /tmp.
pub fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}
