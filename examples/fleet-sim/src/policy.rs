//! Placement policies: the [`Placer`] contract the simulator drives, and the two peers of the
//! placement engine — a CRUSH-like stateless straw2 draw and uniformly random drives. (The
//! engine's adapter lives in [`crate::adapter`], with every other call into the pure crates.)

use placement::{DriveKind, Mode, Request, Shape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::VolumeClass;
use std::sync::Arc;
use storage_units::quote;

use crate::fleet::Fleet;

/// What every policy sees of the fleet's dynamic state (kept by the simulator).
#[derive(Debug, Clone)]
pub struct DriveState {
    /// Free bytes per drive.
    pub free: Vec<u64>,
    /// Number of outstanding outages per drive (0 = in service).
    pub down: Vec<u16>,
}

impl DriveState {
    /// Whether the drive can take a member of `size` bytes.
    pub fn usable(&self, d: u32, size: u64) -> bool {
        self.down[d as usize] == 0 && self.free[d as usize] >= size
    }
}

/// A volume class compiled for the policies.
#[derive(Debug, Clone)]
pub struct ClassInfo {
    /// The configured class.
    pub class: VolumeClass,
    /// Allowed kinds as a bit mask (bit = `kind_bit`).
    pub kinds: u8,
    /// Hard separation levels (level index, members of one group allowed per domain).
    pub hard: Vec<(u16, u32)>,
    /// The placement request (size set per volume).
    pub request: Request,
}

/// The bit of a drive kind in [`ClassInfo::kinds`].
pub fn kind_bit(k: DriveKind) -> u8 {
    match k {
        DriveKind::Hdd => 1,
        DriveKind::Ssd => 2,
        DriveKind::Nvme => 4,
    }
}

impl ClassInfo {
    /// Compiles a class against the fleet's level names. An error gives the class's field at
    /// fault (`separation[0].level`) and the rule.
    pub fn new(class: &VolumeClass, fleet: &Fleet) -> Result<Self, (String, String)> {
        let mut kinds = class.kinds.iter().fold(0u8, |a, &k| a | kind_bit(k));
        if kinds == 0 {
            kinds = if class.shape == Shape::Slice { 6 } else { 7 };
        }
        let mut hard = Vec::new();
        for (i, s) in class.separation.iter().enumerate() {
            let level = fleet.level(&s.level).ok_or_else(|| {
                let levels = if fleet.levels.is_empty() {
                    "it has none".to_string()
                } else {
                    format!("levels: {}", fleet.levels.join(", "))
                };
                (
                    format!("separation[{i}].level"),
                    format!(
                        "{} is not a level of the inventory ({levels})",
                        quote(&s.level)
                    ),
                )
            })?;
            if s.mode == Mode::Hard {
                hard.push((level, class.shape.per_domain_cap()));
            }
        }
        let mut request = Request::new(class.shape.clone(), 1);
        request.name = Some(class.name.clone());
        request.kinds = class.kinds.clone();
        request.separation = class.separation.clone();
        request.bandwidth_spread = class.bandwidth_spread.clone();
        Ok(ClassInfo {
            class: class.clone(),
            kinds,
            hard,
            request,
        })
    }
}

/// The contract between the simulator and a placement policy. Drive indexes are positions in
/// [`Fleet::drives`]; the simulator keeps [`DriveState`] up to date from the answers.
pub trait Placer {
    /// Chooses drives for every member of a new volume (in member order).
    fn place(
        &mut self,
        st: &DriveState,
        vol: u32,
        class: &ClassInfo,
        size: u64,
    ) -> Result<Vec<u32>, String>;
    /// Forgets a volume.
    fn remove(&mut self, st: &DriveState, vol: u32);
    /// Chooses new drives for `members` of a placed volume (whose drives are `current`),
    /// keeping the others; returns the new drive of each listed member.
    fn repair(
        &mut self,
        st: &DriveState,
        vol: u32,
        class: &ClassInfo,
        size: u64,
        current: &[u32],
        members: &[usize],
    ) -> Result<Vec<u32>, String>;
    /// The drives went out of service (before the affected volumes are repaired).
    fn drives_down(&mut self, st: &DriveState, drives: &[u32]) -> Result<(), String>;
    /// The drives are back in service, empty.
    fn drives_up(&mut self, st: &DriveState, drives: &[u32]) -> Result<(), String>;
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// CRUSH-like placement: a stateless straw2 draw down the failure-domain tree.
///
/// For member rank `r` of volume key `x`, every candidate item `i` (child domain or drive) of
/// the current node draws `ln(u(x, i, r)) / w_i` with `u` a hash in (0, 1] and `w_i` the
/// in-service capacity of allowed kinds under it; the largest draw wins, as in Ceph's straw2.
/// A domain at a hard separation level that already holds its share of the member's group is
/// skipped (CRUSH's "choose distinct"); a drive that is full or down is rejected and the draw
/// retried with the next rank, up to 50 times. Only hard separation levels are honoured; soft
/// constraints and bandwidth spreading are not (CRUSH has no such notion).
#[derive(Debug)]
pub struct Straw2 {
    fleet: Arc<Fleet>,
    /// `[domain][kind]` in-service capacity (bytes) under each domain.
    weight: Vec<[f64; 3]>,
    /// Salt of the volume keys.
    key_salt: u64,
}

fn kind_idx(k: DriveKind) -> usize {
    match k {
        DriveKind::Hdd => 0,
        DriveKind::Ssd => 1,
        DriveKind::Nvme => 2,
    }
}

impl Straw2 {
    /// Builds the weights over the fleet.
    pub fn new(fleet: Arc<Fleet>, seed: u64) -> Self {
        let mut s = Straw2 {
            weight: vec![[0.0; 3]; fleet.domains.len()],
            key_salt: splitmix(seed ^ 0x57A2),
            fleet,
        };
        let all = 0..s.fleet.drives.len() as u32;
        s.adjust(all, 1.0);
        s
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) the drives' capacity in their ancestors'
    /// weights: drives joining or leaving the fleet's usable set.
    fn adjust(&mut self, drives: impl IntoIterator<Item = u32>, sign: f64) {
        for d in drives {
            let info = &self.fleet.drives[d as usize];
            let k = kind_idx(info.kind);
            let c = info.capacity as f64 * sign;
            for &a in &info.ancestors {
                self.weight[a as usize][k] += c;
            }
        }
    }

    fn w(&self, kinds: u8, arr: &[f64; 3]) -> f64 {
        (0..3)
            .filter(|i| kinds & (1 << i) != 0)
            .map(|i| arr[i])
            .sum::<f64>()
            .max(0.0)
    }

    fn draw(&self, x: u64, item: u64, r: u64, w: f64) -> f64 {
        let h = splitmix(x ^ splitmix(item.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ r));
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        u.ln() / w
    }

    /// Chooses one drive for a member, or `None`.
    #[allow(clippy::too_many_arguments)] // one call site; the arguments are the draw's inputs
    fn choose(
        &self,
        st: &DriveState,
        class: &ClassInfo,
        size: u64,
        x: u64,
        rank: u64,
        taken: &[u32],
        avoid: &[u32],
    ) -> Option<u32> {
        let fleet = &*self.fleet;
        // Domains at hard levels that are full for this group.
        let blocked = |dom: u32| -> bool {
            let lvl = fleet.domains[dom as usize].level;
            class.hard.iter().any(|&(l, cap)| {
                l == lvl
                    && taken
                        .iter()
                        .filter(|&&t| fleet.ancestor_at(t, l) == dom)
                        .count() as u32
                        >= cap
            })
        };
        for attempt in 0..50u64 {
            let r = rank.wrapping_mul(1_000_003).wrapping_add(attempt);
            // Descend from the virtual root.
            let mut children: &[u32] = &fleet.roots;
            let mut drives: &[u32] = &fleet.loose_drives;
            loop {
                let mut best: Option<(f64, bool, u32)> = None;
                for &c in children {
                    let w = self.w(class.kinds, &self.weight[c as usize]);
                    if w <= 0.0 || blocked(c) {
                        continue;
                    }
                    let v = self.draw(x, c as u64, r, w);
                    if best.is_none_or(|b| v > b.0) {
                        best = Some((v, true, c));
                    }
                }
                for &d in drives {
                    let info = &fleet.drives[d as usize];
                    if class.kinds & kind_bit(info.kind) == 0 || st.down[d as usize] > 0 {
                        continue;
                    }
                    let v = self.draw(x, (1u64 << 40) + d as u64, r, info.capacity as f64);
                    if best.is_none_or(|b| v > b.0) {
                        best = Some((v, false, d));
                    }
                }
                match best {
                    None => break,
                    Some((_, true, c)) => {
                        children = &fleet.domains[c as usize].children;
                        drives = &fleet.domains[c as usize].drives;
                    }
                    Some((_, false, d)) => {
                        if st.usable(d, size) && !avoid.contains(&d) {
                            return Some(d);
                        }
                        break;
                    }
                }
            }
        }
        None
    }

    fn key(&self, vol: u32) -> u64 {
        splitmix(self.key_salt ^ vol as u64)
    }
}

/// Members of one redundancy group of `m` (in member order).
fn group_of(shape: &Shape, m: usize) -> std::ops::Range<usize> {
    let (_, per) = shape.groups();
    let g = m / per;
    g * per..(g + 1) * per
}

impl Placer for Straw2 {
    fn place(
        &mut self,
        st: &DriveState,
        vol: u32,
        class: &ClassInfo,
        size: u64,
    ) -> Result<Vec<u32>, String> {
        let n = class.class.shape.member_count();
        let x = self.key(vol);
        let mut out: Vec<u32> = Vec::with_capacity(n);
        for m in 0..n {
            let g = group_of(&class.class.shape, m);
            match self.choose(st, class, size, x, m as u64, &out[g.start..m], &out) {
                Some(d) => out.push(d),
                None => {
                    return Err(format!(
                        "straw2: no drive for member {m} of {} after 50 draws",
                        quote(&class.class.name)
                    ));
                }
            }
        }
        Ok(out)
    }

    fn remove(&mut self, _st: &DriveState, _vol: u32) {}

    fn repair(
        &mut self,
        st: &DriveState,
        vol: u32,
        class: &ClassInfo,
        size: u64,
        current: &[u32],
        members: &[usize],
    ) -> Result<Vec<u32>, String> {
        let x = self.key(vol);
        let mut now = current.to_vec();
        let mut out = Vec::with_capacity(members.len());
        for (pos, &m) in members.iter().enumerate() {
            let g = group_of(&class.class.shape, m);
            // The group's members that stay or were already re-placed (not those still to go).
            let taken: Vec<u32> = g
                .filter(|&i| i != m && !members[pos..].contains(&i))
                .map(|i| now[i])
                .collect();
            let mut avoid = now.clone();
            avoid.extend(members.iter().map(|&i| current[i]));
            // CRUSH re-draws a failed replica with a later rank.
            let found = (1..8u64).find_map(|bump| {
                self.choose(st, class, size, x, m as u64 + 64 * bump, &taken, &avoid)
            });
            let d = found.ok_or_else(|| {
                format!(
                    "straw2: no replacement drive for member {m} of {}",
                    quote(&class.class.name)
                )
            })?;
            now[m] = d;
            out.push(d);
        }
        Ok(out)
    }

    fn drives_down(&mut self, _st: &DriveState, drives: &[u32]) -> Result<(), String> {
        self.adjust(drives.iter().copied(), -1.0);
        Ok(())
    }

    fn drives_up(&mut self, _st: &DriveState, drives: &[u32]) -> Result<(), String> {
        self.adjust(drives.iter().copied(), 1.0);
        Ok(())
    }
}

/// Uniformly random drives of an allowed kind with room: no separation at all (distinct drives
/// only). Rejection sampling, up to 1,000 draws per member.
#[derive(Debug)]
pub struct RandomPlacer {
    fleet: Arc<Fleet>,
    /// Drives per kind mask (index = mask 1..=7).
    by_mask: Vec<Vec<u32>>,
    rng: ChaCha8Rng,
}

impl RandomPlacer {
    /// Builds the candidate lists.
    pub fn new(fleet: Arc<Fleet>, seed: u64) -> Self {
        let mut by_mask = vec![Vec::new(); 8];
        for (i, d) in fleet.drives.iter().enumerate() {
            for (mask, list) in by_mask.iter_mut().enumerate() {
                if mask as u8 & kind_bit(d.kind) != 0 {
                    list.push(i as u32);
                }
            }
        }
        RandomPlacer {
            fleet,
            by_mask,
            rng: ChaCha8Rng::seed_from_u64(splitmix(seed ^ 0x4A4D)),
        }
    }

    fn pick(&mut self, st: &DriveState, kinds: u8, size: u64, avoid: &[u32]) -> Option<u32> {
        let list = &self.by_mask[kinds as usize & 7];
        if list.is_empty() {
            return None;
        }
        for _ in 0..1000 {
            let d = list[self.rng.random_range(0..list.len())];
            if st.usable(d, size) && !avoid.contains(&d) {
                return Some(d);
            }
        }
        None
    }
}

impl Placer for RandomPlacer {
    fn place(
        &mut self,
        st: &DriveState,
        _vol: u32,
        class: &ClassInfo,
        size: u64,
    ) -> Result<Vec<u32>, String> {
        let n = class.class.shape.member_count();
        let mut out = Vec::with_capacity(n);
        for m in 0..n {
            let d = self.pick(st, class.kinds, size, &out).ok_or_else(|| {
                format!(
                    "random: no drive with room for member {m} of {} in 1000 draws",
                    quote(&class.class.name)
                )
            })?;
            out.push(d);
        }
        let _ = &self.fleet;
        Ok(out)
    }

    fn remove(&mut self, _st: &DriveState, _vol: u32) {}

    fn repair(
        &mut self,
        st: &DriveState,
        _vol: u32,
        class: &ClassInfo,
        size: u64,
        current: &[u32],
        members: &[usize],
    ) -> Result<Vec<u32>, String> {
        let mut avoid = current.to_vec();
        let mut out = Vec::with_capacity(members.len());
        for &m in members {
            let d = self.pick(st, class.kinds, size, &avoid).ok_or_else(|| {
                format!(
                    "random: no replacement drive for member {m} of {}",
                    quote(&class.class.name)
                )
            })?;
            avoid.push(d);
            out.push(d);
        }
        Ok(out)
    }

    fn drives_down(&mut self, _st: &DriveState, _drives: &[u32]) -> Result<(), String> {
        Ok(())
    }

    fn drives_up(&mut self, _st: &DriveState, _drives: &[u32]) -> Result<(), String> {
        Ok(())
    }
}
