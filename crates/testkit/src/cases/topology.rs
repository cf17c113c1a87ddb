//! Topology cases (`VOLUME_ACCESSIBILITY_CONSTRAINTS`).
//!
//! The spec's rules checked here: only a plugin with the capability may
//! return `accessible_topology` (from `NodeGetInfo` or `CreateVolume`); a
//! volume created with `accessibility_requirements.requisite` MUST be
//! accessible from at least one requisite topology; and a requisite the
//! plugin cannot provision in answers `RESOURCE_EXHAUSTED` ("Unable to
//! provision in `accessible_topology`", `CreateVolume` errors).
//!
//! A key prefix, once specified, "MUST be identical across all topology
//! keys returned by the SP (across all RPCs)": the keys of `NodeGetInfo`,
//! `CreateVolume`, `ListVolumes` and `ControllerGetVolume` are compared.
//!
//! With `GET_CAPACITY`, `GetCapacity` for a topology reports what is
//! "available for volume creation in the specified topology": no more than
//! the total, and nothing where `CreateVolume` cannot provision.
//!
//! The node's own topology (from `NodeGetInfo`) is the requisite the cases
//! send, since it is the one topology the harness knows the plugin serves;
//! a topology with the node's keys and values no plugin serves stands for
//! "somewhere else".

use csi_types::capabilities::ControllerCapabilities as CC;
use csi_types::{
    Code,
    capabilities::PluginCapabilities,
    controller::{ControllerGetVolumeResponse, CreateVolumeResponse, GetCapacityResponse},
    node::NodeGetInfoResponse,
    proto,
    types::Topology,
};

use super::{Case, case, list_volume_entries, rw};
use crate::ctx::{Answer, CaseError, Ctx, ensure, fail};

/// A segment value no plugin serves: `CreateVolume` requests it to check
/// the `RESOURCE_EXHAUSTED` answer.
const NOWHERE: &str = "csi-testkit-nowhere-7f3a";

fn advertises(c: &Ctx) -> bool {
    c.found()
        .plugin
        .contains(PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS)
}

/// Skips unless the plugin advertises topology, can create volumes and
/// its node reports a topology; returns that topology.
fn need_topology(c: &Ctx) -> Result<Topology, CaseError> {
    c.need_controller(
        CC::CREATE_DELETE_VOLUME,
        "CREATE_DELETE_VOLUME (the case creates a volume)",
    )?;
    node_topology(c)
}

/// Skips unless the plugin advertises topology and its node reports one;
/// returns that topology.
fn node_topology(c: &Ctx) -> Result<Topology, CaseError> {
    if !advertises(c) {
        return Err(CaseError::Skip(
            "the plugin does not advertise VOLUME_ACCESSIBILITY_CONSTRAINTS".into(),
        ));
    }
    c.node_id()?;
    match &c.found().node_topology {
        Some(t) if !t.segments().is_empty() => Ok(t.clone()),
        _ => Err(CaseError::Skip(
            "NodeGetInfo reports no accessible_topology to request volumes in".into(),
        )),
    }
}

/// The node's keys, every value somewhere no plugin is.
fn nowhere(node: &Topology) -> Result<Topology, CaseError> {
    Topology::new(
        node.segments()
            .keys()
            .map(|k| (k.as_str().to_string(), NOWHERE.to_string())),
    )
    .map_err(|e| CaseError::Fail(format!("building the requisite topology: {e}")))
}

/// A `CreateVolume` request of the configured size whose requisite list is
/// `requisite`, also sent as the preferred list when `preferred`.
fn create_in(c: &Ctx, requisite: &[&Topology], preferred: bool) -> proto::CreateVolumeRequest {
    let list: Vec<proto::Topology> = requisite.iter().map(|t| (*t).clone().into()).collect();
    let mut req = c.create_req(&c.name("topo"), c.config().volume_size);
    req.accessibility_requirements = Some(proto::TopologyRequirement {
        requisite: list.clone(),
        preferred: if preferred { list } else { Vec::new() },
    });
    req
}

/// Fails unless every key of every topology carries the same prefix (or
/// none does): "If a key prefix is specified, it MUST be identical across
/// all topology keys returned by the SP (across all RPCs)."
fn same_prefix(seen: &[(&str, Topology)]) -> Result<(), CaseError> {
    let mut keys = seen
        .iter()
        .flat_map(|(rpc, t)| t.segments().keys().map(move |k| (*rpc, k)));
    let Some((rpc0, k0)) = keys.next() else {
        return Ok(());
    };
    for (rpc, k) in keys {
        ensure!(
            k.prefix() == k0.prefix(),
            "{rpc} returns topology key {:?}, {rpc0} {:?}: a key prefix, once specified, must be identical across all topology keys the plugin returns",
            k.as_str(),
            k0.as_str()
        );
    }
    Ok(())
}

/// `GetCapacity` for `topology` (or for all of the plugin when `None`), as
/// it answered.
async fn send_capacity(
    c: &Ctx,
    topology: Option<&Topology>,
) -> Result<proto::GetCapacityResponse, csi_types::CsiError> {
    c.ctl()
        .raw_get_capacity(proto::GetCapacityRequest {
            volume_capabilities: vec![rw()],
            parameters: c.config().parameters.clone().into_iter().collect(),
            accessible_topology: topology.map(|t| t.clone().into()),
        })
        .await
}

/// The name of a `GetCapacity` call for `topology`.
fn capacity_rpc(topology: Option<&Topology>) -> String {
    match topology {
        Some(t) => format!("GetCapacity (accessible_topology {t:?})"),
        None => "GetCapacity".to_string(),
    }
}

/// `GetCapacity` for `topology` (or for all of the plugin when `None`).
async fn capacity(c: &Ctx, topology: Option<&Topology>) -> Result<u64, CaseError> {
    let r: GetCapacityResponse = c.ok(&capacity_rpc(topology), send_capacity(c, topology).await)?;
    Ok(r.available_capacity)
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "node/get_info/accessible_topology",
            "NodeGetInfo reports accessible_topology only when the plugin advertises VOLUME_ACCESSIBILITY_CONSTRAINTS (with it, none passes with a warning: the node is then subject to no constraint)",
            |c| {
                let r: NodeGetInfoResponse = c.ok(
                    "NodeGetInfo",
                    c.nd().raw_node_get_info(Default::default()).await,
                )?;
                match (advertises(&c), &r.accessible_topology) {
                    // The field is OPTIONAL whatever the capability: left
                    // out (or empty), "the CO MAY assume the node is not
                    // subject to any topological constraint". The CO then
                    // has no topology of this node to match volumes
                    // against, so the node is reached by every volume.
                    (true, t) if t.as_ref().is_none_or(|t| t.segments().is_empty()) => {
                        c.warn(
                            "NodeGetInfo: the plugin advertises VOLUME_ACCESSIBILITY_CONSTRAINTS but reports no accessible_topology for this node (allowed: the CO may then assume the node is subject to no topological constraint), so the topology cases skip",
                        );
                        Ok(())
                    }
                    (true, _) => Ok(()),
                    (false, Some(t)) => fail!(
                        "NodeGetInfo: accessible_topology {t:?} is returned, but a plugin that returns it MUST set VOLUME_ACCESSIBILITY_CONSTRAINTS"
                    ),
                    (false, None) => Ok(()),
                }
            }
        ),
        case!(
            "controller/create_volume/topology_requisite",
            "CreateVolume with the node's topology as requisite and preferred makes a volume accessible from it (each accessible_topology entry, if any, is checked against the requisite)",
            |c| {
                let node = need_topology(&c)?;
                let req = create_in(&c, &[&node], true);
                let r: CreateVolumeResponse = c.ok("CreateVolume", c.send_create(req).await)?;
                let got = &r.volume.accessible_topology;
                // Empty is allowed: the spec lets the CO then assume the
                // volume is accessible from every node, the requisite's
                // included. Otherwise one entry must cover the node, whose
                // segments must then include all of that entry's.
                ensure!(
                    got.is_empty() || got.iter().any(|t| t.is_subset_of(&node)),
                    "CreateVolume with requisite {node:?}: the volume is accessible only from {got:?}, none of which covers the requisite topology"
                );
                Ok(())
            }
        ),
        case!(
            "controller/create_volume/topology_unsatisfiable",
            "CreateVolume whose only requisite topology is one the plugin cannot serve answers RESOURCE_EXHAUSTED (INVALID_ARGUMENT, the segment values judged invalid, passes with a warning)",
            |c| {
                let node = need_topology(&c)?;
                let nowhere = nowhere(&node)?;
                let req = create_in(&c, &[&nowhere], false);
                // The spec's RESOURCE_EXHAUSTED is for a requisite that is
                // valid but cannot be served; a plugin may judge segment
                // values it has never heard of invalid instead (the general
                // "invalid value" rule), which the suite cannot tell apart.
                c.answer(
                    "CreateVolume (unsatisfiable requisite topology)",
                    c.send_create(req).await,
                    Answer::Code(Code::ResourceExhausted),
                    &[Answer::Code(Code::InvalidArgument)],
                    "the requisite's keys are the plugin's own and only their values are unknown, so the topology is valid but cannot be served; COs retry RESOURCE_EXHAUSTED with backoff and do not retry INVALID_ARGUMENT",
                )
            }
        ),
        case!(
            "controller/create_volume/topology_requisite_several",
            "CreateVolume whose requisite and preferred lists name first a topology the plugin cannot serve, then the node's, makes a volume accessible from the node's (and not reported in the other)",
            |c| {
                let node = need_topology(&c)?;
                let nowhere = nowhere(&node)?;
                let req = create_in(&c, &[&nowhere, &node], true);
                let r: CreateVolumeResponse = c.ok("CreateVolume", c.send_create(req).await)?;
                let got = &r.volume.accessible_topology;
                // Only the node's topology can be served, so a plugin that
                // takes the first preferred entry without checking it
                // reports the volume where it cannot be.
                ensure!(
                    !got.iter().any(|t| t.is_subset_of(&nowhere)),
                    "CreateVolume with requisite [{nowhere:?}, {node:?}]: the volume is reported accessible from {got:?}, which includes the topology the plugin cannot provision in (CreateVolume with it alone answers RESOURCE_EXHAUSTED)"
                );
                ensure!(
                    got.is_empty() || got.iter().any(|t| t.is_subset_of(&node)),
                    "CreateVolume with requisite [{nowhere:?}, {node:?}]: the volume is accessible only from {got:?}, none of which covers the node's topology"
                );
                Ok(())
            }
        ),
        case!(
            "controller/create_volume/topology_key_prefix",
            "every topology key the plugin returns (NodeGetInfo, CreateVolume, ListVolumes, ControllerGetVolume) carries the same key prefix, or none does",
            |c| {
                let node = need_topology(&c)?;
                let req = create_in(&c, &[&node], false);
                let r: CreateVolumeResponse = c.ok("CreateVolume", c.send_create(req).await)?;
                let id = r.volume.volume_id.clone();
                let mut seen = vec![("NodeGetInfo", node)];
                seen.extend(
                    r.volume
                        .accessible_topology
                        .into_iter()
                        .map(|t| ("CreateVolume", t)),
                );
                let cc = c.found().controller;
                if cc.contains(CC::LIST_VOLUMES) {
                    seen.extend(
                        list_volume_entries(&c, 0)
                            .await?
                            .into_iter()
                            .filter(|e| e.volume.volume_id == id)
                            .flat_map(|e| e.volume.accessible_topology)
                            .map(|t| ("ListVolumes", t)),
                    );
                }
                if cc.contains(CC::GET_VOLUME) {
                    let g: ControllerGetVolumeResponse = c.ok(
                        "ControllerGetVolume",
                        c.ctl()
                            .raw_controller_get_volume(proto::ControllerGetVolumeRequest {
                                volume_id: id.to_string(),
                            })
                            .await,
                    )?;
                    seen.extend(
                        g.volume
                            .accessible_topology
                            .into_iter()
                            .map(|t| ("ControllerGetVolume", t)),
                    );
                }
                same_prefix(&seen)
            }
        ),
        case!(
            "controller/get_capacity/topology",
            "GetCapacity for the node's topology answers (more than without a topology is a warning), and for a topology the plugin cannot provision in reports 0 (INVALID_ARGUMENT, the segment values judged invalid, passes with a warning)",
            |c| {
                c.need_controller(CC::GET_CAPACITY, "GET_CAPACITY")?;
                let node = node_topology(&c)?;
                let nowhere = nowhere(&node)?;
                // The available capacity may change between calls (space
                // freed or taken elsewhere): the node's share is compared
                // with the larger total, read before and after it.
                let before = capacity(&c, None).await?;
                let here = capacity(&c, Some(&node)).await?;
                let total = before.max(capacity(&c, None).await?);
                // Not a spec rule: without `accessible_topology` the spec
                // asks for "the storage pool from which the controller
                // provisions volumes", which a plugin whose pools depend on
                // topology may read as the pool it picks when the CO names
                // none ("the Plugin MAY choose where"), smaller than the
                // node's.
                if here > total {
                    c.warn(format!(
                        "GetCapacity: {here} bytes available in the node's topology {node:?}, more than the {total} reported without a topology (the spec does not forbid it, but a CO summing capacity may be misled)"
                    ));
                }
                // As in `topology_unsatisfiable`, a plugin may judge segment
                // values it has never heard of invalid (the general "invalid
                // value" rule) instead of reporting no capacity there.
                let r = send_capacity(&c, Some(&nowhere)).await;
                if let Err(e) = &r
                    && e.code() == Code::InvalidArgument
                {
                    c.warn(format!(
                        "{} answered {} (the segment values judged invalid); 0 available is the answer for a valid topology the plugin cannot provision in",
                        capacity_rpc(Some(&nowhere)),
                        crate::ctx::describe(e)
                    ));
                    return Ok(());
                }
                let r: GetCapacityResponse = c.ok(&capacity_rpc(Some(&nowhere)), r)?;
                let there = r.available_capacity;
                ensure!(
                    there == 0,
                    "GetCapacity: {there} bytes available in {nowhere:?}, where CreateVolume cannot provision"
                );
                Ok(())
            }
        ),
    ]
}
