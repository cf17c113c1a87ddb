//! Mapping throughput: logical sector → every copy (and parity members),
//! and the reverse map, for md layouts on realistic arrays (8 × 4 TiB
//! members, 512 KiB chunks). Reported as elements (sectors) per second.

use std::hint::black_box;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use raid::{Geometry, Layout, Level};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 4096;

fn geometries() -> Vec<(&'static str, Geometry)> {
    let tib4 = 4u64 << 31; // 4 TiB in sectors
    let g = |level: Level, layout: &str, sizes: &[u64]| {
        Geometry::new(Layout::parse(level, layout).unwrap(), 1024, sizes).unwrap()
    };
    vec![
        (
            "raid0-multizone",
            g(
                Level::Raid0,
                "original",
                &[tib4, tib4, tib4 / 2, tib4 / 2, tib4 / 4, tib4, tib4, tib4],
            ),
        ),
        ("raid1-2", g(Level::Raid1, "", &[tib4; 2])),
        ("raid5-ls-8", g(Level::Raid5, "left-symmetric", &[tib4; 8])),
        ("raid6-ls-8", g(Level::Raid6, "left-symmetric", &[tib4; 8])),
        ("raid6-la-8", g(Level::Raid6, "left-asymmetric", &[tib4; 8])),
        ("raid10-n2-8", g(Level::Raid10, "n2", &[tib4; 8])),
        ("raid10-n2-7", g(Level::Raid10, "n2", &[tib4; 7])),
        ("raid10-f2-8", g(Level::Raid10, "f2", &[tib4; 8])),
        ("raid10-o2-8", g(Level::Raid10, "o2", &[tib4; 8])),
    ]
}

fn bench_map<M: Measurement>(c: &mut Criterion<M>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut group = c.benchmark_group("map");
    if cpu_time::enabled() {
        group.sampling_mode(SamplingMode::Flat);
    }
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, g) in geometries() {
        let sectors: Vec<u64> = (0..BATCH)
            .map(|_| rng.random_range(0..g.array_sectors()))
            .collect();
        group.bench_with_input(BenchmarkId::new("random", name), &sectors, |b, s| {
            b.iter(|| {
                let mut acc = 0u64;
                for &l in s {
                    let m = g.map(black_box(l)).unwrap();
                    acc = acc.wrapping_add(m.copies[0].sector ^ m.copies[0].member as u64);
                }
                acc
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("unmap");
    if cpu_time::enabled() {
        group.sampling_mode(SamplingMode::Flat);
    }
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, g) in geometries() {
        let locs: Vec<(usize, u64)> = (0..BATCH)
            .map(|_| {
                let m = rng.random_range(0..g.members());
                (m, rng.random_range(0..g.used_sectors()[m]))
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("random", name), &locs, |b, s| {
            b.iter(|| {
                let mut n = 0usize;
                for &(m, sec) in s {
                    if matches!(
                        g.unmap(black_box(m), black_box(sec)).unwrap(),
                        raid::MemberContent::Data { .. }
                    ) {
                        n += 1;
                    }
                }
                n
            })
        });
    }
    group.finish();
}

fn main() {
    if cpu_time::enabled() {
        let mut c = Criterion::default()
            .with_measurement(cpu_time::ThreadCpuTime)
            .sample_size(30)
            .configure_from_args();
        bench_map(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench_map(&mut c);
        c.final_summary();
    }
}
