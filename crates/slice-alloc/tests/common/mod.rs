//! Independent checks of the allocator's state, computed from its slice list and device specs
//! rather than from its own indexes.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::collections::BTreeMap;

use slice_alloc::{Allocator, DeviceId, DeviceSpec};

/// Free gaps (offset, len) in bytes per device, computed from the slices alone.
pub fn gaps(a: &Allocator) -> BTreeMap<DeviceId, (DeviceSpec, Vec<(u64, u64)>)> {
    let mut used: BTreeMap<DeviceId, Vec<(u64, u64)>> = BTreeMap::new();
    for s in a.slices() {
        for e in &s.extents {
            used.entry(s.device)
                .or_default()
                .push((e.offset(), e.end()));
        }
    }
    let mut out = BTreeMap::new();
    for spec in a.devices() {
        let cap = spec.units() * spec.granularity();
        let mut u = used.remove(&spec.id()).unwrap_or_default();
        u.sort();
        let mut gaps = Vec::new();
        let mut pos = 0;
        for (s, e) in u {
            if s > pos {
                gaps.push((pos, s - pos));
            }
            pos = pos.max(e);
        }
        if cap > pos {
            gaps.push((pos, cap - pos));
        }
        out.insert(spec.id(), (spec.clone(), gaps));
    }
    out
}

/// Checks every invariant; returns a description of the first violation.
pub fn check_invariants(a: &Allocator) -> Result<(), String> {
    let mut by_dev: BTreeMap<DeviceId, Vec<(u64, u64, u64)>> = BTreeMap::new();
    let specs: BTreeMap<DeviceId, DeviceSpec> = a.devices().map(|s| (s.id(), s.clone())).collect();
    for s in a.slices() {
        let spec = specs
            .get(&s.device)
            .ok_or(format!("{} on unknown {}", s.id, s.device))?;
        let g = spec.granularity();
        let cap = spec.units() * g;
        if s.extents.is_empty() {
            return Err(format!("{} has no extents", s.id));
        }
        for e in &s.extents {
            if e.offset() % g != 0 || e.len() % g != 0 {
                return Err(format!("{} extent {e:?} not aligned to {g}", s.id));
            }
            if e.end() > cap {
                return Err(format!("{} extent {e:?} beyond capacity {cap}", s.id));
            }
            by_dev
                .entry(s.device)
                .or_default()
                .push((e.offset(), e.end(), s.id.get()));
        }
    }
    for (dev, mut v) in by_dev.clone() {
        v.sort();
        for w in v.windows(2) {
            if w[0].1 > w[1].0 {
                return Err(format!(
                    "on {dev}: slice {} and slice {} overlap",
                    w[0].2, w[1].2
                ));
            }
        }
    }
    let mut total_free: u128 = 0;
    let mut avail: u128 = 0;
    // Largest allocatable per device: its largest gap, within what its reserve leaves.
    let mut allocatable = BTreeMap::new();
    for (id, (spec, gaps)) in gaps(a) {
        let free: u64 = gaps.iter().map(|x| x.1).sum();
        let g = spec.granularity();
        let room = free.saturating_sub(spec.reserved_units() * g) / g * g;
        let largest = gaps.iter().map(|x| x.1).max().unwrap_or(0);
        let cordoned = a.is_cordoned(id).unwrap_or(false);
        allocatable.insert(id, if cordoned { 0 } else { largest.min(room) });
    }
    let max = allocatable.values().copied().max().unwrap_or(0);
    match a.largest_allocatable() {
        None if max == 0 => {}
        Some((dev, got)) if got == max && allocatable.get(&dev) == Some(&max) => {}
        other => {
            return Err(format!(
                "largest_allocatable() = {other:?}, but the slices leave at most {max} ({allocatable:?})"
            ));
        }
    }
    for (id, (spec, gaps)) in gaps(a) {
        let r = a.device_report(id).map_err(|e| e.to_string())?;
        let cap = spec.units() * spec.granularity();
        let used: u64 = by_dev
            .get(&id)
            .map_or(0, |v| v.iter().map(|x| x.1 - x.0).sum());
        if r.free + used != cap || r.capacity != cap || r.allocated != used {
            return Err(format!(
                "{id}: free {} + allocated {used} != capacity {cap}",
                r.free
            ));
        }
        let largest = gaps.iter().map(|g| g.1).max().unwrap_or(0);
        if r.largest_free_extent != largest || r.free_extents != gaps.len() {
            return Err(format!(
                "{id}: report says largest {} in {} extents, slices leave {largest} in {}",
                r.largest_free_extent,
                r.free_extents,
                gaps.len()
            ));
        }
        total_free += u128::from(r.free);
        if !a.is_cordoned(id).map_err(|e| e.to_string())? {
            avail += u128::from(r.free.saturating_sub(r.reserved_headroom));
        }
    }
    if u64::try_from(total_free).unwrap_or(u64::MAX) != a.total_unallocated() {
        return Err(format!(
            "total_unallocated {} != sum of devices {total_free}",
            a.total_unallocated()
        ));
    }
    // `total_free` and the capacity report exclude headroom and cordoned devices.
    let avail = u64::try_from(avail).unwrap_or(u64::MAX);
    let report = a.capacity(None).map_err(|e| e.to_string())?;
    if a.total_free() != avail || report.free != avail {
        return Err(format!(
            "total_free {} / capacity report {} != free minus headroom {avail}",
            a.total_free(),
            report.free
        ));
    }
    if report.largest_allocatable != max {
        return Err(format!(
            "capacity report largest {} != {max}",
            report.largest_allocatable
        ));
    }
    Ok(())
}

/// Whether some device among `candidates` (all when `None`) has a single free extent for
/// `size` bytes that respects its reserved headroom — computed from the slices alone.
pub fn fits_somewhere(a: &Allocator, size: u64, candidates: Option<&[DeviceId]>) -> bool {
    gaps(a).into_iter().any(|(id, (spec, gaps))| {
        if candidates.is_some_and(|c| !c.contains(&id)) || a.is_cordoned(id).unwrap_or(false) {
            return false;
        }
        let g = spec.granularity();
        let need = size.div_ceil(g) * g;
        let free: u64 = gaps.iter().map(|x| x.1).sum();
        let reserved = spec.reserved_units() * g;
        gaps.iter().any(|x| x.1 >= need) && free - need >= reserved
    })
}
