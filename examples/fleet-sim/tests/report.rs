//! What the report claims when there is nothing to measure.

use fleet_sim::{PolicyKind, SimConfig, run};

/// A run of the random policy over a small generated fleet.
fn random_run(
    years: f64,
    racks: u32,
    drives_per_rack: u32,
    servers_per_rack: u32,
    volumes: u64,
) -> SimConfig {
    let mut cfg = SimConfig {
        years,
        policies: vec![PolicyKind::Random],
        ..SimConfig::default()
    };
    cfg.fleet.racks = racks;
    cfg.fleet.drives_per_rack = drives_per_rack;
    cfg.fleet.servers_per_rack = servers_per_rack;
    cfg.workload.volumes = volumes;
    cfg
}

/// A class nothing was placed in (here: no volumes at all) has no rate. Before, its rate was
/// printed as `0.0000 (CI 0.0000–0.0000)`, a certainty that zero exposure cannot give.
#[test]
fn no_exposure_gives_no_rate_and_an_unbounded_interval() {
    let cfg = random_run(0.1, 2, 60, 1, 0);
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

/// A subnormal exposure (`--years 1e-320` gives about 3e-318 volume-years) made the scale
/// factor infinite and the rate of 0 events `0 × inf = NaN`, printed and sent as JSON `null`.
#[test]
fn a_subnormal_exposure_gives_a_rate_not_nan() {
    let rate = fleet_sim::report::Rate::new(0, 2.8e-318);
    assert_eq!(rate.per_1000_volume_years, 0.0);
    assert_eq!(rate.low, 0.0);
    assert!(rate.high > 0.0, "{rate:?}");
    let rate = fleet_sim::report::Rate::new(3, 1e-300);
    assert!(rate.per_1000_volume_years.is_finite() && rate.per_1000_volume_years > 0.0);
}

/// A run of 0.001 years has a fraction of a volume-year and bounds in the tens of thousands:
/// the text once printed them as `in 0 volume-years` and `(95% CI 0.0000–13100.0423)`. Every
/// figure now carries about three significant digits, while the JSON keeps full precision.
#[test]
fn a_tiny_run_prints_significant_digits_and_exact_json() {
    let cfg = random_run(0.001, 4, 120, 2, 300);
    let r = run(&cfg, None, &mut |_, _| {}).unwrap();
    let p = &r.policies[0];
    assert!(p.loss.volume_years > 0.0 && p.loss.volume_years < 1.0);
    let text = r.to_text();
    assert!(text.contains("0.001 years"), "{text}");
    let line = text.lines().find(|l| l.starts_with("data loss:")).unwrap();
    // The exposure, rounded to 3 significant digits, not to a whole (and wrong) `0`.
    let shown = fleet_sim::num::human(p.loss.volume_years);
    assert!(shown.starts_with("0.") && shown.len() <= 5, "{shown}");
    assert!(line.contains(&format!("in {shown} volume-years")), "{line}");
    assert!(
        line.contains(&format!(
            "(95% CI 0–{})",
            fleet_sim::num::human(p.loss.high)
        )),
        "{line}"
    );
    // No figure in the report has more than three digits after a decimal point, unless it
    // is below 0.001 (where they are its significant digits).
    for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        if let Some((whole, frac)) = word.split_once('.') {
            assert!(
                frac.len() <= 3 || whole.trim_start_matches('0').is_empty(),
                "{word} in: {text}"
            );
        }
    }
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(
        json["policies"][0]["loss"]["volume_years"].as_f64(),
        Some(p.loss.volume_years)
    );
    assert_eq!(
        json["policies"][0]["loss"]["high"].as_f64(),
        Some(p.loss.high)
    );
}

/// The charts' tick labels of a 0.001-year run were all `0.00` (fixed decimals); each tick now
/// has its own label with three significant digits.
#[test]
fn tiny_runs_get_distinct_tick_labels() {
    use fleet_sim::svg::{Series, line_chart};
    let labels = |xmax: f64| -> Vec<String> {
        let svg = line_chart(
            "t",
            "years",
            "y",
            &[Series {
                label: "a".into(),
                points: vec![(0.0, 0.0), (xmax, 1.0)],
            }],
            false,
        );
        // The x ticks: `text-anchor="middle">LABEL</text>` after each tick line.
        svg.split(r#"text-anchor="middle">"#)
            .skip(1)
            .filter_map(|s| s.split('<').next())
            .map(str::to_string)
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect()
    };
    assert_eq!(
        labels(0.001),
        ["0", "0.0002", "0.0004", "0.0006", "0.0008", "0.001"]
    );
    assert_eq!(labels(5.0), ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(labels(1000.0), ["0", "200", "400", "600", "800", "1,000"]);
}

/// A long run's counts were printed bare (`7263 drive failures`, `127557 events`) next to
/// grouped figures (`89,351 volume-years`); every count now has thousands separators.
#[test]
fn counts_are_grouped_like_the_other_figures() {
    let r = run(&random_run(200.0, 4, 120, 2, 100), None, &mut |_, _| {}).unwrap();
    let h = &r.hardware;
    assert!(h.drive_failures >= 1000, "{}", h.drive_failures);
    let text = r.to_text();
    let count = fleet_sim::num::count;
    assert!(
        text.contains(&format!(
            "hardware: {} drive failures",
            count(h.drive_failures)
        )),
        "{text}"
    );
    let p = &r.policies[0];
    assert!(p.events >= 1000);
    assert!(
        text.contains(&format!("; {} events\n", count(p.events))),
        "{text}"
    );
    // No bare run of four or more digits is left, but in the seed and in ids (drives in error
    // messages, bandwidth domains such as `r0003-tor`).
    for line in text
        .lines()
        .filter(|l| !l.starts_with("fleet:") && !l.contains("first:") && !l.contains(" through "))
    {
        let mut digits = 0;
        for c in line.chars() {
            digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
            assert!(digits < 4, "{line}");
        }
    }
}
