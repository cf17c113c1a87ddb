//! A rebuild whose copy fails part way, then a restart of the node
//! process before the operator's retry: the new node side re-assembles the
//! volume, and `composer admin rebuild` completes the member. Before, the
//! roles whose copy had not finished were known only to the node process
//! that ran the copy: the new one saw the record name the new drive and
//! rebuilt nothing, and the volume stayed degraded while every record said
//! it was whole.
//!
//! The I/O error is made as in `rebuild_copy_failed.rs`: the process's file
//! size limit (`RLIMIT_FSIZE`) lies in the middle of the new member's
//! slice. The limit is process-wide: this file holds this one test. Runs
//! through the engine alone (no kernel mounts, no root).

use std::path::Path;
use std::sync::Arc;

use composer::admin::{self, Request};
use composer::node::{Backend, NodeConfig, NodeSide};
use composer_core::{Health, Media};
use csi_types::types::CapacityRange;
use raid_engine::MemberState;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

mod common;

/// The byte at `i` of the test's data: differs from block to block, so
/// that a block copied to the wrong place shows.
fn byte(i: usize) -> u8 {
    (i ^ (i >> 12) ^ (i >> 20)) as u8
}

#[tokio::test]
async fn a_rebuild_whose_copy_failed_is_completed_after_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
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
    let params = common::params(&[("type", "slice"), ("redundancy", "true")]);
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

    // The node process ends (no clean close: the engine volume is dropped
    // as a killed process leaves it) and a new one assembles the volume
    // again from the record, which names the new drive already.
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

    // The operator's retry, on the new node process, rebuilds the member.
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
    let third = rebuild(&side);
    assert_eq!(third["ok"]["rebuilt"], serde_json::json!([]), "{third}");

    // Every byte comes from the rebuilt member alone once the survivor
    // is failed.
    v.fail_member(1 - role).unwrap();
    let mut back = vec![0u8; size];
    v.read_at(&mut back, 0).unwrap();
    let bad = back.iter().zip(&data).position(|(x, y)| x != y);
    assert_eq!(bad, None, "the rebuilt member differs at byte {bad:?}");

    drop(v);
    side.unstage(&id, Path::new("")).unwrap();
    assert!(side.volume(&id).is_none());
    side.release_all();
}
