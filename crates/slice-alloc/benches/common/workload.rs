//! The issue-5 workload, shared by `benches/alloc.rs` (throughput under criterion) and
//! `examples/fleet_report.rs` (the custom figures): 1,000 devices of 7,680 GiB, slice sizes
//! log-uniform in 1..=2,048 GiB, fill to 90%, then mixed allocate/free operations that hold the
//! fill at 90%. Every allocator sees the same input stream (sizes and free choices come from one
//! seeded generator, drawn for every operation whatever its outcome) and the same device-choice
//! policy ([`Policy`]).

#![allow(dead_code)] // the bench and the example use different parts

use std::collections::{BTreeMap, BTreeSet};

use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DevicePolicy, DeviceSpec, GIB, SliceId,
};

pub const DEVICES: u32 = 1000;
pub const DEVICE_UNITS: u32 = 7680;
pub const MAX_SLICE: u32 = 2048;
pub const FILL: f64 = 0.90;
pub const SEED: u64 = 0x5eed_0005;

/// The workload seed: [`SEED`] unless `SLICE_ALLOC_BENCH_SEED` is set (to check that a figure
/// is not an accident of one seed).
pub fn seed() -> u64 {
    std::env::var("SLICE_ALLOC_BENCH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED)
}

/// SplitMix64: tiny, deterministic, good enough for workload generation.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform slice size in 1..=MAX_SLICE GiB.
    pub fn size(&mut self) -> u32 {
        let s = ((MAX_SLICE as f64 + 1.0).ln() * self.unit()).exp() as u32;
        s.clamp(1, MAX_SLICE)
    }
}

/// The device-choice policy every allocator of a run uses: slice-alloc applies it itself (its
/// [`DevicePolicy`]); for the peers, which manage one device each, the harness applies it over
/// a [`FreeMirror`] of their free extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The device holding the smallest free extent that fits (slice-alloc's default).
    BestFitExtent,
    /// The device whose largest free extent is the smallest that fits.
    BestFitLargestExtent,
}

impl Policy {
    pub const ALL: [Policy; 2] = [Policy::BestFitExtent, Policy::BestFitLargestExtent];

    pub fn name(self) -> &'static str {
        match self {
            Policy::BestFitExtent => "best fit by extent",
            Policy::BestFitLargestExtent => "best fit by largest free extent",
        }
    }

    /// The policy named on a command line (`extent` or `largest-extent`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "extent" => Some(Policy::BestFitExtent),
            "largest-extent" => Some(Policy::BestFitLargestExtent),
            _ => None,
        }
    }

    fn ours(self) -> DevicePolicy {
        match self {
            Policy::BestFitExtent => DevicePolicy::BestFitExtent,
            Policy::BestFitLargestExtent => DevicePolicy::BestFitLargestExtent,
        }
    }
}

/// What the harness needs from an allocator. Units are GiB.
pub trait Fleet {
    type Handle: Copy;
    const NAME: &'static str;
    fn build(policy: Policy) -> Self;
    fn allocate(&mut self, units: u32) -> Option<Self::Handle>;
    fn free(&mut self, h: Self::Handle);
    /// (device, offset, len) of a live allocation.
    fn extent(&self, h: &Self::Handle) -> (u32, u32, u32);
}

/// The free extents of every device of a peer allocator, kept by the harness so that it can
/// apply the run's device policy to allocators that manage one device each and have no such
/// query of their own: per device, free extents by offset; across devices, every device's
/// largest extent and every free extent by `(length, device)`. Updating it is part of each
/// peer's measured time, as the same indexes are part of slice-alloc's.
pub struct FreeMirror {
    policy: Policy,
    free: Vec<BTreeMap<u32, u32>>,
    by_extent: BTreeMap<(u32, u32), u32>,
    by_largest: BTreeSet<(u32, u32)>,
    largest: Vec<u32>,
}

impl FreeMirror {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            free: vec![BTreeMap::from([(0, DEVICE_UNITS)]); DEVICES as usize],
            by_extent: (0..DEVICES).map(|d| ((DEVICE_UNITS, d), 1)).collect(),
            by_largest: (0..DEVICES).map(|d| (DEVICE_UNITS, d)).collect(),
            largest: vec![DEVICE_UNITS; DEVICES as usize],
        }
    }

    /// Devices the policy would try for `units`, best first (a device may repeat).
    pub fn candidates(&self, units: u32) -> Box<dyn Iterator<Item = u32> + '_> {
        match self.policy {
            Policy::BestFitExtent => {
                Box::new(self.by_extent.range((units, 0)..).map(|(&(_, d), _)| d))
            }
            Policy::BestFitLargestExtent => {
                Box::new(self.by_largest.range((units, 0)..).map(|&(_, d)| d))
            }
        }
    }

    fn add(&mut self, dev: u32, off: u32, len: u32) {
        self.free[dev as usize].insert(off, len);
        *self.by_extent.entry((len, dev)).or_insert(0) += 1;
    }

    fn remove(&mut self, dev: u32, off: u32) -> u32 {
        let len = self.free[dev as usize]
            .remove(&off)
            .expect("mirrored extent");
        let n = self
            .by_extent
            .get_mut(&(len, dev))
            .expect("mirrored extent");
        *n -= 1;
        if *n == 0 {
            self.by_extent.remove(&(len, dev));
        }
        len
    }

    fn refresh_largest(&mut self, dev: u32) {
        let l = self.free[dev as usize].values().copied().max().unwrap_or(0);
        self.set_largest(dev, l);
    }

    /// Sets the largest free extent `BestFitLargestExtent` sees on `dev` (for a peer that
    /// reports it itself, instead of [`take`](Self::take) and [`release`](Self::release)).
    pub fn set_largest(&mut self, dev: u32, l: u32) {
        let old = std::mem::replace(&mut self.largest[dev as usize], l);
        if old != l {
            self.by_largest.remove(&(old, dev));
            self.by_largest.insert((l, dev));
        }
    }

    /// Records that `[off, off + len)` on `dev` was allocated.
    pub fn take(&mut self, dev: u32, off: u32, len: u32) {
        let (&o, &l) = self.free[dev as usize]
            .range(..=off)
            .next_back()
            .expect("allocated range lies in a free extent");
        self.remove(dev, o);
        if off > o {
            self.add(dev, o, off - o);
        }
        if off + len < o + l {
            self.add(dev, off + len, o + l - off - len);
        }
        if self.policy == Policy::BestFitLargestExtent {
            self.refresh_largest(dev);
        }
    }

    /// Records that `[off, off + len)` on `dev` was freed, coalescing with its neighbours.
    pub fn release(&mut self, dev: u32, off: u32, len: u32) {
        let (mut start, mut end) = (off, off + len);
        if self.free[dev as usize].contains_key(&end) {
            end += self.remove(dev, end);
        }
        if let Some((&po, &pl)) = self.free[dev as usize].range(..off).next_back()
            && po + pl == off
        {
            self.remove(dev, po);
            start = po;
        }
        self.add(dev, start, end - start);
        if self.policy == Policy::BestFitLargestExtent {
            self.refresh_largest(dev);
        }
    }
}

// ---- our allocator ----

pub struct Ours(pub Allocator);

impl Ours {
    pub fn new(policy: Policy, growth_headroom_percent: u8) -> Self {
        let mut a = Allocator::new(AllocatorConfig {
            policy: policy.ours(),
            growth_headroom_percent,
            ..AllocatorConfig::default()
        })
        .unwrap();
        for d in 0..DEVICES {
            a.add_device(
                DeviceSpec::new(DeviceId::new(d.into()), u64::from(DEVICE_UNITS) * GIB).unwrap(),
            )
            .unwrap();
        }
        Self(a)
    }
}

impl Fleet for Ours {
    type Handle = SliceId;
    const NAME: &'static str = "slice-alloc";
    fn build(policy: Policy) -> Self {
        Self::new(policy, AllocatorConfig::default().growth_headroom_percent)
    }
    fn allocate(&mut self, units: u32) -> Option<SliceId> {
        self.0
            .allocate(u64::from(units) * GIB, &Constraints::any())
            .ok()
            .map(|s| s.id)
    }
    fn free(&mut self, h: SliceId) {
        self.0.free(h).unwrap();
    }
    fn extent(&self, h: &SliceId) -> (u32, u32, u32) {
        let s = self.0.slice(*h).unwrap();
        let e = s.extents[0];
        (
            s.device.get() as u32,
            (e.offset() / GIB) as u32,
            (e.len() / GIB) as u32,
        )
    }
}

/// Pure best fit: the same allocator with no growth headroom, i.e. the smallest extent that
/// fits, the slice placed at its start.
pub struct BestFit(pub Ours);

impl Fleet for BestFit {
    type Handle = SliceId;
    const NAME: &'static str = "pure best fit";
    fn build(policy: Policy) -> Self {
        Self(Ours::new(policy, 0))
    }
    fn allocate(&mut self, units: u32) -> Option<SliceId> {
        self.0.allocate(units)
    }
    fn free(&mut self, h: SliceId) {
        self.0.free(h)
    }
    fn extent(&self, h: &SliceId) -> (u32, u32, u32) {
        self.0.extent(h)
    }
}

// ---- offset-allocator ----

pub struct OffsetAlloc {
    devs: Vec<offset_allocator::Allocator>,
    mirror: FreeMirror,
}

impl OffsetAlloc {
    /// Updates the device index after a change on `dev`: by extent, from the harness's mirror
    /// of the free extents (offset-allocator cannot list them); by largest free extent, from
    /// offset-allocator's own report of its largest free region, so that it is offered the
    /// devices where it can allocate.
    fn track(&mut self, dev: u32, mirror: impl FnOnce(&mut FreeMirror)) {
        if self.mirror.policy == Policy::BestFitExtent {
            mirror(&mut self.mirror);
        } else {
            let l = self.devs[dev as usize].storage_report().largest_free_region;
            self.mirror.set_largest(dev, l);
        }
    }
}

impl Fleet for OffsetAlloc {
    type Handle = (u32, offset_allocator::Allocation, u32);
    const NAME: &'static str = "offset-allocator";
    fn build(policy: Policy) -> Self {
        Self {
            devs: (0..DEVICES)
                .map(|_| offset_allocator::Allocator::with_max_allocs(DEVICE_UNITS, 1024))
                .collect(),
            mirror: FreeMirror::new(policy),
        }
    }
    fn allocate(&mut self, units: u32) -> Option<Self::Handle> {
        // offset-allocator looks for free regions by size class, so a device with a fitting
        // extent may still refuse; try the policy's next choice then.
        let mut found = None;
        let mut last = None;
        for d in self.mirror.candidates(units) {
            if last.replace(d) == Some(d) {
                continue;
            }
            if let Some(a) = self.devs[d as usize].allocate(units) {
                found = Some((d, a, units));
                break;
            }
        }
        let (d, a, _) = found?;
        self.track(d, |m| m.take(d, a.offset, units));
        found
    }
    fn free(&mut self, h: Self::Handle) {
        self.devs[h.0 as usize].free(h.1);
        self.track(h.0, |m| m.release(h.0, h.1.offset, h.2));
    }
    fn extent(&self, h: &Self::Handle) -> (u32, u32, u32) {
        (h.0, h.1.offset, h.2)
    }
}

// ---- range-alloc ----

pub struct RangeAlloc {
    devs: Vec<range_alloc::RangeAllocator<u32>>,
    mirror: FreeMirror,
}

impl Fleet for RangeAlloc {
    type Handle = (u32, u32, u32);
    const NAME: &'static str = "range-alloc";
    fn build(policy: Policy) -> Self {
        Self {
            devs: (0..DEVICES)
                .map(|_| range_alloc::RangeAllocator::new(0..DEVICE_UNITS))
                .collect(),
            mirror: FreeMirror::new(policy),
        }
    }
    fn allocate(&mut self, units: u32) -> Option<Self::Handle> {
        let d = self.mirror.candidates(units).next()?;
        let r = self.devs[d as usize].allocate_range(units).ok()?;
        self.mirror.take(d, r.start, units);
        Some((d, r.start, units))
    }
    fn free(&mut self, h: Self::Handle) {
        self.devs[h.0 as usize].free_range(h.1..h.1 + h.2);
        self.mirror.release(h.0, h.1, h.2);
    }
    fn extent(&self, h: &Self::Handle) -> (u32, u32, u32) {
        *h
    }
}

// ---- the workload ----

/// A filled fleet plus the live allocations and the running input stream.
pub struct Run<F: Fleet> {
    pub fleet: F,
    pub live: Vec<(F::Handle, u32)>,
    pub used: u64,
    pub rng: Rng,
    pub fill_failures: u64,
}

pub const TARGET: u64 = (DEVICES as u64 * DEVICE_UNITS as u64) * 9 / 10;

/// Outcome counters of a mixed phase.
#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub ops: u64,
    pub allocations: u64,
    pub failed: u64,
    pub frees: u64,
}

impl<F: Fleet> Run<F> {
    /// Builds the fleet and fills it to 90% (allocation failures during the fill are counted
    /// and skipped, so every allocator ends the fill at the same target or as close as it can).
    pub fn filled(policy: Policy) -> Self {
        let seed = seed();
        let mut run = Run {
            fleet: F::build(policy),
            live: Vec::new(),
            used: 0,
            rng: Rng::new(seed),
            fill_failures: 0,
        };
        let mut streak = 0;
        while run.used < TARGET && streak < 10_000 {
            let size = run.rng.size();
            match run.fleet.allocate(size) {
                Some(h) => {
                    run.live.push((h, size));
                    run.used += u64::from(size);
                    streak = 0;
                }
                None => {
                    run.fill_failures += 1;
                    streak += 1;
                }
            }
        }
        run
    }

    /// One mixed operation: allocate while below 90% fill, else free a random live slice.
    /// `on_fail(size)` is called for each failed allocation.
    #[inline]
    pub fn step(&mut self, counts: &mut Counts, on_fail: &mut impl FnMut(&F, u32)) {
        let size = self.rng.size();
        let pick = self.rng.next_u64();
        counts.ops += 1;
        if self.used < TARGET || self.live.is_empty() {
            counts.allocations += 1;
            match self.fleet.allocate(size) {
                Some(h) => {
                    self.live.push((h, size));
                    self.used += u64::from(size);
                }
                None => {
                    counts.failed += 1;
                    on_fail(&self.fleet, size);
                }
            }
        } else {
            counts.frees += 1;
            let i = (pick % self.live.len() as u64) as usize;
            let (h, size) = self.live.swap_remove(i);
            self.fleet.free(h);
            self.used -= u64::from(size);
        }
    }
}

/// Per-device layout (sorted used extents) rebuilt from the live allocations.
pub fn layout<F: Fleet>(run: &Run<F>) -> BTreeMap<u32, Vec<(u32, u32)>> {
    let mut m: BTreeMap<u32, Vec<(u32, u32)>> = BTreeMap::new();
    for (h, _) in &run.live {
        let (d, o, l) = run.fleet.extent(h);
        m.entry(d).or_default().push((o, l));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// Free gaps of one device given its sorted used extents.
pub fn gaps(used: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &(o, l) in used {
        if o > pos {
            out.push(o - pos);
        }
        pos = o + l;
    }
    if DEVICE_UNITS > pos {
        out.push(DEVICE_UNITS - pos);
    }
    out
}
