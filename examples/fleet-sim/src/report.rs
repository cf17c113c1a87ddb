//! What a run measures ([`PolicyStats`]) and what it reports ([`Report`], as text or JSON).
//!
//! Loss rates are events per 1,000 volume-years with a 95% confidence interval that treats
//! the count as Poisson (Garwood's exact interval, computed with the Wilson–Hilferty
//! approximation of the chi-square quantiles). Losses that share a cause (one rack taking
//! several volumes) are not independent, which makes that interval too narrow; the report
//! therefore also counts the distinct incidents (loss events at distinct times).

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{PolicyKind, SimConfig};
use crate::fleet::Fleet;
use crate::num::{count, exact, human};

/// Why a volume lost data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossCause {
    /// A failure on a volume without redundancy (single member, slice).
    NoRedundancy,
    /// Overlapping drive failures.
    Drives,
    /// A JBOD outage (alone or on top of other failures).
    Jbod,
    /// A rack outage.
    Rack,
    /// An unrecoverable read error during a rebuild with no redundancy left.
    Ure,
}

impl LossCause {
    const ALL: [LossCause; 5] = [
        LossCause::NoRedundancy,
        LossCause::Drives,
        LossCause::Jbod,
        LossCause::Rack,
        LossCause::Ure,
    ];

    fn name(self) -> &'static str {
        match self {
            LossCause::NoRedundancy => "no_redundancy",
            LossCause::Drives => "drives",
            LossCause::Jbod => "jbod",
            LossCause::Rack => "rack",
            LossCause::Ure => "ure",
        }
    }
}

/// One data-loss event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossEvent {
    /// Simulated time, hours.
    pub hours: f64,
    /// Volume class index.
    pub class: u16,
    /// Cause.
    pub cause: LossCause,
}

/// A utilisation sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Simulated time, years.
    pub years: f64,
    /// Used / capacity of the drives in service.
    pub utilisation: f64,
    /// Fraction of raw capacity out of service.
    pub down_fraction: f64,
    /// Volumes alive.
    pub volumes: u64,
    /// Rebuilds running.
    pub rebuilds: u64,
    /// Volumes waiting for a repair target.
    pub pending_repairs: u64,
}

/// Hardware events (identical for every policy of a run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Hardware {
    /// Drive failures.
    pub drive_failures: u64,
    /// JBOD outages.
    pub jbod_failures: u64,
    /// Server outages.
    pub server_failures: u64,
    /// Rack outages.
    pub rack_failures: u64,
}

/// Per-class accumulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClassStats {
    /// Class name.
    pub name: String,
    /// Integrated population, volume-years.
    pub volume_years: f64,
}

/// Raw measurements of one policy's run.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyStats {
    /// Policy.
    pub policy: PolicyKind,
    /// Per-class volume-years.
    pub classes: Vec<ClassStats>,
    /// How `raid` analyses each class.
    pub loss_models: Vec<String>,
    /// Every loss event.
    pub losses: Vec<LossEvent>,
    /// Durations of completed rebuilds (member failure to rebuilt), hours.
    pub rebuild_hours: Vec<f64>,
    /// Peak rebuild traffic per bandwidth domain, bytes/s.
    pub peak_bw: Vec<f64>,
    /// Peak total rebuild write rate, bytes/s.
    pub peak_total: f64,
    /// Utilisation samples.
    pub samples: Vec<Sample>,
    /// Hardware events.
    pub hardware: Hardware,
    /// Volumes that at some point had a failed member no drive could take.
    pub unrepairable_volumes: u64,
    /// Of those, still waiting at the end.
    pub pending_at_end: u64,
    /// Arrivals (including the initial population).
    pub arrivals: u64,
    /// Arrivals that could not be placed.
    pub rejected: u64,
    /// Lost volumes that could not be restored (no room).
    pub restore_failures: u64,
    /// Slice volumes the policy placed but `slice-alloc` could not allocate.
    pub slice_failures: u64,
    /// UREs corrected by remaining redundancy.
    pub ure_corrected: u64,
    /// UREs that lost data.
    pub ure_hits: u64,
    /// Volume-hours without an attach server.
    pub unavailable_volume_hours: f64,
    /// Bytes in SSD slices at the end.
    pub slice_bytes: u64,
    /// Events processed.
    pub events: u64,
    /// Failed operations per kind, with the first message.
    pub errors: Vec<(String, u64, String)>,
    bw_names: Vec<(String, String)>,
}

impl PolicyStats {
    /// Empty statistics for a run.
    pub fn new(policy: PolicyKind, fleet: &Fleet, cfg: &SimConfig) -> Self {
        PolicyStats {
            policy,
            classes: cfg
                .workload
                .class
                .iter()
                .map(|c| ClassStats {
                    name: c.name.clone(),
                    volume_years: 0.0,
                })
                .collect(),
            loss_models: vec![],
            losses: vec![],
            rebuild_hours: vec![],
            peak_bw: vec![],
            peak_total: 0.0,
            samples: vec![],
            hardware: Hardware::default(),
            unrepairable_volumes: 0,
            pending_at_end: 0,
            arrivals: 0,
            rejected: 0,
            restore_failures: 0,
            slice_failures: 0,
            ure_corrected: 0,
            ure_hits: 0,
            unavailable_volume_hours: 0.0,
            slice_bytes: 0,
            events: 0,
            errors: vec![],
            bw_names: fleet
                .bw
                .iter()
                .map(|b| (b.id.clone(), b.kind.clone()))
                .collect(),
        }
    }

    /// Counts a failed operation (keeps the first message of each kind).
    pub fn note_error(&mut self, op: &str, msg: String) {
        match self.errors.iter_mut().find(|e| e.0 == op) {
            Some(e) => e.1 += 1,
            None => self.errors.push((op.to_string(), 1, msg)),
        }
    }
}

/// A rate with its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Events counted.
    pub events: u64,
    /// Exposure, volume-years.
    pub volume_years: f64,
    /// Events per 1,000 volume-years.
    pub per_1000_volume_years: f64,
    /// Lower bound of the 95% interval.
    pub low: f64,
    /// Upper bound of the 95% interval; infinite (`null` in JSON) with no exposure, where
    /// the count says nothing about the rate.
    pub high: f64,
}

/// Garwood's 95% interval for a Poisson count `n` (Wilson–Hilferty approximation).
pub fn poisson_interval(n: u64) -> (f64, f64) {
    const Z: f64 = 1.959_963_985;
    let low = if n == 0 {
        0.0
    } else {
        let n = n as f64;
        n * (1.0 - 1.0 / (9.0 * n) - Z / (3.0 * n.sqrt())).powi(3)
    };
    let m = n as f64 + 1.0;
    let high = m * (1.0 - 1.0 / (9.0 * m) + Z / (3.0 * m.sqrt())).powi(3);
    (low.max(0.0), high)
}

impl Rate {
    /// The rate of `events` over `volume_years`.
    pub fn new(events: u64, volume_years: f64) -> Self {
        let (lo, hi) = poisson_interval(events);
        if volume_years <= 0.0 {
            // No exposure (a class no volume was placed in, or no volumes at all): the interval
            // is unbounded, not the certain 0–0 that scaling by zero would claim.
            return Rate {
                events,
                volume_years,
                per_1000_volume_years: 0.0,
                low: 0.0,
                high: f64::INFINITY,
            };
        }
        // Scale each figure on its own: `1000 / volume_years` overflows to infinity for a
        // subnormal exposure (`--years 1e-320`), and 0 events times it printed `NaN`.
        let per_1000 = |x: f64| x * 1000.0 / volume_years;
        Rate {
            events,
            volume_years,
            per_1000_volume_years: per_1000(events as f64),
            low: per_1000(lo),
            high: per_1000(hi),
        }
    }

    /// `R per 1,000 <unit> (<ci> L–H)` with R right-aligned in `width`, or why there is
    /// no rate.
    fn text(&self, width: usize, unit: &str, ci: &str) -> String {
        if self.volume_years <= 0.0 {
            "no rate: no volume-years (nothing was placed)".to_string()
        } else {
            format!(
                "{:>width$} per 1,000 {unit} ({ci} {}–{})",
                human(self.per_1000_volume_years),
                human(self.low),
                human(self.high)
            )
        }
    }
}

/// Per-class results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    /// Class name.
    pub name: String,
    /// How `raid` analyses it.
    pub analysis: String,
    /// Loss rate.
    pub loss: Rate,
}

/// Peak rebuild traffic through one bandwidth domain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeakTraffic {
    /// Bandwidth domain id.
    pub domain: String,
    /// Its kind.
    pub kind: String,
    /// Peak rebuild traffic, bytes/s.
    pub bytes_per_sec: f64,
}

/// One policy's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: &'static str,
    /// All data-loss events.
    pub loss: Rate,
    /// Distinct incidents (loss events at distinct times).
    pub loss_incidents: u64,
    /// Loss events per cause.
    pub loss_by_cause: Vec<(String, u64)>,
    /// Per class.
    pub classes: Vec<ClassReport>,
    /// Completed rebuilds.
    pub rebuilds: u64,
    /// Median rebuild time, hours.
    pub rebuild_p50_hours: f64,
    /// 99th percentile rebuild time, hours.
    pub rebuild_p99_hours: f64,
    /// Longest rebuild, hours.
    pub rebuild_max_hours: f64,
    /// Peak total rebuild write rate, bytes/s.
    pub peak_rebuild_total: f64,
    /// Highest peak per bandwidth-domain kind.
    pub peak_by_kind: Vec<PeakTraffic>,
    /// The five domains with the highest peaks.
    pub peak_top: Vec<PeakTraffic>,
    /// Volumes that at some point could not be repaired.
    pub unrepairable_volumes: u64,
    /// Of those, still unrepaired at the end.
    pub unrepaired_at_end: u64,
    /// Arrivals, including the initial population.
    pub arrivals: u64,
    /// Arrivals that could not be placed.
    pub rejected_arrivals: u64,
    /// Lost volumes that could not be restored.
    pub restore_failures: u64,
    /// Slices `slice-alloc` could not allocate on the chosen drive.
    pub slice_failures: u64,
    /// UREs corrected by remaining redundancy.
    pub ure_corrected: u64,
    /// Volume-hours without an attach server.
    pub unavailable_volume_hours: f64,
    /// Utilisation over time.
    pub utilisation: Vec<Sample>,
    /// Cumulative loss events: (years, count) at each event.
    pub cumulative_losses: Vec<(f64, u64)>,
    /// Failed operations per kind: (operation, count, first message).
    pub errors: Vec<(String, u64, String)>,
    /// Events processed.
    pub events: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl PolicyReport {
    /// Summarises raw statistics.
    pub fn new(s: &PolicyStats) -> Self {
        let vy: f64 = s.classes.iter().map(|c| c.volume_years).sum();
        let mut times: Vec<f64> = s.losses.iter().map(|l| l.hours).collect();
        times.sort_by(f64::total_cmp);
        let mut incidents = times.clone();
        incidents.dedup();
        let mut rb = s.rebuild_hours.clone();
        rb.sort_by(f64::total_cmp);
        let mut peaks: Vec<PeakTraffic> = s
            .peak_bw
            .iter()
            .zip(&s.bw_names)
            .filter(|(p, _)| **p > 0.0)
            .map(|(&p, (id, kind))| PeakTraffic {
                domain: id.clone(),
                kind: kind.clone(),
                bytes_per_sec: p,
            })
            .collect();
        peaks.sort_by(|a, b| {
            b.bytes_per_sec
                .total_cmp(&a.bytes_per_sec)
                .then(a.domain.cmp(&b.domain))
        });
        let mut by_kind: Vec<PeakTraffic> = Vec::new();
        for p in &peaks {
            if !by_kind.iter().any(|k| k.kind == p.kind) {
                by_kind.push(p.clone());
            }
        }
        by_kind.sort_by(|a, b| a.kind.cmp(&b.kind));
        PolicyReport {
            policy: s.policy.name(),
            loss: Rate::new(s.losses.len() as u64, vy),
            loss_incidents: incidents.len() as u64,
            loss_by_cause: LossCause::ALL
                .iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        s.losses.iter().filter(|l| l.cause == *c).count() as u64,
                    )
                })
                .collect(),
            classes: s
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| ClassReport {
                    name: c.name.clone(),
                    analysis: s.loss_models.get(i).cloned().unwrap_or_default(),
                    loss: Rate::new(
                        s.losses.iter().filter(|l| l.class as usize == i).count() as u64,
                        c.volume_years,
                    ),
                })
                .collect(),
            rebuilds: rb.len() as u64,
            rebuild_p50_hours: percentile(&rb, 0.5),
            rebuild_p99_hours: percentile(&rb, 0.99),
            rebuild_max_hours: rb.last().copied().unwrap_or(0.0),
            peak_rebuild_total: s.peak_total,
            peak_by_kind: by_kind,
            peak_top: peaks.into_iter().take(5).collect(),
            unrepairable_volumes: s.unrepairable_volumes,
            unrepaired_at_end: s.pending_at_end,
            arrivals: s.arrivals,
            rejected_arrivals: s.rejected,
            restore_failures: s.restore_failures,
            slice_failures: s.slice_failures,
            ure_corrected: s.ure_corrected,
            unavailable_volume_hours: s.unavailable_volume_hours,
            utilisation: s.samples.clone(),
            cumulative_losses: times
                .iter()
                .enumerate()
                .map(|(i, &t)| (t / 8760.0, i as u64 + 1))
                .collect(),
            errors: s.errors.clone(),
            events: s.events,
        }
    }
}

/// A whole run: the fleet, the hardware events and each policy's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Master seed.
    pub seed: u64,
    /// Simulated years.
    pub years: f64,
    /// Drives in the fleet.
    pub drives: usize,
    /// Raw capacity, bytes.
    pub capacity_bytes: u64,
    /// JBODs, racks and servers.
    pub jbods: usize,
    /// Racks.
    pub racks: usize,
    /// Servers.
    pub servers: usize,
    /// Hardware events (the same for every policy).
    pub hardware: Hardware,
    /// Per policy, in the configured order.
    pub policies: Vec<PolicyReport>,
}

fn bytes_per_sec(b: f64) -> String {
    if b >= 1e9 {
        format!("{} GB/s", human(b / 1e9))
    } else if b >= 1e6 || b == 0.0 {
        format!("{} MB/s", human(b / 1e6))
    } else {
        format!("{} kB/s", human(b / 1e3))
    }
}

impl Report {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "fleet: {} drives ({} PB raw), {} JBODs, {} racks, {} servers; {} years, seed {}",
            count(self.drives as u64),
            human(self.capacity_bytes as f64 / 1e15),
            count(self.jbods as u64),
            count(self.racks as u64),
            count(self.servers as u64),
            exact(self.years),
            self.seed
        );
        let h = &self.hardware;
        let _ = writeln!(
            o,
            "hardware: {} drive failures, {} JBOD outages, {} server outages, {} rack outages",
            count(h.drive_failures),
            count(h.jbod_failures),
            count(h.server_failures),
            count(h.rack_failures)
        );
        for p in &self.policies {
            let _ = writeln!(o, "\n== policy {} ==", p.policy);
            let _ = writeln!(
                o,
                "data loss: {} events ({} incidents) in {} volume-years = {}",
                count(p.loss.events),
                count(p.loss_incidents),
                human(p.loss.volume_years),
                p.loss.text(0, "volume-years", "95% CI")
            );
            let causes: Vec<String> = p
                .loss_by_cause
                .iter()
                .filter(|c| c.1 > 0)
                .map(|(c, n)| format!("{c} {}", count(*n)))
                .collect();
            if !causes.is_empty() {
                let _ = writeln!(o, "  by cause: {}", causes.join(", "));
            }
            for c in &p.classes {
                let _ = writeln!(
                    o,
                    "  {:<12} {:>6} events {}  [{}]",
                    c.name,
                    count(c.loss.events),
                    c.loss.text(10, "vol-yr", "CI"),
                    c.analysis
                );
            }
            let _ = writeln!(
                o,
                "rebuilds: {} done, p50 {} h, p99 {} h, max {} h; peak total {}",
                count(p.rebuilds),
                human(p.rebuild_p50_hours),
                human(p.rebuild_p99_hours),
                human(p.rebuild_max_hours),
                bytes_per_sec(p.peak_rebuild_total)
            );
            for k in &p.peak_by_kind {
                let _ = writeln!(
                    o,
                    "  peak rebuild traffic, kind {}: {} through {}",
                    k.kind,
                    bytes_per_sec(k.bytes_per_sec),
                    k.domain
                );
            }
            let (umin, umax) = p.utilisation.iter().fold((f64::MAX, 0.0f64), |a, s| {
                (a.0.min(s.utilisation), a.1.max(s.utilisation))
            });
            if let Some(last) = p.utilisation.last() {
                let _ = writeln!(
                    o,
                    "utilisation: {:.1}% at the end (range {:.1}–{:.1}%), {} volumes",
                    last.utilisation * 100.0,
                    umin * 100.0,
                    umax * 100.0,
                    count(last.volumes)
                );
            }
            let _ = writeln!(
                o,
                "unrepairable volumes: {} ({} still waiting at the end); arrivals {} (rejected {}), restores failed {}, slice allocations failed {}",
                count(p.unrepairable_volumes),
                count(p.unrepaired_at_end),
                count(p.arrivals),
                count(p.rejected_arrivals),
                count(p.restore_failures),
                count(p.slice_failures)
            );
            let _ = writeln!(
                o,
                "UREs corrected {}; volume-hours without attach server {}; {} events",
                count(p.ure_corrected),
                human(p.unavailable_volume_hours),
                count(p.events)
            );
            for (op, n, first) in &p.errors {
                let _ = writeln!(o, "  {op} failed {} times; first: {first}", count(*n));
            }
        }
        o
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
