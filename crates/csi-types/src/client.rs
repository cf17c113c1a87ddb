//! A gRPC client for any CSI endpoint (feature `client`), for tests and tools.
//!
//! [`Client`] implements [`RawCsi`], and through it the typed [`crate::Csi`],
//! so the same code drives an in-process [`crate::Plugin`] or a plugin in
//! another process, written in any language.
//!
//! [`in_memory_channel`] connects without a socket, to a server in the same
//! process (`server::Server::serve_in_memory` is the short way to use it).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::StreamExt;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::CsiError;
use crate::MAX_WAIT;
use crate::api::{RawCsi, RawStream};
use crate::endpoint::{Endpoint, EndpointError};
use crate::proto;
use crate::proto::controller_client::ControllerClient;
use crate::proto::group_controller_client::GroupControllerClient;
use crate::proto::identity_client::IdentityClient;
use crate::proto::node_client::NodeClient;
use crate::proto::snapshot_metadata_client::SnapshotMetadataClient;

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint string is malformed.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The connection failed. The message carries the whole chain of
    /// causes down to the operating system's ("No such file or directory",
    /// "Connection refused"), which tonic's own message leaves out.
    #[error("connecting to {endpoint}: {}", cause_chain(.source))]
    Transport {
        /// Where.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The connection was not set up within
    /// [`ConnectOptions::connect_timeout`].
    #[error(
        "connecting to {endpoint}: not connected within {after:?} (connect_timeout): \
         is the driver hung, or is something other than a gRPC server listening there?"
    )]
    TimedOut {
        /// Where.
        endpoint: String,
        /// The timeout that ran out.
        after: Duration,
    },
}

/// How a [`Client`] connects and how long it waits; [`Client::connect`]
/// uses the defaults.
///
/// Every wait is bounded, so that a peer that accepts a connection but
/// never answers (a hung driver, or a socket that is not a gRPC server)
/// ends in an error rather than a hang:
///
/// - opening the connection is bounded by `connect_timeout`
///   ([`ConnectError::TimedOut`]);
/// - a call on a connection whose peer stopped answering altogether fails
///   `UNAVAILABLE` once an HTTP/2 PING, sent every `keepalive_interval`
///   while a call is in flight, goes unanswered for `keepalive_timeout`;
/// - a call that a live server does not finish fails `DEADLINE_EXCEEDED`
///   after `call_timeout`, which is also sent to the server as the call's
///   `grpc-timeout`. CSI calls may legitimately take minutes (CreateVolume
///   of a large volume), so there is none by default.
///
/// A duration beyond 99,999,999 hours (what `grpc-timeout` can carry) is
/// taken as that.
///
/// ```no_run
/// use std::time::Duration;
/// use csi_types::client::{Client, ConnectOptions};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut options = ConnectOptions::default();
/// options.connect_timeout = Duration::from_secs(5);
/// options.call_timeout = Some(Duration::from_secs(60));
/// let client = Client::connect_with("unix:///run/csi/csi.sock", options).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The longest [`Client::connect_with`] may take to open the
    /// connection. Default 30 seconds.
    pub connect_timeout: Duration,
    /// The longest a call may wait for its answer before it fails
    /// `DEADLINE_EXCEEDED`; sent to the server as `grpc-timeout`. `None`
    /// (the default) waits as long as the server keeps the connection alive.
    pub call_timeout: Option<Duration>,
    /// How often the client pings (HTTP/2 PING) a connection that has a
    /// call in flight, to find a peer that stopped answering. Default 5
    /// minutes ([`DEFAULT_KEEPALIVE_INTERVAL`]): gRPC servers in Go and C
    /// core (most CSI drivers) by default count a ping sooner than 5 minutes
    /// after the last one, while they send nothing, as a strike, and after
    /// two strikes close the connection with `GOAWAY too_many_pings`, which
    /// fails every call on it; a shorter interval would kill a CreateVolume
    /// or NodeStageVolume that works quietly for half a minute. Shorten it
    /// only for servers that allow it (this crate's server does).
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed
    /// and its calls fail `UNAVAILABLE`. Default 20 seconds.
    pub keepalive_timeout: Duration,
    /// The largest request and response message, in bytes: a larger
    /// response fails `RESOURCE_EXHAUSTED` saying so. Default 4 MiB, gRPC's
    /// usual limit and the server's default
    /// (`server::ServeOptions::max_message_size`); raise both together.
    pub max_message_size: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(30),
            call_timeout: None,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: Duration::from_secs(20),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// The default [`ConnectOptions::max_message_size`]: 4 MiB.
const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;

/// The default [`ConnectOptions::keepalive_interval`]: 5 minutes, the least
/// interval between pings that gRPC servers in Go and C core accept by
/// default (their `MinTime` / `min_recv_ping_interval_without_data`).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);

/// `connect(2)` answers `ECONNREFUSED` both for a socket nobody listens on and for a path
/// that is not a socket at all (a regular file, a directory), and "Connection refused" sends
/// the reader looking for a driver that is not running. Say what the path is instead; and for
/// nothing at the path (`ENOENT`, the commonest case: the driver is not running yet, or the
/// endpoint has a typo), say so, and whether its directory is missing too.
fn explain_unix_connect(path: &std::path::Path, e: std::io::Error) -> std::io::Error {
    use std::os::unix::fs::FileTypeExt;
    if e.kind() == std::io::ErrorKind::NotFound {
        let what = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => format!(
                "nothing at {}, and its directory {} does not exist either (a typo?)",
                path.display(),
                dir.display()
            ),
            _ => format!(
                "nothing at {}: is the driver running, and serving this endpoint?",
                path.display()
            ),
        };
        return std::io::Error::new(e.kind(), format!("{e}: {what}"));
    }
    if e.kind() != std::io::ErrorKind::ConnectionRefused {
        return e;
    }
    let what = match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            "a unix socket that no process is listening on (is the driver running?)"
        }
        Ok(m) if m.is_dir() => "a directory, not a unix socket",
        Ok(m) if m.is_file() => "a regular file, not a unix socket",
        Ok(_) => "not a unix socket",
        Err(_) => return e,
    };
    std::io::Error::new(e.kind(), format!("{e}: {} is {what}", path.display()))
}

/// `error: cause: cause …`, skipping a cause whose text repeats the previous one.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        next = cause.source();
    }
    out
}

/// A connection to a CSI endpoint, with a client for each of the five services.
///
/// ```no_run
/// use csi_types::{Csi, identity::GetPluginInfoRequest};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = csi_types::client::Client::connect("unix:///run/csi/csi.sock").await?;
/// let info = client.get_plugin_info(GetPluginInfoRequest {}).await?;
/// println!("{} {}", info.name, info.vendor_version);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    group_controller: GroupControllerClient<Channel>,
    node: NodeClient<Channel>,
    snapshot_metadata: SnapshotMetadataClient<Channel>,
    call_timeout: Option<Duration>,
    /// Named in the error of a call whose connection died of it.
    keepalive_timeout: Duration,
    /// Named in the error of a response over it.
    max_message_size: usize,
}

impl Client {
    /// Connects to `unix:///path` or `tcp://ip:port` with the default
    /// [`ConnectOptions`]: at most 30 seconds to connect, and a call on a
    /// connection whose peer stopped answering fails `UNAVAILABLE` within
    /// 30 seconds.
    pub async fn connect(endpoint: &str) -> Result<Client, ConnectError> {
        Self::connect_with(endpoint, ConnectOptions::default()).await
    }

    /// Connects to `unix:///path` or `tcp://ip:port` with `options`.
    ///
    /// # Errors
    /// [`ConnectError::Endpoint`] for a malformed endpoint,
    /// [`ConnectError::Transport`] when the connection fails (the message
    /// says why: no such file, a regular file or a directory rather than a
    /// socket, a path too long for a socket, nobody listening),
    /// [`ConnectError::TimedOut`] after `options.connect_timeout`.
    pub async fn connect_with(
        endpoint: &str,
        options: ConnectOptions,
    ) -> Result<Client, ConnectError> {
        let parsed: Endpoint = endpoint.parse()?;
        let transport = |source| ConnectError::Transport {
            endpoint: endpoint.to_string(),
            source,
        };
        let options = ConnectOptions {
            connect_timeout: options.connect_timeout.min(MAX_WAIT),
            call_timeout: options.call_timeout.map(|t| t.min(MAX_WAIT)),
            keepalive_interval: options.keepalive_interval.min(MAX_WAIT),
            keepalive_timeout: options.keepalive_timeout.min(MAX_WAIT),
            max_message_size: options.max_message_size,
        };
        let configure = |e: TonicEndpoint| {
            e.connect_timeout(options.connect_timeout)
                .http2_keep_alive_interval(options.keepalive_interval)
                .keep_alive_timeout(options.keepalive_timeout)
        };
        let connecting = async {
            Ok::<_, ConnectError>(match parsed {
                Endpoint::Unix(path) => {
                    // The URI is required by tonic but unused: the connector dials the socket.
                    configure(TonicEndpoint::from_static("http://[::1]:50051"))
                        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                            let path = path.clone();
                            async move {
                                if let Some(e) = crate::endpoint::socket_path_too_long(&path) {
                                    return Err(e);
                                }
                                let stream = tokio::net::UnixStream::connect(&path)
                                    .await
                                    .map_err(|e| explain_unix_connect(&path, e))?;
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                            }
                        }))
                        .await
                        .map_err(transport)?
                }
                Endpoint::Tcp(addr) => configure(
                    TonicEndpoint::from_shared(format!("http://{addr}")).map_err(transport)?,
                )
                .connect()
                .await
                .map_err(transport)?,
            })
        };
        // tonic bounds the dial; this bounds the whole set-up, whatever step waits.
        let channel = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| ConnectError::TimedOut {
                endpoint: endpoint.to_string(),
                after: options.connect_timeout,
            })??;
        let mut client = Client::from_channel(channel);
        client.call_timeout = options.call_timeout;
        client.keepalive_timeout = options.keepalive_timeout;
        client = client.with_max_message_size(options.max_message_size);
        Ok(client)
    }

    /// A client over an existing channel, without a call timeout.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            group_controller: GroupControllerClient::new(channel.clone()),
            node: NodeClient::new(channel.clone()),
            snapshot_metadata: SnapshotMetadataClient::new(channel),
            call_timeout: None,
            keepalive_timeout: ConnectOptions::default().keepalive_timeout,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// The same client with requests and responses up to `bytes` (see
    /// [`ConnectOptions::max_message_size`]).
    pub fn with_max_message_size(self, bytes: usize) -> Client {
        Client {
            identity: self
                .identity
                .max_decoding_message_size(bytes)
                .max_encoding_message_size(bytes),
            controller: self
                .controller
                .max_decoding_message_size(bytes)
                .max_encoding_message_size(bytes),
            group_controller: self
                .group_controller
                .max_decoding_message_size(bytes)
                .max_encoding_message_size(bytes),
            node: self
                .node
                .max_decoding_message_size(bytes)
                .max_encoding_message_size(bytes),
            snapshot_metadata: self
                .snapshot_metadata
                .max_decoding_message_size(bytes)
                .max_encoding_message_size(bytes),
            max_message_size: bytes,
            ..self
        }
    }

    /// The same client with every call bounded by `timeout` (see
    /// [`ConnectOptions::call_timeout`]); `None` removes the bound.
    pub fn with_call_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.call_timeout = timeout.map(|t| t.min(MAX_WAIT));
        self
    }

    /// Wraps a request, sending the call timeout as its `grpc-timeout`.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(t) = self.call_timeout {
            req.set_timeout(t.min(MAX_WAIT));
        }
        req
    }

    /// Runs a call, bounded by the call timeout, and makes its error say
    /// what happened.
    async fn bounded<R>(
        &self,
        rpc: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    ) -> Result<R, CsiError> {
        let answer = match self.call_timeout {
            None => call.await,
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(answer) => answer,
                Err(_) => return Err(self.expired(rpc, t)),
            },
        };
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| self.explain(rpc, s))
    }

    fn expired(&self, rpc: &str, t: Duration) -> CsiError {
        CsiError::DeadlineExceeded(format!("no answer to {rpc} within {t:?} (call_timeout)"))
    }

    /// A status the client made itself says little ("http2 error") and its
    /// code depends on which side noticed first; it becomes `UNAVAILABLE`
    /// with the causes that say what failed, naming the options involved.
    fn explain(&self, rpc: &str, s: tonic::Status) -> CsiError {
        // tonic's channel enforces the request's `grpc-timeout` too, and
        // answers `CANCELLED` "Timeout expired" when it wins the race.
        if let Some(t) = self.call_timeout
            && s.code() == tonic::Code::Cancelled
            && s.message() == tonic::TimeoutExpired(()).to_string()
        {
            return self.expired(rpc, t);
        }
        if let Some(e) = self.too_large(rpc, &s) {
            return e;
        }
        // Only a status the client made itself has a source: one received from the server
        // is its code and message.
        let Some(cause) = std::error::Error::source(&s) else {
            return s.into();
        };
        let chain = cause_chain(cause);
        let hint = if chain.contains("keep-alive timed out") {
            format!(
                ": the plugin did not answer an HTTP/2 ping within {:?} (keepalive_timeout): \
                 is the driver hung, or not a gRPC server?",
                self.keepalive_timeout
            )
        } else if s.code() == tonic::Code::Unavailable {
            // The causes say it (no such file, nobody listening, the in-memory server stopped).
            String::new()
        } else {
            // tonic answers INTERNAL "h2 protocol error", CANCELLED "connection closed" or
            // UNKNOWN "transport error", whichever side noticed first.
            ": the peer broke the connection or does not speak gRPC (HTTP/2): \
             is the endpoint a CSI plugin?"
                .to_string()
        };
        // The call failed on the connection, before any answer of the plugin: gRPC's
        // UNAVAILABLE, whatever code tonic picked (CSI calls are idempotent, so a retry is safe).
        CsiError::Unavailable(format!("{rpc}: {chain}{hint}"))
    }

    /// tonic's `OUT_OF_RANGE` "Error, decoded (encoded) message length too
    /// large: found N bytes, the limit is: M bytes" for a message over this
    /// client's limit, which reads as the plugin's CSI `OUT_OF_RANGE` (an
    /// unsupported capacity range): `RESOURCE_EXHAUSTED` naming the message
    /// and the option. `None` for any other status, and for a limit that is
    /// not this client's (a peer's own answer, passed on as it is).
    fn too_large(&self, rpc: &str, s: &tonic::Status) -> Option<CsiError> {
        if s.code() != tonic::Code::OutOfRange {
            return None;
        }
        let m = s.message();
        let which = if m.starts_with("Error, decoded message length too large") {
            "response"
        } else if m.starts_with("Error, encoded message length too large") {
            "request"
        } else {
            return None;
        };
        let (found, limit) = crate::error::tonic_too_large_sizes(m)?;
        (u64::try_from(self.max_message_size) == Ok(limit)).then(|| {
            CsiError::ResourceExhausted(format!(
                "{rpc}: the {which} is {found} bytes, over this client's limit of {limit} bytes \
                 (ConnectOptions::max_message_size)"
            ))
        })
    }
}

/// How many bytes each direction of an in-memory connection holds before
/// its writer waits for the reader: 1 MiB, so that a typical message passes
/// in one write.
const IN_MEMORY_BUFFER: usize = 1 << 20;

/// A gRPC channel to a server in the same process, without a socket, and
/// the server's side of it: the connections the channel opens, for
/// `server::Server::serve_with_incoming` (or tonic's own
/// `serve_with_incoming_shutdown`) to serve.
///
/// The channel opens its first connection before this returns, and a new
/// one whenever the server closed the last (an idle timeout, for example),
/// as it would over a socket. Once the [`InMemoryIncoming`] is dropped (the
/// server stopped), opening a connection fails with an
/// [`std::io::ErrorKind::ConnectionRefused`] error saying so, which a call
/// on the channel answers `UNAVAILABLE`. Needs a tokio runtime.
///
/// `server::Server::serve_in_memory` does this, serves the incoming side
/// and hands back a [`Client`]; this is for serving it some other way:
///
/// ```
/// use std::sync::Arc;
/// use csi_types::{Csi, identity::*, ids::PluginName, prelude::*};
/// # struct Hello;
/// # #[async_trait::async_trait]
/// # impl Identity for Hello {
/// #     async fn get_plugin_info(&self, _: GetPluginInfoRequest) -> Result<GetPluginInfoResponse, CsiError> {
/// #         GetPluginInfoResponse::new(PluginName::new("hello.csi.example.com")?, "0.1.0")
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let plugin = Plugin::builder(Arc::new(Hello)).build()?;
/// let (channel, incoming) = csi_types::client::in_memory_channel().await?;
/// // tonic's own server, with the CSI routes next to whatever else it serves.
/// let served = tokio::spawn(
///     tonic::transport::Server::builder()
///         .add_routes(csi_types::server::routes(Arc::new(plugin)))
///         .serve_with_incoming(incoming),
/// );
/// let client = csi_types::client::Client::from_channel(channel);
/// let info = client.get_plugin_info(GetPluginInfoRequest {}).await?;
/// assert_eq!(info.name.as_str(), "hello.csi.example.com");
/// # served.abort();
/// # Ok(()) }
/// ```
pub async fn in_memory_channel() -> Result<(Channel, InMemoryIncoming), ConnectError> {
    let (connector, incoming) = in_memory_connector();
    let channel = connect_in_memory(connector)
        .await
        .map_err(|source| ConnectError::Transport {
            endpoint: "in-memory".to_string(),
            source,
        })?;
    Ok((channel, incoming))
}

/// Opens connections for [`in_memory_channel`]: each a new
/// `tokio::io::duplex` pipe, whose server end goes to the [`InMemoryIncoming`].
#[derive(Clone)]
pub(crate) struct InMemoryConnector(tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>);

/// A connector and the stream of the connections it opens.
pub(crate) fn in_memory_connector() -> (InMemoryConnector, InMemoryIncoming) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (InMemoryConnector(tx), InMemoryIncoming(rx))
}

/// A channel over `connector`'s connections, its first one open.
pub(crate) async fn connect_in_memory(
    connector: InMemoryConnector,
) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by tonic but unused: the connector makes the pipe.
    TonicEndpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (client_end, server_end) = tokio::io::duplex(IN_MEMORY_BUFFER);
            let opened = match connector.0.send(server_end) {
                Ok(()) => Ok(hyper_util::rt::TokioIo::new(client_end)),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "the in-memory server has stopped: nothing accepts this channel's connections any more",
                )),
            };
            std::future::ready(opened)
        }))
        .await
}

/// The server's side of an [`in_memory_channel`]: a stream of the
/// connections the channel opens, each one end of a `tokio::io::duplex`
/// pipe. It ends when the channel and every clone of it are dropped.
/// Dropping it refuses the channel's next connection.
#[derive(Debug)]
pub struct InMemoryIncoming(tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>);

impl futures::Stream for InMemoryIncoming {
    type Item = std::io::Result<tokio::io::DuplexStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
}

macro_rules! client_calls {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        #[async_trait]
        impl RawCsi for Client {
            $($(
                async fn $raw(&self, req: proto::$req) -> Result<proto::$resp, CsiError> {
                    let mut c = self.$field.clone();
                    self.bounded($rpc, c.$method(self.request(req))).await
                }
            )*)*

            // The call timeout bounds a stream's start (its first answer); the
            // server's `grpc-timeout` bounds the rest.
            async fn raw_get_metadata_allocated(
                &self,
                req: proto::GetMetadataAllocatedRequest,
            ) -> Result<RawStream<proto::GetMetadataAllocatedResponse>, CsiError> {
                let mut c = self.snapshot_metadata.clone();
                let stream = self
                    .bounded("GetMetadataAllocated", c.get_metadata_allocated(self.request(req)))
                    .await?;
                Ok(stream.map(|r| r.map_err(CsiError::from)).boxed())
            }

            async fn raw_get_metadata_delta(
                &self,
                req: proto::GetMetadataDeltaRequest,
            ) -> Result<RawStream<proto::GetMetadataDeltaResponse>, CsiError> {
                let mut c = self.snapshot_metadata.clone();
                let stream = self
                    .bounded("GetMetadataDelta", c.get_metadata_delta(self.request(req)))
                    .await?;
                Ok(stream.map(|r| r.map_err(CsiError::from)).boxed())
            }
        }
    };
}

crate::api::for_each_unary_rpc!(client_calls);
