//! Rebuild and re-add run while the volume serves writes and reads, and a
//! throttled rebuild reports monotone progress.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use raid_engine::{
    CacheMode, CreateOptions, FileDevice, MemberState, Progress, RebuildOptions, Volume,
    VolumeLayout,
};

fn online(spec: &str, n: usize, replace: bool) {
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), n, 4 << 20);
    let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
    opts.chunk_sectors = 16;
    opts.bitmap_region_bytes = 64 << 10;
    let vol = Arc::new(Volume::create(devs, &opts).unwrap());
    let size = vol.size() as usize;
    let model = Arc::new(Mutex::new(vec![0u8; size]));
    vol.read_at(&mut model.lock().unwrap(), 0).unwrap();
    let first = common::pattern(9, size);
    vol.write_at(&first, 0).unwrap();
    model.lock().unwrap().copy_from_slice(&first);
    vol.fail_member(1).unwrap();
    // Degraded writes that the returning member misses.
    let w = common::pattern(10, 300_000);
    vol.write_at(&w, 123_456).unwrap();
    model.lock().unwrap()[123_456..423_456].copy_from_slice(&w);
    if replace {
        let fresh =
            FileDevice::create(dir.path().join("fresh"), 4 << 20, CacheMode::Buffered).unwrap();
        vol.replace(1, Arc::new(fresh)).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (vol, model, stop) = (vol.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) || i < 20 {
                let off = (i * 7919 * 512) % (size as u64 - 70_000);
                let data = common::pattern(100 + i, 65_536 + (i as usize % 7) * 512);
                // Hold the model lock across the write so the model's order
                // is the volume's order.
                let mut m = model.lock().unwrap();
                vol.write_at(&data, off).unwrap();
                m[off as usize..off as usize + data.len()].copy_from_slice(&data);
                drop(m);
                let mut back = vec![0u8; 4096];
                vol.read_at(&mut back, off).unwrap();
                i += 1;
            }
            i
        })
    };
    let last = AtomicU64::new(0);
    let cb = |p: Progress| {
        assert!(p.done_bytes >= last.swap(p.done_bytes, Ordering::SeqCst));
        assert!(p.done_bytes <= p.total_bytes);
    };
    let opts = RebuildOptions {
        max_bytes_per_sec: Some(64 << 20),
        progress: Some(&cb),
    };
    let p = if replace {
        vol.rebuild(1, &opts).unwrap()
    } else {
        vol.readd(1, None, &opts).unwrap()
    };
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    assert!(writes >= 20);
    assert_eq!(p.done_bytes, last.load(Ordering::SeqCst));
    assert!(vol.status().iter().all(|s| s.state == MemberState::Active));
    assert!(
        vol.scrub(false).unwrap().mismatches.is_empty(),
        "{spec}: copies differ after an online recovery"
    );
    let mut back = vec![0u8; size];
    vol.read_at(&mut back, 0).unwrap();
    assert!(back == *model.lock().unwrap(), "{spec}: data differs");
    // Every other member can now fail in turn and the data still reads back.
    for m in [0, 2] {
        vol.fail_member(m).unwrap();
        vol.read_at(&mut back, 0).unwrap();
        assert!(
            back == *model.lock().unwrap(),
            "{spec}: data differs without member {m}"
        );
        vol.readd(m, None, &RebuildOptions::default()).unwrap();
    }
}

#[test]
fn raid1_rebuild_online() {
    online("raid1", 3, true);
}

#[test]
fn raid10_readd_and_rebuild_online() {
    online("raid10:n2", 4, false);
    online("raid10:f2", 4, true);
}

#[test]
fn raid6_readd_and_rebuild_online() {
    online("raid6:left-symmetric", 5, false);
    online("raid6:left-symmetric", 5, true);
}

#[test]
fn raid5_rebuild_online() {
    online("raid5:left-symmetric", 4, true);
}

/// However many threads share a request's member I/O (one: member after
/// member on the caller; two; one per member), large writes and reads land
/// the same bytes, copies and parity agree, and reading with another limit
/// than the one that wrote gives the same data.
#[test]
fn member_thread_limits_give_the_same_bytes() {
    for (spec, n) in [("raid10:n2", 4), ("raid6:left-symmetric", 5)] {
        let dir = common::scratch();
        let (_paths, devs) = common::members(dir.path(), n, 8 << 20);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 128;
        let vol = Volume::create(devs, &opts).unwrap();
        vol.resync_all().unwrap();
        let size = vol.size() as usize;
        let mut model = vec![0u8; size];
        vol.read_at(&mut model, 0).unwrap();
        for (i, limit) in [0usize, 1, 2, 3, 0, 2, 1].into_iter().enumerate() {
            vol.set_member_threads(limit);
            let len = (1 << 20) + i * 4096 + 512;
            let off = (i * 777 * 512) % (size - len);
            let data = common::pattern(40 + i as u64, len);
            vol.write_at(&data, off as u64).unwrap();
            model[off..off + len].copy_from_slice(&data);
            vol.set_member_threads((limit + 1) % 4);
            let mut back = vec![0u8; size];
            vol.read_at(&mut back, 0).unwrap();
            assert!(
                back == model,
                "{spec}: write {i} with limit {limit}: read back differs"
            );
        }
        let report = vol.scrub(false).unwrap();
        assert!(
            report.mismatches.is_empty(),
            "{spec}: {:?}",
            report.mismatches
        );
        vol.close().unwrap();
    }
}

/// On disk, a region's write-intent bit stays set while the region is
/// written between every two flushes, and is cleared by the first flush
/// after a flush interval without writes; closing leaves it clear.
#[test]
fn bitmap_bits_clear_at_the_second_quiet_flush() {
    use std::os::unix::fs::FileExt;
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, 4 << 20);
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid1").unwrap());
    opts.bitmap_region_bytes = 64 << 10;
    let vol = Volume::create(devs, &opts).unwrap();
    // The bitmap sits at 8 KiB on every member (see the README).
    let bits_on_disk = || {
        paths
            .iter()
            .map(|p| {
                let mut b = [0u8; 512];
                std::fs::File::open(p)
                    .unwrap()
                    .read_exact_at(&mut b, 8192)
                    .unwrap();
                b.iter().map(|x| x.count_ones()).sum::<u32>()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(bits_on_disk(), [0, 0]);
    for round in 0..3 {
        vol.write_at(&common::pattern(round, 4096), 0).unwrap();
        vol.flush().unwrap();
        assert_eq!(
            bits_on_disk(),
            [1, 1],
            "round {round}: written since the last flush"
        );
    }
    vol.flush().unwrap();
    assert_eq!(
        bits_on_disk(),
        [0, 0],
        "a flush interval without writes clears"
    );
    vol.write_at(&common::pattern(9, 4096), 0).unwrap();
    vol.close().unwrap();
    assert_eq!(bits_on_disk(), [0, 0], "close leaves the bitmap clear");
}

/// A replacement that is the device of another role still in use is
/// refused, naming that role, and changes nothing: a rebuild onto it would
/// overwrite that member. The failed role's own old device, or one that
/// held a role which has since failed, may be used.
#[test]
fn replace_refuses_a_device_of_a_role_in_use() {
    for (spec, n, in_use) in [("raid6:left-symmetric", 5, 2), ("raid1", 2, 0)] {
        let dir = common::scratch();
        let (_paths, devs) = common::members(dir.path(), n, 4 << 20);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 16;
        let vol = Volume::create(devs.clone(), &opts).unwrap();
        let data = common::pattern(21, vol.size() as usize);
        vol.write_at(&data, 0).unwrap();
        vol.fail_member(1).unwrap();
        let before: Vec<MemberState> = vol.status().iter().map(|s| s.state).collect();

        let e = vol
            .replace(1, devs[in_use].clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "holds role {in_use} of this volume, which is in use"
            )),
            "{spec}: {e}"
        );
        let e = vol
            .check_replacement(1, &*devs[in_use])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("role {in_use}")), "{spec}: {e}");
        let after: Vec<MemberState> = vol.status().iter().map(|s| s.state).collect();
        assert_eq!(before, after, "{spec}: a refused replace changed a state");
        let mut back = vec![0u8; data.len()];
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == data, "{spec}: data changed");

        // Role 1's own old device is a valid replacement.
        vol.replace(1, devs[1].clone()).unwrap();
        vol.rebuild(1, &RebuildOptions::default()).unwrap();
        assert!(vol.scrub(false).unwrap().mismatches.is_empty(), "{spec}");
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == data, "{spec}: data changed by the rebuild");
    }
}

/// `Volume::interrupt` stops a readd and a rebuild at their next step with
/// `EngineError::Interrupted`. An interrupted readd leaves the role
/// recorded failed while in sync, so that after a restart a readd (by
/// bitmap, not a full rebuild) completes it; an interrupted rebuild leaves
/// the replacement not in sync, and a rebuild after a restart completes
/// it. Either way the volume then scrubs clean and reads what was written.
#[test]
fn interrupted_readd_and_rebuild_can_be_run_again() {
    for readd in [true, false] {
        let dir = common::scratch();
        let (paths, devs) = common::members(dir.path(), 3, 4 << 20);
        let mut opts = CreateOptions::new(VolumeLayout::parse("raid5").unwrap());
        opts.chunk_sectors = 16;
        opts.bitmap_region_bytes = 64 << 10;
        let vol = Volume::create(devs, &opts).unwrap();
        vol.write_at(&common::pattern(1, vol.size() as usize), 0)
            .unwrap();
        vol.fail_member(1).unwrap();
        // Every region written while role 1 is away: its readd has many
        // steps.
        let data = common::pattern(2, vol.size() as usize);
        vol.write_at(&data, 0).unwrap();
        let stop = |_: Progress| vol.interrupt();
        let opts = RebuildOptions {
            max_bytes_per_sec: None,
            progress: Some(&stop),
        };
        let spare = dir.path().join("spare");
        let e = if readd {
            vol.readd(1, None, &opts).unwrap_err()
        } else {
            let d = FileDevice::create(&spare, 4 << 20, CacheMode::DirectIfSupported).unwrap();
            vol.replace(1, Arc::new(d)).unwrap();
            vol.rebuild(1, &opts).unwrap_err()
        };
        let what = if readd { "readd" } else { "rebuild" };
        assert!(
            matches!(e, raid_engine::EngineError::Interrupted(_)),
            "{what}: {e}"
        );
        assert_eq!(vol.status()[1].state, MemberState::Failed, "{what}");
        vol.close().unwrap();
        drop(vol);

        let mut given = paths.clone();
        if !readd {
            given[1] = spare.clone();
        }
        let vol = Volume::assemble(common::reopen(&given), None).unwrap();
        let condition = Volume::examine(&common::reopen(&given), None)
            .unwrap()
            .roles[1]
            .condition;
        if readd {
            assert_eq!(condition, raid_engine::RoleCondition::Faulty, "{what}");
            vol.readd(1, None, &RebuildOptions::default()).unwrap();
        } else {
            assert_eq!(condition, raid_engine::RoleCondition::Spare, "{what}");
            // As the CLI's rebuild does with the replacement given again.
            vol.replace(1, common::reopen(std::slice::from_ref(&spare)).remove(0))
                .unwrap();
            vol.rebuild(1, &RebuildOptions::default()).unwrap();
        }
        let r = vol.scrub(false).unwrap();
        assert!(r.mismatches.is_empty() && r.is_complete(), "{what}: {r:?}");
        let mut back = vec![0u8; data.len()];
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == data, "{what}: reads differ");
    }
}
