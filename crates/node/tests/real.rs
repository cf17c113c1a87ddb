//! The operations for real: loop devices, mkfs, mounts, bind mounts, resize, as root.
//!
//! A missing tool is installed from its Debian package when the tests run as root on a host with
//! `apt-get`, so that `cargo test` on a fresh machine runs them. Without root, loop devices or the
//! tools, each test says why and returns; with `CI=true` it fails instead, so that CI never passes
//! without having run them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_node::{Error, FsType, LoopDevice, MountOptions};

/// Why these tests cannot run here, if they cannot; panics under CI.
fn unavailable(tools: &[&str]) -> Option<String> {
    let why = if !csi_node::is_root() {
        Some("not root".to_string())
    } else if let Err(e) = LoopDevice::check_available() {
        Some(e.to_string())
    } else {
        tools
            .iter()
            .find(|t| !(installed(t) || install(t) && installed(t)))
            .map(|t| format!("`{t}` is not installed"))
    };
    if let Some(why) = &why {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the node tests: {why}"
        );
        eprintln!("skipped: {why}");
    }
    why
}

fn installed(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian package that provides `tool` (as root, with `apt-get`); whether it worked.
fn install(tool: &str) -> bool {
    let package = match tool {
        "mkfs.xfs" | "xfs_growfs" => "xfsprogs",
        "mkfs.ext4" | "e2fsck" | "resize2fs" | "debugfs" => "e2fsprogs",
        "mkfs.btrfs" => "btrfs-progs",
        "losetup" => "mount",
        _ => "util-linux",
    };
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprintln!("installing Debian package {package} for `{tool}`");
    apt(&["install", "-y", "-qq", package])
        || (apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", package]))
}

/// A temporary directory whose mounts and loop devices are released when it is dropped.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
    fn image(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        csi_node::release_under(self.0.path());
    }
}

/// Whether this process may grow a mounted ext4 (the kernel asks for `CAP_SYS_RESOURCE`, which
/// some sandboxes drop even for root).
fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << 24) != 0
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn lifecycle(fs_type: FsType, size: u64) {
    let s = Scratch::new();
    let image = s.image("disk.img", size);
    let dev = LoopDevice::attach(&image, false).unwrap();
    assert_eq!(
        dev.backing_file().unwrap(),
        fs::canonicalize(&image).unwrap()
    );
    assert_eq!(LoopDevice::backed_by(&image), vec![dev.clone()]);
    assert_eq!(csi_node::probe_filesystem(dev.path()).unwrap(), None);

    // Stage: formatted on first use, mounted.
    let staging = s.dir("staging");
    let opts = MountOptions::parse(["noatime"]).unwrap();
    csi_node::format_and_mount(dev.path(), &staging, fs_type, &opts).unwrap();
    assert!(csi_node::is_mount_point(&staging).unwrap());
    let entry = csi_node::mount_table()
        .unwrap()
        .into_iter()
        .find(|m| m.mount_point == fs::canonicalize(&staging).unwrap())
        .unwrap();
    assert_eq!(entry.fs_type, fs_type.as_str());
    assert_eq!(entry.source, dev.path().as_os_str());
    write_file(&staging.join("hello"), b"kept").unwrap();
    let before = csi_node::filesystem_stats(&staging).unwrap();
    assert!(
        before.bytes_total > size / 2 && before.bytes_total <= size,
        "{before:?}"
    );
    assert!(before.bytes_available <= before.bytes_total - before.bytes_used);
    assert!(before.inodes_used >= 1 && before.inodes_total > before.inodes_used);

    // Publish read-only: reads work, writes fail, the staging mount stays writable.
    let target = s.dir("target");
    csi_node::bind_mount(
        &staging,
        &target,
        &MountOptions::parse(["nosuid"]).unwrap(),
        true,
    )
    .unwrap();
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");
    let err = write_file(&target.join("nope"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
    write_file(&staging.join("still-writable"), b"y").unwrap();

    // Unpublish and unstage are idempotent.
    csi_node::unmount_all(&target).unwrap();
    csi_node::unmount_all(&target).unwrap();
    assert!(!csi_node::is_mount_point(&target).unwrap());
    csi_node::unmount_all(&staging).unwrap();

    // Staged again: nothing is formatted over the data.
    csi_node::format_and_mount(dev.path(), &staging, fs_type, &opts).unwrap();
    assert_eq!(fs::read(staging.join("hello")).unwrap(), b"kept");

    // Expand: the file grows, the device sees it, the filesystem grows (online where the kernel
    // lets this process, else offline for ext4).
    fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(size * 2)
        .unwrap();
    dev.refresh().unwrap();
    assert_eq!(csi_node::block_device_size(dev.path()).unwrap(), size * 2);
    let online = fs_type == FsType::Xfs || has_cap_sys_resource();
    if !online {
        eprintln!(
            "ext4 grows offline here: this process lacks CAP_SYS_RESOURCE for an online grow"
        );
        csi_node::unmount_all(&staging).unwrap();
    }
    csi_node::resize_filesystem(dev.path()).unwrap();
    if !online {
        csi_node::format_and_mount(dev.path(), &staging, fs_type, &opts).unwrap();
    }
    let after = csi_node::filesystem_stats(&staging).unwrap();
    assert!(
        after.bytes_total > before.bytes_total + size / 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(fs::read(staging.join("hello")).unwrap(), b"kept");
    // Growing a filesystem that fills its device already changes nothing.
    csi_node::resize_filesystem(dev.path()).unwrap();
    assert_eq!(
        csi_node::filesystem_stats(&staging).unwrap().bytes_total,
        after.bytes_total
    );
    if fs_type == FsType::Xfs {
        csi_node::unmount_all(&staging).unwrap();
        let err = csi_node::resize_filesystem(dev.path()).unwrap_err();
        assert!(matches!(err, Error::NotMounted { .. }), "{err}");
    }

    csi_node::unmount_all(&staging).unwrap();
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
    assert!(LoopDevice::backed_by(&image).is_empty());
}

#[test]
fn ext4_stage_publish_expand_unstage() {
    if unavailable(&["blkid", "mkfs.ext4", "e2fsck", "resize2fs", "losetup"]).is_none() {
        lifecycle(FsType::Ext4, 64 << 20);
    }
}

#[test]
fn xfs_stage_publish_expand_unstage() {
    // mkfs.xfs refuses filesystems under 300 MB.
    if unavailable(&["blkid", "mkfs.xfs", "xfs_growfs", "losetup"]).is_none() {
        lifecycle(FsType::Xfs, 320 << 20);
    }
}

#[test]
fn another_filesystem_is_never_formatted_over() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 32 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    csi_node::mkfs(dev.path(), FsType::Ext4).unwrap();
    let target = s.dir("t");
    let err =
        csi_node::format_and_mount(dev.path(), &target, FsType::Xfs, &MountOptions::default())
            .unwrap_err();
    assert!(
        matches!(&err, Error::FilesystemMismatch { found, .. } if found == "ext4"),
        "{err}"
    );
    assert!(!csi_node::is_mount_point(&target).unwrap());
    assert_eq!(
        csi_node::probe_filesystem(dev.path()).unwrap().as_deref(),
        Some("ext4")
    );
    let code = csi_types::CsiError::from(err).code();
    assert_eq!(code, csi_types::Code::FailedPrecondition);
}

#[test]
fn a_blank_device_is_not_mounted_read_only() {
    if unavailable(&["blkid", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 16 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let target = s.dir("t");
    let ro = MountOptions::default().read_only();
    let err = csi_node::format_and_mount(dev.path(), &target, FsType::Ext4, &ro).unwrap_err();
    assert!(matches!(err, Error::Unformatted { .. }), "{err}");
    assert_eq!(
        csi_node::probe_filesystem(dev.path()).unwrap(),
        None,
        "nothing was written"
    );
}

#[test]
fn bind_mount_refuses_filesystem_options_before_mounting() {
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let (src, target) = (s.dir("src"), s.dir("target"));
    let opts = MountOptions::parse(["noatime", "discard"]).unwrap();
    let err = csi_node::bind_mount(&src, &target, &opts, false).unwrap_err();
    assert!(
        matches!(&err, Error::BadMountOption { option, .. } if option == "discard"),
        "{err}"
    );
    assert!(!csi_node::is_mount_point(&target).unwrap());
    let status = csi_types::CsiError::from(err);
    assert_eq!(status.code(), csi_types::Code::InvalidArgument);
    assert!(
        status
            .to_string()
            .contains("volume_capability.mount.mount_flags"),
        "{status}"
    );
}

#[test]
fn missing_paths_are_not_found() {
    let s = Scratch::new();
    let missing = s.path("missing");
    let err = csi_node::probe_filesystem(&missing).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(
        csi_types::CsiError::from(err).code(),
        csi_types::Code::NotFound
    );
    assert!(!csi_node::is_mount_point(&missing).unwrap());
    assert!(matches!(
        csi_node::filesystem_stats(&missing),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        LoopDevice::attach(&missing, false),
        Err(Error::NotFound { .. })
    ));
    csi_node::unmount_all(&missing).unwrap();
}

#[test]
fn release_under_leaves_nothing_mounted_or_attached() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 32 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let staging = s.dir("staging");
    csi_node::format_and_mount(dev.path(), &staging, FsType::Ext4, &MountOptions::default())
        .unwrap();
    let target = s.dir("target");
    csi_node::bind_mount(&staging, &target, &MountOptions::default(), false).unwrap();
    assert_eq!(csi_node::mounts_under(s.0.path()).unwrap().len(), 2);
    csi_node::release_under(s.0.path());
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
    // The loop device is detached once its last user (the lazily unmounted filesystem) is gone.
    wait_detached(&image, &dev);
}

/// Waits until no loop device is backed by `image`: the kernel defers a detach while anything
/// (a lazily unmounted filesystem, a udev probe, a closing reader) still holds the device open.
fn wait_detached(image: &Path, dev: &LoopDevice) {
    for _ in 0..1500 {
        if LoopDevice::backed_by(image).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{} still attached", dev.path().display());
}

#[test]
fn unsupported_filesystems_name_the_field() {
    let err = "btrfs".parse::<FsType>().unwrap_err();
    let status = csi_types::CsiError::from(err);
    assert_eq!(status.code(), csi_types::Code::InvalidArgument);
    assert!(
        status
            .to_string()
            .contains("volume_capability.mount.fs_type"),
        "{status}"
    );
}

#[test]
fn a_block_volume_is_published_read_only_on_a_file_target() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("block.img", 8 << 20);
    write_file(&image, b"block data").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let dev = LoopDevice::attach(&image, true).unwrap();
    let target = s.path("pod-device");
    csi_node::create_file_target(&target).unwrap();
    // Idempotent: an existing target is kept as it is.
    csi_node::create_file_target(&target).unwrap();
    csi_node::bind_mount(dev.path(), &target, &MountOptions::default(), true).unwrap();
    assert!(csi_node::is_mount_point(&target).unwrap());
    // The target is the device now: its size and content are the image's.
    assert_eq!(csi_node::block_device_size(&target).unwrap(), 8 << 20);
    let mut head = [0u8; 10];
    std::io::Read::read_exact(&mut fs::File::open(&target).unwrap(), &mut head).unwrap();
    assert_eq!(&head, b"block data");
    // A device node ignores its mount's read-only flag; the read-only loop device refuses the
    // write itself.
    let written = fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .and_then(|mut f| f.write_all(b"overwrite").and_then(|()| f.sync_all()));
    assert!(
        written.is_err(),
        "a write through a read-only publish succeeded"
    );
    csi_node::unmount_all(&target).unwrap();
    assert!(!csi_node::is_mount_point(&target).unwrap());
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
    assert!(LoopDevice::backed_by(&image).is_empty());
    assert!(LoopDevice::open(dev.path()).is_none_or(|d| d.backing_file() != Some(image)));
    // A target whose parent is missing is NOT_FOUND.
    let err = csi_node::create_file_target(&s.path("no/such/dir")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn a_sparse_copy_of_a_filesystem_image_mounts_with_the_same_files() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let size = 64 << 20;
    let image = s.image("src.img", size);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let staging = s.dir("staging");
    csi_node::format_and_mount(dev.path(), &staging, FsType::Ext4, &MountOptions::default())
        .unwrap();
    write_file(&staging.join("hello"), b"copied").unwrap();
    csi_node::sync_filesystem(&staging).unwrap();
    csi_node::unmount_all(&staging).unwrap();
    dev.detach().unwrap();

    // A snapshot of the image: same length, holes kept, and the same filesystem inside.
    let copy = s.path("copy.img");
    csi_node::copy_sparse(&image, &copy).unwrap();
    assert_eq!(fs::metadata(&copy).unwrap().len(), size);
    let allocated = csi_node::allocated_bytes(&copy).unwrap();
    assert!(allocated < size / 2, "{allocated} bytes allocated");
    assert!(allocated <= csi_node::allocated_bytes(&image).unwrap());
    let dev = LoopDevice::attach(&copy, true).unwrap();
    let view = s.dir("view");
    csi_node::format_and_mount(
        dev.path(),
        &view,
        FsType::Ext4,
        &MountOptions::default().read_only(),
    )
    .unwrap();
    assert_eq!(fs::read(view.join("hello")).unwrap(), b"copied");

    // A mount volume's tree copied from that mounted filesystem: the files, and what they
    // occupy, counted like `du`.
    let tree = s.path("tree");
    csi_node::copy_tree(&view, &tree).unwrap();
    assert_eq!(fs::read(tree.join("hello")).unwrap(), b"copied");
    assert!(tree.join("lost+found").is_dir());
    assert!(csi_node::allocated_bytes(&tree).unwrap() >= 4096);
    csi_node::unmount_all(&view).unwrap();
    dev.detach().unwrap();
}

/// What sysfs says about a loop device's direct I/O (`/sys/block/loopN/loop/dio`).
fn sysfs_dio(dev: &LoopDevice) -> String {
    let name = dev
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    fs::read_to_string(format!("/sys/block/{name}/loop/dio"))
        .unwrap()
        .trim()
        .to_string()
}

/// Reads `len` bytes of `dev` from `offset`, bypassing the page cache of the device.
fn read_device(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(dev).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn direct_io_attach_is_direct_and_shows_the_file() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 8 << 20);
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
        f.write_all_at(&data, 1 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let opts = csi_node::AttachOptions {
        direct_io: true,
        offset: 1 << 20,
        size_limit: Some(4 << 20),
        ..Default::default()
    };
    let dev = LoopDevice::attach_with(&image, &opts).unwrap();
    assert_eq!(
        sysfs_dio(&dev),
        "1",
        "{} is not in direct I/O",
        dev.path().display()
    );
    assert_eq!(dev.direct_io(), Some(true));
    assert_eq!(csi_node::block_device_size(dev.path()).unwrap(), 4 << 20);
    assert_eq!(read_device(dev.path(), 0, data.len()), data);
    // A plain attach stays buffered: the sysfs check tells the two apart.
    let plain = LoopDevice::attach(&image, false).unwrap();
    assert_eq!(sysfs_dio(&plain), "0");
    assert_eq!(plain.direct_io(), Some(false));
    plain.detach().unwrap();
    dev.detach().unwrap();
}

#[test]
fn direct_io_refused_by_the_kernel_falls_back_to_buffered_io() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 8 << 20);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 1) as u8).collect();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
        f.write_all_at(&data, 100).unwrap();
        f.sync_all().unwrap();
    }
    // An offset that is no multiple of the backing device's logical block size: the loop
    // driver cannot do direct I/O, and the attach must still give a working device.
    let opts = csi_node::AttachOptions {
        direct_io: true,
        offset: 100,
        size_limit: Some(1 << 20),
        ..Default::default()
    };
    let dev = LoopDevice::attach_with(&image, &opts).unwrap();
    assert_eq!(sysfs_dio(&dev), "0");
    assert_eq!(dev.direct_io(), Some(false));
    assert_eq!(read_device(dev.path(), 0, data.len()), data);
    dev.detach().unwrap();
}

/// A loop device this test attached, detached when the test ends however it ends (only this
/// attachment: its disk sequence number tells it from a later one at the same number).
struct Attached(LoopDevice);

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.0.detach();
    }
}

/// Mounts a tmpfs on `dir` (created) and makes an `size`-byte file `name` in it.
fn tmpfs_with_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=16m",
    )
    .unwrap();
    let file = dir.join(name);
    fs::File::create(&file).unwrap().set_len(size).unwrap();
    file
}

#[test]
fn release_under_detaches_loop_devices_before_it_unmounts_their_files() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    // A loop device over a file on a mount below the directory, like the composer's loop
    // device over the file of its FUSE mount.
    let file = tmpfs_with_file(&s.path("fs"), "volume", 4 << 20);
    let dev = Attached(LoopDevice::attach(&file, false).unwrap());
    assert_eq!(LoopDevice::backed_under(s.0.path()), vec![dev.0.clone()]);
    csi_node::release_under(s.0.path());
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
    // Unmounting first would have left the device attached for good, over a file the kernel
    // then names `/volume`.
    assert!(
        dev.0.backing_file().is_none(),
        "{} left attached, backed by {:?}",
        dev.0.path().display(),
        dev.0.backing_file()
    );
}

#[test]
fn a_loop_device_over_a_lazily_unmounted_file_is_found_by_its_attachment() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let file = tmpfs_with_file(&s.path("fs"), "volume", 4 << 20);
    let dev = Attached(LoopDevice::attach(&file, false).unwrap());
    let Some(seq) = dev.0.diskseq() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run on a kernel with loop disk sequence numbers (Linux 5.15+)"
        );
        eprintln!("skipped: this kernel has no disk sequence numbers");
        return;
    };
    csi_node::lazy_unmount_under(&s.path("fs")).unwrap();
    // What the kernel reports now: the file's path inside the detached tmpfs.
    assert_eq!(dev.0.backing_file().as_deref(), Some(Path::new("/volume")));
    assert!(LoopDevice::backed_under(s.0.path()).is_empty());
    // The recorded attachment still finds it, and only it.
    let found = LoopDevice::open_attachment(dev.0.path(), seq).unwrap();
    assert_eq!(found, dev.0);
    assert!(LoopDevice::open_attachment(dev.0.path(), seq + 1).is_none());
    assert!(dev.0.detach_and_wait(Duration::from_secs(30)).unwrap());
    assert!(LoopDevice::open_attachment(dev.0.path(), seq).is_none());
    assert!(!dev.0.detaches_at_last_close());
}

#[test]
fn a_detached_attachment_never_detaches_the_next_one_at_its_number() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let (one, two) = (s.image("one.img", 1 << 20), s.image("two.img", 1 << 20));
    // Attach, detach, and attach another file at the same number: what another process that
    // takes the freed number does. Another process may take it first; then try again.
    let (old, new) = (0..20)
        .find_map(|_| {
            let old = LoopDevice::attach(&one, false).unwrap();
            old.detach().unwrap();
            let taken = std::process::Command::new("losetup")
                .arg(old.path())
                .arg(&two)
                .status()
                .unwrap()
                .success();
            taken.then(|| {
                let new = Attached(LoopDevice::open(old.path()).unwrap());
                (old, new)
            })
        })
        .expect("the freed loop device number was taken by another process 20 times");
    if old.diskseq().is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run on a kernel with loop disk sequence numbers (Linux 5.15+)"
        );
        eprintln!("skipped: this kernel has no disk sequence numbers");
        return;
    }
    assert_ne!(old.diskseq(), new.0.diskseq());
    assert_eq!(old.backing_file(), None);
    assert_eq!(old.direct_io(), None);
    old.detach().unwrap();
    assert!(old.detach_and_wait(Duration::from_secs(1)).unwrap());
    assert_eq!(
        new.0.backing_file(),
        Some(fs::canonicalize(&two).unwrap()),
        "the next attachment at {} was detached",
        new.0.path().display()
    );
}

/// Mounts a FUSE file system on `DIR/name` whose server is gone (a `/dev/fuse` connection
/// closed without a server, whose root answers `ENOTCONN`): what a node process killed with its
/// FUSE mounts leaves. `None` (after saying why) where `/dev/fuse` cannot be opened.
fn dead_fuse_mount(s: &Scratch, name: &str) -> Option<PathBuf> {
    let fuse = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(f) => f,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the node tests: /dev/fuse: {e}"
            );
            eprintln!("skipped: /dev/fuse: {e}");
            return None;
        }
    };
    let point = s.dir(name);
    let data = std::ffi::CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        std::os::fd::AsRawFd::as_raw_fd(&fuse)
    ))
    .unwrap();
    rustix::mount::mount(
        "dead",
        &point,
        "fuse",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .unwrap();
    // No server ever answers, and closing its end aborts the connection.
    drop(fuse);
    let e = fs::symlink_metadata(&point).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::NOTCONN.raw_os_error()),
        "{e}"
    );
    Some(point)
}

#[test]
fn mounts_below_a_dead_fuse_mount_are_found_and_lazily_unmounted() {
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let Some(point) = dead_fuse_mount(&s, "fuse") else {
        return;
    };
    let resolved = fs::canonicalize(s.0.path()).unwrap().join("fuse");
    assert_eq!(
        csi_node::mounts_under(&point).unwrap(),
        vec![resolved.clone()]
    );
    assert_eq!(LoopDevice::backed_under(&point), Vec::new());
    csi_node::lazy_unmount_under(&point).unwrap();
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
    // Idempotent.
    csi_node::lazy_unmount_under(&point).unwrap();
}

#[test]
fn a_dead_mount_point_is_a_mount_point_and_unmounts() {
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let Some(point) = dead_fuse_mount(&s, "target") else {
        return;
    };
    // NodeUnpublishVolume of a target whose FUSE server died: the check and the unmount
    // must not stop at the root that answers ENOTCONN, or the target stays for good.
    assert!(csi_node::is_mount_point(&point).unwrap());
    csi_node::unmount_all(&point).unwrap();
    assert!(!csi_node::is_mount_point(&point).unwrap());
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
    fs::remove_dir(&point).unwrap();
    // Idempotent, once the target is gone too.
    csi_node::unmount_all(&point).unwrap();
}

#[test]
fn loop_devices_below_a_removed_directory_are_found_and_released() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let gone = s.dir("gone");
    let image = gone.join("disk.img");
    fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let dev = Attached(LoopDevice::attach(&image, false).unwrap());
    // A test's directory removed while the device still holds the file.
    fs::remove_file(&image).unwrap();
    fs::remove_dir(&gone).unwrap();
    assert!(
        dev.0
            .backing_file()
            .unwrap()
            .to_string_lossy()
            .ends_with("disk.img (deleted)"),
        "{:?}",
        dev.0.backing_file()
    );
    assert_eq!(LoopDevice::backed_under(&gone), vec![dev.0.clone()]);
    csi_node::release_under(&gone);
    assert!(dev.0.detach_and_wait(Duration::from_secs(30)).unwrap());
    assert_eq!(dev.0.backing_file(), None);
}

/// Lazily unmounts its paths when dropped, by path and without the mount table, so that a test
/// of the mount table itself cleans up even when the table cannot be read.
struct UnmountOnDrop(Vec<PathBuf>);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            while rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH).is_ok() {}
        }
    }
}

#[test]
fn a_mount_point_whose_name_is_not_utf8_spoils_nothing() {
    use std::os::unix::ffi::OsStrExt;
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    // Any user (or container runtime) can make such a directory and mount on it.
    let odd =
        s.0.path()
            .join(std::ffi::OsStr::from_bytes(b"vol-\xff\xfe name"));
    let plain = s.path("plain");
    let mut guard = UnmountOnDrop(Vec::new());
    for dir in [&odd, &plain] {
        fs::create_dir(dir).unwrap();
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            c"size=1m",
        )
        .unwrap();
        guard.0.push(dir.clone());
    }
    assert!(csi_node::is_mount_point(&odd).unwrap());
    assert!(csi_node::is_mount_point(&plain).unwrap());
    assert!(!csi_node::is_mount_point(s.0.path()).unwrap());
    let canonical = fs::canonicalize(s.0.path()).unwrap();
    assert_eq!(
        csi_node::mounts_under(s.0.path()).unwrap(),
        [
            canonical.join(odd.file_name().unwrap()),
            canonical.join("plain")
        ]
    );
    let entry = csi_node::mount_table()
        .unwrap()
        .into_iter()
        .find(|m| m.mount_point == canonical.join(odd.file_name().unwrap()))
        .unwrap();
    assert_eq!(entry.fs_type, "tmpfs");
    assert_eq!(entry.source, "tmpfs");
    // Unpublish and unstage of such a path work, and stay idempotent.
    assert!(csi_node::unmount(&odd).unwrap());
    csi_node::unmount_all(&odd).unwrap();
    assert!(!csi_node::is_mount_point(&odd).unwrap());
    assert!(csi_node::is_mount_point(&plain).unwrap());
    drop(guard);
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
}

/// Detaches a loop device by its number with `losetup -d` when dropped, but only while the
/// number still holds the attachment with disk sequence number `.1` (read from sysfs here, not
/// through the crate), so that a test of the crate's own detach cleans up even when that
/// detach does nothing, and never detaches a later attachment at the same number.
struct DetachByNumber(PathBuf, Option<String>);

impl Drop for DetachByNumber {
    fn drop(&mut self) {
        let name = self.0.file_name().unwrap().to_owned();
        let seq = fs::read_to_string(Path::new("/sys/block").join(name).join("diskseq")).ok();
        if seq.is_some() && seq == self.1 {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn a_loop_device_over_a_file_whose_name_is_not_utf8_is_found_and_detached() {
    use std::os::unix::ffi::OsStrExt;
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    // A state directory may be any path the OS accepts: bytes that are not UTF-8, a name
    // ending in a space.
    let dir = s.0.path().join(std::ffi::OsStr::from_bytes(b"state-\xff"));
    fs::create_dir(&dir).unwrap();
    let image = dir.join("disk.img ");
    fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let image = fs::canonicalize(&image).unwrap();
    let dev = LoopDevice::attach(&image, false).unwrap();
    let name = dev.path().file_name().unwrap().to_owned();
    let _guard = DetachByNumber(
        dev.path().to_path_buf(),
        fs::read_to_string(Path::new("/sys/block").join(name).join("diskseq")).ok(),
    );
    assert_eq!(dev.backing_file().as_deref(), Some(image.as_path()));
    assert_eq!(LoopDevice::backed_by(&image), vec![dev.clone()]);
    assert_eq!(LoopDevice::backed_under(&dir), vec![dev.clone()]);
    assert_eq!(
        LoopDevice::open(dev.path()).map(|d| d.backing_file()),
        Some(Some(image.clone()))
    );
    assert!(dev.detach_and_wait(Duration::from_secs(15)).unwrap());
    assert!(dev.backing_file().is_none());
    assert!(LoopDevice::backed_by(&image).is_empty());
}

#[test]
fn a_missing_staging_path_formats_nothing() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 32 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let missing = s.path("no-staging");
    let err =
        csi_node::format_and_mount(dev.path(), &missing, FsType::Ext4, &MountOptions::default())
            .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { path } if *path == missing),
        "{err}"
    );
    // The failed call left the device as it found it: blank.
    assert_eq!(csi_node::probe_filesystem(dev.path()).unwrap(), None);
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn a_staging_path_that_is_mounted_already_is_never_mounted_over() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let (a, b) = (s.image("a.img", 32 << 20), s.image("b.img", 32 << 20));
    let (dev_a, dev_b) = (
        LoopDevice::attach(&a, false).unwrap(),
        LoopDevice::attach(&b, false).unwrap(),
    );
    let staging = s.dir("staging");
    let rw = MountOptions::default();
    let mounts = || {
        let point = fs::canonicalize(&staging).unwrap();
        csi_node::mount_table()
            .unwrap()
            .into_iter()
            .filter(|m| m.mount_point == point)
            .map(|m| m.source)
            .collect::<Vec<_>>()
    };
    csi_node::format_and_mount(dev_a.path(), &staging, FsType::Ext4, &rw).unwrap();
    write_file(&staging.join("a"), b"volume a").unwrap();
    // A retried NodeStageVolume: done already, nothing stacked.
    csi_node::format_and_mount(dev_a.path(), &staging, FsType::Ext4, &rw).unwrap();
    assert_eq!(mounts(), [dev_a.path().as_os_str()]);
    // Another device, the other mode, another filesystem type: refused, naming what is there.
    for (dev, fs_type, opts) in [
        (&dev_b, FsType::Ext4, rw.clone()),
        (&dev_a, FsType::Ext4, rw.clone().read_only()),
        (&dev_a, FsType::Xfs, rw.clone()),
    ] {
        let err = csi_node::format_and_mount(dev.path(), &staging, fs_type, &opts).unwrap_err();
        assert!(matches!(err, Error::AlreadyMounted { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&staging.display().to_string()), "{msg}");
        assert!(msg.contains(&dev_a.path().display().to_string()), "{msg}");
        assert_eq!(
            csi_types::CsiError::from(err).code(),
            csi_types::Code::AlreadyExists
        );
        assert_eq!(mounts(), [dev_a.path().as_os_str()]);
        assert_eq!(fs::read(staging.join("a")).unwrap(), b"volume a");
    }
    // The other device was not formatted by the refused call.
    assert_eq!(csi_node::probe_filesystem(dev_b.path()).unwrap(), None);
    // A bind mount of a directory on the staging path is not the device either.
    csi_node::unmount_all(&staging).unwrap();
    let dir = s.dir("dir");
    csi_node::bind_mount(&dir, &staging, &rw, false).unwrap();
    let err = csi_node::format_and_mount(dev_a.path(), &staging, FsType::Ext4, &rw).unwrap_err();
    assert!(matches!(err, Error::AlreadyMounted { .. }), "{err}");
    csi_node::unmount_all(&staging).unwrap();
    for dev in [dev_a, dev_b] {
        assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
    }
}

#[test]
fn a_copy_that_runs_out_of_space_leaves_nothing_behind() {
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let src = s.dir("src");
    fs::write(src.join("a"), b"small").unwrap();
    fs::create_dir(src.join("sub")).unwrap();
    fs::write(src.join("sub/big"), vec![7u8; 3 << 20]).unwrap();
    let small = s.dir("small");
    rustix::mount::mount(
        "tmpfs",
        &small,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=1m",
    )
    .unwrap();
    let _unmount = UnmountOnDrop(vec![small.clone()]);
    let err = csi_node::copy_sparse(&src.join("sub/big"), &small.join("img")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("write "), "{msg}");
    assert!(
        msg.contains(&small.join("img").display().to_string()),
        "{msg}"
    );
    let err = csi_node::copy_tree(&src, &small.join("tree")).unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    // A retry starts clean: nothing of either copy is left.
    // (The space itself comes back once no process holds the removed files: a child another
    // test thread forks in the meantime briefly does, so it is not asserted here.)
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0);
}

#[test]
fn a_bind_with_flags_keeps_what_the_source_mount_restricts() {
    use rustix::fs::StatVfsMountFlags as St;
    use rustix::mount::MountFlags;
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let flags = |p: &Path| rustix::fs::statvfs(p).unwrap().f_flag;
    // A volume on a file system mounted nosuid, nodev, noexec.
    let fs_dir = s.dir("fs");
    rustix::mount::mount(
        "tmpfs",
        &fs_dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"size=1m",
    )
    .unwrap();
    let mut guard = UnmountOnDrop(vec![fs_dir.clone()]);
    let volume = fs_dir.join("volume");
    fs::create_dir(&volume).unwrap();
    // Staged read-only (a bind, as the local driver stages), then published with a flag.
    let staging = s.dir("staging");
    csi_node::bind_mount(&volume, &staging, &MountOptions::default(), true).unwrap();
    guard.0.push(staging.clone());
    let target = s.dir("target");
    let noatime = MountOptions::parse(["noatime"]).unwrap();
    csi_node::bind_mount(&staging, &target, &noatime, false).unwrap();
    guard.0.push(target.clone());
    let got = flags(&target);
    for want in [St::RDONLY, St::NOSUID, St::NODEV, St::NOEXEC, St::NOATIME] {
        assert!(got.contains(want), "{want:?} missing from {got:?}");
    }
    let err = write_file(&target.join("x"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
    // Without flags to apply there is no remount, and the bind has the source's flags too.
    let plain = s.dir("plain");
    csi_node::bind_mount(&staging, &plain, &MountOptions::default(), false).unwrap();
    guard.0.push(plain.clone());
    assert!(flags(&plain).contains(St::RDONLY | St::NOSUID | St::NODEV | St::NOEXEC));
    // A read-only remount keeps them too.
    let later = s.dir("later");
    csi_node::bind_mount(&volume, &later, &MountOptions::default(), false).unwrap();
    guard.0.push(later.clone());
    csi_node::remount_readonly(&later).unwrap();
    assert!(flags(&later).contains(St::RDONLY | St::NOSUID | St::NODEV | St::NOEXEC));
    // A read-write source with no restriction stays read-write.
    let rw_source = s.dir("rw-source");
    let rw_target = s.dir("rw-target");
    csi_node::bind_mount(&rw_source, &rw_target, &noatime, false).unwrap();
    guard.0.push(rw_target.clone());
    write_file(&rw_target.join("x"), b"x").unwrap();
    drop(guard);
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
}

#[test]
fn a_symbolic_link_to_a_staging_path_is_neither_mounted_on_nor_unmounted_through() {
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let staging = s.dir("staging");
    csi_node::bind_mount(&s.dir("volume"), &staging, &MountOptions::default(), false).unwrap();
    let _guard = UnmountOnDrop(vec![staging.clone()]);
    let link = s.path("target");
    std::os::unix::fs::symlink(&staging, &link).unwrap();
    let stacked = || {
        let point = fs::canonicalize(&staging).unwrap();
        csi_node::mount_table()
            .unwrap()
            .iter()
            .filter(|m| m.mount_point == point)
            .count()
    };
    // Publishing on the link would have stacked the staging path on itself.
    let err = csi_node::bind_mount(&staging, &link, &MountOptions::default(), true).unwrap_err();
    assert!(
        matches!(&err, Error::SymbolicLink { path } if *path == link),
        "{err}"
    );
    assert!(
        err.to_string().contains(&link.display().to_string()),
        "{err}"
    );
    assert_eq!(
        csi_types::CsiError::from(err).code(),
        csi_types::Code::FailedPrecondition
    );
    let err = csi_node::format_and_mount(
        Path::new("/dev/no-such-device"),
        &link,
        FsType::Ext4,
        &MountOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::SymbolicLink { .. }), "{err}");
    assert_eq!(stacked(), 1);
    // Unpublishing the link would have unmounted the staging path through it.
    assert!(!csi_node::is_mount_point(&link).unwrap());
    assert!(!csi_node::unmount(&link).unwrap());
    csi_node::unmount_all(&link).unwrap();
    assert_eq!(stacked(), 1);
    assert!(csi_node::is_mount_point(&staging).unwrap());
    // A symbolic link above the path is followed as ever.
    let parent_link = s.path("by-link");
    std::os::unix::fs::symlink(s.0.path(), &parent_link).unwrap();
    assert!(csi_node::is_mount_point(&parent_link.join("staging")).unwrap());
}

#[test]
fn a_partitioned_disk_is_never_formatted() {
    use std::io::{Read, Seek, SeekFrom};
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 32 << 20);
    // A DOS partition table (one Linux partition from sector 2048) and nothing else: no
    // filesystem on the whole disk, so blkid reports PTTYPE and no TYPE.
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&30000u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    {
        let mut f = fs::OpenOptions::new().write(true).open(&image).unwrap();
        f.write_all(&mbr).unwrap();
        f.sync_all().unwrap();
    }
    let dev = LoopDevice::attach(&image, false).unwrap();
    assert_eq!(
        csi_node::probe_filesystem(dev.path()).unwrap().as_deref(),
        Some("a dos partition table")
    );
    let target = s.dir("t");
    let err =
        csi_node::format_and_mount(dev.path(), &target, FsType::Ext4, &MountOptions::default())
            .unwrap_err();
    assert!(
        matches!(&err, Error::FilesystemMismatch { found, .. } if found == "a dos partition table"),
        "{err}"
    );
    assert!(err.to_string().contains("not formatted over"), "{err}");
    assert_eq!(
        csi_types::CsiError::from(err).code(),
        csi_types::Code::FailedPrecondition
    );
    assert!(!csi_node::is_mount_point(&target).unwrap());
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
    let mut first = [0u8; 512];
    let mut f = fs::File::open(&image).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut first).unwrap();
    assert_eq!(first, mbr, "the partition table is intact");
}

#[test]
fn a_filesystem_mounted_through_a_link_or_only_by_a_bind_of_a_directory_grows_online() {
    if unavailable(&["blkid", "mkfs.xfs", "xfs_growfs", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    // mkfs.xfs refuses filesystems under 300 MB.
    let image = s.image("disk.img", 320 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    // Staged through a link to the device, as /dev/mapper/NAME or /dev/disk/by-id/… are: the
    // mount table then names the link, not /dev/loopN.
    let link = s.path("by-id-volume");
    std::os::unix::fs::symlink(dev.path(), &link).unwrap();
    let staging = s.dir("staging");
    let opts = MountOptions::default();
    csi_node::format_and_mount(&link, &staging, FsType::Xfs, &opts).unwrap();
    // A retried stage through the device's own path is the same mount.
    csi_node::format_and_mount(dev.path(), &staging, FsType::Xfs, &opts).unwrap();
    let before = csi_node::filesystem_stats(&staging).unwrap().bytes_total;
    // The image grows to `len` bytes, the loop device with it, then the filesystem online.
    let grow = |len: u64| {
        fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len(len)
            .unwrap();
        dev.refresh().unwrap();
        csi_node::resize_filesystem(dev.path()).unwrap();
    };
    // Where the link was taken for another device, the filesystem was "not mounted" and XFS
    // could not grow.
    grow(640 << 20);
    let after = csi_node::filesystem_stats(&staging).unwrap().bytes_total;
    assert!(after > before + (200 << 20), "{before} -> {after}");
    // With the staging path unmounted, a publish of one of its directories is all that is left
    // of the filesystem's mounts: it grows through that (it was taken for unmounted).
    fs::create_dir(staging.join("sub")).unwrap();
    let target = s.dir("target");
    csi_node::bind_mount(&staging.join("sub"), &target, &opts, false).unwrap();
    csi_node::unmount_all(&staging).unwrap();
    grow(960 << 20);
    let last = csi_node::filesystem_stats(&target).unwrap().bytes_total;
    assert!(last > after + (200 << 20), "{after} -> {last}");
    csi_node::unmount_all(&target).unwrap();
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

/// Works in `dir` until dropped, then goes back. The tests of this file name everything else by
/// absolute paths, so the change does not reach them.
struct InDir(PathBuf);

impl InDir {
    fn enter(dir: &Path) -> InDir {
        let back = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir).unwrap();
        InDir(back)
    }
}

impl Drop for InDir {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.0);
    }
}

#[test]
fn a_relative_path_that_begins_with_a_dash_is_a_path_not_an_option() {
    if unavailable(&["blkid", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    fs::File::create(s.path("-r"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let image = fs::canonicalize(s.path("-r")).unwrap();
    let dev = {
        let _here = InDir::enter(s.0.path());
        // `losetup -f --show -r` and `blkid ... -r` took the file for the read-only flag.
        assert_eq!(csi_node::probe_filesystem(Path::new("-r")).unwrap(), None);
        LoopDevice::attach(Path::new("-r"), false).unwrap()
    };
    let _detach = Attached(dev.clone());
    assert_eq!(dev.backing_file(), Some(image));
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn options_the_kernel_refuses_are_named_without_their_values() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 32 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let staging = s.dir("staging");
    // What a network filesystem's mount_flags carry; ext4 knows no such option.
    let opts = MountOptions::parse(["noatime", "password=hunter2"]).unwrap();
    let err = csi_node::format_and_mount(dev.path(), &staging, FsType::Ext4, &opts).unwrap_err();
    assert!(matches!(err, Error::BadMountOption { .. }), "{err}");
    let status = csi_types::CsiError::from(err);
    assert_eq!(status.code(), csi_types::Code::InvalidArgument);
    let msg = status.to_string();
    assert!(msg.contains("password=<hidden>"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!csi_node::is_mount_point(&staging).unwrap());
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn a_range_of_no_bytes_is_refused_before_anything_is_attached() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 4 << 20);
    for (opts, words) in [
        // losetup reads `--sizelimit 0` as no limit: the whole file.
        (
            csi_node::AttachOptions {
                size_limit: Some(0),
                ..Default::default()
            },
            "size_limit 0",
        ),
        // And an offset past the end as a device of 0 bytes.
        (
            csi_node::AttachOptions {
                offset: 8 << 20,
                ..Default::default()
            },
            "past the end",
        ),
        // And a size above i64::MAX, which the kernel would fail (EOVERFLOW) in losetup.
        (
            csi_node::AttachOptions {
                size_limit: Some(u64::MAX),
                ..Default::default()
            },
            "size_limit 18446744073709551615 is above 9223372036854775807 bytes",
        ),
    ] {
        let err = LoopDevice::attach_with(&image, &opts).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(words), "{msg}");
        assert!(msg.contains(&image.display().to_string()), "{msg}");
        assert!(LoopDevice::backed_by(&image).is_empty(), "{opts:?}");
    }
    // A directory is no backing file (losetup failed on it, INTERNAL, naming no rule).
    let err = LoopDevice::attach(&s.dir("a-dir"), false).unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "attach", .. })
            && err.to_string().contains("it is a directory"),
        "{err}"
    );
    // A range inside the file is fine.
    let opts = csi_node::AttachOptions {
        offset: 1 << 20,
        size_limit: Some(1 << 20),
        ..Default::default()
    };
    let dev = Attached(LoopDevice::attach_with(&image, &opts).unwrap());
    assert_eq!(csi_node::block_device_size(dev.0.path()).unwrap(), 1 << 20);
    assert!(dev.0.detach_and_wait(Duration::from_secs(30)).unwrap());
    // And one that runs past its end ends with the file.
    let opts = csi_node::AttachOptions {
        offset: 1 << 20,
        size_limit: Some(i64::MAX as u64),
        ..Default::default()
    };
    let dev = Attached(LoopDevice::attach_with(&image, &opts).unwrap());
    assert_eq!(csi_node::block_device_size(dev.0.path()).unwrap(), 3 << 20);
    assert!(dev.0.detach_and_wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn a_directory_on_a_file_or_a_device_on_a_directory_is_refused_naming_both() {
    if unavailable(&[]).is_some() {
        return;
    }
    let s = Scratch::new();
    let (dir, file) = (s.dir("dir"), s.path("file"));
    fs::write(&file, b"").unwrap();
    for (source, target) in [(&dir, &file), (&file, &dir)] {
        let err = csi_node::bind_mount(source, target, &MountOptions::default(), false)
            .unwrap_err()
            .to_string();
        // The kernel says only "Not a directory".
        assert!(err.contains("a directory is bound on a directory"), "{err}");
        assert!(err.contains(&source.display().to_string()), "{err}");
        assert!(err.contains(&target.display().to_string()), "{err}");
    }
    assert!(csi_node::mounts_under(s.0.path()).unwrap().is_empty());
}

#[test]
fn a_mount_option_the_kernel_refuses_formats_nothing() {
    if unavailable(&["blkid", "mkfs.ext4", "mkfs.xfs", "losetup"]).is_some() {
        return;
    }
    for (fs_type, bad_value) in [
        (FsType::Ext4, "errors=bogus"),
        (FsType::Xfs, "logbufs=many"),
    ] {
        let s = Scratch::new();
        let image = s.image("disk.img", 320 << 20);
        let dev = LoopDevice::attach(&image, false).unwrap();
        let staging = s.dir("staging");
        for bad in [vec!["noatime", "nosuchoption"], vec![bad_value]] {
            let opts = MountOptions::parse(&bad).unwrap();
            let err = csi_node::format_and_mount(dev.path(), &staging, fs_type, &opts).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, Error::BadMountOption { .. }),
                "{fs_type} {bad:?}: {msg}"
            );
            let key = bad.last().unwrap().split('=').next().unwrap();
            assert!(msg.contains(key), "{fs_type}: names the option: {msg}");
            assert!(
                !msg.contains("bogus") && !msg.contains("many"),
                "{fs_type}: a value is never shown: {msg}"
            );
            // Nothing was formatted, nothing mounted: the device is as blank as it was.
            assert_eq!(
                csi_node::probe_filesystem(dev.path()).unwrap(),
                None,
                "{fs_type} {bad:?} formatted the device"
            );
            assert!(!csi_node::is_mount_point(&staging).unwrap());
        }
        // Options the kernel knows pass the check and the stage goes ahead.
        let good = MountOptions::parse(["noatime", "discard"]).unwrap();
        good.check_for_filesystem(fs_type.as_str()).unwrap();
        csi_node::format_and_mount(dev.path(), &staging, fs_type, &good).unwrap();
        assert!(csi_node::is_mount_point(&staging).unwrap());
        csi_node::unmount_all(&staging).unwrap();
        assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
    }
}

#[test]
fn the_kernels_reason_for_refusing_a_long_option_is_read_whole() {
    // The kernel logs "e ext4: Unknown parameter '<key>'" in the filesystem context; a key may
    // be 255 bytes, and a read into a buffer shorter than the message fails (EMSGSIZE) and
    // loses it, which left only "invalid argument".
    let probe = MountOptions::parse(["nosuchoption"]).unwrap();
    if probe.check_for_filesystem("ext4").is_ok() {
        return; // no fsopen(2) here: the mount is the check
    }
    let key = format!("nosuch{}", "o".repeat(240));
    let opts = MountOptions::parse([key.as_str()]).unwrap();
    let err = opts.check_for_filesystem("ext4").unwrap_err();
    let Error::BadMountOption { ref rule, .. } = err else {
        panic!("not a refused option: {err}");
    };
    assert!(
        rule.contains("Unknown parameter") && rule.contains(&key),
        "the kernel's reason is lost: {rule}"
    );
}

#[test]
fn an_image_file_or_a_file_target_is_refused_before_anything_is_formatted() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    // A new user's first try: the image file itself for the device.
    let image = s.image("disk.img", 32 << 20);
    let staging = s.dir("staging");
    let err = csi_node::format_and_mount(&image, &staging, FsType::Ext4, &MountOptions::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not a block device") && msg.contains("LoopDevice::attach"),
        "{msg}"
    );
    assert_eq!(
        msg.matches(image.to_str().unwrap()).count(),
        1,
        "the path is named once: {msg}"
    );
    assert_eq!(
        csi_node::probe_filesystem(&image).unwrap(),
        None,
        "the image file was formatted"
    );
    assert!(!csi_node::is_mount_point(&staging).unwrap());
    // A device and a staging path that is a file.
    let dev = LoopDevice::attach(&image, false).unwrap();
    let file = s.path("staging-file");
    fs::write(&file, b"").unwrap();
    let err = csi_node::format_and_mount(dev.path(), &file, FsType::Ext4, &MountOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(
        err.to_string().matches(file.to_str().unwrap()).count(),
        1,
        "the path is named once: {err}"
    );
    assert_eq!(csi_node::probe_filesystem(dev.path()).unwrap(), None);
    // The size of a directory is no number at all.
    let err = csi_node::block_device_size(&staging).unwrap_err();
    assert!(
        err.to_string()
            .contains("neither a block device nor a regular file"),
        "{err}"
    );
    assert_eq!(csi_node::block_device_size(dev.path()).unwrap(), 32 << 20);
    // Nor is a device's "filesystem" the one its node lies on.
    let err = csi_node::filesystem_stats(dev.path()).unwrap_err();
    assert!(err.to_string().contains("block_device_size"), "{err}");
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

/// How many mounts are stacked on `p`.
fn mounts_on(p: &Path) -> usize {
    let p = fs::canonicalize(p).unwrap();
    csi_node::mount_table()
        .unwrap()
        .iter()
        .filter(|m| m.mount_point == p)
        .count()
}

#[test]
fn a_retried_bind_stacks_nothing_and_another_mount_is_never_bound_over() {
    if unavailable(&["losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let (staging, target) = (s.dir("staging"), s.dir("target"));
    fs::write(staging.join("ours"), b"ours").unwrap();
    let opts = MountOptions::default();
    // NodePublishVolume retried by the CO: one bind.
    for _ in 0..3 {
        csi_node::bind_mount(&staging, &target, &opts, true).unwrap();
    }
    assert_eq!(mounts_on(&target), 1);
    // The other mode, or another source, is not what is there: refused, naming it.
    let other = s.dir("other");
    for (source, ro) in [(&staging, false), (&other, true)] {
        let err = csi_node::bind_mount(source, &target, &opts, ro).unwrap_err();
        assert!(matches!(err, Error::AlreadyMounted { .. }), "{err}");
        assert!(err.to_string().contains("read-only"), "{err}");
        assert_eq!(mounts_on(&target), 1);
    }
    assert_eq!(fs::read(target.join("ours")).unwrap(), b"ours");
    csi_node::unmount_all(&target).unwrap();

    // Someone's tmpfs on the target: never bound over.
    rustix::mount::mount(
        "tmpfs",
        &target,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let err = csi_node::bind_mount(&staging, &target, &opts, false).unwrap_err();
    assert!(err.to_string().contains("tmpfs"), "{err}");
    assert_eq!(mounts_on(&target), 1);
    assert!(!target.join("ours").exists());
    csi_node::unmount_all(&target).unwrap();

    // A block device on a file target, retried: one bind.
    let image = s.image("disk.img", 1 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let file = s.path("dev-target");
    csi_node::create_file_target(&file).unwrap();
    for _ in 0..2 {
        csi_node::bind_mount(dev.path(), &file, &opts, false).unwrap();
    }
    assert_eq!(mounts_on(&file), 1);
    csi_node::unmount_all(&file).unwrap();
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn unmount_own_takes_off_the_plugins_mounts_and_leaves_one_stacked_on_them() {
    if unavailable(&["blkid", "mkfs.ext4", "losetup"]).is_some() {
        return;
    }
    let s = Scratch::new();
    let image = s.image("disk.img", 32 << 20);
    let dev = LoopDevice::attach(&image, false).unwrap();
    let (staging, target) = (s.dir("staging"), s.dir("target"));
    let opts = MountOptions::default();
    csi_node::format_and_mount(dev.path(), &staging, FsType::Ext4, &opts).unwrap();
    csi_node::bind_mount(&staging, &target, &opts, false).unwrap();
    let tmpfs = |dir: &Path| {
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        fs::write(dir.join("theirs"), b"keep").unwrap();
    };
    for (path, own) in [(&target, &staging), (&staging, &dev.path().to_path_buf())] {
        // Someone's tmpfs stacked on the plugin's mount: refused, both stay.
        tmpfs(path);
        let err = csi_node::unmount_own(path, &[own]).unwrap_err();
        assert!(matches!(err, Error::ForeignMount { .. }), "{err}");
        assert!(err.to_string().contains("tmpfs"), "{err}");
        let status = csi_types::CsiError::from(err);
        assert_eq!(status.code(), csi_types::Code::FailedPrecondition);
        assert_eq!(mounts_on(path), 2);
        assert_eq!(fs::read(path.join("theirs")).unwrap(), b"keep");
        csi_node::unmount(path).unwrap();
        // Then the plugin's own comes off, once; a retry finds nothing to do.
        assert_eq!(csi_node::unmount_own(path, &[own]).unwrap(), 1);
        assert_eq!(csi_node::unmount_own(path, &[own]).unwrap(), 0);
        assert_eq!(mounts_on(path), 0);
    }
    assert!(dev.detach_and_wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn a_filesystem_that_is_not_grown_here_is_a_failed_precondition_not_a_bad_fs_type() {
    // blkid and mkswap work on an image file: no root needed.
    let s = Scratch::new();
    let image = s.image("swap.img", 1 << 20);
    let made = std::process::Command::new("mkswap")
        .arg(&image)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let err = csi_node::resize_filesystem(&image).unwrap_err();
    assert!(
        matches!(&err, Error::CannotGrow { found, .. } if found == "swap"),
        "{err}"
    );
    // What the volume holds is no field of the request: not INVALID_ARGUMENT naming fs_type.
    let status = csi_types::CsiError::from(err);
    assert_eq!(
        status.code(),
        csi_types::Code::FailedPrecondition,
        "{status}"
    );
    assert!(!status.to_string().contains("fs_type"), "{status}");
}

#[test]
fn a_missing_empty_or_odd_device_path_is_refused_by_mkfs_naming_it_on_one_line() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    // A missing device is NOT_FOUND before any mkfs runs (mkfs.ext4 would fail INTERNAL, or
    // make a file of the name with a size given).
    let missing = s.path("no-such-device");
    let err = csi_node::mkfs(&missing, FsType::Ext4).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
    assert!(!missing.exists());
    // An empty path is shown as one, a path with a line break or a byte that is not UTF-8 is
    // escaped: each message is one line and names what was given.
    let err = csi_node::mkfs(Path::new(""), FsType::Ext4).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), "\"\" does not exist");
    let odd = s.path("new\nline");
    for (path, shown) in [
        (odd.clone(), format!("{:?}", odd)),
        (
            s.0.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname")),
            format!(
                "{:?}",
                s.0.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"))
            ),
        ),
    ] {
        for err in [
            csi_node::mkfs(&path, FsType::Ext4).unwrap_err(),
            csi_node::probe_filesystem(&path).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains(&shown), "{shown} missing: {msg}");
        }
    }
    // A NUL byte, which no path can hold, is the kernel's refusal of that path, not a tool's.
    let nul = Path::new(std::ffi::OsStr::from_bytes(b"/dev/a\0b"));
    let err = csi_node::mkfs(nul, FsType::Ext4).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { op: "stat", .. }), "{msg}");
    assert!(msg.contains("\"/dev/a\\0b\""), "{msg}");
}
