use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use csi_types::controller::{
    CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
    ListVolumesEntry, ListVolumesRequest, ListVolumesResponse, ValidateVolumeCapabilitiesRequest,
    ValidateVolumeCapabilitiesResponse, VolumeStatus,
};
use csi_types::identity::{GetPluginInfoRequest, GetPluginInfoResponse};
use csi_types::ids::{NodeId, PluginName, VolumeId, VolumeName};
use csi_types::node::{
    NodeGetInfoRequest, NodeGetInfoResponse, NodePublishVolumeRequest, NodePublishVolumeResponse,
    NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
};
use csi_types::paging::Paging;
use csi_types::prelude::*;
use csi_types::redact::Secrets;
use csi_types::types::{AccessMode, CapacityRange, Map, Volume, VolumeCapability};

/// Where a volume is published: each target path, and whether it is read-only there.
type Targets = BTreeMap<PathBuf, bool>;

/// Volumes by id: size and targets. The CO's name is the idempotency key, and this driver uses
/// it as the id too: both are at most 128 bytes, so any valid name is a valid id (`vol-` and a
/// 128-byte name would not be).
#[derive(Default)]
struct Tiny {
    volumes: Mutex<BTreeMap<String, (u64, Targets)>>,
}

#[async_trait]
impl Identity for Tiny {
    async fn get_plugin_info(&self, _: GetPluginInfoRequest) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("tiny.csi.example.com")?, "0.1.0")
    }
}

#[async_trait]
impl Controller for Tiny {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        if !self.volumes.lock().unwrap().contains_key(req.volume_id.as_str()) {
            return Err(CsiError::not_found(format!("volume {} does not exist", req.volume_id)));
        }
        if req.volume_capabilities.iter().any(VolumeCapability::is_block) {
            return Ok(ValidateVolumeCapabilitiesResponse::default()); // not confirmed
        }
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }
}

#[async_trait]
impl Provisioner for Tiny {
    async fn create_volume(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse, CsiError> {
        if req.volume_capabilities.iter().any(VolumeCapability::is_block) {
            return Err(CsiError::invalid("volume_capabilities", "this driver serves mount volumes only"));
        }
        let range = req.capacity_range.unwrap_or_default();
        let size = range
            .choose(1 << 30, 4096)
            .ok_or_else(|| CsiError::out_of_range("no multiple of 4 KiB fits capacity_range"))?;
        let id = VolumeId::new(req.name.as_str())?;
        let mut vols = self.volumes.lock().unwrap();
        let (kept, _) = vols.entry(id.to_string()).or_insert((size, Targets::new()));
        if !range.contains(*kept) {
            return Err(CsiError::already_exists(format!("{} exists with {kept} bytes", req.name)));
        }
        Ok(CreateVolumeResponse::new(Volume::new(id, *kept)))
    }

    async fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse, CsiError> {
        self.volumes.lock().unwrap().remove(req.volume_id.as_str()); // a missing one is OK
        Ok(DeleteVolumeResponse {})
    }
}

#[async_trait]
impl VolumeLister for Tiny {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let vols = self.volumes.lock().unwrap();
        let page = Paging::volumes(&req)?.page(vols.iter());
        let entries = page
            .entries
            .into_iter()
            .map(|(id, (size, targets))| {
                let nodes = if targets.is_empty() { vec![] } else { vec!["node-1"] };
                Ok(ListVolumesEntry {
                    volume: Volume::new(VolumeId::new(id.as_str())?, *size),
                    status: Some(VolumeStatus::from_published(nodes, None)?),
                })
            })
            .collect::<Result<_, CsiError>>()?;
        Ok(ListVolumesResponse { entries, next_token: page.next_token })
    }
}

#[async_trait]
impl Node for Tiny {
    async fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        let mut vols = self.volumes.lock().unwrap();
        let (_, targets) = vols
            .get_mut(req.volume_id.as_str())
            .ok_or_else(|| CsiError::not_found(format!("volume {} does not exist", req.volume_id)))?;
        let target = req.target_path.as_path();
        match targets.get(target) {
            Some(&readonly) if readonly != req.readonly => {
                return Err(CsiError::already_exists(format!(
                    "volume {} is published at {} with readonly={readonly}",
                    req.volume_id,
                    target.display()
                )));
            }
            Some(_) => return Ok(NodePublishVolumeResponse {}), // published already: idempotent
            None => {}
        }
        // A real driver mounts the volume at the target here.
        std::fs::create_dir_all(target).map_err(|e| CsiError::internal(format!("{}: {e}", target.display())))?;
        if req.readonly {
            let no_write = std::fs::Permissions::from_mode(0o555);
            std::fs::set_permissions(target, no_write).map_err(|e| CsiError::internal(e.to_string()))?;
        }
        targets.insert(target.to_path_buf(), req.readonly);
        Ok(NodePublishVolumeResponse {})
    }

    async fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        let mut vols = self.volumes.lock().unwrap();
        let (_, targets) = vols
            .get_mut(req.volume_id.as_str())
            .ok_or_else(|| CsiError::not_found(format!("volume {} does not exist", req.volume_id)))?;
        let target = req.target_path.as_path();
        if targets.remove(target).is_some() {
            // A real driver unmounts here; then the target goes.
            std::fs::remove_dir(target).map_err(|e| CsiError::internal(format!("{}: {e}", target.display())))?;
        }
        Ok(NodeUnpublishVolumeResponse {})
    }

    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        Ok(NodeGetInfoResponse::new(NodeId::new("node-1")?))
    }
}

