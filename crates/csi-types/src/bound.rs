//! Object-bound fields: the typed layer's side of the precedence rule
//! ("the missing object first").
//!
//! # The rule
//!
//! When a request names an object that does not exist, the plugin answers as
//! the spec says for a missing object — `NOT_FOUND`, or `OK` for the RPCs that
//! delete or unpublish — even if another field of the request is malformed in
//! a way that only matters for an existing object.
//!
//! A field "only matters for an existing object" when the spec defines it by
//! that object's existing state and the RPC only reads it to find or
//! cross-check the object. CSI v1.12 has three such fields, in four RPCs;
//! the typed requests hold them as [`ObjectBound`] values, kept raw and
//! validated by [`ObjectBound::get`] after the driver has looked the object up:
//!
//! | RPC | object-bound fields | answer for a missing object |
//! |---|---|---|
//! | `NodeGetVolumeStats` | `volume_path`, `staging_target_path` ("any valid path where the volume was previously staged or published") | `NOT_FOUND` |
//! | `NodeExpandVolume` | `volume_path`, `staging_target_path` ("the path on which the volume is available") | `NOT_FOUND` |
//! | `GetVolumeGroupSnapshot` | `snapshot_ids` (the group's members, "as the CO knows them") | `NOT_FOUND` |
//! | `DeleteVolumeGroupSnapshot` | `snapshot_ids` | `OK` |
//!
//! What [`ObjectBound::get`] checks once the object exists: a node path is
//! REQUIRED (for `volume_path`) and absolute. `NodeGetVolumeStats` says so
//! ("MUST be an absolute path"); `NodeExpandVolume` does not say it of
//! `volume_path`, but the only paths on which a volume is available are the
//! `target_path`s and `staging_target_path`s it was published or staged at,
//! and those MUST be absolute, so a relative one names no such place. Only
//! for an existing volume is that worth an answer, hence object-bound.
//!
//! Every other field is validated before the driver runs, as before, and a
//! bad one answers `INVALID_ARGUMENT` whether or not the object exists:
//!
//! - the id that names the object (`volume_id`, `snapshot_id`,
//!   `group_snapshot_id`, …): without a valid id there is nothing to look up;
//! - what the CO asks for (capabilities, capacity ranges, parameters,
//!   secrets, filters and paging of the List RPCs, offsets of the
//!   SnapshotMetadata RPCs);
//! - node ids (`ControllerPublishVolume`, `ControllerUnpublishVolume`): the
//!   CO copies them from `NodeGetInfo`, so one that breaks the 256-byte
//!   limit is the CO's bug, not a reference into the volume's state; a
//!   *well-formed* node id that names no node is a missing object (`OK` for
//!   unpublish, `NOT_FOUND` for publish), as the spec says;
//! - paths the RPC acts on rather than looks up: `target_path` of
//!   `NodePublishVolume`/`NodeUnpublishVolume` and `staging_target_path` of
//!   `NodeStageVolume`/`NodeUnstageVolume`/`NodePublishVolume` are places the
//!   CO owns and the plugin mounts or unmounts, not descriptions of where the
//!   volume already is (the CSI community's sanity suite, too, expects
//!   `INVALID_ARGUMENT` for a missing `target_path` with an unknown volume).
//!
//! # For driver authors
//!
//! Look the object up first, answer the missing-object code if it is not
//! there, then call [`ObjectBound::get`] with `?`: a malformed value answers
//! `INVALID_ARGUMENT` naming the field and the rule, exactly as the eager
//! checks do.
//!
//! ```
//! use csi_types::node::{NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse};
//! use csi_types::{Code, CsiError, ids::NodePath, proto};
//!
//! fn stats(known: &[&str], req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse, CsiError> {
//!     if !known.contains(&req.volume_id.as_str()) {
//!         return Err(CsiError::not_found(format!("volume {} does not exist", req.volume_id)));
//!     }
//!     let path: NodePath = req.volume_path.get()?; // validated now, after the lookup
//!     # let _ = path;
//!     Ok(NodeGetVolumeStatsResponse::default())
//! }
//!
//! let req = |path: &str| NodeGetVolumeStatsRequest::try_from(proto::NodeGetVolumeStatsRequest {
//!     volume_id: "vol-1".into(),
//!     volume_path: path.into(),
//!     staging_target_path: String::new(),
//! }).unwrap();
//! // A relative path with an unknown volume: the missing volume wins.
//! assert_eq!(stats(&[], req("some/path")).unwrap_err().code(), Code::NotFound);
//! // The same path with a known volume: the malformed field is reported.
//! let err = stats(&["vol-1"], req("some/path")).unwrap_err();
//! assert_eq!(err.to_string(), "invalid `volume_path`: must be an absolute path");
//! ```

use std::fmt;

use crate::CsiError;
use crate::ids::{NodePath, SnapshotId};
use crate::types::id_list;

/// A value an [`ObjectBound`] field can hold, with its wire form. Each
/// type serves exactly one field name of CSI, which errors name.
pub trait BoundValue: Sized {
    /// The wire name of the field this type fills.
    const FIELD: &'static str;
    /// The wire form, kept as received.
    type Raw: Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// Validates the wire form, naming `field` in the error.
    fn parse(field: &str, raw: Self::Raw) -> Result<Self, CsiError>;
    /// Converts a valid value back to the wire form.
    fn into_raw(self) -> Self::Raw;
}

/// A REQUIRED node path (`volume_path`).
impl BoundValue for NodePath {
    const FIELD: &'static str = "volume_path";
    type Raw = String;
    fn parse(field: &str, raw: String) -> Result<Self, CsiError> {
        NodePath::parse(field, raw)
    }
    fn into_raw(self) -> String {
        self.into_string()
    }
}

/// An OPTIONAL node path (`staging_target_path`): empty means unset.
impl BoundValue for Option<NodePath> {
    const FIELD: &'static str = "staging_target_path";
    type Raw = String;
    fn parse(field: &str, raw: String) -> Result<Self, CsiError> {
        crate::types::optional_id(field, raw, NodePath::parse)
    }
    fn into_raw(self) -> String {
        self.map(String::from).unwrap_or_default()
    }
}

/// A REQUIRED, non-empty list of snapshot ids (`snapshot_ids`).
impl BoundValue for Vec<SnapshotId> {
    const FIELD: &'static str = "snapshot_ids";
    type Raw = Vec<String>;
    fn parse(field: &str, raw: Vec<String>) -> Result<Self, CsiError> {
        id_list(field, raw, true, SnapshotId::parse)
    }
    fn into_raw(self) -> Vec<String> {
        self.into_iter().map(String::from).collect()
    }
}

/// A request field validated after the object lookup (see the module docs
/// for the rule and the fields it applies to).
///
/// # Invariants
/// None on the raw value: that is the point. [`ObjectBound::get`] applies the
/// same rule the eager typed layer would, naming the same field.
#[derive(Clone)]
pub struct ObjectBound<T: BoundValue> {
    raw: T::Raw,
}

impl<T: BoundValue> ObjectBound<T> {
    /// A field holding a valid value (for building requests); `From` does
    /// the same.
    ///
    /// ```
    /// use csi_types::{bound::ObjectBound, ids::NodePath};
    /// let p = ObjectBound::new(NodePath::new("/mnt/v").unwrap());
    /// assert_eq!(p.get().unwrap().as_str(), "/mnt/v");
    /// let q: ObjectBound<NodePath> = NodePath::new("/mnt/v").unwrap().into();
    /// assert_eq!(p, q);
    /// ```
    pub fn new(value: T) -> Self {
        ObjectBound {
            raw: value.into_raw(),
        }
    }

    /// A field holding a wire value as received, not yet validated.
    pub fn from_raw(raw: T::Raw) -> Self {
        ObjectBound { raw }
    }

    /// Validates the value now. Call it after the object was found: the
    /// error is `INVALID_ARGUMENT` naming the field and the rule.
    pub fn get(&self) -> Result<T, CsiError> {
        T::parse(T::FIELD, self.raw.clone())
    }

    /// The value as received.
    pub fn raw(&self) -> &T::Raw {
        &self.raw
    }

    /// The value as received, consuming the field.
    pub fn into_raw(self) -> T::Raw {
        self.raw
    }
}

impl<T: BoundValue> From<T> for ObjectBound<T> {
    fn from(value: T) -> Self {
        ObjectBound::new(value)
    }
}

impl<T: BoundValue> PartialEq for ObjectBound<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<T: BoundValue> Eq for ObjectBound<T> {}

impl<T: BoundValue> fmt::Debug for ObjectBound<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectBound({:?})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[test]
    fn get_applies_the_eager_rule_and_names_the_field() {
        let p: ObjectBound<NodePath> = ObjectBound::from_raw("rel".into());
        let e = p.get().unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "invalid `volume_path`: must be an absolute path"
        );
        let e = ObjectBound::<NodePath>::from_raw(String::new())
            .get()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `volume_path`: this field is REQUIRED"
        );

        let s: ObjectBound<Option<NodePath>> = ObjectBound::from_raw(String::new());
        assert_eq!(s.get().unwrap(), None);

        let ids: ObjectBound<Vec<SnapshotId>> = ObjectBound::from_raw(vec![]);
        assert_eq!(
            ids.get().unwrap_err().to_string(),
            "invalid `snapshot_ids`: this field is REQUIRED: at least one entry"
        );
        let ids: ObjectBound<Vec<SnapshotId>> =
            ObjectBound::from_raw(vec!["a".into(), String::new()]);
        assert_eq!(
            ids.get().unwrap_err().to_string(),
            "invalid `snapshot_ids[1]`: this field is REQUIRED"
        );
    }

    #[test]
    fn a_valid_value_round_trips() {
        let ids = vec![
            SnapshotId::new("s1").unwrap(),
            SnapshotId::new("s2").unwrap(),
        ];
        let b = ObjectBound::new(ids.clone());
        assert_eq!(b.raw(), &vec!["s1".to_string(), "s2".to_string()]);
        assert_eq!(b.get().unwrap(), ids);
    }
}
