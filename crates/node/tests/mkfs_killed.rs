//! A `mkfs` killed at its timeout leaves no filesystem signature behind, so that the device
//! looks blank and a retry formats it again; one that stays blocked in the kernel after the
//! kill keeps its device refused until it has died, and is erased after it. A test binary of
//! its own: `Tool::set_program` is process-wide, and this one points `mkfs.ext4` (one test)
//! and `mkfs.xfs` (the other) at scripts while `blkid` and `wipefs` stay the real ones. Needs
//! `mkfs.ext4`, `mkfs.xfs`, `blkid` and `wipefs`; the first test not root (they work on an
//! image file as on a device), the second root and the cgroup v1 freezer (and loop devices
//! for its last part).

use std::fs;
use std::path::Path;
use std::time::Duration;

use csi_node::{Error, FsType, Tool};

mod common;
use common::{Freezer, eventually, script};

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

    // While a mkfs of the device runs, it is neither probed (what blkid would read is half
    // written) nor formatted again by another call: no two formats of it overlap.
    let go = dir.path().join("go");
    Tool::MkfsExt4.set_program(script(
        dir.path(),
        "mkfs-waits",
        &format!(
            "while [ ! -e '{}' ]; do [ -d '{}' ] || exit 1; sleep 0.05; done\nexec mkfs.ext4 \"$@\"",
            go.display(),
            dir.path().display()
        ),
    ));
    let running = {
        let image = image.clone();
        std::thread::spawn(move || csi_node::mkfs(&image, FsType::Ext4))
    };
    let pending = |r: Result<(), Error>| matches!(r, Err(Error::FormatPending { pid: None, .. }));
    assert!(
        eventually(|| pending(csi_node::probe_filesystem(&image).map(|_| ()))),
        "probed while a mkfs of it runs"
    );
    let err = csi_node::mkfs(&image, FsType::Ext4).unwrap_err();
    assert!(
        err.to_string()
            .contains("being formatted by a mkfs of this process now"),
        "{err}"
    );
    assert!(pending(Err(err)));
    fs::write(&go, b"").unwrap();
    running.join().unwrap().unwrap();
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

/// The stand-in for a write of the killed mkfs that the kernel completes late: a process outside
/// the mkfs's group (so that the kill leaves it), started by the script, that writes an ext4
/// filesystem on `image` once `DIR/go-NAME` exists and then creates `DIR/written-NAME`. The test
/// lets it write while the killed mkfs is still blocked, as a hung device completes a write
/// it had queued. It gives up once `dir` is gone, so a test that fails first leaves no process.
fn late_writer(dir: &Path, name: &str, image: &Path) -> String {
    format!(
        "setsid sh -c 'while [ ! -e {go} ]; do [ -d {dir} ] || exit 1; sleep 0.05; done; mkfs.ext4 -q -F {image} && touch {written}' \
         </dev/null >/dev/null 2>&1 &",
        go = dir.join(format!("go-{name}")).display(),
        dir = dir.display(),
        written = dir.join(format!("written-{name}")).display(),
        image = image.display(),
    )
}

/// Runs `mkfs.xfs` (the script `body`, which freezes a process of its group) on `image` until
/// it is killed at its timeout, lets the late writer write, and checks that the device is
/// refused (neither probed nor formatted) until the frozen process is thawed and dies, and is
/// blank then: a retried stage never finds what the killed mkfs wrote after its kill.
fn refused_until_the_killed_mkfs_dies(
    dir: &Path,
    name: &str,
    image: &Path,
    freezer: &Freezer,
    body: &str,
) {
    Tool::MkfsXfs.set_program(script(dir, &format!("mkfs-{name}"), body));
    Tool::MkfsXfs.set_timeout(Duration::from_secs(2));
    let err = csi_node::mkfs(image, FsType::Xfs).unwrap_err();
    let Error::Timeout {
        pid, exited: false, ..
    } = err
    else {
        panic!("{name}: not killed while blocked: {err}");
    };
    Tool::MkfsXfs.set_program("mkfs.xfs");
    Tool::MkfsXfs.set_timeout(Tool::MkfsXfs.default_timeout());
    let refused = |when: &str| {
        let err = csi_node::probe_filesystem(image);
        let Err(err @ Error::FormatPending { .. }) = err else {
            panic!("{name}: probed {when} while the killed mkfs {pid} lives: {err:?}");
        };
        let msg = err.to_string();
        for part in [image.to_str().unwrap(), &format!("pid {pid}"), "retry"] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
        let status = csi_types::CsiError::from(err);
        assert_eq!(status.code(), csi_types::Code::Aborted, "{status}");
        let err = csi_node::mkfs(image, FsType::Xfs).unwrap_err();
        assert!(
            matches!(err, Error::FormatPending { pid: Some(p), .. } if p == pid),
            "{err}"
        );
    };
    refused("before its late write");
    fs::write(dir.join(format!("go-{name}")), b"").unwrap();
    assert!(
        eventually(|| dir.join(format!("written-{name}")).exists()),
        "{name}: the late write did not happen"
    );
    // What the old code's erase at the kill missed: an ext4 written after it.
    refused("after its late write");
    freezer.thaw();
    let done = eventually(|| {
        !matches!(
            csi_node::probe_filesystem(image),
            Err(Error::FormatPending { .. })
        )
    });
    assert!(
        done,
        "{name}: still refused after the killed mkfs {pid} was thawed"
    );
    assert_eq!(
        csi_node::probe_filesystem(image).unwrap(),
        None,
        "{name}: not erased"
    );
    // And the retry formats it.
    csi_node::mkfs(image, FsType::Xfs).unwrap();
    assert_eq!(
        csi_node::probe_filesystem(image).unwrap().as_deref(),
        Some("xfs")
    );
}

#[test]
fn a_mkfs_blocked_in_the_kernel_after_its_kill_is_erased_after_it_dies_and_refused_until_then() {
    let Some(freezer) = Freezer::or_skip("the blocked-mkfs test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let tasks = freezer.dir.join("tasks");
    let state = freezer.dir.join("freezer.state");
    let freeze = format!(
        "echo $$ > {}\necho FROZEN > {}",
        tasks.display(),
        state.display()
    );
    for (name, blocked) in [
        // The mkfs itself frozen (blocked in the kernel): it dies of its kill only once thawed.
        ("frozen", format!("{freeze}\nexec sleep 30")),
        // A wrapper (as `nsenter`) whose child, the real mkfs, is the one blocked: the wrapper
        // dies of the kill at once, and the child, of its group, may write until it is thawed.
        (
            "wrapped",
            format!("sh -c '{freeze}; exec sleep 30' &\nwait"),
        ),
        // A mkfs that exits at once and leaves a process of its group, which holds its output,
        // blocked: the call ends at the timeout, and that process may write until thawed.
        ("left", format!("sh -c '{freeze}; exec sleep 30' &\nexit 0")),
    ] {
        // mkfs.xfs wants 300 MiB at least; the file is sparse, and all zeros again.
        fs::File::create(&image).unwrap().set_len(0).unwrap();
        fs::File::create(&image)
            .unwrap()
            .set_len(320 << 20)
            .unwrap();
        let body = format!("{}\n{blocked}", late_writer(dir.path(), name, &image));
        refused_until_the_killed_mkfs_dies(dir.path(), name, &image, &freezer, &body);
    }

    // A loop device whose number is attached to another file by the time the killed mkfs
    // dies: that file's filesystem is not erased (its disk sequence number tells the device
    // has other media now).
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped the reattached-loop-device part: no loop devices");
        return;
    }
    let other = dir.path().join("other");
    fs::File::create(&other).unwrap().set_len(32 << 20).unwrap();
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let first = Detached(csi_node::LoopDevice::attach(&image, false).unwrap());
    let device = first.0.path().to_path_buf();
    Tool::MkfsXfs.set_program(script(
        dir.path(),
        "mkfs-frozen-on-a-loop-device",
        &format!("{freeze}\nexec sleep 30"),
    ));
    Tool::MkfsXfs.set_timeout(Duration::from_secs(2));
    let err = csi_node::mkfs(&device, FsType::Xfs).unwrap_err();
    assert!(matches!(err, Error::Timeout { exited: false, .. }), "{err}");
    Tool::MkfsXfs.set_program("mkfs.xfs");
    Tool::MkfsXfs.set_timeout(Tool::MkfsXfs.default_timeout());
    // The fake mkfs holds no descriptor of the device: it detaches at once, and its number is
    // free for another attach (of this test, by that number).
    assert!(first.0.detach_and_wait(Duration::from_secs(10)).unwrap());
    let reattached = std::process::Command::new("losetup")
        .arg(&device)
        .arg(&other)
        .status()
        .unwrap();
    if !reattached.success() {
        eprintln!(
            "skipped the reattached-loop-device part: {} was taken meanwhile",
            device.display()
        );
        return;
    }
    let second = Detached(csi_node::LoopDevice::open(&device).unwrap());
    assert!(matches!(
        csi_node::probe_filesystem(&device),
        Err(Error::FormatPending { pid: Some(_), .. })
    ));
    freezer.thaw();
    assert!(
        eventually(|| !matches!(
            csi_node::probe_filesystem(&device),
            Err(Error::FormatPending { .. })
        )),
        "still refused after the killed mkfs was thawed"
    );
    assert_eq!(
        csi_node::probe_filesystem(&device).unwrap().as_deref(),
        Some("ext4"),
        "the other file's filesystem was erased"
    );
    drop(second);
}

/// A loop device detached when dropped, so that a failed check leaks nothing.
struct Detached(csi_node::LoopDevice);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = self.0.detach_and_wait(Duration::from_secs(10));
    }
}
