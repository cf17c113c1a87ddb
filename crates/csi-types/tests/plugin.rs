//! The in-process Plugin: validation before the driver, derived
//! capabilities, UNIMPLEMENTED, the operation guard and panic isolation.

mod common;

use std::sync::Arc;

use common::{TestDriver, full_plugin, mount_cap};
use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    capabilities::{ControllerCapabilities, PluginCapabilities},
    controller::{
        ControllerGetCapabilitiesRequest, ControllerGetVolumeRequest, ControllerGetVolumeResponse,
        ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
        ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse, CreateSnapshotRequest,
        CreateSnapshotResponse, DeleteSnapshotRequest, DeleteSnapshotResponse, ListVolumesRequest,
    },
    identity::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, GetPluginInfoResponse},
    ids::PluginName,
    node::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
        NodeGetInfoResponse,
    },
    proto,
};

#[tokio::test]
async fn invalid_requests_never_reach_the_driver() {
    let plugin = full_plugin(TestDriver::default());
    let err = RawCsi::raw_create_volume(
        &plugin,
        proto::CreateVolumeRequest {
            name: "v1".into(),
            volume_capabilities: vec![],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        CsiError::invalid(
            "volume_capabilities",
            "this field is REQUIRED: at least one entry"
        )
    );
    assert!(
        Csi::list_volumes(&plugin, ListVolumesRequest::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
}

#[tokio::test]
async fn capabilities_follow_what_is_registered() {
    let plugin = full_plugin(TestDriver {
        controller_features: ControllerCapabilities::SINGLE_NODE_MULTI_WRITER
            | ControllerCapabilities::GET_CAPACITY,
        plugin_caps: PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
            | PluginCapabilities::CONTROLLER_SERVICE,
        ..Default::default()
    });
    // RPC bits come from the registered traits only: GET_CAPACITY declared as
    // a feature is ignored because no CapacityReporter is registered.
    assert_eq!(
        plugin.controller_capabilities(),
        ControllerCapabilities::CREATE_DELETE_VOLUME
            | ControllerCapabilities::LIST_VOLUMES
            | ControllerCapabilities::SINGLE_NODE_MULTI_WRITER
    );
    assert_eq!(
        plugin.plugin_capabilities(),
        PluginCapabilities::CONTROLLER_SERVICE
            | PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
            | PluginCapabilities::GROUP_CONTROLLER_SERVICE
            | PluginCapabilities::SNAPSHOT_METADATA_SERVICE
    );
    let wire = Csi::controller_get_capabilities(&plugin, ControllerGetCapabilitiesRequest {})
        .await
        .unwrap();
    assert_eq!(wire.capabilities, plugin.controller_capabilities());
    let wire = Csi::get_plugin_capabilities(&plugin, GetPluginCapabilitiesRequest {})
        .await
        .unwrap();
    assert_eq!(wire.capabilities, plugin.plugin_capabilities());
    assert!(
        Csi::node_get_capabilities(&plugin, NodeGetCapabilitiesRequest {})
            .await
            .unwrap()
            .capabilities
            .is_empty()
    );
}

/// Every advertised RPC capability is served, and every RPC that is not
/// advertised answers UNIMPLEMENTED: checked by calling each one.
#[tokio::test]
async fn advertised_capabilities_agree_with_served_rpcs() {
    let plugin = full_plugin(TestDriver::default());
    let caps = plugin.controller_capabilities();
    let probes: Vec<(ControllerCapabilities, Result<(), CsiError>)> = vec![
        (
            ControllerCapabilities::GET_CAPACITY,
            RawCsi::raw_get_capacity(&plugin, Default::default())
                .await
                .map(drop),
        ),
        (
            ControllerCapabilities::LIST_VOLUMES,
            RawCsi::raw_list_volumes(&plugin, Default::default())
                .await
                .map(drop),
        ),
        (
            ControllerCapabilities::LIST_SNAPSHOTS,
            RawCsi::raw_list_snapshots(&plugin, Default::default())
                .await
                .map(drop),
        ),
        (
            ControllerCapabilities::PUBLISH_UNPUBLISH_VOLUME,
            RawCsi::raw_controller_unpublish_volume(
                &plugin,
                proto::ControllerUnpublishVolumeRequest {
                    volume_id: "v".into(),
                    ..Default::default()
                },
            )
            .await
            .map(drop),
        ),
        (
            ControllerCapabilities::CREATE_DELETE_SNAPSHOT,
            RawCsi::raw_delete_snapshot(
                &plugin,
                proto::DeleteSnapshotRequest {
                    snapshot_id: "s".into(),
                    ..Default::default()
                },
            )
            .await
            .map(drop),
        ),
        (
            ControllerCapabilities::CREATE_DELETE_VOLUME,
            RawCsi::raw_delete_volume(
                &plugin,
                proto::DeleteVolumeRequest {
                    volume_id: "v".into(),
                    ..Default::default()
                },
            )
            .await
            .map(drop),
        ),
    ];
    for (cap, result) in probes {
        let unimplemented = matches!(&result, Err(e) if e.code() == Code::Unimplemented);
        assert_eq!(caps.contains(cap), !unimplemented, "{cap:?}: {result:?}");
        if let Err(e) = result
            && unimplemented
        {
            assert!(e.to_string().contains("does not advertise"), "{e}");
        }
    }
}

#[tokio::test]
async fn unimplemented_wins_over_validation() {
    let d = Arc::new(TestDriver::default());
    let plugin = Plugin::builder(d.clone()).build().unwrap();
    // No Controller service at all: even an empty request is UNIMPLEMENTED.
    let err = RawCsi::raw_create_volume(&plugin, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.to_string()
            .contains("does not serve the Controller service"),
        "{err}"
    );
    let err = RawCsi::raw_node_get_info(&plugin, Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not serve the Node service"),
        "{err}"
    );
}

#[test]
fn builder_refuses_features_without_their_rpcs() {
    let d = Arc::new(TestDriver {
        controller_features: ControllerCapabilities::PUBLISH_READONLY,
        ..Default::default()
    });
    let err = Plugin::builder(d.clone())
        .controller(d.clone())
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::CapabilityWithoutPart {
            capability: "PUBLISH_READONLY",
            needs: "a ControllerPublisher"
        }
    );
    assert_eq!(
        err.to_string(),
        "PUBLISH_READONLY is declared but a ControllerPublisher is not registered"
    );

    let plain = Arc::new(TestDriver::default());
    let err = Plugin::builder(plain.clone())
        .provisioner(plain.clone())
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("no Controller"), "{err}");

    let expanding = Arc::new(TestDriver {
        plugin_caps: PluginCapabilities::VOLUME_EXPANSION_ONLINE,
        ..Default::default()
    });
    let err = Plugin::builder(expanding.clone()).build().err().unwrap();
    assert!(err.to_string().contains("VOLUME_EXPANSION"), "{err}");
}

/// Snapshots without provisioning.
struct SnapshotsOnly;

#[async_trait::async_trait]
impl Snapshotter for SnapshotsOnly {
    async fn create_snapshot(
        &self,
        _: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, CsiError> {
        Err(CsiError::resource_exhausted("no space for snapshots"))
    }
    async fn delete_snapshot(
        &self,
        _: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, CsiError> {
        Ok(DeleteSnapshotResponse::default())
    }
}

/// "plugins supporting CREATE_DELETE_SNAPSHOT MUST support creating volume
/// from snapshot": a Snapshotter needs the Provisioner that serves
/// CreateVolume.
#[test]
fn snapshots_need_a_provisioner() {
    let d = Arc::new(TestDriver::default());
    let err = Plugin::builder(d.clone())
        .controller(d.clone())
        .snapshotter(Arc::new(SnapshotsOnly))
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::CapabilityWithoutPart {
            capability: "CREATE_DELETE_SNAPSHOT",
            needs: "a Provisioner"
        }
    );
    let plugin = Plugin::builder(d.clone())
        .controller(d.clone())
        .provisioner(d)
        .snapshotter(Arc::new(SnapshotsOnly))
        .build()
        .unwrap();
    assert!(
        plugin
            .controller_capabilities()
            .contains(ControllerCapabilities::CREATE_DELETE_SNAPSHOT)
    );
}

/// Publishes and reports volumes without listing them.
struct PublishesAndGets;

#[async_trait::async_trait]
impl ControllerPublisher for PublishesAndGets {
    async fn controller_publish_volume(
        &self,
        _: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, CsiError> {
        Ok(ControllerPublishVolumeResponse::default())
    }
    async fn controller_unpublish_volume(
        &self,
        _: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse, CsiError> {
        Ok(ControllerUnpublishVolumeResponse::default())
    }
}

#[async_trait::async_trait]
impl VolumeGetter for PublishesAndGets {
    async fn controller_get_volume(
        &self,
        _: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, CsiError> {
        Err(CsiError::not_found("no volumes here"))
    }
}

/// LIST_VOLUMES_PUBLISHED_NODES: "The SP MUST also support
/// PUBLISH_UNPUBLISH_VOLUME"; the `published_node_ids` it promises are
/// those of ListVolumes and of ControllerGetVolume, so either RPC serves it.
#[test]
fn published_nodes_need_a_publisher_and_a_lister_or_getter() {
    let d = Arc::new(TestDriver {
        controller_features: ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES,
        ..Default::default()
    });
    let err = Plugin::builder(d.clone())
        .controller(d.clone())
        .volume_lister(d.clone())
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::CapabilityWithoutPart {
            capability: "LIST_VOLUMES_PUBLISHED_NODES",
            needs: "a ControllerPublisher"
        }
    );
    let other = Arc::new(PublishesAndGets);
    let err = Plugin::builder(d.clone())
        .controller(d.clone())
        .publisher(other.clone())
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::CapabilityWithoutPart {
            capability: "LIST_VOLUMES_PUBLISHED_NODES",
            needs: "a VolumeLister or VolumeGetter"
        }
    );
    // ControllerGetVolume alone reports the published nodes.
    let plugin = Plugin::builder(d.clone())
        .controller(d)
        .publisher(other.clone())
        .volume_getter(other)
        .build()
        .unwrap();
    assert!(
        plugin
            .controller_capabilities()
            .contains(ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES)
    );
}

/// Expands on the node only.
struct NodeOnlyExpander;

#[async_trait::async_trait]
impl NodeExpander for NodeOnlyExpander {
    async fn node_expand_volume(
        &self,
        _: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, CsiError> {
        Ok(NodeExpandVolumeResponse::default())
    }
}

/// OFFLINE expansion needs the controller's EXPAND_VOLUME ("it MUST
/// implement either the EXPAND_VOLUME controller capability or both the
/// EXPAND_VOLUME controller capability and the EXPAND_VOLUME node
/// capability"); ONLINE is served by either alone.
#[test]
fn offline_expansion_needs_a_controller_expander() {
    let build = |caps| {
        let d = Arc::new(TestDriver {
            plugin_caps: caps,
            ..Default::default()
        });
        Plugin::builder(d.clone())
            .controller(d.clone())
            .node(d)
            .node_expander(Arc::new(NodeOnlyExpander))
            .build()
    };
    let err = build(PluginCapabilities::VOLUME_EXPANSION_OFFLINE)
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::CapabilityWithoutPart {
            capability: "VOLUME_EXPANSION_OFFLINE",
            needs: "a ControllerExpander"
        }
    );
    let plugin = build(PluginCapabilities::VOLUME_EXPANSION_ONLINE).unwrap();
    assert!(
        plugin
            .plugin_capabilities()
            .contains(PluginCapabilities::VOLUME_EXPANSION_ONLINE)
    );
}

/// Plugin capabilities are "the grand sum of all capabilities of all
/// instances": the node-only instance of a plugin that expands on the
/// controller alone (the spec's GlusterFS example, ONLINE) or the node half
/// of an OFFLINE plugin advertises expansion without serving it, and the
/// controller-only instance of a plugin that expands on the node alone
/// (the spec's third example) does too.
#[test]
fn an_instance_serving_one_service_advertises_the_plugins_expansion() {
    for caps in [
        PluginCapabilities::VOLUME_EXPANSION_ONLINE,
        PluginCapabilities::VOLUME_EXPANSION_OFFLINE,
    ] {
        let d = Arc::new(TestDriver {
            plugin_caps: caps,
            ..Default::default()
        });
        let node_half = Plugin::builder(d.clone()).node(d.clone()).build().unwrap();
        assert!(node_half.plugin_capabilities().contains(caps), "{caps:?}");
    }
    let d = Arc::new(TestDriver {
        plugin_caps: PluginCapabilities::VOLUME_EXPANSION_ONLINE,
        ..Default::default()
    });
    let controller_half = Plugin::builder(d.clone())
        .controller(d.clone())
        .build()
        .unwrap();
    assert!(
        controller_half
            .plugin_capabilities()
            .contains(PluginCapabilities::VOLUME_EXPANSION_ONLINE)
    );
    // The controller half of an OFFLINE plugin is where its expansion is.
    let d = Arc::new(TestDriver {
        plugin_caps: PluginCapabilities::VOLUME_EXPANSION_OFFLINE,
        ..Default::default()
    });
    let err = Plugin::builder(d.clone())
        .controller(d)
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::CapabilityWithoutPart {
            capability: "VOLUME_EXPANSION_OFFLINE",
            needs: "a ControllerExpander"
        }
    );
}

#[tokio::test]
async fn a_panicking_driver_fails_one_call_only() {
    let plugin = full_plugin(TestDriver::default());
    let req = |name: &str| proto::CreateVolumeRequest {
        name: name.into(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    };
    let err = RawCsi::raw_create_volume(&plugin, req("panic"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.to_string()
            .contains("panicked in CreateVolume: asked to panic"),
        "{err}"
    );
    // The guard was released and the plugin still works.
    RawCsi::raw_create_volume(&plugin, req("fine"))
        .await
        .unwrap();
    let err = RawCsi::raw_create_volume(&plugin, req("panic"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
}

#[tokio::test]
async fn a_second_operation_on_the_same_name_is_aborted() {
    let plugin = full_plugin(TestDriver::default());
    let req = proto::CreateVolumeRequest {
        name: "slow".into(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    };
    // `join!` polls the first call first: it takes the name's guard before
    // its first await (the driver's 300 ms sleep), so the second call, first
    // polled right after, finds the name in flight. No timer decides the
    // order (a sleep before the second call lost the race when a loaded box
    // stalled the test thread past both timers).
    let (a, b) = tokio::join!(
        RawCsi::raw_create_volume(&plugin, req.clone()),
        RawCsi::raw_create_volume(&plugin, req.clone())
    );
    assert!(a.is_ok(), "{a:?}");
    let err = b.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.to_string().contains("already in progress"), "{err}");
    // Once the first finished, a retry goes through.
    RawCsi::raw_create_volume(&plugin, req).await.unwrap();
}

#[tokio::test]
async fn the_guard_can_be_turned_off() {
    let d = Arc::new(TestDriver::default());
    let plugin = Plugin::builder(d.clone())
        .controller(d.clone())
        .provisioner(d)
        .operation_guard(false)
        .build()
        .unwrap();
    let req = proto::CreateVolumeRequest {
        name: "slow".into(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        RawCsi::raw_create_volume(&plugin, req.clone()),
        RawCsi::raw_create_volume(&plugin, req)
    );
    assert!(a.is_ok() && b.is_ok());
}

#[tokio::test]
async fn typed_calls_refuse_responses_that_break_the_spec() {
    // A RawCsi that answers NodeGetInfo without a node_id.
    struct Broken;
    #[async_trait::async_trait]
    impl Identity for Broken {
        async fn get_plugin_info(
            &self,
            _: GetPluginInfoRequest,
        ) -> Result<GetPluginInfoResponse, CsiError> {
            GetPluginInfoResponse::new(PluginName::new("b")?, "1")
        }
    }
    let plugin = full_plugin(TestDriver::default());
    let wire = RawCsi::raw_node_get_info(&plugin, Default::default())
        .await
        .unwrap();
    let mut broken = wire.clone();
    broken.node_id.clear();
    let err = NodeGetInfoResponse::try_from(broken).unwrap_err();
    assert_eq!(err, CsiError::missing("node_id"));
    let _ = Broken;
}

#[tokio::test]
async fn responses_that_break_the_spec_are_not_sent() {
    let plugin = full_plugin(TestDriver::default());
    let err = RawCsi::raw_create_volume(
        &plugin,
        proto::CreateVolumeRequest {
            name: "huge-context".into(),
            volume_capabilities: vec![mount_cap()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.to_string().contains(
            "the driver's CreateVolume response breaks the spec: invalid `volume.volume_context`"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn streamed_messages_that_break_the_spec_are_not_sent() {
    use csi_types::snapshot_metadata::{
        BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataDeltaRequest,
    };
    use futures::StreamExt;

    // A driver whose streams send one valid message, then one whose second
    // range starts inside its first.
    struct Overlapping;
    #[async_trait::async_trait]
    impl Identity for Overlapping {
        async fn get_plugin_info(
            &self,
            _: GetPluginInfoRequest,
        ) -> Result<GetPluginInfoResponse, CsiError> {
            GetPluginInfoResponse::new(PluginName::new("overlapping")?, "1")
        }
    }
    fn messages() -> BlockMetadataStream {
        let message =
            |ranges: &[(u64, u64)]| Ok(block_metadata(BlockMetadataType::VariableLength, ranges));
        futures::stream::iter([
            message(&[(0, 4096), (4096, 4096)]),
            message(&[(16384, 8192), (20480, 4096)]),
        ])
        .boxed()
    }
    #[async_trait::async_trait]
    impl SnapshotMetadata for Overlapping {
        async fn get_metadata_allocated(
            &self,
            _: GetMetadataAllocatedRequest,
        ) -> Result<BlockMetadataStream, CsiError> {
            Ok(messages())
        }
        async fn get_metadata_delta(
            &self,
            _: GetMetadataDeltaRequest,
        ) -> Result<BlockMetadataStream, CsiError> {
            Ok(messages())
        }
    }
    let driver = Arc::new(Overlapping);
    let plugin = Plugin::builder(driver.clone())
        .snapshot_metadata(driver)
        .build()
        .unwrap();
    let rule = "invalid `block_metadata[1]`: ranges must be in ascending order and must not \
                overlap: starts at 20480 before the previous range ends at 24576";

    let allocated: Vec<_> = RawCsi::raw_get_metadata_allocated(
        &plugin,
        proto::GetMetadataAllocatedRequest {
            snapshot_id: "s".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .collect()
    .await;
    assert_eq!(allocated.len(), 2);
    assert_eq!(allocated[0].as_ref().unwrap().block_metadata.len(), 2);
    let err = allocated[1].as_ref().unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.to_string(),
        format!("internal error: the driver's GetMetadataAllocated stream breaks the spec: {rule}")
    );

    let delta: Vec<_> = RawCsi::raw_get_metadata_delta(
        &plugin,
        proto::GetMetadataDeltaRequest {
            base_snapshot_id: "a".into(),
            target_snapshot_id: "b".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .collect()
    .await;
    assert_eq!(delta.len(), 2);
    assert!(delta[0].is_ok(), "{:?}", delta[0]);
    assert_eq!(
        delta[1].as_ref().unwrap_err().to_string(),
        format!("internal error: the driver's GetMetadataDelta stream breaks the spec: {rule}")
    );
}

/// What a stream owes its request: at most `max_results` ranges per
/// message, and a first range that ends after `starting_offset`. The driver
/// here ignores both and streams an empty message, then the ranges
/// [0, 4096) and [4096, 8192), then [16384, 20480).
#[tokio::test]
async fn streamed_messages_respect_the_requests_offset_and_maximum() {
    use csi_types::snapshot_metadata::{
        BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataDeltaRequest,
    };
    use futures::StreamExt;

    struct Careless;
    #[async_trait::async_trait]
    impl Identity for Careless {
        async fn get_plugin_info(
            &self,
            _: GetPluginInfoRequest,
        ) -> Result<GetPluginInfoResponse, CsiError> {
            GetPluginInfoResponse::new(PluginName::new("careless")?, "1")
        }
    }
    fn messages() -> BlockMetadataStream {
        let message =
            |ranges: &[(u64, u64)]| Ok(block_metadata(BlockMetadataType::FixedLength, ranges));
        futures::stream::iter([
            message(&[]),
            message(&[(0, 4096), (4096, 4096)]),
            message(&[(16384, 4096)]),
        ])
        .boxed()
    }
    #[async_trait::async_trait]
    impl SnapshotMetadata for Careless {
        async fn get_metadata_allocated(
            &self,
            _: GetMetadataAllocatedRequest,
        ) -> Result<BlockMetadataStream, CsiError> {
            Ok(messages())
        }
        async fn get_metadata_delta(
            &self,
            _: GetMetadataDeltaRequest,
        ) -> Result<BlockMetadataStream, CsiError> {
            Ok(messages())
        }
    }
    let driver = Arc::new(Careless);
    let plugin = Plugin::builder(driver.clone())
        .snapshot_metadata(driver)
        .build()
        .unwrap();
    let allocated = |starting_offset, max_results| {
        let plugin = plugin.clone();
        async move {
            RawCsi::raw_get_metadata_allocated(
                &plugin,
                proto::GetMetadataAllocatedRequest {
                    snapshot_id: "s".into(),
                    starting_offset,
                    max_results,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .map(|m| m.map(|m| m.block_metadata.len()).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await
        }
    };
    let broken = |rule: &str| {
        Err(format!(
            "internal error: the driver's GetMetadataAllocated stream breaks the spec: {rule}"
        ))
    };
    // Within both bounds, every message passes.
    assert_eq!(allocated(4095, 2).await, [Ok(0), Ok(2), Ok(1)]);
    assert_eq!(allocated(0, 0).await, [Ok(0), Ok(2), Ok(1)]);
    // Two ranges in a message where the request allows one.
    assert_eq!(
        allocated(0, 1).await,
        [
            Ok(0),
            broken(
                "invalid `block_metadata`: must hold at most the request's max_results (1) \
                 ranges, got 2"
            ),
            Ok(1),
        ]
    );
    // The stream's first range ends at the requested offset: it is not sent.
    assert_eq!(
        allocated(4096, 0).await,
        [
            Ok(0),
            broken(
                "invalid `block_metadata[0]`: the stream's first range must end after the \
                 request's starting_offset (4096), but it ends at 4096"
            ),
            Ok(1),
        ]
    );
    // The same rules hold for GetMetadataDelta.
    let delta: Vec<_> = RawCsi::raw_get_metadata_delta(
        &plugin,
        proto::GetMetadataDeltaRequest {
            base_snapshot_id: "a".into(),
            target_snapshot_id: "b".into(),
            max_results: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .collect()
    .await;
    assert!(delta[0].is_ok() && delta[2].is_ok(), "{delta:?}");
    assert!(
        delta[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("max_results (1)"),
        "{delta:?}"
    );
}

/// "A plugin that returns this field MUST also set the
/// VOLUME_ACCESSIBILITY_CONSTRAINTS plugin capability": topology in
/// NodeGetInfo (or a volume) from a plugin that does not advertise it is
/// the driver's bug, INTERNAL naming the field, and is not sent.
#[tokio::test]
async fn topology_needs_the_accessibility_capability() {
    struct Placed;
    #[async_trait::async_trait]
    impl Identity for Placed {
        async fn get_plugin_info(
            &self,
            _: GetPluginInfoRequest,
        ) -> Result<GetPluginInfoResponse, CsiError> {
            GetPluginInfoResponse::new(PluginName::new("placed")?, "1")
        }
    }
    #[async_trait::async_trait]
    impl Node for Placed {
        async fn node_publish_volume(
            &self,
            _: csi_types::node::NodePublishVolumeRequest,
        ) -> Result<csi_types::node::NodePublishVolumeResponse, CsiError> {
            Ok(Default::default())
        }
        async fn node_unpublish_volume(
            &self,
            _: csi_types::node::NodeUnpublishVolumeRequest,
        ) -> Result<csi_types::node::NodeUnpublishVolumeResponse, CsiError> {
            Ok(Default::default())
        }
        async fn node_get_info(
            &self,
            _: csi_types::node::NodeGetInfoRequest,
        ) -> Result<NodeGetInfoResponse, CsiError> {
            Ok(NodeGetInfoResponse::try_new("node-1")?.with_topology(
                csi_types::types::Topology::new([("topology.example.com/zone", "z1")])?,
            ))
        }
    }
    let d = Arc::new(Placed);
    let plugin = Plugin::builder(d.clone()).node(d).build().unwrap();
    let err = RawCsi::raw_node_get_info(&plugin, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.to_string(),
        "internal error: the driver's NodeGetInfo response breaks the spec: invalid \
         `accessible_topology`: set, but the plugin does not advertise \
         VOLUME_ACCESSIBILITY_CONSTRAINTS (a plugin that returns topology MUST set that \
         capability)"
    );
    // The same driver advertising the capability is answered.
    struct Advertised(Placed);
    #[async_trait::async_trait]
    impl Identity for Advertised {
        async fn get_plugin_info(
            &self,
            r: GetPluginInfoRequest,
        ) -> Result<GetPluginInfoResponse, CsiError> {
            self.0.get_plugin_info(r).await
        }
        fn plugin_capabilities(&self) -> PluginCapabilities {
            PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
        }
    }
    let plugin = Plugin::builder(Arc::new(Advertised(Placed)))
        .node(Arc::new(Placed))
        .build()
        .unwrap();
    let info = RawCsi::raw_node_get_info(&plugin, Default::default())
        .await
        .unwrap();
    assert!(info.accessible_topology.is_some());
}

/// A streamed message of a 1 MiB volume's block metadata of `kind`: the
/// ranges `(byte_offset, size_bytes)` as they are, right or wrong.
fn block_metadata(
    kind: csi_types::snapshot_metadata::BlockMetadataType,
    ranges: &[(u64, u64)],
) -> csi_types::snapshot_metadata::BlockMetadataResponse {
    use csi_types::snapshot_metadata::{BlockMetadata, BlockMetadataResponse};
    BlockMetadataResponse {
        block_metadata_type: kind,
        volume_capacity_bytes: 1 << 20,
        block_metadata: ranges
            .iter()
            .map(|&(byte_offset, size_bytes)| BlockMetadata {
                byte_offset,
                size_bytes,
            })
            .collect(),
    }
}
