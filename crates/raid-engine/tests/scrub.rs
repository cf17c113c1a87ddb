//! Scrub finds a member whose bytes were changed behind the engine's back
//! (a mirror copy, or P/Q of a stripe), names it, and repairs it.

mod common;

use raid_engine::{CreateOptions, Volume, VolumeLayout};

fn corrupt_and_scrub(spec: &str, n: usize) {
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), n, 4 << 20);
    let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
    opts.chunk_sectors = 16;
    let vol = Volume::create(devs.clone(), &opts).unwrap();
    let data = common::pattern(5, vol.size() as usize);
    vol.write_at(&data, 0).unwrap();
    vol.flush().unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty(), "{spec}");

    // Damage the member holding the second copy of sector 100, or the
    // P member of its stripe.
    let g = vol.geometry().unwrap();
    let m = g.map(100).unwrap();
    let (victim, sector) = match m.parity {
        Some(p) => (p.p, m.copies[0].sector),
        None => (m.copies[1].member, m.copies[1].sector),
    };
    devs[victim]
        .write_at(&[0xa5; 512], vol.data_offset_bytes() + sector * 512)
        .unwrap();
    let report = vol.scrub(false).unwrap();
    assert_eq!(report.mismatches.len(), 1, "{spec}: {report:?}");
    assert_eq!(report.mismatches[0].members, vec![victim], "{spec}");
    let report = vol.scrub(true).unwrap();
    assert!(report.repaired && report.mismatches.len() == 1);
    assert!(
        vol.scrub(false).unwrap().mismatches.is_empty(),
        "{spec}: not repaired"
    );
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 0).unwrap();
    assert!(back == data, "{spec}");
}

#[test]
fn scrub_finds_and_repairs() {
    corrupt_and_scrub("raid1", 2);
    corrupt_and_scrub("raid10:n2", 4);
    corrupt_and_scrub("raid10:f2", 3);
    corrupt_and_scrub("raid5:left-symmetric", 4);
    corrupt_and_scrub("raid6:left-symmetric", 5);
}

/// A scrub that cannot compare everything says how much it left out:
/// bytes with one readable copy (or in a stripe with no redundancy left:
/// RAID5 with a member missing, RAID6 with two), and bytes with none;
/// every byte is counted once.
#[test]
fn scrub_counts_what_it_could_not_check() {
    // (layout, members, roles failed, expected share of the volume in
    // eighths: checked, unverifiable, unreadable)
    let cases: &[(&str, usize, &[usize], [u64; 3])] = &[
        ("raid1", 3, &[], [8, 0, 0]),
        ("raid1", 3, &[1], [8, 0, 0]),
        ("raid1", 2, &[0], [0, 8, 0]),
        ("raid10:n2", 4, &[0], [4, 4, 0]),
        ("raid10:n2", 4, &[0, 2], [0, 8, 0]),
        // Both copies of the even chunks gone while running.
        ("raid10:n2", 4, &[0, 1], [4, 0, 4]),
        ("raid10:n2", 4, &[0, 1, 2], [0, 4, 4]),
        ("raid5:left-symmetric", 4, &[2], [0, 8, 0]),
        ("raid5:left-symmetric", 4, &[1, 2], [0, 0, 8]),
        // One missing: every stripe keeps a redundancy and is checked.
        ("raid6:left-symmetric", 5, &[4], [8, 0, 0]),
        ("raid6:left-symmetric", 6, &[0], [8, 0, 0]),
        ("raid6:left-symmetric", 5, &[1, 4], [0, 8, 0]),
        ("raid6:left-symmetric", 6, &[2, 3], [0, 8, 0]),
        ("raid5:left-symmetric", 6, &[5], [0, 8, 0]),
        ("raid6:left-symmetric", 5, &[0, 1, 4], [0, 0, 8]),
        ("raid0", 2, &[], [0, 8, 0]),
        ("linear", 2, &[], [0, 8, 0]),
    ];
    for &(spec, n, failed, [checked, unverifiable, unreadable]) in cases {
        let dir = common::scratch();
        let (_paths, devs) = common::members(dir.path(), n, 4 << 20);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 16;
        let vol = Volume::create(devs, &opts).unwrap();
        vol.write_at(&common::pattern(3, vol.size() as usize), 0)
            .unwrap();
        // Forced: some sets lose data on purpose (`fail_member` refuses them).
        for &r in failed {
            vol.fail_member_forced(r).unwrap();
        }
        let r = vol.scrub(false).unwrap();
        let eighth = vol.size() / 8;
        let what = format!("{spec} over {n} without {failed:?}: {r:?}");
        assert_eq!(r.checked_bytes, checked * eighth, "{what}");
        assert_eq!(r.unverifiable_bytes, unverifiable * eighth, "{what}");
        assert_eq!(r.unreadable_bytes, unreadable * eighth, "{what}");
        assert_eq!(r.is_complete(), checked == 8, "{what}");
        assert!(r.mismatches.is_empty(), "{what}");
    }
}

/// Flip every bit of the byte at `offset` of a member file's data area.
fn flip(dev: &dyn raid_engine::BlockDevice, offset: u64) {
    let mut b = [0u8; 512];
    let at = offset / 512 * 512;
    dev.read_at(&mut b, at).unwrap();
    b[(offset - at) as usize] ^= 0xff;
    dev.write_at(&b, at).unwrap();
}

/// A RAID6 stripe with one member missing still has one redundancy, and
/// scrub checks it: with the stripe's data member, P member or Q member
/// failed, every byte is checked and a consistent volume has no mismatch.
/// A byte changed behind the engine's back in a present data chunk or in a
/// present parity chunk is found in that stripe and blamed on the parity
/// that was checked (Q, or P when Q is the missing one); `repair` rewrites
/// that parity, after which scrub is clean and the volume reads what it
/// read before the repair (the original data except the changed byte, and
/// the missing data member's byte that P reconstructs from it).
#[test]
fn degraded_raid6_is_checked_against_the_parity_it_has_left() {
    const N: usize = 6;
    const STRIPE: u64 = 3;
    const AT: u64 = 777; // byte within the chunk
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Role {
        Data,
        P,
        Q,
    }
    for failed in [Role::Data, Role::P, Role::Q] {
        let dir = common::scratch();
        let (_paths, devs) = common::members(dir.path(), N, 4 << 20);
        let mut opts = CreateOptions::new(VolumeLayout::parse("raid6:left-symmetric").unwrap());
        opts.chunk_sectors = 16;
        let vol = Volume::create(devs.clone(), &opts).unwrap();
        let original = common::pattern(11, vol.size() as usize);
        vol.write_at(&original, 0).unwrap();
        vol.flush().unwrap();
        let g = vol.geometry().unwrap();
        let chunk_bytes = g.chunk_sectors() * 512;
        let row_bytes = chunk_bytes * g.data_disks() as u64;
        let layout = g.stripe_layout(STRIPE).unwrap();
        let q = layout.q.unwrap();
        let victim = match failed {
            Role::Data => layout.data[1],
            Role::P => layout.p,
            Role::Q => q,
        };
        let checked = if failed == Role::Q { layout.p } else { q };
        vol.fail_member(victim).unwrap();

        let what = format!("{failed:?} member {victim} of stripe {STRIPE} failed");
        let r = vol.scrub(false).unwrap();
        assert!(r.is_complete(), "{what}: {r:?}");
        assert_eq!(r.checked_bytes, vol.size(), "{what}: {r:?}");
        assert!(r.mismatches.is_empty(), "{what}: {r:?}");
        assert_eq!(
            r.bytes_read,
            g.stripes() * chunk_bytes * (N as u64 - 1),
            "{what}: every present member read once"
        );

        // Logical byte offset of data chunk `i` of the stripe at AT.
        let logical = |i: usize| STRIPE * row_bytes + i as u64 * chunk_bytes + AT;
        let member_at = vol.data_offset_bytes() + STRIPE * chunk_bytes + AT;
        let data_of = |m: usize| layout.data.iter().position(|&d| d == m);
        let present_data = *layout.data.iter().find(|&&d| d != victim).unwrap();
        let mut corrupt = vec![present_data, checked];
        if failed == Role::Data {
            // P is not checked but rebuilds the missing data member.
            corrupt.push(layout.p);
        }
        let mut expected = original.clone();
        for target in corrupt {
            let what = format!("{what}, member {target} changed");
            let member_chunk = |dev: &dyn raid_engine::BlockDevice| {
                let mut b = vec![0u8; chunk_bytes as usize];
                dev.read_at(&mut b, member_at - AT).unwrap();
                b
            };
            let before = member_chunk(&*devs[target]);
            flip(&*devs[target], member_at);
            if let Some(i) = data_of(target) {
                expected[logical(i) as usize] ^= 0xff;
            }
            // The missing data member is P ⊕ the other data.
            if let Some(i) = data_of(victim).filter(|_| target != q) {
                expected[logical(i) as usize] ^= 0xff;
            }

            let r = vol.scrub(false).unwrap();
            assert!(r.is_complete(), "{what}: {r:?}");
            assert_eq!(r.mismatches.len(), 1, "{what}: {r:?}");
            assert_eq!(r.mismatches[0].at, STRIPE, "{what}");
            assert_eq!(r.mismatches[0].sectors, g.chunk_sectors(), "{what}");
            assert_eq!(r.mismatches[0].members, vec![checked], "{what}");

            let r = vol.scrub(true).unwrap();
            assert!(r.repaired && r.mismatches.len() == 1, "{what}: {r:?}");
            if target == checked {
                assert!(
                    member_chunk(&*devs[target]) == before,
                    "{what}: the parity was not rewritten"
                );
            }
            let r = vol.scrub(false).unwrap();
            assert!(r.is_complete() && r.mismatches.is_empty(), "{what}: {r:?}");
            let mut back = vec![0u8; original.len()];
            vol.read_at(&mut back, 0).unwrap();
            let differ: Vec<usize> = (0..back.len())
                .filter(|&i| back[i] != expected[i])
                .collect();
            assert!(
                differ.is_empty(),
                "{what}: bytes {differ:?} read back changed"
            );
        }
    }
}

/// A member read error during a scrub does what md's check does: the
/// member is marked failed (and recorded so in the others' superblocks),
/// the scrub carries on from the members left, and the report names the
/// member; every byte is still counted once, by what was left to check it
/// with, and the volume reads what was written. Before, the scrub stopped
/// at the error with nothing marked.
#[test]
fn scrub_fails_a_member_whose_reads_fail_and_carries_on() {
    // (layout, members, role whose reads fail)
    let cases: &[(&str, usize, usize)] = &[
        ("raid1", 3, 1),
        ("raid1", 2, 0),
        ("raid10:n2", 4, 2),
        ("raid10:f2", 3, 0),
        ("raid5:left-symmetric", 4, 1),
        ("raid6:left-symmetric", 5, 3),
    ];
    for &(spec, n, victim) in cases {
        let dir = common::scratch();
        let (paths, mut devs) = common::members(dir.path(), n, 4 << 20);
        let failing = common::FailingReads::new(devs[victim].clone());
        devs[victim] = failing.clone();
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 16;
        let vol = Volume::create(devs, &opts).unwrap();
        let data = common::pattern(7, vol.size() as usize);
        vol.write_at(&data, 0).unwrap();
        vol.flush().unwrap();
        // Half-way through the member's data area.
        let half = vol.data_offset_bytes()
            + (raid_engine::BlockDevice::size(&*failing) - vol.data_offset_bytes()) / 2;
        failing.fail_reads_from(half);
        let what = format!("{spec} over {n}, role {victim} failing");
        let r = vol
            .scrub(false)
            .unwrap_or_else(|e| panic!("{what}: scrub stopped: {e}"));
        assert_eq!(r.failed_members.len(), 1, "{what}: {r:?}");
        assert_eq!(r.failed_members[0].role, victim, "{what}");
        assert!(
            r.failed_members[0].device.contains("failing reads")
                && r.failed_members[0].error.starts_with("read error: "),
            "{what}: {r:?}"
        );
        assert!(r.mismatches.is_empty(), "{what}: {r:?}");
        assert_eq!(
            r.checked_bytes + r.unverifiable_bytes + r.unreadable_bytes,
            vol.size(),
            "{what}: {r:?}"
        );
        // Up to the failure every byte was checked; afterwards each layout
        // checks what its survivors can still check.
        assert!(
            r.checked_bytes >= vol.size() / 2 - (1 << 20),
            "{what}: {r:?}"
        );
        assert_eq!(r.unreadable_bytes, 0, "{what}: {r:?}");
        assert_eq!(
            vol.health(),
            raid_engine::Health::Degraded {
                unavailable: vec![victim]
            },
            "{what}"
        );
        assert_eq!(
            vol.status()[victim].state,
            raid_engine::MemberState::Failed,
            "{what}"
        );
        let mut back = vec![0u8; data.len()];
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == data, "{what}: reads differ");
        // The others' superblocks record it failed: without it the volume
        // starts degraded, and with it the member is not taken as in sync.
        vol.close().unwrap();
        drop(vol);
        let x = Volume::examine(&common::reopen(&paths), None).unwrap();
        assert_eq!(
            x.roles[victim].condition,
            raid_engine::RoleCondition::Faulty,
            "{what}"
        );
    }
}

/// A repair write that fails during `scrub --repair` fails that member as
/// a read error does: the mismatch is still reported, the member is named
/// in the report with the write error, the scrub carries on, and the
/// volume is degraded and reads what was written. Before, the scrub
/// stopped at the error.
#[test]
fn a_failed_repair_write_fails_the_member_and_the_scrub_carries_on() {
    let dir = common::scratch();
    let (_paths, mut devs) = common::members(dir.path(), 3, 4 << 20);
    let failing = common::FailingReads::new(devs[1].clone());
    devs[1] = failing.clone();
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid1").unwrap());
    opts.chunk_sectors = 16;
    let vol = Volume::create(devs.clone(), &opts).unwrap();
    let data = common::pattern(11, vol.size() as usize);
    vol.write_at(&data, 0).unwrap();
    vol.flush().unwrap();
    // Role 1's copy of sector 100 changed behind the engine's back, and
    // role 1 refusing writes from then on.
    let at = vol.data_offset_bytes() + 100 * 512;
    devs[1].write_at(&[0xa5; 512], at).unwrap();
    failing.fail_writes_from(vol.data_offset_bytes());
    let r = vol.scrub(true).unwrap();
    assert_eq!(r.mismatches.len(), 1, "{r:?}");
    assert_eq!(r.mismatches[0].members, vec![1], "{r:?}");
    assert_eq!(r.failed_members.len(), 1, "{r:?}");
    assert_eq!(r.failed_members[0].role, 1, "{r:?}");
    assert!(
        r.failed_members[0]
            .error
            .starts_with("repair write error: "),
        "{r:?}"
    );
    assert_eq!(
        r.checked_bytes + r.unverifiable_bytes + r.unreadable_bytes,
        vol.size(),
        "{r:?}"
    );
    assert_eq!(
        vol.health(),
        raid_engine::Health::Degraded {
            unavailable: vec![1]
        }
    );
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 0).unwrap();
    assert!(back == data, "reads differ");
}
