//! A gRPC client for any CSI endpoint (feature `client`), for tests and tools.
//!
//! [`Client`] implements [`RawCsi`], and through it the typed [`crate::Csi`],
//! so the same code drives an in-process [`crate::Plugin`] or a plugin in
//! another process, written in any language.

use async_trait::async_trait;
use futures::stream::StreamExt;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::CsiError;
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
}

impl Client {
    /// Connects to `unix:///path` or `tcp://ip:port`.
    pub async fn connect(endpoint: &str) -> Result<Client, ConnectError> {
        let parsed: Endpoint = endpoint.parse()?;
        let transport = |source| ConnectError::Transport {
            endpoint: endpoint.to_string(),
            source,
        };
        let channel = match parsed {
            Endpoint::Unix(path) => {
                // The URI is required by tonic but unused: the connector dials the socket.
                TonicEndpoint::from_static("http://[::1]:50051")
                    .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                    .await
                    .map_err(transport)?
            }
            Endpoint::Tcp(addr) => TonicEndpoint::from_shared(format!("http://{addr}"))
                .map_err(transport)?
                .connect()
                .await
                .map_err(transport)?,
        };
        Ok(Client::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            group_controller: GroupControllerClient::new(channel.clone()),
            node: NodeClient::new(channel.clone()),
            snapshot_metadata: SnapshotMetadataClient::new(channel),
        }
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
                    Ok(c.$method(req).await?.into_inner())
                }
            )*)*

            async fn raw_get_metadata_allocated(
                &self,
                req: proto::GetMetadataAllocatedRequest,
            ) -> Result<RawStream<proto::GetMetadataAllocatedResponse>, CsiError> {
                let mut c = self.snapshot_metadata.clone();
                let stream = c.get_metadata_allocated(req).await?.into_inner();
                Ok(stream.map(|r| r.map_err(CsiError::from)).boxed())
            }

            async fn raw_get_metadata_delta(
                &self,
                req: proto::GetMetadataDeltaRequest,
            ) -> Result<RawStream<proto::GetMetadataDeltaResponse>, CsiError> {
                let mut c = self.snapshot_metadata.clone();
                let stream = c.get_metadata_delta(req).await?.into_inner();
                Ok(stream.map(|r| r.map_err(CsiError::from)).boxed())
            }
        }
    };
}

crate::api::for_each_unary_rpc!(client_calls);
