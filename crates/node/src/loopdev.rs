//! Loop devices: a file seen as a block device, through `losetup`, which picks a free device
//! (`losetup -f --show`), so no device number is ever assumed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, run};

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

    /// Attaches `file` to a free loop device.
    pub fn attach(file: &Path, read_only: bool) -> Result<Self, Error> {
        if !file.exists() {
            return Err(Error::NotFound {
                path: file.to_path_buf(),
            });
        }
        let mut cmd = Command::new("losetup");
        cmd.arg("-f").arg("--show");
        if read_only {
            cmd.arg("-r");
        }
        let path = PathBuf::from(run(cmd.arg(file))?);
        tracing::debug!(file = %file.display(), device = %path.display(), "loop attached");
        Ok(LoopDevice { path })
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
