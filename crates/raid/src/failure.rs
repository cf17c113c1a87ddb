//! Failure analysis: which failures lose data, minimal fatal sets, survival
//! of a failure domain, rebuild plans and reliability estimates.
//!
//! Data is lost exactly when some data can no longer be read or computed:
//! RAID0 when any member fails, RAID1 when all do, RAID4/5 when two do,
//! RAID6 when three do, and RAID10 when every copy of some chunk is on a
//! failed member (which depends on the layout, not only on the count: in a
//! 4-member `n2` array losing members 0 and 2 is survivable, 0 and 1 is not).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{RaidError, Result};
use crate::geometry::{Geometry, MemberContent};
use crate::layout::Layout;

/// Members grouped into named failure domains of several kinds, e.g.
/// `drive` → `jbod` → `rack`.
///
/// # Invariants
/// Every member has exactly one non-empty domain name per kind, and the
/// kinds nest: two members in the same domain of kind `k` are in the same
/// domain of every later kind (a JBOD sits in one rack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureDomains {
    kinds: Vec<String>,
    paths: Vec<Vec<String>>,
}

impl FailureDomains {
    /// `kinds` from the smallest to the largest domain; `member_paths[m][k]`
    /// names the domain of kind `kinds[k]` that holds member `m`.
    pub fn new(kinds: &[&str], member_paths: Vec<Vec<String>>) -> Result<Self> {
        if kinds.is_empty() {
            return Err(RaidError::BadDomains(
                "at least one domain kind is needed".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for k in kinds {
            if k.is_empty() || !seen.insert(*k) {
                return Err(RaidError::BadDomains(format!(
                    "domain kind `{k}` is empty or repeated"
                )));
            }
        }
        for (m, p) in member_paths.iter().enumerate() {
            if p.len() != kinds.len() {
                return Err(RaidError::BadDomains(format!(
                    "member {m} names {} domains but there are {} kinds",
                    p.len(),
                    kinds.len()
                )));
            }
            if let Some(k) = p.iter().position(|n| n.is_empty()) {
                return Err(RaidError::BadDomains(format!(
                    "member {m} has an empty `{}` domain name",
                    kinds[k]
                )));
            }
        }
        // Nesting: a domain's parent (next kind) must be unique.
        for k in 0..kinds.len().saturating_sub(1) {
            let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
            for (m, p) in member_paths.iter().enumerate() {
                if let Some(prev) = parent.insert(&p[k], &p[k + 1])
                    && prev != p[k + 1]
                {
                    return Err(RaidError::BadDomains(format!(
                        "{} `{}` lies in {} `{}` and `{}` (member {m}); domains must nest",
                        kinds[k],
                        p[k],
                        kinds[k + 1],
                        prev,
                        p[k + 1]
                    )));
                }
            }
        }
        Ok(FailureDomains {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            paths: member_paths,
        })
    }

    /// Number of members described.
    pub fn members(&self) -> usize {
        self.paths.len()
    }

    /// The domain kinds, smallest first.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    fn kind_index(&self, kind: &str) -> Result<usize> {
        self.kinds.iter().position(|k| k == kind).ok_or_else(|| {
            RaidError::BadDomains(format!(
                "unknown domain kind `{kind}`; known: {}",
                self.kinds.join(", ")
            ))
        })
    }

    /// Every domain of `kind` with its members, ordered by name.
    pub fn domains(&self, kind: &str) -> Result<Vec<(String, Vec<usize>)>> {
        let k = self.kind_index(kind)?;
        let mut map: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (m, p) in self.paths.iter().enumerate() {
            map.entry(&p[k]).or_default().push(m);
        }
        Ok(map.into_iter().map(|(n, v)| (n.to_string(), v)).collect())
    }

    /// The members in domain `name` of kind `kind`.
    pub fn members_of(&self, kind: &str, name: &str) -> Result<Vec<usize>> {
        let k = self.kind_index(kind)?;
        let v: Vec<usize> = (0..self.paths.len())
            .filter(|&m| self.paths[m][k] == name)
            .collect();
        if v.is_empty() {
            return Err(RaidError::BadDomains(format!("no {kind} named `{name}`")));
        }
        Ok(v)
    }
}

/// Failure analysis of one geometry.
#[derive(Debug, Clone)]
pub struct FailureModel {
    geometry: Geometry,
    /// RAID10: the distinct member sets that hold all copies of some chunk.
    copy_sets: Vec<BTreeSet<usize>>,
}

impl FailureModel {
    /// Analyse `geometry`.
    pub fn new(geometry: &Geometry) -> Self {
        let mut copy_sets = Vec::new();
        if let Layout::Raid10(_) = geometry.layout() {
            // The members of chunk c depend only on (c · near) mod members,
            // so the first `members` chunks show every copy set.
            let chunk = geometry.chunk_sectors();
            let chunks = geometry.array_sectors() / chunk;
            let mut seen = BTreeSet::new();
            for c in 0..chunks.min(geometry.members() as u64) {
                if let Ok(m) = geometry.map(c * chunk) {
                    let set: BTreeSet<usize> = m.copies.iter().map(|l| l.member).collect();
                    if seen.insert(set.clone()) {
                        copy_sets.push(set);
                    }
                }
            }
        }
        FailureModel {
            geometry: geometry.clone(),
            copy_sets,
        }
    }

    /// The geometry analysed.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn check_members(&self, failed: &[usize]) -> Result<BTreeSet<usize>> {
        let n = self.geometry.members();
        if let Some(&m) = failed.iter().find(|&&m| m >= n) {
            return Err(RaidError::OutOfRange {
                what: "failed member".into(),
                value: m as u64,
                limit: n as u64,
            });
        }
        Ok(failed.iter().copied().collect())
    }

    /// Why the failed set loses data, or `None` if it does not.
    fn loss_reason(&self, failed: &BTreeSet<usize>) -> Option<String> {
        let n = self.geometry.members();
        let k = failed.len();
        match self.geometry.layout() {
            Layout::Raid0(_) => (k >= 1).then(|| {
                "raid0 keeps a single copy of every chunk, so any failed member loses the chunks it held".to_string()
            }),
            Layout::Raid1 => (k >= n).then(|| {
                format!("raid1 keeps {n} copies, one per member, and every member failed")
            }),
            Layout::Raid4 | Layout::Raid5(_) => (k >= 2).then(|| {
                format!(
                    "{} keeps one parity block (P) per stripe, which rebuilds one missing member; {k} are missing",
                    self.geometry.layout().level()
                )
            }),
            Layout::Raid6(_) => (k >= 3).then(|| {
                format!("raid6 keeps two parity blocks (P and Q) per stripe, which rebuild two missing members; {k} are missing")
            }),
            Layout::Raid10(r) => self.copy_sets.iter().find(|s| s.is_subset(failed)).map(|s| {
                format!(
                    "raid10 {} keeps {} copies of every chunk, and all copies of some chunks are on failed members {s:?}",
                    r.mdadm_name(),
                    r.copies()
                )
            }),
        }
    }

    /// Whether losing the `failed` members loses data.
    pub fn loses_data(&self, failed: &[usize]) -> Result<bool> {
        let set = self.check_members(failed)?;
        Ok(self.loss_reason(&set).is_some())
    }

    /// Whether losing the named domains (pairs of kind and name) loses data.
    pub fn loses_data_domains(
        &self,
        domains: &FailureDomains,
        failed: &[(&str, &str)],
    ) -> Result<bool> {
        self.check_domains(domains)?;
        let mut members = Vec::new();
        for (kind, name) in failed {
            members.extend(domains.members_of(kind, name)?);
        }
        self.loses_data(&members)
    }

    fn check_domains(&self, domains: &FailureDomains) -> Result<()> {
        if domains.members() != self.geometry.members() {
            return Err(RaidError::BadDomains(format!(
                "domains describe {} members but the array has {}",
                domains.members(),
                self.geometry.members()
            )));
        }
        Ok(())
    }

    /// The minimal sets of `units` (each a set of members that fail
    /// together) whose joint failure loses data, smallest first, with at
    /// most `max_size` units per set and at most `limit` sets. The second
    /// value is true when `limit` cut the list short.
    fn minimal_fatal_units(
        &self,
        units: &[Vec<usize>],
        max_size: usize,
        limit: usize,
    ) -> (Vec<Vec<usize>>, bool) {
        let mut found: Vec<Vec<usize>> = Vec::new();
        let n = units.len();
        for size in 1..=max_size.min(n) {
            let mut idx: Vec<usize> = (0..size).collect();
            loop {
                if !found.iter().any(|f| f.iter().all(|u| idx.contains(u))) {
                    let members: BTreeSet<usize> =
                        idx.iter().flat_map(|&u| units[u].iter().copied()).collect();
                    if self.loss_reason(&members).is_some() {
                        if found.len() == limit {
                            return (found, true);
                        }
                        found.push(idx.clone());
                    }
                }
                // Next combination in lexicographic order.
                let mut i = size;
                while i > 0 && idx[i - 1] == n - size + i - 1 {
                    i -= 1;
                }
                if i == 0 {
                    break;
                }
                idx[i - 1] += 1;
                for j in i..size {
                    idx[j] = idx[j - 1] + 1;
                }
            }
        }
        (found, false)
    }

    /// Minimal fatal member sets of at most `max_size` members (at most
    /// `limit` sets; the flag says whether the list was cut short).
    pub fn minimal_fatal_sets(&self, max_size: usize, limit: usize) -> (Vec<Vec<usize>>, bool) {
        let units: Vec<Vec<usize>> = (0..self.geometry.members()).map(|m| vec![m]).collect();
        self.minimal_fatal_units(&units, max_size, limit)
    }

    /// Minimal fatal sets of domains of `kind` (by name).
    pub fn minimal_fatal_domain_sets(
        &self,
        domains: &FailureDomains,
        kind: &str,
        max_size: usize,
        limit: usize,
    ) -> Result<(Vec<Vec<String>>, bool)> {
        self.check_domains(domains)?;
        let list = domains.domains(kind)?;
        let units: Vec<Vec<usize>> = list.iter().map(|(_, m)| m.clone()).collect();
        let (sets, cut) = self.minimal_fatal_units(&units, max_size, limit);
        Ok((
            sets.into_iter()
                .map(|s| s.into_iter().map(|u| list[u].0.clone()).collect())
                .collect(),
            cut,
        ))
    }

    /// Does the array survive the loss of any one domain of `kind`?
    pub fn survives_any_one(&self, domains: &FailureDomains, kind: &str) -> Result<Survival> {
        self.check_domains(domains)?;
        let mut fatal = Vec::new();
        for (name, members) in domains.domains(kind)? {
            let set: BTreeSet<usize> = members.iter().copied().collect();
            if let Some(reason) = self.loss_reason(&set) {
                fatal.push(FatalDomain {
                    name,
                    members,
                    reason,
                });
            }
        }
        Ok(Survival {
            kind: kind.to_string(),
            survives: fatal.is_empty(),
            fatal,
        })
    }

    /// Plan the rebuild of member `target` while the members in `failed`
    /// (which should include `target`) are unavailable.
    pub fn rebuild_plan(&self, failed: &[usize], target: usize) -> Result<RebuildPlan> {
        let mut set = self.check_members(failed)?;
        self.check_members(&[target])?;
        set.insert(target);
        if let Some(detail) = self.loss_reason(&set) {
            return Err(RaidError::DataLost {
                failed: set.into_iter().collect(),
                detail,
            });
        }
        let g = &self.geometry;
        let write = g.used_sectors()[target];
        let mut per_source: BTreeMap<usize, u64> = BTreeMap::new();
        let mut ranges = Vec::new();
        match g.layout() {
            Layout::Raid0(_) => unreachable!("raid0 loses data on any failure"),
            Layout::Raid1 => {
                let src = (0..g.members())
                    .find(|m| !set.contains(m))
                    .unwrap_or_default();
                per_source.insert(src, write);
                ranges.push(ReadRange {
                    member: src,
                    start: 0,
                    sectors: write,
                });
            }
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                for m in (0..g.members()).filter(|m| !set.contains(m)) {
                    per_source.insert(m, g.used_sectors()[m]);
                    ranges.push(ReadRange {
                        member: m,
                        start: 0,
                        sectors: g.used_sectors()[m],
                    });
                }
            }
            Layout::Raid10(_) => {
                per_source = raid10_source_totals(g, &set, target, 4)?;
            }
        }
        Ok(RebuildPlan {
            target,
            failed: set.into_iter().collect(),
            write_sectors: write,
            sources: per_source
                .into_iter()
                .map(|(member, sectors)| SourceRead { member, sectors })
                .collect(),
            full_ranges: ranges,
        })
    }

    /// The chunk-sized reads that rebuild `plan.target` of a RAID10 array,
    /// in target order, computed lazily (md reads the first surviving copy).
    /// For other levels the plan's [`RebuildPlan::full_ranges`] already list every read.
    pub fn raid10_rebuild_reads<'a>(
        &'a self,
        plan: &'a RebuildPlan,
    ) -> impl Iterator<Item = RebuildRead> + 'a {
        let g = &self.geometry;
        let chunk = g.chunk_sectors().max(1);
        let rows = if matches!(g.layout(), Layout::Raid10(_)) {
            g.used_sectors()[plan.target] / chunk
        } else {
            0
        };
        let failed: BTreeSet<usize> = plan.failed.iter().copied().collect();
        (0..rows).filter_map(move |r| raid10_row_source(g, &failed, plan.target, r))
    }
}

impl FailureModel {
    /// The reads that rebuild `plan.target`, range by range, for every
    /// level, computed lazily in target order:
    /// * RAID1: the whole member from the first survivor;
    /// * RAID10: each chunk row from the first surviving copy (as
    ///   [`FailureModel::raid10_rebuild_reads`]);
    /// * RAID4/5/6: each stripe's chunk from the members its reconstruction
    ///   needs: every survivor for RAID4/5 and for RAID6 with two members
    ///   down; with only the target down, RAID6 leaves Q out when P can do
    ///   (a data or P target) and P out for a Q target — n − 2 reads where
    ///   md's resync reads all n − 1 survivors
    ///   ([`RebuildPlan::sources`] counts md's reads).
    ///
    /// [`FailureModel::rebuild_range_bytes`] gives the bytes these ranges
    /// read, without walking them.
    pub fn rebuild_ranges<'a>(
        &'a self,
        plan: &'a RebuildPlan,
    ) -> Box<dyn Iterator<Item = RebuildRange> + 'a> {
        let g = &self.geometry;
        let target = plan.target;
        let failed: BTreeSet<usize> = plan.failed.iter().copied().collect();
        match g.layout() {
            Layout::Raid0(_) => Box::new(std::iter::empty()),
            Layout::Raid1 => {
                let src = (0..g.members()).find(|m| !failed.contains(m));
                Box::new(src.into_iter().map(move |member| RebuildRange {
                    target_sector: 0,
                    sectors: plan.write_sectors,
                    content: MemberContent::Data {
                        logical: 0,
                        copy: target,
                    },
                    reads: vec![ReadRange {
                        member,
                        start: 0,
                        sectors: plan.write_sectors,
                    }],
                }))
            }
            Layout::Raid10(_) => Box::new(self.raid10_rebuild_reads(plan).map(move |r| {
                RebuildRange {
                    target_sector: r.target_sector,
                    sectors: r.sectors,
                    content: g
                        .unmap(target, r.target_sector)
                        .unwrap_or(MemberContent::Unused),
                    reads: vec![ReadRange {
                        member: r.source,
                        start: r.source_sector,
                        sectors: r.sectors,
                    }],
                }
            })),
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                let chunk = g.chunk_sectors();
                let only_target = failed.len() == 1;
                Box::new((0..g.stripes()).filter_map(move |s| {
                    let sl = g.stripe_layout(s).ok()?;
                    let start = s * chunk;
                    let skip = match sl.q {
                        Some(q) if only_target && target == q => Some(sl.p),
                        Some(q) if only_target => Some(q),
                        _ => None,
                    };
                    let reads = (0..g.members())
                        .filter(|m| !failed.contains(m) && Some(*m) != skip)
                        .map(|member| ReadRange {
                            member,
                            start,
                            sectors: chunk,
                        })
                        .collect();
                    Some(RebuildRange {
                        target_sector: start,
                        sectors: chunk,
                        content: g.unmap(target, start).ok()?,
                        reads,
                    })
                }))
            }
        }
    }

    /// Bytes read by [`FailureModel::rebuild_ranges`] for `plan`.
    pub fn rebuild_range_bytes(&self, plan: &RebuildPlan) -> u64 {
        let g = &self.geometry;
        match g.layout() {
            Layout::Raid0(_) => 0,
            Layout::Raid1 => plan.write_sectors * 512,
            Layout::Raid10(_) => plan.bytes_read(),
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                // Every stripe reads the same number of members: n − 1 for
                // RAID4/5, n − 2 for RAID6 (whichever one or two are down).
                let per_stripe = (g.members() - g.guaranteed_tolerance()) as u64;
                g.stripes() * g.chunk_sectors() * 512 * per_stripe
            }
        }
    }
}

/// One range of a rebuild: the target's `sectors` at `target_sector`,
/// computed from `reads` (a copy for RAID1/10, a stripe reconstruction for
/// RAID4/5/6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildRange {
    /// First sector on the member being rebuilt.
    pub target_sector: u64,
    /// Length in sectors (on the target and on every read).
    pub sectors: u64,
    /// What the target holds at `target_sector`.
    pub content: MemberContent,
    /// The member ranges to read, in member order.
    pub reads: Vec<ReadRange>,
}

/// One chunk-sized read of a RAID10 rebuild: copy `sectors` from `source`
/// at `source_sector` to the target member at `target_sector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildRead {
    /// Sector on the member being rebuilt.
    pub target_sector: u64,
    /// Member read from.
    pub source: usize,
    /// Sector on the source member.
    pub source_sector: u64,
    /// Length in sectors.
    pub sectors: u64,
}

fn raid10_row_source(
    g: &Geometry,
    failed: &BTreeSet<usize>,
    target: usize,
    row: u64,
) -> Option<RebuildRead> {
    let chunk = g.chunk_sectors();
    let s = row * chunk;
    match g.unmap(target, s).ok()? {
        MemberContent::Data { logical, .. } => {
            let m = g.map(logical).ok()?;
            let src = m.copies.iter().find(|l| !failed.contains(&l.member))?;
            Some(RebuildRead {
                target_sector: s,
                source: src.member,
                source_sector: src.sector,
                sectors: chunk,
            })
        }
        _ => None,
    }
}

/// Per-source read totals for a RAID10 rebuild. Within a segment (the whole
/// member for near/offset layouts, each far copy region for far layouts)
/// the source pattern repeats every `near * far` rows, so only the first
/// period and the last `tail_periods` periods are walked; the rest is
/// extrapolated.
fn raid10_source_totals(
    g: &Geometry,
    failed: &BTreeSet<usize>,
    target: usize,
    tail_periods: u64,
) -> Result<BTreeMap<usize, u64>> {
    let Layout::Raid10(r) = g.layout() else {
        return Ok(BTreeMap::new());
    };
    let chunk = g.chunk_sectors();
    let rows = g.used_sectors()[target] / chunk;
    let period = r.copies() as u64;
    let segments: Vec<(u64, u64)> = if r.far() > 1 && !r.offset() {
        let stride_rows = g.raid10_stride() / chunk;
        (0..u64::from(r.far()))
            .map(|f| (f * stride_rows, ((f + 1) * stride_rows).min(rows)))
            .chain(std::iter::once((u64::from(r.far()) * stride_rows, rows)))
            .filter(|(a, b)| a < b)
            .collect()
    } else {
        vec![(0, rows)]
    };
    let mut totals: BTreeMap<usize, u64> = BTreeMap::new();
    let add = |a: u64, b: u64, times: u64, totals: &mut BTreeMap<usize, u64>| -> Result<()> {
        for row in a..b {
            if let Some(rd) = raid10_row_source(g, failed, target, row) {
                *totals.entry(rd.source).or_default() += rd.sectors * times;
            } else if let Ok(MemberContent::Data { .. }) = g.unmap(target, row * chunk) {
                return Err(RaidError::DataLost {
                    failed: failed.iter().copied().collect(),
                    detail: format!("row {row} of member {target} has no surviving copy"),
                });
            }
        }
        Ok(())
    };
    for (a, b) in segments {
        let n = b - a;
        if n <= tail_periods.saturating_add(1).saturating_mul(period) {
            add(a, b, 1, &mut totals)?;
        } else {
            let full = (n - tail_periods * period) / period;
            add(a, a + period, full, &mut totals)?;
            add(a + full * period, b, 1, &mut totals)?;
        }
    }
    Ok(totals)
}

/// One domain whose loss alone loses data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalDomain {
    /// Domain name.
    pub name: String,
    /// Its members.
    pub members: Vec<usize>,
    /// What is lost.
    pub reason: String,
}

/// Answer to "does the array survive the loss of any one X?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survival {
    /// The domain kind asked about.
    pub kind: String,
    /// True when no single domain of that kind is fatal.
    pub survives: bool,
    /// The domains whose loss alone loses data.
    pub fatal: Vec<FatalDomain>,
}

/// Sectors to read from one surviving member during a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRead {
    /// Member.
    pub member: usize,
    /// Total sectors read from it.
    pub sectors: u64,
}

/// A contiguous read range on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    /// Member.
    pub member: usize,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
}

/// What to read to rebuild one member.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildPlan {
    /// Member being rebuilt.
    pub target: usize,
    /// Members unavailable during the rebuild (including the target).
    pub failed: Vec<usize>,
    /// Sectors written to the target.
    pub write_sectors: u64,
    /// Read totals per source member.
    pub sources: Vec<SourceRead>,
    /// For RAID1/4/5/6 the reads md's resync makes (whole used ranges of
    /// the sources); empty for RAID10. [`FailureModel::rebuild_ranges`]
    /// gives range-by-range reads for every level.
    pub full_ranges: Vec<ReadRange>,
}

/// Bandwidths for a rebuild-time estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildRates {
    /// Sustained bandwidth of each member in bytes/s (index = member).
    pub member_bytes_per_sec: Vec<f64>,
    /// md's resync ceiling (`/proc/sys/dev/raid/speed_limit_max`, default
    /// 200 000 KiB/s), in bytes/s of rebuilt data; `None` for no ceiling.
    pub speed_limit_max_bytes_per_sec: Option<f64>,
}

impl RebuildRates {
    /// Every member at `bytes_per_sec`, with md's default 200 000 KiB/s ceiling.
    pub fn uniform(members: usize, bytes_per_sec: f64) -> Self {
        RebuildRates {
            member_bytes_per_sec: vec![bytes_per_sec; members],
            speed_limit_max_bytes_per_sec: Some(200_000.0 * 1024.0),
        }
    }
}

/// A rebuild-time estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildEstimate {
    /// Estimated seconds.
    pub seconds: f64,
    /// The member (or `None`: md's speed limit) that bounds the rebuild.
    pub bottleneck: Option<usize>,
}

impl RebuildPlan {
    /// Total bytes read from all sources.
    pub fn bytes_read(&self) -> u64 {
        self.sources.iter().map(|s| s.sectors * 512).sum()
    }

    /// Estimated rebuild time: members work in parallel, so the time is the
    /// largest of (bytes written to the target / its bandwidth, capped by
    /// md's speed limit) and (bytes read from each source / its bandwidth).
    /// An estimate: it ignores foreground I/O, seeks and md's minimum-speed
    /// throttling.
    ///
    /// # Errors
    /// [`RaidError::BadEstimate`] naming the field when a member has no rate, a rate is not a
    /// positive finite number, or a rate is so small (subnormal) that the time it gives is not
    /// finite.
    pub fn estimate_time(&self, rates: &RebuildRates) -> Result<RebuildEstimate> {
        let bw = &rates.member_bytes_per_sec;
        let needed = self
            .sources
            .iter()
            .map(|s| s.member)
            .chain([self.target])
            .max()
            .unwrap_or(0);
        if bw.len() <= needed {
            return Err(RaidError::BadEstimate {
                field: "member_bytes_per_sec".into(),
                rule: format!("needs an entry for member {needed}, has {}", bw.len()),
            });
        }
        if let Some(i) = bw.iter().position(|b| !(b.is_finite() && *b > 0.0)) {
            return Err(RaidError::BadEstimate {
                field: format!("member_bytes_per_sec[{i}]"),
                rule: "must be a positive finite number".into(),
            });
        }
        // A positive rate can still be so small (subnormal) that the time overflows to infinity.
        let time = |bytes: f64, rate: f64, field: String| {
            let t = bytes / rate;
            if t.is_finite() {
                Ok(t)
            } else {
                Err(RaidError::BadEstimate {
                    field,
                    rule: format!(
                        "{rate:e} bytes/s is too slow: {bytes} bytes would take longer than \
                         any finite number of seconds"
                    ),
                })
            }
        };
        let write_bytes = self.write_sectors as f64 * 512.0;
        let target = time(
            write_bytes,
            bw[self.target],
            format!("member_bytes_per_sec[{}]", self.target),
        )?;
        let mut worst = (target, Some(self.target));
        if let Some(limit) = rates.speed_limit_max_bytes_per_sec {
            let field = "speed_limit_max_bytes_per_sec";
            if !(limit.is_finite() && limit > 0.0) {
                return Err(RaidError::BadEstimate {
                    field: field.into(),
                    rule: "must be a positive finite number".into(),
                });
            }
            let t = time(write_bytes, limit, field.into())?;
            if t > worst.0 {
                worst = (t, None);
            }
        }
        for s in &self.sources {
            let t = time(
                s.sectors as f64 * 512.0,
                bw[s.member],
                format!("member_bytes_per_sec[{}]", s.member),
            )?;
            if t > worst.0 {
                worst = (t, Some(s.member));
            }
        }
        Ok(RebuildEstimate {
            seconds: worst.0,
            bottleneck: worst.1,
        })
    }
}

/// Probability of at least one unrecoverable read error while reading
/// `bytes` at `ure_per_bit` errors per bit read (drive datasheets quote
/// 1e-14 or 1e-15): 1 − (1 − p)^(8·bytes), assuming independent errors.
/// An estimate: real errors cluster, and a RAID6 rebuild with one failed
/// member can still correct a URE from the remaining redundancy.
pub fn ure_probability(bytes: u64, ure_per_bit: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&ure_per_bit) {
        return Err(RaidError::BadEstimate {
            field: "ure_per_bit".into(),
            rule: format!("must lie in [0, 1), got {ure_per_bit}"),
        });
    }
    let bits = bytes as f64 * 8.0;
    Ok(-(bits * (-ure_per_bit).ln_1p()).exp_m1())
}

/// Inputs to the MTTDL estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliabilityParams {
    /// Mean time to failure of one member, hours.
    pub mttf_hours: f64,
    /// Mean time to repair (replace and rebuild) one member, hours.
    pub mttr_hours: f64,
}

/// Result of [`FailureModel::mttdl`].
#[derive(Debug, Clone, PartialEq)]
pub struct MttdlEstimate {
    /// Mean time to data loss, hours.
    pub hours: f64,
    /// For each state k (k members failed, data intact): the fraction of
    /// the next failures that are fatal.
    pub fatal_fraction: Vec<f64>,
    /// Whether the chain was cut at a state beyond which every further
    /// failure was counted as fatal (a conservative simplification used when
    /// enumerating larger failure sets would be too costly).
    pub truncated: bool,
}

impl FailureModel {
    /// Mean time to data loss from the standard Markov model: members fail
    /// independently at rate λ = 1/MTTF, one repair at a time at rate
    /// μ = 1/MTTR, state k = k members failed. From state k a failure is
    /// fatal with the fraction of fatal next failures averaged over the
    /// non-fatal k-sets (exact enumeration, so RAID10's layout matters).
    /// For RAID5 this reduces to ≈ MTTF²/(n(n−1)·MTTR), for RAID6 to
    /// ≈ MTTF³/(n(n−1)(n−2)·MTTR²). An estimate: it ignores UREs
    /// (see [`ure_probability`]), correlated failures and ageing.
    pub fn mttdl(&self, params: ReliabilityParams) -> Result<MttdlEstimate> {
        for (f, v) in [
            ("mttf_hours", params.mttf_hours),
            ("mttr_hours", params.mttr_hours),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(RaidError::BadEstimate {
                    field: f.into(),
                    rule: format!("must be a positive finite number, got {v}"),
                });
            }
        }
        let n = self.geometry.members();
        let lambda = 1.0 / params.mttf_hours;
        let mu = 1.0 / params.mttr_hours;
        // fatal fraction per state
        let mut frac = Vec::new();
        let mut truncated = false;
        // Enumeration work for state k: every k-set, every next failure,
        // every copy set. Beyond this budget the chain is cut.
        const BUDGET: u128 = 5_000_000;
        for k in 0..n {
            let f = match self.geometry.layout() {
                Layout::Raid10(_) => {
                    let work = binomial(n as u128, k as u128)
                        .saturating_mul((n - k) as u128)
                        .saturating_mul(self.copy_sets.len().max(1) as u128);
                    if work > BUDGET {
                        truncated = true;
                        break;
                    }
                    match self.raid10_fatal_fraction(k) {
                        Some(f) => f,
                        None => break,
                    }
                }
                _ => {
                    let fatal_next = self.loss_reason(&(0..=k).collect()).is_some();
                    if fatal_next { 1.0 } else { 0.0 }
                }
            };
            frac.push(f);
            if f >= 1.0 {
                break;
            }
        }
        if frac.is_empty() {
            return Err(RaidError::BadEstimate {
                field: "members".into(),
                rule: "too many members to enumerate failure states".into(),
            });
        }
        // Tridiagonal system: (a_k + d_k + m_k) T_k − a_k T_{k+1} − m_k T_{k−1} = 1.
        let states = frac.len();
        let mut lower = vec![0.0; states];
        let mut diag = vec![0.0; states];
        let mut upper = vec![0.0; states];
        let rhs = vec![1.0; states];
        for k in 0..states {
            let rate = (n - k) as f64 * lambda;
            let last = k + 1 == states;
            let a = if last { 0.0 } else { rate * (1.0 - frac[k]) };
            let d = if last { rate } else { rate * frac[k] };
            let m = if k == 0 { 0.0 } else { mu };
            diag[k] = a + d + m;
            upper[k] = -a;
            lower[k] = -m;
        }
        let t = solve_tridiagonal(&lower, &diag, &upper, &rhs);
        Ok(MttdlEstimate {
            hours: t[0],
            fatal_fraction: frac,
            truncated,
        })
    }

    /// Average over non-fatal k-sets of the fraction of fatal next failures,
    /// or `None` when every k-set is already fatal.
    fn raid10_fatal_fraction(&self, k: usize) -> Option<f64> {
        let n = self.geometry.members();
        let mut idx: Vec<usize> = (0..k).collect();
        let (mut sets, mut fatal_sum) = (0u64, 0u64);
        loop {
            let set: BTreeSet<usize> = idx.iter().copied().collect();
            if self.loss_reason(&set).is_none() {
                sets += 1;
                for m in (0..n).filter(|m| !set.contains(m)) {
                    let mut s2 = set.clone();
                    s2.insert(m);
                    if self.loss_reason(&s2).is_some() {
                        fatal_sum += 1;
                    }
                }
            }
            let mut i = k;
            while i > 0 && idx[i - 1] == n - k + i - 1 {
                i -= 1;
            }
            if i == 0 {
                break;
            }
            idx[i - 1] += 1;
            for j in i..k {
                idx[j] = idx[j - 1] + 1;
            }
        }
        (sets > 0).then(|| fatal_sum as f64 / (sets as f64 * (n - k) as f64))
    }
}

fn binomial(n: u128, k: u128) -> u128 {
    if k > n {
        return 0;
    }
    let mut r: u128 = 1;
    for i in 0..k.min(n - k) {
        r = r.saturating_mul(n - i) / (i + 1);
    }
    r
}

fn solve_tridiagonal(a: &[f64], b: &[f64], c: &[f64], d: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut cp = vec![0.0; n];
    let mut dp = vec![0.0; n];
    cp[0] = c[0] / b[0];
    dp[0] = d[0] / b[0];
    for i in 1..n {
        let m = b[i] - a[i] * cp[i - 1];
        cp[i] = c[i] / m;
        dp[i] = (d[i] - a[i] * dp[i - 1]) / m;
    }
    let mut x = vec![0.0; n];
    x[n - 1] = dp[n - 1];
    for i in (0..n - 1).rev() {
        x[i] = dp[i] - cp[i] * x[i + 1];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_values() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(16, 4), 1820);
        assert_eq!(binomial(3, 0), 1);
    }

    #[test]
    fn raid10_totals_extrapolation_matches_brute_force() {
        use crate::layout::Raid10Layout;
        for (n, f, o, disks) in [
            (2u8, 1u8, false, 3usize),
            (2, 1, false, 5),
            (1, 2, false, 3),
            (1, 2, true, 3),
            (2, 2, false, 5),
            (1, 3, true, 4),
            (3, 1, false, 7),
        ] {
            let g = Geometry::new(
                Layout::Raid10(Raid10Layout::new(n, f, o).unwrap()),
                8,
                &vec![8 * 301; disks],
            )
            .unwrap();
            let fm = FailureModel::new(&g);
            for target in 0..disks {
                let failed: BTreeSet<usize> = [target].into_iter().collect();
                let fast = raid10_source_totals(&g, &failed, target, 2).unwrap();
                let slow = raid10_source_totals(&g, &failed, target, u64::MAX / 8).unwrap();
                assert_eq!(fast, slow, "n{n} f{f} o{o} disks {disks} target {target}");
                let plan = fm.rebuild_plan(&[target], target).unwrap();
                let walked: u64 = fm.raid10_rebuild_reads(&plan).map(|r| r.sectors).sum();
                assert_eq!(walked, plan.sources.iter().map(|s| s.sectors).sum::<u64>());
            }
        }
    }
}
