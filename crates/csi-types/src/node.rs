//! Typed requests and responses of the Node service.

use crate::CsiError;
use crate::bound::ObjectBound;
use crate::capabilities::NodeCapabilities;
use crate::check::must::MustResponse;
use crate::ids::{NodeId, NodePath, VolumeId};
use crate::proto;
use crate::redact::Secrets;
use crate::types::{
    CapacityRange, FromChecked, IntoWire, Map, Topology, VolumeCapability, VolumeCondition,
    list_into_wire, optional, optional_id, optional_into_wire, proven_size, required, root,
};
use crate::validate;

/// `NodeStageVolume` request: make a volume available at a per-node staging path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStageVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The context `ControllerPublishVolume` returned.
    pub publish_context: Map,
    /// Where to stage it; the CO creates the directory.
    pub staging_target_path: NodePath,
    /// How it will be used.
    pub volume_capability: VolumeCapability,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// The volume's context from `CreateVolume`.
    pub volume_context: Map,
}

impl TryFrom<proto::NodeStageVolumeRequest> for NodeStageVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::NodeStageVolumeRequest) -> Result<Self, CsiError> {
        Ok(NodeStageVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            publish_context: validate::map("publish_context", p.publish_context)?,
            staging_target_path: NodePath::parse("staging_target_path", p.staging_target_path)?,
            volume_capability: required("volume_capability", p.volume_capability)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
            volume_context: validate::map("volume_context", p.volume_context)?,
        })
    }
}

impl From<NodeStageVolumeRequest> for proto::NodeStageVolumeRequest {
    fn from(r: NodeStageVolumeRequest) -> Self {
        proto::NodeStageVolumeRequest {
            volume_id: r.volume_id.into_string(),
            publish_context: r.publish_context,
            staging_target_path: r.staging_target_path.into_string(),
            volume_capability: Some(r.volume_capability.into()),
            secrets: r.secrets.into_inner(),
            volume_context: r.volume_context,
        }
    }
}

/// `NodeStageVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStageVolumeResponse {}

/// `NodeUnstageVolume` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUnstageVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// Where it was staged.
    pub staging_target_path: NodePath,
}

impl TryFrom<proto::NodeUnstageVolumeRequest> for NodeUnstageVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::NodeUnstageVolumeRequest) -> Result<Self, CsiError> {
        Ok(NodeUnstageVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            staging_target_path: NodePath::parse("staging_target_path", p.staging_target_path)?,
        })
    }
}

impl From<NodeUnstageVolumeRequest> for proto::NodeUnstageVolumeRequest {
    fn from(r: NodeUnstageVolumeRequest) -> Self {
        proto::NodeUnstageVolumeRequest {
            volume_id: r.volume_id.into_string(),
            staging_target_path: r.staging_target_path.into_string(),
        }
    }
}

/// `NodeUnstageVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUnstageVolumeResponse {}

/// `NodePublishVolume` request: make a volume available at a workload's target path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePublishVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The context `ControllerPublishVolume` returned.
    pub publish_context: Map,
    /// Where it was staged, for plugins with `STAGE_UNSTAGE_VOLUME`.
    pub staging_target_path: Option<NodePath>,
    /// Where to publish it; the plugin creates it.
    pub target_path: NodePath,
    /// How it will be used.
    pub volume_capability: VolumeCapability,
    /// Publish read-only.
    pub readonly: bool,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// The volume's context from `CreateVolume`.
    pub volume_context: Map,
}

impl TryFrom<proto::NodePublishVolumeRequest> for NodePublishVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::NodePublishVolumeRequest) -> Result<Self, CsiError> {
        Ok(NodePublishVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            publish_context: validate::map("publish_context", p.publish_context)?,
            staging_target_path: optional_id(
                "staging_target_path",
                p.staging_target_path,
                NodePath::parse,
            )?,
            target_path: NodePath::parse("target_path", p.target_path)?,
            volume_capability: required("volume_capability", p.volume_capability)?,
            readonly: p.readonly,
            secrets: Secrets::parse("secrets", p.secrets)?,
            volume_context: validate::map("volume_context", p.volume_context)?,
        })
    }
}

impl From<NodePublishVolumeRequest> for proto::NodePublishVolumeRequest {
    fn from(r: NodePublishVolumeRequest) -> Self {
        proto::NodePublishVolumeRequest {
            volume_id: r.volume_id.into_string(),
            publish_context: r.publish_context,
            staging_target_path: r.staging_target_path.map(String::from).unwrap_or_default(),
            target_path: r.target_path.into_string(),
            volume_capability: Some(r.volume_capability.into()),
            readonly: r.readonly,
            secrets: r.secrets.into_inner(),
            volume_context: r.volume_context,
        }
    }
}

/// `NodePublishVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePublishVolumeResponse {}

/// `NodeUnpublishVolume` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUnpublishVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// Where it was published; the plugin removes it.
    pub target_path: NodePath,
}

impl TryFrom<proto::NodeUnpublishVolumeRequest> for NodeUnpublishVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::NodeUnpublishVolumeRequest) -> Result<Self, CsiError> {
        Ok(NodeUnpublishVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            target_path: NodePath::parse("target_path", p.target_path)?,
        })
    }
}

impl From<NodeUnpublishVolumeRequest> for proto::NodeUnpublishVolumeRequest {
    fn from(r: NodeUnpublishVolumeRequest) -> Self {
        proto::NodeUnpublishVolumeRequest {
            volume_id: r.volume_id.into_string(),
            target_path: r.target_path.into_string(),
        }
    }
}

/// `NodeUnpublishVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUnpublishVolumeResponse {}

/// `NodeGetVolumeStats` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGetVolumeStatsRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// A path where it is published or staged. Object-bound: validated by
    /// [`ObjectBound::get`] after the volume was found (see [`crate::bound`]).
    pub volume_path: ObjectBound<NodePath>,
    /// Where it is staged, if the CO says. Object-bound, like `volume_path`.
    pub staging_target_path: ObjectBound<Option<NodePath>>,
}

impl TryFrom<proto::NodeGetVolumeStatsRequest> for NodeGetVolumeStatsRequest {
    type Error = CsiError;
    fn try_from(p: proto::NodeGetVolumeStatsRequest) -> Result<Self, CsiError> {
        Ok(NodeGetVolumeStatsRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            volume_path: ObjectBound::from_raw(p.volume_path),
            staging_target_path: ObjectBound::from_raw(p.staging_target_path),
        })
    }
}

impl From<NodeGetVolumeStatsRequest> for proto::NodeGetVolumeStatsRequest {
    fn from(r: NodeGetVolumeStatsRequest) -> Self {
        proto::NodeGetVolumeStatsRequest {
            volume_id: r.volume_id.into_string(),
            volume_path: r.volume_path.into_raw(),
            staging_target_path: r.staging_target_path.into_raw(),
        }
    }
}

/// The unit of a [`VolumeUsage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsageUnit {
    /// Bytes.
    Bytes,
    /// Inodes.
    Inodes,
}

/// One usage figure of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeUsage {
    /// What is counted. REQUIRED.
    pub unit: UsageUnit,
    /// The total. REQUIRED.
    pub total: u64,
    /// Free, if known.
    pub available: u64,
    /// Used, if known.
    pub used: u64,
}

impl FromChecked<proto::VolumeUsage> for VolumeUsage {
    fn from_checked(p: proto::VolumeUsage) -> Self {
        use proto::volume_usage::Unit;
        VolumeUsage {
            unit: crate::types::proven(match Unit::try_from(p.unit) {
                Ok(Unit::Bytes) => Some(UsageUnit::Bytes),
                Ok(Unit::Inodes) => Some(UsageUnit::Inodes),
                Ok(Unit::Unknown) | Err(_) => None,
            }),
            total: proven_size(p.total),
            available: proven_size(p.available),
            used: proven_size(p.used),
        }
    }
}

impl IntoWire<proto::VolumeUsage> for VolumeUsage {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<proto::VolumeUsage, CsiError> {
        use proto::volume_usage::Unit;
        let size = |name, v| validate::wire_size(|| validate::at(&field(), name), v);
        Ok(proto::VolumeUsage {
            available: size("available", self.available)?,
            total: size("total", self.total)?,
            used: size("used", self.used)?,
            unit: match self.unit {
                UsageUnit::Bytes => Unit::Bytes as i32,
                UsageUnit::Inodes => Unit::Inodes as i32,
            },
        })
    }
}

/// `NodeGetVolumeStats` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeGetVolumeStatsResponse {
    /// Usage figures.
    pub usage: Vec<VolumeUsage>,
    /// Health, for `VOLUME_CONDITION` capable plugins.
    pub volume_condition: Option<VolumeCondition>,
}

impl TryFrom<proto::NodeGetVolumeStatsResponse> for NodeGetVolumeStatsResponse {
    type Error = CsiError;
    fn try_from(p: proto::NodeGetVolumeStatsResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(NodeGetVolumeStatsResponse {
            usage: p.usage.into_iter().map(VolumeUsage::from_checked).collect(),
            volume_condition: p.volume_condition.map(VolumeCondition::from_checked),
        })
    }
}

impl IntoWire<proto::NodeGetVolumeStatsResponse> for NodeGetVolumeStatsResponse {
    fn into_wire(
        self,
        _: &dyn Fn() -> String,
    ) -> Result<proto::NodeGetVolumeStatsResponse, CsiError> {
        Ok(proto::NodeGetVolumeStatsResponse {
            usage: list_into_wire(&root("usage"), self.usage)?,
            volume_condition: self.volume_condition.map(Into::into),
        })
    }
}

/// `NodeExpandVolume` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeExpandVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// A path where it is published or staged. Object-bound: validated by
    /// [`ObjectBound::get`] after the volume was found (see [`crate::bound`]).
    pub volume_path: ObjectBound<NodePath>,
    /// The new capacity, if the CO says.
    pub capacity_range: Option<CapacityRange>,
    /// Where it is staged, if the CO says. Object-bound, like `volume_path`.
    pub staging_target_path: ObjectBound<Option<NodePath>>,
    /// How it is used, if the CO says.
    pub volume_capability: Option<VolumeCapability>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::NodeExpandVolumeRequest> for NodeExpandVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::NodeExpandVolumeRequest) -> Result<Self, CsiError> {
        Ok(NodeExpandVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            volume_path: ObjectBound::from_raw(p.volume_path),
            capacity_range: optional("capacity_range", p.capacity_range)?,
            staging_target_path: ObjectBound::from_raw(p.staging_target_path),
            volume_capability: optional("volume_capability", p.volume_capability)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl IntoWire<proto::NodeExpandVolumeRequest> for NodeExpandVolumeRequest {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::NodeExpandVolumeRequest, CsiError> {
        let r = self;
        Ok(proto::NodeExpandVolumeRequest {
            volume_id: r.volume_id.into_string(),
            volume_path: r.volume_path.into_raw(),
            capacity_range: optional_into_wire(&root("capacity_range"), r.capacity_range)?,
            staging_target_path: r.staging_target_path.into_raw(),
            volume_capability: r.volume_capability.map(Into::into),
            secrets: r.secrets.into_inner(),
        })
    }
}

/// `NodeExpandVolume` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeExpandVolumeResponse {
    /// The new capacity, if known.
    pub capacity_bytes: Option<u64>,
}

impl TryFrom<proto::NodeExpandVolumeResponse> for NodeExpandVolumeResponse {
    type Error = CsiError;
    fn try_from(p: proto::NodeExpandVolumeResponse) -> Result<Self, CsiError> {
        p.must()?;
        let bytes = proven_size(p.capacity_bytes);
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: (bytes != 0).then_some(bytes),
        })
    }
}

impl IntoWire<proto::NodeExpandVolumeResponse> for NodeExpandVolumeResponse {
    fn into_wire(
        self,
        _: &dyn Fn() -> String,
    ) -> Result<proto::NodeExpandVolumeResponse, CsiError> {
        Ok(proto::NodeExpandVolumeResponse {
            capacity_bytes: self
                .capacity_bytes
                .map_or(Ok(0), |v| validate::wire_size(root("capacity_bytes"), v))?,
        })
    }
}

/// `NodeGetCapabilities` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeGetCapabilitiesRequest {}

/// `NodeGetCapabilities` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeGetCapabilitiesResponse {
    /// The advertised capabilities.
    pub capabilities: NodeCapabilities,
}

impl TryFrom<proto::NodeGetCapabilitiesResponse> for NodeGetCapabilitiesResponse {
    type Error = CsiError;
    fn try_from(p: proto::NodeGetCapabilitiesResponse) -> Result<Self, CsiError> {
        Ok(NodeGetCapabilitiesResponse {
            capabilities: NodeCapabilities::from_proto(&p.capabilities),
        })
    }
}

impl From<NodeGetCapabilitiesResponse> for proto::NodeGetCapabilitiesResponse {
    fn from(r: NodeGetCapabilitiesResponse) -> Self {
        proto::NodeGetCapabilitiesResponse {
            capabilities: r.capabilities.to_proto(),
        }
    }
}

/// `NodeGetInfo` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeGetInfoRequest {}

/// `NodeGetInfo` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGetInfoResponse {
    /// The node's id. REQUIRED.
    pub node_id: NodeId,
    /// How many volumes may be published here; `None` means no limit.
    pub max_volumes_per_node: Option<u64>,
    /// Where the node is.
    pub accessible_topology: Option<Topology>,
}

impl NodeGetInfoResponse {
    /// A response with every REQUIRED field.
    pub fn new(node_id: NodeId) -> Self {
        NodeGetInfoResponse {
            node_id,
            max_volumes_per_node: None,
            accessible_topology: None,
        }
    }

    /// A response from the driver's own node id, which this checks: a bad
    /// id is the driver's bug, so the error is `INTERNAL` naming the field
    /// and the rule (not the `INVALID_ARGUMENT` of [`NodeId::new`], which
    /// would blame the CO's request). Takes a [`NodeId`] or a string.
    ///
    /// ```
    /// use csi_types::{Code, node::NodeGetInfoResponse};
    /// assert!(NodeGetInfoResponse::try_new("node-1").is_ok());
    /// let e = NodeGetInfoResponse::try_new("").unwrap_err();
    /// assert_eq!(e.code(), Code::Internal);
    /// assert_eq!(
    ///     e.to_string(),
    ///     "internal error: invalid NodeGetInfoResponse built by the driver: \
    ///      node_id: this field is REQUIRED"
    /// );
    /// ```
    pub fn try_new(node_id: impl Into<String>) -> Result<Self, CsiError> {
        let node_id = NodeId::parse("node_id", node_id.into())
            .map_err(|e| e.built_by_driver("NodeGetInfoResponse"))?;
        Ok(Self::new(node_id))
    }

    /// Sets the attach limit.
    pub fn with_max_volumes(mut self, n: u64) -> Self {
        self.max_volumes_per_node = Some(n);
        self
    }

    /// Sets the node's topology.
    pub fn with_topology(mut self, t: Topology) -> Self {
        self.accessible_topology = Some(t);
        self
    }
}

impl TryFrom<proto::NodeGetInfoResponse> for NodeGetInfoResponse {
    type Error = CsiError;
    fn try_from(p: proto::NodeGetInfoResponse) -> Result<Self, CsiError> {
        p.must()?;
        let max = proven_size(p.max_volumes_per_node);
        Ok(NodeGetInfoResponse {
            node_id: NodeId::from_checked(p.node_id),
            max_volumes_per_node: (max != 0).then_some(max),
            accessible_topology: p.accessible_topology.map(Topology::from_checked),
        })
    }
}

impl IntoWire<proto::NodeGetInfoResponse> for NodeGetInfoResponse {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::NodeGetInfoResponse, CsiError> {
        let r = self;
        Ok(proto::NodeGetInfoResponse {
            node_id: r.node_id.into_string(),
            max_volumes_per_node: r.max_volumes_per_node.map_or(Ok(0), |v| {
                validate::wire_size(root("max_volumes_per_node"), v)
            })?,
            accessible_topology: r.accessible_topology.map(Into::into),
        })
    }
}

crate::types::try_into_proto! {
    VolumeUsage => proto::VolumeUsage,
    NodeGetVolumeStatsResponse => proto::NodeGetVolumeStatsResponse,
    NodeExpandVolumeRequest => proto::NodeExpandVolumeRequest,
    NodeExpandVolumeResponse => proto::NodeExpandVolumeResponse,
    NodeGetInfoResponse => proto::NodeGetInfoResponse,
}

crate::messages::empty_messages! {
    NodeStageVolumeResponse => proto::NodeStageVolumeResponse,
    NodeUnstageVolumeResponse => proto::NodeUnstageVolumeResponse,
    NodePublishVolumeResponse => proto::NodePublishVolumeResponse,
    NodeUnpublishVolumeResponse => proto::NodeUnpublishVolumeResponse,
    NodeGetCapabilitiesRequest => proto::NodeGetCapabilitiesRequest,
    NodeGetInfoRequest => proto::NodeGetInfoRequest,
}
