//! The reusable core of a *composer*: software that owns a pool of
//! disaggregated drives (JBODs and flash enclosures reached over Ethernet)
//! and carves it into volumes on demand.
//!
//! * [`Inventory`]: the data centre (sites, storage groups, racks, switches,
//!   JBODs/eBODs with HDD, SSD and NVMe drives, servers, tags, transports) in
//!   one TOML format, with a built-in default ([`DEFAULT_INVENTORY`]).
//! * [`Parameters`]: StorageClass parameters, every key typed and checked.
//! * [`Pool`]: the plan of a volume: md layout with `raid`, drives with
//!   `placement`, SSD slices with `slice-alloc`.
//! * [`Store`]: durable records, with [`RedbStore`] as the embedded default.
//! * [`Composer`]: the controller logic on top (create, delete, publish,
//!   list, capacity, expansion, health marks and repairs), CSI-shaped but
//!   transport-free; `examples/composer` serves it over gRPC.
//!
//! [`convert`] is the one place where inventory ids meet placement's ids and
//! CSI's node ids and topology.
//!
//! ```
//! use composer_core::{Composer, Inventory, MemStore, Parameters};
//! use std::sync::Arc;
//!
//! let composer = Composer::open(Inventory::default_inventory(), Arc::new(MemStore::default())).unwrap();
//! let params = [("redundancy".to_string(), "true".to_string())].into();
//! let v = composer
//!     .create("pvc-1", &params, csi_types::types::CapacityRange::new(Some(20_000_000_000_000), None).unwrap(), false, true, None)
//!     .unwrap();
//! assert_eq!(v.layout.kind, composer_core::LayoutKind::Raid10);
//! assert!(v.capacity >= 20_000_000_000_000);
//! ```

pub mod composer;
pub mod convert;
mod error;
pub mod inventory;
pub mod params;
pub mod plan;
pub mod store;
#[cfg(feature = "etcd")]
pub mod store_etcd;

pub use composer::Composer;
pub use error::Error;
pub use inventory::{DEFAULT_INVENTORY, Health, Inventory, Media, Transport};
pub use params::{EncryptionFormat, LUKS2_HEADER_BYTES, Parameters, VolumeType};
pub use plan::{Plan, Pool, ReconcileReport, VolumeRequest};
pub use store::{
    Batch, Changes, LayoutKind, MemStore, Op, RedbStore, Store, StoredState, VolumeRecord,
};
#[cfg(feature = "etcd")]
pub use store_etcd::{
    Audit, EtcdConfig, EtcdStore, EtcdTls, Leadership, LocalEtcd, LocalEtcdTls, Term,
};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
