//! The LUKS command sequence against the real `cryptsetup` (Debian
//! `cryptsetup-bin`), on a file, as far as a host without device-mapper
//! allows: `luksFormat` with the passphrase on standard input, `isLuks`,
//! `luksDump`, and `open --test-passphrase` with the right and a wrong
//! passphrase. (`open`, `resize` and `close` need device-mapper; their
//! arguments are checked in the module's unit tests.)
//!
//! Without `cryptsetup` the test says so and passes, except under `CI=true`,
//! where it fails.

use composer::luks::{Luks, SystemCryptsetup};

#[test]
fn luks_format_dump_and_key_check_on_a_file() {
    if std::process::Command::new("cryptsetup")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but cryptsetup is missing (Debian cryptsetup-bin)"
        );
        eprintln!("SKIPPED: cryptsetup is missing (Debian cryptsetup-bin)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("member.img");
    let f = std::fs::File::create(&dev).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    let mut luks = Luks::new(SystemCryptsetup);
    // A small argon2id memory cost: two shared cores, many tests.
    luks.pbkdf_memory_kib = Some(32 * 1024);
    luks.iter_time_ms = Some(200);
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
