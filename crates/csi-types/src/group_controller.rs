//! Typed requests and responses of the GroupController service.

use std::time::SystemTime;

use crate::CsiError;
use crate::bound::ObjectBound;
use crate::capabilities::GroupControllerCapabilities;
use crate::check::must::MustResponse;
use crate::ids::{GroupSnapshotId, GroupSnapshotName, SnapshotId, VolumeId};
use crate::proto;
use crate::redact::Secrets;
use crate::types::{
    FromChecked, IntoWire, Map, Snapshot, id_list, list_into_wire, proven, proven_time, root,
};
use crate::validate;

/// `GroupControllerGetCapabilities` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupControllerGetCapabilitiesRequest {}

/// `GroupControllerGetCapabilities` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupControllerGetCapabilitiesResponse {
    /// The advertised capabilities.
    pub capabilities: GroupControllerCapabilities,
}

impl TryFrom<proto::GroupControllerGetCapabilitiesResponse>
    for GroupControllerGetCapabilitiesResponse
{
    type Error = CsiError;
    fn try_from(p: proto::GroupControllerGetCapabilitiesResponse) -> Result<Self, CsiError> {
        Ok(GroupControllerGetCapabilitiesResponse {
            capabilities: GroupControllerCapabilities::from_proto(&p.capabilities),
        })
    }
}

impl From<GroupControllerGetCapabilitiesResponse>
    for proto::GroupControllerGetCapabilitiesResponse
{
    fn from(r: GroupControllerGetCapabilitiesResponse) -> Self {
        proto::GroupControllerGetCapabilitiesResponse {
            capabilities: r.capabilities.to_proto(),
        }
    }
}

/// `CreateVolumeGroupSnapshot` request: snapshot several volumes at one instant,
/// idempotently by `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateVolumeGroupSnapshotRequest {
    /// The CO's name for the group snapshot; the idempotency key.
    pub name: GroupSnapshotName,
    /// The volumes; at least one, each once. The spec does not say whether a volume may be
    /// listed twice, but a group snapshot cuts one snapshot per volume at one instant, so a
    /// repeated volume can only be a CO's mistake: it is INVALID_ARGUMENT naming the repeat
    /// (`source_volume_ids[2]`) and the entry it repeats, before the driver sees the request.
    pub source_volume_ids: Vec<VolumeId>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
    /// Opaque VolumeGroupSnapshotClass parameters.
    pub parameters: Map,
}

impl TryFrom<proto::CreateVolumeGroupSnapshotRequest> for CreateVolumeGroupSnapshotRequest {
    type Error = CsiError;
    fn try_from(p: proto::CreateVolumeGroupSnapshotRequest) -> Result<Self, CsiError> {
        Ok(CreateVolumeGroupSnapshotRequest {
            name: GroupSnapshotName::parse("name", p.name)?,
            source_volume_ids: {
                if let Some((first, again)) =
                    validate::first_repeat(p.source_volume_ids.iter().map(String::as_str))
                {
                    return Err(CsiError::invalid(
                        validate::index("source_volume_ids", again),
                        format!(
                            "repeats source_volume_ids[{first}]: a group snapshot takes each volume once"
                        ),
                    ));
                }
                id_list(
                    "source_volume_ids",
                    p.source_volume_ids,
                    true,
                    VolumeId::parse,
                )?
            },
            secrets: Secrets::parse("secrets", p.secrets)?,
            parameters: validate::map("parameters", p.parameters)?,
        })
    }
}

impl From<CreateVolumeGroupSnapshotRequest> for proto::CreateVolumeGroupSnapshotRequest {
    fn from(r: CreateVolumeGroupSnapshotRequest) -> Self {
        proto::CreateVolumeGroupSnapshotRequest {
            name: r.name.into_string(),
            source_volume_ids: r.source_volume_ids.into_iter().map(String::from).collect(),
            secrets: r.secrets.into_inner(),
            parameters: r.parameters,
        }
    }
}

/// A snapshot of a group of volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeGroupSnapshot {
    /// Its id. REQUIRED.
    pub group_snapshot_id: GroupSnapshotId,
    /// One snapshot per source volume; at least one. Each carries `group_snapshot_id`, and
    /// each has its own `snapshot_id` (the spec: a snapshot id identifies one snapshot): a
    /// group that lists an id twice is a driver bug, INTERNAL naming the repeat.
    pub snapshots: Vec<Snapshot>,
    /// When it was cut. REQUIRED.
    pub creation_time: SystemTime,
    /// Whether every member is ready to use.
    pub ready_to_use: bool,
}

impl FromChecked<proto::VolumeGroupSnapshot> for VolumeGroupSnapshot {
    fn from_checked(p: proto::VolumeGroupSnapshot) -> Self {
        VolumeGroupSnapshot {
            group_snapshot_id: GroupSnapshotId::from_checked(p.group_snapshot_id),
            snapshots: p
                .snapshots
                .into_iter()
                .map(Snapshot::from_checked)
                .collect(),
            creation_time: proven_time(p.creation_time),
            ready_to_use: p.ready_to_use,
        }
    }
}

impl IntoWire<proto::VolumeGroupSnapshot> for VolumeGroupSnapshot {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<proto::VolumeGroupSnapshot, CsiError> {
        let g = self;
        if let Some((first, again)) =
            validate::first_repeat(g.snapshots.iter().map(|s| s.snapshot_id.as_str()))
        {
            let snapshots = validate::at(&field(), "snapshots");
            return Err(CsiError::invalid(
                validate::at(&validate::index(&snapshots, again), "snapshot_id"),
                format!(
                    "repeats {snapshots}[{first}]'s: each member of a group is its own snapshot"
                ),
            ));
        }
        Ok(proto::VolumeGroupSnapshot {
            group_snapshot_id: g.group_snapshot_id.into_string(),
            snapshots: list_into_wire(&|| validate::at(&field(), "snapshots"), g.snapshots)?,
            creation_time: Some(crate::types::to_timestamp(g.creation_time)),
            ready_to_use: g.ready_to_use,
        })
    }
}

crate::types::try_into_proto! {
    VolumeGroupSnapshot => proto::VolumeGroupSnapshot,
    CreateVolumeGroupSnapshotResponse => proto::CreateVolumeGroupSnapshotResponse,
    GetVolumeGroupSnapshotResponse => proto::GetVolumeGroupSnapshotResponse,
}

/// `CreateVolumeGroupSnapshot` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateVolumeGroupSnapshotResponse {
    /// The group snapshot. REQUIRED.
    pub group_snapshot: VolumeGroupSnapshot,
}

/// `DeleteVolumeGroupSnapshot` request. Deleting one that does not exist succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteVolumeGroupSnapshotRequest {
    /// The group snapshot.
    pub group_snapshot_id: GroupSnapshotId,
    /// Its member snapshots, as the CO knows them; at least one.
    /// Object-bound: validated by [`ObjectBound::get`] after the group
    /// snapshot was found (see [`crate::bound`]).
    pub snapshot_ids: ObjectBound<Vec<SnapshotId>>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

/// `DeleteVolumeGroupSnapshot` response (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteVolumeGroupSnapshotResponse {}

/// `GetVolumeGroupSnapshot` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetVolumeGroupSnapshotRequest {
    /// The group snapshot.
    pub group_snapshot_id: GroupSnapshotId,
    /// Its member snapshots, as the CO knows them; at least one.
    /// Object-bound: validated by [`ObjectBound::get`] after the group
    /// snapshot was found (see [`crate::bound`]).
    pub snapshot_ids: ObjectBound<Vec<SnapshotId>>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

/// `GetVolumeGroupSnapshot` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetVolumeGroupSnapshotResponse {
    /// The group snapshot. REQUIRED.
    pub group_snapshot: VolumeGroupSnapshot,
}

macro_rules! group_id_request {
    ($($typed:ident => $wire:ty),*) => {
        $(
            impl TryFrom<$wire> for $typed {
                type Error = CsiError;
                fn try_from(p: $wire) -> Result<Self, CsiError> {
                    Ok($typed {
                        group_snapshot_id: GroupSnapshotId::parse("group_snapshot_id", p.group_snapshot_id)?,
                        snapshot_ids: ObjectBound::from_raw(p.snapshot_ids),
                        secrets: Secrets::parse("secrets", p.secrets)?,
                    })
                }
            }

            impl From<$typed> for $wire {
                fn from(r: $typed) -> Self {
                    Self {
                        group_snapshot_id: r.group_snapshot_id.into_string(),
                        snapshot_ids: r.snapshot_ids.into_raw(),
                        secrets: r.secrets.into_inner(),
                    }
                }
            }
        )*
    };
}

group_id_request!(
    DeleteVolumeGroupSnapshotRequest => proto::DeleteVolumeGroupSnapshotRequest,
    GetVolumeGroupSnapshotRequest => proto::GetVolumeGroupSnapshotRequest
);

macro_rules! group_snapshot_response {
    ($($typed:ident => $wire:ty),*) => {
        $(
            impl $typed {
                /// A response for a group snapshot.
                pub fn new(group_snapshot: VolumeGroupSnapshot) -> Self {
                    $typed { group_snapshot }
                }
            }

            impl TryFrom<$wire> for $typed {
                type Error = CsiError;
                fn try_from(p: $wire) -> Result<Self, CsiError> {
                    p.must()?;
                    Ok($typed {
                        group_snapshot: VolumeGroupSnapshot::from_checked(proven(p.group_snapshot)),
                    })
                }
            }

            impl IntoWire<$wire> for $typed {
                fn into_wire(self, _: &dyn Fn() -> String) -> Result<$wire, CsiError> {
                    let mut wire = <$wire>::default();
                    wire.group_snapshot = Some(self.group_snapshot.into_wire(&root("group_snapshot"))?);
                    Ok(wire)
                }
            }
        )*
    };
}

group_snapshot_response!(
    CreateVolumeGroupSnapshotResponse => proto::CreateVolumeGroupSnapshotResponse,
    GetVolumeGroupSnapshotResponse => proto::GetVolumeGroupSnapshotResponse
);

crate::messages::empty_messages! {
    GroupControllerGetCapabilitiesRequest => proto::GroupControllerGetCapabilitiesRequest,
    DeleteVolumeGroupSnapshotResponse => proto::DeleteVolumeGroupSnapshotResponse,
}
