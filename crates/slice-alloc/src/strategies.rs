//! Proptest strategies and `Arbitrary` implementations for the public value types (feature
//! `proptest`), so code built on this crate can be property-tested with realistic values.

use proptest::prelude::*;

use crate::{AllocatorConfig, DeviceId, DevicePolicy, DeviceSpec, Extent, GIB, Record, SliceId};

impl Arbitrary for DeviceId {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<u64>().prop_map(DeviceId::new).boxed()
    }
}

impl Arbitrary for SliceId {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        (1..u64::MAX).prop_map(SliceId::new).boxed()
    }
}

impl Arbitrary for Extent {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        (0..u64::MAX / 2, 1..u64::MAX / 2)
            .prop_map(|(o, l)| Extent::new(o, l).expect("offset + len < u64::MAX"))
            .boxed()
    }
}

impl Arbitrary for DevicePolicy {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        policy().boxed()
    }
}

impl Arbitrary for DeviceSpec {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        device_spec(any::<DeviceId>(), 1u64..=8192).boxed()
    }
}

impl Arbitrary for AllocatorConfig {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        (policy(), 0u8..=100, any::<bool>())
            .prop_map(
                |(policy, growth_headroom_percent, multi_extent)| AllocatorConfig {
                    policy,
                    growth_headroom_percent,
                    multi_extent,
                },
            )
            .boxed()
    }
}

impl Arbitrary for Record {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        prop_oneof![
            4 => single_record(),
            1 => proptest::collection::vec(single_record(), 2..4).prop_map(Record::Atomic),
        ]
        .boxed()
    }
}

/// Any record but an [`Record::Atomic`] group.
fn single_record() -> BoxedStrategy<Record> {
    {
        let exts = || proptest::collection::vec(any::<Extent>(), 1..4);
        prop_oneof![
            any::<DeviceSpec>().prop_map(Record::AddDevice),
            any::<DeviceId>().prop_map(Record::RemoveDevice),
            (any::<SliceId>(), any::<DeviceId>(), exts()).prop_map(|(slice, device, extents)| {
                Record::Allocate {
                    slice,
                    device,
                    extents,
                }
            }),
            any::<SliceId>().prop_map(|slice| Record::Free { slice }),
            (any::<SliceId>(), exts())
                .prop_map(|(slice, extents)| Record::Resize { slice, extents }),
            (any::<SliceId>(), any::<DeviceId>(), exts(), any::<u64>()).prop_map(
                |(slice, device, extents, expires_at)| Record::Reserve {
                    slice,
                    device,
                    extents,
                    expires_at,
                }
            ),
            any::<SliceId>().prop_map(|slice| Record::Commit { slice }),
            any::<SliceId>().prop_map(|slice| Record::Release { slice }),
            (any::<SliceId>(), any::<u64>())
                .prop_map(|(slice, expires_at)| Record::Renew { slice, expires_at }),
            (
                any::<DeviceId>(),
                "[a-z./-]{1,20}",
                proptest::option::of("[ -~]{0,20}")
            )
                .prop_map(|(device, key, value)| Record::SetLabel {
                    device,
                    key,
                    value
                }),
            (any::<DeviceId>(), any::<bool>())
                .prop_map(|(device, cordoned)| Record::Cordon { device, cordoned }),
            (any::<DeviceId>(), any::<u64>())
                .prop_map(|(device, capacity)| Record::ResizeDevice { device, capacity }),
            (any::<DeviceId>(), any::<u64>())
                .prop_map(|(device, reserved)| Record::SetReserved { device, reserved }),
        ]
        .boxed()
    }
}

/// Any device policy.
pub fn policy() -> impl Strategy<Value = DevicePolicy> {
    prop_oneof![
        Just(DevicePolicy::BestFitExtent),
        Just(DevicePolicy::BestFitLargestExtent),
        Just(DevicePolicy::MostFree),
        Just(DevicePolicy::LeastFragmented),
        Just(DevicePolicy::SpreadWithHeadroom),
    ]
}

/// A valid device with the given id strategy and a capacity of `units` granules; the
/// granularity is 1 GiB or a small power of two, the reserved headroom 0 to 10% of capacity.
pub fn device_spec(
    id: impl Strategy<Value = DeviceId>,
    units: impl Strategy<Value = u64>,
) -> impl Strategy<Value = DeviceSpec> {
    (
        id,
        units,
        prop_oneof![Just(GIB), Just(4096u64), Just(1u64 << 20)],
        0u64..=10,
    )
        .prop_map(|(id, units, g, pct)| {
            let cap = units.max(1) * g;
            DeviceSpec::from_parts(id, cap, g, cap / 100 * pct).expect("valid by construction")
        })
}

/// A set of devices with distinct ids `0..n` and capacities of `1..=max_units` granules.
pub fn devices(
    n: std::ops::RangeInclusive<usize>,
    max_units: u64,
) -> impl Strategy<Value = Vec<DeviceSpec>> {
    n.prop_flat_map(move |n| {
        (0..n)
            .map(|i| device_spec(Just(DeviceId::new(i as u64)), 1..=max_units))
            .collect::<Vec<_>>()
    })
}

impl Arbitrary for crate::Slice {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        (
            any::<SliceId>(),
            any::<DeviceId>(),
            proptest::collection::vec(any::<Extent>(), 1..4),
        )
            .prop_map(|(id, device, extents)| crate::Slice {
                id,
                device,
                extents,
            })
            .boxed()
    }
}
