//! The allocator: devices, slices, reservations and the cross-device indexes that let
//! `allocate` and `free` run in O(log n) without scanning devices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::device::{Device, ExtentIndex, LazyIndex, pack, unpack};
use crate::tx::Tx;
use crate::{
    AllocatorConfig, Constraints, DeviceId, DevicePolicy, DeviceSpec, Error, Extent, Reservation,
    Slice, SliceId,
};

/// Multiplicative hasher for the sequential `u64` ids used as map keys: the ids are not
/// attacker-chosen, and SipHash would cost a noticeable share of an allocation.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Extents of one slice in granules; the common single-extent case needs no heap allocation.
#[derive(Clone, Debug)]
pub(crate) enum Exts {
    One((u64, u64)),
    Many(Vec<(u64, u64)>),
}

impl Exts {
    pub(crate) fn as_slice(&self) -> &[(u64, u64)] {
        match self {
            Exts::One(e) => std::slice::from_ref(e),
            Exts::Many(v) => v,
        }
    }
    fn from_vec(mut v: Vec<(u64, u64)>) -> Self {
        if v.len() == 1 {
            Exts::One(v.pop().unwrap_or_default())
        } else {
            Exts::Many(v)
        }
    }
    pub(crate) fn units(&self) -> u64 {
        self.as_slice().iter().map(|e| e.1).sum()
    }
    /// Appends `(off, len)`, merging it into the last extent when contiguous.
    fn push(&mut self, off: u64, len: u64) {
        match self {
            Exts::One(last) if last.0 + last.1 == off => last.1 += len,
            Exts::One(last) => *self = Exts::Many(vec![*last, (off, len)]),
            Exts::Many(v) => match v.last_mut() {
                Some(last) if last.0 + last.1 == off => last.1 += len,
                _ => v.push((off, len)),
            },
        }
    }
    fn last_mut(&mut self) -> &mut (u64, u64) {
        match self {
            Exts::One(e) => e,
            Exts::Many(v) => v.last_mut().expect("a slice always has an extent"),
        }
    }
    fn pop_last(&mut self) {
        if let Exts::Many(v) = self {
            v.pop();
            if v.len() == 1 {
                *self = Exts::One(v[0]);
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) device: u32,
    pub(crate) exts: Exts,
    /// `Some(t)` for a reservation expiring at `t`; `None` for a committed slice.
    pub(crate) expires: Option<u64>,
}

/// An SSD slice allocator over many devices. See the [crate docs](crate) for an overview.
///
/// # Invariants
/// Every slice lies inside its device, is aligned to the device's granularity and overlaps no
/// other slice or reservation; for every device, free + allocated = usable capacity. Every
/// public method either succeeds or returns an error leaving the allocator exactly as it was,
/// next slice id included (also for a journaled change undone after its write failed or its
/// record was refused: an id never acknowledged may be handed out again, one acknowledged never).
#[derive(Clone, Debug)]
pub struct Allocator {
    pub(crate) config: AllocatorConfig,
    pub(crate) devices: Vec<Option<Device>>,
    pub(crate) by_id: IdMap<DeviceId, u32>,
    /// `(largest allocatable bytes, device index)` per device, packed by [`pack`], for
    /// `BestFitLargestExtent` and `SpreadWithHeadroom`. Maintained lazily: changed devices are
    /// queued in `dirty` (one queue per lazy index) and re-keyed when a query needs the index,
    /// so a policy does not pay for indexes it never reads.
    by_allocatable: BTreeSet<u128>,
    /// Free bytes per device, for `MostFree` and multi-extent allocation; lazy.
    by_free: BTreeSet<(u64, u32)>,
    /// `1 - largest/free` in ppm per device, for `LeastFragmented`; lazy like `by_free`.
    by_frag: BTreeSet<(u32, u32)>,
    /// Devices changed since each [`LazyIndex`] was last refreshed, indexed by it.
    dirty: [Vec<u32>; 3],
    /// Every free extent of every device by length, for `BestFitExtent` and
    /// [`largest_allocatable`](Self::largest_allocatable). Kept up to date on every change.
    pub(crate) by_extent: ExtentIndex,
    pub(crate) slices: IdMap<SliceId, Entry>,
    expiry: BTreeSet<(u64, SliceId)>,
    pub(crate) next_id: u64,
    /// Totals in u128: the sum over devices may exceed u64 (reported saturated).
    pub(crate) capacity: u128,
    free: u128,
    /// Free bytes new allocations may take (headroom and cordoned devices excluded).
    avail: u128,
    /// Number of devices per allocation unit, for [`allocate_range`](Self::allocate_range).
    grans: BTreeMap<u64, usize>,
}

impl Allocator {
    /// An allocator without devices.
    pub fn new(config: AllocatorConfig) -> Result<Self, Error> {
        if config.growth_headroom_percent > 100 {
            return Err(Error::InvalidArgument {
                field: "config.growth_headroom_percent",
                rule: format!("{} is above 100", config.growth_headroom_percent),
            });
        }
        Ok(Self {
            config,
            devices: Vec::new(),
            by_id: IdMap::default(),
            by_allocatable: BTreeSet::new(),
            by_free: BTreeSet::new(),
            by_frag: BTreeSet::new(),
            dirty: Default::default(),
            by_extent: ExtentIndex::default(),
            slices: IdMap::default(),
            expiry: BTreeSet::new(),
            next_id: 1,
            capacity: 0,
            free: 0,
            avail: 0,
            grans: BTreeMap::new(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    /// Adds an empty device.
    pub fn add_device(&mut self, spec: DeviceSpec) -> Result<(), Error> {
        if self.by_id.contains_key(&spec.id()) {
            return Err(Error::DuplicateDevice(spec.id()));
        }
        let idx = u32::try_from(self.devices.len()).map_err(|_| Error::InvalidArgument {
            field: "device",
            rule: "more than u32::MAX devices".into(),
        })?;
        let d = Device::new(spec, idx, &mut self.by_extent);
        let (k, lazy) = (d.keys, d.lazy);
        self.by_allocatable
            .insert(pack(lazy.allocatable, idx.into()));
        self.by_free.insert((lazy.free, idx));
        self.by_frag.insert((lazy.frag, idx));
        self.capacity += u128::from(d.units * d.gran());
        self.free += u128::from(k.free);
        self.avail += u128::from(k.avail);
        *self.grans.entry(d.gran()).or_insert(0) += 1;
        self.by_id.insert(d.spec.id(), idx);
        self.devices.push(Some(d));
        Ok(())
    }

    /// Removes a device that holds no slices or reservations, returning its spec.
    pub fn remove_device(&mut self, id: DeviceId) -> Result<DeviceSpec, Error> {
        let idx = self.idx(id)?;
        let d = self.dev(idx);
        if d.slices > 0 {
            return Err(Error::DeviceInUse {
                device: id,
                slices: d.slices,
            });
        }
        let d = self.devices[idx as usize]
            .take()
            .expect("indexed device exists");
        let (k, lazy) = (d.keys, d.lazy);
        d.unindex(&mut self.by_extent);
        self.by_allocatable
            .remove(&pack(lazy.allocatable, idx.into()));
        self.by_free.remove(&(lazy.free, idx));
        self.by_frag.remove(&(lazy.frag, idx));
        self.capacity -= u128::from(d.units * d.gran());
        self.free -= u128::from(k.free);
        self.avail -= u128::from(k.avail);
        if let Some(n) = self.grans.get_mut(&d.gran()) {
            *n -= 1;
            if *n == 0 {
                self.grans.remove(&d.gran());
            }
        }
        self.by_id.remove(&id);
        Ok(d.spec)
    }

    /// The specs of all devices, in the order they were added.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceSpec> + '_ {
        self.devices.iter().flatten().map(|d| &d.spec)
    }

    /// Allocates a slice of at least `size` bytes (rounded up to the chosen device's
    /// granularity) on a device chosen by the policy among the candidates.
    ///
    /// Rounding up may exceed `size` by almost a unit: for a CSI capacity range, whose limit
    /// must not be exceeded, use [`allocate_range`](Self::allocate_range). Cordoned devices
    /// are never chosen.
    ///
    /// Never fails while some candidate device has a single free extent of the rounded size
    /// that leaves its reserved headroom intact. On failure the error says how close the best
    /// candidate came.
    pub fn allocate(&mut self, size: u64, constraints: &Constraints<'_>) -> Result<Slice, Error> {
        self.place(size, constraints, None)
    }

    fn place(
        &mut self,
        size: u64,
        c: &Constraints<'_>,
        expires: Option<u64>,
    ) -> Result<Slice, Error> {
        positive("size", size)?;
        self.fresh_id()?;
        let (idx, plan) = match self.choose(size, c) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(size, error = %e, "allocation failed");
                return Err(e);
            }
        };
        Ok(self.take_plan(idx, plan, expires))
    }

    /// The id the next new slice gets, or an error when none is left: ids are below
    /// `u64::MAX`, so that the id after a restored one always exists (a snapshot or journal
    /// record may carry any id; handing out `u64::MAX` would leave no next id).
    fn fresh_id(&self) -> Result<SliceId, Error> {
        if self.next_id == u64::MAX {
            return Err(Error::InvalidArgument {
                field: "slice id",
                rule: format!(
                    "no slice id is left: ids are below {} and the next would be {0}",
                    u64::MAX
                ),
            });
        }
        Ok(SliceId::new(self.next_id))
    }

    /// Enters a slice planned by [`choose`](Self::choose) under the next id (checked by
    /// [`fresh_id`](Self::fresh_id) before planning).
    fn take_plan(&mut self, idx: u32, plan: Exts, expires: Option<u64>) -> Slice {
        let id = SliceId::new(self.next_id);
        self.next_id += 1;
        let slice = self.slice_of(id, idx, &plan);
        self.insert_planned(id, idx, plan, expires);
        tracing::trace!(
            slice = id.get(),
            device = slice.device.get(),
            size = slice.size(),
            "allocated"
        );
        slice
    }

    /// Allocates a slice for a CSI capacity range: at least `min` and at most `max` bytes
    /// (`CapacityRange.required_bytes` and `limit_bytes`), a whole number of allocation units
    /// of the device it lands on, never rounded past `max`.
    ///
    /// The size is the largest allowed one that fits: `max` rounded *down* to the unit when a
    /// candidate can hold it (the device chosen by the policy, as [`allocate`](Self::allocate)
    /// does), otherwise the largest allocatable extent among the candidates, as long as it is
    /// at least `min` rounded *up* to the unit. So pass the size you want as `max`; for a CSI
    /// request without a limit, pass the size you would provision (for example
    /// `required_bytes`) as both bounds. When the candidates have different units, each device
    /// offers the largest size its unit allows and the largest offer wins (single extents only).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max` is 0, `min > max`, or the range holds no multiple
    /// of any candidate's allocation unit (the message names the bound and the unit);
    /// [`Error::Exhausted`] when no candidate can hold `min`; [`Error::UnknownDevice`] for an
    /// unknown candidate. Nothing changes on error.
    ///
    /// # Example
    /// ```
    /// use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GIB};
    ///
    /// let mut a = Allocator::new(AllocatorConfig::default())?;
    /// a.add_device(DeviceSpec::new(DeviceId::new(1), 40 * GIB)?)?;
    /// // 30.5 GiB at most: 30 GiB, never 31.
    /// let s = a.allocate_range(20 * GIB, 30 * GIB + GIB / 2, &Constraints::any())?;
    /// assert_eq!(s.size(), 30 * GIB);
    /// // Only 10 GiB left: at least 5, at most 20 gives 10.
    /// assert_eq!(a.allocate_range(5 * GIB, 20 * GIB, &Constraints::any())?.size(), 10 * GIB);
    /// // A range holding no whole GiB is refused, naming the bound and the unit.
    /// let err = a.allocate_range(GIB + 1, 2 * GIB - 1, &Constraints::any()).unwrap_err();
    /// assert!(err.to_string().contains("allocation unit of 1073741824 bytes"), "{err}");
    /// # Ok::<(), slice_alloc::Error>(())
    /// ```
    pub fn allocate_range(
        &mut self,
        min: u64,
        max: u64,
        constraints: &Constraints<'_>,
    ) -> Result<Slice, Error> {
        self.place_range(min, max, constraints, None)
    }

    pub(crate) fn place_range(
        &mut self,
        min: u64,
        max: u64,
        c: &Constraints<'_>,
        expires: Option<u64>,
    ) -> Result<Slice, Error> {
        positive("max", max)?;
        self.fresh_id()?;
        if min > max {
            return Err(Error::InvalidArgument {
                field: "min",
                rule: format!("{min} bytes is above max {max} bytes"),
            });
        }
        // The allowed sizes for a unit `g`: `lo..=hi`, multiples of `g`.
        let allowed = |g: u64| -> Option<(u64, u64)> {
            let lo = min.div_ceil(g).max(1).checked_mul(g)?;
            let hi = max / g * g;
            (lo <= hi).then_some((lo, hi))
        };
        let mut grans: Vec<u64> = match c.candidates {
            None => self.grans.keys().copied().collect(),
            Some(list) => list
                .iter()
                .map(|&id| self.idx(id).map(|i| self.dev(i).gran()))
                .collect::<Result<_, _>>()?,
        };
        grans.sort_unstable();
        grans.dedup();
        if !grans.iter().any(|&g| allowed(g).is_some()) {
            return Err(no_multiple(min, max, &grans));
        }
        let multi = c.multi_extent.unwrap_or(self.config.multi_extent);
        if let [g] = grans[..] {
            // One unit: through the indexes, like `allocate`.
            let (lo, hi) = allowed(g).expect("checked above");
            if let Ok((idx, plan)) = self.choose(hi, c) {
                return Ok(self.take_plan(idx, plan, expires));
            }
            let best = match c.candidates {
                None => self.largest_allocatable().map_or(0, |(_, b)| b),
                Some(list) => list
                    .iter()
                    .filter_map(|id| self.by_id.get(id))
                    .map(|&i| self.dev(i).keys.allocatable)
                    .max()
                    .unwrap_or(0),
            };
            if best < lo {
                return Err(self.exhausted(lo, c, multi));
            }
            let (idx, plan) = self.choose(best, c)?;
            return Ok(self.take_plan(idx, plan, expires));
        }
        // Several units: each candidate offers the largest size its unit allows.
        let idxs = self.candidate_indexes(c);
        let offer = idxs
            .iter()
            .filter_map(|&i| {
                let d = self.dev(i);
                let (lo, hi) = allowed(d.gran())?;
                let s = hi.min(d.keys.allocatable);
                (s >= lo).then_some((s, std::cmp::Reverse(i)))
            })
            .max();
        match offer {
            Some((size, std::cmp::Reverse(i))) => {
                let id = [self.dev(i).spec.id()];
                let one = Constraints {
                    candidates: Some(&id),
                    multi_extent: Some(false),
                    ..*c
                };
                let (idx, plan) = self.choose(size, &one)?;
                Ok(self.take_plan(idx, plan, expires))
            }
            None => {
                let lo = grans.iter().filter_map(|&g| allowed(g)).map(|x| x.0).min();
                Err(self.exhausted(lo.unwrap_or(min), c, multi))
            }
        }
    }

    /// Allocates exactly `[offset, offset + size)` (size rounded up to the granularity) on
    /// `device`, for restoring state recorded elsewhere or carrying out a [`DrainPlan`]'s move.
    /// Refused on a cordoned device.
    ///
    /// [`DrainPlan`]: crate::DrainPlan
    pub fn allocate_at(
        &mut self,
        device: DeviceId,
        offset: u64,
        size: u64,
    ) -> Result<Slice, Error> {
        let id = self.fresh_id()?;
        let idx = self.idx(device)?;
        if self.dev(idx).cordoned {
            return Err(Error::Cordoned(device));
        }
        let g = self.dev(idx).gran();
        positive("size", size)?;
        let len = size
            .div_ceil(g)
            .checked_mul(g)
            .ok_or(Error::InvalidArgument {
                field: "size",
                rule: format!("{size} overflows when rounded up to the granularity {g}"),
            })?;
        let ext = Extent::new(offset, len)?;
        self.restore(id, device, &[ext], None)?;
        Ok(self.to_slice(id, &self.slices[&id]))
    }

    /// Places a slice with a known id and extents (recovery, `allocate_at`). Checks alignment,
    /// range and overlaps, naming the offending slice; changes nothing on error.
    pub(crate) fn restore(
        &mut self,
        id: SliceId,
        device: DeviceId,
        extents: &[Extent],
        expires: Option<u64>,
    ) -> Result<(), Error> {
        if self.slices.contains_key(&id) {
            return Err(Error::DuplicateSlice(id));
        }
        if id.get() == u64::MAX {
            // The next id would not exist (replaying such a record overflowed `next_id`).
            return Err(Error::InvalidArgument {
                field: "slice id",
                rule: format!(
                    "{id} is not an id: ids are below {} so that a next id exists",
                    u64::MAX
                ),
            });
        }
        if extents.is_empty() {
            return Err(Error::InvalidArgument {
                field: "extents",
                rule: format!("{id} has no extents"),
            });
        }
        let idx = self.idx(device)?;
        let d = self.dev(idx);
        let (g, units) = (d.gran(), d.units);
        let mut plan = Vec::with_capacity(extents.len());
        for e in extents {
            let bad = |rule: String| Error::BadExtent {
                slice: id,
                device,
                offset: e.offset(),
                end: e.end(),
                rule,
            };
            if e.offset() % g != 0 || e.len() % g != 0 {
                return Err(bad(format!("not aligned to the granularity of {g} bytes")));
            }
            if e.end() / g > units {
                return Err(bad(format!(
                    "extends past the usable capacity of {} bytes",
                    units * g
                )));
            }
            plan.push((e.offset() / g, e.len() / g));
        }
        let (d, ix) = self.dev_and_index(idx);
        for (i, &(o, l)) in plan.iter().enumerate() {
            if !d.take(o, l, ix) {
                for &(po, pl) in &plan[..i] {
                    d.release(po, pl, ix);
                }
                let other = plan[..i]
                    .iter()
                    .any(|&(po, pl)| po < o + l && o < po + pl)
                    .then_some(id)
                    .or_else(|| self.owner(idx, o, l));
                return Err(Error::Overlap {
                    slice: id,
                    device,
                    offset: o * g,
                    end: (o + l) * g,
                    other,
                });
            }
        }
        let d = self.dev_mut(idx);
        d.slices += 1;
        let exts = Exts::from_vec(plan);
        if let Some(t) = expires {
            self.expiry.insert((t, id));
        }
        self.slices.insert(
            id,
            Entry {
                device: idx,
                exts,
                expires,
            },
        );
        self.next_id = self.next_id.max(id.get() + 1);
        self.reindex(idx);
        Ok(())
    }

    /// The slice or reservation holding any unit of `[o, o+l)` on device `idx` (error path only:
    /// linear in the number of slices).
    pub(crate) fn owner(&self, idx: u32, o: u64, l: u64) -> Option<SliceId> {
        self.slices
            .iter()
            .filter(|(_, e)| e.device == idx)
            .find(|(_, e)| {
                e.exts
                    .as_slice()
                    .iter()
                    .any(|&(so, sl)| so < o + l && o < so + sl)
            })
            .map(|(&id, _)| id)
    }

    /// Frees a committed slice, returning what it held.
    pub fn free(&mut self, id: SliceId) -> Result<Slice, Error> {
        let e = self.slices.remove(&id).ok_or(Error::UnknownSlice(id))?;
        if e.expires.is_some() {
            self.slices.insert(id, e);
            return Err(Error::WrongState {
                slice: id,
                actual: "a reservation",
                expected: "a committed slice",
            });
        }
        Ok(self.release_entry(id, e))
    }

    /// Grows a committed slice to `new_size` bytes (rounded up to the granularity): in place
    /// when the space right after its last extent is free; otherwise, when
    /// [`AllocatorConfig::multi_extent`] allows, by taking what is free after it and adding
    /// extents elsewhere on the same device; otherwise fails saying what the device could give.
    /// Growth may use the device's reserved headroom. A `new_size` equal to the current size is
    /// a no-op.
    pub fn grow(&mut self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
        let entry = self.expect_state(id, false)?;
        let idx = entry.device;
        let cur = entry.exts.units();
        let end = {
            let &(o, l) = entry
                .exts
                .as_slice()
                .last()
                .expect("a slice always has an extent");
            o + l
        };
        let d = self.dev(idx);
        let g = d.gran();
        let new_units = new_size.div_ceil(g);
        if new_units < cur {
            return Err(Error::InvalidArgument {
                field: "new_size",
                rule: format!(
                    "{new_size} bytes is below the current {} bytes of {id}; use shrink",
                    cur * g
                ),
            });
        }
        if new_units == cur {
            return Ok(self.to_slice(id, &self.slices[&id]));
        }
        let extra = new_units - cur;
        let in_place = d.free_after(end);
        let multi = self.config.multi_extent;
        if in_place < extra && !(multi && d.free_units >= extra) {
            let e = Error::GrowNoSpace {
                slice: id,
                device: d.spec.id(),
                needed: extra * g,
                in_place: in_place * g,
                device_free: d.free_units * g,
                free_extents: d.free_by_off.len(),
                largest_extent: d.largest() * g,
                multi_extent: multi,
            };
            tracing::debug!(error = %e, "grow failed");
            return Err(e);
        }
        let (d, ix) = self.dev_and_index(idx);
        let mut added = Vec::new();
        let first = in_place.min(extra);
        if first > 0 {
            let ok = d.take(end, first, ix);
            debug_assert!(ok);
            added.push((end, first));
        }
        if extra > first {
            for (o, l) in d.plan_multi(extra - first) {
                let ok = d.take(o, l, ix);
                debug_assert!(ok);
                added.push((o, l));
            }
        }
        let entry = self.slices.get_mut(&id).expect("checked above");
        for (o, l) in added {
            entry.exts.push(o, l);
        }
        self.reindex(idx);
        Ok(self.to_slice(id, &self.slices[&id]))
    }

    /// Shrinks a committed slice to `new_size` bytes (rounded up to the granularity), giving
    /// back space from its end. The new size must be at least one granule (use
    /// [`free`](Self::free) to drop a slice) and not above the current size.
    pub fn shrink(&mut self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
        let entry = self.expect_state(id, false)?;
        let idx = entry.device;
        let cur = entry.exts.units();
        let g = self.dev(idx).gran();
        let new_units = new_size.div_ceil(g);
        if new_units == 0 || new_units > cur {
            return Err(Error::InvalidArgument {
                field: "new_size",
                rule: format!(
                    "{new_size} bytes must be between 1 and the current {} bytes of {id}",
                    cur * g
                ),
            });
        }
        let mut drop = cur - new_units;
        let entry = self.slices.get_mut(&id).expect("checked above");
        let dev = self.devices[idx as usize]
            .as_mut()
            .expect("slice device exists");
        while drop > 0 {
            let last = entry.exts.last_mut();
            let cut = last.1.min(drop);
            dev.release(last.0 + last.1 - cut, cut, &mut self.by_extent);
            drop -= cut;
            if cut == last.1 {
                entry.exts.pop_last();
            } else {
                last.1 -= cut;
            }
        }
        self.reindex(idx);
        Ok(self.to_slice(id, &self.slices[&id]))
    }

    /// Sets `size` bytes aside until `now + ttl` (caller's clock, any unit; `ttl > 0` and
    /// `now + ttl <= u64::MAX`, else [`Error::InvalidArgument`] naming `ttl`), placed
    /// like [`allocate`](Self::allocate). Releases expired reservations first (as
    /// [`expire`](Self::expire) with `now`), so that their space can be used; if the
    /// reservation then fails, they are put back: a failed call changes nothing.
    /// [`Journaled`](crate::Journaled) and [`GroupCommit`](crate::GroupCommit) journal
    /// reservations, so they survive restarts (and their ids are never reused).
    pub fn reserve(
        &mut self,
        size: u64,
        constraints: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        Tx::atomic(self, |tx| tx.reserve(size, constraints, now, ttl))
    }

    /// [`reserve`](Self::reserve) for a capacity range, sized like
    /// [`allocate_range`](Self::allocate_range).
    pub fn reserve_range(
        &mut self,
        min: u64,
        max: u64,
        constraints: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        Tx::atomic(self, |tx| tx.reserve_range(min, max, constraints, now, ttl))
    }

    /// Reserves with a size or a range (for [`Tx`]): `max == None` is a plain size `min`.
    pub(crate) fn place_reservation(
        &mut self,
        min: u64,
        max: Option<u64>,
        constraints: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        let expires_at = expiry(now, ttl)?;
        let slice = match max {
            None => self.place(min, constraints, Some(expires_at))?,
            Some(max) => self.place_range(min, max, constraints, Some(expires_at))?,
        };
        Ok(Reservation { slice, expires_at })
    }

    /// Turns a reservation into a committed slice. If it has expired (`now >= expires_at`),
    /// fails with [`Error::ReservationExpired`] and changes nothing: the space goes back with
    /// the next [`expire`](Self::expire) (which [`reserve`](Self::reserve) calls).
    pub fn commit(&mut self, id: SliceId, now: u64) -> Result<Slice, Error> {
        let entry = self.expect_state(id, true)?;
        let t = entry.expires.expect("reservation");
        if now >= t {
            return Err(Error::ReservationExpired {
                slice: id,
                expired_at: t,
                now,
            });
        }
        self.set_expiry(id, None);
        Ok(self.to_slice(id, &self.slices[&id]))
    }

    /// Extends a reservation that has not expired to `now + ttl` (caller's clock; `ttl > 0` and
    /// `now + ttl <= u64::MAX`, as for [`reserve`](Self::reserve)).
    /// An expired one (`now >= expires_at`) is refused with [`Error::ReservationExpired`].
    pub fn renew(&mut self, id: SliceId, now: u64, ttl: u64) -> Result<Reservation, Error> {
        let expires_at = expiry(now, ttl)?;
        let t = self.expect_state(id, true)?.expires.expect("reservation");
        if now >= t {
            return Err(Error::ReservationExpired {
                slice: id,
                expired_at: t,
                now,
            });
        }
        self.set_expiry(id, Some(expires_at));
        Ok(Reservation {
            slice: self.to_slice(id, &self.slices[&id]),
            expires_at,
        })
    }

    /// Every pending reservation (expired ones too, until [`expire`](Self::expire) runs),
    /// sorted by id. O(r log r) for r reservations.
    pub fn reservations(&self) -> Vec<Reservation> {
        let mut out: Vec<Reservation> = self
            .expiry
            .iter()
            .map(|&(expires_at, id)| Reservation {
                slice: self.to_slice(id, &self.slices[&id]),
                expires_at,
            })
            .collect();
        out.sort_by_key(|r| r.slice.id);
        out
    }

    /// The expiry of reservation `id` (`None` for a committed slice or an unknown id).
    pub(crate) fn reservations_expiry(&self, id: SliceId) -> Option<u64> {
        self.slices.get(&id).and_then(|e| e.expires)
    }

    /// Sets or clears (commits) the expiry of slice `id`, keeping the expiry index in step.
    pub(crate) fn set_expiry(&mut self, id: SliceId, expires: Option<u64>) {
        let entry = self
            .slices
            .get_mut(&id)
            .expect("caller checked the slice exists");
        if let Some(t) = entry.expires {
            self.expiry.remove(&(t, id));
        }
        entry.expires = expires;
        if let Some(t) = expires {
            self.expiry.insert((t, id));
        }
    }

    /// Releases a reservation, returning the space it held.
    pub fn release(&mut self, id: SliceId) -> Result<Slice, Error> {
        self.expect_state(id, true)?;
        Ok(self.remove_entry(id))
    }

    /// Releases every reservation with `expires_at <= now`, returning their ids. O(k log n) for
    /// k expired reservations.
    pub fn expire(&mut self, now: u64) -> Vec<SliceId> {
        self.expire_reservations(now)
            .into_iter()
            .map(|r| r.slice.id)
            .collect()
    }

    /// [`expire`](Self::expire), returning what each released reservation held.
    pub(crate) fn expire_reservations(&mut self, now: u64) -> Vec<Reservation> {
        let mut out = Vec::new();
        while let Some(&(expires_at, id)) = self.expiry.first() {
            if expires_at > now {
                break;
            }
            let slice = self.remove_entry(id);
            out.push(Reservation { slice, expires_at });
        }
        out
    }

    /// A committed slice or reservation by id.
    pub fn slice(&self, id: SliceId) -> Option<Slice> {
        self.slices.get(&id).map(|e| self.to_slice(id, e))
    }

    /// Whether `id` is a pending reservation (as opposed to a committed slice or nothing).
    pub fn is_reservation(&self, id: SliceId) -> bool {
        self.slices.get(&id).is_some_and(|e| e.expires.is_some())
    }

    /// All committed slices and reservations, in no particular order.
    pub fn slices(&self) -> impl Iterator<Item = Slice> + '_ {
        self.slices.iter().map(|(&id, e)| self.to_slice(id, e))
    }

    /// Number of committed slices plus reservations.
    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// Bytes free on the device directly after the slice's last extent: how far it can grow in
    /// place.
    pub fn growth_room(&self, id: SliceId) -> Result<u64, Error> {
        let e = self.slices.get(&id).ok_or(Error::UnknownSlice(id))?;
        let d = self.dev(e.device);
        let &(o, l) = e
            .exts
            .as_slice()
            .last()
            .expect("a slice always has an extent");
        Ok(d.free_after(o + l) * d.gran())
    }

    /// Total usable capacity in bytes over all devices (saturating at `u64::MAX`).
    pub fn total_capacity(&self) -> u64 {
        u64::try_from(self.capacity).unwrap_or(u64::MAX)
    }

    /// Free bytes new allocations may take, over all devices (saturating at `u64::MAX`): on each
    /// device that is not cordoned, its free bytes minus its reserved headroom (0 when the
    /// headroom is larger). This is CSI `GetCapacity`'s `available_capacity` for the whole
    /// allocator; [`capacity`](Self::capacity) gives it for a set of devices. O(1).
    pub fn total_free(&self) -> u64 {
        u64::try_from(self.avail).unwrap_or(u64::MAX)
    }

    /// Bytes held by no slice or reservation, over all devices, reserved headroom and cordoned
    /// devices included (saturating at `u64::MAX`). O(1).
    pub fn total_unallocated(&self) -> u64 {
        u64::try_from(self.free).unwrap_or(u64::MAX)
    }

    // ---- internals ----

    pub(crate) fn idx(&self, id: DeviceId) -> Result<u32, Error> {
        self.by_id.get(&id).copied().ok_or(Error::UnknownDevice(id))
    }

    pub(crate) fn dev(&self, idx: u32) -> &Device {
        self.devices[idx as usize]
            .as_ref()
            .expect("indexed device exists")
    }

    pub(crate) fn dev_mut(&mut self, idx: u32) -> &mut Device {
        self.devices[idx as usize]
            .as_mut()
            .expect("indexed device exists")
    }

    /// A device and the cross-device extent index that its free-space changes update.
    pub(crate) fn dev_and_index(&mut self, idx: u32) -> (&mut Device, &mut ExtentIndex) {
        let d = self.devices[idx as usize]
            .as_mut()
            .expect("indexed device exists");
        (d, &mut self.by_extent)
    }

    pub(crate) fn expect_state(&self, id: SliceId, reservation: bool) -> Result<&Entry, Error> {
        let e = self.slices.get(&id).ok_or(Error::UnknownSlice(id))?;
        match (e.expires.is_some(), reservation) {
            (false, true) => Err(Error::WrongState {
                slice: id,
                actual: "a committed slice",
                expected: "a reservation",
            }),
            (true, false) => Err(Error::WrongState {
                slice: id,
                actual: "a reservation",
                expected: "a committed slice",
            }),
            _ => Ok(e),
        }
    }

    pub(crate) fn to_slice(&self, id: SliceId, e: &Entry) -> Slice {
        self.slice_of(id, e.device, &e.exts)
    }

    fn slice_of(&self, id: SliceId, idx: u32, exts: &Exts) -> Slice {
        let d = self.dev(idx);
        let g = d.gran();
        Slice {
            id,
            device: d.spec.id(),
            extents: exts
                .as_slice()
                .iter()
                .map(|&(o, l)| Extent::from_valid(o * g, l * g))
                .collect(),
        }
    }

    /// Refreshes device `idx`'s figures after its free space changed, and queues it for the
    /// lazily maintained indexes (the extent index is already up to date).
    pub(crate) fn reindex(&mut self, idx: u32) {
        let d = self.devices[idx as usize]
            .as_mut()
            .expect("indexed device exists");
        let old = d.keys;
        let new = d.compute_keys();
        d.keys = new;
        self.free = self.free - u128::from(old.free) + u128::from(new.free);
        self.avail = self.avail - u128::from(old.avail) + u128::from(new.avail);
        for ix in LazyIndex::ALL {
            if d.dirty & ix.bit() == 0 {
                d.dirty |= ix.bit();
                self.dirty[ix as usize].push(idx);
            }
        }
    }

    /// Brings one lazily maintained index up to date: O(d log n) for d devices changed since
    /// its last refresh.
    fn refresh_lazy(&mut self, which: LazyIndex) {
        for idx in self.dirty[which as usize].drain(..) {
            let Some(d) = self.devices[idx as usize].as_mut() else {
                continue;
            };
            d.dirty &= !which.bit();
            match which {
                LazyIndex::Allocatable => {
                    let new = d.keys.allocatable;
                    let old = std::mem::replace(&mut d.lazy.allocatable, new);
                    if old != new {
                        self.by_allocatable.remove(&pack(old, idx.into()));
                        self.by_allocatable.insert(pack(new, idx.into()));
                    }
                }
                LazyIndex::Free => {
                    let new = d.keys.free;
                    let old = std::mem::replace(&mut d.lazy.free, new);
                    if old != new {
                        self.by_free.remove(&(old, idx));
                        self.by_free.insert((new, idx));
                    }
                }
                LazyIndex::Frag => {
                    let new = d.frag_ppm();
                    let old = std::mem::replace(&mut d.lazy.frag, new);
                    if old != new {
                        self.by_frag.remove(&(old, idx));
                        self.by_frag.insert((new, idx));
                    }
                }
            }
        }
    }

    fn insert_planned(&mut self, id: SliceId, idx: u32, exts: Exts, expires: Option<u64>) {
        let (d, ix) = self.dev_and_index(idx);
        for &(o, l) in exts.as_slice() {
            let ok = d.take(o, l, ix);
            debug_assert!(ok, "planned extent is free");
        }
        d.slices += 1;
        if let Some(t) = expires {
            self.expiry.insert((t, id));
        }
        self.slices.insert(
            id,
            Entry {
                device: idx,
                exts,
                expires,
            },
        );
        self.reindex(idx);
    }

    pub(crate) fn remove_entry(&mut self, id: SliceId) -> Slice {
        let e = self
            .slices
            .remove(&id)
            .expect("caller checked the slice exists");
        self.release_entry(id, e)
    }

    /// Gives back the space of an entry already removed from `slices`.
    fn release_entry(&mut self, id: SliceId, e: Entry) -> Slice {
        let s = self.to_slice(id, &e);
        if let Some(t) = e.expires {
            self.expiry.remove(&(t, id));
        }
        let (d, ix) = self.dev_and_index(e.device);
        for &(o, l) in e.exts.as_slice() {
            d.release(o, l, ix);
        }
        d.slices -= 1;
        self.reindex(e.device);
        s
    }

    /// Where to put `units` inside the free extent `(off, len)`. At the start the slice gets
    /// the leftover as growth room and the slice before the extent (if any) loses it; at the end
    /// it is the other way round. So: at the start when the leftover lets the new slice grow by
    /// the headroom share, otherwise at the end, where the leftover may still be enough for the
    /// slice before it (and costs nothing when it is not). With zero headroom: always the start.
    fn position(&self, (off, len): (u64, u64), units: u64) -> u64 {
        let left = len - units;
        if left >= self.headroom(units) {
            off
        } else {
            off + left
        }
    }

    /// The growth headroom the extent choice inside a device honours: none for
    /// [`DevicePolicy::BestFitExtent`], whose device choice already names the extent (the
    /// smallest that fits); the configured share for the other policies.
    fn extent_headroom(&self, policy: DevicePolicy, units: u64) -> u64 {
        match policy {
            DevicePolicy::BestFitExtent => 0,
            _ => self.headroom(units),
        }
    }

    fn headroom(&self, units: u64) -> u64 {
        // u128: `units` may be close to u64::MAX for a request that cannot be met anyway.
        (u128::from(units) * u128::from(self.config.growth_headroom_percent)).div_ceil(100) as u64
    }

    /// Picks a device and the extents to take there.
    fn choose(&mut self, size: u64, c: &Constraints<'_>) -> Result<(u32, Exts), Error> {
        let policy = c.policy.unwrap_or(self.config.policy);
        let multi = c.multi_extent.unwrap_or(self.config.multi_extent);
        if c.candidates.is_none() {
            match policy {
                DevicePolicy::BestFitExtent => {}
                DevicePolicy::BestFitLargestExtent | DevicePolicy::SpreadWithHeadroom => {
                    self.refresh_lazy(LazyIndex::Allocatable);
                }
                DevicePolicy::MostFree => self.refresh_lazy(LazyIndex::Free),
                DevicePolicy::LeastFragmented => self.refresh_lazy(LazyIndex::Frag),
            }
        }
        let pick = match c.candidates {
            None => self.choose_indexed(size, policy),
            Some(list) => self.choose_among(size, policy, list)?,
        };
        if let Some(idx) = pick {
            let d = self.dev(idx);
            let units = size.div_ceil(d.gran());
            let ext = d
                .pick(units, self.extent_headroom(policy, units))
                .expect("index says an extent fits");
            return Ok((idx, Exts::One((self.position(ext, units), units))));
        }
        if multi {
            self.refresh_lazy(LazyIndex::Free);
            let fits = |d: &Device| d.allocatable_total() >= size.div_ceil(d.gran());
            let idx = match c.candidates {
                None => self
                    .by_free
                    .iter()
                    .rev()
                    .map(|&(_, i)| i)
                    .find(|&i| fits(self.dev(i))),
                Some(list) => list
                    .iter()
                    .filter_map(|id| self.by_id.get(id).copied())
                    .filter(|&i| fits(self.dev(i)))
                    .max_by_key(|&i| (self.dev(i).keys.free, std::cmp::Reverse(i))),
            };
            if let Some(idx) = idx {
                let d = self.dev(idx);
                return Ok((idx, Exts::from_vec(d.plan_multi(size.div_ceil(d.gran())))));
            }
        }
        Err(self.exhausted(size, c, multi))
    }

    fn choose_indexed(&self, size: u64, policy: DevicePolicy) -> Option<u32> {
        let fits = |i: u32| self.dev(i).keys.allocatable >= size;
        match policy {
            DevicePolicy::BestFitLargestExtent => self
                .by_allocatable
                .range(pack(size, 0)..)
                .next()
                .map(|&k| unpack(k).1 as u32),
            DevicePolicy::SpreadWithHeadroom => self
                .by_allocatable
                .last()
                .map(|&k| unpack(k))
                .filter(|&(a, _)| a >= size)
                .map(|(_, i)| i as u32),
            DevicePolicy::MostFree => self
                .by_free
                .iter()
                .rev()
                .take_while(|&&(f, _)| f >= size)
                .map(|&(_, i)| i)
                .find(|&i| fits(i)),
            DevicePolicy::LeastFragmented => {
                self.by_frag.iter().map(|&(_, i)| i).find(|&i| fits(i))
            }
            DevicePolicy::BestFitExtent => self
                .by_extent
                .at_least(size)
                .map(|(_, i)| i)
                .find(|&i| fits(i)),
        }
    }

    fn choose_among(
        &self,
        size: u64,
        policy: DevicePolicy,
        list: &[DeviceId],
    ) -> Result<Option<u32>, Error> {
        let mut best: Option<(u32, (u64, u64))> = None;
        for &id in list {
            let i = self.idx(id)?;
            let k = self.dev(i).keys;
            if k.allocatable < size {
                continue;
            }
            // Smaller key wins.
            let key = match policy {
                DevicePolicy::BestFitLargestExtent => (k.allocatable, 0),
                DevicePolicy::SpreadWithHeadroom => (u64::MAX - k.allocatable, 0),
                DevicePolicy::MostFree => (u64::MAX - k.free, 0),
                DevicePolicy::LeastFragmented => (u64::from(self.dev(i).frag_ppm()), 0),
                // The device's smallest fitting extent (there is one: `allocatable` fits), ties
                // to the device added first, as in the cross-device extent index.
                DevicePolicy::BestFitExtent => {
                    let d = self.dev(i);
                    let l = d.smallest_fit(size.div_ceil(d.gran())).unwrap_or(u64::MAX);
                    (l.saturating_mul(d.gran()), u64::from(i))
                }
            };
            if best.is_none_or(|(_, bk)| key < bk) {
                best = Some((i, key));
            }
        }
        Ok(best.map(|(i, _)| i))
    }

    /// The indexes of the known candidate devices (all devices when `c` names none).
    fn candidate_indexes(&self, c: &Constraints<'_>) -> Vec<u32> {
        match c.candidates {
            None => self.by_id.values().copied().collect(),
            Some(list) => list
                .iter()
                .filter_map(|id| self.by_id.get(id).copied())
                .collect(),
        }
    }

    fn exhausted(&self, size: u64, c: &Constraints<'_>, multi: bool) -> Error {
        let idxs = self.candidate_indexes(c);
        let mut largest = (0, None);
        let mut fit_no_headroom = 0;
        let mut total_free = 0;
        let mut cordoned = 0;
        for &i in &idxs {
            let d = self.dev(i);
            let g = d.gran();
            if d.cordoned {
                cordoned += 1;
                continue;
            }
            if d.keys.allocatable > largest.0 {
                largest = (d.keys.allocatable, Some(d.spec.id()));
            }
            if d.largest() * g >= size && d.keys.allocatable < size {
                fit_no_headroom += 1;
            }
            total_free = d.keys.free.saturating_add(total_free);
        }
        Error::Exhausted {
            needed: size,
            candidates: idxs.len(),
            largest_extent: largest.0,
            largest_on: largest.1,
            fit_no_headroom,
            total_free,
            multi_extent: multi,
            cordoned,
        }
    }
}

/// When a reservation made at `now` with time to live `ttl` expires: `now + ttl`.
///
/// Both ways to hand out a reservation that is already expired when made are refused: `ttl ==
/// 0`, and a sum past `u64::MAX` (clamping it to `u64::MAX` would give `expires_at == now` when
/// `now` is `u64::MAX`, and a shorter life than asked for in general).
pub(crate) fn expiry(now: u64, ttl: u64) -> Result<u64, Error> {
    if ttl == 0 {
        return Err(Error::InvalidArgument {
            field: "ttl",
            rule: "must be greater than zero (a reservation with ttl 0 is expired when made)"
                .into(),
        });
    }
    now.checked_add(ttl).ok_or_else(|| Error::InvalidArgument {
        field: "ttl",
        rule: format!(
            "now + ttl must be at most {} (u64::MAX), but now {now} + ttl {ttl} overflows \
             (the reservation could not live ttl)",
            u64::MAX
        ),
    })
}

/// The error for a capacity range that holds no multiple of any candidate's unit.
fn no_multiple(min: u64, max: u64, grans: &[u64]) -> Error {
    if grans.is_empty() {
        return Error::InvalidArgument {
            field: "constraints.candidates",
            rule: "no device to allocate from".into(),
        };
    }
    let why: Vec<String> = grans
        .iter()
        .map(|&g| match min.div_ceil(g).max(1).checked_mul(g) {
            Some(lo) => format!(
                "allocation unit of {g} bytes: min {min} rounds up to {lo}, above max {max}"
            ),
            None => format!("allocation unit of {g} bytes: min {min} overflows when rounded up"),
        })
        .collect();
    Error::InvalidArgument {
        field: "max",
        rule: format!(
            "the capacity range [{min}, {max}] bytes holds no whole number of allocation units \
             ({})",
            why.join("; ")
        ),
    }
}

/// `value > 0`, or an error naming `field`.
fn positive(field: &'static str, value: u64) -> Result<(), Error> {
    if value == 0 {
        return Err(Error::InvalidArgument {
            field,
            rule: "must be greater than zero".into(),
        });
    }
    Ok(())
}
