//! Why a request cannot be placed, as data: the filters and their counts ([`FilterCount`]), what
//! blocked ([`Blocker`], with the numbers) and the single relaxations that would make the request
//! satisfiable ([`Relaxation`]). The messages operators read are derived from these values.
//!
//! This module also holds the refutation bounds: counting and matching arguments (per level, per
//! redundancy group, across groups in Hall's sense, and a max-flow that combines separation with
//! bandwidth or quota limits) that prove a request impossible without any search. The engine runs
//! them before its complete search, so a provably impossible request is refused in time linear in
//! the candidates and is never reported as "search gave up".

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::engine::{Compiled, Engine, PlacementError};
use crate::inventory::NONE;
use crate::model::DriveKind;
use crate::request::{Mode, Request};

/// Step budget of each search that checks one candidate relaxation while explaining a failure.
/// Relaxations are only listed when a placement is actually found under them.
const RELAXATION_BUDGET: u64 = 64;

/// A per-drive filter, in the order filters are applied and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Filter {
    /// Only healthy drives take new members.
    Health,
    /// `kinds`.
    Kind,
    /// `min_rpm` (HDDs only).
    MinRpm,
    /// `require_tags`.
    RequireTags,
    /// `exclude_tags`.
    ExcludeTags,
    /// `storage_groups`.
    StorageGroup,
    /// `transports`.
    Transport,
    /// `exclude_drives`.
    ExcludedDrive,
    /// `requisite` topology.
    Requisite,
    /// Reachability from `attach_server`.
    Reachability,
    /// Free space for one member.
    Capacity,
    /// Headroom for one member's bandwidth demand in every bandwidth domain of the drive.
    Bandwidth,
    /// Room for one member in the drive's storage-group quota.
    GroupQuota,
}

/// Every filter, in application order.
pub(crate) const FILTERS: [Filter; 13] = [
    Filter::Health,
    Filter::Kind,
    Filter::MinRpm,
    Filter::RequireTags,
    Filter::ExcludeTags,
    Filter::StorageGroup,
    Filter::Transport,
    Filter::ExcludedDrive,
    Filter::Requisite,
    Filter::Reachability,
    Filter::Capacity,
    Filter::Bandwidth,
    Filter::GroupQuota,
];

impl Filter {
    /// The filter's name in explanations and JSON (`health`, `kind`, `min_rpm`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Filter::Health => "health",
            Filter::Kind => "kind",
            Filter::MinRpm => "min_rpm",
            Filter::RequireTags => "require_tags",
            Filter::ExcludeTags => "exclude_tags",
            Filter::StorageGroup => "storage_group",
            Filter::Transport => "transport",
            Filter::ExcludedDrive => "exclude_drives",
            Filter::Requisite => "requisite_topology",
            Filter::Reachability => "attach_server_reachability",
            Filter::Capacity => "capacity",
            Filter::Bandwidth => "bandwidth_headroom",
            Filter::GroupQuota => "storage_group_quota",
        }
    }

    /// What dropping this filter means, as in "satisfiable without the ...".
    fn relaxation_phrase(self) -> &'static str {
        match self {
            Filter::Kind => "drive-kind filter",
            Filter::MinRpm => "min_rpm filter",
            Filter::RequireTags => "require_tags filter",
            Filter::ExcludeTags => "exclude_tags filter",
            Filter::StorageGroup => "storage_groups filter",
            Filter::Transport => "transports filter",
            Filter::Requisite => "requisite topology",
            Filter::Reachability => "attach_server constraint",
            Filter::Bandwidth => "bandwidth demand",
            Filter::Health => "health filter",
            Filter::ExcludedDrive => "exclude_drives list",
            Filter::Capacity => "capacity filter",
            Filter::GroupQuota => "storage-group quota",
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Drives removed by one filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterCount {
    /// The filter (serialized as its name).
    pub filter: Filter,
    /// Drives it removed (each drive is counted by the first filter that removes it).
    pub removed: usize,
}

/// What a separation constraint separates by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "by", content = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Scope {
    /// A failure-domain level of the hierarchy (`rack`, `jbod`, ...).
    Level(String),
    /// The drives' storage groups.
    StorageGroup,
    /// A drive attribute (`psu`, ...).
    Attribute(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Level(l) => write!(f, "level '{l}'"),
            Scope::StorageGroup => f.write_str("storage group"),
            Scope::Attribute(a) => write!(f, "attribute '{a}'"),
        }
    }
}

impl Scope {
    /// The short name used in relaxations ("rack" in "if rack separation were soft").
    fn short(&self) -> &str {
        match self {
            Scope::Level(l) => l,
            Scope::StorageGroup => "storage-group",
            Scope::Attribute(a) => a,
        }
    }
    /// What the domains of this scope are called in messages.
    fn domain_word(&self) -> String {
        match self {
            Scope::Level(l) => format!("'{l}'"),
            Scope::StorageGroup => "storage-group".into(),
            Scope::Attribute(a) => format!("'{a}'"),
        }
    }
}

/// One constraint that cannot be met, with the numbers that prove it.
///
/// Every variant but [`Blocker::NoCombination`] is a proof by counting: the request is impossible
/// whatever the search would do. `room` is how many of the `needed` members the constraint leaves
/// space for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "constraint", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Blocker {
    /// The filters leave fewer eligible drives than members to place (the counts per filter are
    /// in [`Explanation::removed`]).
    Filters {
        /// Drives passing every filter.
        eligible: usize,
        /// Members to place.
        needed: usize,
    },
    /// The request's requisite topology segments hold fewer eligible drives than members.
    Topology {
        /// Number of requisite segments.
        segments: usize,
        /// Eligible drives inside them.
        eligible: usize,
        /// Members to place.
        needed: usize,
    },
    /// Hard separation cannot be met: the eligible drives span too few domains.
    Separation {
        /// What is separated by.
        scope: Scope,
        /// Distinct domains the eligible drives span.
        domains: usize,
        /// Members that fit under the constraint.
        room: usize,
        /// Members to place (of `group`, or of the whole volume).
        needed: usize,
        /// The redundancy group that does not fit, or `None` when each group fits alone but
        /// the groups together do not (they compete for the same domains' drives).
        group: Option<usize>,
        /// Members of one group a domain may hold.
        per_domain: u32,
    },
    /// Hard bandwidth spreading cannot be met.
    Spreading {
        /// Bandwidth-domain kind.
        kind: String,
        /// Distinct domains of that kind behind the eligible drives.
        domains: usize,
        /// Members that fit.
        room: usize,
        /// Members to place.
        needed: usize,
        /// Members of the volume a domain may hold.
        per_domain: u32,
    },
    /// The bandwidth headroom of the domains of one kind cannot carry every member's demand.
    Bandwidth {
        /// Bandwidth-domain kind.
        kind: String,
        /// Distinct domains of that kind behind the eligible drives.
        domains: usize,
        /// Members whose demand fits.
        room: usize,
        /// Members to place.
        needed: usize,
        /// Demand per member, bytes/s.
        demand: u64,
    },
    /// Storage-group quotas leave room for too few members.
    Quota {
        /// Storage groups with a quota holding eligible drives.
        groups: usize,
        /// Members that fit.
        room: usize,
        /// Members to place.
        needed: usize,
        /// Bytes per member.
        size: u64,
    },
    /// Constraints that each leave enough room alone cannot be met together (a max-flow over
    /// redundancy groups, their domains, drives and the limits of `constraints`).
    Combined {
        /// The constraints combined, e.g. `["rack separation", "uplink bandwidth spreading"]`.
        constraints: Vec<String>,
        /// Members that fit under all of them.
        room: usize,
        /// Members to place.
        needed: usize,
    },
    /// A few scarce domains (bandwidth domains short of headroom, storage groups short of
    /// quota) can take at most their room of members between them, and the eligible drives in
    /// none of them fit too few of the others under the hard per-group limits: `room` is
    /// `elsewhere` plus the scarce domains' rooms. This catches limits that each leave enough
    /// room alone and in pairs but not all together (rack separation, one uplink's headroom and
    /// one group's quota, say).
    Scarce {
        /// The scarce domains, each with the members it has room for.
        scarce: Vec<ScarceDomain>,
        /// Eligible drives in none of the scarce domains.
        outside: usize,
        /// Members those drives can take under `limits`.
        elsewhere: usize,
        /// The hard per-group limits on those drives (e.g. `["rack separation"]`); empty when
        /// only their number counts.
        limits: Vec<String>,
        /// Members that fit under all of them.
        room: usize,
        /// Members to place.
        needed: usize,
    },
    /// No bound proves it, but the complete search found no placement.
    NoCombination,
}

/// A domain whose room limits a [`Blocker::Scarce`] bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScarceDomain {
    /// The limit, e.g. `uplink bandwidth headroom` or `storage-group quotas`.
    pub constraint: String,
    /// The bandwidth domain or storage group.
    pub domain: String,
    /// Members it has room for.
    pub room: usize,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::Filters { eligible, needed } => {
                write!(f, "only {eligible} eligible drives for {needed} members")
            }
            Blocker::Topology {
                segments,
                eligible,
                needed,
            } => write!(
                f,
                "requisite topology ({segments} segment(s)) holds {eligible} eligible drives for {needed} members"
            ),
            Blocker::Separation {
                scope,
                domains,
                room,
                needed,
                group,
                per_domain,
            } => {
                write!(
                    f,
                    "hard separation at {scope} cannot be met: eligible drives span {domains} {} domain(s), room for {room} of the {needed} members of ",
                    scope.domain_word()
                )?;
                match group {
                    Some(g) => write!(f, "group {g} (at most {per_domain} per domain)"),
                    None => write!(
                        f,
                        "all groups together (at most {per_domain} per domain per group)"
                    ),
                }
            }
            Blocker::Spreading {
                kind,
                domains,
                room,
                needed,
                per_domain,
            } => write!(
                f,
                "hard bandwidth spreading over '{kind}' cannot be met: eligible drives sit behind {domains} such domain(s), room for {room} of {needed} members (at most {per_domain} per domain)"
            ),
            Blocker::Bandwidth {
                kind,
                domains,
                room,
                needed,
                demand,
            } => write!(
                f,
                "bandwidth headroom of '{kind}' domains cannot be met: eligible drives sit behind {domains} such domain(s) with headroom for {room} of {needed} members at {demand} B/s each"
            ),
            Blocker::Quota {
                groups,
                room,
                needed,
                size,
            } => write!(
                f,
                "storage-group quotas cannot be met: {groups} quota group(s) and unlimited drives have room for {room} of {needed} members of {size} bytes"
            ),
            Blocker::Combined {
                constraints,
                room,
                needed,
            } => write!(
                f,
                "hard constraints cannot be met together: {} leave room for {room} of {needed} members",
                constraints.join(" with ")
            ),
            Blocker::Scarce {
                scarce,
                outside,
                elsewhere,
                limits,
                room,
                needed,
            } => {
                f.write_str("hard constraints cannot be met together: ")?;
                for (i, x) in scarce.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(
                        f,
                        "{sep}'{}' ({}) has room for {}",
                        x.domain, x.constraint, x.room
                    )?;
                }
                write!(
                    f,
                    " member(s), and the {outside} eligible drive(s) outside {} fit {elsewhere}",
                    if scarce.len() == 1 { "it" } else { "them" }
                )?;
                if !limits.is_empty() {
                    write!(f, " under {}", limits.join(" and "))?;
                }
                write!(f, ": room for {room} of {needed} members")
            }
            Blocker::NoCombination => {
                f.write_str("no combination of eligible drives meets all hard constraints together")
            }
        }
    }
}

/// One change to the request under which it would be satisfiable now (a placement was found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "relax", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Relaxation {
    /// The hard separation by `scope` made soft.
    SoftSeparation {
        /// What it separates by.
        scope: Scope,
    },
    /// Every hard separation made soft (listed only when no single relaxation helps).
    AllSeparationSoft,
    /// The hard bandwidth spreading over `kind` made soft.
    SoftSpreading {
        /// Bandwidth-domain kind.
        kind: String,
    },
    /// The request without this filter's field.
    WithoutFilter {
        /// The filter dropped.
        filter: Filter,
    },
    /// The request without its bandwidth demand.
    WithoutBandwidthDemand,
}

impl fmt::Display for Relaxation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Relaxation::SoftSeparation { scope } => {
                write!(f, "satisfiable if {} separation were soft", scope.short())
            }
            Relaxation::AllSeparationSoft => {
                f.write_str("satisfiable if all separation constraints were soft")
            }
            Relaxation::SoftSpreading { kind } => {
                write!(f, "satisfiable if {kind} bandwidth spreading were soft")
            }
            Relaxation::WithoutFilter { filter } => {
                write!(f, "satisfiable without the {}", filter.relaxation_phrase())
            }
            Relaxation::WithoutBandwidthDemand => {
                f.write_str("satisfiable without the bandwidth demand")
            }
        }
    }
}

impl Relaxation {
    /// The request with this relaxation applied.
    pub fn apply(&self, req: &Request) -> Request {
        let mut r = req.clone();
        match self {
            Relaxation::SoftSeparation { scope } => {
                for s in &mut r.separation {
                    if s.scope() == *scope {
                        s.mode = Mode::Soft;
                    }
                }
            }
            Relaxation::AllSeparationSoft => {
                for s in &mut r.separation {
                    s.mode = Mode::Soft;
                }
            }
            Relaxation::SoftSpreading { kind } => {
                for s in &mut r.bandwidth_spread {
                    if s.kind == *kind {
                        s.mode = Mode::Soft;
                    }
                }
            }
            Relaxation::WithoutBandwidthDemand => r.bandwidth.0 = 0,
            Relaxation::WithoutFilter { filter } => match filter {
                Filter::Kind => r.kinds = vec![DriveKind::Hdd, DriveKind::Ssd, DriveKind::Nvme],
                Filter::MinRpm => r.min_rpm = None,
                Filter::RequireTags => r.require_tags.clear(),
                Filter::ExcludeTags => r.exclude_tags.clear(),
                Filter::StorageGroup => r.storage_groups.clear(),
                Filter::Transport => r.transports = None,
                Filter::Requisite => r.requisite.clear(),
                Filter::Reachability => r.attach_server = None,
                Filter::Bandwidth => r.bandwidth.0 = 0,
                Filter::ExcludedDrive => r.exclude_drives.clear(),
                // Not request fields: offered as relaxations never.
                Filter::Health | Filter::Capacity | Filter::GroupQuota => {}
            },
        }
        r
    }
}

/// Why a request could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Request label.
    pub request: String,
    /// Drives in the inventory.
    pub drives: usize,
    /// Drives removed per filter, in filter order (filters that removed none are omitted).
    pub removed: Vec<FilterCount>,
    /// Drives passing every filter.
    pub eligible: usize,
    /// Members that had to be placed (pinned members excluded).
    pub needed: usize,
    /// Constraints that cannot be met, with the numbers.
    pub blocked: Vec<Blocker>,
    /// Single relaxations under which the request would be satisfiable.
    pub relaxations: Vec<Relaxation>,
}

impl Explanation {
    /// Whether the explanation proves the request impossible by a bound (rather than by an
    /// exhausted or abandoned search).
    pub fn proven(&self) -> bool {
        self.blocked
            .iter()
            .any(|b| !matches!(b, Blocker::NoCombination))
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} drives", self.drives)?;
        if !self.removed.is_empty() {
            let parts: Vec<String> = self
                .removed
                .iter()
                .map(|c| format!("{} {}", c.filter, c.removed))
                .collect();
            write!(f, "; removed by filter: {}", parts.join(", "))?;
        }
        write!(
            f,
            "; {} eligible for {} members",
            self.eligible, self.needed
        )?;
        for b in &self.blocked {
            write!(f, "; {b}")?;
        }
        if self.relaxations.is_empty() {
            write!(f, "; no single relaxation helps")
        } else {
            for r in &self.relaxations {
                write!(f, "; {r}")?;
            }
            Ok(())
        }
    }
}

/// A small max-flow network (Dinic would be overkill: flows are at most a few thousand units and
/// every augmentation adds at least one).
struct Flow {
    head: Vec<usize>,
    next: Vec<usize>,
    to: Vec<usize>,
    cap: Vec<u32>,
}

impl Flow {
    fn new(nodes: usize) -> Self {
        Flow {
            head: vec![usize::MAX; nodes],
            next: Vec::new(),
            to: Vec::new(),
            cap: Vec::new(),
        }
    }
    fn node(&mut self) -> usize {
        self.head.push(usize::MAX);
        self.head.len() - 1
    }
    fn edge(&mut self, a: usize, b: usize, c: u32) {
        for (x, y, cc) in [(a, b, c), (b, a, 0)] {
            self.to.push(y);
            self.cap.push(cc);
            self.next.push(self.head[x]);
            self.head[x] = self.to.len() - 1;
        }
    }
    /// Maximum flow from `s` to `t`, stopping once `limit` is reached.
    fn max_flow(&mut self, s: usize, t: usize, limit: u32) -> u32 {
        let n = self.head.len();
        let mut total = 0;
        let mut prev = vec![usize::MAX; n];
        let mut queue = Vec::with_capacity(n);
        while total < limit {
            prev.iter_mut().for_each(|p| *p = usize::MAX);
            queue.clear();
            queue.push(s);
            prev[s] = usize::MAX - 1;
            let mut qi = 0;
            while qi < queue.len() && prev[t] == usize::MAX {
                let x = queue[qi];
                qi += 1;
                let mut e = self.head[x];
                while e != usize::MAX {
                    let y = self.to[e];
                    if self.cap[e] > 0 && prev[y] == usize::MAX {
                        prev[y] = e;
                        queue.push(y);
                    }
                    e = self.next[e];
                }
            }
            if prev[t] == usize::MAX {
                break;
            }
            let mut push = limit - total;
            let mut y = t;
            while y != s {
                let e = prev[y];
                push = push.min(self.cap[e]);
                y = self.to[e ^ 1];
            }
            let mut y = t;
            while y != s {
                let e = prev[y];
                self.cap[e] -= push;
                self.cap[e ^ 1] += push;
                y = self.to[e ^ 1];
            }
            total += push;
        }
        total
    }
}

/// A limit on the members of one redundancy group per domain: a hard separation (a level,
/// the storage group, an attribute) or a hard bandwidth spreading counted per group.
#[derive(Debug, Clone, Copy)]
struct GroupLimit {
    /// Bandwidth kind (`true`) or separation dimension.
    bw: bool,
    key: u16,
    /// Members of one group a domain may hold.
    cap: u32,
}

impl GroupLimit {
    /// The drive's domain under this limit, or `NONE` (unconstrained).
    fn of(&self, inv: &crate::inventory::Inventory, d: u32) -> u32 {
        if self.bw {
            inv.bw_of_kind(d, self.key)
        } else {
            inv.sep_key(d, self.key)
        }
    }
    fn name(&self, inv: &crate::inventory::Inventory) -> String {
        if self.bw {
            format!(
                "{} bandwidth spreading per group",
                inv.ix.bw_kinds[self.key as usize]
            )
        } else {
            format!("{} separation", inv.scope_of(self.key).short())
        }
    }
}

/// The hard per-group limits of a request.
fn group_limits(c: &Compiled) -> Vec<GroupLimit> {
    c.seps
        .iter()
        .filter(|s| s.1)
        .map(|s| GroupLimit {
            bw: false,
            key: s.0,
            cap: c.cap,
        })
        .chain(c.spreads.iter().filter(|s| s.2 && s.3).map(|s| GroupLimit {
            bw: true,
            key: s.0,
            cap: s.1,
        }))
        .collect()
}

/// Per-drive limit of one "sink-side" dimension of the flow bound: each drive belongs to at most
/// one bucket (a bandwidth domain of one kind, or a quota group) with a member capacity.
struct Buckets {
    name: String,
    /// Bucket of each candidate (index into `room`), or `None` when unconstrained.
    of: Vec<Option<usize>>,
    room: Vec<u32>,
    /// The domain (bandwidth domain, storage group) of each bucket, for explanations; empty
    /// for the per-group limits of a single redundancy group.
    ids: Vec<u32>,
    /// Whether `ids` are storage groups (else bandwidth domains).
    quota: bool,
}

/// Max flow source → bucket of `a` (its room) → drives' (bucket of `a`, bucket of `b`) pairs
/// (as many members as drives with that pair) → bucket of `b` (its room) → sink; unconstrained
/// drives pass through an unlimited bucket.
fn pair_bound(a: &Buckets, b: &Buckets, needed: usize) -> usize {
    pair_flow(a, b, needed).0
}

/// [`pair_bound`]'s flow value and how many members each (bucket, bucket) pair takes.
fn pair_flow(a: &Buckets, b: &Buckets, needed: usize) -> (usize, HashMap<(usize, usize), u32>) {
    let mut f = Flow::new(2);
    let (s, t) = (0, 1);
    let cap = needed as u32;
    let side = |f: &mut Flow, room: &[u32], source: bool| -> Vec<usize> {
        room.iter()
            .chain(std::iter::once(&u32::MAX))
            .map(|&r| {
                let n = f.node();
                if source {
                    f.edge(s, n, r.min(cap));
                } else {
                    f.edge(n, t, r.min(cap));
                }
                n
            })
            .collect()
    };
    let an = side(&mut f, &a.room, true);
    let bn = side(&mut f, &b.room, false);
    // Ordered, so that the flow (and the placement built from it) is deterministic.
    let mut pairs: std::collections::BTreeMap<(usize, usize), u32> = Default::default();
    for (x, y) in a.of.iter().zip(&b.of) {
        let key = (x.unwrap_or(a.room.len()), y.unwrap_or(b.room.len()));
        *pairs.entry(key).or_default() += 1;
    }
    let mut edges = Vec::with_capacity(pairs.len());
    for (&(x, y), &k) in &pairs {
        f.edge(an[x], bn[y], k);
        edges.push(((x, y), f.to.len() - 2, k));
    }
    let value = f.max_flow(s, t, cap) as usize;
    let used = edges
        .into_iter()
        .map(|(key, e, k)| (key, k - f.cap[e]))
        .filter(|&(_, n)| n > 0)
        .collect();
    (value, used)
}

impl Engine {
    /// Counting and matching bounds over the candidates (eligible drives, pinned ones
    /// excluded). Returns the constraints proven impossible; empty when no bound proves it.
    pub(crate) fn refute(&self, c: &Compiled, cands: &[u32]) -> Vec<Blocker> {
        let inv = &self.inv;
        let needed = c.free_members();
        let mut out = Vec::new();
        if needed == 0 {
            return out;
        }
        if cands.len() < needed {
            out.push(Blocker::Filters {
                eligible: cands.len(),
                needed,
            });
            if !c.requisite.is_empty() {
                out.push(Blocker::Topology {
                    segments: c.requisite.len(),
                    eligible: cands.len(),
                    needed,
                });
            }
            return out;
        }
        let groups = c.n / c.group_size;
        let need_g = c.need_per_group();
        // Per-group limits (hard separations, hard per-group spreading): each group alone,
        // then all groups together.
        let limits = group_limits(c);
        for &lim in &limits {
            let mut per: HashMap<u32, u32> = HashMap::new();
            let mut unconstrained = 0usize;
            for &d in cands {
                match lim.of(inv, d) {
                    NONE => unconstrained += 1,
                    x => *per.entry(x).or_default() += 1,
                }
            }
            let blocker = |domains: usize, room: usize, needed: usize, group: Option<usize>| {
                if lim.bw {
                    Blocker::Spreading {
                        kind: inv.ix.bw_kinds[lim.key as usize].clone(),
                        domains,
                        room,
                        needed,
                        per_domain: lim.cap,
                    }
                } else {
                    Blocker::Separation {
                        scope: inv.scope_of(lim.key),
                        domains,
                        room,
                        needed,
                        group,
                        per_domain: lim.cap,
                    }
                }
            };
            let left = |g: usize, x: u32| {
                let used = (g * c.group_size..(g + 1) * c.group_size)
                    .filter(|&i| c.pins[i] != NONE && lim.of(inv, c.pins[i]) == x)
                    .count() as u32;
                lim.cap.saturating_sub(used)
            };
            let mut alone_ok = true;
            for (g, &need) in need_g.iter().enumerate() {
                if need == 0 {
                    continue;
                }
                let room = unconstrained
                    + per
                        .iter()
                        .map(|(&x, &k)| k.min(left(g, x)) as usize)
                        .sum::<usize>();
                if room < need {
                    out.push(blocker(per.len(), room, need, Some(g)));
                    alone_ok = false;
                    break;
                }
            }
            if alone_ok && groups > 1 {
                let room = unconstrained
                    + per
                        .iter()
                        .map(|(&x, &k)| {
                            let slots: u32 = need_g
                                .iter()
                                .enumerate()
                                .map(|(g, &need)| left(g, x).min(need as u32))
                                .sum();
                            k.min(slots) as usize
                        })
                        .sum::<usize>();
                if room < needed {
                    out.push(blocker(per.len(), room, needed, None));
                }
            }
        }
        let buckets = self.buckets(c, cands);
        for (b, blocker) in &buckets {
            let mut per = vec![0u32; b.room.len()];
            let mut unconstrained = 0usize;
            for o in &b.of {
                match o {
                    Some(i) => per[*i] += 1,
                    None => unconstrained += 1,
                }
            }
            let room = unconstrained
                + per
                    .iter()
                    .zip(&b.room)
                    .map(|(&k, &r)| k.min(r) as usize)
                    .sum::<usize>();
            if room < needed {
                let domains = per.iter().filter(|&&k| k > 0).count();
                out.push(blocker(domains, room, needed));
            }
        }
        if !out.is_empty() {
            return out;
        }
        // With one redundancy group left, its per-group limits (separations, per-group
        // spreading) are limits on the whole request: they join the sink-side limits.
        let single: Vec<Buckets> = if need_g.iter().filter(|&&n| n > 0).count() == 1 {
            let g = need_g.iter().position(|&n| n > 0).unwrap_or(0);
            limits
                .iter()
                .map(|lim| {
                    let mut index: HashMap<u32, usize> = HashMap::new();
                    let mut room = Vec::new();
                    let of = cands
                        .iter()
                        .map(|&d| match lim.of(inv, d) {
                            NONE => None,
                            x => Some(*index.entry(x).or_insert_with(|| {
                                let used = (g * c.group_size..(g + 1) * c.group_size)
                                    .filter(|&m| c.pins[m] != NONE && lim.of(inv, c.pins[m]) == x)
                                    .count() as u32;
                                room.push(lim.cap.saturating_sub(used));
                                room.len() - 1
                            })),
                        })
                        .collect();
                    Buckets {
                        name: lim.name(inv),
                        of,
                        room,
                        ids: Vec::new(),
                        quota: false,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let all_sinks: Vec<&Buckets> = buckets.iter().map(|(b, _)| b).chain(&single).collect();
        // Two limits at once (a bandwidth kind and the quotas, two kinds, a separation and a
        // spreading of a single group, ...): a transport problem from one's buckets through the
        // drives' (bucket, bucket) pairs to the other's.
        for (i, a) in all_sinks.iter().enumerate() {
            for b in &all_sinks[i + 1..] {
                let room = pair_bound(a, b, needed);
                if room < needed {
                    out.push(Blocker::Combined {
                        constraints: vec![a.name.clone(), b.name.clone()],
                        room,
                        needed,
                    });
                    return out;
                }
            }
        }
        // Max-flow bounds: the hard separation levels per group, then each sink-side limit.
        let hard_levels = limits;
        if cands.len().saturating_mul(groups) > 200_000 {
            return out;
        }
        let sinks: Vec<Option<&Buckets>> = std::iter::once(None)
            .chain(buckets.iter().map(|(b, _)| Some(b)))
            .chain(single.iter().map(Some))
            .collect();
        // The chain of every hard level is exact for nested levels (rack, then JBOD) but, for
        // levels that cut across each other (racks and power supplies), weaker than one level
        // alone: try each level alone against each sink-side limit too.
        let mut chains: Vec<Vec<GroupLimit>> = vec![hard_levels.clone()];
        if hard_levels.len() > 1 {
            chains.extend(hard_levels.iter().map(|&l| vec![l]));
        }
        for chain in &chains {
            for &sink in &sinks {
                if chain.is_empty() || (sink.is_none() && chain.len() < 2) {
                    continue;
                }
                let (room, _) = self.flow_bound(c, cands, &need_g, chain, sink, needed);
                if room < needed {
                    let mut constraints: Vec<String> = chain.iter().map(|l| l.name(inv)).collect();
                    if let Some(b) = sink {
                        constraints.push(b.name.clone());
                    }
                    out.push(Blocker::Combined {
                        constraints,
                        room,
                        needed,
                    });
                    return out;
                }
            }
        }
        if let Some(b) = self.scarce_bound(c, cands, &need_g, &chains, &buckets, &single, needed) {
            out.push(b);
        }
        out
    }

    /// The scarce-domain bound: for a set `T` of sink-side buckets (bandwidth domains, quota
    /// groups) whose room is below their drive count, every placement puts at most `room(T)`
    /// members on drives in a bucket of `T` (each such member takes room in one of them) and
    /// at most `F` on the other drives, where `F` is the max flow of the hard per-group
    /// limits over those drives alone. So `F + room(T) < needed` proves the request
    /// impossible. The pair and flow bounds are exact for two limits at once; this one catches
    /// three or more (a separation, one uplink's headroom and one group's quota), which no
    /// flow models exactly. `T` starts as every scarce bucket and drops, one pass, each bucket
    /// whose removal lowers the bound.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn scarce_bound(
        &self,
        c: &Compiled,
        cands: &[u32],
        need_g: &[usize],
        chains: &[Vec<GroupLimit>],
        buckets: &[(Buckets, Box<dyn Fn(usize, usize, usize) -> Blocker>)],
        single: &[Buckets],
        needed: usize,
    ) -> Option<Blocker> {
        /// Scarce buckets considered at most: the bound costs a few max flows per bucket.
        const MAX_SCARCE: usize = 16;
        let mut scarce: Vec<(usize, usize)> = Vec::new();
        for (p, (b, _)) in buckets.iter().enumerate() {
            let mut count = vec![0u32; b.room.len()];
            for &o in b.of.iter().flatten() {
                count[o] += 1;
            }
            for (i, (&r, &k)) in b.room.iter().zip(&count).enumerate() {
                if k > r && (r as usize) < needed {
                    scarce.push((p, i));
                    if scarce.len() > MAX_SCARCE {
                        return None;
                    }
                }
            }
        }
        if scarce.is_empty() {
            return None;
        }
        let groups = need_g.iter().filter(|&&n| n > 0).count().max(1);
        let work = (scarce.len() + 1) * (chains.len() + single.len().pow(2)) * cands.len() * groups;
        if work > 4_000_000 {
            return None;
        }
        let inv = &self.inv;
        // The bound for the scarce buckets `on` (flags over `scarce`): (value, members the
        // other drives take, those drives, the limits that bound them).
        let value = |on: &[bool]| -> (usize, usize, usize, Vec<String>) {
            let mut inside = vec![false; cands.len()];
            let mut room = 0usize;
            for (&(p, i), _) in scarce.iter().zip(on).filter(|(_, on)| **on) {
                room += buckets[p].0.room[i] as usize;
                for (k, o) in buckets[p].0.of.iter().enumerate() {
                    if *o == Some(i) {
                        inside[k] = true;
                    }
                }
            }
            let keep: Vec<usize> = (0..cands.len()).filter(|&k| !inside[k]).collect();
            let outside: Vec<u32> = keep.iter().map(|&k| cands[k]).collect();
            let mut best = (outside.len().min(needed), Vec::new());
            for chain in chains.iter().filter(|ch| !ch.is_empty()) {
                let (f, _) = self.flow_bound(c, &outside, need_g, chain, None, needed);
                if f < best.0 {
                    best = (f, chain.iter().map(|l| l.name(inv)).collect());
                }
            }
            // One redundancy group: its limits in pairs are exact (levels that cut across
            // each other, such as racks and power supplies).
            let only: Vec<Buckets> = single
                .iter()
                .map(|b| Buckets {
                    name: b.name.clone(),
                    of: keep.iter().map(|&k| b.of[k]).collect(),
                    room: b.room.clone(),
                    ids: Vec::new(),
                    quota: false,
                })
                .collect();
            for (i, a) in only.iter().enumerate() {
                for b in &only[i + 1..] {
                    let f = pair_bound(a, b, needed);
                    if f < best.0 {
                        best = (f, vec![a.name.clone(), b.name.clone()]);
                    }
                }
            }
            (best.0 + room, best.0, outside.len(), best.1)
        };
        let mut on = vec![true; scarce.len()];
        let mut best = value(&on);
        for i in 0..scarce.len() {
            if best.0 < needed {
                break;
            }
            on[i] = false;
            let v = value(&on);
            if v.0 < best.0 {
                best = v;
            } else {
                on[i] = true;
            }
        }
        let (room, elsewhere, outside, limits) = best;
        if room >= needed {
            return None;
        }
        let scarce = scarce
            .iter()
            .zip(&on)
            .filter(|(_, on)| **on)
            .map(|(&(p, i), _)| {
                let b = &buckets[p].0;
                let id = b.ids[i] as usize;
                ScarceDomain {
                    constraint: b.name.clone(),
                    domain: if b.quota {
                        inv.spec.storage_groups[id].id.to_string()
                    } else {
                        inv.spec.bandwidth_domains[id].id.to_string()
                    },
                    room: b.room[i] as usize,
                }
            })
            .collect();
        Some(Blocker::Scarce {
            scarce,
            outside,
            elsewhere,
            limits,
            room,
            needed,
        })
    }

    /// The sink-side limits: for each bandwidth kind under a hard spreading or a bandwidth
    /// demand, each domain's member room; for storage-group quotas, each group's member room.
    /// Each comes with the blocker to report when its counting bound fails.
    #[allow(clippy::type_complexity)] // a list of (limit, blocker constructor) pairs
    fn buckets(
        &self,
        c: &Compiled,
        cands: &[u32],
    ) -> Vec<(Buckets, Box<dyn Fn(usize, usize, usize) -> Blocker>)> {
        let inv = &self.inv;
        let mut out: Vec<(Buckets, Box<dyn Fn(usize, usize, usize) -> Blocker>)> = Vec::new();
        let pins: Vec<u32> = c.pins.iter().copied().filter(|&p| p != NONE).collect();
        let unloaded_pins: &[u32] = if c.pins_loaded { &[] } else { &pins };
        for k in 0..inv.ix.bw_kinds.len() as u16 {
            let spread = c
                .spreads
                .iter()
                .filter(|s| s.0 == k && s.2 && !s.3)
                .map(|s| s.1)
                .min();
            let mut index: HashMap<u32, usize> = HashMap::new();
            let mut of = Vec::with_capacity(cands.len());
            let mut bw_room = Vec::new();
            let mut sp_room = Vec::new();
            let mut ids = Vec::new();
            for &d in cands {
                let b = inv.bw_of_kind(d, k);
                if b == NONE {
                    of.push(None);
                    continue;
                }
                let i = *index.entry(b).or_insert_with(|| {
                    let bd = &inv.spec.bandwidth_domains[b as usize];
                    let behind =
                        |list: &[u32]| list.iter().filter(|&&p| inv.bw_of_kind(p, k) == b).count();
                    ids.push(b);
                    bw_room.push(
                        match bd
                            .capacity
                            .0
                            .saturating_sub(inv.live.load[b as usize].0)
                            .checked_div(c.demand)
                        {
                            Some(r) => (r.min(u32::MAX as u64) as u32)
                                .saturating_sub(behind(unloaded_pins) as u32),
                            None => u32::MAX,
                        },
                    );
                    sp_room.push(match spread {
                        Some(max) => max.saturating_sub(behind(&pins) as u32),
                        None => u32::MAX,
                    });
                    bw_room.len() - 1
                });
                of.push(Some(i));
            }
            let kind = inv.ix.bw_kinds[k as usize].clone();
            if let Some(max) = spread {
                let kind = kind.clone();
                out.push((
                    Buckets {
                        name: format!("{kind} bandwidth spreading"),
                        of: of.clone(),
                        room: sp_room.clone(),
                        ids: ids.clone(),
                        quota: false,
                    },
                    Box::new(move |domains, room, needed| Blocker::Spreading {
                        kind: kind.clone(),
                        domains,
                        room,
                        needed,
                        per_domain: max,
                    }),
                ));
            }
            if c.demand > 0 && !index.is_empty() {
                let demand = c.demand;
                let both: Vec<u32> = bw_room
                    .iter()
                    .zip(&sp_room)
                    .map(|(a, b)| *a.min(b))
                    .collect();
                out.push((
                    Buckets {
                        name: format!("{kind} bandwidth headroom"),
                        of,
                        room: both,
                        ids,
                        quota: false,
                    },
                    Box::new(move |domains, room, needed| Blocker::Bandwidth {
                        kind: kind.clone(),
                        domains,
                        room,
                        needed,
                        demand,
                    }),
                ));
            }
        }
        // Storage-group quotas.
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut of = Vec::with_capacity(cands.len());
        let mut room = Vec::new();
        let mut ids = Vec::new();
        for &d in cands {
            let g = inv.ix.drive_group[d as usize];
            let quota = (g != NONE)
                .then(|| inv.spec.storage_groups[g as usize].quota)
                .flatten();
            let Some(q) = quota else {
                of.push(None);
                continue;
            };
            let i = *index.entry(g).or_insert_with(|| {
                let used = inv.live.used[g as usize].0;
                let r = q.0.saturating_sub(used) / c.size.max(1);
                let pinned = unloaded_pins
                    .iter()
                    .filter(|&&p| inv.ix.drive_group[p as usize] == g)
                    .count() as u32;
                room.push((r.min(u32::MAX as u64) as u32).saturating_sub(pinned));
                ids.push(g);
                room.len() - 1
            });
            of.push(Some(i));
        }
        if !index.is_empty() {
            let size = c.size;
            let groups = index.len();
            out.push((
                Buckets {
                    name: "storage-group quotas".into(),
                    of,
                    room,
                    ids,
                    quota: true,
                },
                Box::new(move |_, room, needed| Blocker::Quota {
                    groups,
                    room,
                    needed,
                    size,
                }),
            ));
        }
        out
    }

    /// Max flow: source → redundancy group (its free members) → one node per (group, domain)
    /// for each hard separation level in turn (room left under the per-domain cap) → drive
    /// (one member per drive) → sink-side bucket (its room) → sink. Every placement is such a
    /// flow, so a flow below `needed` proves the request impossible.
    fn flow_bound(
        &self,
        c: &Compiled,
        cands: &[u32],
        need_g: &[usize],
        levels: &[GroupLimit],
        sink: Option<&Buckets>,
        needed: usize,
    ) -> (usize, Vec<Vec<u32>>) {
        let inv = &self.inv;
        let mut chosen: Vec<(usize, u32, usize)> = Vec::new();
        let mut f = Flow::new(2);
        let (s, t) = (0, 1);
        let drive_in: Vec<usize> = cands.iter().map(|_| f.node()).collect();
        let drive_out: Vec<usize> = cands.iter().map(|_| f.node()).collect();
        for i in 0..cands.len() {
            f.edge(drive_in[i], drive_out[i], 1);
        }
        match sink {
            None => {
                for &o in &drive_out {
                    f.edge(o, t, 1);
                }
            }
            Some(b) => {
                let bucket: Vec<usize> = b
                    .room
                    .iter()
                    .map(|&r| {
                        let n = f.node();
                        f.edge(n, t, r.min(needed as u32));
                        n
                    })
                    .collect();
                for (i, o) in b.of.iter().enumerate() {
                    match o {
                        Some(x) => f.edge(drive_out[i], bucket[*x], 1),
                        None => f.edge(drive_out[i], t, 1),
                    }
                }
            }
        }
        for (g, &need) in need_g.iter().enumerate() {
            if need == 0 {
                continue;
            }
            let gn = f.node();
            f.edge(s, gn, need as u32);
            // (level position, domain) → (in, out) node of this group.
            let mut nodes: HashMap<(usize, u32), usize> = HashMap::new();
            let mut linked: std::collections::HashSet<(usize, usize)> =
                std::collections::HashSet::new();
            for (i, &d) in cands.iter().enumerate() {
                let mut from = gn;
                for (li, &l) in levels.iter().enumerate() {
                    let x = l.of(inv, d);
                    if x == NONE {
                        continue;
                    }
                    let node = match nodes.get(&(li, x)) {
                        Some(&n) => n,
                        None => {
                            let used = (g * c.group_size..(g + 1) * c.group_size)
                                .filter(|&m| c.pins[m] != NONE && l.of(inv, c.pins[m]) == x)
                                .count() as u32;
                            let a = f.node();
                            let b = f.node();
                            f.edge(a, b, l.cap.saturating_sub(used));
                            nodes.insert((li, x), a);
                            a
                        }
                    };
                    // One edge into the domain's "in" node per (parent node, domain).
                    if linked.insert((from, node)) {
                        f.edge(from, node, u32::MAX / 2);
                    }
                    from = node + 1;
                }
                f.edge(from, drive_in[i], 1);
                chosen.push((g, cands[i], f.to.len() - 2));
            }
        }
        let value = f.max_flow(s, t, needed as u32) as usize;
        // The drives each group's flow reaches: a placement under the levels and the limit.
        let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); need_g.len()];
        for (g, d, e) in chosen {
            if f.cap[e] == 0 {
                by_group[g].push(d);
            }
        }
        (value, by_group)
    }

    /// Constructs a placement of the hard constraints from a max flow (every hard separation
    /// level and one bandwidth or quota limit at a time), checked against every hard constraint.
    /// The fallback before the complete search when the best-first windows found nothing:
    /// tight bandwidth or quota limits defeat a search in score order but not a flow.
    pub(crate) fn flow_placement(&self, c: &Compiled, cands: &[u32]) -> Option<Vec<u32>> {
        let needed = c.free_members();
        let groups = c.n / c.group_size;
        if needed == 0 || cands.len().saturating_mul(groups) > 200_000 {
            return None;
        }
        let need_g = c.need_per_group();
        let levels = group_limits(c);
        let buckets = self.buckets(c, cands);
        let sinks: Vec<Option<&Buckets>> = if buckets.is_empty() {
            vec![None]
        } else {
            buckets.iter().map(|(b, _)| Some(b)).collect()
        };
        // Two limits at once: take as many drives of each (bucket, bucket) pair as the
        // transport flow sends through it, best first, members in order.
        for (i, (a, _)) in buckets.iter().enumerate() {
            for (b, _) in &buckets[i + 1..] {
                let (value, mut used) = pair_flow(a, b, needed);
                if value < needed {
                    continue;
                }
                let mut assign = c.pins.clone();
                let mut slots = (0..c.n).filter(|&m| c.pins[m] == NONE);
                for (k, &d) in cands.iter().enumerate() {
                    let key = (
                        a.of[k].unwrap_or(a.room.len()),
                        b.of[k].unwrap_or(b.room.len()),
                    );
                    if let Some(n) = used.get_mut(&key).filter(|n| **n > 0) {
                        *n -= 1;
                        if let Some(m) = slots.next() {
                            assign[m] = d;
                        }
                    }
                }
                if self.hard_ok(c, &assign) {
                    return Some(assign);
                }
            }
        }
        for sink in sinks {
            let (value, by_group) = self.flow_bound(c, cands, &need_g, &levels, sink, needed);
            if value < needed {
                continue;
            }
            let mut assign = c.pins.clone();
            for (g, drives) in by_group.into_iter().enumerate() {
                let free =
                    (g * c.group_size..(g + 1) * c.group_size).filter(|&i| c.pins[i] == NONE);
                for (i, d) in free.zip(drives) {
                    assign[i] = d;
                }
            }
            if self.hard_ok(c, &assign) {
                return Some(assign);
            }
        }
        None
    }

    /// Explains why `req` (compiled as `c`) has no placement. `exhausted` tells whether the
    /// search that failed gave up on its budget.
    pub(crate) fn explain(&self, req: &Request, c: &Compiled) -> Explanation {
        let inv = &self.inv;
        let mut counts = [0usize; FILTERS.len()];
        let mut eligible = Vec::new();
        for d in 0..inv.spec.drives.len() as u32 {
            let f = self
                .class_filter(c, &self.classes[self.drive_class[d as usize] as usize].key)
                .or_else(|| self.drive_filter(c, d));
            match f {
                Some(f) => counts[FILTERS.iter().position(|&x| x == f).unwrap_or(0)] += 1,
                None => {
                    if !c.pins.contains(&d) {
                        eligible.push(d)
                    }
                }
            }
        }
        let needed = c.free_members();
        let mut blocked = self.refute(c, &eligible);
        if blocked.is_empty() {
            blocked.push(Blocker::NoCombination);
        }
        // Closest feasible relaxations: one constraint at a time.
        let mut tries: Vec<Relaxation> = Vec::new();
        let mut seen_scopes = Vec::new();
        for s in &req.separation {
            let scope = s.scope();
            if s.mode == Mode::Hard && !seen_scopes.contains(&scope) {
                seen_scopes.push(scope.clone());
                tries.push(Relaxation::SoftSeparation { scope });
            }
        }
        for s in &req.bandwidth_spread {
            if s.mode == Mode::Hard {
                tries.push(Relaxation::SoftSpreading {
                    kind: s.kind.clone(),
                });
            }
        }
        let removed = |f: Filter| counts[FILTERS.iter().position(|&x| x == f).unwrap_or(0)] > 0;
        for f in [
            Filter::Kind,
            Filter::MinRpm,
            Filter::RequireTags,
            Filter::ExcludeTags,
            Filter::StorageGroup,
            Filter::Transport,
            Filter::Requisite,
            Filter::Reachability,
        ] {
            if removed(f) {
                tries.push(Relaxation::WithoutFilter { filter: f });
            }
        }
        if req.bandwidth.0 > 0 {
            tries.push(Relaxation::WithoutBandwidthDemand);
        }
        let mut relaxations: Vec<Relaxation> = tries
            .into_iter()
            .filter(|r| self.satisfiable_under(&r.apply(req), c))
            .collect();
        if relaxations.is_empty() && seen_scopes.len() > 1 {
            let r = Relaxation::AllSeparationSoft;
            if self.satisfiable_under(&r.apply(req), c) {
                relaxations.push(r);
            }
        }
        Explanation {
            request: c.label.clone(),
            drives: inv.spec.drives.len(),
            removed: FILTERS
                .iter()
                .zip(counts)
                .filter(|(_, k)| *k > 0)
                .map(|(&filter, removed)| FilterCount { filter, removed })
                .collect(),
            eligible: eligible.len(),
            needed,
            blocked,
            relaxations,
        }
    }

    /// Whether the relaxed request `r` has a placement (bounds first, then a bounded search).
    fn satisfiable_under(&self, r: &Request, orig: &Compiled) -> bool {
        let Ok(mut rc) = self.compile(r, Some(orig.pins.clone()), orig.pins_loaded) else {
            return false;
        };
        rc.exclude = orig.exclude.clone();
        self.quick_decide(&rc, RELAXATION_BUDGET) == Some(true)
    }
}

/// Turns a failed search into the error a caller sees: unsatisfiable when a bound proves it or
/// the search was complete, "gave up" only when neither.
pub(crate) fn failure(explanation: Explanation, exhausted: bool, nodes: u64) -> PlacementError {
    let explanation = Box::new(explanation);
    if exhausted && !explanation.proven() {
        PlacementError::SearchExhausted { nodes, explanation }
    } else {
        PlacementError::Unsatisfiable(explanation)
    }
}
