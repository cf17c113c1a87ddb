//! Parity throughput in bytes of data per second: P, P+Q and
//! reconstruct-two over 8 data members of 64 KiB and 1 MiB, for every
//! backend this CPU runs (`Reference` is the plain byte-at-a-time scalar
//! code), with reed-solomon-erasure's 8+2 encode and reconstruct measured in
//! the same run on the same data.

use std::hint::black_box;

use bytes::Bytes;
use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use raid::{Backend, Geometry, Layout, Level, ParityEngine};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reed_solomon_erasure::galois_8::ReedSolomon;

const DATA: usize = 8;

fn data(len: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..DATA)
        .map(|_| {
            let mut v = vec![0u8; len];
            rng.fill_bytes(&mut v);
            v
        })
        .collect()
}

fn bench_parity<M: Measurement>(c: &mut Criterion<M>) {
    let rs = ReedSolomon::new(DATA, 2).unwrap();
    for (label, len) in [("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let blocks = data(len);
        let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();

        let mut group = c.benchmark_group(format!("gen_p/{label}"));
        if cpu_time::enabled() {
            group.sampling_mode(SamplingMode::Flat);
        }
        group.throughput(Throughput::Bytes((DATA * len) as u64));
        for backend in Backend::all_available() {
            let e = ParityEngine::with_backend(backend).unwrap();
            let mut p = vec![0u8; len];
            group.bench_function(BenchmarkId::from_parameter(format!("{backend:?}")), |b| {
                b.iter(|| e.gen_p(black_box(&refs), &mut p).unwrap())
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("gen_pq/{label}"));
        if cpu_time::enabled() {
            group.sampling_mode(SamplingMode::Flat);
        }
        group.throughput(Throughput::Bytes((DATA * len) as u64));
        for backend in Backend::all_available() {
            let e = ParityEngine::with_backend(backend).unwrap();
            let (mut p, mut q) = (vec![0u8; len], vec![0u8; len]);
            group.bench_function(BenchmarkId::from_parameter(format!("{backend:?}")), |b| {
                b.iter(|| e.gen_pq(black_box(&refs), &mut p, &mut q).unwrap())
            });
        }
        let mut shards: Vec<Vec<u8>> = blocks.clone();
        shards.push(vec![0u8; len]);
        shards.push(vec![0u8; len]);
        group.bench_function(
            BenchmarkId::from_parameter("reed-solomon-erasure-8+2"),
            |b| b.iter(|| rs.encode(black_box(&mut shards)).unwrap()),
        );
        group.finish();

        // Reconstruct two data members of an md RAID6 stripe (8 data + P + Q).
        let g = Geometry::new(
            Layout::parse(Level::Raid6, "left-symmetric").unwrap(),
            8,
            &[64; DATA + 2],
        )
        .unwrap();
        let sl = g.stripe_layout(3).unwrap();
        let mut members: Vec<bytes::BytesMut> = vec![bytes::BytesMut::zeroed(len); DATA + 2];
        for (i, &d) in sl.data.iter().enumerate() {
            members[d].copy_from_slice(&blocks[i]);
        }
        ParityEngine::detect()
            .encode_stripe(&sl, &mut members)
            .unwrap();
        let full: Vec<Bytes> = members.into_iter().map(|m| m.freeze()).collect();
        let mut damaged: Vec<Option<Bytes>> = full.iter().cloned().map(Some).collect();
        damaged[sl.data[1]] = None;
        damaged[sl.data[5]] = None;
        // In place: the two lost buffers are overwritten, nothing is allocated.
        let mut group = c.benchmark_group(format!("reconstruct_two/{label}"));
        if cpu_time::enabled() {
            group.sampling_mode(SamplingMode::Flat);
        }
        group.throughput(Throughput::Bytes((DATA * len) as u64));
        let lost = [sl.data[1], sl.data[5]];
        for backend in Backend::all_available() {
            let e = ParityEngine::with_backend(backend).unwrap();
            let mut bufs: Vec<bytes::BytesMut> =
                full.iter().map(|b| bytes::BytesMut::from(&b[..])).collect();
            group.bench_function(BenchmarkId::from_parameter(format!("{backend:?}")), |b| {
                b.iter(|| {
                    e.reconstruct_in_place(&sl, black_box(&mut bufs), &lost)
                        .unwrap()
                })
            });
        }
        // The `Bytes` API, which allocates the rebuilt members.
        let e = ParityEngine::detect();
        group.bench_function(BenchmarkId::from_parameter("detected-bytes-api"), |b| {
            b.iter(|| e.reconstruct_stripe(&sl, black_box(&damaged)).unwrap())
        });
        rs.encode(&mut shards).unwrap();
        let mut flagged: Vec<(Vec<u8>, bool)> = shards.iter().cloned().map(|s| (s, true)).collect();
        group.bench_function(
            BenchmarkId::from_parameter("reed-solomon-erasure-8+2"),
            |b| {
                b.iter(|| {
                    // The (buffer, present) form rebuilds in place, like reconstruct_in_place.
                    flagged[1].1 = false;
                    flagged[5].1 = false;
                    rs.reconstruct_data(black_box(&mut flagged)).unwrap();
                })
            },
        );
        group.finish();
    }
}

fn main() {
    if cpu_time::enabled() {
        let mut c = Criterion::default()
            .with_measurement(cpu_time::ThreadCpuTime)
            .sample_size(30)
            .configure_from_args();
        bench_parity(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench_parity(&mut c);
        c.final_summary();
    }
}
