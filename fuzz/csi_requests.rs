// The CSI request messages that `csi_types_decode` checks, in the order its first input byte
// selects them; shared with `examples/seeds.rs` so that the seeds select the same messages.
// Each name is both a typed request (re-exported by `requests` below from its module of `csi_types`)
// and the wire message in `csi_types::proto`.
macro_rules! for_each_request {
    ($then:ident) => {
        $then! {
            // Identity
            GetPluginInfoRequest,
            GetPluginCapabilitiesRequest,
            ProbeRequest,
            // Controller
            CreateVolumeRequest,
            DeleteVolumeRequest,
            ControllerPublishVolumeRequest,
            ControllerUnpublishVolumeRequest,
            ValidateVolumeCapabilitiesRequest,
            ListVolumesRequest,
            ControllerGetVolumeRequest,
            ControllerModifyVolumeRequest,
            GetCapacityRequest,
            ControllerGetCapabilitiesRequest,
            CreateSnapshotRequest,
            DeleteSnapshotRequest,
            ListSnapshotsRequest,
            GetSnapshotRequest,
            ControllerExpandVolumeRequest,
            // Node
            NodeStageVolumeRequest,
            NodeUnstageVolumeRequest,
            NodePublishVolumeRequest,
            NodeUnpublishVolumeRequest,
            NodeGetVolumeStatsRequest,
            NodeExpandVolumeRequest,
            NodeGetCapabilitiesRequest,
            NodeGetInfoRequest,
            // GroupController
            GroupControllerGetCapabilitiesRequest,
            CreateVolumeGroupSnapshotRequest,
            DeleteVolumeGroupSnapshotRequest,
            GetVolumeGroupSnapshotRequest,
            // SnapshotMetadata
            GetMetadataAllocatedRequest,
            GetMetadataDeltaRequest,
        }
    };
}

/// The typed request messages of `for_each_request!`, from their modules of `csi_types`.
mod requests {
    pub use csi_types::controller::*;
    pub use csi_types::group_controller::*;
    pub use csi_types::identity::*;
    pub use csi_types::node::*;
    pub use csi_types::snapshot_metadata::*;
}
