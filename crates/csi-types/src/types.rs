//! Typed versions of the messages shared by several RPCs: volume
//! capabilities, capacity ranges, topology, content sources, volumes and
//! snapshots.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::CsiError;
use crate::check::must::{Must, Path, check_segments};
use crate::ids::{GroupSnapshotId, SnapshotId, TopologyKey, TopologyValue, VolumeId};
use crate::proto;
use crate::validate::{self, index};

/// A `map<string, string>` field such as `parameters` or `volume_context`.
pub type Map = BTreeMap<String, String>;

pub(crate) use crate::validate::at;

/// Converts a nested wire message into its typed form, naming fields from `field`.
pub(crate) trait FromProto<P>: Sized {
    fn from_proto(field: &str, p: P) -> Result<Self, CsiError>;
}

/// Converts a typed message into its wire form, naming fields under
/// `field` (put together only for an error): the conversion fails where the
/// wire cannot carry a value (a size above `i64::MAX`), rather than sending
/// another one.
pub(crate) trait IntoWire<P> {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<P, CsiError>;
}

/// The path of a field at the root of a message, for [`IntoWire`].
pub(crate) fn root(name: &'static str) -> impl Fn() -> String {
    move || name.to_string()
}

/// Converts an optional nested message into its wire form under `field`.
pub(crate) fn optional_into_wire<T: IntoWire<P>, P>(
    field: &dyn Fn() -> String,
    t: Option<T>,
) -> Result<Option<P>, CsiError> {
    t.map(|t| t.into_wire(field)).transpose()
}

/// Converts a list into its wire form, naming entry `i` `field[i]`.
pub(crate) fn list_into_wire<T: IntoWire<P>, P>(
    field: &dyn Fn() -> String,
    items: Vec<T>,
) -> Result<Vec<P>, CsiError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.into_wire(&|| index(&field(), i)))
        .collect()
}

/// Implements the public `TryFrom<typed>` of a wire message with a root
/// field path, for messages whose conversion can fail.
macro_rules! try_into_proto {
    ($($typed:ty => $wire:ty),* $(,)?) => {
        $(
            impl TryFrom<$typed> for $wire {
                type Error = CsiError;
                fn try_from(t: $typed) -> Result<Self, CsiError> {
                    $crate::types::IntoWire::into_wire(t, &String::new)
                }
            }
        )*
    };
}
pub(crate) use try_into_proto;

/// Builds a typed message from a wire message its in-place check
/// (`crate::check::must`) accepted, without checking again: the MUST rules
/// of the responses, and of the nested messages requests share with them,
/// are written once, in those checks.
pub(crate) trait FromChecked<P> {
    fn from_checked(p: P) -> Self;
}

/// The conversion of a nested wire message whose rules are its in-place
/// check: the check, naming fields under `field`, then the construction.
pub(crate) fn checked<P: Must, T: FromChecked<P>>(field: &str, p: P) -> Result<T, CsiError> {
    p.must(Path::Named(field))?;
    Ok(T::from_checked(p))
}

/// What an in-place check proved: a REQUIRED field it found set, a value it
/// found in range. A message the check accepted always has it; reaching the
/// `expect` would be a bug of this crate (a check and its construction out
/// of step), not bad input: the property tests convert random broken
/// messages of every kind.
pub(crate) fn proven<T>(v: Option<T>) -> T {
    v.expect("accepted by the in-place check")
}

/// A non-negative int64 its check accepted.
pub(crate) fn proven_size(v: i64) -> u64 {
    proven(u64::try_from(v).ok())
}

/// A REQUIRED timestamp its check accepted.
pub(crate) fn proven_time(t: Option<prost_types::Timestamp>) -> SystemTime {
    proven(t.and_then(|t| SystemTime::try_from(t).ok()))
}

pub(crate) fn required<P, T: FromProto<P>>(field: &str, p: Option<P>) -> Result<T, CsiError> {
    match p {
        Some(p) => T::from_proto(field, p),
        None => Err(CsiError::missing(field)),
    }
}

pub(crate) fn optional<P, T: FromProto<P>>(
    field: &str,
    p: Option<P>,
) -> Result<Option<T>, CsiError> {
    p.map(|p| T::from_proto(field, p)).transpose()
}

pub(crate) fn list<P, T: FromProto<P>>(field: &str, ps: Vec<P>) -> Result<Vec<T>, CsiError> {
    ps.into_iter()
        .enumerate()
        .map(|(i, p)| T::from_proto(&index(field, i), p))
        .collect()
}

pub(crate) fn non_empty_list<P, T: FromProto<P>>(
    field: &str,
    ps: Vec<P>,
) -> Result<Vec<T>, CsiError> {
    if ps.is_empty() {
        return Err(CsiError::invalid(
            field,
            "this field is REQUIRED: at least one entry",
        ));
    }
    list(field, ps)
}

/// An optional id or path: the empty string means unset, anything else is
/// validated by `parse`.
pub(crate) fn optional_id<T>(
    field: &str,
    value: String,
    parse: fn(&str, String) -> Result<T, CsiError>,
) -> Result<Option<T>, CsiError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(field, value).map(Some)
    }
}

/// A list of ids, each validated by `parse`.
pub(crate) fn id_list<T>(
    field: &str,
    ids: Vec<String>,
    non_empty: bool,
    parse: fn(&str, String) -> Result<T, CsiError>,
) -> Result<Vec<T>, CsiError> {
    if non_empty && ids.is_empty() {
        return Err(CsiError::invalid(
            field,
            "this field is REQUIRED: at least one entry",
        ));
    }
    ids.into_iter()
        .enumerate()
        .map(|(i, s)| parse(&index(field, i), s))
        .collect()
}

/// How a volume is accessed by nodes (`VolumeCapability.AccessMode.Mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    /// Published on one node at a time, read-write.
    SingleNodeWriter,
    /// Published on one node at a time, read-only.
    SingleNodeReaderOnly,
    /// Published on many nodes, read-only.
    MultiNodeReaderOnly,
    /// Published on many nodes; only one of them may write.
    MultiNodeSingleWriter,
    /// Published on many nodes, all may write.
    MultiNodeMultiWriter,
    /// Published on one node, by one workload, read-write (alpha).
    SingleNodeSingleWriter,
    /// Published on one node, by many workloads there, read-write (alpha).
    SingleNodeMultiWriter,
}

impl AccessMode {
    /// Every mode, in wire order.
    pub const ALL: [AccessMode; 7] = [
        AccessMode::SingleNodeWriter,
        AccessMode::SingleNodeReaderOnly,
        AccessMode::MultiNodeReaderOnly,
        AccessMode::MultiNodeSingleWriter,
        AccessMode::MultiNodeMultiWriter,
        AccessMode::SingleNodeSingleWriter,
        AccessMode::SingleNodeMultiWriter,
    ];

    /// Whether the volume may be published on only one node at a time.
    pub fn is_single_node(self) -> bool {
        matches!(
            self,
            AccessMode::SingleNodeWriter
                | AccessMode::SingleNodeReaderOnly
                | AccessMode::SingleNodeSingleWriter
                | AccessMode::SingleNodeMultiWriter
        )
    }

    /// Whether the mode grants only read access.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            AccessMode::SingleNodeReaderOnly | AccessMode::MultiNodeReaderOnly
        )
    }

    fn to_proto(self) -> proto::volume_capability::access_mode::Mode {
        use proto::volume_capability::access_mode::Mode;
        match self {
            AccessMode::SingleNodeWriter => Mode::SingleNodeWriter,
            AccessMode::SingleNodeReaderOnly => Mode::SingleNodeReaderOnly,
            AccessMode::MultiNodeReaderOnly => Mode::MultiNodeReaderOnly,
            AccessMode::MultiNodeSingleWriter => Mode::MultiNodeSingleWriter,
            AccessMode::MultiNodeMultiWriter => Mode::MultiNodeMultiWriter,
            AccessMode::SingleNodeSingleWriter => Mode::SingleNodeSingleWriter,
            AccessMode::SingleNodeMultiWriter => Mode::SingleNodeMultiWriter,
        }
    }
}

/// An access mode its check accepted (a known mode, not `UNKNOWN`).
fn checked_access_mode(p: proto::volume_capability::AccessMode) -> AccessMode {
    use proto::volume_capability::access_mode::Mode;
    proven(match Mode::try_from(p.mode) {
        Ok(Mode::SingleNodeWriter) => Some(AccessMode::SingleNodeWriter),
        Ok(Mode::SingleNodeReaderOnly) => Some(AccessMode::SingleNodeReaderOnly),
        Ok(Mode::MultiNodeReaderOnly) => Some(AccessMode::MultiNodeReaderOnly),
        Ok(Mode::MultiNodeSingleWriter) => Some(AccessMode::MultiNodeSingleWriter),
        Ok(Mode::MultiNodeMultiWriter) => Some(AccessMode::MultiNodeMultiWriter),
        Ok(Mode::SingleNodeSingleWriter) => Some(AccessMode::SingleNodeSingleWriter),
        Ok(Mode::SingleNodeMultiWriter) => Some(AccessMode::SingleNodeMultiWriter),
        Ok(Mode::Unknown) | Err(_) => None,
    })
}

impl From<AccessMode> for proto::volume_capability::AccessMode {
    fn from(m: AccessMode) -> Self {
        proto::volume_capability::AccessMode {
            mode: m.to_proto() as i32,
        }
    }
}

/// A filesystem volume's mount options (`VolumeCapability.MountVolume`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountVolume {
    /// The filesystem type; `None` lets the plugin choose.
    pub fs_type: Option<String>,
    /// Mount options. They MAY be sensitive; together at most 4 KiB.
    pub mount_flags: Vec<String>,
    /// The group that should own the volume (`VOLUME_MOUNT_GROUP`), if any.
    pub volume_mount_group: Option<String>,
}

impl FromChecked<proto::volume_capability::MountVolume> for MountVolume {
    fn from_checked(p: proto::volume_capability::MountVolume) -> Self {
        let optional = |value: String| (!value.is_empty()).then_some(value);
        MountVolume {
            fs_type: optional(p.fs_type),
            mount_flags: p.mount_flags,
            volume_mount_group: optional(p.volume_mount_group),
        }
    }
}

impl From<MountVolume> for proto::volume_capability::MountVolume {
    fn from(m: MountVolume) -> Self {
        proto::volume_capability::MountVolume {
            fs_type: m.fs_type.unwrap_or_default(),
            mount_flags: m.mount_flags,
            volume_mount_group: m.volume_mount_group.unwrap_or_default(),
        }
    }
}

/// Whether a volume is used as a raw block device or a mounted filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessType {
    /// A raw block device.
    Block,
    /// A mounted filesystem.
    Mount(MountVolume),
}

/// How a volume will be used: access type and access mode.
///
/// ```
/// use csi_types::{types::{AccessMode, VolumeCapability}};
/// let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter).with_fs_type("ext4");
/// assert!(cap.is_mount());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeCapability {
    /// Block or mount.
    pub access_type: AccessType,
    /// How nodes may access it.
    pub access_mode: AccessMode,
}

impl VolumeCapability {
    /// A raw block capability.
    pub fn block(mode: AccessMode) -> Self {
        VolumeCapability {
            access_type: AccessType::Block,
            access_mode: mode,
        }
    }

    /// A filesystem capability with default mount options.
    pub fn mount(mode: AccessMode) -> Self {
        VolumeCapability {
            access_type: AccessType::Mount(MountVolume::default()),
            access_mode: mode,
        }
    }

    /// Sets the filesystem type (mount capabilities only; no effect on block).
    pub fn with_fs_type(mut self, fs_type: impl Into<String>) -> Self {
        if let AccessType::Mount(m) = &mut self.access_type {
            m.fs_type = Some(fs_type.into());
        }
        self
    }

    /// Whether this is a block capability.
    pub fn is_block(&self) -> bool {
        matches!(self.access_type, AccessType::Block)
    }

    /// Whether this is a mount capability.
    pub fn is_mount(&self) -> bool {
        matches!(self.access_type, AccessType::Mount(_))
    }

    /// The mount options, for a mount capability.
    pub fn mount_options(&self) -> Option<&MountVolume> {
        match &self.access_type {
            AccessType::Mount(m) => Some(m),
            AccessType::Block => None,
        }
    }
}

impl FromProto<proto::VolumeCapability> for VolumeCapability {
    fn from_proto(field: &str, p: proto::VolumeCapability) -> Result<Self, CsiError> {
        checked(field, p)
    }
}

impl FromChecked<proto::VolumeCapability> for VolumeCapability {
    #[inline]
    fn from_checked(p: proto::VolumeCapability) -> Self {
        use proto::volume_capability::AccessType as Wire;
        VolumeCapability {
            access_type: match proven(p.access_type) {
                Wire::Block(_) => AccessType::Block,
                Wire::Mount(m) => AccessType::Mount(MountVolume::from_checked(m)),
            },
            access_mode: checked_access_mode(proven(p.access_mode)),
        }
    }
}

impl From<VolumeCapability> for proto::VolumeCapability {
    fn from(c: VolumeCapability) -> Self {
        use proto::volume_capability::AccessType as Wire;
        proto::VolumeCapability {
            access_type: Some(match c.access_type {
                AccessType::Block => Wire::Block(proto::volume_capability::BlockVolume {}),
                AccessType::Mount(m) => Wire::Mount(m.into()),
            }),
            access_mode: Some(c.access_mode.into()),
        }
    }
}

/// The capacity a volume must have.
///
/// # Invariants
/// Both bounds are non-negative; when both are set, `limit_bytes >= required_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapacityRange {
    /// The volume must be at least this large; `None` means no lower bound.
    pub required_bytes: Option<u64>,
    /// The volume must be at most this large; `None` means no upper bound.
    pub limit_bytes: Option<u64>,
}

impl CapacityRange {
    /// A range with the given bounds, checked.
    ///
    /// ```
    /// use csi_types::types::CapacityRange;
    /// let r = CapacityRange::new(Some(1 << 30), Some(2 << 30)).unwrap();
    /// assert!(r.contains(1 << 30));
    /// assert_eq!(r.choose(4096, 1 << 20), Some(1 << 30));
    /// assert!(CapacityRange::new(Some(2), Some(1)).is_err());
    /// assert_eq!(
    ///     CapacityRange::new(None, Some(u64::MAX)).unwrap_err().to_string(),
    ///     "invalid `capacity_range.limit_bytes`: must be at most 9223372036854775807 \
    ///      (the largest int64, which the wire carries), got 18446744073709551615"
    /// );
    /// ```
    pub fn new(required_bytes: Option<u64>, limit_bytes: Option<u64>) -> Result<Self, CsiError> {
        let r = CapacityRange {
            required_bytes,
            limit_bytes,
        };
        r.check("capacity_range")?;
        Ok(r)
    }

    /// Exactly `bytes`.
    pub fn exactly(bytes: u64) -> Self {
        CapacityRange {
            required_bytes: Some(bytes),
            limit_bytes: Some(bytes),
        }
    }

    fn check(&self, field: &str) -> Result<(), CsiError> {
        for (name, v) in [
            ("required_bytes", self.required_bytes),
            ("limit_bytes", self.limit_bytes),
        ] {
            if let Some(v) = v {
                // The rule of the conversion to the wire, in its words.
                validate::wire_size(|| at(field, name), v)?;
            }
        }
        if let (Some(req), Some(lim)) = (self.required_bytes, self.limit_bytes)
            && lim < req
        {
            return Err(CsiError::invalid(
                at(field, "limit_bytes"),
                format!("must be at least required_bytes ({req}), got {lim}"),
            ));
        }
        Ok(())
    }

    /// Whether `bytes` lies within the range.
    pub fn contains(&self, bytes: u64) -> bool {
        self.required_bytes.is_none_or(|r| bytes >= r)
            && self.limit_bytes.is_none_or(|l| bytes <= l)
    }

    /// The size to provision: `required_bytes` (or `default` when unset)
    /// rounded up to a multiple of `granularity`, if that lies within the range.
    /// With only `limit_bytes` set, a `default` above the limit gives the
    /// largest multiple of `granularity` within it: the range has no lower
    /// bound, so any non-zero size up to the limit honours it.
    /// `None` means no multiple of `granularity` lies within the range
    /// (answer `OUT_OF_RANGE`).
    ///
    /// ```
    /// use csi_types::types::CapacityRange;
    /// // At most 5 GiB and a byte: 5 GiB, not 6 GiB (outside) nor a refusal.
    /// let r = CapacityRange::new(None, Some((5 << 30) + 1)).unwrap();
    /// assert_eq!(r.choose(10 << 30, 1 << 30), Some(5 << 30));
    /// // At least 1.5 GiB and at most 1.75 GiB: no whole GiB fits.
    /// let r = CapacityRange::new(Some(3 << 29), Some(7 << 28)).unwrap();
    /// assert_eq!(r.choose(10 << 30, 1 << 30), None);
    /// ```
    pub fn choose(&self, default: u64, granularity: u64) -> Option<u64> {
        let want = self.required_bytes.unwrap_or(default);
        let want = match self.limit_bytes {
            Some(l) if self.required_bytes.is_none() => want.min(l),
            _ => want,
        };
        let g = granularity.max(1);
        let size = want.div_ceil(g).checked_mul(g)?;
        let size = if size == 0 { g } else { size };
        if self.contains(size) {
            return Some(size);
        }
        // Rounding up passed the limit. With a lower bound, `size` was the
        // smallest multiple at or above it, so none fits; without one, the
        // largest non-zero multiple under the limit does.
        match (self.required_bytes, self.limit_bytes) {
            (None, Some(l)) => {
                let below = l / g * g;
                (below > 0).then_some(below)
            }
            _ => None,
        }
    }
}

impl FromProto<proto::CapacityRange> for CapacityRange {
    fn from_proto(field: &str, p: proto::CapacityRange) -> Result<Self, CsiError> {
        // The fields are named only for an error.
        let non_negative = |name: &str, v: i64| {
            validate::lazily(|| at(field, name), |f| validate::non_negative(f, v))
        };
        let required_bytes = non_negative("required_bytes", p.required_bytes)?;
        let limit_bytes = non_negative("limit_bytes", p.limit_bytes)?;
        let r = CapacityRange {
            required_bytes: (required_bytes != 0).then_some(required_bytes),
            limit_bytes: (limit_bytes != 0).then_some(limit_bytes),
        };
        r.check(field)?;
        Ok(r)
    }
}

impl IntoWire<proto::CapacityRange> for CapacityRange {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<proto::CapacityRange, CsiError> {
        let size = |name, v: Option<u64>| {
            v.map_or(Ok(0), |v| validate::wire_size(|| at(&field(), name), v))
        };
        Ok(proto::CapacityRange {
            required_bytes: size("required_bytes", self.required_bytes)?,
            limit_bytes: size("limit_bytes", self.limit_bytes)?,
        })
    }
}

/// A topological position: segment values by topology key.
///
/// # Invariants
/// Every key and value follows the spec's topology rules, and no two keys
/// differ only in case.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topology {
    segments: BTreeMap<TopologyKey, TopologyValue>,
}

impl Topology {
    /// A topology from checked segments.
    ///
    /// ```
    /// use csi_types::types::Topology;
    /// let t = Topology::new([("topology.example.com/zone", "z1")]).unwrap();
    /// assert_eq!(t.get("topology.example.com/zone"), Some("z1"));
    /// assert!(Topology::new([("Zone", "a"), ("zone", "b")]).is_err());
    /// ```
    pub fn new<K: Into<String>, V: Into<String>>(
        segments: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, CsiError> {
        Self::parse(
            &|| "segments".to_string(),
            segments
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// `field` names the map in an error; it is called only for one.
    fn parse(
        field: &dyn Fn() -> String,
        segments: BTreeMap<String, String>,
    ) -> Result<Self, CsiError> {
        check_segments(field, &segments)?;
        Ok(Self::from_segments(segments))
    }

    /// A topology from segments `check_segments` accepted.
    fn from_segments(segments: BTreeMap<String, String>) -> Self {
        let segments = segments
            .into_iter()
            .map(|(k, v)| (TopologyKey::from_checked(k), TopologyValue::from_checked(v)))
            .collect();
        Topology { segments }
    }

    /// The segment value for a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.segments.get(key).map(TopologyValue::as_str)
    }

    /// The segments.
    pub fn segments(&self) -> &BTreeMap<TopologyKey, TopologyValue> {
        &self.segments
    }

    /// Whether every segment of `self` appears with the same value in `other`.
    pub fn is_subset_of(&self, other: &Topology) -> bool {
        self.segments
            .iter()
            .all(|(k, v)| other.segments.get(k) == Some(v))
    }
}

impl FromProto<proto::Topology> for Topology {
    fn from_proto(field: &str, p: proto::Topology) -> Result<Self, CsiError> {
        checked(field, p)
    }
}

impl FromChecked<proto::Topology> for Topology {
    fn from_checked(p: proto::Topology) -> Self {
        Topology::from_segments(p.segments)
    }
}

impl From<Topology> for proto::Topology {
    fn from(t: Topology) -> Self {
        proto::Topology {
            segments: t
                .segments
                .into_iter()
                .map(|(k, v)| (k.into_string(), v.into_string()))
                .collect(),
        }
    }
}

/// Where a new volume must be accessible from.
///
/// # Invariants
/// When `requisite` is non-empty, every `preferred` entry is also in `requisite`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyRequirement {
    /// The volume MUST be accessible from at least one of these.
    pub requisite: Vec<Topology>,
    /// The plugin SHOULD try these first, in order.
    pub preferred: Vec<Topology>,
}

impl FromProto<proto::TopologyRequirement> for TopologyRequirement {
    fn from_proto(field: &str, p: proto::TopologyRequirement) -> Result<Self, CsiError> {
        if p.requisite.is_empty() && p.preferred.is_empty() {
            return Err(CsiError::invalid(
                field,
                "when set, at least one of `requisite` or `preferred` must be specified",
            ));
        }
        let requisite: Vec<Topology> = list(&at(field, "requisite"), p.requisite)?;
        let preferred: Vec<Topology> = list(&at(field, "preferred"), p.preferred)?;
        if !requisite.is_empty() {
            for (i, t) in preferred.iter().enumerate() {
                if !requisite.contains(t) {
                    return Err(CsiError::invalid(
                        index(&at(field, "preferred"), i),
                        "every preferred topology must also be requisite",
                    ));
                }
            }
        }
        Ok(TopologyRequirement {
            requisite,
            preferred,
        })
    }
}

impl From<TopologyRequirement> for proto::TopologyRequirement {
    fn from(t: TopologyRequirement) -> Self {
        proto::TopologyRequirement {
            requisite: t.requisite.into_iter().map(Into::into).collect(),
            preferred: t.preferred.into_iter().map(Into::into).collect(),
        }
    }
}

/// What a new volume is created from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VolumeContentSource {
    /// Restore a snapshot.
    Snapshot(SnapshotId),
    /// Clone a volume.
    Volume(VolumeId),
}

impl FromProto<proto::VolumeContentSource> for VolumeContentSource {
    fn from_proto(field: &str, p: proto::VolumeContentSource) -> Result<Self, CsiError> {
        checked(field, p)
    }
}

impl FromChecked<proto::VolumeContentSource> for VolumeContentSource {
    fn from_checked(p: proto::VolumeContentSource) -> Self {
        use proto::volume_content_source::Type;
        match proven(p.r#type) {
            Type::Snapshot(s) => {
                VolumeContentSource::Snapshot(SnapshotId::from_checked(s.snapshot_id))
            }
            Type::Volume(v) => VolumeContentSource::Volume(VolumeId::from_checked(v.volume_id)),
        }
    }
}

impl From<VolumeContentSource> for proto::VolumeContentSource {
    fn from(s: VolumeContentSource) -> Self {
        use proto::volume_content_source::{SnapshotSource, Type, VolumeSource};
        proto::VolumeContentSource {
            r#type: Some(match s {
                VolumeContentSource::Snapshot(id) => Type::Snapshot(SnapshotSource {
                    snapshot_id: id.into_string(),
                }),
                VolumeContentSource::Volume(id) => Type::Volume(VolumeSource {
                    volume_id: id.into_string(),
                }),
            }),
        }
    }
}

/// A provisioned volume, as returned by `CreateVolume`, `ListVolumes` and `ControllerGetVolume`.
///
/// ```
/// use csi_types::{ids::VolumeId, types::Volume};
/// let v = Volume::new(VolumeId::new("vol-1").unwrap(), 1 << 30).with_context("node", "n1");
/// assert_eq!(v.capacity_bytes, 1 << 30);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Its id. REQUIRED.
    pub volume_id: VolumeId,
    /// Its size; 0 means unknown.
    pub capacity_bytes: u64,
    /// Opaque context the CO passes back in later calls.
    pub volume_context: Map,
    /// What it was created from.
    pub content_source: Option<VolumeContentSource>,
    /// Where it is accessible from.
    pub accessible_topology: Vec<Topology>,
}

impl Volume {
    /// A volume with an id and a size.
    pub fn new(volume_id: VolumeId, capacity_bytes: u64) -> Self {
        Volume {
            volume_id,
            capacity_bytes,
            volume_context: Map::new(),
            content_source: None,
            accessible_topology: Vec::new(),
        }
    }

    /// A volume from the driver's own id, which this checks: a bad id is
    /// the driver's bug, so the error is `INTERNAL` naming the field and
    /// the rule (not the `INVALID_ARGUMENT` of [`VolumeId::new`], which
    /// would blame the CO's request). Takes a [`VolumeId`] or a string.
    ///
    /// ```
    /// use csi_types::{Code, types::Volume};
    /// let v = Volume::try_new("vol-1", 1 << 30).unwrap();
    /// assert_eq!(v.volume_id.as_str(), "vol-1");
    /// let e = Volume::try_new("v".repeat(129), 1 << 30).unwrap_err();
    /// assert_eq!(e.code(), Code::Internal);
    /// assert_eq!(
    ///     e.to_string(),
    ///     "internal error: invalid Volume built by the driver: \
    ///      volume_id: must be at most 128 bytes, got 129"
    /// );
    /// ```
    pub fn try_new(volume_id: impl Into<String>, capacity_bytes: u64) -> Result<Self, CsiError> {
        let volume_id = VolumeId::parse("volume_id", volume_id.into())
            .map_err(|e| e.built_by_driver("Volume"))?;
        Ok(Self::new(volume_id, capacity_bytes))
    }

    /// Adds a volume context entry.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.volume_context.insert(key.into(), value.into());
        self
    }

    /// Sets the content source.
    pub fn with_content_source(mut self, source: VolumeContentSource) -> Self {
        self.content_source = Some(source);
        self
    }

    /// Adds an accessible topology.
    pub fn with_accessible_topology(mut self, topology: Topology) -> Self {
        self.accessible_topology.push(topology);
        self
    }
}

impl FromProto<proto::Volume> for Volume {
    fn from_proto(field: &str, p: proto::Volume) -> Result<Self, CsiError> {
        checked(field, p)
    }
}

impl FromChecked<proto::Volume> for Volume {
    fn from_checked(p: proto::Volume) -> Self {
        Volume {
            volume_id: VolumeId::from_checked(p.volume_id),
            capacity_bytes: proven_size(p.capacity_bytes),
            volume_context: p.volume_context,
            content_source: p.content_source.map(VolumeContentSource::from_checked),
            accessible_topology: p
                .accessible_topology
                .into_iter()
                .map(Topology::from_checked)
                .collect(),
        }
    }
}

impl IntoWire<proto::Volume> for Volume {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<proto::Volume, CsiError> {
        let v = self;
        Ok(proto::Volume {
            capacity_bytes: validate::wire_size(
                || at(&field(), "capacity_bytes"),
                v.capacity_bytes,
            )?,
            volume_id: v.volume_id.into_string(),
            volume_context: v.volume_context,
            content_source: v.content_source.map(Into::into),
            accessible_topology: v.accessible_topology.into_iter().map(Into::into).collect(),
        })
    }
}

/// A volume's health, as reported by `VOLUME_CONDITION` capable plugins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeCondition {
    /// Whether the volume is abnormal.
    pub abnormal: bool,
    /// A description of the condition, for humans. REQUIRED (non-empty, at
    /// most 128 bytes) in what a [`crate::Plugin`] sends; received from a
    /// plugin it is kept as is, since the spec's alpha `VolumeCondition` is
    /// "informative for humans only" ([`crate::check`]).
    pub message: String,
}

impl VolumeCondition {
    /// A healthy volume. The message is cut to the spec's 128-byte string
    /// limit (on a character boundary); an empty one becomes "healthy", as the
    /// message is REQUIRED.
    pub fn healthy(message: impl Into<String>) -> Self {
        VolumeCondition {
            abnormal: false,
            message: condition_message(message.into(), "healthy"),
        }
    }

    /// An abnormal volume. The message is cut to the spec's 128-byte string
    /// limit (on a character boundary); an empty one becomes "abnormal", as
    /// the message is REQUIRED.
    pub fn abnormal(message: impl Into<String>) -> Self {
        VolumeCondition {
            abnormal: true,
            message: condition_message(message.into(), "abnormal"),
        }
    }
}

fn condition_message(message: String, default: &str) -> String {
    if message.is_empty() {
        default.to_string()
    } else {
        validate::truncate(message, validate::MAX_STRING_BYTES)
    }
}

impl FromProto<proto::VolumeCondition> for VolumeCondition {
    fn from_proto(_field: &str, p: proto::VolumeCondition) -> Result<Self, CsiError> {
        Ok(VolumeCondition::from_checked(p))
    }
}

impl FromChecked<proto::VolumeCondition> for VolumeCondition {
    /// The message's rules are tolerated (see `crate::check`): it is kept
    /// as received; a `Plugin` still refuses to send a bad one.
    fn from_checked(p: proto::VolumeCondition) -> Self {
        VolumeCondition {
            abnormal: p.abnormal,
            message: p.message,
        }
    }
}

impl From<VolumeCondition> for proto::VolumeCondition {
    fn from(c: VolumeCondition) -> Self {
        proto::VolumeCondition {
            abnormal: c.abnormal,
            message: c.message,
        }
    }
}

/// Converts a time to the wire, saturating at the limits of a protobuf
/// `Timestamp` (int64 seconds) instead of panicking as the plain conversion
/// would; every time a `Timestamp` can express converts exactly.
pub(crate) fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => match i64::try_from(d.as_secs()) {
            Ok(seconds) => prost_types::Timestamp {
                seconds,
                nanos: d.subsec_nanos() as i32,
            },
            Err(_) => prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 999_999_999,
            },
        },
        Err(before) => {
            let d = before.duration();
            let (secs, nanos) = if d.subsec_nanos() == 0 {
                (d.as_secs(), 0)
            } else {
                (
                    d.as_secs().saturating_add(1),
                    1_000_000_000 - d.subsec_nanos(),
                )
            };
            match i64::try_from(secs) {
                Ok(s) => prost_types::Timestamp {
                    seconds: -s,
                    nanos: nanos as i32,
                },
                Err(_) => prost_types::Timestamp {
                    seconds: i64::MIN,
                    nanos: 0,
                },
            }
        }
    }
}

/// A snapshot of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its id. REQUIRED.
    pub snapshot_id: SnapshotId,
    /// The volume it was taken from. REQUIRED.
    pub source_volume_id: VolumeId,
    /// Its size; 0 means unknown.
    pub size_bytes: u64,
    /// When it was cut. REQUIRED.
    pub creation_time: SystemTime,
    /// Whether it can be used as a volume content source.
    pub ready_to_use: bool,
    /// The group snapshot it belongs to, if any.
    pub group_snapshot_id: Option<GroupSnapshotId>,
}

impl Snapshot {
    /// A snapshot with every REQUIRED field.
    pub fn new(
        snapshot_id: SnapshotId,
        source_volume_id: VolumeId,
        size_bytes: u64,
        creation_time: SystemTime,
        ready_to_use: bool,
    ) -> Self {
        Snapshot {
            snapshot_id,
            source_volume_id,
            size_bytes,
            creation_time,
            ready_to_use,
            group_snapshot_id: None,
        }
    }

    /// A snapshot from the driver's own ids, which this checks: a bad id is
    /// the driver's bug, so the error is `INTERNAL` naming the field and the
    /// rule. Takes newtypes or strings.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use csi_types::{Code, types::Snapshot};
    /// let now = SystemTime::now();
    /// assert!(Snapshot::try_new("snap-1", "vol-1", 0, now, true).is_ok());
    /// let e = Snapshot::try_new("snap-1", "", 0, now, true).unwrap_err();
    /// assert_eq!(e.code(), Code::Internal);
    /// assert_eq!(
    ///     e.to_string(),
    ///     "internal error: invalid Snapshot built by the driver: \
    ///      source_volume_id: this field is REQUIRED"
    /// );
    /// ```
    pub fn try_new(
        snapshot_id: impl Into<String>,
        source_volume_id: impl Into<String>,
        size_bytes: u64,
        creation_time: SystemTime,
        ready_to_use: bool,
    ) -> Result<Self, CsiError> {
        let built = |e: CsiError| e.built_by_driver("Snapshot");
        let snapshot_id = SnapshotId::parse("snapshot_id", snapshot_id.into()).map_err(built)?;
        let source_volume_id =
            VolumeId::parse("source_volume_id", source_volume_id.into()).map_err(built)?;
        Ok(Self::new(
            snapshot_id,
            source_volume_id,
            size_bytes,
            creation_time,
            ready_to_use,
        ))
    }

    /// Marks the snapshot as a member of a group snapshot.
    pub fn with_group_snapshot_id(mut self, id: GroupSnapshotId) -> Self {
        self.group_snapshot_id = Some(id);
        self
    }
}

impl FromProto<proto::Snapshot> for Snapshot {
    fn from_proto(field: &str, p: proto::Snapshot) -> Result<Self, CsiError> {
        checked(field, p)
    }
}

impl FromChecked<proto::Snapshot> for Snapshot {
    fn from_checked(p: proto::Snapshot) -> Self {
        Snapshot {
            snapshot_id: SnapshotId::from_checked(p.snapshot_id),
            source_volume_id: VolumeId::from_checked(p.source_volume_id),
            size_bytes: proven_size(p.size_bytes),
            creation_time: proven_time(p.creation_time),
            ready_to_use: p.ready_to_use,
            group_snapshot_id: (!p.group_snapshot_id.is_empty())
                .then(|| GroupSnapshotId::from_checked(p.group_snapshot_id)),
        }
    }
}

impl IntoWire<proto::Snapshot> for Snapshot {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<proto::Snapshot, CsiError> {
        let s = self;
        Ok(proto::Snapshot {
            size_bytes: validate::wire_size(|| at(&field(), "size_bytes"), s.size_bytes)?,
            snapshot_id: s.snapshot_id.into_string(),
            source_volume_id: s.source_volume_id.into_string(),
            creation_time: Some(to_timestamp(s.creation_time)),
            ready_to_use: s.ready_to_use,
            group_snapshot_id: s.group_snapshot_id.map(String::from).unwrap_or_default(),
        })
    }
}

try_into_proto! {
    CapacityRange => proto::CapacityRange,
    Volume => proto::Volume,
    Snapshot => proto::Snapshot,
}

/// Implements the public `TryFrom<wire>` for a typed message with a root field path.
macro_rules! try_from_proto {
    ($($typed:ty => $wire:ty),* $(,)?) => {
        $(
            impl TryFrom<$wire> for $typed {
                type Error = CsiError;
                fn try_from(p: $wire) -> Result<Self, CsiError> {
                    <$typed as $crate::types::FromProto<$wire>>::from_proto("", p)
                }
            }
        )*
    };
}

try_from_proto! {
    VolumeCapability => proto::VolumeCapability,
    CapacityRange => proto::CapacityRange,
    Topology => proto::Topology,
    TopologyRequirement => proto::TopologyRequirement,
    VolumeContentSource => proto::VolumeContentSource,
    Volume => proto::Volume,
    VolumeCondition => proto::VolumeCondition,
    Snapshot => proto::Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range with only an upper bound is honoured by any non-zero size
    /// under it: `choose` finds a multiple of the granularity there rather
    /// than rounding the default up past the limit and giving up.
    #[test]
    fn a_limit_only_range_takes_the_largest_multiple_under_the_limit() {
        let g = 1 << 20;
        for (limit, default, want) in [
            ((5 << 20) + 1, 10 << 20, Some(5 << 20)),
            ((5 << 20) - 1, 10 << 20, Some(4 << 20)),
            (5 << 20, 10 << 20, Some(5 << 20)),
            ((5 << 20) + 1, 2 << 20, Some(2 << 20)),
            // Below one granule nothing fits.
            (g - 1, 10 << 20, None),
        ] {
            let r = CapacityRange::new(None, Some(limit)).unwrap();
            let got = r.choose(default, g);
            assert_eq!(got, want, "limit {limit}, default {default}");
            if let Some(size) = got {
                assert!(r.contains(size) && size % g == 0 && size > 0, "{size}");
            }
        }
        // With a lower bound the smallest multiple above it is the only
        // candidate: past the limit, nothing fits.
        let r = CapacityRange::new(Some((1 << 20) + 1), Some((3 << 20) / 2)).unwrap();
        assert_eq!(r.choose(10 << 20, g), None);
        let r = CapacityRange::new(Some((1 << 20) + 1), Some(2 << 20)).unwrap();
        assert_eq!(r.choose(10 << 20, g), Some(2 << 20));
    }
}
