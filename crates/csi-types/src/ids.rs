//! Newtypes for the identifiers and names of CSI. Each is validated once, at
//! construction, so a handler never re-checks it.
//!
//! # Which code a bad value answers
//!
//! Whose bug a bad value is depends on who wrote it, and so does the gRPC
//! code the CO must receive (CSI spec, "Error Scheme"): a bad value in a
//! request is the caller's (`INVALID_ARGUMENT`), a bad value in a response is
//! the driver's (`INTERNAL`). The code is therefore decided where the value
//! is used, not by the newtype, except where the newtype has one use only:
//!
//! | newtype | found in | `new`'s error |
//! |---|---|---|
//! | [`VolumeName`], [`SnapshotName`], [`GroupSnapshotName`], [`NodePath`] | requests only | `INVALID_ARGUMENT` |
//! | [`PluginName`] | `GetPluginInfoResponse` only | `INTERNAL` |
//! | [`VolumeId`], [`SnapshotId`], [`GroupSnapshotId`], [`NodeId`], [`TopologyKey`], [`TopologyValue`] | requests and responses | `INVALID_ARGUMENT`: the caller's value |
//!
//! A driver building a response from its own strings hands them to the
//! response builder, which validates them and answers `INTERNAL` naming the
//! response and the field: [`crate::types::Volume::try_new`],
//! [`crate::types::Snapshot::try_new`],
//! [`crate::node::NodeGetInfoResponse::try_new`]; for any other field,
//! [`CsiError::built_by_driver`] turns the newtype's error into that one.
//!
//! A value that comes from outside a CSI message (a flag, a config file) is
//! neither: parse it with [`str::parse`], whose error, [`InvalidValue`],
//! is the rule alone, for the caller to prefix with the flag or key it came
//! from.
//!
//! ```
//! use csi_types::{Code, ids::{PluginName, VolumeId}, types::Volume};
//! // A request's volume id, checked for the CO: the caller's mistake.
//! assert_eq!(VolumeId::new("").unwrap_err().code(), Code::InvalidArgument);
//! // The same id in the driver's own response: the driver's bug.
//! let e = Volume::try_new("", 1 << 30).unwrap_err();
//! assert_eq!(e.code(), Code::Internal);
//! assert_eq!(
//!     e.to_string(),
//!     "internal error: invalid Volume built by the driver: volume_id: this field is REQUIRED"
//! );
//! // A plugin name only ever comes from the driver.
//! assert_eq!(PluginName::new("-bad").unwrap_err().code(), Code::Internal);
//! // The same name typed by a user: the rule, for the flag's message.
//! let e = "-bad".parse::<PluginName>().unwrap_err();
//! assert!(e.to_string().starts_with("the plugin name must follow domain name notation"), "{e}");
//! ```

use std::fmt;

use crate::CsiError;
use crate::validate;

macro_rules! string_newtype {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal, check = $check:path
        $(, built_by_the_driver_in = $response:literal)?
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates the value; the error names the field this type
            /// usually fills and the rule it breaks. Its code is
            /// `INVALID_ARGUMENT`, except for a type that only a driver's
            /// response carries, whose error is `INTERNAL` (see the
            /// module docs).
            pub fn new(value: impl Into<String>) -> Result<Self, CsiError> {
                let parsed = Self::parse($field, value.into());
                $(let parsed = parsed.map_err(|e| CsiError::built_invalid($response, e));)?
                parsed
            }

            /// Validates the value, naming `field` in the error.
            pub(crate) fn parse(field: &str, value: String) -> Result<Self, CsiError> {
                $check(field, &value)?;
                Ok(Self(value))
            }

            /// Checks a value in place against this type's rules, naming
            /// `field` in the error: the verdict of [`Self::parse`], without
            /// taking the string.
            // Generated for every newtype, used by the response checks of
            // those that responses carry.
            #[allow(dead_code)]
            pub(crate) fn check(field: &str, value: &str) -> Result<(), CsiError> {
                $check(field, value)
            }

            /// Wraps a value that [`Self::check`] accepted.
            // Generated for every newtype, used where a check came first.
            #[allow(dead_code)]
            pub(crate) fn from_checked(value: String) -> Self {
                Self(value)
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the newtype, returning the string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = CsiError;
            fn try_from(v: String) -> Result<Self, CsiError> {
                Self::new(v)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = CsiError;
            fn try_from(v: &str) -> Result<Self, CsiError> {
                Self::new(v)
            }
        }

        /// Parses a value from outside a CSI message (a flag, a config
        /// file): the error is the rule alone, for the caller to prefix
        /// with where the value came from, and carries no gRPC code (see
        /// [`InvalidValue`]).
        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(v: &str) -> Result<Self, InvalidValue> {
                $check("", v).map_err(|e| InvalidValue::new(stringify!($name), $field, None $(.or(Some($response)))?, e))?;
                Ok(Self(v.to_string()))
            }
        }
    };
}

/// A value from outside a CSI message (a flag, a config file, an
/// environment variable) that breaks the rule of the newtype it was parsed
/// into with [`str::parse`].
///
/// Its `Display` is the rule alone, without a field of the wire or a gRPC
/// code, for the caller to prefix with where the value came from (a flag's
/// name). With `?` in a driver method it becomes the [`CsiError`] that the
/// newtype's `new` gives for the same value (`INTERNAL` for a
/// [`PluginName`], `INVALID_ARGUMENT` naming the field for the others).
///
/// ```
/// use csi_types::ids::{NodeId, PluginName};
/// let e = "csi_driver".parse::<PluginName>().unwrap_err();
/// assert_eq!(
///     format!("--driver-name: {e}"),
///     "--driver-name: the plugin name must follow domain name notation: begin and end with \
///      an alphanumeric and contain only alphanumerics, '-' or '.' (got \"csi_driver\")"
/// );
/// assert_eq!(e.type_name(), "PluginName");
/// let e = "".parse::<NodeId>().unwrap_err();
/// assert_eq!(format!("--node-id: {e}"), "--node-id: must not be empty");
/// assert_eq!("n".repeat(257).parse::<NodeId>().unwrap_err().rule(), "must be at most 256 bytes, got 257");
/// assert_eq!("node-1".parse::<NodeId>().unwrap().as_str(), "node-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct InvalidValue {
    type_name: &'static str,
    field: &'static str,
    response: Option<&'static str>,
    rule: String,
}

impl InvalidValue {
    fn new(
        type_name: &'static str,
        field: &'static str,
        response: Option<&'static str>,
        e: CsiError,
    ) -> Self {
        let rule = match e {
            // The wire's word for an empty field; a flag or a config key is not a field.
            CsiError::InvalidArgument { rule, .. } if rule == validate::REQUIRED => {
                "must not be empty".to_string()
            }
            CsiError::InvalidArgument { rule, .. } => rule,
            other => other.to_string(),
        };
        InvalidValue {
            type_name,
            field,
            response,
            rule,
        }
    }

    /// The rule the value breaks (the `Display` text).
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The newtype the value was parsed into (`"NodeId"`).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

impl From<InvalidValue> for CsiError {
    fn from(e: InvalidValue) -> CsiError {
        let err = CsiError::invalid(e.field, e.rule);
        match e.response {
            Some(response) => err.built_by_driver(response),
            None => err,
        }
    }
}

fn id(field: &str, v: &str) -> Result<(), CsiError> {
    validate::required(field, v)?;
    validate::string(field, v)
}

fn name(field: &str, v: &str) -> Result<(), CsiError> {
    validate::required(field, v)?;
    validate::string(field, v)?;
    validate::no_banned_controls(field, v)
}

fn node_id(field: &str, v: &str) -> Result<(), CsiError> {
    validate::required(field, v)?;
    validate::max_bytes(field, v, validate::MAX_NODE_ID_BYTES)
}

fn plugin_name(field: &str, v: &str) -> Result<(), CsiError> {
    validate::domain_name(field, "the plugin name", v, false)
}

fn path(field: &str, v: &str) -> Result<(), CsiError> {
    validate::path(field, v)
}

fn topology_key(field: &str, v: &str) -> Result<(), CsiError> {
    let (prefix, name) = match v.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, v),
    };
    if let Some(prefix) = prefix {
        validate::domain_name(field, "the topology key prefix", prefix, true)?;
    }
    validate::label(field, "the topology key name", name)
}

fn topology_value(field: &str, v: &str) -> Result<(), CsiError> {
    validate::label(field, "a topology segment", v)
}

string_newtype! {
    /// The identifier of a volume, chosen by the plugin.
    ///
    /// # Invariants
    /// Non-empty and at most 128 bytes.
    VolumeId, field = "volume_id", check = id
}

string_newtype! {
    /// The identifier of a snapshot, chosen by the plugin.
    ///
    /// # Invariants
    /// Non-empty and at most 128 bytes.
    SnapshotId, field = "snapshot_id", check = id
}

string_newtype! {
    /// The identifier of a volume group snapshot, chosen by the plugin.
    ///
    /// # Invariants
    /// Non-empty and at most 128 bytes.
    GroupSnapshotId, field = "group_snapshot_id", check = id
}

string_newtype! {
    /// The identifier of a node, as returned by `NodeGetInfo`.
    ///
    /// # Invariants
    /// Non-empty and at most 256 bytes (the spec's override of the general limit).
    NodeId, field = "node_id", check = node_id
}

string_newtype! {
    /// The CO's name for a volume to create: the key of `CreateVolume` idempotency.
    ///
    /// # Invariants
    /// Non-empty, at most 128 bytes, and free of the control characters the
    /// spec bans (U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F).
    VolumeName, field = "name", check = name
}

string_newtype! {
    /// The CO's name for a snapshot to create: the key of `CreateSnapshot` idempotency.
    ///
    /// # Invariants
    /// As [`VolumeName`].
    SnapshotName, field = "name", check = name
}

string_newtype! {
    /// The CO's name for a volume group snapshot to create.
    ///
    /// # Invariants
    /// As [`VolumeName`].
    GroupSnapshotName, field = "name", check = name
}

string_newtype! {
    /// The plugin's name, returned by `GetPluginInfo`.
    ///
    /// # Invariants
    /// Domain name notation: at most 63 characters, beginning and ending with
    /// an ASCII alphanumeric, with `-`, `.` and alphanumerics between.
    ///
    /// ```
    /// use csi_types::ids::PluginName;
    /// assert!(PluginName::new("local.csi.example.com").is_ok());
    /// assert!(PluginName::new("-bad").is_err());
    /// ```
    ///
    /// Only a driver builds one, for its `GetPluginInfoResponse`, so a bad
    /// name is the driver's bug: [`PluginName::new`] answers `INTERNAL`
    /// naming the response, the field and the rule, and a driver passing
    /// it on with `?` does not blame the CO's request.
    ///
    /// ```
    /// use csi_types::{Code, ids::PluginName};
    /// let e = PluginName::new("csi_driver").unwrap_err();
    /// assert_eq!(e.code(), Code::Internal);
    /// assert!(e.to_string().contains("GetPluginInfoResponse built by the driver: name: "), "{e}");
    /// ```
    ///
    /// A name the user chose (a `--driver-name` flag, a config file) is
    /// parsed instead: the error is the rule, without the response
    /// ([`InvalidValue`]).
    ///
    /// ```
    /// use csi_types::ids::PluginName;
    /// let e = "csi_driver".parse::<PluginName>().unwrap_err();
    /// assert!(e.to_string().starts_with("the plugin name must follow domain name notation"), "{e}");
    /// ```
    PluginName, field = "name", check = plugin_name,
    built_by_the_driver_in = "GetPluginInfoResponse"
}

string_newtype! {
    /// A path on the node: `target_path`, `staging_target_path` or `volume_path`.
    ///
    /// # Invariants
    /// Non-empty, absolute, at most 4096 bytes, no NUL byte.
    NodePath, field = "target_path", check = path
}

string_newtype! {
    /// A topology key such as `zone` or `topology.example.com/rack`.
    ///
    /// # Invariants
    /// An optional prefix (lower-case domain name, at most 63 characters) and
    /// `/`, then a name of at most 63 characters that begins and ends with an
    /// ASCII alphanumeric with `-`, `_`, `.` or alphanumerics between.
    TopologyKey, field = "segments", check = topology_key
}

string_newtype! {
    /// A topology segment value such as `zone-1`.
    ///
    /// # Invariants
    /// At most 63 characters, beginning and ending with an ASCII alphanumeric,
    /// with `-`, `_`, `.` or alphanumerics between.
    TopologyValue, field = "segments", check = topology_value
}

impl TopologyKey {
    /// The prefix before the `/`, if the key has one. The spec asks that
    /// every topology key a plugin returns, in any RPC, carry the same
    /// prefix when one is specified.
    ///
    /// ```
    /// use csi_types::ids::TopologyKey;
    /// let k = TopologyKey::new("topology.example.com/rack").unwrap();
    /// assert_eq!(k.prefix(), Some("topology.example.com"));
    /// assert_eq!(k.name(), "rack");
    /// assert_eq!(TopologyKey::new("zone").unwrap().prefix(), None);
    /// ```
    pub fn prefix(&self) -> Option<&str> {
        self.0.split_once('/').map(|(p, _)| p)
    }

    /// The name after the prefix (the whole key when it has none).
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(self.0.as_str(), |(_, n)| n)
    }
}

impl NodePath {
    /// The path as a [`std::path::Path`].
    pub fn as_path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_enforce_length_and_presence() {
        assert!(VolumeId::new("v").is_ok());
        assert!(VolumeId::new("x".repeat(128)).is_ok());
        let e = VolumeId::new("x".repeat(129)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `volume_id`: must be at most 128 bytes, got 129"
        );
        assert!(VolumeId::new("").is_err());
        assert!(NodeId::new("n".repeat(256)).is_ok());
        assert!(NodeId::new("n".repeat(257)).is_err());
    }

    #[test]
    fn names_reject_banned_controls_but_allow_whitespace() {
        assert!(VolumeName::new("pvc-1\twith tab\nand newline\r").is_ok());
        for bad in [
            "a\u{0}", "a\u{b}", "a\u{c}", "a\u{1f}", "a\u{7f}", "a\u{9f}",
        ] {
            let e = VolumeName::new(bad).unwrap_err();
            assert!(e.to_string().contains("control character"), "{e}");
        }
        assert!(VolumeName::new("ünïcödé ✓").is_ok());
    }

    #[test]
    fn plugin_names_follow_domain_notation() {
        assert!(PluginName::new("a").is_ok());
        assert!(PluginName::new("Local.CSI-driver.example.com").is_ok());
        assert!(PluginName::new("x".repeat(63)).is_ok());
        assert!(PluginName::new("x".repeat(64)).is_err());
        assert!(PluginName::new("a_b").is_err());
        assert!(PluginName::new("a.").is_err());
        assert!(PluginName::new("").is_err());
    }

    #[test]
    fn every_label_of_a_domain_name_is_non_empty_and_ends_in_alphanumerics() {
        // RFC 1035 section 2.3.1 (a leading digit as RFC 1123 allows).
        assert!(PluginName::new("0csi.example.com").is_ok());
        assert!(PluginName::new("a-b.c--d.e").is_ok());
        for bad in ["a..b", "a.-b", "a-.b", "csi.-x.example.com"] {
            let e = PluginName::new(bad).unwrap_err();
            assert!(
                e.to_string().contains(
                    "name: the plugin name must follow domain name notation: each \
                     dot-separated label must be non-empty and begin and end with an alphanumeric"
                ),
                "{bad}: {e}"
            );
        }
        // The topology key prefix follows the same notation, in lower case.
        assert!(TopologyKey::new("topology.example.com/zone").is_ok());
        let e = TopologyKey::new("topology..example.com/zone").unwrap_err();
        assert!(
            e.to_string().contains(
                "the topology key prefix must follow domain name notation: each dot-separated \
                 label must be non-empty and begin and end with a lower-case alphanumeric"
            ),
            "{e}"
        );
    }

    #[test]
    fn only_the_response_only_plugin_name_answers_internal() {
        use crate::Code;
        // The driver's bug: INTERNAL, naming the response, field and rule.
        let e = PluginName::new("a_b").unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(
            e.to_string().starts_with(
                "internal error: invalid GetPluginInfoResponse built by the driver: name: \
                 the plugin name must follow domain name notation"
            ),
            "{e}"
        );
        // Shared with requests: the caller's value, INVALID_ARGUMENT.
        assert_eq!(VolumeId::new("").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(NodeId::new("").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(
            VolumeName::new("").unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn a_value_from_outside_a_message_parses_to_the_rule_alone() {
        use std::str::FromStr;
        // The user's plugin name: the rule, no response and no INTERNAL.
        let e = PluginName::from_str("a_b").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the plugin name must follow domain name notation"),
            "{e}"
        );
        assert_eq!(e.type_name(), "PluginName");
        // With `?` in a driver, the same error as `new`.
        assert_eq!(CsiError::from(e), PluginName::new("a_b").unwrap_err(),);
        // Every newtype has the same shape; an empty value is "empty", not a REQUIRED field.
        assert_eq!(
            NodeId::from_str("").unwrap_err().to_string(),
            "must not be empty"
        );
        assert_eq!(
            VolumeId::from_str(&"x".repeat(129))
                .unwrap_err()
                .to_string(),
            "must be at most 128 bytes, got 129"
        );
        let e = VolumeName::from_str("a\u{0}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "must not contain the control character U+0000"
        );
        assert_eq!(CsiError::from(e), VolumeName::new("a\u{0}").unwrap_err());
        assert!(
            NodePath::from_str("relative")
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        assert!(TopologyKey::from_str("Bad.example.com/x").is_err());
        assert_eq!(TopologyValue::from_str("z1").unwrap().as_str(), "z1");
        assert_eq!(
            PluginName::from_str("a.b").unwrap(),
            PluginName::new("a.b").unwrap()
        );
    }

    #[test]
    fn topology_keys_and_values() {
        assert!(TopologyKey::new("zone").is_ok());
        assert!(TopologyKey::new("topology.example.com/rack_1").is_ok());
        assert!(TopologyKey::new("Topology.example.com/rack").is_err());
        assert!(TopologyKey::new("example.com/").is_err());
        assert!(TopologyKey::new("/zone").is_err());
        assert!(TopologyKey::new("a/b/c").is_err());
        assert!(TopologyValue::new("Z1").is_ok());
        assert!(TopologyValue::new("z-1.a_b").is_ok());
        assert!(TopologyValue::new("-z").is_err());
        assert!(TopologyValue::new("").is_err());
    }

    #[test]
    fn a_lazily_named_check_builds_the_field_name_only_for_an_error() {
        let k = "Bad.example.com/x";
        let named =
            crate::validate::lazily(|| format!("segments[{k:?}]"), |f| TopologyKey::check(f, k))
                .unwrap_err();
        let direct = TopologyKey::parse(
            "segments[\"Bad.example.com/x\"]",
            "Bad.example.com/x".into(),
        )
        .unwrap_err();
        assert_eq!(named.to_string(), direct.to_string());
        assert!(
            named
                .to_string()
                .contains("segments[\"Bad.example.com/x\"]")
        );
        crate::validate::lazily(
            || panic!("built for a valid value"),
            |f| TopologyValue::check(f, "z1"),
        )
        .unwrap();
    }

    #[test]
    fn paths_must_be_absolute() {
        assert!(NodePath::new("/var/lib/kubelet/x").is_ok());
        assert!(NodePath::new("relative").is_err());
        assert!(NodePath::new(format!("/{}", "p".repeat(300))).is_ok());
        assert!(NodePath::new("/a\0b").is_err());
    }
}
