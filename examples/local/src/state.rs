//! The driver's persistent metadata and its crash-safe storage.
//!
//! Everything the driver knows lives in one [`State`] value, saved as
//! `state.json` in the state directory. A change is made on a copy, the copy
//! is written to `state.json.tmp`, fsynced, renamed over `state.json`, and
//! the directory is fsynced; only then does the in-memory state (and the
//! caller) see it. Volume and snapshot data are created under a temporary
//! name and renamed into place *before* the metadata naming them is saved,
//! and removed only *after* the metadata stops naming them. So after a crash
//! at any instant, `state.json` names only complete objects, and whatever
//! else is on disk (temporary or orphaned data) is garbage that
//! [`Store::open`] removes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(test)]
use csi_types::{AccessMode, MountVolume};
use csi_types::{AccessType, CsiError, Map, VolumeCapability};
use serde::{Deserialize, Serialize};

/// The format version of `state.json`.
const VERSION: u32 = 1;

/// A volume capability as stored (the SDK's types are not serde types).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CapRec {
    pub block: bool,
    #[serde(default)]
    pub fs_type: Option<String>,
    #[serde(default)]
    pub mount_flags: Vec<String>,
    pub mode: String,
}

impl CapRec {
    pub fn from_cap(c: &VolumeCapability) -> CapRec {
        let (block, fs_type, mount_flags) = match &c.access_type {
            AccessType::Block => (true, None, Vec::new()),
            AccessType::Mount(m) => (false, m.fs_type.clone(), m.mount_flags.clone()),
        };
        CapRec {
            block,
            fs_type,
            mount_flags,
            mode: format!("{:?}", c.access_mode),
        }
    }

    #[cfg(test)]
    pub fn to_cap(&self) -> VolumeCapability {
        let mode = AccessMode::ALL
            .into_iter()
            .find(|m| format!("{m:?}") == self.mode)
            .unwrap_or(AccessMode::SingleNodeWriter);
        if self.block {
            VolumeCapability::block(mode)
        } else {
            VolumeCapability {
                access_type: AccessType::Mount(MountVolume {
                    fs_type: self.fs_type.clone(),
                    mount_flags: self.mount_flags.clone(),
                    volume_mount_group: None,
                }),
                access_mode: mode,
            }
        }
    }
}

/// What a volume was created from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SourceRec {
    Snapshot(String),
    Volume(String),
}

/// A controller publication of a volume to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControllerPubRec {
    pub readonly: bool,
    pub cap: CapRec,
}

/// A provisioned volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumeRec {
    pub name: String,
    pub capacity: u64,
    pub block: bool,
    pub caps: Vec<CapRec>,
    #[serde(default)]
    pub parameters: Map,
    #[serde(default)]
    pub mutable: Map,
    #[serde(default)]
    pub source: Option<SourceRec>,
    /// Controller publications by node id.
    #[serde(default)]
    pub published: BTreeMap<String, ControllerPubRec>,
    pub created: Stamp,
}

/// A snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRec {
    pub name: String,
    pub source_volume: String,
    pub size: u64,
    pub block: bool,
    pub created: Stamp,
    #[serde(default)]
    pub group: Option<String>,
}

/// A volume group snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupRec {
    pub name: String,
    /// Member snapshot ids, in the order of `source_volumes`.
    pub snapshots: Vec<String>,
    pub source_volumes: Vec<String>,
    pub created: Stamp,
}

/// A volume staged on this node, keyed by staging path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StageRec {
    pub volume_id: String,
    pub cap: CapRec,
}

/// A volume published on this node, keyed by target path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PublishRec {
    pub volume_id: String,
    pub cap: CapRec,
    pub readonly: bool,
    pub staging: String,
    /// The loop device bound at the target, for block volumes.
    #[serde(default)]
    pub loop_device: Option<String>,
}

/// A point in time as seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub secs: u64,
    pub nanos: u32,
}

impl Stamp {
    pub fn now() -> Stamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    pub fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.secs, self.nanos)
    }
}

/// Everything the driver persists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    /// The next number for a volume, snapshot or group snapshot id.
    pub next_id: u64,
    pub volumes: BTreeMap<String, VolumeRec>,
    pub snapshots: BTreeMap<String, SnapshotRec>,
    pub groups: BTreeMap<String, GroupRec>,
    pub staged: BTreeMap<String, StageRec>,
    pub published: BTreeMap<String, PublishRec>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: VERSION,
            next_id: 1,
            volumes: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            groups: BTreeMap::new(),
            staged: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }
}

impl State {
    /// Bytes provisioned: every volume and every snapshot.
    pub fn used(&self) -> u64 {
        self.volumes.values().map(|v| v.capacity).sum::<u64>()
            + self.snapshots.values().map(|s| s.size).sum::<u64>()
    }

    /// A fresh id with a prefix; ids sort in creation order.
    pub fn new_id(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        format!("{prefix}-{n:012}")
    }

    pub fn volume_by_name(&self, name: &str) -> Option<(&String, &VolumeRec)> {
        self.volumes.iter().find(|(_, v)| v.name == name)
    }

    pub fn snapshot_by_name(&self, name: &str) -> Option<(&String, &SnapshotRec)> {
        self.snapshots
            .iter()
            .find(|(_, s)| s.name == name && s.group.is_none())
    }
}

/// The on-disk layout of the state directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    fn state_tmp(&self) -> PathBuf {
        self.root.join("state.json.tmp")
    }
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    /// Where a volume's data lives: a directory, or `<id>.img` for block.
    pub fn volume_path(&self, id: &str, block: bool) -> PathBuf {
        data_path(&self.volumes_dir(), id, block)
    }
    /// Where a snapshot's data lives.
    pub fn snapshot_path(&self, id: &str, block: bool) -> PathBuf {
        data_path(&self.snapshots_dir(), id, block)
    }
    /// A temporary name in the same directory as `final_path`.
    pub fn tmp_for(final_path: &Path) -> PathBuf {
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        final_path.with_file_name(format!(".tmp-{name}"))
    }
}

fn data_path(dir: &Path, id: &str, block: bool) -> PathBuf {
    if block {
        dir.join(format!("{id}.img"))
    } else {
        dir.join(id)
    }
}

/// The metadata and the directory it lives in.
pub(crate) struct Store {
    pub layout: Layout,
    pub state: State,
}

/// An I/O failure as `INTERNAL`, saying what was being done.
pub(crate) fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> CsiError {
    CsiError::internal(format!("{what}: {e}"))
}

impl Store {
    /// Opens (or initialises) the state directory, then removes data that
    /// the metadata does not name: leftovers of operations a crash cut short.
    pub fn open(root: &Path) -> Result<Store, String> {
        let layout = Layout {
            root: root.to_path_buf(),
        };
        for dir in [
            layout.root.clone(),
            layout.volumes_dir(),
            layout.snapshots_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let _ = fs::remove_file(layout.state_tmp());
        let file = layout.state_file();
        let state = match fs::read(&file) {
            Ok(bytes) => {
                let s: State = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not valid driver state: {e}", file.display()))?;
                if s.version != VERSION {
                    return Err(format!(
                        "{}: state format version {} is not supported (expected {VERSION})",
                        file.display(),
                        s.version
                    ));
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(format!("reading {}: {e}", file.display())),
        };
        let store = Store { layout, state };
        store.collect_garbage()?;
        store.undo_unacknowledged_growth()?;
        Ok(store)
    }

    /// Removes entries of `volumes/` and `snapshots/` that the state does not name.
    fn collect_garbage(&self) -> Result<(), String> {
        let keep_vol: Vec<PathBuf> = self
            .state
            .volumes
            .iter()
            .map(|(id, v)| self.layout.volume_path(id, v.block))
            .collect();
        let keep_snap: Vec<PathBuf> = self
            .state
            .snapshots
            .iter()
            .map(|(id, s)| self.layout.snapshot_path(id, s.block))
            .collect();
        for (dir, keep) in [
            (self.layout.volumes_dir(), keep_vol),
            (self.layout.snapshots_dir(), keep_snap),
        ] {
            let entries =
                fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if keep.contains(&path) {
                    continue;
                }
                tracing::info!(path = %path.display(), "removing data no volume or snapshot names (left by an interrupted operation)");
                let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.map_err(|e| format!("removing {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    /// ControllerExpandVolume grows a block image before it saves the new
    /// size; an image larger than its recorded size is a growth that a crash
    /// kept from being acknowledged, and is undone (no device has seen it:
    /// loop devices learn a new size only in NodeExpandVolume, after the
    /// acknowledgement).
    fn undo_unacknowledged_growth(&self) -> Result<(), String> {
        for (id, v) in self.state.volumes.iter().filter(|(_, v)| v.block) {
            let path = self.layout.volume_path(id, true);
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.len() > v.capacity {
                tracing::info!(volume_id = %id, from = meta.len(), to = v.capacity, "undoing an expansion that was not acknowledged");
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("opening {}: {e}", path.display()))?;
                f.set_len(v.capacity)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("truncating {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Saves `next` atomically and durably, then makes it the current state.
    /// On failure the current state is unchanged.
    pub fn commit(&mut self, next: State) -> Result<(), CsiError> {
        let tmp = self.layout.state_tmp();
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| CsiError::internal(format!("encoding state: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.layout.state_file())?;
            fsync_dir(&self.layout.root)
        };
        write().map_err(|e| io_err(format!("saving {}", self.layout.state_file().display()), e))?;
        self.state = next;
        Ok(())
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> VolumeRec {
        VolumeRec {
            name: name.into(),
            capacity: 4096,
            block: false,
            caps: vec![],
            parameters: Map::new(),
            mutable: Map::new(),
            source: None,
            published: BTreeMap::new(),
            created: Stamp::now(),
        }
    }

    #[test]
    fn commit_persists_and_reopen_collects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let id = next.new_id("vol");
        next.volumes.insert(id.clone(), rec("a"));
        fs::create_dir(store.layout.volume_path(&id, false)).unwrap();
        store.commit(next).unwrap();
        // Leftovers of a cut-short operation.
        fs::create_dir(store.layout.volumes_dir().join(".tmp-vol-000000000009")).unwrap();
        fs::write(
            store.layout.snapshots_dir().join("snap-000000000007.img"),
            b"x",
        )
        .unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.state, store.state);
        let names: Vec<_> = fs::read_dir(reopened.layout.volumes_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(id)]);
        assert_eq!(
            fs::read_dir(reopened.layout.snapshots_dir())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn an_unacknowledged_growth_is_undone_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let id = next.new_id("vol");
        next.volumes.insert(
            id.clone(),
            VolumeRec {
                block: true,
                ..rec("b")
            },
        );
        let img = store.layout.volume_path(&id, true);
        fs::File::create(&img).unwrap().set_len(4096).unwrap();
        store.commit(next).unwrap();
        // ControllerExpandVolume grew the image, then the driver died.
        fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        Store::open(dir.path()).unwrap();
        assert_eq!(fs::metadata(&img).unwrap().len(), 4096);
    }

    #[test]
    fn corrupt_state_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(
            err.contains("state.json is not valid driver state"),
            "{err}"
        );
    }

    #[test]
    fn capabilities_round_trip_through_records() {
        for mode in AccessMode::ALL {
            let c = VolumeCapability::mount(mode).with_fs_type("ext4");
            assert_eq!(CapRec::from_cap(&c).to_cap(), c);
            let b = VolumeCapability::block(mode);
            assert_eq!(CapRec::from_cap(&b).to_cap(), b);
        }
    }
}
