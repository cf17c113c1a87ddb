//! Serving a [`RawCsi`] (usually a [`crate::Plugin`]) over gRPC with tonic
//! (feature `server`).
//!
//! All five CSI services are registered; a service the plugin does not offer
//! answers `UNIMPLEMENTED` with a message saying so, and so does a method
//! that no CSI service has. On a unix socket a stale socket file left by a
//! dead process is removed before binding (a live one is an error), and the
//! socket file is removed again after a graceful shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};

use crate::api::RawCsi;
use crate::endpoint::{Endpoint, EndpointError};
use crate::proto;

mod authority;
mod conn;
mod hpack;
mod huffman_table;

/// How the server treats connections and messages. `Default` gives the
/// values documented on each field.
///
/// ```
/// use std::time::Duration;
/// let mut options = csi_types::server::ServeOptions::default();
/// options.idle_timeout = Some(Duration::from_secs(60));
/// options.max_message_size = 16 << 20;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The largest request and response message, in bytes; a larger one is
    /// answered `RESOURCE_EXHAUSTED` (gRPC's convention). Default 4 MiB,
    /// gRPC's usual limit.
    pub max_message_size: usize,
    /// A connection with no call in flight for this long is closed; clients
    /// reconnect on their next call. `None` keeps idle connections open for
    /// ever. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// How often the server pings a connection (HTTP/2 PING) to find dead
    /// peers; `None` never pings. Default 60 seconds.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    /// Default 20 seconds.
    pub keepalive_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_message_size: 4 << 20,
            idle_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The endpoint string is malformed.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Another process is serving on the unix socket.
    #[error("{0}: another process is listening on this socket")]
    SocketInUse(PathBuf),
    /// The path exists and is not a socket; it is not removed.
    #[error("{0}: exists and is not a unix socket")]
    NotASocket(PathBuf),
    /// Binding or preparing the listener failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The tonic services over one shared [`RawCsi`].
#[derive(Clone)]
struct Services(Arc<dyn RawCsi>);

macro_rules! unary_services {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        $(
            #[tonic::async_trait]
            impl proto::$server::$service for Services {
                $(
                    async fn $method(&self, request: Request<proto::$req>) -> Result<Response<proto::$resp>, Status> {
                        RawCsi::$raw(&*self.0, request.into_inner())
                            .await
                            .map(Response::new)
                            .map_err(Status::from)
                    }
                )*
            }
        )*
    };
}

crate::api::for_each_unary_rpc!(unary_services);

type StatusStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl proto::snapshot_metadata_server::SnapshotMetadata for Services {
    type GetMetadataAllocatedStream = StatusStream<proto::GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = StatusStream<proto::GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<proto::GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let stream = RawCsi::raw_get_metadata_allocated(&*self.0, request.into_inner()).await?;
        Ok(Response::new(
            stream.map(|r| r.map_err(Status::from)).boxed(),
        ))
    }

    async fn get_metadata_delta(
        &self,
        request: Request<proto::GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let stream = RawCsi::raw_get_metadata_delta(&*self.0, request.into_inner()).await?;
        Ok(Response::new(
            stream.map(|r| r.map_err(Status::from)).boxed(),
        ))
    }
}

/// A request for a path that no CSI service has.
async fn unknown_method(uri: http::Uri) -> http::Response<tonic::body::Body> {
    Status::unimplemented(format!(
        "unknown method {}: this endpoint serves the csi.v1 services Identity, Controller, GroupController, Node and SnapshotMetadata",
        uri.path()
    ))
    .into_http()
}

/// The tonic routes for all five CSI services over `api`, with tonic's
/// default message size limit (4 MiB).
pub fn routes(api: Arc<dyn RawCsi>) -> tonic::service::Routes {
    routes_with_limit(api, ServeOptions::default().max_message_size)
}

/// The routes, with `limit` as the largest message decoded or encoded.
fn routes_with_limit(api: Arc<dyn RawCsi>, limit: usize) -> tonic::service::Routes {
    let s = Services(api);
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit)
        };
    }
    let mut routes = tonic::service::Routes::new(limited!(
        proto::identity_server::IdentityServer::new(s.clone())
    ))
    .add_service(limited!(proto::controller_server::ControllerServer::new(
        s.clone()
    )))
    .add_service(limited!(
        proto::group_controller_server::GroupControllerServer::new(s.clone())
    ))
    .add_service(limited!(proto::node_server::NodeServer::new(s.clone())))
    .add_service(limited!(
        proto::snapshot_metadata_server::SnapshotMetadataServer::new(s)
    ));
    let router = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = router.fallback(unknown_method);
    routes
}

/// Removes a socket file left by a process that is gone; refuses a live one.
fn prepare_socket(path: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let io = |context: String| move |source| ServeError::Io { context, source };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::SocketInUse(path.to_path_buf()));
            }
            tracing::info!(path = %path.display(), "removing a stale socket");
            std::fs::remove_file(path)
                .map_err(io(format!("removing stale socket {}", path.display())))?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("inspecting {}", path.display()))(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    Ok(())
}

/// Serves `api` on `endpoint` (`unix:///path` or `tcp://ip:port`) until
/// `shutdown` completes, then drains in-flight calls and returns. Uses
/// [`ServeOptions::default`]; see [`serve_with_options`].
///
/// ```no_run
/// # async fn run(plugin: csi_types::Plugin) -> Result<(), csi_types::server::ServeError> {
/// csi_types::server::serve(plugin, "unix:///run/csi/csi.sock", csi_types::server::shutdown_signal()).await
/// # }
/// ```
pub async fn serve(
    api: impl RawCsi + 'static,
    endpoint: &str,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_options(api, endpoint, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit [`ServeOptions`].
///
/// Every connection accepts the `:authority` values that gRPC clients send
/// over unix sockets (the socket path, raw or percent-encoded, or nothing),
/// which the HTTP/2 layer alone would refuse: such a value is replaced by
/// `localhost` before the HTTP/2 layer sees it. Nothing else a client
/// sends is changed.
///
/// ```no_run
/// # async fn run(plugin: csi_types::Plugin) -> Result<(), csi_types::server::ServeError> {
/// use csi_types::server::{serve_with_options, shutdown_signal, ServeOptions};
/// let mut options = ServeOptions::default();
/// options.idle_timeout = None;
/// serve_with_options(plugin, "unix:///run/csi/csi.sock", shutdown_signal(), options).await
/// # }
/// ```
pub async fn serve_with_options(
    api: impl RawCsi + 'static,
    endpoint: &str,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let endpoint: Endpoint = endpoint.parse()?;
    let routes = routes_with_limit(Arc::new(api), options.max_message_size);
    let idle = options.idle_timeout;
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(options.keepalive_interval)
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .layer(conn::CallLayer)
        .add_routes(routes);
    match &endpoint {
        Endpoint::Unix(path) => {
            prepare_socket(path)?;
            let listener =
                tokio::net::UnixListener::bind(path).map_err(|source| ServeError::Io {
                    context: format!("binding {}", path.display()),
                    source,
                })?;
            tracing::info!(%endpoint, "serving CSI");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
                .map_ok(move |s| conn::ServerConn::new(s, idle));
            let result = server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Io {
                    context: format!("binding {addr}"),
                    source,
                })?;
            tracing::info!(%endpoint, "serving CSI");
            let incoming =
                tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(move |s| {
                    let _ = s.set_nodelay(true);
                    conn::ServerConn::new(s, idle)
                });
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    tracing::info!(%endpoint, "stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT: the shutdown signal for [`serve`].
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; waiting for SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
