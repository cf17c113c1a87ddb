//! `NodeUnstageVolume` before `NodeUnpublishVolume` (the CO's order broken)
//! never leaves the CO stuck:
//!
//! - a volume this node process serves is not unstaged under a live
//!   publish: FAILED_PRECONDITION naming the target and the order, and the
//!   volume stays staged, published and readable, so that the CO's
//!   unpublish and a new unstage then clean up. Before, a plain slice was
//!   unstaged (its claim on the drive's bytes dropped under the mounted
//!   file system) and its unpublish was then refused for good, as a mount
//!   "this plugin did not mount"; an engine volume's unstage waited
//!   forever for its FUSE file, holding the node side's lock, and every
//!   later call on the node side hung behind it;
//! - a volume staged by an earlier node process (its stack died with it)
//!   unstages, and the unpublish that follows unmounts the target the
//!   earlier process bound, and nothing else. Before, that unpublish was
//!   refused for good.
//!
//! And a staging path that is a file, not a directory, is refused before
//! anything is attached.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the tests say so
//! and pass, except under `CI=true`, where they fail.

use std::time::Duration;

use csi_types::{ids::*, node::*, prelude::*};

mod common;
use common::{Cleanup, Server, Vol, check, data, provision, write};

fn unstage_req(v: &Vol) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: VolumeId::new(&v.id).unwrap(),
        staging_target_path: common::np(&v.staging),
    }
}

fn unpublish_req(v: &Vol) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: VolumeId::new(&v.id).unwrap(),
        target_path: common::np(&v.target),
    }
}

/// Runs `f` on its own thread and waits for it at most `bound` (a generous
/// bound on a hang, not a speed check): an unstage that hangs fails the test
/// instead of hanging it.
fn bounded<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|_| panic!("the call did not return within {bound:?}: it hangs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_volume_is_not_unstaged_under_a_live_publish() {
    if !common::can_mount() {
        return;
    }
    let s = common::InProcess::new();
    let dir = s.dir.path().to_path_buf();
    for (name, params) in [
        ("slice", &[("type", "slice")][..]),
        ("mirror", &[("type", "hdd"), ("redundancy", "true")][..]),
    ] {
        let v = provision(&s.plugin, &dir, name, params, 64 << 20).await;
        let files = data(name.len() as u8);
        write(&v.target, &files);

        let plugin = s.plugin.clone();
        let req = unstage_req(&v);
        let rt = tokio::runtime::Handle::current();
        let err = bounded(Duration::from_secs(120), move || {
            rt.block_on(Csi::node_unstage_volume(&plugin, req))
        })
        .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&v.target.display().to_string()),
            "{name}: no target in: {msg}"
        );
        assert!(msg.contains("NodeUnpublishVolume"), "{name}: {msg}");
        // Nothing was taken down.
        assert!(csi_node::is_mount_point(&v.staging).unwrap(), "{name}");
        assert!(csi_node::is_mount_point(&v.target).unwrap(), "{name}");
        assert!(s.driver.node_side().unwrap().staged_at(&v.id).is_some());
        check(&v.target, &files);

        // The CO's order: both succeed, and nothing is left.
        Csi::node_unpublish_volume(&s.plugin, unpublish_req(&v))
            .await
            .unwrap();
        Csi::node_unstage_volume(&s.plugin, unstage_req(&v))
            .await
            .unwrap();
        assert!(!v.target.exists(), "{name}");
        assert!(!csi_node::is_mount_point(&v.staging).unwrap_or(false));
    }
    common::assert_nothing_left(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_after_the_unstage_of_a_volume_of_an_earlier_process_cleans_up() {
    if !common::can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let _cleanup = Cleanup(dir.clone());
    let mut loops = common::LoopLedger::start(&dir);
    let a = Server::start(&dir).await;
    let v = provision(
        &a.client,
        &dir,
        "mirror",
        &[("type", "hdd"), ("redundancy", "true")],
        64 << 20,
    )
    .await;
    write(&v.target, &data(7));
    loops.note();
    a.kill();

    let b = Server::start(&dir).await;
    // Out of order: the unstage takes the dead stack apart ...
    Csi::node_unstage_volume(&b.client, unstage_req(&v))
        .await
        .unwrap();
    assert!(csi_node::is_mount_point(&v.target).unwrap());
    // ... and the unpublish then unmounts what the earlier process bound.
    Csi::node_unpublish_volume(&b.client, unpublish_req(&v))
        .await
        .unwrap();
    assert!(!csi_node::is_mount_point(&v.target).unwrap_or(false));
    assert!(!v.target.exists());
    // Idempotent.
    Csi::node_unpublish_volume(&b.client, unpublish_req(&v))
        .await
        .unwrap();
    Csi::node_unstage_volume(&b.client, unstage_req(&v))
        .await
        .unwrap();
    common::assert_nothing_left(&dir);
    loops.assert_released();
    b.kill();
}

/// A staging path for mount access that exists as a file (not a
/// directory) is FAILED_PRECONDITION naming the field and the path, before
/// anything is attached: nothing is left staged, attached or mounted.
/// Before, the volume was assembled and attached and the mount then failed
/// with INTERNAL ("File exists").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_path_that_is_a_file_is_a_failed_precondition() {
    if !common::can_mount() {
        return;
    }
    let s = common::InProcess::new();
    let dir = s.dir.path().to_path_buf();
    for (name, params) in [
        ("slice", &[("type", "slice")][..]),
        ("mirror", &[("type", "hdd"), ("redundancy", "true")][..]),
    ] {
        let (id, _) = common::create_published(&s.plugin, name, params, 64 << 20).await;
        let v = Vol {
            id: id.clone(),
            staging: dir.join("staging").join(name),
            target: dir.join("target").join(name),
        };
        std::fs::create_dir_all(v.staging.parent().unwrap()).unwrap();
        std::fs::write(&v.staging, b"not a directory").unwrap();
        let err = common::stage(&s.plugin, &v).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("staging_target_path") && msg.contains(&v.staging.display().to_string()),
            "{name}: {msg}"
        );
        assert!(!s.driver.node_side().unwrap().is_staged(&id), "{name}");
        common::assert_nothing_left(&dir);
        assert_eq!(std::fs::read(&v.staging).unwrap(), b"not a directory");
    }
}
