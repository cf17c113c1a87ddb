//! Throughput on the issue-5 fleet workload (see `common/workload.rs`), for slice-alloc and,
//! in the same process on the same input, offset-allocator, range-alloc and a pure best-fit
//! packer, all behind the same best-fit-by-largest-extent device choice.
//!
//! - `mixed_op/<allocator>`: one operation of the steady-state mixed workload at 90% fill
//!   (allocate while below 90%, else free a random live slice).
//! - `allocate_at_90pct/<allocator>`: allocation calls alone: random slices are freed (untimed)
//!   down to 89% fill, then allocations are timed until the fill is back at 90%.
//!
//! The counts, fragmentation, growth and memory figures come from
//! `cargo run --release -p slice-alloc --example fleet_report`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common/workload.rs"]
mod workload;

use workload::{BestFit, Counts, Fleet, OffsetAlloc, Ours, RangeAlloc, Run, TARGET};

fn bench_fleet<F: Fleet>(c: &mut Criterion) {
    let mut run = Run::<F>::filled();
    let mut g = c.benchmark_group("mixed_op");
    g.throughput(Throughput::Elements(1));
    g.bench_function(F::NAME, |b| {
        let mut counts = Counts::default();
        b.iter(|| run.step(black_box(&mut counts), &mut |_, _| {}));
    });
    g.finish();

    let mut g = c.benchmark_group("allocate_at_90pct");
    g.throughput(Throughput::Elements(1));
    g.bench_function(F::NAME, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                while run.used > TARGET - TARGET / 100 {
                    let i = (run.rng.next_u64() % run.live.len() as u64) as usize;
                    let (h, size) = run.live.swap_remove(i);
                    run.fleet.free(h);
                    run.used -= u64::from(size);
                }
                let sizes: Vec<u32> = (0..512).map(|_| run.rng.size()).collect();
                let mut k = 0;
                let t = Instant::now();
                while run.used < TARGET && done < iters && k < sizes.len() {
                    if let Some(h) = run.fleet.allocate(sizes[k]) {
                        run.live.push((h, sizes[k]));
                        run.used += u64::from(sizes[k]);
                    }
                    k += 1;
                    done += 1;
                }
                total += t.elapsed();
            }
            total
        });
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_fleet::<Ours>(c);
    bench_fleet::<OffsetAlloc>(c);
    bench_fleet::<RangeAlloc>(c);
    bench_fleet::<BestFit>(c);
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(group);
