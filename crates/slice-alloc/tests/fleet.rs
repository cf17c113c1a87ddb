//! Capacity ranges, capacity reports over device sets, reservations' renewal and listing,
//! device labels, cordons, resizes, headroom changes and drain plans: examples with known
//! answers (the invariants are in `properties.rs`).

mod common;

use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, Error, Extent, GIB, Journaled,
    recover,
};

fn id(n: u64) -> DeviceId {
    DeviceId::new(n)
}

fn alloc(devs: &[(u64, u64)]) -> Allocator {
    let mut a = Allocator::new(AllocatorConfig::default()).unwrap();
    for &(d, gib) in devs {
        a.add_device(DeviceSpec::new(id(d), gib * GIB).unwrap())
            .unwrap();
    }
    a
}

#[test]
fn capacity_ranges_are_honoured_at_the_unit() {
    let mut a = alloc(&[(1, 100)]);
    let any = Constraints::any();
    // 30.5 GiB at most: 30 GiB, not 31.
    let s = a.allocate_range(GIB, 30 * GIB + GIB / 2, &any).unwrap();
    assert_eq!(s.size(), 30 * GIB);
    // Exactly one allowed size.
    assert_eq!(
        a.allocate_range(5 * GIB, 5 * GIB, &any).unwrap().size(),
        5 * GIB
    );
    // 65 GiB left: the largest allowed size that fits.
    assert_eq!(
        a.allocate_range(10 * GIB, 80 * GIB, &any).unwrap().size(),
        65 * GIB
    );
    // Nothing left for at least 1 byte.
    let err = a.allocate_range(1, GIB, &any).unwrap_err();
    assert!(
        matches!(err, Error::Exhausted { needed, .. } if needed == GIB),
        "{err}"
    );

    let err = a.allocate_range(GIB + 1, 2 * GIB - 1, &any).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid max: the capacity range [1073741825, 2147483647] bytes holds no whole number \
         of allocation units (allocation unit of 1073741824 bytes: min 1073741825 rounds up to \
         2147483648, above max 2147483647)"
    );
    let err = a.allocate_range(2, 1, &any).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid min: 2 bytes is above max 1 bytes"),
        "{err}"
    );
    let err = a.allocate_range(0, 0, &any).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid max: must be greater than zero"),
        "{err}"
    );
}

#[test]
fn capacity_ranges_over_devices_of_different_units() {
    let mut a = Allocator::new(AllocatorConfig::default()).unwrap();
    a.add_device(DeviceSpec::from_parts(id(1), 10 * GIB, GIB, 0).unwrap())
        .unwrap();
    a.add_device(DeviceSpec::from_parts(id(2), 4 * GIB, 1 << 20, 0).unwrap())
        .unwrap();
    // 2.5 GiB: no whole GiB fits the upper part, but 2.5 GiB is 2560 MiB units on device 2.
    let s = a
        .allocate_range(2 * GIB + GIB / 4, 2 * GIB + GIB / 2, &Constraints::any())
        .unwrap();
    assert_eq!((s.device, s.size()), (id(2), 2 * GIB + GIB / 2));
    // 3.5 GiB at most: device 1 offers 3 GiB, device 2 only 1.5 GiB left.
    let s = a
        .allocate_range(GIB, 3 * GIB + GIB / 2, &Constraints::any())
        .unwrap();
    assert_eq!((s.device, s.size()), (id(1), 3 * GIB));
}

#[test]
fn capacity_reports_cover_a_device_set_without_headroom_or_cordoned_devices() {
    let mut a = alloc(&[(1, 100), (2, 50), (3, 500)]);
    a.set_reserved(id(1), 10 * GIB).unwrap();
    a.allocate(20 * GIB, &Constraints::on_devices(&[id(1)]))
        .unwrap();
    let seg = [id(1), id(2), id(2)];
    let c = a.capacity(Some(&seg)).unwrap();
    assert_eq!(
        (c.devices, c.capacity, c.free, c.reserved_headroom),
        (2, 150 * GIB, 120 * GIB, 10 * GIB)
    );
    assert_eq!(
        (c.largest_allocatable, c.largest_on),
        (70 * GIB, Some(id(1)))
    );
    assert_eq!(c.smallest_allocatable, GIB);
    a.cordon(id(1)).unwrap();
    let c = a.capacity(Some(&seg)).unwrap();
    assert_eq!(
        (c.cordoned, c.free, c.largest_allocatable),
        (1, 50 * GIB, 50 * GIB)
    );
    // The fleet-wide figure follows the same rule.
    assert_eq!(a.total_free(), 550 * GIB);
    assert_eq!(a.total_unallocated(), 630 * GIB);
    // Nothing allocatable: 0 for the smallest slice (CSI: unset).
    a.cordon(id(2)).unwrap();
    let c = a.capacity(Some(&seg)).unwrap();
    assert_eq!((c.free, c.smallest_allocatable, c.largest_on), (0, 0, None));
    assert!(matches!(
        a.capacity(Some(&[id(9)])),
        Err(Error::UnknownDevice(_))
    ));
}

#[test]
fn reservations_renew_and_list() {
    let mut a = alloc(&[(1, 100)]);
    let r1 = a.reserve(10 * GIB, &Constraints::any(), 0, 10).unwrap();
    let r2 = a
        .reserve_range(GIB, 5 * GIB, &Constraints::any(), 0, 20)
        .unwrap();
    assert_eq!(r2.slice.size(), 5 * GIB);
    let r1 = a.renew(r1.slice.id, 5, 30).unwrap();
    assert_eq!(r1.expires_at, 35);
    assert_eq!(a.reservations(), [r1.clone(), r2.clone()]);
    // Expired: renewal refused, nothing changes.
    let err = a.renew(r2.slice.id, 20, 10).unwrap_err();
    assert!(matches!(err, Error::ReservationExpired { .. }), "{err}");
    assert!(
        a.renew(r1.slice.id, 6, 0)
            .unwrap_err()
            .to_string()
            .contains("invalid ttl")
    );
    assert_eq!(a.expire(20), [r2.slice.id]);
    assert_eq!(a.reservations(), [r1]);
}

/// Near the end of the clock, `now + ttl` must fit a u64: clamping it gave a reservation made
/// at `u64::MAX` with ttl 1 an expiry equal to `now`, expired when made although ttl > 0. Such a
/// call is refused naming `ttl` and the rule, and changes nothing (an expired reservation that
/// `reserve` would have released first stays); a sum of exactly `u64::MAX` is fine.
#[test]
fn reservations_whose_expiry_overflows_are_refused_and_change_nothing() {
    const MAX: u64 = u64::MAX;
    let mut a = alloc(&[(1, 100)]);
    let any = Constraints::any();
    let old = a.reserve(10 * GIB, &any, 0, 10).unwrap();
    let before = a.snapshot(0);
    for (now, ttl) in [(MAX, 1), (MAX - 5, 10), (1, MAX)] {
        for err in [
            a.reserve(GIB, &any, now, ttl).unwrap_err(),
            a.reserve_range(GIB, 2 * GIB, &any, now, ttl).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(
                matches!(err, Error::InvalidArgument { field: "ttl", .. }),
                "{msg}"
            );
            assert!(
                msg.contains("now + ttl") && msg.contains(&now.to_string()),
                "{msg}"
            );
        }
        assert_eq!(a.snapshot(0), before, "now {now}, ttl {ttl}");
        assert!(a.is_reservation(old.slice.id));
    }
    // Exactly u64::MAX: alive until the last tick.
    let last = a.reserve(GIB, &any, MAX - 10, 10).unwrap();
    assert_eq!(last.expires_at, MAX);
    assert!(a.slice(old.slice.id).is_none(), "expired at 10, released");
    // Renewal follows the same rule and keeps the old expiry when refused.
    let err = a.renew(last.slice.id, MAX - 1, 2).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { field: "ttl", .. }),
        "{err}"
    );
    assert_eq!(a.reservations()[0].expires_at, MAX);
    assert_eq!(a.renew(last.slice.id, MAX - 1, 1).unwrap().expires_at, MAX);
    assert_eq!(a.expire(MAX - 1), []);
    a.commit(last.slice.id, MAX - 1).unwrap();
}

#[test]
fn a_cordoned_device_takes_nothing_new_but_its_slices_live_on() {
    let mut a = alloc(&[(1, 100), (2, 100)]);
    let s = a
        .allocate(10 * GIB, &Constraints::on_devices(&[id(1)]))
        .unwrap();
    let r = a
        .reserve(10 * GIB, &Constraints::on_devices(&[id(1)]), 0, 100)
        .unwrap();
    a.cordon(id(1)).unwrap();
    assert!(a.is_cordoned(id(1)).unwrap());
    let err = a
        .allocate(GIB, &Constraints::on_devices(&[id(1)]))
        .unwrap_err();
    assert!(
        err.to_string().ends_with("; 1 candidate(s) cordoned"),
        "{err}"
    );
    let err = a.allocate_at(id(1), 50 * GIB, GIB).unwrap_err();
    assert_eq!(
        err.to_string(),
        "device 1 is cordoned: it takes no new slices or reservations"
    );
    assert_eq!(a.allocate(GIB, &Constraints::any()).unwrap().device, id(2));
    a.commit(r.slice.id, 1).unwrap();
    a.grow(r.slice.id, 15 * GIB).unwrap();
    a.free(s.id).unwrap();
    a.uncordon(id(1)).unwrap();
    a.allocate(GIB, &Constraints::on_devices(&[id(1)])).unwrap();
    common::check_invariants(&a).unwrap();
}

#[test]
fn devices_resize_and_change_headroom() {
    let mut a = alloc(&[(1, 100)]);
    let s = a.allocate(60 * GIB, &Constraints::any()).unwrap();
    let tail = a.allocate_at(id(1), 90 * GIB, 5 * GIB).unwrap();
    // Shrinking into a slice is refused, naming it.
    let err = a.resize_device(id(1), 80 * GIB).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid capacity: shrinking device 1 to 85899345920 bytes would cut off {} at byte 96636764160",
            tail.id
        )
    );
    a.free(tail.id).unwrap();
    assert_eq!(
        a.resize_device(id(1), 80 * GIB).unwrap().capacity(),
        80 * GIB
    );
    assert_eq!(a.largest_allocatable(), Some((id(1), 20 * GIB)));
    // Growth adds free space at the end, merged with the free extent before it.
    a.resize_device(id(1), 200 * GIB).unwrap();
    assert_eq!(a.largest_allocatable(), Some((id(1), 140 * GIB)));
    assert_eq!(a.device_report(id(1)).unwrap().free_extents, 1);
    // More headroom than is free: new slices wait, growth may still use it.
    a.set_reserved(id(1), 150 * GIB).unwrap();
    assert!(a.allocate(GIB, &Constraints::any()).is_err());
    a.grow(s.id, 70 * GIB).unwrap();
    let err = a.set_reserved(id(1), 300 * GIB).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid device.reserved:"),
        "{err}"
    );
    let err = a.resize_device(id(1), 100 * GIB).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid device.reserved:"),
        "{err}"
    );
    common::check_invariants(&a).unwrap();
}

#[test]
fn labels_select_devices_and_are_checked() {
    let mut a = alloc(&[(1, 10), (2, 10), (3, 10)]);
    a.set_label(id(1), "zone", "a").unwrap();
    a.set_label(id(2), "zone", "b").unwrap();
    a.set_label(id(3), "zone", "a").unwrap();
    a.set_label(id(3), "rack", "7").unwrap();
    assert_eq!(a.devices_matching(&[("zone", "a")]), [id(1), id(3)]);
    assert_eq!(a.devices_matching(&[("zone", "a"), ("rack", "7")]), [id(3)]);
    assert_eq!(a.devices_matching(&[]).len(), 3);
    assert_eq!(a.remove_label(id(3), "rack").unwrap(), Some("7".into()));
    assert_eq!(a.labels(id(3)).unwrap().len(), 1);
    let err = a.set_label(id(1), "", "x").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid label.key: must be 1 to 253 bytes"),
        "{err}"
    );
    let err = a.set_label(id(1), "a b", "x").unwrap_err();
    assert!(err.to_string().contains("whitespace"), "{err}");
    let err = a.set_label(id(1), "k", "\n").unwrap_err();
    assert!(err.to_string().starts_with("invalid label.value"), "{err}");
    assert!(matches!(
        a.set_label(id(9), "k", "v"),
        Err(Error::UnknownDevice(_))
    ));
}

#[test]
fn drain_plans_place_every_slice_elsewhere_without_overlap() {
    let mut a = alloc(&[(1, 100)]);
    let slices: Vec<_> = [30, 20, 10, 5]
        .iter()
        .map(|&g| a.allocate(g * GIB, &Constraints::any()).unwrap())
        .collect();
    let r = a.reserve(5 * GIB, &Constraints::any(), 0, 100).unwrap();
    a.add_device(DeviceSpec::new(id(2), 40 * GIB).unwrap())
        .unwrap();
    a.add_device(DeviceSpec::new(id(3), 40 * GIB).unwrap())
        .unwrap();
    a.add_device(DeviceSpec::new(id(4), 100 * GIB).unwrap())
        .unwrap();
    a.cordon(id(4)).unwrap();
    let before = a.snapshot(0);
    let plan = a.drain_plan(id(1), &Constraints::any()).unwrap();
    assert_eq!(a.snapshot(0), before, "planning changes nothing");
    assert!(plan.is_complete(), "{plan:?}");
    let sizes: Vec<u64> = plan.moves.iter().map(|m| m.size / GIB).collect();
    assert_eq!(sizes, [30, 20, 10, 5, 5]);
    assert!(plan.moves.iter().all(|m| m.to == id(2) || m.to == id(3)));
    assert_eq!(plan.moves.iter().filter(|m| m.reservation).count(), 1);
    // Carry it out: every target is free and nothing overlaps.
    for m in &plan.moves {
        a.allocate_at(m.to, m.extent.offset(), m.extent.len())
            .unwrap();
        if m.reservation {
            a.release(m.slice).unwrap();
        } else {
            a.free(m.slice).unwrap();
        }
    }
    assert_eq!(a.device_report(id(1)).unwrap().allocated, 0);
    assert_eq!(slices.len() + 1, plan.moves.len());
    assert!(a.slice(r.slice.id).is_none());
    common::check_invariants(&a).unwrap();
    a.remove_device(id(1)).unwrap();

    // Not enough room: the slices that fit nowhere are listed.
    let mut a = alloc(&[(1, 100), (2, 25)]);
    a.allocate(30 * GIB, &Constraints::on_devices(&[id(1)]))
        .unwrap();
    let small = a
        .allocate(20 * GIB, &Constraints::on_devices(&[id(1)]))
        .unwrap();
    let plan = a.drain_plan(id(1), &Constraints::any()).unwrap();
    assert!(!plan.is_complete());
    assert_eq!(plan.unplaced.len(), 1);
    assert_eq!(plan.moves[0].slice, small.id);
    assert_eq!(plan.moves[0].extent, Extent::new(0, 20 * GIB).unwrap());
}

/// Every fleet change goes through the journal and comes back on recovery.
#[test]
fn fleet_changes_are_journaled() {
    let mut j = Journaled::create(
        Allocator::new(AllocatorConfig::default()).unwrap(),
        Vec::new(),
        0,
        u64::MAX,
    )
    .unwrap();
    j.add_device(DeviceSpec::new(id(1), 100 * GIB).unwrap())
        .unwrap();
    j.add_device(DeviceSpec::new(id(2), 100 * GIB).unwrap())
        .unwrap();
    j.set_label(id(1), "zone", "a").unwrap();
    j.cordon(id(2)).unwrap();
    j.resize_device(id(1), 120 * GIB).unwrap();
    j.set_reserved(id(1), 20 * GIB).unwrap();
    let r = recover(None, j.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.snapshot(0), j.allocator().snapshot(0));
    assert!(r.allocator.is_cordoned(id(2)).unwrap());
    assert_eq!(r.allocator.labels(id(1)).unwrap()["zone"], "a");
    assert_eq!(r.allocator.capacity(None).unwrap().free, 100 * GIB);
    // Labels and cordons go through snapshots too.
    let snap = r.allocator.snapshot(r.last_seq);
    let back = Allocator::from_snapshot(&snap, AllocatorConfig::default()).unwrap();
    assert_eq!(back.snapshot(r.last_seq), snap);
}
