//! `Volume::fail_member` refuses exactly the failures that would leave some
//! data with no readable copy, as `raid`'s failure analysis decides them
//! (like `mdadm --fail`, which will not fail the last copy); a refused call
//! changes nothing: superblocks and bitmaps stay byte-equal and every byte
//! still reads back. `fail_member_forced` goes beyond the tolerance.

mod common;

use std::path::PathBuf;

use raid::FailureModel;
use raid_engine::{CreateOptions, EngineError, Health, MemberState, Volume, VolumeLayout};

const MEMBER_BYTES: u64 = 512 << 10;
/// 32 KiB before the data: superblock and a small bitmap.
const DATA_OFFSET_SECTORS: u64 = 64;

const CASES: &[(&str, usize)] = &[
    ("raid1", 2),
    ("raid1", 3),
    ("raid10:n2", 3),
    ("raid10:n2", 4),
    ("raid10:f2", 4),
    ("raid10:o2", 3),
    ("raid4", 3),
    ("raid5:left-symmetric", 4),
    ("raid6:left-symmetric", 5),
    ("raid0", 2),
    ("linear", 2),
];

/// Every order of `0..n`.
fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for o in orders(n - 1) {
        for i in 0..=o.len() {
            let mut p = o.clone();
            p.insert(i, n - 1);
            out.push(p);
        }
    }
    out
}

fn metadata(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            let mut b = std::fs::read(p).unwrap();
            b.truncate((DATA_OFFSET_SECTORS * 512) as usize);
            b
        })
        .collect()
}

/// Members failed one at a time, in every order: each call is refused
/// exactly when the analysis says the failed set plus that member loses
/// data, and a refusal leaves the volume as it was.
#[test]
fn refuses_exactly_the_failures_that_lose_data() {
    let mut refused = 0;
    for &(spec, n) in CASES {
        let mut accepted = 0;
        for order in orders(n) {
            let what = format!("{spec} over {n}, failing in the order {order:?}");
            let dir = common::scratch();
            let (paths, devs) = common::members(dir.path(), n, MEMBER_BYTES);
            let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
            opts.chunk_sectors = 16;
            opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
            let vol = Volume::create(devs, &opts).unwrap();
            let data = common::pattern(n as u64 + spec.len() as u64, vol.size() as usize);
            vol.write_at(&data, 0).unwrap();
            vol.flush().unwrap();
            // A linear volume has one copy of every byte: any role loses data.
            let model = vol.geometry().map(FailureModel::new);
            let loses = |set: &[usize]| match &model {
                Some(m) => m.loses_data(set).unwrap(),
                None => true,
            };
            let mut failed: Vec<usize> = Vec::new();
            let mut refusal = None;
            for &r in &order {
                let mut set = failed.clone();
                set.push(r);
                set.sort_unstable();
                let meta = metadata(&paths);
                let status = vol.status();
                let health = vol.health();
                let would = vol.health_if_failed(&[r]).unwrap();
                assert_eq!(would.loses_data(), loses(&set), "{what}: role {r}");
                match vol.fail_member(r) {
                    Ok(()) => {
                        assert!(!loses(&set), "{what}: failing {set:?} was allowed");
                        failed = set;
                        assert_eq!(
                            vol.health(),
                            Health::Degraded {
                                unavailable: failed.clone()
                            },
                            "{what}"
                        );
                        accepted += 1;
                    }
                    Err(EngineError::Invalid { field, rule }) => {
                        assert!(loses(&set), "{what}: failing {set:?} was refused: {rule}");
                        assert_eq!(field, "role", "{what}");
                        assert!(
                            rule.contains(&format!("failing role {r} of the ")),
                            "{rule}"
                        );
                        assert!(rule.contains("copy left"), "{rule}");
                        for f in &set {
                            assert!(rule.contains(&format!("role {f} (")), "{what}: {rule}");
                        }
                        if let Health::DataLost { reason, .. } = &would {
                            assert!(rule.ends_with(reason.as_str()), "{what}: {rule}");
                        }
                        assert!(metadata(&paths) == meta, "{what}: metadata changed");
                        assert_eq!(vol.status(), status, "{what}");
                        assert_eq!(vol.health(), health, "{what}");
                        let mut back = vec![0u8; data.len()];
                        vol.read_at(&mut back, 0).unwrap();
                        assert!(back == data, "{what}: data changed after a refusal");
                        refusal.get_or_insert(r);
                        refused += 1;
                    }
                    Err(e) => panic!("{what}: role {r}: wrong error {e}"),
                }
                // Failing a member already failed stays a no-op success.
                if let Some(&f) = failed.first() {
                    vol.fail_member(f).unwrap();
                    assert_eq!(vol.health().unavailable(), &failed[..], "{what}");
                }
            }
            // Every order ends with a refusal: no layout survives losing
            // every member.
            let r = refusal.unwrap_or_else(|| panic!("{what}: nothing was refused"));
            // The opt-in fails it anyway, and the volume then reports the loss.
            match vol.fail_member_forced(r) {
                Ok(()) => {}
                // It failed the last member: failed all the same.
                Err(EngineError::Unavailable(m))
                    if vol.status().iter().all(|s| s.state != MemberState::Active) =>
                {
                    assert_eq!(m, "every member has failed", "{what}")
                }
                Err(e) => panic!("{what}: forced failure of role {r}: {e}"),
            }
            assert_eq!(vol.status()[r].state, MemberState::Failed, "{what}");
            assert!(vol.health().loses_data(), "{what}: {:?}", vol.health());
            let mut back = vec![0u8; data.len()];
            assert!(
                matches!(vol.read_at(&mut back, 0), Err(EngineError::Unavailable(_))),
                "{what}"
            );
        }
        assert!(
            accepted > 0 || matches!(spec, "raid0" | "linear"),
            "{spec}/{n}: every failure refused"
        );
    }
    assert!(refused > 0);
}

/// Two callers failing the two copies at once: exactly one is refused.
#[test]
fn concurrent_failures_do_not_both_pass() {
    for _ in 0..20 {
        let dir = common::scratch();
        let (_paths, devs) = common::members(dir.path(), 2, MEMBER_BYTES);
        let mut opts = CreateOptions::new(VolumeLayout::parse("raid1").unwrap());
        opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
        let vol = Volume::create(devs, &opts).unwrap();
        let results: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|r| {
                    let vol = &vol;
                    s.spawn(move || vol.fail_member(r).is_ok())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
        assert!(!vol.health().loses_data());
    }
}

/// A role out of range is refused as before, for both calls.
#[test]
fn out_of_range_roles_are_invalid() {
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), 2, MEMBER_BYTES);
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid1").unwrap());
    opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
    let vol = Volume::create(devs, &opts).unwrap();
    for res in [
        vol.fail_member(2),
        vol.fail_member_forced(2),
        vol.health_if_failed(&[2]).map(|_| ()),
    ] {
        match res {
            Err(EngineError::Invalid { field, rule }) => {
                assert_eq!(field, "role");
                assert!(rule.contains("not below the member count 2"), "{rule}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The refusal the README shows, word for word (with this test's paths).
#[test]
fn the_refusal_message_names_the_role_its_device_and_the_lost_chunks() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 4, 4 << 20);
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid10:n2").unwrap());
    opts.chunk_sectors = 1024;
    opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
    let vol = Volume::create(devs, &opts).unwrap();
    vol.fail_member(2).unwrap();
    // As messages name a device (`storage_units::quote_path`): a plain
    // path as it is.
    let p = |r: usize| paths[r].display().to_string();
    let msg = vol.fail_member(3).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "invalid role: failing role 3 of the raid10 n2 volume of 4 members is \
             refused because it would lose data (as mdadm --fail refuses the last copy): \
             role 2 ({}, failed) and role 3 ({}, if failed) are unavailable; roles 2 and 3 \
             hold both copies of the odd chunks (512 KiB each, the first at volume bytes \
             524288..1048576): that data has no copy left",
            p(2),
            p(3)
        )
    );
    // Roles 0 and 2 hold no chunk's both copies: role 0 may go.
    vol.fail_member(0).unwrap();
}

/// A member failed while it is being rebuilt stays failed: the rebuild
/// stops with an error naming it instead of finishing and making the
/// member active again (reads would then come from a member the caller
/// failed, with a part of it never copied). Replaced again, it rebuilds and
/// every byte reads back.
#[test]
fn a_member_failed_during_its_rebuild_stays_failed() {
    for (spec, n) in [("raid1", 3), ("raid10:n2", 4), ("raid5:left-symmetric", 4)] {
        let dir = common::scratch();
        let (_, devs) = common::members(dir.path(), n, MEMBER_BYTES);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 16;
        opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
        let vol = Volume::create(devs, &opts).unwrap();
        let data = common::pattern(7, vol.size() as usize);
        vol.write_at(&data, 0).unwrap();
        vol.flush().unwrap();
        vol.fail_member(0).unwrap();
        let spare = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            common::members(&d, 1, MEMBER_BYTES).1.remove(0)
        };
        let fresh = spare("spare");
        vol.replace(0, fresh).unwrap();
        let failed_once = std::sync::atomic::AtomicBool::new(false);
        let fail_it = |_: raid_engine::Progress| {
            if !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                vol.fail_member(0).unwrap();
            }
        };
        let e = vol
            .rebuild(
                0,
                &raid_engine::RebuildOptions {
                    max_bytes_per_sec: None,
                    progress: Some(&fail_it),
                },
            )
            .expect_err(spec);
        assert!(e.to_string().contains("member 0"), "{spec}: {e}");
        assert_eq!(vol.status()[0].state, MemberState::Failed, "{spec}");
        assert!(!matches!(vol.health(), Health::Whole), "{spec}");
        vol.replace(0, spare("again")).unwrap();
        vol.rebuild(0, &raid_engine::RebuildOptions::default())
            .unwrap();
        assert_eq!(vol.status()[0].state, MemberState::Active, "{spec}");
        // Role 0's bytes are now needed: the rebuilt member serves them.
        vol.fail_member(1).unwrap();
        let mut back = vec![0; data.len()];
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == data, "{spec}: data differs with role 1 failed");
    }
}
