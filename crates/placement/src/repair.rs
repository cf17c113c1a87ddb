//! Evacuation and drain planning: re-place exactly the members on a failed or draining drive,
//! JBOD, server or any other failure domain, each under its volume's original request with the
//! volume's other members pinned.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::engine::{Engine, PlacementError, SoftViolation};
use crate::inventory::NONE;
use crate::model::{DriveId, Health, VolumeId};

/// What a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    /// The target failed: members are rebuilt from their peers; target drives become
    /// [`Health::Failed`] when applied.
    Evacuate,
    /// The target is taken out of service: members are copied off; target drives become
    /// [`Health::Draining`] when applied.
    Drain,
    /// Members move from the fullest drives to emptier ones (after capacity was added); no
    /// drive changes health.
    Rebalance,
}

impl PlanKind {
    /// The health the target drives take when the plan is applied.
    fn target_health(self) -> Option<Health> {
        match self {
            PlanKind::Evacuate => Some(Health::Failed),
            PlanKind::Drain => Some(Health::Draining),
            PlanKind::Rebalance => None,
        }
    }
}

/// One member moving to a new drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// Volume.
    pub volume: VolumeId,
    /// Member index.
    pub member: usize,
    /// Drive it leaves (inside the target).
    pub from: DriveId,
    /// Drive it goes to.
    pub to: DriveId,
}

/// Members of one volume that cannot be re-placed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplaceable {
    /// Volume.
    pub volume: VolumeId,
    /// Affected member indices.
    pub members: Vec<usize>,
    /// The placement error, rendered.
    pub reason: String,
}

/// A repair or drain plan. Producing it changes nothing; [`Engine::apply_plan`] commits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairPlan {
    /// Evacuate or drain.
    pub kind: PlanKind,
    /// The drive or failure-domain id given.
    pub target: String,
    /// Drives in the target.
    pub drives: Vec<DriveId>,
    /// Moves, grouped by volume (volumes in id order), members in index order.
    pub moves: Vec<Move>,
    /// Volumes whose affected members could not be re-placed.
    pub unplaceable: Vec<Unplaceable>,
    /// Soft constraints the re-placed volumes no longer honour.
    pub soft_violations: Vec<(VolumeId, SoftViolation)>,
}

impl Engine {
    /// Plans the repair of every member on a failed drive or failure domain (drive id or domain
    /// id at any level, e.g. a JBOD, a server or a rack). Each affected volume is re-placed
    /// under its original request with its unaffected members pinned, so nothing else moves.
    /// Moves are planned in sequence (later ones see the space earlier ones take). The engine's
    /// state is unchanged afterwards.
    pub fn plan_evacuation(&mut self, target: &str) -> Result<RepairPlan, PlacementError> {
        self.plan_repair(target, PlanKind::Evacuate)
    }

    /// Plans moving every member off a drive or failure domain that is being taken out of
    /// service. Same rules as [`Engine::plan_evacuation`].
    pub fn plan_drain(&mut self, target: &str) -> Result<RepairPlan, PlacementError> {
        self.plan_repair(target, PlanKind::Drain)
    }

    fn plan_repair(&mut self, target: &str, kind: PlanKind) -> Result<RepairPlan, PlacementError> {
        let _span = tracing::debug_span!("placement.repair", target, kind = ?kind).entered();
        let drives = self
            .inv
            .target_drives(target)
            .ok_or_else(|| PlacementError::UnknownTarget(target.to_string()))?;
        let Some(health) = kind.target_health() else {
            return Err(PlacementError::UnknownTarget(target.to_string()));
        };
        let saved: Vec<(u32, Health)> = drives
            .iter()
            .map(|&d| (d, self.inv.live.health[d as usize]))
            .collect();
        for &d in &drives {
            self.set_health(d, health);
        }
        let mut affected: BTreeMap<VolumeId, Vec<usize>> = BTreeMap::new();
        for &d in &drives {
            for &(slot, m) in &self.drive_members[d as usize] {
                if let Some(v) = &self.volumes[slot as usize] {
                    affected
                        .entry(v.spec.id.clone())
                        .or_default()
                        .push(m as usize);
                }
            }
        }
        let mut plan = RepairPlan {
            kind,
            target: target.to_string(),
            drives: drives
                .iter()
                .map(|&d| self.inv.spec.drives[d as usize].id.clone())
                .collect(),
            moves: Vec::new(),
            unplaceable: Vec::new(),
            soft_violations: Vec::new(),
        };
        let mut undo: Vec<(u32, u64, u64)> = Vec::new();
        for (vid, mut members) in affected {
            members.sort_unstable();
            members.dedup();
            let attempt = self
                .compile_replacement(&vid, &members)
                .and_then(|(c, req, old)| {
                    self.plan_compiled(&req, &c)
                        .map(|(p, assign)| (p, assign, old, req))
                });
            match attempt {
                Ok((placement, assign, old, req)) => {
                    for &m in &members {
                        plan.moves.push(Move {
                            volume: vid.clone(),
                            member: m,
                            from: self.inv.spec.drives[old[m] as usize].id.clone(),
                            to: self.inv.spec.drives[assign[m] as usize].id.clone(),
                        });
                        self.charge(assign[m], req.size.0, req.bandwidth.0, true);
                        undo.push((assign[m], req.size.0, req.bandwidth.0));
                    }
                    for v in placement.soft_violations {
                        plan.soft_violations.push((vid.clone(), v));
                    }
                }
                Err(e) => plan.unplaceable.push(Unplaceable {
                    volume: vid.clone(),
                    members,
                    reason: e.to_string(),
                }),
            }
        }
        for (d, size, demand) in undo.into_iter().rev() {
            self.charge(d, size, demand, false);
        }
        for (d, h) in saved {
            self.set_health(d, h);
        }
        Ok(plan)
    }

    /// Commits a plan made by [`Engine::plan_evacuation`] or [`Engine::plan_drain`]: marks the
    /// target drives failed or draining and moves each listed member. Checks the whole plan
    /// against the current state first; on error nothing changes.
    pub fn apply_plan(&mut self, plan: &RepairPlan) -> Result<(), PlacementError> {
        let stale = |m: String| PlacementError::StalePlan(m);
        let mut targets = Vec::new();
        for id in &plan.drives {
            targets.push(
                *self
                    .inv
                    .ix
                    .drive_index
                    .get(id)
                    .ok_or_else(|| stale(format!("unknown drive '{id}'")))?,
            );
        }
        // Free space per drive as the moves are applied in order (a rebalance may move a member
        // onto a drive and a later one off it).
        let mut free: HashMap<u32, u64> = HashMap::new();
        // Each touched volume's drives as the moves are applied in order (a rebalance may move
        // one member off a drive and a later member of the same volume onto it).
        let mut drives: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut steps = Vec::new();
        for mv in &plan.moves {
            let slot = self
                .slot_of(&mv.volume)
                .ok_or_else(|| stale(format!("unknown volume '{}'", mv.volume)))?;
            let vol = self.volumes[slot as usize]
                .as_ref()
                .ok_or_else(|| stale(format!("unknown volume '{}'", mv.volume)))?;
            let now = drives.entry(slot).or_insert_with(|| vol.drives.clone());
            let cur = *now.get(mv.member).ok_or_else(|| {
                stale(format!(
                    "volume '{}' has no member {}",
                    mv.volume, mv.member
                ))
            })?;
            if self.inv.spec.drives[cur as usize].id != mv.from {
                return Err(stale(format!(
                    "volume '{}' member {} is on '{}', not '{}'",
                    mv.volume, mv.member, self.inv.spec.drives[cur as usize].id, mv.from
                )));
            }
            let &to = self
                .inv
                .ix
                .drive_index
                .get(&mv.to)
                .ok_or_else(|| stale(format!("unknown drive '{}'", mv.to)))?;
            if self.inv.live.health[to as usize] != Health::Healthy || targets.contains(&to) {
                return Err(stale(format!("drive '{}' is not healthy", mv.to)));
            }
            if now.contains(&to) {
                return Err(stale(format!(
                    "volume '{}' already uses drive '{}'",
                    mv.volume, mv.to
                )));
            }
            let size = vol.spec.request.size.0;
            let spec_free = |d: u32| self.inv.live.free[d as usize].0;
            let left = *free.entry(to).or_insert_with(|| spec_free(to));
            if left < size {
                return Err(stale(format!(
                    "drive '{}' has {left} bytes free when the plan moves a member of {size} bytes onto it",
                    mv.to
                )));
            }
            free.insert(to, left - size);
            let out = free.entry(cur).or_insert_with(|| spec_free(cur));
            *out = out.saturating_add(size);
            now[mv.member] = to;
            steps.push((slot, mv.member, to));
        }
        if let Some(health) = plan.kind.target_health() {
            for &d in &targets {
                self.set_health(d, health);
            }
        }
        for (slot, m, to) in steps {
            self.move_member(slot, m, to);
        }
        self.bump_version();
        Ok(())
    }

    /// Plans at most `max_moves` member moves that bring drive utilization toward the mean
    /// (after drives were added, or after uneven removals), fewest first: each move takes a
    /// member off the currently fullest drive, re-placed under its volume's request with its
    /// other members pinned (so every hard constraint keeps holding), and only if the
    /// destination ends up less utilized than the source was. Stops when the fullest drive is
    /// within 1% of the mean utilization (by bytes) of the healthy drives, or when no move
    /// helps. Each member moves at most once. Producing the plan changes nothing;
    /// [`Engine::apply_plan`] commits it.
    pub fn plan_rebalance(&mut self, max_moves: usize) -> RepairPlan {
        let _span = tracing::debug_span!("placement.rebalance", max_moves).entered();
        let mut plan = RepairPlan {
            kind: PlanKind::Rebalance,
            target: "rebalance".into(),
            drives: Vec::new(),
            moves: Vec::new(),
            unplaceable: Vec::new(),
            soft_violations: Vec::new(),
        };
        let n = self.inv.spec.drives.len() as u32;
        let util = |e: &Engine, d: u32| {
            let s = &e.inv.spec.drives[d as usize];
            1.0 - e.inv.live.free[d as usize].0 as f64 / s.capacity.0 as f64
        };
        let live = &self.inv.live;
        let (used, cap) = self
            .inv
            .spec
            .drives
            .iter()
            .enumerate()
            .filter(|&(d, _)| live.health[d] == Health::Healthy)
            .fold((0u128, 0u128), |(u, c), (d, s)| {
                (
                    u + (s.capacity.0 - live.free[d].0) as u128,
                    c + s.capacity.0 as u128,
                )
            });
        let mean = if cap == 0 {
            0.0
        } else {
            used as f64 / cap as f64
        };
        let mut moved: std::collections::HashSet<(u32, u32)> = Default::default();
        let mut stuck: std::collections::HashSet<u32> = Default::default();
        let mut undo: Vec<(u32, usize, u32)> = Vec::new();
        while plan.moves.len() < max_moves {
            let Some(src) = (0..n)
                .filter(|&d| !stuck.contains(&d) && !self.drive_members[d as usize].is_empty())
                .max_by(|&a, &b| util(self, a).total_cmp(&util(self, b)).then(b.cmp(&a)))
            else {
                break;
            };
            let u_src = util(self, src);
            if u_src <= mean * 1.01 {
                break;
            }
            // Largest members first: fewer moves for the same relief.
            let mut members: Vec<(u64, u32, u32)> = self.drive_members[src as usize]
                .iter()
                .filter(|x| !moved.contains(x))
                .filter_map(|&(slot, m)| {
                    let v = self.volumes[slot as usize].as_ref()?;
                    Some((v.spec.request.size.0, slot, m))
                })
                .collect();
            members.sort_unstable_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
            let mut done = false;
            for (size, slot, m) in members {
                let Some(vid) = self.volumes[slot as usize]
                    .as_ref()
                    .map(|v| v.spec.id.clone())
                else {
                    continue;
                };
                let Ok((c, req, _)) = self.compile_replacement(&vid, &[m as usize]) else {
                    continue;
                };
                let Ok((placement, assign)) = self.plan_compiled(&req, &c) else {
                    continue;
                };
                let to = assign[m as usize];
                let t = &self.inv.spec.drives[to as usize];
                let u_to = 1.0
                    - self.inv.live.free[to as usize].0.saturating_sub(size) as f64
                        / t.capacity.0 as f64;
                if u_to >= u_src {
                    continue;
                }
                plan.moves.push(Move {
                    volume: vid.clone(),
                    member: m as usize,
                    from: self.inv.spec.drives[src as usize].id.clone(),
                    to: t.id.clone(),
                });
                for v in placement.soft_violations {
                    plan.soft_violations.push((vid.clone(), v));
                }
                self.move_member(slot, m as usize, to);
                undo.push((slot, m as usize, src));
                moved.insert((slot, m));
                done = true;
                break;
            }
            if !done {
                stuck.insert(src);
            }
        }
        for (slot, m, from) in undo.into_iter().rev() {
            self.move_member(slot, m, from);
        }
        plan
    }

    fn move_member(&mut self, slot: u32, m: usize, to: u32) {
        let Some(vol) = self.volumes[slot as usize].as_ref() else {
            return;
        };
        let from = vol.drives[m];
        let (size, demand) = (vol.spec.request.size.0, vol.spec.request.bandwidth.0);
        if from != NONE {
            self.charge(from, size, demand, false);
            self.drive_members[from as usize].retain(|&x| x != (slot, m as u32));
        }
        self.charge(to, size, demand, true);
        self.drive_members[to as usize].push((slot, m as u32));
        let id = self.inv.spec.drives[to as usize].id.clone();
        if let Some(v) = self.volumes[slot as usize]
            .as_mut()
            .map(std::sync::Arc::make_mut)
        {
            v.drives[m] = to;
            v.spec.members[m] = id;
        }
    }
}
