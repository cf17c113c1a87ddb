//! Topology cases (`VOLUME_ACCESSIBILITY_CONSTRAINTS`).
//!
//! The spec's rules checked here: only a plugin with the capability may
//! return `accessible_topology` (from `NodeGetInfo` or `CreateVolume`); a
//! volume created with `accessibility_requirements.requisite` MUST be
//! accessible from at least one requisite topology; and a requisite the
//! plugin cannot provision in answers `RESOURCE_EXHAUSTED` ("Unable to
//! provision in `accessible_topology`", `CreateVolume` errors).
//!
//! The node's own topology (from `NodeGetInfo`) is the requisite the cases
//! send, since it is the one topology the harness knows the plugin serves.

use csi_types::ControllerCapabilities as CC;
use csi_types::{
    Code, CreateVolumeResponse, NodeGetInfoResponse, PluginCapabilities, Topology, proto,
};

use super::{Case, case};
use crate::ctx::{CaseError, Ctx, code, ensure, fail, ok};

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
    if !advertises(c) {
        return Err(CaseError::Skip(
            "the plugin does not advertise VOLUME_ACCESSIBILITY_CONSTRAINTS".into(),
        ));
    }
    c.need_controller(
        CC::CREATE_DELETE_VOLUME,
        "CREATE_DELETE_VOLUME (the case creates a volume)",
    )?;
    c.node_id()?;
    match &c.found().node_topology {
        Some(t) if !t.segments().is_empty() => Ok(t.clone()),
        _ => Err(CaseError::Skip(
            "NodeGetInfo reports no accessible_topology to request volumes in".into(),
        )),
    }
}

fn requirement(requisite: &Topology, preferred: bool) -> proto::TopologyRequirement {
    let t: proto::Topology = requisite.clone().into();
    proto::TopologyRequirement {
        requisite: vec![t.clone()],
        preferred: if preferred { vec![t] } else { Vec::new() },
    }
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "node/get_info/accessible_topology",
            "NodeGetInfo reports accessible_topology when the plugin advertises VOLUME_ACCESSIBILITY_CONSTRAINTS, and only then",
            |c| {
                let r: NodeGetInfoResponse = ok(
                    "NodeGetInfo",
                    c.nd().node_get_info(Default::default()).await,
                )?;
                match (advertises(&c), &r.accessible_topology) {
                    // The CO matches volume topologies against the node's:
                    // a plugin that constrains accessibility but places its
                    // node nowhere leaves the CO nothing to match.
                    (true, None) => fail!(
                        "NodeGetInfo: the plugin advertises VOLUME_ACCESSIBILITY_CONSTRAINTS but reports no accessible_topology"
                    ),
                    (true, Some(t)) => {
                        ensure!(
                            !t.segments().is_empty(),
                            "NodeGetInfo: accessible_topology has no segments"
                        );
                        Ok(())
                    }
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
                let mut req = c.create_req(&c.name("topo"), c.config().volume_size);
                req.accessibility_requirements = Some(requirement(&node, true));
                let r: CreateVolumeResponse = ok("CreateVolume", c.send_create(req).await)?;
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
            "CreateVolume whose only requisite topology is one the plugin cannot serve answers RESOURCE_EXHAUSTED",
            |c| {
                let node = need_topology(&c)?;
                // The node's keys, every value somewhere no plugin is.
                let nowhere = Topology::new(
                    node.segments()
                        .keys()
                        .map(|k| (k.as_str().to_string(), NOWHERE.to_string())),
                )
                .map_err(|e| CaseError::Fail(format!("building the requisite topology: {e}")))?;
                let mut req = c.create_req(&c.name("topo"), c.config().volume_size);
                req.accessibility_requirements = Some(requirement(&nowhere, false));
                code(
                    "CreateVolume (unsatisfiable requisite topology)",
                    c.send_create(req).await,
                    Code::ResourceExhausted,
                )
            }
        ),
    ]
}
