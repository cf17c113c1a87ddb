//! The node side across a real restart of the `composer` process: volumes
//! staged and published (a RAID1 volume through raid-engine + FUSE + loop,
//! an SSD slice through a loop device) with files written through their
//! mounted filesystems; the process is killed with SIGKILL and started again
//! on the same directories. Then `NodeStageVolume` of a staged volume is
//! idempotent (the slice's loop device survived and is taken over; the
//! RAID1 volume is re-assembled and its publish bound again, while the
//! loop device number its killed process recorded, detached and attached
//! again to another file meanwhile, is left alone), the files read
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
    // The first RAID1 volume's loop device goes and its number is attached
    // again, to another file, before the new process comes (here by the
    // test, which takes the volume's mounts down to free it; any user of loop
    // devices may take a freed number): the new process finds that number in
    // its state with another attachment on it, and must leave it alone.
    let m = &vols[0].0;
    let staged_at = std::fs::canonicalize(&m.staging).unwrap();
    let source = csi_node::mount_table()
        .unwrap()
        .into_iter()
        .find(|e| e.mount_point == staged_at)
        .unwrap()
        .source;
    let old = csi_node::LoopDevice::open(std::path::Path::new(&source)).unwrap();
    csi_node::unmount_all(&m.target).unwrap();
    csi_node::unmount_all(&m.staging).unwrap();
    assert!(
        old.detach_and_wait(std::time::Duration::from_secs(30))
            .unwrap()
    );
    let decoy = dir.join("decoy.img");
    std::fs::File::create(&decoy)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    // Fails if another process took the number first: the case is the same.
    let _ = std::process::Command::new("losetup")
        .arg(old.path())
        .arg(&decoy)
        .status();
    let reused = csi_node::LoopDevice::open(old.path())
        .expect("the freed number is attached again, by the test or another process");
    assert_ne!(reused, old);
    let still_there = || csi_node::LoopDevice::open(reused.path()).as_ref() == Some(&reused);

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
    assert!(still_there(), "{} was detached", reused.path().display());
    check(&mirror.target, mf);
    publish(&b.client, mirror).await.unwrap();
    publish(&b.client, slice).await.unwrap();
    loops.note();
    // And the test's own device at the reused number, when the test got it.
    let decoy_dev =
        usize::from(reused.backing_file() == Some(std::fs::canonicalize(&decoy).unwrap()));
    assert_eq!(
        loops.noted(),
        4 + decoy_dev,
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
    assert!(still_there(), "{} was detached", reused.path().display());
    if reused.backing_file() == Some(std::fs::canonicalize(&decoy).unwrap()) {
        assert!(
            reused
                .detach_and_wait(std::time::Duration::from_secs(30))
                .unwrap()
        );
    }
    common::assert_nothing_left(&dir);
    loops.assert_released();
    b.kill();
}
