//! The MUST rules of the responses, checked in place: the one place they
//! are written.
//!
//! [`super::ResponseRules::must`] checks a wire response without taking it
//! or building the typed value: a [`crate::Plugin`] checks every response
//! its driver builds, and every message of a SnapshotMetadata stream, before
//! sending it, and a copy of the response for a conversion whose result is
//! thrown away was the largest single cost of its per-call path. Field
//! paths are put together only for an error (the rules' verdicts never
//! depend on them).
//!
//! The typed conversions (`TryFrom<proto::…>` of the unary responses, of
//! each streamed block-metadata message, and of the nested messages
//! requests share with them: volume capabilities, topology, content
//! sources) run these checks and then build the typed value from the
//! checked message without checking again (`FromChecked`), so a conversion
//! cannot disagree with its check. `tests/properties.rs` still holds the two
//! to the same answer on random wire responses, valid and broken.

use std::collections::BTreeMap;

use crate::CsiError;
use crate::ids::{
    GroupSnapshotId, NodeId, PluginName, SnapshotId, TopologyKey, TopologyValue, VolumeId,
};
use crate::proto;
use crate::validate::{self, at, index};

/// A field path, rendered only when a rule is broken.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    /// A path already put together (the empty one names the message
    /// itself): where a conversion that names its fields eagerly hands a
    /// nested message over.
    Named(&'a str),
    /// A child field (or a dotted path of them) of a path.
    Field(&'a Path<'a>, &'static str),
    /// An entry of a repeated field.
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn at(&'a self, name: &'static str) -> Path<'a> {
        Path::Field(self, name)
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }

    /// The path as the typed conversion names it (`volume.volume_id`,
    /// `entries[0].snapshot`).
    fn render(&self) -> String {
        match self {
            Path::Named(path) => (*path).to_string(),
            Path::Field(parent, name) => at(&parent.render(), name),
            Path::Index(parent, i) => index(&parent.render(), *i),
        }
    }
}

/// Runs `rule`, whose verdict does not depend on the field's name, naming
/// the field only when the rule is broken.
#[inline]
fn named<T>(path: Path<'_>, rule: impl Fn(&str) -> Result<T, CsiError>) -> Result<(), CsiError> {
    validate::lazily(|| path.render(), rule).map(drop)
}

fn missing(path: Path<'_>) -> CsiError {
    CsiError::missing(path.render())
}

fn map(path: Path<'_>, map: &BTreeMap<String, String>) -> Result<(), CsiError> {
    named(path, |f| validate::map_size(f, map))
}

fn non_negative(path: Path<'_>, value: i64) -> Result<(), CsiError> {
    // The common case without the rule's call: a streamed block-metadata
    // message holds two of these per range.
    if value >= 0 {
        return Ok(());
    }
    named(path, |f| validate::non_negative(f, value))
}

/// A message's MUST rules under a field path.
pub(crate) trait Must {
    /// `Ok` when the message follows its MUST rules; otherwise the first
    /// broken one, naming its field under `path`.
    fn must(&self, path: Path<'_>) -> Result<(), CsiError>;
}

impl<T: Must> Must for Option<T> {
    /// A REQUIRED message.
    #[inline]
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        match self {
            Some(m) => m.must(path),
            None => Err(missing(path)),
        }
    }
}

/// An optional message: absent is fine.
fn optional<T: Must>(path: Path<'_>, m: &Option<T>) -> Result<(), CsiError> {
    m.as_ref().map_or(Ok(()), |m| m.must(path))
}

fn list<T: Must>(path: Path<'_>, items: &[T]) -> Result<(), CsiError> {
    for (i, item) in items.iter().enumerate() {
        item.must(path.index(i))?;
    }
    Ok(())
}

fn non_empty_list<T: Must>(path: Path<'_>, items: &[T]) -> Result<(), CsiError> {
    if items.is_empty() {
        return Err(CsiError::invalid(
            path.render(),
            "this field is REQUIRED: at least one entry",
        ));
    }
    list(path, items)
}

/// The rules of a topology's segments, checked in place; `field` names the
/// map, and is called only when a rule is broken: topology is checked in
/// every CreateVolume request and response.
pub(crate) fn check_segments(
    field: &dyn Fn() -> String,
    segments: &BTreeMap<String, String>,
) -> Result<(), CsiError> {
    validate::lazily(field, |f| validate::map_size(f, segments))?;
    let key_field = |k: &str| format!("{}[{k:?}]", field());
    // Keys are unique ignoring ASCII case. A few keys (the usual case) are
    // compared with the earlier ones in place; more go through a set of
    // lower-cased copies.
    let mut lower = (segments.len() > 8).then(std::collections::BTreeSet::new);
    for (i, (k, v)) in segments.iter().enumerate() {
        let repeated = match &mut lower {
            Some(set) => !set.insert(k.to_ascii_lowercase()),
            None => segments.keys().take(i).any(|e| e.eq_ignore_ascii_case(k)),
        };
        if repeated {
            return Err(CsiError::invalid(
                key_field(k),
                "topology keys are case-insensitive and must be unique",
            ));
        }
        validate::lazily(|| key_field(k), |f| TopologyKey::check(f, k))?;
        validate::lazily(|| key_field(k), |f| TopologyValue::check(f, v))?;
    }
    Ok(())
}

impl Must for proto::Topology {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        let path = path.at("segments");
        check_segments(&|| path.render(), &self.segments)
    }
}

impl Must for proto::VolumeContentSource {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        use proto::volume_content_source::Type;
        match &self.r#type {
            Some(Type::Snapshot(s)) => named(path.at("snapshot.snapshot_id"), |f| {
                SnapshotId::check(f, &s.snapshot_id)
            }),
            Some(Type::Volume(v)) => named(path.at("volume.volume_id"), |f| {
                VolumeId::check(f, &v.volume_id)
            }),
            None => Err(CsiError::invalid(
                path.at("type").render(),
                "exactly one of `snapshot` or `volume` must be set",
            )),
        }
    }
}

impl Must for proto::Volume {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        named(path.at("volume_id"), |f| {
            VolumeId::check(f, &self.volume_id)
        })?;
        non_negative(path.at("capacity_bytes"), self.capacity_bytes)?;
        map(path.at("volume_context"), &self.volume_context)?;
        optional(path.at("content_source"), &self.content_source)?;
        list(path.at("accessible_topology"), &self.accessible_topology)
    }
}

impl Must for proto::Snapshot {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        named(path.at("snapshot_id"), |f| {
            SnapshotId::check(f, &self.snapshot_id)
        })?;
        named(path.at("source_volume_id"), |f| {
            VolumeId::check(f, &self.source_volume_id)
        })?;
        non_negative(path.at("size_bytes"), self.size_bytes)?;
        named(path.at("creation_time"), |f| {
            validate::timestamp(f, self.creation_time)
        })?;
        if self.group_snapshot_id.is_empty() {
            Ok(())
        } else {
            named(path.at("group_snapshot_id"), |f| {
                GroupSnapshotId::check(f, &self.group_snapshot_id)
            })
        }
    }
}

impl Must for proto::VolumeCapability {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        use proto::volume_capability::AccessType;
        match &self.access_type {
            Some(AccessType::Block(_)) => {}
            Some(AccessType::Mount(m)) => {
                let mount = path.at("mount");
                let flags_bytes: usize = m.mount_flags.iter().map(String::len).sum();
                if flags_bytes > validate::MAX_MOUNT_FLAGS_BYTES {
                    return Err(CsiError::invalid(
                        mount.at("mount_flags").render(),
                        format!(
                            "the flags together must be at most {} bytes, got {flags_bytes}",
                            validate::MAX_MOUNT_FLAGS_BYTES
                        ),
                    ));
                }
                named(mount.at("fs_type"), |f| validate::string(f, &m.fs_type))?;
                named(mount.at("volume_mount_group"), |f| {
                    validate::string(f, &m.volume_mount_group)
                })?;
            }
            None => {
                return Err(CsiError::invalid(
                    path.at("access_type").render(),
                    "exactly one of `block` or `mount` must be set",
                ));
            }
        }
        self.access_mode.must(path.at("access_mode"))
    }
}

impl Must for proto::volume_capability::AccessMode {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        use proto::volume_capability::access_mode::Mode;
        match Mode::try_from(self.mode) {
            Ok(Mode::Unknown) => Err(CsiError::invalid(
                path.at("mode").render(),
                "this field is REQUIRED: the mode must not be UNKNOWN",
            )),
            Ok(_) => Ok(()),
            Err(_) => Err(CsiError::invalid(
                path.at("mode").render(),
                format!("unknown access mode {}", self.mode),
            )),
        }
    }
}

impl Must for proto::validate_volume_capabilities_response::Confirmed {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        map(path.at("volume_context"), &self.volume_context)?;
        non_empty_list(path.at("volume_capabilities"), &self.volume_capabilities)?;
        map(path.at("parameters"), &self.parameters)?;
        map(path.at("mutable_parameters"), &self.mutable_parameters)
    }
}

impl Must for proto::list_volumes_response::Entry {
    /// The status has tolerated rules only (see `crate::check`).
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        self.volume.must(path.at("volume"))
    }
}

impl Must for proto::list_snapshots_response::Entry {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        self.snapshot.must(path.at("snapshot"))
    }
}

impl Must for proto::VolumeGroupSnapshot {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        named(path.at("group_snapshot_id"), |f| {
            GroupSnapshotId::check(f, &self.group_snapshot_id)
        })?;
        let snapshots = path.at("snapshots");
        non_empty_list(snapshots, &self.snapshots)?;
        // "If this message is inside a VolumeGroupSnapshot message, the value
        // MUST be the same as the group_snapshot_id in that message."
        for (i, s) in self.snapshots.iter().enumerate() {
            if s.group_snapshot_id != self.group_snapshot_id {
                return Err(CsiError::invalid(
                    snapshots.index(i).at("group_snapshot_id").render(),
                    format!("must equal the group's id {:?}", self.group_snapshot_id),
                ));
            }
        }
        // A snapshot id "MUST contain enough information to uniquely identify this specific
        // snapshot": an id listed twice is one snapshot counted twice, or two under one id.
        if let Some((first, again)) =
            validate::first_repeat(self.snapshots.iter().map(|s| s.snapshot_id.as_str()))
        {
            return Err(CsiError::invalid(
                snapshots.index(again).at("snapshot_id").render(),
                format!(
                    "repeats {}[{first}]'s: each member of a group is its own snapshot",
                    snapshots.render()
                ),
            ));
        }
        // "If any snapshot in the list of snapshots in this message have
        // ready_to_use set to false, the SP MUST set this field to false."
        if self.ready_to_use && self.snapshots.iter().any(|s| !s.ready_to_use) {
            return Err(CsiError::invalid(
                path.at("ready_to_use").render(),
                "must be false while any member snapshot is not ready to use",
            ));
        }
        named(path.at("creation_time"), |f| {
            validate::timestamp(f, self.creation_time)
        })
    }
}

impl Must for proto::VolumeUsage {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        use proto::volume_usage::Unit;
        if !matches!(Unit::try_from(self.unit), Ok(Unit::Bytes | Unit::Inodes)) {
            return Err(CsiError::invalid(
                path.at("unit").render(),
                "this field is REQUIRED: BYTES or INODES",
            ));
        }
        non_negative(path.at("total"), self.total)?;
        non_negative(path.at("available"), self.available)?;
        non_negative(path.at("used"), self.used)
    }
}

impl Must for proto::BlockMetadata {
    fn must(&self, path: Path<'_>) -> Result<(), CsiError> {
        non_negative(path.at("byte_offset"), self.byte_offset)?;
        // "size_bytes MUST be greater than zero" (`BlockMetadata`): an empty
        // range describes no data, and would let two tuples share an offset
        // that "MUST be strictly increasing".
        if self.size_bytes > 0 {
            return Ok(());
        }
        named(path.at("size_bytes"), |f| {
            Err::<(), _>(CsiError::invalid(
                f,
                format!("must be greater than zero, got {}", self.size_bytes),
            ))
        })
    }
}

/// The MUST rules of one streamed block-metadata message
/// (`GetMetadataAllocated` and `GetMetadataDelta` stream the same fields):
/// a known type, offsets not negative, sizes greater than zero, then the ranges in
/// ascending order without overlap, all of one size for `FIXED_LENGTH`. The
/// order of the ranges is checked after every range's own fields, so the
/// first error is the one the checks of the fields alone would give.
fn block_metadata_message(
    block_metadata_type: i32,
    volume_capacity_bytes: i64,
    ranges: &[proto::BlockMetadata],
) -> Result<(), CsiError> {
    use proto::BlockMetadataType;
    let fixed = match BlockMetadataType::try_from(block_metadata_type) {
        Ok(BlockMetadataType::FixedLength) => true,
        Ok(BlockMetadataType::VariableLength) => false,
        _ => {
            return Err(CsiError::invalid(
                "block_metadata_type",
                "this field is REQUIRED: FIXED_LENGTH or VARIABLE_LENGTH",
            ));
        }
    };
    non_negative(ROOT.at("volume_capacity_bytes"), volume_capacity_bytes)?;
    let path = ROOT.at("block_metadata");
    list(path, ranges)?;
    // Every offset and size was found non-negative above, so `unsigned_abs`
    // is the value itself, and the end of a range (at most 2 * i64::MAX)
    // fits a u64.
    for (i, pair) in ranges.windows(2).enumerate() {
        let (prev, cur) = (&pair[0], &pair[1]);
        let end = prev
            .byte_offset
            .unsigned_abs()
            .saturating_add(prev.size_bytes.unsigned_abs());
        if cur.byte_offset.unsigned_abs() < end {
            return Err(CsiError::invalid(
                path.index(i + 1).render(),
                format!(
                    "ranges must be in ascending order and must not overlap: starts at {} before the previous range ends at {end}",
                    cur.byte_offset
                ),
            ));
        }
        if fixed && cur.size_bytes != prev.size_bytes {
            return Err(CsiError::invalid(
                path.index(i + 1).render(),
                format!(
                    "FIXED_LENGTH ranges must all have one size: {} after {}",
                    cur.size_bytes, prev.size_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// The MUST rules of each response, in field order (the order of the first
/// error): every unary response, and each message of the two streams.
pub(crate) trait MustResponse {
    fn must(&self) -> Result<(), CsiError>;
}

const ROOT: Path<'static> = Path::Named("");

impl MustResponse for proto::GetPluginInfoResponse {
    fn must(&self) -> Result<(), CsiError> {
        named(ROOT.at("name"), |f| PluginName::check(f, &self.name))?;
        crate::identity::check_vendor_version(&self.vendor_version)?;
        map(ROOT.at("manifest"), &self.manifest)
    }
}

impl MustResponse for proto::CreateVolumeResponse {
    fn must(&self) -> Result<(), CsiError> {
        self.volume.must(ROOT.at("volume"))
    }
}

impl MustResponse for proto::ControllerPublishVolumeResponse {
    fn must(&self) -> Result<(), CsiError> {
        map(ROOT.at("publish_context"), &self.publish_context)
    }
}

impl MustResponse for proto::ValidateVolumeCapabilitiesResponse {
    fn must(&self) -> Result<(), CsiError> {
        optional(ROOT.at("confirmed"), &self.confirmed)?;
        validate::string("message", &self.message)
    }
}

impl MustResponse for proto::ListVolumesResponse {
    fn must(&self) -> Result<(), CsiError> {
        list(ROOT.at("entries"), &self.entries)?;
        validate::string("next_token", &self.next_token)
    }
}

impl MustResponse for proto::ControllerGetVolumeResponse {
    /// The status has tolerated rules only, but is REQUIRED.
    fn must(&self) -> Result<(), CsiError> {
        if self.status.is_none() {
            return Err(CsiError::missing("status"));
        }
        self.volume.must(ROOT.at("volume"))
    }
}

impl MustResponse for proto::GetCapacityResponse {
    fn must(&self) -> Result<(), CsiError> {
        non_negative(ROOT.at("available_capacity"), self.available_capacity)?;
        if let Some(v) = self.maximum_volume_size {
            non_negative(ROOT.at("maximum_volume_size"), v)?;
        }
        if let Some(v) = self.minimum_volume_size {
            non_negative(ROOT.at("minimum_volume_size"), v)?;
        }
        Ok(())
    }
}

impl MustResponse for proto::CreateSnapshotResponse {
    fn must(&self) -> Result<(), CsiError> {
        self.snapshot.must(ROOT.at("snapshot"))
    }
}

impl MustResponse for proto::GetSnapshotResponse {
    fn must(&self) -> Result<(), CsiError> {
        self.snapshot.must(ROOT.at("snapshot"))
    }
}

impl MustResponse for proto::ListSnapshotsResponse {
    fn must(&self) -> Result<(), CsiError> {
        list(ROOT.at("entries"), &self.entries)?;
        validate::string("next_token", &self.next_token)
    }
}

impl MustResponse for proto::ControllerExpandVolumeResponse {
    fn must(&self) -> Result<(), CsiError> {
        non_negative(ROOT.at("capacity_bytes"), self.capacity_bytes)
    }
}

impl MustResponse for proto::CreateVolumeGroupSnapshotResponse {
    fn must(&self) -> Result<(), CsiError> {
        self.group_snapshot.must(ROOT.at("group_snapshot"))
    }
}

impl MustResponse for proto::GetVolumeGroupSnapshotResponse {
    fn must(&self) -> Result<(), CsiError> {
        self.group_snapshot.must(ROOT.at("group_snapshot"))
    }
}

impl MustResponse for proto::NodeGetVolumeStatsResponse {
    /// The condition has tolerated rules only.
    fn must(&self) -> Result<(), CsiError> {
        list(ROOT.at("usage"), &self.usage)
    }
}

impl MustResponse for proto::NodeExpandVolumeResponse {
    fn must(&self) -> Result<(), CsiError> {
        non_negative(ROOT.at("capacity_bytes"), self.capacity_bytes)
    }
}

impl MustResponse for proto::NodeGetInfoResponse {
    fn must(&self) -> Result<(), CsiError> {
        non_negative(ROOT.at("max_volumes_per_node"), self.max_volumes_per_node)?;
        named(ROOT.at("node_id"), |f| NodeId::check(f, &self.node_id))?;
        optional(ROOT.at("accessible_topology"), &self.accessible_topology)
    }
}

impl MustResponse for proto::GetMetadataAllocatedResponse {
    fn must(&self) -> Result<(), CsiError> {
        block_metadata_message(
            self.block_metadata_type,
            self.volume_capacity_bytes,
            &self.block_metadata,
        )
    }
}

impl MustResponse for proto::GetMetadataDeltaResponse {
    fn must(&self) -> Result<(), CsiError> {
        block_metadata_message(
            self.block_metadata_type,
            self.volume_capacity_bytes,
            &self.block_metadata,
        )
    }
}

/// Responses whose every field is free, or has tolerated rules only: the
/// empty ones, `Probe` and the capability lists (an unknown entry is
/// tolerated).
macro_rules! no_must_rules {
    ($($resp:ident),* $(,)?) => {
        $(
            impl MustResponse for proto::$resp {
                fn must(&self) -> Result<(), CsiError> {
                    Ok(())
                }
            }
        )*
    };
}

no_must_rules! {
    GetPluginCapabilitiesResponse,
    ProbeResponse,
    DeleteVolumeResponse,
    ControllerUnpublishVolumeResponse,
    ControllerGetCapabilitiesResponse,
    DeleteSnapshotResponse,
    ControllerModifyVolumeResponse,
    GroupControllerGetCapabilitiesResponse,
    DeleteVolumeGroupSnapshotResponse,
    NodeStageVolumeResponse,
    NodeUnstageVolumeResponse,
    NodePublishVolumeResponse,
    NodeUnpublishVolumeResponse,
    NodeGetCapabilitiesResponse,
}
