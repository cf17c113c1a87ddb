//! A group snapshot takes each volume once and lists each member snapshot once: a request that
//! repeats a volume is the CO's mistake (INVALID_ARGUMENT, before the driver sees it), a group
//! that repeats a snapshot id the driver's (INTERNAL).

mod common;

use std::time::SystemTime;

use common::{TestDriver, full_plugin, serve};
use csi_types::client::Client;
use csi_types::{
    Code, CsiError, RawCsi,
    group_controller::{CreateVolumeGroupSnapshotResponse, VolumeGroupSnapshot},
    ids::{GroupSnapshotId, SnapshotId, VolumeId},
    proto,
    types::Snapshot,
};

#[tokio::test]
async fn a_volume_listed_twice_is_invalid_argument_naming_the_repeat() {
    let served = serve(full_plugin(TestDriver::default())).await;
    let client = Client::connect(&served.endpoint).await.unwrap();
    let err = RawCsi::raw_create_volume_group_snapshot(
        &client,
        proto::CreateVolumeGroupSnapshotRequest {
            name: "g1".into(),
            source_volume_ids: vec!["v1".into(), "v2".into(), "v1".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("source_volume_ids[2]") && msg.contains("repeats source_volume_ids[0]"),
        "{msg}"
    );
    served.stop().await;
}

fn member(id: &str, group: &GroupSnapshotId) -> Snapshot {
    Snapshot::new(
        SnapshotId::new(id).unwrap(),
        VolumeId::new(format!("v-{id}")).unwrap(),
        0,
        SystemTime::UNIX_EPOCH,
        true,
    )
    .with_group_snapshot_id(group.clone())
}

#[test]
fn a_snapshot_listed_twice_in_a_group_is_refused_both_ways() {
    let group = GroupSnapshotId::new("g").unwrap();
    let typed = CreateVolumeGroupSnapshotResponse::new(VolumeGroupSnapshot {
        group_snapshot_id: group.clone(),
        snapshots: vec![
            member("s1", &group),
            member("s2", &group),
            member("s1", &group),
        ],
        creation_time: SystemTime::UNIX_EPOCH,
        ready_to_use: true,
    });
    let field = "group_snapshot.snapshots[2].snapshot_id";
    // Built by a driver: the conversion to the wire refuses it, and the plugin answers INTERNAL.
    let e = proto::CreateVolumeGroupSnapshotResponse::try_from(typed.clone()).unwrap_err();
    assert!(
        matches!(&e, CsiError::InvalidArgument { field: f, rule } if f == field
            && rule.contains("repeats group_snapshot.snapshots[0]")),
        "{e:?}"
    );
    let e = e.built_by_driver("CreateVolumeGroupSnapshotResponse");
    assert_eq!(e.code(), Code::Internal, "{e}");
    // Received from a plugin: the in-place check refuses it too.
    let mut wire = proto::CreateVolumeGroupSnapshotResponse::try_from(
        CreateVolumeGroupSnapshotResponse::new(VolumeGroupSnapshot {
            group_snapshot_id: group.clone(),
            snapshots: vec![member("s1", &group), member("s2", &group)],
            creation_time: SystemTime::UNIX_EPOCH,
            ready_to_use: true,
        }),
    )
    .unwrap();
    let mut again = wire.group_snapshot.as_ref().unwrap().snapshots[0].clone();
    again.source_volume_id = "v-other".into();
    wire.group_snapshot.as_mut().unwrap().snapshots.push(again);
    let e = CreateVolumeGroupSnapshotResponse::try_from(wire).unwrap_err();
    assert!(
        matches!(&e, CsiError::InvalidArgument { field: f, .. } if f == field),
        "{e:?}"
    );
}
