//! Fields the spec makes REQUIRED by an advertised capability: a Plugin
//! whose driver leaves one out answers INTERNAL naming the field and the
//! capability, and does not send the response.
//!
//! - `ListVolumesResponse.Entry.status`: "This field MUST be specified if
//!   the LIST_VOLUMES_PUBLISHED_NODES controller capability is supported."
//! - `VolumeStatus.volume_condition` (ListVolumes, ControllerGetVolume) and
//!   `NodeGetVolumeStatsResponse.volume_condition`: "This field MUST be
//!   specified if the VOLUME_CONDITION [controller / node] capability is
//!   supported."

use std::sync::Arc;

use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    capabilities::{ControllerCapabilities, NodeCapabilities},
    controller::{
        ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerPublishVolumeRequest,
        ControllerPublishVolumeResponse, ControllerUnpublishVolumeRequest,
        ControllerUnpublishVolumeResponse, ListVolumesEntry, ListVolumesRequest,
        ListVolumesResponse, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
        VolumeStatus,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse},
    ids::{PluginName, VolumeId},
    node::{
        NodeGetInfoRequest, NodeGetInfoResponse, NodeGetVolumeStatsRequest,
        NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodePublishVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
    },
    proto,
    types::{Volume, VolumeCondition},
};

/// What the driver puts in its answers, and what it advertises.
#[derive(Clone, Copy)]
struct Reporter {
    /// ListVolumes entries carry a status.
    status: bool,
    /// Statuses and stats carry a volume condition.
    condition: bool,
    controller: ControllerCapabilities,
    node: NodeCapabilities,
}

impl Reporter {
    fn volume_status(&self) -> VolumeStatus {
        VolumeStatus {
            published_node_ids: vec![],
            volume_condition: self.condition.then(|| VolumeCondition::healthy("ok")),
        }
    }
}

#[async_trait::async_trait]
impl Identity for Reporter {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("reporter.csi.example.com")?, "1")
    }
}

#[async_trait::async_trait]
impl Controller for Reporter {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }
    fn feature_capabilities(&self) -> ControllerCapabilities {
        self.controller
    }
}

#[async_trait::async_trait]
impl ControllerPublisher for Reporter {
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
impl VolumeLister for Reporter {
    async fn list_volumes(&self, _: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let entry = |id: &str, status: bool| -> Result<ListVolumesEntry, CsiError> {
            Ok(ListVolumesEntry {
                volume: Volume::new(VolumeId::new(id)?, 1 << 20),
                status: status.then(|| self.volume_status()),
            })
        };
        Ok(ListVolumesResponse {
            // The first entry always has a status: the rule holds per entry.
            entries: vec![entry("v0", true)?, entry("v1", self.status)?],
            next_token: None,
        })
    }
}

#[async_trait::async_trait]
impl VolumeGetter for Reporter {
    async fn controller_get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, CsiError> {
        Ok(ControllerGetVolumeResponse::new(
            Volume::new(req.volume_id, 1 << 20),
            self.volume_status(),
        ))
    }
}

#[async_trait::async_trait]
impl Node for Reporter {
    async fn node_publish_volume(
        &self,
        _: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        Ok(Default::default())
    }
    async fn node_unpublish_volume(
        &self,
        _: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        Ok(Default::default())
    }
    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        NodeGetInfoResponse::try_new("node-1")
    }
    fn feature_capabilities(&self) -> NodeCapabilities {
        self.node
    }
}

#[async_trait::async_trait]
impl NodeVolumeStats for Reporter {
    async fn node_get_volume_stats(
        &self,
        _: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError> {
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![],
            volume_condition: self.condition.then(|| VolumeCondition::healthy("ok")),
        })
    }
}

fn plugin(r: Reporter) -> Plugin {
    let d = Arc::new(r);
    Plugin::builder(d.clone())
        .controller(d.clone())
        .publisher(d.clone())
        .volume_lister(d.clone())
        .volume_getter(d.clone())
        .node(d.clone())
        .node_stats(d)
        .build()
        .expect("the reporter's capabilities are consistent")
}

const EVERY: Reporter = Reporter {
    status: true,
    condition: true,
    controller: ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES
        .union(ControllerCapabilities::VOLUME_CONDITION),
    node: NodeCapabilities::VOLUME_CONDITION,
};

async fn list(p: &Plugin) -> Result<proto::ListVolumesResponse, CsiError> {
    RawCsi::raw_list_volumes(p, Default::default()).await
}

async fn get(p: &Plugin) -> Result<proto::ControllerGetVolumeResponse, CsiError> {
    RawCsi::raw_controller_get_volume(
        p,
        proto::ControllerGetVolumeRequest {
            volume_id: "v1".into(),
        },
    )
    .await
}

async fn stats(p: &Plugin) -> Result<proto::NodeGetVolumeStatsResponse, CsiError> {
    RawCsi::raw_node_get_volume_stats(
        p,
        proto::NodeGetVolumeStatsRequest {
            volume_id: "v1".into(),
            volume_path: "/mnt/v1".into(),
            ..Default::default()
        },
    )
    .await
}

fn refused<T: std::fmt::Debug>(r: Result<T, CsiError>, expected: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    assert_eq!(e.to_string(), expected);
}

#[tokio::test]
async fn a_driver_that_fills_what_it_advertises_is_answered() {
    let p = plugin(EVERY);
    assert!(list(&p).await.unwrap().entries[1].status.is_some());
    assert!(
        get(&p)
            .await
            .unwrap()
            .status
            .unwrap()
            .volume_condition
            .is_some()
    );
    assert!(stats(&p).await.unwrap().volume_condition.is_some());
}

#[tokio::test]
async fn list_volumes_entries_need_a_status_with_published_nodes() {
    let p = plugin(Reporter {
        status: false,
        controller: ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES,
        ..EVERY
    });
    refused(
        list(&p).await,
        "internal error: the driver's ListVolumes response breaks the spec: invalid \
         `entries[1].status`: this field is REQUIRED: it MUST be specified when the plugin \
         advertises LIST_VOLUMES_PUBLISHED_NODES",
    );
    // A status whose published_node_ids is empty says "published nowhere":
    // answered (and no condition is needed without VOLUME_CONDITION).
    let p = plugin(Reporter {
        condition: false,
        controller: ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES,
        ..EVERY
    });
    let r = list(&p).await.unwrap();
    let status = r.entries[1].status.as_ref().unwrap();
    assert!(status.published_node_ids.is_empty() && status.volume_condition.is_none());
}

#[tokio::test]
async fn controller_volume_condition_is_required_with_the_capability() {
    let p = plugin(Reporter {
        condition: false,
        ..EVERY
    });
    refused(
        list(&p).await,
        "internal error: the driver's ListVolumes response breaks the spec: invalid \
         `entries[0].status.volume_condition`: this field is REQUIRED: it MUST be specified \
         when the plugin advertises the controller's VOLUME_CONDITION",
    );
    refused(
        get(&p).await,
        "internal error: the driver's ControllerGetVolume response breaks the spec: invalid \
         `status.volume_condition`: this field is REQUIRED: it MUST be specified when the \
         plugin advertises the controller's VOLUME_CONDITION",
    );
    // No status at all: the condition it would hold is missing.
    let p = plugin(Reporter {
        status: false,
        controller: ControllerCapabilities::VOLUME_CONDITION,
        ..EVERY
    });
    refused(
        list(&p).await,
        "internal error: the driver's ListVolumes response breaks the spec: invalid \
         `entries[1].status.volume_condition`: this field is REQUIRED: it MUST be specified \
         when the plugin advertises the controller's VOLUME_CONDITION",
    );
}

#[tokio::test]
async fn node_volume_condition_is_required_with_the_capability() {
    let p = plugin(Reporter {
        condition: false,
        ..EVERY
    });
    refused(
        stats(&p).await,
        "internal error: the driver's NodeGetVolumeStats response breaks the spec: invalid \
         `volume_condition`: this field is REQUIRED: it MUST be specified when the plugin \
         advertises the node's VOLUME_CONDITION",
    );
}

#[tokio::test]
async fn without_the_capabilities_the_fields_stay_optional() {
    let p = plugin(Reporter {
        status: false,
        condition: false,
        controller: ControllerCapabilities::empty(),
        node: NodeCapabilities::empty(),
    });
    assert!(list(&p).await.unwrap().entries[1].status.is_none());
    assert!(
        get(&p)
            .await
            .unwrap()
            .status
            .unwrap()
            .volume_condition
            .is_none()
    );
    assert!(stats(&p).await.unwrap().volume_condition.is_none());
}
