//! Loop devices: a file seen as a block device, through `losetup`, which picks a free device
//! (`losetup -f --show`), so no device number is ever assumed.
//!
//! With [`AttachOptions::direct_io`] the device is asked for direct I/O (`--direct-io=on`): the
//! loop driver then sends its requests to the file as asynchronous `O_DIRECT` I/O, several at a
//! time, instead of one after the other through the page cache (which also caches every block
//! twice). A backing file system that refuses `O_DIRECT`, or an offset the loop driver cannot
//! align, leaves the device in buffered mode: the attach still succeeds, logs why, and
//! [`LoopDevice::direct_io`] reads `false`.
//!
//! A [`LoopDevice`] names one *attachment*, not just a device number: it carries the kernel's disk
//! sequence number (sysfs `diskseq`, Linux 5.15 and later), which changes at every attach. A
//! device number that was detached and then attached by someone else to another file is therefore
//! never mistaken for the one this value was made for: [`LoopDevice::detach`] leaves it alone, and
//! a process that recorded the number (a node plugin's state file) finds its own attachment
//! again with [`LoopDevice::open_attachment`], even when the kernel can no longer name the backing
//! file (a file on a lazily unmounted file system shows as a path relative to the detached mount,
//! such as `/volume`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Tool, path_arg, run, run_with_cleanup};

/// How [`LoopDevice::attach_with`] attaches a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Read-only device (`losetup -r`).
    pub read_only: bool,
    /// Ask for direct I/O (`--direct-io=on`), falling back to buffered I/O with a logged reason
    /// where it cannot be had.
    pub direct_io: bool,
    /// Where the device starts in the file, in bytes (`--offset`); before the end of the file.
    pub offset: u64,
    /// How many bytes of the file from `offset` the device shows (`--sizelimit`), above 0 and
    /// at most `i64::MAX` (the kernel's limit); past the end of the file, the device ends with
    /// the file. `None`: up to the end of the file.
    pub size_limit: Option<u64>,
}

/// An attached loop device: one attachment of a file to a device number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoopDevice {
    path: PathBuf,
    /// The disk sequence number of the attachment; `None` where the kernel has none (before
    /// Linux 5.15), and then the device number is all there is to go by.
    diskseq: Option<u64>,
}

impl LoopDevice {
    /// Why loop devices cannot be used on this node, if they cannot.
    pub fn check_available() -> Result<(), Error> {
        if !Path::new("/dev/loop-control").exists() {
            return Err(Error::MissingTool {
                tool: "/dev/loop-control (the `loop` kernel module)".into(),
            });
        }
        run(Tool::Losetup, Tool::Losetup.command().arg("--version")).map(|_| ())
    }

    /// Attaches `file` to a free loop device (buffered I/O, the whole file).
    pub fn attach(file: &Path, read_only: bool) -> Result<Self, Error> {
        Self::attach_with(
            file,
            &AttachOptions {
                read_only,
                ..AttachOptions::default()
            },
        )
    }

    /// Attaches `file` to a free loop device as `opts` says. With `opts.direct_io`, a device
    /// the kernel leaves in buffered mode is still returned (the reason is logged as a
    /// warning); [`LoopDevice::direct_io`] tells which mode it got.
    ///
    /// A `losetup` killed at its timeout ([`Error::Timeout`]) may have attached the file all
    /// the same, and no one would know the device: what it attached is detached again, before
    /// the call returns or, for a `losetup` still blocked in the kernel then (`exited: false`),
    /// once it dies at last. Attaches of one file in this process take turns, so that this
    /// never detaches a device another attach made.
    pub fn attach_with(file: &Path, opts: &AttachOptions) -> Result<Self, Error> {
        let meta = fs::metadata(file).map_err(|e| Error::io("stat", file, e))?;
        let len = meta.len();
        // losetup takes `--sizelimit 0` for "no limit" and an offset at or past the end for a
        // device of no bytes: neither is what such options ask for.
        let refuse = |rule: String| {
            Err(Error::io(
                "attach",
                file,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, rule),
            ))
        };
        if meta.is_dir() {
            return refuse(
                "it is a directory: a loop device is made over a regular file (or a block device)"
                    .into(),
            );
        }
        if opts.size_limit == Some(0) {
            return refuse(
                "size_limit 0 would show the whole file: give None for that, or a size above 0"
                    .into(),
            );
        }
        if let Some(limit) = opts.size_limit.filter(|&l| i64::try_from(l).is_err()) {
            return refuse(format!(
                "size_limit {limit} is above {} bytes, the largest size the kernel takes \
                 (a signed 64-bit offset): give None for the whole file",
                i64::MAX
            ));
        }
        if opts.offset > 0 && opts.offset >= len {
            return refuse(format!(
                "offset {} is at or past the end of the file ({len} bytes): the device would be empty",
                opts.offset
            ));
        }
        let command = |direct_io: bool| {
            let mut cmd = Tool::Losetup.command();
            cmd.arg("-f").arg("--show");
            if opts.read_only {
                cmd.arg("-r");
            }
            if opts.offset > 0 {
                cmd.arg("--offset").arg(opts.offset.to_string());
            }
            if let Some(limit) = opts.size_limit {
                cmd.arg("--sizelimit").arg(limit.to_string());
            }
            if direct_io {
                cmd.arg("--direct-io=on");
            }
            cmd.arg(path_arg(file));
            cmd
        };
        // A losetup killed at its timeout may have attached the file already, and no one
        // would know the device: what was not there before is detached again, now and, for a
        // losetup still blocked in the kernel, once it has died (its attach may complete until
        // then). Attaches of one file in this process take turns, so that such a late clean-up
        // never takes a device another attach is making or has handed out.
        let turn = AttachTurn::take(file);
        let before = LoopDevice::backed_by(file);
        let ident = file_ident(file);
        let attach = |direct_io: bool| {
            let late = turn.late_cleanup(file, ident, &before);
            run_with_cleanup(Tool::Losetup, &mut command(direct_io), late).inspect_err(|e| {
                if matches!(e, Error::Timeout { .. }) {
                    detach_new_attachments(file, ident, &before);
                }
            })
        };
        let path = match attach(opts.direct_io) {
            Ok(p) => PathBuf::from(p),
            // An older losetup that fails the whole attach when direct I/O is refused.
            Err(e @ Error::Command { .. }) if opts.direct_io => {
                let p = PathBuf::from(attach(false)?);
                tracing::warn!(file = %file.display(), device = %p.display(), reason = %e,
                    "loop device attached with buffered I/O: losetup refused --direct-io=on");
                p
            }
            Err(e) => return Err(e),
        };
        let device = LoopDevice::current(path);
        turn.handed_out(&device);
        drop(turn);
        if opts.direct_io && device.direct_io() == Some(false) {
            tracing::warn!(file = %file.display(), device = %device.path.display(),
                reason = %refused_direct_io(file, opts.offset),
                "loop device attached with buffered I/O: the kernel refused direct I/O");
        }
        tracing::debug!(file = %file.display(), device = %device.path.display(),
            direct_io = ?device.direct_io(), "loop attached");
        Ok(device)
    }

    /// The attachment at `path` now (whatever it is).
    fn current(path: PathBuf) -> Self {
        let diskseq = sysfs(&path, "diskseq").and_then(|s| s.parse().ok());
        LoopDevice { path, diskseq }
    }

    /// Whether the device does direct I/O on its file (sysfs `loop/dio`); `None` once detached.
    pub fn direct_io(&self) -> Option<bool> {
        self.attached()?;
        Some(sysfs(&self.path, "loop/dio")? == "1")
    }

    /// The device, e.g. `/dev/loop3`, when `path` names an attached loop device: the attachment
    /// there now.
    pub fn open(path: &Path) -> Option<Self> {
        let device = LoopDevice::current(path.to_path_buf());
        device.backing_file().map(|_| device)
    }

    /// The device at `path` if it is still the attachment whose disk sequence number
    /// ([`LoopDevice::diskseq`]) was `diskseq`; `None` once that attachment is gone, even when
    /// the number has since been attached again (by anyone, to any file).
    ///
    /// This is how a process finds a loop device it attached before it restarted, from what it
    /// recorded: unlike the backing file's path, the sequence number stays readable when the
    /// backing file sits on a file system that has died or been lazily unmounted.
    ///
    /// ```no_run
    /// # use std::path::Path;
    /// # use csi_node::LoopDevice;
    /// # fn demo(recorded: &Path, seq: u64) -> Result<(), csi_node::Error> {
    /// if let Some(dev) = LoopDevice::open_attachment(recorded, seq) {
    ///     dev.detach()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn open_attachment(path: &Path, diskseq: u64) -> Option<Self> {
        let device = LoopDevice {
            path: path.to_path_buf(),
            diskseq: Some(diskseq),
        };
        device.attached().map(|_| device)
    }

    /// The kernel's disk sequence number of this attachment (sysfs `diskseq`): the kernel
    /// gives a device a new one at every attach and detach, from one counter for all disks that
    /// never repeats until the host reboots, so the pair (device, sequence number) names one
    /// attachment. `None` on kernels without it (before Linux 5.15).
    pub fn diskseq(&self) -> Option<u64> {
        self.diskseq
    }

    /// `Some` while this attachment is attached: the device has a backing file and, where the
    /// kernel numbers attachments, still the same sequence number.
    fn attached(&self) -> Option<()> {
        sysfs_raw(&self.path, "loop/backing_file")?;
        match self.diskseq {
            None => Some(()),
            Some(seq) => (sysfs(&self.path, "diskseq")?.parse::<u64>().ok()? == seq).then_some(()),
        }
    }

    /// Whether the kernel has been asked to detach this attachment at its last close (sysfs
    /// `loop/autoclear`): what a detach of a device that is still open leaves, and what a
    /// detach that [`LoopDevice::detach_and_wait`] could not see through in time means.
    pub fn detaches_at_last_close(&self) -> bool {
        self.attached().is_some() && sysfs(&self.path, "loop/autoclear").as_deref() == Some("1")
    }

    /// The device node (`/dev/loopN`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file behind the device, from sysfs; `None` once this attachment is detached.
    ///
    /// The kernel gives the path as seen from the root of this process: a file on a file
    /// system that has been lazily unmounted shows as its path inside that file system (a FUSE
    /// file `MOUNT/volume` becomes `/volume`), and a deleted file ends in ` (deleted)`.
    pub fn backing_file(&self) -> Option<PathBuf> {
        let backing = sysfs_path(&self.path, "loop/backing_file")?;
        self.attached()?;
        Some(backing)
    }

    /// Makes the device see its backing file's new size (after an expansion).
    pub fn refresh(&self) -> Result<(), Error> {
        run(
            Tool::Losetup,
            Tool::Losetup.command().arg("-c").arg(path_arg(&self.path)),
        )
        .map(|_| ())
    }

    /// Detaches the device (the kernel defers it while the device is still open or mounted,
    /// see [`LoopDevice::detaches_at_last_close`]). Where the kernel numbers attachments
    /// ([`LoopDevice::diskseq`]), an attachment that is already gone is not an error, and the
    /// device number is left alone: a number attached again since, by anyone, is never
    /// detached through this value. Without them the number is all there is to go by, and
    /// `losetup -d` of a number that is not attached fails.
    pub fn detach(&self) -> Result<(), Error> {
        if self.diskseq.is_some() && self.attached().is_none() {
            return Ok(());
        }
        run(
            Tool::Losetup,
            Tool::Losetup.command().arg("-d").arg(path_arg(&self.path)),
        )
        .map(|_| ())
    }

    /// Detaches the device and waits up to `timeout` for the kernel to let it go: the kernel
    /// defers a detach while anything (a lazily unmounted filesystem, a udev probe, a reader that
    /// is closing) still holds the device open. Returns whether this attachment is gone (the number
    /// may already serve another file); a deferred detach still completes once its last user
    /// closes it, which [`LoopDevice::detaches_at_last_close`] tells.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn demo(dev: csi_node::LoopDevice) -> Result<(), csi_node::Error> {
    /// if !dev.detach_and_wait(Duration::from_secs(5))? {
    ///     eprintln!("{} is still open; the kernel detaches it at its last close", dev.path().display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn detach_and_wait(&self, timeout: std::time::Duration) -> Result<bool, Error> {
        let Some(backing) = self.backing_file() else {
            return Ok(true);
        };
        self.detach()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.backing_file().is_none_or(|b| b != backing) {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Every attached loop device on the host, with its backing file as the kernel names it
    /// (see [`LoopDevice::backing_file`]), whoever attached it.
    pub fn all() -> Vec<(LoopDevice, PathBuf)> {
        let Ok(entries) = fs::read_dir("/sys/block") else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("loop"))
            .map(|n| LoopDevice::current(PathBuf::from(format!("/dev/{n}"))))
            .filter_map(|d| d.backing_file().map(|b| (d, b)))
            .collect()
    }

    /// The loop devices whose backing file is `file`.
    pub fn backed_by(file: &Path) -> Vec<LoopDevice> {
        let Ok(file) = fs::canonicalize(file) else {
            return Vec::new();
        };
        Self::all()
            .into_iter()
            .filter(|(_, b)| *b == file)
            .map(|(d, _)| d)
            .collect()
    }

    /// The loop devices whose backing file lies below `dir`.
    ///
    /// `dir` is resolved without looking at it where it cannot be looked at: the root of a FUSE
    /// mount whose server has died answers every `stat` with `ENOTCONN`, and a directory that
    /// has been removed is gone, yet loop devices can still hold files below either. Such a
    /// directory is resolved through its nearest ancestor that resolves. A backing file on a
    /// mount that has already been lazily unmounted is no longer named below `dir` by the
    /// kernel and is not found here: detach before unmounting (as [`crate::release_under`]
    /// does), or keep the attachment's [`LoopDevice::diskseq`].
    pub fn backed_under(dir: &Path) -> Vec<LoopDevice> {
        let Ok(dir) = crate::mount::resolve(dir) else {
            return Vec::new();
        };
        Self::all()
            .into_iter()
            .filter(|(_, b)| b.starts_with(&dir))
            .map(|(d, _)| d)
            .collect()
    }
}

/// The attaches of one backing file in this process, which take turns ([`AttachTurn`]).
#[derive(Default)]
struct FileAttaches {
    /// Whether an attach or a late clean-up of the file has the turn.
    busy: bool,
    /// Late clean-ups that may still run: each waits for a killed `losetup` of the file to die.
    late_cleanups: usize,
    /// The devices attaches of the file handed out while a late clean-up may still run: not
    /// the killed `losetup`'s, whatever their number.
    handed_out: Vec<LoopDevice>,
}

type FileTurns = std::sync::Arc<(std::sync::Mutex<FileAttaches>, std::sync::Condvar)>;

/// The backing files an attach or a late clean-up is using now, by canonical path.
static ATTACHES: std::sync::Mutex<Vec<(PathBuf, FileTurns)>> = std::sync::Mutex::new(Vec::new());

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values, whole after any write: a panic elsewhere spoils nothing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The turn at one backing file, held by an attach or a late clean-up: while it is held, no
/// other attach of the file in this process runs, and no late clean-up looks for what a
/// killed `losetup` attached.
struct AttachTurn {
    key: PathBuf,
    turns: FileTurns,
}

impl AttachTurn {
    /// Waits for the turn at `file`.
    fn take(file: &Path) -> Self {
        let key = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        let turns = {
            let mut all = lock(&ATTACHES);
            match all.iter().find(|(k, _)| *k == key) {
                Some((_, t)) => t.clone(),
                None => {
                    let t = FileTurns::default();
                    all.push((key.clone(), t.clone()));
                    t
                }
            }
        };
        Self::wait(key, turns)
    }

    fn wait(key: PathBuf, turns: FileTurns) -> Self {
        let (m, cv) = &*turns;
        let mut state = lock(m);
        while state.busy {
            state = cv.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.busy = true;
        drop(state);
        AttachTurn { key, turns }
    }

    /// Records that this attach hands `device` out.
    fn handed_out(&self, device: &LoopDevice) {
        let mut state = lock(&self.turns.0);
        if state.late_cleanups > 0 {
            state.handed_out.push(device.clone());
        }
    }

    /// What detaches, once a `losetup` of `file` killed while blocked in the kernel has died,
    /// the devices over `file` that were not among `before` and that no attach handed out
    /// since: what it attached after it was killed.
    fn late_cleanup(
        &self,
        file: &Path,
        ident: Option<FileIdent>,
        before: &[LoopDevice],
    ) -> crate::tool::Cleanup {
        lock(&self.turns.0).late_cleanups += 1;
        let late = LateCleanup {
            key: self.key.clone(),
            turns: self.turns.clone(),
            file: file.to_path_buf(),
            ident,
            before: before.to_vec(),
        };
        Box::new(move || late.run())
    }
}

impl Drop for AttachTurn {
    fn drop(&mut self) {
        let mut all = lock(&ATTACHES);
        let (m, cv) = &*self.turns;
        let mut state = lock(m);
        state.busy = false;
        cv.notify_all();
        // Forgotten once nobody waits for the file (the list and this turn hold the only
        // references, and new ones are taken under the list's lock).
        if state.late_cleanups == 0 && std::sync::Arc::strong_count(&self.turns) == 2 {
            all.retain(|(k, _)| *k != self.key);
        }
    }
}

/// A clean-up [`AttachTurn::late_cleanup`] made; dropped without running (the `losetup` exited
/// in time), it only counts itself out.
struct LateCleanup {
    key: PathBuf,
    turns: FileTurns,
    file: PathBuf,
    /// The file's identity when the attach began.
    ident: Option<FileIdent>,
    before: Vec<LoopDevice>,
}

impl LateCleanup {
    fn run(self) {
        let turn = AttachTurn::wait(self.key.clone(), self.turns.clone());
        let mut keep = self.before.clone();
        keep.extend(lock(&turn.turns.0).handed_out.iter().cloned());
        detach_new_attachments(&self.file, self.ident, &keep);
        drop(turn);
    }
}

impl Drop for LateCleanup {
    fn drop(&mut self) {
        let mut all = lock(&ATTACHES);
        let mut state = lock(&self.turns.0);
        state.late_cleanups -= 1;
        if state.late_cleanups == 0 {
            state.handed_out.clear();
            if !state.busy && std::sync::Arc::strong_count(&self.turns) == 2 {
                all.retain(|(k, _)| *k != self.key);
            }
        }
    }
}

/// A file's identity: the device of its file system (`st_dev`) and its inode number.
type FileIdent = (u64, u64);

/// The identity of the file at `path` now; `None` when there is none.
fn file_ident(path: &Path) -> Option<FileIdent> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The loop devices whose backing file is the file `ident` names, found by identity (`losetup`'s
/// `BACK-MAJ:MIN` and `BACK-INO`, which the kernel keeps for a deleted file too) where the path
/// no longer leads to it: the kernel names a deleted backing file `PATH (deleted)`. A deleted
/// file's inode is not reused while a device holds it open.
fn backed_by_ident((dev, ino): FileIdent) -> Vec<LoopDevice> {
    let mut cmd = Tool::Losetup.command();
    cmd.args([
        "--list",
        "--noheadings",
        "--raw",
        "--output",
        "NAME,BACK-MAJ:MIN,BACK-INO",
    ]);
    let listing = match run(Tool::Losetup, &mut cmd) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(error = %e, "could not list loop devices by backing file identity");
            return Vec::new();
        }
    };
    let wanted = format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev));
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, majmin, inode) = (fields.next()?, fields.next()?, fields.next()?);
            // `--raw` writes the column's padding as `\x20`.
            (majmin.replace("\\x20", "") == wanted && inode.parse() == Ok(ino))
                .then(|| LoopDevice::current(PathBuf::from(name)))
        })
        .collect()
}

/// Detaches the loop devices over `file` that are not among `keep`: what a `losetup` killed
/// at its timeout attached (best effort, logged). `ident` is the file's identity when the
/// attach began: once the path leads to no file or to another one (deleted, replaced), the
/// devices are found by that identity, and a device over what the path names now is not ours.
fn detach_new_attachments(file: &Path, ident: Option<FileIdent>, keep: &[LoopDevice]) {
    let devices = match ident {
        Some(ident) if file_ident(file) != Some(ident) => backed_by_ident(ident),
        _ => LoopDevice::backed_by(file),
    };
    for device in devices {
        if keep.contains(&device) {
            continue;
        }
        match device.detach() {
            Ok(()) => tracing::warn!(file = %file.display(), device = %device.path.display(),
                "detached a loop device attached by a losetup that timed out"),
            Err(e) => tracing::warn!(file = %file.display(), device = %device.path.display(),
                error = %e, "could not detach a loop device attached by a losetup that timed out"),
        }
    }
}

/// The sysfs attribute `attr` of the block device `dev` (`/sys/block/NAME/ATTR`), trimmed: for
/// the numbers and flags sysfs shows as text.
fn sysfs(dev: &Path, attr: &str) -> Option<String> {
    let raw = sysfs_raw(dev, attr)?;
    Some(std::str::from_utf8(&raw).ok()?.trim().to_string())
}

/// The sysfs attribute `attr` of `dev` that holds a path (`loop/backing_file`), byte for byte:
/// a file name need not be UTF-8 and may end in spaces, so only the line's newline goes.
fn sysfs_path(dev: &Path, attr: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut raw = sysfs_raw(dev, attr)?;
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(raw)))
}

/// The bytes of the sysfs attribute `attr` of `dev`; `None` where it cannot be read (no such
/// device, or not attached).
fn sysfs_raw(dev: &Path, attr: &str) -> Option<Vec<u8>> {
    let name = dev.file_name()?;
    fs::read(Path::new("/sys/block").join(name).join(attr)).ok()
}

/// Why the loop driver left a device over `file` from `offset` in buffered mode.
fn refused_direct_io(file: &Path, offset: u64) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(file);
    match direct {
        Err(e) => format!(
            "the file system of {} refuses O_DIRECT ({e})",
            file.display()
        ),
        Ok(_) => format!(
            "the offset {offset} or the size is not a multiple of the backing device's logical \
             block size"
        ),
    }
}
