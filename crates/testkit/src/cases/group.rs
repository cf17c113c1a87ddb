//! GroupController service cases.

use std::collections::BTreeSet;

use csi_types::{
    Code,
    capabilities::ControllerCapabilities as CC,
    group_controller::{CreateVolumeGroupSnapshotResponse, GetVolumeGroupSnapshotResponse},
    proto,
};

use super::{Case, Missing, UNKNOWN_ID, case};
use crate::ctx::{Answer, CaseError, Cleanup, Ctx, code, ensure, ok_raw};

fn need(c: &Ctx) -> Result<(), CaseError> {
    c.need_group()?;
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")
}

async fn send_create(
    c: &Ctx,
    req: proto::CreateVolumeGroupSnapshotRequest,
) -> Result<proto::CreateVolumeGroupSnapshotResponse, csi_types::CsiError> {
    let r = c.ctl().raw_create_volume_group_snapshot(req).await;
    if let Ok(resp) = &r
        && let Some(g) = &resp.group_snapshot
    {
        let id = g.group_snapshot_id.clone();
        c.forget(|x| matches!(x, Cleanup::GroupSnapshot(i, _) if *i == id));
        c.push(Cleanup::GroupSnapshot(
            g.group_snapshot_id.clone(),
            g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect(),
        ));
    }
    r
}

/// `CreateVolumeGroupSnapshot` of volumes the case just made: skips when
/// the plugin answers `FAILED_PRECONDITION`, the spec's "Cannot snapshot
/// multiple volumes together" (the volumes are not configured the way the
/// plugin requires for group snapshots, which the suite cannot arrange
/// beyond the configured parameters).
async fn create_group(
    c: &Ctx,
    rpc: &str,
    req: proto::CreateVolumeGroupSnapshotRequest,
) -> Result<CreateVolumeGroupSnapshotResponse, CaseError> {
    match send_create(c, req).await {
        Err(e) if e.code() == Code::FailedPrecondition => Err(CaseError::Skip(format!(
            "{rpc} answered {}: the volumes cannot be snapshotted together as configured (the spec's \"cannot snapshot multiple volumes together\"; set the parameters they need)",
            crate::ctx::describe(&e)
        ))),
        r => c.ok(rpc, r),
    }
}

/// A group snapshot of one fresh volume: the object for the cases whose
/// object-bound `snapshot_ids` is left out, so that only one rule applies.
async fn group(c: &Ctx) -> Result<String, CaseError> {
    let v = c.volume("gsrc").await?;
    let g = create_group(
        c,
        "CreateVolumeGroupSnapshot",
        proto::CreateVolumeGroupSnapshotRequest {
            name: c.name("group"),
            source_volume_ids: vec![v.volume_id.to_string()],
            ..Default::default()
        },
    )
    .await?;
    Ok(g.group_snapshot.group_snapshot_id.into_string())
}

/// A group snapshot id that does not exist, with the member snapshot ids
/// to send along (`snapshot_ids` is REQUIRED): those of a group snapshot
/// the case makes and deletes when the plugin can, else [`UNKNOWN_ID`]
/// (see [`Missing`]: a plugin whose ids have a format may refuse a made-up
/// one as malformed, but a deleted group's id is its own).
async fn gone_group(c: &Ctx) -> Result<(Missing, Vec<String>), CaseError> {
    let made_up = || Ok((Missing::made_up(), vec![UNKNOWN_ID.to_string()]));
    if !c.found().controller.contains(CC::CREATE_DELETE_VOLUME) {
        return made_up();
    }
    let v = c.volume("gone-gsrc").await?;
    let r = send_create(
        c,
        proto::CreateVolumeGroupSnapshotRequest {
            name: c.name("gone-group"),
            source_volume_ids: vec![v.volume_id.to_string()],
            ..Default::default()
        },
    )
    .await;
    let Some(g) = r
        .ok()
        .and_then(|r| r.group_snapshot)
        .filter(|g| !g.group_snapshot_id.is_empty() && !g.snapshots.is_empty())
    else {
        // The group cases judge the refusal or the malformed group; this
        // one makes do.
        return made_up();
    };
    let id = g.group_snapshot_id;
    let snapshot_ids: Vec<String> = g.snapshots.into_iter().map(|s| s.snapshot_id).collect();
    ok_raw(
        "DeleteVolumeGroupSnapshot",
        c.ctl()
            .raw_delete_volume_group_snapshot(proto::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: id.clone(),
                snapshot_ids: snapshot_ids.clone(),
                ..Default::default()
            })
            .await,
    )?;
    c.forget(|x| matches!(x, Cleanup::GroupSnapshot(i, _) if *i == id));
    Ok((Missing { id, made_up: false }, snapshot_ids))
}

/// Why the missing group snapshot's answer is preferred to the field's.
const MISSING_GROUP_FIRST: &str = "the group snapshot does not exist, and `snapshot_ids` only cross-checks an existing group (the SDK's precedence rule answers for the missing object first)";

/// The two cases of an RPC whose `snapshot_ids` is object-bound
/// (`csi_types::bound`): without it, for an existing group snapshot (only
/// `INVALID_ARGUMENT` applies); and without it, for an unknown one (the
/// missing object's answer preferred).
macro_rules! snapshot_ids_cases {
    ($prefix:literal, $rpc:literal, $method:ident, $req:ident, $missing:expr) => {
        [
            case!(
                concat!($prefix, "/missing_snapshot_ids"),
                concat!(
                    $rpc,
                    " of an existing group snapshot without `snapshot_ids` answers INVALID_ARGUMENT"
                ),
                |c| {
                    need(&c)?;
                    let id = group(&c).await?;
                    let r = c
                        .ctl()
                        .$method(proto::$req {
                            group_snapshot_id: id,
                            ..Default::default()
                        })
                        .await;
                    code(
                        concat!($rpc, " (no snapshot_ids)"),
                        r,
                        Code::InvalidArgument,
                    )
                }
            ),
            case!(
                concat!($prefix, "/unknown_id_without_snapshot_ids"),
                concat!(
                    $rpc,
                    " of a group snapshot that does not exist, without `snapshot_ids`, gives the missing object's answer (INVALID_ARGUMENT passes with a warning)"
                ),
                |c| {
                    c.need_group()?;
                    let r = c
                        .ctl()
                        .$method(proto::$req {
                            group_snapshot_id: UNKNOWN_ID.into(),
                            ..Default::default()
                        })
                        .await;
                    c.answer(
                        concat!($rpc, " (unknown id, no snapshot_ids)"),
                        r,
                        $missing,
                        &[Answer::Code(Code::InvalidArgument)],
                        MISSING_GROUP_FIRST,
                    )
                }
            ),
        ]
    };
}

pub(super) fn cases() -> Vec<Case> {
    let mut v = vec![
        case!(
            "group/get_capabilities",
            "GroupControllerGetCapabilities answers when GROUP_CONTROLLER_SERVICE is advertised",
            |c| {
                if !c
                    .found()
                    .plugin
                    .contains(csi_types::capabilities::PluginCapabilities::GROUP_CONTROLLER_SERVICE)
                {
                    return Err(CaseError::Skip(
                        "the plugin does not advertise GROUP_CONTROLLER_SERVICE".into(),
                    ));
                }
                let _: csi_types::group_controller::GroupControllerGetCapabilitiesResponse = c.ok(
                    "GroupControllerGetCapabilities",
                    c.ctl()
                        .raw_group_controller_get_capabilities(Default::default())
                        .await,
                )?;
                Ok(())
            }
        ),
        case!(
            "group/create/missing_name",
            "CreateVolumeGroupSnapshot without `name` answers INVALID_ARGUMENT",
            |c| {
                need(&c)?;
                let v = c.volume("gsrc").await?;
                let r = send_create(
                    &c,
                    proto::CreateVolumeGroupSnapshotRequest {
                        source_volume_ids: vec![v.volume_id.to_string()],
                        ..Default::default()
                    },
                )
                .await;
                code("CreateVolumeGroupSnapshot", r, Code::InvalidArgument)
            }
        ),
        case!(
            "group/create/missing_source_volume_ids",
            "CreateVolumeGroupSnapshot without `source_volume_ids` answers INVALID_ARGUMENT",
            |c| {
                need(&c)?;
                let r = send_create(
                    &c,
                    proto::CreateVolumeGroupSnapshotRequest {
                        name: c.name("group"),
                        ..Default::default()
                    },
                )
                .await;
                code("CreateVolumeGroupSnapshot", r, Code::InvalidArgument)
            }
        ),
        case!(
            "group/delete/missing_group_snapshot_id",
            "DeleteVolumeGroupSnapshot without `group_snapshot_id` answers INVALID_ARGUMENT",
            |c| {
                c.need_group()?;
                let r = c
                    .ctl()
                    .raw_delete_volume_group_snapshot(proto::DeleteVolumeGroupSnapshotRequest {
                        snapshot_ids: vec![UNKNOWN_ID.into()],
                        ..Default::default()
                    })
                    .await;
                code("DeleteVolumeGroupSnapshot", r, Code::InvalidArgument)
            }
        ),
        case!(
            "group/get/missing_group_snapshot_id",
            "GetVolumeGroupSnapshot without `group_snapshot_id` answers INVALID_ARGUMENT",
            |c| {
                c.need_group()?;
                let r = c
                    .ctl()
                    .raw_get_volume_group_snapshot(proto::GetVolumeGroupSnapshotRequest {
                        snapshot_ids: vec![UNKNOWN_ID.into()],
                        ..Default::default()
                    })
                    .await;
                code("GetVolumeGroupSnapshot", r, Code::InvalidArgument)
            }
        ),
        case!(
            "group/get/unknown_id",
            "GetVolumeGroupSnapshot of a group snapshot that does not exist answers NOT_FOUND",
            |c| {
                c.need_group()?;
                let (gone, snapshot_ids) = gone_group(&c).await?;
                let r = c
                    .ctl()
                    .raw_get_volume_group_snapshot(proto::GetVolumeGroupSnapshotRequest {
                        group_snapshot_id: gone.id.clone(),
                        snapshot_ids,
                        ..Default::default()
                    })
                    .await;
                c.not_found("GetVolumeGroupSnapshot", r, &gone)
            }
        ),
        case!(
            "group/delete/unknown_id",
            "DeleteVolumeGroupSnapshot of a group snapshot that does not exist succeeds (for a made-up id, INVALID_ARGUMENT passes with a warning)",
            |c| {
                c.need_group()?;
                let (gone, snapshot_ids) = gone_group(&c).await?;
                let r = c
                    .ctl()
                    .raw_delete_volume_group_snapshot(proto::DeleteVolumeGroupSnapshotRequest {
                        group_snapshot_id: gone.id.clone(),
                        snapshot_ids,
                        ..Default::default()
                    })
                    .await;
                let mut also = Vec::new();
                if gone.is_made_up() {
                    // A plugin whose ids have a format may refuse a made-up
                    // one as malformed (see `Missing`).
                    also.push(Answer::Code(Code::InvalidArgument));
                }
                c.answer(
                    "DeleteVolumeGroupSnapshot (unknown id)",
                    r,
                    Answer::Ok,
                    &also,
                    "the spec says a group snapshot that does not exist MUST be answered OK, and a made-up id may be malformed for the plugin",
                )
            }
        ),
        case!(
            "group/lifecycle",
            "CreateVolumeGroupSnapshot twice returns the same group with one snapshot per volume; Get returns it; Delete twice succeeds",
            |c| {
                need(&c)?;
                let v1 = c.volume("gsrc").await?;
                let v2 = c.volume("gsrc").await?;
                let req = proto::CreateVolumeGroupSnapshotRequest {
                    name: c.name("group"),
                    source_volume_ids: vec![v1.volume_id.to_string(), v2.volume_id.to_string()],
                    ..Default::default()
                };
                let a = create_group(&c, "CreateVolumeGroupSnapshot", req.clone()).await?;
                let b: CreateVolumeGroupSnapshotResponse = c.ok(
                    "CreateVolumeGroupSnapshot (retry)",
                    send_create(&c, req).await,
                )?;
                let g = a.group_snapshot;
                ensure!(
                    g.group_snapshot_id == b.group_snapshot.group_snapshot_id,
                    "CreateVolumeGroupSnapshot retried returned another group: {} then {}",
                    g.group_snapshot_id,
                    b.group_snapshot.group_snapshot_id
                );
                let sources: BTreeSet<String> = g
                    .snapshots
                    .iter()
                    .map(|s| s.source_volume_id.to_string())
                    .collect();
                let wanted: BTreeSet<String> =
                    [v1.volume_id.to_string(), v2.volume_id.to_string()].into();
                ensure!(
                    sources == wanted,
                    "CreateVolumeGroupSnapshot: the snapshots' sources are {sources:?}, expected {wanted:?}"
                );
                for s in &g.snapshots {
                    ensure!(
                        s.group_snapshot_id.as_ref() == Some(&g.group_snapshot_id),
                        "snapshot {} of group {} has group_snapshot_id {:?}",
                        s.snapshot_id,
                        g.group_snapshot_id,
                        s.group_snapshot_id
                    );
                }
                let ids: Vec<String> = g
                    .snapshots
                    .iter()
                    .map(|s| s.snapshot_id.to_string())
                    .collect();
                let got: GetVolumeGroupSnapshotResponse = c.ok(
                    "GetVolumeGroupSnapshot",
                    c.ctl()
                        .raw_get_volume_group_snapshot(proto::GetVolumeGroupSnapshotRequest {
                            group_snapshot_id: g.group_snapshot_id.to_string(),
                            snapshot_ids: ids.clone(),
                            ..Default::default()
                        })
                        .await,
                )?;
                ensure!(
                    got.group_snapshot.group_snapshot_id == g.group_snapshot_id,
                    "GetVolumeGroupSnapshot returned {}",
                    got.group_snapshot.group_snapshot_id
                );
                let del = proto::DeleteVolumeGroupSnapshotRequest {
                    group_snapshot_id: g.group_snapshot_id.to_string(),
                    snapshot_ids: ids,
                    ..Default::default()
                };
                ok_raw(
                    "DeleteVolumeGroupSnapshot",
                    c.ctl().raw_delete_volume_group_snapshot(del.clone()).await,
                )?;
                ok_raw(
                    "DeleteVolumeGroupSnapshot (again)",
                    c.ctl().raw_delete_volume_group_snapshot(del).await,
                )?;
                let gid = g.group_snapshot_id.to_string();
                c.forget(|x| matches!(x, Cleanup::GroupSnapshot(i, _) if *i == gid));
                Ok(())
            }
        ),
        case!(
            "group/create/incompatible_existing",
            "CreateVolumeGroupSnapshot with an existing name and other volumes answers ALREADY_EXISTS",
            |c| {
                need(&c)?;
                let v1 = c.volume("gsrc").await?;
                let v2 = c.volume("gsrc").await?;
                let name = c.name("group");
                create_group(
                    &c,
                    "CreateVolumeGroupSnapshot",
                    proto::CreateVolumeGroupSnapshotRequest {
                        name: name.clone(),
                        source_volume_ids: vec![v1.volume_id.to_string()],
                        ..Default::default()
                    },
                )
                .await?;
                let r = send_create(
                    &c,
                    proto::CreateVolumeGroupSnapshotRequest {
                        name,
                        source_volume_ids: vec![v2.volume_id.to_string()],
                        ..Default::default()
                    },
                )
                .await;
                code(
                    "CreateVolumeGroupSnapshot (same name, other volumes)",
                    r,
                    Code::AlreadyExists,
                )
            }
        ),
    ];
    // Deleting a group snapshot that does not exist MUST succeed.
    v.extend(snapshot_ids_cases!(
        "group/delete",
        "DeleteVolumeGroupSnapshot",
        raw_delete_volume_group_snapshot,
        DeleteVolumeGroupSnapshotRequest,
        Answer::Ok
    ));
    v.extend(snapshot_ids_cases!(
        "group/get",
        "GetVolumeGroupSnapshot",
        raw_get_volume_group_snapshot,
        GetVolumeGroupSnapshotRequest,
        Answer::Code(Code::NotFound)
    ));
    v
}
