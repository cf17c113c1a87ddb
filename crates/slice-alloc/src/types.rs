//! Identifiers, units and the small value types shared by the allocator, its reports and its
//! journal. Every type here validates its invariants at construction, so code that receives one
//! never re-checks it.

use serde::{Deserialize, Serialize};

use crate::Error;

/// One gibibyte, the default allocation granularity.
pub const GIB: u64 = 1 << 30;

/// Identifies a device (an SSD or a namespace on one) known to the allocator.
///
/// # Invariants
/// None beyond being a `u64`; uniqueness within one allocator is checked by
/// [`Allocator::add_device`](crate::Allocator::add_device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(u64);

impl DeviceId {
    /// Wraps a raw device number.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw device number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {}", self.0)
    }
}

/// Identifies a slice (or a reservation, which is a slice not yet committed).
///
/// # Invariants
/// Assigned by the allocator, never reused within one allocator's lifetime (the counter is
/// carried by snapshots and journal records). Below `u64::MAX`: a snapshot or journal record
/// with that id is refused, since no id would be left after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SliceId(u64);

impl SliceId {
    /// Wraps a raw slice number (for restoring state or looking a slice up).
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw slice number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for SliceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slice {}", self.0)
    }
}

/// A byte range `[offset, offset + len)` on one device.
///
/// # Invariants
/// `len > 0` and `offset + len` does not overflow `u64`. Alignment to a device's granularity
/// is checked where an extent meets a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawExtent")]
pub struct Extent {
    offset: u64,
    len: u64,
}

#[derive(Deserialize)]
struct RawExtent {
    offset: u64,
    len: u64,
}

impl TryFrom<RawExtent> for Extent {
    type Error = Error;
    fn try_from(raw: RawExtent) -> Result<Self, Error> {
        Extent::new(raw.offset, raw.len)
    }
}

impl Extent {
    /// A byte range; fails if `len` is zero or the end overflows.
    pub fn new(offset: u64, len: u64) -> Result<Self, Error> {
        if len == 0 {
            return Err(Error::InvalidArgument {
                field: "extent.len",
                rule: format!("must be greater than zero (offset {offset})"),
            });
        }
        if offset.checked_add(len).is_none() {
            return Err(Error::InvalidArgument {
                field: "extent.offset",
                rule: format!("offset {offset} + len {len} overflows u64"),
            });
        }
        Ok(Self { offset, len })
    }
    /// An extent the allocator built from its own state, where `len > 0` and no overflow
    /// already hold (device capacities fit in `u64`): skips [`Extent::new`]'s checks and its
    /// `Result`, which cost a noticeable share of every `allocate` and `free`.
    pub(crate) const fn from_valid(offset: u64, len: u64) -> Self {
        debug_assert!(len > 0 && offset.checked_add(len).is_some());
        Self { offset, len }
    }
    /// First byte of the range.
    pub const fn offset(&self) -> u64 {
        self.offset
    }
    /// Length in bytes (never zero).
    pub const fn len(&self) -> u64 {
        self.len
    }
    /// Always `false`: extents are never empty. Present for API symmetry with `len`.
    pub const fn is_empty(&self) -> bool {
        false
    }
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.offset + self.len
    }
    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &Extent) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

/// A device's geometry: capacity, allocation granularity and reserved headroom.
///
/// # Invariants
/// `granularity > 0`; `capacity >= granularity`; `reserved <= capacity`. The usable capacity is
/// `capacity` rounded *down* to a multiple of `granularity` (a partial unit at the end of a
/// device can never hold an aligned slice); `reserved` is rounded *up* to whole units.
///
/// `reserved` is headroom that new allocations must leave free on the device; growing an
/// existing slice may use it (that is what the headroom is for).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawDeviceSpec")]
pub struct DeviceSpec {
    id: DeviceId,
    capacity: u64,
    granularity: u64,
    reserved: u64,
}

#[derive(Deserialize)]
struct RawDeviceSpec {
    id: DeviceId,
    capacity: u64,
    granularity: u64,
    #[serde(default)]
    reserved: u64,
}

impl TryFrom<RawDeviceSpec> for DeviceSpec {
    type Error = Error;
    fn try_from(raw: RawDeviceSpec) -> Result<Self, Error> {
        DeviceSpec::from_parts(raw.id, raw.capacity, raw.granularity, raw.reserved)
    }
}

impl DeviceSpec {
    /// A device of `capacity` bytes with the default 1 GiB granularity and no reserved headroom.
    pub fn new(id: DeviceId, capacity: u64) -> Result<Self, Error> {
        Self::check(id, capacity, GIB, 0)?;
        Ok(Self {
            id,
            capacity,
            granularity: GIB,
            reserved: 0,
        })
    }

    /// A device with every field given at once (needed when the capacity is below the default
    /// 1 GiB granularity).
    pub fn from_parts(
        id: DeviceId,
        capacity: u64,
        granularity: u64,
        reserved: u64,
    ) -> Result<Self, Error> {
        Self::check(id, capacity, granularity, reserved)?;
        Ok(Self {
            id,
            capacity,
            granularity,
            reserved,
        })
    }

    /// Sets the allocation granularity (every slice offset and length is a multiple of it).
    pub fn with_granularity(self, granularity: u64) -> Result<Self, Error> {
        Self::check(self.id, self.capacity, granularity, self.reserved)?;
        Ok(Self {
            granularity,
            ..self
        })
    }

    /// Sets the reserved headroom in bytes (rounded up to whole granules).
    pub fn with_reserved(self, reserved: u64) -> Result<Self, Error> {
        Self::check(self.id, self.capacity, self.granularity, reserved)?;
        Ok(Self { reserved, ..self })
    }

    fn check(id: DeviceId, capacity: u64, granularity: u64, reserved: u64) -> Result<(), Error> {
        let bad = |field, rule: String| {
            Err(Error::InvalidArgument {
                field,
                rule: format!("{id}: {rule}"),
            })
        };
        if granularity == 0 {
            return bad("device.granularity", "must be greater than zero".into());
        }
        if capacity < granularity {
            return bad(
                "device.capacity",
                format!("{capacity} bytes is smaller than one granule of {granularity} bytes"),
            );
        }
        if reserved > capacity {
            return bad(
                "device.reserved",
                format!("{reserved} bytes exceeds the capacity of {capacity} bytes"),
            );
        }
        Ok(())
    }

    /// The same device with a new capacity (checked like [`DeviceSpec::from_parts`]).
    pub fn with_capacity(self, capacity: u64) -> Result<Self, Error> {
        Self::check(self.id, capacity, self.granularity, self.reserved)?;
        Ok(Self { capacity, ..self })
    }

    /// The device identifier.
    pub const fn id(&self) -> DeviceId {
        self.id
    }
    /// Capacity in bytes as given.
    pub const fn capacity(&self) -> u64 {
        self.capacity
    }
    /// Allocation granularity in bytes.
    pub const fn granularity(&self) -> u64 {
        self.granularity
    }
    /// Reserved headroom in bytes as given.
    pub const fn reserved(&self) -> u64 {
        self.reserved
    }
    /// Usable capacity in granules (capacity rounded down).
    pub const fn units(&self) -> u64 {
        self.capacity / self.granularity
    }
    /// Reserved headroom in granules (rounded up).
    pub const fn reserved_units(&self) -> u64 {
        self.reserved.div_ceil(self.granularity)
    }
}

/// How the allocator chooses a device among the candidates that can hold a slice.
///
/// Within the chosen device the extent is picked as [`AllocatorConfig::growth_headroom_percent`]
/// describes, except under [`BestFitExtent`](Self::BestFitExtent), whose device choice already
/// names the extent.
///
/// Figures from the 1,000-device benchmark in the crate README (90% fill, 1,000,000 mixed
/// operations, 11 seeds): neither best-fit policy ever failed an allocation; `BestFitExtent`
/// left a Ceph fragmentation score of 0.04–0.06 and 4.5–6.4% of slices able to grow 10% in
/// place, `BestFitLargestExtent` 0.08–0.11 and 8.7–10.3%.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DevicePolicy {
    /// The device holding the smallest free extent, over all candidates, that fits the slice
    /// (ties go to the device added first); the slice goes into that extent.
    ///
    /// Small slices fill the holes that frees leave on part-full devices, so free space stays
    /// in few, large extents, and large extents stay whole for large requests. O(log e) in the
    /// e free extents of all devices, through an index of every free extent kept on every
    /// change; with a candidate list, O(log) per candidate.
    #[default]
    BestFitExtent,
    /// The device whose largest allocatable free extent is the *smallest* one that still fits.
    /// Keeps large extents whole for large requests, and leaves more slices room to grow in
    /// place than `BestFitExtent`, at the cost of more fragmented free space (small slices
    /// are carved from a device's largest extent instead of filling its holes). O(log n) over
    /// devices.
    BestFitLargestExtent,
    /// The device with the most free bytes that can fit the slice (the usual CSI driver default).
    /// Walks the free-space index from the top; it stops at the first device that fits, which
    /// is the first one unless free space is badly fragmented.
    MostFree,
    /// The device with the lowest `1 - largest/free` fragmentation that can fit the slice. Walks
    /// the fragmentation index from the bottom and stops at the first device that fits.
    LeastFragmented,
    /// The device with the *largest* free extent (worst fit): spreads slices across devices and
    /// leaves the most room after each slice for growth. O(log n) over devices.
    SpreadWithHeadroom,
}

/// Allocator-wide settings. Missing fields deserialize to their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllocatorConfig {
    /// Default device policy (a call's [`Constraints`] may override it).
    pub policy: DevicePolicy,
    /// Room for growth, as a share of the slice, that placement tries to leave after each new
    /// slice. Under every policy but [`DevicePolicy::BestFitExtent`], the extent inside the
    /// chosen device is an exact fit if there is one, otherwise the smallest extent that
    /// leaves at least this share free after the slice, otherwise the smallest that fits.
    /// Under every policy, the slice goes at the start of its extent when the space left over
    /// is at least this share (the slice may grow into it), and otherwise at the end, so that
    /// the leftover stays behind the slice before it, which may still grow into it. `0` gives
    /// plain best fit, each slice at the start of its extent. At most 100.
    pub growth_headroom_percent: u8,
    /// Whether slices may consist of several extents on one device (like LVM segments): used
    /// by `grow` when the space right after the slice is taken, and by `allocate` when no
    /// single extent fits. A call's [`Constraints`] may override it for `allocate`.
    pub multi_extent: bool,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            policy: DevicePolicy::BestFitExtent,
            growth_headroom_percent: 10,
            multi_extent: false,
        }
    }
}

/// Per-call constraints for [`Allocator::allocate`](crate::Allocator::allocate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Constraints<'a> {
    /// Candidate devices (for example pre-filtered by failure domain). `None` lets the allocator
    /// choose among all devices through its indexes.
    pub candidates: Option<&'a [DeviceId]>,
    /// Overrides the allocator's default policy.
    pub policy: Option<DevicePolicy>,
    /// Overrides [`AllocatorConfig::multi_extent`] for this allocation.
    pub multi_extent: Option<bool>,
}

impl<'a> Constraints<'a> {
    /// Any device, default policy.
    pub const fn any() -> Self {
        Self {
            candidates: None,
            policy: None,
            multi_extent: None,
        }
    }
    /// Only these devices.
    pub const fn on_devices(candidates: &'a [DeviceId]) -> Self {
        Self {
            candidates: Some(candidates),
            policy: None,
            multi_extent: None,
        }
    }
    /// Uses `policy` for this call.
    pub const fn with_policy(self, policy: DevicePolicy) -> Self {
        Self {
            policy: Some(policy),
            ..self
        }
    }
    /// Allows or forbids multi-extent slices for this call.
    pub const fn with_multi_extent(self, allow: bool) -> Self {
        Self {
            multi_extent: Some(allow),
            ..self
        }
    }
}

/// A slice handed out by the allocator: one device, one or more extents.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    /// The slice identifier.
    pub id: SliceId,
    /// The device holding every extent.
    pub device: DeviceId,
    /// Extents in slice order (the slice's logical bytes run through them in this order).
    pub extents: Vec<Extent>,
}

impl Slice {
    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        self.extents.iter().map(Extent::len).sum()
    }
}

/// A reservation: space set aside by [`Allocator::reserve`](crate::Allocator::reserve) until it
/// is committed, released or expires.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// The space held; its id is the reservation id.
    pub slice: Slice,
    /// The caller's clock value at and after which the reservation is expired.
    pub expires_at: u64,
}
