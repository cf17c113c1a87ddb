//! A `mkfs` killed at its timeout leaves no filesystem signature behind, so that the device
//! looks blank and a retry formats it again. A test binary of its own: `Tool::set_program` is
//! process-wide, and this one points `mkfs.ext4` at a script while `blkid` and `wipefs` stay
//! the real ones. Needs `mkfs.ext4`, `blkid` and `wipefs`, not root: they work on an image
//! file as on a device.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use csi_node::{Error, FsType, Tool};

/// A script at `DIR/NAME` running `body`.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let script = dir.join(name);
    fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_mkfs_killed_at_its_timeout_leaves_the_device_blank_for_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    fs::write(&image, vec![0u8; 16 << 20]).unwrap();
    // A mkfs that writes the filesystem's superblock (the real mkfs.ext4 with the same
    // arguments) and then hangs, as one stuck on a device that stopped answering half-way.
    Tool::MkfsExt4.set_program(script(
        dir.path(),
        "mkfs-writes-then-hangs",
        "mkfs.ext4 \"$@\" || exit 1\nexec sleep 30",
    ));
    Tool::MkfsExt4.set_timeout(Duration::from_secs(3));
    let err = csi_node::mkfs(&image, FsType::Ext4).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // The device looks blank: the next stage formats it instead of mounting what the killed
    // mkfs left.
    assert_eq!(csi_node::probe_filesystem(&image).unwrap(), None);

    // And the retry formats it.
    Tool::MkfsExt4.set_program("mkfs.ext4");
    Tool::MkfsExt4.set_timeout(Tool::MkfsExt4.default_timeout());
    csi_node::mkfs(&image, FsType::Ext4).unwrap();
    assert_eq!(
        csi_node::probe_filesystem(&image).unwrap().as_deref(),
        Some("ext4")
    );

    // A mkfs that fails on its own (not killed) leaves the device as it was: what is there is
    // not erased.
    Tool::MkfsExt4.set_program(script(dir.path(), "mkfs-fails", "exit 1"));
    let err = csi_node::mkfs(&image, FsType::Ext4).unwrap_err();
    assert!(matches!(err, Error::Command { .. }), "{err}");
    assert_eq!(
        csi_node::probe_filesystem(&image).unwrap().as_deref(),
        Some("ext4")
    );
}
