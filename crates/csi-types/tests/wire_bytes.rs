//! "A Go or C++ CSI client would see identical wire bytes."
//!
//! For fully populated messages of every service, built with the typed API:
//! convert to the prost type, encode, decode with the raw prost type, compare,
//! and convert back to the typed message. Then read the encoding with a small
//! independent protobuf reader and check that every field appears under the
//! field number and wire type the CSI v1.12 specification gives it (the
//! numbers below are written out from the spec, not taken from our proto),
//! and compare a few small messages with golden bytes worked out by hand from
//! the protobuf encoding rules, as any conforming encoder produces them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csi_types::prelude::*;
use csi_types::{
    bound::ObjectBound,
    capabilities::{ControllerCapabilities, NodeCapabilities, PluginCapabilities},
    controller::{
        ControllerExpandVolumeRequest, ControllerGetCapabilitiesResponse,
        ControllerGetVolumeResponse, CreateVolumeRequest, CreateVolumeResponse,
        GetCapacityResponse, ListSnapshotsRequest, ListSnapshotsResponse, ListVolumesEntry,
        ListVolumesResponse, VolumeStatus,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotRequest, VolumeGroupSnapshot,
    },
    identity::{GetPluginCapabilitiesResponse, GetPluginInfoResponse, ProbeResponse},
    ids::{
        GroupSnapshotId, GroupSnapshotName, NodeId, NodePath, PluginName, SnapshotId, VolumeId,
        VolumeName,
    },
    node::{
        NodeExpandVolumeRequest, NodeGetCapabilitiesResponse, NodeGetInfoResponse,
        NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodeStageVolumeRequest, UsageUnit,
        VolumeUsage,
    },
    proto,
    redact::Secrets,
    snapshot_metadata::{
        BlockMetadata, BlockMetadataResponse, BlockMetadataType, GetMetadataAllocatedRequest,
        GetMetadataDeltaRequest,
    },
    types::{
        AccessMode, AccessType, CapacityRange, Map, MountVolume, Snapshot, Topology,
        TopologyRequirement, Volume, VolumeCapability, VolumeCondition, VolumeContentSource,
    },
};
use prost::Message;

// ---------------------------------------------------------------------------
// A minimal protobuf wire reader, independent of prost.

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// One field occurrence: number, wire type and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Fixed(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().expect("truncated varint");
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// Every field of one message level, in encoding order.
fn read(mut b: &[u8]) -> Vec<(u32, u8, Value<'_>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b);
        let (number, wire_type) = ((tag >> 3) as u32, (tag & 7) as u8);
        let value = match wire_type {
            VARINT => Value::Varint(varint(&mut b)),
            I64 => {
                let (v, rest) = b.split_at(8);
                b = rest;
                Value::Fixed(u64::from_le_bytes(v.try_into().unwrap()))
            }
            LEN => {
                let n = varint(&mut b) as usize;
                let (v, rest) = b.split_at(n);
                b = rest;
                Value::Bytes(v)
            }
            I32 => {
                let (v, rest) = b.split_at(4);
                b = rest;
                Value::Fixed(u64::from(u32::from_le_bytes(v.try_into().unwrap())))
            }
            other => panic!("wire type {other} in field {number}"),
        };
        out.push((number, wire_type, value));
    }
    out
}

/// The distinct (field number, wire type) pairs of one message level, sorted.
fn layout(b: &[u8]) -> Vec<(u32, u8)> {
    let mut v: Vec<(u32, u8)> = read(b).into_iter().map(|(n, t, _)| (n, t)).collect();
    v.sort();
    v.dedup();
    v
}

/// The payloads of field `number` (a submessage, string or map entry).
fn sub(b: &[u8], number: u32) -> Vec<&[u8]> {
    read(b)
        .into_iter()
        .filter(|(n, _, _)| *n == number)
        .map(|(_, _, v)| match v {
            Value::Bytes(b) => b,
            other => panic!("field {number} is not length-delimited: {other:?}"),
        })
        .collect()
}

fn first(b: &[u8], number: u32) -> &[u8] {
    sub(b, number)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("field {number} absent"))
}

fn varint_of(b: &[u8], number: u32) -> u64 {
    read(b)
        .into_iter()
        .find_map(|(n, _, v)| match (n, v) {
            (n, Value::Varint(x)) if n == number => Some(x),
            _ => None,
        })
        .unwrap_or_else(|| panic!("varint field {number} absent"))
}

/// A `map<string, string>` field, read back from its entries (key = 1, value = 2).
fn map_of(b: &[u8], number: u32) -> BTreeMap<String, String> {
    sub(b, number)
        .into_iter()
        .map(|entry| {
            assert_eq!(layout(entry), [(1, LEN), (2, LEN)], "map entry layout");
            let s = |n| String::from_utf8(first(entry, n).to_vec()).unwrap();
            (s(1), s(2))
        })
        .collect()
}

fn string_of(b: &[u8], number: u32) -> String {
    String::from_utf8(first(b, number).to_vec()).unwrap()
}

/// Typed → prost → bytes → raw prost → typed; returns the bytes.
fn through_the_wire<T, P>(typed: &T) -> Vec<u8>
where
    T: Clone + Debug + PartialEq + TryInto<P, Error: Debug> + TryFrom<P, Error = CsiError>,
    P: Message + Default + PartialEq + Debug + Clone,
{
    let wire: P = typed.clone().try_into().expect("sizes within int64");
    let bytes = wire.encode_to_vec();
    assert_eq!(bytes.len(), wire.encoded_len());
    let decoded = P::decode(bytes.as_slice()).expect("the raw prost type decodes our bytes");
    assert_eq!(decoded, wire);
    assert_eq!(
        &T::try_from(decoded).expect("and the typed layer accepts it"),
        typed
    );
    // Encoding is deterministic (maps are BTreeMaps): the same bytes again.
    assert_eq!(P::decode(bytes.as_slice()).unwrap().encode_to_vec(), bytes);
    bytes
}

// ---------------------------------------------------------------------------
// Fully populated typed messages.

fn map(kv: &[(&str, &str)]) -> Map {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secrets() -> Secrets {
    Secrets::new(map(&[("password", "hunter2"), ("user.name", "admin")])).unwrap()
}

fn topology(zone: &str) -> Topology {
    Topology::new([("topology.example.com/zone", zone), ("rack", "r1")]).unwrap()
}

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount(MountVolume {
            fs_type: Some("xfs".into()),
            mount_flags: vec!["noatime".into(), "discard".into()],
            volume_mount_group: Some("1000".into()),
        }),
        access_mode: AccessMode::MultiNodeMultiWriter,
    }
}

fn time(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn snapshot(id: &str) -> Snapshot {
    Snapshot::new(
        SnapshotId::new(id).unwrap(),
        VolumeId::new("vol-1").unwrap(),
        1 << 30,
        time(1_700_000_000, 5),
        true,
    )
    .with_group_snapshot_id(GroupSnapshotId::new("group-1").unwrap())
}

fn volume() -> Volume {
    Volume::new(VolumeId::new("vol-1").unwrap(), 10 << 30)
        .with_context("pool", "fast")
        .with_content_source(VolumeContentSource::Snapshot(
            SnapshotId::new("snap-0").unwrap(),
        ))
        .with_accessible_topology(topology("z1"))
        .with_accessible_topology(topology("z2"))
}

fn create_volume_request() -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: VolumeName::new("pvc-0123 ünïcode").unwrap(),
        capacity_range: Some(CapacityRange::new(Some(1 << 30), Some(2 << 30)).unwrap()),
        volume_capabilities: vec![
            mount_capability(),
            VolumeCapability::block(AccessMode::SingleNodeWriter),
        ],
        parameters: map(&[("type", "ssd")]),
        secrets: secrets(),
        volume_content_source: Some(VolumeContentSource::Volume(
            VolumeId::new("vol-src").unwrap(),
        )),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![topology("z1"), topology("z2")],
            preferred: vec![topology("z2")],
        }),
        mutable_parameters: map(&[("iops", "3000")]),
    }
}

// ---------------------------------------------------------------------------
// Identity.

#[test]
fn identity_messages() {
    let info =
        GetPluginInfoResponse::new(PluginName::new("local.csi.example.com").unwrap(), "1.2.3")
            .unwrap()
            .with_manifest("commit", "abc123");
    let b = through_the_wire::<_, proto::GetPluginInfoResponse>(&info);
    assert_eq!(layout(&b), [(1, LEN), (2, LEN), (3, LEN)]);
    assert_eq!(string_of(&b, 1), "local.csi.example.com");
    assert_eq!(string_of(&b, 2), "1.2.3");
    assert_eq!(map_of(&b, 3), map(&[("commit", "abc123")]));

    let caps = GetPluginCapabilitiesResponse {
        capabilities: PluginCapabilities::all(),
    };
    let b = through_the_wire::<_, proto::GetPluginCapabilitiesResponse>(&caps);
    assert_eq!(layout(&b), [(1, LEN)]);
    // PluginCapability: service = 1, volume_expansion = 2, each { type = 1 }.
    let kinds: Vec<(u32, u64)> = sub(&b, 1)
        .into_iter()
        .map(|c| {
            let (n, _, v) = read(c)[0];
            let Value::Bytes(inner) = v else {
                panic!("capability is a message")
            };
            (n, varint_of(inner, 1))
        })
        .collect();
    assert_eq!(kinds, [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2)]);

    // google.protobuf.BoolValue: Some(false) is an empty submessage, not absent.
    assert_eq!(
        through_the_wire::<_, proto::ProbeResponse>(&ProbeResponse::not_ready()),
        [0x0a, 0x00]
    );
    assert_eq!(
        through_the_wire::<_, proto::ProbeResponse>(&ProbeResponse::ready()),
        [0x0a, 0x02, 0x08, 0x01]
    );
    assert!(through_the_wire::<_, proto::ProbeResponse>(&ProbeResponse::default()).is_empty());
}

// ---------------------------------------------------------------------------
// Controller.

#[test]
fn create_volume_request_layout() {
    let req = create_volume_request();
    let b = through_the_wire::<_, proto::CreateVolumeRequest>(&req);
    // name 1, capacity_range 2, volume_capabilities 3, parameters 4, secrets 5,
    // volume_content_source 6, accessibility_requirements 7, mutable_parameters 8.
    assert_eq!(layout(&b), (1..=8).map(|n| (n, LEN)).collect::<Vec<_>>());
    assert_eq!(b[0], 0x0a, "name is field 1, length-delimited");
    assert_eq!(string_of(&b, 1), "pvc-0123 ünïcode");
    // CapacityRange: required_bytes = 1, limit_bytes = 2.
    assert_eq!(varint_of(first(&b, 2), 1), 1 << 30);
    assert_eq!(varint_of(first(&b, 2), 2), 2 << 30);
    // VolumeCapability: block = 1 | mount = 2, access_mode = 3 { mode = 1 }.
    let caps = sub(&b, 3);
    assert_eq!(caps.len(), 2);
    assert_eq!(layout(caps[0]), [(2, LEN), (3, LEN)]);
    let mount = first(caps[0], 2);
    assert_eq!(layout(mount), [(1, LEN), (2, LEN), (3, LEN)]);
    assert_eq!(string_of(mount, 1), "xfs");
    assert_eq!(
        sub(mount, 2),
        [b"noatime".as_slice(), b"discard".as_slice()]
    );
    assert_eq!(string_of(mount, 3), "1000");
    assert_eq!(
        varint_of(first(caps[0], 3), 1),
        5,
        "MULTI_NODE_MULTI_WRITER = 5"
    );
    assert_eq!(layout(caps[1]), [(1, LEN), (3, LEN)]);
    assert_eq!(first(caps[1], 1), b"", "BlockVolume is an empty message");
    assert_eq!(varint_of(first(caps[1], 3), 1), 1, "SINGLE_NODE_WRITER = 1");
    assert_eq!(map_of(&b, 4), map(&[("type", "ssd")]));
    assert_eq!(&map_of(&b, 5), secrets().expose());
    // VolumeContentSource: snapshot = 1, volume = 2 { volume_id = 1 }.
    assert_eq!(string_of(first(first(&b, 6), 2), 1), "vol-src");
    // TopologyRequirement: requisite = 1, preferred = 2; Topology: segments = 1.
    let req7 = first(&b, 7);
    assert_eq!(layout(req7), [(1, LEN), (2, LEN)]);
    assert_eq!(sub(req7, 1).len(), 2);
    assert_eq!(
        map_of(sub(req7, 2)[0], 1),
        map(&[("rack", "r1"), ("topology.example.com/zone", "z2")])
    );
    assert_eq!(map_of(&b, 8), map(&[("iops", "3000")]));
    // The tags themselves: secrets is field 5 (0x2a), mutable_parameters 8 (0x42).
    let tags: Vec<u8> = read(&b)
        .iter()
        .map(|(n, t, _)| ((n << 3) as u8) | t)
        .collect();
    assert!(tags.contains(&0x2a) && tags.contains(&0x42), "{tags:02x?}");
}

#[test]
fn create_volume_request_golden_bytes() {
    let req = CreateVolumeRequest {
        name: VolumeName::new("n").unwrap(),
        capacity_range: None,
        volume_capabilities: vec![VolumeCapability::block(AccessMode::SingleNodeWriter)],
        parameters: Map::new(),
        secrets: Secrets::new(map(&[("k", "v")])).unwrap(),
        volume_content_source: None,
        accessibility_requirements: None,
        mutable_parameters: map(&[("a", "b")]),
    };
    #[rustfmt::skip]
    let golden = [
        0x0a, 0x01, b'n',                                   // 1: name
        0x1a, 0x06, 0x0a, 0x00, 0x1a, 0x02, 0x08, 0x01,     // 3: { block {}, access_mode { mode: 1 } }
        0x2a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v',     // 5: secrets { "k": "v" }
        0x42, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b',     // 8: mutable_parameters { "a": "b" }
    ];
    assert_eq!(
        through_the_wire::<_, proto::CreateVolumeRequest>(&req),
        golden
    );
}

#[test]
fn controller_responses_and_requests() {
    let b =
        through_the_wire::<_, proto::CreateVolumeResponse>(&CreateVolumeResponse::new(volume()));
    assert_eq!(layout(&b), [(1, LEN)]);
    // Volume: capacity_bytes = 1, volume_id = 2, volume_context = 3,
    // content_source = 4, accessible_topology = 5.
    let v = first(&b, 1);
    assert_eq!(
        layout(v),
        [(1, VARINT), (2, LEN), (3, LEN), (4, LEN), (5, LEN)]
    );
    assert_eq!(varint_of(v, 1), 10 << 30);
    assert_eq!(string_of(v, 2), "vol-1");
    assert_eq!(
        string_of(first(first(v, 4), 1), 1),
        "snap-0",
        "content_source.snapshot.snapshot_id"
    );
    assert_eq!(sub(v, 5).len(), 2);

    let status = VolumeStatus {
        published_node_ids: vec![
            NodeId::new("node-a").unwrap(),
            NodeId::new("node-b").unwrap(),
        ],
        volume_condition: Some(VolumeCondition::abnormal("degraded: 1 of 2 legs")),
    };
    let list = ListVolumesResponse {
        entries: vec![ListVolumesEntry {
            volume: volume(),
            status: Some(status.clone()),
        }],
        next_token: Some("page-2".into()),
    };
    let b = through_the_wire::<_, proto::ListVolumesResponse>(&list);
    assert_eq!(layout(&b), [(1, LEN), (2, LEN)]);
    let entry = first(&b, 1);
    assert_eq!(layout(entry), [(1, LEN), (2, LEN)]);
    // VolumeStatus: published_node_ids = 1, volume_condition = 2 { abnormal = 1, message = 2 }.
    let st = first(entry, 2);
    assert_eq!(layout(st), [(1, LEN), (2, LEN)]);
    assert_eq!(sub(st, 1), [b"node-a".as_slice(), b"node-b".as_slice()]);
    assert_eq!(layout(first(st, 2)), [(1, VARINT), (2, LEN)]);

    let get = ControllerGetVolumeResponse::new(volume(), status);
    let b = through_the_wire::<_, proto::ControllerGetVolumeResponse>(&get);
    assert_eq!(layout(&b), [(1, LEN), (2, LEN)]);

    let cap = GetCapacityResponse {
        available_capacity: 1 << 40,
        maximum_volume_size: Some(0),
        minimum_volume_size: Some(4096),
    };
    let b = through_the_wire::<_, proto::GetCapacityResponse>(&cap);
    // Int64Value wrappers: Some(0) is present as an empty submessage.
    assert_eq!(layout(&b), [(1, VARINT), (2, LEN), (3, LEN)]);
    assert_eq!(first(&b, 2), b"");
    assert_eq!(varint_of(first(&b, 3), 1), 4096);

    let list = ListSnapshotsRequest {
        max_entries: Some(100),
        starting_token: Some("t".into()),
        source_volume_id: Some(VolumeId::new("vol-1").unwrap()),
        snapshot_id: Some(SnapshotId::new("snap-1").unwrap()),
        secrets: secrets(),
    };
    let b = through_the_wire::<_, proto::ListSnapshotsRequest>(&list);
    assert_eq!(
        layout(&b),
        [(1, VARINT), (2, LEN), (3, LEN), (4, LEN), (5, LEN)]
    );
    assert_eq!(varint_of(&b, 1), 100);

    let expand = ControllerExpandVolumeRequest {
        volume_id: VolumeId::new("vol-1").unwrap(),
        capacity_range: CapacityRange::exactly(20 << 30),
        secrets: secrets(),
        volume_capability: Some(mount_capability()),
    };
    let b = through_the_wire::<_, proto::ControllerExpandVolumeRequest>(&expand);
    assert_eq!(layout(&b), [(1, LEN), (2, LEN), (3, LEN), (4, LEN)]);

    let b = through_the_wire::<_, proto::ListSnapshotsResponse>(&ListSnapshotsResponse {
        entries: vec![snapshot("snap-1")],
        next_token: Some("n".into()),
    });
    // ListSnapshotsResponse.Entry { snapshot = 1 }; Snapshot: size_bytes = 1,
    // snapshot_id = 2, source_volume_id = 3, creation_time = 4, ready_to_use = 5,
    // group_snapshot_id = 6.
    let s = first(first(&b, 1), 1);
    assert_eq!(
        layout(s),
        [
            (1, VARINT),
            (2, LEN),
            (3, LEN),
            (4, LEN),
            (5, VARINT),
            (6, LEN)
        ]
    );
    // Timestamp: seconds = 1, nanos = 2.
    let ts = first(s, 4);
    assert_eq!((varint_of(ts, 1), varint_of(ts, 2)), (1_700_000_000, 5));

    let caps = ControllerGetCapabilitiesResponse {
        capabilities: ControllerCapabilities::all(),
    };
    let b = through_the_wire::<_, proto::ControllerGetCapabilitiesResponse>(&caps);
    // ControllerServiceCapability { rpc = 1 { type = 1 } }, RPC types 1..=15.
    let types: Vec<u64> = sub(&b, 1)
        .into_iter()
        .map(|c| varint_of(first(c, 1), 1))
        .collect();
    assert_eq!(types, (1..=15).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Node.

#[test]
fn node_messages() {
    let publish = NodePublishVolumeRequest {
        volume_id: VolumeId::new("vol-1").unwrap(),
        publish_context: map(&[("device", "/dev/nvme0n1")]),
        staging_target_path: Some(NodePath::new("/var/lib/kubelet/plugins/staging/vol-1").unwrap()),
        target_path: NodePath::new("/var/lib/kubelet/pods/p/volumes/vol-1/mount").unwrap(),
        volume_capability: mount_capability(),
        readonly: true,
        secrets: secrets(),
        volume_context: map(&[("pool", "fast")]),
    };
    let b = through_the_wire::<_, proto::NodePublishVolumeRequest>(&publish);
    // volume_id 1, publish_context 2, staging_target_path 3, target_path 4,
    // volume_capability 5, readonly 6, secrets 7, volume_context 8.
    assert_eq!(
        layout(&b),
        [
            (1, LEN),
            (2, LEN),
            (3, LEN),
            (4, LEN),
            (5, LEN),
            (6, VARINT),
            (7, LEN),
            (8, LEN)
        ]
    );
    assert_eq!(
        string_of(&b, 4),
        "/var/lib/kubelet/pods/p/volumes/vol-1/mount"
    );
    assert_eq!(varint_of(&b, 6), 1);
    assert_eq!(&map_of(&b, 7), secrets().expose());

    let stage = NodeStageVolumeRequest {
        volume_id: VolumeId::new("vol-1").unwrap(),
        publish_context: map(&[("device", "/dev/nvme0n1")]),
        staging_target_path: NodePath::new("/staging/vol-1").unwrap(),
        volume_capability: VolumeCapability::block(AccessMode::SingleNodeMultiWriter),
        secrets: secrets(),
        volume_context: map(&[("pool", "fast")]),
    };
    let b = through_the_wire::<_, proto::NodeStageVolumeRequest>(&stage);
    assert_eq!(layout(&b), (1..=6).map(|n| (n, LEN)).collect::<Vec<_>>());
    assert_eq!(
        varint_of(first(first(&b, 4), 3), 1),
        7,
        "SINGLE_NODE_MULTI_WRITER = 7"
    );

    let expand = NodeExpandVolumeRequest {
        volume_id: VolumeId::new("vol-1").unwrap(),
        volume_path: ObjectBound::new(NodePath::new("/mnt/vol-1").unwrap()),
        capacity_range: Some(CapacityRange::new(Some(1 << 30), None).unwrap()),
        staging_target_path: ObjectBound::new(Some(NodePath::new("/staging/vol-1").unwrap())),
        volume_capability: Some(mount_capability()),
        secrets: secrets(),
    };
    let b = through_the_wire::<_, proto::NodeExpandVolumeRequest>(&expand);
    assert_eq!(layout(&b), (1..=6).map(|n| (n, LEN)).collect::<Vec<_>>());

    let stats = NodeGetVolumeStatsResponse {
        usage: vec![
            VolumeUsage {
                unit: UsageUnit::Bytes,
                total: 100,
                available: 60,
                used: 40,
            },
            VolumeUsage {
                unit: UsageUnit::Inodes,
                total: 10,
                available: 7,
                used: 3,
            },
        ],
        volume_condition: Some(VolumeCondition::healthy("ok")),
    };
    let b = through_the_wire::<_, proto::NodeGetVolumeStatsResponse>(&stats);
    assert_eq!(layout(&b), [(1, LEN), (2, LEN)]);
    // VolumeUsage: available = 1, total = 2, used = 3, unit = 4 (BYTES = 1, INODES = 2).
    let u: Vec<[u64; 4]> = sub(&b, 1)
        .into_iter()
        .map(|u| {
            [
                varint_of(u, 1),
                varint_of(u, 2),
                varint_of(u, 3),
                varint_of(u, 4),
            ]
        })
        .collect();
    assert_eq!(u, [[60, 100, 40, 1], [7, 10, 3, 2]]);

    let info = NodeGetInfoResponse::new(NodeId::new("n1").unwrap())
        .with_max_volumes(16)
        .with_topology(topology("z1"));
    let b = through_the_wire::<_, proto::NodeGetInfoResponse>(&info);
    assert_eq!(layout(&b), [(1, LEN), (2, VARINT), (3, LEN)]);
    assert_eq!(
        &b[..6],
        [0x0a, 0x02, b'n', b'1', 0x10, 0x10],
        "node_id = 1, max_volumes_per_node = 2"
    );

    let caps = NodeGetCapabilitiesResponse {
        capabilities: NodeCapabilities::all(),
    };
    let b = through_the_wire::<_, proto::NodeGetCapabilitiesResponse>(&caps);
    let types: Vec<u64> = sub(&b, 1)
        .into_iter()
        .map(|c| varint_of(first(c, 1), 1))
        .collect();
    assert_eq!(types, (1..=6).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// GroupController.

#[test]
fn group_controller_messages() {
    let req = CreateVolumeGroupSnapshotRequest {
        name: GroupSnapshotName::new("group-snap\tweekly").unwrap(),
        source_volume_ids: vec![
            VolumeId::new("vol-1").unwrap(),
            VolumeId::new("vol-2").unwrap(),
        ],
        secrets: secrets(),
        parameters: map(&[("consistency", "crash")]),
    };
    let b = through_the_wire::<_, proto::CreateVolumeGroupSnapshotRequest>(&req);
    // name 1, source_volume_ids 2, secrets 3, parameters 4.
    assert_eq!(layout(&b), [(1, LEN), (2, LEN), (3, LEN), (4, LEN)]);
    assert_eq!(sub(&b, 2), [b"vol-1".as_slice(), b"vol-2".as_slice()]);
    assert_eq!(&map_of(&b, 3), secrets().expose());

    let resp = CreateVolumeGroupSnapshotResponse::new(VolumeGroupSnapshot {
        group_snapshot_id: GroupSnapshotId::new("group-1").unwrap(),
        snapshots: vec![snapshot("snap-1"), snapshot("snap-2")],
        creation_time: time(1_700_000_000, 999_999_999),
        ready_to_use: true,
    });
    let b = through_the_wire::<_, proto::CreateVolumeGroupSnapshotResponse>(&resp);
    // VolumeGroupSnapshot: group_snapshot_id 1, snapshots 2, creation_time 3, ready_to_use 4.
    let g = first(&b, 1);
    assert_eq!(layout(g), [(1, LEN), (2, LEN), (3, LEN), (4, VARINT)]);
    assert_eq!(sub(g, 2).len(), 2);
    assert_eq!(varint_of(first(g, 3), 2), 999_999_999);
    assert_eq!(
        string_of(sub(g, 2)[1], 6),
        "group-1",
        "each member names its group"
    );

    let get = GetVolumeGroupSnapshotRequest {
        group_snapshot_id: GroupSnapshotId::new("group-1").unwrap(),
        snapshot_ids: ObjectBound::new(vec![SnapshotId::new("snap-1").unwrap()]),
        secrets: secrets(),
    };
    let b = through_the_wire::<_, proto::GetVolumeGroupSnapshotRequest>(&get);
    assert_eq!(layout(&b), [(1, LEN), (2, LEN), (3, LEN)]);
    let del = DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: get.group_snapshot_id.clone(),
        snapshot_ids: get.snapshot_ids.clone(),
        secrets: secrets(),
    };
    let b2 = through_the_wire::<_, proto::DeleteVolumeGroupSnapshotRequest>(&del);
    assert_eq!(b, b2, "Get and Delete share their layout");
}

// ---------------------------------------------------------------------------
// SnapshotMetadata.

#[test]
fn snapshot_metadata_messages() {
    let delta = GetMetadataDeltaRequest {
        base_snapshot_id: SnapshotId::new("snap-1").unwrap(),
        target_snapshot_id: SnapshotId::new("snap-2").unwrap(),
        starting_offset: 1 << 20,
        max_results: Some(256),
        secrets: secrets(),
    };
    let b = through_the_wire::<_, proto::GetMetadataDeltaRequest>(&delta);
    // base 1, target 2, starting_offset 3, max_results 4, secrets 5.
    assert_eq!(
        layout(&b),
        [(1, LEN), (2, LEN), (3, VARINT), (4, VARINT), (5, LEN)]
    );
    assert_eq!((varint_of(&b, 3), varint_of(&b, 4)), (1 << 20, 256));

    let allocated = GetMetadataAllocatedRequest {
        snapshot_id: SnapshotId::new("snap-1").unwrap(),
        starting_offset: 4096,
        max_results: Some(1),
        secrets: secrets(),
    };
    let b = through_the_wire::<_, proto::GetMetadataAllocatedRequest>(&allocated);
    // snapshot_id 1, starting_offset 2, max_results 3, secrets 4.
    assert_eq!(layout(&b), [(1, LEN), (2, VARINT), (3, VARINT), (4, LEN)]);

    let resp = BlockMetadataResponse {
        block_metadata_type: BlockMetadataType::VariableLength,
        volume_capacity_bytes: 1 << 30,
        block_metadata: vec![
            BlockMetadata {
                byte_offset: 0,
                size_bytes: 4096,
            },
            BlockMetadata {
                byte_offset: 1 << 20,
                size_bytes: 8192,
            },
        ],
    };
    let b = through_the_wire::<_, proto::GetMetadataDeltaResponse>(&resp);
    let b2 = through_the_wire::<_, proto::GetMetadataAllocatedResponse>(&resp);
    assert_eq!(b, b2, "both streams carry the same layout");
    #[rustfmt::skip]
    let golden = [
        0x08, 0x02,                               // 1: block_metadata_type = VARIABLE_LENGTH (2)
        0x10, 0x80, 0x80, 0x80, 0x80, 0x04,       // 2: volume_capacity_bytes = 1 << 30
        0x1a, 0x03, 0x10, 0x80, 0x20,             // 3: { size_bytes: 4096 } (offset 0 omitted)
        0x1a, 0x07, 0x08, 0x80, 0x80, 0x40, 0x10, 0x80, 0x40, // 3: { 1 << 20, 8192 }
    ];
    assert_eq!(b, golden);
}

#[test]
fn the_reader_is_a_real_protobuf_reader() {
    // Cross-check the reader on a message prost encoded from raw fields, so
    // that the layout assertions above cannot pass vacuously.
    let raw = proto::CapacityRange {
        required_bytes: 300,
        limit_bytes: i64::MAX,
    };
    let b = raw.encode_to_vec();
    assert_eq!(&b[..3], [0x08, 0xac, 0x02], "300 as a varint");
    assert_eq!(
        read(&b),
        [
            (1, VARINT, Value::Varint(300)),
            (2, VARINT, Value::Varint(i64::MAX as u64))
        ]
    );
    let neg = proto::CapacityRange {
        required_bytes: -1,
        limit_bytes: 0,
    }
    .encode_to_vec();
    assert_eq!(neg.len(), 11, "negative int64 takes ten varint bytes");
    assert_eq!(read(&neg), [(1, VARINT, Value::Varint(u64::MAX))]);
}
