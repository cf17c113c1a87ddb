//! `composer admin fail-drive` stopped part way: the node checked that the
//! drive could be failed, failed its member in a first volume, and then
//! failing its member in a second volume failed (writing the survivor's
//! superblock, which every `fail_member` does, hit an I/O error). The first
//! volume stays degraded, so the inventory must keep the drive failed, and
//! the error must say which volumes were changed (before, it named only
//! the volume that failed, so an operator could not tell that the first
//! one was running without the drive).
//!
//! The I/O error is a real one from the kernel: the process's file size
//! limit (`RLIMIT_FSIZE`) lies between the two volumes' slices on the
//! surviving drive, so that every write at or beyond the second slice
//! answers `EFBIG`, as a drive that stopped taking writes there would.
//! The limit is process-wide: this file holds this one test. Runs through
//! the engine alone (no kernel mounts, no root).

use composer::admin::{self, Request};
use composer_core::{Health, Media};
use csi_types::types::CapacityRange;
use raid_engine::MemberState;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

mod common;

#[tokio::test]
async fn a_fail_drive_stopped_part_way_keeps_the_drive_failed_and_names_what_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
    let c = driver.composer().clone();
    let side = driver.node_side().unwrap().clone();

    // One SSD per storage group takes new slices: both mirrors land on
    // the same two drives, the second one's slices after the first's.
    let ssds: Vec<String> = c
        .inventory()
        .drives()
        .iter()
        .filter(|d| d.kind == Media::Ssd)
        .map(|d| d.id.clone())
        .collect();
    let keep = ["r1-e1-00", "r2-e1-00"];
    for d in &ssds {
        if !keep.contains(&d.as_str()) {
            c.mark(d, Health::Draining).unwrap();
        }
    }
    let params = common::params(&[("type", "slice"), ("redundancy", "true")]);
    let range = CapacityRange::new(Some(64 << 20), None).unwrap();
    let first = c.create("first", &params, range, true, true, None).unwrap();
    let second = c
        .create("second", &params, range, true, true, None)
        .unwrap();
    // The node fails members volume by volume in id order.
    assert!(first.record.id < second.record.id);
    let v1 = side.assemble_unexposed(&first.record).unwrap();
    let v2 = side.assemble_unexposed(&second.record).unwrap();

    let drive = first.record.members[0].drive.clone();
    let role = |rec: &composer_core::store::VolumeRecord, d: &str| {
        rec.members
            .iter()
            .position(|m| m.drive == d)
            .unwrap_or_else(|| panic!("{} has no member on {d}: {rec:?}", rec.id))
    };
    let survivor = first.record.members[1].drive.clone();
    let (r1, s1) = (role(&first.record, &drive), role(&first.record, &survivor));
    let (r2, s2) = (
        role(&second.record, &drive),
        role(&second.record, &survivor),
    );
    let off1 = first.record.members[s1].offset;
    let off2 = second.record.members[s2].offset;
    // The first survivor's superblock (4 KiB into its slice) lies below
    // the limit, the second's at or beyond it.
    assert!(off1 + (1 << 20) <= off2, "slices at {off1} and {off2}");

    // A write beyond the limit also sends SIGXFSZ, which would end the
    // process: a handler takes it instead.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::XFSZ.as_raw(),
    ))
    .unwrap();
    let old = getrlimit(Resource::Fsize);
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(off2),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let answer = admin::handle_with(
        &c,
        Some(&side),
        Request::FailDrive {
            target: drive.clone(),
        },
        &|_| {},
        None,
    );
    setrlimit(Resource::Fsize, old).unwrap();

    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the superblock write error was not reported: {answer}"));
    // The engine's state: the first volume degraded, serving from the
    // survivor; the second lost its survivor to the write error.
    let st1 = v1.status();
    assert_eq!(st1[r1].state, MemberState::Failed, "{st1:?}");
    assert_eq!(st1[s1].state, MemberState::Active, "{st1:?}");
    let mut buf = vec![0u8; 4096];
    v1.read_at(&mut buf, 0).unwrap();
    let st2 = v2.status();
    assert_eq!(st2[r2].state, MemberState::Failed, "{st2:?}");
    // The error says both volumes lost their member on the drive, and that
    // the drive stays failed.
    assert!(
        error.contains(&format!(
            "its members in {}, {} were failed",
            first.record.id, second.record.id
        )) && error.contains(&format!("keeps drive {drive} failed")),
        "{error}"
    );
    // And the inventory says so.
    let report = c.drive_report();
    let d = report.iter().find(|d| d.id == drive).unwrap();
    assert_eq!(d.health, Health::Failed, "{d:?}");
    side.release_all();
}
