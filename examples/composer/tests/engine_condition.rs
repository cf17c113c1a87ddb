//! The node side's volume condition follows the engine's health, through
//! the engine alone (no kernel, no root): one failed member of a RAID10
//! leaves it "degraded"; failing the other copy of some chunks makes it
//! "failed", saying that some data has no copy left and naming the
//! members and drives (before, any volume with a survivor was "degraded:
//! served from the survivors").

use csi_types::types::CapacityRange;

mod common;

#[test]
fn condition_says_failed_once_both_copies_of_some_chunks_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
    let c = driver.composer();
    let side = driver.node_side().unwrap();
    let params = common::params(&[("type", "hdd"), ("redundancy", "true")]);
    let range = CapacityRange::new(Some(400 << 20), None).unwrap();
    let v = c
        .create("striped", &params, range, true, true, None)
        .unwrap();
    assert_eq!(v.layout.kind.name(), "raid10");
    let vol = side.assemble_unexposed(&v.record).unwrap();
    let id = v.record.id.clone();
    assert!(!side.condition(&id).unwrap().abnormal);

    // The members holding the copies of the first chunk.
    let copies: Vec<usize> = vol
        .geometry()
        .unwrap()
        .map(0)
        .unwrap()
        .copies
        .iter()
        .map(|l| l.member)
        .collect();
    assert_eq!(copies.len(), 2);
    vol.fail_member(copies[0]).unwrap();
    let cond = side.condition(&id).unwrap();
    assert!(
        cond.abnormal && cond.message.starts_with("degraded"),
        "{cond:?}"
    );

    // The last copy: `fail_member` refuses it; this test needs the loss.
    vol.fail_member_forced(copies[1]).unwrap();
    let cond = side.condition(&id).unwrap();
    assert!(
        cond.abnormal
            && cond.message.starts_with("failed")
            && cond.message.contains("some data has no copy left"),
        "{cond:?}"
    );
    for &r in &copies {
        let drive = &v.record.members[r].drive;
        assert!(
            cond.message
                .contains(&format!("member {r} (drive {drive})")),
            "{cond:?}"
        );
    }
    let mut buf = vec![0u8; 4096];
    assert!(vol.read_at(&mut buf, 0).is_err());
    side.release_all();
}
