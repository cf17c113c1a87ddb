//! Per-domain aggregate index: for every static drive class (kind, capacity, RPM, tags,
//! transports, group), a min-segment tree of utilization keys over the class's drives, each node
//! also holding the span of hierarchy positions of the drives below it. Every failure domain
//! owns a range of positions that holds its drives and no other drive, so the window search can
//! walk drives best-first and prune a whole excluded rack or JBOD in O(log n) instead of
//! skipping its drives one by one.
//!
//! Positions are sparse (`GAP` apart when built) so that a live change costs O(log n): a drive
//! added to a domain takes a free position just after the domain's last one (inside the domain
//! and its ancestors, outside every other domain) and is appended to its class's tree; a drive
//! removed leaves a dead leaf and its position as a tombstone. Only when no position is free
//! between two neighbours (after about 2^24 additions at one place) or a class's tree is full is
//! something rebuilt: the whole index, or that class.
//!
//! Leaves hold `(key << 32) | drive`, unique per drive, so the order in which the search meets
//! drives does not depend on where they sit in the trees: an engine changed live searches
//! exactly like one rebuilt from its snapshot.

use std::collections::BTreeSet;

use crate::inventory::{Inventory, NONE};

/// Leaf value of a drive that must not be offered (unhealthy, or no drive).
pub(crate) const ABSENT: u128 = u128::MAX;

/// Distance between neighbouring positions when the index is built.
#[cfg(not(test))]
const GAP: u64 = 1 << 40;
/// Largest step from a domain's last position to a new drive's position.
#[cfg(not(test))]
const STEP: u64 = 1 << 16;
// Unit tests run out of positions after a few additions, so that the rebuilds run too.
#[cfg(test)]
const GAP: u64 = 8;
#[cfg(test)]
const STEP: u64 = 2;

/// An empty span (no live drive below a node).
const NO_SPAN: (u64, u64) = (u64::MAX, 0);

/// Leaf value of drive `d` with utilization key `key`.
#[inline]
pub(crate) fn leaf(key: u64, d: u32) -> u128 {
    ((key as u128) << 32) | d as u128
}

/// One node of a class's tree: the smallest leaf value below it and the `(min, max)`
/// hierarchy position of the drives below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) min: u128,
    pub(crate) lo: u64,
    pub(crate) hi: u64,
}

/// An empty node (no live drive below it).
const EMPTY: Node = Node {
    min: ABSENT,
    lo: NO_SPAN.0,
    hi: NO_SPAN.1,
};

/// The two children of one node, in one cache line: the window search reads both at every
/// step of its descent.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Children(pub(crate) [Node; 2]);

#[derive(Debug, Clone)]
pub(crate) struct SegClass {
    /// Drive of each leaf (`NONE` for a removed one); built in hierarchy order, additions
    /// appended.
    pub(crate) drives: Vec<u32>,
    /// Number of leaves (a power of two).
    pub(crate) size: usize,
    /// `pairs[v]` holds nodes `2v` and `2v + 1`: node 1 (`pairs[0].0[1]`) is the root, leaves
    /// are nodes `size..2 * size`.
    pub(crate) pairs: Vec<Children>,
}

impl SegClass {
    /// A class over `leaves` (drive, value, position) with room for `room` more.
    fn new(leaves: &[(u32, u128, u64)], room: usize) -> Self {
        let size = (leaves.len() + room.max(1)).next_power_of_two();
        let mut c = SegClass {
            drives: leaves.iter().map(|l| l.0).collect(),
            size,
            pairs: vec![Children([EMPTY; 2]); size],
        };
        for (i, &(_, val, pos)) in leaves.iter().enumerate() {
            *c.node_mut(size + i) = Node {
                min: val,
                lo: pos,
                hi: pos,
            };
        }
        for v in (1..size).rev() {
            c.pull(v);
        }
        c
    }

    /// Node `v` (1 is the root).
    #[inline]
    pub(crate) fn node(&self, v: usize) -> &Node {
        &self.pairs[v / 2].0[v % 2]
    }

    #[inline]
    fn node_mut(&mut self, v: usize) -> &mut Node {
        &mut self.pairs[v / 2].0[v % 2]
    }

    #[inline]
    fn pull(&mut self, v: usize) {
        let [a, b] = self.pairs[v].0;
        *self.node_mut(v) = Node {
            min: a.min.min(b.min),
            lo: a.lo.min(b.lo),
            hi: a.hi.max(b.hi),
        };
    }

    /// Sets leaf `i`'s value, its position unchanged. Stops at the first ancestor whose
    /// minimum stays the same (then so do all above it): after a member is charged, a drive is
    /// rarely the smallest below more than a few levels.
    fn set_min(&mut self, i: usize, val: u128) {
        let mut v = self.size + i;
        self.node_mut(v).min = val;
        while v > 1 {
            v /= 2;
            let [a, b] = &self.pairs[v].0;
            let m = a.min.min(b.min);
            if self.node(v).min == m {
                break;
            }
            self.node_mut(v).min = m;
        }
    }

    fn set(&mut self, i: usize, val: u128, span: (u64, u64)) {
        let mut v = self.size + i;
        *self.node_mut(v) = Node {
            min: val,
            lo: span.0,
            hi: span.1,
        };
        while v > 1 {
            v /= 2;
            self.pull(v);
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DomainIndex {
    pub(crate) classes: Vec<SegClass>,
    /// `(class, leaf)` of each drive.
    of: Vec<(u32, u32)>,
    /// Hierarchy position of each drive.
    pos: Vec<u64>,
    /// Every position handed out since the last build (live drives' and removed drives'), so
    /// that a new position falls strictly between two neighbours.
    used: BTreeSet<u64>,
    /// Position range `[lo, hi)` of each failure domain (`lo == hi`: it never held a drive).
    pub(crate) dom_range: Vec<(u64, u64)>,
}

impl DomainIndex {
    /// Builds the index; `class_of(d)` names the static class of a drive (classes are numbered
    /// by first appearance in hierarchy order, as `keys` returns them) and `value(d)` its leaf
    /// value.
    pub(crate) fn build<K: Eq>(
        inv: &Inventory,
        class_of: impl Fn(u32) -> K,
        value: impl Fn(u32) -> u128,
    ) -> (Self, Vec<K>) {
        let n = inv.spec.drives.len();
        // Path from the root for every drive; lexicographic order makes domains contiguous.
        let paths: Vec<Vec<u32>> = (0..n as u32)
            .map(|d| {
                let leaf = inv.spec.drives[d as usize]
                    .domain
                    .as_ref()
                    .and_then(|x| inv.ix.dom_index.get(x).copied())
                    .unwrap_or(NONE);
                let mut p = Vec::new();
                let mut x = leaf;
                while x != NONE {
                    p.push(x);
                    x = inv.ix.dom_parent[x as usize];
                }
                p.reverse();
                p
            })
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| paths[a as usize].cmp(&paths[b as usize]).then(a.cmp(&b)));
        let mut pos = vec![0u64; n];
        for (p, &d) in order.iter().enumerate() {
            pos[d as usize] = (p as u64 + 1) * GAP;
        }
        let dom_range = inv
            .ix
            .dom_drives
            .iter()
            .map(|ds| {
                let lo = ds.iter().map(|&d| pos[d as usize]).min().unwrap_or(0);
                let hi = ds.iter().map(|&d| pos[d as usize] + 1).max().unwrap_or(0);
                (lo, hi)
            })
            .collect();
        let mut keys: Vec<K> = Vec::new();
        let mut members: Vec<Vec<(u32, u128, u64)>> = Vec::new();
        let mut of = vec![(0u32, 0u32); n];
        for &d in &order {
            let k = class_of(d);
            // Classes are few (one per distinct drive model and tag set): a scan is enough.
            let c = match keys.iter().position(|x| *x == k) {
                Some(c) => c,
                None => {
                    keys.push(k);
                    members.push(Vec::new());
                    keys.len() - 1
                }
            };
            of[d as usize] = (c as u32, members[c].len() as u32);
            members[c].push((d, value(d), pos[d as usize]));
        }
        let classes = members.iter().map(|m| SegClass::new(m, 1)).collect();
        let used = pos.iter().copied().collect();
        (
            DomainIndex {
                classes,
                of,
                pos,
                used,
                dom_range,
            },
            keys,
        )
    }

    /// Sets a drive's leaf value.
    pub(crate) fn update(&mut self, d: u32, val: u128) {
        let (c, i) = self.of[d as usize];
        self.classes[c as usize].set_min(i as usize, val);
    }

    /// The position for a new drive in failure domain `leaf_domain` (`NONE`: none), or `None`
    /// when no position is free there: strictly between the last position of the deepest of
    /// its domains that ever held a drive and the next position handed out, so inside that
    /// domain's ancestors' ranges and outside every other domain's (ranges are laminar and end
    /// at handed-out positions); after everything when none of its domains held a drive.
    fn new_position(&self, inv: &Inventory, leaf_domain: u32) -> Option<u64> {
        let mut x = leaf_domain;
        while x != NONE && self.dom_range[x as usize].0 == self.dom_range[x as usize].1 {
            x = inv.ix.dom_parent[x as usize];
        }
        let pred = if x == NONE {
            // Positions start at GAP, so 0 is below all of them.
            return self.used.last().map_or(Some(GAP), |&p| p.checked_add(GAP));
        } else {
            self.dom_range[x as usize].1 - 1
        };
        match self.used.range(pred + 1..).next() {
            None => pred.checked_add(GAP),
            Some(&succ) => {
                let step = ((succ - pred) / 2).min(STEP);
                (step > 0).then_some(pred + step)
            }
        }
    }

    /// Adds drive `d` (the next drive index) to class `class` (`classes.len()` for a new one)
    /// with leaf value `val`; its domains must be indexed in `inv`. `false` (and nothing
    /// changed) when no position is free: the caller rebuilds the index.
    pub(crate) fn push(&mut self, inv: &Inventory, d: u32, class: usize, val: u128) -> bool {
        let l = inv.ix.levels.len();
        let anc = &inv.ix.drive_anc[d as usize * l..(d as usize + 1) * l];
        let leaf_domain = inv.spec.drives[d as usize]
            .domain
            .as_ref()
            .and_then(|x| inv.ix.dom_index.get(x).copied())
            .unwrap_or(NONE);
        let Some(p) = self.new_position(inv, leaf_domain) else {
            return false;
        };
        for &a in anc {
            if a != NONE {
                let r = &mut self.dom_range[a as usize];
                *r = if r.0 == r.1 {
                    (p, p + 1)
                } else {
                    (r.0.min(p), r.1.max(p + 1))
                };
            }
        }
        self.used.insert(p);
        self.pos.push(p);
        if class == self.classes.len() {
            self.classes.push(SegClass::new(&[], 1));
        }
        let sc = &mut self.classes[class];
        if sc.drives.len() == sc.size {
            // Full: rebuild the class without its removed leaves, in position order, with
            // room for as many drives again (amortized O(log n) per addition).
            let mut live: Vec<(u32, u128, u64)> = (0..sc.drives.len())
                .filter(|&i| sc.drives[i] != NONE)
                .map(|i| {
                    let dd = sc.drives[i];
                    (dd, sc.node(sc.size + i).min, self.pos[dd as usize])
                })
                .collect();
            live.sort_by_key(|x| x.2);
            *sc = SegClass::new(&live, live.len());
            for (i, &(dd, _, _)) in live.iter().enumerate() {
                self.of[dd as usize] = (class as u32, i as u32);
            }
        }
        let sc = &mut self.classes[class];
        let i = sc.drives.len();
        sc.drives.push(d);
        sc.set(i, val, (p, p));
        self.of.push((class as u32, i as u32));
        true
    }

    /// Removes drive `d`; the last drive (`last`) takes its index with leaf value `moved_val`
    /// (its utilization key changes with its tie-break). O(log n).
    pub(crate) fn swap_remove(&mut self, d: u32, last: u32, moved_val: u128) {
        let (c, i) = self.of[d as usize];
        let sc = &mut self.classes[c as usize];
        sc.drives[i as usize] = NONE;
        sc.set(i as usize, ABSENT, NO_SPAN);
        self.of.swap_remove(d as usize);
        self.pos.swap_remove(d as usize);
        if d != last {
            let (c, i) = self.of[d as usize];
            self.classes[c as usize].drives[i as usize] = d;
            self.update(d, moved_val);
        }
    }
}

#[cfg(test)]
impl DomainIndex {
    /// Checks the index against the inventory: every drive's leaf, value and class key, every
    /// node's minimum and span, and that each domain's range holds exactly its drives and nests
    /// like the hierarchy (which is what lets the next addition find a position).
    pub(crate) fn check<K: Eq + std::fmt::Debug>(
        &self,
        inv: &Inventory,
        keys: &[K],
        class_of: impl Fn(u32) -> K,
        value: impl Fn(u32) -> u128,
    ) -> Result<(), String> {
        let n = inv.spec.drives.len();
        if self.of.len() != n
            || self.pos.len() != n
            || self.dom_range.len() != inv.ix.dom_level.len()
        {
            return Err("table lengths".into());
        }
        let l = inv.ix.levels.len();
        for d in 0..n as u32 {
            let (c, i) = self.of[d as usize];
            let sc = &self.classes[c as usize];
            let p = self.pos[d as usize];
            let leaf = sc.node(sc.size + i as usize);
            if sc.drives[i as usize] != d
                || leaf.min != value(d)
                || (leaf.lo, leaf.hi) != (p, p)
                || keys[c as usize] != class_of(d)
                || !self.used.contains(&p)
            {
                return Err(format!("leaf of drive {d}"));
            }
            let anc = &inv.ix.drive_anc[d as usize * l..(d as usize + 1) * l];
            for (x, &(lo, hi)) in self.dom_range.iter().enumerate() {
                if (lo <= p && p < hi) != anc.contains(&(x as u32)) {
                    return Err(format!(
                        "drive {d} at {p} vs range of domain {x}: {lo}..{hi}"
                    ));
                }
            }
        }
        let live: usize = self
            .classes
            .iter()
            .map(|c| c.drives.iter().filter(|&&d| d != NONE).count())
            .sum();
        if live != n || keys.len() != self.classes.len() {
            return Err("live leaves or class keys".into());
        }
        for sc in &self.classes {
            for (i, &d) in sc.drives.iter().enumerate() {
                if d == NONE && *sc.node(sc.size + i) != EMPTY {
                    return Err("dead leaf".into());
                }
            }
            for v in 1..sc.size {
                let (a, b) = (sc.node(2 * v), sc.node(2 * v + 1));
                let want = Node {
                    min: a.min.min(b.min),
                    lo: a.lo.min(b.lo),
                    hi: a.hi.max(b.hi),
                };
                if *sc.node(v) != want {
                    return Err(format!("node {v}"));
                }
            }
        }
        let is_anc = |a: u32, mut x: u32| {
            while x != NONE {
                if x == a {
                    return true;
                }
                x = inv.ix.dom_parent[x as usize];
            }
            false
        };
        for (x, &(a, b)) in self.dom_range.iter().enumerate() {
            for (y, &(c, d)) in self.dom_range.iter().enumerate() {
                let overlap = a < b && c < d && a < d && c < b;
                if x != y && overlap && !is_anc(x as u32, y as u32) && !is_anc(y as u32, x as u32) {
                    return Err(format!("ranges of unrelated domains {x} and {y} overlap"));
                }
            }
        }
        Ok(())
    }
}
