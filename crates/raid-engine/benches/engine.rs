//! Throughput of the engine in one run on the same files (tmpfs when
//! `/dev/shm` exists): sequential 1 MiB and random 4 KiB reads and writes
//! through RAID1 (2 members), RAID10 n2 (4 members) and RAID6 (6 members),
//! against the same I/O to a single plain file and against the raw
//! aggregate of the members (the member files written or read directly, in
//! several patterns: one thread per member with 1 MiB, 512 KiB and 256 KiB
//! requests from private or shared buffers, and one thread per core); RAID10
//! also with its member I/O on one thread per core and on the calling thread
//! alone. After each sequential in-process test it prints the process's CPU
//! time per MiB and how much of the cores the test kept busy. Every side
//! uses page-aligned buffers. Then the same through FUSE + loop against a loop
//! device over a plain file (root only); the rebuild rate; and NBD members
//! with one request at a time against 16 in flight.
//!
//! Throughput counts logical bytes for the volumes and the plain file, and
//! bytes moved over all members for the aggregate.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use raid_engine::{
    BlockDevice, CacheMode, CreateOptions, FileDevice, RebuildOptions, Volume, VolumeLayout,
};

const MEMBER: u64 = 96 << 20;
const SEQ: usize = 1 << 20;
const RND: usize = 4096;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn files(dir: &Path, prefix: &str, n: usize) -> Vec<Arc<dyn BlockDevice>> {
    (0..n)
        .map(|i| {
            Arc::new(
                FileDevice::create(
                    dir.join(format!("{prefix}{i}")),
                    MEMBER,
                    CacheMode::DirectIfSupported,
                )
                .unwrap(),
            ) as Arc<dyn BlockDevice>
        })
        .collect()
}

/// Write every byte of the members, so that reads read real pages (a hole
/// in a tmpfs file reads far faster than data and would flatter whoever
/// reads more of them).
fn fill(devs: &[Arc<dyn BlockDevice>]) {
    let chunk = vec![0xa5u8; SEQ];
    for d in devs {
        let mut off = 0;
        while off < d.size() {
            let n = (d.size() - off).min(SEQ as u64) as usize;
            d.write_at(&chunk[..n], off).unwrap();
            off += n as u64;
        }
    }
}

/// A tiny deterministic offset generator (no timing in the loop).
struct Offsets(u64);
impl Offsets {
    fn next(&mut self, limit: u64, align: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % (limit / align)) * align
    }
}

/// The CPU time of the whole process so far: every thread, those that have
/// ended included (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time and wall time of a test's timed batches (warm-up included),
/// and the bytes they moved: CPU per MiB says how much work a byte costs
/// whatever else runs on the machine, CPU ÷ (wall × cores) how much of the
/// cores the test kept busy.
#[derive(Default)]
struct Usage {
    cpu: std::cell::Cell<std::time::Duration>,
    wall: std::cell::Cell<std::time::Duration>,
    bytes: std::cell::Cell<u64>,
}

impl Usage {
    /// Time `iters` runs of `f`, each moving `bytes`, and count them.
    fn time(&self, iters: u64, bytes: u64, mut f: impl FnMut()) -> std::time::Duration {
        let cpu = process_cpu();
        let t = std::time::Instant::now();
        for _ in 0..iters {
            f();
        }
        let wall = t.elapsed();
        self.add(process_cpu().saturating_sub(cpu), wall, iters * bytes);
        wall
    }

    fn add(&self, cpu: std::time::Duration, wall: std::time::Duration, bytes: u64) {
        self.cpu.set(self.cpu.get() + cpu);
        self.wall.set(self.wall.get() + wall);
        self.bytes.set(self.bytes.get() + bytes);
    }

    fn report(&self, what: &str) {
        let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
        let (cpu, wall) = (self.cpu.get().as_secs_f64(), self.wall.get().as_secs_f64());
        if self.bytes.get() == 0 || wall == 0.0 {
            return;
        }
        eprintln!(
            "cpu: {what}: {:.1} µs of CPU per MiB, {:.2} of {cores} cores busy",
            cpu * 1e6 / (self.bytes.get() as f64 / (1 << 20) as f64),
            cpu / (wall * cores as f64)
        );
        self.cpu.take();
        self.wall.take();
        self.bytes.take();
    }
}

/// Something that reads and writes at byte offsets.
trait Target: Sync {
    fn size(&self) -> u64;
    fn write(&self, buf: &[u8], off: u64);
    fn read(&self, buf: &mut [u8], off: u64);
}

impl Target for Volume {
    fn size(&self) -> u64 {
        Volume::size(self)
    }
    fn write(&self, buf: &[u8], off: u64) {
        self.write_at(buf, off).unwrap()
    }
    fn read(&self, buf: &mut [u8], off: u64) {
        self.read_at(buf, off).unwrap()
    }
}

struct Plain(Arc<dyn BlockDevice>);
impl Target for Plain {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn write(&self, buf: &[u8], off: u64) {
        self.0.write_at(buf, off).unwrap()
    }
    fn read(&self, buf: &mut [u8], off: u64) {
        self.0.read_at(buf, off).unwrap()
    }
}

/// How the aggregate drives the members: request size, threads (one per
/// member, or fewer, each then taking its members in turn), whether the
/// threads share one 1 MiB source buffer for writes and read into
/// disjoint parts of one buffer (the memory footprint of a volume's
/// request) or each has its own, and whether to leave out the 4 KiB tests.
struct Pattern {
    len: usize,
    threads: usize,
    shared: bool,
    seq_only: bool,
}

/// The members' raw aggregate: the pattern's threads streaming requests to
/// their members back to back (no per-request barrier, no thread start per
/// request, page-aligned buffers allocated once), timed together.
fn bench_aggregate(
    c: &mut Criterion,
    group: &str,
    name: &str,
    devs: &[Arc<dyn BlockDevice>],
    p: &Pattern,
) {
    let n = devs.len() as u64;
    let size = devs[0].size() / SEQ as u64 * SEQ as u64;
    let (len, threads, shared) = (p.len, p.threads, p.shared);
    let mut g = c.benchmark_group(group);
    let size_name = |l: usize| match l {
        l if l >= 1 << 20 => format!("{}MiB", l >> 20),
        l => format!("{}KiB", l >> 10),
    };
    let tests = [
        (format!("seq-write-{}", size_name(len)), len, true, false),
        (format!("seq-read-{}", size_name(len)), len, false, false),
        ("rand-write-4KiB".to_string(), RND, true, true),
        ("rand-read-4KiB".to_string(), RND, false, true),
    ];
    let mut src = AlignedBuf::new(SEQ);
    src.as_mut().fill(0x5a);
    let src = src.as_ref();
    for (test, len, write, random) in tests.into_iter().filter(|t| !(p.seq_only && t.3)) {
        // Every thread moves `len` bytes per member per iteration.
        g.throughput(Throughput::Bytes(len as u64 * n));
        let usage = Usage::default();
        g.bench_function(format!("{name}/{test}"), |b| {
            b.iter_custom(|iters| {
                let cpu = process_cpu();
                let start = std::sync::Barrier::new(threads + 1);
                let mut dst = AlignedBuf::new(if shared { threads * len } else { 0 });
                let mut parts = dst.as_mut().chunks_mut(len);
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let start = &start;
                            let mine: Vec<_> = devs.iter().skip(t).step_by(threads).collect();
                            let part = if shared { parts.next() } else { None };
                            s.spawn(move || {
                                let mut own = AlignedBuf::new(if shared { 0 } else { len });
                                own.as_mut().fill(0x5a);
                                let buf: &mut [u8] = match part {
                                    Some(p) => p,
                                    None => own.as_mut(),
                                };
                                let from = (t * len) % SEQ;
                                let mut offs = Offsets(0x9e37_79b9 + t as u64);
                                let mut pos = 0u64;
                                start.wait();
                                for _ in 0..iters {
                                    for d in &mine {
                                        let off = if random {
                                            offs.next(size, RND as u64)
                                        } else {
                                            pos
                                        };
                                        if !write {
                                            d.read_at(buf, off).unwrap();
                                        } else if shared {
                                            d.write_at(&src[from..from + len], off).unwrap();
                                        } else {
                                            d.write_at(buf, off).unwrap();
                                        }
                                    }
                                    pos = (pos + len as u64) % size;
                                }
                                black_box(&buf);
                            })
                        })
                        .collect();
                    let wall = release_and_time(&start, handles);
                    // The threads' set-up is in the CPU time too (buffers
                    // allocated and filled once per batch: small against
                    // a batch's copies).
                    usage.add(
                        process_cpu().saturating_sub(cpu),
                        wall,
                        iters * len as u64 * n,
                    );
                    wall
                })
            })
        });
        if !random {
            usage.report(&format!(
                "{group}/{name}/{test} (bytes moved on the members)"
            ));
        }
    }
    g.finish();
}

/// Releases the threads waiting on `start` and times them until they all end.
fn release_and_time(
    start: &std::sync::Barrier,
    handles: Vec<std::thread::ScopedJoinHandle<'_, ()>>,
) -> std::time::Duration {
    start.wait();
    let t = std::time::Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

/// The aggregate in the patterns a member can be driven with; the README
/// takes the best of them as the aggregate. Every level: one thread per
/// member with 1 MiB requests (also 4 KiB random), and with 512 KiB
/// requests (the chunk) from one shared buffer. RAID10, whose targets
/// these are, also: 512 KiB and 256 KiB requests (what its volume sends
/// each member for a 1 MiB write and read) from private and from shared
/// buffers, and one thread per core.
fn bench_aggregates(c: &mut Criterion, group: &str, devs: &[Arc<dyn BlockDevice>], all: bool) {
    let n = devs.len();
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let name = format!("members-aggregate-{n}");
    let pattern = |len, threads, shared, seq_only| Pattern {
        len,
        threads,
        shared,
        seq_only,
    };
    bench_aggregate(c, group, &name, devs, &pattern(SEQ, n, false, false));
    let shared_name = format!("{name}-shared-buffer");
    bench_aggregate(
        c,
        group,
        &shared_name,
        devs,
        &pattern(SEQ / 2, n, true, true),
    );
    if !all {
        return;
    }
    bench_aggregate(
        c,
        group,
        &shared_name,
        devs,
        &pattern(SEQ / 4, n, true, true),
    );
    for len in [SEQ / 2, SEQ / 4] {
        bench_aggregate(c, group, &name, devs, &pattern(len, n, false, true));
    }
    if cores < n {
        let name = format!("{name}-on-{cores}-threads");
        bench_aggregate(c, group, &name, devs, &pattern(SEQ, cores, false, true));
    }
}

/// Sequential 1 MiB and (unless `seq_only`) random 4 KiB I/O, one request
/// at a time, from page-aligned buffers (as the aggregate uses).
fn bench_target(c: &mut Criterion, group: &str, name: &str, t: &dyn Target) {
    bench_target_with(c, group, name, t, false)
}

fn bench_target_with(c: &mut Criterion, group: &str, name: &str, t: &dyn Target, seq_only: bool) {
    let mut data = AlignedBuf::new(SEQ);
    data.as_mut().fill(0x5a);
    let data = data.as_ref();
    let size = t.size() / SEQ as u64 * SEQ as u64;
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(SEQ as u64));
    let mut pos = 0u64;
    let usage = Usage::default();
    g.bench_function(format!("{name}/seq-write-1MiB"), |b| {
        b.iter_custom(|iters| {
            usage.time(iters, SEQ as u64, || {
                t.write(data, pos);
                pos = (pos + SEQ as u64) % size;
            })
        })
    });
    usage.report(&format!("{group}/{name}/seq-write-1MiB (logical bytes)"));
    let mut buf = AlignedBuf::new(SEQ);
    let buf = buf.as_mut();
    g.bench_function(format!("{name}/seq-read-1MiB"), |b| {
        b.iter_custom(|iters| {
            usage.time(iters, SEQ as u64, || {
                t.read(buf, pos);
                black_box(&buf);
                pos = (pos + SEQ as u64) % size;
            })
        })
    });
    usage.report(&format!("{group}/{name}/seq-read-1MiB (logical bytes)"));
    if seq_only {
        g.finish();
        return;
    }
    g.throughput(Throughput::Bytes(RND as u64));
    let mut offs = Offsets(0x9e37_79b9);
    g.bench_function(format!("{name}/rand-write-4KiB"), |b| {
        b.iter(|| t.write(&data[..RND], offs.next(size, RND as u64)))
    });
    g.bench_function(format!("{name}/rand-read-4KiB"), |b| {
        b.iter(|| t.read(&mut buf[..RND], offs.next(size, RND as u64)))
    });
    g.finish();
}

/// The volume driven like the aggregate drives the members: `streams`
/// threads at once (as many as the aggregate's), each streaming sequential
/// 1 MiB requests back to back over its own part of the volume (writes from
/// one shared buffer, reads into its own), timed together. Counts logical
/// bytes.
fn bench_streams(c: &mut Criterion, group: &str, name: &str, vol: &Volume, streams: usize) {
    let part = vol.size() / streams as u64 / SEQ as u64 * SEQ as u64;
    let mut src = AlignedBuf::new(SEQ);
    src.as_mut().fill(0x5a);
    let src = src.as_ref();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes((SEQ * streams) as u64));
    for (test, write) in [("seq-write-1MiB", true), ("seq-read-1MiB", false)] {
        g.bench_function(format!("{name}/{test}"), |b| {
            b.iter_custom(|iters| {
                let start = std::sync::Barrier::new(streams + 1);
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..streams)
                        .map(|t| {
                            let start = &start;
                            s.spawn(move || {
                                let mut buf = AlignedBuf::new(SEQ);
                                let base = t as u64 * part;
                                let mut pos = 0u64;
                                start.wait();
                                for _ in 0..iters {
                                    if write {
                                        vol.write_at(src, base + pos).unwrap();
                                    } else {
                                        vol.read_at(buf.as_mut(), base + pos).unwrap();
                                    }
                                    pos = (pos + SEQ as u64) % part;
                                }
                                black_box(buf.as_ref());
                            })
                        })
                        .collect();
                    release_and_time(&start, handles)
                })
            })
        });
    }
    g.finish();
}

fn in_process(c: &mut Criterion) {
    let dir = scratch();
    let plain = files(dir.path(), "plain", 1);
    fill(&plain);
    let plain = Plain(plain[0].clone());
    // The single plain file: the same I/O, once (it does not depend on the
    // level).
    bench_target(c, "engine/single-file", "plain-file", &plain);
    for (spec, n) in [("raid1", 2), ("raid10:n2", 4), ("raid6:left-symmetric", 6)] {
        let devs = files(dir.path(), &format!("{}-", spec.replace(':', "-")), n);
        // Real pages everywhere; the resync below makes parity match them.
        fill(&devs);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 1024;
        let vol = Volume::create(devs.clone(), &opts).unwrap();
        vol.resync_all().unwrap();
        let group = format!("engine/{spec}");
        bench_target(c, &group, "volume", &vol);
        if spec == "raid10:n2" {
            // Alternatives of the same volume: member I/O on one thread per
            // core (the calling one included), and one member after the
            // other on the calling thread.
            let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
            vol.set_member_threads(cores);
            bench_target_with(c, &group, &format!("volume-{cores}-threads"), &vol, true);
            vol.set_member_threads(1);
            bench_target_with(c, &group, "volume-serial", &vol, true);
            vol.set_member_threads(0);
        }
        // As many callers as the aggregate has threads (same queue depth).
        bench_streams(c, &group, &format!("volume-{n}-streams"), &vol, n);
        if spec == "raid10:n2" {
            // Each caller doing its own member I/O (the streams are the
            // parallelism).
            vol.set_member_threads(1);
            bench_streams(c, &group, &format!("volume-{n}-streams-serial"), &vol, n);
            vol.set_member_threads(0);
        }
        bench_aggregates(c, &group, &devs, spec == "raid10:n2");
    }
}

fn rebuild(c: &mut Criterion) {
    let dir = scratch();
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    for (spec, n) in [("raid1", 2), ("raid10:n2", 4), ("raid6:left-symmetric", 6)] {
        let devs = files(dir.path(), &format!("rb-{}-", spec.replace(':', "-")), n);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 1024;
        let vol = Volume::create(devs, &opts).unwrap();
        let per_member = vol.geometry().unwrap().used_sectors()[0] * 512;
        g.throughput(Throughput::Bytes(per_member));
        let spare: PathBuf = dir.path().join(format!("spare-{n}"));
        g.bench_function(format!("{spec}/member-{}MiB", per_member >> 20), |b| {
            b.iter(|| {
                vol.fail_member(0).unwrap();
                let d = FileDevice::create(&spare, MEMBER, CacheMode::DirectIfSupported).unwrap();
                vol.replace(0, Arc::new(d)).unwrap();
                vol.rebuild(0, &RebuildOptions::default()).unwrap();
            })
        });
    }
    g.finish();
}

/// A loop device, detached on drop.
struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn losetup(file: &Path) -> Option<Loop> {
    let out = Command::new("losetup")
        .args(["-f", "--show", "--direct-io=on"])
        .arg(file)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| Loop(String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

struct Raw(std::fs::File, u64);
impl Target for Raw {
    fn size(&self) -> u64 {
        self.1
    }
    fn write(&self, buf: &[u8], off: u64) {
        self.0.write_all_at(buf, off).unwrap()
    }
    fn read(&self, buf: &mut [u8], off: u64) {
        self.0.read_exact_at(buf, off).unwrap()
    }
}

/// O_DIRECT on the loop devices. The buffers `bench_target` passes are
/// page-aligned and go to the device as they are (an aligned copy made per
/// request would add the same time to both sides and flatter the slower
/// one); anything else goes through an aligned copy.
struct DirectLoop(Raw);
impl Target for DirectLoop {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn write(&self, buf: &[u8], off: u64) {
        if (buf.as_ptr() as usize).is_multiple_of(4096) {
            return self.0.write(buf, off);
        }
        let mut a = AlignedBuf::new(buf.len());
        a.as_mut().copy_from_slice(buf);
        self.0.write(a.as_ref(), off)
    }
    fn read(&self, buf: &mut [u8], off: u64) {
        if (buf.as_ptr() as usize).is_multiple_of(4096) {
            return self.0.read(buf, off);
        }
        let mut a = AlignedBuf::new(buf.len());
        self.0.read(a.as_mut(), off);
        buf.copy_from_slice(a.as_ref());
    }
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);
struct AlignedBuf(Vec<Page>, usize);
impl AlignedBuf {
    fn new(len: usize) -> Self {
        AlignedBuf(vec![Page([0; 4096]); len.div_ceil(4096)], len)
    }
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.0)[..self.1]
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.0)[..self.1]
    }
}

fn open_direct(dev: &str) -> Raw {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(dev)
        .unwrap();
    let size = std::fs::metadata("/sys/block")
        .ok()
        .and_then(|_| std::fs::read_to_string(format!("/sys/block/{}/size", &dev[5..])).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 512;
    Raw(f, size)
}

fn kernel_path(c: &mut Criterion) {
    if !Path::new("/dev/fuse").exists() || !rustix::process::geteuid().is_root() {
        eprintln!("kernel-path benchmarks skipped: need root and /dev/fuse");
        return;
    }
    let dir = scratch();
    let plain = dir.path().join("plain-loop");
    std::fs::File::create(&plain)
        .unwrap()
        .set_len(MEMBER * 2)
        .unwrap();
    let Some(plain_loop) = losetup(&plain) else {
        eprintln!("kernel-path benchmarks skipped: losetup failed");
        return;
    };
    bench_target(
        c,
        "kernel/loop",
        "plain-file",
        &DirectLoop(open_direct(&plain_loop.0)),
    );
    // The defaults (256 KiB requests: a 1 MiB write or read of the loop
    // device is four requests, served in parallel; 4 worker threads;
    // adaptive polling with windows up to 50 µs), then one change at a
    // time: no polling (the default before adaptive polling), busy polling
    // for 1 ms after every request, adaptive polling up to 100 µs, one
    // worker thread. Last, the defaults over a single member (no RAID: what
    // the FUSE path itself costs), with and without polling. (Request sizes
    // and worker counts were compared before polling existed: the crate's
    // README keeps those figures.)
    use raid_engine::fuse::ExposeOptions;
    use std::time::Duration;
    let raid10 = ("raid10:n2", 4);
    let no_poll = ExposeOptions::default().with_adaptive_poll(Duration::ZERO);
    let variants = [
        ("fuse-raid10-n2", raid10, ExposeOptions::default()),
        ("fuse-raid10-n2-no-poll", raid10, no_poll.clone()),
        (
            "fuse-raid10-n2-busy-poll-1ms",
            raid10,
            ExposeOptions::default().with_busy_poll(Duration::from_millis(1)),
        ),
        (
            "fuse-raid10-n2-adaptive-100us",
            raid10,
            ExposeOptions::default().with_adaptive_poll(Duration::from_micros(100)),
        ),
        (
            "fuse-raid10-n2-1-worker",
            raid10,
            ExposeOptions::default().with_workers(1),
        ),
        ("fuse-single", ("single", 1), ExposeOptions::default()),
        ("fuse-single-no-poll", ("single", 1), no_poll),
    ];
    for (i, (name, (layout, members), fuse_opts)) in variants.into_iter().enumerate() {
        let devs = files(dir.path(), &format!("k{i}-"), members);
        let mut opts = CreateOptions::new(VolumeLayout::parse(layout).unwrap());
        opts.chunk_sectors = 1024;
        let vol = Arc::new(Volume::create(devs, &opts).unwrap());
        let mnt = dir.path().join(format!("fuse-{i}"));
        std::fs::create_dir(&mnt).unwrap();
        let exp = raid_engine::fuse::expose_with(vol, &mnt, "volume", &fuse_opts).unwrap();
        let Some(fuse_loop) = losetup(exp.file()) else {
            eprintln!("kernel-path benchmarks skipped: losetup on the FUSE file failed");
            return;
        };
        // What the CLI's `expose --loop` does too: `fuse::expose` (its
        // worker threads on cloned /dev/fuse fds) and `losetup
        // --direct-io=on`. Show whether the loop driver really took direct
        // I/O on each backing file.
        for (what, l) in [("plain", &plain_loop), ("FUSE", &fuse_loop)] {
            let dio = std::fs::read_to_string(format!("/sys/block/{}/loop/dio", &l.0[5..]))
                .unwrap_or_else(|_| "?".into());
            eprintln!(
                "kernel path: loop device over the {what} file: dio={}",
                dio.trim()
            );
        }
        bench_kernel_target(c, name, &DirectLoop(open_direct(&fuse_loop.0)), &exp);
        drop(fuse_loop);
        // What the exposure's threads cost once its I/O has stopped.
        std::thread::sleep(Duration::from_millis(100));
        let (cpu, polls) = (fuser_cpu(), exp.stats().polls);
        std::thread::sleep(Duration::from_secs(1));
        eprintln!(
            "kernel path: {name}: idle for 1 s: its threads used {} µs of CPU, {} polls",
            fuser_cpu().saturating_sub(cpu).as_micros(),
            exp.stats().polls - polls
        );
        let stats = exp.stats();
        eprintln!(
            "kernel path: {name}: largest FUSE requests served: write {} KiB, read {} KiB",
            stats.largest_write_bytes >> 10,
            stats.largest_read_bytes >> 10
        );
        exp.unmount().unwrap();
        // Room in tmpfs for the next variant's members.
        for m in 0..members {
            let _ = std::fs::remove_file(dir.path().join(format!("k{i}-{m}")));
        }
    }
}

/// CPU time used so far by the FUSE session's worker threads (fuser names
/// them `fuser-N`), from the scheduler's per-thread run time in
/// `/proc/self/task/*/schedstat` (nanoseconds).
fn fuser_cpu() -> std::time::Duration {
    let mut ns = 0u64;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("fuser-") {
            continue;
        }
        ns += std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
    }
    std::time::Duration::from_nanos(ns)
}

/// `bench_target`'s four tests on a loop device over a FUSE exposure, each
/// followed by what the exposure's worker threads cost per request served
/// during it (warm-up included): their CPU time, and the polls, hits and
/// time polling.
fn bench_kernel_target(
    c: &mut Criterion,
    name: &str,
    t: &dyn Target,
    exp: &raid_engine::fuse::FuseExposure,
) {
    let mut data = AlignedBuf::new(SEQ);
    data.as_mut().fill(0x5a);
    let data = data.as_ref();
    let size = t.size() / SEQ as u64 * SEQ as u64;
    let mut buf = AlignedBuf::new(SEQ);
    let buf = buf.as_mut();
    let mut pos = 0u64;
    let mut offs = Offsets(0x9e37_79b9);
    let mut g = c.benchmark_group("kernel/loop");
    for test in [
        "seq-write-1MiB",
        "seq-read-1MiB",
        "rand-write-4KiB",
        "rand-read-4KiB",
    ] {
        let (cpu, before) = (fuser_cpu(), exp.stats());
        let len = if test.starts_with("seq") { SEQ } else { RND };
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{name}/{test}"), |b| match test {
            "seq-write-1MiB" => b.iter(|| {
                t.write(data, pos);
                pos = (pos + SEQ as u64) % size;
            }),
            "seq-read-1MiB" => b.iter(|| {
                t.read(buf, pos);
                black_box(&buf);
                pos = (pos + SEQ as u64) % size;
            }),
            "rand-write-4KiB" => b.iter(|| t.write(&data[..RND], offs.next(size, RND as u64))),
            _ => b.iter(|| t.read(&mut buf[..RND], offs.next(size, RND as u64))),
        });
        let (cpu, after) = (fuser_cpu().saturating_sub(cpu), exp.stats());
        let requests = after.reads + after.writes - before.reads - before.writes;
        if requests == 0 {
            continue; // filtered out
        }
        let polls = after.polls - before.polls;
        eprintln!(
            "kernel path: {name}/{test}: {requests} FUSE requests; worker CPU {:.1} µs per request; \
             {polls} polls ({:.0} % hit), polling {:.1} µs per request",
            cpu.as_nanos() as f64 / requests as f64 / 1e3,
            100.0 * (after.poll_hits - before.poll_hits) as f64 / polls.max(1) as f64,
            (after.poll_time - before.poll_time).as_nanos() as f64 / requests as f64 / 1e3,
        );
    }
    g.finish();
}

/// A child process killed (by PID) on drop.
struct Peer(std::process::Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// NBD members, one request at a time against pipelined (16 in flight),
/// over the engine's own server and over nbdkit's file plugin (when
/// installed), on the same tmpfs file: a single member, and a RAID10 n2
/// volume over four NBD members of the engine's server.
fn nbd(c: &mut Criterion) {
    use raid_engine::nbd::{AllowList, Export, NbdDevice, NbdServer};
    let dir = scratch();
    let devs = files(dir.path(), "nbd-", 4);
    fill(&devs);
    let server = NbdServer::bind("127.0.0.1:0").unwrap();
    for (i, d) in devs.iter().enumerate() {
        server
            .add_export(Export {
                name: format!("m{i}"),
                device: d.clone(),
                allow: AllowList::Only(vec!["127.0.0.1".parse().unwrap()]),
                read_only: false,
            })
            .unwrap();
    }
    let addr = server.local_addr().unwrap().to_string();
    let server = server.spawn().unwrap();
    let connect = |name: &str, window: usize| {
        let d = NbdDevice::connect(&addr, name).unwrap();
        d.set_max_in_flight(window).unwrap();
        Arc::new(d) as Arc<dyn BlockDevice>
    };
    for window in [1, 16] {
        bench_target(
            c,
            "nbd",
            &format!("engine-server/in-flight-{window}"),
            &Plain(connect("m0", window)),
        );
    }
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid10:n2").unwrap());
    opts.chunk_sectors = 1024;
    for window in [1, 16] {
        let members = (0..4).map(|i| connect(&format!("m{i}"), window)).collect();
        let vol = Volume::create(members, &opts).unwrap();
        bench_target(
            c,
            "nbd",
            &format!("raid10-n2-engine-server/in-flight-{window}"),
            &vol,
        );
        vol.close().unwrap();
    }
    let nbdkit = Command::new("sh")
        .args(["-c", "command -v nbdkit"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nbdkit {
        eprintln!("nbdkit benchmarks skipped: nbdkit is not installed");
    } else {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _peer = Peer(
            Command::new("nbdkit")
                .args(["-f", "-i", "127.0.0.1", "-p", &port.to_string(), "file"])
                .arg(dir.path().join("nbd-1"))
                .spawn()
                .unwrap(),
        );
        let kit = format!("127.0.0.1:{port}");
        let mut first = None;
        for _ in 0..200 {
            if let Ok(d) = NbdDevice::connect(&kit, "") {
                first = Some(d);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let first = first.expect("nbdkit did not come up");
        drop(first);
        for window in [1, 16] {
            let d = NbdDevice::connect(&kit, "").unwrap();
            d.set_max_in_flight(window).unwrap();
            bench_target(
                c,
                "nbd",
                &format!("nbdkit-file/in-flight-{window}"),
                &Plain(Arc::new(d)),
            );
        }
    }
    server.shutdown();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    in_process(&mut c);
    rebuild(&mut c);
    nbd(&mut c);
    kernel_path(&mut c);
    c.final_summary();
}
