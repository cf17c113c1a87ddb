//! What the test binaries that make tools hang share: scripts, a bounded wait, and a cgroup of
//! the v1 freezer to keep a process blocked in the kernel.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A script at `DIR/NAME` running `body`, written by a child process: a file this test
/// process held open for writing would be inherited by a tool another test thread starts at
/// that moment, and running the script would then fail with ETXTBSY ("Text file busy") until
/// that tool had exec'd.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let script = dir.join(name);
    let mut writer = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(&script)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    stdin
        .write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
        .unwrap();
    drop(stdin);
    assert!(
        writer.wait().unwrap().success(),
        "writing {}",
        script.display()
    );
    script
}

/// Waits up to ten seconds for `cond`: a bound on a kill that is immediate, not a measure of
/// speed.
pub fn eventually(cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A cgroup of the v1 freezer, removed (thawed, once empty) when dropped.
pub struct Freezer {
    pub dir: PathBuf,
}

impl Freezer {
    pub fn new() -> Option<Self> {
        let root = Path::new("/sys/fs/cgroup/freezer");
        if !csi_node::is_root() || !root.join("tasks").exists() {
            return None;
        }
        let dir = root.join(format!("csi-node-test-{}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        Some(Freezer { dir })
    }

    /// [`Freezer::new`], or `None` after saying that `what` is skipped (a failure under
    /// `CI=true`, which must run it).
    pub fn or_skip(what: &str) -> Option<Self> {
        let freezer = Self::new();
        if freezer.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run {what}: it needs root and the cgroup v1 freezer"
            );
            eprintln!("skipped {what}: needs root and the cgroup v1 freezer");
        }
        freezer
    }

    pub fn thaw(&self) {
        fs::write(self.dir.join("freezer.state"), "THAWED").unwrap();
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("freezer.state"), "THAWED");
        eventually(|| {
            fs::read_to_string(self.dir.join("tasks")).is_ok_and(|t| t.trim().is_empty())
        });
        let _ = fs::remove_dir(&self.dir);
    }
}
