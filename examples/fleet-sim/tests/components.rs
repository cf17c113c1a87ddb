//! The building blocks: the fair-share rebuild model, raid's loss analysis per shape, the
//! policies' separation, and the engine adapter's out-of-service handling.

use std::sync::Arc;

use fleet_sim::adapter::{EnginePlacer, LossModel};
use fleet_sim::config::{FleetConfig, RebuildConfig, SimConfig};
use fleet_sim::fleet::{Fleet, NONE, generate};
use fleet_sim::flow::{Flow, Flows};
use fleet_sim::policy::{ClassInfo, DriveState, Placer, RandomPlacer, Straw2};
use placement::Shape;

fn flow(res: Vec<(u32, f32)>, bytes: f64) -> Flow {
    Flow {
        vol: 0,
        member: 0,
        remaining: bytes,
        rate: 0.0,
        res,
        fixed_rate: None,
        started: 0.0,
        read_factor: 1.0,
        server: NONE,
    }
}

#[test]
fn fair_share_is_max_min() {
    // Drives 0..4 at 100 B/s; one bandwidth domain (resource 4) at 150 B/s; cap 1000 B/s.
    let mut f = Flows::new(vec![100.0; 4], vec![150.0], 1000.0);
    // a: drive 0 -> drive 1; b: drive 0 -> drive 2 (share drive 0);
    // c: drive 3 alone but through the domain with d; d: the domain only.
    let a = f.add(flow(vec![(0, 1.0), (1, 1.0)], 1e6));
    let b = f.add(flow(vec![(0, 1.0), (2, 1.0)], 1e6));
    let c = f.add(flow(vec![(3, 1.0), (4, 1.0)], 1e6));
    let d = f.add(flow(vec![(4, 2.0)], 1e6));
    f.recompute(&[]).unwrap();
    let rate = |id| f.get(id).unwrap().rate;
    assert!((rate(a) - 50.0).abs() < 1e-6 && (rate(b) - 50.0).abs() < 1e-6);
    // Domain: c + 2d <= 150 with c <= 100: the level is 50 for both.
    assert!((rate(c) - 50.0).abs() < 1e-6, "{}", rate(c));
    assert!((rate(d) - 50.0).abs() < 1e-6, "{}", rate(d));
    // Remove b: a gets drive 0 alone (100); the domain is unchanged.
    f.remove(b);
    f.recompute(&[]).unwrap();
    assert!((f.get(a).unwrap().rate - 100.0).abs() < 1e-6);
    // Peaks: the domain carried 150 B/s.
    assert!((f.peak[0] - 150.0).abs() < 1e-6);
}

#[test]
fn completion_time_follows_the_rates() {
    let mut f = Flows::new(vec![100.0, 100.0], vec![], 1000.0);
    let a = f.add(flow(vec![(0, 1.0), (1, 1.0)], 360_000.0));
    let next = f.recompute(&[]).unwrap();
    assert!(
        (next - 1.0).abs() < 1e-9,
        "360,000 B at 100 B/s is one hour, got {next}"
    );
    f.advance(0.5);
    assert!((f.get(a).unwrap().remaining - 180_000.0).abs() < 1e-6);
    assert!(f.finished().is_empty());
    f.advance(1.0);
    assert_eq!(f.finished(), vec![a]);
}

#[test]
fn paused_flows_release_their_share() {
    let mut f = Flows::new(vec![100.0, 100.0, 100.0], vec![], 1000.0);
    let mut x = flow(vec![(0, 1.0), (1, 1.0)], 1e6);
    x.server = 0;
    let a = f.add(x);
    let b = f.add(flow(vec![(0, 1.0), (2, 1.0)], 1e6));
    f.recompute(&[1]).unwrap();
    assert_eq!(f.get(a).unwrap().rate, 0.0);
    assert!((f.get(b).unwrap().rate - 100.0).abs() < 1e-6);
}

#[test]
fn loss_model_follows_md() {
    let raid1 = LossModel::new(&Shape::Mirror { legs: 2 }).unwrap();
    assert!(!raid1.fatal(0b01) && raid1.fatal(0b11));
    let raid10 = LossModel::new(&Shape::Raid10 {
        stripes: 4,
        mirrors: 2,
    })
    .unwrap();
    // md raid10 n2 over 8 members: copies on (0,1), (2,3), ...
    assert!(raid10.fatal(0b0000_0011));
    assert!(!raid10.fatal(0b0101_0101));
    let raid6 = LossModel::new(&Shape::Parity {
        k: 4,
        m: 2,
        sets: 2,
    })
    .unwrap();
    assert!(!raid6.fatal(0b000011_000011));
    assert!(raid6.fatal(0b000111_000000));
    let ec = LossModel::new(&Shape::Parity {
        k: 8,
        m: 3,
        sets: 1,
    })
    .unwrap();
    assert!(!ec.fatal(0b111) && ec.fatal(0b1111));
    let single = LossModel::new(&Shape::Slice).unwrap();
    assert!(single.fatal(1));
    // RAID10 with one mirror is a stripe without copies (md raid0): any failure loses data.
    // It was refused as md raid10 `n1`, which is no layout.
    let stripe = LossModel::new(&Shape::Raid10 {
        stripes: 3,
        mirrors: 1,
    })
    .unwrap();
    assert!(stripe.fatal(0b100) && !stripe.fatal(0));
    assert!(
        stripe.description.starts_with("md raid0, 3 members"),
        "{}",
        stripe.description
    );
    // MTTDL: a RAID5 of 4 is about MTTF^2 / (n (n-1) MTTR).
    let raid5 = LossModel::new(&Shape::Parity {
        k: 3,
        m: 1,
        sets: 1,
    })
    .unwrap();
    let h = raid5.mttdl_hours(10_000.0, 10.0).unwrap();
    let approx = 1e8 / (12.0 * 10.0);
    assert!((h / approx - 1.0).abs() < 0.02, "{h} vs {approx}");
}

fn small_fleet() -> Arc<Fleet> {
    let cfg = FleetConfig {
        racks: 6,
        drives_per_rack: 120,
        servers_per_rack: 2,
        ..FleetConfig::default()
    };
    let spec = generate(&cfg, 1).unwrap();
    Arc::new(Fleet::new(spec, "jbod", "rack", &RebuildConfig::default()).unwrap())
}

fn state(fleet: &Fleet) -> DriveState {
    DriveState {
        free: fleet.drives.iter().map(|d| d.capacity).collect(),
        down: vec![0; fleet.drives.len()],
    }
}

/// A separation level the inventory lacks was echoed whole (100,000 characters in one line);
/// it is shortened as syntax errors are.
#[test]
fn a_long_unknown_level_is_quoted_short() {
    let fleet = small_fleet();
    let mut class = SimConfig::default().workload.class[0].clone();
    let level = "l".repeat(100_000);
    class.separation[0].level = level.clone();
    let Err((field, rule)) = ClassInfo::new(&class, &fleet) else {
        panic!("an unknown level was accepted");
    };
    assert_eq!(field, "separation[0].level");
    assert!(
        rule.starts_with(&format!(
            "{:?}… (100000 bytes) is not a level of the inventory (levels: ",
            &level[..64]
        )),
        "{rule:.300}"
    );
    assert!(rule.len() < 300, "{} bytes", rule.len());
}

#[test]
fn straw2_separates_racks_and_avoids_down_drives() {
    let fleet = small_fleet();
    let cfg = SimConfig::default();
    let raid1 = ClassInfo::new(&cfg.workload.class[0], &fleet).unwrap();
    let mut st = state(&fleet);
    let mut s = Straw2::new(fleet.clone(), 3);
    let rack = fleet.level("rack").unwrap();
    // Rack 0 is down.
    let down: Vec<u32> = fleet.racks[0].drives.clone();
    for &d in &down {
        st.down[d as usize] = 1;
    }
    s.drives_down(&st, &down).unwrap();
    for v in 0..300 {
        let d = s.place(&st, v, &raid1, 1_000_000_000_000).unwrap();
        assert_ne!(fleet.ancestor_at(d[0], rack), fleet.ancestor_at(d[1], rack));
        assert!(d.iter().all(|&x| st.down[x as usize] == 0));
        // Stateless: the same key gives the same drives.
        assert_eq!(s.place(&st, v, &raid1, 1_000_000_000_000).unwrap(), d);
    }
}

#[test]
fn engine_adapter_keeps_drives_out_of_service_until_they_return() {
    let fleet = small_fleet();
    let cfg = SimConfig::default();
    let raid1 = ClassInfo::new(&cfg.workload.class[0], &fleet).unwrap();
    let mut st = state(&fleet);
    let mut e = EnginePlacer::new(fleet.clone(), 1, 20_000).unwrap();
    let size = 1_000_000_000_000;
    let placed = e.place(&st, 0, &raid1, size).unwrap();
    // The whole JBOD of member 0 goes down.
    let jbod = fleet.drives[placed[0] as usize].jbod;
    let drives = fleet.jbods[jbod as usize].drives.clone();
    // The engine's own plan for that JBOD moves exactly our member.
    let (moves, unplaceable) = e
        .plan_evacuation_counts(&fleet.jbods[jbod as usize].id)
        .unwrap();
    assert_eq!((moves, unplaceable), (1, 0));
    for &d in &drives {
        st.down[d as usize] = 1;
    }
    e.drives_down(&st, &drives).unwrap();
    let new = e.repair(&st, 0, &raid1, size, &placed, &[0]).unwrap();
    assert!(!drives.contains(&new[0]));
    for v in 1..200 {
        let p = e.place(&st, v, &raid1, size).unwrap();
        assert!(
            p.iter().all(|d| !drives.contains(d)),
            "placed on a drive out of service"
        );
    }
    // Back in service: the drives take members again.
    for &d in &drives {
        st.down[d as usize] = 0;
    }
    e.drives_up(&st, &drives).unwrap();
    let mut used = false;
    for v in 200..600 {
        if let Ok(p) = e.place(&st, v, &raid1, size) {
            used |= p.iter().any(|d| drives.contains(d));
        }
    }
    assert!(used, "returned drives never used again");
}

#[test]
fn random_policy_ignores_separation_but_not_room() {
    let fleet = small_fleet();
    let cfg = SimConfig::default();
    let raid10 = ClassInfo::new(&cfg.workload.class[1], &fleet).unwrap();
    let mut st = state(&fleet);
    for d in 0..st.free.len() {
        if d % 2 == 0 {
            st.free[d] = 0;
        }
    }
    let mut r = RandomPlacer::new(fleet.clone(), 9);
    for v in 0..100 {
        let p = r.place(&st, v, &raid10, 1).unwrap();
        assert_eq!(p.len(), 8);
        assert!(p.iter().all(|&d| d % 2 == 1));
        let mut s = p.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 8, "members on distinct drives");
    }
}

/// Lifetimes are scaled so that the AFR is the probability of failing within the first year,
/// whatever the Weibull shape: with replacements slower than a year each slot fails at most
/// once, so about `afr` of the drives fail. At shape 1e-4 the old scale `H^(-1/shape)`
/// overflowed to infinity and no drive ever failed.
#[test]
fn weibull_lifetimes_follow_the_afr_at_any_shape() {
    use fleet_sim::config::{Distribution, DriveFailure};
    for shape in [1e-4, 0.3, 1.0, 3.0, 1e6] {
        let mut cfg = SimConfig {
            years: 1.0,
            policies: vec![fleet_sim::PolicyKind::Random],
            ..SimConfig::default()
        };
        cfg.fleet.racks = 4;
        cfg.fleet.drives_per_rack = 120;
        cfg.fleet.servers_per_rack = 2;
        cfg.workload.volumes = 10;
        cfg.failures.drive = DriveFailure {
            distribution: Distribution::Weibull,
            afr: 0.5,
            shape,
        };
        cfg.failures.drive_replace_hours = 1e6;
        for d in [
            &mut cfg.failures.jbod,
            &mut cfg.failures.server,
            &mut cfg.failures.rack,
        ] {
            d.afr = 0.0;
        }
        let r = fleet_sim::run(&cfg, None, &mut |_, _| {}).unwrap();
        let failed = r.hardware.drive_failures as f64 / r.drives as f64;
        // 480 drives: the binomial's standard deviation is 2.3 points.
        assert!(
            (0.4..0.6).contains(&failed),
            "shape {shape}: {failed} of the drives failed in the first year, expected about 0.5"
        );
    }
}
