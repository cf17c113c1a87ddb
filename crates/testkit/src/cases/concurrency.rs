//! Concurrency cases: the same request, or operations on the same volume,
//! sent at once. Each call must succeed or answer `ABORTED` (or, for a
//! creation, `RESOURCE_EXHAUSTED`: the pool may lack the space, or the
//! pending call may have reserved it; for an expansion that a larger one
//! overtook, `OUT_OF_RANGE`: it asks for a shrink; for a snapshot,
//! `RESOURCE_EXHAUSTED`: the expansions may have taken its space); the
//! state after must be what a serial order of the successful calls would
//! leave.

use std::collections::BTreeSet;
use std::time::Duration;

use csi_types::{
    Code, capabilities::ControllerCapabilities as CC, controller::CreateVolumeResponse, proto,
};

use super::{Case, case, list_all_snapshots, list_all_volumes, rw};
use crate::ctx::{CaseError, Cleanup, Ctx, describe, ensure, fail};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "concurrency/create_volume_same_name",
            "the same CreateVolume sent N times at once makes one volume: every call answers its id or ABORTED (RESOURCE_EXHAUSTED with a warning; a pool that holds no volume skips)",
            |c| { same_name(c).await }
        ),
        case!(
            "concurrency/same_volume_operations",
            "expand, snapshot and validate sent at once on one volume each succeed or answer ABORTED (an expansion OUT_OF_RANGE for a size the plugin does not allow, a snapshot RESOURCE_EXHAUSTED with a warning), and the volume stays consistent",
            |c| { same_volume(c).await }
        ),
    ]
}

async fn same_name(c: Ctx) -> Result<(), CaseError> {
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")?;
    let listing = c.found().controller.contains(CC::LIST_VOLUMES);
    let before: BTreeSet<String> = if listing {
        list_all_volumes(&c, 0).await?.into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let req = c.create_req(&c.name("race"), c.config().volume_size);
    let n = c.config().concurrency.max(2);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, req) = (c.clone(), req.clone());
            tokio::spawn(async move { c.send_create(req).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    // "Unable to provision" (RESOURCE_EXHAUSTED): a pool without the space
    // for the volume answers it to every call, and one whose space the
    // pending call has reserved may answer it to the others (the spec's
    // code for a pending operation is ABORTED, which it only says MAY).
    let mut exhausted = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                let r: CreateVolumeResponse = c.ok("CreateVolume (concurrent)", Ok(r))?;
                ids.insert(r.volume.volume_id.to_string());
            }
            Ok(Err(e)) if e.code() == Code::Aborted => {}
            Ok(Err(e)) if e.code() == Code::ResourceExhausted => exhausted = Some(describe(&e)),
            Ok(Err(e)) => fail!(
                "CreateVolume (concurrent): expected OK, ABORTED or RESOURCE_EXHAUSTED, got {}",
                describe(&e)
            ),
            Err(e) => fail!("a concurrent CreateVolume task died: {e}"),
        }
    }
    if let Some(e) = &exhausted
        && !ids.is_empty()
    {
        c.warn(format!(
            "CreateVolume (concurrent): answered {e} while another call with the name made the volume, which the spec allows; ABORTED is preferred: it is the spec's code for an operation pending on the volume"
        ));
    }
    ensure!(
        ids.len() <= 1,
        "{n} concurrent CreateVolume calls with one name made {} volumes: {ids:?}",
        ids.len()
    );
    // A retry after the race must find the one volume.
    let mut retried = None;
    for _ in 0..50 {
        match c.send_create(req.clone()).await {
            Ok(r) => {
                let r: CreateVolumeResponse = c.ok("CreateVolume (retry after race)", Ok(r))?;
                retried = Some(r.volume.volume_id.to_string());
                break;
            }
            Err(e) if e.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            // No call made the volume: the pool has not the space for it.
            Err(e) if e.code() == Code::ResourceExhausted && ids.is_empty() => {
                return Err(CaseError::Skip(format!(
                    "CreateVolume answered {} (not enough space for the volume the case needs)",
                    describe(&e)
                )));
            }
            Err(e) => fail!("CreateVolume (retry after race): {}", describe(&e)),
        }
    }
    let Some(id) = retried else {
        fail!("CreateVolume still answers ABORTED 50 retries after the race");
    };
    if let Some(first) = ids.iter().next() {
        ensure!(
            *first == id,
            "CreateVolume after the race returned {id}, the race returned {first}"
        );
    }
    if listing {
        let after: BTreeSet<String> = list_all_volumes(&c, 0).await?.into_iter().collect();
        let new: Vec<_> = after.difference(&before).collect();
        ensure!(
            new == vec![&id],
            "after {n} concurrent CreateVolume calls with one name, ListVolumes shows new volumes {new:?}, expected only {id}"
        );
    }
    Ok(())
}

/// `ControllerExpandVolume` of `id` to `want` bytes with no other call in
/// flight: the capacity it answers, or its error other than `ABORTED` (which
/// is retried, as a CO would, while an earlier call may still be finishing).
async fn expand_alone(
    c: &Ctx,
    id: &str,
    want: u64,
) -> Result<Result<u64, csi_types::CsiError>, CaseError> {
    for _ in 0..50 {
        let r = c
            .ctl()
            .raw_controller_expand_volume(proto::ControllerExpandVolumeRequest {
                volume_id: id.to_string(),
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: want as i64,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await;
        match r {
            Err(e) if e.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Ok(Err(e)),
            Ok(r) => {
                let r: csi_types::controller::ControllerExpandVolumeResponse =
                    c.ok("ControllerExpandVolume (alone, after the race)", Ok(r))?;
                return Ok(Ok(r.capacity_bytes));
            }
        }
    }
    fail!("ControllerExpandVolume to {want} bytes still answers ABORTED 50 retries after the race")
}

const EXPAND: &str = "ControllerExpandVolume";
const SNAPSHOT: &str = "CreateSnapshot";
const VALIDATE: &str = "ValidateVolumeCapabilities";

/// The answers the spec allows `rpc` during the race on one existing,
/// unpublished volume, with fresh snapshot names and no volume capability
/// in the expansions: `ABORTED` for each ("Operation pending for volume"),
/// `OUT_OF_RANGE` for an expansion ("Unsupported `capacity_range`", checked
/// again alone after the race) and `RESOURCE_EXHAUSTED` for a snapshot
/// ("Not enough space to create snapshot"). The other rows of their tables
/// do not apply: the volume exists (`NOT_FOUND`), is published nowhere
/// (`FAILED_PRECONDITION`, "Volume in use"), and each snapshot name is new
/// (`ALREADY_EXISTS`).
fn allowed_in_race(rpc: &str) -> &'static str {
    match rpc {
        EXPAND => "OK, ABORTED or OUT_OF_RANGE",
        SNAPSHOT => "OK, ABORTED or RESOURCE_EXHAUSTED",
        _ => "OK or ABORTED",
    }
}

async fn same_volume(c: Ctx) -> Result<(), CaseError> {
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")?;
    let vol = c.volume("shared").await?;
    let id = vol.volume_id.to_string();
    let expand = c.found().controller.contains(CC::EXPAND_VOLUME);
    let snap = c.found().controller.contains(CC::CREATE_DELETE_SNAPSHOT);
    let base = vol.capacity_bytes.max(c.config().volume_size);
    let n = c.config().concurrency.max(3);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, id) = (c.clone(), id.clone());
        let kind = i % 3;
        tasks.push(tokio::spawn(async move {
            match kind {
                0 if expand => {
                    let want = base * (2 + i as u64);
                    let r = c
                        .ctl()
                        .raw_controller_expand_volume(proto::ControllerExpandVolumeRequest {
                            volume_id: id,
                            capacity_range: Some(proto::CapacityRange {
                                required_bytes: want as i64,
                                limit_bytes: 0,
                            }),
                            ..Default::default()
                        })
                        .await;
                    (
                        EXPAND,
                        Some(want),
                        r.map(|r| (Some(r.capacity_bytes as u64), None)),
                    )
                }
                1 if snap => {
                    let r = c
                        .send_snapshot(proto::CreateSnapshotRequest {
                            source_volume_id: id,
                            name: c.name("racesnap"),
                            ..Default::default()
                        })
                        .await;
                    (
                        SNAPSHOT,
                        None,
                        r.map(|r| (None, r.snapshot.map(|s| s.snapshot_id))),
                    )
                }
                _ => {
                    let r = c
                        .ctl()
                        .raw_validate_volume_capabilities(
                            proto::ValidateVolumeCapabilitiesRequest {
                                volume_id: id,
                                volume_capabilities: vec![rw()],
                                ..Default::default()
                            },
                        )
                        .await;
                    (VALIDATE, None, r.map(|_| (None, None)))
                }
            }
        }));
    }
    let mut grown_to = 0u64;
    let mut refused = Vec::new();
    let mut snaps = BTreeSet::new();
    for t in tasks {
        let (rpc, want, r) = t
            .await
            .map_err(|e| CaseError::Fail(format!("a concurrent task died: {e}")))?;
        match r {
            Ok((got, snap)) => {
                if let (Some(want), Some(got)) = (want, got) {
                    ensure!(got >= want, "{rpc} (concurrent) to {want} answered {got}");
                    grown_to = grown_to.max(want);
                }
                if let Some(s) = snap {
                    snaps.insert(s);
                }
            }
            Err(e) => match (rpc, e.code(), want) {
                // "Operation pending for volume": any of the three may
                // reject a secondary call.
                (_, Code::Aborted, _) => {}
                (EXPAND, Code::OutOfRange, Some(want)) => refused.push((want, e)),
                // "Not enough space to create snapshot": the expansions
                // racing it may have taken the space it needed, and the
                // spec lets a later call succeed once space is freed, so
                // nothing after the race can tell this answer wrong.
                (SNAPSHOT, Code::ResourceExhausted, _) => c.warn(format!(
                    "CreateSnapshot (concurrent, same volume) answered {} (not enough space to create the snapshot)",
                    describe(&e)
                )),
                _ => fail!(
                    "{rpc} (concurrent, same volume): expected {}, got {}",
                    allowed_in_race(rpc),
                    describe(&e)
                ),
            },
        }
    }
    // An expansion that ran after a larger one asked the volume to shrink,
    // which a plugin may refuse with OUT_OF_RANGE. Without a larger success
    // the refusal is right only if the plugin does not allow that size at
    // all ("capacity range not allowed by the Plugin"): the same request,
    // sent again alone after the race, must be refused too.
    refused.sort_by_key(|(want, _)| *want);
    for (want, e) in refused.iter().filter(|(want, _)| *want >= grown_to) {
        match expand_alone(&c, &id, *want).await? {
            Ok(got) => fail!(
                "ControllerExpandVolume (concurrent, same volume) to {want} bytes answered {}, though no larger expansion succeeded; alone after the race the same request answered {got} bytes",
                describe(e)
            ),
            Err(again) if again.code() == Code::OutOfRange => c.warn(format!(
                "ControllerExpandVolume to {want} bytes answered OUT_OF_RANGE, alone as well as concurrently (the plugin does not allow that size): {}",
                describe(&again)
            )),
            Err(again) => fail!(
                "ControllerExpandVolume to {want} bytes, alone after the race (concurrently it answered OUT_OF_RANGE): expected OK or OUT_OF_RANGE, got {}",
                describe(&again)
            ),
        }
    }
    // The volume must still be there, at least as large as the largest
    // successful expansion.
    if c.found().controller.contains(CC::GET_VOLUME) {
        let g: csi_types::controller::ControllerGetVolumeResponse = c.ok(
            "ControllerGetVolume (after the race)",
            c.ctl()
                .raw_controller_get_volume(proto::ControllerGetVolumeRequest {
                    volume_id: id.clone(),
                })
                .await,
        )?;
        ensure!(
            g.volume.capacity_bytes == 0 || g.volume.capacity_bytes >= grown_to,
            "after concurrent expansions to {grown_to} bytes the volume reports {}",
            g.volume.capacity_bytes
        );
    } else if c.found().controller.contains(CC::LIST_VOLUMES) {
        let all = list_all_volumes(&c, 0).await?;
        ensure!(
            all.contains(&id),
            "volume {id} vanished from ListVolumes after concurrent operations"
        );
    }
    if c.found().controller.contains(CC::LIST_SNAPSHOTS) && !snaps.is_empty() {
        let listed: BTreeSet<String> = list_all_snapshots(&c, 0).await?.into_iter().collect();
        for s in &snaps {
            ensure!(
                listed.contains(s),
                "snapshot {s}, created concurrently, is missing from ListSnapshots"
            );
        }
    }
    // Deleting works once the snapshots are gone (the cleanup deletes in reverse order).
    for s in &snaps {
        let s2 = s.clone();
        c.forget(|x| matches!(x, Cleanup::Snapshot(i) if *i == s2));
        crate::ctx::ok_raw(
            "DeleteSnapshot",
            c.ctl()
                .raw_delete_snapshot(proto::DeleteSnapshotRequest {
                    snapshot_id: s.clone(),
                    ..Default::default()
                })
                .await,
        )?;
    }
    Ok(())
}
