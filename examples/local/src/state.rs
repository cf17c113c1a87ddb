//! The driver's persistent metadata and its crash-safe storage.
//!
//! Everything the driver knows lives in one [`State`] value. Its tables are
//! persistent maps (`imbl`): a handler copies the state in O(1), changes the
//! copy, and [`Store::commit`] finds what changed by a diff that skips the
//! parts the two share, so a change costs the same with 10 or 10,000
//! volumes. Each commit queues one checksummed record (the changed entries,
//! whole, with a sequence number) for the journal. The journal file is
//! preallocated (zeros written at open) and written with `O_DIRECT |
//! O_DSYNC` (or `O_DSYNC` alone where the file system takes no direct I/O):
//! each batch is padded to the direct-I/O unit with a padding frame and
//! written from an aligned buffer at an aligned offset, so a durable write
//! is one transfer from that buffer to the disk and a cache flush, with no
//! copy into the page cache nor its writeback. It has no threads of its own. A call is answered only once the journal is
//! durable up to the last record it could have seen
//! ([`Journal::wait_durable`], done by the driver's `run` after
//! the handler released the lock), so nothing acknowledged, and nothing an
//! acknowledged answer was based on, can be lost. That wait is a
//! leader/follower group commit: a waiting caller that finds no write in
//! progress takes every record queued meanwhile and writes the batch at its
//! reserved offset with one synchronous `pwrite`, on its own thread (which
//! changes no file metadata, so it costs one data write and a cache flush);
//! the others sleep until that write ends and are woken together. One
//! batch is on its way to the disk at a time, so records reach it in
//! sequence order. Every [`SNAPSHOT_EVERY`] records, or every record per
//! volume, snapshot and group snapshot when they are more (so that the cost
//! of a snapshot per record does not grow with the state), the leader,
//! after its batch, writes the whole state to `state.json` (temporary file, fsync,
//! rename, directory fsync) and restarts the journal at offset 0.
//!
//! At [`Store::open`] the snapshot is read and the journal replayed in
//! sequence order up to its first gap (zeros, a torn or corrupt record, or
//! a record of an earlier round): a crash during a write can leave a later
//! part of a batch on disk and an earlier one not, but no caller of that
//! batch was answered.
//! The state as replayed is then saved and the journal zeroed, so nothing
//! from before the crash can be confused with a later record.
//!
//! Volume and snapshot data live in 256 shard directories,
//! `volumes/<shard>/<id>[.img]` and `snapshots/<shard>/<id>[.img]`, the shard
//! being two hex digits of the CRC-32 of the id ([`volume_data_path`]), so
//! that no directory grows with the number of objects (each creation and
//! deletion is a lookup and an insert or removal in its directory). A state
//! directory of the version that kept the data directly in `volumes/` and
//! `snapshots/` is read as it is: [`Store::open`] moves the data into the
//! shards, one atomic `rename` per object.
//!
//! Volume and snapshot data are created under a temporary name and renamed
//! into place (an empty mount volume's directory is made in place: it has
//! nothing to be half made) *before* the record naming them is committed. Data copied
//! from a source has its directory entry made durable before the record
//! (the leader fsyncs the data directory first); a volume created empty
//! does not (it would cost a second flush per CreateVolume): if a crash
//! lost its entry, [`Store::open`] makes the empty directory or sparse
//! image again, and NodeStageVolume makes the entry durable before a
//! workload can write into it. Data is removed only *after* the record that
//! stops naming it is durable ([`Store::remove_when_durable`]), and after the
//! callers of that record are answered, by the remover task
//! ([`Journal::dispose_later`]): a deletion is acknowledged once its record
//! is durable. So after a
//! crash at any instant, the state names only complete objects, and
//! whatever else is on disk (temporary or orphaned data) is garbage that
//! [`Store::open`] removes.
//!
//! If writing the journal fails, the in-memory state is ahead of the disk:
//! the store refuses every later call with `INTERNAL` until the driver is
//! restarted, which reloads what is durable.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imbl::OrdMap;

#[cfg(test)]
use csi_types::types::MountVolume;
use csi_types::{
    CsiError,
    types::{AccessMode, AccessType, Map, VolumeCapability},
};
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
    pub mode: ModeRec,
}

/// An access mode as stored. The names are fixed here, one per mode, rather than taken from
/// [`AccessMode`]'s `Debug` output, which a change to the SDK could change; they are the names
/// that output gave when state files stored it, so those files still load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ModeRec {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
}

impl From<AccessMode> for ModeRec {
    fn from(m: AccessMode) -> Self {
        match m {
            AccessMode::SingleNodeWriter => ModeRec::SingleNodeWriter,
            AccessMode::SingleNodeReaderOnly => ModeRec::SingleNodeReaderOnly,
            AccessMode::MultiNodeReaderOnly => ModeRec::MultiNodeReaderOnly,
            AccessMode::MultiNodeSingleWriter => ModeRec::MultiNodeSingleWriter,
            AccessMode::MultiNodeMultiWriter => ModeRec::MultiNodeMultiWriter,
            AccessMode::SingleNodeSingleWriter => ModeRec::SingleNodeSingleWriter,
            AccessMode::SingleNodeMultiWriter => ModeRec::SingleNodeMultiWriter,
        }
    }
}

impl From<ModeRec> for AccessMode {
    fn from(m: ModeRec) -> Self {
        match m {
            ModeRec::SingleNodeWriter => AccessMode::SingleNodeWriter,
            ModeRec::SingleNodeReaderOnly => AccessMode::SingleNodeReaderOnly,
            ModeRec::MultiNodeReaderOnly => AccessMode::MultiNodeReaderOnly,
            ModeRec::MultiNodeSingleWriter => AccessMode::MultiNodeSingleWriter,
            ModeRec::MultiNodeMultiWriter => AccessMode::MultiNodeMultiWriter,
            ModeRec::SingleNodeSingleWriter => AccessMode::SingleNodeSingleWriter,
            ModeRec::SingleNodeMultiWriter => AccessMode::SingleNodeMultiWriter,
        }
    }
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
            mode: c.access_mode.into(),
        }
    }

    #[cfg(test)]
    pub fn to_cap(&self) -> VolumeCapability {
        let mode = AccessMode::from(self.mode);
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
    /// The volume's data was never handed to a node (staged or
    /// published): after its deletion its directory may be given to a new
    /// volume ([`Recycler`]). Cleared, durably, before the volume is first
    /// mounted ([`Store::mark_staged`]). Records of versions that did not
    /// keep it read as `false`: such a volume may have been staged.
    #[serde(default)]
    pub never_staged: bool,
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
    /// The disk sequence number of that device's attachment ([`csi_node::LoopDevice::diskseq`]),
    /// where the kernel numbers attachments: the number alone may serve another publication of
    /// the volume by the time this one is undone (records written before this field have none,
    /// and go by the number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_diskseq: Option<u64>,
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
    /// The last journal record this snapshot includes.
    #[serde(default)]
    pub journal_seq: u64,
    /// Keys and values behind `Arc`: a change copies the tree nodes on its
    /// path, whose entries are then reference counts, not whole records or
    /// strings (with 10,000 volumes a node holds dozens of them, and a
    /// `String` key cost an allocation and a copy each).
    pub volumes: OrdMap<Arc<str>, Arc<VolumeRec>>,
    pub snapshots: OrdMap<String, SnapshotRec>,
    pub groups: OrdMap<String, GroupRec>,
    pub staged: OrdMap<String, StageRec>,
    pub published: OrdMap<String, PublishRec>,
    /// Derived from the tables, kept current by [`Store::commit`].
    #[serde(skip)]
    index: Index,
}

/// Lookups that would otherwise scan a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Index {
    /// Volume name -> id (shared with the table's key).
    volume_names: OrdMap<Arc<str>, Arc<str>>,
    /// Name -> id of snapshots that belong to no group.
    snapshot_names: OrdMap<String, String>,
    /// Bytes of all volumes and snapshots.
    used: u64,
}

impl Index {
    fn volume(&mut self, id: &Arc<str>, old: Option<&VolumeRec>, new: Option<&VolumeRec>) {
        if let Some(v) = old {
            self.used -= v.capacity;
            if self
                .volume_names
                .get(v.name.as_str())
                .is_some_and(|i| i == id)
            {
                self.volume_names.remove(v.name.as_str());
            }
        }
        if let Some(v) = new {
            self.used += v.capacity;
            self.volume_names
                .insert(Arc::from(v.name.as_str()), Arc::clone(id));
        }
    }

    fn snapshot(&mut self, id: &str, old: Option<&SnapshotRec>, new: Option<&SnapshotRec>) {
        if let Some(s) = old {
            self.used -= s.size;
            if s.group.is_none() && self.snapshot_names.get(&s.name).is_some_and(|i| i == id) {
                self.snapshot_names.remove(&s.name);
            }
        }
        if let Some(s) = new {
            self.used += s.size;
            if s.group.is_none() {
                self.snapshot_names.insert(s.name.clone(), id.to_string());
            }
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            version: VERSION,
            next_id: 1,
            journal_seq: 0,
            volumes: OrdMap::new(),
            snapshots: OrdMap::new(),
            groups: OrdMap::new(),
            staged: OrdMap::new(),
            published: OrdMap::new(),
            index: Index::default(),
        }
    }
}

impl State {
    /// Volumes, snapshots and group snapshots.
    fn objects(&self) -> u64 {
        (self.volumes.len() + self.snapshots.len() + self.groups.len()) as u64
    }

    /// Bytes provisioned: every volume and every snapshot.
    pub fn used(&self) -> u64 {
        self.index.used
    }

    /// A fresh id with a prefix; ids sort in creation order.
    pub fn new_id(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        format!("{prefix}-{n:012}")
    }

    pub fn volume_by_name(&self, name: &str) -> Option<(&str, &VolumeRec)> {
        let id = self.index.volume_names.get(name)?;
        self.volumes.get_key_value(id).map(|(k, v)| (&**k, &**v))
    }

    pub fn snapshot_by_name(&self, name: &str) -> Option<(&String, &SnapshotRec)> {
        let id = self.index.snapshot_names.get(name)?;
        self.snapshots.get_key_value(id)
    }

    /// Rebuilds the index from the tables (after loading).
    fn reindex(&mut self) {
        let mut index = Index::default();
        for (id, v) in &self.volumes {
            index.volume(id, None, Some(v));
        }
        for (id, s) in &self.snapshots {
            index.snapshot(id, None, Some(s));
        }
        self.index = index;
    }

    /// The changes that turn `self` into `next`, applying them to `next`'s
    /// index (which the copy inherited from `self`). Costs the number of
    /// changes, not the size of the tables.
    fn changes_to(&self, next: &mut State) -> (Record, NewData) {
        let mut changes = Vec::new();
        let mut index = std::mem::take(&mut next.index);
        let mut new_data = NewData::default();
        diff(&self.volumes, &next.volumes, |id, old, new_arc| {
            let (old, new) = (old.map(|v| &**v), new_arc.map(|v| &**v));
            index.volume(id, old, new);
            changes.push(Change::Volume(Arc::clone(id), new_arc.cloned()));
            // Only data copied from a source needs its entry durable
            // before the record: an empty volume's data is made again
            // at open if a crash lost it.
            if old.is_none() && new.is_some_and(|v| v.source.is_some()) {
                new_data.add(Top::Volumes, id);
            }
        });
        diff(&self.snapshots, &next.snapshots, |id, old, new| {
            index.snapshot(id, old, new);
            changes.push(Change::Snapshot(id.clone(), new.cloned()));
            if old.is_none() {
                new_data.add(Top::Snapshots, id);
            }
        });
        diff(&self.groups, &next.groups, |id, _, new| {
            changes.push(Change::Group(id.clone(), new.cloned()));
        });
        diff(&self.staged, &next.staged, |id, _, new| {
            changes.push(Change::Staged(id.clone(), new.cloned()));
        });
        diff(&self.published, &next.published, |id, _, new| {
            changes.push(Change::Published(id.clone(), new.cloned()));
        });
        next.index = index;
        let rec = Record {
            seq: 0,
            next_id: next.next_id,
            changes,
        };
        (rec, new_data)
    }

    /// [`State::changes_to`] when `next` differs from `self` in the volume
    /// `id` only (see [`Store::commit_volume`]).
    fn volume_changes_to(&self, next: &mut State, id: &str) -> (Record, NewData) {
        let mut changes = Vec::new();
        let mut new_data = NewData::default();
        let old = self.volumes.get_key_value(id);
        let new = next.volumes.get_key_value(id);
        let same = match (old, new) {
            (Some((_, a)), Some((_, b))) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if let Some((key, _)) = new.or(old).filter(|_| !same) {
            let key = Arc::clone(key);
            let (old, new) = (
                old.map(|(_, v)| Arc::clone(v)),
                new.map(|(_, v)| Arc::clone(v)),
            );
            next.index.volume(&key, old.as_deref(), new.as_deref());
            if old.is_none() && new.as_ref().is_some_and(|v| v.source.is_some()) {
                new_data.add(Top::Volumes, &key);
            }
            changes.push(Change::Volume(key, new));
        }
        let rec = Record {
            seq: 0,
            next_id: next.next_id,
            changes,
        };
        (rec, new_data)
    }

    /// Applies a journal record (when replaying).
    fn apply(&mut self, rec: Record) {
        fn put<K: Ord + Clone, V: Clone>(t: &mut OrdMap<K, V>, k: K, v: Option<V>) {
            match v {
                Some(v) => {
                    t.insert(k, v);
                }
                None => {
                    t.remove(&k);
                }
            }
        }
        self.next_id = self.next_id.max(rec.next_id);
        self.journal_seq = rec.seq;
        for c in rec.changes {
            match c {
                Change::Volume(k, v) => put(&mut self.volumes, k, v),
                Change::Snapshot(k, v) => put(&mut self.snapshots, k, v),
                Change::Group(k, v) => put(&mut self.groups, k, v),
                Change::Staged(k, v) => put(&mut self.staged, k, v),
                Change::Published(k, v) => put(&mut self.published, k, v),
            }
        }
    }
}

/// Calls `f(key, old, new)` for each entry that differs between two
/// versions of a table (skipping the structure they share).
fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: &OrdMap<K, V>,
    new: &OrdMap<K, V>,
    mut f: impl FnMut(&K, Option<&V>, Option<&V>),
) {
    use imbl::ordmap::DiffItem;
    for d in old.diff(new) {
        match d {
            DiffItem::Add(k, v) => f(k, None, Some(v)),
            DiffItem::Update { old, new } => f(old.0, Some(old.1), Some(new.1)),
            DiffItem::Remove(k, v) => f(k, Some(v), None),
        }
    }
}

/// One committed change of the state: the changed entries, whole (`None`:
/// removed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    seq: u64,
    next_id: u64,
    changes: Vec<Change>,
}

/// Which shard directories hold entries renamed into place for a record's
/// new objects, to be fsynced before the record is written (each once).
#[derive(Clone, Debug, Default)]
struct NewData {
    dirs: Vec<(Top, u8)>,
}

impl NewData {
    fn add(&mut self, top: Top, id: &str) {
        let dir = (top, shard_of(id));
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir);
        }
    }

    fn merge(&mut self, other: NewData) {
        for dir in other.dirs {
            if !self.dirs.contains(&dir) {
                self.dirs.push(dir);
            }
        }
    }
}

/// The two sharded data directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Top {
    Volumes,
    Snapshots,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Change {
    /// Behind `Arc`s shared with the state: a record is written from them
    /// without copying (the JSON is that of a string and a record).
    Volume(Arc<str>, Option<Arc<VolumeRec>>),
    Snapshot(String, Option<SnapshotRec>),
    Group(String, Option<GroupRec>),
    Staged(String, Option<StageRec>),
    Published(String, Option<PublishRec>),
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
    pub fn journal_file(&self) -> PathBuf {
        self.root.join("journal")
    }
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    /// Empty directories of deleted mount volumes, kept for new ones
    /// ([`Recycler`]); emptied at every start.
    pub fn free_dir(&self) -> PathBuf {
        self.root.join("free")
    }
    fn top_dir(&self, top: Top) -> PathBuf {
        match top {
            Top::Volumes => self.volumes_dir(),
            Top::Snapshots => self.snapshots_dir(),
        }
    }
    /// A shard directory of `volumes/` or `snapshots/` ([`shard_of`]).
    fn shard_dir(&self, top: Top, shard: u8) -> PathBuf {
        self.top_dir(top).join(shard_name(shard))
    }
    /// The shard directory that holds a volume's data.
    pub fn volume_shard_dir(&self, id: &str) -> PathBuf {
        self.shard_dir(Top::Volumes, shard_of(id))
    }
    /// Where a volume's data lives: `volumes/<shard>/<id>`, a directory, or
    /// `volumes/<shard>/<id>.img` for block ([`shard_of`]).
    pub fn volume_path(&self, id: &str, block: bool) -> PathBuf {
        data_path(&self.volumes_dir(), id, block)
    }
    /// Where a snapshot's data lives: `snapshots/<shard>/<id>[.img]`.
    pub fn snapshot_path(&self, id: &str, block: bool) -> PathBuf {
        data_path(&self.snapshots_dir(), id, block)
    }
    /// Makes the shard directories of `volumes/` and `snapshots/` that do
    /// not exist yet (all of them at the first start, or the first start
    /// after a version without shards), and makes their entries durable:
    /// the leader fsyncs only a shard before a record naming data in it.
    fn make_shards(&self) -> Result<(), String> {
        for top in [Top::Volumes, Top::Snapshots] {
            let mut made = false;
            for shard in 0..SHARDS {
                let dir = self.shard_dir(top, shard as u8);
                match fs::create_dir(&dir) {
                    Ok(()) => made = true,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                    Err(e) => return Err(format!("creating {}: {e}", dir.display())),
                }
            }
            if made {
                let dir = self.top_dir(top);
                fsync_dir(&dir).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
            }
        }
        Ok(())
    }
    /// Makes `volumes/`, `snapshots/` and their shards mode 0700, at every
    /// start: a volume's directory is world-writable (for any workload
    /// user, through its mounts), and the directory of one never staged
    /// must not have been reached by anyone but the driver's user, for it
    /// may be given to the next volume ([`Recycler`]); a snapshot is a copy
    /// of a volume's data, for the driver alone to read. The shards too, so
    /// that a descriptor of one opened while it was open to all gives no
    /// way in either.
    fn restrict_data(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for top in [Top::Volumes, Top::Snapshots] {
            let shards = (0..SHARDS).map(|s| self.shard_dir(top, s as u8));
            for dir in std::iter::once(self.top_dir(top)).chain(shards) {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| format!("restricting {}: {e}", dir.display()))?;
            }
        }
        Ok(())
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

/// How many shard directories `volumes/` and `snapshots/` each hold.
const SHARDS: usize = 256;

/// The shard of an object's data: the low byte of the CRC-32 of its id, so
/// that ids given out in sequence spread evenly. With all data in one
/// directory, every creation and deletion was a lookup and an insert or a
/// removal in an ext4 hashed directory of as many entries as objects (tens
/// of blocks with 10,000 volumes, each searched linearly); in 256 shards a
/// directory holds one block up to about 30,000 objects. The value is part
/// of the on-disk format: it must never change.
fn shard_of(id: &str) -> u8 {
    crc32fast::hash(id.as_bytes()) as u8
}

/// A shard directory's name: two lowercase hex digits.
fn shard_name(shard: u8) -> String {
    format!("{shard:02x}")
}

/// Whether `name` is a shard directory's name (no id the driver gives out is).
fn is_shard_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An object's data file name in its shard.
fn data_name(id: &str, block: bool) -> String {
    if block {
        format!("{id}.img")
    } else {
        id.to_string()
    }
}

fn data_path(dir: &Path, id: &str, block: bool) -> PathBuf {
    dir.join(shard_name(shard_of(id)))
        .join(data_name(id, block))
}

/// Where the driver keeps a volume's data under the state directory
/// `state_dir`: `volumes/<shard>/<id>` (a directory) or
/// `volumes/<shard>/<id>.img` (a block volume's image), where `<shard>` is
/// two hex digits derived from the id. For tools and tests that look at the
/// data from outside the driver.
pub fn volume_data_path(state_dir: &Path, volume_id: &str, block: bool) -> PathBuf {
    data_path(&state_dir.join("volumes"), volume_id, block)
}

/// The metadata and the directory it lives in.
pub(crate) struct Store {
    pub layout: Layout,
    pub state: State,
    /// Bytes promised to volumes and snapshots whose data is being built
    /// outside the lock (not persisted: a crash drops them with the data).
    pub reserved: u64,
    journal: Arc<Journal>,
}

/// An I/O failure as `INTERNAL`, saying what was being done.
pub(crate) fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> CsiError {
    CsiError::internal(format!("{what}: {e}"))
}

/// Every this many records at least (more when the state holds more
/// objects than this) the leader writes a snapshot and the journal starts
/// again at its beginning, so a restart replays at most this many records
/// or one per object.
pub(crate) const SNAPSHOT_EVERY: u64 = 4096;

/// Bytes of journal preallocated per record of a round (a record of a
/// CreateVolume is about 300 bytes, of a DeleteVolume under 100), at least:
/// with direct I/O a batch takes a whole number of write units
/// ([`Journal::open_direct`]), so a record alone takes one.
const JOURNAL_BYTES_PER_RECORD: u64 = 1024;

/// The preallocated journal size for a state of `objects` objects, written
/// with batches padded to `align` bytes. Records overwrite zeros already on
/// disk, so a durable write changes no file metadata (no file-system journal
/// commit, only the data and a cache flush); records past the end are still
/// durable (the size change is part of the synchronous write), only slower.
/// A round between two snapshots is [`SNAPSHOT_EVERY`] records or one per object,
/// so with many objects a round needs more room; without it, every record
/// past 4 MiB (from about 20,000 volumes on) would change the file's size.
/// The file grows when a snapshot is saved (the leader already does work
/// in proportion to the state then) and at start.
fn journal_size_for(objects: u64, align: usize) -> u64 {
    SNAPSHOT_EVERY.max(objects) * JOURNAL_BYTES_PER_RECORD.max(align as u64)
}

/// A journal record on disk: `[payload length: u32 LE][crc32 of payload:
/// u32 LE][payload: JSON of a Record]`.
fn encode_record(rec: &Record) -> Result<Vec<u8>, CsiError> {
    // The payload is written after room for the header, then the header
    // filled in: one buffer, no copy.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&[0; FRAME_HEADER]);
    serde_json::to_writer(&mut out, rec)
        .map_err(|e| CsiError::internal(format!("encoding a state record: {e}")))?;
    let payload = &out[FRAME_HEADER..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The bytes a padding frame needs at least: its header.
const FRAME_HEADER: usize = 8;

/// Pads a batch to a multiple of `align` bytes (a direct write's unit) with
/// one padding frame: a frame whose payload is all zeros, with its checksum.
/// A record's payload is JSON, never zeros, so the padding is told apart from
/// a record by its content, whatever the block size it was padded to; and a
/// zero length still marks the end of what was written (the preallocated
/// zeros). When the room left before the boundary cannot hold a header, the
/// padding runs to the boundary after it.
fn pad_batch(buf: &mut AlignedBuf, align: usize) {
    let rem = buf.len() % align;
    if align <= 1 || rem == 0 {
        return;
    }
    let mut room = align - rem;
    // A padding frame of length 0 would read as the end of the journal.
    if room <= FRAME_HEADER {
        room += align;
    }
    let len = room - FRAME_HEADER;
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&zeros_crc(len).to_le_bytes());
    buf.extend_zeros(len);
}

/// The CRC-32 of `len` zero bytes.
fn zeros_crc(len: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let zeros = [0u8; 256];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len());
        h.update(&zeros[..n]);
        left -= n;
    }
    h.finalize()
}

/// Reads the well-formed records at the start of a journal, skipping
/// padding frames ([`pad_batch`]) and stopping at zeros (never written), a
/// torn or a corrupt record.
fn read_journal(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= FRAME_HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if len == 0 || crc32fast::hash(payload) != crc {
            break;
        }
        at += 8 + len;
        if payload.iter().all(|&b| b == 0) {
            continue;
        }
        let Ok(rec) = serde_json::from_slice::<Record>(payload) else {
            break;
        };
        records.push(rec);
    }
    records
}

/// A byte buffer whose contents start at an address aligned for direct
/// I/O (a page), grown without losing that alignment; reused from batch to
/// batch so that a batch allocates nothing. Safe code only: the aligned
/// start is found inside an ordinary `Vec` with `align_offset`.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

/// The memory alignment of [`AlignedBuf`]: a page, which satisfies every
/// direct-I/O memory alignment a Linux file system asks for.
const MEM_ALIGN: usize = 4096;

impl AlignedBuf {
    fn with_capacity(cap: usize) -> AlignedBuf {
        let raw = vec![0u8; cap.max(MEM_ALIGN) + MEM_ALIGN];
        let start = raw.as_ptr().align_offset(MEM_ALIGN);
        AlignedBuf { raw, start, len: 0 }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn reserve(&mut self, more: usize) {
        if self.start + self.len + more <= self.raw.len() {
            return;
        }
        let mut grown = AlignedBuf::with_capacity((self.len + more).max(2 * self.len));
        grown.raw[grown.start..grown.start + self.len].copy_from_slice(self.as_slice());
        grown.len = self.len;
        *self = grown;
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        let at = self.start + self.len;
        self.raw[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn extend_zeros(&mut self, n: usize) {
        self.reserve(n);
        let at = self.start + self.len;
        self.raw[at..at + n].fill(0);
        self.len += n;
    }
}

/// A record waiting to be written.
struct Pending {
    seq: u64,
    bytes: Vec<u8>,
    new_data: NewData,
    /// The state to snapshot once this record is durable, if one is due.
    snapshot: Option<State>,
}

/// What the callers share about the journal.
#[derive(Default)]
struct Shared {
    /// Encoded records not yet taken by a leader, in sequence order.
    pending: Vec<Pending>,
    /// Data to remove once the record with this sequence number is durable.
    removals: Vec<(u64, Disposal)>,
    /// The last sequence number handed out.
    appended: u64,
    /// Every record up to this one is on disk.
    durable: u64,
    /// Where the next batch goes in the journal file.
    offset: u64,
    /// A caller is writing a batch (and the snapshot after it, if one is
    /// due): no other batch may be taken until it is done.
    flushing: bool,
    /// Set when a write failed: every later call is refused.
    failed: Option<String>,
    /// Callers asleep on `durable_cv`: a write that ends with none wakes
    /// nobody (a wake-all is a system call even with no waiter).
    sleeping: usize,
    /// The sequence number of the last record after which a snapshot was
    /// (or is being) saved.
    snapshot_seq: u64,
    /// Data whose records are durable, waiting for the remover task.
    to_remove: Vec<Disposal>,
    /// A remover task is running on the blocking pool: it takes
    /// `to_remove` until it finds it empty, so removals queued meanwhile
    /// need no task of their own (no thread hand-off per batch).
    removing: bool,
    /// The aligned buffer of the last batch, kept for the next one.
    spare: Option<AlignedBuf>,
}

/// What a leader takes from the pending records.
struct Batch {
    last: u64,
    offset: u64,
    /// The records, padded to the journal's write unit.
    bytes: AlignedBuf,
    new_data: NewData,
    snapshot: Option<State>,
}

/// The journal (see the module documentation). It has no threads of its
/// own: a caller waiting for its record to be durable writes the batch
/// itself when no write is in progress.
pub(crate) struct Journal {
    shared: Mutex<Shared>,
    /// Signalled when a write ends (`durable`, `failed` or `flushing`
    /// changed).
    durable_cv: Condvar,
    /// The same, for callers waiting in async code ([`Journal::durable`]).
    durable_notify: tokio::sync::Notify,
    /// The journal file, opened with `O_DIRECT | O_DSYNC` where the file
    /// system takes direct I/O ([`Journal::open_direct`]), else `O_DSYNC`.
    file: fs::File,
    /// The journal file opened with `O_DSYNC` only, for the preallocation
    /// (zeros written in large, unaligned pieces).
    plain: fs::File,
    /// The unit of a direct write (the file system's direct-I/O offset
    /// alignment): every batch is padded to a multiple of it and written at
    /// an offset that is one. 1 without direct I/O (no padding).
    align: usize,
    /// A direct write failed with `EINVAL`: records go through `plain`.
    direct_refused: std::sync::atomic::AtomicBool,
    /// Where the data durable records stopped naming goes.
    pub(crate) recycler: Recycler,
    layout: Layout,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every record appended so far is durable, writing the
    /// pending records itself when no other caller is. Errors if the
    /// journal could not be written.
    pub(crate) fn wait_durable(self: &Arc<Self>) -> Result<(), CsiError> {
        let s = self.lock();
        let target = s.appended;
        self.wait_for(s, target)
    }

    /// Waits until every record up to `target` is durable: a leader/follower
    /// group commit. When no write is in progress the caller becomes the
    /// leader and writes everything pending in one synchronous write (its
    /// own record and those of the callers that queued theirs meanwhile);
    /// otherwise it sleeps until the write in progress ends, then looks
    /// again. So one write is on its way to the disk at a time, the records
    /// reach the disk in sequence order, and a batch costs one wakeup of its
    /// waiters, with no thread hand-off to write it.
    fn wait_for<'a>(
        self: &'a Arc<Self>,
        mut s: MutexGuard<'a, Shared>,
        target: u64,
    ) -> Result<(), CsiError> {
        loop {
            if let Some(why) = &s.failed {
                return Err(failed(why));
            }
            if s.durable >= target {
                return Ok(());
            }
            if !s.flushing && !s.pending.is_empty() {
                let done;
                (s, done) = self.lead(s);
                if !done.is_empty() {
                    drop(s);
                    self.dispose_later(done);
                    s = self.lock();
                }
                continue;
            }
            s.sleeping += 1;
            s = self.durable_cv.wait(s).unwrap_or_else(|e| e.into_inner());
            s.sleeping -= 1;
        }
    }

    /// [`Journal::wait_durable`] for async callers: a follower waits without
    /// holding a thread, and a leader writes on its own (runtime) thread;
    /// the data that durable records stopped naming is left to the remover
    /// task ([`Journal::dispose_later`]). Callers are quick
    /// handlers that run on the runtime
    /// instead of the blocking pool, so that their answer needs no thread
    /// hand-off.
    pub(crate) async fn durable(self: &Arc<Self>) -> Result<(), CsiError> {
        let target = self.lock().appended;
        loop {
            // Registered before looking, so that a write ending in between
            // still wakes this caller.
            let notified = self.durable_notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                if let Some(why) = &s.failed {
                    return Err(failed(why));
                }
                if s.durable >= target {
                    return Ok(());
                }
                if !s.flushing && !s.pending.is_empty() {
                    let (s, done) = self.lead(s);
                    drop(s);
                    self.dispose_later(done);
                    continue;
                }
            }
            notified.await;
        }
    }

    /// Hands the data that durable records stopped naming to the remover
    /// task, which keeps the empty directories of mount volumes for reuse
    /// and removes the rest ([`Recycler::dispose`]), after the callers are
    /// answered: an acknowledged deletion is its durable record; what
    /// happens to the directory is no part of the answer. (A crash before
    /// the remover gets to it leaves data no record names, which the next
    /// start removes.) The task is started only when none is queued or
    /// running, and gathers for [`REMOVER_GATHER`] first, so that with
    /// callers one at a time it costs one thread wakeup per many
    /// deletions, not one per deletion. Without a runtime (a store used
    /// outside one), the caller disposes of the data itself.
    fn dispose_later(self: &Arc<Self>, done: Vec<Disposal>) {
        if done.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            for d in done {
                self.recycler.dispose(&d);
            }
            return;
        };
        let mut s = self.lock();
        s.to_remove.extend(done);
        if !s.removing {
            s.removing = true;
            drop(s);
            let journal = Arc::clone(self);
            runtime.spawn_blocking(move || {
                std::thread::sleep(REMOVER_GATHER);
                journal.remove_queued();
            });
        }
    }

    /// The remover task: removes the queued data until none is queued.
    fn remove_queued(&self) {
        loop {
            let paths = {
                let mut s = self.lock();
                if s.to_remove.is_empty() {
                    s.removing = false;
                    return;
                }
                std::mem::take(&mut s.to_remove)
            };
            for d in paths {
                self.recycler.dispose(&d);
            }
        }
    }

    /// Takes what is pending, up to and including the first record after
    /// which a snapshot is due, and reserves its place in the file.
    fn take_batch(s: &mut Shared, align: usize) -> Batch {
        let n = s
            .pending
            .iter()
            .position(|p| p.snapshot.is_some())
            .map_or(s.pending.len(), |i| i + 1);
        let mut bytes = s
            .spare
            .take()
            .unwrap_or_else(|| AlignedBuf::with_capacity(4 * MEM_ALIGN));
        bytes.clear();
        let mut batch = Batch {
            last: 0,
            offset: s.offset,
            bytes,
            new_data: NewData::default(),
            snapshot: None,
        };
        for p in s.pending.drain(..n) {
            batch.bytes.extend_from_slice(&p.bytes);
            batch.new_data.merge(p.new_data);
            batch.snapshot = p.snapshot;
            batch.last = p.seq;
        }
        pad_batch(&mut batch.bytes, align);
        s.offset += batch.bytes.len() as u64;
        batch
    }

    /// Writes a batch durably at its offset: directly, or through the page
    /// cache if the file system refused a direct write it had accepted to
    /// open (`EINVAL`: an alignment it did not report); the padded batch is
    /// as good a record there, and later batches go the same way.
    fn write_batch(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.align > 1 && !self.direct_refused.load(Relaxed) {
            match self.file.write_all_at(bytes, offset) {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    tracing::warn!(error = %e, "a direct write to the journal was refused; writing it through the page cache from now on");
                    self.direct_refused.store(true, Relaxed);
                }
                r => return r,
            }
        }
        self.plain.write_all_at(bytes, offset)
    }

    fn fail(&self, s: &mut Shared, e: std::io::Error) {
        tracing::error!(error = %e, "writing the state journal failed; refusing every call until restarted");
        s.failed = Some(e.to_string());
    }

    /// The leader's part: writes one batch with one synchronous write (the
    /// file is opened with `O_DSYNC`) without the lock; after a record that
    /// asks for a snapshot, saves the state and restarts the journal at
    /// offset 0 (every record before it is durable then: batches are
    /// written one at a time, in order). Then wakes the waiters and returns
    /// the data that durable records stopped naming, for the caller to
    /// remove.
    fn lead<'a>(
        &'a self,
        mut s: MutexGuard<'a, Shared>,
    ) -> (MutexGuard<'a, Shared>, Vec<Disposal>) {
        let mut batch = Self::take_batch(&mut s, self.align);
        s.flushing = true;
        drop(s);
        let result = (|| {
            // Data is renamed into place before the record naming it is
            // committed; the renames become durable here, before the
            // records do.
            for &(top, shard) in &batch.new_data.dirs {
                fsync_dir(&self.layout.shard_dir(top, shard))?;
            }
            self.write_batch(batch.bytes.as_slice(), batch.offset)
        })();
        let mut s = self.lock();
        s.spare = Some(batch.bytes);
        let mut done = Vec::new();
        match result {
            Ok(()) => {
                s.durable = batch.last;
                let durable = s.durable;
                let (now, later): (Vec<_>, Vec<_>) =
                    s.removals.drain(..).partition(|(seq, _)| *seq <= durable);
                s.removals = later;
                done = now.into_iter().map(|(_, p)| p).collect();
            }
            Err(e) => self.fail(&mut s, e),
        }
        if let Some(state) = batch.snapshot.take()
            && s.failed.is_none()
        {
            // Everything in the journal is in the snapshot once it is
            // saved; the records written from offset 0 on then have higher
            // sequence numbers than any left behind them. The callers of
            // this batch are answered once it is saved.
            drop(s);
            let saved = write_snapshot(&self.layout, &state)
                .and_then(|()| self.preallocate(journal_size_for(state.objects(), self.align)));
            s = self.lock();
            match saved {
                Ok(()) => s.offset = 0,
                Err(e) => self.fail(&mut s, e),
            }
        }
        s.flushing = false;
        if s.sleeping > 0 {
            self.durable_cv.notify_all();
        }
        self.durable_notify.notify_waiters();
        (s, done)
    }
}

impl Journal {
    /// Grows the journal file to `size` bytes of zeros written (not a
    /// sparse extension, whose first write would allocate blocks and change
    /// metadata), if it is shorter. Only the leader calls it, after a
    /// snapshot and before the journal restarts at offset 0: what it
    /// appends lies past every record.
    fn preallocate(&self, size: u64) -> std::io::Result<()> {
        let mut len = self.plain.metadata()?.len();
        if len >= size {
            return Ok(());
        }
        let from = len;
        let zeros = vec![0; 1 << 20];
        while len < size {
            let n = (size - len).min(zeros.len() as u64);
            self.plain.write_all_at(&zeros[..n as usize], len)?;
            len += n;
        }
        drop_cached(&self.plain, from);
        Ok(())
    }

    /// Opens the journal for its records' writes: with `O_DIRECT | O_DSYNC`
    /// where the file system takes direct I/O, and the unit such a write
    /// must be a multiple of (`STATX_DIOALIGN`'s offset alignment, 4096 if
    /// the kernel does not say); else `None`, and the records are written
    /// through the page cache with `O_DSYNC` (1: no padding).
    ///
    /// Why direct: a synchronous buffered write copies the record into the
    /// page cache, then writes the page back and waits; a direct one sends
    /// the caller's (aligned) buffer to the disk. On this project's test
    /// machine (ext4, 512-byte sectors) the kernel's CPU per durable write
    /// went down by about a third (see the README's throughput section).
    fn open_direct(path: &Path) -> Option<(fs::File, usize)> {
        use rustix::fs::{AtFlags, CWD, OFlags, StatxFlags};
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags((OFlags::DSYNC | OFlags::DIRECT).bits() as i32)
            .open(path)
            .inspect_err(|e| {
                tracing::info!(path = %path.display(), error = %e, "the journal's file system takes no direct I/O; writing it through the page cache");
            })
            .ok()?;
        let align = rustix::fs::statx(CWD, path, AtFlags::empty(), StatxFlags::DIOALIGN)
            .ok()
            .filter(|st| {
                StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::DIOALIGN)
                    && st.stx_dio_offset_align > 0
                    && st.stx_dio_mem_align as usize <= MEM_ALIGN
            })
            .map_or(4096, |st| st.stx_dio_offset_align as usize);
        if !align.is_power_of_two() || align > 1 << 16 {
            return None;
        }
        Some((file, align))
    }
}

/// Drops the journal's pages from `from` on out of the page cache (they
/// are written, clean): a direct write over a cached page must first look
/// it up and invalidate it.
fn drop_cached(file: &fs::File, from: u64) {
    let _ = rustix::fs::fadvise(file, from, None, rustix::fs::Advice::DontNeed);
}

fn failed(why: &str) -> CsiError {
    CsiError::internal(format!(
        "the driver could not save its state ({why}); restart it to reload what was saved"
    ))
}

/// Saves the whole state to `state.json` atomically and durably.
fn write_snapshot(layout: &Layout, state: &State) -> std::io::Result<()> {
    let tmp = layout.state_tmp();
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, layout.state_file())?;
    fsync_dir(&layout.root)
}

/// Data that durable records stopped naming, on its way to the remover
/// task ([`Journal::dispose_later`]).
#[derive(Clone, Debug)]
pub(crate) struct Disposal {
    pub path: PathBuf,
    /// Whether its directory may be kept for a new volume: only that of a
    /// volume never staged or published ([`Recycler`]).
    pub reusable: bool,
}

impl Disposal {
    /// Data that is removed, never given to another volume.
    pub fn remove(path: PathBuf) -> Disposal {
        Disposal {
            path,
            reusable: false,
        }
    }

    /// The data of a volume never staged or published: its directory is
    /// kept for a new volume if it is as new.
    pub fn recycle(path: PathBuf) -> Disposal {
        Disposal {
            path,
            reusable: true,
        }
    }
}

/// The most empty directories a [`Recycler`] keeps.
const RECYCLE_MAX: usize = 1024;

/// How long the remover task waits, once started, for more data to
/// dispose of before it starts ([`Journal::dispose_later`]).
const REMOVER_GATHER: Duration = Duration::from_millis(10);

/// Keeps the empty directories of deleted mount volumes in `STATE/free/`
/// and gives them to new mount volumes, instead of a `rmdir` then a
/// `mkdir`. On this machine's ext4 (no file-system journal) each `mkdir`
/// scans past every inode deleted in the last minutes before it finds one
/// to reuse, so with volumes created and deleted at thousands per second
/// `mkdir` and `rmdir` were the driver's two costliest calls, and the cost
/// grew with how many volumes had been deleted recently.
///
/// Only the directory of a volume that was never staged or published
/// ([`VolumeRec::never_staged`]) may be kept: no process but the driver
/// ever reached it (`volumes/` and its shards are mode 0700, and no mount
/// of it was ever made), so no descriptor opened into it, nor a mount of
/// it left behind, can reach the next volume that gets it. The directory
/// of a volume that was handed to a node is removed, and a process that
/// still holds it open holds a deleted, empty directory where nothing can
/// be created. Of the others, a directory is kept only if it is as a new
/// one is: empty, no subdirectory, mode 0777, the owner and group of
/// `volumes/`, no extended attribute (no ACL, no security label); anything
/// else is removed as before. A kept directory
/// is not named by any record; one moved into `volumes/` is named only
/// once the record is durable, like a new directory (a crash before leaves
/// it unnamed and the next start removes it), and `free/` is emptied at
/// every start. The check and the move into `free/` (mode 0700) are the
/// remover task's work, after the deletion was answered
/// ([`Journal::dispose_later`]); a creation's is one `rename` out of it.
pub(crate) struct Recycler {
    volumes: PathBuf,
    /// The owner and group of `volumes/` (those of a new directory), if
    /// they could be read; nothing is kept otherwise.
    owner: Option<(u32, u32)>,
    free_dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next: std::sync::atomic::AtomicU64,
}

impl Recycler {
    fn new(layout: &Layout) -> Recycler {
        use std::os::unix::fs::MetadataExt;
        Recycler {
            owner: fs::metadata(layout.volumes_dir())
                .ok()
                .map(|m| (m.uid(), m.gid())),
            volumes: layout.volumes_dir(),
            free_dir: layout.free_dir(),
            free: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn free(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves a kept empty directory to `path` (a new mount volume's data,
    /// which no record names yet); false if none is kept or the move
    /// failed, and the caller makes the directory.
    pub(crate) fn reuse(&self, path: &Path) -> bool {
        let Some(dir) = self.free().pop() else {
            return false;
        };
        match fs::rename(&dir, path) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "could not reuse an empty directory");
                remove_data(&dir);
                false
            }
        }
    }

    /// Removes data that durable records stopped naming, keeping the
    /// directory of a mount volume if it may be reused and is as new
    /// ([`Recycler`]).
    pub(crate) fn dispose(&self, d: &Disposal) {
        if !(d.reusable && self.keep(&d.path)) {
            remove_data(&d.path);
        }
    }

    /// Keeps the directory at `path` (data no durable record names) for
    /// reuse if it is a mount volume's directory as new: true if it was
    /// moved into `free/`. Costs a bounded number of metadata calls and
    /// removes nothing, whatever `path` holds; false leaves `path` as it was.
    pub(crate) fn keep(&self, path: &Path) -> bool {
        if path.parent().and_then(Path::parent) == Some(self.volumes.as_path())
            && self.free().len() < RECYCLE_MAX
            && self.as_new(path)
        {
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let kept = self.free_dir.join(n.to_string());
            // The list is held across the move, so that `free/` and the list
            // agree for anyone who takes the list: a creation that starts
            // once the directory is in `free/` finds it listed. It delays
            // such a creation by one `rename` at most.
            let mut free = self.free();
            if fs::rename(path, &kept).is_ok() {
                free.push(kept);
                return true;
            }
        }
        false
    }

    /// Whether the directory at `path` is as a new volume's directory is.
    /// Four to six system calls: `statx`, `llistxattr`, then the listing
    /// read straight from the directory (`open`, `getdents64` until it
    /// ends, `close`; no `fstat` or buffer allocation as with
    /// `std::fs::read_dir`).
    fn as_new(&self, path: &Path) -> bool {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};
        let Some(owner) = self.owner else {
            return false;
        };
        let Ok(st) = rustix::fs::statx(
            CWD,
            path,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::TYPE
                | StatxFlags::MODE
                | StatxFlags::NLINK
                | StatxFlags::UID
                | StatxFlags::GID,
        ) else {
            return false;
        };
        let is_dir = u32::from(st.stx_mode) & 0o170000 == 0o040000;
        if !(is_dir
            && st.stx_nlink == 2
            && u32::from(st.stx_mode) & 0o7777 == 0o777
            && (st.stx_uid, st.stx_gid) == owner
            && rustix::fs::llistxattr_query(path) == Ok(0))
        {
            return false;
        }
        let Ok(dir) = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return false;
        };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut entries = rustix::fs::RawDir::new(&dir, &mut buf);
        while let Some(entry) = entries.next() {
            match entry {
                Ok(e) if matches!(e.file_name().to_bytes(), b"." | b"..") => {}
                _ => return false,
            }
        }
        true
    }
}

/// Removes data whose metadata is already gone; a failure only leaves
/// garbage that the next start removes.
pub(crate) fn remove_data(path: &Path) {
    // Most deleted volumes are empty directories: one `rmdir`, with no
    // stat, open or listing, unless the directory holds something.
    let r = match fs::remove_dir(path) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error()) => {
            fs::remove_dir_all(path)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            fs::remove_file(path)
        }
        r => r,
    };
    if let Err(e) = r
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove data; it will be removed at the next start");
    }
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
        layout.make_shards()?;
        layout.restrict_data()?;
        // Directories kept for reuse by the run before are not named by any
        // record: they go. They were empty when kept, so each is removed
        // with `rmdir` only: one that is not empty (a file system repaired
        // after a crash could link a volume's directory there too) is left
        // alone and reported.
        let free = layout.free_dir();
        // Only the driver's user may reach what is kept there: a kept
        // directory is world-writable (as a new volume's is), and nothing
        // may be put into it between its check and its reuse.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::create_dir_all(&free)
                .and_then(|()| fs::set_permissions(&free, fs::Permissions::from_mode(0o700)))
                .map_err(|e| format!("creating {}: {e}", free.display()))?;
        }
        let entries =
            fs::read_dir(&free).map_err(|e| format!("listing {}: {e}", free.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(e) = fs::remove_dir(&path) {
                tracing::warn!(path = %path.display(), error = %e, "a directory kept for reuse could not be removed; it is left as it is");
            }
        }
        let _ = fs::remove_file(layout.state_tmp());
        let file = layout.state_file();
        let mut state = match fs::read(&file) {
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
        let jpath = layout.journal_file();
        let ctx = |e: std::io::Error| format!("opening {}: {e}", jpath.display());
        let jfile = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(rustix::fs::OFlags::DSYNC.bits() as i32)
            .open(&jpath)
            .map_err(ctx)?;
        let direct = Journal::open_direct(&jpath);
        let align = direct.as_ref().map_or(1, |(_, align)| *align);
        let mut bytes = Vec::new();
        (&jfile).read_to_end(&mut bytes).map_err(ctx)?;
        // The records after the snapshot, in order; the journal's first
        // gap, torn or corrupt record, or a record of an older round (a
        // lower sequence number, left behind when the journal restarted at
        // offset 0) ends them: whatever follows was never acknowledged.
        let mut replayed = 0;
        for rec in read_journal(&bytes) {
            if rec.seq <= state.journal_seq {
                continue;
            }
            if rec.seq != state.journal_seq + 1 {
                break;
            }
            state.apply(rec);
            replayed += 1;
        }
        state.reindex();
        let size = (bytes.len() as u64).max(journal_size_for(state.objects(), align));
        if bytes.len() as u64 != size || bytes.iter().any(|&b| b != 0) {
            // Start from a clean slate: the state as replayed saved whole,
            // then the journal zeroed, so no record of this run can be
            // confused with one left from before the crash.
            tracing::info!(
                replayed,
                "journal replayed; saving the state and clearing the journal"
            );
            let reset = || -> std::io::Result<()> {
                write_snapshot(&layout, &state)?;
                jfile.write_all_at(&vec![0; size as usize], 0)?;
                jfile.sync_all()?;
                fsync_dir(&layout.root)
            };
            reset().map_err(ctx)?;
        }
        drop_cached(&jfile, 0);
        let (file, plain) = match direct {
            Some((direct, _)) => (direct, jfile),
            None => (jfile.try_clone().map_err(ctx)?, jfile),
        };
        let seq = state.journal_seq;
        let journal = Arc::new(Journal {
            shared: Mutex::new(Shared {
                appended: seq,
                durable: seq,
                snapshot_seq: seq,
                ..Shared::default()
            }),
            durable_cv: Condvar::new(),
            durable_notify: tokio::sync::Notify::new(),
            file,
            plain,
            align,
            direct_refused: std::sync::atomic::AtomicBool::new(false),
            recycler: Recycler::new(&layout),
            layout: layout.clone(),
        });
        let store = Store {
            layout: layout.clone(),
            state,
            reserved: 0,
            journal: journal.clone(),
        };
        store.move_flat_data_into_shards()?;
        store.collect_garbage()?;
        store.undo_unacknowledged_growth()?;
        store.make_lost_empty_data()?;
        Ok(store)
    }

    /// The journal, for waiting until commits are durable.
    pub fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }
    /// The data the state names: (top directory, file name) for every
    /// volume and snapshot.
    fn named_data(&self) -> Vec<(Top, String, String)> {
        let vols = self
            .state
            .volumes
            .iter()
            .map(|(id, v)| (Top::Volumes, id.to_string(), data_name(id, v.block)));
        let snaps = self
            .state
            .snapshots
            .iter()
            .map(|(id, s)| (Top::Snapshots, id.clone(), data_name(id, s.block)));
        vols.chain(snaps).collect()
    }

    /// A state directory of a version that kept every object's data directly
    /// in `volumes/` and `snapshots/` (no shards) is read as it is: the
    /// data the state names there is renamed into its shard (one `rename`
    /// per object, atomic: a crash in the middle leaves each object in one
    /// place or the other, and the next start moves the rest), then the
    /// directories are fsynced. Data found in both places is refused, as
    /// the driver never makes that, rather than guess which to drop.
    fn move_flat_data_into_shards(&self) -> Result<(), String> {
        let mut touched: Vec<PathBuf> = Vec::new();
        for (top, id, name) in self.named_data() {
            let flat = self.layout.top_dir(top).join(&name);
            if fs::symlink_metadata(&flat).is_err() {
                continue;
            }
            let sharded = self.layout.shard_dir(top, shard_of(&id)).join(&name);
            if fs::symlink_metadata(&sharded).is_ok() {
                return Err(format!(
                    "{} and {} both hold the data of {id}; move one of them away",
                    flat.display(),
                    sharded.display()
                ));
            }
            fs::rename(&flat, &sharded)
                .map_err(|e| format!("moving {} to {}: {e}", flat.display(), sharded.display()))?;
            for dir in [
                self.layout.top_dir(top),
                self.layout.shard_dir(top, shard_of(&id)),
            ] {
                if !touched.contains(&dir) {
                    touched.push(dir);
                }
            }
        }
        if !touched.is_empty() {
            tracing::info!(
                directories = touched.len(),
                "moved the data of a state directory without shards into its shards"
            );
        }
        for dir in touched {
            fsync_dir(&dir).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Removes entries of `volumes/` and `snapshots/` (and of their shards)
    /// that the state does not name.
    fn collect_garbage(&self) -> Result<(), String> {
        let keep: std::collections::HashSet<PathBuf> = self
            .named_data()
            .into_iter()
            .map(|(top, id, name)| self.layout.shard_dir(top, shard_of(&id)).join(name))
            .collect();
        let remove = |entry: fs::DirEntry| -> Result<(), String> {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing data no volume or snapshot names (left by an interrupted operation)");
            let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(|e| format!("removing {}: {e}", path.display()))
        };
        let list =
            |dir: &Path| fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()));
        for top in [Top::Volumes, Top::Snapshots] {
            for entry in list(&self.layout.top_dir(top))?.flatten() {
                let is_shard = entry.file_name().to_str().is_some_and(is_shard_name)
                    && entry.file_type().is_ok_and(|t| t.is_dir());
                if !is_shard {
                    // Named data was moved into its shard: what is left at
                    // the top is garbage (temporary names of a version
                    // without shards).
                    remove(entry)?;
                    continue;
                }
                for inner in list(&entry.path())?.flatten() {
                    if !keep.contains(&inner.path()) {
                        remove(inner)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A volume created empty (no content source) is saved without making
    /// its new entry in `volumes/` durable first (that costs a second disk
    /// flush per CreateVolume); if a crash lost the entry, the data is made
    /// again here: an empty directory, or a sparse image of the volume's
    /// size, which is what the volume held when it was acknowledged. A
    /// workload can write into a volume only after NodeStageVolume, which
    /// makes the entry durable first.
    fn make_lost_empty_data(&self) -> Result<(), String> {
        let mut made: Vec<PathBuf> = Vec::new();
        for (id, v) in self
            .state
            .volumes
            .iter()
            .filter(|(_, v)| v.source.is_none())
        {
            let path = self.layout.volume_path(id, v.block);
            if fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            tracing::info!(volume_id = %id, "making again the empty data of a volume whose creation a crash left unsynced");
            let make = || -> std::io::Result<()> {
                if v.block {
                    let f = fs::File::create_new(&path)?;
                    f.set_len(v.capacity)?;
                    f.sync_all()
                } else {
                    use std::os::unix::fs::PermissionsExt;
                    fs::create_dir(&path)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                }
            };
            make().map_err(|e| format!("creating {}: {e}", path.display()))?;
            if let Some(dir) = path.parent().filter(|d| !made.iter().any(|m| m == d)) {
                made.push(dir.to_path_buf());
            }
        }
        for dir in made {
            fsync_dir(&dir).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
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

    /// Makes `next` the current state and queues the record of what changed
    /// for the journal. The change is durable once
    /// [`Journal::wait_durable`] returns, which the driver waits for before
    /// answering (after releasing the lock, so that concurrent callers share
    /// one `fdatasync`). Refused, with the state unchanged, if the journal
    /// failed earlier.
    pub fn commit(&mut self, mut next: State) -> Result<(), CsiError> {
        let changes = self.state.changes_to(&mut next);
        self.commit_changes(next, changes)
    }

    /// [`Store::commit`] of a `next` that differs from the current state in
    /// the volume `id` (added, changed or removed) and the id counter only:
    /// the change is found by two lookups instead of a diff of the tables,
    /// whose walk down to the first entry and along the changed path grew
    /// with the number of volumes (half of what a cycle of CreateVolume
    /// and DeleteVolume cost more with 10,000 volumes present). Debug
    /// builds check the promise against the diff.
    pub fn commit_volume(&mut self, mut next: State, id: &str) -> Result<(), CsiError> {
        #[cfg(debug_assertions)]
        let expected = self.state.changes_to(&mut next.clone()).0.changes;
        let changes = self.state.volume_changes_to(&mut next, id);
        #[cfg(debug_assertions)]
        assert_eq!(
            changes.0.changes, expected,
            "commit_volume({id}) of a state with other changes"
        );
        self.commit_changes(next, changes)
    }

    fn commit_changes(
        &mut self,
        mut next: State,
        (mut rec, new_data): (Record, NewData),
    ) -> Result<(), CsiError> {
        let mut shared = self.journal.lock();
        if let Some(why) = &shared.failed {
            return Err(failed(why));
        }
        if rec.changes.is_empty() && rec.next_id == self.state.next_id {
            self.state = next;
            return Ok(());
        }
        rec.seq = shared.appended + 1;
        next.journal_seq = rec.seq;
        let bytes = encode_record(&rec)?;
        shared.appended = rec.seq;
        // A snapshot costs time in proportion to the state's size, and
        // every caller waits while it is saved; taking one every
        // `SNAPSHOT_EVERY` records or every record per object, whichever is
        // rarer, keeps its cost per record independent of the number of
        // volumes (and a restart replays at most that many records).
        let objects = next.objects();
        let snapshot = (rec.seq - shared.snapshot_seq >= SNAPSHOT_EVERY.max(objects)).then(|| {
            shared.snapshot_seq = rec.seq;
            next.clone()
        });
        shared.pending.push(Pending {
            seq: rec.seq,
            bytes,
            new_data,
            snapshot,
        });
        drop(shared);
        self.state = next;
        Ok(())
    }

    /// Removes `path` (data the state no longer names) once the last commit
    /// is durable: were it removed before, a crash could bring back a
    /// record naming data that is gone. Never given to another volume.
    pub fn remove_when_durable(&mut self, path: PathBuf) {
        self.dispose_when_durable(Disposal::remove(path));
    }

    /// [`Store::remove_when_durable`] of a deleted volume that was never
    /// staged or published ([`VolumeRec::never_staged`]): its directory, if
    /// it is as new, is kept for a new volume ([`Recycler`]).
    pub fn recycle_when_durable(&mut self, path: PathBuf) {
        self.dispose_when_durable(Disposal::recycle(path));
    }

    fn dispose_when_durable(&mut self, d: Disposal) {
        let mut s = self.journal.lock();
        let seq = s.appended;
        if s.durable >= seq {
            drop(s);
            self.journal.dispose_later(vec![d]);
        } else {
            s.removals.push((seq, d));
        }
    }

    /// Records, durably, that the volume `id` is handed to a node, before
    /// it is: from then on its directory is never given to another volume
    /// ([`Recycler`]). Called before a volume's data is mounted, not with
    /// the record of the mount, which is saved after the mount: a crash in
    /// between would otherwise leave a mount of a directory that still
    /// counts as never staged. Waits for the journal with the store locked
    /// (one durable write, at a volume's first stage only); a no-op for a
    /// volume already marked, or one that does not exist.
    pub fn mark_staged(&mut self, id: &str) -> Result<(), CsiError> {
        if !self.state.volumes.get(id).is_some_and(|v| v.never_staged) {
            return Ok(());
        }
        let mut next = self.state.clone();
        if let Some(v) = next.volumes.get_mut(id).map(Arc::make_mut) {
            v.never_staged = false;
        }
        self.commit_volume(next, id)?;
        self.journal.wait_durable()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Records nobody waited for were never acknowledged; writing them
        // only spares the next start some replay.
        let _ = self.journal.wait_durable();
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_as_new_are_kept_for_reuse_and_a_start_drops_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layout = store.layout.clone();
        let recycler = &store.journal.recycler;
        let new_dir = |name: &str, mode: u32| {
            let p = layout.volume_path(name, false);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let free = || fs::read_dir(layout.free_dir()).unwrap().count();
        // Nothing kept yet: the caller makes the directory itself.
        assert!(!recycler.reuse(&layout.volume_path("vol-x", false)));

        let as_new = new_dir("vol-a", 0o777);
        recycler.dispose(&Disposal::recycle(as_new.clone()));
        assert!(!as_new.exists());
        assert_eq!(free(), 1);
        // The directory of a volume handed to a node is removed, even as new.
        let staged = new_dir("vol-s", 0o777);
        recycler.dispose(&Disposal::remove(staged.clone()));
        assert!(!staged.exists());
        assert_eq!(free(), 1);

        // Content, a subdirectory, another mode or an extended attribute
        // (when the file system takes user attributes): removed, not kept.
        let with_file = new_dir("vol-b", 0o777);
        fs::write(with_file.join("f"), b"data").unwrap();
        let with_subdir = new_dir("vol-c", 0o777);
        fs::create_dir(with_subdir.join("d")).unwrap();
        let other_mode = new_dir("vol-d", 0o755);
        let with_xattr = new_dir("vol-e", 0o777);
        let xattr = rustix::fs::setxattr(
            &with_xattr,
            "user.label",
            b"x",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        for p in [&with_file, &with_subdir, &other_mode, &with_xattr] {
            recycler.dispose(&Disposal::recycle(p.to_path_buf()));
            assert!(!p.exists(), "{} removed", p.display());
        }
        assert_eq!(free(), if xattr { 1 } else { 2 });
        // An image file is removed.
        let img = layout.volume_path("vol-f", true);
        fs::write(&img, b"").unwrap();
        recycler.dispose(&Disposal::recycle(img.clone()));
        assert!(!img.exists());

        // A new volume takes a kept directory.
        let target = layout.volume_path("vol-g", false);
        assert!(recycler.reuse(&target));
        assert!(target.is_dir());
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o777
        );
        assert_eq!(free(), if xattr { 0 } else { 1 });

        // What is kept when the driver stops is not named by any record:
        // the next start drops it (and vol-g, which no record names either).
        recycler.dispose(&Disposal::recycle(target.clone()));
        assert_eq!(free(), if xattr { 1 } else { 2 });
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(free(), 0);
        assert!(!store.journal.recycler.reuse(&target));
        assert!(data_names(&layout, Top::Volumes).is_empty());

        // Something not empty there was never kept by the driver: a start
        // leaves it as it is rather than delete data.
        drop(store);
        let odd = layout.free_dir().join("0");
        fs::create_dir(&odd).unwrap();
        fs::write(odd.join("f"), b"data").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(fs::read(odd.join("f")).unwrap(), b"data");
        // A directory kept under the same name is removed instead.
        let as_new = new_dir("vol-h", 0o777);
        store
            .journal
            .recycler
            .dispose(&Disposal::recycle(as_new.clone()));
        assert!(!as_new.exists());
        assert_eq!(fs::read(odd.join("f")).unwrap(), b"data");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleted_data_is_disposed_of_after_the_answer_by_the_remover_task() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layout = store.layout.clone();
        let journal = Arc::clone(&store.journal);
        let free = || fs::read_dir(layout.free_dir()).unwrap().count();
        assert_eq!(
            fs::metadata(layout.free_dir())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let mut done = Vec::new();
        // A directory with data first: not kept, and `keep` leaves it whole.
        let with_file = layout.volume_path("vol-data", false);
        fs::create_dir(&with_file).unwrap();
        fs::write(with_file.join("f"), b"data").unwrap();
        assert!(!journal.recycler.keep(&with_file));
        assert_eq!(fs::read(with_file.join("f")).unwrap(), b"data");
        done.push(with_file.clone());
        for i in 0..6 {
            let p = layout.volume_path(&format!("vol-{i}"), false);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
            done.push(p);
        }
        journal.dispose_later(done.iter().cloned().map(Disposal::recycle).collect());
        // The caller (a leader about to answer) touched none of them.
        assert!(journal.lock().removing);
        assert!(done.iter().all(|p| p.exists()));
        // A second batch joins the task already started.
        let late = layout.volume_path("vol-late", false);
        fs::create_dir(&late).unwrap();
        fs::set_permissions(&late, fs::Permissions::from_mode(0o777)).unwrap();
        journal.dispose_later(vec![Disposal::recycle(late.clone())]);
        done.push(late);
        // The remover task keeps the empty ones and removes the data.
        while journal.lock().removing {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(done.iter().all(|p| !p.exists()));
        assert_eq!(free(), 7);
        assert!(journal.lock().to_remove.is_empty());
    }

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
            never_staged: true,
        }
    }

    #[test]
    fn commit_persists_and_reopen_collects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let id = next.new_id("vol");
        next.volumes.insert(id.as_str().into(), Arc::new(rec("a")));
        fs::create_dir(store.layout.volume_path(&id, false)).unwrap();
        store.commit(next).unwrap();
        store.journal().wait_durable().unwrap();
        // Leftovers of a cut-short operation.
        fs::create_dir(Layout::tmp_for(
            &store.layout.volume_path("vol-000000000009", false),
        ))
        .unwrap();
        fs::write(store.layout.snapshot_path("snap-000000000007", true), b"x").unwrap();
        // And of a version without shards, at the top.
        fs::create_dir(store.layout.volumes_dir().join(".tmp-vol-000000000008")).unwrap();
        fs::write(
            store.layout.snapshots_dir().join("snap-000000000006.img"),
            b"x",
        )
        .unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.state, store.state);
        assert_eq!(
            data_names(&reopened.layout, Top::Volumes),
            vec![reopened.layout.volume_path(&id, false)]
        );
        assert!(data_names(&reopened.layout, Top::Snapshots).is_empty());
    }

    #[test]
    fn the_mark_of_a_staged_volume_is_durable_and_survives_a_crash_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let (staged, fresh) = (next.new_id("vol"), next.new_id("vol"));
        next.volumes
            .insert(staged.as_str().into(), Arc::new(rec("staged")));
        next.volumes
            .insert(fresh.as_str().into(), Arc::new(rec("fresh")));
        store.commit(next).unwrap();
        store.mark_staged(&staged).unwrap();
        // Durable when `mark_staged` returns, with nobody else waiting:
        // the store is forgotten, as a killed process's would be, and the
        // journal replayed at the next open.
        let s = store.journal.lock();
        assert_eq!(s.durable, s.appended);
        drop(s);
        assert!(!store.state.volumes[staged.as_str()].never_staged);
        std::mem::forget(store);
        let mut store = Store::open(dir.path()).unwrap();
        assert!(!store.state.volumes[staged.as_str()].never_staged);
        assert!(store.state.volumes[fresh.as_str()].never_staged);
        // Marking again writes nothing.
        let appended = store.journal.lock().appended;
        store.mark_staged(&staged).unwrap();
        store.mark_staged("vol-000000000099").unwrap();
        assert_eq!(store.journal.lock().appended, appended);
        // And from the snapshot the replay saved.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.state.volumes[staged.as_str()].never_staged);
        // A record of a version without the field may have been staged.
        let old = serde_json::to_value(rec("old")).unwrap();
        let mut old = old.as_object().unwrap().clone();
        old.remove("never_staged").unwrap();
        let old: VolumeRec = serde_json::from_value(old.into()).unwrap();
        assert!(!old.never_staged);
    }

    #[test]
    fn volumes_snapshots_and_their_shards_are_reachable_by_the_driver_s_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = Store::open(dir.path()).unwrap().layout.clone();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // A state directory of an earlier version, open to all: restricted
        // at the next start.
        for shard in 0..SHARDS {
            let p = layout.volume_shard_dir(&format!("vol-{shard}"));
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(layout.volumes_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(layout.snapshots_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(
            layout.shard_dir(Top::Snapshots, 7),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let _store = Store::open(dir.path()).unwrap();
        for top in [Top::Volumes, Top::Snapshots] {
            assert_eq!(mode(&layout.top_dir(top)), 0o700);
            for shard in 0..SHARDS {
                assert_eq!(mode(&layout.shard_dir(top, shard as u8)), 0o700);
            }
        }
    }

    /// The window the remover task opens: a deletion acknowledged (its
    /// record durable) and the driver killed before the remover got to the
    /// directory, and a creation whose record is durable but whose kept
    /// directory never reached its place. The next start removes the one and
    /// makes the other again, empty.
    #[test]
    fn a_crash_before_the_remover_leaves_nothing_a_restart_does_not_settle() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let (gone, made) = (next.new_id("vol"), next.new_id("vol"));
        next.volumes
            .insert(gone.as_str().into(), Arc::new(rec("gone")));
        let gone_path = store.layout.volume_path(&gone, false);
        fs::create_dir(&gone_path).unwrap();
        fs::write(gone_path.join("f"), b"data").unwrap();
        store.commit(next).unwrap();
        let mut next = store.state.clone();
        next.volumes.remove(gone.as_str());
        store.commit_volume(next, &gone).unwrap();
        let mut next = store.state.clone();
        next.volumes
            .insert(made.as_str().into(), Arc::new(rec("made")));
        store.commit_volume(next, &made).unwrap();
        // Durable, and the deleted directory never handed to the remover
        // (no `remove_when_durable`): the driver died first. The store is
        // forgotten, not dropped, as a killed process's would be.
        store.journal().wait_durable().unwrap();
        let layout = store.layout.clone();
        std::mem::forget(store);
        assert!(gone_path.join("f").exists());
        let store = Store::open(dir.path()).unwrap();
        assert!(store.state.volumes.get(gone.as_str()).is_none());
        assert!(!gone_path.exists(), "the deleted volume's data is removed");
        let made_path = layout.volume_path(&made, false);
        assert!(made_path.is_dir(), "the created volume's directory is made");
        assert_eq!(fs::read_dir(&made_path).unwrap().count(), 0);
        assert_eq!(
            data_names(&layout, Top::Volumes),
            vec![made_path],
            "nothing else in volumes/"
        );
    }

    #[test]
    fn ids_spread_over_the_shards_and_the_shard_of_an_id_never_changes() {
        // Part of the on-disk format: a change would lose every object.
        assert_eq!(shard_name(shard_of("vol-000000000001")), "57");
        assert_eq!(shard_name(shard_of("snap-000000000002")), "17");
        assert_eq!(shard_name(shard_of("vol-000000000010")), "80");
        let layout = Layout {
            root: PathBuf::from("/s"),
        };
        assert_eq!(
            layout.volume_path("vol-000000000001", true),
            Path::new("/s/volumes/57/vol-000000000001.img")
        );
        assert_eq!(
            volume_data_path(Path::new("/s"), "vol-000000000001", false),
            Path::new("/s/volumes/57/vol-000000000001")
        );
        assert_eq!(
            layout.snapshot_path("snap-000000000002", false),
            Path::new("/s/snapshots/17/snap-000000000002")
        );
        // Ids given out in sequence fill every shard about evenly.
        let mut count = [0usize; SHARDS];
        for n in 1..=10_000u64 {
            count[shard_of(&format!("vol-{n:012}")) as usize] += 1;
        }
        assert!(
            count.iter().all(|&c| (20..=60).contains(&c)),
            "from {:?} to {:?} per shard",
            count.iter().min(),
            count.iter().max()
        );
        for shard in 0..=255u8 {
            assert!(is_shard_name(&shard_name(shard)));
        }
        for name in ["vol-1", "a", "0g", "AB", "abc", ".tmp-ab"] {
            assert!(!is_shard_name(name), "{name}");
        }
    }

    /// Takes every object's data out of its shard to the top of `volumes/`
    /// or `snapshots/` and removes the shards: the layout of the version
    /// before shards (whose `state.json` and journal had the same format).
    fn unshard(layout: &Layout) {
        for top in [Top::Volumes, Top::Snapshots] {
            for shard in 0..SHARDS {
                let dir = layout.shard_dir(top, shard as u8);
                for e in fs::read_dir(&dir).unwrap() {
                    let e = e.unwrap();
                    fs::rename(e.path(), layout.top_dir(top).join(e.file_name())).unwrap();
                }
                fs::remove_dir(&dir).unwrap();
            }
        }
    }

    #[test]
    fn a_state_directory_without_shards_loads_and_its_data_moves_into_the_shards() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A state directory as the version before shards wrote it: its
        // snapshot file (written by hand, in that version's format) and
        // the data at the top of `volumes/` and `snapshots/`.
        let created = r#"{"secs":1765000000,"nanos":5}"#;
        let state = format!(
            r#"{{"version":1,"next_id":5,"journal_seq":0,
            "volumes":{{
              "vol-000000000001":{{"name":"a","capacity":4096,"block":false,"caps":[{{"block":false,"mode":"SingleNodeWriter"}}],"created":{created}}},
              "vol-000000000002":{{"name":"b","capacity":8192,"block":true,"caps":[],"created":{created}}},
              "vol-000000000004":{{"name":"lost","capacity":4096,"block":false,"caps":[],"created":{created}}}}},
            "snapshots":{{"snap-000000000003":{{"name":"s","source_volume":"vol-000000000002","size":8192,"block":true,"created":{created}}}}},
            "groups":{{}},"staged":{{}},"published":{{}}}}"#
        );
        fs::write(root.join("state.json"), state).unwrap();
        for d in ["volumes", "snapshots"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        fs::create_dir(root.join("volumes/vol-000000000001")).unwrap();
        fs::write(root.join("volumes/vol-000000000001/f"), b"data of a").unwrap();
        fs::write(root.join("volumes/vol-000000000002.img"), vec![7; 8192]).unwrap();
        fs::write(root.join("snapshots/snap-000000000003.img"), vec![9; 8192]).unwrap();
        // Leftovers of that version's interrupted operations.
        fs::create_dir(root.join("volumes/.tmp-vol-000000000009")).unwrap();
        fs::write(root.join("volumes/vol-000000000008.img"), b"x").unwrap();

        let mut store = Store::open(root).unwrap();
        let layout = store.layout.clone();
        assert_eq!(store.state.volumes.len(), 3);
        assert_eq!(store.state.used(), 4096 + 8192 + 4096 + 8192);
        let (a, b, lost, s) = (
            layout.volume_path("vol-000000000001", false),
            layout.volume_path("vol-000000000002", true),
            layout.volume_path("vol-000000000004", false),
            layout.snapshot_path("snap-000000000003", true),
        );
        assert_eq!(fs::read(a.join("f")).unwrap(), b"data of a");
        assert_eq!(fs::read(&b).unwrap(), vec![7; 8192]);
        assert_eq!(fs::read(&s).unwrap(), vec![9; 8192]);
        // An empty volume whose data a crash lost is made again, in its shard.
        assert!(lost.is_dir());
        let mut expected = vec![a.clone(), b.clone(), lost.clone()];
        expected.sort();
        assert_eq!(data_names(&layout, Top::Volumes), expected);
        assert_eq!(data_names(&layout, Top::Snapshots), vec![s.clone()]);

        // The driver goes on in the new layout, and a restart finds it.
        let mut next = store.state.clone();
        next.volumes.remove("vol-000000000004");
        let id = next.new_id("vol");
        next.volumes.insert(id.as_str().into(), Arc::new(rec("c")));
        fs::create_dir(layout.volume_path(&id, false)).unwrap();
        store.commit(next).unwrap();
        store.journal().wait_durable().unwrap();
        store.remove_when_durable(lost.clone());
        let expected = store.state.clone();
        drop(store);
        let store = Store::open(root).unwrap();
        assert_eq!(store.state, expected);
        assert!(!lost.exists());
        assert!(layout.volume_path(&id, false).is_dir());
        assert_eq!(fs::read(a.join("f")).unwrap(), b"data of a");
    }

    #[test]
    fn a_move_into_the_shards_cut_short_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
        let ids = churn(&mut store, &names, &[]);
        store.journal().wait_durable().unwrap();
        let layout = store.layout.clone();
        for id in &ids {
            let p = layout.volume_path(id, false);
            fs::create_dir(&p).unwrap();
            fs::write(p.join("f"), id.as_bytes()).unwrap();
        }
        let expected = store.state.clone();
        drop(store);
        // Half of the objects still at the top, as a crash in the middle
        // of the first start after an upgrade leaves them (the shards exist).
        unshard(&layout);
        Store::open(dir.path()).unwrap();
        for id in &ids[10..] {
            let p = layout.volume_path(id, false);
            fs::rename(&p, layout.volumes_dir().join(id)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state, expected);
        for id in &ids {
            let p = layout.volume_path(id, false);
            assert_eq!(fs::read(p.join("f")).unwrap(), id.as_bytes());
        }
        assert_eq!(data_names(&layout, Top::Volumes).len(), ids.len());

        // The same object in both places is never made by the driver: the
        // start is refused with both paths named, and nothing is removed.
        drop(store);
        let both = layout.volumes_dir().join(&ids[0]);
        fs::create_dir(&both).unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.contains("both hold the data of"), "{err}");
        assert!(err.contains(&both.display().to_string()), "{err}");
        assert!(both.is_dir());
        assert!(layout.volume_path(&ids[0], false).join("f").exists());
    }

    /// Every entry under `volumes/` or `snapshots/` but the shard
    /// directories themselves (which all exist), sorted.
    fn data_names(layout: &Layout, top: Top) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut shards = 0;
        for e in fs::read_dir(layout.top_dir(top)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if is_shard_name(&name) && e.file_type().unwrap().is_dir() {
                shards += 1;
                out.extend(fs::read_dir(e.path()).unwrap().map(|i| i.unwrap().path()));
            } else {
                out.push(e.path());
            }
        }
        assert_eq!(shards, SHARDS);
        out.sort();
        out
    }

    #[test]
    fn empty_data_a_crash_lost_is_made_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let (mount, block) = (next.new_id("vol"), next.new_id("vol"));
        next.volumes
            .insert(mount.as_str().into(), Arc::new(rec("m")));
        next.volumes.insert(
            block.as_str().into(),
            Arc::new(VolumeRec {
                block: true,
                capacity: 1 << 20,
                ..rec("b")
            }),
        );
        store.commit(next).unwrap();
        store.journal().wait_durable().unwrap();
        drop(store);
        // The records are durable, the directory entries were not.
        let reopened = Store::open(dir.path()).unwrap();
        let dir_meta = fs::metadata(reopened.layout.volume_path(&mount, false)).unwrap();
        assert!(dir_meta.is_dir());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(dir_meta.permissions().mode() & 0o777, 0o777);
        let img = fs::metadata(reopened.layout.volume_path(&block, true)).unwrap();
        assert_eq!(img.len(), 1 << 20);
    }

    #[test]
    fn an_unacknowledged_growth_is_undone_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let id = next.new_id("vol");
        next.volumes.insert(
            id.as_str().into(),
            Arc::new(VolumeRec {
                block: true,
                ..rec("b")
            }),
        );
        let img = store.layout.volume_path(&id, true);
        fs::File::create(&img).unwrap().set_len(4096).unwrap();
        store.commit(next).unwrap();
        store.journal().wait_durable().unwrap();
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
    fn access_modes_are_stored_under_fixed_names_that_older_state_files_hold() {
        // The names state files have held since the first format (then written as
        // `AccessMode`'s Debug output), one per mode in wire order.
        let names = [
            "SingleNodeWriter",
            "SingleNodeReaderOnly",
            "MultiNodeReaderOnly",
            "MultiNodeSingleWriter",
            "MultiNodeMultiWriter",
            "SingleNodeSingleWriter",
            "SingleNodeMultiWriter",
        ];
        for (mode, name) in AccessMode::ALL.into_iter().zip(names) {
            let json = format!(r#"{{"block":true,"mode":"{name}"}}"#);
            let rec: CapRec = serde_json::from_str(&json).unwrap();
            assert_eq!(AccessMode::from(rec.mode), mode, "{name}");
            assert_eq!(
                serde_json::to_value(CapRec::from_cap(&VolumeCapability::block(mode))).unwrap()["mode"],
                name
            );
        }
        // A name no mode has is refused by the parser, not read as some default mode.
        let bad = serde_json::from_str::<CapRec>(r#"{"block":true,"mode":"SingleNodeWritr"}"#);
        assert!(bad.is_err());
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

    /// Creates volumes `names` (one commit each) and deletes `delete`.
    fn churn(store: &mut Store, names: &[String], delete: &[usize]) -> Vec<String> {
        let mut ids = Vec::new();
        for n in names {
            let mut next = store.state.clone();
            let id = next.new_id("vol");
            next.volumes.insert(id.as_str().into(), Arc::new(rec(n)));
            store.commit(next).unwrap();
            ids.push(id);
        }
        for &i in delete {
            let mut next = store.state.clone();
            next.volumes.remove(ids[i].as_str());
            store.commit(next).unwrap();
        }
        ids
    }

    /// The byte ranges of the records at the start of a journal file
    /// (padding frames left out).
    fn frames(journal: &Path) -> Vec<std::ops::Range<usize>> {
        let bytes = fs::read(journal).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            match bytes.get(at + 8..at + 8 + len) {
                Some(payload) if len > 0 && crc32fast::hash(payload) == crc => {
                    if payload.iter().any(|&b| b != 0) {
                        out.push(at..at + 8 + len);
                    }
                }
                _ => return out,
            }
            at += 8 + len;
        }
    }

    fn overwrite(journal: &Path, at: usize, bytes: &[u8]) {
        fs::OpenOptions::new()
            .write(true)
            .open(journal)
            .unwrap()
            .write_all_at(bytes, at as u64)
            .unwrap();
    }

    #[test]
    fn the_journal_replays_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
        churn(&mut store, &names, &[3, 7, 49]);
        store.journal().wait_durable().unwrap();
        let expected = store.state.clone();
        assert_eq!(expected.volumes.len(), 47);
        assert_eq!(expected.used(), 47 * 4096);
        assert!(expected.volume_by_name("v3").is_none());
        assert!(expected.volume_by_name("v4").is_some());
        let align = store.journal.align;
        drop(store);
        // A crash in the middle of a write leaves a partial record (at the
        // next batch's offset, after the last one's padding).
        let journal = dir.path().join("journal");
        let frames = frames(&journal);
        assert_eq!(frames.len(), 53, "one record per change");
        let end = frames.last().unwrap().end.next_multiple_of(align);
        overwrite(&journal, end, &[200, 0, 0, 0, 1, 2, 3, 4, b'{']);
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state, expected);
        // The replayed state was saved and the journal cleared.
        let bytes = fs::read(&journal).unwrap();
        assert_eq!(bytes.len() as u64, journal_size_for(0, store.journal.align));
        assert!(bytes.iter().all(|&b| b == 0));
        // Writes continue after the restart.
        churn(&mut store, &["after".to_string()], &[]);
        store.journal().wait_durable().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.state.volume_by_name("after").is_some());
        assert_eq!(store.state.volumes.len(), 48);
    }

    fn volume_record(seq: u64) -> Record {
        Record {
            seq,
            next_id: seq + 1,
            changes: vec![Change::Volume(
                format!("vol-{seq}").into(),
                Some(Arc::new(rec(&format!("v{seq}")))),
            )],
        }
    }

    #[test]
    fn padded_batches_replay_whatever_unit_they_were_padded_to() {
        let recs: Vec<Record> = (1..=5).map(volume_record).collect();
        // The same records as journals written without direct I/O (no
        // padding) and with write units of 512 and 4096 bytes, a batch of
        // two records among single ones; the reader needs no unit.
        for align in [1, 512, 4096] {
            let mut buf = AlignedBuf::with_capacity(0);
            let mut starts = Vec::new();
            for batch in [&recs[0..1], &recs[1..3], &recs[3..4], &recs[4..5]] {
                starts.push(buf.len());
                for r in batch {
                    buf.extend_from_slice(&encode_record(r).unwrap());
                }
                pad_batch(&mut buf, align);
                assert_eq!(buf.len() % align, 0);
                assert_eq!(buf.as_slice().as_ptr() as usize % MEM_ALIGN, 0);
            }
            let mut bytes = buf.as_slice().to_vec();
            bytes.extend_from_slice(&[0; 4096]);
            assert_eq!(read_journal(&bytes), recs, "padded to {align}");
            // A torn last batch (its first bytes written, the rest still
            // zeros) ends the replay before it.
            let mut torn = bytes.clone();
            torn[starts[3] + 20..].fill(0);
            assert_eq!(read_journal(&torn), recs[..4], "padded to {align}");
            // A batch whose records were written whole but not its padding
            // replays (unacknowledged, but complete: as if the crash came
            // right after the write).
            let mut torn = bytes.clone();
            let last = encode_record(&recs[4]).unwrap().len();
            torn[starts[3] + last + 2..].fill(0);
            assert_eq!(read_journal(&torn), recs, "padded to {align}");
        }
        // Room for less than a frame header before the boundary (or for a
        // header alone, which would read as the end): the padding runs to
        // the boundary after it.
        for (len, padded) in [(508, 1024), (504, 1024), (503, 512), (512, 512)] {
            let mut buf = AlignedBuf::with_capacity(0);
            buf.extend_zeros(len);
            pad_batch(&mut buf, 512);
            assert_eq!(buf.len(), padded, "{len} bytes");
        }
        // The buffer keeps its alignment as it grows.
        let mut buf = AlignedBuf::with_capacity(0);
        for _ in 0..100 {
            buf.extend_from_slice(&[7; 1000]);
            assert_eq!(buf.as_slice().as_ptr() as usize % MEM_ALIGN, 0);
        }
        assert!(buf.as_slice().iter().all(|&b| b == 7));
        assert_eq!(buf.len(), 100_000);
    }

    #[test]
    fn a_volume_commit_records_what_a_full_diff_would() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..40 {
            let mut next = store.state.clone();
            let id = next.new_id("vol");
            next.volumes
                .insert(id.as_str().into(), Arc::new(rec(&format!("v{i}"))));
            // Checked against the diff in this (debug) build.
            store.commit_volume(next, &id).unwrap();
            ids.push(id);
        }
        for id in ids.iter().step_by(3) {
            let mut next = store.state.clone();
            next.volumes.remove(id.as_str());
            store.commit_volume(next, id).unwrap();
        }
        // Nothing changed: nothing recorded.
        let seq = store.journal.lock().appended;
        store.commit_volume(store.state.clone(), &ids[1]).unwrap();
        assert_eq!(store.journal.lock().appended, seq);
        store.journal().wait_durable().unwrap();
        let expected = store.state.clone();
        assert_eq!(expected.volumes.len(), 26);
        assert!(expected.volume_by_name("v0").is_none());
        assert_eq!(expected.volume_by_name("v1").unwrap().0, ids[1]);
        assert_eq!(expected.used(), 26 * 4096);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state, expected);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "of a state with other changes")]
    fn a_volume_commit_with_other_changes_is_caught_in_debug_builds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut next = store.state.clone();
        let a = next.new_id("vol");
        let b = next.new_id("vol");
        next.volumes.insert(a.as_str().into(), Arc::new(rec("a")));
        next.volumes.insert(b.as_str().into(), Arc::new(rec("b")));
        let _ = store.commit_volume(next, &a);
    }

    /// A closed store whose journal holds three creations, and the journal.
    fn three_volumes_saved() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
        churn(&mut store, &names, &[]);
        store.journal().wait_durable().unwrap();
        drop(store);
        let journal = dir.path().join("journal");
        (dir, journal)
    }

    #[test]
    fn a_corrupt_record_ends_the_replay() {
        let (dir, journal) = three_volumes_saved();
        let last = frames(&journal)[2].end - 2;
        let byte = fs::read(&journal).unwrap()[last];
        overwrite(&journal, last, &[byte ^ 0x55]);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.state.volumes.len(),
            2,
            "the damaged last record is dropped"
        );
    }

    /// Committers write batches concurrently, so a crash can leave a later
    /// record on disk and an earlier one not; the later one was never
    /// acknowledged (its callers wait for every record before it).
    #[test]
    fn a_record_after_a_gap_is_not_replayed() {
        let (dir, journal) = three_volumes_saved();
        let second = frames(&journal)[1].clone();
        overwrite(&journal, second.start, &vec![0; second.len()]);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.state.volume_by_name("v0").is_some());
        assert_eq!(store.state.volumes.len(), 1, "v2 came after the gap");
        // Nothing of the old journal survives the reset to be replayed later.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state.volumes.len(), 1);
    }

    #[test]
    fn the_journal_grows_with_the_state_so_a_round_fits_in_its_preallocation() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let mut store = Store::open(dir.path()).unwrap();
        let align = store.journal.align;
        let n = SNAPSHOT_EVERY as usize + 904;
        let names: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        let mut ids = churn(&mut store, &names, &[]);
        store.journal().wait_durable().unwrap();
        // A snapshot at SNAPSHOT_EVERY records, of as many objects: the
        // journal keeps its first size.
        assert_eq!(
            fs::metadata(&journal).unwrap().len(),
            journal_size_for(0, align)
        );
        // With more objects than that, the next snapshot comes one record
        // per object later, and the leader grows the file after it.
        let mut seq = store.state.journal_seq;
        let mut i = 0;
        while store.state.journal_seq < seq + n as u64 {
            let mut next = store.state.clone();
            next.volumes.remove(ids[i].as_str());
            let id = next.new_id("vol");
            next.volumes
                .insert(id.as_str().into(), Arc::new(rec(&format!("w{i}"))));
            store.commit(next).unwrap();
            ids.push(id);
            i += 1;
        }
        store.journal().wait_durable().unwrap();
        let objects = store.state.volumes.len() as u64;
        assert_eq!(objects, n as u64);
        assert_eq!(
            fs::metadata(&journal).unwrap().len(),
            journal_size_for(objects, align)
        );
        let expected = store.state.clone();
        drop(store);
        // A start sizes it from the state too (here: already so), and
        // replays through the grown file.
        seq = expected.journal_seq;
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state, expected);
        assert_eq!(store.state.journal_seq, seq);
        assert_eq!(
            fs::metadata(&journal).unwrap().len(),
            journal_size_for(objects, align)
        );
        // A journal shorter than the state needs (a version that did not
        // grow it) is made long enough at start.
        drop(store);
        fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap()
            .set_len(journal_size_for(0, align))
            .unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state, expected);
        let bytes = fs::read(&journal).unwrap();
        assert_eq!(bytes.len() as u64, journal_size_for(objects, align));
        assert!(bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn snapshots_restart_the_journal_and_keep_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let n = SNAPSHOT_EVERY as usize + 10;
        let names: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        churn(&mut store, &names, &[0, n - 1]);
        store.journal().wait_durable().unwrap();
        let expected = store.state.clone();
        drop(store);
        let saved: State =
            serde_json::from_slice(&fs::read(dir.path().join("state.json")).unwrap()).unwrap();
        assert_eq!(saved.journal_seq, SNAPSHOT_EVERY);
        // The journal restarted at offset 0 with the records after the
        // snapshot; records of the previous round follow them.
        let journal = dir.path().join("journal");
        let bytes = fs::read(&journal).unwrap();
        let first = &frames(&journal)[0];
        let rec: Record = serde_json::from_slice(&bytes[first.start + 8..first.end]).unwrap();
        assert_eq!(rec.seq, SNAPSHOT_EVERY + 1);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state, expected);
        assert_eq!(store.state.volumes.len(), n - 2);
        assert!(store.state.volume_by_name("v0").is_none());
        assert!(store.state.volume_by_name("v1").is_some());
    }
}
