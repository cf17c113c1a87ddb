//! `local demo` runs end to end and reports every step as passed.

use std::process::Command;

#[test]
fn demo_succeeds_and_prints_one_line_per_step() {
    let out = Command::new(env!("CARGO_BIN_EXE_local"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("[done] demo: every step succeeded"),
        "{stdout}"
    );
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    for step in [
        "CreateVolume demo-data",
        "CreateSnapshot demo-snap",
        "CreateVolume demo-restore",
        "ControllerExpandVolume",
    ] {
        assert!(stdout.contains(step), "missing step {step}:\n{stdout}");
    }
    if csi_node::is_root() {
        assert!(
            stdout.contains("[ok  ] a write to the read-only clone fails"),
            "{stdout}"
        );
        assert!(
            stdout.contains("[ok  ] read hello.txt back from the read-only clone"),
            "{stdout}"
        );
    } else {
        eprintln!("not root: the demo ran its controller steps only");
        assert!(stdout.contains("[skip]"), "{stdout}");
    }
}

#[test]
fn a_temporary_directory_whose_path_is_not_utf8_is_refused_naming_tmpdir() {
    use std::os::unix::ffi::OsStrExt;
    let parent = tempfile::tempdir().unwrap();
    let odd = parent.path().join(std::ffi::OsStr::from_bytes(b"tmp-\xff"));
    std::fs::create_dir(&odd).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_local"))
        .arg("demo")
        .env("TMPDIR", &odd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("[FAIL] make a temporary directory"),
        "{stdout}"
    );
    assert!(
        stdout.contains("TMPDIR") && stdout.contains("not UTF-8"),
        "{stdout}"
    );
    // Nothing was made at the path's lossy copy (U+FFFD for the byte), where the driver
    // staged and published before; the demo's own directory is gone.
    let names: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [odd.file_name().unwrap()]);
    assert_eq!(std::fs::read_dir(&odd).unwrap().count(), 0);
}

#[test]
fn help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_local"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--endpoint",
        "--state-dir",
        "--node-id",
        "--capacity",
        "--max-volumes-per-node",
        "--topology",
        "demo",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}:\n{text}");
    }
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(["--capacity", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--capacity"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(["--topology", "zone"])
        .arg("--state-dir")
        .arg(dir.path())
        .args([
            "--endpoint",
            &format!("unix://{}/s.sock", dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--topology \"zone\": expected key=value")
    );
}
