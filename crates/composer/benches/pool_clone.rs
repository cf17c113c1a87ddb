//! The time of `Pool::clone`, the copy of the pool that `GetCapacity` makes
//! under the state lock on its first call (and after a change its journal
//! does not replay), at the scale the product targets: the generated
//! 100,000-drive inventory ([`Generate::LARGE`]) with 20,000 volumes placed
//! (`COMPOSER_BENCH_VOLUMES`), and the parts of it: the placement engine,
//! and the engine's inventory; and, for scale, the time of
//! `Inventory::spec()`, which builds the inventory's plain data (the copy
//! does not: it shares the shape and copies the live values only).
//!
//! `cargo bench -p composer-core --bench pool_clone` (under a minute).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use composer_core::inventory::Generate;
use composer_core::{Composer, Inventory, MemStore, Pool};
use csi_types::types::CapacityRange;

const CLASSES: &[&[(&str, &str)]] = &[
    &[("striping", "false")],
    &[("redundancy", "true"), ("striping", "false")],
    &[("redundancy", "true"), ("raidMaxDrives", "8")],
    &[("type", "ssd"), ("striping", "false")],
    &[("type", "slice")],
    &[("type", "slice"), ("redundancy", "true")],
];

/// Min and median of `runs` timings of `f` (its result dropped untimed).
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut d: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = f();
            let e = t.elapsed();
            drop(out);
            e
        })
        .collect();
    d.sort();
    (d[0], d[d.len() / 2])
}

fn main() {
    let volumes: u64 = std::env::var("COMPOSER_BENCH_VOLUMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let inv = Inventory::generate(&Generate::LARGE);
    let c = Composer::open(inv.clone(), Arc::new(MemStore::default())).unwrap();
    for i in 0..volumes {
        let p: BTreeMap<String, String> = CLASSES[i as usize % CLASSES.len()]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bytes = (1u64 << 30) << (i % 12);
        let _ = c.create(
            &format!("pv-{i}"),
            &p,
            CapacityRange::new(Some(bytes), None).unwrap(),
            true,
            true,
            None,
        );
    }
    let records: BTreeMap<String, _> = c.records().into_iter().map(|r| (r.id.clone(), r)).collect();
    let (pool, _) = Pool::build(Arc::new(inv), BTreeMap::new(), &records).unwrap();
    println!(
        "{} drives, {} volumes; clone time, min / median of 9:",
        pool.engine().inventory().drive_count(),
        records.len()
    );
    let parts: [(&str, (Duration, Duration)); 4] = [
        ("Pool", time(9, || pool.clone())),
        ("placement::Engine", time(9, || pool.engine().clone())),
        (
            "placement::Inventory",
            time(9, || pool.engine().inventory().clone()),
        ),
        (
            "Inventory::spec()",
            time(9, || pool.engine().inventory().spec()),
        ),
    ];
    for (name, (min, med)) in parts {
        println!("  {name:<26} min {min:>9.2?}  median {med:>9.2?}");
    }
}
