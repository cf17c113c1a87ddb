//! SnapshotMetadata cases (an alpha service, advertised by the plugin
//! capability `SNAPSHOT_METADATA_SERVICE`): `GetMetadataAllocated` and
//! `GetMetadataDelta` of snapshots of a `BLOCK` volume.
//!
//! The spec's rules checked across the whole stream: `block_metadata_type`
//! and `volume_capacity_bytes` are the same in every message; ranges are in
//! strictly ascending order and do not overlap, also across messages; no
//! message holds more than `max_results` ranges; the first range ends after
//! `starting_offset`. This suite adds that every range lies within the
//! volume. Errors: `NOT_FOUND` for an unknown snapshot id, `OUT_OF_RANGE`
//! for a `starting_offset` past the volume's size, and `INVALID_ARGUMENT` (or
//! `NOT_FOUND`) for a delta whose target is a snapshot of another volume than
//! the base's (the spec: "a second snapshot in the same volume").
//!
//! `GetMetadataDelta` may also answer `FAILED_PRECONDITION` for snapshots
//! that exist: the spec's "Changed block tracking is not enabled", where the
//! CO falls back to a full backup. The delta's range case then skips, naming
//! the answer, and the delta's error cases pass with a warning (their own
//! code is preferred, but the storage cannot compute any delta).
//!
//! When the node publishes the volume as a block device, the harness also
//! writes a few blocks into it (before the snapshot for
//! `GetMetadataAllocated`, between the two snapshots for `GetMetadataDelta`)
//! and checks that the ranges returned cover them. Otherwise (no node, or a
//! target that is a regular file, as the memdriver's) only the rules above
//! are checked, and an empty stream passes them.

use csi_types::api::RawStream;
use csi_types::capabilities::ControllerCapabilities as CC;
use csi_types::{
    Code, CsiError,
    capabilities::PluginCapabilities,
    proto,
    snapshot_metadata::{BlockMetadata, BlockMetadataResponse},
    types::Volume,
};
use futures::StreamExt;

use super::controller::wait_ready;
use super::node::unstage_unpublish_order;
use super::{Case, block, case};
use crate::ctx::{Answer, CaseError, Ctx, describe, ensure, fail, ok_raw};

/// The `max_results` the range cases send: small, so that a plugin with
/// any ranges at all must split them over several messages.
const MAX_RESULTS: i32 = 2;

fn need_service(c: &Ctx) -> Result<(), CaseError> {
    if c.found()
        .plugin
        .contains(PluginCapabilities::SNAPSHOT_METADATA_SERVICE)
    {
        Ok(())
    } else {
        Err(CaseError::Skip(
            "the plugin does not advertise SNAPSHOT_METADATA_SERVICE".into(),
        ))
    }
}

/// Skips unless the plugin serves metadata and can make the block volume and
/// snapshots the case reads.
fn need_snapshots(c: &Ctx) -> Result<(), CaseError> {
    need_service(c)?;
    c.need_controller(
        CC::CREATE_DELETE_VOLUME,
        "CREATE_DELETE_VOLUME (the case snapshots a BLOCK volume)",
    )?;
    c.need_controller(CC::CREATE_DELETE_SNAPSHOT, "CREATE_DELETE_SNAPSHOT")
}

/// Reads a whole stream. A call or a message that fails gives the inner
/// error; a message that breaks the typed rules (each message's own ranges
/// ascending and not overlapping, the REQUIRED fields) fails the case.
async fn collect<P>(
    rpc: &str,
    r: Result<RawStream<P>, CsiError>,
) -> Result<Result<Vec<BlockMetadataResponse>, CsiError>, CaseError>
where
    BlockMetadataResponse: TryFrom<P, Error = CsiError>,
{
    let mut stream = match r {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        match BlockMetadataResponse::try_from(m) {
            Ok(m) => out.push(m),
            Err(e) => fail!("{rpc}: message {} breaks the spec: {e}", out.len()),
        }
    }
    Ok(Ok(out))
}

/// Fails unless the stream answered `want`.
fn expect_code(
    rpc: &str,
    r: Result<Vec<BlockMetadataResponse>, CsiError>,
    want: Code,
) -> Result<(), CaseError> {
    match r {
        Ok(m) => fail!(
            "{rpc}: expected {want}, got a stream of {} messages",
            m.len()
        ),
        Err(e) if e.code() == want => Ok(()),
        Err(e) => fail!("{rpc}: expected {want}, got {}", describe(&e)),
    }
}

/// Why a delta error case prefers its own code to `FAILED_PRECONDITION`.
const NO_CBT: &str = "FAILED_PRECONDITION is the spec's answer when changed block tracking is not enabled, which applies to any delta; the request also breaks a rule of its own, whose code tells the CO what to fix";

/// A delta error case: `want` passes, `FAILED_PRECONDITION` (changed block
/// tracking not enabled) passes with a warning, anything else fails.
fn delta_error(
    c: &Ctx,
    rpc: &str,
    r: Result<Vec<BlockMetadataResponse>, CsiError>,
    want: Code,
) -> Result<(), CaseError> {
    c.answer(
        rpc,
        r,
        Answer::Code(want),
        &[Answer::Code(Code::FailedPrecondition)],
        NO_CBT,
    )
}

/// A delta that answered `FAILED_PRECONDITION` (changed block tracking not
/// enabled, which the spec allows) leaves no ranges to check: the case skips.
fn delta_or_skip(
    r: Result<Vec<BlockMetadataResponse>, CsiError>,
) -> Result<Result<Vec<BlockMetadataResponse>, CsiError>, CaseError> {
    match r {
        Err(e) if e.code() == Code::FailedPrecondition => Err(CaseError::Skip(format!(
            "GetMetadataDelta answered {} (changed block tracking is not enabled, which the spec allows): no ranges to check",
            describe(&e)
        ))),
        r => Ok(r),
    }
}

/// The spec's rules across the messages of one stream (see the module
/// documentation), for a snapshot of `volume`.
fn check_stream(
    rpc: &str,
    r: Result<Vec<BlockMetadataResponse>, CsiError>,
    starting_offset: u64,
    volume: &Volume,
) -> Result<Vec<BlockMetadata>, CaseError> {
    let msgs = match r {
        Ok(m) => m,
        Err(e) => fail!("{rpc}: expected OK, got {}", describe(&e)),
    };
    let Some(first) = msgs.first() else {
        // An empty stream says nothing is allocated (or changed).
        return Ok(Vec::new());
    };
    let (kind, capacity) = (first.block_metadata_type, first.volume_capacity_bytes);
    if volume.capacity_bytes > 0 {
        ensure!(
            capacity == volume.capacity_bytes,
            "{rpc}: volume_capacity_bytes is {capacity}, the volume's capacity {}",
            volume.capacity_bytes
        );
    }
    let mut prev_end: Option<u64> = None;
    for (i, m) in msgs.iter().enumerate() {
        ensure!(
            m.block_metadata_type == kind && m.volume_capacity_bytes == capacity,
            "{rpc}: message {i} has block_metadata_type {:?} and volume_capacity_bytes {}, message 0 {kind:?} and {capacity}: they MUST be the same in every message",
            m.block_metadata_type,
            m.volume_capacity_bytes
        );
        ensure!(
            m.block_metadata.len() <= MAX_RESULTS as usize,
            "{rpc}: message {i} holds {} ranges, more than max_results {MAX_RESULTS}",
            m.block_metadata.len()
        );
        for b in &m.block_metadata {
            let end = b.byte_offset.saturating_add(b.size_bytes);
            ensure!(
                end <= capacity,
                "{rpc}: range {b:?} in message {i} ends at {end}, past the volume's {capacity} bytes"
            );
            match prev_end {
                None => ensure!(
                    starting_offset < end,
                    "{rpc}: the first range {b:?} ends at or before starting_offset {starting_offset}"
                ),
                Some(p) => ensure!(
                    p <= b.byte_offset,
                    "{rpc}: range {b:?} in message {i} starts before the previous range ends at {p}: ranges MUST ascend and not overlap, across messages too"
                ),
            }
            prev_end = Some(end);
        }
    }
    Ok(msgs.into_iter().flat_map(|m| m.block_metadata).collect())
}

/// Fails unless `ranges` (ascending, not overlapping) cover every byte the
/// case wrote.
fn check_covers(
    rpc: &str,
    ranges: &[BlockMetadata],
    written: &[(u64, u64)],
) -> Result<(), CaseError> {
    for &(off, len) in written {
        let mut pos = off;
        for b in ranges {
            if b.byte_offset <= pos && pos < b.byte_offset.saturating_add(b.size_bytes) {
                pos = b.byte_offset.saturating_add(b.size_bytes);
            }
            if pos >= off + len {
                break;
            }
        }
        ensure!(
            pos >= off + len,
            "{rpc}: the case wrote bytes {off}..{} of the volume, but the ranges returned leave byte {pos} out",
            off + len
        );
    }
    Ok(())
}

/// The size of each write the harness makes into a volume.
const WRITE: u64 = 4096;

/// Publishes the BLOCK volume on the node, writes `WRITE` bytes of a
/// pattern at each offset, and unpublishes it again. Returns the ranges
/// written, or `None` when the harness cannot write into the volume: no
/// node, or a target that is not a block device (the memdriver's file is
/// not connected to any data).
async fn write_blocks(
    c: &Ctx,
    volume_id: &str,
    offsets: &[u64],
) -> Result<Option<Vec<(u64, u64)>>, CaseError> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileTypeExt;
    if c.found().node_id.is_none() {
        return Ok(None);
    }
    let cap = block();
    let pctx = c.controller_publish(volume_id, cap.clone(), false).await?;
    let staging = c.stage(volume_id, cap.clone(), &pctx).await?;
    let req = c.node_publish_req(volume_id, &staging, cap, false, &pctx)?;
    let target = req.target_path.clone();
    ok_raw("NodePublishVolume (BLOCK)", c.send_node_publish(req).await)?;
    let is_device = std::fs::metadata(&target).is_ok_and(|m| m.file_type().is_block_device());
    let written = if is_device {
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&target)?;
            for &off in offsets {
                f.seek(SeekFrom::Start(off))?;
                f.write_all(&[0xa5; WRITE as usize])?;
            }
            f.sync_all()
        };
        write().map_err(|e| {
            CaseError::Fail(format!(
                "writing into the published BLOCK volume at {target}: {e}"
            ))
        })?;
        Some(offsets.iter().map(|&o| (o, WRITE)).collect())
    } else {
        None
    };
    unstage_unpublish_order(c, volume_id, &target, &staging).await?;
    Ok(written)
}

async fn allocated(
    c: &Ctx,
    snapshot_id: &str,
    starting_offset: u64,
) -> Result<Result<Vec<BlockMetadataResponse>, CsiError>, CaseError> {
    let req = proto::GetMetadataAllocatedRequest {
        snapshot_id: snapshot_id.to_string(),
        starting_offset: starting_offset.min(i64::MAX as u64) as i64,
        max_results: MAX_RESULTS,
        ..Default::default()
    };
    collect(
        "GetMetadataAllocated",
        c.ctl().raw_get_metadata_allocated(req).await,
    )
    .await
}

async fn delta(
    c: &Ctx,
    base: &str,
    target: &str,
    starting_offset: u64,
) -> Result<Result<Vec<BlockMetadataResponse>, CsiError>, CaseError> {
    let req = proto::GetMetadataDeltaRequest {
        base_snapshot_id: base.to_string(),
        target_snapshot_id: target.to_string(),
        starting_offset: starting_offset.min(i64::MAX as u64) as i64,
        max_results: MAX_RESULTS,
        ..Default::default()
    };
    collect(
        "GetMetadataDelta",
        c.ctl().raw_get_metadata_delta(req).await,
    )
    .await
}

/// A snapshot of `vol`, once it is ready to use; returns its id.
async fn ready_snapshot(c: &Ctx, vol: &Volume, tag: &str) -> Result<String, CaseError> {
    let snap = c.snapshot(vol.volume_id.as_str(), tag).await?;
    let id = snap.snapshot_id.to_string();
    if !snap.ready_to_use {
        wait_ready(c, &id).await?;
    }
    Ok(id)
}

/// A BLOCK volume and a ready snapshot of it.
async fn snapshotted(c: &Ctx) -> Result<(Volume, String), CaseError> {
    let vol = c.block_volume("meta").await?;
    let id = ready_snapshot(c, &vol, "meta").await?;
    Ok((vol, id))
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "snapshot_metadata/get_metadata_allocated/ranges",
            "GetMetadataAllocated of a BLOCK volume's snapshot, from 0 and from mid-volume, streams ranges that ascend without overlap, within the volume, at most max_results per message",
            |c| {
                need_snapshots(&c)?;
                let vol = c.block_volume("meta").await?;
                let half = vol.capacity_bytes.max(c.config().volume_size) / 2 / WRITE * WRITE;
                let written = write_blocks(&c, vol.volume_id.as_str(), &[0, half]).await?;
                let snap = ready_snapshot(&c, &vol, "meta").await?;
                let r = allocated(&c, &snap, 0).await?;
                let ranges = check_stream("GetMetadataAllocated (from 0)", r, 0, &vol)?;
                if let Some(w) = &written {
                    check_covers("GetMetadataAllocated (from 0)", &ranges, w)?;
                }
                // Resuming mid-volume: no range may end at or before the offset.
                let mid = vol.capacity_bytes.max(c.config().volume_size) / 2 + 1;
                let r = allocated(&c, &snap, mid).await?;
                check_stream(&format!("GetMetadataAllocated (from {mid})"), r, mid, &vol)?;
                Ok(())
            }
        ),
        case!(
            "snapshot_metadata/get_metadata_delta/ranges",
            "GetMetadataDelta between two snapshots of one BLOCK volume streams ranges that ascend without overlap, within the volume, at most max_results per message",
            |c| {
                need_snapshots(&c)?;
                let (vol, base) = snapshotted(&c).await?;
                let at =
                    (vol.capacity_bytes.max(c.config().volume_size) / 4 / WRITE * WRITE).max(WRITE);
                let written = write_blocks(&c, vol.volume_id.as_str(), &[at]).await?;
                let target = ready_snapshot(&c, &vol, "meta2").await?;
                let r = delta_or_skip(delta(&c, &base, &target, 0).await?)?;
                let ranges = check_stream("GetMetadataDelta", r, 0, &vol)?;
                if let Some(w) = &written {
                    check_covers("GetMetadataDelta", &ranges, w)?;
                }
                Ok(())
            }
        ),
        case!(
            "snapshot_metadata/get_metadata_delta/different_volumes",
            "GetMetadataDelta between snapshots of two different volumes answers INVALID_ARGUMENT (or NOT_FOUND): the target must be a snapshot of the base's volume (FAILED_PRECONDITION, no changed block tracking, passes with a warning)",
            |c| {
                need_snapshots(&c)?;
                let (_, base) = snapshotted(&c).await?;
                let other = c.block_volume("meta-other").await?;
                let target = ready_snapshot(&c, &other, "meta-other").await?;
                let rpc = "GetMetadataDelta (snapshots of two volumes)";
                match delta(&c, &base, &target, 0).await? {
                    Err(e) if matches!(e.code(), Code::InvalidArgument | Code::NotFound) => Ok(()),
                    Ok(m) => fail!(
                        "{rpc}: expected INVALID_ARGUMENT or NOT_FOUND, got a stream of {} messages",
                        m.len()
                    ),
                    r => delta_error(&c, rpc, r, Code::InvalidArgument),
                }
            }
        ),
        case!(
            "snapshot_metadata/unknown_snapshot",
            "GetMetadataAllocated and GetMetadataDelta of snapshot ids that do not exist answer NOT_FOUND (for the delta, FAILED_PRECONDITION, no changed block tracking, passes with a warning)",
            |c| {
                need_service(&c)?;
                let gone = c.gone_snapshot().await?;
                let r = allocated(&c, &gone.id, 0).await?;
                c.not_found("GetMetadataAllocated (unknown snapshot)", r, &gone)?;
                let r = delta(&c, &gone.id, &gone.id, 0).await?;
                let mut also = vec![Answer::Code(Code::FailedPrecondition)];
                if gone.is_made_up() {
                    // A plugin whose ids have a format may refuse a made-up
                    // one as malformed (see `Missing`).
                    also.push(Answer::Code(Code::InvalidArgument));
                }
                c.answer(
                    "GetMetadataDelta (unknown snapshots)",
                    r,
                    Answer::Code(Code::NotFound),
                    &also,
                    NO_CBT,
                )
            }
        ),
        case!(
            "snapshot_metadata/starting_offset_past_end",
            "GetMetadataAllocated and GetMetadataDelta with starting_offset past the volume's size answer OUT_OF_RANGE (for the delta, FAILED_PRECONDITION, no changed block tracking, passes with a warning)",
            |c| {
                need_snapshots(&c)?;
                let (vol, snap) = snapshotted(&c).await?;
                // Well past the end, whatever rounding the plugin applied.
                let size = vol.capacity_bytes.max(c.config().volume_size);
                let past = size.saturating_mul(2).saturating_add(1 << 20);
                let r = allocated(&c, &snap, past).await?;
                expect_code(
                    &format!(
                        "GetMetadataAllocated (starting_offset {past} of a {size}-byte volume)"
                    ),
                    r,
                    Code::OutOfRange,
                )?;
                let later = ready_snapshot(&c, &vol, "meta2").await?;
                let r = delta(&c, &snap, &later, past).await?;
                delta_error(
                    &c,
                    &format!("GetMetadataDelta (starting_offset {past} of a {size}-byte volume)"),
                    r,
                    Code::OutOfRange,
                )
            }
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(byte_offset: u64, size_bytes: u64) -> BlockMetadata {
        BlockMetadata {
            byte_offset,
            size_bytes,
        }
    }

    #[test]
    fn coverage_needs_every_written_byte() {
        let ranges = [r(0, 4096), r(4096, 4096), r(16384, 4096)];
        // Written bytes spanning two adjacent ranges are covered.
        assert!(check_covers("t", &ranges, &[(1000, 5000), (16384, 4096)]).is_ok());
        // A gap between ranges is not.
        let e = check_covers("t", &ranges, &[(4096, 8192)]).unwrap_err();
        assert!(
            matches!(&e, CaseError::Fail(m) if m.contains("leave byte 8192 out")),
            "{e:?}"
        );
        // Nothing returned covers nothing.
        assert!(check_covers("t", &[], &[(0, 1)]).is_err());
        assert!(check_covers("t", &[], &[]).is_ok());
    }
}
