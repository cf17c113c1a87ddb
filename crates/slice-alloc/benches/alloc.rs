//! Throughput on the issue-5 fleet workload (see `common/workload.rs`), for slice-alloc and,
//! in the same process on the same input, offset-allocator, range-alloc and a pure best-fit
//! packer, all behind the same device choice: slice-alloc's default, best fit by extent (the
//! device holding the smallest free extent that fits). `fleet_report` also measures the
//! best-fit-by-largest-extent policy.
//!
//! - `mixed_op/<allocator>`: one operation of the steady-state mixed workload at 90% fill
//!   (allocate while below 90%, else free a random live slice).
//! - `allocate_at_90pct/<allocator>`: allocation calls alone: random slices are freed (untimed)
//!   down to 89% fill, then allocations are timed until the fill is back at 90%.
//!
//! Both are measured in wall-clock time (`wall/...`); `mixed_op` is also measured in the
//! benchmark thread's CPU time (`cpu/...`, Linux only), because on a shared machine wall-clock
//! time also counts the time spent waiting for a core. The CPU clock (`schedstat`) advances in
//! scheduler ticks, precise enough for whole samples (~150 ms) but not for the short timed
//! stretches of `allocate_at_90pct`, which therefore has no CPU-time variant.
//!
//! The counts, fragmentation, growth and memory figures come from
//! `cargo run --release -p slice-alloc --example fleet_report`.

use std::hint::black_box;

use criterion::measurement::{Measurement, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common/cpu_time.rs"]
mod cpu_time;
#[path = "common/workload.rs"]
mod workload;

use cpu_time::ThreadCpu;
use workload::{BestFit, Counts, Fleet, OffsetAlloc, Ours, Policy, RangeAlloc, Run, TARGET};

fn bench_fleet<F: Fleet, M: Measurement>(
    c: &mut Criterion<M>,
    clock: &'static str,
    m: &M,
    with_allocate_only: bool,
) {
    let mut run = Run::<F>::filled(Policy::BestFitExtent);
    let mut g = c.benchmark_group(format!("{clock}/mixed_op"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(F::NAME, |b| {
        let mut counts = Counts::default();
        b.iter(|| run.step(black_box(&mut counts), &mut |_, _| {}));
    });
    g.finish();
    if !with_allocate_only {
        return;
    }

    let mut g = c.benchmark_group(format!("{clock}/allocate_at_90pct"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(F::NAME, |b| {
        b.iter_custom(|iters| {
            let mut total = m.zero();
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
                let t = m.start();
                while run.used < TARGET && done < iters && k < sizes.len() {
                    if let Some(h) = run.fleet.allocate(sizes[k]) {
                        run.live.push((h, sizes[k]));
                        run.used += u64::from(sizes[k]);
                    }
                    k += 1;
                    done += 1;
                }
                let dt = m.end(t);
                total = m.add(&total, &dt);
            }
            total
        });
    });
    g.finish();
}

fn wall(c: &mut Criterion<WallTime>) {
    bench_fleet::<Ours, _>(c, "wall", &WallTime, true);
    bench_fleet::<OffsetAlloc, _>(c, "wall", &WallTime, true);
    bench_fleet::<RangeAlloc, _>(c, "wall", &WallTime, true);
    bench_fleet::<BestFit, _>(c, "wall", &WallTime, true);
}

fn cpu(c: &mut Criterion<ThreadCpu>) {
    bench_fleet::<Ours, _>(c, "cpu", &ThreadCpu, false);
    bench_fleet::<OffsetAlloc, _>(c, "cpu", &ThreadCpu, false);
    bench_fleet::<RangeAlloc, _>(c, "cpu", &ThreadCpu, false);
    bench_fleet::<BestFit, _>(c, "cpu", &ThreadCpu, false);
}

criterion_group! {
    name = wall_group;
    config = Criterion::default().sample_size(20);
    targets = wall
}
criterion_group! {
    name = cpu_group;
    config = Criterion::default().sample_size(20).with_measurement(ThreadCpu);
    targets = cpu
}
criterion_main!(wall_group, cpu_group);
