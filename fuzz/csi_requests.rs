// The CSI request messages that `csi_types_decode` checks, in the order its first input byte
// selects them; shared with `examples/seeds.rs` so that the seeds select the same messages.
// Each name is both the typed request in `csi_types` and the wire message in `csi_types::proto`.
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
