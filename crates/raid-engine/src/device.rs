//! Member devices: the small trait every member of a volume implements, and
//! its local implementation over a file or block device.
//!
//! The trait is synchronous and `Sync`: the volume issues member I/O from
//! whichever thread serves a request (a FUSE worker, an NBD connection, a
//! rebuild thread) and fans large requests out over its member worker
//! threads, so the
//! same implementation serves the FUSE path, the NBD server and tests.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

/// A member of a volume: a fixed-size array of bytes that can be read,
/// written and made durable.
///
/// Contract:
/// * `read_at`/`write_at` transfer the whole buffer or fail; `offset +
///   buf.len()` must not exceed [`BlockDevice::size`] (an error otherwise).
/// * After `flush` returns `Ok`, every write that returned `Ok` before the
///   call started is durable.
/// * An `Err` from any call makes the volume treat the member as failed.
pub trait BlockDevice: Send + Sync + fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Read `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Tell the device that `len` bytes at `offset` are no longer needed.
    /// Advisory: afterwards the range reads as unspecified bytes; a device
    /// may do nothing (the default).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range_u64(self.size(), offset, len)
    }
    /// A short human-readable name (a path, `nbd://host:port/name`).
    fn describe(&self) -> String;
    /// The device's name as a message shows it, on one line: a name that
    /// starts `nbd://` is an NBD export's and is quoted as other text
    /// ([`storage_units::quote`]); any other is a path, shown by
    /// [`storage_units::quote_path`] (whole up to 256 characters, else its
    /// head and its tail, so that its last component stays visible).
    /// Errors and logs of this crate name a device this way, once; a
    /// device whose own I/O errors name it should answer here the text
    /// they name it by, so that a volume does not name it again. The
    /// default shows [`describe`](Self::describe).
    fn shown(&self) -> String {
        shown_name(&self.describe())
    }
    /// The alignment (bytes, a power of two) of buffer address, offset and
    /// length at which a write goes to the medium as it is. Writes of any
    /// other alignment still work, but the device has to copy them (and
    /// read the partly written blocks first): a volume that writes one
    /// piece of data to several copies aligns it to this once for all of
    /// them instead. Advisory, and may change over the device's life (a
    /// file that turns out to refuse unaligned direct I/O). The default is
    /// 1: any write goes as it is.
    fn alignment(&self) -> usize {
        1
    }
    /// Claim the device for the exclusive use of `holder` (a volume, a
    /// program exporting it) until the returned [`Claim`] is dropped: two
    /// volumes writing one member would overwrite each other's
    /// superblocks, bitmap and data.
    /// [`Volume::create`](crate::Volume::create),
    /// [`Volume::assemble`](crate::Volume::assemble),
    /// and [`Volume::replace`](crate::Volume::replace) claim their devices
    /// before they read or write them. [`NbdServer`](crate::nbd::NbdServer)
    /// claims nothing (a program may export the drives it also uses); a
    /// program that serves its drives alone claims them itself, as
    /// `raid-engine serve-nbd` does.
    ///
    /// Contract: a device claimed by another holder, in this process or
    /// another, is refused with [`io::ErrorKind::ResourceBusy`] and a
    /// message naming the device and who holds it (every error of a claim
    /// names the device: a volume adds only the role); the same holder may
    /// claim a device again (one device given for two roles is for the
    /// volume to refuse, by its superblock), and every claim must be
    /// dropped before another holder gets it.
    ///
    /// The default claims nothing: for devices whose exclusive use is
    /// guarded elsewhere (an NBD export, by the server that exports it),
    /// or that are not shared. [`FileDevice`] takes an exclusive `flock`
    /// and a write lock over the whole file (and, on a block device, an
    /// `O_EXCL` open, as md does).
    fn claim(&self, holder: &ClaimHolder) -> io::Result<Claim> {
        let _ = holder;
        Ok(Claim::none())
    }

    /// Claim only the `len` bytes at `offset` of the device for `holder`,
    /// as [`BlockDevice::claim`] claims all of it: for a member that is a
    /// slice of the device ([`SliceDevice`]), so that volumes on disjoint
    /// slices of one drive both hold theirs.
    ///
    /// Contract: as [`BlockDevice::claim`], for the bytes of the range: a
    /// claim of another holder that overlaps them (a slice, or the whole
    /// device) is refused with [`io::ErrorKind::ResourceBusy`] and a
    /// message naming the device, the range and the rule; the same holder
    /// may claim the same range again, and is refused an overlapping
    /// other one (two members of one volume must not share bytes).
    ///
    /// The default claims the whole device ([`BlockDevice::claim`]): a
    /// device that cannot claim part of itself claims too much rather than
    /// nothing. [`FileDevice`] takes an open-file-description write lock
    /// (`F_OFD_SETLK`) over exactly the range, and a shared `flock` that
    /// keeps whole-file claims off.
    fn claim_range(&self, holder: &ClaimHolder, offset: u64, len: u64) -> io::Result<Claim> {
        let _ = (offset, len);
        self.claim(holder)
    }
}

/// Who holds a [`Claim`]: one per volume (or exporting program). Claims
/// of the same holder on one device do not exclude each other; claims of
/// two holders do.
#[derive(Debug)]
pub struct ClaimHolder {
    id: u64,
    what: String,
}

impl ClaimHolder {
    /// A new holder, unique in this process; `what` says who it is in the
    /// messages of refused claims (`a volume`, `raid-engine serve-nbd`).
    pub fn new(what: impl Into<String>) -> ClaimHolder {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ClaimHolder {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            what: what.into(),
        }
    }
}

/// A device's claim for one holder ([`BlockDevice::claim`]); dropping it
/// releases the claim.
#[must_use = "the claim is released when it is dropped"]
pub struct Claim(Option<Box<dyn Send + Sync>>);

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Claim").field(&self.0.is_some()).finish()
    }
}

impl Claim {
    /// No claim: for devices that need none (the default of
    /// [`BlockDevice::claim`]).
    pub fn none() -> Claim {
        Claim(None)
    }

    /// A claim that `guard` holds: dropping the claim drops `guard`, which
    /// releases it (an implementation of [`BlockDevice::claim`] for a
    /// device that wraps another returns the inner device's claim, or its
    /// own guard).
    pub fn new(guard: impl Send + Sync + 'static) -> Claim {
        Claim(Some(Box::new(guard)))
    }
}

/// Files and block devices claimed in this process, by identity (device
/// and inode of a file; device number of a block device, whatever node
/// names it) and byte range: two claims of one file from this process
/// would not exclude each other through the kernel's locks when they share
/// an owner, and a refusal can name who holds it.
///
/// A claim being taken is entered first as pending (its kernel locks not
/// yet taken) and the table is let go of while it takes them, which may
/// mean waiting out another process for up to [`FORK_WINDOW`]: claims of
/// other bytes go on meanwhile, and a claim of overlapping bytes waits on
/// [`SETTLED`] for the pending one to be published or given up.
static CLAIMED: Mutex<Vec<Claimed>> = Mutex::new(Vec::new());

/// Notified whenever a pending entry of [`CLAIMED`] is published or
/// removed.
static SETTLED: std::sync::Condvar = std::sync::Condvar::new();

fn claimed_table() -> std::sync::MutexGuard<'static, Vec<Claimed>> {
    CLAIMED.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a claim waits out a kernel lock held outside this process's own claims before it
/// is refused. A child that any thread of this process forks (`losetup`, `mkfs` and `mount` in
/// a node plugin, a test's helper process) holds a copy of every file description, and so every
/// `flock` and open-file-description lock on them, from the fork until its `exec` closes them:
/// a claim released just before the fork is still held for that moment. Another process that
/// really holds the bytes is refused once the wait is over.
const FORK_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `lock` until it succeeds, fails otherwise than `held`, or [`FORK_WINDOW`] has passed.
fn waiting_out_forks<E>(
    mut lock: impl FnMut() -> Result<(), E>,
    held: impl Fn(&E) -> bool,
) -> Result<(), E> {
    let until = std::time::Instant::now() + FORK_WINDOW;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match lock() {
            Err(e) if held(&e) && std::time::Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// Identity of a claimed file: (is a block device, device, inode).
type FileKey = (bool, u64, u64);

struct Claimed {
    key: FileKey,
    range: ByteRange,
    holder: u64,
    what: String,
    path: PathBuf,
    count: usize,
    /// The kernel's locks of the claim; `None` while they are being taken
    /// (pending: the entry keeps overlapping claims waiting, and is
    /// nobody's claim yet).
    files: Option<ClaimFiles>,
}

/// What holds a claim in the kernel.
struct ClaimFiles {
    /// The claim's own open file description (the file opened again),
    /// holding its `flock` and its OFD byte-range lock: closing it, when
    /// the last claim of this entry is dropped, releases both (the device
    /// may outlive the claim).
    _lock: File,
    /// A block device opened with `O_EXCL`, held while claimed.
    _excl: Option<File>,
}

/// A pending entry of [`CLAIMED`] while its kernel locks are taken:
/// dropped, it publishes them ([`Pending::files`] set) or removes the
/// entry, and wakes the claims waiting for it, whatever happened
/// meanwhile (an error, a panic).
struct Pending {
    key: FileKey,
    range: ByteRange,
    files: Option<ClaimFiles>,
}

/// Where in `claimed` the entry of `key` and `range` is: the published one
/// (kernel locks taken), or the pending one. Unique either way: a claim of
/// overlapping bytes waits while one is pending, and claims of the same
/// bytes by one holder share an entry.
fn claim_entry(
    claimed: &[Claimed],
    key: FileKey,
    range: ByteRange,
    published: bool,
) -> Option<usize> {
    claimed
        .iter()
        .position(|c| c.files.is_some() == published && c.key == key && c.range == range)
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut claimed = claimed_table();
        if let Some(i) = claim_entry(&claimed, self.key, self.range, false) {
            match self.files.take() {
                Some(files) => claimed[i].files = Some(files),
                None => {
                    claimed.swap_remove(i);
                }
            }
        }
        drop(claimed);
        SETTLED.notify_all();
    }
}

/// The bytes a claim covers: `start..end`, or from `start` to whatever
/// the end of the file is (`end` `None`: a whole-file claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteRange {
    start: u64,
    end: Option<u64>,
}

impl ByteRange {
    const WHOLE: ByteRange = ByteRange {
        start: 0,
        end: None,
    };

    fn overlaps(&self, o: &ByteRange) -> bool {
        self.end.is_none_or(|e| o.start < e) && o.end.is_none_or(|e| self.start < e)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            None if self.start == 0 => f.write_str("the whole file"),
            None => write!(f, "bytes {}..", self.start),
            Some(e) => write!(f, "bytes {}..{}", self.start, e),
        }
    }
}

/// The rule a refused claim breaks, said in every refusal.
const CLAIM_RULE: &str =
    "a byte of a drive belongs to one volume or export at a time; stop the other holder first";

/// [`FileDevice`]'s claim, released when dropped.
struct FileClaim {
    key: FileKey,
    range: ByteRange,
}

impl Drop for FileClaim {
    fn drop(&mut self) {
        let mut claimed = claimed_table();
        if let Some(i) = claim_entry(&claimed, self.key, self.range, true) {
            claimed[i].count -= 1;
            if claimed[i].count == 0 {
                // Closing its file description releases its locks.
                claimed.swap_remove(i);
            }
        }
    }
}

fn busy(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::ResourceBusy, msg)
}

// Object safety is part of the contract: volumes hold `Arc<dyn BlockDevice>`.
const _: fn(&dyn BlockDevice) = |_| {};

fn check_range_u64(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} is beyond the end ({size} bytes)"),
        )),
    }
}

pub(crate) fn check_range(dev: &dyn BlockDevice, offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= dev.size() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "range {offset}+{len} is beyond the end of {} ({} bytes)",
                dev.shown(),
                dev.size()
            ),
        )),
    }
}

/// Alignment (bytes) of buffers, offsets and lengths for `O_DIRECT` I/O.
pub const DIRECT_ALIGN: usize = 4096;

/// One aligned page; vectors of these are the bounce buffers of `O_DIRECT`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
pub(crate) struct Page([u8; DIRECT_ALIGN]);

/// A few page-aligned buffers kept for reuse (bounce buffers of `O_DIRECT`
/// and the volume's aligned copies of unaligned writes).
#[derive(Default)]
pub(crate) struct PagePool(Mutex<Vec<Vec<Page>>>);

impl fmt::Debug for PagePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.0.lock().map_or(0, |p| p.len());
        f.debug_struct("PagePool").field("kept", &kept).finish()
    }
}

impl PagePool {
    /// Buffers kept at most.
    const KEEP: usize = 8;

    /// A buffer of at least `pages` pages (contents unspecified).
    pub(crate) fn take(&self, pages: usize) -> Vec<Page> {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match pool.iter().position(|b| b.len() >= pages) {
            Some(i) => pool.swap_remove(i),
            None => vec![Page::zeroed(); pages],
        }
    }

    /// Give a buffer back for reuse.
    pub(crate) fn put(&self, buf: Vec<Page>) {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < Self::KEEP {
            pool.push(buf);
        }
    }
}

/// A path as messages name it ([`storage_units::quote_path`]): whole and
/// bare when plain, else quoted and escaped, and a long one cut to its
/// head and its tail (its file name), so a message stays one short line.
/// The one way errors and logs of this crate name a path; a device is
/// named by [`BlockDevice::shown`].
pub(crate) fn shown(path: impl AsRef<Path>) -> String {
    storage_units::quote_path(path.as_ref())
}

/// A device's [`BlockDevice::describe`] as [`BlockDevice::shown`] shows it
/// by default: an `nbd://` name quoted as text (as the NBD client names
/// its peer), any other as a path.
pub(crate) fn shown_name(name: &str) -> String {
    if name.starts_with("nbd://") {
        storage_units::quote(name)
    } else {
        shown(name)
    }
}

/// How to open a [`FileDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Bypass the page cache with `O_DIRECT` where the file system supports
    /// it (block devices, ext4, xfs); fall back to buffered I/O where it does
    /// not (for example tmpfs on older kernels).
    DirectIfSupported,
    /// Ordinary buffered I/O; `flush` calls `fdatasync`.
    Buffered,
}

/// A member backed by a local file or block device.
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    direct: bool,
    /// The kernel takes `O_DIRECT` I/O at any alignment on this file (tmpfs
    /// serves it from the page cache): no bounce buffers needed. Cleared
    /// (for good) at the first I/O that is refused for its alignment.
    any_alignment: AtomicBool,
    /// Serialises the read-modify-write of unaligned `O_DIRECT` writes.
    rmw: Mutex<()>,
    pool: PagePool,
}

impl fmt::Debug for FileDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDevice")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("direct", &self.direct)
            .finish()
    }
}

impl FileDevice {
    /// Open an existing file or block device read-write.
    pub fn open(path: impl AsRef<Path>, mode: CacheMode) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        // Named once, by `quote_path`: a long path or one with control
        // characters would otherwise make the message as long, or break it.
        let shown = shown(&path);
        let annotate = |e: io::Error| io::Error::new(e.kind(), format!("{shown}: {e}"));
        if mode == CacheMode::DirectIfSupported
            && let Ok(file) = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(&path)
        {
            let mut dev = FileDevice::from_file(file, path.clone(), true).map_err(annotate)?;
            // Some file systems accept the flag at open and refuse the I/O.
            let mut probe = vec![Page::zeroed(); 1];
            let probe_len = DIRECT_ALIGN.min(dev.size as usize);
            let ok = probe_len == 0 || {
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut probe);
                dev.file.read_exact_at(&mut bytes[..probe_len], 0).is_ok()
            };
            if ok && dev.size % DIRECT_ALIGN as u64 == 0 {
                // Does the kernel also take a misaligned buffer, offset and
                // length? Then the bounce buffers would only add a copy.
                if dev.size >= 2 * DIRECT_ALIGN as u64 {
                    let mut two = vec![Page::zeroed(); 2];
                    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut two);
                    let any = dev.file.read_exact_at(&mut bytes[1..1001], 7).is_ok();
                    *dev.any_alignment.get_mut() = any;
                }
                dev.pool.put(probe);
                return Ok(dev);
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(annotate)?;
        FileDevice::from_file(file, path.clone(), false).map_err(annotate)
    }

    /// Create (or truncate) a sparse file of `size` bytes and open it.
    pub fn create(path: impl AsRef<Path>, size: u64, mode: CacheMode) -> io::Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path.as_ref())?;
        f.set_len(size)?;
        drop(f);
        FileDevice::open(path, mode)
    }

    fn from_file(mut file: File, path: PathBuf, direct: bool) -> io::Result<Self> {
        // Seeking to the end works for regular files and block devices alike.
        let size = file.seek(SeekFrom::End(0))?;
        Ok(FileDevice {
            file,
            path,
            size,
            direct,
            any_alignment: AtomicBool::new(false),
            rmw: Mutex::new(()),
            pool: PagePool::default(),
        })
    }

    /// Whether I/O bypasses the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether I/O of `len` bytes at `offset` from/to `addr` can go to the
    /// file as it is, without a bounce buffer: buffered I/O, aligned
    /// `O_DIRECT` (zero copy), or a file whose kernel takes any alignment.
    fn unbounced(&self, addr: *const u8, offset: u64, len: usize) -> bool {
        let a = DIRECT_ALIGN;
        !self.direct
            || (addr as usize).is_multiple_of(a)
                && offset.is_multiple_of(a as u64)
                && len.is_multiple_of(a)
            || self.any_alignment.load(Ordering::Relaxed)
    }

    /// After an unbounced I/O failed: whether it was refused for its
    /// alignment on a file believed to take any (then bounce from now on).
    fn alignment_refused(&self, e: &io::Error, addr: *const u8, offset: u64, len: usize) -> bool {
        let a = DIRECT_ALIGN;
        let aligned = (addr as usize).is_multiple_of(a)
            && offset.is_multiple_of(a as u64)
            && len.is_multiple_of(a);
        self.direct
            && !aligned
            && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
            && self.any_alignment.swap(false, Ordering::Relaxed)
    }

    /// The aligned window `[start, end)` covering `offset..offset+len`.
    fn window(offset: u64, len: usize) -> (u64, u64) {
        let a = DIRECT_ALIGN as u64;
        (offset / a * a, (offset + len as u64).div_ceil(a) * a)
    }
}

impl FileDevice {
    /// The claim of `range` for `holder`: first against the claims of this
    /// process (which name their holder), then through the kernel's locks
    /// of a file description of its own, against other processes. The
    /// kernel's locks are taken with the claim entered as pending and the
    /// table let go of: the wait for another process's lock
    /// ([`FORK_WINDOW`]) holds up no claim of other bytes.
    fn claim_bytes(&self, holder: &ClaimHolder, range: ByteRange) -> io::Result<Claim> {
        let st = rustix::fs::fstat(&self.file)?;
        let block =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice;
        let key = if block {
            (true, st.st_rdev as u64, 0)
        } else {
            (false, st.st_dev as u64, st.st_ino as u64)
        };
        let whole = range.end.is_none();
        let path = shown(&self.path);
        // What is refused: the file, or the range of it.
        let asked = if whole {
            path.to_string()
        } else {
            format!("{path} {range}")
        };
        let mut claimed = claimed_table();
        // A claim of overlapping bytes still taking its kernel locks: what
        // it comes to decides this one, as if it had been taken first.
        while claimed
            .iter()
            .any(|c| c.files.is_none() && c.key == key && c.range.overlaps(&range))
        {
            claimed = SETTLED.wait(claimed).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(c) = claimed
            .iter_mut()
            .find(|c| c.key == key && c.range == range && c.holder == holder.id)
        {
            c.count += 1;
            return Ok(Claim::new(FileClaim { key, range }));
        }
        if let Some(c) = claimed
            .iter()
            .find(|c| c.key == key && c.range.overlaps(&range))
        {
            // What the holder has, where it differs from what is asked:
            // other bytes, or the file by another name (a link).
            let mut how = Vec::new();
            if !(whole && c.range == range) {
                how.push(format!("it holds {}", c.range));
            }
            if c.path != self.path {
                how.push(format!("claimed as {}", shown(&c.path)));
            }
            let how = if how.is_empty() {
                String::new()
            } else {
                format!(" ({})", how.join(", "))
            };
            let who = if c.holder == holder.id {
                format!("{} (the same one, for another member)", c.what)
            } else {
                c.what.clone()
            };
            return Err(busy(format!(
                "{asked} is in use by {who} in this process{how}; {CLAIM_RULE}"
            )));
        }
        claimed.push(Claimed {
            key,
            range,
            holder: holder.id,
            what: holder.what.clone(),
            path: self.path.clone(),
            count: 1,
            files: None,
        });
        drop(claimed);
        let mut pending = Pending {
            key,
            range,
            files: None,
        };
        pending.files = Some(self.kernel_locks(range, block, &asked)?);
        // Dropped: published.
        drop(pending);
        Ok(Claim::new(FileClaim { key, range }))
    }

    /// The kernel's locks of a claim of `range` (`asked` names it in a
    /// refusal), against other processes; waits out a lock held for a
    /// moment ([`FORK_WINDOW`]).
    fn kernel_locks(&self, range: ByteRange, block: bool, asked: &str) -> io::Result<ClaimFiles> {
        let whole = range.end.is_none();
        let path = shown(&self.path);
        // A file description of the claim's own: the kernel's locks of two
        // claims exclude each other only if their descriptions differ.
        let lock = self.reopen()?;
        let op = if whole {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        } else {
            rustix::fs::FlockOperation::NonBlockingLockShared
        };
        match waiting_out_forks(
            || rustix::fs::flock(&lock, op),
            |e| *e == rustix::io::Errno::WOULDBLOCK,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) if whole => {
                return Err(busy(format!(
                    "{path} is in use by another process (one holds its lock: a raid-engine \
                     create, expose, rebuild, readd, scrub or serve-nbd, or a program using \
                     the raid-engine library?); stop it first"
                )));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(busy(format!(
                    "{asked} is in use by another process (it holds the whole file: a \
                     raid-engine command or a program using the raid-engine library?); {CLAIM_RULE}"
                )));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: lock: {e}"))),
        }
        if let Err(e) = waiting_out_forks(
            || ofd_lock(&lock, range),
            |e| *e == nix::errno::Errno::EAGAIN || *e == nix::errno::Errno::EACCES,
        ) {
            if e != nix::errno::Errno::EAGAIN && e != nix::errno::Errno::EACCES {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("{path}: lock of {range}: {e}"),
                ));
            }
            let theirs = ofd_conflict(&lock, range)
                .map(|r| format!("it holds {r}"))
                .unwrap_or_else(|| "it holds a lock over part of them".into());
            return Err(busy(format!(
                "{asked} is in use by another process ({theirs}: a raid-engine volume or export \
                 over a slice of it?); {CLAIM_RULE}"
            )));
        }
        let excl = if block && whole {
            match OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
                .open(&self.path)
            {
                Ok(f) => Some(f),
                Err(e) => {
                    return Err(
                        if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                            busy(format!(
                                "{path} is in use: the kernel refuses to open it exclusively (mounted, \
                             a member of an md array or a device-mapper target, or opened \
                             exclusively by another program)"
                            ))
                        } else {
                            io::Error::new(e.kind(), format!("{path}: exclusive open: {e}"))
                        },
                    );
                }
            }
        } else {
            None
        };
        Ok(ClaimFiles {
            _lock: lock,
            _excl: excl,
        })
    }

    /// The file opened again: a new open file description (through
    /// `/proc/self/fd`, which finds it whatever its path has become; by its
    /// path where `/proc` is not mounted).
    fn reopen(&self) -> io::Result<File> {
        use std::os::fd::AsRawFd;
        let open = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
        open(Path::new(&format!(
            "/proc/self/fd/{}",
            self.file.as_raw_fd()
        )))
        .or_else(|_| open(&self.path))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: lock: {e}", shown(&self.path))))
    }
}

/// The `flock` record of a write lock over `range` (`l_len` 0: to the end
/// of the file, however far it grows).
fn ofd_record(range: ByteRange) -> nix::Result<nix::libc::flock> {
    let start = i64::try_from(range.start).map_err(|_| nix::errno::Errno::EINVAL)?;
    let len = match range.end {
        None => 0,
        Some(e) => i64::try_from(e - range.start).map_err(|_| nix::errno::Errno::EINVAL)?,
    };
    Ok(nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    })
}

/// Take an open-file-description write lock over `range` of `file`
/// without waiting; released when the description is closed.
fn ofd_lock(file: &File, range: ByteRange) -> nix::Result<()> {
    let fl = ofd_record(range)?;
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)).map(drop)
}

/// The range of a lock that conflicts with a write lock over `range`, if
/// the kernel still reports one.
fn ofd_conflict(file: &File, range: ByteRange) -> Option<ByteRange> {
    let mut fl = ofd_record(range).ok()?;
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)).ok()?;
    if fl.l_type == nix::libc::F_UNLCK as nix::libc::c_short {
        return None;
    }
    let start = u64::try_from(fl.l_start).ok()?;
    Some(ByteRange {
        start,
        end: match fl.l_len {
            0 => None,
            n => start.checked_add(u64::try_from(n).ok()?),
        },
    })
}

fn poisoned() -> io::Error {
    io::Error::other("a lock was poisoned by a panicking thread")
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        if self.unbounced(buf.as_ptr(), offset, buf.len()) {
            match self.file.read_exact_at(buf, offset) {
                Err(e) if self.alignment_refused(&e, buf.as_ptr(), offset, buf.len()) => {}
                r => return r,
            }
        }
        let (start, end) = Self::window(offset, buf.len());
        let mut pages = self.pool.take(((end - start) as usize) / DIRECT_ALIGN);
        let r = {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut pages);
            let win = &mut bytes[..(end - start) as usize];
            self.file.read_exact_at(win, start).map(|()| {
                let skip = (offset - start) as usize;
                buf.copy_from_slice(&win[skip..skip + buf.len()]);
            })
        };
        self.pool.put(pages);
        r
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        if self.unbounced(buf.as_ptr(), offset, buf.len()) {
            match self.file.write_all_at(buf, offset) {
                Err(e) if self.alignment_refused(&e, buf.as_ptr(), offset, buf.len()) => {}
                r => return r,
            }
        }
        let (start, end) = Self::window(offset, buf.len());
        let aligned = start == offset && end == offset + buf.len() as u64;
        // Unaligned edges need the old bytes: hold the lock so that two such
        // writes to one page cannot undo each other.
        let _guard = if aligned {
            None
        } else {
            Some(self.rmw.lock().map_err(|_| poisoned())?)
        };
        let mut pages = self.pool.take(((end - start) as usize) / DIRECT_ALIGN);
        let r = (|| {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut pages);
            let win = &mut bytes[..(end - start) as usize];
            let a = DIRECT_ALIGN;
            if offset != start {
                self.file.read_exact_at(&mut win[..a], start)?;
            }
            let last = win.len() - a;
            if (offset + buf.len() as u64) != end && (last != 0 || offset == start) {
                self.file.read_exact_at(&mut win[last..], end - a as u64)?;
            }
            let skip = (offset - start) as usize;
            win[skip..skip + buf.len()].copy_from_slice(buf);
            self.file.write_all_at(win, start)
        })();
        self.pool.put(pages);
        r
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range_u64(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Punch a hole in regular files; block devices and file systems
        // without hole punching keep their bytes, which trim allows.
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, flags, offset, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NODEV) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The path as messages show it ([`storage_units::quote_path`]): a
    /// plain path as it is, any other quoted with each byte that is not
    /// UTF-8 escaped (not replaced by U+FFFD).
    fn describe(&self) -> String {
        shown(&self.path)
    }

    /// The path as [`describe`](BlockDevice::describe) shows it: as the
    /// file's own errors name it.
    fn shown(&self) -> String {
        shown(&self.path)
    }

    /// An exclusive, non-blocking `flock` of the file (what `raid-engine`
    /// commands in other processes take too) and an open-file-description
    /// write lock over all of it (what keeps [`BlockDevice::claim_range`]
    /// claims of slices off), and on a block device an `O_EXCL` open as md
    /// takes (refused while the device is mounted, a member of an md array
    /// or otherwise opened exclusively).
    fn claim(&self, holder: &ClaimHolder) -> io::Result<Claim> {
        self.claim_bytes(holder, ByteRange::WHOLE)
    }

    /// A shared, non-blocking `flock` of the file (whole-file claims take
    /// it exclusively, so the two exclude each other) and an
    /// open-file-description write lock (`F_OFD_SETLK`) over exactly the
    /// range. A slice of a block device is not opened `O_EXCL`: that would
    /// keep the other slices off.
    fn claim_range(&self, holder: &ClaimHolder, offset: u64, len: u64) -> io::Result<Claim> {
        let end = offset
            .checked_add(len)
            .filter(|&e| len > 0 && e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: cannot claim {len} bytes at {offset}: a claimed range must be non-empty and within the {} bytes of the file",
                        shown(&self.path),
                        self.size
                    ),
                )
            })?;
        self.claim_bytes(
            holder,
            ByteRange {
                start: offset,
                end: Some(end),
            },
        )
    }

    /// 4 KiB for `O_DIRECT` on a file system or device that refuses
    /// unaligned direct I/O (such writes are bounced, their edges read
    /// first); 1 otherwise.
    fn alignment(&self) -> usize {
        if self.direct && !self.any_alignment.load(Ordering::Relaxed) {
            DIRECT_ALIGN
        } else {
            1
        }
    }
}

/// A member that is a byte range of another device: the `len` bytes at
/// `offset` of a drive file, block device or NBD export, as a composer
/// that carves drives into slices gives them to its volumes.
///
/// Its [`BlockDevice::claim`] claims only those bytes
/// ([`BlockDevice::claim_range`] of the device underneath): volumes on
/// disjoint slices of one drive each hold theirs, while two volumes (or a
/// volume and a whole-drive user) on overlapping bytes refuse each other.
///
/// ```
/// use std::sync::Arc;
/// use raid_engine::device::{BlockDevice, CacheMode, ClaimHolder, FileDevice, SliceDevice};
///
/// let dir = tempfile::tempdir()?;
/// let drive = Arc::new(FileDevice::create(dir.path().join("drive"), 8 << 20, CacheMode::Buffered)?);
/// let a = SliceDevice::new(drive.clone(), 0, 4 << 20)?;
/// let b = SliceDevice::new(drive.clone(), 4 << 20, 4 << 20)?;
/// let (va, vb) = (ClaimHolder::new("volume a"), ClaimHolder::new("volume b"));
/// let _ca = a.claim(&va)?;
/// let _cb = b.claim(&vb)?; // disjoint: both held
/// // The whole drive overlaps both.
/// assert!(drive.claim(&ClaimHolder::new("a backup job")).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SliceDevice {
    inner: Arc<dyn BlockDevice>,
    offset: u64,
    len: u64,
}

impl SliceDevice {
    /// The `len` bytes at `offset` of `inner`. Refused
    /// ([`io::ErrorKind::InvalidInput`]) when the range is empty or does
    /// not lie within `inner`.
    pub fn new(inner: Arc<dyn BlockDevice>, offset: u64, len: u64) -> io::Result<SliceDevice> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: a slice must not be empty", inner.shown()),
            ));
        }
        check_range_u64(inner.size(), offset, len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: slice {offset}+{len} is beyond the end of the device ({} bytes)",
                    inner.shown(),
                    inner.size()
                ),
            )
        })?;
        Ok(SliceDevice { inner, offset, len })
    }

    /// The device the slice is part of.
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    /// Where the slice starts on that device (bytes).
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl BlockDevice for SliceDevice {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        self.inner.read_at(buf, self.offset + offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        self.inner.write_at(buf, self.offset + offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range_u64(self.len, offset, len)?;
        self.inner.trim(self.offset + offset, len)
    }

    /// The device's name and the range: `drive.img[1048576..2097152]`.
    fn describe(&self) -> String {
        format!(
            "{}[{}..{}]",
            self.inner.describe(),
            self.offset,
            self.offset + self.len
        )
    }

    /// The device's name as it shows it, and the range: `drive.img[1048576..2097152]`.
    fn shown(&self) -> String {
        format!(
            "{}[{}..{}]",
            self.inner.shown(),
            self.offset,
            self.offset + self.len
        )
    }

    /// The device's alignment where the slice starts on it (else 1: the
    /// device has to merge whatever the volume does).
    fn alignment(&self) -> usize {
        let a = self.inner.alignment();
        if self.offset.is_multiple_of(a.max(1) as u64) {
            a
        } else {
            1
        }
    }

    /// The slice's bytes of the device ([`BlockDevice::claim_range`]).
    fn claim(&self, holder: &ClaimHolder) -> io::Result<Claim> {
        self.inner.claim_range(holder, self.offset, self.len)
    }

    /// A range of the slice is that range of the device.
    fn claim_range(&self, holder: &ClaimHolder, offset: u64, len: u64) -> io::Result<Claim> {
        check_range_u64(self.len, offset, len)?;
        self.inner.claim_range(holder, self.offset + offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_direct_writes_keep_their_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let dev = FileDevice::create(&p, 64 * 1024, CacheMode::DirectIfSupported).unwrap();
        neighbours_kept(&dev, 1);
        // The bounce-buffer path, also where the kernel takes any alignment
        // (tmpfs): it must give the same bytes.
        dev.any_alignment.store(false, Ordering::Relaxed);
        neighbours_kept(&dev, 2);
        // It bounces (and merges the edges of) what is not 4 KiB-aligned,
        // and says so to the volume.
        if dev.is_direct() {
            assert_eq!(dev.alignment(), DIRECT_ALIGN);
            dev.any_alignment.store(true, Ordering::Relaxed);
            assert_eq!(dev.alignment(), 1);
        }
        let buffered = FileDevice::open(&p, CacheMode::Buffered).unwrap();
        assert_eq!(buffered.alignment(), 1);
    }

    fn neighbours_kept(dev: &FileDevice, seed: u8) {
        let pattern: Vec<u8> = (0..64 * 1024)
            .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(91))
            .collect();
        dev.write_at(&pattern, 0).unwrap();
        let (e, d) = (0xe0 | seed, 0xd0 | seed);
        dev.write_at(&[e; 700], 4000).unwrap();
        dev.write_at(&[d; 10], 8190).unwrap();
        let mut want = pattern.clone();
        want[4000..4700].fill(e);
        want[8190..8200].fill(d);
        let mut got = vec![0; 64 * 1024];
        dev.read_at(&mut got, 0).unwrap();
        assert!(got == want);
        let mut small = [0u8; 3];
        dev.read_at(&mut small, 4699).unwrap();
        assert_eq!(small, [e, want[4700], want[4701]]);
        assert!(dev.read_at(&mut small, 64 * 1024 - 2).is_err());
        dev.flush().unwrap();
    }
}
