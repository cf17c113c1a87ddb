//! CreateVolume + DeleteVolume cycles through the SDK's serving path, for
//! counting instructions per cycle with `valgrind --tool=callgrind`.
//!
//! The driver does next to nothing (it answers with a volume shaped like the
//! `local` driver's: an id, a size, one `volume_context` entry and one
//! topology segment), so what is counted is the SDK's share of a cycle:
//!
//! - `direct`: the calls go to the [`Plugin`] in process, through
//!   [`RawCsi`] with wire requests (validation, the operation guard, the
//!   response check, the span);
//! - `duplex`: the calls go over gRPC on an in-memory connection, with
//!   `client::Client` and the server on one current-thread runtime (the
//!   server's whole stack: the `:authority` rewriter, HTTP/2, the dispatch
//!   to the CSI services and the Plugin; the client's side is counted too).
//!
//! ```text
//! cargo build --release -p csi-types --example profile_cycles
//! valgrind --tool=callgrind target/release/examples/profile_cycles duplex 50 600
//! valgrind --tool=callgrind target/release/examples/profile_cycles duplex 50 100
//! ```
//!
//! The difference of the two totals divided by 500 is the cost of one cycle,
//! without the start-up. The count does not depend on the machine's load.

use std::sync::Arc;

use async_trait::async_trait;
use csi_types::controller::{
    CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};
use csi_types::identity::{GetPluginInfoRequest, GetPluginInfoResponse};
use csi_types::ids::{PluginName, VolumeId};
use csi_types::prelude::*;
use csi_types::types::{Topology, Volume};
use csi_types::{RawCsi, client::Client, proto, server::Server};
use futures::StreamExt;

struct Driver {
    topology: Topology,
}

#[async_trait]
impl Identity for Driver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("profile.csi.example.com")?, "1.0.0")
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

fn plugin() -> Plugin {
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

/// The request the `local` driver's benchmark sends.
fn create_request(name: String) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name,
        capacity_range: Some(proto::CapacityRange {
            required_bytes: 4096,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![proto::VolumeCapability {
            access_type: Some(proto::volume_capability::AccessType::Mount(
                proto::volume_capability::MountVolume::default(),
            )),
            access_mode: Some(proto::volume_capability::AccessMode {
                mode: proto::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        }],
        ..Default::default()
    }
}

async fn cycles(api: &dyn RawCsi, from: usize, count: usize) {
    for i in from..from + count {
        let volume = api
            .raw_create_volume(create_request(format!("pvc-{i}")))
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
}

/// A server on one in-memory connection, and a client on it.
async fn duplex() -> Client {
    let (server_end, client_end) = tokio::io::duplex(1 << 20);
    let incoming = futures::stream::iter([Ok::<_, std::io::Error>(server_end)])
        .chain(futures::stream::pending());
    tokio::spawn(Server::new(plugin()).serve_with_incoming(incoming, std::future::pending()));
    let mut client_end = Some(client_end);
    let channel = tonic::transport::Endpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let io = client_end
                .take()
                .ok_or_else(|| std::io::Error::other("one connection only"));
            async move { io.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .expect("the in-memory connection");
    Client::from_channel(channel)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: profile_cycles direct|duplex WARMUP CYCLES";
    let [mode, warmup, count] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(warmup), Ok(count)) = (warmup.parse::<usize>(), count.parse::<usize>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let api: Box<dyn RawCsi> = match mode.as_str() {
            "direct" => Box::new(plugin()),
            "duplex" => Box::new(duplex().await),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        };
        cycles(&*api, 0, warmup).await;
        cycles(&*api, warmup, count).await;
    });
}
