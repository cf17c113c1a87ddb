//! Random inventories and requests, and an independent checker/oracle written from the
//! documented semantics (not from the engine's code) for the property tests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;

use placement::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

pub const TAGS: [&str; 3] = ["fast", "enc", "old"];

pub struct Gen {
    pub rng: ChaCha8Rng,
}

pub fn did(s: &str) -> DriveId {
    DriveId::new(s).unwrap()
}
pub fn dom(s: &str) -> DomainId {
    DomainId::new(s).unwrap()
}
/// `racks` racks of `per_rack` 1 TB HDDs each, named `r{rack}d{n}`.
pub fn grid(racks: usize, per_rack: usize) -> Inventory {
    let mut t = String::new();
    for r in 0..racks {
        t += &format!("[[domain]]\nid = \"r{r}\"\nlevel = \"rack\"\n");
        for d in 0..per_rack {
            t += &format!(
                "[[drive]]\nid = \"r{r}d{d}\"\nkind = \"hdd\"\ncapacity = \"1 TB\"\ndomain = \"r{r}\"\n"
            );
        }
    }
    Inventory::from_toml(&t).unwrap()
}

pub fn vid(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An inventory with `racks` racks of `jbods` JBODs each and `drives` drives.
    pub fn inventory(
        &mut self,
        racks: usize,
        jbods: usize,
        drives: usize,
        full_random: bool,
    ) -> InventorySpec {
        let r = &mut self.rng;
        let mut spec = InventorySpec::default();
        for i in 0..racks {
            spec.domains.push(DomainSpec {
                id: dom(&format!("r{i}")),
                level: "rack".into(),
                parent: None,
            });
            for j in 0..jbods {
                spec.domains.push(DomainSpec {
                    id: dom(&format!("r{i}j{j}")),
                    level: "jbod".into(),
                    parent: Some(dom(&format!("r{i}"))),
                });
            }
        }
        let uplinks = r.random_range(1..=3usize);
        for u in 0..uplinks {
            // Load up to capacity (a loaded inventory never has more: refused).
            let capacity = r.random_range(1..=10u64) * 100;
            spec.bandwidth_domains.push(BwDomainSpec {
                id: BwDomainId::new(format!("up{u}")).unwrap(),
                kind: "uplink".into(),
                capacity: Bytes(capacity),
                load: Bytes(r.random_range(0..=300u64.min(capacity))),
            });
        }
        let quota = r.random_range(0..=60u64);
        spec.storage_groups.push(GroupSpec {
            id: GroupId::new("g1").unwrap(),
            quota: Some(Bytes(quota)),
            used: Bytes(r.random_range(0..=10u64.min(quota))),
        });
        spec.storage_groups.push(GroupSpec {
            id: GroupId::new("g2").unwrap(),
            quota: None,
            used: Bytes(0),
        });
        for d in 0..drives {
            let kind = [DriveKind::Hdd, DriveKind::Ssd, DriveKind::Nvme][r.random_range(0..3)];
            let capacity = r.random_range(10..=100u64);
            let free = if full_random {
                r.random_range(0..=capacity)
            } else {
                capacity
            };
            let mut tags = Vec::new();
            for t in TAGS {
                if r.random_bool(0.3) {
                    tags.push(t.to_string());
                }
            }
            let mut transports = Transports::empty();
            for t in [Transports::ISCSI, Transports::NVME_TCP, Transports::ROCE] {
                if r.random_bool(0.6) {
                    transports |= t;
                }
            }
            let health = if full_random && r.random_bool(0.1) {
                Health::Failed
            } else {
                Health::Healthy
            };
            let domain = if r.random_bool(0.95) {
                Some(dom(&format!(
                    "r{}j{}",
                    r.random_range(0..racks),
                    r.random_range(0..jbods)
                )))
            } else {
                None
            };
            let group = match r.random_range(0..3) {
                0 => Some(GroupId::new("g1").unwrap()),
                1 => Some(GroupId::new("g2").unwrap()),
                _ => None,
            };
            let bandwidth_domains = if r.random_bool(0.9) {
                vec![BwDomainId::new(format!("up{}", r.random_range(0..uplinks))).unwrap()]
            } else {
                vec![]
            };
            let mut attributes = std::collections::BTreeMap::new();
            if r.random_bool(0.8) {
                attributes.insert(
                    "psu".to_string(),
                    ["a", "b", "c"][r.random_range(0..3)].to_string(),
                );
            }
            spec.drives.push(DriveSpec {
                id: did(&format!("d{d}")),
                kind,
                capacity: Bytes(capacity),
                free: Bytes(free),
                rpm: if kind == DriveKind::Hdd {
                    [5400, 7200, 10000][r.random_range(0..3)]
                } else {
                    0
                },
                tags,
                transports,
                health,
                domain,
                group,
                bandwidth_domains,
                attributes,
            });
        }
        spec.servers.push(ServerSpec {
            id: ServerId::new("s0").unwrap(),
            domain: Some(dom("r0")),
            bandwidth_domains: vec![BwDomainId::new("up0").unwrap()],
            transports: None,
        });
        spec.servers.push(ServerSpec {
            id: ServerId::new("s1").unwrap(),
            domain: None,
            bandwidth_domains: vec![],
            // Attaches over RoCE or user-space NBD only.
            transports: Some(Transports::ROCE | Transports::NBD),
        });
        spec
    }

    pub fn shape(&mut self, max_members: usize) -> Shape {
        loop {
            let s = match self.rng.random_range(0..5) {
                0 => Shape::Single,
                1 => Shape::Mirror {
                    legs: self.rng.random_range(1..=4),
                },
                2 => Shape::Raid10 {
                    stripes: self.rng.random_range(1..=3),
                    mirrors: self.rng.random_range(1..=2),
                },
                3 => Shape::Slice,
                _ => Shape::Parity {
                    k: self.rng.random_range(1..=3),
                    m: self.rng.random_range(1..=2),
                    sets: 1,
                },
            };
            if s.member_count() <= max_members {
                return s;
            }
        }
    }

    /// A random request; `constrained` adds many filters.
    pub fn request(
        &mut self,
        spec: &InventorySpec,
        max_members: usize,
        allow_pin: bool,
    ) -> Request {
        let shape = self.shape(max_members);
        let racks = spec
            .domains
            .iter()
            .filter(|d| d.level == "rack")
            .count()
            .max(1);
        let r = &mut self.rng;
        let mut req = Request::new(shape, r.random_range(1..=40u64));
        if r.random_bool(0.3) {
            let all = [DriveKind::Hdd, DriveKind::Ssd, DriveKind::Nvme];
            req.kinds = all.into_iter().filter(|_| r.random_bool(0.6)).collect();
        }
        if r.random_bool(0.2) {
            req.min_rpm = Some([5400, 7200, 10000][r.random_range(0..3)]);
        }
        if r.random_bool(0.2) {
            req.require_tags.push(TAGS[r.random_range(0..3)].into());
        }
        if r.random_bool(0.2) {
            req.exclude_tags.push(TAGS[r.random_range(0..3)].into());
        }
        if r.random_bool(0.2) {
            req.storage_groups
                .push(GroupId::new(["g1", "g2"][r.random_range(0..2)]).unwrap());
        }
        if r.random_bool(0.2) {
            req.transports = Some(
                [Transports::ISCSI, Transports::NVME_TCP, Transports::ROCE][r.random_range(0..3)],
            );
        }
        for level in ["rack", "jbod"] {
            if r.random_bool(0.5) {
                let mode = if r.random_bool(0.5) {
                    Mode::Hard
                } else {
                    Mode::Soft
                };
                req = req.separate(level, mode);
            }
        }
        // An attribute no drive carries is an invalid request (like an unknown level).
        let has_psu = spec.drives.iter().any(|d| d.attributes.contains_key("psu"));
        for sep in [
            Separation::storage_group(Mode::Hard),
            Separation::attribute("psu", Mode::Hard),
        ] {
            if r.random_bool(0.2) && (sep.attribute.is_none() || has_psu) {
                let mut sep = sep;
                if r.random_bool(0.5) {
                    sep.mode = Mode::Soft;
                }
                req.separation.push(sep);
            }
        }
        if r.random_bool(0.25) {
            req.bandwidth = Bytes(r.random_range(1..=150u64));
        }
        if r.random_bool(0.3) {
            req.bandwidth_spread.push(Spread {
                kind: "uplink".into(),
                mode: if r.random_bool(0.5) {
                    Mode::Hard
                } else {
                    Mode::Soft
                },
                max_per_domain: r.random_range(1..=2),
                per_group: r.random_bool(0.3),
            });
        }
        if r.random_bool(0.15) {
            req.attach_server = Some(ServerId::new(["s0", "s1"][r.random_range(0..2)]).unwrap());
        }
        if r.random_bool(0.1) {
            let mut seg = Segment::new();
            seg.insert("rack".into(), "r0".into());
            req.requisite.push(seg);
        }
        if r.random_bool(0.15) {
            let mut seg = Segment::new();
            seg.insert("rack".into(), format!("r{}", r.random_range(0..racks)));
            req.preferred.push(seg);
        }
        if r.random_bool(0.1) && !spec.drives.is_empty() {
            req.exclude_drives
                .push(spec.drives[r.random_range(0..spec.drives.len())].id.clone());
        }
        if allow_pin && r.random_bool(0.15) && !spec.drives.is_empty() {
            req.pinned.push(Pin {
                member: r.random_range(0..req.shape.member_count()),
                drive: spec.drives[r.random_range(0..spec.drives.len())].id.clone(),
            });
        }
        req
    }
}

/// The independent model of the documented semantics.
pub struct Oracle<'a> {
    pub spec: &'a InventorySpec,
    parent: HashMap<&'a str, Option<&'a str>>,
    level: HashMap<&'a str, &'a str>,
}

impl<'a> Oracle<'a> {
    pub fn new(spec: &'a InventorySpec) -> Self {
        Oracle {
            spec,
            parent: spec
                .domains
                .iter()
                .map(|d| (d.id.as_str(), d.parent.as_ref().map(|p| p.as_str())))
                .collect(),
            level: spec
                .domains
                .iter()
                .map(|d| (d.id.as_str(), d.level.as_str()))
                .collect(),
        }
    }

    pub fn drive(&self, id: &str) -> &'a DriveSpec {
        self.spec
            .drives
            .iter()
            .find(|d| d.id.as_str() == id)
            .unwrap()
    }

    pub fn ancestor(&self, d: &DriveSpec, level: &str) -> Option<&'a str> {
        let mut x = d.domain.as_ref().map(|x| {
            self.spec
                .domains
                .iter()
                .find(|y| y.id == *x)
                .unwrap()
                .id
                .as_str()
        });
        while let Some(cur) = x {
            if self.level[cur] == level {
                return Some(cur);
            }
            x = self.parent[cur];
        }
        None
    }

    /// The drive's value under a separation: its domain at the level, its storage group, or
    /// its attribute value; `None` means unconstrained.
    pub fn separation_value(&self, d: &'a DriveSpec, sep: &Separation) -> Option<&'a str> {
        if sep.storage_group {
            d.group.as_ref().map(|g| g.as_str())
        } else if let Some(a) = &sep.attribute {
            d.attributes.get(a).map(|v| v.as_str())
        } else {
            self.ancestor(d, &sep.level)
        }
    }

    fn bw(&self, name: &str) -> &'a BwDomainSpec {
        self.spec
            .bandwidth_domains
            .iter()
            .find(|b| b.id.as_str() == name)
            .unwrap()
    }

    fn bw_of_kind(&self, d: &DriveSpec, kind: &str) -> Option<&'a str> {
        d.bandwidth_domains
            .iter()
            .map(|b| self.bw(b.as_str()))
            .find(|b| b.kind == kind)
            .map(|b| b.id.as_str())
    }

    fn group(&self, g: &GroupId) -> &'a GroupSpec {
        self.spec
            .storage_groups
            .iter()
            .find(|x| x.id == *g)
            .unwrap()
    }

    /// Per-drive eligibility for a new member.
    pub fn eligible(&self, req: &Request, d: &DriveSpec) -> bool {
        self.ineligible(req, d).is_none()
    }

    /// The first per-drive rule a drive breaks for a new member.
    pub fn ineligible(&self, req: &Request, d: &DriveSpec) -> Option<&'static str> {
        if d.health != Health::Healthy {
            return Some("health");
        }
        let kinds = if req.kinds.is_empty() && req.shape == Shape::Slice {
            vec![DriveKind::Ssd, DriveKind::Nvme]
        } else {
            req.kinds.clone()
        };
        if !kinds.is_empty() && !kinds.contains(&d.kind) {
            return Some("kind");
        }
        if let Some(m) = req.min_rpm
            && d.kind == DriveKind::Hdd
            && d.rpm < m
        {
            return Some("rpm");
        }
        if !req.require_tags.iter().all(|t| d.tags.contains(t)) {
            return Some("require_tags");
        }
        if req.exclude_tags.iter().any(|t| d.tags.contains(t)) {
            return Some("exclude_tags");
        }
        if !req.storage_groups.is_empty()
            && !d
                .group
                .as_ref()
                .is_some_and(|g| req.storage_groups.contains(g))
        {
            return Some("group");
        }
        if let Some(t) = req.transports
            && !d.transports.intersects(t)
        {
            return Some("transport");
        }
        if req.exclude_drives.contains(&d.id) {
            return Some("exclude");
        }
        if !req.requisite.is_empty()
            && !req.requisite.iter().any(|seg| {
                seg.iter()
                    .all(|(l, v)| self.ancestor(d, l) == Some(v.as_str()))
            })
        {
            return Some("requisite");
        }
        if let Some(s) = &req.attach_server {
            let s = self.spec.servers.iter().find(|x| x.id == *s).unwrap();
            if !s.bandwidth_domains.is_empty()
                && !d
                    .bandwidth_domains
                    .iter()
                    .any(|b| s.bandwidth_domains.contains(b))
            {
                return Some("server");
            }
            // A transport the drive, the server and the request all allow.
            let common = d.transports
                & s.transports.unwrap_or(Transports::all())
                & req.transports.unwrap_or(Transports::all());
            if common.is_empty() {
                return Some("server");
            }
        }
        if d.free.0 < req.size.0 {
            return Some("capacity");
        }
        for b in &d.bandwidth_domains {
            let b = self.bw(b.as_str());
            if req.bandwidth.0 > 0 && b.load.0 + req.bandwidth.0 > b.capacity.0 {
                return Some("bandwidth");
            }
        }
        if let Some(g) = &d.group {
            let g = self.group(g);
            if let Some(q) = g.quota
                && g.used.0 + req.size.0 > q.0
            {
                return Some("quota");
            }
        }
        None
    }

    /// Checks the hard constraints of a full assignment (drive ids in member order).
    /// `pinned[i]` marks members that were given; constraints are judged on the domains that
    /// hold at least one newly placed member. Returns the first violation.
    pub fn check_hard(
        &self,
        req: &Request,
        members: &[&DriveSpec],
        pinned: &[bool],
    ) -> Result<(), String> {
        let n = req.shape.member_count();
        if members.len() != n {
            return Err(format!("{} members for shape of {n}", members.len()));
        }
        let (_, gs) = req.shape.groups();
        let cap = req.shape.per_domain_cap() as usize;
        for i in 0..n {
            for j in 0..i {
                if members[i].id == members[j].id {
                    return Err(format!("members {j} and {i} share drive {}", members[i].id));
                }
            }
            if !pinned[i] && !self.eligible(req, members[i]) {
                return Err(format!(
                    "member {i} on ineligible drive {} ({:?})",
                    members[i].id,
                    self.ineligible(req, members[i])
                ));
            }
        }
        for sep in req.separation.iter().filter(|s| s.mode == Mode::Hard) {
            for g in 0..n / gs {
                let mut count: HashMap<&str, (usize, bool)> = HashMap::new();
                for i in g * gs..(g + 1) * gs {
                    if let Some(x) = self.separation_value(members[i], sep) {
                        let e = count.entry(x).or_default();
                        e.0 += 1;
                        e.1 |= !pinned[i];
                    }
                }
                for (x, (k, fresh)) in count {
                    if fresh && k > cap {
                        return Err(format!("group {g}: {k} members in {:?} '{x}'", sep.scope()));
                    }
                }
            }
        }
        for sp in req.bandwidth_spread.iter().filter(|s| s.mode == Mode::Hard) {
            let chunk = if sp.per_group { gs } else { n };
            for range in (0..n).step_by(chunk).map(|s| s..s + chunk) {
                let mut count: HashMap<&str, (usize, bool)> = HashMap::new();
                for i in range {
                    if let Some(b) = self.bw_of_kind(members[i], &sp.kind) {
                        let e = count.entry(b).or_default();
                        e.0 += 1;
                        e.1 |= !pinned[i];
                    }
                }
                for (b, (k, fresh)) in count {
                    if fresh && k > sp.max_per_domain as usize {
                        return Err(format!("{k} members behind {b}"));
                    }
                }
            }
        }
        if req.bandwidth.0 > 0 {
            let mut count: HashMap<&str, (u64, bool)> = HashMap::new();
            for i in 0..n {
                for b in &members[i].bandwidth_domains {
                    let e = count.entry(b.as_str()).or_default();
                    e.0 += 1;
                    e.1 |= !pinned[i];
                }
            }
            for (b, (k, fresh)) in count {
                let bd = self.bw(b);
                if fresh && bd.load.0 + k * req.bandwidth.0 > bd.capacity.0 {
                    return Err(format!("bandwidth domain {b} overloaded by {k} members"));
                }
            }
        }
        let mut gcount: HashMap<&str, (u64, bool)> = HashMap::new();
        for i in 0..n {
            if let Some(g) = &members[i].group {
                let e = gcount.entry(g.as_str()).or_default();
                e.0 += 1;
                e.1 |= !pinned[i];
            }
        }
        for (g, (k, fresh)) in gcount {
            let gs = self.group(&GroupId::new(g).unwrap());
            if let Some(q) = gs.quota
                && fresh
                && gs.used.0 + k * req.size.0 > q.0
            {
                return Err(format!("group {g} quota exceeded by {k} members"));
            }
        }
        Ok(())
    }

    /// Whether the soft constraints hold.
    pub fn soft_ok(&self, req: &Request, members: &[&DriveSpec]) -> bool {
        let mut soft = req.clone();
        soft.separation.retain(|s| s.mode == Mode::Soft);
        soft.separation.iter_mut().for_each(|s| s.mode = Mode::Hard);
        soft.bandwidth_spread.retain(|s| s.mode == Mode::Soft);
        soft.bandwidth_spread
            .iter_mut()
            .for_each(|s| s.mode = Mode::Hard);
        self.check_parts(&soft, members)
    }

    fn check_parts(&self, req: &Request, members: &[&DriveSpec]) -> bool {
        let n = members.len();
        let (_, gs) = req.shape.groups();
        let cap = req.shape.per_domain_cap() as usize;
        for sep in &req.separation {
            for g in 0..n / gs {
                let mut count: HashMap<&str, usize> = HashMap::new();
                for m in &members[g * gs..(g + 1) * gs] {
                    if let Some(x) = self.separation_value(m, sep) {
                        *count.entry(x).or_default() += 1;
                    }
                }
                if count.values().any(|&k| k > cap) {
                    return false;
                }
            }
        }
        for sp in &req.bandwidth_spread {
            let chunk = if sp.per_group { gs } else { n.max(1) };
            for part in members.chunks(chunk) {
                let mut count: HashMap<&str, usize> = HashMap::new();
                for m in part {
                    if let Some(b) = self.bw_of_kind(m, &sp.kind) {
                        *count.entry(b).or_default() += 1;
                    }
                }
                if count.values().any(|&k| k > sp.max_per_domain as usize) {
                    return false;
                }
            }
        }
        true
    }

    /// Exhaustive search: does any assignment satisfy the hard constraints?
    pub fn exists(&self, req: &Request) -> bool {
        let n = req.shape.member_count();
        let mut fixed: Vec<Option<&DriveSpec>> = vec![None; n];
        for p in &req.pinned {
            fixed[p.member] = Some(self.drive(p.drive.as_str()));
        }
        let pinned: Vec<bool> = fixed.iter().map(|f| f.is_some()).collect();
        let cands: Vec<&DriveSpec> = self
            .spec
            .drives
            .iter()
            .filter(|d| self.eligible(req, d))
            .collect();
        let mut cur: Vec<&DriveSpec> = Vec::with_capacity(n);
        self.enumerate(req, &fixed, &pinned, &cands, &mut cur)
    }

    fn enumerate<'b>(
        &self,
        req: &Request,
        fixed: &[Option<&'b DriveSpec>],
        pinned: &[bool],
        cands: &[&'b DriveSpec],
        cur: &mut Vec<&'b DriveSpec>,
    ) -> bool
    where
        'a: 'b,
    {
        let i = cur.len();
        if i == fixed.len() {
            return self.check_hard(req, cur, pinned).is_ok();
        }
        if let Some(f) = fixed[i] {
            cur.push(f);
            let ok = self.enumerate(req, fixed, pinned, cands, cur);
            cur.pop();
            return ok;
        }
        for &d in cands {
            if cur.iter().any(|c| c.id == d.id) || fixed.iter().flatten().any(|c| c.id == d.id) {
                continue;
            }
            cur.push(d);
            let ok = self.enumerate(req, fixed, pinned, cands, cur);
            cur.pop();
            if ok {
                return true;
            }
        }
        false
    }
}

/// The property tests' case count: `PLACEMENT_PROPTEST_CASES`, else proptest's own `PROPTEST_CASES`, else
/// `default` (`storage_units::cases`); a value that is not a whole number stops the test naming
/// its variable.
pub fn cases(default: u32) -> u32 {
    storage_units::cases::case_count("PLACEMENT_PROPTEST_CASES", default)
        .unwrap_or_else(|e| panic!("{e}"))
}
