//! Wire fidelity: the project's `proto/csi.proto` against the CSI v1.12
//! specification's own protobuf.
//!
//! When `../shared/reference/csi-spec-v1.12.0.md` is present (next to the
//! workspace), its ```` ```protobuf ```` blocks are extracted and parsed with
//! the same reader `build.rs` uses, and every message's fields (name, number,
//! type, label, oneof, options), every enum value (name, number, options) and
//! every service method (name, request, response, streaming, options) is
//! compared with `proto/csi.proto`. The test prints what it compared; when
//! the spec is absent it prints that it skipped.
//!
//! Independently of the spec, every message and enum of `csi.proto` must be a
//! generated Rust type: the lists below name each one and are checked against
//! the proto, so a missing or misnamed type fails to compile or fails here.

#[path = "../build/proto_model.rs"]
mod proto_model;

use std::collections::BTreeSet;
use std::path::PathBuf;

use csi_types::proto;
use proto_model::ProtoModel;

/// The specification, relative to the workspace root's parent.
fn spec_path() -> PathBuf {
    // Resolve symlinks first: the crate may be built through a symlinked workspace.
    let manifest = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.join("../../../shared/reference/csi-spec-v1.12.0.md")
}

fn project() -> ProtoModel {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/csi.proto");
    let src = std::fs::read_to_string(path).expect("proto/csi.proto is readable");
    proto_model::parse(&src).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn spec() -> Option<ProtoModel> {
    let path = spec_path();
    let Ok(markdown) = std::fs::read_to_string(&path) else {
        println!("wire fidelity: skipped, {} is absent", path.display());
        return None;
    };
    let blocks = proto_model::protobuf_blocks(&markdown);
    assert!(
        !blocks.trim().is_empty(),
        "{} has no protobuf blocks",
        path.display()
    );
    Some(proto_model::parse(&blocks).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[derive(Default, Debug)]
struct Compared {
    messages: usize,
    fields: usize,
    enums: usize,
    enum_values: usize,
    services: usize,
    methods: usize,
}

/// Compares `ours` with `spec`, returning what matched and every difference.
fn compare(spec: &ProtoModel, ours: &ProtoModel) -> (Compared, Vec<String>) {
    let mut c = Compared::default();
    let mut diffs = Vec::new();

    for (name, want) in &spec.messages {
        let Some(got) = ours.messages.get(name) else {
            diffs.push(format!("message {name} is missing"));
            continue;
        };
        if want.options != got.options {
            diffs.push(format!(
                "message {name}: options {:?} != spec {:?}",
                got.options, want.options
            ));
        }
        let mut all_fields_match = want.fields.len() == got.fields.len();
        for w in &want.fields {
            match got.fields.iter().find(|g| g.name == w.name) {
                Some(g) if g == w => c.fields += 1,
                Some(g) => {
                    all_fields_match = false;
                    diffs.push(format!("{name}.{}: {g:?} != spec {w:?}", w.name));
                }
                None => {
                    all_fields_match = false;
                    diffs.push(format!("{name}.{} is missing", w.name));
                }
            }
        }
        for g in &got.fields {
            if !want.fields.iter().any(|w| w.name == g.name) {
                diffs.push(format!("{name}.{} is not in the spec", g.name));
            }
        }
        // Declaration order matters for nothing on the wire, but a reordering
        // usually means a hand edit; report it too.
        let order =
            |m: &proto_model::Message| m.fields.iter().map(|f| f.number).collect::<Vec<_>>();
        if all_fields_match && order(want) != order(got) {
            diffs.push(format!(
                "{name}: field order {:?} != spec {:?}",
                order(got),
                order(want)
            ));
        }
        if all_fields_match && want.options == got.options {
            c.messages += 1;
        }
    }
    for name in ours.messages.keys() {
        if !spec.messages.contains_key(name) {
            diffs.push(format!("message {name} is not in the spec"));
        }
    }

    for (name, want) in &spec.enums {
        let Some(got) = ours.enums.get(name) else {
            diffs.push(format!("enum {name} is missing"));
            continue;
        };
        for w in &want.values {
            match got.values.iter().find(|g| g.0 == w.0) {
                Some(g) if g == w => c.enum_values += 1,
                Some(g) => diffs.push(format!("{name}.{}: {g:?} != spec {w:?}", w.0)),
                None => diffs.push(format!("{name}.{} is missing", w.0)),
            }
        }
        for g in &got.values {
            if !want.values.iter().any(|w| w.0 == g.0) {
                diffs.push(format!("{name}.{} is not in the spec", g.0));
            }
        }
        if want == got {
            c.enums += 1;
        }
    }
    for name in ours.enums.keys() {
        if !spec.enums.contains_key(name) {
            diffs.push(format!("enum {name} is not in the spec"));
        }
    }

    for (name, want) in &spec.services {
        let Some(got) = ours.services.get(name) else {
            diffs.push(format!("service {name} is missing"));
            continue;
        };
        for w in want {
            match got.iter().find(|g| g.name == w.name) {
                Some(g) if g == w => c.methods += 1,
                Some(g) => diffs.push(format!("{name}.{}: {g:?} != spec {w:?}", w.name)),
                None => diffs.push(format!("{name}.{} is missing", w.name)),
            }
        }
        for g in got {
            if !want.iter().any(|w| w.name == g.name) {
                diffs.push(format!("{name}.{} is not in the spec", g.name));
            }
        }
        if want == got {
            c.services += 1;
        }
    }
    for name in ours.services.keys() {
        if !spec.services.contains_key(name) {
            diffs.push(format!("service {name} is not in the spec"));
        }
    }
    (c, diffs)
}

#[test]
fn proto_matches_the_spec() {
    let Some(spec) = spec() else { return };
    let ours = project();
    let (c, diffs) = compare(&spec, &ours);
    println!(
        "wire fidelity: compared {} messages, {} fields, {} enums, {} enum values, {} services, {} methods with the spec",
        c.messages, c.fields, c.enums, c.enum_values, c.services, c.methods
    );
    assert!(
        diffs.is_empty(),
        "csi.proto differs from the spec:\n{}",
        diffs.join("\n")
    );

    let spec_fields: usize = spec.messages.values().map(|m| m.fields.len()).sum();
    let spec_values: usize = spec.enums.values().map(|e| e.values.len()).sum();
    let spec_methods: usize = spec.services.values().map(Vec::len).sum();
    // Everything the spec defines was compared, and there is something to compare.
    assert_eq!(c.messages, spec.messages.len());
    assert_eq!(c.fields, spec_fields);
    assert_eq!(c.enums, spec.enums.len());
    assert_eq!(c.enum_values, spec_values);
    assert_eq!(c.services, spec.services.len());
    assert_eq!(c.methods, spec_methods);
    assert!(c.messages > 0 && c.fields > 0 && c.enums > 0 && c.enum_values > 0 && c.methods > 0);
    // CSI v1.12 has five services; SnapshotMetadata streams its two responses.
    assert_eq!(
        spec.services.len(),
        5,
        "{:?}",
        spec.services.keys().collect::<Vec<_>>()
    );
    let streaming: Vec<_> = ours
        .services
        .values()
        .flatten()
        .filter(|m| m.server_streaming)
        .map(|m| &m.name)
        .collect();
    assert_eq!(streaming, ["GetMetadataAllocated", "GetMetadataDelta"]);
}

#[test]
fn the_comparison_catches_differences() {
    // The comparison itself must be able to fail: damage a copy of our proto
    // in each way the spec could be contradicted and count the reports.
    let ours = project();
    let (_, clean) = compare(&ours, &ours);
    assert!(clean.is_empty(), "{clean:?}");

    let mut damaged = ours.clone();
    let f = damaged.messages.get_mut("CreateVolumeRequest").unwrap();
    f.fields
        .iter_mut()
        .find(|f| f.name == "mutable_parameters")
        .unwrap()
        .number = 9;
    f.fields
        .iter_mut()
        .find(|f| f.name == "secrets")
        .unwrap()
        .options
        .clear();
    let m = damaged.messages.get_mut("VolumeCapability").unwrap();
    m.fields
        .iter_mut()
        .find(|f| f.name == "mount")
        .unwrap()
        .oneof = None;
    let e = damaged
        .enums
        .get_mut("VolumeCapability.AccessMode.Mode")
        .unwrap();
    e.values.last_mut().unwrap().1 += 1;
    let s = damaged.services.get_mut("SnapshotMetadata").unwrap();
    s[0].server_streaming = false;
    damaged.messages.remove("ProbeResponse");
    let (c, diffs) = compare(&ours, &damaged);
    assert_eq!(diffs.len(), 6, "{diffs:#?}");
    assert_eq!(c.messages, ours.messages.len() - 3);
}

#[test]
fn secret_fields_match_the_spec() {
    let ours: Vec<(String, String)> = proto::SECRET_FIELDS
        .iter()
        .map(|(m, f)| (m.to_string(), f.to_string()))
        .collect();
    // The generated list is what csi.proto marks.
    assert_eq!(ours, project().secret_fields());
    assert!(
        ours.iter()
            .any(|(m, f)| m == "CreateVolumeRequest" && f == "secrets")
    );
    let Some(spec) = spec() else { return };
    println!(
        "wire fidelity: compared {} csi_secret fields with the spec",
        ours.len()
    );
    assert_eq!(ours, spec.secret_fields());
}

/// Lists `"Proto.Name" => rust::path` pairs as (proto name, Rust type name),
/// requiring each to be a prost message (or enumeration) at compile time.
macro_rules! types {
    ($check:ident: $($name:literal => $($path:ident)::+,)*) => {
        vec![$(($name, $check::<proto::$($path)::+>())),*]
    };
}

fn message<T: prost::Message + Default>() -> &'static str {
    std::any::type_name::<T>()
}

fn enumeration<T: Copy + Into<i32> + TryFrom<i32>>() -> &'static str {
    std::any::type_name::<T>()
}

/// `csi_types::proto::list_volumes_response::Entry` and
/// `ListVolumesResponse.Entry` both become `listvolumesresponse.entry`.
fn normalize_rust(type_name: &str) -> String {
    let path = type_name
        .strip_prefix("csi_types::proto::")
        .unwrap_or_else(|| panic!("{type_name} is not in proto"));
    path.split("::")
        .map(|p| p.replace('_', "").to_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

fn normalize_proto(name: &str) -> String {
    name.to_lowercase()
}

fn check_types(kind: &str, types: &[(&str, &'static str)], proto_names: BTreeSet<&String>) {
    for (name, rust) in types {
        assert_eq!(
            normalize_rust(rust),
            normalize_proto(name),
            "{kind} {name} is listed as {rust}"
        );
    }
    let listed: BTreeSet<&str> = types.iter().map(|(n, _)| *n).collect();
    let defined: BTreeSet<&str> = proto_names.into_iter().map(String::as_str).collect();
    assert_eq!(listed, defined, "every {kind} and only those");
}

#[test]
fn every_message_and_enum_is_a_rust_type() {
    let messages = types! { message:
        "GetPluginInfoRequest" => GetPluginInfoRequest,
        "GetPluginInfoResponse" => GetPluginInfoResponse,
        "GetPluginCapabilitiesRequest" => GetPluginCapabilitiesRequest,
        "GetPluginCapabilitiesResponse" => GetPluginCapabilitiesResponse,
        "PluginCapability" => PluginCapability,
        "PluginCapability.Service" => plugin_capability::Service,
        "PluginCapability.VolumeExpansion" => plugin_capability::VolumeExpansion,
        "ProbeRequest" => ProbeRequest,
        "ProbeResponse" => ProbeResponse,
        "CreateVolumeRequest" => CreateVolumeRequest,
        "VolumeContentSource" => VolumeContentSource,
        "VolumeContentSource.SnapshotSource" => volume_content_source::SnapshotSource,
        "VolumeContentSource.VolumeSource" => volume_content_source::VolumeSource,
        "CreateVolumeResponse" => CreateVolumeResponse,
        "VolumeCapability" => VolumeCapability,
        "VolumeCapability.BlockVolume" => volume_capability::BlockVolume,
        "VolumeCapability.MountVolume" => volume_capability::MountVolume,
        "VolumeCapability.AccessMode" => volume_capability::AccessMode,
        "CapacityRange" => CapacityRange,
        "Volume" => Volume,
        "TopologyRequirement" => TopologyRequirement,
        "Topology" => Topology,
        "DeleteVolumeRequest" => DeleteVolumeRequest,
        "DeleteVolumeResponse" => DeleteVolumeResponse,
        "ControllerPublishVolumeRequest" => ControllerPublishVolumeRequest,
        "ControllerPublishVolumeResponse" => ControllerPublishVolumeResponse,
        "ControllerUnpublishVolumeRequest" => ControllerUnpublishVolumeRequest,
        "ControllerUnpublishVolumeResponse" => ControllerUnpublishVolumeResponse,
        "ValidateVolumeCapabilitiesRequest" => ValidateVolumeCapabilitiesRequest,
        "ValidateVolumeCapabilitiesResponse" => ValidateVolumeCapabilitiesResponse,
        "ValidateVolumeCapabilitiesResponse.Confirmed" => validate_volume_capabilities_response::Confirmed,
        "ListVolumesRequest" => ListVolumesRequest,
        "ListVolumesResponse" => ListVolumesResponse,
        "ListVolumesResponse.VolumeStatus" => list_volumes_response::VolumeStatus,
        "ListVolumesResponse.Entry" => list_volumes_response::Entry,
        "ControllerGetVolumeRequest" => ControllerGetVolumeRequest,
        "ControllerGetVolumeResponse" => ControllerGetVolumeResponse,
        "ControllerGetVolumeResponse.VolumeStatus" => controller_get_volume_response::VolumeStatus,
        "ControllerModifyVolumeRequest" => ControllerModifyVolumeRequest,
        "ControllerModifyVolumeResponse" => ControllerModifyVolumeResponse,
        "GetCapacityRequest" => GetCapacityRequest,
        "GetCapacityResponse" => GetCapacityResponse,
        "ControllerGetCapabilitiesRequest" => ControllerGetCapabilitiesRequest,
        "ControllerGetCapabilitiesResponse" => ControllerGetCapabilitiesResponse,
        "ControllerServiceCapability" => ControllerServiceCapability,
        "ControllerServiceCapability.RPC" => controller_service_capability::Rpc,
        "CreateSnapshotRequest" => CreateSnapshotRequest,
        "CreateSnapshotResponse" => CreateSnapshotResponse,
        "Snapshot" => Snapshot,
        "DeleteSnapshotRequest" => DeleteSnapshotRequest,
        "DeleteSnapshotResponse" => DeleteSnapshotResponse,
        "ListSnapshotsRequest" => ListSnapshotsRequest,
        "ListSnapshotsResponse" => ListSnapshotsResponse,
        "ListSnapshotsResponse.Entry" => list_snapshots_response::Entry,
        "GetSnapshotRequest" => GetSnapshotRequest,
        "GetSnapshotResponse" => GetSnapshotResponse,
        "ControllerExpandVolumeRequest" => ControllerExpandVolumeRequest,
        "ControllerExpandVolumeResponse" => ControllerExpandVolumeResponse,
        "NodeStageVolumeRequest" => NodeStageVolumeRequest,
        "NodeStageVolumeResponse" => NodeStageVolumeResponse,
        "NodeUnstageVolumeRequest" => NodeUnstageVolumeRequest,
        "NodeUnstageVolumeResponse" => NodeUnstageVolumeResponse,
        "NodePublishVolumeRequest" => NodePublishVolumeRequest,
        "NodePublishVolumeResponse" => NodePublishVolumeResponse,
        "NodeUnpublishVolumeRequest" => NodeUnpublishVolumeRequest,
        "NodeUnpublishVolumeResponse" => NodeUnpublishVolumeResponse,
        "NodeGetVolumeStatsRequest" => NodeGetVolumeStatsRequest,
        "NodeGetVolumeStatsResponse" => NodeGetVolumeStatsResponse,
        "VolumeUsage" => VolumeUsage,
        "VolumeCondition" => VolumeCondition,
        "NodeGetCapabilitiesRequest" => NodeGetCapabilitiesRequest,
        "NodeGetCapabilitiesResponse" => NodeGetCapabilitiesResponse,
        "NodeServiceCapability" => NodeServiceCapability,
        "NodeServiceCapability.RPC" => node_service_capability::Rpc,
        "NodeGetInfoRequest" => NodeGetInfoRequest,
        "NodeGetInfoResponse" => NodeGetInfoResponse,
        "NodeExpandVolumeRequest" => NodeExpandVolumeRequest,
        "NodeExpandVolumeResponse" => NodeExpandVolumeResponse,
        "GroupControllerGetCapabilitiesRequest" => GroupControllerGetCapabilitiesRequest,
        "GroupControllerGetCapabilitiesResponse" => GroupControllerGetCapabilitiesResponse,
        "GroupControllerServiceCapability" => GroupControllerServiceCapability,
        "GroupControllerServiceCapability.RPC" => group_controller_service_capability::Rpc,
        "CreateVolumeGroupSnapshotRequest" => CreateVolumeGroupSnapshotRequest,
        "CreateVolumeGroupSnapshotResponse" => CreateVolumeGroupSnapshotResponse,
        "VolumeGroupSnapshot" => VolumeGroupSnapshot,
        "DeleteVolumeGroupSnapshotRequest" => DeleteVolumeGroupSnapshotRequest,
        "DeleteVolumeGroupSnapshotResponse" => DeleteVolumeGroupSnapshotResponse,
        "GetVolumeGroupSnapshotRequest" => GetVolumeGroupSnapshotRequest,
        "GetVolumeGroupSnapshotResponse" => GetVolumeGroupSnapshotResponse,
        "BlockMetadata" => BlockMetadata,
        "GetMetadataAllocatedRequest" => GetMetadataAllocatedRequest,
        "GetMetadataAllocatedResponse" => GetMetadataAllocatedResponse,
        "GetMetadataDeltaRequest" => GetMetadataDeltaRequest,
        "GetMetadataDeltaResponse" => GetMetadataDeltaResponse,
    };
    let enums = types! { enumeration:
        "PluginCapability.Service.Type" => plugin_capability::service::Type,
        "PluginCapability.VolumeExpansion.Type" => plugin_capability::volume_expansion::Type,
        "VolumeCapability.AccessMode.Mode" => volume_capability::access_mode::Mode,
        "ControllerServiceCapability.RPC.Type" => controller_service_capability::rpc::Type,
        "VolumeUsage.Unit" => volume_usage::Unit,
        "NodeServiceCapability.RPC.Type" => node_service_capability::rpc::Type,
        "GroupControllerServiceCapability.RPC.Type" => group_controller_service_capability::rpc::Type,
        "BlockMetadataType" => BlockMetadataType,
    };
    let ours = project();
    check_types("message", &messages, ours.messages.keys().collect());
    check_types("enum", &enums, ours.enums.keys().collect());
    if let Some(spec) = spec() {
        check_types("message", &messages, spec.messages.keys().collect());
        check_types("enum", &enums, spec.enums.keys().collect());
        println!(
            "wire fidelity: {} messages and {} enums of the spec are Rust types",
            messages.len(),
            enums.len()
        );
    }
}

/// The `extend google.protobuf.*Options { ... }` blocks (the `csi_secret`,
/// `alpha_*` option definitions and their numbers), comments removed and
/// whitespace collapsed. The model reader skips them, so they are compared
/// as text.
fn extensions(src: &str) -> Vec<String> {
    let text: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("extend ") {
        let block = &rest[start..];
        let end = block.find('}').map_or(block.len(), |e| e + 1);
        out.push(
            block[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
        rest = &block[end..];
    }
    out.sort();
    out
}

#[test]
fn option_extensions_match_the_spec() {
    let ours =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/csi.proto")).unwrap();
    let ours = extensions(&ours);
    assert!(
        ours.iter().any(|e| e.contains("csi_secret = 1059")),
        "{ours:#?}"
    );
    let Ok(markdown) = std::fs::read_to_string(spec_path()) else {
        println!("wire fidelity: skipped the option extensions, the spec is absent");
        return;
    };
    let spec = extensions(&proto_model::protobuf_blocks(&markdown));
    println!(
        "wire fidelity: compared {} option extension blocks with the spec",
        spec.len()
    );
    assert_eq!(ours, spec);
}
