//! Loop devices: a file seen as a block device, through `losetup`, which picks a free device
//! (`losetup -f --show`), so no device number is ever assumed.
//!
//! With [`AttachOptions::direct_io`] the device is asked for direct I/O (`--direct-io=on`): the
//! loop driver then sends its requests to the file as asynchronous `O_DIRECT` I/O, several at a
//! time, instead of one after the other through the page cache (which also caches every block
//! twice). A backing file system that refuses `O_DIRECT`, or an offset the loop driver cannot
//! align, leaves the device in buffered mode: the attach still succeeds, logs why, and
//! [`LoopDevice::direct_io`] reads `false`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, run};

/// How [`LoopDevice::attach_with`] attaches a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Read-only device (`losetup -r`).
    pub read_only: bool,
    /// Ask for direct I/O (`--direct-io=on`), falling back to buffered I/O with a logged reason
    /// where it cannot be had.
    pub direct_io: bool,
    /// Where the device starts in the file, in bytes (`--offset`).
    pub offset: u64,
    /// How many bytes of the file from `offset` the device shows (`--sizelimit`); `None`: up to
    /// the end of the file.
    pub size_limit: Option<u64>,
}

/// An attached loop device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// Why loop devices cannot be used on this node, if they cannot.
    pub fn check_available() -> Result<(), Error> {
        if !Path::new("/dev/loop-control").exists() {
            return Err(Error::MissingTool {
                tool: "/dev/loop-control (the `loop` kernel module)".into(),
            });
        }
        run(Command::new("losetup").arg("--version")).map(|_| ())
    }

    /// Attaches `file` to a free loop device (buffered I/O, the whole file).
    pub fn attach(file: &Path, read_only: bool) -> Result<Self, Error> {
        Self::attach_with(
            file,
            &AttachOptions {
                read_only,
                ..AttachOptions::default()
            },
        )
    }

    /// Attaches `file` to a free loop device as `opts` says. With `opts.direct_io`, a device
    /// the kernel leaves in buffered mode is still returned (the reason is logged as a
    /// warning); [`LoopDevice::direct_io`] tells which mode it got.
    pub fn attach_with(file: &Path, opts: &AttachOptions) -> Result<Self, Error> {
        if !file.exists() {
            return Err(Error::NotFound {
                path: file.to_path_buf(),
            });
        }
        let command = |direct_io: bool| {
            let mut cmd = Command::new("losetup");
            cmd.arg("-f").arg("--show");
            if opts.read_only {
                cmd.arg("-r");
            }
            if opts.offset > 0 {
                cmd.arg("--offset").arg(opts.offset.to_string());
            }
            if let Some(limit) = opts.size_limit {
                cmd.arg("--sizelimit").arg(limit.to_string());
            }
            if direct_io {
                cmd.arg("--direct-io=on");
            }
            cmd.arg(file);
            cmd
        };
        let path = match run(&mut command(opts.direct_io)) {
            Ok(p) => PathBuf::from(p),
            // An older losetup that fails the whole attach when direct I/O is refused.
            Err(e @ Error::Command { .. }) if opts.direct_io => {
                let p = PathBuf::from(run(&mut command(false))?);
                tracing::warn!(file = %file.display(), device = %p.display(), reason = %e,
                    "loop device attached with buffered I/O: losetup refused --direct-io=on");
                p
            }
            Err(e) => return Err(e),
        };
        let device = LoopDevice { path };
        if opts.direct_io && device.direct_io() == Some(false) {
            tracing::warn!(file = %file.display(), device = %device.path.display(),
                reason = %refused_direct_io(file, opts.offset),
                "loop device attached with buffered I/O: the kernel refused direct I/O");
        }
        tracing::debug!(file = %file.display(), device = %device.path.display(),
            direct_io = ?device.direct_io(), "loop attached");
        Ok(device)
    }

    /// Whether the device does direct I/O on its file (sysfs `loop/dio`); `None` once detached.
    pub fn direct_io(&self) -> Option<bool> {
        let name = self.path.file_name()?.to_string_lossy().into_owned();
        let s = fs::read_to_string(format!("/sys/block/{name}/loop/dio")).ok()?;
        Some(s.trim() == "1")
    }

    /// The device, e.g. `/dev/loop3`, when `path` names an attached loop device.
    pub fn open(path: &Path) -> Option<Self> {
        let device = LoopDevice {
            path: path.to_path_buf(),
        };
        device.backing_file().map(|_| device)
    }

    /// The device node (`/dev/loopN`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file behind the device, from sysfs; `None` once detached.
    pub fn backing_file(&self) -> Option<PathBuf> {
        let name = self.path.file_name()?.to_string_lossy().into_owned();
        let s = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
        Some(PathBuf::from(s.trim()))
    }

    /// Makes the device see its backing file's new size (after an expansion).
    pub fn refresh(&self) -> Result<(), Error> {
        run(Command::new("losetup").arg("-c").arg(&self.path)).map(|_| ())
    }

    /// Detaches the device (the kernel defers it while the device is still open or mounted).
    pub fn detach(&self) -> Result<(), Error> {
        run(Command::new("losetup").arg("-d").arg(&self.path)).map(|_| ())
    }

    /// Detaches the device and waits up to `timeout` for the kernel to let it go: the kernel
    /// defers a detach while anything (a lazily unmounted filesystem, a udev probe, a reader that
    /// is closing) still holds the device open. Returns whether the device is gone (or already
    /// backs another file); a deferred detach still completes once its last user closes it.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn demo(dev: csi_node::LoopDevice) -> Result<(), csi_node::Error> {
    /// if !dev.detach_and_wait(Duration::from_secs(5))? {
    ///     eprintln!("{} is still open; the kernel detaches it at its last close", dev.path().display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn detach_and_wait(&self, timeout: std::time::Duration) -> Result<bool, Error> {
        let Some(backing) = self.backing_file() else {
            return Ok(true);
        };
        self.detach()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.backing_file().is_none_or(|b| b != backing) {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Every attached loop device, with its backing file.
    fn all() -> Vec<(LoopDevice, PathBuf)> {
        let Ok(entries) = fs::read_dir("/sys/block") else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("loop"))
            .map(|n| LoopDevice {
                path: PathBuf::from(format!("/dev/{n}")),
            })
            .filter_map(|d| d.backing_file().map(|b| (d, b)))
            .collect()
    }

    /// The loop devices whose backing file is `file`.
    pub fn backed_by(file: &Path) -> Vec<LoopDevice> {
        let Ok(file) = fs::canonicalize(file) else {
            return Vec::new();
        };
        Self::all()
            .into_iter()
            .filter(|(_, b)| *b == file)
            .map(|(d, _)| d)
            .collect()
    }

    /// The loop devices whose backing file lies below `dir`.
    pub fn backed_under(dir: &Path) -> Vec<LoopDevice> {
        let Ok(dir) = fs::canonicalize(dir) else {
            return Vec::new();
        };
        Self::all()
            .into_iter()
            .filter(|(_, b)| b.starts_with(&dir))
            .map(|(d, _)| d)
            .collect()
    }
}

/// Why the loop driver left a device over `file` from `offset` in buffered mode.
fn refused_direct_io(file: &Path, offset: u64) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(file);
    match direct {
        Err(e) => format!(
            "the file system of {} refuses O_DIRECT ({e})",
            file.display()
        ),
        Ok(_) => format!(
            "the offset {offset} or the size is not a multiple of the backing device's logical \
             block size"
        ),
    }
}
