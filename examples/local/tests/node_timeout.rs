//! A `losetup` that hangs (a stuck device) is killed at its timeout: NodePublishVolume answers
//! DEADLINE_EXCEEDED naming it, and the driver, whose lock the call held, serves the retry.
//! A test binary of its own: the tool settings it changes are process-wide.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use csi_node::Tool;
use csi_types::{
    Code, Csi,
    types::{AccessMode, VolumeCapability},
};

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_losetup_answers_deadline_exceeded_and_leaves_the_driver_free() {
    if !can_mount("a_hung_losetup_answers_deadline_exceeded_and_leaves_the_driver_free") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = new_volume(c, block_req("b", 4 * MIB)).await;
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let (staging, target) = (s.path("staging"), s.path("dev"));
    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    // losetup answers `--version` (the check for loop devices) and hangs on anything else.
    let script = s.dir.path().join("hung-losetup");
    fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = --version ] && exec losetup --version\nexec sleep 30\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    Tool::Losetup.set_program(&script);
    Tool::Losetup.set_timeout(Duration::from_secs(2));
    // The CO makes the target file, as kubelet does for a block volume.
    fs::write(target.as_path(), b"").unwrap();
    let publish = publish(&v, Some(&staging), &target, &cap, false);
    let e = c.node_publish_volume(publish.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("hung-losetup") && msg.contains("did not finish within"),
        "{msg}"
    );
    assert!(target.as_path().is_file(), "the CO's target file stays");
    // The call let go of the driver: with losetup working again the retry publishes.
    Tool::Losetup.set_program("losetup");
    Tool::Losetup.set_timeout(Tool::Losetup.default_timeout());
    c.node_publish_volume(publish).await.unwrap();
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}
