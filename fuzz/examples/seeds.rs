//! Writes the seed corpus under `fuzz/corpus/<target>/` (run from `fuzz/`:
//! `cargo +nightly run --example seeds`). The files are committed; rerun this after a format
//! change and commit the result.
//!
//! - `slice_alloc_journal`: journals written by `Journaled` (devices added, removed, resized,
//!   labelled, cordoned; slices allocated, grown, shrunk and freed; reservations made, renewed,
//!   committed, released and expired), an empty journal, and a JSON snapshot followed by the
//!   journal that continues it;
//! - `csi_types_decode`: valid requests from the crate's `Arbitrary` strategies, each encoded
//!   with prost behind the byte that selects its message;
//! - `placement_inventory`: the `[inventory]` table of every `crates/placement/testdata` case;
//! - `placement_request`: `crates/placement/examples/requests.toml`, and the requests of every
//!   `crates/placement/testdata` file as one request file each.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use csi_types::proto;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost::Message;
use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GIB, Journaled, decode_journal,
    journal::JOURNAL_HEADER, recover,
};

include!("../csi_requests.rs");

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    journal_seeds(&root.join("corpus/slice_alloc_journal"))?;
    csi_seeds(&root.join("corpus/csi_types_decode"))?;
    inventory_seeds(
        &root.join("../crates/placement/testdata"),
        &root.join("corpus/placement_inventory"),
    )?;
    request_seeds(
        &root.join("../crates/placement"),
        &root.join("corpus/placement_request"),
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn journal_seeds(dir: &Path) -> Result<()> {
    write(dir, "header_only", &JOURNAL_HEADER)?;

    let alloc = Allocator::new(AllocatorConfig::default())?;
    let mut j = Journaled::create(alloc, Vec::new(), 0, u64::MAX)?;
    j.add_device(DeviceSpec::new(DeviceId::new(1), 64 * GIB)?)?;
    j.add_device(DeviceSpec::from_parts(
        DeviceId::new(2),
        16 << 20,
        1 << 20,
        2 << 20,
    )?)?;
    let any = Constraints::default();
    let a = j.allocate(4 * GIB, &any)?;
    j.grow(a.id, 12 * GIB)?;
    let b = j.allocate(2 * GIB, &any)?;
    let c = j.allocate_at(DeviceId::new(2), 4 << 20, 3 << 20)?;
    j.shrink(b.id, GIB)?;
    j.free(c.id)?;
    j.add_device(DeviceSpec::new(DeviceId::new(3), 8 * GIB)?)?;
    j.remove_device(DeviceId::new(3))?;
    // Reservations (renewed, committed, released, two expiring in one atomic frame), a capacity
    // range, labels, a cordon, a device resize and a headroom change.
    let r = j.reserve(GIB, &any, 0, 10)?;
    j.renew(r.slice.id, 5, 10)?;
    j.commit(r.slice.id, 6)?;
    let r = j.reserve_range(GIB, 2 * GIB, &any, 6, 10)?;
    j.release(r.slice.id)?;
    j.reserve(GIB, &any, 6, 1)?;
    j.reserve(GIB, &any, 6, 1)?;
    j.expire(8)?;
    j.allocate_range(GIB, 3 * GIB + GIB / 2, &any)?;
    j.set_label(DeviceId::new(1), "topology.example.com/zone", "a")?;
    j.remove_label(DeviceId::new(1), "topology.example.com/zone")?;
    j.cordon(DeviceId::new(2))?;
    j.uncordon(DeviceId::new(2))?;
    j.resize_device(DeviceId::new(1), 128 * GIB)?;
    j.set_reserved(DeviceId::new(1), 2 * GIB)?;
    let journal = j.writer().clone();
    decode_journal(&journal)?;
    write(dir, "journal", &journal)?;
    // A torn tail: the last frame cut in half.
    write(dir, "torn_tail", &journal[..journal.len() - 7])?;

    // Condense, then keep going in a new journal: snapshot JSON, then that journal.
    let condensed = j.snapshot();
    j.switch_journal(Vec::new())?;
    j.free(a.id)?;
    let d = j.allocate(8 * GIB, &any)?;
    j.grow(d.id, 10 * GIB)?;
    // The seed must take the target's snapshot path all the way through recovery.
    let recovered = recover(Some(&condensed), j.writer(), AllocatorConfig::default())?;
    assert_eq!(
        recovered.applied, 3,
        "free, allocate and grow after the snapshot"
    );
    let mut input = serde_json::to_vec(&condensed)?;
    input.extend_from_slice(j.writer());
    write(dir, "snapshot_then_journal", &input)?;
    Ok(())
}

fn csi_seeds(dir: &Path) -> Result<()> {
    let mut runner = TestRunner::deterministic();
    let mut index = 0u8;
    macro_rules! seeds {
        ($($name:ident),* $(,)?) => {$(
            for n in 0..2 {
                let typed = any::<requests::$name>()
                    .new_tree(&mut runner)
                    .map_err(|e| e.to_string())?
                    .current();
                // The strategies keep sizes within int64, so every one converts.
                let wire: proto::$name = typed.clone().try_into().expect("sizes within int64");
                // A seed that validation refuses would leave the round trip unexercised.
                assert_eq!(requests::$name::try_from(wire.clone()), Ok(typed));
                let mut bytes = vec![index];
                bytes.extend_from_slice(&wire.encode_to_vec());
                write(dir, &format!("{index:02}_{}_{n}", stringify!($name)), &bytes)?;
            }
            index += 1;
        )*};
    }
    for_each_request!(seeds);
    Ok(())
}

fn inventory_seeds(testdata: &Path, dir: &Path) -> Result<()> {
    let mut files: Vec<_> = fs::read_dir(testdata)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let file: toml::Table = toml::from_str(&fs::read_to_string(path)?)?;
        let Some(toml::Value::Table(inventory)) = file.get("inventory") else {
            continue;
        };
        let text = toml::to_string(inventory)?;
        placement::Inventory::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("inventory");
        write(dir, stem, text.as_bytes())?;
    }
    Ok(())
}

fn request_seeds(crate_dir: &Path, dir: &Path) -> Result<()> {
    let example = fs::read_to_string(crate_dir.join("examples/requests.toml"))?;
    placement::RequestFile::from_toml(&example).map_err(|e| format!("requests.toml: {e}"))?;
    write(dir, "requests", example.as_bytes())?;
    let mut files: Vec<_> = fs::read_dir(crate_dir.join("testdata"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let file: toml::Table = toml::from_str(&fs::read_to_string(path)?)?;
        let Some(toml::Value::Array(cases)) = file.get("case") else {
            continue;
        };
        let requests: Vec<toml::Value> = cases
            .iter()
            .filter_map(|c| c.get("request").cloned())
            .collect();
        if requests.is_empty() {
            continue;
        }
        let mut table = toml::Table::new();
        table.insert("request".into(), toml::Value::Array(requests));
        let text = toml::to_string(&table)?;
        placement::RequestFile::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("requests");
        write(dir, stem, text.as_bytes())?;
    }
    Ok(())
}
