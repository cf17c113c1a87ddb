//! Volume expansion on the node side.
//!
//! The composer advertises `VOLUME_EXPANSION_OFFLINE`: the controller grows
//! a volume while it is published nowhere (a slice grows in place on its
//! drive; a RAID volume may grow only within the bytes its members already
//! hold), and the next `NodeStageVolume` attaches the grown device. Growing
//! the filesystem then happens where it works:
//!
//! - ext4 grows *offline* at stage, before the mount (`e2fsck -f -p` and
//!   `resize2fs` on the unmounted device), because an online `resize2fs`
//!   needs the kernel's `CAP_SYS_RESOURCE`, which sandboxes often lack;
//! - XFS grows *online* in `NodeExpandVolume` (`xfs_growfs` on the staging
//!   mount): XFS cannot grow unmounted.
//!
//! A `NodeExpandVolume` whose device is still smaller than the volume (the
//! controller grew a staged volume: a loop device cannot change its size
//! limit while mounted) answers `FAILED_PRECONDITION` and changes nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use csi_types::CsiError;

/// Bytes the ext4 filesystem on `dev` spans (`dumpe2fs -h`), `None` when
/// `dev` holds no ext4.
fn ext4_bytes(dev: &Path) -> Result<Option<u64>, CsiError> {
    if csi_node::probe_filesystem(dev)
        .map_err(CsiError::from)?
        .as_deref()
        != Some("ext4")
    {
        return Ok(None);
    }
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(dev)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CsiError::internal(format!("running dumpe2fs: {e}")))?;
    if !out.status.success() {
        return Err(CsiError::internal(format!(
            "dumpe2fs -h {}: {}",
            storage_units::quote_path(dev),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("Block count:"), field("Block size:")) {
        (Some(n), Some(b)) => Ok(Some(n * b)),
        _ => Err(CsiError::internal(format!(
            "dumpe2fs -h {}: no block count or block size",
            storage_units::quote_path(dev)
        ))),
    }
}

/// Before the staging mount: grows an ext4 filesystem that is smaller than
/// its (grown) device, offline. Returns whether it grew.
pub(crate) fn grow_ext4_before_mount(dev: &Path) -> Result<bool, CsiError> {
    let Some(fs_bytes) = ext4_bytes(dev)? else {
        return Ok(false);
    };
    let dev_bytes = csi_node::block_device_size(dev).map_err(CsiError::from)?;
    // resize2fs rounds the new size down to whole blocks (of at most 64 KiB).
    if fs_bytes + (64 << 10) > dev_bytes {
        return Ok(false);
    }
    csi_node::resize_filesystem(dev).map_err(CsiError::from)?;
    tracing::info!(device = %dev.display(), from = fs_bytes, to = dev_bytes, "ext4 grown offline before the mount");
    Ok(true)
}

/// `NodeExpandVolume` on a staged volume whose device is `dev` (`block`:
/// staged for block access) and whose controller capacity is `capacity`:
/// grows the filesystem to the device. Returns the device's bytes.
pub(crate) fn expand_staged(
    id: &str,
    dev: &Path,
    block: bool,
    capacity: u64,
) -> Result<u64, CsiError> {
    let dev_bytes = csi_node::block_device_size(dev).map_err(CsiError::from)?;
    if dev_bytes < capacity {
        return Err(CsiError::failed_precondition(format!(
            "volume {id}: its device {} holds {dev_bytes} bytes, less than the volume's \
             {capacity}; the composer expands volumes offline (VOLUME_EXPANSION_OFFLINE): \
             unstage it and stage it again to attach the grown device",
            storage_units::quote_path(dev)
        )));
    }
    if !block {
        csi_node::resize_filesystem(dev).map_err(CsiError::from)?;
    }
    Ok(dev_bytes)
}
