//! Requests as the CSI community's sanity suite sends them, naming objects
//! that do not exist: `local` answers for the missing object first (the
//! precedence rule of `csi_types::bound`), and treats what cannot be found
//! as unpublished. One test per item of the interoperability report.

mod common;

use common::*;
use csi_types::{Code, Csi, CsiError, RawCsi, proto};

const UNKNOWN: &str = "no-such-object";

fn code_of<T: std::fmt::Debug>(r: Result<T, CsiError>) -> Code {
    code(r)
}

/// Item 1: ControllerUnpublishVolume of a volume that was deleted answers
/// OK, as does unpublishing from a node that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn unpublish_of_a_deleted_volume_or_an_unknown_node_is_ok() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = Csi::create_volume(c, mount_req("gone", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    RawCsi::raw_controller_publish_volume(
        c,
        proto::ControllerPublishVolumeRequest {
            volume_id: v.to_string(),
            node_id: "node-1".into(),
            volume_capability: Some(
                csi_types::types::VolumeCapability::mount(
                    csi_types::types::AccessMode::SingleNodeWriter,
                )
                .into(),
            ),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // An unknown node: nothing is published there.
    RawCsi::raw_controller_unpublish_volume(
        c,
        proto::ControllerUnpublishVolumeRequest {
            volume_id: v.to_string(),
            node_id: "some-other-node".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let unpub = || proto::ControllerUnpublishVolumeRequest {
        volume_id: v.to_string(),
        node_id: "node-1".into(),
        ..Default::default()
    };
    RawCsi::raw_controller_unpublish_volume(c, unpub())
        .await
        .unwrap();
    RawCsi::raw_delete_volume(
        c,
        proto::DeleteVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The cleanup loop's second pass, after the delete.
    RawCsi::raw_controller_unpublish_volume(c, unpub())
        .await
        .unwrap();
    // Never created at all, with and without a node.
    for node_id in ["node-1", ""] {
        RawCsi::raw_controller_unpublish_volume(
            c,
            proto::ControllerUnpublishVolumeRequest {
                volume_id: UNKNOWN.into(),
                node_id: node_id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    // The volume id itself is still REQUIRED.
    assert_eq!(
        code_of(
            RawCsi::raw_controller_unpublish_volume(
                c,
                proto::ControllerUnpublishVolumeRequest::default()
            )
            .await
        ),
        Code::InvalidArgument
    );
}

/// Items 2 and 3: NodeExpandVolume and NodeGetVolumeStats of an unknown
/// volume with a relative (or no) `volume_path` answer NOT_FOUND; with a
/// known volume the malformed path is still INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread")]
async fn node_calls_on_unknown_volumes_answer_not_found_whatever_the_path() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    for path in ["some/path", ""] {
        let stats = RawCsi::raw_node_get_volume_stats(
            c,
            proto::NodeGetVolumeStatsRequest {
                volume_id: UNKNOWN.into(),
                volume_path: path.into(),
                staging_target_path: "relative/staging".into(),
            },
        )
        .await;
        assert_eq!(code_of(stats), Code::NotFound, "stats, path {path:?}");
        let expand = RawCsi::raw_node_expand_volume(
            c,
            proto::NodeExpandVolumeRequest {
                volume_id: UNKNOWN.into(),
                volume_path: path.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(code_of(expand), Code::NotFound, "expand, path {path:?}");
    }
    let v = Csi::create_volume(c, mount_req("known", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let e = RawCsi::raw_node_get_volume_stats(
        c,
        proto::NodeGetVolumeStatsRequest {
            volume_id: v.to_string(),
            volume_path: "some/path".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("volume_path"), "{e}");
    let e = RawCsi::raw_node_expand_volume(
        c,
        proto::NodeExpandVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("volume_path"), "{e}");
}

/// Item 4: GetVolumeGroupSnapshot of an unknown id without `snapshot_ids`
/// answers NOT_FOUND; DeleteVolumeGroupSnapshot answers OK (the spec's MUST);
/// for an existing group the missing list is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread")]
async fn group_snapshot_calls_on_unknown_ids_answer_for_the_missing_object() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let get = RawCsi::raw_get_volume_group_snapshot(
        c,
        proto::GetVolumeGroupSnapshotRequest {
            group_snapshot_id: UNKNOWN.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code_of(get), Code::NotFound);
    RawCsi::raw_delete_volume_group_snapshot(
        c,
        proto::DeleteVolumeGroupSnapshotRequest {
            group_snapshot_id: UNKNOWN.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let v = Csi::create_volume(c, mount_req("member", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let g = RawCsi::raw_create_volume_group_snapshot(
        c,
        proto::CreateVolumeGroupSnapshotRequest {
            name: "group".into(),
            source_volume_ids: vec![v.to_string()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .group_snapshot
    .unwrap();
    for r in [
        RawCsi::raw_get_volume_group_snapshot(
            c,
            proto::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: g.group_snapshot_id.clone(),
                ..Default::default()
            },
        )
        .await
        .map(drop),
        RawCsi::raw_delete_volume_group_snapshot(
            c,
            proto::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: g.group_snapshot_id.clone(),
                ..Default::default()
            },
        )
        .await
        .map(drop),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().contains("snapshot_ids"), "{e}");
    }
    // The group survived the refused delete and goes with its members listed.
    let ids: Vec<String> = g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect();
    RawCsi::raw_delete_volume_group_snapshot(
        c,
        proto::DeleteVolumeGroupSnapshotRequest {
            group_snapshot_id: g.group_snapshot_id.clone(),
            snapshot_ids: ids,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}
