//! A loop device of a block volume's image that no publication records (left by a publish a
//! crash or a failed detach cut short) is detached by the next NodePublishVolume; one that
//! cannot be detached fails that call (INTERNAL naming the device), before anything is made,
//! instead of staying attached for ever with nothing to find it by. The CO's retry, with
//! losetup working again, detaches it and publishes.
//! A test binary of its own: the tool settings it changes are process-wide.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use csi_node::Tool;
use csi_types::{
    Code, Csi,
    types::{AccessMode, VolumeCapability},
};

#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_loop_device_that_cannot_be_detached_fails_the_publish() {
    let test = "a_leftover_loop_device_that_cannot_be_detached_fails_the_publish";
    if !can_mount(test) {
        return;
    }
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
    // losetup attaches as usual but fails `-d`.
    let failing = s.dir.path().join("failing-losetup");
    fs::write(
        &failing,
        "#!/bin/sh\n[ \"$1\" = -d ] && { echo 'losetup: device busy' >&2; exit 1; }\nexec losetup \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&failing, fs::Permissions::from_mode(0o755)).unwrap();
    Tool::Losetup.set_program(&failing);
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
