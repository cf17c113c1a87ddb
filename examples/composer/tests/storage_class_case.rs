//! StorageClass values from a fixed vocabulary (`type`, `fsType`,
//! `encryptionFormat`, the booleans, the transports) are read whatever
//! their ASCII case, as Kubernetes' own drivers read `fsType` and volume
//! types, and as `encrypt: "TRUE"` already was; the controller and the node
//! read them, and a mount capability's `fs_type` (which Kubernetes takes
//! from the same StorageClass), through composer-core's one rule. Before,
//! `fsType: XFS` or `type: SSD` was refused at CreateVolume while
//! `encrypt: TRUE` was taken, and a capability `fs_type: XFS` was refused
//! at the node. Other values are still refused, naming the key and the
//! values allowed.

use csi_types::node::NodeStageVolumeRequest;
use csi_types::prelude::*;
use csi_types::redact::Secrets;
use csi_types::types::{AccessMode, VolumeCapability};

mod common;
use common::InProcess;

fn xfs_cap(fs: &str) -> VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter).with_fs_type(fs)
}

#[tokio::test]
async fn the_controller_reads_values_whatever_their_case_and_refuses_others() {
    let s = InProcess::new();
    let mut req = composer::create_request(
        "upper",
        &[
            ("type", "Slice"),
            ("fsType", "XFS"),
            ("redundancy", "True"),
            ("networkTransportsAllowed", "NBD"),
        ],
        320 << 20,
    )
    .unwrap();
    req.volume_capabilities = vec![xfs_cap("XFS")];
    let v = Csi::create_volume(&s.plugin, req).await.unwrap().volume;
    assert_eq!(
        v.volume_context.get("fsType").map(String::as_str),
        Some("xfs")
    );
    assert_eq!(
        v.volume_context.get("transport").map(String::as_str),
        Some("nbd")
    );
    let rec = s
        .driver
        .composer()
        .get(v.volume_id.as_str())
        .unwrap()
        .record;
    assert_eq!(rec.layout.kind, composer_core::LayoutKind::SliceMirror);

    // The same StorageClass spelt otherwise validates; another does not.
    for (fs, confirmed) in [("xfs", true), ("Ext4", false)] {
        let r = Csi::validate_volume_capabilities(
            &s.plugin,
            csi_types::controller::ValidateVolumeCapabilitiesRequest {
                volume_id: v.volume_id.clone(),
                volume_context: Default::default(),
                volume_capabilities: vec![xfs_cap(fs)],
                parameters: [
                    ("type", "slice"),
                    ("fsType", fs),
                    ("redundancy", "true"),
                    ("networkTransportsAllowed", "nbd"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                secrets: Secrets::default(),
                mutable_parameters: Default::default(),
            },
        )
        .await
        .unwrap();
        assert_eq!(r.confirmed.is_some(), confirmed, "{fs}: {}", r.message);
    }

    for (params, cap, field, rule) in [
        (
            [("type", "slice"), ("fsType", "Btrfs")],
            xfs_cap("xfs"),
            "parameters[\"fsType\"]",
            "must be ext4 or xfs, got \"Btrfs\"",
        ),
        (
            [("type", "Tape"), ("fsType", "xfs")],
            xfs_cap("xfs"),
            "parameters[\"type\"]",
            "must be hdd, ssd or slice, got \"Tape\"",
        ),
        (
            [("type", "slice"), ("fsType", "xfs")],
            xfs_cap("EXT4"),
            "volume_capabilities[0].mount.fs_type",
            "differs from the StorageClass's fsType xfs",
        ),
    ] {
        let mut req = composer::create_request("refused", &params, 320 << 20).unwrap();
        req.volume_capabilities = vec![cap];
        let e = Csi::create_volume(&s.plugin, req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(field) && msg.contains(rule), "{msg}");
    }
    assert_eq!(
        s.driver.composer().volume_count(),
        1,
        "a refusal created a volume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_makes_the_filesystem_a_capability_names_in_capitals() {
    if !common::can_mount() {
        return;
    }
    let s = InProcess::new();
    let mut req =
        composer::create_request("xfs", &[("type", "SLICE"), ("fsType", "Xfs")], 320 << 20)
            .unwrap();
    req.volume_capabilities = vec![xfs_cap("XFS")];
    let id = Csi::create_volume(&s.plugin, req)
        .await
        .unwrap()
        .volume
        .volume_id;
    common::controller_publish(&s.plugin, id.as_str()).await;
    let staging = s.dir.path().join("staging").join("xfs");
    let stage = |fs: &str| NodeStageVolumeRequest {
        volume_id: id.clone(),
        publish_context: Default::default(),
        staging_target_path: common::np(&staging),
        volume_capability: xfs_cap(fs),
        secrets: Secrets::default(),
        volume_context: Default::default(),
    };
    let e = Csi::node_stage_volume(&s.plugin, stage("zfs"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains("volume_capability.mount.fs_type")
            && e.to_string().contains("must be ext4 or xfs, got \"zfs\""),
        "{e}"
    );
    Csi::node_stage_volume(&s.plugin, stage("XFS"))
        .await
        .unwrap();
    let m = csi_node::mount_table()
        .unwrap()
        .into_iter()
        .find(|m| m.mount_point == staging)
        .expect("the staging path is mounted");
    assert_eq!(m.fs_type, "xfs", "{m:?}");
    Csi::node_unstage_volume(
        &s.plugin,
        csi_types::node::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: common::np(&staging),
        },
    )
    .await
    .unwrap();
}
