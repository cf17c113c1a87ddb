//! Typed, validated CSI v1.12 messages, driver traits, the spec's error codes
//! and gRPC serving on a unix socket: the base of a Kubernetes CSI driver.
//!
//! A driver author implements the traits of [`driver`] with typed requests
//! that have already been validated against the spec, bundles them into a
//! [`Plugin`], and serves it. Everything else a CSI plugin must do the same
//! way every time is done here: field rules and size limits, capability
//! advertisement that agrees with what is implemented, `UNIMPLEMENTED` for
//! what is not, `ABORTED` for a second operation on a volume in flight,
//! panics isolated to one call, secrets never logged, stale sockets removed,
//! graceful shutdown.
//!
//! # Example: a minimal plugin
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use csi_types::prelude::*;
//! use csi_types::identity::{GetPluginInfoRequest, GetPluginInfoResponse};
//! use csi_types::ids::{NodeId, PluginName};
//! use csi_types::node::{NodeGetInfoRequest, NodeGetInfoResponse, NodePublishVolumeRequest};
//! use csi_types::node::{NodePublishVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse};
//! use csi_types::{RawCsi, proto};
//!
//! struct Hello;
//!
//! #[async_trait]
//! impl Identity for Hello {
//!     async fn get_plugin_info(&self, _: GetPluginInfoRequest) -> Result<GetPluginInfoResponse, CsiError> {
//!         GetPluginInfoResponse::new(PluginName::new("hello.csi.example.com")?, "0.1.0")
//!     }
//! }
//!
//! #[async_trait]
//! impl Node for Hello {
//!     async fn node_publish_volume(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse, CsiError> {
//!         Err(CsiError::not_found(format!("volume {} does not exist", req.volume_id)))
//!     }
//!     async fn node_unpublish_volume(&self, _: NodeUnpublishVolumeRequest) -> Result<NodeUnpublishVolumeResponse, CsiError> {
//!         Ok(NodeUnpublishVolumeResponse {})
//!     }
//!     async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
//!         Ok(NodeGetInfoResponse::new(NodeId::new("node-1")?))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CsiError> {
//! let hello = Arc::new(Hello);
//! let plugin = Plugin::builder(hello.clone()).node(hello).build()?;
//!
//! // Call it in process, typed (a `client::Client` offers the same calls over a socket) ...
//! let info = plugin.node_get_info(NodeGetInfoRequest {}).await?;
//! assert_eq!(info.node_id.as_str(), "node-1");
//!
//! // ... or at the wire level, where a bad request never reaches the driver.
//! let err = plugin.raw_node_publish_volume(proto::NodePublishVolumeRequest::default()).await.unwrap_err();
//! assert_eq!(err.code(), Code::InvalidArgument);
//! assert_eq!(err.to_string(), "invalid `volume_id`: this field is REQUIRED");
//!
//! // What is not registered is not advertised, and answers UNIMPLEMENTED.
//! assert!(plugin.node_capabilities().is_empty());
//! let err = plugin.raw_create_volume(proto::CreateVolumeRequest::default()).await.unwrap_err();
//! assert_eq!(err.code(), Code::Unimplemented);
//! # Ok(()) }
//! ```
//!
//! To serve it on a unix socket until SIGTERM or SIGINT (feature `server`):
//!
//! ```no_run
//! # async fn run(plugin: csi_types::Plugin) -> Result<(), csi_types::server::ServeError> {
//! csi_types::server::serve(plugin, "unix:///csi/csi.sock", csi_types::server::shutdown_signal()).await
//! # }
//! ```
//!
//! # Layers
//!
//! - [`proto`]: the raw wire types, generated from the project's
//!   `proto/csi.proto` (written from the CSI v1.12.0 specification).
//! - Typed messages ([`controller`], [`node`], [`identity`],
//!   [`group_controller`], [`snapshot_metadata`], shared [`types`]), built
//!   from the wire with `TryFrom` (validating) and converted back with `From`.
//!   Responses are built with constructors that take every REQUIRED field,
//!   and [`Plugin`] checks every response against the spec before sending it
//!   (a driver that sets a public field out of bounds gets `INTERNAL`, not a
//!   malformed reply). Sizes are `u64`; the wire's `int64` cannot carry more
//!   than `i64::MAX`, so a message with a size is converted to the wire with
//!   `TryFrom`, which refuses a larger one naming the field: a request is
//!   refused before it is sent (`INVALID_ARGUMENT`), and a response a driver
//!   built answers `INTERNAL`, rather than either being sent as another size.
//!   Two rules shape the typed layer where the spec leaves room: a request
//!   that names a missing object gets the missing-object answer first, its
//!   *object-bound* fields kept raw until the driver's lookup ([`bound`]);
//!   and response rules come in two severities, MUST (an error in the
//!   client) and tolerated (accepted, with a warning) ([`check`]).
//! - [`driver`]: the traits a driver implements; [`Plugin`]: the bundle.
//! - [`RawCsi`] / [`Csi`]: every RPC, wire-level (`raw_create_volume`, …)
//!   or typed (`create_volume`, …), implemented by [`Plugin`] and by
//!   `client::Client`. The method names differ, so both traits can be in
//!   scope and `plugin.create_volume(req)` is the typed call.
//! - [`prelude`]: the driver traits, [`Plugin`], [`CsiError`], [`Code`] and
//!   [`Csi`], for `use csi_types::prelude::*`.
//! - [`server`] and [`client`]: tonic serving and dialing.
//! - [`paging`]: `ListVolumes`/`ListSnapshots` pages and tokens, for drivers.
//!
//! Every item has one path: the root holds only [`Plugin`],
//! [`PluginBuilder`], [`BuildError`], [`CsiError`], [`Code`], [`Csi`] and
//! [`RawCsi`]; messages, ids, capabilities, the driver traits and the spec's
//! size [`limits`] are under their modules.
//!
//! # Features
//!
//! - `server` (default): [`server::serve`] over tonic on `unix://` or `tcp://`.
//! - `client` (default): `client::Client`, a [`RawCsi`] over gRPC; with
//!   `server` too, `server::Server::serve_in_memory` serves a plugin in the
//!   process and returns a client of it, for tests without a socket.
//! - `mock`: mockall mocks of every driver trait (`driver::MockIdentity`,
//!   `driver::MockProvisioner`, …), for code built around a driver.
//! - `proptest`: `Arbitrary` for every typed request, response and newtype.

pub mod api;
pub mod bound;
pub mod capabilities;
pub mod check;
#[cfg(feature = "client")]
pub mod client;
pub mod controller;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod group_controller;
pub mod identity;
pub mod ids;
#[cfg(feature = "logging")]
pub mod logging;
mod messages;
pub mod node;
pub mod paging;
pub mod plugin;
pub mod prelude;
pub mod proto;
pub mod redact;
#[cfg(feature = "server")]
pub mod server;
pub mod snapshot_metadata;
pub mod types;
mod validate;

#[cfg(feature = "proptest")]
pub mod arbitrary;

/// This crate's README examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadme;

// The root is small on purpose: the names nearly every driver file needs
// (also in `prelude`), and the modules. Messages, ids, capabilities and the
// driver traits live at one path each, under their modules, so a glob import
// of the root brings no `Node`, `Volume`, `Snapshot` or `Map` into scope.
pub use api::{Csi, RawCsi};
pub use error::{Code, CsiError};
pub use plugin::{BuildError, Plugin, PluginBuilder};

/// The longest wait the client and the server pass on to tonic and hyper: 99,999,999 hours,
/// the most `grpc-timeout` can say. Longer options are taken as this, since tonic panics on a
/// longer `grpc-timeout` and hyper on a keepalive that overflows an `Instant`.
#[cfg(any(feature = "server", feature = "client"))]
pub(crate) const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(99_999_999 * 3600);

/// The size limits of the CSI specification, in bytes, that the typed layer
/// enforces on every request and response.
pub mod limits {
    pub use crate::validate::{MAX_MAP_BYTES, MAX_NODE_ID_BYTES, MAX_PATH_BYTES, MAX_STRING_BYTES};
}
