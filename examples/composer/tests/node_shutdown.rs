//! The node side when its process is stopped with SIGTERM (a DaemonSet
//! rollout, a node drain) while volumes are staged and published: the
//! process ends on its own within its bound (the old shutdown unstaged
//! published volumes and could wait forever on a lazy FUSE unmount), what
//! the application wrote is durable although it never called `fsync` (the
//! shutdown syncs every file system and flushes every engine), the volumes
//! stay staged (the CO owns them until `NodeUnstageVolume`), and a new
//! process re-serves them at the next stage with every byte in place and,
//! at the unstage, leaves none of the loop devices either process attached,
//! also from a state file as written before loop devices were recorded with
//! their disk sequence numbers.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the test says so
//! and passes, except under `CI=true`, where it fails.

use std::time::Duration;

mod common;
use common::{Cleanup, Server, check, data, provision, publish, stage, teardown};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_keeps_published_volumes_staged() {
    if !common::can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let _cleanup = Cleanup(dir.clone());
    let mut loops = common::LoopLedger::start(&dir);
    let a = Server::start_logging(&dir, "info").await;
    let mut vols = Vec::new();
    for (name, params, bytes) in [
        (
            "mirror",
            &[("type", "hdd"), ("redundancy", "true")][..],
            200u64 << 20,
        ),
        ("slice", &[("type", "slice")][..], 64 << 20),
    ] {
        let v = provision(&a.client, &dir, name, params, bytes).await;
        let files = data(vols.len() as u8 + 5);
        // No fsync: the data sits in the page cache when the signal comes.
        for (n, d) in &files {
            std::fs::write(v.target.join(n), d).unwrap();
        }
        vols.push((v, files));
    }
    loops.note();
    assert_eq!(loops.noted(), 2, "one loop device per staged volume");
    let status = a.terminate(Duration::from_secs(120));
    assert!(status.success(), "composer ended with {status}");
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert_eq!(
        log.matches("flushed; stays staged").count(),
        2,
        "every volume flushed:\n{log}"
    );
    // Still staged as far as the node state goes, published too.
    let state = std::fs::read_to_string(dir.join("node/run/node-state.json")).unwrap();
    for (v, _) in &vols {
        assert!(state.contains(&v.id), "{} kept in {state}", v.id);
        assert!(state.contains(v.target.to_str().unwrap()), "{state}");
    }

    // The new process reads the state as an older version wrote it, without
    // the loop devices' disk sequence numbers: it still finds its loop devices
    // (the slice's over its drive file, the RAID1's below its FUSE directory).
    let path = dir.join("node/run/node-state.json");
    let mut old: serde_json::Value = serde_json::from_str(&state).unwrap();
    for (_, r) in old["staged"].as_object_mut().unwrap() {
        let seq = r.as_object_mut().unwrap().remove("loop_diskseq");
        assert!(seq.is_some_and(|s| s.is_u64()), "recorded: {state}");
    }
    std::fs::write(&path, old.to_string()).unwrap();

    let b = Server::start(&dir).await;
    for (v, files) in &vols {
        stage(&b.client, v).await.unwrap();
        publish(&b.client, v).await.unwrap();
        check(&v.target, files);
    }
    loops.note();
    for (v, _) in &vols {
        teardown(&b.client, v).await;
    }
    common::assert_nothing_left(&dir);
    // Every loop device either process attached, the one the first left
    // over its RAID1 volume's FUSE file included.
    loops.assert_released();
    let status = b.terminate(Duration::from_secs(120));
    assert!(status.success(), "composer ended with {status}");
}
