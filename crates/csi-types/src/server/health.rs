//! The standard gRPC health service (`grpc.health.v1.Health`) next to CSI,
//! answering from the plugin's own readiness: each `Check` calls `Probe`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::api::RawCsi;
use crate::proto;

/// How often `Watch` asks `Probe` again.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The service names a health check may ask about: `""` (the server as a
/// whole) and the CSI services, all answered by the plugin's readiness.
const SERVICES: [&str; 6] = [
    "",
    "csi.v1.Identity",
    "csi.v1.Controller",
    "csi.v1.GroupController",
    "csi.v1.Node",
    "csi.v1.SnapshotMetadata",
];

/// The health service over one plugin. `stopping` turns true when the
/// server starts to shut down: open `Watch` streams end then, or the
/// graceful drain would wait for them for ever.
pub(crate) struct ProbeHealth {
    pub(crate) api: Arc<dyn RawCsi>,
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
}

/// `SERVING` when `Probe` answers ready (or does not say), `NOT_SERVING`
/// when it answers not ready or fails.
async fn readiness(api: &dyn RawCsi) -> ServingStatus {
    match api.raw_probe(proto::ProbeRequest {}).await {
        Ok(r) if r.ready == Some(false) => ServingStatus::NotServing,
        Ok(_) => ServingStatus::Serving,
        Err(e) => {
            tracing::debug!(error = %e, "health: Probe failed");
            ServingStatus::NotServing
        }
    }
}

fn known(service: &str) -> Result<(), Status> {
    if SERVICES.contains(&service) {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "unknown service {service:?}: health is reported for \"\" and the csi.v1 services"
        )))
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for ProbeHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        known(&request.get_ref().service)?;
        Ok(Response::new(answer(readiness(&*self.api).await)))
    }

    type WatchStream = WatchStream;

    /// The current status at once, then each change, asking `Probe` every
    /// [`WATCH_INTERVAL`].
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        known(&request.get_ref().service)?;
        let state = (Arc::clone(&self.api), self.stopping.clone(), None);
        let stream = futures::stream::unfold(state, |(api, mut stopping, last)| async move {
            loop {
                if last.is_some() {
                    tokio::select! {
                        () = tokio::time::sleep(WATCH_INTERVAL) => {}
                        _ = stopping.wait_for(|s| *s) => return None,
                    }
                }
                let now = readiness(&*api).await;
                if Some(now) != last {
                    return Some((Ok(answer(now)), (api, stopping, Some(now))));
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
