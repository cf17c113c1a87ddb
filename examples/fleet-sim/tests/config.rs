//! Configuration rules that keep a run finite.

use fleet_sim::{SimConfig, SimError};

fn refused(cfg: &SimConfig) -> (String, String) {
    match cfg.validate() {
        Err(SimError::Config { field, rule }) => (field, rule),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// A tiny sampling interval made the run spin through billions of samples while its memory
/// grew (140 MB after 12 s for half a year at 1e-6 days, with no end in sight).
#[test]
fn sampling_interval_is_bounded_by_the_sample_count() {
    let mut cfg = SimConfig {
        years: 0.5,
        sample_days: 1e-6,
        ..SimConfig::default()
    };
    let (field, rule) = refused(&cfg);
    assert_eq!(field, "sample_days");
    assert_eq!(
        rule,
        "must be at least 0.0001825 days for 0.5 years (at most 1,000,000 utilisation samples), got 0.000001"
    );
    cfg.sample_days = 0.0001825;
    cfg.validate().unwrap();
}

/// A tiny mean lifetime made arrivals (volumes / lifetime per unit time) endless.
#[test]
fn arrivals_are_bounded() {
    let mut cfg = SimConfig {
        years: 0.5,
        ..SimConfig::default()
    };
    cfg.workload.volumes = 300;
    cfg.workload.mean_lifetime_days = 1e-9;
    let (field, rule) = refused(&cfg);
    assert_eq!(field, "workload.mean_lifetime_days");
    assert!(
        rule.starts_with("of 0.000000001 days gives about 5.475e13 arrivals of 300 volumes in 0.5 years; at most 250,000,000"),
        "{rule}"
    );
    // 0 (never depart) and the defaults are fine.
    cfg.workload.mean_lifetime_days = 0.0;
    cfg.validate().unwrap();
    SimConfig::default().validate().unwrap();
}

/// A fleet whose raw capacity passes 2^64 bytes is refused: the totals wrapped (a release
/// build printed 17,553 PB raw for four 9 EB drives, 36,000 PB) or panicked (debug).
#[test]
fn total_capacity_must_fit_in_64_bits() {
    use fleet_sim::config::{FleetConfig, MediumConfig};
    use placement::DriveKind;
    let mut cfg = SimConfig {
        years: 0.1,
        policies: vec![fleet_sim::PolicyKind::Random],
        ..SimConfig::default()
    };
    cfg.workload.volumes = 10;
    cfg.fleet = FleetConfig {
        racks: 1,
        drives_per_rack: 4,
        servers_per_rack: 1,
        media: vec![MediumConfig {
            kind: DriveKind::Hdd,
            share: 1.0,
            capacities: vec![fleet_sim::units::ByteSize::new(9_000_000_000_000_000_000)],
            rpm: 7200,
        }],
        ..FleetConfig::default()
    };
    match fleet_sim::run(&cfg, None, &mut |_, _| {}) {
        Err(SimError::Inventory(msg)) => assert_eq!(
            msg,
            "the drives' total capacity is 36.0 EB; the simulator counts bytes in 64 bits (at most 18.4 EB)"
        ),
        other => panic!("expected an inventory error, got {other:?}"),
    }
    // Two such drives (18 EB) fit.
    cfg.fleet.drives_per_rack = 2;
    let r = fleet_sim::run(&cfg, None, &mut |_, _| {}).unwrap();
    assert_eq!(r.capacity_bytes, 18_000_000_000_000_000_000);
}

/// Server counts are bounded like drive counts (they were not: 80,000,000 servers were
/// generated as inventory entries until memory ran out), and both errors give the count.
#[test]
fn fleet_size_is_bounded_with_the_count() {
    let mut cfg = SimConfig::default();
    cfg.fleet.racks = 4;
    cfg.fleet.servers_per_rack = 20_000_000;
    assert_eq!(
        refused(&cfg),
        (
            "fleet.servers_per_rack".to_string(),
            "gives 80000000 servers over 4 racks; at most 10,000,000".to_string()
        )
    );
    cfg.fleet.servers_per_rack = 1;
    cfg.fleet.drives_per_rack = 3_000_000;
    assert_eq!(
        refused(&cfg),
        (
            "fleet.drives_per_rack".to_string(),
            "gives 12000000 drives over 4 racks; at most 10,000,000".to_string()
        )
    );
}

/// The count bounds alone let through runs far above the 24 GiB a run may use (measured about
/// 2 KB per drive of the default mix, 4 KB per all-flash drive under three policies, 1.2 KB per
/// volume): 10,000,000 SSDs, or 50,000,000 volumes. Such runs are refused before anything is
/// built, naming the field with the largest share and the estimate. No test builds them.
#[test]
fn runs_estimated_above_the_memory_limit_are_refused() {
    use fleet_sim::config::{MEMORY_LIMIT, MediumConfig};
    use placement::DriveKind;
    // The largest population the count bounds allow.
    let mut cfg = SimConfig::default();
    cfg.workload.volumes = 50_000_000;
    cfg.workload.mean_lifetime_days = 0.0;
    let (field, rule) = refused(&cfg);
    assert_eq!(field, "workload.volumes");
    assert_eq!(
        rule,
        "makes a run that would need about 60.8 GiB of memory, above the 24 GiB a run may use \
         (estimated: 0.2 GiB for 100000 drives, 15000 of them solid-state, 0.0 GiB for 10000 \
         servers, 60.5 GiB for 50000000 volumes, under 3 policies)"
    );
    // One policy needs less: the engine alone fits 25,000,000 volumes.
    cfg.policies = vec![fleet_sim::PolicyKind::Engine];
    cfg.workload.volumes = 25_000_000;
    cfg.validate().unwrap();
    // The largest fleet the count bounds allow, all solid-state: every policy's slice
    // allocator holds every drive.
    let mut cfg = SimConfig::default();
    cfg.fleet.racks = 10_000;
    cfg.fleet.servers_per_rack = 1;
    cfg.fleet.media = vec![MediumConfig {
        kind: DriveKind::Ssd,
        share: 1.0,
        capacities: vec![fleet_sim::units::ByteSize::new(7_680_000_000_000)],
        rpm: 0,
    }];
    let (field, rule) = refused(&cfg);
    assert_eq!(field, "fleet.drives_per_rack");
    assert!(
        rule.contains("for 10000000 drives, 10000000 of them solid-state"),
        "{rule}"
    );
    // The same fleet of HDDs fits.
    cfg.fleet.media[0].kind = DriveKind::Hdd;
    cfg.validate().unwrap();
    let e = cfg.memory_estimate(10_000_000, 0, 10_000);
    assert!(e.total < MEMORY_LIMIT as f64 && e.total > 15e9, "{e:?}");
    // An inventory is checked with its own counts.
    assert!(cfg.check_memory(100_000, 100_000, 10_000).is_ok());
    assert!(matches!(
        cfg.check_memory(20_000_000, 0, 0),
        Err(SimError::Config { field, .. }) if field == "fleet.drives_per_rack"
    ));
}

/// Zones beyond the racks would be empty domains: `zones = 4294967295` generated them for ever
/// (a million took 55 s and 750 MB) before anything was simulated. Only zones that get a rack
/// are generated; with fewer zones than racks, racks are still dealt round-robin.
#[test]
fn only_zones_that_hold_a_rack_are_generated() {
    let mut cfg = SimConfig::default();
    cfg.fleet.racks = 3;
    cfg.fleet.drives_per_rack = 4;
    cfg.fleet.zones = 1_000_000;
    cfg.validate().unwrap();
    let zones = |cfg: &SimConfig| -> Vec<String> {
        let spec = fleet_sim::fleet::generate(&cfg.fleet, 1).unwrap();
        spec.domains
            .iter()
            .filter(|d| d.level == "zone")
            .map(|d| d.id.to_string())
            .collect()
    };
    assert_eq!(zones(&cfg), ["z0", "z1", "z2"]);
    cfg.fleet.zones = 2;
    assert_eq!(zones(&cfg), ["z0", "z1"]);
}

/// A drive capacity above the placement inventory's integer range is refused as the
/// configuration's field (it was refused by the generated inventory, naming a drive the user
/// never wrote: "inventory: drive 'r0000-j00-d00': capacity must be at most ...").
#[test]
fn drive_capacities_fit_the_inventory() {
    let mut cfg = SimConfig::default();
    cfg.fleet.media[1].capacities = vec![fleet_sim::units::ByteSize::new(u64::MAX)];
    assert_eq!(
        refused(&cfg),
        (
            "fleet.media[1].capacities".to_string(),
            "must be at most 9223372036854775807 bytes (the placement inventory's integer range), \
             got 18446744073709551615"
                .to_string()
        )
    );
    cfg.fleet.media[1].capacities = vec![fleet_sim::units::ByteSize::new(i64::MAX as u64)];
    cfg.validate().unwrap();
}

/// An inventory file is checked with its own counts: here the configuration's tiny generated
/// fleet and 19,500,000 volumes fit (23.6 GiB), and 100,000 SSDs read as an inventory take the
/// run past 24 GiB. Refused before the fleet is built (the test allocates the inventory only).
#[test]
fn an_inventory_is_checked_for_memory_with_its_own_counts() {
    use fleet_sim::config::{FleetConfig, MediumConfig};
    use placement::DriveKind;
    let ssd = FleetConfig {
        racks: 100,
        drives_per_rack: 1000,
        servers_per_rack: 1,
        media: vec![MediumConfig {
            kind: DriveKind::Ssd,
            share: 1.0,
            capacities: vec![fleet_sim::units::ByteSize::new(7_680_000_000_000)],
            rpm: 0,
        }],
        ..FleetConfig::default()
    };
    let inventory = fleet_sim::fleet::generate(&ssd, 1).unwrap();
    let mut cfg = SimConfig::default();
    cfg.fleet.zones = 1;
    cfg.fleet.racks = 1;
    cfg.fleet.drives_per_rack = 1;
    cfg.fleet.servers_per_rack = 1;
    cfg.workload.volumes = 19_500_000;
    cfg.validate().unwrap();
    match fleet_sim::run(&cfg, Some(inventory), &mut |_, _| {}) {
        Err(SimError::Inventory(msg)) => assert_eq!(
            msg,
            "this inventory makes a run that would need about 24.1 GiB of memory, above the 24 \
             GiB a run may use (estimated: 0.4 GiB for 100000 drives, 100000 of them \
             solid-state, 0.0 GiB for 100 servers, 23.6 GiB for 19500000 volumes, under 3 \
             policies)"
        ),
        other => panic!("expected the inventory to be refused, got {other:?}"),
    }
}

/// "Every field is optional in a configuration file": a failure table that sets only some of
/// its fields keeps the defaults of the others (`[failures.jbod]` with only `afr` was refused
/// for a missing `repair_hours`, and `[failures.drive]` with only `afr` for a missing
/// `distribution`). Unknown fields are still refused.
#[test]
fn a_failure_table_may_set_some_of_its_fields() {
    let cfg = SimConfig::from_toml(
        "[failures.jbod]\nafr = 0.02\n[failures.drive]\nafr = 0.03\n[failures.rack]\nrepair_hours = 6.0\n",
    )
    .unwrap();
    let d = SimConfig::default().failures;
    assert_eq!(cfg.failures.jbod.afr, 0.02);
    assert_eq!(cfg.failures.jbod.repair_hours, d.jbod.repair_hours);
    assert_eq!(cfg.failures.drive.afr, 0.03);
    assert_eq!(cfg.failures.drive.distribution, d.drive.distribution);
    assert_eq!(cfg.failures.drive.shape, d.drive.shape);
    assert_eq!(cfg.failures.rack.afr, d.rack.afr);
    assert_eq!(cfg.failures.rack.repair_hours, 6.0);
    assert_eq!(cfg.failures.server, d.server);
    assert_eq!(cfg.failures.drive_replace_hours, d.drive_replace_hours);
    // What --print-config writes reads back as the same configuration.
    let full = SimConfig::default();
    let text = toml::to_string(&full).unwrap();
    assert_eq!(SimConfig::from_toml(&text).unwrap(), full);
    let err = SimConfig::from_toml("[failures.jbod]\nafr = 0.02\nrepair = 3.0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `repair`"), "{err}");
}

/// A file with a 100,000-character value of the wrong type was echoed whole twice in the
/// one-line error (200 kB on stderr); the line and TOML's message are shortened.
#[test]
fn a_long_bad_line_is_quoted_short() {
    let long = "x".repeat(100_000);
    let e = SimConfig::from_toml(&format!("years = \"{long}\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.len() < 400, "{} bytes: {}", e.len(), &e[..400]);
    assert!(e.starts_with("line 1, column 9 (`years = \"xxxx"), "{e}");
    // The line: `years = "` and 55 x of its 100,010 bytes.
    assert!(
        e.contains(&format!(
            "{}… (100010 bytes)`): invalid type: string",
            "x".repeat(55)
        )),
        "{e}"
    );
    assert_eq!(e.matches(" bytes)").count(), 2, "{e}");
}

/// A class name of 100,000 characters was echoed whole in the field of every error about its
/// class ("workload.class[0] ('nnn…').weight"); it is quoted short as every input is.
#[test]
fn a_long_class_name_is_quoted_short() {
    let name = "n".repeat(100_000);
    let mut cfg = SimConfig::default();
    cfg.workload.class[0].name = name.clone();
    cfg.workload.class[0].weight = -1.0;
    let (field, _) = refused(&cfg);
    assert_eq!(
        field,
        format!(
            "workload.class[0] ({:?}… (100000 bytes)).weight",
            &name[..64]
        )
    );
}

/// The names a configuration gives (a medium's `kind`, a class's `kinds`, `policies`, the drive
/// failure `distribution`, the rebuild `model`) were read only in lowercase, while placement
/// reads drive health, and the composer its inventory values, in any case: `kind = "NVMe"` was
/// refused. They are read in any ASCII case and still written in lowercase.
#[test]
fn names_are_read_in_any_case() {
    let mut text = toml::to_string(&SimConfig::default()).unwrap();
    for (from, to) in [
        ("kind = \"nvme\"", "kind = \"NVMe\""),
        ("\"straw2\"", "\" Straw2 \""),
        (
            "distribution = \"exponential\"",
            "distribution = \"Exponential\"",
        ),
        ("model = \"bandwidth\"", "model = \"FIXED\""),
    ] {
        assert!(text.contains(from), "{from}");
        text = text.replacen(from, to, 1);
    }
    let cfg = SimConfig::from_toml(&text).unwrap();
    assert_eq!(cfg.fleet.media[2].kind, placement::DriveKind::Nvme);
    assert_eq!(cfg.policies[1], fleet_sim::PolicyKind::Straw2);
    assert_eq!(
        cfg.failures.drive.distribution,
        fleet_sim::config::Distribution::Exponential
    );
    assert_eq!(cfg.rebuild.model, fleet_sim::config::RebuildModel::Fixed);
    let again = toml::to_string(&cfg).unwrap();
    assert!(again.contains("kind = \"nvme\"") && again.contains("model = \"fixed\""));

    let e = SimConfig::from_toml("[rebuild]\nmodel = \"fluid\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown rebuild model \"fluid\", expected one of bandwidth, fixed (any case)"),
        "{e}"
    );
}

/// A class name with a newline broke the one-line error about its class in two, and control
/// characters reached the terminal raw; the name is quoted with them escaped.
#[test]
fn a_class_name_with_control_characters_is_escaped() {
    let mut cfg = SimConfig::default();
    cfg.workload.class[0].name = "a\nb\x1b[2J".to_string();
    cfg.workload.class[0].weight = -1.0;
    let (field, _) = refused(&cfg);
    assert_eq!(field, r#"workload.class[0] ("a\nb\u{1b}[2J").weight"#);
}

/// A negative or too large count was serde's "invalid value: integer `-3`, expected u32",
/// naming a Rust type instead of the rule; it states the range.
#[test]
fn counts_out_of_range_state_the_rule() {
    for (text, want) in [
        (
            "[fleet]\nracks = -3\n",
            "line 2, column 9 (`racks = -3`): must be a whole number from 0 to 4294967295, got -3",
        ),
        (
            "[fleet]\nracks = 5000000000\n",
            "line 2, column 9 (`racks = 5000000000`): must be a whole number from 0 to 4294967295, got 5000000000",
        ),
        (
            "seed = -1\n",
            "line 1, column 8 (`seed = -1`): must be a whole number from 0 to 18446744073709551615, got -1",
        ),
    ] {
        let e = SimConfig::from_toml(text).unwrap_err().to_string();
        assert_eq!(e, want, "{text}");
    }
}
