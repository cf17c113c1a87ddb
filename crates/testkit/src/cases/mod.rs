//! The named spec cases and the helpers they share.
//!
//! Each case is a function of a [`Ctx`]; [`all`] lists them in the order they
//! run. A case skips itself (naming the capability) when the driver does not
//! advertise what it needs, and registers everything it creates for cleanup.

use futures::future::BoxFuture;

use csi_types::{
    proto,
    types::{AccessMode, Snapshot, Volume, VolumeCapability},
};

use crate::ctx::{CaseError, Cleanup, Ctx};

mod concurrency;
mod condition;
mod controller;
mod group;
mod identity;
mod metadata;
mod node;
mod topology;

/// A case body.
pub type CaseFn = fn(Ctx) -> BoxFuture<'static, Result<(), CaseError>>;

/// A named case.
#[derive(Clone, Copy)]
pub struct Case {
    /// `service/rpc/what`, e.g. `controller/create_volume/idempotent`.
    pub name: &'static str,
    /// What the case checks, in a sentence.
    pub about: &'static str,
    pub(crate) run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("about", &self.about)
            .finish()
    }
}

/// Builds a [`Case`] from a name, a description and an async body over `c: Ctx`.
macro_rules! case {
    ($name:expr, $about:expr, |$c:ident| $body:block) => {
        $crate::cases::Case {
            name: $name,
            about: $about,
            run: |$c| Box::pin(async move $body),
        }
    };
}
pub(crate) use case;

/// Every case, in the order the suite runs them.
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(identity::cases());
    v.extend(controller::cases());
    v.extend(node::cases());
    v.extend(condition::cases());
    v.extend(topology::cases());
    v.extend(group::cases());
    v.extend(metadata::cases());
    v.extend(concurrency::cases());
    v.push(case!(
        "properties/state_machine",
        "random sequences of calls with retries agree with a model of the spec after every step",
        |c| { crate::props::state_machine(c).await }
    ));
    v
}

/// A mount capability with the given access mode.
pub(crate) fn mount(mode: AccessMode) -> proto::VolumeCapability {
    VolumeCapability::mount(mode).into()
}

/// A single-node-writer `BLOCK` capability.
pub(crate) fn block() -> proto::VolumeCapability {
    VolumeCapability::block(AccessMode::SingleNodeWriter).into()
}

/// The capability the cases use unless they test another.
pub(crate) fn rw() -> proto::VolumeCapability {
    mount(AccessMode::SingleNodeWriter)
}

impl Ctx {
    /// A `CreateVolume` request for `name` with the configured parameters.
    pub(crate) fn create_req(&self, name: &str, required: u64) -> proto::CreateVolumeRequest {
        proto::CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: required as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![rw()],
            parameters: self.config().parameters.clone().into_iter().collect(),
            ..Default::default()
        }
    }

    /// Sends a `CreateVolume` and registers the volume for cleanup when it succeeds.
    pub(crate) async fn send_create(
        &self,
        req: proto::CreateVolumeRequest,
    ) -> Result<proto::CreateVolumeResponse, csi_types::CsiError> {
        let r = self.ctl().raw_create_volume(req).await;
        if let Ok(resp) = &r
            && let Some(v) = &resp.volume
            && !v.volume_id.is_empty()
        {
            let id = v.volume_id.clone();
            self.forget(|c| matches!(c, Cleanup::Volume(x) if *x == id));
            self.push(Cleanup::Volume(v.volume_id.clone()));
        }
        r
    }

    /// Creates a volume of the configured size; it is deleted after the case.
    pub(crate) async fn volume(&self, tag: &str) -> Result<Volume, CaseError> {
        let req = self.create_req(&self.name(tag), self.config().volume_size);
        let r: csi_types::controller::CreateVolumeResponse =
            self.ok("CreateVolume", self.send_create(req).await)?;
        Ok(r.volume)
    }

    /// Creates a `BLOCK` volume of the configured size; it is deleted after
    /// the case. No capability advertises `BLOCK` support, so a plugin that
    /// refuses the capability (`INVALID_ARGUMENT`) skips the case.
    pub(crate) async fn block_volume(&self, tag: &str) -> Result<Volume, CaseError> {
        let mut req = self.create_req(&self.name(tag), self.config().volume_size);
        req.volume_capabilities = vec![block()];
        match self.send_create(req).await {
            Err(e) if e.code() == csi_types::Code::InvalidArgument => {
                Err(CaseError::Skip(format!(
                    "the plugin does not take BLOCK volumes (CreateVolume answered {})",
                    crate::ctx::describe(&e)
                )))
            }
            r => {
                let r: csi_types::controller::CreateVolumeResponse =
                    self.ok("CreateVolume (BLOCK)", r)?;
                Ok(r.volume)
            }
        }
    }

    /// Cuts a snapshot of `volume_id`; it is deleted after the case.
    pub(crate) async fn snapshot(&self, volume_id: &str, tag: &str) -> Result<Snapshot, CaseError> {
        let req = proto::CreateSnapshotRequest {
            source_volume_id: volume_id.to_string(),
            name: self.name(tag),
            ..Default::default()
        };
        let r = self.snapshot_made("CreateSnapshot", self.send_snapshot(req).await)?;
        Ok(r.snapshot)
    }

    /// The answer to a case's first `CreateSnapshot` of a snapshot it needs:
    /// `RESOURCE_EXHAUSTED` ("Not enough space to create snapshot", which
    /// the spec allows whenever the storage lacks the space) skips the
    /// case, naming the answer; any other error fails it.
    pub(crate) fn snapshot_made(
        &self,
        rpc: &str,
        r: Result<proto::CreateSnapshotResponse, csi_types::CsiError>,
    ) -> Result<csi_types::controller::CreateSnapshotResponse, CaseError> {
        match r {
            Err(e) if e.code() == csi_types::Code::ResourceExhausted => {
                Err(CaseError::Skip(format!(
                    "{rpc} answered {} (not enough space to create the snapshot the case needs)",
                    crate::ctx::describe(&e)
                )))
            }
            r => self.ok(rpc, r),
        }
    }

    /// Sends a `CreateSnapshot` and registers the snapshot for cleanup when it succeeds.
    pub(crate) async fn send_snapshot(
        &self,
        req: proto::CreateSnapshotRequest,
    ) -> Result<proto::CreateSnapshotResponse, csi_types::CsiError> {
        let r = self.ctl().raw_create_snapshot(req).await;
        if let Ok(resp) = &r
            && let Some(s) = &resp.snapshot
            && !s.snapshot_id.is_empty()
        {
            let id = s.snapshot_id.clone();
            self.forget(|c| matches!(c, Cleanup::Snapshot(x) if *x == id));
            self.push(Cleanup::Snapshot(s.snapshot_id.clone()));
        }
        r
    }

    /// Publishes on the controller (when it advertises publishing) to this
    /// node; undone after the case. Returns the publish context.
    pub(crate) async fn controller_publish(
        &self,
        volume_id: &str,
        cap: proto::VolumeCapability,
        readonly: bool,
    ) -> Result<std::collections::BTreeMap<String, String>, CaseError> {
        if !self
            .found()
            .controller
            .contains(csi_types::capabilities::ControllerCapabilities::PUBLISH_UNPUBLISH_VOLUME)
        {
            return Ok(Default::default());
        }
        let node = self.node_id()?;
        let r = self
            .ctl()
            .raw_controller_publish_volume(proto::ControllerPublishVolumeRequest {
                volume_id: volume_id.to_string(),
                node_id: node.clone(),
                volume_capability: Some(cap),
                readonly,
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            self.push(Cleanup::ControllerPublish(volume_id.to_string(), node));
        }
        let r: csi_types::controller::ControllerPublishVolumeResponse =
            self.ok("ControllerPublishVolume", r)?;
        Ok(r.publish_context.into_iter().collect())
    }

    /// Stages the volume (when the node advertises staging) at a fresh path;
    /// undone after the case. Returns the staging path, if any.
    pub(crate) async fn stage(
        &self,
        volume_id: &str,
        cap: proto::VolumeCapability,
        publish_context: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, CaseError> {
        if !self
            .found()
            .node
            .contains(csi_types::capabilities::NodeCapabilities::STAGE_UNSTAGE_VOLUME)
        {
            return Ok(None);
        }
        let path = self.staging_path()?;
        let r = self
            .nd()
            .raw_node_stage_volume(proto::NodeStageVolumeRequest {
                volume_id: volume_id.to_string(),
                publish_context: publish_context.clone(),
                staging_target_path: path.clone(),
                volume_capability: Some(cap),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            self.push(Cleanup::Stage(volume_id.to_string(), path.clone()));
        }
        crate::ctx::ok_raw("NodeStageVolume", r)?;
        Ok(Some(path))
    }

    /// A `NodePublishVolume` request for a fresh target path.
    pub(crate) fn node_publish_req(
        &self,
        volume_id: &str,
        staging: &Option<String>,
        cap: proto::VolumeCapability,
        readonly: bool,
        publish_context: &std::collections::BTreeMap<String, String>,
    ) -> Result<proto::NodePublishVolumeRequest, CaseError> {
        Ok(proto::NodePublishVolumeRequest {
            volume_id: volume_id.to_string(),
            publish_context: publish_context.clone(),
            staging_target_path: staging.clone().unwrap_or_default(),
            target_path: self.target_path()?,
            volume_capability: Some(cap),
            readonly,
            ..Default::default()
        })
    }

    /// Sends a `NodePublishVolume`, registering the target for cleanup when it succeeds.
    pub(crate) async fn send_node_publish(
        &self,
        req: proto::NodePublishVolumeRequest,
    ) -> Result<proto::NodePublishVolumeResponse, csi_types::CsiError> {
        let (v, t) = (req.volume_id.clone(), req.target_path.clone());
        let r = self.nd().raw_node_publish_volume(req).await;
        if r.is_ok() {
            let (v2, t2) = (v.clone(), t.clone());
            self.forget(|c| matches!(c, Cleanup::NodePublish(a, b) if *a == v2 && *b == t2));
            self.push(Cleanup::NodePublish(v, t));
        }
        r
    }

    /// Creates a volume, publishes it on the controller and stages it: what
    /// a node case needs before `NodePublishVolume`.
    pub(crate) async fn ready_for_node_publish(
        &self,
        cap: proto::VolumeCapability,
    ) -> Result<
        (
            Volume,
            Option<String>,
            std::collections::BTreeMap<String, String>,
        ),
        CaseError,
    > {
        self.need_controller(
            csi_types::capabilities::ControllerCapabilities::CREATE_DELETE_VOLUME,
            "CREATE_DELETE_VOLUME (node cases need a volume to work on)",
        )?;
        self.node_id()?;
        let vol = self.volume("node").await?;
        let ctx = self
            .controller_publish(vol.volume_id.as_str(), cap.clone(), false)
            .await?;
        let staging = self.stage(vol.volume_id.as_str(), cap, &ctx).await?;
        Ok((vol, staging, ctx))
    }
}

/// Lists every volume, following `next_token` with pages of `page`
/// (0 lets the plugin choose).
pub(crate) async fn list_volume_entries(
    c: &Ctx,
    page: i32,
) -> Result<Vec<csi_types::controller::ListVolumesEntry>, CaseError> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let r: csi_types::controller::ListVolumesResponse = c.ok(
            "ListVolumes",
            c.ctl()
                .raw_list_volumes(proto::ListVolumesRequest {
                    max_entries: page,
                    starting_token: token.clone(),
                })
                .await,
        )?;
        if page > 0 && r.entries.len() > page as usize {
            crate::ctx::fail!(
                "ListVolumes: returned {} entries for max_entries {page}",
                r.entries.len()
            );
        }
        out.extend(r.entries);
        match r.next_token {
            Some(t) => token = t,
            None => return Ok(out),
        }
    }
    crate::ctx::fail!("ListVolumes: next_token never ended after 10000 pages")
}

/// Lists every volume id, following `next_token` with pages of `page`.
pub(crate) async fn list_all_volumes(c: &Ctx, page: i32) -> Result<Vec<String>, CaseError> {
    let entries = list_volume_entries(c, page).await?;
    Ok(entries
        .into_iter()
        .map(|e| e.volume.volume_id.into_string())
        .collect())
}

/// Lists every snapshot, following `next_token` with pages of `page`
/// (0 lets the plugin choose).
pub(crate) async fn list_snapshot_entries(
    c: &Ctx,
    page: i32,
) -> Result<Vec<csi_types::types::Snapshot>, CaseError> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let r: csi_types::controller::ListSnapshotsResponse = c.ok(
            "ListSnapshots",
            c.ctl()
                .raw_list_snapshots(proto::ListSnapshotsRequest {
                    max_entries: page,
                    starting_token: token.clone(),
                    ..Default::default()
                })
                .await,
        )?;
        if page > 0 && r.entries.len() > page as usize {
            crate::ctx::fail!(
                "ListSnapshots: returned {} entries for max_entries {page}",
                r.entries.len()
            );
        }
        out.extend(r.entries);
        match r.next_token {
            Some(t) => token = t,
            None => return Ok(out),
        }
    }
    crate::ctx::fail!("ListSnapshots: next_token never ended after 10000 pages")
}

/// Lists every snapshot id, following `next_token` with pages of `page`.
pub(crate) async fn list_all_snapshots(c: &Ctx, page: i32) -> Result<Vec<String>, CaseError> {
    let entries = list_snapshot_entries(c, page).await?;
    Ok(entries
        .into_iter()
        .map(|e| e.snapshot_id.into_string())
        .collect())
}

/// An id no driver has issued: used for the not-found cases when the case
/// cannot make a well-formed id of an object that is gone (see
/// [`Missing`]).
pub(crate) const UNKNOWN_ID: &str = "csi-testkit-no-such-object-7f3a";

/// An id the case sends for an object that does not exist.
///
/// The spec's answer is `NOT_FOUND` ("Volume does not exist"). An id the
/// plugin issued for an object since deleted has the plugin's own format,
/// so `NOT_FOUND` is the only right answer. A made-up id ([`UNKNOWN_ID`])
/// may not: a plugin whose ids have a format (a pool and a volume, say)
/// may refuse it as malformed, and the spec's general row "Invalid or
/// unsupported field in the request" gives `INVALID_ARGUMENT` for a field
/// with an invalid value; that passes with a warning.
#[derive(Clone, Debug)]
pub(crate) struct Missing {
    /// The id to send.
    pub(crate) id: String,
    made_up: bool,
}

impl Missing {
    /// A made-up id ([`UNKNOWN_ID`]).
    pub(crate) fn made_up() -> Missing {
        Missing {
            id: UNKNOWN_ID.to_string(),
            made_up: true,
        }
    }

    /// Whether the id is made up rather than one the plugin issued.
    pub(crate) fn is_made_up(&self) -> bool {
        self.made_up
    }
}

impl Ctx {
    /// A volume id that does not exist: that of a volume the case creates
    /// and deletes when the plugin can, else [`UNKNOWN_ID`].
    pub(crate) async fn gone_volume(&self) -> Result<Missing, CaseError> {
        use csi_types::capabilities::ControllerCapabilities as CC;
        if !self.found().controller.contains(CC::CREATE_DELETE_VOLUME) {
            return Ok(Missing::made_up());
        }
        let v = self.volume("gone").await?;
        let id = v.volume_id.into_string();
        crate::ctx::ok_raw(
            "DeleteVolume",
            self.ctl()
                .raw_delete_volume(proto::DeleteVolumeRequest {
                    volume_id: id.clone(),
                    ..Default::default()
                })
                .await,
        )?;
        self.forget(|c| matches!(c, Cleanup::Volume(x) if *x == id));
        Ok(Missing { id, made_up: false })
    }

    /// A snapshot id that does not exist: that of a snapshot the case cuts
    /// and deletes when the plugin can (and has the space), else
    /// [`UNKNOWN_ID`].
    pub(crate) async fn gone_snapshot(&self) -> Result<Missing, CaseError> {
        use csi_types::capabilities::ControllerCapabilities as CC;
        let cc = self.found().controller;
        if !cc.contains(CC::CREATE_DELETE_VOLUME) || !cc.contains(CC::CREATE_DELETE_SNAPSHOT) {
            return Ok(Missing::made_up());
        }
        let v = self.volume("gone-src").await?;
        let r = self
            .send_snapshot(proto::CreateSnapshotRequest {
                source_volume_id: v.volume_id.into_string(),
                name: self.name("gone"),
                ..Default::default()
            })
            .await;
        let Some(id) = r
            .ok()
            .and_then(|r| r.snapshot)
            .map(|s| s.snapshot_id)
            .filter(|id| !id.is_empty())
        else {
            // The snapshot cases judge the refusal; this one makes do.
            return Ok(Missing::made_up());
        };
        crate::ctx::ok_raw(
            "DeleteSnapshot",
            self.ctl()
                .raw_delete_snapshot(proto::DeleteSnapshotRequest {
                    snapshot_id: id.clone(),
                    ..Default::default()
                })
                .await,
        )?;
        self.forget(|c| matches!(c, Cleanup::Snapshot(x) if *x == id));
        Ok(Missing { id, made_up: false })
    }

    /// Passes when the call about the missing object answered `NOT_FOUND`;
    /// for a made-up id, `INVALID_ARGUMENT` passes with a warning.
    pub(crate) fn not_found<P>(
        &self,
        rpc: &str,
        r: Result<P, csi_types::CsiError>,
        id: &Missing,
    ) -> Result<(), CaseError> {
        use crate::ctx::Answer;
        use csi_types::Code;
        if id.made_up {
            self.answer(
                rpc,
                r,
                Answer::Code(Code::NotFound),
                &[Answer::Code(Code::InvalidArgument)],
                "the id is made up, and a plugin whose ids have a format may refuse it as malformed, but NOT_FOUND says the object does not exist",
            )
        } else {
            crate::ctx::code(rpc, r, Code::NotFound)
        }
    }
}
