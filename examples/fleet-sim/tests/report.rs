//! What the report claims when there is nothing to measure.

use fleet_sim::{PolicyKind, SimConfig, run};

/// A class nothing was placed in (here: no volumes at all) has no rate. Before, its rate was
/// printed as `0.0000 (CI 0.0000–0.0000)`, a certainty that zero exposure cannot give.
#[test]
fn no_exposure_gives_no_rate_and_an_unbounded_interval() {
    let mut cfg = SimConfig {
        years: 0.1,
        policies: vec![PolicyKind::Random],
        ..SimConfig::default()
    };
    cfg.fleet.racks = 2;
    cfg.fleet.drives_per_rack = 60;
    cfg.fleet.servers_per_rack = 1;
    cfg.workload.volumes = 0;
    let r = run(&cfg, None, &mut |_, _| {}).unwrap();
    let p = &r.policies[0];
    assert_eq!(p.loss.volume_years, 0.0);
    assert_eq!(p.loss.high, f64::INFINITY);
    let text = r.to_text();
    assert!(!text.contains("–0.0000"), "{text}");
    assert!(
        text.contains("0 volume-years = no rate: no volume-years (nothing was placed)"),
        "{text}"
    );
    for c in &cfg.workload.class {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&c.name) && l.contains("no rate")),
            "{}: {text}",
            c.name
        );
    }
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert!(json["policies"][0]["loss"]["high"].is_null(), "{json}");
}

/// With exposure, the interval is finite and contains the rate.
#[test]
fn exposure_gives_a_finite_interval_around_the_rate() {
    let rate = fleet_sim::report::Rate::new(4, 2000.0);
    assert_eq!(rate.per_1000_volume_years, 2.0);
    assert!(rate.low < 2.0 && 2.0 < rate.high && rate.high.is_finite());
}
