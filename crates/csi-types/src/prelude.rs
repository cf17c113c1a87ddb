//! The names a driver author needs in nearly every file, and nothing else:
//! the driver traits, [`Plugin`], the error type and code, and the typed
//! call API [`Csi`].
//!
//! Messages, identifiers and capabilities stay under their modules
//! ([`crate::controller`], [`crate::node`], [`crate::ids`],
//! [`crate::capabilities`], …), so a glob import of the prelude brings no
//! `Volume`, `Snapshot` or `Map` into a vendor's namespace. The wire-level
//! [`crate::RawCsi`] is left out on purpose: its methods are named `raw_*`,
//! and with the prelude alone `plugin.create_volume(req)` is the typed call.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use csi_types::prelude::*;
//! use csi_types::identity::{GetPluginInfoRequest, GetPluginInfoResponse};
//! use csi_types::ids::PluginName;
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
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CsiError> {
//! let plugin = Plugin::builder(Arc::new(Hello)).build()?;
//! let info = plugin.get_plugin_info(GetPluginInfoRequest {}).await?;
//! assert_eq!(info.name.as_str(), "hello.csi.example.com");
//! # Ok(()) }
//! ```

pub use crate::api::Csi;
pub use crate::driver::{
    BlockMetadataStream, CapacityReporter, Controller, ControllerExpander, ControllerPublisher,
    GroupController, Identity, Node, NodeExpander, NodeStager, NodeVolumeStats, Provisioner,
    SnapshotGetter, SnapshotLister, SnapshotMetadata, Snapshotter, VolumeGetter, VolumeLister,
    VolumeModifier,
};
pub use crate::error::{Code, CsiError};
pub use crate::plugin::{BuildError, Plugin, PluginBuilder};
