//! Filesystems: probing, formatting on first use, growing after an expansion.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::mount::{MountOptions, mount_filesystem};
use crate::{Error, Tool, path_arg, run};

/// A filesystem the crate formats, mounts and grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsType {
    /// ext4 (`mkfs.ext4`, grown online with `resize2fs`).
    Ext4,
    /// XFS (`mkfs.xfs`, grown online with `xfs_growfs`; it cannot shrink).
    Xfs,
}

impl FsType {
    /// The name `mount(2)`, `blkid` and CSI's `fs_type` use.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(Error::UnsupportedFilesystem(other.to_string())),
        }
    }
}

/// What `device` holds as `blkid` reads it from the device itself (not its cache): the
/// filesystem type (`ext4`, `xfs`, `crypto_LUKS`, `LVM2_member`, `swap`, …), or, for a device
/// that holds no filesystem but a partition table, `"a PTTYPE partition table"` (such as `"a
/// gpt partition table"`); `None` only for a device that holds neither. A partitioned disk is
/// not blank: formatting it would destroy its partitions.
///
/// A device that a [`mkfs`] of this process is formatting, or whose `mkfs` was killed at its
/// timeout and may still write to it, is not probed: [`Error::FormatPending`].
pub fn probe_filesystem(device: &Path) -> Result<Option<String>, Error> {
    if !device.exists() {
        return Err(Error::NotFound {
            path: device.to_path_buf(),
        });
    }
    check_not_pending(device)?;
    let mut cmd = Tool::Blkid.command();
    cmd.args(["-p", "-o", "export"]).arg(path_arg(device));
    let out = match run(Tool::Blkid, &mut cmd) {
        Ok(out) => out,
        // blkid's exit status 2: nothing was found on the device.
        Err(Error::Command { status, .. }) if status.ends_with("exit status: 2") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(probed(&out))
}

/// What `blkid -p -o export` output (`KEY=value` lines) says a device holds.
fn probed(export: &str) -> Option<String> {
    let value = |key: &str| {
        export
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .filter(|v| !v.is_empty())
    };
    match (value("TYPE"), value("PTTYPE")) {
        (Some(fs), _) => Some(fs.to_string()),
        (None, Some(pt)) => Some(format!("a {pt} partition table")),
        (None, None) => None,
    }
}

/// Formats `device` with `fs`, whatever is on it. Callers that must never destroy data use
/// [`format_and_mount`], which formats only a blank device. A `device` that does not exist is
/// refused ([`Error::NotFound`]) before any `mkfs` runs.
///
/// A `mkfs` killed at its timeout ([`Error::Timeout`]) may have written part of a filesystem,
/// superblock included: [`probe_filesystem`] would then find it, and a retried
/// [`format_and_mount`] would mount a half-made filesystem (or refuse a device that is not
/// blank). So after such a kill every signature libblkid finds on the device is erased with
/// `wipefs -a` ([`Tool::Wipefs`]; the same probes [`probe_filesystem`] runs, filesystem, RAID
/// and partition-table signatures alike, backup superblocks of GPT included), and the device
/// looks blank again: the retry formats it anew.
///
/// The erasing waits until the killed `mkfs` can write no more: until it, and every process of
/// its group (what a wrapper such as `nsenter` started), has died. A process blocked in the
/// kernel on a hung device dies of its kill only once the kernel lets it go, and may write
/// until then; so when the group has not died within a second of the kill (the error's
/// `exited: false`), the device is erased once it has, whenever that is, and until then every
/// [`mkfs`], [`probe_filesystem`], [`format_and_mount`] and [`resize_filesystem`] of the
/// device in this process fails with [`Error::FormatPending`] (ABORTED, naming the stuck
/// `mkfs`'s pid) instead of finding what it wrote or racing its late writes. The same error
/// answers while a `mkfs` of the device runs: two formats of one device never overlap.
///
/// The device is known by its device number (by device and inode for an image file),
/// whatever path names it; a device that has other media by the time the `mkfs` dies (a loop
/// device number attached to another file since, as its disk sequence number tells) is not
/// erased. Another process (a restarted plugin) knows nothing of a pending erase. A `wipefs`
/// that fails is logged as an error naming the device (run `wipefs -a` on it by hand before
/// the retry).
pub fn mkfs(device: &Path, fs: FsType) -> Result<(), Error> {
    let tool = match fs {
        FsType::Ext4 => Tool::MkfsExt4,
        FsType::Xfs => Tool::MkfsXfs,
    };
    let mut cmd = tool.command();
    match fs {
        // Lazy inode-table and journal initialisation: a large volume is ready in a second and
        // the kernel finishes the work in the background.
        FsType::Ext4 => cmd.args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"]),
        FsType::Xfs => cmd.arg("-q"),
    };
    cmd.arg(path_arg(device));
    // Held by this call and by the clean-up of a mkfs that outlives it: the device stays
    // refused until both have let go, the clean-up after its erase.
    let pending = std::sync::Arc::new(PendingFormat::start(device)?);
    let late = {
        let pending = pending.clone();
        let device = device.to_path_buf();
        Box::new(move || {
            // The device may have gone, or its path may name another one by now: another
            // file attached to the loop device number once the killed mkfs let go of it
            // (the disk sequence number tells, where the kernel has one).
            if device_key(&device) == Some(pending.key) && diskseq(pending.key) == pending.seq {
                wipe_signatures(&device);
            } else {
                tracing::error!(device = %device.display(),
                    "a mkfs killed at its timeout has died, but its device is no longer at its \
                     path: what it wrote was not erased; run `wipefs -a` on the device before \
                     staging it again");
            }
            drop(pending);
        })
    };
    if let Err(e) = crate::run_with_cleanup(tool, &mut cmd, late) {
        match e {
            Error::Timeout { exited: true, .. } => wipe_signatures(device),
            Error::Timeout { pid, .. } => {
                pending.stuck(pid);
                tracing::warn!(device = %device.display(), pid,
                    "a mkfs killed at its timeout is still blocked in the kernel: its device is \
                     erased once it dies, and refused until then");
            }
            _ => {}
        }
        return Err(e);
    }
    tracing::info!(device = %device.display(), fs = %fs, "formatted");
    Ok(())
}

/// Which device a path names, whatever the path: a block device's number (`st_rdev`), or an
/// image file's file system and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceKey {
    Block(u64),
    File(u64, u64),
}

fn device_key(path: &Path) -> Option<DeviceKey> {
    std::fs::metadata(path).ok().map(|m| key_of(&m))
}

fn key_of(m: &std::fs::Metadata) -> DeviceKey {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if m.file_type().is_block_device() {
        DeviceKey::Block(m.rdev())
    } else {
        DeviceKey::File(m.dev(), m.ino())
    }
}

/// The devices a [`mkfs`] of this process is formatting, or whose killed `mkfs` may still
/// write: each with a number of its own and the pid of a killed `mkfs` still blocked.
static PENDING: std::sync::Mutex<Vec<(DeviceKey, u64, Option<u32>)>> =
    std::sync::Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<(DeviceKey, u64, Option<u32>)>> {
    // Plain values, whole after any write: a panic elsewhere spoils nothing.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A device's entry in [`PENDING`], taken off when dropped.
struct PendingFormat {
    key: DeviceKey,
    /// The device's disk sequence number when the format began.
    seq: Option<u64>,
    id: u64,
}

/// The disk sequence number of a block device (sysfs `diskseq`, Linux 5.15 and later), which
/// the kernel changes whenever the device gets other media: a loop device at every attach.
fn diskseq(key: DeviceKey) -> Option<u64> {
    let DeviceKey::Block(rdev) = key else {
        return None;
    };
    let path = format!(
        "/sys/dev/block/{}:{}/diskseq",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    );
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl PendingFormat {
    /// Enters `device`, unless a format of it is pending already ([`Error::FormatPending`]). A
    /// path that names nothing is refused ([`Error::NotFound`], or the reason `stat` gives),
    /// before any `mkfs` runs.
    fn start(device: &Path) -> Result<Self, Error> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = key_of(&std::fs::metadata(device).map_err(|e| Error::io("stat", device, e))?);
        let mut all = pending();
        refuse_if_pending(&all, key, device)?;
        all.push((key, id, None));
        Ok(PendingFormat {
            key,
            seq: diskseq(key),
            id,
        })
    }

    /// Records that the `mkfs` was killed and is still blocked in the kernel as `pid`.
    fn stuck(&self, pid: u32) {
        if let Some(entry) = pending().iter_mut().find(|e| e.1 == self.id) {
            entry.2 = Some(pid);
        }
    }
}

impl Drop for PendingFormat {
    fn drop(&mut self) {
        pending().retain(|e| e.1 != self.id);
    }
}

fn refuse_if_pending(
    all: &[(DeviceKey, u64, Option<u32>)],
    key: DeviceKey,
    device: &Path,
) -> Result<(), Error> {
    match all.iter().find(|e| e.0 == key) {
        Some(&(_, _, pid)) => Err(Error::FormatPending {
            device: device.to_path_buf(),
            pid,
        }),
        None => Ok(()),
    }
}

/// [`Error::FormatPending`] when a format of `device` is pending (see [`mkfs`]).
fn check_not_pending(device: &Path) -> Result<(), Error> {
    match device_key(device) {
        Some(key) => refuse_if_pending(&pending(), key, device),
        None => Ok(()),
    }
}

/// Erases every signature libblkid finds on `device` (`wipefs -a`): what a `mkfs` killed
/// half-way left. Best effort: a failure is logged, with what to do.
fn wipe_signatures(device: &Path) {
    let mut cmd = Tool::Wipefs.command();
    cmd.arg("-a").arg(path_arg(device));
    match run(Tool::Wipefs, &mut cmd) {
        Ok(_) => tracing::warn!(device = %device.display(),
            "erased the signatures a mkfs killed at its timeout may have written"),
        Err(e) => tracing::error!(device = %device.display(), error = %e,
            "could not erase what a mkfs killed at its timeout may have written: the device may \
             hold a half-made filesystem; run `wipefs -a` on it before staging it again"),
    }
}

/// Mounts `device` on `target` with `fs`, formatting it first when (and only when) it is blank:
/// a device holding another filesystem or a partition table is refused
/// ([`Error::FilesystemMismatch`]), a blank one
/// asked for read-only is refused ([`Error::Unformatted`]). `target` must exist and not be a
/// symbolic link ([`Error::SymbolicLink`]), which is checked before anything is formatted.
///
/// `device` must be a block device (an image file is refused: attach it to a loop device) and
/// `target` a directory; both are checked before anything is formatted.
///
/// `options`' filesystem data is checked with the kernel's parser before the device is probed
/// or formatted ([`MountOptions::check_for_filesystem`]): an unknown option or a bad value
/// formats nothing. An option that is well formed but does not fit the new filesystem is
/// refused only by the mount, after the format: the device then holds an empty filesystem of
/// `fs`, which a retry with other options mounts without formatting again.
///
/// Idempotent, as NodeStageVolume must be: when `target` already has `device`'s `fs` mounted
/// on it, read-only as `options` ask or read-write as they do not, nothing is done. Any other
/// mount on `target` (another device, the other mode, a bind of a directory) is refused with
/// [`Error::AlreadyMounted`], which names it; nothing is stacked over it.
pub fn format_and_mount(
    device: &Path,
    target: &Path,
    fs: FsType,
    options: &MountOptions,
) -> Result<(), Error> {
    if !target.exists() {
        return Err(Error::NotFound {
            path: target.to_path_buf(),
        });
    }
    crate::mount::refuse_symlink(target)?;
    if let Some(top) = crate::mount::top_mount(target)? {
        let same_device = std::fs::canonicalize(device).is_ok_and(|d| top.is_from_device(&d));
        if same_device
            && top.root == Path::new("/")
            && top.fs_type == fs.as_str()
            && top.read_only == options.is_read_only()
        {
            return Ok(());
        }
        return Err(Error::AlreadyMounted {
            path: target.to_path_buf(),
            mounted: crate::mount::describe(&top),
            wanted: format!(
                "{} ({fs}, {})",
                storage_units::quote_path(device),
                crate::mount::mode(options.is_read_only())
            ),
        });
    }
    check_kinds(device, target)?;
    // Options the kernel refuses are refused before the device is formatted: a retry with
    // the options fixed then finds the device as it was.
    options.check_for_filesystem(fs.as_str())?;
    match probe_filesystem(device)? {
        Some(found) if found == fs.as_str() => {}
        Some(found) => {
            return Err(Error::FilesystemMismatch {
                device: device.to_path_buf(),
                found,
                wanted: fs.to_string(),
            });
        }
        None if options.is_read_only() => {
            return Err(Error::Unformatted {
                device: device.to_path_buf(),
            });
        }
        None => mkfs(device, fs)?,
    }
    mount_filesystem(device, target, fs.as_str(), options)
}

/// Refuses, before anything is probed or formatted, a `device` that is not a block device and
/// a `target` that is not a directory: `mount(2)` refuses either (`ENOTBLK`, `ENOTDIR`), but
/// only after `mkfs` would have formatted the device (an image file given for a device is
/// formatted whole).
fn check_kinds(device: &Path, target: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let refuse = |op, path: &Path, rule: String| {
        Err(Error::io(
            op,
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, rule),
        ))
    };
    let d = std::fs::metadata(device).map_err(|e| Error::io("stat", device, e))?;
    if !d.file_type().is_block_device() {
        return refuse(
            "format",
            device,
            format!(
                "it is {}, not a block device: a filesystem is made and mounted on a block \
                 device (attach an image file to a loop device first, LoopDevice::attach)",
                if d.is_dir() {
                    "a directory"
                } else if d.is_file() {
                    "a regular file"
                } else {
                    "a special file"
                }
            ),
        );
    }
    let t = std::fs::metadata(target).map_err(|e| Error::io("stat", target, e))?;
    if !t.is_dir() {
        return refuse(
            "mount",
            target,
            "it is not a directory: a filesystem is mounted on a directory".to_string(),
        );
    }
    Ok(())
}

/// Grows the filesystem on `device` to the device's size, after the device itself grew.
///
/// A mounted filesystem grows online: ext4 with `resize2fs` (the kernel needs
/// `CAP_SYS_RESOURCE` for it), XFS with `xfs_growfs` on a mount of it (the whole filesystem's,
/// or else a bind of one of its directories). An unmounted ext4 is
/// checked (`e2fsck -f -p`) and grown offline; an unmounted XFS cannot grow
/// ([`Error::NotMounted`]), nor can another filesystem ([`Error::CannotGrow`]). Growing a filesystem that already fills its device succeeds and
/// changes nothing.
pub fn resize_filesystem(device: &Path) -> Result<(), Error> {
    let fs = match probe_filesystem(device)? {
        // What the device holds is no field of the caller's request: not the INVALID_ARGUMENT
        // naming `fs_type` that `FsType`'s parser answers.
        Some(t) => t.parse::<FsType>().map_err(|_| Error::CannotGrow {
            device: device.to_path_buf(),
            found: t.clone(),
        })?,
        None => {
            return Err(Error::Unformatted {
                device: device.to_path_buf(),
            });
        }
    };
    let canonical =
        std::fs::canonicalize(device).map_err(|e| Error::io("canonicalize", device, e))?;
    // Any mount of the filesystem will do, a bind of one of its directories too (all that is
    // left of a staged volume once its staging path is unmounted and a publish remains), but
    // the whole filesystem's first.
    let mut mounts: Vec<_> = crate::mount_table()?
        .into_iter()
        .filter(|m| m.is_from_device(&canonical))
        .collect();
    mounts.sort_by_key(|m| m.root != Path::new("/"));
    let mount_point = mounts.into_iter().next().map(|m| m.mount_point);
    match (fs, mount_point) {
        (FsType::Ext4, Some(_)) => {
            run(
                Tool::Resize2fs,
                Tool::Resize2fs.command().arg(path_arg(device)),
            )?;
        }
        (FsType::Ext4, None) => {
            // e2fsck's exit status 1 means "errors corrected": the filesystem is fine now.
            match run(
                Tool::E2fsck,
                Tool::E2fsck
                    .command()
                    .args(["-f", "-p"])
                    .arg(path_arg(device)),
            ) {
                Ok(_) => {}
                Err(Error::Command { status, .. }) if status.ends_with("exit status: 1") => {}
                Err(e) => return Err(e),
            }
            run(
                Tool::Resize2fs,
                Tool::Resize2fs.command().arg(path_arg(device)),
            )?;
        }
        (FsType::Xfs, Some(mount_point)) => {
            run(Tool::XfsGrowfs, Tool::XfsGrowfs.command().arg(&mount_point))?;
        }
        (FsType::Xfs, None) => {
            return Err(Error::NotMounted {
                path: device.to_path_buf(),
                why: "XFS grows only while mounted".into(),
            });
        }
    }
    tracing::info!(device = %device.display(), fs = %fs, "filesystem grown");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::probed;

    #[test]
    fn blkid_export_output_is_read_for_a_filesystem_or_a_partition_table() {
        assert_eq!(
            probed("DEVNAME=/dev/loop0\nUUID=1234\nBLOCK_SIZE=4096\nTYPE=ext4"),
            Some("ext4".to_string())
        );
        // A disk with partitions and no filesystem of its own is not blank.
        assert_eq!(
            probed("DEVNAME=/dev/loop0\nPTUUID=78563412\nPTTYPE=dos"),
            Some("a dos partition table".to_string())
        );
        // PTTYPE is not TYPE, and a filesystem wins over a partition table (an ISO image).
        assert_eq!(
            probed("PTTYPE=dos\nTYPE=iso9660"),
            Some("iso9660".to_string())
        );
        assert_eq!(probed("DEVNAME=/dev/loop0"), None);
        assert_eq!(probed(""), None);
    }
}
