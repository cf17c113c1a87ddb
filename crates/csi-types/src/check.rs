//! Response checks in two severities: what the CO may rely on, and what the
//! spec tells the CO to tolerate.
//!
//! A response from a plugin can break a rule of the spec in two ways that
//! matter differently to the caller:
//!
//! - **MUST** rules, which the CO relies on (a REQUIRED field, a size limit,
//!   a non-negative size, a group snapshot's members carrying its id, block
//!   metadata in ascending order). The typed conversion (`TryFrom<proto::…>`)
//!   refuses a response that breaks one: the client ([`crate::Csi`]) answers
//!   `INTERNAL` naming the RPC and the field, the conformance harness fails
//!   the case.
//! - **Tolerated** rules, where the spec tells the CO to be resilient or says
//!   the field is not for automation. The typed conversion accepts the
//!   response (dropping or keeping the odd part as described below);
//!   [`ResponseRules::tolerated`] lists what was odd, the client logs each
//!   item with `tracing::warn!`, and the harness reports it as a warning
//!   while the case still passes.
//!
//! A [`crate::Plugin`] holds the driver it serves to *both* kinds: a typed
//! driver cannot build most tolerated oddities anyway, and one that sets a
//! public field to one (an empty condition message) gets `INTERNAL` instead
//! of a reply. Strict in what the SDK sends, liberal in what it accepts.
//! It also holds a response to what the plugin advertises, which a response
//! alone cannot tell: topology (`Volume.accessible_topology`,
//! `NodeGetInfoResponse.accessible_topology`) only with
//! `VOLUME_ACCESSIBILITY_CONSTRAINTS`; each `ListVolumesResponse` entry's
//! `status` REQUIRED with `LIST_VOLUMES_PUBLISHED_NODES`; `volume_condition`
//! REQUIRED in `ListVolumes` entries' and `ControllerGetVolume`'s status with
//! the controller's `VOLUME_CONDITION`, and in `NodeGetVolumeStatsResponse`
//! with the node's ("This field MUST be specified if the VOLUME_CONDITION
//! [...] capability is supported"). `published_node_ids` is not checked
//! against `LIST_VOLUMES_PUBLISHED_NODES`: an empty list is how the wire
//! says "published to no node".
//!
//! # Tolerated rules (the complete list)
//!
//! | where | rule | spec text | the typed value |
//! |---|---|---|---|
//! | `ListVolumesResponse.entries[].status.published_node_ids[]`, `ControllerGetVolumeResponse.status.published_node_ids[]` | each entry is a node id (non-empty, at most 256 bytes) | "published_node_ids MAY include nodes not published to or reported by the SP. The CO MUST be resilient to that." | the entry is dropped |
//! | `VolumeCondition.message` (in `ListVolumes`, `ControllerGetVolume`, `NodeGetVolumeStats`) | REQUIRED, at most 128 bytes | "`VolumeCondition` is intended to be informative for humans only, not for automation" (alpha) | kept as received |
//! | the capability lists of `GetPluginCapabilities`, `ControllerGetCapabilities`, `NodeGetCapabilities`, `GroupControllerGetCapabilities` | each entry is a value this version knows | forward compatibility: "older plugins will parse but likely not process newer fields" — a newer peer's values are ignored | the entry is ignored |
//!
//! # MUST rules (everything else)
//!
//! Every other response rule the typed layer checks is a MUST rule; each
//! error names the field:
//!
//! - `GetPluginInfo`: `name` REQUIRED, domain-name notation, at most 63
//!   characters; `vendor_version` REQUIRED; `manifest` at most 4 KiB.
//! - `CreateVolume`, `ControllerGetVolume`, `ListVolumes` entries: `volume`
//!   REQUIRED; `volume_id` REQUIRED and at most 128 bytes; `capacity_bytes`
//!   not negative; `volume_context` at most 4 KiB; `content_source` with
//!   exactly one source and a valid id; `accessible_topology` keys and
//!   values in the spec's notation. `ControllerGetVolume.status` REQUIRED.
//! - `ValidateVolumeCapabilities`: `confirmed.volume_capabilities` REQUIRED
//!   (at least one, each valid); the confirmed maps at most 4 KiB;
//!   `message` at most 128 bytes.
//! - `ListVolumes`, `ListSnapshots`: `next_token` at most 128 bytes; each
//!   entry's `volume`/`snapshot` REQUIRED.
//! - `GetCapacity`: `available_capacity`, `maximum_volume_size`,
//!   `minimum_volume_size` not negative.
//! - `CreateSnapshot`, `GetSnapshot`, `ListSnapshots`: `snapshot` REQUIRED;
//!   `snapshot_id`, `source_volume_id` REQUIRED (at most 128 bytes);
//!   `size_bytes` not negative; `creation_time` REQUIRED and a valid time.
//! - `ControllerExpandVolume`, `NodeExpandVolume`: `capacity_bytes` not negative.
//! - `ControllerPublishVolume`: `publish_context` at most 4 KiB.
//! - `CreateVolumeGroupSnapshot`, `GetVolumeGroupSnapshot`: `group_snapshot`
//!   REQUIRED; its id REQUIRED; `snapshots` at least one, each valid and
//!   carrying the group's id; `ready_to_use` false while a member is not
//!   ready; `creation_time` REQUIRED.
//! - `NodeGetVolumeStats`: each `usage` entry's `unit` REQUIRED (`BYTES` or
//!   `INODES`), figures not negative.
//! - `NodeGetInfo`: `node_id` REQUIRED, at most 256 bytes;
//!   `max_volumes_per_node` not negative; `accessible_topology` valid.
//! - `GetMetadataAllocated`, `GetMetadataDelta` (each streamed message): a
//!   known `block_metadata_type`, offsets not negative, sizes greater than
//!   zero, tuples in
//!   ascending order without overlap (all of one size for `FIXED_LENGTH`),
//!   `volume_capacity_bytes` not negative. Against its request, a
//!   [`crate::Plugin`] also holds what it streams to at most `max_results`
//!   ranges per message and a first range that ends after `starting_offset`.
//!   Across messages (the same type, ascending offsets) the conformance
//!   harness checks the stream.
//!
//! ```
//! use csi_types::{proto, check::ResponseRules, controller::ListVolumesResponse};
//!
//! // A plugin that lists an empty node id next to the real one.
//! let wire = proto::ListVolumesResponse {
//!     entries: vec![proto::list_volumes_response::Entry {
//!         volume: Some(proto::Volume { volume_id: "v1".into(), ..Default::default() }),
//!         status: Some(proto::list_volumes_response::VolumeStatus {
//!             published_node_ids: vec!["node-1".into(), String::new()],
//!             volume_condition: None,
//!         }),
//!     }],
//!     next_token: String::new(),
//! };
//! let odd = wire.tolerated();
//! assert_eq!(odd.len(), 1);
//! assert_eq!(odd[0].field, "entries[0].status.published_node_ids[1]");
//! // Accepted: the typed value keeps the valid id only.
//! let typed = ListVolumesResponse::try_from(wire).unwrap();
//! assert_eq!(typed.entries[0].status.as_ref().unwrap().published_node_ids.len(), 1);
//! ```

use std::fmt;

use crate::capabilities::{
    ControllerCapabilities, GroupControllerCapabilities, NodeCapabilities, PluginCapabilities,
};
use crate::ids::NodeId;
use crate::proto;
use crate::validate::{self, at, index};

/// How much a broken response rule matters to the CO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The CO relies on the rule: a violation is an error in the client and
    /// a failure in the conformance harness.
    Must,
    /// The spec tells the CO to tolerate a violation: the client accepts the
    /// response, the harness reports a warning.
    Tolerated,
}

/// One tolerated oddity in a response: which field, and which rule it bends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oddity {
    /// The field's path in the response, e.g. `status.published_node_ids[0]`.
    pub field: String,
    /// The rule, and why the CO tolerates it.
    pub rule: String,
}

impl fmt::Display for Oddity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.rule)
    }
}

/// The rules of a wire response (see the module docs). Implemented for
/// every response of the RPC table, so a new RPC cannot be added without
/// classifying its response.
pub trait ResponseRules {
    /// Every tolerated rule this response bends, in field order; empty when
    /// it follows them all. MUST rules are checked by the typed conversion
    /// and by [`ResponseRules::must`].
    fn tolerated(&self) -> Vec<Oddity>;

    /// Checks the MUST rules in place: `Ok` exactly when the typed
    /// conversion (`TryFrom<proto::…>`) accepts the response, and otherwise
    /// the same error, naming the field; without taking the response or
    /// building the typed value. This check is where the rules are written,
    /// for a unary response and for each message of the SnapshotMetadata
    /// streams alike: the conversion runs it, then builds the typed value
    /// without checking again.
    ///
    /// ```
    /// use csi_types::{check::ResponseRules, proto};
    /// let wire = proto::CreateVolumeResponse {
    ///     volume: Some(proto::Volume { capacity_bytes: -1, volume_id: "v1".into(), ..Default::default() }),
    /// };
    /// let e = wire.must().unwrap_err();
    /// assert_eq!(e.to_string(), "invalid `volume.capacity_bytes`: must not be negative, got -1");
    /// ```
    fn must(&self) -> Result<(), crate::CsiError>;
}

pub(crate) mod must;

/// Walks a wire message for tolerated oddities under a field path.
pub(crate) trait Walk {
    fn walk(&self, _field: &str, _out: &mut Vec<Oddity>) {}
}

const PUBLISHED_NODE_RULE: &str = "not a node id (REQUIRED, at most 256 bytes); tolerated: \
     published_node_ids MAY include nodes not published to or reported by the SP, and the CO \
     MUST be resilient to that (the entry is ignored)";

const CONDITION_RULE: &str = "tolerated: VolumeCondition is informative for humans only, not \
     for automation";

const CAPABILITY_RULE: &str = "a capability this version of the spec does not know; tolerated: \
     a newer peer's values are ignored";

/// Whether `id` is a valid published node id; the typed layer keeps only these.
pub(crate) fn is_node_id(id: &str) -> bool {
    // In place: the Plugin walks every ListVolumes and ControllerGetVolume
    // response it sends, and an id is not copied to be looked at.
    NodeId::check("node_id", id).is_ok()
}

fn published_nodes(field: &str, ids: &[String], out: &mut Vec<Oddity>) {
    let field = at(field, "published_node_ids");
    for (i, id) in ids.iter().enumerate() {
        if !is_node_id(id) {
            out.push(Oddity {
                field: index(&field, i),
                rule: PUBLISHED_NODE_RULE.into(),
            });
        }
    }
}

impl Walk for proto::VolumeCondition {
    fn walk(&self, field: &str, out: &mut Vec<Oddity>) {
        let field = at(field, "message");
        if self.message.is_empty() {
            out.push(Oddity {
                field,
                rule: format!("this field is REQUIRED; {CONDITION_RULE}"),
            });
        } else if self.message.len() > validate::MAX_STRING_BYTES {
            out.push(Oddity {
                field,
                rule: format!(
                    "must be at most {} bytes, got {}; {CONDITION_RULE}",
                    validate::MAX_STRING_BYTES,
                    self.message.len()
                ),
            });
        }
    }
}

impl<T: Walk> Walk for Option<T> {
    fn walk(&self, field: &str, out: &mut Vec<Oddity>) {
        if let Some(t) = self {
            t.walk(field, out);
        }
    }
}

impl Walk for proto::list_volumes_response::VolumeStatus {
    fn walk(&self, field: &str, out: &mut Vec<Oddity>) {
        published_nodes(field, &self.published_node_ids, out);
        self.volume_condition
            .walk(&at(field, "volume_condition"), out);
    }
}

impl Walk for proto::controller_get_volume_response::VolumeStatus {
    fn walk(&self, field: &str, out: &mut Vec<Oddity>) {
        published_nodes(field, &self.published_node_ids, out);
        self.volume_condition
            .walk(&at(field, "volume_condition"), out);
    }
}

impl Walk for proto::ListVolumesResponse {
    fn walk(&self, _: &str, out: &mut Vec<Oddity>) {
        for (i, e) in self.entries.iter().enumerate() {
            e.status.walk(&at(&index("entries", i), "status"), out);
        }
    }
}

impl Walk for proto::ControllerGetVolumeResponse {
    fn walk(&self, _: &str, out: &mut Vec<Oddity>) {
        self.status.walk("status", out);
    }
}

impl Walk for proto::NodeGetVolumeStatsResponse {
    fn walk(&self, _: &str, out: &mut Vec<Oddity>) {
        self.volume_condition.walk("volume_condition", out);
    }
}

/// Entries of a capability list that convert to no known flag.
macro_rules! capability_lists {
    ($($wire:ty => $flags:ty),* $(,)?) => {
        $(
            impl Walk for $wire {
                fn walk(&self, _: &str, out: &mut Vec<Oddity>) {
                    for (i, c) in self.capabilities.iter().enumerate() {
                        if <$flags>::from_proto(std::slice::from_ref(c)).is_empty() {
                            out.push(Oddity {
                                field: index("capabilities", i),
                                rule: CAPABILITY_RULE.into(),
                            });
                        }
                    }
                }
            }
        )*
    };
}

capability_lists! {
    proto::GetPluginCapabilitiesResponse => PluginCapabilities,
    proto::ControllerGetCapabilitiesResponse => ControllerCapabilities,
    proto::NodeGetCapabilitiesResponse => NodeCapabilities,
    proto::GroupControllerGetCapabilitiesResponse => GroupControllerCapabilities,
}

// Responses without a tolerated rule: every rule of theirs is a MUST rule
// (listed in the module docs).
impl Walk for proto::GetPluginInfoResponse {}
impl Walk for proto::ProbeResponse {}
impl Walk for proto::CreateVolumeResponse {}
impl Walk for proto::DeleteVolumeResponse {}
impl Walk for proto::ControllerPublishVolumeResponse {}
impl Walk for proto::ControllerUnpublishVolumeResponse {}
impl Walk for proto::ValidateVolumeCapabilitiesResponse {}
impl Walk for proto::GetCapacityResponse {}
impl Walk for proto::CreateSnapshotResponse {}
impl Walk for proto::DeleteSnapshotResponse {}
impl Walk for proto::ListSnapshotsResponse {}
impl Walk for proto::GetSnapshotResponse {}
impl Walk for proto::ControllerExpandVolumeResponse {}
impl Walk for proto::ControllerModifyVolumeResponse {}
impl Walk for proto::CreateVolumeGroupSnapshotResponse {}
impl Walk for proto::DeleteVolumeGroupSnapshotResponse {}
impl Walk for proto::GetVolumeGroupSnapshotResponse {}
impl Walk for proto::NodeStageVolumeResponse {}
impl Walk for proto::NodeUnstageVolumeResponse {}
impl Walk for proto::NodePublishVolumeResponse {}
impl Walk for proto::NodeUnpublishVolumeResponse {}
impl Walk for proto::NodeExpandVolumeResponse {}
impl Walk for proto::NodeGetInfoResponse {}

macro_rules! response_rules {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        $($(
            impl ResponseRules for proto::$resp {
                fn tolerated(&self) -> Vec<Oddity> {
                    let mut out = Vec::new();
                    self.walk("", &mut out);
                    out
                }

                fn must(&self) -> Result<(), crate::CsiError> {
                    must::MustResponse::must(self)
                }
            }
        )*)*
    };
}

crate::api::for_each_unary_rpc!(response_rules);

/// The streamed block metadata messages have MUST rules only; each message
/// is checked in place, as a unary response is.
macro_rules! streamed_response_rules {
    ($($resp:ident),*) => {
        $(
            impl ResponseRules for proto::$resp {
                fn tolerated(&self) -> Vec<Oddity> {
                    Vec::new()
                }

                fn must(&self) -> Result<(), crate::CsiError> {
                    must::MustResponse::must(self)
                }
            }
        )*
    };
}

streamed_response_rules!(GetMetadataAllocatedResponse, GetMetadataDeltaResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_message_rules_are_tolerated() {
        let empty = proto::NodeGetVolumeStatsResponse {
            usage: vec![],
            volume_condition: Some(proto::VolumeCondition {
                abnormal: true,
                message: String::new(),
            }),
        };
        let odd = empty.tolerated();
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].field, "volume_condition.message");
        assert!(odd[0].rule.starts_with("this field is REQUIRED"));

        let long = proto::ControllerGetVolumeResponse {
            volume: None,
            status: Some(proto::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![String::new(), "n".repeat(257)],
                volume_condition: Some(proto::VolumeCondition {
                    abnormal: false,
                    message: "m".repeat(129),
                }),
            }),
        };
        let fields: Vec<String> = long.tolerated().into_iter().map(|o| o.field).collect();
        assert_eq!(
            fields,
            [
                "status.published_node_ids[0]",
                "status.published_node_ids[1]",
                "status.volume_condition.message"
            ]
        );
    }

    #[test]
    fn unknown_capabilities_are_tolerated_and_known_ones_are_not_reported() {
        use proto::controller_service_capability::{Rpc, Type};
        let cap = |v| proto::ControllerServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: v })),
        };
        let r = proto::ControllerGetCapabilitiesResponse {
            capabilities: vec![
                cap(1),
                cap(99),
                proto::ControllerServiceCapability { r#type: None },
            ],
        };
        let fields: Vec<String> = r.tolerated().into_iter().map(|o| o.field).collect();
        assert_eq!(fields, ["capabilities[1]", "capabilities[2]"]);
    }

    #[test]
    fn a_clean_response_has_no_oddities() {
        let r = proto::NodeGetVolumeStatsResponse {
            usage: vec![],
            volume_condition: Some(proto::VolumeCondition {
                abnormal: false,
                message: "ok".into(),
            }),
        };
        assert!(r.tolerated().is_empty());
        assert!(proto::DeleteVolumeResponse {}.tolerated().is_empty());
    }
}
