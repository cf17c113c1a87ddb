//! One test per StorageClass parameter (and its failures), plus idempotency,
//! publication, conditions, expansion and capacity, on the built-in
//! inventory or small inventories written here.

use std::collections::BTreeMap;
use std::sync::Arc;

use composer_core::composer::VolumeView;
use composer_core::{
    Composer, Error, Health, Inventory, LayoutKind, MemStore, RedbStore, Transport,
};
use csi_types::types::{CapacityRange, Topology, TopologyRequirement};

const GB: u64 = 1_000_000_000;
const TB: u64 = 1_000_000_000_000;

fn composer() -> Composer {
    Composer::open(
        Inventory::default_inventory(),
        Arc::new(MemStore::default()),
    )
    .unwrap()
}

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn range(req: u64) -> CapacityRange {
    CapacityRange::new(Some(req), None).unwrap()
}

fn create(c: &Composer, name: &str, kv: &[(&str, &str)], size: u64) -> Result<VolumeView, Error> {
    c.create(name, &params(kv), range(size), false, true, None)
}

fn drive<'a>(c: &'a Composer, id: &str) -> &'a composer_core::inventory::Drive {
    &c.inventory().drives()[c.inventory().drive_index(id).unwrap() as usize]
}

fn jbod_of(c: &Composer, id: &str) -> String {
    c.inventory().jbod_id(drive(c, id).jbod).to_string()
}

fn group_of(c: &Composer, id: &str) -> Option<String> {
    c.inventory()
        .rack_group(drive(c, id).rack)
        .map(str::to_string)
}

fn exhausted(r: Result<VolumeView, Error>) -> String {
    match r {
        Err(Error::Exhausted(m)) => m,
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
}

fn out_of_range(r: Result<VolumeView, Error>) -> String {
    match r {
        Err(Error::OutOfRange(m)) => m,
        other => panic!("expected OUT_OF_RANGE, got {other:?}"),
    }
}

/// One rack, one JBOD of four 16 TB HDDs, two servers.
const ONE_JBOD: &str = r#"
[[site]]
id = "dc"
[[switch]]
id = "tor"
site = "dc"
bandwidth = "100 GB/s"
[[rack]]
id = "r1"
site = "dc"
switch = "tor"
[[jbod]]
id = "j1"
rack = "r1"
transports = ["iscsi"]
[[jbod.drive]]
count = 4
kind = "hdd"
capacity = "16 TB"
rpm = 7200
[[server]]
id = "n1"
rack = "r1"
max_volumes = 1
[[server]]
id = "n2"
rack = "r1"
transports = ["roce"]
"#;

/// Two JBODs in two racks of one storage group, behind one switch.
const ONE_GROUP: &str = r#"
[[site]]
id = "dc"
[[storage_group]]
id = "sg"
site = "dc"
[[switch]]
id = "spine"
site = "dc"
bandwidth = "100 GB/s"
[[rack]]
id = "r1"
site = "dc"
storage_group = "sg"
switch = "spine"
[[rack]]
id = "r2"
site = "dc"
storage_group = "sg"
switch = "spine"
[[jbod]]
id = "j1"
rack = "r1"
[[jbod.drive]]
count = 2
kind = "hdd"
capacity = "16 TB"
[[jbod]]
id = "j2"
rack = "r2"
[[jbod.drive]]
count = 2
kind = "hdd"
capacity = "16 TB"
[[server]]
id = "n1"
rack = "r1"
"#;

fn small(text: &str) -> Composer {
    Composer::open(
        Inventory::from_toml(text).unwrap(),
        Arc::new(MemStore::default()),
    )
    .unwrap()
}

#[test]
fn type_selects_the_medium_and_the_layout() {
    let c = composer();
    let v = create(&c, "h", &[], 100 * GB).unwrap();
    assert_eq!(v.layout.kind, LayoutKind::Single);
    assert_eq!(
        drive(&c, &v.members[0].drive).kind,
        composer_core::Media::Hdd
    );
    let v = create(&c, "s", &[("type", "ssd")], 100 * GB).unwrap();
    assert_ne!(
        drive(&c, &v.members[0].drive).kind,
        composer_core::Media::Hdd
    );
    assert_eq!(
        v.capacity,
        drive(&c, &v.members[0].drive).capacity,
        "a whole drive"
    );
    let v = create(&c, "sl", &[("type", "slice")], 10 << 30).unwrap();
    assert_eq!(v.layout.kind, LayoutKind::Slice);
    assert_eq!((v.capacity, v.members[0].len), (10 << 30, 10 << 30));
    // Two slices share one SSD without overlapping.
    let w = create(&c, "sl2", &[("type", "slice")], 10 << 30).unwrap();
    if w.members[0].drive == v.members[0].drive {
        assert!(
            w.members[0].offset >= v.members[0].offset + v.members[0].len
                || w.members[0].offset + w.members[0].len <= v.members[0].offset
        );
    }
}

#[test]
fn rpm_is_a_minimum_for_hdds_and_ignored_otherwise() {
    let c = composer();
    // The smallest HDDs (8 TB) spin at 5400 rpm: a small volume lands there unless rpm says otherwise.
    let v = create(&c, "any", &[], GB).unwrap();
    assert_eq!(drive(&c, &v.members[0].drive).rpm, 5400);
    let v = create(&c, "fast", &[("rpm", "7200")], GB).unwrap();
    assert_eq!(drive(&c, &v.members[0].drive).rpm, 7200);
    let e = exhausted(create(&c, "faster", &[("rpm", "10000")], GB));
    assert!(e.contains("min_rpm"), "{e}");
    create(&c, "ssd", &[("type", "ssd"), ("rpm", "10000")], GB).unwrap();
}

#[test]
fn fs_type_is_recorded_and_checked() {
    let c = composer();
    let v = create(&c, "x", &[("fsType", "xfs")], GB).unwrap();
    assert_eq!(v.parameters["fsType"], "xfs");
    assert!(
        matches!(create(&c, "y", &[("fsType", "zfs")], GB), Err(Error::Parameter { key, .. }) if key == "fsType")
    );
}

#[test]
fn striping_builds_raid0_or_raid10_when_no_drive_fits() {
    let c = composer();
    // Drive capacities are tried smallest first: three 8 TB drives waste less than two 16 TB.
    let v = create(&c, "wide", &[], 20 * TB).unwrap();
    assert_eq!((v.layout.kind, v.members.len()), (LayoutKind::Raid0, 3));
    assert_eq!(drive(&c, &v.members[0].drive).capacity, 8 * TB);
    assert!(
        v.capacity >= 20 * TB && v.layout.chunk_sectors == 1024 && v.layout.data_offset_sectors > 0
    );
    let e = out_of_range(create(&c, "narrow", &[("striping", "false")], 20 * TB));
    assert!(e.contains("striping=false"), "{e}");
}

#[test]
fn redundancy_mirrors_across_jbods_and_storage_groups() {
    let c = composer();
    let v = create(&c, "m", &[("redundancy", "true")], TB).unwrap();
    assert_eq!(v.layout.kind, LayoutKind::Raid1);
    let (a, b) = (&v.members[0].drive, &v.members[1].drive);
    assert_ne!(jbod_of(&c, a), jbod_of(&c, b));
    assert_ne!(group_of(&c, a), group_of(&c, b));
    let v = create(&c, "r10", &[("redundancy", "true")], 40 * TB).unwrap();
    assert_eq!(v.layout.kind, LayoutKind::Raid10);
    assert_eq!(v.members.len() % 2, 0);
    for pair in v.members.chunks(2) {
        assert_ne!(group_of(&c, &pair[0].drive), group_of(&c, &pair[1].drive));
    }
}

#[test]
fn raid_max_drives_bounds_the_layout() {
    let c = composer();
    let e = out_of_range(create(
        &c,
        "big",
        &[("redundancy", "true"), ("raidMaxDrives", "4")],
        40 * TB,
    ));
    assert!(e.contains("raidMaxDrives=4"), "{e}");
    let v = create(
        &c,
        "ok",
        &[("redundancy", "true"), ("raidMaxDrives", "6")],
        40 * TB,
    )
    .unwrap();
    assert_eq!(v.members.len(), 6);
}

#[test]
fn sg_resiliency_is_a_rule_unless_false() {
    let c = small(ONE_GROUP);
    // One switch: spreading is made best effort to look at separation alone.
    let e = exhausted(create(
        &c,
        "m",
        &[("redundancy", "true"), ("softDomains", "true")],
        TB,
    ));
    assert!(e.contains("sgResiliency=true"), "{e}");
    let v = create(
        &c,
        "m",
        &[
            ("redundancy", "true"),
            ("sgResiliency", "false"),
            ("softDomains", "true"),
        ],
        TB,
    )
    .unwrap();
    assert_ne!(
        jbod_of(&c, &v.members[0].drive),
        jbod_of(&c, &v.members[1].drive)
    );
}

#[test]
fn jbod_resiliency_is_a_rule_unless_false() {
    let c = small(ONE_JBOD);
    let e = exhausted(create(
        &c,
        "m",
        &[
            ("redundancy", "true"),
            ("sgResiliency", "false"),
            ("softDomains", "true"),
        ],
        TB,
    ));
    assert!(e.contains("jbodResiliency=true"), "{e}");
    let v = create(
        &c,
        "m",
        &[
            ("redundancy", "true"),
            ("sgResiliency", "false"),
            ("jbodResiliency", "false"),
            ("softDomains", "true"),
        ],
        TB,
    )
    .unwrap();
    assert_eq!(v.layout.kind, LayoutKind::Raid1);
}

#[test]
fn encrypt_is_recorded_for_the_node_side() {
    let c = composer();
    let v = create(&c, "e", &[("encrypt", "true")], GB).unwrap();
    assert_eq!(v.parameters["encrypt"], "true");
    assert!(
        matches!(create(&c, "f", &[("encrypt", "1")], GB), Err(Error::Parameter { key, .. }) if key == "encrypt")
    );
}

#[test]
fn min_and_max_volume_size_bound_the_request() {
    let c = composer();
    let v = create(
        &c,
        "min",
        &[("type", "slice"), ("minVolumeSize", "10Gi")],
        1 << 20,
    )
    .unwrap();
    assert_eq!(v.capacity, 10 << 30);
    let e = c
        .create(
            "lim",
            &params(&[("type", "slice"), ("minVolumeSize", "10Gi")]),
            CapacityRange::new(None, Some(1 << 30)).unwrap(),
            false,
            true,
            None,
        )
        .map(|_| ());
    assert!(
        matches!(e, Err(Error::OutOfRange(ref m)) if m.contains("minVolumeSize")),
        "{e:?}"
    );
    let e = out_of_range(create(&c, "max", &[("maxVolumeSize", "1 TB")], 2 * TB));
    assert!(e.contains("maxVolumeSize"), "{e}");
    // A whole 8 TB drive is bigger than maxVolumeSize: no volume is made (before, the drive was
    // taken and reported as 1 TB), and GetCapacity agrees that nothing fits.
    let e = out_of_range(create(&c, "capped", &[("maxVolumeSize", "1 TB")], GB));
    assert!(e.contains("maxVolumeSize 1"), "{e}");
    let cap = c
        .capacity(&params(&[("maxVolumeSize", "1 TB")]), None)
        .unwrap();
    assert_eq!((cap.maximum_volume_size, cap.available), (0, 0), "{cap:?}");
}

/// One JBOD of a 16 TB and a 4 TB HDD.
const TWO_SIZES: &str = r#"
[[site]]
id = "dc"
[[switch]]
id = "tor"
site = "dc"
bandwidth = "100 GB/s"
[[rack]]
id = "r1"
site = "dc"
switch = "tor"
[[jbod]]
id = "j1"
rack = "r1"
[[jbod.drive]]
count = 1
kind = "hdd"
capacity = "16 TB"
[[jbod.drive]]
count = 1
kind = "hdd"
capacity = "4 TB"
[[server]]
id = "n1"
rack = "r1"
"#;

/// CSI CapacityRange: the volume is never bigger than limit_bytes. A whole-drive type takes a
/// drive within the limit when there is one, and answers OUT_OF_RANGE naming limit_bytes and the
/// smallest volume it can make when there is none (before, a limit of 1 GiB took a whole drive
/// and reported it as 1 GiB).
#[test]
fn limit_bytes_is_never_exceeded_by_a_whole_drive() {
    let c = small(TWO_SIZES);
    let limited = |name: &str, limit: u64| {
        c.create(
            name,
            &params(&[]),
            CapacityRange::new(None, Some(limit)).unwrap(),
            false,
            true,
            None,
        )
    };
    for limit in [1, 1 << 30] {
        let e = out_of_range(limited("tiny", limit));
        assert!(e.contains("limit_bytes") && e.contains("4 TB"), "{e}");
    }
    let e = out_of_range(limited("tiny", 1 << 30));
    assert_eq!(
        e,
        "limit_bytes 1 GiB is below the smallest volume of type=hdd that holds 1 GiB: 4 TB \
         (whole drives); raise the limit or use type=slice"
    );
    // 5 TB: the 4 TB drive, reported as what it is; the 16 TB drive stays free.
    let v = limited("fits", 5 * TB).unwrap();
    assert_eq!(v.capacity, 4 * TB);
    assert_eq!(drive(&c, &v.members[0].drive).capacity, 4 * TB);
    // Now only the 16 TB drive is free: a drive within the limit exists but is taken, which is
    // RESOURCE_EXHAUSTED, and the 16 TB drive is not taken in its place.
    let e = exhausted(limited("again", 5 * TB));
    assert!(e.contains("4 TB"), "{e}");
}

/// A slice's limit below a whole MiB is OUT_OF_RANGE with the hint that fits a slice (before,
/// it told a `type=slice` request to use type=slice).
#[test]
fn a_slice_limit_below_a_mib_says_to_raise_the_limit() {
    let c = composer();
    let e = out_of_range(c.create(
        "tiny-slice",
        &params(&[("type", "slice")]),
        CapacityRange::new(None, Some(1000)).unwrap(),
        false,
        true,
        None,
    ));
    assert!(
        e.starts_with("limit_bytes 1 kB is below the smallest volume of type=slice"),
        "{e}"
    );
    assert!(
        e.ends_with("1 MiB (slices come in whole MiB); raise the limit"),
        "{e}"
    );
    assert!(!e.contains("use type=slice"), "{e}");
}

#[test]
fn soft_domains_relaxes_switch_spreading() {
    let c = small(ONE_GROUP);
    let kv = [("sgResiliency", "false"), ("striping", "true")];
    // A raid0 of two drives: at most one behind the only switch, unless soft.
    let e = exhausted(create(&c, "w", &kv, 20 * TB));
    assert!(e.contains("softDomains=false"), "{e}");
    let v = create(
        &c,
        "w",
        &[("sgResiliency", "false"), ("softDomains", "true")],
        20 * TB,
    )
    .unwrap();
    assert_eq!(v.layout.kind, LayoutKind::Raid0);
}

#[test]
fn required_and_excluded_tags_filter_drives() {
    let c = composer();
    let v = create(&c, "arch", &[("requiredTags", "archive")], GB).unwrap();
    assert!(drive(&c, &v.members[0].drive).tags.contains("archive"));
    let v = create(&c, "noarch", &[("excludedTags", "archive")], GB).unwrap();
    assert!(!drive(&c, &v.members[0].drive).tags.contains("archive"));
    let e = exhausted(create(&c, "none", &[("requiredTags", "gold")], GB));
    assert!(e.contains("require_tags"), "{e}");
    // Placement's filter names are told in StorageClass keys.
    assert!(e.contains("require_tags is requiredTags"), "{e}");
    let e = exhausted(create(&c, "none", &[("rpm", "20000")], GB));
    assert!(e.contains("min_rpm is rpm"), "{e}");
}

#[test]
fn storage_group_restricts_drives() {
    let c = composer();
    for i in 0..4 {
        let v = create(&c, &format!("b{i}"), &[("storageGroup", "sg-b")], GB).unwrap();
        assert_eq!(group_of(&c, &v.members[0].drive).as_deref(), Some("sg-b"));
    }
    assert!(matches!(
        create(&c, "x", &[("storageGroup", "sg-z")], GB),
        Err(Error::Parameter { key, rule }) if key == "storageGroup" && rule.contains("sg-z")
    ));
}

#[test]
fn network_transports_pick_the_fastest_allowed() {
    let c = composer();
    // JBODs export iSCSI, NVMe/TCP and NBD: the fastest is NVMe/TCP.
    assert_eq!(
        create(&c, "a", &[], GB).unwrap().transport,
        Transport::Nvmetcp
    );
    assert_eq!(
        create(&c, "b", &[("networkTransportsAllowed", "nbd")], GB)
            .unwrap()
            .transport,
        Transport::Nbd
    );
    assert_eq!(
        create(&c, "c", &[("networkTransportsAllowed", "iscsi,nbd")], GB)
            .unwrap()
            .transport,
        Transport::Iscsi
    );
    let e = exhausted(create(&c, "d", &[("networkTransportsAllowed", "roce")], GB));
    assert!(e.contains("transport"), "{e}");
}

#[test]
fn slices_are_never_striped() {
    let c = composer();
    let e = out_of_range(create(
        &c,
        "big",
        &[("type", "slice"), ("striping", "true")],
        10 * TB,
    ));
    assert!(e.contains("slices are never striped"), "{e}");
    let v = create(
        &c,
        "mirror",
        &[("type", "slice"), ("redundancy", "true")],
        100 << 30,
    )
    .unwrap();
    assert_eq!(v.layout.kind, LayoutKind::SliceMirror);
    assert!(v.capacity >= 100 << 30);
    assert_ne!(
        jbod_of(&c, &v.members[0].drive),
        jbod_of(&c, &v.members[1].drive)
    );
}

#[test]
fn topology_requirements_pick_the_site_and_reachable_transport() {
    let c = composer();
    let t = |kv: &[(&str, &str)]| {
        Topology::new(kv.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    };
    let mars = TopologyRequirement {
        requisite: vec![t(&[("topology.composer.csi/site", "mars")])],
        preferred: vec![],
    };
    let e = exhausted(c.create("m", &params(&[]), range(GB), false, true, Some(&mars)));
    assert!(e.contains("no site"), "{e}");
    // r1-n4 speaks iSCSI and NBD only: a volume for it uses iSCSI.
    let n4 = t(&[("topology.composer.csi/server", "r1-n4")]);
    let req = TopologyRequirement {
        requisite: vec![n4.clone()],
        preferred: vec![n4],
    };
    let v = c
        .create("n4", &params(&[]), range(GB), false, true, Some(&req))
        .unwrap();
    assert_eq!(v.transport, Transport::Iscsi);
    assert_eq!(
        v.topology,
        vec![t(&[("topology.composer.csi/site", "dc1")])]
    );
}

/// A repeat of a create names the same StorageClass when its parameters
/// read the same (case of a fixed-vocabulary value, the keys the
/// external-provisioner adds): the volume is returned, not
/// `ALREADY_EXISTS`; parameters that read differently still are.
#[test]
fn a_repeat_with_the_same_parameters_spelt_differently_is_the_same_create() {
    let c = composer();
    let v = create(&c, "pvc", &[("type", "slice"), ("fsType", "xfs")], 5 << 30).unwrap();
    let again = create(
        &c,
        "pvc",
        &[
            ("type", "SLICE"),
            ("fsType", " XFS"),
            ("csi.storage.k8s.io/pvc/name", "data-0"),
        ],
        5 << 30,
    )
    .unwrap();
    assert_eq!(again.record, v.record);
    for other in [
        &[("type", "slice"), ("fsType", "ext4")][..],
        &[("type", "slice")][..],
        &[("type", "slice"), ("fsType", "xfs"), ("redundancy", "true")][..],
    ] {
        assert!(
            matches!(
                create(&c, "pvc", other, 5 << 30),
                Err(Error::AlreadyExists(_))
            ),
            "{other:?}"
        );
    }
    assert_eq!(c.volume_count(), 1);
}

#[test]
fn create_is_idempotent_by_name_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let first = {
        let c = Composer::open(
            Inventory::default_inventory(),
            Arc::new(RedbStore::open(&path).unwrap()),
        )
        .unwrap();
        let v = create(&c, "pvc", &[("type", "slice")], 5 << 30).unwrap();
        assert_eq!(
            create(&c, "pvc", &[("type", "slice")], 5 << 30)
                .unwrap()
                .record,
            v.record
        );
        assert!(matches!(
            create(&c, "pvc", &[("type", "ssd")], 5 << 30),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            create(&c, "pvc", &[("type", "slice")], 6 << 30),
            Err(Error::AlreadyExists(_))
        ));
        v
    };
    let c = Composer::open(
        Inventory::default_inventory(),
        Arc::new(RedbStore::open(&path).unwrap()),
    )
    .unwrap();
    assert!(
        c.reconcile_report().is_clean(),
        "{:?}",
        c.reconcile_report()
    );
    assert_eq!(
        create(&c, "pvc", &[("type", "slice")], 5 << 30)
            .unwrap()
            .record,
        first.record
    );
    let other = create(&c, "pvc-2", &[("type", "slice")], 5 << 30).unwrap();
    assert_ne!(other.id, first.id);
    assert!(
        other.members[0].drive != first.members[0].drive
            || other.members[0].offset != first.members[0].offset
    );
}

#[test]
fn publish_checks_node_transport_limit_and_access_mode() {
    let c = small(ONE_JBOD);
    let a = create(&c, "a", &[], GB).unwrap();
    let b = create(&c, "b", &[], GB).unwrap();
    assert!(matches!(
        c.publish(&a.id, "nobody", false),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        c.publish("vol-999999999999", "n1", false),
        Err(Error::NotFound(_))
    ));
    let e = c.publish(&a.id, "n2", false).unwrap_err();
    assert!(
        matches!(&e, Error::FailedPrecondition(m) if m.contains("cannot reach")),
        "{e}"
    );
    let ctx = c.publish(&a.id, "n1", false).unwrap();
    assert_eq!(
        ctx["members"],
        format!("{}@0+{}", a.members[0].drive, 16 * TB)
    );
    assert_eq!(c.publish(&a.id, "n1", false).unwrap(), ctx, "idempotent");
    assert!(matches!(
        c.publish(&a.id, "n1", true),
        Err(Error::AlreadyExists(_))
    ));
    assert!(
        matches!(c.publish(&b.id, "n1", false), Err(Error::Exhausted(m)) if m.contains("attach limit"))
    );
    assert!(matches!(c.delete(&a.id), Err(Error::FailedPrecondition(_))));
    c.unpublish(&a.id, Some("n1")).unwrap();
    c.delete(&a.id).unwrap();
    c.unpublish(&a.id, Some("n1")).unwrap();
    c.delete(&a.id).unwrap();
    c.publish(&b.id, "n1", false).unwrap();
}

#[test]
fn a_failed_member_makes_the_volume_abnormal() {
    let c = composer();
    let m = create(&c, "m", &[("redundancy", "true")], TB).unwrap();
    let s = create(&c, "s", &[], 20 * TB).unwrap();
    assert_eq!(c.get(&m.id).unwrap().abnormal, None);
    c.mark(&m.members[0].drive, Health::Failed).unwrap();
    let why = c.get(&m.id).unwrap().abnormal.unwrap();
    assert!(why.contains("degraded"), "{why}");
    c.mark(&jbod_of(&c, &s.members[1].drive), Health::Failed)
        .unwrap();
    let why = c.get(&s.id).unwrap().abnormal.unwrap();
    assert!(why.contains("data lost"), "{why}");
    // The repair plan moves the failed mirror leg off the drive.
    let plan = c.repair_plan(&m.members[0].drive).unwrap();
    assert_eq!(plan.moves.len(), 1);
    assert_ne!(plan.moves[0].to.as_str(), m.members[0].drive);
    c.mark(&m.members[0].drive, Health::Healthy).unwrap();
    c.mark(&jbod_of(&c, &s.members[1].drive), Health::Healthy)
        .unwrap();
    assert_eq!(c.get(&m.id).unwrap().abnormal, None);
    assert_eq!(c.get(&s.id).unwrap().abnormal, None);
}

#[test]
fn expansion_grows_slices_in_place_and_refuses_beyond_whole_drives() {
    let c = composer();
    let v = create(&c, "s", &[("type", "slice")], 10 << 30).unwrap();
    assert_eq!(c.expand(&v.id, range(20 << 30)).unwrap(), 20 << 30);
    assert_eq!(c.get(&v.id).unwrap().members[0].len, 20 << 30);
    assert_eq!(
        c.expand(&v.id, range(15 << 30)).unwrap(),
        20 << 30,
        "never shrinks"
    );
    let h = create(&c, "h", &[], GB).unwrap();
    assert_eq!(h.capacity, 8 * TB, "a whole 8 TB drive");
    assert_eq!(
        c.expand(&h.id, range(4 * TB)).unwrap(),
        8 * TB,
        "within the whole drive"
    );
    let e = c.expand(&h.id, range(19 * TB)).unwrap_err();
    assert!(
        matches!(&e, Error::OutOfRange(m) if m.contains("is a single (whole drives, which do not grow)") && m.contains("cannot grow")),
        "{e}"
    );
    let m = c
        .create(
            "m",
            &params(&[("type", "slice"), ("redundancy", "true")]),
            range(GB),
            false,
            true,
            None,
        )
        .unwrap();
    let e = c.expand(&m.id, range(2 * GB)).unwrap_err();
    assert!(
        matches!(&e, Error::OutOfRange(m) if m.contains("is a slice-mirror (mirrored slices, which do not grow in place)")),
        "{e}"
    );
}

#[test]
fn capacity_follows_allocations() {
    let c = composer();
    let p = params(&[("type", "slice")]);
    let before = c.capacity(&p, None).unwrap();
    assert!(before.maximum_volume_size >= 7 * TB && before.minimum_volume_size == Some(1 << 20));
    create(&c, "s", &[("type", "slice")], 100 << 30).unwrap();
    let after = c.capacity(&p, None).unwrap();
    assert_eq!(before.available - after.available, 100 << 30);
    let hdd = c
        .capacity(&params(&[("redundancy", "true")]), None)
        .unwrap();
    assert!(hdd.maximum_volume_size > 100 * TB, "a raid10 of 16 drives");
    let mars = Topology::new([("topology.composer.csi/site", "mars")]).unwrap();
    assert_eq!(c.capacity(&p, Some(&mars)).unwrap().available, 0);
    assert!(matches!(
        c.capacity(&params(&[("bogus", "1")]), None),
        Err(Error::Parameter { .. })
    ));
}

#[test]
fn maximum_volume_size_is_what_placement_can_place() {
    // Four HDDs in two JBODs of one storage group: a mirror cannot survive
    // the group, so with sgResiliency=true nothing redundant fits at all.
    let c = small(ONE_GROUP);
    let soft = [("softDomains", "true")];
    let cap = |kv: &[(&str, &str)]| {
        let mut all = kv.to_vec();
        all.extend(soft);
        c.capacity(&params(&all), None).unwrap().maximum_volume_size
    };
    assert_eq!(cap(&[("redundancy", "true")]), 0);
    let mirror = cap(&[
        ("redundancy", "true"),
        ("sgResiliency", "false"),
        ("striping", "false"),
    ]);
    assert!(mirror > 15 * TB && mirror < 16 * TB, "{mirror}");
    // Every size up to the answer is placeable, and the answer is exact:
    // one JBOD per leg, two legs per stripe → a RAID10 of 4 drives.
    let raid10 = cap(&[
        ("redundancy", "true"),
        ("sgResiliency", "false"),
        ("striping", "true"),
    ]);
    assert!(raid10 > 31 * TB && raid10 < 32 * TB, "{raid10}");
    let v = create(
        &c,
        "big",
        &[
            ("redundancy", "true"),
            ("sgResiliency", "false"),
            ("softDomains", "true"),
        ],
        raid10,
    )
    .unwrap();
    assert_eq!(v.members.len(), 4);
    // Now every drive is taken.
    assert_eq!(cap(&[]), 0);
}

fn refused(r: Result<VolumeView, Error>, key: &str, rule: &str) {
    match r {
        Err(Error::Parameter { key: k, rule: r }) if k == key && r.contains(rule) => {}
        other => panic!("expected parameters[{key:?}] ({rule}), got {other:?}"),
    }
}

/// A class typed with an empty entry, a repeated entry or
/// one of the composer's own tags asks for something it does not say: a
/// new volume is refused, naming the key and the rule, and nothing is made.
/// Before, `archive,,archive` was read as `archive`. A blank value stays the
/// key left out, as documented.
#[test]
fn a_new_class_with_an_empty_repeated_or_reserved_list_entry_is_refused() {
    let c = composer();
    let cases = [
        ("requiredTags", "archive,,archive", "has an empty entry"),
        ("excludedTags", " , ", "has an empty entry"),
        (
            "requiredTags",
            "archive,archive",
            "\"archive\" is listed twice",
        ),
        ("networkTransportsAllowed", "nbd,", "has an empty entry"),
        // Every drive carries composer.capacity=<bytes>: the class would
        // reach into the composer's own encoding.
        (
            "excludedTags",
            "composer.capacity=16000000000000",
            "tags starting with \"composer.\" are the composer's own",
        ),
        ("requiredTags", "composer.fast", "are the composer's own"),
    ];
    for (key, value, rule) in cases {
        refused(create(&c, "a", &[(key, value)], GB), key, rule);
    }
    assert!(c.records().is_empty(), "a refused create made a volume");
    // GetCapacity of such a class answers as its create would.
    assert!(matches!(
        c.capacity(&params(&[("requiredTags", "archive,,archive")]), None),
        Err(Error::Parameter { key, .. }) if key == "requiredTags"
    ));
    // Blanks around entries stay allowed, and a blank value is the key left out.
    create(&c, "ok", &[("requiredTags", " archive ")], GB).unwrap();
    create(
        &c,
        "blank",
        &[("requiredTags", ""), ("networkTransportsAllowed", " ")],
        GB,
    )
    .unwrap();
}

/// A volume recorded before the rules above, with `requiredTags:
/// archive,,archive` (read then as `archive`), still loads, lists,
/// expands, answers a repeated create as before and deletes.
#[test]
fn a_volume_recorded_with_an_empty_list_entry_still_loads() {
    use composer_core::{Batch, Op, Store};
    let store = Arc::new(MemStore::default());
    let c = Composer::open(Inventory::default_inventory(), store.clone()).unwrap();
    let v = create(&c, "old", &[("requiredTags", "archive")], GB).unwrap();
    // As an earlier version recorded it.
    let mut rec = c.records().pop().unwrap();
    let old = params(&[("requiredTags", "archive,,archive")]);
    rec.parameters = old.clone();
    store
        .commit(Batch::of(vec![Op::PutVolume(Box::new(rec))]))
        .unwrap();
    drop(c);
    let c = Composer::open(Inventory::default_inventory(), store.clone()).unwrap();
    assert_eq!(c.get(&v.id).unwrap().parameters, old);
    assert_eq!(c.records().len(), 1);
    let again = c.create("old", &old, range(GB), false, true, None).unwrap();
    assert_eq!(again.id, v.id);
    assert!(c.expand(&v.id, range(2 * GB)).unwrap() >= 2 * GB);
    c.delete(&v.id).unwrap();
    assert!(matches!(c.get(&v.id), Err(Error::NotFound(_))));
}

/// `mark` and the repair plan of an id the inventory does not hold say
/// which argument is wrong as `fail-drive` does (`target: …`).
#[test]
fn unknown_targets_are_named_as_target() {
    let c = composer();
    match c.mark("no-such-drive", Health::Failed) {
        Err(Error::NotFound(m)) => assert_eq!(
            m,
            "target: no drive, enclosure or server \"no-such-drive\" in the inventory"
        ),
        other => panic!("{other:?}"),
    }
    match c.repair_plan("no-such-drive") {
        Err(Error::NotFound(m)) => assert_eq!(
            m,
            "target: no drive or enclosure \"no-such-drive\" in the inventory"
        ),
        other => panic!("{other:?}"),
    }
}

/// GetCapacity agrees with the limit: with maxVolumeSize 5 TB the largest volume is the 4 TB
/// drive, exactly (before, the 16 TB drive was counted, capped to 5 TB, and bisection answered
/// a MiB-rounded size below 4 TB of which one byte more still placed).
#[test]
fn maximum_volume_size_leaves_out_drives_above_max_volume_size() {
    let c = small(TWO_SIZES);
    let p = [("maxVolumeSize", "5 TB")];
    let cap = c.capacity(&params(&p), None).unwrap();
    assert_eq!(cap.maximum_volume_size, 4 * TB, "{cap:?}");
    out_of_range(create(&c, "over", &p, 4 * TB + 1));
    assert_eq!(create(&c, "at", &p, 4 * TB).unwrap().capacity, 4 * TB);
}

/// Sizes at the top of the 64-bit range, in a StorageClass or a request,
/// are answered as any size no drive holds: an error naming why, never a
/// panic (an overflow rounding a slice up to whole MiB), and the state as
/// before.
#[test]
fn sizes_near_the_64_bit_limit_answer_and_change_nothing() {
    let c = composer();
    let before = c.records();
    for kind in ["slice", "ssd", "hdd"] {
        for redundancy in ["false", "true"] {
            for luks in [false, true] {
                let mut kv = vec![("type", kind), ("redundancy", redundancy)];
                if luks {
                    kv.extend([("encrypt", "true"), ("encryptionFormat", "luks")]);
                }
                for min in ["18446744073709551615", "18446744073709551000", "16EiB"] {
                    let mut kv = kv.clone();
                    kv.push(("minVolumeSize", min));
                    let p = params(&kv);
                    if composer_core::Parameters::parse(&p).is_err() {
                        continue;
                    }
                    let r = c.create("huge", &p, range(GB), false, true, None);
                    let e = r.expect_err("no drive holds 16 EiB");
                    assert!(
                        matches!(e, Error::OutOfRange(_) | Error::Exhausted(_)),
                        "{kv:?}: {e:?}"
                    );
                    let cap = c.capacity(&p, None).unwrap();
                    assert_eq!(cap.maximum_volume_size, 0, "{kv:?}");
                }
                let p = params(&kv);
                let r = c.create("huge", &p, range(i64::MAX as u64), false, true, None);
                assert!(r.is_err(), "{kv:?}");
            }
        }
    }
    assert_eq!(c.records(), before);
}

/// ControllerExpandVolume with a `limit_bytes` below the volume's size: no
/// answer meets the range (volumes do not shrink), so it is `OUT_OF_RANGE`
/// naming the field, and the volume stays as it was; before, the size was
/// answered as if it met the range.
#[test]
fn expansion_below_the_volume_refuses_a_limit_it_cannot_meet() {
    let c = composer();
    for (name, kv) in [("s", &[("type", "slice")][..]), ("h", &[][..])] {
        let v = create(&c, name, kv, 10 << 30).unwrap();
        for (req, limit) in [(Some(5 << 30), 8 << 30), (None, 8 << 30)] {
            let r = CapacityRange::new(req, Some(limit)).unwrap();
            let e = c.expand(&v.id, r).unwrap_err();
            assert!(
                matches!(&e, Error::OutOfRange(m) if m.starts_with("capacity_range: limit_bytes 8589934592 is below")),
                "{e}"
            );
            assert_eq!(c.get(&v.id).unwrap().record, v.record);
        }
        // A limit at the size, or none, still answers the size.
        let at = CapacityRange::new(Some(5 << 30), Some(v.capacity)).unwrap();
        assert_eq!(c.expand(&v.id, at).unwrap(), v.capacity);
        assert_eq!(c.expand(&v.id, range(5 << 30)).unwrap(), v.capacity);
    }
}

/// A refused create leaves the state as it was, the next volume id
/// included: before, every refusal used an id and the ids skipped.
#[test]
fn a_refused_create_uses_no_volume_id() {
    let c = composer();
    let a = create(&c, "a", &[("type", "slice")], GB).unwrap();
    for (i, kv) in [
        &[("type", "slice"), ("requiredTags", "nosuch")][..],
        &[("type", "slice"), ("minVolumeSize", "1EB")][..],
    ]
    .into_iter()
    .enumerate()
    {
        assert!(create(&c, &format!("refused-{i}"), kv, GB).is_err());
    }
    let b = create(&c, "b", &[("type", "slice")], GB).unwrap();
    let seq = |id: &str| id.trim_start_matches("vol-").parse::<u64>().unwrap();
    assert_eq!(seq(&b.id), seq(&a.id) + 1, "{} then {}", a.id, b.id);
}

/// GetCapacity's `minimum_volume_size` is the class's, in a segment that
/// names nothing of the inventory too (it said no minimum there for a
/// slice, whose smallest volume is one MiB).
#[test]
fn the_minimum_volume_size_does_not_depend_on_the_segment() {
    let c = composer();
    let nowhere = Topology::new([("topology.composer.csi/rack", "elsewhere")]).unwrap();
    for kv in [
        &[("type", "slice")][..],
        &[("type", "slice"), ("minVolumeSize", "5Gi")][..],
        &[("type", "ssd")][..],
    ] {
        let p = params(kv);
        let everywhere = c.capacity(&p, None).unwrap();
        let there = c.capacity(&p, Some(&nowhere)).unwrap();
        assert_eq!(there.maximum_volume_size, 0, "{kv:?}");
        assert_eq!(
            there.minimum_volume_size, everywhere.minimum_volume_size,
            "{kv:?}"
        );
    }
}

/// A repeated CreateVolume asking multi-node access of a volume made for
/// one node is `ALREADY_EXISTS` (CSI: incompatible `volume_capabilities`),
/// not the single-node volume; the other way round it is the volume.
#[test]
fn a_repeat_asking_more_access_than_the_volume_has_is_already_exists() {
    let c = composer();
    let p = params(&[("type", "slice")]);
    let one = c.create("one", &p, range(GB), false, true, None).unwrap();
    let e = c
        .create("one", &p, range(GB), false, false, None)
        .unwrap_err();
    assert!(
        matches!(&e, Error::AlreadyExists(m) if m.contains("single-node access")),
        "{e}"
    );
    assert_eq!(c.get(&one.id).unwrap().record, one.record);
    let many = c.create("many", &p, range(GB), false, false, None).unwrap();
    assert_eq!(
        c.create("many", &p, range(GB), false, true, None)
            .unwrap()
            .record,
        many.record
    );
}

/// A repeated CreateVolume whose accessibility requirements no server that
/// reaches the volume meets is `ALREADY_EXISTS` (CSI: incompatible
/// `accessibility_requirements`), not the volume the requested servers
/// cannot reach; a repeat the volume meets still answers it.
#[test]
fn a_repeat_from_a_topology_the_volume_does_not_reach_is_already_exists() {
    // The enclosure speaks iSCSI; n2 has RoCE only.
    let c = small(ONE_JBOD);
    let on = |server: &str| TopologyRequirement {
        requisite: vec![Topology::new([("topology.composer.csi/server", server)]).unwrap()],
        preferred: Vec::new(),
    };
    let p = params(&[]);
    let v = c
        .create("v", &p, range(GB), false, true, Some(&on("n1")))
        .unwrap();
    let e = c
        .create("v", &p, range(GB), false, true, Some(&on("n2")))
        .unwrap_err();
    assert!(
        matches!(&e, Error::AlreadyExists(m) if m.contains("accessibility_requirements")),
        "{e}"
    );
    assert!(
        c.create("w", &p, range(GB), false, true, Some(&on("n2")))
            .is_err(),
        "n2 reaches no drive"
    );
    for again in [Some(on("n1")), None] {
        let r = c.create("v", &p, range(GB), false, true, again.as_ref());
        assert_eq!(r.unwrap().record, v.record);
    }
    assert_eq!(c.records(), [v.record]);
}

/// GetCapacity's `available_capacity` counts only drives that make a
/// volume of the class: whole drives whose every layout is above
/// `maxVolumeSize` take none (they counted before).
#[test]
fn available_leaves_out_drives_larger_than_max_volume_size() {
    let c = small(
        r#"
[[site]]
id = "dc"
[[rack]]
id = "r1"
site = "dc"
[[jbod]]
id = "j1"
rack = "r1"
[[jbod.drive]]
count = 2
kind = "hdd"
capacity = "1 TB"
[[jbod.drive]]
count = 2
kind = "hdd"
capacity = "2 TB"
[[server]]
id = "n1"
rack = "r1"
"#,
    );
    let cap = c
        .capacity(&params(&[("maxVolumeSize", "1.5TB")]), None)
        .unwrap();
    assert_eq!(cap.maximum_volume_size, TB);
    assert_eq!(cap.available, 2 * TB, "the two 1 TB drives only");
    let all = c.capacity(&params(&[]), None).unwrap();
    assert_eq!(all.available, 6 * TB);
}
