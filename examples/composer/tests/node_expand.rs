//! Volume expansion with real mounts: an SSD slice with XFS and one with
//! ext4 are written through their mounted filesystems, grown by
//! `ControllerExpandVolume`, and grown on the node: `NodeExpandVolume` on the
//! still-staged (smaller) device answers FAILED_PRECONDITION and changes
//! nothing; after unstage and stage the device has the new size, ext4 grew
//! offline before its mount, XFS grows online in `NodeExpandVolume`; the
//! filesystems report the larger size and every file reads back equal.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the test says so
//! and passes, except under `CI=true`, where it fails.

use csi_types::{
    capabilities::NodeCapabilities, controller::*, ids::*, node::*, prelude::*, redact::*, types::*,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;

use common::InProcess as Setup;

fn cap(fs: &str) -> VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter).with_fs_type(fs)
}

fn path(p: &Path) -> NodePath {
    NodePath::new(p.to_str().unwrap()).unwrap()
}

async fn stage(s: &Setup, id: &str, fs: &str, staging: &Path) {
    Csi::node_stage_volume(
        &s.plugin,
        NodeStageVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            publish_context: Map::new(),
            staging_target_path: path(staging),
            volume_capability: cap(fs),
            secrets: Secrets::default(),
            volume_context: Map::new(),
        },
    )
    .await
    .unwrap();
}

async fn unstage(s: &Setup, id: &str, staging: &Path) {
    Csi::node_unstage_volume(
        &s.plugin,
        NodeUnstageVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            staging_target_path: path(staging),
        },
    )
    .await
    .unwrap();
}

async fn publish(s: &Setup, id: &str, fs: &str, staging: &Path, target: &Path) {
    Csi::node_publish_volume(
        &s.plugin,
        NodePublishVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            publish_context: Map::new(),
            staging_target_path: Some(path(staging)),
            target_path: path(target),
            volume_capability: cap(fs),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        },
    )
    .await
    .unwrap();
}

async fn unpublish(s: &Setup, id: &str, target: &Path) {
    Csi::node_unpublish_volume(
        &s.plugin,
        NodeUnpublishVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            target_path: path(target),
        },
    )
    .await
    .unwrap();
}

async fn node_expand(s: &Setup, id: &str, at: &Path) -> Result<NodeExpandVolumeResponse, CsiError> {
    Csi::node_expand_volume(
        &s.plugin,
        NodeExpandVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            volume_path: path(at).into(),
            capacity_range: None,
            staging_target_path: Some(path(at)).into(),
            volume_capability: None,
            secrets: Secrets::default(),
        },
    )
    .await
}

fn fs_bytes(p: &Path) -> u64 {
    csi_node::filesystem_stats(p).unwrap().bytes_total
}

fn check(target: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    for (name, data) in files {
        assert!(
            std::fs::read(target.join(name)).unwrap() == *data,
            "{name} differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_grow_through_controller_and_node_expansion_keeping_data() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    let caps = Csi::node_get_capabilities(&s.plugin, NodeGetCapabilitiesRequest {})
        .await
        .unwrap();
    assert!(
        caps.capabilities.contains(NodeCapabilities::EXPAND_VOLUME),
        "{caps:?}"
    );
    // XFS needs at least 300 MiB.
    for (fs, before, after) in [
        ("xfs", 320u64 << 20, 512u64 << 20),
        ("ext4", 64 << 20, 192 << 20),
    ] {
        let mut req =
            composer::create_request(fs, &[("type", "slice"), ("fsType", fs)], before).unwrap();
        req.volume_capabilities = vec![cap(fs)];
        let id = Csi::create_volume(&s.plugin, req)
            .await
            .unwrap()
            .volume
            .volume_id
            .as_str()
            .to_string();
        Csi::controller_publish_volume(
            &s.plugin,
            ControllerPublishVolumeRequest {
                volume_id: VolumeId::new(&id).unwrap(),
                node_id: NodeId::new("r1-n1").unwrap(),
                volume_capability: cap(fs),
                readonly: false,
                secrets: Secrets::default(),
                volume_context: Map::new(),
            },
        )
        .await
        .unwrap();
        let staging: PathBuf = s.dir.path().join("staging").join(fs);
        let target: PathBuf = s.dir.path().join("target").join(fs);
        stage(&s, &id, fs, &staging).await;
        publish(&s, &id, fs, &staging, &target).await;
        let mut files = BTreeMap::new();
        for i in 0..8u8 {
            let data: Vec<u8> = (0..(1u32 << 20) + u32::from(i) * 4099)
                .map(|b| (b as u8) ^ i.wrapping_mul(37))
                .collect();
            std::fs::write(target.join(format!("f{i}")), &data).unwrap();
            files.insert(format!("f{i}"), data);
        }
        let small = fs_bytes(&target);
        assert!(small <= before, "{fs}: {small} > {before}");

        let grown = Csi::controller_expand_volume(
            &s.plugin,
            ControllerExpandVolumeRequest {
                volume_id: VolumeId::new(&id).unwrap(),
                capacity_range: CapacityRange::new(Some(after), None).unwrap(),
                secrets: Secrets::default(),
                volume_capability: Some(cap(fs)),
            },
        )
        .await
        .unwrap();
        assert_eq!(grown.capacity_bytes, after);
        assert!(grown.node_expansion_required);

        // Online: the staged loop device keeps its size limit.
        let err = node_expand(&s, &id, &staging).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("offline"), "{err}");
        assert_eq!(fs_bytes(&target), small, "the failed call changed nothing");
        check(&target, &files);

        // Offline: unpublish, unstage, stage the grown device, expand.
        unpublish(&s, &id, &target).await;
        unstage(&s, &id, &staging).await;
        stage(&s, &id, fs, &staging).await;
        let r = node_expand(&s, &id, &staging).await.unwrap();
        assert_eq!(r.capacity_bytes, Some(after));
        // Idempotent.
        let again = node_expand(&s, &id, &staging).await.unwrap();
        assert_eq!(again.capacity_bytes, Some(after));
        publish(&s, &id, fs, &staging, &target).await;
        let big = fs_bytes(&target);
        assert!(
            big > small + (after - before) / 2,
            "{fs} grew from {small} to only {big} bytes"
        );
        check(&target, &files);
        unpublish(&s, &id, &target).await;
        unstage(&s, &id, &staging).await;
    }
    let err = node_expand(&s, "nope", s.dir.path()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}
