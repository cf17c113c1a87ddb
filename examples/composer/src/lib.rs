//! The composer controller: CSI Identity and Controller services over
//! [`composer_core::Composer`], and an admin protocol on a second socket.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), csi_types::CsiError> {
//! use composer::ComposerDriver;
//! use composer_core::{Inventory, MemStore};
//! use csi_types::prelude::*;
//! use std::sync::Arc;
//!
//! let driver = ComposerDriver::open(Inventory::default_inventory(), Arc::new(MemStore::default()), None).unwrap();
//! let plugin = driver.plugin()?;
//! let req = composer::create_request("pvc-1", &[("type", "slice")], 10 << 30)?;
//! let vol = plugin.create_volume(req).await?.volume;
//! assert_eq!(vol.capacity_bytes, 10 << 30);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! None.

pub mod admin;
pub mod agent;
pub mod background;
pub mod demo;
mod expand;
pub mod luks;
pub mod node;
mod persist;
#[cfg(test)]
mod turn_tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use composer_core::{Composer, Error, Inventory, Store, convert};
use csi_types::paging::Paging;
use csi_types::prelude::*;
use csi_types::{
    capabilities::{ControllerCapabilities, NodeCapabilities, PluginCapabilities},
    controller::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, ControllerGetVolumeRequest,
        ControllerGetVolumeResponse, ControllerPublishVolumeRequest,
        ControllerPublishVolumeResponse, ControllerUnpublishVolumeRequest,
        ControllerUnpublishVolumeResponse, CreateVolumeRequest, CreateVolumeResponse,
        DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
        ListVolumesEntry, ListVolumesRequest, ListVolumesResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, VolumeStatus,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse, ProbeRequest, ProbeResponse},
    ids::{PluginName, VolumeId, VolumeName},
    node::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetInfoRequest, NodeGetInfoResponse,
        NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
        NodeUnstageVolumeResponse, UsageUnit, VolumeUsage,
    },
    redact::Secrets,
    types::{
        AccessMode, AccessType, CapacityRange, Map, Volume, VolumeCapability, VolumeCondition,
    },
};
use storage_units::quote_path;

/// The plugin name reported by `GetPluginInfo`.
pub const DRIVER_NAME: &str = "composer.csi.example.com";

/// The composer's CSI driver. Cheap to clone.
#[derive(Clone)]
pub struct ComposerDriver {
    composer: Arc<Composer>,
    node: Option<u32>,
    node_side: Option<Arc<node::NodeSide>>,
    agent: Option<Arc<agent::JbodAgent>>,
}

impl ComposerDriver {
    /// Opens the composer on `store`. With `node_id` (a server of the
    /// inventory) the plugin also answers `NodeGetInfo` for that server.
    pub fn open(
        inv: Inventory,
        store: Arc<dyn Store>,
        node_id: Option<&str>,
    ) -> Result<ComposerDriver, Error> {
        let composer = Composer::open(inv, store)?;
        let node = node_id
            .map(|n| convert::server_of_node(composer.inventory(), n))
            .transpose()?;
        Ok(ComposerDriver {
            composer: Arc::new(composer),
            node,
            node_side: None,
            agent: None,
        })
    }

    /// Serves the node side (stage, publish, stats) on this node with
    /// `cfg`; needs a node id.
    pub fn with_node_side(mut self, cfg: node::NodeConfig) -> ComposerDriver {
        self.node_side = Some(Arc::new(node::NodeSide::new(cfg)));
        self
    }

    /// Keeps `agent`'s allow-lists in step with the records: now, and after
    /// every publish, unpublish and delete of an `nbd` volume.
    pub fn with_agent(mut self, agent: Arc<agent::JbodAgent>) -> Result<ComposerDriver, CsiError> {
        agent.sync_all(&self.composer)?;
        self.agent = Some(agent);
        Ok(self)
    }

    /// Before a delete: the volume's members lose their signatures in the
    /// drive files this process holds (node side, agent); see
    /// [`agent::wipe_members`].
    fn wipe(&self, rec: &composer_core::store::VolumeRecord) -> Result<(), Error> {
        let mut dirs: Vec<&std::path::Path> = Vec::new();
        if let Some(s) = &self.node_side {
            dirs.push(&s.config().data_dir);
        }
        if let Some(a) = &self.agent
            && !dirs.contains(&a.data_dir())
        {
            dirs.push(a.data_dir());
        }
        for d in dirs {
            agent::wipe_members(d, rec).map_err(|e| {
                Error::Internal(format!(
                    "wiping the members of {} in {}: {e}",
                    rec.id,
                    quote_path(d)
                ))
            })?;
        }
        Ok(())
    }

    /// After `repair-apply` moved members of `volumes`: the agent grants
    /// their new drives (failures are logged; the next publish or restart
    /// grants again).
    pub fn after_repair(&self, c: &Composer, volumes: &[String]) {
        for v in volumes {
            if let Err(e) = self.sync_agent(c, v) {
                tracing::error!("JBOD agent: granting the new members of {v}: {e}");
            }
        }
    }

    /// After a change of volume `id`: the agent's grants follow its record.
    fn sync_agent(&self, c: &Composer, id: &str) -> Result<(), Error> {
        let Some(a) = &self.agent else { return Ok(()) };
        let rec = match c.get(id) {
            Ok(v) => Some(v.record),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // A refusal (bytes held by another holder, a member past its
        // drive's end) stays FAILED_PRECONDITION for the CO.
        a.sync_volume(id, rec.as_ref()).map_err(|e| match e {
            CsiError::FailedPrecondition(m) => Error::FailedPrecondition(m),
            e => Error::Internal(e.to_string()),
        })
    }

    /// The node side, when served.
    pub fn node_side(&self) -> Option<&Arc<node::NodeSide>> {
        self.node_side.as_ref()
    }

    /// The composer.
    pub fn composer(&self) -> &Arc<Composer> {
        &self.composer
    }

    /// The CSI plugin: Identity and Controller (create/delete, publish,
    /// list with published nodes, capacity, expansion, get volume with
    /// condition); Node (`NodeGetInfo` only) when opened with a node id.
    pub fn plugin(&self) -> Result<Plugin, BuildError> {
        let d = Arc::new(self.clone());
        let b = Plugin::builder(d.clone())
            .controller(d.clone())
            .provisioner(d.clone())
            .publisher(d.clone())
            .volume_lister(d.clone())
            .capacity_reporter(d.clone())
            .controller_expander(d.clone())
            .volume_getter(d.clone());
        match (self.node, &self.node_side) {
            (Some(_), Some(_)) => b
                .node(d.clone())
                .stager(d.clone())
                .node_stats(d.clone())
                .node_expander(d)
                .build(),
            (Some(_), None) => b.node(d).build(),
            (None, _) => b.build(),
        }
    }

    /// Runs blocking composer work (locks, fsync) off the async threads.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Composer) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, CsiError> {
        let c = self.composer.clone();
        tokio::task::spawn_blocking(move || op(&c))
            .await
            .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))?
            .map_err(CsiError::from)
    }
}

fn volume(v: &composer_core::composer::VolumeView) -> Result<Volume, CsiError> {
    let p = composer_core::Parameters::parse(&v.parameters).map_err(CsiError::from)?;
    let mut vol = Volume::try_new(v.id.clone(), v.capacity)?
        .with_context("layout", v.layout.kind.name())
        .with_context("transport", v.transport.name())
        .with_context("fsType", p.fs_type.name())
        .with_context("encrypt", p.encrypt.to_string());
    for t in &v.topology {
        vol = vol.with_accessible_topology(t.clone());
    }
    Ok(vol)
}

fn status(v: &composer_core::composer::VolumeView) -> Result<VolumeStatus, CsiError> {
    let condition = match &v.abnormal {
        Some(why) => VolumeCondition::abnormal(why.clone()),
        None => VolumeCondition::healthy("all member drives healthy"),
    };
    VolumeStatus::from_published(v.published.keys(), Some(condition))
}

/// Checks a capability this controller can serve: the access type only
/// (the node side formats with `fsType`); a mount `fs_type` must agree with
/// the StorageClass's `fsType`.
fn check_caps(
    caps: &[VolumeCapability],
    params: &BTreeMap<String, String>,
) -> Result<(bool, bool), CsiError> {
    let p = composer_core::Parameters::parse(params).map_err(CsiError::from)?;
    let block = caps.iter().any(|c| c.is_block());
    if block && caps.iter().any(|c| c.is_mount()) {
        return Err(CsiError::invalid(
            "volume_capabilities",
            "a volume is either block or mount, not both",
        ));
    }
    for (i, c) in caps.iter().enumerate() {
        if let Some(m) = c.mount_options()
            && let Some(fs) = m.fs_type.as_deref()
            && !fs.is_empty()
            && composer_core::params::FsType::from_name(fs) != Some(p.fs_type)
        {
            return Err(CsiError::invalid(
                format!("volume_capabilities[{i}].mount.fs_type"),
                format!(
                    "{fs:?} differs from the StorageClass's fsType {}",
                    p.fs_type.name()
                ),
            ));
        }
    }
    let single = caps.iter().all(|c| c.access_mode.is_single_node());
    Ok((block, single))
}

#[async_trait]
impl Identity for ComposerDriver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new(DRIVER_NAME)?, env!("CARGO_PKG_VERSION"))
    }

    /// Not ready while the state store cannot serve (etcd unreachable, or
    /// its watch reconnecting).
    async fn probe(&self, _: ProbeRequest) -> Result<ProbeResponse, CsiError> {
        match self.composer.ready() {
            Ok(()) => Ok(ProbeResponse::ready()),
            Err(e) => {
                tracing::warn!("probe: not ready: {e}");
                Ok(ProbeResponse::not_ready())
            }
        }
    }

    fn plugin_capabilities(&self) -> PluginCapabilities {
        PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
            | PluginCapabilities::VOLUME_EXPANSION_OFFLINE
    }
}

#[async_trait]
impl Controller for ComposerDriver {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        let id = req.volume_id.as_str().to_string();
        let v = self.run(move |c| c.get(&id)).await?;
        if !req.parameters.is_empty()
            && !composer_core::Parameters::same_class(&req.parameters, &v.parameters)
        {
            return Ok(ValidateVolumeCapabilitiesResponse::unsupported(
                "the parameters differ from the volume's",
            ));
        }
        for c in &req.volume_capabilities {
            if c.is_block() != v.block {
                return Ok(ValidateVolumeCapabilitiesResponse::unsupported(format!(
                    "the volume is a {} volume",
                    if v.block { "block" } else { "mount" }
                )));
            }
            if v.single_node && !c.access_mode.is_single_node() {
                return Ok(ValidateVolumeCapabilitiesResponse::unsupported(
                    "the volume was created for single-node access",
                ));
            }
        }
        if let Err(e) = check_caps(&req.volume_capabilities, &v.parameters) {
            return Ok(ValidateVolumeCapabilitiesResponse::unsupported(
                e.to_string(),
            ));
        }
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }

    fn feature_capabilities(&self) -> ControllerCapabilities {
        ControllerCapabilities::PUBLISH_READONLY
            | ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES
            | ControllerCapabilities::VOLUME_CONDITION
    }
}

#[async_trait]
impl Provisioner for ComposerDriver {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        if req.volume_content_source.is_some() {
            return Err(CsiError::invalid(
                "volume_content_source",
                "this composer creates empty volumes only (CLONE_VOLUME and snapshots are not advertised)",
            ));
        }
        if !req.mutable_parameters.is_empty() {
            return Err(CsiError::invalid(
                "mutable_parameters",
                "this composer has no mutable parameters",
            ));
        }
        let (block, single) = check_caps(&req.volume_capabilities, &req.parameters)?;
        let name = req.name.as_str().to_string();
        let range = req.capacity_range.unwrap_or_default();
        let params = req.parameters.clone();
        let topo = req.accessibility_requirements.clone();
        let v = self
            .run(move |c| c.create(&name, &params, range, block, single, topo.as_ref()))
            .await?;
        Ok(CreateVolumeResponse::new(volume(&v)?))
    }

    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let id = req.volume_id.as_str().to_string();
        let me = self.clone();
        self.run(move |c| {
            if let Ok(v) = c.get(&id)
                && v.published.is_empty()
            {
                me.wipe(&v.record)?;
            }
            c.delete(&id)?;
            me.sync_agent(c, &id)
        })
        .await?;
        Ok(DeleteVolumeResponse {})
    }
}

#[async_trait]
impl ControllerPublisher for ComposerDriver {
    async fn controller_publish_volume(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, CsiError> {
        let id = req.volume_id.as_str().to_string();
        let node = req.node_id.as_str().to_string();
        let cap = req.volume_capability.clone();
        let ro = req.readonly;
        let me = self.clone();
        let ctx = self
            .run(move |c| {
                let v = c.get(&id)?;
                if cap.is_block() != v.block {
                    return Err(Error::AlreadyExists(format!(
                        "volume {id} is a {} volume",
                        if v.block { "block" } else { "mount" }
                    )));
                }
                let mut ctx = c.publish(&id, &node, ro)?;
                if let Some(a) = &me.agent
                    && v.transport == composer_core::inventory::Transport::Nbd
                {
                    // The record first, then the agent: the agent's grants
                    // follow the records (re-synced from them at start-up),
                    // so a crash between the two steps leaves a record the
                    // next start grants, never a grant with no record. A
                    // refusal undoes a publication this call made, so the
                    // failed call changes nothing.
                    if let Err(e) = me.sync_agent(c, &id) {
                        // The agent's refusal is what the CO can act on, so
                        // it is the answer even when the undo fails. No
                        // re-sync then: a refused sync leaves the agent's
                        // grants as they were (JbodAgent::sync_volume), and
                        // a record published without its grant is the state
                        // a crash between the two steps leaves, which the
                        // CO's retry (publish or unpublish) settles.
                        if !v.published.contains_key(&node)
                            && let Err(undo) = c.unpublish(&id, Some(&node))
                        {
                            tracing::warn!(
                                volume = %id,
                                node = %node,
                                error = %undo,
                                "publish: the JBOD agent refused the volume and undoing its \
                                 publication failed: the record stays published without a grant \
                                 until the CO retries"
                            );
                        }
                        return Err(e);
                    }
                    ctx.insert(agent::CONTEXT_AGENT.into(), a.addr().to_string());
                }
                Ok(ctx)
            })
            .await?;
        Ok(ControllerPublishVolumeResponse {
            publish_context: ctx.into_iter().collect(),
        })
    }

    async fn controller_unpublish_volume(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse, CsiError> {
        let id = req.volume_id.as_str().to_string();
        let node = req.node_id.map(|n| n.as_str().to_string());
        let me = self.clone();
        self.run(move |c| {
            c.unpublish(&id, node.as_deref())?;
            me.sync_agent(c, &id)
        })
        .await?;
        Ok(ControllerUnpublishVolumeResponse {})
    }
}

#[async_trait]
impl VolumeLister for ComposerDriver {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let paging = Paging::volumes(&req)?;
        let page = self.run(move |c| Ok(c.list(&paging))).await?;
        let mut entries = Vec::with_capacity(page.entries.len());
        for v in &page.entries {
            entries.push(ListVolumesEntry {
                volume: volume(v)?,
                status: Some(status(v)?),
            });
        }
        Ok(ListVolumesResponse {
            entries,
            next_token: page.next_token,
        })
    }
}

#[async_trait]
impl CapacityReporter for ComposerDriver {
    async fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, CsiError> {
        let params = req.parameters.clone();
        let topo = req.accessible_topology.clone();
        let cap = self
            .run(move |c| c.capacity(&params, topo.as_ref()))
            .await?;
        Ok(GetCapacityResponse {
            available_capacity: cap.available,
            maximum_volume_size: Some(cap.maximum_volume_size),
            minimum_volume_size: cap.minimum_volume_size,
        })
    }
}

#[async_trait]
impl ControllerExpander for ComposerDriver {
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        let id = req.volume_id.as_str().to_string();
        let range = req.capacity_range;
        let (bytes, block) = self
            .run(move |c| {
                let b = c.expand(&id, range)?;
                Ok((b, c.get(&id)?.block))
            })
            .await?;
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: bytes,
            node_expansion_required: !block,
        })
    }
}

#[async_trait]
impl VolumeGetter for ComposerDriver {
    async fn controller_get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, CsiError> {
        let id = req.volume_id.as_str().to_string();
        let v = self.run(move |c| c.get(&id)).await?;
        let mut st = status(&v)?;
        // Where this process also serves the node side, the engine's own
        // view (degraded, rebuilding with progress) is the more precise one.
        if let Some(c) = self.node_side.as_ref().and_then(|s| s.condition(&v.id))
            && c.abnormal
        {
            st.volume_condition = Some(c);
        }
        Ok(ControllerGetVolumeResponse::new(volume(&v)?, st))
    }
}

#[async_trait]
impl Node for ComposerDriver {
    async fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        let side = self.side()?.clone();
        let id = req.volume_id.as_str().to_string();
        let rec = self
            .run({
                let id = id.clone();
                move |c| c.get(&id)
            })
            .await?;
        let staging = req
            .staging_target_path
            .as_ref()
            .ok_or_else(|| {
                CsiError::failed_precondition(
                    "staging_target_path is required: the composer stages volumes",
                )
            })?
            .as_path()
            .to_path_buf();
        let want_block = matches!(req.volume_capability.access_type, AccessType::Block);
        let flags = match &req.volume_capability.access_type {
            AccessType::Mount(m) => m.mount_flags.clone(),
            AccessType::Block => Vec::new(),
        };
        let target = req.target_path.as_path().to_path_buf();
        let ro = req.readonly;
        // In the volume's turn, from the check that it is staged to the
        // bind: an unstage of it waits, rather than take the staging apart
        // under a bind being made (or leave this bind over a path no longer
        // staged).
        tokio::task::spawn_blocking(move || -> Result<(), CsiError> {
            let _turn = side.turn(&rec.id);
            let (staged_at, block, dev) = side.staged_at(&rec.id).ok_or_else(|| {
                CsiError::failed_precondition(format!("volume {id} is not staged on this node"))
            })?;
            if staged_at != staging {
                return Err(CsiError::failed_precondition(format!(
                    "volume {id} is staged at {}, not {}",
                    quote_path(&staged_at),
                    quote_path(&staging)
                )));
            }
            if want_block != block {
                return Err(CsiError::failed_precondition(format!(
                    "volume {id} is staged for {} access",
                    if block { "block" } else { "mount" }
                )));
            }
            if !side.claim_target(&target, &id, ro)? {
                return Ok(());
            }
            #[cfg(test)]
            side.test_point("publish-bind", &id);
            let r = bind_target(&target, block, dev, staged_at, &flags, ro);
            if r.is_err() {
                side.release_target(&target);
            }
            r
        })
        .await
        .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))??;
        Ok(NodePublishVolumeResponse {})
    }

    async fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        let side = self.side()?.clone();
        let id = req.volume_id.as_str().to_string();
        let known = id.clone();
        self.run(move |c| c.get(&known)).await?;
        let target = req.target_path.as_path().to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), CsiError> {
            // In the volume's turn: what its publish binds does not change
            // (a stage or unstage of it) while the binds come off.
            let _turn = side.turn(&id);
            // Only this volume's binds come off; a mount stacked on them by someone else is
            // refused and stays, and the publish stays recorded.
            let own = side.unpublish_sources(&id, &target);
            node::unmount_own_at("target_path", &target, &own, &id)?;
            side.release_target(&target);
            if target.is_dir() {
                let _ = std::fs::remove_dir(&target);
            } else if target.exists() {
                let _ = std::fs::remove_file(&target);
            }
            Ok(())
        })
        .await
        .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))??;
        Ok(NodeUnpublishVolumeResponse {})
    }

    fn feature_capabilities(&self) -> NodeCapabilities {
        if self.node_side.is_some() {
            NodeCapabilities::VOLUME_CONDITION
        } else {
            NodeCapabilities::empty()
        }
    }

    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        let s = self
            .node
            .ok_or_else(|| CsiError::unimplemented("no node id configured"))?;
        let inv = self.composer.inventory();
        let srv = &inv.servers()[s as usize];
        Ok(NodeGetInfoResponse::try_new(srv.id.clone())?
            .with_max_volumes(srv.max_volumes as u64)
            .with_topology(convert::node_topology(inv, s)))
    }
}

#[async_trait]
impl NodeStager for ComposerDriver {
    async fn node_stage_volume(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, CsiError> {
        let side = self.side()?.clone();
        let node = self.node_id()?;
        let id = req.volume_id.as_str().to_string();
        let rec = self.run(move |c| c.get(&id)).await?;
        if !rec.published.contains_key(&node) {
            return Err(CsiError::failed_precondition(format!(
                "volume {} is not published to node {node} (ControllerPublishVolume first)",
                rec.id
            )));
        }
        let block = matches!(req.volume_capability.access_type, AccessType::Block);
        if block != rec.block && rec.block {
            return Err(CsiError::failed_precondition(format!(
                "volume {} was created for block access",
                rec.id
            )));
        }
        let p = composer_core::Parameters::parse(&rec.parameters).map_err(CsiError::from)?;
        // The capability's fs_type is read as the StorageClass's fsType is
        // (Kubernetes takes it from there), by the same rule.
        let (fs_type, flags) = match &req.volume_capability.access_type {
            AccessType::Mount(m) => match m.fs_type.as_deref().filter(|f| !f.is_empty()) {
                Some(f) => (
                    composer_core::params::FsType::from_name(f).ok_or_else(|| {
                        CsiError::invalid(
                            "volume_capability.mount.fs_type",
                            format!("must be ext4 or xfs, got {f:?}"),
                        )
                    })?,
                    m.mount_flags.clone(),
                ),
                None => (p.fs_type, m.mount_flags.clone()),
            },
            AccessType::Block => (p.fs_type, Vec::new()),
        };
        let fs = match fs_type {
            composer_core::params::FsType::Ext4 => csi_node::FsType::Ext4,
            composer_core::params::FsType::Xfs => csi_node::FsType::Xfs,
        };
        let staging = req.staging_target_path.as_path().to_path_buf();
        let secrets: BTreeMap<String, String> = req.secrets.expose().clone();
        let (me, ctx) = (self.clone(), req.publish_context.clone());
        // Off the runtime's threads: an `nbd` volume's agent is resolved,
        // and recorded only if the stage succeeds (a refused stage leaves
        // the agent the volume had). In the volume's turn: another stage or
        // unstage of it waits, so that a refused stage's undo never lands
        // over the agent another one committed.
        tokio::task::spawn_blocking(move || {
            let turn = side.turn(&rec.id);
            // Staged by this process already: the stage answers for the
            // volume as it is, reached from the agent it was staged from.
            let live = side.is_live(&rec.id);
            let remote = if rec.transport == composer_core::inventory::Transport::Nbd {
                Some(me.stage_over_nbd(&turn, &rec.record, &ctx)?)
            } else {
                None
            };
            turn.stage(&rec.record, &staging, block, fs, &flags, &secrets)?;
            if let Some(r) = remote.filter(|_| !live) {
                r.commit();
            }
            Ok::<_, CsiError>(())
        })
        .await
        .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))??;
        Ok(NodeStageVolumeResponse {})
    }

    async fn node_unstage_volume(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, CsiError> {
        let side = self.side()?.clone();
        let id = req.volume_id.as_str().to_string();
        self.run({
            let id = id.clone();
            move |c| c.get(&id)
        })
        .await?;
        let staging = req.staging_target_path.as_path().to_path_buf();
        tokio::task::spawn_blocking(move || side.unstage(&id, &staging))
            .await
            .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))??;
        Ok(NodeUnstageVolumeResponse {})
    }
}

#[async_trait]
impl NodeExpander for ComposerDriver {
    async fn node_expand_volume(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, CsiError> {
        let side = self.side()?.clone();
        let id = req.volume_id.as_str().to_string();
        let rec = self.run(move |c| c.get(&id)).await?;
        let path = req.volume_path.get()?.as_path().to_path_buf();
        if let Some(l) = req.capacity_range.as_ref().and_then(|r| r.limit_bytes)
            && rec.capacity > l
        {
            return Err(CsiError::out_of_range(format!(
                "capacity_range.limit_bytes {l} is less than the volume's {} bytes",
                rec.capacity
            )));
        }
        let (id, cap) = (rec.id.clone(), rec.capacity);
        let bytes = tokio::task::spawn_blocking(move || {
            // In the volume's turn: an unstage of it waits rather than take
            // the device apart under the resize.
            let _turn = side.turn(&id);
            let (staging, block, dev) = side.staged_at(&id).ok_or_else(|| {
                CsiError::failed_precondition(format!(
                    "volume {id} is not staged on this node: stage it before expanding"
                ))
            })?;
            if path != staging && !side.is_target_of(&path, &id) {
                return Err(CsiError::not_found(format!(
                    "volume_path {}: volume {id} is neither staged nor published there",
                    quote_path(&path)
                )));
            }
            // A LUKS2 mapping first takes in what its device gained.
            side.resize_encryption(&id)?;
            expand::expand_staged(&id, &dev, block, cap)
        })
        .await
        .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))??;
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: Some(bytes),
        })
    }
}

#[async_trait]
impl NodeVolumeStats for ComposerDriver {
    async fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError> {
        let side = self.side()?.clone();
        let id = req.volume_id.as_str().to_string();
        let rec = self.run(move |c| c.get(&id)).await?;
        let path = req.volume_path.get()?.as_path().to_path_buf();
        let Some((_, block, dev)) = side.staged_at(&rec.id) else {
            // Staged by an earlier node process whose data path died with
            // it: still staged as far as the CO knows, and abnormal (the
            // VOLUME_CONDITION node capability), not NOT_FOUND.
            if path.exists()
                && let Some(condition) = side.recovered_condition(&rec.id, &path)
            {
                return Ok(NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: Some(condition),
                });
            }
            return Err(CsiError::not_found(format!(
                "volume {} is not staged on this node",
                rec.id
            )));
        };
        if !path.exists() {
            return Err(CsiError::not_found(format!(
                "{} does not exist",
                quote_path(&path)
            )));
        }
        let condition = side.condition(&rec.id);
        let usage = tokio::task::spawn_blocking(move || -> Result<Vec<VolumeUsage>, CsiError> {
            if block {
                let total = csi_node::block_device_size(&dev).map_err(CsiError::from)?;
                return Ok(vec![VolumeUsage {
                    unit: UsageUnit::Bytes,
                    total,
                    available: 0,
                    used: 0,
                }]);
            }
            let s = csi_node::filesystem_stats(&path).map_err(CsiError::from)?;
            Ok(vec![
                VolumeUsage {
                    unit: UsageUnit::Bytes,
                    total: s.bytes_total,
                    available: s.bytes_available,
                    used: s.bytes_used,
                },
                VolumeUsage {
                    unit: UsageUnit::Inodes,
                    total: s.inodes_total,
                    available: s.inodes_free,
                    used: s.inodes_used,
                },
            ])
        })
        .await
        .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))??;
        Ok(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: condition,
        })
    }
}

impl ComposerDriver {
    /// An `nbd` volume is staged over NBD from the JBOD agent the publish
    /// context names, from this server's own address: recorded until the
    /// returned record is dropped uncommitted.
    fn stage_over_nbd<'a>(
        &self,
        turn: &'a node::Turn<'_>,
        rec: &composer_core::store::VolumeRecord,
        ctx: &Map,
    ) -> Result<node::RemoteRecorded<'a>, CsiError> {
        let agent = ctx.get(agent::CONTEXT_AGENT).ok_or_else(|| {
            CsiError::failed_precondition(format!(
                "volume {} uses the nbd transport but its publish context names no JBOD agent \
                 ({}; the controller runs one with --jbod-agent)",
                rec.id,
                agent::CONTEXT_AGENT
            ))
        })?;
        let source = self
            .node
            .and_then(agent::server_address)
            .ok_or_else(|| CsiError::internal("this server has no NBD source address"))?;
        turn.record_remote(agent, source)
    }

    fn side(&self) -> Result<&Arc<node::NodeSide>, CsiError> {
        self.node_side
            .as_ref()
            .ok_or_else(|| CsiError::unimplemented("the composer's node side is not enabled on this server (it needs a node id and a data directory)"))
    }

    fn node_id(&self) -> Result<String, CsiError> {
        let s = self
            .node
            .ok_or_else(|| CsiError::unimplemented("no node id configured"))?;
        Ok(self.composer.inventory().servers()[s as usize].id.clone())
    }
}

/// Binds a publish's `target` to the staged volume: its device for block
/// access, its staging path for mount access.
fn bind_target(
    target: &std::path::Path,
    block: bool,
    dev: std::path::PathBuf,
    staged_at: std::path::PathBuf,
    flags: &[String],
    ro: bool,
) -> Result<(), CsiError> {
    if csi_node::is_mount_point(target).unwrap_or(false) {
        return Err(CsiError::already_exists(format!(
            "{} is already a mount point",
            quote_path(target)
        )));
    }
    let source = if block {
        if !target.exists() {
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(|e| CsiError::internal(e.to_string()))?;
            }
            std::fs::File::create(target).map_err(|e| CsiError::internal(e.to_string()))?;
        }
        dev
    } else {
        std::fs::create_dir_all(target).map_err(|e| CsiError::internal(e.to_string()))?;
        staged_at
    };
    let opts = csi_node::MountOptions::parse(flags).map_err(CsiError::from)?;
    csi_node::bind_mount(&source, target, &opts, ro).map_err(CsiError::from)
}

/// A `CreateVolume` request for a single-node block volume of at least
/// `required_bytes` with StorageClass parameters `params` (for tests, tools
/// and benchmarks).
pub fn create_request(
    name: &str,
    params: &[(&str, &str)],
    required_bytes: u64,
) -> Result<CreateVolumeRequest, CsiError> {
    Ok(CreateVolumeRequest {
        name: VolumeName::new(name)?,
        capacity_range: Some(CapacityRange::new(Some(required_bytes), None)?),
        volume_capabilities: vec![VolumeCapability::block(AccessMode::SingleNodeWriter)],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secrets: Secrets::default(),
        volume_content_source: None,
        accessibility_requirements: None,
        mutable_parameters: Map::new(),
    })
}

/// A `DeleteVolume` request.
pub fn delete_request(id: &str) -> Result<DeleteVolumeRequest, CsiError> {
    Ok(DeleteVolumeRequest {
        volume_id: VolumeId::new(id)?,
        secrets: Secrets::default(),
    })
}

/// Serves the driver on `endpoint` until `shutdown` completes.
pub async fn serve(
    driver: &ComposerDriver,
    endpoint: &str,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    serve_with_options(driver, endpoint, shutdown, Default::default()).await
}

/// [`serve`] with explicit server options (metrics address, call timeout, …).
pub async fn serve_with_options(
    driver: &ComposerDriver,
    endpoint: &str,
    shutdown: impl std::future::Future<Output = ()> + Send,
    options: csi_types::server::ServeOptions,
) -> Result<(), String> {
    let plugin = driver.plugin().map_err(|e| e.to_string())?;
    csi_types::server::serve_with_options(plugin, endpoint, shutdown, options)
        .await
        .map_err(|e| e.to_string())
}

/// [`serve_with_options`] on a TCP listener bound already: `composer serve` binds its
/// `--endpoint` before it opens the state, so that no other process takes the port in between.
/// Each connection gets what [`csi_types::server::Server::serve`] gives one (`TCP_NODELAY`
/// included).
pub async fn serve_listener_with_options(
    driver: &ComposerDriver,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    options: csi_types::server::ServeOptions,
) -> Result<(), String> {
    use tokio_stream::StreamExt;
    let plugin = driver.plugin().map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| format!("serving on {addr}: {e}"))?;
    tracing::info!(endpoint = %format!("tcp://{addr}"), "serving CSI");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    csi_types::server::Server::new(plugin)
        .options(options)
        .serve_with_incoming(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(endpoint = %format!("tcp://{addr}"), "stopped");
    Ok(())
}
