//! The command line: bad input exits with status 2 and a message naming the field; good input
//! prints a report and writes the plots.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
}

fn small_config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        r#"
years = 0.5
engine_search_budget = 1000
[fleet]
racks = 4
drives_per_rack = 120
servers_per_rack = 2
[workload]
volumes = 300
"#,
    )
    .unwrap();
    p
}

/// The placement crate's example inventory: three racks of HDD and flash JBODs.
const EXAMPLE_INVENTORY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crates/placement/examples/inventory.toml"
);

/// Runs the simulator with `args`, which must succeed.
fn succeed(args: &[&str]) -> std::process::Output {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn expect_usage_error(args: &[&str], needle: &str) {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {err}");
    assert!(
        err.contains(needle),
        "args {args:?}: expected {needle:?} in {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "args {args:?}: one line: {err}");
    assert!(err.starts_with("fleet-sim: "), "{err}");
}

/// Every usage error is one line naming the flag (or the file, line and text) and the rule:
/// before, a flag's bad value was reported under the configuration's field name
/// (`config: years …`), clap's errors and TOML parse errors spanned five lines, and a
/// negative `--years` was "unexpected argument '-1'".
#[test]
fn usage_errors_are_one_line_naming_the_flag() {
    let exact = |args: &[&str], want: &str| {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want, "{args:?}");
    };
    exact(
        &["--years", "0"],
        "fleet-sim: --years: must be a positive number, got 0\n",
    );
    exact(
        &["--years", "-1"],
        "fleet-sim: --years: must be a positive number, got -1\n",
    );
    // The value as given, not its 309 digits.
    exact(
        &["--years", "1e308"],
        "fleet-sim: --years: must be at most 1000, got 1e308\n",
    );
    exact(
        &["--volumes", "99999999999"],
        "fleet-sim: --volumes: must be at most 50,000,000, got 99999999999\n",
    );
    // A run too large for memory blames the flag that made it so.
    let out = bin().args(["--volumes", "50000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("fleet-sim: --volumes: makes a run that would need about 60.8 GiB"),
        "{err}"
    );
    exact(
        &["--bogus"],
        "fleet-sim: unexpected argument '--bogus' found (see --help)\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "years = 0.5\n[workload]\nvolumes = \"many\"\n").unwrap();
    let path = f.to_str().unwrap();
    exact(
        &["--config", path],
        &format!(
            "fleet-sim: {path}: line 3, column 11 (`volumes = \"many\"`): invalid type: string \"many\", expected u64\n"
        ),
    );
    // A value the file breaks is named with the file.
    std::fs::write(&f, "years = 0\n").unwrap();
    exact(
        &["--config", path],
        &format!("fleet-sim: {path}: config: years must be a positive number, got 0\n"),
    );
    // A class separating by a level the inventory lacks: the class's field, said once
    // (was "workload.class class 'raid1': … (levels: )").
    let inv = dir.path().join("inv.toml");
    std::fs::write(
        &inv,
        "[[drive]]\nid = \"a\"\nkind = \"hdd\"\ncapacity = \"1 TB\"\n",
    )
    .unwrap();
    exact(
        &["--inventory", inv.to_str().unwrap(), "--years", "0.1"],
        "fleet-sim: config: workload.class[0] (\"raid1\").separation[0].level \"rack\" is not a level of the inventory (it has none)\n",
    );
    // The same rule broken by the configuration file names the file, although it is found
    // only once the fleet is built (it was "fleet-sim: config: …", without the file).
    std::fs::write(
        &f,
        "[[workload.class]]\nname = \"a\"\nweight = 1.0\nkinds = [\"hdd\"]\nsizes = [\"1 TB\"]\n\
         shape = { type = \"mirror\", legs = 2 }\nseparation = [{ level = \"row\" }]\n",
    )
    .unwrap();
    let out = bin()
        .args([
            "--config",
            path,
            "--years",
            "0.01",
            "--volumes",
            "10",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "fleet-sim: {path}: config: workload.class[0] (\"a\").separation[0].level \"row\" is not a level of the inventory"
        )),
        "{err}"
    );
    // A flag overrides the file before the rules are checked.
    let out = bin()
        .args(["--config", path, "--years", "2", "--print-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("years = 2.0"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    expect_usage_error(
        &["--policies", "engine,crush"],
        "--policies: unknown policy \"crush\", expected one of engine, straw2, random (any case)",
    );
    // Names are read in any case, as in a configuration file.
    let out = succeed(&["--policies", "Engine, RANDOM", "--print-config"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("policies = [\n    \"engine\",\n    \"random\",\n]")
    );
    expect_usage_error(&["--policies", "engine,engine"], "listed twice");
    expect_usage_error(&["--years=-1"], "--years: must be a positive number");
    expect_usage_error(&["--years", "abc"], "invalid value");
    expect_usage_error(
        &["--config", "/nonexistent/x.toml"],
        "cannot read /nonexistent/x.toml",
    );
    let bad = dir.path().join("bad.toml");
    for (text, needle) in [
        (
            "[failures]\ndrive = { distribution = \"exponential\", afr = 1.5 }\n",
            "failures.drive.afr must lie in [0, 1)",
        ),
        (
            "[fleet]\nport_bandwidth = \"12 parsecs\"\n",
            "port_bandwidth",
        ),
        ("colour = \"blue\"\n", "unknown field `colour`"),
        ("[rebuild]\nshare = 0\n", "rebuild.share"),
        (
            "[fleet]\nracks = 2\ndrives_per_rack = 60\n[[workload.class]]\nname = \"w\"\nweight = 1\nshape = { type = \"mirror\", legs = 2 }\nsizes = [\"1 TB\"]\nseparation = [{ level = \"row\" }]\n",
            "\"row\" is not a level of the inventory",
        ),
        (
            "[[workload.class]]\nname = \"wide\"\nweight = 1\nshape = { type = \"raid10\", stripes = 40, mirrors = 2 }\nsizes = [\"1 TB\"]\n",
            "has 80 members",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        expect_usage_error(
            &["--config", bad.to_str().unwrap(), "--years", "0.1"],
            needle,
        );
    }
    let inv = dir.path().join("inv.toml");
    std::fs::write(
        &inv,
        "[[drive]]\nid = \"a\"\nkind = \"hdd\"\ncapacity = \"-5\"\n",
    )
    .unwrap();
    expect_usage_error(&["--inventory", inv.to_str().unwrap()], "inv.toml");
}

/// An output path that cannot be written is refused before the simulation, not after it
/// (the run's JSON was lost after minutes of work, and the text report had been printed as if
/// all were well).
#[test]
fn an_unwritable_json_out_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "--quiet"])
        .args(["--json-out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "fleet-sim: cannot write {}: ",
            dir.path().display()
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no report before the refusal");
    // An existing file is replaced by the report, not appended to.
    let json = dir.path().join("r.json");
    std::fs::write(&json, "x".repeat(1 << 20)).unwrap();
    let (cfg, json_path) = (cfg.to_str().unwrap(), json.to_str().unwrap());
    succeed(&["--config", cfg, "--quiet", "--json-out", json_path]);
    let text = std::fs::read_to_string(&json).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap();
}

#[test]
fn runs_and_writes_report_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let svg = dir.path().join("plots");
    let json = dir.path().join("report.json");
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "--quiet", "--svg-dir"])
        .arg(&svg)
        .arg("--json-out")
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["engine", "straw2", "random"] {
        assert!(text.contains(&format!("== policy {p} ==")), "{text}");
    }
    assert!(text.contains("per 1,000 volume-years (95% CI"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["policies"].as_array().unwrap().len(), 3);
    for f in ["utilisation.svg", "losses.svg"] {
        let body = std::fs::read_to_string(svg.join(f)).unwrap();
        assert!(
            body.starts_with("<svg") && body.trim_end().ends_with("</svg>"),
            "{f}"
        );
        assert!(body.contains("straw2"), "{f} has a line per policy");
    }
}

#[test]
fn reads_an_inventory_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "years = 0.2\npolicies = [\"engine\"]\n[workload]\nvolumes = 4\n[[workload.class]]\nname = \"m\"\nweight = 1\nshape = { type = \"mirror\", legs = 2 }\nsizes = [\"100 GB\"]\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = succeed(&[
        "--config",
        cfg,
        "--inventory",
        EXAMPLE_INVENTORY,
        "--quiet",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["drives"].as_u64().unwrap() > 0);
}

/// A configuration that sizes the generated fleet together with `--inventory` is refused,
/// naming the file, the fields and the flag: the sizes were silently ignored, and the user got
/// a simulation of another fleet. The level names, which do apply to an inventory, are fine.
#[test]
fn fleet_sizes_with_an_inventory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let path = cfg.to_str().unwrap();
    std::fs::write(&cfg, "years = 0.2\n[fleet]\nracks = 40\nzones = 2\n").unwrap();
    let out = bin()
        .args([
            "--config",
            path,
            "--inventory",
            EXAMPLE_INVENTORY,
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "fleet-sim: {path}: fleet.racks, fleet.zones describe the generated fleet, which \
             --inventory replaces: remove them or drop --inventory (only fleet.jbod_level and \
             fleet.rack_level apply to an inventory)\n"
        )
    );
    assert!(out.stdout.is_empty());
    // The same file without --inventory is a valid configuration.
    succeed(&["--config", path, "--print-config"]);
    // Only the level names: accepted with the inventory.
    std::fs::write(
        &cfg,
        "[fleet]\njbod_level = \"jbod\"\nrack_level = \"rack\"\n",
    )
    .unwrap();
    succeed(&[
        "--config",
        path,
        "--inventory",
        EXAMPLE_INVENTORY,
        "--print-config",
    ]);
}

/// With stderr not a terminal (a log file, CI), progress bars are not drawn; progress is a plain
/// line per policy and tenth of each stage instead (before, a long run printed nothing until
/// the end). `--quiet` silences it.
#[test]
fn progress_is_logged_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "--policies", "random"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"fleet-sim: random: 0%: placing the initial volumes: 0 of 300"),
        "{err}"
    );
    assert!(
        lines.contains(&"fleet-sim: random: 100%: placing the initial volumes: 300 of 300"),
        "{err}"
    );
    assert!(
        lines.contains(&"fleet-sim: random: 100%: simulated 0.5 of 0.5 years"),
        "{err}"
    );
    // At most one line per tenth of each stage, and a summary.
    assert!(lines.len() <= 2 * 11 + 1, "{err}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("simulated 0.5 years of 1 policies"),
        "{err}"
    );
    let quiet = bin()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--policies",
            "random",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(quiet.stderr.is_empty());
}

/// A run that fails after its outputs were opened (a class the built fleet cannot hold) left an
/// empty `--json-out` file and an empty `--svg-dir` behind; what the run created is removed,
/// and an existing file is left as it was.
#[test]
fn a_failed_run_leaves_no_output_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("late.toml");
    std::fs::write(
        &cfg,
        "[[workload.class]]\nname = \"a\"\nweight = 1.0\nkinds = [\"hdd\"]\nsizes = [\"1 TB\"]\n\
         shape = { type = \"mirror\", legs = 2 }\nseparation = [{ level = \"row\" }]\n",
    )
    .unwrap();
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("charts"));
    let kept = dir.path().join("kept.json");
    std::fs::write(&kept, "before").unwrap();
    for out_path in [&json, &kept] {
        let out = bin()
            .args(["--config", cfg.to_str().unwrap(), "--quiet"])
            .args(["--years", "0.01", "--volumes", "10"])
            .args(["--json-out", out_path.to_str().unwrap()])
            .args(["--svg-dir", svg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not a level of the inventory"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!svg.exists(), "the --svg-dir this run created is left");
    }
    assert!(!json.exists(), "the --json-out this run created is left");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "before");
}

/// Tried as a new user would: `--volumes 1e6` and `--seed -1` gave Rust's "invalid digit found
/// in string", `--years abc` "invalid float literal", stating no rule; and a 100,000-character
/// value was echoed whole. Each is one line naming the flag and the rule, the value quoted short.
#[test]
fn flag_values_name_the_rule() {
    let long = "x".repeat(100_000);
    let whole = "must be a whole number from 0 to 18446744073709551615";
    expect_usage_error(
        &["--volumes", "1e6"],
        &format!("'1e6' for '--volumes <VOLUMES>': {whole}"),
    );
    expect_usage_error(
        &["--seed", "-1"],
        &format!("'-1' for '--seed <SEED>': {whole}"),
    );
    expect_usage_error(
        &["--years", "abc"],
        "'abc' for '--years <YEARS>': must be a number of years, e.g. 5 or 0.5",
    );
    let out = bin().args(["--years", &long]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.len() < 300, "{} bytes", out.stderr.len());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "fleet-sim: invalid value {:?}… (100000 bytes) for '--years <YEARS>': must be a number of years, e.g. 5 or 0.5 (see --help)\n",
            &long[..64]
        )
    );
    let out = bin().args(["--config", &long]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.len() < 400, "{} bytes", out.stderr.len());
    // A long path keeps its last component (it showed only its first 256 characters).
    let deep = format!("/{}/fleet-tail.toml", "d".repeat(1000));
    let out = bin().args(["--config", &deep]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.len() < 400 && err.contains("/fleet-tail.toml"), "{err}");
    // A newline in a path broke the one-line message in two.
    expect_usage_error(
        &["--config", "no\nsuch.toml"],
        r#"fleet-sim: cannot read "no\nsuch.toml": "#,
    );
}
