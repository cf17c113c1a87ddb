//! A tiny driver for the crate's own tests: it implements every trait in the
//! simplest honest way (an in-memory map of volumes), so that each RPC has a
//! real answer to check.

// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use csi_types::prelude::*;
use csi_types::{
    capabilities::{ControllerCapabilities, PluginCapabilities},
    controller::{
        CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
        ListVolumesEntry, ListVolumesRequest, ListVolumesResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
        GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse, VolumeGroupSnapshot,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse},
    ids::{GroupSnapshotId, NodeId, PluginName, SnapshotId, VolumeId},
    node::{
        NodeGetInfoRequest, NodeGetInfoResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
    },
    proto, server,
    snapshot_metadata::{
        BlockMetadata, BlockMetadataResponse, BlockMetadataType, GetMetadataAllocatedRequest,
        GetMetadataDeltaRequest,
    },
    types::{AccessMode, Snapshot, Topology, Volume, VolumeCapability},
};
use futures::StreamExt;

#[derive(Default)]
/// The test driver's state and what it declares.
pub struct TestDriver {
    pub volumes: Mutex<BTreeMap<String, u64>>,
    pub plugin_caps: PluginCapabilities,
    pub controller_features: ControllerCapabilities,
}

#[async_trait]
impl Identity for TestDriver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("test.csi.example.com")?, "1.2.3")
    }
    fn plugin_capabilities(&self) -> PluginCapabilities {
        self.plugin_caps
    }
}

#[async_trait]
impl Controller for TestDriver {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        if !self
            .volumes
            .lock()
            .unwrap()
            .contains_key(req.volume_id.as_str())
        {
            return Err(CsiError::not_found(format!(
                "volume {} does not exist",
                req.volume_id
            )));
        }
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }
    fn feature_capabilities(&self) -> ControllerCapabilities {
        self.controller_features
    }
}

#[async_trait]
impl Provisioner for TestDriver {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        if req.name.as_str() == "panic" {
            panic!("asked to panic");
        }
        if req.name.as_str() == "slow" {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let size = req
            .capacity_range
            .unwrap_or_default()
            .choose(1 << 20, 1 << 20)
            .ok_or_else(|| CsiError::out_of_range("cannot satisfy the capacity range"))?;
        self.volumes
            .lock()
            .unwrap()
            .insert(req.name.to_string(), size);
        let mut volume = Volume::new(VolumeId::new(req.name.as_str())?, size);
        if req.name.as_str() == "huge-context" {
            // A response the spec forbids: volume_context over 4 KiB.
            volume = volume.with_context("blob", "x".repeat(5000));
        }
        Ok(CreateVolumeResponse::new(volume))
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.volumes.lock().unwrap().remove(req.volume_id.as_str());
        Ok(DeleteVolumeResponse {})
    }
}

#[async_trait]
impl VolumeLister for TestDriver {
    async fn list_volumes(&self, _: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let entries = self
            .volumes
            .lock()
            .unwrap()
            .iter()
            .map(|(id, size)| ListVolumesEntry {
                volume: Volume::new(VolumeId::new(id.as_str()).unwrap(), *size),
                status: None,
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token: None,
        })
    }
}

#[async_trait]
impl Node for TestDriver {
    async fn node_publish_volume(
        &self,
        _: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        Ok(NodePublishVolumeResponse {})
    }
    async fn node_unpublish_volume(
        &self,
        _: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        Ok(NodeUnpublishVolumeResponse {})
    }
    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        let info = NodeGetInfoResponse::new(NodeId::new("node-1")?).with_max_volumes(8);
        // Topology only with the capability that allows it.
        if self
            .plugin_caps
            .contains(PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS)
        {
            Ok(info.with_topology(Topology::new([("topology.example.com/zone", "z1")])?))
        } else {
            Ok(info)
        }
    }
}

#[async_trait]
impl GroupController for TestDriver {
    async fn create_volume_group_snapshot(
        &self,
        req: CreateVolumeGroupSnapshotRequest,
    ) -> Result<CreateVolumeGroupSnapshotResponse, CsiError> {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let group = GroupSnapshotId::new(format!("g-{}", req.name))?;
        let snapshots = req
            .source_volume_ids
            .iter()
            .map(|v| {
                Ok(
                    Snapshot::new(SnapshotId::new(format!("s-{v}"))?, v.clone(), 0, now, true)
                        .with_group_snapshot_id(group.clone()),
                )
            })
            .collect::<Result<_, CsiError>>()?;
        Ok(CreateVolumeGroupSnapshotResponse::new(
            VolumeGroupSnapshot {
                group_snapshot_id: group,
                snapshots,
                creation_time: now,
                ready_to_use: true,
            },
        ))
    }
    async fn delete_volume_group_snapshot(
        &self,
        _: DeleteVolumeGroupSnapshotRequest,
    ) -> Result<DeleteVolumeGroupSnapshotResponse, CsiError> {
        Ok(DeleteVolumeGroupSnapshotResponse {})
    }
    async fn get_volume_group_snapshot(
        &self,
        req: GetVolumeGroupSnapshotRequest,
    ) -> Result<GetVolumeGroupSnapshotResponse, CsiError> {
        Err(CsiError::not_found(format!(
            "group snapshot {} does not exist",
            req.group_snapshot_id
        )))
    }
}

#[async_trait]
impl SnapshotMetadata for TestDriver {
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        // Three 4 KiB blocks from the starting offset, one message each.
        let start = req.starting_offset;
        Ok(futures::stream::iter((0..3u64).map(move |i| {
            Ok(BlockMetadataResponse {
                block_metadata_type: BlockMetadataType::FixedLength,
                volume_capacity_bytes: 1 << 20,
                block_metadata: vec![BlockMetadata {
                    byte_offset: start + i * 4096,
                    size_bytes: 4096,
                }],
            })
        }))
        .boxed())
    }
    async fn get_metadata_delta(
        &self,
        _: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        Err(CsiError::failed_precondition(
            "changed block tracking is not enabled",
        ))
    }
}

/// A plugin serving every service of the test driver.
pub fn full_plugin(driver: TestDriver) -> Plugin {
    let d = Arc::new(driver);
    Plugin::builder(d.clone())
        .controller(d.clone())
        .provisioner(d.clone())
        .volume_lister(d.clone())
        .node(d.clone())
        .group_controller(d.clone())
        .snapshot_metadata(d)
        .build()
        .expect("the test plugin is consistent")
}

pub fn mount_cap() -> proto::VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter).into()
}

/// A plugin served on a unix socket in a temporary directory.
pub struct Served {
    /// `unix:///…` of the socket.
    pub endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Stops the server and checks that it ended without error.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Serves `plugin` and waits until its socket exists.
pub async fn serve(plugin: Plugin) -> Served {
    serve_server(server::Server::new(plugin)).await
}

/// Serves a configured [`server::Server`] and waits until its socket exists.
pub async fn serve_server(srv: server::Server) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/csi.sock");
    let endpoint = format!("unix://{}", path.display());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ep = endpoint.clone();
    let task = tokio::spawn(async move {
        srv.serve(&ep, async {
            let _ = stopped.await;
        })
        .await
    });
    // Until the socket accepts (its file exists a moment before it
    // listens); the bound only guards against hanging for ever.
    for _ in 0..6000 {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Served {
        endpoint,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}
