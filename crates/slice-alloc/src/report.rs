//! Capacity and fragmentation reporting: what a CSI `GetCapacity` (`available_capacity`,
//! `maximum_volume_size`) needs, plus the figures an operator uses to see fragmentation.

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::{Allocator, DeviceId, Error};

/// One device's capacity figures, in bytes unless stated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// The device.
    pub id: DeviceId,
    /// Usable capacity (rounded down to the granularity).
    pub capacity: u64,
    /// Allocation granularity.
    pub granularity: u64,
    /// Free bytes, including the reserved headroom.
    pub free: u64,
    /// Bytes held by committed slices and reservations (`capacity - free`).
    pub allocated: u64,
    /// Reserved headroom (rounded up to the granularity).
    pub reserved_headroom: u64,
    /// Largest free extent.
    pub largest_free_extent: u64,
    /// Largest slice a new allocation could get here (largest extent, limited by headroom).
    pub largest_allocatable: u64,
    /// Number of free extents.
    pub free_extents: usize,
    /// `1 - largest_free_extent / free` (0 when nothing is free).
    pub fragmentation: f64,
    /// Ceph BlueStore's fragmentation score over the free extents, in allocation units.
    pub ceph_score: f64,
}

/// Capacity of a set of devices (for example a CSI topology segment), as
/// [`Allocator::capacity`] reports it: what CSI `GetCapacity` answers. Figures in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    /// Devices in the set.
    pub devices: usize,
    /// Of which cordoned (they count towards `capacity` only).
    pub cordoned: usize,
    /// Usable capacity of the set.
    pub capacity: u64,
    /// Free bytes new slices may take (`available_capacity`): on every device that is not
    /// cordoned, its free bytes minus its reserved headroom.
    pub free: u64,
    /// Free bytes held back as reserved headroom (on devices that are not cordoned): usable by
    /// growth, not by new slices.
    pub reserved_headroom: u64,
    /// The largest slice one new allocation can get (`maximum_volume_size`), 0 if none.
    pub largest_allocatable: u64,
    /// The device offering it.
    pub largest_on: Option<DeviceId>,
    /// The smallest slice one new allocation can get (`minimum_volume_size`): the smallest
    /// allocation unit among devices that can take at least one unit, 0 if none can.
    pub smallest_allocatable: u64,
}

/// Fragmentation over all devices: each per-device figure weighted by the device's free bytes,
/// i.e. the fragmentation seen by an average free byte.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fragmentation {
    /// Free-weighted mean of `1 - largest/free` per device.
    pub free_ratio: f64,
    /// Free-weighted mean of the per-device Ceph fragmentation score.
    pub ceph_score: f64,
    /// Worst per-device Ceph score.
    pub worst_ceph_score: f64,
}

/// Free extents by size class: bucket `i` counts extents of `[2^i, 2^(i+1))` allocation units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// `(extent count, total units)` per power-of-two bucket, index = floor(log2(units)).
    pub buckets: Vec<(u64, u64)>,
}

impl Histogram {
    fn add(&mut self, units: u64) {
        let b = units.ilog2() as usize;
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, (0, 0));
        }
        self.buckets[b].0 += 1;
        self.buckets[b].1 += units;
    }
}

/// Ceph BlueStore's fragmentation score (`Allocator::get_fragmentation_score`) over free extent
/// lengths given in allocation units: 0 when all free space is one extent, 1 when every free
/// extent is a single unit. Each extent of length `v` is worth `score(v)`, which grows like
/// `v * 1.2^log2(v)` (a chunk twice as large is worth 1.2 times two chunks; between 2^20 and
/// 2^27 the factor falls linearly to 1, above it is 1, with linear interpolation inside each
/// power of two, as in Ceph's `Allocator::get_score`); the result is
/// `(score(sum) - Σ score(v)) / (score(sum) - sum * score(1))`. Ceph feeds byte lengths and
/// scores a single allocation unit as `score(block_size)`; here every length is in allocation
/// units, so a unit scores `score(1)` and the 1.2 factor applies across the whole range of
/// realistic device sizes.
pub fn ceph_fragmentation_score(free_extent_units: impl IntoIterator<Item = u64>) -> f64 {
    const SMALL: f64 = 1.2;
    const HUGE: f64 = 1.0;
    const SMALL_P2: usize = 20;
    const HUGE_P2: usize = 27;
    let mut scales = vec![1.0f64];
    let mut score = |v: u64| -> f64 {
        let sc = v.ilog2() as usize;
        while scales.len() <= sc + 1 {
            let ss = scales.len();
            let scale = if ss >= HUGE_P2 {
                HUGE
            } else if ss > SMALL_P2 {
                (SMALL * (HUGE_P2 - ss) as f64 + HUGE * (ss - SMALL_P2) as f64)
                    / (HUGE_P2 - SMALL_P2) as f64
            } else {
                SMALL
            };
            let last = scales[ss - 1];
            scales.push(last * scale);
        }
        let base = (1u64 << sc) as f64;
        let x = (v as f64 - base) / base;
        base * scales[sc] * (1.0 - x) + base * 2.0 * scales[sc + 1] * x
    };
    let mut sum_score = 0.0;
    let mut sum = 0u64;
    for v in free_extent_units {
        if v == 0 {
            continue;
        }
        sum_score += score(v);
        sum += v;
    }
    if sum <= 1 {
        return 0.0;
    }
    let ideal = score(sum);
    let terrible = sum as f64 * score(1);
    ((ideal - sum_score) / (ideal - terrible)).clamp(0.0, 1.0)
}

impl Device {
    pub(crate) fn report(&self) -> DeviceReport {
        let g = self.gran();
        let free = self.free_units;
        DeviceReport {
            id: self.spec.id(),
            capacity: self.units * g,
            granularity: g,
            free: free * g,
            allocated: (self.units - free) * g,
            reserved_headroom: self.reserved_units * g,
            largest_free_extent: self.largest() * g,
            largest_allocatable: self.allocatable() * g,
            free_extents: self.free_by_off.len(),
            fragmentation: if free == 0 {
                0.0
            } else {
                1.0 - self.largest() as f64 / free as f64
            },
            ceph_score: ceph_fragmentation_score(self.free_extents().map(|(_, l)| l)),
        }
    }
}

impl Allocator {
    /// Capacity figures for one device. O(free extents on the device).
    pub fn device_report(&self, id: DeviceId) -> Result<DeviceReport, Error> {
        Ok(self.dev(self.idx(id)?).report())
    }

    /// Capacity figures for every device, in the order they were added.
    pub fn device_reports(&self) -> impl Iterator<Item = DeviceReport> + '_ {
        self.devices.iter().flatten().map(Device::report)
    }

    /// The largest slice a new allocation could get, and on which device (`None` without
    /// devices or free space; when several devices tie, one of them). This is CSI's
    /// `maximum_volume_size`. O(log e) in the free extents of all devices, plus the extents
    /// of devices whose reserved headroom holds them below their largest extent.
    pub fn largest_allocatable(&self) -> Option<(DeviceId, u64)> {
        // Walk free extents from the longest: a device can give at most its longest extent, so
        // once the extents are no longer than the best found, no later device can beat it.
        let mut best: Option<(u64, u32)> = None;
        for (len, i) in self.by_extent.descending() {
            if best.is_some_and(|(a, _)| len <= a) {
                break;
            }
            let a = self.dev(i).keys.allocatable;
            if a > best.map_or(0, |(b, _)| b) {
                best = Some((a, i));
            }
        }
        best.map(|(a, i)| (self.dev(i).spec.id(), a))
    }

    /// Capacity of a set of devices (all devices for `None`; duplicates count once), excluding
    /// reserved headroom and cordoned devices: see [`CapacityReport`]. O(k) for k devices.
    ///
    /// ```
    /// use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GIB};
    ///
    /// let mut a = Allocator::new(AllocatorConfig::default())?;
    /// a.add_device(DeviceSpec::new(DeviceId::new(1), 100 * GIB)?.with_reserved(10 * GIB)?)?;
    /// a.add_device(DeviceSpec::new(DeviceId::new(2), 50 * GIB)?)?;
    /// a.add_device(DeviceSpec::new(DeviceId::new(3), 500 * GIB)?)?;
    /// a.allocate(20 * GIB, &Constraints::on_devices(&[DeviceId::new(1)]))?;
    /// let segment = [DeviceId::new(1), DeviceId::new(2)];
    /// let c = a.capacity(Some(&segment))?;
    /// assert_eq!(c.free, 70 * GIB + 50 * GIB); // device 1: 80 free, 10 held back
    /// assert_eq!((c.largest_allocatable, c.largest_on), (70 * GIB, Some(DeviceId::new(1))));
    /// assert_eq!(c.smallest_allocatable, GIB);
    /// # Ok::<(), slice_alloc::Error>(())
    /// ```
    pub fn capacity(&self, devices: Option<&[DeviceId]>) -> Result<CapacityReport, Error> {
        let mut idxs: Vec<u32> = match devices {
            None => self.by_id.values().copied().collect(),
            Some(list) => list
                .iter()
                .map(|&id| self.idx(id))
                .collect::<Result<_, _>>()?,
        };
        idxs.sort_unstable();
        idxs.dedup();
        let mut r = CapacityReport {
            devices: idxs.len(),
            ..CapacityReport::default()
        };
        let (mut capacity, mut free, mut headroom) = (0u128, 0u128, 0u128);
        for &i in &idxs {
            let d = self.dev(i);
            let g = d.gran();
            capacity += u128::from(d.units * g);
            if d.cordoned {
                r.cordoned += 1;
                continue;
            }
            free += u128::from(d.keys.avail);
            headroom += u128::from(d.keys.free - d.keys.avail);
            if d.keys.allocatable > r.largest_allocatable {
                r.largest_allocatable = d.keys.allocatable;
                r.largest_on = Some(d.spec.id());
            }
            if d.keys.allocatable >= g
                && (r.smallest_allocatable == 0 || g < r.smallest_allocatable)
            {
                r.smallest_allocatable = g;
            }
        }
        let sat = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        r.capacity = sat(capacity);
        r.free = sat(free);
        r.reserved_headroom = sat(headroom);
        Ok(r)
    }

    /// The largest slice a new allocation could get on `id`.
    pub fn largest_allocatable_on(&self, id: DeviceId) -> Result<u64, Error> {
        Ok(self.dev(self.idx(id)?).keys.allocatable)
    }

    /// Histogram of free extents over all devices (in each device's allocation units).
    pub fn histogram(&self) -> Histogram {
        let mut h = Histogram::default();
        for d in self.devices.iter().flatten() {
            for (_, l) in d.free_extents() {
                h.add(l);
            }
        }
        h
    }

    /// Histogram of free extents on one device.
    pub fn device_histogram(&self, id: DeviceId) -> Result<Histogram, Error> {
        let mut h = Histogram::default();
        for (_, l) in self.dev(self.idx(id)?).free_extents() {
            h.add(l);
        }
        Ok(h)
    }

    /// Both fragmentation figures over all devices (see [`Fragmentation`]).
    pub fn fragmentation(&self) -> Fragmentation {
        let mut weight = 0f64;
        let (mut ratio, mut ceph, mut worst) = (0f64, 0f64, 0f64);
        for d in self.devices.iter().flatten() {
            if d.free_units == 0 {
                continue;
            }
            let r = d.report();
            let w = r.free as f64;
            weight += w;
            ratio += r.fragmentation * w;
            ceph += r.ceph_score * w;
            worst = worst.max(r.ceph_score);
        }
        if weight == 0.0 {
            return Fragmentation {
                free_ratio: 0.0,
                ceph_score: 0.0,
                worst_ceph_score: 0.0,
            };
        }
        Fragmentation {
            free_ratio: ratio / weight,
            ceph_score: ceph / weight,
            worst_ceph_score: worst,
        }
    }
}
