//! The state-machine property: random sequences of calls, with duplicates
//! and retries, checked against a model of what the spec lets a CO observe.
//!
//! An [`Op`] names objects by small slot numbers, so sequences shrink well:
//! proptest drops and simplifies calls until the shortest failing sequence is
//! left, which the case prints as a numbered list of calls. Only sequences a
//! CO could send are executed (a call whose precondition the model says is
//! unmet, such as staging an unpublished volume, is skipped). After every
//! step the driver's listings must equal the model, nothing deleted may
//! reappear (though a name created again may get its deleted id back, as
//! with drivers that derive ids from names), and the available capacity may
//! never exceed what it was at the start of the sequence.
//!
//! When the driver advertises them, the sequences also modify volumes
//! (`MODIFY_VOLUME`, with the configured mutable parameters) and create and
//! delete group snapshots (`CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT`), whose
//! member snapshots the model expects in `ListSnapshots` until the group is
//! deleted, whatever happens to their source volumes.
//!
//! Snapshots outlive their source volume, but the spec lets a plugin refuse
//! to delete a volume that has snapshots or clones, or a snapshot a volume
//! was restored from, with `FAILED_PRECONDITION`; the model accepts that
//! answer there (and only there) and keeps the object. The teardown deletes
//! in rounds, so such a plugin is cleaned up too.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use csi_types::capabilities::ControllerCapabilities as CC;
use csi_types::capabilities::NodeCapabilities as NC;
use csi_types::{
    Code, CsiError,
    capabilities::{GroupControllerCapabilities, PluginCapabilities},
    proto,
};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::cases::{
    UNKNOWN_ID, list_all_snapshots, list_all_volumes, list_snapshot_entries, list_volume_entries,
    rw,
};
use crate::ctx::{CaseError, CaseResult, Cleanup, Ctx, describe};

/// One call of a generated sequence. Slots name volumes (`v0`, `v1`),
/// snapshots (`s0`, `s1`) and group snapshots (`g0`, `g1`) within one
/// sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `CreateVolume` of volume slot `slot` with `required_bytes = mult × volume_size`.
    Create {
        /// Volume slot.
        slot: u8,
        /// Size multiplier.
        mult: u8,
    },
    /// `CreateVolume` of `slot` cloning volume slot `from`.
    Clone {
        /// Volume slot to create.
        slot: u8,
        /// Volume slot to clone.
        from: u8,
    },
    /// `CreateVolume` of `slot` restoring snapshot slot `snap`.
    Restore {
        /// Volume slot to create.
        slot: u8,
        /// Snapshot slot to restore.
        snap: u8,
    },
    /// `DeleteVolume` of the slot's volume (or of its last deleted id).
    Delete {
        /// Volume slot.
        slot: u8,
    },
    /// `ControllerPublishVolume` to the node.
    Publish {
        /// Volume slot.
        slot: u8,
        /// The `readonly` flag (sent only when `PUBLISH_READONLY` is advertised).
        readonly: bool,
    },
    /// `ControllerUnpublishVolume` from the node.
    Unpublish {
        /// Volume slot.
        slot: u8,
    },
    /// `NodeStageVolume`.
    Stage {
        /// Volume slot.
        slot: u8,
    },
    /// `NodeUnstageVolume`.
    Unstage {
        /// Volume slot.
        slot: u8,
    },
    /// `NodePublishVolume`.
    NodePublish {
        /// Volume slot.
        slot: u8,
        /// The `readonly` flag.
        readonly: bool,
    },
    /// `NodeUnpublishVolume`.
    NodeUnpublish {
        /// Volume slot.
        slot: u8,
    },
    /// `CreateSnapshot` of snapshot slot `snap` from volume slot `slot`.
    Snapshot {
        /// Snapshot slot.
        snap: u8,
        /// Source volume slot.
        slot: u8,
    },
    /// `DeleteSnapshot`.
    DeleteSnapshot {
        /// Snapshot slot.
        snap: u8,
    },
    /// `ControllerExpandVolume` to `mult × volume_size`.
    Expand {
        /// Volume slot.
        slot: u8,
        /// Size multiplier.
        mult: u8,
    },
    /// `ControllerModifyVolume` with one of the configured mutable
    /// parameters (`param` indexes them in key order, wrapping around).
    Modify {
        /// Volume slot.
        slot: u8,
        /// Index of the mutable parameter.
        param: u8,
    },
    /// `CreateVolumeGroupSnapshot` of group slot `group` from the volume
    /// slots whose bits are set in `members` (bit 0 is `v0`).
    GroupSnapshot {
        /// Group snapshot slot.
        group: u8,
        /// Bit set of source volume slots; never 0.
        members: u8,
    },
    /// `DeleteVolumeGroupSnapshot` of the group slot (or of its last deleted id).
    DeleteGroupSnapshot {
        /// Group snapshot slot.
        group: u8,
    },
    /// `ListVolumes` and `ListSnapshots` in pages of one.
    List,
    /// The previous call again, verbatim: it must answer the same.
    Retry,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { slot, mult } => write!(f, "CreateVolume(v{slot}, required={mult}×size)"),
            Op::Clone { slot, from } => write!(f, "CreateVolume(v{slot}, clone of v{from})"),
            Op::Restore { slot, snap } => write!(f, "CreateVolume(v{slot}, from snapshot s{snap})"),
            Op::Delete { slot } => write!(f, "DeleteVolume(v{slot})"),
            Op::Publish { slot, readonly } => {
                write!(f, "ControllerPublishVolume(v{slot}, readonly={readonly})")
            }
            Op::Unpublish { slot } => write!(f, "ControllerUnpublishVolume(v{slot})"),
            Op::Stage { slot } => write!(f, "NodeStageVolume(v{slot})"),
            Op::Unstage { slot } => write!(f, "NodeUnstageVolume(v{slot})"),
            Op::NodePublish { slot, readonly } => {
                write!(f, "NodePublishVolume(v{slot}, readonly={readonly})")
            }
            Op::NodeUnpublish { slot } => write!(f, "NodeUnpublishVolume(v{slot})"),
            Op::Snapshot { snap, slot } => write!(f, "CreateSnapshot(s{snap} of v{slot})"),
            Op::DeleteSnapshot { snap } => write!(f, "DeleteSnapshot(s{snap})"),
            Op::Expand { slot, mult } => {
                write!(f, "ControllerExpandVolume(v{slot}, required={mult}×size)")
            }
            Op::Modify { slot, param } => {
                write!(
                    f,
                    "ControllerModifyVolume(v{slot}, mutable parameter #{param})"
                )
            }
            Op::GroupSnapshot { group, members } => {
                let slots: Vec<String> = (0..8u8)
                    .filter(|b| members & (1 << b) != 0)
                    .map(|b| format!("v{b}"))
                    .collect();
                write!(
                    f,
                    "CreateVolumeGroupSnapshot(g{group} of {})",
                    slots.join("+")
                )
            }
            Op::DeleteGroupSnapshot { group } => write!(f, "DeleteVolumeGroupSnapshot(g{group})"),
            Op::List => write!(f, "ListVolumes+ListSnapshots(max_entries=1)"),
            Op::Retry => write!(f, "retry the previous call"),
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;

    /// Parses a call as [`Op`]'s `Display` writes it, so a printed minimal
    /// sequence can be pasted into a regression test. A trailing
    /// ` (retry)` makes the call a [`Op::Retry`]; a trailing
    /// ` (skipped: …)` is ignored.
    ///
    /// ```
    /// use csi_testkit::props::Op;
    /// let op: Op = "CreateSnapshot(s1 of v0)".parse().unwrap();
    /// assert_eq!(op, Op::Snapshot { snap: 1, slot: 0 });
    /// assert_eq!(op.to_string().parse::<Op>().unwrap(), op);
    /// let op: Op = "CreateVolumeGroupSnapshot(g0 of v0+v1)".parse().unwrap();
    /// assert_eq!(op, Op::GroupSnapshot { group: 0, members: 0b11 });
    /// assert!("CreateVolume(x0)".parse::<Op>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Op, String> {
        let t = text.trim();
        if t == "retry the previous call" || t.ends_with(" (retry)") {
            return Ok(Op::Retry);
        }
        let t = match t.find(" (skipped") {
            Some(i) => &t[..i],
            None => t,
        };
        let bad = |why: &str| format!("cannot read call {text:?}: {why}");
        let (name, rest) = t
            .split_once('(')
            .ok_or_else(|| bad("expected Name(arguments)"))?;
        let args = rest
            .strip_suffix(')')
            .ok_or_else(|| bad("missing the closing parenthesis"))?;
        let args: Vec<&str> = if args.is_empty() {
            Vec::new()
        } else {
            args.split(", ").collect()
        };
        let slot = |a: &str, prefix: char| -> Result<u8, String> {
            a.strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad(&format!("expected {prefix}<number>, got {a:?}")))
        };
        let flag = |a: &str| -> Result<bool, String> {
            a.strip_prefix("readonly=")
                .and_then(|b| b.parse().ok())
                .ok_or_else(|| bad(&format!("expected readonly=true|false, got {a:?}")))
        };
        let mult = |a: &str| -> Result<u8, String> {
            a.strip_prefix("required=")
                .and_then(|m| m.strip_suffix("×size"))
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| bad(&format!("expected required=<n>×size, got {a:?}")))
        };
        let op = match (name, args.as_slice()) {
            ("CreateVolume", [v, a]) if a.starts_with("required=") => Op::Create {
                slot: slot(v, 'v')?,
                mult: mult(a)?,
            },
            ("CreateVolume", [v, a]) if a.starts_with("clone of ") => Op::Clone {
                slot: slot(v, 'v')?,
                from: slot(&a["clone of ".len()..], 'v')?,
            },
            ("CreateVolume", [v, a]) if a.starts_with("from snapshot ") => Op::Restore {
                slot: slot(v, 'v')?,
                snap: slot(&a["from snapshot ".len()..], 's')?,
            },
            ("DeleteVolume", [v]) => Op::Delete {
                slot: slot(v, 'v')?,
            },
            ("ControllerPublishVolume", [v, r]) => Op::Publish {
                slot: slot(v, 'v')?,
                readonly: flag(r)?,
            },
            ("ControllerUnpublishVolume", [v]) => Op::Unpublish {
                slot: slot(v, 'v')?,
            },
            ("NodeStageVolume", [v]) => Op::Stage {
                slot: slot(v, 'v')?,
            },
            ("NodeUnstageVolume", [v]) => Op::Unstage {
                slot: slot(v, 'v')?,
            },
            ("NodePublishVolume", [v, r]) => Op::NodePublish {
                slot: slot(v, 'v')?,
                readonly: flag(r)?,
            },
            ("NodeUnpublishVolume", [v]) => Op::NodeUnpublish {
                slot: slot(v, 'v')?,
            },
            ("CreateSnapshot", [a]) => {
                let (s, v) = a
                    .split_once(" of ")
                    .ok_or_else(|| bad("expected s<n> of v<n>"))?;
                Op::Snapshot {
                    snap: slot(s, 's')?,
                    slot: slot(v, 'v')?,
                }
            }
            ("DeleteSnapshot", [s]) => Op::DeleteSnapshot {
                snap: slot(s, 's')?,
            },
            ("ControllerExpandVolume", [v, a]) => Op::Expand {
                slot: slot(v, 'v')?,
                mult: mult(a)?,
            },
            ("ControllerModifyVolume", [v, p]) => Op::Modify {
                slot: slot(v, 'v')?,
                param: p
                    .strip_prefix("mutable parameter #")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad(&format!("expected mutable parameter #<n>, got {p:?}")))?,
            },
            ("CreateVolumeGroupSnapshot", [a]) => {
                let (g, vs) = a
                    .split_once(" of ")
                    .ok_or_else(|| bad("expected g<n> of v<n>+v<n>…"))?;
                let mut members = 0u8;
                for v in vs.split('+') {
                    let b = slot(v, 'v')?;
                    if b >= 8 {
                        return Err(bad(&format!("volume slot {v} is above v7")));
                    }
                    members |= 1 << b;
                }
                Op::GroupSnapshot {
                    group: slot(g, 'g')?,
                    members,
                }
            }
            ("DeleteVolumeGroupSnapshot", [g]) => Op::DeleteGroupSnapshot {
                group: slot(g, 'g')?,
            },
            ("ListVolumes+ListSnapshots", _) => Op::List,
            _ => return Err(bad("not a call the state machine makes")),
        };
        Ok(op)
    }
}

/// Sequences of 1 to 39 calls over 2 volume, 2 snapshot and 2 group
/// snapshot slots.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let slot = || 0u8..2;
    let snap = || 0u8..2;
    let group = || 0u8..2;
    let mult = || 1u8..4;
    let op = prop_oneof![
        6 => (slot(), mult()).prop_map(|(slot, mult)| Op::Create { slot, mult }),
        1 => (slot(), slot()).prop_map(|(slot, from)| Op::Clone { slot, from }),
        1 => (slot(), snap()).prop_map(|(slot, snap)| Op::Restore { slot, snap }),
        2 => slot().prop_map(|slot| Op::Delete { slot }),
        4 => (slot(), any::<bool>()).prop_map(|(slot, readonly)| Op::Publish { slot, readonly }),
        2 => slot().prop_map(|slot| Op::Unpublish { slot }),
        5 => slot().prop_map(|slot| Op::Stage { slot }),
        2 => slot().prop_map(|slot| Op::Unstage { slot }),
        6 => (slot(), any::<bool>()).prop_map(|(slot, readonly)| Op::NodePublish { slot, readonly }),
        2 => slot().prop_map(|slot| Op::NodeUnpublish { slot }),
        2 => (snap(), slot()).prop_map(|(snap, slot)| Op::Snapshot { snap, slot }),
        1 => snap().prop_map(|snap| Op::DeleteSnapshot { snap }),
        2 => (slot(), mult()).prop_map(|(slot, mult)| Op::Expand { slot, mult }),
        2 => (slot(), 0u8..4).prop_map(|(slot, param)| Op::Modify { slot, param }),
        2 => (group(), 1u8..4).prop_map(|(group, members)| Op::GroupSnapshot { group, members }),
        1 => group().prop_map(|group| Op::DeleteGroupSnapshot { group }),
        1 => Just(Op::List),
        3 => Just(Op::Retry),
    ];
    proptest::collection::vec(op, 1..40)
}

#[derive(Clone, Debug)]
struct MVol {
    id: String,
    cap: u64,
    requested: u64,
    source: Option<String>,
    published: Option<bool>,
    publish_context: BTreeMap<String, String>,
    staged: bool,
    node_published: Option<bool>,
}

impl MVol {
    fn in_use(&self) -> bool {
        self.published.is_some() || self.staged || self.node_published.is_some()
    }
}

#[derive(Clone, Debug)]
struct MSnap {
    id: String,
    source: String,
    size: u64,
    /// `ready_to_use` as created; a CO restores only ready snapshots.
    ready: bool,
}

/// A member snapshot of a group snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MMember {
    id: String,
    source: String,
    /// Whether the driver reported the group's id in `group_snapshot_id`;
    /// if it did, `ListSnapshots` must report it too.
    grouped: bool,
}

#[derive(Clone, Debug)]
struct MGroup {
    id: String,
    /// The source volume ids, as sent.
    sources: BTreeSet<String>,
    members: Vec<MMember>,
}

#[derive(Default)]
struct Model {
    vols: BTreeMap<u8, MVol>,
    snaps: BTreeMap<u8, MSnap>,
    groups: BTreeMap<u8, MGroup>,
    deleted_vols: HashSet<String>,
    deleted_snaps: HashSet<String>,
    deleted_groups: HashSet<String>,
    last_vol: BTreeMap<u8, String>,
    last_snap: BTreeMap<u8, String>,
    /// The last deleted group of a slot, with its member snapshot ids.
    last_group: BTreeMap<u8, (String, Vec<String>)>,
}

impl Model {
    /// Every snapshot id the driver must list: the single snapshots and the
    /// members of the groups.
    fn snapshot_ids(&self) -> BTreeSet<String> {
        let singles = self.snaps.values().map(|s| s.id.clone());
        let members = self
            .groups
            .values()
            .flat_map(|g| g.members.iter().map(|m| m.id.clone()));
        singles.chain(members).collect()
    }
}

/// What a call answered: its code and the id or size it returned.
type Observed = (Code, Option<String>);

static SEQ: AtomicU64 = AtomicU64::new(0);

struct Seq<'a> {
    c: &'a Ctx,
    prefix: String,
    m: Model,
}

fn expect_ok<T>(what: &str, r: Result<T, CsiError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: expected OK, got {}", describe(&e)))
}

/// Whether a `CreateVolume` of `required` bytes answered `OUT_OF_RANGE` for
/// a size above the configured volume size: a plugin whose maximum lies
/// between refuses it rightly ("Unsupported `capacity_range`"), and nothing
/// is created. (The configured size itself must be allowed: every case
/// creates volumes of it.)
fn refused_range<T>(r: &Result<T, CsiError>, required: u64, volume_size: u64) -> bool {
    required > volume_size && matches!(r, Err(e) if e.code() == Code::OutOfRange)
}

fn expect_code<T>(what: &str, r: Result<T, CsiError>, want: Code) -> Result<Observed, String> {
    match r {
        Ok(_) => Err(format!("{what}: expected {want}, got OK")),
        Err(e) if e.code() == want => Ok((want, None)),
        Err(e) => Err(format!("{what}: expected {want}, got {}", describe(&e))),
    }
}

impl Seq<'_> {
    /// The answer about an object that does not exist: `NOT_FOUND`. For
    /// the made-up [`UNKNOWN_ID`] (the slot never held an object, so no
    /// well-formed gone id is at hand), `INVALID_ARGUMENT` passes with a
    /// warning: a plugin whose ids have a format may refuse it as
    /// malformed (see `cases::Missing`).
    fn expect_missing<T>(
        &self,
        what: &str,
        r: Result<T, CsiError>,
        id: &str,
    ) -> Result<Observed, String> {
        if id == UNKNOWN_ID
            && let Err(e) = &r
            && e.code() == Code::InvalidArgument
        {
            self.c.warn(format!(
                "{what}: answered {} for the made-up id {UNKNOWN_ID}, which the spec allows (an invalid value); NOT_FOUND is preferred",
                describe(e)
            ));
            return Ok((Code::InvalidArgument, None));
        }
        expect_code(what, r, Code::NotFound)
    }

    /// Whether the answer to `DeleteVolume`/`DeleteSnapshot` of `id` is the
    /// made-up id refused as malformed, which passes with a warning (the
    /// spec's general `INVALID_ARGUMENT` row applies as well as its "does
    /// not exist: OK" rule).
    fn refused_made_up<T>(&self, what: &str, r: &Result<T, CsiError>, id: &str) -> bool {
        if id == UNKNOWN_ID
            && let Err(e) = r
            && e.code() == Code::InvalidArgument
        {
            self.c.warn(format!(
                "{what}: answered {} for the made-up id {UNKNOWN_ID}, which the spec allows (an invalid value); OK is preferred",
                describe(e)
            ));
            return true;
        }
        false
    }

    fn vname(&self, slot: u8) -> String {
        format!("{}-v{slot}", self.prefix)
    }

    fn target(&self, slot: u8) -> String {
        let dir = &self.c.config().target_dir;
        dir.join(format!("{}-t{slot}", self.prefix))
            .to_string_lossy()
            .into_owned()
    }

    fn staging(&self, slot: u8) -> String {
        let dir = &self.c.config().staging_dir;
        dir.join(format!("{}-st{slot}", self.prefix))
            .to_string_lossy()
            .into_owned()
    }

    /// Whether a live volume was made from `key` (`volume:<id>` or
    /// `snapshot:<id>`).
    fn has_source(&self, key: &str) -> bool {
        self.m
            .vols
            .values()
            .any(|v| v.source.as_deref() == Some(key))
    }

    /// Whether live volume `id` has snapshots (single or group members) or
    /// clones.
    fn has_dependents(&self, id: &str) -> bool {
        self.m.vols.values().any(|v| v.id == id)
            && (self.m.snaps.values().any(|s| s.source == id)
                || self
                    .m
                    .groups
                    .values()
                    .any(|g| g.members.iter().any(|m| m.source == id))
                || self.has_source(&format!("volume:{id}")))
    }

    fn gone_id(&self, slot: u8) -> String {
        self.m
            .last_vol
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_ID.to_string())
    }

    /// A `CreateVolume` whose expected outcome follows from the model.
    async fn create(
        &mut self,
        slot: u8,
        required: u64,
        source: Option<(String, proto::VolumeContentSource)>,
        source_missing: bool,
    ) -> Result<Option<Observed>, String> {
        let mut req = self.c.create_req(&self.vname(slot), required);
        let key = source.as_ref().map(|(k, _)| k.clone());
        let source_id = match source.as_ref().and_then(|(_, s)| s.r#type.as_ref()) {
            Some(proto::volume_content_source::Type::Snapshot(s)) => s.snapshot_id.clone(),
            Some(proto::volume_content_source::Type::Volume(v)) => v.volume_id.clone(),
            None => String::new(),
        };
        req.volume_content_source = source.map(|(_, s)| s);
        let what = "CreateVolume";
        let r = self.c.ctl().raw_create_volume(req).await;
        if source_missing {
            if let Some(v) = self.m.vols.get(&slot) {
                // Both NOT_FOUND and ALREADY_EXISTS describe this request;
                // when the volume was made by this very request before its
                // source went away, so does OK with that volume (a driver
                // that looks the name up first answers the retry so).
                let same = v.source == key && v.requested >= required;
                return match r {
                    Err(e) if matches!(e.code(), Code::NotFound | Code::AlreadyExists) => {
                        Ok(Some((e.code(), None)))
                    }
                    Ok(resp) if same => {
                        let got = resp.volume.map(|v| v.volume_id).unwrap_or_default();
                        if got != v.id {
                            return Err(format!(
                                "{what}: the name exists as {}, but the call returned {got}",
                                v.id
                            ));
                        }
                        Ok(Some((Code::Ok, Some(got))))
                    }
                    other => self.expect_missing(what, other, &source_id).map(Some),
                };
            }
            return self.expect_missing(what, r, &source_id).map(Some);
        }
        match self.m.vols.get(&slot) {
            Some(v) => {
                let fits = if v.cap > 0 {
                    v.cap >= required
                } else {
                    // capacity_bytes 0: the capacity is unknown (an NFS share, say). A range
                    // within the one it was created with fits; for a larger one, whether the
                    // volume satisfies it is the plugin's to judge: OK (with the same volume)
                    // and ALREADY_EXISTS are both right.
                    v.requested >= required || r.is_ok()
                };
                if !fits && refused_range(&r, required, self.c.config().volume_size) {
                    return Ok(Some((Code::OutOfRange, None)));
                }
                if fits && v.source == key {
                    let resp: csi_types::controller::CreateVolumeResponse =
                        self.c.ok(what, r).map_err(case_text)?;
                    if resp.volume.volume_id.as_str() != v.id {
                        return Err(format!(
                            "{what}: the name exists as {}, but the call returned {}",
                            v.id, resp.volume.volume_id
                        ));
                    }
                    Ok(Some((Code::Ok, Some(v.id.clone()))))
                } else {
                    expect_code(what, r, Code::AlreadyExists).map(Some)
                }
            }
            None => {
                if refused_range(&r, required, self.c.config().volume_size) {
                    return Ok(Some((Code::OutOfRange, None)));
                }
                let resp: csi_types::controller::CreateVolumeResponse =
                    self.c.ok(what, r).map_err(case_text)?;
                let id = resp.volume.volume_id.to_string();
                // A driver may derive ids from names: the same name created
                // again may get its deleted id back, but no other name may.
                let own = self.m.last_vol.get(&slot) == Some(&id);
                if self.m.deleted_vols.contains(&id) && !own {
                    return Err(format!("{what}: returned {id}, an id deleted earlier"));
                }
                self.m.deleted_vols.remove(&id);
                if self.m.vols.values().any(|v| v.id == id) {
                    return Err(format!(
                        "{what}: a new name returned {id}, the id of another volume"
                    ));
                }
                let cap = resp.volume.capacity_bytes;
                if cap != 0 && cap < required {
                    return Err(format!(
                        "{what}: capacity_bytes {cap} is below required_bytes {required}"
                    ));
                }
                self.m.vols.insert(
                    slot,
                    MVol {
                        id: id.clone(),
                        cap,
                        requested: required,
                        source: key,
                        published: None,
                        publish_context: BTreeMap::new(),
                        staged: false,
                        node_published: None,
                    },
                );
                Ok(Some((Code::Ok, Some(id))))
            }
        }
    }

    /// Retargets a node-side call to a volume where a CO could send it (the
    /// named slot if it qualifies, else one picked by the slot number among
    /// those that do), so deep lifecycles are reached often; `None` when no
    /// volume qualifies.
    fn resolve(&self, op: &Op) -> Option<Op> {
        let cc = self.c.found().controller;
        let nc = self.c.found().node;
        let publishes = cc.contains(CC::PUBLISH_UNPUBLISH_VOLUME);
        let stages = nc.contains(NC::STAGE_UNSTAGE_VOLUME);
        let pick = |slot: u8, ok: &dyn Fn(&MVol) -> bool| -> Option<u8> {
            if self.m.vols.get(&slot).is_some_and(ok) {
                return Some(slot);
            }
            let eligible: Vec<u8> = self
                .m
                .vols
                .iter()
                .filter(|(_, v)| ok(v))
                .map(|(k, _)| *k)
                .collect();
            (!eligible.is_empty()).then(|| eligible[slot as usize % eligible.len()])
        };
        let any = |_: &MVol| true;
        match *op {
            // Publishing, snapshotting and expanding go to a volume that
            // exists when there is one (a slot that has none tests NOT_FOUND).
            Op::Publish { slot, readonly } => Some(Op::Publish {
                slot: pick(slot, &|v| v.published.is_none())
                    .or_else(|| pick(slot, &any))
                    .unwrap_or(slot),
                readonly,
            }),
            Op::Snapshot { snap, slot } => pick(slot, &any).map(|slot| Op::Snapshot { snap, slot }),
            Op::Expand { slot, mult } => Some(Op::Expand {
                slot: pick(slot, &any).unwrap_or(slot),
                mult,
            }),
            Op::Modify { slot, param } => Some(Op::Modify {
                slot: pick(slot, &any).unwrap_or(slot),
                param,
            }),
            // A group is taken of the named volumes that exist, or else of
            // one that does; a CO does not snapshot volumes it never made.
            Op::GroupSnapshot { group, members } => {
                let present = (0..8u8)
                    .filter(|b| members & (1 << b) != 0 && self.m.vols.contains_key(b))
                    .fold(0u8, |m, b| m | (1 << b));
                let members = match present {
                    0 => 1 << pick(group, &any)?,
                    p => p,
                };
                Some(Op::GroupSnapshot { group, members })
            }
            Op::DeleteGroupSnapshot { group } => (self.m.groups.contains_key(&group)
                || self.m.last_group.contains_key(&group))
            .then_some(Op::DeleteGroupSnapshot { group }),
            Op::Stage { slot } => pick(slot, &|v| {
                (!publishes || v.published.is_some()) && !v.staged
            })
            .or_else(|| pick(slot, &|v| !publishes || v.published.is_some()))
            .map(|slot| Op::Stage { slot }),
            Op::Unstage { slot } => pick(slot, &|v| v.staged && v.node_published.is_none())
                .map(|slot| Op::Unstage { slot }),
            Op::NodePublish { slot, readonly } => pick(slot, &|v| {
                (!stages || v.staged)
                    && (!publishes || v.published.is_some())
                    && (readonly || v.published != Some(true))
            })
            .map(|slot| Op::NodePublish { slot, readonly }),
            Op::NodeUnpublish { slot } => {
                pick(slot, &|v| v.node_published.is_some()).map(|slot| Op::NodeUnpublish { slot })
            }
            Op::Unpublish { slot } => pick(slot, &|v| {
                v.published.is_some() && !v.staged && v.node_published.is_none()
            })
            .map(|slot| Op::Unpublish { slot }),
            ref other => Some(other.clone()),
        }
    }

    async fn step(&mut self, op: &Op) -> Result<Option<Observed>, String> {
        let found = self.c.found().clone();
        let cc = found.controller;
        let nc = found.node;
        let size = self.c.config().volume_size;
        let node = found.node_id.clone().unwrap_or_default();
        match *op {
            Op::Create { slot, mult } => self.create(slot, size * mult as u64, None, false).await,
            Op::Clone { slot, from } => {
                if !cc.contains(CC::CLONE_VOLUME) {
                    return Ok(None);
                }
                let (id, cap, missing) = match self.m.vols.get(&from) {
                    // A clone at least as large as its source: the source's capacity, or,
                    // when the plugin reported it unknown (0), the size it was created for.
                    Some(v) => {
                        let source = if v.cap > 0 { v.cap } else { v.requested };
                        (v.id.clone(), source.max(size), false)
                    }
                    None => (self.gone_id(from), size, true),
                };
                let src = proto::VolumeContentSource {
                    r#type: Some(proto::volume_content_source::Type::Volume(
                        proto::volume_content_source::VolumeSource {
                            volume_id: id.clone(),
                        },
                    )),
                };
                self.create(slot, cap, Some((format!("volume:{id}"), src)), missing)
                    .await
            }
            Op::Restore { slot, snap } => {
                if !cc.contains(CC::CREATE_DELETE_SNAPSHOT) {
                    return Ok(None);
                }
                let (id, cap, missing) = match self.m.snaps.get(&snap) {
                    Some(s) if !s.ready => return Ok(None),
                    Some(s) => (s.id.clone(), s.size.max(size), false),
                    None => (
                        self.m
                            .last_snap
                            .get(&snap)
                            .cloned()
                            .unwrap_or_else(|| UNKNOWN_ID.into()),
                        size,
                        true,
                    ),
                };
                let src = proto::VolumeContentSource {
                    r#type: Some(proto::volume_content_source::Type::Snapshot(
                        proto::volume_content_source::SnapshotSource {
                            snapshot_id: id.clone(),
                        },
                    )),
                };
                self.create(slot, cap, Some((format!("snapshot:{id}"), src)), missing)
                    .await
            }
            Op::Delete { slot } => {
                let id = match self.m.vols.get(&slot) {
                    Some(v) if v.in_use() => return Ok(None),
                    Some(v) => v.id.clone(),
                    None => self.gone_id(slot),
                };
                let r = self
                    .c
                    .ctl()
                    .raw_delete_volume(proto::DeleteVolumeRequest {
                        volume_id: id.clone(),
                        ..Default::default()
                    })
                    .await;
                // The spec lets a plugin that cannot delete a volume without
                // affecting its snapshots (or, "in use by another resource",
                // its clones) refuse with FAILED_PRECONDITION and leave it as
                // it was.
                if let Err(e) = &r
                    && e.code() == Code::FailedPrecondition
                    && self.has_dependents(&id)
                {
                    return Ok(Some((Code::FailedPrecondition, None)));
                }
                if self.refused_made_up("DeleteVolume", &r, &id) {
                    return Ok(Some((Code::InvalidArgument, None)));
                }
                expect_ok(&format!("DeleteVolume({id})"), r)?;
                if self.m.vols.remove(&slot).is_some() {
                    self.m.deleted_vols.insert(id.clone());
                    self.m.last_vol.insert(slot, id);
                }
                Ok(Some((Code::Ok, None)))
            }
            Op::Publish { slot, readonly } => {
                if !cc.contains(CC::PUBLISH_UNPUBLISH_VOLUME) {
                    return Ok(None);
                }
                let readonly = readonly && cc.contains(CC::PUBLISH_READONLY);
                let (id, state) = match self.m.vols.get(&slot) {
                    Some(v) => (v.id.clone(), Some(v.published)),
                    None => (self.gone_id(slot), None),
                };
                let attached = self
                    .m
                    .vols
                    .values()
                    .filter(|v| v.published.is_some())
                    .count() as u64;
                let r = self
                    .c
                    .ctl()
                    .raw_controller_publish_volume(proto::ControllerPublishVolumeRequest {
                        volume_id: id.clone(),
                        node_id: node,
                        volume_capability: Some(rw()),
                        readonly,
                        ..Default::default()
                    })
                    .await;
                let what = "ControllerPublishVolume";
                match state {
                    None => self.expect_missing(what, r, &id).map(Some),
                    Some(Some(ro)) if ro != readonly => {
                        expect_code(what, r, Code::AlreadyExists).map(Some)
                    }
                    Some(Some(_)) => {
                        let resp = expect_ok(what, r)?;
                        let v = self.m.vols.get(&slot).expect("present");
                        // Not the idempotency rule (which asks only for
                        // OK) but the field's: its contents "SHALL NOT be
                        // mutable" and "SHALL be safe for the CO to cache".
                        if resp.publish_context != v.publish_context {
                            return Err(format!(
                                "{what}: publishing again returned publish_context {:?}, first {:?} (the spec: its contents SHALL NOT be mutable and SHALL be safe for the CO to cache)",
                                resp.publish_context, v.publish_context
                            ));
                        }
                        Ok(Some((Code::Ok, None)))
                    }
                    Some(None) => {
                        if let Some(max) = found.max_volumes_per_node
                            && attached >= max
                        {
                            return expect_code(what, r, Code::ResourceExhausted).map(Some);
                        }
                        let resp = expect_ok(what, r)?;
                        let v = self.m.vols.get_mut(&slot).expect("present");
                        v.published = Some(readonly);
                        v.publish_context = resp.publish_context;
                        Ok(Some((Code::Ok, None)))
                    }
                }
            }
            Op::Unpublish { slot } => {
                if !cc.contains(CC::PUBLISH_UNPUBLISH_VOLUME) {
                    return Ok(None);
                }
                let Some(v) = self.m.vols.get(&slot) else {
                    return Ok(None);
                };
                if v.staged || v.node_published.is_some() {
                    return Ok(None);
                }
                let r = self
                    .c
                    .ctl()
                    .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                        volume_id: v.id.clone(),
                        node_id: node,
                        ..Default::default()
                    })
                    .await;
                expect_ok("ControllerUnpublishVolume", r)?;
                self.m.vols.get_mut(&slot).expect("present").published = None;
                Ok(Some((Code::Ok, None)))
            }
            Op::Stage { slot } => {
                if !nc.contains(NC::STAGE_UNSTAGE_VOLUME) {
                    return Ok(None);
                }
                let Some(v) = self.m.vols.get(&slot) else {
                    return Ok(None);
                };
                if cc.contains(CC::PUBLISH_UNPUBLISH_VOLUME) && v.published.is_none() {
                    return Ok(None);
                }
                let r = self
                    .c
                    .nd()
                    .raw_node_stage_volume(proto::NodeStageVolumeRequest {
                        volume_id: v.id.clone(),
                        publish_context: v.publish_context.clone(),
                        staging_target_path: self.staging(slot),
                        volume_capability: Some(rw()),
                        ..Default::default()
                    })
                    .await;
                expect_ok("NodeStageVolume", r)?;
                self.m.vols.get_mut(&slot).expect("present").staged = true;
                Ok(Some((Code::Ok, None)))
            }
            Op::Unstage { slot } => {
                if !nc.contains(NC::STAGE_UNSTAGE_VOLUME) {
                    return Ok(None);
                }
                let Some(v) = self.m.vols.get(&slot) else {
                    return Ok(None);
                };
                if v.node_published.is_some() {
                    return Ok(None);
                }
                let r = self
                    .c
                    .nd()
                    .raw_node_unstage_volume(proto::NodeUnstageVolumeRequest {
                        volume_id: v.id.clone(),
                        staging_target_path: self.staging(slot),
                    })
                    .await;
                expect_ok("NodeUnstageVolume", r)?;
                self.m.vols.get_mut(&slot).expect("present").staged = false;
                Ok(Some((Code::Ok, None)))
            }
            Op::NodePublish { slot, readonly } => {
                let Some(v) = self.m.vols.get(&slot) else {
                    return Ok(None);
                };
                let staged_ok = !nc.contains(NC::STAGE_UNSTAGE_VOLUME) || v.staged;
                let published_ok =
                    !cc.contains(CC::PUBLISH_UNPUBLISH_VOLUME) || v.published.is_some();
                if !staged_ok || !published_ok || (v.published == Some(true) && !readonly) {
                    return Ok(None);
                }
                let target = self.target(slot);
                let r = self
                    .c
                    .nd()
                    .raw_node_publish_volume(proto::NodePublishVolumeRequest {
                        volume_id: v.id.clone(),
                        publish_context: v.publish_context.clone(),
                        staging_target_path: if nc.contains(NC::STAGE_UNSTAGE_VOLUME) {
                            self.staging(slot)
                        } else {
                            String::new()
                        },
                        target_path: target.clone(),
                        volume_capability: Some(rw()),
                        readonly,
                        ..Default::default()
                    })
                    .await;
                let what = "NodePublishVolume";
                match v.node_published {
                    Some(ro) if ro != readonly => {
                        expect_code(what, r, Code::AlreadyExists).map(Some)
                    }
                    _ => {
                        expect_ok(what, r)?;
                        if !Path::new(&target).exists() {
                            return Err(format!("{what}: succeeded but {target} does not exist"));
                        }
                        self.m.vols.get_mut(&slot).expect("present").node_published =
                            Some(readonly);
                        Ok(Some((Code::Ok, None)))
                    }
                }
            }
            Op::NodeUnpublish { slot } => {
                let Some(v) = self.m.vols.get(&slot) else {
                    return Ok(None);
                };
                let target = self.target(slot);
                let r = self
                    .c
                    .nd()
                    .raw_node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                        volume_id: v.id.clone(),
                        target_path: target.clone(),
                    })
                    .await;
                expect_ok("NodeUnpublishVolume", r)?;
                if std::fs::symlink_metadata(&target).is_ok() {
                    return Err(format!("NodeUnpublishVolume: {target} still exists"));
                }
                self.m.vols.get_mut(&slot).expect("present").node_published = None;
                Ok(Some((Code::Ok, None)))
            }
            Op::Snapshot { snap, slot } => {
                if !cc.contains(CC::CREATE_DELETE_SNAPSHOT) {
                    return Ok(None);
                }
                let Some(v) = self.m.vols.get(&slot) else {
                    return Ok(None);
                };
                let (vid, vcap) = (v.id.clone(), v.cap);
                let r = self
                    .c
                    .ctl()
                    .raw_create_snapshot(proto::CreateSnapshotRequest {
                        source_volume_id: vid.clone(),
                        name: format!("{}-s{snap}", self.prefix),
                        ..Default::default()
                    })
                    .await;
                let what = "CreateSnapshot";
                match self.m.snaps.get(&snap) {
                    Some(s) if s.source != vid => {
                        expect_code(what, r, Code::AlreadyExists).map(Some)
                    }
                    Some(s) => {
                        let resp: csi_types::controller::CreateSnapshotResponse =
                            self.c.ok(what, r).map_err(case_text)?;
                        if resp.snapshot.snapshot_id.as_str() != s.id {
                            return Err(format!(
                                "{what}: the name exists as {}, the call returned {}",
                                s.id, resp.snapshot.snapshot_id
                            ));
                        }
                        Ok(Some((Code::Ok, Some(s.id.clone()))))
                    }
                    None => {
                        // "Not enough space to create snapshot": nothing is
                        // created, and a retry may succeed once space is freed.
                        if let Err(e) = &r
                            && e.code() == Code::ResourceExhausted
                        {
                            self.c.warn(format!(
                                "{what} of {vid} answered {} (not enough space to create the snapshot)",
                                describe(e)
                            ));
                            return Ok(Some((Code::ResourceExhausted, None)));
                        }
                        let resp: csi_types::controller::CreateSnapshotResponse =
                            self.c.ok(what, r).map_err(case_text)?;
                        let id = resp.snapshot.snapshot_id.to_string();
                        let own = self.m.last_snap.get(&snap) == Some(&id);
                        if (self.m.deleted_snaps.contains(&id) && !own)
                            || self.m.snapshot_ids().contains(&id)
                        {
                            return Err(format!(
                                "{what}: a new name returned {id}, an id already used"
                            ));
                        }
                        self.m.deleted_snaps.remove(&id);
                        let size = if resp.snapshot.size_bytes > 0 {
                            resp.snapshot.size_bytes
                        } else {
                            vcap
                        };
                        self.m.snaps.insert(
                            snap,
                            MSnap {
                                id: id.clone(),
                                source: vid,
                                size,
                                ready: resp.snapshot.ready_to_use,
                            },
                        );
                        Ok(Some((Code::Ok, Some(id))))
                    }
                }
            }
            Op::DeleteSnapshot { snap } => {
                if !cc.contains(CC::CREATE_DELETE_SNAPSHOT) {
                    return Ok(None);
                }
                let id = match self.m.snaps.get(&snap) {
                    Some(s) => s.id.clone(),
                    None => self
                        .m
                        .last_snap
                        .get(&snap)
                        .cloned()
                        .unwrap_or_else(|| UNKNOWN_ID.into()),
                };
                let r = self
                    .c
                    .ctl()
                    .raw_delete_snapshot(proto::DeleteSnapshotRequest {
                        snapshot_id: id.clone(),
                        ..Default::default()
                    })
                    .await;
                // "Snapshot in use": a plugin whose restored volumes depend
                // on their snapshot may refuse with FAILED_PRECONDITION.
                if let Err(e) = &r
                    && e.code() == Code::FailedPrecondition
                    && self.m.snaps.contains_key(&snap)
                    && self.has_source(&format!("snapshot:{id}"))
                {
                    return Ok(Some((Code::FailedPrecondition, None)));
                }
                if self.refused_made_up("DeleteSnapshot", &r, &id) {
                    return Ok(Some((Code::InvalidArgument, None)));
                }
                expect_ok(&format!("DeleteSnapshot({id})"), r)?;
                if self.m.snaps.remove(&snap).is_some() {
                    self.m.deleted_snaps.insert(id.clone());
                    self.m.last_snap.insert(snap, id);
                }
                Ok(Some((Code::Ok, None)))
            }
            Op::Expand { slot, mult } => {
                if !cc.contains(CC::EXPAND_VOLUME) {
                    return Ok(None);
                }
                let required = size * mult as u64;
                let online = found
                    .plugin
                    .contains(PluginCapabilities::VOLUME_EXPANSION_ONLINE);
                let (id, old) = match self.m.vols.get(&slot) {
                    Some(v) if v.in_use() && !online => return Ok(None),
                    Some(v) => (v.id.clone(), Some(v.cap)),
                    None => (self.gone_id(slot), None),
                };
                let r = self
                    .c
                    .ctl()
                    .raw_controller_expand_volume(proto::ControllerExpandVolumeRequest {
                        volume_id: id.clone(),
                        capacity_range: Some(proto::CapacityRange {
                            required_bytes: required as i64,
                            limit_bytes: 0,
                        }),
                        ..Default::default()
                    })
                    .await;
                let what = "ControllerExpandVolume";
                let Some(old) = old else {
                    // A size beyond the plugin's maximum may be refused
                    // before the volume is looked up: both rules apply.
                    if refused_range(&r, required, size) {
                        return Ok(Some((Code::OutOfRange, None)));
                    }
                    return self.expect_missing(what, r, &id).map(Some);
                };
                // A plugin may refuse a size it does not allow ("Unsupported
                // capacity"): a shrink (which it may also answer as a no-op
                // with the current size), or a growth it cannot make (a
                // volume that is one whole drive). The size stays as it was.
                if let Err(e) = &r
                    && e.code() == Code::OutOfRange
                {
                    return Ok(Some((Code::OutOfRange, None)));
                }
                let resp: csi_types::controller::ControllerExpandVolumeResponse =
                    self.c.ok(what, r).map_err(case_text)?;
                let cap = resp.capacity_bytes;
                if cap < required || cap < old {
                    return Err(format!(
                        "{what}: to {required} bytes from {old} answered capacity_bytes {cap}"
                    ));
                }
                self.m.vols.get_mut(&slot).expect("present").cap = cap;
                Ok(Some((Code::Ok, Some(cap.to_string()))))
            }
            Op::Modify { slot, param } => self.modify(slot, param).await,
            Op::GroupSnapshot { group, members } => self.group_snapshot(group, members).await,
            Op::DeleteGroupSnapshot { group } => self.delete_group_snapshot(group).await,
            Op::List => {
                if cc.contains(CC::LIST_VOLUMES) {
                    list_all_volumes(self.c, 1).await.map_err(case_text)?;
                }
                if cc.contains(CC::LIST_SNAPSHOTS) {
                    list_all_snapshots(self.c, 1).await.map_err(case_text)?;
                }
                Ok(Some((Code::Ok, None)))
            }
            Op::Retry => Ok(None),
        }
    }

    /// `ControllerModifyVolume`: OK on a volume that exists, NOT_FOUND on
    /// one that does not, and what `ListVolumes` shows of the volume (its
    /// id, source and the nodes it is published to) is the same before and
    /// after. Its `volume_context` and condition may change: a driver may
    /// report the mutable parameters there; so may its capacity and
    /// accessible topology, with a warning.
    async fn modify(&mut self, slot: u8, param: u8) -> Result<Option<Observed>, String> {
        let cc = self.c.found().controller;
        let params = &self.c.config().mutable_parameters;
        if !cc.contains(CC::MODIFY_VOLUME) || params.is_empty() {
            return Ok(None);
        }
        let (key, value) = params
            .iter()
            .nth(param as usize % params.len())
            .expect("index below the length");
        let what = format!("ControllerModifyVolume({key}={value})");
        let (id, exists) = match self.m.vols.get(&slot) {
            Some(v) => (v.id.clone(), true),
            None => (self.gone_id(slot), false),
        };
        let lists = cc.contains(CC::LIST_VOLUMES);
        let before = if exists && lists {
            listed_volume(self.c, &id).await?
        } else {
            None
        };
        let r = self
            .c
            .ctl()
            .raw_controller_modify_volume(proto::ControllerModifyVolumeRequest {
                volume_id: id.clone(),
                mutable_parameters: [(key.clone(), value.clone())].into(),
                ..Default::default()
            })
            .await;
        if !exists {
            return self.expect_missing(&what, r, &id).map(Some);
        }
        expect_ok(&what, r)?;
        if lists {
            let after = listed_volume(self.c, &id).await?;
            // The spec ties neither the capacity nor the accessible topology
            // to the mutable parameters (a parameter may pick a tier of
            // another size, or one reachable elsewhere): a change is
            // reported, and the model follows the new capacity. The id,
            // source and published nodes stay.
            let (Some(b), Some(mut a)) = (before, after.clone()) else {
                return Err(format!(
                    "{what}: changed whether ListVolumes shows {id}: after {after:?}"
                ));
            };
            let (cap, topology) = (a.volume.capacity_bytes, a.volume.accessible_topology);
            a.volume.capacity_bytes = b.volume.capacity_bytes;
            a.volume.accessible_topology = b.volume.accessible_topology.clone();
            if a != b {
                return Err(format!(
                    "{what}: changed what ListVolumes shows of {id}: before {b:?}, after {after:?}"
                ));
            }
            if cap != b.volume.capacity_bytes {
                self.c.warn(format!(
                    "{what}: ListVolumes shows {id} with capacity_bytes {cap}, {} before (the spec allows it: a mutable parameter may change the size)",
                    b.volume.capacity_bytes
                ));
                self.m.vols.get_mut(&slot).expect("present").cap = cap;
            }
            if topology != b.volume.accessible_topology {
                self.c.warn(format!(
                    "{what}: ListVolumes shows {id} with accessible_topology {topology:?}, {:?} before (the spec allows it: a mutable parameter may move the volume)",
                    b.volume.accessible_topology
                ));
            }
        }
        Ok(Some((Code::Ok, None)))
    }

    /// `CreateVolumeGroupSnapshot`: a new name makes one new snapshot per
    /// source volume; the same name and sources answer the same group; the
    /// same name with other sources answers ALREADY_EXISTS.
    async fn group_snapshot(&mut self, group: u8, members: u8) -> Result<Option<Observed>, String> {
        if !self.groups_supported() {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for b in (0..8u8).filter(|b| members & (1 << b) != 0) {
            match self.m.vols.get(&b) {
                Some(v) => ids.push(v.id.clone()),
                None => return Ok(None),
            }
        }
        let want: BTreeSet<String> = ids.iter().cloned().collect();
        let r = self
            .c
            .ctl()
            .raw_create_volume_group_snapshot(proto::CreateVolumeGroupSnapshotRequest {
                name: format!("{}-g{group}", self.prefix),
                source_volume_ids: ids,
                ..Default::default()
            })
            .await;
        let what = "CreateVolumeGroupSnapshot";
        let existing = self.m.groups.get(&group).cloned();
        if existing.as_ref().is_some_and(|g| g.sources != want) {
            return expect_code(what, r, Code::AlreadyExists).map(Some);
        }
        // "Cannot snapshot multiple volumes together": a plugin may require
        // the members to be configured alike (the same pool, say), which
        // clones and restores need not be. "Not enough space to create group
        // snapshot" likewise. Nothing is created.
        if existing.is_none()
            && let Err(e) = &r
            && matches!(e.code(), Code::FailedPrecondition | Code::ResourceExhausted)
        {
            self.c.warn(format!(
                "{what} of {want:?} answered {} (the volumes cannot be snapshotted together, or there is not enough space)",
                describe(e)
            ));
            return Ok(Some((e.code(), None)));
        }
        let resp = expect_ok(what, r)?;
        let gs = resp
            .group_snapshot
            .ok_or_else(|| format!("{what}: the response has no group_snapshot"))?;
        let gid = gs.group_snapshot_id;
        let mut got = Vec::new();
        for s in gs.snapshots {
            // "If this message is inside a VolumeGroupSnapshot message, the
            // value MUST be the same as the group_snapshot_id in that
            // message": empty is not the same.
            if s.group_snapshot_id != gid {
                return Err(format!(
                    "{what}: member {} has group_snapshot_id {:?}, the group is {gid}",
                    s.snapshot_id, s.group_snapshot_id
                ));
            }
            got.push(MMember {
                grouped: !s.group_snapshot_id.is_empty(),
                id: s.snapshot_id,
                source: s.source_volume_id,
            });
        }
        let sources: BTreeSet<String> = got.iter().map(|m| m.source.clone()).collect();
        if sources != want || got.len() != want.len() {
            return Err(format!(
                "{what}: of volumes {want:?} answered {} snapshots of {sources:?}",
                got.len()
            ));
        }
        match existing {
            Some(g) => {
                let first: BTreeSet<&str> = g.members.iter().map(|m| m.id.as_str()).collect();
                let again: BTreeSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
                if g.id != gid || first != again {
                    return Err(format!(
                        "{what}: the name exists as {} with snapshots {first:?}, the call returned {gid} with {again:?}",
                        g.id
                    ));
                }
            }
            None => {
                // Ids derived from names come back for the same name only.
                let (old_gid, old_members) = match self.m.last_group.get(&group) {
                    Some((g, m)) => (Some(g), m.as_slice()),
                    None => (None, &[][..]),
                };
                if (self.m.deleted_groups.contains(&gid) && old_gid != Some(&gid))
                    || self.m.groups.values().any(|g| g.id == gid)
                {
                    return Err(format!(
                        "{what}: a new name returned {gid}, an id already used"
                    ));
                }
                let used = self.m.snapshot_ids();
                if let Some(m) = got.iter().find(|m| {
                    used.contains(&m.id)
                        || (self.m.deleted_snaps.contains(&m.id) && !old_members.contains(&m.id))
                }) {
                    return Err(format!(
                        "{what}: member snapshot {} has an id already used",
                        m.id
                    ));
                }
                self.m.deleted_groups.remove(&gid);
                for m in &got {
                    self.m.deleted_snaps.remove(&m.id);
                }
                self.m.groups.insert(
                    group,
                    MGroup {
                        id: gid.clone(),
                        sources: want,
                        members: got,
                    },
                );
            }
        }
        Ok(Some((Code::Ok, Some(gid))))
    }

    /// `DeleteVolumeGroupSnapshot`: OK, for a group deleted before too, and
    /// its member snapshots are gone from `ListSnapshots` afterwards.
    async fn delete_group_snapshot(&mut self, group: u8) -> Result<Option<Observed>, String> {
        if !self.groups_supported() {
            return Ok(None);
        }
        let (id, snapshot_ids) = match self.m.groups.get(&group) {
            Some(g) => (
                g.id.clone(),
                g.members.iter().map(|m| m.id.clone()).collect(),
            ),
            None => match self.m.last_group.get(&group) {
                Some(last) => last.clone(),
                None => return Ok(None),
            },
        };
        let r = self
            .c
            .ctl()
            .raw_delete_volume_group_snapshot(proto::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: id.clone(),
                snapshot_ids: snapshot_ids.clone(),
                ..Default::default()
            })
            .await;
        expect_ok(&format!("DeleteVolumeGroupSnapshot({id})"), r)?;
        if self.m.groups.remove(&group).is_some() {
            self.m.deleted_snaps.extend(snapshot_ids.iter().cloned());
            self.m.deleted_groups.insert(id.clone());
            self.m.last_group.insert(group, (id, snapshot_ids));
        }
        Ok(Some((Code::Ok, None)))
    }

    fn groups_supported(&self) -> bool {
        self.c
            .found()
            .group
            .contains(GroupControllerCapabilities::CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT)
    }

    async fn check(
        &self,
        base_vols: &BTreeSet<String>,
        base_snaps: &BTreeSet<String>,
        cap0: Option<u64>,
    ) -> Result<(), String> {
        let cc = self.c.found().controller;
        if cc.contains(CC::LIST_VOLUMES) {
            let listed: BTreeSet<String> = list_all_volumes(self.c, 2)
                .await
                .map_err(case_text)?
                .into_iter()
                .collect();
            for id in &listed {
                if self.m.deleted_vols.contains(id) {
                    return Err(format!("ListVolumes lists {id}, which was deleted"));
                }
            }
            let ours: BTreeSet<String> = listed.difference(base_vols).cloned().collect();
            let model: BTreeSet<String> = self.m.vols.values().map(|v| v.id.clone()).collect();
            if ours != model {
                return Err(format!(
                    "ListVolumes disagrees with the model: missing {:?}, unexpected {:?}",
                    model.difference(&ours).collect::<Vec<_>>(),
                    ours.difference(&model).collect::<Vec<_>>()
                ));
            }
        }
        if cc.contains(CC::LIST_SNAPSHOTS) {
            // Each listed snapshot id with the group_snapshot_id it is shown with.
            let groups: BTreeMap<String, String> = list_snapshot_entries(self.c, 2)
                .await
                .map_err(case_text)?
                .into_iter()
                .map(|s| {
                    let group = s.group_snapshot_id.map(|g| g.into_string());
                    (s.snapshot_id.into_string(), group.unwrap_or_default())
                })
                .collect();
            let listed: BTreeSet<String> = groups.keys().cloned().collect();
            for id in &listed {
                if self.m.deleted_snaps.contains(id) {
                    return Err(format!("ListSnapshots lists {id}, which was deleted"));
                }
            }
            let ours: BTreeSet<String> = listed.difference(base_snaps).cloned().collect();
            let model = self.m.snapshot_ids();
            if ours != model {
                return Err(format!(
                    "ListSnapshots disagrees with the model: missing {:?}, unexpected {:?}",
                    model.difference(&ours).collect::<Vec<_>>(),
                    ours.difference(&model).collect::<Vec<_>>()
                ));
            }
            for g in self.m.groups.values() {
                for m in g.members.iter().filter(|m| m.grouped) {
                    let shown = groups.get(&m.id).map(String::as_str).unwrap_or_default();
                    if shown != g.id {
                        return Err(format!(
                            "ListSnapshots reports member {} of group snapshot {} with group_snapshot_id {shown:?}",
                            m.id, g.id
                        ));
                    }
                }
            }
        }
        // The spec does not tie the available capacity to the volumes the
        // sequence made: space freed elsewhere in a shared pool raises it.
        // More than before any volume was created is worth a warning only.
        if let Some(cap0) = cap0 {
            let now = capacity(self.c).await?;
            if now > cap0 {
                self.c.warn(format!(
                    "GetCapacity: available capacity {now} exceeds {cap0}, what it was before any volume was created (the spec allows it: space may have been freed elsewhere)"
                ));
            }
        }
        Ok(())
    }

    /// Undoes everything the model holds, in the order a CO would.
    async fn teardown(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        let node = self.c.found().node_id.clone().unwrap_or_default();
        for (slot, v) in std::mem::take(&mut self.m.vols) {
            if v.node_published.is_some()
                && let Err(e) = self
                    .c
                    .nd()
                    .raw_node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                        volume_id: v.id.clone(),
                        target_path: self.target(slot),
                    })
                    .await
            {
                errors.push(format!("NodeUnpublishVolume({}): {}", v.id, describe(&e)));
            }
            if v.staged
                && let Err(e) = self
                    .c
                    .nd()
                    .raw_node_unstage_volume(proto::NodeUnstageVolumeRequest {
                        volume_id: v.id.clone(),
                        staging_target_path: self.staging(slot),
                    })
                    .await
            {
                errors.push(format!("NodeUnstageVolume({}): {}", v.id, describe(&e)));
            }
            if v.published.is_some()
                && let Err(e) = self
                    .c
                    .ctl()
                    .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                        volume_id: v.id.clone(),
                        node_id: node.clone(),
                        ..Default::default()
                    })
                    .await
            {
                errors.push(format!(
                    "ControllerUnpublishVolume({}): {}",
                    v.id,
                    describe(&e)
                ));
            }
            self.m.vols.insert(slot, v);
        }
        // A driver that keeps snapshots and clones tied to their source
        // answers FAILED_PRECONDITION until the dependents are gone, so
        // deletion goes in rounds for as long as each round deletes something.
        let mut pending: Vec<Cleanup> = std::mem::take(&mut self.m.groups)
            .into_values()
            .map(|g| Cleanup::GroupSnapshot(g.id, g.members.into_iter().map(|m| m.id).collect()))
            .chain(
                std::mem::take(&mut self.m.snaps)
                    .into_values()
                    .map(|s| Cleanup::Snapshot(s.id)),
            )
            .chain(
                std::mem::take(&mut self.m.vols)
                    .into_values()
                    .map(|v| Cleanup::Volume(v.id)),
            )
            .collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut failed = Vec::new();
            for item in std::mem::take(&mut pending) {
                if let Err(e) = self.c.undo(&item).await {
                    failed.push(format!("{item:?}: {}", describe(&e)));
                    pending.push(item);
                }
            }
            if pending.len() == before {
                errors.extend(failed);
                break;
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cleanup after the sequence failed: {}",
                errors.join("; ")
            ))
        }
    }
}

fn case_text(e: CaseError) -> String {
    match e {
        CaseError::Fail(s) | CaseError::Skip(s) => s,
    }
}

/// The `ListVolumes` entry of `id`, without the parts
/// `ControllerModifyVolume` may change silently: `volume_context` and the
/// volume condition.
async fn listed_volume(
    c: &Ctx,
    id: &str,
) -> Result<Option<csi_types::controller::ListVolumesEntry>, String> {
    let entries = list_volume_entries(c, 0).await.map_err(case_text)?;
    Ok(entries
        .into_iter()
        .find(|e| e.volume.volume_id.as_str() == id)
        .map(|mut e| {
            e.volume.volume_context.clear();
            if let Some(st) = e.status.as_mut() {
                st.volume_condition = None;
            }
            e
        }))
}

async fn capacity(c: &Ctx) -> Result<u64, String> {
    let r: csi_types::controller::GetCapacityResponse = c
        .ok(
            "GetCapacity",
            c.ctl()
                .raw_get_capacity(proto::GetCapacityRequest {
                    volume_capabilities: vec![rw()],
                    parameters: c.config().parameters.clone().into_iter().collect(),
                    ..Default::default()
                })
                .await,
        )
        .map_err(case_text)?;
    Ok(r.available_capacity)
}

/// What a sequence did: how many calls of each kind ran (not skipped), and
/// the calls as sent, for the failure report.
#[derive(Default)]
struct Observer {
    stats: BTreeMap<&'static str, usize>,
    trace: Vec<String>,
    /// Calls (1-based) that were not sent, and why.
    skipped: Vec<(usize, String)>,
}

impl Op {
    /// The variant's name, for coverage counts.
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "Create",
            Op::Clone { .. } => "Clone",
            Op::Restore { .. } => "Restore",
            Op::Delete { .. } => "Delete",
            Op::Publish { .. } => "Publish",
            Op::Unpublish { .. } => "Unpublish",
            Op::Stage { .. } => "Stage",
            Op::Unstage { .. } => "Unstage",
            Op::NodePublish { .. } => "NodePublish",
            Op::NodeUnpublish { .. } => "NodeUnpublish",
            Op::Snapshot { .. } => "Snapshot",
            Op::DeleteSnapshot { .. } => "DeleteSnapshot",
            Op::Expand { .. } => "Expand",
            Op::Modify { .. } => "Modify",
            Op::GroupSnapshot { .. } => "GroupSnapshot",
            Op::DeleteGroupSnapshot { .. } => "DeleteGroupSnapshot",
            Op::List => "List",
            Op::Retry => "Retry",
        }
    }
}

/// Runs one sequence against the driver and the model; `Err` describes the
/// first disagreement.
async fn run_sequence(c: &Ctx, ops: &[Op], obs: &mut Observer) -> Result<(), String> {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let cc = c.found().controller;
    let base_vols: BTreeSet<String> = if cc.contains(CC::LIST_VOLUMES) {
        list_all_volumes(c, 0)
            .await
            .map_err(case_text)?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    let base_snaps: BTreeSet<String> = if cc.contains(CC::LIST_SNAPSHOTS) {
        list_all_snapshots(c, 0)
            .await
            .map_err(case_text)?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    let cap0 = if cc.contains(CC::GET_CAPACITY) {
        Some(capacity(c).await?)
    } else {
        None
    };
    for dir in [&c.config().staging_dir, &c.config().target_dir] {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut s = Seq {
        c,
        prefix: c.name(&format!("sm{seq}")),
        m: Model::default(),
    };
    let mut last: Option<(Op, Observed)> = None;
    let mut result = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let (sent, r) = match op {
            Op::Retry => match last.clone() {
                None => (None, Ok(())),
                Some((prev, first)) => {
                    let r = match s.step(&prev).await {
                        Ok(Some(again)) if again != first => Err(format!(
                            "retrying {prev} answered {} {:?}, the first call answered {} {:?}",
                            again.0, again.1, first.0, first.1
                        )),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    };
                    (Some(format!("{prev} (retry)")), r)
                }
            },
            op => match s.resolve(op) {
                None => (None, Ok(())),
                Some(real) => {
                    let r = match s.step(&real).await {
                        Ok(Some(o)) => {
                            last = Some((real.clone(), o));
                            Ok(())
                        }
                        Ok(None) => {
                            obs.skipped.push((
                                i + 1,
                                format!("{real}: the driver does not advertise what it needs"),
                            ));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    (Some(real.to_string()), r)
                }
            },
        };
        match &sent {
            Some(call) => {
                *obs.stats.entry(op.kind()).or_default() += 1;
                obs.trace.push(call.clone());
            }
            None => {
                obs.trace
                    .push(format!("{op} (skipped: no volume qualifies)"));
                obs.skipped.push((
                    i + 1,
                    format!("{op}: no volume qualifies, or nothing to retry"),
                ));
            }
        }
        let r = match r {
            Ok(()) => s.check(&base_vols, &base_snaps, cap0).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            result = Err(format!(
                "at call {} ({}): {e}",
                i + 1,
                sent.unwrap_or_else(|| op.to_string())
            ));
            break;
        }
    }
    let torn = s.teardown().await;
    result.and(torn)
}

/// The `properties/state_machine` case.
pub(crate) async fn state_machine(c: Ctx) -> CaseResult {
    c.need_controller(CC::CREATE_DELETE_VOLUME, "CREATE_DELETE_VOLUME")?;
    let cases = c.config().proptest_cases;
    if cases == 0 {
        return Err(CaseError::Skip(
            "the number of property cases is 0 (--cases)".into(),
        ));
    }
    let handle = tokio::runtime::Handle::current();
    let ctx = c.clone();
    // proptest is synchronous, so it runs on a blocking thread that drives
    // each sequence with `block_on`. If the case times out, the guard's drop
    // tells the remaining sequences to pass at once, so the runner finishes
    // instead of calling the driver behind the next case's back.
    struct Cancel(Arc<AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let seed_value = c.config().seed;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = Cancel(cancelled.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let config = ProptestConfig {
            cases,
            failure_persistence: None,
            max_shrink_iters: 512,
            ..ProptestConfig::default()
        };
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&seed_value.to_le_bytes());
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        runner.run(&ops(), |ops| {
            if cancelled.load(Ordering::Relaxed) {
                return Ok(());
            }
            handle
                .block_on(run_sequence(&ctx, &ops, &mut Observer::default()))
                .map_err(TestCaseError::fail)
        })
    })
    .await
    .map_err(|e| CaseError::Fail(format!("the property runner died: {e}")))?;
    match outcome {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, ops)) => {
            // Replay the shrunk sequence once to list the calls as sent
            // (node calls retargeted to the volume they went to).
            let mut obs = Observer::default();
            let replay = run_sequence(&c, &ops, &mut obs).await;
            let (reason, calls) = match replay {
                Err(again) => (again, obs.trace),
                Ok(()) => (
                    format!(
                        "{reason} (the shrunk sequence passed when replayed: the failure is intermittent)"
                    ),
                    ops.iter().map(|op| op.to_string()).collect(),
                ),
            };
            if calls.is_empty() {
                // Shrunk to no call at all: the check fails on the state the driver starts
                // from, and an empty list of calls ("minimal failing sequence (0 calls):")
                // said nothing.
                return Err(CaseError::Fail(format!(
                    "{reason}\nthis fails before the first call of any sequence: the driver's state at the start (ListVolumes, ListSnapshots, GetCapacity) already disagrees with the spec, whatever the calls"
                )));
            }
            let calls: Vec<String> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| format!("  {}. {call}", i + 1))
                .collect();
            Err(CaseError::Fail(format!(
                "{reason}\nminimal failing sequence ({} calls):\n{}",
                calls.len(),
                calls.join("\n")
            )))
        }
        Err(TestError::Abort(reason)) => Err(CaseError::Fail(format!(
            "the property run was aborted: {reason}"
        ))),
    }
}

/// Runs one sequence of calls against the driver and the model, as the
/// property does, and undoes it afterwards: for regression tests of a shrunk
/// sequence (parse it with `str::parse::<Op>`). `Err` describes the first
/// disagreement with the spec's model, or names the first call that could
/// not be sent (no volume qualified, or the driver lacks the capability).
pub async fn replay(suite: &crate::Suite, ops: &[Op]) -> Result<(), String> {
    let c = suite.context("props::replay").await;
    let mut obs = Observer::default();
    run_sequence(&c, ops, &mut obs).await?;
    match obs.skipped.first() {
        // A regression sequence that is not sent whole tests less than it says.
        Some((n, why)) => Err(format!("call {n} was not sent: {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::strategy::ValueTree;

    use super::*;
    use crate::memdriver::{MemDriver, MemDriverConfig};
    use crate::{Config, Discovered};

    /// The model's preconditions must not skip whole kinds of calls: over
    /// the sequences a normal run generates, every kind is executed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_kind_of_call_is_executed() {
        let dir = tempfile::tempdir().unwrap();
        let plugin: Arc<dyn csi_types::RawCsi> =
            Arc::new(MemDriver::new(MemDriverConfig::default()).plugin());
        let found = Discovered::discover(&*plugin, &*plugin).await;
        let mut config = Config::new(dir.path());
        config.mutable_parameters = [("iops".to_string(), "500".to_string())].into();
        let c = Ctx::new(plugin.clone(), plugin, config, found, "coverage");
        let mut runner = TestRunner::new_with_rng(
            ProptestConfig::default(),
            TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        );
        let mut obs = Observer::default();
        for _ in 0..32 {
            let seq = ops().new_tree(&mut runner).unwrap().current();
            run_sequence(&c, &seq, &mut obs).await.unwrap();
        }
        let stats = obs.stats;
        println!("{stats:?}");
        for kind in [
            "Create",
            "Clone",
            "Restore",
            "Delete",
            "Publish",
            "Unpublish",
            "Stage",
            "Unstage",
            "NodePublish",
            "NodeUnpublish",
            "Snapshot",
            "DeleteSnapshot",
            "Expand",
            "Modify",
            "GroupSnapshot",
            "DeleteGroupSnapshot",
            "List",
            "Retry",
        ] {
            assert!(
                stats.get(kind).copied().unwrap_or(0) > 0,
                "{kind} never ran: {stats:?}"
            );
        }
    }
}
