//! Exposing a volume to the kernel through FUSE: a mount holding one
//! regular file whose bytes are the volume's. Attach a loop device to that
//! file (`losetup -f --show --direct-io=on MOUNT/FILE`) and the kernel sees a block device
//! on which `mkfs.ext4` and `mount` work, on hosts without md, ublk or nbd
//! kernel modules.
//!
//! Attach it with `--direct-io=on`: the loop driver then sends its requests
//! to the file as asynchronous direct I/O, the kernel passes several of them
//! to the FUSE session at once (`FUSE_ASYNC_DIO`), and the session's worker
//! threads ([`WORKER_THREADS`] by default, [`ExposeOptions::workers`]), each
//! reading its own cloned `/dev/fuse` fd, serve them concurrently. Requests
//! carry at most [`DEFAULT_MAX_WRITE_BYTES`] (256 KiB) by default
//! ([`ExposeOptions::max_write_bytes`]), reads as well as writes: a 1 MiB
//! I/O of the loop device arrives as four requests at once, which several
//! threads copy in and out of the kernel in parallel.
//!
//! The request sizes are settled once, when the kernel's `INIT` is
//! answered: [`expose_with`] returns only after that (fuser's
//! `Session::new` answers it before returning), so a loop device attached
//! to [`FuseExposure::file`] afterwards always sees the final sizes. The
//! kernel may lower them (it caps every request at its `max_pages_limit`,
//! 256 pages by default); [`FuseExposure::stats`] tells the largest
//! requests really served.
//!
//! While requests come at short gaps, the worker that has just replied
//! polls for the next one instead of sleeping until the kernel wakes it
//! (one thread wake-up less per request, most of a small request's extra
//! cost at one in flight), for a window sized from the recent gaps;
//! sparse or no I/O does not poll ([`ExposeOptions::adaptive_poll`], on by
//! default; [`ExposeOptions::busy_poll`] polls for a fixed window after
//! every request).
//!
//! The file is opened with
//! `FOPEN_DIRECT_IO` and `FOPEN_PARALLEL_DIRECT_WRITES`: the kernel keeps no
//! page cache for it (so it has none to look up and invalidate around every
//! direct write), and direct writes that do not extend the file take the
//! inode's lock shared, not exclusive, so concurrent ones are not serialised
//! before they reach the workers. (Memory-mapping the file is refused.)
//!
//! Writes are passed through (no FUSE writeback cache): a write is
//! acknowledged only after the volume has written it to its members, and
//! `fsync` on the file (what the loop driver does for a flush) flushes the
//! volume, which covers every write acknowledged before it, whichever thread
//! served it, so a file system on top keeps its durability guarantees.
//! Unmounting (`umount`, [`FuseExposure::unmount`]) closes the volume
//! cleanly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request,
    SessionUnmounter, TimeOrNow, WriteFlags,
};

use bytemuck::Zeroable;

use crate::device::{DIRECT_ALIGN, Page};
use crate::error::{EngineError, Result, invalid};
use crate::volume::Volume;

thread_local! {
    /// Each FUSE worker's read buffer, kept between requests (no
    /// allocation and zeroing of up to 1 MiB per read) and page-aligned, so
    /// that `O_DIRECT` members read straight into it.
    static READ_BUF: std::cell::RefCell<Vec<Page>> = const { std::cell::RefCell::new(Vec::new()) };
}

const FILE_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);
/// Largest request size allowed (the kernel's default `max_pages_limit`,
/// 256 pages), and the readahead asked for (the kernel lowers it to what it
/// offers, 128 KiB on usual kernels).
const MAX_READ: u32 = 1 << 20;
/// Largest FUSE request asked of the kernel by default: 256 KiB, so that a
/// 1 MiB direct write or read of the loop device arrives as four requests
/// at once, which the worker threads copy in and out of the kernel and
/// serve in parallel (one 1 MiB request is copied by one thread before any
/// member is written; the kernel-path benchmark measures both). It is
/// `max_write`, and fuser sizes the kernel's per-request page limit
/// (`max_pages`, which caps reads) from the larger of `max_write` and the
/// negotiated readahead, so reads are split the same way.
pub const DEFAULT_MAX_WRITE_BYTES: u32 = 256 << 10;
/// Background (asynchronous) requests the kernel may have outstanding.
const MAX_BACKGROUND: u16 = 64;
/// Threads reading requests from the FUSE device (each with its own
/// cloned fd) and serving them concurrently, by default
/// ([`ExposeOptions::workers`]).
pub const WORKER_THREADS: usize = 4;
/// Most worker threads [`ExposeOptions::workers`] accepts.
pub const MAX_WORKER_THREADS: usize = 64;

struct VolumeFs {
    volume: Arc<Volume>,
    max_write: u32,
    name: String,
    created: SystemTime,
    closed: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Set once the session exists (it needs the session's fd), unless
    /// polling is off.
    poller: Arc<std::sync::OnceLock<Poller>>,
}

impl VolumeFs {
    fn arrived(&self) {
        if let Some(p) = self.poller.get() {
            p.arrived();
        }
    }

    fn served(&self) {
        if let Some(p) = self.poller.get() {
            p.served();
        }
    }
}

/// What the session has served, shared with the [`FuseExposure`].
#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    largest_read: AtomicU64,
    largest_write: AtomicU64,
}

impl Counters {
    fn count(n: &AtomicU64, largest: &AtomicU64, len: usize) {
        n.fetch_add(1, Ordering::Relaxed);
        largest.fetch_max(len as u64, Ordering::Relaxed);
    }
}

/// How a worker that has just served a request waits for the next one.
#[derive(Debug, Clone, Copy)]
enum PollMode {
    /// Poll for the window [`ExposeOptions::busy_poll`] after every request.
    Fixed(Duration),
    /// Poll only while requests have been coming at short gaps, for a
    /// window sized from those gaps, at most `cap`
    /// ([`ExposeOptions::adaptive_poll`]).
    Adaptive { cap: Duration },
}

/// Polling for the next request after one is served, instead of going back
/// to sleep in `read(2)` on `/dev/fuse` and being woken by the kernel when
/// it comes (a thread wake-up per request, the largest cost of a small
/// request at one in flight).
///
/// The worker that has just replied (the reply is on its way to the kernel
/// before this runs) asks `poll(2)`, without waiting, whether the session
/// has a request queued, over and over (yielding the core between tries,
/// so that on a small machine the threads that make the next request, and
/// the other workers, still run) until one is queued or the window ends;
/// then it returns to fuser, whose `read(2)` takes the request at once.
/// Every worker's cloned fd reads the same queue, so the session's own fd
/// (duplicated here) tells whether any request is queued. Only one worker
/// polls at a time; the others go back to `read(2)`.
///
/// In the adaptive mode, a gap between a reply and the next request is
/// short when it is at most twice the cap (a gap seen by a worker that
/// slept includes its wake-up, so a gap the polling would have caught may
/// look longer). Polling happens only while at least half of the recent
/// gaps were short (an EWMA), so that sparse I/O stops polling within a
/// few requests, even if some of its requests come close together. The
/// window is twice the
/// average short gap (an EWMA), from a quarter of the cap up to the cap.
/// A poll ends early when another worker (woken by the kernel) took the
/// request first: that counts as a hit too, the request came within the
/// window. Once fewer than half of the recent polls (an EWMA) found a
/// request, a poll that ends without one makes the next ones skip: 1, 3,
/// 7, … up to 63 requests after consecutive misses, back to every request
/// after a hit. While too few gaps are short, one request in 64 whose gap
/// was at most 16 times the cap is followed by a probing poll for the
/// whole cap; a hit turns polling back on (requests further apart never
/// cause a poll).
#[derive(Debug)]
struct Poller {
    fd: std::os::fd::OwnedFd,
    mode: PollMode,
    /// Held by the one worker polling.
    token: AtomicBool,
    epoch: Instant,
    /// When the last reply was sent (ns since `epoch`).
    last_reply: AtomicU64,
    /// EWMA of the share of short gaps between a reply and the next
    /// request (in 1/`ONE`).
    short: AtomicU32,
    /// EWMA of the short gaps (ns).
    short_gap: AtomicU64,
    /// The last gap (ns).
    last_gap: AtomicU64,
    /// Requests served while too few gaps were short, for probing.
    probe: AtomicU32,
    /// A poll saw the next request come and recorded its gap.
    caught: AtomicBool,
    /// Read and write requests received.
    arrivals: AtomicU64,
    /// Consecutive polls that ended without a request.
    misses_in_row: AtomicU32,
    /// EWMA of the share of polls that found a request (in 1/`ONE`).
    hit_rate: AtomicU32,
    /// Requests still to serve without polling after those misses.
    skip: AtomicU32,
    polls: AtomicU64,
    hits: AtomicU64,
    poll_nanos: AtomicU64,
}

/// What a poll saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polled {
    /// A request queued, for the polling worker's `read(2)`.
    Queued,
    /// A request came but another worker (woken by the kernel for it)
    /// took it first.
    Taken,
    /// No request within the window.
    Nothing,
}

/// Most requests skipped without polling after consecutive misses.
const MAX_SKIP: u32 = 63;
/// All of the recent gaps short ([`Poller::short`]).
const ONE: u32 = 1024;
/// While too few gaps are short, one request in this many is followed by a
/// probing poll...
const PROBE_EVERY: u32 = 64;
/// ...if its gap was at most this many times the longest window.
const PROBE_GAPS: u64 = 16;

impl Poller {
    fn new(fd: std::os::fd::OwnedFd, mode: PollMode) -> Poller {
        let cap = match mode {
            PollMode::Adaptive { cap } => cap,
            PollMode::Fixed(w) => w,
        };
        Poller {
            fd,
            mode,
            token: AtomicBool::new(false),
            epoch: Instant::now(),
            last_reply: AtomicU64::new(0),
            short: AtomicU32::new(ONE),
            short_gap: AtomicU64::new(cap.as_nanos() as u64 / 2),
            last_gap: AtomicU64::new(u64::MAX),
            probe: AtomicU32::new(0),
            caught: AtomicBool::new(false),
            arrivals: AtomicU64::new(0),
            misses_in_row: AtomicU32::new(0),
            hit_rate: AtomicU32::new(ONE),
            skip: AtomicU32::new(0),
            polls: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            poll_nanos: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A read or write request has arrived: record the gap since the last
    /// reply (zero if another request was still being served), unless a
    /// poll saw it come and recorded the gap then (a sleeping worker woken
    /// for it may have taken it first, and seen its own wake-up as gap).
    fn arrived(&self) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        if self.mode_adaptive() && !self.caught.swap(false, Ordering::Relaxed) {
            let gap = self
                .now()
                .saturating_sub(self.last_reply.load(Ordering::Relaxed));
            self.record(gap);
        }
    }

    fn mode_adaptive(&self) -> bool {
        matches!(self.mode, PollMode::Adaptive { .. })
    }

    /// Account a gap between a reply and the next request.
    fn record(&self, gap: u64) {
        let PollMode::Adaptive { cap } = self.mode else {
            return;
        };
        self.last_gap.store(gap, Ordering::Relaxed);
        // EWMAs with weight 1/8 (racing updates may lose a sample: harmless).
        let is_short = gap <= 2 * cap.as_nanos() as u64;
        let old = self.short.load(Ordering::Relaxed);
        let new = old - old / 8 + if is_short { ONE / 8 } else { 0 };
        self.short.store(new, Ordering::Relaxed);
        if is_short {
            let old = self.short_gap.load(Ordering::Relaxed);
            self.short_gap
                .store(old - old / 8 + gap / 8, Ordering::Relaxed);
        }
    }

    /// A reply has been sent: poll for the next request if that pays.
    fn served(&self) {
        self.last_reply.store(self.now(), Ordering::Relaxed);
        let mut probing = false;
        let window = match self.mode {
            PollMode::Fixed(w) => w,
            PollMode::Adaptive { cap } => {
                let skipping = self
                    .skip
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1))
                    .is_ok();
                if skipping {
                    return;
                }
                if self.short.load(Ordering::Relaxed) < ONE / 2 {
                    // Too few short gaps, as seen. A worker that slept sees
                    // its wake-up in the gap, so these may be short gaps
                    // made long by the wake-ups polling would save: probe
                    // once every `PROBE_EVERY` requests, with the whole
                    // window, while the last gap was at most
                    // `PROBE_GAPS` windows (I/O sparser than that never
                    // polls).
                    let last = self.last_gap.load(Ordering::Relaxed);
                    if last > PROBE_GAPS * cap.as_nanos() as u64
                        || !self
                            .probe
                            .fetch_add(1, Ordering::Relaxed)
                            .is_multiple_of(PROBE_EVERY)
                    {
                        return;
                    }
                    probing = true;
                    cap
                } else {
                    let cap = cap.as_nanos() as u64;
                    let gap = self.short_gap.load(Ordering::Relaxed);
                    Duration::from_nanos((2 * gap).clamp(cap / 4, cap))
                }
            }
        };
        if self
            .token
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let start = Instant::now();
        let polled = self.poll_for(start + window);
        let hit = polled != Polled::Nothing;
        self.token.store(false, Ordering::Release);
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.poll_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // EWMA with weight 1/16 of the polls that found a request.
        let old = self.hit_rate.load(Ordering::Relaxed);
        let new = old - old / 16 + if hit { ONE / 16 } else { 0 };
        self.hit_rate.store(new, Ordering::Relaxed);
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.misses_in_row.store(0, Ordering::Relaxed);
            if self.mode_adaptive() {
                // The true gap (up to a few µs of polling), whoever takes
                // the request; a short one, as the poll caught it, even if
                // the polling worker lost its core for longer than the
                // window (on a loaded machine).
                let gap = self
                    .now()
                    .saturating_sub(self.last_reply.load(Ordering::Relaxed));
                self.record(gap.min(window.as_nanos() as u64));
                self.caught
                    .store(polled == Polled::Queued, Ordering::Relaxed);
            }
            if probing {
                // The gaps are short after all: poll after every request.
                self.short.store(ONE, Ordering::Relaxed);
            }
        } else if let PollMode::Adaptive { .. } = self.mode {
            let k = self.misses_in_row.fetch_add(1, Ordering::Relaxed) + 1;
            if new >= ONE / 2 {
                // Most polls still find a request: a miss now and then
                // costs less than the wake-ups the hits save.
                return;
            }
            let skip = 1u32
                .checked_shl(k)
                .map_or(MAX_SKIP, |s| (s - 1).min(MAX_SKIP));
            self.skip.store(skip, Ordering::Relaxed);
        }
    }

    /// Whether a request came before `deadline`.
    fn poll_for(&self, deadline: Instant) -> Polled {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let arrivals = self.arrivals.load(Ordering::Relaxed);
        loop {
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&zero)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => {}
                // A queued request, or the connection is gone (the
                // worker's own read then ends the session).
                Ok(_) if fds[0].revents().contains(PollFlags::IN) => return Polled::Queued,
                Ok(_) => return Polled::Nothing,
                Err(e) => {
                    tracing::warn!(error = %e, "fuse: polling for the next request failed");
                    return Polled::Nothing;
                }
            }
            if self.arrivals.load(Ordering::Relaxed) != arrivals {
                return Polled::Taken;
            }
            if Instant::now() >= deadline {
                return Polled::Nothing;
            }
            std::thread::yield_now();
        }
    }
}

/// Requests served by a [`FuseExposure`] so far (every thread's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExposureStats {
    /// Read requests served.
    pub reads: u64,
    /// Write requests served.
    pub writes: u64,
    /// Bytes asked for by the largest read request.
    pub largest_read_bytes: u64,
    /// Bytes carried by the largest write request: at most the write size
    /// negotiated at `INIT` ([`ExposeOptions::max_write_bytes`] unless the
    /// kernel lowered it).
    pub largest_write_bytes: u64,
    /// Times a worker polled for the next request after serving one
    /// ([`ExposeOptions::adaptive_poll`], [`ExposeOptions::busy_poll`]).
    pub polls: u64,
    /// Polls that saw a request come within their window (the others
    /// ended with the window, and their worker went back to sleep).
    pub poll_hits: u64,
    /// Time spent polling, all polls together: the time a worker was kept
    /// on a core (or yielding it) waiting for a request.
    pub poll_time: Duration,
}

impl VolumeFs {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == FILE_INO {
            (FileType::RegularFile, 0o600, self.volume.size(), 1)
        } else {
            (FileType::Directory, 0o700, 0, 2)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind,
            perm,
            nlink,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn errno(e: &EngineError) -> Errno {
    tracing::warn!(error = %e, "fuse request failed");
    match e {
        EngineError::Invalid { .. } => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The request size: the kernel clamps to what it supports.
        let _ = config.set_max_write(self.max_write);
        // fuser sizes `max_pages` (the largest request, reads included)
        // from the larger of the two; the readahead cannot exceed what the
        // kernel offered (128 KiB usually), so `max_write` decides.
        let _ = config.set_max_readahead(MAX_READ);
        // Direct I/O on the file (what a loop device with `--direct-io=on`
        // does) is sent to us as several requests at once instead of one
        // after the other; the worker threads serve them in parallel.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        // Room for many such requests in flight before the kernel throttles.
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND / 4 * 3);
        Ok(())
    }

    fn destroy(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst)
            && let Err(e) = self.volume.close()
        {
            tracing::error!(error = %e, "closing the volume at unmount failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == OsStr::new(&self.name) {
            reply.entry(&TTL, &self.attr(FILE_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT || ino == FILE_INO {
            reply.attr(&TTL, &self.attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The file's size is the volume's; opening with O_TRUNC asks for
        // the size it already has only if it is empty, so refuse changes.
        if size.is_some_and(|s| s != self.volume.size()) {
            reply.error(Errno::EPERM);
            return;
        }
        reply.attr(&TTL, &self.attr(ino));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == FILE_INO {
            reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            );
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = offset
            .saturating_add(u64::from(size))
            .min(self.volume.size());
        if offset >= end {
            reply.data(&[]);
            return;
        }
        self.arrived();
        let len = (end - offset) as usize;
        Counters::count(
            &self.counters.reads,
            &self.counters.largest_read,
            size as usize,
        );
        READ_BUF.with_borrow_mut(|pages| {
            if pages.len() < len.div_ceil(DIRECT_ALIGN) {
                pages.resize(len.div_ceil(DIRECT_ALIGN), Page::zeroed());
            }
            // Every byte is the volume's once `read_at` succeeds; nothing of
            // an earlier request is sent on error.
            let buf = &mut bytemuck::cast_slice_mut::<Page, u8>(pages)[..len];
            match self.volume.read_at(buf, offset) {
                Ok(()) => reply.data(buf),
                Err(e) => reply.error(errno(&e)),
            }
        });
        self.served();
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.arrived();
        Counters::count(
            &self.counters.writes,
            &self.counters.largest_write,
            data.len(),
        );
        if offset.saturating_add(data.len() as u64) > self.volume.size() {
            reply.error(Errno::ENOSPC);
            return;
        }
        match self.volume.write_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
        self.served();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.volume.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.volume.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // No extended attributes and no fallocate (the loop driver asks for both:
    // `security.capability` before writes, hole punching for discards).
    // ENOSYS makes the kernel stop asking for the rest of the mount; fuser's
    // defaults answer the same but log a warning each time.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE_INO, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A volume exposed as `MOUNTPOINT/NAME` through FUSE.
#[derive(Debug)]
pub struct FuseExposure {
    mountpoint: PathBuf,
    file: PathBuf,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// Unmounts through the session, so that the session does not try again
    /// (and warn) when it ends.
    unmounter: SessionUnmounter,
    counters: Arc<Counters>,
    poller: Arc<std::sync::OnceLock<Poller>>,
}

/// Mount a FUSE file system at `mountpoint` (an existing empty directory)
/// holding one file, `name`, backed by `volume`. Needs `/dev/fuse` and
/// either root or `fusermount3`.
pub fn expose(volume: Arc<Volume>, mountpoint: &Path, name: &str) -> Result<FuseExposure> {
    expose_with(volume, mountpoint, name, &ExposeOptions::default())
}

/// Parameters of [`expose_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExposeOptions {
    /// Largest write request the kernel sends (a multiple of 4 KiB, 4 KiB
    /// to 1 MiB; [`DEFAULT_MAX_WRITE_BYTES`], 256 KiB, by default; the
    /// kernel may lower it). A larger direct write of the loop device is
    /// split into requests of this size, all sent at once, which the
    /// worker threads serve in parallel (each copying its part of the
    /// payload out of the kernel, where one 1 MiB request is copied by one
    /// thread). Reads are split at the same size where it is above the
    /// kernel's readahead (128 KiB usually), at that readahead below it.
    pub max_write_bytes: u32,
    /// Threads serving requests, each reading its own cloned `/dev/fuse`
    /// fd (1 to [`MAX_WORKER_THREADS`]; [`WORKER_THREADS`] by default).
    pub workers: usize,
    /// Adaptive polling, on by default ([`DEFAULT_ADAPTIVE_POLL`], 50 µs):
    /// while requests come at short gaps, the worker that has just served
    /// one (one worker at a time) polls for the next instead of going back
    /// to sleep until the kernel wakes it, saving a thread wake-up per
    /// request, which is most of the cost of a small request at one in
    /// flight. It polls only while at least half of the recent gaps
    /// between a reply and the next request were at most twice this long,
    /// for a window of twice the average of those gaps, at most this long;
    /// so a volume with sparse I/O does not poll (but for a few windows
    /// after a burst) and an idle one never does. Polls that end without a
    /// request make the next requests skip polling (up to 63 of them,
    /// doubling). The polling worker yields its core between tries. Zero
    /// turns it off (a worker always sleeps until a request comes); at most
    /// 1 ms.
    pub adaptive_poll: Duration,
    /// Busy polling: after every read or write request, the worker that
    /// served it (one at a time) polls for the next one for this long,
    /// whatever the gaps, instead of going back to sleep. While requests
    /// keep coming within the window a core stays busy polling; after a
    /// window without one the worker sleeps. It replaces
    /// [`adaptive_poll`](Self::adaptive_poll) when set. Zero (the default)
    /// turns it off; at most one second.
    pub busy_poll: Duration,
}

/// The longest adaptive polling window by default
/// ([`ExposeOptions::adaptive_poll`]).
pub const DEFAULT_ADAPTIVE_POLL: Duration = Duration::from_micros(50);
/// Longest adaptive polling window [`ExposeOptions::adaptive_poll`] accepts.
pub const MAX_ADAPTIVE_POLL: Duration = Duration::from_millis(1);

impl Default for ExposeOptions {
    fn default() -> Self {
        ExposeOptions {
            max_write_bytes: DEFAULT_MAX_WRITE_BYTES,
            workers: WORKER_THREADS,
            adaptive_poll: DEFAULT_ADAPTIVE_POLL,
            busy_poll: Duration::ZERO,
        }
    }
}

impl ExposeOptions {
    /// These options with write requests of at most `max_write_bytes`.
    pub fn with_max_write_bytes(mut self, max_write_bytes: u32) -> Self {
        self.max_write_bytes = max_write_bytes;
        self
    }

    /// These options with adaptive polling windows of at most `cap` (zero:
    /// off).
    pub fn with_adaptive_poll(mut self, cap: Duration) -> Self {
        self.adaptive_poll = cap;
        self
    }

    /// These options with busy polling for `window` after each request
    /// (zero: off, adaptive polling as set).
    pub fn with_busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window;
        self
    }

    /// These options with `workers` threads serving requests.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    fn poll_mode(&self) -> Option<PollMode> {
        if !self.busy_poll.is_zero() {
            Some(PollMode::Fixed(self.busy_poll))
        } else if !self.adaptive_poll.is_zero() {
            Some(PollMode::Adaptive {
                cap: self.adaptive_poll,
            })
        } else {
            None
        }
    }
}

/// Refuse a mount point that is not an existing empty directory: as root
/// the kernel mounts over a regular file, and over a directory's entries,
/// which then vanish from view until the unmount.
fn check_mountpoint(mountpoint: &Path) -> Result<()> {
    let shown = crate::device::shown(mountpoint);
    let refuse = |rule: String| invalid("mountpoint", format!("{shown}: {rule}"));
    let meta = std::fs::metadata(mountpoint)
        .map_err(|e| refuse(format!("must be an existing empty directory ({e})")))?;
    if !meta.is_dir() {
        return Err(refuse(
            "must be an existing empty directory, not a file".into(),
        ));
    }
    let mut entries = std::fs::read_dir(mountpoint)
        .map_err(|e| refuse(format!("must be an existing empty directory ({e})")))?;
    if let Some(entry) = entries.next() {
        let first = entry.map_or_else(|e| e.to_string(), |e| crate::device::shown(e.file_name()));
        return Err(refuse(format!(
            "must be an empty directory, it holds {first}: mounting over it would hide what it holds"
        )));
    }
    Ok(())
}

/// Longest file name the kernel looks up (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// [`expose`] with explicit options.
///
/// Errors: [`EngineError::Invalid`] for options out of range, a `name`
/// that is not a plain file name (or is longer than the kernel's 255
/// bytes), and a `mountpoint` that is not an
/// existing empty directory (field `mountpoint`).
pub fn expose_with(
    volume: Arc<Volume>,
    mountpoint: &Path,
    name: &str,
    opts: &ExposeOptions,
) -> Result<FuseExposure> {
    let m = opts.max_write_bytes;
    if !(4096..=MAX_READ).contains(&m) || !m.is_multiple_of(4096) {
        return Err(invalid(
            "max_write_bytes",
            format!("{m} must be a multiple of 4096 from 4096 to {MAX_READ}"),
        ));
    }
    if !(1..=MAX_WORKER_THREADS).contains(&opts.workers) {
        return Err(invalid(
            "workers",
            format!("{} must be from 1 to {MAX_WORKER_THREADS}", opts.workers),
        ));
    }
    if opts.busy_poll > Duration::from_secs(1) {
        return Err(invalid(
            "busy_poll",
            format!("{:?} must be at most 1 s", opts.busy_poll),
        ));
    }
    if opts.adaptive_poll > MAX_ADAPTIVE_POLL {
        return Err(invalid(
            "adaptive_poll",
            format!(
                "{:?} must be at most {MAX_ADAPTIVE_POLL:?}",
                opts.adaptive_poll
            ),
        ));
    }
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(invalid(
            "name",
            format!(
                "{} must be a plain file name (no `/`, not `.` or `..`)",
                storage_units::quote(name)
            ),
        ));
    }
    // The kernel looks up no longer name (NAME_MAX): the file would be
    // served, and nobody could open it.
    if name.len() > NAME_MAX {
        return Err(invalid(
            "name",
            format!(
                "{} is {} bytes long: a file name may be at most {NAME_MAX} bytes",
                storage_units::quote(name),
                name.len()
            ),
        ));
    }
    check_mountpoint(mountpoint)?;
    let counters = Arc::new(Counters::default());
    let poller = Arc::new(std::sync::OnceLock::new());
    let fs = VolumeFs {
        poller: poller.clone(),
        volume,
        max_write: opts.max_write_bytes,
        name: name.to_string(),
        created: SystemTime::now(),
        closed: Arc::new(AtomicBool::new(false)),
        counters: counters.clone(),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("raid-engine".into()),
        MountOption::Subtype("raid-engine".into()),
        MountOption::NoAtime,
    ];
    config.n_threads = Some(opts.workers);
    config.clone_fd = true;
    let mut session =
        fuser::Session::new(fs, mountpoint, &config).map_err(|e| EngineError::Io {
            what: format!("fuse: mount at {}", crate::device::shown(mountpoint)),
            source: e,
        })?;
    let unmounter = session.unmount_callable();
    if let Some(mode) = opts.poll_mode() {
        // Every worker's cloned fd reads the same queue of requests: the
        // session's own fd tells whether one is queued.
        let fd = std::os::fd::AsFd::as_fd(&session)
            .try_clone_to_owned()
            .map_err(crate::error::io_err("fuse: duplicate the session's fd"))?;
        let _ = poller.set(Poller::new(fd, mode));
    }
    let thread = std::thread::Builder::new()
        .name("fuse".into())
        .spawn(move || session.run())
        // The session (dropped with the closure) unmounts.
        .map_err(crate::error::io_err("fuse: spawn session thread"))?;
    Ok(FuseExposure {
        mountpoint: mountpoint.to_path_buf(),
        file: mountpoint.join(name),
        thread: Some(thread),
        unmounter,
        counters,
        poller,
    })
}

impl FuseExposure {
    /// Path of the volume's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Requests served so far.
    pub fn stats(&self) -> ExposureStats {
        let c = &self.counters;
        ExposureStats {
            reads: c.reads.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            largest_read_bytes: c.largest_read.load(Ordering::Relaxed),
            largest_write_bytes: c.largest_write.load(Ordering::Relaxed),
            polls: self
                .poller
                .get()
                .map_or(0, |p| p.polls.load(Ordering::Relaxed)),
            poll_hits: self
                .poller
                .get()
                .map_or(0, |p| p.hits.load(Ordering::Relaxed)),
            poll_time: Duration::from_nanos(
                self.poller
                    .get()
                    .map_or(0, |p| p.poll_nanos.load(Ordering::Relaxed)),
            ),
        }
    }

    /// Whether the file system has been unmounted (for example by `umount`).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Unmount (if still mounted) and wait until the volume is closed.
    pub fn unmount(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        if !t.is_finished() && self.unmounter.unmount().is_err() {
            // Busy (a loop device still holds the file): detach lazily.
            rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH).map_err(
                |e| EngineError::Io {
                    what: format!("fuse: unmount {}", crate::device::shown(&self.mountpoint)),
                    source: e.into(),
                },
            )?;
        }
        match t.join() {
            // The kernel aborts the connection (ECONNABORTED on /dev/fuse) when the last user
            // of a lazily unmounted file system lets it go, such as a loop device whose detach
            // it deferred while a udev probe held the device: the session ended all the same,
            // and `destroy` closed the volume.
            Ok(Err(e))
                if e.raw_os_error() == Some(rustix::io::Errno::CONNABORTED.raw_os_error()) =>
            {
                tracing::debug!(error = %e, "fuse: the kernel aborted the connection at the last close");
                Ok(())
            }
            Ok(r) => r.map_err(crate::error::io_err("fuse: session")),
            Err(_) => Err(EngineError::Unavailable(
                "the FUSE session thread panicked".into(),
            )),
        }
    }
}

impl Drop for FuseExposure {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "FUSE teardown failed");
        }
    }
}
