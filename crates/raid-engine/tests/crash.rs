//! Crash consistency: a process writing through the engine is killed with
//! SIGKILL in the middle of its writes. After reassembly (which resyncs the
//! regions the write-intent bitmap marks) every mirror copy agrees, and
//! every write that was acknowledged before an acknowledged flush is there
//! (or was overwritten by a later write to the same block).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use raid_engine::{BlockDevice, CacheMode, CreateOptions, FileDevice, Volume, VolumeLayout};

const BLOCK: usize = 4096;
const CHILD_ENV: &str = "RAID_ENGINE_CRASH_CHILD_DIR";

fn block(seq: u64, blockno: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(BLOCK);
    while b.len() < BLOCK {
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&blockno.to_le_bytes());
    }
    b
}

fn paths(dir: &std::path::Path) -> Vec<PathBuf> {
    (0..4).map(|i| dir.join(format!("m{i}"))).collect()
}

/// The writer. Runs only in the child process (the test binary started
/// again with the environment variable set).
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let devs: Vec<Arc<dyn BlockDevice>> = paths(&dir)
        .iter()
        .map(|p| Arc::new(FileDevice::open(p, CacheMode::DirectIfSupported).unwrap()) as _)
        .collect();
    let vol = Volume::assemble(devs, None).unwrap();
    let blocks = vol.size() / BLOCK as u64;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    // Continue the sequence of earlier rounds: past every logged write and
    // the few unlogged ones that may have followed it.
    let base = std::fs::read_to_string(dir.join("log"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 100;
    let mut x: u64 = (0x2545_f491_4f6c_dd1d ^ base) | 1;
    let mut pending = Vec::new();
    for seq in base.. {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x % blocks;
        vol.write_at(&block(seq, b), b * BLOCK as u64).unwrap();
        pending.push((seq, b));
        if seq % 8 == 0 {
            vol.flush().unwrap();
            let mut s = String::new();
            for (q, b) in pending.drain(..) {
                s.push_str(&format!("{q} {b}\n"));
            }
            log.write_all(s.as_bytes()).unwrap();
            log.sync_data().unwrap();
        }
    }
}

#[test]
fn killed_raid10_writer_leaves_agreeing_copies_with_every_flushed_write() {
    crash_rounds("raid10:n2");
}

#[test]
fn killed_raid6_writer_leaves_consistent_parity_with_every_flushed_write() {
    crash_rounds("raid6:left-symmetric");
}

fn crash_rounds(layout: &str) {
    let dir = common::scratch();
    for p in paths(dir.path()) {
        FileDevice::create(&p, 4 << 20, CacheMode::Buffered).unwrap();
    }
    std::fs::write(dir.path().join("log"), "").unwrap();
    {
        let devs: Vec<Arc<dyn BlockDevice>> = common::reopen(&paths(dir.path()));
        let mut opts = CreateOptions::new(VolumeLayout::parse(layout).unwrap());
        opts.chunk_sectors = 16;
        opts.bitmap_region_bytes = 64 << 10;
        let v = Volume::create(devs, &opts).unwrap();
        v.resync_all().unwrap();
        v.close().unwrap();
    }
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .spawn()
            .unwrap();
        // Let it get well into its writes: wait for flushed entries.
        let want = 400 * (round + 1);
        loop {
            let n = std::fs::read_to_string(dir.path().join("log"))
                .unwrap()
                .lines()
                .count();
            if n >= want {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!("writer exited early with {st}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let vol = Volume::assemble(common::reopen(&paths(dir.path())), None).unwrap();
        let report = vol.scrub(false).unwrap();
        assert!(
            report.mismatches.is_empty(),
            "{layout} round {round}: copies or parity disagree after resync: {:?}",
            report.mismatches
        );
        // The last flushed write of each block, or a later one, is there.
        let mut last: HashMap<u64, u64> = HashMap::new();
        for line in std::fs::read_to_string(dir.path().join("log"))
            .unwrap()
            .lines()
        {
            let mut it = line.split(' ').map(|t| t.parse::<u64>().unwrap());
            let (seq, b) = (it.next().unwrap(), it.next().unwrap());
            last.insert(b, seq);
        }
        for (&b, &seq) in &last {
            let mut got = vec![0u8; BLOCK];
            vol.read_at(&mut got, b * BLOCK as u64).unwrap();
            let got_seq = u64::from_le_bytes(got[..8].try_into().unwrap());
            assert!(
                got_seq >= seq && got == block(got_seq, b),
                "{layout} round {round}: block {b} holds write {got_seq}, flushed write {seq} is lost"
            );
        }
        vol.close().unwrap();
    }
}
