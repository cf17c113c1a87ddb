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
        &format!("devices[0] ({m0})"),
        "in use by a volume in this process",
    );
    assert_in_use(Volume::assemble(devs.clone(), None), &m0, "in use");
    // Given in the other order, the first member named is role 1's file.
    let swapped = vec![common::reopen(&paths)[1].clone()];
    assert_in_use(
        Volume::assemble(swapped, None),
        &format!("devices[0] ({})", paths[1].display()),
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
            format!("devices[0] ({m0}): {m0} is in use by another process"),
        ),
        (
            ["serve-nbd", "--listen", "127.0.0.1:0", "--export"]
                .map(String::from)
                .into_iter()
                .chain([format!("d1={m1}")])
                .collect(),
            format!("--export d1={m1}: {m1} is in use by another process"),
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
        &format!("devices[1] ({})", paths[1].display()),
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

/// A claim waits out a kernel lock that another process lets go of within a moment, as a child
/// forked by any thread of this process holds every lock of the parent's descriptors from the
/// fork to its `exec`: a claim released just before such a fork, and taken again at once, was
/// refused as "in use by another process" (a node plugin running losetup or mkfs beside an
/// unstage and a stage; this file's own tests spawning helper processes beside each other).
/// Here a real holder, util-linux `flock`, holds the file for a moment and lets go; a lock
/// held on is still refused (the tests above).
#[test]
fn a_lock_let_go_of_within_a_moment_is_waited_out() {
    use std::io::BufRead;
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 1, 1 << 20);
    drop(devs);
    let mut holder = Command::new("flock")
        .arg(&paths[0])
        .args(["-c", "echo held; sleep 0.3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux flock");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    let claim = common::reopen(&paths)[0].claim(&raid_engine::ClaimHolder::new("a volume"));
    holder.wait().unwrap();
    let _held = claim.expect("the lock let go of within the wait is waited out");
}
