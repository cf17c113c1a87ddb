//! The volume: md-compatible RAID over member devices.
//!
//! Every address goes through `raid`'s [`Geometry`] (or, for a linear
//! volume, through the concatenation of the members), so the data area of
//! each member holds the bytes md would hold at the same offsets. The data
//! area starts at the data offset mdadm would choose; the superblock and the
//! write-intent bitmap sit before it (see [`crate::meta`]).
//!
//! Concurrency: reads and writes take the I/O gate shared and may run in
//! parallel from any number of threads; a rebuild or resync step takes it
//! exclusively for the one chunk it copies, so a foreground write is never
//! lost between the copy's read and its write. Large requests fan out over
//! the members on per-volume worker threads.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use raid::{FailureModel, Geometry, Layout, Level, Location, MemberContent};

use crate::bitmap::Bitmap;
use crate::crypt::{Cipher, Secret};
use crate::device::{BlockDevice, Claim, ClaimHolder, DIRECT_ALIGN, PagePool};
use crate::error::{EngineError, Result, invalid, names};
use crate::fault::Fault;
use crate::meta::{
    BITMAP_OFFSET, LINEAR_LEVEL, MAX_MEMBERS, RoleState, SB_OFFSET, SB_SIZE, Superblock, random,
};

mod parity;

/// Bytes per sector.
pub const SECTOR: u64 = 512;

/// One step of a rebuild or resync of a member.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Copy `sectors` from member `src` at `src_sector` to `dst_sector`.
    Copy {
        dst_sector: u64,
        src: usize,
        src_sector: u64,
        sectors: u64,
    },
    /// Recompute the member's sectors from the rest of the stripe row.
    Reconstruct { sector: u64, sectors: u64 },
}

impl Step {
    fn sectors(&self) -> u64 {
        match *self {
            Step::Copy { sectors, .. } | Step::Reconstruct { sectors, .. } => sectors,
        }
    }
    fn end(&self) -> u64 {
        match *self {
            Step::Copy {
                dst_sector,
                sectors,
                ..
            } => dst_sector + sectors,
            Step::Reconstruct { sector, sectors } => sector + sectors,
        }
    }
}

/// How a volume places data on its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeLayout {
    /// Concatenation (JBOD, md's `linear`): member 0's data area, then
    /// member 1's, and so on. No redundancy.
    Linear,
    /// An md personality and layout as `raid` maps it. A single drive is
    /// RAID1 over one member.
    Md(Layout),
}

impl VolumeLayout {
    /// Parse `linear`/`jbod`/`single` or an md level with an optional
    /// layout after a colon (`raid10:f2`, `raid6:left-symmetric`, `raid1`).
    /// An unknown level is [`EngineError::Invalid`] with field `level`, its
    /// rule listing every level; a layout that is not one of the level's
    /// is `raid`'s `BadLayout`.
    pub fn parse(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "linear" | "jbod" => return Ok(VolumeLayout::Linear),
            "single" => return Ok(VolumeLayout::Md(Layout::Raid1)),
            _ => {}
        }
        let (level, layout) = lower.split_once(':').unwrap_or((&lower, ""));
        let level: Level = level.parse().map_err(|e| match e {
            // The `raid` crate's list leaves out the levels only this crate has.
            raid::RaidError::BadLevel(_) => crate::error::invalid(
                "level",
                format!(
                    "{} is not one of linear (or jbod), single, raid0, raid1, raid4, raid5, \
                     raid6, raid10 (also 0/1/4/5/6/10), optionally with :LAYOUT (raid10:f2, raid5:ls)",
                    storage_units::quote(s.trim())
                ),
            ),
            e => e.into(),
        })?;
        Ok(VolumeLayout::Md(Layout::parse(level, layout)?))
    }
}

impl std::fmt::Display for VolumeLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeLayout::Linear => f.write_str("linear"),
            VolumeLayout::Md(l) => write!(f, "{l}"),
        }
    }
}

/// Parameters of [`Volume::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Placement of data.
    pub layout: VolumeLayout,
    /// Chunk size in sectors (mdadm's default 1024 = 512 KiB; ignored for
    /// RAID1 and linear).
    pub chunk_sectors: u64,
    /// Data offset in sectors; `None` uses mdadm 4.x's v1.2 default for the
    /// smallest member.
    pub data_offset_sectors: Option<u64>,
    /// Member bytes per write-intent bitmap bit (rounded up to a power of two
    /// of sectors, and raised if the bitmap would not fit before the data).
    pub bitmap_region_bytes: u64,
    /// Encrypt the data with AES-256-XTS under a key derived from this secret.
    pub secret: Option<Secret>,
}

impl CreateOptions {
    /// Defaults for a layout: 512 KiB chunks, mdadm's data offset, 64 MiB
    /// bitmap regions, no encryption.
    pub fn new(layout: VolumeLayout) -> Self {
        CreateOptions {
            layout,
            chunk_sectors: raid::mdadm::DEFAULT_CHUNK_SECTORS,
            data_offset_sectors: None,
            bitmap_region_bytes: 64 << 20,
            secret: None,
        }
    }

    /// Whether [`Volume::create`] would accept these options for
    /// `devices`, as far as their count and sizes decide (the member count
    /// of the level, the chunk, the data offset, room on every device),
    /// with the error it would give: without claiming, reading or writing
    /// any device, so that a caller can say a wrong option before asking
    /// anything else (the command line checks this before it looks for
    /// members of other volumes on the devices). `create` may still refuse
    /// a device in use, one given twice, or one whose I/O fails.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use raid_engine::{BlockDevice, CacheMode, CreateOptions, FileDevice, VolumeLayout};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let devs: Vec<Arc<dyn BlockDevice>> = (0..3)
    ///     .map(|i| -> std::io::Result<Arc<dyn BlockDevice>> {
    ///         let p = dir.path().join(format!("m{i}"));
    ///         Ok(Arc::new(FileDevice::create(p, 8 << 20, CacheMode::Buffered)?))
    ///     })
    ///     .collect::<Result<_, _>>()?;
    /// let raid6 = CreateOptions::new(VolumeLayout::parse("raid6")?);
    /// let e = raid6.check(&devs).unwrap_err();
    /// assert!(e.to_string().contains("needs 4..=200 members, got 3"));
    /// assert!(CreateOptions::new(VolumeLayout::parse("raid5")?).check(&devs).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self, devices: &[Arc<dyn BlockDevice>]) -> Result<()> {
        plan_create(devices, self).map(drop)
    }
}

/// Health of a member as the volume sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// In sync; read and written.
    Active,
    /// Not used: failed, missing, or never rebuilt.
    Failed,
    /// Being rebuilt or resynced: written, and read below `in_sync_sectors`.
    Recovering {
        /// Member sectors below which the member is in sync.
        in_sync_sectors: u64,
    },
}

/// One member's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Role (member index).
    pub role: usize,
    /// State.
    pub state: MemberState,
    /// The device, if one is attached, as messages name it
    /// ([`BlockDevice::shown`]).
    pub device: Option<String>,
}

/// Progress of a rebuild or resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written to the target so far.
    pub done_bytes: u64,
    /// Bytes the whole operation writes.
    pub total_bytes: u64,
}

/// Parameters of [`Volume::rebuild`] and [`Volume::readd`].
#[derive(Default)]
pub struct RebuildOptions<'a> {
    /// Throttle: at most this many bytes per second written to the target.
    pub max_bytes_per_sec: Option<u64>,
    /// Called after every step.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
}

impl std::fmt::Debug for RebuildOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebuildOptions")
            .field("max_bytes_per_sec", &self.max_bytes_per_sec)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// One mismatch found by [`Volume::scrub`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// First logical sector of the compared piece (RAID1/10) or the stripe
    /// number (RAID4/5/6).
    pub at: u64,
    /// Sectors compared.
    pub sectors: u64,
    /// Members whose copy (or parity) differed from the reference.
    pub members: Vec<usize>,
}

/// Result of [`Volume::scrub`].
///
/// Every byte of the volume is counted in exactly one of
/// [`checked_bytes`](Self::checked_bytes),
/// [`unverifiable_bytes`](Self::unverifiable_bytes) and
/// [`unreadable_bytes`](Self::unreadable_bytes), so a scrub that could not
/// compare everything says how much it left out.
/// [`is_complete`](Self::is_complete) tells whether it checked everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubReport {
    /// Bytes of member data read.
    pub bytes_read: u64,
    /// Mismatches found.
    pub mismatches: Vec<Mismatch>,
    /// Whether the mismatches were repaired (copies rewritten from the
    /// first readable copy, parity recomputed from the data). In a RAID6
    /// stripe with one member unavailable a single syndrome cannot tell
    /// which member is wrong; like md's repair, the parity that was checked
    /// is taken for the wrong one and rewritten.
    pub repaired: bool,
    /// Volume bytes whose copies (or whose stripe's parity) were compared.
    /// A RAID6 stripe with one member unavailable is checked with the
    /// redundancy it has left: the unavailable member is computed from the
    /// rest and the remaining parity compared (Q, or P when Q is the one
    /// missing).
    pub checked_bytes: u64,
    /// Volume bytes that are readable but could not be checked because
    /// nothing is left to compare them with: only one readable copy (a
    /// degraded mirror; every byte of a linear or RAID0 volume), or a
    /// stripe with no redundancy left (RAID4/5 with an unavailable member,
    /// RAID6 with two: its data can be computed from the rest, but not
    /// verified).
    pub unverifiable_bytes: u64,
    /// Volume bytes that have no readable copy and cannot be computed: lost
    /// while the volume ran (more members failed than the layout
    /// tolerates). Reads of them answer [`EngineError::Unavailable`].
    pub unreadable_bytes: u64,
    /// Members that failed during this scrub (a read, or a repair write,
    /// answered an error), in the order they failed. As md does, and as a
    /// read error on the data path does, each was marked failed (and so
    /// recorded in the other members' superblocks) and the scrub carried on
    /// from the members left: the volume is now degraded, or, past what the
    /// layout tolerates, has lost data ([`Volume::health`] says which). The
    /// bytes that depended on a failed member are counted in the other
    /// fields by what was left to check them with.
    pub failed_members: Vec<FailedMember>,
}

/// A member that failed during [`Volume::scrub`] (see
/// [`ScrubReport::failed_members`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedMember {
    /// The member's role.
    pub role: usize,
    /// Its device, as messages name it ([`BlockDevice::shown`]).
    pub device: String,
    /// What failed: `read error: ...` or `repair write error: ...`.
    pub error: String,
}

impl ScrubReport {
    /// Whether every byte of the volume was checked (nothing unverifiable
    /// or unreadable).
    pub fn is_complete(&self) -> bool {
        self.unverifiable_bytes == 0 && self.unreadable_bytes == 0
    }
}

/// Whether a volume still holds all its data, from the members available.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Every member is present and in sync.
    Whole,
    /// Some members are unavailable (missing, failed, or not yet rebuilt),
    /// but every byte still has a readable copy or can be computed from
    /// parity: the volume serves all its data, without redundancy for some.
    Degraded {
        /// The unavailable roles, ascending.
        unavailable: Vec<usize>,
    },
    /// Some data has no readable copy and cannot be computed, according to
    /// `raid`'s failure analysis (`raid::FailureModel::loses_data`): reads
    /// and writes of it answer [`EngineError::Unavailable`], and
    /// [`Volume::assemble`] refuses to start such a volume.
    DataLost {
        /// The unavailable roles, ascending.
        unavailable: Vec<usize>,
        /// Which roles are unavailable (with their devices where known)
        /// and which data has no copy, e.g. `role 2 (missing) and role 3
        /// (missing) are unavailable; roles 2 and 3 hold both copies of the
        /// odd chunks (...)`.
        reason: String,
    },
}

impl Health {
    /// The unavailable roles (empty when whole).
    pub fn unavailable(&self) -> &[usize] {
        match self {
            Health::Whole => &[],
            Health::Degraded { unavailable } | Health::DataLost { unavailable, .. } => unavailable,
        }
    }

    /// Whether some data has no readable copy.
    pub fn loses_data(&self) -> bool {
        matches!(self, Health::DataLost { .. })
    }
}

/// The condition of one role as the superblocks record it, read by
/// [`Volume::examine`] without starting the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoleCondition {
    /// A device holds the role and the volume records it in sync.
    Active,
    /// No device given holds the role.
    Missing,
    /// A device holds the role, but the volume recorded it failed while it
    /// was in sync: [`Volume::readd`] brings it back with a bitmap resync.
    Faulty,
    /// A device holds the role, but it was never (fully) rebuilt: it needs
    /// [`Volume::replace`] and [`Volume::rebuild`].
    Spare,
}

impl std::fmt::Display for RoleCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleCondition::Active => "Active",
            RoleCondition::Missing => "Missing",
            RoleCondition::Faulty => "Faulty (recorded failed)",
            RoleCondition::Spare => "Spare (not in sync)",
        })
    }
}

/// One role of an [`Examination`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleExamination {
    /// Role (member index).
    pub role: usize,
    /// What the superblocks record for it.
    pub condition: RoleCondition,
    /// The device holding it, if one was given, as messages name it
    /// ([`BlockDevice::shown`]).
    pub device: Option<String>,
    /// Whether the newest superblock records the role in sync. A role
    /// [`RoleCondition::Missing`] now that was in sync when the volume last
    /// ran is recorded failed when [`Volume::assemble`] starts the volume
    /// without it (mdadm refuses to start such an array unless given
    /// `--run`).
    pub recorded_active: bool,
}

/// What the members' superblocks say about a volume, read by
/// [`Volume::examine`] without starting it (like `mdadm --examine`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Examination {
    /// Placement of data.
    pub layout: VolumeLayout,
    /// Usable size in bytes (for a linear volume with a missing member,
    /// that member's size is taken to be the size recorded by the newest
    /// superblock's own member).
    pub size: u64,
    /// Whether data is encrypted at rest.
    pub encrypted: bool,
    /// Whether the volume was last closed cleanly (otherwise assembly
    /// resyncs the regions the bitmap marks).
    pub clean: bool,
    /// The newest superblock's event count.
    pub events: u64,
    /// The volume's identity (its array uuid, as
    /// `8-4-4-4-12` hex digits): members of one volume share it.
    pub uuid: String,
    /// Every role, in role order.
    pub roles: Vec<RoleExamination>,
    /// Whether the data is all there; [`Health::DataLost`] means
    /// [`Volume::assemble`] refuses to start the volume.
    pub health: Health,
}

impl Examination {
    /// Whether [`Volume::assemble`] would start the volume from these
    /// members (its health is not [`Health::DataLost`]).
    pub fn can_start(&self) -> bool {
        !self.health.loses_data()
    }
}

const ACTIVE: u8 = 0;
const FAILED: u8 = 1;
const RECOVERING: u8 = 2;

#[derive(Debug)]
struct Slot {
    dev: RwLock<Option<Arc<dyn BlockDevice>>>,
    state: AtomicU8,
    watermark: AtomicU64,
}

impl Slot {
    fn device(&self) -> Option<Arc<dyn BlockDevice>> {
        self.dev.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug)]
enum Mapper {
    Md(Geometry),
    Linear { starts: Vec<u64>, sizes: Vec<u64> },
}

impl Mapper {
    /// The volume's usable size in sectors.
    fn sectors(&self) -> u64 {
        match self {
            Mapper::Md(g) => g.array_sectors(),
            Mapper::Linear { sizes, .. } => sizes.iter().sum(),
        }
    }

    /// The placement of data it maps.
    fn layout(&self) -> VolumeLayout {
        match self {
            Mapper::Md(g) => VolumeLayout::Md(g.layout()),
            Mapper::Linear { .. } => VolumeLayout::Linear,
        }
    }
}

#[derive(Debug)]
struct Meta {
    array_uuid: [u8; 16],
    level: u32,
    layout: u32,
    layout_name: String,
    chunk: u64,
    components: Vec<u64>,
    data_offset: u64,
    events: u64,
    roles: Vec<(RoleState, [u8; 16])>,
    encryption: Option<([u8; 32], [u8; 32])>,
}

/// One piece of a request: a run of logical sectors with the same copies.
#[derive(Debug, Clone)]
struct Piece {
    logical: u64,
    sectors: u64,
    copies: Vec<Location>,
    /// Which part of a split read this is (shifts the preferred copy).
    part: usize,
}

/// A user-space RAID volume. `Send + Sync`: share it in an `Arc` between
/// the threads that serve it.
#[derive(Debug)]
pub struct Volume {
    mapper: Mapper,
    slots: Vec<Slot>,
    meta: Mutex<Meta>,
    bitmap: Option<Bitmap>,
    cipher: Option<Cipher>,
    gate: RwLock<()>,
    /// Serialises [`Volume::fail_member`]'s check with its failure.
    fail_lock: Mutex<()>,
    /// Set by [`Volume::interrupt`]: long operations stop at their next step.
    interrupted: AtomicBool,
    stripe_locks: Vec<Mutex<()>>,
    /// Serialise the read-modify-write of unaligned writes whose aligned
    /// windows share an edge block (blocks share locks modulo the count).
    rmw_locks: Vec<Mutex<()>>,
    /// Aligned buffers for unaligned writes and encryption.
    pages: PagePool,
    data_offset_bytes: u64,
    size_sectors: u64,
    /// Worker threads for member I/O, started at the first request that
    /// goes to several members at once (`None` if they could not start).
    workers: OnceLock<Option<rayon::ThreadPool>>,
    /// At most this many threads (the caller included) do one request's
    /// member I/O (0: one per member).
    member_threads: AtomicUsize,
    /// How many workers the next request wakes to help the caller
    /// ([`Volume::fan_out`]): lowered to those of the last request that
    /// found a member's I/O left to do, raised by one after a request in
    /// which every one did.
    helpers: AtomicUsize,
    /// This volume, as the holder of its members' claims.
    holder: ClaimHolder,
    /// The claims on the devices attached (and given), released when the
    /// volume is dropped or a device replaced.
    claims: Mutex<Claims>,
    #[cfg(feature = "fault-injection")]
    faults: crate::fault::Faults,
}

/// Devices claimed by a volume, each with its claim.
type Claims = Vec<(Arc<dyn BlockDevice>, Claim)>;

/// A device checked and claimed as the replacement of one role of one
/// volume ([`Volume::reserve_replacement`]), to give to
/// [`Volume::replace_reserved`]. It holds the device's claim: dropped
/// unused, it releases it.
#[must_use = "the replacement's claim is released when it is dropped"]
#[derive(Debug)]
pub struct Replacement {
    array_uuid: [u8; 16],
    role: usize,
    device: Arc<dyn BlockDevice>,
    claim: Claim,
}

impl Replacement {
    /// The role it is reserved for.
    pub fn role(&self) -> usize {
        self.role
    }

    /// The device reserved.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }
}

/// Whether `a` and `b` are the same device object.
fn same_device(a: &Arc<dyn BlockDevice>, b: &Arc<dyn BlockDevice>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// `device`'s claim for `holder`, or the error that says it is `what`
/// (the member's role: the device's own error names the device).
fn claim_device(holder: &ClaimHolder, device: &dyn BlockDevice, what: String) -> Result<Claim> {
    match device.claim(holder) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => Err(EngineError::InUse {
            what,
            detail: e.to_string(),
        }),
        Err(e) => Err(EngineError::Io {
            what: format!("{what}: claim"),
            source: e,
        }),
    }
}

/// Claims on every one of `devices` for a new volume, before anything is
/// read or written: a device another holder (a volume, a serve-nbd
/// export) has, in this
/// process or another, is refused by name.
fn claim_members(devices: &[Arc<dyn BlockDevice>]) -> Result<(ClaimHolder, Claims)> {
    let holder = ClaimHolder::new("a volume");
    let claims = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let what = format!("devices[{i}]");
            Ok((d.clone(), claim_device(&holder, &**d, what)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((holder, claims))
}

/// At most this many member worker threads per volume.
const MAX_WORKERS: usize = 32;

/// Requests of at least this many bytes fan out over the members on the
/// worker threads (128 KiB: a FUSE write of the loop device qualifies).
const PARALLEL_BYTES: usize = 128 * 1024;

/// Number of locks for the read-modify-write of unaligned writes.
const RMW_LOCKS: usize = 64;

/// Member alignments above this are not honoured by widening writes (a
/// write would read too much to align itself).
const MAX_ALIGN: u64 = 64 * 1024;

fn layout_from_sb(level: u32, name: &str) -> Option<Layout> {
    let level = match level {
        0 => Level::Raid0,
        1 => Level::Raid1,
        4 => Level::Raid4,
        5 => Level::Raid5,
        6 => Level::Raid6,
        10 => Level::Raid10,
        _ => return None,
    };
    Layout::parse(level, name).ok()
}

/// [`Volume::create`]'s member count rule.
fn check_member_count(n: usize, opts: &CreateOptions) -> Result<()> {
    // The engine's limit where it is the tighter one (its superblock's
    // role table), said with the level's own minimum: raid's message
    // would name raid's larger maximum.
    let allowed = match opts.layout {
        VolumeLayout::Md(l) => l.member_range(),
        VolumeLayout::Linear => 1..=MAX_MEMBERS,
    };
    let (min, max) = (*allowed.start(), (*allowed.end()).min(MAX_MEMBERS));
    if n < min || n > max {
        // Every layout's maximum in raid is above the engine's.
        let why = if n > max {
            format!(" (a raid-engine superblock holds at most {MAX_MEMBERS} roles)")
        } else {
            String::new()
        };
        return Err(invalid(
            "devices",
            format!("{} needs {min}..={max} members{why}, got {n}", opts.layout),
        ));
    }
    Ok(())
}

/// What [`Volume::create`] lays out on `devices`, from their sizes and
/// the options alone.
struct CreatePlan {
    mapper: Mapper,
    components: Vec<u64>,
    chunk: u64,
    data_offset: u64,
    region: u64,
    regions: usize,
    bytes: usize,
}

/// The layout of a new volume on `devices`, or the rule its options or
/// device sizes break; reads and claims nothing.
fn plan_create(devices: &[Arc<dyn BlockDevice>], opts: &CreateOptions) -> Result<CreatePlan> {
    let n = devices.len();
    check_member_count(n, opts)?;
    let dev_sectors: Vec<u64> = devices.iter().map(|d| d.size() / SECTOR).collect();
    let min_dev = dev_sectors.iter().copied().min().unwrap_or(0);
    let chunk = match opts.layout {
        VolumeLayout::Md(Layout::Raid1) | VolumeLayout::Linear => 0,
        _ => opts.chunk_sectors,
    };
    let data_offset = opts
        .data_offset_sectors
        .unwrap_or_else(|| raid::mdadm::default_data_offset_v12(min_dev, chunk));
    // Compared in sectors: a data offset near u64::MAX sectors has no
    // byte count (the device-size check below refuses it).
    if data_offset < (BITMAP_OFFSET + SECTOR).div_ceil(SECTOR) {
        return Err(invalid(
            "data_offset_sectors",
            format!(
                "{data_offset} sectors leave no room for the superblock and bitmap (at least {} needed)",
                (BITMAP_OFFSET + SECTOR) / SECTOR
            ),
        ));
    }
    let (mapper, components) = match opts.layout {
        VolumeLayout::Md(layout) => {
            let g =
                raid::mdadm::geometry_for_devices(layout, chunk, &dev_sectors, Some(data_offset))?;
            let comps = g.member_sectors().to_vec();
            (Mapper::Md(g), comps)
        }
        VolumeLayout::Linear => {
            let mut sizes = Vec::with_capacity(n);
            for (i, &d) in dev_sectors.iter().enumerate() {
                let s = d.saturating_sub(data_offset) / 8 * 8;
                if s == 0 {
                    return Err(invalid(
                        format!("devices[{i}]"),
                        format!(
                            "{} ({} bytes) has no room after the data offset of {data_offset} sectors",
                            devices[i].shown(),
                            devices[i].size()
                        ),
                    ));
                }
                sizes.push(s);
            }
            (linear_mapper(sizes.clone()), sizes)
        }
    };
    let max_comp = components.iter().copied().max().unwrap_or(0);
    let room = data_offset * SECTOR - BITMAP_OFFSET;
    let mut region = (opts.bitmap_region_bytes / SECTOR)
        .max(8)
        .next_power_of_two();
    let (regions, bytes) = loop {
        let regions = max_comp.div_ceil(region) as usize;
        let bytes = regions.div_ceil(8).div_ceil(512) * 512;
        if bytes as u64 <= room {
            break (regions, bytes);
        }
        region *= 2;
    };
    Ok(CreatePlan {
        mapper,
        components,
        chunk,
        data_offset,
        region,
        regions,
        bytes,
    })
}

fn level_code(l: &VolumeLayout) -> u32 {
    match l {
        VolumeLayout::Linear => LINEAR_LEVEL,
        VolumeLayout::Md(l) => match l.level() {
            Level::Raid0 => 0,
            Level::Raid1 => 1,
            Level::Raid4 => 4,
            Level::Raid5 => 5,
            Level::Raid6 => 6,
            Level::Raid10 => 10,
        },
    }
}

/// A member I/O of a request: member, byte offset on the member, and the
/// piece of the caller's buffer.
struct WriteJob<'a> {
    member: usize,
    piece: usize,
    offset: u64,
    data: &'a [u8],
}

struct ReadJob<'a> {
    member: usize,
    piece: usize,
    offset: u64,
    data: &'a mut [u8],
}

impl Volume {
    /// Create a new volume on `devices` (role = position), writing fresh
    /// superblocks and an empty bitmap. Existing data areas are not
    /// initialised: like `mdadm --create --assume-clean`, followed here by
    /// an explicit [`Volume::resync_all`] if the caller wants mirrors and
    /// parity to agree on never-written space.
    ///
    /// One device given twice is refused ([`EngineError::Invalid`], field
    /// `devices[i]`). A create that fails after it started writing (that
    /// refusal, an I/O error) writes back the bytes its superblock and
    /// bitmap writes replaced, so that a member of another volume given by
    /// mistake stays that volume's member.
    ///
    /// Every device is claimed for the volume first
    /// ([`BlockDevice::claim`]) until it is dropped: one that another
    /// holder (a volume, `raid-engine serve-nbd`) has, in this process or
    /// another, is refused with [`EngineError::InUse`] naming it, before
    /// anything is read or written.
    pub fn create(devices: Vec<Arc<dyn BlockDevice>>, opts: &CreateOptions) -> Result<Volume> {
        check_member_count(devices.len(), opts)?;
        let claimed = claim_members(&devices)?;
        let CreatePlan {
            mapper,
            components,
            chunk,
            data_offset,
            region,
            regions,
            bytes,
        } = plan_create(&devices, opts)?;
        let n = devices.len();
        let encryption = match &opts.secret {
            Some(s) => {
                let salt = random::<32>()?;
                Some((salt, crate::crypt::key_check(s, &salt)))
            }
            None => None,
        };
        let mut roles = Vec::with_capacity(n);
        for _ in 0..n {
            roles.push((RoleState::Active, random::<16>()?));
        }
        let meta = Meta {
            array_uuid: random::<16>()?,
            level: level_code(&opts.layout),
            layout: match opts.layout {
                VolumeLayout::Md(l) => l.md_number(),
                VolumeLayout::Linear => 0,
            },
            layout_name: match opts.layout {
                VolumeLayout::Md(l) => l.mdadm_name().unwrap_or_default(),
                VolumeLayout::Linear => String::new(),
            },
            chunk,
            components,
            data_offset,
            events: 1,
            roles,
            encryption,
        };
        let cipher = match (&opts.secret, &meta.encryption) {
            (Some(s), Some((salt, check))) => Some(Cipher::new(s, salt, check)?),
            _ => None,
        };
        let redundant = is_redundant(&mapper);
        let vol = Volume::build(
            mapper,
            devices.into_iter().map(Some).collect(),
            meta,
            redundant.then(|| Bitmap::new(region, regions, bytes, Vec::new())),
            cipher,
            claimed,
        );
        // What the metadata writes below overwrite, read before any of
        // them: a create that fails (a device given twice, an I/O error)
        // puts it back, so that a member of another volume given by
        // mistake stays that volume's member. A device given twice is
        // read twice before the first write, so both copies are its old
        // bytes.
        let meta_len = (BITMAP_OFFSET - SB_OFFSET) as usize + bytes;
        let mut saved = Vec::with_capacity(n);
        for slot in &vol.slots {
            let Some(d) = slot.device() else { continue };
            let mut b = vec![0u8; meta_len];
            d.read_at(&mut b, SB_OFFSET)
                .map_err(device_err(&*d, |name| {
                    prefixed(name, "read the metadata area before creating")
                }))?;
            saved.push((d, b));
        }
        let restore = |e: EngineError| {
            for (d, b) in saved.iter().rev() {
                if let Err(re) = d.write_at(b, SB_OFFSET).and_then(|()| d.flush()) {
                    tracing::warn!(device = %d.shown(), error = %re, "restoring the metadata area after a failed create");
                }
            }
            e
        };
        // Zero the bitmap area, then write the superblocks.
        vol.persist_bitmap().map_err(restore)?;
        vol.write_superblocks(false).map_err(restore)?;
        // One device given twice (a path and a link to it, one NBD export
        // under two names) would hold two roles in one data area, and no
        // assembly could tell them apart: each member must read back the
        // superblock written for its own role.
        for (r, slot) in vol.slots.iter().enumerate() {
            let Some(d) = slot.device() else { continue };
            let other = read_superblock(&*d).map_err(restore)?.role as usize;
            if other != r {
                return Err(restore(invalid(
                    format!("devices[{r}]"),
                    format!(
                        "{} is the same device as devices[{other}] ({}): the superblock written for role {r} reads back as role {other}'s; give each member once",
                        d.shown(),
                        vol.slots
                            .get(other)
                            .and_then(|s| s.device())
                            .map_or_else(|| "?".into(), |o| o.shown()),
                    ),
                )));
            }
        }
        Ok(vol)
    }

    fn build(
        mapper: Mapper,
        devices: Vec<Option<Arc<dyn BlockDevice>>>,
        meta: Meta,
        bitmap: Option<Bitmap>,
        cipher: Option<Cipher>,
        (holder, claims): (ClaimHolder, Claims),
    ) -> Volume {
        let size_sectors = mapper.sectors();
        let slots = devices
            .into_iter()
            .map(|d| Slot {
                state: AtomicU8::new(if d.is_some() { ACTIVE } else { FAILED }),
                dev: RwLock::new(d),
                watermark: AtomicU64::new(u64::MAX),
            })
            .collect();
        Volume {
            data_offset_bytes: meta.data_offset * SECTOR,
            mapper,
            slots,
            meta: Mutex::new(meta),
            bitmap,
            cipher,
            gate: RwLock::new(()),
            fail_lock: Mutex::new(()),
            interrupted: AtomicBool::new(false),
            stripe_locks: (0..parity::STRIPE_LOCKS).map(|_| Mutex::new(())).collect(),
            rmw_locks: (0..RMW_LOCKS).map(|_| Mutex::new(())).collect(),
            pages: PagePool::default(),
            size_sectors,
            workers: OnceLock::new(),
            member_threads: AtomicUsize::new(0),
            helpers: AtomicUsize::new(MAX_WORKERS),
            holder,
            claims: Mutex::new(claims),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
    }

    /// Read and check the members' superblocks without starting the
    /// volume or writing anything (like `mdadm --examine`): every role's
    /// recorded condition, and whether the data is all there. An operator
    /// needs this most when [`Volume::assemble`] refuses to start the
    /// volume. `secret` is not needed; if given, it is checked as
    /// `assemble` checks it.
    ///
    /// Errors: as [`Volume::assemble`] for unreadable, damaged or
    /// inconsistent superblocks and a wrong secret; never
    /// [`EngineError::Unavailable`] (see [`Examination::health`]).
    pub fn examine(
        devices: &[Arc<dyn BlockDevice>],
        secret: Option<&Secret>,
    ) -> Result<Examination> {
        let found = Found::read(devices.to_vec())?;
        if secret.is_some() {
            found.cipher(secret)?;
        }
        let size = found.mapper.sectors() * SECTOR;
        Ok(Examination {
            layout: found.mapper.layout(),
            size,
            encrypted: found.auth.encryption.is_some(),
            clean: found.auth.clean,
            events: found.auth.events,
            uuid: uuid_text(&found.auth.array_uuid),
            roles: (0..found.placed.len())
                .map(|r| RoleExamination {
                    role: r,
                    condition: found.condition(r),
                    device: found.placed[r].as_ref().map(|d| d.shown()),
                    recorded_active: found.auth.roles[r].0 == RoleState::Active,
                })
                .collect(),
            health: found.health()?,
        })
    }

    /// Assemble a volume from its members, given in any order; members that
    /// are absent are treated as failed. `secret` is required for an
    /// encrypted volume.
    ///
    /// The superblock with the highest event count describes the volume. A
    /// present member that it records as failed is attached but stays
    /// failed until [`Volume::readd`]; a member that is absent is recorded
    /// failed (and the event count bumped) when the volume starts without
    /// it, so that when it comes back with its old data it is not read as
    /// if in sync: it too needs [`Volume::readd`]. If the volume was not
    /// shut down cleanly, the regions its bitmap marks are resynced before
    /// this returns, so that every copy (and parity) agrees again.
    ///
    /// Like md, which refuses to start an array without enough operational
    /// devices, this refuses with [`EngineError::Unavailable`], and writes
    /// nothing, when the missing or recorded-failed members hold every copy
    /// of some data according to `raid`'s failure analysis
    /// (`raid::FailureModel::loses_data`): a linear or RAID0 volume without
    /// any one of its members, RAID1 without all members, RAID4/5 without
    /// two, RAID6 without three, RAID10 without every copy of some chunk
    /// (for a 4-member `n2`, roles 2 and 3, not roles 0 and 2). The message
    /// names the unavailable roles (with their devices where known), the
    /// layout, and which data has no copy; [`Volume::examine`] gives the
    /// same answer without trying to start. There is no way to start such
    /// a volume anyway: nothing in this crate or its callers needs to.
    ///
    /// The devices are claimed as [`Volume::create`] claims them: one that
    /// another holder has is refused with
    /// [`EngineError::InUse`], before its superblock is read.
    pub fn assemble(devices: Vec<Arc<dyn BlockDevice>>, secret: Option<&Secret>) -> Result<Volume> {
        let claimed = claim_members(&devices)?;
        let found = Found::read(devices)?;
        if let Health::DataLost { reason, .. } = found.health()? {
            return Err(EngineError::Unavailable(format!(
                "cannot start the {} volume of {} members: {reason}",
                found.mapper.layout(),
                found.placed.len()
            )));
        }
        let cipher = found.cipher(secret)?;
        let Found {
            auth,
            mapper,
            comps,
            placed,
            present_sb,
            ..
        } = found;
        let n = placed.len();
        // The bitmap: the union over members that are up to date.
        let redundant = is_redundant(&mapper);
        let bitmap = if redundant {
            let mut bits = vec![0u8; auth.bitmap_bytes as usize];
            for (r, d) in placed.iter().enumerate() {
                let (Some(d), Some(sb)) = (d, &present_sb[r]) else {
                    continue;
                };
                if auth.roles[r].0 != RoleState::Active || sb.events != auth.events {
                    continue;
                }
                let mut b = vec![0u8; auth.bitmap_bytes as usize];
                d.read_at(&mut b, BITMAP_OFFSET)
                    .map_err(device_err(&**d, |name| prefixed(name, "read bitmap")))?;
                bits.iter_mut().zip(&b).for_each(|(x, y)| *x |= y);
            }
            let regions = comps
                .iter()
                .max()
                .copied()
                .unwrap_or(0)
                .div_ceil(auth.bitmap_region.max(1)) as usize;
            Some(Bitmap::new(
                auth.bitmap_region,
                regions,
                auth.bitmap_bytes as usize,
                bits,
            ))
        } else {
            None
        };
        let meta = Meta {
            array_uuid: auth.array_uuid,
            level: auth.level,
            layout: auth.layout,
            layout_name: auth.layout_name.clone(),
            chunk: auth.chunk_sectors,
            components: comps,
            data_offset: auth.data_offset,
            events: auth.events,
            roles: auth.roles.clone(),
            encryption: auth.encryption,
        };
        let vol = Volume::build(mapper, placed, meta, bitmap, cipher, claimed);
        for r in 0..n {
            if vol.meta_lock().roles[r].0 != RoleState::Active {
                vol.slots[r].state.store(FAILED, Ordering::SeqCst);
            } else if vol.slots[r].device().is_none() {
                // Started without it: from now on it misses writes.
                vol.mark_failed_absent(r);
            }
        }
        if !vol.active_roles().is_empty() {
            vol.resync_dirty()?;
        }
        vol.write_superblocks(false)?;
        Ok(vol)
    }

    /// The volume's member workers (one per member, up to [`MAX_WORKERS`]).
    fn workers(&self) -> Option<&rayon::ThreadPool> {
        self.workers
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.slots.len().clamp(1, MAX_WORKERS))
                    .thread_name(|i| format!("raid-engine-io-{i}"))
                    .build()
                    .map_err(|e| {
                        tracing::warn!(error = %e, "no member worker threads: member I/O runs one member after the other");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Limit how many threads (the calling thread included) do the member
    /// I/O of one request at once: `1` does it one member after the other
    /// on the calling thread; `0` (the default) allows one thread per
    /// member, up to 32. One per member suits members that wait (drives,
    /// NBD); members that only cost CPU (files on tmpfs) gain nothing from
    /// more threads than cores. The threads share a request's members
    /// between them: whichever is free takes the next member's I/O, so a
    /// worker that wakes late leaves its share to the others. A request
    /// wakes no more workers than found work in the one before (plus one):
    /// where the caller ends up doing every member's I/O before they wake
    /// (members in memory, busy cores), waking them only cost wake-ups the
    /// caller then waited for.
    pub fn set_member_threads(&self, n: usize) {
        self.member_threads.store(n, Ordering::Relaxed);
    }

    /// Run `f` over groups of jobs (a group is one member's I/O of a
    /// request). With `parallel`, up to the member-thread limit of threads
    /// run them at once: the calling thread and the volume's member
    /// workers each take the next group not yet taken until none is left,
    /// and this returns when all are done. Results come in group order.
    fn fan_out<J: Send, R: Send>(
        &self,
        groups: Vec<Vec<J>>,
        parallel: bool,
        f: &(dyn Fn(J) -> R + Sync),
    ) -> Vec<R> {
        let limit = match self.member_threads.load(Ordering::Relaxed) {
            0 => MAX_WORKERS + 1,
            n => n,
        };
        let threads = groups.len().min(limit);
        let pool = match self.workers() {
            Some(p) if parallel && threads >= 2 => p,
            _ => return groups.into_iter().flatten().map(f).collect(),
        };
        let n = groups.len();
        let todo: Vec<Mutex<Vec<J>>> = groups.into_iter().map(Mutex::new).collect();
        let done: Vec<Mutex<Vec<R>>> = (0..n).map(|_| Mutex::new(Vec::new())).collect();
        let next = AtomicUsize::new(0);
        // Whether a thread found any group left: a worker that wakes after
        // the others took every group cost a wake-up for nothing, and the
        // caller waited for it all the same (a scope ends when each job it
        // spawned has run).
        let work = || {
            let mut took = false;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break took;
                }
                took = true;
                let jobs = std::mem::take(&mut *todo[i].lock().unwrap_or_else(|p| p.into_inner()));
                let out: Vec<R> = jobs.into_iter().map(f).collect();
                *done[i].lock().unwrap_or_else(|p| p.into_inner()) = out;
            }
        };
        let wanted = threads - 1;
        let helpers = self.helpers.load(Ordering::Relaxed).clamp(1, wanted);
        let useful = AtomicUsize::new(0);
        pool.in_place_scope(|s| {
            for _ in 0..helpers {
                s.spawn(|_| {
                    if work() {
                        useful.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            work();
        });
        self.helpers.store(
            next_helpers(helpers, useful.into_inner(), wanted),
            Ordering::Relaxed,
        );
        done.into_iter()
            .flat_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    fn meta_lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Usable size in bytes.
    pub fn size(&self) -> u64 {
        self.size_sectors * SECTOR
    }

    /// Number of members.
    pub fn members(&self) -> usize {
        self.slots.len()
    }

    /// The md geometry (`None` for a linear volume).
    pub fn geometry(&self) -> Option<&Geometry> {
        match &self.mapper {
            Mapper::Md(g) => Some(g),
            Mapper::Linear { .. } => None,
        }
    }

    /// Byte offset of the data area on every member.
    pub fn data_offset_bytes(&self) -> u64 {
        self.data_offset_bytes
    }

    /// Whether data is encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Every member's state.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.slots
            .iter()
            .enumerate()
            .map(|(role, s)| MemberStatus {
                role,
                state: match s.state.load(Ordering::SeqCst) {
                    ACTIVE => MemberState::Active,
                    RECOVERING => MemberState::Recovering {
                        in_sync_sectors: s.watermark.load(Ordering::SeqCst),
                    },
                    _ => MemberState::Failed,
                },
                device: s.device().map(|d| d.shown()),
            })
            .collect()
    }

    /// Whether the volume still holds all its data, from the members that
    /// are active now: [`Health::DataLost`] once members failing one after
    /// another (I/O errors, [`Volume::fail_member`]) have taken every copy
    /// of some data, by `raid`'s failure analysis. Reads and writes of
    /// such data answer [`EngineError::Unavailable`]; the rest is still
    /// served. A member being rebuilt counts as unavailable until its
    /// rebuild ends.
    pub fn health(&self) -> Health {
        // With no role added this is the current health; the roles are
        // below the member count, so the analysis cannot refuse them;
        // should it, the volume is at least degraded.
        self.health_if_failed(&[])
            .unwrap_or_else(|_| Health::Degraded {
                unavailable: (0..self.slots.len())
                    .filter(|&r| self.slots[r].state.load(Ordering::SeqCst) != ACTIVE)
                    .collect(),
            })
    }

    fn active_roles(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&r| self.slots[r].state.load(Ordering::SeqCst) == ACTIVE)
            .collect()
    }

    fn degraded(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.state.load(Ordering::SeqCst) != ACTIVE)
    }

    fn writable(&self, m: usize) -> Option<Arc<dyn BlockDevice>> {
        let st = self.slots[m].state.load(Ordering::SeqCst);
        if st == ACTIVE || st == RECOVERING {
            self.slots[m].device()
        } else {
            None
        }
    }

    /// Whether member `m` is written (as [`Volume::writable`], without
    /// taking a reference to its device: the per-request checks).
    fn is_writable(&self, m: usize) -> bool {
        let st = self.slots[m].state.load(Ordering::SeqCst);
        (st == ACTIVE || st == RECOVERING)
            && self.slots[m]
                .dev
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }

    fn readable(&self, m: usize, end_sector: u64) -> bool {
        let s = &self.slots[m];
        match s.state.load(Ordering::SeqCst) {
            ACTIVE => true,
            RECOVERING => end_sector <= s.watermark.load(Ordering::SeqCst),
            _ => false,
        }
    }

    /// Mark member `role` failed: it is no longer read or written, and the
    /// bitmap keeps every region written from now on for its return.
    ///
    /// Like `mdadm --fail`, which answers "Device or resource busy" for the
    /// last in-sync device of a RAID1 or RAID10, this refuses, and changes
    /// nothing (member states, superblocks, event count and bitmap stay as
    /// they were), when failing `role` on top of the members already
    /// failed, missing or being rebuilt would leave some data with no
    /// readable copy, by `raid`'s failure analysis (the rule
    /// [`Volume::assemble`] applies; [`Volume::health_if_failed`] asks
    /// without failing anything). That is every member of a linear or
    /// RAID0 volume, the last member of a RAID1, a RAID4/5 member once one
    /// is unavailable, a RAID6 member once two are, and for RAID10 a member
    /// holding the last copy of some chunk. The refusal is
    /// [`EngineError::Invalid`] with field `role`, not
    /// [`EngineError::Unavailable`]: the data is still all there, and the
    /// request is what cannot be granted while the volume is in this state.
    /// Its message names the role, its device and which data would have no
    /// copy left.
    ///
    /// A role that has already failed is a no-op success. Members whose I/O
    /// fails are marked failed whatever the consequence (that is what RAID
    /// does; [`Volume::health`] then says whether data was lost); to fail a
    /// member deliberately beyond what the layout tolerates, use
    /// [`Volume::fail_member_forced`].
    pub fn fail_member(&self, role: usize) -> Result<()> {
        self.check_role(role)?;
        // Two callers failing the last two copies at once must not both
        // pass the check: the check and the failure happen under one lock.
        let _serial = self.fail_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.slots[role].state.load(Ordering::SeqCst) != FAILED
            && let Health::DataLost { reason, .. } = self.health_if_failed(&[role])?
        {
            // The reason names each role's device, this one's too: once.
            return Err(invalid(
                "role",
                format!(
                    "failing role {role} of the {} volume of {} members is refused \
                     because it would lose data (as mdadm --fail refuses the last copy): {reason}",
                    self.mapper.layout(),
                    self.slots.len()
                ),
            ));
        }
        self.fail_member_forced(role)
    }

    /// Mark member `role` failed even if that leaves some data with no
    /// readable copy: reads and writes of such data then answer
    /// [`EngineError::Unavailable`] and [`Volume::health`] reports
    /// [`Health::DataLost`], as when members fail through I/O errors.
    ///
    /// Use [`Volume::fail_member`] for everything an operator asks for; this
    /// is for tests and simulations that need a volume that lost data at
    /// run time (md reaches that state only through I/O errors: `mdadm
    /// --fail` cannot). A role that has already failed is a no-op success.
    /// Failing the last active member answers [`EngineError::Unavailable`]
    /// (`every member has failed`), the member failed all the same.
    pub fn fail_member_forced(&self, role: usize) -> Result<()> {
        self.check_role(role)?;
        self.mark_failed(role, "failed by the caller");
        self.write_superblocks(false)
    }

    /// What [`Volume::health`] would answer if the `roles` failed now, on
    /// top of the members already failed, missing or being rebuilt; nothing
    /// is changed. [`Health::DataLost`] is exactly when
    /// [`Volume::fail_member`] would refuse them (for one role) and its
    /// reason says which data would have no copy left; a role given here is
    /// labelled `if failed` in it. Answers [`EngineError::Invalid`] for a
    /// role not below the member count.
    pub fn health_if_failed(&self, roles: &[usize]) -> Result<Health> {
        for &r in roles {
            self.check_role(r)?;
        }
        let unavailable: Vec<usize> = (0..self.slots.len())
            .filter(|&r| roles.contains(&r) || self.slots[r].state.load(Ordering::SeqCst) != ACTIVE)
            .collect();
        let label = |r: usize| {
            let state = match self.slots[r].state.load(Ordering::SeqCst) {
                ACTIVE => "if failed",
                RECOVERING => "being rebuilt",
                _ => "failed",
            };
            match self.slots[r].device() {
                Some(d) => format!("role {r} ({}, {state})", d.shown()),
                None => format!("role {r} (missing)"),
            }
        };
        assess(&self.mapper, unavailable, &label)
    }

    fn check_role(&self, role: usize) -> Result<()> {
        if role >= self.slots.len() {
            return Err(invalid(
                "role",
                format!("{role} is not below the member count {}", self.slots.len()),
            ));
        }
        Ok(())
    }

    /// Record role `role`, which has no device but was in sync, as failed
    /// (a new event), so that its device, should it come back with old
    /// data, is not taken as in sync.
    fn mark_failed_absent(&self, role: usize) {
        tracing::warn!(role, "member missing: the volume starts without it");
        let mut m = self.meta_lock();
        m.roles[role].0 = RoleState::Faulty;
        m.events += 1;
    }

    fn mark_failed(&self, role: usize, why: &str) {
        let prev = self.slots[role].state.swap(FAILED, Ordering::SeqCst);
        if prev == FAILED {
            return;
        }
        tracing::warn!(role, why, "member failed");
        let mut m = self.meta_lock();
        m.roles[role].0 = if prev == ACTIVE {
            RoleState::Faulty
        } else {
            RoleState::Spare
        };
        m.events += 1;
    }

    /// Write every attached, non-failed member's superblock (and flush it).
    fn write_superblocks(&self, clean: bool) -> Result<()> {
        for _ in 0..=self.slots.len() {
            let mut failed_now = Vec::new();
            let m = self.meta_lock();
            for (r, s) in self.slots.iter().enumerate() {
                let st = s.state.load(Ordering::SeqCst);
                if st == FAILED {
                    continue;
                }
                let Some(dev) = s.device() else { continue };
                let sb = Superblock {
                    array_uuid: m.array_uuid,
                    device_uuid: m.roles[r].1,
                    level: m.level,
                    layout: m.layout,
                    layout_name: m.layout_name.clone(),
                    chunk_sectors: m.chunk,
                    role: r as u32,
                    component_sectors: m.components[r],
                    data_offset: m.data_offset,
                    bitmap_region: self.bitmap.as_ref().map_or(0, |b| b.region),
                    bitmap_bytes: self.bitmap.as_ref().map_or(0, |b| b.bytes as u64),
                    events: m.events,
                    recovery_offset: if st == ACTIVE {
                        u64::MAX
                    } else {
                        s.watermark.load(Ordering::SeqCst)
                    },
                    encryption: m.encryption,
                    clean,
                    roles: m.roles.clone(),
                };
                let res = dev
                    .write_at(&sb.encode(), SB_OFFSET)
                    .and_then(|()| dev.flush());
                if let Err(e) = res {
                    tracing::warn!(role = r, error = %e, "superblock write failed");
                    failed_now.push(r);
                }
            }
            drop(m);
            if failed_now.is_empty() {
                return self.check_alive();
            }
            for r in failed_now {
                self.mark_failed(r, "superblock write failed");
            }
        }
        self.check_alive()
    }

    fn check_alive(&self) -> Result<()> {
        if self.active_roles().is_empty() {
            return Err(EngineError::Unavailable("every member has failed".into()));
        }
        Ok(())
    }

    fn persist_bitmap(&self) -> Result<()> {
        let Some(bm) = &self.bitmap else {
            return Ok(());
        };
        let _p = bm.persist.lock().unwrap_or_else(|p| p.into_inner());
        let image = bm.snapshot();
        // Every member at once; all of them are durable before this returns
        // (and so before the data writes the bits announce).
        let targets: Vec<Vec<(usize, Arc<dyn BlockDevice>)>> = (0..self.slots.len())
            .filter_map(|r| self.writable(r).map(|d| vec![(r, d)]))
            .collect();
        let results = self.fan_out(targets, true, &|(r, dev): (usize, Arc<dyn BlockDevice>)| {
            let res = dev
                .write_at(&image, BITMAP_OFFSET)
                .and_then(|()| dev.flush());
            (r, res)
        });
        let mut failed = Vec::new();
        for (r, res) in results {
            if let Err(e) = res {
                tracing::warn!(role = r, error = %e, "bitmap write failed");
                failed.push(r);
            }
        }
        if !failed.is_empty() {
            for r in failed {
                self.mark_failed(r, "bitmap write failed");
            }
            self.write_superblocks(false)?;
        }
        self.check_alive()
    }

    /// Split logical sectors `start..end` into pieces with one set of copies.
    fn pieces(&self, start: u64, end: u64, for_read: bool) -> Result<Vec<Piece>> {
        let mut out = Vec::new();
        let mut pos = start;
        while pos < end {
            let (len, copies) = match &self.mapper {
                Mapper::Md(g) => {
                    let span = match g.chunk_sectors() {
                        0 if for_read => 256,
                        0 => end - pos,
                        c => c - pos % c,
                    };
                    let m = g.map(pos)?;
                    (span.min(end - pos), m.copies.to_vec())
                }
                Mapper::Linear { starts, sizes } => {
                    let i = starts.partition_point(|&s| s <= pos) - 1;
                    let off = pos - starts[i];
                    (
                        (sizes[i] - off).min(end - pos),
                        vec![Location {
                            member: i,
                            sector: off,
                        }],
                    )
                }
            };
            out.push(Piece {
                logical: pos,
                sectors: len,
                copies,
                part: 0,
            });
            pos += len;
        }
        Ok(out)
    }

    fn is_parity(&self) -> bool {
        matches!(
            self.geometry().map(|g| g.layout()),
            Some(Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_))
        )
    }

    /// For a large read of a near-copies RAID10, read each chunk in parts
    /// from different copies, so that every member works (reading only the
    /// rotated first copies keeps half of the members idle per row).
    fn split_near_copies(&self, pieces: Vec<Piece>) -> Vec<Piece> {
        let near = match self.geometry().map(|g| g.layout()) {
            Some(Layout::Raid10(r)) if r.far() == 1 => r.copies() as u64,
            _ => return pieces,
        };
        let mut out = Vec::with_capacity(pieces.len() * near as usize);
        for p in pieces {
            let part = (p.sectors / near).max(8) / 8 * 8;
            let mut off = 0;
            let mut k = 0;
            while off < p.sectors {
                let len = if k + 1 == near as usize {
                    p.sectors - off
                } else {
                    part.min(p.sectors - off)
                };
                out.push(Piece {
                    logical: p.logical + off,
                    sectors: len,
                    copies: p
                        .copies
                        .iter()
                        .map(|l| Location {
                            member: l.member,
                            sector: l.sector + off,
                        })
                        .collect(),
                    part: k,
                });
                off += len;
                k += 1;
            }
        }
        out
    }

    /// Preferred copy order for reading a piece: spread sequential reads
    /// over the members (near copies rotate by row; far and offset layouts
    /// read the first copy, which is already striped over every member).
    fn read_order(&self, p: &Piece) -> Vec<Location> {
        let n = p.copies.len();
        let rot = match &self.mapper {
            Mapper::Md(g) => match g.layout() {
                Layout::Raid1 => (p.logical / 256) as usize % n.max(1),
                Layout::Raid10(r) if r.far() == 1 => {
                    let row = p.logical / g.chunk_sectors() / g.data_disks().max(1) as u64;
                    (row as usize + p.part) % n.max(1)
                }
                _ => 0,
            },
            Mapper::Linear { .. } => 0,
        };
        let mut v = p.copies.clone();
        v.rotate_left(rot);
        v
    }

    fn read_sectors(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        let parity = self.is_parity();
        let sectors = buf.len() as u64 / SECTOR;
        let mut pieces = self.pieces(start, start + sectors, true)?;
        if sectors * SECTOR >= PARALLEL_BYTES as u64 {
            pieces = self.split_near_copies(pieces);
        }
        let mut jobs: Vec<ReadJob<'_>> = Vec::with_capacity(pieces.len());
        let mut rest = buf;
        let mut unreadable = Vec::new();
        let mut degraded: Vec<ReadJob<'_>> = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let (head, tail) = rest.split_at_mut((p.sectors * SECTOR) as usize);
            rest = tail;
            let choice = self
                .read_order(p)
                .into_iter()
                .find(|l| self.readable(l.member, l.sector + p.sectors));
            match choice {
                Some(l) => jobs.push(ReadJob {
                    member: l.member,
                    piece: i,
                    offset: self.data_offset_bytes + l.sector * SECTOR,
                    data: head,
                }),
                None if parity => degraded.push(ReadJob {
                    member: p.copies[0].member,
                    piece: i,
                    offset: 0,
                    data: head,
                }),
                None => unreadable.push(p.logical),
            }
        }
        if let Some(l) = unreadable.first() {
            return Err(EngineError::Unavailable(format!(
                "logical sector {l} has no readable copy (members: {:?})",
                self.status()
                    .iter()
                    .map(|s| (s.role, s.state))
                    .collect::<Vec<_>>()
            )));
        }
        let parallel = sectors * SECTOR >= PARALLEL_BYTES as u64;
        let groups = group_by_member(jobs, |j| j.member, self.slots.len());
        let results = self.fan_out(groups, parallel, &|j: ReadJob<'_>| match self
            .member_read(j.member, j.data, j.offset)
        {
            Ok(()) => None,
            Err(e) => Some((j, e)),
        });
        // Retry failed pieces on the other copies, failing members as we go.
        for (job, err) in results.into_iter().flatten() {
            self.mark_failed(job.member, &format!("read error: {err}"));
            if parity {
                self.write_superblocks(false)?;
                degraded.push(job);
                continue;
            }
            let p = &pieces[job.piece];
            let mut done = false;
            for l in self.read_order(p) {
                if !self.readable(l.member, l.sector + p.sectors) {
                    continue;
                }
                let Some(d) = self.slots[l.member].device() else {
                    continue;
                };
                match d.read_at(job.data, self.data_offset_bytes + l.sector * SECTOR) {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => self.mark_failed(l.member, &format!("read error: {e}")),
                }
            }
            self.write_superblocks(false)?;
            if !done {
                return Err(EngineError::Unavailable(format!(
                    "logical sectors {}..{}: every copy failed to read (last error on member {}: {err})",
                    p.logical,
                    p.logical + p.sectors,
                    job.member
                )));
            }
        }
        for job in degraded {
            self.reconstruct_read(&pieces[job.piece], job.data)?;
        }
        Ok(())
    }

    fn regions_for(&self, pieces: &[Piece]) -> Vec<usize> {
        let Some(bm) = &self.bitmap else {
            return Vec::new();
        };
        // Sorted and without repeats (a plain vector: one allocation where
        // a set would allocate its nodes).
        let mut regions = Vec::with_capacity(pieces.len() * 2);
        for p in pieces {
            for c in &p.copies {
                regions.extend(bm.regions_of(c.sector, p.sectors));
            }
        }
        regions.sort_unstable();
        regions.dedup();
        regions
    }

    fn write_sectors(&self, start: u64, data: &[u8]) -> Result<()> {
        if self.is_parity() {
            return self.write_parity(start, data);
        }
        let sectors = data.len() as u64 / SECTOR;
        let pieces = self.pieces(start, start + sectors, false)?;
        // The member writes, each member's state looked at once per copy;
        // a piece without a writable copy fails the request before any
        // bit is set or byte written.
        let copies = pieces.first().map_or(0, |p| p.copies.len());
        let mut jobs = Vec::with_capacity(pieces.len() * copies);
        let mut off = 0usize;
        for (i, p) in pieces.iter().enumerate() {
            let len = (p.sectors * SECTOR) as usize;
            let before = jobs.len();
            for c in &p.copies {
                if self.is_writable(c.member) {
                    jobs.push(WriteJob {
                        member: c.member,
                        piece: i,
                        offset: self.data_offset_bytes + c.sector * SECTOR,
                        data: &data[off..off + len],
                    });
                }
            }
            if jobs.len() == before {
                return Err(EngineError::Unavailable(format!(
                    "logical sector {} has no writable copy",
                    p.logical
                )));
            }
            off += len;
        }
        let regions = self.begin_intent(self.regions_for(&pieces))?;
        let write = |j: WriteJob<'_>| {
            (
                j.piece,
                j.member,
                self.member_write(j.member, j.data, j.offset),
            )
        };
        let results: Vec<_> = if data.len() >= PARALLEL_BYTES {
            let groups = group_by_member(jobs, |j| j.member, self.slots.len());
            self.fan_out(groups, true, &write)
        } else {
            // Small writes: on this thread, in piece order (no grouping).
            jobs.into_iter().map(write).collect()
        };
        let mut ok = vec![false; pieces.len()];
        let mut failures = Vec::new();
        for (piece, member, res) in results {
            match res {
                Ok(()) => ok[piece] = true,
                Err(e) => failures.push((member, e)),
            }
        }
        let had_failures = !failures.is_empty();
        for (member, e) in failures {
            self.mark_failed(member, &format!("write error: {e}"));
        }
        if let Some(bm) = &self.bitmap {
            bm.end(&regions);
        }
        if had_failures {
            self.write_superblocks(false)?;
        }
        if let Some(i) = ok.iter().position(|&o| !o) {
            return Err(EngineError::Unavailable(format!(
                "logical sectors {}..{}: every copy failed to write",
                pieces[i].logical,
                pieces[i].logical + pieces[i].sectors
            )));
        }
        Ok(())
    }

    fn check_io(&self, len: usize, offset: u64) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(invalid(
                "offset",
                format!(
                    "range {offset}+{len} is beyond the end of the volume ({} bytes)",
                    self.size()
                ),
            )),
        }
    }

    /// Read `buf.len()` bytes at byte `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_io(buf.len(), offset)?;
        if buf.is_empty() {
            return Ok(());
        }
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        self.read_locked(buf, offset)
    }

    fn read_locked(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let s0 = offset / SECTOR;
        let s1 = (offset + buf.len() as u64).div_ceil(SECTOR);
        if offset.is_multiple_of(SECTOR) && (buf.len() as u64).is_multiple_of(SECTOR) {
            self.read_sectors(s0, buf)?;
            if let Some(c) = &self.cipher {
                c.decrypt(buf, s0);
            }
            return Ok(());
        }
        let mut tmp = vec![0u8; ((s1 - s0) * SECTOR) as usize];
        self.read_sectors(s0, &mut tmp)?;
        if let Some(c) = &self.cipher {
            c.decrypt(&mut tmp, s0);
        }
        let skip = (offset - s0 * SECTOR) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }

    /// Write `data` at byte `offset`. A write that does not cover whole
    /// blocks of the members' alignment (512-byte sectors, or the 4 KiB
    /// blocks of `O_DIRECT` files that refuse smaller ones) is merged once
    /// into an aligned copy, the partly written blocks read first from one
    /// copy, and that copy goes to every member; unaligned writes whose
    /// blocks overlap wait for each other. A write is not atomic with
    /// respect to a concurrent aligned write that overlaps it (the
    /// kernel's block layer never issues overlapping writes at once).
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        self.check_io(data.len(), offset)?;
        if data.is_empty() {
            return Ok(());
        }
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let end = offset + data.len() as u64;
        let fits = |a: u64| offset.is_multiple_of(a) && end.is_multiple_of(a);
        let want = self.member_alignment();
        let addr_fits = |a: u64| (data.as_ptr() as usize).is_multiple_of(a as usize);
        if self.cipher.is_none()
            && fits(SECTOR)
            && (want == SECTOR || fits(want) && addr_fits(want))
        {
            return self.write_sectors(offset / SECTOR, data);
        }
        let align = if want > SECTOR && self.maps_aligned(offset, end, want)? {
            want
        } else {
            SECTOR
        };
        if self.cipher.is_none() && align == SECTOR && fits(SECTOR) {
            // The members cannot take it as it is whatever is done here.
            return self.write_sectors(offset / SECTOR, data);
        }
        let w0 = offset / align * align;
        let w1 = end.div_ceil(align) * align;
        let len = (w1 - w0) as usize;
        let mut pages = self.pages.take(len.div_ceil(DIRECT_ALIGN));
        let res = (|| {
            let tmp = &mut bytemuck::cast_slice_mut::<_, u8>(&mut pages)[..len];
            let a = align as usize;
            let head = offset != w0;
            let tail = end != w1 && (len > a || !head);
            let _locks = (head || tail).then(|| {
                let mut shards = vec![(w0 / align) as usize % RMW_LOCKS];
                if tail {
                    shards.push(((w1 - align) / align) as usize % RMW_LOCKS);
                }
                shards.sort_unstable();
                shards.dedup();
                shards
                    .into_iter()
                    .map(|i| self.rmw_locks[i].lock().unwrap_or_else(|p| p.into_inner()))
                    .collect::<Vec<_>>()
            });
            if head {
                self.read_locked(&mut tmp[..a], w0)?;
            }
            if tail {
                self.read_locked(&mut tmp[len - a..], w1 - align)?;
            }
            let skip = (offset - w0) as usize;
            tmp[skip..skip + data.len()].copy_from_slice(data);
            if let Some(c) = &self.cipher {
                c.encrypt(tmp, w0 / SECTOR);
            }
            self.write_sectors(w0 / SECTOR, tmp)
        })();
        self.pages.put(pages);
        res
    }

    /// The alignment (bytes, a power of two, at least a sector) the
    /// writable members take writes at without copying them.
    fn member_alignment(&self) -> u64 {
        let a = (0..self.slots.len())
            .filter(|&m| {
                let st = self.slots[m].state.load(Ordering::SeqCst);
                st == ACTIVE || st == RECOVERING
            })
            .filter_map(|m| {
                let dev = self.slots[m].dev.read().unwrap_or_else(|p| p.into_inner());
                dev.as_ref().map(|d| d.alignment() as u64)
            })
            .max()
            .unwrap_or(1);
        if a.is_power_of_two() && a <= MAX_ALIGN {
            a.max(SECTOR)
        } else {
            SECTOR
        }
    }

    /// Whether the `align`-aligned window around logical bytes
    /// `offset..end` lies in the volume and maps to `align`-aligned runs on
    /// every member it touches (true for every md layout whose chunk and
    /// data offset are multiples of `align`).
    fn maps_aligned(&self, offset: u64, end: u64, align: u64) -> Result<bool> {
        let (w0, w1) = (offset / align * align, end.div_ceil(align) * align);
        if w1 > self.size() {
            return Ok(false);
        }
        let pieces = self.pieces(w0 / SECTOR, w1 / SECTOR, false)?;
        Ok(pieces.iter().all(|p| {
            (p.sectors * SECTOR).is_multiple_of(align)
                && p.copies
                    .iter()
                    .all(|c| self.member_off(c.sector).is_multiple_of(align))
        }))
    }

    /// Make every completed write durable on every member, then clear the
    /// bitmap bits of regions that are now in sync everywhere and that no
    /// write touched since the flush before this one (a region written
    /// between every two flushes keeps its bit, instead of having it
    /// cleared and persisted again by the next write each time).
    pub fn flush(&self) -> Result<()> {
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let candidates = match &self.bitmap {
            Some(bm) if !self.degraded() => bm.clear_candidates(),
            _ => Vec::new(),
        };
        let targets: Vec<Vec<usize>> = (0..self.slots.len())
            .filter(|&r| self.writable(r).is_some())
            .map(|r| vec![r])
            .collect();
        let results = self.fan_out(targets, true, &|r: usize| {
            (r, self.writable(r).map(|d| d.flush()))
        });
        let mut failed = false;
        for (r, res) in results {
            if let Some(Err(e)) = res {
                self.mark_failed(r, &format!("flush error: {e}"));
                failed = true;
            }
        }
        if failed {
            self.write_superblocks(false)?;
        }
        self.check_alive()?;
        if let Some(bm) = &self.bitmap
            && !self.degraded()
            && !candidates.is_empty()
            && bm.clear(&candidates)
        {
            self.persist_bitmap()?;
        }
        Ok(())
    }

    /// Flush, and record a clean shutdown in the superblocks.
    pub fn close(&self) -> Result<()> {
        // The second flush clears the bits of regions written before the
        // first (none is written in between by a closing caller).
        self.flush()?;
        self.flush()?;
        self.write_superblocks(true)
    }

    /// The device attached to member `m`.
    fn attached(&self, m: usize) -> Result<Arc<dyn BlockDevice>> {
        self.slots[m]
            .device()
            .ok_or_else(|| EngineError::Unavailable(format!("member {m} has no device")))
    }

    /// Turn a member I/O result into the crate's error, failing the member
    /// on error.
    fn member_result(
        &self,
        m: usize,
        dev: &dyn BlockDevice,
        what: &str,
        r: std::io::Result<()>,
    ) -> Result<()> {
        r.map_err(|e| {
            self.mark_failed(m, &format!("{what} error: {e}"));
            device_err(dev, |name| match name {
                Some(name) => format!("member {m} ({name}): {what}"),
                None => format!("member {m}: {what}"),
            })(e)
        })
    }

    /// Byte offset on a member of member sector `sector`.
    fn member_off(&self, sector: u64) -> u64 {
        self.data_offset_bytes + sector * SECTOR
    }

    /// Mark member `m` failed after its I/O failed during a scrub, record
    /// it in `report`, and write the others' superblocks, as a read error
    /// on the data path does. The scrub carries on from the members left,
    /// whatever their number: with none left the rest is counted
    /// unreadable, so the error that every member has failed is only
    /// logged here.
    pub(crate) fn scrub_member_failed(
        &self,
        report: &mut ScrubReport,
        m: usize,
        what: &str,
        e: &std::io::Error,
    ) {
        let dev = self.slots[m].device();
        let device = dev
            .as_ref()
            .map_or_else(|| "no device".to_string(), |d| d.shown());
        // The report names the device: the error says what happened only
        // (an NBD export's errors start with its name).
        let e = e.to_string();
        let e = dev.map_or(e.as_str(), |d| without_name(&e, &d.shown()));
        let error = format!("{what} error: {e}");
        self.mark_failed(m, &format!("scrub {error}"));
        report.failed_members.push(FailedMember {
            role: m,
            device,
            error,
        });
        if let Err(e) = self.write_superblocks(false) {
            tracing::warn!(error = %e, "scrub: recording a failed member");
        }
    }

    /// Write to member `m`'s device (an error if none is attached), outside
    /// the data path (no fault-injection count).
    fn member_write_raw(&self, m: usize, buf: &[u8], offset: u64) -> std::io::Result<()> {
        match self.slots[m].device() {
            Some(d) => d.write_at(buf, offset),
            None => Err(std::io::Error::other("no device")),
        }
    }

    /// Read from member `m`'s device (an error if none is attached).
    fn member_read(&self, m: usize, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self.slots[m].device() {
            Some(d) => d.read_at(buf, offset),
            None => Err(std::io::Error::other("no device")),
        }
    }

    /// A foreground (data path) write to member `m`'s device.
    fn member_write(&self, m: usize, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let r = match self.slots[m].device() {
            Some(d) => d.write_at(buf, offset),
            None => Err(std::io::Error::other("no device")),
        };
        #[cfg(feature = "fault-injection")]
        self.faults.after_member_write();
        r
    }

    /// Set the write-intent bits of `regions` (persisting them on every
    /// member when one is newly set) before their data is written. Returns
    /// the regions to pass to `Bitmap::end` once the writes are done.
    fn begin_intent(&self, regions: Vec<usize>) -> Result<Vec<usize>> {
        if self.fault(Fault::SkipIntentBit) {
            return Ok(Vec::new());
        }
        if let Some(bm) = &self.bitmap
            && bm.start(&regions)
            && let Err(e) = self.persist_bitmap()
        {
            bm.end(&regions);
            return Err(e);
        }
        Ok(regions)
    }

    /// Whether deliberate bug `f` is switched on (never without the
    /// `fault-injection` feature).
    #[allow(clippy::unused_self)]
    fn fault(&self, f: Fault) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.faults.has(f);
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = f;
            false
        }
    }

    /// Switch on deliberate bugs and crash points for this volume (feature
    /// `fault-injection`; see [`crate::fault`]). Replaces the previous set;
    /// an empty slice switches them off.
    #[cfg(feature = "fault-injection")]
    pub fn inject_faults(&self, faults: &[crate::fault::Fault]) {
        self.faults.set(faults);
    }

    /// Copy `sectors` from `src` to `dst` (member sectors), under the
    /// exclusive gate. Errors name the failing side.
    fn copy_step(
        &self,
        dst: usize,
        dst_sector: u64,
        src: usize,
        src_sector: u64,
        sectors: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.resize((sectors * SECTOR) as usize, 0);
        let sdev = self.attached(src)?;
        let r = sdev.read_at(buf, self.member_off(src_sector));
        self.member_result(src, &*sdev, "read", r)?;
        let ddev = self.attached(dst)?;
        let r = ddev.write_at(buf, self.member_off(dst_sector));
        self.member_result(dst, &*ddev, "write", r)?;
        Ok(())
    }

    /// Copies that bring member `target`'s sectors `start..start+len` up to
    /// date: (target sector, source member, source sector, sectors).
    fn sources_for(&self, target: usize, start: u64, len: u64) -> Result<Vec<Step>> {
        let g = self.geometry().ok_or_else(|| {
            EngineError::Unsupported("a linear volume has no redundancy to rebuild from".into())
        })?;
        let mut out = Vec::new();
        match g.layout() {
            Layout::Raid1 => {
                let src = self.active_roles().into_iter().find(|&r| r != target);
                let src = src.ok_or_else(|| {
                    EngineError::Unavailable("no active member to copy from".into())
                })?;
                out.push(Step::Copy {
                    dst_sector: start,
                    src,
                    src_sector: start,
                    sectors: len,
                });
            }
            Layout::Raid10(_) => {
                let chunk = g.chunk_sectors();
                let mut s = start / chunk * chunk;
                while s < start + len {
                    if let MemberContent::Data { logical, .. } = g.unmap(target, s)? {
                        let m = g.map(logical)?;
                        let src = m
                            .copies
                            .iter()
                            .find(|l| {
                                l.member != target && self.readable(l.member, l.sector + chunk)
                            })
                            .ok_or_else(|| {
                                EngineError::Unavailable(format!(
                                    "logical sector {logical} has no other readable copy"
                                ))
                            })?;
                        out.push(Step::Copy {
                            dst_sector: s,
                            src: src.member,
                            src_sector: src.sector,
                            sectors: chunk,
                        });
                    }
                    s += chunk;
                }
            }
            _ if self.is_parity() => return self.parity_rows(start, len),
            l => {
                return Err(EngineError::Unsupported(format!(
                    "{l} has no redundancy to rebuild from"
                )));
            }
        }
        Ok(out)
    }

    /// Whether `device` may replace member `role`, changing nothing: it is
    /// large enough for the member, and it is not the device of another
    /// role this volume still uses (its superblock names this volume and a
    /// role that has not failed), which a rebuild onto it would overwrite.
    /// [`Volume::replace`] checks the same; call this first when `role` is
    /// still active and has to be failed before it is replaced, so that a
    /// wrong replacement is refused before anything is failed.
    ///
    /// Errors: [`EngineError::Invalid`] naming `role` or `device` and the
    /// rule broken; [`EngineError::InUse`] when another holder (a volume,
    /// an export of `raid-engine serve-nbd`) has the device
    /// ([`BlockDevice::claim`]).
    pub fn check_replacement(&self, role: usize, device: &dyn BlockDevice) -> Result<()> {
        self.check_replacement_fits(role, device)?;
        // Another volume or export (here or in another process) uses it.
        let what = format!("replacement for role {role}");
        claim_device(&self.holder, device, what).map(drop)
    }

    /// [`Volume::check_replacement`] and the claim of `device` for this
    /// volume, kept in the returned [`Replacement`] until
    /// [`Volume::replace_reserved`] attaches the device (which keeps the
    /// claim as long as the device stays attached) or the reservation is
    /// dropped: nobody, in this process or another, can take the device
    /// between the check and the swap. Call it before failing an active
    /// role that is to be replaced, as `raid-engine rebuild` does, so that
    /// a replacement that is wrong or in use is refused before anything is
    /// failed, and one that is right cannot be taken away afterwards.
    ///
    /// Errors: those of [`Volume::check_replacement`].
    pub fn reserve_replacement(
        &self,
        role: usize,
        device: Arc<dyn BlockDevice>,
    ) -> Result<Replacement> {
        self.check_replacement_fits(role, &*device)?;
        let what = format!("replacement for role {role}");
        let claim = claim_device(&self.holder, &*device, what)?;
        Ok(Replacement {
            array_uuid: self.meta_lock().array_uuid,
            role,
            device,
            claim,
        })
    }

    /// The checks of [`Volume::check_replacement`] short of the claim.
    fn check_replacement_fits(&self, role: usize, device: &dyn BlockDevice) -> Result<()> {
        if role >= self.slots.len() {
            return Err(invalid(
                "role",
                format!("{role} is not below the member count {}", self.slots.len()),
            ));
        }
        let need = self.data_offset_bytes + self.meta_lock().components[role] * SECTOR;
        if device.size() < need {
            return Err(invalid(
                "device",
                format!(
                    "{} has {} bytes; member {role} needs at least {need}",
                    device.shown(),
                    device.size()
                ),
            ));
        }
        // A device without this volume's superblock (a new disk, another
        // volume's old member) is overwritten as the caller asks.
        let Ok(sb) = read_superblock(device) else {
            return Ok(());
        };
        let holder = sb.role as usize;
        let in_use = {
            let m = self.meta_lock();
            sb.array_uuid == m.array_uuid
                && holder != role
                && m.roles.get(holder).is_some_and(|r| r.1 == sb.device_uuid)
        } && self.slots[holder].state.load(Ordering::SeqCst) != FAILED;
        if in_use {
            return Err(invalid(
                "device",
                format!(
                    "{} holds role {holder} of this volume, which is in use: rebuilding role {role} onto it would overwrite role {holder}",
                    device.shown()
                ),
            ));
        }
        Ok(())
    }

    /// Attach the claimed device to `slot`, keeping its claim; the claim of
    /// the device it replaces is released (unless another role has it).
    fn attach(&self, slot: &Slot, (device, claim): (Arc<dyn BlockDevice>, Claim)) {
        let old = slot
            .dev
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(device.clone());
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = old {
            let still_used = self
                .slots
                .iter()
                .any(|s| s.device().is_some_and(|d| same_device(&d, &old)));
            if !still_used {
                claims.retain(|(d, _)| !same_device(d, &old));
            }
        }
        claims.push((device, claim));
    }

    /// Member `role`'s slot, if it has failed (else the error for
    /// [`Volume::replace`]).
    fn check_failed(&self, role: usize) -> Result<&Slot> {
        let slot = self.slots.get(role).ok_or_else(|| {
            invalid(
                "role",
                format!("{role} is not below the member count {}", self.slots.len()),
            )
        })?;
        if slot.state.load(Ordering::SeqCst) != FAILED {
            return Err(invalid(
                "role",
                format!("member {role} has not failed; fail it before replacing it"),
            ));
        }
        Ok(slot)
    }

    /// Attach `device` as a fresh replacement for failed member `role`; call
    /// [`Volume::rebuild`] next. The device's old contents are ignored, but
    /// a device that holds another role of this volume still in use is
    /// refused (see [`Volume::check_replacement`]).
    pub fn replace(&self, role: usize, device: Arc<dyn BlockDevice>) -> Result<()> {
        self.check_failed(role)?;
        self.replace_reserved(self.reserve_replacement(role, device)?)
    }

    /// [`Volume::replace`] with a device reserved by
    /// [`Volume::reserve_replacement`] (for the same role of this volume),
    /// whose claim the volume keeps while the device is attached. The role
    /// must have failed since; the checks of the reservation are made
    /// again, the claim is not let go in between.
    ///
    /// Errors: [`EngineError::Invalid`] (field `replacement`) for a
    /// reservation of another volume; those of [`Volume::replace`].
    pub fn replace_reserved(&self, reserved: Replacement) -> Result<()> {
        if reserved.array_uuid != self.meta_lock().array_uuid {
            return Err(invalid(
                "replacement",
                format!(
                    "{} was reserved for another volume; reserve it with this volume's reserve_replacement",
                    reserved.device.shown()
                ),
            ));
        }
        let Replacement {
            role,
            device,
            claim,
            ..
        } = reserved;
        let slot = self.check_failed(role)?;
        self.check_replacement_fits(role, &*device)?;
        let uuid = random::<16>()?;
        self.attach(slot, (device, claim));
        {
            let mut m = self.meta_lock();
            m.roles[role] = (RoleState::Spare, uuid);
            m.events += 1;
        }
        slot.watermark.store(0, Ordering::SeqCst);
        slot.state.store(RECOVERING, Ordering::SeqCst);
        // Its bitmap area must be written before the superblock claims it.
        self.persist_bitmap()?;
        self.write_superblocks(false)
    }

    /// Rebuild member `role` (after [`Volume::replace`]) by copying exactly
    /// what `raid`'s rebuild plan lists, chunk by chunk, throttled, while
    /// the volume stays online. The member becomes active at the end.
    ///
    /// A member failed while it is being copied ([`Volume::fail_member`], or
    /// an I/O error of another request) stays failed: the copy stops with
    /// [`EngineError::Interrupted`] naming it, and a later rebuild (after
    /// another [`Volume::replace`]) starts over. [`Volume::interrupt`] stops
    /// it with [`EngineError::Interrupted`] too.
    pub fn rebuild(&self, role: usize, opts: &RebuildOptions<'_>) -> Result<Progress> {
        let g = self
            .geometry()
            .ok_or_else(|| EngineError::Unsupported("a linear volume cannot be rebuilt".into()))?;
        if self.slots.get(role).map(|s| s.state.load(Ordering::SeqCst)) != Some(RECOVERING) {
            return Err(invalid(
                "role",
                format!("member {role} is not being recovered; call replace first"),
            ));
        }
        let failed: Vec<usize> = (0..self.slots.len())
            .filter(|&r| self.slots[r].state.load(Ordering::SeqCst) != ACTIVE)
            .collect();
        let fm = FailureModel::new(g);
        let plan = fm.rebuild_plan(&failed, role)?;
        let steps: Vec<Step> = match g.layout() {
            Layout::Raid1 => {
                let step = 2048;
                let mut v = Vec::new();
                for r in &plan.full_ranges {
                    let mut s = r.start;
                    while s < r.start + r.sectors {
                        let n = step.min(r.start + r.sectors - s);
                        v.push(Step::Copy {
                            dst_sector: s,
                            src: r.member,
                            src_sector: s,
                            sectors: n,
                        });
                        s += n;
                    }
                }
                v
            }
            Layout::Raid10(_) => fm
                .raid10_rebuild_reads(&plan)
                .map(|rd| Step::Copy {
                    dst_sector: rd.target_sector,
                    src: rd.source,
                    src_sector: rd.source_sector,
                    sectors: rd.sectors,
                })
                .collect(),
            // The plan reads every survivor in full: one stripe row at a time.
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                debug_assert!(plan.full_ranges.iter().all(|r| r.start == 0));
                self.parity_rows(0, g.used_sectors()[role])?
            }
            l => {
                return Err(EngineError::Unsupported(format!(
                    "{l} has no redundancy to rebuild from"
                )));
            }
        };
        let res = self.run_copy(role, &steps, opts, true);
        self.finish_recovery(role, res)
    }

    fn finish_recovery(&self, role: usize, res: Result<Progress>) -> Result<Progress> {
        match res {
            Ok(p) => {
                let slot = &self.slots[role];
                {
                    // No write may be between planning (member left out)
                    // and its fix-up of a recovering member (see
                    // `write_parity`) when the member turns active.
                    let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
                    // Failed since the copy's last step: it stays failed.
                    if let Err(e) = self.check_still_recovering(role, p.done_bytes, p.total_bytes) {
                        drop(_g);
                        let _ = self.write_superblocks(false);
                        return Err(e);
                    }
                    slot.watermark.store(u64::MAX, Ordering::SeqCst);
                    slot.state.store(ACTIVE, Ordering::SeqCst);
                }
                {
                    let mut m = self.meta_lock();
                    m.roles[role].0 = RoleState::Active;
                    m.events += 1;
                }
                self.write_superblocks(false)?;
                Ok(p)
            }
            Err(e) => {
                if self.slots[role].state.load(Ordering::SeqCst) == RECOVERING {
                    self.slots[role].state.store(FAILED, Ordering::SeqCst);
                    let mut m = self.meta_lock();
                    m.roles[role].0 = RoleState::Spare;
                    m.events += 1;
                }
                let _ = self.write_superblocks(false);
                Err(e)
            }
        }
    }

    /// Ask a running [`Volume::rebuild`], [`Volume::readd`] or
    /// [`Volume::scrub`] to stop before its next step (a chunk or a
    /// stripe), for a caller that was told to stop (a SIGTERM). The
    /// operation answers [`EngineError::Interrupted`]: a member being
    /// rebuilt stays failed (its replacement not in sync) and is rebuilt
    /// again from its start later; a member being re-added stays recorded
    /// failed while in sync, with every region it may lack still marked in
    /// the bitmap, so that a later readd starts over; a scrub's repairs so
    /// far stay. The volume keeps serving reads and writes; every later
    /// one of these operations on it stops at once (the caller is ending),
    /// and [`Volume::close`] records a clean shutdown as usual.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    /// [`EngineError::Interrupted`] once [`Volume::interrupt`] was called,
    /// saying how far the operation got.
    pub(crate) fn check_interrupted(&self, done: u64, total: u64) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(EngineError::Interrupted(format!(
                "stopped after {done} of {total} bytes"
            )));
        }
        Ok(())
    }

    /// The member a rebuild or re-add writes was failed meanwhile
    /// ([`Volume::fail_member`], or an I/O error of another request): the
    /// copy stops rather than go on and make it active at the end. Called
    /// under the gate, which orders it with the member's last write.
    fn check_still_recovering(&self, role: usize, done: u64, total: u64) -> Result<()> {
        if self.slots[role].state.load(Ordering::SeqCst) == RECOVERING {
            return Ok(());
        }
        Err(EngineError::Interrupted(format!(
            "member {role} was failed during its rebuild, after {done} of {total} bytes: it \
             stays failed (replace it and rebuild again)"
        )))
    }

    fn run_copy(
        &self,
        role: usize,
        steps: &[Step],
        opts: &RebuildOptions<'_>,
        advance_watermark: bool,
    ) -> Result<Progress> {
        let total = steps.iter().map(|s| s.sectors() * SECTOR).sum();
        let mut done = 0u64;
        let started = Instant::now();
        let mut buf = Vec::new();
        for step in steps {
            self.check_interrupted(done, total)?;
            {
                let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
                self.check_still_recovering(role, done, total)?;
                match *step {
                    Step::Copy {
                        dst_sector,
                        src,
                        src_sector,
                        sectors,
                    } => {
                        if !self.readable(src, src_sector + sectors) {
                            return Err(EngineError::Unavailable(format!(
                                "rebuild source member {src} is no longer readable"
                            )));
                        }
                        self.copy_step(role, dst_sector, src, src_sector, sectors, &mut buf)?;
                    }
                    Step::Reconstruct { sector, sectors } => {
                        self.reconstruct_range(&[role], sector, sectors)?;
                    }
                }
                if advance_watermark {
                    self.slots[role]
                        .watermark
                        .store(step.end(), Ordering::SeqCst);
                }
            }
            done += step.sectors() * SECTOR;
            if let Some(cb) = opts.progress {
                cb(Progress {
                    done_bytes: done,
                    total_bytes: total,
                });
            }
            if let Some(rate) = opts.max_bytes_per_sec.filter(|&r| r > 0) {
                let due = Duration::from_secs_f64(done as f64 / rate as f64);
                let el = started.elapsed();
                if due > el {
                    std::thread::sleep(due - el);
                }
            }
        }
        let dev = self.slots[role].device();
        if let Some(d) = dev {
            d.flush().map_err(device_err(&*d, |name| match name {
                Some(name) => format!("member {role} ({name}): flush"),
                None => format!("member {role}: flush"),
            }))?;
        }
        Ok(Progress {
            done_bytes: done,
            total_bytes: total,
        })
    }

    /// Bring back failed member `role` (its device still attached, or
    /// `device` if given, which must carry this volume's superblock for the
    /// role) by resyncing only the regions the write-intent bitmap marks.
    /// A member that was never in sync needs [`Volume::replace`] instead.
    ///
    /// A member failed again while it is being re-added stays failed: the
    /// copy stops with [`EngineError::Interrupted`] naming it, as
    /// [`Volume::rebuild`] does.
    pub fn readd(
        &self,
        role: usize,
        device: Option<Arc<dyn BlockDevice>>,
        opts: &RebuildOptions<'_>,
    ) -> Result<Progress> {
        let slot = self.slots.get(role).ok_or_else(|| {
            invalid(
                "role",
                format!("{role} is not below the member count {}", self.slots.len()),
            )
        })?;
        let bm = self.bitmap.as_ref().ok_or_else(|| {
            EngineError::Unsupported("this volume has no redundancy, hence no bitmap".into())
        })?;
        if slot.state.load(Ordering::SeqCst) != FAILED {
            return Err(invalid("role", format!("member {role} has not failed")));
        }
        let (state, uuid) = self.meta_lock().roles[role];
        if state != RoleState::Faulty {
            return Err(invalid(
                "role",
                format!("member {role} was not in sync when it left; replace and rebuild it"),
            ));
        }
        if let Some(d) = device {
            let sb = read_superblock(d.as_ref())?;
            if sb.array_uuid != self.meta_lock().array_uuid || sb.device_uuid != uuid {
                return Err(EngineError::Metadata {
                    member: d.shown(),
                    detail: format!("is not the device that left role {role}"),
                });
            }
            let what = format!("device for role {role}");
            let claim = claim_device(&self.holder, &*d, what)?;
            self.attach(slot, (d, claim));
        }
        if slot.device().is_none() {
            return Err(invalid(
                "device",
                format!(
                    "member {role} has no device: it was not among the members the volume started with; give the device that left role {role}"
                ),
            ));
        }
        slot.watermark.store(0, Ordering::SeqCst);
        slot.state.store(RECOVERING, Ordering::SeqCst);
        let comp = self.meta_lock().components[role];
        let mut steps = Vec::new();
        let res = (|| {
            for r in bm.dirty() {
                let a = r as u64 * bm.region;
                let len = bm.region.min(comp.saturating_sub(a));
                if len > 0 {
                    steps.extend(self.sources_for(role, a, len)?);
                }
            }
            self.persist_bitmap()?;
            self.run_copy(role, &steps, opts, false)
        })();
        if let Err(EngineError::Interrupted(_)) = &res
            && slot.state.load(Ordering::SeqCst) == RECOVERING
        {
            // Stopped on request, not by an error: the role stays recorded
            // failed while in sync (not a spare needing a full rebuild), so
            // that a later readd starts over. That is safe because every
            // region it may lack keeps its bit: a volume with a member not
            // active clears none.
            slot.state.store(FAILED, Ordering::SeqCst);
            let _ = self.write_superblocks(false);
            return res;
        }
        self.finish_recovery(role, res)
    }

    /// Make every copy agree in the regions the bitmap marks (after an
    /// unclean shutdown): the first readable copy wins.
    pub fn resync_dirty(&self) -> Result<u64> {
        let Some(bm) = &self.bitmap else {
            return Ok(0);
        };
        let regions = bm.dirty();
        let mut copied = 0;
        let mut buf = Vec::new();
        let g = match self.geometry() {
            Some(g) => g,
            None => return Ok(0),
        };
        if self.is_parity() {
            let n = self.resync_parity(&regions, bm.region)?;
            self.flush()?;
            return Ok(n);
        }
        for r in regions {
            for m in self.active_roles() {
                let a = r as u64 * bm.region;
                let comp = self.meta_lock().components[m];
                let len = bm.region.min(comp.saturating_sub(a));
                if len == 0 {
                    continue;
                }
                let steps: Vec<(u64, usize, u64, u64)> = match g.layout() {
                    Layout::Raid1 => {
                        let first = self.active_roles()[0];
                        if first == m {
                            continue;
                        }
                        vec![(a, first, a, len)]
                    }
                    _ => {
                        let chunk = g.chunk_sectors();
                        let mut v = Vec::new();
                        let mut s = a;
                        while s < a + len {
                            if let MemberContent::Data { logical, .. } = g.unmap(m, s)? {
                                let map = g.map(logical)?;
                                if let Some(src) = map
                                    .copies
                                    .iter()
                                    .find(|l| self.readable(l.member, l.sector + chunk))
                                    && src.member != m
                                {
                                    v.push((s, src.member, src.sector, chunk));
                                }
                            }
                            s += chunk;
                        }
                        v
                    }
                };
                for (ds, src, ss, n) in steps {
                    let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
                    self.copy_step(m, ds, src, ss, n, &mut buf)?;
                    copied += n * SECTOR;
                }
            }
        }
        self.flush()?;
        Ok(copied)
    }

    /// Resync the whole volume (every region), as after `mdadm --create`
    /// without `--assume-clean`.
    pub fn resync_all(&self) -> Result<u64> {
        if let Some(bm) = &self.bitmap {
            bm.mark(0..bm.regions);
            self.persist_bitmap()?;
        }
        self.resync_dirty()
    }

    /// Compare every copy of every sector; with `repair`, rewrite copies
    /// that differ from the first readable copy. RAID4/5/6: check P (and
    /// Q) of every stripe against its data; with `repair`, rewrite them.
    /// A RAID6 stripe with one member unavailable is still checked: the
    /// missing member is computed from the rest and the remaining parity
    /// compared (Q, or P when Q is the missing one); with `repair` that
    /// parity is rewritten, as md's repair does, since one syndrome cannot
    /// say which member is wrong.
    ///
    /// What cannot be compared is counted, not skipped in silence: bytes
    /// with a single readable copy (a degraded mirror, and every byte of a
    /// linear or RAID0 volume), stripes with no redundancy left (RAID4/5
    /// with a member unavailable, RAID6 with two), and bytes with no
    /// readable copy at all; see [`ScrubReport`].
    pub fn scrub(&self, repair: bool) -> Result<ScrubReport> {
        let mut report = ScrubReport {
            repaired: repair,
            ..ScrubReport::default()
        };
        if self.is_parity() {
            return self.scrub_parity(repair);
        }
        let step = match self.geometry() {
            Some(g) if g.chunk_sectors() > 0 => g.chunk_sectors(),
            _ => 2048,
        };
        let mut pos = 0;
        while pos < self.size_sectors {
            self.check_interrupted(pos * SECTOR, self.size_sectors * SECTOR)?;
            let end = (pos + step).min(self.size_sectors);
            let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
            for p in self.pieces(pos, end, false)? {
                let len = (p.sectors * SECTOR) as usize;
                // Again from the members left whenever a read fails.
                'piece: loop {
                    let copies: Vec<Location> = p
                        .copies
                        .iter()
                        .copied()
                        .filter(|l| self.readable(l.member, l.sector + p.sectors))
                        .collect();
                    match copies.len() {
                        0 => {
                            report.unreadable_bytes += len as u64;
                            break;
                        }
                        1 => {
                            report.unverifiable_bytes += len as u64;
                            break;
                        }
                        _ => {}
                    }
                    let mut bufs = Vec::with_capacity(copies.len());
                    for l in &copies {
                        let mut b = vec![0u8; len];
                        if let Err(e) =
                            self.member_read(l.member, &mut b, self.member_off(l.sector))
                        {
                            self.scrub_member_failed(&mut report, l.member, "read", &e);
                            continue 'piece;
                        }
                        report.bytes_read += len as u64;
                        bufs.push(b);
                    }
                    report.checked_bytes += len as u64;
                    let bad: Vec<usize> =
                        (1..copies.len()).filter(|&i| bufs[i] != bufs[0]).collect();
                    if bad.is_empty() {
                        break;
                    }
                    if repair {
                        for &i in &bad {
                            let l = copies[i];
                            if let Err(e) =
                                self.member_write_raw(l.member, &bufs[0], self.member_off(l.sector))
                            {
                                self.scrub_member_failed(&mut report, l.member, "repair write", &e);
                            }
                        }
                    }
                    report.mismatches.push(Mismatch {
                        at: p.logical,
                        sectors: p.sectors,
                        members: bad.iter().map(|&i| copies[i].member).collect(),
                    });
                    break;
                }
            }
            pos = end;
        }
        if repair && !report.mismatches.is_empty() {
            self.flush()?;
        }
        Ok(report)
    }
}

/// The superblocks of a set of members, checked against each other, and
/// the geometry they describe: what [`Volume::examine`] reports and
/// [`Volume::assemble`] starts from. Reading them writes nothing.
struct Found {
    /// The newest superblock (highest event count).
    auth: Superblock,
    mapper: Mapper,
    /// Data-area sectors per role (the newest superblock's value for roles
    /// without a device).
    comps: Vec<u64>,
    /// The device holding each role, if one was given.
    placed: Vec<Option<Arc<dyn BlockDevice>>>,
    present_sb: Vec<Option<Superblock>>,
}

/// An array uuid as `8-4-4-4-12` hex digits.
fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The error of `d`'s I/O while doing what `what` says, naming `d` once:
/// `what` is given the device's name to put in, or `None` where the
/// device's own error names it already (a file's range errors do). An
/// error that starts with the name (an NBD export's start with
/// `"nbd://HOST:PORT/EXPORT": `) is said without it, after `what` with
/// the name in front: `member 1 ("nbd://10.0.0.2:10809/d1"): write: send:
/// Broken pipe`, its kind kept.
fn device_err(
    d: &dyn BlockDevice,
    what: impl FnOnce(Option<&str>) -> String,
) -> impl FnOnce(std::io::Error) -> EngineError {
    let name = d.shown();
    move |source| {
        let text = source.to_string();
        let rest = without_name(&text, &name);
        if rest.len() < text.len() {
            return EngineError::Io {
                what: what(Some(&name)),
                source: std::io::Error::new(source.kind(), rest.to_string()),
            };
        }
        let named = names(&text, &name);
        EngineError::Io {
            what: what((!named).then_some(&name)),
            source,
        }
    }
}

/// `text` without `name: ` in front, if it starts so.
fn without_name<'a>(text: &'a str, name: &str) -> &'a str {
    text.strip_prefix(name)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(text)
}

/// `what`, after the device's `name` when it is to be said:
/// `/dev/sdb: read superblock`.
fn prefixed(name: Option<&str>, what: &str) -> String {
    match name {
        Some(name) => format!("{name}: {what}"),
        None => what.to_string(),
    }
}

/// Reads and decodes member `d`'s superblock.
fn read_superblock(d: &dyn BlockDevice) -> Result<Superblock> {
    let mut b = vec![0u8; SB_SIZE];
    d.read_at(&mut b, SB_OFFSET)
        .map_err(device_err(d, |name| prefixed(name, "read superblock")))?;
    Superblock::decode(&b, &d.shown())
}

impl Found {
    fn read(devices: Vec<Arc<dyn BlockDevice>>) -> Result<Found> {
        let mut sbs = Vec::with_capacity(devices.len());
        for d in &devices {
            sbs.push(read_superblock(d.as_ref())?);
        }
        let Some(auth_i) = (0..sbs.len()).max_by_key(|&i| sbs[i].events) else {
            return Err(invalid("devices", "no members given"));
        };
        let auth = sbs[auth_i].clone();
        // Every change of membership adds one event: a count this large
        // cannot come from use (2^63 events), only from damage, and would
        // overflow at the volume's next event.
        if auth.events > u64::MAX / 2 {
            return Err(EngineError::Metadata {
                member: devices[auth_i].shown(),
                detail: format!(
                    "event count {} is not plausible (more than 2^63): the superblock is damaged",
                    auth.events
                ),
            });
        }
        let n = auth.roles.len();
        let mut placed: Vec<Option<Arc<dyn BlockDevice>>> = vec![None; n];
        let mut present_sb: Vec<Option<Superblock>> = vec![None; n];
        // Every member that contradicts the newest superblock (or another
        // member) is named, not only the first: an operator sorting out a
        // mixed-up set of devices needs the whole picture at once.
        let mut problems: Vec<(String, String)> = Vec::new();
        let newest = devices[auth_i].shown();
        // The other devices given for a role already placed: said once per
        // role after the loop, with the count (`m0 m0 m0` said "role 0
        // given twice" twice).
        let mut again: Vec<Vec<String>> = vec![Vec::new(); n];
        for (d, sb) in devices.into_iter().zip(sbs) {
            let name = d.shown();
            let mut problem = |detail: String| problems.push((name.clone(), detail));
            if sb.array_uuid != auth.array_uuid {
                problem(format!(
                    "belongs to another volume (array uuid {}, where the newest superblock, {newest}'s, has {})",
                    uuid_text(&sb.array_uuid),
                    uuid_text(&auth.array_uuid)
                ));
                continue;
            }
            let r = sb.role as usize;
            if r >= n {
                problem(format!("role {r} is not below the volume's {n} members"));
                continue;
            }
            if sb.device_uuid != auth.roles[r].1 {
                problem(format!(
                    "was role {r} (event {}), which another device has since taken over (event {}, {newest})",
                    sb.events, auth.events
                ));
                continue;
            }
            if placed[r].is_some() {
                again[r].push(name);
                continue;
            }
            // A member cut short after it was written (a truncated file, a
            // smaller disk copied over) would fail the first I/O past its
            // end in the middle of a command.
            let need = auth
                .data_offset
                .saturating_add(sb.component_sectors)
                .saturating_mul(SECTOR);
            if d.size() < need {
                problem(format!(
                    "has {} bytes, but role {r} needs {need} (data offset of {} sectors and {} data sectors): was it truncated? Leave it out to start without it",
                    d.size(),
                    auth.data_offset,
                    sb.component_sectors
                ));
                continue;
            }
            placed[r] = Some(d);
            present_sb[r] = Some(sb);
        }
        for (r, others) in again.into_iter().enumerate() {
            let Some(first) = placed[r].as_ref().map(|d| d.shown()) else {
                continue;
            };
            if others.is_empty() {
                continue;
            }
            problems.push(given_more_than_once(r, first, others));
        }
        if let Some(((member, detail), rest)) = problems.split_first() {
            let mut detail = detail.clone();
            for (m, d) in rest {
                detail.push_str(&format!("; also member {m}: {d}"));
            }
            return Err(EngineError::Metadata {
                member: member.clone(),
                detail,
            });
        }
        let room = (auth.data_offset * SECTOR).saturating_sub(BITMAP_OFFSET);
        if auth.bitmap_bytes > room || (auth.bitmap_bytes > 0 && auth.bitmap_region == 0) {
            return Err(EngineError::Metadata {
                member: "superblock".into(),
                detail: format!(
                    "bitmap of {} bytes, {} sectors per bit, does not fit the {room} bytes before the data",
                    auth.bitmap_bytes, auth.bitmap_region
                ),
            });
        }
        let layout =
            if auth.level == LINEAR_LEVEL {
                VolumeLayout::Linear
            } else {
                VolumeLayout::Md(layout_from_sb(auth.level, &auth.layout_name).ok_or_else(
                    || EngineError::Metadata {
                        member: "superblock".into(),
                        detail: format!(
                            "unknown level {} layout {:?}",
                            auth.level, auth.layout_name
                        ),
                    },
                )?)
            };
        let comps: Vec<u64> = present_sb
            .iter()
            .map(|sb| {
                sb.as_ref()
                    .map_or(auth.component_sectors, |sb| sb.component_sectors)
            })
            .collect();
        let mapper = match layout {
            VolumeLayout::Linear => linear_mapper(comps.clone()),
            VolumeLayout::Md(l) => Mapper::Md(Geometry::new(l, auth.chunk_sectors, &comps)?),
        };
        // The bitmap must have a bit for every region of the data area
        // (a superblock whose bitmap is shorter, say 0 bytes, made the
        // first write index past its end and panic).
        if is_redundant(&mapper) {
            let regions = comps
                .iter()
                .max()
                .copied()
                .unwrap_or(0)
                .div_ceil(auth.bitmap_region.max(1));
            if auth.bitmap_bytes.saturating_mul(8) < regions {
                return Err(EngineError::Metadata {
                    member: newest,
                    detail: format!(
                        "bitmap of {} bytes ({} bits) cannot cover the {regions} regions of {} sectors in the data area: the superblock is damaged",
                        auth.bitmap_bytes,
                        auth.bitmap_bytes.saturating_mul(8),
                        auth.bitmap_region
                    ),
                });
            }
        }
        Ok(Found {
            auth,
            mapper,
            comps,
            placed,
            present_sb,
        })
    }

    fn condition(&self, r: usize) -> RoleCondition {
        match (&self.placed[r], self.auth.roles[r].0) {
            (None, _) => RoleCondition::Missing,
            (Some(_), RoleState::Active) => RoleCondition::Active,
            (Some(_), RoleState::Faulty) => RoleCondition::Faulty,
            (Some(_), RoleState::Spare) => RoleCondition::Spare,
        }
    }

    /// Whether the roles that are missing or recorded failed lose data.
    fn health(&self) -> Result<Health> {
        let unavailable: Vec<usize> = (0..self.placed.len())
            .filter(|&r| self.condition(r) != RoleCondition::Active)
            .collect();
        assess(&self.mapper, unavailable, &|r| {
            let dev = self.placed[r].as_ref().map(|d| d.shown());
            match (self.condition(r), dev) {
                (RoleCondition::Faulty, Some(d)) => format!("role {r} ({d}, recorded failed)"),
                (RoleCondition::Spare, Some(d)) => format!("role {r} ({d}, not in sync)"),
                _ => format!("role {r} (missing)"),
            }
        })
    }

    /// The cipher for `secret`, checked against the newest superblock.
    fn cipher(&self, secret: Option<&Secret>) -> Result<Option<Cipher>> {
        match (&self.auth.encryption, secret) {
            (Some((salt, check)), Some(s)) => Ok(Some(Cipher::new(s, salt, check)?)),
            (Some(_), None) => Err(EngineError::Crypto(
                "the volume is encrypted: a secret is required".into(),
            )),
            (None, Some(_)) => Err(EngineError::Crypto(
                "a secret was given but the volume is not encrypted".into(),
            )),
            (None, None) => Ok(None),
        }
    }
}

/// Whether losing the `unavailable` roles loses data, by `raid`'s failure
/// analysis (a linear volume has one copy of every byte, so it loses data
/// with any role), and if so why; `label` names a role in the message.
fn assess(
    mapper: &Mapper,
    unavailable: Vec<usize>,
    label: &dyn Fn(usize) -> String,
) -> Result<Health> {
    if unavailable.is_empty() {
        return Ok(Health::Whole);
    }
    let loses = match mapper {
        Mapper::Md(g) => FailureModel::new(g).loses_data(&unavailable)?,
        Mapper::Linear { .. } => true,
    };
    if !loses {
        return Ok(Health::Degraded { unavailable });
    }
    let verb = if unavailable.len() == 1 { "is" } else { "are" };
    let reason = format!(
        "{} {verb} unavailable; {}",
        join_and(unavailable.iter().map(|&r| label(r))),
        lost_data(mapper, &unavailable)
    );
    Ok(Health::DataLost {
        unavailable,
        reason,
    })
}

/// Which data has no copy once the `unavailable` roles (a set that
/// [`assess`] found loses data) are gone, in words.
fn lost_data(mapper: &Mapper, unavailable: &[usize]) -> String {
    let g = match mapper {
        Mapper::Md(g) => g,
        Mapper::Linear { starts, sizes } => {
            let parts = unavailable.iter().map(|&r| {
                format!(
                    "role {r} holds volume bytes {}..{}",
                    starts[r] * SECTOR,
                    (starts[r] + sizes[r]) * SECTOR
                )
            });
            return format!(
                "linear keeps one copy of every byte, and {}: that data has no copy left",
                join_and(parts)
            );
        }
    };
    let layout = g.layout();
    match layout {
        Layout::Raid1 => format!(
            "{layout} keeps one copy on each member and all {} are unavailable: no byte has a copy left",
            g.members()
        ),
        Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
            let t = g.guaranteed_tolerance();
            format!(
                "{layout} computes at most {t} unavailable member{} of a stripe from parity, \
                 {} are unavailable and every stripe spans every member: every stripe has data with no copy left",
                if t == 1 { "" } else { "s" },
                unavailable.len()
            )
        }
        Layout::Raid0(_) | Layout::Raid10(_) => lost_chunks(g, unavailable),
    }
}

/// For RAID0/10: the chunks whose every copy is on an `unavailable` role.
/// The members of chunk `c` depend only on `c` modulo the member count (as
/// in `raid`'s failure analysis), so the first `members` chunks show the
/// pattern, which is then told with its shortest period ("the odd
/// chunks", "chunks 1 and 2 of every 3").
fn lost_chunks(g: &Geometry, unavailable: &[usize]) -> String {
    let chunk = g.chunk_sectors().max(1);
    let period = (g.members() as u64).min(g.array_sectors() / chunk).max(1);
    let mut lost = Vec::new();
    let mut holders = std::collections::BTreeSet::new();
    for c in 0..period {
        if let Ok(m) = g.map(c * chunk)
            && m.copies.iter().all(|l| unavailable.contains(&l.member))
        {
            lost.push(c);
            holders.extend(m.copies.iter().map(|l| l.member));
        }
    }
    let what = match g.copies() {
        1 => "the only copy".to_string(),
        2 => "both copies".to_string(),
        n => format!("all {n} copies"),
    };
    let Some(&first) = lost.first() else {
        return format!("they hold {what} of some chunks");
    };
    let p = (1..=period)
        .find(|&p| {
            period.is_multiple_of(p)
                && (0..period).all(|c| lost.contains(&c) == lost.contains(&(c % p)))
        })
        .unwrap_or(period);
    let base: Vec<u64> = lost.iter().copied().filter(|&c| c < p).collect();
    let which = match (p, base.as_slice()) {
        (1, _) => "every chunk".to_string(),
        (2, [0]) => "the even chunks".to_string(),
        (2, [1]) => "the odd chunks".to_string(),
        _ => format!(
            "chunk{} {} of every {p}",
            if base.len() == 1 { "" } else { "s" },
            join_and(base.iter().map(u64::to_string))
        ),
    };
    let (roles, verb) = if holders.len() == 1 {
        ("role", "holds")
    } else {
        ("roles", "hold")
    };
    format!(
        "{roles} {} {verb} {what} of {which} ({} KiB each, the first at volume bytes {}..{}): that data has no copy left",
        join_and(holders.iter().map(usize::to_string)),
        chunk * SECTOR / 1024,
        first * chunk * SECTOR,
        (first + 1) * chunk * SECTOR
    )
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    match v.len() {
        0 => String::new(),
        1 => v[0].clone(),
        n => format!("{} and {}", v[..n - 1].join(", "), v[n - 1]),
    }
}

fn linear_mapper(sizes: Vec<u64>) -> Mapper {
    let mut starts = Vec::with_capacity(sizes.len());
    let mut acc = 0;
    for s in &sizes {
        starts.push(acc);
        acc += s;
    }
    Mapper::Linear { starts, sizes }
}

fn is_redundant(m: &Mapper) -> bool {
    match m {
        Mapper::Md(g) => g.guaranteed_tolerance() > 0,
        Mapper::Linear { .. } => false,
    }
}

/// How many workers [`Volume::fan_out`] wakes next, after `woken` were
/// woken and `useful` of them found a member's I/O left to do (the others
/// came after the caller and the rest had taken it all): as many as were
/// useful (at least one), or one more (up to `wanted`) when all were.
/// Members that make their caller wait (drives, NBD) leave every group to
/// a worker that wakes promptly, and keep one worker per member busy;
/// members that only cost CPU (files in memory, as many threads as cores
/// or more) stop waking workers that only compete for the cores.
fn next_helpers(woken: usize, useful: usize, wanted: usize) -> usize {
    if useful >= woken {
        (woken + 1).min(wanted.max(1))
    } else {
        useful.max(1)
    }
}

fn group_by_member<J>(jobs: Vec<J>, member: impl Fn(&J) -> usize, n: usize) -> Vec<Vec<J>> {
    let mut groups: Vec<Vec<J>> = (0..n).map(|_| Vec::new()).collect();
    for j in jobs {
        let m = member(&j);
        groups[m].push(j);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// The problem of role `r` given more than once: by `first` (the device
/// placed) and again by `others`, said once with the count, as
/// `(member, detail)`. The message names `first` already (as the member),
/// so the detail names only the other names it was given by, each once.
fn given_more_than_once(r: usize, first: String, others: Vec<String>) -> (String, String) {
    let times = others.len() + 1;
    let mut also: Vec<String> = Vec::new();
    for o in others {
        if o != first && !also.contains(&o) {
            also.push(o);
        }
    }
    let detail = if also.is_empty() {
        format!("given {times} times (role {r}): give each member once")
    } else {
        format!(
            "role {r} given {times} times (also as {}): one device by several paths, or a copy of it; give each member once",
            also.join(", ")
        )
    };
    (first, detail)
}

#[cfg(test)]
mod tests {
    use super::next_helpers;

    #[test]
    fn helpers_follow_those_that_found_work() {
        // Every one useful: one more, up to what the request can use.
        assert_eq!(next_helpers(1, 1, 3), 2);
        assert_eq!(next_helpers(3, 3, 3), 3);
        assert_eq!(next_helpers(2, 2, 1), 1);
        // Some came too late: as many as were useful, never none (one
        // keeps probing whether help arrives in time again).
        assert_eq!(next_helpers(3, 1, 3), 1);
        assert_eq!(next_helpers(3, 0, 3), 1);
        assert_eq!(next_helpers(31, 7, 31), 7);
    }
}
