//! Writes that are not aligned to the members' blocks: the volume merges
//! such a write once, reading the partly written blocks from one copy, and
//! sends every member the same aligned block run, instead of each member
//! reading and merging its own copy.
//!
//! The members are real files wrapped in a recorder that reports the 4 KiB
//! alignment of a drive with 4 KiB sectors (what `FileDevice` reports for
//! `O_DIRECT` on a file system that refuses smaller direct I/O) and counts
//! the reads and checks the writes of the data area.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use raid_engine::{BlockDevice, CreateOptions, Secret, Volume, VolumeLayout};

const ALIGN: usize = 4096;

#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn BlockDevice>,
    /// Member bytes below this are metadata (superblock, bitmap): not
    /// recorded.
    data_offset: AtomicU64,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    /// Data-area writes that were not 4 KiB-aligned in address, offset or
    /// length: (offset, length, address mod 4 KiB).
    misaligned: Mutex<Vec<(u64, usize, usize)>>,
}

impl Recorder {
    fn new(inner: Arc<dyn BlockDevice>) -> Arc<Recorder> {
        Arc::new(Recorder {
            inner,
            data_offset: AtomicU64::new(u64::MAX),
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            misaligned: Mutex::new(Vec::new()),
        })
    }

    fn reset(&self) -> (u64, u64, Vec<(u64, usize, usize)>) {
        (
            self.reads.swap(0, Ordering::SeqCst),
            self.read_bytes.swap(0, Ordering::SeqCst),
            std::mem::take(&mut *self.misaligned.lock().unwrap()),
        )
    }
}

impl BlockDevice for Recorder {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset >= self.data_offset.load(Ordering::SeqCst) {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.read_bytes
                .fetch_add(buf.len() as u64, Ordering::SeqCst);
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let addr = buf.as_ptr() as usize % ALIGN;
        if offset >= self.data_offset.load(Ordering::SeqCst)
            && (addr != 0
                || !offset.is_multiple_of(ALIGN as u64)
                || !buf.len().is_multiple_of(ALIGN))
        {
            self.misaligned
                .lock()
                .unwrap()
                .push((offset, buf.len(), addr));
        }
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        format!("recorder({})", self.inner.describe())
    }
    fn alignment(&self) -> usize {
        self.inner.alignment().max(ALIGN)
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    vol: Arc<Volume>,
    recs: Vec<Arc<Recorder>>,
    model: Vec<u8>,
}

fn setup(spec: &str, n: usize, secret: bool) -> Setup {
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), n, 4 << 20);
    let recs: Vec<Arc<Recorder>> = devs.into_iter().map(Recorder::new).collect();
    let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
    opts.chunk_sectors = 64;
    opts.bitmap_region_bytes = 64 << 10;
    if secret {
        opts.secret = Some(Secret::new(b"unaligned writes".to_vec()).unwrap());
    }
    let vol = Volume::create(
        recs.iter()
            .map(|r| r.clone() as Arc<dyn BlockDevice>)
            .collect(),
        &opts,
    )
    .unwrap();
    for r in &recs {
        r.data_offset
            .store(vol.data_offset_bytes(), Ordering::SeqCst);
    }
    let model = common::pattern(1, vol.size() as usize);
    vol.write_at(&model, 0).unwrap();
    for r in &recs {
        r.reset();
    }
    Setup {
        _dir: dir,
        vol: Arc::new(vol),
        recs,
        model,
    }
}

/// Member reads the volume did (summed over members), the bytes read, and
/// the misaligned member writes, since the last call.
fn drain(s: &Setup) -> (u64, u64, Vec<(u64, usize, usize)>) {
    s.recs
        .iter()
        .map(|r| r.reset())
        .fold((0, 0, Vec::new()), |(n, b, mut m), (n1, b1, m1)| {
            m.extend(m1);
            (n + n1, b + b1, m)
        })
}

/// Aligned blocks a write of `len` bytes at `off` only partly covers.
fn partial_blocks(off: usize, len: usize) -> u64 {
    let (b0, b1) = (off / ALIGN, (off + len - 1) / ALIGN);
    let head = !off.is_multiple_of(ALIGN);
    let tail = !(off + len).is_multiple_of(ALIGN);
    match (head, tail) {
        (true, true) if b0 == b1 => 1,
        (h, t) => u64::from(h) + u64::from(t),
    }
}

fn check(spec: &str, n: usize, secret: bool) {
    let mut s = setup(spec, n, secret);
    let size = s.vol.size() as usize;
    // Sector-aligned and sub-sector writes, inside one block, across a
    // block edge, across a chunk edge, touching the first and last block.
    let mut cases: Vec<(usize, usize)> = vec![
        (512, 512),
        (4096 + 1024, 1536),
        (8192 - 512, 1024),
        (3, 5),
        (32 * 1024 - 700, 1400),
        (0, 512),
        (size - 512, 512),
        (size - 4096 - 7, 100),
        (64 * 1024 + 512, 200 * 1024),
        (4096, 8192 + 512),
    ];
    let mut x = 0x1234_5678_u64;
    for _ in 0..40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 70_000) as usize;
        let off = ((x >> 20) as usize) % (size - len);
        let off = if x & 1 == 0 { off / 512 * 512 } else { off };
        let len = if x & 2 == 0 {
            len.div_ceil(512) * 512
        } else {
            len
        };
        cases.push((off, len.min(size - off)));
    }
    for (i, &(off, len)) in cases.iter().enumerate() {
        let data = common::pattern(100 + i as u64, len);
        s.vol.write_at(&data, off as u64).unwrap();
        s.model[off..off + len].copy_from_slice(&data);
        let (reads, bytes, misaligned) = drain(&s);
        assert!(
            misaligned.is_empty(),
            "{spec}: write {len}@{off}: members got misaligned writes {misaligned:?}"
        );
        // Once per partly written block, from one copy, not once per copy.
        let want = partial_blocks(off, len);
        assert_eq!(
            (reads, bytes),
            (want, want * ALIGN as u64),
            "{spec}: write {len}@{off}: member reads (count, bytes)"
        );
    }
    let mut back = vec![0u8; size];
    s.vol.read_at(&mut back, 0).unwrap();
    assert!(back == s.model, "{spec}: bytes read back differ");
    let scrub = s.vol.scrub(false).unwrap();
    assert!(
        scrub.mismatches.is_empty(),
        "{spec}: {:?}",
        scrub.mismatches
    );
}

#[test]
fn raid1_merges_an_unaligned_write_once_for_both_copies() {
    check("raid1", 2, false);
}

#[test]
fn raid1_three_copies() {
    check("raid1", 3, false);
}

#[test]
fn raid10_near_far_offset() {
    check("raid10:n2", 4, false);
    check("raid10:f2", 4, false);
    check("raid10:o2", 3, false);
}

#[test]
fn raid1_encrypted() {
    check("raid1", 2, true);
}

#[test]
fn raid0_and_raid6_members_get_aligned_writes() {
    // No copies to share the merge with, but every member write is aligned
    // (RAID6 reads old data and parity besides, and computes parity in
    // buffers of its own: only the offsets and lengths of its member
    // writes, which decide whether a member has to read, and the bytes are
    // checked).
    check("raid0", 3, false);
    let mut s = setup("raid6", 5, false);
    for (i, &(off, len)) in [(512usize, 512usize), (3, 5), (100_000, 70_001)]
        .iter()
        .enumerate()
    {
        let data = common::pattern(7 + i as u64, len);
        s.vol.write_at(&data, off as u64).unwrap();
        s.model[off..off + len].copy_from_slice(&data);
        let (_, _, misaligned) = drain(&s);
        let a = ALIGN as u64;
        let rmw: Vec<_> = misaligned
            .into_iter()
            .filter(|&(o, l, _)| !o.is_multiple_of(a) || !l.is_multiple_of(ALIGN))
            .collect();
        assert!(rmw.is_empty(), "raid6: {rmw:?}");
    }
    let mut back = vec![0u8; s.model.len()];
    s.vol.read_at(&mut back, 0).unwrap();
    assert!(back == s.model);
    assert!(s.vol.scrub(false).unwrap().mismatches.is_empty());
}

#[test]
fn concurrent_writes_to_the_sectors_of_one_block_keep_each_other() {
    // Eight threads each write their own 512-byte sector of the same
    // blocks, over and over: every merge reads the block, so without the
    // volume's lock one thread's merge would put back another's old sector.
    let s = setup("raid1", 2, false);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let vol = s.vol.clone();
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    for block in 0..4u64 {
                        let v = (t * 50 + round) as u8;
                        vol.write_at(&[v; 512], block * ALIGN as u64 + t * 512)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut back = vec![0u8; 4 * ALIGN];
    s.vol.read_at(&mut back, 0).unwrap();
    for block in 0..4 {
        for t in 0..8 {
            let at = block * ALIGN + t * 512;
            assert!(
                back[at..at + 512].iter().all(|&b| b == (t * 50 + 49) as u8),
                "block {block}, sector {t}: another write's merge put old bytes back"
            );
        }
    }
    assert!(s.vol.scrub(false).unwrap().mismatches.is_empty());
}
