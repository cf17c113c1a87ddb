//! Typed requests and responses of the Controller service.

use crate::CsiError;
use crate::capabilities::ControllerCapabilities;
use crate::check::must::MustResponse;
use crate::ids::{NodeId, SnapshotId, SnapshotName, VolumeId, VolumeName};
use crate::proto;
use crate::redact::Secrets;
use crate::types::{
    CapacityRange, FromChecked, IntoWire, Map, Snapshot, Topology, TopologyRequirement, Volume,
    VolumeCapability, VolumeCondition, VolumeContentSource, list, non_empty_list, optional,
    optional_id, optional_into_wire, proven, proven_size, required, root,
};
use crate::validate;
use crate::validate::{at, index};

/// `CreateVolume` request: provision a volume, idempotently by `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateVolumeRequest {
    /// The CO's name for the volume; the idempotency key.
    pub name: VolumeName,
    /// The capacity wanted, if the CO says.
    pub capacity_range: Option<CapacityRange>,
    /// How the volume will be used; at least one.
    pub volume_capabilities: Vec<VolumeCapability>,
    /// Opaque StorageClass parameters.
    pub parameters: Map,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// Restore from a snapshot or clone a volume.
    pub volume_content_source: Option<VolumeContentSource>,
    /// Where the volume must be accessible from.
    pub accessibility_requirements: Option<TopologyRequirement>,
    /// Initial values of parameters that `ControllerModifyVolume` may change later.
    pub mutable_parameters: Map,
}

impl TryFrom<proto::CreateVolumeRequest> for CreateVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::CreateVolumeRequest) -> Result<Self, CsiError> {
        Ok(CreateVolumeRequest {
            name: VolumeName::parse("name", p.name)?,
            capacity_range: optional("capacity_range", p.capacity_range)?,
            volume_capabilities: non_empty_list("volume_capabilities", p.volume_capabilities)?,
            parameters: validate::map("parameters", p.parameters)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
            volume_content_source: optional("volume_content_source", p.volume_content_source)?,
            accessibility_requirements: optional(
                "accessibility_requirements",
                p.accessibility_requirements,
            )?,
            mutable_parameters: validate::map("mutable_parameters", p.mutable_parameters)?,
        })
    }
}

impl IntoWire<proto::CreateVolumeRequest> for CreateVolumeRequest {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::CreateVolumeRequest, CsiError> {
        let r = self;
        Ok(proto::CreateVolumeRequest {
            name: r.name.into_string(),
            capacity_range: optional_into_wire(&root("capacity_range"), r.capacity_range)?,
            volume_capabilities: r.volume_capabilities.into_iter().map(Into::into).collect(),
            parameters: r.parameters,
            secrets: r.secrets.into_inner(),
            volume_content_source: r.volume_content_source.map(Into::into),
            accessibility_requirements: r.accessibility_requirements.map(Into::into),
            mutable_parameters: r.mutable_parameters,
        })
    }
}

/// `CreateVolume` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateVolumeResponse {
    /// The volume. REQUIRED.
    pub volume: Volume,
}

impl CreateVolumeResponse {
    /// A response for a volume.
    pub fn new(volume: Volume) -> Self {
        CreateVolumeResponse { volume }
    }
}

impl TryFrom<proto::CreateVolumeResponse> for CreateVolumeResponse {
    type Error = CsiError;
    fn try_from(p: proto::CreateVolumeResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(CreateVolumeResponse {
            volume: Volume::from_checked(proven(p.volume)),
        })
    }
}

impl IntoWire<proto::CreateVolumeResponse> for CreateVolumeResponse {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::CreateVolumeResponse, CsiError> {
        Ok(proto::CreateVolumeResponse {
            volume: Some(self.volume.into_wire(&root("volume"))?),
        })
    }
}

/// `DeleteVolume` request. Deleting a volume that does not exist succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::DeleteVolumeRequest> for DeleteVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::DeleteVolumeRequest) -> Result<Self, CsiError> {
        Ok(DeleteVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl From<DeleteVolumeRequest> for proto::DeleteVolumeRequest {
    fn from(r: DeleteVolumeRequest) -> Self {
        proto::DeleteVolumeRequest {
            volume_id: r.volume_id.into_string(),
            secrets: r.secrets.into_inner(),
        }
    }
}

/// `DeleteVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteVolumeResponse {}

/// `ControllerPublishVolume` request: make a volume available on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerPublishVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The node, as `NodeGetInfo` named it.
    pub node_id: NodeId,
    /// How the node will use it.
    pub volume_capability: VolumeCapability,
    /// Publish read-only.
    pub readonly: bool,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// The volume's context from `CreateVolume`.
    pub volume_context: Map,
}

impl TryFrom<proto::ControllerPublishVolumeRequest> for ControllerPublishVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::ControllerPublishVolumeRequest) -> Result<Self, CsiError> {
        Ok(ControllerPublishVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            node_id: NodeId::parse("node_id", p.node_id)?,
            volume_capability: required("volume_capability", p.volume_capability)?,
            readonly: p.readonly,
            secrets: Secrets::parse("secrets", p.secrets)?,
            volume_context: validate::map("volume_context", p.volume_context)?,
        })
    }
}

impl From<ControllerPublishVolumeRequest> for proto::ControllerPublishVolumeRequest {
    fn from(r: ControllerPublishVolumeRequest) -> Self {
        proto::ControllerPublishVolumeRequest {
            volume_id: r.volume_id.into_string(),
            node_id: r.node_id.into_string(),
            volume_capability: Some(r.volume_capability.into()),
            readonly: r.readonly,
            secrets: r.secrets.into_inner(),
            volume_context: r.volume_context,
        }
    }
}

/// `ControllerPublishVolume` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerPublishVolumeResponse {
    /// Opaque context passed to the node's stage and publish calls.
    pub publish_context: Map,
}

/// `ControllerUnpublishVolume` request. Unpublishing what is not published succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerUnpublishVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The node; `None` means every node.
    pub node_id: Option<NodeId>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::ControllerUnpublishVolumeRequest> for ControllerUnpublishVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::ControllerUnpublishVolumeRequest) -> Result<Self, CsiError> {
        Ok(ControllerUnpublishVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            node_id: optional_id("node_id", p.node_id, NodeId::parse)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl From<ControllerUnpublishVolumeRequest> for proto::ControllerUnpublishVolumeRequest {
    fn from(r: ControllerUnpublishVolumeRequest) -> Self {
        proto::ControllerUnpublishVolumeRequest {
            volume_id: r.volume_id.into_string(),
            node_id: r.node_id.map(String::from).unwrap_or_default(),
            secrets: r.secrets.into_inner(),
        }
    }
}

/// `ControllerUnpublishVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerUnpublishVolumeResponse {}

/// `ValidateVolumeCapabilities` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidateVolumeCapabilitiesRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The volume's context from `CreateVolume`.
    pub volume_context: Map,
    /// The capabilities to check; at least one.
    pub volume_capabilities: Vec<VolumeCapability>,
    /// The StorageClass parameters the volume was created with.
    pub parameters: Map,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// The mutable parameters to check.
    pub mutable_parameters: Map,
}

impl TryFrom<proto::ValidateVolumeCapabilitiesRequest> for ValidateVolumeCapabilitiesRequest {
    type Error = CsiError;
    fn try_from(p: proto::ValidateVolumeCapabilitiesRequest) -> Result<Self, CsiError> {
        Ok(ValidateVolumeCapabilitiesRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            volume_context: validate::map("volume_context", p.volume_context)?,
            volume_capabilities: non_empty_list("volume_capabilities", p.volume_capabilities)?,
            parameters: validate::map("parameters", p.parameters)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
            mutable_parameters: validate::map("mutable_parameters", p.mutable_parameters)?,
        })
    }
}

impl From<ValidateVolumeCapabilitiesRequest> for proto::ValidateVolumeCapabilitiesRequest {
    fn from(r: ValidateVolumeCapabilitiesRequest) -> Self {
        proto::ValidateVolumeCapabilitiesRequest {
            volume_id: r.volume_id.into_string(),
            volume_context: r.volume_context,
            volume_capabilities: r.volume_capabilities.into_iter().map(Into::into).collect(),
            parameters: r.parameters,
            secrets: r.secrets.into_inner(),
            mutable_parameters: r.mutable_parameters,
        }
    }
}

/// What a `ValidateVolumeCapabilities` call confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    /// The confirmed volume context.
    pub volume_context: Map,
    /// The confirmed capabilities; at least one.
    pub volume_capabilities: Vec<VolumeCapability>,
    /// The confirmed parameters.
    pub parameters: Map,
    /// The confirmed mutable parameters.
    pub mutable_parameters: Map,
}

/// `ValidateVolumeCapabilities` response: either confirmed, or a message saying why not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidateVolumeCapabilitiesResponse {
    /// Set when every requested capability is supported.
    pub confirmed: Option<Confirmed>,
    /// Why the capabilities were not confirmed, for the operator.
    pub message: String,
}

impl ValidateVolumeCapabilitiesResponse {
    /// Confirms the request's capabilities, context and parameters as given.
    pub fn confirm(req: &ValidateVolumeCapabilitiesRequest) -> Self {
        ValidateVolumeCapabilitiesResponse {
            confirmed: Some(Confirmed {
                volume_context: req.volume_context.clone(),
                volume_capabilities: req.volume_capabilities.clone(),
                parameters: req.parameters.clone(),
                mutable_parameters: req.mutable_parameters.clone(),
            }),
            message: String::new(),
        }
    }

    /// Declines, saying why. The message is cut to the spec's 128-byte
    /// string limit (on a character boundary).
    pub fn unsupported(message: impl Into<String>) -> Self {
        ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message: validate::truncate(message.into(), validate::MAX_STRING_BYTES),
        }
    }
}

impl FromChecked<proto::validate_volume_capabilities_response::Confirmed> for Confirmed {
    fn from_checked(p: proto::validate_volume_capabilities_response::Confirmed) -> Self {
        Confirmed {
            volume_context: p.volume_context,
            volume_capabilities: p
                .volume_capabilities
                .into_iter()
                .map(VolumeCapability::from_checked)
                .collect(),
            parameters: p.parameters,
            mutable_parameters: p.mutable_parameters,
        }
    }
}

impl TryFrom<proto::ValidateVolumeCapabilitiesResponse> for ValidateVolumeCapabilitiesResponse {
    type Error = CsiError;
    fn try_from(p: proto::ValidateVolumeCapabilitiesResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: p.confirmed.map(Confirmed::from_checked),
            message: p.message,
        })
    }
}

impl From<ValidateVolumeCapabilitiesResponse> for proto::ValidateVolumeCapabilitiesResponse {
    fn from(r: ValidateVolumeCapabilitiesResponse) -> Self {
        proto::ValidateVolumeCapabilitiesResponse {
            confirmed: r.confirmed.map(|c| {
                proto::validate_volume_capabilities_response::Confirmed {
                    volume_context: c.volume_context,
                    volume_capabilities: c
                        .volume_capabilities
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                    parameters: c.parameters,
                    mutable_parameters: c.mutable_parameters,
                }
            }),
            message: r.message,
        }
    }
}

/// `ListVolumes` request: one page of volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListVolumesRequest {
    /// At most this many entries; `None` lets the plugin choose. The wire carries an `int32`
    /// where 0 means no maximum: `Some(0)` is sent as 0 (read back as `None`), and a value
    /// above `i32::MAX` is sent as `i32::MAX`, a cap that changes no page a plugin can return.
    ///
    /// ```
    /// # use csi_types::{controller::ListVolumesRequest, proto};
    /// let r = ListVolumesRequest { max_entries: Some(u32::MAX), ..Default::default() };
    /// assert_eq!(proto::ListVolumesRequest::from(r).max_entries, i32::MAX);
    /// ```
    pub max_entries: Option<u32>,
    /// Continue after a previous page's `next_token`. Received, one longer
    /// than 128 bytes is no token a plugin issued: `ABORTED`, as the error
    /// table of an invalid `starting_token` says.
    pub starting_token: Option<String>,
}

impl TryFrom<proto::ListVolumesRequest> for ListVolumesRequest {
    type Error = CsiError;
    fn try_from(p: proto::ListVolumesRequest) -> Result<Self, CsiError> {
        Ok(ListVolumesRequest {
            max_entries: validate::optional_count("max_entries", p.max_entries)?,
            starting_token: validate::starting_token(p.starting_token)?,
        })
    }
}

impl From<ListVolumesRequest> for proto::ListVolumesRequest {
    fn from(r: ListVolumesRequest) -> Self {
        proto::ListVolumesRequest {
            max_entries: r.max_entries.map_or(0, validate::count_to_wire),
            starting_token: r.starting_token.unwrap_or_default(),
        }
    }
}

/// A volume's publication status, in `ListVolumes` and `ControllerGetVolume`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeStatus {
    /// The nodes it is published to. Received from a plugin, it holds the
    /// entries that are node ids: the spec lets a plugin list others and
    /// tells the CO to be resilient to that ([`crate::check`]).
    pub published_node_ids: Vec<NodeId>,
    /// Its health, for `VOLUME_CONDITION` capable plugins.
    pub volume_condition: Option<VolumeCondition>,
}

impl VolumeStatus {
    /// The status of a volume published to `node_ids` (as the driver keeps
    /// them, e.g. the keys of its publication map) with this condition (for
    /// a `VOLUME_CONDITION` capable plugin; `None` otherwise). A kept node id
    /// that is not a valid one is the driver's own state gone wrong:
    /// `INTERNAL`, naming its place in the list and the rule (not its value,
    /// which may be anything the driver's state holds).
    ///
    /// ```
    /// use csi_types::controller::VolumeStatus;
    /// use csi_types::types::VolumeCondition;
    /// let s = VolumeStatus::from_published(["node-1", "node-2"], Some(VolumeCondition::healthy("ok")))?;
    /// assert_eq!(s.published_node_ids.len(), 2);
    /// let err = VolumeStatus::from_published(["node-1", ""], None).unwrap_err();
    /// assert_eq!(err.code(), csi_types::Code::Internal);
    /// assert_eq!(
    ///     err.to_string(),
    ///     "internal error: invalid VolumeStatus built by the driver: \
    ///      published_node_ids[1]: this field is REQUIRED"
    /// );
    /// let err = VolumeStatus::from_published(["n".repeat(100_000)], None).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "internal error: invalid VolumeStatus built by the driver: \
    ///      published_node_ids[0]: must be at most 256 bytes, got 100000"
    /// );
    /// # Ok::<(), csi_types::CsiError>(())
    /// ```
    pub fn from_published<I, S>(
        node_ids: I,
        condition: Option<VolumeCondition>,
    ) -> Result<Self, CsiError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(VolumeStatus {
            published_node_ids: node_ids
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let n: String = n.into();
                    // Checked in place, so the id is not copied for the error.
                    validate::lazily(|| index("published_node_ids", i), |f| NodeId::check(f, &n))
                        .map_err(|e| e.built_by_driver("VolumeStatus"))?;
                    Ok(NodeId::from_checked(n))
                })
                .collect::<Result<_, CsiError>>()?,
            volume_condition: condition,
        })
    }

    /// A status received from a plugin: it has tolerated rules only.
    fn received(
        published_node_ids: Vec<String>,
        volume_condition: Option<proto::VolumeCondition>,
    ) -> Self {
        VolumeStatus {
            // A tolerated rule (see `crate::check`): entries that are not
            // node ids are ignored, not refused.
            published_node_ids: published_node_ids
                .into_iter()
                .filter_map(|id| NodeId::new(id).ok())
                .collect(),
            volume_condition: volume_condition.map(VolumeCondition::from_checked),
        }
    }

    fn into_parts(self) -> (Vec<String>, Option<proto::VolumeCondition>) {
        (
            self.published_node_ids
                .into_iter()
                .map(String::from)
                .collect(),
            self.volume_condition.map(Into::into),
        )
    }
}

/// One volume of a `ListVolumes` page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListVolumesEntry {
    /// The volume. REQUIRED.
    pub volume: Volume,
    /// Its status, for plugins with `LIST_VOLUMES_PUBLISHED_NODES` or `VOLUME_CONDITION`.
    pub status: Option<VolumeStatus>,
}

/// `ListVolumes` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListVolumesResponse {
    /// The page.
    pub entries: Vec<ListVolumesEntry>,
    /// The token of the next page; `None` on the last page.
    pub next_token: Option<String>,
}

impl FromChecked<proto::list_volumes_response::Entry> for ListVolumesEntry {
    fn from_checked(p: proto::list_volumes_response::Entry) -> Self {
        ListVolumesEntry {
            volume: Volume::from_checked(proven(p.volume)),
            status: p
                .status
                .map(|s| VolumeStatus::received(s.published_node_ids, s.volume_condition)),
        }
    }
}

/// A page token its check accepted; empty means the last page.
fn next_token(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

impl TryFrom<proto::ListVolumesResponse> for ListVolumesResponse {
    type Error = CsiError;
    fn try_from(p: proto::ListVolumesResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(ListVolumesResponse {
            entries: p
                .entries
                .into_iter()
                .map(ListVolumesEntry::from_checked)
                .collect(),
            next_token: next_token(p.next_token),
        })
    }
}

impl IntoWire<proto::ListVolumesResponse> for ListVolumesResponse {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::ListVolumesResponse, CsiError> {
        let r = self;
        Ok(proto::ListVolumesResponse {
            entries: r
                .entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    Ok(proto::list_volumes_response::Entry {
                        volume: Some(e.volume.into_wire(&|| at(&index("entries", i), "volume"))?),
                        status: e.status.map(|s| {
                            let (published_node_ids, volume_condition) = s.into_parts();
                            proto::list_volumes_response::VolumeStatus {
                                published_node_ids,
                                volume_condition,
                            }
                        }),
                    })
                })
                .collect::<Result<_, CsiError>>()?,
            next_token: r.next_token.unwrap_or_default(),
        })
    }
}

/// `ControllerGetVolume` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerGetVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
}

impl TryFrom<proto::ControllerGetVolumeRequest> for ControllerGetVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::ControllerGetVolumeRequest) -> Result<Self, CsiError> {
        Ok(ControllerGetVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
        })
    }
}

impl From<ControllerGetVolumeRequest> for proto::ControllerGetVolumeRequest {
    fn from(r: ControllerGetVolumeRequest) -> Self {
        proto::ControllerGetVolumeRequest {
            volume_id: r.volume_id.into_string(),
        }
    }
}

/// `ControllerGetVolume` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerGetVolumeResponse {
    /// The volume. REQUIRED.
    pub volume: Volume,
    /// Its status. REQUIRED.
    pub status: VolumeStatus,
}

impl ControllerGetVolumeResponse {
    /// A response with every REQUIRED field.
    pub fn new(volume: Volume, status: VolumeStatus) -> Self {
        ControllerGetVolumeResponse { volume, status }
    }
}

impl TryFrom<proto::ControllerGetVolumeResponse> for ControllerGetVolumeResponse {
    type Error = CsiError;
    fn try_from(p: proto::ControllerGetVolumeResponse) -> Result<Self, CsiError> {
        p.must()?;
        let status = proven(p.status);
        Ok(ControllerGetVolumeResponse {
            volume: Volume::from_checked(proven(p.volume)),
            status: VolumeStatus::received(status.published_node_ids, status.volume_condition),
        })
    }
}

impl IntoWire<proto::ControllerGetVolumeResponse> for ControllerGetVolumeResponse {
    fn into_wire(
        self,
        _: &dyn Fn() -> String,
    ) -> Result<proto::ControllerGetVolumeResponse, CsiError> {
        let r = self;
        let (published_node_ids, volume_condition) = r.status.into_parts();
        Ok(proto::ControllerGetVolumeResponse {
            volume: Some(r.volume.into_wire(&root("volume"))?),
            status: Some(proto::controller_get_volume_response::VolumeStatus {
                published_node_ids,
                volume_condition,
            }),
        })
    }
}

/// `ControllerModifyVolume` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerModifyVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// The parameters to change; at least one.
    pub mutable_parameters: Map,
}

impl TryFrom<proto::ControllerModifyVolumeRequest> for ControllerModifyVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::ControllerModifyVolumeRequest) -> Result<Self, CsiError> {
        if p.mutable_parameters.is_empty() {
            return Err(CsiError::invalid(
                "mutable_parameters",
                "this field is REQUIRED: at least one entry",
            ));
        }
        Ok(ControllerModifyVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
            mutable_parameters: validate::map("mutable_parameters", p.mutable_parameters)?,
        })
    }
}

impl From<ControllerModifyVolumeRequest> for proto::ControllerModifyVolumeRequest {
    fn from(r: ControllerModifyVolumeRequest) -> Self {
        proto::ControllerModifyVolumeRequest {
            volume_id: r.volume_id.into_string(),
            secrets: r.secrets.into_inner(),
            mutable_parameters: r.mutable_parameters,
        }
    }
}

/// `ControllerModifyVolume` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerModifyVolumeResponse {}

/// `GetCapacity` request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetCapacityRequest {
    /// Capacity for volumes with these capabilities (empty: any).
    pub volume_capabilities: Vec<VolumeCapability>,
    /// Capacity for volumes with these StorageClass parameters.
    pub parameters: Map,
    /// Capacity within this topology segment.
    pub accessible_topology: Option<Topology>,
}

impl TryFrom<proto::GetCapacityRequest> for GetCapacityRequest {
    type Error = CsiError;
    fn try_from(p: proto::GetCapacityRequest) -> Result<Self, CsiError> {
        Ok(GetCapacityRequest {
            volume_capabilities: list("volume_capabilities", p.volume_capabilities)?,
            parameters: validate::map("parameters", p.parameters)?,
            accessible_topology: optional("accessible_topology", p.accessible_topology)?,
        })
    }
}

impl From<GetCapacityRequest> for proto::GetCapacityRequest {
    fn from(r: GetCapacityRequest) -> Self {
        proto::GetCapacityRequest {
            volume_capabilities: r.volume_capabilities.into_iter().map(Into::into).collect(),
            parameters: r.parameters,
            accessible_topology: r.accessible_topology.map(Into::into),
        }
    }
}

/// `GetCapacity` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetCapacityResponse {
    /// The space available for new volumes. REQUIRED.
    pub available_capacity: u64,
    /// The largest volume that could be created now.
    pub maximum_volume_size: Option<u64>,
    /// The smallest volume the plugin creates.
    pub minimum_volume_size: Option<u64>,
}

impl TryFrom<proto::GetCapacityResponse> for GetCapacityResponse {
    type Error = CsiError;
    fn try_from(p: proto::GetCapacityResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(GetCapacityResponse {
            available_capacity: proven_size(p.available_capacity),
            maximum_volume_size: p.maximum_volume_size.map(proven_size),
            minimum_volume_size: p.minimum_volume_size.map(proven_size),
        })
    }
}

impl IntoWire<proto::GetCapacityResponse> for GetCapacityResponse {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::GetCapacityResponse, CsiError> {
        let size = |name: &'static str, v: Option<u64>| {
            v.map(|v| validate::wire_size(root(name), v)).transpose()
        };
        Ok(proto::GetCapacityResponse {
            available_capacity: validate::wire_size(
                root("available_capacity"),
                self.available_capacity,
            )?,
            maximum_volume_size: size("maximum_volume_size", self.maximum_volume_size)?,
            minimum_volume_size: size("minimum_volume_size", self.minimum_volume_size)?,
        })
    }
}

/// `ControllerGetCapabilities` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerGetCapabilitiesRequest {}

/// `ControllerGetCapabilities` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerGetCapabilitiesResponse {
    /// The advertised capabilities.
    pub capabilities: ControllerCapabilities,
}

impl TryFrom<proto::ControllerGetCapabilitiesResponse> for ControllerGetCapabilitiesResponse {
    type Error = CsiError;
    fn try_from(p: proto::ControllerGetCapabilitiesResponse) -> Result<Self, CsiError> {
        Ok(ControllerGetCapabilitiesResponse {
            capabilities: ControllerCapabilities::from_proto(&p.capabilities),
        })
    }
}

impl From<ControllerGetCapabilitiesResponse> for proto::ControllerGetCapabilitiesResponse {
    fn from(r: ControllerGetCapabilitiesResponse) -> Self {
        proto::ControllerGetCapabilitiesResponse {
            capabilities: r.capabilities.to_proto(),
        }
    }
}

/// `CreateSnapshot` request: cut a snapshot, idempotently by `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSnapshotRequest {
    /// The volume to snapshot.
    pub source_volume_id: VolumeId,
    /// The CO's name for the snapshot; the idempotency key.
    pub name: SnapshotName,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// Opaque VolumeSnapshotClass parameters.
    pub parameters: Map,
}

impl TryFrom<proto::CreateSnapshotRequest> for CreateSnapshotRequest {
    type Error = CsiError;
    fn try_from(p: proto::CreateSnapshotRequest) -> Result<Self, CsiError> {
        Ok(CreateSnapshotRequest {
            source_volume_id: VolumeId::parse("source_volume_id", p.source_volume_id)?,
            name: SnapshotName::parse("name", p.name)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
            parameters: validate::map("parameters", p.parameters)?,
        })
    }
}

impl From<CreateSnapshotRequest> for proto::CreateSnapshotRequest {
    fn from(r: CreateSnapshotRequest) -> Self {
        proto::CreateSnapshotRequest {
            source_volume_id: r.source_volume_id.into_string(),
            name: r.name.into_string(),
            secrets: r.secrets.into_inner(),
            parameters: r.parameters,
        }
    }
}

/// `CreateSnapshot` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSnapshotResponse {
    /// The snapshot. REQUIRED.
    pub snapshot: Snapshot,
}

/// `DeleteSnapshot` request. Deleting a snapshot that does not exist succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteSnapshotRequest {
    /// The snapshot.
    pub snapshot_id: SnapshotId,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::DeleteSnapshotRequest> for DeleteSnapshotRequest {
    type Error = CsiError;
    fn try_from(p: proto::DeleteSnapshotRequest) -> Result<Self, CsiError> {
        Ok(DeleteSnapshotRequest {
            snapshot_id: SnapshotId::parse("snapshot_id", p.snapshot_id)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl From<DeleteSnapshotRequest> for proto::DeleteSnapshotRequest {
    fn from(r: DeleteSnapshotRequest) -> Self {
        proto::DeleteSnapshotRequest {
            snapshot_id: r.snapshot_id.into_string(),
            secrets: r.secrets.into_inner(),
        }
    }
}

/// `DeleteSnapshot` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteSnapshotResponse {}

/// `ListSnapshots` request: one page of snapshots, optionally filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListSnapshotsRequest {
    /// At most this many entries; `None` lets the plugin choose. As for
    /// [`ListVolumesRequest::max_entries`], `Some(0)` is sent as 0 (no maximum) and a value
    /// above `i32::MAX` as `i32::MAX`.
    pub max_entries: Option<u32>,
    /// Continue after a previous page's `next_token`. Received, one longer
    /// than 128 bytes is no token a plugin issued: `ABORTED`, as the error
    /// table of an invalid `starting_token` says.
    pub starting_token: Option<String>,
    /// Only snapshots of this volume.
    pub source_volume_id: Option<VolumeId>,
    /// Only this snapshot.
    pub snapshot_id: Option<SnapshotId>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl ListSnapshotsRequest {
    /// Whether the snapshot `snapshot_id`, taken of `source_volume_id`,
    /// passes this request's filters (each filter that is set must match).
    ///
    /// ```
    /// use csi_types::controller::ListSnapshotsRequest;
    /// use csi_types::ids::VolumeId;
    /// let req = ListSnapshotsRequest { source_volume_id: Some(VolumeId::new("vol-1")?), ..Default::default() };
    /// assert!(req.wants("snap-1", "vol-1"));
    /// assert!(!req.wants("snap-2", "vol-2"));
    /// assert!(ListSnapshotsRequest::default().wants("snap-2", "vol-2"));
    /// # Ok::<(), csi_types::CsiError>(())
    /// ```
    pub fn wants(&self, snapshot_id: &str, source_volume_id: &str) -> bool {
        self.snapshot_id
            .as_ref()
            .is_none_or(|f| f.as_str() == snapshot_id)
            && self
                .source_volume_id
                .as_ref()
                .is_none_or(|f| f.as_str() == source_volume_id)
    }
}

impl TryFrom<proto::ListSnapshotsRequest> for ListSnapshotsRequest {
    type Error = CsiError;
    fn try_from(p: proto::ListSnapshotsRequest) -> Result<Self, CsiError> {
        Ok(ListSnapshotsRequest {
            max_entries: validate::optional_count("max_entries", p.max_entries)?,
            starting_token: validate::starting_token(p.starting_token)?,
            source_volume_id: optional_id("source_volume_id", p.source_volume_id, VolumeId::parse)?,
            snapshot_id: optional_id("snapshot_id", p.snapshot_id, SnapshotId::parse)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl From<ListSnapshotsRequest> for proto::ListSnapshotsRequest {
    fn from(r: ListSnapshotsRequest) -> Self {
        proto::ListSnapshotsRequest {
            max_entries: r.max_entries.map_or(0, validate::count_to_wire),
            starting_token: r.starting_token.unwrap_or_default(),
            source_volume_id: r.source_volume_id.map(String::from).unwrap_or_default(),
            snapshot_id: r.snapshot_id.map(String::from).unwrap_or_default(),
            secrets: r.secrets.into_inner(),
        }
    }
}

/// `ListSnapshots` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListSnapshotsResponse {
    /// The page.
    pub entries: Vec<Snapshot>,
    /// The token of the next page; `None` on the last page.
    pub next_token: Option<String>,
}

impl TryFrom<proto::ListSnapshotsResponse> for ListSnapshotsResponse {
    type Error = CsiError;
    fn try_from(p: proto::ListSnapshotsResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(ListSnapshotsResponse {
            entries: p
                .entries
                .into_iter()
                .map(|e| Snapshot::from_checked(proven(e.snapshot)))
                .collect(),
            next_token: next_token(p.next_token),
        })
    }
}

impl IntoWire<proto::ListSnapshotsResponse> for ListSnapshotsResponse {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::ListSnapshotsResponse, CsiError> {
        let r = self;
        Ok(proto::ListSnapshotsResponse {
            entries: r
                .entries
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    Ok(proto::list_snapshots_response::Entry {
                        snapshot: Some(s.into_wire(&|| at(&index("entries", i), "snapshot"))?),
                    })
                })
                .collect::<Result<_, CsiError>>()?,
            next_token: r.next_token.unwrap_or_default(),
        })
    }
}

/// `GetSnapshot` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetSnapshotRequest {
    /// The snapshot.
    pub snapshot_id: SnapshotId,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::GetSnapshotRequest> for GetSnapshotRequest {
    type Error = CsiError;
    fn try_from(p: proto::GetSnapshotRequest) -> Result<Self, CsiError> {
        Ok(GetSnapshotRequest {
            snapshot_id: SnapshotId::parse("snapshot_id", p.snapshot_id)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl From<GetSnapshotRequest> for proto::GetSnapshotRequest {
    fn from(r: GetSnapshotRequest) -> Self {
        proto::GetSnapshotRequest {
            snapshot_id: r.snapshot_id.into_string(),
            secrets: r.secrets.into_inner(),
        }
    }
}

/// `GetSnapshot` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetSnapshotResponse {
    /// The snapshot. REQUIRED.
    pub snapshot: Snapshot,
}

macro_rules! snapshot_response {
    ($($typed:ident => $wire:ty),*) => {
        $(
            impl $typed {
                /// A response for a snapshot.
                pub fn new(snapshot: Snapshot) -> Self {
                    $typed { snapshot }
                }
            }

            impl TryFrom<$wire> for $typed {
                type Error = CsiError;
                fn try_from(p: $wire) -> Result<Self, CsiError> {
                    p.must()?;
                    Ok($typed { snapshot: Snapshot::from_checked(proven(p.snapshot)) })
                }
            }

            impl IntoWire<$wire> for $typed {
                fn into_wire(self, _: &dyn Fn() -> String) -> Result<$wire, CsiError> {
                    let mut wire = <$wire>::default();
                    wire.snapshot = Some(self.snapshot.into_wire(&root("snapshot"))?);
                    Ok(wire)
                }
            }
        )*
    };
}

snapshot_response!(
    CreateSnapshotResponse => proto::CreateSnapshotResponse,
    GetSnapshotResponse => proto::GetSnapshotResponse
);

/// `ControllerExpandVolume` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerExpandVolumeRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The new capacity. REQUIRED.
    pub capacity_range: CapacityRange,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// How the volume is used, if the CO says.
    pub volume_capability: Option<VolumeCapability>,
}

impl TryFrom<proto::ControllerExpandVolumeRequest> for ControllerExpandVolumeRequest {
    type Error = CsiError;
    fn try_from(p: proto::ControllerExpandVolumeRequest) -> Result<Self, CsiError> {
        Ok(ControllerExpandVolumeRequest {
            volume_id: VolumeId::parse("volume_id", p.volume_id)?,
            capacity_range: required("capacity_range", p.capacity_range)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
            volume_capability: optional("volume_capability", p.volume_capability)?,
        })
    }
}

impl IntoWire<proto::ControllerExpandVolumeRequest> for ControllerExpandVolumeRequest {
    fn into_wire(
        self,
        _: &dyn Fn() -> String,
    ) -> Result<proto::ControllerExpandVolumeRequest, CsiError> {
        let r = self;
        Ok(proto::ControllerExpandVolumeRequest {
            volume_id: r.volume_id.into_string(),
            capacity_range: Some(r.capacity_range.into_wire(&root("capacity_range"))?),
            secrets: r.secrets.into_inner(),
            volume_capability: r.volume_capability.map(Into::into),
        })
    }
}

/// `ControllerExpandVolume` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerExpandVolumeResponse {
    /// The new capacity. REQUIRED.
    pub capacity_bytes: u64,
    /// Whether `NodeExpandVolume` must follow.
    pub node_expansion_required: bool,
}

impl TryFrom<proto::ControllerExpandVolumeResponse> for ControllerExpandVolumeResponse {
    type Error = CsiError;
    fn try_from(p: proto::ControllerExpandVolumeResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: proven_size(p.capacity_bytes),
            node_expansion_required: p.node_expansion_required,
        })
    }
}

impl IntoWire<proto::ControllerExpandVolumeResponse> for ControllerExpandVolumeResponse {
    fn into_wire(
        self,
        _: &dyn Fn() -> String,
    ) -> Result<proto::ControllerExpandVolumeResponse, CsiError> {
        Ok(proto::ControllerExpandVolumeResponse {
            capacity_bytes: validate::wire_size(root("capacity_bytes"), self.capacity_bytes)?,
            node_expansion_required: self.node_expansion_required,
        })
    }
}

crate::types::try_into_proto! {
    CreateVolumeRequest => proto::CreateVolumeRequest,
    CreateVolumeResponse => proto::CreateVolumeResponse,
    ListVolumesResponse => proto::ListVolumesResponse,
    ControllerGetVolumeResponse => proto::ControllerGetVolumeResponse,
    GetCapacityResponse => proto::GetCapacityResponse,
    CreateSnapshotResponse => proto::CreateSnapshotResponse,
    ListSnapshotsResponse => proto::ListSnapshotsResponse,
    GetSnapshotResponse => proto::GetSnapshotResponse,
    ControllerExpandVolumeRequest => proto::ControllerExpandVolumeRequest,
    ControllerExpandVolumeResponse => proto::ControllerExpandVolumeResponse,
}

impl TryFrom<proto::ControllerPublishVolumeResponse> for ControllerPublishVolumeResponse {
    type Error = CsiError;
    fn try_from(p: proto::ControllerPublishVolumeResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(ControllerPublishVolumeResponse {
            publish_context: p.publish_context,
        })
    }
}

impl From<ControllerPublishVolumeResponse> for proto::ControllerPublishVolumeResponse {
    fn from(r: ControllerPublishVolumeResponse) -> Self {
        proto::ControllerPublishVolumeResponse {
            publish_context: r.publish_context,
        }
    }
}

crate::messages::empty_messages! {
    DeleteVolumeResponse => proto::DeleteVolumeResponse,
    ControllerUnpublishVolumeResponse => proto::ControllerUnpublishVolumeResponse,
    ControllerModifyVolumeResponse => proto::ControllerModifyVolumeResponse,
    ControllerGetCapabilitiesRequest => proto::ControllerGetCapabilitiesRequest,
    DeleteSnapshotResponse => proto::DeleteSnapshotResponse,
}
