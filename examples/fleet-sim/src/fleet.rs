//! The fleet: an inventory in the placement crate's format (generated from a few parameters or
//! read from a file) and the static topology the simulator derives from it — each drive's
//! JBOD, rack, ancestors and bandwidth domains, each rack's JBODs and servers.

use std::collections::HashMap;

use placement::{
    BwDomainId, BwDomainSpec, Bytes, DomainId, DomainSpec, DriveId, DriveKind, DriveSpec, Health,
    Inventory, InventorySpec, ServerId, ServerSpec, Transports,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{FleetConfig, RebuildConfig};
use crate::error::SimError;

/// Marker for "none".
pub const NONE: u32 = u32::MAX;

/// Generates the inventory described by `cfg` (deterministic for a seed).
///
/// Racks are dealt round-robin into zones; each rack holds `drives_per_rack` drives in JBODs of
/// `drives_per_jbod` (the last may be smaller), one medium per JBOD, a `port` bandwidth domain
/// per JBOD and a `tor` bandwidth domain per rack; servers sit in racks and reach every drive.
pub fn generate(cfg: &FleetConfig, seed: u64) -> Result<InventorySpec, SimError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xF1EE7);
    let mut spec = InventorySpec::default();
    let bad = |e: placement::IdError| SimError::Inventory(e.to_string());
    // Only zones that get a rack: the rest would be empty domains, and `zones = 4294967295`
    // generated them for ever (a million took 55 s and 750 MB) before anything was simulated.
    for z in 0..cfg.zones.min(cfg.racks) {
        spec.domains.push(DomainSpec {
            id: DomainId::new(format!("z{z}")).map_err(bad)?,
            level: "zone".into(),
            parent: None,
        });
    }
    let total_share: f64 = cfg.media.iter().map(|m| m.share).sum();
    let mut jbod_no = 0u64;
    for r in 0..cfg.racks {
        let rack = format!("r{r:04}");
        spec.domains.push(DomainSpec {
            id: DomainId::new(rack.clone()).map_err(bad)?,
            level: cfg.rack_level.clone(),
            parent: Some(DomainId::new(format!("z{}", r % cfg.zones)).map_err(bad)?),
        });
        let tor = BwDomainId::new(format!("{rack}-tor")).map_err(bad)?;
        spec.bandwidth_domains.push(BwDomainSpec {
            id: tor.clone(),
            kind: "tor".into(),
            capacity: Bytes(cfg.tor_bandwidth.bytes_per_second()),
            load: Bytes(0),
        });
        for s in 0..cfg.servers_per_rack {
            spec.servers.push(ServerSpec {
                id: ServerId::new(format!("{rack}-s{s:03}")).map_err(bad)?,
                domain: Some(DomainId::new(rack.clone()).map_err(bad)?),
                bandwidth_domains: vec![],
                transports: None,
            });
        }
        let mut left = cfg.drives_per_rack;
        let mut j = 0;
        while left > 0 {
            let n = left.min(cfg.drives_per_jbod);
            left -= n;
            let jbod = format!("{rack}-j{j:02}");
            j += 1;
            spec.domains.push(DomainSpec {
                id: DomainId::new(jbod.clone()).map_err(bad)?,
                level: cfg.jbod_level.clone(),
                parent: Some(DomainId::new(rack.clone()).map_err(bad)?),
            });
            let port = BwDomainId::new(format!("{jbod}-port")).map_err(bad)?;
            spec.bandwidth_domains.push(BwDomainSpec {
                id: port.clone(),
                kind: "port".into(),
                capacity: Bytes(cfg.port_bandwidth.bytes_per_second()),
                load: Bytes(0),
            });
            // A low-discrepancy sequence deals JBODs to media in proportion to their shares,
            // spread evenly over racks.
            let x = ((jbod_no as f64 + 0.5) * 0.618_033_988_749_895).fract() * total_share;
            jbod_no += 1;
            let mut acc = 0.0;
            let medium = cfg
                .media
                .iter()
                .find(|m| {
                    acc += m.share;
                    x < acc
                })
                .unwrap_or(&cfg.media[cfg.media.len() - 1]);
            let capacity =
                Bytes(medium.capacities[rng.random_range(0..medium.capacities.len())].bytes());
            for d in 0..n {
                spec.drives.push(DriveSpec {
                    id: DriveId::new(format!("{jbod}-d{d:02}")).map_err(bad)?,
                    kind: medium.kind,
                    capacity,
                    free: capacity,
                    rpm: if medium.kind == DriveKind::Hdd {
                        medium.rpm
                    } else {
                        0
                    },
                    tags: vec![],
                    attributes: Default::default(),
                    transports: Transports::all(),
                    health: Health::Healthy,
                    domain: Some(DomainId::new(jbod.clone()).map_err(bad)?),
                    group: None,
                    bandwidth_domains: vec![port.clone(), tor.clone()],
                });
            }
        }
    }
    Ok(spec)
}

/// One drive as the simulator sees it.
#[derive(Debug, Clone)]
pub struct DriveInfo {
    /// Inventory id.
    pub id: DriveId,
    /// Medium.
    pub kind: DriveKind,
    /// Capacity, bytes.
    pub capacity: u64,
    /// Index of its JBOD in [`Fleet::jbods`] (or [`NONE`]).
    pub jbod: u32,
    /// Index of its rack in [`Fleet::racks`] (or [`NONE`]).
    pub rack: u32,
    /// Indexes of its bandwidth domains in [`Fleet::bw`].
    pub bw: Vec<u32>,
    /// Sequential bandwidth, bytes/s.
    pub bandwidth: f64,
    /// Failure-domain ancestors, innermost first (indexes into [`Fleet::domains`]).
    pub ancestors: Vec<u32>,
}

/// A failure domain of the inventory.
#[derive(Debug, Clone)]
pub struct Domain {
    /// Inventory id.
    pub id: String,
    /// Index of its level in [`Fleet::levels`].
    pub level: u16,
    /// Parent domain or [`NONE`].
    pub parent: u32,
    /// Child domains.
    pub children: Vec<u32>,
    /// Drives directly in it.
    pub drives: Vec<u32>,
}

/// A JBOD or rack: the drives (and for racks the JBODs and servers) it takes down.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// Inventory id of the failure domain.
    pub id: String,
    /// Drives in it.
    pub drives: Vec<u32>,
    /// Servers in it (racks).
    pub servers: Vec<u32>,
}

/// A bandwidth domain.
#[derive(Debug, Clone)]
pub struct BwInfo {
    /// Inventory id.
    pub id: String,
    /// Kind (`port`, `tor`, ...).
    pub kind: String,
    /// Capacity, bytes/s.
    pub capacity: f64,
}

/// The static topology derived from an inventory.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The inventory (without volumes) the policies start from.
    pub spec: InventorySpec,
    /// Drives, in inventory order.
    pub drives: Vec<DriveInfo>,
    /// Failure domains, in inventory order.
    pub domains: Vec<Domain>,
    /// Level names.
    pub levels: Vec<String>,
    /// Top-level domains (no parent).
    pub roots: Vec<u32>,
    /// Drives outside every failure domain.
    pub loose_drives: Vec<u32>,
    /// Domains at the JBOD level.
    pub jbods: Vec<Unit>,
    /// Domains at the rack level.
    pub racks: Vec<Unit>,
    /// Servers: inventory id and rack index (or [`NONE`]).
    pub servers: Vec<(String, u32)>,
    /// Bandwidth domains.
    pub bw: Vec<BwInfo>,
}

impl Fleet {
    /// Derives the topology from an inventory. Volumes in the inventory are dropped (the
    /// simulation places its own). `rebuild` gives each drive kind's bandwidth.
    pub fn new(
        mut spec: InventorySpec,
        jbod_level: &str,
        rack_level: &str,
        rebuild: &RebuildConfig,
    ) -> Result<Self, SimError> {
        spec.volumes.clear();
        for d in &mut spec.drives {
            d.free = d.capacity;
            d.health = Health::Healthy;
        }
        for b in &mut spec.bandwidth_domains {
            b.load = Bytes(0);
        }
        for g in &mut spec.storage_groups {
            g.used = Bytes(0);
        }
        // Validate with the placement crate's own rules before deriving anything.
        let inv = Inventory::from_spec(spec).map_err(|e| SimError::Inventory(e.to_string()))?;
        let spec = inv.spec();
        if spec.drives.is_empty() {
            return Err(SimError::Inventory("the inventory has no drives".into()));
        }
        // The simulator adds capacities in u64 (the raw total, utilisation samples): past
        // 2^64 bytes a debug build panicked and a release build reported a wrapped total.
        let total: u128 = spec.drives.iter().map(|d| d.capacity.0 as u128).sum();
        if total > u64::MAX as u128 {
            return Err(SimError::Inventory(format!(
                "the drives' total capacity is {:.1} EB; the simulator counts bytes in 64 bits (at most 18.4 EB)",
                total as f64 / 1e18
            )));
        }
        let mut levels: Vec<String> = Vec::new();
        let mut dom_index: HashMap<&str, u32> = HashMap::new();
        let mut domains: Vec<Domain> = Vec::with_capacity(spec.domains.len());
        for (i, d) in spec.domains.iter().enumerate() {
            dom_index.insert(d.id.as_str(), i as u32);
            let level = match levels.iter().position(|l| *l == d.level) {
                Some(p) => p,
                None => {
                    levels.push(d.level.clone());
                    levels.len() - 1
                }
            } as u16;
            domains.push(Domain {
                id: d.id.to_string(),
                level,
                parent: NONE,
                children: vec![],
                drives: vec![],
            });
        }
        let mut roots = Vec::new();
        for (i, d) in spec.domains.iter().enumerate() {
            match &d.parent {
                Some(p) => {
                    let p = dom_index[p.as_str()];
                    domains[i].parent = p;
                    domains[p as usize].children.push(i as u32);
                }
                None => roots.push(i as u32),
            }
        }
        let jl = levels
            .iter()
            .position(|l| l == jbod_level)
            .map(|x| x as u16);
        let rl = levels
            .iter()
            .position(|l| l == rack_level)
            .map(|x| x as u16);
        let mut jbods: Vec<Unit> = Vec::new();
        let mut racks: Vec<Unit> = Vec::new();
        let mut jbod_of_dom: HashMap<u32, u32> = HashMap::new();
        let mut rack_of_dom: HashMap<u32, u32> = HashMap::new();
        for (i, d) in domains.iter().enumerate() {
            if Some(d.level) == jl {
                jbod_of_dom.insert(i as u32, jbods.len() as u32);
                jbods.push(Unit {
                    id: d.id.clone(),
                    ..Unit::default()
                });
            }
            if Some(d.level) == rl {
                rack_of_dom.insert(i as u32, racks.len() as u32);
                racks.push(Unit {
                    id: d.id.clone(),
                    ..Unit::default()
                });
            }
        }
        let bw: Vec<BwInfo> = spec
            .bandwidth_domains
            .iter()
            .map(|b| BwInfo {
                id: b.id.to_string(),
                kind: b.kind.clone(),
                capacity: b.capacity.0 as f64,
            })
            .collect();
        let bw_index: HashMap<&str, u32> = spec
            .bandwidth_domains
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.as_str(), i as u32))
            .collect();
        let mut drives = Vec::with_capacity(spec.drives.len());
        let mut loose_drives = Vec::new();
        for (i, d) in spec.drives.iter().enumerate() {
            let mut ancestors = Vec::new();
            let mut cur = d.domain.as_ref().map_or(NONE, |x| dom_index[x.as_str()]);
            if cur == NONE {
                loose_drives.push(i as u32);
            } else {
                domains[cur as usize].drives.push(i as u32);
            }
            let (mut jbod, mut rack) = (NONE, NONE);
            while cur != NONE {
                ancestors.push(cur);
                if let Some(&j) = jbod_of_dom.get(&cur) {
                    jbod = j;
                    jbods[j as usize].drives.push(i as u32);
                }
                if let Some(&r) = rack_of_dom.get(&cur) {
                    rack = r;
                    racks[r as usize].drives.push(i as u32);
                }
                cur = domains[cur as usize].parent;
            }
            let bandwidth = match d.kind {
                DriveKind::Hdd => rebuild.hdd_bandwidth,
                DriveKind::Ssd => rebuild.ssd_bandwidth,
                DriveKind::Nvme => rebuild.nvme_bandwidth,
            }
            .bytes_per_second() as f64;
            drives.push(DriveInfo {
                id: d.id.clone(),
                kind: d.kind,
                capacity: d.capacity.0,
                jbod,
                rack,
                bw: d
                    .bandwidth_domains
                    .iter()
                    .map(|b| bw_index[b.as_str()])
                    .collect(),
                bandwidth,
                ancestors,
            });
        }
        let mut servers = Vec::with_capacity(spec.servers.len());
        for (i, s) in spec.servers.iter().enumerate() {
            let mut cur = s.domain.as_ref().map_or(NONE, |x| dom_index[x.as_str()]);
            let mut rack = NONE;
            while cur != NONE {
                if let Some(&r) = rack_of_dom.get(&cur) {
                    rack = r;
                    racks[r as usize].servers.push(i as u32);
                }
                cur = domains[cur as usize].parent;
            }
            servers.push((s.id.to_string(), rack));
        }
        Ok(Fleet {
            spec,
            drives,
            domains,
            levels,
            roots,
            loose_drives,
            jbods,
            racks,
            servers,
            bw,
        })
    }

    /// The level index of a level name.
    pub fn level(&self, name: &str) -> Option<u16> {
        self.levels.iter().position(|l| l == name).map(|x| x as u16)
    }

    /// The drive's ancestor at `level`, or [`NONE`].
    pub fn ancestor_at(&self, drive: u32, level: u16) -> u32 {
        self.drives[drive as usize]
            .ancestors
            .iter()
            .copied()
            .find(|&a| self.domains[a as usize].level == level)
            .unwrap_or(NONE)
    }

    /// Total raw capacity, bytes.
    pub fn capacity(&self) -> u64 {
        self.drives.iter().map(|d| d.capacity).sum()
    }
}
