//! The driver and requests shared by the middleware
//! bench (`benches/middleware.rs`) and the callgrind program
//! (`examples/profile_cycles.rs`, which includes this file by path), so
//! that both measure the same cycle.
//!
//! The driver does next to nothing: it answers CreateVolume with a volume
//! shaped like the `local` driver's (an id, a size, one `volume_context`
//! entry and one topology segment), so what is measured is the SDK's share.

use std::sync::Arc;

use async_trait::async_trait;
use csi_types::capabilities::PluginCapabilities;
use csi_types::controller::{
    CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};
use csi_types::identity::{GetPluginInfoRequest, GetPluginInfoResponse};
use csi_types::ids::{PluginName, VolumeId};
use csi_types::prelude::*;
use csi_types::types::{Topology, Volume};
use csi_types::{RawCsi, proto};

struct Driver {
    topology: Topology,
}

#[async_trait]
impl Identity for Driver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("bench.csi.example.com")?, "1.0.0")
    }

    /// Its volumes carry topology, which the spec allows only with this.
    fn plugin_capabilities(&self) -> PluginCapabilities {
        PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
    }
}

#[async_trait]
impl Controller for Driver {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }
}

#[async_trait]
impl Provisioner for Driver {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let id = VolumeId::new(format!("vol-{}", req.name.as_str()))?;
        let size = req
            .capacity_range
            .and_then(|r| r.required_bytes)
            .unwrap_or(4096);
        Ok(CreateVolumeResponse::new(
            Volume::new(id, size)
                .with_context("kind", "mount")
                .with_accessible_topology(self.topology.clone()),
        ))
    }

    async fn delete_volume(
        &self,
        _: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        Ok(DeleteVolumeResponse {})
    }
}

/// The Plugin over the driver: identity, controller and provisioner.
pub fn plugin() -> Plugin {
    let driver = Arc::new(Driver {
        topology: Topology::new([("topology.local.csi.example.com/node", "node-1")])
            .expect("a valid topology"),
    });
    Plugin::builder(driver.clone())
        .controller(driver.clone())
        .provisioner(driver)
        .build()
        .expect("a valid plugin")
}

/// One CreateVolume + DeleteVolume cycle; `n` makes the volume's name new.
pub async fn cycle(api: &dyn RawCsi, n: u64) {
    let volume = api
        .raw_create_volume(proto::CreateVolumeRequest::single_node_mount(
            format!("pvc-{n}"),
            4096,
        ))
        .await
        .expect("CreateVolume succeeds")
        .volume
        .expect("a volume");
    api.raw_delete_volume(proto::DeleteVolumeRequest {
        volume_id: volume.volume_id,
        secrets: Default::default(),
    })
    .await
    .expect("DeleteVolume succeeds");
}
