//! The kernel path: the CLI exposes a RAID1 volume through FUSE on a loop
//! device, a real ext4 is made and mounted on it, SIGTERM tears it down
//! cleanly, and the file written through the kernel is in the volume.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use raid_engine::Volume;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tests of this file mount and attach loop devices: one at a time.
static KERNEL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn prerequisites() -> bool {
    if !Path::new("/dev/fuse").exists() {
        common::skip("/dev/fuse is missing");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        common::skip("/dev/loop-control is missing (no loop devices)");
        return false;
    }
    if !rustix::process::geteuid().is_root() {
        common::skip("not root: loop devices and mounts need root");
        return false;
    }
    for (prog, pkg) in [
        ("losetup", "mount"),
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
    ] {
        if !common::ensure_program(prog, pkg) {
            common::skip(&format!("{prog} ({pkg}) is missing"));
            return false;
        }
    }
    true
}

#[test]
fn ext4_on_loop_on_fuse_survives_sigterm_teardown() {
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_raid-engine");
    let dir = tempfile::tempdir().unwrap();
    let (paths, _devs) = common::members(dir.path(), 2, 80 << 20);
    drop(_devs);
    let members: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    run(Command::new(bin)
        .args(["create", "--level", "raid1"])
        .args(&members));
    let fuse_dir = dir.path().join("fuse");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&fuse_dir).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let content = "written through ext4, loop and FUSE\n".repeat(1000);
    // SIGTERM: the CLI detaches the loop device, unmounts and closes.
    Exposed::start(&fuse_dir, &members).run_then_stop(&mnt, |loopdev| {
        run(Command::new("mkfs.ext4").args(["-q", "-F", loopdev]));
        run(Command::new("mount").args([loopdev, mnt.to_str().unwrap()]));
        std::fs::write(mnt.join("hello"), &content).unwrap();
        run(&mut Command::new("sync"));
        run(Command::new("umount").arg(&mnt));
    });
    let loops = run(Command::new("losetup").arg("-a"));
    assert!(!loops.contains(fuse_dir.to_str().unwrap()), "{loops}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(fuse_dir.to_str().unwrap()));

    // The volume was closed cleanly and holds the file system.
    let vol = Volume::assemble(common::reopen(&paths), None).unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
    let mut image = vec![0u8; vol.size() as usize];
    vol.read_at(&mut image, 0).unwrap();
    let img = dir.path().join("image");
    std::fs::write(&img, &image).unwrap();
    run(Command::new("e2fsck").args(["-fn", img.to_str().unwrap()]));
    let cat = run(Command::new("debugfs").args(["-R", "cat /hello", img.to_str().unwrap()]));
    assert!(cat == content, "debugfs read {} bytes", cat.len());
}

#[test]
fn an_external_umount_closes_the_volume_cleanly() {
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (paths, devs) = common::members(dir.path(), 2, 8 << 20);
    let vol = std::sync::Arc::new(
        Volume::create(
            devs,
            &raid_engine::CreateOptions::new(raid_engine::VolumeLayout::parse("raid1").unwrap()),
        )
        .unwrap(),
    );
    let mnt = dir.path().join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    let exp = raid_engine::fuse::expose(vol.clone(), &mnt, "vol").unwrap();
    let data = common::pattern(7, 1 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(exp.file())
            .unwrap();
        f.write_all_at(&data, 4096).unwrap();
        f.sync_all().unwrap();
    }
    run(Command::new("umount").arg(&mnt));
    // Bounded wait for the session to notice (not a timing assertion).
    for _ in 0..600 {
        if exp.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        exp.is_finished(),
        "the FUSE session did not end after umount"
    );
    exp.unmount().unwrap();
    drop(vol);
    // Closed cleanly: the superblocks say so, and the data is there.
    let mut b = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&paths[0]).unwrap(),
        &mut b,
        raid_engine::meta::SB_OFFSET,
    )
    .unwrap();
    let sb = raid_engine::meta::Superblock::decode(&b, "m0").unwrap();
    assert!(sb.clean, "superblock not marked clean after umount");
    let vol = Volume::assemble(common::reopen(&paths), None).unwrap();
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 4096).unwrap();
    assert!(back == data);
}

/// `raid-engine expose --loop` running as a child process; SIGTERM on drop.
struct Exposed {
    child: std::process::Child,
    loopdev: String,
    stopped: bool,
}

impl Exposed {
    fn start(fuse_dir: &Path, members: &[&str]) -> Exposed {
        Exposed::start_with(fuse_dir, members, &[])
    }

    /// `start` with more options of `expose`.
    fn start_with(fuse_dir: &Path, members: &[&str], options: &[&str]) -> Exposed {
        let mut child = Command::new(env!("CARGO_BIN_EXE_raid-engine"))
            .args(["expose", "--loop", "--mount", fuse_dir.to_str().unwrap()])
            .args(options)
            .args(members)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let loopdev = line.trim().to_string();
        assert!(loopdev.starts_with("/dev/loop"), "expose printed {line:?}");
        let exposed = Exposed {
            child,
            loopdev,
            stopped: false,
        };
        // The CLI attaches with `--direct-io=on`, like the benchmark's
        // kernel path; a loop driver that refused it would serve the FUSE
        // file through the page cache, one request after the other.
        let dio = loop_dio(&exposed.loopdev);
        assert_eq!(dio, "1", "the CLI's loop device did not take direct I/O");
        exposed
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            sig,
        )
        .unwrap();
    }

    /// SIGTERM and wait: the CLI detaches the loop device, unmounts and
    /// closes the volume. After a clean exit the attachment it printed is
    /// gone (the device has no backing file, or the kernel has numbered a
    /// new attachment of it since: its disk sequence number changed).
    fn stop(mut self) -> std::process::ExitStatus {
        let sysfs = |attr: &str| {
            std::fs::read_to_string(format!("/sys/block/{}/{attr}", &self.loopdev[5..]))
                .map(|s| s.trim().to_string())
                .ok()
        };
        let seq = sysfs("diskseq");
        self.signal(rustix::process::Signal::TERM);
        self.stopped = true;
        let status = self.child.wait().unwrap();
        if status.success() {
            let gone = sysfs("loop/backing_file").is_none() || sysfs("diskseq") != seq;
            assert!(gone, "{} still attached after expose exited", self.loopdev);
        }
        status
    }

    /// Runs `steps` with the loop device's path, then stops the CLI
    /// (unmounting `mnt` first if a step panicked, so that it can detach) and
    /// checks that it exited cleanly; a step's panic is raised again.
    fn run_then_stop(self, mnt: &Path, steps: impl FnOnce(&str) + std::panic::UnwindSafe) {
        let dev = self.loopdev.clone();
        let result = std::panic::catch_unwind(move || steps(&dev));
        if result.is_err() {
            let _ = Command::new("umount").arg(mnt).status();
        }
        let status = self.stop();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
        assert!(status.success(), "expose exited with {status}");
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        if !self.stopped {
            self.signal(rustix::process::Signal::TERM);
            let _ = self.child.wait();
        }
    }
}

/// 4 KiB-aligned memory for `O_DIRECT` on a loop device.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn aligned(data: &[u8]) -> Vec<Page> {
    let mut pages = vec![Page([0; 4096]); data.len().div_ceil(4096)];
    bytemuck::cast_slice_mut::<Page, u8>(&mut pages)[..data.len()].copy_from_slice(data);
    pages
}

fn open_direct(dev: &str) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(dev)
        .unwrap_or_else(|e| panic!("open {dev} with O_DIRECT: {e}"))
}

/// Whether the loop driver does direct (asynchronous) I/O on its file.
fn loop_dio(dev: &str) -> String {
    std::fs::read_to_string(format!("/sys/block/{}/loop/dio", &dev[5..]))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The writes of one writer thread: regions of its own, of mixed sizes.
fn writer_plan(thread: u64, writers: u64, count: u64, slot: u64) -> Vec<(u64, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let off = (i * writers + thread) * slot;
            let len = match i % 3 {
                0 => slot,
                1 => 4096,
                _ => slot / 2 + 4096,
            } as usize;
            (off, common::pattern(thread * 1_000_003 + i, len))
        })
        .collect()
}

#[test]
fn concurrent_writers_through_loop_on_fuse_land_every_byte() {
    concurrent_writers(&raid_engine::fuse::ExposeOptions::default());
}

#[test]
fn concurrent_writers_with_writes_split_into_64k_requests_land_every_byte() {
    // Writes above 64 KiB arrive as several requests at once.
    concurrent_writers(&raid_engine::fuse::ExposeOptions::default().with_max_write_bytes(64 << 10));
}

#[test]
fn one_worker_many_workers_and_busy_polling_store_the_same_bytes() {
    use raid_engine::fuse::ExposeOptions;
    let poll = std::time::Duration::from_millis(1);
    let runs = [
        ("1 worker", ExposeOptions::default().with_workers(1)),
        ("default", ExposeOptions::default()),
        ("8 workers", ExposeOptions::default().with_workers(8)),
        (
            "no polling",
            ExposeOptions::default().with_adaptive_poll(std::time::Duration::ZERO),
        ),
        (
            "busy poll, 1 MiB writes",
            ExposeOptions::default()
                .with_busy_poll(poll)
                .with_max_write_bytes(1 << 20),
        ),
    ];
    let mut first: Option<(&str, Volume)> = None;
    for (name, opts) in runs {
        let Some(vol) = concurrent_writers(&opts) else {
            return;
        };
        let Some((first_name, reference)) = &first else {
            first = Some((name, vol));
            continue;
        };
        assert_eq!(vol.size(), reference.size());
        let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut off = 0;
        while off < vol.size() {
            let n = (vol.size() - off).min(1 << 20) as usize;
            reference.read_at(&mut a[..n], off).unwrap();
            vol.read_at(&mut b[..n], off).unwrap();
            assert!(a[..n] == b[..n], "{name} and {first_name} differ at {off}");
            off += n as u64;
        }
    }
}

/// A RAID1 volume over two 16 MiB member files made in `dir`.
fn raid1_of_two(dir: &Path) -> Volume {
    let (_paths, devs) = common::members(dir, 2, 16 << 20);
    let opts = raid_engine::CreateOptions::new(raid_engine::VolumeLayout::parse("raid1").unwrap());
    Volume::create(devs, &opts).unwrap()
}

#[test]
fn the_write_size_is_negotiated_at_mount_and_the_kernel_keeps_to_it() {
    use std::os::unix::fs::FileExt;
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return;
    }
    let dir = common::scratch();
    let vol = std::sync::Arc::new(raid1_of_two(dir.path()));
    // Page-aligned buffers, so that 1 MiB spans exactly 256 pages (the
    // kernel's cap per request).
    let data = aligned(&common::pattern(7, 1 << 20));
    for (max, requests) in [
        (raid_engine::fuse::DEFAULT_MAX_WRITE_BYTES, 4),
        (1 << 20, 1),
        (64 << 10, 16),
    ] {
        let fuse_dir = dir.path().join(format!("fuse-{max}"));
        std::fs::create_dir(&fuse_dir).unwrap();
        let o = raid_engine::fuse::ExposeOptions::default().with_max_write_bytes(max);
        let exp = raid_engine::fuse::expose_with(vol.clone(), &fuse_dir, "vol", &o).unwrap();
        // The file is direct I/O: one 1 MiB write goes to the session as
        // requests of the negotiated size.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(exp.file())
            .unwrap();
        f.write_all_at(bytemuck::cast_slice(&data), 1 << 20)
            .unwrap();
        let mut back = vec![Page([0; 4096]); 256];
        f.read_exact_at(bytemuck::cast_slice_mut(&mut back), 1 << 20)
            .unwrap();
        assert!(
            bytemuck::cast_slice::<Page, u8>(&back) == bytemuck::cast_slice::<Page, u8>(&data),
            "{max}: the bytes read back differ"
        );
        drop(f);
        let s = exp.stats();
        exp.unmount().unwrap();
        assert_eq!(s.largest_write_bytes, u64::from(max), "{s:?}");
        assert_eq!(s.writes, requests, "{max}: {s:?}");
        // Reads are split too: fuser sizes the kernel's per-request page
        // limit from the larger of max_write and the kernel's readahead.
        assert!(s.largest_read_bytes >= u64::from(max), "{s:?}");
        assert_eq!(s.reads * s.largest_read_bytes, 1 << 20, "{s:?}");
    }
    assert_eq!(raid_engine::fuse::DEFAULT_MAX_WRITE_BYTES, 256 << 10);
}

#[test]
fn bad_workers_and_busy_poll_are_refused_before_mounting() {
    use raid_engine::fuse::{ExposeOptions, MAX_WORKER_THREADS};
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), 1, 8 << 20);
    let opts = raid_engine::CreateOptions::new(raid_engine::VolumeLayout::parse("single").unwrap());
    let vol = std::sync::Arc::new(Volume::create(devs, &opts).unwrap());
    for bad in [0, MAX_WORKER_THREADS + 1] {
        let o = ExposeOptions::default().with_workers(bad);
        let err = raid_engine::fuse::expose_with(vol.clone(), dir.path(), "vol", &o).unwrap_err();
        assert!(err.to_string().contains("workers"), "{bad}: {err}");
    }
    let o = ExposeOptions::default().with_busy_poll(std::time::Duration::from_millis(1001));
    let err = raid_engine::fuse::expose_with(vol.clone(), dir.path(), "vol", &o).unwrap_err();
    assert!(err.to_string().contains("busy_poll"), "{err}");
    let o = ExposeOptions::default().with_adaptive_poll(
        raid_engine::fuse::MAX_ADAPTIVE_POLL + std::time::Duration::from_micros(1),
    );
    let err = raid_engine::fuse::expose_with(vol.clone(), dir.path(), "vol", &o).unwrap_err();
    assert!(err.to_string().contains("adaptive_poll"), "{err}");
    // Nothing was mounted: the directory is still the plain one.
    assert!(std::fs::read_dir(dir.path()).is_ok());
    assert!(
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(&dir.path().display().to_string())
    );
}

#[test]
fn a_bad_max_write_is_refused_before_mounting() {
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), 1, 8 << 20);
    let opts = raid_engine::CreateOptions::new(raid_engine::VolumeLayout::parse("single").unwrap());
    let vol = std::sync::Arc::new(Volume::create(devs, &opts).unwrap());
    for bad in [0, 1000, 4097, 2 << 20] {
        let o = raid_engine::fuse::ExposeOptions::default().with_max_write_bytes(bad);
        let err = raid_engine::fuse::expose_with(vol.clone(), dir.path(), "vol", &o).unwrap_err();
        assert!(err.to_string().contains("max_write_bytes"), "{bad}: {err}");
    }
}

/// Six threads writing disjoint 256 KiB slots through a loop device on
/// FUSE exposed with `expose`, read back through the kernel and from the
/// reassembled volume, which is returned (`None` where the test skipped).
fn concurrent_writers(expose: &raid_engine::fuse::ExposeOptions) -> Option<Volume> {
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return None;
    }
    let dir = common::scratch();
    let (paths, devs) = common::members(dir.path(), 4, 48 << 20);
    let mut opts =
        raid_engine::CreateOptions::new(raid_engine::VolumeLayout::parse("raid10:n2").unwrap());
    opts.chunk_sectors = 128;
    let vol = std::sync::Arc::new(Volume::create(devs, &opts).unwrap());
    let size = vol.size();
    let fuse_dir = dir.path().join("fuse");
    std::fs::create_dir(&fuse_dir).unwrap();
    let exp = raid_engine::fuse::expose_with(vol.clone(), &fuse_dir, "vol", expose).unwrap();
    let loopdev = run(Command::new("losetup")
        .args(["-f", "--show", "--direct-io=on"])
        .arg(exp.file()))
    .trim()
    .to_string();
    let dio = loop_dio(&loopdev);
    eprintln!("{loopdev}: loop dio = {dio}");
    let (writers, slot) = (6u64, 256u64 << 10);
    let count = size / slot / writers;
    let result = std::panic::catch_unwind(|| {
        std::thread::scope(|s| {
            for t in 0..writers {
                let loopdev = &loopdev;
                s.spawn(move || {
                    use std::os::unix::fs::FileExt;
                    let f = open_direct(loopdev);
                    for (i, (off, data)) in writer_plan(t, writers, count, slot).iter().enumerate()
                    {
                        let pages = aligned(data);
                        f.write_all_at(&bytemuck::cast_slice(&pages)[..data.len()], *off)
                            .unwrap();
                        if i % 16 == 15 {
                            f.sync_all().unwrap();
                        }
                    }
                    f.sync_all().unwrap();
                });
            }
        });
        // Read back through the kernel.
        let f = open_direct(&loopdev);
        for t in 0..writers {
            for (off, data) in writer_plan(t, writers, count, slot) {
                let mut pages = vec![Page([0; 4096]); data.len().div_ceil(4096)];
                std::os::unix::fs::FileExt::read_exact_at(
                    &f,
                    bytemuck::cast_slice_mut(&mut pages),
                    off,
                )
                .unwrap();
                assert!(
                    bytemuck::cast_slice::<Page, u8>(&pages)[..data.len()] == data[..],
                    "writer {t}: bytes at {off} differ through the loop device"
                );
            }
        }
    });
    let _ = Command::new("losetup").args(["-d", &loopdev]).status();
    exp.unmount().unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    // The loop driver really sent direct (concurrent) I/O to the FUSE file.
    assert_eq!(dio, "1", "the loop device did not take --direct-io=on");
    drop(vol);
    // Every byte is in the volume, and the copies agree.
    let vol = Volume::assemble(common::reopen(&paths), None).unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
    for t in 0..writers {
        for (off, data) in writer_plan(t, writers, count, slot) {
            let mut back = vec![0u8; data.len()];
            vol.read_at(&mut back, off).unwrap();
            assert!(
                back == data,
                "writer {t}: bytes at {off} differ in the volume"
            );
        }
    }
    Some(vol)
}

/// Four member files of `size` bytes in `dir` and a RAID10 n2 over them
/// made by the CLI.
fn cli_raid10(dir: &Path, size: u64, chunk: &str) -> Vec<std::path::PathBuf> {
    let (paths, devs) = common::members(dir, 4, size);
    drop(devs);
    run(Command::new(env!("CARGO_BIN_EXE_raid-engine"))
        .args(["create", "--level", "raid10:n2", "--chunk", chunk])
        .args(&paths));
    paths
}

/// Counts a writer thread as finished however it ends.
struct Finished<'a>(&'a std::sync::atomic::AtomicU64);
impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn writes_flushed_through_loop_on_fuse_survive_a_killed_engine() {
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = common::scratch();
    let paths = cli_raid10(dir.path(), 32 << 20, "64K");
    let members: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let fuse_dir = dir.path().join("fuse");
    std::fs::create_dir(&fuse_dir).unwrap();
    let exp = Exposed::start(&fuse_dir, &members);
    let loopdev = exp.loopdev.clone();
    let (writers, slot) = (4u64, 64u64 << 10);
    let count = 200u64;
    // Per writer: how many of its writes a returned fsync covers.
    let flushed: Vec<AtomicU64> = (0..writers).map(|_| AtomicU64::new(0)).collect();
    let flushes = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..writers {
            let (loopdev, flushed, flushes, finished) = (&loopdev, &flushed, &flushes, &finished);
            s.spawn(move || {
                let _count_me = Finished(finished);
                use std::os::unix::fs::FileExt;
                let f = open_direct(loopdev);
                for (i, (off, data)) in writer_plan(t, writers, count, slot).iter().enumerate() {
                    let pages = aligned(data);
                    if f.write_all_at(&bytemuck::cast_slice(&pages)[..data.len()], *off)
                        .is_err()
                    {
                        return; // the engine is gone
                    }
                    if i % 8 == 7 {
                        if f.sync_all().is_err() {
                            return;
                        }
                        flushed[t as usize].store(i as u64 + 1, Ordering::SeqCst);
                        flushes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        // Kill the engine once enough flushes have returned (a count, not a
        // time), while the writers are still writing.
        while flushes.load(Ordering::SeqCst) < writers * 6
            && finished.load(Ordering::SeqCst) < writers
        {
            std::thread::yield_now();
        }
        exp.signal(rustix::process::Signal::KILL);
    });
    drop(exp);
    let _ = Command::new("losetup").args(["-d", &loopdev]).status();
    let _ = rustix::mount::unmount(&fuse_dir, rustix::mount::UnmountFlags::DETACH);
    // Assembly resyncs what the bitmap marks; then every flushed write is
    // there and the copies agree.
    let vol = Volume::assemble(common::reopen(&paths), None).unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
    let mut checked = 0;
    for t in 0..writers {
        let n = flushed[t as usize].load(Ordering::SeqCst) as usize;
        for (off, data) in writer_plan(t, writers, count, slot).into_iter().take(n) {
            let mut back = vec![0u8; data.len()];
            vol.read_at(&mut back, off).unwrap();
            assert!(back == data, "writer {t}: flushed write at {off} lost");
            checked += 1;
        }
    }
    assert!(
        checked as u64 >= writers * 6 * 8,
        "only {checked} flushed writes before the kill"
    );
}

#[test]
fn xfs_on_loop_on_fuse_keeps_its_files_across_reassembly() {
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return;
    }
    for (prog, pkg) in [("mkfs.xfs", "xfsprogs"), ("xfs_repair", "xfsprogs")] {
        if !common::ensure_program(prog, pkg) {
            common::skip(&format!("{prog} ({pkg}) is missing"));
            return;
        }
    }
    let dir = common::scratch();
    // mkfs.xfs wants at least 300 MiB; sparse members on tmpfs.
    let paths = cli_raid10(dir.path(), 176 << 20, "512K");
    let members: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let fuse_dir = dir.path().join("fuse");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&fuse_dir).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..12u64)
        .map(|i| {
            (
                format!("f{i}"),
                common::pattern(900 + i, (i as usize + 1) * 300_000),
            )
        })
        .collect();
    let verify = |mnt: &Path| {
        for (name, data) in &files {
            let back = std::fs::read(mnt.join(name)).unwrap();
            assert!(&back == data, "{name} differs");
        }
    };

    Exposed::start(&fuse_dir, &members).run_then_stop(&mnt, |loopdev| {
        run(Command::new("mkfs.xfs").args(["-q", "-f", loopdev]));
        run(Command::new("mount").args([loopdev, mnt.to_str().unwrap()]));
        for (name, data) in &files {
            std::fs::write(mnt.join(name), data).unwrap();
        }
        run(&mut Command::new("sync"));
        // Read back from the device, not the page cache.
        run(Command::new("umount").arg(&mnt));
        run(Command::new("mount").args([loopdev, mnt.to_str().unwrap()]));
        verify(&mnt);
        run(Command::new("umount").arg(&mnt));
    });

    // Reassembled from the members in a new process: the copies agree, the
    // file system checks clean and holds the files.
    let vol = Volume::assemble(common::reopen(&paths), None).unwrap();
    assert!(vol.scrub(false).unwrap().mismatches.is_empty());
    vol.close().unwrap();
    drop(vol);
    // This time without polling for requests.
    Exposed::start_with(&fuse_dir, &members, &["--poll-us", "0"]).run_then_stop(&mnt, |loopdev| {
        run(Command::new("xfs_repair").args(["-n", loopdev]));
        run(Command::new("mount").args([loopdev, mnt.to_str().unwrap()]));
        verify(&mnt);
        run(Command::new("umount").arg(&mnt));
    });
}

/// CPU time used so far by the FUSE session's worker threads of this
/// process (fuser names them `fuser-N`): the scheduler's run time of each
/// in `/proc/self/task/*/schedstat`. The tests that call it hold `KERNEL`,
/// so the only session in the process is theirs.
fn fuse_workers_cpu() -> std::time::Duration {
    let mut ns = 0u64;
    let mut threads = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("fuser-") {
            continue;
        }
        threads += 1;
        ns += std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
    }
    assert!(
        threads > 0,
        "no FUSE worker threads found in /proc/self/task"
    );
    std::time::Duration::from_nanos(ns)
}

/// 4 KiB direct writes one after the other through the FUSE file itself
/// (no loop device: each write is one request, answered before the next).
/// Returns the file, still open: closing it sends requests too.
fn small_writes(file: &Path, count: u64) -> std::fs::File {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let data = common::pattern(3, 4096);
    for i in 0..count {
        f.write_all_at(&data, (i * 7919 % 2048) * 4096).unwrap();
    }
    f
}

#[test]
fn idle_and_sparse_exposures_do_not_poll_and_busy_polling_is_seen_spinning() {
    use raid_engine::fuse::ExposeOptions;
    use std::time::Duration;
    let _one = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    if !prerequisites() {
        return;
    }
    let dir = common::scratch();
    let vol = std::sync::Arc::new(raid1_of_two(dir.path()));
    // The default (adaptive, windows up to 50 µs) and the widest adaptive
    // window, whose gate (an average gap of at most 2 ms) a loaded machine
    // passes too, so that it surely polls during the writes.
    for (name, o) in [
        ("default", ExposeOptions::default()),
        (
            "adaptive up to 1 ms",
            ExposeOptions::default().with_adaptive_poll(raid_engine::fuse::MAX_ADAPTIVE_POLL),
        ),
    ] {
        let mnt = dir.path().join(format!("fuse-{}", name.len()));
        std::fs::create_dir(&mnt).unwrap();
        let exp = raid_engine::fuse::expose_with(vol.clone(), &mnt, "vol", &o).unwrap();
        drop(small_writes(exp.file(), 2000));
        let busy = exp.stats();
        if o.adaptive_poll == raid_engine::fuse::MAX_ADAPTIVE_POLL {
            assert!(busy.polls > 0 && busy.poll_hits > 0, "{name}: {busy:?}");
        }
        // Idle: past any polling window, then a whole second without I/O.
        std::thread::sleep(Duration::from_millis(100));
        let (cpu, before) = (fuse_workers_cpu(), exp.stats());
        std::thread::sleep(Duration::from_secs(1));
        let (cpu, after) = (fuse_workers_cpu() - cpu, exp.stats());
        exp.unmount().unwrap();
        eprintln!("{name}: while writing {busy:?}; idle for 1 s: {cpu:?} of CPU");
        assert_eq!(after.polls, before.polls, "{name}: polled while idle");
        assert!(
            cpu < Duration::from_millis(20),
            "{name}: the workers used {cpu:?} of CPU in a second without I/O"
        );
    }
    // Sparse I/O: writes at least 2 ms apart (gaps longer than 16 windows
    // of 50 µs, past which not even a probing poll is made). Polling stops
    // once fewer than half the recent gaps are short: after at most the
    // first six requests, whatever the polls found.
    let mnt = dir.path().join("fuse-sparse");
    std::fs::create_dir(&mnt).unwrap();
    let exp = raid_engine::fuse::expose(vol.clone(), &mnt, "vol").unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(exp.file())
            .unwrap();
        let data = common::pattern(5, 4096);
        for i in 0..50 {
            f.write_all_at(&data, i * 4096).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let s = exp.stats();
    exp.unmount().unwrap();
    eprintln!("sparse writes: {s:?}");
    assert_eq!(s.writes, 50, "{s:?}");
    assert!(s.polls <= 6, "sparse I/O polled: {s:?}");
    // The check above can see a spinning worker: with busy polling for 1 s
    // after each request, the second after one write is spent polling.
    let mnt = dir.path().join("fuse-busy");
    std::fs::create_dir(&mnt).unwrap();
    let o = ExposeOptions::default().with_busy_poll(Duration::from_secs(1));
    let exp = raid_engine::fuse::expose_with(vol.clone(), &mnt, "vol", &o).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let cpu = fuse_workers_cpu();
    let f = small_writes(exp.file(), 1);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = fuse_workers_cpu() - cpu;
    drop(f);
    // Wait for the poll to end (bounded: it lasts one second).
    for _ in 0..100 {
        if exp.stats().polls > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = exp.stats();
    exp.unmount().unwrap();
    eprintln!("busy polling 1 s: {s:?}; {cpu:?} of CPU in the 500 ms after one write");
    // One poll, from the write until the close's request (or 1 s).
    assert_eq!(s.polls, 1, "{s:?}");
    assert!(s.poll_time >= Duration::from_millis(500), "{s:?}");
    assert!(
        cpu >= Duration::from_millis(50),
        "a worker busy polling for 500 ms used only {cpu:?} of CPU"
    );
}

/// The mount point must be an existing empty directory, as documented:
/// a regular file or a directory with entries is refused before anything
/// is mounted (as root the kernel would mount over both, hiding what the
/// directory holds). Before, both were mounted over.
#[test]
fn expose_refuses_a_mount_point_that_is_not_an_empty_directory() {
    let dir = common::scratch();
    let (_paths, devs) = common::members(dir.path(), 2, 4 << 20);
    let mut opts =
        raid_engine::CreateOptions::new(raid_engine::VolumeLayout::parse("raid1").unwrap());
    opts.chunk_sectors = 0;
    let vol = std::sync::Arc::new(Volume::create(devs, &opts).unwrap());
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"keep").unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), b"keep").unwrap();
    for (mountpoint, rule) in [
        (&file, "not a file"),
        (&full, "it holds x: "),
        (&dir.path().join("nowhere"), "No such file"),
    ] {
        let e = raid_engine::fuse::expose(vol.clone(), mountpoint, "volume").unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, raid_engine::EngineError::Invalid { ref field, .. } if field == "mountpoint")
                && msg.contains(&mountpoint.display().to_string())
                && msg.contains(rule),
            "{}: {msg}",
            mountpoint.display()
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    assert_eq!(std::fs::read(full.join("x")).unwrap(), b"keep");
}
