//! `GetCapacity` at the scale the product targets: a generated inventory of
//! 10,000 servers and 100,000 drives ([`Generate::LARGE`]) with volumes
//! already placed, per StorageClass (whole HDD, RAID1, RAID10, whole SSD,
//! slice, slice mirror), over the whole inventory and in one server's
//! segment (the external-provisioner asks per node), and two classes
//! nothing fits (every layout tried and refused); then CreateVolume
//! latency with and without GetCapacity calls running beside it.
//!
//! `Composer::capacity` plans on a copy of the pool of its own and holds
//! the state lock only to take the changes made since its last call (the
//! first call copies the pool there), so creates go on while it plans.
//! Before, it held the state lock for the whole call, and the time of a call
//! was the time a create waited behind it (the "max" of the concurrent run).

//! `cargo bench -p composer-core --bench get_capacity` (a few minutes).
//! `COMPOSER_BENCH_VOLUMES=N` sets the volumes placed first (default 20000);
//! `COMPOSER_BENCH_SECONDS=S` the length of each concurrent run (default 5).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use composer_core::inventory::Generate;
use composer_core::{Composer, Inventory, MemStore};
use csi_types::types::{CapacityRange, Topology};

const CLASSES: &[(&str, &[(&str, &str)])] = &[
    ("hdd single", &[("striping", "false")]),
    (
        "hdd raid1",
        &[("redundancy", "true"), ("striping", "false")],
    ),
    (
        "hdd raid10 (<= 8 drives)",
        &[("redundancy", "true"), ("raidMaxDrives", "8")],
    ),
    ("ssd single", &[("type", "ssd"), ("striping", "false")]),
    ("slice", &[("type", "slice")]),
    ("slice mirror", &[("type", "slice"), ("redundancy", "true")]),
];

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn create(c: &Composer, name: &str, p: &BTreeMap<String, String>, bytes: u64) -> bool {
    c.create(
        name,
        p,
        CapacityRange::new(Some(bytes), None).unwrap(),
        true,
        true,
        None,
    )
    .is_ok()
}

/// Creates and deletes volumes on `threads` threads for `secs`, while
/// `capacity` (when set) calls GetCapacity for every class in a loop;
/// prints the create latencies and the GetCapacity calls made.
fn concurrent(c: &Composer, threads: usize, secs: u64, capacity: bool) {
    let stop = AtomicBool::new(false);
    let calls = AtomicUsize::new(0);
    let seq = AtomicUsize::new(0);
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        if capacity {
            s.spawn(|| {
                let ps: Vec<_> = CLASSES.iter().map(|(_, kv)| params(kv)).collect();
                while !stop.load(Ordering::Relaxed) {
                    for p in &ps {
                        c.capacity(p, None).unwrap();
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::new();
                    let ps: Vec<_> = CLASSES.iter().map(|(_, kv)| params(kv)).collect();
                    while !stop.load(Ordering::Relaxed) {
                        let i = seq.fetch_add(1, Ordering::Relaxed);
                        let p = &ps[i % ps.len()];
                        let t = Instant::now();
                        let v = c.create(
                            &format!("conc-{i}"),
                            p,
                            CapacityRange::new(Some(10 << 30), None).unwrap(),
                            true,
                            true,
                            None,
                        );
                        lat.push(t.elapsed());
                        if let Ok(v) = v {
                            c.delete(&v.record.id).unwrap();
                        }
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    lat.sort();
    println!(
        "  creates on {threads} thread(s){:<32} {:>6} creates  p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  ({} GetCapacity calls)",
        if capacity {
            ", GetCapacity looping beside them"
        } else {
            ", alone"
        },
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
        calls.load(Ordering::Relaxed)
    );
}

fn main() {
    let volumes = env("COMPOSER_BENCH_VOLUMES", 20_000);
    let secs = env("COMPOSER_BENCH_SECONDS", 5);
    let t = Instant::now();
    let inv = Inventory::generate(&Generate::LARGE);
    println!(
        "inventory: {} servers, {} drives (generated in {:.2?})",
        inv.servers().len(),
        inv.drives().len(),
        t.elapsed()
    );
    let c = Composer::open(inv, Arc::new(MemStore::default())).unwrap();
    let t = Instant::now();
    let mut placed = 0;
    for i in 0..volumes {
        let (_, kv) = CLASSES[i as usize % CLASSES.len()];
        // Sizes from 1 GiB to ~3.6 TB: some whole drives, some stripes.
        let bytes = (1u64 << 30) << (i % 12);
        placed += create(&c, &format!("pv-{i}"), &params(kv), bytes) as u64;
    }
    println!(
        "placed {placed} of {volumes} volumes (every class, 1 GiB to 2 TiB) in {:.2?}",
        t.elapsed()
    );
    let server = Topology::new([(
        composer_core::convert::TOPOLOGY_SERVER,
        c.inventory().servers()[4321].id.clone(),
    )])
    .unwrap();
    println!("GetCapacity (planned on its copy of the pool, the first call making it):");
    // Classes nothing fits, where every layout is tried and refused (the
    // refusals carry placement's explanations).
    const NOTHING_FITS: &[(&str, &[(&str, &str)])] = &[
        (
            "raid10, a tag no drive has",
            &[("redundancy", "true"), ("requiredTags", "nosuch")],
        ),
        (
            "slice mirror, min 8 TB",
            &[
                ("type", "slice"),
                ("redundancy", "true"),
                ("minVolumeSize", "8TB"),
            ],
        ),
    ];
    for (name, kv) in CLASSES.iter().chain(NOTHING_FITS) {
        let p = params(kv);
        for (segment, topology) in [("whole inventory", None), ("one server", Some(&server))] {
            let mut times = Vec::new();
            let mut cap = None;
            for _ in 0..5 {
                let t = Instant::now();
                cap = Some(c.capacity(&p, topology).unwrap());
                times.push(t.elapsed());
            }
            times.sort();
            let cap = cap.unwrap();
            println!(
                "  {name:<26} {segment:<16} min {:>9.2?}  median {:>9.2?}  max {:>9.2?}  (maximum_volume_size {}, available {})",
                times[0],
                times[times.len() / 2],
                times[times.len() - 1],
                cap.maximum_volume_size,
                cap.available
            );
        }
    }
    println!("CreateVolume + DeleteVolume, {secs} s each:");
    concurrent(&c, 2, secs, false);
    concurrent(&c, 2, secs, true);
}
