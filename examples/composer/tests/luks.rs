//! The LUKS command sequence against the real `cryptsetup` (Debian
//! `cryptsetup-bin`), on a file, as far as a host without device-mapper
//! allows: `luksFormat` with the passphrase on standard input, `isLuks`,
//! `luksDump`, and `open --test-passphrase` with the right and a wrong
//! passphrase. (`open`, `resize` and `close` need device-mapper; their
//! arguments are checked in the module's unit tests.)
//!
//! Without `cryptsetup` the test says so and passes, except under `CI=true`,
//! where it fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use composer::luks::{Luks, SystemCryptsetup};
use composer_core::{Composer, Inventory, MemStore};
use csi_types::types::CapacityRange;

/// Whether `cryptsetup` runs here; panics under `CI=true` when it does not.
fn have_cryptsetup() -> bool {
    if std::process::Command::new("cryptsetup")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but cryptsetup is missing (Debian cryptsetup-bin)"
    );
    eprintln!("SKIPPED: cryptsetup is missing (Debian cryptsetup-bin)");
    false
}

/// A StorageClass: name, parameters, bytes asked.
type Class = (&'static str, &'static [(&'static str, &'static str)], u64);

/// A `Luks` with a small argon2id memory cost: two shared cores, many tests.
fn luks() -> Luks<SystemCryptsetup> {
    let mut luks = Luks::new(SystemCryptsetup);
    luks.pbkdf_memory_kib = Some(32 * 1024);
    luks.iter_time_ms = Some(200);
    luks
}

/// The header accounting for real: for `encryptionFormat=luks` volumes of
/// several layouts and sizes, a file the size of the device the plan gives
/// the node (`usable_bytes`), formatted with the node's `luksFormat`: the
/// data segment starts at `LUKS2_HEADER_BYTES` and what follows it holds the
/// capacity the controller reported, which holds the request. Also after
/// a slice's expansion.
#[test]
fn the_planned_device_holds_the_luks_header_and_the_capacity() {
    if !have_cryptsetup() {
        return;
    }
    let inv = Inventory::from_toml(composer::demo::DEMO_INVENTORY).unwrap();
    let c = Composer::open(inv, Arc::new(MemStore::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let luks = luks();
    let check = |id: &str, want: u64| {
        let rec = c.get(id).unwrap().record;
        assert!(rec.capacity >= want, "{id}: {} < {want}", rec.capacity);
        let dev = dir.path().join(format!("{id}.img"));
        let f = std::fs::File::create(&dev).unwrap();
        f.set_len(rec.layout.usable_bytes).unwrap();
        drop(f);
        luks.format(&dev, b"secret").unwrap();
        let dump = luks.dump(&dev).unwrap();
        let offset: u64 = dump
            .lines()
            .find_map(|l| l.trim().strip_prefix("offset: "))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no data offset in {dump}"));
        assert_eq!(offset, composer_core::LUKS2_HEADER_BYTES, "{dump}");
        assert!(dump.contains("length: (whole device)"), "{dump}");
        let data = rec.layout.usable_bytes - offset;
        assert!(
            data >= rec.capacity,
            "{id}: {data} bytes after the header, capacity {}",
            rec.capacity
        );
    };
    let classes: [Class; 4] = [
        ("single", &[("type", "hdd")], 200 << 20),
        ("slice", &[("type", "slice")], 100 << 20),
        (
            "mirror",
            &[("type", "hdd"), ("redundancy", "true")],
            200 << 20,
        ),
        (
            "slice-mirror",
            &[("type", "slice"), ("redundancy", "true")],
            64 << 20,
        ),
    ];
    for (name, params, want) in classes {
        let mut p: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.insert("encrypt".into(), "true".into());
        p.insert("encryptionFormat".into(), "luks".into());
        let range = CapacityRange::new(Some(want), None).unwrap();
        let v = c.create(name, &p, range, false, true, None).unwrap();
        check(&v.record.id, want);
        if name == "slice" {
            let more = 176 << 20;
            c.expand(&v.record.id, CapacityRange::new(Some(more), None).unwrap())
                .unwrap();
            check(&v.record.id, more);
        }
    }
    // A single 256 MiB drive cannot hold 250 MiB and the header.
    let mut p: BTreeMap<String, String> = [("type", "hdd"), ("striping", "false")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let range = CapacityRange::new(Some(250 << 20), None).unwrap();
    p.insert("encrypt".into(), "true".into());
    p.insert("encryptionFormat".into(), "luks".into());
    let e = c.create("big", &p, range, false, true, None).unwrap_err();
    assert!(matches!(e, composer_core::Error::OutOfRange(_)), "{e}");
}

#[test]
fn luks_format_dump_and_key_check_on_a_file() {
    if !have_cryptsetup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("member.img");
    let f = std::fs::File::create(&dev).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    let luks = luks();
    let key = b"node-stage secret \n with a newline and \0 a NUL";
    assert!(!luks.is_luks(&dev).unwrap());
    luks.format(&dev, key).unwrap();
    assert!(luks.is_luks(&dev).unwrap());
    let dump = luks.dump(&dev).unwrap();
    assert!(dump.contains("LUKS header information"), "{dump}");
    assert!(dump.contains("Version:       \t2"), "{dump}");
    assert!(dump.contains("argon2id"), "{dump}");
    assert!(dump.contains("Memory:     32768"), "{dump}");
    // The whole key, bytes after the newline and NUL included, is the key.
    luks.test_key(&dev, key).unwrap();
    let e = luks.test_key(&dev, &key[..18]).unwrap_err();
    assert!(e.contains("open --test-passphrase failed"), "{e}");
    let e = luks.test_key(&dev, b"wrong").unwrap_err();
    assert!(e.contains("exit 2"), "{e}");
}
