//! Crash consistency: a process writing through the engine is killed with
//! SIGKILL in the middle of its writes. After reassembly (which resyncs the
//! regions the write-intent bitmap marks) every mirror copy agrees, and
//! every write that was acknowledged before an acknowledged flush is there
//! (or was overwritten by a later write to the same block).
//!
//! The check is shown to have teeth: with a deliberate bug injected into
//! the writer (feature `fault-injection`: data written before its
//! write-intent bit, or a RAID6 Q never written) and the writer killed
//! between the member writes of one stripe, the same check fails.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use std::os::unix::process::ExitStatusExt;

use raid_engine::fault::Fault;
use raid_engine::{BlockDevice, CacheMode, CreateOptions, FileDevice, Volume, VolumeLayout};

const BLOCK: usize = 4096;
const CHILD_ENV: &str = "RAID_ENGINE_CRASH_CHILD_DIR";
/// Faults (`Fault::parse_list`) the writer injects into its volume.
const FAULT_ENV: &str = "RAID_ENGINE_CRASH_CHILD_FAULTS";

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
    if let Ok(faults) = std::env::var(FAULT_ENV) {
        vol.inject_faults(&Fault::parse_list(&faults).unwrap());
    }
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
    crash_rounds("raid10:n2", &kills_from_outside(5)).unwrap();
}

#[test]
fn killed_raid6_writer_leaves_consistent_parity_with_every_flushed_write() {
    crash_rounds("raid6:left-symmetric", &kills_from_outside(5)).unwrap();
}

/// Member writes per 4 KiB write: RAID10 n2 writes two copies; RAID6 over
/// four members writes the data chunk, P and Q.
const RAID10_WRITES: u64 = 2;
const RAID6_WRITES: u64 = 3;

/// Crash points just after the first member write of the k-th write of a
/// round (a torn stripe or mirror), for a few k.
fn torn_writes(per_write: u64, faults: &str) -> Vec<Kill> {
    [700, 1100, 1500]
        .iter()
        .map(|k| Kill::Inside(format!("{faults},kill-after={}", k * per_write + 1)))
        .collect()
}

#[test]
fn raid6_writer_killed_between_data_and_parity_is_made_consistent_by_resync() {
    crash_rounds("raid6:left-symmetric", &torn_writes(RAID6_WRITES, "")).unwrap();
}

#[test]
fn raid10_writer_killed_between_copies_is_made_consistent_by_resync() {
    crash_rounds("raid10:n2", &torn_writes(RAID10_WRITES, "")).unwrap();
}

/// The negative cases: the same check, the writer with a deliberate bug.
fn assert_check_fails(layout: &str, kills: &[Kill], bug: &str) {
    match crash_rounds(layout, kills) {
        Ok(()) => panic!("{layout}: the crash check passed although the writer had the bug {bug}"),
        Err(e) => assert!(
            e.contains("disagree after resync"),
            "{layout} with {bug}: the check failed, but not on the copies/parity: {e}"
        ),
    }
}

#[test]
fn raid6_crash_check_fails_when_data_is_written_before_its_intent_bit() {
    assert_check_fails(
        "raid6:left-symmetric",
        &torn_writes(RAID6_WRITES, "skip-intent-bit")[..1],
        "skip-intent-bit",
    );
}

#[test]
fn raid6_crash_check_fails_when_q_is_never_written() {
    assert_check_fails(
        "raid6:left-symmetric",
        &torn_writes(RAID6_WRITES, "stale-q")[..1],
        "stale-q",
    );
}

#[test]
fn raid10_crash_check_fails_when_data_is_written_before_its_intent_bit() {
    assert_check_fails(
        "raid10:n2",
        &torn_writes(RAID10_WRITES, "skip-intent-bit")[..1],
        "skip-intent-bit",
    );
}

/// How a round's writer dies.
#[derive(Debug, Clone)]
enum Kill {
    /// SIGKILL from this process once the writer has logged `n` flushed
    /// writes (wherever it happens to be).
    Outside(usize),
    /// The writer runs with these faults, the last of which is a
    /// `kill-after=N` crash point, and kills itself there.
    Inside(String),
}

fn kills_from_outside(rounds: usize) -> Vec<Kill> {
    (1..=rounds).map(|r| Kill::Outside(400 * r)).collect()
}

/// Rounds of: start the writer, let it die, reassemble, check. `Err`
/// describes the first failed check.
fn crash_rounds(layout: &str, kills: &[Kill]) -> Result<(), String> {
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
    for (round, kill) in kills.iter().enumerate() {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path());
        match kill {
            Kill::Outside(want) => {
                let mut child = cmd.spawn().unwrap();
                // Let it get well into its writes: wait for flushed entries.
                loop {
                    let n = std::fs::read_to_string(dir.path().join("log"))
                        .unwrap()
                        .lines()
                        .count();
                    if n >= *want {
                        break;
                    }
                    if let Some(st) = child.try_wait().unwrap() {
                        panic!("writer exited early with {st}");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
            }
            Kill::Inside(faults) => {
                let st = cmd.env(FAULT_ENV, faults).status().unwrap();
                assert_eq!(
                    st.signal(),
                    Some(9),
                    "the writer with {faults} should have killed itself, it exited with {st}"
                );
            }
        }

        let vol = Volume::assemble(common::reopen(&paths(dir.path())), None).unwrap();
        let report = vol.scrub(false).unwrap();
        if !report.mismatches.is_empty() {
            return Err(format!(
                "{layout} round {round}: copies or parity disagree after resync: {:?}",
                report.mismatches
            ));
        }
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
            if !(got_seq >= seq && got == block(got_seq, b)) {
                return Err(format!(
                    "{layout} round {round}: block {b} holds write {got_seq}, flushed write {seq} is lost"
                ));
            }
        }
        vol.close().unwrap();
    }
    Ok(())
}
