//! The crate's single error type. Every variant says which input or which piece of state broke
//! which rule, so an operator can act on the message alone.

use crate::{DeviceId, SliceId};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument broke a documented rule.
    #[error("invalid {field}: {rule}")]
    InvalidArgument {
        /// Which field or argument.
        field: &'static str,
        /// The rule it broke, with the offending value.
        rule: String,
    },
    /// A device with this id is already known.
    #[error("{0} already exists")]
    DuplicateDevice(DeviceId),
    /// No device with this id.
    #[error("{0} is not known to the allocator")]
    UnknownDevice(DeviceId),
    /// The device still holds slices or reservations.
    #[error(
        "{device} still holds {slices} slice(s) or reservation(s); free them before removing it"
    )]
    DeviceInUse {
        /// The device.
        device: DeviceId,
        /// How many slices and reservations it holds.
        slices: usize,
    },
    /// No candidate device can hold the request.
    #[error(
        "no device can hold {needed} bytes: {candidates} candidate device(s); largest allocatable \
         free extent {largest_extent} bytes (on {largest_on}); {fit_no_headroom} device(s) have a \
         large enough extent but would break their reserved headroom; {total_free} bytes free \
         across candidates{multi}{cordon}",
        largest_on = .largest_on.map_or_else(|| "no device".to_string(), |d| d.to_string()),
        cordon = if *.cordoned > 0 { format!("; {} candidate(s) cordoned", .cordoned) } else { String::new() },
        multi = if *.multi_extent { " (multi-extent allowed, but no single device has that much allocatable space)" } else { "" }
    )]
    Exhausted {
        /// Requested size in bytes.
        needed: u64,
        /// How many devices were considered.
        candidates: usize,
        /// The largest allocatable free extent among them.
        largest_extent: u64,
        /// The device holding it.
        largest_on: Option<DeviceId>,
        /// Devices with a fitting extent refused because of their reserved headroom.
        fit_no_headroom: usize,
        /// Total free bytes among the candidates.
        total_free: u64,
        /// Whether multi-extent allocation was allowed.
        multi_extent: bool,
        /// Candidates that are cordoned (they take no new slices).
        cordoned: usize,
    },
    /// The device is cordoned: it takes no new slices or reservations.
    #[error("{0} is cordoned: it takes no new slices or reservations")]
    Cordoned(DeviceId),
    /// A slice cannot grow by the requested amount.
    #[error(
        "cannot grow {slice} on {device} by {needed} bytes: {in_place} bytes are free directly after \
         it; the device has {device_free} bytes free in {free_extents} extent(s) (largest {largest_extent}); {hint}",
        hint = if *.multi_extent { "multi-extent growth is allowed but the device as a whole is short" } else { "multi-extent growth is disabled" }
    )]
    GrowNoSpace {
        /// The slice.
        slice: SliceId,
        /// Its device.
        device: DeviceId,
        /// Additional bytes needed.
        needed: u64,
        /// Bytes the device could give in place (contiguous, right after the slice).
        in_place: u64,
        /// Free bytes on the whole device.
        device_free: u64,
        /// Number of free extents on the device.
        free_extents: usize,
        /// Largest free extent on the device.
        largest_extent: u64,
        /// Whether multi-extent growth was allowed.
        multi_extent: bool,
    },
    /// No live slice or reservation with this id.
    #[error("{0} does not exist")]
    UnknownSlice(SliceId),
    /// The operation needs a committed slice but this id is a reservation (or the reverse).
    #[error("{slice} is {actual}; this operation needs {expected}")]
    WrongState {
        /// The slice.
        slice: SliceId,
        /// What it is.
        actual: &'static str,
        /// What the operation needs.
        expected: &'static str,
    },
    /// The reservation expired before it was committed or renewed; nothing changed, and its
    /// space goes back at the next `expire` (or `reserve`).
    #[error(
        "reservation {slice} expired at {expired_at} (now {now}); its space is released by the next expire"
    )]
    ReservationExpired {
        /// The reservation.
        slice: SliceId,
        /// When it expired.
        expired_at: u64,
        /// The caller's clock at commit.
        now: u64,
    },
    /// A slice id is used twice.
    #[error("{0} appears more than once")]
    DuplicateSlice(SliceId),
    /// A slice extent lies outside its device or is not aligned to the granularity.
    #[error("{slice} extent [{offset}, {end}) on {device} is invalid: {rule}")]
    BadExtent {
        /// The slice.
        slice: SliceId,
        /// Its device.
        device: DeviceId,
        /// Extent start.
        offset: u64,
        /// Extent end.
        end: u64,
        /// The rule broken (out of range, misaligned).
        rule: String,
    },
    /// Two slices (or a slice and a reservation) claim the same bytes.
    #[error("{slice} extent [{offset}, {end}) on {device} overlaps {}", .other.map_or_else(|| "space already in use".to_string(), |o| o.to_string()))]
    Overlap {
        /// The slice being placed.
        slice: SliceId,
        /// Its device.
        device: DeviceId,
        /// Extent start.
        offset: u64,
        /// Extent end.
        end: u64,
        /// The slice already holding (part of) that range, when known.
        other: Option<SliceId>,
    },
    /// The journal is damaged somewhere other than its tail, so acknowledged records would be
    /// lost by truncating it.
    #[error("journal corrupt at byte {offset}: {reason}")]
    CorruptJournal {
        /// Byte offset of the bad frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A journal record could not be applied during recovery.
    #[error("journal record {seq} at byte {offset} cannot be applied: {source}")]
    Replay {
        /// Sequence number of the record.
        seq: u64,
        /// Byte offset of its frame.
        offset: u64,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A snapshot is invalid.
    #[error("snapshot invalid: {0}")]
    BadSnapshot(Box<Error>),
    /// Writing or syncing a journal record failed; the operation was rolled back in memory.
    /// The journal may or may not hold it (a failed sync does not say what reached the disk):
    /// recovery from the journal decides.
    #[error(
        "journal write failed (operation rolled back; switch to a new journal to continue): {0}"
    )]
    JournalWrite(#[source] std::io::Error),
    /// An earlier journal write failed, so the journal may end in a partial frame; mutations are
    /// refused until [`Journaled::switch_journal`](crate::Journaled::switch_journal).
    #[error("journal poisoned by an earlier write failure; switch to a new journal to continue")]
    JournalPoisoned,
}
