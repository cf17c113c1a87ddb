//! Seeds make runs reproducible, and every policy of a run sees the same hardware failures.

use fleet_sim::{PolicyKind, Progress, SimConfig, run};

fn small(seed: u64) -> SimConfig {
    let mut c = SimConfig {
        seed,
        years: 1.0,
        // Small fleets make the engine's search for soft constraints long; debug builds are slow.
        engine_search_budget: 1000,
        ..SimConfig::default()
    };
    c.fleet.racks = 6;
    c.fleet.drives_per_rack = 120;
    c.fleet.servers_per_rack = 4;
    c.workload.volumes = 600;
    c.workload.mean_lifetime_days = 120.0;
    // Enough failures in a year of a small fleet to exercise every path.
    c.failures.drive.afr = 0.2;
    c.failures.jbod.afr = 0.2;
    c.failures.rack.afr = 0.1;
    c.failures.server.afr = 0.3;
    c
}

#[test]
fn same_seed_gives_identical_report() {
    let a = run(&small(11), None, &mut |_, _| {}).unwrap();
    let b = run(&small(11), None, &mut |_, _| {}).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_json(), b.to_json());
    let c = run(&small(12), None, &mut |_, _| {}).unwrap();
    assert_ne!(
        a.to_json(),
        c.to_json(),
        "another seed must give another run"
    );
}

#[test]
fn policies_share_the_failure_stream_and_all_run() {
    let r = run(&small(5), None, &mut |_, _| {}).unwrap();
    assert_eq!(r.policies.len(), 3);
    let names: Vec<_> = r.policies.iter().map(|p| p.policy).collect();
    assert_eq!(names, ["engine", "straw2", "random"]);
    assert!(r.hardware.drive_failures > 0 && r.hardware.jbod_failures > 0);
    for p in &r.policies {
        assert!(p.rebuilds > 0, "{}: no rebuild completed", p.policy);
        assert!(p.events > 0);
        assert!(!p.utilisation.is_empty());
        // Every error kind the run may record is an expected one (placement refusals), never
        // the simulator's guard against a policy choosing a drive out of service.
        for (op, _, msg) in &p.errors {
            assert!(!msg.contains("out of service"), "{}: {op}: {msg}", p.policy);
        }
    }
    // A single policy run sees the same hardware events as the three-policy run.
    let mut one = small(5);
    one.policies = vec![PolicyKind::Random];
    let r1 = run(&one, None, &mut |_, _| {}).unwrap();
    assert_eq!(r1.hardware, r.hardware);
    assert_eq!(r1.policies[0], r.policies[2]);
}

#[test]
fn progress_reaches_the_end() {
    let mut last = vec![Progress::Simulating(0.0); 3];
    run(&small(3), None, &mut |i, p| last[i] = p).unwrap();
    assert_eq!(last, vec![Progress::Simulating(1.0); 3]);
}

/// Placing the initial population is reported as it goes (it took 7 s of the default run and
/// 18 s of a crowded small fleet with no sign of life before), then simulated time; neither
/// goes backwards.
#[test]
fn progress_covers_the_initial_placement_in_order() {
    let mut cfg = small(3);
    cfg.policies = vec![PolicyKind::Random];
    cfg.workload.volumes = 3000;
    let mut seen = Vec::new();
    run(&cfg, None, &mut |_, p| seen.push(p)).unwrap();
    let placing: Vec<u64> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Placing { done, total } => {
                assert_eq!(*total, 3000);
                Some(*done)
            }
            Progress::Simulating(_) => None,
        })
        .collect();
    assert_eq!(placing, [0, 1024, 2048, 3000]);
    let first_sim = seen
        .iter()
        .position(|p| matches!(p, Progress::Simulating(_)))
        .unwrap();
    assert_eq!(first_sim, placing.len(), "placing comes first: {seen:?}");
    let fractions: Vec<f64> = seen[first_sim..].iter().map(|p| p.fraction()).collect();
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert_eq!(fractions.last(), Some(&1.0));
}
