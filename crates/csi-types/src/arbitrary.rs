//! [proptest](mod@proptest) strategies for every newtype, shared type, request and
//! response of this crate (feature `proptest`).
//!
//! Every type implements [`proptest::arbitrary::Arbitrary`], so a driver
//! author property-tests handlers with `any::<CreateVolumeRequest>()` and the
//! like. The generated values are *valid*: they satisfy every invariant
//! documented on their type and every rule that `TryFrom<proto::…>` checks, so
//! converting one to its wire message and back gives it back unchanged. They
//! are also the *canonical* form of what the wire can carry: an optional
//! number is never `Some(0)` and an optional string never `Some("")` where the
//! wire encodes "unset" as zero or empty, and every size fits in an `int64`.
//!
//! They also keep the rules that the specification states but the typed
//! layer does not check, such as every member of a `VolumeGroupSnapshot`
//! naming its group, the group being ready only when all members are, and the
//! topology keys of one message sharing one prefix.
//!
//! The strategies lean on edge cases: names and ids of exactly 128 bytes,
//! node ids of exactly 256 bytes, plugin names, topology labels and prefixes
//! of exactly 63 characters, paths of exactly 4096 bytes, maps of exactly
//! 4 KiB, multi-byte Unicode, the whitespace the spec allows in names, and
//! timestamps at the ends of the protobuf `Timestamp` range.
//!
//! ```
//! use csi_types::{proto, controller::CreateVolumeRequest};
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(16))]
//!     fn requests_survive_the_wire(req in any::<CreateVolumeRequest>()) {
//!         // Sizes are drawn within int64, so the conversion to the wire succeeds.
//!         let wire = proto::CreateVolumeRequest::try_from(req.clone()).unwrap();
//!         prop_assert_eq!(CreateVolumeRequest::try_from(wire).unwrap(), req);
//!     }
//! }
//! requests_survive_the_wire();
//! ```
//!
//! Beside the `Arbitrary` impls, the module exports the building blocks used
//! by them ([`string_map`], [`timestamp`], [`size_bytes`], …) for composing
//! strategies of a driver's own types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use crate::bound::ObjectBound;
use crate::controller::*;
use crate::group_controller::*;
use crate::identity::*;
use crate::node::*;
use crate::snapshot_metadata::*;
use crate::{
    capabilities::{
        ControllerCapabilities, GroupControllerCapabilities, NodeCapabilities, PluginCapabilities,
    },
    ids::{
        GroupSnapshotId, GroupSnapshotName, NodeId, NodePath, PluginName, SnapshotId, SnapshotName,
        TopologyKey, TopologyValue, VolumeId, VolumeName,
    },
    redact::Secrets,
    types::{
        AccessMode, AccessType, CapacityRange, Map, MountVolume, Snapshot, Topology,
        TopologyRequirement, Volume, VolumeCapability, VolumeCondition, VolumeContentSource,
    },
};

/// The general string limit of the spec, in bytes.
const MAX_STRING: usize = 128;
/// The map limit of the spec, keys and values together, in bytes.
const MAX_MAP: usize = 4096;
/// The `node_id` limit, in bytes.
const MAX_NODE_ID: usize = 256;
/// The longest path the typed layer accepts, in bytes.
const MAX_PATH: usize = 4096;
/// The limit of a DNS-label style name, in characters.
const MAX_LABEL: usize = 63;
/// The largest size a wire `int64` can carry.
const MAX_SIZE: u64 = i64::MAX as u64;
/// The protobuf `Timestamp` range: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Implements `Arbitrary` with a boxed strategy.
macro_rules! arbitrary {
    ($($ty:ty => $strategy:expr;)*) => {
        $(
            impl Arbitrary for $ty {
                type Parameters = ();
                type Strategy = BoxedStrategy<$ty>;
                fn arbitrary_with(_: ()) -> Self::Strategy {
                    ($strategy).boxed()
                }
            }
        )*
    };
}

/// Drops characters from the end until `s` is at most `max` bytes.
fn truncate(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

/// Truncates or pads `s` with ASCII to exactly `len` bytes.
fn exactly(s: String, len: usize) -> String {
    let mut s = truncate(s, len);
    while s.len() < len {
        s.push('x');
    }
    s
}

fn collect(chars: Vec<char>) -> String {
    chars.into_iter().collect()
}

/// ASCII alphanumerics and the punctuation ids usually carry.
fn ascii_id_char() -> BoxedStrategy<char> {
    select(
        ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['-', '_', '.', ':', '/'])
            .collect::<Vec<_>>(),
    )
    .boxed()
}

/// Any character at all (ids carry no character rule, only a size limit).
fn id_char() -> BoxedStrategy<char> {
    prop_oneof![6 => ascii_id_char(), 3 => any::<char>(), 1 => Just('é'), 1 => Just('💾')].boxed()
}

/// Whether the spec bans `c` in names.
fn banned_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Any character allowed in a name: no banned control, whitespace welcome.
fn name_char() -> BoxedStrategy<char> {
    prop_oneof![
        6 => ascii_id_char(),
        3 => any::<char>().prop_map(|c| if banned_control(c) { '~' } else { c }),
        2 => select(vec![' ', '\t', '\n', '\r', '\u{a0}', '\u{2028}', '\u{3000}']),
        1 => select(vec!['é', 'ß', '中', '💾', '\u{200d}']),
    ]
    .boxed()
}

/// Non-empty strings of `chars` of at most `max` bytes, often short, sometimes
/// long, sometimes exactly `max` bytes.
fn bounded(chars: BoxedStrategy<char>, max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        6 => vec(chars.clone(), 1..=24).prop_map(collect),
        2 => vec(chars.clone(), 1..=max).prop_map(move |c| truncate(collect(c), max)),
        1 => vec(chars, 0..=max).prop_map(move |c| exactly(collect(c), max)),
    ]
    .boxed()
}

/// A non-empty string of at most 128 bytes of any characters, as the spec
/// allows for ids, tokens, filesystem types and version strings.
pub fn short_string() -> BoxedStrategy<String> {
    bounded(id_char(), MAX_STRING)
}

/// A DNS label style name of 1 to 63 characters: alphanumerics at both ends,
/// `inner` characters between (`[-._]` for topology labels, `[-.]` for domain names).
fn label(alnum: &'static str, inner: &'static str) -> BoxedStrategy<String> {
    let ends: Vec<char> = alnum.chars().collect();
    let mids: Vec<char> = alnum.chars().chain(inner.chars()).collect();
    let one = select(ends.clone()).prop_map(String::from);
    let longer = (
        select(ends.clone()),
        vec(select(mids.clone()), 0..=MAX_LABEL - 2),
        select(ends.clone()),
    )
        .prop_map(|(a, m, b)| format!("{a}{}{b}", collect(m)));
    let longest = (
        select(ends.clone()),
        vec(select(mids), MAX_LABEL - 2),
        select(ends),
    )
        .prop_map(|(a, m, b)| format!("{a}{}{b}", collect(m)));
    prop_oneof![2 => one, 6 => longer, 1 => longest].boxed()
}

const ALNUM: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_ALNUM: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

/// A `map<string, string>` of at most 4 KiB, keys and values together; keys
/// and values are any strings (the spec puts no rule on them), and about one
/// map in ten is exactly 4 KiB.
pub fn string_map() -> BoxedStrategy<Map> {
    let key = prop_oneof![4 => "[a-z][a-z0-9./_-]{0,40}", 1 => ".{0,16}"];
    let value = prop_oneof![4 => "[ -~]{0,64}", 1 => ".{0,128}"];
    prop_oneof![
        9 => vec((key, value), 0..=8).prop_map(|kv| fit(kv.into_iter().collect(), MAX_MAP)),
        1 => ("[a-z]{1,8}", ".{0,64}").prop_map(|(k, v)| {
            let v = exactly(v, MAX_MAP - k.len());
            [(k, v)].into()
        }),
    ]
    .boxed()
}

/// A non-empty [`string_map`].
fn non_empty_map() -> BoxedStrategy<Map> {
    (string_map(), "[a-z]{1,8}", "[ -~]{0,16}")
        .prop_map(|(mut m, k, v)| {
            if m.is_empty() {
                m.insert(k, v);
            }
            m
        })
        .boxed()
}

/// Keeps entries, in key order, while the total stays within `max` bytes.
fn fit(map: Map, max: usize) -> Map {
    let mut total = 0;
    map.into_iter()
        .filter(|(k, v)| {
            let fits = total + k.len() + v.len() <= max;
            if fits {
                total += k.len() + v.len();
            }
            fits
        })
        .collect()
}

/// A size in bytes that fits the wire's `int64`: often small, sometimes huge,
/// including 0 and `i64::MAX`.
pub fn size_bytes() -> BoxedStrategy<u64> {
    prop_oneof![
        1 => Just(0u64),
        1 => Just(MAX_SIZE),
        4 => 0u64..(1 << 40),
        2 => 0..=MAX_SIZE,
    ]
    .boxed()
}

/// A non-zero [`size_bytes`], for fields where 0 on the wire means "unset".
pub fn nonzero_size_bytes() -> BoxedStrategy<u64> {
    size_bytes().prop_map(|n| n.max(1)).boxed()
}

/// A count that fits the wire's `int32` and is not 0 (which means "unset").
fn count() -> BoxedStrategy<u32> {
    prop_oneof![
        Just(1u32),
        Just(i32::MAX as u32),
        1u32..1000,
        1..=i32::MAX as u32
    ]
    .boxed()
}

/// A point in time that a protobuf `Timestamp` can carry (years 1 to 9999),
/// with nanosecond precision, including the epoch and both ends of the range.
pub fn timestamp() -> BoxedStrategy<SystemTime> {
    let seconds = prop_oneof![
        1 => Just(0i64),
        1 => Just(MIN_TIMESTAMP_SECONDS),
        1 => Just(MAX_TIMESTAMP_SECONDS),
        4 => 1_500_000_000i64..2_000_000_000,
        3 => MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS,
    ];
    let nanos = prop_oneof![Just(0i32), Just(999_999_999), 0..1_000_000_000i32];
    (seconds, nanos)
        .prop_map(|(seconds, nanos)| {
            SystemTime::try_from(prost_types::Timestamp { seconds, nanos })
                .expect("every protobuf Timestamp is a SystemTime on this platform")
        })
        .boxed()
}

/// A topology key prefix, or none: a lower-case domain name of at most 63
/// characters.
fn topology_prefix() -> BoxedStrategy<Option<String>> {
    proptest::option::of(domain(LOWER_ALNUM)).boxed()
}

/// A domain name of at most 63 characters: one to four labels of `alnum`
/// with inner '-', joined by '.' (one label alone reaches 63 characters).
fn domain(alnum: &'static str) -> BoxedStrategy<String> {
    vec(label(alnum, "-"), 1..=4)
        .prop_map(|parts| {
            // Truncating a dotted name can leave a trailing '.' or '-'.
            let s = truncate(parts.join("."), MAX_LABEL);
            s.trim_end_matches(['.', '-']).to_string()
        })
        .boxed()
}

/// A [`Topology`] whose keys all carry `prefix` (or none), as the spec asks
/// of the keys one plugin uses ("If a key prefix is specified, it MUST be
/// identical across all topology keys returned by the SP"). Key names and
/// values are 1 to 63 characters; no two keys differ only in case.
pub fn topology_with_prefix(prefix: Option<String>) -> BoxedStrategy<Topology> {
    vec((label(ALNUM, "-._"), any::<TopologyValue>()), 0..=6)
        .prop_map(move |segments| {
            // Keys are case-insensitive: keep the first of any that collide.
            let mut seen = BTreeSet::new();
            let segments: BTreeMap<String, String> = segments
                .into_iter()
                .map(|(name, v)| {
                    let key = match &prefix {
                        Some(p) => format!("{p}/{name}"),
                        None => name,
                    };
                    (key, v.into_string())
                })
                .filter(|(k, _)| seen.insert(k.to_ascii_lowercase()))
                .collect();
            valid("Topology", Topology::new(fit(segments, MAX_MAP)))
        })
        .boxed()
}

/// A list of topologies sharing one key prefix.
fn topologies(len: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Vec<Topology>> {
    topology_prefix()
        .prop_flat_map(move |prefix| vec(topology_with_prefix(prefix), len.clone()))
        .boxed()
}

fn valid<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("csi_types::arbitrary generated an invalid {what}: {e:?}"),
    }
}

arbitrary! {
    VolumeId => short_string().prop_map(|s| valid("VolumeId", VolumeId::new(s)));
    SnapshotId => short_string().prop_map(|s| valid("SnapshotId", SnapshotId::new(s)));
    GroupSnapshotId => short_string().prop_map(|s| valid("GroupSnapshotId", GroupSnapshotId::new(s)));
    NodeId => bounded(id_char(), MAX_NODE_ID).prop_map(|s| valid("NodeId", NodeId::new(s)));
    VolumeName => bounded(name_char(), MAX_STRING).prop_map(|s| valid("VolumeName", VolumeName::new(s)));
    SnapshotName => bounded(name_char(), MAX_STRING).prop_map(|s| valid("SnapshotName", SnapshotName::new(s)));
    GroupSnapshotName => bounded(name_char(), MAX_STRING)
        .prop_map(|s| valid("GroupSnapshotName", GroupSnapshotName::new(s)));
    PluginName => prop_oneof![
        3 => domain(ALNUM),
        2 => domain(LOWER_ALNUM),
    ]
    .prop_map(|s| valid("PluginName", PluginName::new(s)));
    NodePath => prop_oneof![
        1 => Just("/".to_string()),
        6 => vec(prop_oneof!["[a-z0-9._-]{1,16}", ".{1,8}"], 1..=8)
            .prop_map(|parts| truncate(format!("/{}", parts.join("/")).replace('\0', "_"), MAX_PATH)),
        1 => ".{0,64}".prop_map(|s| exactly(format!("/{s}").replace('\0', "_"), MAX_PATH)),
    ]
    .prop_map(|s| valid("NodePath", NodePath::new(s)));
    TopologyKey => (proptest::option::of(label(LOWER_ALNUM, "-.")), label(ALNUM, "-._"))
        .prop_map(|(prefix, name)| {
            let key = match prefix {
                Some(p) => format!("{p}/{name}"),
                None => name,
            };
            valid("TopologyKey", TopologyKey::new(key))
        });
    TopologyValue => label(ALNUM, "-._").prop_map(|s| valid("TopologyValue", TopologyValue::new(s)));
    Secrets => prop_oneof![
        9 => vec(("[A-Za-z0-9._-]{1,32}", prop_oneof![3 => "[ -~]{0,64}", 1 => ".{0,64}"]), 0..=6)
            .prop_map(|kv| fit(kv.into_iter().collect(), MAX_MAP)),
        1 => ("[A-Za-z0-9._-]{1,8}", ".{0,32}").prop_map(|(k, v)| {
            let v = exactly(v, MAX_MAP - k.len());
            [(k, v)].into()
        }),
    ]
    .prop_map(|m| valid("Secrets", Secrets::new(m)));

    AccessMode => select(AccessMode::ALL.to_vec());
    MountVolume => (
        proptest::option::of(short_string()),
        vec(prop_oneof![4 => "[a-z_]{1,12}(=[a-z0-9,]{1,12})?", 1 => ".{0,32}"], 0..=6),
        proptest::option::of(prop_oneof!["[0-9]{1,10}", short_string()]),
    )
        .prop_map(|(fs_type, flags, volume_mount_group)| {
            let mut total = 0;
            let mount_flags = flags
                .into_iter()
                .filter(|f| {
                    total += f.len();
                    total <= MAX_MAP
                })
                .collect();
            MountVolume { fs_type, mount_flags, volume_mount_group }
        });
    AccessType => prop_oneof![Just(AccessType::Block), any::<MountVolume>().prop_map(AccessType::Mount)];
    VolumeCapability => (any::<AccessType>(), any::<AccessMode>())
        .prop_map(|(access_type, access_mode)| VolumeCapability { access_type, access_mode });
    CapacityRange => (proptest::option::of(nonzero_size_bytes()), proptest::option::of(nonzero_size_bytes()))
        .prop_map(|(a, b)| {
            let (required_bytes, limit_bytes) = match (a, b) {
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            valid("CapacityRange", CapacityRange::new(required_bytes, limit_bytes))
        });
    Topology => topology_prefix().prop_flat_map(topology_with_prefix);
    // The spec: "If TopologyRequirement is specified either requisite or
    // preferred or both MUST be specified", and every preferred topology is
    // requisite when requisite is given.
    TopologyRequirement => topology_prefix()
        .prop_flat_map(|prefix| (Just(prefix.clone()), vec(topology_with_prefix(prefix), 0..=3)))
        .prop_flat_map(|(prefix, requisite)| {
            let preferred = if requisite.is_empty() {
                vec(topology_with_prefix(prefix), 1..=3).boxed()
            } else {
                let pool = requisite.clone();
                vec(any::<Index>(), 0..=3)
                    .prop_map(move |ix| ix.iter().map(|i| pool[i.index(pool.len())].clone()).collect())
                    .boxed()
            };
            (Just(requisite), preferred)
        })
        .prop_map(|(requisite, preferred)| TopologyRequirement { requisite, preferred });
    VolumeContentSource => prop_oneof![
        any::<SnapshotId>().prop_map(VolumeContentSource::Snapshot),
        any::<VolumeId>().prop_map(VolumeContentSource::Volume),
    ];
    Volume => (
        any::<VolumeId>(),
        size_bytes(),
        string_map(),
        proptest::option::of(any::<VolumeContentSource>()),
        topologies(0..=3),
    )
        .prop_map(|(volume_id, capacity_bytes, volume_context, content_source, accessible_topology)| Volume {
            volume_id,
            capacity_bytes,
            volume_context,
            content_source,
            accessible_topology,
        });
    // The message is REQUIRED and, as every string, at most 128 bytes.
    VolumeCondition => (any::<bool>(), prop_oneof!["[ -~]{1,64}", short_string()])
        .prop_map(|(abnormal, message)| VolumeCondition { abnormal, message });
    Snapshot => (
        any::<SnapshotId>(),
        any::<VolumeId>(),
        size_bytes(),
        timestamp(),
        any::<bool>(),
        proptest::option::of(any::<GroupSnapshotId>()),
    )
        .prop_map(|(snapshot_id, source_volume_id, size_bytes, creation_time, ready_to_use, group_snapshot_id)| {
            Snapshot { snapshot_id, source_volume_id, size_bytes, creation_time, ready_to_use, group_snapshot_id }
        });

    PluginCapabilities => prop_oneof![
        Just(PluginCapabilities::empty()),
        Just(PluginCapabilities::all()),
        any::<u32>().prop_map(PluginCapabilities::from_bits_truncate),
    ];
    ControllerCapabilities => prop_oneof![
        Just(ControllerCapabilities::empty()),
        Just(ControllerCapabilities::all()),
        any::<u32>().prop_map(ControllerCapabilities::from_bits_truncate),
    ];
    NodeCapabilities => prop_oneof![
        Just(NodeCapabilities::empty()),
        Just(NodeCapabilities::all()),
        any::<u32>().prop_map(NodeCapabilities::from_bits_truncate),
    ];
    GroupControllerCapabilities => prop_oneof![
        Just(GroupControllerCapabilities::empty()),
        Just(GroupControllerCapabilities::all()),
        any::<u32>().prop_map(GroupControllerCapabilities::from_bits_truncate),
    ];
}

// Identity.
arbitrary! {
    GetPluginInfoRequest => Just(GetPluginInfoRequest {});
    GetPluginInfoResponse => (any::<PluginName>(), short_string(), string_map())
        .prop_map(|(name, vendor_version, manifest)| GetPluginInfoResponse { name, vendor_version, manifest });
    GetPluginCapabilitiesRequest => Just(GetPluginCapabilitiesRequest {});
    GetPluginCapabilitiesResponse => any::<PluginCapabilities>()
        .prop_map(|capabilities| GetPluginCapabilitiesResponse { capabilities });
    ProbeRequest => Just(ProbeRequest {});
    ProbeResponse => proptest::option::of(any::<bool>()).prop_map(|ready| ProbeResponse { ready });
}

fn capabilities() -> BoxedStrategy<Vec<VolumeCapability>> {
    vec(any::<VolumeCapability>(), 1..=3).boxed()
}

// Controller.
arbitrary! {
    CreateVolumeRequest => (
        any::<VolumeName>(),
        proptest::option::of(any::<CapacityRange>()),
        capabilities(),
        string_map(),
        any::<Secrets>(),
        proptest::option::of(any::<VolumeContentSource>()),
        proptest::option::of(any::<TopologyRequirement>()),
        string_map(),
    )
        .prop_map(
            |(
                name,
                capacity_range,
                volume_capabilities,
                parameters,
                secrets,
                volume_content_source,
                accessibility_requirements,
                mutable_parameters,
            )| CreateVolumeRequest {
                name,
                capacity_range,
                volume_capabilities,
                parameters,
                secrets,
                volume_content_source,
                accessibility_requirements,
                mutable_parameters,
            },
        );
    CreateVolumeResponse => any::<Volume>().prop_map(|volume| CreateVolumeResponse { volume });
    DeleteVolumeRequest => (any::<VolumeId>(), any::<Secrets>())
        .prop_map(|(volume_id, secrets)| DeleteVolumeRequest { volume_id, secrets });
    DeleteVolumeResponse => Just(DeleteVolumeResponse {});
    ControllerPublishVolumeRequest => (
        any::<VolumeId>(),
        any::<NodeId>(),
        any::<VolumeCapability>(),
        any::<bool>(),
        any::<Secrets>(),
        string_map(),
    )
        .prop_map(|(volume_id, node_id, volume_capability, readonly, secrets, volume_context)| {
            ControllerPublishVolumeRequest { volume_id, node_id, volume_capability, readonly, secrets, volume_context }
        });
    ControllerPublishVolumeResponse => string_map()
        .prop_map(|publish_context| ControllerPublishVolumeResponse { publish_context });
    ControllerUnpublishVolumeRequest => (any::<VolumeId>(), proptest::option::of(any::<NodeId>()), any::<Secrets>())
        .prop_map(|(volume_id, node_id, secrets)| ControllerUnpublishVolumeRequest { volume_id, node_id, secrets });
    ControllerUnpublishVolumeResponse => Just(ControllerUnpublishVolumeResponse {});
    ValidateVolumeCapabilitiesRequest => (
        any::<VolumeId>(),
        string_map(),
        capabilities(),
        string_map(),
        any::<Secrets>(),
        string_map(),
    )
        .prop_map(
            |(volume_id, volume_context, volume_capabilities, parameters, secrets, mutable_parameters)| {
                ValidateVolumeCapabilitiesRequest {
                    volume_id,
                    volume_context,
                    volume_capabilities,
                    parameters,
                    secrets,
                    mutable_parameters,
                }
            },
        );
    Confirmed => (string_map(), capabilities(), string_map(), string_map()).prop_map(
        |(volume_context, volume_capabilities, parameters, mutable_parameters)| Confirmed {
            volume_context,
            volume_capabilities,
            parameters,
            mutable_parameters,
        },
    );
    ValidateVolumeCapabilitiesResponse => (proptest::option::of(any::<Confirmed>()), ".{0,64}")
        .prop_map(|(confirmed, message)| ValidateVolumeCapabilitiesResponse {
            confirmed,
            message: truncate(message, MAX_STRING),
        });
    ListVolumesRequest => (proptest::option::of(count()), proptest::option::of(short_string()))
        .prop_map(|(max_entries, starting_token)| ListVolumesRequest { max_entries, starting_token });
    VolumeStatus => (vec(any::<NodeId>(), 0..=3), proptest::option::of(any::<VolumeCondition>()))
        .prop_map(|(published_node_ids, volume_condition)| VolumeStatus { published_node_ids, volume_condition });
    ListVolumesEntry => (any::<Volume>(), proptest::option::of(any::<VolumeStatus>()))
        .prop_map(|(volume, status)| ListVolumesEntry { volume, status });
    ListVolumesResponse => (vec(any::<ListVolumesEntry>(), 0..=3), proptest::option::of(short_string()))
        .prop_map(|(entries, next_token)| ListVolumesResponse { entries, next_token });
    ControllerGetVolumeRequest => any::<VolumeId>().prop_map(|volume_id| ControllerGetVolumeRequest { volume_id });
    ControllerGetVolumeResponse => (any::<Volume>(), any::<VolumeStatus>())
        .prop_map(|(volume, status)| ControllerGetVolumeResponse { volume, status });
    ControllerModifyVolumeRequest => (any::<VolumeId>(), any::<Secrets>(), non_empty_map())
        .prop_map(|(volume_id, secrets, mutable_parameters)| ControllerModifyVolumeRequest {
            volume_id,
            secrets,
            mutable_parameters,
        });
    ControllerModifyVolumeResponse => Just(ControllerModifyVolumeResponse {});
    GetCapacityRequest => (vec(any::<VolumeCapability>(), 0..=3), string_map(), proptest::option::of(any::<Topology>()))
        .prop_map(|(volume_capabilities, parameters, accessible_topology)| GetCapacityRequest {
            volume_capabilities,
            parameters,
            accessible_topology,
        });
    GetCapacityResponse => (size_bytes(), proptest::option::of(size_bytes()), proptest::option::of(size_bytes()))
        .prop_map(|(available_capacity, maximum_volume_size, minimum_volume_size)| GetCapacityResponse {
            available_capacity,
            maximum_volume_size,
            minimum_volume_size,
        });
    ControllerGetCapabilitiesRequest => Just(ControllerGetCapabilitiesRequest {});
    ControllerGetCapabilitiesResponse => any::<ControllerCapabilities>()
        .prop_map(|capabilities| ControllerGetCapabilitiesResponse { capabilities });
    CreateSnapshotRequest => (any::<VolumeId>(), any::<SnapshotName>(), any::<Secrets>(), string_map())
        .prop_map(|(source_volume_id, name, secrets, parameters)| CreateSnapshotRequest {
            source_volume_id,
            name,
            secrets,
            parameters,
        });
    CreateSnapshotResponse => any::<Snapshot>().prop_map(|snapshot| CreateSnapshotResponse { snapshot });
    DeleteSnapshotRequest => (any::<SnapshotId>(), any::<Secrets>())
        .prop_map(|(snapshot_id, secrets)| DeleteSnapshotRequest { snapshot_id, secrets });
    DeleteSnapshotResponse => Just(DeleteSnapshotResponse {});
    ListSnapshotsRequest => (
        proptest::option::of(count()),
        proptest::option::of(short_string()),
        proptest::option::of(any::<VolumeId>()),
        proptest::option::of(any::<SnapshotId>()),
        any::<Secrets>(),
    )
        .prop_map(|(max_entries, starting_token, source_volume_id, snapshot_id, secrets)| ListSnapshotsRequest {
            max_entries,
            starting_token,
            source_volume_id,
            snapshot_id,
            secrets,
        });
    ListSnapshotsResponse => (vec(any::<Snapshot>(), 0..=3), proptest::option::of(short_string()))
        .prop_map(|(entries, next_token)| ListSnapshotsResponse { entries, next_token });
    GetSnapshotRequest => (any::<SnapshotId>(), any::<Secrets>())
        .prop_map(|(snapshot_id, secrets)| GetSnapshotRequest { snapshot_id, secrets });
    GetSnapshotResponse => any::<Snapshot>().prop_map(|snapshot| GetSnapshotResponse { snapshot });
    ControllerExpandVolumeRequest => (
        any::<VolumeId>(),
        any::<CapacityRange>(),
        any::<Secrets>(),
        proptest::option::of(any::<VolumeCapability>()),
    )
        .prop_map(|(volume_id, capacity_range, secrets, volume_capability)| ControllerExpandVolumeRequest {
            volume_id,
            capacity_range,
            secrets,
            volume_capability,
        });
    ControllerExpandVolumeResponse => (size_bytes(), any::<bool>())
        .prop_map(|(capacity_bytes, node_expansion_required)| ControllerExpandVolumeResponse {
            capacity_bytes,
            node_expansion_required,
        });
}

// Node.
arbitrary! {
    NodeStageVolumeRequest => (
        any::<VolumeId>(),
        string_map(),
        any::<NodePath>(),
        any::<VolumeCapability>(),
        any::<Secrets>(),
        string_map(),
    )
        .prop_map(
            |(volume_id, publish_context, staging_target_path, volume_capability, secrets, volume_context)| {
                NodeStageVolumeRequest {
                    volume_id,
                    publish_context,
                    staging_target_path,
                    volume_capability,
                    secrets,
                    volume_context,
                }
            },
        );
    NodeStageVolumeResponse => Just(NodeStageVolumeResponse {});
    NodeUnstageVolumeRequest => (any::<VolumeId>(), any::<NodePath>())
        .prop_map(|(volume_id, staging_target_path)| NodeUnstageVolumeRequest { volume_id, staging_target_path });
    NodeUnstageVolumeResponse => Just(NodeUnstageVolumeResponse {});
    NodePublishVolumeRequest => (
        any::<VolumeId>(),
        string_map(),
        proptest::option::of(any::<NodePath>()),
        any::<NodePath>(),
        any::<VolumeCapability>(),
        any::<bool>(),
        any::<Secrets>(),
        string_map(),
    )
        .prop_map(
            |(
                volume_id,
                publish_context,
                staging_target_path,
                target_path,
                volume_capability,
                readonly,
                secrets,
                volume_context,
            )| NodePublishVolumeRequest {
                volume_id,
                publish_context,
                staging_target_path,
                target_path,
                volume_capability,
                readonly,
                secrets,
                volume_context,
            },
        );
    NodePublishVolumeResponse => Just(NodePublishVolumeResponse {});
    NodeUnpublishVolumeRequest => (any::<VolumeId>(), any::<NodePath>())
        .prop_map(|(volume_id, target_path)| NodeUnpublishVolumeRequest { volume_id, target_path });
    NodeUnpublishVolumeResponse => Just(NodeUnpublishVolumeResponse {});
    NodeGetVolumeStatsRequest => (any::<VolumeId>(), any::<NodePath>(), proptest::option::of(any::<NodePath>()))
        .prop_map(|(volume_id, volume_path, staging_target_path)| NodeGetVolumeStatsRequest {
            volume_id,
            volume_path: ObjectBound::new(volume_path),
            staging_target_path: ObjectBound::new(staging_target_path),
        });
    UsageUnit => select(vec![UsageUnit::Bytes, UsageUnit::Inodes]);
    VolumeUsage => (any::<UsageUnit>(), size_bytes(), size_bytes(), size_bytes())
        .prop_map(|(unit, total, available, used)| VolumeUsage { unit, total, available, used });
    NodeGetVolumeStatsResponse => (vec(any::<VolumeUsage>(), 0..=2), proptest::option::of(any::<VolumeCondition>()))
        .prop_map(|(usage, volume_condition)| NodeGetVolumeStatsResponse { usage, volume_condition });
    NodeExpandVolumeRequest => (
        any::<VolumeId>(),
        any::<NodePath>(),
        proptest::option::of(any::<CapacityRange>()),
        proptest::option::of(any::<NodePath>()),
        proptest::option::of(any::<VolumeCapability>()),
        any::<Secrets>(),
    )
        .prop_map(
            |(volume_id, volume_path, capacity_range, staging_target_path, volume_capability, secrets)| {
                NodeExpandVolumeRequest {
                    volume_id,
                    volume_path: ObjectBound::new(volume_path),
                    capacity_range,
                    staging_target_path: ObjectBound::new(staging_target_path),
                    volume_capability,
                    secrets,
                }
            },
        );
    NodeExpandVolumeResponse => proptest::option::of(nonzero_size_bytes())
        .prop_map(|capacity_bytes| NodeExpandVolumeResponse { capacity_bytes });
    NodeGetCapabilitiesRequest => Just(NodeGetCapabilitiesRequest {});
    NodeGetCapabilitiesResponse => any::<NodeCapabilities>()
        .prop_map(|capabilities| NodeGetCapabilitiesResponse { capabilities });
    NodeGetInfoRequest => Just(NodeGetInfoRequest {});
    NodeGetInfoResponse => (
        any::<NodeId>(),
        proptest::option::of(nonzero_size_bytes()),
        proptest::option::of(any::<Topology>()),
    )
        .prop_map(|(node_id, max_volumes_per_node, accessible_topology)| NodeGetInfoResponse {
            node_id,
            max_volumes_per_node,
            accessible_topology,
        });
}

// GroupController.
arbitrary! {
    GroupControllerGetCapabilitiesRequest => Just(GroupControllerGetCapabilitiesRequest {});
    GroupControllerGetCapabilitiesResponse => any::<GroupControllerCapabilities>()
        .prop_map(|capabilities| GroupControllerGetCapabilitiesResponse { capabilities });
    CreateVolumeGroupSnapshotRequest => (
        any::<GroupSnapshotName>(),
        vec(any::<VolumeId>(), 1..=4),
        any::<Secrets>(),
        string_map(),
    )
        .prop_map(|(name, mut source_volume_ids, secrets, parameters)| CreateVolumeGroupSnapshotRequest {
            name,
            // Each volume once, as the type requires.
            source_volume_ids: {
                let mut seen = std::collections::BTreeSet::new();
                source_volume_ids.retain(|v| seen.insert(v.clone()));
                source_volume_ids
            },
            secrets,
            parameters,
        });
    // Every member snapshot carries the group's id, as the type documents,
    // and the group is ready exactly when every member is (the spec: MUST be
    // false if any member is not ready, SHOULD be true if all are).
    VolumeGroupSnapshot => (any::<GroupSnapshotId>(), vec(any::<Snapshot>(), 1..=3), timestamp())
        .prop_map(|(group_snapshot_id, mut snapshots, creation_time)| {
            // Each member its own snapshot id, as the type requires.
            let mut seen = std::collections::BTreeSet::new();
            snapshots.retain(|s| seen.insert(s.snapshot_id.clone()));
            VolumeGroupSnapshot {
                ready_to_use: snapshots.iter().all(|s| s.ready_to_use),
                snapshots: snapshots
                    .into_iter()
                    .map(|s| s.with_group_snapshot_id(group_snapshot_id.clone()))
                    .collect(),
                group_snapshot_id,
                creation_time,
            }
        });
    CreateVolumeGroupSnapshotResponse => any::<VolumeGroupSnapshot>()
        .prop_map(|group_snapshot| CreateVolumeGroupSnapshotResponse { group_snapshot });
    DeleteVolumeGroupSnapshotRequest => (any::<GroupSnapshotId>(), vec(any::<SnapshotId>(), 1..=4), any::<Secrets>())
        .prop_map(|(group_snapshot_id, snapshot_ids, secrets)| DeleteVolumeGroupSnapshotRequest {
            group_snapshot_id,
            snapshot_ids: ObjectBound::new(snapshot_ids),
            secrets,
        });
    DeleteVolumeGroupSnapshotResponse => Just(DeleteVolumeGroupSnapshotResponse {});
    GetVolumeGroupSnapshotRequest => (any::<GroupSnapshotId>(), vec(any::<SnapshotId>(), 1..=4), any::<Secrets>())
        .prop_map(|(group_snapshot_id, snapshot_ids, secrets)| GetVolumeGroupSnapshotRequest {
            group_snapshot_id,
            snapshot_ids: ObjectBound::new(snapshot_ids),
            secrets,
        });
    GetVolumeGroupSnapshotResponse => any::<VolumeGroupSnapshot>()
        .prop_map(|group_snapshot| GetVolumeGroupSnapshotResponse { group_snapshot });
}

// SnapshotMetadata.
arbitrary! {
    GetMetadataAllocatedRequest => (any::<SnapshotId>(), size_bytes(), proptest::option::of(count()), any::<Secrets>())
        .prop_map(|(snapshot_id, starting_offset, max_results, secrets)| GetMetadataAllocatedRequest {
            snapshot_id,
            starting_offset,
            max_results,
            secrets,
        });
    GetMetadataDeltaRequest => (
        any::<SnapshotId>(),
        any::<SnapshotId>(),
        size_bytes(),
        proptest::option::of(count()),
        any::<Secrets>(),
    )
        .prop_map(|(base_snapshot_id, target_snapshot_id, starting_offset, max_results, secrets)| {
            GetMetadataDeltaRequest { base_snapshot_id, target_snapshot_id, starting_offset, max_results, secrets }
        });
    BlockMetadataType => select(vec![BlockMetadataType::FixedLength, BlockMetadataType::VariableLength]);
    BlockMetadata => (size_bytes(), size_bytes()).prop_map(|(offset, size)| {
        // A range is never empty ("size_bytes MUST be greater than zero")
        // and never ends beyond what an int64 offset can address.
        let byte_offset = offset.min(MAX_SIZE - 1);
        BlockMetadata {
            byte_offset,
            size_bytes: size.clamp(1, MAX_SIZE - byte_offset),
        }
    });
    // Ranges in ascending offset order, never overlapping, all of one size
    // for FIXED_LENGTH; the volume is large enough to hold the last one.
    BlockMetadataResponse => (
        any::<BlockMetadataType>(),
        1u64..(1 << 24),
        vec((0u64..(1 << 30), 1u64..(1 << 24)), 0..=8),
        0u64..(1 << 30),
        0u64..(1 << 20),
    )
        .prop_map(|(block_metadata_type, fixed, ranges, start, slack)| {
            let mut offset = start;
            let block_metadata: Vec<BlockMetadata> = ranges
                .into_iter()
                .map(|(gap, size)| {
                    let size_bytes = match block_metadata_type {
                        BlockMetadataType::FixedLength => fixed,
                        BlockMetadataType::VariableLength => size,
                    };
                    let byte_offset = offset + gap;
                    offset = byte_offset + size_bytes;
                    BlockMetadata { byte_offset, size_bytes }
                })
                .collect();
            BlockMetadataResponse { block_metadata_type, volume_capacity_bytes: offset + slack, block_metadata }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    /// Generates `n` values and returns them, to check that the edge cases are reached.
    fn sample<T: Arbitrary>(n: usize) -> Vec<T> {
        let mut runner = TestRunner::deterministic();
        let s = any::<T>();
        (0..n)
            .map(|_| s.new_tree(&mut runner).expect("strategy").current())
            .collect()
    }

    #[test]
    fn edge_cases_are_reached() {
        let names = sample::<VolumeName>(400);
        assert!(
            names.iter().any(|n| n.as_str().len() == 128),
            "a 128-byte name"
        );
        assert!(
            names.iter().any(|n| !n.as_str().is_ascii()),
            "a unicode name"
        );
        assert!(
            names
                .iter()
                .any(|n| n.as_str().contains(['\t', '\n', '\r'])),
            "whitespace in a name"
        );
        assert!(
            sample::<NodeId>(400)
                .iter()
                .any(|n| n.as_str().len() == 256),
            "a 256-byte node id"
        );
        assert!(
            sample::<PluginName>(400)
                .iter()
                .any(|n| n.as_str().len() == 63),
            "a 63-char plugin name"
        );
        assert!(
            sample::<TopologyValue>(400)
                .iter()
                .any(|n| n.as_str().len() == 63),
            "a 63-char segment"
        );
        assert!(
            sample::<NodePath>(400)
                .iter()
                .any(|n| n.as_str().len() == 4096),
            "a 4096-byte path"
        );
        assert!(
            sample::<Secrets>(400).iter().any(|s| s
                .expose()
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                == 4096),
            "a 4 KiB secrets map"
        );
        assert!(
            sample::<CapacityRange>(400)
                .iter()
                .any(|r| r.limit_bytes == Some(i64::MAX as u64))
        );
    }
}
