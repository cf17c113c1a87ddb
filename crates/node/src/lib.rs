//! What a CSI node plugin does besides speaking CSI.
//!
//! Every node plugin formats and mounts devices, bind-mounts staging paths onto target paths
//! (read-only when asked), checks whether a path is a mount point, attaches files to loop
//! devices, grows filesystems after an expansion and reports volume statistics; a driver that
//! keeps volumes as files or directories also copies them for snapshots and clones, keeping
//! holes ([`copy_sparse`], [`copy_tree`]), and measures what they occupy ([`allocated_bytes`]). The Go ecosystem
//! shares this as `mount-utils`; this crate is the SDK's, used by the reference drivers, and
//! every failure it returns carries the CSI code a node plugin should answer with (feature
//! `csi`, on by default: `From<csi_node::Error> for csi_types::CsiError`).
//!
//! Mounts are made with the `mount(2)` system call (through `rustix`); formatting, probing and
//! resizing run the standard tools (`blkid`, `mkfs.ext4`/`mkfs.xfs`, `resize2fs`/`xfs_growfs`,
//! `losetup`, and `wipefs` after a `mkfs` killed half-way), whose absence is reported as a missing dependency, never guessed around. Each run
//! is bounded by the tool's timeout ([`Tool`]): a tool still running when it passes (on a hung
//! device) is killed with its process group, and the call fails with [`Error::Timeout`]. Nothing
//! here formats a device that already holds a filesystem or a partition table.
//!
//! ```no_run
//! use std::path::Path;
//! use csi_node::{FsType, MountOptions};
//!
//! # fn main() -> Result<(), csi_node::Error> {
//! // NodeStageVolume: format on first use, mount on the staging path (a retry does nothing).
//! let device = Path::new("/dev/disk/by-id/virtio-pv-1");
//! let staging = Path::new("/var/lib/kubelet/plugins/example/staging/pv-1");
//! csi_node::format_and_mount(device, staging, FsType::Ext4, &MountOptions::default())?;
//! // NodePublishVolume, read-only: a bind mount of the staging path, remounted read-only
//! // (a retry does nothing).
//! let target = Path::new("/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv-1/mount");
//! csi_node::bind_mount(staging, target, &MountOptions::parse(["noatime"])?, true)?;
//! assert!(csi_node::is_mount_point(target)?);
//! // NodeGetVolumeStats.
//! let stats = csi_node::filesystem_stats(target)?;
//! println!("{} of {} bytes free", stats.bytes_available, stats.bytes_total);
//! // NodeUnpublishVolume and NodeUnstageVolume: idempotent, nothing mounted is not an error;
//! // only the plugin's own mounts come off (someone's stacked on them is refused and stays).
//! csi_node::unmount_own(target, &[staging])?;
//! csi_node::unmount_own(staging, &[device])?;
//! # Ok(()) }
//! ```
//!
//! Mounting needs `CAP_SYS_ADMIN` (root); [`is_root`] tells. The tests run for real as root,
//! with loop devices and tmpfs.

mod data;
mod error;
mod format;
mod loopdev;
mod mount;
mod stats;
mod tool;

pub use data::{allocated_bytes, copy_sparse, copy_tree, sync_filesystem};
pub use error::Error;
pub use format::{FsType, format_and_mount, mkfs, probe_filesystem, resize_filesystem};
pub use loopdev::{AttachOptions, LoopDevice};
pub use mount::{
    MountEntry, MountOptions, bind_mount, create_file_target, is_mount_point, lazy_unmount_under,
    mount_table, mounts_under, release_under, remount_readonly, unmount, unmount_all, unmount_own,
};
pub use stats::{FsStats, block_device_size, filesystem_stats};
pub use tool::Tool;
pub(crate) use tool::{run, run_with_cleanup};

/// Whether the effective user is root (mounts and loop devices need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `path` as an argument of a command line: a relative path that begins with `-` (a file
/// named `-D` in the working directory) is written `./-D`, so that no tool takes it for an
/// option (`losetup -f --show -D` would ask to detach every loop device).
pub(crate) fn path_arg(path: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().first() == Some(&b'-') {
        std::path::Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
