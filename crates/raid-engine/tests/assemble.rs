//! Assembly refuses exactly the member sets that lose data, as `raid`'s
//! failure analysis decides them, whether the members are missing or were
//! failed while the volume ran; a refused assembly writes nothing; reads,
//! writes, health and scrub of a volume that lost data at run time say so;
//! and a member that was missing when the volume started does not come
//! back as if in sync.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use raid::FailureModel;
use raid_engine::{
    BlockDevice, CreateOptions, EngineError, Health, MemberState, RebuildOptions, RoleCondition,
    Volume, VolumeLayout,
};

const MEMBER_BYTES: u64 = 2 << 20;
/// 32 KiB before the data: superblock and a small bitmap.
const DATA_OFFSET_SECTORS: u64 = 64;

/// Every redundant md layout the engine runs, at small member counts, and
/// RAID0 (no redundancy, also decided by the analysis).
const CASES: &[(&str, usize)] = &[
    ("raid1", 2),
    ("raid1", 3),
    ("raid10:n2", 3),
    ("raid10:n2", 4),
    ("raid10:n2", 5),
    ("raid10:f2", 4),
    ("raid10:o2", 3),
    ("raid10:n3", 4),
    ("raid4", 3),
    ("raid5:left-symmetric", 4),
    ("raid6:left-symmetric", 5),
    ("raid0", 3),
];

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
    data: Vec<u8>,
    /// Each member's bytes before the data area (superblock and bitmap),
    /// as the clean volume left them.
    meta: Vec<Vec<u8>>,
    model: FailureModel,
    layout: String,
}

impl Fixture {
    /// A volume of `spec` over `n` members, filled with a pattern and
    /// closed cleanly.
    fn new(spec: &str, n: usize) -> Fixture {
        let dir = common::scratch();
        let (paths, devs) = common::members(dir.path(), n, MEMBER_BYTES);
        let mut opts = CreateOptions::new(VolumeLayout::parse(spec).unwrap());
        opts.chunk_sectors = 16;
        opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
        let vol = Volume::create(devs, &opts).unwrap();
        let data = common::pattern(n as u64 * 7 + spec.len() as u64, vol.size() as usize);
        vol.write_at(&data, 0).unwrap();
        vol.close().unwrap();
        let model = FailureModel::new(vol.geometry().unwrap());
        let layout = vol.geometry().unwrap().layout().to_string();
        drop(vol);
        let mut f = Fixture {
            _dir: dir,
            paths,
            data,
            meta: Vec::new(),
            model,
            layout,
        };
        f.meta = (0..n).map(|r| f.read_meta(r)).collect();
        f
    }

    fn read_meta(&self, r: usize) -> Vec<u8> {
        let mut b = std::fs::read(&self.paths[r]).unwrap();
        b.truncate((DATA_OFFSET_SECTORS * 512) as usize);
        b
    }

    /// Put every member's superblock and bitmap back as the clean volume
    /// left them (the data areas still hold the pattern: the cases only
    /// write the pattern's own bytes).
    fn restore_meta(&self) {
        use std::os::unix::fs::FileExt;
        for (p, m) in self.paths.iter().zip(&self.meta) {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(m, 0).unwrap();
        }
    }

    fn open(&self, roles: &[usize]) -> Vec<Arc<dyn BlockDevice>> {
        let paths: Vec<PathBuf> = roles.iter().map(|&r| self.paths[r].clone()).collect();
        common::reopen(&paths)
    }

    /// Check a refusal: `Unavailable`, naming the layout and every role
    /// in `set`, and the given members' metadata unchanged.
    fn check_refused(&self, res: Result<Volume, EngineError>, set: &[usize], given: &[usize]) {
        let what = format!("{} over {}: without {set:?}", self.layout, self.paths.len());
        let msg = match res {
            Err(EngineError::Unavailable(m)) => m,
            Err(e) => panic!("{what}: refused with the wrong error: {e}"),
            Ok(_) => panic!("{what}: started although the analysis says data is lost"),
        };
        assert!(msg.contains(&self.layout), "{what}: {msg}");
        for r in set {
            assert!(msg.contains(&format!("role {r} (")), "{what}: {msg}");
        }
        assert!(msg.contains("no copy"), "{what}: {msg}");
        for &r in given {
            assert!(
                self.read_meta(r) == self.meta[r],
                "{what}: the refused assembly changed member {r}'s superblock or bitmap"
            );
        }
    }
}

/// Every non-empty proper subset of `0..n`, as sorted role lists.
fn subsets(n: usize) -> impl Iterator<Item = Vec<usize>> {
    (1..(1u32 << n) - 1).map(move |bits| (0..n).filter(|r| bits & (1 << r) != 0).collect())
}

/// Missing members: assembly starts the volume exactly when the analysis
/// says the missing set loses nothing, and then serves every byte.
#[test]
fn refuses_missing_members_exactly_when_data_is_lost() {
    let mut refused = 0;
    for &(spec, n) in CASES {
        let f = Fixture::new(spec, n);
        let mut accepted = 0;
        for set in subsets(n) {
            let given: Vec<usize> = (0..n).filter(|r| !set.contains(r)).collect();
            let loses = f.model.loses_data(&set).unwrap();
            let x = Volume::examine(&f.open(&given), None).unwrap();
            assert_eq!(x.can_start(), !loses, "{spec}/{n} without {set:?}");
            assert_eq!(x.health.unavailable(), &set[..], "{spec}/{n}");
            for r in &set {
                assert_eq!(x.roles[*r].condition, RoleCondition::Missing);
            }
            let res = Volume::assemble(f.open(&given), None);
            if loses {
                refused += 1;
                f.check_refused(res, &set, &given);
                continue;
            }
            let vol = res.unwrap_or_else(|e| panic!("{spec}/{n} without {set:?}: {e}"));
            assert_eq!(
                vol.health(),
                Health::Degraded {
                    unavailable: set.clone()
                },
                "{spec}/{n}"
            );
            let mut back = vec![0u8; f.data.len()];
            vol.read_at(&mut back, 0).unwrap();
            assert!(back == f.data, "{spec}/{n} without {set:?}: wrong data");
            drop(vol);
            f.restore_meta();
            accepted += 1;
        }
        // Every redundant layout survives some member's loss.
        assert!(
            accepted > 0 || spec == "raid0",
            "{spec}/{n}: every set refused"
        );
    }
    assert!(refused > 0, "no set was refused");
}

/// Members failed one after another while the volume runs: health, reads,
/// writes and scrub say when data is lost; the superblocks record the
/// failures, and the next assembly refuses exactly the sets that lose
/// data, writing nothing.
#[test]
fn failures_at_run_time_are_reported_and_remembered() {
    for &(spec, n) in CASES {
        let f = Fixture::new(spec, n);
        for set in subsets(n) {
            let what = format!("{spec}/{n} failing {set:?}");
            let loses = f.model.loses_data(&set).unwrap();
            let vol = Volume::assemble(f.open(&(0..n).collect::<Vec<_>>()), None).unwrap();
            assert_eq!(vol.health(), Health::Whole, "{what}");
            // Forced: the data-losing sets are the point here, and
            // `fail_member` refuses them (tests/fail_member.rs).
            for &r in &set {
                vol.fail_member_forced(r).unwrap();
            }
            let health = vol.health();
            assert_eq!(health.loses_data(), loses, "{what}: {health:?}");
            assert_eq!(health.unavailable(), &set[..], "{what}");
            let mut back = vec![0u8; f.data.len()];
            let read = vol.read_at(&mut back, 0);
            let write = vol.write_at(&f.data, 0);
            let report = vol.scrub(false).unwrap();
            assert_eq!(
                report.checked_bytes + report.unverifiable_bytes + report.unreadable_bytes,
                vol.size(),
                "{what}: {report:?}"
            );
            assert!(report.mismatches.is_empty(), "{what}: {report:?}");
            if loses {
                let Health::DataLost { reason, .. } = &health else {
                    unreachable!()
                };
                for r in &set {
                    assert!(reason.contains(&format!("role {r} (")), "{what}: {reason}");
                }
                assert!(
                    matches!(read, Err(EngineError::Unavailable(_))),
                    "{what}: read {read:?}"
                );
                assert!(
                    matches!(write, Err(EngineError::Unavailable(_))),
                    "{what}: write {write:?}"
                );
                assert!(report.unreadable_bytes > 0, "{what}: {report:?}");
            } else {
                read.unwrap_or_else(|e| panic!("{what}: read: {e}"));
                assert!(back == f.data, "{what}: wrong data");
                write.unwrap_or_else(|e| panic!("{what}: write: {e}"));
                assert_eq!(report.unreadable_bytes, 0, "{what}: {report:?}");
            }
            vol.close().unwrap();
            drop(vol);
            let all: Vec<usize> = (0..n).collect();
            let x = Volume::examine(&f.open(&all), None).unwrap();
            for &r in &set {
                assert_eq!(x.roles[r].condition, RoleCondition::Faulty, "{what}");
            }
            let res = Volume::assemble(f.open(&all), None);
            if loses {
                assert!(!x.can_start(), "{what}");
                f.check_refused_recorded(res, &set);
            } else {
                let vol = res.unwrap_or_else(|e| panic!("{what}: reassemble: {e}"));
                assert_eq!(vol.health().unavailable(), &set[..], "{what}");
            }
            f.restore_meta();
        }
    }
}

impl Fixture {
    /// A refusal of members recorded failed: as [`Fixture::check_refused`]
    /// but against the metadata the closed volume wrote, and naming the
    /// devices.
    fn check_refused_recorded(&self, res: Result<Volume, EngineError>, set: &[usize]) {
        let before: Vec<Vec<u8>> = (0..self.paths.len()).map(|r| self.read_meta(r)).collect();
        let what = format!("{} over {}: {set:?} failed", self.layout, self.paths.len());
        let msg = match res {
            Err(EngineError::Unavailable(m)) => m,
            Err(e) => panic!("{what}: refused with the wrong error: {e}"),
            Ok(_) => panic!("{what}: started although the analysis says data is lost"),
        };
        assert!(msg.contains(&self.layout), "{what}: {msg}");
        for &r in set {
            let dev = self.paths[r].display().to_string();
            assert!(
                msg.contains(&format!("role {r} ({dev}, recorded failed)")),
                "{what}: {msg}"
            );
        }
        for (r, b) in before.iter().enumerate() {
            assert!(
                self.read_meta(r) == *b,
                "{what}: the refused assembly changed member {r}'s metadata"
            );
        }
    }
}

/// The message says which data has no copy, in words an operator can
/// check against the layout.
#[test]
fn the_refusal_says_which_data_has_no_copy() {
    let f = Fixture::new("raid10:n2", 4);
    let err = Volume::assemble(f.open(&[0, 1]), None).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("raid10 n2"), "{msg}");
    assert!(
        msg.contains("role 2 (missing) and role 3 (missing) are unavailable"),
        "{msg}"
    );
    assert!(
        msg.contains("roles 2 and 3 hold both copies of the odd chunks"),
        "{msg}"
    );
    // Losing roles 0 and 2 loses nothing in this layout.
    let vol = Volume::assemble(f.open(&[1, 3]), None).unwrap();
    assert!(!vol.health().loses_data());
    drop(vol);
    f.restore_meta();

    let f = Fixture::new("raid5:left-symmetric", 4);
    let msg = Volume::assemble(f.open(&[0, 3]), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("every stripe has data with no copy left"),
        "{msg}"
    );

    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, MEMBER_BYTES);
    let mut opts = CreateOptions::new(VolumeLayout::Linear);
    opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
    let vol = Volume::create(devs, &opts).unwrap();
    vol.close().unwrap();
    let half = vol.size() / 2;
    drop(vol);
    let msg = Volume::assemble(common::reopen(&paths[..1]), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(&format!("role 1 holds volume bytes {half}..")),
        "{msg}"
    );
}

/// A member missing when the volume started misses the writes made
/// without it: when it comes back it stays failed (it is not read as if in
/// sync) until a re-add copies what the bitmap marks.
#[test]
fn a_member_missing_at_start_does_not_return_as_in_sync() {
    for (spec, n, gone) in [
        ("raid1", 2, 0),
        ("raid10:n2", 4, 2),
        ("raid5:left-symmetric", 3, 0),
    ] {
        let f = Fixture::new(spec, n);
        let given: Vec<usize> = (0..n).filter(|&r| r != gone).collect();
        let vol = Volume::assemble(f.open(&given), None).unwrap();
        let new = common::pattern(99, f.data.len());
        vol.write_at(&new, 0).unwrap();
        vol.close().unwrap();
        drop(vol);

        let all: Vec<usize> = (0..n).collect();
        let vol = Volume::assemble(f.open(&all), None).unwrap();
        assert_eq!(vol.status()[gone].state, MemberState::Failed, "{spec}");
        let mut back = vec![0u8; new.len()];
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == new, "{spec}: stale data read from role {gone}");
        vol.readd(gone, None, &RebuildOptions::default()).unwrap();
        assert_eq!(vol.health(), Health::Whole, "{spec}");
        let report = vol.scrub(false).unwrap();
        assert!(
            report.mismatches.is_empty() && report.is_complete(),
            "{spec}: {report:?}"
        );
        vol.read_at(&mut back, 0).unwrap();
        assert!(back == new, "{spec}: wrong data after the re-add");
    }
}

/// A member cut short after the volume was written (a truncated file) is
/// refused by `assemble` and `examine`, naming it and the size its role
/// needs, instead of starting and failing the first I/O past its end; the
/// volume starts without it and reads every byte.
#[test]
fn a_truncated_member_is_refused_naming_it() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 4, MEMBER_BYTES);
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid5").unwrap());
    opts.chunk_sectors = 16;
    opts.data_offset_sectors = Some(DATA_OFFSET_SECTORS);
    let vol = Volume::create(devs, &opts).unwrap();
    let data = common::pattern(31, vol.size() as usize);
    vol.write_at(&data, 0).unwrap();
    vol.close().unwrap();
    drop(vol);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[2])
        .unwrap()
        .set_len(MEMBER_BYTES / 2)
        .unwrap();

    let devs = common::reopen(&paths);
    let expect = format!(
        "has {} bytes, but role 2 needs {MEMBER_BYTES} (data offset of {DATA_OFFSET_SECTORS} sectors",
        MEMBER_BYTES / 2
    );
    for e in [
        Volume::examine(&devs, None).unwrap_err(),
        Volume::assemble(devs.clone(), None).unwrap_err(),
    ] {
        assert!(
            matches!(&e, EngineError::Metadata { member, detail }
                if *member == paths[2].display().to_string() && detail.contains(&expect)),
            "{e}"
        );
    }
    let without: Vec<Arc<dyn BlockDevice>> =
        vec![devs[0].clone(), devs[1].clone(), devs[3].clone()];
    let vol = Volume::assemble(without, None).unwrap();
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 0).unwrap();
    assert!(back == data);
}
