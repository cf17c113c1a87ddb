//! Per-device free-space bookkeeping in allocation units (granules): the free extents indexed
//! by offset (for coalescing and in-place growth) and by `(length, offset)` (for best fit), and
//! the cross-device [`ExtentIndex`] of every free extent's length, which each change here keeps
//! up to date.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::DeviceSpec;

#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) spec: DeviceSpec,
    /// This device's position in the allocator, the device part of its [`ExtentIndex`] keys.
    pub(crate) idx: u32,
    pub(crate) units: u64,
    pub(crate) reserved_units: u64,
    /// offset -> length, coalesced: no two entries touch.
    pub(crate) free_by_off: BTreeMap<u64, u64>,
    /// `(length, offset)` for every entry of `free_by_off`, packed by [`pack`] so that the
    /// B-tree compares one integer per key (the search is a hot path of every allocation).
    pub(crate) free_by_len: BTreeSet<u128>,
    pub(crate) free_units: u64,
    /// Slices and reservations on this device.
    pub(crate) slices: usize,
    /// This device's current figures, updated after every change (no index lookups).
    pub(crate) keys: Keys,
    /// The figures under which the lazily maintained cross-device indexes hold it.
    pub(crate) lazy: Lazy,
    /// One bit per [`LazyIndex`] whose key in `lazy` may be stale (the device is then queued
    /// for that index's next refresh).
    pub(crate) dirty: u8,
    /// Labels (for example topology keys). Shared on clone: plans clone the allocator.
    pub(crate) labels: Arc<BTreeMap<String, String>>,
    /// A cordoned device takes no new slices or reservations (its figures say 0 allocatable).
    pub(crate) cordoned: bool,
}

/// The cross-device indexes maintained lazily, each with its own queue of changed devices, so
/// that a query refreshes only the index it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LazyIndex {
    /// Largest allocatable extent, for `BestFitLargestExtent` and `SpreadWithHeadroom`.
    Allocatable = 0,
    /// Free bytes, for `MostFree` and multi-extent allocation.
    Free = 1,
    /// `1 - largest/free`, for `LeastFragmented`.
    Frag = 2,
}

impl LazyIndex {
    pub(crate) const ALL: [LazyIndex; 3] =
        [LazyIndex::Allocatable, LazyIndex::Free, LazyIndex::Frag];

    /// This index's bit in [`Device::dirty`].
    pub(crate) const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Keys of the lazily maintained cross-device indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lazy {
    /// Largest allocatable extent in bytes.
    pub(crate) allocatable: u64,
    /// Free bytes.
    pub(crate) free: u64,
    /// `1 - largest/free` in parts per million.
    pub(crate) frag: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Keys {
    /// Largest allocatable extent in bytes.
    pub(crate) allocatable: u64,
    /// Free bytes, reserved headroom included.
    pub(crate) free: u64,
    /// Free bytes new allocations may take: free minus headroom, 0 when cordoned.
    pub(crate) avail: u64,
}

impl Device {
    /// An empty device at position `idx`, its one free extent entered in `ix`.
    pub(crate) fn new(spec: DeviceSpec, idx: u32, ix: &mut ExtentIndex) -> Self {
        let units = spec.units();
        let reserved_units = spec.reserved_units().min(units);
        let mut d = Device {
            spec,
            idx,
            units,
            reserved_units,
            free_by_off: BTreeMap::new(),
            free_by_len: BTreeSet::new(),
            free_units: 0,
            slices: 0,
            keys: Keys {
                allocatable: 0,
                free: 0,
                avail: 0,
            },
            lazy: Lazy {
                allocatable: 0,
                free: 0,
                frag: 0,
            },
            dirty: 0,
            labels: Arc::default(),
            cordoned: false,
        };
        d.insert_raw(0, units, ix);
        d.keys = d.compute_keys();
        d.lazy = d.lazy_keys();
        d
    }

    pub(crate) fn gran(&self) -> u64 {
        self.spec.granularity()
    }

    pub(crate) fn largest(&self) -> u64 {
        self.free_by_len.last().map_or(0, |&k| unpack(k).0)
    }

    /// Largest single extent a *new* allocation may take without breaking reserved headroom
    /// (0 on a cordoned device).
    pub(crate) fn allocatable(&self) -> u64 {
        self.largest().min(self.allocatable_total())
    }

    /// Free units new allocations may use in total (multi-extent; 0 on a cordoned device).
    pub(crate) fn allocatable_total(&self) -> u64 {
        if self.cordoned {
            0
        } else {
            self.free_units.saturating_sub(self.reserved_units)
        }
    }

    pub(crate) fn compute_keys(&self) -> Keys {
        let g = self.gran();
        Keys {
            allocatable: self.allocatable() * g,
            free: self.free_units * g,
            avail: self.allocatable_total() * g,
        }
    }

    /// Changes the usable size to `units`: growth frees the new space at the end; shrinking
    /// needs the cut-off part free, otherwise returns `Err(first unit in use)` and changes
    /// nothing.
    pub(crate) fn set_units(&mut self, units: u64, ix: &mut ExtentIndex) -> Result<(), u64> {
        if units > self.units {
            let old = self.units;
            self.units = units;
            self.release(old, units - old, ix);
        } else if units < self.units {
            match self.free_containing(units) {
                Some((o, l)) if o + l == self.units => {
                    let ok = self.take(units, self.units - units, ix);
                    debug_assert!(ok);
                    // The taken range is now outside the device, neither free nor used.
                    self.units = units;
                }
                Some((o, l)) => return Err(o + l),
                None => return Err(units),
            }
        }
        self.reserved_units = self.spec.reserved_units().min(self.units);
        Ok(())
    }

    pub(crate) fn frag_ppm(&self) -> u32 {
        frag_ppm(self.largest(), self.free_units)
    }

    pub(crate) fn lazy_keys(&self) -> Lazy {
        Lazy {
            allocatable: self.keys.allocatable,
            free: self.keys.free,
            frag: self.frag_ppm(),
        }
    }

    fn insert_raw(&mut self, off: u64, len: u64, ix: &mut ExtentIndex) {
        debug_assert!(len > 0);
        self.free_by_off.insert(off, len);
        self.free_by_len.insert(pack(len, off));
        ix.add(len * self.gran(), self.idx);
        self.free_units += len;
    }

    fn remove_raw(&mut self, off: u64, len: u64, ix: &mut ExtentIndex) {
        self.free_by_off.remove(&off);
        self.free_by_len.remove(&pack(len, off));
        ix.remove(len * self.gran(), self.idx);
        self.free_units -= len;
    }

    /// Changes the length of the free extent at `off` from `old` to `new` (both non-zero).
    /// It keeps its offset, so its offset-index entry is updated in place instead of being
    /// removed and re-inserted.
    fn resize_raw(&mut self, off: u64, old: u64, new: u64, ix: &mut ExtentIndex) {
        self.free_by_len.remove(&pack(old, off));
        self.free_by_len.insert(pack(new, off));
        self.free_by_off.insert(off, new);
        let g = self.gran();
        ix.remove(old * g, self.idx);
        ix.add(new * g, self.idx);
        self.free_units = self.free_units - old + new;
    }

    /// Removes every free extent from `ix` (the device is leaving the allocator).
    pub(crate) fn unindex(&self, ix: &mut ExtentIndex) {
        for &len in self.free_by_off.values() {
            ix.remove(len * self.gran(), self.idx);
        }
    }

    /// The free extent containing unit `off`, if any.
    pub(crate) fn free_containing(&self, off: u64) -> Option<(u64, u64)> {
        let (&o, &l) = self.free_by_off.range(..=off).next_back()?;
        (off < o + l).then_some((o, l))
    }

    /// Marks `[off, off+len)` used. Returns `false` (and changes nothing) unless the whole range
    /// is free.
    pub(crate) fn take(&mut self, off: u64, len: u64, ix: &mut ExtentIndex) -> bool {
        let Some((o, l)) = self.free_containing(off) else {
            return false;
        };
        if off + len > o + l {
            return false;
        }
        if off > o {
            // The part before the range keeps its offset.
            self.resize_raw(o, l, off - o, ix);
        } else {
            self.remove_raw(o, l, ix);
        }
        if off + len < o + l {
            self.insert_raw(off + len, o + l - off - len, ix);
        }
        true
    }

    /// Returns `[off, off+len)` to the free set, coalescing with neighbours. The caller
    /// guarantees the range is currently used.
    pub(crate) fn release(&mut self, off: u64, len: u64, ix: &mut ExtentIndex) {
        let (g, dev) = (self.gran(), self.idx);
        let end = off + len;
        let next = self.free_by_off.remove(&end);
        if let Some(nl) = next {
            self.free_by_len.remove(&pack(nl, end));
            ix.remove(nl * g, dev);
        }
        let merged = len + next.unwrap_or(0);
        if let Some((&po, pl)) = self.free_by_off.range_mut(..off).next_back()
            && po + *pl == off
        {
            // Merge into the extent before: it keeps its offset, so its offset-index entry is
            // lengthened in place instead of being removed and re-inserted.
            self.free_by_len.remove(&pack(*pl, po));
            ix.remove(*pl * g, dev);
            *pl += merged;
            self.free_by_len.insert(pack(*pl, po));
            ix.add(*pl * g, dev);
        } else {
            self.free_by_off.insert(off, merged);
            self.free_by_len.insert(pack(merged, off));
            ix.add(merged * g, dev);
        }
        self.free_units += len;
    }

    /// Free units directly after unit `end` (0 if `end` is not the start of a free extent).
    pub(crate) fn free_after(&self, end: u64) -> u64 {
        self.free_by_off.get(&end).copied().unwrap_or(0)
    }

    /// Length in units of the smallest free extent of at least `units`.
    pub(crate) fn smallest_fit(&self, units: u64) -> Option<u64> {
        self.free_by_len
            .range(pack(units, 0)..)
            .next()
            .map(|&k| unpack(k).0)
    }

    /// Best fit with growth headroom: an exact fit, else the smallest extent leaving at least
    /// `headroom` units after the slice, else the smallest extent that fits. Returns the
    /// extent `(offset, len)`.
    pub(crate) fn pick(&self, units: u64, headroom: u64) -> Option<(u64, u64)> {
        let (first_len, first_off) = unpack(*self.free_by_len.range(pack(units, 0)..).next()?);
        let with_room = units.saturating_add(headroom);
        if first_len == units || headroom == 0 || first_len >= with_room {
            return Some((first_off, first_len));
        }
        Some(self.free_by_len.range(pack(with_room, 0)..).next().map_or(
            (first_off, first_len),
            |&k| {
                let (l, o) = unpack(k);
                (o, l)
            },
        ))
    }

    /// Extents (offset, len) covering `units` (at most the free total) without taking them:
    /// one best-fit extent if any fits, else the largest extents first.
    pub(crate) fn plan_multi(&self, units: u64) -> Vec<(u64, u64)> {
        if let Some(&k) = self.free_by_len.range(pack(units, 0)..).next() {
            return vec![(unpack(k).1, units)];
        }
        let mut out = Vec::new();
        let mut left = units;
        for (l, o) in self.free_by_len.iter().rev().map(|&k| unpack(k)) {
            if left == 0 {
                break;
            }
            let take = l.min(left);
            out.push((o, take));
            left -= take;
        }
        out
    }

    pub(crate) fn free_extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free_by_off.iter().map(|(&o, &l)| (o, l))
    }
}

/// Every free extent of every device, as a multiset of `(length in bytes, device index)`: the
/// index behind [`DevicePolicy::BestFitExtent`](crate::DevicePolicy::BestFitExtent), which
/// needs the smallest fitting extent across all devices in O(log e) for e free extents.
/// Lengths are in bytes so that devices of different granularities compare correctly.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExtentIndex(BTreeMap<u128, u32>);

impl ExtentIndex {
    fn key(len: u64, dev: u32) -> u128 {
        (u128::from(len) << 32) | u128::from(dev)
    }

    fn add(&mut self, len: u64, dev: u32) {
        *self.0.entry(Self::key(len, dev)).or_insert(0) += 1;
    }

    fn remove(&mut self, len: u64, dev: u32) {
        match self.0.entry(Self::key(len, dev)) {
            Entry::Occupied(mut e) if *e.get() > 1 => *e.get_mut() -= 1,
            Entry::Occupied(e) => {
                e.remove();
            }
            Entry::Vacant(_) => debug_assert!(false, "extent index lacks ({len}, {dev})"),
        }
    }

    /// `(length in bytes, device index)` of every free extent, longest first (one entry per
    /// distinct length on a device).
    pub(crate) fn descending(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.0.keys().rev().map(|&k| ((k >> 32) as u64, k as u32))
    }

    /// `(length in bytes, device index)` of the free extents at least `len` bytes long,
    /// shortest first, ties by device index (one entry per distinct length on a device).
    pub(crate) fn at_least(&self, len: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.0
            .range(Self::key(len, 0)..)
            .map(|(&k, _)| ((k >> 32) as u64, k as u32))
    }
}

/// `1 - largest/free` in parts per million (0 when nothing is free).
pub(crate) fn frag_ppm(largest: u64, free: u64) -> u32 {
    if free == 0 {
        return 0;
    }
    (1_000_000 - (largest as u128 * 1_000_000 / free as u128) as u64) as u32
}

/// `(hi, lo)` as one integer ordered like the tuple: B-tree searches then compare one `u128`
/// per key instead of two fields with a branch between them.
pub(crate) fn pack(hi: u64, lo: u64) -> u128 {
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The inverse of [`pack`].
pub(crate) fn unpack(k: u128) -> (u64, u64) {
    ((k >> 64) as u64, k as u64)
}
