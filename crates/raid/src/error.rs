//! The crate's one error type.

use storage_units::quote;
use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Every variant names the field or entry at fault and the rule it broke, so
/// that an operator can act on the message alone. No function in this crate
/// changes its inputs when it returns an error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RaidError {
    /// A layout name could not be parsed for the given RAID level.
    #[error("layout {} is not a valid md layout for {level}: {rule}", quote(.name))]
    BadLayout {
        /// The level the layout was parsed for (`raid5`, …).
        level: String,
        /// The name as given.
        name: String,
        /// What a valid name looks like.
        rule: String,
    },
    /// A RAID level name could not be parsed.
    #[error(
        "level {} is not one of raid0, raid1, raid4, raid5, raid6, raid10 (also 0/1/4/5/6/10)",
        quote(.0)
    )]
    BadLevel(String),
    /// A geometry parameter breaks one of md's rules.
    #[error("invalid geometry: {field}: {rule}")]
    InvalidGeometry {
        /// The parameter at fault (`members`, `chunk_sectors`, `member_sectors[2]`, …).
        field: String,
        /// The rule, with the offending value.
        rule: String,
    },
    /// An address lies outside the array or the member.
    #[error("{what} {value} is out of range: must be below {limit}")]
    OutOfRange {
        /// Which address (`logical sector`, `member 7`, …).
        what: String,
        /// The value given.
        value: u64,
        /// The exclusive upper bound.
        limit: u64,
    },
    /// A size breaks its type's rule (a chunk that is not a multiple of
    /// 4 KiB, bytes that are not whole sectors, an overflow). Displays as
    /// one sentence, e.g. `invalid chunk size: 6 KiB is not a positive
    /// multiple of 4 KiB`.
    #[error("invalid {field}: {rule}")]
    BadSize {
        /// The size at fault (`size`, `byte count`, `KiB count`, `chunk size`).
        field: String,
        /// The rule, with the offending value.
        rule: String,
    },
    /// A parity backend was requested that this CPU (or this build's target
    /// architecture) cannot run.
    #[error("parity backend {backend} is not available: {reason}")]
    UnsupportedBackend {
        /// The backend asked for (`Avx512`, …).
        backend: String,
        /// Why it cannot run here.
        reason: String,
    },
    /// Buffers passed to a parity function do not fit together.
    #[error("parity buffers: {0}")]
    BadBuffers(String),
    /// More members are missing than the layout can reconstruct.
    #[error(
        "cannot reconstruct: {missing} members missing ({members:?}) but {level} tolerates at most {tolerated}"
    )]
    TooManyMissing {
        /// How many members are missing.
        missing: usize,
        /// Which members are missing.
        members: Vec<usize>,
        /// The layout's level.
        level: String,
        /// How many missing members it can reconstruct.
        tolerated: usize,
    },
    /// A failure-domain description is inconsistent.
    #[error("failure domains: {0}")]
    BadDomains(String),
    /// The failed members take data beyond what the level can rebuild, so
    /// a rebuild or write cannot be planned. `detail` says why in the
    /// level's own terms (copies for RAID1/10, parity for RAID4/5/6).
    #[error("data is lost with members {failed:?} failed: {detail}")]
    DataLost {
        /// The failed members.
        failed: Vec<usize>,
        /// Which data is lost.
        detail: String,
    },
    /// A numeric parameter of an estimate is out of its domain.
    #[error("estimate parameter {field}: {rule}")]
    BadEstimate {
        /// The parameter at fault.
        field: String,
        /// The rule it broke.
        rule: String,
    },
    /// No layout satisfies a layout-choice request; the message says why.
    #[error("no layout fits: {0}")]
    NoLayoutFits(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, RaidError>;

pub(crate) fn geom_err(field: impl Into<String>, rule: impl Into<String>) -> RaidError {
    RaidError::InvalidGeometry {
        field: field.into(),
        rule: rule.into(),
    }
}
