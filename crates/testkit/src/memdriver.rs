//! An in-memory reference CSI driver that implements every driver trait of
//! `csi-types`, for testing the harness itself and as a worked example of
//! the spec's rules.
//!
//! Volumes, snapshots and group snapshots live in memory; capacity is a
//! fixed pool. The node side cannot mount anything, so it makes what a mount
//! would make: `NodeStageVolume` creates the staging directory,
//! `NodePublishVolume` creates the target (a directory for a mount volume,
//! an empty file for a block volume; a read-only publish takes every write
//! permission off the directory), and the unpublish/unstage calls remove
//! them again. It reports one topology (the node's, which is also every
//! volume's; `GetCapacity` reports 0 in any other) and a healthy
//! `volume_condition` for every volume.
//!
//! ```
//! use std::sync::Arc;
//! use csi_testkit::memdriver::{MemDriver, MemDriverConfig};
//! use csi_types::{Csi, node::NodeGetInfoRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let plugin = MemDriver::new(MemDriverConfig::default()).plugin();
//! let info = Csi::node_get_info(&plugin, NodeGetInfoRequest {}).await.unwrap();
//! assert_eq!(info.node_id.as_str(), "memdriver-node-1");
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use csi_types::paging::{Page, Paging};
use csi_types::prelude::*;
use csi_types::{
    capabilities::{ControllerCapabilities, NodeCapabilities, PluginCapabilities},
    controller::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, ControllerGetVolumeRequest,
        ControllerGetVolumeResponse, ControllerModifyVolumeRequest, ControllerModifyVolumeResponse,
        ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
        ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse, CreateSnapshotRequest,
        CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
        DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest,
        GetCapacityResponse, GetSnapshotRequest, GetSnapshotResponse, ListSnapshotsRequest,
        ListSnapshotsResponse, ListVolumesEntry, ListVolumesRequest, ListVolumesResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, VolumeStatus,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
        GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse, VolumeGroupSnapshot,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse},
    ids::{GroupSnapshotId, PluginName, SnapshotId, VolumeId},
    node::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetInfoRequest, NodeGetInfoResponse,
        NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
        NodeUnstageVolumeResponse, UsageUnit, VolumeUsage,
    },
    snapshot_metadata::{
        BlockMetadata, BlockMetadataResponse, BlockMetadataType, GetMetadataAllocatedRequest,
        GetMetadataDeltaRequest,
    },
    types::{
        Map, Snapshot, Topology, Volume, VolumeCapability, VolumeCondition, VolumeContentSource,
    },
};

/// The topology key of the default [`MemDriverConfig::topology`].
pub const TOPOLOGY_KEY: &str = "topology.csi-testkit.example.com/zone";

/// How a [`MemDriver`] behaves.
#[derive(Clone, Debug)]
pub struct MemDriverConfig {
    /// The id `NodeGetInfo` reports.
    pub node_id: String,
    /// Other nodes the controller knows; publishing to any other id answers `NOT_FOUND`.
    pub other_nodes: Vec<String>,
    /// The attach limit per node, reported as `max_volumes_per_node`.
    pub max_volumes_per_node: u64,
    /// The size of the capacity pool, which is also the largest volume.
    pub capacity_bytes: u64,
    /// The size of a volume created without a `capacity_range`.
    pub default_volume_bytes: u64,
    /// Sizes are rounded up to a multiple of this.
    pub granularity: u64,
    /// The mutable parameters `ControllerModifyVolume` accepts; any other key
    /// answers `INVALID_ARGUMENT`.
    pub mutable_parameter_keys: Vec<String>,
    /// Where the node and every volume are (`NodeGetInfo.accessible_topology`
    /// and each volume's `accessible_topology`); `Some` also advertises
    /// `VOLUME_ACCESSIBILITY_CONSTRAINTS`, and a `CreateVolume` whose
    /// requisite topologies all lie elsewhere answers `RESOURCE_EXHAUSTED`.
    pub topology: Option<Topology>,
    /// Derive volume, snapshot and group snapshot ids from their names (a
    /// stable hash), as drivers that name their backing objects after the
    /// CO's names do: a name created again after its deletion gets its old
    /// id back. Off by default: ids then come from a counter and are never
    /// reused.
    pub ids_from_names: bool,
    /// Whether `NodeStageVolume` requires the volume to be published to the
    /// node by `ControllerPublishVolume` first (`FAILED_PRECONDITION`
    /// otherwise). On by default; turn it off for a plugin built without the
    /// memdriver's `ControllerPublisher`, whose CO never publishes.
    pub requires_controller_publish: bool,
}

impl Default for MemDriverConfig {
    fn default() -> Self {
        MemDriverConfig {
            node_id: "memdriver-node-1".into(),
            other_nodes: vec!["memdriver-node-2".into()],
            max_volumes_per_node: 8,
            capacity_bytes: 64 << 30,
            default_volume_bytes: 1 << 20,
            granularity: 4096,
            mutable_parameter_keys: vec!["iops".into(), "tier".into()],
            topology: Some(
                Topology::new([(TOPOLOGY_KEY, "zone-1")]).expect("a valid constant topology"),
            ),
            ids_from_names: false,
            requires_controller_publish: true,
        }
    }
}

#[derive(Clone, Debug)]
struct ControllerPublication {
    capability: VolumeCapability,
    readonly: bool,
}

#[derive(Clone, Debug)]
struct NodePublication {
    capability: VolumeCapability,
    readonly: bool,
}

#[derive(Clone, Debug)]
struct Vol {
    name: String,
    capacity: u64,
    parameters: Map,
    mutable_parameters: Map,
    capabilities: Vec<VolumeCapability>,
    source: Option<VolumeContentSource>,
    published: BTreeMap<String, ControllerPublication>,
    staged: BTreeMap<String, VolumeCapability>,
    node_published: BTreeMap<String, NodePublication>,
}

impl Vol {
    fn in_use(&self) -> bool {
        !self.published.is_empty() || !self.staged.is_empty() || !self.node_published.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Snap {
    name: String,
    source: String,
    size: u64,
    created: SystemTime,
    group: Option<String>,
}

#[derive(Clone, Debug)]
struct Group {
    name: String,
    members: Vec<String>,
    created: SystemTime,
}

#[derive(Default)]
struct State {
    volumes: BTreeMap<String, Vol>,
    snapshots: BTreeMap<String, Snap>,
    groups: BTreeMap<String, Group>,
    next: u64,
    used: u64,
}

impl State {
    /// A new id: from the counter, or from `name` when given.
    fn id(&mut self, prefix: &str, name: Option<&str>) -> String {
        match name {
            // FNV-1a: stable across runs and platforms.
            Some(name) => {
                let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                format!("{prefix}-{hash:016x}")
            }
            None => {
                self.next += 1;
                format!("{prefix}-{:08}", self.next)
            }
        }
    }

    fn volume_by_name(&self, name: &str) -> Option<(&String, &Vol)> {
        self.volumes.iter().find(|(_, v)| v.name == name)
    }

    fn vol(&self, id: &VolumeId) -> Result<&Vol, CsiError> {
        self.volumes
            .get(id.as_str())
            .ok_or_else(|| CsiError::not_found(format!("volume {id} does not exist")))
    }

    fn vol_mut(&mut self, id: &VolumeId) -> Result<&mut Vol, CsiError> {
        self.volumes
            .get_mut(id.as_str())
            .ok_or_else(|| CsiError::not_found(format!("volume {id} does not exist")))
    }

    fn snapshot(&self, id: &str, snap: &Snap) -> Result<Snapshot, CsiError> {
        // Its own ids: a bad one is this driver's bug (INTERNAL).
        let s = Snapshot::try_new(id, snap.source.clone(), snap.size, snap.created, true)?;
        Ok(match &snap.group {
            Some(g) => s.with_group_snapshot_id(
                GroupSnapshotId::new(g.clone()).map_err(|e| e.built_by_driver("Snapshot"))?,
            ),
            None => s,
        })
    }

    fn group(&self, id: &str, g: &Group) -> Result<VolumeGroupSnapshot, CsiError> {
        let snapshots = g
            .members
            .iter()
            .map(|m| self.snapshot(m, &self.snapshots[m]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VolumeGroupSnapshot {
            group_snapshot_id: GroupSnapshotId::new(id)
                .map_err(|e| e.built_by_driver("VolumeGroupSnapshot"))?,
            snapshots,
            creation_time: g.created,
            ready_to_use: true,
        })
    }
}

/// The in-memory reference driver. See the [module documentation](self).
pub struct MemDriver {
    config: MemDriverConfig,
    state: Mutex<State>,
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_dir()
    {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    }
}

fn remove_path(path: &Path) -> Result<(), CsiError> {
    make_writable(path);
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| CsiError::internal(format!("removing {}: {e}", path.display())))
}

impl MemDriver {
    /// A driver with no volumes.
    pub fn new(config: MemDriverConfig) -> Arc<MemDriver> {
        Arc::new(MemDriver {
            config,
            state: Mutex::new(State::default()),
        })
    }

    /// The driver's configuration.
    pub fn config(&self) -> &MemDriverConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name`, when ids are derived from names.
    fn named<'a>(&self, name: &'a str) -> Option<&'a str> {
        self.config.ids_from_names.then_some(name)
    }

    /// A [`PluginBuilder`] with every part of this driver registered, so a
    /// test can replace one part (a later registration wins) before `build`.
    pub fn plugin_builder(self: &Arc<Self>) -> PluginBuilder {
        Plugin::builder(self.clone())
            .controller(self.clone())
            .provisioner(self.clone())
            .publisher(self.clone())
            .volume_lister(self.clone())
            .capacity_reporter(self.clone())
            .snapshotter(self.clone())
            .snapshot_lister(self.clone())
            .snapshot_getter(self.clone())
            .controller_expander(self.clone())
            .volume_getter(self.clone())
            .modifier(self.clone())
            .node(self.clone())
            .stager(self.clone())
            .node_stats(self.clone())
            .node_expander(self.clone())
            .group_controller(self.clone())
            .snapshot_metadata(self.clone())
    }

    /// The whole driver as a [`Plugin`].
    pub fn plugin(self: &Arc<Self>) -> Plugin {
        self.plugin_builder()
            .build()
            .expect("the memdriver registers every part its capabilities need")
    }

    fn node_known(&self, node: &str) -> bool {
        node == self.config.node_id || self.config.other_nodes.iter().any(|n| n == node)
    }

    fn check_mutable(&self, field: &str, params: &Map) -> Result<(), CsiError> {
        for key in params.keys() {
            if !self.config.mutable_parameter_keys.iter().any(|k| k == key) {
                return Err(CsiError::invalid(
                    format!("{field}.{key}"),
                    format!(
                        "not a mutable parameter of this driver (supported: {})",
                        self.config.mutable_parameter_keys.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn volume(&self, id: &str, v: &Vol) -> Result<Volume, CsiError> {
        let mut vol = Volume::try_new(id, v.capacity)?;
        if let Some(s) = &v.source {
            vol = vol.with_content_source(s.clone());
        }
        // Every volume lives where the one node is.
        if let Some(t) = &self.config.topology {
            vol = vol.with_accessible_topology(t.clone());
        }
        Ok(vol)
    }

    fn status(v: &Vol) -> Result<VolumeStatus, CsiError> {
        // Memory does not degrade: every volume is healthy.
        let healthy = VolumeCondition::healthy(format!("in memory, {} bytes", v.capacity));
        VolumeStatus::from_published(v.published.keys(), Some(healthy))
    }
}

#[async_trait]
impl Identity for MemDriver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(
            PluginName::new("memdriver.csi-testkit.example.com")?,
            env!("CARGO_PKG_VERSION"),
        )
    }

    fn plugin_capabilities(&self) -> PluginCapabilities {
        if self.config.topology.is_some() {
            PluginCapabilities::VOLUME_EXPANSION_ONLINE
                | PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
        } else {
            PluginCapabilities::VOLUME_EXPANSION_ONLINE
        }
    }
}

#[async_trait]
impl Controller for MemDriver {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        let st = self.state();
        let v = st.vol(&req.volume_id)?;
        if !req.parameters.is_empty() && req.parameters != v.parameters {
            return Ok(ValidateVolumeCapabilitiesResponse::unsupported(
                "the parameters differ from the volume's",
            ));
        }
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }

    fn feature_capabilities(&self) -> ControllerCapabilities {
        ControllerCapabilities::CLONE_VOLUME
            | ControllerCapabilities::PUBLISH_READONLY
            | ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES
            | ControllerCapabilities::VOLUME_CONDITION
    }
}

#[async_trait]
impl Provisioner for MemDriver {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        self.check_mutable("mutable_parameters", &req.mutable_parameters)?;
        let range = req.capacity_range.unwrap_or_default();
        let mut st = self.state();
        if let Some((id, v)) = st.volume_by_name(req.name.as_str()) {
            let compatible = range.contains(v.capacity)
                && v.parameters == req.parameters
                && v.source == req.volume_content_source
                && req
                    .volume_capabilities
                    .iter()
                    .all(|c| v.capabilities.contains(c));
            if !compatible {
                return Err(CsiError::already_exists(format!(
                    "volume {:?} exists as {id} with other capacity, parameters, capabilities or source",
                    req.name.as_str()
                )));
            }
            return Ok(CreateVolumeResponse::new(self.volume(id, v)?));
        }
        let min_size = match &req.volume_content_source {
            None => 0,
            Some(VolumeContentSource::Snapshot(s)) => {
                st.snapshots
                    .get(s.as_str())
                    .ok_or_else(|| {
                        CsiError::not_found(format!("source snapshot {s} does not exist"))
                    })?
                    .size
            }
            Some(VolumeContentSource::Volume(s)) => {
                st.volumes
                    .get(s.as_str())
                    .ok_or_else(|| {
                        CsiError::not_found(format!("source volume {s} does not exist"))
                    })?
                    .capacity
            }
        };
        // One node, one topology: a requisite list it is not in cannot be
        // satisfied (spec: "Unable to provision in `accessible_topology`").
        if let (Some(t), Some(reqs)) = (&self.config.topology, &req.accessibility_requirements)
            && !reqs.requisite.is_empty()
            && !reqs.requisite.iter().any(|r| r.is_subset_of(t))
        {
            return Err(CsiError::resource_exhausted(format!(
                "volumes are accessible only from {t:?}, which matches no requisite topology"
            )));
        }
        let default = self.config.default_volume_bytes.max(min_size);
        let size = range
            .choose(default, self.config.granularity)
            .filter(|&s| s >= min_size && s <= self.config.capacity_bytes)
            .ok_or_else(|| {
                CsiError::out_of_range(format!(
                    "cannot honour {range:?}: sizes are multiples of {} between {min_size} and {} bytes",
                    self.config.granularity, self.config.capacity_bytes
                ))
            })?;
        if st.used + size > self.config.capacity_bytes {
            return Err(CsiError::resource_exhausted(format!(
                "{size} bytes wanted, {} available",
                self.config.capacity_bytes - st.used
            )));
        }
        let id = st.id("vol", self.named(req.name.as_str()));
        let v = Vol {
            name: req.name.into_string(),
            capacity: size,
            parameters: req.parameters,
            mutable_parameters: req.mutable_parameters,
            capabilities: req.volume_capabilities,
            source: req.volume_content_source,
            published: BTreeMap::new(),
            staged: BTreeMap::new(),
            node_published: BTreeMap::new(),
        };
        let vol = self.volume(&id, &v)?;
        st.used += size;
        st.volumes.insert(id, v);
        Ok(CreateVolumeResponse::new(vol))
    }

    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let mut st = self.state();
        let Some(v) = st.volumes.get(req.volume_id.as_str()) else {
            return Ok(DeleteVolumeResponse {});
        };
        if v.in_use() {
            return Err(CsiError::failed_precondition(format!(
                "volume {} is published or staged",
                req.volume_id
            )));
        }
        let size = v.capacity;
        st.volumes.remove(req.volume_id.as_str());
        st.used -= size;
        Ok(DeleteVolumeResponse {})
    }
}

#[async_trait]
impl ControllerPublisher for MemDriver {
    async fn controller_publish_volume(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, CsiError> {
        let node = req.node_id.as_str().to_string();
        let mut st = self.state();
        st.vol(&req.volume_id)?;
        if !self.node_known(&node) {
            return Err(CsiError::not_found(format!("node {node} does not exist")));
        }
        let attached = st
            .volumes
            .values()
            .filter(|v| v.published.contains_key(&node))
            .count() as u64;
        let max = self.config.max_volumes_per_node;
        let v = st.vol_mut(&req.volume_id)?;
        let context: Map = [("device".to_string(), format!("/dev/mem/{}", req.volume_id))].into();
        if let Some(p) = v.published.get(&node) {
            if p.capability != req.volume_capability || p.readonly != req.readonly {
                return Err(CsiError::already_exists(format!(
                    "volume {} is published to {node} with another capability or readonly flag",
                    req.volume_id
                )));
            }
            return Ok(ControllerPublishVolumeResponse {
                publish_context: context,
            });
        }
        if req.volume_capability.access_mode.is_single_node() && !v.published.is_empty() {
            return Err(CsiError::failed_precondition(format!(
                "volume {} has a single-node access mode and is published to {:?}",
                req.volume_id,
                v.published.keys().collect::<Vec<_>>()
            )));
        }
        if attached >= max {
            return Err(CsiError::resource_exhausted(format!(
                "node {node} has {attached} volumes attached, the limit is {max}"
            )));
        }
        v.published.insert(
            node,
            ControllerPublication {
                capability: req.volume_capability,
                readonly: req.readonly,
            },
        );
        Ok(ControllerPublishVolumeResponse {
            publish_context: context,
        })
    }

    async fn controller_unpublish_volume(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse, CsiError> {
        let mut st = self.state();
        // A volume that is gone is unpublished everywhere.
        if let Some(v) = st.volumes.get_mut(req.volume_id.as_str()) {
            match &req.node_id {
                Some(n) => {
                    v.published.remove(n.as_str());
                }
                None => v.published.clear(),
            }
        }
        Ok(ControllerUnpublishVolumeResponse {})
    }
}

#[async_trait]
impl VolumeLister for MemDriver {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let st = self.state();
        let Page {
            entries: items,
            next_token,
        } = Paging::volumes(&req)?.page(&st.volumes);
        let entries = items
            .into_iter()
            .map(|(id, v)| {
                Ok(ListVolumesEntry {
                    volume: self.volume(id, v)?,
                    status: Some(Self::status(v)?),
                })
            })
            .collect::<Result<_, CsiError>>()?;
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }
}

#[async_trait]
impl CapacityReporter for MemDriver {
    async fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, CsiError> {
        let st = self.state();
        // Nothing is available in a topology the volumes cannot be in.
        let elsewhere = match (&req.accessible_topology, &self.config.topology) {
            (Some(want), Some(here)) => !want.is_subset_of(here),
            _ => false,
        };
        Ok(GetCapacityResponse {
            available_capacity: if elsewhere {
                0
            } else {
                self.config.capacity_bytes - st.used
            },
            maximum_volume_size: Some(self.config.capacity_bytes),
            minimum_volume_size: Some(self.config.granularity),
        })
    }
}

#[async_trait]
impl Snapshotter for MemDriver {
    async fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, CsiError> {
        let mut st = self.state();
        if let Some((id, s)) = st
            .snapshots
            .iter()
            .find(|(_, s)| s.name == req.name.as_str())
        {
            if s.source != req.source_volume_id.as_str() {
                return Err(CsiError::already_exists(format!(
                    "snapshot {:?} exists as {id} of volume {}",
                    req.name.as_str(),
                    s.source
                )));
            }
            return Ok(CreateSnapshotResponse {
                snapshot: st.snapshot(id, s)?,
            });
        }
        let size = st.vol(&req.source_volume_id)?.capacity;
        let id = st.id("snap", self.named(req.name.as_str()));
        let snap = Snap {
            name: req.name.into_string(),
            source: req.source_volume_id.into_string(),
            size,
            created: SystemTime::now(),
            group: None,
        };
        let snapshot = st.snapshot(&id, &snap)?;
        st.snapshots.insert(id, snap);
        Ok(CreateSnapshotResponse { snapshot })
    }

    async fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, CsiError> {
        let mut st = self.state();
        if let Some(s) = st.snapshots.get(req.snapshot_id.as_str())
            && let Some(g) = &s.group
        {
            return Err(CsiError::invalid(
                "snapshot_id",
                format!(
                    "snapshot {} belongs to group snapshot {g}; delete the group",
                    req.snapshot_id
                ),
            ));
        }
        st.snapshots.remove(req.snapshot_id.as_str());
        Ok(DeleteSnapshotResponse {})
    }
}

#[async_trait]
impl SnapshotLister for MemDriver {
    async fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, CsiError> {
        let st = self.state();
        let wanted = st
            .snapshots
            .iter()
            .filter(|(id, s)| req.wants(id, &s.source));
        let Page {
            entries: items,
            next_token,
        } = Paging::snapshots(&req)?.page(wanted);
        let entries = items
            .into_iter()
            .map(|(id, s)| st.snapshot(id, s))
            .collect::<Result<_, _>>()?;
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }
}

#[async_trait]
impl SnapshotGetter for MemDriver {
    async fn get_snapshot(&self, req: GetSnapshotRequest) -> Result<GetSnapshotResponse, CsiError> {
        let st = self.state();
        let s = st.snapshots.get(req.snapshot_id.as_str()).ok_or_else(|| {
            CsiError::not_found(format!("snapshot {} does not exist", req.snapshot_id))
        })?;
        Ok(GetSnapshotResponse::new(
            st.snapshot(req.snapshot_id.as_str(), s)?,
        ))
    }
}

#[async_trait]
impl ControllerExpander for MemDriver {
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        let mut st = self.state();
        let current = st.vol(&req.volume_id)?.capacity;
        let range = req.capacity_range;
        let wanted = range
            .choose(current, self.config.granularity)
            .map(|s| s.max(current))
            .filter(|&s| range.contains(s) && s <= self.config.capacity_bytes)
            .ok_or_else(|| {
                CsiError::out_of_range(format!(
                    "cannot expand a {current}-byte volume to {range:?}"
                ))
            })?;
        let grow = wanted - current;
        if st.used + grow > self.config.capacity_bytes {
            return Err(CsiError::out_of_range(format!(
                "{grow} more bytes wanted, {} available",
                self.config.capacity_bytes - st.used
            )));
        }
        st.used += grow;
        st.vol_mut(&req.volume_id)?.capacity = wanted;
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: wanted,
            node_expansion_required: true,
        })
    }
}

#[async_trait]
impl VolumeGetter for MemDriver {
    async fn controller_get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, CsiError> {
        let st = self.state();
        let v = st.vol(&req.volume_id)?;
        Ok(ControllerGetVolumeResponse::new(
            self.volume(req.volume_id.as_str(), v)?,
            Self::status(v)?,
        ))
    }
}

#[async_trait]
impl VolumeModifier for MemDriver {
    async fn controller_modify_volume(
        &self,
        req: ControllerModifyVolumeRequest,
    ) -> Result<ControllerModifyVolumeResponse, CsiError> {
        self.check_mutable("mutable_parameters", &req.mutable_parameters)?;
        let mut st = self.state();
        let v = st.vol_mut(&req.volume_id)?;
        v.mutable_parameters.extend(req.mutable_parameters);
        Ok(ControllerModifyVolumeResponse {})
    }
}

#[async_trait]
impl Node for MemDriver {
    async fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        let mut st = self.state();
        let v = st.vol(&req.volume_id)?;
        let staging = req.staging_target_path.as_ref().ok_or_else(|| {
            CsiError::failed_precondition(
                "staging_target_path is REQUIRED: this plugin stages volumes",
            )
        })?;
        if !v.staged.contains_key(staging.as_str()) {
            return Err(CsiError::failed_precondition(format!(
                "volume {} is not staged at {staging}",
                req.volume_id
            )));
        }
        let target = req.target_path.as_str().to_string();
        if let Some(p) = v.node_published.get(&target) {
            if p.capability != req.volume_capability || p.readonly != req.readonly {
                return Err(CsiError::already_exists(format!(
                    "volume {} is published at {target} with another capability or readonly flag",
                    req.volume_id
                )));
            }
            return Ok(NodePublishVolumeResponse {});
        }
        let path = req.target_path.as_path();
        let made = if req.volume_capability.is_block() {
            std::fs::write(path, b"")
        } else {
            std::fs::create_dir_all(path).and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                let mode = if req.readonly { 0o555 } else { 0o755 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            })
        };
        made.map_err(|e| CsiError::internal(format!("creating {target}: {e}")))?;
        st.vol_mut(&req.volume_id)?.node_published.insert(
            target,
            NodePublication {
                capability: req.volume_capability,
                readonly: req.readonly,
            },
        );
        Ok(NodePublishVolumeResponse {})
    }

    async fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        let mut st = self.state();
        let v = st.vol_mut(&req.volume_id)?;
        if v.node_published.remove(req.target_path.as_str()).is_some() {
            remove_path(req.target_path.as_path())?;
        }
        Ok(NodeUnpublishVolumeResponse {})
    }

    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        let info = NodeGetInfoResponse::try_new(self.config.node_id.clone())?
            .with_max_volumes(self.config.max_volumes_per_node);
        Ok(match &self.config.topology {
            Some(t) => info.with_topology(t.clone()),
            None => info,
        })
    }

    fn feature_capabilities(&self) -> NodeCapabilities {
        NodeCapabilities::VOLUME_CONDITION
    }
}

#[async_trait]
impl NodeStager for MemDriver {
    async fn node_stage_volume(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, CsiError> {
        let mut st = self.state();
        let v = st.vol(&req.volume_id)?;
        if self.config.requires_controller_publish
            && !v.published.contains_key(&self.config.node_id)
        {
            return Err(CsiError::failed_precondition(format!(
                "volume {} is not published to node {}",
                req.volume_id, self.config.node_id
            )));
        }
        let path = req.staging_target_path.as_str().to_string();
        if let Some(c) = v.staged.get(&path) {
            if *c != req.volume_capability {
                return Err(CsiError::already_exists(format!(
                    "volume {} is staged at {path} with another capability",
                    req.volume_id
                )));
            }
            return Ok(NodeStageVolumeResponse {});
        }
        std::fs::create_dir_all(req.staging_target_path.as_path())
            .map_err(|e| CsiError::internal(format!("creating {path}: {e}")))?;
        st.vol_mut(&req.volume_id)?
            .staged
            .insert(path, req.volume_capability);
        Ok(NodeStageVolumeResponse {})
    }

    async fn node_unstage_volume(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, CsiError> {
        let mut st = self.state();
        let v = st.vol_mut(&req.volume_id)?;
        if v.staged.remove(req.staging_target_path.as_str()).is_some() {
            remove_path(req.staging_target_path.as_path())?;
        }
        Ok(NodeUnstageVolumeResponse {})
    }
}

#[async_trait]
impl NodeVolumeStats for MemDriver {
    async fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError> {
        let st = self.state();
        let v = st.vol(&req.volume_id)?;
        // Object-bound: checked once the volume is known to exist.
        let path = req.volume_path.get()?;
        req.staging_target_path.get()?;
        let path = path.as_str();
        if !v.node_published.contains_key(path) && !v.staged.contains_key(path) {
            return Err(CsiError::not_found(format!(
                "volume {} is not published or staged at {path}",
                req.volume_id
            )));
        }
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![VolumeUsage {
                unit: UsageUnit::Bytes,
                total: v.capacity,
                available: v.capacity,
                used: 0,
            }],
            volume_condition: Some(VolumeCondition::healthy(format!(
                "published or staged at {path}"
            ))),
        })
    }
}

#[async_trait]
impl NodeExpander for MemDriver {
    async fn node_expand_volume(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, CsiError> {
        let st = self.state();
        let v = st.vol(&req.volume_id)?;
        // Object-bound: checked once the volume is known to exist.
        let path = req.volume_path.get()?;
        req.staging_target_path.get()?;
        let path = path.as_str();
        if !v.node_published.contains_key(path) && !v.staged.contains_key(path) {
            return Err(CsiError::not_found(format!(
                "volume {} is not published or staged at {path}",
                req.volume_id
            )));
        }
        if let Some(r) = req.capacity_range
            && r.required_bytes.is_some_and(|b| b > v.capacity)
        {
            return Err(CsiError::out_of_range(format!(
                "the volume has {} bytes; expand it on the controller first",
                v.capacity
            )));
        }
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: Some(v.capacity),
        })
    }
}

#[async_trait]
impl GroupController for MemDriver {
    async fn create_volume_group_snapshot(
        &self,
        req: CreateVolumeGroupSnapshotRequest,
    ) -> Result<CreateVolumeGroupSnapshotResponse, CsiError> {
        let mut st = self.state();
        let wanted: BTreeSet<&str> = req.source_volume_ids.iter().map(|v| v.as_str()).collect();
        if let Some((id, g)) = st.groups.iter().find(|(_, g)| g.name == req.name.as_str()) {
            let have: BTreeSet<&str> = g
                .members
                .iter()
                .map(|m| st.snapshots[m].source.as_str())
                .collect();
            if have != wanted {
                return Err(CsiError::already_exists(format!(
                    "group snapshot {:?} exists as {id} of other volumes",
                    req.name.as_str()
                )));
            }
            return Ok(CreateVolumeGroupSnapshotResponse {
                group_snapshot: st.group(id, g)?,
            });
        }
        for v in &req.source_volume_ids {
            st.vol(v)?;
        }
        let gid = st.id("group", self.named(req.name.as_str()));
        let created = SystemTime::now();
        let mut members = Vec::new();
        for v in &wanted {
            let member = format!("{}/{v}", req.name.as_str());
            let sid = st.id("snap", self.named(&member));
            let size = st.volumes[*v].capacity;
            st.snapshots.insert(
                sid.clone(),
                Snap {
                    name: member,
                    source: v.to_string(),
                    size,
                    created,
                    group: Some(gid.clone()),
                },
            );
            members.push(sid);
        }
        let g = Group {
            name: req.name.into_string(),
            members,
            created,
        };
        let group_snapshot = st.group(&gid, &g)?;
        st.groups.insert(gid, g);
        Ok(CreateVolumeGroupSnapshotResponse { group_snapshot })
    }

    async fn delete_volume_group_snapshot(
        &self,
        req: DeleteVolumeGroupSnapshotRequest,
    ) -> Result<DeleteVolumeGroupSnapshotResponse, CsiError> {
        let mut st = self.state();
        let Some(g) = st.groups.get(req.group_snapshot_id.as_str()) else {
            return Ok(DeleteVolumeGroupSnapshotResponse {});
        };
        check_members(&g.members, &req.snapshot_ids.get()?)?;
        let g = st
            .groups
            .remove(req.group_snapshot_id.as_str())
            .expect("looked up above");
        for m in g.members {
            st.snapshots.remove(&m);
        }
        Ok(DeleteVolumeGroupSnapshotResponse {})
    }

    async fn get_volume_group_snapshot(
        &self,
        req: GetVolumeGroupSnapshotRequest,
    ) -> Result<GetVolumeGroupSnapshotResponse, CsiError> {
        let st = self.state();
        let g = st
            .groups
            .get(req.group_snapshot_id.as_str())
            .ok_or_else(|| {
                CsiError::not_found(format!(
                    "group snapshot {} does not exist",
                    req.group_snapshot_id
                ))
            })?;
        check_members(&g.members, &req.snapshot_ids.get()?)?;
        Ok(GetVolumeGroupSnapshotResponse::new(
            st.group(req.group_snapshot_id.as_str(), g)?,
        ))
    }
}

fn check_members(members: &[String], given: &[SnapshotId]) -> Result<(), CsiError> {
    let have: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    let given: BTreeSet<&str> = given.iter().map(|s| s.as_str()).collect();
    if have != given {
        return Err(CsiError::invalid(
            "snapshot_ids",
            format!("must list exactly the group's snapshots {have:?}"),
        ));
    }
    Ok(())
}

/// Most ranges in one SnapshotMetadata message when the request leaves
/// `max_results` to the plugin.
const METADATA_RANGES_PER_MESSAGE: usize = 64;

impl MemDriver {
    /// The `granularity`-sized blocks from the one holding `from` up to
    /// `end`, as messages of at most `max` ranges each.
    fn block_messages(
        &self,
        from: u64,
        end: u64,
        capacity: u64,
        max: Option<u32>,
    ) -> BlockMetadataStream {
        let g = self.config.granularity.max(1);
        let max = max
            .map(|m| m as usize)
            .filter(|m| *m > 0)
            .unwrap_or(METADATA_RANGES_PER_MESSAGE);
        let blocks: Vec<BlockMetadata> = (from / g..end.div_ceil(g))
            .map(|b| BlockMetadata {
                byte_offset: b * g,
                size_bytes: g,
            })
            .collect();
        let msgs: Vec<Result<BlockMetadataResponse, CsiError>> = blocks
            .chunks(max)
            .map(|c| {
                Ok(BlockMetadataResponse {
                    block_metadata_type: BlockMetadataType::FixedLength,
                    volume_capacity_bytes: capacity,
                    block_metadata: c.to_vec(),
                })
            })
            .collect();
        Box::pin(futures::stream::iter(msgs))
    }

    fn snap_for_metadata(&self, field: &str, id: &SnapshotId) -> Result<Snap, CsiError> {
        self.state()
            .snapshots
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| CsiError::not_found(format!("{field}: snapshot {id} does not exist")))
    }
}

fn check_offset(offset: u64, size: u64) -> Result<(), CsiError> {
    if offset > size {
        return Err(CsiError::out_of_range(format!(
            "starting_offset {offset} is past the end of the {size}-byte snapshot"
        )));
    }
    Ok(())
}

/// Memdriver volumes are thick and hold no data: every block of a snapshot
/// is allocated (`FIXED_LENGTH` ranges of `granularity` bytes), and two
/// snapshots of one volume differ only in the blocks the volume grew by
/// between them.
#[async_trait]
impl SnapshotMetadata for MemDriver {
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        let s = self.snap_for_metadata("snapshot_id", &req.snapshot_id)?;
        check_offset(req.starting_offset, s.size)?;
        Ok(self.block_messages(req.starting_offset, s.size, s.size, req.max_results))
    }

    async fn get_metadata_delta(
        &self,
        req: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        let base = self.snap_for_metadata("base_snapshot_id", &req.base_snapshot_id)?;
        let target = self.snap_for_metadata("target_snapshot_id", &req.target_snapshot_id)?;
        if base.source != target.source {
            return Err(CsiError::invalid(
                "base_snapshot_id",
                format!(
                    "snapshots {} and {} are of different volumes ({} and {})",
                    req.base_snapshot_id, req.target_snapshot_id, base.source, target.source
                ),
            ));
        }
        check_offset(req.starting_offset, target.size)?;
        let from = req.starting_offset.max(base.size.min(target.size));
        Ok(self.block_messages(from, target.size, target.size, req.max_results))
    }
}
