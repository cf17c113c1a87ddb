//! `VOLUME_CONDITION` cases: a plugin that advertises the capability MUST
//! report a `volume_condition` in `ControllerGetVolume` and `ListVolumes`
//! (controller capability) or in `NodeGetVolumeStats` (node capability), and
//! its `message` is REQUIRED (spec, `ControllerGetVolume`, `ListVolumes`,
//! `NodeGetVolumeStats` and `message VolumeCondition`).
//!
//! The condition's `message` being present is checked by the typed response
//! conversion (it answers an error naming `volume_condition.message`); these
//! cases add that the condition is there at all and that a volume the case
//! has just created is not reported abnormal.

use csi_types::capabilities::ControllerCapabilities as CC;
use csi_types::capabilities::NodeCapabilities as NC;
use csi_types::{
    controller::ControllerGetVolumeResponse, node::NodeGetVolumeStatsResponse, proto,
    types::VolumeCondition,
};

use super::{Case, case, rw};
use crate::ctx::{CaseError, Ctx, ensure, fail, ok_raw};

/// Fails unless `condition` is present and not abnormal; `what` names the
/// response and field for the reason.
fn healthy(what: &str, condition: Option<&VolumeCondition>) -> Result<(), CaseError> {
    match condition {
        None => fail!(
            "{what}: volume_condition is missing, but it MUST be specified when VOLUME_CONDITION is advertised"
        ),
        Some(c) => {
            ensure!(
                !c.abnormal,
                "{what}: a volume created by this case is reported abnormal: {:?}",
                c.message
            );
            Ok(())
        }
    }
}

fn need_condition(c: &Ctx) -> Result<(), CaseError> {
    c.need_controller(CC::VOLUME_CONDITION, "VOLUME_CONDITION")?;
    c.need_controller(
        CC::CREATE_DELETE_VOLUME,
        "CREATE_DELETE_VOLUME (the case needs a fresh volume)",
    )
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "controller/get_volume/volume_condition",
            "with VOLUME_CONDITION and GET_VOLUME, ControllerGetVolume of a fresh volume reports a volume_condition that is not abnormal (an empty message, tolerated by the spec, is a warning)",
            |c| {
                need_condition(&c)?;
                c.need_controller(CC::GET_VOLUME, "GET_VOLUME")?;
                let v = c.volume("cond").await?;
                let g: ControllerGetVolumeResponse = c.ok(
                    "ControllerGetVolume",
                    c.ctl()
                        .raw_controller_get_volume(proto::ControllerGetVolumeRequest {
                            volume_id: v.volume_id.to_string(),
                        })
                        .await,
                )?;
                healthy(
                    "ControllerGetVolume status",
                    g.status.volume_condition.as_ref(),
                )
            }
        ),
        case!(
            "controller/list_volumes/volume_condition",
            "with VOLUME_CONDITION and LIST_VOLUMES, ListVolumes reports a status with a volume_condition for a fresh volume, not abnormal (an empty message, tolerated by the spec, is a warning)",
            |c| {
                need_condition(&c)?;
                c.need_controller(CC::LIST_VOLUMES, "LIST_VOLUMES")?;
                let v = c.volume("cond").await?;
                let mut token = String::new();
                for _ in 0..10_000 {
                    let r: csi_types::controller::ListVolumesResponse = c.ok(
                        "ListVolumes",
                        c.ctl()
                            .raw_list_volumes(proto::ListVolumesRequest {
                                max_entries: 0,
                                starting_token: token.clone(),
                            })
                            .await,
                    )?;
                    if let Some(e) = r.entries.iter().find(|e| e.volume.volume_id == v.volume_id) {
                        let Some(status) = &e.status else {
                            fail!(
                                "ListVolumes: the entry of {} has no status, but its volume_condition MUST be specified when VOLUME_CONDITION is advertised",
                                v.volume_id
                            );
                        };
                        return healthy(
                            &format!("ListVolumes entry of {}", v.volume_id),
                            status.volume_condition.as_ref(),
                        );
                    }
                    match r.next_token {
                        Some(t) => token = t,
                        None => fail!("ListVolumes does not list the new volume {}", v.volume_id),
                    }
                }
                fail!("ListVolumes: next_token never ended after 10000 pages")
            }
        ),
        case!(
            "node/get_volume_stats/volume_condition",
            "with the node's VOLUME_CONDITION, NodeGetVolumeStats of a published volume reports a volume_condition that is not abnormal (an empty message, tolerated by the spec, is a warning)",
            |c| {
                c.need_node(NC::VOLUME_CONDITION, "VOLUME_CONDITION")?;
                let (vol, staging, pctx) = c.ready_for_node_publish(rw()).await?;
                let id = vol.volume_id.to_string();
                let req = c.node_publish_req(&id, &staging, rw(), false, &pctx)?;
                let target = req.target_path.clone();
                ok_raw("NodePublishVolume", c.send_node_publish(req).await)?;
                let s: NodeGetVolumeStatsResponse = c.ok(
                    "NodeGetVolumeStats",
                    c.nd()
                        .raw_node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
                            volume_id: id,
                            volume_path: target,
                            staging_target_path: staging.unwrap_or_default(),
                        })
                        .await,
                )?;
                healthy("NodeGetVolumeStats", s.volume_condition.as_ref())
            }
        ),
    ]
}
