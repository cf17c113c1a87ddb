//! Rebuild traffic as a fluid: each member rebuild is a flow that reads its sources and writes
//! its new drive, and concurrent flows share capacity max-min fairly.
//!
//! Resources are drives (their sequential bandwidth) and bandwidth domains (JBOD ports,
//! top-of-rack switches), each scaled by the share rebuilds may use. A flow of rate `r` (bytes
//! written per second) loads its target drive and each source drive with `r`, and every
//! bandwidth domain once per endpoint (sources and target) behind it. Rates come from
//! progressive filling: all unfrozen flows grow at one rate until a resource saturates (or the
//! per-flow cap, md's `speed_limit_max`, is reached); the flows crossing it freeze; repeat.
//! Between two changes rates are constant, so completions are exact events. Flows of volumes
//! whose attach server is down are paused (rate 0). Under the `fixed` model every flow runs at
//! `size / fixed time` regardless of the others.

use crate::fleet::NONE;

/// Rebuilds due to finish within this many seconds of one another finish together.
pub const BATCH_SECONDS: f64 = 60.0;

/// One member rebuild.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Volume slot.
    pub vol: u32,
    /// Member index.
    pub member: u16,
    /// Bytes still to write.
    pub remaining: f64,
    /// Current rate, bytes/s.
    pub rate: f64,
    /// Resources and the load per unit of rate on each.
    pub res: Vec<(u32, f32)>,
    /// Rate under the fixed model (`None`: fair share).
    pub fixed_rate: Option<f64>,
    /// When the member failed, hours.
    pub started: f64,
    /// Bytes read from sources per byte written.
    pub read_factor: f64,
    /// Attach server of the volume (flows pause while it is down).
    pub server: u32,
}

/// The set of running rebuilds.
#[derive(Debug)]
pub struct Flows {
    slots: Vec<Option<Flow>>,
    free: Vec<u32>,
    live: usize,
    cap: Vec<f64>,
    n_drives: usize,
    max_rate: f64,
    /// Time of the last [`Flows::advance`], hours.
    pub now: f64,
    /// Bumped by every recomputation; stale completion events carry an older one.
    pub version: u64,
    /// Whether rates must be recomputed.
    pub dirty: bool,
    /// Peak rebuild traffic seen per bandwidth domain, bytes/s.
    pub peak: Vec<f64>,
    /// Peak total rebuild write rate, bytes/s.
    pub peak_total: f64,
    coef: Vec<f64>,
    used: Vec<f64>,
    sat: Vec<bool>,
    touched: Vec<u32>,
}

impl Flows {
    /// Resources: `drive_caps` then `bw_caps` (bytes/s, already scaled by the rebuild share).
    pub fn new(drive_caps: Vec<f64>, bw_caps: Vec<f64>, max_rate: f64) -> Self {
        let n_drives = drive_caps.len();
        let n_bw = bw_caps.len();
        let mut cap = drive_caps;
        cap.extend(bw_caps);
        let n = cap.len();
        Flows {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            cap,
            n_drives,
            max_rate,
            now: 0.0,
            version: 0,
            dirty: false,
            peak: vec![0.0; n_bw],
            peak_total: 0.0,
            coef: vec![0.0; n],
            used: vec![0.0; n],
            sat: vec![false; n],
            touched: Vec::new(),
        }
    }

    /// Index of bandwidth domain `b` among the resources.
    pub fn bw_res(&self, b: u32) -> u32 {
        (self.n_drives as u32) + b
    }

    /// Running flows.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no flow runs.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds a flow; returns its id.
    pub fn add(&mut self, f: Flow) -> u32 {
        self.dirty = true;
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(f);
                i
            }
            None => {
                self.slots.push(Some(f));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Removes a flow (finished or cancelled).
    pub fn remove(&mut self, id: u32) -> Option<Flow> {
        let f = self.slots.get_mut(id as usize)?.take()?;
        self.free.push(id);
        self.live -= 1;
        self.dirty = true;
        Some(f)
    }

    /// The flow with this id.
    pub fn get(&self, id: u32) -> Option<&Flow> {
        self.slots.get(id as usize)?.as_ref()
    }

    /// Mutable access (callers that change resources must set [`Flows::dirty`]).
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Flow> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Moves every flow forward to `now` (hours) at its current rate.
    pub fn advance(&mut self, now: f64) {
        let dt = (now - self.now) * 3600.0;
        if dt > 0.0 && self.live > 0 {
            for f in self.slots.iter_mut().flatten() {
                f.remaining = (f.remaining - f.rate * dt).max(0.0);
            }
        }
        if now > self.now {
            self.now = now;
        }
    }

    /// Ids of the flows that have finished: less than a byte left, or less than
    /// [`BATCH_SECONDS`] of work at their current rate (completions that close together are
    /// processed as one event, which bounds the rate recomputations of a large evacuation).
    pub fn finished(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f {
                Some(f) if f.remaining <= 1.0 || f.remaining <= f.rate * BATCH_SECONDS => {
                    Some(i as u32)
                }
                _ => None,
            })
            .collect()
    }

    /// Recomputes every rate (max-min fair), updates the peaks and returns the time (hours) of
    /// the next completion, if any flow runs.
    pub fn recompute(&mut self, server_down: &[u16]) -> Option<f64> {
        self.dirty = false;
        self.version += 1;
        for &r in &self.touched {
            self.coef[r as usize] = 0.0;
            self.used[r as usize] = 0.0;
            self.sat[r as usize] = false;
        }
        self.touched.clear();
        let mut unfrozen: Vec<u32> = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(f) = slot else { continue };
            let paused = f.server != NONE && server_down[f.server as usize] > 0;
            if paused {
                f.rate = 0.0;
                continue;
            }
            if let Some(r) = f.fixed_rate {
                f.rate = r;
                continue;
            }
            f.rate = 0.0;
            unfrozen.push(i as u32);
            for &(r, c) in &f.res {
                if self.coef[r as usize] == 0.0 && self.used[r as usize] == 0.0 {
                    self.touched.push(r);
                }
                self.coef[r as usize] += c as f64;
            }
        }
        while !unfrozen.is_empty() {
            let mut level = self.max_rate;
            for &r in &self.touched {
                let c = self.coef[r as usize];
                if c > 1e-12 {
                    level = level.min((self.cap[r as usize] - self.used[r as usize]).max(0.0) / c);
                }
            }
            let at_cap = level >= self.max_rate;
            for &r in &self.touched {
                let c = self.coef[r as usize];
                self.sat[r as usize] = c > 1e-12
                    && (self.cap[r as usize] - self.used[r as usize]).max(0.0) / c
                        <= level * (1.0 + 1e-9);
            }
            let mut still = Vec::with_capacity(unfrozen.len());
            for &i in &unfrozen {
                let Some(f) = self.slots[i as usize].as_mut() else {
                    continue;
                };
                if at_cap || f.res.iter().any(|&(r, _)| self.sat[r as usize]) {
                    f.rate = level;
                    for &(r, c) in &f.res {
                        self.used[r as usize] += level * c as f64;
                        self.coef[r as usize] -= c as f64;
                    }
                } else {
                    still.push(i);
                }
            }
            if still.len() == unfrozen.len() {
                // No progress (numerical corner): freeze everything at the level.
                for &i in &still {
                    if let Some(f) = self.slots[i as usize].as_mut() {
                        f.rate = level;
                    }
                }
                break;
            }
            unfrozen = still;
        }
        // Traffic per bandwidth domain and the next completion.
        let mut next: Option<f64> = None;
        let mut total = 0.0;
        for &r in &self.touched {
            self.used[r as usize] = 0.0;
        }
        let n_drives = self.n_drives as u32;
        for f in self.slots.iter().flatten() {
            total += f.rate;
            if f.rate > 0.0 {
                let t = self.now + f.remaining / f.rate / 3600.0;
                next = Some(next.map_or(t, |n: f64| n.min(t)));
                for &(r, c) in &f.res {
                    if r >= n_drives {
                        let b = (r - n_drives) as usize;
                        // `used` is reused as the traffic accumulator here.
                        self.used[r as usize] += f.rate * c as f64;
                        if self.used[r as usize] > self.peak[b] {
                            self.peak[b] = self.used[r as usize];
                        }
                    }
                }
            }
        }
        // Fixed-rate flows' domains were not touched above; clear what we accumulated.
        for f in self.slots.iter().flatten() {
            for &(r, _) in &f.res {
                self.used[r as usize] = 0.0;
            }
        }
        self.peak_total = self.peak_total.max(total);
        next
    }
}
