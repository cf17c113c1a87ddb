//! A CreateVolume whose accessibility requirements name nothing in the
//! inventory says which segment, key or value is at fault. Before, every
//! such request got one message ("no site of the inventory matches the
//! accessibility requirements") whatever the typo.

use std::sync::Arc;

use composer_core::{Composer, Error, Inventory, MemStore};
use csi_types::types::{CapacityRange, Topology, TopologyRequirement};

fn refusal(segments: &[&[(&str, &str)]]) -> String {
    let c = Composer::open(
        Inventory::default_inventory(),
        Arc::new(MemStore::default()),
    )
    .unwrap();
    let req = TopologyRequirement {
        requisite: segments
            .iter()
            .map(|kv| Topology::new(kv.iter().copied()).unwrap())
            .collect(),
        preferred: Vec::new(),
    };
    let e = c
        .create(
            "v",
            &Default::default(),
            CapacityRange::new(Some(1 << 30), None).unwrap(),
            true,
            true,
            Some(&req),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Exhausted(_)), "{e:?}");
    e.to_string()
}

#[test]
fn an_unknown_server_is_named() {
    assert_eq!(
        refusal(&[&[("topology.composer.csi/server", "nosuch")]]),
        "accessibility_requirements: no segment names a site, rack or server of the inventory \
         (topology.composer.csi/server=nosuch: no server \"nosuch\" in the inventory)"
    );
}

#[test]
fn a_foreign_key_is_named_with_the_keys_of_this_driver() {
    let e = refusal(&[&[("topology.kubernetes.io/zone", "a")]]);
    assert!(
        e.ends_with(
            "(topology.kubernetes.io/zone: not a topology key of this driver \
             (topology.composer.csi/site, topology.composer.csi/rack, topology.composer.csi/server))"
        ),
        "{e}"
    );
}

#[test]
fn every_segment_is_named() {
    let inv = Inventory::default_inventory();
    let rack = inv.file().racks[0].id.clone();
    let e = refusal(&[
        &[
            ("topology.composer.csi/site", "elsewhere"),
            ("topology.composer.csi/rack", &rack),
        ],
        &[("topology.composer.csi/rack", "r-nosuch")],
    ]);
    assert!(e.contains("no site \"elsewhere\" in the inventory"), "{e}");
    assert!(
        e.contains("; topology.composer.csi/rack=r-nosuch: no rack \"r-nosuch\""),
        "{e}"
    );
}
