//! Volume statistics for NodeGetVolumeStats.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::Path;

use crate::Error;

/// Space and inodes of the filesystem holding a path (`statvfs(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// Size of the filesystem.
    pub bytes_total: u64,
    /// Bytes an unprivileged writer can still use.
    pub bytes_available: u64,
    /// Bytes in use (total − free, so reserved blocks count as neither used nor available).
    pub bytes_used: u64,
    /// Inodes in all.
    pub inodes_total: u64,
    /// Inodes an unprivileged writer can still use.
    pub inodes_free: u64,
    /// Inodes in use.
    pub inodes_used: u64,
}

/// Space and inodes of the filesystem holding `path`. A block device (a block volume's publish
/// target) is refused: `statvfs` would answer for the filesystem its device node lies on
/// (`devtmpfs`), not for the volume; its size is [`block_device_size`].
pub fn filesystem_stats(path: &Path) -> Result<FsStats, Error> {
    use std::os::unix::fs::FileTypeExt;
    if fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()) {
        return Err(Error::io(
            "statvfs",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a block device holds no mounted filesystem here: statvfs would describe the \
                 filesystem its node lies on; use block_device_size for a block volume",
            ),
        ));
    }
    let s = rustix::fs::statvfs(path).map_err(|e| Error::errno("statvfs", path, e))?;
    let block = s.f_frsize;
    Ok(FsStats {
        bytes_total: s.f_blocks.saturating_mul(block),
        bytes_available: s.f_bavail.saturating_mul(block),
        bytes_used: s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(block),
        inodes_total: s.f_files,
        inodes_free: s.f_favail,
        inodes_used: s.f_files.saturating_sub(s.f_ffree),
    })
}

/// The size in bytes of a block device (or of a regular file) at `path`; anything else (a
/// directory, whose "size" a seek would make up) is refused, naming it.
pub fn block_device_size(path: &Path) -> Result<u64, Error> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path)
        .map_err(|e| Error::io("stat", path, e))?
        .file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(Error::io(
            "size of",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither a block device nor a regular file",
            ),
        ));
    }
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io("seek", path, e))
}
