//! A stateful placement engine that decides which drives hold the members of a volume.
//!
//! A composer that builds a RAID1 mirror must never put both legs behind one JBOD; one that
//! stripes a RAID10 across eight drives must spread the traffic across switch uplinks; one that
//! slices SSDs must pick which SSD. This crate knows the whole inventory — drives with kind,
//! capacity, RPM, tags, transports, health, storage group, their position in a failure-domain
//! hierarchy of any depth, the bandwidth domains they sit behind, and the servers volumes attach
//! to — and places volumes by **filter → score → select**:
//!
//! * *filter* drops drives that break a per-drive constraint (kind, RPM, tags, storage group,
//!   transport, requisite topology, reachability from the attach server, free space, bandwidth
//!   headroom, group quota);
//! * *score* prefers the least utilised drives with the least loaded bandwidth domains, then
//!   locality to the attach server and CSI preferred topology;
//! * *select* assigns members so that separation within each redundancy group (by failure-domain
//!   level, storage group or drive attribute) and bandwidth spreading hold — hard constraints
//!   always, soft ones when possible (violations reported).
//!
//! Selection first searches a small window of the best candidates taken from per-class indexes
//! (so one placement in a 100,000-drive inventory does not scan the drives), and only if that
//! fails runs a complete backtracking search with symmetry pruning, so "unsatisfiable" is never
//! answered for a request that has a placement. Before that search, counting and max-flow
//! bounds prove most impossible requests impossible, so refusals are fast and "search gave up"
//! is left for what nothing proves. Failures carry an [`Explanation`] as data: drives removed
//! per [`Filter`], what blocked as [`Blocker`] values with the numbers, and the
//! [`Relaxation`]s under which the request would be placeable; its message derives from them.
//!
//! [`Engine::max_placeable`] answers the largest member size a request could get now (CSI
//! `GetCapacity`); each member of a [`Placement`] names its transport, and
//! [`Engine::servers_reaching`] lists the servers that can attach a set of drives.
//!
//! Use it from a CSI controller, a composer, a simulator or the `place` example CLI: it is pure
//! computation with no I/O and no async runtime. Evacuation and drain plans
//! ([`Engine::plan_evacuation`], [`Engine::plan_drain`]) re-place only the affected members.
//!
//! # Example
//!
//! ```
//! use placement::{Engine, Inventory, Mode, Request, Shape, VolumeId};
//!
//! let inv = Inventory::from_toml(r#"
//!     [[domain]]
//!     id = "rack1"
//!     level = "rack"
//!     [[domain]]
//!     id = "rack2"
//!     level = "rack"
//!     [[drive]]
//!     id = "a"
//!     kind = "hdd"
//!     capacity = "8 TB"
//!     domain = "rack1"
//!     [[drive]]
//!     id = "b"
//!     kind = "hdd"
//!     capacity = "8 TB"
//!     domain = "rack1"
//!     [[drive]]
//!     id = "c"
//!     kind = "hdd"
//!     capacity = "8 TB"
//!     domain = "rack2"
//! "#).unwrap();
//! let mut engine = Engine::new(inv, 42).unwrap();
//!
//! let mirror = Request::new(Shape::Mirror { legs: 2 }, 100_000_000_000).separate("rack", Mode::Hard);
//! let placed = engine.place(VolumeId::new("pvc-1").unwrap(), &mirror).unwrap();
//! let racks: Vec<_> = placed
//!     .drives()
//!     .iter()
//!     .map(|d| engine.inventory().drive_domain_at(d, "rack").unwrap().to_string())
//!     .collect();
//! assert_ne!(racks[0], racks[1]);
//!
//! // Three legs cannot be rack-separated over two racks; the error says why.
//! let three = Request::new(Shape::Mirror { legs: 3 }, 1_000).separate("rack", Mode::Hard);
//! let err = engine.plan(&three).unwrap_err().to_string();
//! assert!(err.contains("satisfiable if rack separation were soft"), "{err}");
//! ```
//!
//! # Features
//!
//! * `proptest` — implements `proptest::arbitrary::Arbitrary` for the identifier and
//!   [`Bytes`] newtypes, so users can property-test their own code with them.
//!
//! File formats (inventory and requests, TOML) are described in the crate README.

mod access;
mod capacity;
mod cow;
mod engine;
mod explain;
mod index;
mod inventory;
mod model;
mod repair;
mod request;

pub use engine::{
    DEFAULT_SEARCH_BUDGET, Engine, MemberPlacement, Placement, PlacementError, SoftViolation,
};
pub use explain::{Blocker, Explanation, Filter, FilterCount, Relaxation, ScarceDomain, Scope};
pub use inventory::{
    BwDomainSpec, DomainSpec, DriveSpec, GroupSpec, Inventory, InventoryError, InventorySpec,
    ServerSpec, VolumeSpec,
};
pub use model::{
    BwDomainId, Bytes, DomainId, DriveId, DriveKind, GroupId, Health, IdError, ServerId,
    Transports, UnknownName, VolumeId, by_name,
};
pub use repair::{Move, PlanKind, RepairPlan, Unplaceable};
pub use request::{Mode, Pin, Request, RequestFile, Segment, Separation, Shape, Spread};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
