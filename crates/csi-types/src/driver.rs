//! The traits a driver implements.
//!
//! Each CSI service is a trait taking typed requests and returning typed
//! responses or a [`CsiError`]. Optional parts of a service are separate
//! traits ([`Provisioner`], [`ControllerPublisher`], [`NodeStager`], …) that
//! are registered one by one with [`crate::PluginBuilder`]; the capabilities a
//! plugin advertises are *derived* from what was registered, so what a driver
//! advertises always agrees with what it implements, and an RPC whose trait
//! was not registered answers `UNIMPLEMENTED`. Capabilities that name no RPC
//! of their own (such as `CLONE_VOLUME` or `PUBLISH_READONLY`) are declared
//! with `feature_capabilities`, and the builder refuses one whose RPCs are
//! missing.
//!
//! The idempotency contracts and error codes in each method's documentation
//! are the spec's ("Controller Service RPC", "Node Service RPC", …). The
//! plugin layer validates requests before a method is called: a method never
//! sees a missing REQUIRED field or an over-long id.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::CsiError;
use crate::capabilities::{ControllerCapabilities, NodeCapabilities, PluginCapabilities};
use crate::controller::*;
use crate::group_controller::*;
use crate::identity::*;
use crate::node::*;
use crate::snapshot_metadata::*;

/// The Identity service: who the plugin is and whether it is ready.
///
/// `GetPluginCapabilities` is answered by [`crate::Plugin`] from the services
/// it was built with plus [`Identity::plugin_capabilities`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Identity: Send + Sync {
    /// `GetPluginInfo`: the plugin's name and version. The name MUST be the
    /// same on every call and for every instance of the plugin.
    async fn get_plugin_info(
        &self,
        req: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError>;

    /// `Probe`: whether the plugin is healthy and ready.
    ///
    /// Errors: `FAILED_PRECONDITION` when the plugin is unhealthy or a
    /// required dependency is missing. The default answers ready.
    async fn probe(&self, _req: ProbeRequest) -> Result<ProbeResponse, CsiError> {
        Ok(ProbeResponse::ready())
    }

    /// Plugin capabilities that are properties of the storage rather than
    /// services: `VOLUME_ACCESSIBILITY_CONSTRAINTS`, `VOLUME_EXPANSION_ONLINE`,
    /// `VOLUME_EXPANSION_OFFLINE`. Service bits are derived and ignored here.
    /// These are the plugin's as a whole ("the grand sum of all
    /// capabilities of all instances"), so an instance serving only the
    /// Controller or only the Node service may advertise expansion its other
    /// half serves. [`crate::PluginBuilder::build`] refuses both expansion
    /// modes at once; either without a `ControllerExpander` or
    /// `NodeExpander` in an instance serving both services (or neither); and
    /// `VOLUME_EXPANSION_OFFLINE` in an instance serving the Controller
    /// service without a `ControllerExpander` (the spec: OFFLINE "MUST
    /// implement ... the EXPAND_VOLUME controller capability").
    fn plugin_capabilities(&self) -> PluginCapabilities {
        PluginCapabilities::empty()
    }
}

/// The Controller service: volume lifecycle on the storage system.
///
/// Only `ValidateVolumeCapabilities` is mandatory; every other RPC belongs to
/// an optional trait registered beside it: a driver that provisions volumes
/// implements [`Provisioner`] and registers it with
/// [`crate::PluginBuilder::provisioner`], and so on.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Controller: Send + Sync {
    /// `ValidateVolumeCapabilities`: whether an existing volume supports the
    /// given capabilities (confirm all of them or none).
    ///
    /// Errors: `NOT_FOUND` when the volume does not exist.
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError>;

    /// Capabilities that name no RPC of their own: `CLONE_VOLUME`,
    /// `PUBLISH_READONLY`, `LIST_VOLUMES_PUBLISHED_NODES`, `VOLUME_CONDITION`
    /// and `SINGLE_NODE_MULTI_WRITER`. RPC bits here are ignored: they are
    /// derived from the registered traits.
    fn feature_capabilities(&self) -> ControllerCapabilities {
        ControllerCapabilities::empty()
    }
}

/// `CreateVolume` and `DeleteVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// `CreateVolume`: provision a volume.
    ///
    /// Idempotent by `name`: a second call with the same name and compatible
    /// arguments returns the same volume. Errors: `ALREADY_EXISTS` when a
    /// volume of that name exists with incompatible arguments; `NOT_FOUND`
    /// when the content source does not exist; `INVALID_ARGUMENT` when the
    /// source is incompatible or unsupported; `OUT_OF_RANGE` for an
    /// unsupported `capacity_range`; `RESOURCE_EXHAUSTED` when the volume
    /// cannot be provisioned in the requested topology.
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError>;

    /// `DeleteVolume`: deprovision a volume.
    ///
    /// Idempotent: deleting a volume that does not exist succeeds. Errors:
    /// `FAILED_PRECONDITION` when the volume is in use.
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError>;
}

/// `ControllerPublishVolume` and `ControllerUnpublishVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ControllerPublisher: Send + Sync {
    /// `ControllerPublishVolume`: make a volume available to a node.
    ///
    /// Idempotent: publishing again to the same node with compatible
    /// arguments succeeds with the same context. Errors: `NOT_FOUND` when the
    /// volume or the node does not exist; `ALREADY_EXISTS` when published to
    /// the node incompatibly; `FAILED_PRECONDITION` when published to another
    /// node and the access mode allows only one; `RESOURCE_EXHAUSTED` when
    /// the node has reached its attach limit.
    async fn controller_publish_volume(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, CsiError>;

    /// `ControllerUnpublishVolume`: undo a publish.
    ///
    /// Idempotent: unpublishing what is not published succeeds, and so
    /// SHOULD unpublishing a volume or from a node that cannot be found
    /// (the spec: it "can be safely regarded as ControllerUnpublished";
    /// cleanup loops of COs depend on it). Errors: `NOT_FOUND` only when
    /// the volume or node does not exist and the plugin cannot assume the
    /// volume unpublished.
    async fn controller_unpublish_volume(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse, CsiError>;
}

/// `ListVolumes`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait VolumeLister: Send + Sync {
    /// `ListVolumes`: one page of volumes.
    ///
    /// Errors: `ABORTED` when `starting_token` is not a token this plugin
    /// issued (or is no longer valid).
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError>;
}

/// `GetCapacity`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CapacityReporter: Send + Sync {
    /// `GetCapacity`: the space available for new volumes with the given
    /// capabilities, parameters and topology.
    async fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, CsiError>;
}

/// `CreateSnapshot` and `DeleteSnapshot`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Snapshotter: Send + Sync {
    /// `CreateSnapshot`: cut a snapshot of a volume.
    ///
    /// Idempotent by `name`. Errors: `ALREADY_EXISTS` when a snapshot of that
    /// name exists for another source volume; `ABORTED` when an operation on
    /// the snapshot is pending; `RESOURCE_EXHAUSTED` when there is no space.
    async fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, CsiError>;

    /// `DeleteSnapshot`: delete a snapshot.
    ///
    /// Idempotent: deleting a snapshot that does not exist succeeds. Errors:
    /// `INVALID_ARGUMENT` when the snapshot belongs to a group;
    /// `FAILED_PRECONDITION` when it is in use; `ABORTED` when an operation
    /// on it is pending.
    async fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, CsiError>;
}

/// `ListSnapshots`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SnapshotLister: Send + Sync {
    /// `ListSnapshots`: one page of snapshots, optionally filtered by source
    /// volume or snapshot id (a filter that matches nothing returns an empty
    /// page, not an error).
    ///
    /// Errors: `ABORTED` when `starting_token` is not valid.
    async fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, CsiError>;
}

/// `GetSnapshot`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SnapshotGetter: Send + Sync {
    /// `GetSnapshot`: one snapshot. Errors: `NOT_FOUND` when it does not exist.
    async fn get_snapshot(&self, req: GetSnapshotRequest) -> Result<GetSnapshotResponse, CsiError>;
}

/// `ControllerExpandVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ControllerExpander: Send + Sync {
    /// `ControllerExpandVolume`: grow a volume on the storage system.
    ///
    /// Idempotent: expanding to a size the volume already has succeeds.
    /// Errors: `INVALID_ARGUMENT` when the volume's capabilities do not allow
    /// expansion; `NOT_FOUND`; `FAILED_PRECONDITION` when the volume is in
    /// use and online expansion is unsupported; `OUT_OF_RANGE` for an
    /// unsupported `capacity_range`.
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError>;
}

/// `ControllerGetVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait VolumeGetter: Send + Sync {
    /// `ControllerGetVolume`: one volume and its status. Errors: `NOT_FOUND`.
    async fn controller_get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, CsiError>;
}

/// `ControllerModifyVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait VolumeModifier: Send + Sync {
    /// `ControllerModifyVolume`: change mutable parameters of a volume.
    ///
    /// Idempotent. Errors: `INVALID_ARGUMENT` when a parameter is not
    /// supported or not mutable; `NOT_FOUND`.
    async fn controller_modify_volume(
        &self,
        req: ControllerModifyVolumeRequest,
    ) -> Result<ControllerModifyVolumeResponse, CsiError>;
}

/// The Node service: making volumes usable on the node the plugin runs on.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Node: Send + Sync {
    /// `NodePublishVolume`: make a volume available at `target_path`.
    ///
    /// Idempotent: publishing again to the same target with the same
    /// arguments succeeds. Errors: `NOT_FOUND`; `ALREADY_EXISTS` when
    /// published at the target incompatibly; `FAILED_PRECONDITION` when the
    /// capability is unsupported, or when the plugin stages volumes and
    /// `staging_target_path` is missing.
    async fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError>;

    /// `NodeUnpublishVolume`: undo a publish and remove `target_path`.
    ///
    /// Idempotent: unpublishing what is not published succeeds. Errors:
    /// `NOT_FOUND` when the volume does not exist.
    async fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError>;

    /// `NodeGetInfo`: the node's id, attach limit and topology.
    async fn node_get_info(&self, req: NodeGetInfoRequest)
    -> Result<NodeGetInfoResponse, CsiError>;

    /// Capabilities that name no RPC: `VOLUME_CONDITION`,
    /// `SINGLE_NODE_MULTI_WRITER`, `VOLUME_MOUNT_GROUP`. RPC bits are derived
    /// from the registered traits.
    fn feature_capabilities(&self) -> NodeCapabilities {
        NodeCapabilities::empty()
    }
}

/// `NodeStageVolume` and `NodeUnstageVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait NodeStager: Send + Sync {
    /// `NodeStageVolume`: make a volume available at `staging_target_path`.
    ///
    /// Idempotent. Errors: `NOT_FOUND`; `ALREADY_EXISTS` when staged at the
    /// path incompatibly; `FAILED_PRECONDITION` when the capability is unsupported.
    async fn node_stage_volume(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, CsiError>;

    /// `NodeUnstageVolume`: undo a stage.
    ///
    /// Idempotent: unstaging what is not staged succeeds. Errors: `NOT_FOUND`.
    async fn node_unstage_volume(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, CsiError>;
}

/// `NodeGetVolumeStats`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait NodeVolumeStats: Send + Sync {
    /// `NodeGetVolumeStats`: usage of a published or staged volume.
    ///
    /// Errors: `NOT_FOUND` when the volume does not exist at `volume_path`.
    /// `volume_path` and `staging_target_path` are object-bound
    /// ([`crate::bound`]): look the volume up first and answer `NOT_FOUND`
    /// if it is unknown, then call `req.volume_path.get()?` (a malformed
    /// path is `INVALID_ARGUMENT`).
    async fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError>;
}

/// `NodeExpandVolume`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait NodeExpander: Send + Sync {
    /// `NodeExpandVolume`: grow the filesystem (or device) on the node.
    ///
    /// Idempotent. Errors: `INVALID_ARGUMENT` when the capability does not
    /// allow expansion; `NOT_FOUND`; `FAILED_PRECONDITION` when the volume is
    /// in use and online expansion is unsupported; `OUT_OF_RANGE`.
    /// `volume_path` and `staging_target_path` are object-bound
    /// ([`crate::bound`]): an unknown volume is `NOT_FOUND` whatever the
    /// paths hold; validate them with `.get()?` after the lookup.
    async fn node_expand_volume(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, CsiError>;
}

/// The GroupController service: crash-consistent snapshots of several volumes.
/// Registering one advertises `GROUP_CONTROLLER_SERVICE` and
/// `CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait GroupController: Send + Sync {
    /// `CreateVolumeGroupSnapshot`. Idempotent by `name`. Errors:
    /// `ALREADY_EXISTS` when a group snapshot of that name exists with other
    /// volumes; `FAILED_PRECONDITION` when the volumes cannot be snapshotted
    /// together; `RESOURCE_EXHAUSTED` when there is no space.
    async fn create_volume_group_snapshot(
        &self,
        req: CreateVolumeGroupSnapshotRequest,
    ) -> Result<CreateVolumeGroupSnapshotResponse, CsiError>;

    /// `DeleteVolumeGroupSnapshot`. Idempotent: deleting one that does not
    /// exist succeeds, whatever `snapshot_ids` holds (it is object-bound,
    /// [`crate::bound`]: call `req.snapshot_ids.get()?` after the lookup).
    /// Errors: `INVALID_ARGUMENT` when `snapshot_ids` is empty, malformed or
    /// does not match the group's members; `FAILED_PRECONDITION` when in use.
    async fn delete_volume_group_snapshot(
        &self,
        req: DeleteVolumeGroupSnapshotRequest,
    ) -> Result<DeleteVolumeGroupSnapshotResponse, CsiError>;

    /// `GetVolumeGroupSnapshot`. Errors: `NOT_FOUND` for an unknown group
    /// snapshot, whatever `snapshot_ids` holds (object-bound,
    /// [`crate::bound`]); then `INVALID_ARGUMENT` when `snapshot_ids` is
    /// empty, malformed or does not match.
    async fn get_volume_group_snapshot(
        &self,
        req: GetVolumeGroupSnapshotRequest,
    ) -> Result<GetVolumeGroupSnapshotResponse, CsiError>;
}

/// A stream of block metadata messages, as the SnapshotMetadata RPCs return.
pub type BlockMetadataStream = BoxStream<'static, Result<BlockMetadataResponse, CsiError>>;

/// The SnapshotMetadata service (alpha): allocated and changed blocks of
/// snapshots, for backup tools. Registering one advertises
/// `SNAPSHOT_METADATA_SERVICE`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SnapshotMetadata: Send + Sync {
    /// `GetMetadataAllocated`: the allocated ranges of a snapshot from
    /// `starting_offset`. Errors: `NOT_FOUND` for an unknown snapshot;
    /// `OUT_OF_RANGE` when `starting_offset` is past the end.
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError>;

    /// `GetMetadataDelta`: the ranges that differ between two snapshots.
    /// Errors: `NOT_FOUND`; `FAILED_PRECONDITION` when changed-block tracking
    /// is off; `OUT_OF_RANGE`.
    async fn get_metadata_delta(
        &self,
        req: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError>;
}

// The traits are used as trait objects; keep them object safe.
const _: () = {
    fn _object_safe(_: &dyn Identity, _: &dyn Controller, _: &dyn Node, _: &dyn GroupController) {}
    fn _object_safe_controller_parts(
        _: &dyn Provisioner,
        _: &dyn ControllerPublisher,
        _: &dyn VolumeLister,
        _: &dyn CapacityReporter,
        _: &dyn Snapshotter,
    ) {
    }
    fn _object_safe_more_controller_parts(
        _: &dyn SnapshotLister,
        _: &dyn SnapshotGetter,
        _: &dyn ControllerExpander,
        _: &dyn VolumeGetter,
        _: &dyn VolumeModifier,
    ) {
    }
    fn _object_safe_node_parts(
        _: &dyn NodeStager,
        _: &dyn NodeVolumeStats,
        _: &dyn NodeExpander,
        _: &dyn SnapshotMetadata,
    ) {
    }
};
