//! The simulation's configuration: the fleet to generate (or the inventory file to read), the
//! failure processes, the rebuild model, the workload mix and the policies to compare. Every
//! field has a default (the 10,000-server / 100,000-drive fleet of the README), so an empty
//! TOML file is a valid configuration. [`SimConfig::validate`] names the field and the rule.

use placement::{DriveKind, Mode, Separation, Shape, Spread, UnknownName, by_name};
use serde::{Deserialize, Deserializer, Serialize};
use storage_units::{SHOWN_CHARS, count_rule, quote, shorten};

use crate::error::SimError;
use crate::num::exact;
use crate::units::{ByteRate, ByteSize};

/// Everything one run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Master seed: the same seed and configuration give the same report.
    pub seed: u64,
    /// Simulated time, years (of 8,760 hours).
    pub years: f64,
    /// Policies to compare, each over the same failure and workload streams.
    pub policies: Vec<PolicyKind>,
    /// Interval between utilisation samples, days (at most 1,000,000 samples per run).
    pub sample_days: f64,
    /// Step budget of the placement engine's complete search (`Engine::set_search_budget`).
    /// A request the window search cannot place costs up to this many steps (and its
    /// explanation more) before it is refused; the engine's own default, 2,000,000, makes each
    /// refusal take seconds, which a simulation refusing thousands of requests cannot afford.
    pub engine_search_budget: u64,
    /// The fleet.
    pub fleet: FleetConfig,
    /// Failure processes.
    pub failures: FailureConfig,
    /// Rebuild model.
    pub rebuild: RebuildConfig,
    /// Volumes.
    pub workload: WorkloadConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            years: 5.0,
            policies: vec![PolicyKind::Engine, PolicyKind::Straw2, PolicyKind::Random],
            sample_days: 30.0,
            engine_search_budget: 20_000,
            fleet: FleetConfig::default(),
            failures: FailureConfig::default(),
            rebuild: RebuildConfig::default(),
            workload: WorkloadConfig::default(),
        }
    }
}

/// `NAMES` and a `Deserialize` that reads a name in any ASCII case through
/// [`placement::by_name`], for the enums a configuration names; serde's derive writes them in
/// lowercase.
macro_rules! read_by_name {
    ($ty:ident, $what:literal, [$(($name:literal, $variant:ident)),+ $(,)?]) => {
        impl $ty {
            /// Every value with its name as written (and read, in any ASCII case).
            pub const NAMES: [(&'static str, $ty); [$($name),+].len()] =
                [$(($name, $ty::$variant)),+];
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let got = String::deserialize(d)?;
                by_name($what, &$ty::NAMES, &got).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// How volumes choose drives.
///
/// Written in lowercase; read in any ASCII case, blanks trimmed (as placement reads drive kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// The `placement` engine under each class's request (separation, spreading).
    Engine,
    /// A CRUSH-like stateless straw2 weighted draw with separation at the request's hard levels.
    Straw2,
    /// Uniformly random drives of an allowed kind with room (distinct drives, nothing else).
    Random,
}

impl PolicyKind {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Engine => "engine",
            PolicyKind::Straw2 => "straw2",
            PolicyKind::Random => "random",
        }
    }

    /// Parses a name as [`PolicyKind::name`] prints it, in any ASCII case.
    pub fn parse(s: &str) -> Result<Self, UnknownName> {
        by_name("policy", &Self::NAMES, s)
    }
}

read_by_name!(
    PolicyKind,
    "policy",
    [("engine", Engine), ("straw2", Straw2), ("random", Random)]
);

/// The generated fleet. With an inventory file only the level names apply: a configuration
/// file that sets any other `[fleet]` field together with an inventory is refused (see
/// [`generated_fleet_fields`]), as the simulated fleet would not be the one it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Zones (racks are dealt round-robin into zones; zones beyond the racks would be empty
    /// and are not generated).
    pub zones: u32,
    /// Racks.
    pub racks: u32,
    /// Drives per rack, split into JBODs of `drives_per_jbod` (the last one may be smaller).
    pub drives_per_rack: u32,
    /// Drives per JBOD.
    pub drives_per_jbod: u32,
    /// Servers (attach points) per rack.
    pub servers_per_rack: u32,
    /// Media: each JBOD holds drives of one medium; JBODs are dealt to media by `share`.
    pub media: Vec<MediumConfig>,
    /// Bandwidth of each JBOD's network port (bandwidth-domain kind `port`).
    pub port_bandwidth: ByteRate,
    /// Bandwidth of each rack's top-of-rack switch uplink (bandwidth-domain kind `tor`).
    pub tor_bandwidth: ByteRate,
    /// Failure-domain level whose domains fail as JBODs.
    pub jbod_level: String,
    /// Failure-domain level whose domains fail as racks.
    pub rack_level: String,
}

impl Default for FleetConfig {
    fn default() -> Self {
        const TB: u64 = 1_000_000_000_000;
        const GB: u64 = 1_000_000_000;
        FleetConfig {
            zones: 4,
            racks: 100,
            drives_per_rack: 1000,
            drives_per_jbod: 60,
            servers_per_rack: 100,
            media: vec![
                MediumConfig {
                    kind: DriveKind::Hdd,
                    share: 0.85,
                    capacities: [8, 12, 16, 20].map(|t| ByteSize::new(t * TB)).to_vec(),
                    rpm: 7200,
                },
                MediumConfig {
                    kind: DriveKind::Ssd,
                    share: 0.10,
                    capacities: vec![ByteSize::new(3_840 * GB), ByteSize::new(7_680 * GB)],
                    rpm: 0,
                },
                MediumConfig {
                    kind: DriveKind::Nvme,
                    share: 0.05,
                    capacities: vec![ByteSize::new(3_840 * GB), ByteSize::new(7_680 * GB)],
                    rpm: 0,
                },
            ],
            port_bandwidth: ByteRate::new(12_500_000_000),
            tor_bandwidth: ByteRate::new(50_000_000_000),
            jbod_level: "jbod".into(),
            rack_level: "rack".into(),
        }
    }
}

/// One medium of the generated fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediumConfig {
    /// Drive kind.
    pub kind: DriveKind,
    /// Fraction of JBODs with this medium (shares are normalised).
    pub share: f64,
    /// Drive capacities; each JBOD draws one.
    pub capacities: Vec<ByteSize>,
    /// Spindle speed (HDDs).
    #[serde(default)]
    pub rpm: u32,
}

/// Failure processes. Rates are annual failure rates (probability of failing within a year of
/// service); a rate of 0 disables the process. Every field is optional, down to each field of
/// `[failures.drive]`, `[failures.jbod]`, `[failures.server]` and `[failures.rack]`: a table
/// that sets only `afr` keeps its default `repair_hours`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PartialFailures")]
pub struct FailureConfig {
    /// Drive lifetimes.
    pub drive: DriveFailure,
    /// Hours from a drive failure until a new, empty drive is in its slot.
    pub drive_replace_hours: f64,
    /// JBOD outages: every drive in the JBOD is lost; the JBOD returns empty.
    pub jbod: DomainFailure,
    /// Server outages: rebuilds of the volumes attached to the server pause.
    pub server: DomainFailure,
    /// Rack outages: every JBOD and server in the rack.
    pub rack: DomainFailure,
    /// Unrecoverable read errors per bit read during rebuilds (0 disables).
    pub ure_per_bit: f64,
}

impl Default for FailureConfig {
    fn default() -> Self {
        FailureConfig {
            drive: DriveFailure {
                distribution: Distribution::Exponential,
                afr: 0.015,
                shape: 1.0,
            },
            drive_replace_hours: 72.0,
            jbod: DomainFailure {
                afr: 0.01,
                repair_hours: 24.0,
            },
            server: DomainFailure {
                afr: 0.02,
                repair_hours: 8.0,
            },
            rack: DomainFailure {
                afr: 0.005,
                repair_hours: 12.0,
            },
            ure_per_bit: 1e-15,
        }
    }
}

/// `[failures]` as written: each absent field takes [`FailureConfig::default`]'s value. (With
/// the tables deserialized whole, `[failures.jbod]` with only `afr` was refused for a missing
/// `repair_hours`, against "every field is optional"; the default of a nested field depends on
/// its table, so serde's per-type defaults cannot give it.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialFailures {
    drive: Option<PartialDrive>,
    drive_replace_hours: Option<f64>,
    jbod: Option<PartialDomain>,
    server: Option<PartialDomain>,
    rack: Option<PartialDomain>,
    ure_per_bit: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialDrive {
    distribution: Option<Distribution>,
    afr: Option<f64>,
    shape: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialDomain {
    afr: Option<f64>,
    repair_hours: Option<f64>,
}

impl PartialDomain {
    fn over(self, d: DomainFailure) -> DomainFailure {
        DomainFailure {
            afr: self.afr.unwrap_or(d.afr),
            repair_hours: self.repair_hours.unwrap_or(d.repair_hours),
        }
    }
}

impl From<PartialFailures> for FailureConfig {
    fn from(p: PartialFailures) -> Self {
        let d = FailureConfig::default();
        let drive = match p.drive {
            None => d.drive,
            Some(x) => DriveFailure {
                distribution: x.distribution.unwrap_or(d.drive.distribution),
                afr: x.afr.unwrap_or(d.drive.afr),
                shape: x.shape.unwrap_or(d.drive.shape),
            },
        };
        let domain = |x: Option<PartialDomain>, dflt: DomainFailure| match x {
            None => dflt,
            Some(x) => x.over(dflt),
        };
        FailureConfig {
            drive,
            drive_replace_hours: p.drive_replace_hours.unwrap_or(d.drive_replace_hours),
            jbod: domain(p.jbod, d.jbod),
            server: domain(p.server, d.server),
            rack: domain(p.rack, d.rack),
            ure_per_bit: p.ure_per_bit.unwrap_or(d.ure_per_bit),
        }
    }
}

/// Drive lifetime distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveFailure {
    /// Exponential (constant hazard) or Weibull (ageing with `shape`).
    pub distribution: Distribution,
    /// Probability that a new drive fails within its first year.
    pub afr: f64,
    /// Weibull shape (1 = exponential, above 1 = wear-out); ignored for exponential.
    #[serde(default = "one")]
    pub shape: f64,
}

fn one() -> f64 {
    1.0
}

/// Lifetime distribution family (read in any ASCII case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Constant hazard.
    Exponential,
    /// Weibull with a shape parameter.
    Weibull,
}

read_by_name!(
    Distribution,
    "distribution",
    [("exponential", Exponential), ("weibull", Weibull)]
);

/// An outage process for a whole failure domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFailure {
    /// Annual failure rate of one domain (exponential inter-failure times).
    pub afr: f64,
    /// Hours until the domain is back in service.
    pub repair_hours: f64,
}

/// How long rebuilds take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebuildConfig {
    /// `bandwidth`: a fluid fair-share model over drives and bandwidth domains; `fixed`: every
    /// rebuild takes `fixed_hours` (no bandwidth limits), as the analytic MTTDL assumes.
    pub model: RebuildModel,
    /// Duration of every rebuild under the `fixed` model, hours.
    pub fixed_hours: f64,
    /// Fraction of each drive's and bandwidth domain's bandwidth rebuilds may use (the rest
    /// serves foreground I/O).
    pub share: f64,
    /// Per-rebuild write-rate cap (md's `speed_limit_max`, 200,000 KiB/s by default).
    pub max_rate: ByteRate,
    /// Sequential bandwidth of an HDD.
    pub hdd_bandwidth: ByteRate,
    /// Sequential bandwidth of a SATA/SAS SSD.
    pub ssd_bandwidth: ByteRate,
    /// Sequential bandwidth of an NVMe drive.
    pub nvme_bandwidth: ByteRate,
}

impl Default for RebuildConfig {
    fn default() -> Self {
        RebuildConfig {
            model: RebuildModel::Bandwidth,
            fixed_hours: 10.0,
            share: 0.5,
            max_rate: ByteRate::new(204_800_000),
            hdd_bandwidth: ByteRate::new(200_000_000),
            ssd_bandwidth: ByteRate::new(500_000_000),
            nvme_bandwidth: ByteRate::new(2_000_000_000),
        }
    }
}

/// Rebuild duration model (read in any ASCII case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RebuildModel {
    /// Fair-share fluid model over drive and bandwidth-domain capacities.
    Bandwidth,
    /// Constant duration.
    Fixed,
}

read_by_name!(
    RebuildModel,
    "rebuild model",
    [("bandwidth", Bandwidth), ("fixed", Fixed)]
);

/// Volume arrivals, lifetimes and the mix of classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Steady population: this many volumes are placed at time 0, and arrivals (Poisson, rate
    /// `volumes / mean lifetime`) balance departures.
    pub volumes: u64,
    /// Mean volume lifetime (exponential), days; 0 = volumes never depart. At most
    /// 250,000,000 arrivals (`volumes × years × 365 / mean_lifetime_days`) per run.
    pub mean_lifetime_days: f64,
    /// The classes, drawn by weight.
    pub class: Vec<VolumeClass>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        const GB: u64 = 1_000_000_000;
        let hdd = vec![DriveKind::Hdd];
        let sep = |level: &str, mode| Separation::level(level, mode);
        WorkloadConfig {
            volumes: 200_000,
            mean_lifetime_days: 730.0,
            class: vec![
                VolumeClass {
                    name: "raid1".into(),
                    weight: 0.40,
                    shape: Shape::Mirror { legs: 2 },
                    kinds: hdd.clone(),
                    sizes: [1000, 2000, 4000].map(|g| ByteSize::new(g * GB)).to_vec(),
                    separation: vec![sep("rack", Mode::Hard)],
                    bandwidth_spread: vec![],
                },
                VolumeClass {
                    name: "raid10".into(),
                    weight: 0.20,
                    shape: Shape::Raid10 {
                        stripes: 4,
                        mirrors: 2,
                    },
                    kinds: hdd.clone(),
                    sizes: [250, 500, 1000].map(|g| ByteSize::new(g * GB)).to_vec(),
                    separation: vec![sep("jbod", Mode::Hard), sep("rack", Mode::Soft)],
                    bandwidth_spread: vec![Spread {
                        kind: "port".into(),
                        mode: Mode::Soft,
                        max_per_domain: 1,
                        per_group: false,
                    }],
                },
                VolumeClass {
                    name: "parity4+2".into(),
                    weight: 0.15,
                    shape: Shape::Parity {
                        k: 4,
                        m: 2,
                        sets: 1,
                    },
                    kinds: hdd,
                    sizes: [500, 1000].map(|g| ByteSize::new(g * GB)).to_vec(),
                    separation: vec![sep("rack", Mode::Hard)],
                    bandwidth_spread: vec![],
                },
                VolumeClass {
                    name: "ssd-slice".into(),
                    weight: 0.15,
                    shape: Shape::Slice,
                    kinds: vec![DriveKind::Ssd],
                    sizes: [200, 500, 1000].map(|g| ByteSize::new(g * GB)).to_vec(),
                    separation: vec![],
                    bandwidth_spread: vec![],
                },
                VolumeClass {
                    name: "nvme-mirror".into(),
                    weight: 0.10,
                    shape: Shape::Mirror { legs: 2 },
                    kinds: vec![DriveKind::Nvme],
                    sizes: [250, 500, 1000].map(|g| ByteSize::new(g * GB)).to_vec(),
                    separation: vec![sep("rack", Mode::Hard)],
                    bandwidth_spread: vec![],
                },
            ],
        }
    }
}

/// One class of volumes in the workload mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeClass {
    /// Name in reports.
    pub name: String,
    /// Relative frequency among arrivals.
    pub weight: f64,
    /// Layout (as the placement crate's requests spell it).
    pub shape: Shape,
    /// Allowed drive kinds (empty: any; slices default to SSD and NVMe).
    #[serde(default)]
    pub kinds: Vec<DriveKind>,
    /// Per-member sizes, drawn uniformly.
    pub sizes: Vec<ByteSize>,
    /// Failure-domain separation (placement's request field).
    #[serde(default)]
    pub separation: Vec<Separation>,
    /// Bandwidth spreading (placement's request field).
    #[serde(default)]
    pub bandwidth_spread: Vec<Spread>,
}

/// The `[fleet]` fields of a configuration file that describe the generated fleet (all but
/// `jbod_level` and `rack_level`), as `fleet.NAME`, in the file's order. An inventory file
/// replaces the generated fleet, so the command line refuses a file that sets any of them
/// together with `--inventory` rather than silently simulating another fleet. A file that does
/// not parse gives none (its error is reported by [`SimConfig::parse_toml`]).
pub fn generated_fleet_fields(text: &str) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    match table.get("fleet") {
        Some(toml::Value::Table(fleet)) => fleet
            .keys()
            .filter(|k| !matches!(k.as_str(), "jbod_level" | "rack_level"))
            .map(|k| format!("fleet.{k}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// Most memory a run may be estimated to need ([`SimConfig::memory_estimate`]): 24 GiB. The
/// simulator keeps the whole fleet and every volume in memory, once per policy; a run estimated
/// above this is refused before anything is built, rather than swapping or being killed.
pub const MEMORY_LIMIT: u64 = 24 << 30;

/// Bytes per item of the memory estimate, measured as the peak resident set
/// (`/usr/bin/time -v`) of release runs of 0.01 simulated years on 2026-12-07: the default
/// fleet of 100,000 drives and 10,000 servers with 1,000 and 200,000 volumes under each policy
/// alone and all three; the same with only HDDs and with only SSDs; 10,000 drives with
/// 1,000,000 servers; 1,000,000 drives (linear: 2.06 GB against 0.21 GB for 100,000). Each
/// figure is rounded up, so that the estimate is at or above every measurement.
mod cost {
    /// The process, the report and the sampling.
    pub const BASE: f64 = 32.0 * 1024.0 * 1024.0;
    /// A drive: the inventory, the fleet's tables, each policy's drive state.
    pub const DRIVE: f64 = 1250.0;
    /// A drive, in the placement engine's indexes (engine policy only).
    pub const DRIVE_ENGINE: f64 = 450.0;
    /// An SSD or NVMe drive, as a device of each policy's slice allocator.
    pub const FLASH_DRIVE_PER_POLICY: f64 = 900.0;
    /// A server (attach point).
    pub const SERVER: f64 = 600.0;
    /// A volume of the steady population under the engine (its placement and index entries).
    pub const VOLUME_ENGINE: f64 = 800.0;
    /// A volume under straw2 or random.
    pub const VOLUME_OTHER: f64 = 250.0;
    // Arrivals cost nothing once their volumes depart: 1.8 million arrivals to a population of
    // 1,000 volumes in 5 years peak at the 175 MB of 2,500 arrivals (they added 17 MB while
    // the placement engine kept a slot per volume ever placed).
}

/// A run's estimated peak memory in bytes, in total and by what it grows with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// The whole estimate.
    pub total: f64,
    /// The drives' share (solid-state drives count once more per policy).
    pub drives: f64,
    /// The servers' share.
    pub servers: f64,
    /// The volumes' share (the steady population).
    pub volumes: f64,
}

impl MemoryEstimate {
    /// The configuration field that sets the largest share, for an error message.
    fn field(&self) -> &'static str {
        if self.volumes >= self.drives && self.volumes >= self.servers {
            "workload.volumes"
        } else if self.servers > self.drives {
            "fleet.servers_per_rack"
        } else {
            "fleet.drives_per_rack"
        }
    }
}

/// Largest member count the simulator tracks per volume (failed members are a bit mask).
pub const MAX_MEMBERS: usize = 64;

/// Most utilisation samples a run takes (`years × 365 / sample_days`).
const MAX_SAMPLES: f64 = 1_000_000.0;

/// The name of `field` of workload class `i` in errors: `workload.class[i] ("name").field`,
/// the name quoted short by [`quote`] (names have no length limit).
pub(crate) fn class_field(i: usize, name: &str, field: &str) -> String {
    format!("workload.class[{i}] ({}).{field}", quote(name))
}

/// Most arrivals a run expects after the initial population
/// (`volumes × years × 365 / mean_lifetime_days`; the default run has 500,000, the largest
/// population for 5 years at the default lifetime 125,000,000).
const MAX_ARRIVALS: f64 = 250_000_000.0;

impl SimConfig {
    /// Parses and validates a TOML configuration; absent fields take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let c = SimConfig::parse_toml(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Parses a TOML configuration without checking its rules, so that a caller can apply
    /// overrides (the command line's flags) before [`SimConfig::validate`]. A parse error is
    /// one line naming the line, the column and the text there ([`SimError::Syntax`]).
    pub fn parse_toml(text: &str) -> Result<Self, SimError> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start.min(text.len()));
            let before = text.get(..at).unwrap_or("");
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[line_start..]
                .find('\n')
                .map_or(text.len(), |i| line_start + i);
            SimError::Syntax {
                line: before.matches('\n').count() + 1,
                column: before[line_start..].chars().count() + 1,
                text: shorten(text[line_start..line_end].trim(), SHOWN_CHARS).into_owned(),
                // Long enough for this crate's own messages (which quote their input short) and
                // TOML's, short for TOML's echo of a long value.
                message: count_rule(e.message()).unwrap_or_else(|| {
                    shorten(&e.message().trim().replace('\n', "; "), 200).into_owned()
                }),
            }
        })
    }

    /// The estimated peak memory of this run over a fleet of `drives` drives, `flash` of them
    /// SSD or NVMe, and `servers` servers (from measurements, rounded up: see [`MEMORY_LIMIT`]).
    pub fn memory_estimate(&self, drives: u64, flash: u64, servers: u64) -> MemoryEstimate {
        let policies = self.policies.len() as f64;
        let engine = if self.policies.contains(&PolicyKind::Engine) {
            1.0
        } else {
            0.0
        };
        let w = &self.workload;
        let drives = drives as f64 * (cost::DRIVE + engine * cost::DRIVE_ENGINE)
            + flash as f64 * policies * cost::FLASH_DRIVE_PER_POLICY;
        let servers = servers as f64 * cost::SERVER;
        let volumes = w.volumes as f64
            * (engine * cost::VOLUME_ENGINE + (policies - engine) * cost::VOLUME_OTHER);
        MemoryEstimate {
            total: cost::BASE + drives + servers + volumes,
            drives,
            servers,
            volumes,
        }
    }

    /// Refuses a run over `drives` drives (`flash` solid-state) and `servers` servers whose
    /// [`memory_estimate`](Self::memory_estimate) passes [`MEMORY_LIMIT`]: the error names the
    /// field with the largest share, and the message the estimate and its parts.
    pub fn check_memory(&self, drives: u64, flash: u64, servers: u64) -> Result<(), SimError> {
        let e = self.memory_estimate(drives, flash, servers);
        if e.total <= MEMORY_LIMIT as f64 {
            return Ok(());
        }
        const GIB: f64 = (1u64 << 30) as f64;
        Err(SimError::Config {
            field: e.field().into(),
            rule: format!(
                "makes a run that would need about {:.1} GiB of memory, above the {} GiB a run \
                 may use (estimated: {:.1} GiB for {drives} drives, {flash} of them solid-state, \
                 {:.1} GiB for {servers} servers, {:.1} GiB for {} volumes, under {} policies)",
                e.total / GIB,
                MEMORY_LIMIT >> 30,
                e.drives / GIB,
                e.servers / GIB,
                e.volumes / GIB,
                self.workload.volumes,
                self.policies.len(),
            ),
        })
    }

    /// Checks every rule; the error names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        fn bad(field: impl Into<String>, rule: impl Into<String>) -> Result<(), SimError> {
            Err(SimError::Config {
                field: field.into(),
                rule: rule.into(),
            })
        }
        fn positive(field: &str, v: f64) -> Result<(), SimError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(
                    field,
                    format!("must be a positive number, got {}", exact(v)),
                )
            }
        }
        fn non_negative(field: &str, v: f64) -> Result<(), SimError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                bad(
                    field,
                    format!("must be a non-negative number, got {}", exact(v)),
                )
            }
        }
        fn afr(field: &str, v: f64) -> Result<(), SimError> {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                bad(field, format!("must lie in [0, 1), got {}", exact(v)))
            }
        }
        positive("years", self.years)?;
        if self.years > 1000.0 {
            return bad(
                "years",
                format!("must be at most 1000, got {}", exact(self.years)),
            );
        }
        positive("sample_days", self.sample_days)?;
        // Each sample is an event and a stored point: a tiny interval made the run spin through
        // billions of samples, growing without bound in memory.
        let samples = self.years * 365.0 / self.sample_days;
        if samples > MAX_SAMPLES {
            return bad(
                "sample_days",
                format!(
                    "must be at least {} days for {} years (at most 1,000,000 utilisation samples), got {}",
                    exact(self.years * 365.0 / MAX_SAMPLES),
                    exact(self.years),
                    exact(self.sample_days)
                ),
            );
        }
        if self.engine_search_budget == 0 {
            return bad("engine_search_budget", "must be at least 1");
        }
        if self.policies.is_empty() {
            return bad("policies", "must name at least one policy");
        }
        let f = &self.fleet;
        for (name, v) in [
            ("fleet.zones", f.zones),
            ("fleet.racks", f.racks),
            ("fleet.drives_per_rack", f.drives_per_rack),
            ("fleet.drives_per_jbod", f.drives_per_jbod),
        ] {
            if v == 0 {
                return bad(name, "must be at least 1");
            }
        }
        let drives = f.racks as u64 * f.drives_per_rack as u64;
        if drives > 10_000_000 {
            return bad(
                "fleet.drives_per_rack",
                format!(
                    "gives {drives} drives over {} racks; at most 10,000,000",
                    f.racks
                ),
            );
        }
        // Servers are inventory entries too: 4 racks of 20,000,000 servers took 1.2 GB in
        // 6 s and kept growing.
        let servers = f.racks as u64 * f.servers_per_rack as u64;
        if servers > 10_000_000 {
            return bad(
                "fleet.servers_per_rack",
                format!(
                    "gives {servers} servers over {} racks; at most 10,000,000",
                    f.racks
                ),
            );
        }
        if f.media.is_empty() {
            return bad("fleet.media", "must list at least one medium");
        }
        for (i, m) in f.media.iter().enumerate() {
            non_negative(&format!("fleet.media[{i}].share"), m.share)?;
            if m.capacities.is_empty() || m.capacities.iter().any(|c| c.bytes() == 0) {
                return bad(
                    format!("fleet.media[{i}].capacities"),
                    "must list at least one positive capacity",
                );
            }
            // The placement inventory keeps sizes in TOML's integer range; above it, the error
            // came from the generated inventory, naming a drive the user never wrote.
            if let Some(c) = m.capacities.iter().find(|c| c.bytes() > i64::MAX as u64) {
                return bad(
                    format!("fleet.media[{i}].capacities"),
                    format!(
                        "must be at most {} bytes (the placement inventory's integer range), got {}",
                        i64::MAX,
                        c.bytes()
                    ),
                );
            }
        }
        if f.media.iter().map(|m| m.share).sum::<f64>() <= 0.0 {
            return bad("fleet.media", "shares must not all be zero");
        }
        if f.port_bandwidth.bytes_per_second() == 0 {
            return bad("fleet.port_bandwidth", "must be positive");
        }
        if f.tor_bandwidth.bytes_per_second() == 0 {
            return bad("fleet.tor_bandwidth", "must be positive");
        }
        let fl = &self.failures;
        afr("failures.drive.afr", fl.drive.afr)?;
        positive("failures.drive.shape", fl.drive.shape)?;
        positive("failures.drive_replace_hours", fl.drive_replace_hours)?;
        for (name, d) in [
            ("jbod", &fl.jbod),
            ("server", &fl.server),
            ("rack", &fl.rack),
        ] {
            afr(&format!("failures.{name}.afr"), d.afr)?;
            positive(&format!("failures.{name}.repair_hours"), d.repair_hours)?;
        }
        if !(0.0..1.0).contains(&fl.ure_per_bit) {
            return bad(
                "failures.ure_per_bit",
                format!("must lie in [0, 1), got {}", exact(fl.ure_per_bit)),
            );
        }
        let r = &self.rebuild;
        positive("rebuild.fixed_hours", r.fixed_hours)?;
        if !(r.share > 0.0 && r.share <= 1.0) {
            return bad(
                "rebuild.share",
                format!("must lie in (0, 1], got {}", exact(r.share)),
            );
        }
        for (name, v) in [
            ("rebuild.max_rate", r.max_rate),
            ("rebuild.hdd_bandwidth", r.hdd_bandwidth),
            ("rebuild.ssd_bandwidth", r.ssd_bandwidth),
            ("rebuild.nvme_bandwidth", r.nvme_bandwidth),
        ] {
            if v.bytes_per_second() == 0 {
                return bad(name, "must be positive");
            }
        }
        let w = &self.workload;
        non_negative("workload.mean_lifetime_days", w.mean_lifetime_days)?;
        if w.volumes > 50_000_000 {
            return bad(
                "workload.volumes",
                format!("must be at most 50,000,000, got {}", w.volumes),
            );
        }
        if w.mean_lifetime_days > 0.0 {
            // Arrivals balance departures: a short lifetime means as many arrivals, each a
            // placement; a tiny one made the run spin through an endless stream of them.
            let arrivals = w.volumes as f64 * self.years * 365.0 / w.mean_lifetime_days;
            if arrivals > MAX_ARRIVALS {
                return bad(
                    "workload.mean_lifetime_days",
                    format!(
                        "of {} days gives about {arrivals:.3e} arrivals of {} volumes in {} years; at most 250,000,000 are simulated (give a longer lifetime, or 0 for volumes that never depart)",
                        exact(w.mean_lifetime_days),
                        w.volumes,
                        exact(self.years)
                    ),
                );
            }
        }
        if w.class.is_empty() {
            return bad("workload.class", "must list at least one class");
        }
        for (i, c) in w.class.iter().enumerate() {
            let at = |f: &str| class_field(i, &c.name, f);
            non_negative(&at("weight"), c.weight)?;
            if c.sizes.is_empty() || c.sizes.iter().any(|s| s.bytes() == 0) {
                return bad(at("sizes"), "must list at least one positive size");
            }
            let n = c.shape.member_count();
            let (groups, per) = c.shape.groups();
            if n == 0 || groups == 0 || per == 0 {
                return bad(at("shape"), "must have at least one member");
            }
            if n > MAX_MEMBERS {
                return bad(
                    at("shape"),
                    format!("has {n} members; the simulator tracks at most {MAX_MEMBERS}"),
                );
            }
        }
        if w.class.iter().map(|c| c.weight).sum::<f64>() <= 0.0 {
            return bad("workload.class", "weights must not all be zero");
        }
        // The generated fleet's size; with an inventory file, `run` checks the inventory's.
        // JBODs are dealt to media by share, so the solid-state drives are about their share.
        let total_share: f64 = f.media.iter().map(|m| m.share).sum();
        let flash_share: f64 = f
            .media
            .iter()
            .filter(|m| m.kind != DriveKind::Hdd)
            .map(|m| m.share)
            .sum::<f64>()
            / total_share;
        self.check_memory(
            drives,
            (drives as f64 * flash_share).round() as u64,
            servers,
        )
    }
}
