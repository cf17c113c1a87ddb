//! Property tests: the allocator's invariants hold after every operation of random
//! sequences, allocation never fails while a fitting extent exists, and journal replay after a
//! truncation at every byte offset yields exactly a prefix of the acknowledged operations.
//!
//! Case counts are tuned for debug builds; set `PROPTEST_CASES` for longer runs.

mod common;

use common::{check_invariants, fits_somewhere};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use slice_alloc::journal::JOURNAL_HEADER;
use slice_alloc::strategies::devices;
use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DevicePolicy, DeviceSpec, Error, Journaled,
    Record, Slice, SliceId, decode_journal, encode_record, recover,
};

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        granules: u64,
        policy: DevicePolicy,
        candidates: Option<Vec<u64>>,
    },
    Free(usize),
    FreeThenAllocate(usize),
    Grow(usize, u64),
    Shrink(usize, u64),
    AllocateAt {
        device: u64,
        granule: u64,
        granules: u64,
    },
    Reserve {
        granules: u64,
        ttl: u64,
    },
    Commit(usize),
    Release(usize),
    Tick(u64),
    AllocateRange {
        min: u64,
        max: u64,
    },
    Renew(usize, u64),
    Cordon(u64, bool),
    SetReserved(u64, u64),
    ResizeDevice(u64, u64),
    Label(u64, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..40, slice_alloc::strategies::policy(), proptest::option::of(proptest::collection::vec(0u64..6, 1..4)))
            .prop_map(|(granules, policy, candidates)| Op::Allocate { granules, policy, candidates }),
        3 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::FreeThenAllocate),
        2 => (any::<usize>(), 1u64..20).prop_map(|(i, n)| Op::Grow(i, n)),
        1 => (any::<usize>(), 0u64..20).prop_map(|(i, n)| Op::Shrink(i, n)),
        1 => (0u64..6, 0u64..64, 1u64..16).prop_map(|(device, granule, granules)| Op::AllocateAt { device, granule, granules }),
        1 => (1u64..20, 1u64..5).prop_map(|(granules, ttl)| Op::Reserve { granules, ttl }),
        1 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Release),
        1 => (0u64..3).prop_map(Op::Tick),
        // Bounds in quarter units of the smallest unit, so that some ranges hold no multiple.
        2 => (1u64..160, 0u64..80).prop_map(|(min, extra)| Op::AllocateRange { min, max: min + extra }),
        1 => (any::<usize>(), 1u64..5).prop_map(|(i, ttl)| Op::Renew(i, ttl)),
        1 => (0u64..6, any::<bool>()).prop_map(|(d, c)| Op::Cordon(d, c)),
        1 => (0u64..6, 0u64..40).prop_map(|(d, n)| Op::SetReserved(d, n)),
        1 => (0u64..6, 1u64..80).prop_map(|(d, n)| Op::ResizeDevice(d, n)),
        1 => (0u64..6, 0u8..3).prop_map(|(d, v)| Op::Label(d, v)),
    ]
}

/// Picks the i-th live committed slice (or reservation) in id order.
fn nth(a: &Allocator, i: usize, reservation: bool) -> Option<SliceId> {
    let mut ids: Vec<SliceId> = a
        .slices()
        .map(|s| s.id)
        .filter(|&id| a.is_reservation(id) == reservation)
        .collect();
    if ids.is_empty() {
        return None;
    }
    ids.sort();
    Some(ids[i % ids.len()])
}

fn granularity_of(a: &Allocator, id: SliceId) -> u64 {
    let dev = a.slice(id).expect("live").device;
    a.devices()
        .find(|s| s.id() == dev)
        .expect("device")
        .granularity()
}

fn run(specs: Vec<DeviceSpec>, config: AllocatorConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut a = Allocator::new(config).unwrap();
    for s in specs {
        a.add_device(s).unwrap();
    }
    let g_min = a.devices().map(|s| s.granularity()).min().unwrap();
    let mut now = 0;
    for op in ops {
        let before = a.snapshot(0);
        let failed: Option<Error> = match op.clone() {
            Op::Allocate {
                granules,
                policy,
                candidates,
            } => {
                let size = granules * g_min;
                let cands: Option<Vec<DeviceId>> = candidates.map(|v| {
                    v.into_iter()
                        .map(DeviceId::new)
                        .filter(|d| a.devices().any(|s| s.id() == *d))
                        .collect()
                });
                let fits = fits_somewhere(&a, size, cands.as_deref());
                let keys = policy_keys(&a, size, cands.as_deref(), policy);
                let gaps_before = common::gaps(&a);
                let c = Constraints {
                    candidates: cands.as_deref(),
                    policy: Some(policy),
                    multi_extent: Some(false),
                };
                match a.allocate(size, &c) {
                    Ok(s) => {
                        prop_assert!(s.size() >= size);
                        prop_assert!(cands.as_ref().is_none_or(|c| c.contains(&s.device)));
                        // The chosen device is optimal for the policy (checks the lazily
                        // maintained indexes against an independent computation).
                        let best = keys.values().min().copied();
                        prop_assert_eq!(
                            keys.get(&s.device).copied(),
                            best,
                            "{:?} chose {} among {:?}",
                            policy,
                            s.device,
                            keys
                        );
                        if policy == DevicePolicy::BestFitExtent {
                            // The slice went into the extent that decided the choice.
                            let e = s.extents[0];
                            let (_, gaps) = &gaps_before[&s.device];
                            let hole = gaps
                                .iter()
                                .find(|&&(o, l)| o <= e.offset() && e.end() <= o + l)
                                .map(|&(_, l)| l);
                            prop_assert_eq!(
                                hole.map(|l| i128::from(l) << 32),
                                best.map(|k| k >> 32 << 32)
                            );
                        }
                        None
                    }
                    Err(e) => {
                        prop_assert!(
                            !fits,
                            "allocate({size}) failed although a candidate fits: {e}"
                        );
                        Some(e)
                    }
                }
            }
            Op::Free(i) => nth(&a, i, false).and_then(|id| a.free(id).err()),
            Op::FreeThenAllocate(i) => match nth(&a, i, false) {
                None => None,
                Some(id) => {
                    let freed = a.free(id).unwrap();
                    let r = a.device_report(freed.device).unwrap();
                    // The documented exceptions: the slice had grown into the device's
                    // reserved headroom, which new allocations may not take ...
                    let headroom_short = r.free - freed.size() < r.reserved_headroom
                        // ... or the device is cordoned and takes no new slices.
                        || a.is_cordoned(freed.device).unwrap();
                    let again = a.allocate(freed.size(), &Constraints::any());
                    prop_assert!(
                        again.is_ok() || headroom_short,
                        "re-allocating {} bytes after freeing failed: {:?}",
                        freed.size(),
                        again
                    );
                    None
                }
            },
            Op::Grow(i, n) => nth(&a, i, false).and_then(|id| {
                let size = a.slice(id).unwrap().size() + n * granularity_of(&a, id);
                a.grow(id, size).err()
            }),
            Op::Shrink(i, n) => nth(&a, i, false).and_then(|id| {
                let size = a
                    .slice(id)
                    .unwrap()
                    .size()
                    .saturating_sub(n * granularity_of(&a, id));
                a.shrink(id, size).err()
            }),
            Op::AllocateAt {
                device,
                granule,
                granules,
            } => {
                let g = a
                    .devices()
                    .find(|s| s.id().get() == device)
                    .map_or(1, |s| s.granularity());
                a.allocate_at(DeviceId::new(device), granule * g, granules * g)
                    .err()
            }
            Op::Reserve { granules, ttl } => a
                .reserve(granules * g_min, &Constraints::any(), now, ttl)
                .err(),
            Op::Commit(i) => nth(&a, i, true).and_then(|id| a.commit(id, now).err()),
            Op::Release(i) => nth(&a, i, true).and_then(|id| a.release(id).err()),
            Op::Tick(d) => {
                now += d;
                a.expire(now);
                None
            }
            Op::AllocateRange { min, max } => {
                let (min, max) = (min * g_min / 4, max * g_min / 4);
                // Each device offers the largest whole number of its units in the range that
                // one of its extents can hold; the largest offer is what must be allocated.
                let mut any_multiple = false;
                let mut offer = 0;
                for (id, (spec, gaps)) in common::gaps(&a) {
                    let g = spec.granularity();
                    let (lo, hi) = (min.div_ceil(g).max(1) * g, max / g * g);
                    if lo > hi {
                        continue;
                    }
                    any_multiple = true;
                    if a.is_cordoned(id).unwrap() {
                        continue;
                    }
                    let free: u64 = gaps.iter().map(|x| x.1).sum();
                    let room = free.saturating_sub(spec.reserved_units() * g);
                    let largest = gaps.iter().map(|x| x.1).max().unwrap_or(0);
                    let s = hi.min(largest.min(room) / g * g);
                    if s >= lo {
                        offer = offer.max(s);
                    }
                }
                let c = Constraints::any().with_multi_extent(false);
                match a.allocate_range(min, max, &c) {
                    Ok(s) => {
                        prop_assert_eq!(s.size(), offer, "range [{}, {}]", min, max);
                        None
                    }
                    Err(e) => {
                        prop_assert_eq!(offer, 0, "range [{}, {}] failed: {}", min, max, e);
                        let named = if any_multiple {
                            "no device can hold"
                        } else {
                            "allocation unit of"
                        };
                        prop_assert!(e.to_string().contains(named), "{}", e);
                        Some(e)
                    }
                }
            }
            Op::Renew(i, ttl) => nth(&a, i, true).and_then(|id| a.renew(id, now, ttl).err()),
            Op::Cordon(d, c) => {
                let d = DeviceId::new(d);
                if c {
                    a.cordon(d).err()
                } else {
                    a.uncordon(d).err()
                }
            }
            Op::SetReserved(d, n) => {
                let g = a
                    .devices()
                    .find(|s| s.id().get() == d)
                    .map_or(1, |s| s.granularity());
                a.set_reserved(DeviceId::new(d), n * g).err()
            }
            Op::ResizeDevice(d, n) => {
                let g = a
                    .devices()
                    .find(|s| s.id().get() == d)
                    .map_or(1, |s| s.granularity());
                a.resize_device(DeviceId::new(d), n * g).err()
            }
            Op::Label(d, v) => {
                let d = DeviceId::new(d);
                if v == 0 {
                    a.remove_label(d, "zone").err()
                } else {
                    a.set_label(d, "zone", &v.to_string()).err()
                }
            }
        };
        if let Some(e) = failed {
            // A failed call changes nothing (snapshots include reservations).
            prop_assert_eq!(
                &a.snapshot(0),
                &before,
                "{:?} failed with {} but changed state",
                op,
                e
            );
            prop_assert!(!e.to_string().is_empty());
        }
        if let Err(msg) = check_invariants(&a) {
            return Err(TestCaseError::fail(format!("after {op:?}: {msg}")));
        }
    }
    Ok(())
}

/// For every candidate device that can take `size` in one extent without breaking its headroom,
/// the policy's ranking key (smaller is better), computed from the slice list alone.
fn policy_keys(
    a: &Allocator,
    size: u64,
    cands: Option<&[DeviceId]>,
    policy: DevicePolicy,
) -> std::collections::BTreeMap<DeviceId, i128> {
    let mut out = std::collections::BTreeMap::new();
    // Position in the order devices were added, for ties.
    let order: std::collections::BTreeMap<DeviceId, usize> =
        a.devices().enumerate().map(|(i, s)| (s.id(), i)).collect();
    for (id, (spec, gaps)) in common::gaps(a) {
        if cands.is_some_and(|c| !c.contains(&id)) || a.is_cordoned(id).unwrap() {
            continue;
        }
        let g = spec.granularity();
        let free: u64 = gaps.iter().map(|x| x.1).sum();
        let largest = gaps.iter().map(|x| x.1).max().unwrap_or(0);
        let allocatable = largest.min(free.saturating_sub(spec.reserved_units() * g));
        if allocatable < size.div_ceil(g) * g {
            continue;
        }
        let frag_ppm = if free == 0 {
            0
        } else {
            1_000_000 - (largest as u128 * 1_000_000 / free as u128) as i128
        };
        let need = size.div_ceil(g) * g;
        let key = match policy {
            // The smallest fitting extent, ties to the device added first.
            DevicePolicy::BestFitExtent => {
                let smallest = gaps.iter().map(|x| x.1).filter(|&l| l >= need).min();
                (i128::from(smallest.expect("allocatable fits")) << 32) | order[&id] as i128
            }
            DevicePolicy::BestFitLargestExtent => allocatable as i128,
            DevicePolicy::SpreadWithHeadroom => -(allocatable as i128),
            DevicePolicy::MostFree => -(free as i128),
            DevicePolicy::LeastFragmented => frag_ppm,
            _ => unreachable!("new policy without a reference key"),
        };
        out.insert(id, key);
    }
    out
}

fn config() -> impl Strategy<Value = AllocatorConfig> {
    (
        slice_alloc::strategies::policy(),
        prop_oneof![Just(0u8), Just(10), Just(50)],
        any::<bool>(),
    )
        .prop_map(
            |(policy, growth_headroom_percent, multi_extent)| AllocatorConfig {
                policy,
                growth_headroom_percent,
                multi_extent,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// No overlaps, everything in range and aligned, free + allocated = capacity, reports agree
    /// with an independent computation, allocate never fails while a candidate fits, and free
    /// then allocate of the same size succeeds.
    #[test]
    fn invariants_hold_for_random_operations(
        specs in devices(1..=6, 64),
        config in config(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(specs, config, ops)?;
    }

    /// Truncating the journal at every byte offset recovers exactly the state after some prefix
    /// of the acknowledged operations: the longest one whose records fit in the prefix.
    #[test]
    fn journal_truncation_recovers_a_prefix(
        specs in devices(1..=3, 32),
        ops in proptest::collection::vec(op(), 1..40),
        condense_at in proptest::option::of(0usize..40),
    ) {
        let config = AllocatorConfig { multi_extent: true, ..AllocatorConfig::default() };
        let mut j = Journaled::create(Allocator::new(config.clone()).unwrap(), Vec::new(), 0, u64::MAX).unwrap();
        // states[k] = committed state after k acknowledged records (in the current journal).
        let mut snapshot = None;
        let mut states = vec![j.snapshot().devices];
        // (Device snapshots carry reservations, labels and cordons too.)
        let mut ends = vec![j.journal_len() as usize];
        for s in specs {
            j.add_device(s).unwrap();
            states.push(j.snapshot().devices);
            ends.push(j.journal_len() as usize);
        }
        let mut now = 0;
        for (step, op) in ops.into_iter().enumerate() {
            if condense_at == Some(step) {
                let s = j.snapshot();
                j.switch_journal(Vec::new()).unwrap();
                states = vec![s.devices.clone()];
                ends = vec![j.journal_len() as usize];
                snapshot = Some(s);
            }
            let a = j.allocator();
            let _ = match op {
                Op::Allocate { granules, .. } => j.allocate(granules << 30, &Constraints::any()).map(drop),
                Op::Free(i) | Op::FreeThenAllocate(i) => match nth(a, i, false) { Some(id) => j.free(id).map(drop), None => Ok(()) },
                Op::Grow(i, n) => match nth(a, i, false) { Some(id) => { let s = a.slice(id).unwrap().size(); j.grow(id, s + (n << 30)).map(drop) } None => Ok(()) },
                Op::Shrink(i, n) => match nth(a, i, false) { Some(id) => { let s = a.slice(id).unwrap().size(); j.shrink(id, s.saturating_sub(n << 30)).map(drop) } None => Ok(()) },
                Op::AllocateAt { device, granule, granules } => j.allocate_at(DeviceId::new(device), granule << 30, granules << 30).map(drop),
                Op::Reserve { granules, ttl } => j.reserve(granules << 30, &Constraints::any(), now, ttl).map(drop),
                Op::Commit(i) => match nth(a, i, true) { Some(id) => j.commit(id, now).map(drop), None => Ok(()) },
                Op::Release(i) => match nth(a, i, true) { Some(id) => j.release(id).map(drop), None => Ok(()) },
                Op::Tick(d) => { now += d; j.expire(now).map(drop) }
                Op::AllocateRange { min, max } => j.allocate_range(min << 28, max << 28, &Constraints::any()).map(drop),
                Op::Renew(i, ttl) => match nth(a, i, true) { Some(id) => j.renew(id, now, ttl).map(drop), None => Ok(()) },
                Op::Cordon(d, true) => j.cordon(DeviceId::new(d)),
                Op::Cordon(d, false) => j.uncordon(DeviceId::new(d)),
                Op::SetReserved(d, n) => j.set_reserved(DeviceId::new(d), n << 30).map(drop),
                Op::ResizeDevice(d, n) => j.resize_device(DeviceId::new(d), n << 30).map(drop),
                Op::Label(d, 0) => j.remove_label(DeviceId::new(d), "zone").map(drop),
                Op::Label(d, v) => j.set_label(DeviceId::new(d), "zone", &v.to_string()).map(drop),
            };
            let len = j.journal_len() as usize;
            if len != *ends.last().unwrap() {
                states.push(j.snapshot().devices);
                ends.push(len);
            } else {
                prop_assert_eq!(&j.snapshot().devices, states.last().unwrap(), "state changed without a record");
            }
        }
        let bytes = j.writer().clone();
        prop_assert_eq!(bytes.len(), *ends.last().unwrap());
        for cut in 0..=bytes.len() {
            let r = recover(snapshot.as_ref(), &bytes[..cut], config.clone());
            let r = match r {
                Ok(r) => r,
                Err(e) => return Err(TestCaseError::fail(format!("truncation at {cut} of {} refused: {e}", bytes.len()))),
            };
            // The longest prefix of acknowledged records that fits in `cut` bytes.
            let k = ends.iter().rposition(|&e| e <= cut).unwrap_or(0);
            prop_assert_eq!(&r.allocator.snapshot(0).devices, &states[k], "cut at {} should give state {}", cut, k);
            prop_assert!(r.valid_len <= cut);
            check_invariants(&r.allocator).map_err(TestCaseError::fail)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Encoding then decoding journal records is the identity.
    #[test]
    fn record_codec_round_trips(records in proptest::collection::vec(any::<Record>(), 0..20)) {
        let mut bytes = JOURNAL_HEADER.to_vec();
        for (i, r) in records.iter().enumerate() {
            encode_record(i as u64 + 1, r, &mut bytes);
        }
        let d = decode_journal(&bytes).unwrap();
        prop_assert_eq!(d.valid_len, bytes.len());
        let back: Vec<Record> = d.entries.into_iter().map(|e| e.record).collect();
        prop_assert_eq!(back, records);
    }

    /// Arbitrary bytes after a valid header never panic the decoder or recovery: they decode,
    /// are dropped as a torn tail, or are refused with an error.
    #[test]
    fn garbage_journals_are_refused_or_truncated(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = JOURNAL_HEADER.to_vec();
        bytes.extend_from_slice(&tail);
        let _ = decode_journal(&bytes);
        let _ = recover(None, &bytes, AllocatorConfig::default());
    }

    /// Device specs and slices survive a serde round trip.
    #[test]
    fn value_types_serde_round_trip(spec in any::<DeviceSpec>(), slice in any::<Slice>()) {
        let s: DeviceSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        prop_assert_eq!(s, spec);
        let t: Slice = serde_json::from_str(&serde_json::to_string(&slice).unwrap()).unwrap();
        prop_assert_eq!(t, slice);
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
