//! Durable allocations per second through [`GroupCommit`] on a real journal file with
//! `fdatasync`, with 64 concurrent callers against one caller (one sync per allocation) in the
//! same run, on the same device set.
//!
//! Each sample starts a fresh journal file under the target directory (on the file system
//! that holds it: say which in the figures) and an allocator with 8 devices of 100,000 GiB,
//! then times `iters` allocations of 1–4 GiB spread over the callers, from the moment the
//! callers are released until the last one is acknowledged. After the run it prints the mean
//! batch size (records per sync).

#[path = "../tests/common/sink.rs"]
#[allow(dead_code)] // shared with the tests, which also resume journals
mod sink;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GIB, GroupCommit, GroupStats,
};

fn journal_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-journal");
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir.join(format!("journal-{}", std::process::id()))
}

/// Runs `iters` durable allocations over `callers` threads; returns the time they took and the
/// group-commit counters.
fn run(callers: u64, iters: u64) -> (Duration, GroupStats) {
    let path = journal_path();
    let g = Arc::new(
        GroupCommit::create(
            Allocator::new(AllocatorConfig::default()).expect("config"),
            sink::FileSink::create(&path).expect("journal file"),
            0,
            u64::MAX,
        )
        .expect("journal header"),
    );
    for d in 1..=8 {
        g.add_device(DeviceSpec::new(DeviceId::new(d), 100_000 * GIB).expect("spec"))
            .expect("device");
    }
    let before = g.stats();
    let start = Arc::new(Barrier::new(callers as usize + 1));
    let threads: Vec<_> = (0..callers)
        .map(|t| {
            let (g, start) = (Arc::clone(&g), Arc::clone(&start));
            let n = iters / callers + u64::from(t < iters % callers);
            std::thread::spawn(move || {
                start.wait();
                for i in 0..n {
                    g.allocate((1 + (t + i) % 4) * GIB, &Constraints::any())
                        .expect("space for every allocation");
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for t in threads {
        t.join().expect("caller");
    }
    let took = t0.elapsed();
    let after = g.stats();
    drop(g);
    let _ = std::fs::remove_file(&path);
    (
        took,
        GroupStats {
            batches: after.batches - before.batches,
            records: after.records - before.records,
        },
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_allocate");
    group.throughput(Throughput::Elements(1));
    for callers in [64u64, 1] {
        let mut total = GroupStats::default();
        group.bench_function(format!("{callers}_callers"), |b| {
            b.iter_custom(|iters| {
                let (took, s) = run(callers, iters);
                total.batches += s.batches;
                total.records += s.records;
                took
            });
        });
        if total.batches > 0 {
            eprintln!(
                "durable_allocate/{callers}_callers: {} records in {} syncs, {:.1} records per sync",
                total.records,
                total.batches,
                total.records as f64 / total.batches as f64
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
