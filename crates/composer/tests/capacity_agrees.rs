//! `GetCapacity` and `CreateVolume` agree: on random small inventories,
//! with some volumes already placed, and random StorageClass parameters,
//! a create of exactly the reported `maximum_volume_size` succeeds, and
//! one byte more answers `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED` (CSI
//! spec: `maximum_volume_size` is the largest volume that could be
//! created now; a request no volume can satisfy is `OUT_OF_RANGE`, one
//! the free capacity cannot, `RESOURCE_EXHAUSTED`). A report of 0 means
//! no volume at all fits. The same in a topology segment (the site, a
//! rack, a server, or one naming nothing), the create asking for it.
//! `available_capacity` holds the maximum, and is 0 when no volume
//! places: a mirror's legs lie in two enclosures, storage groups and
//! switches, not on any two SSDs; a minVolumeSize may fit no drive.
//! And `Pool::largest_placeable`, which skips planning a slice trial
//! placement cannot hold, answers as the plain bisection over
//! `would_place` that it replaced.
//!
//! 64 cases by default; set `COMPOSER_CORE_PROPTEST_CASES` for more (or
//! proptest's own `PROPTEST_CASES`, read when the first is not set; a value
//! that is not a whole number stops the run naming its variable).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use composer_core::{Batch, Composer, Error, Inventory, MemStore, Op, Store};
use csi_types::types::{CapacityRange, Topology, TopologyRequirement};
use proptest::prelude::*;

#[path = "support/cases.rs"]
mod cases;
use cases::cases;

#[path = "support/every_trial_planned.rs"]
mod support;

/// One enclosure: its drive entries (count, kind, capacity in TB).
#[derive(Debug, Clone)]
struct Jbod {
    drives: Vec<(u32, bool, u64)>,
}

#[derive(Debug, Clone)]
struct Rack {
    /// 0: none, 1: sg-a, 2: sg-b.
    group: u8,
    /// Whether the rack has its own switch (else its enclosures have none).
    switch: bool,
    jbods: Vec<Jbod>,
    /// Transports of the rack's server (bit set over roce, nvmetcp, iscsi, nbd).
    server_transports: u8,
}

const TRANSPORTS: [&str; 4] = ["roce", "nvmetcp", "iscsi", "nbd"];

fn transports(bits: u8) -> String {
    let v: Vec<String> = (0..4)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| format!("{:?}", TRANSPORTS[i]))
        .collect();
    format!("[{}]", v.join(", "))
}

fn inventory_toml(racks: &[Rack]) -> String {
    let mut s = String::from(
        "[[site]]\nid = \"dc1\"\n\n[[storage_group]]\nid = \"sg-a\"\nsite = \"dc1\"\n\n\
         [[storage_group]]\nid = \"sg-b\"\nsite = \"dc1\"\n\n",
    );
    for (r, rack) in racks.iter().enumerate() {
        if rack.switch {
            writeln!(
                s,
                "[[switch]]\nid = \"r{r}-tor\"\nsite = \"dc1\"\nbandwidth = \"400 GB/s\"\n"
            )
            .unwrap();
        }
        writeln!(s, "[[rack]]\nid = \"r{r}\"\nsite = \"dc1\"").unwrap();
        match rack.group {
            1 => s.push_str("storage_group = \"sg-a\"\n"),
            2 => s.push_str("storage_group = \"sg-b\"\n"),
            _ => {}
        }
        if rack.switch {
            writeln!(s, "switch = \"r{r}-tor\"").unwrap();
        }
        s.push('\n');
        for (j, jbod) in rack.jbods.iter().enumerate() {
            writeln!(s, "[[jbod]]\nid = \"r{r}-j{j}\"\nrack = \"r{r}\"\n").unwrap();
            for &(count, hdd, tb) in &jbod.drives {
                writeln!(
                    s,
                    "[[jbod.drive]]\ncount = {count}\nkind = \"{}\"\ncapacity = \"{tb} TB\"{}\n",
                    if hdd { "hdd" } else { "ssd" },
                    if hdd { "\nrpm = 7200" } else { "" }
                )
                .unwrap();
            }
        }
        writeln!(
            s,
            "[[server]]\nid = \"r{r}-n1\"\nrack = \"r{r}\"\ntransports = {}\n",
            transports(rack.server_transports)
        )
        .unwrap();
    }
    s
}

fn rack() -> impl Strategy<Value = Rack> {
    let drive = (
        1u32..=4,
        any::<bool>(),
        prop_oneof![Just(1u64), Just(2), Just(4)],
    );
    let jbod = proptest::collection::vec(drive, 1..=2).prop_map(|drives| Jbod { drives });
    (
        0u8..3,
        proptest::bool::weighted(0.8),
        proptest::collection::vec(jbod, 1..=2),
        1u8..16,
    )
        .prop_map(|(group, switch, jbods, server_transports)| Rack {
            group,
            switch,
            jbods,
            server_transports,
        })
}

fn parameters() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop_oneof![Just("hdd"), Just("ssd"), Just("slice")],
        any::<bool>(),
        any::<bool>(),
        1u32..=6,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..16,
    )
        .prop_map(
            |(kind, redundancy, striping, max, jbod, sg, soft, luks, ts)| {
                let mut p: BTreeMap<String, String> = [
                    ("type", kind.to_string()),
                    ("redundancy", redundancy.to_string()),
                    ("striping", striping.to_string()),
                    ("raidMaxDrives", max.to_string()),
                    ("jbodResiliency", jbod.to_string()),
                    ("sgResiliency", sg.to_string()),
                    ("softDomains", soft.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                if luks {
                    p.insert("encrypt".into(), "true".into());
                    p.insert("encryptionFormat".into(), "luks".into());
                }
                if ts != 0 {
                    let names: Vec<&str> = (0..4)
                        .filter(|i| ts & (1 << i) != 0)
                        .map(|i| TRANSPORTS[i])
                        .collect();
                    p.insert("networkTransportsAllowed".into(), names.join(","));
                }
                p
            },
        )
}

/// A composer over the inventory `toml`, with nothing stored.
fn open(toml: &str) -> Composer {
    Composer::open(
        Inventory::from_toml(toml).unwrap(),
        Arc::new(MemStore::default()),
    )
    .unwrap()
}

fn create(c: &Composer, name: &str, p: &BTreeMap<String, String>, bytes: u64) -> Result<(), Error> {
    create_within(c, name, p, bytes, None)
}

/// Creates volume `name` of `bytes`, accessible from `segment` when given.
fn create_within(
    c: &Composer,
    name: &str,
    p: &BTreeMap<String, String>,
    bytes: u64,
    segment: Option<&Topology>,
) -> Result<(), Error> {
    let range = CapacityRange::new(Some(bytes), None).unwrap();
    let within = segment.map(|t| TopologyRequirement {
        requisite: vec![t.clone()],
        preferred: Vec::new(),
    });
    c.create(name, p, range, true, true, within.as_ref())
        .map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn a_create_of_the_reported_maximum_fits_and_one_byte_more_does_not(
        racks in proptest::collection::vec(rack(), 1..=3),
        before in proptest::collection::vec((parameters(), 1u64..6000), 0..4),
        p in parameters(),
        within in (0u8..5, 0usize..3),
    ) {
        agree(&racks, &before, &p, within)?;
    }

    /// The same with the keys that bound or narrow a class: size bounds,
    /// storage groups (one the inventory lacks too), tags.
    #[test]
    fn the_same_with_size_bounds_storage_groups_and_tags(
        racks in proptest::collection::vec(rack(), 1..=3),
        before in proptest::collection::vec((parameters(), 1u64..6000), 0..4),
        p in parameters(),
        extra in narrowing(),
        within in (0u8..5, 0usize..3),
    ) {
        let mut p = p;
        p.extend(extra);
        agree(&racks, &before, &p, within)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    /// `Pool::largest_placeable` refuses a slice trial larger than
    /// placement allows without planning it: its answers are the plain
    /// bisection's over `would_place` (the algorithm before, kept here as
    /// the oracle), for every class, from an estimate at or above the
    /// answer (the largest SSD) or anywhere below it.
    #[test]
    fn largest_placeable_answers_as_the_bisection_over_would_place(
        racks in proptest::collection::vec(rack(), 1..=3),
        before in proptest::collection::vec((parameters(), 1u64..6000), 0..6),
        p in parameters(),
        slice in any::<bool>(),
        extra in narrowing(),
        within in (0u8..5, 0usize..3),
        below in 1u64..=4_000_000,
    ) {
        let c = open(&inventory_toml(&racks));
        for (i, (q, gib)) in before.iter().enumerate() {
            let _ = create(&c, &format!("before-{i}"), q, gib << 30);
        }
        let mut p = p;
        p.extend(extra);
        if slice {
            p.insert("type".into(), "slice".into());
        }
        let Ok(params) = composer_core::Parameters::parse(&p) else {
            return Ok(());
        };
        let within = segment_of(&racks, within).map(|t| TopologyRequirement {
            requisite: vec![t],
            preferred: Vec::new(),
        });
        let records = c.records().into_iter().map(|r| (r.id.clone(), r)).collect();
        let (mut pool, _) = composer_core::Pool::build(
            Arc::new(c.inventory().clone()),
            BTreeMap::new(),
            &records,
        )
        .unwrap();
        for upper in [4_000_000_000_000, below * 1_000_000, 4_000_000_000_001] {
            let old = support::every_trial_planned(&mut pool, &params, within.as_ref(), upper);
            let new = pool.largest_placeable(&params, within.as_ref(), upper).unwrap();
            prop_assert_eq!(new, old, "{:?} from {} in {:?}\n{}", p, upper, within, inventory_toml(&racks));
        }
    }
}

/// `minVolumeSize`, `maxVolumeSize`, `storageGroup` and `requiredTags` /
/// `excludedTags`, each present or not.
fn narrowing() -> impl Strategy<Value = BTreeMap<String, String>> {
    let size = prop_oneof![
        Just("1Gi"),
        Just("100Gi"),
        Just("1TB"),
        Just("1.5TB"),
        Just("3TB")
    ];
    (
        proptest::option::of(size.clone()),
        proptest::option::of(size),
        proptest::option::of(prop_oneof![
            Just("sg-a"),
            Just("sg-b"),
            Just("sg-a,sg-b"),
            Just("sg-nosuch")
        ]),
        proptest::option::of(prop_oneof![Just("fast"), Just("nosuch")]),
        proptest::option::of(Just("fast")),
    )
        .prop_map(|(min, max, sg, req, excl)| {
            let mut m = BTreeMap::new();
            let mut put = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), v.to_string());
                }
            };
            put("minVolumeSize", min);
            put("maxVolumeSize", max);
            put("storageGroup", sg);
            put("requiredTags", req);
            put("excludedTags", excl);
            m
        })
}

/// The property: a create of the reported maximum fits, one byte more
/// does not, and `available` agrees (see the file's head).
fn agree(
    racks: &[Rack],
    before: &[(BTreeMap<String, String>, u64)],
    p: &BTreeMap<String, String>,
    within: (u8, usize),
) -> Result<(), TestCaseError> {
    let toml = inventory_toml(racks);
    let c = open(&toml);
    // Some volumes first, so that drives are partly used.
    for (i, (q, gib)) in before.iter().enumerate() {
        let _ = create(&c, &format!("before-{i}"), q, gib << 30);
    }
    let segment = segment_of(racks, within);
    let create_in = |name: &str, p: &BTreeMap<String, String>, bytes: u64| {
        create_within(&c, name, p, bytes, segment.as_ref())
    };
    let max = match c.capacity(p, segment.as_ref()) {
        Ok(cap) => {
            // The largest volume is made of available bytes.
            prop_assert!(
                cap.available >= cap.maximum_volume_size,
                "available {} below maximum_volume_size {} for {:?} in {:?}\n{}",
                cap.available,
                cap.maximum_volume_size,
                p,
                segment,
                toml
            );
            // When no volume places (no slice or mirror of two of
            // 1 MiB, a minVolumeSize no drive holds, a maxVolumeSize
            // below every whole drive), nothing is available: before,
            // the free bytes still counted and a CO scheduled there.
            if cap.maximum_volume_size == 0 {
                prop_assert!(
                    cap.available == 0,
                    "available {} for {:?} in {:?}, but no volume places\n{}",
                    cap.available,
                    p,
                    segment,
                    toml
                );
            }
            cap.maximum_volume_size
        }
        Err(e) => {
            // Parameters refused by one are refused by the other.
            prop_assert!(matches!(e, Error::Parameter { .. }), "{:?}", e);
            let create = create_in("refused", p, 1 << 30);
            prop_assert!(
                matches!(create, Err(Error::Parameter { .. })),
                "{:?}",
                create
            );
            return Ok(());
        }
    };
    let over = create_in("over", p, max + 1);
    prop_assert!(
        matches!(over, Err(Error::OutOfRange(_) | Error::Exhausted(_))),
        "maximum_volume_size {} for {:?} in {:?}, but a create of one byte more answered {:?}\n{}",
        max,
        p,
        segment,
        over,
        toml
    );
    if max > 0 {
        let at = create_in("at", p, max);
        prop_assert!(
            at.is_ok(),
            "maximum_volume_size {} for {:?} in {:?}, but a create of it failed: {:?}\n{}",
            max,
            p,
            segment,
            at,
            toml
        );
    }
    Ok(())
}

/// GetCapacity's accessible_topology: none, the site, a rack, a server (as
/// the external-provisioner asks per node), or a segment naming nothing;
/// the create asks for the same segment.
fn segment_of(racks: &[Rack], within: (u8, usize)) -> Option<Topology> {
    let r = within.1 % racks.len();
    let segment = match within.0 {
        0 => None,
        1 => Some(vec![("topology.composer.csi/site", "dc1".to_string())]),
        2 => Some(vec![("topology.composer.csi/rack", format!("r{r}"))]),
        3 => Some(vec![
            ("topology.composer.csi/site", "dc1".to_string()),
            ("topology.composer.csi/rack", format!("r{r}")),
            ("topology.composer.csi/server", format!("r{r}-n1")),
        ]),
        _ => Some(vec![(
            "topology.composer.csi/rack",
            "elsewhere".to_string(),
        )]),
    };
    segment.map(|kv| Topology::new(kv).unwrap())
}

/// Two SSDs in one enclosure, one rack (no storage group, no switch) and
/// one server speaking `server_transports`.
fn two_ssds(server_transports: &str) -> Composer {
    let toml = format!(
        "[[site]]\nid = \"dc1\"\n\n[[rack]]\nid = \"r0\"\nsite = \"dc1\"\n\n\
         [[jbod]]\nid = \"r0-j0\"\nrack = \"r0\"\n\n\
         [[jbod.drive]]\ncount = 2\nkind = \"ssd\"\ncapacity = \"1 TB\"\n\n\
         [[server]]\nid = \"r0-n1\"\nrack = \"r0\"\ntransports = {server_transports}\n"
    );
    open(&toml)
}

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Shrunk from the property: slices on SSDs that no server reaches over
/// an allowed transport. Before, the slice estimate counted them and
/// `maximum_volume_size` said 1 TB, which no create could place.
#[test]
fn slices_no_server_reaches_are_no_capacity() {
    let c = two_ssds("[\"nbd\"]");
    let p = params(&[("type", "slice"), ("networkTransportsAllowed", "roce")]);
    let cap = c.capacity(&p, None).unwrap();
    assert_eq!((cap.available, cap.maximum_volume_size), (0, 0));
    let e = create(&c, "v", &p, 1 << 30).unwrap_err();
    assert!(matches!(e, Error::Exhausted(_)), "{e}");
    // Over a transport the server speaks, the same SSDs hold a slice of
    // the reported maximum.
    let p = params(&[("type", "slice"), ("networkTransportsAllowed", "nbd")]);
    let max = c.capacity(&p, None).unwrap().maximum_volume_size;
    assert!(max > 900_000_000_000, "{max}");
    create(&c, "v", &p, max).unwrap();
}

/// Shrunk from the property: a slice mirror whose legs must lie in
/// different storage groups (`sgResiliency=true`, the default) on an
/// inventory of one storage group. Before, the estimate took the largest
/// slices of two SSDs wherever they were, and reported ~1 TB.
#[test]
fn a_slice_mirror_reports_only_what_separation_allows() {
    let c = two_ssds("[\"roce\"]");
    let strict = params(&[("type", "slice"), ("redundancy", "true")]);
    assert_eq!(c.capacity(&strict, None).unwrap().maximum_volume_size, 0);
    let e = create(&c, "v", &strict, 1 << 30).unwrap_err();
    assert!(matches!(e, Error::Exhausted(_)), "{e}");
    // Best effort separation: the two SSDs hold it, at the reported size.
    let loose = params(&[
        ("type", "slice"),
        ("redundancy", "true"),
        ("sgResiliency", "false"),
        ("jbodResiliency", "false"),
    ]);
    let max = c.capacity(&loose, None).unwrap().maximum_volume_size;
    assert!(max > 900_000_000_000, "{max}");
    create(&c, "v", &loose, max).unwrap();
}

/// Shrunk from the property: an inventory without switches (they are
/// optional). Before, every volume of more than one drive asked placement
/// to spread over bandwidth domains of kind `switch`, which it refused as
/// a malformed request: creates answered INTERNAL.
#[test]
fn an_inventory_without_switches_takes_mirrors_and_stripes() {
    let c = two_ssds("[\"roce\"]");
    for (name, kv) in [
        (
            "mirror",
            &[
                ("type", "ssd"),
                ("redundancy", "true"),
                ("sgResiliency", "false"),
                ("jbodResiliency", "false"),
            ][..],
        ),
        ("stripe", &[("type", "ssd")][..]),
    ] {
        let p = params(kv);
        let max = c.capacity(&p, None).unwrap().maximum_volume_size;
        // More than one drive holds: a mirror, or a stripe of two.
        let least = if name == "stripe" {
            1_000_000_000_000
        } else {
            900_000_000_000
        };
        assert!(max > least, "{name}: {max}");
        create(&c, name, &p, max).unwrap();
        c.delete(&c.records()[0].id).unwrap();
    }
}

/// Shrunk from the property: whole SSDs asked for in a rack (the segment
/// of GetCapacity's `accessible_topology`) whose only server does not
/// speak the allowed transport. Before, the estimate asked whether some
/// server of the site did, and reported a whole drive.
#[test]
fn whole_drives_in_a_rack_no_server_of_it_reaches_are_no_capacity() {
    let c = two_racks();
    let p = params(&[("type", "ssd"), ("networkTransportsAllowed", "nbd")]);
    let rack = Topology::new([("topology.composer.csi/rack", "r0")]).unwrap();
    assert_eq!(c.capacity(&p, Some(&rack)).unwrap().maximum_volume_size, 0);
    let e = create_within(&c, "v", &p, 1 << 30, Some(&rack)).unwrap_err();
    assert!(matches!(e, Error::Exhausted(_)), "{e}");
    // From rack r1 the same SSDs are reached, at the reported size.
    let r1 = Topology::new([("topology.composer.csi/rack", "r1")]).unwrap();
    let max = c.capacity(&p, Some(&r1)).unwrap().maximum_volume_size;
    assert!(max > 900_000_000_000, "{max}");
    create_within(&c, "v", &p, max, Some(&r1)).unwrap();
}

/// Two SSDs in rack r0, whose server speaks roce only; rack r1 has a
/// server speaking nbd and no drives.
fn two_racks() -> Composer {
    // Rack r1's server speaks nbd; rack r0's, with the SSDs, does not.
    let toml = "[[site]]\nid = \"dc1\"\n\n[[rack]]\nid = \"r0\"\nsite = \"dc1\"\n\n\
                [[rack]]\nid = \"r1\"\nsite = \"dc1\"\n\n\
                [[jbod]]\nid = \"r0-j0\"\nrack = \"r0\"\n\n\
                [[jbod.drive]]\ncount = 2\nkind = \"ssd\"\ncapacity = \"1 TB\"\n\n\
                [[server]]\nid = \"r0-n1\"\nrack = \"r0\"\ntransports = [\"roce\"]\n\n\
                [[server]]\nid = \"r1-n1\"\nrack = \"r1\"\ntransports = [\"nbd\"]\n";
    open(toml)
}

/// `available_capacity` in a segment counts the drives a server of the
/// segment reaches over an allowed transport. Before, every drive of the
/// segment's site counted: rack r0 reported 2 TB available for nbd while
/// no volume over nbd could be accessible from it.
#[test]
fn available_in_a_segment_counts_what_its_servers_reach() {
    let c = two_racks();
    let p = params(&[("type", "ssd"), ("networkTransportsAllowed", "nbd")]);
    let at = |kv: &[(&str, &str)]| {
        let t = Topology::new(kv.iter().copied()).unwrap();
        c.capacity(&p, Some(&t)).unwrap().available
    };
    let tb = 1_000_000_000_000;
    assert_eq!(at(&[("topology.composer.csi/rack", "r0")]), 0);
    assert_eq!(at(&[("topology.composer.csi/server", "r0-n1")]), 0);
    assert_eq!(at(&[("topology.composer.csi/rack", "r1")]), 2 * tb);
    assert_eq!(at(&[("topology.composer.csi/server", "r1-n1")]), 2 * tb);
    assert_eq!(at(&[("topology.composer.csi/site", "dc1")]), 2 * tb);
    // Slices alike.
    let p = params(&[("type", "slice"), ("networkTransportsAllowed", "nbd")]);
    let r0 = Topology::new([("topology.composer.csi/rack", "r0")]).unwrap();
    let cap = c.capacity(&p, Some(&r0)).unwrap();
    assert_eq!((cap.available, cap.maximum_volume_size), (0, 0));
}

/// Shrunk from the property: a slice mirror over SSDs its separation
/// does not let hold both legs. Before, half the free bytes of every SSD
/// counted as available (the legs' separation ignored) while no mirror
/// placed: 1 TB over two SSDs of one enclosure with `jbodResiliency=true`,
/// 0.5 TB over one SSD (two legs never share a drive).
#[test]
fn a_slice_mirror_has_available_only_where_its_legs_may_lie() {
    let c = two_ssds("[\"roce\"]");
    let one_enclosure = params(&[
        ("type", "slice"),
        ("redundancy", "true"),
        ("sgResiliency", "false"),
    ]);
    let cap = c.capacity(&one_enclosure, None).unwrap();
    assert_eq!((cap.available, cap.maximum_volume_size), (0, 0));
    // With best-effort enclosures, the two SSDs hold a mirror of ~1 TB.
    let loose = params(&[
        ("type", "slice"),
        ("redundancy", "true"),
        ("sgResiliency", "false"),
        ("jbodResiliency", "false"),
    ]);
    let cap = c.capacity(&loose, None).unwrap();
    assert!(cap.available >= cap.maximum_volume_size, "{cap:?}");
    assert!(cap.maximum_volume_size > 900_000_000_000, "{cap:?}");
    // One SSD: no mirror, whatever the separation.
    let c = open(
        "[[site]]\nid = \"dc1\"\n\n[[rack]]\nid = \"r0\"\nsite = \"dc1\"\n\n\
         [[jbod]]\nid = \"r0-j0\"\nrack = \"r0\"\n\n\
         [[jbod.drive]]\nkind = \"ssd\"\ncapacity = \"1 TB\"\n\n\
         [[server]]\nid = \"r0-n1\"\nrack = \"r0\"\n",
    );
    let cap = c.capacity(&loose, None).unwrap();
    assert_eq!((cap.available, cap.maximum_volume_size), (0, 0));
}

/// Shrunk from the property: SSDs a whole-drive volume holds. The slice
/// allocator sees slices only, and before, their bytes counted as
/// available for slices (2 TB here) while no slice placed.
#[test]
fn ssds_held_by_a_whole_drive_volume_are_no_slice_capacity() {
    let c = two_ssds("[\"roce\"]");
    // A stripe over both SSDs.
    create(&c, "stripe", &params(&[("type", "ssd")]), 1_500_000_000_000).unwrap();
    let slice = params(&[("type", "slice")]);
    let cap = c.capacity(&slice, None).unwrap();
    assert_eq!((cap.available, cap.maximum_volume_size), (0, 0));
    let e = create(&c, "v", &slice, 1 << 30).unwrap_err();
    assert!(matches!(e, Error::Exhausted(_)), "{e}");
}

/// A class naming a storage group the inventory lacks (a typo) is refused
/// by GetCapacity as by CreateVolume, naming the key and the groups there
/// are. Before, GetCapacity answered 0 bytes: a CO saw a class with no
/// room, not a mistake to fix.
#[test]
fn an_unknown_storage_group_is_refused_by_both() {
    let c = open(&inventory_toml(&[Rack {
        group: 1,
        switch: true,
        jbods: vec![Jbod {
            drives: vec![(2, true, 1)],
        }],
        server_transports: 1,
    }]));
    let p = params(&[("storageGroup", "sg-typo")]);
    let says = "parameters[\"storageGroup\"]: unknown storage group 'sg-typo' (the inventory's: sg-a, sg-b)";
    let e = c.capacity(&p, None).unwrap_err();
    assert!(matches!(e, Error::Parameter { .. }), "{e:?}");
    assert_eq!(e.to_string(), says);
    let e = create(&c, "v", &p, 1 << 30).unwrap_err();
    assert_eq!(e.to_string(), says);
    // A group that exists has capacity.
    let p = params(&[("storageGroup", "sg-a")]);
    assert!(c.capacity(&p, None).unwrap().maximum_volume_size > 0);
}

/// A minVolumeSize no SSD holds: no volume places, and no bytes are available either (before,
/// `available_capacity` still counted the two free SSDs while `maximum_volume_size` was 0, and a
/// CO tracking capacity scheduled creates here).
#[test]
fn a_min_volume_size_no_drive_holds_is_no_capacity() {
    let c = two_ssds("[\"nbd\"]");
    for kind in ["slice", "ssd"] {
        let p = params(&[("type", kind), ("minVolumeSize", "3TB")]);
        let cap = c.capacity(&p, None).unwrap();
        assert_eq!((cap.available, cap.maximum_volume_size), (0, 0), "{kind}");
        assert!(create(&c, "v", &p, 1 << 30).is_err(), "{kind}");
    }
}

/// A stored volume may carry any id placement accepts (a record written
/// through [`Store::commit`] by another tool, or by an older composer),
/// the id GetCapacity's trial plans used included. Before, those trials
/// planned under the fixed id `capacity-probe`: with a volume of that id
/// stored, every trial failed as a duplicate and the report was 0 on two
/// nearly empty SSDs.
#[test]
fn a_stored_volume_with_the_trial_id_leaves_capacity_as_it_is() {
    let toml = "[[site]]\nid = \"dc1\"\n\n[[rack]]\nid = \"r0\"\nsite = \"dc1\"\n\n\
                [[jbod]]\nid = \"r0-j0\"\nrack = \"r0\"\n\n\
                [[jbod.drive]]\ncount = 2\nkind = \"ssd\"\ncapacity = \"1 TB\"\n\n\
                [[server]]\nid = \"r0-n1\"\nrack = \"r0\"\ntransports = [\"nbd\"]\n";
    let p = params(&[("type", "slice")]);
    let first = open(toml);
    create(&first, "v", &p, 1 << 30).unwrap();
    let expected = first.capacity(&p, None).unwrap();
    assert!(
        expected.maximum_volume_size > 900_000_000_000,
        "{expected:?}"
    );
    let store = Arc::new(MemStore::default());
    // Also the id a fix might fall back to, next to it on the same SSD.
    for (n, id) in ["capacity-probe", "capacity-probe-1"]
        .into_iter()
        .enumerate()
    {
        let mut rec = first.records().remove(0);
        rec.name = format!("stored as {id}");
        rec.id = id.to_string();
        let m = &mut rec.members[0];
        m.offset += n as u64 * m.len;
        store
            .commit(Batch::of(vec![Op::PutVolume(Box::new(rec))]))
            .unwrap();
    }
    let c = Composer::open(Inventory::from_toml(toml).unwrap(), store).unwrap();
    assert_eq!(c.volume_count(), 2);
    let cap = c.capacity(&p, None).unwrap();
    assert!(cap.maximum_volume_size > 900_000_000_000, "{cap:?}");
    create(&c, "w", &p, cap.maximum_volume_size).unwrap();
    assert_eq!(c.volume_count(), 3);
}
