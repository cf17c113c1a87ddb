//! Group commit: concurrent callers are acknowledged only once their records are durable, a
//! batch covers every change appended while the previous one was written, a failed batch undoes
//! every change not yet durable, and a process killed with SIGKILL while 64 callers allocate
//! recovers every acknowledged allocation, with no overlap.

mod common;
#[path = "common/sink.rs"]
mod sink;

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, Error, GIB, GroupCommit,
    JournalSink, SliceId, recover,
};

fn fresh() -> Allocator {
    Allocator::new(AllocatorConfig::default()).unwrap()
}

/// A sink whose `sync` waits for the test's go-ahead (after telling it a sync started), and
/// fails when told to.
struct Gated {
    data: Arc<Mutex<Vec<u8>>>,
    started: mpsc::Sender<()>,
    go: mpsc::Receiver<bool>,
}

impl JournalSink for Gated {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.lock().unwrap().extend_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let _ = self.started.send(());
        if self.go.recv().unwrap_or(true) {
            Ok(())
        } else {
            Err(io::Error::other("injected fsync failure"))
        }
    }
}

/// A gated sink, its data, "a sync started" and "finish the sync (true) or fail it".
type GatedParts = (
    Gated,
    Arc<Mutex<Vec<u8>>>,
    mpsc::Receiver<()>,
    mpsc::Sender<bool>,
);

/// A group commit with its gated sink's data, "a sync started" and "finish it (true) or fail".
type GatedGroup = (
    Arc<GroupCommit<Gated>>,
    Arc<Mutex<Vec<u8>>>,
    mpsc::Receiver<()>,
    mpsc::Sender<bool>,
);

fn gated() -> GatedParts {
    let data = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let sink = Gated {
        data: Arc::clone(&data),
        started: started_tx,
        go: go_rx,
    };
    (sink, data, started, go)
}

/// A group commit on a gated sink with device 1 of 100 GiB (2 syncs done), its data, "a sync
/// started" and "finish the sync (true) or fail it".
fn gated_group() -> GatedGroup {
    let (sink, data, started, go) = gated();
    go.send(true).unwrap(); // the header's sync
    let g = Arc::new(GroupCommit::create(fresh(), sink, 0, u64::MAX).unwrap());
    started.recv().unwrap();
    go.send(true).unwrap();
    g.add_device(DeviceSpec::new(DeviceId::new(1), 100 * GIB).unwrap())
        .unwrap();
    started.recv().unwrap();
    (g, data, started, go)
}

/// Starts `n` allocations of 1 GiB on their own threads and waits until all of them are
/// applied in memory (so their records are appended and they wait for a sync).
fn start_allocations(
    g: &Arc<GroupCommit<Gated>>,
    n: usize,
) -> Vec<std::thread::JoinHandle<Result<SliceId, Error>>> {
    let before = g.with_allocator(Allocator::slice_count);
    let handles = (0..n)
        .map(|_| {
            let g = Arc::clone(g);
            std::thread::spawn(move || g.allocate(GIB, &Constraints::any()).map(|s| s.id))
        })
        .collect();
    while g.with_allocator(Allocator::slice_count) < before + n {
        std::thread::yield_now();
    }
    handles
}

#[test]
fn callers_arriving_during_a_sync_share_the_next_one() {
    let (g, data, started, go) = gated_group();
    // One caller leads a batch and blocks in its sync; ten more arrive meanwhile.
    let first = start_allocations(&g, 1);
    started.recv().unwrap();
    let rest = start_allocations(&g, 10);
    // Nothing of theirs is acknowledged yet.
    assert!(rest.iter().all(|h| !h.is_finished()));
    go.send(true).unwrap(); // first batch done
    started.recv().unwrap(); // the next leader syncs all ten at once
    go.send(true).unwrap();
    for h in first.into_iter().chain(rest) {
        h.join().unwrap().unwrap();
    }
    let stats = g.stats();
    assert_eq!((stats.batches, stats.records), (3, 12));
    let bytes = data.lock().unwrap().clone();
    let r = recover(None, &bytes, AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.slice_count(), 11);
    assert_eq!(r.last_seq, 12);
    common::check_invariants(&r.allocator).unwrap();
}

#[test]
fn a_failed_sync_undoes_every_change_not_yet_durable() {
    let (g, _data, started, go) = gated_group();
    let durable = g.snapshot();
    let first = start_allocations(&g, 1);
    started.recv().unwrap();
    let rest = start_allocations(&g, 5);
    go.send(false).unwrap(); // the first batch fails
    for h in first.into_iter().chain(rest) {
        let err = h.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::JournalWrite(_)), "{err}");
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
    }
    // Memory is back at the durable state, next slice id included (the six undone ids were
    // never acknowledged; their sequence numbers are reused too); new changes are refused
    // until a new journal.
    let now = g.with_allocator(|a| a.snapshot(durable.last_seq));
    assert_eq!(now, durable);
    let err = g.allocate(GIB, &Constraints::any()).unwrap_err();
    assert!(matches!(err, Error::JournalPoisoned), "{err}");
    let stored = Mutex::new(None);
    g.condense(
        |s| {
            *stored.lock().unwrap() = Some(s.clone());
            Ok(())
        },
        Gated {
            data: Arc::new(Mutex::new(Vec::new())),
            started: mpsc::channel().0,
            go: {
                let (tx, rx) = mpsc::channel();
                drop(tx); // every sync succeeds
                rx
            },
        },
    )
    .unwrap();
    g.allocate(GIB, &Constraints::any()).unwrap();
    let snapshot = stored.into_inner().unwrap().unwrap();
    assert_eq!(snapshot, now);
    let g = Arc::into_inner(g).unwrap();
    let (alloc, sink) = g.into_parts();
    let journal = sink.data.lock().unwrap().clone();
    let r = recover(Some(&snapshot), &journal, AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.snapshot(0), alloc.snapshot(0));
}

#[test]
fn many_threads_on_a_real_file_recover_exactly() {
    let dir = scratch("many-threads");
    let path = dir.join("journal");
    let config = AllocatorConfig {
        multi_extent: true,
        ..AllocatorConfig::default()
    };
    let g = Arc::new(
        GroupCommit::create(
            Allocator::new(config.clone()).unwrap(),
            sink::FileSink::create(&path).unwrap(),
            0,
            u64::MAX,
        )
        .unwrap(),
    );
    for d in 1..=4 {
        g.add_device(DeviceSpec::new(DeviceId::new(d), 1000 * GIB).unwrap())
            .unwrap();
    }
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let g = Arc::clone(&g);
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    let s = g
                        .allocate_range(GIB, (1 + (t + i) % 5) * GIB, &Constraints::any())
                        .unwrap();
                    if i % 3 == 0 {
                        g.free(s.id).unwrap();
                    } else if i % 3 == 1 {
                        g.grow(s.id, s.size() + GIB).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (alloc, _sink) = Arc::into_inner(g).unwrap().into_parts();
    let bytes = std::fs::read(&path).unwrap();
    let r = recover(None, &bytes, config).unwrap();
    assert_eq!(r.valid_len, bytes.len());
    assert_eq!(r.allocator.snapshot(0), alloc.snapshot(0));
    common::check_invariants(&r.allocator).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A fresh directory under the target directory (a real file system, unlike a tmpfs).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CHILD_ENV: &str = "SLICE_ALLOC_CRASH_CHILD_DIR";
const CALLERS: u64 = 64;

/// The child of `sigkill_while_64_callers_allocate_loses_no_acknowledged_allocation`: only
/// does something when started by it. 64 threads allocate through a group-committed journal
/// file and append a line per acknowledged allocation to `acks` (after the call returned), and
/// one per slice they are about to free (before the call), until the parent kills the process.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let g = Arc::new(
        GroupCommit::create(
            fresh(),
            sink::FileSink::create(&dir.join("journal")).unwrap(),
            0,
            u64::MAX,
        )
        .unwrap(),
    );
    for d in 1..=8 {
        g.add_device(DeviceSpec::new(DeviceId::new(d), 100_000 * GIB).unwrap())
            .unwrap();
    }
    let acks = Arc::new(Mutex::new(std::fs::File::create(dir.join("acks")).unwrap()));
    let threads: Vec<_> = (0..CALLERS)
        .map(|t| {
            let (g, acks) = (Arc::clone(&g), Arc::clone(&acks));
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let s = g
                        .allocate((1 + (t + i) % 4) * GIB, &Constraints::any())
                        .unwrap();
                    let e = s.extents[0];
                    let line = format!(
                        "{} {} {} {}\n",
                        s.id.get(),
                        s.device.get(),
                        e.offset(),
                        e.len()
                    );
                    acks.lock().unwrap().write_all(line.as_bytes()).unwrap();
                    if i % 4 == 3 {
                        // Logged before the call: a free may be durable before it returns.
                        let line = format!("free {}\n", s.id.get());
                        acks.lock().unwrap().write_all(line.as_bytes()).unwrap();
                        g.free(s.id).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn sigkill_while_64_callers_allocate_loses_no_acknowledged_allocation() {
    let dir = scratch("crash");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it acknowledge a few thousand allocations, then SIGKILL it (by its PID).
    let acks_path = dir.join("acks");
    loop {
        let n = std::fs::read(&acks_path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if n >= 3000 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let journal = std::fs::read(dir.join("journal")).unwrap();
    let r = recover(None, &journal, AllocatorConfig::default()).unwrap();
    common::check_invariants(&r.allocator).unwrap();
    // Every acknowledged allocation is there with its extent, unless a free of it was started.
    let acks = std::fs::File::open(&acks_path).unwrap();
    let mut live = std::collections::BTreeMap::new();
    for line in io::BufReader::new(acks).lines() {
        let line = line.unwrap();
        let f: Vec<&str> = line.split(' ').collect();
        match f[..] {
            ["free", id] => {
                live.remove(&id.parse::<u64>().unwrap());
            }
            [id, dev, off, len] => {
                let p = |s: &str| s.parse::<u64>().unwrap();
                live.insert(p(id), (p(dev), p(off), p(len)));
            }
            _ => {} // the last line, cut by the kill
        }
    }
    assert!(
        live.len() > 1000,
        "{} live acknowledged allocations",
        live.len()
    );
    for (&id, &(dev, off, len)) in &live {
        let s = r
            .allocator
            .slice(SliceId::new(id))
            .unwrap_or_else(|| panic!("acknowledged slice {id} lost"));
        assert_eq!(s.device, DeviceId::new(dev));
        assert_eq!((s.extents[0].offset(), s.extents[0].len()), (off, len));
    }
    // The recovered journal continues after truncation to `valid_len`, with fresh ids.
    let path = dir.join("journal");
    let valid = r.valid_len as u64;
    let max_id = r.allocator.slices().map(|s| s.id).max().unwrap();
    let g =
        GroupCommit::resume(r, sink::FileSink::resume(&path, valid).unwrap(), u64::MAX).unwrap();
    let more = g.allocate(GIB, &Constraints::any()).unwrap();
    assert!(more.id > max_id);
    let (alloc, _) = g.into_parts();
    let r = recover(
        None,
        &std::fs::read(&path).unwrap(),
        AllocatorConfig::default(),
    )
    .unwrap();
    assert_eq!(r.allocator.snapshot(0), alloc.snapshot(0));
    std::fs::remove_dir_all(dir).unwrap();
}
