//! Capability sets as `bitflags`, converting to and from the proto lists.
//!
//! Each flag is named after the spec's enum value. Converting from the wire
//! ignores values this crate does not know (a newer peer's additions and
//! `UNKNOWN`), as the spec asks of COs; converting to the wire lists the set
//! flags in ascending wire order.

use bitflags::bitflags;

use crate::proto;

bitflags! {
    /// What `GetPluginCapabilities` advertises.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PluginCapabilities: u32 {
        /// The plugin serves the Controller service.
        const CONTROLLER_SERVICE = 1 << 0;
        /// Volumes are not equally accessible from every node.
        const VOLUME_ACCESSIBILITY_CONSTRAINTS = 1 << 1;
        /// The plugin serves the GroupController service.
        const GROUP_CONTROLLER_SERVICE = 1 << 2;
        /// The plugin serves the SnapshotMetadata service (alpha).
        const SNAPSHOT_METADATA_SERVICE = 1 << 3;
        /// Volumes can be expanded while published (`VolumeExpansion.ONLINE`).
        const VOLUME_EXPANSION_ONLINE = 1 << 4;
        /// Volumes can be expanded only while unpublished (`VolumeExpansion.OFFLINE`).
        const VOLUME_EXPANSION_OFFLINE = 1 << 5;
    }
}

bitflags! {
    /// What `ControllerGetCapabilities` advertises; bit `n` is wire value `n + 1`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ControllerCapabilities: u32 {
        /// `CreateVolume` and `DeleteVolume`.
        const CREATE_DELETE_VOLUME = 1 << 0;
        /// `ControllerPublishVolume` and `ControllerUnpublishVolume`.
        const PUBLISH_UNPUBLISH_VOLUME = 1 << 1;
        /// `ListVolumes`.
        const LIST_VOLUMES = 1 << 2;
        /// `GetCapacity`.
        const GET_CAPACITY = 1 << 3;
        /// `CreateSnapshot` and `DeleteSnapshot`.
        const CREATE_DELETE_SNAPSHOT = 1 << 4;
        /// `ListSnapshots`.
        const LIST_SNAPSHOTS = 1 << 5;
        /// Volumes can be created from a volume (`VolumeContentSource.volume`).
        const CLONE_VOLUME = 1 << 6;
        /// `ControllerPublishVolume` honours `readonly`.
        const PUBLISH_READONLY = 1 << 7;
        /// `ControllerExpandVolume`.
        const EXPAND_VOLUME = 1 << 8;
        /// `ListVolumes` reports `published_node_ids`.
        const LIST_VOLUMES_PUBLISHED_NODES = 1 << 9;
        /// `ListVolumes`/`ControllerGetVolume` report `volume_condition` (alpha).
        const VOLUME_CONDITION = 1 << 10;
        /// `ControllerGetVolume` (alpha).
        const GET_VOLUME = 1 << 11;
        /// The `SINGLE_NODE_*_WRITER` access modes (alpha).
        const SINGLE_NODE_MULTI_WRITER = 1 << 12;
        /// `ControllerModifyVolume`.
        const MODIFY_VOLUME = 1 << 13;
        /// `GetSnapshot` (alpha).
        const GET_SNAPSHOT = 1 << 14;
    }
}

bitflags! {
    /// What `NodeGetCapabilities` advertises; bit `n` is wire value `n + 1`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct NodeCapabilities: u32 {
        /// `NodeStageVolume` and `NodeUnstageVolume`.
        const STAGE_UNSTAGE_VOLUME = 1 << 0;
        /// `NodeGetVolumeStats`.
        const GET_VOLUME_STATS = 1 << 1;
        /// `NodeExpandVolume`.
        const EXPAND_VOLUME = 1 << 2;
        /// `NodeGetVolumeStats` reports `volume_condition` (alpha).
        const VOLUME_CONDITION = 1 << 3;
        /// The `SINGLE_NODE_*_WRITER` access modes (alpha).
        const SINGLE_NODE_MULTI_WRITER = 1 << 4;
        /// `volume_mount_group` is honoured.
        const VOLUME_MOUNT_GROUP = 1 << 5;
    }
}

bitflags! {
    /// What `GroupControllerGetCapabilities` advertises; bit `n` is wire value `n + 1`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct GroupControllerCapabilities: u32 {
        /// `CreateVolumeGroupSnapshot`, `DeleteVolumeGroupSnapshot` and `GetVolumeGroupSnapshot`.
        const CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT = 1 << 0;
    }
}

/// Bits `n` ↔ wire values `n + 1`, for the RPC capability enums.
fn from_wire_values<F: bitflags::Flags<Bits = u32>>(values: impl Iterator<Item = i32>) -> F {
    let mut flags = F::empty();
    for v in values {
        if (1..=32).contains(&v) {
            flags.insert(F::from_bits_truncate(1 << (v - 1)));
        }
    }
    flags
}

fn to_wire_values<F: bitflags::Flags<Bits = u32>>(flags: &F) -> impl Iterator<Item = i32> {
    let bits = flags.bits();
    (0..32).filter(move |i| bits & (1 << i) != 0).map(|i| i + 1)
}

impl ControllerCapabilities {
    /// From the wire list (`ControllerGetCapabilitiesResponse.capabilities`).
    pub fn from_proto(list: &[proto::ControllerServiceCapability]) -> Self {
        use proto::controller_service_capability::Type;
        from_wire_values(
            list.iter()
                .filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(rpc)| rpc.r#type)),
        )
    }

    /// To the wire list.
    pub fn to_proto(self) -> Vec<proto::ControllerServiceCapability> {
        use proto::controller_service_capability::{Rpc, Type};
        to_wire_values(&self)
            .map(|v| proto::ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: v })),
            })
            .collect()
    }
}

impl NodeCapabilities {
    /// From the wire list (`NodeGetCapabilitiesResponse.capabilities`).
    pub fn from_proto(list: &[proto::NodeServiceCapability]) -> Self {
        use proto::node_service_capability::Type;
        from_wire_values(
            list.iter()
                .filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(rpc)| rpc.r#type)),
        )
    }

    /// To the wire list.
    pub fn to_proto(self) -> Vec<proto::NodeServiceCapability> {
        use proto::node_service_capability::{Rpc, Type};
        to_wire_values(&self)
            .map(|v| proto::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: v })),
            })
            .collect()
    }
}

impl GroupControllerCapabilities {
    /// From the wire list (`GroupControllerGetCapabilitiesResponse.capabilities`).
    pub fn from_proto(list: &[proto::GroupControllerServiceCapability]) -> Self {
        use proto::group_controller_service_capability::Type;
        from_wire_values(
            list.iter()
                .filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(rpc)| rpc.r#type)),
        )
    }

    /// To the wire list.
    pub fn to_proto(self) -> Vec<proto::GroupControllerServiceCapability> {
        use proto::group_controller_service_capability::{Rpc, Type};
        to_wire_values(&self)
            .map(|v| proto::GroupControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: v })),
            })
            .collect()
    }
}

impl PluginCapabilities {
    /// The service flags (bits 0..=3) are wire values 1..=4 of `Service.Type`;
    /// the expansion flags are `VolumeExpansion.Type` ONLINE (1) and OFFLINE (2).
    const SERVICE_MASK: u32 = 0b1111;

    /// From the wire list (`GetPluginCapabilitiesResponse.capabilities`).
    pub fn from_proto(list: &[proto::PluginCapability]) -> Self {
        use proto::plugin_capability::Type;
        let mut flags = PluginCapabilities::empty();
        for c in list {
            match &c.r#type {
                Some(Type::Service(s)) if (1..=4).contains(&s.r#type) => {
                    flags |= PluginCapabilities::from_bits_truncate(1 << (s.r#type - 1));
                }
                Some(Type::VolumeExpansion(e)) if e.r#type == 1 => {
                    flags |= Self::VOLUME_EXPANSION_ONLINE
                }
                Some(Type::VolumeExpansion(e)) if e.r#type == 2 => {
                    flags |= Self::VOLUME_EXPANSION_OFFLINE
                }
                _ => {}
            }
        }
        flags
    }

    /// To the wire list.
    pub fn to_proto(self) -> Vec<proto::PluginCapability> {
        use proto::plugin_capability::{Service, Type, VolumeExpansion};
        let mut out: Vec<proto::PluginCapability> = (0..4)
            .filter(|i| self.bits() & Self::SERVICE_MASK & (1 << i) != 0)
            .map(|i| proto::PluginCapability {
                r#type: Some(Type::Service(Service { r#type: i + 1 })),
            })
            .collect();
        for (flag, wire) in [
            (Self::VOLUME_EXPANSION_ONLINE, 1),
            (Self::VOLUME_EXPANSION_OFFLINE, 2),
        ] {
            if self.contains(flag) {
                out.push(proto::PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion { r#type: wire })),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_round_trips_through_the_wire() {
        assert_eq!(
            ControllerCapabilities::from_proto(&ControllerCapabilities::all().to_proto()),
            ControllerCapabilities::all()
        );
        assert_eq!(ControllerCapabilities::all().to_proto().len(), 15);
        assert_eq!(
            NodeCapabilities::from_proto(&NodeCapabilities::all().to_proto()),
            NodeCapabilities::all()
        );
        assert_eq!(
            GroupControllerCapabilities::from_proto(&GroupControllerCapabilities::all().to_proto()),
            GroupControllerCapabilities::all()
        );
        assert_eq!(
            PluginCapabilities::from_proto(&PluginCapabilities::all().to_proto()),
            PluginCapabilities::all()
        );
    }

    #[test]
    fn wire_values_match_the_spec_enums() {
        use proto::controller_service_capability::rpc::Type;
        let wire = ControllerCapabilities::MODIFY_VOLUME.to_proto();
        let Some(proto::controller_service_capability::Type::Rpc(rpc)) = &wire[0].r#type else {
            panic!("expected an rpc capability");
        };
        assert_eq!(rpc.r#type, Type::ModifyVolume as i32);
        assert_eq!(
            ControllerCapabilities::from_proto(&[proto::ControllerServiceCapability {
                r#type: Some(proto::controller_service_capability::Type::Rpc(
                    proto::controller_service_capability::Rpc {
                        r#type: Type::GetSnapshot as i32
                    }
                )),
            }]),
            ControllerCapabilities::GET_SNAPSHOT
        );
    }

    #[test]
    fn unknown_values_are_ignored() {
        let list = vec![proto::NodeServiceCapability {
            r#type: Some(proto::node_service_capability::Type::Rpc(
                proto::node_service_capability::Rpc { r#type: 99 },
            )),
        }];
        assert_eq!(
            NodeCapabilities::from_proto(&list),
            NodeCapabilities::empty()
        );
    }
}
