//! The `fleet_report` example as a user runs it: a bad `--ops` is one line and status 2
//! before any work, and a closed standard output ends the run quietly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The example binary, built next to this test by `cargo test` (examples are compiled with
/// the tests: `target/<profile>/examples/fleet_report`).
fn fleet_report() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile
        .join("examples")
        .join(format!("fleet_report{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run the whole `cargo test -p slice-alloc`, which builds the examples",
        bin.display()
    );
    // A `cargo test --test fleet_report` builds no examples and would run an old binary.
    let source =
        std::fs::metadata(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet_report.rs"))
            .unwrap()
            .modified()
            .unwrap();
    let built = std::fs::metadata(&bin).unwrap().modified().unwrap();
    assert!(
        built >= source,
        "{} is older than its source: run the whole `cargo test -p slice-alloc` or `cargo build -p slice-alloc --example fleet_report`",
        bin.display()
    );
    bin
}

/// `--ops 0` printed a table of `NaN M` rates (no operations in no time) and `--ops 2` rates
/// of `inf M`: too few operations to time are refused before any work.
#[test]
fn too_few_operations_are_refused() {
    for ops in ["0", "1", "999"] {
        let out = Command::new(fleet_report())
            .args(["--ops", ops, "--only", "slice-alloc"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--ops {ops}");
        assert!(out.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "fleet_report: --ops must be at least 1000 (fewer are too quick to time), got {ops}\n"
            )
        );
    }
}

/// Reading the first line and closing the pipe (`fleet_report | head -1`) made the report's
/// next `println!` panic with status 101; it now ends quietly with status 0.
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let mut child = Command::new(fleet_report())
        .args([
            "--ops",
            "1000",
            "--only",
            "slice-alloc",
            "--policy",
            "extent",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("workload: "), "{first}");
    // The reader is dropped: the table is written to a closed pipe.
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tried as a new user would: `--help` was an unknown argument (status 2); `cargo bench`, which
/// passes `--bench` to every bench binary, failed on this report (`benches/fleet.rs`) the same
/// way; and a 100,000-character value was echoed whole.
#[test]
fn help_bench_and_long_values() {
    let out = Command::new(fleet_report()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(
            "Usage: fleet_report [--ops N] [--policy extent|largest-extent] [--only NAME]"
        ),
        "{help}"
    );
    // `--bench` is accepted: the error is about the next flag.
    let out = Command::new(fleet_report())
        .args(["--bench", "--ops", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "fleet_report: --ops must be at least 1000 (fewer are too quick to time), got 5\n"
    );
    let long = "x".repeat(100_000);
    for flag in ["--ops", "--policy", "--only", &long] {
        let out = Command::new(fleet_report())
            .args([flag, &long])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag:.10}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.len() < 400, "{flag:.10}: {} bytes", err.len());
        assert!(
            err.contains(&format!("{:?}… (100000 bytes)", &long[..64])),
            "{flag:.10}: {err:.400}"
        );
    }
}
