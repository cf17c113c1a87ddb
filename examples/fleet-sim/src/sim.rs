//! The discrete-event simulation of one policy over one fleet.
//!
//! Events (time in hours) come from a binary heap ordered by time, then by insertion. Four
//! random streams derive from the seed — hardware (drive lifetimes, domain outages), workload
//! (arrivals, classes, sizes, lifetimes, attach servers), unrecoverable read errors, and the
//! random policy's own — so that every policy of a run sees the same failures and the same
//! volume arrivals (common random numbers), and a seed reproduces a run exactly.
//!
//! What happens:
//! * **Drive failure** (exponential or Weibull lifetime from installation): the drive leaves
//!   service; every member on it fails. A new, empty drive is in its slot `drive_replace_hours`
//!   later, with a fresh lifetime.
//! * **JBOD / rack outage** (exponential, per-domain AFR): every drive inside leaves service and
//!   its members fail (the composer rebuilds them elsewhere rather than wait); the drives
//!   return empty after the repair time. A rack outage also takes its servers down.
//! * **Server outage**: the rebuilds of volumes attached to the server pause until it is back;
//!   the volumes are unavailable meanwhile (counted in volume-hours).
//! * **Member failure**: the volume's failed set grows; if `raid` says it is fatal the volume
//!   loses data (counted, then restored from backup: re-placed empty). Otherwise the policy
//!   chooses a new drive for each failed member and a rebuild flow starts ([`crate::flow`]).
//!   A member that cannot be re-placed waits (the volume is *unrepairable* until capacity
//!   returns; retried whenever drives come back and at every sample).
//! * **Rebuild completion**: the member is healthy again. Reading the sources may hit an
//!   unrecoverable read error (probability from `raid::ure_probability`); if the failed set
//!   plus one source would be fatal, the volume loses data (cause `ure`).
//! * **Arrivals and departures** keep a steady population (Poisson arrivals at
//!   `volumes / mean lifetime`, exponential lifetimes).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use placement::Shape;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adapter::{EnginePlacer, LossModel, SliceStore, ure_probability};
use crate::config::{Distribution, PolicyKind, RebuildModel, SimConfig};
use crate::error::SimError;
use crate::fleet::{Fleet, NONE};
use crate::flow::{Flow, Flows};
use crate::policy::{ClassInfo, DriveState, Placer, RandomPlacer, Straw2};
use crate::report::{LossCause, LossEvent, PolicyStats, Sample};

const HOURS_PER_YEAR: f64 = 8760.0;

#[derive(Debug, Clone, Copy)]
enum Ev {
    DriveFail(u32),
    DriveReplaced(u32),
    JbodFail,
    JbodUp(u32),
    ServerFail,
    ServerUp(u32),
    RackFail,
    RackUp(u32),
    Arrival,
    Departure(u32, u32),
    FlowTick(u64),
    Sample,
}

#[derive(Debug)]
struct Item {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone)]
struct Vol {
    class: u16,
    size: u64,
    drives: Vec<u32>,
    failed: u64,
    flows: Vec<u32>,
    server: u32,
    generation: u32,
    alive: bool,
    slice: Option<u64>,
    pending: bool,
}

/// Annual failure rate to an hourly exponential rate.
fn rate_per_hour(afr: f64) -> f64 {
    -(1.0 - afr).ln() / HOURS_PER_YEAR
}

fn exp_sample(rng: &mut ChaCha8Rng, rate: f64) -> f64 {
    if rate <= 0.0 {
        return f64::INFINITY;
    }
    let u: f64 = rng.random::<f64>();
    -(1.0 - u).ln() / rate
}

/// One policy's simulation.
pub struct Simulation<'a> {
    cfg: &'a SimConfig,
    fleet: Arc<Fleet>,
    policy: PolicyKind,
    placer: Box<dyn Placer + Send>,
    classes: Vec<ClassInfo>,
    loss: Vec<LossModel>,
    slices: SliceStore,
    st: DriveState,
    drive_members: Vec<Vec<(u32, u16)>>,
    drive_failed: Vec<bool>,
    jbod_down: Vec<bool>,
    rack_down: Vec<bool>,
    server_down: Vec<u16>,
    server_vols: Vec<u32>,
    vols: Vec<Vol>,
    free_slots: Vec<u32>,
    alive_per_class: Vec<u64>,
    pending: Vec<u32>,
    flows: Flows,
    heap: BinaryHeap<Item>,
    seq: u64,
    now: f64,
    end: f64,
    hw: ChaCha8Rng,
    wl: ChaCha8Rng,
    ure: ChaCha8Rng,
    class_cum: Vec<f64>,
    drive_rate: f64,
    /// `ln(-ln(1 - afr))`, the Weibull lifetime's log cumulative hazard at one year
    /// (`-inf` when the AFR is 0: drives never fail).
    weibull_log_hazard: f64,
    stats: PolicyStats,
    events: u64,
}

impl std::fmt::Debug for Simulation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("policy", &self.policy)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// How far one policy's run has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// Placing the initial population at simulated time 0: volumes placed (or refused) so far,
    /// out of `total`.
    Placing {
        /// Arrivals handled so far.
        done: u64,
        /// The initial population (`workload.volumes`).
        total: u64,
    },
    /// Simulating: the fraction of simulated time done, from 0 to 1.
    Simulating(f64),
}

impl Progress {
    /// The fraction of the current stage done, in `[0, 1]`.
    pub fn fraction(self) -> f64 {
        match self {
            Progress::Placing { total: 0, .. } => 1.0,
            Progress::Placing { done, total } => done as f64 / total as f64,
            Progress::Simulating(f) => f.clamp(0.0, 1.0),
        }
    }
}

fn stream(seed: u64, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl<'a> Simulation<'a> {
    /// Sets up the simulation of `policy` over `fleet`.
    pub fn new(
        cfg: &'a SimConfig,
        fleet: Arc<Fleet>,
        policy: PolicyKind,
    ) -> Result<Self, SimError> {
        let perr = |reason: String| SimError::Policy {
            policy: policy.name(),
            reason,
        };
        let classes = cfg
            .workload
            .class
            .iter()
            .enumerate()
            .map(|(i, c)| {
                ClassInfo::new(c, &fleet).map_err(|(field, rule)| SimError::Config {
                    field: crate::config::class_field(i, &c.name, &field),
                    rule,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let loss = cfg
            .workload
            .class
            .iter()
            .enumerate()
            .map(|(i, c)| {
                LossModel::new(&c.shape).map_err(|e| SimError::Config {
                    field: crate::config::class_field(i, &c.name, "shape"),
                    rule: format!("raid cannot analyse it: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let placer: Box<dyn Placer + Send> = match policy {
            PolicyKind::Engine => Box::new(
                EnginePlacer::new(fleet.clone(), cfg.seed, cfg.engine_search_budget)
                    .map_err(perr)?,
            ),
            PolicyKind::Straw2 => Box::new(Straw2::new(fleet.clone(), cfg.seed)),
            PolicyKind::Random => Box::new(RandomPlacer::new(fleet.clone(), cfg.seed)),
        };
        let slices = SliceStore::new(&fleet).map_err(perr)?;
        let n = fleet.drives.len();
        let share = cfg.rebuild.share;
        let flows = Flows::new(
            fleet.drives.iter().map(|d| d.bandwidth * share).collect(),
            fleet.bw.iter().map(|b| b.capacity * share).collect(),
            cfg.rebuild.max_rate.bytes_per_second() as f64,
        );
        let total_w: f64 = cfg.workload.class.iter().map(|c| c.weight).sum();
        let mut acc = 0.0;
        let class_cum = cfg
            .workload
            .class
            .iter()
            .map(|c| {
                acc += c.weight / total_w;
                acc
            })
            .collect();
        let d = &cfg.failures.drive;
        let drive_rate = rate_per_hour(d.afr);
        let weibull_log_hazard = (-(1.0 - d.afr).ln()).ln();
        let mut stats = PolicyStats::new(policy, &fleet, cfg);
        stats.loss_models = loss.iter().map(|l| l.description.clone()).collect();
        Ok(Simulation {
            cfg,
            policy,
            placer,
            classes,
            loss,
            slices,
            st: DriveState {
                free: fleet.drives.iter().map(|d| d.capacity).collect(),
                down: vec![0; n],
            },
            drive_members: vec![Vec::new(); n],
            drive_failed: vec![false; n],
            jbod_down: vec![false; fleet.jbods.len()],
            rack_down: vec![false; fleet.racks.len()],
            server_down: vec![0; fleet.servers.len()],
            server_vols: vec![0; fleet.servers.len()],
            vols: Vec::new(),
            free_slots: Vec::new(),
            alive_per_class: vec![0; cfg.workload.class.len()],
            pending: Vec::new(),
            flows,
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0.0,
            end: cfg.years * HOURS_PER_YEAR,
            hw: stream(cfg.seed, 1),
            wl: stream(cfg.seed, 2),
            ure: stream(cfg.seed, 3),
            class_cum,
            drive_rate,
            weibull_log_hazard,
            stats,
            events: 0,
            fleet,
        })
    }

    fn push(&mut self, t: f64, ev: Ev) {
        if t <= self.end {
            self.seq += 1;
            self.heap.push(Item {
                t,
                seq: self.seq,
                ev,
            });
        }
    }

    fn drive_lifetime(&mut self) -> f64 {
        let d = &self.cfg.failures.drive;
        match d.distribution {
            Distribution::Exponential => exp_sample(&mut self.hw, self.drive_rate),
            Distribution::Weibull => {
                if self.weibull_log_hazard == f64::NEG_INFINITY {
                    return f64::INFINITY;
                }
                // One year × (E / H)^(1/shape) with E ~ Exp(1) and H = -ln(1 - afr), in logs:
                // the scale alone, H^(-1/shape), overflows for small shapes (below about
                // 0.002 at the default AFR), which made every lifetime infinite and the run
                // report no drive failure at all.
                let u: f64 = self.hw.random::<f64>();
                let log_e = (-(1.0 - u).ln()).ln();
                HOURS_PER_YEAR * ((log_e - self.weibull_log_hazard) / d.shape).exp()
            }
        }
    }

    fn domain_rate(&self, afr: f64, n: usize) -> f64 {
        rate_per_hour(afr) * n as f64
    }

    /// Runs to the end; `progress` is called now and then: while the initial population is
    /// placed (which takes seconds for a large or crowded fleet, all at simulated time 0) and
    /// then with the fraction of simulated time done, ending with `Simulating(1.0)`.
    pub fn run(mut self, progress: &mut dyn FnMut(Progress)) -> PolicyStats {
        // Hardware first (its stream must not depend on the workload), then the population.
        for d in 0..self.fleet.drives.len() as u32 {
            let t = self.drive_lifetime();
            self.push(t, Ev::DriveFail(d));
        }
        let f = &self.cfg.failures;
        let (jr, sr, rr) = (
            self.domain_rate(f.jbod.afr, self.fleet.jbods.len()),
            self.domain_rate(f.server.afr, self.fleet.servers.len()),
            self.domain_rate(f.rack.afr, self.fleet.racks.len()),
        );
        let t = exp_sample(&mut self.hw, jr);
        self.push(t, Ev::JbodFail);
        let t = exp_sample(&mut self.hw, sr);
        self.push(t, Ev::ServerFail);
        let t = exp_sample(&mut self.hw, rr);
        self.push(t, Ev::RackFail);
        let total = self.cfg.workload.volumes;
        progress(Progress::Placing { done: 0, total });
        for done in 1..=total {
            self.arrive();
            if done % 1024 == 0 || done == total {
                progress(Progress::Placing { done, total });
            }
        }
        self.schedule_arrival();
        self.push(0.0, Ev::Sample);
        let mut last_report = 0u64;
        while let Some(item) = self.heap.pop() {
            self.advance(item.t);
            self.events += 1;
            self.handle(item.ev);
            if self.flows.dirty {
                self.reflow();
            }
            if self.events - last_report >= 4096 {
                last_report = self.events;
                progress(Progress::Simulating(self.now / self.end));
            }
        }
        self.advance(self.end);
        progress(Progress::Simulating(1.0));
        self.finish()
    }

    fn advance(&mut self, t: f64) {
        let dt = t - self.now;
        if dt > 0.0 {
            for (c, &n) in self.alive_per_class.iter().enumerate() {
                self.stats.classes[c].volume_years += n as f64 * dt / HOURS_PER_YEAR;
            }
            self.now = t;
        }
        self.flows.advance(t);
    }

    fn reflow(&mut self) {
        if let Some(next) = self.flows.recompute(&self.server_down) {
            let v = self.flows.version;
            // Completions past the end are not simulated.
            self.push(next.max(self.now), Ev::FlowTick(v));
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::DriveFail(d) => self.drive_fail(d),
            Ev::DriveReplaced(d) => {
                self.drive_failed[d as usize] = false;
                self.drives_up(&[d]);
                let t = self.drive_lifetime();
                self.push(self.now + t, Ev::DriveFail(d));
                self.retry_pending();
            }
            Ev::JbodFail => {
                let afr = self.cfg.failures.jbod.afr;
                if let Some(j) = self.next_outage(self.fleet.jbods.len(), afr, Ev::JbodFail)
                    && !self.jbod_down[j as usize]
                {
                    self.jbod_down[j as usize] = true;
                    self.stats.hardware.jbod_failures += 1;
                    let drives = self.fleet.jbods[j as usize].drives.clone();
                    self.drives_down(&drives, LossCause::Jbod);
                    self.push(
                        self.now + self.cfg.failures.jbod.repair_hours,
                        Ev::JbodUp(j),
                    );
                }
            }
            Ev::JbodUp(j) => {
                self.jbod_down[j as usize] = false;
                let drives = self.fleet.jbods[j as usize].drives.clone();
                self.drives_up(&drives);
                self.retry_pending();
            }
            Ev::ServerFail => {
                let afr = self.cfg.failures.server.afr;
                if let Some(s) = self.next_outage(self.fleet.servers.len(), afr, Ev::ServerFail)
                    && self.server_down[s as usize] == 0
                {
                    self.stats.hardware.server_failures += 1;
                    self.server_outage(s, self.cfg.failures.server.repair_hours);
                    self.push(
                        self.now + self.cfg.failures.server.repair_hours,
                        Ev::ServerUp(s),
                    );
                }
            }
            Ev::ServerUp(s) => {
                self.server_down[s as usize] = self.server_down[s as usize].saturating_sub(1);
                self.flows.dirty = true;
            }
            Ev::RackFail => {
                let afr = self.cfg.failures.rack.afr;
                if let Some(r) = self.next_outage(self.fleet.racks.len(), afr, Ev::RackFail)
                    && !self.rack_down[r as usize]
                {
                    self.rack_down[r as usize] = true;
                    self.stats.hardware.rack_failures += 1;
                    let hours = self.cfg.failures.rack.repair_hours;
                    for s in self.fleet.racks[r as usize].servers.clone() {
                        self.server_outage(s, hours);
                    }
                    let drives = self.fleet.racks[r as usize].drives.clone();
                    self.drives_down(&drives, LossCause::Rack);
                    self.push(self.now + hours, Ev::RackUp(r));
                }
            }
            Ev::RackUp(r) => {
                self.rack_down[r as usize] = false;
                for s in self.fleet.racks[r as usize].servers.clone() {
                    self.server_down[s as usize] = self.server_down[s as usize].saturating_sub(1);
                }
                self.flows.dirty = true;
                let drives = self.fleet.racks[r as usize].drives.clone();
                self.drives_up(&drives);
                self.retry_pending();
            }
            Ev::Arrival => {
                self.arrive();
                self.schedule_arrival();
            }
            Ev::Departure(v, generation) => {
                let vol = &self.vols[v as usize];
                if vol.alive && vol.generation == generation {
                    self.remove_volume(v);
                    self.vols[v as usize].alive = false;
                    self.free_slots.push(v);
                }
            }
            Ev::FlowTick(version) => {
                if version == self.flows.version {
                    for id in self.flows.finished() {
                        self.complete(id);
                    }
                    self.flows.dirty = true;
                }
            }
            Ev::Sample => {
                self.sample();
                self.retry_pending();
                self.push(self.now + self.cfg.sample_days * 24.0, Ev::Sample);
            }
        }
    }

    /// An outage of one of `n` domains (a uniformly drawn one) happened: schedules the next
    /// outage of the kind (`next`, total rate `n` × the domain's rate) and returns the domain.
    fn next_outage(&mut self, n: usize, afr: f64, next: Ev) -> Option<u32> {
        let i = self.hw.random_range(0..n.max(1)) as u32;
        let rate = self.domain_rate(afr, n);
        let t = exp_sample(&mut self.hw, rate);
        self.push(self.now + t, next);
        (n > 0).then_some(i)
    }

    fn server_outage(&mut self, s: u32, hours: f64) {
        self.server_down[s as usize] += 1;
        self.stats.unavailable_volume_hours += self.server_vols[s as usize] as f64 * hours;
        self.flows.dirty = true;
    }

    fn schedule_arrival(&mut self) {
        let w = &self.cfg.workload;
        if w.mean_lifetime_days > 0.0 && w.volumes > 0 {
            let rate = w.volumes as f64 / (w.mean_lifetime_days * 24.0);
            let t = exp_sample(&mut self.wl, rate);
            self.push(self.now + t, Ev::Arrival);
        }
    }

    /// A new volume: every draw happens whether or not it can be placed, so the workload
    /// stream is the same for every policy.
    fn arrive(&mut self) {
        let u: f64 = self.wl.random::<f64>();
        let class = self
            .class_cum
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.class_cum.len() - 1);
        let sizes = &self.cfg.workload.class[class].sizes;
        let size = sizes[self.wl.random_range(0..sizes.len())].bytes();
        let server = if self.fleet.servers.is_empty() {
            NONE
        } else {
            self.wl.random_range(0..self.fleet.servers.len()) as u32
        };
        let w = &self.cfg.workload;
        let life = if w.mean_lifetime_days > 0.0 {
            exp_sample(&mut self.wl, 1.0 / (w.mean_lifetime_days * 24.0))
        } else {
            f64::INFINITY
        };
        self.stats.arrivals += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.vols.push(Vol {
                    class: 0,
                    size: 0,
                    drives: vec![],
                    failed: 0,
                    flows: vec![],
                    server: NONE,
                    generation: 0,
                    alive: false,
                    slice: None,
                    pending: false,
                });
                (self.vols.len() - 1) as u32
            }
        };
        {
            let v = &mut self.vols[slot as usize];
            v.class = class as u16;
            v.size = size;
            v.server = server;
            v.generation += 1;
        }
        if self.place_volume(slot) {
            let generation = self.vols[slot as usize].generation;
            self.push(self.now + life, Ev::Departure(slot, generation));
        } else {
            self.stats.rejected += 1;
            self.free_slots.push(slot);
        }
    }

    /// Places the volume in `slot` (class, size, server set); false if no placement.
    fn place_volume(&mut self, slot: u32) -> bool {
        let (class, size) = {
            let v = &self.vols[slot as usize];
            (v.class as usize, v.size)
        };
        let drives = match self
            .placer
            .place(&self.st, slot, &self.classes[class], size)
        {
            Ok(d) => d,
            Err(e) => {
                self.stats.note_error("place", e);
                return false;
            }
        };
        // The simulator's own guard: never accept a member on a drive out of service.
        if drives.iter().any(|&d| !self.st.usable(d, size)) {
            self.stats.note_error(
                "place",
                "policy chose a drive without room or out of service".into(),
            );
            self.placer.remove(&self.st, slot);
            return false;
        }
        let mut slice = None;
        if self.classes[class].class.shape == Shape::Slice {
            match self.slices.allocate(drives[0], size) {
                Ok(s) => slice = Some(s),
                Err(e) => {
                    self.stats.slice_failures += 1;
                    self.stats.note_error("slice-alloc", e);
                    self.placer.remove(&self.st, slot);
                    return false;
                }
            }
        }
        for (m, &d) in drives.iter().enumerate() {
            self.st.free[d as usize] -= size;
            self.drive_members[d as usize].push((slot, m as u16));
        }
        let n = drives.len();
        let v = &mut self.vols[slot as usize];
        v.drives = drives;
        v.failed = 0;
        v.flows = vec![NONE; n];
        v.alive = true;
        v.slice = slice;
        v.pending = false;
        if v.server != NONE {
            self.server_vols[v.server as usize] += 1;
        }
        self.alive_per_class[class] += 1;
        true
    }

    /// Takes a volume out of every structure (its slot stays allocated).
    fn remove_volume(&mut self, slot: u32) {
        let v = self.vols[slot as usize].clone();
        for &f in &v.flows {
            if f != NONE {
                self.flows.remove(f);
            }
        }
        for (m, &d) in v.drives.iter().enumerate() {
            self.st.free[d as usize] += v.size;
            self.drive_members[d as usize].retain(|&x| x != (slot, m as u16));
        }
        if let Some(s) = v.slice {
            self.slices.free(s);
        }
        self.placer.remove(&self.st, slot);
        if v.server != NONE {
            self.server_vols[v.server as usize] -= 1;
        }
        self.alive_per_class[v.class as usize] -= 1;
        let vm = &mut self.vols[slot as usize];
        vm.flows.iter_mut().for_each(|f| *f = NONE);
        vm.drives.clear();
        vm.failed = 0;
        vm.pending = false;
    }

    fn drive_fail(&mut self, d: u32) {
        self.stats.hardware.drive_failures += 1;
        if self.drive_failed[d as usize] {
            return;
        }
        self.drive_failed[d as usize] = true;
        self.push(
            self.now + self.cfg.failures.drive_replace_hours,
            Ev::DriveReplaced(d),
        );
        self.drives_down(&[d], LossCause::Drives);
    }

    /// Drives leave service: the policy learns first, then every affected volume is hit once
    /// with all its members on these drives.
    fn drives_down(&mut self, drives: &[u32], cause: LossCause) {
        let mut newly_down = Vec::new();
        for &d in drives {
            if self.st.down[d as usize] == 0 {
                newly_down.push(d);
            }
            self.st.down[d as usize] += 1;
        }
        if let Err(e) = self.placer.drives_down(&self.st, &newly_down) {
            self.stats.note_error("drives_down", e);
        }
        let mut hits: Vec<(u32, u16)> = newly_down
            .iter()
            .flat_map(|&d| self.drive_members[d as usize].iter().copied())
            .collect();
        hits.sort_unstable();
        let mut i = 0;
        while i < hits.len() {
            let vol = hits[i].0;
            let mut mask = 0u64;
            while i < hits.len() && hits[i].0 == vol {
                mask |= 1u64 << hits[i].1;
                i += 1;
            }
            self.hit(vol, mask, cause);
        }
    }

    fn drives_up(&mut self, drives: &[u32]) {
        let mut up = Vec::new();
        for &d in drives {
            let c = &mut self.st.down[d as usize];
            if *c > 0 {
                *c -= 1;
                if *c == 0 {
                    up.push(d);
                }
            }
        }
        if let Err(e) = self.placer.drives_up(&self.st, &up) {
            self.stats.note_error("drives_up", e);
        }
    }

    /// Members `mask` of volume `v` sit on drives that just left service.
    fn hit(&mut self, v: u32, mask: u64, cause: LossCause) {
        let vol = &mut self.vols[v as usize];
        if !vol.alive {
            return;
        }
        let newly = mask & !vol.failed;
        vol.failed |= mask;
        let class = vol.class as usize;
        if newly != 0 && self.loss[class].fatal(vol.failed) {
            let c = if vol.failed.count_ones() > newly.count_ones() || newly.count_ones() > 1 {
                cause
            } else {
                LossCause::NoRedundancy
            };
            self.lose(v, c);
            return;
        }
        // Every member on a lost drive is (re)placed: new failures and rebuild targets alike.
        let members: Vec<usize> = (0..64).filter(|&m| mask & (1u64 << m) != 0).collect();
        for &m in &members {
            let f = self.vols[v as usize].flows[m];
            if f != NONE {
                self.flows.remove(f);
                self.vols[v as usize].flows[m] = NONE;
            }
        }
        self.repair(v, &members);
        self.refresh_sources(v);
    }

    /// Data loss: count it, then restore the volume from backup (re-place it empty).
    fn lose(&mut self, v: u32, cause: LossCause) {
        let class = self.vols[v as usize].class as usize;
        self.stats.losses.push(LossEvent {
            hours: self.now,
            class: class as u16,
            cause,
        });
        self.remove_volume(v);
        self.vols[v as usize].alive = false;
        if !self.place_volume(v) {
            // No room to restore: the volume is gone; its departure event is now stale.
            self.stats.restore_failures += 1;
            self.vols[v as usize].generation += 1;
            self.free_slots.push(v);
        }
    }

    /// Chooses new drives for failed `members` of `v` and starts their rebuilds.
    fn repair(&mut self, v: u32, members: &[usize]) {
        let (class, size, current) = {
            let vol = &self.vols[v as usize];
            (vol.class as usize, vol.size, vol.drives.clone())
        };
        let res = self
            .placer
            .repair(&self.st, v, &self.classes[class], size, &current, members);
        let new = match res {
            Ok(n) if n.iter().all(|&d| self.st.usable(d, size)) && n.len() == members.len() => n,
            other => {
                if let Err(e) = other {
                    self.stats.note_error("repair", e);
                }
                let vol = &mut self.vols[v as usize];
                if !vol.pending {
                    vol.pending = true;
                    self.pending.push(v);
                    self.stats.unrepairable_volumes += 1;
                }
                return;
            }
        };
        for (&m, &d) in members.iter().zip(&new) {
            let old = current[m];
            self.st.free[old as usize] += size;
            self.drive_members[old as usize].retain(|&x| x != (v, m as u16));
            self.st.free[d as usize] -= size;
            self.drive_members[d as usize].push((v, m as u16));
            self.vols[v as usize].drives[m] = d;
        }
        if self.vols[v as usize].slice.is_some() {
            // A slice has no redundancy: it never reaches a repair (every failure is fatal).
            return;
        }
        for &m in members {
            self.start_flow(v, m);
        }
    }

    /// Sources of a rebuild of member `m`: in a mirror group the first surviving copy, in a
    /// `k+m` parity set the first `k` surviving members.
    fn sources(&self, v: u32, m: usize) -> Vec<u32> {
        let vol = &self.vols[v as usize];
        let shape = &self.classes[vol.class as usize].class.shape;
        let (_, per) = shape.groups();
        let need = match *shape {
            Shape::Parity { k, .. } => k as usize,
            _ => 1,
        };
        let g = m / per;
        (g * per..(g + 1) * per)
            .filter(|&i| i != m && vol.failed & (1u64 << i) == 0)
            .take(need)
            .map(|i| vol.drives[i])
            .collect()
    }

    fn flow_resources(&self, target: u32, sources: &[u32]) -> Vec<(u32, f32)> {
        let mut res: Vec<(u32, f32)> = Vec::with_capacity(4 + 3 * sources.len());
        let mut add = |r: u32| match res.iter_mut().find(|x| x.0 == r) {
            Some(x) => x.1 += 1.0,
            None => res.push((r, 1.0)),
        };
        for &d in sources.iter().chain(std::iter::once(&target)) {
            add(d);
            for &b in &self.fleet.drives[d as usize].bw {
                add(self.flows.bw_res(b));
            }
        }
        res
    }

    fn start_flow(&mut self, v: u32, m: usize) {
        let sources = self.sources(v, m);
        let vol = &self.vols[v as usize];
        let target = vol.drives[m];
        let size = vol.size as f64;
        let fixed_rate = match self.cfg.rebuild.model {
            RebuildModel::Fixed => Some(size / (self.cfg.rebuild.fixed_hours * 3600.0)),
            RebuildModel::Bandwidth => None,
        };
        let flow = Flow {
            vol: v,
            member: m as u16,
            remaining: size,
            rate: 0.0,
            res: self.flow_resources(target, &sources),
            fixed_rate,
            started: self.now,
            read_factor: sources.len() as f64,
            server: vol.server,
        };
        let id = self.flows.add(flow);
        self.vols[v as usize].flows[m] = id;
    }

    /// After a volume's failed set changed, its running rebuilds read from other sources.
    fn refresh_sources(&mut self, v: u32) {
        let n = self.vols[v as usize].flows.len();
        for m in 0..n {
            let f = self.vols[v as usize].flows[m];
            if f == NONE {
                continue;
            }
            let sources = self.sources(v, m);
            let target = self.vols[v as usize].drives[m];
            let res = self.flow_resources(target, &sources);
            if let Some(fl) = self.flows.get_mut(f) {
                fl.res = res;
                fl.read_factor = sources.len() as f64;
            }
            self.flows.dirty = true;
        }
    }

    fn complete(&mut self, id: u32) {
        let Some(f) = self.flows.remove(id) else {
            return;
        };
        let v = f.vol;
        let m = f.member as usize;
        let vol = &mut self.vols[v as usize];
        vol.flows[m] = NONE;
        self.stats.rebuild_hours.push(self.now - f.started);
        // Unrecoverable read errors while reading the sources.
        let ure = self.cfg.failures.ure_per_bit;
        if ure > 0.0 {
            let bytes = (vol.size as f64 * f.read_factor) as u64;
            let p = ure_probability(bytes, ure);
            let hit = self.ure.random::<f64>() < p;
            if hit {
                let failed = vol.failed;
                let class = vol.class as usize;
                let (_, per) = self.classes[class].class.shape.groups();
                let g = m / per;
                // The error hits one source: fatal if the failed set plus any source is.
                let fatal = (g * per..(g + 1) * per)
                    .filter(|&i| failed & (1u64 << i) == 0)
                    .any(|i| self.loss[class].fatal(failed | (1u64 << i)));
                if fatal {
                    self.stats.ure_hits += 1;
                    self.lose(v, LossCause::Ure);
                    return;
                }
                self.stats.ure_corrected += 1;
            }
        }
        let vol = &mut self.vols[v as usize];
        vol.failed &= !(1u64 << m);
        self.refresh_sources(v);
    }

    fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.pending);
        for v in list {
            let vol = &mut self.vols[v as usize];
            if !vol.alive || !vol.pending {
                continue;
            }
            vol.pending = false;
            // Members failed without a running rebuild.
            let members: Vec<usize> = (0..vol.drives.len())
                .filter(|&m| vol.failed & (1u64 << m) != 0 && vol.flows[m] == NONE)
                .collect();
            if members.is_empty() {
                continue;
            }
            let before = self.stats.unrepairable_volumes;
            self.repair(v, &members);
            // A retry that fails again is the same unrepairable volume, not a new one.
            if self.stats.unrepairable_volumes > before {
                self.stats.unrepairable_volumes = before;
            }
            self.refresh_sources(v);
        }
    }

    fn sample(&mut self) {
        let mut cap = 0u64;
        let mut used = 0u64;
        let mut down = 0u64;
        for (d, info) in self.fleet.drives.iter().enumerate() {
            if self.st.down[d] == 0 {
                cap += info.capacity;
                used += info.capacity - self.st.free[d];
            } else {
                down += info.capacity;
            }
        }
        let total = (cap + down).max(1) as f64;
        self.stats.samples.push(Sample {
            years: self.now / HOURS_PER_YEAR,
            utilisation: if cap > 0 {
                used as f64 / cap as f64
            } else {
                0.0
            },
            down_fraction: down as f64 / total,
            volumes: self.alive_per_class.iter().sum(),
            rebuilds: self.flows.len() as u64,
            pending_repairs: self.pending.len() as u64,
        });
    }

    fn finish(mut self) -> PolicyStats {
        self.sample();
        self.stats.peak_bw = self.flows.peak.clone();
        self.stats.peak_total = self.flows.peak_total;
        self.stats.pending_at_end = self
            .pending
            .iter()
            .filter(|&&v| self.vols[v as usize].pending)
            .count() as u64;
        self.stats.events = self.events;
        self.stats.slice_bytes = self.slices.used();
        self.stats
    }
}
