//! A composer volume claims exactly its slices of the drive files: two
//! volumes on disjoint slices of one drive both assemble, and a second
//! assembly of a volume whose slices are held (a second node side on the
//! same drives: another composer process on the node, or a stale state
//! record) is refused with FAILED_PRECONDITION (was INTERNAL once claimed)
//! naming the drive file, the range and the rule, while
//! the first volume keeps working. Before, the node's members claimed
//! nothing and both assemblies wrote the same bytes. Through the engine
//! alone (no kernel, no root): `assemble_unexposed` is staging without the
//! FUSE exposure.

use composer::node::NodeSide;
use csi_types::Code;
use csi_types::types::CapacityRange;

mod common;

#[test]
fn volumes_claim_exactly_their_slices_of_a_drive() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_in(dir.path());
    let c = driver.composer();
    let side = driver.node_side().unwrap();
    let params = common::params(&[("type", "hdd"), ("redundancy", "true")]);
    let range = CapacityRange::new(Some(64 << 20), None).unwrap();
    let a = c.create("a", &params, range, true, true, None).unwrap();
    // Volume b on the next slice of each of a's drives (placement spreads
    // volumes over drives; the record says where the slices are).
    let shifted = |id: &str, by: u64| {
        let mut r = a.record.clone();
        r.id = id.into();
        for m in &mut r.members {
            m.offset += by;
        }
        r
    };
    let len = a.record.members[0].len;
    let b = shifted("vol-b", len);
    let va = side.assemble_unexposed(&a.record).unwrap();
    let vb = side.assemble_unexposed(&b).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    va.write_at(&data, 0).unwrap();
    vb.write_at(&vec![0x5a; 65536], 0).unwrap();

    // A second node side on the same drive files: volume a's slices are
    // held by the first.
    let other = NodeSide::new(side.config().clone());
    let err = other.assemble_unexposed(&a.record).unwrap_err();
    // The other holder must stop first: not an internal error.
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = err.to_string();
    let m = &a.record.members[0];
    let file = side
        .config()
        .data_dir
        .join(format!("{}.img", m.drive))
        .display()
        .to_string();
    assert!(err.contains(&file), "{err}");
    assert!(
        err.contains(&format!("{}..", m.offset)),
        "no range in: {err}"
    );
    assert!(
        err.contains("is in use by") && err.contains("a byte of a drive belongs to one volume"),
        "{err}"
    );

    // A record whose slices overlap both (half of a's, half of b's): refused
    // in this process too.
    let half = shifted("vol-c", len / 2);
    let err = side.assemble_unexposed(&half).unwrap_err().to_string();
    assert!(err.contains(&file), "{err}");

    // The first volume is untouched and keeps working.
    let mut got = vec![0u8; 65536];
    va.read_at(&mut got, 0).unwrap();
    assert!(got == data);
    va.write_at(&data[..4096], 65536).unwrap();
    vb.read_at(&mut got, 0).unwrap();
    assert!(got.iter().all(|&x| x == 0x5a));
    other.release_all();
    side.release_all();
}
