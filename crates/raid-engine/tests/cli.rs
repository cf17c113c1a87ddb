//! The command line: create, status, rebuild with a progress bar, scrub,
//! and a clear message for bad input.

mod common;

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = run_code(args);
    (code == 0, out, err)
}

/// The exit code, stdout and stderr.
fn run_code(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().expect("killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the command and reads the first line it writes to stderr (a
/// server's "serving NBD on", or the error that ended it).
fn started(args: &[&str]) -> (Started, String) {
    use std::io::BufRead;
    let mut child = Started(
        Command::new(env!("CARGO_BIN_EXE_raid-engine"))
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// A `raid-engine` process started by a test, killed (by its PID) when the test ends without
/// having waited for it: a failing assertion leaves no server running.
struct Started(std::process::Child);

impl std::ops::Deref for Started {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Started {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `status` and `scrub` on a whole, a degraded and a data-losing member
/// set: what they print and their exit codes (0, 3 cannot start, 4 scrub
/// incomplete); a volume that cannot start is inspected without a write.
#[test]
fn status_and_scrub_on_whole_degraded_and_failed_volumes() {
    let files = common::MemberFiles::new(4, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(
        &[
            &[
                "create",
                "--level",
                "raid10",
                "--chunk",
                "64K",
                "--data-offset",
                "2048",
                "--resync",
            ][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: whole"), "{out}");
    assert_eq!(out.matches("Active").count(), 4, "{out}");
    let (code, out, err) = run_code(&[&["scrub"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(" 0 mismatches") && !out.contains("not checked"),
        "{out}"
    );
    let size: u64 = out
        .split(" of ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no volume size in {out}"));
    assert!(out.contains(&format!("checked {size} of {size}")), "{out}");

    // Roles 2 and 3 missing: both copies of the odd chunks are gone. The
    // members are examined without a write and every role is shown.
    let before = common::metadata(&m);
    let (code, out, err) = run_code(&["status", m[0], m[1]]);
    assert_eq!(code, 3, "{out}{err}");
    for want in [
        "role 0: Active",
        "role 1: Active",
        "role 2: Missing",
        "role 3: Missing",
        "state: cannot start",
        "roles 2 and 3 hold both copies of the odd chunks",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    assert!(err.contains("cannot start"), "{err}");
    let (code, out, err) = run_code(&["status", m[0]]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("role 1: Missing"), "{out}");
    for args in [&["scrub", m[0], m[1]][..], &["scrub", m[0]][..]] {
        let (code, out, err) = run_code(args);
        assert_eq!(code, 3, "{args:?}: {out}{err}");
        assert!(!out.contains("mismatches"), "{args:?}: {out}");
        assert!(
            err.contains("cannot start the raid10 n2 volume") && err.contains("role 2 (missing)"),
            "{args:?}: {err}"
        );
    }
    assert!(
        common::metadata(&m) == before,
        "a refused command wrote to a member"
    );

    // Role 3 missing: degraded but whole.
    let (code, out, err) = run_code(&["status", m[0], m[1], m[2]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: degraded: role 3 (missing)"), "{out}");
    assert!(common::metadata(&m) == before, "status wrote to a member");
    // Scrubbing it with --run starts it without role 3: the even chunks have two
    // copies, the odd ones one.
    let (code, out, err) = run_code(&["scrub", "--run", m[0], m[1], m[2]]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!("{} bytes not checked (degraded)", size / 2)),
        "{out}"
    );
    assert!(
        out.contains(&format!("checked {} of {size}", size / 2)),
        "{out}"
    );
    assert!(err.contains("scrub incomplete"), "{err}");
    // Role 3 missed that start: it is recorded failed until re-added.
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("role 3: Faulty"), "{out}");
    assert!(
        out.contains("state: degraded: role 3 (recorded failed)"),
        "{out}"
    );
    let (code, _, err) = run_code(&[&["readd", "--role", "3"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_code(&[&["scrub"][..], &m].concat());
    assert_eq!(code, 0, "{out}{err}");

    // No redundancy: nothing can be compared.
    let (code, _, err) = run_code(&["create", "--level", "raid0", "--force", m[0], m[1]]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_code(&["scrub", m[0], m[1]]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("bytes not checked (no redundancy"), "{out}");
    let (code, out, _) = run_code(&["status", m[1]]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("the only copy"), "{out}");

    let (code, out, _) = run_code(&["status", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Exit codes") && out.contains("3  the volume cannot start"),
        "{out}"
    );
}

/// An empty replacement device of `bytes` in `dir`.
fn spare_file(dir: &std::path::Path, bytes: u64) -> std::path::PathBuf {
    let spare = dir.join("spare");
    std::fs::File::create(&spare)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    spare
}

#[test]
fn create_status_rebuild_scrub() {
    let files = common::MemberFiles::new(4, 8 << 20);
    let dir = &files.dir;
    let spare = spare_file(dir.path(), 8 << 20);
    let m = files.args();

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
}

/// `rebuild` of an active role fails it first; when it holds the last copy
/// (a RAID1 started without its other leg) that is refused, saying why,
/// and the role stays active.
#[test]
fn rebuild_refuses_to_fail_the_last_copy() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let dir = &files.dir;
    let spare = spare_file(dir.path(), 8 << 20);
    let m = files.args();
    let (ok, _, err) = run(&[&["create", "--level", "raid1", "--resync"][..], &m].concat());
    assert!(ok, "{err}");

    // Role 1 is not given: the volume runs on role 0 alone.
    let (code, _, err) = run_code(&[
        "rebuild",
        "--run",
        "--role",
        "0",
        "--replacement",
        spare.to_str().unwrap(),
        m[0],
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("role 0 is active and cannot be failed to be replaced")
            && err.contains("failing role 0 of the ")
            && err.contains(&format!("role 0 ({}, if failed)", m[0]))
            && err.contains("no byte has a copy left"),
        "{err}"
    );
    let (ok, out, err) = run(&["status", m[0]]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("Active").count(), 1, "{out}");
}

/// `scrub` of a RAID6 with one member missing checks every byte against
/// the parity it has left (exit 0, was 4), finds a byte changed behind its
/// back (exit 1) and repairs it; with two missing nothing is left to check
/// against (exit 4).
#[test]
fn scrub_checks_a_raid6_with_one_member_missing() {
    let files = common::MemberFiles::new(5, 4 << 20);
    let m = files.args();
    let (code, _, err) = run_code(
        &[
            &[
                "create",
                "--level",
                "raid6",
                "--chunk",
                "16K",
                "--data-offset",
                "2048",
                "--resync",
            ][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");

    // Role 4 missing.
    let (code, out, err) = run_code(&["scrub", "--run", m[0], m[1], m[2], m[3]]);
    assert_eq!(code, 0, "{out}{err}");
    let size: u64 = out
        .split(" of ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no volume size in {out}"));
    assert!(
        out.contains(&format!("checked {size} of {size}")) && out.contains(" 0 mismatches"),
        "{out}"
    );
    assert!(!out.contains("not checked"), "{out}");
    assert!(
        out.contains("degraded: role 4 unavailable; readd or rebuild it"),
        "{out}"
    );

    // A byte of role 1's data area changed: whatever role 1 holds in that
    // stripe, the remaining parity no longer matches.
    let mut bytes = std::fs::read(m[1]).unwrap();
    bytes[(1 << 20) + 100] ^= 0x5a;
    std::fs::write(m[1], &bytes).unwrap();
    let (code, out, err) = run_code(&["scrub", m[0], m[1], m[2], m[3]]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(" 1 mismatches") && out.contains("at 0 "),
        "{out}"
    );
    assert!(err.contains("mismatches found"), "{err}");
    let (code, out, err) = run_code(&["scrub", "--repair", m[0], m[1], m[2], m[3]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 1 mismatches (repaired)"), "{out}");
    let (code, out, err) = run_code(&["scrub", m[0], m[1], m[2], m[3]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 mismatches"), "{out}");

    // Roles 3 and 4 missing: no redundancy left.
    let (code, out, err) = run_code(&["scrub", "--run", m[0], m[1], m[2]]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!("{size} bytes not checked (degraded)")),
        "{out}"
    );
    assert!(err.contains("scrub incomplete"), "{err}");
}

/// A `rebuild` with a wrong argument changes nothing: a bad `--rate`, a
/// replacement too small, or a replacement that is another member of the
/// volume in use (a rebuild onto it would overwrite that member) is refused
/// before the role is failed; the volume stays whole, every byte checks,
/// and a refused command (like a `readd` of a role that does not exist)
/// still closes the volume cleanly.
#[test]
fn rebuild_with_a_wrong_argument_changes_nothing() {
    let files = common::MemberFiles::new(4, 8 << 20);
    let dir = &files.dir;
    let spare = spare_file(dir.path(), 8 << 20);
    let small = dir.path().join("small");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let m = files.args();
    let (code, _, err) = run_code(
        &[
            &["create", "--level", "raid6", "--chunk", "64K", "--resync"][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");

    let whole = |what: &str| {
        let (code, out, err) = run_code(&[&["status"][..], &m].concat());
        assert_eq!(code, 0, "{what}: {out}{err}");
        assert_eq!(out.matches("Active").count(), 4, "{what}: {out}");
        assert!(out.contains("state: whole"), "{what}: {out}");
        assert!(!out.contains("not shut down cleanly"), "{what}: {out}");
    };
    let untouched = |p: &std::path::Path| {
        assert!(
            std::fs::read(p).unwrap().iter().all(|&b| b == 0),
            "{} was written",
            p.display()
        );
    };
    let spare = spare.to_str().unwrap();
    // A value typed wrong exits 2 (usage), one the volume refuses 1.
    for (args, want, exit) in [
        (
            vec!["--replacement", spare, "--rate", "fast"],
            "--rate: \"fast\" is not a size",
            2,
        ),
        (
            vec!["--replacement", small.to_str().unwrap()],
            "member 1 needs at least",
            1,
        ),
        (
            vec!["--replacement", m[2]],
            "holds role 2 of this volume, which is in use",
            1,
        ),
    ] {
        let args = [&["rebuild", "--role", "1"][..], &args, &m].concat();
        let (code, out, err) = run_code(&args);
        assert_eq!(code, exit, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.contains("rebuilt"), "{args:?}: {out}");
        whole(&format!("after {args:?}"));
        untouched(std::path::Path::new(spare));
        untouched(&small);
    }
    let (code, out, err) = run_code(&[&["scrub"][..], &m].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 mismatches"), "{out}");

    let (code, _, err) = run_code(&[&["readd", "--role", "9"][..], &m].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("9 is not below the member count 4"), "{err}");
    whole("after a refused readd");
    // Role 2's device not given: the message says what to give, and the
    // volume is not started without it (before, role 2 was recorded failed).
    let (code, _, err) = run_code(&["readd", "--role", "2", m[0], m[1], m[3]]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("role 2 of the volume is not given") && err.contains("--run"),
        "{err}"
    );
    whole("after a readd without the role's device");
}

/// `create` refuses one device given twice (by the same path, or by a
/// link to it), naming both places, and a data offset too large for any
/// device, without a panic. The refused create leaves the devices' old
/// metadata as it was: a member of a volume given twice by mistake stays
/// that volume's member (before, its superblock was overwritten by the
/// check).
#[test]
fn create_refuses_a_device_given_twice_and_a_huge_data_offset() {
    let files = common::MemberFiles::new(3, 8 << 20);
    let (dir, paths) = (&files.dir, &files.paths);
    let link = dir.path().join("link-to-m1");
    std::os::unix::fs::symlink(&paths[1], &link).unwrap();
    let m = files.args();
    let link = link.to_str().unwrap();
    let (code, _, err) = run_code(&["create", "--level", "raid1", m[1], m[2]]);
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&m);
    for (level, members) in [
        ("raid5", vec![m[0], m[1], m[1], m[2]]),
        ("raid1", vec![m[1], link]),
    ] {
        // Forced: m1 is a member of the RAID1 above.
        let args = [&["create", "--force", "--level", level][..], &members].concat();
        let (code, out, err) = run_code(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains("is the same device as devices[") && err.contains("give each member once"),
            "{args:?}: {err}"
        );
        assert!(common::metadata(&m) == before, "{args:?}: metadata changed");
        let (code, out, err) = run_code(&["status", m[1], m[2]]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(
            out.contains("2 members, raid1") && out.contains("state: whole"),
            "{out}"
        );
    }
    let (code, out, err) = run_code(&[
        "create",
        "--force",
        "--level",
        "raid1",
        "--data-offset",
        "18446744073709551615",
        m[0],
        m[2],
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("data offset"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `serve-nbd` refuses one export name given twice (the server would
/// serve the last one under it) before it serves anything.
#[test]
fn serve_nbd_refuses_an_export_name_given_twice() {
    let files = common::MemberFiles::new(2, 1 << 20);
    let paths = &files.paths;
    let d0 = format!("d0={}", paths[0].display());
    let d0_again = format!("d0={}", paths[1].display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args([
            "serve-nbd",
            "--listen",
            "127.0.0.1:0",
            "--export",
            &d0,
            "--export",
            &d0_again,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that accepted the arguments runs until stopped: not a
    // timing check, only a guard so that the test fails instead of hanging.
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if status.is_none() {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A usage error: what was typed cannot be served.
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "still serving: {err}"
    );
    assert!(
        err.contains("--export \"d0\": the export name is given twice"),
        "{err}"
    );
    assert!(!err.contains("serving NBD"), "{err}");
}

/// Serve `path` over NBD from this process through a member that fails
/// reads once armed; the URL the command line opens it by.
fn serve_failing(
    path: &std::path::Path,
) -> (
    raid_engine::nbd::ServerHandle,
    std::sync::Arc<common::FailingReads>,
    String,
) {
    use raid_engine::nbd::{AllowList, Export, NbdServer};
    let file = raid_engine::FileDevice::open(path, raid_engine::CacheMode::Buffered).unwrap();
    let failing = common::FailingReads::new(std::sync::Arc::new(file));
    let server = NbdServer::bind("127.0.0.1:0").unwrap();
    server
        .add_export(Export {
            name: "bad".into(),
            device: failing.clone(),
            allow: AllowList::Any,
            read_only: false,
        })
        .unwrap();
    let h = server.spawn().unwrap();
    let url = format!("nbd://127.0.0.1:{}/bad", h.local_addr().port());
    (h, failing, url)
}

/// `scrub` with a member whose reads fail: the member is marked failed,
/// the scrub carries on from the others (every byte of a three-way mirror
/// is still checked), the output names the member and says the volume is
/// now degraded, the exit code is 1 (an I/O error), and the others'
/// superblocks record the member failed. Before, the scrub stopped at the
/// error.
#[test]
fn scrub_marks_a_member_whose_reads_fail_and_carries_on() {
    let files = common::MemberFiles::new(3, 4 << 20);
    let paths = &files.paths;
    let (_server, failing, url) = serve_failing(&paths[1]);
    let m = [paths[0].to_str().unwrap(), &url, paths[2].to_str().unwrap()];
    let (code, _, err) = run_code(
        &[
            &[
                "create",
                "--level",
                "raid1",
                "--data-offset",
                "2048",
                "--resync",
            ][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    failing.fail_reads_from(3 << 20);

    let (code, out, err) = run_code(&[&["scrub"][..], &m].concat());
    assert_eq!(code, 1, "{out}{err}");
    let size: u64 = out
        .split(" of ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no volume size in {out}"));
    assert!(
        out.contains(&format!("checked {size} of {size}")) && out.contains(" 0 mismatches"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "role 1 ({url:?}) failed during the scrub (read error: server error 5 "
        )) && out.matches(&url).count() == 1
            && out.contains("degraded: role 1 unavailable; readd or rebuild it"),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "role 1 ({url:?}) failed during the scrub and is now marked failed: the volume is degraded"
        )),
        "{err}"
    );
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("role 1: Faulty (recorded failed) {url:?}"))
            && !out.contains("not shut down cleanly"),
        "{out}"
    );
}

/// `create --resync` whose resync fails (the first copy's member fails its
/// reads) exits 1 naming the member, and still closes the volume: the
/// superblocks record that member failed and a clean shutdown, and the
/// volume starts degraded from the others. Before, the members were left
/// recorded as not shut down cleanly, with the failed member still active.
#[test]
fn create_resync_that_fails_closes_the_volume() {
    let files = common::MemberFiles::new(3, 4 << 20);
    let paths = &files.paths;
    let (_server, failing, url) = serve_failing(&paths[0]);
    failing.fail_reads_from(1 << 20);
    let m = [&url, paths[1].to_str().unwrap(), paths[2].to_str().unwrap()];
    let (code, out, err) = run_code(
        &[
            &[
                "create",
                "--level",
                "raid1",
                "--data-offset",
                "2048",
                "--resync",
            ][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("--resync: ") && err.contains(&format!("member 0 ({url:?}): read")),
        "{err}"
    );
    assert!(out.contains("role 0: Failed"), "{out}");
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("role 0: Faulty (recorded failed) {url:?}"))
            && !out.contains("not shut down cleanly"),
        "{out}"
    );
    let (code, out, err) = run_code(&["scrub", m[1], m[2]]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `status` with a member whose superblock cannot be read (wiped, a file
/// that does not exist, a device failing its reads) lists it as
/// unreadable with the reason and still describes the volume from the
/// others, then exits 1 naming it (3 when the others cannot start the
/// volume). Before, it printed only the first member's error.
#[test]
fn status_describes_the_rest_when_a_superblock_is_unreadable() {
    let files = common::MemberFiles::new(4, 4 << 20);
    let (dir, paths) = (&files.dir, &files.paths);
    let (_server, failing, url) = serve_failing(&paths[3]);
    let m = [
        paths[0].to_str().unwrap(),
        paths[1].to_str().unwrap(),
        paths[2].to_str().unwrap(),
        &url,
    ];
    let (code, _, err) =
        run_code(&[&["create", "--level", "raid6", "--chunk", "16K"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    // Role 1's superblock wiped, role 3's device failing every read.
    let mut bytes = std::fs::read(m[1]).unwrap();
    bytes[4096..8192].fill(0);
    std::fs::write(m[1], &bytes).unwrap();
    failing.fail_reads_from(0);
    let before = common::metadata(&[m[0], m[2]]);
    let gone = dir.path().join("gone");
    let gone = gone.to_str().unwrap();
    let (code, out, err) = run_code(&["status", m[0], m[1], m[2], &url, gone]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("4 members, raid6")
            && out.contains(&format!("role 0: Active {}", m[0]))
            && out.contains(&format!("role 2: Active {}", m[2]))
            && out.contains("role 1: Missing")
            && out.contains("role 3: Missing")
            && out.contains(&format!(
                "unreadable: member {}: no raid-engine superblock",
                m[1]
            ))
            && out.contains(&format!("unreadable: {url:?}: read superblock: "))
            && out.contains(&format!("unreadable: {gone}: No such file"))
            && out.contains("state: degraded: role 1 (missing), role 3 (missing) unavailable"),
        "{out}"
    );
    assert!(
        err.contains("unreadable members: ") && err.contains(m[1]) && err.contains(&url),
        "{err}"
    );
    // Nothing was written.
    assert_eq!(common::metadata(&[m[0], m[2]]), before);
    // Without role 2 as well, the others cannot start it: exit 3.
    let (code, out, err) = run_code(&["status", m[0], m[1]]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("unreadable: member ") && out.contains("state: cannot start"),
        "{out}"
    );
}

/// `create` over a device that holds a member of an existing volume is
/// refused before anything is written, naming the device, its role and
/// the volume (mdadm asks first); `--force` creates over it. Before, the
/// volume was overwritten without a word.
#[test]
fn create_refuses_a_member_of_another_volume_without_force() {
    let files = common::MemberFiles::new(4, 8 << 20);
    let dir = &files.dir;
    let m = files.args();
    let key = dir.path().join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let key = key.to_str().unwrap();
    let (code, _, err) = run_code(&[
        "create",
        "--level",
        "raid5",
        "--chunk",
        "64K",
        "--secret-file",
        key,
        m[0],
        m[1],
        m[2],
    ]);
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&m);
    let (code, out, err) = run_code(&["create", "--level", "raid1", m[3], m[1]]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "devices[1] ({}) holds role 1 of an existing raid5 left-symmetric volume of 3 members",
            m[1]
        )) && err.contains("encrypted")
            && err.contains("give --force"),
        "{err}"
    );
    assert!(common::metadata(&m) == before, "a refused create wrote");
    let (code, out, err) = run_code(&["status", m[0], m[1], m[2]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("state: whole"), "{out}");
    let (code, out, err) = run_code(&["create", "--force", "--level", "raid1", m[3], m[1]]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_code(&["status", m[3], m[1]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 members, raid1") && out.contains("state: whole"),
        "{out}"
    );
}

/// A reader that leaves early (`raid-engine rebuild ... | head -1`) does
/// not make the command panic: it finishes its work, closes the volume
/// and exits with its own status. Before, the first line printed to the
/// closed pipe panicked (exit 101) in the middle of the command, before
/// the volume was closed.
#[test]
fn a_closed_stdout_does_not_panic_the_command() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let dir = &files.dir;
    let m = files.args();
    let spare = spare_file(dir.path(), 8 << 20);
    let closed = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = closed(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = closed(&[&["status"][..], &m].concat());
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = closed(
        &[
            &[
                "rebuild",
                "--role",
                "1",
                "--replacement",
                spare.to_str().unwrap(),
            ][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The rebuild finished and closed the volume.
    let (code, out, err) = run_code(&["status", m[0], spare.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("state: whole") && !out.contains("not shut down cleanly"),
        "{out}"
    );
}

/// `--level single` takes exactly one member, as documented; with more it
/// is refused before anything is opened. Before, two members made a RAID1
/// without a word.
#[test]
fn create_single_takes_one_member() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, out, err) = run_code(&["create", "--level", "single", m[0], m[1]]);
    assert_eq!(code, 2, "a usage error: {out}{err}");
    assert!(
        err.contains("--level single takes exactly 1 member, got 2"),
        "{err}"
    );
    assert!(
        common::metadata(&m)
            .iter()
            .all(|b| b.iter().all(|&x| x == 0)),
        "written"
    );
    let (code, out, err) = run_code(&["create", "--level", "single", m[0]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 members"), "{out}");
}

/// A member count the level does not take is said of the MEMBERS
/// arguments, not of the library's `devices` field (before: "invalid
/// devices: raid6 left-symmetric needs 4..=200 members, got 2"), and
/// nothing is written.
#[test]
fn a_wrong_member_count_names_the_members_arguments() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    for (level, given, rule) in [
        (
            "raid6",
            &m[..],
            "raid6 left-symmetric needs 4..=200 members, got 2",
        ),
        ("raid10", &m[..1], "raid10 n2 needs 2..=200 members, got 1"),
    ] {
        let (code, out, err) = run_code(&[&["create", "--level", level][..], given].concat());
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(
            err.trim(),
            format!("raid-engine: the MEMBERS arguments: {rule}"),
            "{level}"
        );
    }
    assert!(
        common::metadata(&m)
            .iter()
            .all(|b| b.iter().all(|&x| x == 0)),
        "written"
    );
}

/// A member left off the command line is not recorded failed behind the
/// user's back: a command that starts the volume without a role that was
/// in sync refuses, naming the role and `--run`, and writes nothing (as
/// mdadm refuses to assemble an array with fewer members than last time
/// unless given --run); with `--run` it starts degraded and records the
/// role failed. Before, `scrub m0` of a 2-member raid1 left role 1
/// "Faulty (recorded failed)" until readded.
#[test]
fn a_member_left_off_is_refused_unless_run_is_given() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1", "--resync"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&m);
    for args in [
        &["scrub", m[0]][..],
        &["scrub", "--repair", m[1]],
        &["readd", "--role", "0", m[1]],
    ] {
        let (code, out, err) = run_code(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        let role = if args.contains(&m[0]) { 1 } else { 0 };
        assert_eq!(
            err.trim(),
            format!(
                "raid-engine: role {role} of the volume is not given (in sync when the volume \
                 last ran): give every member, or --run to start the volume degraded without it \
                 (recorded failed; back only by readd or rebuild)"
            ),
            "{args:?}"
        );
        assert!(common::metadata(&m) == before, "{args:?} wrote to a member");
    }
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("Active").count(), 2, "{out}");

    // With --run: started degraded, role 1 recorded failed, and a scrub of
    // role 0 alone no longer needs --run (nothing more is recorded).
    let (code, out, err) = run_code(&["scrub", "--run", m[0]]);
    assert_eq!(code, 4, "{out}{err}");
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("role 1: Faulty (recorded failed)"), "{out}");
    let (code, out, err) = run_code(&["scrub", m[0]]);
    assert_eq!(code, 4, "{out}{err}");
    let (code, out, err) = run_code(&[&["readd", "--role", "1"][..], &m].concat());
    assert_eq!(code, 0, "{out}{err}");

    // A rebuild of the role left off (its drive is dead) needs no --run:
    // that role is the one being replaced.
    let spare = spare_file(files.dir.path(), 8 << 20);
    let spare = spare.to_str().unwrap();
    let (code, out, err) = run_code(&["rebuild", "--role", "1", "--replacement", spare, m[0]]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_code(&["status", m[0], spare]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: whole"), "{out}");
}

/// `serve-nbd` names the `--export` at fault when its path cannot be
/// served (missing, empty, a directory) or its name breaks NBD's rule.
/// Before, the message was the bare OS error (`: No such file or
/// directory` for an empty path).
#[test]
fn serve_nbd_names_the_export_at_fault() {
    let files = common::MemberFiles::new(1, 1 << 20);
    let (dir, paths) = (&files.dir, &files.paths);
    let missing = format!("a={}", dir.path().join("missing").display());
    let a_dir = format!("a={}", dir.path().display());
    let unnamed = format!("={}", paths[0].display());
    let p = paths[0].display();
    let (no_ip, trailing, host) = (
        format!("a={p}@"),
        format!("a={p}@10.0.0.1+"),
        format!("a={p}@jbod1"),
    );
    // Exit 2 for what cannot be read as NAME=PATH[@IP+IP] (usage), 1 for
    // an export the file or the server refuses (the operation failed).
    for (spec, rule, exit) in [
        (missing.as_str(), "No such file", 1),
        ("a=", "PATH is empty", 2),
        ("a", "expected NAME=PATH[@IP+IP]", 2),
        (a_dir.as_str(), "Is a directory", 1),
        (unnamed.as_str(), "export name", 1),
        (
            no_ip.as_str(),
            "an empty address in the allow-list after @",
            2,
        ),
        (
            trailing.as_str(),
            "an empty address in the allow-list after @",
            2,
        ),
        (host.as_str(), "\"jbod1\" is not an IP address", 2),
    ] {
        let (code, out, err) =
            run_code(&["serve-nbd", "--listen", "127.0.0.1:0", "--export", spec]);
        assert_eq!(code, exit, "{spec}: {out}{err}");
        // Named by the export's name once it has one: its path is named
        // by the error about it, once.
        let flag = match spec.split_once('=') {
            Some((name, _)) => format!("{name:?}"),
            None => format!("{spec:?}"),
        };
        assert!(
            err.contains(&format!("raid-engine: --export {flag}: ")) && err.contains(rule),
            "{spec}: {err}"
        );
        if let Some((_, path)) = spec.split_once('=')
            && !path.is_empty()
        {
            let path = path.split('@').next().unwrap();
            assert!(
                err.matches(path).count() <= 1,
                "{path} more than once: {err}"
            );
        }
    }
    // A long export is quoted short, not echoed whole (before: a 100 kB
    // line).
    let long = format!(
        "{}={}",
        "n".repeat(100_000),
        dir.path().join("missing").display()
    );
    let (code, out, err) = run_code(&["serve-nbd", "--listen", "127.0.0.1:0", "--export", &long]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with(&format!("raid-engine: --export {:?}… (", &long[..64]))
            && err.contains("No such file"),
        "{err}"
    );
    assert!(err.len() < 400, "too long: {err}");
    // An address to listen on that is not HOST:PORT is typed wrong: exit
    // 2 naming --listen and the form, before binding (was 1, found only
    // by the bind, "nbd: bind nonsense: ...").
    let spec = format!("a={p}");
    for listen in ["nonsense", "127.0.0.1:", ":10809", "127.0.0.1:99999", ""] {
        let (code, _, err) = run_code(&["serve-nbd", "--listen", listen, "--export", &spec]);
        assert_eq!(code, 2, "{listen}: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "raid-engine: --listen: {listen:?} is not HOST:PORT (a HOST:PORT to listen on, like 0.0.0.0:10809)"
            ),
            "{listen}"
        );
    }
    // Well-formed but in use, or a host that does not resolve (quoted
    // short: before, a long one was echoed whole): the operation failed
    // (exit 1).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    let long = format!("{}.invalid:10809", "h".repeat(100_000));
    for (listen, shown) in [
        (in_use.clone(), format!("{in_use:?}")),
        (
            long.clone(),
            format!("{:?}… ({} bytes)", &long[..64], long.len()),
        ),
    ] {
        let (code, _, err) = run_code(&["serve-nbd", "--listen", &listen, "--export", &spec]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.starts_with(&format!("raid-engine: --listen {shown}: "))
                && err.contains("HOST:PORT"),
            "{err}"
        );
        assert!(err.len() < 400, "too long: {err}");
    }
}

/// An empty device path, as a member or as `--replacement`, is refused
/// saying so (and a replacement that cannot be opened names
/// `--replacement`), before anything is written. Before, the message was
/// `: No such file or directory`.
#[test]
fn an_empty_device_path_is_refused_by_name() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let dir = &files.dir;
    let m = files.args();
    // Typed wrong: exit 2 (before: 1, as if the operation had failed).
    let (code, out, err) = run_code(&["create", "--level", "raid1", m[0], ""]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(r#"raid-engine: member "": an empty device path"#),
        "{err}"
    );
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let missing = dir.path().join("missing");
    for (replacement, status, said) in [
        (
            "",
            2,
            r#"raid-engine: --replacement "": an empty device path"#,
        ),
        (missing.to_str().unwrap(), 1, "raid-engine: --replacement: "),
    ] {
        let (code, out, err) = run_code(
            &[
                &["rebuild", "--role", "1", "--replacement", replacement][..],
                &m,
            ]
            .concat(),
        );
        assert_eq!(code, status, "{out}{err}");
        assert!(err.starts_with(said), "{err}");
        assert!(status == 2 || err.contains("No such file"), "{err}");
    }
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: whole"), "{out}");
}

/// SIGTERM during a `rebuild` stops it at its next step: the command exits
/// 1 saying how far it got, the volume is closed cleanly with the role
/// still failed (its replacement not in sync), and a second `rebuild`
/// completes it. Before, the signal killed the process, leaving the
/// members recorded as not shut down cleanly.
#[test]
fn sigterm_interrupts_a_rebuild_and_closes_the_volume() {
    use std::io::BufRead;
    let files = common::MemberFiles::new(3, 16 << 20);
    let dir = &files.dir;
    let spare = spare_file(dir.path(), 16 << 20);
    let spare = spare.to_str().unwrap();
    let m = files.args();
    let (code, _, err) =
        run_code(&[&["create", "--level", "raid5", "--chunk", "64K"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    // Throttled to 1 MiB/s (15 seconds): still running when the signal
    // comes right after its first progress line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args(
            [
                &[
                    "rebuild",
                    "--role",
                    "1",
                    "--replacement",
                    spare,
                    "--rate",
                    "1M",
                ][..],
                &m,
            ]
            .concat(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains('%'), "{first}");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}: {err}");
    assert!(
        err.contains("rebuild of role 1 interrupted by a signal (stopped after ")
            && err.contains("run rebuild again"),
        "{err}"
    );
    let given = [m[0], spare, m[2]];
    let (code, out, err) = run_code(&[&["status"][..], &given].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("role 1: Spare (not in sync) {spare}"))
            && !out.contains("not shut down cleanly"),
        "{out}"
    );
    let (code, out, err) = run_code(
        &[
            &["rebuild", "--role", "1", "--replacement", spare][..],
            &given,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_code(&[&["scrub"][..], &given].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 mismatches"), "{out}");
}

/// A second process writing the members of a volume in use is refused:
/// while `serve-nbd` serves a member file, `scrub --repair` and `rebuild`
/// on it exit 1 saying the file is in use by another process, and change
/// nothing; once the server is gone they run. `status` (read only) runs
/// all along. Before, both processes wrote the same members.
#[test]
fn a_member_in_use_by_another_process_is_refused() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let dir = &files.dir;
    let m = files.args();
    let spare = spare_file(dir.path(), 8 << 20);
    let spare = spare.to_str().unwrap();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let export = format!("d0={}", m[0]);
    let (mut server, line) =
        started(&["serve-nbd", "--listen", "127.0.0.1:0", "--export", &export]);
    assert!(line.contains("serving NBD"), "{line}");
    let before = common::metadata(&[m[0], m[1], spare]);
    for args in [
        &["scrub", "--repair"][..],
        &["rebuild", "--role", "1", "--replacement", spare][..],
        &["create", "--force", "--level", "raid1"][..],
    ] {
        let (code, out, err) = run_code(&[args, &m].concat());
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("{} is in use by another process", m[0])),
            "{args:?}: {err}"
        );
    }
    assert!(
        common::metadata(&[m[0], m[1], spare]) == before,
        "a refused command wrote"
    );
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{out}{err}");
    let st = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(server.wait().unwrap().success());
    let (code, out, err) = run_code(&[&["scrub", "--repair"][..], &m].concat());
    assert_eq!(code, 0, "{out}{err}");
}

/// `status` over members that contradict each other (two volumes mixed
/// up) lists every member with its own superblock's view (role, volume
/// uuid, layout, event count) and names every member that contradicts the
/// newest superblock, exiting 1. Before, it printed nothing but the first
/// contradiction.
#[test]
fn status_lists_every_member_when_they_contradict_each_other() {
    let a = common::MemberFiles::new(2, 8 << 20);
    let b = common::MemberFiles::new(2, 8 << 20);
    let (a, b) = (a.args(), b.args());
    for m in [&a, &b] {
        let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], m].concat());
        assert_eq!(code, 0, "{err}");
    }
    // Volume b's superblocks are the newest: role 1 failed and rebuilt.
    let (code, _, err) = run_code(&["rebuild", "--role", "1", "--replacement", b[1], b[0], b[1]]);
    assert_eq!(code, 0, "{err}");
    let uuid = |m: &str| {
        // Degraded (one member of two given): exit 0.
        let (code, out, err) = run_code(&["status", m]);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .find_map(|l| l.strip_prefix("volume "))
            .unwrap_or_else(|| panic!("no uuid in {out}"))
            .to_string()
    };
    let (ua, ub) = (uuid(a[0]), uuid(b[0]));
    assert_ne!(ua, ub);

    let mixed = [a[0], b[0], a[1], b[1]];
    let (code, out, err) = run_code(&[&["status"][..], &mixed].concat());
    assert_eq!(code, 1, "{out}{err}");
    for (m, role, u) in [
        (a[0], 0, &ua),
        (b[0], 0, &ub),
        (a[1], 1, &ua),
        (b[1], 1, &ub),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{m}:")))
            .unwrap_or_else(|| panic!("{m} not listed: {out}"));
        assert!(
            line.contains(&format!("role {role} of volume {u} (raid1, 2 members")),
            "{line}"
        );
    }
    // Both members of the older volume contradict the newest superblock.
    for m in [a[0], a[1]] {
        assert!(
            err.contains(&format!("{m}: belongs to another volume (array uuid {ua}")),
            "{m} not named: {err}"
        );
    }
    assert!(!err.contains(&format!("{}: belongs", b[0])), "{err}");
}

/// A member given three times is said once, with the count (before:
/// "role 0 given twice (also m0)" once per extra copy); one given by two
/// paths names both; nothing is written.
#[test]
fn a_member_given_several_times_is_said_once_with_the_count() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&files.paths);
    let (code, out, err) = run_code(&["status", m[0], m[0], m[0]]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.matches("given").count(), 1, "{err}");
    assert!(
        err.contains(&format!("member {}: given 3 times (role 0)", m[0])),
        "{err}"
    );
    let link = files.dir.path().join("link");
    std::os::unix::fs::symlink(m[0], &link).unwrap();
    let link = link.to_str().unwrap();
    let (code, out, err) = run_code(&["status", m[0], link, m[1]]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.matches("given").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "member {}: role 0 given 2 times (also as {link})",
            m[0]
        )),
        "{err}"
    );
    assert_eq!(err.matches(m[0]).count(), 1, "{err}");
    assert!(common::metadata(&files.paths) == before, "written");
}

/// Bad option values are told by the flag the user typed, with its rule,
/// never by the library's field (`adaptive_poll`, `chunk_sectors`,
/// `data_offset_sectors`), and a negative number is told it must not be
/// negative instead of being taken for an unknown flag. An `expose`
/// refused after the volume was assembled (a bad `--name`, a `--mount`
/// that is not an empty directory) closes it cleanly: before, the volume
/// was left recorded as not shut down cleanly.
#[test]
fn option_errors_name_the_flags_typed() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let mnt = files.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.to_str().unwrap();
    let not_a_dir = files.dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let empty = files.dir.path().join("empty-secret");
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_str().unwrap();
    let empty_rule = format!("--secret-file {empty}: must be 16 to 1024 bytes long, got 0 bytes");
    let secret = files.dir.path().join("secret");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    let secret = secret.to_str().unwrap();
    let not_encrypted =
        format!("--secret-file {secret}: a secret was given but the volume is not encrypted");
    let cases: &[(&[&str], i32, &[&str], &str)] = &[
        (
            &["scrub", "--secret-file", secret],
            1,
            &[&not_encrypted],
            "encryption:",
        ),
        (
            &["status", "--secret-file", secret],
            1,
            &[&not_encrypted],
            "encryption:",
        ),
        (
            &[
                "create",
                "--force",
                "--level",
                "raid1",
                "--secret-file",
                empty,
            ],
            1,
            &[&empty_rule],
            "invalid secret",
        ),
        (
            &["expose", "--mount", mnt, "--poll-us=1001"],
            2,
            &["--poll-us", "1000 µs"],
            "adaptive_poll",
        ),
        (
            &["expose", "--mount", mnt, "--poll-us", "-1"],
            2,
            &["--poll-us", "must not be negative"],
            "unexpected argument",
        ),
        (
            &["expose", "--mount", mnt, "--busy-poll-us=1000001"],
            2,
            &["--busy-poll-us", "1000000 µs"],
            "busy_poll",
        ),
        (
            &["expose", "--mount", mnt, "--name", "a/b"],
            2,
            &["--name: \"a/b\" must be a plain file name"],
            "invalid name",
        ),
        (
            &["expose", "--mount", not_a_dir.to_str().unwrap()],
            1,
            &["--mount: ", "must be an existing empty directory"],
            "mountpoint",
        ),
        (
            &["create", "--force", "--level", "raid0", "--chunk", "0"],
            1,
            &["--chunk 0 (0 sectors): "],
            "chunk_sectors",
        ),
        (
            &["create", "--force", "--level", "raid0", "--chunk", "3"],
            1,
            &["--chunk 3 (6 sectors): ", "multiple of 8 sectors"],
            "chunk_sectors",
        ),
        (
            &[
                "create",
                "--force",
                "--level",
                "raid0",
                "--data-offset",
                "3",
            ],
            1,
            &["--data-offset: 3 sectors leave no room"],
            "data_offset_sectors",
        ),
        (
            &["create", "--force", "--level", "raid5", "--chunk", "4G"],
            1,
            &[
                "(devices[0]): ",
                "do not exceed the data offset",
                "mdadm's default for these members and --chunk 4G",
            ],
            "dev_sectors",
        ),
        (
            &[
                "create",
                "--force",
                "--level",
                "raid0",
                "--data-offset",
                "-3",
            ],
            2,
            &["--data-offset", "must not be negative"],
            "unexpected argument",
        ),
        (
            &["rebuild", "--role", "9", "--replacement", m[1]],
            1,
            &["--role 9: 9 is not below the member count 2"],
            "--replacement",
        ),
        (
            &["rebuild", "--role", "-1", "--replacement", m[1]],
            2,
            &["--role", "must not be negative"],
            "unexpected argument",
        ),
        (
            &["readd", "--role", "5"],
            1,
            &["--role 5: 5 is not below the member count 2"],
            "invalid role",
        ),
    ];
    for (args, want_code, wants, not) in cases {
        let (code, out, err) = run_code(&[args, &m[..]].concat());
        assert_eq!(code, *want_code, "{args:?}: {out}{err}");
        for want in *wants {
            assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        }
        assert!(!err.contains(not), "{args:?}: {not:?} in {err}");
        // Nothing mounted, and the volume still clean.
        assert!(std::fs::read_dir(mnt).unwrap().next().is_none());
        let (code, out, err) = run_code(&[&["status"][..], &m].concat());
        assert_eq!(code, 0, "{err}");
        assert!(
            !out.contains("not shut down cleanly"),
            "after {args:?}: {out}"
        );
    }
}

/// An NBD member whose address has no port (or no host, or a port that is
/// not a number), or whose export name is empty or longer than NBD allows,
/// is typed wrong: exit 2, one line naming the member (quoted short) and
/// the rule, before anything is opened (before: exit 1, as if the
/// operation had failed, and a long name echoed whole). A well-formed
/// address that cannot be reached is an operation that failed: exit 1.
#[test]
fn malformed_nbd_addresses_say_what_is_expected() {
    let long = format!("nbd://127.0.0.1:10809/{}", "x".repeat(5000));
    for (uri, rule) in [
        ("nbd://nohost/x", r#"address "nohost" is not HOST:PORT"#),
        ("nbd://", r#"address "" is not HOST:PORT"#),
        ("nbd://:10809/x", r#"address ":10809" is not HOST:PORT"#),
        (
            "nbd://127.0.0.1:/x",
            r#"address "127.0.0.1:" is not HOST:PORT"#,
        ),
        (
            "nbd://127.0.0.1:nbd/x",
            r#"address "127.0.0.1:nbd" is not HOST:PORT"#,
        ),
        ("nbd://127.0.0.1:10809/", "the export name is empty"),
        ("nbd://127.0.0.1:10809", "the export name is empty"),
        (&long, "the export name of 5000 bytes is too long"),
    ] {
        let files = common::MemberFiles::new(1, 8 << 20);
        let before = common::metadata(&files.paths);
        for args in [
            vec!["status", uri],
            vec!["create", "--level", "raid1", files.args()[0], uri],
        ] {
            let (code, out, err) = run_code(&args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            let line = err.trim_end();
            assert!(!line.contains('\n'), "{args:?}: more than one line: {err}");
            assert!(line.len() < 300, "{args:?}: too long: {err}");
            let member = if uri.len() > 100 {
                format!("{:?}… ({} bytes)", &uri[..64], uri.len())
            } else {
                format!("{uri:?}")
            };
            assert!(
                line.starts_with(&format!("raid-engine: member {member}: {rule}")),
                "{args:?}: {err}"
            );
        }
        assert!(common::metadata(&files.paths) == before, "{uri} wrote");
    }
    // Well-formed, but nobody listens there: the operation failed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("nbd://127.0.0.1:{port}/x");
    let (code, out, err) = run_code(&["status", &uri]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&uri), "{err}");
}

/// An encrypted volume given no secret, or the wrong one, is told by
/// `--secret-file` (was `encryption: ...`, naming no flag).
#[test]
fn a_wrong_or_missing_secret_names_secret_file() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let secret = |name: &str, byte: u8| {
        let p = files.dir.path().join(name);
        std::fs::write(&p, [byte; 32]).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (right, wrong) = (secret("right", 1), secret("wrong", 2));
    let (code, _, err) = run_code(
        &[
            &["create", "--level", "raid1", "--secret-file", &right][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_code(&[&["scrub"][..], &m].concat());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "the volume is encrypted: a secret is required: give it with --secret-file FILE"
        ),
        "{err}"
    );
    // status needs no secret, but checks one given.
    for cmd in ["scrub", "status"] {
        let (code, _, err) = run_code(&[&[cmd, "--secret-file", &wrong][..], &m].concat());
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("--secret-file {wrong}: the secret does not match")),
            "{cmd}: {err}"
        );
    }
    let (code, out, err) = run_code(&[&["scrub", "--secret-file", &right][..], &m].concat());
    assert_eq!(code, 0, "{out}{err}");
}

/// `--run` belongs to the commands that start an existing volume (expose,
/// rebuild, readd, scrub): `status` (never starts it) and `create` (starts
/// a new one) refuse it as a usage error (exit 2) naming the flag, before
/// anything is read or written, instead of accepting and ignoring it.
#[test]
fn run_is_refused_where_nothing_is_started() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (ok, _, err) = run(&[&["create", "--level", "raid1"][..], &m].concat());
    assert!(ok, "{err}");
    for cmd in [
        &["status", "--run"][..],
        &["create", "--level", "raid1", "--force", "--run"],
    ] {
        let (code, out, err) = run_code(&[cmd, &m].concat());
        assert_eq!(code, 2, "{cmd:?}: {out}{err}");
        assert!(err.contains("--run"), "{cmd:?}: {err}");
        assert!(out.is_empty(), "{cmd:?}: {out}");
    }
    // Still taken where the volume is started.
    let (code, _, err) = run_code(&[&["scrub", "--run"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
}

/// Sizes and levels typed wrong, as a new user types them, are each told
/// in one line naming the flag and the rule, and nothing is written: a
/// negative `--chunk` or `--rate` (before: clap's "unexpected argument
/// '-1'", as if it were a flag), one too large for 64 bits (before: "not a
/// size"), a level that does not exist (before: the `raid` crate's list
/// without `linear` and `single`, and no flag named) and a layout with a
/// typo (before: no flag named). Each exits 2, a usage error as clap's
/// own for `--role x` (before: 1, as if the operation had failed).
#[test]
fn sizes_and_levels_typed_wrong_name_the_flag_and_the_rule() {
    // `--help` says which is which.
    let (code, help, _) = run_code(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("2  usage: what was typed cannot be read")
            && help.contains("1  the operation failed"),
        "{help}"
    );
    let files = common::MemberFiles::new(3, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m[..2]].concat());
    assert_eq!(code, 0, "{err}");
    let spare = m[2];
    let before = common::metadata(&files.paths);
    let create = |level: &'static str, chunk: &'static str| -> Vec<&'static str> {
        vec!["create", "--force", "--level", level, "--chunk", chunk]
    };
    let rebuild = |rate: &'static str| -> Vec<&str> {
        vec![
            "rebuild",
            "--role",
            "1",
            "--replacement",
            spare,
            "--rate",
            rate,
        ]
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            create("raid5", "-1"),
            "--chunk: \"-1\" must not be negative (a size: a whole number with optional K, M or G)",
        ),
        (
            create("raid5", "99999999999999999999"),
            "--chunk: \"99999999999999999999\" is too large (at most 18446744073709551615 bytes)",
        ),
        (
            create("raid5", "18014398509481984"),
            "--chunk: \"18014398509481984\" is too large",
        ),
        (
            create("raid5", "-64K"),
            "--chunk: \"-64K\" must not be negative",
        ),
        (
            create("raid5", "--resync"),
            "--chunk: \"--resync\" is not a size (a whole number with optional K, M or G): was the value left out?",
        ),
        (create("raid5", "1e20"), "--chunk: \"1e20\" is not a size"),
        (create("raid5", "NaN"), "--chunk: \"NaN\" is not a size"),
        (create("raid5", "K"), "--chunk: \"K\" is not a size"),
        (
            create("raid7", "64K"),
            "--level: \"raid7\" is not one of linear (or jbod), single, raid0, raid1, raid4, raid5, raid6, raid10",
        ),
        (
            create("raid5:left-symetric", "64K"),
            r#"--level: layout "left-symetric" is not a valid md layout for raid5"#,
        ),
        (
            rebuild("-1"),
            "--rate: \"-1\" must not be negative (a size: a whole number with optional K, M or G)",
        ),
        (
            rebuild("99999999999G"),
            "--rate: \"99999999999G\" is too large",
        ),
        (rebuild("NaN"), "--rate: \"NaN\" is not a size"),
        (rebuild("-1M"), "--rate: \"-1M\" must not be negative"),
    ];
    for (args, want) in cases {
        let members: &[&str] = if args[0] == "create" { &m } else { &m[..2] };
        let args = [&args[..], members].concat();
        let (code, out, err) = run_code(&args);
        // Typed wrong: a usage error, as clap's own (`--role x`).
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        let line = err.trim_end();
        assert!(!line.contains('\n'), "{args:?}: more than one line: {err}");
        assert!(line.contains(want), "{args:?}: {want:?} not in {err}");
        assert!(
            common::metadata(&files.paths) == before,
            "{args:?} wrote a member"
        );
    }
}

/// Every value typed wrong is told in the one form `raid-engine: --FLAG:
/// rule`, one line, exit 2, whether this program's parser refuses it
/// while clap reads the command line (`--role`, `--data-offset`,
/// `--poll-us`, `--busy-poll-us`) or after (`--chunk`). Before, the first
/// came in clap's form: `error: invalid value 'x' for '--role <ROLE>': ...`
/// then a blank line and "For more information, try '--help'.". Clap's
/// other errors (an unknown flag) and `--help` are clap's as before.
#[test]
fn values_typed_wrong_are_told_in_one_form() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&files.paths);
    for (args, want) in [
        (
            &["rebuild", "--replacement", "x", "--role", "x"][..],
            "raid-engine: --role: \"x\" is not a whole number from 0",
        ),
        (
            &["readd", "--role", "-1"],
            "raid-engine: --role: must not be negative (a whole number from 0)",
        ),
        (
            &[
                "create",
                "--force",
                "--level",
                "raid1",
                "--data-offset",
                "1.5",
            ],
            "raid-engine: --data-offset: \"1.5\" is not a whole number from 0",
        ),
        (
            &["expose", "--mount", "/nonexistent", "--poll-us", "1001"],
            "raid-engine: --poll-us: 1001 µs is more than the 1000 µs allowed",
        ),
        (
            &["expose", "--mount", "/nonexistent", "--busy-poll-us=x"],
            "raid-engine: --busy-poll-us: \"x\" is not a whole number from 0",
        ),
        (
            &["create", "--force", "--level", "raid1", "--chunk", "x"],
            "raid-engine: --chunk: \"x\" is not a size",
        ),
    ] {
        let args = [args, &m[..]].concat();
        let (code, out, err) = run_code(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        let line = err.trim_end();
        assert!(!line.contains('\n'), "{args:?}: more than one line: {err}");
        assert!(
            line.starts_with(want),
            "{args:?}: {want:?} is not the start of {err}"
        );
    }
    // A long value is quoted short, not echoed whole (before: a 100 kB
    // line, 200 kB for --level).
    let long = "9".repeat(100_000);
    let shown = format!("{:?}… (100000 bytes)", &long[..64]);
    for (args, want) in [
        (
            &["readd", "--role", &long][..],
            format!("raid-engine: --role: {shown} is not a whole number from 0"),
        ),
        (
            &["create", "--level", "raid1", "--chunk", &long],
            format!("raid-engine: --chunk: {shown} is too large"),
        ),
        (
            &["scrub", "--nbd-timeout", &long],
            format!("raid-engine: --nbd-timeout: {shown} is too large"),
        ),
    ] {
        let args = [args, &m[..]].concat();
        let (code, out, err) = run_code(&args);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.starts_with(&want), "{want:?} is not the start of {err}");
        assert!(err.len() < 400, "too long: {err}");
    }
    let (code, out, err) = run_code(&[&["create", "--level", &long][..], &m].concat());
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.starts_with("raid-engine: --level: "), "{err}");
    assert!(err.len() < 400, "too long: {err}");
    assert!(common::metadata(&files.paths) == before, "written");
    // Clap's own errors and help are as they were.
    let (code, _, err) = run_code(&["status", "--no-such-flag", m[0]]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
    let (code, help, _) = run_code(&["status", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("--nbd-timeout <DURATION>") && help.contains("Exit codes:"),
        "{help}"
    );
}

/// A path that cannot be opened (a member, `--replacement`,
/// `--secret-file`) or a replacement or `create` member that holds another
/// volume is named
/// short, whatever its length, by its head and its tail
/// (`storage_units::quote_path`, so that its file name shows): one short
/// line and the exit code of a failed operation (1), and nothing written.
/// Before, the path was echoed whole (a 100,000-character path gave a 100
/// kB line; `status` added it a second time), then cut after its first 64
/// characters.
#[test]
fn long_paths_are_quoted_short() {
    let files = common::MemberFiles::new(4, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m[..2]].concat());
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&files.paths);
    let long = files
        .dir
        .path()
        .join("m".repeat(100_000))
        .join("member.img");
    let long = long.to_str().unwrap();
    let shown = storage_units::quote_path(std::path::Path::new(long));
    assert!(shown.ends_with("mmm/member.img\""), "{shown}");
    let short = |what: &str, err: &str| {
        let line = err.trim_end();
        assert!(!line.contains('\n'), "{what}: more than one line: {err}");
        assert!(line.len() < 600, "{what}: too long: {}", line.len());
        assert_eq!(
            line.matches(&shown).count(),
            1,
            "{what}: {shown} not once in {line}"
        );
    };
    for args in [
        &["scrub", m[0], m[1], long][..],
        &["status", long],
        &["status", m[0], m[1], long],
        &["readd", "--role", "1", m[0], long],
        &["rebuild", "--role", "1", "--replacement", long, m[0], m[1]],
        &["scrub", "--secret-file", long, m[0], m[1]],
    ] {
        let (code, out, err) = run_code(args);
        assert_eq!(code, 1, "{:?}: {out}{err}", &args[..2]);
        short(args[0], &err);
        for line in out.lines() {
            assert!(
                line.len() < 600,
                "{:?}: too long: {}",
                &args[..2],
                line.len()
            );
        }
    }
    // An NBD member whose host is that long (before: 200 kB, the address
    // in the resolver's message and again in the member's).
    let nbd = format!("nbd://{}.invalid:10809/x", "h".repeat(100_000));
    let (code, out, err) = run_code(&["status", m[0], m[1], &nbd]);
    assert_eq!(code, 1, "{out}{err}");
    let line = err.trim_end();
    assert!(
        !line.contains('\n') && line.len() < 400,
        "too long: {}",
        line.len()
    );
    assert!(
        line.contains(&format!(
            "{:?}… ({} bytes): resolve ",
            &nbd[..64],
            nbd.len()
        )),
        "{line}"
    );
    // The status of the others is still told, the long one listed short.
    let (_, out, _) = run_code(&["status", m[0], m[1], long]);
    assert!(out.contains("state: whole"), "{out}");
    assert!(out.contains(&format!("unreadable: {shown}: ")), "{out}");
    assert!(common::metadata(&files.paths) == before, "written");
    // A replacement holding another volume, at a path too long to echo
    // (a link, as no file name may be that long).
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m[2..]].concat());
    assert_eq!(code, 0, "{err}");
    let deep = files.dir.path().join("d".repeat(200));
    std::fs::create_dir(&deep).unwrap();
    let link = deep.join("l".repeat(200));
    std::os::unix::fs::symlink(&files.paths[2], &link).unwrap();
    let link = link.to_str().unwrap();
    let (code, out, err) = run_code(&["rebuild", "--role", "1", "--replacement", link, m[0], m[1]]);
    assert_eq!(code, 1, "{out}{err}");
    let shown = storage_units::quote_path(std::path::Path::new(link));
    assert!(shown.ends_with("lll\""), "{shown}");
    assert!(
        err.starts_with(&format!(
            "raid-engine: --replacement {shown} holds role 0 of"
        )),
        "{err}"
    );
    assert!(err.trim_end().len() < 600, "too long: {err}");
    let (code, out, err) = run_code(&["create", "--level", "raid1", link, m[3]]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with(&format!(
            "raid-engine: devices[0] ({shown}) holds role 0 of"
        )),
        "{err}"
    );
    assert!(err.trim_end().len() < 600, "too long: {err}");
}

/// One file exported under two names (the same path, or another path to
/// it) is refused naming both exports, before anything is served: two
/// clients (two volumes) would write it through the two names. Before,
/// both were served, since one holder claimed both.
#[test]
fn serve_nbd_refuses_one_file_exported_under_two_names() {
    let files = common::MemberFiles::new(1, 1 << 20);
    let p = &files.paths[0];
    let d0 = format!("d0={}", p.display());
    let other_path = p.parent().unwrap().join(".").join(p.file_name().unwrap());
    let d1 = format!("d1={}", other_path.display());
    let (mut child, line) = started(&[
        "serve-nbd",
        "--listen",
        "127.0.0.1:0",
        "--export",
        &d0,
        "--export",
        &d1,
    ]);
    if line.contains("serving NBD") {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    // Each export by its name, each path once (before: `--export
    // "d1=PATH": PATH is in use by raid-engine serve-nbd --export "d0=PATH"`).
    assert!(
        line.starts_with("raid-engine: --export \"d1\": ")
            && line.contains("in use by raid-engine serve-nbd --export \"d0\"")
            && line
                .matches(p.file_name().unwrap().to_str().unwrap())
                .count()
                == 1,
        "{line}"
    );
    assert_eq!(status.code(), Some(1), "{line}");
}

/// `create` over members of an existing volume, with an option that could
/// not work anyway: the option's error is said first, not "give --force"
/// (which the user would give, only to be told of the typo next, the
/// volume's members then no longer guarded by the question). Nothing is
/// written either way.
#[test]
fn create_says_a_wrong_option_before_asking_for_force() {
    let files = common::MemberFiles::new(3, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid5"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&files.paths);
    for (opts, want) in [
        (
            &["--level", "raid6"][..],
            "the MEMBERS arguments: raid6 left-symmetric needs 4..=200 members, got 3",
        ),
        (
            &["--level", "raid5", "--chunk", "3K"],
            "--chunk 3K (6 sectors): ",
        ),
        (
            &["--level", "raid5", "--data-offset", "99999999"],
            "do not exceed the data offset of 99999999 sectors",
        ),
        (
            &["--level", "raid5", "--chunk", "1G"],
            "--chunk 1G, which keeps room",
        ),
    ] {
        let args = [&["create"][..], opts, &m].concat();
        let (code, out, err) = run_code(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        assert!(!err.contains("--force"), "{args:?}: {err}");
        assert!(
            common::metadata(&files.paths) == before,
            "{args:?} wrote a member"
        );
    }
    // A right option is still asked for --force.
    let (code, _, err) =
        run_code(&[&["create", "--level", "raid5", "--chunk", "64K"][..], &m].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("give --force"), "{err}");
}

/// `rebuild` onto a replacement that holds a member of another volume is
/// refused without `--force`, as `create` over one is, before the role is
/// failed or anything written: before, the other volume's member was
/// overwritten without a word (and that volume left degraded). The
/// volume's own device (its failed role's, or the role's own) is still
/// taken without `--force`, and `--force` rebuilds onto the other.
#[test]
fn rebuild_onto_a_member_of_another_volume_asks_for_force() {
    let files = common::MemberFiles::new(4, 8 << 20);
    let m = files.args();
    for pair in [&m[..2], &m[2..]] {
        let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], pair].concat());
        assert_eq!(code, 0, "{err}");
    }
    let bytes = || -> Vec<Vec<u8>> {
        files
            .paths
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    let before = bytes();
    let (code, out, err) = run_code(&["rebuild", "--role", "1", "--replacement", m[2], m[0], m[1]]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "--replacement {} holds role 0 of an existing raid1 volume of 2 members",
            m[2]
        )) && err.contains("give --force to rebuild onto it anyway"),
        "{err}"
    );
    assert!(bytes() == before, "a refused rebuild wrote a member");
    for pair in [&m[..2], &m[2..]] {
        let (code, out, err) = run_code(&[&["status"][..], pair].concat());
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("state: whole"), "{out}");
    }
    // The role's own device: no question asked.
    let (code, out, err) = run_code(&["rebuild", "--role", "1", "--replacement", m[1], m[0], m[1]]);
    assert_eq!(code, 0, "{out}{err}");
    // Forced onto the other volume's member.
    let (code, out, err) = run_code(&[
        "rebuild",
        "--force",
        "--role",
        "1",
        "--replacement",
        m[2],
        m[0],
        m[1],
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_code(&["status", m[0], m[2]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: whole"), "{out}");
}

/// `expose --name` longer than the kernel's 255 bytes (`NAME_MAX`) is
/// refused by name and rule before anything is mounted, and the volume is
/// closed cleanly: before, it was served under a name that no one could
/// open (`File name too long`). Nothing needs FUSE here: the refusal comes
/// first (a command that got as far as serving is stopped by SIGTERM).
#[test]
fn expose_refuses_a_name_longer_than_the_kernel_takes() {
    use std::io::BufRead;
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let mnt = files.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let long = "v".repeat(256);
    let mut child = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args(["expose", "--mount", mnt.to_str().unwrap(), "--name", &long])
        .args(&m)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The exposed file's path, if it got as far as serving; else nothing.
    let mut served = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut served)
        .unwrap();
    if !served.is_empty() {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(served.is_empty(), "served as {served}");
    // A --name typed wrong: a usage error.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--name: \"vvvv")
            && err.contains("is 256 bytes long: a file name may be at most 255 bytes"),
        "{err}"
    );
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
    let (code, out, err) = run_code(&[&["status"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("not shut down cleanly"), "{out}");
}

/// `--nbd-timeout` typed wrong is a usage error naming the flag and its
/// rule (exit 2, nothing written); a good one is applied to the NBD
/// members: a server that completes the handshake and then answers no
/// request fails the member after it, instead of the command waiting for
/// ever (the default, no limit).
#[test]
fn nbd_timeout_is_checked_and_applied() {
    use std::io::{Read, Write};
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let before = common::metadata(&files.paths);
    for (bad, rule) in [
        ("0", "must be more than zero"),
        ("-1", "must not be negative"),
        ("fast", "is not a duration"),
        ("30x", "is not a duration"),
        ("99999999999999999999m", "is too large"),
        ("--repair", "was the value left out?"),
    ] {
        let args = [&["scrub", "--nbd-timeout", bad][..], &m].concat();
        let (code, out, err) = run_code(&args);
        assert_eq!(code, 2, "{bad}: {out}{err}");
        // One line, as `--chunk`'s (before: clap's `error: invalid value`
        // and its "For more information" line).
        let line = err.trim_end();
        assert!(!line.contains('\n'), "{bad}: more than one line: {err}");
        assert!(
            line.starts_with("raid-engine: --nbd-timeout: ") && line.contains(rule),
            "{bad}: {err}"
        );
    }
    assert!(common::metadata(&files.paths) == before, "written");
    let (code, _, err) = run_code(&[&["status", "--nbd-timeout", "30s"][..], &m].concat());
    assert_eq!(code, 0, "{err}");

    // A server that opens its export and then answers nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut greet = 0x4e42_444d_4147_4943u64.to_be_bytes().to_vec();
        greet.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
        greet.extend_from_slice(&3u16.to_be_bytes());
        s.write_all(&greet).unwrap();
        // The client's flags, its NBD_OPT_GO's header and data.
        let mut head = [0u8; 20];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
        s.read_exact(&mut vec![0u8; len as usize]).unwrap();
        let reply = |typ: u32, data: &[u8]| {
            let mut r = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
            r.extend_from_slice(&7u32.to_be_bytes());
            r.extend_from_slice(&typ.to_be_bytes());
            r.extend_from_slice(&(data.len() as u32).to_be_bytes());
            r.extend_from_slice(data);
            r
        };
        let mut info = 0u16.to_be_bytes().to_vec();
        info.extend_from_slice(&(8u64 << 20).to_be_bytes());
        info.extend_from_slice(&5u16.to_be_bytes());
        s.write_all(&reply(3, &info)).unwrap();
        s.write_all(&reply(1, &[])).unwrap();
        // Requests are read and never answered, until the client leaves.
        let _ = s.read_to_end(&mut Vec::new());
    });
    let url = format!("nbd://{addr}/x");
    let (code, out, err) = run_code(&["status", "--nbd-timeout", "200ms", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&url) && err.contains("nothing within 200ms (the request timeout)"),
        "{err}"
    );
    server.join().unwrap();
}

/// A member too small for the volume is named as every message names a
/// path (`storage_units::quote_path`): one with a newline escaped, on one
/// line. Before, `create` showed it as typed, and the newline broke the
/// line.
#[test]
fn a_member_too_small_is_named_escaped_on_one_line() {
    let files = common::MemberFiles::new(1, 8 << 20);
    let small = files.dir.path().join("small\nmember");
    std::fs::write(&small, vec![0u8; 64 << 10]).unwrap();
    let small = small.to_str().unwrap();
    let m = files.args();
    let (code, out, err) = run_code(&["create", "--level", "raid1", m[0], small]);
    assert_ne!(code, 0, "{out}{err}");
    let line = err.trim_end();
    assert!(!line.contains('\n'), "more than one line: {err}");
    assert_eq!(line.matches("small\\nmember\"").count(), 1, "{line}");
    assert!(line.contains("(devices[1])"), "{line}");
}

/// `expose` names a `--mount` and a `--name` on one line, short: a mount
/// point with a newline escaped, a 10,000-character name cut (before, the
/// mount point was shown as it is and the name whole).
#[test]
fn expose_names_an_odd_mount_point_and_name_on_one_line() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    let odd = files.dir.path().join("no\nmount");
    let odd = odd.to_str().unwrap();
    let (code, _, err) = run_code(&[&["expose", "--mount", odd][..], &m].concat());
    assert_eq!(code, 1, "{err}");
    let line = err.trim_end();
    assert!(!line.contains('\n'), "more than one line: {err}");
    assert!(
        line.contains("no\\nmount\": must be an existing empty directory"),
        "{line}"
    );
    let mnt = files.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let long = format!("a/{}", "v".repeat(10_000));
    let (code, _, err) = run_code(
        &[
            &["expose", "--mount", mnt.to_str().unwrap(), "--name", &long][..],
            &m,
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.len() < 400, "too long: {err}");
    assert!(err.contains("must be a plain file name"), "{err}");
}

/// `status` names a member whose error does not name it, even when its
/// name is short enough to be found inside a word of the error (`d` in
/// "directory"). Before, a plain substring test took `d` as named and
/// the line said "No such file or directory" of no member.
#[test]
fn status_names_a_member_with_a_short_name() {
    let files = common::MemberFiles::new(2, 8 << 20);
    let m = files.args();
    let (code, _, err) = run_code(&[&["create", "--level", "raid1"][..], &m].concat());
    assert_eq!(code, 0, "{err}");
    for short in ["d", "o", "a"] {
        let out = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
            .current_dir(files.dir.path())
            .args(["status", m[0], m[1], short])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains(&format!("unreadable: {short}: No such file")),
            "{short}: {out}"
        );
    }
}
