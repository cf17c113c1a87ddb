//! [`CsiError`], the one error type of every driver method, and its mapping
//! to gRPC status codes.

use std::fmt;

/// A gRPC status code, numbered as gRPC numbers them.
///
/// This crate's own copy, so that the error mapping does not need tonic; with
/// the `server` or `client` feature it converts to and from `tonic::Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
#[allow(missing_docs)] // The variants are gRPC's own names.
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The code for a gRPC number; unknown numbers are [`Code::Unknown`].
    pub fn from_i32(n: i32) -> Code {
        use Code::*;
        match n {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// The gRPC name of the code (`NOT_FOUND`).
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every driver method: a condition the CSI specification names,
/// with a message for the operator.
///
/// Build one with the constructors ([`CsiError::not_found`],
/// [`CsiError::invalid`], …) or the variants. [`CsiError::code`] maps it to the
/// gRPC code the spec requires; the gRPC message is the `Display` text, which
/// is never empty, and the status details stay empty as the spec requires.
///
/// ```
/// use csi_types::{Code, CsiError};
/// let e = CsiError::invalid("volume_capabilities", "at least one capability is required");
/// assert_eq!(e.code(), Code::InvalidArgument);
/// assert_eq!(e.to_string(), "invalid `volume_capabilities`: at least one capability is required");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsiError {
    /// A request field breaks a rule of the spec or of the driver.
    #[error("invalid `{field}`: {rule}")]
    InvalidArgument {
        /// The field's path in the request, e.g. `volume_capabilities[0].access_mode`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The volume, snapshot, node or group snapshot does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The object exists but is incompatible with the request.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The requested capacity or offset cannot be honoured.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The system is not in a state the operation needs (in use, published elsewhere, …).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Another operation on the same object is in flight, or a list token is no longer valid.
    #[error("aborted: {0}")]
    Aborted(String),
    /// Out of space, attach slots or another finite resource.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The driver does not implement this RPC.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The driver or its backend is temporarily unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish in time; the caller may retry.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// A bug or an unexpected failure in the driver.
    #[error("internal error: {0}")]
    Internal(String),
    /// A status received from a peer with a code that has no variant of its own.
    #[error("{code}: {message}")]
    Other {
        /// The received code.
        code: Code,
        /// The received message.
        message: String,
    },
}

impl CsiError {
    /// An invalid field: names the field and the rule it breaks.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        CsiError::InvalidArgument {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// A missing REQUIRED field.
    pub fn missing(field: impl Into<String>) -> Self {
        Self::invalid(field, crate::validate::REQUIRED)
    }

    /// [`CsiError::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Self {
        CsiError::NotFound(msg.into())
    }

    /// [`CsiError::AlreadyExists`].
    pub fn already_exists(msg: impl Into<String>) -> Self {
        CsiError::AlreadyExists(msg.into())
    }

    /// [`CsiError::OutOfRange`].
    pub fn out_of_range(msg: impl Into<String>) -> Self {
        CsiError::OutOfRange(msg.into())
    }

    /// [`CsiError::FailedPrecondition`].
    pub fn failed_precondition(msg: impl Into<String>) -> Self {
        CsiError::FailedPrecondition(msg.into())
    }

    /// [`CsiError::Aborted`].
    pub fn aborted(msg: impl Into<String>) -> Self {
        CsiError::Aborted(msg.into())
    }

    /// [`CsiError::ResourceExhausted`].
    pub fn resource_exhausted(msg: impl Into<String>) -> Self {
        CsiError::ResourceExhausted(msg.into())
    }

    /// [`CsiError::Unimplemented`].
    pub fn unimplemented(msg: impl Into<String>) -> Self {
        CsiError::Unimplemented(msg.into())
    }

    /// [`CsiError::Internal`].
    pub fn internal(msg: impl Into<String>) -> Self {
        CsiError::Internal(msg.into())
    }

    /// The error of a response constructor given a field that breaks a rule:
    /// the driver built an invalid response, which is its own bug, so the CO
    /// must receive `INTERNAL` rather than the `INVALID_ARGUMENT` that would
    /// blame its request (CSI spec, "Error Scheme"). The message names the
    /// response, the field and the rule.
    pub(crate) fn built_invalid(response: &str, e: CsiError) -> Self {
        e.built_by_driver(response)
    }

    /// This error, raised while the driver built `response` from its own
    /// values, as the `INTERNAL` the CO must receive: a bad value in a
    /// response is the driver's bug, and the `INVALID_ARGUMENT` of a
    /// newtype's check would blame the CO's request. The message keeps the
    /// field and the rule, and names the response.
    ///
    /// The response builders that take a driver's strings
    /// ([`crate::types::Volume::try_new`], …) do this themselves; this is for
    /// any other field a driver fills from its own state.
    ///
    /// ```
    /// use csi_types::{Code, ids::SnapshotId};
    /// let e = SnapshotId::new("")
    ///     .map_err(|e| e.built_by_driver("CreateSnapshotResponse"))
    ///     .unwrap_err();
    /// assert_eq!(e.code(), Code::Internal);
    /// assert_eq!(
    ///     e.to_string(),
    ///     "internal error: invalid CreateSnapshotResponse built by the driver: \
    ///      snapshot_id: this field is REQUIRED"
    /// );
    /// ```
    pub fn built_by_driver(self, response: &str) -> Self {
        match self {
            CsiError::InvalidArgument { field, rule } => CsiError::Internal(format!(
                "invalid {response} built by the driver: {field}: {rule}"
            )),
            // Already the driver's: a second wrapping would only repeat it.
            internal @ CsiError::Internal(_) => internal,
            other => CsiError::Internal(format!("invalid {response} built by the driver: {other}")),
        }
    }

    /// The gRPC status code for this error.
    ///
    /// This is the crate's one mapping from conditions to codes. The spec's
    /// per-RPC error tables (`csi-errors-by-rpc.tsv`, with RESOURCE_EXHAUSTED
    /// as code 8) name these conditions; each row is produced by the variant
    /// of the same name:
    ///
    /// | RPC | gRPC code | condition in the spec |
    /// |---|---|---|
    /// | Probe | 9 FAILED_PRECONDITION | Plugin not healthy |
    /// | Probe | 9 FAILED_PRECONDITION | Missing required dependency |
    /// | CreateVolume | 3 INVALID_ARGUMENT | Source incompatible or not supported |
    /// | CreateVolume | 5 NOT_FOUND | Source does not exist |
    /// | CreateVolume | 6 ALREADY_EXISTS | Volume already exists but is incompatible |
    /// | CreateVolume | 8 RESOURCE_EXHAUSTED | Unable to provision in `accessible_topology` |
    /// | CreateVolume | 11 OUT_OF_RANGE | Unsupported `capacity_range` |
    /// | DeleteVolume | 9 FAILED_PRECONDITION | Volume in use |
    /// | ControllerPublishVolume | 5 NOT_FOUND | Volume does not exist |
    /// | ControllerPublishVolume | 5 NOT_FOUND | Node does not exist |
    /// | ControllerPublishVolume | 6 ALREADY_EXISTS | Volume published but is incompatible |
    /// | ControllerPublishVolume | 9 FAILED_PRECONDITION | Volume published to another node |
    /// | ControllerPublishVolume | 8 RESOURCE_EXHAUSTED | Max volumes attached |
    /// | ControllerUnpublishVolume | 5 NOT_FOUND | Volume does not exist and volume not assumed ControllerUnpublished from node |
    /// | ControllerUnpublishVolume | 5 NOT_FOUND | Node does not exist and volume not assumed ControllerUnpublished from node |
    /// | ValidateVolumeCapabilities | 5 NOT_FOUND | Volume does not exist |
    /// | ListVolumes | 10 ABORTED | Invalid `starting_token` |
    /// | ControllerGetVolume | 5 NOT_FOUND | Volume does not exist |
    /// | ControllerModifyVolume | 3 INVALID_ARGUMENT | Parameters not supported |
    /// | ControllerModifyVolume | 5 NOT_FOUND | Volume does not exist |
    /// | CreateSnapshot | 6 ALREADY_EXISTS | Snapshot already exists but is incompatible |
    /// | CreateSnapshot | 10 ABORTED | Operation pending for snapshot |
    /// | CreateSnapshot | 8 RESOURCE_EXHAUSTED | Not enough space to create snapshot |
    /// | DeleteSnapshot | 3 INVALID_ARGUMENT | Snapshot is part of a group |
    /// | DeleteSnapshot | 9 FAILED_PRECONDITION | Snapshot in use |
    /// | DeleteSnapshot | 10 ABORTED | Operation pending for snapshot |
    /// | ListSnapshots | 10 ABORTED | Invalid `starting_token` |
    /// | GetSnapshot | 5 NOT_FOUND | Snapshot does not exist |
    /// | ControllerExpandVolume | 3 INVALID_ARGUMENT | Exceeds capabilities |
    /// | ControllerExpandVolume | 5 NOT_FOUND | Volume does not exist |
    /// | ControllerExpandVolume | 9 FAILED_PRECONDITION | Volume in use |
    /// | ControllerExpandVolume | 11 OUT_OF_RANGE | Unsupported `capacity_range` |
    /// | NodeStageVolume | 5 NOT_FOUND | Volume does not exist |
    /// | NodeStageVolume | 6 ALREADY_EXISTS | Volume published but is incompatible |
    /// | NodeStageVolume | 9 FAILED_PRECONDITION | Exceeds capabilities |
    /// | NodeUnstageVolume | 5 NOT_FOUND | Volume does not exist |
    /// | NodePublishVolume | 5 NOT_FOUND | Volume does not exist |
    /// | NodePublishVolume | 6 ALREADY_EXISTS | Volume published but is incompatible |
    /// | NodePublishVolume | 9 FAILED_PRECONDITION | Exceeds capabilities |
    /// | NodePublishVolume | 9 FAILED_PRECONDITION | Staging target path not set |
    /// | NodeUnpublishVolume | 5 NOT_FOUND | Volume does not exist |
    /// | NodeGetVolumeStats | 5 NOT_FOUND | Volume does not exist |
    /// | NodeExpandVolume | 3 INVALID_ARGUMENT | Exceeds capabilities |
    /// | NodeExpandVolume | 5 NOT_FOUND | Volume does not exist |
    /// | NodeExpandVolume | 9 FAILED_PRECONDITION | Volume in use |
    /// | NodeExpandVolume | 11 OUT_OF_RANGE | Unsupported capacity_range |
    /// | CreateVolumeGroupSnapshot | 6 ALREADY_EXISTS | Group snapshot already exists but is incompatible |
    /// | CreateVolumeGroupSnapshot | 9 FAILED_PRECONDITION | Cannot snapshot multiple volumes together |
    /// | CreateVolumeGroupSnapshot | 8 RESOURCE_EXHAUSTED | Not enough space to create group snapshot |
    /// | DeleteVolumeGroupSnapshot | 3 INVALID_ARGUMENT | Snapshot list mismatch |
    /// | DeleteVolumeGroupSnapshot | 9 FAILED_PRECONDITION | Volume group snapshot in use |
    /// | GetVolumeGroupSnapshot | 3 INVALID_ARGUMENT | Snapshot list mismatch |
    /// | GetVolumeGroupSnapshot | 5 NOT_FOUND | Volume group snapshot does not exist |
    /// | GetMetadataAllocated | 3 INVALID_ARGUMENT | Missing or otherwise invalid argument |
    /// | GetMetadataAllocated | 5 NOT_FOUND | Invalid `snapshot_id` |
    /// | GetMetadataAllocated | 11 OUT_OF_RANGE | Invalid `starting_offset` |
    /// | GetMetadataDelta | 3 INVALID_ARGUMENT | Missing or otherwise invalid argument |
    /// | GetMetadataDelta | 5 NOT_FOUND | Invalid `base_snapshot_id` or `target_snapshot_id` |
    /// | GetMetadataDelta | 9 FAILED_PRECONDITION | Changed block tracking is not enabled |
    /// | GetMetadataDelta | 11 OUT_OF_RANGE | Invalid `starting_offset` |
    ///
    /// Missing or malformed fields are INVALID_ARGUMENT in every RPC (the
    /// spec's general rule), and an RPC the plugin does not offer is
    /// UNIMPLEMENTED.
    pub fn code(&self) -> Code {
        match self {
            CsiError::InvalidArgument { .. } => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::ResourceExhausted(_) => Code::ResourceExhausted,
            CsiError::Unimplemented(_) => Code::Unimplemented,
            CsiError::Unavailable(_) => Code::Unavailable,
            CsiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CsiError::Internal(_) => Code::Internal,
            CsiError::Other { code, .. } => *code,
        }
    }

    /// Rebuilds an error from a received code and message (the inverse of
    /// [`CsiError::code`] plus `Display`, as used by the client).
    pub fn from_code(code: Code, message: &str) -> Self {
        // Strip the prefix our own Display adds, so that a round trip through
        // the wire does not repeat it.
        let text = |prefix: &str| message.strip_prefix(prefix).unwrap_or(message).to_string();
        match code {
            Code::InvalidArgument => {
                let parsed = message
                    .strip_prefix("invalid `")
                    .and_then(|rest| rest.split_once("`: "));
                match parsed {
                    Some((field, rule)) => CsiError::invalid(field, rule),
                    None => CsiError::invalid("request", message),
                }
            }
            Code::NotFound => CsiError::NotFound(text("not found: ")),
            Code::AlreadyExists => CsiError::AlreadyExists(text("already exists: ")),
            Code::OutOfRange => CsiError::OutOfRange(text("out of range: ")),
            Code::FailedPrecondition => CsiError::FailedPrecondition(text("failed precondition: ")),
            Code::Aborted => CsiError::Aborted(text("aborted: ")),
            Code::ResourceExhausted => CsiError::ResourceExhausted(text("resource exhausted: ")),
            Code::Unimplemented => CsiError::Unimplemented(text("unimplemented: ")),
            Code::Unavailable => CsiError::Unavailable(text("unavailable: ")),
            Code::DeadlineExceeded => CsiError::DeadlineExceeded(text("deadline exceeded: ")),
            Code::Internal => CsiError::Internal(text("internal error: ")),
            code => CsiError::Other {
                code,
                message: message.to_string(),
            },
        }
    }
}

/// The error of a conversion that cannot fail (the typed-to-wire
/// conversion of a message without sizes), so that generic code can treat
/// every conversion as fallible.
impl From<std::convert::Infallible> for CsiError {
    fn from(never: std::convert::Infallible) -> CsiError {
        match never {}
    }
}

#[cfg(any(feature = "server", feature = "client"))]
mod tonic_conv {
    use super::{Code, CsiError};

    impl From<Code> for tonic::Code {
        fn from(c: Code) -> tonic::Code {
            tonic::Code::from_i32(c as i32)
        }
    }

    impl From<tonic::Code> for Code {
        fn from(c: tonic::Code) -> Code {
            Code::from_i32(c as i32)
        }
    }

    impl From<CsiError> for tonic::Status {
        fn from(e: CsiError) -> tonic::Status {
            // Display is never empty; details stay empty as the spec requires.
            tonic::Status::new(e.code().into(), e.to_string())
        }
    }

    impl From<tonic::Status> for CsiError {
        fn from(s: tonic::Status) -> CsiError {
            CsiError::from_code(s.code().into(), s.message())
        }
    }
}

/// The sizes in tonic's answer to a message over a limit ("Error, decoded
/// (encoded) message length too large: found N bytes, the limit is: M
/// bytes"): `(N, M)`, or `None` if its numbers are not where they were. The
/// client and the server both say it again naming the message and the
/// setting that raises the limit.
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) fn tonic_too_large_sizes(message: &str) -> Option<(u64, u64)> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &message[message.find(marker)? + marker.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Some((number_after("found ")?, number_after("is: ")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for n in 0..=16 {
            assert_eq!(Code::from_i32(n) as i32, n);
        }
        assert_eq!(Code::from_i32(99), Code::Unknown);
    }

    #[test]
    fn messages_are_never_empty_and_survive_the_wire() {
        let all = [
            CsiError::invalid("name", "this field is REQUIRED"),
            CsiError::not_found(""),
            CsiError::already_exists("x"),
            CsiError::out_of_range("x"),
            CsiError::failed_precondition("x"),
            CsiError::aborted("x"),
            CsiError::resource_exhausted("x"),
            CsiError::unimplemented("x"),
            CsiError::Unavailable("x".into()),
            CsiError::DeadlineExceeded("x".into()),
            CsiError::internal("x"),
        ];
        for e in all {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert_eq!(CsiError::from_code(e.code(), &msg), e, "{msg}");
        }
    }
}
