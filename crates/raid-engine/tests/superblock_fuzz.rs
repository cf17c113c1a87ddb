//! Superblocks with a valid checksum but odd values (what a damaged or
//! hostile member can hold): `examine`, `assemble` and, when the volume
//! starts, reading, scrubbing and closing it answer an error or work, and
//! never panic. 64 cases by default; `RAID_ENGINE_PROPTEST_CASES` (or
//! proptest's own `PROPTEST_CASES`, read when the first is not set) for more.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use raid_engine::meta::{SB_OFFSET, SB_SIZE, Superblock};
use raid_engine::{CreateOptions, Volume, VolumeLayout};

/// Values that sit on the edges of every rule.
fn odd_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(7),
        Just(8),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(u64::MAX / 512),
        Just(1 << 40),
        0u64..100_000,
    ]
}

/// One field of a superblock changed.
#[derive(Debug, Clone)]
enum Change {
    Level(u32),
    Layout(u32),
    LayoutName(String),
    Chunk(u64),
    Component(u64),
    DataOffset(u64),
    BitmapRegion(u64),
    BitmapBytes(u64),
    Events(u64),
    Recovery(u64),
    Role(u32),
    Roles(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(4),
            Just(5),
            Just(6),
            Just(10),
            Just(100),
            any::<u32>()
        ]
        .prop_map(Change::Level),
        any::<u32>().prop_map(Change::Layout),
        "[a-z0-9-]{0,32}".prop_map(Change::LayoutName),
        odd_u64().prop_map(Change::Chunk),
        odd_u64().prop_map(Change::Component),
        odd_u64().prop_map(Change::DataOffset),
        odd_u64().prop_map(Change::BitmapRegion),
        odd_u64().prop_map(Change::BitmapBytes),
        odd_u64().prop_map(Change::Events),
        odd_u64().prop_map(Change::Recovery),
        (0u32..8).prop_map(Change::Role),
        (1usize..8).prop_map(Change::Roles),
    ]
}

fn apply(sb: &mut Superblock, c: &Change) {
    match c.clone() {
        Change::Level(v) => sb.level = v,
        Change::Layout(v) => sb.layout = v,
        Change::LayoutName(v) => sb.layout_name = v,
        Change::Chunk(v) => sb.chunk_sectors = v,
        Change::Component(v) => sb.component_sectors = v,
        Change::DataOffset(v) => sb.data_offset = v,
        Change::BitmapRegion(v) => sb.bitmap_region = v,
        Change::BitmapBytes(v) => sb.bitmap_bytes = v,
        Change::Events(v) => sb.events = v,
        Change::Recovery(v) => sb.recovery_offset = v,
        Change::Role(v) => sb.role = v.min(sb.roles.len() as u32 - 1),
        Change::Roles(n) => {
            sb.roles.resize(n, sb.roles[0]);
            // decode refuses a role beyond the count (not what is tested).
            sb.role = sb.role.min(n as u32 - 1);
        }
    }
}

/// A closed 4-member volume of `level` (1 MiB written) whose superblocks
/// then get `changes`: each applies to member `m`, or to every member when
/// `m` is 3 or more.
fn damaged(
    level: &str,
    changes: &[(usize, Change)],
) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 4, 4 << 20);
    let mut opts = CreateOptions::new(VolumeLayout::parse(level).unwrap());
    opts.chunk_sectors = 128;
    let v = Volume::create(devs, &opts).unwrap();
    v.write_at(&common::pattern(1, 1 << 20), 0).unwrap();
    v.close().unwrap();
    drop(v);
    for (m, c) in changes {
        for (i, p) in paths.iter().enumerate() {
            if *m < 3 && *m != i {
                continue;
            }
            let mut bytes = std::fs::read(p).unwrap();
            let at = SB_OFFSET as usize;
            let mut sb = Superblock::decode(&bytes[at..at + SB_SIZE], "m").unwrap();
            apply(&mut sb, c);
            bytes[at..at + SB_SIZE].copy_from_slice(&sb.encode());
            std::fs::write(p, bytes).unwrap();
        }
    }
    (dir, paths)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(64), ..ProptestConfig::default() })]

    #[test]
    fn odd_superblocks_never_panic(
        level in prop_oneof![Just("raid1"), Just("raid5"), Just("raid6"), Just("raid10"), Just("raid0"), Just("linear")],
        changes in proptest::collection::vec((0usize..4, change()), 1..4),
    ) {
        let (_dir, paths) = damaged(level, &changes);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = Volume::examine(&common::reopen(&paths), None);
            if let Ok(v) = Volume::assemble(common::reopen(&paths), None) {
                let mut buf = vec![0u8; (v.size().min(8 << 20)) as usize];
                let _ = v.read_at(&mut buf, 0);
                let _ = v.scrub(false);
                let _ = v.close();
            }
        }));
        prop_assert!(r.is_ok(), "panicked for {level} with {changes:?}");
    }
}

/// Shrunk from the property above: a RAID5 whose superblocks all say the
/// bitmap is 0 bytes long. `assemble` started it and the first write (or
/// the resync) indexed past the bitmap and panicked; now `examine` and
/// `assemble` refuse it as damaged, naming the bitmap.
#[test]
fn a_bitmap_too_short_for_the_data_area_is_refused() {
    let (_dir, paths) = damaged("raid5", &[(3, Change::BitmapBytes(0))]);
    let e = Volume::examine(&common::reopen(&paths), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("bitmap of 0 bytes (0 bits) cannot cover"),
        "{e}"
    );
    let e = catch_unwind(AssertUnwindSafe(|| {
        Volume::assemble(common::reopen(&paths), None).map(|v| {
            let _ = v.write_at(&[1u8; 4096], 0);
        })
    }))
    .expect("assemble or the first write panicked")
    .unwrap_err();
    assert!(e.to_string().contains("cannot cover"), "{e}");
}

/// Shrunk from the property above: member 0's superblock says its event
/// count is `u64::MAX` (the volume's newest). `assemble` started the
/// volume and the next event (recording the missing fifth role failed)
/// overflowed and panicked; now `examine` and `assemble` refuse it as
/// damaged, naming the member.
#[test]
fn an_event_count_about_to_overflow_is_refused() {
    let (_dir, paths) = damaged(
        "raid6",
        &[(0, Change::Events(u64::MAX)), (3, Change::Roles(5))],
    );
    let want = format!(
        "member {}: event count {} is not plausible",
        paths[0].display(),
        u64::MAX
    );
    let e = Volume::examine(&common::reopen(&paths), None).unwrap_err();
    assert!(e.to_string().contains(&want), "{e}");
    let e = catch_unwind(AssertUnwindSafe(|| {
        Volume::assemble(common::reopen(&paths), None).map(drop)
    }))
    .expect("assemble panicked")
    .unwrap_err();
    assert!(e.to_string().contains(&want), "{e}");
}
