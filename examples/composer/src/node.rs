//! The node side of the composer, `userspace` backend: a staged volume is a
//! `raid-engine` volume over the drives' members, exposed through FUSE and a
//! loop device, formatted on first use and mounted on the staging path;
//! publishing bind-mounts it (read-only when asked) on the target.
//!
//! Drives are sparse files `<data_dir>/<drive id>.img`; a member is the byte
//! range of its drive the controller's plan gave it. A single drive or slice
//! (no md layout) keeps no metadata on its drive: the volume is exactly its
//! member range, byte for byte, so its usable bytes are the range's and a
//! slice grown in place shows its new size at the next stage. Locally it is
//! its range through a loop device with an offset and size limit; it cannot
//! be encrypted by the engine (no room for the engine's header: use
//! `encryptionFormat=luks`, else `FAILED_PRECONDITION`).
//!
//! A volume holds its bytes of each drive file while it is staged (the
//! engine's claims of its members; for a plain range behind a loop device,
//! a claim of the range the node keeps, taken again when a restarted node
//! process takes the device over): a volume whose bytes overlap them, in
//! this process or another, is refused with `FAILED_PRECONDITION` naming
//! the drive file, the range and the rule. A volume over NBD holds its
//! ranges of the agent's drives in this process the same way (the agent
//! holds them for every volume it exports to this server, and an NBD
//! device claims nothing): a second assembly of overlapping ranges in this
//! process is refused with `FAILED_PRECONDITION` naming the drive, the
//! range, the holder and the rule.
//!
//! A volume whose transport is `nbd` reaches its members over NBD instead,
//! from the JBOD agent named in the publish context, connecting from this
//! server's own address ([`crate::agent`]). A single drive or slice over
//! NBD is served through FUSE like the RAID layouts, by a one-member linear
//! engine volume whose superblock lives in this process's memory, in front
//! of the member range (`NodeLocalMeta`): nothing is written to the drive
//! but the volume's own bytes, and the engine is created afresh at every
//! stage (a linear volume has no bitmap or resync state to keep).
//!
//! Every loop device is attached with direct I/O (`--direct-io=on`, see
//! [`csi_node::AttachOptions`]): over the FUSE file the kernel then sends
//! several requests at once, which the engine's FUSE threads serve
//! concurrently; where the kernel refuses it, the device stays buffered and
//! the reason is logged.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use composer_core::store::{LayoutKind, VolumeRecord};

use crate::persist::{NodeState, StagedRecord};
use csi_node::{AttachOptions, LoopDevice, MountOptions};
use csi_types::{CsiError, types::VolumeCondition};
use raid_engine::fuse::FuseExposure;
use raid_engine::{
    BlockDevice, CacheMode, Claim, ClaimHolder, CreateOptions, FileDevice, MemberState, Progress,
    RebuildOptions, RoleCondition, Secret, SliceDevice, Volume as EngineVolume, VolumeLayout,
};
use storage_units::quote_path;

/// The node-stage secret that keys an `encrypt=true` volume.
pub const ENCRYPTION_SECRET: &str = "encryptionPassphrase";

/// Which implementation assembles volumes on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `raid-engine` in this process, FUSE + loop.
    Userspace,
    /// Linux md (`mdadm`).
    Mdadm,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "userspace" => Ok(Backend::Userspace),
            "mdadm" => Ok(Backend::Mdadm),
            _ => Err(format!("backend {s:?}: must be userspace or mdadm")),
        }
    }
}

/// Where the node keeps its drives and exposures.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Directory of the drive files (`<drive id>.img`).
    pub data_dir: PathBuf,
    /// Directory for FUSE mounts of staged volumes.
    pub run_dir: PathBuf,
    /// The assembling backend.
    pub backend: Backend,
}

/// Sectors of engine metadata (superblock at 4 KiB, no bitmap) a single
/// drive or slice over NBD keeps in memory in front of its member range.
/// (The engine checks that it holds the superblock and leaves the data
/// 4 KiB aligned.)
const NODE_LOCAL_META_SECTORS: u64 = 24;

/// How long `NodeUnstageVolume` waits for the kernel to let a loop device go before it closes
/// the file behind it.
const LOOP_DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes of [`NODE_LOCAL_META_SECTORS`].
const NODE_LOCAL_META_BYTES: u64 = NODE_LOCAL_META_SECTORS * 512;

/// A member range with the engine's metadata area in front of it kept in
/// this process's memory, not on the drive: the engine sees
/// `meta ++ member`, the drive holds only the volume's bytes.
#[derive(Debug)]
struct NodeLocalMeta {
    meta: Mutex<Vec<u8>>,
    data: SliceDevice,
}

impl NodeLocalMeta {
    fn new(data: SliceDevice) -> NodeLocalMeta {
        NodeLocalMeta {
            meta: Mutex::new(vec![0; NODE_LOCAL_META_BYTES as usize]),
            data,
        }
    }

    /// Splits an access at `offset` of `len` bytes: how many bytes fall in
    /// the memory area.
    fn split(&self, offset: u64, len: usize) -> io::Result<usize> {
        let meta = NODE_LOCAL_META_BYTES;
        match offset.checked_add(len as u64) {
            Some(end) if end <= meta + self.data.size() => {
                Ok(meta.saturating_sub(offset).min(len as u64) as usize)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: access beyond the member", self.data.describe()),
            )),
        }
    }
}

impl BlockDevice for NodeLocalMeta {
    fn size(&self) -> u64 {
        NODE_LOCAL_META_BYTES + self.data.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let head = self.split(offset, buf.len())?;
        let (m, d) = buf.split_at_mut(head);
        if head > 0 {
            let meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            m.copy_from_slice(&meta[offset as usize..offset as usize + head]);
        }
        if !d.is_empty() {
            let at = (offset + head as u64) - NODE_LOCAL_META_BYTES;
            self.data.read_at(d, at)?;
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let head = self.split(offset, buf.len())?;
        let (m, d) = buf.split_at(head);
        if head > 0 {
            let mut meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            meta[offset as usize..offset as usize + head].copy_from_slice(m);
        }
        if !d.is_empty() {
            let at = (offset + head as u64) - NODE_LOCAL_META_BYTES;
            self.data.write_at(d, at)?;
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.data.flush()
    }
    fn describe(&self) -> String {
        self.data.describe()
    }
    /// The member's bytes of the drive: the memory area in front is this
    /// process's own. (A range of this device claims all of them, the
    /// default of [`BlockDevice::claim_range`].)
    fn claim(&self, holder: &ClaimHolder) -> io::Result<Claim> {
        self.data.claim(holder)
    }
    /// The member's alignment, where the memory area in front keeps the
    /// member's blocks aligned in this device's offsets.
    fn alignment(&self) -> usize {
        let a = self.data.alignment();
        if NODE_LOCAL_META_BYTES.is_multiple_of(a.max(1) as u64) {
            a
        } else {
            1
        }
    }
}

/// Roles of a volume whose replacement has not been copied in full
/// ([`Staged::unsynced`]).
type Unsynced = std::collections::BTreeSet<usize>;

/// A staged volume.
struct Staged {
    staging: PathBuf,
    block: bool,
    drives: Vec<String>,
    volume: Option<Arc<EngineVolume>>,
    exposure: Option<FuseExposure>,
    loopdev: Option<LoopDevice>,
    fuse_dir: PathBuf,
    /// Rebuild in progress: (role, done, total).
    rebuilding: Option<(usize, u64, u64)>,
    /// Roles whose member was replaced (the record names the new drive)
    /// but whose copy has not finished: it failed part way, or was
    /// stopped. The engine keeps such a member as a spare out of sync;
    /// [`NodeSide::rebuild_to`] rebuilds it again though its drive is the
    /// record's. Filled at assembly too, from the roles the superblocks
    /// record as such a spare, so that a node process started after the
    /// copy failed still rebuilds them.
    unsynced: Unsynced,
    /// The dm-crypt mapping of an `encryptionFormat=luks` volume, on top of
    /// the loop device.
    luks: Option<LuksMapping>,
    /// Claims on the volume's bytes held while it is staged: a plain drive
    /// range's on its drive file ([`claim_plain`]); an engine volume's
    /// members reached over NBD, one per role ([`claim_remote`]; the
    /// engine's own claims of them claim nothing). Local members of an
    /// engine volume are claimed by the engine itself.
    claims: Vec<Claim>,
}

/// An open LUKS2 mapping `/dev/mapper/<name>` and the passphrase that
/// opened it (`cryptsetup resize` asks for it again at NodeExpandVolume).
struct LuksMapping {
    name: String,
    key: Vec<u8>,
}

impl Drop for LuksMapping {
    fn drop(&mut self) {
        self.key.iter_mut().for_each(|b| *b = 0);
    }
}

impl Staged {
    /// The device the volume is used through: its LUKS mapping, else its
    /// loop device.
    fn device(&self) -> Option<PathBuf> {
        match &self.luks {
            Some(m) => Some(Path::new("/dev/mapper").join(&m.name)),
            None => self.loopdev.as_ref().map(|l| l.path().to_path_buf()),
        }
    }
}

/// Why [`NodeSide::fail_drive`] stopped, and what it had changed by then.
#[derive(Debug)]
pub struct FailDriveError {
    /// What stopped it.
    pub error: CsiError,
    /// The volumes whose member on the drive this call failed before it
    /// stopped (empty: it changed nothing). They stay degraded: a failed
    /// member comes back only through a rebuild.
    pub failed: Vec<String>,
}

impl std::fmt::Display for FailDriveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if self.failed.is_empty() {
            write!(f, " (no member was failed)")
        } else {
            write!(
                f,
                " (its members in {} were failed before that and stay failed)",
                self.failed.join(", ")
            )
        }
    }
}

impl std::error::Error for FailDriveError {}

/// A staged volume with a member on a drive ([`NodeSide::fail_drive`]).
struct OnDrive {
    id: String,
    drives: Vec<String>,
    volume: Option<Arc<EngineVolume>>,
}

/// The node side's state: what is staged where.
pub struct NodeSide {
    cfg: NodeConfig,
    staged: Mutex<BTreeMap<String, Staged>>,
    /// Published targets: volume id and whether read-only.
    targets: Mutex<BTreeMap<PathBuf, (String, bool)>>,
    /// Per published target, what its publish bound there from (see
    /// [`NodeSide::unpublish_sources`]).
    bound: Mutex<BTreeMap<PathBuf, Vec<PathBuf>>>,
    /// Volumes an earlier node process staged whose stack is gone (an engine
    /// volume's FUSE died with that process): the next stage re-assembles
    /// them, an unstage cleans up what is left.
    recovered: Mutex<BTreeMap<String, StagedRecord>>,
    /// Per `nbd` volume: the JBOD agent (`host:port`) and this server's
    /// address to connect from.
    remote: Mutex<BTreeMap<String, (String, std::net::IpAddr)>>,
    /// Who this node side is in its claims of drive ranges over NBD
    /// ([`claim_remote`]), unique in the process.
    claim_id: u64,
    /// The volumes a call holds its [`Turn`] on ([`NodeSide::turn`]).
    busy: Mutex<std::collections::BTreeSet<String>>,
    /// Signalled when a [`Turn`] ends.
    freed: Condvar,
    /// The engine volumes whose rebuild ([`NodeSide::rebuild_to`]) runs,
    /// by volume id: [`NodeSide::shutdown`] stops them.
    rebuilds: Mutex<BTreeMap<String, Arc<EngineVolume>>>,
    /// Signalled when a rebuild ends.
    rebuild_ended: Condvar,
    /// Called at the named points of a call (`turn-wait` when a call waits
    /// for a volume's turn, `publish-bind` between a publish's claim of its
    /// target and its bind, `stage` in a stage's turn, `unstage` in an
    /// unstage's, before it takes the volume apart, `resize-encryption` in
    /// [`NodeSide::resize_encryption`], `rebuild` at each step of a
    /// rebuild's copy, outside the turn, `shutdown-interrupted` once
    /// [`NodeSide::shutdown`] has stopped the rebuilds), so that a test can
    /// start a second call there.
    #[cfg(test)]
    pub(crate) hook: Mutex<Option<TestHook>>,
}

/// A test's [`NodeSide::hook`]: the point and the volume id.
#[cfg(test)]
pub(crate) type TestHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A call's turn on one volume ([`NodeSide::turn`]): while it is held, no
/// other stage, unstage or agent record of that volume runs on this node
/// side, so that one call's undo of what it recorded never lands over what
/// another committed. Other volumes are not held up.
pub(crate) struct Turn<'a> {
    side: &'a NodeSide,
    id: String,
}

impl Turn<'_> {
    /// [`NodeSide::record_remote`] of the volume, in this turn: the record
    /// cannot outlive the turn.
    pub(crate) fn record_remote(
        &self,
        agent: &str,
        source: std::net::IpAddr,
    ) -> Result<RemoteRecorded<'_>, CsiError> {
        self.side.record_remote(&self.id, agent, source)
    }

    /// [`NodeSide::stage`] of the volume, in this turn.
    pub(crate) fn stage(
        &self,
        rec: &VolumeRecord,
        staging: &Path,
        block: bool,
        fs_type: csi_node::FsType,
        mount_flags: &[String],
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), CsiError> {
        if rec.id != self.id {
            return Err(internal(format!(
                "volume {} staged in the turn of volume {}",
                rec.id, self.id
            )));
        }
        self.side
            .stage_in_turn(rec, staging, block, fs_type, mount_flags, secrets)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.side
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.side.freed.notify_all();
    }
}

/// The agent [`NodeSide::record_remote`] recorded for a volume: dropped
/// before [`RemoteRecorded::commit`], it puts back what the volume had.
pub(crate) struct RemoteRecorded<'a> {
    side: &'a NodeSide,
    id: String,
    /// The volume's entry before, until committed.
    undo: Option<Option<(String, std::net::IpAddr)>>,
}

impl RemoteRecorded<'_> {
    /// Keeps the agent recorded (the stage it was for succeeded).
    pub(crate) fn commit(mut self) {
        self.undo = None;
    }
}

impl Drop for RemoteRecorded<'_> {
    fn drop(&mut self) {
        let Some(previous) = self.undo.take() else {
            return;
        };
        let mut remote = self.side.remote.lock().unwrap_or_else(|p| p.into_inner());
        match previous {
            Some(p) => remote.insert(self.id.clone(), p),
            None => remote.remove(&self.id),
        };
    }
}

fn internal(what: impl std::fmt::Display) -> CsiError {
    CsiError::internal(what.to_string())
}

/// An engine error as the CSI error of the call: a member another volume
/// or process holds is FAILED_PRECONDITION (the holder must stop first;
/// nothing was written), anything else INTERNAL.
fn engine_err(what: &str, e: raid_engine::EngineError) -> CsiError {
    match e {
        raid_engine::EngineError::InUse { .. } => {
            CsiError::failed_precondition(format!("{what}: {e}"))
        }
        e => CsiError::internal(format!("{what}: {e}")),
    }
}

/// A refused or failed connection to the JBOD agent for `drive` of
/// volume `id` as the CSI error of the stage: the agent not exporting the
/// drive to this server (`NBD_REP_ERR_POLICY`: the volume is not granted
/// here) is FAILED_PRECONDITION; an agent that cannot be reached
/// (refused, reset, timed out) is UNAVAILABLE, for the CO to retry; anything
/// else INTERNAL. Each names the volume, the drive and the agent.
fn nbd_connect_err(
    id: &str,
    agent: &str,
    drive: &str,
    source: std::net::IpAddr,
    e: raid_engine::EngineError,
) -> CsiError {
    use raid_engine::EngineError;
    let what = format!("volume {id}: drive {drive} over NBD from the JBOD agent at {agent}");
    match &e {
        EngineError::Nbd(m) if m.contains("NBD_REP_ERR_POLICY") => {
            CsiError::failed_precondition(format!(
                "{what}: the agent does not export the drive to this server ({source}); \
                 ControllerPublishVolume of the volume to this node grants it (if it was \
                 published, the agent's log says why it refused): {e}"
            ))
        }
        EngineError::Io { source: io, .. }
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            ) =>
        {
            CsiError::Unavailable(format!("{what}: the agent cannot be reached: {e}"))
        }
        _ => engine_err(&what, e),
    }
}

fn layout_of(kind: LayoutKind) -> &'static str {
    match kind {
        LayoutKind::Single | LayoutKind::Slice => "single",
        LayoutKind::Raid1 | LayoutKind::SliceMirror => "raid1",
        LayoutKind::Raid10 => "raid10:n2",
        LayoutKind::Raid0 => "raid0",
    }
}

fn is_blank(dev: &dyn BlockDevice) -> io::Result<bool> {
    // The engine's superblock sits at 4 KiB.
    let mut buf = vec![0u8; 4096];
    dev.read_at(&mut buf, 4096)?;
    Ok(buf.iter().all(|b| *b == 0))
}

impl NodeSide {
    /// A node side over `cfg`, with what an earlier node process on the same
    /// run directory staged and published: plain drive ranges whose loop
    /// device survived are staged again as they are; engine volumes (whose
    /// FUSE ended with that process) wait for the next stage or unstage.
    /// An unreadable state file is logged and moved aside
    /// (`node-state.json.unreadable`), never overwritten, and the node
    /// starts with nothing staged.
    pub fn new(cfg: NodeConfig) -> NodeSide {
        let state = NodeState::load(&cfg.run_dir).unwrap_or_else(|e| {
            // Kept for the operator: the next change writes a new state.
            match NodeState::set_aside(&cfg.run_dir) {
                Ok(kept) => tracing::error!(error = %e, kept = %kept.display(),
                    "the node state is unreadable; kept aside, starting with none"),
                Err(a) => tracing::error!(error = %e, aside = %a,
                    "the node state is unreadable, and could not be kept aside; starting with none"),
            }
            NodeState::default()
        });
        let mut staged = BTreeMap::new();
        let mut recovered = BTreeMap::new();
        for (id, r) in state.staged {
            match adopt(&cfg, &id, &r) {
                Some(s) => {
                    tracing::info!(volume = %id, "staged before the restart; loop device still attached");
                    staged.insert(id, s);
                }
                None => {
                    tracing::info!(volume = %id, "staged before the restart; re-assembled at the next stage");
                    recovered.insert(id, r);
                }
            }
        }
        NodeSide {
            cfg,
            staged: Mutex::new(staged),
            targets: Mutex::new(state.targets),
            bound: Mutex::new(state.bound),
            recovered: Mutex::new(recovered),
            remote: Mutex::new(BTreeMap::new()),
            claim_id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            busy: Mutex::new(std::collections::BTreeSet::new()),
            freed: Condvar::new(),
            rebuilds: Mutex::new(BTreeMap::new()),
            rebuild_ended: Condvar::new(),
            #[cfg(test)]
            hook: Mutex::new(None),
        }
    }

    /// Runs the test's hook at `point` of a call on volume `id`.
    #[cfg(test)]
    pub(crate) fn test_point(&self, point: &str, id: &str) {
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            h(point, id);
        }
    }

    /// Waits until no other call holds a turn on volume `id`, and takes it
    /// ([`Turn`]); the turn ends when dropped. Calls on other volumes run
    /// meanwhile.
    pub(crate) fn turn(&self, id: &str) -> Turn<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy.contains(id) {
            tracing::debug!(
                volume = id,
                "waits for the call in progress on the volume to finish"
            );
            #[cfg(test)]
            self.test_point("turn-wait", id);
            while busy.contains(id) {
                busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
            }
        }
        busy.insert(id.to_string());
        Turn {
            side: self,
            id: id.to_string(),
        }
    }

    /// Volume `id` (transport `nbd`) reaches its members over NBD from
    /// `agent` (`host:port`, the publish context's
    /// [`crate::agent::CONTEXT_AGENT`]), connecting from `source`. An agent
    /// that is not `host:port`, or whose host does not resolve, is
    /// INVALID_ARGUMENT naming the publish context key, and changes nothing.
    ///
    /// The name is resolved here, once: the members are connected to, and
    /// their ranges claimed by, the resolved address (of
    /// `source`'s family when there is one), so one agent spelled two ways
    /// (`localhost:10809`, `127.0.0.1:10809`) is one agent.
    pub fn set_remote(
        &self,
        id: &str,
        agent: &str,
        source: std::net::IpAddr,
    ) -> Result<(), CsiError> {
        self.turn(id)
            .record_remote(agent, source)
            .map(RemoteRecorded::commit)
    }

    /// As [`NodeSide::set_remote`], until the returned record is committed:
    /// dropped uncommitted (the stage it was for refused), it puts back the
    /// agent the volume had, or none, so that a refused call changes
    /// nothing. Called in the volume's [`Turn`] ([`Turn::record_remote`]).
    fn record_remote(
        &self,
        id: &str,
        agent: &str,
        source: std::net::IpAddr,
    ) -> Result<RemoteRecorded<'_>, CsiError> {
        let port = agent
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty() && !host.contains(char::is_whitespace))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|p| *p != 0);
        if port.is_none() {
            return Err(CsiError::invalid(
                format!("publish_context[{:?}]", crate::agent::CONTEXT_AGENT),
                format!(
                    "must be the JBOD agent's host:port (a port from 1 to 65535), got {agent:?}"
                ),
            ));
        }
        let unresolved = |why: String| {
            CsiError::invalid(
                format!("publish_context[{:?}]", crate::agent::CONTEXT_AGENT),
                format!("must name a JBOD agent this node can resolve, got {agent:?}: {why}"),
            )
        };
        let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(agent)
            .map_err(|e| unresolved(e.to_string()))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4() == source.is_ipv4())
            .or_else(|| addrs.first())
            .ok_or_else(|| unresolved("it resolves to no address".into()))?;
        let previous = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (addr.to_string(), source));
        Ok(RemoteRecorded {
            side: self,
            id: id.to_string(),
            undo: Some(previous),
        })
    }

    /// The JBOD agent volume `id`'s members are reached from over NBD (the
    /// resolved `host:port`) and the address this server connects from, as
    /// the volume's last successful NodeStageVolume (or
    /// [`NodeSide::set_remote`]) recorded them; `None` for a volume reached
    /// through the node's own drive files, and once the volume is unstaged
    /// (its next stage records the agent its publish context names).
    pub fn agent_of(&self, id: &str) -> Option<(String, std::net::IpAddr)> {
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Drops the agent recorded for `id` once nothing of it is staged on
    /// this node side (in this process or recorded by an earlier one): only
    /// a stage (which records the agent again) or a staged volume's rebuild
    /// reaches the members, and a volume id created again may be exported by
    /// another agent.
    fn forget_remote_unless_staged(&self, id: &str) {
        if !self.is_staged(id) {
            self.remote
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }

    /// A member of `rec`: the byte range of its drive, over NBD when the
    /// volume is remote, else of its file, with the claim the node holds on
    /// it. A volume claims exactly these bytes of the drive: a local
    /// member through the engine ([`BlockDevice::claim_range`] of the file,
    /// so volumes on disjoint slices of one drive file both open and
    /// overlapping ones refuse each other, in this process or another; the
    /// claim returned is none), a member over NBD through the returned
    /// claim ([`claim_remote`]: an NBD device claims nothing, and the
    /// agent's claims are per exported volume, not per node), taken before
    /// anything is connected, read or written.
    ///
    /// A member past the end of its drive over NBD is FAILED_PRECONDITION
    /// naming the drive, its size and the range.
    fn member_of(
        &self,
        rec: &VolumeRecord,
        drive: &str,
        offset: u64,
        len: u64,
    ) -> Result<(SliceDevice, Claim), CsiError> {
        let remote = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rec.id)
            .cloned();
        let Some((agent, source)) = remote else {
            if rec.transport == composer_core::inventory::Transport::Nbd {
                // Never this node's own drive files in its stead.
                return Err(CsiError::failed_precondition(format!(
                    "volume {}: its members are reached over NBD (transport nbd) but no JBOD \
                     agent is recorded for it on this node: it is not staged here \
                     (NodeStageVolume records the agent its publish context names)",
                    rec.id
                )));
            }
            return Ok((self.open_member(drive, offset, len)?, Claim::none()));
        };
        let claim = claim_remote(self.claim_id, &rec.id, &agent, drive, offset, len)?;
        let dev = crate::agent::connect_member(&agent, drive, source)
            .map_err(|e| nbd_connect_err(&rec.id, &agent, drive, source, e))?;
        let size = dev.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(CsiError::failed_precondition(format!(
                "volume {}: its member on drive {drive} (over NBD from {agent}) is bytes \
                 {offset}..{}, past the end of the drive's {size} bytes; a member must lie \
                 within its drive (the drive is smaller than when the volume was placed?)",
                rec.id,
                u128::from(offset) + u128::from(len)
            )));
        }
        let dev = SliceDevice::new(Arc::new(dev), offset, len)
            .map_err(|e| internal(format!("drive {drive} over NBD: {e}")))?;
        Ok((dev, claim))
    }

    /// Writes what is staged and published to the run directory.
    fn save_state(&self) -> Result<(), CsiError> {
        let mut state = NodeState {
            staged: self
                .recovered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            targets: self
                .targets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            bound: self.bound.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        for (id, s) in self.lock().iter() {
            if s.staging.as_os_str().is_empty() {
                continue;
            }
            state.staged.insert(
                id.clone(),
                StagedRecord {
                    staging: s.staging.clone(),
                    block: s.block,
                    drives: s.drives.clone(),
                    loopdev: s.loopdev.as_ref().map(|l| l.path().to_path_buf()),
                    loop_diskseq: s.loopdev.as_ref().and_then(LoopDevice::diskseq),
                    fuse_dir: s.volume.is_some().then(|| s.fuse_dir.clone()),
                    luks: s.luks.as_ref().map(|m| m.name.clone()),
                },
            );
        }
        state.save(&self.cfg.run_dir).map_err(internal)
    }

    /// Takes a volume staged by an earlier process out of `recovered` and
    /// takes its dead stack apart (targets first, so that nothing holds it),
    /// for a fresh stage; `ALREADY_EXISTS` when it was staged elsewhere.
    /// Returns the record taken.
    fn clear_recovered(
        &self,
        id: &str,
        staging: &Path,
        block: bool,
    ) -> Result<Option<StagedRecord>, CsiError> {
        let Some(r) = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
        else {
            return Ok(None);
        };
        if r.staging != staging || r.block != block {
            return Err(CsiError::already_exists(format!(
                "volume {id} is staged at {} with another capability or path",
                quote_path(&r.staging)
            )));
        }
        let own = self.own_sources(id);
        for t in self.targets_of(id) {
            unmount_own_at("target_path", &t, &own, id)?;
        }
        self.teardown_recorded(id, &r)?;
        self.recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(Some(r))
    }

    /// Takes apart what an earlier process left of staged volume `id`: the
    /// staging mount, the LUKS mapping, the loop device and the (dead) FUSE
    /// mount, in that order. Not best effort: a loop device of the volume
    /// that cannot be detached fails the call, and the caller keeps the
    /// record, so that the CO's retry comes back to it rather than the device
    /// staying attached for good over a dead file.
    ///
    /// The loop devices are detached before the FUSE mount is unmounted:
    /// once that mount is lazily unmounted, the kernel names the backing file
    /// `/volume` (its path inside the detached mount), and only the recorded
    /// attachment (`loop_diskseq`) still finds the device. A device that this
    /// process uses for a volume it staged is never detached here (in state
    /// without sequence numbers, a plain range's recorded number that this
    /// process has attached again to the same drive file looks like the
    /// record's).
    fn teardown_recorded(&self, id: &str, r: &StagedRecord) -> Result<(), CsiError> {
        if !r.block {
            unmount_own_at(
                "staging_target_path",
                &r.staging,
                &recorded_devices(&self.cfg, r),
                id,
            )?;
        }
        if let Some(name) = &r.luks
            && Path::new("/dev/mapper").join(name).exists()
        {
            crate::luks::Luks::new(crate::luks::SystemCryptsetup)
                .close(name)
                .map_err(internal)?;
        }
        let mut devices: Vec<LoopDevice> = recorded_loop(&self.cfg, r).into_iter().collect();
        if let Some(dir) = &r.fuse_dir {
            // The FUSE mount is still there (dead): the kernel names the
            // files below it by their full path.
            for l in LoopDevice::backed_under(dir) {
                if !devices.contains(&l) {
                    devices.push(l);
                }
            }
        }
        let live: Vec<LoopDevice> = self
            .lock()
            .values()
            .filter_map(|s| s.loopdev.clone())
            .collect();
        for l in &devices {
            // Attached by this process for another volume (a number the
            // earlier process recorded and that was reused): not this
            // record's, and not left behind.
            if live.contains(l) {
                tracing::info!(device = %l.path().display(), volume = id,
                    "recorded loop device now serves a volume staged by this process; left attached");
                continue;
            }
            detach_left(id, l)?;
        }
        if let Some(dir) = &r.fuse_dir {
            csi_node::lazy_unmount_under(dir).map_err(CsiError::from)?;
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    /// The targets `id` is published at.
    fn targets_of(&self, id: &str) -> Vec<PathBuf> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (v, _))| v == id)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// After a volume staged before a restart was staged again: binds its
    /// publishes to the new stack.
    fn rebind_targets(&self, id: &str) -> Result<(), CsiError> {
        let Some((staging, block, dev)) = self.staged_at(id) else {
            return Ok(());
        };
        let targets: Vec<(PathBuf, bool)> = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (v, _))| v == id)
            .map(|(t, (_, ro))| (t.clone(), *ro))
            .collect();
        for (t, ro) in targets {
            unmount_own_at("target_path", &t, &[staging.clone(), dev.clone()], id)?;
            let source = if block { &dev } else { &staging };
            csi_node::bind_mount(source, &t, &MountOptions::default(), ro)
                .map_err(CsiError::from)?;
            self.bound
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(t.clone(), vec![staging.clone(), dev.clone()]);
            tracing::info!(volume = id, target = %t.display(), "publish bound to the re-assembled volume");
        }
        self.save_state()
    }

    /// Records a publish of `id` at `target`; `Ok(false)` when the same
    /// publish is already there, `ALREADY_EXISTS` when another is.
    pub fn claim_target(&self, target: &Path, id: &str, ro: bool) -> Result<bool, CsiError> {
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        match t.get(target) {
            Some((v, r)) if v == id && *r == ro => Ok(false),
            Some((v, r)) => Err(CsiError::already_exists(format!(
                "{} already has volume {v} published {}",
                quote_path(target),
                if *r { "read-only" } else { "read-write" }
            ))),
            None => {
                t.insert(target.to_path_buf(), (id.to_string(), ro));
                drop(t);
                let sources = self.own_sources(id);
                self.bound
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(target.to_path_buf(), sources);
                if let Err(e) = self.save_state() {
                    self.forget_target(target);
                    return Err(e);
                }
                Ok(true)
            }
        }
    }

    /// Whether `target` holds a publish of `id`.
    pub fn is_target_of(&self, target: &Path, id: &str) -> bool {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .is_some_and(|(v, _)| v == id)
    }

    /// What an unpublish of `id` at `target` may unmount there: what a
    /// publish of `id` binds now ([`NodeSide::own_sources`]), and what the
    /// publish recorded at `target` bound when it was made, kept across
    /// restarts: once the volume is unstaged (out of the CO's order, or a
    /// volume of an earlier node process whose stack died with it) the
    /// former is empty, and the latter still tells the plugin's bind from
    /// a mount someone else stacked there.
    pub fn unpublish_sources(&self, id: &str, target: &Path) -> Vec<PathBuf> {
        let mut own = self.own_sources(id);
        if self.is_target_of(target, id)
            && let Some(b) = self
                .bound
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(target)
        {
            own.extend(b.iter().filter(|p| !p.as_os_str().is_empty()).cloned());
        }
        own
    }

    /// Drops the record of the publish at `target`; whether there was one.
    fn forget_target(&self, target: &Path) -> bool {
        self.bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target);
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target)
            .is_some()
    }

    /// Forgets the publish at `target`.
    pub fn release_target(&self, target: &Path) {
        let removed = self.forget_target(target);
        if removed && let Err(e) = self.save_state() {
            tracing::error!(error = %e, "recording the unpublish failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Staged>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    fn open_member(&self, drive: &str, offset: u64, len: u64) -> Result<SliceDevice, CsiError> {
        // The standard library's errors do not name the file, the engine's
        // do: each is named once.
        fs::create_dir_all(&self.cfg.data_dir).map_err(|e| {
            internal(format!(
                "creating the drive directory {}: {e}",
                quote_path(&self.cfg.data_dir)
            ))
        })?;
        let path = self.cfg.data_dir.join(format!("{drive}.img"));
        let std_err = |what: &str, e: io::Error| {
            internal(format!(
                "{what} the file of drive {drive}, {}: {e}",
                quote_path(&path)
            ))
        };
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| std_err("opening", e))?;
        let need = offset + len;
        let have = f.metadata().map_err(|e| std_err("reading", e))?.len();
        if have < need {
            f.set_len(need).map_err(|e| std_err("growing", e))?;
        }
        drop(f);
        let file = FileDevice::open(&path, CacheMode::DirectIfSupported)
            .map_err(|e| internal(format!("opening the file of drive {drive}: {e}")))?;
        SliceDevice::new(Arc::new(file), offset, len)
            .map_err(|e| internal(format!("drive {drive}: {e}")))
    }

    /// Whether volume `id` is staged on this node: assembled here, or staged
    /// by an earlier node process and waiting for its next stage.
    pub fn is_staged(&self, id: &str) -> bool {
        self.lock().contains_key(id)
            || self
                .recovered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(id)
    }

    /// Whether volume `id` is staged by this process (not only recorded by
    /// an earlier one).
    pub(crate) fn is_live(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// The engine volume staged for `id`, if any.
    pub fn volume(&self, id: &str) -> Option<Arc<EngineVolume>> {
        self.lock().get(id).and_then(|s| s.volume.clone())
    }

    /// Assembles (or, on blank members, creates) the volume of `rec`; with
    /// it the roles whose member the superblocks record as a replacement
    /// not (fully) copied ([`Staged::unsynced`]).
    fn assemble(
        &self,
        rec: &VolumeRecord,
        secret: Option<Secret>,
    ) -> Result<(EngineVolume, Vec<Claim>, Unsynced), CsiError> {
        // The engine encrypts (encryptionFormat=engine) when given a secret;
        // a LUKS volume is encrypted above the engine instead.
        let engine_encrypted = secret.is_some();
        let mut devs: Vec<Arc<dyn BlockDevice>> = Vec::new();
        let mut claims = Vec::new();
        // Every member claimed before any is read.
        for m in &rec.members {
            let (d, c) =
                self.member_of(rec, &m.drive, m.offset, rec.layout.member_bytes.min(m.len))?;
            devs.push(Arc::new(d));
            claims.push(c);
        }
        let mut blank = true;
        for d in &devs {
            blank &=
                is_blank(&**d).map_err(|e| internal(format!("reading {}: {e}", d.describe())))?;
        }
        if blank {
            let layout = VolumeLayout::parse(layout_of(rec.layout.kind))
                .map_err(|e| engine_err("layout", e))?;
            let mut opts = CreateOptions::new(layout);
            if rec.layout.chunk_sectors > 0 {
                opts.chunk_sectors = rec.layout.chunk_sectors;
            }
            opts.secret = secret;
            EngineVolume::create(devs, &opts)
                .map(|v| (v, claims, Unsynced::new()))
                .map_err(|e| engine_err(&format!("creating volume {}", rec.id), e))
        } else {
            // A replacement whose copy did not finish (it failed part way,
            // or a shutdown stopped it) before an earlier node process
            // ended: the record names its drive already, so only the
            // superblocks tell that it still needs a rebuild. Read before
            // the assembly, which does not say why a member is failed.
            let unsynced: Unsynced = EngineVolume::examine(&devs, None)
                .map_err(|e| engine_err(&format!("examining volume {}", rec.id), e))?
                .roles
                .iter()
                .filter(|r| r.condition == RoleCondition::Spare)
                .map(|r| r.role)
                .collect();
            let v = EngineVolume::assemble(devs, secret.as_ref())
                .map_err(|e| engine_err(&format!("assembling volume {}", rec.id), e))?;
            if engine_encrypted && !v.is_encrypted() {
                return Err(CsiError::failed_precondition(format!(
                    "volume {}: encryption was asked for but its members hold a plaintext volume",
                    rec.id
                )));
            }
            Ok((v, claims, unsynced))
        }
    }

    /// The engine volume of a single drive or slice reached over NBD: a
    /// linear volume over its member range, its metadata in memory
    /// ([`NodeLocalMeta`]), exactly the range's bytes.
    fn passthrough(&self, rec: &VolumeRecord) -> Result<(EngineVolume, Vec<Claim>), CsiError> {
        let m = rec
            .members
            .first()
            .ok_or_else(|| internal("a volume without members"))?;
        let want = rec.layout.usable_bytes;
        let (member, claim) = self.member_of(rec, &m.drive, m.offset, want)?;
        let dev = NodeLocalMeta::new(member);
        let mut opts = CreateOptions::new(VolumeLayout::Linear);
        opts.data_offset_sectors = Some(NODE_LOCAL_META_SECTORS);
        let v = EngineVolume::create(vec![Arc::new(dev)], &opts)
            .map_err(|e| engine_err(&format!("opening volume {}", rec.id), e))?;
        if v.size() != want {
            return Err(internal(format!(
                "volume {}: the engine shows {} bytes of the member's {want} (not a multiple of 4 KiB?)",
                rec.id,
                v.size()
            )));
        }
        Ok((v, vec![claim]))
    }

    /// `NodeStageVolume` for `rec` at `staging`: a volume staged there by an
    /// earlier node process is re-assembled and its publishes bound again.
    /// Waits for another stage or unstage of the volume to finish first.
    pub fn stage(
        &self,
        rec: &VolumeRecord,
        staging: &Path,
        block: bool,
        fs_type: csi_node::FsType,
        mount_flags: &[String],
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), CsiError> {
        self.turn(&rec.id)
            .stage(rec, staging, block, fs_type, mount_flags, secrets)
    }

    fn stage_in_turn(
        &self,
        rec: &VolumeRecord,
        staging: &Path,
        block: bool,
        fs_type: csi_node::FsType,
        mount_flags: &[String],
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), CsiError> {
        if self.cfg.backend == Backend::Mdadm {
            return Err(mdadm_unavailable());
        }
        #[cfg(test)]
        self.test_point("stage", &rec.id);
        let again = self.clear_recovered(&rec.id, staging, block)?;
        if let Err(e) = self.stage_fresh(rec, staging, block, fs_type, mount_flags, secrets) {
            // Still staged as far as the CO knows: keep the record, for
            // another stage or the unstage.
            if let Some(r) = again {
                self.recovered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(rec.id.clone(), r);
            }
            return Err(e);
        }
        self.save_state()?;
        if again.is_some() {
            self.rebind_targets(&rec.id)?;
        }
        Ok(())
    }

    fn stage_fresh(
        &self,
        rec: &VolumeRecord,
        staging: &Path,
        block: bool,
        fs_type: csi_node::FsType,
        mount_flags: &[String],
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), CsiError> {
        if let Some(s) = self.lock().get(&rec.id) {
            if s.staging == staging && s.block == block {
                return Ok(());
            }
            return Err(CsiError::already_exists(format!(
                "volume {} is staged at {} with another capability or path",
                rec.id,
                quote_path(&s.staging)
            )));
        }
        // The parameters as the controller read them: `encrypt` is a
        // boolean spelled any way `Parameters::parse` takes (" True ", …),
        // never a plaintext stage of a volume created encrypted.
        let params = composer_core::Parameters::parse(&rec.parameters).map_err(CsiError::from)?;
        let encrypt = params.encrypt;
        let luks = encrypt && params.encryption_format == composer_core::EncryptionFormat::Luks;
        if luks {
            // Before anything is attached or formatted.
            luks_available(&rec.id)?;
        }
        let key = if encrypt {
            let s = secrets.get(ENCRYPTION_SECRET).ok_or_else(|| {
                CsiError::invalid(
                    "secrets",
                    format!(
                        "volume {} is encrypted (encrypt=true): the node-stage secret \
                         {ENCRYPTION_SECRET:?} is required",
                        rec.id
                    ),
                )
            })?;
            if s.is_empty() {
                return Err(CsiError::invalid(
                    "secrets",
                    format!("the node-stage secret {ENCRYPTION_SECRET:?} is empty"),
                ));
            }
            Some(s.as_bytes().to_vec())
        } else {
            None
        };
        // The engine's encryption, unless LUKS encrypts on top.
        let secret = match &key {
            Some(k) if !luks => Some(
                Secret::new(k.clone()).map_err(|e| CsiError::invalid("secrets", e.to_string()))?,
            ),
            _ => None,
        };
        let luks_key = if luks { key } else { None };
        let opts = MountOptions::parse(mount_flags).map_err(CsiError::from)?;
        let mount = (!block).then_some((staging, fs_type, &opts));
        // Before anything is claimed, attached or formatted: a file system
        // is mounted on a directory.
        if !block && fs::symlink_metadata(staging).is_ok_and(|m| !m.is_dir()) && !staging.is_dir() {
            return Err(CsiError::failed_precondition(format!(
                "staging_target_path {} exists and is not a directory: a volume staged for \
                 mount access is mounted on a directory (remove it, or stage elsewhere)",
                quote_path(staging)
            )));
        }
        let plain = matches!(rec.layout.kind, LayoutKind::Single | LayoutKind::Slice);
        if plain && secret.is_some() {
            return Err(CsiError::failed_precondition(format!(
                "volume {}: encrypt=true with encryptionFormat=engine on a {} layout is not \
                 supported by the userspace backend (it leaves no room for the engine's header); \
                 use encryptionFormat=luks or redundancy=true",
                rec.id,
                rec.layout.kind.name()
            )));
        }
        // An `nbd` volume's member is reached over NBD ([`NodeSide::member_of`]).
        let remote = rec.transport == composer_core::inventory::Transport::Nbd;
        if plain && !remote {
            let m = rec
                .members
                .first()
                .ok_or_else(|| internal("a volume without members"))?;
            let path = self.cfg.data_dir.join(format!("{}.img", m.drive));
            drop(self.open_member(&m.drive, m.offset, m.len)?);
            // The bytes the loop device serves, held before it is attached.
            let claim = claim_plain(&rec.id, &path, m.offset, rec.layout.usable_bytes)?;
            let loopdev = attach_range(&path, m.offset, rec.layout.usable_bytes)?;
            let mapping = match open_and_mount(&rec.id, &loopdev, luks_key, mount) {
                Ok(m) => m,
                Err(e) => {
                    let _ = loopdev.detach();
                    return Err(e);
                }
            };
            self.lock().insert(
                rec.id.clone(),
                Staged {
                    staging: staging.to_path_buf(),
                    block,
                    drives: vec![m.drive.clone()],
                    volume: None,
                    exposure: None,
                    loopdev: Some(loopdev),
                    fuse_dir: PathBuf::new(),
                    rebuilding: None,
                    unsynced: Default::default(),
                    luks: mapping,
                    claims: vec![claim],
                },
            );
            return Ok(());
        }
        let (volume, claims, unsynced) = if plain {
            let (v, c) = self.passthrough(rec)?;
            (v, c, Unsynced::new())
        } else {
            self.assemble(rec, secret)?
        };
        let volume = Arc::new(volume);
        let fuse_dir = self.cfg.run_dir.join(&rec.id);
        fs::create_dir_all(&fuse_dir)
            .map_err(|e| internal(format!("creating {}: {e}", quote_path(&fuse_dir))))?;
        let exposure = raid_engine::fuse::expose(volume.clone(), &fuse_dir, "volume")
            .map_err(|e| engine_err("exposing the volume through FUSE", e))?;
        let undo = |exposure: FuseExposure, l: Option<&LoopDevice>| {
            // The device first: once the FUSE mount is lazily unmounted the
            // kernel names its file `/volume`, and nothing finds it again.
            if let Some(l) = l
                && let Err(e) = l.detach()
            {
                tracing::error!(device = %l.path().display(), error = %e,
                    "detaching the loop device after a failed stage");
            }
            let _ = exposure.unmount();
        };
        let direct = AttachOptions {
            direct_io: true,
            ..AttachOptions::default()
        };
        let loopdev = match LoopDevice::attach_with(exposure.file(), &direct) {
            Ok(l) => l,
            Err(e) => {
                undo(exposure, None);
                return Err(e.into());
            }
        };
        let mapping = match open_and_mount(&rec.id, &loopdev, luks_key, mount) {
            Ok(m) => m,
            Err(e) => {
                undo(exposure, Some(&loopdev));
                return Err(e);
            }
        };
        tracing::info!(volume = %rec.id, device = %loopdev.path().display(), "staged");
        self.lock().insert(
            rec.id.clone(),
            Staged {
                staging: staging.to_path_buf(),
                block,
                drives: rec.members.iter().map(|m| m.drive.clone()).collect(),
                volume: Some(volume),
                exposure: Some(exposure),
                loopdev: Some(loopdev),
                fuse_dir,
                rebuilding: None,
                unsynced,
                luks: mapping,
                claims,
            },
        );
        Ok(())
    }

    /// Assembles (or creates) the volume of `rec` without exposing it to the
    /// kernel (no FUSE, loop or mount): for hosts without them, and for
    /// tools that do I/O through the engine. Unstage it with an empty path.
    pub fn assemble_unexposed(&self, rec: &VolumeRecord) -> Result<Arc<EngineVolume>, CsiError> {
        let _turn = self.turn(&rec.id);
        if self.cfg.backend == Backend::Mdadm {
            return Err(mdadm_unavailable());
        }
        if matches!(rec.layout.kind, LayoutKind::Single | LayoutKind::Slice) {
            return Err(CsiError::failed_precondition(format!(
                "volume {}: a {} layout has no engine volume",
                rec.id,
                rec.layout.kind.name()
            )));
        }
        if self.lock().contains_key(&rec.id) {
            return Err(CsiError::already_exists(format!(
                "volume {} is staged",
                rec.id
            )));
        }
        let (volume, claims, unsynced) = self.assemble(rec, None)?;
        let volume = Arc::new(volume);
        self.lock().insert(
            rec.id.clone(),
            Staged {
                staging: PathBuf::new(),
                block: true,
                drives: rec.members.iter().map(|m| m.drive.clone()).collect(),
                volume: Some(volume.clone()),
                exposure: None,
                loopdev: None,
                fuse_dir: PathBuf::new(),
                rebuilding: None,
                unsynced,
                luks: None,
                claims,
            },
        );
        Ok(volume)
    }

    /// `NodeUnstageVolume`: unmount, detach the loop device, close the volume.
    /// A volume this process serves that is still published at a mounted
    /// target is refused with FAILED_PRECONDITION naming the targets, and
    /// stays staged; one staged by an earlier process (its stack is dead) is
    /// taken apart, and a later unpublish of its targets unmounts what that
    /// publish bound ([`NodeSide::unpublish_sources`]). Waits for another
    /// stage or unstage of the volume to finish first.
    ///
    /// A volume whose rebuild runs ([`NodeSide::rebuild_to`]) is refused
    /// `ABORTED`, changing nothing, until the rebuild ends: the copy reads
    /// and writes the engine volume the unstage would close. Stopping the
    /// copy instead ([`EngineVolume::interrupt`]) would throw its progress
    /// away (the engine starts an interrupted rebuild over from the first
    /// byte), would stop every later rebuild of that volume object too, and
    /// would leave the volume degraded with the new member already in the
    /// record, where no later `rebuild_to` finds it to rebuild. `ABORTED` is
    /// the spec's code for "an operation is pending for the volume"; the CO
    /// retries with backoff, and the retry after the rebuild unstages (and
    /// any repeat of it answers OK: the call stays idempotent).
    pub fn unstage(&self, id: &str, staging: &Path) -> Result<(), CsiError> {
        let _turn = self.turn(id);
        let r = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(r) = r {
            if r.staging == staging {
                self.teardown_recorded(id, &r)?;
                self.recovered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id);
                self.forget_remote_unless_staged(id);
                self.save_state()?;
                tracing::info!(volume = id, "unstaged (staged before the restart)");
            }
            return Ok(());
        }
        self.unstage_live(id, staging)?;
        self.forget_remote_unless_staged(id);
        self.save_state()
    }

    fn unstage_live(&self, id: &str, staging: &Path) -> Result<(), CsiError> {
        // Not under a live publish (the CO unpublishes first; spec,
        // NodeUnstageVolume): an engine volume's FUSE file cannot close
        // while a bind of its file system holds it (the unstage would wait
        // for it for good, holding the volume's turn), and a plain range's
        // claim must not go while the file system on it is in use.
        let published: Vec<String> = self
            .targets_of(id)
            .into_iter()
            .filter(|t| csi_node::is_mount_point(t).unwrap_or(false))
            .map(|t| quote_path(&t))
            .collect();
        if !published.is_empty() && self.lock().get(id).is_some_and(|s| s.staging == staging) {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is still published at {}: call NodeUnpublishVolume for each \
                 target before NodeUnstageVolume (nothing was unstaged)",
                published.join(", ")
            )));
        }
        // Taken out of the map, and taken apart with no lock held but the
        // volume's turn: the unmount, the loop device's detach and the FUSE
        // unmount can take long, and calls of other volumes read the map
        // meanwhile. What a failure leaves of it goes back, for the CO's
        // retry.
        let mut s = {
            let mut map = self.lock();
            match map.get(id) {
                Some(s) if s.staging == staging => {
                    if let Some((role, done, total)) = s.rebuilding {
                        return Err(rebuilding_refusal(id, &s.drives[role], role, done, total));
                    }
                    map.remove(id)
                }
                _ => None,
            }
        };
        let Some(taken) = s.as_mut() else {
            return Ok(());
        };
        #[cfg(test)]
        self.test_point("unstage", id);
        if let Err(e) = Self::take_apart(id, staging, taken) {
            if let Some(s) = s {
                self.lock().insert(id.to_string(), s);
            }
            return Err(e);
        }
        tracing::info!(volume = id, "unstaged");
        Ok(())
    }

    /// The I/O of an unstage of `s` (of volume `id`, staged at `staging`):
    /// what it has taken apart when it fails is gone from `s`.
    fn take_apart(id: &str, staging: &Path, s: &mut Staged) -> Result<(), CsiError> {
        if !s.block {
            let own: Vec<PathBuf> = s.device().into_iter().collect();
            unmount_own_at("staging_target_path", staging, &own, id)?;
        }
        if let Some(m) = &s.luks {
            crate::luks::Luks::new(crate::luks::SystemCryptsetup)
                .close(&m.name)
                .map_err(internal)?;
            s.luks = None;
        }
        // Dropped from the record only once detached: a failed detach keeps
        // it, so the CO's retry detaches it again instead of skipping it.
        if let Some(l) = &s.loopdev {
            // The FUSE file below is closed next: give the kernel a moment to let the device go.
            if !l
                .detach_and_wait(LOOP_DETACH_WAIT)
                .map_err(CsiError::from)?
            {
                // Not a warning: a udev probe of a loaded node can hold the device that long,
                // and nothing is lost (the FUSE unmount below goes lazy and waits for the
                // last close). At the default level it would break the demo's and the
                // operators' promise of no warnings on a healthy run.
                tracing::info!(device = %l.path().display(), volume = id,
                    "loop device still open after unstage; the kernel detaches it at its last close");
            }
            s.loopdev = None;
        }
        if let Some(x) = s.exposure.take() {
            x.unmount()
                .map_err(|e| engine_err("closing the volume", e))?;
        } else if let Some(v) = &s.volume {
            v.close().map_err(|e| engine_err("closing the volume", e))?;
        }
        if s.volume.is_some() {
            let _ = fs::remove_dir(&s.fuse_dir);
        }
        Ok(())
    }

    /// Grows the LUKS2 mapping of staged volume `id` to its device
    /// (`cryptsetup resize`, with the passphrase that opened it); nothing to
    /// do for a volume without one. Called in the volume's turn (the
    /// expand's); calls of other volumes run meanwhile.
    pub fn resize_encryption(&self, id: &str) -> Result<(), CsiError> {
        // A copy (zeroed when dropped), so that `cryptsetup resize` runs
        // with no lock held but the caller's turn of the volume.
        let mapping = self
            .lock()
            .get(id)
            .and_then(|s| s.luks.as_ref())
            .map(|m| LuksMapping {
                name: m.name.clone(),
                key: m.key.clone(),
            });
        #[cfg(test)]
        self.test_point("resize-encryption", id);
        let Some(m) = mapping else {
            return Ok(());
        };
        crate::luks::Luks::new(crate::luks::SystemCryptsetup)
            .resize(&m.name, &m.key)
            .map_err(|e| internal(format!("volume {id}: {e}")))
    }

    /// The staging path and whether the volume is staged for block access.
    pub fn staged_at(&self, id: &str) -> Option<(PathBuf, bool, PathBuf)> {
        self.lock()
            .get(id)
            .and_then(|s| s.device().map(|d| (s.staging.clone(), s.block, d)))
    }

    /// What a publish of `id` on this node binds at its target: the staging path and the
    /// exposed device of the volume staged by this process, or, for one staged before a
    /// restart, its recorded staging path and devices. Empty when `id` is not staged here.
    pub fn own_sources(&self, id: &str) -> Vec<PathBuf> {
        if let Some(s) = self.lock().get(id) {
            return [Some(s.staging.clone()), s.device()]
                .into_iter()
                .flatten()
                .collect();
        }
        let recovered = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
        recovered.get(id).map_or_else(Vec::new, |r| {
            let mut own = vec![r.staging.clone()];
            own.extend(recorded_devices(&self.cfg, r));
            own
        })
    }

    /// The condition of volume `id` staged by an earlier node process whose
    /// data path did not survive it (an engine volume's FUSE ended with that
    /// process; a LUKS mapping or a plain range's loop device was not taken
    /// over), when `path` is where it was staged or published: abnormal,
    /// saying what is gone and that the next NodeStageVolume assembles it
    /// again. `None` when `id` is not such a volume, or `path` is not its.
    pub fn recovered_condition(&self, id: &str, path: &Path) -> Option<VolumeCondition> {
        let r = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()?;
        if r.staging != path && !self.targets_of(id).iter().any(|t| t == path) {
            return None;
        }
        let gone = if r.fuse_dir.is_some() {
            "its engine volume (FUSE) ended with that process"
        } else {
            "its device was not taken over"
        };
        Some(VolumeCondition::abnormal(format!(
            "staged by an earlier node process: {gone}; NodeStageVolume assembles it again"
        )))
    }

    /// The volume's condition as the engine sees it.
    pub fn condition(&self, id: &str) -> Option<VolumeCondition> {
        let map = self.lock();
        let s = map.get(id)?;
        if let Some((role, done, total)) = s.rebuilding {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            return Some(VolumeCondition::abnormal(format!(
                "rebuilding member {role} (drive {}): {pct}% ({done}/{total} bytes)",
                s.drives[role]
            )));
        }
        let Some(volume) = &s.volume else {
            return Some(VolumeCondition::healthy(
                "one drive range, no redundancy: no engine state to report",
            ));
        };
        let st = volume.status();
        let failed: Vec<String> = st
            .iter()
            .filter(|m| m.state == MemberState::Failed)
            .map(|m| format!("member {} (drive {})", m.role, s.drives[m.role]))
            .collect();
        let recovering: Vec<String> = st
            .iter()
            .filter(|m| matches!(m.state, MemberState::Recovering { .. }))
            .map(|m| format!("member {}", m.role))
            .collect();
        Some(if failed.len() == st.len() {
            VolumeCondition::abnormal(format!(
                "failed: every member is gone ({})",
                failed.join(", ")
            ))
        } else if let raid_engine::Health::DataLost { reason, .. } = volume.health() {
            // Survivors remain, but some data has no copy on them. The
            // message is cut at 128 bytes: the essentials first.
            VolumeCondition::abnormal(format!(
                "failed: some data has no copy left: {} failed ({reason})",
                failed.join(", ")
            ))
        } else if !failed.is_empty() {
            VolumeCondition::abnormal(format!(
                "degraded: {} failed; served from the survivors",
                failed.join(", ")
            ))
        } else if !recovering.is_empty() {
            VolumeCondition::abnormal(format!("rebuilding {}", recovering.join(", ")))
        } else {
            VolumeCondition::healthy("all members in sync")
        })
    }

    /// Whether [`NodeSide::fail_drive`] would fail `drive`: refused
    /// (`FAILED_PRECONDITION`, naming the drive, each volume and which of
    /// its data would have no copy left) when failing every member on it,
    /// on top of the members already failed, would lose data of some
    /// staged volume, as the engine's `fail_member` refuses. Changes
    /// nothing.
    pub fn check_fail_drive(&self, drive: &str) -> Result<(), CsiError> {
        Self::refusal(&self.on_drive(drive), drive)
    }

    /// The staged volumes with a member on `drive`, by id: their members'
    /// drives and engine volume, taken out of the node side's lock so that
    /// the engine's checks and writes run without it.
    fn on_drive(&self, drive: &str) -> Vec<OnDrive> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.drives.iter().any(|d| d == drive))
            .map(|(id, s)| OnDrive {
                id: id.clone(),
                drives: s.drives.clone(),
                volume: s.volume.clone(),
            })
            .collect()
    }

    fn refusal(volumes: &[OnDrive], drive: &str) -> Result<(), CsiError> {
        let mut lost = Vec::new();
        for OnDrive { id, drives, volume } in volumes {
            let roles: Vec<usize> = (0..drives.len()).filter(|&r| drives[r] == drive).collect();
            if roles.is_empty() {
                continue;
            }
            let Some(volume) = volume else {
                // A single drive or slice staged through a loop device
                // over its drive file: the drive holds its only copy.
                lost.push(format!(
                    "volume {id}: a single drive or slice, its only copy is on drive {drive}"
                ));
                continue;
            };
            match volume.health_if_failed(&roles) {
                Ok(raid_engine::Health::DataLost { reason, .. }) => {
                    lost.push(format!("volume {id}: {reason}"))
                }
                Ok(_) => {}
                Err(e) => return Err(engine_err(&format!("checking volume {id}"), e)),
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        Err(CsiError::failed_precondition(format!(
            "drive {drive} is not failed: it holds the last copy of some data \
             (failing it would lose that data; nothing was changed): {}",
            lost.join("; ")
        )))
    }

    /// Fails every member on `drive` in the staged volumes; returns the
    /// volumes touched. Refused, changing nothing, when that would leave
    /// some data of a staged volume with no copy (see
    /// [`NodeSide::check_fail_drive`]).
    ///
    /// The engine can still stop it part way: it checks each member again
    /// (a member of the volume that failed through I/O since the check can
    /// make this one the last copy), and failing a member writes the
    /// survivors' superblocks, which can fail. The error then lists the
    /// volumes whose member on `drive` this call had failed by then
    /// ([`FailDriveError::failed`]): a failed member is not taken back, so
    /// those volumes stay degraded.
    ///
    /// Takes the turn of every volume on `drive` (one call per volume at a time), in
    /// the order of their ids (so that two calls never wait for each other
    /// in a circle): no stage, unstage, publish or member replacement of
    /// them runs meanwhile (a rebuild's copy goes on outside the turn; the
    /// engine serialises a member's failure with it).
    pub fn fail_drive(&self, drive: &str) -> Result<Vec<String>, FailDriveError> {
        let (volumes, _turns) = loop {
            let ids: Vec<String> = self.on_drive(drive).into_iter().map(|v| v.id).collect();
            let turns: Vec<Turn<'_>> = ids.iter().map(|id| self.turn(id)).collect();
            // A volume staged on the drive while this call waited: again
            // with its turn too.
            let volumes = self.on_drive(drive);
            if volumes.iter().all(|v| ids.contains(&v.id)) {
                break (volumes, turns);
            }
        };
        // Checked for every volume first, so that a refusal leaves none
        // of them failed; the engine checks each member again.
        Self::refusal(&volumes, drive).map_err(|error| FailDriveError {
            error,
            failed: Vec::new(),
        })?;
        let mut hit: Vec<String> = Vec::new();
        for OnDrive { id, drives, volume } in &volumes {
            let Some(volume) = volume else { continue };
            for (role, d) in drives.iter().enumerate() {
                if d != drive {
                    continue;
                }
                let was_failed = Self::is_failed(volume, role);
                if let Err(e) = volume.fail_member(role) {
                    // The engine marks the member failed before it writes
                    // the survivors' superblocks: an error there still
                    // failed it.
                    if !was_failed && Self::is_failed(volume, role) && !hit.contains(id) {
                        hit.push(id.clone());
                    }
                    return Err(FailDriveError {
                        error: engine_err(&format!("failing member {role} of {id}"), e),
                        failed: hit,
                    });
                }
                if !hit.contains(id) {
                    hit.push(id.clone());
                }
            }
        }
        Ok(hit)
    }

    /// The volumes staged here with a member replaced whose copy has not
    /// finished (it failed part way, or was stopped): a
    /// [`NodeSide::rebuild_to`] of their record rebuilds it.
    pub fn unsynced_volumes(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| !s.unsynced.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The roles of staged volume `id` whose replacement has not been
    /// copied in full ([`NodeSide::unsynced_volumes`]), in role order.
    pub fn unsynced_roles(&self, id: &str) -> Vec<usize> {
        self.lock()
            .get(id)
            .map(|s| s.unsynced.iter().copied().collect())
            .unwrap_or_default()
    }

    fn is_failed(volume: &EngineVolume, role: usize) -> bool {
        volume
            .status()
            .get(role)
            .is_some_and(|m| m.state == MemberState::Failed)
    }

    /// Whether member `role` of volume `id`, on `drive`, may move to another
    /// drive with [`NodeSide::rebuild_to`]: always when the volume is not
    /// staged here; else only once the engine has failed that member (the
    /// engine replaces failed members only). Refused
    /// (`FAILED_PRECONDITION`, saying what to do) for a member still in
    /// use, and for a single drive or slice staged here, whose only copy
    /// its drive holds. Changes nothing.
    pub fn check_rebuild(&self, id: &str, role: usize, drive: &str) -> Result<(), CsiError> {
        let map = self.lock();
        let Some(s) = map.get(id) else { return Ok(()) };
        let Some(volume) = &s.volume else {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is staged on this node as a single drive or slice on drive \
                 {drive}: it has no other copy to rebuild a new member from"
            )));
        };
        match volume.status().get(role).map(|m| &m.state) {
            Some(MemberState::Failed) => Ok(()),
            Some(state) => Err(CsiError::failed_precondition(format!(
                "member {role} of volume {id} (drive {drive}) is {} in the engine, not \
                 failed: fail the drive first (composer admin fail-drive {drive})",
                match state {
                    MemberState::Recovering { .. } => "being rebuilt",
                    _ => "in use",
                }
            ))),
            None => Err(internal(format!(
                "volume {id} has no member {role} on this node"
            ))),
        }
    }

    /// Brings staged volume `rec.id` to `rec`'s members: every role whose
    /// drive changed (a repair plan moved it) gets the new member, rebuilt
    /// online with `progress`. Returns the roles rebuilt.
    ///
    /// A copy that fails part way (an I/O error, a stop at shutdown) leaves
    /// the new member in the record and in the engine, out of sync (a
    /// spare): the call answers the error and the next call rebuilds that
    /// member again, from its start, though its drive did not change; in a
    /// node process started since too, which finds such members in the
    /// superblocks when it assembles the volume.
    ///
    /// The volume's turn is held only while the node's record of it
    /// changes: the check that it is staged, each member's replacement and
    /// the end of the rebuild. The copies run outside it, as md rebuilds in
    /// the background of a used array: a publish, unpublish or expand of
    /// the volume runs meanwhile (the copy goes through the engine volume,
    /// which serves their I/O as any other), so that a pod starts or stops
    /// while its volume rebuilds. An unstage is refused `ABORTED` until the
    /// rebuild ends ([`NodeSide::unstage`] says why); a second rebuild of
    /// the volume too.
    pub fn rebuild_to(
        &self,
        rec: &VolumeRecord,
        max_bytes_per_sec: Option<u64>,
        progress: &(dyn Fn(usize, Progress) + Sync),
    ) -> Result<Vec<usize>, CsiError> {
        let (volume, old) = {
            let _turn = self.turn(&rec.id);
            let mut map = self.lock();
            let s = map.get_mut(&rec.id).ok_or_else(|| {
                CsiError::failed_precondition(format!("volume {} is not staged here", rec.id))
            })?;
            let v = s
                .volume
                .clone()
                .filter(|_| !matches!(rec.layout.kind, LayoutKind::Single | LayoutKind::Slice));
            let v = v.ok_or_else(|| {
                CsiError::failed_precondition(format!(
                    "volume {} has no redundancy: there is nothing to rebuild from",
                    rec.id
                ))
            })?;
            if let Some((role, ..)) = s.rebuilding {
                return Err(CsiError::aborted(format!(
                    "volume {} is rebuilding member {role} (drive {}) already: one rebuild \
                     of a volume at a time (nothing was changed)",
                    rec.id, s.drives[role]
                )));
            }
            let first = rec
                .members
                .iter()
                .enumerate()
                .position(|(role, m)| needs_rebuild(&s.drives, &s.unsynced, role, &m.drive));
            let Some(first) = first else {
                return Ok(Vec::new());
            };
            // Marks the volume as rebuilding from here to the end of the
            // last copy: an unstage between two members' copies would close
            // the engine volume with a member moved in the record but not
            // in the engine. Nothing below fails before the end clears it.
            s.rebuilding = Some((first, 0, 0));
            self.rebuilds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rec.id.clone(), v.clone());
            (v, (s.drives.clone(), s.unsynced.clone()))
        };
        // The end runs however the copies end, a panic of a progress
        // callback included: a mark left behind would refuse every unstage
        // of the volume for good.
        struct End<'a>(&'a NodeSide, &'a str);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                let (side, id) = (self.0, self.1);
                {
                    // In the turn: a call that checks for a rebuild in its
                    // turn sees one running until the record says it ended.
                    let _turn = side.turn(id);
                    if let Some(s) = side.lock().get_mut(id) {
                        s.rebuilding = None;
                    }
                }
                side.rebuilds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id);
                side.rebuild_ended.notify_all();
            }
        }
        let _end = End(self, &rec.id);
        self.rebuild_members(rec, &volume, &old, max_bytes_per_sec, progress)
    }

    /// The members' replacements and copies of [`NodeSide::rebuild_to`]
    /// (the volume marked rebuilding).
    fn rebuild_members(
        &self,
        rec: &VolumeRecord,
        volume: &EngineVolume,
        (old, unsynced): &(Vec<String>, Unsynced),
        max_bytes_per_sec: Option<u64>,
        progress: &(dyn Fn(usize, Progress) + Sync),
    ) -> Result<Vec<usize>, CsiError> {
        let mut done = Vec::new();
        for (role, m) in rec.members.iter().enumerate() {
            if !needs_rebuild(old, unsynced, role, &m.drive) {
                continue;
            }
            {
                // The member changes in the engine and in the record
                // together, in the turn.
                let _turn = self.turn(&rec.id);
                if !self.lock().contains_key(&rec.id) {
                    return Err(CsiError::failed_precondition(format!(
                        "volume {} is no longer staged here (the node is stopping?): member \
                         {role} was not rebuilt",
                        rec.id
                    )));
                }
                let (dev, claim) =
                    self.member_of(rec, &m.drive, m.offset, rec.layout.member_bytes.min(m.len))?;
                volume
                    .replace(role, Arc::new(dev))
                    .map_err(|e| engine_err(&format!("replacing member {role}"), e))?;
                if let Some(s) = self.lock().get_mut(&rec.id) {
                    s.drives[role] = m.drive.clone();
                    // Until its copy finishes: a copy that fails leaves the
                    // new member a spare out of sync in the engine, which a
                    // later rebuild_to must rebuild though the record
                    // already names its drive.
                    s.unsynced.insert(role);
                    s.rebuilding = Some((role, 0, 0));
                    // The replaced member's bytes go, the new member's are held.
                    if let Some(c) = s.claims.get_mut(role) {
                        *c = claim;
                    }
                }
            }
            let id = rec.id.clone();
            let logged = std::sync::atomic::AtomicU64::new(u64::MAX);
            // Progress goes into the record under the map's lock only, not
            // the turn: a step of the copy never waits for a publish's
            // mount. The record cannot go meanwhile (an unstage of a volume
            // rebuilding is refused).
            let report = |p: Progress| {
                if let Some(s) = self.lock().get_mut(&id) {
                    s.rebuilding = Some((role, p.done_bytes, p.total_bytes));
                }
                let tenth = (p.done_bytes * 10).checked_div(p.total_bytes).unwrap_or(10);
                if logged.swap(tenth, std::sync::atomic::Ordering::Relaxed) != tenth {
                    tracing::info!(
                        volume = %id, role, drive = %m.drive, done = p.done_bytes,
                        total = p.total_bytes, "rebuild progress {}%", tenth * 10
                    );
                }
                #[cfg(test)]
                self.test_point("rebuild", &id);
                progress(role, p);
            };
            volume
                .rebuild(
                    role,
                    &RebuildOptions {
                        max_bytes_per_sec,
                        progress: Some(&report),
                    },
                )
                .map_err(|e| engine_err(&format!("rebuilding member {role}"), e))?;
            if let Some(s) = self.lock().get_mut(&rec.id) {
                s.unsynced.remove(&role);
            }
            tracing::info!(volume = %rec.id, role, drive = %m.drive, "rebuilt");
            done.push(role);
        }
        Ok(done)
    }

    /// The node process is stopping (SIGTERM): makes every staged volume's
    /// acknowledged data durable and leaves the volumes staged, waiting at
    /// most `bound`.
    ///
    /// A staged volume belongs to the CO until it calls
    /// `NodeUnstageVolume`, so nothing is unmounted or detached: each
    /// volume's file system is synced (`syncfs` on the staging mount, or an
    /// `fsync` of the block device), which pushes it through the loop device
    /// and FUSE into the engine, and then the engine flushes every member.
    /// The FUSE exposures are then left to end with the process (the kernel
    /// aborts the connection when its file descriptor closes): tearing them
    /// down while a bind mount still holds the file waits forever on a lazy
    /// unmount. The state file keeps the volumes, so that the next node
    /// process re-assembles them at their next stage, as after a crash.
    ///
    /// Flushes that do not finish within `bound` (a member that stopped
    /// answering) are reported in the result, never waited for.
    ///
    /// A rebuild still copying ([`NodeSide::rebuild_to`]) is stopped, not
    /// waited for to the end: a copy runs for as long as the member is
    /// large (minutes to hours), the bound is the seconds the process has
    /// left. Stopping costs only its progress: the engine keeps the new
    /// member a spare out of sync, which the next rebuild copies again from
    /// its start. The call then waits, within `bound`, for each stopped
    /// rebuild to end (it stops before its next step, at most one chunk
    /// away), so that none writes on while the members are flushed and the
    /// process exits; those that do not end in time are reported.
    pub fn shutdown(&self, bound: std::time::Duration) -> ShutdownReport {
        let deadline = std::time::Instant::now() + bound;
        // Taken first: no rebuild starts on a volume once it is gone from
        // the map (rebuild_to checks it in the volume's turn).
        let staged = std::mem::take(&mut *self.lock());
        // Every engine volume, not only those rebuilding now: a rebuild
        // between its check and its first step stops at once too. The
        // engine stops scrubs and re-adds with it; the process is ending.
        for s in staged.values() {
            if let Some(v) = &s.volume {
                v.interrupt();
            }
        }
        let stopping: Vec<String> = {
            let running = self.rebuilds.lock().unwrap_or_else(|p| p.into_inner());
            for v in running.values() {
                v.interrupt();
            }
            running.keys().cloned().collect()
        };
        #[cfg(test)]
        self.test_point("shutdown-interrupted", "");
        let mut work = Vec::new();
        for (id, s) in &staged {
            let sync_path = if s.staging.as_os_str().is_empty() {
                None
            } else if s.block {
                s.device().map(|d| (d, true))
            } else {
                Some((s.staging.clone(), false))
            };
            work.push((id.clone(), sync_path, s.volume.clone()));
        }
        // Never torn down in this process (see above).
        std::mem::forget(staged);
        let (tx, rx) = std::sync::mpsc::channel();
        let pending: std::collections::BTreeSet<String> =
            work.iter().map(|(id, _, _)| id.clone()).collect();
        for (id, sync_path, volume) in work {
            let tx = tx.clone();
            // One thread per volume: a hung one does not hold up the others.
            let spawned = std::thread::Builder::new()
                .name("flush".into())
                .spawn(move || {
                    let r = flush_staged(sync_path.as_ref(), volume.as_deref());
                    let _ = tx.send((id, r));
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a flush thread");
            }
        }
        drop(tx);
        let mut running = self.rebuilds.lock().unwrap_or_else(|p| p.into_inner());
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            running = self
                .rebuild_ended
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let rebuilds_running: std::collections::BTreeSet<String> =
            running.keys().cloned().collect();
        drop(running);
        for id in &rebuilds_running {
            tracing::error!(volume = %id, bound_s = bound.as_secs(), "rebuild stopped at shutdown did not end in time");
        }
        let mut report = ShutdownReport {
            flushed: Vec::new(),
            failed: Vec::new(),
            unfinished: pending,
            rebuilds_stopped: stopping
                .into_iter()
                .filter(|id| !rebuilds_running.contains(id))
                .collect(),
            rebuilds_running,
        };
        for id in &report.rebuilds_stopped {
            tracing::info!(volume = %id, "rebuild stopped; the next rebuild copies the member again");
        }
        while !report.unfinished.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((id, r)) => {
                    report.unfinished.remove(&id);
                    match r {
                        Ok(()) => {
                            tracing::info!(volume = %id, "flushed; stays staged");
                            report.flushed.push(id);
                        }
                        Err(e) => {
                            tracing::error!(volume = %id, error = %e, "flush at shutdown failed");
                            report.failed.push((id, e));
                        }
                    }
                }
                Err(_) => break,
            }
        }
        for id in &report.unfinished {
            tracing::error!(volume = %id, bound_s = bound.as_secs(), "flush at shutdown did not finish in time");
        }
        report
    }

    /// Unstages everything (tools and tests that own every mount; a node
    /// process that stops uses [`NodeSide::shutdown`]).
    pub fn release_all(&self) {
        let staged: Vec<(String, PathBuf)> = self
            .lock()
            .iter()
            .map(|(id, s)| (id.clone(), s.staging.clone()))
            .collect();
        for (id, p) in staged {
            if let Err(e) = self.unstage(&id, &p) {
                tracing::warn!(volume = %id, error = %e, "unstage at shutdown failed");
            }
        }
    }
}

/// What [`NodeSide::shutdown`] did.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Volumes whose data is durable.
    pub flushed: Vec<String>,
    /// Volumes whose flush failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Volumes whose flush had not finished when the bound passed.
    pub unfinished: std::collections::BTreeSet<String>,
    /// Volumes whose rebuild was stopped and ended: a later
    /// [`NodeSide::rebuild_to`] copies the member again.
    pub rebuilds_stopped: Vec<String>,
    /// Volumes whose rebuild was stopped but had not ended when the bound
    /// passed.
    pub rebuilds_running: std::collections::BTreeSet<String>,
}

impl ShutdownReport {
    /// Whether every volume was flushed, and every rebuild stopped.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.unfinished.is_empty() && self.rebuilds_running.is_empty()
    }
}

/// Syncs a staged volume's file system (or block device) at `sync_path`,
/// then flushes its engine.
fn flush_staged(
    sync_path: Option<&(PathBuf, bool)>,
    volume: Option<&EngineVolume>,
) -> Result<(), String> {
    if let Some((p, block)) = sync_path {
        let f = fs::File::open(p).map_err(|e| format!("opening {}: {e}", quote_path(p)))?;
        if *block {
            f.sync_all()
        } else {
            rustix::fs::syncfs(&f).map_err(io::Error::from)
        }
        .map_err(|e| format!("syncing {}: {e}", quote_path(p)))?;
    }
    if let Some(v) = volume {
        v.flush().map_err(|e| format!("flushing the engine: {e}"))?;
    }
    Ok(())
}

/// Formats `dev` on first use and mounts it on `staging` (created if missing).
fn mount_staging(
    dev: &Path,
    staging: &Path,
    fs_type: csi_node::FsType,
    opts: &MountOptions,
) -> Result<(), CsiError> {
    fs::create_dir_all(staging)
        .map_err(|e| internal(format!("creating {}: {e}", quote_path(staging))))?;
    crate::expand::grow_ext4_before_mount(dev)?;
    csi_node::format_and_mount(dev, staging, fs_type, opts).map_err(CsiError::from)
}

/// A loop device over `len` bytes of `file` from `offset` (direct I/O).
/// Claims the `len` bytes at `offset` of drive file `path` for plain volume
/// `id` ([`BlockDevice::claim_range`]), as an engine volume claims its
/// slices: a plain volume goes to a loop device over the file, which claims
/// nothing. Held for as long as the volume is staged, so that an
/// overlapping volume (plain or not, in this process or another) is
/// refused with FAILED_PRECONDITION naming the file, the range and the rule.
fn claim_plain(id: &str, path: &Path, offset: u64, len: u64) -> Result<Claim, CsiError> {
    // The engine's error names the file.
    let file = FileDevice::open(path, CacheMode::Buffered)
        .map_err(|e| internal(format!("volume {id}: opening its drive file: {e}")))?;
    file.claim_range(&ClaimHolder::new(format!("volume {id}")), offset, len)
        .map_err(|e| {
            let what = format!("volume {id}: claiming its bytes of the drive");
            if e.kind() == io::ErrorKind::ResourceBusy {
                CsiError::failed_precondition(format!("{what}: {e}"))
            } else {
                internal(format!("{what}: {e}"))
            }
        })
}

/// The rule a refused claim of a drive range over NBD breaks (raid-engine
/// says the same of drive files).
const CLAIM_RULE: &str =
    "a byte of a drive belongs to one volume or export at a time; stop the other holder first";

/// [`NodeSide::unstage`]'s refusal of volume `id` while member `role`
/// (on `drive`) is being rebuilt, `done` of `total` bytes copied.
/// Whether member `role`, on `drive` in the wanted record, needs a rebuild
/// on a node whose record of the volume says `drives` and `unsynced`
/// ([`Staged::unsynced`]): its drive changed, or its last copy did not
/// finish.
fn needs_rebuild(drives: &[String], unsynced: &Unsynced, role: usize, drive: &str) -> bool {
    drives.get(role).map(String::as_str) != Some(drive) || unsynced.contains(&role)
}

fn rebuilding_refusal(id: &str, drive: &str, role: usize, done: u64, total: u64) -> CsiError {
    let pct = (done * 100).checked_div(total).unwrap_or(0);
    CsiError::aborted(format!(
        "volume {id} is rebuilding member {role} onto drive {drive} ({pct}%, {done}/{total} \
         bytes): NodeUnstageVolume is refused until the rebuild ends (retry it then; \
         nothing was unstaged)"
    ))
}

/// Ranges of drives reached over NBD that volumes assembled in this process
/// hold ([`claim_remote`]), by agent, drive and byte range.
static REMOTE_CLAIMS: Mutex<Vec<RemoteClaim>> = Mutex::new(Vec::new());

/// A range of a drive over NBD held by a volume: one entry per volume and
/// range, counted (the same volume may claim the same range again).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteClaim {
    /// The node side holding it ([`NodeSide`]'s `claim_id`): the same
    /// volume assembled by two node sides of the process is two holders.
    side: u64,
    agent: String,
    drive: String,
    start: u64,
    end: u64,
    volume: String,
}

/// Held by a [`Claim`]: releases one count of its entry when dropped.
struct RemoteClaimGuard(RemoteClaim);

impl Drop for RemoteClaimGuard {
    fn drop(&mut self) {
        let mut all = REMOTE_CLAIMS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = all.iter().position(|c| *c == self.0) {
            all.swap_remove(i);
        }
    }
}

/// Claims bytes `offset..offset + len` of `drive`, reached over NBD from
/// `agent` (the address [`NodeSide::set_remote`] resolved), for volume `volume` in this process, until the claim is
/// dropped. An NBD device claims nothing ([`BlockDevice::claim`]'s
/// default), and the JBOD agent holds the bytes of every volume it exports
/// to this server at once: without this, two volumes of this node whose
/// members overlap would both assemble over the same bytes. Overlapping
/// bytes another volume holds (or the same volume, for another member) are
/// refused with FAILED_PRECONDITION naming the drive, the range, the holder
/// and the rule; the same range of the same volume is granted again.
fn claim_remote(
    side: u64,
    volume: &str,
    agent: &str,
    drive: &str,
    offset: u64,
    len: u64,
) -> Result<Claim, CsiError> {
    // `agent` is the address `set_remote` resolved: one agent spelled two
    // ways is one agent.
    let agent = agent.to_string();
    let end = offset.checked_add(len).ok_or_else(|| {
        CsiError::failed_precondition(format!(
            "volume {volume}: its member on drive {drive} (over NBD from {agent}) of {len} \
             bytes at {offset} ends past the largest byte offset"
        ))
    })?;
    let want = RemoteClaim {
        side,
        agent,
        drive: drive.to_string(),
        start: offset,
        end,
        volume: volume.to_string(),
    };
    let mut all = REMOTE_CLAIMS.lock().unwrap_or_else(|p| p.into_inner());
    let held = all.iter().find(|c| {
        c.agent == want.agent
            && c.drive == want.drive
            && c.start < want.end
            && want.start < c.end
            && **c != want
    });
    if let Some(c) = held {
        let who = match (c.volume == want.volume, c.side == want.side) {
            (true, true) => format!("volume {} itself, for another member", c.volume),
            (true, false) => format!("volume {} assembled by another node side", c.volume),
            (false, _) => format!("volume {}", c.volume),
        };
        return Err(CsiError::failed_precondition(format!(
            "volume {volume}: drive {drive} over NBD from {} bytes {offset}..{end} is in use by \
             {who} in this process (it holds bytes {}..{}); {CLAIM_RULE}",
            want.agent, c.start, c.end
        )));
    }
    all.push(want.clone());
    Ok(Claim::new(RemoteClaimGuard(want)))
}

/// The byte range `(offset, len)` of its backing file that loop device
/// `dev` serves (sysfs `loop/offset` and `loop/sizelimit`); `None` when it
/// is not a loop device or shows no size limit.
fn loop_range(dev: &Path) -> Option<(u64, u64)> {
    let name = dev.file_name()?.to_str()?;
    let read = |f: &str| -> Option<u64> {
        fs::read_to_string(format!("/sys/block/{name}/loop/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let len = read("sizelimit")?;
    (len > 0).then_some((read("offset")?, len))
}

fn attach_range(file: &Path, offset: u64, len: u64) -> Result<LoopDevice, CsiError> {
    let opts = AttachOptions {
        direct_io: true,
        offset,
        size_limit: Some(len),
        ..AttachOptions::default()
    };
    let l = LoopDevice::attach_with(file, &opts).map_err(CsiError::from)?;
    let dev = l.path().to_path_buf();
    // The new size can reach the block layer a moment after losetup returns:
    // never format a device that does not yet show the volume's size.
    for _ in 0..100 {
        if csi_node::block_device_size(&dev).ok() == Some(len) {
            return Ok(l);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let seen = csi_node::block_device_size(&dev).map_err(CsiError::from)?;
    let _ = l.detach();
    Err(internal(format!(
        "{} shows {seen} bytes, not the volume's {len}",
        quote_path(&dev)
    )))
}

/// Why the `mdadm` backend cannot stage here.
fn mdadm_unavailable() -> CsiError {
    let md = fs::read_to_string("/proc/mdstat").is_ok();
    if md {
        CsiError::failed_precondition(
            "the mdadm backend is not available in this composer build; run the node with \
             --backend userspace",
        )
    } else {
        CsiError::failed_precondition(
            "the mdadm backend needs Linux md, which this host lacks (no /proc/mdstat); run the \
             node with --backend userspace",
        )
    }
}

/// The staged state of a plain drive range recorded by an earlier process,
/// when its loop device is still attached to its drive file.
fn adopt(cfg: &NodeConfig, id: &str, r: &StagedRecord) -> Option<Staged> {
    // A LUKS mapping's passphrase is not kept on disk: the next stage opens
    // it again.
    if r.fuse_dir.is_some() || r.luks.is_some() {
        return None;
    }
    let l = recorded_loop(cfg, r)?;
    let drive = cfg.data_dir.join(format!("{}.img", r.drives.first()?));
    let backing = l.backing_file()?;
    if fs::canonicalize(&backing).ok()? != fs::canonicalize(&drive).ok()? {
        return None;
    }
    if !r.block && !csi_node::is_mount_point(&r.staging).unwrap_or(false) {
        return None;
    }
    // The claim the earlier process held on the device's bytes died with
    // it: take it again, or leave the volume to the next stage (which
    // refuses while another holder has them).
    let (offset, len) = loop_range(l.path())?;
    let claim = match claim_plain(id, &drive, offset, len) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(volume = id, device = %l.path().display(), error = %e,
                "staged before the restart, but another holder has its bytes of the drive");
            return None;
        }
    };
    Some(Staged {
        staging: r.staging.clone(),
        block: r.block,
        drives: r.drives.clone(),
        volume: None,
        exposure: None,
        loopdev: Some(l),
        fuse_dir: PathBuf::new(),
        rebuilding: None,
        unsynced: Default::default(),
        luks: None,
        claims: vec![claim],
    })
}

/// The loop device an earlier process recorded for `r`, if it is still the
/// attachment that process made: by its disk sequence number where one was
/// recorded; in state written before they were, a plain drive range's device
/// that is still over its drive file (an engine volume's device is found
/// below its FUSE directory instead). `None` when the recorded number has
/// been detached, whoever attached it since: that device is not ours.
/// The devices of a volume staged by an earlier process that its staging mount can be made
/// from: the LUKS mapping, the recorded loop device, and the loop devices over files below its
/// (dead) FUSE mount.
fn recorded_devices(cfg: &NodeConfig, r: &StagedRecord) -> Vec<PathBuf> {
    let mut own: Vec<PathBuf> = r
        .luks
        .iter()
        .map(|name| Path::new("/dev/mapper").join(name))
        .collect();
    own.extend(recorded_loop(cfg, r).map(|l| l.path().to_path_buf()));
    if let Some(dir) = &r.fuse_dir {
        own.extend(
            LoopDevice::backed_under(dir)
                .iter()
                .map(|l| l.path().to_path_buf()),
        );
    }
    own
}

/// Unmounts from `path` (the request's `field`) the mounts of volume `id` stacked there, one of
/// `own` (see [`NodeSide::own_sources`]), and nothing else: a mount someone else stacked on it
/// (an operator's tmpfs, another driver's volume) is FAILED_PRECONDITION naming the field, the
/// path and what is mounted, and stays mounted, with the volume's mount under it.
pub(crate) fn unmount_own_at(
    field: &str,
    path: &Path,
    own: &[PathBuf],
    id: &str,
) -> Result<(), CsiError> {
    match csi_node::unmount_own(path, own) {
        Ok(_) => Ok(()),
        Err(csi_node::Error::ForeignMount { mounted, .. }) => {
            Err(CsiError::failed_precondition(format!(
                "{field} {} has {mounted} mounted on it, which is not volume {id}'s and which \
                 this plugin did not mount; unmount it or use another path",
                quote_path(path)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn recorded_loop(cfg: &NodeConfig, r: &StagedRecord) -> Option<LoopDevice> {
    let path = r.loopdev.as_deref()?;
    if let Some(seq) = r.loop_diskseq {
        return LoopDevice::open_attachment(path, seq);
    }
    if r.fuse_dir.is_some() {
        return None;
    }
    let l = LoopDevice::open(path)?;
    let drive = cfg.data_dir.join(format!("{}.img", r.drives.first()?));
    let same = fs::canonicalize(l.backing_file()?).ok()? == fs::canonicalize(&drive).ok()?;
    same.then_some(l)
}

/// Detaches loop device `l` that an earlier process left for volume `id`,
/// waiting as an unstage does. A detach the kernel defers because the device
/// is still open (a udev probe; a bind mount of its file system that the CO
/// has not unpublished) completes at the device's last close, and counts as
/// done when the kernel shows it pending; a device still attached without
/// that is an error, for the CO to retry.
fn detach_left(id: &str, l: &LoopDevice) -> Result<(), CsiError> {
    if l.detach_and_wait(LOOP_DETACH_WAIT)
        .map_err(CsiError::from)?
    {
        return Ok(());
    }
    if l.detaches_at_last_close() {
        tracing::info!(device = %l.path().display(), volume = id,
            "loop device left by the earlier process still open; the kernel detaches it at its last close");
        return Ok(());
    }
    if l.backing_file().is_none() {
        return Ok(());
    }
    Err(internal(format!(
        "volume {id}: loop device {} left by the earlier node process is still attached after \
         a detach",
        quote_path(l.path())
    )))
}

/// Whether an `encryptionFormat=luks` volume can stage here; else
/// `FAILED_PRECONDITION` naming what the host lacks: never a plaintext
/// volume, never the engine's encryption instead of LUKS.
fn luks_available(id: &str) -> Result<(), CsiError> {
    let missing = crate::luks::dm_crypt_missing();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CsiError::failed_precondition(format!(
        "volume {id}: encryptionFormat=luks needs dm-crypt, and this host lacks {}; \
         use encryptionFormat=engine",
        missing.join(" and ")
    )))
}

/// Opens the LUKS2 mapping of an `encryptionFormat=luks` volume on `dev`
/// (formatting it on first use) when `luks_key` is given, and formats and
/// mounts the resulting device on the staging path when `mount` is given.
/// On failure nothing of it stays open (the caller detaches `dev`).
fn open_and_mount(
    id: &str,
    dev: &LoopDevice,
    luks_key: Option<Vec<u8>>,
    mount: Option<(&Path, csi_node::FsType, &MountOptions)>,
) -> Result<Option<LuksMapping>, CsiError> {
    let luks = crate::luks::Luks::new(crate::luks::SystemCryptsetup);
    let mapping = match luks_key {
        Some(key) => {
            let name = crate::luks::mapper_name(id);
            luks.format_and_open(dev.path(), &name, &key)
                .map_err(|e| internal(format!("volume {id}: {e}")))?;
            Some(LuksMapping { name, key })
        }
        None => None,
    };
    let device = match &mapping {
        Some(m) => Path::new("/dev/mapper").join(&m.name),
        None => dev.path().to_path_buf(),
    };
    if let Some((staging, fs_type, opts)) = mount
        && let Err(e) = mount_staging(&device, staging, fs_type, opts)
    {
        if let Some(m) = &mapping
            && let Err(c) = luks.close(&m.name)
        {
            tracing::error!(volume = id, error = %c, "closing the LUKS mapping after a failed mount");
        }
        return Err(e);
    }
    Ok(mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drive file the engine cannot open: the answer says what the
    /// composer was doing and names the file once (the engine's error names
    /// it). Before, the composer named it a second time.
    #[test]
    fn a_failed_open_of_a_drive_file_names_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-drive.img");
        let err = claim_plain("v1", &path, 0, 4096).unwrap_err();
        let msg = err.to_string();
        let name = path.to_str().unwrap();
        assert_eq!(msg.matches(name).count(), 1, "{msg}");
        assert!(msg.contains("volume v1: opening its drive file"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
