//! The crate's one error type and its CSI codes.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use storage_units::quote_path;

/// A command line as a message shows it: each word as [`quote_path`] shows a path (a long
/// device or file path keeps its head and its tail, an odd one is escaped), and quoted when
/// it holds white space, so that the words stay apart.
fn shown_command(words: &[OsString]) -> String {
    words
        .iter()
        .map(|w| {
            let shown = quote_path(Path::new(w));
            if !shown.starts_with('"') && shown.contains(char::is_whitespace) {
                format!("{shown:?}")
            } else {
                shown
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` (a tool's standard error) as one line: each run of white space that holds a line break
/// becomes one space, and what passes 1024 characters is cut by [`storage_units::shorten`],
/// with the length in bytes of that line (the text the message stands for, as everywhere else
/// a message is cut).
fn one_line(text: &str) -> String {
    let line = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    storage_units::shorten(&line, 1024).into_owned()
}

/// Most characters of a mount option a message shows.
pub(crate) const OPTION_SHOWN_CHARS: usize = 256;

/// Why a node operation failed.
///
/// Each message is one line and names the path it is about as [`storage_units::quote_path`]
/// shows it: as it is when it is plain, quoted and escaped when it is empty, holds a control
/// character or is not UTF-8 (`""`, `"/a\nb"`, `"/bad\xFFname"`), and, when longer than 256
/// characters, cut in the middle with its length in bytes, keeping its first 64 and last 128
/// characters. The words of a tool's command line are shown by the same rule, and its standard
/// error is joined into one line and cut after 1024 characters. The fields keep everything
/// whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path the operation needs does not exist.
    #[error("{path_shown} does not exist", path_shown = quote_path(path))]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A mount option the operation cannot apply.
    #[error(
        "mount option {} is not supported: {rule}",
        storage_units::quote_within(option, OPTION_SHOWN_CHARS)
    )]
    BadMountOption {
        /// The option as given, with the value of a `key=value` option shown as `<hidden>`:
        /// `mount_flags` MAY carry secrets, which CSI says must not leak.
        option: String,
        /// Which options are accepted here.
        rule: String,
    },
    /// The device already holds a filesystem of another type, or a partition table; it is never
    /// formatted over.
    #[error("{device_shown} holds {found}, not {wanted}; it is not formatted over", device_shown = quote_path(device))]
    FilesystemMismatch {
        /// The device.
        device: PathBuf,
        /// What `blkid` found on it: a filesystem type (`ext4`) or a partition table (`a gpt
        /// partition table`), as [`crate::probe_filesystem`] says.
        found: String,
        /// What was asked for.
        wanted: String,
    },
    /// The device holds a filesystem the crate does not grow (only ext4 and XFS).
    #[error("{device_shown} holds {found}, which is not grown here (ext4 and xfs are)", device_shown = quote_path(device))]
    CannotGrow {
        /// The device.
        device: PathBuf,
        /// What `blkid` found on it, as [`crate::probe_filesystem`] says.
        found: String,
    },
    /// The operation needs a mount that is not there.
    #[error("{path_shown} is not mounted: {why}", path_shown = quote_path(path))]
    NotMounted {
        /// The device or path.
        path: PathBuf,
        /// Why it has to be.
        why: String,
    },
    /// The path already has a mount other than the one asked for; nothing is mounted over it.
    #[error("{path_shown} already has {mounted} mounted on it, not {wanted}; nothing is mounted over it", path_shown = quote_path(path))]
    AlreadyMounted {
        /// The mount point.
        path: PathBuf,
        /// What is mounted there (source, filesystem type, mode).
        mounted: String,
        /// What was to be mounted there.
        wanted: String,
    },
    /// A mount on the path that the caller did not make (see [`crate::unmount_own`]); it is
    /// left mounted.
    #[error(
        "{path_shown} has {mounted} mounted on it, which is none of the mounts this call removes; it \
         is left mounted: whoever mounted it unmounts it, or use another path", path_shown = quote_path(path))]
    ForeignMount {
        /// The mount point.
        path: PathBuf,
        /// What is mounted there (source, filesystem type, mode).
        mounted: String,
    },
    /// A mount target that is a symbolic link: the mount would land on what it points to.
    #[error(
        "{path_shown} is a symbolic link; nothing is mounted on it, as the mount would land on what it points to", path_shown = quote_path(path))]
    SymbolicLink {
        /// The link.
        path: PathBuf,
    },
    /// A blank device that was to be mounted read-only or grown: there is nothing to mount.
    #[error("{device_shown} holds no filesystem (it is formatted only by a writable mount)", device_shown = quote_path(device))]
    Unformatted {
        /// The device.
        device: PathBuf,
    },
    /// A filesystem type the crate does not format, mount or resize.
    #[error("filesystem type {0:?} is not supported (use ext4 or xfs)")]
    UnsupportedFilesystem(String),
    /// The kernel refused the operation for lack of privilege (`EPERM`): mounting and loop
    /// devices need `CAP_SYS_ADMIN`, so the node plugin must run as root.
    #[error(
        "{op} {path_shown}: operation not permitted; the node plugin must run as root (mounts and loop devices need CAP_SYS_ADMIN)", path_shown = quote_path(path))]
    NotPermitted {
        /// The operation (`mount`, `bind mount`, …).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
    },
    /// A program the operation runs is not installed.
    #[error(
        "`{}` is not installed on this node (a required dependency)",
        quote_path(Path::new(tool))
    )]
    MissingTool {
        /// The program.
        tool: String,
    },
    /// The path is in use (mounted, open) and cannot be changed now.
    #[error("{path_shown} is busy: {source}", path_shown = quote_path(path))]
    Busy {
        /// The busy path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("`{}` failed ({status}): {}", shown_command(command), one_line(stderr))]
    Command {
        /// The command line, whole: the program and each of its arguments (the message shows
        /// each as [`storage_units::quote_path`] does, quoted when it holds white space).
        command: Vec<OsString>,
        /// Its exit status.
        status: String,
        /// What it printed on standard error, whole (the message makes it one line and cuts it
        /// after 1024 characters).
        stderr: String,
    },
    /// A program ran longer than its timeout ([`crate::Tool::timeout`]) and was killed with its
    /// process group: the device it works on is most likely hung.
    #[error(
        "`{}` did not finish within {waited:.1?} and was killed (process group {pid}{}); \
         the device it works on may be hung: check it and the kernel log (`dmesg`), then retry, \
         or allow it longer with `Tool::{tool:?}.set_timeout`",
        shown_command(command),
        if *exited { "" } else { ", still blocked in the kernel" }
    )]
    Timeout {
        /// The command line, whole, as in [`Error::Command`].
        command: Vec<OsString>,
        /// The tool it ran.
        tool: crate::Tool,
        /// How long it ran before it was killed.
        waited: std::time::Duration,
        /// Its process id, which is also its process group's.
        pid: u32,
        /// Whether it, and every other process of its group, has died since (a process
        /// blocked in the kernel on a hung device dies only once the kernel lets it go, and
        /// may write to the device until then).
        exited: bool,
    },
    /// The device is being formatted by a `mkfs` of this process, or one killed at its timeout
    /// while blocked in the kernel has not died yet and may still write to it: nothing probes
    /// or formats it until that `mkfs` is gone and the signatures it wrote are erased (see
    /// [`crate::mkfs`]). Retry later.
    #[error(
        "{device_shown} is being formatted by {}: retry later{}",
        match pid {
            Some(pid) => format!(
                "a mkfs (pid {pid}) killed at its timeout and still blocked in the kernel, which \
                 may still write to it; nothing probes or formats it until that mkfs has died \
                 and what it wrote is erased"
            ),
            None => "a mkfs of this process now; nothing else probes or formats it until that \
                     mkfs ends"
                .to_string(),
        },
        if pid.is_some() { " (if it stays blocked, check the device and `dmesg`)" } else { "" },
        device_shown = quote_path(device)
    )]
    FormatPending {
        /// The device.
        device: PathBuf,
        /// The killed `mkfs`'s process id, when it was killed at its timeout; `None` while a
        /// `mkfs` of the device is running.
        pid: Option<u32>,
    },
    /// A bind mount whose remount failed and which could not be taken off again: it stays on
    /// the path with the flags of the mount it was made from (writable, where read-only may
    /// have been asked), until someone unmounts it.
    #[error(
        "the remount of the bind on {path_shown} failed ({failed}) and the bind could not be taken \
         off again (unmount: {unmount}; lazy detach: {detach}), so it is still mounted, with \
         other flags than asked: unmount it before the path is used", path_shown = quote_path(path))]
    BindLeft {
        /// The mount point.
        path: PathBuf,
        /// Why the bind's remount failed.
        failed: Box<Error>,
        /// What the kernel said to the unmount.
        unmount: io::Error,
        /// What the kernel said to the lazy detach after it.
        detach: io::Error,
    },
    /// A system call failed.
    #[error("{op} {path_shown}: {source}", path_shown = quote_path(path))]
    Io {
        /// The operation (`mount`, `statvfs`, …).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
}

impl Error {
    /// An I/O failure of `op` on `path`, sorted into [`Error::NotFound`], [`Error::Busy`] and
    /// [`Error::NotPermitted`] where the kernel's answer means that.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(code) if code == rustix::io::Errno::NOENT.raw_os_error() => {
                Error::NotFound { path }
            }
            Some(code) if code == rustix::io::Errno::BUSY.raw_os_error() => {
                Error::Busy { path, source }
            }
            Some(code) if code == rustix::io::Errno::PERM.raw_os_error() => {
                Error::NotPermitted { op, path }
            }
            _ => Error::Io { op, path, source },
        }
    }

    /// From a `rustix` errno.
    pub(crate) fn errno(op: &'static str, path: impl Into<PathBuf>, e: rustix::io::Errno) -> Self {
        Self::io(op, path, e.into())
    }
}

/// The code a node plugin answers each failure with (CSI v1.12, "Node Service RPC" errors):
///
/// | failure | code | why |
/// |---|---|---|
/// | [`NotFound`](Error::NotFound) | NOT_FOUND | the volume's path or device does not exist |
/// | [`BadMountOption`](Error::BadMountOption) | INVALID_ARGUMENT | names `volume_capability.mount.mount_flags` |
/// | [`FilesystemMismatch`](Error::FilesystemMismatch) | FAILED_PRECONDITION | the volume cannot serve the capability asked for ("exceeds capabilities") |
/// | [`Unformatted`](Error::Unformatted) | FAILED_PRECONDITION | a read-only stage of a blank volume |
/// | [`AlreadyMounted`](Error::AlreadyMounted) | ALREADY_EXISTS | the staging path has another volume or mode mounted ("Volume published but is incompatible", NodeStageVolume) |
/// | [`NotMounted`](Error::NotMounted) | FAILED_PRECONDITION | e.g. growing an unmounted XFS |
/// | [`CannotGrow`](Error::CannotGrow) | FAILED_PRECONDITION | the volume holds a filesystem the node cannot grow (not a field of the request) |
/// | [`ForeignMount`](Error::ForeignMount) | FAILED_PRECONDITION | someone else's mount is stacked on the path; the call cannot complete until it is gone |
/// | [`SymbolicLink`](Error::SymbolicLink) | FAILED_PRECONDITION | a staging or target path that is a symbolic link |
/// | [`UnsupportedFilesystem`](Error::UnsupportedFilesystem) | INVALID_ARGUMENT | names `volume_capability.mount.fs_type` |
/// | [`MissingTool`](Error::MissingTool) | FAILED_PRECONDITION | a missing required dependency, as for Probe |
/// | [`Busy`](Error::Busy) | FAILED_PRECONDITION | in use |
/// | [`NotPermitted`](Error::NotPermitted) | FAILED_PRECONDITION | the plugin lacks the privilege to mount (a deployment error, not the volume's) |
/// | [`FormatPending`](Error::FormatPending) | ABORTED | "operation pending for volume": a `mkfs` of the device is running, or killed and not dead yet; the CO retries with backoff |
/// | [`Timeout`](Error::Timeout) | DEADLINE_EXCEEDED | a tool hung and was killed: the CO retries, and kubelet keeps the volume's state "uncertain" (the tool may have done part of its work) until a call succeeds |
/// | [`Command`](Error::Command), [`Io`](Error::Io), [`BindLeft`](Error::BindLeft) | INTERNAL | the node could not do its part |
#[cfg(feature = "csi")]
impl From<Error> for csi_types::CsiError {
    fn from(e: Error) -> Self {
        use csi_types::CsiError;
        match &e {
            Error::NotFound { .. } => CsiError::not_found(e.to_string()),
            Error::AlreadyMounted { .. } => CsiError::already_exists(e.to_string()),
            Error::BadMountOption { option, rule } => CsiError::invalid(
                "volume_capability.mount.mount_flags",
                format!(
                    "{} is not supported: {rule}",
                    storage_units::quote_within(option, OPTION_SHOWN_CHARS)
                ),
            ),
            Error::UnsupportedFilesystem(fs) => CsiError::invalid(
                "volume_capability.mount.fs_type",
                format!("{fs:?} is not supported (use ext4 or xfs)"),
            ),
            Error::FilesystemMismatch { .. }
            | Error::Unformatted { .. }
            | Error::NotMounted { .. }
            | Error::CannotGrow { .. }
            | Error::SymbolicLink { .. }
            | Error::ForeignMount { .. }
            | Error::MissingTool { .. }
            | Error::Busy { .. }
            | Error::NotPermitted { .. } => CsiError::failed_precondition(e.to_string()),
            Error::FormatPending { .. } => CsiError::aborted(e.to_string()),
            Error::Timeout { .. } => CsiError::DeadlineExceeded(e.to_string()),
            Error::Command { .. } | Error::Io { .. } | Error::BindLeft { .. } => {
                CsiError::internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod shown_tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn a_plain_path_is_shown_as_it_is_and_any_other_quoted_on_one_line() {
        let plain = "/var/lib/kubelet/pods/0f3c/volumes/kubernetes.io~csi/pvc-1/mount";
        let shown = |p: &Path| Error::NotFound { path: p.into() }.to_string();
        assert_eq!(shown(Path::new(plain)), format!("{plain} does not exist"));
        assert_eq!(shown(Path::new("")), "\"\" does not exist");
        assert_eq!(shown(Path::new("/a\nb")), "\"/a\\nb\" does not exist");
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/bad\xffname"));
        assert_eq!(shown(bad), "\"/bad\\xFFname\" does not exist");
    }

    #[test]
    fn a_long_path_keeps_the_volume_and_the_last_component_in_every_message() {
        // A kubelet target below a deep root (a node whose kubelet root is long): the part
        // that tells two volumes apart is at the end.
        let root = format!("/{}", "r".repeat(300));
        let target = format!(
            "{root}/pods/0f3c5a1e-7b2d-4c8e-9f10-2a3b4c5d6e7f/volumes/kubernetes.io~csi/\
             pvc-8d9e0f1a-2b3c-4d5e-8f60-718293a4b5c6/mount"
        );
        let msg = Error::NotFound {
            path: target.clone().into(),
        }
        .to_string();
        assert!(
            msg.contains("pvc-8d9e0f1a-2b3c-4d5e-8f60-718293a4b5c6/mount\""),
            "{msg}"
        );
        assert!(msg.contains(&format!("({} bytes)", target.len())), "{msg}");
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn each_word_of_a_command_line_is_shown_by_the_path_rule() {
        let device = format!("/dev/disk/by-id/{}-part1", "d".repeat(400));
        let err = Error::Command {
            command: ["mkfs.ext4", "-L", "my label", "", &device]
                .map(OsString::from)
                .to_vec(),
            status: "exit status: 1".into(),
            stderr: "no".into(),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("`mkfs.ext4 -L \"my label\" \"\" \"/dev/disk/by-id/dd"),
            "{msg}"
        );
        assert!(
            msg.contains("dd-part1\"` failed (exit status: 1): no"),
            "{msg}"
        );
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn a_missing_program_is_shown_by_the_path_rule() {
        let program = format!("/opt/{}/bin/mkfs.xfs", "v".repeat(400));
        let msg = Error::MissingTool { tool: program }.to_string();
        assert!(msg.starts_with("`\"/opt/vvv"), "{msg}");
        assert!(
            msg.contains("vvv/bin/mkfs.xfs\"` is not installed"),
            "{msg}"
        );
        assert!(msg.len() < 400, "{msg}");
        let msg = Error::MissingTool {
            tool: "blkid".into(),
        }
        .to_string();
        assert_eq!(
            msg,
            "`blkid` is not installed on this node (a required dependency)"
        );
    }

    #[test]
    fn a_tools_standard_error_is_shown_on_one_line() {
        let err = Error::Command {
            command: ["mkfs.ext4", "/dev/x"].map(OsString::from).to_vec(),
            status: "exit status: 1".into(),
            stderr: "mkfs.ext4: Device size reported to be zero.  Invalid partition specified, or\n\tpartition table wasn't reread\n".into(),
        };
        assert_eq!(
            err.to_string(),
            "`mkfs.ext4 /dev/x` failed (exit status: 1): mkfs.ext4: Device size reported to be \
             zero.  Invalid partition specified, or partition table wasn't reread"
        );
        let err = Error::Command {
            command: vec!["x".into()],
            status: "exit status: 1".into(),
            stderr: "e\n".repeat(3000),
        };
        let msg = err.to_string();
        // The line's length, 3000 `e`s and the 2999 spaces between them, as
        // `storage_units::shorten` says it (not the raw 6000 bytes).
        let line = vec!["e"; 3000].join(" ");
        assert_eq!(
            msg,
            format!(
                "`x` failed (exit status: 1): {}",
                storage_units::shorten(&line, 1024)
            )
        );
        assert!(msg.ends_with("… (5999 bytes)") && msg.len() < 1200, "{msg}");
    }
}

#[cfg(all(test, feature = "csi"))]
mod tests {
    use super::*;

    #[test]
    fn a_bind_left_behind_names_the_remount_and_both_unmounts() {
        let errno = |e: rustix::io::Errno| io::Error::from_raw_os_error(e.raw_os_error());
        let err = Error::BindLeft {
            path: "/mnt/target".into(),
            failed: Box::new(Error::io(
                "remount",
                "/mnt/target",
                errno(rustix::io::Errno::BUSY),
            )),
            unmount: errno(rustix::io::Errno::BUSY),
            detach: errno(rustix::io::Errno::INVAL),
        };
        let status = csi_types::CsiError::from(err);
        assert_eq!(status.code(), csi_types::Code::Internal);
        let msg = status.to_string();
        for part in [
            "remount",
            "/mnt/target",
            "still mounted",
            "lazy detach",
            "Invalid argument",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
    }

    #[test]
    fn eperm_says_the_plugin_must_run_as_root() {
        let eperm = io::Error::from_raw_os_error(rustix::io::Errno::PERM.raw_os_error());
        let err = Error::io("bind mount", "/mnt/target", eperm);
        assert!(
            matches!(
                err,
                Error::NotPermitted {
                    op: "bind mount",
                    ..
                }
            ),
            "{err}"
        );
        let status = csi_types::CsiError::from(err);
        assert_eq!(status.code(), csi_types::Code::FailedPrecondition);
        assert!(status.to_string().contains("must run as root"), "{status}");
        assert!(status.to_string().contains("/mnt/target"), "{status}");
    }
}
