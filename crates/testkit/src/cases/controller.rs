//! Controller service cases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use csi_types::capabilities::ControllerCapabilities as CC;
use csi_types::{
    Code,
    controller::{
        ControllerExpandVolumeResponse, ControllerGetVolumeResponse,
        ControllerPublishVolumeResponse, CreateSnapshotResponse, CreateVolumeResponse,
        GetCapacityResponse, GetSnapshotResponse, ListSnapshotsResponse,
        ValidateVolumeCapabilitiesResponse,
    },
    proto,
    types::VolumeContentSource,
};

use super::{Case, Missing, UNKNOWN_ID, case, list_all_snapshots, list_all_volumes, rw};
use crate::ctx::{Answer, CaseError, Cleanup, Ctx, code, ensure, fail, ok_raw};

/// A case that sends a request with one REQUIRED field left out and expects
/// `INVALID_ARGUMENT`.
macro_rules! missing {
    ($name:literal, $field:literal, |$c:ident| $need:block, $rpc:literal, $method:ident, $req:expr) => {
        case!(
            $name,
            concat!($rpc, " without `", $field, "` answers INVALID_ARGUMENT"),
            |$c| {
                $need;
                let req = $req;
                let r = $c.ctl().$method(req).await;
                code($rpc, r, Code::InvalidArgument)
            }
        )
    };
}

fn need_create(c: &Ctx) -> Result<(), CaseError> {
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")
}

fn need_snap(c: &Ctx) -> Result<(), CaseError> {
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")?;
    c.need_controller(CC::CREATE_DELETE_SNAPSHOT, "CREATE_DELETE_SNAPSHOT")
}

fn need_publish(c: &Ctx) -> Result<(), CaseError> {
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")?;
    c.need_controller(CC::PUBLISH_UNPUBLISH_VOLUME, "PUBLISH_UNPUBLISH_VOLUME")
}

fn publish_req(
    volume_id: &str,
    node: &str,
    readonly: bool,
) -> proto::ControllerPublishVolumeRequest {
    proto::ControllerPublishVolumeRequest {
        volume_id: volume_id.to_string(),
        node_id: node.to_string(),
        volume_capability: Some(rw()),
        readonly,
        ..Default::default()
    }
}

/// Sends a publish and registers it for cleanup when it succeeds.
async fn send_publish(
    c: &Ctx,
    req: proto::ControllerPublishVolumeRequest,
) -> Result<proto::ControllerPublishVolumeResponse, csi_types::CsiError> {
    let (v, n) = (req.volume_id.clone(), req.node_id.clone());
    let r = c.ctl().raw_controller_publish_volume(req).await;
    if r.is_ok() {
        c.push(Cleanup::ControllerPublish(v, n));
    }
    r
}

/// Waits (up to 60 s) for a snapshot to become `ready_to_use`.
pub(super) async fn wait_ready(c: &Ctx, id: &str) -> Result<(), CaseError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = if c.found().controller.contains(CC::GET_SNAPSHOT) {
            let r: GetSnapshotResponse = c.ok(
                "GetSnapshot",
                c.ctl()
                    .raw_get_snapshot(proto::GetSnapshotRequest {
                        snapshot_id: id.to_string(),
                        ..Default::default()
                    })
                    .await,
            )?;
            r.snapshot.ready_to_use
        } else if c.found().controller.contains(CC::LIST_SNAPSHOTS) {
            let r: ListSnapshotsResponse = c.ok(
                "ListSnapshots",
                c.ctl()
                    .raw_list_snapshots(proto::ListSnapshotsRequest {
                        snapshot_id: id.to_string(),
                        ..Default::default()
                    })
                    .await,
            )?;
            ensure!(
                r.entries.len() == 1,
                "ListSnapshots(snapshot_id={id}): expected 1 entry, got {}",
                r.entries.len()
            );
            r.entries[0].ready_to_use
        } else {
            return Err(CaseError::Skip(
                "the snapshot is not ready_to_use and neither GET_SNAPSHOT nor LIST_SNAPSHOTS is advertised to wait for it".into(),
            ));
        };
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            fail!("snapshot {id} is not ready_to_use after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why a made-up id's preferred answer is the spec's rule for an object that
/// does not exist, though `INVALID_ARGUMENT` passes.
const MADE_UP: &str = "the id is made up, and a plugin whose ids have a format may refuse it as malformed (the spec's general INVALID_ARGUMENT row), but the spec's rule for an object that does not exist applies as well";

/// Checks the `content_source` of a volume made from `want`. The spec makes
/// the field OPTIONAL ("If specified, indicates that the volume is not
/// empty and is pre-populated with data from the specified source"), so
/// leaving it out passes with a warning (Kubernetes' external-provisioner
/// refuses such a volume); another source is false and fails.
fn reported_source(
    c: &Ctx,
    rpc: &str,
    got: &Option<VolumeContentSource>,
    want: VolumeContentSource,
) -> Result<(), CaseError> {
    match got {
        Some(g) if *g == want => Ok(()),
        None => {
            c.warn(format!(
                "{rpc}: the volume reports no content_source (the spec allows it: the field is OPTIONAL); {want:?} is preferred, and Kubernetes' external-provisioner refuses a volume from a source without it"
            ));
            Ok(())
        }
        Some(g) => fail!("{rpc}: content_source is {g:?}, but the volume was made from {want:?}"),
    }
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "controller/get_capabilities",
            "ControllerGetCapabilities answers when CONTROLLER_SERVICE is advertised",
            |c| {
                if !c
                    .found()
                    .plugin
                    .contains(csi_types::capabilities::PluginCapabilities::CONTROLLER_SERVICE)
                {
                    return Err(CaseError::Skip(
                        "the plugin does not advertise CONTROLLER_SERVICE".into(),
                    ));
                }
                let _: csi_types::controller::ControllerGetCapabilitiesResponse = c.ok(
                    "ControllerGetCapabilities",
                    c.ctl()
                        .raw_controller_get_capabilities(Default::default())
                        .await,
                )?;
                Ok(())
            }
        ),
        // ---- CreateVolume / DeleteVolume
        missing!(
            "controller/create_volume/missing_name",
            "name",
            |c| { need_create(&c)? },
            "CreateVolume",
            raw_create_volume,
            {
                let mut r = c.create_req("", c.config().volume_size);
                r.name.clear();
                r
            }
        ),
        case!(
            "controller/create_volume/missing_volume_capabilities",
            "CreateVolume without `volume_capabilities` answers INVALID_ARGUMENT",
            |c| {
                need_create(&c)?;
                let mut r = c.create_req(&c.name("nocaps"), c.config().volume_size);
                r.volume_capabilities.clear();
                code(
                    "CreateVolume",
                    c.send_create(r).await,
                    Code::InvalidArgument,
                )
            }
        ),
        case!(
            "controller/create_volume/idempotent",
            "CreateVolume sent twice with the same name and arguments returns the same volume",
            |c| {
                need_create(&c)?;
                let req = c.create_req(&c.name("idem"), c.config().volume_size);
                let a: CreateVolumeResponse =
                    c.ok("CreateVolume", c.send_create(req.clone()).await)?;
                let b: CreateVolumeResponse =
                    c.ok("CreateVolume (retry)", c.send_create(req).await)?;
                ensure!(
                    a.volume.volume_id == b.volume.volume_id,
                    "CreateVolume retried with the same name returned another volume: {} then {}",
                    a.volume.volume_id,
                    b.volume.volume_id
                );
                ensure!(
                    a.volume.capacity_bytes == b.volume.capacity_bytes,
                    "CreateVolume retried returned capacity {} then {}",
                    a.volume.capacity_bytes,
                    b.volume.capacity_bytes
                );
                ensure!(
                    a.volume.capacity_bytes == 0
                        || a.volume.capacity_bytes >= c.config().volume_size,
                    "CreateVolume: capacity_bytes {} is below required_bytes {}",
                    a.volume.capacity_bytes,
                    c.config().volume_size
                );
                Ok(())
            }
        ),
        case!(
            "controller/create_volume/incompatible_existing",
            "CreateVolume with an existing name and a capacity the volume cannot satisfy answers ALREADY_EXISTS (OUT_OF_RANGE passes with a warning when the plugin refuses that range under a new name too)",
            |c| {
                need_create(&c)?;
                let name = c.name("incompat");
                let size = c.config().volume_size;
                let a: CreateVolumeResponse = c.ok(
                    "CreateVolume",
                    c.send_create(c.create_req(&name, size)).await,
                )?;
                let bigger = a.volume.capacity_bytes.max(size) + size;
                let mut req = c.create_req(&name, bigger);
                req.capacity_range = Some(proto::CapacityRange {
                    required_bytes: bigger as i64,
                    limit_bytes: bigger as i64 + size as i64,
                });
                let rpc = "CreateVolume (same name, larger capacity)";
                if a.volume.capacity_bytes == 0 {
                    // capacity_bytes 0: the volume's capacity is unknown (the spec's example is
                    // an NFS share), so whether it satisfies the larger range is the plugin's
                    // to judge: OK with the same volume passes too.
                    let r = c.send_create(req).await;
                    if let Ok(b) = &r {
                        let id = b.volume.as_ref().map(|v| v.volume_id.as_str());
                        ensure!(
                            id == Some(a.volume.volume_id.as_str()),
                            "{rpc}: answered OK with volume {id:?}, not the existing {}",
                            a.volume.volume_id
                        );
                    }
                    return c.answer(
                        rpc,
                        r,
                        Answer::Code(Code::AlreadyExists),
                        &[Answer::Ok],
                        "the first answer's capacity_bytes was 0 (unknown), so the suite cannot tell whether the volume satisfies the larger range; ALREADY_EXISTS says it does not",
                    );
                }
                let r = c.send_create(req.clone()).await;
                if matches!(&r, Err(e) if e.code() == Code::OutOfRange) {
                    // Two rules apply when the plugin allows no volume of the
                    // larger range at all ("Unsupported `capacity_range`"):
                    // then the same range under a new name is refused too.
                    let mut fresh = req;
                    fresh.name = c.name("incompat-range");
                    match c.send_create(fresh).await {
                        Err(e) if e.code() == Code::OutOfRange => {}
                        Ok(_) => fail!(
                            "{rpc}: answered OUT_OF_RANGE, but the same range under a new name was created, so the range is allowed and only the existing name's rule applies: expected ALREADY_EXISTS"
                        ),
                        Err(e) => fail!(
                            "{rpc}: answered OUT_OF_RANGE, but the same range under a new name answered {} (not OUT_OF_RANGE), so the range is allowed: expected ALREADY_EXISTS",
                            crate::ctx::describe(&e)
                        ),
                    }
                }
                c.answer(
                    rpc,
                    r,
                    Answer::Code(Code::AlreadyExists),
                    &[Answer::Code(Code::OutOfRange)],
                    "the plugin allows no volume of the larger range (a new name gets OUT_OF_RANGE too), so both rules apply; ALREADY_EXISTS tells the CO that the name is taken",
                )
            }
        ),
        case!(
            "controller/create_volume/max_length_name",
            "CreateVolume accepts a 128-byte name, idempotently",
            |c| {
                need_create(&c)?;
                let base = c.name("max");
                let name = format!("{base}{}", "x".repeat(128 - base.len().min(128)));
                let name: String = name.chars().take(128).collect();
                let req = c.create_req(&name, c.config().volume_size);
                let a: CreateVolumeResponse = c.ok(
                    "CreateVolume (128-byte name)",
                    c.send_create(req.clone()).await,
                )?;
                let b: CreateVolumeResponse = c.ok(
                    "CreateVolume (128-byte name, retry)",
                    c.send_create(req).await,
                )?;
                ensure!(
                    a.volume.volume_id == b.volume.volume_id,
                    "CreateVolume retried with a 128-byte name returned another volume: {} then {}",
                    a.volume.volume_id,
                    b.volume.volume_id
                );
                Ok(())
            }
        ),
        case!(
            "controller/create_volume/out_of_range",
            "CreateVolume beyond maximum_volume_size (or 8 EiB when unknown) answers OUT_OF_RANGE (for 8 EiB, RESOURCE_EXHAUSTED passes with a warning)",
            |c| {
                need_create(&c)?;
                let mut required = i64::MAX as u64;
                if c.found().controller.contains(CC::GET_CAPACITY) {
                    let cap: GetCapacityResponse = c.ok(
                        "GetCapacity",
                        c.ctl()
                            .raw_get_capacity(proto::GetCapacityRequest {
                                volume_capabilities: vec![rw()],
                                parameters: c.config().parameters.clone().into_iter().collect(),
                                ..Default::default()
                            })
                            .await,
                    )?;
                    if let Some(max) = cap.maximum_volume_size
                        && max < i64::MAX as u64
                    {
                        required = max + 1;
                    }
                }
                let mut req = c.create_req(&c.name("huge"), required);
                req.capacity_range = Some(proto::CapacityRange {
                    required_bytes: required as i64,
                    limit_bytes: required as i64,
                });
                let rpc = format!("CreateVolume (required_bytes {required})");
                let r = c.send_create(req).await;
                if required < i64::MAX as u64 {
                    // Beyond the plugin's own maximum_volume_size: the range is
                    // not allowed, whatever space there is.
                    return code(&rpc, r, Code::OutOfRange);
                }
                // No maximum reported: a plugin that allows any size may
                // just lack the space, which gRPC's RESOURCE_EXHAUSTED names.
                c.answer(
                    &rpc,
                    r,
                    Answer::Code(Code::OutOfRange),
                    &[Answer::Code(Code::ResourceExhausted)],
                    "no storage serves 8 EiB, so the spec's 'Unsupported capacity_range' applies; a plugin without a maximum_volume_size may answer that it lacks the space instead",
                )
            }
        ),
        missing!(
            "controller/delete_volume/missing_volume_id",
            "volume_id",
            |c| { need_create(&c)? },
            "DeleteVolume",
            raw_delete_volume,
            proto::DeleteVolumeRequest::default()
        ),
        case!(
            "controller/delete_volume/unknown_id",
            "DeleteVolume of an id that does not exist succeeds (for a made-up id, INVALID_ARGUMENT passes with a warning)",
            |c| {
                need_create(&c)?;
                let gone = c.gone_volume().await?;
                ok_raw(
                    "DeleteVolume (deleted volume)",
                    c.ctl()
                        .raw_delete_volume(proto::DeleteVolumeRequest {
                            volume_id: gone.id,
                            ..Default::default()
                        })
                        .await,
                )?;
                let r = c
                    .ctl()
                    .raw_delete_volume(proto::DeleteVolumeRequest {
                        volume_id: UNKNOWN_ID.into(),
                        ..Default::default()
                    })
                    .await;
                c.answer(
                    "DeleteVolume (made-up id)",
                    r,
                    Answer::Ok,
                    &[Answer::Code(Code::InvalidArgument)],
                    MADE_UP,
                )
            }
        ),
        case!(
            "controller/delete_volume/twice",
            "DeleteVolume succeeds twice on the same volume, which is then gone from ListVolumes",
            |c| {
                need_create(&c)?;
                let v = c.volume("del").await?;
                let id = v.volume_id.as_str().to_string();
                let req = proto::DeleteVolumeRequest {
                    volume_id: id.clone(),
                    ..Default::default()
                };
                ok_raw("DeleteVolume", c.ctl().raw_delete_volume(req.clone()).await)?;
                ok_raw("DeleteVolume (again)", c.ctl().raw_delete_volume(req).await)?;
                c.forget(|x| matches!(x, Cleanup::Volume(i) if *i == id));
                if c.found().controller.contains(CC::LIST_VOLUMES) {
                    let ids = list_all_volumes(&c, 0).await?;
                    ensure!(
                        !ids.contains(&id),
                        "ListVolumes still lists deleted volume {id}"
                    );
                }
                Ok(())
            }
        ),
        // ---- ValidateVolumeCapabilities
        missing!(
            "controller/validate_volume_capabilities/missing_volume_id",
            "volume_id",
            |c| { need_create(&c)? },
            "ValidateVolumeCapabilities",
            raw_validate_volume_capabilities,
            proto::ValidateVolumeCapabilitiesRequest {
                volume_capabilities: vec![rw()],
                ..Default::default()
            }
        ),
        case!(
            "controller/validate_volume_capabilities/missing_volume_capabilities",
            "ValidateVolumeCapabilities without `volume_capabilities` answers INVALID_ARGUMENT",
            |c| {
                need_create(&c)?;
                let v = c.volume("vvc").await?;
                let r = c
                    .ctl()
                    .raw_validate_volume_capabilities(proto::ValidateVolumeCapabilitiesRequest {
                        volume_id: v.volume_id.into_string(),
                        ..Default::default()
                    })
                    .await;
                code("ValidateVolumeCapabilities", r, Code::InvalidArgument)
            }
        ),
        case!(
            "controller/validate_volume_capabilities/unknown_volume",
            "ValidateVolumeCapabilities of a volume that does not exist answers NOT_FOUND",
            |c| {
                if !c
                    .found()
                    .plugin
                    .contains(csi_types::capabilities::PluginCapabilities::CONTROLLER_SERVICE)
                {
                    return Err(CaseError::Skip(
                        "the plugin does not advertise CONTROLLER_SERVICE".into(),
                    ));
                }
                let gone = c.gone_volume().await?;
                let r = c
                    .ctl()
                    .raw_validate_volume_capabilities(proto::ValidateVolumeCapabilitiesRequest {
                        volume_id: gone.id.clone(),
                        volume_capabilities: vec![rw()],
                        ..Default::default()
                    })
                    .await;
                c.not_found("ValidateVolumeCapabilities", r, &gone)
            }
        ),
        case!(
            "controller/validate_volume_capabilities/confirms",
            "ValidateVolumeCapabilities confirms the capability a volume was created with",
            |c| {
                need_create(&c)?;
                let v = c.volume("vvc").await?;
                let r: ValidateVolumeCapabilitiesResponse = c.ok(
                    "ValidateVolumeCapabilities",
                    c.ctl()
                        .raw_validate_volume_capabilities(
                            proto::ValidateVolumeCapabilitiesRequest {
                                volume_id: v.volume_id.into_string(),
                                volume_context: v.volume_context.into_iter().collect(),
                                volume_capabilities: vec![rw()],
                                parameters: c.config().parameters.clone().into_iter().collect(),
                                ..Default::default()
                            },
                        )
                        .await,
                )?;
                ensure!(
                    r.confirmed.is_some(),
                    "ValidateVolumeCapabilities did not confirm the capability the volume was created with ({})",
                    if r.message.is_empty() {
                        "and gave no message saying why"
                    } else {
                        r.message.as_str()
                    }
                );
                Ok(())
            }
        ),
        // ---- ListVolumes
        case!(
            "controller/list_volumes/pagination",
            "ListVolumes in pages of 2 returns every volume exactly once",
            |c| {
                need_create(&c)?;
                c.need_controller(CC::LIST_VOLUMES, "LIST_VOLUMES")?;
                let mut created = BTreeSet::new();
                for _ in 0..5 {
                    created.insert(c.volume("page").await?.volume_id.into_string());
                }
                let ids = list_all_volumes(&c, 2).await?;
                let mut seen = BTreeSet::new();
                for id in &ids {
                    ensure!(
                        seen.insert(id.clone()),
                        "ListVolumes returned {id} on two pages"
                    );
                }
                for id in &created {
                    ensure!(
                        seen.contains(id),
                        "ListVolumes in pages of 2 lost volume {id}"
                    );
                }
                let all = list_all_volumes(&c, 0).await?;
                ensure!(
                    all.iter().collect::<BTreeSet<_>>() == ids.iter().collect::<BTreeSet<_>>(),
                    "ListVolumes without max_entries returned other volumes than in pages of 2"
                );
                Ok(())
            }
        ),
        case!(
            "controller/list_volumes/bad_token",
            "ListVolumes with a starting_token the plugin never issued answers ABORTED",
            |c| {
                c.need_controller(CC::LIST_VOLUMES, "LIST_VOLUMES")?;
                let r = c
                    .ctl()
                    .raw_list_volumes(proto::ListVolumesRequest {
                        max_entries: 1,
                        starting_token: "csi-testkit-not-a-token".into(),
                    })
                    .await;
                code("ListVolumes (bad token)", r, Code::Aborted)
            }
        ),
        case!(
            "controller/list_volumes/changes_between_pages",
            "volumes added and deleted between pages: the next token still works (or answers ABORTED) and the listing ends; started again, it lists every volume once (repeats or losses across the change pass with a warning)",
            |c| {
                need_create(&c)?;
                c.need_controller(CC::LIST_VOLUMES, "LIST_VOLUMES")?;
                let mut stay = BTreeSet::new();
                for _ in 0..4 {
                    stay.insert(c.volume("chg").await?.volume_id.into_string());
                }
                let first: csi_types::controller::ListVolumesResponse = c.ok(
                    "ListVolumes",
                    c.ctl()
                        .raw_list_volumes(proto::ListVolumesRequest {
                            max_entries: 2,
                            starting_token: String::new(),
                        })
                        .await,
                )?;
                let Some(mut token) = first.next_token.clone() else {
                    fail!(
                        "ListVolumes with max_entries 2 and at least 4 volumes returned no next_token"
                    );
                };
                let mut seen: Vec<String> = first
                    .entries
                    .iter()
                    .map(|e| e.volume.volume_id.to_string())
                    .collect();
                // Delete the last volume of the first page (if it is ours) and add one.
                let mut deleted = None;
                if let Some(last) = seen.last().cloned()
                    && stay.remove(&last)
                {
                    ok_raw(
                        "DeleteVolume",
                        c.ctl()
                            .raw_delete_volume(proto::DeleteVolumeRequest {
                                volume_id: last.clone(),
                                ..Default::default()
                            })
                            .await,
                    )?;
                    c.forget(|x| matches!(x, Cleanup::Volume(i) if *i == last));
                    deleted = Some(last);
                }
                let added = c.volume("chg-new").await?.volume_id.into_string();
                let (mut ended, mut aborted) = (false, false);
                for _ in 0..10_000 {
                    let r = c
                        .ctl()
                        .raw_list_volumes(proto::ListVolumesRequest {
                            max_entries: 2,
                            starting_token: token.clone(),
                        })
                        .await;
                    // "Invalid `starting_token`": a plugin may invalidate its
                    // tokens when the volumes change; the CO starts again.
                    if let Err(e) = &r
                        && e.code() == Code::Aborted
                    {
                        c.warn(format!(
                            "ListVolumes with a next_token issued before volumes were added and deleted answered {} (a CO starts the listing again)",
                            crate::ctx::describe(e)
                        ));
                        aborted = true;
                        break;
                    }
                    let r: csi_types::controller::ListVolumesResponse =
                        c.ok("ListVolumes (after changes)", r)?;
                    seen.extend(r.entries.iter().map(|e| e.volume.volume_id.to_string()));
                    match r.next_token {
                        Some(t) => token = t,
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if ended {
                    // The spec: while volumes are created or deleted during
                    // paging, the CO "MAY either witness duplicate volumes in
                    // the list, not witness existing volumes, or both".
                    let mut uniq = BTreeSet::new();
                    let repeated: BTreeSet<&String> =
                        seen.iter().filter(|id| !uniq.insert(id.as_str())).collect();
                    let missed: Vec<&String> = stay
                        .iter()
                        .filter(|id| !uniq.contains(id.as_str()))
                        .collect();
                    if !repeated.is_empty() || !missed.is_empty() {
                        c.warn(format!(
                            "ListVolumes across pages with volumes added and deleted in between repeated {repeated:?} and missed {missed:?} (volumes that existed throughout); the spec allows both, but a CO that pages through them sees an inconsistent list"
                        ));
                    }
                } else if !aborted {
                    fail!("ListVolumes (after changes): next_token never ended after 10000 pages");
                }
                // Started again with nothing changing, the listing is exact.
                let again = list_all_volumes(&c, 2).await?;
                let mut uniq = BTreeSet::new();
                for id in &again {
                    ensure!(
                        uniq.insert(id.clone()),
                        "ListVolumes, started again after the changes, returned {id} on two pages"
                    );
                }
                for id in stay.iter().chain([&added]) {
                    ensure!(
                        uniq.contains(id),
                        "ListVolumes, started again after the changes, does not list volume {id}"
                    );
                }
                if let Some(gone) = &deleted {
                    ensure!(
                        !uniq.contains(gone),
                        "ListVolumes, started again after the changes, still lists deleted volume {gone}"
                    );
                }
                Ok(())
            }
        ),
        case!(
            "controller/list_volumes/published_nodes",
            "with LIST_VOLUMES_PUBLISHED_NODES, ListVolumes reports the node a volume is published to, and not after unpublishing",
            |c| {
                need_publish(&c)?;
                c.need_controller(CC::LIST_VOLUMES, "LIST_VOLUMES")?;
                c.need_controller(
                    CC::LIST_VOLUMES_PUBLISHED_NODES,
                    "LIST_VOLUMES_PUBLISHED_NODES",
                )?;
                let v = c.volume("pubnodes").await?;
                let node = c.node_id()?;
                let _: ControllerPublishVolumeResponse = c.ok(
                    "ControllerPublishVolume",
                    send_publish(&c, publish_req(v.volume_id.as_str(), &node, false)).await,
                )?;
                let nodes_of = |c: Ctx, id: String| async move {
                    let mut token = String::new();
                    loop {
                        let r: csi_types::controller::ListVolumesResponse = c.ok(
                            "ListVolumes",
                            c.ctl()
                                .raw_list_volumes(proto::ListVolumesRequest {
                                    max_entries: 0,
                                    starting_token: token.clone(),
                                })
                                .await,
                        )?;
                        if let Some(e) =
                            r.entries.iter().find(|e| e.volume.volume_id.as_str() == id)
                        {
                            return Ok::<_, CaseError>(e.status.as_ref().map(|s| {
                                s.published_node_ids
                                    .iter()
                                    .map(|n| n.to_string())
                                    .collect::<Vec<_>>()
                            }));
                        }
                        match r.next_token {
                            Some(t) => token = t,
                            None => fail!("ListVolumes does not list volume {id}"),
                        }
                    }
                };
                let id = v.volume_id.to_string();
                let published = nodes_of(c.clone(), id.clone()).await?;
                ensure!(
                    published.as_ref().is_some_and(|n| n.contains(&node)),
                    "ListVolumes reports published_node_ids {published:?} for {id}, published to {node}"
                );
                ok_raw(
                    "ControllerUnpublishVolume",
                    c.ctl()
                        .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                            volume_id: id.clone(),
                            node_id: node.clone(),
                            ..Default::default()
                        })
                        .await,
                )?;
                let after = nodes_of(c.clone(), id.clone()).await?;
                ensure!(
                    !after.unwrap_or_default().contains(&node),
                    "ListVolumes still reports {id} published to {node} after ControllerUnpublishVolume"
                );
                Ok(())
            }
        ),
        // ---- GetCapacity
        case!(
            "controller/get_capacity",
            "GetCapacity answers; minimum_volume_size above maximum_volume_size, or available capacity that rises after creating a volume, is a warning",
            |c| {
                c.need_controller(CC::GET_CAPACITY, "GET_CAPACITY")?;
                let req = proto::GetCapacityRequest {
                    volume_capabilities: vec![rw()],
                    parameters: c.config().parameters.clone().into_iter().collect(),
                    ..Default::default()
                };
                let before: GetCapacityResponse =
                    c.ok("GetCapacity", c.ctl().raw_get_capacity(req.clone()).await)?;
                if let (Some(min), Some(max)) =
                    (before.minimum_volume_size, before.maximum_volume_size)
                {
                    // Not a spec rule: the minimum bounds `limit_bytes` and
                    // the maximum `required_bytes`, and the spec ties them
                    // to nothing but "MUST NOT be negative" (checked when
                    // the response is read).
                    if min > max {
                        c.warn(format!(
                            "GetCapacity: minimum_volume_size {min} exceeds maximum_volume_size {max} (the spec does not forbid it, but a CO may conclude that no volume fits)"
                        ));
                    }
                }
                if c.found().controller.contains(CC::CREATE_DELETE_VOLUME) {
                    c.volume("cap").await?;
                    let after: GetCapacityResponse =
                        c.ok("GetCapacity", c.ctl().raw_get_capacity(req).await)?;
                    // Not a spec rule: space freed elsewhere in a shared pool
                    // raises the available capacity whatever the case made.
                    if after.available_capacity > before.available_capacity {
                        c.warn(format!(
                            "GetCapacity: available capacity rose from {} to {} after creating a volume (the spec allows it: space may have been freed elsewhere)",
                            before.available_capacity, after.available_capacity
                        ));
                    }
                }
                Ok(())
            }
        ),
        // ---- ControllerGetVolume
        missing!(
            "controller/get_volume/missing_volume_id",
            "volume_id",
            |c| { c.need_controller(CC::GET_VOLUME, "GET_VOLUME")? },
            "ControllerGetVolume",
            raw_controller_get_volume,
            proto::ControllerGetVolumeRequest::default()
        ),
        case!(
            "controller/get_volume/unknown_volume",
            "ControllerGetVolume of a volume that does not exist answers NOT_FOUND; of one that does, returns it",
            |c| {
                c.need_controller(CC::GET_VOLUME, "GET_VOLUME")?;
                let gone = c.gone_volume().await?;
                let r = c
                    .ctl()
                    .raw_controller_get_volume(proto::ControllerGetVolumeRequest {
                        volume_id: gone.id.clone(),
                    })
                    .await;
                c.not_found("ControllerGetVolume", r, &gone)?;
                if c.found().controller.contains(CC::CREATE_DELETE_VOLUME) {
                    let v = c.volume("get").await?;
                    let g: ControllerGetVolumeResponse = c.ok(
                        "ControllerGetVolume",
                        c.ctl()
                            .raw_controller_get_volume(proto::ControllerGetVolumeRequest {
                                volume_id: v.volume_id.to_string(),
                            })
                            .await,
                    )?;
                    ensure!(
                        g.volume.volume_id == v.volume_id,
                        "ControllerGetVolume returned volume {} for {}",
                        g.volume.volume_id,
                        v.volume_id
                    );
                }
                Ok(())
            }
        ),
        // ---- ControllerPublishVolume / ControllerUnpublishVolume
        // The node's own id, so that only the missing volume id's rule
        // applies (an unknown node would be NOT_FOUND as rightly).
        missing!(
            "controller/publish/missing_volume_id",
            "volume_id",
            |c| { need_publish(&c)? },
            "ControllerPublishVolume",
            raw_controller_publish_volume,
            publish_req("", &c.node_id()?, false)
        ),
        case!(
            "controller/publish/missing_node_id",
            "ControllerPublishVolume without `node_id` answers INVALID_ARGUMENT",
            |c| {
                need_publish(&c)?;
                let v = c.volume("pub").await?;
                code(
                    "ControllerPublishVolume",
                    send_publish(&c, publish_req(v.volume_id.as_str(), "", false)).await,
                    Code::InvalidArgument,
                )
            }
        ),
        case!(
            "controller/publish/missing_volume_capability",
            "ControllerPublishVolume without `volume_capability` answers INVALID_ARGUMENT",
            |c| {
                need_publish(&c)?;
                let v = c.volume("pub").await?;
                let mut req = publish_req(v.volume_id.as_str(), &c.node_id()?, false);
                req.volume_capability = None;
                code(
                    "ControllerPublishVolume",
                    send_publish(&c, req).await,
                    Code::InvalidArgument,
                )
            }
        ),
        case!(
            "controller/publish/unknown_volume",
            "ControllerPublishVolume of a volume that does not exist answers NOT_FOUND",
            |c| {
                need_publish(&c)?;
                let gone = c.gone_volume().await?;
                let r = send_publish(&c, publish_req(&gone.id, &c.node_id()?, false)).await;
                c.not_found("ControllerPublishVolume", r, &gone)
            }
        ),
        case!(
            "controller/publish/unknown_node",
            "ControllerPublishVolume to a node that does not exist answers NOT_FOUND",
            |c| {
                need_publish(&c)?;
                let v = c.volume("pub").await?;
                let r =
                    send_publish(&c, publish_req(v.volume_id.as_str(), UNKNOWN_ID, false)).await;
                c.not_found(
                    "ControllerPublishVolume (unknown node)",
                    r,
                    &Missing::made_up(),
                )
            }
        ),
        case!(
            "controller/publish/idempotent",
            "ControllerPublishVolume sent twice succeeds with the same publish_context; ControllerUnpublishVolume twice succeeds",
            |c| {
                need_publish(&c)?;
                let v = c.volume("pub").await?;
                let node = c.node_id()?;
                let req = publish_req(v.volume_id.as_str(), &node, false);
                let a: ControllerPublishVolumeResponse = c.ok(
                    "ControllerPublishVolume",
                    send_publish(&c, req.clone()).await,
                )?;
                let b: ControllerPublishVolumeResponse = c.ok(
                    "ControllerPublishVolume (retry)",
                    send_publish(&c, req).await,
                )?;
                // The idempotency rule asks only for OK, but the field's
                // own rules forbid another answer: its contents "SHALL NOT
                // be mutable" and "SHALL be safe for the CO to cache", so a
                // CO may pass the first context to NodeStageVolume after a
                // retry it did not see answered.
                ensure!(
                    a.publish_context == b.publish_context,
                    "ControllerPublishVolume retried returned another publish_context (the spec: its contents SHALL NOT be mutable and SHALL be safe for the CO to cache): {:?} then {:?}",
                    a.publish_context,
                    b.publish_context
                );
                let un = proto::ControllerUnpublishVolumeRequest {
                    volume_id: v.volume_id.to_string(),
                    node_id: node,
                    ..Default::default()
                };
                ok_raw(
                    "ControllerUnpublishVolume",
                    c.ctl().raw_controller_unpublish_volume(un.clone()).await,
                )?;
                ok_raw(
                    "ControllerUnpublishVolume (again)",
                    c.ctl().raw_controller_unpublish_volume(un).await,
                )?;
                Ok(())
            }
        ),
        case!(
            "controller/publish/second_node",
            "ControllerPublishVolume of a SINGLE_NODE_WRITER volume to a second node answers FAILED_PRECONDITION",
            |c| {
                need_publish(&c)?;
                let Some(second) = c.config().second_node_id.clone() else {
                    return Err(CaseError::Skip(
                        "no second node id configured (--second-node-id)".into(),
                    ));
                };
                let v = c.volume("pub2").await?;
                let _: ControllerPublishVolumeResponse = c.ok(
                    "ControllerPublishVolume",
                    send_publish(&c, publish_req(v.volume_id.as_str(), &c.node_id()?, false)).await,
                )?;
                let r = send_publish(&c, publish_req(v.volume_id.as_str(), &second, false)).await;
                code(
                    "ControllerPublishVolume (second node)",
                    r,
                    Code::FailedPrecondition,
                )
            }
        ),
        case!(
            "controller/publish/attach_limit",
            "ControllerPublishVolume beyond NodeGetInfo.max_volumes_per_node answers RESOURCE_EXHAUSTED",
            |c| {
                need_publish(&c)?;
                let node = c.node_id()?;
                let Some(max) = c.found().max_volumes_per_node else {
                    return Err(CaseError::Skip(
                        "NodeGetInfo reports no max_volumes_per_node".into(),
                    ));
                };
                if max > 64 {
                    return Err(CaseError::Skip(format!(
                        "max_volumes_per_node is {max}; the case publishes at most 64 volumes"
                    )));
                }
                // Volumes published by others count against the limit too, so
                // publish until the first refusal and check it comes at the limit.
                for i in 0..=max {
                    let v = c.volume("lim").await?;
                    let r = send_publish(&c, publish_req(v.volume_id.as_str(), &node, false)).await;
                    match r {
                        Ok(_) if i == max => fail!(
                            "ControllerPublishVolume: published {} volumes to {node}, but max_volumes_per_node is {max}",
                            max + 1
                        ),
                        Ok(_) => {}
                        Err(e) if e.code() == Code::ResourceExhausted => return Ok(()),
                        Err(e) => fail!(
                            "ControllerPublishVolume #{}: expected OK or RESOURCE_EXHAUSTED, got {}",
                            i + 1,
                            crate::ctx::describe(&e)
                        ),
                    }
                }
                Ok(())
            }
        ),
        case!(
            "controller/publish/incompatible",
            "ControllerPublishVolume again to the same node with another readonly flag answers ALREADY_EXISTS",
            |c| {
                need_publish(&c)?;
                c.need_controller(CC::PUBLISH_READONLY, "PUBLISH_READONLY")?;
                let v = c.volume("pubx").await?;
                let node = c.node_id()?;
                let _: ControllerPublishVolumeResponse = c.ok(
                    "ControllerPublishVolume",
                    send_publish(&c, publish_req(v.volume_id.as_str(), &node, false)).await,
                )?;
                let r = send_publish(&c, publish_req(v.volume_id.as_str(), &node, true)).await;
                code(
                    "ControllerPublishVolume (readonly after read-write)",
                    r,
                    Code::AlreadyExists,
                )
            }
        ),
        missing!(
            "controller/unpublish/missing_volume_id",
            "volume_id",
            |c| { need_publish(&c)? },
            "ControllerUnpublishVolume",
            raw_controller_unpublish_volume,
            // No node id (unpublish from every node): an unknown node would
            // be OK or NOT_FOUND as rightly, so only the missing volume id's
            // rule applies.
            proto::ControllerUnpublishVolumeRequest::default()
        ),
        case!(
            "controller/unpublish/unknown_volume",
            "ControllerUnpublishVolume of a volume that does not exist succeeds (the spec's SHOULD; NOT_FOUND passes with a warning)",
            |c| {
                need_publish(&c)?;
                let gone = c.gone_volume().await?;
                let r = c
                    .ctl()
                    .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                        volume_id: gone.id.clone(),
                        node_id: c.node_id()?,
                        ..Default::default()
                    })
                    .await;
                let mut also = vec![Answer::Code(Code::NotFound)];
                if gone.is_made_up() {
                    // A plugin whose ids have a format may refuse a made-up
                    // one as malformed (see `Missing`).
                    also.push(Answer::Code(Code::InvalidArgument));
                }
                c.answer(
                    "ControllerUnpublishVolume (unknown volume)",
                    r,
                    Answer::Ok,
                    &also,
                    "a volume that cannot be found can be regarded as unpublished, and the spec says the plugin SHOULD answer OK; cleanup loops of COs and test suites depend on it",
                )
            }
        ),
        case!(
            "controller/unpublish/unknown_node",
            "ControllerUnpublishVolume of a volume from a node that does not exist succeeds (the spec's SHOULD; NOT_FOUND passes with a warning)",
            |c| {
                need_publish(&c)?;
                let v = c.volume("unpub").await?;
                let r = c
                    .ctl()
                    .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                        volume_id: v.volume_id.into_string(),
                        node_id: UNKNOWN_ID.into(),
                        ..Default::default()
                    })
                    .await;
                c.answer(
                    "ControllerUnpublishVolume (unknown node)",
                    r,
                    Answer::Ok,
                    &[Answer::Code(Code::NotFound)],
                    "nothing is published to a node that cannot be found, and the spec says the plugin SHOULD answer OK",
                )
            }
        ),
        case!(
            "controller/unpublish/not_published",
            "ControllerUnpublishVolume of a volume that is not published succeeds",
            |c| {
                need_publish(&c)?;
                let v = c.volume("unpub").await?;
                ok_raw(
                    "ControllerUnpublishVolume",
                    c.ctl()
                        .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                            volume_id: v.volume_id.into_string(),
                            node_id: c.node_id()?,
                            ..Default::default()
                        })
                        .await,
                )?;
                Ok(())
            }
        ),
        // ---- Snapshots
        // A known source volume, so that only the missing name's rule applies.
        case!(
            "controller/create_snapshot/missing_name",
            "CreateSnapshot of an existing volume without `name` answers INVALID_ARGUMENT",
            |c| {
                need_snap(&c)?;
                let v = c.volume("snapsrc").await?;
                let r = c
                    .ctl()
                    .raw_create_snapshot(proto::CreateSnapshotRequest {
                        source_volume_id: v.volume_id.into_string(),
                        ..Default::default()
                    })
                    .await;
                code("CreateSnapshot", r, Code::InvalidArgument)
            }
        ),
        missing!(
            "controller/create_snapshot/missing_source_volume_id",
            "source_volume_id",
            |c| { need_snap(&c)? },
            "CreateSnapshot",
            raw_create_snapshot,
            proto::CreateSnapshotRequest {
                name: c.name("nosrc"),
                ..Default::default()
            }
        ),
        case!(
            "controller/create_snapshot/idempotent",
            "CreateSnapshot sent twice returns the same snapshot, of the right source, which becomes ready_to_use",
            |c| {
                need_snap(&c)?;
                let v = c.volume("snapsrc").await?;
                let req = proto::CreateSnapshotRequest {
                    source_volume_id: v.volume_id.to_string(),
                    name: c.name("snap"),
                    ..Default::default()
                };
                let a = c.snapshot_made("CreateSnapshot", c.send_snapshot(req.clone()).await)?;
                let b: CreateSnapshotResponse =
                    c.ok("CreateSnapshot (retry)", c.send_snapshot(req).await)?;
                ensure!(
                    a.snapshot.snapshot_id == b.snapshot.snapshot_id,
                    "CreateSnapshot retried returned another snapshot: {} then {}",
                    a.snapshot.snapshot_id,
                    b.snapshot.snapshot_id
                );
                ensure!(
                    a.snapshot.source_volume_id == v.volume_id,
                    "CreateSnapshot: source_volume_id is {}, expected {}",
                    a.snapshot.source_volume_id,
                    v.volume_id
                );
                if !a.snapshot.ready_to_use {
                    wait_ready(&c, a.snapshot.snapshot_id.as_str()).await?;
                }
                Ok(())
            }
        ),
        case!(
            "controller/create_snapshot/incompatible_existing",
            "CreateSnapshot with an existing name and another source volume answers ALREADY_EXISTS",
            |c| {
                need_snap(&c)?;
                let v1 = c.volume("snapsrc").await?;
                let v2 = c.volume("snapsrc").await?;
                let name = c.name("snap");
                c.snapshot_made(
                    "CreateSnapshot",
                    c.send_snapshot(proto::CreateSnapshotRequest {
                        source_volume_id: v1.volume_id.to_string(),
                        name: name.clone(),
                        ..Default::default()
                    })
                    .await,
                )?;
                let r = c
                    .send_snapshot(proto::CreateSnapshotRequest {
                        source_volume_id: v2.volume_id.to_string(),
                        name,
                        ..Default::default()
                    })
                    .await;
                code(
                    "CreateSnapshot (same name, other source)",
                    r,
                    Code::AlreadyExists,
                )
            }
        ),
        case!(
            "controller/create_snapshot/max_length_name",
            "CreateSnapshot accepts a 128-byte name",
            |c| {
                need_snap(&c)?;
                let v = c.volume("snapsrc").await?;
                let base = c.name("snapmax");
                let name: String = format!("{base}{}", "s".repeat(128))
                    .chars()
                    .take(128)
                    .collect();
                c.snapshot_made(
                    "CreateSnapshot (128-byte name)",
                    c.send_snapshot(proto::CreateSnapshotRequest {
                        source_volume_id: v.volume_id.to_string(),
                        name,
                        ..Default::default()
                    })
                    .await,
                )?;
                Ok(())
            }
        ),
        missing!(
            "controller/delete_snapshot/missing_snapshot_id",
            "snapshot_id",
            |c| { need_snap(&c)? },
            "DeleteSnapshot",
            raw_delete_snapshot,
            proto::DeleteSnapshotRequest::default()
        ),
        case!(
            "controller/delete_snapshot/unknown_id",
            "DeleteSnapshot of an id that does not exist succeeds; of a real snapshot, twice, succeeds",
            |c| {
                need_snap(&c)?;
                let r = c
                    .ctl()
                    .raw_delete_snapshot(proto::DeleteSnapshotRequest {
                        snapshot_id: UNKNOWN_ID.into(),
                        ..Default::default()
                    })
                    .await;
                c.answer(
                    "DeleteSnapshot (made-up id)",
                    r,
                    Answer::Ok,
                    &[Answer::Code(Code::InvalidArgument)],
                    MADE_UP,
                )?;
                let v = c.volume("snapsrc").await?;
                let s = c.snapshot(v.volume_id.as_str(), "snapdel").await?;
                let req = proto::DeleteSnapshotRequest {
                    snapshot_id: s.snapshot_id.to_string(),
                    ..Default::default()
                };
                ok_raw(
                    "DeleteSnapshot",
                    c.ctl().raw_delete_snapshot(req.clone()).await,
                )?;
                ok_raw(
                    "DeleteSnapshot (again)",
                    c.ctl().raw_delete_snapshot(req).await,
                )?;
                let id = s.snapshot_id.to_string();
                c.forget(|x| matches!(x, Cleanup::Snapshot(i) if *i == id));
                Ok(())
            }
        ),
        case!(
            "controller/list_snapshots/filters",
            "ListSnapshots by snapshot_id and by source_volume_id returns exactly the matching snapshots; an unknown filter returns none",
            |c| {
                need_snap(&c)?;
                c.need_controller(CC::LIST_SNAPSHOTS, "LIST_SNAPSHOTS")?;
                let v1 = c.volume("lsrc").await?;
                let v2 = c.volume("lsrc").await?;
                let s1 = c.snapshot(v1.volume_id.as_str(), "ls").await?;
                let s2 = c.snapshot(v2.volume_id.as_str(), "ls").await?;
                let by_id: ListSnapshotsResponse = c.ok(
                    "ListSnapshots(snapshot_id)",
                    c.ctl()
                        .raw_list_snapshots(proto::ListSnapshotsRequest {
                            snapshot_id: s1.snapshot_id.to_string(),
                            ..Default::default()
                        })
                        .await,
                )?;
                ensure!(
                    by_id.entries.len() == 1 && by_id.entries[0].snapshot_id == s1.snapshot_id,
                    "ListSnapshots(snapshot_id={}) returned {:?}",
                    s1.snapshot_id,
                    by_id
                        .entries
                        .iter()
                        .map(|e| e.snapshot_id.to_string())
                        .collect::<Vec<_>>()
                );
                let by_src: ListSnapshotsResponse = c.ok(
                    "ListSnapshots(source_volume_id)",
                    c.ctl()
                        .raw_list_snapshots(proto::ListSnapshotsRequest {
                            source_volume_id: v2.volume_id.to_string(),
                            ..Default::default()
                        })
                        .await,
                )?;
                ensure!(
                    by_src
                        .entries
                        .iter()
                        .any(|e| e.snapshot_id == s2.snapshot_id)
                        && by_src
                            .entries
                            .iter()
                            .all(|e| e.source_volume_id == v2.volume_id),
                    "ListSnapshots(source_volume_id={}) returned {:?}",
                    v2.volume_id,
                    by_src
                        .entries
                        .iter()
                        .map(|e| e.snapshot_id.to_string())
                        .collect::<Vec<_>>()
                );
                let r = c
                    .ctl()
                    .raw_list_snapshots(proto::ListSnapshotsRequest {
                        snapshot_id: UNKNOWN_ID.into(),
                        ..Default::default()
                    })
                    .await;
                // The spec gives no answer for a snapshot_id that matches
                // nothing; an empty list is what COs expect, and a plugin
                // whose ids have a format may refuse the made-up one as
                // malformed (its general INVALID_ARGUMENT row).
                if let Err(e) = &r
                    && e.code() == Code::InvalidArgument
                {
                    c.warn(format!(
                        "ListSnapshots(unknown snapshot_id): answered {}, which the spec allows; OK with no entries is preferred: {MADE_UP}",
                        crate::ctx::describe(e)
                    ));
                    return Ok(());
                }
                let none: ListSnapshotsResponse = c.ok("ListSnapshots(unknown snapshot_id)", r)?;
                ensure!(
                    none.entries.is_empty(),
                    "ListSnapshots(snapshot_id=<unknown>) returned {} entries",
                    none.entries.len()
                );
                Ok(())
            }
        ),
        case!(
            "controller/list_snapshots/unknown_source_volume",
            "ListSnapshots by the source_volume_id of a volume that does not exist answers OK with no entries (for a made-up id, INVALID_ARGUMENT passes with a warning)",
            |c| {
                c.need_controller(CC::LIST_SNAPSHOTS, "LIST_SNAPSHOTS")?;
                let gone = c.gone_volume().await?;
                let r = c
                    .ctl()
                    .raw_list_snapshots(proto::ListSnapshotsRequest {
                        source_volume_id: gone.id.clone(),
                        ..Default::default()
                    })
                    .await;
                let rpc = "ListSnapshots(source_volume_id of a volume that does not exist)";
                // The spec's ListSnapshots has no NOT_FOUND: the filter
                // selects snapshots, which may outlive their source volume,
                // and none matching is an empty list.
                let mut also = Vec::new();
                if gone.is_made_up() {
                    also.push(Answer::Code(Code::InvalidArgument));
                }
                let r = match r {
                    Ok(resp) => resp,
                    Err(e) => {
                        return c.answer(rpc, Err::<(), _>(e), Answer::Ok, &also, MADE_UP);
                    }
                };
                let none: ListSnapshotsResponse = c.ok(rpc, Ok(r))?;
                ensure!(
                    none.entries.is_empty(),
                    "{rpc} returned {} entries",
                    none.entries.len()
                );
                Ok(())
            }
        ),
        case!(
            "controller/list_snapshots/pagination",
            "ListSnapshots in pages of 2 returns every snapshot exactly once",
            |c| {
                need_snap(&c)?;
                c.need_controller(CC::LIST_SNAPSHOTS, "LIST_SNAPSHOTS")?;
                let v = c.volume("lsrc").await?;
                let mut created = BTreeSet::new();
                for _ in 0..5 {
                    created.insert(
                        c.snapshot(v.volume_id.as_str(), "lp")
                            .await?
                            .snapshot_id
                            .into_string(),
                    );
                }
                let ids = list_all_snapshots(&c, 2).await?;
                let mut seen = BTreeSet::new();
                for id in &ids {
                    ensure!(
                        seen.insert(id.clone()),
                        "ListSnapshots returned {id} on two pages"
                    );
                }
                for id in &created {
                    ensure!(
                        seen.contains(id),
                        "ListSnapshots in pages of 2 lost snapshot {id}"
                    );
                }
                Ok(())
            }
        ),
        case!(
            "controller/list_snapshots/bad_token",
            "ListSnapshots with a starting_token the plugin never issued answers ABORTED",
            |c| {
                c.need_controller(CC::LIST_SNAPSHOTS, "LIST_SNAPSHOTS")?;
                let r = c
                    .ctl()
                    .raw_list_snapshots(proto::ListSnapshotsRequest {
                        max_entries: 1,
                        starting_token: "csi-testkit-not-a-token".into(),
                        ..Default::default()
                    })
                    .await;
                code("ListSnapshots (bad token)", r, Code::Aborted)
            }
        ),
        missing!(
            "controller/get_snapshot/missing_snapshot_id",
            "snapshot_id",
            |c| { c.need_controller(CC::GET_SNAPSHOT, "GET_SNAPSHOT")? },
            "GetSnapshot",
            raw_get_snapshot,
            proto::GetSnapshotRequest::default()
        ),
        case!(
            "controller/get_snapshot/unknown_id",
            "GetSnapshot of a snapshot that does not exist answers NOT_FOUND",
            |c| {
                c.need_controller(CC::GET_SNAPSHOT, "GET_SNAPSHOT")?;
                let gone = c.gone_snapshot().await?;
                let r = c
                    .ctl()
                    .raw_get_snapshot(proto::GetSnapshotRequest {
                        snapshot_id: gone.id.clone(),
                        ..Default::default()
                    })
                    .await;
                c.not_found("GetSnapshot", r, &gone)
            }
        ),
        // ---- Restore and clone
        case!(
            "controller/create_volume/from_snapshot",
            "CreateVolume from a ready snapshot reports the snapshot as content source (none passes with a warning: the field is OPTIONAL)",
            |c| {
                need_snap(&c)?;
                let v = c.volume("rsrc").await?;
                let s = c.snapshot(v.volume_id.as_str(), "rsnap").await?;
                if !s.ready_to_use {
                    wait_ready(&c, s.snapshot_id.as_str()).await?;
                }
                let mut req =
                    c.create_req(&c.name("restore"), c.config().volume_size.max(s.size_bytes));
                req.volume_content_source =
                    Some(VolumeContentSource::Snapshot(s.snapshot_id.clone()).into());
                let r: CreateVolumeResponse =
                    c.ok("CreateVolume (from snapshot)", c.send_create(req).await)?;
                reported_source(
                    &c,
                    "CreateVolume (from snapshot)",
                    &r.volume.content_source,
                    VolumeContentSource::Snapshot(s.snapshot_id.clone()),
                )?;
                ensure!(
                    r.volume.capacity_bytes == 0 || r.volume.capacity_bytes >= s.size_bytes,
                    "CreateVolume from a {}-byte snapshot made a {}-byte volume",
                    s.size_bytes,
                    r.volume.capacity_bytes
                );
                Ok(())
            }
        ),
        case!(
            "controller/create_volume/from_unknown_snapshot",
            "CreateVolume from a snapshot that does not exist answers NOT_FOUND",
            |c| {
                need_snap(&c)?;
                let gone = c.gone_snapshot().await?;
                let mut req = c.create_req(&c.name("restore"), c.config().volume_size);
                req.volume_content_source = Some(proto::VolumeContentSource {
                    r#type: Some(proto::volume_content_source::Type::Snapshot(
                        proto::volume_content_source::SnapshotSource {
                            snapshot_id: gone.id.clone(),
                        },
                    )),
                });
                c.not_found(
                    "CreateVolume (from unknown snapshot)",
                    c.send_create(req).await,
                    &gone,
                )
            }
        ),
        case!(
            "controller/create_volume/clone",
            "CreateVolume from a volume reports the volume as content source",
            |c| {
                need_create(&c)?;
                c.need_controller(CC::CLONE_VOLUME, "CLONE_VOLUME")?;
                let v = c.volume("csrc").await?;
                let mut req = c.create_req(
                    &c.name("clone"),
                    c.config().volume_size.max(v.capacity_bytes),
                );
                req.volume_content_source =
                    Some(VolumeContentSource::Volume(v.volume_id.clone()).into());
                let r: CreateVolumeResponse =
                    c.ok("CreateVolume (clone)", c.send_create(req).await)?;
                reported_source(
                    &c,
                    "CreateVolume (clone)",
                    &r.volume.content_source,
                    VolumeContentSource::Volume(v.volume_id.clone()),
                )?;
                ensure!(
                    r.volume.volume_id != v.volume_id,
                    "CreateVolume (clone) returned the source volume's id"
                );
                Ok(())
            }
        ),
        case!(
            "controller/create_volume/clone_unknown_source",
            "CreateVolume cloning a volume that does not exist answers NOT_FOUND",
            |c| {
                need_create(&c)?;
                c.need_controller(CC::CLONE_VOLUME, "CLONE_VOLUME")?;
                let gone = c.gone_volume().await?;
                let mut req = c.create_req(&c.name("clone"), c.config().volume_size);
                req.volume_content_source = Some(proto::VolumeContentSource {
                    r#type: Some(proto::volume_content_source::Type::Volume(
                        proto::volume_content_source::VolumeSource {
                            volume_id: gone.id.clone(),
                        },
                    )),
                });
                c.not_found(
                    "CreateVolume (clone of unknown volume)",
                    c.send_create(req).await,
                    &gone,
                )
            }
        ),
        // ---- ControllerExpandVolume
        missing!(
            "controller/expand_volume/missing_volume_id",
            "volume_id",
            |c| { c.need_controller(CC::EXPAND_VOLUME, "EXPAND_VOLUME")? },
            "ControllerExpandVolume",
            raw_controller_expand_volume,
            // The configured size, which every plugin allows: a size below
            // the plugin's minimum is "Unsupported `capacity_range`", and
            // OUT_OF_RANGE would apply as well.
            proto::ControllerExpandVolumeRequest {
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: c.config().volume_size as i64,
                    limit_bytes: 0
                }),
                ..Default::default()
            }
        ),
        case!(
            "controller/expand_volume/missing_capacity_range",
            "ControllerExpandVolume without `capacity_range` answers INVALID_ARGUMENT",
            |c| {
                c.need_controller(CC::EXPAND_VOLUME, "EXPAND_VOLUME")?;
                need_create(&c)?;
                let v = c.volume("exp").await?;
                let r = c
                    .ctl()
                    .raw_controller_expand_volume(proto::ControllerExpandVolumeRequest {
                        volume_id: v.volume_id.to_string(),
                        ..Default::default()
                    })
                    .await;
                code("ControllerExpandVolume", r, Code::InvalidArgument)
            }
        ),
        case!(
            "controller/expand_volume/unknown_volume",
            "ControllerExpandVolume of a volume that does not exist answers NOT_FOUND",
            |c| {
                c.need_controller(CC::EXPAND_VOLUME, "EXPAND_VOLUME")?;
                // The configured size, which every plugin allows (every case
                // creates volumes of it): a larger one may be beyond the
                // plugin's maximum, and OUT_OF_RANGE then applies as well.
                let gone = c.gone_volume().await?;
                let r = c
                    .ctl()
                    .raw_controller_expand_volume(proto::ControllerExpandVolumeRequest {
                        volume_id: gone.id.clone(),
                        capacity_range: Some(proto::CapacityRange {
                            required_bytes: c.config().volume_size as i64,
                            limit_bytes: 0,
                        }),
                        ..Default::default()
                    })
                    .await;
                c.not_found("ControllerExpandVolume", r, &gone)
            }
        ),
        case!(
            "controller/expand_volume/grow",
            "ControllerExpandVolume grows a volume to at least required_bytes, idempotently",
            |c| {
                c.need_controller(CC::EXPAND_VOLUME, "EXPAND_VOLUME")?;
                need_create(&c)?;
                let v = c.volume("exp").await?;
                let want = v.capacity_bytes.max(c.config().volume_size) * 2;
                let req = proto::ControllerExpandVolumeRequest {
                    volume_id: v.volume_id.to_string(),
                    capacity_range: Some(proto::CapacityRange {
                        required_bytes: want as i64,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                };
                let a = c.ctl().raw_controller_expand_volume(req.clone()).await;
                if let Err(e) = &a
                    && e.code() == Code::OutOfRange
                {
                    return Err(CaseError::Skip(format!(
                        "ControllerExpandVolume to {want} bytes answered OUT_OF_RANGE, which the spec allows (a capacity range the plugin does not allow): {}",
                        crate::ctx::describe(e)
                    )));
                }
                let a: ControllerExpandVolumeResponse = c.ok("ControllerExpandVolume", a)?;
                ensure!(
                    a.capacity_bytes >= want,
                    "ControllerExpandVolume to {want} bytes answered capacity_bytes {}",
                    a.capacity_bytes
                );
                let b: ControllerExpandVolumeResponse = c.ok(
                    "ControllerExpandVolume (retry)",
                    c.ctl().raw_controller_expand_volume(req).await,
                )?;
                ensure!(
                    b.capacity_bytes == a.capacity_bytes,
                    "ControllerExpandVolume retried answered {} then {}",
                    a.capacity_bytes,
                    b.capacity_bytes
                );
                Ok(())
            }
        ),
        // ---- ControllerModifyVolume
        missing!(
            "controller/modify_volume/missing_volume_id",
            "volume_id",
            |c| { c.need_controller(CC::MODIFY_VOLUME, "MODIFY_VOLUME")? },
            "ControllerModifyVolume",
            raw_controller_modify_volume,
            proto::ControllerModifyVolumeRequest {
                mutable_parameters: BTreeMap::from([(
                    "csi-testkit-key".to_string(),
                    "v".to_string()
                )]),
                ..Default::default()
            }
        ),
        case!(
            "controller/modify_volume/missing_mutable_parameters",
            "ControllerModifyVolume without `mutable_parameters` answers INVALID_ARGUMENT",
            |c| {
                c.need_controller(CC::MODIFY_VOLUME, "MODIFY_VOLUME")?;
                need_create(&c)?;
                let v = c.volume("mod").await?;
                let r = c
                    .ctl()
                    .raw_controller_modify_volume(proto::ControllerModifyVolumeRequest {
                        volume_id: v.volume_id.to_string(),
                        ..Default::default()
                    })
                    .await;
                code("ControllerModifyVolume", r, Code::InvalidArgument)
            }
        ),
        case!(
            "controller/modify_volume/unknown_volume",
            "ControllerModifyVolume of a volume that does not exist answers NOT_FOUND",
            |c| {
                c.need_controller(CC::MODIFY_VOLUME, "MODIFY_VOLUME")?;
                if c.config().mutable_parameters.is_empty() {
                    return Err(CaseError::Skip(
                        "no mutable parameters configured (--mutable-params)".into(),
                    ));
                }
                let gone = c.gone_volume().await?;
                let r = c
                    .ctl()
                    .raw_controller_modify_volume(proto::ControllerModifyVolumeRequest {
                        volume_id: gone.id.clone(),
                        mutable_parameters: c
                            .config()
                            .mutable_parameters
                            .clone()
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    })
                    .await;
                c.not_found("ControllerModifyVolume", r, &gone)
            }
        ),
        case!(
            "controller/modify_volume/supported",
            "ControllerModifyVolume with the configured mutable parameters succeeds, twice",
            |c| {
                c.need_controller(CC::MODIFY_VOLUME, "MODIFY_VOLUME")?;
                need_create(&c)?;
                if c.config().mutable_parameters.is_empty() {
                    return Err(CaseError::Skip(
                        "no mutable parameters configured (--mutable-params)".into(),
                    ));
                }
                let v = c.volume("mod").await?;
                let req = proto::ControllerModifyVolumeRequest {
                    volume_id: v.volume_id.to_string(),
                    mutable_parameters: c.config().mutable_parameters.clone().into_iter().collect(),
                    ..Default::default()
                };
                ok_raw(
                    "ControllerModifyVolume",
                    c.ctl().raw_controller_modify_volume(req.clone()).await,
                )?;
                ok_raw(
                    "ControllerModifyVolume (retry)",
                    c.ctl().raw_controller_modify_volume(req).await,
                )?;
                Ok(())
            }
        ),
        case!(
            "controller/modify_volume/unsupported",
            "ControllerModifyVolume with a parameter the driver does not know answers INVALID_ARGUMENT",
            |c| {
                c.need_controller(CC::MODIFY_VOLUME, "MODIFY_VOLUME")?;
                need_create(&c)?;
                let v = c.volume("mod").await?;
                let r = c
                    .ctl()
                    .raw_controller_modify_volume(proto::ControllerModifyVolumeRequest {
                        volume_id: v.volume_id.to_string(),
                        mutable_parameters: BTreeMap::from([(
                            "csi-testkit.example.com/no-such-parameter".to_string(),
                            "1".to_string(),
                        )]),
                        ..Default::default()
                    })
                    .await;
                code(
                    "ControllerModifyVolume (unsupported parameter)",
                    r,
                    Code::InvalidArgument,
                )
            }
        ),
    ]
}
