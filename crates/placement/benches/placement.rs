//! Placement at scale: a generated inventory of 4 zones, 100 racks, 10,000 servers and 100,000
//! drives (60-drive JBODs; HDD, SSD and NVMe enclosures; a port per JBOD and a switch per rack).
//!
//! Prints, in order:
//! * criterion medians for planning a RAID1 and an 8-drive RAID10 volume on the empty
//!   inventory, and for placing (plan + commit) them;
//! * a one-shot fill to 90% with a mixed request stream: wall time, requests, failures, and
//!   drive utilization max/mean and min/mean;
//! * criterion medians for planning a RAID1 and a RAID10 at 90% fill;
//! * criterion medians for `max_placeable` (the largest member size that fits now) of a RAID1,
//!   a RAID10 and a single drive in one rack, empty and at 90% fill;
//! * criterion median for planning the evacuation of one 60-drive JBOD at 90% fill;
//! * one-shot times of live inventory changes at 90% fill (best of three): a JBOD, two drives
//!   in it, a domain at a new level and a server added and removed; a drive that alone carries
//!   an attribute added and removed (the attribute goes); drives whose removal moves the first
//!   carrier of an attribute (the attributes reorder) or takes an attribute's only carrier;
//!   bandwidth domains whose removal takes a kind (a later kind is renumbered), takes the
//!   last kind, or keeps its kind; a storage group removed; one drive's health set. Every removal is renumbered in
//!   place (none re-indexes).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use placement::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

const TB: u64 = 1_000_000_000_000;
const GB: u64 = 1_000_000_000;

/// One live inventory change, timed by the bench.
type LiveChange<'a> = dyn Fn(&mut Engine) -> Result<u64, PlacementError> + 'a;

fn id<T>(f: impl Fn(String) -> Result<T, IdError>, s: String) -> T {
    f(s).expect("generated ids are valid")
}

/// 100 racks × (16 JBODs of 60 + 1 of 40) = 100,000 drives; 100 servers per rack.
fn inventory() -> Inventory {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut spec = InventorySpec::default();
    for z in 0..4 {
        spec.domains.push(DomainSpec {
            id: id(DomainId::new, format!("z{z}")),
            level: "zone".into(),
            parent: None,
        });
    }
    for r in 0..100 {
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
    assert_eq!(spec.drives.len(), 100_000);
    assert_eq!(spec.servers.len(), 10_000);
    Inventory::from_spec(spec).expect("generated inventory is valid")
}

fn raid1(size: u64) -> Request {
    let mut r = Request::new(Shape::Mirror { legs: 2 }, size).separate("rack", Mode::Hard);
    r.kinds = vec![DriveKind::Hdd];
    r
}

fn raid10(size: u64) -> Request {
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
fn mixed(rng: &mut ChaCha8Rng, free_hdd: u64, free_ssd: u64, free_nvme: u64) -> Request {
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

fn free_by_kind(e: &Engine) -> [u64; 3] {
    let mut f = [0u64; 3];
    for d in &e.inventory().spec().drives {
        f[d.kind as usize] += d.free.0;
    }
    f
}

fn utilization_stats(e: &Engine) -> (f64, f64, f64) {
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

fn fill_to(engine: &mut Engine, target: f64) {
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

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let t = Instant::now();
    let inv = inventory();
    let mut engine = Engine::new(inv, 1).expect("engine");
    println!(
        "built 100,000-drive inventory and engine in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let r1 = raid1(10 * GB);
    let r10 = raid10(10 * GB);
    c.bench_function("empty/plan_raid1", |b| {
        b.iter(|| black_box(engine.plan(black_box(&r1)).is_ok()))
    });
    c.bench_function("empty/plan_raid10_4x2", |b| {
        b.iter(|| black_box(engine.plan(black_box(&r10)).is_ok()))
    });
    let rack: Segment = [("rack".to_string(), "r042".to_string())]
        .into_iter()
        .collect();
    c.bench_function("empty/max_placeable_raid1", |b| {
        b.iter(|| black_box(engine.max_placeable(black_box(&r1), None).ok()))
    });
    c.bench_function("empty/max_placeable_raid10_4x2", |b| {
        b.iter(|| black_box(engine.max_placeable(black_box(&r10), None).ok()))
    });
    c.bench_function("empty/max_placeable_single_in_rack", |b| {
        let single = Request::new(Shape::Single, 1);
        b.iter(|| black_box(engine.max_placeable(black_box(&single), Some(&rack)).ok()))
    });
    {
        let mut e = engine.clone();
        let mut n = 0u64;
        c.bench_function("empty/place_raid1", |b| {
            b.iter(|| {
                n += 1;
                black_box(
                    e.place(VolumeId::new(format!("a{n}")).expect("id"), &r1)
                        .is_ok(),
                )
            })
        });
        c.bench_function("empty/place_raid10_4x2", |b| {
            b.iter(|| {
                n += 1;
                black_box(
                    e.place(VolumeId::new(format!("a{n}")).expect("id"), &r10)
                        .is_ok(),
                )
            })
        });
    }

    // PLACEMENT_BENCH_FILL overrides the fill level (for quick looks; the README figures use 0.90).
    let target = std::env::var("PLACEMENT_BENCH_FILL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.90);
    fill_to(&mut engine, target);

    c.bench_function("fill90/plan_raid1", |b| {
        b.iter(|| black_box(engine.plan(black_box(&r1)).is_ok()))
    });
    c.bench_function("fill90/plan_raid10_4x2", |b| {
        b.iter(|| black_box(engine.plan(black_box(&r10)).is_ok()))
    });

    c.bench_function("fill90/max_placeable_raid1", |b| {
        b.iter(|| black_box(engine.max_placeable(black_box(&r1), None).ok()))
    });
    c.bench_function("fill90/max_placeable_raid10_4x2", |b| {
        b.iter(|| black_box(engine.max_placeable(black_box(&r10), None).ok()))
    });
    println!(
        "fill90: max_placeable raid1 {:?}, raid10_4x2 {:?} bytes per member",
        engine.max_placeable(&r1, None).ok().flatten(),
        engine.max_placeable(&r10, None).ok().flatten()
    );

    // One full 60-drive HDD JBOD.
    let jbod = "r001-j05";
    let drives = engine.inventory().drives_in(jbod).expect("jbod exists");
    let plan = engine.plan_evacuation(jbod).expect("plan");
    println!(
        "evacuate {jbod}: {} drives, {} member moves, {} volumes unplaceable",
        drives.len(),
        plan.moves.len(),
        plan.unplaceable.len()
    );
    let mut g = c.benchmark_group("fill90");
    g.sample_size(10);
    g.bench_function("plan_evacuation_jbod60", |b| {
        b.iter(|| black_box(engine.plan_evacuation(jbod).map(|p| p.moves.len())))
    });
    g.finish();

    // Live inventory changes on the filled engine, one shot each (best of three).
    let time = |engine: &mut Engine, f: &LiveChange<'_>| {
        let t = Instant::now();
        f(engine).expect("live change");
        t.elapsed()
    };
    let jbod_spec = engine
        .inventory()
        .spec()
        .domains
        .iter()
        .find(|d| d.id.as_str() == jbod)
        .cloned()
        .expect("jbod");
    let drive_spec = engine
        .inventory()
        .drive(&drives[0])
        .cloned()
        .expect("drive");
    // Each round: a JBOD at a known level, two drives in it, a domain at a new level under
    // it, a server; then the removals (the first drive's removal moves the second into its
    // index). Then, in rounds of their own, a drive that is the only one with an attribute is
    // added and removed: the attribute goes with it, and the attributes (separation
    // dimensions, numbered by first appearance) are renumbered in place.
    let mut best = [Duration::MAX; 12];
    for round in 0..3 {
        let new_jbod = DomainSpec {
            id: id(DomainId::new, format!("new-jbod-{round}")),
            ..jbod_spec.clone()
        };
        let mut drive = drive_spec.clone();
        drive.id = id(DriveId::new, format!("new-drive-{round}"));
        drive.domain = Some(new_jbod.id.clone());
        drive.free = drive.capacity;
        drive.health = Health::Healthy;
        let mut drive2 = drive.clone();
        drive2.id = id(DriveId::new, format!("new-drive-{round}-b"));
        let shelf = DomainSpec {
            id: id(DomainId::new, format!("new-shelf-{round}")),
            level: "shelf".into(),
            parent: Some(new_jbod.id.clone()),
        };
        let server = ServerSpec {
            id: id(ServerId::new, format!("new-server-{round}")),
            domain: Some(new_jbod.id.clone()),
            bandwidth_domains: vec![],
            transports: None,
        };
        let (x, d, d2, sh, sv) = (
            new_jbod.id.clone(),
            drive.id.clone(),
            drive2.id.clone(),
            shelf.id.clone(),
            server.id.clone(),
        );
        let steps: [&LiveChange<'_>; 10] = [
            &|e| e.add_domain(new_jbod.clone()),
            &|e| e.add_drive(drive.clone()),
            &|e| e.add_drive(drive2.clone()),
            &|e| e.add_domain(shelf.clone()),
            &|e| e.add_server(server.clone()),
            &|e| e.remove_server(&sv),
            &|e| e.remove_domain(&sh),
            &|e| e.remove_drive(&d),
            &|e| e.remove_drive(&d2),
            &|e| e.remove_domain(&x),
        ];
        for (i, step) in steps.iter().enumerate() {
            best[i] = best[i].min(time(&mut engine, step));
        }
    }
    for round in 0..3 {
        let mut own = drive_spec.clone();
        own.id = id(DriveId::new, format!("new-attributed-{round}"));
        own.free = own.capacity;
        own.health = Health::Healthy;
        own.attributes = [("bench".to_string(), format!("new-{round}"))].into();
        let o = own.id.clone();
        let steps: [&LiveChange<'_>; 2] = [&|e| e.add_drive(own.clone()), &|e| e.remove_drive(&o)];
        for (i, step) in steps.iter().enumerate() {
            best[10 + i] = best[10 + i].min(time(&mut engine, step));
        }
    }
    // Attributes reordered: drives a {p: x}, b {q: y}, c {p: x}, d {} are added; removing a
    // moves p's first carrier to c, after b, so p and q (and x and y) swap numbers, and d
    // takes a's index. Removing b then takes q and y with it (c moves into b's index).
    let mut attr = [Duration::MAX; 2];
    for round in 0..3 {
        let drive = |name: &str, attrs: &[(&str, &str)]| {
            let mut x = drive_spec.clone();
            x.id = id(DriveId::new, format!("attr-{round}-{name}"));
            x.free = x.capacity;
            x.health = Health::Healthy;
            x.attributes = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            x
        };
        let added = [
            drive("a", &[("bench-p", "bench-x")]),
            drive("b", &[("bench-q", "bench-y")]),
            drive("c", &[("bench-p", "bench-x")]),
            drive("d", &[]),
        ];
        for x in &added {
            engine.add_drive(x.clone()).expect("add drive");
        }
        let names = |e: &Engine, x: &DriveSpec| {
            e.inventory()
                .spec()
                .drives
                .iter()
                .position(|d| d.id == x.id)
        };
        let a_at = names(&engine, &added[0]);
        attr[0] = attr[0].min(time(&mut engine, &|e| e.remove_drive(&added[0].id)));
        assert_eq!(
            names(&engine, &added[3]),
            a_at,
            "the last drive took a's index"
        );
        attr[1] = attr[1].min(time(&mut engine, &|e| e.remove_drive(&added[1].id)));
        for x in [&added[2], &added[3]] {
            engine.remove_drive(&x.id).expect("remove drive");
        }
    }
    // Bandwidth kinds: domains u (kind bench-u) and v (kind bench-v) are added; removing u
    // takes its kind and renumbers bench-v (v takes u's place); removing v then takes the
    // last new kind. A domain of an existing kind ("port") is added and removed: no kind
    // changes.
    let mut kinds = [Duration::MAX; 4];
    for round in 0..3 {
        let bw = |name: &str, kind: &str| BwDomainSpec {
            id: id(BwDomainId::new, format!("bw-{round}-{name}")),
            kind: kind.into(),
            capacity: Bytes(GB),
            load: Bytes(0),
        };
        let (u, v, w) = (bw("u", "bench-u"), bw("v", "bench-v"), bw("w", "port"));
        for x in [&u, &v] {
            engine
                .add_bandwidth_domain(x.clone())
                .expect("add bandwidth domain");
        }
        kinds[0] = kinds[0].min(time(&mut engine, &|e| e.remove_bandwidth_domain(&u.id)));
        kinds[1] = kinds[1].min(time(&mut engine, &|e| e.remove_bandwidth_domain(&v.id)));
        engine
            .add_bandwidth_domain(w.clone())
            .expect("add bandwidth domain");
        kinds[2] = kinds[2].min(time(&mut engine, &|e| e.remove_bandwidth_domain(&w.id)));
        // Two storage groups; removing the first moves the second into its place.
        let group = |name: &str| GroupSpec {
            id: id(GroupId::new, format!("group-{round}-{name}")),
            quota: None,
            used: Bytes(0),
        };
        let (g0, g1) = (group("0"), group("1"));
        for g in [&g0, &g1] {
            engine
                .add_storage_group(g.clone())
                .expect("add storage group");
        }
        kinds[3] = kinds[3].min(time(&mut engine, &|e| e.remove_storage_group(&g0.id)));
        engine
            .remove_storage_group(&g1.id)
            .expect("remove storage group");
    }
    assert!(
        !engine
            .inventory()
            .spec()
            .bandwidth_domains
            .iter()
            .any(|b| b.kind.starts_with("bench")),
        "the new kinds went"
    );
    // A health change on one full drive: failed, then healthy again (O(its members)).
    let (mut failed, mut healed, mut affected) = (Duration::MAX, Duration::MAX, 0);
    for _ in 0..3 {
        let t = Instant::now();
        affected = engine
            .set_drive_health(drives[0].as_str(), Health::Failed)
            .expect("health")
            .len();
        failed = failed.min(t.elapsed());
        let t = Instant::now();
        engine
            .set_drive_health(drives[0].as_str(), Health::Healthy)
            .expect("health");
        healed = healed.min(t.elapsed());
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "fill90 live changes ({} volumes), best of 3, in µs: add_domain {:.1}, add_drive {:.1} / {:.1}, add_domain at a new level {:.1}, add_server {:.1}, remove_server {:.1}, remove_domain (its level goes) {:.1}, remove_drive (the last drive moves in) {:.1} / (the last drive) {:.1}, remove_domain {:.1}; a drive with an attribute of its own: add_drive {:.1}, remove_drive (the attribute goes) {:.1}; remove_drive, the first carrier of an attribute (the attributes reorder) {:.1}, the only carrier of one (it goes) {:.1}; remove_bandwidth_domain, its kind goes (a later kind renumbered) {:.1}, the last new kind goes {:.1}, its kind stays {:.1}; remove_storage_group (the last group moves in) {:.1}; set_drive_health failed {:.1} / healthy {:.1} (one drive, {affected} volumes affected)",
        engine.volumes().count(),
        us(best[0]),
        us(best[1]),
        us(best[2]),
        us(best[3]),
        us(best[4]),
        us(best[5]),
        us(best[6]),
        us(best[7]),
        us(best[8]),
        us(best[9]),
        us(best[10]),
        us(best[11]),
        us(attr[0]),
        us(attr[1]),
        us(kinds[0]),
        us(kinds[1]),
        us(kinds[2]),
        us(kinds[3]),
        us(failed),
        us(healed),
    );
    c.final_summary();
}
