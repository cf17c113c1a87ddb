//! Properties of the composer under random operation sequences on the
//! built-in inventory: no byte of a drive is held by two volumes, the
//! records and the pool agree (a restart from the records reproduces the
//! same state and reconciles clean), a failed call changes nothing, and
//! the parameter parser never panics.
//!
//! 24 cases by default; set `COMPOSER_CORE_PROPTEST_CASES` for more (or
//! proptest's own `PROPTEST_CASES`, read when the first is not set; a value
//! that is not a whole number stops the run naming its variable).

use std::collections::BTreeMap;
use std::sync::Arc;

use composer_core::{Composer, Error, Health, Inventory, MemStore, Parameters, Store};
use csi_types::types::CapacityRange;
use proptest::prelude::*;

#[path = "support/cases.rs"]
mod cases;
use cases::cases;

#[derive(Debug, Clone)]
enum Op {
    Create { name: u8, class: u8, gib: u64 },
    Delete { pick: u8 },
    Publish { pick: u8, server: u8 },
    Unpublish { pick: u8 },
    Expand { pick: u8, gib: u64 },
}

const CLASSES: &[&[(&str, &str)]] = &[
    &[],
    &[("type", "slice")],
    &[("type", "slice"), ("redundancy", "true")],
    &[("redundancy", "true")],
    &[("type", "ssd")],
    &[("rpm", "7200"), ("striping", "false")],
    &[
        ("storageGroup", "sg-a"),
        ("redundancy", "true"),
        ("sgResiliency", "false"),
    ],
];

/// The StorageClass parameters of `CLASSES[class]`.
fn class_params(class: usize) -> BTreeMap<String, String> {
    CLASSES[class]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Creates volume `v{name}` of `gib` GiB in class `class`.
fn create(c: &Composer, name: u8, class: u8, gib: u64) -> Result<(), Error> {
    let range = CapacityRange::new(Some(gib << 30), None).unwrap();
    c.create(
        &format!("v{name}"),
        &class_params(class as usize),
        range,
        false,
        true,
        None,
    )
    .map(|_| ())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), 0..CLASSES.len() as u8, prop_oneof![1u64..64, 1000u64..40_000])
            .prop_map(|(name, class, gib)| Op::Create { name: name % 24, class, gib }),
        2 => any::<u8>().prop_map(|pick| Op::Delete { pick }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(pick, server)| Op::Publish { pick, server }),
        1 => any::<u8>().prop_map(|pick| Op::Unpublish { pick }),
        1 => (any::<u8>(), 1u64..200).prop_map(|(pick, gib)| Op::Expand { pick, gib }),
    ]
}

fn no_overlap(c: &Composer) -> Result<(), TestCaseError> {
    let mut by_drive: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for r in c.records() {
        for m in &r.members {
            by_drive.entry(m.drive.clone()).or_default().push((
                m.offset,
                m.offset + m.len,
                r.id.clone(),
            ));
        }
    }
    for (d, mut ex) in by_drive {
        ex.sort();
        for w in ex.windows(2) {
            prop_assert!(
                w[0].1 <= w[1].0,
                "drive {d}: {} and {} overlap",
                w[0].2,
                w[1].2
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        let store = Arc::new(MemStore::default());
        let c = Composer::open(Inventory::default_inventory(), store.clone()).unwrap();
        let servers: Vec<String> = c.inventory().servers().iter().map(|s| s.id.clone()).collect();
        for op in &ops {
            let before = store.load().unwrap();
            let ids: Vec<String> = c.records().iter().map(|r| r.id.clone()).collect();
            let pick = |p: u8| (!ids.is_empty()).then(|| ids[p as usize % ids.len()].clone());
            let result: Result<(), Error> = match op {
                Op::Create { name, class, gib } => {
                    create(&c, *name, *class, *gib)
                }
                Op::Delete { pick: p } => match pick(*p) { Some(id) => c.delete(&id), None => Ok(()) },
                Op::Publish { pick: p, server } => match pick(*p) {
                    Some(id) => c.publish(&id, &servers[*server as usize % servers.len()], false).map(|_| ()),
                    None => Ok(()),
                },
                Op::Unpublish { pick: p } => match pick(*p) { Some(id) => c.unpublish(&id, None), None => Ok(()) },
                Op::Expand { pick: p, gib } => match pick(*p) {
                    Some(id) => c.expand(&id, CapacityRange::new(Some(gib << 30), None).unwrap()).map(|_| ()),
                    None => Ok(()),
                },
            };
            if let Err(e) = &result {
                let after = store.load().unwrap();
                prop_assert_eq!(&before.volumes, &after.volumes, "{:?} failed ({}) but changed the records", op, e);
                prop_assert!(!matches!(e, Error::Internal(_) | Error::Store(_)), "{:?}: {}", op, e);
            }
            no_overlap(&c)?;
        }
        // The records alone rebuild the same state.
        let again = Composer::open(Inventory::default_inventory(), store.clone()).unwrap();
        prop_assert!(again.reconcile_report().is_clean(), "{:?}", again.reconcile_report());
        prop_assert_eq!(again.records(), c.records());
        let p: BTreeMap<String, String> = [("type".to_string(), "slice".to_string())].into();
        prop_assert_eq!(again.capacity(&p, None).unwrap(), c.capacity(&p, None).unwrap());
        let hdd = BTreeMap::new();
        prop_assert_eq!(again.capacity(&hdd, None).unwrap(), c.capacity(&hdd, None).unwrap());
    }

    #[test]
    fn parameter_parsing_never_panics(map in proptest::collection::btree_map("[a-zA-Z./]{0,24}", ".{0,24}", 0..8)) {
        let _ = Parameters::parse(&map);
    }

    #[test]
    fn known_keys_with_junk_values_name_the_key(key in proptest::sample::select(composer_core::params::KEYS), value in "[^,]{1,12}") {
        let map: BTreeMap<String, String> = [(key.to_string(), value.clone())].into();
        if let Err(Error::Parameter { key: k, .. }) = Parameters::parse(&map) {
            prop_assert_eq!(k, key);
        }
    }

    /// Every layout, plain or encrypted (engine or LUKS): the capacity
    /// reported holds the request, and the device the node is given holds
    /// the capacity plus the LUKS2 header when there is one; the same after
    /// an expansion.
    #[test]
    fn the_device_holds_the_capacity_and_the_luks_header(
        class in 0..CLASSES.len(),
        format in 0..3usize,
        mib in prop_oneof![1u64..4096, 100_000u64..20_000_000],
        grow in 0u64..200_000,
    ) {
        let c = Composer::open(Inventory::default_inventory(), Arc::new(MemStore::default())).unwrap();
        let mut params = class_params(class);
        match format {
            1 => { params.insert("encrypt".into(), "true".into()); }
            2 => {
                params.insert("encrypt".into(), "true".into());
                params.insert("encryptionFormat".into(), "luks".into());
            }
            _ => {}
        }
        let overhead = Parameters::parse(&params).unwrap().device_overhead();
        prop_assert_eq!(overhead, if format == 2 { composer_core::LUKS2_HEADER_BYTES } else { 0 });
        let want = mib << 20;
        let Ok(v) = c.create("v", &params, CapacityRange::new(Some(want), None).unwrap(), false, true, None) else {
            return Ok(());
        };
        let rec = c.get(&v.record.id).unwrap().record;
        prop_assert!(rec.capacity >= want, "{} < {}", rec.capacity, want);
        prop_assert!(rec.layout.usable_bytes >= rec.capacity + overhead, "{:?}", rec.layout);
        let more = want + (grow << 20);
        if let Ok(cap) = c.expand(&rec.id, CapacityRange::new(Some(more), None).unwrap()) {
            let rec = c.get(&rec.id).unwrap().record;
            prop_assert_eq!(cap, rec.capacity);
            prop_assert!(rec.capacity >= more);
            prop_assert!(rec.layout.usable_bytes >= rec.capacity + overhead, "{:?}", rec.layout);
        }
    }
}

/// An operation on the drives under random volumes: mark one (or its
/// enclosure), or apply its repair plan.
#[derive(Debug, Clone)]
enum Repair {
    Create {
        name: u8,
        class: u8,
        gib: u64,
    },
    Delete {
        pick: u8,
    },
    Mark {
        pick: u8,
        member: u8,
        health: u8,
        jbod: bool,
    },
    Apply {
        pick: u8,
        member: u8,
        jbod: bool,
    },
}

fn repair_op() -> impl Strategy<Value = Repair> {
    prop_oneof![
        4 => (any::<u8>(), 0..CLASSES.len() as u8, prop_oneof![1u64..64, 1000u64..40_000])
            .prop_map(|(name, class, gib)| Repair::Create { name: name % 24, class, gib }),
        1 => any::<u8>().prop_map(|pick| Repair::Delete { pick }),
        2 => (any::<u8>(), any::<u8>(), 0u8..4, prop::bool::weighted(0.2))
            .prop_map(|(pick, member, health, jbod)| Repair::Mark { pick, member, health, jbod }),
        2 => (any::<u8>(), any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, member, jbod)| Repair::Apply { pick, member, jbod }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// Marks and repair plans applied under random volumes: no byte is held
    /// twice, a failed call changes nothing, a repair moves every member off
    /// its target but those it lists unplaceable, and the records and marks
    /// alone rebuild the same pool (same records, drive use and health,
    /// capacity).
    #[test]
    fn marks_and_repairs_keep_the_invariants(ops in proptest::collection::vec(repair_op(), 1..40)) {
        let store = Arc::new(MemStore::default());
        let c = Composer::open(Inventory::default_inventory(), store.clone()).unwrap();
        for op in &ops {
            let before = store.load().unwrap();
            let recs = c.records();
            let drive = |p: u8, m: u8, jbod: bool| {
                (!recs.is_empty()).then(|| {
                    let r = &recs[p as usize % recs.len()];
                    let d = &r.members[m as usize % r.members.len()].drive;
                    if jbod {
                        let i = c.inventory().drive_index(d).unwrap();
                        let j = c.inventory().drives()[i as usize].jbod;
                        c.inventory().jbod_id(j).to_string()
                    } else {
                        d.clone()
                    }
                })
            };
            let result: Result<(), Error> = match op {
                Repair::Create { name, class, gib } => {
                    create(&c, *name, *class, *gib)
                }
                Repair::Delete { pick } => match (!recs.is_empty()).then(|| recs[*pick as usize % recs.len()].id.clone()) {
                    Some(id) => c.delete(&id),
                    None => Ok(()),
                },
                Repair::Mark { pick, member, health, jbod } => match drive(*pick, *member, *jbod) {
                    Some(t) => {
                        let h = [Health::Healthy, Health::Degraded, Health::Draining, Health::Failed][*health as usize];
                        c.mark(&t, h)
                    }
                    None => Ok(()),
                },
                Repair::Apply { pick, member, jbod } => match drive(*pick, *member, *jbod) {
                    Some(t) => c.apply_repair(&t).map(|plan| {
                        let on: Vec<String> = plan.drives.iter().map(|d| d.to_string()).collect();
                        let stuck: Vec<(String, usize)> = plan.unplaceable.iter()
                            .flat_map(|u| u.members.iter().map(move |&m| (u.volume.to_string(), m)))
                            .collect();
                        for r in c.records() {
                            for (i, m) in r.members.iter().enumerate() {
                                assert!(
                                    !on.contains(&m.drive) || stuck.contains(&(r.id.clone(), i)),
                                    "repair of {t}: member {i} of {} stays on {} ({plan:?})", r.id, m.drive
                                );
                            }
                        }
                    }),
                    None => Ok(()),
                },
            };
            if let Err(e) = &result {
                let after = store.load().unwrap();
                prop_assert_eq!(&before.volumes, &after.volumes, "{:?} failed ({}) but changed the records", op, e);
                prop_assert!(!matches!(e, Error::Internal(_) | Error::Store(_)), "{:?}: {}", op, e);
            }
            no_overlap(&c)?;
        }
        let again = Composer::open(Inventory::default_inventory(), store.clone()).unwrap();
        prop_assert_eq!(again.records(), c.records());
        let use_of = |c: &Composer| c.drive_report().into_iter().map(|d| (d.id, d.used, d.health, d.volumes)).collect::<Vec<_>>();
        prop_assert_eq!(use_of(&again), use_of(&c));
        for p in [
            BTreeMap::new(),
            [("type".to_string(), "slice".to_string())].into(),
            [("type".to_string(), "slice".to_string()), ("redundancy".to_string(), "true".to_string())].into(),
        ] {
            prop_assert_eq!(again.capacity(&p, None).unwrap(), c.capacity(&p, None).unwrap(), "{:?}", p);
        }
    }
}

/// The largest single-drive volume GetCapacity offers is one LUKS2 header
/// smaller with `encryptionFormat=luks`; at the plain maximum a LUKS volume
/// is out of range (its header would not fit) while the plain one is made.
#[test]
fn luks_takes_its_header_from_the_largest_volume() {
    let c = Composer::open(
        Inventory::default_inventory(),
        Arc::new(MemStore::default()),
    )
    .unwrap();
    let plain: BTreeMap<String, String> = [("striping".to_string(), "false".to_string())].into();
    let mut luks = plain.clone();
    luks.insert("encrypt".into(), "true".into());
    luks.insert("encryptionFormat".into(), "luks".into());
    let max = c.capacity(&plain, None).unwrap().maximum_volume_size;
    assert!(max > 0);
    assert_eq!(
        c.capacity(&luks, None).unwrap().maximum_volume_size,
        max - composer_core::LUKS2_HEADER_BYTES
    );
    let range = CapacityRange::new(Some(max), None).unwrap();
    let e = c
        .create("luks", &luks, range, false, true, None)
        .unwrap_err();
    assert!(matches!(e, Error::OutOfRange(_)), "{e}");
    assert!(c.records().is_empty(), "a refused create records nothing");
    let v = c.create("plain", &plain, range, false, true, None).unwrap();
    assert_eq!(v.record.capacity, max);
    let fits = CapacityRange::new(Some(max - composer_core::LUKS2_HEADER_BYTES), None).unwrap();
    let v = c.create("luks", &luks, fits, false, true, None).unwrap();
    assert_eq!(v.record.layout.usable_bytes, max);
    assert_eq!(v.record.capacity, max - composer_core::LUKS2_HEADER_BYTES);
}
