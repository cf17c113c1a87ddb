//! An SSD slice allocator: carves devices into right-sized, aligned slices, grows them in place,
//! reports capacity and fragmentation, and keeps its state crash-safe.
//!
//! Composers that split large SSDs into volumes need more than "total free space": a volume
//! fits only if some device has a large enough *contiguous* extent, and which device a slice
//! lands on matters more than the algorithm inside one device. This crate makes the device
//! choice an explicit [`DevicePolicy`], keeps per-device free extents indexed by offset and by
//! `(length, offset)`, and keeps a cross-device index of every free extent by length, so with
//! the default policy (best fit over the free extents of all devices) `allocate` and `free`
//! are O(log n) and never scan devices.
//!
//! It is pure computation: no async runtime, no threads of its own, no clock (callers pass
//! `now` to reservation calls), no files (the journal is written to a `std::io::Write` or a
//! [`JournalSink`] you pass and decoded from a `&[u8]`). Use it from a CSI controller, a
//! simulator or a test.
//!
//! # Example
//! ```
//! use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GIB};
//!
//! let mut a = Allocator::new(AllocatorConfig::default())?;
//! a.add_device(DeviceSpec::new(DeviceId::new(1), 100 * GIB)?)?;
//! a.add_device(DeviceSpec::new(DeviceId::new(2), 40 * GIB)?)?;
//!
//! // `allocate` rounds up: 30.5 GiB becomes 31 GiB (`allocate_range` never exceeds a limit);
//! // best fit picks device 2, whose free extent fits best.
//! let s = a.allocate(30 * GIB + GIB / 2, &Constraints::any())?;
//! assert_eq!((s.device, s.size()), (DeviceId::new(2), 31 * GIB));
//!
//! // Grow in place while the space after the slice is free; the error says what is possible.
//! a.grow(s.id, 35 * GIB)?;
//! let err = a.grow(s.id, 45 * GIB).unwrap_err();
//! assert!(err.to_string().contains("5368709120 bytes are free directly after it"));
//!
//! // What CSI GetCapacity's maximum_volume_size needs.
//! assert_eq!(a.largest_allocatable(), Some((DeviceId::new(1), 100 * GIB)));
//! # Ok::<(), slice_alloc::Error>(())
//! ```
//!
//! # Main pieces
//! - [`Allocator`]: devices, [`allocate`](Allocator::allocate),
//!   [`allocate_range`](Allocator::allocate_range) (CSI capacity ranges, exact at the
//!   allocation unit), [`free`](Allocator::free), [`grow`](Allocator::grow),
//!   [`shrink`](Allocator::shrink), [`allocate_at`](Allocator::allocate_at), two-phase
//!   [`reserve`](Allocator::reserve) / [`reserve_range`](Allocator::reserve_range) →
//!   [`commit`](Allocator::commit) / [`release`](Allocator::release), with
//!   [`renew`](Allocator::renew), [`reservations`](Allocator::reservations) and
//!   [`expire`](Allocator::expire).
//! - Reports: [`capacity`](Allocator::capacity) over a set of devices ([`CapacityReport`]:
//!   what CSI `GetCapacity` answers, reserved headroom and cordoned devices excluded),
//!   [`DeviceReport`], [`Histogram`], [`Fragmentation`], [`ceph_fragmentation_score`].
//! - Fleet operations: device [labels](Allocator::set_label) and
//!   [selection by label](Allocator::devices_matching) (topology segments),
//!   [`cordon`](Allocator::cordon) / [`uncordon`](Allocator::uncordon),
//!   [`resize_device`](Allocator::resize_device), [`set_reserved`](Allocator::set_reserved)
//!   (headroom) and [`drain_plan`](Allocator::drain_plan) ([`DrainPlan`]).
//! - Durability: [`Journaled`] (one caller, one flush per change) and [`GroupCommit`] (many
//!   threads, one sync per batch, through a [`JournalSink`] you implement), [`Snapshot`] and
//!   [`recover`]: a serde snapshot plus an append-only checksummed journal (format and recovery
//!   rules in the [`journal`] module docs). Every change is journaled, reservations included, so
//!   ids never repeat across restarts.
//!
//! Every method either succeeds or returns an error and changes nothing.
//!
//! # Features
//! - `proptest`: implements `proptest::arbitrary::Arbitrary` for the public value types and
//!   exposes the `strategies` module, so you can property-test code that uses this crate.

// The README's code blocks run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod alloc;
mod device;
mod error;
mod fleet;
mod group;
pub mod journal;
mod report;
#[cfg(feature = "proptest")]
pub mod strategies;
mod tx;
mod types;

pub use alloc::Allocator;
pub use error::Error;
pub use fleet::{DrainMove, DrainPlan, MAX_LABEL_KEY, MAX_LABEL_VALUE};
pub use group::{GroupCommit, GroupStats, JournalSink};
pub use journal::{
    DecodedJournal, DeviceSnapshot, DroppedTail, JournalEntry, Journaled, Record, Recovered,
    SliceSnapshot, Snapshot, decode_journal, encode_record, recover,
};
pub use report::{
    CapacityReport, DeviceReport, Fragmentation, Histogram, ceph_fragmentation_score,
};
pub use types::{
    AllocatorConfig, Constraints, DeviceId, DevicePolicy, DeviceSpec, Extent, GIB, Reservation,
    Slice, SliceId,
};
