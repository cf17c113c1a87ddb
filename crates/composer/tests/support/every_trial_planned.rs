//! `Pool::largest_placeable` as it was before a slice trial larger than
//! placement allows was refused without planning: a bisection over
//! `Pool::would_place`, every trial planned. The oracle of
//! `tests/capacity_agrees.rs` and the peer of `benches/largest_placeable.rs`.

use composer_core::plan::SLICE_GRANULARITY;
use composer_core::{Parameters, Pool};
use csi_types::types::TopologyRequirement;

/// The largest size up to `upper` a create of `p` would place now, every
/// trial planned.
pub fn every_trial_planned(
    pool: &mut Pool,
    p: &Parameters,
    topology: Option<&TopologyRequirement>,
    upper: u64,
) -> u64 {
    let mut fits = |b| pool.would_place(p, topology, b).unwrap();
    if upper == 0 || fits(upper) {
        return upper;
    }
    let g = SLICE_GRANULARITY;
    let (mut lo, mut hi) = (0u64, upper.div_ceil(g));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid * g) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo * g
}
