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
        let health = match kind {
            PlanKind::Evacuate => Health::Failed,
            PlanKind::Drain => Health::Draining,
        };
        let saved: Vec<(u32, Health)> = drives
            .iter()
            .map(|&d| (d, self.inv.spec.drives[d as usize].health))
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
                    .drive_index
                    .get(id)
                    .ok_or_else(|| stale(format!("unknown drive '{id}'")))?,
            );
        }
        let mut need: HashMap<u32, u64> = HashMap::new();
        let mut steps = Vec::new();
        for mv in &plan.moves {
            let &slot = self
                .vol_index
                .get(&mv.volume)
                .ok_or_else(|| stale(format!("unknown volume '{}'", mv.volume)))?;
            let vol = self.volumes[slot as usize]
                .as_ref()
                .ok_or_else(|| stale(format!("unknown volume '{}'", mv.volume)))?;
            let cur = *vol.drives.get(mv.member).ok_or_else(|| {
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
                .drive_index
                .get(&mv.to)
                .ok_or_else(|| stale(format!("unknown drive '{}'", mv.to)))?;
            if self.inv.spec.drives[to as usize].health != Health::Healthy || targets.contains(&to)
            {
                return Err(stale(format!("drive '{}' is not healthy", mv.to)));
            }
            if vol.drives.contains(&to) {
                return Err(stale(format!(
                    "volume '{}' already uses drive '{}'",
                    mv.volume, mv.to
                )));
            }
            *need.entry(to).or_default() += vol.spec.request.size.0;
            steps.push((slot, mv.member, to));
        }
        for (&d, &n) in &need {
            if self.inv.spec.drives[d as usize].free.0 < n {
                return Err(stale(format!(
                    "drive '{}' has {} bytes free, the plan needs {}",
                    self.inv.spec.drives[d as usize].id, self.inv.spec.drives[d as usize].free, n
                )));
            }
        }
        let health = match plan.kind {
            PlanKind::Evacuate => Health::Failed,
            PlanKind::Drain => Health::Draining,
        };
        for &d in &targets {
            self.set_health(d, health);
        }
        for (slot, m, to) in steps {
            self.move_member(slot, m, to);
        }
        self.bump_version();
        Ok(())
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
        if let Some(v) = self.volumes[slot as usize].as_mut() {
            v.drives[m] = to;
            v.spec.members[m] = id;
        }
    }
}
