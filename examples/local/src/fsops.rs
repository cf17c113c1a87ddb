//! The real I/O of the driver: copying volume data, measuring it, bind
//! mounts, read-only remounts and loop devices.
//!
//! Mounts go through `rustix` (the `mount(2)` system call with `MS_BIND`
//! and `MS_REMOUNT`); loop devices through the `losetup` command, which
//! picks a free device (`losetup -f --show`), so no device number is ever
//! assumed.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, UnmountFlags};

/// Copies a directory tree (files, subdirectories, symlinks, permissions).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    fs::set_permissions(dst, fs::metadata(src)?.permissions())?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&from, &to)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ty.is_file() {
            copy_sparse(&from, &to)?;
            fs::set_permissions(&to, fs::metadata(&from)?.permissions())?;
        }
        // Sockets, fifos and devices are not volume content; skip them.
    }
    Ok(())
}

/// Copies a file, keeping holes (the caller makes it durable): only the data extents of `src` are read and
/// written (`SEEK_DATA`/`SEEK_HOLE`), so a sparse 1 GiB image with a few
/// written blocks copies in milliseconds.
pub(crate) fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    let mut input = fs::File::open(src)?;
    let len = input.metadata()?.len();
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    output.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&input, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem without SEEK_DATA: copy everything.
            Err(_) => pos,
        };
        let hole = rustix::fs::seek(&input, rustix::fs::SeekFrom::Hole(data)).unwrap_or(len);
        input.seek(SeekFrom::Start(data))?;
        output.seek(SeekFrom::Start(data))?;
        let mut left = hole.min(len) - data;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            input.read_exact(&mut buf[..n])?;
            output.write_all(&buf[..n])?;
            left -= n as u64;
        }
        pos = hole.max(data + 1);
    }
    Ok(())
}

/// Flushes the whole filesystem holding `path` (`syncfs(2)`): one call
/// makes a freshly copied tree durable, where an fsync per file would cost
/// one disk flush each.
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    rustix::fs::syncfs(&f)?;
    Ok(())
}

/// Bytes allocated on disk under `path` (files and directories, like `du`).
pub(crate) fn allocated_bytes(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            total += allocated_bytes(&entry?.path())?;
        }
    }
    Ok(total)
}

/// Filesystem figures for the filesystem holding `path`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FsStats {
    pub bytes_available: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// `statvfs(2)` of `path`.
pub(crate) fn fs_stats(path: &Path) -> io::Result<FsStats> {
    let s = rustix::fs::statvfs(path)?;
    Ok(FsStats {
        bytes_available: s.f_bavail.saturating_mul(s.f_frsize),
        inodes_total: s.f_files,
        inodes_free: s.f_favail,
    })
}

/// Mount flags a publish may carry; anything else is refused.
pub(crate) const SUPPORTED_MOUNT_FLAGS: &[&str] = &[
    "defaults",
    "rw",
    "ro",
    "noexec",
    "exec",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
    "sync",
    "dirsync",
];

/// The first mount flag the driver cannot apply to a bind mount, if any.
pub(crate) fn unsupported_mount_flag(flags: &[String]) -> Option<&str> {
    flags
        .iter()
        .map(String::as_str)
        .find(|f| !SUPPORTED_MOUNT_FLAGS.contains(f))
}

/// The per-mount flags for a list of (supported) mount options.
fn mount_flags(options: &[String], readonly: bool) -> MountFlags {
    let mut flags = MountFlags::empty();
    for o in options {
        flags |= match o.as_str() {
            "ro" => MountFlags::RDONLY,
            "noexec" => MountFlags::NOEXEC,
            "nosuid" => MountFlags::NOSUID,
            "nodev" => MountFlags::NODEV,
            "noatime" => MountFlags::NOATIME,
            "nodiratime" => MountFlags::NODIRATIME,
            "relatime" => MountFlags::RELATIME,
            "strictatime" => MountFlags::STRICTATIME,
            "sync" => MountFlags::SYNCHRONOUS,
            "dirsync" => MountFlags::DIRSYNC,
            _ => MountFlags::empty(),
        };
    }
    if readonly {
        flags |= MountFlags::RDONLY;
    }
    flags
}

/// Bind-mounts `src` on `target`, then, when asked for read-only or other
/// options, remounts the bind with them (`mount -o remount,bind,ro`).
pub(crate) fn bind_mount(
    src: &Path,
    target: &Path,
    options: &[String],
    readonly: bool,
) -> io::Result<()> {
    rustix::mount::mount_bind(src, target)?;
    let flags = mount_flags(options, readonly);
    if !flags.is_empty()
        && let Err(e) = rustix::mount::mount_remount(target, MountFlags::BIND | flags, "")
    {
        let _ = rustix::mount::unmount(target, UnmountFlags::empty());
        return Err(e.into());
    }
    Ok(())
}

/// Unmounts everything mounted on `target` (a bind stacked twice is
/// unmounted twice). Not being mounted is not an error.
pub(crate) fn unmount_all(target: &Path) -> io::Result<()> {
    for _ in 0..16 {
        if !is_mount_point(target)? {
            return Ok(());
        }
        rustix::mount::unmount(target, UnmountFlags::empty())?;
    }
    Err(io::Error::other(format!(
        "{} is still mounted after 16 unmounts",
        target.display()
    )))
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo`.
pub(crate) fn is_mount_point(path: &Path) -> io::Result<bool> {
    let path = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == path)
    }))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why loop devices cannot be used here, if they cannot.
pub(crate) fn loop_unavailable() -> Option<String> {
    if !Path::new("/dev/loop-control").exists() {
        return Some(
            "block volumes need loop devices, and /dev/loop-control does not exist on this node (load the `loop` module or run the driver with access to /dev)".into(),
        );
    }
    match Command::new("losetup").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`losetup --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!(
            "block volumes need the `losetup` command (util-linux), which cannot be run: {e}"
        )),
    }
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Attaches `file` to a free loop device and returns the device path.
pub(crate) fn loop_attach(file: &Path, readonly: bool) -> io::Result<String> {
    let mut cmd = Command::new("losetup");
    cmd.arg("-f").arg("--show");
    if readonly {
        cmd.arg("-r");
    }
    cmd.arg(file);
    run(&mut cmd)
}

/// Detaches a loop device (deferred by the kernel while it is still open).
pub(crate) fn loop_detach(device: &str) -> io::Result<()> {
    run(Command::new("losetup").arg("-d").arg(device)).map(|_| ())
}

/// Makes a loop device see its backing file's new size.
pub(crate) fn loop_refresh(device: &str) -> io::Result<()> {
    run(Command::new("losetup").arg("-c").arg(device)).map(|_| ())
}

/// The backing file of a loop device, from sysfs.
pub(crate) fn loop_backing_file(device: &str) -> Option<PathBuf> {
    let name = Path::new(device)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let s = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim()))
}

/// The loop devices whose backing file is `image`.
pub(crate) fn loops_backed_by(image: &Path) -> Vec<String> {
    let Ok(image) = fs::canonicalize(image) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .map(|n| format!("/dev/{n}"))
        .filter(|dev| loop_backing_file(dev).is_some_and(|b| b == image))
        .collect()
}

/// Creates an empty regular file at `path` if nothing is there (a block
/// publish target), with mode 0600.
pub(crate) fn create_target_file(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f.set_permissions(fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unmounts every mount point under `dir` and detaches every loop device
/// whose backing file is under `dir`: the safety net of the demo and the
/// tests, so that removing a temporary directory never reaches through a
/// mount left by a failed step. Errors are ignored (best effort).
pub fn release_under(dir: &Path) {
    let Ok(dir) = fs::canonicalize(dir) else {
        return;
    };
    let mut points: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .nth(4)
                .map(|m| PathBuf::from(unescape_mountinfo(m)))
        })
        .filter(|m| m.starts_with(&dir))
        .collect();
    // Deepest (and latest) first.
    points.reverse();
    for p in points {
        let _ = rustix::mount::unmount(&p, UnmountFlags::DETACH);
    }
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let dev = format!("/dev/{name}");
        if loop_backing_file(&dev).is_some_and(|b| b.starts_with(&dir)) {
            let _ = loop_detach(&dev);
        }
    }
}

/// Whether the effective user is root (mounts need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        let f = fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let mut f = fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(b"hello").unwrap();
        f.seek(SeekFrom::Start((64 << 20) - 3)).unwrap();
        f.write_all(b"end").unwrap();
        drop(f);
        let dst = dir.path().join("b.img");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        // Far less than 64 MiB is allocated: the holes stayed holes.
        assert!(allocated_bytes(&dst).unwrap() < 8 << 20);
    }

    #[test]
    fn tree_copy_copies_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::write(src.join("sub/deeper/f"), b"data").unwrap();
        std::os::unix::fs::symlink("sub/deeper/f", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub/deeper/f")).unwrap(), b"data");
        assert_eq!(fs::read(dst.join("link")).unwrap(), b"data");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/tail\04"), r"/tail\04");
    }

    #[test]
    fn mount_flags_are_checked() {
        assert_eq!(
            unsupported_mount_flag(&["ro".into(), "noexec".into()]),
            None
        );
        assert_eq!(unsupported_mount_flag(&["discard".into()]), Some("discard"));
    }
}
