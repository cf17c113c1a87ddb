//! Members that are byte ranges of one drive file ([`SliceDevice`]), as a
//! composer gives its volumes slices of a drive: each volume claims only
//! its bytes. Volumes on disjoint slices of one file both open; volumes on
//! overlapping bytes, or a slice and a claim of the whole file, refuse each
//! other by name (the file, the range and the rule), in this process and
//! across processes; claims are released when the volume is dropped.
//! Before, a slice claimed nothing: two volumes opened on the same bytes
//! both wrote them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use raid_engine::{
    BlockDevice, CacheMode, ClaimHolder, CreateOptions, EngineError, FileDevice, SliceDevice,
    Volume, VolumeLayout,
};

const MIB: u64 = 1 << 20;
/// Each drive file: room for two 16 MiB slices.
const DRIVE: u64 = 32 * MIB;

fn raid1() -> CreateOptions {
    CreateOptions::new(VolumeLayout::parse("raid1").unwrap())
}

/// Two drive files of [`DRIVE`] bytes.
fn drives(dir: &Path) -> Vec<PathBuf> {
    (0..2)
        .map(|i| {
            let p = dir.join(format!("drive{i}.img"));
            drop(FileDevice::create(&p, DRIVE, CacheMode::DirectIfSupported).unwrap());
            p
        })
        .collect()
}

/// The bytes `offset..offset + len` of `path`, opened afresh (each member
/// its own open file, as the composer's node opens them).
fn slice(path: &Path, offset: u64, len: u64) -> Arc<dyn BlockDevice> {
    let file = Arc::new(FileDevice::open(path, CacheMode::DirectIfSupported).unwrap());
    Arc::new(SliceDevice::new(file, offset, len).unwrap())
}

/// A RAID1 over the same range of both drives.
fn slices(drives: &[PathBuf], offset: u64, len: u64) -> Vec<Arc<dyn BlockDevice>> {
    drives.iter().map(|d| slice(d, offset, len)).collect()
}

/// `r` must be refused as in use, with a message containing every one of
/// `want`.
fn assert_refused<T>(r: raid_engine::Result<T>, want: &[&str]) {
    match r {
        Err(e @ EngineError::InUse { .. }) => {
            let msg = e.to_string();
            for w in want {
                assert!(msg.contains(w), "{w:?} not in {msg}");
            }
        }
        Err(e) => panic!("refused, but not as in use: {e}"),
        Ok(_) => panic!("claimed bytes another holder has"),
    }
}

#[test]
fn volumes_on_disjoint_slices_of_one_file_both_open_and_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = drives(dir.path());
    let a = Volume::create(slices(&d, 0, 16 * MIB), &raid1()).unwrap();
    let b = Volume::create(slices(&d, 16 * MIB, 16 * MIB), &raid1()).unwrap();
    a.write_at(&[0xaa; 65536], 0).unwrap();
    b.write_at(&[0xbb; 65536], 0).unwrap();
    let end = a.size() - 65536;
    a.write_at(&[0xa1; 65536], end).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    let mut got = vec![0u8; 65536];
    a.read_at(&mut got, 0).unwrap();
    assert!(got.iter().all(|&x| x == 0xaa));
    b.read_at(&mut got, 0).unwrap();
    assert!(got.iter().all(|&x| x == 0xbb));
    a.close().unwrap();
    b.close().unwrap();
    drop((a, b));
    // Both assemble again from their slices.
    Volume::assemble(slices(&d, 0, 16 * MIB), None).unwrap();
    Volume::assemble(slices(&d, 16 * MIB, 16 * MIB), None).unwrap();
}

#[test]
fn a_volume_on_bytes_another_volume_holds_is_refused_until_that_one_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = drives(dir.path());
    let a = Volume::create(slices(&d, 0, 16 * MIB), &raid1()).unwrap();
    a.write_at(&[7; 4096], 0).unwrap();
    a.flush().unwrap();
    let before = std::fs::read(&d[0]).unwrap();
    let file = d[0].display().to_string();
    // The same slice again (a second volume assembled on it), and one that
    // overlaps it by a MiB.
    assert_refused(
        Volume::assemble(slices(&d, 0, 16 * MIB), None),
        &[
            &format!("{file} bytes 0..16777216 is in use by a volume in this process"),
            "one volume or export at a time",
        ],
    );
    assert_refused(
        Volume::create(slices(&d, 15 * MIB, 16 * MIB), &raid1()),
        &[
            &format!("{file} bytes 15728640..32505856"),
            "it holds bytes 0..16777216",
            "one volume or export at a time",
        ],
    );
    assert!(
        std::fs::read(&d[0]).unwrap() == before,
        "a refused call wrote the drive"
    );
    // Dropping the volume releases its slices.
    a.close().unwrap();
    drop(a);
    let again = Volume::create(slices(&d, 15 * MIB, 16 * MIB), &raid1()).unwrap();
    drop(again);
    // The volume at 15 MiB wrote its metadata at its own start, inside a's
    // data area but far from a's superblock: a assembles as it was.
    let a = Volume::assemble(slices(&d, 0, 16 * MIB), None).unwrap();
    let mut got = [0u8; 4096];
    a.read_at(&mut got, 0).unwrap();
    assert_eq!(got, [7; 4096]);
}

#[test]
fn a_whole_file_claim_and_a_slice_claim_on_one_file_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = drives(dir.path());
    let file = d[0].display().to_string();
    let whole: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(&d[0], CacheMode::DirectIfSupported).unwrap());
    // A slice held: the whole file is refused, naming the slice's range.
    let a = Volume::create(slices(&d, 16 * MIB, 16 * MIB), &raid1()).unwrap();
    let backup = ClaimHolder::new("a backup job");
    let e = whole.claim(&backup).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
    let msg = e.to_string();
    for w in [
        &format!("{file} is in use by a volume in this process"),
        "it holds bytes 16777216..33554432",
        "one volume or export at a time",
    ] {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
    drop(a);
    // The whole file held: any slice of it is refused.
    let held = whole.claim(&backup).unwrap();
    assert_refused(
        Volume::create(slices(&d, 0, MIB * 4), &raid1()),
        &[
            &format!("{file} bytes 0..4194304 is in use by a backup job in this process"),
            "it holds the whole file",
        ],
    );
    drop(held);
    Volume::create(slices(&d, 0, MIB * 4), &raid1()).unwrap();
}

#[test]
fn slices_of_one_volume_must_not_overlap_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = drives(dir.path());
    let devs = vec![slice(&d[0], 0, 16 * MIB), slice(&d[0], 8 * MIB, 16 * MIB)];
    assert_refused(
        Volume::create(devs, &raid1()),
        &["devices[1]", "the same one, for another member"],
    );
    // Refused before anything was written: the file is still all zeros.
    assert!(std::fs::read(&d[0]).unwrap().iter().all(|&x| x == 0));
}

#[test]
fn a_slice_must_lie_within_its_device_and_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = drives(dir.path());
    let file: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(&d[0], CacheMode::DirectIfSupported).unwrap());
    for (off, len, want) in [
        (0, 0, "a slice must not be empty"),
        (DRIVE - MIB, 2 * MIB, "is beyond the end of the device"),
        (u64::MAX, 2, "is beyond the end of the device"),
    ] {
        let e = SliceDevice::new(file.clone(), off, len).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(want), "{e}");
    }
    let s = SliceDevice::new(file, MIB, MIB).unwrap();
    assert_eq!(s.size(), MIB);
    assert_eq!(
        s.describe(),
        format!("{}[1048576..2097152]", d[0].display())
    );
    let mut b = [0u8; 2];
    assert!(s.read_at(&mut b, MIB - 1).is_err());
}

/// Environment variable that turns [`child_holding_a_slice`] into the
/// other process of the cross-process test: `path:offset:len`, or
/// `path:whole`.
const CHILD: &str = "RAID_ENGINE_TEST_SLICE_CHILD";

/// In the other process only: claim what [`CHILD`] says, print `held`,
/// and keep it until standard input closes.
#[test]
fn child_holding_a_slice() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let file = Arc::new(FileDevice::open(parts[0], CacheMode::DirectIfSupported).unwrap());
    let holder = ClaimHolder::new("the other process");
    let _claim = if parts[1] == "whole" {
        file.claim(&holder).unwrap()
    } else {
        let dev =
            SliceDevice::new(file, parts[1].parse().unwrap(), parts[2].parse().unwrap()).unwrap();
        dev.claim(&holder).unwrap()
    };
    println!("held");
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}

/// The other process, and its standard output (kept open: it prints its
/// test result when it ends).
struct Other(Child, BufReader<std::process::ChildStdout>);

/// Starts this test binary as the other process holding `spec`, once it
/// says it holds it.
fn other_process(spec: &str) -> Other {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holding_a_slice", "--nocapture"])
        .env(CHILD, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && line.trim() != "held" {
        line.clear();
    }
    assert_eq!(
        line.trim(),
        "held",
        "the other process did not take its claim"
    );
    Other(child, out)
}

/// Ends the other process: closing its standard input lets it return.
fn finish(Other(mut child, mut out): Other) {
    drop(child.stdin.take());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
}

#[test]
fn slices_held_by_another_process_are_refused_only_where_they_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let d = drives(dir.path());
    let file = d[0].display().to_string();
    let child = other_process(&format!("{file}:0:{}", 16 * MIB));
    // Overlapping bytes: refused, naming the range the other one holds.
    assert_refused(
        Volume::create(slices(&d, 8 * MIB, 16 * MIB), &raid1()),
        &[
            &format!("{file} bytes 8388608..25165824 is in use by another process"),
            "it holds bytes 0..16777216",
            "one volume or export at a time",
        ],
    );
    // The whole file: refused too.
    let whole = FileDevice::open(&d[0], CacheMode::DirectIfSupported).unwrap();
    let e = whole.claim(&ClaimHolder::new("a volume")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
    // Disjoint bytes: opened while the other process holds its slice.
    let b = Volume::create(slices(&d, 16 * MIB, 16 * MIB), &raid1()).unwrap();
    finish(child);
    // Released with the other process: the overlapping volume opens.
    drop(b);
    Volume::create(slices(&d, 8 * MIB, 16 * MIB), &raid1()).unwrap();

    // The whole file held by another process keeps every slice off.
    let child = other_process(&format!("{file}:whole"));
    assert_refused(
        Volume::create(slices(&d, 16 * MIB, 16 * MIB), &raid1()),
        &[
            &format!("{file} bytes 16777216..33554432 is in use by another process"),
            "it holds the whole file",
        ],
    );
    finish(child);
    Volume::create(slices(&d, 16 * MIB, 16 * MIB), &raid1()).unwrap();
}
