//! A loop device of a block volume's image that no publication records (left by a publish a
//! crash or a failed detach cut short) is detached by the next NodePublishVolume; one that
//! cannot be detached fails that call (INTERNAL naming the device), before anything is made,
//! instead of staying attached for ever with nothing to find it by. The CO's retry, with
//! losetup working again, detaches it and publishes.
//! A device whose detach fails on a path that fails its call anyway (a bind that fails after the
//! attach) is logged at warn, naming it, and detached by the next publish.
//! A test binary of its own: the tool settings it changes (and the log subscriber) are
//! process-wide; its tests take turns (`TOOLS`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use std::sync::{Arc, Mutex};

use common::*;
use csi_node::Tool;
use csi_types::{
    Code, Csi,
    types::{AccessMode, VolumeCapability},
};

/// Held by each test while it changes the process-wide tool settings.
static TOOLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A losetup at `DIR/failing-losetup` that attaches as usual but fails `-d`.
fn failing_losetup(dir: &std::path::Path) -> std::path::PathBuf {
    let failing = dir.join("failing-losetup");
    fs::write(
        &failing,
        "#!/bin/sh\n[ \"$1\" = -d ] && { echo 'losetup: device busy' >&2; exit 1; }\nexec losetup \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&failing, fs::Permissions::from_mode(0o755)).unwrap();
    failing
}

/// What the process logs from now on (at warn and above), as text.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_that_cannot_be_detached_after_a_failed_bind_is_logged_and_detached_next_time() {
    let test =
        "a_device_that_cannot_be_detached_after_a_failed_bind_is_logged_and_detached_next_time";
    if !can_mount(test) {
        return;
    }
    let _turn = TOOLS.lock().await;
    let logs = captured_logs();
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = new_volume(c, block_req("b", 4 * MIB)).await;
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    let _cleanup = DetachLoopsOf(img.clone());
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let staging = s.path("staging");
    if let Err(e) = c.node_stage_volume(stage(&v, &staging, &cap)).await {
        skip_without_loop_devices(test, &e);
        return;
    }
    // A target that is a symbolic link to a file: the device is attached, then the bind
    // refuses the link; the detach after it fails.
    let file = s.path("file");
    fs::write(file.as_path(), b"").unwrap();
    let link = s.path("link");
    std::os::unix::fs::symlink(file.as_path(), link.as_path()).unwrap();
    Tool::Losetup.set_program(failing_losetup(s.dir.path()));
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &link, &cap, false))
        .await
        .unwrap_err();
    Tool::Losetup.set_program("losetup");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let left = loop_devices_of(&img);
    assert_eq!(left.len(), 1, "{left:?}");
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&left[0]) && l.contains("device busy")),
        "no warning names {} and the error: {logged}",
        left[0]
    );
    // The next publish detaches it (no publication records it) and publishes.
    let target = s.path("dev");
    fs::write(target.as_path(), b"").unwrap();
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert!(
        eventually(|| loops_of(&img) == 1),
        "{} is still attached beside the publish's device",
        left[0]
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(eventually(|| loops_of(&img) == 0), "a loop device was left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_loop_device_that_cannot_be_detached_fails_the_publish() {
    let test = "a_leftover_loop_device_that_cannot_be_detached_fails_the_publish";
    if !can_mount(test) {
        return;
    }
    let _turn = TOOLS.lock().await;
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = new_volume(c, block_req("b", 4 * MIB)).await;
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    let _cleanup = DetachLoopsOf(img.clone());
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let staging = s.path("staging");
    if let Err(e) = c.node_stage_volume(stage(&v, &staging, &cap)).await {
        skip_without_loop_devices(test, &e);
        return;
    }
    // A device over the image that no publication records.
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let leftover = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Tool::Losetup.set_program(failing_losetup(s.dir.path()));
    let target = s.path("dev");
    fs::write(target.as_path(), b"").unwrap();
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap_err();
    Tool::Losetup.set_program("losetup");
    assert_eq!(e.code(), Code::Internal, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&leftover), "{msg}");
    // Nothing was made: only the leftover serves the image, and the target is as the CO made it.
    assert_eq!(loops_of(&img), 1);
    assert!(!csi_node::is_mount_point(target.as_path()).unwrap());
    // The retry detaches the leftover and publishes with a device of its own.
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert!(
        eventually(|| loops_of(&img) == 1),
        "the leftover {leftover} is still attached beside the publish's device"
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(eventually(|| loops_of(&img) == 0), "a loop device was left");
}
