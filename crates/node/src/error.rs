//! The crate's one error type and its CSI codes.

use std::io;
use std::path::PathBuf;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path the operation needs does not exist.
    #[error("{path} does not exist")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A mount option the operation cannot apply.
    #[error("mount option {option:?} is not supported: {rule}")]
    BadMountOption {
        /// The option as given, with the value of a `key=value` option shown as `<hidden>`:
        /// `mount_flags` MAY carry secrets, which CSI says must not leak.
        option: String,
        /// Which options are accepted here.
        rule: String,
    },
    /// The device already holds a filesystem of another type, or a partition table; it is never
    /// formatted over.
    #[error("{device} holds {found}, not {wanted}; it is not formatted over")]
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
    #[error("{device} holds {found}, which is not grown here (ext4 and xfs are)")]
    CannotGrow {
        /// The device.
        device: PathBuf,
        /// What `blkid` found on it, as [`crate::probe_filesystem`] says.
        found: String,
    },
    /// The operation needs a mount that is not there.
    #[error("{path} is not mounted: {why}")]
    NotMounted {
        /// The device or path.
        path: PathBuf,
        /// Why it has to be.
        why: String,
    },
    /// The path already has a mount other than the one asked for; nothing is mounted over it.
    #[error("{path} already has {mounted} mounted on it, not {wanted}; nothing is mounted over it")]
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
        "{path} has {mounted} mounted on it, which is none of the mounts this call removes; it \
         is left mounted: whoever mounted it unmounts it, or use another path"
    )]
    ForeignMount {
        /// The mount point.
        path: PathBuf,
        /// What is mounted there (source, filesystem type, mode).
        mounted: String,
    },
    /// A mount target that is a symbolic link: the mount would land on what it points to.
    #[error(
        "{path} is a symbolic link; nothing is mounted on it, as the mount would land on what it points to"
    )]
    SymbolicLink {
        /// The link.
        path: PathBuf,
    },
    /// A blank device that was to be mounted read-only or grown: there is nothing to mount.
    #[error("{device} holds no filesystem (it is formatted only by a writable mount)")]
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
        "{op} {path}: operation not permitted; the node plugin must run as root (mounts and loop devices need CAP_SYS_ADMIN)"
    )]
    NotPermitted {
        /// The operation (`mount`, `bind mount`, …).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
    },
    /// A program the operation runs is not installed.
    #[error("`{tool}` is not installed on this node (a required dependency)")]
    MissingTool {
        /// The program.
        tool: String,
    },
    /// The path is in use (mounted, open) and cannot be changed now.
    #[error("{path} is busy: {source}")]
    Busy {
        /// The busy path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A program ran longer than its timeout ([`crate::Tool::timeout`]) and was killed with its
    /// process group: the device it works on is most likely hung.
    #[error(
        "`{command}` did not finish within {waited:.1?} and was killed (process group {pid}{}); \
         the device it works on may be hung: check it and the kernel log (`dmesg`), then retry, \
         or allow it longer with `Tool::{tool:?}.set_timeout`",
        if *exited { "" } else { ", still blocked in the kernel" }
    )]
    Timeout {
        /// The command line.
        command: String,
        /// The tool it ran.
        tool: crate::Tool,
        /// How long it ran before it was killed.
        waited: std::time::Duration,
        /// Its process id, which is also its process group's.
        pid: u32,
        /// Whether it has exited since (a process blocked in the kernel on a hung device dies
        /// only once the kernel lets it go).
        exited: bool,
    },
    /// A bind mount whose remount failed and which could not be taken off again: it stays on
    /// the path with the flags of the mount it was made from (writable, where read-only may
    /// have been asked), until someone unmounts it.
    #[error(
        "the remount of the bind on {path} failed ({failed}) and the bind could not be taken \
         off again (unmount: {unmount}; lazy detach: {detach}), so it is still mounted, with \
         other flags than asked: unmount it before the path is used"
    )]
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
    #[error("{op} {path}: {source}")]
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
                format!("{option:?} is not supported: {rule}"),
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
            Error::Timeout { .. } => CsiError::DeadlineExceeded(e.to_string()),
            Error::Command { .. } | Error::Io { .. } | Error::BindLeft { .. } => {
                CsiError::internal(e.to_string())
            }
        }
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
