//! The SnapshotMetadata service (alpha) for block snapshots: which byte
//! ranges of a snapshot's image hold data (`GetMetadataAllocated`, from the
//! image's extents via `SEEK_DATA`/`SEEK_HOLE`), and which ranges differ
//! between two snapshots of one volume (`GetMetadataDelta`, by comparing the
//! images over the union of their extents in 64 KiB chunks). Both answer
//! variable-length ranges in ascending, non-overlapping order, at most
//! `max_results` (default 256) per streamed message.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use csi_types::{
    CsiError,
    ids::SnapshotId,
    snapshot_metadata::{
        BlockMetadata, BlockMetadataResponse, BlockMetadataType, GetMetadataAllocatedRequest,
        GetMetadataDeltaRequest,
    },
};

use crate::driver::Inner;
use crate::state::io_err;

/// Ranges per message when the request does not say.
const DEFAULT_RESULTS: usize = 256;

/// The unit in which two images are compared.
const CHUNK: u64 = 64 << 10;

/// The data extents of `file` within `[from, end)`, as `(offset, length)`.
fn extents(file: &File, from: u64, end: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < end {
        let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA on this filesystem: everything counts as data.
            Err(_) => {
                out.push((pos, end - pos));
                break;
            }
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data)).unwrap_or(end);
        let stop = hole.min(end);
        out.push((data, stop - data));
        pos = stop.max(data + 1);
    }
    Ok(out)
}

/// Sorted, merged union of two extent lists.
fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (off, len) in all {
        match out.last_mut() {
            Some((o, l)) if off <= *o + *l => *l = (*l).max(off + len - *o),
            _ => out.push((off, len)),
        }
    }
    out
}

/// Appends a range, merging it with the previous one when they touch.
fn push_merged(out: &mut Vec<(u64, u64)>, off: u64, len: u64) {
    match out.last_mut() {
        Some((o, l)) if *o + *l == off => *l += len,
        _ => out.push((off, len)),
    }
}

/// Splits ranges into stream messages of at most `max` ranges.
fn messages(
    ranges: Vec<(u64, u64)>,
    capacity: u64,
    max: Option<u32>,
) -> Vec<BlockMetadataResponse> {
    let max = max
        .map(|m| m as usize)
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_RESULTS);
    ranges
        .chunks(max)
        .map(|c| BlockMetadataResponse {
            block_metadata_type: BlockMetadataType::VariableLength,
            volume_capacity_bytes: capacity,
            block_metadata: c
                .iter()
                .map(|&(byte_offset, size_bytes)| BlockMetadata {
                    byte_offset,
                    size_bytes,
                })
                .collect(),
        })
        .collect()
}

impl Inner {
    /// The image and size of a block snapshot.
    fn block_snapshot(
        &self,
        field: &str,
        id: &SnapshotId,
    ) -> Result<(PathBuf, u64, String), CsiError> {
        let store = self.lock();
        let s = store.state.snapshots.get(id.as_str()).ok_or_else(|| {
            CsiError::not_found(format!("snapshot {:?} does not exist", id.as_str()))
        })?;
        if !s.block {
            return Err(CsiError::invalid(
                field,
                format!(
                    "snapshot {id} is of a mount volume; block metadata exists only for block snapshots"
                ),
            ));
        }
        Ok((
            store.layout.snapshot_path(id.as_str(), true),
            s.size,
            s.source_volume.clone(),
        ))
    }

    pub fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<Vec<BlockMetadataResponse>, CsiError> {
        let (path, size, _) = self.block_snapshot("snapshot_id", &req.snapshot_id)?;
        if req.starting_offset > size {
            return Err(CsiError::out_of_range(format!(
                "starting_offset {} is past the end of the {size}-byte snapshot",
                req.starting_offset
            )));
        }
        let f = File::open(&path).map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        let ranges = extents(&f, req.starting_offset, size)
            .map_err(|e| io_err(format!("reading the extents of {}", path.display()), e))?;
        Ok(messages(ranges, size, req.max_results))
    }

    pub fn get_metadata_delta(
        &self,
        req: GetMetadataDeltaRequest,
    ) -> Result<Vec<BlockMetadataResponse>, CsiError> {
        let (base_path, base_size, base_vol) =
            self.block_snapshot("base_snapshot_id", &req.base_snapshot_id)?;
        let (path, size, vol) =
            self.block_snapshot("target_snapshot_id", &req.target_snapshot_id)?;
        if base_vol != vol {
            return Err(CsiError::invalid(
                "base_snapshot_id",
                format!(
                    "snapshots {} and {} are of different volumes ({base_vol} and {vol})",
                    req.base_snapshot_id, req.target_snapshot_id
                ),
            ));
        }
        if req.starting_offset > size {
            return Err(CsiError::out_of_range(format!(
                "starting_offset {} is past the end of the {size}-byte snapshot",
                req.starting_offset
            )));
        }
        let open =
            |p: &PathBuf| File::open(p).map_err(|e| io_err(format!("opening {}", p.display()), e));
        let (base, target) = (open(&base_path)?, open(&path)?);
        let io = |e| {
            io_err(
                format!("comparing {} with {}", base_path.display(), path.display()),
                e,
            )
        };
        let start = req.starting_offset;
        let candidates = union(
            &extents(&base, start, base_size.min(size)).map_err(io)?,
            &extents(&target, start, size).map_err(io)?,
        );
        let mut changed = Vec::new();
        let (mut a, mut b) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
        for (off, len) in candidates {
            let mut pos = off;
            while pos < off + len {
                let n = CHUNK.min(off + len - pos);
                let (a, b) = (&mut a[..n as usize], &mut b[..n as usize]);
                read_zero_padded(&base, pos, a).map_err(io)?;
                read_zero_padded(&target, pos, b).map_err(io)?;
                if a != b {
                    push_merged(&mut changed, pos, n);
                }
                pos += n;
            }
        }
        Ok(messages(changed, size, req.max_results))
    }
}

/// Reads `buf.len()` bytes at `offset`; bytes past the end of the file are zeros.
fn read_zero_padded(f: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlapping_and_touching_extents() {
        assert_eq!(
            union(&[(0, 10), (20, 5)], &[(5, 10), (25, 5), (40, 1)]),
            vec![(0, 15), (20, 10), (40, 1)]
        );
        assert_eq!(union(&[], &[]), vec![]);
    }

    #[test]
    fn messages_respect_max_results() {
        let ranges: Vec<(u64, u64)> = (0..5).map(|i| (i * 10, 5)).collect();
        let m = messages(ranges.clone(), 100, Some(2));
        assert_eq!(
            m.iter().map(|m| m.block_metadata.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(messages(ranges, 100, None).len(), 1);
    }
}
