//! The crate's one error type and its mapping to CSI status codes.

use csi_types::CsiError;

/// Everything the composer can refuse or fail at. Messages name the entry,
/// key or field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The inventory file is not valid.
    #[error("inventory: {entry}: {rule}")]
    Inventory {
        /// The entry at fault (`rack 'r1'`, `jbod 'j1' drive entry 2`, `file`).
        entry: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A StorageClass parameter is unknown or invalid.
    #[error("parameters[{key:?}]: {rule}")]
    Parameter {
        /// The key.
        key: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A request field is invalid for this composer.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The size asked for cannot be provided (range, limits, layout reach).
    #[error("{0}")]
    OutOfRange(String),
    /// Nothing fits: the placement engine's explanation.
    #[error("{0}")]
    Exhausted(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object of that name exists with other arguments.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another operation on the same volume or name is in flight.
    #[error("{0}")]
    Busy(String),
    /// A transactional store refused a batch whose precondition no longer holds.
    #[error("store conflict: {0}")]
    Conflict(String),
    /// The state store failed (I/O, corruption).
    #[error("state store: {0}")]
    Store(String),
    /// An invariant of the composer broke (a bug).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Error> for CsiError {
    /// The one mapping to CSI codes (spec, "Error Scheme", per-RPC tables):
    /// bad parameters and fields → `INVALID_ARGUMENT`; sizes the layout or
    /// the range cannot give → `OUT_OF_RANGE`; no room in the requested
    /// topology → `RESOURCE_EXHAUSTED`; unknown volume or node → `NOT_FOUND`;
    /// incompatible repeat → `ALREADY_EXISTS`; wrong state →
    /// `FAILED_PRECONDITION`; a store conflict is retryable → `ABORTED`;
    /// store and internal failures → `INTERNAL`.
    fn from(e: Error) -> CsiError {
        match e {
            Error::Inventory { .. } => CsiError::failed_precondition(e.to_string()),
            Error::Parameter { key, rule } => {
                CsiError::invalid(format!("parameters[{key:?}]"), rule)
            }
            Error::Invalid { field, rule } => CsiError::invalid(field, rule),
            Error::OutOfRange(m) => CsiError::out_of_range(m),
            Error::Exhausted(m) => CsiError::resource_exhausted(m),
            Error::NotFound(m) => CsiError::not_found(m),
            Error::AlreadyExists(m) => CsiError::already_exists(m),
            Error::FailedPrecondition(m) => CsiError::failed_precondition(m),
            Error::Busy(m) => CsiError::aborted(m),
            Error::Conflict(_) => CsiError::aborted(e.to_string()),
            Error::Store(_) | Error::Internal(_) => CsiError::internal(e.to_string()),
        }
    }
}
