//! Exposing a volume to the kernel through FUSE: a mount holding one
//! regular file whose bytes are the volume's. Attach a loop device to that
//! file (`losetup -f --show --direct-io=on MOUNT/FILE`) and the kernel sees a block device
//! on which `mkfs.ext4` and `mount` work, on hosts without md, ublk or nbd
//! kernel modules.
//!
//! Attach it with `--direct-io=on`: the loop driver then sends its requests
//! to the file as asynchronous direct I/O, the kernel passes several of them
//! to the FUSE session at once (`FUSE_ASYNC_DIO`, up to 1 MiB each; writes
//! can be split smaller with [`ExposeOptions::max_write_bytes`]), and the
//! session's [`WORKER_THREADS`] threads, each reading its own cloned
//! `/dev/fuse` fd, serve them concurrently. The file is opened with
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
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Largest FUSE read request asked of the kernel (with `max_pages` to
/// match).
const MAX_READ: u32 = 1 << 20;
/// Largest FUSE write request asked of the kernel by default (a 1 MiB
/// direct write of the loop device arrives as one request).
pub const DEFAULT_MAX_WRITE_BYTES: u32 = 1 << 20;
/// Background (asynchronous) requests the kernel may have outstanding.
const MAX_BACKGROUND: u16 = 64;
/// Threads reading requests from the FUSE device (each with its own
/// cloned fd) and serving them concurrently.
pub const WORKER_THREADS: usize = 4;

struct VolumeFs {
    volume: Arc<Volume>,
    max_write: u32,
    name: String,
    created: SystemTime,
    closed: Arc<AtomicBool>,
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
        // Large requests: the kernel clamps to what it supports.
        let _ = config.set_max_write(self.max_write);
        // fuser sizes `max_pages` (the largest request, reads included)
        // from the larger of the two.
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
        if offset.saturating_add(data.len() as u64) > self.volume.size() {
            reply.error(Errno::ENOSPC);
            return;
        }
        match self.volume.write_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
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
    /// to 1 MiB, the default; the kernel may lower it). A larger direct
    /// write of the loop device is split into requests of this size, all
    /// sent at once, which the worker threads serve in parallel (each
    /// copying its part of the payload out of the kernel, where one 1 MiB
    /// request is copied by one thread). Reads go in requests of up to
    /// 1 MiB whatever this is.
    pub max_write_bytes: u32,
}

impl Default for ExposeOptions {
    fn default() -> Self {
        ExposeOptions {
            max_write_bytes: DEFAULT_MAX_WRITE_BYTES,
        }
    }
}

impl ExposeOptions {
    /// These options with write requests of at most `max_write_bytes`.
    pub fn with_max_write_bytes(mut self, max_write_bytes: u32) -> Self {
        self.max_write_bytes = max_write_bytes;
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
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(invalid(
            "name",
            format!("{name:?} must be a plain file name (no `/`, not `.` or `..`)"),
        ));
    }
    let fs = VolumeFs {
        volume,
        max_write: opts.max_write_bytes,
        name: name.to_string(),
        created: SystemTime::now(),
        closed: Arc::new(AtomicBool::new(false)),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("raid-engine".into()),
        MountOption::Subtype("raid-engine".into()),
        MountOption::NoAtime,
    ];
    config.n_threads = Some(WORKER_THREADS);
    config.clone_fd = true;
    let mut session =
        fuser::Session::new(fs, mountpoint, &config).map_err(|e| EngineError::Io {
            what: format!("fuse: mount at {}", mountpoint.display()),
            source: e,
        })?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("fuse".into())
        .spawn(move || session.run())
        .map_err(crate::error::io_err("fuse: spawn session thread"))?;
    Ok(FuseExposure {
        mountpoint: mountpoint.to_path_buf(),
        file: mountpoint.join(name),
        thread: Some(thread),
        unmounter,
    })
}

impl FuseExposure {
    /// Path of the volume's file.
    pub fn file(&self) -> &Path {
        &self.file
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
