//! Durable state: the records of volumes (their layout, drives, slices and
//! publications) and the operator's health marks, behind the [`Store`] trait.
//!
//! The records are the single source of truth: the placement engine's and the
//! slice allocator's state are rebuilt from them on start-up, so there is no
//! second copy that could disagree after a crash. Every change is one
//! [`Batch`], applied atomically and durably before [`Store::commit`]
//! returns; a batch may carry the revision it expects
//! ([`Batch::expect_revision`]) so that a replicated, transactional backend
//! (etcd-style compare-and-swap) fits behind the same trait.
//!
//! [`RedbStore`] is the embedded default: one `redb` file, a write
//! transaction with `Durability::Immediate` (fsync) per group of batches.
//! [`MemStore`] keeps everything in memory, for tests and simulations.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::inventory::{Health, Transport};

/// How a volume's members are assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// One whole drive.
    Single,
    /// An md RAID1 of two whole drives.
    Raid1,
    /// An md RAID10 (near 2) of whole drives; members pair up as (0,1), (2,3), ….
    Raid10,
    /// An md RAID0 of whole drives.
    Raid0,
    /// One SSD slice.
    Slice,
    /// An md RAID1 of two SSD slices.
    SliceMirror,
}

impl LayoutKind {
    /// The name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Single => "single",
            LayoutKind::Raid1 => "raid1",
            LayoutKind::Raid10 => "raid10",
            LayoutKind::Raid0 => "raid0",
            LayoutKind::Slice => "slice",
            LayoutKind::SliceMirror => "slice-mirror",
        }
    }

    /// Whether the members are slices.
    pub fn is_slice(self) -> bool {
        matches!(self, LayoutKind::Slice | LayoutKind::SliceMirror)
    }
}

/// The layout of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutRecord {
    /// Assembly.
    pub kind: LayoutKind,
    /// md chunk in 512-byte sectors (0 without md or for RAID1).
    pub chunk_sectors: u64,
    /// md v1.2 data offset in sectors (0 without md).
    pub data_offset_sectors: u64,
    /// Bytes each member occupies on its drive.
    pub member_bytes: u64,
    /// Bytes the assembled device holds.
    pub usable_bytes: u64,
}

/// One member of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Drive id.
    pub drive: String,
    /// Byte offset on the drive (slices; 0 for whole drives).
    pub offset: u64,
    /// Bytes on the drive.
    pub len: u64,
}

/// A volume as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// CSI volume id.
    pub id: String,
    /// CSI volume name (idempotency key).
    pub name: String,
    /// StorageClass parameters as given.
    pub parameters: BTreeMap<String, String>,
    /// `capacity_range.required_bytes` of the create.
    pub required_bytes: Option<u64>,
    /// `capacity_range.limit_bytes` of the create.
    pub limit_bytes: Option<u64>,
    /// Capacity reported to CSI.
    pub capacity: u64,
    /// Layout.
    pub layout: LayoutRecord,
    /// Members in md member order.
    pub members: Vec<MemberRecord>,
    /// The placement request the members were chosen under (repairs reuse it).
    pub request: placement::Request,
    /// Site id.
    pub site: String,
    /// Transport the drives are exported over.
    pub transport: Transport,
    /// Whether created for block access.
    pub block: bool,
    /// Whether its access mode allows one node only.
    pub single_node: bool,
    /// Published nodes and whether read-only.
    pub published: BTreeMap<String, bool>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace a volume.
    PutVolume(Box<VolumeRecord>),
    /// Remove a volume (by id); removing a missing one is not an error.
    DeleteVolume(String),
    /// Mark a drive, enclosure or server (by id) with a health state.
    PutMark {
        /// Drive, enclosure or server id.
        target: String,
        /// The state.
        health: Health,
    },
    /// Remove a mark.
    DeleteMark(String),
    /// Raise the next volume sequence number to at least this (never lowers it,
    /// so batches applied out of order cannot hand out an id twice).
    NextSeq(u64),
}

/// Changes applied together, atomically and durably.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Apply only if the store is at this revision (`None`: unconditionally).
    /// A backend shared by several controllers uses it for compare-and-swap.
    pub expect_revision: Option<u64>,
    /// The store revision that the state this batch was planned on reflects
    /// (everything up to it, nothing after). A store shared by several
    /// controllers refuses the batch with `Conflict` when a key it touches
    /// changed after that revision by another writer ([`Store::changes`]).
    pub read_revision: Option<u64>,
    /// The changes, in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An unconditional batch.
    pub fn of(ops: Vec<Op>) -> Batch {
        Batch {
            expect_revision: None,
            read_revision: None,
            ops,
        }
    }

    /// A batch planned on the state as of `revision` (see [`Batch::read_revision`]).
    pub fn read_at(revision: u64, ops: Vec<Op>) -> Batch {
        Batch {
            expect_revision: None,
            read_revision: Some(revision),
            ops,
        }
    }
}

/// Everything a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Revision: the number of batches applied.
    pub revision: u64,
    /// Volumes by id.
    pub volumes: BTreeMap<String, VolumeRecord>,
    /// Health marks by target id.
    pub marks: BTreeMap<String, Health>,
    /// Next volume sequence number.
    pub next_seq: u64,
}

impl StoredState {
    fn apply(&mut self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::PutVolume(v) => {
                    self.volumes.insert(v.id.clone(), *v);
                }
                Op::DeleteVolume(id) => {
                    self.volumes.remove(&id);
                }
                Op::PutMark { target, health } => {
                    self.marks.insert(target, health);
                }
                Op::DeleteMark(t) => {
                    self.marks.remove(&t);
                }
                Op::NextSeq(n) => self.next_seq = self.next_seq.max(n),
            }
        }
        self.revision += 1;
    }
}

/// What changed in a shared store, in revision order, as seen by
/// [`Store::changes`]: the controller applies it to its in-memory state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The revision everything up to which is now included.
    pub revision: u64,
    /// Volumes put (`Some`) or deleted (`None`), by id, with the revision
    /// of the change, in order.
    pub volumes: Vec<(String, u64, Option<VolumeRecord>)>,
    /// Marks put (`Some`) or deleted (`None`), by target, in order.
    pub marks: Vec<(String, Option<Health>)>,
    /// The next volume sequence number, when it changed.
    pub next_seq: Option<u64>,
}

/// Durable storage of the composer's state.
///
/// Contract: [`Store::commit`] returns only once the batch is durable (it
/// survives a crash of the process or the machine at any later instant), and
/// a batch is applied entirely or not at all. Batches committed from several
/// threads are applied in some order, each atomically; an implementation
/// may group them into one durable write.
pub trait Store: Send + Sync {
    /// Everything stored.
    fn load(&self) -> Result<StoredState, Error>;

    /// Applies a batch durably and returns the new revision. `Conflict` when
    /// `expect_revision` is set and differs from the current revision.
    fn commit(&self, batch: Batch) -> Result<u64, Error>;

    /// Changes committed since the revision of [`Store::load`] or of the
    /// previous call, by anyone (this controller's own included), or `None`
    /// when nothing changed. A store with one writer has none to report.
    fn changes(&self) -> Result<Option<Changes>, Error> {
        Ok(None)
    }

    /// Blocks until [`Store::changes`] would report everything committed
    /// before the last `Conflict` this store returned (after a conflict the
    /// caller catches up, then plans again on fresh state).
    fn catch_up(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Whether the store can serve now: a shared store answers
    /// `Unavailable` while it cannot follow the other writers' changes.
    fn ready(&self) -> Result<(), Error> {
        Ok(())
    }
}

const _: () = {
    fn _object_safe(_: &dyn Store) {}
};

/// A store in memory (not durable), for tests and simulations.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<StoredState>,
}

impl Store for MemStore {
    fn load(&self) -> Result<StoredState, Error> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn commit(&self, batch: Batch) -> Result<u64, Error> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        check_revision(&batch, s.revision)?;
        s.apply(batch.ops);
        Ok(s.revision)
    }
}

fn check_revision(batch: &Batch, current: u64) -> Result<(), Error> {
    match batch.expect_revision {
        Some(r) if r != current => Err(Error::Conflict(format!(
            "batch expects revision {r}, the store is at {current}"
        ))),
        _ => Ok(()),
    }
}

const VOLUMES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("volumes");
const MARKS: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("marks");
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");

type Reply = mpsc::SyncSender<Result<u64, Error>>;

/// The embedded default: a `redb` database file. Commits from many threads
/// are grouped: one writer thread takes every batch waiting, applies them in
/// one write transaction and makes it durable with one fsync, then answers
/// each caller.
pub struct RedbStore {
    db: std::sync::Arc<redb::Database>,
    tx: Mutex<Option<mpsc::Sender<(Batch, Reply)>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Stops the writer thread (after the batches already sent) so that the
    /// database file is closed when this returns.
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn store_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Store(format!("{what}: {e}"))
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, Error> {
        let db = redb::Database::create(path).map_err(|e| {
            // redb's own words name neither the rule nor what to do.
            let why = match &e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another process has this state open (one composer serves a redb state; \
                     replicas that share their state use etcd)"
                        .to_string()
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::InvalidData =>
                {
                    format!("not a composer state file (a redb database): {e}")
                }
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
                    format!("not a composer state file (a redb database), or a damaged one: {e}")
                }
                _ => e.to_string(),
            };
            Error::Store(format!("opening {}: {why}", path.display()))
        })?;
        {
            let w = db.begin_write().map_err(|e| store_err("begin")(&e))?;
            w.open_table(VOLUMES)
                .map_err(|e| store_err("volumes table")(&e))?;
            w.open_table(MARKS)
                .map_err(|e| store_err("marks table")(&e))?;
            w.open_table(META)
                .map_err(|e| store_err("meta table")(&e))?;
            w.commit().map_err(|e| store_err("commit")(&e))?;
        }
        let db = std::sync::Arc::new(db);
        let (tx, rx) = mpsc::channel::<(Batch, Reply)>();
        let writer = db.clone();
        let handle = std::thread::Builder::new()
            .name("composer-store".into())
            .spawn(move || writer_loop(&writer, rx))
            .map_err(|e| Error::Store(format!("starting the writer thread: {e}")))?;
        Ok(RedbStore {
            db,
            tx: Mutex::new(Some(tx)),
            writer: Some(handle),
        })
    }
}

fn writer_loop(db: &redb::Database, rx: mpsc::Receiver<(Batch, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        let results = write_group(db, &group);
        match results {
            Ok(revs) => {
                for ((_, reply), r) in group.into_iter().zip(revs) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn write_group(
    db: &redb::Database,
    group: &[(Batch, Reply)],
) -> Result<Vec<Result<u64, Error>>, Error> {
    use redb::ReadableTable;
    let w = db.begin_write().map_err(|e| store_err("begin")(&e))?;
    let mut out = Vec::with_capacity(group.len());
    {
        let mut vols = w
            .open_table(VOLUMES)
            .map_err(|e| store_err("volumes table")(&e))?;
        let mut marks = w
            .open_table(MARKS)
            .map_err(|e| store_err("marks table")(&e))?;
        let mut meta = w
            .open_table(META)
            .map_err(|e| store_err("meta table")(&e))?;
        let mut revision = meta
            .get("revision")
            .map_err(|e| store_err("read revision")(&e))?
            .map(|g| g.value())
            .unwrap_or(0);
        for (batch, _) in group {
            if let Err(e) = check_revision(batch, revision) {
                out.push(Err(e));
                continue;
            }
            for op in &batch.ops {
                match op {
                    Op::PutVolume(v) => {
                        let bytes = serde_json::to_vec(v).map_err(|e| store_err("encode")(&e))?;
                        vols.insert(v.id.as_str(), bytes.as_slice())
                            .map_err(|e| store_err("insert volume")(&e))?;
                    }
                    Op::DeleteVolume(id) => {
                        vols.remove(id.as_str())
                            .map_err(|e| store_err("remove volume")(&e))?;
                    }
                    Op::PutMark { target, health } => {
                        let h =
                            serde_json::to_string(health).map_err(|e| store_err("encode")(&e))?;
                        marks
                            .insert(target.as_str(), h.as_str())
                            .map_err(|e| store_err("insert mark")(&e))?;
                    }
                    Op::DeleteMark(t) => {
                        marks
                            .remove(t.as_str())
                            .map_err(|e| store_err("remove mark")(&e))?;
                    }
                    Op::NextSeq(n) => {
                        let cur = meta
                            .get("next_seq")
                            .map_err(|e| store_err("read next_seq")(&e))?
                            .map(|g| g.value())
                            .unwrap_or(0);
                        meta.insert("next_seq", cur.max(*n))
                            .map_err(|e| store_err("next_seq")(&e))?;
                    }
                }
            }
            revision += 1;
            out.push(Ok(revision));
        }
        meta.insert("revision", revision)
            .map_err(|e| store_err("revision")(&e))?;
    }
    w.commit().map_err(|e| store_err("commit")(&e))?;
    Ok(out)
}

/// Decodes `(key, JSON)` volume records, in key order, over the machine's
/// cores; the first unreadable record (in key order) is the error.
fn decode_parallel(raw: &[(String, Vec<u8>)]) -> Result<BTreeMap<String, VolumeRecord>, Error> {
    let decode = |part: &[(String, Vec<u8>)]| -> Result<Vec<(String, VolumeRecord)>, Error> {
        part.iter()
            .map(|(k, v)| {
                serde_json::from_slice::<VolumeRecord>(v)
                    .map(|r| (r.id.clone(), r))
                    .map_err(|e| Error::Store(format!("volume record {k:?} is not readable: {e}")))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts: Vec<Result<Vec<(String, VolumeRecord)>, Error>> = if threads < 2 || raw.len() < 1024
    {
        vec![decode(raw)]
    } else {
        let chunk = raw.len().div_ceil(threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = raw
                .chunks(chunk)
                .map(|c| sc.spawn(move || decode(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Internal("a decoding thread panicked".into()))
                    })
                })
                .collect()
        })
    };
    let mut out = Vec::with_capacity(raw.len());
    for p in parts {
        out.extend(p?);
    }
    // Keys are record ids, so `out` is sorted: the map is built in bulk.
    Ok(out.into_iter().collect())
}

impl Store for RedbStore {
    fn load(&self) -> Result<StoredState, Error> {
        use redb::{ReadableDatabase, ReadableTable};
        let r = self
            .db
            .begin_read()
            .map_err(|e| store_err("begin read")(&e))?;
        let mut s = StoredState::default();
        let meta = r
            .open_table(META)
            .map_err(|e| store_err("meta table")(&e))?;
        let get = |k: &str| -> Result<u64, Error> {
            Ok(meta
                .get(k)
                .map_err(|e| store_err("read meta")(&e))?
                .map(|g| g.value())
                .unwrap_or(0))
        };
        s.revision = get("revision")?;
        s.next_seq = get("next_seq")?;
        let vols = r
            .open_table(VOLUMES)
            .map_err(|e| store_err("volumes table")(&e))?;
        // One pass over the table copies the encoded records out; decoding,
        // most of a restart's reading time, then runs on every core.
        let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
        for item in vols.iter().map_err(|e| store_err("scan volumes")(&e))? {
            let (k, v) = item.map_err(|e| store_err("scan volumes")(&e))?;
            raw.push((k.value().to_string(), v.value().to_vec()));
        }
        s.volumes = decode_parallel(&raw)?;
        let marks = r
            .open_table(MARKS)
            .map_err(|e| store_err("marks table")(&e))?;
        for item in marks.iter().map_err(|e| store_err("scan marks")(&e))? {
            let (k, v) = item.map_err(|e| store_err("scan marks")(&e))?;
            let h: Health = serde_json::from_str(v.value())
                .map_err(|e| Error::Store(format!("mark {:?} is not readable: {e}", k.value())))?;
            s.marks.insert(k.value().to_string(), h);
        }
        Ok(s)
    }

    fn commit(&self, batch: Batch) -> Result<u64, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or_else(|| Error::Store("the store is closing".into()))?
            .send((batch, reply))
            .map_err(|_| Error::Store("the writer thread has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Store("the writer thread has stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(t: &str) -> Op {
        Op::PutMark {
            target: t.into(),
            health: Health::Failed,
        }
    }

    fn exercise(s: &dyn Store) {
        assert_eq!(
            s.commit(Batch::of(vec![mark("a"), Op::NextSeq(7)]))
                .unwrap(),
            1
        );
        let e = s
            .commit(Batch {
                expect_revision: Some(0),
                read_revision: None,
                ops: vec![mark("b")],
            })
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert_eq!(
            s.commit(Batch {
                expect_revision: Some(1),
                read_revision: None,
                ops: vec![Op::DeleteMark("a".into())],
            })
            .unwrap(),
            2
        );
        let st = s.load().unwrap();
        assert_eq!(st.revision, 2);
        assert_eq!(st.next_seq, 7);
        assert!(st.marks.is_empty());
    }

    /// A state already open elsewhere, or a file that is not a state,
    /// says so. Before, redb's words alone: "Database already open. Cannot
    /// acquire lock." and "I/O error: invalid data".
    #[test]
    fn redb_open_names_what_is_wrong_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let held = RedbStore::open(&path).unwrap();
        let e = RedbStore::open(&path).err().unwrap().to_string();
        assert!(
            e.ends_with("state.redb: another process has this state open (one composer serves a redb state; replicas that share their state use etcd)"),
            "{e}"
        );
        drop(held);
        RedbStore::open(&path).unwrap();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, "not a database, a file written by mistake\n").unwrap();
        let e = RedbStore::open(&junk).err().unwrap().to_string();
        assert!(
            e.contains("junk.redb: not a composer state file (a redb database)"),
            "{e}"
        );
        // The file is left as it was.
        assert_eq!(
            std::fs::read_to_string(&junk).unwrap(),
            "not a database, a file written by mistake\n"
        );
    }

    #[test]
    fn memory_and_redb_stores_agree_on_revisions() {
        exercise(&MemStore::default());
        let dir = tempfile::tempdir().unwrap();
        exercise(&RedbStore::open(&dir.path().join("state.redb")).unwrap());
    }

    #[test]
    fn redb_store_survives_reopening_and_groups_concurrent_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = std::sync::Arc::new(RedbStore::open(&path).unwrap());
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for j in 0..10 {
                            s.commit(Batch::of(vec![mark(&format!("t{i}-{j}"))]))
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let s = RedbStore::open(&path).unwrap();
        let st = s.load().unwrap();
        assert_eq!(st.marks.len(), 80);
        assert_eq!(st.revision, 80);
    }
}
