//! `Pipeline`: requests queued per member, several in flight. The members
//! hold the same bytes as after the same writes through `write_at`
//! (overlapping writes of one caller land in submission order); reads
//! give the written bytes; the write-intent bit is on every member before
//! any data; a member that fails under a queued write or read is failed
//! and the request still succeeds from the other copy; a rebuild under
//! pipelined writes ends with agreeing copies; parity and encrypted
//! volumes (which are not queued) give the same results as `write_at`.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use raid_engine::meta::BITMAP_OFFSET;
use raid_engine::volume::pipeline::{Bytes, BytesMut, Pending, aligned_buffer};
use raid_engine::{
    BlockDevice, CacheMode, CreateOptions, FileDevice, MemberState, Pipeline, RebuildOptions,
    Secret, Volume, VolumeLayout,
};

const MEMBER: u64 = 4 << 20;

fn options(spec: &str) -> CreateOptions {
    let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
    opts.chunk_sectors = 16;
    opts.bitmap_region_bytes = 64 << 10;
    opts
}

/// A pseudo-random sequence of sector-aligned writes (offset, length),
/// overlapping each other, small and large (up to 320 KiB: above the
/// volume's 128 KiB fan-out threshold).
fn writes(size: u64, count: usize, seed: u64) -> Vec<(u64, usize)> {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let len = (1 + next() % 640) as usize * 512;
            let off = next() % ((size - len as u64) / 512) * 512;
            (off, len)
        })
        .collect()
}

/// Write through a pipeline keeping `depth` requests in flight.
fn write_queued(pipe: &Pipeline, ops: &[(u64, usize)], seed: u64, depth: usize) {
    let mut inflight: VecDeque<Pending<()>> = VecDeque::new();
    for (i, &(off, len)) in ops.iter().enumerate() {
        if inflight.len() == depth {
            inflight.pop_front().unwrap().wait().unwrap();
        }
        let data = Bytes::from(common::pattern(seed + i as u64, len));
        inflight.push_back(pipe.write(data, off).unwrap());
    }
    for p in inflight {
        p.wait().unwrap();
    }
}

fn read_all(vol: &Volume) -> Vec<u8> {
    let mut back = vec![0u8; vol.size() as usize];
    vol.read_at(&mut back, 0).unwrap();
    back
}

/// The whole volume read through the pipeline, 1 MiB (or less) at a time,
/// 4 in flight.
fn read_queued(pipe: &Pipeline) -> Vec<u8> {
    let size = pipe.volume().size();
    let mut out = Vec::with_capacity(size as usize);
    let mut inflight: VecDeque<Pending<BytesMut>> = VecDeque::new();
    let mut off = 0;
    while off < size || !inflight.is_empty() {
        if off < size && inflight.len() < 4 {
            let len = (size - off).min(1 << 20) as usize;
            inflight.push_back(pipe.read(aligned_buffer(len), off).unwrap());
            off += len as u64;
        } else {
            out.extend_from_slice(&inflight.pop_front().unwrap().wait().unwrap());
        }
    }
    out
}

fn member_data(paths: &[std::path::PathBuf], data_offset: u64) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap()[data_offset as usize..].to_vec())
        .collect()
}

/// The same writes through `write_at` on one set of members and through a
/// pipeline (4 in flight) on another: the data areas are byte for byte
/// equal, and both read back the same.
fn same_bytes_as_write_at(spec: &str, n: usize, threads: Option<usize>, spin: u32) {
    let dir = common::scratch();
    let da = dir.path().join("a");
    let db = dir.path().join("b");
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (pa, a) = common::members(&da, n, MEMBER);
    let (pb, b) = common::members(&db, n, MEMBER);
    let va = Volume::create(a, &options(spec)).unwrap();
    let vb = Arc::new(Volume::create(b, &options(spec)).unwrap());
    let ops = writes(va.size(), 300, 0x5eed);
    for (i, &(off, len)) in ops.iter().enumerate() {
        va.write_at(&common::pattern(1000 + i as u64, len), off)
            .unwrap();
    }
    let pipe = match threads {
        None => Pipeline::new(vb.clone()).unwrap(),
        Some(t) => Pipeline::with_threads(vb.clone(), t).unwrap(),
    };
    pipe.set_spin_yields(spin);
    write_queued(&pipe, &ops, 1000, 4);
    let want = read_all(&va);
    assert!(
        read_all(&vb) == want,
        "{spec}: pipelined writes read back differently"
    );
    assert!(read_queued(&pipe) == want, "{spec}: pipelined reads differ");
    drop(pipe);
    va.flush().unwrap();
    vb.flush().unwrap();
    let off = va.data_offset_bytes();
    assert_eq!(off, vb.data_offset_bytes());
    let (ma, mb) = (member_data(&pa, off), member_data(&pb, off));
    for m in 0..n {
        assert!(ma[m] == mb[m], "{spec}: member {m}'s data area differs");
    }
    if spec != "raid0" && spec != "linear" {
        assert!(vb.scrub(false).unwrap().mismatches.is_empty(), "{spec}");
    }
}

#[test]
fn raid10_n2_members_hold_the_same_bytes_as_after_write_at() {
    same_bytes_as_write_at("raid10:n2", 4, None, 0);
    same_bytes_as_write_at("raid10:n2", 4, None, 32);
}

#[test]
fn raid10_far_offset_and_odd_members_hold_the_same_bytes() {
    same_bytes_as_write_at("raid10:f2", 4, None, 0);
    same_bytes_as_write_at("raid10:o2", 3, None, 32);
    same_bytes_as_write_at("raid10:n2", 5, Some(2), 32);
}

#[test]
fn raid1_raid0_linear_hold_the_same_bytes() {
    same_bytes_as_write_at("raid1", 3, None, 0);
    same_bytes_as_write_at("raid0", 3, None, 32);
    same_bytes_as_write_at("linear", 2, Some(1), 0);
}

/// Parity levels and encrypted volumes run on the calling thread: same
/// results as `write_at`.
#[test]
fn parity_and_encrypted_volumes_give_the_written_bytes() {
    for (spec, n, secret) in [
        ("raid6:left-symmetric", 5, false),
        ("raid5:left-symmetric", 3, false),
        ("raid10:n2", 4, true),
    ] {
        let dir = common::scratch();
        let (_p, devs) = common::members(dir.path(), n, MEMBER);
        let mut opts = options(spec);
        if secret {
            opts.secret = Some(Secret::new(b"pipeline test secret".to_vec()).unwrap());
        }
        let vol = Arc::new(Volume::create(devs, &opts).unwrap());
        vol.resync_all().unwrap();
        let mut model = read_all(&vol);
        let ops = writes(vol.size(), 60, 7);
        for (i, &(off, len)) in ops.iter().enumerate() {
            model[off as usize..off as usize + len]
                .copy_from_slice(&common::pattern(50 + i as u64, len));
        }
        let pipe = Pipeline::new(vol.clone()).unwrap();
        write_queued(&pipe, &ops, 50, 4);
        assert!(read_queued(&pipe) == model, "{spec}: data differs");
        assert!(read_all(&vol) == model, "{spec}: data differs");
        assert!(vol.scrub(false).unwrap().mismatches.is_empty(), "{spec}");
    }
}

/// A member that fails on demand, and a log of every write to any of the
/// wrapped devices: (member, byte offset), in the order they happened.
#[derive(Debug)]
struct Flaky {
    inner: FileDevice,
    member: usize,
    /// Where the data area starts (set once the volume exists).
    data_offset: AtomicU64,
    fail_writes: AtomicBool,
    fail_reads: AtomicBool,
    /// Sleep this long in every data write (a slow copy).
    delay_writes_us: AtomicU64,
    log: Arc<Mutex<Vec<(usize, u64)>>>,
}

impl BlockDevice for Flaky {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset >= self.data_offset.load(Ordering::SeqCst)
            && self.fail_reads.load(Ordering::SeqCst)
        {
            return Err(std::io::Error::other("injected read error"));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if offset >= self.data_offset.load(Ordering::SeqCst)
            && self.fail_writes.load(Ordering::SeqCst)
        {
            return Err(std::io::Error::other("injected write error"));
        }
        let delay = self.delay_writes_us.load(Ordering::SeqCst);
        if offset >= self.data_offset.load(Ordering::SeqCst) && delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        self.log.lock().unwrap().push((self.member, offset));
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        format!("flaky({})", self.inner.describe())
    }
}

fn flaky_volume(dir: &std::path::Path, spec: &str, n: usize) -> (Arc<Volume>, Vec<Arc<Flaky>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let flaky: Vec<Arc<Flaky>> = (0..n)
        .map(|m| {
            Arc::new(Flaky {
                inner: FileDevice::create(
                    dir.join(format!("f{m}")),
                    MEMBER,
                    CacheMode::DirectIfSupported,
                )
                .unwrap(),
                member: m,
                data_offset: AtomicU64::new(u64::MAX),
                fail_writes: AtomicBool::new(false),
                fail_reads: AtomicBool::new(false),
                delay_writes_us: AtomicU64::new(0),
                log: log.clone(),
            })
        })
        .collect();
    let devs = flaky
        .iter()
        .map(|f| f.clone() as Arc<dyn BlockDevice>)
        .collect();
    let vol = Arc::new(Volume::create(devs, &options(spec)).unwrap());
    for f in &flaky {
        f.data_offset
            .store(vol.data_offset_bytes(), Ordering::SeqCst);
    }
    (vol, flaky)
}

/// The first pipelined write to a clean volume: every member's bitmap is
/// written before any member's data. With the intent bit skipped
/// (fault injection) the same check sees data first.
#[test]
fn the_intent_bit_is_on_every_member_before_any_data() {
    for skip in [false, true] {
        let dir = common::scratch();
        let (vol, flaky) = flaky_volume(dir.path(), "raid10:n2", 4);
        if skip {
            vol.inject_faults(&[raid_engine::fault::Fault::SkipIntentBit]);
        }
        let log = flaky[0].log.clone();
        log.lock().unwrap().clear();
        let data_offset = vol.data_offset_bytes();
        let pipe = Pipeline::new(vol.clone()).unwrap();
        let data = Bytes::from(common::pattern(3, 1 << 20));
        let pending: Vec<_> = (0..3)
            .map(|i| pipe.write(data.clone(), i << 20).unwrap())
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
        let log = log.lock().unwrap().clone();
        let first_data = log
            .iter()
            .position(|&(_, off)| off >= data_offset)
            .expect("data was written");
        let bitmap_before: Vec<usize> = log[..first_data]
            .iter()
            .filter(|&&(_, off)| off == BITMAP_OFFSET)
            .map(|&(m, _)| m)
            .collect();
        let complete = (0..4).all(|m| bitmap_before.contains(&m));
        assert_eq!(
            complete, !skip,
            "skip-intent-bit {skip}: bitmap writes before the first data write: {bitmap_before:?}"
        );
    }
}

/// A member whose writes fail under queued writes is failed; the writes
/// succeed on the other copy; re-added, it gets the regions it missed.
/// Then a member whose reads fail under queued reads: the reads come from
/// the other copies and the member is failed.
#[test]
fn failing_members_are_failed_and_requests_use_the_other_copy() {
    let dir = common::scratch();
    let (vol, flaky) = flaky_volume(dir.path(), "raid10:n2", 4);
    let pipe = Pipeline::new(vol.clone()).unwrap();
    let ops = writes(vol.size(), 80, 11);
    write_queued(&pipe, &ops[..40], 200, 4);
    flaky[1].fail_writes.store(true, Ordering::SeqCst);
    write_queued(&pipe, &ops[40..], 240, 4);
    assert_eq!(vol.status()[1].state, MemberState::Failed);
    let mut model = vec![0u8; vol.size() as usize];
    for (i, &(off, len)) in ops.iter().enumerate() {
        model[off as usize..off as usize + len]
            .copy_from_slice(&common::pattern(200 + i as u64, len));
    }
    assert!(read_queued(&pipe) == model, "degraded: data differs");
    flaky[1].fail_writes.store(false, Ordering::SeqCst);
    vol.readd(1, None, &RebuildOptions::default()).unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
    flaky[2].fail_reads.store(true, Ordering::SeqCst);
    assert!(read_queued(&pipe) == model, "failing reads: data differs");
    assert_eq!(vol.status()[2].state, MemberState::Failed);
    // Writes while degraded fail nothing and read back.
    write_queued(&pipe, &ops[..10], 900, 2);
    for (i, &(off, len)) in ops[..10].iter().enumerate() {
        model[off as usize..off as usize + len]
            .copy_from_slice(&common::pattern(900 + i as u64, len));
    }
    assert!(read_all(&vol) == model);
    flaky[2].fail_reads.store(false, Ordering::SeqCst);
    vol.readd(2, None, &RebuildOptions::default()).unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
}

/// A rebuild onto a replacement while a caller keeps pipelined writes in
/// flight: each copy step waits for the queued writes, so the copies
/// agree afterwards and every write is there. The rebuild's source (member
/// 2, the other copy of member 3's chunks) writes slowly, so that a queued
/// write's piece for the replacement lands well before its piece for the
/// source (without the wait, tried by hand, a copy step then read the
/// source before the write reached it and overwrote the replacement's new
/// bytes with old ones, and the scrub found the copies differing).
#[test]
fn rebuild_under_pipelined_writes_leaves_agreeing_copies() {
    let dir = common::scratch();
    let (vol, flaky) = flaky_volume(dir.path(), "raid10:n2", 4);
    flaky[2].delay_writes_us.store(300, Ordering::SeqCst);
    let pipe = Arc::new(Pipeline::new(vol.clone()).unwrap());
    pipe.set_spin_yields(32);
    let size = vol.size();
    write_queued(&pipe, &writes(size, 50, 3), 300, 4);
    let model = Arc::new(Mutex::new(read_all(&vol)));
    vol.fail_member(3).unwrap();
    let fresh = FileDevice::create(dir.path().join("fresh"), MEMBER, CacheMode::Buffered).unwrap();
    vol.replace(3, Arc::new(fresh)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pipe, model, stop) = (pipe.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let ops = writes(size, 20, 77 + round);
                let seed = 10_000 + round * 100;
                // The model in submission order: a caller's overlapping
                // writes land in that order.
                {
                    let mut m = model.lock().unwrap();
                    for (i, &(off, len)) in ops.iter().enumerate() {
                        m[off as usize..off as usize + len]
                            .copy_from_slice(&common::pattern(seed + i as u64, len));
                    }
                }
                write_queued(&pipe, &ops, seed, 4);
                round += 1;
            }
            round
        })
    };
    // Throttled: about half a second of copy steps under the writes.
    let opts = RebuildOptions {
        max_bytes_per_sec: Some(4 << 20),
        progress: None,
    };
    vol.rebuild(3, &opts).unwrap();
    stop.store(true, Ordering::SeqCst);
    // Rounds of writes that ran while the rebuild did (at least the one
    // started before it; under load there may be no more).
    assert!(writer.join().unwrap() >= 1);
    assert!(vol.status().iter().all(|s| s.state == MemberState::Active));
    assert!(
        vol.scrub(false).unwrap().mismatches.is_empty(),
        "copies differ after a rebuild under pipelined writes"
    );
    assert!(read_all(&vol) == *model.lock().unwrap());
    // Every copy holds the data: fail the others in turn.
    for m in 0..3 {
        vol.fail_member(m).unwrap();
        assert!(
            read_all(&vol) == *model.lock().unwrap(),
            "without member {m}"
        );
        vol.readd(m, None, &RebuildOptions::default()).unwrap();
    }
}

/// Requests whose `Pending` is dropped still complete; dropping the
/// pipeline waits for them.
#[test]
fn dropped_requests_complete() {
    let dir = common::scratch();
    let (_p, devs) = common::members(dir.path(), 2, MEMBER);
    let vol = Arc::new(Volume::create(devs, &options("raid1")).unwrap());
    let pipe = Pipeline::new(vol.clone()).unwrap();
    let mut model = read_all(&vol);
    for (i, &(off, len)) in writes(vol.size(), 40, 5).iter().enumerate() {
        let data = common::pattern(i as u64, len);
        model[off as usize..off as usize + len].copy_from_slice(&data);
        drop(pipe.write(Bytes::from(data), off).unwrap());
    }
    drop(pipe);
    assert!(read_all(&vol) == model);
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
}

/// Bad requests are refused with the field named; a page-aligned buffer is
/// page-aligned.
#[test]
fn bad_requests_are_refused_and_buffers_are_aligned() {
    let dir = common::scratch();
    let (_p, devs) = common::members(dir.path(), 2, MEMBER);
    let vol = Arc::new(Volume::create(devs, &options("raid1")).unwrap());
    let pipe = Pipeline::new(vol.clone()).unwrap();
    let err = pipe
        .write(Bytes::from(vec![1u8; 4096]), vol.size())
        .unwrap_err();
    assert!(err.to_string().contains("offset"), "{err}");
    let err = pipe.read(aligned_buffer(512), vol.size()).unwrap_err();
    assert!(err.to_string().contains("offset"), "{err}");
    for len in [0, 512, 4096, 1 << 20] {
        let b = aligned_buffer(len);
        assert_eq!(b.len(), len);
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        assert!(b.iter().all(|&x| x == 0));
    }
    // Unaligned requests go through the volume's merge: still right.
    let mut model = read_all(&vol);
    model[100..1100].fill(9);
    pipe.write(Bytes::from(vec![9u8; 1000]), 100)
        .unwrap()
        .wait()
        .unwrap();
    let back = pipe
        .read(BytesMut::zeroed(1000), 100)
        .unwrap()
        .wait()
        .unwrap();
    assert!(back[..] == model[100..1100]);
    assert!(read_all(&vol) == model);
}
