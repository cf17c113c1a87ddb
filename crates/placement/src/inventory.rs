//! The inventory: failure domains, bandwidth domains, storage groups, drives, servers and placed
//! volumes; its TOML file format; and validation with errors that name the offending entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    BwDomainId, Bytes, DomainId, DriveId, DriveKind, GroupId, Health, RawSize, ServerId,
    Transports, VolumeId,
};
use crate::request::Request;

/// Marker for "no index".
pub(crate) const NONE: u32 = u32::MAX;

/// Why an inventory (or request file) was rejected. Every variant names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// The text is not valid TOML or does not match the format.
    #[error("parse error: {message}")]
    Parse {
        /// The parser's message (with line and column).
        message: String,
    },
    /// Two entries of one kind share an id.
    #[error("duplicate {kind} id '{id}'")]
    DuplicateId {
        /// Entry kind (`drive`, `domain`, ...).
        kind: &'static str,
        /// The repeated id.
        id: String,
    },
    /// An entry refers to an id that does not exist.
    #[error("{entry}: {field} refers to unknown {target} '{id}'")]
    UnknownReference {
        /// The entry, e.g. `drive 'd1'`.
        entry: String,
        /// The field holding the reference.
        field: &'static str,
        /// What kind of thing was expected.
        target: &'static str,
        /// The missing id.
        id: String,
    },
    /// Failure domains' parent links form a cycle.
    #[error("failure-domain cycle: {}", path.join(" -> "))]
    Cycle {
        /// The domains on the cycle, repeating the first at the end.
        path: Vec<String>,
    },
    /// A field breaks a rule.
    #[error("{entry}: {field} {reason}")]
    Invalid {
        /// The entry, e.g. `drive 'd1'`.
        entry: String,
        /// The field.
        field: &'static str,
        /// The rule broken.
        reason: String,
    },
}

/// Sizes must fit TOML's signed 64-bit integers so that the state can always be saved.
fn check_toml_int(
    entry: &dyn Fn() -> String,
    field: &'static str,
    v: Bytes,
) -> Result<(), InventoryError> {
    if v.0 > i64::MAX as u64 {
        return Err(invalid(
            entry(),
            field,
            format!("must be at most {} (the TOML integer range)", i64::MAX),
        ));
    }
    Ok(())
}

fn invalid(entry: String, field: &'static str, reason: impl Into<String>) -> InventoryError {
    InventoryError::Invalid {
        entry,
        field,
        reason: reason.into(),
    }
}

/// A failure domain: a node in the hierarchy (zone, row, rack, JBOD, server, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// Unique id (shared namespace with drives).
    pub id: DomainId,
    /// Level name; separation constraints refer to it.
    pub level: String,
    /// Enclosing domain (absent for a root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<DomainId>,
}

/// A bandwidth domain: a switch, uplink or port that members' traffic crosses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BwDomainSpec {
    /// Unique id.
    pub id: BwDomainId,
    /// Kind name; spreading constraints refer to it.
    pub kind: String,
    /// Capacity in bytes/s.
    pub capacity: Bytes,
    /// Current load in bytes/s.
    pub load: Bytes,
}

/// A storage group, optionally with a quota on bytes placed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSpec {
    /// Unique id.
    pub id: GroupId,
    /// Maximum bytes of members in the group (absent: unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<Bytes>,
    /// Bytes of members currently in the group.
    pub used: Bytes,
}

/// A drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveSpec {
    /// Unique id (shared namespace with failure domains).
    pub id: DriveId,
    /// Medium.
    pub kind: DriveKind,
    /// Capacity in bytes (positive).
    pub capacity: Bytes,
    /// Free bytes (at most `capacity`).
    pub free: Bytes,
    /// Spindle speed (0 for solid-state).
    pub rpm: u32,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Transports the drive can be exported over.
    pub transports: Transports,
    /// Operational state.
    pub health: Health,
    /// The innermost failure domain holding the drive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
    /// Storage group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Bandwidth domains the drive's traffic crosses (at most one per kind).
    pub bandwidth_domains: Vec<BwDomainId>,
    /// Free-form attributes a request may separate by (`psu = "a"`, `enclosure_model = "x"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A server volumes attach to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Unique id.
    pub id: ServerId,
    /// The failure domain the server sits in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
    /// Bandwidth domains through which it reaches drives (empty: reaches every drive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bandwidth_domains: Vec<BwDomainId>,
    /// Transports the server can attach over (absent: all). A drive is reachable from the
    /// server only over a transport both support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Transports>,
}

/// A placed volume: its request and the drive of each member (in member order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Unique id.
    pub id: VolumeId,
    /// The request it was placed under (repairs re-place under it). The engine interns
    /// requests: volumes placed under equal requests share one copy.
    #[serde(with = "shared_request")]
    pub request: Arc<Request>,
    /// Drive of each member.
    pub members: Vec<DriveId>,
}

/// (De)serializes an `Arc<Request>` as the request itself (serde's `rc` feature would do the
/// same for every crate in the workspace).
mod shared_request {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::request::Request;

    pub(super) fn serialize<S: Serializer>(r: &Arc<Request>, s: S) -> Result<S::Ok, S::Error> {
        r.as_ref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Request>, D::Error> {
        Request::deserialize(d).map(Arc::new)
    }
}

/// The whole inventory as plain data: what the TOML file holds.
///
/// Drive `free`, bandwidth `load` and group `used` already include the volumes listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InventorySpec {
    /// Failure domains.
    #[serde(rename = "domain")]
    pub domains: Vec<DomainSpec>,
    /// Bandwidth domains.
    #[serde(rename = "bandwidth_domain")]
    pub bandwidth_domains: Vec<BwDomainSpec>,
    /// Storage groups.
    #[serde(rename = "storage_group")]
    pub storage_groups: Vec<GroupSpec>,
    /// Drives.
    #[serde(rename = "drive")]
    pub drives: Vec<DriveSpec>,
    /// Servers.
    #[serde(rename = "server")]
    pub servers: Vec<ServerSpec>,
    /// Placed volumes.
    #[serde(rename = "volume")]
    pub volumes: Vec<VolumeSpec>,
}

// ---- raw file structs: sizes kept as written so errors can name the entry ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBw {
    id: BwDomainId,
    kind: String,
    capacity: RawSize,
    #[serde(default)]
    load: Option<RawSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    id: GroupId,
    #[serde(default)]
    quota: Option<RawSize>,
    #[serde(default)]
    used: Option<RawSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrive {
    id: DriveId,
    kind: DriveKind,
    capacity: RawSize,
    #[serde(default)]
    free: Option<RawSize>,
    #[serde(default)]
    rpm: Option<i64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    transports: Option<Transports>,
    #[serde(default)]
    health: Health,
    #[serde(default)]
    domain: Option<DomainId>,
    #[serde(default)]
    group: Option<GroupId>,
    #[serde(default)]
    bandwidth_domains: Vec<BwDomainId>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    domain: Vec<DomainSpec>,
    #[serde(default)]
    bandwidth_domain: Vec<RawBw>,
    #[serde(default)]
    storage_group: Vec<RawGroup>,
    #[serde(default)]
    drive: Vec<RawDrive>,
    #[serde(default)]
    server: Vec<ServerSpec>,
    #[serde(default)]
    volume: Vec<VolumeSpec>,
}

fn size(
    entry: impl Fn() -> String,
    field: &'static str,
    raw: &RawSize,
) -> Result<Bytes, InventoryError> {
    raw.resolve()
        .map(Bytes)
        .map_err(|r| invalid(entry(), field, r))
}

impl RawInventory {
    fn into_spec(self) -> Result<InventorySpec, InventoryError> {
        let mut spec = InventorySpec {
            domains: self.domain,
            servers: self.server,
            volumes: self.volume,
            ..Default::default()
        };
        for b in self.bandwidth_domain {
            let e = || format!("bandwidth_domain '{}'", b.id);
            spec.bandwidth_domains.push(BwDomainSpec {
                capacity: size(e, "capacity", &b.capacity)?,
                load: match &b.load {
                    Some(l) => size(e, "load", l)?,
                    None => Bytes(0),
                },
                id: b.id,
                kind: b.kind,
            });
        }
        for g in self.storage_group {
            let e = || format!("storage_group '{}'", g.id);
            spec.storage_groups.push(GroupSpec {
                quota: match &g.quota {
                    Some(q) => Some(size(e, "quota", q)?),
                    None => None,
                },
                used: match &g.used {
                    Some(u) => size(e, "used", u)?,
                    None => Bytes(0),
                },
                id: g.id,
            });
        }
        for d in self.drive {
            let e = || format!("drive '{}'", d.id);
            let capacity = size(e, "capacity", &d.capacity)?;
            let rpm = match d.rpm {
                Some(r) if r < 0 => {
                    return Err(invalid(
                        e(),
                        "rpm",
                        format!("must not be negative (got {r})"),
                    ));
                }
                Some(r) if r > u32::MAX as i64 => return Err(invalid(e(), "rpm", "is too large")),
                Some(r) => r as u32,
                None => 0,
            };
            spec.drives.push(DriveSpec {
                free: match &d.free {
                    Some(f) => size(e, "free", f)?,
                    None => capacity,
                },
                capacity,
                rpm,
                kind: d.kind,
                tags: d.tags,
                transports: d.transports.unwrap_or(Transports::all()),
                health: d.health,
                domain: d.domain,
                group: d.group,
                bandwidth_domains: d.bandwidth_domains,
                attributes: d.attributes,
                id: d.id,
            });
        }
        Ok(spec)
    }
}

/// A validated, indexed inventory.
///
/// Build it with [`Inventory::from_toml`] or [`Inventory::from_spec`]; both check ids, references,
/// cycles and sizes. Read the data back with [`Inventory::spec`]; save with [`Inventory::to_toml`].
///
/// `Clone` is cheap: it copies only the values that placing and releasing volumes change (each
/// drive's free bytes and health, each bandwidth domain's load, each storage group's used
/// bytes: a few bytes per drive). The rest (ids, kinds, capacities, tags, domains, servers) and
/// the indexes derived from it sit behind [`Arc`]s, shared by the copies until one of them
/// changes the inventory's shape (a live drive, domain, group or server change), which copies
/// them then. A change to one copy is never seen by another.
#[derive(Clone)]
pub struct Inventory {
    /// The inventory's shape: everything but the live values, which are in `live`. The
    /// spec's own `free`, `health`, `load` and `used` fields are not kept current and must
    /// not be read (they hold the values the inventory was built with); [`Inventory::spec`]
    /// puts the live values in. Shared between clones; written through
    /// [`Inventory::shape_mut`], which copies it if a clone shares it.
    pub(crate) spec: Arc<InventorySpec>,
    /// The values placing and releasing volumes (and marking drives) change, by index in the
    /// spec's lists. Each clone has its own.
    pub(crate) live: Live,
    /// Everything but the spec, shared between clones (see [`Inventory`]'s `Clone`). Read
    /// through the field (`inv.ix.levels`); written through [`Inventory::ix_mut`], or
    /// `Arc::make_mut` where a shape change also writes the spec: both copy it if a clone
    /// shares it, so every place that can copy it says so.
    pub(crate) ix: Arc<Index>,
}

/// The plain data with its live values ([`Inventory::spec`]): the shape alone would show the
/// free bytes, health, loads and usage the inventory was built with.
impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("spec", &self.spec())
            .finish_non_exhaustive()
    }
}

/// The live values of an [`Inventory`], kept apart from its shape so that a clone copies only
/// them: `free[d]` and `health[d]` of drive `d`, `load[b]` of bandwidth domain `b`, `used[g]` of
/// storage group `g` (indexes of the spec's lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) free: Vec<Bytes>,
    pub(crate) health: Vec<Health>,
    pub(crate) load: Vec<Bytes>,
    pub(crate) used: Vec<Bytes>,
}

impl Live {
    /// The live values a spec gives.
    fn of(spec: &InventorySpec) -> Live {
        Live {
            free: spec.drives.iter().map(|d| d.free).collect(),
            health: spec.drives.iter().map(|d| d.health).collect(),
            load: spec.bandwidth_domains.iter().map(|b| b.load).collect(),
            used: spec.storage_groups.iter().map(|g| g.used).collect(),
        }
    }
}

/// The indexes of an [`Inventory`], derived from its spec; they change only with the
/// inventory's shape, never when a volume is placed or released.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    pub(crate) levels: Vec<String>,
    pub(crate) level_index: HashMap<String, u16>,
    /// The domains at each level: levels are numbered by first appearance in domain order, so
    /// a removal finds each level's first domain here, without a scan.
    pub(crate) level_doms: Vec<BTreeSet<u32>>,
    pub(crate) dom_index: HashMap<DomainId, u32>,
    pub(crate) dom_level: Vec<u16>,
    pub(crate) dom_parent: Vec<u32>,
    /// The children of each domain, and the servers in it, in index order: a removal finds
    /// what holds a domain, and renumbers what refers to the moved one, without a scan.
    pub(crate) dom_children: Vec<Vec<u32>>,
    pub(crate) dom_servers: Vec<Vec<u32>>,
    /// Drives under each domain (any depth), in drive order.
    pub(crate) dom_drives: Vec<Vec<u32>>,
    pub(crate) drive_index: HashMap<DriveId, u32>,
    /// `drive_anc[d * levels + l]`: the drive's ancestor at level `l`, or `NONE`.
    pub(crate) drive_anc: Vec<u32>,
    pub(crate) bw_kinds: Vec<String>,
    pub(crate) bw_kind_index: HashMap<String, u16>,
    pub(crate) bw_index: HashMap<BwDomainId, u32>,
    pub(crate) bw_kind_of: Vec<u16>,
    pub(crate) drive_bw: Vec<Vec<u32>>,
    /// The drives, and the servers, that list each bandwidth domain, in index order: a removal
    /// finds what holds a domain, and renumbers what lists the moved one, without a scan.
    pub(crate) bw_drives: Vec<Vec<u32>>,
    pub(crate) bw_servers: Vec<Vec<u32>>,
    pub(crate) group_index: HashMap<GroupId, u32>,
    pub(crate) drive_group: Vec<u32>,
    /// The drives of each storage group, in drive order (as `bw_drives`).
    pub(crate) group_drives: Vec<Vec<u32>>,
    pub(crate) server_index: HashMap<ServerId, u32>,
    pub(crate) server_bw: Vec<Vec<u32>>,
    pub(crate) server_dom: Vec<u32>,
    /// Transports of each server (all when the file gives none).
    pub(crate) server_tr: Vec<Transports>,
    pub(crate) tag_index: HashMap<String, u32>,
    pub(crate) drive_tags: Vec<Vec<u32>>,
    /// Attribute names, in order of first appearance.
    pub(crate) attr_names: Vec<String>,
    pub(crate) attr_index: HashMap<String, u16>,
    /// Attribute values (all names share one table).
    pub(crate) attr_values: Vec<String>,
    pub(crate) attr_value_index: HashMap<String, u32>,
    /// Each drive's `(attribute, value)` pairs, sorted by attribute.
    pub(crate) drive_attrs: Vec<Vec<(u16, u32)>>,
    /// The drives that carry each attribute name, and each value (under any name). Names and
    /// values are numbered by first appearance in drive order (attribute numbers are
    /// separation dimensions, which explanations order by), so a live drive removal that
    /// changes a first appearance renumbers them in place (see
    /// [`Inventory::plan_drive_removal`]); these sets give the next carrier, and the drives
    /// whose numbers change, without a scan. Tag numbers are only compared for equality, and
    /// a tag no drive holds filters as an unknown one, so a removal leaves the tag table as it
    /// is.
    pub(crate) attr_name_drives: Vec<BTreeSet<u32>>,
    pub(crate) attr_value_drives: Vec<BTreeSet<u32>>,
}

impl Inventory {
    /// The indexes to write, copied first if a clone shares them (all of them, for every
    /// drive). Only shape changes call it: placing and releasing volumes change only the live
    /// values (`Inventory::live`), so they never copy the indexes.
    pub(crate) fn ix_mut(&mut self) -> &mut Index {
        Arc::make_mut(&mut self.ix)
    }

    /// The shape to write, copied first if a clone shares it. Only shape changes call it;
    /// placing and releasing volumes write [`Inventory::live`] alone.
    pub(crate) fn shape_mut(&mut self) -> &mut InventorySpec {
        Arc::make_mut(&mut self.spec)
    }

    /// Whether `self` and `other` share one copy of the indexes (a clone does until either
    /// changes shape).
    #[cfg(test)]
    pub(crate) fn shares_index_with(&self, other: &Inventory) -> bool {
        Arc::ptr_eq(&self.ix, &other.ix)
    }

    /// Whether `self` and `other` share one copy of the shape (a clone does until either
    /// changes shape).
    #[cfg(test)]
    pub(crate) fn shares_shape_with(&self, other: &Inventory) -> bool {
        Arc::ptr_eq(&self.spec, &other.spec)
    }
}

/// How a drive removal renumbers the attribute tables, worked out by
/// [`Inventory::plan_drive_removal`] before anything changes: `new_of[old]` for the names and
/// for the values (`NONE` for one that no drive carries any more), or `None` when every number
/// stays.
#[derive(Debug, Default)]
pub(crate) struct AttrRenumbering {
    names: Option<Vec<u32>>,
    values: Option<Vec<u32>>,
}

impl AttrRenumbering {
    /// The attribute names that go with the drive, and those that stay, in their new order.
    pub(crate) fn names<'a>(&self, inv: &'a Inventory) -> (Vec<&'a str>, Vec<&'a str>) {
        let Some(new_of) = &self.names else {
            return (
                Vec::new(),
                inv.ix.attr_names.iter().map(|x| x.as_str()).collect(),
            );
        };
        let mut left: Vec<(u32, &str)> = Vec::new();
        let mut gone = Vec::new();
        for (o, &n) in new_of.iter().enumerate() {
            let name = inv.ix.attr_names[o].as_str();
            if n == NONE {
                gone.push(name);
            } else {
                left.push((n, name));
            }
        }
        left.sort_unstable();
        (gone, left.into_iter().map(|x| x.1).collect())
    }
}

/// The new numbers of a table numbered by first appearance (entry `i` holds number `i`, so the
/// numbers ascend with the entries' keys), after the entries in `moved` take new keys (`None`:
/// the entry goes) while every other entry keeps its key: `new_of[old]`, `NONE` for an entry
/// that goes, or `None` when every number stays. Keys are unique. O(len + moved × log len key
/// evaluations): the entries that keep their keys keep their order, and each moved entry finds
/// its place among them by binary search.
fn renumber<K: Ord>(
    len: usize,
    key: impl Fn(u32) -> K,
    moved: Vec<(u32, Option<K>)>,
) -> Option<Vec<u32>> {
    let stay: Vec<u32> = (0..len as u32)
        .filter(|x| !moved.iter().any(|m| m.0 == *x))
        .collect();
    let mut back: Vec<(usize, K, u32)> = moved
        .into_iter()
        .filter_map(|(x, k)| k.map(|k| (x, k)))
        .map(|(x, k)| (stay.partition_point(|&s| key(s) < k), k, x))
        .collect();
    back.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut order = Vec::with_capacity(stay.len() + back.len());
    let mut next = 0;
    for (pos, _, x) in back {
        order.extend_from_slice(&stay[next..pos]);
        order.push(x);
        next = pos;
    }
    order.extend_from_slice(&stay[next..]);
    if order.len() == len && order.iter().enumerate().all(|(i, &o)| o == i as u32) {
        return None;
    }
    let mut new_of = vec![NONE; len];
    for (n, &o) in order.iter().enumerate() {
        new_of[o as usize] = n as u32;
    }
    Some(new_of)
}

/// Puts a table numbered by first appearance (its keys, their index, and the drives carrying
/// each entry) in the order `new_of[old]` gives, dropping the entries numbered `NONE`, and adds
/// to `touched` the drives that carry an entry whose number changes. O(entries + those drives).
fn reorder_table<I>(
    new_of: &[u32],
    keys: &mut Vec<String>,
    index: &mut HashMap<String, I>,
    carriers: &mut Vec<BTreeSet<u32>>,
    number: impl Fn(u32) -> I,
    touched: &mut Vec<u32>,
) {
    let n = new_of.iter().filter(|&&x| x != NONE).count();
    let mut new_keys = vec![String::new(); n];
    let mut new_carriers = vec![BTreeSet::new(); n];
    for (o, &x) in new_of.iter().enumerate() {
        let key = std::mem::take(&mut keys[o]);
        if x == NONE {
            index.remove(&key);
            continue;
        }
        if x != o as u32 {
            touched.extend(&carriers[o]);
            index.insert(key.clone(), number(x));
        }
        new_keys[x as usize] = key;
        new_carriers[x as usize] = std::mem::take(&mut carriers[o]);
    }
    *keys = new_keys;
    *carriers = new_carriers;
}

/// A drive checked against an inventory by [`Inventory::check_drive`]: its indexes, ready for
/// [`Inventory::push_drive`], which cannot fail.
pub(crate) struct CheckedDrive {
    anc: Vec<u32>,
    group: u32,
    bws: Vec<u32>,
}

impl InventoryError {
    /// A TOML error on one line, `line L, column C: message`, the message shortened: toml's
    /// `Display` spans five lines and repeats the offending line whole (a 100,000-character
    /// value made a 200 kB error).
    pub(crate) fn from_toml(text: &str, e: &toml::de::Error) -> Self {
        let what = e.message().trim().replace('\n', "; ");
        // Long enough for this crate's own messages, which quote their input short, and for
        // toml's list of a request's fields (about 300 characters). A count out of range is
        // said in words ("expected u32" named a Rust type).
        let what = match storage_units::count_rule(&what) {
            Some(rule) => rule.into(),
            None => storage_units::shorten(&what, 512),
        };
        let message = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                format!(
                    "line {}, column {}: {what}",
                    before.matches('\n').count() + 1,
                    before[line_start..].chars().count() + 1
                )
            }
            None => what.into_owned(),
        };
        InventoryError::Parse { message }
    }
}

impl Inventory {
    /// Parses and validates a TOML inventory.
    pub fn from_toml(text: &str) -> Result<Self, InventoryError> {
        let raw: RawInventory =
            toml::from_str(text).map_err(|e| InventoryError::from_toml(text, &e))?;
        Self::from_spec(raw.into_spec()?)
    }

    /// Serializes the current state (including volumes) as TOML that [`Inventory::from_toml`]
    /// reads back to an equal inventory.
    pub fn to_toml(&self) -> String {
        // Serializing plain data with string keys and sizes validated to fit TOML integers
        // cannot fail; fall back to an empty document rather than panic if a future field
        // breaks that.
        toml::to_string(&self.spec()).unwrap_or_default()
    }

    /// The inventory as plain data, with every drive's free bytes and health, every bandwidth
    /// domain's load and every storage group's used bytes as they are now.
    ///
    /// This builds a copy: O(the inventory). To read live values often, use
    /// [`Inventory::drive_free`], [`Inventory::drives_free`] or [`Inventory::drive_health`].
    pub fn spec(&self) -> InventorySpec {
        let mut spec = InventorySpec::clone(&self.spec);
        for (d, s) in spec.drives.iter_mut().enumerate() {
            s.free = self.live.free[d];
            s.health = self.live.health[d];
        }
        for (b, s) in spec.bandwidth_domains.iter_mut().enumerate() {
            s.load = self.live.load[b];
        }
        for (g, s) in spec.storage_groups.iter_mut().enumerate() {
            s.used = self.live.used[g];
        }
        spec
    }

    /// The number of drives.
    pub fn drive_count(&self) -> usize {
        self.spec.drives.len()
    }

    /// The free bytes of every drive, in the order of [`InventorySpec::drives`]: O(1), no copy.
    pub fn drives_free(&self) -> &[Bytes] {
        &self.live.free
    }

    /// A drive's free bytes, looked up by id.
    pub fn drive_free(&self, id: &DriveId) -> Option<Bytes> {
        self.ix
            .drive_index
            .get(id)
            .map(|&i| self.live.free[i as usize])
    }

    /// A drive's health, looked up by id.
    pub fn drive_health(&self, id: &DriveId) -> Option<Health> {
        self.ix
            .drive_index
            .get(id)
            .map(|&i| self.live.health[i as usize])
    }

    /// The failure-domain level names, in order of first appearance.
    pub fn levels(&self) -> &[String] {
        &self.ix.levels
    }

    /// Looks a drive up by id: a copy of its spec with its free bytes and health as they are
    /// now.
    pub fn drive(&self, id: &DriveId) -> Option<DriveSpec> {
        self.ix.drive_index.get(id).map(|&i| {
            let mut d = self.spec.drives[i as usize].clone();
            d.free = self.live.free[i as usize];
            d.health = self.live.health[i as usize];
            d
        })
    }

    /// The ancestor of a drive at a level, if it has one.
    pub fn drive_domain_at(&self, drive: &DriveId, level: &str) -> Option<&DomainId> {
        let d = *self.ix.drive_index.get(drive)?;
        let l = *self.ix.level_index.get(level)?;
        let a = self.anc(d, l);
        (a != NONE).then(|| &self.spec.domains[a as usize].id)
    }

    /// Ids of the drives in a failure domain (any depth), or the drive itself for a drive id.
    pub fn drives_in(&self, target: &str) -> Option<Vec<DriveId>> {
        self.target_drives(target).map(|v| {
            v.iter()
                .map(|&d| self.spec.drives[d as usize].id.clone())
                .collect()
        })
    }

    pub(crate) fn target_drives(&self, target: &str) -> Option<Vec<u32>> {
        if let Ok(id) = DriveId::new(target)
            && let Some(&d) = self.ix.drive_index.get(&id)
        {
            return Some(vec![d]);
        }
        let id = DomainId::new(target).ok()?;
        let &x = self.ix.dom_index.get(&id)?;
        Some(self.ix.dom_drives[x as usize].clone())
    }

    #[inline]
    pub(crate) fn anc(&self, d: u32, level: u16) -> u32 {
        self.ix.drive_anc[d as usize * self.ix.levels.len() + level as usize]
    }

    /// The drive's value in a separation dimension (a failure domain for a level, a storage
    /// group, an attribute value), or `NONE` when it has none there (unconstrained).
    #[inline]
    pub(crate) fn sep_key(&self, d: u32, dim: u16) -> u32 {
        let l = self.ix.levels.len();
        let dim = dim as usize;
        if dim < l {
            self.anc(d, dim as u16)
        } else if dim == l {
            self.ix.drive_group[d as usize]
        } else {
            let a = (dim - l - 1) as u16;
            let attrs = &self.ix.drive_attrs[d as usize];
            match attrs.binary_search_by_key(&a, |x| x.0) {
                Ok(i) => attrs[i].1,
                Err(_) => NONE,
            }
        }
    }

    /// The name of a value `x` of dimension `dim` (domain id, group id, attribute value).
    pub(crate) fn sep_value_name(&self, dim: u16, x: u32) -> &str {
        let l = self.ix.levels.len();
        let dim = dim as usize;
        if dim < l {
            self.spec.domains[x as usize].id.as_str()
        } else if dim == l {
            self.spec.storage_groups[x as usize].id.as_str()
        } else {
            &self.ix.attr_values[x as usize]
        }
    }

    /// What a separation dimension separates by.
    pub(crate) fn scope_of(&self, dim: u16) -> crate::explain::Scope {
        use crate::explain::Scope;
        let l = self.ix.levels.len();
        let dim = dim as usize;
        if dim < l {
            Scope::Level(self.ix.levels[dim].clone())
        } else if dim == l {
            Scope::StorageGroup
        } else {
            Scope::Attribute(self.ix.attr_names[dim - l - 1].clone())
        }
    }

    /// The drive's bandwidth domain of a kind, or `NONE`.
    #[inline]
    pub(crate) fn bw_of_kind(&self, d: u32, kind: u16) -> u32 {
        for &b in &self.ix.drive_bw[d as usize] {
            if self.ix.bw_kind_of[b as usize] == kind {
                return b;
            }
        }
        NONE
    }

    /// The index of the failure domain that `entry` names in its `domain`.
    fn domain_ref(&self, entry: &str, x: &DomainId) -> Result<u32, InventoryError> {
        self.ix
            .dom_index
            .get(x)
            .copied()
            .ok_or_else(|| InventoryError::UnknownReference {
                entry: entry.to_string(),
                field: "domain",
                target: "domain",
                id: x.to_string(),
            })
    }

    /// The index of a bandwidth domain that `entry` lists in its `bandwidth_domains`.
    fn bw_ref(&self, entry: &str, b: &BwDomainId) -> Result<u32, InventoryError> {
        self.ix
            .bw_index
            .get(b)
            .copied()
            .ok_or_else(|| InventoryError::UnknownReference {
                entry: entry.to_string(),
                field: "bandwidth_domains",
                target: "bandwidth_domain",
                id: b.to_string(),
            })
    }

    /// Checks a server's id and references and adds it to the server indexes (not to the spec).
    /// Changes nothing on error.
    pub(crate) fn index_server(&mut self, s: &ServerSpec) -> Result<(), InventoryError> {
        let entry = || format!("server '{}'", s.id);
        new_id(&self.ix.server_index, "server", &s.id)?;
        let dom = match &s.domain {
            None => NONE,
            Some(x) => self.domain_ref(&entry(), x)?,
        };
        let mut bws = Vec::new();
        for b in &s.bandwidth_domains {
            bws.push(self.bw_ref(&entry(), b)?);
        }
        let ix = self.ix_mut();
        bws.sort_unstable();
        let i = ix.server_dom.len() as u32;
        for &b in &bws {
            // (A server may list a domain twice: it is listed once.)
            let list = &mut ix.bw_servers[b as usize];
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
        ix.server_index.insert(s.id.clone(), i);
        if dom != NONE {
            ix.dom_servers[dom as usize].push(i);
        }
        ix.server_dom.push(dom);
        ix.server_tr.push(s.transports.unwrap_or(Transports::all()));
        ix.server_bw.push(bws);
        Ok(())
    }

    /// Checks a bandwidth domain appended after the existing ones and indexes it (the spec's
    /// list is the caller's to extend). Nothing changes on error.
    pub(crate) fn index_bw_domain(&mut self, b: &BwDomainSpec) -> Result<(), InventoryError> {
        let ix = self.ix_mut();
        let entry = || format!("bandwidth_domain '{}'", b.id);
        new_id(&ix.bw_index, "bandwidth_domain", &b.id)?;
        for (field, v) in [("capacity", b.capacity), ("load", b.load)] {
            check_toml_int(&entry, field, v)?;
        }
        // `load` includes the listed volumes' demand, and the engine never charges a domain
        // past its capacity (bandwidth is a hard headroom check); a file that says otherwise
        // is refused like `free` above `capacity`, not loaded as an overcommitted domain.
        if b.load > b.capacity {
            return Err(invalid(
                entry(),
                "load",
                format!(
                    "({}) exceeds capacity ({}); load may not exceed capacity",
                    b.load, b.capacity
                ),
            ));
        }
        if b.kind.trim().is_empty() {
            return Err(invalid(entry(), "kind", "must not be empty"));
        }
        ix.bw_index.insert(b.id.clone(), ix.bw_kind_of.len() as u32);
        let next = ix.bw_kinds.len() as u16;
        let k = *ix.bw_kind_index.entry(b.kind.clone()).or_insert(next);
        if k == next {
            ix.bw_kinds.push(b.kind.clone());
        }
        ix.bw_kind_of.push(k);
        ix.bw_drives.push(Vec::new());
        ix.bw_servers.push(Vec::new());
        Ok(())
    }

    /// Checks a failure domain appended after the existing ones and indexes it (the spec's
    /// list is the caller's to extend). Nothing changes on error. O(its depth) at a level that
    /// exists; a new level (appended to the levels, as a re-index would number it) adds a
    /// column to the drives' ancestor table: no drive has an ancestor there yet, since the
    /// domain is new, so this is one copy of the table and no re-index.
    pub(crate) fn index_domain(&mut self, d: &DomainSpec) -> Result<(), InventoryError> {
        let entry = || format!("domain '{}'", d.id);
        new_id(&self.ix.dom_index, "domain", &d.id)?;
        if d.level.trim().is_empty() {
            return Err(invalid(entry(), "level", "must not be empty"));
        }
        let parent = match &d.parent {
            None => NONE,
            Some(p) => {
                *self
                    .ix
                    .dom_index
                    .get(p)
                    .ok_or_else(|| InventoryError::UnknownReference {
                        entry: entry(),
                        field: "parent",
                        target: "domain",
                        id: p.to_string(),
                    })?
            }
        };
        let level = self.ix.level_index.get(&d.level).copied();
        let mut x = parent;
        while let Some(l) = level
            && x != NONE
        {
            if self.ix.dom_level[x as usize] == l {
                return Err(invalid(
                    entry(),
                    "parent",
                    format!(
                        "chain holds two '{}' domains ('{}' and '{}'); a level may appear once per path",
                        d.level, d.id, self.spec.domains[x as usize].id
                    ),
                ));
            }
            x = self.ix.dom_parent[x as usize];
        }
        // Reported on the drive, as a re-index of the whole inventory would.
        if let Ok(x) = DriveId::new(d.id.as_str())
            && self.ix.drive_index.contains_key(&x)
        {
            return Err(invalid(
                format!("drive '{x}'"),
                "id",
                "also names a failure domain; drive and domain ids share one namespace",
            ));
        }
        let ix = self.ix_mut();
        let i = ix.dom_level.len() as u32;
        let l = match level {
            Some(l) => l,
            None => {
                let old = ix.levels.len();
                let l = old as u16;
                ix.levels.push(d.level.clone());
                ix.level_index.insert(d.level.clone(), l);
                ix.level_doms.push(BTreeSet::new());
                let rows = ix.drive_index.len();
                let mut anc = vec![NONE; rows * (old + 1)];
                for d in 0..rows {
                    anc[d * (old + 1)..d * (old + 1) + old]
                        .copy_from_slice(&ix.drive_anc[d * old..(d + 1) * old]);
                }
                ix.drive_anc = anc;
                l
            }
        };
        ix.dom_index.insert(d.id.clone(), i);
        ix.dom_level.push(l);
        ix.level_doms[l as usize].insert(i);
        ix.dom_parent.push(parent);
        if parent != NONE {
            ix.dom_children[parent as usize].push(i);
        }
        ix.dom_drives.push(Vec::new());
        ix.dom_children.push(Vec::new());
        ix.dom_servers.push(Vec::new());
        Ok(())
    }

    /// Whether [`Inventory::swap_remove_domain`] of domain `x` takes its level with it (it is
    /// the only domain there).
    pub(crate) fn level_goes(&self, x: u32) -> bool {
        self.ix.level_doms[self.ix.dom_level[x as usize] as usize].len() == 1
    }

    /// Removes failure domain `x`, which holds no drive, child or server; the last domain takes
    /// its place (as `Vec::swap_remove`), and its level goes with it when it was the only
    /// domain there. The levels are then numbered as a re-index numbers them (by first
    /// appearance in domain order). O(the moved domain's drives, children and servers + log
    /// domains + levels); when a level goes or moves in that order, the domains' level table
    /// is renumbered and the drives' ancestor table has its columns dropped or reordered (one
    /// copy of each, no re-index).
    pub(crate) fn swap_remove_domain(&mut self, x: u32) {
        let Inventory { spec, ix, .. } = self;
        let (spec, ix) = (Arc::make_mut(spec), Arc::make_mut(ix));
        let last = ix.dom_level.len() as u32 - 1;
        let l = ix.levels.len();
        ix.dom_index.remove(&spec.domains[x as usize].id);
        let px = ix.dom_parent[x as usize];
        if px != NONE {
            sorted_remove(&mut ix.dom_children[px as usize], x);
        }
        ix.level_doms[ix.dom_level[x as usize] as usize].remove(&x);
        if x != last {
            ix.dom_index
                .insert(spec.domains[last as usize].id.clone(), x);
            let level = ix.dom_level[last as usize] as usize;
            for &d in &ix.dom_drives[last as usize] {
                ix.drive_anc[d as usize * l + level] = x;
            }
            let pl = ix.dom_parent[last as usize];
            if pl != NONE {
                sorted_move_last(&mut ix.dom_children[pl as usize], x);
            }
            for &c in &ix.dom_children[last as usize] {
                ix.dom_parent[c as usize] = x;
            }
            for &s in &ix.dom_servers[last as usize] {
                ix.server_dom[s as usize] = x;
            }
            ix.level_doms[level].remove(&last);
            ix.level_doms[level].insert(x);
        }
        spec.domains.swap_remove(x as usize);
        ix.dom_level.swap_remove(x as usize);
        ix.dom_parent.swap_remove(x as usize);
        ix.dom_drives.swap_remove(x as usize);
        ix.dom_children.swap_remove(x as usize);
        ix.dom_servers.swap_remove(x as usize);
        // The old numbers of the levels in their new order of first appearance (a level with
        // no domain left goes).
        let mut firsts: Vec<(u32, u16)> = (0..l)
            .filter_map(|lv| ix.level_doms[lv].first().map(|&f| (f, lv as u16)))
            .collect();
        firsts.sort_unstable();
        let order: Vec<u16> = firsts.into_iter().map(|x| x.1).collect();
        if order.len() == l && order.iter().enumerate().all(|(i, &o)| o as usize == i) {
            return;
        }
        let mut new_of = vec![u16::MAX; l];
        for (n, &o) in order.iter().enumerate() {
            new_of[o as usize] = n as u16;
        }
        for v in &mut ix.dom_level {
            *v = new_of[*v as usize];
        }
        ix.levels = order
            .iter()
            .map(|&o| ix.levels[o as usize].clone())
            .collect();
        ix.level_index = ix
            .levels
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u16))
            .collect();
        ix.level_doms = order
            .iter()
            .map(|&o| std::mem::take(&mut ix.level_doms[o as usize]))
            .collect();
        // A level that goes had no drive below it (its only domain held none).
        let mut anc = Vec::with_capacity(ix.drive_index.len() * order.len());
        for row in ix.drive_anc.chunks_exact(l) {
            anc.extend(order.iter().map(|&o| row[o as usize]));
        }
        ix.drive_anc = anc;
    }

    /// Checks a storage group appended after the existing ones and indexes it (the spec's
    /// list is the caller's to extend). Nothing changes on error.
    pub(crate) fn index_group(&mut self, g: &GroupSpec) -> Result<(), InventoryError> {
        let ix = self.ix_mut();
        let entry = || format!("storage_group '{}'", g.id);
        new_id(&ix.group_index, "storage_group", &g.id)?;
        for (field, v) in [("quota", g.quota.unwrap_or_default()), ("used", g.used)] {
            check_toml_int(&entry, field, v)?;
        }
        // `used` includes the listed volumes, and the engine never charges a group past its
        // quota; a file that says otherwise is refused like `free` above `capacity`, rather
        // than loaded as a group that is silently over its quota.
        if let Some(q) = g.quota
            && g.used > q
        {
            return Err(invalid(
                entry(),
                "used",
                format!(
                    "({}) exceeds quota ({q}); used may not exceed quota",
                    g.used
                ),
            ));
        }
        ix.group_index
            .insert(g.id.clone(), ix.group_index.len() as u32);
        ix.group_drives.push(Vec::new());
        Ok(())
    }

    /// Checks a drive appended after the existing ones (id, sizes, references, one bandwidth
    /// domain per kind, attribute names) without changing anything; [`Inventory::push_drive`]
    /// then indexes it. Errors are those a re-index of the whole inventory would report for it.
    pub(crate) fn check_drive(&self, d: &DriveSpec) -> Result<CheckedDrive, InventoryError> {
        let entry = || format!("drive '{}'", d.id);
        if d.capacity.0 > i64::MAX as u64 {
            return Err(invalid(
                entry(),
                "capacity",
                format!("must be at most {} (the TOML integer range)", i64::MAX),
            ));
        }
        new_id(&self.ix.drive_index, "drive", &d.id)?;
        if DomainId::new(d.id.as_str()).is_ok_and(|x| self.ix.dom_index.contains_key(&x)) {
            return Err(invalid(
                entry(),
                "id",
                "also names a failure domain; drive and domain ids share one namespace",
            ));
        }
        if d.capacity.0 == 0 {
            return Err(invalid(entry(), "capacity", "must be positive"));
        }
        if d.free > d.capacity {
            return Err(invalid(
                entry(),
                "free",
                format!("({}) exceeds capacity ({})", d.free, d.capacity),
            ));
        }
        // The drive's ancestor at every level (the chain holds each level once: checked when
        // its domains were indexed).
        let mut anc = vec![NONE; self.ix.levels.len()];
        if let Some(x) = &d.domain {
            let mut a = self.domain_ref(&entry(), x)?;
            while a != NONE {
                anc[self.ix.dom_level[a as usize] as usize] = a;
                a = self.ix.dom_parent[a as usize];
            }
        }
        let group = match &d.group {
            None => NONE,
            Some(g) => {
                *self
                    .ix
                    .group_index
                    .get(g)
                    .ok_or_else(|| InventoryError::UnknownReference {
                        entry: entry(),
                        field: "group",
                        target: "storage_group",
                        id: g.to_string(),
                    })?
            }
        };
        let mut bws = Vec::new();
        for b in &d.bandwidth_domains {
            let bi = self.bw_ref(&entry(), b)?;
            if let Some(&other) = bws.iter().find(|&&o: &&u32| {
                self.ix.bw_kind_of[o as usize] == self.ix.bw_kind_of[bi as usize]
            }) {
                return Err(invalid(
                    entry(),
                    "bandwidth_domains",
                    format!(
                        "lists two domains of kind '{}' ('{}' and '{}'); at most one per kind",
                        self.spec.bandwidth_domains[bi as usize].kind,
                        self.spec.bandwidth_domains[other as usize].id,
                        b
                    ),
                ));
            }
            bws.push(bi);
        }
        if d.attributes.keys().any(|name| name.trim().is_empty()) {
            return Err(invalid(entry(), "attributes", "names must not be empty"));
        }
        Ok(CheckedDrive { anc, group, bws })
    }

    /// Indexes a drive that [`Inventory::check_drive`] accepted as the next drive (the spec's
    /// list is the caller's to extend). O(its domains' depth, tags and attributes) plus the
    /// append to each ancestor's drive list.
    pub(crate) fn push_drive(&mut self, d: &DriveSpec, checked: CheckedDrive) {
        let ix = self.ix_mut();
        let i = ix.drive_index.len() as u32;
        ix.drive_index.insert(d.id.clone(), i);
        for &a in &checked.anc {
            if a != NONE {
                ix.dom_drives[a as usize].push(i);
            }
        }
        ix.drive_anc.extend_from_slice(&checked.anc);
        if checked.group != NONE {
            ix.group_drives[checked.group as usize].push(i);
        }
        for &b in &checked.bws {
            ix.bw_drives[b as usize].push(i);
        }
        ix.drive_group.push(checked.group);
        ix.drive_bw.push(checked.bws);
        let mut tags = Vec::new();
        for t in &d.tags {
            let next = ix.tag_index.len() as u32;
            tags.push(*ix.tag_index.entry(t.clone()).or_insert(next));
        }
        tags.sort_unstable();
        tags.dedup();
        ix.drive_tags.push(tags);
        let mut attrs = Vec::new();
        for (name, value) in &d.attributes {
            let next = ix.attr_names.len() as u16;
            let a = *ix.attr_index.entry(name.clone()).or_insert(next);
            if a == next {
                ix.attr_names.push(name.clone());
                ix.attr_name_drives.push(BTreeSet::new());
            }
            ix.attr_name_drives[a as usize].insert(i);
            let next = ix.attr_values.len() as u32;
            let v = *ix.attr_value_index.entry(value.clone()).or_insert(next);
            if v == next {
                ix.attr_values.push(value.clone());
                ix.attr_value_drives.push(BTreeSet::new());
            }
            ix.attr_value_drives[v as usize].insert(i);
            attrs.push((a, v));
        }
        attrs.sort_unstable();
        ix.drive_attrs.push(attrs);
    }

    /// Works out, without changing anything, how [`Inventory::swap_remove_drive`] of drive `d`
    /// renumbers the attribute names and values so that they stay numbered as a re-index
    /// numbers them: by first appearance in drive order, ties on one drive broken by name
    /// (the order a drive's attributes are read in). Only the names and values of `d` and of
    /// the last drive (which takes `d`'s index) can change their first carrier; each finds
    /// its next one in its carrier set. O(those attributes × log drives) when no first
    /// carrier changes; otherwise also O(names + values) for the new order.
    pub(crate) fn plan_drive_removal(&self, d: u32) -> AttrRenumbering {
        let last = self.ix.drive_index.len() as u32 - 1;
        let (da, la) = (
            &self.ix.drive_attrs[d as usize],
            &self.ix.drive_attrs[last as usize],
        );
        if da
            .iter()
            .chain(la)
            .all(|&(a, v)| self.first_name(a as u32) < d && self.first_value(v) < d)
        {
            return AttrRenumbering::default();
        }
        // The first carrier once `d` is gone and `last` has taken its index.
        let first_after = |set: &BTreeSet<u32>| {
            let rest = set.iter().copied().find(|&x| x != d && x != last);
            let moved_in = (d != last && set.contains(&last)).then_some(d);
            match (rest, moved_in) {
                (Some(r), Some(m)) => Some(r.min(m)),
                (r, m) => r.or(m),
            }
        };
        // Values that first appear on one drive are numbered in the order of the names that
        // carry them there: a value's key is its first carrier and the first such name.
        let value_key = |x: u32, v: u32, attrs: &[(u16, u32)]| {
            let name = attrs
                .iter()
                .filter(|p| p.1 == v)
                .map(|p| self.ix.attr_names[p.0 as usize].as_str())
                .min()
                .unwrap_or_default();
            (x, name)
        };
        let mut names: Vec<u32> = da.iter().chain(la).map(|p| p.0 as u32).collect();
        names.sort_unstable();
        names.dedup();
        let mut values: Vec<u32> = da.iter().chain(la).map(|p| p.1).collect();
        values.sort_unstable();
        values.dedup();
        let moved_names = names
            .iter()
            .map(|&a| {
                let first = first_after(&self.ix.attr_name_drives[a as usize]);
                (
                    a,
                    first.map(|f| (f, self.ix.attr_names[a as usize].as_str())),
                )
            })
            .collect();
        let moved_values = values
            .iter()
            .map(|&v| {
                let first = first_after(&self.ix.attr_value_drives[v as usize]);
                // The drive at `d` is then the last one.
                let at = |f: u32| {
                    if f == d {
                        la
                    } else {
                        &self.ix.drive_attrs[f as usize]
                    }
                };
                (v, first.map(|f| value_key(f, v, at(f))))
            })
            .collect();
        AttrRenumbering {
            names: renumber(
                self.ix.attr_names.len(),
                |a| (self.first_name(a), self.ix.attr_names[a as usize].as_str()),
                moved_names,
            ),
            values: renumber(
                self.ix.attr_values.len(),
                |v| {
                    let f = self.first_value(v);
                    value_key(f, v, &self.ix.drive_attrs[f as usize])
                },
                moved_values,
            ),
        }
    }

    /// The first drive carrying attribute name `a` (every name has one).
    fn first_name(&self, a: u32) -> u32 {
        self.ix.attr_name_drives[a as usize]
            .first()
            .copied()
            .unwrap_or(NONE)
    }

    /// The first drive carrying attribute value `v` (every value has one).
    fn first_value(&self, v: u32) -> u32 {
        self.ix.attr_value_drives[v as usize]
            .first()
            .copied()
            .unwrap_or(NONE)
    }

    /// Applies what [`Inventory::plan_drive_removal`] worked out, after
    /// [`Inventory::swap_remove_drive`]: the name and value tables take their new order, the
    /// names and values that no drive carries go, and only the drives that carry a renumbered
    /// name or value have their pairs rewritten. O(names + values + those drives' attributes);
    /// no re-index.
    pub(crate) fn renumber_attrs(&mut self, change: AttrRenumbering) {
        let ix = self.ix_mut();
        let mut touched: Vec<u32> = Vec::new();
        if let Some(new_of) = &change.names {
            reorder_table(
                new_of,
                &mut ix.attr_names,
                &mut ix.attr_index,
                &mut ix.attr_name_drives,
                |x| x as u16,
                &mut touched,
            );
        }
        if let Some(new_of) = &change.values {
            reorder_table(
                new_of,
                &mut ix.attr_values,
                &mut ix.attr_value_index,
                &mut ix.attr_value_drives,
                |x| x,
                &mut touched,
            );
        }
        touched.sort_unstable();
        touched.dedup();
        for d in touched {
            let attrs = &mut ix.drive_attrs[d as usize];
            for p in attrs.iter_mut() {
                if let Some(new_of) = &change.names {
                    p.0 = new_of[p.0 as usize] as u16;
                }
                if let Some(new_of) = &change.values {
                    p.1 = new_of[p.1 as usize];
                }
            }
            attrs.sort_unstable();
        }
    }

    /// The kinds' new numbers once [`Inventory::swap_remove_bw`] of bandwidth domain `b` is
    /// done, so that they stay numbered as a re-index numbers them (by first appearance in
    /// domain order): `new_of[old]`, `u16::MAX` for the kind whose last domain `b` is, or
    /// `None` when every number stays. Changes nothing. O(bandwidth domains).
    pub(crate) fn plan_bw_removal(&self, b: u32) -> Option<Vec<u16>> {
        let last = self.ix.bw_kind_of.len() - 1;
        let mut new_of = vec![u16::MAX; self.ix.bw_kinds.len()];
        let mut next = 0u16;
        for i in 0..last {
            let k = self.ix.bw_kind_of[if i == b as usize { last } else { i }];
            if new_of[k as usize] == u16::MAX {
                new_of[k as usize] = next;
                next += 1;
            }
        }
        let same = new_of.iter().enumerate().all(|(i, &n)| n as usize == i);
        (!same).then_some(new_of)
    }

    /// Applies [`Inventory::plan_bw_removal`]'s numbers after [`Inventory::swap_remove_bw`]:
    /// the kind table takes its new order and a kind with no domain left goes. O(bandwidth
    /// domains): drives and servers list domains, not kinds, so none of their lists changes.
    pub(crate) fn renumber_kinds(&mut self, new_of: &[u16]) {
        let mut kinds = vec![String::new(); new_of.iter().filter(|&&n| n != u16::MAX).count()];
        let ix = self.ix_mut();
        for (o, &n) in new_of.iter().enumerate() {
            let kind = std::mem::take(&mut ix.bw_kinds[o]);
            if n == u16::MAX {
                ix.bw_kind_index.remove(&kind);
            } else {
                ix.bw_kind_index.insert(kind.clone(), n);
                kinds[n as usize] = kind;
            }
        }
        ix.bw_kinds = kinds;
        for k in &mut ix.bw_kind_of {
            *k = new_of[*k as usize];
        }
    }

    /// Removes bandwidth domain `b`, which no drive or server lists, from the spec and the
    /// indexes; the last domain takes its place (as `Vec::swap_remove`), and the drives and
    /// servers that list that one are renumbered: O(their lists), no re-index. The kinds are
    /// left as they were: renumber them with [`Inventory::renumber_kinds`].
    pub(crate) fn swap_remove_bw(&mut self, b: u32) {
        let Inventory { spec, ix, live } = self;
        let (spec, ix) = (Arc::make_mut(spec), Arc::make_mut(ix));
        live.load.swap_remove(b as usize);
        let last = ix.bw_kind_of.len() as u32 - 1;
        ix.bw_index.remove(&spec.bandwidth_domains[b as usize].id);
        spec.bandwidth_domains.swap_remove(b as usize);
        ix.bw_kind_of.swap_remove(b as usize);
        ix.bw_drives.swap_remove(b as usize);
        ix.bw_servers.swap_remove(b as usize);
        if b != last {
            ix.bw_index
                .insert(spec.bandwidth_domains[b as usize].id.clone(), b);
            for &d in &ix.bw_drives[b as usize] {
                for x in &mut ix.drive_bw[d as usize] {
                    if *x == last {
                        *x = b;
                    }
                }
            }
            for &s in &ix.bw_servers[b as usize] {
                let list = &mut ix.server_bw[s as usize];
                for x in list.iter_mut() {
                    if *x == last {
                        *x = b;
                    }
                }
                // A server's list is kept sorted.
                list.sort_unstable();
            }
        }
    }

    /// Removes server `i` from the indexes (not from the spec); the last server takes its
    /// index (as `Vec::swap_remove`). O(the two servers' bandwidth lists and domains' server
    /// lists).
    pub(crate) fn swap_remove_server(&mut self, i: u32) {
        let ix = self.ix_mut();
        let last = ix.server_dom.len() as u32 - 1;
        for &b in &ix.server_bw[i as usize] {
            sorted_remove(&mut ix.bw_servers[b as usize], i);
        }
        let x = ix.server_dom[i as usize];
        if x != NONE {
            sorted_remove(&mut ix.dom_servers[x as usize], i);
        }
        let x = ix.server_dom[last as usize];
        if i != last && x != NONE {
            sorted_move_last(&mut ix.dom_servers[x as usize], i);
        }
        if i != last {
            // Each domain once (a server may list one twice).
            let mut bws = ix.server_bw[last as usize].clone();
            bws.dedup();
            for b in bws {
                sorted_move_last(&mut ix.bw_servers[b as usize], i);
            }
        }
        ix.server_dom.swap_remove(i as usize);
        ix.server_tr.swap_remove(i as usize);
        ix.server_bw.swap_remove(i as usize);
    }

    /// Removes storage group `g`, which no drive belongs to, from the spec and the indexes; the
    /// last group takes its place (as `Vec::swap_remove`), and the drives of that group are
    /// renumbered: O(those drives), no re-index.
    pub(crate) fn swap_remove_group(&mut self, g: u32) {
        let Inventory { spec, ix, live } = self;
        let (spec, ix) = (Arc::make_mut(spec), Arc::make_mut(ix));
        live.used.swap_remove(g as usize);
        let last = spec.storage_groups.len() as u32 - 1;
        ix.group_index.remove(&spec.storage_groups[g as usize].id);
        spec.storage_groups.swap_remove(g as usize);
        ix.group_drives.swap_remove(g as usize);
        if g != last {
            ix.group_index
                .insert(spec.storage_groups[g as usize].id.clone(), g);
            for &d in &ix.group_drives[g as usize] {
                ix.drive_group[d as usize] = g;
            }
        }
    }

    /// Removes drive `d` from the spec and the indexes; the last drive takes its place (as
    /// `Vec::swap_remove`). O(the two drives' lists plus their ancestors' drive lists and
    /// attributes' carrier sets). The attribute numbers are left as they were: renumber them
    /// with [`Inventory::renumber_attrs`] (planned before, by
    /// [`Inventory::plan_drive_removal`]).
    pub(crate) fn swap_remove_drive(&mut self, d: u32) {
        let Inventory { spec, ix, live } = self;
        let (spec, ix) = (Arc::make_mut(spec), Arc::make_mut(ix));
        live.free.swap_remove(d as usize);
        live.health.swap_remove(d as usize);
        let last = ix.drive_index.len() as u32 - 1;
        let l = ix.levels.len();
        for &(a, v) in &ix.drive_attrs[d as usize] {
            ix.attr_name_drives[a as usize].remove(&d);
            ix.attr_value_drives[v as usize].remove(&d);
        }
        let g = ix.drive_group[d as usize];
        if g != NONE {
            sorted_remove(&mut ix.group_drives[g as usize], d);
        }
        for &b in &ix.drive_bw[d as usize] {
            sorted_remove(&mut ix.bw_drives[b as usize], d);
        }
        if d != last {
            let g = ix.drive_group[last as usize];
            if g != NONE {
                sorted_move_last(&mut ix.group_drives[g as usize], d);
            }
            for &b in &ix.drive_bw[last as usize] {
                sorted_move_last(&mut ix.bw_drives[b as usize], d);
            }
            for &(a, v) in &ix.drive_attrs[last as usize] {
                for set in [
                    &mut ix.attr_name_drives[a as usize],
                    &mut ix.attr_value_drives[v as usize],
                ] {
                    set.remove(&last);
                    set.insert(d);
                }
            }
        }
        for &a in &ix.drive_anc[d as usize * l..(d as usize + 1) * l] {
            if a != NONE {
                let list = &mut ix.dom_drives[a as usize];
                if let Ok(p) = list.binary_search(&d) {
                    list.remove(p);
                }
            }
        }
        ix.drive_index.remove(&spec.drives[d as usize].id);
        if d != last {
            for &a in &ix.drive_anc[last as usize * l..(last as usize + 1) * l] {
                if a != NONE {
                    let list = &mut ix.dom_drives[a as usize];
                    list.pop();
                    let p = list.partition_point(|&x| x < d);
                    list.insert(p, d);
                }
            }
            ix.drive_anc
                .copy_within(last as usize * l..(last as usize + 1) * l, d as usize * l);
            ix.drive_index
                .insert(spec.drives[last as usize].id.clone(), d);
        }
        ix.drive_anc.truncate(last as usize * l);
        spec.drives.swap_remove(d as usize);
        ix.drive_group.swap_remove(d as usize);
        ix.drive_bw.swap_remove(d as usize);
        ix.drive_tags.swap_remove(d as usize);
        ix.drive_attrs.swap_remove(d as usize);
    }

    /// Validates plain data and builds the indexes.
    pub fn from_spec(spec: InventorySpec) -> Result<Self, InventoryError> {
        let mut inv = Inventory {
            spec: Arc::default(),
            live: Live::default(),
            ix: Arc::new(Index {
                levels: Vec::new(),
                level_index: HashMap::new(),
                level_doms: Vec::new(),
                dom_index: HashMap::new(),
                dom_level: Vec::new(),
                dom_parent: Vec::new(),
                dom_children: Vec::new(),
                dom_servers: Vec::new(),
                dom_drives: Vec::new(),
                drive_index: HashMap::new(),
                drive_anc: Vec::new(),
                bw_kinds: Vec::new(),
                bw_kind_index: HashMap::new(),
                bw_index: HashMap::new(),
                bw_kind_of: Vec::new(),
                drive_bw: Vec::new(),
                bw_drives: Vec::new(),
                bw_servers: Vec::new(),
                group_drives: Vec::new(),
                group_index: HashMap::new(),
                drive_group: Vec::new(),
                server_index: HashMap::new(),
                server_bw: Vec::new(),
                server_dom: Vec::new(),
                server_tr: Vec::new(),
                tag_index: HashMap::new(),
                drive_tags: Vec::new(),
                attr_names: Vec::new(),
                attr_index: HashMap::new(),
                attr_values: Vec::new(),
                attr_value_index: HashMap::new(),
                drive_attrs: Vec::new(),
                attr_name_drives: Vec::new(),
                attr_value_drives: Vec::new(),
            }),
        };
        let ix = inv.ix_mut();
        // Failure domains.
        for (i, d) in spec.domains.iter().enumerate() {
            if ix.dom_index.insert(d.id.clone(), i as u32).is_some() {
                return Err(InventoryError::DuplicateId {
                    kind: "domain",
                    id: d.id.to_string(),
                });
            }
            if d.level.trim().is_empty() {
                return Err(invalid(
                    format!("domain '{}'", d.id),
                    "level",
                    "must not be empty",
                ));
            }
            let next = ix.levels.len() as u16;
            let l = *ix.level_index.entry(d.level.clone()).or_insert(next);
            if l == next {
                ix.levels.push(d.level.clone());
                ix.level_doms.push(BTreeSet::new());
            }
            ix.level_doms[l as usize].insert(i as u32);
            ix.dom_level.push(l);
        }
        for d in &spec.domains {
            let p = match &d.parent {
                None => NONE,
                Some(p) => {
                    *ix.dom_index
                        .get(p)
                        .ok_or_else(|| InventoryError::UnknownReference {
                            entry: format!("domain '{}'", d.id),
                            field: "parent",
                            target: "domain",
                            id: p.to_string(),
                        })?
                }
            };
            ix.dom_parent.push(p);
        }
        ix.dom_children = vec![Vec::new(); spec.domains.len()];
        ix.dom_servers = vec![Vec::new(); spec.domains.len()];
        for (i, &p) in ix.dom_parent.iter().enumerate() {
            if p != NONE {
                ix.dom_children[p as usize].push(i as u32);
            }
        }
        // Cycles, and a level may appear only once on any path to the root.
        let n_dom = spec.domains.len();
        let mut state = vec![0u8; n_dom]; // 0 unvisited, 1 on stack, 2 done
        for start in 0..n_dom {
            let mut path = Vec::new();
            let mut x = start as u32;
            while x != NONE && state[x as usize] == 0 {
                state[x as usize] = 1;
                path.push(x);
                x = inv.ix.dom_parent[x as usize];
            }
            if x != NONE && state[x as usize] == 1 {
                let from = path.iter().position(|&p| p == x).unwrap_or(0);
                let mut names: Vec<String> = path[from..]
                    .iter()
                    .map(|&p| spec.domains[p as usize].id.to_string())
                    .collect();
                names.push(spec.domains[x as usize].id.to_string());
                return Err(InventoryError::Cycle { path: names });
            }
            for p in path {
                state[p as usize] = 2;
            }
        }
        let n_levels = inv.ix.levels.len();
        // Ancestor-per-level table for every domain.
        let mut dom_anc = vec![NONE; n_dom * n_levels];
        for i in 0..n_dom {
            let mut x = i as u32;
            while x != NONE {
                let l = inv.ix.dom_level[x as usize] as usize;
                let slot = &mut dom_anc[i * n_levels + l];
                if *slot != NONE {
                    return Err(invalid(
                        format!("domain '{}'", spec.domains[i].id),
                        "parent",
                        format!(
                            "chain holds two '{}' domains ('{}' and '{}'); a level may appear once per path",
                            inv.ix.levels[l],
                            spec.domains[*slot as usize].id,
                            spec.domains[x as usize].id
                        ),
                    ));
                }
                *slot = x;
                x = inv.ix.dom_parent[x as usize];
            }
        }
        // Sizes must fit TOML's signed 64-bit integers so that the state can always be saved.
        let too_big = |v: Bytes| v.0 > i64::MAX as u64;
        let limit = format!("must be at most {} (the TOML integer range)", i64::MAX);
        for b in &spec.bandwidth_domains {
            inv.index_bw_domain(b)?;
        }
        for g in &spec.storage_groups {
            inv.index_group(g)?;
        }
        for d in &spec.drives {
            if too_big(d.capacity) {
                return Err(invalid(
                    format!("drive '{}'", d.id),
                    "capacity",
                    limit.clone(),
                ));
            }
        }
        // Drives. (Their errors name bandwidth domains from the spec, which is moved in below.)
        inv.ix_mut().dom_drives = vec![Vec::new(); n_dom];
        inv.shape_mut().bandwidth_domains = spec.bandwidth_domains.clone();
        for d in &spec.drives {
            let checked = inv.check_drive(d)?;
            inv.push_drive(d, checked);
        }
        // Servers.
        for s in &spec.servers {
            inv.index_server(s)?;
        }
        // Volumes: references and member counts; requests are checked when compiled.
        let mut seen = std::collections::HashSet::new();
        for v in &spec.volumes {
            let entry = || format!("volume '{}'", v.id);
            if !seen.insert(v.id.clone()) {
                return Err(InventoryError::DuplicateId {
                    kind: "volume",
                    id: v.id.to_string(),
                });
            }
            if let Err((field, reason)) = v.request.shape.validate() {
                return Err(invalid(entry(), "request", format!("{field} {reason}")));
            }
            if v.members.len() != v.request.shape.member_count() {
                return Err(invalid(
                    entry(),
                    "members",
                    format!(
                        "has {} drives but the shape has {} members",
                        v.members.len(),
                        v.request.shape.member_count()
                    ),
                ));
            }
            for m in &v.members {
                if !inv.ix.drive_index.contains_key(m) {
                    return Err(InventoryError::UnknownReference {
                        entry: entry(),
                        field: "members",
                        target: "drive",
                        id: m.to_string(),
                    });
                }
            }
        }
        inv.live = Live::of(&spec);
        inv.spec = Arc::new(spec);
        Ok(inv)
    }
}

/// Removes `x` from a sorted list that holds it.
fn sorted_remove(list: &mut Vec<u32>, x: u32) {
    if let Ok(p) = list.binary_search(&x) {
        list.remove(p);
    }
}

/// In a sorted list whose largest entry is the last index (which takes index `to`, as
/// `Vec::swap_remove` moves it), replaces that entry by `to`.
fn sorted_move_last(list: &mut Vec<u32>, to: u32) {
    list.pop();
    let p = list.partition_point(|&x| x < to);
    list.insert(p, to);
}

/// `Ok` if `id` is not in `index` yet; a [`InventoryError::DuplicateId`] of `kind` otherwise.
fn new_id<K, V>(index: &HashMap<K, V>, kind: &'static str, id: &K) -> Result<(), InventoryError>
where
    K: std::hash::Hash + Eq + std::fmt::Display,
{
    if index.contains_key(id) {
        return Err(InventoryError::DuplicateId {
            kind,
            id: id.to_string(),
        });
    }
    Ok(())
}
