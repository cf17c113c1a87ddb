//! Journal and snapshot behaviour beyond the truncation property: corruption before the tail is
//! refused with its offset, write failures roll back, condensation and resumption keep every
//! acknowledged record, and replayed records are checked like live operations.

use std::io::{self, Write};

use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, Error, Extent, GIB, Journaled,
    Record, SliceId, Snapshot, decode_journal, encode_record, journal::JOURNAL_HEADER, recover,
};

fn dev(id: u64, gib: u64) -> DeviceSpec {
    DeviceSpec::new(DeviceId::new(id), gib * GIB).unwrap()
}

/// A new journal with device 1 of 100 GiB.
fn one_device() -> Journaled<Vec<u8>> {
    let mut j = Journaled::create(
        Allocator::new(AllocatorConfig::default()).unwrap(),
        Vec::new(),
        0,
        1 << 20,
    )
    .unwrap();
    j.add_device(dev(1, 100)).unwrap();
    j
}

fn sample() -> Journaled<Vec<u8>> {
    let mut j = one_device();
    j.add_device(dev(2, 50)).unwrap();
    let a = j.allocate(10 * GIB, &Constraints::any()).unwrap();
    let b = j.allocate(20 * GIB, &Constraints::any()).unwrap();
    j.grow(b.id, 22 * GIB).unwrap();
    j.free(a.id).unwrap();
    j.allocate_at(DeviceId::new(1), 50 * GIB, 5 * GIB).unwrap();
    // One record of every other kind.
    let r = j.reserve(3 * GIB, &Constraints::any(), 0, 10).unwrap();
    j.renew(r.slice.id, 5, 10).unwrap();
    j.commit(r.slice.id, 6).unwrap();
    let r = j
        .reserve_range(GIB, 2 * GIB, &Constraints::any(), 6, 10)
        .unwrap();
    j.release(r.slice.id).unwrap();
    j.set_label(DeviceId::new(2), "zone", "b").unwrap();
    j.remove_label(DeviceId::new(2), "zone").unwrap();
    j.cordon(DeviceId::new(2)).unwrap();
    j.uncordon(DeviceId::new(2)).unwrap();
    j.resize_device(DeviceId::new(2), 60 * GIB).unwrap();
    j.set_reserved(DeviceId::new(2), 5 * GIB).unwrap();
    j.allocate_range(GIB, 4 * GIB, &Constraints::any()).unwrap();
    j
}

/// Frames in `sample()`'s journal.
const SAMPLE_FRAMES: usize = 19;

#[test]
fn a_damaged_frame_before_the_tail_is_refused_with_its_offset() {
    let j = sample();
    let bytes = j.writer().clone();
    let entries = decode_journal(&bytes).unwrap().entries;
    assert_eq!(entries.len(), SAMPLE_FRAMES);
    let third = entries[2].offset as usize;
    let mut bad = bytes.clone();
    bad[third + 12] ^= 0x40;
    match recover(None, &bad, AllocatorConfig::default()) {
        Err(Error::CorruptJournal { offset, reason }) => {
            assert_eq!(offset, third as u64);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected CorruptJournal, got {other:?}"),
    }
    // The same damage in the last frame is a torn write: dropped, the rest recovered.
    let last = entries[SAMPLE_FRAMES - 1].offset as usize;
    let mut torn = bytes.clone();
    torn[last + 12] ^= 0x40;
    let r = recover(None, &torn, AllocatorConfig::default()).unwrap();
    assert_eq!(
        (r.applied, r.valid_len, r.torn_bytes),
        (SAMPLE_FRAMES - 1, last, bytes.len() - last)
    );
}

/// The state after each prefix of acknowledged records of `bytes`, and where each prefix ends.
fn prefix_states(bytes: &[u8]) -> (Vec<usize>, Vec<Vec<slice_alloc::DeviceSnapshot>>) {
    let entries = decode_journal(bytes).unwrap().entries;
    let mut ends: Vec<usize> = entries.iter().map(|e| e.offset as usize).collect();
    ends.push(bytes.len());
    let states = ends
        .iter()
        .map(|&e| {
            recover(None, &bytes[..e], AllocatorConfig::default())
                .unwrap()
                .allocator
                .snapshot(0)
                .devices
        })
        .collect();
    (ends, states)
}

/// Issue 13, defect 1: a damaged length field of a frame followed by intact frames used to be
/// taken for a torn tail (the frame "ran past the end"), silently dropping acknowledged
/// records after it.
#[test]
fn a_damaged_length_field_before_intact_frames_is_refused() {
    let bytes = sample().writer().clone();
    let entries = decode_journal(&bytes).unwrap().entries;
    for (i, e) in entries.iter().enumerate().take(entries.len() - 1) {
        for (byte, value) in [(1, 0x01), (2, 0x10), (3, 0x00), (0, 0xff), (1, 0xff)] {
            let mut bad = bytes.clone();
            let at = e.offset as usize + byte;
            if bad[at] == value {
                continue;
            }
            bad[at] = value;
            match recover(None, &bad, AllocatorConfig::default()) {
                Err(Error::CorruptJournal { offset, reason }) => {
                    assert_eq!(offset, e.offset, "frame {i}: {reason}");
                    assert!(reason.contains("not a torn tail"), "{reason}");
                }
                other => {
                    panic!("frame {i} byte {byte} = {value:#x}: expected refusal, got {other:?}")
                }
            }
        }
    }
}

/// Every single-byte corruption (all 255 other values) at every offset of a multi-frame
/// journal is either refused, or recovered to a prefix holding every record before the damaged
/// frame, with the dropped tail reported in `Recovered::dropped`. Only the last frame, the only
/// place a torn write can be, may be dropped.
#[test]
fn every_single_byte_corruption_is_refused_or_recovers_every_record_before_it() {
    let bytes = sample().writer().clone();
    let (ends, states) = prefix_states(&bytes);
    let frames = ends.len() - 1;
    assert_eq!(frames, SAMPLE_FRAMES);
    let (mut refused, mut dropped) = (0usize, 0usize);
    let mut bad = bytes.clone();
    for at in 0..bytes.len() {
        // The frame holding the damaged byte (None: the header).
        let frame = ends[..frames].iter().rposition(|&e| e <= at);
        for value in 0..=255u8 {
            if value == bytes[at] {
                continue;
            }
            bad[at] = value;
            match recover(None, &bad, AllocatorConfig::default()) {
                Err(Error::CorruptJournal { .. }) => refused += 1,
                Err(e) => panic!("byte {at} = {value:#x}: unexpected error {e}"),
                Ok(r) => {
                    let i =
                        frame.unwrap_or_else(|| panic!("header byte {at} = {value:#x} accepted"));
                    assert_eq!(
                        i,
                        frames - 1,
                        "byte {at} = {value:#x}: frame {i} of {frames} dropped as a torn tail"
                    );
                    let k = ends
                        .iter()
                        .position(|&e| e == r.valid_len)
                        .expect("valid_len on a frame boundary");
                    assert!(
                        k >= i,
                        "byte {at} = {value:#x}: recovered {k} records, damage in frame {i}"
                    );
                    assert_eq!(
                        r.allocator.snapshot(0).devices,
                        states[k],
                        "byte {at} = {value:#x}"
                    );
                    let d = r.dropped.as_ref().unwrap_or_else(|| {
                        panic!("byte {at} = {value:#x}: dropped tail not reported")
                    });
                    assert_eq!(
                        (d.offset as usize, d.bytes as usize),
                        (r.valid_len, bytes.len() - r.valid_len)
                    );
                    assert_eq!(d.seq, Some(k as u64 + 1));
                    dropped += 1;
                }
            }
        }
        bad[at] = bytes[at];
    }
    // Every corruption of the last frame is a (reported) torn tail; every other one is refused.
    let last_frame = bytes.len() - ends[frames - 1];
    assert_eq!(dropped, last_frame * 255);
    assert_eq!(refused, (bytes.len() - last_frame) * 255);
}

#[test]
fn zero_filled_space_after_a_torn_frame_is_a_torn_tail() {
    let j = sample();
    let mut bytes = j.writer().clone();
    let full = bytes.len();
    bytes.truncate(full - 10); // loses non-zero bytes of the last record
    bytes.extend_from_slice(&[0; 4096]);
    let r = recover(None, &bytes, AllocatorConfig::default()).unwrap();
    assert_eq!(r.applied, SAMPLE_FRAMES - 1);
    assert_eq!(r.torn_bytes, bytes.len() - r.valid_len);
}

#[test]
fn a_foreign_file_is_not_a_journal() {
    let err = recover(
        None,
        b"PK\x03\x04 definitely a zip",
        AllocatorConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("journal corrupt at byte 0: not a slice-alloc journal"),
        "{err}"
    );
    // A partial header is an empty journal that was torn while being created.
    let r = recover(None, &JOURNAL_HEADER[..5], AllocatorConfig::default()).unwrap();
    assert_eq!((r.applied, r.valid_len), (0, 0));
}

#[test]
fn replayed_records_are_checked_and_the_culprit_named() {
    let mut bytes = JOURNAL_HEADER.to_vec();
    let recs = [
        Record::AddDevice(dev(1, 100)),
        Record::Allocate {
            slice: SliceId::new(1),
            device: DeviceId::new(1),
            extents: vec![Extent::new(0, 10 * GIB).unwrap()],
        },
        Record::Allocate {
            slice: SliceId::new(2),
            device: DeviceId::new(1),
            extents: vec![Extent::new(5 * GIB, 10 * GIB).unwrap()],
        },
    ];
    for (i, r) in recs.iter().enumerate() {
        encode_record(i as u64 + 1, r, &mut bytes);
    }
    let err = recover(None, &bytes, AllocatorConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("journal record 3 at byte"), "{msg}");
    assert!(
        msg.ends_with("slice 2 extent [5368709120, 16106127360) on device 1 overlaps slice 1"),
        "{msg}"
    );
}

/// A checksum-valid record or a snapshot carrying slice id `u64::MAX` made recovery panic
/// (`next_id = id + 1` overflowed), and a snapshot whose `next_slice_id` is `u64::MAX` made
/// the next allocation panic the same way. Both are refused with an error naming the id, the
/// allocator stays usable and loses nothing.
#[test]
fn the_largest_slice_id_is_refused_not_a_panic() {
    let mut bytes = JOURNAL_HEADER.to_vec();
    let recs = [
        Record::AddDevice(dev(1, 100)),
        Record::Allocate {
            slice: SliceId::new(u64::MAX),
            device: DeviceId::new(1),
            extents: vec![Extent::new(0, GIB).unwrap()],
        },
    ];
    for (i, r) in recs.iter().enumerate() {
        encode_record(i as u64 + 1, r, &mut bytes);
    }
    let msg = recover(None, &bytes, AllocatorConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("journal record 2 at byte"), "{msg}");
    assert!(
        msg.ends_with(
            "invalid slice id: slice 18446744073709551615 is not an id: ids are below \
             18446744073709551615 so that a next id exists"
        ),
        "{msg}"
    );

    // The largest id below it is fine, and is the last one: nothing more is handed out.
    let mut a = Allocator::new(AllocatorConfig::default()).unwrap();
    a.add_device(dev(1, 100)).unwrap();
    let mut snap = a.snapshot(0);
    snap.devices[0].slices.push(slice_alloc::SliceSnapshot {
        id: SliceId::new(u64::MAX - 1),
        extents: vec![Extent::new(0, GIB).unwrap()],
        expires_at: None,
    });
    let mut a = Allocator::from_snapshot(&snap, AllocatorConfig::default()).unwrap();
    let before = a.snapshot(0);
    assert_eq!(before.next_slice_id, u64::MAX);
    for r in [
        a.allocate(GIB, &Constraints::any()),
        a.allocate_range(GIB, 2 * GIB, &Constraints::any()),
        a.allocate_at(DeviceId::new(1), 10 * GIB, GIB),
        a.reserve(GIB, &Constraints::any(), 0, 10).map(|r| r.slice),
    ] {
        let e = r.unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid slice id: no slice id is left: ids are below 18446744073709551615 and the \
             next would be 18446744073709551615"
        );
    }
    assert_eq!(a.snapshot(0), before);
    // Other changes go on.
    a.free(SliceId::new(u64::MAX - 1)).unwrap();
    let mut snap = a.snapshot(0);
    snap.next_slice_id = u64::MAX;
    let a = Allocator::from_snapshot(&snap, AllocatorConfig::default()).unwrap();
    assert_eq!(a.snapshot(0), snap);
}

/// A checksum-valid frame with sequence `u64::MAX` followed by another made decoding panic
/// (`prev + 1` overflowed); a snapshot or journal ending at `u64::MAX` made the next change
/// panic the same way, after it was applied. The journal is refused as corrupt, and the change
/// is refused before anything changes.
#[test]
fn the_largest_sequence_number_is_refused_not_a_panic() {
    let mut bytes = JOURNAL_HEADER.to_vec();
    encode_record(u64::MAX, &Record::AddDevice(dev(1, 10)), &mut bytes);
    let second = bytes.len();
    encode_record(0, &Record::AddDevice(dev(2, 10)), &mut bytes);
    match decode_journal(&bytes) {
        Err(Error::CorruptJournal { offset, reason }) => {
            assert_eq!(offset as usize, second);
            assert_eq!(reason, "sequence 0 does not follow 18446744073709551615");
        }
        other => panic!("{other:?}"),
    }
    let snap = Allocator::new(AllocatorConfig::default())
        .unwrap()
        .snapshot(u64::MAX - 1);
    let r = recover(Some(&snap), &bytes[..second], AllocatorConfig::default()).unwrap();
    assert_eq!(r.last_seq, u64::MAX);
    let mut j = Journaled::resume(r, bytes[..second].to_vec(), 1 << 20).unwrap();
    let before = j.allocator().snapshot(0);
    let e = j.add_device(dev(2, 10)).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid last_seq: record sequence numbers are used up: the last was 18446744073709551615"
    );
    assert_eq!(j.allocator().snapshot(0), before);
    assert_eq!(j.writer().len(), second);

    let g = slice_alloc::GroupCommit::create(
        Allocator::new(AllocatorConfig::default()).unwrap(),
        Vec::new(),
        u64::MAX,
        1 << 20,
    )
    .unwrap();
    assert!(
        g.add_device(dev(1, 10))
            .unwrap_err()
            .to_string()
            .contains("sequence numbers are used up")
    );
}

/// A change whose record is larger than a frame may hold (16 MiB: a multi-extent slice of
/// more than a million extents) was written and acknowledged, and recovery then dropped it as
/// a torn tail. It is refused before anything is written, and the allocator is unchanged.
#[test]
fn a_record_too_large_to_recover_is_refused_not_acknowledged() {
    let config = AllocatorConfig {
        multi_extent: true,
        ..AllocatorConfig::default()
    };
    // 1,100,000 free one-byte holes between one-byte slices (1 byte granularity).
    let holes: u64 = 1_100_000;
    let mut a = Allocator::new(config.clone()).unwrap();
    let dev = DeviceSpec::from_parts(DeviceId::new(1), 2 * holes, 1, 0).unwrap();
    a.add_device(dev).unwrap();
    for i in 0..holes {
        a.allocate_at(DeviceId::new(1), 2 * i + 1, 1).unwrap();
    }
    let mut j = Journaled::create(a, Vec::new(), 0, u64::MAX).unwrap();
    let before = j.allocator().snapshot(0).devices;
    let next_before = j.snapshot().next_slice_id;
    let written = j.writer().len();
    let e = j
        .allocate(holes, &Constraints::any())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "invalid change: its journal record would be 17600029 bytes, above the 16777216"
        ),
        "{e}"
    );
    // (Compared without printing a million slices.) The refused change gave its id back.
    assert!(j.allocator().snapshot(0).devices == before);
    assert_eq!(j.snapshot().next_slice_id, next_before);
    assert_eq!(j.writer().len(), written);
    // A smaller multi-extent slice goes on, and its record reads back.
    let s = j.allocate(1000, &Constraints::any()).unwrap();
    assert_eq!(s.extents.len(), 1000);
    let d = decode_journal(j.writer()).unwrap();
    assert_eq!(d.entries.len(), 1);
    assert_eq!(
        d.entries[0].record,
        Record::Allocate {
            slice: s.id,
            device: s.device,
            extents: s.extents.clone(),
        }
    );
    // Group commit refuses it the same way, and goes on.
    let (alloc, _) = j.into_parts();
    let g = slice_alloc::GroupCommit::create(alloc, Vec::new(), 0, u64::MAX).unwrap();
    let e = g
        .allocate(holes - 1000, &Constraints::any())
        .unwrap_err()
        .to_string();
    assert!(e.contains("above the 16777216 a record may hold"), "{e}");
    g.allocate(1000, &Constraints::any()).unwrap();
}

#[test]
fn condensing_keeps_every_acknowledged_record() {
    let mut j = sample();
    let snap = j.snapshot();
    // The snapshot goes through serde like a caller would persist it.
    let json = serde_json::to_string(&snap).unwrap();
    let snap: Snapshot = serde_json::from_str(&json).unwrap();
    let old = j.switch_journal(Vec::new()).unwrap();
    let s = j.allocate(7 * GIB, &Constraints::any()).unwrap();
    j.shrink(s.id, 3 * GIB).unwrap();
    let want = j.snapshot().devices;

    // New journal on top of the snapshot.
    let r = recover(Some(&snap), j.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.snapshot(0).devices, want);
    assert_eq!(r.last_seq, j.last_seq());
    // Crash before the old journal was deleted: its records are already in the snapshot.
    let r = recover(Some(&snap), &old, AllocatorConfig::default()).unwrap();
    assert_eq!(
        (r.applied, r.allocator.snapshot(0).devices),
        (0, snap.devices.clone())
    );
    // A journal that starts after a gap has lost records: refused.
    let mut stale = snap.clone();
    stale.last_seq -= 2;
    let err = recover(Some(&stale), j.writer(), AllocatorConfig::default()).unwrap_err();
    assert!(err.to_string().contains("records are missing"), "{err}");
}

#[test]
fn recovery_then_resume_appends_to_the_truncated_journal() {
    let j = sample();
    let mut bytes = j.writer().clone();
    bytes.truncate(bytes.len() - 5); // torn last frame
    let r = recover(None, &bytes, AllocatorConfig::default()).unwrap();
    bytes.truncate(r.valid_len);
    let mut j = Journaled::resume(r, bytes, 1 << 20).unwrap();
    j.allocate(GIB, &Constraints::any()).unwrap();
    let want = j.snapshot();
    let r = recover(None, j.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.snapshot(want.last_seq), want);
}

/// Issue 13, defect 2: a reservation made before a restart used to share its id with a slice
/// allocated after it (reservations were not journaled, so the next id went back). Now
/// reservations, their renewals, commits and releases are journaled, the snapshot carries them
/// and the next id, and ids never repeat across restarts through the journal or a snapshot.
#[test]
fn reservations_are_durable_and_ids_never_repeat_across_restarts() {
    let mut j = one_device();
    let a = j.allocate(GIB, &Constraints::any()).unwrap();
    let kept = j.reserve(10 * GIB, &Constraints::any(), 0, 100).unwrap();
    let released = j.reserve(10 * GIB, &Constraints::any(), 0, 100).unwrap();
    j.release(released.slice.id).unwrap();
    j.renew(kept.slice.id, 50, 100).unwrap();
    let mut seen: Vec<SliceId> = vec![a.id, kept.slice.id, released.slice.id];

    // Restart from the journal alone.
    let r = recover(None, j.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(
        r.allocator.reservations(),
        j.allocator().reservations(),
        "reservations survive"
    );
    assert_eq!(r.allocator.reservations()[0].expires_at, 150);
    let mut j2 = Journaled::resume(r, j.writer().clone(), 1 << 20).unwrap();
    let b = j2.allocate(GIB, &Constraints::any()).unwrap();
    assert!(!seen.contains(&b.id), "{} reused", b.id);
    seen.push(b.id);
    // The reservation made before the restart commits as itself.
    j2.commit(kept.slice.id, 120).unwrap();

    // Restart from a snapshot (through serde) and an empty journal: still no reuse.
    let snap: Snapshot =
        serde_json::from_str(&serde_json::to_string(&j2.snapshot()).unwrap()).unwrap();
    let r = recover(Some(&snap), &JOURNAL_HEADER, AllocatorConfig::default()).unwrap();
    let mut j3 = Journaled::resume(r, JOURNAL_HEADER.to_vec(), 1 << 20).unwrap();
    let c = j3.reserve(GIB, &Constraints::any(), 200, 10).unwrap();
    assert!(!seen.contains(&c.slice.id), "{} reused", c.slice.id);
    assert!(c.slice.id.get() > b.id.get());
    let r = recover(Some(&snap), j3.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.snapshot(0), j3.allocator().snapshot(0));
    assert_eq!(r.allocator.reservations()[0].expires_at, 210);
}

/// The snapshot alone must carry the next id: when the slices and reservations with the highest
/// ids are gone before the snapshot is taken, nothing in its device list shows those ids, and a
/// restart from it (with an empty journal) must still not hand them out again.
#[test]
fn a_snapshot_keeps_ids_of_freed_slices_and_released_reservations_from_reuse() {
    let mut j = one_device();
    let a = j.allocate(GIB, &Constraints::any()).unwrap();
    let b = j.allocate(GIB, &Constraints::any()).unwrap();
    let c = j.reserve(GIB, &Constraints::any(), 0, 100).unwrap();
    j.free(b.id).unwrap();
    j.release(c.slice.id).unwrap();
    let seen = [a.id, b.id, c.slice.id];
    let snap: Snapshot =
        serde_json::from_str(&serde_json::to_string(&j.snapshot()).unwrap()).unwrap();
    assert!(snap.next_slice_id > c.slice.id.get(), "{snap:?}");
    let r = recover(Some(&snap), &JOURNAL_HEADER, AllocatorConfig::default()).unwrap();
    let mut j2 = Journaled::resume(r, JOURNAL_HEADER.to_vec(), 1 << 20).unwrap();
    let d = j2.allocate(GIB, &Constraints::any()).unwrap();
    let e = j2.reserve(GIB, &Constraints::any(), 0, 100).unwrap();
    for id in [d.id, e.slice.id] {
        assert!(
            !seen.contains(&id),
            "{id} reused after a restart from a snapshot"
        );
    }
    // The same through the plain allocator's snapshot round trip.
    let mut a2 = Allocator::from_snapshot(&snap, AllocatorConfig::default()).unwrap();
    let f = a2.allocate(GIB, &Constraints::any()).unwrap();
    assert!(!seen.contains(&f.id), "{} reused", f.id);
}

/// Expired reservations released by `reserve` or `expire` are journaled too: after a restart
/// they stay released, and a reservation that fails changes nothing (expired ones included).
#[test]
fn expiry_is_journaled_and_a_failed_reserve_changes_nothing() {
    let mut j = one_device();
    let old = j.reserve(60 * GIB, &Constraints::any(), 0, 10).unwrap();
    // Expired at 10; a reservation of 200 GiB fails and must not release it.
    let before = j.snapshot();
    let err = j
        .reserve(200 * GIB, &Constraints::any(), 20, 10)
        .unwrap_err();
    assert!(matches!(err, Error::Exhausted { .. }), "{err}");
    assert_eq!(j.snapshot(), before);
    assert!(j.allocator().is_reservation(old.slice.id));
    // TTL 0 is refused, naming the field.
    let err = j.reserve(GIB, &Constraints::any(), 20, 0).unwrap_err();
    assert!(err.to_string().starts_with("invalid ttl:"), "{err}");
    // A reservation that fits releases the expired one, durably.
    j.reserve(50 * GIB, &Constraints::any(), 20, 10).unwrap();
    let r = recover(None, j.writer(), AllocatorConfig::default()).unwrap();
    assert!(r.allocator.slice(old.slice.id).is_none());
    assert_eq!(r.allocator.snapshot(0), j.allocator().snapshot(0));
    // `expire` is journaled as well.
    assert_eq!(j.expire(30).unwrap().len(), 1);
    let r = recover(None, j.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.reservations(), []);
}

/// A reservation whose expiry would overflow is refused before anything is journaled, and one
/// that expires at exactly `u64::MAX` survives recovery with that expiry (the old clamping
/// journaled `expires_at == now`, a reservation recovery brought back already expired).
#[test]
fn reservations_at_the_end_of_the_clock_round_trip_through_the_journal() {
    const MAX: u64 = u64::MAX;
    let mut j = one_device();
    let any = Constraints::any();
    let r = j.reserve(GIB, &any, MAX - 10, 10).unwrap();
    let len = j.writer().len();
    let err = j.reserve(GIB, &any, MAX, 1).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { field: "ttl", .. }),
        "{err}"
    );
    let err = j.reserve_range(GIB, 2 * GIB, &any, MAX - 1, 2).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { field: "ttl", .. }),
        "{err}"
    );
    let err = j.renew(r.slice.id, MAX - 1, 5).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { field: "ttl", .. }),
        "{err}"
    );
    assert_eq!(j.writer().len(), len, "a refused call journals nothing");

    let rec = recover(None, j.writer(), AllocatorConfig::default()).unwrap();
    assert_eq!(rec.allocator.reservations(), j.allocator().reservations());
    assert_eq!(rec.allocator.reservations()[0].expires_at, MAX);
    let mut j2 = Journaled::resume(rec, j.writer().clone(), 1 << 20).unwrap();
    assert_eq!(j2.expire(MAX - 1).unwrap(), []);
    j2.commit(r.slice.id, MAX - 1).unwrap();
    let rec = recover(None, j2.writer(), AllocatorConfig::default()).unwrap();
    assert!(!rec.allocator.is_reservation(r.slice.id));
    assert!(rec.allocator.slice(r.slice.id).is_some());
}

/// A writer that fails after `budget` bytes, leaving a partial frame like a full disk would.
struct Failing {
    data: Vec<u8>,
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.data.extend_from_slice(&buf[..n]);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_journal_write_rolls_back_and_poisons() {
    let alloc = Allocator::new(AllocatorConfig::default()).unwrap();
    let mut j = Journaled::create(
        alloc,
        Failing {
            data: Vec::new(),
            budget: 200,
        },
        0,
        1 << 20,
    )
    .unwrap();
    j.add_device(dev(1, 100)).unwrap();
    let a = j.allocate(10 * GIB, &Constraints::any()).unwrap();
    let before = j.snapshot();
    let mut failed = None;
    for _ in 0..10 {
        match j.grow(a.id, j.allocator().slice(a.id).unwrap().size() + GIB) {
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("the budget runs out");
    assert!(matches!(err, Error::JournalWrite(_)), "{err:?}");
    // The in-memory state matches the journal: the failed grow was rolled back.
    let r = recover(None, &j.writer().data, AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.snapshot(0).devices, j.snapshot().devices);
    assert!(j.snapshot().last_seq >= before.last_seq);
    // Further changes are refused until a new journal is started.
    assert!(matches!(j.free(a.id), Err(Error::JournalPoisoned)));
    let snap = j.snapshot();
    j.switch_journal(Failing {
        data: Vec::new(),
        budget: usize::MAX,
    })
    .unwrap();
    j.free(a.id).unwrap();
    let r = recover(Some(&snap), &j.writer().data, AllocatorConfig::default()).unwrap();
    assert_eq!(r.allocator.total_free(), 100 * GIB);
}

/// A writer that fails every write while its switch is on.
struct Switch {
    data: Vec<u8>,
    fail: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Write for Switch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fail.get() {
            return Err(io::Error::other("switched off"));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every kind of change, when its journal write fails, is undone exactly: the allocator is
/// back where it was, next slice id included (the whole snapshot compares equal), which is also
/// what recovery rebuilds from the journal.
#[test]
fn every_change_is_undone_when_its_write_fails() {
    type Change = fn(&mut Journaled<Switch>) -> Result<(), Error>;
    let d1 = DeviceId::new(1);
    let changes: Vec<(&str, Change)> = vec![
        ("add_device", |j| j.add_device(dev(9, 10))),
        ("remove_device", |j| {
            j.remove_device(DeviceId::new(2)).map(drop)
        }),
        ("allocate", |j| {
            j.allocate(GIB, &Constraints::any()).map(drop)
        }),
        ("allocate_range", |j| {
            j.allocate_range(GIB, 3 * GIB, &Constraints::any())
                .map(drop)
        }),
        ("allocate_at", |j| {
            j.allocate_at(DeviceId::new(1), 90 * GIB, GIB).map(drop)
        }),
        ("free", |j| j.free(SliceId::new(1)).map(drop)),
        ("grow", |j| j.grow(SliceId::new(1), 12 * GIB).map(drop)),
        ("shrink", |j| j.shrink(SliceId::new(1), 5 * GIB).map(drop)),
        // Releases the two expired reservations and reserves: one atomic frame.
        ("reserve", |j| {
            j.reserve(GIB, &Constraints::any(), 50, 10).map(drop)
        }),
        ("reserve_range", |j| {
            j.reserve_range(GIB, 2 * GIB, &Constraints::any(), 50, 10)
                .map(drop)
        }),
        ("commit", |j| j.commit(SliceId::new(4), 5).map(drop)),
        ("release", |j| j.release(SliceId::new(4)).map(drop)),
        ("renew", |j| j.renew(SliceId::new(4), 5, 100).map(drop)),
        ("expire", |j| j.expire(50).map(drop)),
        ("set_label", |j| {
            j.set_label(DeviceId::new(1), "zone", "b").map(drop)
        }),
        ("remove_label", |j| {
            j.remove_label(DeviceId::new(1), "zone").map(drop)
        }),
        ("cordon", |j| j.cordon(DeviceId::new(1))),
        ("uncordon", |j| j.uncordon(DeviceId::new(3))),
        ("resize_device", |j| {
            j.resize_device(DeviceId::new(1), 200 * GIB).map(drop)
        }),
        ("set_reserved", |j| {
            j.set_reserved(DeviceId::new(1), 7 * GIB).map(drop)
        }),
    ];
    for (name, change) in changes {
        let fail = std::rc::Rc::new(std::cell::Cell::new(false));
        let w = Switch {
            data: Vec::new(),
            fail: std::rc::Rc::clone(&fail),
        };
        // Multi-extent: slice 1 can grow although reservations follow it.
        let config = AllocatorConfig {
            multi_extent: true,
            ..AllocatorConfig::default()
        };
        let mut j = Journaled::create(Allocator::new(config).unwrap(), w, 0, u64::MAX).unwrap();
        j.add_device(dev(1, 100)).unwrap();
        j.add_device(dev(2, 10)).unwrap();
        j.add_device(dev(3, 10)).unwrap();
        j.set_label(d1, "zone", "a").unwrap();
        j.cordon(DeviceId::new(3)).unwrap();
        j.allocate(10 * GIB, &Constraints::on_devices(&[d1]))
            .unwrap(); // slice 1
        j.reserve(GIB, &Constraints::on_devices(&[d1]), 0, 10)
            .unwrap(); // 2, expires at 10
        j.reserve(GIB, &Constraints::on_devices(&[d1]), 0, 20)
            .unwrap(); // 3, expires at 20
        j.reserve(GIB, &Constraints::on_devices(&[d1]), 0, 100)
            .unwrap(); // 4
        let before = j.snapshot();
        fail.set(true);
        let err = change(&mut j).unwrap_err();
        assert!(matches!(err, Error::JournalWrite(_)), "{name}: {err}");
        let after = j.snapshot();
        assert_eq!(after, before, "{name} was not undone");
        assert_eq!(j.allocator().reservations().len(), 3, "{name}");
        let r = recover(None, &j.writer().data, AllocatorConfig::default()).unwrap();
        assert_eq!(r.allocator.snapshot(0).devices, before.devices, "{name}");
        assert!(
            matches!(change(&mut j), Err(Error::JournalPoisoned)),
            "{name}"
        );
    }
}
