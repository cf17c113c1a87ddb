//! A block device member is held with `O_EXCL` while a volume has it, as
//! md holds its members. In its own test binary: a test that spawns a
//! process (as tests/exclusive.rs does) would share the device's
//! descriptors with the child between fork and exec, and the check that
//! the claim is released with the volume would race with it.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::sync::Arc;

use raid_engine::{
    BlockDevice, CacheMode, CreateOptions, EngineError, FileDevice, Volume, VolumeLayout,
};

fn raid1() -> CreateOptions {
    CreateOptions::new(VolumeLayout::parse("raid1").unwrap())
}

/// A block device member is opened `O_EXCL` while claimed, as md does: a
/// loop device in a volume cannot be opened exclusively by anyone else
/// (`mount`, mdadm), is free again once the volume is dropped, and one
/// that another program holds exclusively, or that is mounted, cannot
/// join a volume (before, `create` overwrote the mounted file system).
#[test]
fn block_device_members_are_held_exclusively() {
    if !common::ensure_program("losetup", "mount") {
        common::skip("losetup is not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !out.status.success() {
        common::skip(&format!(
            "losetup -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mnt = dir.path().join("mnt");
    let result = std::panic::catch_unwind(|| {
        let (_, mut devs) = common::members(dir.path(), 1, 16 << 20);
        let dev: Arc<dyn BlockDevice> =
            Arc::new(FileDevice::open(&loopdev, CacheMode::DirectIfSupported).unwrap());
        devs.insert(0, dev);
        let vol = Volume::create(devs, &raid1()).unwrap();
        let excl = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(&loopdev);
        let e = excl.expect_err("an O_EXCL open of a member in use succeeded");
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::BUSY.raw_os_error())
        );
        drop(vol);
        // Released with the volume.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(&loopdev)
            .unwrap();
        // Held exclusively by someone else: refused naming it.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(&loopdev)
            .unwrap();
        let dev: Arc<dyn BlockDevice> =
            Arc::new(FileDevice::open(&loopdev, CacheMode::DirectIfSupported).unwrap());
        let e = Volume::create(vec![dev], &raid1()).err().unwrap();
        assert!(
            matches!(e, EngineError::InUse { .. }) && e.to_string().contains(&loopdev),
            "{e}"
        );
        drop(held);
        // A mounted file system on it: creating a volume over it (which
        // would overwrite the file system under the mount) is refused, and
        // the file system is intact.
        let fs_ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", &loopdev])
            .status()
            .is_ok_and(|s| s.success());
        std::fs::create_dir(&mnt).unwrap();
        if fs_ok
            && Command::new("mount")
                .arg(&loopdev)
                .arg(&mnt)
                .status()
                .is_ok_and(|s| s.success())
        {
            let before = common::metadata(&[&loopdev]);
            let dev: Arc<dyn BlockDevice> =
                Arc::new(FileDevice::open(&loopdev, CacheMode::DirectIfSupported).unwrap());
            let e = Volume::create(vec![dev], &raid1()).err().unwrap();
            assert!(
                matches!(e, EngineError::InUse { .. })
                    && e.to_string()
                        .contains("the kernel refuses to open it exclusively"),
                "{e}"
            );
            assert!(common::metadata(&[&loopdev]) == before);
        } else {
            common::skip("mkfs.ext4 or mount failed: the mounted case is not checked");
        }
    });
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &loopdev]).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
