//! The command line: create, status, rebuild with a progress bar, scrub,
//! and a clear message for bad input.

mod common;

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn create_status_rebuild_scrub() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 4, 8 << 20);
    drop(devs);
    let spare = dir.path().join("spare");
    std::fs::File::create(&spare)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let m: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();

    let (ok, out, err) = run(&[
        &[
            "create",
            "--level",
            "raid10:o2",
            "--chunk",
            "64K",
            "--resync",
        ][..],
        &m,
    ]
    .concat());
    assert!(ok, "{err}");
    assert!(out.contains("raid10 o2"), "{out}");

    let (ok, out, err) = run(&[&["status"][..], &m].concat());
    assert!(ok, "{err}");
    assert_eq!(out.matches("Active").count(), 4, "{out}");

    let (ok, out, err) = run(&[
        &[
            "rebuild",
            "--role",
            "2",
            "--rate",
            "512M",
            "--replacement",
            spare.to_str().unwrap(),
        ][..],
        &m,
    ]
    .concat());
    assert!(ok, "{err}");
    assert!(out.contains("rebuilt role 2"), "{out}");
    assert!(err.contains("100.0%"), "no progress bar: {err}");
    // Not a terminal: one line per tenth, no redraws.
    assert!(
        !err.contains('\r'),
        "a log gets lines, not redraws: {err:?}"
    );
    let bars = err.lines().filter(|l| l.contains("MiB/s")).count();
    assert!((1..=11).contains(&bars), "{bars} progress lines: {err}");

    // Role 2 now lives on the spare.
    let mut m2 = m.clone();
    m2[2] = spare.to_str().unwrap();
    let (ok, out, err) = run(&[&["scrub"][..], &m2].concat());
    assert!(ok, "{err}");
    assert!(out.contains(" 0 mismatches"), "{out}");

    // The replaced device no longer belongs to role 2.
    let (ok, _, err) = run(&[&["status"][..], &m].concat());
    assert!(!ok);
    assert!(err.contains("another device has since taken over"), "{err}");

    let (ok, _, err) = run(&[&["create", "--level", "raid7"][..], &m].concat());
    assert!(!ok);
    assert!(err.contains("raid7"), "{err}");
    // A polling window out of range is refused, naming the option, before
    // anything is mounted.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (flag, field) in [
        ("--poll-us=1001", "adaptive_poll"),
        ("--busy-poll-us=1000001", "busy_poll"),
    ] {
        let (ok, _, err) =
            run(&[&["expose", "--mount", mnt.to_str().unwrap(), flag][..], &m2].concat());
        assert!(!ok, "{flag}");
        assert!(err.contains(field), "{flag}: {err}");
    }
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}
