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
    let mut child = Command::new(bin)
        .args(["expose", "--loop", "--mount", fuse_dir.to_str().unwrap()])
        .args(&members)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let loopdev = line.trim().to_string();
    assert!(loopdev.starts_with("/dev/loop"), "expose printed {line:?}");
    let content = "written through ext4, loop and FUSE\n".repeat(1000);
    let result = std::panic::catch_unwind(|| {
        run(Command::new("mkfs.ext4").args(["-q", "-F", &loopdev]));
        run(Command::new("mount").args([&loopdev, mnt.to_str().unwrap()]));
        std::fs::write(mnt.join("hello"), &content).unwrap();
        run(&mut Command::new("sync"));
        run(Command::new("umount").arg(&mnt));
    });
    if result.is_err() {
        let _ = Command::new("umount").arg(&mnt).status();
    }
    // SIGTERM: the CLI detaches the loop device, unmounts and closes.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(status.success(), "expose exited with {status}");
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
