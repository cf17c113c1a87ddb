//! Every call into the pure crates lives here, so that a change of their API is a small edit:
//!
//! * [`EnginePlacer`] — the `placement` engine as a [`Placer`]: `Engine::new`, `place`,
//!   `remove`, `plan_evacuation` and `replace_members`;
//! * [`LossModel`] — `raid`'s failure analysis (`FailureModel::loses_data`) per volume class,
//!   and its Markov MTTDL for the validation;
//! * [`SliceStore`] — SSD slices through `slice-alloc` on the device the policy chose.
//!
//! **Drives out of service.** A drive that goes down is marked failed with
//! `Engine::set_drive_health` (so no new member lands there) and marked healthy again when the
//! simulated fleet replaces it or repairs its JBOD. Repairs are committed per volume with
//! `replace_members` (the call `plan_evacuation` is built on: same request, other members
//! pinned, the old drive excluded), because the simulator schedules each volume's rebuild
//! itself.

use std::collections::HashMap;
use std::sync::Arc;

use placement::{DriveId, Engine, Health, Inventory, Shape, VolumeId};
use raid::{FailureModel, Geometry, Layout, Level, ReliabilityParams};
use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, SliceId};

use crate::fleet::Fleet;
use crate::policy::{ClassInfo, DriveState, Placer};

/// The placement engine behind the [`Placer`] contract.
pub struct EnginePlacer {
    engine: Engine,
    fleet: Arc<Fleet>,
    index: HashMap<DriveId, u32>,
    /// Engine volume id of each simulator volume slot.
    ids: Vec<Option<VolumeId>>,
    /// Counter that makes engine volume ids unique across re-used simulator slots.
    next_id: u64,
}

impl std::fmt::Debug for EnginePlacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnginePlacer").finish_non_exhaustive()
    }
}

impl EnginePlacer {
    /// An engine over the fleet's inventory.
    pub fn new(fleet: Arc<Fleet>, seed: u64, search_budget: u64) -> Result<Self, String> {
        let inv = Inventory::from_spec(fleet.spec.clone()).map_err(|e| e.to_string())?;
        let mut engine = Engine::new(inv, seed).map_err(|e| e.to_string())?;
        engine.set_search_budget(search_budget);
        let index = fleet
            .drives
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i as u32))
            .collect();
        Ok(EnginePlacer {
            engine,
            fleet,
            index,
            ids: Vec::new(),
            next_id: 0,
        })
    }

    fn drive(&self, id: &DriveId) -> Result<u32, String> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| format!("engine returned unknown drive '{id}'"))
    }

    /// Marks drives failed or healthy in the engine.
    fn set_health(&mut self, drives: &[u32], health: Health) -> Result<(), String> {
        for &d in drives {
            let id = self.fleet.drives[d as usize].id.as_str();
            self.engine
                .set_drive_health(id, health)
                .map_err(|e| format!("set health of '{id}': {e}"))?;
        }
        Ok(())
    }

    /// The engine's own evacuation plan for a failure domain: how many member moves it would
    /// make and how many volumes it could not re-place (used by tests to check the adapter
    /// repairs what the engine would).
    pub fn plan_evacuation_counts(&mut self, target: &str) -> Result<(usize, usize), String> {
        let p = self
            .engine
            .plan_evacuation(target)
            .map_err(|e| e.to_string())?;
        Ok((p.moves.len(), p.unplaceable.len()))
    }
}

impl Placer for EnginePlacer {
    fn place(
        &mut self,
        _st: &DriveState,
        vol: u32,
        class: &ClassInfo,
        size: u64,
    ) -> Result<Vec<u32>, String> {
        let mut req = class.request.clone();
        req.size = placement::Bytes(size);
        let vid = VolumeId::new(format!("v{vol}-{}", self.next_id)).map_err(|e| e.to_string())?;
        self.next_id += 1;
        let p = self
            .engine
            .place(vid.clone(), &req)
            .map_err(|e| e.to_string())?;
        let drives = p
            .members
            .iter()
            .map(|m| self.drive(&m.drive))
            .collect::<Result<Vec<_>, _>>()?;
        if self.ids.len() <= vol as usize {
            self.ids.resize(vol as usize + 1, None);
        }
        self.ids[vol as usize] = Some(vid);
        Ok(drives)
    }

    fn remove(&mut self, _st: &DriveState, vol: u32) {
        let Some(vid) = self.ids.get_mut(vol as usize).and_then(Option::take) else {
            return;
        };
        // The slot came from a successful place, so the engine knows the id.
        let _ = self.engine.remove(&vid);
    }

    fn repair(
        &mut self,
        _st: &DriveState,
        vol: u32,
        _class: &ClassInfo,
        _size: u64,
        _current: &[u32],
        members: &[usize],
    ) -> Result<Vec<u32>, String> {
        let vid = self
            .ids
            .get(vol as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("volume slot {vol} is not placed"))?;
        let p = self
            .engine
            .replace_members(&vid, members)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(members.len());
        for &m in members {
            out.push(self.drive(&p.members[m].drive)?);
        }
        Ok(out)
    }

    fn drives_down(&mut self, _st: &DriveState, drives: &[u32]) -> Result<(), String> {
        self.set_health(drives, Health::Failed)
    }

    fn drives_up(&mut self, _st: &DriveState, drives: &[u32]) -> Result<(), String> {
        self.set_health(drives, Health::Healthy)
    }
}

/// What `raid` says about one redundancy group.
#[derive(Debug, Clone)]
enum GroupModel {
    /// md's failure analysis of the group's geometry.
    Raid(Box<FailureModel>),
    /// No md level fits (parity with more than two parity members): the group survives at
    /// most `m` failed members.
    Threshold(u32),
}

/// Data-loss analysis of one volume class: its redundancy groups, each analysed by `raid`.
#[derive(Debug, Clone)]
pub struct LossModel {
    groups: usize,
    per: usize,
    model: GroupModel,
    /// How the class maps to md, for the report.
    pub description: String,
}

/// Data area per member used for the analysis (the failure pattern does not depend on it).
const MEMBER_SECTORS: u64 = 1 << 21;
const CHUNK_SECTORS: u64 = 128;

fn geometry(level: Level, layout: &str, members: usize) -> Result<Geometry, String> {
    let l = Layout::parse(level, layout).map_err(|e| e.to_string())?;
    Geometry::new(l, CHUNK_SECTORS, &vec![MEMBER_SECTORS; members]).map_err(|e| e.to_string())
}

impl LossModel {
    /// The analysis for a volume shape: a mirror is md RAID1 over its legs; RAID10 is md
    /// raid10 `n<mirrors>` over all members (md's near layout puts chunk copies on
    /// consecutive members, the placement crate's group order), or md raid0 with one mirror;
    /// a `k+1` parity set is RAID5, `k+2` RAID6, one set per group; a single member or slice
    /// is RAID0 of one member.
    pub fn new(shape: &Shape) -> Result<Self, String> {
        let (groups, per) = shape.groups();
        let (model, description, groups, per) = match *shape {
            Shape::Single | Shape::Slice => (
                GroupModel::Raid(Box::new(FailureModel::new(&geometry(Level::Raid0, "", 1)?))),
                "md raid0, 1 member (no redundancy)".to_string(),
                1,
                1,
            ),
            Shape::Mirror { legs } => (
                GroupModel::Raid(Box::new(FailureModel::new(&geometry(
                    Level::Raid1,
                    "",
                    legs as usize,
                )?))),
                format!("md raid1, {legs} legs"),
                1,
                legs as usize,
            ),
            // One mirror is no redundancy: md's raid10 needs two copies (`n1` is no layout),
            // and a stripe without copies is raid0.
            Shape::Raid10 {
                stripes,
                mirrors: 1,
            } => (
                GroupModel::Raid(Box::new(FailureModel::new(&geometry(
                    Level::Raid0,
                    "",
                    stripes as usize,
                )?))),
                format!("md raid0, {stripes} members (raid10 with one mirror: no redundancy)"),
                1,
                stripes as usize,
            ),
            Shape::Raid10 { stripes, mirrors } => {
                let n = (stripes * mirrors) as usize;
                (
                    GroupModel::Raid(Box::new(FailureModel::new(&geometry(
                        Level::Raid10,
                        &format!("n{mirrors}"),
                        n,
                    )?))),
                    format!("md raid10 n{mirrors}, {n} members"),
                    1,
                    n,
                )
            }
            Shape::Parity { k, m, sets } => {
                let n = (k + m) as usize;
                let (model, d) = match m {
                    1 => (
                        GroupModel::Raid(Box::new(FailureModel::new(&geometry(
                            Level::Raid5,
                            "left-symmetric",
                            n,
                        )?))),
                        format!("md raid5, {n} members"),
                    ),
                    2 => (
                        GroupModel::Raid(Box::new(FailureModel::new(&geometry(
                            Level::Raid6,
                            "left-symmetric",
                            n,
                        )?))),
                        format!("md raid6, {n} members"),
                    ),
                    _ => (
                        GroupModel::Threshold(m),
                        format!("{k}+{m} erasure code (no md level; survives {m} failures)"),
                    ),
                };
                let d = if sets > 1 {
                    format!("{sets} sets of {d}")
                } else {
                    d
                };
                (model, d, groups, per)
            }
        };
        Ok(LossModel {
            groups,
            per,
            model,
            description,
        })
    }

    /// Whether the failed members (bit `i` = member `i`) lose data.
    pub fn fatal(&self, failed: u64) -> bool {
        let mask = if self.per >= 64 {
            u64::MAX
        } else {
            (1u64 << self.per) - 1
        };
        (0..self.groups).any(|g| {
            let bits = (failed >> (g * self.per)) & mask;
            if bits == 0 {
                return false;
            }
            match &self.model {
                GroupModel::Threshold(m) => bits.count_ones() > *m,
                GroupModel::Raid(fm) => {
                    let list: Vec<usize> = (0..self.per).filter(|i| bits & (1 << i) != 0).collect();
                    // The members are in range by construction; an error would be a bug, and
                    // counting it as a loss keeps it visible in the report.
                    fm.loses_data(&list).unwrap_or(true)
                }
            }
        })
    }

    /// `raid`'s Markov MTTDL of a volume of this class (hours), for independent exponential
    /// member failures with mean `mttf_hours` and repairs of mean `mttr_hours`. A volume of
    /// several independent groups loses data at the sum of their rates.
    pub fn mttdl_hours(&self, mttf_hours: f64, mttr_hours: f64) -> Result<f64, String> {
        match &self.model {
            GroupModel::Raid(fm) => {
                let e = fm
                    .mttdl(ReliabilityParams {
                        mttf_hours,
                        mttr_hours,
                    })
                    .map_err(|e| e.to_string())?;
                Ok(e.hours / self.groups as f64)
            }
            GroupModel::Threshold(_) => Err(format!("{}: raid has no MTTDL", self.description)),
        }
    }
}

/// SSD slices: one `slice-alloc` allocator over the SSD and NVMe drives, allocating on the
/// device the placement policy chose.
#[derive(Debug)]
pub struct SliceStore {
    alloc: Allocator,
}

impl SliceStore {
    /// An allocator with every solid-state drive of the fleet as a device (id = drive index).
    pub fn new(fleet: &Fleet) -> Result<Self, String> {
        let mut alloc = Allocator::new(AllocatorConfig::default()).map_err(|e| e.to_string())?;
        for (i, d) in fleet.drives.iter().enumerate() {
            if d.kind != placement::DriveKind::Hdd {
                let spec = DeviceSpec::new(DeviceId::new(i as u64), d.capacity)
                    .map_err(|e| format!("drive '{}': {e}", d.id))?;
                alloc.add_device(spec).map_err(|e| e.to_string())?;
            }
        }
        Ok(SliceStore { alloc })
    }

    /// Allocates a slice of `size` bytes on `drive`.
    pub fn allocate(&mut self, drive: u32, size: u64) -> Result<u64, String> {
        let dev = [DeviceId::new(drive as u64)];
        self.alloc
            .allocate(size, &Constraints::on_devices(&dev))
            .map(|s| s.id.get())
            .map_err(|e| e.to_string())
    }

    /// Frees a slice.
    pub fn free(&mut self, slice: u64) {
        let _ = self.alloc.free(SliceId::new(slice));
    }

    /// Bytes allocated in slices (rounded to the allocator's granularity).
    pub fn used(&self) -> u64 {
        self.alloc.total_capacity() - self.alloc.total_free()
    }
}

/// `raid`'s probability of at least one unrecoverable read error while reading `bytes`
/// (0 when the rate is out of `raid`'s domain, which the configuration check excludes).
pub fn ure_probability(bytes: u64, ure_per_bit: f64) -> f64 {
    raid::failure::ure_probability(bytes, ure_per_bit).unwrap_or(0.0)
}
