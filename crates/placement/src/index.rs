//! Per-domain aggregate index: for every static drive class (kind, capacity, RPM, tags,
//! transports, group), a min-segment tree of utilization keys over the class's drives laid out in
//! failure-hierarchy order. Every failure domain is then a contiguous range, so the window search
//! can walk drives best-first and prune a whole excluded rack or JBOD in O(log n) instead of
//! skipping its drives one by one.

use std::collections::HashMap;

use crate::inventory::{Inventory, NONE};

/// Leaf value of a drive that must not be offered (unhealthy).
pub(crate) const ABSENT: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub(crate) struct SegClass {
    /// Drives of the class in hierarchy order.
    pub(crate) drives: Vec<u32>,
    /// Global hierarchy position of each of those drives.
    pub(crate) gpos: Vec<u32>,
    /// Number of leaves (a power of two).
    pub(crate) size: usize,
    /// `tree[1]` is the root; leaves start at `size`.
    pub(crate) tree: Vec<u64>,
}

impl SegClass {
    /// Class-local leaf range `[lo, hi)` covered by node `v`, clipped to the drive count.
    #[inline]
    pub(crate) fn range(&self, v: usize) -> (usize, usize) {
        let depth = usize::BITS - 1 - v.leading_zeros();
        let width = self.size >> depth;
        let lo = (v - (1 << depth)) * width;
        (
            lo.min(self.drives.len()),
            (lo + width).min(self.drives.len()),
        )
    }

    fn set(&mut self, i: usize, val: u64) {
        let mut v = self.size + i;
        self.tree[v] = val;
        while v > 1 {
            v /= 2;
            self.tree[v] = self.tree[2 * v].min(self.tree[2 * v + 1]);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DomainIndex {
    pub(crate) classes: Vec<SegClass>,
    /// `(class, leaf)` of each drive.
    pub(crate) of: Vec<(u32, u32)>,
    /// Global hierarchy range `[lo, hi)` of each failure domain.
    pub(crate) dom_range: Vec<(u32, u32)>,
}

impl DomainIndex {
    /// Builds the index; `class_of(d)` names the static class of a drive and `value(d)` its
    /// leaf value.
    pub(crate) fn build<K: std::hash::Hash + Eq>(
        inv: &Inventory,
        class_of: impl Fn(u32) -> K,
        value: impl Fn(u32) -> u64,
    ) -> (Self, Vec<K>) {
        let n = inv.spec.drives.len();
        // Path from the root for every drive; lexicographic order makes domains contiguous.
        let paths: Vec<Vec<u32>> = (0..n as u32)
            .map(|d| {
                let leaf = inv.spec.drives[d as usize]
                    .domain
                    .as_ref()
                    .and_then(|x| inv.dom_index.get(x).copied())
                    .unwrap_or(NONE);
                let mut p = Vec::new();
                let mut x = leaf;
                while x != NONE {
                    p.push(x);
                    x = inv.dom_parent[x as usize];
                }
                p.reverse();
                p
            })
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| paths[a as usize].cmp(&paths[b as usize]).then(a.cmp(&b)));
        let mut gpos = vec![0u32; n];
        for (p, &d) in order.iter().enumerate() {
            gpos[d as usize] = p as u32;
        }
        let dom_range = inv
            .dom_drives
            .iter()
            .map(|ds| {
                let lo = ds.iter().map(|&d| gpos[d as usize]).min().unwrap_or(0);
                let hi = ds.iter().map(|&d| gpos[d as usize] + 1).max().unwrap_or(0);
                (lo, hi)
            })
            .collect();
        let mut keys: Vec<K> = Vec::new();
        let mut lookup: HashMap<K, u32> = HashMap::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut of = vec![(0u32, 0u32); n];
        for &d in &order {
            let k = class_of(d);
            let c = match lookup.get(&k) {
                Some(&c) => c,
                None => {
                    let c = members.len() as u32;
                    members.push(Vec::new());
                    lookup.insert(k, c);
                    c
                }
            };
            of[d as usize] = (c, members[c as usize].len() as u32);
            members[c as usize].push(d);
        }
        // Recover the keys in class order (HashMap iteration order is not class order).
        let mut by_class: Vec<Option<K>> = (0..members.len()).map(|_| None).collect();
        for (k, c) in lookup {
            by_class[c as usize] = Some(k);
        }
        keys.extend(by_class.into_iter().flatten());
        let classes = members
            .into_iter()
            .map(|drives| {
                let size = drives.len().max(1).next_power_of_two();
                let mut tree = vec![ABSENT; 2 * size];
                for (i, &d) in drives.iter().enumerate() {
                    tree[size + i] = value(d);
                }
                for v in (1..size).rev() {
                    tree[v] = tree[2 * v].min(tree[2 * v + 1]);
                }
                SegClass {
                    gpos: drives.iter().map(|&d| gpos[d as usize]).collect(),
                    drives,
                    size,
                    tree,
                }
            })
            .collect();
        (
            DomainIndex {
                classes,
                of,
                dom_range,
            },
            keys,
        )
    }

    /// Sets a drive's leaf value.
    pub(crate) fn update(&mut self, d: u32, val: u64) {
        let (c, i) = self.of[d as usize];
        self.classes[c as usize].set(i as usize, val);
    }
}
