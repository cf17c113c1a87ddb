//! Typed requests and responses of the SnapshotMetadata service (alpha):
//! allocated and changed block ranges of snapshots, streamed.

use crate::CsiError;
use crate::check::must::MustResponse;
use crate::ids::SnapshotId;
use crate::proto;
use crate::redact::Secrets;
use crate::types::{FromChecked, IntoWire, list_into_wire, proven, proven_size, root};
use crate::validate;

/// How the block ranges of a response are sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockMetadataType {
    /// Every range has the same size.
    FixedLength,
    /// Ranges have any size.
    VariableLength,
}

/// One range of a snapshot's blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMetadata {
    /// Where the range starts, in bytes.
    pub byte_offset: u64,
    /// Its length, in bytes; greater than zero ("size_bytes MUST be
    /// greater than zero"), which the check of a message holding it enforces.
    pub size_bytes: u64,
}

/// A range its check (`crate::check::must`) accepted: the offset is not
/// negative, the size greater than zero.
impl FromChecked<proto::BlockMetadata> for BlockMetadata {
    fn from_checked(p: proto::BlockMetadata) -> Self {
        BlockMetadata {
            byte_offset: proven_size(p.byte_offset),
            size_bytes: proven_size(p.size_bytes),
        }
    }
}

impl IntoWire<proto::BlockMetadata> for BlockMetadata {
    fn into_wire(self, field: &dyn Fn() -> String) -> Result<proto::BlockMetadata, CsiError> {
        let size = |name, v| validate::wire_size(|| validate::at(&field(), name), v);
        Ok(proto::BlockMetadata {
            byte_offset: size("byte_offset", self.byte_offset)?,
            size_bytes: size("size_bytes", self.size_bytes)?,
        })
    }
}

/// A type its check accepted: `FIXED_LENGTH` or `VARIABLE_LENGTH`.
fn checked_block_metadata_type(v: i32) -> BlockMetadataType {
    proven(match proto::BlockMetadataType::try_from(v) {
        Ok(proto::BlockMetadataType::FixedLength) => Some(BlockMetadataType::FixedLength),
        Ok(proto::BlockMetadataType::VariableLength) => Some(BlockMetadataType::VariableLength),
        _ => None,
    })
}

fn block_metadata_type_to_proto(t: BlockMetadataType) -> i32 {
    match t {
        BlockMetadataType::FixedLength => proto::BlockMetadataType::FixedLength as i32,
        BlockMetadataType::VariableLength => proto::BlockMetadataType::VariableLength as i32,
    }
}

/// A request's `starting_offset`. A negative one is `OUT_OF_RANGE`, not
/// `INVALID_ARGUMENT`: the spec's error tables of both RPCs name it
/// ("Invalid `starting_offset` | 11 OUT_OF_RANGE | The starting offset is
/// negative or exceeds the volume size"), and a named condition's code is a
/// MUST. It is checked before the driver runs: no snapshot makes a negative
/// offset valid (past the end is the driver's check, after the lookup).
///
/// ```
/// use csi_types::{Code, proto, snapshot_metadata::GetMetadataAllocatedRequest};
/// let e = GetMetadataAllocatedRequest::try_from(proto::GetMetadataAllocatedRequest {
///     snapshot_id: "snap-1".into(),
///     starting_offset: -1,
///     ..Default::default()
/// })
/// .unwrap_err();
/// assert_eq!(e.code(), Code::OutOfRange);
/// assert!(e.to_string().contains("`starting_offset` must not be negative, got -1"), "{e}");
/// ```
fn starting_offset(value: i64) -> Result<u64, CsiError> {
    u64::try_from(value).map_err(|_| {
        CsiError::out_of_range(format!(
            "`starting_offset` must not be negative, got {value}"
        ))
    })
}

/// `GetMetadataAllocated` request: the allocated ranges of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMetadataAllocatedRequest {
    /// The snapshot.
    pub snapshot_id: SnapshotId,
    /// Start at this byte offset.
    pub starting_offset: u64,
    /// At most this many ranges per response message; `None` lets the plugin choose. The
    /// wire's `int32` reads 0 as no maximum: `Some(0)` is sent as 0, and a value above
    /// `i32::MAX` as `i32::MAX` (a cap on a maximum, harmless).
    pub max_results: Option<u32>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::GetMetadataAllocatedRequest> for GetMetadataAllocatedRequest {
    type Error = CsiError;
    fn try_from(p: proto::GetMetadataAllocatedRequest) -> Result<Self, CsiError> {
        Ok(GetMetadataAllocatedRequest {
            snapshot_id: SnapshotId::parse("snapshot_id", p.snapshot_id)?,
            starting_offset: starting_offset(p.starting_offset)?,
            max_results: validate::optional_count("max_results", p.max_results)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl IntoWire<proto::GetMetadataAllocatedRequest> for GetMetadataAllocatedRequest {
    fn into_wire(
        self,
        _: &dyn Fn() -> String,
    ) -> Result<proto::GetMetadataAllocatedRequest, CsiError> {
        let r = self;
        Ok(proto::GetMetadataAllocatedRequest {
            snapshot_id: r.snapshot_id.into_string(),
            starting_offset: validate::wire_size(root("starting_offset"), r.starting_offset)?,
            max_results: r.max_results.map_or(0, validate::count_to_wire),
            secrets: r.secrets.into_inner(),
        })
    }
}

/// `GetMetadataDelta` request: the ranges that differ between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMetadataDeltaRequest {
    /// The older snapshot.
    pub base_snapshot_id: SnapshotId,
    /// The newer snapshot.
    pub target_snapshot_id: SnapshotId,
    /// Start at this byte offset.
    pub starting_offset: u64,
    /// At most this many ranges per response message; `None` lets the plugin choose. The
    /// wire's `int32` reads 0 as no maximum: `Some(0)` is sent as 0, and a value above
    /// `i32::MAX` as `i32::MAX` (a cap on a maximum, harmless).
    pub max_results: Option<u32>,
    /// Secrets for the storage system.
    pub secrets: Secrets,
}

impl TryFrom<proto::GetMetadataDeltaRequest> for GetMetadataDeltaRequest {
    type Error = CsiError;
    fn try_from(p: proto::GetMetadataDeltaRequest) -> Result<Self, CsiError> {
        Ok(GetMetadataDeltaRequest {
            base_snapshot_id: SnapshotId::parse("base_snapshot_id", p.base_snapshot_id)?,
            target_snapshot_id: SnapshotId::parse("target_snapshot_id", p.target_snapshot_id)?,
            starting_offset: starting_offset(p.starting_offset)?,
            max_results: validate::optional_count("max_results", p.max_results)?,
            secrets: Secrets::parse("secrets", p.secrets)?,
        })
    }
}

impl IntoWire<proto::GetMetadataDeltaRequest> for GetMetadataDeltaRequest {
    fn into_wire(self, _: &dyn Fn() -> String) -> Result<proto::GetMetadataDeltaRequest, CsiError> {
        let r = self;
        Ok(proto::GetMetadataDeltaRequest {
            base_snapshot_id: r.base_snapshot_id.into_string(),
            target_snapshot_id: r.target_snapshot_id.into_string(),
            starting_offset: validate::wire_size(root("starting_offset"), r.starting_offset)?,
            max_results: r.max_results.map_or(0, validate::count_to_wire),
            secrets: r.secrets.into_inner(),
        })
    }
}

crate::types::try_into_proto! {
    BlockMetadata => proto::BlockMetadata,
    GetMetadataAllocatedRequest => proto::GetMetadataAllocatedRequest,
    GetMetadataDeltaRequest => proto::GetMetadataDeltaRequest,
    BlockMetadataResponse => proto::GetMetadataAllocatedResponse,
    BlockMetadataResponse => proto::GetMetadataDeltaResponse,
}

/// One message of a `GetMetadataAllocated` or `GetMetadataDelta` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMetadataResponse {
    /// How the ranges are sized. REQUIRED.
    pub block_metadata_type: BlockMetadataType,
    /// The size of the volume the snapshot was taken of. REQUIRED.
    pub volume_capacity_bytes: u64,
    /// The ranges, in ascending offset order.
    pub block_metadata: Vec<BlockMetadata>,
}

macro_rules! block_metadata_response {
    ($($wire:ty),*) => {
        $(
            /// The message's MUST rules are its in-place check
            /// (`crate::check::ResponseRules::must`, which a `Plugin` runs
            /// on every message it streams); the conversion runs it, then
            /// builds the typed value without checking again.
            impl TryFrom<$wire> for BlockMetadataResponse {
                type Error = CsiError;
                fn try_from(p: $wire) -> Result<Self, CsiError> {
                    p.must()?;
                    Ok(BlockMetadataResponse::from_checked(p))
                }
            }

            impl FromChecked<$wire> for BlockMetadataResponse {
                fn from_checked(p: $wire) -> Self {
                    BlockMetadataResponse {
                        block_metadata_type: checked_block_metadata_type(p.block_metadata_type),
                        volume_capacity_bytes: proven_size(p.volume_capacity_bytes),
                        block_metadata: p.block_metadata.into_iter().map(BlockMetadata::from_checked).collect(),
                    }
                }
            }

            impl IntoWire<$wire> for BlockMetadataResponse {
                fn into_wire(self, _: &dyn Fn() -> String) -> Result<$wire, CsiError> {
                    let r = self;
                    let mut wire = <$wire>::default();
                    wire.block_metadata_type = block_metadata_type_to_proto(r.block_metadata_type);
                    wire.volume_capacity_bytes =
                        validate::wire_size(root("volume_capacity_bytes"), r.volume_capacity_bytes)?;
                    wire.block_metadata = list_into_wire(&root("block_metadata"), r.block_metadata)?;
                    Ok(wire)
                }
            }
        )*
    };
}

block_metadata_response!(
    proto::GetMetadataAllocatedResponse,
    proto::GetMetadataDeltaResponse
);
