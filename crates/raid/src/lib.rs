//! md-exact RAID layout math, failure analysis and fast parity.
//!
//! A composer that assembles drives into RAID1, RAID10 or RAID6 for a volume
//! must know exactly where every byte lives, what the failure of a drive,
//! JBOD or rack costs, how long a rebuild takes, and what to read to do it.
//! Linux md runs on the servers, so this crate reproduces md's own
//! arithmetic bit for bit (`drivers/md/raid0.c`, `raid5.c`, `raid10.c`,
//! `lib/raid6`). It is pure computation: no I/O, no async runtime.
//!
//! Use it to:
//! * build a [`Geometry`] for any md personality and layout
//!   ([`Layout::parse`] takes mdadm's names: `left-symmetric`, `n2`, `f2`,
//!   `o2`, `ddf-N-restart`, …) and read its usable capacity, including
//!   mdadm's component-size rounding and v1.2 data offset ([`mdadm`]);
//! * map logical sectors to members ([`Geometry::map`],
//!   [`Geometry::map_range`]) and back ([`Geometry::unmap`]);
//! * plan writes: per stripe, which member ranges to read and write (data,
//!   P, Q), read-modify-write or reconstruct-write, healthy or degraded
//!   ([`Geometry::write_plan`], [`ParityEngine::fill_parity`]);
//! * compute and check P/Q parity and rebuild missing members of a stripe
//!   ([`ParityEngine`], SIMD chosen at run time);
//! * decide which failures lose data, whether an array survives the loss of
//!   any one rack, and plan rebuilds, range by range for every level
//!   ([`FailureModel`], [`FailureModel::rebuild_ranges`]);
//! * choose single/RAID1/RAID10/RAID0 for a requested volume and emit the
//!   `mdadm --create` arguments ([`choose_layout`]).
//!
//! ```
//! use raid::{Geometry, Layout, Level, ParityEngine};
//!
//! // A 5-member RAID6, left-symmetric, 64 KiB chunks, 1 GiB members.
//! let layout = Layout::parse(Level::Raid6, "left-symmetric")?;
//! let g = Geometry::new(layout, 128, &[2 * 1024 * 1024; 5])?;
//! assert_eq!(g.array_sectors(), 3 * 2 * 1024 * 1024);
//!
//! // Stripe 0 keeps P on the last member and Q on the first, so logical
//! // sector 0 is on member 1 (md: data starts just after Q).
//! let m = g.map(0)?;
//! assert_eq!((m.copies[0].member, m.copies[0].sector), (1, 0));
//! let parity = m.parity.unwrap();
//! assert_eq!((parity.p, parity.q), (4, Some(0)));
//!
//! // Encode one stripe, lose two members, get them back.
//! let stripe = g.stripe_layout(0)?;
//! let mut members: Vec<bytes::BytesMut> = (0..5u8)
//!     .map(|i| bytes::BytesMut::from(&[i; 4096][..]))
//!     .collect();
//! let engine = ParityEngine::detect();
//! engine.encode_stripe(&stripe, &mut members)?;
//! let original: Vec<bytes::Bytes> = members.into_iter().map(|m| m.freeze()).collect();
//! let mut damaged: Vec<Option<bytes::Bytes>> = original.iter().cloned().map(Some).collect();
//! damaged[1] = None;
//! damaged[4] = None;
//! assert_eq!(engine.reconstruct_stripe(&stripe, &damaged)?, original);
//! # Ok::<(), raid::RaidError>(())
//! ```
//!
//! # Features
//! * `proptest` (off by default): `proptest::arbitrary::Arbitrary` for
//!   [`Level`], [`Layout`], [`ParityAlgorithm`], [`Raid10Layout`],
//!   [`Sectors`] and [`ChunkSize`], and
//!   `strategies::geometry` for valid geometries of every layout, so that
//!   users can property-test their own code over all md layouts.
//!
//! SIMD (SSSE3, AVX2, AVX-512BW on x86-64) is not a feature: it is selected
//! at run time, and every other target uses the portable code. The one
//! module with `unsafe` code holds the SIMD kernels.
//!
//! # Units
//! Addresses and sizes are 512-byte sectors unless a name says `bytes`.
//! Member sectors count from the start of the member's data area (the
//! geometry's [`Geometry::data_offset`] into the device, when known). Where
//! sectors, bytes and KiB meet, the [`units`] types ([`Sectors`],
//! [`ChunkSize`]) carry the unit and convert to the workspace's
//! `storage_units::ByteSize`.

// Runs the README's code blocks as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod choose;
pub mod error;
pub mod failure;
mod fastdiv;
pub mod geometry;
pub mod layout;
pub mod mdadm;
pub mod parity;
#[cfg(feature = "proptest")]
pub mod strategies;
pub mod units;
pub mod write;

pub use choose::{ChoiceKind, LayoutChoice, LayoutRequest, choose_layout};
pub use error::{RaidError, Result};
pub use failure::{
    FailureDomains, FailureModel, RebuildPlan, RebuildRange, RebuildRates, ReliabilityParams,
    Survival,
};
pub use geometry::{
    Geometry, Location, Mapping, MemberContent, MemberExtent, StripeLayout, StripeParity,
};
pub use layout::{Layout, Level, ParityAlgorithm, Raid0Layout, Raid10Layout};
pub use parity::{Backend, ParityEngine};
pub use units::{ChunkSize, Sectors};
pub use write::{IoRole, MemberIo, StripeWrite, WritePlan, WriteStrategy};
