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
//! * criterion medians for planning the evacuation of one 60-drive JBOD at 90% fill, and for
//!   setting one of its drives failed and then healthy again;
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

mod fleet;
use fleet::{GB, fill_to, id, inventory, raid1, raid10};

/// One live inventory change, timed by the bench.
type LiveChange<'a> = dyn Fn(&mut Engine) -> Result<u64, PlacementError> + 'a;

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
    // One full drive of that JBOD failed and made healthy again, as one iteration. Timed here,
    // before the live changes below, so that it sees the same engine whatever those do (they
    // differ between versions of this bench).
    g.bench_function("set_drive_health_failed_healthy", |b| {
        b.iter(|| {
            let affected = engine
                .set_drive_health(drives[0].as_str(), Health::Failed)
                .expect("health")
                .len();
            engine
                .set_drive_health(drives[0].as_str(), Health::Healthy)
                .expect("health");
            black_box(affected)
        })
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
    let drive_spec = engine.inventory().drive(&drives[0]).expect("drive");
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
