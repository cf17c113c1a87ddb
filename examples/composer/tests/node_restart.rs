//! The node side across a real restart of the `composer` process: volumes
//! staged and published (a RAID1 volume through raid-engine + FUSE + loop,
//! an SSD slice through a loop device) with files written through their
//! mounted filesystems; the process is killed with SIGKILL and started again
//! on the same directories. Then `NodeStageVolume` of a staged volume is
//! idempotent (the slice's loop device survived and is taken over; the
//! RAID1 volume is re-assembled and its publish bound again), the files read
//! back equal, `NodePublishVolume` is idempotent, and `NodeUnpublishVolume`
//! and `NodeUnstageVolume` clean up, also of a volume not staged again:
//! no mount and no loop device is left under the test's directory, and no
//! loop device that either process attached is left attached (the one over
//! the RAID1 volume's FUSE file, from the killed process, included: once its
//! dead FUSE mount is lazily unmounted the kernel names its backing file
//! `/volume`, and nothing finds it again).
//!
//! Needs root, `/dev/fuse` and loop devices: without them the test says so
//! and passes, except under `CI=true`, where it fails.

use csi_types::prelude::*;

mod common;
use common::{Cleanup, Server, Vol, check, data, provision, publish, stage, teardown, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_volumes_survive_a_node_process_restart() {
    if !common::can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let _cleanup = Cleanup(dir.clone());
    let mut loops = common::LoopLedger::start(&dir);
    let a = Server::start(&dir).await;
    let mut vols = Vec::new();
    for (name, params, bytes) in [
        (
            "mirror",
            &[("type", "hdd"), ("redundancy", "true")][..],
            200u64 << 20,
        ),
        (
            "mirror2",
            &[("type", "hdd"), ("redundancy", "true")][..],
            200 << 20,
        ),
        ("slice", &[("type", "slice")][..], 64 << 20),
    ] {
        let v = provision(&a.client, &dir, name, params, bytes).await;
        let files = data(vols.len() as u8 + 3);
        write(&v.target, &files);
        vols.push((v, files));
    }
    loops.note();
    assert_eq!(loops.noted(), 3, "one loop device per staged volume");
    a.kill();
    // The dead FUSE mount of the second RAID1 volume is lazily unmounted
    // before the new process comes (by an operator, or by a cleanup from an
    // older node process): its loop device now names its backing file
    // `/volume`, and only the attachment the node recorded finds it.
    let fuse2 = dir.join("node/run").join(&vols[1].0.id);
    assert_eq!(csi_node::mounts_under(&fuse2).unwrap().len(), 1);
    csi_node::lazy_unmount_under(&fuse2).unwrap();
    assert!(
        loops
            .attached()
            .iter()
            .any(|(_, b)| b == std::path::Path::new("/volume")),
        "{:?}",
        loops.attached()
    );

    let b = Server::start(&dir).await;
    let [(mirror, mf), (mirror2, _), (slice, sf)] = &vols[..] else {
        unreachable!()
    };
    // The slice's loop device and mounts outlived the process: nothing to do.
    stage(&b.client, slice).await.unwrap();
    check(&slice.target, sf);
    // The RAID1 volume's FUSE ended with the process: re-assembled, its
    // target bound to the new stack.
    stage(&b.client, mirror).await.unwrap();
    stage(&b.client, mirror).await.unwrap();
    check(&mirror.target, mf);
    publish(&b.client, mirror).await.unwrap();
    publish(&b.client, slice).await.unwrap();
    loops.note();
    assert_eq!(
        loops.noted(),
        4,
        "the re-assembled RAID1 volume's new device"
    );
    // Another staging path is still refused.
    let other = Vol {
        id: mirror2.id.clone(),
        staging: dir.join("staging").join("elsewhere"),
        target: mirror2.target.clone(),
    };
    let e = stage(&b.client, &other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    for v in [mirror, mirror2, slice] {
        teardown(&b.client, v).await;
    }
    // Idempotent.
    teardown(&b.client, mirror2).await;
    common::assert_nothing_left(&dir);
    loops.assert_released();
    b.kill();
}
