//! Volume requests: the shape of a volume, the size of each member, and the constraints that
//! decide which drives may hold which member.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Bytes, DriveId, DriveKind, GroupId, ServerId, Transports, named_enum};

/// The layout of a volume. Members are numbered group by group: redundancy group 0's members
/// first, then group 1's, and so on.
///
/// Written `{ type = "mirror", legs = 2 }`, the type in lowercase; the type is read in any ASCII
/// case (`"Mirror"`), and a field the type does not take (`legs` for `single`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Shape {
    /// One member on one drive.
    Single,
    /// `legs` mirror legs: one redundancy group of `legs` members.
    Mirror {
        /// Number of legs (at least 1).
        legs: u32,
    },
    /// RAID10: `stripes` redundancy groups, each a mirror of `mirrors` legs.
    Raid10 {
        /// Number of stripes (at least 1).
        stripes: u32,
        /// Legs per stripe (at least 1).
        mirrors: u32,
    },
    /// A slice of one solid-state drive (one member; drive kinds default to SSD and NVMe).
    Slice,
    /// `sets` parity sets of `k` data + `m` parity members. Separation allows at most `m`
    /// members of one set in one domain, so losing that domain loses at most `m` members.
    Parity {
        /// Data members per set (at least 1).
        k: u32,
        /// Parity members per set (at least 1).
        m: u32,
        /// Number of sets (default 1).
        sets: u32,
    },
}

/// A shape as written, before its type is known: every field any type takes (as `i64`, so
/// that a negative count is refused with the rule rather than as "expected u32").
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a shape table such as { type = \"mirror\", legs = 2 }"
)]
struct RawShape {
    #[serde(rename = "type")]
    kind: String,
    legs: Option<i64>,
    stripes: Option<i64>,
    mirrors: Option<i64>,
    k: Option<i64>,
    m: Option<i64>,
    sets: Option<i64>,
}

/// The shape types and the fields each takes.
const SHAPE_TYPES: [(&str, &[&str]); 5] = [
    ("single", &[]),
    ("mirror", &["legs"]),
    ("raid10", &["stripes", "mirrors"]),
    ("slice", &[]),
    ("parity", &["k", "m", "sets"]),
];

/// By hand rather than derived: serde's internally tagged enums match the tag only in the
/// case written (`type = "Mirror"` was refused, while drive kinds, health and modes are read in
/// any case) and let a unit type ignore fields (`{ type = "single", legs = 2 }` was read as a
/// single drive without a word).
impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawShape::deserialize(d)?;
        let names = SHAPE_TYPES.map(|(name, _)| (name, name));
        let kind =
            crate::model::by_name("shape type", &names, &raw.kind).map_err(D::Error::custom)?;
        let takes = SHAPE_TYPES
            .iter()
            .find(|(name, _)| *name == kind)
            .map_or(&[][..], |t| t.1);
        let given = [
            ("legs", raw.legs),
            ("stripes", raw.stripes),
            ("mirrors", raw.mirrors),
            ("k", raw.k),
            ("m", raw.m),
            ("sets", raw.sets),
        ];
        if let Some((field, _)) = given
            .iter()
            .find(|(f, v)| v.is_some() && !takes.contains(f))
        {
            let expected = match takes {
                [] => format!("a {kind} shape takes no other field than `type`"),
                _ => format!(
                    "a {kind} shape takes {}",
                    takes
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(D::Error::custom(format!(
                "unknown field `{field}` ({expected})"
            )));
        }
        // Zero passes here: `Request::validate` names it as `shape.legs`, with the request.
        let count = |field: &'static str, v: Option<i64>| -> Result<Option<u32>, D::Error> {
            v.map(|v| {
                u32::try_from(v).map_err(|_| {
                    D::Error::custom(format!(
                        "`{field}` must be a whole number from 1 to {}, got {v}",
                        u32::MAX
                    ))
                })
            })
            .transpose()
        };
        let need = |field: &'static str, v: Option<i64>| {
            count(field, v)?.ok_or_else(|| D::Error::missing_field(field))
        };
        Ok(match kind {
            "single" => Shape::Single,
            "slice" => Shape::Slice,
            "mirror" => Shape::Mirror {
                legs: need("legs", raw.legs)?,
            },
            "raid10" => Shape::Raid10 {
                stripes: need("stripes", raw.stripes)?,
                mirrors: need("mirrors", raw.mirrors)?,
            },
            _ => Shape::Parity {
                k: need("k", raw.k)?,
                m: need("m", raw.m)?,
                sets: count("sets", raw.sets)?.unwrap_or(1),
            },
        })
    }
}

fn one() -> u32 {
    1
}

/// The shape in the request file's terms, for messages: `single`, `slice`,
/// `mirror (legs = 2)`, `raid10 (stripes = 3, mirrors = 2)`, `parity (k = 4, m = 2, sets = 1)`.
impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Shape::Single => f.write_str("single"),
            Shape::Slice => f.write_str("slice"),
            Shape::Mirror { legs } => write!(f, "mirror (legs = {legs})"),
            Shape::Raid10 { stripes, mirrors } => {
                write!(f, "raid10 (stripes = {stripes}, mirrors = {mirrors})")
            }
            Shape::Parity { k, m, sets } => write!(f, "parity (k = {k}, m = {m}, sets = {sets})"),
        }
    }
}

impl Shape {
    /// Total number of members (`usize::MAX` if that does not fit: such a shape is refused
    /// by every placement, which allows at most 4,096 members).
    pub fn member_count(&self) -> usize {
        let (g, s) = self.groups();
        g.saturating_mul(s)
    }

    /// `(number of redundancy groups, members per group)`.
    pub fn groups(&self) -> (usize, usize) {
        match *self {
            Shape::Single | Shape::Slice => (1, 1),
            Shape::Mirror { legs } => (1, legs as usize),
            Shape::Raid10 { stripes, mirrors } => (stripes as usize, mirrors as usize),
            // Added as usize: `k + m` in u32 overflowed (a panic in debug builds, and in
            // release a wrapped count that could pass validation).
            Shape::Parity { k, m, sets } => (sets as usize, k as usize + m as usize),
        }
    }

    /// How many members of one redundancy group a single failure domain may hold under a
    /// separation constraint: 1 for mirrors, `m` for parity sets.
    pub fn per_domain_cap(&self) -> u32 {
        match *self {
            Shape::Parity { m, .. } => m,
            _ => 1,
        }
    }

    /// Checks the counts; on error gives the field (`shape.legs`, ...) and the rule broken.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |f: &'static str| Err((f, "must be at least 1".to_string()));
        match *self {
            Shape::Mirror { legs: 0 } => bad("shape.legs"),
            Shape::Raid10 { stripes: 0, .. } => bad("shape.stripes"),
            Shape::Raid10 { mirrors: 0, .. } => bad("shape.mirrors"),
            Shape::Parity { k: 0, .. } => bad("shape.k"),
            Shape::Parity { m: 0, .. } => bad("shape.m"),
            Shape::Parity { sets: 0, .. } => bad("shape.sets"),
            _ if self.member_count() > 4096 => {
                // Counted in u128: `member_count` saturates, and a saturated count printed a
                // wrong number (18446744073709551615 for 3.7e28 members).
                let (g, s) = self.groups();
                let n = g as u128 * s as u128;
                Err(("shape", format!("has {n} members; at most 4096")))
            }
            _ => Ok(()),
        }
    }
}

/// Whether a constraint must hold or is only preferred.
///
/// Written in lowercase; read in any ASCII case with surrounding blanks trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Never violated: placement fails instead.
    #[default]
    Hard,
    /// Honoured when possible; a placement that violates it reports the violation.
    Soft,
}

named_enum!(Mode, "mode", [("hard", Hard), ("soft", Soft)]);

/// Separation within each redundancy group, by one of: a failure-domain hierarchy `level`, the
/// drives' `storage_group`, or a drive `attribute` (exactly one is given).
///
/// A domain (group, attribute value) may hold at most one member of a redundancy group, or `m`
/// of a `k+m` parity set. A drive with no domain at that level (no storage group, no such
/// attribute) is unconstrained by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Separation {
    /// The level name, as in the inventory's domains (`rack`, `jbod`, ...); empty when the
    /// constraint separates by storage group or attribute.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub level: String,
    /// Separate by storage group (`sgResiliency`: survive the loss of a storage group).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub storage_group: bool,
    /// Separate by this drive attribute (`psu`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// Hard or soft.
    #[serde(default)]
    pub mode: Mode,
}

impl Separation {
    /// Separation at a failure-domain level.
    pub fn level(level: &str, mode: Mode) -> Self {
        Separation {
            level: level.to_string(),
            storage_group: false,
            attribute: None,
            mode,
        }
    }

    /// Separation by storage group.
    pub fn storage_group(mode: Mode) -> Self {
        Separation {
            level: String::new(),
            storage_group: true,
            attribute: None,
            mode,
        }
    }

    /// Separation by a drive attribute.
    pub fn attribute(name: &str, mode: Mode) -> Self {
        Separation {
            level: String::new(),
            storage_group: false,
            attribute: Some(name.to_string()),
            mode,
        }
    }

    /// What this constraint separates by (a level when none is set).
    pub fn scope(&self) -> crate::explain::Scope {
        use crate::explain::Scope;
        if self.storage_group {
            Scope::StorageGroup
        } else if let Some(a) = &self.attribute {
            Scope::Attribute(a.clone())
        } else {
            Scope::Level(self.level.clone())
        }
    }
}

/// Spreading of a volume's members across bandwidth domains of one kind (whole volume).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    /// The bandwidth-domain kind (`uplink`, `port`, ...).
    pub kind: String,
    /// Hard or soft.
    #[serde(default)]
    pub mode: Mode,
    /// At most this many members (of the volume, or of each redundancy group with
    /// `per_group`) behind one bandwidth domain of this kind.
    #[serde(default = "one")]
    pub max_per_domain: u32,
    /// Count per redundancy group (each mirror, stripe or parity set) instead of per volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_group: bool,
}

/// A CSI-style topology segment: level name to failure-domain id, e.g. `{ rack = "r1" }`.
/// A drive matches when, for every entry, its ancestor at that level is that domain.
pub type Segment = BTreeMap<String, String>;

/// A member fixed to a drive (expansion, replacing one member).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Member index (see [`Shape`] for numbering).
    pub member: usize,
    /// The drive holding it.
    pub drive: DriveId,
}

/// A volume request: shape, per-member size and constraints.
///
/// Every field but `shape` and `size` is optional; absent means "no constraint".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Free-form label echoed in results and explanations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Layout.
    pub shape: Shape,
    /// Bytes each member takes from its drive.
    pub size: Bytes,
    /// Allowed drive kinds (empty: any, except [`Shape::Slice`] which defaults to SSD and NVMe).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<DriveKind>,
    /// Minimum spindle speed; applies to HDDs only (solid-state drives have no spindle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rpm: Option<u32>,
    /// Tags a drive must all carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_tags: Vec<String>,
    /// Tags a drive must carry none of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tags: Vec<String>,
    /// Allowed storage groups (empty: any drive, grouped or not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_groups: Vec<GroupId>,
    /// Allowed transports: a drive must support at least one (absent: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Transports>,
    /// Failure-domain separation per level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub separation: Vec<Separation>,
    /// Bandwidth demand per member in bytes/s; every bandwidth domain a member's drive sits
    /// behind must have this much headroom (for all members of the volume behind it). Hard.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bandwidth: Bytes,
    /// Spreading across bandwidth domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bandwidth_spread: Vec<Spread>,
    /// The server the volume attaches to: drives must be reachable through one of its
    /// bandwidth domains (if it lists any); drives near it are preferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_server: Option<ServerId>,
    /// Accessibility requirement: a drive must match at least one segment (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requisite: Vec<Segment>,
    /// Preferred segments, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<Segment>,
    /// Members fixed to drives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<Pin>,
    /// Drives that must not be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_drives: Vec<DriveId>,
}

fn is_zero(b: &Bytes) -> bool {
    b.0 == 0
}

impl Request {
    /// A request with the given shape and member size and no constraints.
    pub fn new(shape: Shape, size: u64) -> Self {
        Request {
            name: None,
            shape,
            size: Bytes(size),
            kinds: Vec::new(),
            min_rpm: None,
            require_tags: Vec::new(),
            exclude_tags: Vec::new(),
            storage_groups: Vec::new(),
            transports: None,
            separation: Vec::new(),
            bandwidth: Bytes(0),
            bandwidth_spread: Vec::new(),
            attach_server: None,
            requisite: Vec::new(),
            preferred: Vec::new(),
            pinned: Vec::new(),
            exclude_drives: Vec::new(),
        }
    }

    /// Adds a separation constraint at `level` (builder style).
    pub fn separate(mut self, level: &str, mode: Mode) -> Self {
        self.separation.push(Separation::level(level, mode));
        self
    }

    /// Adds a separation constraint by storage group (builder style).
    pub fn separate_storage_groups(mut self, mode: Mode) -> Self {
        self.separation.push(Separation::storage_group(mode));
        self
    }

    /// Adds a separation constraint by a drive attribute (builder style).
    pub fn separate_by_attribute(mut self, attribute: &str, mode: Mode) -> Self {
        self.separation.push(Separation::attribute(attribute, mode));
        self
    }

    /// A label for messages: the name, or the shape type.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => match self.shape {
                Shape::Single => "single",
                Shape::Mirror { .. } => "mirror",
                Shape::Raid10 { .. } => "raid10",
                Shape::Slice => "slice",
                Shape::Parity { .. } => "parity",
            }
            .to_string(),
        }
    }
}

/// A file of requests, as read by the `place` example: `[[request]]` tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// The requests, in order.
    #[serde(default, rename = "request")]
    pub requests: Vec<Request>,
}

impl RequestFile {
    /// Parses a TOML request file.
    pub fn from_toml(text: &str) -> Result<Self, crate::InventoryError> {
        toml::from_str(text).map_err(|e| crate::InventoryError::from_toml(text, &e))
    }
}
