//! A loop device that cannot be detached at NodeUnpublishVolume (a `losetup -d` that fails, or
//! one that hangs and is killed at its timeout) fails the call: DEADLINE_EXCEEDED for the
//! timeout, INTERNAL otherwise, with the publication still recorded, so that the CO's retry
//! detaches it and answers OK. Answering OK would tell the CO the volume is released while its
//! loop device still holds the image.
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
async fn a_failed_detach_fails_the_unpublish_and_its_retry_detaches() {
    if !can_mount("a_failed_detach_fails_the_unpublish_and_its_retry_detaches") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = new_volume(c, block_req("b", 4 * MIB)).await;
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    let _cleanup = DetachLoopsOf(img.clone());
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let staging = s.path("staging");
    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    // losetup answers `--version` and attaches as usual, but fails `-d` (exit 1), or hangs on
    // it until its timeout kills it.
    let failing = s.dir.path().join("failing-losetup");
    fs::write(
        &failing,
        "#!/bin/sh\n[ \"$1\" = -d ] && { echo 'losetup: device busy' >&2; exit 1; }\nexec losetup \"$@\"\n",
    )
    .unwrap();
    let hung = s.dir.path().join("hung-losetup");
    fs::write(
        &hung,
        "#!/bin/sh\n[ \"$1\" = -d ] && exec sleep 30\nexec losetup \"$@\"\n",
    )
    .unwrap();
    for script in [&failing, &hung] {
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (script, code) in [(&failing, Code::Internal), (&hung, Code::DeadlineExceeded)] {
        let target = s.path(&format!("dev-{code:?}"));
        fs::write(target.as_path(), b"").unwrap();
        c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
            .await
            .unwrap();
        assert_eq!(loops_of(&img), 1);
        Tool::Losetup.set_program(script);
        Tool::Losetup.set_timeout(Duration::from_secs(2));
        let e = c
            .node_unpublish_volume(unpublish(&v, &target))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&*script.to_string_lossy()), "{msg}");
        assert_eq!(loops_of(&img), 1, "the loop device is still attached");
        // The publication is still recorded: unstaging is refused until it is gone.
        let e = c
            .node_unstage_volume(unstage(&v, &staging))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        // With losetup working again, the CO's retry detaches and answers OK.
        Tool::Losetup.set_program("losetup");
        Tool::Losetup.set_timeout(Tool::Losetup.default_timeout());
        c.node_unpublish_volume(unpublish(&v, &target))
            .await
            .unwrap();
        assert!(eventually(|| loops_of(&img) == 0), "a loop device was left");
        assert!(!target.as_path().exists());
    }
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}
