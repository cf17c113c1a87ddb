//! Errors name a path, export or address once, quoted short, on one line:
//! a 10,000-character path or a name with a newline must not make the
//! message as long, or break it.

mod common;

use std::sync::Arc;

use raid_engine::nbd::NbdDevice;
use raid_engine::{BlockDevice, CacheMode, CreateOptions, FileDevice, Volume, VolumeLayout};

/// One line, short, and naming `what` (its quoted start) exactly once.
fn one_short_line(message: &str, start: &str) {
    assert!(
        !message.contains('\n'),
        "message breaks a line: {message:?}"
    );
    // A long path is shown by its head and its tail (some 220 characters,
    // `storage_units::quote_path`), and a message may name two.
    assert!(
        message.len() < 700,
        "message of {} bytes: {message}",
        message.len()
    );
    assert_eq!(
        message.matches(start).count(),
        1,
        "{start:?} not named once in {message:?}"
    );
}

#[test]
fn opening_a_very_long_path_names_it_once_short() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x".repeat(10_000));
    let e = FileDevice::open(&path, CacheMode::Buffered).unwrap_err();
    let start = format!("\"{}/xxxx", dir.path().display());
    one_short_line(&e.to_string(), &start);
}

/// A path longer than a message shows whole keeps its tail, the file
/// name, which tells one member from another (before, only its first 64
/// characters were shown).
#[test]
fn opening_a_long_path_shows_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("d/".repeat(150)).join("member-7.img");
    assert!(deep.as_os_str().len() > 256);
    let e = FileDevice::open(&deep, CacheMode::Buffered)
        .unwrap_err()
        .to_string();
    one_short_line(&e, "/d/d/member-7.img\"");
    one_short_line(&e, &format!("\"{}/d/d/", dir.path().display()));
}

#[test]
fn opening_a_path_with_a_newline_names_it_escaped_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a\nb");
    let e = FileDevice::open(&path, CacheMode::DirectIfSupported).unwrap_err();
    one_short_line(&e.to_string(), "a\\nb\"");
}

/// A port nothing listens on (bound, then let go).
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[test]
fn nbd_errors_name_an_export_with_a_newline_on_one_line() {
    let addr = closed_port();
    let e = NbdDevice::connect(&addr, "a\nb").unwrap_err();
    one_short_line(&e.to_string(), "\"nbd://");
    let e = NbdDevice::connect("no-such-host.invalid:10809", "a\nb").unwrap_err();
    one_short_line(&e.to_string(), "\"nbd://");
}

#[test]
fn nbd_errors_name_a_long_export_once_short() {
    let addr = closed_port();
    // Within NBD's limit (sent, refused by the peer) and beyond it.
    for len in [4000, 10_000] {
        let e = NbdDevice::connect(&addr, &"n".repeat(len)).unwrap_err();
        one_short_line(&e.to_string(), "\"nbd://");
    }
}

/// A member under another name (a path far longer than a file system
/// allows, or with a newline), as a device of any kind may describe itself.
#[derive(Debug)]
struct Named {
    inner: Arc<dyn BlockDevice>,
    name: String,
}

impl BlockDevice for Named {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The names a member's messages are tried with, and the start of each
/// as a message quotes it.
fn odd_names() -> [(String, &'static str); 2] {
    [
        (
            format!("odd-member-{}", "y".repeat(10_000)),
            "\"odd-member-yyy",
        ),
        (
            "odd-member\nsecond line".to_string(),
            "\"odd-member\\nsecond line\"",
        ),
    ]
}

fn named(path: &std::path::Path, size: u64, name: &str) -> Arc<dyn BlockDevice> {
    let file = FileDevice::create(path, size, CacheMode::Buffered).unwrap();
    Arc::new(Named {
        inner: Arc::new(file),
        name: name.to_string(),
    })
}

fn raid1(devs: Vec<Arc<dyn BlockDevice>>) -> Volume {
    let mut opts = CreateOptions::new(VolumeLayout::parse("raid1").unwrap());
    opts.data_offset_sectors = Some(64);
    Volume::create(devs, &opts).unwrap()
}

#[test]
fn a_refused_replacement_names_the_device_once_short() {
    for (name, start) in odd_names() {
        let dir = common::scratch();
        let (_, devs) = common::members(dir.path(), 2, 1 << 20);
        let vol = raid1(devs);
        let small = named(&dir.path().join("small"), 64 << 10, &name);
        let e = vol.check_replacement(0, &*small).unwrap_err();
        one_short_line(&e.to_string(), start);
    }
}

#[test]
fn a_refused_failure_names_the_member_once_short() {
    for (name, start) in odd_names() {
        let dir = common::scratch();
        let (_, mut devs) = common::members(dir.path(), 1, 1 << 20);
        devs.push(named(&dir.path().join("m1"), 1 << 20, &name));
        let vol = raid1(devs);
        vol.fail_member(0).unwrap();
        let e = vol.fail_member(1).unwrap_err();
        one_short_line(&e.to_string(), start);
    }
}

#[test]
fn a_replacement_in_use_is_named_once_on_one_line() {
    let dir = common::scratch();
    let (_, mut devs) = common::members(dir.path(), 1, 1 << 20);
    let odd = dir.path().join("odd-member\nsecond line");
    devs.push(Arc::new(
        FileDevice::create(&odd, 1 << 20, CacheMode::Buffered).unwrap(),
    ));
    let _holder = raid1(devs);
    let other_dir = common::scratch();
    let (_, others) = common::members(other_dir.path(), 2, 1 << 20);
    let vol = raid1(others);
    let again = FileDevice::open(&odd, CacheMode::Buffered).unwrap();
    let e = vol.check_replacement(0, &again).unwrap_err();
    one_short_line(&e.to_string(), "odd-member\\nsecond line\"");
}

#[test]
fn a_member_given_twice_to_assemble_is_named_once_short() {
    for (name, start) in odd_names() {
        let dir = common::scratch();
        let (paths, devs) = common::members(dir.path(), 2, 1 << 20);
        drop(raid1(devs));
        let twice = |_| -> Arc<dyn BlockDevice> {
            Arc::new(Named {
                inner: Arc::new(FileDevice::open(&paths[0], CacheMode::Buffered).unwrap()),
                name: name.clone(),
            })
        };
        let e = Volume::assemble((0..2).map(twice).collect(), None)
            .map(drop)
            .unwrap_err();
        one_short_line(&e.to_string(), start);
    }
}

/// One device given by two names (a link, say): the message names the one
/// placed as the member and each other name once (before, the first was
/// named twice: as the member and again in the list).
#[test]
fn a_member_given_by_two_names_names_each_once() {
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 2, 1 << 20);
    drop(raid1(devs));
    let by = |name: &str| -> Arc<dyn BlockDevice> {
        Arc::new(Named {
            inner: Arc::new(FileDevice::open(&paths[0], CacheMode::Buffered).unwrap()),
            name: name.to_string(),
        })
    };
    let e = Volume::assemble(
        vec![by("first-name"), by("other-name"), by("other-name")],
        None,
    )
    .map(drop)
    .unwrap_err()
    .to_string();
    one_short_line(&e, "first-name");
    one_short_line(&e, "other-name");
    assert!(e.contains("given 3 times"), "{e}");
}

/// A device whose writes past the metadata area fail with `error`: one
/// that names the device, as an NBD export's do
/// (`"nbd://HOST:PORT/EXPORT": ...`), or not.
#[derive(Debug)]
struct SelfNaming {
    inner: Arc<dyn BlockDevice>,
    name: &'static str,
    error: String,
}

impl SelfNaming {
    /// Where its writes start to fail: past the superblock and bitmap.
    const FAILS_FROM: u64 = 32 << 10;
}

impl BlockDevice for SelfNaming {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if offset >= Self::FAILS_FROM {
            return Err(std::io::Error::other(self.error.clone()));
        }
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        self.name.to_string()
    }
}

/// The error of a rebuild of role 0 onto `dev`, whose writes fail.
fn failed_rebuild(dev: SelfNaming) -> String {
    let dir = common::scratch();
    let (_, devs) = common::members(dir.path(), 2, 1 << 20);
    let vol = raid1(devs);
    vol.fail_member(0).unwrap();
    vol.replace(0, Arc::new(dev)).unwrap();
    vol.rebuild(0, &raid_engine::RebuildOptions::default())
        .map(drop)
        .expect_err("the replacement's writes fail")
        .to_string()
}

/// A member with a short name (`d`) whose error does not name it is named
/// all the same, though its name occurs in the error's words ("device").
#[test]
fn a_failed_rebuild_write_names_a_short_named_member() {
    let dir = common::scratch();
    let file = FileDevice::create(dir.path().join("new"), 1 << 20, CacheMode::Buffered).unwrap();
    let e = failed_rebuild(SelfNaming {
        inner: Arc::new(file),
        name: "d",
        error: "device gone".into(),
    });
    assert!(e.starts_with("member 0 (d): write: device gone"), "{e}");
}

/// A rebuild onto a member whose write fails names the member once when
/// the member's own error names it already. Before, the volume put the
/// name in front again: `member 0 ("nbd://…/x"): write: "nbd://…/x": …`.
#[test]
fn a_failed_rebuild_write_names_a_self_naming_member_once() {
    const NAME: &str = "nbd://peer.invalid:10809/x";
    let dir = common::scratch();
    let file = FileDevice::create(dir.path().join("new"), 1 << 20, CacheMode::Buffered).unwrap();
    let e = failed_rebuild(SelfNaming {
        inner: Arc::new(file),
        name: NAME,
        error: format!("{NAME:?}: send: Broken pipe"),
    });
    one_short_line(&e, NAME);
    assert!(e.contains("member 0"), "{e}");
    // An error that names the device further on is not prefixed again.
    let file = FileDevice::create(dir.path().join("new2"), 1 << 20, CacheMode::Buffered).unwrap();
    let e = failed_rebuild(SelfNaming {
        inner: Arc::new(file),
        name: "/dev/sdz",
        error: "range 0+4096 is beyond the end of /dev/sdz (0 bytes)".into(),
    });
    one_short_line(&e, "/dev/sdz");
    assert!(e.starts_with("member 0: write: range"), "{e}");
}

/// A fault list's unknown entry is quoted short (before, `{:?}` showed it
/// whole).
#[test]
fn an_unknown_fault_is_quoted_short() {
    let long = format!("no\nsuch-{}", "f".repeat(10_000));
    let e = raid_engine::fault::Fault::parse_list(&format!("stale-q,{long}"))
        .unwrap_err()
        .to_string();
    one_short_line(&e, "\"no\\nsuch-fff");
    assert!(e.len() < 200, "too long: {e}");
}

/// `describe` and the volume's status show a path that is not UTF-8
/// escaped, as messages do; before, `describe` replaced the byte by
/// U+FFFD, so two such paths could look the same.
#[test]
fn a_path_that_is_not_utf8_is_described_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    let shown = storage_units::quote_path(&odd);
    assert!(shown.ends_with("bad\\xFFname\""), "{shown}");
    let file = FileDevice::create(&odd, 4 << 20, CacheMode::Buffered).unwrap();
    assert_eq!(file.describe(), shown);
    assert_eq!(file.shown(), shown);
    let other = FileDevice::create(dir.path().join("m0"), 4 << 20, CacheMode::Buffered).unwrap();
    let v = raid1(vec![Arc::new(other), Arc::new(file)]);
    let status = v.status();
    assert_eq!(status[1].device.as_deref(), Some(shown.as_str()));
    v.close().unwrap();
}
