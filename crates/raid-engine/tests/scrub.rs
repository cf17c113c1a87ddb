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
/// bytes with one readable copy (or in a stripe with a member missing),
/// and bytes with none; every byte is counted once.
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
        ("raid6:left-symmetric", 5, &[4], [0, 8, 0]),
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
