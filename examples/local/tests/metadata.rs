//! The SnapshotMetadata service over a unix socket: allocated ranges of a
//! block snapshot and changed ranges between two snapshots.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;

use common::*;
use csi_types::{
    Code, Csi, CsiError,
    capabilities::PluginCapabilities,
    controller::CreateSnapshotRequest,
    identity::GetPluginCapabilitiesRequest,
    ids::{SnapshotId, SnapshotName, VolumeId},
    redact::Secrets,
    snapshot_metadata::{BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataDeltaRequest},
    types::Map,
};
use futures::StreamExt;

async fn snapshot(c: &csi_types::client::Client, v: &VolumeId, name: &str) -> SnapshotId {
    c.create_snapshot(CreateSnapshotRequest {
        source_volume_id: v.clone(),
        name: SnapshotName::new(name).unwrap(),
        secrets: Secrets::default(),
        parameters: Map::new(),
    })
    .await
    .unwrap()
    .snapshot
    .snapshot_id
}

/// Every range of every message, checking the stream's invariants on the way.
async fn ranges(
    stream: Result<
        futures::stream::BoxStream<
            'static,
            Result<csi_types::snapshot_metadata::BlockMetadataResponse, CsiError>,
        >,
        CsiError,
    >,
    capacity: u64,
    max: usize,
) -> Result<(Vec<(u64, u64)>, usize), CsiError> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut messages = 0;
    let mut s = stream?;
    while let Some(m) = s.next().await {
        let m = m?;
        messages += 1;
        assert_eq!(m.block_metadata_type, BlockMetadataType::VariableLength);
        assert_eq!(m.volume_capacity_bytes, capacity);
        assert!(m.block_metadata.len() <= max);
        for b in m.block_metadata {
            if let Some((o, l)) = out.last() {
                assert!(b.byte_offset >= o + l, "ranges ascend and do not overlap");
            }
            assert!(b.byte_offset + b.size_bytes <= capacity);
            out.push((b.byte_offset, b.size_bytes));
        }
    }
    Ok((out, messages))
}

fn covers(ranges: &[(u64, u64)], off: u64, len: u64) -> bool {
    (off..off + len)
        .step_by(512)
        .all(|p| ranges.iter().any(|&(o, l)| p >= o && p < o + l))
}

fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|r| r.1).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn allocated_and_changed_ranges_of_block_snapshots() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let caps = c
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap();
    assert!(
        caps.capabilities
            .contains(PluginCapabilities::SNAPSHOT_METADATA_SERVICE)
    );

    let size = 8 * MIB;
    let v = c
        .create_volume(block_req("b", size))
        .await
        .unwrap()
        .volume
        .volume_id;
    let img = fs::OpenOptions::new()
        .write(true)
        .open(local::volume_data_path(&s.state_dir(), v.as_str(), true))
        .unwrap();
    img.write_all_at(&[1u8; 100 << 10], MIB).unwrap();
    img.write_all_at(&[2u8; 4096], 5 * MIB).unwrap();
    let s1 = snapshot(c, &v, "s1").await;

    let alloc = |id: &SnapshotId, from: u64, max: Option<u32>| GetMetadataAllocatedRequest {
        snapshot_id: id.clone(),
        starting_offset: from,
        max_results: max,
        secrets: Secrets::default(),
    };
    let (all, _) = ranges(
        c.get_metadata_allocated(alloc(&s1, 0, None)).await,
        size,
        256,
    )
    .await
    .unwrap();
    assert!(
        covers(&all, MIB, 100 << 10) && covers(&all, 5 * MIB, 4096),
        "{all:?}"
    );
    assert!(
        total(&all) < MIB,
        "holes are not reported as allocated: {all:?}"
    );
    let (tail, _) = ranges(
        c.get_metadata_allocated(alloc(&s1, 3 * MIB, None)).await,
        size,
        256,
    )
    .await
    .unwrap();
    assert!(
        tail.iter().all(|&(o, _)| o >= 3 * MIB) && covers(&tail, 5 * MIB, 4096),
        "{tail:?}"
    );
    let (one_each, msgs) = ranges(
        c.get_metadata_allocated(alloc(&s1, 0, Some(1))).await,
        size,
        1,
    )
    .await
    .unwrap();
    assert_eq!(one_each, all);
    assert_eq!(msgs, all.len());
    let past = ranges(
        c.get_metadata_allocated(alloc(&s1, size + 1, None)).await,
        size,
        256,
    )
    .await;
    assert_eq!(past.unwrap_err().code(), Code::OutOfRange);
    let nope = SnapshotId::new("snap-nope").unwrap();
    assert_eq!(
        code(
            c.get_metadata_allocated(alloc(&nope, 0, None))
                .await
                .map(|_| ())
        ),
        Code::NotFound
    );

    // Change one block, add another, leave the first region alone.
    img.write_all_at(&[3u8; 4096], 5 * MIB).unwrap();
    img.write_all_at(&[4u8; 8192], 7 * MIB).unwrap();
    let s2 = snapshot(c, &v, "s2").await;
    let delta = |base: &SnapshotId, target: &SnapshotId| GetMetadataDeltaRequest {
        base_snapshot_id: base.clone(),
        target_snapshot_id: target.clone(),
        starting_offset: 0,
        max_results: None,
        secrets: Secrets::default(),
    };
    let (changed, _) = ranges(c.get_metadata_delta(delta(&s1, &s2)).await, size, 256)
        .await
        .unwrap();
    assert!(
        covers(&changed, 5 * MIB, 4096) && covers(&changed, 7 * MIB, 8192),
        "{changed:?}"
    );
    assert!(
        !changed
            .iter()
            .any(|&(o, l)| o < MIB + (100 << 10) && o + l > MIB),
        "unchanged data is not reported: {changed:?}"
    );
    assert!(total(&changed) <= 4 * CHUNK, "{changed:?}");
    let (same, _) = ranges(c.get_metadata_delta(delta(&s2, &s2)).await, size, 256)
        .await
        .unwrap();
    assert!(same.is_empty(), "{same:?}");

    // Snapshots of different volumes, and of mount volumes, have no delta.
    let w = c
        .create_volume(block_req("w", size))
        .await
        .unwrap()
        .volume
        .volume_id;
    let other = snapshot(c, &w, "other").await;
    assert_eq!(
        code(c.get_metadata_delta(delta(&s1, &other)).await.map(|_| ())),
        Code::InvalidArgument
    );
    let m = c
        .create_volume(mount_req("m", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let ms = snapshot(c, &m, "ms").await;
    assert_eq!(
        code(
            c.get_metadata_allocated(alloc(&ms, 0, None))
                .await
                .map(|_| ())
        ),
        Code::InvalidArgument
    );
}

const CHUNK: u64 = 64 << 10;
