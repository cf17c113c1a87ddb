//! Deliberately broken wrappers of the memdriver, each breaking one rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use csi_testkit::memdriver::{MemDriver, MemDriverConfig};
use csi_types::api::RawStream;
use csi_types::capabilities::ControllerCapabilities;
use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    controller::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, CreateSnapshotRequest,
        CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
        DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest,
        GetCapacityResponse, ListSnapshotsRequest, ListVolumesRequest, ListVolumesResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
    },
    ids::{VolumeId, VolumeName},
    node::{
        NodeGetInfoRequest, NodeGetInfoResponse, NodeGetVolumeStatsRequest,
        NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodePublishVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
    },
    proto,
    redact::Secrets,
    snapshot_metadata::{GetMetadataAllocatedRequest, GetMetadataDeltaRequest},
    types::{Snapshot, Topology, VolumeCondition, VolumeContentSource},
};

/// `CreateVolume` that makes a new volume on every call, retries included.
struct NotIdempotent(Arc<MemDriver>, AtomicU64);

#[async_trait]
impl Provisioner for NotIdempotent {
    async fn create_volume(
        &self,
        mut req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let n = self.1.fetch_add(1, Ordering::Relaxed);
        let name: String = format!("{n}#{}", req.name.as_str())
            .chars()
            .take(128)
            .collect();
        req.name = VolumeName::new(name)?;
        self.0.create_volume(req).await
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.0.delete_volume(req).await
    }
}

/// Not a bug: `CreateVolume` as a driver of shares whose size it does not know (the spec's
/// example for `capacity_bytes` 0 is an NFS share). It answers `capacity_bytes` 0, and a name
/// that exists answers OK whatever capacity range it is asked for again: for a volume of
/// unknown size, whether a range is compatible is the plugin's to judge.
struct UnknownCapacity(Arc<MemDriver>);

#[async_trait]
impl Provisioner for UnknownCapacity {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let mut resp = match self.0.create_volume(req.clone()).await {
            // Incompatible with the existing volume: compatible but for the capacity range?
            Err(e) if e.code() == Code::AlreadyExists => {
                let mut any_size = req;
                any_size.capacity_range = None;
                self.0.create_volume(any_size).await.map_err(|_| e)?
            }
            r => r?,
        };
        resp.volume.capacity_bytes = 0;
        Ok(resp)
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.0.delete_volume(req).await
    }
}

/// A share of unknown size cannot be resized either: every `ControllerExpandVolume` of an
/// existing volume answers `OUT_OF_RANGE` (a size the plugin does not allow).
#[async_trait]
impl ControllerExpander for UnknownCapacity {
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        if capacity_of(&self.0, &req.volume_id).await?.is_none() {
            return Err(CsiError::not_found(format!(
                "volume {} does not exist",
                req.volume_id
            )));
        }
        Err(CsiError::out_of_range(format!(
            "volume {} is a share of unknown size; it cannot be resized",
            req.volume_id
        )))
    }
}

/// A wire-level wrapper around a plugin with one fault.
struct Faulty(Plugin, Fault);

/// What a [`Faulty`] gets wrong.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `DeleteVolume` answers `INTERNAL` where the plugin answers `INVALID_ARGUMENT`.
    WrongCodeOnDelete,
    /// `Probe` panics (possible only in process, where no server catches it).
    PanicOnProbe,
    /// `Probe` never answers.
    HangsOnProbe,
    /// Not a bug: wherever the spec allows several answers, the other one
    /// (see `answers_the_spec_allows`).
    OtherAllowedAnswers,
    /// `ControllerGetVolume` reports a negative `capacity_bytes` (a MUST rule).
    NegativeCapacity,
    /// Not a bug: volumes are at most 1 MiB (`maximum_volume_size`):
    /// `CreateVolume` refuses any `required_bytes` above with `OUT_OF_RANGE`,
    /// checked before the name, and so does `ControllerExpandVolume`, before
    /// the volume is looked up.
    SmallMaximum,
    /// Not a bug: `GetCapacity` reports no `maximum_volume_size`, and
    /// `CreateVolume` beyond the pool answers `RESOURCE_EXHAUSTED`.
    NoMaximum,
    /// Not a bug: volumes are at least 2 MiB: `CreateVolume` and
    /// `ControllerExpandVolume` refuse a `capacity_range` whose
    /// `required_bytes` is below with `OUT_OF_RANGE`, checked before
    /// anything else.
    LargeMinimum,
    /// Not a bug: `CreateVolumeGroupSnapshot` of more than one volume
    /// answers `FAILED_PRECONDITION` ("Cannot snapshot multiple volumes
    /// together": each volume is in a pool of its own).
    SeparatePools,
    /// `CreateVolume` of an existing name with another range answers
    /// `OUT_OF_RANGE`, though the range is allowed for a new name.
    RangeForNameOnly,
    /// Not a bug: `GetCapacity` reports a `minimum_volume_size` above its
    /// `maximum_volume_size` (the spec bounds them only to be non-negative).
    MinimumAboveMaximum,
    /// Not a bug: `GetCapacity` without `accessible_topology` reports half
    /// the available capacity (that of the pool it picks when no topology
    /// is named), less than for the node's topology.
    DefaultPoolCapacity,
    /// Not a bug: `CreateVolume` from a snapshot or a volume leaves out
    /// the volume's `content_source` (OPTIONAL in the spec).
    NoContentSource,
    /// `ListSnapshots` by the `source_volume_id` of a volume that does not
    /// exist answers `NOT_FOUND` (the spec's `ListSnapshots` has no such
    /// code: no snapshot matches, which is an empty list).
    UnknownSourceNotFound,
    /// `CreateVolumeGroupSnapshot` answers members with an empty
    /// `group_snapshot_id` (the spec: inside a `VolumeGroupSnapshot` it
    /// MUST be the group's id).
    UngroupedMembers,
    /// Not a bug: ids have a format (`vol-…`, `snap-…`, `group-…`), and an
    /// id without it is refused as malformed with `INVALID_ARGUMENT` (the
    /// spec's "invalid value" row) before any lookup.
    FormattedIds,
    /// `ControllerGetVolume` of a volume that does not exist answers
    /// `INVALID_ARGUMENT`, even for a well-formed id (a deleted volume's).
    InvalidForUnknown,
    /// `ControllerGetVolume` leaves out `volume_condition`, though the
    /// controller advertises `VOLUME_CONDITION` (on the wire: the SDK's
    /// `Plugin` refuses to send such a response).
    NoVolumeCondition,
    /// Not a bug: `ControllerModifyVolume` also grows the volume by 1 MiB
    /// (as a mutable parameter that picks a tier of another size may): the
    /// spec ties the capacity to no mutable parameter.
    ModifyResizes,
    /// `ControllerPublishVolume` answers a new `publish_context` on every
    /// call, retries included (the spec: its contents "SHALL NOT be
    /// mutable").
    FreshPublishContext,
}

/// Counts the calls answered under [`Fault::FreshPublishContext`].
static PUBLISH_CALLS: AtomicU64 = AtomicU64::new(0);

impl Faulty {
    fn other(&self) -> bool {
        self.1 == Fault::OtherAllowedAnswers
    }

    /// `INVALID_ARGUMENT` for a non-empty `id` in `field` without the
    /// format `prefix-…`, under [`Fault::FormattedIds`].
    fn formatted(&self, field: &str, prefix: &str, id: &str) -> Result<(), CsiError> {
        if self.1 == Fault::FormattedIds && !id.is_empty() && !id.starts_with(&format!("{prefix}-"))
        {
            return Err(CsiError::invalid(
                field,
                format!("malformed id {id:?}: ids are {prefix}-<number>"),
            ));
        }
        Ok(())
    }

    /// `NOT_FOUND` for a named volume the plugin does not know, checked
    /// before anything else (the other precedence).
    async fn unknown_volume_first(&self, volume_id: &str) -> Result<(), CsiError> {
        if self.other() && !volume_id.is_empty() {
            let r = RawCsi::raw_controller_get_volume(
                &self.0,
                proto::ControllerGetVolumeRequest {
                    volume_id: volume_id.to_string(),
                },
            )
            .await;
            if let Err(e) = r
                && e.code() == Code::NotFound
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// `NOT_FOUND` for a node id the memdriver does not know, checked before
    /// anything else (so a request that also misses its volume id gets it).
    fn unknown_node_first(&self, node_id: &str) -> Result<(), CsiError> {
        let known = MemDriverConfig::default();
        if self.other()
            && !node_id.is_empty()
            && node_id != known.node_id
            && !known.other_nodes.iter().any(|n| n == node_id)
        {
            return Err(CsiError::not_found(format!(
                "node {node_id} does not exist"
            )));
        }
        Ok(())
    }

    /// `INVALID_ARGUMENT` for a path that is not absolute, before the lookup.
    fn path_first(&self, field: &str, path: &str) -> Result<(), CsiError> {
        if self.other() && !path.starts_with('/') {
            return Err(CsiError::invalid(field, "must be an absolute path"));
        }
        Ok(())
    }

    /// `INVALID_ARGUMENT` for no snapshot ids, before the lookup.
    fn ids_first(&self, ids: &[String]) -> Result<(), CsiError> {
        if self.other() && ids.is_empty() {
            return Err(CsiError::missing("snapshot_ids"));
        }
        Ok(())
    }

    /// An empty published node id after the real ones, and no condition message.
    fn loosen(&self, ids: &mut Vec<String>, condition: &mut Option<proto::VolumeCondition>) {
        if self.other() {
            ids.push(String::new());
            if let Some(c) = condition {
                c.message.clear();
            }
        }
    }
}

/// Emits `impl RawCsi for Faulty` with the given methods written out and
/// every listed RPC forwarded to the plugin. (The impl is produced whole by
/// the macro so that `async_trait` sees the expanded methods.)
macro_rules! raw_impl {
    ({ $($own:tt)* } $($m:ident($req:ident) -> $resp:ident;)*) => {
        #[async_trait]
        impl RawCsi for Faulty {
            $($own)*
            $(
                async fn $m(&self, req: proto::$req) -> Result<proto::$resp, CsiError> {
                    RawCsi::$m(&self.0, req).await
                }
            )*
        }
    };
}

raw_impl! {
    {
    async fn raw_delete_volume(&self, req: proto::DeleteVolumeRequest) -> Result<proto::DeleteVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        let r = RawCsi::raw_delete_volume(&self.0, req).await;
        match (self.1, r) {
            (Fault::WrongCodeOnDelete, Err(e)) if e.code() == Code::InvalidArgument => {
                Err(CsiError::internal(e.to_string()))
            }
            (_, r) => r,
        }
    }

    async fn raw_probe(&self, req: proto::ProbeRequest) -> Result<proto::ProbeResponse, CsiError> {
        if self.1 == Fault::PanicOnProbe {
            panic!("probe exploded");
        }
        if self.1 == Fault::HangsOnProbe {
            std::future::pending::<()>().await;
        }
        RawCsi::raw_probe(&self.0, req).await
    }

    async fn raw_create_volume(&self, req: proto::CreateVolumeRequest) -> Result<proto::CreateVolumeResponse, CsiError> {
        match req.volume_content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
            Some(proto::volume_content_source::Type::Snapshot(s)) => {
                self.formatted("volume_content_source.snapshot.snapshot_id", "snap", &s.snapshot_id)?
            }
            Some(proto::volume_content_source::Type::Volume(v)) => {
                self.formatted("volume_content_source.volume.volume_id", "vol", &v.volume_id)?
            }
            None => {}
        }
        let required = req.capacity_range.as_ref().map_or(0, |r| r.required_bytes);
        if self.1 == Fault::SmallMaximum && required > 1 << 20 {
            return Err(CsiError::out_of_range("volumes are at most 1 MiB"));
        }
        if self.1 == Fault::LargeMinimum && req.capacity_range.is_some() && required < 2 << 20 {
            return Err(CsiError::out_of_range("volumes are at least 2 MiB"));
        }
        let requisite = req.accessibility_requirements.as_ref().is_some_and(|a| !a.requisite.is_empty());
        match RawCsi::raw_create_volume(&self.0, req).await {
            // Segment values this plugin has never heard of are judged
            // invalid rather than unservable.
            Err(e) if self.other() && requisite && e.code() == Code::ResourceExhausted => Err(CsiError::invalid(
                "accessibility_requirements.requisite",
                format!("names no topology this plugin knows (instead of: {e})"),
            )),
            Err(e) if self.1 == Fault::NoMaximum && e.code() == Code::OutOfRange => {
                Err(CsiError::resource_exhausted(format!("not enough space (instead of: {e})")))
            }
            Err(e) if self.1 == Fault::RangeForNameOnly && e.code() == Code::AlreadyExists => {
                Err(CsiError::out_of_range(format!("instead of: {e}")))
            }
            Ok(mut r) if self.1 == Fault::NoContentSource => {
                if let Some(v) = &mut r.volume {
                    v.content_source = None;
                }
                Ok(r)
            }
            r => r,
        }
    }

    async fn raw_controller_expand_volume(&self, req: proto::ControllerExpandVolumeRequest) -> Result<proto::ControllerExpandVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        let required = req.capacity_range.as_ref().map_or(0, |r| r.required_bytes);
        if self.1 == Fault::SmallMaximum && required > 1 << 20 {
            return Err(CsiError::out_of_range("volumes are at most 1 MiB"));
        }
        if self.1 == Fault::LargeMinimum && req.capacity_range.is_some() && required < 2 << 20 {
            return Err(CsiError::out_of_range("volumes are at least 2 MiB"));
        }
        RawCsi::raw_controller_expand_volume(&self.0, req).await
    }

    async fn raw_get_capacity(&self, req: proto::GetCapacityRequest) -> Result<proto::GetCapacityResponse, CsiError> {
        // Segment values this plugin has never heard of are judged invalid,
        // as in CreateVolume.
        if self.other()
            && let Some(t) = &req.accessible_topology
        {
            let known: proto::Topology = MemDriverConfig::default().topology.map(Into::into).unwrap_or_default();
            if t.segments.iter().any(|(k, v)| known.segments.get(k).is_some_and(|own| own != v)) {
                return Err(CsiError::invalid("accessible_topology", "names no topology this plugin knows"));
            }
        }
        let no_topology = req.accessible_topology.is_none();
        let mut r = RawCsi::raw_get_capacity(&self.0, req).await?;
        match self.1 {
            Fault::NoMaximum => r.maximum_volume_size = None,
            Fault::SmallMaximum => r.maximum_volume_size = Some(1 << 20),
            Fault::DefaultPoolCapacity if no_topology => r.available_capacity /= 2,
            Fault::MinimumAboveMaximum => {
                r.minimum_volume_size = r.maximum_volume_size.map(|m| m + 1);
            }
            _ => {}
        }
        Ok(r)
    }

    async fn raw_controller_unpublish_volume(&self, req: proto::ControllerUnpublishVolumeRequest) -> Result<proto::ControllerUnpublishVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        self.unknown_volume_first(&req.volume_id).await?;
        self.unknown_node_first(&req.node_id)?;
        RawCsi::raw_controller_unpublish_volume(&self.0, req).await
    }

    async fn raw_controller_publish_volume(&self, req: proto::ControllerPublishVolumeRequest) -> Result<proto::ControllerPublishVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        self.unknown_node_first(&req.node_id)?;
        let mut r = RawCsi::raw_controller_publish_volume(&self.0, req).await?;
        if self.1 == Fault::FreshPublishContext {
            let n = PUBLISH_CALLS.fetch_add(1, Ordering::Relaxed);
            r.publish_context.insert("call".into(), n.to_string());
        }
        Ok(r)
    }

    async fn raw_node_stage_volume(&self, req: proto::NodeStageVolumeRequest) -> Result<proto::NodeStageVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        self.unknown_volume_first(&req.volume_id).await?;
        RawCsi::raw_node_stage_volume(&self.0, req).await
    }

    async fn raw_node_unstage_volume(&self, req: proto::NodeUnstageVolumeRequest) -> Result<proto::NodeUnstageVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        self.unknown_volume_first(&req.volume_id).await?;
        RawCsi::raw_node_unstage_volume(&self.0, req).await
    }

    async fn raw_node_publish_volume(&self, req: proto::NodePublishVolumeRequest) -> Result<proto::NodePublishVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        self.unknown_volume_first(&req.volume_id).await?;
        RawCsi::raw_node_publish_volume(&self.0, req).await
    }

    async fn raw_node_unpublish_volume(&self, req: proto::NodeUnpublishVolumeRequest) -> Result<proto::NodeUnpublishVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        self.unknown_volume_first(&req.volume_id).await?;
        RawCsi::raw_node_unpublish_volume(&self.0, req).await
    }

    async fn raw_node_get_volume_stats(&self, req: proto::NodeGetVolumeStatsRequest) -> Result<proto::NodeGetVolumeStatsResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        if !req.volume_id.is_empty() {
            self.path_first("volume_path", &req.volume_path)?;
        }
        let mut r = RawCsi::raw_node_get_volume_stats(&self.0, req).await?;
        self.loosen(&mut Vec::new(), &mut r.volume_condition);
        Ok(r)
    }

    async fn raw_node_expand_volume(&self, req: proto::NodeExpandVolumeRequest) -> Result<proto::NodeExpandVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        if !req.volume_id.is_empty() {
            self.path_first("volume_path", &req.volume_path)?;
        }
        RawCsi::raw_node_expand_volume(&self.0, req).await
    }

    async fn raw_delete_volume_group_snapshot(&self, req: proto::DeleteVolumeGroupSnapshotRequest) -> Result<proto::DeleteVolumeGroupSnapshotResponse, CsiError> {
        self.formatted("group_snapshot_id", "group", &req.group_snapshot_id)?;
        if !req.group_snapshot_id.is_empty() {
            self.ids_first(&req.snapshot_ids)?;
        }
        RawCsi::raw_delete_volume_group_snapshot(&self.0, req).await
    }

    async fn raw_create_volume_group_snapshot(&self, req: proto::CreateVolumeGroupSnapshotRequest) -> Result<proto::CreateVolumeGroupSnapshotResponse, CsiError> {
        if self.1 == Fault::SeparatePools && req.source_volume_ids.len() > 1 {
            return Err(CsiError::failed_precondition(format!(
                "volumes {:?} are in separate pools and cannot be snapshotted together",
                req.source_volume_ids
            )));
        }
        let mut r = RawCsi::raw_create_volume_group_snapshot(&self.0, req).await?;
        if let (Fault::UngroupedMembers, Some(g)) = (self.1, &mut r.group_snapshot) {
            for s in &mut g.snapshots {
                s.group_snapshot_id.clear();
            }
        }
        Ok(r)
    }

    async fn raw_get_volume_group_snapshot(&self, req: proto::GetVolumeGroupSnapshotRequest) -> Result<proto::GetVolumeGroupSnapshotResponse, CsiError> {
        self.formatted("group_snapshot_id", "group", &req.group_snapshot_id)?;
        if !req.group_snapshot_id.is_empty() {
            self.ids_first(&req.snapshot_ids)?;
        }
        RawCsi::raw_get_volume_group_snapshot(&self.0, req).await
    }

    async fn raw_list_volumes(&self, req: proto::ListVolumesRequest) -> Result<proto::ListVolumesResponse, CsiError> {
        let mut r = RawCsi::raw_list_volumes(&self.0, req).await?;
        for e in &mut r.entries {
            let s = e.status.get_or_insert_default();
            self.loosen(&mut s.published_node_ids, &mut s.volume_condition);
        }
        Ok(r)
    }

    async fn raw_controller_get_volume(&self, req: proto::ControllerGetVolumeRequest) -> Result<proto::ControllerGetVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        let mut r = match RawCsi::raw_controller_get_volume(&self.0, req).await {
            Err(e) if self.1 == Fault::InvalidForUnknown && e.code() == Code::NotFound => {
                return Err(CsiError::invalid("volume_id", format!("unknown volume ({e})")));
            }
            r => r?,
        };
        if let Some(s) = &mut r.status {
            self.loosen(&mut s.published_node_ids, &mut s.volume_condition);
            if self.1 == Fault::NoVolumeCondition {
                s.volume_condition = None;
            }
        }
        if let (Fault::NegativeCapacity, Some(v)) = (self.1, &mut r.volume) {
            v.capacity_bytes = -1;
        }
        Ok(r)
    }

    async fn raw_validate_volume_capabilities(&self, req: proto::ValidateVolumeCapabilitiesRequest) -> Result<proto::ValidateVolumeCapabilitiesResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        RawCsi::raw_validate_volume_capabilities(&self.0, req).await
    }

    async fn raw_delete_snapshot(&self, req: proto::DeleteSnapshotRequest) -> Result<proto::DeleteSnapshotResponse, CsiError> {
        self.formatted("snapshot_id", "snap", &req.snapshot_id)?;
        RawCsi::raw_delete_snapshot(&self.0, req).await
    }

    async fn raw_list_snapshots(&self, req: proto::ListSnapshotsRequest) -> Result<proto::ListSnapshotsResponse, CsiError> {
        self.formatted("snapshot_id", "snap", &req.snapshot_id)?;
        if self.1 == Fault::UnknownSourceNotFound && !req.source_volume_id.is_empty() {
            let get = proto::ControllerGetVolumeRequest { volume_id: req.source_volume_id.clone() };
            if let Err(e) = RawCsi::raw_controller_get_volume(&self.0, get).await
                && e.code() == Code::NotFound
            {
                return Err(e);
            }
        }
        RawCsi::raw_list_snapshots(&self.0, req).await
    }

    async fn raw_get_snapshot(&self, req: proto::GetSnapshotRequest) -> Result<proto::GetSnapshotResponse, CsiError> {
        self.formatted("snapshot_id", "snap", &req.snapshot_id)?;
        RawCsi::raw_get_snapshot(&self.0, req).await
    }

    async fn raw_controller_modify_volume(&self, req: proto::ControllerModifyVolumeRequest) -> Result<proto::ControllerModifyVolumeResponse, CsiError> {
        self.formatted("volume_id", "vol", &req.volume_id)?;
        let volume_id = req.volume_id.clone();
        let r = RawCsi::raw_controller_modify_volume(&self.0, req).await?;
        if self.1 == Fault::ModifyResizes {
            let get = proto::ControllerGetVolumeRequest { volume_id: volume_id.clone() };
            let cap = RawCsi::raw_controller_get_volume(&self.0, get)
                .await?
                .volume
                .map_or(0, |v| v.capacity_bytes);
            let grow = proto::ControllerExpandVolumeRequest {
                volume_id,
                capacity_range: Some(proto::CapacityRange { required_bytes: cap + (1 << 20), limit_bytes: 0 }),
                ..Default::default()
            };
            RawCsi::raw_controller_expand_volume(&self.0, grow).await?;
        }
        Ok(r)
    }

    async fn raw_get_metadata_allocated(&self, req: proto::GetMetadataAllocatedRequest) -> Result<RawStream<proto::GetMetadataAllocatedResponse>, CsiError> {
        self.formatted("snapshot_id", "snap", &req.snapshot_id)?;
        RawCsi::raw_get_metadata_allocated(&self.0, req).await
    }

    async fn raw_get_metadata_delta(&self, req: proto::GetMetadataDeltaRequest) -> Result<RawStream<proto::GetMetadataDeltaResponse>, CsiError> {
        self.formatted("base_snapshot_id", "snap", &req.base_snapshot_id)?;
        self.formatted("target_snapshot_id", "snap", &req.target_snapshot_id)?;
        let r = RawCsi::raw_get_metadata_delta(&self.0, req).await;
        match r {
            // Storage without changed block tracking: every delta, of
            // snapshots that exist or not, answers FAILED_PRECONDITION (the
            // subsystem's state, checked before any lookup).
            Err(e) if self.other() => Err(CsiError::failed_precondition(format!(
                "changed block tracking is not enabled (instead of: {e})"
            ))),
            Ok(_) if self.other() => Err(CsiError::failed_precondition(
                "changed block tracking is not enabled",
            )),
            r => r,
        }
    }
    }

        raw_get_plugin_info(GetPluginInfoRequest) -> GetPluginInfoResponse;
        raw_get_plugin_capabilities(GetPluginCapabilitiesRequest) -> GetPluginCapabilitiesResponse;
        raw_controller_get_capabilities(ControllerGetCapabilitiesRequest) -> ControllerGetCapabilitiesResponse;
        raw_create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse;
        raw_group_controller_get_capabilities(GroupControllerGetCapabilitiesRequest) -> GroupControllerGetCapabilitiesResponse;
        raw_node_get_capabilities(NodeGetCapabilitiesRequest) -> NodeGetCapabilitiesResponse;
        raw_node_get_info(NodeGetInfoRequest) -> NodeGetInfoResponse;
}

/// Not a bug: `ListVolumes` whose `next_token` is an offset into the volumes
/// sorted by id, so that a volume deleted on an earlier page shifts a later
/// one out of sight (the spec: a CO paging while volumes change "MAY ...
/// not witness existing volumes"). With `expire`, a token answers `ABORTED`
/// ("Invalid `starting_token`") once the volumes have changed since it was
/// issued.
struct OffsetPages {
    inner: Arc<MemDriver>,
    expire: bool,
}

impl OffsetPages {
    /// A fingerprint of the set of volumes the entries list.
    fn fingerprint(entries: &[csi_types::controller::ListVolumesEntry]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for e in entries {
            e.volume.volume_id.as_str().hash(&mut h);
        }
        h.finish()
    }
}

#[async_trait]
impl VolumeLister for OffsetPages {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .inner
                .list_volumes(ListVolumesRequest {
                    max_entries: None,
                    starting_token: token,
                })
                .await?;
            all.extend(page.entries);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let now = Self::fingerprint(&all);
        let start = match &req.starting_token {
            None => 0,
            Some(t) => {
                let bad = || CsiError::aborted(format!("starting_token {t:?} is not valid"));
                let (offset, issued) = t.split_once('/').ok_or_else(bad)?;
                let offset: usize = offset.parse().map_err(|_| bad())?;
                let issued: u64 = issued.parse().map_err(|_| bad())?;
                if self.expire && issued != now {
                    return Err(CsiError::aborted(format!(
                        "starting_token {t:?} was issued before the volumes changed; start again"
                    )));
                }
                offset.min(all.len())
            }
        };
        let end = match req.max_entries {
            Some(n) if n > 0 => (start + n as usize).min(all.len()),
            _ => all.len(),
        };
        let next_token = (end < all.len()).then(|| format!("{end}/{now}"));
        Ok(ListVolumesResponse {
            entries: all.drain(start..end).collect(),
            next_token,
        })
    }
}

/// `ListVolumes` that drops the first entry of every page after the first.
struct LosesPages(Arc<MemDriver>);

#[async_trait]
impl VolumeLister for LosesPages {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let later_page = req.starting_token.is_some();
        let mut resp = self.0.list_volumes(req).await?;
        if later_page && !resp.entries.is_empty() {
            resp.entries.remove(0);
        }
        Ok(resp)
    }
}

/// `ValidateVolumeCapabilities` that confirms nothing and gives no message.
struct NeverConfirms(Arc<MemDriver>);

#[async_trait]
impl Controller for NeverConfirms {
    async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        self.0.validate_volume_capabilities(req).await?; // NOT_FOUND as the memdriver answers
        Ok(ValidateVolumeCapabilitiesResponse::default())
    }
    fn feature_capabilities(&self) -> ControllerCapabilities {
        Controller::feature_capabilities(&*self.0)
    }
}

/// `ListVolumes` that always fails: the state machine fails before its first call.
struct CannotList;

#[async_trait]
impl VolumeLister for CannotList {
    async fn list_volumes(&self, _: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        Err(CsiError::internal("the volume table is unreadable"))
    }
}

/// `ListVolumes` that reports every topology key under another prefix than
/// the one `NodeGetInfo` and `CreateVolume` use.
struct ForeignPrefix(Arc<MemDriver>);

#[async_trait]
impl VolumeLister for ForeignPrefix {
    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let mut resp = self.0.list_volumes(req).await?;
        for e in &mut resp.entries {
            for t in &mut e.volume.accessible_topology {
                *t = Topology::new(t.segments().iter().map(|(k, v)| {
                    (
                        format!("other.example.com/{}", k.name()),
                        v.as_str().to_string(),
                    )
                }))?;
            }
        }
        Ok(resp)
    }
}

/// `NodePublishVolume` that ignores `readonly`.
struct IgnoresReadonly(Arc<MemDriver>);

#[async_trait]
impl Node for IgnoresReadonly {
    async fn node_publish_volume(
        &self,
        mut req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        req.readonly = false;
        self.0.node_publish_volume(req).await
    }
    async fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        self.0.node_unpublish_volume(req).await
    }
    async fn node_get_info(
        &self,
        req: NodeGetInfoRequest,
    ) -> Result<NodeGetInfoResponse, CsiError> {
        self.0.node_get_info(req).await
    }
}

/// Not a bug: `NodeGetInfo` without `accessible_topology`, though the
/// plugin advertises `VOLUME_ACCESSIBILITY_CONSTRAINTS`: the field is
/// OPTIONAL, and without it the CO may assume the node is subject to no
/// topological constraint.
struct NodeWithoutTopology(Arc<MemDriver>);

#[async_trait]
impl Node for NodeWithoutTopology {
    async fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        self.0.node_publish_volume(req).await
    }
    async fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        self.0.node_unpublish_volume(req).await
    }
    async fn node_get_info(
        &self,
        req: NodeGetInfoRequest,
    ) -> Result<NodeGetInfoResponse, CsiError> {
        let mut r = self.0.node_get_info(req).await?;
        r.accessible_topology = None;
        Ok(r)
    }
}

/// The snapshots of volume `id`, group members included.
async fn snapshots_of(driver: &MemDriver, id: &VolumeId) -> Result<Vec<Snapshot>, CsiError> {
    let r = driver
        .list_snapshots(ListSnapshotsRequest {
            max_entries: None,
            starting_token: None,
            source_volume_id: Some(id.clone()),
            snapshot_id: None,
            secrets: Secrets::default(),
        })
        .await?;
    Ok(r.entries)
}

/// `DeleteVolume` that also deletes the volume's snapshots, which the spec
/// makes independent of their source. No named case looks for this; the
/// state machine finds it and shrinks it to three calls.
struct SnapshotsDieWithVolume(Arc<MemDriver>);

#[async_trait]
impl Provisioner for SnapshotsDieWithVolume {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        self.0.create_volume(req).await
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let snaps = snapshots_of(&self.0, &req.volume_id).await?;
        // Members of a group snapshot go only with their group.
        for s in snaps.into_iter().filter(|s| s.group_snapshot_id.is_none()) {
            self.0
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: s.snapshot_id,
                    secrets: Secrets::default(),
                })
                .await?;
        }
        self.0.delete_volume(req).await
    }
}

/// Not broken: a strict driver whose snapshots and clones depend on their
/// source. `DeleteVolume` of a volume with snapshots or clones and
/// `DeleteSnapshot` of a snapshot a volume was restored from answer
/// `FAILED_PRECONDITION`, as the spec allows ("Volume in use", "Snapshot in
/// use").
struct KeepsDependents(Arc<MemDriver>);

impl KeepsDependents {
    /// Whether a live volume was made from `source`.
    async fn made_from(&self, source: &VolumeContentSource) -> Result<bool, CsiError> {
        let vols = self
            .0
            .list_volumes(ListVolumesRequest {
                max_entries: None,
                starting_token: None,
            })
            .await?;
        Ok(vols
            .entries
            .iter()
            .any(|e| e.volume.content_source.as_ref() == Some(source)))
    }
}

#[async_trait]
impl Provisioner for KeepsDependents {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        self.0.create_volume(req).await
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let snaps = snapshots_of(&self.0, &req.volume_id).await?;
        if !snaps.is_empty() {
            return Err(CsiError::failed_precondition(format!(
                "volume {} has {} snapshot(s)",
                req.volume_id,
                snaps.len()
            )));
        }
        if self
            .made_from(&VolumeContentSource::Volume(req.volume_id.clone()))
            .await?
        {
            return Err(CsiError::failed_precondition(format!(
                "volume {} has clones",
                req.volume_id
            )));
        }
        self.0.delete_volume(req).await
    }
}

#[async_trait]
impl Snapshotter for KeepsDependents {
    async fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, CsiError> {
        self.0.create_snapshot(req).await
    }
    async fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, CsiError> {
        if self
            .made_from(&VolumeContentSource::Snapshot(req.snapshot_id.clone()))
            .await?
        {
            return Err(CsiError::failed_precondition(format!(
                "snapshot {} has restored volumes",
                req.snapshot_id
            )));
        }
        self.0.delete_snapshot(req).await
    }
}

/// `CreateSnapshot` that refuses every snapshot with the given code. With
/// `RESOURCE_EXHAUSTED` it is not a bug: a pool whose snapshot reserve is
/// full ("Not enough space to create snapshot"). With `FAILED_PRECONDITION`
/// it is one: the spec gives `CreateSnapshot` of an existing, idle volume
/// no such answer.
struct RefusesSnapshots(Arc<MemDriver>, Code);

#[async_trait]
impl Snapshotter for RefusesSnapshots {
    async fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, CsiError> {
        let why = format!(
            "no snapshot of {} can be cut: the snapshot reserve is full",
            req.source_volume_id
        );
        Err(match self.1 {
            Code::ResourceExhausted => CsiError::resource_exhausted(why),
            _ => CsiError::failed_precondition(why),
        })
    }
    async fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, CsiError> {
        self.0.delete_snapshot(req).await
    }
}

/// The capacity of volume `id` as the memdriver lists it, `None` when it
/// does not know the volume.
async fn capacity_of(driver: &MemDriver, id: &VolumeId) -> Result<Option<u64>, CsiError> {
    let vols = driver
        .list_volumes(ListVolumesRequest {
            max_entries: None,
            starting_token: None,
        })
        .await?;
    Ok(vols
        .entries
        .iter()
        .find(|e| e.volume.volume_id == *id)
        .map(|e| e.volume.capacity_bytes))
}

/// Not broken: `ControllerExpandVolume` below the current size answers
/// `OUT_OF_RANGE` ("Unsupported capacity") instead of a no-op.
struct RefusesShrink(Arc<MemDriver>);

#[async_trait]
impl ControllerExpander for RefusesShrink {
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        let current = capacity_of(&self.0, &req.volume_id).await?;
        if let (Some(current), Some(required)) = (current, req.capacity_range.required_bytes)
            && required < current
        {
            return Err(CsiError::out_of_range(format!(
                "volume {} has {current} bytes; it cannot shrink to {required}",
                req.volume_id
            )));
        }
        self.0.controller_expand_volume(req).await
    }
}

/// A driver that advertises `EXPAND_VOLUME` but cannot grow its volumes
/// (as a composer cannot grow a volume that is one whole drive): every
/// `ControllerExpandVolume` of a known volume to another size answers
/// `OUT_OF_RANGE`, which the spec allows ("capacity range not allowed by the
/// Plugin").
struct CannotGrow(Arc<MemDriver>);

#[async_trait]
impl ControllerExpander for CannotGrow {
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        let current = capacity_of(&self.0, &req.volume_id).await?;
        if let (Some(current), Some(required)) = (current, req.capacity_range.required_bytes)
            && required != current
        {
            return Err(CsiError::out_of_range(format!(
                "volume {} is a whole drive of {current} bytes; it cannot become {required}",
                req.volume_id
            )));
        }
        self.0.controller_expand_volume(req).await
    }
}

/// A driver that refuses each expansion with `OUT_OF_RANGE` the first time
/// it is asked for that size, and grants it when asked again: a refusal of a
/// size it does allow, which the concurrency case must catch.
struct RefusesOnce(
    Arc<MemDriver>,
    std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
);

#[async_trait]
impl ControllerExpander for RefusesOnce {
    async fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        let key = (
            req.volume_id.to_string(),
            req.capacity_range.required_bytes.unwrap_or(0),
        );
        if self.1.lock().unwrap().insert(key.clone()) {
            return Err(CsiError::out_of_range(format!(
                "volume {} cannot become {} bytes",
                key.0, key.1
            )));
        }
        self.0.controller_expand_volume(req).await
    }
}

/// `CreateVolume` with a check-then-create race: it looks the name up,
/// waits, then creates under a name of its own. Serial retries find the
/// volume; concurrent calls with one name each make a volume.
struct Racy {
    inner: Arc<MemDriver>,
    names: std::sync::Mutex<std::collections::HashMap<String, String>>,
    next: AtomicU64,
}

#[async_trait]
impl Provisioner for Racy {
    async fn create_volume(
        &self,
        mut req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let name = req.name.as_str().to_string();
        let known = self.names.lock().unwrap().get(&name).cloned();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let internal = known.unwrap_or_else(|| {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            format!("{n}#{name}").chars().take(128).collect()
        });
        self.names.lock().unwrap().insert(name, internal.clone());
        req.name = VolumeName::new(internal)?;
        self.inner.create_volume(req).await
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.inner.delete_volume(req).await
    }
}

/// Not a bug: `CreateVolume` reserves the volume's space while it creates
/// it, and a call for a name whose creation is pending answers
/// `RESOURCE_EXHAUSTED` (the pool is full with the reservation) instead of
/// `ABORTED`. With `full`, the pool has no space at all: every call answers
/// `RESOURCE_EXHAUSTED`.
struct Reserving {
    inner: Arc<MemDriver>,
    pending: std::sync::Mutex<std::collections::HashSet<String>>,
    full: bool,
}

#[async_trait]
impl Provisioner for Reserving {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let name = req.name.as_str().to_string();
        if self.full || !self.pending.lock().unwrap().insert(name.clone()) {
            return Err(CsiError::resource_exhausted(format!(
                "no space left for volume {name}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r = self.inner.create_volume(req).await;
        self.pending.lock().unwrap().remove(&name);
        r
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.inner.delete_volume(req).await
    }
}

/// `NodeGetVolumeStats` that reports every volume abnormal.
struct AbnormalOnNode(Arc<MemDriver>);

#[async_trait]
impl NodeVolumeStats for AbnormalOnNode {
    async fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError> {
        let mut resp = self.0.node_get_volume_stats(req).await?;
        resp.volume_condition = Some(VolumeCondition::abnormal("the disk is on fire"));
        Ok(resp)
    }
}

/// Not a bug: a thin share whose `NodeGetVolumeStats` reports as available
/// the free space of the pool behind it, more than the share's total (the
/// spec does not relate `available` to `total`).
struct OvercommittedShare(Arc<MemDriver>);

#[async_trait]
impl NodeVolumeStats for OvercommittedShare {
    async fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError> {
        let mut resp = self.0.node_get_volume_stats(req).await?;
        for u in &mut resp.usage {
            u.available = u.total * 4 + 1;
        }
        Ok(resp)
    }
}

/// The memdriver's `CreateVolume` with the request edited before the call
/// and the response after it; `DeleteVolume` is the memdriver's.
struct EditCreate {
    inner: Arc<MemDriver>,
    request: fn(&mut CreateVolumeRequest),
    response: fn(&CreateVolumeRequest, &mut CreateVolumeResponse) -> Result<(), CsiError>,
}

impl EditCreate {
    fn new(
        inner: &Arc<MemDriver>,
        request: fn(&mut CreateVolumeRequest),
        response: fn(&CreateVolumeRequest, &mut CreateVolumeResponse) -> Result<(), CsiError>,
    ) -> Arc<Self> {
        Arc::new(EditCreate {
            inner: inner.clone(),
            request,
            response,
        })
    }

    /// `CreateVolume` that reports every volume in a zone other than the
    /// node's, whatever the requisite.
    fn wrong_topology(inner: &Arc<MemDriver>) -> Arc<Self> {
        Self::new(
            inner,
            |_| {},
            |_, resp| {
                resp.volume.accessible_topology = vec![Topology::new([(
                    csi_testkit::memdriver::TOPOLOGY_KEY,
                    "zone-elsewhere",
                )])?];
                Ok(())
            },
        )
    }

    /// `CreateVolume` that ignores `accessibility_requirements`, so it
    /// provisions even where no requisite topology can be served.
    fn ignores_requisite(inner: &Arc<MemDriver>) -> Arc<Self> {
        Self::new(
            inner,
            |req| req.accessibility_requirements = None,
            |_, _| Ok(()),
        )
    }

    /// `CreateVolume` that reports every volume in the first preferred
    /// topology, without checking that it can provision there.
    fn first_preferred(inner: &Arc<MemDriver>) -> Arc<Self> {
        Self::new(
            inner,
            |_| {},
            |req, resp| {
                let first = req
                    .accessibility_requirements
                    .as_ref()
                    .and_then(|r| r.preferred.first());
                if let Some(t) = first {
                    resp.volume.accessible_topology = vec![t.clone()];
                }
                Ok(())
            },
        )
    }
}

#[async_trait]
impl Provisioner for EditCreate {
    async fn create_volume(
        &self,
        mut req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        (self.request)(&mut req);
        let mut resp = self.inner.create_volume(req.clone()).await?;
        (self.response)(&req, &mut resp)?;
        Ok(resp)
    }
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.inner.delete_volume(req).await
    }
}

/// `GetCapacity` that ignores `accessible_topology`: it reports the whole
/// pool in every topology, including those it cannot provision in.
struct CapacityEverywhere(Arc<MemDriver>);

#[async_trait]
impl CapacityReporter for CapacityEverywhere {
    async fn get_capacity(
        &self,
        mut req: GetCapacityRequest,
    ) -> Result<GetCapacityResponse, CsiError> {
        req.accessible_topology = None;
        self.0.get_capacity(req).await
    }
}

/// Not a bug: the pool is shared with another tenant, who frees 1 GiB of
/// its 32 GiB between any two `GetCapacity` calls: the available capacity
/// rises while the suite's volumes come and go.
struct SpaceFreedElsewhere(Arc<MemDriver>, AtomicU64);

#[async_trait]
impl CapacityReporter for SpaceFreedElsewhere {
    async fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, CsiError> {
        let mut r = self.0.get_capacity(req).await?;
        let freed = self.1.fetch_add(1 << 30, Ordering::Relaxed).min(32 << 30);
        let other = (32u64 << 30) - freed;
        r.available_capacity = r.available_capacity.saturating_sub(other);
        Ok(r)
    }
}

/// `GetMetadataAllocated` that sends its messages last first: each message
/// is in order by itself, but the stream's ranges go backwards.
struct MetadataBackwards(Arc<MemDriver>);

#[async_trait]
impl SnapshotMetadata for MetadataBackwards {
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        use futures::StreamExt;
        let mut msgs: Vec<_> = self.0.get_metadata_allocated(req).await?.collect().await;
        msgs.reverse();
        Ok(Box::pin(futures::stream::iter(msgs)))
    }
    async fn get_metadata_delta(
        &self,
        req: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        self.0.get_metadata_delta(req).await
    }
}

/// `GetMetadataDelta` that never looks at the base snapshot: it reports
/// the target against itself, so snapshots of two volumes give a (empty)
/// delta instead of an error.
struct DeltaIgnoresBase(Arc<MemDriver>);

#[async_trait]
impl SnapshotMetadata for DeltaIgnoresBase {
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        self.0.get_metadata_allocated(req).await
    }
    async fn get_metadata_delta(
        &self,
        mut req: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        req.base_snapshot_id = req.target_snapshot_id.clone();
        self.0.get_metadata_delta(req).await
    }
}

/// The memdriver with one part replaced by the named wrapper (broken, or
/// strict where the spec allows it), or, for `ids-from-names`, configured
/// with [`MemDriverConfig::ids_from_names`].
pub fn plugin(kind: &str) -> Arc<dyn RawCsi> {
    if kind == "ids-from-names" {
        let driver = MemDriver::new(MemDriverConfig {
            ids_from_names: true,
            ..MemDriverConfig::default()
        });
        return Arc::new(driver.plugin());
    }
    let driver = MemDriver::new(MemDriverConfig::default());
    let b = driver.plugin_builder();
    let b = match kind {
        "not-idempotent" => {
            b.provisioner(Arc::new(NotIdempotent(driver.clone(), AtomicU64::new(0))))
        }
        "snapshots-die-with-volume" => {
            b.provisioner(Arc::new(SnapshotsDieWithVolume(driver.clone())))
        }
        "foreign-prefix" => b.volume_lister(Arc::new(ForeignPrefix(driver.clone()))),
        "loses-pages" => b.volume_lister(Arc::new(LosesPages(driver.clone()))),
        "ignores-readonly" => b.node(Arc::new(IgnoresReadonly(driver.clone()))),
        "node-without-topology" => b.node(Arc::new(NodeWithoutTopology(driver.clone()))),
        "abnormal-on-node" => b.node_stats(Arc::new(AbnormalOnNode(driver.clone()))),
        "overcommitted-share" => b.node_stats(Arc::new(OvercommittedShare(driver.clone()))),
        "wrong-topology" => b.provisioner(EditCreate::wrong_topology(&driver)),
        "delta-ignores-base" => b.snapshot_metadata(Arc::new(DeltaIgnoresBase(driver.clone()))),
        "metadata-backwards" => b.snapshot_metadata(Arc::new(MetadataBackwards(driver.clone()))),
        "ignores-requisite" => b.provisioner(EditCreate::ignores_requisite(&driver)),
        "keeps-dependents" => {
            let strict = Arc::new(KeepsDependents(driver.clone()));
            b.provisioner(strict.clone()).snapshotter(strict)
        }
        "cannot-list" => b.volume_lister(Arc::new(CannotList)),
        "offset-pages" => b.volume_lister(Arc::new(OffsetPages {
            inner: driver.clone(),
            expire: false,
        })),
        "expiring-pages" => b.volume_lister(Arc::new(OffsetPages {
            inner: driver.clone(),
            expire: true,
        })),
        "no-snapshot-space" => b.snapshotter(Arc::new(RefusesSnapshots(
            driver.clone(),
            Code::ResourceExhausted,
        ))),
        "snapshot-precondition" => b.snapshotter(Arc::new(RefusesSnapshots(
            driver.clone(),
            Code::FailedPrecondition,
        ))),
        "never-confirms" => b.controller(Arc::new(NeverConfirms(driver.clone()))),
        "unknown-capacity" => {
            let unknown = Arc::new(UnknownCapacity(driver.clone()));
            b.provisioner(unknown.clone()).controller_expander(unknown)
        }
        "refuses-shrink" => b.controller_expander(Arc::new(RefusesShrink(driver.clone()))),
        "cannot-grow" => b.controller_expander(Arc::new(CannotGrow(driver.clone()))),
        "refuses-once" => {
            b.controller_expander(Arc::new(RefusesOnce(driver.clone(), Default::default())))
        }
        "first-preferred" => b.provisioner(EditCreate::first_preferred(&driver)),
        "capacity-everywhere" => b.capacity_reporter(Arc::new(CapacityEverywhere(driver.clone()))),
        "space-freed-elsewhere" => b.capacity_reporter(Arc::new(SpaceFreedElsewhere(
            driver.clone(),
            AtomicU64::new(0),
        ))),
        "wrong-code" => return Arc::new(Faulty(driver.plugin(), Fault::WrongCodeOnDelete)),
        "other-allowed-answers" => {
            return Arc::new(Faulty(driver.plugin(), Fault::OtherAllowedAnswers));
        }
        "no-maximum" => return Arc::new(Faulty(driver.plugin(), Fault::NoMaximum)),
        "small-maximum" => return Arc::new(Faulty(driver.plugin(), Fault::SmallMaximum)),
        "separate-pools" => return Arc::new(Faulty(driver.plugin(), Fault::SeparatePools)),
        "minimum-above-maximum" => {
            return Arc::new(Faulty(driver.plugin(), Fault::MinimumAboveMaximum));
        }
        "default-pool-capacity" => {
            return Arc::new(Faulty(driver.plugin(), Fault::DefaultPoolCapacity));
        }
        "no-content-source" => {
            return Arc::new(Faulty(driver.plugin(), Fault::NoContentSource));
        }
        "unknown-source-not-found" => {
            return Arc::new(Faulty(driver.plugin(), Fault::UnknownSourceNotFound));
        }
        "large-minimum" => return Arc::new(Faulty(driver.plugin(), Fault::LargeMinimum)),
        "range-for-name-only" => {
            return Arc::new(Faulty(driver.plugin(), Fault::RangeForNameOnly));
        }
        "no-volume-condition" => {
            return Arc::new(Faulty(driver.plugin(), Fault::NoVolumeCondition));
        }
        "fresh-publish-context" => {
            return Arc::new(Faulty(driver.plugin(), Fault::FreshPublishContext));
        }
        "modify-resizes" => return Arc::new(Faulty(driver.plugin(), Fault::ModifyResizes)),
        "gone-is-invalid" => return Arc::new(Faulty(driver.plugin(), Fault::InvalidForUnknown)),
        "formatted-ids" => return Arc::new(Faulty(driver.plugin(), Fault::FormattedIds)),
        "ungrouped-members" => {
            return Arc::new(Faulty(driver.plugin(), Fault::UngroupedMembers));
        }
        "negative-capacity" => {
            return Arc::new(Faulty(driver.plugin(), Fault::NegativeCapacity));
        }
        "panics-on-probe" => return Arc::new(Faulty(driver.plugin(), Fault::PanicOnProbe)),
        "hangs-on-probe" => return Arc::new(Faulty(driver.plugin(), Fault::HangsOnProbe)),
        // Without the plugin's per-name operation guard, which would
        // otherwise answer ABORTED to the concurrent calls and hide the race.
        "racy" => b.operation_guard(false).provisioner(Arc::new(Racy {
            inner: driver.clone(),
            names: Default::default(),
            next: AtomicU64::new(0),
        })),
        // Without the guard, so that the concurrent calls reach the provisioner.
        "reserving" | "full-pool" => b.operation_guard(false).provisioner(Arc::new(Reserving {
            inner: driver.clone(),
            pending: Default::default(),
            full: kind == "full-pool",
        })),
        // The memdriver as it is.
        "none" => b,
        other => panic!("no broken driver called {other:?}"),
    };
    Arc::new(b.build().unwrap())
}
