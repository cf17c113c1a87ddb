//! `proptest` strategies for this crate's types (feature `proptest`), so
//! that users can property-test their own code over every md layout.

use proptest::prelude::*;

use crate::geometry::Geometry;
use crate::layout::{Layout, Level, ParityAlgorithm, Raid0Layout, Raid10Layout};
use crate::units::{ChunkSize, Sectors};

const ALGORITHMS: [ParityAlgorithm; 14] = [
    ParityAlgorithm::LeftAsymmetric,
    ParityAlgorithm::RightAsymmetric,
    ParityAlgorithm::LeftSymmetric,
    ParityAlgorithm::RightSymmetric,
    ParityAlgorithm::ParityFirst,
    ParityAlgorithm::ParityLast,
    ParityAlgorithm::DdfZeroRestart,
    ParityAlgorithm::DdfNRestart,
    ParityAlgorithm::DdfNContinue,
    ParityAlgorithm::LeftAsymmetric6,
    ParityAlgorithm::RightAsymmetric6,
    ParityAlgorithm::LeftSymmetric6,
    ParityAlgorithm::RightSymmetric6,
    ParityAlgorithm::ParityFirst6,
];

impl Arbitrary for Level {
    type Parameters = ();
    type Strategy = BoxedStrategy<Level>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        prop::sample::select(vec![
            Level::Raid0,
            Level::Raid1,
            Level::Raid4,
            Level::Raid5,
            Level::Raid6,
            Level::Raid10,
        ])
        .boxed()
    }
}

impl Arbitrary for ParityAlgorithm {
    type Parameters = ();
    type Strategy = BoxedStrategy<ParityAlgorithm>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        prop::sample::select(ALGORITHMS.to_vec()).boxed()
    }
}

impl Arbitrary for Raid10Layout {
    type Parameters = ();
    type Strategy = BoxedStrategy<Raid10Layout>;
    /// Near/far/offset arrangements with up to 3 near and 3 far copies.
    fn arbitrary_with(_: ()) -> Self::Strategy {
        (1u8..4, 1u8..4, any::<bool>())
            .prop_filter_map("at least two copies", |(n, f, o)| {
                Raid10Layout::new(n, f, o && f > 1).ok()
            })
            .boxed()
    }
}

impl Arbitrary for Layout {
    type Parameters = ();
    type Strategy = BoxedStrategy<Layout>;
    /// Every md layout: RAID5 with its six algorithms, RAID6 with all 14.
    fn arbitrary_with(_: ()) -> Self::Strategy {
        prop_oneof![
            any::<bool>().prop_map(|alt| Layout::Raid0(if alt {
                Raid0Layout::Alternate
            } else {
                Raid0Layout::Original
            })),
            Just(Layout::Raid1),
            Just(Layout::Raid4),
            (0usize..6).prop_map(|i| Layout::Raid5(ALGORITHMS[i])),
            any::<ParityAlgorithm>().prop_map(Layout::Raid6),
            any::<Raid10Layout>().prop_map(Layout::Raid10),
        ]
        .boxed()
    }
}

impl Arbitrary for Sectors {
    type Parameters = ();
    type Strategy = BoxedStrategy<Sectors>;
    /// Any count up to 2^55 sectors (2^64 bytes), small counts more often.
    fn arbitrary_with(_: ()) -> Self::Strategy {
        prop_oneof![0u64..4096, 0u64..(1 << 55)]
            .prop_map(Sectors::new)
            .boxed()
    }
}

impl Arbitrary for ChunkSize {
    type Parameters = ();
    type Strategy = BoxedStrategy<ChunkSize>;
    /// Powers of two from 4 KiB to 64 MiB (what every level accepts) and
    /// other multiples of 4 KiB (RAID0 only).
    fn arbitrary_with(_: ()) -> Self::Strategy {
        prop_oneof![
            (3u32..=17).prop_map(|k| 1u64 << k),
            (1u64..=4096).prop_map(|k| k * 8),
        ]
        .prop_filter_map("valid chunk", |s| ChunkSize::new(Sectors::new(s)).ok())
        .boxed()
    }
}

/// Valid geometries of any layout with up to `max_members` members (at
/// least the layout's minimum) of 2..=`max_chunks` chunks each (sizes may
/// differ and need not be chunk multiples), chunk 8 or 16 sectors.
pub fn geometry(max_members: usize, max_chunks: u64) -> impl Strategy<Value = Geometry> {
    let max_chunks = max_chunks.max(2);
    (
        any::<Layout>(),
        0usize..=max_members,
        any::<bool>(),
        prop::collection::vec((2u64..=max_chunks, 0u64..8), max_members.max(12)),
    )
        .prop_filter_map("valid md geometry", move |(layout, extra, big, sizes)| {
            let min = match layout {
                Layout::Raid0(_) | Layout::Raid1 => 1,
                Layout::Raid4 | Layout::Raid5(_) => 2,
                Layout::Raid6(_) => 4,
                Layout::Raid10(r) => r.copies(),
            };
            let n = (min + extra).min(max_members.max(min)).min(sizes.len());
            let chunk = if big { 16 } else { 8 };
            let members: Vec<u64> = sizes[..n].iter().map(|(c, r)| c * chunk + r).collect();
            Geometry::new(layout, chunk, &members).ok()
        })
}
