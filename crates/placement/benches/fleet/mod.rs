//! The bench's fleet, shared with `examples/profile_ops.rs`: a generated inventory (4 zones,
//! racks of 100 servers and 17 JBODs: 16 of 60 drives and one of 40; HDD, SSD and NVMe
//! enclosures; a port per JBOD and a switch per rack), the RAID1 and RAID10 requests the
//! benchmarks plan, and the mixed request stream that fills it.

use std::time::Instant;

use placement::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

pub const TB: u64 = 1_000_000_000_000;
pub const GB: u64 = 1_000_000_000;

pub fn id<T>(f: impl Fn(String) -> Result<T, IdError>, s: String) -> T {
    f(s).expect("generated ids are valid")
}

/// 100 racks × (16 JBODs of 60 + 1 of 40) = 100,000 drives; 100 servers per rack.
pub fn inventory() -> Inventory {
    let inv = inventory_of(100);
    assert_eq!(inv.spec().drives.len(), 100_000);
    assert_eq!(inv.spec().servers.len(), 10_000);
    inv
}

/// The first `racks` racks of [`inventory`] (the same drives, in the same order).
pub fn inventory_of(racks: usize) -> Inventory {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut spec = InventorySpec::default();
    for z in 0..4 {
        spec.domains.push(DomainSpec {
            id: id(DomainId::new, format!("z{z}")),
            level: "zone".into(),
            parent: None,
        });
    }
    for r in 0..racks {
        let rack = format!("r{r:03}");
        spec.domains.push(DomainSpec {
            id: id(DomainId::new, rack.clone()),
            level: "rack".into(),
            parent: Some(id(DomainId::new, format!("z{}", r % 4))),
        });
        spec.bandwidth_domains.push(BwDomainSpec {
            id: id(BwDomainId::new, format!("{rack}-tor")),
            kind: "tor".into(),
            capacity: Bytes(400 * GB),
            load: Bytes(0),
        });
        for s in 0..100 {
            spec.servers.push(ServerSpec {
                id: id(ServerId::new, format!("{rack}-s{s:03}")),
                domain: Some(id(DomainId::new, rack.clone())),
                bandwidth_domains: vec![],
                transports: None,
            });
        }
        for j in 0..17 {
            let jbod = format!("{rack}-j{j:02}");
            spec.domains.push(DomainSpec {
                id: id(DomainId::new, jbod.clone()),
                level: "jbod".into(),
                parent: Some(id(DomainId::new, rack.clone())),
            });
            spec.bandwidth_domains.push(BwDomainSpec {
                id: id(BwDomainId::new, format!("{jbod}-port")),
                kind: "port".into(),
                capacity: Bytes(24 * GB),
                load: Bytes(0),
            });
            let n = if j == 16 { 40 } else { 60 };
            // Enclosure type: mostly HDD, some SSD and NVMe shelves.
            let (kind, capacity, rpm) = match (r * 17 + j) % 20 {
                0 | 1 => (
                    DriveKind::Ssd,
                    [3_840 * GB, 7_680 * GB][rng.random_range(0..2)],
                    0,
                ),
                2 => (
                    DriveKind::Nvme,
                    [3_840 * GB, 7_680 * GB][rng.random_range(0..2)],
                    0,
                ),
                x => (
                    DriveKind::Hdd,
                    [8 * TB, 12 * TB, 16 * TB, 20 * TB][rng.random_range(0..4)],
                    if x % 5 == 0 { 10_000 } else { 7_200 },
                ),
            };
            for d in 0..n {
                spec.drives.push(DriveSpec {
                    id: id(DriveId::new, format!("{jbod}-d{d:02}")),
                    kind,
                    capacity: Bytes(capacity),
                    free: Bytes(capacity),
                    rpm,
                    tags: if rng.random_bool(0.3) {
                        vec!["enc".into()]
                    } else {
                        vec![]
                    },
                    transports: if kind == DriveKind::Hdd {
                        Transports::ISCSI | Transports::NVME_TCP
                    } else {
                        Transports::all()
                    },
                    health: Health::Healthy,
                    domain: Some(id(DomainId::new, jbod.clone())),
                    group: None,
                    bandwidth_domains: vec![
                        id(BwDomainId::new, format!("{jbod}-port")),
                        id(BwDomainId::new, format!("{rack}-tor")),
                    ],
                    attributes: Default::default(),
                });
            }
        }
    }
    Inventory::from_spec(spec).expect("generated inventory is valid")
}

pub fn raid1(size: u64) -> Request {
    let mut r = Request::new(Shape::Mirror { legs: 2 }, size).separate("rack", Mode::Hard);
    r.kinds = vec![DriveKind::Hdd];
    r
}

pub fn raid10(size: u64) -> Request {
    let mut r = Request::new(
        Shape::Raid10 {
            stripes: 4,
            mirrors: 2,
        },
        size,
    )
    .separate("jbod", Mode::Hard)
    .separate("rack", Mode::Soft);
    r.kinds = vec![DriveKind::Hdd];
    r.bandwidth_spread.push(Spread {
        kind: "port".into(),
        mode: Mode::Soft,
        max_per_domain: 1,
        per_group: false,
    });
    r
}

/// A request from a realistic mix; the medium is drawn so that every medium fills at the same
/// pace (as an operator would buy capacity).
pub fn mixed(rng: &mut ChaCha8Rng, free_hdd: u64, free_ssd: u64, free_nvme: u64) -> Request {
    // Requests per medium in proportion to free bytes / mean request bytes of that medium
    // (752 GB HDD, 90 GB SSD slice, 233 GB NVMe mirror).
    let (free_hdd, free_ssd, free_nvme) = (free_hdd / 752, free_ssd / 90, free_nvme / 233);
    let total = (free_hdd + free_ssd + free_nvme).max(1);
    let pick = rng.random_range(0..total);
    let pick_size =
        |rng: &mut ChaCha8Rng, sizes: &[u64]| sizes[rng.random_range(0..sizes.len())] * GB;
    if pick < free_hdd {
        match rng.random_range(0..100) {
            0..50 => raid1(pick_size(rng, &[50, 100, 100, 200, 500])),
            50..75 => raid10(pick_size(rng, &[100, 200])),
            _ => {
                let mut r = Request::new(
                    Shape::Parity {
                        k: 4,
                        m: 2,
                        sets: 1,
                    },
                    pick_size(rng, &[100, 250]),
                )
                .separate("rack", Mode::Hard);
                r.kinds = vec![DriveKind::Hdd];
                r
            }
        }
    } else if pick < free_hdd + free_ssd {
        let mut r = Request::new(Shape::Slice, pick_size(rng, &[10, 50, 100, 200]));
        r.kinds = vec![DriveKind::Ssd];
        r
    } else {
        let mut r = Request::new(Shape::Mirror { legs: 2 }, pick_size(rng, &[50, 100, 200]))
            .separate("rack", Mode::Hard);
        r.kinds = vec![DriveKind::Nvme];
        r.bandwidth = Bytes(5_000_000);
        r
    }
}

pub fn free_by_kind(e: &Engine) -> [u64; 3] {
    let mut f = [0u64; 3];
    for d in &e.inventory().spec().drives {
        f[d.kind as usize] += d.free.0;
    }
    f
}

pub fn utilization_stats(e: &Engine) -> (f64, f64, f64) {
    let u: Vec<f64> = e
        .inventory()
        .spec()
        .drives
        .iter()
        .map(|d| 1.0 - d.free.0 as f64 / d.capacity.0 as f64)
        .collect();
    let mean = u.iter().sum::<f64>() / u.len() as f64;
    let max = u.iter().cloned().fold(0.0, f64::max);
    let min = u.iter().cloned().fold(1.0, f64::min);
    (mean, max / mean, min / mean)
}

pub fn fill_to(engine: &mut Engine, target: f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let capacity: u64 = engine
        .inventory()
        .spec()
        .drives
        .iter()
        .map(|d| d.capacity.0)
        .sum();
    let mut free: u64 = engine
        .inventory()
        .spec()
        .drives
        .iter()
        .map(|d| d.free.0)
        .sum();
    let mut kinds = free_by_kind(engine);
    let (mut placed, mut failed, mut n) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while (capacity - free) as f64 / (capacity as f64) < target {
        let req = mixed(&mut rng, kinds[0], kinds[1], kinds[2]);
        let bytes = req.size.0 * req.shape.member_count() as u64;
        n += 1;
        if n % 500_000 == 0 {
            println!(
                "fill: {n} requests, {:.1}% full, {failed} failed, {:.1} s",
                100.0 * (capacity - free) as f64 / capacity as f64,
                start.elapsed().as_secs_f64()
            );
        }
        match engine.place(VolumeId::new(format!("fill-{n}")).expect("valid id"), &req) {
            Ok(_) => {
                placed += 1;
                free -= bytes;
                if placed % 1000 == 0 {
                    kinds = free_by_kind(engine);
                }
            }
            Err(e) => {
                if failed < 5 {
                    println!("fill: request {n} ({}) failed: {e}", req.label());
                }
                failed += 1;
                if failed > 10_000 {
                    break;
                }
            }
        }
    }
    let took = start.elapsed();
    let (mean, max_mean, min_mean) = utilization_stats(engine);
    for kind in [DriveKind::Hdd, DriveKind::Ssd, DriveKind::Nvme] {
        let u: Vec<f64> = engine
            .inventory()
            .spec()
            .drives
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| 1.0 - d.free.0 as f64 / d.capacity.0 as f64)
            .collect();
        let m = u.iter().sum::<f64>() / u.len() as f64;
        println!(
            "  {kind:?}: {} drives, mean {:.4}, max {:.4}, min {:.4}",
            u.len(),
            m,
            u.iter().cloned().fold(0.0, f64::max),
            u.iter().cloned().fold(1.0, f64::min)
        );
    }
    println!(
        "fill_to_{:.0}%: {:.2} s for {} requests ({} placed, {} failed), {:.2} us/request; \
         mean utilization {:.4}, max/mean {:.4}, min/mean {:.4}",
        target * 100.0,
        took.as_secs_f64(),
        n,
        placed,
        failed,
        took.as_secs_f64() * 1e6 / n as f64,
        mean,
        max_mean,
        min_mean
    );
}
