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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

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
    /// Set once the session exists (it needs the session's fd), when
    /// [`ExposeOptions::busy_poll`] is on.
    poller: Arc<std::sync::OnceLock<Poller>>,
}

impl VolumeFs {
    fn served(&self) {
        if let Some(p) = self.poller.get() {
            p.kick();
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

/// Busy polling of the session's own `/dev/fuse` fd (the one fuser's last
/// worker reads): while requests keep coming, the fd is non-blocking, so
/// that worker asks the kernel for the next request again and again
/// instead of sleeping until the kernel wakes it (fuser retries a read
/// that finds nothing). After a whole `window` without a request the fd
/// blocks again. The switch happens only at those transitions, under one
/// lock, so the fd's mode always matches `spinning`.
#[derive(Debug)]
struct Poller {
    fd: std::os::fd::OwnedFd,
    window: Duration,
    served: AtomicU64,
    spinning: AtomicBool,
    /// The fd's mode (true: non-blocking); held while switching it.
    mode: std::sync::Mutex<bool>,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Poller {
    fn set_mode(&self, mode: &mut bool, spin: bool) {
        let flags = rustix::fs::fcntl_getfl(&self.fd).map(|f| {
            if spin {
                f | rustix::fs::OFlags::NONBLOCK
            } else {
                f - rustix::fs::OFlags::NONBLOCK
            }
        });
        match flags.and_then(|f| rustix::fs::fcntl_setfl(&self.fd, f)) {
            Ok(()) => {
                *mode = spin;
                self.spinning.store(spin, Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, spin, "fuse: switching the busy poll failed"),
        }
    }

    /// A request was served: poll for the next one if not yet polling.
    fn kick(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if self.spinning.load(Ordering::Acquire) {
            return;
        }
        let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        if !*mode && !self.stop.load(Ordering::Acquire) {
            self.set_mode(&mut mode, true);
        }
        drop(mode);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The controller: ends the polling after a window without requests.
    fn control(&self) {
        while !self.stop.load(Ordering::Acquire) {
            if !self.spinning.load(Ordering::Acquire) {
                std::thread::park();
                continue;
            }
            let before = self.served.load(Ordering::Relaxed);
            std::thread::sleep(self.window);
            let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
            if *mode && self.served.load(Ordering::Relaxed) == before {
                self.set_mode(&mut mode, false);
            }
        }
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::Release);
        let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        if *mode {
            self.set_mode(&mut mode, false);
        }
        drop(mode);
        if let Some(t) = self.thread.get() {
            t.unpark();
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
    /// Busy polling: after a read or write request, one worker (the one
    /// reading the session's own `/dev/fuse` fd, which is then made
    /// non-blocking) keeps asking the kernel for the next request, using a
    /// core meanwhile, instead of sleeping until the kernel wakes it, until
    /// no request has come for this long; a small thread ends the polling
    /// after such an idle window. It trades a busy core for one thread
    /// wake-up less per request while requests keep coming. Zero (the
    /// default) turns it off; at most one second.
    pub busy_poll: Duration,
}

impl Default for ExposeOptions {
    fn default() -> Self {
        ExposeOptions {
            max_write_bytes: DEFAULT_MAX_WRITE_BYTES,
            workers: WORKER_THREADS,
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

    /// These options with busy polling for `window` after each request
    /// (zero: off).
    pub fn with_busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window;
        self
    }

    /// These options with `workers` threads serving requests.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
}

/// [`expose`] with explicit options.
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
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(invalid(
            "name",
            format!("{name:?} must be a plain file name (no `/`, not `.` or `..`)"),
        ));
    }
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
            what: format!("fuse: mount at {}", mountpoint.display()),
            source: e,
        })?;
    let unmounter = session.unmount_callable();
    let controller = if opts.busy_poll.is_zero() {
        None
    } else {
        let fd = std::os::fd::AsFd::as_fd(&session)
            .try_clone_to_owned()
            .map_err(crate::error::io_err("fuse: duplicate the session's fd"))?;
        let p = Poller {
            fd,
            window: opts.busy_poll,
            served: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            mode: std::sync::Mutex::new(false),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        };
        let _ = poller.set(p);
        let shared = poller.clone();
        let t = std::thread::Builder::new()
            .name("fuse-poll".into())
            .spawn(move || {
                if let Some(p) = shared.get() {
                    p.control();
                }
            })
            .map_err(crate::error::io_err("fuse: spawn busy-poll thread"))?;
        if let Some(p) = poller.get() {
            let _ = p.thread.set(t.thread().clone());
        }
        Some(t)
    };
    let ours = poller.clone();
    let thread = std::thread::Builder::new()
        .name("fuse".into())
        .spawn(move || {
            let r = session.run();
            if let Some(p) = poller.get() {
                p.finish();
            }
            if let Some(t) = controller {
                let _ = t.join();
            }
            r
        })
        .map_err(|e| {
            // The session (dropped with the closure) unmounts; let the
            // controller end too.
            if let Some(p) = ours.get() {
                p.finish();
            }
            crate::error::io_err("fuse: spawn session thread")(e)
        })?;
    Ok(FuseExposure {
        mountpoint: mountpoint.to_path_buf(),
        file: mountpoint.join(name),
        thread: Some(thread),
        unmounter,
        counters,
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
                    what: format!("fuse: unmount {}", self.mountpoint.display()),
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
