//! The node side's stage and publish state on disk, so that a restarted
//! node process knows what an earlier one staged and published: the file
//! `<run dir>/node-state.json`, replaced atomically (write, fsync, rename,
//! fsync of the directory) after every change.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One staged volume as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedRecord {
    /// The staging path.
    pub staging: PathBuf,
    /// Staged for block access.
    pub block: bool,
    /// Drive of each member, in member order.
    pub drives: Vec<String>,
    /// The loop device the volume is attached to.
    pub loopdev: Option<PathBuf>,
    /// The disk sequence number of that attachment (`csi_node::LoopDevice::diskseq`): how a
    /// later process tells its own device from a number attached again by someone else, and
    /// finds it when the kernel no longer names its backing file (a FUSE file on a mount that
    /// was lazily unmounted). `None` in state written before it was recorded, or on kernels
    /// without disk sequence numbers.
    #[serde(default)]
    pub loop_diskseq: Option<u64>,
    /// The FUSE directory of an engine volume (`None`: a plain drive range).
    pub fuse_dir: Option<PathBuf>,
    /// The device-mapper name of its LUKS2 mapping (`encryptionFormat=luks`).
    #[serde(default)]
    pub luks: Option<String>,
}

/// Everything the node records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeState {
    /// Staged volumes by id.
    pub staged: BTreeMap<String, StagedRecord>,
    /// Published targets: volume id and whether read-only.
    pub targets: BTreeMap<PathBuf, (String, bool)>,
    /// Per published target, what its publish bound there from (the
    /// staging path and the device): how a later unpublish tells the
    /// plugin's mount from another's once the volume is no longer staged.
    /// Empty in state written before it was recorded.
    #[serde(default)]
    pub bound: BTreeMap<PathBuf, Vec<PathBuf>>,
}

const FILE: &str = "node-state.json";

impl NodeState {
    /// Reads the state in `run_dir`; a missing file is the empty state.
    pub fn load(run_dir: &Path) -> Result<NodeState, String> {
        let path = run_dir.join(FILE);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: {e}", storage_units::quote_path(&path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(e) => Err(format!("reading {}: {e}", storage_units::quote_path(&path))),
        }
    }

    /// Moves an unreadable state file in `run_dir` aside, to
    /// `node-state.json.unreadable` (`.unreadable.1`, … when taken), so that
    /// the state written next does not destroy what an operator can still
    /// read in it by hand (the volumes and targets an earlier process
    /// staged and published). Returns where it went.
    pub fn set_aside(run_dir: &Path) -> Result<PathBuf, String> {
        let path = run_dir.join(FILE);
        let mut to = run_dir.join(format!("{FILE}.unreadable"));
        let mut n = 0u32;
        while to.exists() {
            n += 1;
            to = run_dir.join(format!("{FILE}.unreadable.{n}"));
        }
        fs::rename(&path, &to).map_err(|e| {
            format!(
                "moving {} to {}: {e}",
                storage_units::quote_path(&path),
                storage_units::quote_path(&to)
            )
        })?;
        Ok(to)
    }

    /// Replaces the state in `run_dir` atomically.
    pub fn save(&self, run_dir: &Path) -> Result<(), String> {
        let err = |what: &str, p: &Path, e: std::io::Error| {
            format!("{what} {}: {e}", storage_units::quote_path(p))
        };
        fs::create_dir_all(run_dir).map_err(|e| err("creating", run_dir, e))?;
        let path = run_dir.join(FILE);
        let tmp = run_dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let mut f = fs::File::create(&tmp).map_err(|e| err("creating", &tmp, e))?;
        f.write_all(&text).map_err(|e| err("writing", &tmp, e))?;
        f.sync_all().map_err(|e| err("syncing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err("renaming", &tmp, e))?;
        fs::File::open(run_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("syncing", run_dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), NodeState::default());
        let mut s = NodeState::default();
        s.staged.insert(
            "v1".into(),
            StagedRecord {
                staging: "/s/v1".into(),
                block: false,
                drives: vec!["d1".into(), "d2".into()],
                loopdev: Some("/dev/loop3".into()),
                loop_diskseq: Some(1559),
                fuse_dir: Some("/run/v1".into()),
                luks: Some("composer-v1".into()),
            },
        );
        s.targets.insert("/t/v1".into(), ("v1".into(), true));
        s.bound
            .insert("/t/v1".into(), vec!["/s/v1".into(), "/dev/loop3".into()]);
        s.save(dir.path()).unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), s);
        // A state written before LUKS mappings and loop attachments were recorded still loads.
        let mut old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        let v1 = old["staged"]["v1"].as_object_mut().unwrap();
        assert!(v1.remove("luks").is_some());
        assert!(v1.remove("loop_diskseq").is_some());
        assert!(old.as_object_mut().unwrap().remove("bound").is_some());
        std::fs::write(dir.path().join(FILE), old.to_string()).unwrap();
        let loaded = NodeState::load(dir.path()).unwrap();
        assert_eq!(loaded.staged["v1"].luks, None);
        assert_eq!(loaded.staged["v1"].loop_diskseq, None);
        assert_eq!(loaded.staged["v1"].loopdev, s.staged["v1"].loopdev);
        assert!(loaded.bound.is_empty());
        assert_eq!(loaded.targets, s.targets);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = NodeState::load(dir.path()).unwrap_err();
        assert!(e.contains(FILE), "{e}");
    }
}
