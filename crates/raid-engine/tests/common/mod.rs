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

/// `n` sparse member files of `size` bytes in a fresh scratch directory
/// (none of them open), for tests that hand paths to a command.
pub struct MemberFiles {
    /// The directory holding them (removed when dropped).
    pub dir: tempfile::TempDir,
    /// `dir/m0`, `dir/m1`, …
    pub paths: Vec<PathBuf>,
}

impl MemberFiles {
    /// Create the files.
    pub fn new(n: usize, size: u64) -> MemberFiles {
        let dir = scratch();
        let (paths, devs) = members(dir.path(), n, size);
        drop(devs);
        MemberFiles { dir, paths }
    }

    /// The paths as command-line arguments.
    pub fn args(&self) -> Vec<&str> {
        self.paths.iter().map(|p| p.to_str().unwrap()).collect()
    }
}

/// Each member file's first MiB (superblock and bitmap): what a refused
/// command must leave as it was.
pub fn metadata(paths: &[impl AsRef<Path>]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            let mut b = std::fs::read(p).unwrap();
            b.truncate(1 << 20);
            b
        })
        .collect()
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

/// A member that answers `EIO` to every read reaching past byte `from`
/// once [`FailingReads::fail_reads_from`] arms it (and to writes, once
/// [`FailingReads::fail_writes_from`] does): a drive with a bad area, for
/// the tests of what the engine does on a member I/O error.
#[derive(Debug)]
pub struct FailingReads {
    inner: Arc<dyn BlockDevice>,
    from: std::sync::atomic::AtomicU64,
    writes_from: std::sync::atomic::AtomicU64,
}

impl FailingReads {
    /// Wrap `inner`, not failing yet.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Self> {
        Arc::new(FailingReads {
            inner,
            from: std::sync::atomic::AtomicU64::new(u64::MAX),
            writes_from: std::sync::atomic::AtomicU64::new(u64::MAX),
        })
    }

    /// From now on, fail writes that reach past byte `from` as well.
    pub fn fail_writes_from(&self, from: u64) {
        self.writes_from
            .store(from, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, fail reads that reach past byte `from`.
    pub fn fail_reads_from(&self, from: u64) {
        self.from.store(from, std::sync::atomic::Ordering::SeqCst);
    }
}

impl BlockDevice for FailingReads {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.from.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.writes_from.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        format!("{} (failing reads)", self.inner.describe())
    }
}

/// The property tests' case count: `RAID_ENGINE_PROPTEST_CASES`, else proptest's own `PROPTEST_CASES`, else
/// `default` (`storage_units::cases`); a value that is not a whole number stops the test naming
/// its variable.
pub fn cases(default: u32) -> u32 {
    storage_units::cases::case_count("RAID_ENGINE_PROPTEST_CASES", default)
        .unwrap_or_else(|e| panic!("{e}"))
}
