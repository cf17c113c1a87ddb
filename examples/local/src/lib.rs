//! `local`: the reference single-node CSI driver of the `csi-types` SDK.
//!
//! It serves Identity, Controller, GroupController and Node (and, for
//! block snapshots, the alpha SnapshotMetadata service) on one socket
//! and stores every volume under its state directory: a *mount* volume is a
//! directory whose size the driver accounts, a *block* volume is a sparse
//! image of the volume's size. Staging and publishing are real bind mounts
//! (read-only publishes are read-only bind mounts) and, for block volumes,
//! loop devices. Snapshots and clones really copy the data. The metadata is
//! saved atomically (temp file, fsync, rename, fsync of the directory), so a
//! driver killed at any instant restarts with every volume it acknowledged
//! and none half made.
//!
//! Use it to learn the SDK (the driver is written only against
//! [`csi_types::driver`]'s traits), as a storage backend for a one-node
//! cluster or a CI job, and as the subject of the conformance suite. The
//! binary (`cargo run -p local -- --help`) serves it; `cargo run -p local --
//! demo` runs it end to end against itself.
//!
//! # Example: the driver in process
//!
//! ```
//! use csi_types::prelude::*;
//! use csi_types::controller::{CreateVolumeRequest, GetCapacityRequest};
//! use csi_types::ids::VolumeName;
//! use csi_types::redact::Secrets;
//! use csi_types::types::{AccessMode, CapacityRange, Map, VolumeCapability};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let driver = local::LocalDriver::open(local::Config::with_state_dir(dir.path()))?;
//! let plugin = driver.plugin()?;
//!
//! let req = CreateVolumeRequest {
//!     name: VolumeName::new("pvc-1")?,
//!     capacity_range: Some(CapacityRange::exactly(64 << 20)),
//!     volume_capabilities: vec![VolumeCapability::mount(AccessMode::SingleNodeWriter)],
//!     parameters: Map::new(),
//!     secrets: Secrets::default(),
//!     volume_content_source: None,
//!     accessibility_requirements: None,
//!     mutable_parameters: Map::new(),
//! };
//! let vol = plugin.create_volume(req.clone()).await?.volume;
//! assert_eq!(vol.capacity_bytes, 64 << 20);
//! // Idempotent by name.
//! assert_eq!(plugin.create_volume(req).await?.volume, vol);
//!
//! let cap = plugin.get_capacity(GetCapacityRequest::default()).await?;
//! assert_eq!(cap.available_capacity, (10 << 30) - (64 << 20));
//! # Ok(()) }
//! ```
//!
//! Serve it on a socket with [`serve`], or call it over one with
//! `csi_types::client::Client`.
//!
//! # Features
//!
//! None: the crate is a binary with its driver exposed as a library for
//! tests and embedding.

pub mod config;
mod controller;
pub mod demo;
mod driver;
mod metadata;
mod node;
pub mod poll;
mod state;

pub use config::Config;
pub use driver::{DEFAULT_VOLUME_SIZE, GRANULARITY, IOPS_CLASSES, LocalDriver, MUTABLE_PARAMETERS};
pub use state::volume_data_path;

/// Serves the driver on `endpoint` (`unix:///path`) until `shutdown`
/// completes; the socket file is removed on the way out.
pub async fn serve(
    driver: &LocalDriver,
    endpoint: &str,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    serve_with_options(driver, endpoint, shutdown, Default::default()).await
}

/// [`serve`] with explicit server options (metrics address, call timeout, …).
pub async fn serve_with_options(
    driver: &LocalDriver,
    endpoint: &str,
    shutdown: impl std::future::Future<Output = ()> + Send,
    options: csi_types::server::ServeOptions,
) -> Result<(), String> {
    serve_with_poller(driver, endpoint, shutdown, options, None).await
}

/// [`serve_with_options`] with an [`poll::IdlePoller`] told of every call
/// (what the binary does with `--idle-poll N`, N > 0).
pub async fn serve_with_poller(
    driver: &LocalDriver,
    endpoint: &str,
    shutdown: impl std::future::Future<Output = ()> + Send,
    options: csi_types::server::ServeOptions,
    poller: Option<&poll::IdlePoller>,
) -> Result<(), String> {
    let plugin = driver.plugin().map_err(|e| e.to_string())?;
    let mut server = csi_types::server::Server::new(plugin).options(options);
    if let Some(poller) = poller {
        server = server.layer(poller.layer());
    }
    server
        .serve(endpoint, shutdown)
        .await
        .map_err(|e| e.to_string())
}

// The README's Rust examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The workspace README's Rust examples, compiled and run as doctests here (a crate that is
/// not published), so that every published crate's package holds all the files it reads.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadme;
