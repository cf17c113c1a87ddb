//! `Pool::largest_placeable` when the estimate it starts from is above what
//! placement allows, at the scale the product targets (10,000 servers,
//! 100,000 drives, [`Generate::LARGE`]): every NVMe drive carries a slice
//! of a little over half its size, so no slice larger than the rest fits,
//! while the estimate given is a whole drive. The bisection refines it;
//! each trial placement refuses used to be planned in full (placement's
//! explanation over every eligible drive included). Now a trial larger than
//! [`placement::Engine::max_placeable`] allows is refused without planning.
//!
//! The peer, the bisection planning every trial over `Pool::would_place`
//! (the code before), runs in the same process on the same pool; both
//! answers are printed and must be equal.
//!
//! `cargo bench -p composer-core --bench largest_placeable` (about a minute).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use composer_core::inventory::Generate;
use composer_core::{Composer, Inventory, Media, MemStore, Parameters, Pool};
use csi_types::types::CapacityRange;

#[path = "../tests/support/every_trial_planned.rs"]
mod support;

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn time(runs: usize, mut f: impl FnMut() -> u64) -> (Vec<Duration>, u64) {
    let mut out = 0;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            out = f();
            t.elapsed()
        })
        .collect();
    times.sort();
    (times, out)
}

fn main() {
    let inv = Inventory::generate(&Generate::LARGE);
    let ssd = inv
        .drives()
        .iter()
        .filter(|d| d.kind != Media::Hdd)
        .map(|d| d.capacity)
        .max()
        .unwrap();
    let ssds = inv.drives().iter().filter(|d| d.kind != Media::Hdd).count();
    println!(
        "inventory: {} servers, {} drives ({ssds} solid-state, {ssd} bytes each)",
        inv.servers().len(),
        inv.drives().len()
    );
    let c = Composer::open(inv, Arc::new(MemStore::default())).unwrap();
    let t = Instant::now();
    let half = ssd / 2 + (64 << 30);
    let slice = params(&[("type", "slice")]);
    let mut placed = 0;
    for i in 0..ssds {
        let range = CapacityRange::new(Some(half), None).unwrap();
        placed += c
            .create(&format!("half-{i}"), &slice, range, true, true, None)
            .is_ok() as usize;
    }
    println!(
        "placed {placed} slices of {half} bytes (one per solid-state drive) in {:.2?}",
        t.elapsed()
    );
    let records = c.records().into_iter().map(|r| (r.id.clone(), r)).collect();
    let (mut pool, _) =
        Pool::build(Arc::new(c.inventory().clone()), BTreeMap::new(), &records).unwrap();
    println!("largest_placeable from an estimate of {ssd} bytes (a whole drive):");
    for (name, kv) in [
        ("slice", &[("type", "slice")][..]),
        (
            "slice mirror",
            &[("type", "slice"), ("redundancy", "true")][..],
        ),
    ] {
        let p = Parameters::parse(&params(kv)).unwrap();
        let (old, a) = time(2, || support::every_trial_planned(&mut pool, &p, None, ssd));
        let (new, b) = time(5, || pool.largest_placeable(&p, None, ssd).unwrap());
        println!(
            "  {name:<13} every trial planned: min {:>9.2?} max {:>9.2?} (answer {a})",
            old[0],
            old[old.len() - 1]
        );
        println!(
            "  {name:<13} refused by the bound: min {:>9.2?} max {:>9.2?} (answer {b}){}",
            new[0],
            new[new.len() - 1],
            if a == b { "" } else { "  ANSWERS DIFFER" }
        );
    }
}
