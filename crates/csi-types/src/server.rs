//! Serving a [`RawCsi`] (usually a [`crate::Plugin`]) over gRPC with tonic
//! (feature `server`).
//!
//! All five CSI services are registered; a service the plugin does not offer
//! answers `UNIMPLEMENTED` with a message saying so, and so does a method
//! that no CSI service has. On a unix socket a stale socket file left by a
//! dead process is removed before binding (a live one is an error), the
//! socket's own directory is created if missing (not a chain of missing
//! directories, which is more likely a typo), and the socket file is removed
//! again after a graceful shutdown.
//!
//! [`Server`] is the seam for middleware: it serves the same stack as
//! [`serve`] with the driver author's own tower layers (authentication,
//! rate limits, tracing, an interceptor) wrapped around the CSI routes.
//! [`ServeOptions`] turns on what every plugin may want next to CSI: per-RPC
//! Prometheus metrics on an HTTP endpoint (`metrics_address`), a per-call
//! timeout answering `DEADLINE_EXCEEDED` (`call_timeout`; the client's
//! `grpc-timeout` is always honoured the same way) and the standard gRPC
//! health service reflecting `Probe` (`health`, on by default).
//!
//! `Server::serve_in_memory` (with feature `client`) serves that whole stack
//! in the process, without a socket, and hands back a connected
//! `client::Client`: the way to test a driver through gRPC.

use std::future::Future;
use std::net::SocketAddr;
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
mod dispatch;
mod health;
mod hpack;
mod huffman_table;
mod metrics;
mod stack;

pub use health::WATCH_INTERVAL as HEALTH_WATCH_INTERVAL;
pub use metrics::{DRIVER_NAME_LABEL, OPERATIONS_SECONDS};
/// The metrics crate the endpoint serves from: a driver registers its own
/// counters and histograms with this version (see [`Server::metrics_registry`]).
pub use prometheus_client;
pub use stack::{BoxError, HttpService};

/// How the server treats connections and messages. `Default` gives the
/// values documented on each field.
///
/// ```
/// use std::time::Duration;
/// let mut options = csi_types::server::ServeOptions::default();
/// options.idle_timeout = Some(Duration::from_secs(60));
/// options.max_message_size = 16 << 20;
/// ```
///
/// A duration beyond 99,999,999 hours (what `grpc-timeout` can carry) is
/// taken as that.
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
    /// Serve Prometheus metrics over HTTP at `http://ADDRESS/metrics`: the
    /// histogram [`OPERATIONS_SECONDS`] by `method_name` and
    /// `grpc_status_code`, as the Kubernetes CSI sidecars export it (its
    /// `_count` series counts the calls), each series labelled
    /// [`DRIVER_NAME_LABEL`] with the plugin's name, and the driver's own
    /// metrics ([`Server::metrics_registry`]). `None` (the default) serves none.
    pub metrics_address: Option<SocketAddr>,
    /// The longest a call may take before it is answered
    /// `DEADLINE_EXCEEDED` and the driver's future is dropped (which
    /// releases the call's operation guard). A shorter `grpc-timeout` sent
    /// by the client wins; it is honoured even when this is `None` (the
    /// default), answered up to 1 ms early.
    pub call_timeout: Option<Duration>,
    /// Serve `grpc.health.v1.Health` next to CSI: `Check` answers `SERVING`
    /// when the plugin's `Probe` answers ready (or does not say), and
    /// `NOT_SERVING` when it answers not ready or fails; `Watch` sends each
    /// change, asking `Probe` every [`HEALTH_WATCH_INTERVAL`]. Default on.
    pub health: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_message_size: 4 << 20,
            idle_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            metrics_address: None,
            call_timeout: None,
            health: true,
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
    /// Another process is serving on the unix socket; it is left to it.
    #[error("{0}: another process serves this socket; not taken")]
    SocketInUse(PathBuf),
    /// The path exists and is not a socket; it is not removed.
    #[error("{0}: exists and is not a socket; not removed")]
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
    /// The metrics carry the plugin's name, and `GetPluginInfo` did not give it.
    #[error("the metrics are labelled with the plugin's name, and GetPluginInfo failed: {0}")]
    PluginInfo(crate::CsiError),
    /// A metrics registry was given without `ServeOptions::metrics_address`:
    /// nothing would serve it.
    #[error(
        "a metrics registry was given but ServeOptions::metrics_address is not set, so nothing would serve it"
    )]
    RegistryWithoutAddress,
    /// The task of an in-memory server (`Server::serve_in_memory`) was
    /// cancelled before it returned: its tokio runtime is shutting down.
    #[error("the in-memory server's task was cancelled: its tokio runtime is shutting down")]
    Cancelled,
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
fn unknown_method(path: &str) -> http::Response<tonic::body::Body> {
    Status::unimplemented(format!(
        "unknown method {path}: this endpoint serves the csi.v1 services Identity, Controller, GroupController, Node and SnapshotMetadata (and grpc.health.v1.Health when health is on)"
    ))
    .into_http()
}

/// The tonic routes for all five CSI services over `api`, with tonic's
/// default message size limit (4 MiB), for serving them with tonic's own
/// server next to other services. ([`Server`] dispatches on the path
/// itself, with the same answers.)
pub fn routes(api: Arc<dyn RawCsi>) -> tonic::service::Routes {
    let s = dispatch::Servers::new(api, ServeOptions::default().max_message_size, None);
    let mut routes = tonic::service::Routes::new(s.identity)
        .add_service(s.controller)
        .add_service(s.group_controller)
        .add_service(s.node)
        .add_service(s.snapshot_metadata);
    let router = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() =
        router.fallback(|uri: http::Uri| async move { unknown_method(uri.path()) });
    routes
}

/// What is at a unix socket path that a server could take, as
/// [`check_unix_socket`] finds it. A path a server cannot take is an error
/// of [`check_unix_socket`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketState {
    /// Nothing is at the path, and the socket's directory exists.
    Free,
    /// Nothing is at the path, and the socket's own directory is missing
    /// (the one above it exists): [`prepare_unix_socket`] creates it.
    DirectoryMissing,
    /// A socket whose connections the kernel refuses (`ECONNREFUSED`: no
    /// process listens on it), left by a process that is gone:
    /// [`prepare_unix_socket`] removes it.
    Stale,
}

/// Tells whether a server could bind a unix socket at `path`, by the rule
/// of [`prepare_unix_socket`] (and so of [`serve`]), creating, removing and
/// binding nothing: for a program that checks its flags before it opens
/// anything, and makes the socket ready later.
///
/// `Ok` is a path the server can take ([`SocketState`]); refused, with the
/// error [`prepare_unix_socket`] would return:
///
/// - a path too long for a unix socket (`sun_path`, 108 bytes with its
///   NUL): [`ServeError::Io`] of kind `InvalidInput`, naming the limit;
/// - a socket another process accepts connections on:
///   [`ServeError::SocketInUse`];
/// - anything that is not a socket: [`ServeError::NotASocket`];
/// - a socket whose connection fails other than by being refused
///   (`EACCES`, `EAGAIN`: a server may be there): [`ServeError::Io`]
///   with that error, and the socket is left as it is;
/// - a missing directory above the socket's own (only that one is
///   created; a chain of them is more likely a typo): [`ServeError::Io`]
///   of kind `NotFound`, naming it.
///
/// A probe, so a moment old: the path may change before the server binds
/// it. A live socket is told by connecting to it (and closing at once).
///
/// ```
/// use csi_types::server::{check_unix_socket, ServeError, SocketState};
/// let dir = std::env::temp_dir().join(format!("csi-types-check-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let socket = dir.join("csi.sock");
/// // The socket's own directory may be missing: the server makes it.
/// assert_eq!(check_unix_socket(&socket)?, SocketState::DirectoryMissing);
/// assert!(!dir.exists(), "nothing is created");
/// std::fs::create_dir(&dir)?;
/// assert_eq!(check_unix_socket(&socket)?, SocketState::Free);
/// let listener = std::os::unix::net::UnixListener::bind(&socket)?;
/// let e = check_unix_socket(&socket).unwrap_err();
/// assert!(matches!(e, ServeError::SocketInUse(_)), "{e}");
/// drop(listener); // the socket file stays, and nothing listens on it
/// assert_eq!(check_unix_socket(&socket)?, SocketState::Stale);
/// assert!(socket.exists(), "nothing is removed");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_unix_socket(path: &Path) -> Result<SocketState, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let io = |context: String| move |source| ServeError::Io { context, source };
    if let Some(e) = crate::endpoint::socket_path_too_long(path) {
        return Err(io(format!("binding {}", path.display()))(e));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            return socket_state(
                path,
                std::os::unix::net::UnixStream::connect(path).map(drop),
            );
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("inspecting {}", path.display()))(e)),
    }
    // A relative path in the working directory has the empty path as its parent.
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(SocketState::Free);
    };
    if dir.is_dir() {
        return Ok(SocketState::Free);
    }
    // The socket's own directory is made (`/run/csi-local` for `/run/csi-local/csi.sock`), but
    // not a chain of them: a typo in a deployment's path (`/var/lib/kubelte/plugins/x/csi.sock`)
    // used to create every missing directory and serve where nothing would ever connect.
    if let Some(above) = dir.parent()
        && !above.as_os_str().is_empty()
        && !above.is_dir()
    {
        return Err(io(format!("creating {}", dir.display()))(
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} does not exist either (a typo?): only the socket's own directory is created",
                    above.display()
                ),
            ),
        ));
    }
    Ok(SocketState::DirectoryMissing)
}

/// What a connection attempt to an existing socket file tells: a server listens (in use), or
/// the kernel refused the connection (`ECONNREFUSED`: nothing listens, the socket is stale).
/// Any other failure (`EACCES` from a live server's socket this process may not use, `EAGAIN`
/// from one whose queue is full, …) tells nothing about whether a server is there, so the
/// socket is neither taken nor removed.
fn socket_state(path: &Path, connect: std::io::Result<()>) -> Result<SocketState, ServeError> {
    match connect {
        Ok(()) => Err(ServeError::SocketInUse(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(SocketState::Stale),
        Err(source) => Err(ServeError::Io {
            context: format!(
                "connecting to {} to tell whether a server listens on it (the socket is left as it is)",
                path.display()
            ),
            source,
        }),
    }
}

/// Makes `path` ready for a unix socket to be bound there, by the rule
/// [`serve`] applies to a `unix://` endpoint; public so that a driver's
/// other sockets (an admin or debug socket) follow the same rule. What
/// [`check_unix_socket`] refuses is refused, before anything is created or
/// removed; then a stale socket (left by a process that is gone) is
/// removed, and a missing socket's own directory is created.
///
/// ```
/// use csi_types::server::{prepare_unix_socket, ServeError};
/// let dir = std::env::temp_dir().join(format!("csi-types-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let socket = dir.join("admin.sock");
/// prepare_unix_socket(&socket)?; // creates `dir`, the socket's own directory
/// assert!(dir.is_dir());
/// let _listener = std::os::unix::net::UnixListener::bind(&socket)?;
/// // Now served: a second server is refused, and the socket kept.
/// let e = prepare_unix_socket(&socket).unwrap_err();
/// assert!(matches!(e, ServeError::SocketInUse(_)), "{e}");
/// // A typo two directories deep creates nothing.
/// assert!(prepare_unix_socket(&dir.join("typo/x/csi.sock")).is_err());
/// assert!(!dir.join("typo").exists());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn prepare_unix_socket(path: &Path) -> Result<(), ServeError> {
    let io = |context: String| move |source| ServeError::Io { context, source };
    match check_unix_socket(path)? {
        SocketState::Free => {}
        SocketState::Stale => {
            tracing::info!(path = %path.display(), "removing a stale socket");
            std::fs::remove_file(path)
                .map_err(io(format!("removing stale socket {}", path.display())))?;
        }
        SocketState::DirectoryMissing => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
            }
        }
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
/// `localhost` (or, in an entry of the client's HPACK table, by a valid
/// value of the same length, `localhost:0000`) before the HTTP/2 layer sees
/// it. Nothing else a client sends is changed.
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
    Server::new(api)
        .options(options)
        .serve(endpoint, shutdown)
        .await
}

/// A CSI server with the driver author's own middleware: the seam for
/// authentication, rate limits, extra tracing or metrics.
///
/// Each [`Server::layer`] is a tower layer over the gRPC HTTP service
/// ([`HttpService`]); the first added is the outermost. Around them the
/// server keeps what [`serve`] does: the deadline ([`ServeOptions::call_timeout`]
/// and the client's `grpc-timeout`) outside the user's layers, the metrics
/// outside everything; inside, [`crate::Plugin`] still validates, guards,
/// isolates panics and logs each call. With no layer it serves exactly what
/// [`serve_with_options`] serves.
///
/// A tonic interceptor is a layer too. Here one refuses calls without a
/// token, next to a tower layer that limits concurrent calls:
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use csi_types::{controller::*, identity::*, ids::*, node::*, prelude::*, redact::*, types::*};
/// use csi_types::server::{ServeOptions, Server};
///
/// struct Hello;
/// #[async_trait]
/// impl Identity for Hello {
///     async fn get_plugin_info(&self, _: GetPluginInfoRequest) -> Result<GetPluginInfoResponse, CsiError> {
///         GetPluginInfoResponse::new(PluginName::new("hello.csi.example.com")?, "0.1.0")
///     }
/// }
///
/// fn check_token(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
///     match req.metadata().get("authorization") {
///         Some(t) if t == "Bearer let-me-in" => Ok(req),
///         _ => Err(tonic::Status::unauthenticated("a bearer token is required")),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let plugin = Plugin::builder(Arc::new(Hello)).build()?;
/// let mut options = ServeOptions::default();
/// options.call_timeout = Some(std::time::Duration::from_secs(30));
/// let dir = tempfile::tempdir()?;
/// let endpoint = format!("unix://{}/csi.sock", dir.path().display());
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = Server::new(plugin)
///     .options(options)
///     .layer(tonic::service::InterceptorLayer::new(check_token))
///     .layer(tower::limit::ConcurrencyLimitLayer::new(64));
/// let ep = endpoint.clone();
/// let server = tokio::spawn(async move { server.serve(&ep, async { let _ = stopped.await; }).await });
///
/// # for _ in 0..500 { if dir.path().join("csi.sock").exists() { break } tokio::time::sleep(std::time::Duration::from_millis(10)).await }
/// let client = csi_types::client::Client::connect(&endpoint).await?;
/// let err = client.get_plugin_info(GetPluginInfoRequest {}).await.unwrap_err();
/// assert_eq!(err.code(), Code::Unauthenticated);
///
/// let _ = stop.send(());
/// server.await??;
/// # Ok(()) }
/// ```
pub struct Server {
    api: Arc<dyn RawCsi>,
    options: ServeOptions,
    layers: Vec<stack::LayerFn>,
    registry: Option<prometheus_client::registry::Registry>,
}

impl Server {
    /// A server for `api` (usually a [`crate::Plugin`]) with
    /// [`ServeOptions::default`] and no layer of its own.
    pub fn new(api: impl RawCsi + 'static) -> Server {
        Server {
            api: Arc::new(api),
            options: ServeOptions::default(),
            layers: Vec::new(),
            registry: None,
        }
    }

    /// Serves the driver's own metrics at the metrics endpoint
    /// ([`ServeOptions::metrics_address`], which must be set), after the
    /// SDK's. The driver keeps clones of the metrics it registered (they
    /// share their values) and updates them from its handlers. Its metric
    /// names must differ from the SDK's (`csi_plugin_*`); its series carry
    /// the labels it gives them (the SDK's carry [`DRIVER_NAME_LABEL`]).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use csi_types::server::prometheus_client::metrics::counter::Counter;
    /// use csi_types::server::prometheus_client::registry::Registry;
    /// use csi_types::server::{ServeOptions, Server, shutdown_signal};
    /// # use csi_types::{identity::*, ids::PluginName, prelude::*};
    /// # struct Identity_;
    /// # #[async_trait::async_trait]
    /// # impl Identity for Identity_ {
    /// #     async fn get_plugin_info(&self, _: GetPluginInfoRequest) -> Result<GetPluginInfoResponse, CsiError> {
    /// #         GetPluginInfoResponse::new(PluginName::new("hello.csi.example.com")?, "0.1.0")
    /// #     }
    /// # }
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // Registered once; the driver keeps a clone and counts with it.
    /// let copies: Counter = Counter::default();
    /// let mut registry = Registry::default();
    /// registry.register("hello_snapshot_copies", "Snapshots copied to the backup tier", copies.clone());
    /// copies.inc();
    ///
    /// let plugin = Plugin::builder(Arc::new(Identity_)).build()?;
    /// let mut options = ServeOptions::default();
    /// options.metrics_address = Some("127.0.0.1:9808".parse()?);
    /// Server::new(plugin)
    ///     .options(options)
    ///     .metrics_registry(registry)
    ///     .serve("unix:///run/csi/csi.sock", shutdown_signal())
    ///     .await?;
    /// // GET http://127.0.0.1:9808/metrics now answers, among the SDK's series:
    /// //   csi_plugin_operations_seconds_count{driver_name="hello.csi.example.com",method_name=...,grpc_status_code=...}
    /// //   hello_snapshot_copies_total 1
    /// # Ok(()) }
    /// ```
    pub fn metrics_registry(mut self, registry: prometheus_client::registry::Registry) -> Server {
        self.registry = Some(registry);
        self
    }

    /// Replaces the options.
    pub fn options(mut self, options: ServeOptions) -> Server {
        self.options = options;
        self
    }

    /// Adds a tower layer around the CSI routes, inside the layers added
    /// before it. Its service may answer with any body a gRPC response can
    /// carry; an error it returns is answered as tonic answers service
    /// errors (a [`tonic::Status`] as itself, anything else `UNKNOWN`).
    pub fn layer<L, S, B>(mut self, layer: L) -> Server
    where
        L: tower::Layer<HttpService, Service = S> + Send + Sync + 'static,
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.layers
            .push(Arc::new(move |inner| stack::boxed(layer.layer(inner))));
        self
    }

    /// Serves on `endpoint` (`unix:///path` or `tcp://ip:port`) until
    /// `shutdown` completes, then drains in-flight calls and returns; the
    /// metrics endpoint, if any, stops with it.
    pub async fn serve(
        self,
        endpoint: &str,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let endpoint: Endpoint = endpoint.parse()?;
        self.check()?;
        match &endpoint {
            Endpoint::Unix(path) => {
                prepare_unix_socket(path)?;
                let listener =
                    tokio::net::UnixListener::bind(path).map_err(|source| ServeError::Io {
                        context: format!("binding {}", path.display()),
                        source,
                    })?;
                tracing::info!(%endpoint, "serving CSI");
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let result = self.serve_with_incoming(incoming, shutdown).await;
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
                    tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|s| {
                        let _ = s.set_nodelay(true);
                        s
                    });
                self.serve_with_incoming(incoming, shutdown).await?;
            }
        }
        tracing::info!(%endpoint, "stopped");
        Ok(())
    }

    /// Configuration mistakes found before anything is bound.
    fn check(&self) -> Result<(), ServeError> {
        if self.registry.is_some() && self.options.metrics_address.is_none() {
            return Err(ServeError::RegistryWithoutAddress);
        }
        Ok(())
    }

    /// Serves the connections `incoming` yields (an already bound listener,
    /// a socket handed over by systemd, or the `client::InMemoryIncoming`
    /// of an in-memory channel) until `shutdown` completes, then drains
    /// in-flight calls and returns; the metrics endpoint, if any, stops with
    /// it. Each connection gets the same stack as [`Server::serve`]. The end
    /// of `incoming` stops the server, as `shutdown` does.
    ///
    /// To test a driver through this stack without a socket,
    /// `Server::serve_in_memory` (features `server` and `client`) does all
    /// of it and hands back a client.
    pub async fn serve_with_incoming<I, IO, E>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError>
    where
        I: futures::Stream<Item = Result<IO, E>> + Send,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        E: Into<BoxError>,
    {
        self.ready().await?.serve(incoming, shutdown).await
    }

    /// Checks the configuration and binds the metrics endpoint: everything
    /// that can fail before the first connection is served.
    async fn ready(self) -> Result<Ready, ServeError> {
        self.check()?;
        let Server {
            api,
            options,
            layers,
            registry,
        } = self;
        let metrics = match options.metrics_address {
            Some(addr) => {
                let driver_name = api
                    .raw_get_plugin_info(proto::GetPluginInfoRequest {})
                    .await
                    .map_err(ServeError::PluginInfo)?
                    .name;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Io {
                        context: format!("binding the metrics endpoint {addr}"),
                        source,
                    })?;
                tracing::info!(address = %addr, "serving metrics at /metrics");
                Some((
                    listener,
                    Arc::new(metrics::Metrics::new(&driver_name, registry)),
                ))
            }
            None => None,
        };
        Ok(Ready {
            api,
            options,
            layers,
            metrics,
        })
    }

    /// Serves this server's whole stack (the [`crate::Plugin`]'s
    /// validation and logging, the user's layers, the deadline, the metrics)
    /// in this process, without a socket, and returns a [`crate::client::Client`]
    /// connected to it and the handle that stops it (features `server` and
    /// `client`). For a driver's tests: each call crosses the same gRPC
    /// encoding, HTTP/2 connection and layers as over a unix socket.
    ///
    /// The server runs on a spawned tokio task. [`InMemoryServer::stop`]
    /// stops it gracefully (in-flight calls finish) and returns what it
    /// returned; dropping the handle stops it too, without waiting. The
    /// configuration is checked first, and the metrics endpoint, if any,
    /// bound: an error there is returned here, and nothing is spawned.
    ///
    /// The client reconnects as it would over a socket (after an idle
    /// timeout, say). Once the server has stopped, a call is answered
    /// `UNAVAILABLE`, its message saying that the in-memory server has
    /// stopped. (On a multi-threaded runtime, a call made just as the
    /// server stops may instead fail on the closing connection, as over a
    /// socket: the client's connection task may not have seen the close
    /// yet. That is `UNAVAILABLE` too, its message saying the connection
    /// closed.)
    ///
    /// ```
    /// use std::sync::Arc;
    /// use csi_types::{Csi, RawCsi, identity::*, ids::PluginName, prelude::*, proto};
    /// use csi_types::server::Server;
    ///
    /// struct Hello;
    /// #[async_trait::async_trait]
    /// impl Identity for Hello {
    ///     async fn get_plugin_info(&self, _: GetPluginInfoRequest) -> Result<GetPluginInfoResponse, CsiError> {
    ///         GetPluginInfoResponse::new(PluginName::new("hello.csi.example.com")?, "0.1.0")
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let plugin = Plugin::builder(Arc::new(Hello)).build()?;
    /// let (client, server) = Server::new(plugin).serve_in_memory().await?;
    ///
    /// let info = client.get_plugin_info(GetPluginInfoRequest {}).await?;
    /// assert_eq!(info.name.as_str(), "hello.csi.example.com");
    /// // A service the plugin does not offer answers UNIMPLEMENTED, over the wire.
    /// let err = client.raw_create_volume(proto::CreateVolumeRequest::default()).await.unwrap_err();
    /// assert_eq!(err.code(), Code::Unimplemented);
    ///
    /// server.stop().await?;
    /// let err = client.get_plugin_info(GetPluginInfoRequest {}).await.unwrap_err();
    /// assert_eq!(err.code(), Code::Unavailable);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "client")]
    pub async fn serve_in_memory(
        self,
    ) -> Result<(crate::client::Client, InMemoryServer), ServeError> {
        let ready = self.ready().await?;
        // The client reads and sends what the server does.
        let max_message_size = ready.options.max_message_size;
        let (connector, incoming) = crate::client::in_memory_connector();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The shutdown signal is the handle's sender: sent, or dropped with the handle.
        let task = tokio::spawn(ready.serve(incoming, async move {
            let _ = stopped.await;
        }));
        let server = InMemoryServer { stop, task };
        match crate::client::connect_in_memory(connector).await {
            Ok(channel) => Ok((
                crate::client::Client::from_channel(channel)
                    .with_max_message_size(max_message_size),
                server,
            )),
            Err(e) => {
                // Nothing will call this server: stop it, and report why.
                let _ = server.stop().await;
                Err(ServeError::Transport(e))
            }
        }
    }
}

/// A [`Server`] checked and its metrics endpoint bound, ready to serve.
struct Ready {
    api: Arc<dyn RawCsi>,
    options: ServeOptions,
    layers: Vec<stack::LayerFn>,
    metrics: Option<(tokio::net::TcpListener, Arc<metrics::Metrics>)>,
}

impl Ready {
    /// [`Server::serve_with_incoming`], after [`Server::ready`].
    async fn serve<I, IO, E>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError>
    where
        I: futures::Stream<Item = Result<IO, E>> + Send,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        E: Into<BoxError>,
    {
        let Ready {
            api,
            mut options,
            layers,
            metrics,
        } = self;
        let bounded = |d: Duration| d.min(crate::MAX_WAIT);
        options.idle_timeout = options.idle_timeout.map(bounded);
        options.keepalive_interval = options.keepalive_interval.map(bounded);
        options.keepalive_timeout = bounded(options.keepalive_timeout);
        options.call_timeout = options.call_timeout.map(bounded);
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let health = options.health.then_some(stopping);
        let csi = dispatch::Dispatch::new(dispatch::Servers::new(
            api,
            options.max_message_size,
            health,
        ));
        let user_stack = stack::UserLayers(layers.into());
        let idle = options.idle_timeout;
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(options.keepalive_interval)
            .http2_keepalive_timeout(Some(options.keepalive_timeout))
            .layer(metrics::MetricsLayer(
                metrics.as_ref().map(|(_, m)| Arc::clone(m)),
            ))
            .layer(conn::CallLayer)
            .layer(stack::DeadlineLayer(options.call_timeout))
            .layer(user_stack);
        let incoming = incoming.map_ok(move |s| conn::ServerConn::new(s, idle));
        let csi = server.serve_with_incoming_shutdown(csi, incoming, shutdown);
        match metrics {
            Some((listener, m)) => {
                tokio::select! {
                    r = csi => r?,
                    () = metrics::serve_http(listener, m) => {}
                }
            }
            None => csi.await?,
        }
        Ok(())
    }
}

/// A [`Server`] serving in memory ([`Server::serve_in_memory`]): stop it
/// with [`InMemoryServer::stop`] to learn how it ended. Dropping the handle
/// stops the server too (gracefully, on its task), without waiting for it.
/// The server also stops by itself once the client and all its clones are
/// dropped, as nothing can call it any more.
#[cfg(feature = "client")]
#[derive(Debug)]
#[must_use = "dropping the handle stops the server"]
pub struct InMemoryServer {
    /// Sent or dropped: the server's shutdown signal.
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

#[cfg(feature = "client")]
impl InMemoryServer {
    /// Stops the server gracefully: it accepts no new call, lets the calls
    /// in flight finish, and returns; this returns what the server returned
    /// (`Ok(())`, or the error that stopped it earlier). A panic on the
    /// server's task is resumed here.
    pub async fn stop(self) -> Result<(), ServeError> {
        let InMemoryServer { stop, task } = self;
        let _ = stop.send(());
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(ServeError::Cancelled),
        }
    }
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

#[cfg(test)]
mod socket_state_tests {
    use super::*;

    #[test]
    fn only_a_refused_connection_makes_a_socket_stale() {
        let path = Path::new("/run/x/csi.sock");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            socket_state(path, Err(refused)).unwrap(),
            SocketState::Stale
        );
        assert!(matches!(
            socket_state(path, Ok(())),
            Err(ServeError::SocketInUse(_))
        ));
        // A live server's socket this process may not connect to, or whose queue is full:
        // whether a server is there is not known, and the socket must not be removed.
        // EACCES and EAGAIN on Linux.
        for errno in [13, 11] {
            let err =
                socket_state(path, Err(std::io::Error::from_raw_os_error(errno))).unwrap_err();
            let ServeError::Io { context, source } = &err else {
                panic!("not an I/O error: {err}");
            };
            assert_eq!(source.raw_os_error(), Some(errno));
            assert!(context.contains("/run/x/csi.sock"), "{err}");
            assert!(context.contains("left as it is"), "{err}");
        }
    }
}
