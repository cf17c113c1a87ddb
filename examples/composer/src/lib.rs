//! The composer controller: CSI Identity and Controller services over
//! [`composer_core::Composer`], and an admin protocol on a second socket.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), csi_types::CsiError> {
//! use composer::ComposerDriver;
//! use composer_core::{Inventory, MemStore};
//! use csi_types::*;
//! use std::sync::Arc;
//!
//! let driver = ComposerDriver::open(Inventory::default_inventory(), Arc::new(MemStore::default()), None).unwrap();
//! let plugin = driver.plugin()?;
//! let req = composer::create_request("pvc-1", &[("type", "slice")], 10 << 30)?;
//! let vol = Csi::create_volume(&plugin, req).await?.volume;
//! assert_eq!(vol.capacity_bytes, 10 << 30);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! None.

pub mod admin;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use composer_core::{Composer, Error, Inventory, Store, convert};
use csi_types::*;

/// The plugin name reported by `GetPluginInfo`.
pub const DRIVER_NAME: &str = "composer.csi.example.com";

/// The composer's CSI driver. Cheap to clone.
#[derive(Clone)]
pub struct ComposerDriver {
    composer: Arc<Composer>,
    node: Option<u32>,
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
        })
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
        match self.node {
            Some(_) => b.node(d).build(),
            None => b.build(),
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
    let mut vol = Volume::new(VolumeId::new(v.id.clone())?, v.capacity)
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
    Ok(VolumeStatus {
        published_node_ids: v
            .published
            .keys()
            .map(|n| NodeId::new(n.clone()))
            .collect::<Result<_, _>>()?,
        volume_condition: Some(match &v.abnormal {
            Some(why) => VolumeCondition::abnormal(why.clone()),
            None => VolumeCondition::healthy("all member drives healthy"),
        }),
    })
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
            && fs != p.fs_type.name()
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
        if !req.parameters.is_empty() && req.parameters != v.parameters {
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
        self.run(move |c| c.delete(&id)).await?;
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
        let ctx = self
            .run(move |c| {
                let v = c.get(&id)?;
                if cap.is_block() != v.block {
                    return Err(Error::AlreadyExists(format!(
                        "volume {id} is a {} volume",
                        if v.block { "block" } else { "mount" }
                    )));
                }
                c.publish(&id, &node, ro)
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
        self.run(move |c| c.unpublish(&id, node.as_deref())).await?;
        Ok(ControllerUnpublishVolumeResponse {})
    }
}

#[async_trait]
impl VolumeLister for ComposerDriver {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let (page, next) = self
            .run(move |c| c.list(req.max_entries, req.starting_token.as_deref()))
            .await?;
        let mut entries = Vec::with_capacity(page.len());
        for v in &page {
            entries.push(ListVolumesEntry {
                volume: volume(v)?,
                status: Some(status(v)?),
            });
        }
        Ok(ListVolumesResponse {
            entries,
            next_token: next,
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
        Ok(ControllerGetVolumeResponse::new(volume(&v)?, status(&v)?))
    }
}

#[async_trait]
impl Node for ComposerDriver {
    async fn node_publish_volume(
        &self,
        _: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        Err(CsiError::unimplemented(
            "the composer's node side (NodeStage/NodePublish) is not implemented yet",
        ))
    }

    async fn node_unpublish_volume(
        &self,
        _: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        Err(CsiError::unimplemented(
            "the composer's node side (NodeStage/NodePublish) is not implemented yet",
        ))
    }

    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        let s = self
            .node
            .ok_or_else(|| CsiError::unimplemented("no node id configured"))?;
        let inv = self.composer.inventory();
        let srv = &inv.servers()[s as usize];
        Ok(NodeGetInfoResponse::new(NodeId::new(srv.id.clone())?)
            .with_max_volumes(srv.max_volumes as u64)
            .with_topology(convert::node_topology(inv, s)))
    }
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
    let plugin = driver.plugin().map_err(|e| e.to_string())?;
    csi_types::server::serve(plugin, endpoint, shutdown)
        .await
        .map_err(|e| e.to_string())
}
