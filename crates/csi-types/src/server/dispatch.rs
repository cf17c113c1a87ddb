//! The innermost service of the server: each call handed to its CSI (or
//! health) service by the service name in its path.
//!
//! A gRPC path is `/package.Service/Method`, and the server has six fixed
//! services, so the service is found by comparing the name between the two
//! slashes; the generated service then matches the method as before. tonic's
//! own `Routes` would do the same through an `axum` router, which per call
//! builds the path's parameters (allocating), wraps the request and the
//! response bodies once more and clones the matched route: about 5.4k
//! instructions per call (callgrind), for no answer that differs. An unknown
//! service answers `UNIMPLEMENTED` naming the services served; an unknown
//! method of a known service, the generated service's standard
//! `UNIMPLEMENTED`, as through `Routes`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower::Service;

use super::health::ProbeHealth;
use super::{Services, unknown_method};
use crate::api::RawCsi;
use crate::proto::{
    controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer, node_server::NodeServer,
    snapshot_metadata_server::SnapshotMetadataServer,
};

type Health = tonic_health::pb::health_server::HealthServer<ProbeHealth>;

/// The services, built once; [`Dispatch`] shares them.
pub(crate) struct Servers {
    pub(crate) identity: IdentityServer<Services>,
    pub(crate) controller: ControllerServer<Services>,
    pub(crate) group_controller: GroupControllerServer<Services>,
    pub(crate) node: NodeServer<Services>,
    pub(crate) snapshot_metadata: SnapshotMetadataServer<Services>,
    pub(crate) health: Option<Health>,
}

impl Servers {
    /// The CSI services over `api` with `limit` as the largest message
    /// decoded or encoded, and the health service when `health` is given
    /// (the server's stopping flag).
    pub(crate) fn new(
        api: Arc<dyn RawCsi>,
        limit: usize,
        health: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Servers {
        let health = health.map(|stopping| {
            Health::new(ProbeHealth {
                api: Arc::clone(&api),
                stopping,
            })
        });
        let s = Services(api);
        macro_rules! limited {
            ($server:ident) => {
                $server::new(s.clone())
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit)
            };
        }
        Servers {
            identity: limited!(IdentityServer),
            controller: limited!(ControllerServer),
            group_controller: limited!(GroupControllerServer),
            node: limited!(NodeServer),
            snapshot_metadata: limited!(SnapshotMetadataServer),
            health,
        }
    }
}

/// See the module documentation. Cloned for every call by the HTTP/2
/// server, so it is one `Arc`.
#[derive(Clone)]
pub(crate) struct Dispatch(Arc<Servers>);

impl Dispatch {
    pub(crate) fn new(servers: Servers) -> Dispatch {
        Dispatch(Arc::new(servers))
    }
}

/// Calls a generated service. They are always ready (their `poll_ready`
/// answers `Ready` without looking at anything), and a call clones one `Arc`.
fn call<S>(service: &S, req: http::Request<Body>) -> BoxFuture<http::Response<Body>, Infallible>
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxFuture<http::Response<Body>, Infallible>,
        > + Clone,
{
    service.clone().call(req)
}

impl Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let s = &*self.0;
        // `/package.Service/Method` -> `package.Service`.
        let service = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        if service == IdentityServer::<Services>::NAME {
            call(&s.identity, req)
        } else if service == ControllerServer::<Services>::NAME {
            call(&s.controller, req)
        } else if service == NodeServer::<Services>::NAME {
            call(&s.node, req)
        } else if service == GroupControllerServer::<Services>::NAME {
            call(&s.group_controller, req)
        } else if service == SnapshotMetadataServer::<Services>::NAME {
            call(&s.snapshot_metadata, req)
        } else if let Some(health) = s.health.as_ref().filter(|_| service == Health::NAME) {
            call(health, req)
        } else {
            let answer = unknown_method(req.uri().path());
            Box::pin(std::future::ready(Ok(answer)))
        }
    }
}
