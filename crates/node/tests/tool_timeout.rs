//! A tool that hangs is killed with its process group once its timeout passes, and the call
//! fails naming it. These tests point the tools at scripts that hang (a real process that
//! sleeps and leaves a grandchild sleeping too), which is why they live in a test binary of
//! their own: `Tool::set_program` is process-wide, and no other test here runs a real tool.
//! Each test changes only its own tools.

use std::fs;
use std::path::Path;
use std::time::Duration;

use csi_node::{AttachOptions, Error, FsType, LoopDevice, Tool};

mod common;
use common::{Freezer, eventually, script};

/// A script at `DIR/NAME` that records its pid and its grandchild's, then waits for the
/// grandchild, a `sleep` of 30 seconds: longer than any test should take.
fn hanging_script(dir: &Path, name: &str) -> std::path::PathBuf {
    let pids = dir.join(format!("{name}.pids"));
    script(
        dir,
        name,
        &format!("sleep 30 &\necho \"$$ $!\" > '{}'\nwait", pids.display()),
    )
}

/// The pids `hanging_script` recorded: the script's and its grandchild's.
fn recorded_pids(dir: &Path, name: &str) -> (u32, u32) {
    let text = fs::read_to_string(dir.join(format!("{name}.pids"))).unwrap();
    let mut it = text.split_whitespace().map(|p| p.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Whether `pid` has died: gone, or a zombie left for its parent (init, in a container that
/// may never reap it).
fn dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Runs `call` with `tool` pointed at a hanging script and a short timeout, and checks that it
/// fails with the tool's timeout error, that the message says what to do, that the code is
/// DEADLINE_EXCEEDED, and that the script and its grandchild are dead.
fn assert_killed_on_timeout<T: std::fmt::Debug>(
    tool: Tool,
    call: impl FnOnce() -> Result<T, Error>,
) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hung-{}", tool.name());
    tool.set_program(hanging_script(dir.path(), &name));
    tool.set_timeout(Duration::from_secs(2));
    let err = call().unwrap_err();
    let msg = err.to_string();
    let Error::Timeout {
        tool: which,
        pid,
        waited,
        exited,
        ..
    } = err
    else {
        panic!("{tool:?}: not a timeout: {msg}");
    };
    assert_eq!(which, tool, "{msg}");
    assert!(waited >= Duration::from_secs(2), "{msg}");
    assert!(exited, "the script is not blocked in the kernel: {msg}");
    for part in [
        name.as_str(),
        "did not finish within",
        "dmesg",
        "set_timeout",
    ] {
        assert!(msg.contains(part), "{part:?} missing: {msg}");
    }
    let (script, grandchild) = recorded_pids(dir.path(), &name);
    assert_eq!(pid, script, "{msg}");
    assert!(dead(script), "the script {script} is still running");
    assert!(
        eventually(|| dead(grandchild)),
        "the script's child {grandchild} (its process group) was not killed"
    );
    let status = csi_types::CsiError::from(Error::Timeout {
        command: vec!["x".into()],
        tool,
        waited,
        pid,
        exited,
    });
    assert_eq!(status.code(), csi_types::Code::DeadlineExceeded, "{status}");
}

#[test]
fn a_hung_blkid_is_killed_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    fs::write(&image, vec![0u8; 4096]).unwrap();
    assert_killed_on_timeout(Tool::Blkid, || csi_node::probe_filesystem(&image));
    // The file is untouched.
    assert_eq!(fs::read(&image).unwrap(), vec![0u8; 4096]);
}

#[test]
fn a_hung_mkfs_is_killed_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    fs::write(&image, vec![0u8; 4096]).unwrap();
    assert_killed_on_timeout(Tool::MkfsXfs, || csi_node::mkfs(&image, FsType::Xfs));
    // A tool that exits at once but leaves a process of its group holding its output: the
    // output never ends, so the call ends at the timeout, and the leftover is killed too.
    let pids = dir.path().join("leftover.pid");
    Tool::MkfsXfs.set_program(script(
        dir.path(),
        "mkfs-leaves-a-child",
        &format!("sleep 30 &\necho $! > '{}'\nexit 0", pids.display()),
    ));
    let err = csi_node::mkfs(&image, FsType::Xfs).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let leftover: u32 = fs::read_to_string(&pids).unwrap().trim().parse().unwrap();
    assert!(
        eventually(|| dead(leftover)),
        "the process {leftover} the tool left holding its output was not killed"
    );
}

#[test]
fn a_hung_losetup_is_killed_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    fs::write(&image, vec![0u8; 4096]).unwrap();
    assert_killed_on_timeout(Tool::Losetup, || {
        LoopDevice::attach_with(&image, &AttachOptions::default())
    });
    // A losetup that attaches the file and then hangs: the device it made is detached again,
    // since no one else would know it (root and loop devices needed for this part).
    if !csi_node::is_root() || !Path::new("/dev/loop-control").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the attach-then-hang part: it needs root and loop devices"
        );
        eprintln!("skipped the attach-then-hang part: needs root and loop devices");
        return;
    }
    Tool::Losetup.set_program(script(
        dir.path(),
        "attach-then-hang",
        "losetup \"$@\" || exit 1\nexec sleep 30",
    ));
    let err = LoopDevice::attach_with(&image, &AttachOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let left = detach_all_over(&image);
    assert!(left.is_empty(), "left attached: {left:?}");

    // A losetup blocked in the kernel when it is killed, whose attach completes only after the
    // call has returned: that device is detached once the losetup dies, while a device another
    // attach of the file made meanwhile is kept. The block in the kernel is a frozen cgroup
    // (the v1 freezer): a frozen process dies of its SIGKILL only once thawed.
    let Some(freezer) = Freezer::or_skip("the attach-after-the-kill part") else {
        return;
    };
    let late = attach_after_the_kill(dir.path(), "first", &freezer, &image);
    // Another attach of the file, while the killed losetup is still blocked.
    let retry = LoopDevice::attach(&image, false).unwrap();
    freezer.thaw();
    let gone = eventually(|| !LoopDevice::backed_by(&image).contains(&late));
    let left = detach_all_over(&image);
    assert!(
        gone,
        "the device the killed losetup attached stayed: {late:?}"
    );
    assert_eq!(left, [retry], "the other attach's device was not kept");

    // The same, with the file deleted before the killed losetup dies: the kernel then names
    // it `PATH (deleted)`, and the device is found by the file's identity instead.
    let image = dir.path().join("deleted-image");
    fs::write(&image, vec![0u8; 4096]).unwrap();
    let late = attach_after_the_kill(dir.path(), "deleted", &freezer, &image);
    fs::remove_file(&image).unwrap();
    freezer.thaw();
    let gone = eventually(|| late.backing_file().is_none());
    if !gone {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(late.path())
            .status();
    }
    assert!(
        gone,
        "the device the killed losetup attached to a file deleted since stayed: {late:?}"
    );
}

/// Attaches `image` with a `losetup` that is killed at its timeout while blocked in the kernel
/// (frozen in `freezer`), and whose attach (made by a child it left) happens only after the
/// call has returned: returns that device. The killed `losetup` dies at the next thaw.
fn attach_after_the_kill(dir: &Path, name: &str, freezer: &Freezer, image: &Path) -> LoopDevice {
    let go = dir.join(format!("go-{name}"));
    let attached = dir.join(format!("attached-{name}"));
    Tool::Losetup.set_program(script(
        dir,
        &format!("attach-after-the-kill-{name}"),
        &format!(
            "setsid sh -c 'while [ ! -e {go} ]; do [ -d {dir} ] || exit 1; sleep 0.05; done; losetup -f {image} && touch {attached}' \
             </dev/null >/dev/null 2>&1 &\n\
             echo $$ > {tasks}\necho FROZEN > {state}\nexec sleep 30",
            go = go.display(),
            dir = dir.display(),
            image = image.display(),
            attached = attached.display(),
            tasks = freezer.dir.join("tasks").display(),
            state = freezer.dir.join("freezer.state").display(),
        ),
    ));
    Tool::Losetup.set_timeout(Duration::from_secs(2));
    let err = LoopDevice::attach_with(image, &AttachOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Timeout { exited: false, .. }),
        "not blocked: {err}"
    );
    Tool::Losetup.set_program("losetup");
    Tool::Losetup.set_timeout(Tool::Losetup.default_timeout());
    fs::write(&go, b"").unwrap();
    assert!(
        eventually(|| attached.exists()),
        "the late attach did not happen"
    );
    let late = LoopDevice::backed_by(image);
    assert_eq!(late.len(), 1, "{late:?}");
    late.into_iter().next().unwrap()
}

/// The loop devices over `image`, each detached here (with the system's `losetup`), so that a
/// failed check leaks nothing.
fn detach_all_over(image: &Path) -> Vec<LoopDevice> {
    let left = LoopDevice::backed_by(image);
    for d in &left {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(d.path())
            .status();
    }
    left
}

#[test]
fn settings_are_per_tool_and_a_default_stays_until_set() {
    // Tools no other test here changes.
    assert_eq!(Tool::XfsGrowfs.timeout(), Tool::XfsGrowfs.default_timeout());
    assert_eq!(Tool::XfsGrowfs.program(), Path::new("xfs_growfs"));
    Tool::E2fsck.set_timeout(Duration::from_secs(1234));
    assert_eq!(Tool::E2fsck.timeout(), Duration::from_secs(1234));
    assert_eq!(Tool::XfsGrowfs.timeout(), Tool::XfsGrowfs.default_timeout());
    for &tool in Tool::ALL {
        assert!(
            tool.default_timeout() >= Duration::from_secs(30),
            "{tool:?}"
        );
    }
}

#[test]
fn a_tool_that_writes_more_than_a_pipe_holds_is_read_whole() {
    // mkfs.ext4 only: the other tests here change other tools.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    fs::write(&image, b"").unwrap();
    // 300 kB on each stream, more than a pipe holds (64 kB): a runner that read only after
    // the tool exited would wait for ever, here until the timeout.
    Tool::MkfsExt4.set_program(script(
        dir.path(),
        "chatty-mkfs",
        "head -c 300000 /dev/zero | tr '\\0' o\nhead -c 300000 /dev/zero | tr '\\0' e >&2\nexit 3",
    ));
    Tool::MkfsExt4.set_timeout(Duration::from_secs(120));
    let err = csi_node::mkfs(&image, FsType::Ext4).unwrap_err();
    let Error::Command { status, stderr, .. } = err else {
        panic!("not the tool's own failure: {err}");
    };
    assert!(status.ends_with("exit status: 3"), "{status}");
    assert_eq!(stderr.len(), 300_000);
    assert!(stderr.bytes().all(|b| b == b'e'));

    // A timeout of Duration::MAX is no limit, and no overflow.
    Tool::MkfsExt4.set_program(script(dir.path(), "quick-mkfs", "echo formatted \"$@\""));
    Tool::MkfsExt4.set_timeout(Duration::MAX);
    csi_node::mkfs(&image, FsType::Ext4).unwrap();
}
