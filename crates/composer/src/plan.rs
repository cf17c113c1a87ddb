//! The plan of a volume, and the in-memory pool it is planned against.
//!
//! [`Pool`] holds the placement engine (which drives are used, by what) and
//! the slice allocator (where on each SSD the slices lie), both derived from
//! the stored records. [`Pool::place`] turns a request into a [`Plan`]:
//!
//! 1. the size: `required_bytes` (1 GiB when absent) raised to
//!    `minVolumeSize`, checked against `limit_bytes` and `maxVolumeSize`;
//! 2. the layout, with `raid`'s md arithmetic (v1.2 data offset, chunk,
//!    component rounding): a slice (or a mirror of two slices); else, for
//!    each drive capacity of the medium, smallest first, one drive, a RAID1,
//!    or when no drive holds the size and `striping` allows, a RAID10 (RAID0
//!    without `redundancy`) of the fewest drives that hold it;
//! 3. the drives, with `placement`: per site and transport (fastest first),
//!    in the order of the CSI topology preference, separation of mirror legs
//!    by JBOD and storage group (hard or best effort per `jbodResiliency` /
//!    `sgResiliency`, racks best effort), spreading over switches (hard unless
//!    `softDomains`), tags, RPM, storage groups and transports;
//! 4. the slices, with `slice-alloc`, on the SSDs placement chose.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use csi_types::types::{CapacityRange, Topology, TopologyRequirement};
use placement::{Mode, Shape};
use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, SliceId};

use crate::convert;
use crate::error::Error;
use crate::inventory::{Health, Inventory, Media, Transport};
use crate::params::{Parameters, VolumeType};
use crate::store::{LayoutKind, LayoutRecord, MemberRecord, VolumeRecord};

/// Size of a volume created without `required_bytes`.
pub const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;

/// Slices are whole multiples of this (1 MiB).
pub const SLICE_GRANULARITY: u64 = 1 << 20;

/// How many other SSDs a slice is tried on when the one placement chose is
/// too fragmented to hold it in one extent.
const SLICE_RETRIES: usize = 8;

/// What a volume is asked to be.
#[derive(Debug, Clone)]
pub struct VolumeRequest<'a> {
    /// The CSI name (a label in explanations).
    pub name: &'a str,
    /// Parsed StorageClass parameters.
    pub parameters: &'a Parameters,
    /// CSI capacity range.
    pub range: CapacityRange,
    /// CSI accessibility requirements.
    pub topology: Option<&'a TopologyRequirement>,
}

/// A placed volume: what to record and report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Layout.
    pub layout: LayoutRecord,
    /// Members.
    pub members: Vec<MemberRecord>,
    /// The placement request.
    pub request: placement::Request,
    /// Site index.
    pub site: u32,
    /// Transport.
    pub transport: Transport,
    /// Capacity to report.
    pub capacity: u64,
    /// Soft constraints placement could not honour.
    pub soft_violations: Vec<String>,
}

/// A layout for drives of one capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Choice {
    kind: LayoutKind,
    shape: Shape,
    usable: u64,
    chunk: u64,
    data_offset: u64,
}

/// A size for people: exact when it is a round number of a unit, else
/// three significant digits.
fn human(b: u64) -> String {
    let s = storage_units::ByteSize::new(b);
    let exact = s.to_string();
    if exact.len() <= 9 {
        exact
    } else {
        s.approx().to_string()
    }
}

/// The md geometry's usable bytes and data offset for `n` members of `member` bytes.
fn md(layout: raid::Layout, chunk: u64, member: u64, n: usize) -> Option<(u64, u64)> {
    let sectors = member / 512;
    let g = raid::mdadm::geometry_for_devices(layout, chunk, &vec![sectors; n], None).ok()?;
    let chunk = if layout.level() == raid::Level::Raid1 {
        0
    } else {
        chunk
    };
    Some((
        g.array_bytes(),
        raid::mdadm::default_data_offset_v12(sectors, chunk),
    ))
}

/// The whole-drive layout for drives of `cap` bytes holding `want` bytes:
/// the first of [`whole_layouts`] that holds it.
fn whole_drive_layout(cap: u64, want: u64, p: &Parameters) -> Result<Choice, String> {
    let layouts = whole_layouts(cap, p);
    if let Some(c) = layouts.iter().find(|c| c.usable >= want) {
        return Ok(c.clone());
    }
    let max = p.raid_max_drives;
    let best = human(layouts.last().map_or(0, |c| c.usable));
    let (cap, want) = (human(cap), human(want));
    Err(match (p.redundancy, p.striping) {
        (false, false) => format!("no single drive of {cap} holds {want} and striping=false"),
        (false, true) => format!(
            "a raid0 of raidMaxDrives={max} drives of {cap} holds at most {best}, less than {want}"
        ),
        (true, false) => format!(
            "a mirror of two drives of {cap} holds less than {want} after md's data offset, and striping=false"
        ),
        (true, true) => format!(
            "a raid10 of raidMaxDrives={max} drives of {cap} holds at most {best}, less than {want}"
        ),
    })
}

/// Every whole-drive layout of `p` over drives of `cap` bytes, by member
/// count (one drive or a RAID1 first, then RAID0/RAID10 up to
/// `raidMaxDrives` when `striping` allows); usable bytes grow along it.
fn whole_layouts(cap: u64, p: &Parameters) -> Vec<Choice> {
    let max = p.raid_max_drives as usize;
    let chunk = raid::mdadm::DEFAULT_CHUNK_SECTORS;
    let mut out = Vec::new();
    if !p.redundancy {
        out.push(Choice {
            kind: LayoutKind::Single,
            shape: Shape::Single,
            usable: cap,
            chunk: 0,
            data_offset: 0,
        });
        if p.striping {
            let l = raid::Layout::Raid0(raid::Raid0Layout::Original);
            for n in 2..=max {
                if let Some((usable, off)) = md(l, chunk, cap, n) {
                    out.push(Choice {
                        kind: LayoutKind::Raid0,
                        shape: Shape::Raid10 {
                            stripes: n as u32,
                            mirrors: 1,
                        },
                        usable,
                        chunk,
                        data_offset: off,
                    });
                }
            }
        }
        return out;
    }
    if max >= 2
        && let Some((usable, off)) = md(raid::Layout::Raid1, 0, cap, 2)
    {
        out.push(Choice {
            kind: LayoutKind::Raid1,
            shape: Shape::Mirror { legs: 2 },
            usable,
            chunk: 0,
            data_offset: off,
        });
    }
    if p.striping {
        let l = raid::Layout::Raid10(
            raid::Raid10Layout::new(2, 1, false).expect("n2 is a valid md layout"),
        );
        for stripes in 2..=max / 2 {
            if let Some((usable, off)) = md(l, chunk, cap, 2 * stripes) {
                out.push(Choice {
                    kind: LayoutKind::Raid10,
                    shape: Shape::Raid10 {
                        stripes: stripes as u32,
                        mirrors: 2,
                    },
                    usable,
                    chunk,
                    data_offset: off,
                });
            }
        }
    }
    out
}

/// The slice layout holding `want` bytes: member size, usable bytes, data
/// offset. A size whose member does not fit in 64 bits (a `minVolumeSize`
/// of 16 EiB) has the member `u64::MAX`, which every caller refuses as
/// larger than the largest drive: rounding it up to whole MiB overflowed
/// (a panic, or a slice of 0 bytes in a release build).
fn slice_layout(want: u64, mirrored: bool) -> (u64, u64, u64) {
    const TOO_LARGE: (u64, u64, u64) = (u64::MAX, 0, 0);
    let round = |b: u64| b.checked_next_multiple_of(SLICE_GRANULARITY);
    let Some(m) = round(want) else {
        return TOO_LARGE;
    };
    if !mirrored {
        return (m, m, 0);
    }
    // The md superblock and data offset take a little of each leg: grow the
    // legs until the mirror holds `want`.
    let mut member = m;
    loop {
        if let Some((usable, off)) = md(raid::Layout::Raid1, 0, member, 2)
            && usable >= want
        {
            return (member, usable, off);
        }
        let (usable, _) = md(raid::Layout::Raid1, 0, member, 2).unwrap_or((0, 0));
        let grow = (want - usable.min(want)).max(SLICE_GRANULARITY);
        let Some(next) = member.checked_add(grow).and_then(round) else {
            return TOO_LARGE;
        };
        member = next;
    }
}

/// The smallest volume whole drives of `cap` bytes make for `p`: the
/// capacity a pod would see (the LUKS2 header off); `None` when they make
/// none. A drive whose smallest volume is above `maxVolumeSize` takes no
/// volume of the class.
pub(crate) fn smallest_whole_volume(cap: u64, p: &Parameters) -> Option<u64> {
    whole_layouts(cap, p)
        .iter()
        .map(|c| c.usable.saturating_sub(p.device_overhead()))
        .min()
}

/// The slice member a create of `bytes` of `p` asks placement for, as
/// [`Pool::place`] computes it.
fn slice_member(p: &Parameters, bytes: u64) -> u64 {
    let want = bytes.max(p.min_volume_size.unwrap_or(0)).max(1);
    slice_layout(want.saturating_add(p.device_overhead()), p.redundancy).0
}

/// What the start-up check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Volumes whose records name drives the inventory no longer has (kept,
    /// reported abnormal, not placed).
    pub missing_drives: Vec<(String, String)>,
    /// Volumes with a member on a failed drive.
    pub failed_members: Vec<(String, String)>,
    /// Records that could not be restored, and why.
    pub unrestorable: Vec<(String, String)>,
    /// Marks that name nothing in the inventory.
    pub unknown_marks: Vec<String>,
}

impl ReconcileReport {
    /// Whether everything agreed.
    pub fn is_clean(&self) -> bool {
        self.missing_drives.is_empty()
            && self.failed_members.is_empty()
            && self.unrestorable.is_empty()
            && self.unknown_marks.is_empty()
    }

    /// One line per difference.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (v, d) in &self.missing_drives {
            out.push(format!("volume {v}: drive {d} is not in the inventory"));
        }
        for (v, d) in &self.failed_members {
            out.push(format!("volume {v}: member drive {d} has failed"));
        }
        for (v, why) in &self.unrestorable {
            out.push(format!("volume {v}: not restored: {why}"));
        }
        for m in &self.unknown_marks {
            out.push(format!("mark {m}: names no drive, enclosure or server"));
        }
        out
    }
}

/// The in-memory state volumes are planned against.
///
/// `Clone` for the composer's copy that `GetCapacity` plans on (see
/// `Composer::capacity`): made once and then kept current by replaying the
/// changes. It shares with the pool it comes from the composer's inventory,
/// the accessible-topology table and, through `placement::Engine`'s cheap
/// clone, the placement inventory's shape and indexes, the volume records
/// and the per-drive member lists (in chunks), each copied on its first
/// write; it copies the placement inventory's live values (each drive's
/// free bytes and health), the engine's per-drive arrays, class trees and
/// volume index, the slice allocator and the marks.
#[derive(Clone)]
pub struct Pool {
    inv: Arc<Inventory>,
    engine: placement::Engine,
    slices: Allocator,
    /// Slice of (drive index, offset).
    slice_at: HashMap<(u32, u64), SliceId>,
    marks: BTreeMap<String, Health>,
    /// Volumes not in the engine (records naming missing drives).
    unplaced: std::collections::HashSet<String>,
    /// Accessible topology per (site, transport), computed once and shared
    /// with the pool's copies (every server of a site per entry: a copy of
    /// it took milliseconds of `GetCapacity`'s copy of the pool).
    topologies: Arc<HashMap<(u32, Transport), Vec<Topology>>>,
    /// Eligible drives in the last refusal of `try_place` (to pick the most
    /// telling explanation among attempts).
    last_eligible: usize,
}

fn place_err(e: placement::PlacementError) -> Error {
    Error::Internal(format!("placement: {e}"))
}

fn slice_err(e: slice_alloc::Error) -> Error {
    Error::Internal(format!("slice allocator: {e}"))
}

impl Pool {
    /// Builds the pool from the inventory, the operator's marks and the
    /// stored volumes, and checks them against each other.
    ///
    /// One pass, no re-placement: the slice allocator takes every slice at
    /// its recorded offset while, on a second thread, the placement engine
    /// is built in bulk from one inventory carrying every volume with its
    /// recorded members. The engine assumes every slice restores; in the
    /// rare case one does not, it is built again without those volumes.
    pub fn build(
        inv: Arc<Inventory>,
        marks: BTreeMap<String, Health>,
        volumes: &BTreeMap<String, VolumeRecord>,
    ) -> Result<(Pool, ReconcileReport), Error> {
        let mut report = ReconcileReport::default();
        for m in marks.keys() {
            if inv.drive_index(m).is_none()
                && inv.jbod_index(m).is_none()
                && inv.server_index(m).is_none()
            {
                report.unknown_marks.push(m.clone());
            }
        }
        let mut unplaced = std::collections::HashSet::new();
        // Volumes whose drives all exist, with their drive indexes.
        let mut known: Vec<(&VolumeRecord, Vec<u32>)> = Vec::with_capacity(volumes.len());
        'vols: for v in volumes.values() {
            let mut idx = Vec::with_capacity(v.members.len());
            for m in &v.members {
                match inv.drive_index(&m.drive) {
                    Some(i) => idx.push(i),
                    None => {
                        report.missing_drives.push((v.id.clone(), m.drive.clone()));
                        unplaced.insert(v.id.clone());
                        continue 'vols;
                    }
                }
            }
            known.push((v, idx));
        }
        let health = |d: u32| effective_drive_health(&inv, &marks, d);
        let ((slices, slice_at, unrestorable), engine) = std::thread::scope(|sc| {
            let restore = sc.spawn(|| restore_slices(&inv, &known));
            let engine = build_engine(&inv, &health, &known, &|_| true);
            let restored = restore
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("slice restore panicked".into())));
            restored.map(|r| (r, engine))
        })?;
        let engine = if unrestorable.is_empty() {
            engine?
        } else {
            let bad: std::collections::HashSet<&str> =
                unrestorable.iter().map(|(v, _)| v.as_str()).collect();
            build_engine(&inv, &health, &known, &|v| !bad.contains(v.id.as_str()))?
        };
        for (v, why) in unrestorable {
            unplaced.insert(v.clone());
            report.unrestorable.push((v, why));
        }
        for (v, idx) in &known {
            if unplaced.contains(&v.id) {
                continue;
            }
            for (m, &i) in v.members.iter().zip(idx) {
                if health(i) == Health::Failed {
                    report.failed_members.push((v.id.clone(), m.drive.clone()));
                }
            }
        }
        let mut pool = Pool {
            engine,
            inv,
            slices,
            slice_at,
            marks,
            unplaced,
            topologies: Arc::default(),
            last_eligible: 0,
        };
        let mut topologies = HashMap::new();
        for site in 0..pool.inv.file().sites.len() as u32 {
            for t in Transport::FASTEST_FIRST {
                topologies.insert((site, t), convert::volume_topology(&pool.inv, site, t));
            }
        }
        pool.topologies = Arc::new(topologies);
        Ok((pool, report))
    }

    /// The inventory.
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inv
    }

    /// The placement engine (read-only).
    pub fn engine(&self) -> &placement::Engine {
        &self.engine
    }

    /// The slice allocator (read-only).
    pub fn slices(&self) -> &Allocator {
        &self.slices
    }

    /// The operator's marks.
    pub fn marks(&self) -> &BTreeMap<String, Health> {
        &self.marks
    }

    /// Whether a stored volume could not be placed on start-up.
    pub fn is_unplaced(&self, id: &str) -> bool {
        self.unplaced.contains(id)
    }

    /// A drive's health: the worst of the file's, its enclosure's mark and its own mark.
    pub fn drive_health(&self, d: u32) -> Health {
        effective_drive_health(&self.inv, &self.marks, d)
    }

    /// Whether no volume has a member on drive `i` (an index of the
    /// inventory's drives). By index, not by id: `GetCapacity` asks it of
    /// every drive, and a lookup by id (a `String` made and hashed per
    /// drive) took most of a call's time at 100,000 drives.
    pub fn drive_is_unused(&self, i: u32) -> bool {
        self.drive_free(i) == self.inv.drives()[i as usize].capacity
    }

    /// The bytes of drive `i` (an index of the inventory's drives) no
    /// member of a volume takes, whole-drive or slice: placement's count.
    /// (The slice allocator sees slices only: an SSD that a whole-drive
    /// volume holds is all free there.)
    pub fn drive_free(&self, i: u32) -> u64 {
        // The engine's drives are the inventory's, in its order
        // (`convert::placement_spec`); the pool never adds or removes one.
        self.engine.inventory().drives_free()[i as usize].0
    }

    /// A server's health: the worse of the file's and its mark.
    pub fn server_health(&self, s: u32) -> Health {
        let srv = &self.inv.servers()[s as usize];
        srv.health
            .max(self.marks.get(&srv.id).copied().unwrap_or_default())
    }

    /// Plans a volume and commits it to the pool (not to the store).
    pub fn place(&mut self, id: &str, req: &VolumeRequest<'_>) -> Result<Plan, Error> {
        let p = req.parameters;
        let want = match (req.range.required_bytes, req.range.limit_bytes) {
            (Some(r), _) => r,
            (None, Some(l)) => DEFAULT_VOLUME_SIZE.min(l),
            (None, None) => DEFAULT_VOLUME_SIZE,
        }
        .max(p.min_volume_size.unwrap_or(0))
        .max(1);
        if let Some(max) = p.max_volume_size
            && want > max
        {
            return Err(Error::OutOfRange(format!(
                "{} requested, more than the StorageClass's maxVolumeSize {}",
                human(want),
                human(max)
            )));
        }
        let limit = match (req.range.limit_bytes, p.max_volume_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(l) = limit
            && l < want
        {
            return Err(Error::OutOfRange(format!(
                "limit_bytes {} is below the {} this volume needs (minVolumeSize {})",
                human(l),
                human(want),
                p.min_volume_size.map_or("unset".into(), human)
            )));
        }
        self.inv.check_names(p)?;
        // The device holds the volume and the node's header (LUKS2).
        let overhead = p.device_overhead();
        let need = want.saturating_add(overhead);
        let (kinds, capacities) = self.media_of(p);
        // Layout candidates: (member bytes, capacity tag or none, choice).
        let mut candidates: Vec<(u64, Option<u64>, Choice)> = Vec::new();
        let largest = capacities.last().copied().unwrap_or(0);
        if p.kind == VolumeType::Slice {
            let (member, usable, off) = slice_layout(need, p.redundancy);
            if member > largest {
                return Err(Error::OutOfRange(format!(
                    "type=slice: {} needs a slice of {}, larger than any solid-state drive (largest {}); slices are never striped, use type=ssd for a striped volume",
                    human(need),
                    human(member),
                    human(largest)
                )));
            }
            let (kind, shape) = if p.redundancy {
                (LayoutKind::SliceMirror, Shape::Mirror { legs: 2 })
            } else {
                (LayoutKind::Slice, Shape::Slice)
            };
            candidates.push((
                member,
                None,
                Choice {
                    kind,
                    shape,
                    usable,
                    chunk: 0,
                    data_offset: off,
                },
            ));
        } else {
            let mut last_err = format!("the inventory has no {:?} drives", kinds);
            for &cap in &capacities {
                match whole_drive_layout(cap, need, p) {
                    Ok(c) => candidates.push((cap, Some(cap), c)),
                    Err(e) => last_err = e,
                }
            }
            if candidates.is_empty() {
                return Err(Error::OutOfRange(format!(
                    "cannot lay out {}: {last_err}",
                    human(need)
                )));
            }
        }
        // The volume must not be bigger than the limit (CSI CapacityRange): a whole-drive
        // layout is the whole drive, and a drive larger than the limit is no candidate.
        if let Some(l) = limit {
            let smallest = candidates
                .iter()
                .map(|(_, _, c)| c.usable - overhead)
                .min()
                .unwrap_or(0);
            candidates.retain(|(_, _, c)| c.usable - overhead <= l);
            if candidates.is_empty() {
                let field = if req.range.limit_bytes == Some(l) {
                    "limit_bytes"
                } else {
                    "the StorageClass's maxVolumeSize"
                };
                return Err(Error::OutOfRange(format!(
                    "{field} {} is below the smallest volume of type={} that holds {}: {}{}",
                    human(l),
                    match p.kind {
                        VolumeType::Hdd => "hdd",
                        VolumeType::Ssd => "ssd",
                        VolumeType::Slice => "slice",
                    },
                    human(want),
                    human(smallest),
                    if p.kind == VolumeType::Slice {
                        " (slices come in whole MiB); raise the limit"
                    } else {
                        " (whole drives); raise the limit or use type=slice"
                    }
                )));
            }
        }
        let sites = convert::candidate_sites(&self.inv, req.topology);
        if sites.is_empty() {
            // Each requisite segment with why it names nothing here.
            let why: Vec<String> = req
                .topology
                .map(|t| {
                    t.requisite
                        .iter()
                        .chain(&t.preferred)
                        .filter_map(|s| convert::resolve_segment(&self.inv, s).err())
                        .collect()
                })
                .unwrap_or_default();
            return Err(Error::Exhausted(format!(
                "accessibility_requirements: no segment names a site, rack or server of the inventory{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            )));
        }
        // The most telling failure: the attempt whose filters left the most
        // drives (the first of equals: the fastest transport, the smallest layout).
        let mut last: Option<String> = None;
        let mut last_eligible = 0usize;
        let mut attempts = 0;
        for (site, scopes) in &sites {
            for t in p.transports.iter() {
                if !self.reachable(*site, scopes, t) {
                    continue;
                }
                for (member, cap_tag, choice) in &candidates {
                    attempts += 1;
                    let preq = self.request(req, &kinds, *site, t, *member, *cap_tag, choice);
                    match self.try_place(id, &preq, choice, *member) {
                        Ok((members, soft)) => {
                            // What the pod sees: the device less the header.
                            let visible = choice.usable - overhead;
                            // Never above the limit: the candidates above it were dropped.
                            let capacity = visible;
                            return Ok(Plan {
                                layout: LayoutRecord {
                                    kind: choice.kind,
                                    chunk_sectors: choice.chunk,
                                    data_offset_sectors: choice.data_offset,
                                    member_bytes: *member,
                                    usable_bytes: choice.usable,
                                },
                                members,
                                request: preq,
                                site: *site,
                                transport: t,
                                capacity,
                                soft_violations: soft,
                            });
                        }
                        Err(Error::Exhausted(why))
                            if last.is_none() || self.last_eligible > last_eligible =>
                        {
                            last_eligible = self.last_eligible;
                            last = Some(format!(
                                "{} over {} in site {}: {why}",
                                describe(choice, *member),
                                t,
                                self.inv.site_id(*site)
                            ))
                        }
                        Err(Error::Exhausted(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(Error::Exhausted(match last {
            Some(l) => format!(
                "cannot place volume '{}' ({attempts} layout/site/transport combination(s) tried); last: {l}",
                req.name
            ),
            None => format!(
                "cannot place volume '{}': no server in the requested topology supports a transport allowed by networkTransportsAllowed ({})",
                req.name,
                p.transports
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }))
    }

    #[allow(clippy::too_many_arguments)] // one call site; the arguments are the plan's coordinates
    fn request(
        &self,
        req: &VolumeRequest<'_>,
        kinds: &[Media],
        site: u32,
        t: Transport,
        member: u64,
        cap_tag: Option<u64>,
        choice: &Choice,
    ) -> placement::Request {
        let p = req.parameters;
        let mut r = placement::Request::new(choice.shape.clone(), member);
        r.name = Some(req.name.to_string());
        r.kinds = kinds.iter().map(|k| convert::drive_kind(*k)).collect();
        r.min_rpm = p.effective_min_rpm();
        r.require_tags = p.required_tags.clone();
        if let Some(c) = cap_tag {
            r.require_tags.push(convert::capacity_tag(c));
        }
        r.exclude_tags = p.excluded_tags.clone();
        r.storage_groups = p
            .storage_groups
            .iter()
            .filter_map(|g| placement::GroupId::new(g.clone()).ok())
            .collect();
        r.transports = Some(convert::placement_transport(t));
        let redundant = matches!(choice.shape, Shape::Mirror { .. })
            || matches!(choice.shape, Shape::Raid10 { mirrors, .. } if mirrors > 1);
        let mode = |hard: bool| if hard { Mode::Hard } else { Mode::Soft };
        if redundant {
            r.separation = vec![
                placement::Separation::level("jbod", mode(p.jbod_resiliency)),
                placement::Separation::storage_group(mode(p.sg_resiliency)),
                placement::Separation::level("rack", Mode::Soft),
            ];
        }
        let n = choice.shape.member_count() as u32;
        // Switches are optional in an inventory: with none, placement has
        // no bandwidth domain of kind `switch`, and spreading over them
        // was refused as a malformed request (an INTERNAL answer to every
        // create of more than one drive).
        if n > 1 && !self.inv.file().switches.is_empty() {
            r.bandwidth_spread = vec![placement::Spread {
                kind: "switch".into(),
                mode: mode(!p.soft_domains),
                max_per_domain: n.div_ceil(2),
                per_group: false,
            }];
        }
        let mut seg = placement::Segment::new();
        seg.insert("site".into(), convert::site_domain(self.inv.site_id(site)));
        r.requisite = vec![seg];
        r
    }

    /// The media a volume of `p` goes on, and their drive capacities in the
    /// inventory, smallest first.
    fn media_of(&self, p: &Parameters) -> (Vec<Media>, Vec<u64>) {
        let kinds: Vec<Media> = match p.kind {
            VolumeType::Hdd => vec![Media::Hdd],
            VolumeType::Ssd | VolumeType::Slice => vec![Media::Ssd, Media::Nvme],
        };
        let mut caps: Vec<u64> = self
            .inv
            .capacities()
            .iter()
            .filter(|(k, _)| kinds.contains(k))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        caps.sort_unstable();
        caps.dedup();
        (kinds, caps)
    }

    /// Whether some healthy server in one of `scopes` of `site` supports
    /// transport `t` (a volume over `t` there is accessible from it).
    fn reachable(&self, site: u32, scopes: &[convert::Scope], t: Transport) -> bool {
        scopes.iter().any(|sc| {
            sc.any_server(&self.inv, site, |s| {
                self.inv.servers()[s as usize].transports.contains(t)
                    && self.server_health(s) != Health::Failed
            })
        })
    }

    /// The largest whole-drive volume of `p` placement could place now
    /// (accessible from `topology` when given, as a create asks), under the
    /// same constraints as a create: for each drive capacity of the medium,
    /// the largest layout (one drive, a RAID0, RAID1 or RAID10 of up to
    /// `raidMaxDrives` drives) whose members
    /// [`placement::Engine::max_placeable`] finds whole drives for, over a
    /// transport some healthy server in the topology supports. 0 when none.
    pub fn max_whole_volume(&self, p: &Parameters, topology: Option<&TopologyRequirement>) -> u64 {
        let (kinds, caps) = self.media_of(p);
        let sites = convert::candidate_sites(&self.inv, topology);
        let vreq = VolumeRequest {
            name: "capacity",
            parameters: p,
            range: CapacityRange::default(),
            topology: None,
        };
        let mut best = 0;
        for &cap in &caps {
            let layouts = whole_layouts(cap, p);
            let fits = |c: &Choice| {
                sites.iter().any(|(s, scopes)| {
                    let s = *s;
                    p.transports.iter().any(|t| {
                        self.reachable(s, scopes, t) && {
                            let r = self.request(&vreq, &kinds, s, t, cap, Some(cap), c);
                            // Not `Engine::plan`: where no placement exists
                            // it builds its explanation, which took about
                            // 0.35 s per call at 100,000 drives (5-6 s for a
                            // class nothing fits); `max_placeable` answers
                            // `None` without one.
                            match self.engine.max_placeable(&r, None) {
                                Ok(b) => b.is_some_and(|b| b.0 >= cap),
                                // An exhausted search budget: unknown, not
                                // "does not fit"; counted as not fitting
                                // (never reporting a volume no create could
                                // place), but said, since it lowers the
                                // answer.
                                Err(e) => {
                                    tracing::warn!(
                                        layout = %describe(c, cap),
                                        transport = %t,
                                        "maximum_volume_size: placement could not decide \
                                         whether this layout fits, counted as not fitting: {e}"
                                    );
                                    false
                                }
                            }
                        }
                    })
                })
            };
            // A layout needs as many whole drives of this capacity with
            // nothing on them and the class's tags: no search for one
            // that has fewer (a class nothing fits asks none).
            let free_drives = self
                .inv
                .drives()
                .iter()
                .enumerate()
                .filter(|(i, d)| {
                    d.capacity == cap
                        && kinds.contains(&d.kind)
                        && p.required_tags.iter().all(|t| d.tags.contains(t))
                        && !p.excluded_tags.iter().any(|t| d.tags.contains(t))
                        && self.drive_is_unused(*i as u32)
                })
                .count();
            // A layout bigger than maxVolumeSize is never made (`place` drops it).
            let layouts: Vec<Choice> = layouts
                .into_iter()
                .take_while(|c| c.shape.member_count() <= free_drives)
                .take_while(|c| {
                    p.max_volume_size
                        .is_none_or(|m| c.usable.saturating_sub(p.device_overhead()) <= m)
                })
                .collect();
            // Placeable is monotone along `layouts` (one family each: a
            // single drive then RAID0 of 2.., or RAID1 then RAID10 of
            // 2.. stripes): a placement of n members holds one of n - 1
            // (drop a member from the fullest switch; for mirrors, keep one
            // leg of two pairs, which lie in different enclosures and storage
            // groups), so bisect for the largest layout that fits.
            // `tests/capacity_agrees.rs` checks the answer against creates.
            // The largest layout is tried first: on an inventory with
            // whole drives to spare (the usual case) it fits, and one
            // search over every drive answers instead of a bisection's
            // two or three.
            let (mut lo, mut hi) = match layouts.last() {
                Some(top) if fits(top) => (layouts.len(), layouts.len()),
                _ => (0usize, layouts.len().saturating_sub(1)),
            };
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if fits(&layouts[mid]) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo > 0 {
                best = best.max(layouts[lo - 1].usable);
            }
        }
        best
    }

    /// A volume id no volume in the pool carries, for a trial plan:
    /// `capacity-probe`, or `capacity-probe-N` for the first N free.
    /// The composer hands out `vol-N`, but a stored record may carry any
    /// id placement accepts (one written through [`crate::Store::commit`]
    /// by another tool): under a fixed id taken by such a volume, every
    /// trial failed as a duplicate and GetCapacity answered 0.
    fn probe_id(&self) -> Result<String, Error> {
        let mut id = String::from("capacity-probe");
        for n in 1u64.. {
            let vid = placement::VolumeId::new(id.as_str())
                .map_err(|e| Error::Internal(e.to_string()))?;
            if self.engine.volume(&vid).is_none() {
                break;
            }
            id = format!("capacity-probe-{n}");
        }
        Ok(id)
    }

    /// Whether a create of a volume of `p` of `bytes` (the size asked for,
    /// as `required_bytes`) would succeed now, accessible from `topology`:
    /// the volume is planned as a create plans it and taken back at once,
    /// so the pool is as before. An `Err` only when taking it back failed.
    pub fn would_place(
        &mut self,
        p: &Parameters,
        topology: Option<&TopologyRequirement>,
        bytes: u64,
    ) -> Result<bool, Error> {
        let Ok(range) = CapacityRange::new(Some(bytes), None) else {
            return Ok(false);
        };
        let probe = self.probe_id()?;
        let req = VolumeRequest {
            name: &probe,
            parameters: p,
            range,
            topology,
        };
        match self.place(&probe, &req) {
            Ok(plan) => {
                self.unplace(&probe, plan.layout.kind, &plan.members)?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// The largest size up to `upper` (an estimate that no larger create
    /// can exceed) with which a create of a volume of `p` would succeed
    /// now, accessible from `topology`: `upper` itself when it places, else
    /// the largest whole number of [`SLICE_GRANULARITY`] below it that
    /// does, by bisection; 0 when none does. Changes nothing.
    ///
    /// The estimates ([`Pool::max_whole_volume`], the slice allocator's
    /// largest free extent) cannot see everything a create checks (for a
    /// slice: which servers reach the drive, mirror legs in separate
    /// enclosures and switches), and `maximum_volume_size` must be a size
    /// that a create then places.
    pub fn largest_placeable(
        &mut self,
        p: &Parameters,
        topology: Option<&TopologyRequirement>,
        upper: u64,
    ) -> Result<u64, Error> {
        if upper == 0 || self.would_place(p, topology, upper)? {
            return Ok(upper);
        }
        // A trial whose slice placement cannot hold is refused without
        // planning it: a refused plan builds placement's explanation, which
        // made each failing trial of the bisection cost a full search.
        // The bound is asked at the first trial that needs it: in the usual
        // case `upper` places at once, and a slice larger than every drive
        // is refused by `place` before any search (asking the bound there
        // made a class nothing fits, minVolumeSize 8 TB, slower).
        let largest = self.media_of(p).1.last().copied().unwrap_or(0);
        let mut bound: Option<Option<u64>> = None;
        let mut fits = |pool: &mut Self, bytes: u64| -> Result<bool, Error> {
            if p.kind == VolumeType::Slice {
                let member = slice_member(p, bytes);
                if member > largest {
                    return Ok(false);
                }
                let b = *bound.get_or_insert_with(|| pool.slice_member_bound(p, topology));
                if b.is_some_and(|m| member > m) {
                    return Ok(false);
                }
            }
            pool.would_place(p, topology, bytes)
        };
        let g = SLICE_GRANULARITY;
        // Invariant: `lo` granules place (0 trivially), `hi` granules do not.
        let (mut lo, mut hi) = (0u64, upper.div_ceil(g));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(self, mid * g)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo * g)
    }

    /// For slices, the largest member placement could place now for `p`
    /// (accessible from `topology`), over the sites and transports a
    /// create tries ([`placement::Engine::max_placeable`], which is exact
    /// and builds no explanation); 0 when none places. A create asking a
    /// larger member is refused by placement, whatever the slice allocator
    /// holds. `None` for whole drives (their layouts depend on the size)
    /// and when placement cannot tell (a search budget ran out).
    fn slice_member_bound(
        &self,
        p: &Parameters,
        topology: Option<&TopologyRequirement>,
    ) -> Option<u64> {
        if p.kind != VolumeType::Slice {
            return None;
        }
        let (kinds, _) = self.media_of(p);
        let (kind, shape) = if p.redundancy {
            (LayoutKind::SliceMirror, Shape::Mirror { legs: 2 })
        } else {
            (LayoutKind::Slice, Shape::Slice)
        };
        // Only the shape matters to the request (its size is not asked).
        let choice = Choice {
            kind,
            shape,
            usable: 0,
            chunk: 0,
            data_offset: 0,
        };
        let vreq = VolumeRequest {
            name: "capacity",
            parameters: p,
            range: CapacityRange::default(),
            topology,
        };
        let mut bound = 0;
        for (site, scopes) in convert::candidate_sites(&self.inv, topology) {
            for t in p.transports.iter() {
                if !self.reachable(site, &scopes, t) {
                    continue;
                }
                let r = self.request(&vreq, &kinds, site, t, 1, None, &choice);
                match self.engine.max_placeable(&r, None) {
                    Ok(b) => bound = bound.max(b.map_or(0, |b| b.0)),
                    Err(_) => return None,
                }
            }
        }
        Some(bound)
    }

    /// Places `preq` and, for slices, allocates them; on failure nothing changes.
    fn try_place(
        &mut self,
        id: &str,
        preq: &placement::Request,
        choice: &Choice,
        member: u64,
    ) -> Result<(Vec<MemberRecord>, Vec<String>), Error> {
        let vid = placement::VolumeId::new(id).map_err(|e| Error::Internal(e.to_string()))?;
        let mut preq = preq.clone();
        for _ in 0..=SLICE_RETRIES {
            let placed = match self.engine.place(vid.clone(), &preq) {
                Ok(p) => p,
                Err(placement::PlacementError::Unsatisfiable(ex))
                | Err(placement::PlacementError::SearchExhausted {
                    explanation: ex, ..
                }) => {
                    self.last_eligible = ex.eligible;
                    return Err(Error::Exhausted(explain(&ex)));
                }
                Err(e) => return Err(place_err(e)),
            };
            let soft: Vec<String> = placed
                .soft_violations
                .iter()
                .map(|v| format!("{}: {}", v.constraint, v.detail))
                .collect();
            let drives = placed.drives();
            if !choice.kind.is_slice() {
                let members = drives
                    .iter()
                    .map(|d| MemberRecord {
                        drive: d.to_string(),
                        offset: 0,
                        len: member,
                    })
                    .collect();
                return Ok((members, soft));
            }
            let mut got: Vec<(u32, slice_alloc::Slice)> = Vec::new();
            let mut failed = None;
            for d in &drives {
                let i = self
                    .inv
                    .drive_index(d.as_str())
                    .expect("placement knows only inventory drives");
                let dev = [DeviceId::new(i as u64)];
                match self.slices.allocate(member, &Constraints::on_devices(&dev)) {
                    Ok(s) => got.push((i, s)),
                    Err(_) => {
                        failed = Some(d.clone());
                        break;
                    }
                }
            }
            match failed {
                None => {
                    let mut members = Vec::new();
                    for (i, s) in got {
                        let off = s.extents[0].offset();
                        self.slice_at.insert((i, off), s.id);
                        members.push(MemberRecord {
                            drive: self.inv.drives()[i as usize].id.clone(),
                            offset: off,
                            len: s.size(),
                        });
                    }
                    return Ok((members, soft));
                }
                Some(d) => {
                    // Too fragmented for one extent: undo and avoid that SSD.
                    for (_, s) in got {
                        self.slices.free(s.id).map_err(slice_err)?;
                    }
                    self.engine.remove(&vid).map_err(place_err)?;
                    preq.exclude_drives.push(d);
                }
            }
        }
        self.last_eligible = usize::MAX;
        Err(Error::Exhausted(format!(
            "the solid-state drives placement chose are too fragmented for a {} slice ({} tried)",
            human(member),
            SLICE_RETRIES + 1
        )))
    }

    /// Adds a volume that another controller recorded (the store reported
    /// it) with its members exactly as recorded: its slices at their
    /// offsets, its drives in placement. On failure nothing is kept.
    pub fn restore(&mut self, rec: &VolumeRecord) -> Result<(), Error> {
        let mut idx = Vec::with_capacity(rec.members.len());
        for m in &rec.members {
            match self.inv.drive_index(&m.drive) {
                Some(i) => idx.push(i),
                None => {
                    self.unplaced.insert(rec.id.clone());
                    return Ok(());
                }
            }
        }
        let mut mine = Vec::new();
        if rec.layout.kind.is_slice() {
            for (m, &i) in rec.members.iter().zip(&idx) {
                match self
                    .slices
                    .allocate_at(DeviceId::new(i as u64), m.offset, m.len)
                {
                    Ok(s) => mine.push(((i, m.offset), s.id)),
                    Err(e) => {
                        for (_, s) in mine {
                            let _ = self.slices.free(s);
                        }
                        return Err(Error::Conflict(format!(
                            "volume {} recorded a slice on {} at {} that is taken here: {e}",
                            rec.id, m.drive, m.offset
                        )));
                    }
                }
            }
        }
        let spec = placement::VolumeSpec {
            id: placement::VolumeId::new(rec.id.clone())
                .map_err(|e| Error::Internal(e.to_string()))?,
            request: upgrade_request(&rec.request).into(),
            members: rec
                .members
                .iter()
                .map(|m| placement::DriveId::new(m.drive.clone()))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?,
        };
        let version = self.engine.version();
        if let Err(e) = self.engine.adopt(spec, version) {
            for (_, s) in mine {
                let _ = self.slices.free(s);
            }
            return Err(Error::Conflict(format!(
                "volume {} as recorded does not fit here: {e}",
                rec.id
            )));
        }
        self.slice_at.extend(mine);
        Ok(())
    }

    /// Removes a volume's members from the pool.
    pub fn release(&mut self, rec: &VolumeRecord) -> Result<(), Error> {
        if self.unplaced.remove(&rec.id) {
            return Ok(());
        }
        self.unplace(&rec.id, rec.layout.kind, &rec.members)
    }

    /// Takes volume `id` of layout `kind` with `members` out of placement
    /// and the slice allocator.
    fn unplace(
        &mut self,
        id: &str,
        kind: LayoutKind,
        members: &[MemberRecord],
    ) -> Result<(), Error> {
        let vid = placement::VolumeId::new(id).map_err(|e| Error::Internal(e.to_string()))?;
        self.engine.remove(&vid).map_err(place_err)?;
        if kind.is_slice() {
            for m in members {
                let i = self
                    .inv
                    .drive_index(&m.drive)
                    .ok_or_else(|| Error::Internal(format!("drive {} vanished", m.drive)))?;
                if let Some(s) = self.slice_at.remove(&(i, m.offset)) {
                    self.slices.free(s).map_err(slice_err)?;
                }
            }
        }
        Ok(())
    }

    /// Grows a single slice in place to `new_member` bytes (placement's
    /// accounting follows: the volume is re-placed pinned to its drive).
    pub fn grow_slice(
        &mut self,
        rec: &VolumeRecord,
        new_member: u64,
    ) -> Result<MemberRecord, Error> {
        let m = &rec.members[0];
        let i = self
            .inv
            .drive_index(&m.drive)
            .ok_or_else(|| Error::Internal(format!("drive {} vanished", m.drive)))?;
        let sid = *self.slice_at.get(&(i, m.offset)).ok_or_else(|| {
            Error::Internal(format!("no slice recorded at {}@{}", m.drive, m.offset))
        })?;
        let vid =
            placement::VolumeId::new(rec.id.clone()).map_err(|e| Error::Internal(e.to_string()))?;
        let old = self.engine.remove(&vid).map_err(place_err)?;
        let mut req = placement::Request::clone(&old.request);
        req.size = placement::Bytes(new_member);
        req.pinned = vec![placement::Pin {
            member: 0,
            drive: old.members[0].clone(),
        }];
        if let Err(e) = self.engine.place(vid.clone(), &req) {
            self.engine
                .place(vid, &{
                    let mut r = placement::Request::clone(&old.request);
                    r.pinned = vec![placement::Pin {
                        member: 0,
                        drive: old.members[0].clone(),
                    }];
                    r
                })
                .map_err(place_err)?;
            return Err(Error::OutOfRange(format!(
                "slice on {} cannot grow to {}: {}",
                m.drive,
                human(new_member),
                match e {
                    placement::PlacementError::Unsatisfiable(ex) => ex.to_string(),
                    other => other.to_string(),
                }
            )));
        }
        match self.slices.grow(sid, new_member) {
            Ok(s) => Ok(MemberRecord {
                drive: m.drive.clone(),
                offset: m.offset,
                len: s.size(),
            }),
            Err(e) => {
                self.engine.remove(&vid).map_err(place_err)?;
                let mut r = placement::Request::clone(&old.request);
                r.pinned = vec![placement::Pin {
                    member: 0,
                    drive: old.members[0].clone(),
                }];
                self.engine.place(vid, &r).map_err(place_err)?;
                Err(Error::OutOfRange(format!(
                    "slice on {} cannot grow in place to {}: {e}",
                    m.drive,
                    human(new_member)
                )))
            }
        }
    }

    /// Records an operator's mark (`Healthy` removes it) and tells placement
    /// the resulting health of every drive it touches (a drive's health is
    /// the worst of the file's, its own mark and its enclosure's mark).
    pub fn set_mark(&mut self, target: &str, health: Health) -> Result<(), Error> {
        match health {
            Health::Healthy => self.marks.remove(target),
            h => self.marks.insert(target.to_string(), h),
        };
        let drives: Vec<u32> = match (self.inv.drive_index(target), self.inv.jbod_index(target)) {
            (Some(d), _) => vec![d],
            (None, Some(j)) => self.inv.jbod_drives(j).to_vec(),
            // Servers are not placement's concern.
            (None, None) => Vec::new(),
        };
        for d in drives {
            let h = self.drive_health(d);
            let id = self.inv.drives()[d as usize].id.clone();
            self.engine.set_drive_health(&id, h).map_err(place_err)?;
        }
        Ok(())
    }

    /// Placement's evacuation plan for a drive or failure domain (not applied).
    pub fn plan_repair(&mut self, target: &str) -> Result<placement::RepairPlan, Error> {
        self.engine.plan_evacuation(target).map_err(place_err)
    }

    /// Commits a repair plan to the placement engine.
    ///
    /// Placement's `apply_plan` also marks the target's drives failed in
    /// the engine; the composer's health is its durable marks, which a
    /// restart rebuilds the engine from. The target's drives are set back
    /// to that health, so that the running engine places exactly as a
    /// restarted one would (before, a `repair-apply` of a drive not marked
    /// failed kept it out of every placement until the next restart, while
    /// the drive report called it healthy).
    pub fn apply_plan(&mut self, plan: &placement::RepairPlan) -> Result<(), Error> {
        self.engine.apply_plan(plan).map_err(place_err)?;
        for d in &plan.drives {
            if let Some(i) = self.inv.drive_index(&d.to_string()) {
                let h = self.drive_health(i);
                self.engine
                    .set_drive_health(&d.to_string(), h)
                    .map_err(place_err)?;
            }
        }
        Ok(())
    }

    /// Allocates a slice of `len` bytes on `drive`; returns its offset.
    pub fn allocate_slice_on(&mut self, drive: &str, len: u64) -> Result<u64, Error> {
        let i = self
            .inv
            .drive_index(drive)
            .ok_or_else(|| Error::Internal(format!("drive {drive} is not in the inventory")))?;
        let dev = [DeviceId::new(i as u64)];
        let s = self
            .slices
            .allocate(len, &Constraints::on_devices(&dev))
            .map_err(|e| Error::Exhausted(format!("no slice of {} on {drive}: {e}", human(len))))?;
        let off = s.extents[0].offset();
        self.slice_at.insert((i, off), s.id);
        Ok(off)
    }

    /// Frees the slice at `offset` on `drive`, if there is one.
    pub fn free_slice(&mut self, drive: &str, offset: u64) -> Result<(), Error> {
        if let Some(i) = self.inv.drive_index(drive)
            && let Some(s) = self.slice_at.remove(&(i, offset))
        {
            self.slices.free(s).map_err(slice_err)?;
        }
        Ok(())
    }

    /// Where a volume is accessible from.
    pub fn volume_topology(&self, rec: &VolumeRecord) -> Vec<Topology> {
        self.inv
            .site_index(&rec.site)
            .and_then(|s| self.topologies.get(&(s, rec.transport)))
            .cloned()
            .unwrap_or_default()
    }
}

/// A drive's health: the worst of the file's, its enclosure's mark and its own mark.
fn effective_drive_health(inv: &Inventory, marks: &BTreeMap<String, Health>, d: u32) -> Health {
    let drive = &inv.drives()[d as usize];
    let mark = |id: &str| marks.get(id).copied().unwrap_or_default();
    drive
        .health
        .max(mark(&drive.id))
        .max(mark(inv.jbod_id(drive.jbod)))
}

/// Restored slices: the allocator with every slice of `known` at its
/// recorded offset, where each lies, and the volumes whose slices could not
/// be taken (with why; none of their slices is kept).
type Restored = (
    Allocator,
    HashMap<(u32, u64), SliceId>,
    Vec<(String, String)>,
);

fn restore_slices(inv: &Inventory, known: &[(&VolumeRecord, Vec<u32>)]) -> Result<Restored, Error> {
    let mut slices = Allocator::new(AllocatorConfig {
        growth_headroom_percent: 10,
        multi_extent: false,
        ..AllocatorConfig::default()
    })
    .map_err(slice_err)?;
    for (i, d) in inv.drives().iter().enumerate() {
        if d.kind != Media::Hdd && d.capacity >= SLICE_GRANULARITY {
            let spec = DeviceSpec::new(DeviceId::new(i as u64), d.capacity)
                .and_then(|s| s.with_granularity(SLICE_GRANULARITY))
                .map_err(slice_err)?;
            slices.add_device(spec).map_err(slice_err)?;
        }
    }
    let mut slice_at = HashMap::new();
    let mut bad = Vec::new();
    'vols: for (v, idx) in known.iter().filter(|(v, _)| v.layout.kind.is_slice()) {
        let mut mine = Vec::new();
        for (m, &i) in v.members.iter().zip(idx) {
            match slices.allocate_at(DeviceId::new(i as u64), m.offset, m.len) {
                Ok(s) => mine.push(((i, m.offset), s.id)),
                Err(e) => {
                    for (_, s) in mine {
                        let _ = slices.free(s);
                    }
                    bad.push((v.id.clone(), format!("slice on {}: {e}", m.drive)));
                    continue 'vols;
                }
            }
        }
        slice_at.extend(mine);
    }
    Ok((slices, slice_at, bad))
}

/// The placement engine over the inventory with the volumes of `known`
/// that `keep` accepts, each on its recorded members.
fn build_engine(
    inv: &Inventory,
    health: &(dyn Fn(u32) -> Health + Sync),
    known: &[(&VolumeRecord, Vec<u32>)],
    keep: &dyn Fn(&VolumeRecord) -> bool,
) -> Result<placement::Engine, Error> {
    let mut used = vec![0u64; inv.drives().len()];
    let mut vols = Vec::with_capacity(known.len());
    for (v, idx) in known.iter().filter(|(v, _)| keep(v)) {
        for (m, &i) in v.members.iter().zip(idx) {
            used[i as usize] += m.len;
        }
        vols.push(placement::VolumeSpec {
            id: placement::VolumeId::new(v.id.clone())
                .map_err(|e| Error::Internal(e.to_string()))?,
            request: upgrade_request(&v.request).into(),
            members: v
                .members
                .iter()
                .map(|m| placement::DriveId::new(m.drive.clone()))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?,
        });
    }
    let mut spec = convert::placement_spec(inv, health, |d| {
        inv.drives()[d as usize]
            .capacity
            .saturating_sub(used[d as usize])
    });
    spec.volumes = vols;
    let pinv = placement::Inventory::from_spec(spec)
        .map_err(|e| Error::Internal(format!("the placement inventory: {e}")))?;
    placement::Engine::new(pinv, 0).map_err(place_err)
}

/// A stored request in today's terms. Records written before placement had
/// native storage-group separation and the NBD transport name a failure
/// level `sg` and require the tag `composer.transport.nbd`; they read as
/// storage-group separation and placement's NBD transport.
fn upgrade_request(r: &placement::Request) -> placement::Request {
    const OLD_NBD_TAG: &str = "composer.transport.nbd";
    let mut r = r.clone();
    for s in &mut r.separation {
        if s.level == "sg" {
            *s = placement::Separation::storage_group(s.mode);
        }
    }
    if let Some(i) = r.require_tags.iter().position(|t| t == OLD_NBD_TAG) {
        r.require_tags.remove(i);
        r.transports = Some(placement::Transports::NBD);
    }
    r
}

fn describe(c: &Choice, member: u64) -> String {
    let n = c.shape.member_count();
    match c.kind {
        LayoutKind::Single => format!("one drive of {}", human(member)),
        LayoutKind::Slice => format!("a slice of {}", human(member)),
        LayoutKind::SliceMirror => format!("a mirror of two slices of {}", human(member)),
        k => format!("a {} of {n} drives of {}", k.name(), human(member)),
    }
}

/// Placement's explanation, with the StorageClass parameter behind each
/// blocked hard constraint.
fn explain(ex: &placement::Explanation) -> String {
    let mut s = ex.to_string();
    // Placement names its filters; an operator reads StorageClass keys.
    let keys: Vec<&str> = ex
        .removed
        .iter()
        .filter_map(|c| match c.filter {
            placement::Filter::Kind => Some("kind is type"),
            placement::Filter::MinRpm => Some("min_rpm is rpm"),
            placement::Filter::RequireTags => Some(
                "require_tags is requiredTags and, for whole drives, the layout's drive \
                 capacity (composer.capacity=<bytes>)",
            ),
            placement::Filter::ExcludeTags => Some("exclude_tags is excludedTags"),
            placement::Filter::StorageGroup => Some("storage_group is storageGroup"),
            placement::Filter::Transport => Some(
                "transport is networkTransportsAllowed, over a transport a server of the \
                 topology speaks",
            ),
            _ => None,
        })
        .collect();
    if !keys.is_empty() {
        s.push_str(&format!(" (filters: {})", keys.join("; ")));
    }
    let level = |name: &str| {
        ex.blocked.iter().any(|b| {
            matches!(b, placement::Blocker::Separation { scope: placement::Scope::Level(l), .. } if l == name)
        })
    };
    if level("jbod") {
        s.push_str("; jbodResiliency=true requires the legs of each mirror in different JBODs (jbodResiliency=false makes it best effort)");
    }
    if ex.blocked.iter().any(|b| {
        matches!(
            b,
            placement::Blocker::Separation {
                scope: placement::Scope::StorageGroup,
                ..
            }
        )
    }) {
        s.push_str("; sgResiliency=true requires the legs of each mirror in different storage groups (sgResiliency=false makes it best effort)");
    }
    if ex
        .blocked
        .iter()
        .any(|b| matches!(b, placement::Blocker::Spreading { kind, .. } if kind == "switch"))
    {
        s.push_str("; softDomains=false requires at most half of the members behind one switch (softDomains=true makes it best effort)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places a mirror, an SSD and a slice of 1 GiB named `PREFIX-0`,
    /// `PREFIX-1` and `PREFIX-2`, and returns them with their plans.
    fn place_three(pool: &mut Pool, prefix: &str) -> Vec<(String, Plan)> {
        let classes = [
            &[("redundancy", "true")][..],
            &[("type", "ssd")][..],
            &[("type", "slice")][..],
        ];
        let mut placed = Vec::new();
        for (n, kv) in classes.into_iter().enumerate() {
            let kv = kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let p = Parameters::parse(&kv).unwrap();
            let id = format!("{prefix}-{n}");
            let req = VolumeRequest {
                name: &id,
                parameters: &p,
                range: CapacityRange::new(Some(1 << 30), None).unwrap(),
                topology: None,
            };
            let plan = pool.place(&id, &req).unwrap();
            placed.push((id, plan));
        }
        placed
    }

    /// The estimate itself (no plan check) sees the segment's servers:
    /// SSDs in rack r0, whose server speaks roce only, and a server in r1
    /// speaking nbd. For nbd, r0 reaches none and r1 reaches both.
    #[test]
    fn max_whole_volume_asks_the_servers_of_the_segment() {
        let inv = Inventory::from_toml(
            "[[site]]\nid = \"dc1\"\n[[rack]]\nid = \"r0\"\nsite = \"dc1\"\n\
             [[rack]]\nid = \"r1\"\nsite = \"dc1\"\n\
             [[jbod]]\nid = \"j0\"\nrack = \"r0\"\n\
             [[jbod.drive]]\ncount = 2\nkind = \"ssd\"\ncapacity = \"1 TB\"\n\
             [[server]]\nid = \"n0\"\nrack = \"r0\"\ntransports = [\"roce\"]\n\
             [[server]]\nid = \"n1\"\nrack = \"r1\"\ntransports = [\"nbd\"]\n",
        )
        .unwrap();
        let (pool, _) = Pool::build(Arc::new(inv), BTreeMap::new(), &BTreeMap::new()).unwrap();
        let p = Parameters::parse(
            &[("type", "ssd"), ("networkTransportsAllowed", "nbd")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        let rack = |r: &str| TopologyRequirement {
            requisite: vec![Topology::new([(convert::TOPOLOGY_RACK, r)]).unwrap()],
            preferred: Vec::new(),
        };
        assert_eq!(pool.max_whole_volume(&p, Some(&rack("r0"))), 0);
        // A stripe of the two (no switch to spread over).
        assert!(pool.max_whole_volume(&p, Some(&rack("r1"))) > 1_000_000_000_000);
        assert!(pool.max_whole_volume(&p, None) > 1_000_000_000_000);
    }

    /// `drive_is_unused` reads the engine's drive by the inventory's index:
    /// it agrees with the engine's own lookup by id, drive for drive,
    /// before and after volumes are placed and taken back.
    #[test]
    fn drive_is_unused_agrees_with_the_engine_by_id() {
        let inv = Arc::new(Inventory::default_inventory());
        let (mut pool, _) = Pool::build(inv.clone(), BTreeMap::new(), &BTreeMap::new()).unwrap();
        let agree = |pool: &Pool| {
            for (i, d) in inv.drives().iter().enumerate() {
                let id = placement::DriveId::new(d.id.clone()).unwrap();
                let by_id = pool.engine().utilization(&id) == Some(0.0);
                assert_eq!(pool.drive_is_unused(i as u32), by_id, "{}", d.id);
            }
        };
        agree(&pool);
        let placed = place_three(&mut pool, "vol");
        assert!(
            inv.drives()
                .iter()
                .enumerate()
                .any(|(i, _)| !pool.drive_is_unused(i as u32))
        );
        agree(&pool);
        for (id, plan) in placed {
            pool.unplace(&id, plan.layout.kind, &plan.members).unwrap();
        }
        agree(&pool);
        assert!((0..inv.drives().len() as u32).all(|i| pool.drive_is_unused(i)));
    }

    /// `GetCapacity` plans on a copy of the pool made while the state is
    /// locked, which shares most of placement's tables with the pool until
    /// one of them writes: volumes placed and a drive marked on either side
    /// afterwards are never seen by the other, drive for drive, and each
    /// matches a pool built anew from its own volumes.
    #[test]
    fn a_copy_of_the_pool_sees_none_of_the_changes_after_it() {
        let inv = Arc::new(Inventory::default_inventory());
        let (mut pool, _) = Pool::build(inv.clone(), BTreeMap::new(), &BTreeMap::new()).unwrap();
        let state = |pool: &Pool| -> Vec<(u64, Health)> {
            (0..inv.drives().len() as u32)
                .map(|i| (pool.drive_free(i), pool.drive_health(i)))
                .collect()
        };
        let place = |pool: &mut Pool, n: usize| {
            place_three(pool, &format!("vol-{n}"));
        };
        place(&mut pool, 0);
        let mut copy = pool.clone();
        let before = state(&pool);
        assert_eq!(state(&copy), before);
        // Changes to the pool: the copy keeps the state it was made with.
        place(&mut pool, 1);
        let marked = inv.drives()[0].id.clone();
        pool.set_mark(&marked, Health::Failed).unwrap();
        let after = state(&pool);
        assert_ne!(after, before);
        assert_eq!(after[0].1, Health::Failed);
        assert_eq!(state(&copy), before);
        // Changes to the copy: the pool keeps its own.
        place(&mut copy, 2);
        assert_ne!(state(&copy), before);
        assert_eq!(state(&pool), after);
        assert_eq!(copy.drive_health(0), before[0].1);
    }

    #[test]
    fn whole_drive_layouts_follow_md_arithmetic() {
        let tb = 1_000_000_000_000u64;
        let p = Parameters::default();
        assert_eq!(
            whole_drive_layout(16 * tb, tb, &p).unwrap().kind,
            LayoutKind::Single
        );
        let c = whole_drive_layout(16 * tb, 20 * tb, &p).unwrap();
        assert_eq!((c.kind, c.shape.member_count()), (LayoutKind::Raid0, 2));
        let r = Parameters {
            redundancy: true,
            ..Parameters::default()
        };
        let c = whole_drive_layout(16 * tb, 20 * tb, &r).unwrap();
        assert_eq!((c.kind, c.shape.member_count()), (LayoutKind::Raid10, 4));
        assert!(c.usable >= 20 * tb && c.data_offset > 0);
        // A mirror of two 16 TB drives holds a little less than 16 TB.
        let c = whole_drive_layout(16 * tb, 16 * tb, &r).unwrap();
        assert_eq!(c.kind, LayoutKind::Raid10);
        let no = Parameters {
            striping: false,
            ..r.clone()
        };
        assert!(
            whole_drive_layout(16 * tb, 17 * tb, &no)
                .unwrap_err()
                .contains("striping=false")
        );
        let small = Parameters {
            raid_max_drives: 4,
            ..r
        };
        assert!(
            whole_drive_layout(16 * tb, 40 * tb, &small)
                .unwrap_err()
                .contains("raidMaxDrives=4")
        );
    }

    /// Sizes near the 64-bit limit: a member that does not fit is
    /// `u64::MAX` (refused by every caller), one that fits is laid out
    /// (an earlier guard refused every size above 4 EiB).
    #[test]
    fn slice_layouts_near_the_64_bit_limit() {
        for mirrored in [false, true] {
            assert_eq!(slice_layout(u64::MAX, mirrored).0, u64::MAX);
            assert_eq!(slice_layout(u64::MAX - 1000, mirrored).0, u64::MAX);
        }
        let five_eib = 5u64 << 60;
        assert_eq!(slice_layout(five_eib, false), (five_eib, five_eib, 0));
        let (member, usable, _) = slice_layout(five_eib, true);
        assert!(usable >= five_eib && member < u64::MAX, "{member} {usable}");
    }

    #[test]
    fn mirrored_slices_hold_the_size_after_the_data_offset() {
        for want in [1u64, 1 << 20, 10 << 30, 999_999_999_999] {
            let (member, usable, off) = slice_layout(want, true);
            assert!(
                usable >= want && member % SLICE_GRANULARITY == 0 && off > 0,
                "{want}"
            );
            let (m, u, _) = slice_layout(want, false);
            assert_eq!(m, u);
            assert!(m >= want && m - want < SLICE_GRANULARITY);
        }
    }
}
