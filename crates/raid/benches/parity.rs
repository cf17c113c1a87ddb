//! Parity throughput in bytes of data per second: P, P+Q and
//! reconstruct-two over 8 data members of 64 KiB and 1 MiB, for every
//! backend this CPU runs (`Reference` is the plain byte-at-a-time scalar
//! code), with a plain 64-bit word loop (the peer of `Portable`) and
//! reed-solomon-erasure's 8+2 encode and reconstruct measured in the same
//! run on the same data.

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

/// The peer of the `Portable` backend: a plain loop over 64-bit words, one
/// word of every block at a time (what the portable code must at least
/// match).
fn word_loop_p(data: &[&[u8]], p: &mut [u8]) {
    for (i, out) in p.chunks_exact_mut(8).enumerate() {
        let mut w = 0u64;
        for d in data {
            w ^= u64::from_ne_bytes(d[i * 8..i * 8 + 8].try_into().unwrap());
        }
        out.copy_from_slice(&w.to_ne_bytes());
    }
}

/// P+Q as a plain word loop (md's `int64` algorithm, one word at a time).
fn word_loop_pq(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    for (i, (po, qo)) in p.chunks_exact_mut(8).zip(q.chunks_exact_mut(8)).enumerate() {
        let (mut wp, mut wq) = (0u64, 0u64);
        for d in data.iter().rev() {
            let hi = wq & 0x8080_8080_8080_8080;
            let mask = (hi << 1).wrapping_sub(hi >> 7);
            wq = ((wq << 1) & 0xfefe_fefe_fefe_fefe) ^ (mask & 0x1d1d_1d1d_1d1d_1d1d);
            let w = u64::from_ne_bytes(d[i * 8..i * 8 + 8].try_into().unwrap());
            wp ^= w;
            wq ^= w;
        }
        po.copy_from_slice(&wp.to_ne_bytes());
        qo.copy_from_slice(&wq.to_ne_bytes());
    }
}

/// The other natural way to write the word loop: member by member over the
/// whole buffer (P ^= D, Q = 2·Q ^ D by Horner's rule), each pass a simple
/// loop over zipped 64-bit words that the compiler can vectorise. It makes
/// one pass over P and Q per member, where `word_loop_*` make one pass over
/// the words with an inner loop over the members; the portable backend must
/// keep up with the faster of the two.
fn word_loop_p_passes(data: &[&[u8]], p: &mut [u8]) {
    p.copy_from_slice(data[0]);
    for d in &data[1..] {
        for (po, di) in p.chunks_exact_mut(8).zip(d.chunks_exact(8)) {
            let w = u64::from_ne_bytes(po.try_into().unwrap())
                ^ u64::from_ne_bytes(di.try_into().unwrap());
            po.copy_from_slice(&w.to_ne_bytes());
        }
    }
}

/// P+Q member by member (see [`word_loop_p_passes`]).
fn word_loop_pq_passes(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    let last = data.len() - 1;
    p.copy_from_slice(data[last]);
    q.copy_from_slice(data[last]);
    for d in data[..last].iter().rev() {
        for ((po, qo), di) in p
            .chunks_exact_mut(8)
            .zip(q.chunks_exact_mut(8))
            .zip(d.chunks_exact(8))
        {
            let w = u64::from_ne_bytes(di.try_into().unwrap());
            let wq = u64::from_ne_bytes((&*qo).try_into().unwrap());
            let hi = wq & 0x8080_8080_8080_8080;
            let mask = (hi << 1).wrapping_sub(hi >> 7);
            let wq = ((wq << 1) & 0xfefe_fefe_fefe_fefe) ^ (mask & 0x1d1d_1d1d_1d1d_1d1d) ^ w;
            let wp = u64::from_ne_bytes((&*po).try_into().unwrap()) ^ w;
            po.copy_from_slice(&wp.to_ne_bytes());
            qo.copy_from_slice(&wq.to_ne_bytes());
        }
    }
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
        let mut p = vec![0u8; len];
        let mut check = vec![0u8; len];
        word_loop_p(&refs, &mut p);
        ParityEngine::detect().gen_p(&refs, &mut check).unwrap();
        assert_eq!(p, check, "the word loop computes P");
        group.bench_function(BenchmarkId::from_parameter("word-loop"), |b| {
            b.iter(|| word_loop_p(black_box(&refs), &mut p))
        });
        p.fill(0);
        word_loop_p_passes(&refs, &mut p);
        assert_eq!(p, check, "the member-by-member word loop computes P");
        group.bench_function(BenchmarkId::from_parameter("word-loop-passes"), |b| {
            b.iter(|| word_loop_p_passes(black_box(&refs), &mut p))
        });
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
        let (mut p, mut q) = (vec![0u8; len], vec![0u8; len]);
        let (mut p0, mut q0) = (vec![0u8; len], vec![0u8; len]);
        word_loop_pq(&refs, &mut p, &mut q);
        ParityEngine::detect()
            .gen_pq(&refs, &mut p0, &mut q0)
            .unwrap();
        assert_eq!((&p, &q), (&p0, &q0), "the word loop computes P and Q");
        group.bench_function(BenchmarkId::from_parameter("word-loop"), |b| {
            b.iter(|| word_loop_pq(black_box(&refs), &mut p, &mut q))
        });
        p.fill(0);
        q.fill(0);
        word_loop_pq_passes(&refs, &mut p, &mut q);
        assert_eq!(
            (&p, &q),
            (&p0, &q0),
            "the member-by-member word loop computes P and Q"
        );
        group.bench_function(BenchmarkId::from_parameter("word-loop-passes"), |b| {
            b.iter(|| word_loop_pq_passes(black_box(&refs), &mut p, &mut q))
        });
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
