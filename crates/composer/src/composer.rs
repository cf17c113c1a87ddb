//! [`Composer`]: the controller logic, CSI-shaped and transport-free.
//!
//! Every change is planned in memory under one lock, made durable with one
//! [`Batch`] *outside* the lock (so concurrent creates share the store's
//! group commit), and only then acknowledged. `GetCapacity` plans on a
//! copy of the pool of its own, kept current by replaying the changes, and
//! holds the state's lock only to take them. A create's drives stay taken in
//! memory while its batch is in flight; if the batch fails they are given
//! back. A delete is recorded first and frees its drives afterwards. So a
//! controller killed at any instant restarts with every acknowledged volume
//! and no allocation that is not in a record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use csi_types::paging::{Page, Paging};
use csi_types::types::{CapacityRange, Topology, TopologyRequirement};
use serde::Serialize;

use crate::convert;
use crate::error::Error;
use crate::inventory::{Health, Inventory, Media, TransportSet};
use crate::params::{Parameters, VolumeType};
use crate::plan::{Pool, ReconcileReport, SLICE_GRANULARITY, VolumeRequest};
use crate::store::{Batch, LayoutKind, Op, Store, VolumeRecord};
use parking_lot::{FairMutex, FairMutexGuard as FairGuard};

/// A volume and where it is accessible from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    /// The record.
    pub record: VolumeRecord,
    /// Accessible topology.
    pub topology: Vec<Topology>,
    /// `None` when healthy, else why not.
    pub abnormal: Option<String>,
}

impl std::ops::Deref for VolumeView {
    type Target = VolumeRecord;
    fn deref(&self) -> &VolumeRecord {
        &self.record
    }
}

/// What `GetCapacity` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes available for new volumes of these parameters.
    pub available: u64,
    /// The largest volume that fits now, as placement decides it for these
    /// parameters (separation, spreading, tags, transports included).
    pub maximum_volume_size: u64,
    /// The smallest volume (`minVolumeSize`, or the slice granularity).
    pub minimum_volume_size: Option<u64>,
}

/// One drive in the admin report.
#[derive(Debug, Clone, Serialize)]
pub struct DriveReport {
    /// Drive id.
    pub id: String,
    /// Enclosure.
    pub jbod: String,
    /// Medium.
    pub kind: Media,
    /// Capacity.
    pub capacity: u64,
    /// Bytes in use.
    pub used: u64,
    /// Effective health.
    pub health: Health,
    /// Volumes with a member on it.
    pub volumes: Vec<String>,
}

/// One server in the admin report.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// Server id.
    pub id: String,
    /// Effective health.
    pub health: Health,
    /// Volumes published to it.
    pub published: usize,
    /// Attach limit.
    pub max_volumes: u32,
}

struct State {
    pool: Pool,
    volumes: BTreeMap<String, VolumeRecord>,
    by_name: HashMap<String, String>,
    busy: HashSet<String>,
    /// This replica's own commits in flight, by volume id: the record a
    /// create commits (`None` for a delete), and the revision at which the
    /// watch showed it landed, if it did before the commit answered.
    in_flight: HashMap<String, (Option<VolumeRecord>, Option<u64>)>,
    attached: HashMap<String, u32>,
    next_seq: u64,
    /// The store revision this state reflects (shared stores): everything
    /// up to it is applied, nothing after it is missing.
    synced: u64,
    /// The latest revision the store reported ([`Store::changes`]): `synced`
    /// reaches it as soon as no change is held back in `deferred`, even when
    /// nothing new arrives (a replica whose `synced` stayed behind after its
    /// held-back changes were applied would conflict on every plan until
    /// another replica happened to write).
    reported: u64,
    /// Per volume id, the revision of the latest change applied to it.
    seen: HashMap<String, u64>,
    /// Changes of other writers not applied yet (their name is busy here,
    /// or their members are held by a plan in flight); `synced` stays below
    /// the oldest of them.
    deferred: Vec<(String, u64, Option<VolumeRecord>)>,
    /// The changes of `pool` since `GetCapacity` last brought its copy of
    /// the pool up to date ([`Composer::capacity_pool`]), in order; `None`
    /// while there is no copy to keep current.
    journal: Option<Vec<PoolChange>>,
    /// Whether `journal` holds every change since the copy was last
    /// brought up to date: false once a change no replay makes came (a
    /// repair, a slice's growth) or more than [`JOURNAL_LIMIT`] changes,
    /// and the next call copies the pool anew. The journal is left for
    /// that call to drop, with the state unlocked.
    journal_complete: bool,
}

/// A change of the pool, as `GetCapacity`'s copy replays it: the same
/// [`Pool::restore`] that adds another replica's volume and that a
/// restart builds from, so the copy plans exactly as the pool does
/// (`capacity_from_the_copy_is_the_answer_of_the_pool` compares them).
enum PoolChange {
    /// A volume taken: a create's plan, another writer's record.
    Restore(VolumeRecord),
    /// A volume given back: deleted, or a create whose commit failed.
    Release(VolumeRecord),
    /// An operator's mark.
    Mark(String, Health),
}

impl PoolChange {
    fn replay(&self, pool: &mut Pool) -> Result<(), Error> {
        match self {
            PoolChange::Restore(r) => pool.restore(r),
            PoolChange::Release(r) => pool.release(r),
            PoolChange::Mark(t, h) => pool.set_mark(t, *h),
        }
    }
}

/// The changes kept for `GetCapacity`'s copy at most: past them the journal
/// stops and the next call copies the pool anew (one copy under the
/// lock, as the first call makes), rather than the journal growing
/// while no `GetCapacity` comes.
/// (Four in tests, so that `capacity_from_the_copy_is_the_answer_of_the_pool`
/// goes past it.)
const JOURNAL_LIMIT: usize = if cfg!(test) { 4 } else { 1 << 16 };

impl State {
    /// Records a change of the pool for `GetCapacity`'s copy (made only
    /// while there is a copy to keep current).
    fn journal(&mut self, change: impl FnOnce() -> PoolChange) {
        if !self.journal_complete {
            return;
        }
        match &mut self.journal {
            Some(j) if j.len() < JOURNAL_LIMIT => j.push(change()),
            Some(_) => self.journal_complete = false,
            None => {}
        }
    }

    /// Says that the pool changed in a way no [`PoolChange`] replays: the
    /// next `GetCapacity` copies it anew.
    fn journal_lost(&mut self) {
        self.journal_complete = false;
    }
}

/// The composer.
pub struct Composer {
    inv: Arc<Inventory>,
    store: Arc<dyn Store>,
    /// Served in turn (parking_lot's `FairMutex`: an unlock hands it to the
    /// caller waiting longest): with the standard mutex a caller that
    /// unlocked took it straight back while the one it woke got up, and a
    /// create waited behind several `GetCapacity` calls asked back to back
    /// (which then planned under this lock). Not poisoned by a panic, as
    /// the state stays as the composer's own undo left it.
    state: FairMutex<State>,
    /// How many plans in flight have ended (their names no longer busy),
    /// with its condition: [`Composer::settle`] waits on it without
    /// holding the state (a waiter holding its turn would stop every call).
    settled: (Mutex<u64>, Condvar),
    /// `GetCapacity`'s copy of the pool, which it plans on holding this
    /// lock only, so that creates and deletes go on meanwhile: at 100,000
    /// drives a call plans for tens of milliseconds, and with the state
    /// held for that time every create waited behind it. Under `state` a
    /// call only moves the journal of changes out (or, the first time and
    /// after a change no journal replays, copies the pool); it replays
    /// them here. Taken before `state`, never while holding it.
    capacity_pool: Mutex<Option<Pool>>,
    /// Called by `GetCapacity` once it has its copy, before planning.
    #[cfg(test)]
    capacity_hook: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    report: ReconcileReport,
}

/// How often a create or delete plans again after store conflicts before
/// answering `ABORTED` (the CO retries then).
const CONFLICT_RETRIES: u32 = 16;

/// How long a retry after a conflict waits for the plans in flight that hold
/// other writers' changes back (one store round trip each, normally).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("vol-")?.parse().ok()
}

impl Composer {
    /// Loads the store, rebuilds the pool and checks records against the
    /// inventory ([`Composer::reconcile_report`]).
    ///
    /// Refuses, with [`Error::Inventory`] and before reading the store, an
    /// inventory a composer cannot serve ([`Inventory::check_can_serve`]:
    /// no drive, or no server to attach a volume to); such a composer
    /// would answer every create `RESOURCE_EXHAUSTED` and could never
    /// publish.
    pub fn open(inv: Inventory, store: Arc<dyn Store>) -> Result<Composer, Error> {
        inv.check_can_serve()?;
        let inv = Arc::new(inv);
        let st = store.load()?;
        let (pool, report) = Pool::build(inv.clone(), st.marks.clone(), &st.volumes)?;
        let mut by_name = HashMap::new();
        let mut attached: HashMap<String, u32> = HashMap::new();
        let mut next_seq = st.next_seq;
        for v in st.volumes.values() {
            by_name.insert(v.name.clone(), v.id.clone());
            for n in v.published.keys() {
                *attached.entry(n.clone()).or_default() += 1;
            }
            if let Some(s) = seq_of(&v.id) {
                next_seq = next_seq.max(s + 1);
            }
        }
        for line in report.lines() {
            tracing::warn!("reconcile: {line}");
        }
        Ok(Composer {
            inv,
            store,
            state: FairMutex::new(State {
                pool,
                volumes: st.volumes,
                by_name,
                busy: HashSet::new(),
                in_flight: HashMap::new(),
                attached,
                next_seq,
                synced: st.revision,
                reported: st.revision,
                seen: HashMap::new(),
                deferred: Vec::new(),
                journal: None,
                journal_complete: false,
            }),
            settled: (Mutex::new(0), Condvar::new()),
            capacity_pool: Mutex::new(None),
            #[cfg(test)]
            capacity_hook: Mutex::new(None),
            report,
        })
    }

    fn record(st: &State, id: &str) -> Result<VolumeRecord, Error> {
        st.volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))
    }

    fn lock(&self) -> FairGuard<'_, State> {
        self.state.lock()
    }

    /// Says that a plan in flight ended (called with the state locked).
    fn notify_settled(&self) {
        let (ended, cv) = &self.settled;
        *ended.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    /// Locks the state and applies what other writers committed to a shared
    /// store since the last call ([`Store::changes`]): no reload, only the
    /// volumes and marks that changed.
    fn lock_synced(&self) -> Result<FairGuard<'_, State>, Error> {
        let mut st = self.lock();
        self.sync(&mut st)?;
        Ok(st)
    }

    /// Locks the state with what other writers committed applied as far as
    /// the store can tell now, for reports that answer even while a shared
    /// store is unreachable (then with the state as last synced). Without
    /// it a replica that serves no calls (a leader doing background work, an
    /// operator's report) would show the state of its last call.
    fn lock_current(&self) -> FairGuard<'_, State> {
        let mut st = self.lock();
        if let Err(e) = self.sync(&mut st) {
            tracing::debug!("reporting the state as last synced: {e}");
        }
        st
    }

    fn sync(&self, st: &mut State) -> Result<(), Error> {
        let Some(ch) = self.store.changes()? else {
            if !st.deferred.is_empty() {
                let revision = st.reported;
                Self::apply_changes(
                    st,
                    crate::store::Changes {
                        revision,
                        ..Default::default()
                    },
                );
            }
            return Ok(());
        };
        Self::apply_changes(st, ch);
        Ok(())
    }

    /// After a conflict: waits (at most [`SETTLE_WAIT`]) until no change of
    /// another writer is held back here. A change is held back while a plan
    /// in flight on this replica holds its name or its space; until that
    /// plan ends, `synced` stays below the change, and planning again would
    /// only conflict again, so the retries would run out in a moment.
    fn settle(&self) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + SETTLE_WAIT;
        let (ended, cv) = &self.settled;
        loop {
            let st = self.lock_synced()?;
            let now = std::time::Instant::now();
            if st.deferred.is_empty() || now >= deadline {
                return Ok(());
            }
            // Read under the state lock, which every plan's end holds when
            // it counts: an end after this read is seen by the wait.
            let seen = ended.lock().unwrap_or_else(|e| e.into_inner());
            let before = *seen;
            drop(st);
            drop(
                cv.wait_timeout_while(seen, deadline - now, |n| *n == before)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }

    fn apply_changes(st: &mut State, ch: crate::store::Changes) {
        let mut vols = std::mem::take(&mut st.deferred);
        vols.extend(ch.volumes);
        for (id, rev, rec) in vols {
            if st.seen.get(&id).is_some_and(|&r| r >= rev) {
                continue;
            }
            // This replica's own commit, brought by the watch before the
            // commit answered: the call in flight applies it. Held back, it
            // kept `synced` below a revision this replica wrote itself, so
            // every plan conflicted on the keys it had written (with dozens
            // of creates on one replica there was always one such commit,
            // and the creates answered `ABORTED`).
            if let Some((planned, landed)) = st.in_flight.get_mut(&id)
                && *planned == rec
            {
                *landed = Some(rev);
                st.seen.insert(id, rev);
                continue;
            }
            if let (Some(new), Some(old)) = (&rec, st.volumes.get(&id))
                && new == old
            {
                st.seen.insert(id, rev);
                continue;
            }
            let name = rec
                .as_ref()
                .map(|r| r.name.clone())
                .or_else(|| st.volumes.get(&id).map(|r| r.name.clone()));
            if name.as_ref().is_some_and(|n| st.busy.contains(n)) {
                st.deferred.push((id, rev, rec));
                continue;
            }
            let old = st.volumes.remove(&id);
            if let Some(old) = &old {
                st.by_name.remove(&old.name);
                for n in old.published.keys() {
                    if let Some(c) = st.attached.get_mut(n) {
                        *c = c.saturating_sub(1);
                    }
                }
                match st.pool.release(old) {
                    Ok(()) => st.journal(|| PoolChange::Release(old.clone())),
                    Err(e) => {
                        st.journal_lost();
                        tracing::error!("releasing {id} changed by another replica: {e}");
                    }
                }
            }
            if let Some(new) = rec {
                if let Err(e) = st.pool.restore(&new) {
                    // Held by a plan in flight here, which will fail its
                    // compare-and-swap; applied once that plan is released.
                    tracing::debug!("deferring {id}: {e}");
                    if let Some(old) = old {
                        match st.pool.restore(&old) {
                            Ok(()) => st.journal(|| PoolChange::Restore(old.clone())),
                            Err(e) => {
                                st.journal_lost();
                                tracing::error!("restoring {id}: {e}");
                            }
                        }
                        st.by_name.insert(old.name.clone(), id.clone());
                        for n in old.published.keys() {
                            *st.attached.entry(n.clone()).or_default() += 1;
                        }
                        st.volumes.insert(id.clone(), old);
                    }
                    st.deferred.push((id, rev, Some(new)));
                    continue;
                }
                st.journal(|| PoolChange::Restore(new.clone()));
                st.by_name.insert(new.name.clone(), id.clone());
                for n in new.published.keys() {
                    *st.attached.entry(n.clone()).or_default() += 1;
                }
                if let Some(s) = seq_of(&id) {
                    st.next_seq = st.next_seq.max(s + 1);
                }
                st.volumes.insert(id.clone(), new);
            }
            st.seen.insert(id, rev);
        }
        for (target, h) in ch.marks {
            let h = h.unwrap_or(Health::Healthy);
            match st.pool.set_mark(&target, h) {
                Ok(()) => st.journal(|| PoolChange::Mark(target, h)),
                Err(e) => {
                    st.journal_lost();
                    tracing::error!("applying the mark on {target}: {e}");
                }
            }
        }
        if let Some(n) = ch.next_seq {
            st.next_seq = st.next_seq.max(n);
        }
        st.reported = st.reported.max(ch.revision);
        let oldest = st.deferred.iter().map(|d| d.1 - 1).min();
        st.synced = st
            .synced
            .max(oldest.map_or(st.reported, |o| o.min(st.reported)));
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// What the start-up check found.
    pub fn reconcile_report(&self) -> &ReconcileReport {
        &self.report
    }

    fn view(&self, st: &State, rec: &VolumeRecord) -> VolumeView {
        let mut why = Vec::new();
        if st.pool.is_unplaced(&rec.id) {
            why.push("the record names drives the inventory does not have".to_string());
        }
        let mut failed = Vec::new();
        for (i, m) in rec.members.iter().enumerate() {
            if let Some(d) = self.inv.drive_index(&m.drive)
                && st.pool.drive_health(d) == Health::Failed
            {
                failed.push(i);
            }
        }
        if !failed.is_empty() {
            let names: Vec<&str> = failed
                .iter()
                .map(|&i| rec.members[i].drive.as_str())
                .collect();
            let lost = match rec.layout.kind {
                LayoutKind::Single | LayoutKind::Slice | LayoutKind::Raid0 => true,
                LayoutKind::Raid1 | LayoutKind::SliceMirror => failed.len() >= rec.members.len(),
                // md raid10 n2 pairs members (0,1), (2,3), ...
                LayoutKind::Raid10 => failed.iter().any(|&i| failed.contains(&(i ^ 1))),
            };
            why.push(format!(
                "member drive(s) {} failed: {}",
                names.join(", "),
                if lost {
                    "data lost"
                } else {
                    "degraded, redundancy reduced until repaired"
                }
            ));
        }
        VolumeView {
            topology: st.pool.volume_topology(rec),
            record: rec.clone(),
            abnormal: (!why.is_empty()).then(|| why.join("; ")),
        }
    }

    /// `CreateVolume`. Idempotent by name: a repeat with the same parameters,
    /// access type, an access mode the volume serves (a single-node volume
    /// does not serve multi-node access), a topology it is accessible from
    /// and a range the volume satisfies returns it; another repeat is
    /// `AlreadyExists`. On a shared store, a plan that another replica's
    /// commit made stale is planned again on fresh state.
    pub fn create(
        &self,
        name: &str,
        parameters: &BTreeMap<String, String>,
        range: CapacityRange,
        block: bool,
        single_node: bool,
        topology: Option<&TopologyRequirement>,
    ) -> Result<VolumeView, Error> {
        self.retrying(|| self.create_once(name, parameters, range, block, single_node, topology))
    }

    /// Runs `f` again after a store `Conflict`, once caught up with the store.
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(Error::Conflict(m)) if attempt < CONFLICT_RETRIES => {
                    tracing::debug!("retrying after a store conflict: {m}");
                    attempt += 1;
                    self.store.catch_up()?;
                    self.settle()?;
                }
                other => return other,
            }
        }
    }

    fn create_once(
        &self,
        name: &str,
        parameters: &BTreeMap<String, String>,
        range: CapacityRange,
        block: bool,
        single_node: bool,
        topology: Option<&TopologyRequirement>,
    ) -> Result<VolumeView, Error> {
        let params = Parameters::parse(parameters)?;
        let (id, rec, read) = {
            let mut st = self.lock_synced()?;
            if st.busy.contains(name) {
                return Err(Error::Busy(format!(
                    "volume {name:?} is being created or deleted"
                )));
            }
            if let Some(id) = st.by_name.get(name) {
                let v = &st.volumes[id];
                // The same StorageClass read by the one rule (`fsType: XFS`
                // is `xfs`; the external-provisioner's own keys do not
                // count), not the same spelling.
                if !Parameters::same_class(&v.parameters, parameters) {
                    return Err(Error::AlreadyExists(format!(
                        "volume {name:?} exists with other parameters"
                    )));
                }
                if !range.contains(v.capacity) {
                    return Err(Error::AlreadyExists(format!(
                        "volume {name:?} exists with {} bytes, outside the requested range",
                        v.capacity
                    )));
                }
                if v.block != block {
                    return Err(Error::AlreadyExists(format!(
                        "volume {name:?} exists as a {} volume",
                        if v.block { "block" } else { "mount" }
                    )));
                }
                // A volume made for one node does not serve a request for
                // many (CSI: incompatible `volume_capabilities`); before,
                // it was answered as if it did.
                if v.single_node && !single_node {
                    return Err(Error::AlreadyExists(format!(
                        "volume {name:?} exists for single-node access, and multi-node access is asked"
                    )));
                }
                // Likewise a volume the requested topology cannot reach
                // (CSI: incompatible `accessibility_requirements`).
                if let Some(t) = topology
                    && !self.accessible_from(v, t)
                {
                    return Err(Error::AlreadyExists(format!(
                        "volume {name:?} exists in site {} over {}, which no server of the \
                         requested accessibility_requirements reaches",
                        v.site, v.transport
                    )));
                }
                return Ok(self.view(&st, v));
            }
            // A repeat of a create made before these rules answers as it
            // did; a new volume's class is held to them.
            Parameters::check_new(parameters)?;
            let seq = st.next_seq;
            let id = format!("vol-{seq:012}");
            let req = VolumeRequest {
                name,
                parameters: &params,
                range,
                topology,
            };
            let plan = st.pool.place(&id, &req)?;
            // Taken once planned: a refused create leaves the state as it
            // was (before, each refusal used an id, and ids skipped).
            st.next_seq += 1;
            for s in &plan.soft_violations {
                tracing::info!(volume = %id, "soft constraint not met: {s}");
            }
            let rec = VolumeRecord {
                id: id.clone(),
                name: name.to_string(),
                parameters: parameters.clone(),
                required_bytes: range.required_bytes,
                limit_bytes: range.limit_bytes,
                capacity: plan.capacity,
                layout: plan.layout,
                members: plan.members,
                request: plan.request,
                site: self.inv.site_id(plan.site).to_string(),
                transport: plan.transport,
                block,
                single_node,
                published: BTreeMap::new(),
            };
            st.journal(|| PoolChange::Restore(rec.clone()));
            st.busy.insert(name.to_string());
            st.in_flight.insert(id.clone(), (Some(rec.clone()), None));
            (id, rec, st.synced)
        };
        // The state is held twice, deliberately: the commit (a store round
        // trip, shared by concurrent creates through the group commit) runs
        // with it free. Nothing the first hold decided can go stale before
        // the second: it took the name (`busy`: another create or delete
        // of it answers `Busy`, another writer's change of it is held back
        // in `deferred`), the id (`next_seq`) and the drives and slices
        // (planned into the pool, where no other plan finds them free);
        // another writer's commit that this plan did not see makes the
        // store refuse this one (`read_at`: `Conflict`, planned again).
        // So the second hold re-decides nothing: it records the answer or
        // gives the plan back. (Tested by
        // `the_creates_between_a_creates_two_holds_neither_repeat_it_nor_share_its_drives`.)
        let seq = seq_of(&id).unwrap_or(0);
        let result = self.store.commit(Batch::read_at(
            read,
            vec![Op::PutVolume(Box::new(rec.clone())), Op::NextSeq(seq + 1)],
        ));
        let mut st = self.lock();
        st.busy.remove(name);
        self.notify_settled();
        self.sync_after_failure(&mut st, &result);
        let landed = st.in_flight.remove(&id).and_then(|(_, r)| r);
        match result.or_else(|e| landed.ok_or(e)) {
            Ok(rev) => {
                st.seen.insert(id.clone(), rev);
                st.by_name.insert(name.to_string(), id.clone());
                st.volumes.insert(id, rec.clone());
                Ok(self.view(&st, &rec))
            }
            Err(e) => {
                match st.pool.release(&rec) {
                    Ok(()) => st.journal(|| PoolChange::Release(rec.clone())),
                    Err(undo) => {
                        st.journal_lost();
                        tracing::error!("undoing the plan of {id} after a store failure: {undo}");
                    }
                }
                Err(e)
            }
        }
    }

    /// Whether a server that one of `req`'s segments names supports the
    /// transport of volume `rec` in its site, as a create asking `req`
    /// would have needed (health aside: a repeat of a create answers what
    /// was made, whatever failed since).
    fn accessible_from(&self, rec: &VolumeRecord, req: &TopologyRequirement) -> bool {
        let Some(site) = self.inv.site_index(&rec.site) else {
            return false;
        };
        convert::candidate_sites(&self.inv, Some(req))
            .iter()
            .filter(|(s, _)| *s == site)
            .flat_map(|(_, scopes)| scopes)
            .any(|sc| {
                sc.any_server(&self.inv, site, |x| {
                    self.inv.servers()[x as usize]
                        .transports
                        .contains(rec.transport)
                })
            })
    }

    /// `DeleteVolume`. Deleting an unknown volume succeeds; a published one is
    /// `FailedPrecondition`.
    pub fn delete(&self, id: &str) -> Result<(), Error> {
        self.retrying(|| self.delete_once(id))
    }

    fn delete_once(&self, id: &str) -> Result<(), Error> {
        let (rec, read) = {
            let mut st = self.lock_synced()?;
            let Some(rec) = st.volumes.get(id).cloned() else {
                return Ok(());
            };
            if !rec.published.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id} is published to {}",
                    rec.published.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            if !st.busy.insert(rec.name.clone()) {
                return Err(Error::Busy(format!("volume {id} is busy")));
            }
            st.in_flight.insert(id.to_string(), (None, None));
            (rec, st.synced)
        };
        let result = self
            .store
            .commit(Batch::read_at(read, vec![Op::DeleteVolume(id.to_string())]));
        let mut st = self.lock();
        st.busy.remove(&rec.name);
        self.notify_settled();
        self.sync_after_failure(&mut st, &result);
        let landed = st.in_flight.remove(id).and_then(|(_, r)| r);
        let rev = result.or_else(|e| landed.ok_or(e))?;
        st.seen.insert(id.to_string(), rev);
        if st.volumes.remove(id).is_some() {
            st.by_name.remove(&rec.name);
            if let Err(e) = st.pool.release(&rec) {
                st.journal_lost();
                return Err(e);
            }
            st.journal(|| PoolChange::Release(rec.clone()));
        }
        Ok(())
    }

    /// After a commit that failed other than by a conflict (its answer may
    /// be lost with the transaction landed): applies what the watch brought
    /// meanwhile, so that a commit the watch shows landed is answered as
    /// done by its call (see `in_flight`) even when no other call synced
    /// while it was in flight.
    fn sync_after_failure(&self, st: &mut State, result: &Result<u64, Error>) {
        if let Err(e) = result
            && !matches!(e, Error::Conflict(_))
            && let Err(why) = self.sync(st)
        {
            tracing::debug!("after a failed commit ({e}), the watch cannot tell: {why}");
        }
    }

    fn commit_record(&self, st: &mut State, rec: VolumeRecord) -> Result<(), Error> {
        // Publication and expansion changes are small and rare; they are made
        // durable under the lock so that two of them never cross.
        let id = rec.id.clone();
        let rev = self.store.commit(Batch::read_at(
            st.synced,
            vec![Op::PutVolume(Box::new(rec))],
        ))?;
        st.seen.insert(id, rev);
        Ok(())
    }

    /// `ControllerPublishVolume`: maps the volume's drives to the server
    /// `node_id` over the volume's transport; returns the publish context.
    pub fn publish(
        &self,
        id: &str,
        node_id: &str,
        readonly: bool,
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut st = self.lock_synced()?;
        let rec = Self::record(&st, id)?;
        let s = convert::server_of_node(&self.inv, node_id)?;
        if let Some(&ro) = rec.published.get(node_id) {
            if ro != readonly {
                return Err(Error::AlreadyExists(format!(
                    "volume {id} is published to {node_id} {}",
                    if ro { "read-only" } else { "read-write" }
                )));
            }
            return Ok(self.context(&rec));
        }
        if rec.single_node && !rec.published.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is published to {} and its access mode allows one node",
                rec.published
                    .keys()
                    .next()
                    .map(String::as_str)
                    .unwrap_or("")
            )));
        }
        let srv = &self.inv.servers()[s as usize];
        match st.pool.server_health(s) {
            Health::Healthy => {}
            h => {
                return Err(Error::FailedPrecondition(format!(
                    "server {node_id} is {} and takes no new volumes",
                    format!("{h:?}").to_lowercase()
                )));
            }
        }
        if self.inv.site_id(srv.site) != rec.site || !srv.transports.contains(rec.transport) {
            return Err(Error::FailedPrecondition(format!(
                "server {node_id} cannot reach volume {id}: the volume is in site {} over {}, the server is in site {} with {}",
                rec.site,
                rec.transport,
                self.inv.site_id(srv.site),
                srv.transports
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let n = st.attached.get(node_id).copied().unwrap_or(0);
        if n >= srv.max_volumes {
            return Err(Error::Exhausted(format!(
                "server {node_id} has {n} volumes published, its attach limit (max_volumes {})",
                srv.max_volumes
            )));
        }
        let mut new = rec.clone();
        new.published.insert(node_id.to_string(), readonly);
        self.commit_record(&mut st, new.clone())?;
        *st.attached.entry(node_id.to_string()).or_default() += 1;
        let ctx = self.context(&new);
        st.volumes.insert(id.to_string(), new);
        Ok(ctx)
    }

    fn context(&self, rec: &VolumeRecord) -> BTreeMap<String, String> {
        let members: Vec<String> = rec
            .members
            .iter()
            .map(|m| format!("{}@{}+{}", m.drive, m.offset, m.len))
            .collect();
        BTreeMap::from([
            ("transport".into(), rec.transport.name().into()),
            ("layout".into(), rec.layout.kind.name().into()),
            ("members".into(), members.join(",")),
            ("chunkSectors".into(), rec.layout.chunk_sectors.to_string()),
            (
                "dataOffsetSectors".into(),
                rec.layout.data_offset_sectors.to_string(),
            ),
        ])
    }

    /// `ControllerUnpublishVolume`: unknown volumes and nodes, and volumes not
    /// published there, succeed.
    pub fn unpublish(&self, id: &str, node_id: Option<&str>) -> Result<(), Error> {
        let mut st = self.lock_synced()?;
        let Some(rec) = st.volumes.get(id).cloned() else {
            return Ok(());
        };
        let nodes: Vec<String> = match node_id {
            Some(n) if rec.published.contains_key(n) => vec![n.to_string()],
            Some(_) => return Ok(()),
            None => rec.published.keys().cloned().collect(),
        };
        if nodes.is_empty() {
            return Ok(());
        }
        let mut new = rec;
        for n in &nodes {
            new.published.remove(n);
        }
        self.commit_record(&mut st, new.clone())?;
        for n in &nodes {
            if let Some(c) = st.attached.get_mut(n) {
                *c = c.saturating_sub(1);
            }
        }
        st.volumes.insert(id.to_string(), new);
        Ok(())
    }

    /// One volume.
    pub fn get(&self, id: &str) -> Result<VolumeView, Error> {
        let st = self.lock_synced()?;
        let rec = st
            .volumes
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        Ok(self.view(&st, rec))
    }

    /// One `ListVolumes` page of volumes by id, as `paging` asks (its
    /// `starting_token` was checked when it was made: see
    /// [`csi_types::paging`]).
    pub fn list(&self, paging: &Paging) -> Page<VolumeView> {
        let st = self.lock_current();
        let from = paging.lower_bound().unwrap_or_default().to_string();
        let Page {
            entries,
            next_token,
        } = paging.page(st.volumes.range::<String, _>(from..));
        Page {
            entries: entries
                .into_iter()
                .map(|(_, v)| self.view(&st, v))
                .collect(),
            next_token,
        }
    }

    /// `ControllerExpandVolume` to `range`; returns the new capacity.
    /// Volumes never shrink: a `limit_bytes` below the volume's capacity is
    /// `OutOfRange`, and a smaller `required_bytes` answers the capacity.
    pub fn expand(&self, id: &str, range: CapacityRange) -> Result<u64, Error> {
        let mut st = self.lock_synced()?;
        let rec = Self::record(&st, id)?;
        let want = range
            .required_bytes
            .or(range.limit_bytes)
            .unwrap_or(rec.capacity);
        // Volumes never shrink: a limit below the volume's size is a range
        // no answer meets (before, the size was answered, above the limit).
        if let Some(l) = range.limit_bytes
            && rec.capacity > l
        {
            return Err(Error::OutOfRange(format!(
                "capacity_range: limit_bytes {l} is below the {} bytes volume {id} holds; volumes do not shrink",
                rec.capacity
            )));
        }
        if want <= rec.capacity {
            return Ok(rec.capacity);
        }
        if let Some(max) = Parameters::parse(&rec.parameters)?.max_volume_size
            && want > max
        {
            return Err(Error::OutOfRange(format!(
                "{want} bytes is more than the StorageClass's maxVolumeSize ({max} bytes)"
            )));
        }
        let mut new = rec.clone();
        // The device holds the volume and the node's header (LUKS2).
        let overhead = Parameters::parse(&rec.parameters)?.device_overhead();
        let need = want.saturating_add(overhead);
        if need <= rec.layout.usable_bytes {
            new.capacity = want;
        } else if rec.layout.kind == LayoutKind::Slice {
            let member = need.div_ceil(SLICE_GRANULARITY) * SLICE_GRANULARITY;
            // Re-placed pinned in placement, which no journal replays.
            st.journal_lost();
            let m = st.pool.grow_slice(&rec, member)?;
            new.members = vec![m];
            new.layout.member_bytes = member;
            new.layout.usable_bytes = member;
            new.capacity = want;
        } else {
            // Only a single slice grows in place; say which other kind
            // this is ("a single of whole drives or mirrored slices" read
            // as neither).
            let what = if rec.layout.kind == LayoutKind::SliceMirror {
                "mirrored slices, which do not grow in place"
            } else {
                "whole drives, which do not grow"
            };
            return Err(Error::OutOfRange(format!(
                "volume {id} is a {} ({what}) holding at most {} bytes{}; it cannot grow to {want} bytes (create a larger volume and copy)",
                rec.layout.kind.name(),
                rec.layout.usable_bytes - overhead,
                if overhead > 0 {
                    " after its LUKS2 header"
                } else {
                    ""
                }
            )));
        }
        if let Some(l) = range.limit_bytes
            && new.capacity > l
        {
            return Err(Error::OutOfRange(format!(
                "{} bytes exceeds limit_bytes {l}",
                new.capacity
            )));
        }
        if let Err(e) = self.commit_record(&mut st, new.clone()) {
            // Give the grown space back: a pool holding space that no record
            // holds would refuse the records of other replicas that use it.
            if new.members != rec.members
                && let Err(undo) = st.pool.release(&new).and_then(|()| st.pool.restore(&rec))
            {
                tracing::error!("expansion of {id} not recorded ({e}), and not undone: {undo}");
            }
            return Err(e);
        }
        let cap = new.capacity;
        st.volumes.insert(id.to_string(), new);
        Ok(cap)
    }

    /// `GetCapacity` for parameters within a topology segment.
    ///
    /// Plans on `GetCapacity`'s own copy of the pool, kept current by a
    /// journal of the pool's changes, and answers what planning on the
    /// state's pool answers. It holds the state lock only to take the
    /// journal, or to copy the pool: on the first call, after a change no
    /// journal replays (a repair, a slice grown in place) and after 65,536
    /// changes with no call. Calls take turns with each other on the copy;
    /// creates and deletes go on meanwhile.
    pub fn capacity(
        &self,
        parameters: &BTreeMap<String, String>,
        topology: Option<&Topology>,
    ) -> Result<Capacity, Error> {
        let p = Parameters::parse(parameters)?;
        // What a create of this class would refuse has no capacity either.
        Parameters::check_new(parameters)?;
        self.inv.check_names(&p)?;
        let mut copy = self.capacity_copy();
        #[cfg(test)]
        if let Some(hook) = &*self.capacity_hook.lock().unwrap_or_else(|e| e.into_inner()) {
            hook();
        }
        self.capacity_on(
            copy.as_mut().expect("capacity_copy leaves a copy"),
            &p,
            topology,
        )
    }

    /// `GetCapacity` of `p` within `topology`, planned on `pool`: the
    /// state's own pool, or `GetCapacity`'s copy of it, which answers alike.
    fn capacity_on(
        &self,
        pool: &mut Pool,
        p: &Parameters,
        topology: Option<&Topology>,
    ) -> Result<Capacity, Error> {
        // A create accessible from the segment asks for it as requisite.
        let within = topology.map(|t| TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: Vec::new(),
        });
        // The class's smallest volume, wherever it is asked about.
        let minimum_volume_size = p
            .min_volume_size
            .or((p.kind == VolumeType::Slice).then_some(SLICE_GRANULARITY));
        let scope = match topology {
            None => None,
            Some(t) => match convert::segment_scope(&self.inv, t) {
                Some(s) => Some(s),
                None => {
                    return Ok(Capacity {
                        available: 0,
                        maximum_volume_size: 0,
                        minimum_volume_size,
                    });
                }
            },
        };
        let kinds: &[Media] = match p.kind {
            VolumeType::Hdd => &[Media::Hdd],
            _ => &[Media::Ssd, Media::Nvme],
        };
        let transports: TransportSet = p.transports;
        // Per site, the transports some healthy server of it supports: a
        // drive reached over none of them takes no volume.
        // (In the segment's scope when one is given: a volume accessible
        // from a rack or a server is reached from there.)
        let site = scope.as_ref().map(|(s, _)| *s);
        let reached: Vec<TransportSet> = (0..self.inv.file().sites.len() as u32)
            .map(|s| {
                let healthy = |x: &u32| pool.server_health(*x) != Health::Failed;
                let servers: Vec<u32> = match &scope {
                    Some((_, convert::Scope::Rack(r))) => self.inv.rack_servers(*r).to_vec(),
                    Some((_, convert::Scope::Server(x))) => vec![*x],
                    _ => self.inv.site_servers(s).to_vec(),
                };
                TransportSet::of(
                    servers
                        .iter()
                        .filter(|x| healthy(x))
                        .flat_map(|&x| self.inv.servers()[x as usize].transports.iter()),
                )
            })
            .collect();
        // Eligible drives: for slices every SSD (inventory index), else
        // the whole drives nothing is on, with their bytes.
        // Whether whole drives of a capacity make a volume of the class
        // (none above maxVolumeSize): before, drives whose every layout
        // is larger than maxVolumeSize counted as available bytes. Per
        // capacity, as an inventory has few.
        let mut by_capacity: HashMap<u64, bool> = HashMap::new();
        let mut takes_a_volume = |cap: u64| {
            // Without a maximum every capacity does (no lookup per drive).
            let Some(m) = p.max_volume_size else {
                return true;
            };
            *by_capacity.entry(cap).or_insert_with(|| {
                crate::plan::smallest_whole_volume(cap, p).is_some_and(|s| s <= m)
            })
        };
        let mut devices: Vec<u32> = Vec::new();
        let mut empty: Vec<(u32, u64)> = Vec::new();
        for (i, d) in self.inv.drives().iter().enumerate() {
            let i = i as u32;
            if !kinds.contains(&d.kind)
                || site.is_some_and(|s| s != d.site)
                || pool.drive_health(i) != Health::Healthy
                || p.effective_min_rpm().is_some_and(|r| d.rpm < r)
                || !p.required_tags.iter().all(|t| d.tags.contains(t))
                || p.excluded_tags.iter().any(|t| d.tags.contains(t))
                || (!p.storage_groups.is_empty()
                    && !self
                        .inv
                        .rack_group(d.rack)
                        .is_some_and(|g| p.storage_groups.iter().any(|x| x == g)))
                || transports
                    .intersect(d.transports)
                    .intersect(reached[d.site as usize])
                    .is_empty()
            {
                continue;
            }
            if p.kind == VolumeType::Slice {
                devices.push(i);
            } else if pool.drive_is_unused(i) && takes_a_volume(d.capacity) {
                empty.push((i, d.capacity));
            }
        }
        let legs = LegRules::new(&self.inv, p);
        let (available, max) = if p.kind == VolumeType::Slice {
            // slice-alloc's free bytes and largest slice per eligible SSD,
            // on SSDs no whole-drive volume holds (slice-alloc sees slices
            // only: before, such an SSD counted as all free).
            let slices = pool.slices();
            let mut free = Vec::with_capacity(devices.len());
            let mut largest = Vec::with_capacity(devices.len());
            for &i in &devices {
                if pool.drive_free(i) == 0 {
                    continue;
                }
                let r = slices
                    .capacity(Some(&[slice_alloc::DeviceId::new(u64::from(i))]))
                    .map_err(|e| Error::Internal(format!("slice allocator: {e}")))?;
                free.push((i, r.free));
                largest.push((i, r.largest_allocatable));
            }
            if p.redundancy {
                // The legs of a mirror lie on two SSDs its separation
                // allows: before, the second leg was the largest slice on
                // any other SSD, and half the free bytes counted as
                // available, in one enclosure or storage group too.
                (
                    legs.mirrored_bound(&free),
                    mirror_usable(legs.largest_pair(&mut largest)),
                )
            } else {
                (
                    free.iter().map(|x| x.1).sum(),
                    largest.iter().map(|x| x.1).max().unwrap_or(0),
                )
            }
        } else {
            let available = if p.redundancy {
                legs.mirrored_bound(&empty)
            } else {
                empty.iter().map(|x| x.1).sum()
            };
            (available, pool.max_whole_volume(p, within.as_ref()))
        };
        // The largest device holds the largest volume and its header.
        let max = max.saturating_sub(p.device_overhead());
        let max = p.max_volume_size.map_or(max, |m| m.min(max));
        // The estimate, checked by planning it as a create would (and
        // lowered until one places): before, a slice's estimate counted
        // SSDs no server reached over an allowed transport and mirror legs
        // in one enclosure, and a create of the maximum reported failed.
        let max = pool.largest_placeable(p, within.as_ref(), max)?;
        // No volume places (a minVolumeSize no drive holds, a maxVolumeSize below every whole
        // drive, crumbs under 1 MiB): no bytes are available to this class either, or a CO
        // tracking capacity would schedule a create here that cannot succeed.
        let available = if max == 0 { 0 } else { available };
        Ok(Capacity {
            available,
            maximum_volume_size: max,
            minimum_volume_size,
        })
    }

    /// `GetCapacity`'s copy of the pool ([`Composer::capacity_pool`]),
    /// locked and brought up to the state's present: the state is held
    /// only while the journal of changes is moved out of it (or, on the
    /// first call and after a change no journal replays, while the pool is
    /// copied); the changes are replayed with the state free. The guard
    /// holds `Some`.
    fn capacity_copy(&self) -> MutexGuard<'_, Option<Pool>> {
        let mut copy = self.capacity_pool.lock().unwrap_or_else(|e| {
            // A call that panicked while planning may have left a trial
            // volume in the copy: copy the pool anew.
            self.capacity_pool.clear_poison();
            let mut g = e.into_inner();
            *g = None;
            g
        });
        let (changes, stale) = {
            let mut st = self.lock_current();
            let journal = st.journal.replace(Vec::new());
            let complete = std::mem::replace(&mut st.journal_complete, true);
            match (&*copy, journal) {
                (Some(_), Some(changes)) if complete => (changes, None),
                // What it replaces is dropped once the state is unlocked:
                // freeing a large pool or journal takes time too.
                (_, journal) => (Vec::new(), Some((copy.replace(st.pool.clone()), journal))),
            }
        };
        drop(stale);
        let pool = copy.as_mut().expect("set above");
        for c in &changes {
            if let Err(e) = c.replay(pool) {
                // Not expected: the pool made the very same change. Copy
                // it anew rather than answer from a copy that differs.
                tracing::warn!(
                    "GetCapacity's copy of the pool did not take a change ({e}); copying the pool anew"
                );
                let mut st = self.lock_current();
                *pool = st.pool.clone();
                st.journal = Some(Vec::new());
                st.journal_complete = true;
                break;
            }
        }
        copy
    }

    /// Every drive with its use and health.
    pub fn drive_report(&self) -> Vec<DriveReport> {
        let st = self.lock_current();
        let mut used: HashMap<&str, (u64, Vec<String>)> = HashMap::new();
        for v in st.volumes.values() {
            for m in &v.members {
                let e = used.entry(m.drive.as_str()).or_default();
                e.0 += m.len;
                e.1.push(v.id.clone());
            }
        }
        self.inv
            .drives()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (u, vols) = used.remove(d.id.as_str()).unwrap_or_default();
                DriveReport {
                    id: d.id.clone(),
                    jbod: self.inv.jbod_id(d.jbod).to_string(),
                    kind: d.kind,
                    capacity: d.capacity,
                    used: u,
                    health: st.pool.drive_health(i as u32),
                    volumes: vols,
                }
            })
            .collect()
    }

    /// Every server with its publications.
    pub fn server_report(&self) -> Vec<ServerReport> {
        let st = self.lock_current();
        self.inv
            .servers()
            .iter()
            .enumerate()
            .map(|(i, s)| ServerReport {
                id: s.id.clone(),
                health: st.pool.server_health(i as u32),
                published: st.attached.get(&s.id).copied().unwrap_or(0) as usize,
                max_volumes: s.max_volumes,
            })
            .collect()
    }

    /// Marks a drive, enclosure or server failed, draining or healthy again.
    pub fn mark(&self, target: &str, health: Health) -> Result<(), Error> {
        if self.inv.drive_index(target).is_none()
            && self.inv.jbod_index(target).is_none()
            && self.inv.server_index(target).is_none()
        {
            return Err(Error::NotFound(format!(
                "target: no drive, enclosure or server {target:?} in the inventory"
            )));
        }
        let mut st = self.lock_synced()?;
        let op = match health {
            Health::Healthy => Op::DeleteMark(target.to_string()),
            h => Op::PutMark {
                target: target.to_string(),
                health: h,
            },
        };
        self.store.commit(Batch::read_at(st.synced, vec![op]))?;
        let r = st.pool.set_mark(target, health);
        match &r {
            Ok(()) => st.journal(|| PoolChange::Mark(target.to_string(), health)),
            Err(_) => st.journal_lost(),
        }
        r
    }

    /// The mark `target` (a drive, enclosure or server) carries from
    /// [`Composer::mark`], [`Health::Healthy`] when it has none: its own
    /// mark, not the health it inherits from its enclosure or the
    /// inventory file. Reading it before a mark lets a caller put it back.
    pub fn mark_of(&self, target: &str) -> Health {
        self.lock_current()
            .pool
            .marks()
            .get(target)
            .copied()
            .unwrap_or_default()
    }

    /// The repair plan for a drive or enclosure: the members on it re-placed
    /// under their volumes' original requests.
    pub fn repair_plan(&self, target: &str) -> Result<placement::RepairPlan, Error> {
        let placement_target = self.repair_target(target)?;
        let st = self.lock_current();
        let mut engine = st.pool.engine().clone();
        engine
            .plan_evacuation(&placement_target)
            .map_err(|e| Error::Internal(format!("placement: {e}")))
    }

    /// Applies the repair plan for a drive or enclosure: every member on it
    /// moves to the replacement drive placement chose (a new slice for slice
    /// members), recorded durably in one batch; members placement found no
    /// replacement for stay and are listed in the returned plan. Nothing
    /// changes when any step fails. Rebuilding the data onto the new members
    /// is the node side's work (md re-add), driven by the new records.
    pub fn apply_repair(&self, target: &str) -> Result<placement::RepairPlan, Error> {
        self.apply_repair_if(target, |_| Ok(()))
    }

    /// As [`Composer::apply_repair`], with `accept` asked about the plan
    /// before anything is recorded: when it answers an error, that error is
    /// returned and nothing changes. It sees the very plan that would be
    /// applied (a node side can refuse moves of members it still uses), and
    /// runs under the composer's lock, so it must not call this `Composer`.
    pub fn apply_repair_if(
        &self,
        target: &str,
        accept: impl FnOnce(&placement::RepairPlan) -> Result<(), Error>,
    ) -> Result<placement::RepairPlan, Error> {
        let placement_target = self.repair_target(target)?;
        let mut st = self.lock_synced()?;
        // Moves members in placement as no journal replays.
        st.journal_lost();
        let plan = st.pool.plan_repair(&placement_target)?;
        accept(&plan)?;
        let result = (|| -> Result<Vec<(String, u64)>, Error> {
            let mut changed: BTreeMap<String, VolumeRecord> = BTreeMap::new();
            let mut freed = Vec::new();
            for mv in &plan.moves {
                let id = mv.volume.to_string();
                let rec = match changed.get_mut(&id) {
                    Some(r) => r,
                    None => {
                        let r = st.volumes.get(&id).cloned().ok_or_else(|| {
                            Error::Internal(format!("plan names unknown volume {id}"))
                        })?;
                        changed.entry(id.clone()).or_insert(r)
                    }
                };
                let m = rec.members.get_mut(mv.member).ok_or_else(|| {
                    Error::Internal(format!("plan names member {} of {id}", mv.member))
                })?;
                let to = mv.to.to_string();
                if rec.layout.kind.is_slice() {
                    let off = st.pool.allocate_slice_on(&to, m.len)?;
                    freed.push((m.drive.clone(), m.offset));
                    m.offset = off;
                }
                m.drive = to;
            }
            st.pool.apply_plan(&plan)?;
            self.store.commit(Batch::read_at(
                st.synced,
                changed
                    .values()
                    .map(|r| Op::PutVolume(Box::new(r.clone())))
                    .collect(),
            ))?;
            st.volumes.extend(changed);
            Ok(freed)
        })();
        match result {
            Ok(freed) => {
                for (d, off) in freed {
                    st.pool.free_slice(&d, off)?;
                }
                Ok(plan)
            }
            Err(e) => {
                // Rebuild the pool from the records, which did not change.
                let (pool, _) =
                    Pool::build(self.inv.clone(), st.pool.marks().clone(), &st.volumes)?;
                st.pool = pool;
                Err(e)
            }
        }
    }

    fn repair_target(&self, target: &str) -> Result<String, Error> {
        if self.inv.jbod_index(target).is_some() {
            Ok(convert::jbod_domain(target))
        } else if self.inv.drive_index(target).is_some() {
            Ok(target.to_string())
        } else {
            Err(Error::NotFound(format!(
                "target: no drive or enclosure {target:?} in the inventory"
            )))
        }
    }

    /// Every volume record, by id.
    pub fn records(&self) -> Vec<VolumeRecord> {
        self.lock_current().volumes.values().cloned().collect()
    }

    /// Whether the store can serve now ([`Store::ready`]): `Unavailable`
    /// while a shared store cannot follow the other replicas.
    pub fn ready(&self) -> Result<(), Error> {
        self.store.ready()
    }

    /// Number of volumes.
    pub fn volume_count(&self) -> usize {
        self.lock_current().volumes.len()
    }
}

/// What keeps the two legs of a mirror apart, as [`Pool::place`] asks it
/// of placement for a redundant layout: never both in one enclosure
/// (`jbodResiliency`), one storage group (`sgResiliency`; a rack in no
/// storage group is a group of its own), or behind one switch (spreading,
/// hard unless `softDomains`, when the inventory has switches; a drive
/// behind none is not limited by it); always in one site (a plan is of one
/// site). Soft rules never stop a plan, so they do not count here.
///
/// Every rule is a function of the drives' enclosures.
struct LegRules<'a> {
    inv: &'a Inventory,
    jbod: bool,
    group: bool,
    switch: bool,
}

impl<'a> LegRules<'a> {
    fn new(inv: &'a Inventory, p: &Parameters) -> Self {
        LegRules {
            inv,
            jbod: p.jbod_resiliency,
            group: p.sg_resiliency,
            switch: !p.soft_domains && !inv.file().switches.is_empty(),
        }
    }

    /// The drive's storage group, or its rack when it is in none.
    fn group(&self, d: u32) -> (Option<&'a str>, u32) {
        let rack = self.inv.drives()[d as usize].rack;
        match self.inv.rack_group(rack) {
            Some(g) => (Some(g), 0),
            None => (None, rack),
        }
    }

    fn switch(&self, d: u32) -> Option<&'a str> {
        self.inv.jbod_switch(self.inv.drives()[d as usize].jbod)
    }

    /// Whether drives `a` and `b` may hold the two legs of one mirror.
    fn apart(&self, a: u32, b: u32) -> bool {
        let (da, db) = (
            &self.inv.drives()[a as usize],
            &self.inv.drives()[b as usize],
        );
        a != b
            && da.site == db.site
            && !(self.jbod && da.jbod == db.jbod)
            && !(self.group && self.group(a) == self.group(b))
            && !(self.switch && self.switch(a).is_some() && self.switch(a) == self.switch(b))
    }

    /// The largest `min(x, y)` of two drives' `(drive, bytes)` that may
    /// hold the two legs (0 when no two may): the bytes of the first drive,
    /// largest first, apart from one before it. Reorders `items`.
    fn largest_pair(&self, items: &mut [(u32, u64)]) -> u64 {
        items.sort_unstable_by_key(|x| std::cmp::Reverse(x.1));
        // One drive per enclosure seen: `apart` depends on enclosures only.
        let mut seen: Vec<u32> = Vec::new();
        let mut jbods: HashSet<u32> = HashSet::new();
        for &(d, bytes) in items.iter() {
            if bytes == 0 {
                break;
            }
            if seen.iter().any(|&x| self.apart(x, d)) {
                return bytes;
            }
            if jbods.insert(self.inv.drives()[d as usize].jbod) {
                seen.push(d);
            }
        }
        0
    }

    /// An upper bound of the bytes mirrors can take from free `(drive,
    /// bytes)`: per site, half of its free bytes, and no more than lies
    /// outside the fullest drive, or enclosure, storage group or switch
    /// that holds at most one leg of each mirror (each mirror has a leg
    /// outside it).
    fn mirrored_bound(&self, items: &[(u32, u64)]) -> u64 {
        let mut per_site: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
        for &(d, b) in items {
            per_site
                .entry(self.inv.drives()[d as usize].site)
                .or_default()
                .push((d, b));
        }
        per_site
            .values()
            .map(|items| {
                let total: u64 = items.iter().map(|x| x.1).sum();
                // Two legs are never on one drive.
                let most = items.iter().map(|x| x.1).max().unwrap_or(0);
                let mut bound = (total / 2).min(total - most);
                let mut fullest = |key: &dyn Fn(u32) -> Option<(Option<&'a str>, u32)>| {
                    let mut sums: HashMap<(Option<&'a str>, u32), u64> = HashMap::new();
                    for &(d, b) in items {
                        if let Some(k) = key(d) {
                            *sums.entry(k).or_default() += b;
                        }
                    }
                    let most = sums.values().copied().max().unwrap_or(0);
                    bound = bound.min(total - most);
                };
                if self.jbod {
                    fullest(&|d| Some((None, self.inv.drives()[d as usize].jbod)));
                }
                if self.group {
                    fullest(&|d| Some(self.group(d)));
                }
                if self.switch {
                    fullest(&|d| self.switch(d).map(|s| (Some(s), 0)));
                }
                bound
            })
            .sum()
    }
}

fn mirror_usable(leg: u64) -> u64 {
    raid::mdadm::geometry_for_devices(raid::Layout::Raid1, 0, &[leg / 512; 2], None)
        .map_or(0, |g| g.array_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use std::sync::mpsc;
    use std::time::Duration;

    /// How long a call that should go on at once may take before the test
    /// calls it blocked (a bound that reports, not a measure of speed).
    const BLOCKED: Duration = Duration::from_secs(30);

    fn kv(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn gib(n: u64) -> CapacityRange {
        CapacityRange::new(Some(n << 30), None).unwrap()
    }

    fn composer(store: Arc<dyn Store>) -> Arc<Composer> {
        Arc::new(Composer::open(Inventory::default_inventory(), store).unwrap())
    }

    /// Runs `f` on a thread and waits for its answer at most [`BLOCKED`];
    /// `None` when it did not answer by then.
    fn within_bound<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(BLOCKED).ok()
    }

    /// A GetCapacity that is planning does not hold the state: a create and
    /// a delete on other threads complete meanwhile. Before, GetCapacity
    /// planned under the state's lock (tens of milliseconds at 100,000
    /// drives), and every create waited for it.
    #[test]
    fn a_create_is_not_blocked_while_get_capacity_plans() {
        let c = composer(Arc::new(MemStore::default()));
        let before = c
            .create("before", &kv(&[]), gib(100), true, true, None)
            .unwrap();
        let (parked_tx, parked_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        *c.capacity_hook.lock().unwrap() = Some(Box::new(move || {
            let _ = parked_tx.send(());
            let _ = go_rx.lock().unwrap().recv_timeout(2 * BLOCKED);
        }));
        let planning = {
            let c = c.clone();
            std::thread::spawn(move || c.capacity(&kv(&[("type", "slice")]), None))
        };
        parked_rx
            .recv_timeout(BLOCKED)
            .expect("GetCapacity reaches its planning");
        let created = {
            let c = c.clone();
            within_bound(move || {
                let v = c.create(
                    "during",
                    &kv(&[("type", "slice")]),
                    gib(10),
                    true,
                    true,
                    None,
                )?;
                c.delete(&before.id)?;
                Ok::<_, Error>(v)
            })
        };
        let _ = go_tx.send(());
        let answer = planning.join().unwrap().unwrap();
        let created = created
            .expect("a create and a delete answer while GetCapacity plans (they waited for it)")
            .unwrap();
        assert_eq!(created.name, "during");
        assert!(answer.maximum_volume_size > 0);
        // The next call sees both changes, and answers as the state does.
        *c.capacity_hook.lock().unwrap() = None;
        let p = kv(&[("type", "slice")]);
        let copy = c.capacity(&p, None).unwrap();
        let mut st = c.lock();
        let own = c
            .capacity_on(&mut st.pool, &Parameters::parse(&p).unwrap(), None)
            .unwrap();
        assert_eq!(copy, own);
        assert_ne!(
            copy, answer,
            "the slice taken and the drive given back count"
        );
    }

    /// Asks every class and segment of `CLASSES` of `GetCapacity` (from its
    /// copy) and of the state's own pool (as before the copy), and compares.
    fn answers_alike(c: &Composer, step: &str) {
        const CLASSES: &[&[(&str, &str)]] = &[
            &[("striping", "false")],
            &[("redundancy", "true"), ("striping", "false")],
            &[("redundancy", "true"), ("raidMaxDrives", "8")],
            &[("type", "ssd"), ("striping", "false")],
            &[("type", "slice")],
            &[("type", "slice"), ("redundancy", "true")],
        ];
        let server = Topology::new([(convert::TOPOLOGY_SERVER, "r1-n1")]).ok();
        assert!(server.is_some());
        for class in CLASSES {
            let p = kv(class);
            for t in [None, server.as_ref()] {
                let copy = c.capacity(&p, t).unwrap();
                let mut st = c.lock();
                let own = c
                    .capacity_on(&mut st.pool, &Parameters::parse(&p).unwrap(), t)
                    .unwrap();
                assert_eq!(copy, own, "{step}: {class:?} in {t:?}");
            }
        }
    }

    /// GetCapacity's copy of the pool, kept current by replaying the
    /// changes (creates, deletes, marks) or copied anew (more changes than
    /// the journal keeps, a slice grown, a repair), answers as the state's
    /// own pool.
    #[test]
    fn capacity_from_the_copy_is_the_answer_of_the_pool() {
        let c = composer(Arc::new(MemStore::default()));
        answers_alike(&c, "empty");
        let mut ids = Vec::new();
        for (i, class) in [
            &[("type", "slice")][..],
            &[("type", "slice"), ("redundancy", "true")],
            &[("redundancy", "true"), ("striping", "false")],
            &[("type", "ssd"), ("striping", "false")],
            &[("striping", "false")],
        ]
        .iter()
        .cycle()
        .take(15)
        .enumerate()
        {
            let v = c
                .create(
                    &format!("v{i}"),
                    &kv(class),
                    gib(1 + i as u64 * 37),
                    true,
                    true,
                    None,
                )
                .unwrap();
            ids.push(v.id.clone());
            answers_alike(&c, &format!("create {i}"));
        }
        for id in ids.iter().step_by(3) {
            c.delete(id).unwrap();
        }
        answers_alike(&c, "deletes");
        let drive = c.inventory().drives()[0].id.clone();
        c.mark(&drive, Health::Failed).unwrap();
        answers_alike(&c, "mark");
        c.apply_repair(&drive).unwrap();
        answers_alike(&c, "repair");
        c.mark(&drive, Health::Healthy).unwrap();
        // v5: a single slice (every fifth create), not deleted.
        let slice = &ids[5];
        c.expand(slice, gib(600)).unwrap();
        answers_alike(&c, "expansion");
        c.create("last", &kv(&[("type", "slice")]), gib(3), true, true, None)
            .unwrap();
        answers_alike(&c, "create after the copy was made anew");
    }

    /// The OS id of the calling thread (Linux: `/proc/thread-self`).
    fn os_tid() -> String {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Waits (without a deadline: the test runner's own timeout stops a
    /// hung test) until thread `tid` sleeps: a thread that sent its id and
    /// then locks sleeps only once parked on the lock.
    fn until_asleep(tid: &str) {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            // The state follows the command name, which ends with ") ".
            if stat.rsplit(") ").next().unwrap().starts_with('S') {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// The state's lock serves a caller that waits before the holder that
    /// unlocks and locks again at once (GetCapacity asked back to back, a
    /// burst of creates): with the standard mutex the holder took it
    /// straight back.
    #[test]
    fn a_waiting_caller_goes_before_the_holder_locking_again() {
        let m = Arc::new(FairMutex::new(Vec::<&str>::new()));
        for _ in 0..20 {
            m.lock().clear();
            let held = m.lock();
            let (tid_tx, tid_rx) = mpsc::channel();
            let waiter = {
                let m = m.clone();
                std::thread::spawn(move || {
                    tid_tx.send(os_tid()).unwrap();
                    m.lock().push("waiter");
                })
            };
            until_asleep(&tid_rx.recv().unwrap());
            drop(held);
            m.lock().push("holder again");
            waiter.join().unwrap();
            assert_eq!(*m.lock(), ["waiter", "holder again"]);
        }
    }

    /// A store whose first commit of the volume named `held` waits until
    /// told.
    struct Parking {
        inner: MemStore,
        parked_once: std::sync::atomic::AtomicBool,
        parked: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    impl Store for Parking {
        fn load(&self) -> Result<crate::store::StoredState, Error> {
            self.inner.load()
        }
        fn commit(&self, batch: Batch) -> Result<u64, Error> {
            if batch
                .ops
                .iter()
                .any(|o| matches!(o, Op::PutVolume(r) if r.name == "held"))
                && !self
                    .parked_once
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let _ = self.parked.lock().unwrap().send(());
                let _ = self.go.lock().unwrap().recv_timeout(2 * BLOCKED);
            }
            self.inner.commit(batch)
        }
    }

    /// Between a create's two holds of the state (its commit in flight),
    /// another create of its name is refused as busy, and another create
    /// gets other drives: the first hold took the name and the drives, so
    /// the second has nothing to re-decide (with the name not taken, both
    /// creates of `held` succeeded, as two volumes).
    #[test]
    fn the_creates_between_a_creates_two_holds_neither_repeat_it_nor_share_its_drives() {
        let (parked_tx, parked_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        let c = composer(Arc::new(Parking {
            inner: MemStore::default(),
            parked_once: Default::default(),
            parked: Mutex::new(parked_tx),
            go: Mutex::new(go_rx),
        }));
        let class = kv(&[("striping", "false")]);
        let held = {
            let (c, class) = (c.clone(), class.clone());
            std::thread::spawn(move || c.create("held", &class, gib(100), true, true, None))
        };
        parked_rx
            .recv_timeout(BLOCKED)
            .expect("the create of `held` commits");
        let (again, others) = {
            let (c, class) = (c.clone(), class.clone());
            within_bound(move || {
                let again = c.create("held", &class, gib(100), true, true, None);
                let others: Vec<_> = (0..4)
                    .map(|i| c.create(&format!("other-{i}"), &class, gib(100), true, true, None))
                    .collect::<Result<_, _>>()?;
                Ok::<_, Error>((again, others))
            })
            .expect("creates answer while another create's commit is in flight")
            .unwrap()
        };
        go_tx.send(()).unwrap();
        let held = held.join().unwrap().unwrap();
        assert!(
            matches!(again, Err(Error::Busy(_))),
            "a second create of `held` while the first commits: {:?}",
            again.as_ref().map(|v| &v.id)
        );
        let mut drives: Vec<&str> = held.members.iter().map(|m| m.drive.as_str()).collect();
        drives.extend(
            others
                .iter()
                .flat_map(|v| v.members.iter().map(|m| m.drive.as_str())),
        );
        let n = drives.len();
        drives.sort_unstable();
        drives.dedup();
        assert_eq!(drives.len(), n, "whole drives taken twice");
        assert_eq!(c.volume_count(), 5);
        // The retry by name, once it landed, answers that volume.
        let retry = c
            .create("held", &class, gib(100), true, true, None)
            .unwrap();
        assert_eq!(retry.id, held.id);
    }
}
