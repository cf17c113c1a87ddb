//! The engine's members hold md's bytes at `raid`'s mapped offsets, for
//! every copy-based level and layout.

mod common;

use raid_engine::{CreateOptions, Volume, VolumeLayout};

const MIB: u64 = 1 << 20;

fn check_layout(spec: &str, n: usize, chunk: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (_paths, devs) = common::members(dir.path(), n, 6 * MIB);
    let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
    opts.chunk_sectors = chunk;
    let vol = Volume::create(devs.clone(), &opts).unwrap();
    let size = vol.size() as usize;
    assert!(size > 0, "{spec}");
    let data = common::pattern(n as u64 + chunk, size);
    // Odd-sized writes at odd offsets, then the rest.
    vol.write_at(&data[1000..70_000], 1000).unwrap();
    vol.write_at(&data[..1000], 0).unwrap();
    vol.write_at(&data[70_000..], 70_000).unwrap();
    vol.flush().unwrap();
    let mut back = vec![0u8; size];
    vol.read_at(&mut back, 0).unwrap();
    assert!(back == data, "{spec}: read back differs");
    let off = vol.data_offset_bytes();
    let sectors = size as u64 / 512;
    match vol.geometry() {
        Some(g) => {
            // mdadm's default data offset for these members.
            let c = if g.chunk_sectors() == 0 { 0 } else { chunk };
            assert_eq!(
                off,
                512 * raid::mdadm::default_data_offset_v12(6 * MIB / 512, c),
                "{spec}"
            );
            if let Ok(stripe) = g.stripe_layout(0) {
                // Every stripe's P (and Q) is what raid's kernels compute
                // from the data members.
                let len = (g.chunk_sectors() * 512) as usize;
                let engine = raid::ParityEngine::detect();
                for st in 0..g.stripes() {
                    let stripe = if st == 0 {
                        stripe.clone()
                    } else {
                        g.stripe_layout(st).unwrap()
                    };
                    let mut bufs: Vec<Vec<u8>> = devs
                        .iter()
                        .map(|d| {
                            let mut b = vec![0u8; len];
                            d.read_at(&mut b, off + st * g.chunk_sectors() * 512)
                                .unwrap();
                            b
                        })
                        .collect();
                    let want = bufs.clone();
                    let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
                    engine.encode_stripe_slices(&stripe, &mut views).unwrap();
                    assert!(bufs == want, "{spec}: parity of stripe {st}");
                }
            }
            for s in (0..sectors).step_by(101) {
                let m = g.map(s).unwrap();
                assert_eq!(m.copies.len(), g.copies(), "{spec}");
                for l in m.copies.iter() {
                    let mut b = [0u8; 512];
                    devs[l.member]
                        .read_at(&mut b, off + l.sector * 512)
                        .unwrap();
                    let want = &data[(s * 512) as usize..(s * 512 + 512) as usize];
                    assert!(b[..] == want[..], "{spec}: sector {s} copy on {l:?}");
                }
            }
        }
        None => {
            // Linear: member i's data area follows member i-1's.
            let per = (devs[0].size() / 512 - off / 512) / 8 * 8;
            for s in (0..sectors).step_by(41) {
                let (m, ms) = ((s / per) as usize, s % per);
                let mut b = [0u8; 512];
                devs[m].read_at(&mut b, off + ms * 512).unwrap();
                assert!(b[..] == data[(s * 512) as usize..(s * 512 + 512) as usize]);
            }
        }
    }
    vol.close().unwrap();
}

#[test]
fn every_copy_layout_is_byte_exact() {
    for (spec, n, chunk) in [
        ("single", 1, 0),
        ("linear", 3, 0),
        ("raid0", 3, 16),
        ("raid1", 3, 0),
        ("raid10:n2", 4, 16),
        ("raid10:n2", 5, 8),
        ("raid10:n3", 3, 16),
        ("raid10:f2", 4, 16),
        ("raid10:f2", 3, 8),
        ("raid10:o2", 3, 16),
        ("raid10:f3", 5, 8),
        ("raid10:n2f2", 4, 8),
        ("raid4", 3, 16),
        ("raid5:left-symmetric", 4, 16),
        ("raid5:left-asymmetric", 3, 8),
        ("raid5:right-symmetric", 5, 8),
        ("raid5:right-asymmetric", 4, 16),
        ("raid6:left-symmetric", 5, 16),
        ("raid6:ddf-n-restart", 6, 8),
        ("raid6:right-asymmetric-6", 5, 8),
        ("raid6:parity-first", 4, 16),
    ] {
        check_layout(spec, n, chunk);
    }
}

/// A member count the engine refuses is refused with the engine's range:
/// the level's minimum and the engine's maximum where its superblock's
/// role table is the tighter limit. Before, 220 members of a RAID6 were
/// refused with "need 1 to 200" (RAID6 needs 4) and 3 with raid's
/// "4..=255" (the engine takes at most 200).
#[test]
fn member_counts_are_refused_with_the_engines_own_range() {
    let dir = tempfile::tempdir().unwrap();
    let (_paths, devs) = common::members(dir.path(), 220, MIB);
    for (spec, n, want) in [
        (
            "raid6",
            220,
            "raid6 left-symmetric needs 4..=200 members (a raid-engine superblock holds at most 200 roles), got 220",
        ),
        (
            "raid6",
            3,
            "raid6 left-symmetric needs 4..=200 members, got 3",
        ),
        ("raid10:n3", 2, "needs 3..=200 members"),
        ("raid5", 201, "needs 2..=200 members"),
        (
            "linear",
            201,
            "linear needs 1..=200 members (a raid-engine superblock holds at most 200 roles), got 201",
        ),
        ("raid1", 0, "needs 1..=200 members, got 0"),
    ] {
        let opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        let e = Volume::create(devs[..n].to_vec(), &opts).unwrap_err();
        assert!(
            matches!(&e, raid_engine::EngineError::Invalid { field, .. } if field == "devices"),
            "{spec} over {n}: {e}"
        );
        assert!(e.to_string().contains(want), "{spec} over {n}: {e}");
    }
    // Where raid's own limit is the one that refuses, raid's message says
    // raid's range.
    let e = raid::Geometry::new(
        raid::Layout::default_for(raid::Level::Raid6),
        128,
        &[1 << 20; 256],
    )
    .unwrap_err();
    assert!(e.to_string().contains("4..=255 members, got 256"), "{e}");
}
