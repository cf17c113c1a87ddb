//! The scenario of `rebuild_copy_failed.rs` and `rebuild_after_restart.rs`:
//! a rebuild whose copy fails part way, then the operator's retry. Each
//! test file holds one test, since the file size limit it sets is
//! process-wide.

use std::path::Path;
use std::sync::Arc;

use composer::admin::{self, Request};
use composer::node::{Backend, NodeConfig, NodeSide};
use composer_core::{Health, Media};
use csi_types::types::CapacityRange;
use raid_engine::MemberState;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The byte at `i` of the test's data: differs from block to block, so
/// that a block copied to the wrong place shows.
fn byte(i: usize) -> u8 {
    (i ^ (i >> 12) ^ (i >> 20)) as u8
}

/// A mirror whose member on a failed drive is rebuilt onto a spare, the
/// copy cut half way by an I/O error (`RLIMIT_FSIZE` inside the new
/// member's slice: every write at or beyond it answers `EFBIG`, as a drive
/// that stopped taking writes there would; every other write of the test
/// lies below it); with `restart`, the node process then ends and a new one
/// assembles the volume; then the operator's retry of `composer admin
/// rebuild` completes the member, and every byte reads back from it alone.
pub async fn failed_copy_then_retry(restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let driver = super::common::driver_in(dir.path());
    let c = driver.composer().clone();
    let side = driver.node_side().unwrap().clone();
    let ssds: Vec<String> = c
        .inventory()
        .drives()
        .iter()
        .filter(|d| d.kind == Media::Ssd)
        .map(|d| d.id.clone())
        .collect();
    let only = |keep: &[&str]| {
        for d in &ssds {
            let h = if keep.contains(&d.as_str()) {
                Health::Healthy
            } else {
                Health::Draining
            };
            c.mark(d, h).unwrap();
        }
    };
    let params = super::common::params(&[("type", "slice"), ("redundancy", "true")]);
    let range = CapacityRange::new(Some(64 << 20), None).unwrap();
    // A first mirror fills the front of the drive that later takes the
    // rebuilt member, so that the new member lies above every byte the
    // volume's survivor holds.
    let (a, b, spare, other) = ("r1-e1-00", "r2-e1-00", "r1-e1-01", "r2-e1-01");
    only(&[spare, other]);
    let filler = c
        .create("filler", &params, range, true, true, None)
        .unwrap()
        .record;
    only(&[a, b]);
    let rec = c
        .create("v", &params, range, true, true, None)
        .unwrap()
        .record;
    let id = rec.id.clone();
    let v = side.assemble_unexposed(&rec).unwrap();
    let size = v.size() as usize;
    let data: Vec<u8> = (0..size).map(byte).collect();
    v.write_at(&data, 0).unwrap();
    v.flush().unwrap();

    // Drive `a` fails; the rebuild moves its member to `spare`.
    only(&[spare]);
    c.mark(a, Health::Failed).unwrap();
    let role = rec.members.iter().position(|m| m.drive == a).unwrap();
    let survivor = &rec.members[1 - role];
    assert_eq!(side.fail_drive(a).unwrap(), vec![id.clone()]);
    let rebuild = |side: &NodeSide| {
        admin::handle_with(
            &c,
            Some(side),
            Request::Rebuild {
                target: a.to_string(),
                max_bytes_per_sec: None,
            },
            &|_| {},
            None,
        )
    };

    // A write beyond the limit also sends SIGXFSZ, which would end the
    // process: a handler takes it instead.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::XFSZ.as_raw(),
    ))
    .unwrap();
    let plan = c.repair_plan(a).unwrap();
    let moved = plan.moves.iter().find(|m| m.volume.to_string() == id);
    assert!(moved.is_some(), "{plan:?}");
    // Where the new member will lie: after the filler's slice on `spare`.
    let front = filler
        .members
        .iter()
        .find(|m| m.drive == spare)
        .map(|m| m.offset + m.len)
        .unwrap();
    assert!(
        survivor.offset + survivor.len <= front,
        "the survivor at {} ({} bytes) reaches the filler's end {front}",
        survivor.offset,
        survivor.len
    );
    let old = getrlimit(Resource::Fsize);
    let set = |limit: Option<u64>| {
        setrlimit(
            Resource::Fsize,
            Rlimit {
                current: limit,
                maximum: old.maximum,
            },
        )
        .unwrap()
    };
    let limit = front + rec.layout.member_bytes / 2;
    // The node grows a drive file to the member's end when it opens it:
    // that is done before the limit, so that the limit cuts the copy only.
    let file = dir.path().join("drives").join(format!("{spare}.img"));
    std::fs::File::create(&file)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    set(Some(limit));
    let first = rebuild(&side);
    set(old.current);
    let error = first["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the copy's I/O error was not reported: {first}"));
    assert!(error.contains("rebuilding member"), "{error}");
    // The record moved, the copy did not finish: degraded, and said so.
    let moved = c.get(&id).unwrap().record;
    assert_eq!(moved.members[role].drive, spare);
    assert!(
        moved.members[role].offset >= front && moved.members[role].offset < limit,
        "the new member at {} is not cut by the limit at {limit}",
        moved.members[role].offset
    );
    assert_eq!(
        v.status()[role].state,
        MemberState::Failed,
        "{:?}",
        v.status()
    );
    assert_eq!(side.unsynced_volumes(), vec![id.clone()]);
    assert!(side.condition(&id).unwrap().abnormal);

    let (side, v, _driver) = if restart {
        // The node process ends (no clean close: the engine volume is
        // dropped as a killed process leaves it) and a new one assembles
        // the volume again from the record, which names the new drive
        // already.
        drop(v);
        drop(side);
        drop(driver);
        let side = Arc::new(NodeSide::new(NodeConfig {
            data_dir: dir.path().join("drives"),
            run_dir: dir.path().join("run"),
            backend: Backend::Userspace,
        }));
        let v = side.assemble_unexposed(&moved).unwrap();
        assert_eq!(
            v.status()[role].state,
            MemberState::Failed,
            "{:?}",
            v.status()
        );
        assert_eq!(side.unsynced_volumes(), vec![id.clone()]);
        assert!(side.condition(&id).unwrap().abnormal);
        (side, v, None)
    } else {
        (side, v, Some(driver))
    };

    // The operator's retry (on the new node process after a restart)
    // rebuilds the member, from its start.
    let second = rebuild(&side);
    assert!(second.get("error").is_none(), "{second}");
    assert_eq!(
        second["ok"]["rebuilt"],
        serde_json::json!([{ "volume": id, "member": role, "drive": spare }]),
        "{second}"
    );
    assert_eq!(
        v.status()[role].state,
        MemberState::Active,
        "{:?}",
        v.status()
    );
    assert!(side.unsynced_volumes().is_empty());
    assert!(!side.condition(&id).unwrap().abnormal);
    // And again: nothing left to do.
    let third = rebuild(&side);
    assert_eq!(third["ok"]["rebuilt"], serde_json::json!([]), "{third}");

    // Every byte comes from the rebuilt member alone once the survivor
    // is failed.
    v.fail_member(1 - role).unwrap();
    let mut back = vec![0u8; size];
    v.read_at(&mut back, 0).unwrap();
    let bad = back.iter().zip(&data).position(|(x, y)| x != y);
    assert_eq!(bad, None, "the rebuilt member differs at byte {bad:?}");

    // The failed rebuild left no mark that refuses the unstage.
    drop(v);
    side.unstage(&id, Path::new("")).unwrap();
    assert!(side.volume(&id).is_none());
    side.release_all();
}
