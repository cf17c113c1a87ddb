//! What a case runs with: the two endpoints, the [`Config`], what the driver
//! advertises, helpers that turn call results into pass/fail reasons, and the
//! cleanup list that undoes what a case created even when it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use csi_types::check::ResponseRules;
use csi_types::{
    Code, Csi, CsiError, RawCsi,
    capabilities::{
        ControllerCapabilities, GroupControllerCapabilities, NodeCapabilities, PluginCapabilities,
    },
    proto,
};

/// What the suite needs to know about the driver and the node it runs on.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where node cases put staging paths (a fresh subdirectory per volume;
    /// the harness creates the parent, the plugin the path itself).
    pub staging_dir: PathBuf,
    /// Where node cases put target paths (the plugin creates each target).
    pub target_dir: PathBuf,
    /// StorageClass parameters sent with every `CreateVolume`.
    pub parameters: BTreeMap<String, String>,
    /// Mutable parameters the driver accepts in `ControllerModifyVolume`;
    /// empty skips the cases that need one.
    pub mutable_parameters: BTreeMap<String, String>,
    /// The size, in bytes, of the volumes the cases create.
    pub volume_size: u64,
    /// A second node id the controller knows, for the publish-to-a-second-node
    /// case; `None` skips it.
    pub second_node_id: Option<String>,
    /// Run only cases whose name contains this text.
    pub filter: Option<String>,
    /// How many random sequences the state-machine property runs.
    pub proptest_cases: u32,
    /// The seed of those sequences: the same seed generates the same
    /// sequences, another seed explores others.
    pub seed: u64,
    /// How many concurrent calls the concurrency cases send.
    pub concurrency: usize,
    /// The longest a case may take before it fails as hung.
    pub case_timeout: std::time::Duration,
    /// Prefix of every volume, snapshot and group snapshot name the suite
    /// creates, so its objects are recognisable on a shared backend.
    pub name_prefix: String,
    /// Accept a regular file where a published BLOCK volume's target must be
    /// a block device: for drivers that, like the [`crate::memdriver`],
    /// cannot make device nodes. Off by default.
    pub block_targets_may_be_files: bool,
}

impl Config {
    /// A configuration with staging and target directories under `dir`, 1 MiB
    /// volumes, 32 property cases and 8 concurrent calls.
    pub fn new(dir: impl AsRef<Path>) -> Config {
        let dir = dir.as_ref();
        Config {
            staging_dir: dir.join("staging"),
            target_dir: dir.join("target"),
            parameters: BTreeMap::new(),
            mutable_parameters: BTreeMap::new(),
            volume_size: 1 << 20,
            second_node_id: None,
            filter: None,
            proptest_cases: 32,
            seed: 0,
            concurrency: 8,
            case_timeout: std::time::Duration::from_secs(120),
            name_prefix: "csi-testkit".into(),
            block_targets_may_be_files: false,
        }
    }
}

/// Why a case stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseError {
    /// The driver broke the spec.
    Fail(String),
    /// The case does not apply.
    Skip(String),
}

/// The result type of a case body.
pub type CaseResult = Result<(), CaseError>;

/// Fails the case with a formatted reason.
macro_rules! fail {
    ($($t:tt)*) => { return Err($crate::ctx::CaseError::Fail(format!($($t)*))) };
}
pub(crate) use fail;

/// Fails the case unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => { if !$cond { $crate::ctx::fail!($($t)*); } };
}
pub(crate) use ensure;

/// Something a case created and must undo.
#[derive(Clone, Debug)]
pub(crate) enum Cleanup {
    Volume(String),
    Snapshot(String),
    GroupSnapshot(String, Vec<String>),
    ControllerPublish(String, String),
    Stage(String, String),
    NodePublish(String, String),
}

/// What the driver advertises, discovered once per run.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    /// `GetPluginCapabilities`.
    pub plugin: PluginCapabilities,
    /// `ControllerGetCapabilities` (empty without a Controller service).
    pub controller: ControllerCapabilities,
    /// `NodeGetCapabilities`.
    pub node: NodeCapabilities,
    /// `GroupControllerGetCapabilities`.
    pub group: GroupControllerCapabilities,
    /// `NodeGetInfo.node_id`, when the node service answered.
    pub node_id: Option<String>,
    /// `NodeGetInfo.max_volumes_per_node`.
    pub max_volumes_per_node: Option<u64>,
    /// `NodeGetInfo.accessible_topology`.
    pub node_topology: Option<csi_types::types::Topology>,
    /// Why discovery of the node failed, if it did.
    pub node_error: Option<String>,
}

impl Discovered {
    /// Asks the driver what it advertises.
    pub async fn discover(controller: &dyn RawCsi, node: &dyn RawCsi) -> Discovered {
        let mut d = Discovered::default();
        if let Ok(r) = Csi::get_plugin_capabilities(controller, Default::default()).await {
            d.plugin = r.capabilities;
        }
        if d.plugin.contains(PluginCapabilities::CONTROLLER_SERVICE)
            && let Ok(r) = Csi::controller_get_capabilities(controller, Default::default()).await
        {
            d.controller = r.capabilities;
        }
        if d.plugin
            .contains(PluginCapabilities::GROUP_CONTROLLER_SERVICE)
            && let Ok(r) =
                Csi::group_controller_get_capabilities(controller, Default::default()).await
        {
            d.group = r.capabilities;
        }
        if let Ok(r) = Csi::node_get_capabilities(node, Default::default()).await {
            d.node = r.capabilities;
        }
        match Csi::node_get_info(node, Default::default()).await {
            Ok(r) => {
                d.node_id = Some(r.node_id.into_string());
                d.max_volumes_per_node = r.max_volumes_per_node;
                d.node_topology = r.accessible_topology;
            }
            Err(e) => d.node_error = Some(e.to_string()),
        }
        d
    }
}

static RUN: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Inner {
    pub controller: Arc<dyn RawCsi>,
    pub node: Arc<dyn RawCsi>,
    pub config: Config,
    pub found: Discovered,
    pub case: String,
    run: u64,
    counter: AtomicU64,
    cleanup: Mutex<Vec<Cleanup>>,
    warnings: Mutex<Vec<String>>,
}

/// The handle a case body gets; cheap to clone into concurrent tasks.
#[derive(Clone)]
pub struct Ctx(pub(crate) Arc<Inner>);

impl Ctx {
    pub(crate) fn new(
        controller: Arc<dyn RawCsi>,
        node: Arc<dyn RawCsi>,
        config: Config,
        found: Discovered,
        case: &str,
    ) -> Ctx {
        Ctx(Arc::new(Inner {
            controller,
            node,
            config,
            found,
            case: case.to_string(),
            run: RUN.fetch_add(1, Ordering::Relaxed),
            counter: AtomicU64::new(0),
            cleanup: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
        }))
    }

    /// The controller-side endpoint.
    pub fn ctl(&self) -> &dyn RawCsi {
        &*self.0.controller
    }

    /// The node-side endpoint.
    pub fn nd(&self) -> &dyn RawCsi {
        &*self.0.node
    }

    /// The name of the case this context runs.
    pub fn case_name(&self) -> &str {
        &self.0.case
    }

    /// The suite configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// What the driver advertises.
    pub fn found(&self) -> &Discovered {
        &self.0.found
    }

    /// A fresh name for an object this case creates.
    pub fn name(&self, tag: &str) -> String {
        let n = self.0.counter.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        format!(
            "{}-{pid}-{}-{tag}-{n}",
            self.0.config.name_prefix, self.0.run
        )
    }

    /// A fresh path under the staging directory (its parent exists).
    pub fn staging_path(&self) -> Result<String, CaseError> {
        let p = self.0.config.staging_dir.join(self.name("stage"));
        mkdir(&self.0.config.staging_dir)?;
        Ok(p.to_string_lossy().into_owned())
    }

    /// A fresh path under the target directory (its parent exists, it does not).
    pub fn target_path(&self) -> Result<String, CaseError> {
        let p = self.0.config.target_dir.join(self.name("target"));
        mkdir(&self.0.config.target_dir)?;
        Ok(p.to_string_lossy().into_owned())
    }

    pub(crate) fn push(&self, c: Cleanup) {
        self.0
            .cleanup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
    }

    pub(crate) fn forget(&self, pred: impl Fn(&Cleanup) -> bool) {
        self.0
            .cleanup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !pred(c));
    }

    /// Undoes one thing a case created.
    pub(crate) async fn undo(&self, item: &Cleanup) -> Result<(), CsiError> {
        match item {
            Cleanup::NodePublish(v, t) => self
                .nd()
                .raw_node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                    volume_id: v.clone(),
                    target_path: t.clone(),
                })
                .await
                .map(drop),
            Cleanup::Stage(v, s) => self
                .nd()
                .raw_node_unstage_volume(proto::NodeUnstageVolumeRequest {
                    volume_id: v.clone(),
                    staging_target_path: s.clone(),
                })
                .await
                .map(drop),
            Cleanup::ControllerPublish(v, n) => self
                .ctl()
                .raw_controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                    volume_id: v.clone(),
                    node_id: n.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Cleanup::GroupSnapshot(g, s) => self
                .ctl()
                .raw_delete_volume_group_snapshot(proto::DeleteVolumeGroupSnapshotRequest {
                    group_snapshot_id: g.clone(),
                    snapshot_ids: s.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Cleanup::Snapshot(s) => self
                .ctl()
                .raw_delete_snapshot(proto::DeleteSnapshotRequest {
                    snapshot_id: s.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Cleanup::Volume(v) => self
                .ctl()
                .raw_delete_volume(proto::DeleteVolumeRequest {
                    volume_id: v.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    }

    /// Undoes, newest first, everything the case registered. Returns the
    /// calls that failed.
    pub(crate) async fn cleanup(&self) -> Vec<String> {
        let items = std::mem::take(&mut *self.0.cleanup.lock().unwrap_or_else(|e| e.into_inner()));
        let mut errors = Vec::new();
        for item in items.into_iter().rev() {
            let r = self.undo(&item).await;
            if let Err(e) = r {
                errors.push(format!("{item:?}: {}", describe(&e)));
            }
        }
        errors
    }

    /// Skips unless the controller advertises `cap`.
    pub fn need_controller(&self, cap: ControllerCapabilities, what: &str) -> CaseResult {
        if self.found().controller.contains(cap) {
            Ok(())
        } else {
            Err(CaseError::Skip(format!(
                "the controller does not advertise {what}"
            )))
        }
    }

    /// Skips unless the node advertises `cap`.
    pub fn need_node(&self, cap: NodeCapabilities, what: &str) -> CaseResult {
        if self.found().node.contains(cap) {
            Ok(())
        } else {
            Err(CaseError::Skip(format!(
                "the node does not advertise {what}"
            )))
        }
    }

    /// Skips unless the GroupController service is advertised.
    pub fn need_group(&self) -> CaseResult {
        if self
            .found()
            .group
            .contains(GroupControllerCapabilities::CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT)
        {
            Ok(())
        } else {
            Err(CaseError::Skip(
                "the plugin does not advertise CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT".into(),
            ))
        }
    }

    /// The node id from `NodeGetInfo`, or a failure naming why it is unknown.
    pub fn node_id(&self) -> Result<String, CaseError> {
        match (&self.found().node_id, &self.found().node_error) {
            (Some(id), _) => Ok(id.clone()),
            (None, e) => Err(CaseError::Fail(format!(
                "NodeGetInfo failed: {}",
                e.as_deref().unwrap_or("no answer")
            ))),
        }
    }
}

fn mkdir(p: &Path) -> Result<(), CaseError> {
    std::fs::create_dir_all(p)
        .map_err(|e| CaseError::Skip(format!("cannot create {}: {e}", p.display())))
}

/// A field path with every list index replaced by `*`: `entries[3].x[0]` →
/// `entries[*].x[*]`.
fn any_index(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*");
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// `CODE: message` for an error.
pub fn describe(e: &CsiError) -> String {
    format!("{}: {e}", e.code())
}

/// An answer a case may get: `OK` or an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The call succeeded.
    Ok,
    /// The call failed with this code.
    Code(Code),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ok => f.write_str("OK"),
            Answer::Code(c) => write!(f, "{c}"),
        }
    }
}

impl Ctx {
    /// Records a warning for this case: something the spec allows or
    /// tells the CO to tolerate, but that users' tools may not expect. The
    /// case still passes.
    /// The same warning twice in one case is recorded once.
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        let mut w = self.0.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !w.contains(&message) {
            w.push(message);
        }
    }

    /// The warnings recorded so far.
    pub fn warnings(&self) -> Vec<String> {
        self.0
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Unwraps a successful call, validating the response into its typed
    /// form: a broken MUST rule fails the case, each bent tolerated rule
    /// (see `csi_types::check`) is recorded as a warning.
    pub fn ok<P, T>(&self, rpc: &str, r: Result<P, CsiError>) -> Result<T, CaseError>
    where
        P: ResponseRules,
        T: TryFrom<P, Error = CsiError>,
    {
        match r {
            Ok(p) => {
                for odd in p.tolerated() {
                    // One warning per field and rule, whichever list entry.
                    self.warn(format!(
                        "{rpc}: the response bends a tolerated rule: `{}`: {}",
                        any_index(&odd.field),
                        odd.rule
                    ));
                }
                T::try_from(p).map_err(|e| {
                    CaseError::Fail(format!("{rpc}: the response breaks the spec: {e}"))
                })
            }
            Err(e) => Err(CaseError::Fail(format!(
                "{rpc}: expected OK, got {}",
                describe(&e)
            ))),
        }
    }

    /// Passes when the call answered `want`. When the spec allows other
    /// answers too (two of its rules apply, or it says SHOULD), those in
    /// `also` pass with a warning that says `why` `want` is preferred;
    /// anything else fails.
    pub fn answer<P>(
        &self,
        rpc: &str,
        r: Result<P, CsiError>,
        want: Answer,
        also: &[Answer],
        why: &str,
    ) -> CaseResult {
        let (got, text) = match &r {
            Ok(_) => (Answer::Ok, "OK".to_string()),
            Err(e) => (Answer::Code(e.code()), describe(e)),
        };
        if got == want {
            Ok(())
        } else if also.contains(&got) {
            self.warn(format!(
                "{rpc}: answered {text}, which the spec allows; {want} is preferred: {why}"
            ));
            Ok(())
        } else {
            let mut accepted = vec![want.to_string()];
            accepted.extend(also.iter().map(Answer::to_string));
            Err(CaseError::Fail(format!(
                "{rpc}: expected {}, got {text}",
                accepted.join(" or ")
            )))
        }
    }
}

/// Unwraps a successful call whose response has no typed form worth checking.
pub fn ok_raw<P>(rpc: &str, r: Result<P, CsiError>) -> Result<P, CaseError> {
    r.map_err(|e| CaseError::Fail(format!("{rpc}: expected OK, got {}", describe(&e))))
}

/// Passes when the call failed with `want`.
pub fn code<P>(rpc: &str, r: Result<P, CsiError>, want: Code) -> CaseResult {
    match r {
        Ok(_) => Err(CaseError::Fail(format!("{rpc}: expected {want}, got OK"))),
        Err(e) if e.code() == want => Ok(()),
        Err(e) => Err(CaseError::Fail(format!(
            "{rpc}: expected {want}, got {}",
            describe(&e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_collapsed() {
        assert_eq!(
            any_index("entries[12].status.published_node_ids[0]"),
            "entries[*].status.published_node_ids[*]"
        );
        assert_eq!(
            any_index("status.volume_condition.message"),
            "status.volume_condition.message"
        );
    }
}
