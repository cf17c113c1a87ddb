//! Properties of the typed layer (feature `proptest`):
//!
//! 1. validation never panics, whatever the wire carries: structured raw
//!    requests with wild strings, maps, numbers, enum values and missing
//!    submessages, and mutated or random encodings of every message;
//! 2. typed → proto → typed is the identity for every request and response,
//!    and the proto survives a prost encode/decode unchanged;
//! 3. every invalid field is reported with its field path: each request and
//!    response is generated valid, one field is broken in one specific way,
//!    and the `InvalidArgument` error must name exactly that field;
//! 4. every field the spec's comments mark REQUIRED (read from the spec's
//!    protobuf when `../shared/reference` is present, else from
//!    `proto/csi.proto`) is enforced: removed from a valid encoding at any
//!    depth, it is reported by its path.
//!
//! 64 cases per property by default; set `PROPTEST_CASES` for more.
#![cfg(feature = "proptest")]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::rc::Rc;

use csi_types::check::ResponseRules;
use csi_types::prelude::*;
use csi_types::{
    capabilities::{
        ControllerCapabilities, GroupControllerCapabilities, NodeCapabilities, PluginCapabilities,
    },
    controller::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
        ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
        ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerModifyVolumeRequest,
        ControllerModifyVolumeResponse, ControllerPublishVolumeRequest,
        ControllerPublishVolumeResponse, ControllerUnpublishVolumeRequest,
        ControllerUnpublishVolumeResponse, CreateSnapshotRequest, CreateSnapshotResponse,
        CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest, DeleteSnapshotResponse,
        DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
        GetSnapshotRequest, GetSnapshotResponse, ListSnapshotsRequest, ListSnapshotsResponse,
        ListVolumesRequest, ListVolumesResponse, ValidateVolumeCapabilitiesRequest,
        ValidateVolumeCapabilitiesResponse,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
        GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse,
        GroupControllerGetCapabilitiesRequest, GroupControllerGetCapabilitiesResponse,
        VolumeGroupSnapshot,
    },
    identity::{
        GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
        GetPluginInfoResponse, ProbeRequest, ProbeResponse,
    },
    ids::{NodeId, SnapshotId, VolumeId, VolumeName},
    node::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
        NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
        NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
        NodeUnstageVolumeResponse, UsageUnit, VolumeUsage,
    },
    proto,
    snapshot_metadata::{
        BlockMetadataResponse, BlockMetadataType, GetMetadataAllocatedRequest,
        GetMetadataDeltaRequest,
    },
    types::{
        AccessMode, CapacityRange, Snapshot, Topology, TopologyRequirement, Volume,
        VolumeCapability, VolumeCondition, VolumeContentSource,
    },
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestRunner;

/// 64 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

fn run<S: Strategy>(what: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{what}: {e}");
    }
}

// ---------------------------------------------------------------------------
// 2. typed -> proto -> typed is the identity.

fn round_trip<T, P>()
where
    T: Arbitrary
        + Clone
        + Debug
        + PartialEq
        + TryInto<P, Error: Debug>
        + TryFrom<P, Error = CsiError>,
    P: prost::Message + Default + Clone + PartialEq,
{
    run(std::any::type_name::<T>(), any::<T>(), |typed| {
        let wire: P = typed.clone().try_into().expect("sizes within int64");
        let decoded = P::decode(wire.encode_to_vec().as_slice())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(
            decoded == wire,
            "prost encode/decode changed the wire message"
        );
        prop_assert_eq!(T::try_from(decoded), Ok(typed));
        Ok(())
    });
}

#[test]
fn identity_round_trips() {
    round_trip::<GetPluginInfoRequest, proto::GetPluginInfoRequest>();
    round_trip::<GetPluginInfoResponse, proto::GetPluginInfoResponse>();
    round_trip::<GetPluginCapabilitiesRequest, proto::GetPluginCapabilitiesRequest>();
    round_trip::<GetPluginCapabilitiesResponse, proto::GetPluginCapabilitiesResponse>();
    round_trip::<ProbeRequest, proto::ProbeRequest>();
    round_trip::<ProbeResponse, proto::ProbeResponse>();
}

#[test]
fn controller_round_trips() {
    round_trip::<CreateVolumeRequest, proto::CreateVolumeRequest>();
    round_trip::<CreateVolumeResponse, proto::CreateVolumeResponse>();
    round_trip::<DeleteVolumeRequest, proto::DeleteVolumeRequest>();
    round_trip::<DeleteVolumeResponse, proto::DeleteVolumeResponse>();
    round_trip::<ControllerPublishVolumeRequest, proto::ControllerPublishVolumeRequest>();
    round_trip::<ControllerPublishVolumeResponse, proto::ControllerPublishVolumeResponse>();
    round_trip::<ControllerUnpublishVolumeRequest, proto::ControllerUnpublishVolumeRequest>();
    round_trip::<ControllerUnpublishVolumeResponse, proto::ControllerUnpublishVolumeResponse>();
    round_trip::<ValidateVolumeCapabilitiesRequest, proto::ValidateVolumeCapabilitiesRequest>();
    round_trip::<ValidateVolumeCapabilitiesResponse, proto::ValidateVolumeCapabilitiesResponse>();
    round_trip::<ListVolumesRequest, proto::ListVolumesRequest>();
    round_trip::<ListVolumesResponse, proto::ListVolumesResponse>();
    round_trip::<ControllerGetVolumeRequest, proto::ControllerGetVolumeRequest>();
    round_trip::<ControllerGetVolumeResponse, proto::ControllerGetVolumeResponse>();
    round_trip::<ControllerModifyVolumeRequest, proto::ControllerModifyVolumeRequest>();
    round_trip::<ControllerModifyVolumeResponse, proto::ControllerModifyVolumeResponse>();
    round_trip::<GetCapacityRequest, proto::GetCapacityRequest>();
    round_trip::<GetCapacityResponse, proto::GetCapacityResponse>();
    round_trip::<ControllerGetCapabilitiesRequest, proto::ControllerGetCapabilitiesRequest>();
    round_trip::<ControllerGetCapabilitiesResponse, proto::ControllerGetCapabilitiesResponse>();
    round_trip::<CreateSnapshotRequest, proto::CreateSnapshotRequest>();
    round_trip::<CreateSnapshotResponse, proto::CreateSnapshotResponse>();
    round_trip::<DeleteSnapshotRequest, proto::DeleteSnapshotRequest>();
    round_trip::<DeleteSnapshotResponse, proto::DeleteSnapshotResponse>();
    round_trip::<ListSnapshotsRequest, proto::ListSnapshotsRequest>();
    round_trip::<ListSnapshotsResponse, proto::ListSnapshotsResponse>();
    round_trip::<GetSnapshotRequest, proto::GetSnapshotRequest>();
    round_trip::<GetSnapshotResponse, proto::GetSnapshotResponse>();
    round_trip::<ControllerExpandVolumeRequest, proto::ControllerExpandVolumeRequest>();
    round_trip::<ControllerExpandVolumeResponse, proto::ControllerExpandVolumeResponse>();
}

#[test]
fn node_round_trips() {
    round_trip::<NodeStageVolumeRequest, proto::NodeStageVolumeRequest>();
    round_trip::<NodeStageVolumeResponse, proto::NodeStageVolumeResponse>();
    round_trip::<NodeUnstageVolumeRequest, proto::NodeUnstageVolumeRequest>();
    round_trip::<NodeUnstageVolumeResponse, proto::NodeUnstageVolumeResponse>();
    round_trip::<NodePublishVolumeRequest, proto::NodePublishVolumeRequest>();
    round_trip::<NodePublishVolumeResponse, proto::NodePublishVolumeResponse>();
    round_trip::<NodeUnpublishVolumeRequest, proto::NodeUnpublishVolumeRequest>();
    round_trip::<NodeUnpublishVolumeResponse, proto::NodeUnpublishVolumeResponse>();
    round_trip::<NodeGetVolumeStatsRequest, proto::NodeGetVolumeStatsRequest>();
    round_trip::<NodeGetVolumeStatsResponse, proto::NodeGetVolumeStatsResponse>();
    round_trip::<NodeExpandVolumeRequest, proto::NodeExpandVolumeRequest>();
    round_trip::<NodeExpandVolumeResponse, proto::NodeExpandVolumeResponse>();
    round_trip::<NodeGetCapabilitiesRequest, proto::NodeGetCapabilitiesRequest>();
    round_trip::<NodeGetCapabilitiesResponse, proto::NodeGetCapabilitiesResponse>();
    round_trip::<NodeGetInfoRequest, proto::NodeGetInfoRequest>();
    round_trip::<NodeGetInfoResponse, proto::NodeGetInfoResponse>();
}

#[test]
fn group_controller_and_snapshot_metadata_round_trips() {
    round_trip::<GroupControllerGetCapabilitiesRequest, proto::GroupControllerGetCapabilitiesRequest>(
    );
    round_trip::<
        GroupControllerGetCapabilitiesResponse,
        proto::GroupControllerGetCapabilitiesResponse,
    >();
    round_trip::<CreateVolumeGroupSnapshotRequest, proto::CreateVolumeGroupSnapshotRequest>();
    round_trip::<CreateVolumeGroupSnapshotResponse, proto::CreateVolumeGroupSnapshotResponse>();
    round_trip::<DeleteVolumeGroupSnapshotRequest, proto::DeleteVolumeGroupSnapshotRequest>();
    round_trip::<DeleteVolumeGroupSnapshotResponse, proto::DeleteVolumeGroupSnapshotResponse>();
    round_trip::<GetVolumeGroupSnapshotRequest, proto::GetVolumeGroupSnapshotRequest>();
    round_trip::<GetVolumeGroupSnapshotResponse, proto::GetVolumeGroupSnapshotResponse>();
    round_trip::<GetMetadataAllocatedRequest, proto::GetMetadataAllocatedRequest>();
    round_trip::<GetMetadataDeltaRequest, proto::GetMetadataDeltaRequest>();
    round_trip::<BlockMetadataResponse, proto::GetMetadataAllocatedResponse>();
    round_trip::<BlockMetadataResponse, proto::GetMetadataDeltaResponse>();
}

#[test]
fn shared_types_round_trip() {
    round_trip::<VolumeCapability, proto::VolumeCapability>();
    round_trip::<CapacityRange, proto::CapacityRange>();
    round_trip::<Topology, proto::Topology>();
    round_trip::<TopologyRequirement, proto::TopologyRequirement>();
    round_trip::<VolumeContentSource, proto::VolumeContentSource>();
    round_trip::<Volume, proto::Volume>();
    round_trip::<VolumeCondition, proto::VolumeCondition>();
    round_trip::<Snapshot, proto::Snapshot>();
    run(
        "capability sets",
        any::<(
            PluginCapabilities,
            ControllerCapabilities,
            NodeCapabilities,
            GroupControllerCapabilities,
        )>(),
        |(p, c, n, g)| {
            prop_assert_eq!(PluginCapabilities::from_proto(&p.to_proto()), p);
            prop_assert_eq!(ControllerCapabilities::from_proto(&c.to_proto()), c);
            prop_assert_eq!(NodeCapabilities::from_proto(&n.to_proto()), n);
            prop_assert_eq!(GroupControllerCapabilities::from_proto(&g.to_proto()), g);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 1. Validation never panics on any wire input.

/// Strings of every kind the rules care about: empty, short, long, exactly
/// around the limits, Unicode, control characters, NULs, relative and
/// absolute paths, topology-looking keys.
fn wild_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        4 => "[a-z0-9-]{1,12}",
        2 => ".{0,24}",
        1 => any::<String>(),
        1 => "[a-z]{126,130}",
        1 => "é{62,66}",
        1 => "[a-z]{250,260}",
        1 => "/x{4090,4100}",
        2 => select(vec![
            "/var/lib/kubelet/x", "rel/path", "\0", "a\u{7}b", "\u{85}", "\u{7f}", "Zone", "-x", "a/b/c", "/a\0b",
            "topology.example.com/rack", "Topology.example.com/rack", "example.com/", "/zone", "pass word", "ключ",
            " ", "\t\n",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

/// Maps small and huge, with keys that break the secret and topology rules.
fn wild_map() -> BoxedStrategy<BTreeMap<String, String>> {
    prop_oneof![
        6 => vec((wild_string(), wild_string()), 0..=5).prop_map(|kv| kv.into_iter().collect()),
        1 => ("[a-z]{1,4}", "v{4090,4100}").prop_map(|(k, v)| [(k, v)].into()),
    ]
    .boxed()
}

fn wild_i64() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        -10i64..10,
        any::<i64>()
    ]
    .boxed()
}

fn wild_i32() -> BoxedStrategy<i32> {
    prop_oneof![
        Just(0i32),
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX),
        -3i32..20,
        any::<i32>()
    ]
    .boxed()
}

fn wild_capability() -> BoxedStrategy<proto::VolumeCapability> {
    use proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    let mount = (
        wild_string(),
        vec(wild_string(), 0..=3),
        wild_string(),
        proptest::option::of("x{4097}"),
    )
        .prop_map(|(fs_type, mut mount_flags, volume_mount_group, huge)| {
            mount_flags.extend(huge);
            MountVolume {
                fs_type,
                mount_flags,
                volume_mount_group,
            }
        });
    let access_type = proptest::option::of(prop_oneof![
        Just(AccessType::Block(BlockVolume {})),
        mount.prop_map(AccessType::Mount),
    ]);
    let access_mode = proptest::option::of(wild_i32().prop_map(|mode| AccessMode { mode }));
    (access_type, access_mode)
        .prop_map(|(access_type, access_mode)| proto::VolumeCapability {
            access_type,
            access_mode,
        })
        .boxed()
}

fn wild_capabilities() -> BoxedStrategy<Vec<proto::VolumeCapability>> {
    vec(wild_capability(), 0..=3).boxed()
}

fn wild_capacity() -> BoxedStrategy<Option<proto::CapacityRange>> {
    proptest::option::of(
        (wild_i64(), wild_i64()).prop_map(|(required_bytes, limit_bytes)| proto::CapacityRange {
            required_bytes,
            limit_bytes,
        }),
    )
    .boxed()
}

fn wild_topology() -> BoxedStrategy<proto::Topology> {
    let key = prop_oneof![
        wild_string(),
        select(vec![
            "zone",
            "ZONE",
            "Zone",
            "topology.example.com/zone",
            "UPPER.example.com/z",
            "a/b/c",
            ""
        ])
        .prop_map(String::from),
    ];
    let value = prop_oneof![
        wild_string(),
        select(vec!["z1", "-z", "z_1.a", ""]).prop_map(String::from)
    ];
    vec((key, value), 0..=4)
        .prop_map(|kv| proto::Topology {
            segments: kv.into_iter().collect(),
        })
        .boxed()
}

fn wild_requirement() -> BoxedStrategy<Option<proto::TopologyRequirement>> {
    proptest::option::of(
        (vec(wild_topology(), 0..=2), vec(wild_topology(), 0..=2)).prop_map(
            |(requisite, preferred)| proto::TopologyRequirement {
                requisite,
                preferred,
            },
        ),
    )
    .boxed()
}

fn wild_source() -> BoxedStrategy<Option<proto::VolumeContentSource>> {
    use proto::volume_content_source::{SnapshotSource, Type, VolumeSource};
    proptest::option::of(
        proptest::option::of(prop_oneof![
            wild_string().prop_map(|snapshot_id| Type::Snapshot(SnapshotSource { snapshot_id })),
            wild_string().prop_map(|volume_id| Type::Volume(VolumeSource { volume_id })),
        ])
        .prop_map(|r#type| proto::VolumeContentSource { r#type }),
    )
    .boxed()
}

/// The fields of a streamed block-metadata message, anything at all: any
/// type number, any figures; and, half of the time, a known type, a
/// capacity in range and ranges that follow one another (each starting
/// where the one before ends, plus a small gap that may be negative), so
/// that the order and size rules, and not only the signs, decide.
fn wild_block_metadata() -> impl Strategy<Value = (i32, i64, Vec<proto::BlockMetadata>)> {
    let range = |(byte_offset, size_bytes)| proto::BlockMetadata {
        byte_offset,
        size_bytes,
    };
    let wild = vec((wild_i64(), wild_i64()), 0..=4)
        .prop_map(move |r| r.into_iter().map(range).collect::<Vec<_>>());
    let following = (
        0i64..(1 << 20),
        vec(
            (
                prop_oneof![2 => 0i64..=2, 1 => -2i64..=-1],
                prop_oneof![Just(4096i64), 1i64..=8192],
            ),
            0..=4,
        ),
    )
        .prop_map(|(start, steps)| {
            let mut at = start;
            steps
                .into_iter()
                .map(|(gap, size_bytes)| {
                    let byte_offset = at + gap;
                    at = byte_offset + size_bytes;
                    proto::BlockMetadata {
                        byte_offset,
                        size_bytes,
                    }
                })
                .collect::<Vec<_>>()
        });
    (
        prop_oneof![wild_i32(), 0i32..=3],
        prop_oneof![wild_i64(), 0i64..(1 << 40)],
        prop_oneof![wild, following],
    )
}

fn no_panic<T, P>(what: &str, strategy: impl Strategy<Value = P>)
where
    T: TryFrom<P, Error = CsiError> + Debug,
    P: Debug,
{
    run(what, strategy, no_panic_case::<T, P>);
}

fn no_panic_case<T, P>(p: P) -> Result<(), TestCaseError>
where
    T: TryFrom<P, Error = CsiError> + Debug,
    P: Debug,
{
    // Errors are fine; a panic fails the property. An error must say something.
    if let Err(e) = T::try_from(p) {
        prop_assert!(!e.to_string().is_empty());
        if let CsiError::InvalidArgument { field, rule } = &e {
            prop_assert!(!field.is_empty() && !rule.is_empty(), "{e:?}");
        }
    }
    Ok(())
}

/// [`no_panic`] for a response, whose in-place check
/// (`ResponseRules::must`) must answer what the conversion answers.
fn no_panic_response<T, P>(what: &str, strategy: impl Strategy<Value = P>)
where
    T: TryFrom<P, Error = CsiError> + Debug,
    P: Debug + Clone + ResponseRules,
{
    run(what, strategy, |p| {
        must_agrees::<T, P>(&p)?;
        no_panic_case::<T, P>(p)
    });
}

/// The in-place check of a response (`ResponseRules::must`) agrees with its
/// typed conversion: the same verdict, the same first error, the same text.
/// The conversions (of the unary responses and of each streamed
/// block-metadata message) run that check and then build without checking
/// again, so this holds the construction to what the check proved: a field
/// it builds as present or in range that the check let through broken would
/// panic here.
fn must_agrees<T, P>(p: &P) -> Result<(), TestCaseError>
where
    T: TryFrom<P, Error = CsiError> + Debug,
    P: Debug + Clone + ResponseRules,
{
    let in_place = p.must();
    let converted = T::try_from(p.clone()).map(drop);
    prop_assert_eq!(
        in_place.as_ref().map_err(ToString::to_string),
        converted.as_ref().map_err(ToString::to_string),
        "{:?}",
        p
    );
    prop_assert_eq!(in_place, converted, "{:?}", p);
    Ok(())
}

#[test]
fn controller_validation_never_panics() {
    no_panic::<CreateVolumeRequest, _>(
        "CreateVolumeRequest",
        (
            wild_string(),
            wild_capacity(),
            wild_capabilities(),
            wild_map(),
            wild_map(),
            wild_source(),
            wild_requirement(),
            wild_map(),
        )
            .prop_map(
                |(
                    name,
                    capacity_range,
                    volume_capabilities,
                    parameters,
                    secrets,
                    src,
                    req,
                    mutable,
                )| {
                    proto::CreateVolumeRequest {
                        name,
                        capacity_range,
                        volume_capabilities,
                        parameters,
                        secrets,
                        volume_content_source: src,
                        accessibility_requirements: req,
                        mutable_parameters: mutable,
                    }
                },
            ),
    );
    no_panic::<DeleteVolumeRequest, _>(
        "DeleteVolumeRequest",
        (wild_string(), wild_map())
            .prop_map(|(volume_id, secrets)| proto::DeleteVolumeRequest { volume_id, secrets }),
    );
    no_panic::<ControllerPublishVolumeRequest, _>(
        "ControllerPublishVolumeRequest",
        (
            wild_string(),
            wild_string(),
            proptest::option::of(wild_capability()),
            any::<bool>(),
            wild_map(),
            wild_map(),
        )
            .prop_map(
                |(volume_id, node_id, volume_capability, readonly, secrets, volume_context)| {
                    proto::ControllerPublishVolumeRequest {
                        volume_id,
                        node_id,
                        volume_capability,
                        readonly,
                        secrets,
                        volume_context,
                    }
                },
            ),
    );
    no_panic::<ControllerUnpublishVolumeRequest, _>(
        "ControllerUnpublishVolumeRequest",
        (wild_string(), wild_string(), wild_map()).prop_map(|(volume_id, node_id, secrets)| {
            proto::ControllerUnpublishVolumeRequest {
                volume_id,
                node_id,
                secrets,
            }
        }),
    );
    no_panic::<ValidateVolumeCapabilitiesRequest, _>(
        "ValidateVolumeCapabilitiesRequest",
        (
            wild_string(),
            wild_map(),
            wild_capabilities(),
            wild_map(),
            wild_map(),
            wild_map(),
        )
            .prop_map(
                |(
                    volume_id,
                    volume_context,
                    volume_capabilities,
                    parameters,
                    secrets,
                    mutable_parameters,
                )| {
                    proto::ValidateVolumeCapabilitiesRequest {
                        volume_id,
                        volume_context,
                        volume_capabilities,
                        parameters,
                        secrets,
                        mutable_parameters,
                    }
                },
            ),
    );
    no_panic::<ListVolumesRequest, _>(
        "ListVolumesRequest",
        (wild_i32(), wild_string()).prop_map(|(max_entries, starting_token)| {
            proto::ListVolumesRequest {
                max_entries,
                starting_token,
            }
        }),
    );
    no_panic::<ControllerGetVolumeRequest, _>(
        "ControllerGetVolumeRequest",
        wild_string().prop_map(|volume_id| proto::ControllerGetVolumeRequest { volume_id }),
    );
    no_panic::<ControllerModifyVolumeRequest, _>(
        "ControllerModifyVolumeRequest",
        (wild_string(), wild_map(), wild_map()).prop_map(
            |(volume_id, secrets, mutable_parameters)| proto::ControllerModifyVolumeRequest {
                volume_id,
                secrets,
                mutable_parameters,
            },
        ),
    );
    no_panic::<GetCapacityRequest, _>(
        "GetCapacityRequest",
        (
            wild_capabilities(),
            wild_map(),
            proptest::option::of(wild_topology()),
        )
            .prop_map(|(volume_capabilities, parameters, accessible_topology)| {
                proto::GetCapacityRequest {
                    volume_capabilities,
                    parameters,
                    accessible_topology,
                }
            }),
    );
    no_panic::<CreateSnapshotRequest, _>(
        "CreateSnapshotRequest",
        (wild_string(), wild_string(), wild_map(), wild_map()).prop_map(
            |(source_volume_id, name, secrets, parameters)| proto::CreateSnapshotRequest {
                source_volume_id,
                name,
                secrets,
                parameters,
            },
        ),
    );
    no_panic::<DeleteSnapshotRequest, _>(
        "DeleteSnapshotRequest",
        (wild_string(), wild_map()).prop_map(|(snapshot_id, secrets)| {
            proto::DeleteSnapshotRequest {
                snapshot_id,
                secrets,
            }
        }),
    );
    no_panic::<ListSnapshotsRequest, _>(
        "ListSnapshotsRequest",
        (
            wild_i32(),
            wild_string(),
            wild_string(),
            wild_string(),
            wild_map(),
        )
            .prop_map(
                |(max_entries, starting_token, source_volume_id, snapshot_id, secrets)| {
                    proto::ListSnapshotsRequest {
                        max_entries,
                        starting_token,
                        source_volume_id,
                        snapshot_id,
                        secrets,
                    }
                },
            ),
    );
    no_panic::<GetSnapshotRequest, _>(
        "GetSnapshotRequest",
        (wild_string(), wild_map()).prop_map(|(snapshot_id, secrets)| proto::GetSnapshotRequest {
            snapshot_id,
            secrets,
        }),
    );
    no_panic::<ControllerExpandVolumeRequest, _>(
        "ControllerExpandVolumeRequest",
        (
            wild_string(),
            wild_capacity(),
            wild_map(),
            proptest::option::of(wild_capability()),
        )
            .prop_map(|(volume_id, capacity_range, secrets, volume_capability)| {
                proto::ControllerExpandVolumeRequest {
                    volume_id,
                    capacity_range,
                    secrets,
                    volume_capability,
                }
            }),
    );
}

#[test]
fn node_validation_never_panics() {
    no_panic::<NodeStageVolumeRequest, _>(
        "NodeStageVolumeRequest",
        (
            wild_string(),
            wild_map(),
            wild_string(),
            proptest::option::of(wild_capability()),
            wild_map(),
            wild_map(),
        )
            .prop_map(
                |(
                    volume_id,
                    publish_context,
                    staging_target_path,
                    volume_capability,
                    secrets,
                    volume_context,
                )| {
                    proto::NodeStageVolumeRequest {
                        volume_id,
                        publish_context,
                        staging_target_path,
                        volume_capability,
                        secrets,
                        volume_context,
                    }
                },
            ),
    );
    no_panic::<NodeUnstageVolumeRequest, _>(
        "NodeUnstageVolumeRequest",
        (wild_string(), wild_string()).prop_map(|(volume_id, staging_target_path)| {
            proto::NodeUnstageVolumeRequest {
                volume_id,
                staging_target_path,
            }
        }),
    );
    no_panic::<NodePublishVolumeRequest, _>(
        "NodePublishVolumeRequest",
        (
            wild_string(),
            wild_map(),
            wild_string(),
            wild_string(),
            proptest::option::of(wild_capability()),
            any::<bool>(),
            wild_map(),
            wild_map(),
        )
            .prop_map(
                |(
                    volume_id,
                    publish_context,
                    staging,
                    target_path,
                    volume_capability,
                    readonly,
                    secrets,
                    ctx,
                )| {
                    proto::NodePublishVolumeRequest {
                        volume_id,
                        publish_context,
                        staging_target_path: staging,
                        target_path,
                        volume_capability,
                        readonly,
                        secrets,
                        volume_context: ctx,
                    }
                },
            ),
    );
    no_panic::<NodeUnpublishVolumeRequest, _>(
        "NodeUnpublishVolumeRequest",
        (wild_string(), wild_string()).prop_map(|(volume_id, target_path)| {
            proto::NodeUnpublishVolumeRequest {
                volume_id,
                target_path,
            }
        }),
    );
    no_panic::<NodeGetVolumeStatsRequest, _>(
        "NodeGetVolumeStatsRequest",
        (wild_string(), wild_string(), wild_string()).prop_map(
            |(volume_id, volume_path, staging_target_path)| proto::NodeGetVolumeStatsRequest {
                volume_id,
                volume_path,
                staging_target_path,
            },
        ),
    );
    no_panic::<NodeExpandVolumeRequest, _>(
        "NodeExpandVolumeRequest",
        (
            wild_string(),
            wild_string(),
            wild_capacity(),
            wild_string(),
            proptest::option::of(wild_capability()),
            wild_map(),
        )
            .prop_map(
                |(
                    volume_id,
                    volume_path,
                    capacity_range,
                    staging_target_path,
                    volume_capability,
                    secrets,
                )| {
                    proto::NodeExpandVolumeRequest {
                        volume_id,
                        volume_path,
                        capacity_range,
                        staging_target_path,
                        volume_capability,
                        secrets,
                    }
                },
            ),
    );
    no_panic_response::<NodeGetInfoResponse, _>(
        "NodeGetInfoResponse",
        (
            wild_string(),
            wild_i64(),
            proptest::option::of(wild_topology()),
        )
            .prop_map(|(node_id, max_volumes_per_node, accessible_topology)| {
                proto::NodeGetInfoResponse {
                    node_id,
                    max_volumes_per_node,
                    accessible_topology,
                }
            }),
    );
}

#[test]
fn group_controller_and_snapshot_metadata_validation_never_panics() {
    no_panic::<CreateVolumeGroupSnapshotRequest, _>(
        "CreateVolumeGroupSnapshotRequest",
        (
            wild_string(),
            vec(wild_string(), 0..=3),
            wild_map(),
            wild_map(),
        )
            .prop_map(|(name, source_volume_ids, secrets, parameters)| {
                proto::CreateVolumeGroupSnapshotRequest {
                    name,
                    source_volume_ids,
                    secrets,
                    parameters,
                }
            }),
    );
    no_panic::<DeleteVolumeGroupSnapshotRequest, _>(
        "DeleteVolumeGroupSnapshotRequest",
        (wild_string(), vec(wild_string(), 0..=3), wild_map()).prop_map(
            |(group_snapshot_id, snapshot_ids, secrets)| proto::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id,
                snapshot_ids,
                secrets,
            },
        ),
    );
    no_panic::<GetVolumeGroupSnapshotRequest, _>(
        "GetVolumeGroupSnapshotRequest",
        (wild_string(), vec(wild_string(), 0..=3), wild_map()).prop_map(
            |(group_snapshot_id, snapshot_ids, secrets)| proto::GetVolumeGroupSnapshotRequest {
                group_snapshot_id,
                snapshot_ids,
                secrets,
            },
        ),
    );
    no_panic::<GetMetadataAllocatedRequest, _>(
        "GetMetadataAllocatedRequest",
        (wild_string(), wild_i64(), wild_i32(), wild_map()).prop_map(
            |(snapshot_id, starting_offset, max_results, secrets)| {
                proto::GetMetadataAllocatedRequest {
                    snapshot_id,
                    starting_offset,
                    max_results,
                    secrets,
                }
            },
        ),
    );
    no_panic::<GetMetadataDeltaRequest, _>(
        "GetMetadataDeltaRequest",
        (
            wild_string(),
            wild_string(),
            wild_i64(),
            wild_i32(),
            wild_map(),
        )
            .prop_map(
                |(base_snapshot_id, target_snapshot_id, starting_offset, max_results, secrets)| {
                    proto::GetMetadataDeltaRequest {
                        base_snapshot_id,
                        target_snapshot_id,
                        starting_offset,
                        max_results,
                        secrets,
                    }
                },
            ),
    );
    no_panic_response::<BlockMetadataResponse, _>(
        "GetMetadataAllocatedResponse",
        wild_block_metadata().prop_map(|(t, cap, ranges)| proto::GetMetadataAllocatedResponse {
            block_metadata_type: t,
            volume_capacity_bytes: cap,
            block_metadata: ranges,
        }),
    );
    no_panic_response::<BlockMetadataResponse, _>(
        "GetMetadataDeltaResponse",
        wild_block_metadata().prop_map(|(t, cap, ranges)| proto::GetMetadataDeltaResponse {
            block_metadata_type: t,
            volume_capacity_bytes: cap,
            block_metadata: ranges,
        }),
    );
    // Timestamps anywhere in i64 seconds and i32 nanos, through a group snapshot.
    no_panic_response::<GetVolumeGroupSnapshotResponse, _>(
        "GetVolumeGroupSnapshotResponse",
        (wild_string(), any::<i64>(), any::<i32>(), any::<Snapshot>()).prop_map(
            |(id, seconds, nanos, snapshot)| {
                let mut member = proto::Snapshot::try_from(snapshot).expect("a size within int64");
                member.creation_time = Some(prost_types::Timestamp {
                    seconds,
                    nanos: nanos.wrapping_neg(),
                });
                proto::GetVolumeGroupSnapshotResponse {
                    group_snapshot: Some(proto::VolumeGroupSnapshot {
                        group_snapshot_id: id,
                        snapshots: vec![member],
                        creation_time: Some(prost_types::Timestamp { seconds, nanos }),
                        ready_to_use: true,
                    }),
                }
            },
        ),
    );
}

fn wild_timestamp() -> BoxedStrategy<Option<prost_types::Timestamp>> {
    proptest::option::of(
        (
            prop_oneof![
                wild_i64(),
                Just(253_402_300_799i64),
                Just(-62_135_596_800i64)
            ],
            prop_oneof![wild_i32(), Just(999_999_999), Just(1_000_000_000)],
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
    .boxed()
}

fn wild_volume() -> BoxedStrategy<proto::Volume> {
    (
        wild_i64(),
        wild_string(),
        wild_map(),
        wild_source(),
        vec(wild_topology(), 0..=2),
    )
        .prop_map(
            |(capacity_bytes, volume_id, volume_context, content_source, accessible_topology)| {
                proto::Volume {
                    capacity_bytes,
                    volume_id,
                    volume_context,
                    content_source,
                    accessible_topology,
                }
            },
        )
        .boxed()
}

fn wild_snapshot() -> BoxedStrategy<proto::Snapshot> {
    (
        wild_i64(),
        wild_string(),
        wild_string(),
        wild_timestamp(),
        any::<bool>(),
        wild_string(),
    )
        .prop_map(
            |(
                size_bytes,
                snapshot_id,
                source_volume_id,
                creation_time,
                ready_to_use,
                group_snapshot_id,
            )| {
                proto::Snapshot {
                    size_bytes,
                    snapshot_id,
                    source_volume_id,
                    creation_time,
                    ready_to_use,
                    group_snapshot_id,
                }
            },
        )
        .boxed()
}

fn wild_condition() -> BoxedStrategy<Option<proto::VolumeCondition>> {
    proptest::option::of(
        (any::<bool>(), wild_string())
            .prop_map(|(abnormal, message)| proto::VolumeCondition { abnormal, message }),
    )
    .boxed()
}

#[test]
fn response_validation_never_panics() {
    no_panic_response::<GetPluginInfoResponse, _>(
        "GetPluginInfoResponse",
        (wild_string(), wild_string(), wild_map()).prop_map(|(name, vendor_version, manifest)| {
            proto::GetPluginInfoResponse {
                name,
                vendor_version,
                manifest,
            }
        }),
    );
    no_panic_response::<GetPluginCapabilitiesResponse, _>(
        "GetPluginCapabilitiesResponse",
        vec((any::<bool>(), wild_i32()), 0..=4).prop_map(|caps| {
            use proto::plugin_capability::{Service, Type, VolumeExpansion};
            proto::GetPluginCapabilitiesResponse {
                capabilities: caps
                    .into_iter()
                    .map(|(service, t)| proto::PluginCapability {
                        r#type: Some(if service {
                            Type::Service(Service { r#type: t })
                        } else {
                            Type::VolumeExpansion(VolumeExpansion { r#type: t })
                        }),
                    })
                    .collect(),
            }
        }),
    );
    no_panic_response::<ControllerGetCapabilitiesResponse, _>(
        "ControllerGetCapabilitiesResponse",
        vec(proptest::option::of(wild_i32()), 0..=4).prop_map(|caps| {
            use proto::controller_service_capability::{Rpc, Type};
            proto::ControllerGetCapabilitiesResponse {
                capabilities: caps
                    .into_iter()
                    .map(|t| proto::ControllerServiceCapability {
                        r#type: t.map(|t| Type::Rpc(Rpc { r#type: t })),
                    })
                    .collect(),
            }
        }),
    );
    no_panic_response::<CreateVolumeResponse, _>(
        "CreateVolumeResponse",
        proptest::option::of(wild_volume())
            .prop_map(|volume| proto::CreateVolumeResponse { volume }),
    );
    no_panic_response::<ListVolumesResponse, _>(
        "ListVolumesResponse",
        (
            vec(
                (
                    proptest::option::of(wild_volume()),
                    proptest::option::of((vec(wild_string(), 0..=2), wild_condition())),
                ),
                0..=2,
            ),
            wild_string(),
        )
            .prop_map(|(entries, next_token)| proto::ListVolumesResponse {
                entries: entries
                    .into_iter()
                    .map(|(volume, status)| proto::list_volumes_response::Entry {
                        volume,
                        status: status.map(|(published_node_ids, volume_condition)| {
                            proto::list_volumes_response::VolumeStatus {
                                published_node_ids,
                                volume_condition,
                            }
                        }),
                    })
                    .collect(),
                next_token,
            }),
    );
    no_panic_response::<ValidateVolumeCapabilitiesResponse, _>(
        "ValidateVolumeCapabilitiesResponse",
        (
            proptest::option::of((wild_map(), wild_capabilities(), wild_map(), wild_map())),
            wild_string(),
        )
            .prop_map(
                |(confirmed, message)| proto::ValidateVolumeCapabilitiesResponse {
                    confirmed: confirmed.map(
                        |(volume_context, volume_capabilities, parameters, mutable_parameters)| {
                            proto::validate_volume_capabilities_response::Confirmed {
                                volume_context,
                                volume_capabilities,
                                parameters,
                                mutable_parameters,
                            }
                        },
                    ),
                    message,
                },
            ),
    );
    no_panic_response::<GetCapacityResponse, _>(
        "GetCapacityResponse",
        (
            wild_i64(),
            proptest::option::of(wild_i64()),
            proptest::option::of(wild_i64()),
        )
            .prop_map(
                |(available_capacity, maximum_volume_size, minimum_volume_size)| {
                    proto::GetCapacityResponse {
                        available_capacity,
                        maximum_volume_size,
                        minimum_volume_size,
                    }
                },
            ),
    );
    no_panic_response::<ListSnapshotsResponse, _>(
        "ListSnapshotsResponse",
        (
            vec(proptest::option::of(wild_snapshot()), 0..=3),
            wild_string(),
        )
            .prop_map(|(entries, next_token)| proto::ListSnapshotsResponse {
                entries: entries
                    .into_iter()
                    .map(|snapshot| proto::list_snapshots_response::Entry { snapshot })
                    .collect(),
                next_token,
            }),
    );
    no_panic_response::<NodeGetVolumeStatsResponse, _>(
        "NodeGetVolumeStatsResponse",
        (
            vec((wild_i64(), wild_i64(), wild_i64(), wild_i32()), 0..=2),
            wild_condition(),
        )
            .prop_map(
                |(usage, volume_condition)| proto::NodeGetVolumeStatsResponse {
                    usage: usage
                        .into_iter()
                        .map(|(available, total, used, unit)| proto::VolumeUsage {
                            available,
                            total,
                            used,
                            unit,
                        })
                        .collect(),
                    volume_condition,
                },
            ),
    );
    no_panic_response::<CreateVolumeGroupSnapshotResponse, _>(
        "CreateVolumeGroupSnapshotResponse",
        proptest::option::of((
            wild_string(),
            vec(wild_snapshot(), 0..=2),
            wild_timestamp(),
            any::<bool>(),
        ))
        .prop_map(|g| proto::CreateVolumeGroupSnapshotResponse {
            group_snapshot: g.map(
                |(group_snapshot_id, snapshots, creation_time, ready_to_use)| {
                    proto::VolumeGroupSnapshot {
                        group_snapshot_id,
                        snapshots,
                        creation_time,
                        ready_to_use,
                    }
                },
            ),
        }),
    );
}

/// Encodes a valid message, damages the bytes, and feeds whatever prost
/// still decodes to the validation; also decodes pure noise.
fn mutated_bytes_never_panic<T, P>()
where
    T: Arbitrary + TryInto<P, Error: Debug> + TryFrom<P, Error = CsiError> + Debug,
    P: prost::Message + Default,
{
    let strategy = (
        any::<T>(),
        vec((any::<Index>(), any::<u8>()), 1..=4),
        any::<Option<Index>>(),
        vec(any::<u8>(), 0..=48),
    );
    run(
        std::any::type_name::<T>(),
        strategy,
        |(typed, edits, cut, noise)| {
            let wire: P = typed.try_into().expect("sizes within int64");
            let mut bytes = wire.encode_to_vec();
            if !bytes.is_empty() {
                for (at, b) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len()));
                }
            }
            for input in [bytes, noise] {
                if let Ok(p) = P::decode(input.as_slice()) {
                    let _ = T::try_from(p);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn damaged_encodings_never_panic() {
    mutated_bytes_never_panic::<GetPluginInfoResponse, proto::GetPluginInfoResponse>();
    mutated_bytes_never_panic::<GetPluginCapabilitiesResponse, proto::GetPluginCapabilitiesResponse>(
    );
    mutated_bytes_never_panic::<ProbeResponse, proto::ProbeResponse>();
    mutated_bytes_never_panic::<CreateVolumeRequest, proto::CreateVolumeRequest>();
    mutated_bytes_never_panic::<CreateVolumeResponse, proto::CreateVolumeResponse>();
    mutated_bytes_never_panic::<
        ControllerPublishVolumeRequest,
        proto::ControllerPublishVolumeRequest,
    >();
    mutated_bytes_never_panic::<
        ValidateVolumeCapabilitiesRequest,
        proto::ValidateVolumeCapabilitiesRequest,
    >();
    mutated_bytes_never_panic::<
        ValidateVolumeCapabilitiesResponse,
        proto::ValidateVolumeCapabilitiesResponse,
    >();
    mutated_bytes_never_panic::<ListVolumesResponse, proto::ListVolumesResponse>();
    mutated_bytes_never_panic::<ControllerGetVolumeResponse, proto::ControllerGetVolumeResponse>();
    mutated_bytes_never_panic::<GetCapacityRequest, proto::GetCapacityRequest>();
    mutated_bytes_never_panic::<GetCapacityResponse, proto::GetCapacityResponse>();
    mutated_bytes_never_panic::<
        ControllerGetCapabilitiesResponse,
        proto::ControllerGetCapabilitiesResponse,
    >();
    mutated_bytes_never_panic::<CreateSnapshotResponse, proto::CreateSnapshotResponse>();
    mutated_bytes_never_panic::<ListSnapshotsRequest, proto::ListSnapshotsRequest>();
    mutated_bytes_never_panic::<ListSnapshotsResponse, proto::ListSnapshotsResponse>();
    mutated_bytes_never_panic::<ControllerExpandVolumeRequest, proto::ControllerExpandVolumeRequest>(
    );
    mutated_bytes_never_panic::<
        ControllerExpandVolumeResponse,
        proto::ControllerExpandVolumeResponse,
    >();
    mutated_bytes_never_panic::<NodePublishVolumeRequest, proto::NodePublishVolumeRequest>();
    mutated_bytes_never_panic::<NodeGetVolumeStatsResponse, proto::NodeGetVolumeStatsResponse>();
    mutated_bytes_never_panic::<NodeExpandVolumeRequest, proto::NodeExpandVolumeRequest>();
    mutated_bytes_never_panic::<NodeExpandVolumeResponse, proto::NodeExpandVolumeResponse>();
    mutated_bytes_never_panic::<NodeGetCapabilitiesResponse, proto::NodeGetCapabilitiesResponse>();
    mutated_bytes_never_panic::<NodeGetInfoResponse, proto::NodeGetInfoResponse>();
    mutated_bytes_never_panic::<
        GroupControllerGetCapabilitiesResponse,
        proto::GroupControllerGetCapabilitiesResponse,
    >();
    mutated_bytes_never_panic::<
        CreateVolumeGroupSnapshotRequest,
        proto::CreateVolumeGroupSnapshotRequest,
    >();
    mutated_bytes_never_panic::<
        CreateVolumeGroupSnapshotResponse,
        proto::CreateVolumeGroupSnapshotResponse,
    >();
    mutated_bytes_never_panic::<
        GetVolumeGroupSnapshotResponse,
        proto::GetVolumeGroupSnapshotResponse,
    >();
    mutated_bytes_never_panic::<GetMetadataDeltaRequest, proto::GetMetadataDeltaRequest>();
    mutated_bytes_never_panic::<BlockMetadataResponse, proto::GetMetadataAllocatedResponse>();
}

// ---------------------------------------------------------------------------
// 3. Every invalid field is reported with its field path.

/// One way to break a message: what it does, the field path the error must
/// name, and the edit.
struct Break<S> {
    what: String,
    field: String,
    apply: Rc<dyn Fn(&mut S)>,
}

fn brk<S>(what: &str, field: &str, apply: impl Fn(&mut S) + 'static) -> Break<S> {
    Break {
        what: what.to_string(),
        field: field.to_string(),
        apply: Rc::new(apply),
    }
}

/// `prefix` + `field`, as the typed layer writes paths.
fn join(prefix: &str, field: &str) -> String {
    if field.is_empty() {
        prefix.to_string()
    } else if field.starts_with('[') {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}

/// Applies the breaks of a part `S` of a message `P`, reached by `with`.
fn lift<P: 'static, S: 'static>(
    prefix: &str,
    with: impl Fn(&mut P, &dyn Fn(&mut S)) + 'static,
    subs: Vec<Break<S>>,
) -> Vec<Break<P>> {
    let with = Rc::new(with);
    subs.into_iter()
        .map(|b| {
            let with = with.clone();
            let apply = b.apply.clone();
            Break {
                what: format!("{prefix}: {}", b.what),
                field: join(prefix, &b.field),
                apply: Rc::new(move |p: &mut P| with(p, &*apply)),
            }
        })
        .collect()
}

fn set_string(what: &str, v: impl Into<String>) -> Break<String> {
    let v = v.into();
    brk(what, "", move |s: &mut String| *s = v.clone())
}

/// A REQUIRED id: missing, and over 128 bytes (ASCII and multi-byte).
fn id_breaks() -> Vec<Break<String>> {
    vec![
        set_string("empty", ""),
        set_string("129 bytes", "x".repeat(129)),
        set_string("130 bytes of é", "é".repeat(65)),
    ]
}

/// An optional id: only the size can be wrong.
fn optional_id_breaks() -> Vec<Break<String>> {
    vec![set_string("129 bytes", "x".repeat(129))]
}

/// A name: missing, too long, or with a banned control character.
fn name_breaks() -> Vec<Break<String>> {
    vec![
        set_string("empty", ""),
        set_string("129 bytes", "n".repeat(129)),
        set_string("BEL", "pvc-\u{7}"),
        set_string("NUL", "\0"),
        set_string("DEL", "a\u{7f}"),
        set_string("NEL (C1)", "a\u{85}b"),
        set_string("ESC", "\u{1b}[31m"),
    ]
}

fn node_id_breaks() -> Vec<Break<String>> {
    vec![
        set_string("empty", ""),
        set_string("257 bytes", "n".repeat(257)),
    ]
}

fn path_breaks() -> Vec<Break<String>> {
    vec![
        set_string("empty", ""),
        set_string("relative", "var/lib/x"),
        set_string("NUL", "/a\0b"),
        set_string("4097 bytes", format!("/{}", "p".repeat(4096))),
    ]
}

fn optional_path_breaks() -> Vec<Break<String>> {
    vec![set_string("relative", "x"), set_string("NUL", "/a\0b")]
}

fn count_breaks() -> Vec<Break<i32>> {
    vec![
        brk("-1", "", |n: &mut i32| *n = -1),
        brk("i32::MIN", "", |n: &mut i32| *n = i32::MIN),
    ]
}

fn non_negative_breaks() -> Vec<Break<i64>> {
    vec![
        brk("-1", "", |n: &mut i64| *n = -1),
        brk("i64::MIN", "", |n: &mut i64| *n = i64::MIN),
    ]
}

type WireMap = BTreeMap<String, String>;

/// A map over 4 KiB, by one value and by many entries.
fn map_breaks() -> Vec<Break<WireMap>> {
    vec![
        brk("one 4097-byte value", "", |m: &mut WireMap| {
            m.clear();
            m.insert("k".into(), "v".repeat(4096));
        }),
        brk("4097 bytes over many entries", "", |m: &mut WireMap| {
            m.clear();
            for i in 0..40 {
                m.insert(format!("key-{i:03}"), "v".repeat(95));
            }
            m.insert("z".into(), "v".repeat(4097 - 40 * 102 - 1));
        }),
    ]
}

/// Secrets: bad key characters (the error names the map, and the key by its place, never
/// quoting it: a key may hold a pasted secret), an empty key, too big.
fn secret_breaks() -> Vec<Break<WireMap>> {
    let mut v = vec![
        brk("space in key", "", |m: &mut WireMap| {
            m.insert("pass word".into(), "x".into());
        }),
        brk("cyrillic key", "", |m: &mut WireMap| {
            m.insert("ключ".into(), "x".into());
        }),
        brk("slash in key", "", |m: &mut WireMap| {
            m.insert("a/b".into(), "x".into());
        }),
        brk("empty key", "", |m: &mut WireMap| {
            m.insert(String::new(), "x".into());
        }),
    ];
    // The key breaks must not also break the size: start from a small map.
    for b in &mut v {
        let apply = b.apply.clone();
        b.apply = Rc::new(move |m: &mut WireMap| {
            m.clear();
            m.insert("ok-key".into(), "v".into());
            apply(m);
        });
    }
    v.extend(map_breaks());
    v
}

fn valid_capability() -> proto::VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter).into()
}

fn capability_breaks() -> Vec<Break<proto::VolumeCapability>> {
    use proto::volume_capability::{AccessMode as WireMode, AccessType, MountVolume};
    fn mount(c: &mut proto::VolumeCapability, f: impl FnOnce(&mut MountVolume)) {
        let mut m = MountVolume::default();
        f(&mut m);
        c.access_type = Some(AccessType::Mount(m));
    }
    vec![
        brk(
            "no access type",
            "access_type",
            |c: &mut proto::VolumeCapability| c.access_type = None,
        ),
        brk(
            "no access mode",
            "access_mode",
            |c: &mut proto::VolumeCapability| c.access_mode = None,
        ),
        brk(
            "UNKNOWN mode",
            "access_mode.mode",
            |c: &mut proto::VolumeCapability| c.access_mode = Some(WireMode { mode: 0 }),
        ),
        brk(
            "mode 99",
            "access_mode.mode",
            |c: &mut proto::VolumeCapability| c.access_mode = Some(WireMode { mode: 99 }),
        ),
        brk(
            "negative mode",
            "access_mode.mode",
            |c: &mut proto::VolumeCapability| c.access_mode = Some(WireMode { mode: -1 }),
        ),
        brk(
            "129-byte fs_type",
            "mount.fs_type",
            |c: &mut proto::VolumeCapability| mount(c, |m| m.fs_type = "f".repeat(129)),
        ),
        brk(
            "mount flags over 4 KiB",
            "mount.mount_flags",
            |c: &mut proto::VolumeCapability| {
                mount(c, |m| m.mount_flags = vec!["ro".into(), "o".repeat(4095)])
            },
        ),
        brk(
            "129-byte volume_mount_group",
            "mount.volume_mount_group",
            |c: &mut proto::VolumeCapability| mount(c, |m| m.volume_mount_group = "g".repeat(129)),
        ),
    ]
}

fn capacity_breaks() -> Vec<Break<proto::CapacityRange>> {
    vec![
        brk(
            "negative required",
            "required_bytes",
            |r: &mut proto::CapacityRange| {
                *r = proto::CapacityRange {
                    required_bytes: -1,
                    limit_bytes: 0,
                }
            },
        ),
        brk(
            "negative limit",
            "limit_bytes",
            |r: &mut proto::CapacityRange| {
                *r = proto::CapacityRange {
                    required_bytes: 0,
                    limit_bytes: i64::MIN,
                }
            },
        ),
        brk(
            "limit < required",
            "limit_bytes",
            |r: &mut proto::CapacityRange| {
                *r = proto::CapacityRange {
                    required_bytes: 10 << 30,
                    limit_bytes: (10 << 30) - 1,
                }
            },
        ),
    ]
}

fn topology_breaks() -> Vec<Break<proto::Topology>> {
    fn set(kv: &[(&str, &str)]) -> impl Fn(&mut proto::Topology) + 'static {
        let segments: WireMap = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |t: &mut proto::Topology| t.segments = segments.clone()
    }
    let long_label = "l".repeat(64);
    vec![
        brk(
            "upper-case prefix",
            "segments[\"Zone.example.com/x\"]",
            set(&[("Zone.example.com/x", "a")]),
        ),
        brk(
            "key with two slashes",
            "segments[\"a/b/c\"]",
            set(&[("a/b/c", "a")]),
        ),
        brk(
            "empty key name",
            "segments[\"example.com/\"]",
            set(&[("example.com/", "a")]),
        ),
        brk("empty key", "segments[\"\"]", set(&[("", "a")])),
        brk(
            "key name starting with '-'",
            "segments[\"-zone\"]",
            set(&[("-zone", "a")]),
        ),
        brk(
            "value starting with '-'",
            "segments[\"zone\"]",
            set(&[("zone", "-z1")]),
        ),
        brk("empty value", "segments[\"zone\"]", set(&[("zone", "")])),
        brk("64-char value", "segments[\"zone\"]", {
            let v = long_label.clone();
            move |t: &mut proto::Topology| t.segments = [("zone".to_string(), v.clone())].into()
        }),
        // "ZONE" sorts first, so the second spelling is the one reported.
        brk(
            "keys equal but for case",
            "segments[\"zone\"]",
            set(&[("ZONE", "a"), ("zone", "b")]),
        ),
        brk(
            "segments over 4 KiB",
            "segments",
            |t: &mut proto::Topology| {
                t.segments = (0..40)
                    .map(|i| (format!("k{i:02}-{}", "k".repeat(56)), "v".repeat(63)))
                    .collect()
            },
        ),
    ]
}

fn id_list_breaks(len: usize, at: Index) -> Vec<Break<Vec<String>>> {
    let mut v = vec![brk("empty list", "", |l: &mut Vec<String>| l.clear())];
    if len > 0 {
        let i = at.index(len);
        v.push(brk(
            "empty entry",
            &format!("[{i}]"),
            move |l: &mut Vec<String>| l[i].clear(),
        ));
        v.push(brk(
            "129-byte entry",
            &format!("[{i}]"),
            move |l: &mut Vec<String>| l[i] = "x".repeat(129),
        ));
    }
    v
}

/// Breaks of a REQUIRED non-empty capability list.
fn capability_list_breaks(len: usize, at: Index) -> Vec<Break<Vec<proto::VolumeCapability>>> {
    let mut v = vec![brk(
        "empty list",
        "",
        |l: &mut Vec<proto::VolumeCapability>| l.clear(),
    )];
    if len > 0 {
        let i = at.index(len);
        v.extend(lift(
            &format!("[{i}]"),
            move |l: &mut Vec<proto::VolumeCapability>, f| f(&mut l[i]),
            capability_breaks(),
        ));
    }
    v
}

/// Breaks a typed-valid request in every listed way; each must fail naming its field.
fn check<T, P>(valid: T, breaks: Vec<Break<P>>) -> Result<(), TestCaseError>
where
    T: TryFrom<P, Error = CsiError> + TryInto<P, Error: Debug> + Debug,
    P: Clone + Debug,
{
    let wire: P = valid.try_into().expect("sizes within int64");
    prop_assert!(
        T::try_from(wire.clone()).is_ok(),
        "the unbroken request must be valid: {wire:?}"
    );
    prop_assert!(!breaks.is_empty());
    for b in &breaks {
        let mut p = wire.clone();
        (b.apply)(&mut p);
        match T::try_from(p) {
            Err(CsiError::InvalidArgument { field, rule }) => {
                prop_assert_eq!(&field, &b.field, "{} (rule: {})", b.what, rule);
                prop_assert!(!rule.is_empty());
            }
            other => prop_assert!(
                false,
                "{}: expected InvalidArgument on `{}`, got {:?}",
                b.what,
                b.field,
                other
            ),
        }
    }
    Ok(())
}

/// [`check`] for a response: the in-place check (`ResponseRules::must`)
/// must agree with the conversion on the valid response and on each broken one.
fn check_response<T, P>(valid: T, breaks: Vec<Break<P>>) -> Result<(), TestCaseError>
where
    T: TryFrom<P, Error = CsiError> + TryInto<P, Error: Debug> + Debug,
    P: Clone + Debug + ResponseRules,
{
    let wire: P = valid.try_into().expect("sizes within int64");
    must_agrees::<T, P>(&wire)?;
    for b in &breaks {
        let mut p = wire.clone();
        (b.apply)(&mut p);
        must_agrees::<T, P>(&p)?;
    }
    check(T::try_from(wire).expect("checked above"), breaks)
}

/// As [`check`], with the object-bound fields (`csi_types::bound`) broken
/// too: each of those breaks must pass the typed conversion — so a driver
/// can answer for a missing object first — and then fail in `validate_bound`
/// (the driver's `ObjectBound::get` calls), naming its field.
fn check_bound<T, P>(
    valid: T,
    breaks: Vec<Break<P>>,
    bound: Vec<Break<P>>,
    validate_bound: impl Fn(&T) -> Result<(), CsiError>,
) -> Result<(), TestCaseError>
where
    T: TryFrom<P, Error = CsiError> + TryInto<P, Error: Debug> + Debug + Clone,
    P: Clone + Debug,
{
    let wire: P = valid.clone().try_into().expect("sizes within int64");
    prop_assert!(
        validate_bound(&valid).is_ok(),
        "the unbroken request must be valid: {wire:?}"
    );
    prop_assert!(!bound.is_empty());
    for b in &bound {
        let mut p = wire.clone();
        (b.apply)(&mut p);
        let typed = T::try_from(p.clone());
        prop_assert!(
            typed.is_ok(),
            "{}: an object-bound break must pass the conversion: {:?}",
            b.what,
            typed
        );
        match validate_bound(&typed.unwrap()) {
            Err(CsiError::InvalidArgument { field, rule }) => {
                prop_assert_eq!(&field, &b.field, "{} (rule: {})", b.what, rule);
                prop_assert!(!rule.is_empty());
            }
            other => prop_assert!(
                false,
                "{}: expected InvalidArgument on `{}` after the lookup, got {:?}",
                b.what,
                b.field,
                other
            ),
        }
    }
    check(valid, breaks)
}

/// Shorthand for lifting the breaks of one field reached by a place expression.
macro_rules! field {
    ($ty:ty, $name:literal, |$p:ident| $place:expr, $breaks:expr) => {
        lift($name, |$p: &mut $ty, f| f($place), $breaks)
    };
}

#[test]
fn controller_errors_name_the_field() {
    type P = proto::CreateVolumeRequest;
    run(
        "CreateVolumeRequest",
        (any::<CreateVolumeRequest>(), any::<Index>()),
        |(r, at)| {
            let n = r.volume_capabilities.len();
            let mut b = Vec::new();
            b.extend(field!(P, "name", |p| &mut p.name, name_breaks()));
            b.extend(field!(
                P,
                "capacity_range",
                |p| p.capacity_range.get_or_insert_default(),
                capacity_breaks()
            ));
            b.extend(field!(
                P,
                "volume_capabilities",
                |p| &mut p.volume_capabilities,
                capability_list_breaks(n, at)
            ));
            b.extend(field!(P, "parameters", |p| &mut p.parameters, map_breaks()));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "mutable_parameters",
                |p| &mut p.mutable_parameters,
                map_breaks()
            ));
            {
                use proto::volume_content_source::{SnapshotSource, Type, VolumeSource};
                b.push(brk(
                    "source without type",
                    "volume_content_source.type",
                    |p: &mut P| {
                        p.volume_content_source = Some(proto::VolumeContentSource { r#type: None })
                    },
                ));
                b.push(brk(
                    "empty source snapshot id",
                    "volume_content_source.snapshot.snapshot_id",
                    |p: &mut P| {
                        p.volume_content_source = Some(proto::VolumeContentSource {
                            r#type: Some(Type::Snapshot(SnapshotSource {
                                snapshot_id: String::new(),
                            })),
                        })
                    },
                ));
                b.push(brk(
                    "129-byte source volume id",
                    "volume_content_source.volume.volume_id",
                    |p: &mut P| {
                        p.volume_content_source = Some(proto::VolumeContentSource {
                            r#type: Some(Type::Volume(VolumeSource {
                                volume_id: "v".repeat(129),
                            })),
                        })
                    },
                ));
            }
            b.extend(lift(
                "accessibility_requirements.requisite[0]",
                |p: &mut P, f| {
                    let mut t = proto::Topology::default();
                    f(&mut t);
                    p.accessibility_requirements = Some(proto::TopologyRequirement {
                        requisite: vec![t],
                        preferred: vec![],
                    });
                },
                topology_breaks(),
            ));
            b.extend(lift(
                "accessibility_requirements.preferred[1]",
                |p: &mut P, f| {
                    let ok = proto::Topology {
                        segments: [("zone".to_string(), "z1".to_string())].into(),
                    };
                    let mut t = proto::Topology::default();
                    f(&mut t);
                    // No requisite: any preferred topology is allowed, but it must be valid.
                    p.accessibility_requirements = Some(proto::TopologyRequirement {
                        requisite: vec![],
                        preferred: vec![ok, t],
                    });
                },
                topology_breaks(),
            ));
            b.push(brk(
                "preferred not in requisite",
                "accessibility_requirements.preferred[1]",
                |p: &mut P| {
                    let z = |v: &str| proto::Topology {
                        segments: [("zone".to_string(), v.to_string())].into(),
                    };
                    p.accessibility_requirements = Some(proto::TopologyRequirement {
                        requisite: vec![z("z1"), z("z2")],
                        preferred: vec![z("z2"), z("z3")],
                    });
                },
            ));
            check(r, b)
        },
    );

    run("DeleteVolumeRequest", any::<DeleteVolumeRequest>(), |r| {
        type P = proto::DeleteVolumeRequest;
        let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
        b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
        check(r, b)
    });

    run(
        "ControllerPublishVolumeRequest",
        any::<ControllerPublishVolumeRequest>(),
        |r| {
            type P = proto::ControllerPublishVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(P, "node_id", |p| &mut p.node_id, node_id_breaks()));
            b.push(brk("no capability", "volume_capability", |p: &mut P| {
                p.volume_capability = None
            }));
            b.extend(field!(
                P,
                "volume_capability",
                |p| p.volume_capability.get_or_insert_with(valid_capability),
                capability_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "volume_context",
                |p| &mut p.volume_context,
                map_breaks()
            ));
            check(r, b)
        },
    );

    run(
        "ControllerUnpublishVolumeRequest",
        any::<ControllerUnpublishVolumeRequest>(),
        |r| {
            type P = proto::ControllerUnpublishVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.push(brk("257-byte node id", "node_id", |p: &mut P| {
                p.node_id = "n".repeat(257)
            }));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check(r, b)
        },
    );

    run(
        "ValidateVolumeCapabilitiesRequest",
        (any::<ValidateVolumeCapabilitiesRequest>(), any::<Index>()),
        |(r, at)| {
            type P = proto::ValidateVolumeCapabilitiesRequest;
            let n = r.volume_capabilities.len();
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(
                P,
                "volume_context",
                |p| &mut p.volume_context,
                map_breaks()
            ));
            b.extend(field!(
                P,
                "volume_capabilities",
                |p| &mut p.volume_capabilities,
                capability_list_breaks(n, at)
            ));
            b.extend(field!(P, "parameters", |p| &mut p.parameters, map_breaks()));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "mutable_parameters",
                |p| &mut p.mutable_parameters,
                map_breaks()
            ));
            check(r, b)
        },
    );

    run("ListVolumesRequest", any::<ListVolumesRequest>(), |r| {
        type P = proto::ListVolumesRequest;
        // An overlong `starting_token` is an invalid token, `ABORTED` as the
        // error table says, not `INVALID_ARGUMENT` (`validate`'s tests).
        let b = field!(P, "max_entries", |p| &mut p.max_entries, count_breaks());
        check(r, b)
    });

    run(
        "ControllerGetVolumeRequest",
        any::<ControllerGetVolumeRequest>(),
        |r| {
            type P = proto::ControllerGetVolumeRequest;
            check(r, field!(P, "volume_id", |p| &mut p.volume_id, id_breaks()))
        },
    );

    run(
        "ControllerModifyVolumeRequest",
        any::<ControllerModifyVolumeRequest>(),
        |r| {
            type P = proto::ControllerModifyVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "mutable_parameters",
                |p| &mut p.mutable_parameters,
                map_breaks()
            ));
            b.push(brk(
                "no mutable parameters",
                "mutable_parameters",
                |p: &mut P| p.mutable_parameters.clear(),
            ));
            check(r, b)
        },
    );

    run(
        "GetCapacityRequest",
        (any::<GetCapacityRequest>(), any::<Index>()),
        |(r, at)| {
            type P = proto::GetCapacityRequest;
            let mut b = field!(P, "parameters", |p| &mut p.parameters, map_breaks());
            b.extend(field!(
                P,
                "accessible_topology",
                |p| p.accessible_topology.get_or_insert_default(),
                topology_breaks()
            ));
            if !r.volume_capabilities.is_empty() {
                let i = at.index(r.volume_capabilities.len());
                b.extend(lift(
                    &format!("volume_capabilities[{i}]"),
                    move |p: &mut P, f| f(&mut p.volume_capabilities[i]),
                    capability_breaks(),
                ));
            }
            check(r, b)
        },
    );

    run(
        "CreateSnapshotRequest",
        any::<CreateSnapshotRequest>(),
        |r| {
            type P = proto::CreateSnapshotRequest;
            let mut b = field!(
                P,
                "source_volume_id",
                |p| &mut p.source_volume_id,
                id_breaks()
            );
            b.extend(field!(P, "name", |p| &mut p.name, name_breaks()));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(P, "parameters", |p| &mut p.parameters, map_breaks()));
            check(r, b)
        },
    );

    run(
        "DeleteSnapshotRequest",
        any::<DeleteSnapshotRequest>(),
        |r| {
            type P = proto::DeleteSnapshotRequest;
            let mut b = field!(P, "snapshot_id", |p| &mut p.snapshot_id, id_breaks());
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check(r, b)
        },
    );

    run("ListSnapshotsRequest", any::<ListSnapshotsRequest>(), |r| {
        type P = proto::ListSnapshotsRequest;
        // An overlong `starting_token` is `ABORTED`, as for ListVolumes.
        let mut b = field!(P, "max_entries", |p| &mut p.max_entries, count_breaks());
        b.extend(field!(
            P,
            "source_volume_id",
            |p| &mut p.source_volume_id,
            optional_id_breaks()
        ));
        b.extend(field!(
            P,
            "snapshot_id",
            |p| &mut p.snapshot_id,
            optional_id_breaks()
        ));
        b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
        check(r, b)
    });

    run("GetSnapshotRequest", any::<GetSnapshotRequest>(), |r| {
        type P = proto::GetSnapshotRequest;
        let mut b = field!(P, "snapshot_id", |p| &mut p.snapshot_id, id_breaks());
        b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
        check(r, b)
    });

    run(
        "ControllerExpandVolumeRequest",
        any::<ControllerExpandVolumeRequest>(),
        |r| {
            type P = proto::ControllerExpandVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.push(brk("no capacity range", "capacity_range", |p: &mut P| {
                p.capacity_range = None
            }));
            b.extend(field!(
                P,
                "capacity_range",
                |p| p.capacity_range.get_or_insert_default(),
                capacity_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "volume_capability",
                |p| p.volume_capability.get_or_insert_with(valid_capability),
                capability_breaks()
            ));
            check(r, b)
        },
    );
}

#[test]
fn node_errors_name_the_field() {
    run(
        "NodeStageVolumeRequest",
        any::<NodeStageVolumeRequest>(),
        |r| {
            type P = proto::NodeStageVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(
                P,
                "publish_context",
                |p| &mut p.publish_context,
                map_breaks()
            ));
            b.extend(field!(
                P,
                "staging_target_path",
                |p| &mut p.staging_target_path,
                path_breaks()
            ));
            b.push(brk("no capability", "volume_capability", |p: &mut P| {
                p.volume_capability = None
            }));
            b.extend(field!(
                P,
                "volume_capability",
                |p| p.volume_capability.get_or_insert_with(valid_capability),
                capability_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "volume_context",
                |p| &mut p.volume_context,
                map_breaks()
            ));
            check(r, b)
        },
    );

    run(
        "NodeUnstageVolumeRequest",
        any::<NodeUnstageVolumeRequest>(),
        |r| {
            type P = proto::NodeUnstageVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(
                P,
                "staging_target_path",
                |p| &mut p.staging_target_path,
                path_breaks()
            ));
            check(r, b)
        },
    );

    run(
        "NodePublishVolumeRequest",
        any::<NodePublishVolumeRequest>(),
        |r| {
            type P = proto::NodePublishVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(
                P,
                "publish_context",
                |p| &mut p.publish_context,
                map_breaks()
            ));
            b.extend(field!(
                P,
                "staging_target_path",
                |p| &mut p.staging_target_path,
                optional_path_breaks()
            ));
            b.extend(field!(
                P,
                "target_path",
                |p| &mut p.target_path,
                path_breaks()
            ));
            b.push(brk("no capability", "volume_capability", |p: &mut P| {
                p.volume_capability = None
            }));
            b.extend(field!(
                P,
                "volume_capability",
                |p| p.volume_capability.get_or_insert_with(valid_capability),
                capability_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(
                P,
                "volume_context",
                |p| &mut p.volume_context,
                map_breaks()
            ));
            check(r, b)
        },
    );

    run(
        "NodeUnpublishVolumeRequest",
        any::<NodeUnpublishVolumeRequest>(),
        |r| {
            type P = proto::NodeUnpublishVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            b.extend(field!(
                P,
                "target_path",
                |p| &mut p.target_path,
                path_breaks()
            ));
            check(r, b)
        },
    );

    run(
        "NodeGetVolumeStatsRequest",
        any::<NodeGetVolumeStatsRequest>(),
        |r| {
            type P = proto::NodeGetVolumeStatsRequest;
            let b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            let mut bound = field!(P, "volume_path", |p| &mut p.volume_path, path_breaks());
            bound.extend(field!(
                P,
                "staging_target_path",
                |p| &mut p.staging_target_path,
                optional_path_breaks()
            ));
            check_bound(r, b, bound, |t: &NodeGetVolumeStatsRequest| {
                t.volume_path.get()?;
                t.staging_target_path.get().map(drop)
            })
        },
    );

    run(
        "NodeExpandVolumeRequest",
        any::<NodeExpandVolumeRequest>(),
        |r| {
            type P = proto::NodeExpandVolumeRequest;
            let mut b = field!(P, "volume_id", |p| &mut p.volume_id, id_breaks());
            let mut bound = field!(P, "volume_path", |p| &mut p.volume_path, path_breaks());
            b.extend(field!(
                P,
                "capacity_range",
                |p| p.capacity_range.get_or_insert_default(),
                capacity_breaks()
            ));
            bound.extend(field!(
                P,
                "staging_target_path",
                |p| &mut p.staging_target_path,
                optional_path_breaks()
            ));
            b.extend(field!(
                P,
                "volume_capability",
                |p| p.volume_capability.get_or_insert_with(valid_capability),
                capability_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check_bound(r, b, bound, |t: &NodeExpandVolumeRequest| {
                t.volume_path.get()?;
                t.staging_target_path.get().map(drop)
            })
        },
    );
}

#[test]
fn group_controller_and_snapshot_metadata_errors_name_the_field() {
    run(
        "CreateVolumeGroupSnapshotRequest",
        (any::<CreateVolumeGroupSnapshotRequest>(), any::<Index>()),
        |(r, at)| {
            type P = proto::CreateVolumeGroupSnapshotRequest;
            let n = r.source_volume_ids.len();
            let mut b = field!(P, "name", |p| &mut p.name, name_breaks());
            b.extend(field!(
                P,
                "source_volume_ids",
                |p| &mut p.source_volume_ids,
                id_list_breaks(n, at)
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            b.extend(field!(P, "parameters", |p| &mut p.parameters, map_breaks()));
            check(r, b)
        },
    );

    run(
        "DeleteVolumeGroupSnapshotRequest",
        (any::<DeleteVolumeGroupSnapshotRequest>(), any::<Index>()),
        |(r, at)| {
            type P = proto::DeleteVolumeGroupSnapshotRequest;
            let n = r.snapshot_ids.raw().len();
            let mut b = field!(
                P,
                "group_snapshot_id",
                |p| &mut p.group_snapshot_id,
                id_breaks()
            );
            let bound = field!(
                P,
                "snapshot_ids",
                |p| &mut p.snapshot_ids,
                id_list_breaks(n, at)
            );
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check_bound(r, b, bound, |t: &DeleteVolumeGroupSnapshotRequest| {
                t.snapshot_ids.get().map(drop)
            })
        },
    );

    run(
        "GetVolumeGroupSnapshotRequest",
        (any::<GetVolumeGroupSnapshotRequest>(), any::<Index>()),
        |(r, at)| {
            type P = proto::GetVolumeGroupSnapshotRequest;
            let n = r.snapshot_ids.raw().len();
            let mut b = field!(
                P,
                "group_snapshot_id",
                |p| &mut p.group_snapshot_id,
                id_breaks()
            );
            let bound = field!(
                P,
                "snapshot_ids",
                |p| &mut p.snapshot_ids,
                id_list_breaks(n, at)
            );
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check_bound(r, b, bound, |t: &GetVolumeGroupSnapshotRequest| {
                t.snapshot_ids.get().map(drop)
            })
        },
    );

    run(
        "GetMetadataAllocatedRequest",
        any::<GetMetadataAllocatedRequest>(),
        |r| {
            type P = proto::GetMetadataAllocatedRequest;
            let mut b = field!(P, "snapshot_id", |p| &mut p.snapshot_id, id_breaks());
            // A negative `starting_offset` is OUT_OF_RANGE (the spec's
            // error table): `negative_starting_offset_is_out_of_range`.
            b.extend(field!(
                P,
                "max_results",
                |p| &mut p.max_results,
                count_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check(r, b)
        },
    );

    run(
        "GetMetadataDeltaRequest",
        any::<GetMetadataDeltaRequest>(),
        |r| {
            type P = proto::GetMetadataDeltaRequest;
            let mut b = field!(
                P,
                "base_snapshot_id",
                |p| &mut p.base_snapshot_id,
                id_breaks()
            );
            b.extend(field!(
                P,
                "target_snapshot_id",
                |p| &mut p.target_snapshot_id,
                id_breaks()
            ));
            // A negative `starting_offset` is OUT_OF_RANGE (the spec's
            // error table): `negative_starting_offset_is_out_of_range`.
            b.extend(field!(
                P,
                "max_results",
                |p| &mut p.max_results,
                count_breaks()
            ));
            b.extend(field!(P, "secrets", |p| &mut p.secrets, secret_breaks()));
            check(r, b)
        },
    );
}

// ---------------------------------------------------------------------------
// Responses: a client validating a plugin's answer gets the same precision.

fn volume_breaks() -> Vec<Break<proto::Volume>> {
    let mut b = field!(
        proto::Volume,
        "volume_id",
        |p| &mut p.volume_id,
        id_breaks()
    );
    b.extend(field!(
        proto::Volume,
        "capacity_bytes",
        |p| &mut p.capacity_bytes,
        non_negative_breaks()
    ));
    b.extend(field!(
        proto::Volume,
        "volume_context",
        |p| &mut p.volume_context,
        map_breaks()
    ));
    b.push(brk(
        "source without type",
        "content_source.type",
        |p: &mut proto::Volume| {
            p.content_source = Some(proto::VolumeContentSource { r#type: None })
        },
    ));
    b.extend(lift(
        "accessible_topology[0]",
        |p: &mut proto::Volume, f| {
            let mut t = proto::Topology::default();
            f(&mut t);
            p.accessible_topology = vec![t];
        },
        topology_breaks(),
    ));
    b
}

fn snapshot_breaks() -> Vec<Break<proto::Snapshot>> {
    type S = proto::Snapshot;
    let mut b = field!(S, "snapshot_id", |p| &mut p.snapshot_id, id_breaks());
    b.extend(field!(
        S,
        "source_volume_id",
        |p| &mut p.source_volume_id,
        id_breaks()
    ));
    b.extend(field!(
        S,
        "size_bytes",
        |p| &mut p.size_bytes,
        non_negative_breaks()
    ));
    b.push(brk("no creation time", "creation_time", |p: &mut S| {
        p.creation_time = None
    }));
    b.extend(field!(
        S,
        "group_snapshot_id",
        |p| &mut p.group_snapshot_id,
        optional_id_breaks()
    ));
    b
}

fn plugin_name_breaks() -> Vec<Break<String>> {
    vec![
        set_string("empty", ""),
        set_string("leading dash", "-csi.example.com"),
        set_string("underscore", "csi_driver"),
        set_string("trailing dot", "csi.example.com."),
        set_string("64 characters", "p".repeat(64)),
    ]
}

#[test]
fn responses_errors_name_the_field() {
    run(
        "GetPluginInfoResponse",
        any::<GetPluginInfoResponse>(),
        |r| {
            type P = proto::GetPluginInfoResponse;
            let mut b = field!(P, "name", |p| &mut p.name, plugin_name_breaks());
            b.extend(field!(
                P,
                "vendor_version",
                |p| &mut p.vendor_version,
                id_breaks()
            ));
            b.extend(field!(P, "manifest", |p| &mut p.manifest, map_breaks()));
            check_response(r, b)
        },
    );

    run("CreateVolumeResponse", any::<CreateVolumeResponse>(), |r| {
        type P = proto::CreateVolumeResponse;
        let mut b = vec![brk("no volume", "volume", |p: &mut P| p.volume = None)];
        b.extend(field!(
            P,
            "volume",
            |p| p.volume.as_mut().unwrap(),
            volume_breaks()
        ));
        check_response(r, b)
    });

    run(
        "ListVolumesResponse",
        (any::<ListVolumesResponse>(), any::<Index>()),
        |(r, at)| {
            type P = proto::ListVolumesResponse;
            let mut b = field!(P, "next_token", |p| &mut p.next_token, optional_id_breaks());
            if !r.entries.is_empty() {
                let i = at.index(r.entries.len());
                let entry = format!("entries[{i}]");
                b.push(brk(
                    "no volume",
                    &format!("{entry}.volume"),
                    move |p: &mut P| p.entries[i].volume = None,
                ));
                b.extend(lift(
                    &format!("{entry}.volume"),
                    move |p: &mut P, f| f(p.entries[i].volume.as_mut().unwrap()),
                    volume_breaks(),
                ));
                // `status.published_node_ids` entries and the condition's
                // message bend tolerated rules only: see
                // `tolerated_oddities_are_accepted_and_listed`.
            }
            check_response(r, b)
        },
    );

    run(
        "ControllerGetVolumeResponse",
        any::<ControllerGetVolumeResponse>(),
        |r| {
            type P = proto::ControllerGetVolumeResponse;
            let mut b = vec![
                brk("no volume", "volume", |p: &mut P| p.volume = None),
                brk("no status", "status", |p: &mut P| p.status = None),
            ];
            b.extend(field!(
                P,
                "volume",
                |p| p.volume.as_mut().unwrap(),
                volume_breaks()
            ));
            // Tolerated rules only below `status`: see
            // `tolerated_oddities_are_accepted_and_listed`.
            check_response(r, b)
        },
    );

    run(
        "ValidateVolumeCapabilitiesResponse",
        (any::<ValidateVolumeCapabilitiesResponse>(), any::<Index>()),
        |(r, at)| {
            let n = r
                .confirmed
                .as_ref()
                .map_or(1, |c| c.volume_capabilities.len());
            type P = proto::ValidateVolumeCapabilitiesResponse;
            type C = proto::validate_volume_capabilities_response::Confirmed;
            fn confirmed(p: &mut P) -> &mut C {
                p.confirmed.get_or_insert_with(|| C {
                    volume_capabilities: vec![valid_capability()],
                    ..Default::default()
                })
            }
            let b = lift("confirmed", move |p: &mut P, f| f(confirmed(p)), {
                let mut b = field!(C, "volume_context", |p| &mut p.volume_context, map_breaks());
                b.extend(field!(
                    C,
                    "volume_capabilities",
                    |p| &mut p.volume_capabilities,
                    capability_list_breaks(n, at)
                ));
                b.extend(field!(C, "parameters", |p| &mut p.parameters, map_breaks()));
                b.extend(field!(
                    C,
                    "mutable_parameters",
                    |p| &mut p.mutable_parameters,
                    map_breaks()
                ));
                b
            });
            check_response(r, b)
        },
    );

    run("GetCapacityResponse", any::<GetCapacityResponse>(), |r| {
        type P = proto::GetCapacityResponse;
        let mut b = field!(
            P,
            "available_capacity",
            |p| &mut p.available_capacity,
            non_negative_breaks()
        );
        b.extend(field!(
            P,
            "maximum_volume_size",
            |p| p.maximum_volume_size.get_or_insert(0),
            non_negative_breaks()
        ));
        b.extend(field!(
            P,
            "minimum_volume_size",
            |p| p.minimum_volume_size.get_or_insert(0),
            non_negative_breaks()
        ));
        check_response(r, b)
    });

    run(
        "CreateSnapshotResponse",
        any::<CreateSnapshotResponse>(),
        |r| {
            type P = proto::CreateSnapshotResponse;
            let mut b = vec![brk("no snapshot", "snapshot", |p: &mut P| {
                p.snapshot = None
            })];
            b.extend(field!(
                P,
                "snapshot",
                |p| p.snapshot.as_mut().unwrap(),
                snapshot_breaks()
            ));
            check_response(r, b)
        },
    );

    run("GetSnapshotResponse", any::<GetSnapshotResponse>(), |r| {
        type P = proto::GetSnapshotResponse;
        let mut b = vec![brk("no snapshot", "snapshot", |p: &mut P| {
            p.snapshot = None
        })];
        b.extend(field!(
            P,
            "snapshot",
            |p| p.snapshot.as_mut().unwrap(),
            snapshot_breaks()
        ));
        check_response(r, b)
    });

    run(
        "ListSnapshotsResponse",
        (any::<ListSnapshotsResponse>(), any::<Index>()),
        |(r, at)| {
            type P = proto::ListSnapshotsResponse;
            let mut b = field!(P, "next_token", |p| &mut p.next_token, optional_id_breaks());
            if !r.entries.is_empty() {
                let i = at.index(r.entries.len());
                b.push(brk(
                    "no snapshot",
                    &format!("entries[{i}].snapshot"),
                    move |p: &mut P| p.entries[i].snapshot = None,
                ));
                b.extend(lift(
                    &format!("entries[{i}].snapshot"),
                    move |p: &mut P, f| f(p.entries[i].snapshot.as_mut().unwrap()),
                    snapshot_breaks(),
                ));
            }
            check_response(r, b)
        },
    );

    run(
        "ControllerExpandVolumeResponse",
        any::<ControllerExpandVolumeResponse>(),
        |r| {
            type P = proto::ControllerExpandVolumeResponse;
            check_response(
                r,
                field!(
                    P,
                    "capacity_bytes",
                    |p| &mut p.capacity_bytes,
                    non_negative_breaks()
                ),
            )
        },
    );

    run(
        "NodeGetVolumeStatsResponse",
        any::<NodeGetVolumeStatsResponse>(),
        |r| {
            type P = proto::NodeGetVolumeStatsResponse;
            type U = proto::VolumeUsage;
            fn usage(p: &mut P) -> &mut U {
                p.usage = vec![
                    VolumeUsage {
                        unit: UsageUnit::Bytes,
                        total: 10,
                        available: 5,
                        used: 5,
                    }
                    .try_into()
                    .unwrap(),
                ];
                &mut p.usage[0]
            }
            let b = lift("usage[0]", move |p: &mut P, f| f(usage(p)), {
                let mut b = vec![
                    brk("UNKNOWN unit", "unit", |u: &mut U| u.unit = 0),
                    brk("unit 9", "unit", |u: &mut U| u.unit = 9),
                ];
                b.extend(field!(U, "total", |p| &mut p.total, non_negative_breaks()));
                b.extend(field!(
                    U,
                    "available",
                    |p| &mut p.available,
                    non_negative_breaks()
                ));
                b.extend(field!(U, "used", |p| &mut p.used, non_negative_breaks()));
                b
            });
            check_response(r, b)
        },
    );

    run(
        "NodeExpandVolumeResponse",
        any::<NodeExpandVolumeResponse>(),
        |r| {
            type P = proto::NodeExpandVolumeResponse;
            check_response(
                r,
                field!(
                    P,
                    "capacity_bytes",
                    |p| &mut p.capacity_bytes,
                    non_negative_breaks()
                ),
            )
        },
    );

    run("NodeGetInfoResponse", any::<NodeGetInfoResponse>(), |r| {
        type P = proto::NodeGetInfoResponse;
        let mut b = field!(P, "node_id", |p| &mut p.node_id, node_id_breaks());
        b.extend(field!(
            P,
            "max_volumes_per_node",
            |p| &mut p.max_volumes_per_node,
            non_negative_breaks()
        ));
        b.extend(field!(
            P,
            "accessible_topology",
            |p| p.accessible_topology.get_or_insert_default(),
            topology_breaks()
        ));
        check_response(r, b)
    });

    run(
        "CreateVolumeGroupSnapshotResponse",
        (any::<CreateVolumeGroupSnapshotResponse>(), any::<Index>()),
        |(r, at)| {
            type P = proto::CreateVolumeGroupSnapshotResponse;
            type G = proto::VolumeGroupSnapshot;
            let i = at.index(r.group_snapshot.snapshots.len());
            let mut g = field!(
                G,
                "group_snapshot_id",
                |p| &mut p.group_snapshot_id,
                id_breaks()
            );
            g.push(brk("no snapshots", "snapshots", |p: &mut G| {
                p.snapshots.clear()
            }));
            g.push(brk("no creation time", "creation_time", |p: &mut G| {
                p.creation_time = None
            }));
            g.extend(lift(
                &format!("snapshots[{i}]"),
                move |p: &mut G, f| f(&mut p.snapshots[i]),
                snapshot_breaks(),
            ));
            let mut b = vec![brk("no group snapshot", "group_snapshot", |p: &mut P| {
                p.group_snapshot = None
            })];
            b.extend(field!(
                P,
                "group_snapshot",
                |p| p.group_snapshot.as_mut().unwrap(),
                g
            ));
            check_response(r, b)
        },
    );

    block_metadata_errors_name_the_field::<proto::GetMetadataAllocatedResponse>(
        "GetMetadataAllocatedResponse",
    );
    block_metadata_errors_name_the_field::<proto::GetMetadataDeltaResponse>(
        "GetMetadataDeltaResponse",
    );
}

/// The fields of the two streamed block-metadata messages, which are the
/// same, reached through one trait so that both are broken the same ways.
trait StreamedBlockMetadata:
    TryFrom<BlockMetadataResponse, Error = CsiError> + Clone + Debug + ResponseRules + 'static
{
    fn type_mut(&mut self) -> &mut i32;
    fn capacity_mut(&mut self) -> &mut i64;
    fn ranges_mut(&mut self) -> &mut Vec<proto::BlockMetadata>;
}

macro_rules! streamed_block_metadata {
    ($($wire:ty),*) => {
        $(
            impl StreamedBlockMetadata for $wire {
                fn type_mut(&mut self) -> &mut i32 {
                    &mut self.block_metadata_type
                }
                fn capacity_mut(&mut self) -> &mut i64 {
                    &mut self.volume_capacity_bytes
                }
                fn ranges_mut(&mut self) -> &mut Vec<proto::BlockMetadata> {
                    &mut self.block_metadata
                }
            }
        )*
    };
}

streamed_block_metadata!(
    proto::GetMetadataAllocatedResponse,
    proto::GetMetadataDeltaResponse
);

/// Breaks a valid streamed message in every way its rules name: the type,
/// the signs, and the order, overlap and size of its ranges; each break
/// fails naming its field, in the in-place check and the conversion alike.
fn block_metadata_errors_name_the_field<P>(what: &str)
where
    P: StreamedBlockMetadata,
    BlockMetadataResponse: TryFrom<P, Error = CsiError> + TryInto<P, Error: Debug>,
{
    type M = proto::BlockMetadata;
    run(what, any::<BlockMetadataResponse>(), |r| {
        let mut b = vec![
            brk("UNKNOWN type", "block_metadata_type", |p: &mut P| {
                *p.type_mut() = 0
            }),
            brk("type 3", "block_metadata_type", |p: &mut P| {
                *p.type_mut() = 3
            }),
        ];
        b.extend(field!(
            P,
            "volume_capacity_bytes",
            |p| p.capacity_mut(),
            non_negative_breaks()
        ));
        fn range<P: StreamedBlockMetadata>(p: &mut P) -> &mut M {
            p.ranges_mut().push(M {
                byte_offset: 0,
                size_bytes: 1,
            });
            p.ranges_mut().last_mut().unwrap()
        }
        let n = r.block_metadata.len();
        let mut m = field!(
            M,
            "byte_offset",
            |p| &mut p.byte_offset,
            non_negative_breaks()
        );
        m.extend(field!(
            M,
            "size_bytes",
            |p| &mut p.size_bytes,
            non_negative_breaks()
        ));
        b.extend(lift(
            &format!("block_metadata[{n}]"),
            move |p: &mut P, f| f(range(p)),
            m,
        ));
        if let Some(last) = r.block_metadata.last().copied() {
            let offset = i64::try_from(last.byte_offset).expect("generated below 2^31");
            let size = i64::try_from(last.size_bytes).expect("generated below 2^24");
            b.push(brk(
                "a range starting inside the last one",
                &format!("block_metadata[{n}]"),
                move |p: &mut P| {
                    p.ranges_mut().push(M {
                        byte_offset: offset + size - 1,
                        size_bytes: size,
                    })
                },
            ));
            b.push(brk(
                "the last range repeated in front of the first",
                "block_metadata[1]",
                move |p: &mut P| {
                    p.ranges_mut().insert(
                        0,
                        M {
                            byte_offset: offset,
                            size_bytes: size,
                        },
                    )
                },
            ));
            let next = M {
                byte_offset: offset + size,
                size_bytes: size + 1,
            };
            if r.block_metadata_type == BlockMetadataType::FixedLength {
                b.push(brk(
                    "FIXED_LENGTH: a range of another size",
                    &format!("block_metadata[{n}]"),
                    move |p: &mut P| p.ranges_mut().push(next),
                ));
            } else {
                // Not a break: VARIABLE_LENGTH ranges have any size.
                let mut p: P = r.clone().try_into().expect("sizes within int64");
                p.ranges_mut().push(next);
                must_agrees::<BlockMetadataResponse, P>(&p)?;
                prop_assert!(p.must().is_ok(), "{p:?}");
            }
        }
        check_response(r, b)
    });
}

#[test]
fn generated_values_follow_the_spec_rules() {
    // The strategies hold to the spec's rules whether or not the typed layer
    // checks them (the member snapshots naming their group and the group's
    // readiness it does not).
    // "If a key prefix is specified, it MUST be identical across all
    // topology keys returned by the SP": one prefix (or none) per message.
    fn prefixes<'a>(ts: impl IntoIterator<Item = &'a Topology>) -> BTreeSet<Option<&'a str>> {
        ts.into_iter()
            .flat_map(|t| t.segments().keys())
            .map(|k| k.as_str().split_once('/').map(|(p, _)| p))
            .collect()
    }
    run("TopologyRequirement", any::<TopologyRequirement>(), |t| {
        prop_assert!(!t.requisite.is_empty() || !t.preferred.is_empty());
        prop_assert!(prefixes(t.requisite.iter().chain(&t.preferred)).len() <= 1);
        Ok(())
    });
    run("Volume", any::<Volume>(), |v| {
        prop_assert!(prefixes(&v.accessible_topology).len() <= 1);
        Ok(())
    });
    run("VolumeCondition", any::<VolumeCondition>(), |c| {
        prop_assert!(!c.message.is_empty() && c.message.len() <= 128);
        Ok(())
    });
    run("VolumeGroupSnapshot", any::<VolumeGroupSnapshot>(), |g| {
        prop_assert!(!g.snapshots.is_empty());
        for s in &g.snapshots {
            prop_assert_eq!(s.group_snapshot_id.as_ref(), Some(&g.group_snapshot_id));
        }
        prop_assert_eq!(g.ready_to_use, g.snapshots.iter().all(|s| s.ready_to_use));
        Ok(())
    });
    run(
        "BlockMetadataResponse",
        any::<BlockMetadataResponse>(),
        |r| {
            for w in r.block_metadata.windows(2) {
                // "for any two BlockMetadata messages, A and B, if A is returned
                // before B, then (A.byte_offset + A.size_bytes <= B.byte_offset)"
                prop_assert!(
                    w[0].byte_offset + w[0].size_bytes <= w[1].byte_offset,
                    "{w:?}"
                );
            }
            if r.block_metadata_type == BlockMetadataType::FixedLength {
                prop_assert!(
                    r.block_metadata
                        .windows(2)
                        .all(|w| w[0].size_bytes == w[1].size_bytes)
                );
            }
            if let Some(last) = r.block_metadata.last() {
                prop_assert!(last.byte_offset + last.size_bytes <= r.volume_capacity_bytes);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 4. Every field the spec marks REQUIRED is enforced, and reported by path.
//
// The REQUIRED fields are read from the comments of the spec's protobuf (or,
// without the spec, of `proto/csi.proto`, which carries the same comments).
// For each generated valid message, each REQUIRED field that is present is
// removed from the encoded bytes (at any depth), and the typed conversion
// must fail naming exactly that field. Scalars (`bool`, `int64`) are skipped:
// their zero value is a valid value on the wire.

#[path = "../build/proto_model.rs"]
mod proto_model;

type FieldKey = (String, String);

/// (message, field) of every field whose comment says it is REQUIRED.
fn required_by_comments(src: &str) -> BTreeSet<FieldKey> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<(String, String)> = Vec::new();
    let mut comment = String::new();
    for line in src.lines() {
        let l = line.trim();
        if let Some(c) = l.strip_prefix("//") {
            comment.push(' ');
            comment.push_str(c.trim());
            continue;
        }
        if l.is_empty() {
            continue;
        }
        let words: Vec<&str> = l.split_whitespace().collect();
        let text = std::mem::take(&mut comment);
        if matches!(
            words[0],
            "message" | "enum" | "oneof" | "service" | "extend"
        ) && l.contains('{')
        {
            if !l.contains('}') {
                stack.push((
                    words[0].to_string(),
                    words[1].trim_end_matches('{').to_string(),
                ));
            }
            continue;
        }
        if l.starts_with('}') {
            stack.pop();
            continue;
        }
        if !matches!(stack.last(), Some((k, _)) if k == "message" || k == "oneof") {
            continue;
        }
        // `[repeated|optional] TYPE NAME = N ...;` where TYPE may be `map<K, V>`.
        let rest = l
            .strip_prefix("repeated ")
            .or_else(|| l.strip_prefix("optional "))
            .unwrap_or(l);
        let rest = match rest.find('>') {
            Some(i) if rest.starts_with("map<") => &rest[i + 1..],
            _ => rest.split_once(' ').map_or("", |(_, r)| r),
        };
        let Some(name) = rest.split_whitespace().next() else {
            continue;
        };
        if text.contains("This field is REQUIRED") || text.contains("This is a REQUIRED field") {
            let message: Vec<&str> = stack
                .iter()
                .filter(|(k, _)| k == "message")
                .map(|(_, n)| n.as_str())
                .collect();
            out.insert((message.join("."), name.to_string()));
        }
    }
    out
}

enum Kind {
    Message(String),
    Enum,
    Scalar,
}

/// Resolves a field type as protoc does: innermost scope first.
fn resolve(model: &proto_model::ProtoModel, scope: &str, ty: &str) -> Kind {
    if ty.starts_with(".google.protobuf.") || ty.starts_with("google.protobuf.") {
        return Kind::Message(String::new());
    }
    let mut scope = scope.to_string();
    loop {
        let candidate = if scope.is_empty() {
            ty.to_string()
        } else {
            format!("{scope}.{ty}")
        };
        if model.messages.contains_key(&candidate) {
            return Kind::Message(candidate);
        }
        if model.enums.contains_key(&candidate) {
            return Kind::Enum;
        }
        if scope.is_empty() {
            return Kind::Scalar;
        }
        scope = scope
            .rsplit_once('.')
            .map_or(String::new(), |(s, _)| s.to_string());
    }
}

/// One field occurrence in an encoding: number, byte range, payload range.
struct WireField {
    number: u32,
    start: usize,
    end: usize,
    payload: Option<(usize, usize)>,
}

fn read_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0;
    let mut shift = 0;
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn wire_fields(b: &[u8]) -> Vec<WireField> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let start = at;
        let tag = read_varint(b, &mut at);
        let payload = match tag & 7 {
            0 => {
                read_varint(b, &mut at);
                None
            }
            1 => {
                at += 8;
                None
            }
            2 => {
                let n = read_varint(b, &mut at) as usize;
                at += n;
                Some((at - n, at))
            }
            5 => {
                at += 4;
                None
            }
            t => panic!("unexpected wire type {t}"),
        };
        out.push(WireField {
            number: (tag >> 3) as u32,
            start,
            end: at,
            payload,
        });
    }
    out
}

fn without(b: &[u8], number: u32) -> Vec<u8> {
    wire_fields(b)
        .iter()
        .filter(|f| f.number != number)
        .flat_map(|f| b[f.start..f.end].to_vec())
        .collect()
}

/// `b` with the payload of the first occurrence of `number` replaced.
fn with_first_payload(b: &[u8], number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut done = false;
    for f in wire_fields(b) {
        if f.number == number && !done {
            done = true;
            prost::encoding::encode_key(
                number,
                prost::encoding::WireType::LengthDelimited,
                &mut out,
            );
            prost::encoding::encode_varint(payload.len() as u64, &mut out);
            out.extend_from_slice(payload);
        } else {
            out.extend_from_slice(&b[f.start..f.end]);
        }
    }
    out
}

struct Spec {
    model: proto_model::ProtoModel,
    required: BTreeSet<FieldKey>,
}

impl Spec {
    fn load() -> (Spec, &'static str) {
        let spec_path = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
            .join("../../../shared/reference/csi-spec-v1.12.0.md");
        let (src, from) = match std::fs::read_to_string(spec_path) {
            Ok(md) => (proto_model::protobuf_blocks(&md), "the CSI v1.12 spec"),
            Err(_) => (
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/csi.proto"))
                    .unwrap(),
                "proto/csi.proto (the spec is absent)",
            ),
        };
        let model = proto_model::parse(&src).expect("the protobuf parses");
        let required = required_by_comments(&src);
        for (m, f) in &required {
            assert!(
                model
                    .messages
                    .get(m)
                    .is_some_and(|msg| msg.fields.iter().any(|x| &x.name == f)),
                "REQUIRED comment on {m}.{f}, which the model does not have"
            );
        }
        (Spec { model, required }, from)
    }

    /// The REQUIRED fields whose absence is visible on the wire.
    fn checkable(&self) -> BTreeSet<FieldKey> {
        self.required
            .iter()
            .filter(|(m, f)| {
                let field = self.model.messages[m]
                    .fields
                    .iter()
                    .find(|x| &x.name == f)
                    .unwrap();
                field.label == "repeated"
                    || field.label == "map"
                    || field.ty == "string"
                    || field.ty == "bytes"
                    || !matches!(resolve(&self.model, m, &field.ty), Kind::Scalar)
            })
            .cloned()
            .collect()
    }

    /// Every way of removing one present REQUIRED field from `bytes` (a
    /// `message`), as (expected error path, spec field, damaged bytes).
    fn removals(
        &self,
        message: &str,
        bytes: &[u8],
        prefix: &str,
        out: &mut Vec<(String, FieldKey, Vec<u8>)>,
    ) {
        let present = wire_fields(bytes);
        for f in &self.model.messages[message].fields {
            let Some(first) = present.iter().find(|w| w.number == f.number) else {
                continue;
            };
            let path = if prefix.is_empty() {
                f.name.clone()
            } else {
                format!("{prefix}.{}", f.name)
            };
            let key = (message.to_string(), f.name.clone());
            let kind = resolve(&self.model, message, &f.ty);
            let scalar = matches!(kind, Kind::Scalar) && f.ty != "string" && f.ty != "bytes";
            if self.required.contains(&key)
                && (f.label == "repeated" || f.label == "map" || !scalar)
            {
                out.push((path.clone(), key, without(bytes, f.number)));
            }
            if let (Kind::Message(child), Some((s, e))) = (kind, first.payload)
                && !child.is_empty()
                && f.label != "map"
            {
                let child_prefix = if f.label == "repeated" {
                    format!("{path}[0]")
                } else {
                    path
                };
                let mut inner = Vec::new();
                self.removals(&child, &bytes[s..e], &child_prefix, &mut inner);
                for (p, k, payload) in inner {
                    out.push((p, k, with_first_payload(bytes, f.number, &payload)));
                }
            }
        }
    }
}

/// REQUIRED fields the typed conversion lets through on purpose: the
/// object-bound request fields (`csi_types::bound`, checked after the
/// driver's lookup; see `check_bound`) and the tolerated response rules
/// (`csi_types::check`).
const NOT_BY_THE_CONVERSION: &[(&str, &str)] = &[
    ("NodeGetVolumeStatsRequest", "volume_path"),
    ("NodeExpandVolumeRequest", "volume_path"),
    ("DeleteVolumeGroupSnapshotRequest", "snapshot_ids"),
    ("GetVolumeGroupSnapshotRequest", "snapshot_ids"),
    ("VolumeCondition", "message"),
];

fn required_enforced<T, P>(spec: &Spec, seen: &std::cell::RefCell<BTreeSet<FieldKey>>)
where
    T: Arbitrary + TryInto<P, Error: Debug> + TryFrom<P, Error = CsiError> + Debug,
    P: prost::Message + Default,
{
    // `csi_types::proto::CreateVolumeRequest` -> `CreateVolumeRequest`.
    let message = std::any::type_name::<P>().rsplit("::").next().unwrap();
    assert!(
        spec.model.messages.contains_key(message),
        "{message} is not a top-level message"
    );
    run(message, any::<T>(), |typed| {
        let wire: P = typed.try_into().expect("sizes within int64");
        let mut removals = Vec::new();
        spec.removals(message, &wire.encode_to_vec(), "", &mut removals);
        for (path, key, bytes) in removals {
            let damaged =
                P::decode(bytes.as_slice()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if NOT_BY_THE_CONVERSION.contains(&(key.0.as_str(), key.1.as_str())) {
                // Object-bound (checked by `ObjectBound::get` after the
                // lookup) or tolerated (listed by `check::ResponseRules`):
                // the conversion must let the message through.
                prop_assert!(
                    T::try_from(damaged).is_ok(),
                    "{}.{} removed at {path}: the conversion must accept it",
                    key.0,
                    key.1
                );
                seen.borrow_mut().insert(key);
                continue;
            }
            match T::try_from(damaged) {
                Err(CsiError::InvalidArgument { field, .. }) => {
                    prop_assert_eq!(&field, &path, "{}.{} removed", key.0, key.1)
                }
                other => prop_assert!(
                    false,
                    "{}.{} removed at {path}: got {other:?}",
                    key.0,
                    key.1
                ),
            }
            seen.borrow_mut().insert(key);
        }
        Ok(())
    });
}

#[test]
fn every_required_field_of_the_spec_is_enforced() {
    let (spec, from) = Spec::load();
    let seen = std::cell::RefCell::new(BTreeSet::new());
    macro_rules! each {
        ($($typed:ty => $wire:ident),* $(,)?) => {
            $(required_enforced::<$typed, proto::$wire>(&spec, &seen);)*
        };
    }
    each!(
        GetPluginInfoResponse => GetPluginInfoResponse,
        CreateVolumeRequest => CreateVolumeRequest,
        CreateVolumeResponse => CreateVolumeResponse,
        DeleteVolumeRequest => DeleteVolumeRequest,
        ControllerPublishVolumeRequest => ControllerPublishVolumeRequest,
        ControllerUnpublishVolumeRequest => ControllerUnpublishVolumeRequest,
        ValidateVolumeCapabilitiesRequest => ValidateVolumeCapabilitiesRequest,
        ValidateVolumeCapabilitiesResponse => ValidateVolumeCapabilitiesResponse,
        ListVolumesResponse => ListVolumesResponse,
        ControllerGetVolumeRequest => ControllerGetVolumeRequest,
        ControllerGetVolumeResponse => ControllerGetVolumeResponse,
        ControllerModifyVolumeRequest => ControllerModifyVolumeRequest,
        GetCapacityRequest => GetCapacityRequest,
        CreateSnapshotRequest => CreateSnapshotRequest,
        CreateSnapshotResponse => CreateSnapshotResponse,
        DeleteSnapshotRequest => DeleteSnapshotRequest,
        ListSnapshotsResponse => ListSnapshotsResponse,
        GetSnapshotRequest => GetSnapshotRequest,
        GetSnapshotResponse => GetSnapshotResponse,
        ControllerExpandVolumeRequest => ControllerExpandVolumeRequest,
        NodeStageVolumeRequest => NodeStageVolumeRequest,
        NodeUnstageVolumeRequest => NodeUnstageVolumeRequest,
        NodePublishVolumeRequest => NodePublishVolumeRequest,
        NodeUnpublishVolumeRequest => NodeUnpublishVolumeRequest,
        NodeGetVolumeStatsRequest => NodeGetVolumeStatsRequest,
        NodeGetVolumeStatsResponse => NodeGetVolumeStatsResponse,
        NodeExpandVolumeRequest => NodeExpandVolumeRequest,
        NodeGetInfoResponse => NodeGetInfoResponse,
        CreateVolumeGroupSnapshotRequest => CreateVolumeGroupSnapshotRequest,
        CreateVolumeGroupSnapshotResponse => CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest => DeleteVolumeGroupSnapshotRequest,
        GetVolumeGroupSnapshotRequest => GetVolumeGroupSnapshotRequest,
        GetVolumeGroupSnapshotResponse => GetVolumeGroupSnapshotResponse,
        GetMetadataAllocatedRequest => GetMetadataAllocatedRequest,
        GetMetadataDeltaRequest => GetMetadataDeltaRequest,
        BlockMetadataResponse => GetMetadataAllocatedResponse,
        BlockMetadataResponse => GetMetadataDeltaResponse,
    );
    let checkable = spec.checkable();
    let seen = seen.into_inner();
    println!(
        "REQUIRED fields from {from}: {} marked, {} visible on the wire, {} removed and reported by path",
        spec.required.len(),
        checkable.len(),
        seen.len()
    );
    let missed: Vec<_> = checkable.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "REQUIRED fields never exercised: {missed:?}"
    );
    assert!(seen.len() > 40, "{seen:?}");
}

// ---------------------------------------------------------------------------
// Rules of the spec that the property tests above first found missing in the
// typed layer, kept as regression cases.

#[test]
fn an_empty_topology_requirement_is_rejected() {
    // "If TopologyRequirement is specified either requisite or preferred or
    // both MUST be specified."
    let mut p = proto::CreateVolumeRequest::try_from(CreateVolumeRequest {
        name: VolumeName::new("pvc-1").unwrap(),
        capacity_range: None,
        volume_capabilities: vec![VolumeCapability::block(AccessMode::SingleNodeWriter)],
        parameters: Default::default(),
        secrets: Default::default(),
        volume_content_source: None,
        accessibility_requirements: None,
        mutable_parameters: Default::default(),
    })
    .unwrap();
    p.accessibility_requirements = Some(proto::TopologyRequirement::default());
    match CreateVolumeRequest::try_from(p) {
        Err(CsiError::InvalidArgument { field, .. }) => {
            assert_eq!(field, "accessibility_requirements")
        }
        other => panic!("expected InvalidArgument on accessibility_requirements, got {other:?}"),
    }
}

/// The tolerated rules (`csi_types::check`): a response that bends one is
/// accepted by the conversion and listed by `ResponseRules::tolerated`,
/// naming the field; a `Plugin` still refuses to send it.
#[test]
fn tolerated_oddities_are_accepted_and_listed() {
    // Published node ids that are not node ids (empty, 257 bytes) are dropped.
    for odd in ["".to_string(), "n".repeat(257)] {
        let wire = proto::ControllerGetVolumeResponse {
            volume: Some(
                Volume::new(VolumeId::new("v").unwrap(), 1)
                    .try_into()
                    .unwrap(),
            ),
            status: Some(proto::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![odd, "node-1".into()],
                volume_condition: None,
            }),
        };
        let found: Vec<String> = wire.tolerated().into_iter().map(|o| o.field).collect();
        assert_eq!(found, ["status.published_node_ids[0]"]);
        let typed = ControllerGetVolumeResponse::try_from(wire).unwrap();
        assert_eq!(
            typed.status.published_node_ids,
            [NodeId::new("node-1").unwrap()]
        );
    }
    // A condition message that is empty or over 128 bytes is kept as received.
    for message in [String::new(), "m".repeat(129)] {
        let wire = proto::NodeGetVolumeStatsResponse {
            usage: vec![],
            volume_condition: Some(proto::VolumeCondition {
                abnormal: true,
                message: message.clone(),
            }),
        };
        let found: Vec<String> = wire.tolerated().into_iter().map(|o| o.field).collect();
        assert_eq!(found, ["volume_condition.message"]);
        let typed = NodeGetVolumeStatsResponse::try_from(wire).unwrap();
        assert_eq!(typed.volume_condition.unwrap().message, message);
    }
    // ListVolumes: both at once, in field order.
    let wire = proto::ListVolumesResponse {
        entries: vec![proto::list_volumes_response::Entry {
            volume: Some(
                Volume::new(VolumeId::new("v").unwrap(), 1)
                    .try_into()
                    .unwrap(),
            ),
            status: Some(proto::list_volumes_response::VolumeStatus {
                published_node_ids: vec![String::new()],
                volume_condition: Some(proto::VolumeCondition {
                    abnormal: false,
                    message: String::new(),
                }),
            }),
        }],
        next_token: String::new(),
    };
    let found: Vec<String> = wire.tolerated().into_iter().map(|o| o.field).collect();
    assert_eq!(
        found,
        [
            "entries[0].status.published_node_ids[0]",
            "entries[0].status.volume_condition.message"
        ]
    );
    assert!(ListVolumesResponse::try_from(wire).is_ok());
}

#[test]
fn converting_an_extreme_creation_time_does_not_panic() {
    use std::time::{Duration, UNIX_EPOCH};
    let Some(t) = UNIX_EPOCH.checked_sub(Duration::from_secs(1 << 63)) else {
        return;
    };
    let s = Snapshot::new(
        SnapshotId::new("s").unwrap(),
        VolumeId::new("v").unwrap(),
        0,
        t,
        true,
    );
    assert!(std::panic::catch_unwind(|| proto::Snapshot::try_from(s)).is_ok());
}

/// The errors of a streamed block-metadata message, word for word: what
/// the Plugin sends a driver's broken stream, and the client reports.
#[test]
fn block_metadata_ranges_must_be_ordered_and_disjoint() {
    use proto::BlockMetadataType::{FixedLength, VariableLength};
    let range = |byte_offset, size_bytes| proto::BlockMetadata {
        byte_offset,
        size_bytes,
    };
    let bad = [
        (
            "overlapping",
            VariableLength as i32,
            1 << 30,
            vec![range(0, 8192), range(4096, 4096)],
            "invalid `block_metadata[1]`: ranges must be in ascending order and must not \
             overlap: starts at 4096 before the previous range ends at 8192",
        ),
        (
            "descending",
            VariableLength as i32,
            1 << 30,
            vec![range(8192, 4096), range(0, 4096)],
            "invalid `block_metadata[1]`: ranges must be in ascending order and must not \
             overlap: starts at 0 before the previous range ends at 12288",
        ),
        (
            "FIXED_LENGTH with two sizes",
            FixedLength as i32,
            1 << 30,
            vec![range(0, 4096), range(8192, 8192)],
            "invalid `block_metadata[1]`: FIXED_LENGTH ranges must all have one size: 8192 \
             after 4096",
        ),
        (
            "an end past i64::MAX",
            VariableLength as i32,
            i64::MAX,
            vec![range(i64::MAX, i64::MAX), range(i64::MAX, 1)],
            "invalid `block_metadata[1]`: ranges must be in ascending order and must not \
             overlap: starts at 9223372036854775807 before the previous range ends at \
             18446744073709551614",
        ),
        (
            "a negative size after an overlap",
            VariableLength as i32,
            1 << 30,
            vec![range(0, 8192), range(4096, 4096), range(16384, -1)],
            "invalid `block_metadata[2].size_bytes`: must be greater than zero, got -1",
        ),
        (
            "an empty range",
            VariableLength as i32,
            1 << 30,
            vec![range(0, 4096), range(4096, 0)],
            "invalid `block_metadata[1].size_bytes`: must be greater than zero, got 0",
        ),
        (
            "a negative offset",
            FixedLength as i32,
            1 << 30,
            vec![range(0, 4096), range(-4096, 4096)],
            "invalid `block_metadata[1].byte_offset`: must not be negative, got -4096",
        ),
        (
            "a negative capacity",
            FixedLength as i32,
            -1,
            vec![range(-1, 4096)],
            "invalid `volume_capacity_bytes`: must not be negative, got -1",
        ),
        (
            "UNKNOWN type",
            0,
            -1,
            vec![],
            "invalid `block_metadata_type`: this field is REQUIRED: FIXED_LENGTH or \
             VARIABLE_LENGTH",
        ),
    ];
    for (what, block_metadata_type, volume_capacity_bytes, block_metadata, error) in bad {
        let delta = proto::GetMetadataDeltaResponse {
            block_metadata_type,
            volume_capacity_bytes,
            block_metadata: block_metadata.clone(),
        };
        let allocated = proto::GetMetadataAllocatedResponse {
            block_metadata_type,
            volume_capacity_bytes,
            block_metadata,
        };
        for e in [
            delta.must().unwrap_err(),
            BlockMetadataResponse::try_from(delta).unwrap_err(),
            allocated.must().unwrap_err(),
            BlockMetadataResponse::try_from(allocated).unwrap_err(),
        ] {
            assert!(
                matches!(e, CsiError::InvalidArgument { .. }),
                "{what}: {e:?}"
            );
            assert_eq!(e.to_string(), error, "{what}");
        }
    }
}

#[test]
fn group_snapshot_members_agree_with_their_group() {
    let member = |id: &str, group: &str, ready: bool| proto::Snapshot {
        size_bytes: 1,
        snapshot_id: id.into(),
        source_volume_id: "vol".into(),
        creation_time: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        ready_to_use: ready,
        group_snapshot_id: group.into(),
    };
    let response = |snapshots, ready_to_use| proto::CreateVolumeGroupSnapshotResponse {
        group_snapshot: Some(proto::VolumeGroupSnapshot {
            group_snapshot_id: "g1".into(),
            snapshots,
            creation_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ready_to_use,
        }),
    };
    // "If this message is inside a VolumeGroupSnapshot message, the value
    // MUST be the same as the group_snapshot_id in that message."
    let other_group = response(
        vec![member("s1", "g1", true), member("s2", "g2", true)],
        true,
    );
    // "If any snapshot in the list of snapshots in this message have
    // ready_to_use set to false, the SP MUST set this field to false."
    let not_ready = response(
        vec![member("s1", "g1", true), member("s2", "g1", false)],
        true,
    );
    for (wire, want) in [
        (other_group, "group_snapshot.snapshots[1].group_snapshot_id"),
        (not_ready, "group_snapshot.ready_to_use"),
    ] {
        match CreateVolumeGroupSnapshotResponse::try_from(wire) {
            Err(CsiError::InvalidArgument { field, .. }) => assert_eq!(field, want),
            other => panic!("expected InvalidArgument on {want}, got {other:?}"),
        }
    }
}

#[test]
fn a_validate_volume_capabilities_message_is_at_most_128_bytes() {
    // The general 128-byte string limit; the field does not override it.
    let wire = proto::ValidateVolumeCapabilitiesResponse {
        confirmed: None,
        message: "m".repeat(129),
    };
    match ValidateVolumeCapabilitiesResponse::try_from(wire) {
        Err(CsiError::InvalidArgument { field, .. }) => assert_eq!(field, "message"),
        other => panic!("expected InvalidArgument on message, got {other:?}"),
    }
}

/// A negative `starting_offset` answers `OUT_OF_RANGE`, as both RPCs' error
/// tables say, naming the field; zero and positive offsets pass.
#[test]
fn negative_starting_offset_is_out_of_range() {
    use csi_types::snapshot_metadata::{GetMetadataAllocatedRequest, GetMetadataDeltaRequest};
    for offset in [-1, i64::MIN] {
        let a = GetMetadataAllocatedRequest::try_from(proto::GetMetadataAllocatedRequest {
            snapshot_id: "snap-1".into(),
            starting_offset: offset,
            ..Default::default()
        })
        .unwrap_err();
        let d = GetMetadataDeltaRequest::try_from(proto::GetMetadataDeltaRequest {
            base_snapshot_id: "snap-1".into(),
            target_snapshot_id: "snap-2".into(),
            starting_offset: offset,
            ..Default::default()
        })
        .unwrap_err();
        for e in [a, d] {
            assert_eq!(e.code(), csi_types::Code::OutOfRange, "{e}");
            assert!(e.to_string().contains("`starting_offset`"), "{e}");
        }
    }
    for offset in [0, 1, i64::MAX] {
        GetMetadataAllocatedRequest::try_from(proto::GetMetadataAllocatedRequest {
            snapshot_id: "snap-1".into(),
            starting_offset: offset,
            ..Default::default()
        })
        .unwrap();
    }
}
