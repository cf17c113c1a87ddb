//! Capacity queries: the largest member size a request could be placed with now, in the whole
//! inventory or in one topology segment (CSI `GetCapacity` and `maximum_volume_size`).
//!
//! Whether a size fits is monotone (a placement of size `s` is also one of any smaller size:
//! free space only grows as `s` shrinks, and bandwidth does not depend on it), so the answer is
//! the free space of the last drive of the shortest prefix, in order of decreasing free space,
//! that admits a placement. The engine walks the eligible drives in that order (a merge of its
//! per-class indexes, where free space and utilization order agree), doubles the prefix until a
//! placement exists and bisects back, each step decided by the refutation bounds and a short
//! search on the prefix only.

use std::collections::BinaryHeap;

use crate::engine::{Compiled, Engine, PlacementError};
use crate::inventory::NONE;
use crate::model::Bytes;
use crate::request::{Request, Segment};

/// Search steps allowed per prefix check before the bounds and the max-flow decide.
const PREFIX_BUDGET: u64 = 20_000;

impl Engine {
    /// The largest member size (bytes per member, as [`Request::size`]) with which `req` could
    /// be placed now, considering only drives in `segment` (a topology segment such as
    /// `{ rack = "r1" }`; it narrows the request's own `requisite`) — or `None` when no size
    /// fits. `req.size` is ignored. Soft constraints do not limit the answer (they never stop a
    /// placement). Changes nothing.
    ///
    /// Storage-group quotas make the answer depend on the size in a second way (a quota may
    /// hold two members of 2 TB but not of 3 TB); when an eligible drive lies in a group with a
    /// quota the answer is found by bisection over sizes instead, which is exact but slower.
    ///
    /// ```
    /// use placement::{Engine, Inventory, Mode, Request, Shape};
    ///
    /// let inv = Inventory::from_toml(r#"
    ///     domain = [{ id = "r1", level = "rack" }, { id = "r2", level = "rack" }]
    ///     drive = [
    ///       { id = "a", kind = "hdd", capacity = "8 TB", free = "5 TB", domain = "r1" },
    ///       { id = "b", kind = "hdd", capacity = "8 TB", free = "7 TB", domain = "r1" },
    ///       { id = "c", kind = "hdd", capacity = "8 TB", free = "3 TB", domain = "r2" },
    ///     ]
    /// "#).unwrap();
    /// let engine = Engine::new(inv, 0).unwrap();
    /// let mirror = Request::new(Shape::Mirror { legs: 2 }, 1).separate("rack", Mode::Hard);
    /// // One leg per rack: the r2 drive's 3 TB is the limit.
    /// assert_eq!(engine.max_placeable(&mirror, None).unwrap().map(|b| b.0), Some(3_000_000_000_000));
    /// let single = Request::new(Shape::Single, 1);
    /// let r1 = [("rack".to_string(), "r1".to_string())].into_iter().collect();
    /// assert_eq!(engine.max_placeable(&single, Some(&r1)).unwrap().map(|b| b.0), Some(7_000_000_000_000));
    /// ```
    pub fn max_placeable(
        &self,
        req: &Request,
        segment: Option<&Segment>,
    ) -> Result<Option<Bytes>, PlacementError> {
        let _span =
            tracing::debug_span!("placement.max_placeable", request = %req.label()).entered();
        let mut r = req.clone();
        r.size = Bytes(1);
        if let Some(seg) = segment {
            r.requisite = if req.requisite.is_empty() {
                vec![seg.clone()]
            } else {
                // Each requisite segment narrowed by `segment`; contradicting ones drop out.
                req.requisite
                    .iter()
                    .filter(|s| s.iter().all(|(k, v)| seg.get(k).is_none_or(|x| x == v)))
                    .map(|s| {
                        let mut m = s.clone();
                        m.extend(seg.iter().map(|(k, v)| (k.clone(), v.clone())));
                        m
                    })
                    .collect()
            };
            if r.requisite.is_empty() {
                return Ok(None);
            }
        }
        let mut c = self.compile(&r, None, false)?;
        // Pinned members are charged too: their drives bound the size.
        let mut cap = u64::MAX;
        for &p in c.pins.iter().filter(|&&p| p != NONE) {
            if !self.is_candidate(&c, p) {
                return Ok(None);
            }
            cap = cap.min(self.free_of(p));
        }
        if self.eligible_have_quota(&c) {
            return Ok(self.bisect_sizes(&r, cap));
        }
        let n = c.free_members();
        if n == 0 {
            return Ok(Some(Bytes(cap)));
        }
        // `base` keeps the size of 1 the order was filtered with; `c` takes each prefix's size.
        let base = c.clone();
        let mut order = self.free_order(&base);
        let fits = |c: &mut Compiled, k: usize, order: &mut FreeOrder<'_>| {
            let cands = order.prefix(self, &base, k);
            c.size = self.free_of(cands[k - 1]).min(cap);
            match self.decide_on(c, cands, PREFIX_BUDGET) {
                Some(v) => Ok(v),
                None => Err(PlacementError::SearchExhausted {
                    nodes: PREFIX_BUDGET,
                    explanation: Box::new(self.explain(&r, c)),
                }),
            }
        };
        if order.prefix(self, &base, n).len() < n {
            return Ok(None);
        }
        // Double the prefix until it admits a placement, then bisect back.
        let (mut lo, mut hi) = (n - 1, n);
        loop {
            if fits(&mut c, hi, &mut order)? {
                break;
            }
            let more = order.prefix(self, &base, hi * 2).len();
            if more == hi {
                return Ok(None);
            }
            lo = hi;
            hi = more;
        }
        // Invariant: prefix `hi` fits, prefix `lo` does not (or is shorter than `n`).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(&mut c, mid, &mut order)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let last = order.prefix(self, &base, hi)[hi - 1];
        Ok(Some(Bytes(self.free_of(last).min(cap))))
    }

    /// Whether an eligible drive lies in a storage group with a quota (by class: the group is
    /// part of the class).
    fn eligible_have_quota(&self, c: &Compiled) -> bool {
        self.class_sets(c)
            .filter_map(|mut it| it.next())
            .any(|d| self.has_quota(d))
    }

    /// Eligible drives (pinned ones excluded) in order of decreasing free space, produced on
    /// demand.
    fn free_order<'a>(&'a self, c: &Compiled) -> FreeOrder<'a> {
        if !c.requisite.is_empty() {
            // The segments' drives only (a drive matches a segment only if it lies under the
            // segment's first domain).
            let mut v: Vec<u32> = c
                .requisite
                .iter()
                .filter_map(|seg| seg.first().map(|&(_, x)| x))
                .flat_map(|x| self.inventory().ix.dom_drives[x as usize].iter().copied())
                .filter(|&d| !c.pins.contains(&d) && self.is_candidate(c, d))
                .collect();
            v.sort_unstable_by_key(|&d| (std::cmp::Reverse(self.free_of(d)), d));
            v.dedup();
            return FreeOrder {
                iters: Vec::new(),
                heap: BinaryHeap::new(),
                out: v,
            };
        }
        // Within a class (equal capacity), increasing utilization is decreasing free space:
        // merge the eligible classes' ordered sets by free space.
        let mut iters: Vec<ClassIter<'a>> = self.class_sets_boxed(c);
        let mut heap = BinaryHeap::with_capacity(iters.len());
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some(d) = it.next() {
                heap.push((self.free_of(d), std::cmp::Reverse(d), i));
            }
        }
        FreeOrder {
            iters,
            heap,
            out: Vec::new(),
        }
    }

    /// Largest size in `1..=cap` that `r` can be placed with, by bisection over sizes.
    fn bisect_sizes(&self, r: &Request, cap: u64) -> Option<Bytes> {
        let fits = |size: u64| {
            let mut t = r.clone();
            t.size = Bytes(size);
            self.plan(&t).is_ok()
        };
        let hi_start = self
            .inventory()
            .drives_free()
            .iter()
            .map(|f| f.0)
            .max()
            .unwrap_or(0)
            .min(cap);
        if hi_start == 0 || !fits(1) {
            return None;
        }
        let (mut lo, mut hi) = (1u64, hi_start);
        // Invariant: `lo` fits; everything above `hi` does not.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(Bytes(lo))
    }
}

type ClassIter<'a> = Box<dyn Iterator<Item = u32> + 'a>;

/// A lazy merge of the eligible classes by decreasing free space.
struct FreeOrder<'a> {
    iters: Vec<ClassIter<'a>>,
    heap: BinaryHeap<(u64, std::cmp::Reverse<u32>, usize)>,
    out: Vec<u32>,
}

impl FreeOrder<'_> {
    /// The first `k` eligible drives (fewer when there are not that many).
    fn prefix(&mut self, eng: &Engine, c: &Compiled, k: usize) -> &[u32] {
        while self.out.len() < k {
            let Some((_, std::cmp::Reverse(d), i)) = self.heap.pop() else {
                break;
            };
            if let Some(next) = self.iters[i].next() {
                self.heap
                    .push((eng.free_of(next), std::cmp::Reverse(next), i));
            }
            if !c.pins.contains(&d) && eng.drive_filter(c, d).is_none() {
                self.out.push(d);
            }
        }
        &self.out[..k.min(self.out.len())]
    }
}
