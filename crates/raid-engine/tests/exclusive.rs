//! Exclusive use of members, enforced by the library: a member file that a
//! volume (or `raid-engine serve-nbd`) holds cannot be assembled into a
//! second volume, from this process or another, and nothing is written to
//! it by the refused call. Before, only the command line took `flock`s: a program
//! embedding the library could assemble the same files twice and both
//! volumes wrote them.

mod common;

use std::process::{Child, Command, Stdio};

use raid_engine::{CreateOptions, EngineError, Volume, VolumeLayout};

fn raid1() -> CreateOptions {
    CreateOptions::new(VolumeLayout::parse("raid1").unwrap())
}

/// The error of a refused call, which must be `InUse` naming `member`.
fn assert_in_use(r: raid_engine::Result<Volume>, member: &str, holder: &str) {
    match r {
        Err(e @ EngineError::InUse { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(member) && msg.contains(holder),
                "{member:?} and {holder:?} not in {msg}"
            );
        }
        Err(e) => panic!("refused, but not as in use: {e}"),
        Ok(_) => panic!("a second volume was assembled over members in use"),
    }
}

/// Two assemblies of the same member files in one process: the second is
/// refused naming the member, by the same `FileDevice`s or freshly opened
/// ones, and writes nothing; once the first volume is dropped, the files
/// can be assembled again.
#[test]
fn a_second_volume_over_the_same_members_in_one_process_is_refused() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, 8 << 20);
    let first = Volume::create(devs.clone(), &raid1()).unwrap();
    first.write_at(&[7u8; 4096], 0).unwrap();
    first.flush().unwrap();
    let before = common::metadata(&paths);

    let m0 = paths[0].display().to_string();
    assert_in_use(
        Volume::assemble(common::reopen(&paths), None),
        &format!("devices[0]: {m0} is in use"),
        "in use by a volume in this process",
    );
    assert_in_use(Volume::assemble(devs.clone(), None), &m0, "in use");
    // Given in the other order, the first member named is role 1's file.
    let swapped = vec![common::reopen(&paths)[1].clone()];
    assert_in_use(
        Volume::assemble(swapped, None),
        &format!("devices[0]: {} is in use", paths[1].display()),
        "in use",
    );
    // `create` over them (a mistake) is refused as well, before it writes.
    let e =
        Volume::create(common::reopen(&paths), &raid1()).expect_err("create over members in use");
    assert!(matches!(e, EngineError::InUse { .. }), "{e}");
    assert!(
        common::metadata(&paths) == before,
        "a refused call wrote a member"
    );

    // The first volume still works, and its members are free once it is
    // dropped.
    let mut back = [0u8; 4096];
    first.read_at(&mut back, 0).unwrap();
    assert_eq!(back, [7u8; 4096]);
    first.close().unwrap();
    drop(first);
    let again = Volume::assemble(common::reopen(&paths), None).unwrap();
    again.read_at(&mut back, 0).unwrap();
    assert_eq!(back, [7u8; 4096]);
}

/// A replacement that another volume holds is refused by
/// `check_replacement` and `replace`, and the role stays as it was; the
/// failed role's own file, opened again, is accepted (the volume's own
/// claim).
#[test]
fn a_replacement_held_by_another_volume_is_refused() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 4, 8 << 20);
    let (a, b) = (devs[..2].to_vec(), devs[2..].to_vec());
    let va = Volume::create(a, &raid1()).unwrap();
    let vb = Volume::create(b, &raid1()).unwrap();
    va.fail_member(1).unwrap();
    let other = common::reopen(&paths[2..3]).remove(0);
    let e = va.check_replacement(1, &*other).unwrap_err();
    assert!(
        matches!(e, EngineError::InUse { .. })
            && e.to_string().contains(&paths[2].display().to_string()),
        "{e}"
    );
    let e = va.replace(1, other).unwrap_err();
    assert!(matches!(e, EngineError::InUse { .. }), "{e}");
    assert_eq!(va.status()[1].state, raid_engine::MemberState::Failed);
    let own = common::reopen(&paths[1..2]).remove(0);
    va.replace(1, own).unwrap();
    va.rebuild(1, &Default::default()).unwrap();
    drop(vb);
}

/// The replacement of an active role is reserved before the role is
/// failed (as `raid-engine rebuild` does) and stays claimed by the volume
/// from then on: another holder cannot take it between the check, the
/// failing of the role and the swap, nor during the rebuild. Before, the
/// check claimed the device and let it go again before the role was
/// failed, and the replace claimed it anew: whoever took it in between
/// left the volume degraded with its replacement refused.
#[test]
fn a_reserved_replacement_stays_claimed_from_the_check_to_the_swap() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 3, 8 << 20);
    let v = Volume::create(devs[..2].to_vec(), &raid1()).unwrap();
    v.write_at(&[9u8; 8192], 0).unwrap();
    let other = raid_engine::ClaimHolder::new("a backup job");
    let spare = || common::reopen(&paths[2..3]).remove(0);
    let reserved = v.reserve_replacement(1, spare()).unwrap();
    assert_eq!(reserved.role(), 1);
    let taken = |what: &str| {
        let e = spare().claim(&other).expect_err(what);
        assert!(e.to_string().contains("in use by a volume"), "{what}: {e}");
    };
    taken("reserved, role still active");
    v.fail_member(1).unwrap();
    taken("reserved, role failed");
    v.replace_reserved(reserved).unwrap();
    taken("attached");
    v.rebuild(1, &Default::default()).unwrap();
    taken("rebuilt");
    let mut back = [0u8; 8192];
    v.read_at(&mut back, 0).unwrap();
    assert_eq!(back, [9u8; 8192]);

    // A reservation dropped unused releases the device; one made by
    // another volume is refused by name, and the role stays failed.
    let dir2 = common::scratch();
    let (p2, d2) = common::members(dir2.path(), 3, 8 << 20);
    let w = Volume::create(d2[..2].to_vec(), &raid1()).unwrap();
    let fresh = || common::reopen(&p2[2..3]).remove(0);
    let unused = w.reserve_replacement(1, fresh()).unwrap();
    assert!(fresh().claim(&other).is_err());
    drop(unused);
    drop(fresh().claim(&other).unwrap());
    let foreign = w.reserve_replacement(1, fresh()).unwrap();
    v.fail_member(0).unwrap();
    let e = v.replace_reserved(foreign).unwrap_err();
    assert!(
        matches!(e, EngineError::Invalid { .. })
            && e.to_string().contains("reserved for another volume"),
        "{e}"
    );
    assert_eq!(v.status()[0].state, raid_engine::MemberState::Failed);
}

/// Runs `raid-engine serve-nbd` exporting `path` until killed.
fn serve(path: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args(["serve-nbd", "--listen", "127.0.0.1:0", "--export"])
        .arg(format!("d0={}", path.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says so once its exports are claimed and it serves.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("serving NBD on"), "{line}");
    child
}

/// Across processes: a volume of this process keeps a `raid-engine scrub`
/// or `serve-nbd` in another off its members (exit 1, the member named as
/// in use), and a `raid-engine serve-nbd` exporting a member keeps this
/// process's `assemble` off it.
#[test]
fn members_in_use_by_another_process_are_refused() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, 8 << 20);
    let vol = Volume::create(devs, &raid1()).unwrap();
    let before = common::metadata(&paths);
    // A scrub in another process, and an export over NBD, are refused.
    let (m0, m1) = (paths[0].display(), paths[1].display());
    for (args, want) in [
        (
            vec!["scrub".to_string(), m0.to_string(), m1.to_string()],
            format!("{m0} is in use by another process"),
        ),
        // Said before "holds a member of an existing volume ... --force",
        // which would not help.
        (
            vec![
                "create".into(),
                "--level".into(),
                "raid1".into(),
                m0.to_string(),
                m1.to_string(),
            ],
            format!("devices[0]: {m0} is in use by another process"),
        ),
        (
            ["serve-nbd", "--listen", "127.0.0.1:0", "--export"]
                .map(String::from)
                .into_iter()
                .chain([format!("d1={m1}")])
                .collect(),
            format!("--export \"d1\": {m1} is in use by another process"),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {want:?} not in {err}");
        assert!(
            common::metadata(&paths) == before,
            "{args:?} wrote a member"
        );
    }
    vol.close().unwrap();
    drop(vol);

    let mut child = serve(&paths[1]);
    let r = Volume::assemble(common::reopen(&paths), None);
    let _ = child.kill();
    let _ = child.wait();
    assert_in_use(
        r,
        &format!("devices[1]: {} is in use", paths[1].display()),
        "in use by another process",
    );
    Volume::assemble(common::reopen(&paths), None).unwrap();
}

/// `readd` with a device claims it too: one that another holder has (here
/// a claim taken through the public API, as an embedding program would)
/// is refused naming the holder, the role stays failed, and once the claim
/// is dropped the same call brings the role back.
#[test]
fn readd_claims_the_device_it_is_given() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, 8 << 20);
    let v = Volume::create(devs, &raid1()).unwrap();
    v.fail_member(1).unwrap();
    v.close().unwrap();
    drop(v);
    // Started without role 1's device; it comes back through readd.
    let v = Volume::assemble(common::reopen(&paths[..1]), None).unwrap();
    let other = raid_engine::ClaimHolder::new("a backup job");
    let held = common::reopen(&paths[1..])[0].claim(&other).unwrap();
    let e = v
        .readd(
            1,
            Some(common::reopen(&paths[1..]).remove(0)),
            &Default::default(),
        )
        .unwrap_err();
    assert!(
        matches!(e, EngineError::InUse { .. })
            && e.to_string().contains("device for role 1")
            && e.to_string()
                .contains("in use by a backup job in this process"),
        "{e}"
    );
    assert_eq!(v.status()[1].state, raid_engine::MemberState::Failed);
    drop(held);
    v.readd(
        1,
        Some(common::reopen(&paths[1..]).remove(0)),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(v.status()[1].state, raid_engine::MemberState::Active);
}

/// util-linux `flock` holding `path` (an exclusive `flock`, as another
/// raid-engine process takes) while it runs `then` in `sh` with the
/// child's stdin; returned once the lock is held.
fn flock_holding(path: &std::path::Path, then: &str) -> Child {
    use std::io::BufRead;
    let mut holder = Command::new("flock")
        .arg(path)
        .args(["-c", &format!("echo held; {then}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux flock");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    holder
}

/// A claim waits out a kernel lock that another process lets go of within a moment, as a child
/// forked by any thread of this process holds every lock of the parent's descriptors from the
/// fork to its `exec`: a claim released just before such a fork, and taken again at once, was
/// refused as "in use by another process" (a node plugin running losetup or mkfs beside an
/// unstage and a stage; this file's own tests spawning helper processes beside each other).
/// Here a real holder, util-linux `flock`, holds the file for a moment and lets go; a lock
/// held on is still refused (the tests above).
#[test]
fn a_lock_let_go_of_within_a_moment_is_waited_out() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 1, 1 << 20);
    drop(devs);
    let mut holder = flock_holding(&paths[0], "sleep 0.3");
    let claim = common::reopen(&paths)[0].claim(&raid_engine::ClaimHolder::new("a volume"));
    holder.wait().unwrap();
    let _held = claim.expect("the lock let go of within the wait is waited out");
}

/// How many of this process's descriptors are open on `path`.
fn descriptors_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t == path)
        .count()
}

/// A claim waiting out another process's lock (up to a second, see the test above) holds up no
/// claim of another file: before, it waited holding the process-wide table of claims, so every
/// claim in the process, of any file, waited behind it and a node plugin staging one volume
/// stalled all the others. Here util-linux `flock` holds file `a` until told to let go; one
/// thread claims `a` and waits; while it waits (its own description of `a` is open), this thread
/// claims file `b`, and only then lets `a` go: the claim of `b` completes first and the claim of
/// `a` still succeeds. Before, the claim of `b` waited until the claim of `a` gave up, refused.
#[test]
fn a_claim_waiting_out_another_process_holds_up_no_claim_of_another_file() {
    use std::io::Write;
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, 1 << 20);
    drop(devs);
    let a = std::fs::canonicalize(&paths[0]).unwrap();
    let mut holder = flock_holding(&a, "read _");

    let dev_a = common::reopen(&paths[..1]).remove(0);
    let dev_b = common::reopen(&paths[1..]).remove(0);
    let opened = descriptors_on(&a);
    let (done_a, a_result) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = dev_a.claim(&raid_engine::ClaimHolder::new("volume a"));
        done_a.send(r.map_err(|e| e.to_string())).unwrap();
    });
    // The claim of `a` opens a description of its own before it tries the kernel's lock.
    while descriptors_on(&a) == opened {
        assert!(
            matches!(
                a_result.try_recv(),
                Err(std::sync::mpsc::TryRecvError::Empty)
            ),
            "the claim of a returned before it was seen waiting"
        );
        std::thread::yield_now();
    }
    let claim_b = dev_b
        .claim(&raid_engine::ClaimHolder::new("volume b"))
        .unwrap();
    assert!(
        matches!(
            a_result.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Empty)
        ),
        "the claim of b completed only after the claim of a had given up"
    );
    let mut stdin = holder.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    holder.wait().unwrap();
    let claim_a = a_result.recv().unwrap();
    waiter.join().unwrap();
    let _held = claim_a.expect("the claim of a, let go of while b was claimed, waited it out");
    drop(claim_b);
}

/// Claims of one file raced from several threads, by several holders, whole or as overlapping
/// slices: exactly one wins each round and the others are refused as in use in this process
/// (a claim taking its kernel locks is pending in the table, and overlapping claims wait for
/// what it comes to instead of taking the kernel's locks beside it).
#[test]
fn racing_claims_of_one_file_give_it_to_exactly_one_holder() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 1, 1 << 20);
    drop(devs);
    for round in 0..50 {
        let barrier = std::sync::Barrier::new(4);
        let results: Vec<Result<raid_engine::Claim, String>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let dev = common::reopen(&paths).remove(0);
                    let barrier = &barrier;
                    s.spawn(move || {
                        let holder = raid_engine::ClaimHolder::new(format!("holder {t}"));
                        barrier.wait();
                        match t {
                            0 => dev.claim(&holder),
                            // Slices that overlap each other and the whole file.
                            t => dev.claim_range(&holder, (t - 1) * 4096, 3 * 4096),
                        }
                        .map_err(|e| e.to_string())
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(e.contains("in this process"), "round {round}: {e}");
        }
    }
}
