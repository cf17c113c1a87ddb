//! [`RawCsi`]: every CSI RPC at the wire level, and [`Csi`]: the same RPCs
//! with typed requests and validated typed responses.
//!
//! Both an in-process [`crate::Plugin`] and a remote `Client` (feature
//! `client`) implement [`RawCsi`], so tools and conformance tests written
//! against it run the same way in `cargo test` and over a socket. [`Csi`] is
//! implemented for every [`RawCsi`]; it refuses a response that breaks a
//! MUST rule of the spec (a missing REQUIRED field, a negative size) with
//! `INTERNAL`, naming the field, so a non-conformant plugin is caught at the
//! first call, and accepts, with a `tracing` warning, a response that only
//! bends a rule the spec tells the CO to tolerate (an unknown entry in
//! `published_node_ids`, an empty condition message): see [`crate::check`].

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

use crate::CsiError;
use crate::controller::*;
use crate::group_controller::*;
use crate::identity::*;
use crate::node::*;
use crate::proto;
use crate::snapshot_metadata::*;

/// A stream of wire-level block metadata messages.
pub type RawStream<T> = BoxStream<'static, Result<T, CsiError>>;

/// Calls `$m!` with every unary RPC, grouped by service:
/// `[tonic_server_module::ServerTrait, service] { (typed method, raw method, wire name, request, response, [serve], [key]), … }`.
/// The one list of RPCs from which the call APIs, the server, the client and
/// [`crate::Plugin`]'s dispatch are generated.
///
/// - `service` names the driver service (and the `Plugin` field holding it)
///   that must be registered for any of its RPCs to be served.
/// - `[serve]` says which driver trait serves the RPC: `[Trait]` for the
///   service's mandatory trait; `[Trait: field if Capabilities::BIT]` for an
///   optional part, registered in `field` and advertised as that typed
///   capability; `[capabilities getter]` for a capabilities RPC answered
///   by the plugin itself from what was registered.
/// - `[key]` is the operation-guard key: `[field "label"]` guards the
///   object named by the request's `field`; `[]` takes no guard.
macro_rules! for_each_unary_rpc {
    ($m:ident) => {
        $m! {
            [identity_server::Identity, identity] {
                (get_plugin_info, raw_get_plugin_info, "GetPluginInfo", GetPluginInfoRequest, GetPluginInfoResponse,
                    [Identity], []),
                (get_plugin_capabilities, raw_get_plugin_capabilities, "GetPluginCapabilities", GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse,
                    [capabilities plugin_capabilities], []),
                (probe, raw_probe, "Probe", ProbeRequest, ProbeResponse,
                    [Identity], []),
            }
            [controller_server::Controller, controller] {
                (create_volume, raw_create_volume, "CreateVolume", CreateVolumeRequest, CreateVolumeResponse,
                    [Provisioner: provisioner if ControllerCapabilities::CREATE_DELETE_VOLUME], [name "volume name"]),
                (delete_volume, raw_delete_volume, "DeleteVolume", DeleteVolumeRequest, DeleteVolumeResponse,
                    [Provisioner: provisioner if ControllerCapabilities::CREATE_DELETE_VOLUME], [volume_id "volume"]),
                (controller_publish_volume, raw_controller_publish_volume, "ControllerPublishVolume", ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
                    [ControllerPublisher: publisher if ControllerCapabilities::PUBLISH_UNPUBLISH_VOLUME], [volume_id "volume"]),
                (controller_unpublish_volume, raw_controller_unpublish_volume, "ControllerUnpublishVolume", ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
                    [ControllerPublisher: publisher if ControllerCapabilities::PUBLISH_UNPUBLISH_VOLUME], [volume_id "volume"]),
                (validate_volume_capabilities, raw_validate_volume_capabilities, "ValidateVolumeCapabilities", ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
                    [Controller], []),
                (list_volumes, raw_list_volumes, "ListVolumes", ListVolumesRequest, ListVolumesResponse,
                    [VolumeLister: volume_lister if ControllerCapabilities::LIST_VOLUMES], []),
                (get_capacity, raw_get_capacity, "GetCapacity", GetCapacityRequest, GetCapacityResponse,
                    [CapacityReporter: capacity_reporter if ControllerCapabilities::GET_CAPACITY], []),
                (controller_get_capabilities, raw_controller_get_capabilities, "ControllerGetCapabilities", ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
                    [capabilities controller_capabilities], []),
                (create_snapshot, raw_create_snapshot, "CreateSnapshot", CreateSnapshotRequest, CreateSnapshotResponse,
                    [Snapshotter: snapshotter if ControllerCapabilities::CREATE_DELETE_SNAPSHOT], [name "snapshot name"]),
                (delete_snapshot, raw_delete_snapshot, "DeleteSnapshot", DeleteSnapshotRequest, DeleteSnapshotResponse,
                    [Snapshotter: snapshotter if ControllerCapabilities::CREATE_DELETE_SNAPSHOT], [snapshot_id "snapshot"]),
                (list_snapshots, raw_list_snapshots, "ListSnapshots", ListSnapshotsRequest, ListSnapshotsResponse,
                    [SnapshotLister: snapshot_lister if ControllerCapabilities::LIST_SNAPSHOTS], []),
                (get_snapshot, raw_get_snapshot, "GetSnapshot", GetSnapshotRequest, GetSnapshotResponse,
                    [SnapshotGetter: snapshot_getter if ControllerCapabilities::GET_SNAPSHOT], []),
                (controller_expand_volume, raw_controller_expand_volume, "ControllerExpandVolume", ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
                    [ControllerExpander: controller_expander if ControllerCapabilities::EXPAND_VOLUME], [volume_id "volume"]),
                (controller_get_volume, raw_controller_get_volume, "ControllerGetVolume", ControllerGetVolumeRequest, ControllerGetVolumeResponse,
                    [VolumeGetter: volume_getter if ControllerCapabilities::GET_VOLUME], []),
                (controller_modify_volume, raw_controller_modify_volume, "ControllerModifyVolume", ControllerModifyVolumeRequest, ControllerModifyVolumeResponse,
                    [VolumeModifier: modifier if ControllerCapabilities::MODIFY_VOLUME], [volume_id "volume"]),
            }
            [group_controller_server::GroupController, group_controller] {
                (group_controller_get_capabilities, raw_group_controller_get_capabilities, "GroupControllerGetCapabilities", GroupControllerGetCapabilitiesRequest, GroupControllerGetCapabilitiesResponse,
                    [capabilities group_controller_capabilities], []),
                (create_volume_group_snapshot, raw_create_volume_group_snapshot, "CreateVolumeGroupSnapshot", CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
                    [GroupController], [name "group snapshot name"]),
                (delete_volume_group_snapshot, raw_delete_volume_group_snapshot, "DeleteVolumeGroupSnapshot", DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
                    [GroupController], [group_snapshot_id "group snapshot"]),
                (get_volume_group_snapshot, raw_get_volume_group_snapshot, "GetVolumeGroupSnapshot", GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse,
                    [GroupController], []),
            }
            [node_server::Node, node] {
                (node_stage_volume, raw_node_stage_volume, "NodeStageVolume", NodeStageVolumeRequest, NodeStageVolumeResponse,
                    [NodeStager: stager if NodeCapabilities::STAGE_UNSTAGE_VOLUME], [volume_id "volume"]),
                (node_unstage_volume, raw_node_unstage_volume, "NodeUnstageVolume", NodeUnstageVolumeRequest, NodeUnstageVolumeResponse,
                    [NodeStager: stager if NodeCapabilities::STAGE_UNSTAGE_VOLUME], [volume_id "volume"]),
                (node_publish_volume, raw_node_publish_volume, "NodePublishVolume", NodePublishVolumeRequest, NodePublishVolumeResponse,
                    [Node], [volume_id "volume"]),
                (node_unpublish_volume, raw_node_unpublish_volume, "NodeUnpublishVolume", NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
                    [Node], [volume_id "volume"]),
                (node_get_volume_stats, raw_node_get_volume_stats, "NodeGetVolumeStats", NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse,
                    [NodeVolumeStats: node_stats if NodeCapabilities::GET_VOLUME_STATS], []),
                (node_expand_volume, raw_node_expand_volume, "NodeExpandVolume", NodeExpandVolumeRequest, NodeExpandVolumeResponse,
                    [NodeExpander: node_expander if NodeCapabilities::EXPAND_VOLUME], [volume_id "volume"]),
                (node_get_capabilities, raw_node_get_capabilities, "NodeGetCapabilities", NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse,
                    [capabilities node_capabilities], []),
                (node_get_info, raw_node_get_info, "NodeGetInfo", NodeGetInfoRequest, NodeGetInfoResponse,
                    [Node], []),
            }
        }
    };
}

macro_rules! define_apis {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        /// Every CSI RPC at the wire level: raw prost requests in, raw prost
        /// responses or a [`CsiError`] out.
        ///
        /// Implemented by [`crate::Plugin`] (in process) and by the gRPC
        /// `Client` (feature `client`).
        #[async_trait]
        pub trait RawCsi: Send + Sync {
            $($(
                #[doc = concat!("`", $rpc, "`.")]
                async fn $raw(&self, req: proto::$req) -> Result<proto::$resp, CsiError>;
            )*)*

            /// `GetMetadataAllocated` (server streaming).
            async fn raw_get_metadata_allocated(
                &self,
                req: proto::GetMetadataAllocatedRequest,
            ) -> Result<RawStream<proto::GetMetadataAllocatedResponse>, CsiError>;

            /// `GetMetadataDelta` (server streaming).
            async fn raw_get_metadata_delta(
                &self,
                req: proto::GetMetadataDeltaRequest,
            ) -> Result<RawStream<proto::GetMetadataDeltaResponse>, CsiError>;
        }

        /// Every CSI RPC with typed requests and validated typed responses,
        /// for any [`RawCsi`].
        ///
        /// A response that breaks a MUST rule of the spec is refused with
        /// `INTERNAL`, naming the RPC and the field; one that bends a
        /// tolerated rule is accepted and logged ([`crate::check`]). A
        /// request with a size the wire's `int64` cannot carry (above
        /// `i64::MAX`) is refused before it is sent, with
        /// `INVALID_ARGUMENT` naming the field.
        #[async_trait]
        pub trait Csi: RawCsi {
            $($(
                #[doc = concat!("`", $rpc, "`, typed.")]
                async fn $method(&self, req: $req) -> Result<$resp, CsiError> {
                    // A size the wire cannot carry is refused here, naming
                    // the field, rather than sent as another size.
                    let resp = RawCsi::$raw(self, proto::$req::try_from(req)?).await?;
                    for odd in crate::check::ResponseRules::tolerated(&resp) {
                        tracing::warn!(rpc = $rpc, "the plugin's response bends a rule the spec tolerates: {odd}");
                    }
                    $resp::try_from(resp).map_err(|e| invalid_response($rpc, e))
                }
            )*)*

            /// `GetMetadataAllocated`, typed.
            async fn get_metadata_allocated(
                &self,
                req: GetMetadataAllocatedRequest,
            ) -> Result<BoxStream<'static, Result<BlockMetadataResponse, CsiError>>, CsiError> {
                let stream = RawCsi::raw_get_metadata_allocated(self, req.try_into()?).await?;
                Ok(stream
                    .map(|r| r.and_then(|m| BlockMetadataResponse::try_from(m).map_err(|e| invalid_response("GetMetadataAllocated", e))))
                    .boxed())
            }

            /// `GetMetadataDelta`, typed.
            async fn get_metadata_delta(
                &self,
                req: GetMetadataDeltaRequest,
            ) -> Result<BoxStream<'static, Result<BlockMetadataResponse, CsiError>>, CsiError> {
                let stream = RawCsi::raw_get_metadata_delta(self, req.try_into()?).await?;
                Ok(stream
                    .map(|r| r.and_then(|m| BlockMetadataResponse::try_from(m).map_err(|e| invalid_response("GetMetadataDelta", e))))
                    .boxed())
            }
        }
    };
}

for_each_unary_rpc!(define_apis);
pub(crate) use for_each_unary_rpc;

impl<T: RawCsi + ?Sized> Csi for T {}

fn invalid_response(rpc: &str, e: CsiError) -> CsiError {
    CsiError::internal(format!("the plugin's {rpc} response breaks the spec: {e}"))
}

macro_rules! forward_raw {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        /// An `Arc` of a [`RawCsi`] is one too, so a plugin can be shared
        /// between a server and in-process callers.
        #[async_trait]
        impl<T: RawCsi + ?Sized> RawCsi for std::sync::Arc<T> {
            $($(
                async fn $raw(&self, req: proto::$req) -> Result<proto::$resp, CsiError> {
                    RawCsi::$raw(&**self, req).await
                }
            )*)*

            async fn raw_get_metadata_allocated(
                &self,
                req: proto::GetMetadataAllocatedRequest,
            ) -> Result<RawStream<proto::GetMetadataAllocatedResponse>, CsiError> {
                RawCsi::raw_get_metadata_allocated(&**self, req).await
            }

            async fn raw_get_metadata_delta(
                &self,
                req: proto::GetMetadataDeltaRequest,
            ) -> Result<RawStream<proto::GetMetadataDeltaResponse>, CsiError> {
                RawCsi::raw_get_metadata_delta(&**self, req).await
            }
        }
    };
}

for_each_unary_rpc!(forward_raw);
