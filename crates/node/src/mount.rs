//! Mounts: the mount table, filesystem and bind mounts, read-only remounts, unmounts.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::Error;

/// Options that are per-mount flags, applied with `mount(2)`'s flags (and so valid on a bind
/// mount too); every other option is filesystem data, passed to the filesystem as `mount -o` would.
///
/// The third member names the setting an option chooses: two different options of one setting
/// (`ro` and `rw`, `noatime` and `relatime`) contradict each other. `mount(8)` lets the last one
/// win, `mount(2)` would let the flag win (`ro,rw` is read-only), and a `mount_flags` list has
/// no order anyone meant, so they are refused.
const FLAGS: &[(&str, Option<MountFlags>, Option<&str>)] = &[
    ("defaults", None, None),
    ("rw", None, Some("ro/rw")),
    ("ro", Some(MountFlags::RDONLY), Some("ro/rw")),
    ("noexec", Some(MountFlags::NOEXEC), Some("exec")),
    ("exec", None, Some("exec")),
    ("nosuid", Some(MountFlags::NOSUID), Some("suid")),
    ("suid", None, Some("suid")),
    ("nodev", Some(MountFlags::NODEV), Some("dev")),
    ("dev", None, Some("dev")),
    ("noatime", Some(MountFlags::NOATIME), Some("atime")),
    ("nodiratime", Some(MountFlags::NODIRATIME), None),
    ("relatime", Some(MountFlags::RELATIME), Some("atime")),
    ("strictatime", Some(MountFlags::STRICTATIME), Some("atime")),
    ("sync", Some(MountFlags::SYNCHRONOUS), Some("sync")),
    ("async", None, Some("sync")),
    ("dirsync", Some(MountFlags::DIRSYNC), None),
];

/// Superblock flags the kernel takes among a filesystem's options by name alone, ignoring any
/// value (`vfs_parse_sb_flag` in fs/fs_context.c), besides those in [`FLAGS`].
const KERNEL_SB_FLAGS: &[&str] = &["lazytime", "nolazytime", "mand", "nomand", "posixacl"];

/// Mount options as a CSI `mount_flags` list carries them, sorted into per-mount flags and
/// filesystem data.
///
/// # Invariants
/// Every option is non-empty and free of whitespace, NUL and `,` (a comma-joined entry is split
/// into its options when parsed).
///
/// Its `Debug` shows the values of `key=value` options as `<hidden>`, as its errors do: CSI's
/// `mount_flags` MAY carry secrets, and a value printed with `{:?}` ends up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct MountOptions {
    flags: MountFlags,
    data: Vec<String>,
}

impl std::fmt::Debug for MountOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountOptions")
            .field("flags", &self.flags)
            .field(
                "data",
                &self.data.iter().map(|o| redacted(o)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MountFlags::empty(),
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    /// Reads options such as `["noatime", "discard", "ro"]` (or `["noatime,discard"]`).
    ///
    /// An option given twice counts once; two options that set one thing differently (`ro`
    /// and `rw`, `exec` and `noexec`, `suid` and `nosuid`, `dev` and `nodev`, `sync` and
    /// `async`, two of `noatime`, `relatime` and `strictatime`) are refused, naming both.
    ///
    /// ```
    /// use csi_node::{Error, MountOptions};
    /// assert!(MountOptions::parse(["ro", "noatime,ro"]).unwrap().is_read_only());
    /// let err = MountOptions::parse(["ro", "rw"]).unwrap_err();
    /// assert!(matches!(&err, Error::BadMountOption { option, .. } if option == "rw"));
    /// assert!(err.to_string().contains("\"ro\""), "{err}");
    /// ```
    pub fn parse<I, S>(options: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = MountOptions::default();
        // The option each setting was given as (`ro/rw` → `ro`).
        let mut chosen: Vec<(&str, &str)> = Vec::new();
        for entry in options {
            for option in entry.as_ref().split(',') {
                let broken = if option.is_empty() {
                    Some(
                        "an option is not empty (two commas in a row, or one at an end, leave one)",
                    )
                } else if option.contains(char::is_whitespace) {
                    Some("an option holds no white space")
                } else if option.contains('\0') {
                    Some("an option holds no NUL byte")
                } else {
                    None
                };
                if let Some(rule) = broken {
                    return Err(Error::BadMountOption {
                        option: redacted(entry.as_ref()),
                        rule: rule.into(),
                    });
                }
                match FLAGS.iter().find(|(name, ..)| *name == option) {
                    Some((name, flag, setting)) => {
                        if let Some(setting) = setting {
                            match chosen.iter().find(|(s, _)| s == setting) {
                                Some((_, earlier)) if earlier != name => {
                                    return Err(Error::BadMountOption {
                                        option: option.to_string(),
                                        rule: format!(
                                            "it contradicts {earlier:?} given with it; give one of them"
                                        ),
                                    });
                                }
                                Some(_) => {}
                                None => chosen.push((setting, name)),
                            }
                        }
                        out.flags |= flag.unwrap_or(MountFlags::empty());
                    }
                    None => {
                        // `ro=1` is no filesystem data: the kernel reads a superblock flag by
                        // its name alone, value ignored, so `ro=0` would mount read-only while
                        // these options said read-write.
                        if let Some((key, _)) = option.split_once('=')
                            && (FLAGS.iter().any(|(name, ..)| *name == key)
                                || KERNEL_SB_FLAGS.contains(&key))
                        {
                            return Err(Error::BadMountOption {
                                option: redacted(option),
                                rule: format!("{key:?} is a flag and takes no value; give {key:?}"),
                            });
                        }
                        out.data.push(option.to_string())
                    }
                }
            }
        }
        Ok(out)
    }

    /// The same options, read-only.
    pub fn read_only(mut self) -> Self {
        self.flags |= MountFlags::RDONLY;
        self
    }

    /// Whether the options ask for a read-only mount.
    pub fn is_read_only(&self) -> bool {
        self.flags.contains(MountFlags::RDONLY)
    }

    /// The options that are filesystem data (`discard`, `errors=remount-ro`, …).
    pub fn data(&self) -> &[String] {
        &self.data
    }

    /// Checks that a bind mount can apply these options (per-mount flags only, such as `ro`,
    /// `noexec`, `noatime`): a driver that publishes by bind mounts calls this where it first
    /// sees a capability (CreateVolume, ValidateVolumeCapabilities), so that a publish never
    /// fails on an option the volume was accepted with.
    ///
    /// ```
    /// use csi_node::{Error, MountOptions};
    /// assert!(MountOptions::parse(["ro", "noatime"]).unwrap().check_bindable().is_ok());
    /// let err = MountOptions::parse(["discard"]).unwrap().check_bindable().unwrap_err();
    /// assert!(matches!(err, Error::BadMountOption { option, .. } if option == "discard"));
    /// ```
    pub fn check_bindable(&self) -> Result<(), Error> {
        self.bind_flags().map(|_| ())
    }

    /// Checks the filesystem data options (`discard`, `errors=remount-ro`, …) with the
    /// kernel's own parser for `fs_type`, without a device and before anything is formatted or
    /// mounted: each option is given to a new filesystem context (`fsopen(2)`, `fsconfig(2)`,
    /// Linux 5.2 and later), as `mount(2)` gives it, and one the kernel refuses (an unknown
    /// option, a value that is not one of the option's) is [`Error::BadMountOption`], with the
    /// kernel's reason and without the option's value. [`crate::format_and_mount`] calls this
    /// first, so that a bad option formats nothing.
    ///
    /// What it cannot tell: an option that is well formed but does not fit the filesystem on
    /// the device (such as a `logbsize` that does not suit an XFS log, or a `journal_*` option
    /// for an ext4 without a journal) is refused only by the mount itself. Where the kernel
    /// has no `fsopen` (before Linux 5.2), or the filesystem still parses its options the
    /// legacy way, nothing is checked here and the mount is the check.
    ///
    /// ```no_run
    /// use csi_node::{Error, MountOptions};
    /// let o = MountOptions::parse(["noatime", "errors=remount-ro"]).unwrap();
    /// assert!(o.check_for_filesystem("ext4").is_ok());
    /// let err = MountOptions::parse(["nosuchoption"]).unwrap().check_for_filesystem("ext4");
    /// assert!(matches!(err, Err(Error::BadMountOption { .. })));
    /// ```
    pub fn check_for_filesystem(&self, fs_type: &str) -> Result<(), Error> {
        use rustix::mount::{FsOpenFlags, fsconfig_set_flag, fsconfig_set_string, fsopen};
        if self.data.is_empty() {
            return Ok(());
        }
        // No filesystem context to be had (an older kernel, no such filesystem, no privilege):
        // the mount checks the options itself, as it always did.
        let Ok(fd) = fsopen(fs_type, FsOpenFlags::FSOPEN_CLOEXEC) else {
            return Ok(());
        };
        for option in &self.data {
            let set = match option.split_once('=') {
                Some((key, value)) => fsconfig_set_string(&fd, key, value),
                None => fsconfig_set_flag(&fd, option.as_str()),
            };
            match set {
                Ok(()) => {}
                Err(rustix::io::Errno::INVAL) => {
                    // The kernel says why in the context's log ("e ext4: Unknown parameter
                    // 'x'"); a value is hidden there as everywhere. A read whose buffer is
                    // shorter than the message fails (EMSGSIZE) and drops it, and a key or a
                    // value may be 255 bytes each: a page holds any message.
                    let mut log = vec![0u8; FS_LOG_MESSAGE_MAX];
                    let why = rustix::io::read(&fd, &mut log)
                        .ok()
                        .map(|n| String::from_utf8_lossy(&log[..n]).trim().to_string())
                        .map(|m| m.strip_prefix("e ").unwrap_or(&m).to_string())
                        .map(|m| match option.split_once('=') {
                            Some((_, value)) if !value.is_empty() => m.replace(value, "<hidden>"),
                            _ => m,
                        })
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "invalid argument".into());
                    return Err(Error::BadMountOption {
                        option: redacted(option),
                        rule: format!("the kernel's {fs_type} refuses it ({why})"),
                    });
                }
                // Anything else is no verdict on the option: the mount will tell.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// The options a bind mount can apply: per-mount flags only.
    fn bind_flags(&self) -> Result<MountFlags, Error> {
        match self.data.first() {
            None => Ok(self.flags),
            Some(option) => Err(Error::BadMountOption {
                option: redacted(option),
                rule: format!(
                    "a bind mount takes only per-mount flags: {}",
                    FLAGS
                        .iter()
                        .map(|(n, ..)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

/// Room for one message of a filesystem context's log (`fsopen(2)`): the kernel's text with
/// a key and a value of at most 255 bytes each.
const FS_LOG_MESSAGE_MAX: usize = 4096;

/// Mount options as an error may show them: the value of each `key=value` option is left out.
/// CSI's `mount_flags` MAY carry secrets (`password=…` for a network filesystem), which a plugin
/// MUST NOT leak, and an error message travels to the CO, its logs and its users' events.
fn redacted(options: &str) -> String {
    options
        .split(',')
        .map(|o| match o.split_once('=') {
            Some((key, _)) => format!("{key}=<hidden>"),
            None => o.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One line of `/proc/self/mountinfo`.
///
/// Paths are kept byte for byte: the kernel escapes only space, tab, newline and backslash in
/// mountinfo (as `\040`, `\011`, `\012`, `\134`) and writes every other byte of a path as it
/// is, so a mount point need not be UTF-8, and one that is not still compares equal to the
/// path it was mounted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point.
    pub mount_point: PathBuf,
    /// The path inside the mounted filesystem that is mounted there (`/` for a whole
    /// filesystem, the source directory for a bind mount).
    pub root: PathBuf,
    /// The filesystem type (`ext4`, `tmpfs`, `fuse.sshfs`, …); a byte that is not UTF-8 (only
    /// a FUSE subtype can hold one) shows as U+FFFD.
    pub fs_type: String,
    /// The source as given to `mount(2)`: a device such as `/dev/loop3` (compare it with
    /// `Path::new(&entry.source)`), or a name such as `tmpfs`. Kept byte for byte, like the
    /// paths, since a device path need not be UTF-8 either.
    pub source: OsString,
    /// Whether the mount is read-only.
    pub read_only: bool,
}

impl MountEntry {
    /// Whether the mount's source is the device at `canonical` (a path without symbolic
    /// links): the source as given to `mount(2)` may be a link to it (`/dev/mapper/NAME`,
    /// `/dev/disk/by-id/…`), so it is resolved first. A source that is not an absolute path
    /// (`tmpfs`, `overlay`) is no device.
    pub(crate) fn is_from_device(&self, canonical: &Path) -> bool {
        let source = Path::new(&self.source);
        source.is_absolute() && fs::canonicalize(source).is_ok_and(|s| s == canonical)
    }
}

/// The mount table of this process's mount namespace, in mount order.
///
/// The table is read as bytes: a mount point anywhere on the host whose path is not UTF-8
/// (any user can make one) is listed like any other and spoils nothing else.
pub fn mount_table() -> Result<Vec<MountEntry>, Error> {
    let text = fs::read("/proc/self/mountinfo")
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

/// Parses `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    // Six fixed fields, then optional fields up to a lone `-`, then the filesystem type and
    // the source (proc(5)). Read by position: a space inside a field is escaped, so fields
    // split on spaces, and none of the fixed ones is taken for the separator.
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = 6 + fields.get(6..)?.iter().position(|f| *f == b"-")?;
    let fs_type = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    Some(MountEntry {
        root: PathBuf::from(unescape(fields.get(3)?)),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
        read_only: fields.get(5)?.split(|&b| b == b',').any(|o| o == b"ro"),
        fs_type: unescape(fs_type).to_string_lossy().into_owned(),
        source: unescape(source),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space), byte for byte.
fn unescape(s: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s.get(i + 1..i + 4) {
            Some(d) if s[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) => {
                // Three octal digits can say up to 0o777; the kernel writes only bytes.
                let value = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                match u8::try_from(value) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 4;
                    }
                    Err(_) => {
                        out.push(s[i]);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// Whether something is mounted on `path`. A path that does not exist is not a mount point, nor
/// is a symbolic link (even one that points at a mount point): [`unmount`] never follows one
/// to unmount what it points to.
pub fn is_mount_point(path: &Path) -> Result<bool, Error> {
    Ok(top_mount(path)?.is_some())
}

/// The top mount on `path` (the last mounted there), if any; a path that does not exist has
/// none.
pub(crate) fn top_mount(path: &Path) -> Result<Option<MountEntry>, Error> {
    // A symbolic link is never a mount point (mount(2) follows it): what it points to may be
    // one, but through the link it is someone else's mount.
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(None);
    }
    let path = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("canonicalize", path, e)),
    };
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path))
}

/// The mount points at or below `dir`, in mount order (unmount them in reverse).
///
/// `dir` is resolved without looking at it where it cannot be looked at (the root of a FUSE
/// mount whose server has died answers `ENOTCONN`): through its nearest ancestor that resolves.
/// A directory that does not exist has nothing mounted below it.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = resolve(dir)?;
    Ok(mount_table()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(&dir))
        .collect())
}

/// `path`, absolute and free of symbolic links, as far as it can be resolved: the longest
/// prefix that `canonicalize` accepts, with the rest of the components appended as they are.
/// `canonicalize` stats every component, and some cannot be stat'ed although the kernel still
/// names paths below them (a dead FUSE mount's root, a removed directory that an open file or a
/// loop device still lies below).
///
/// A `..` after the part that resolves cannot be followed without looking: that is an error.
pub(crate) fn resolve(path: &Path) -> Result<PathBuf, Error> {
    let path = std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))?;
    let first = match fs::canonicalize(&path) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    for base in path.ancestors().skip(1) {
        let Ok(resolved) = fs::canonicalize(base) else {
            continue;
        };
        // `base` is an ancestor of `path`: the prefix strips.
        let rest = path.strip_prefix(base).unwrap_or(Path::new(""));
        if rest
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            break;
        }
        return Ok(resolved.join(rest));
    }
    Err(Error::io("canonicalize", path, first))
}

/// Lazily unmounts (`MNT_DETACH`) every mount at or below `dir`, the last mounted first:
/// each disappears from the tree at once and is released when nothing uses it any more, so a
/// mount whose server has died (FUSE) goes too. Not being mounted is not an error.
///
/// Detach the loop devices whose backing files lie below `dir` first: once their mount is
/// detached, the kernel names such a backing file by its path inside the detached file system
/// (`/volume` for `DIR/volume` on a FUSE mount at `DIR`), and no search below `dir` finds the
/// device again.
pub fn lazy_unmount_under(dir: &Path) -> Result<(), Error> {
    for p in mounts_under(dir)?.iter().rev() {
        match rustix::mount::unmount(p, UnmountFlags::DETACH) {
            Ok(()) => {}
            // Gone already, with a mount it was stacked on or below.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT)
                if !mounts_under(dir)?.contains(p) => {}
            Err(e) => return Err(Error::errno("lazy unmount", p, e)),
        }
    }
    Ok(())
}

/// Mounts the filesystem on `device` at `target` with `fs_type` and `options`.
pub(crate) fn mount_filesystem(
    device: &Path,
    target: &Path,
    fs_type: &str,
    options: &MountOptions,
) -> Result<(), Error> {
    let data = options.data.join(",");
    // The options were checked free of NUL when parsed.
    let c_data = std::ffi::CString::new(data.clone()).map_err(|_| Error::BadMountOption {
        option: redacted(&data),
        rule: "an option holds no NUL byte".into(),
    })?;
    rustix::mount::mount(device, target, fs_type, options.flags, c_data.as_c_str()).map_err(
        |e| {
            if e == rustix::io::Errno::INVAL && !options.data.is_empty() {
                Error::BadMountOption {
                    option: redacted(&data),
                    rule: format!("the kernel's {fs_type} refused these options ({e})"),
                }
            } else {
                Error::errno("mount", target, e)
            }
        },
    )?;
    tracing::debug!(device = %device.display(), target = %target.display(), fs_type, "mounted");
    Ok(())
}

/// Bind-mounts `source` (a directory, or a file such as a block device) on `target`, then
/// remounts the bind with `options`' flags and read-only when `read_only`. A bind mount takes
/// per-mount flags only; filesystem data options are refused before anything is mounted, and
/// so are a directory on a file and a file on a directory, naming both. On a failed remount the
/// bind is undone (unmounted, or detached lazily when busy), so that no bind with other flags
/// than asked stays; if even that fails, [`Error::BindLeft`] names both failures.
///
/// Idempotent, as NodePublishVolume must be: when `target` already shows `source` (a bind of
/// it), read-only as asked or read-write as not, nothing is done. Any other mount on `target`
/// (another source, the other mode, someone's tmpfs) is refused with [`Error::AlreadyMounted`],
/// which names it; nothing is stacked over it. (The mode is all that is compared: a retry
/// with other flags, such as `noexec`, finds the first bind and keeps it.)
///
/// A bind never loosens what the mount holding `source` restricts: where that mount is
/// read-only, `nosuid`, `nodev` or `noexec`, so is the bind, whatever `options` say (a remount
/// with flags would otherwise replace them, and a volume staged read-only would be published
/// writable).
pub fn bind_mount(
    source: &Path,
    target: &Path,
    options: &MountOptions,
    read_only: bool,
) -> Result<(), Error> {
    let mut flags = options.bind_flags()?;
    refuse_symlink(target)?;
    if let (Ok(s), Ok(t)) = (fs::metadata(source), fs::metadata(target))
        && s.is_dir() != t.is_dir()
    {
        let kind = |dir: bool| {
            if dir {
                "a directory"
            } else {
                "not a directory"
            }
        };
        return Err(Error::io(
            "bind mount",
            target,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is {} and the target is {}: a directory is bound on a directory, a file \
                     or a device on a file",
                    storage_units::quote_path(source),
                    kind(s.is_dir()),
                    kind(t.is_dir())
                ),
            ),
        ));
    }
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    if let Some(top) = top_mount(target)? {
        // A retry (kubelet retries NodePublishVolume) finds its bind there: nothing to do.
        // Anything else there is not stacked on.
        use std::os::unix::fs::MetadataExt;
        let same_file = matches!(
            (fs::metadata(source), fs::metadata(target)),
            (Ok(s), Ok(t)) if (s.dev(), s.ino()) == (t.dev(), t.ino())
        );
        let source_ro = rustix::fs::statvfs(source)
            .is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
        let wanted_ro = flags.contains(MountFlags::RDONLY) || source_ro;
        if same_file && top.read_only == wanted_ro {
            return Ok(());
        }
        return Err(Error::AlreadyMounted {
            path: target.to_path_buf(),
            mounted: describe(&top),
            wanted: format!(
                "a bind of {} ({})",
                storage_units::quote_path(source),
                mode(wanted_ro)
            ),
        });
    }
    rustix::mount::mount_bind(source, target).map_err(|e| {
        let missing = if source.exists() { target } else { source };
        Error::errno("bind mount", missing, e)
    })?;
    if flags.is_empty() {
        // No remount: the bind has the flags of the mount it was made from.
        return Ok(());
    }
    #[cfg(test)]
    tests::BEFORE_REMOUNT.with(|hook| {
        if let Some(hook) = hook.borrow_mut().as_mut() {
            hook(target);
        }
    });
    let remount = rustix::fs::statvfs(target)
        .map_err(|e| Error::errno("statvfs", target, e))
        .and_then(|st| {
            let kept = restrictions(st.f_flag);
            rustix::mount::mount_remount(target, MountFlags::BIND | flags | kept, "")
                .map_err(|e| Error::errno("remount", target, e))
        });
    remount.map_err(|failed| undo_bind(target, failed))
}

/// Takes off the bind on `target` whose remount `failed`, so that no bind with other flags than
/// asked (a writable one, where read-only was asked) stays there: a plain unmount, then a lazy
/// detach when that fails (the bind is busy). Returns `failed` once the bind is gone, and
/// [`Error::BindLeft`], which names every failure, when it stays.
fn undo_bind(target: &Path, failed: Error) -> Error {
    let Err(unmount) = rustix::mount::unmount(target, UnmountFlags::empty()) else {
        return failed;
    };
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) => {
            tracing::warn!(
                target = %target.display(),
                error = %failed,
                unmount = %unmount,
                "a bind whose remount failed was busy and is detached lazily"
            );
            failed
        }
        Err(detach) => Error::BindLeft {
            path: target.to_path_buf(),
            failed: Box::new(failed),
            unmount: unmount.into(),
            detach: detach.into(),
        },
    }
}

/// A mount as an error names it: source, filesystem type, the directory of it that is mounted
/// (for a bind) and mode: `/dev/loop3 (ext4, read-write)`, `/dev/sda1 (ext4 at /srv, read-only)`.
pub(crate) fn describe(m: &MountEntry) -> String {
    format!(
        "{} ({}{}, {})",
        storage_units::quote_path(Path::new(&m.source)),
        m.fs_type,
        if m.root == Path::new("/") {
            String::new()
        } else {
            format!(" at {}", storage_units::quote_path(&m.root))
        },
        mode(m.read_only)
    )
}

/// `read-only` or `read-write`.
pub(crate) fn mode(read_only: bool) -> &'static str {
    if read_only { "read-only" } else { "read-write" }
}

/// Refuses a mount target that is a symbolic link: `mount(2)` would follow it and mount on
/// what it points to (a staging path, another volume), which no unmount of the link undoes.
pub(crate) fn refuse_symlink(target: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::SymbolicLink {
            path: target.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// The restrictions among a mount's flags (as `statvfs` reports them) that a bind remount would
/// drop unless given again: read-only, `nosuid`, `nodev`, `noexec`. (The atime flags are kept
/// by the kernel when the remount names none.)
fn restrictions(f: rustix::fs::StatVfsMountFlags) -> MountFlags {
    use rustix::fs::StatVfsMountFlags as St;
    [
        (St::RDONLY, MountFlags::RDONLY),
        (St::NOSUID, MountFlags::NOSUID),
        (St::NODEV, MountFlags::NODEV),
        (St::NOEXEC, MountFlags::NOEXEC),
    ]
    .into_iter()
    .filter(|(st, _)| f.contains(*st))
    .fold(MountFlags::empty(), |acc, (_, m)| acc | m)
}

/// Creates the empty regular file (mode 0600) that a block volume is bind-mounted on at its
/// publish target, unless something is already there; the file's parent must exist.
pub fn create_file_target(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("chmod", path, e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", path, e)),
    }
}

/// Remounts the mount at `target` read-only (a bind mount's flags only; the filesystem under it
/// stays writable through its other mounts). Its `nosuid`, `nodev` and `noexec` stay.
pub fn remount_readonly(target: &Path) -> Result<(), Error> {
    let st = rustix::fs::statvfs(target).map_err(|e| Error::errno("statvfs", target, e))?;
    let flags = MountFlags::BIND | MountFlags::RDONLY | restrictions(st.f_flag);
    rustix::mount::mount_remount(target, flags, "")
        .map_err(|e| Error::errno("remount read-only", target, e))
}

/// Unmounts the top mount on `target`. Returns whether something was mounted there. A busy
/// mount is retried for about half a second before [`Error::Busy`] is returned.
pub fn unmount(target: &Path) -> Result<bool, Error> {
    if !is_mount_point(target)? {
        return Ok(false);
    }
    // EBUSY is often momentary (a scanner walking the tree, a process leaving its directory):
    // retry a few times before reporting it, as kubelet would retry the whole call.
    let mut delay = std::time::Duration::from_millis(20);
    loop {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::BUSY) if delay < std::time::Duration::from_millis(400) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(Error::errno("unmount", target, e)),
        }
    }
}

/// Unmounts from `target` the mounts this plugin made there, and nothing else: each mount
/// stacked on `target`, the last first, that is one of `sources`' (a bind of one of them, so that
/// `target` shows that very file, same device and inode; or, for a block device among
/// `sources`, its filesystem mounted whole). The first mount that is not, someone else's
/// stacked on the plugin's (an operator's tmpfs, another driver's volume), is refused with
/// [`Error::ForeignMount`], which names it, and stays, with what is under it. Nothing mounted
/// is not an error, so that unpublish and unstage stay idempotent. Returns how many mounts
/// came off.
///
/// This is what NodeUnpublishVolume and NodeUnstageVolume want: [`unmount_all`] takes off
/// whatever is stacked on the path, whoever mounted it.
///
/// ```no_run
/// # use std::path::Path;
/// # fn demo(staging: &Path, target: &Path) -> Result<(), csi_node::Error> {
/// // NodeUnpublishVolume of a volume published by a bind of its staging path.
/// csi_node::unmount_own(target, &[staging])?;
/// # Ok(()) }
/// ```
pub fn unmount_own<P: AsRef<Path>>(target: &Path, sources: &[P]) -> Result<usize, Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let own = |top: &MountEntry| {
        let shown = fs::metadata(target).ok();
        sources.iter().any(|src| {
            let Ok(m) = fs::metadata(src.as_ref()) else {
                return false;
            };
            let same_file = shown
                .as_ref()
                .is_some_and(|t| (t.dev(), t.ino()) == (m.dev(), m.ino()));
            let its_filesystem = m.file_type().is_block_device()
                && top.root == Path::new("/")
                && fs::canonicalize(src.as_ref()).is_ok_and(|d| top.is_from_device(&d));
            same_file || its_filesystem
        })
    };
    // Bounded like unmount_all: a bind stacked many times is unmounted as often.
    for done in 0..64 {
        let Some(top) = top_mount(target)? else {
            return Ok(done);
        };
        if !own(&top) {
            return Err(Error::ForeignMount {
                path: target.to_path_buf(),
                mounted: describe(&top),
            });
        }
        unmount(target)?;
    }
    Err(Error::Busy {
        path: target.to_path_buf(),
        source: io::Error::other("still mounted after 64 unmounts"),
    })
}

/// Unmounts everything stacked on `target` (a bind stacked twice is unmounted twice), whoever
/// mounted it: see [`unmount_own`] for what a node plugin unmounts at unpublish and unstage.
/// Not being mounted is not an error.
pub fn unmount_all(target: &Path) -> Result<(), Error> {
    for _ in 0..64 {
        if !unmount(target)? {
            return Ok(());
        }
    }
    Err(Error::Busy {
        path: target.to_path_buf(),
        source: io::Error::other("still mounted after 64 unmounts"),
    })
}

/// Detaches every loop device whose backing file is below `dir` and every mount at or below
/// `dir`: the safety net of demos and tests, so that removing a temporary directory never
/// reaches through a mount left by a failed step. Best effort: errors are logged, not returned.
///
/// The loop devices go first (a device still open, such as one a file system below `dir` is
/// mounted from, is detached by the kernel at its last close), and only then are the mounts
/// lazily unmounted: a loop device over a file on a mount that is already detached can no
/// longer be found by its path (see [`lazy_unmount_under`]). A node plugin that must not leave
/// a device behind detaches its own devices, checks them, and calls [`lazy_unmount_under`],
/// which returns its errors.
pub fn release_under(dir: &Path) {
    for device in crate::LoopDevice::backed_under(dir) {
        if let Err(e) = device.detach() {
            tracing::warn!(device = %device.path().display(), error = %e, "loop detach failed");
        }
    }
    if let Err(e) = lazy_unmount_under(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "lazy unmount failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// Runs in [`bind_mount`] between the bind and its remount, on this thread only: a test
        /// uses it to open a file for writing through the new bind, which makes the kernel
        /// refuse the read-only remount (`EBUSY`), as a writer that got there first would.
        #[allow(clippy::type_complexity)]
        pub(super) static BEFORE_REMOUNT: RefCell<Option<Box<dyn FnMut(&Path)>>> =
            const { RefCell::new(None) };
    }

    #[test]
    fn a_read_only_bind_whose_remount_fails_never_stays_writable() {
        if !crate::is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the bind remount test: it needs root"
            );
            eprintln!("skipped: not root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (source, target) = (tmp.path().join("source"), tmp.path().join("target"));
        fs::create_dir(&source).unwrap();
        fs::create_dir(&target).unwrap();
        // A file held open for writing through the bind: the read-only remount fails with
        // EBUSY, and so does the plain unmount after it.
        let writer = std::rc::Rc::new(RefCell::new(None));
        let held = writer.clone();
        BEFORE_REMOUNT.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |target: &Path| {
                *held.borrow_mut() = Some(fs::File::create(target.join("open")).unwrap());
            }))
        });
        let result = bind_mount(&source, &target, &MountOptions::default(), true);
        BEFORE_REMOUNT.with(|hook| hook.borrow_mut().take());
        let left = is_mount_point(&target).unwrap();
        let ran = writer.borrow_mut().take().is_some();
        if left {
            rustix::mount::unmount(&target, UnmountFlags::DETACH).unwrap();
        }
        assert!(ran, "the hook ran");
        assert!(
            matches!(&result, Err(Error::Busy { path, .. }) if *path == target),
            "{result:?}"
        );
        assert!(
            !left,
            "a bind asked read-only stays on {}",
            target.display()
        );
    }

    #[test]
    fn a_malformed_option_is_refused_with_the_rule_it_breaks_on_one_short_line() {
        for (options, rule) in [
            (vec!["noatime,,ro"], "two commas in a row"),
            (vec![",noatime"], "two commas in a row"),
            (vec![""], "two commas in a row"),
            (vec!["no atime"], "white space"),
            (vec!["uid=1\n"], "white space"),
            (vec!["a\0b"], "NUL byte"),
        ] {
            let err = MountOptions::parse(&options).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(rule), "{options:?}: {msg}");
            assert!(
                !msg.contains('\n') && !msg.contains('\0'),
                "{options:?}: {msg}"
            );
        }
        // An entry of 10,000 characters is cut in the message, with its length.
        let long = format!("{},", "x".repeat(10_000));
        let err = MountOptions::parse([&long]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.len() < 500 && msg.contains("(10001 bytes)"), "{msg}");
        #[cfg(feature = "csi")]
        {
            let status = csi_types::CsiError::from(err);
            assert!(status.to_string().len() < 600, "{status}");
        }
    }

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            b"36 35 98:0 /mnt1 /mnt\\0402 ro,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mount_point, Path::new("/mnt 2"));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert!(m.read_only);
        assert_eq!(parse_mountinfo_line(b"garbage"), None);
        assert_eq!(unescape(b"a\\134b\\0"), "a\\b\\0");
        // Above 0o377 is not a byte: kept as written, never an overflow.
        assert_eq!(unescape(b"\\777\\400"), "\\777\\400");
    }

    #[test]
    fn mountinfo_keeps_paths_that_are_not_utf8_byte_for_byte() {
        use std::os::unix::ffi::OsStrExt;
        // The kernel writes every byte but space, tab, newline and backslash raw.
        let line = b"812 35 0:99 / /tmp/x/\xff\xfe\\040dir rw,relatime shared:9 - tmpfs t\xffmp rw,size=1024k";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/tmp/x/\xff\xfe dir");
        assert_eq!(m.source.as_bytes(), b"t\xffmp");
        assert_eq!(m.fs_type, "tmpfs");
        assert!(!m.read_only);
        // An error names such a mount on one line, escaped: a source with a line break (the
        // kernel writes it `\012`), a root that is not UTF-8.
        let line = b"813 35 0:99 /r\xff /tmp/y rw shared:9 - ext4 /dev/a\\012b rw";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(
            describe(&m),
            "\"/dev/a\\nb\" (ext4 at \"/r\\xFF\", read-write)"
        );
        // One such line among others spoils none of them.
        let table = [
            &b"1 0 8:1 / / rw - ext4 /dev/sda1 rw"[..],
            line,
            b"2 1 0:5 / /dev\\0111 rw - devtmpfs udev rw",
        ]
        .join(&b'\n');
        let points: Vec<PathBuf> = table
            .split(|&b| b == b'\n')
            .filter_map(parse_mountinfo_line)
            .map(|m| m.mount_point)
            .collect();
        assert_eq!(points.len(), 3);
        assert_eq!(points[2], Path::new("/dev\t1"));
    }

    #[test]
    fn resolve_appends_what_does_not_resolve_to_the_nearest_ancestor_that_does() {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        assert_eq!(
            resolve(&tmp.path().join("link")).unwrap(),
            base.join("real")
        );
        assert_eq!(
            resolve(&tmp.path().join("link/gone/deeper")).unwrap(),
            base.join("real/gone/deeper")
        );
        assert!(resolve(&tmp.path().join("gone/../real")).is_err());
        let rel = resolve(Path::new("no-such-dir-here")).unwrap();
        assert_eq!(rel, fs::canonicalize(".").unwrap().join("no-such-dir-here"));
    }

    #[test]
    fn options_sort_into_flags_and_data() {
        let o = MountOptions::parse(["noatime,discard", "ro", "errors=remount-ro"]).unwrap();
        assert!(o.is_read_only());
        assert_eq!(o.data(), ["discard", "errors=remount-ro"]);
        assert!(
            matches!(o.bind_flags(), Err(Error::BadMountOption { option, .. }) if option == "discard")
        );
        let o = MountOptions::parse(["nosuid", "nodev"]).unwrap();
        assert_eq!(
            o.bind_flags().unwrap(),
            MountFlags::NOSUID | MountFlags::NODEV
        );
        for bad in ["", "a b", "x,,y", "nul\0"] {
            assert!(MountOptions::parse([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_error_never_shows_the_value_of_a_mount_option() {
        let secret = "hunter2";
        let errors = [
            MountOptions::parse(["noatime", "password=hunter2"])
                .unwrap()
                .check_bindable()
                .unwrap_err(),
            MountOptions::parse(["user=me,pass word=hunter2"]).unwrap_err(),
            MountOptions::parse(["password=hunter2 "]).unwrap_err(),
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(!msg.contains(secret), "{msg}");
            assert!(msg.contains("=<hidden>"), "{msg}");
            #[cfg(feature = "csi")]
            {
                let status = csi_types::CsiError::from(err).to_string();
                assert!(!status.contains(secret), "{status}");
            }
        }
        assert_eq!(
            redacted("ro,errors=remount-ro,a=b=c"),
            "ro,errors=<hidden>,a=<hidden>"
        );
        // Nor does the options' Debug, which is what `{:?}` in a log line prints.
        let o = MountOptions::parse(["noatime", "password=hunter2", "discard"]).unwrap();
        let debug = format!("{o:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(
            debug.contains("password=<hidden>") && debug.contains("discard"),
            "{debug}"
        );
    }

    #[test]
    fn options_that_contradict_each_other_are_refused_naming_both() {
        for (first, second) in [
            ("ro", "rw"),
            ("rw", "ro"),
            ("noexec", "exec"),
            ("suid", "nosuid"),
            ("nodev", "dev"),
            ("noatime", "relatime"),
            ("strictatime", "noatime"),
            ("sync", "async"),
        ] {
            for options in [
                vec![first.to_string(), second.to_string()],
                vec![format!("{first},{second}")],
                vec![format!("{first},discard"), format!("noatime,{second}")],
            ] {
                let err = MountOptions::parse(&options).unwrap_err();
                let msg = err.to_string();
                assert!(
                    matches!(&err, Error::BadMountOption { option, .. } if option == second),
                    "{options:?}: {msg}"
                );
                assert!(msg.contains(&format!("{first:?}")), "{options:?}: {msg}");
            }
        }
        // The same option twice, and `defaults` with anything, are not contradictions.
        let o = MountOptions::parse(["ro,ro", "defaults", "ro", "nodiratime,noatime"]).unwrap();
        assert!(o.is_read_only());
        assert_eq!(
            o.bind_flags().unwrap(),
            MountFlags::RDONLY | MountFlags::NOATIME | MountFlags::NODIRATIME
        );
        // `async` is mount(8)'s default, a flag (not filesystem data) that a bind mount takes.
        let o = MountOptions::parse(["async", "rw"]).unwrap();
        assert!(!o.is_read_only());
        assert_eq!(o.bind_flags().unwrap(), MountFlags::empty());
    }

    #[test]
    fn a_flag_given_a_value_is_refused_as_the_kernel_would_read_it_as_the_flag() {
        for bad in [
            "ro=0",
            "rw=1",
            "sync=no",
            "noexec=",
            "lazytime=off",
            "posixacl=0",
        ] {
            let err = MountOptions::parse(["noatime", bad]).unwrap_err();
            let key = bad.split('=').next().unwrap();
            assert!(
                matches!(&err, Error::BadMountOption { option, .. } if *option == format!("{key}=<hidden>")),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("takes no value"), "{err}");
        }
        // A filesystem's own options with values stay data.
        let o = MountOptions::parse(["errors=remount-ro", "rodata=1"]).unwrap();
        assert_eq!(o.data(), ["errors=remount-ro", "rodata=1"]);
        assert!(!o.is_read_only());
    }

    use proptest::prelude::*;

    /// A path as the kernel writes it in mountinfo (`mangle` in fs/proc_namespace.c): space,
    /// tab, newline and backslash as three octal digits, every other byte as it is.
    fn kernel_escape(path: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in path {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
                out.extend_from_slice(format!("\\{b:03o}").as_bytes());
            } else {
                out.push(b);
            }
        }
        out
    }

    proptest::proptest! {
        /// Any mount point and source the kernel can write (any bytes but NUL) come back from
        /// the parser byte for byte, whatever the other fields hold.
        #[test]
        fn mountinfo_paths_come_back_byte_for_byte(
            point in proptest::collection::vec(1u8..=255, 1..40),
            root in proptest::collection::vec(1u8..=255, 1..20),
            source in proptest::collection::vec(1u8..=255, 1..20),
            optional in proptest::sample::select(vec!["", " shared:7", " master:1 propagate_from:2"]),
            ro in proptest::bool::ANY,
        ) {
            use std::os::unix::ffi::OsStrExt;
            let mut line = b"36 35 98:0 ".to_vec();
            line.extend(kernel_escape(&root));
            line.push(b' ');
            line.extend(kernel_escape(&point));
            line.extend_from_slice(if ro { b" ro,noatime" } else { b" rw,relatime" });
            line.extend_from_slice(optional.as_bytes());
            line.extend_from_slice(b" - ext4 ");
            line.extend(kernel_escape(&source));
            line.extend_from_slice(b" rw,errors=continue");
            let m = parse_mountinfo_line(&line).unwrap();
            prop_assert_eq!(m.mount_point.as_os_str().as_bytes(), &point[..]);
            prop_assert_eq!(m.root.as_os_str().as_bytes(), &root[..]);
            prop_assert_eq!(m.source.as_bytes(), &source[..]);
            prop_assert_eq!(m.fs_type, "ext4");
            prop_assert_eq!(m.read_only, ro);
        }

        /// Whatever the list, `parse` refuses it exactly when two options set one thing
        /// differently, and otherwise keeps every flag and every data option, in order.
        #[test]
        fn parse_refuses_exactly_the_contradictions(
            picks in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(FLAGS.iter().map(|f| f.0.to_string()).collect::<Vec<_>>()),
                    "[a-z]{1,6}(=[a-z0-9]{1,4})?",
                    "(ro|rw|sync|noexec|relatime|lazytime|posixacl)=[a-z0-9]{0,3}",
                ],
                0..8,
            ),
            joined in proptest::bool::ANY,
        ) {
            let entries = if joined && !picks.is_empty() { vec![picks.join(",")] } else { picks.clone() };
            let known = |o: &str| FLAGS.iter().find(|(n, ..)| *n == o);
            let contradiction = picks.iter().enumerate().any(|(i, a)| {
                picks[..i].iter().any(|b| {
                    matches!((known(a), known(b)), (Some((na, _, Some(sa))), Some((nb, _, Some(sb))))
                        if sa == sb && na != nb)
                })
            });
            let flag_with_value = picks.iter().any(|p| {
                p.split_once('=')
                    .is_some_and(|(k, _)| known(k).is_some() || KERNEL_SB_FLAGS.contains(&k))
            });
            match MountOptions::parse(&entries) {
                Err(e) => {
                    prop_assert!(contradiction || flag_with_value, "{entries:?}: {e}");
                    prop_assert!(matches!(e, Error::BadMountOption { .. }), "{}", e);
                }
                Ok(o) => {
                    prop_assert!(!contradiction && !flag_with_value, "{entries:?} accepted");
                    let data: Vec<&String> = picks.iter().filter(|p| known(p).is_none()).collect();
                    prop_assert_eq!(o.data().iter().collect::<Vec<_>>(), data);
                    let flags = picks
                        .iter()
                        .filter_map(|p| known(p).and_then(|(_, f, _)| *f))
                        .fold(MountFlags::empty(), |a, f| a | f);
                    prop_assert_eq!(o.flags, flags);
                    prop_assert_eq!(o.is_read_only(), picks.iter().any(|p| p == "ro"));
                }
            }
        }
    }
}
