//! The simulated data-loss rate agrees with `raid`'s analytic MTTDL where its assumptions hold:
//! independent exponential drive failures, a fixed rebuild time, no bandwidth limits, no
//! domain outages, no read errors, and volumes on disjoint drives (each drive holds one member,
//! so losses are independent and the Poisson interval applies).

use fleet_sim::adapter::LossModel;
use fleet_sim::config::{MediumConfig, PolicyKind, RebuildModel, SimConfig, VolumeClass};
use fleet_sim::units::ByteSize;
use placement::{DriveKind, Shape};

const TB: u64 = 1_000_000_000_000;
const MTTF_HOURS: f64 = 2000.0;
const REBUILD_HOURS: f64 = 10.0;

fn class(name: &str, shape: Shape, weight: f64) -> VolumeClass {
    VolumeClass {
        name: name.into(),
        weight,
        shape,
        kinds: vec![DriveKind::Hdd],
        sizes: vec![ByteSize::new(TB)],
        separation: vec![],
        bandwidth_spread: vec![],
    }
}

fn config() -> SimConfig {
    let mut c = SimConfig {
        seed: 7,
        years: 60.0,
        sample_days: 365.0,
        policies: vec![PolicyKind::Random],
        ..SimConfig::default()
    };
    c.fleet.zones = 1;
    c.fleet.racks = 1;
    c.fleet.drives_per_rack = 480;
    c.fleet.drives_per_jbod = 480;
    c.fleet.servers_per_rack = 0;
    // Every drive holds exactly one 1 TB member.
    c.fleet.media = vec![MediumConfig {
        kind: DriveKind::Hdd,
        share: 1.0,
        capacities: vec![ByteSize::new(TB)],
        rpm: 7200,
    }];
    c.failures.drive.afr = 1.0 - (-8760.0 / MTTF_HOURS).exp();
    c.failures.drive_replace_hours = 24.0;
    c.failures.jbod.afr = 0.0;
    c.failures.server.afr = 0.0;
    c.failures.rack.afr = 0.0;
    c.failures.ure_per_bit = 0.0;
    c.rebuild.model = RebuildModel::Fixed;
    c.rebuild.fixed_hours = REBUILD_HOURS;
    // 100 mirrors (200 drives) and 50 RAID5 3+1 sets (200 drives); 80 spare drives.
    c.workload.volumes = 150;
    c.workload.mean_lifetime_days = 0.0;
    c.workload.class = vec![
        class("mirror", Shape::Mirror { legs: 2 }, 2.0),
        class(
            "raid5",
            Shape::Parity {
                k: 3,
                m: 1,
                sets: 1,
            },
            1.0,
        ),
    ];
    c
}

#[test]
fn simulated_loss_rate_matches_raid_mttdl() {
    let cfg = config();
    let report = fleet_sim::run(&cfg, None, &mut |_, _| {}).expect("run");
    let p = &report.policies[0];
    assert_eq!(
        p.rejected_arrivals, 0,
        "every volume must be placed: {:?}",
        p.errors
    );
    assert_eq!(p.unrepairable_volumes, 0, "{:?}", p.errors);
    for (i, c) in p.classes.iter().enumerate() {
        let model = LossModel::new(&cfg.workload.class[i].shape).expect("model");
        let mttdl = model.mttdl_hours(MTTF_HOURS, REBUILD_HOURS).expect("mttdl");
        let analytic = 1000.0 * 8760.0 / mttdl;
        println!(
            "{}: simulated {:.2} per 1,000 volume-years ({} events, CI {:.2}–{:.2}); analytic {:.2}",
            c.name, c.loss.per_1000_volume_years, c.loss.events, c.loss.low, c.loss.high, analytic
        );
        assert!(
            c.loss.events >= 150,
            "{}: too few events ({}) for a tight interval",
            c.name,
            c.loss.events
        );
        assert!(
            c.loss.low <= analytic && analytic <= c.loss.high,
            "{}: analytic {analytic:.3} outside the simulated 95% interval {:.3}–{:.3}",
            c.name,
            c.loss.low,
            c.loss.high
        );
        // The interval discriminates: an MTTR off by a factor of two would be rejected.
        let wrong = 1000.0 * 8760.0
            / model
                .mttdl_hours(MTTF_HOURS, 2.0 * REBUILD_HOURS)
                .expect("mttdl");
        assert!(
            wrong > c.loss.high,
            "{}: the interval {:.3}–{:.3} is too wide to tell {analytic:.3} from {wrong:.3}",
            c.name,
            c.loss.low,
            c.loss.high
        );
    }
}
