//! What `composer admin rebuild` and `fail-drive` refuse, changing nothing.
//!
//! `rebuild` of a drive whose member a staged volume still uses (the drive
//! healthy, or only marked failed with `mark`): the engine replaces failed
//! members only. Before, the repair plan was applied first: the record
//! moved to the replacement and the pool took the old member's space back
//! for other volumes, while the node kept reading and writing the old
//! member, and the answer was the engine's refusal. Now it is refused
//! before the plan is applied: a drive not marked failed as such (a
//! rebuild replaces failed drives; `repair-apply` empties working ones),
//! a member the engine has not failed saying to fail the drive first;
//! after `fail-drive` the same `rebuild` goes through. (Through the engine
//! alone: no kernel, no root.)
//!
//! A single drive or slice staged on this node (a loop device over its
//! drive file, no engine) has its only copy on its drive: `fail-drive` of
//! that drive is refused as for the last copy of an engine volume (before,
//! it answered success with no volume degraded, and the inventory called
//! the drive of a working volume failed), and `rebuild` after a `mark` is
//! refused rather than moving the record to a blank drive. That one needs
//! root and loop devices: without them it says so and passes, except under
//! `CI=true`, where it fails.

use composer::admin::{self, Request};
use composer::node::NodeSide;
use composer_core::{Composer, Health, VolumeRecord};
use csi_types::prelude::*;
use csi_types::types::CapacityRange;
use raid_engine::MemberState;

mod common;
use common::InProcess;

fn ask(c: &Composer, side: &NodeSide, req: Request) -> serde_json::Value {
    admin::handle_with(c, Some(side), req, &|_| {}, None)
}

fn rebuild(target: &str) -> Request {
    Request::Rebuild {
        target: target.to_string(),
        max_bytes_per_sec: None,
    }
}

/// A two-way mirror of SSD slices named `name`, created and assembled by
/// the node side as a staged volume is (without a mount): its record, the
/// engine's volume and the drive of its first member.
fn assembled_mirror(
    c: &Composer,
    side: &NodeSide,
    name: &str,
) -> (VolumeRecord, std::sync::Arc<raid_engine::Volume>, String) {
    let params = common::params(&[("type", "slice"), ("redundancy", "true")]);
    let range = CapacityRange::new(Some(32 << 20), None).unwrap();
    let v = c.create(name, &params, range, true, true, None).unwrap();
    let vol = side.assemble_unexposed(&v.record).unwrap();
    let drive = v.record.members[0].drive.clone();
    (v.record, vol, drive)
}

fn health(c: &Composer, drive: &str) -> Health {
    c.drive_report()
        .into_iter()
        .find(|d| d.id == drive)
        .unwrap()
        .health
}

#[test]
fn rebuild_of_a_member_still_in_use_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
    let c = driver.composer();
    let side = driver.node_side().unwrap();
    let (record, vol, drive) = assembled_mirror(c, side, "mirror");
    let id = record.id.clone();

    // A working drive no volume uses: nothing to rebuild, said so rather
    // than an empty success.
    let idle = c
        .drive_report()
        .into_iter()
        .find(|d| d.volumes.is_empty())
        .unwrap()
        .id;
    let answer = ask(c, side, rebuild(&idle));
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("not failed: {idle} (healthy)"))),
        "{answer}"
    );

    // Healthy, then marked failed without the engine knowing: both refused.
    for marked in [false, true] {
        if marked {
            c.mark(&drive, Health::Failed).unwrap();
        }
        let answer = ask(c, side, rebuild(&drive));
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("a rebuild of a member in use went through: {answer}"));
        let why = if marked {
            format!(
                "member 0 of volume {id} (drive {drive}) is in use in the engine, not failed: \
                 fail the drive first (composer admin fail-drive {drive})"
            )
        } else {
            format!("not failed: {drive} (healthy); a rebuild replaces failed drives")
        };
        assert!(
            error.contains("nothing was changed") && error.contains(&why),
            "{error}"
        );
        assert_eq!(c.get(&id).unwrap().record, record, "marked: {marked}");
        assert!(
            c.drive_report()
                .iter()
                .any(|d| d.id == drive && d.volumes.contains(&id)),
            "the pool gave the member's space back"
        );
        assert!(
            vol.status().iter().all(|m| m.state == MemberState::Active),
            "{:?}",
            vol.status()
        );
    }

    // Failed in the engine: the rebuild goes through.
    let answer = ask(
        c,
        side,
        Request::FailDrive {
            target: drive.clone(),
        },
    );
    assert_eq!(answer["ok"]["degraded"][0], id.as_str(), "{answer}");
    let answer = ask(c, side, rebuild(&drive));
    assert_eq!(
        answer["ok"]["rebuilt"][0]["volume"],
        id.as_str(),
        "{answer}"
    );
    let rec = c.get(&id).unwrap().record;
    assert!(rec.members.iter().all(|m| m.drive != drive), "{rec:?}");
    assert!(
        vol.status().iter().all(|m| m.state == MemberState::Active),
        "{:?}",
        vol.status()
    );
    side.release_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drive_of_a_staged_single_slice_is_not_failed_nor_rebuilt() {
    if !common::can_mount() {
        return;
    }
    let s = InProcess::new();
    let c = s.driver.composer();
    let side = s.driver.node_side().unwrap();
    let v = common::provision_staged(
        &s.plugin,
        s.dir.path(),
        "plain",
        &[("type", "slice")],
        32 << 20,
    )
    .await;
    let id = v.id.clone();
    let before = c.get(&id).unwrap().record;
    let drive = before.members[0].drive.clone();

    let answer = ask(
        c,
        side,
        Request::FailDrive {
            target: drive.clone(),
        },
    );
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the drive of a staged slice was failed: {answer}"));
    assert!(
        error.contains(&format!("drive {drive} is not failed"))
            && error.contains(&format!("volume {id}: a single drive or slice")),
        "{error}"
    );
    assert_eq!(health(c, &drive), Health::Healthy);

    // Marked failed by hand: the rebuild cannot move it to a blank drive.
    c.mark(&drive, Health::Failed).unwrap();
    let answer = ask(c, side, rebuild(&drive));
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the staged slice was moved: {answer}"));
    assert!(
        error.contains("nothing was changed")
            && error.contains(&format!("volume {id} is staged on this node")),
        "{error}"
    );
    assert_eq!(c.get(&id).unwrap().record, before);

    Csi::node_unstage_volume(
        &s.plugin,
        csi_types::node::NodeUnstageVolumeRequest {
            volume_id: csi_types::ids::VolumeId::new(&id).unwrap(),
            staging_target_path: common::np(&v.staging),
        },
    )
    .await
    .unwrap();
}

/// `fail-drive` checked that the drive could be failed and marked it
/// failed, and then the node refused after all (here the other member of
/// the mirror failed through I/O in between, so that the drive became the
/// last copy): no member was failed, so the drive's earlier mark comes
/// back, `draining` here, not `healthy` and not `failed`. Reached through
/// `admin::fail_drive_with`, which runs the change in that window; before,
/// only a race reached this path.
#[test]
fn a_fail_drive_the_node_refuses_after_the_mark_puts_the_earlier_mark_back() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
    let c = driver.composer();
    let side = driver.node_side().unwrap();
    let (record, vol, drive) = assembled_mirror(c, side, "mirror");
    let id = record.id.clone();
    c.mark(&drive, Health::Draining).unwrap();

    let ran = std::sync::atomic::AtomicBool::new(false);
    let error = admin::fail_drive_with(c, side, &drive, &|| {
        // The inventory says failed while the node has not acted yet.
        assert_eq!(c.mark_of(&drive), Health::Failed);
        vol.fail_member(1).unwrap();
        ran.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .expect_err("the last copy was failed");
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(
        error.contains(&format!("drive {drive} is not failed"))
            && error.contains(&format!("volume {id}"))
            && error.contains(&format!(
                "no member on drive {drive} was failed, and the inventory marks it draining \
                 again, as before"
            )),
        "{error}"
    );
    assert_eq!(c.mark_of(&drive), Health::Draining);
    assert_eq!(health(c, &drive), Health::Draining);
    // The engine still serves from the drive, its last copy.
    let st = vol.status();
    assert_eq!(st[0].state, MemberState::Active, "{st:?}");
    let mut buf = vec![0u8; 4096];
    vol.read_at(&mut buf, 0).unwrap();

    // With the window left alone the same call goes through the path the
    // admin socket takes: a healthy mirror, the drive failed for good.
    let (other, vol2, drive2) = assembled_mirror(c, side, "other");
    let answer = admin::fail_drive_with(c, side, &drive2, &|| {}).unwrap();
    assert!(
        answer["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == other.id.as_str()),
        "{answer}"
    );
    assert_eq!(c.mark_of(&drive2), Health::Failed);
    assert_eq!(vol2.status()[0].state, MemberState::Failed);
    side.release_all();
}

/// `repair-apply` moves records only: of a volume staged on this node it
/// would leave the engine on the old member while the record names the
/// new one and the pool gives the old space to other volumes (and no later
/// `rebuild` finds the move). Refused, changing nothing, naming `rebuild`;
/// a volume not staged here moves as before.
#[test]
fn repair_apply_of_a_volume_staged_here_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
    let c = driver.composer();
    let side = driver.node_side().unwrap();
    let (record, vol, drive) = assembled_mirror(c, side, "mirror");
    let id = record.id.clone();

    for failed_in_engine in [false, true] {
        if failed_in_engine {
            let answer = ask(
                c,
                side,
                Request::FailDrive {
                    target: drive.clone(),
                },
            );
            assert!(answer["ok"].is_object(), "{answer}");
        }
        let answer = ask(
            c,
            side,
            Request::RepairApply {
                target: drive.clone(),
            },
        );
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("the record of a staged volume moved: {answer}"));
        assert!(
            error.contains("nothing was changed")
                && error.contains(&format!("member 0 of volume {id} (drive {drive})"))
                && error.contains("composer admin rebuild"),
            "{error}"
        );
        assert_eq!(c.get(&id).unwrap().record, record);
        assert!(
            c.drive_report()
                .iter()
                .any(|d| d.id == drive && d.volumes.contains(&id)),
            "the pool gave the member's space back"
        );
    }
    // The rebuild moves and rebuilds it.
    let answer = ask(c, side, rebuild(&drive));
    assert_eq!(
        answer["ok"]["rebuilt"][0]["volume"],
        id.as_str(),
        "{answer}"
    );
    assert!(
        vol.status().iter().all(|m| m.state == MemberState::Active),
        "{:?}",
        vol.status()
    );

    // Not staged here: moved as before.
    let hdd = common::params(&[("type", "hdd"), ("redundancy", "true")]);
    let other = c
        .create(
            "elsewhere",
            &hdd,
            CapacityRange::new(Some(64 << 20), None).unwrap(),
            true,
            true,
            None,
        )
        .unwrap();
    let from = other.record.members[0].drive.clone();
    let answer = ask(
        c,
        side,
        Request::RepairApply {
            target: from.clone(),
        },
    );
    assert_eq!(
        answer["ok"]["moves"][0]["volume"],
        other.record.id.as_str(),
        "{answer}"
    );
    let rec = c.get(&other.record.id).unwrap().record;
    assert!(rec.members.iter().all(|m| m.drive != from), "{rec:?}");
    side.release_all();
}
