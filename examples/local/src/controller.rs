//! The Controller and GroupController services: volumes and snapshots as
//! directories and sparse files under the state directory, with capacity
//! accounting, publications and pagination.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use csi_types::paging::{Page, Paging};
use csi_types::prelude::*;
use csi_types::{
    controller::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, ControllerGetVolumeRequest,
        ControllerGetVolumeResponse, ControllerModifyVolumeRequest, ControllerModifyVolumeResponse,
        ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
        ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse, CreateSnapshotRequest,
        CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
        DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest,
        GetCapacityResponse, GetSnapshotRequest, GetSnapshotResponse, ListSnapshotsRequest,
        ListSnapshotsResponse, ListVolumesEntry, ListVolumesRequest, ListVolumesResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, VolumeStatus,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
        GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse, VolumeGroupSnapshot,
    },
    ids::{GroupSnapshotId, SnapshotId},
    types::{Map, Snapshot, VolumeCapability, VolumeCondition, VolumeContentSource},
};

use crate::driver::{
    DEFAULT_VOLUME_SIZE, GRANULARITY, Inner, Key, KeyGuard, cap_rec, check_capability,
    check_mutable, mismatch,
};
use crate::state::{
    ControllerPubRec, GroupRec, Layout, SnapshotRec, SourceRec, Stamp, State, Store, VolumeRec,
    io_err, remove_data,
};

/// Creates a volume's or snapshot's data at `final_path`: a copy of `source`
/// or empty, grown to `size` for block images. The data is built under a
/// temporary name and renamed into place, so it is either complete or
/// absent; an empty directory, which cannot be half made, is made in place.
fn materialize(
    final_path: &Path,
    block: bool,
    size: u64,
    source: Option<&Path>,
) -> Result<(), CsiError> {
    let what = || format!("creating {}", final_path.display());
    if !block && source.is_none() {
        // An empty directory has nothing to be half made: it is made in
        // place (no temporary name, no rename). Its id is new, so nothing
        // else names the path; if the call fails or the driver dies before
        // the record naming it is durable, the directory is removed (here,
        // or at the next start with the other data no record names).
        return fs::create_dir(final_path)
            // World-writable like an empty filesystem's root, so any workload user can write.
            .and_then(|()| {
                fs::set_permissions(final_path, fs::Permissions::from_mode(0o777)).inspect_err(
                    |_| {
                        let _ = fs::remove_dir(final_path);
                    },
                )
            })
            .map_err(|e| io_err(what(), e));
    }
    let tmp = Layout::tmp_for(final_path);
    let build = || -> std::io::Result<()> {
        // A leftover of an earlier attempt under the same id.
        if tmp.is_dir() {
            fs::remove_dir_all(&tmp)?;
        } else if tmp.exists() {
            fs::remove_file(&tmp)?;
        }
        if block {
            match source {
                Some(src) => csi_node::copy_sparse(src, &tmp).map_err(std::io::Error::other)?,
                None => {
                    fs::File::create_new(&tmp)?;
                }
            }
            let f = fs::OpenOptions::new().write(true).open(&tmp)?;
            if f.metadata()?.len() < size {
                f.set_len(size)?;
            }
        } else {
            match source {
                Some(src) => csi_node::copy_tree(src, &tmp).map_err(std::io::Error::other)?,
                None => {
                    fs::create_dir(&tmp)?;
                    // World-writable like an empty filesystem's root, so any workload user can write.
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o777))?;
                }
            }
        }
        // The data is durable before the rename that makes it visible: one
        // fsync for an image, one syncfs for a copied tree.
        if block {
            fs::File::open(&tmp)?.sync_all()?;
        } else if source.is_some() {
            csi_node::sync_filesystem(&tmp).map_err(std::io::Error::other)?;
        }
        // For data copied from a source, the rename is made durable by the
        // journal's leader, which fsyncs the data directory before the
        // record naming this path; empty data is made again at open if a
        // crash lost it (see `crate::state`).
        fs::rename(&tmp, final_path)
    };
    build().map_err(|e| {
        let _ = if tmp.is_dir() {
            fs::remove_dir_all(&tmp)
        } else {
            fs::remove_file(&tmp)
        };
        io_err(what(), e)
    })
}

fn not_found_volume(id: &str) -> CsiError {
    CsiError::not_found(format!("volume {id:?} does not exist"))
}

fn not_found_snapshot(id: &str) -> CsiError {
    CsiError::not_found(format!("snapshot {id:?} does not exist"))
}

/// Whether a volume is a block volume, from its requested capabilities.
fn kind_of(caps: &[VolumeCapability]) -> Result<bool, CsiError> {
    for (i, c) in caps.iter().enumerate() {
        check_capability(&format!("volume_capabilities[{i}]"), c)?;
    }
    let block = caps[0].is_block();
    if let Some(i) = caps.iter().position(|c| c.is_block() != block) {
        return Err(CsiError::invalid(
            format!("volume_capabilities[{i}]"),
            "a volume is either block (a sparse image) or mount (a directory): the capabilities mix both",
        ));
    }
    Ok(block)
}

impl Inner {
    /// Bytes neither provisioned nor reserved by a creation in progress.
    fn free(&self, store: &Store) -> u64 {
        self.cfg
            .capacity
            .saturating_sub(store.state.used())
            .saturating_sub(store.reserved)
    }

    /// The volume's health: its data present, of the right kind and size,
    /// within its quota.
    fn condition(&self, layout: &Layout, id: &str, v: &VolumeRec) -> VolumeCondition {
        let path = layout.volume_path(id, v.block);
        match fs::metadata(&path) {
            Err(e) => VolumeCondition::abnormal(format!(
                "backing data {} is missing: {e}",
                path.display()
            )),
            Ok(m) if v.block && !m.is_file() => VolumeCondition::abnormal(format!(
                "backing image {} is not a regular file",
                path.display()
            )),
            Ok(m) if v.block && m.len() != v.capacity => VolumeCondition::abnormal(format!(
                "backing image {} is {} bytes, the volume {}",
                path.display(),
                m.len(),
                v.capacity
            )),
            Ok(_) if v.block => {
                VolumeCondition::healthy(format!("backing image {} present", path.display()))
            }
            Ok(m) if !m.is_dir() => VolumeCondition::abnormal(format!(
                "backing directory {} is not a directory",
                path.display()
            )),
            Ok(_) => match csi_node::allocated_bytes(&path) {
                Ok(used) if used > v.capacity => VolumeCondition::abnormal(format!(
                    "uses {used} bytes, over its quota of {} bytes",
                    v.capacity
                )),
                Ok(used) => {
                    VolumeCondition::healthy(format!("uses {used} of {} bytes", v.capacity))
                }
                Err(e) => {
                    VolumeCondition::abnormal(format!("cannot measure {}: {e}", path.display()))
                }
            },
        }
    }

    fn status(&self, layout: &Layout, id: &str, v: &VolumeRec) -> Result<VolumeStatus, CsiError> {
        VolumeStatus::from_published(v.published.keys(), Some(self.condition(layout, id, v)))
    }

    /// The keys a CreateVolume holds for its whole call: the name, and the
    /// source while it is copied.
    pub fn create_keys(req: &CreateVolumeRequest) -> Vec<Key> {
        let mut keys = vec![Key::VolumeName(req.name.to_string())];
        keys.extend(req.volume_content_source.as_ref().map(|s| match s {
            VolumeContentSource::Snapshot(id) => Key::Snapshot(id.to_string()),
            VolumeContentSource::Volume(id) => Key::Volume(id.to_string()),
        }));
        keys
    }

    pub fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let keys = self.keys.lock_all(Self::create_keys(&req));
        self.create_volume_locked(req, keys)
    }

    /// CreateVolume with its [`Inner::create_keys`] held.
    pub fn create_volume_locked(
        &self,
        req: CreateVolumeRequest,
        _keys: KeyGuard<'_>,
    ) -> Result<CreateVolumeResponse, CsiError> {
        let block = kind_of(&req.volume_capabilities)?;
        if let Some(k) = req.parameters.keys().next() {
            return Err(CsiError::invalid(
                format!("parameters[{k:?}]"),
                "this driver takes no StorageClass parameters (its mutable parameters go in mutable_parameters)",
            ));
        }
        check_mutable("mutable_parameters", &req.mutable_parameters)?;
        let source = req.volume_content_source.as_ref().map(|s| match s {
            VolumeContentSource::Snapshot(id) => SourceRec::Snapshot(id.to_string()),
            VolumeContentSource::Volume(id) => SourceRec::Volume(id.to_string()),
        });
        let range = req.capacity_range.unwrap_or_default();

        // The keys are held for the whole call; the store is locked only
        // while it is read and changed.
        let mut store = self.lock();
        if let Some((id, v)) = store.state.volume_by_name(req.name.as_str()) {
            let why = if v.block != block {
                Some(format!(
                    "it is a {} volume",
                    if v.block { "block" } else { "mount" }
                ))
            } else if !range.contains(v.capacity) {
                Some(format!(
                    "its capacity {} is outside the requested range",
                    v.capacity
                ))
            } else if v.source != source {
                Some(format!("it was created from {:?}", v.source))
            } else if v.parameters != req.parameters {
                Some("it was created with other parameters".to_string())
            } else {
                None
            };
            return match why {
                Some(why) => Err(CsiError::already_exists(format!(
                    "volume name {:?} is taken by {id} and {why}",
                    req.name.as_str()
                ))),
                None => Ok(CreateVolumeResponse::new(self.volume_of(id, v)?)),
            };
        }

        if let Some(reqs) = &req.accessibility_requirements
            && !reqs.requisite.is_empty()
            && !reqs
                .requisite
                .iter()
                .any(|t| t.is_subset_of(&self.cfg.topology))
        {
            return Err(CsiError::resource_exhausted(format!(
                "no requisite topology is satisfied by this node's {:?}",
                self.cfg.topology
            )));
        }

        // The content to copy and its size.
        let layout = store.layout.clone();
        let (src_path, src_size) = match &req.volume_content_source {
            None => (None, None),
            Some(VolumeContentSource::Snapshot(sid)) => {
                let s = store
                    .state
                    .snapshots
                    .get(sid.as_str())
                    .ok_or_else(|| not_found_snapshot(sid.as_str()))?;
                if s.block != block {
                    return Err(CsiError::invalid(
                        "volume_content_source.snapshot.snapshot_id",
                        format!(
                            "snapshot {sid} is of a {} volume",
                            if s.block { "block" } else { "mount" }
                        ),
                    ));
                }
                (
                    Some(layout.snapshot_path(sid.as_str(), s.block)),
                    Some(s.size),
                )
            }
            Some(VolumeContentSource::Volume(vid)) => {
                let v = store
                    .state
                    .volumes
                    .get(vid.as_str())
                    .ok_or_else(|| not_found_volume(vid.as_str()))?;
                if v.block != block {
                    return Err(CsiError::invalid(
                        "volume_content_source.volume.volume_id",
                        format!(
                            "volume {vid} is a {} volume",
                            if v.block { "block" } else { "mount" }
                        ),
                    ));
                }
                (
                    Some(layout.volume_path(vid.as_str(), v.block)),
                    Some(v.capacity),
                )
            }
        };
        let size = range
            .choose(src_size.unwrap_or(DEFAULT_VOLUME_SIZE), GRANULARITY)
            .ok_or_else(|| {
                CsiError::out_of_range(format!(
                    "no size in {range:?} is a multiple of {GRANULARITY} bytes"
                ))
            })?;
        if let Some(min) = src_size
            && size < min
        {
            return Err(CsiError::out_of_range(format!(
                "the source is {min} bytes; a volume created from it cannot be smaller ({size})"
            )));
        }
        if size > self.cfg.capacity {
            return Err(CsiError::out_of_range(format!(
                "{size} bytes is more than this driver's whole capacity ({} bytes)",
                self.cfg.capacity
            )));
        }
        let free = self.free(&store);
        if size > free {
            return Err(CsiError::resource_exhausted(format!(
                "{size} bytes requested, {free} of {} bytes free",
                self.cfg.capacity
            )));
        }

        // The data is built without the store's lock, its bytes reserved
        // meanwhile; the id is spent whatever happens (ids only grow).
        let id = store.state.new_id("vol");
        store.reserved += size;
        drop(store);
        let path = layout.volume_path(&id, block);
        let built = if !block && src_path.is_none() && self.recycler().reuse(&path) {
            Ok(())
        } else {
            materialize(&path, block, size, src_path.as_deref())
        };
        let mut store = self.lock();
        store.reserved -= size;
        built?;
        let rec = VolumeRec {
            name: req.name.to_string(),
            capacity: size,
            block,
            caps: req.volume_capabilities.iter().map(cap_rec).collect(),
            parameters: req.parameters.clone(),
            mutable: req.mutable_parameters.clone(),
            source,
            published: BTreeMap::new(),
            created: Stamp::now(),
            never_staged: true,
        };
        let vol = self.volume_of(&id, &rec)?;
        let mut next = store.state.clone();
        next.volumes.insert(id.as_str().into(), Arc::new(rec));
        if let Err(e) = store.commit_volume(next, &id) {
            remove_data(&path);
            return Err(e);
        }
        tracing::info!(volume_id = %id, size, block, "volume created");
        Ok(CreateVolumeResponse::new(vol))
    }

    pub fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let key = self.keys.lock(Key::Volume(req.volume_id.to_string()));
        self.delete_volume_locked(req, key)
    }

    /// DeleteVolume with the volume's key held.
    pub fn delete_volume_locked(
        &self,
        req: DeleteVolumeRequest,
        _key: KeyGuard<'_>,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let mut store = self.lock();
        let Some(v) = store.state.volumes.get(id) else {
            return Ok(DeleteVolumeResponse {});
        };
        if let Some(node) = v.published.keys().next() {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is published to node {node}; unpublish it first"
            )));
        }
        if let Some(path) = store
            .state
            .published
            .iter()
            .find(|(_, p)| p.volume_id == id)
            .map(|(t, _)| t)
        {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is published at {path} on this node"
            )));
        }
        if let Some(path) = store
            .state
            .staged
            .iter()
            .find(|(_, s)| s.volume_id == id)
            .map(|(t, _)| t)
        {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is staged at {path}"
            )));
        }
        let path = store.layout.volume_path(id, v.block);
        let never_staged = v.never_staged;
        let mut next = store.state.clone();
        next.volumes.remove(id);
        store.commit_volume(next, id)?;
        // The directory of a volume handed to a node is never given to
        // another: a descriptor opened into it, or a mount of it left
        // behind, would reach the next volume (see `Recycler`).
        if never_staged {
            store.recycle_when_durable(path);
        } else {
            store.remove_when_durable(path);
        }
        tracing::info!(volume_id = %id, "volume deleted");
        Ok(DeleteVolumeResponse {})
    }

    pub fn controller_publish_volume(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let mut store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        if req.node_id != self.cfg.node_id {
            return Err(CsiError::not_found(format!(
                "node {:?} does not exist: this driver serves the single node {:?}",
                req.node_id.as_str(),
                self.cfg.node_id.as_str()
            )));
        }
        if let Some(why) = mismatch(&req.volume_capability, v.block) {
            return Err(CsiError::invalid("volume_capability", why));
        }
        let rec = ControllerPubRec {
            readonly: req.readonly,
            cap: cap_rec(&req.volume_capability),
        };
        let context: Map = [("readonly".to_string(), req.readonly.to_string())].into();
        if let Some(existing) = v.published.get(req.node_id.as_str()) {
            if *existing == rec {
                return Ok(ControllerPublishVolumeResponse {
                    publish_context: context,
                });
            }
            return Err(CsiError::already_exists(format!(
                "volume {id} is published to {} with readonly={} and another capability",
                req.node_id, existing.readonly
            )));
        }
        let attached = store
            .state
            .volumes
            .values()
            .filter(|v| v.published.contains_key(req.node_id.as_str()))
            .count() as u64;
        let max = self.cfg.max_volumes_per_node;
        if max > 0 && attached >= max {
            return Err(CsiError::resource_exhausted(format!(
                "node {} already has {attached} volumes attached, its limit",
                req.node_id
            )));
        }
        let mut next = store.state.clone();
        if let Some(v) = next.volumes.get_mut(id).map(Arc::make_mut) {
            v.published.insert(req.node_id.to_string(), rec);
        }
        store.commit(next)?;
        Ok(ControllerPublishVolumeResponse {
            publish_context: context,
        })
    }

    pub fn controller_unpublish_volume(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let mut store = self.lock();
        // A volume that does not exist (deleted already, or never created
        // here) is published nowhere, and a node other than this driver's
        // one has nothing published: both can be safely regarded as
        // unpublished, so the spec's SHOULD applies and the answer is OK.
        let Some(v) = store.state.volumes.get(id) else {
            return Ok(ControllerUnpublishVolumeResponse {});
        };
        if req.node_id.as_ref().is_some_and(|n| *n != self.cfg.node_id) {
            return Ok(ControllerUnpublishVolumeResponse {});
        }
        if v.published.is_empty() {
            return Ok(ControllerUnpublishVolumeResponse {});
        }
        let mut next = store.state.clone();
        if let Some(v) = next.volumes.get_mut(id).map(Arc::make_mut) {
            match &req.node_id {
                Some(n) => {
                    v.published.remove(n.as_str());
                }
                None => v.published.clear(),
            }
        }
        store.commit(next)?;
        Ok(ControllerUnpublishVolumeResponse {})
    }

    pub fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        let id = req.volume_id.as_str();
        let store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        for c in &req.volume_capabilities {
            if let Some(why) = mismatch(c, v.block) {
                return Ok(ValidateVolumeCapabilitiesResponse::unsupported(why));
            }
        }
        if !req.parameters.is_empty() && req.parameters != v.parameters {
            return Ok(ValidateVolumeCapabilitiesResponse::unsupported(
                "the volume was created with other parameters",
            ));
        }
        if let Err(e) = check_mutable("mutable_parameters", &req.mutable_parameters) {
            return Ok(ValidateVolumeCapabilitiesResponse::unsupported(
                e.to_string(),
            ));
        }
        Ok(ValidateVolumeCapabilitiesResponse::confirm(&req))
    }

    pub fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        let store = self.lock();
        let Page {
            entries,
            next_token,
        } = Paging::volumes(&req)?.page(store.state.volumes.iter());
        let entries = entries
            .into_iter()
            .map(|(id, v)| {
                Ok(ListVolumesEntry {
                    volume: self.volume_of(id, v)?,
                    status: Some(self.status(&store.layout, id, v)?),
                })
            })
            .collect::<Result<_, CsiError>>()?;
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }

    pub fn controller_get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        Ok(ControllerGetVolumeResponse::new(
            self.volume_of(id, v)?,
            self.status(&store.layout, id, v)?,
        ))
    }

    pub fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, CsiError> {
        let store = self.lock();
        let fits_topology = req
            .accessible_topology
            .as_ref()
            .is_none_or(|t| t.is_subset_of(&self.cfg.topology));
        let fits_caps = req
            .volume_capabilities
            .iter()
            .all(|c| check_capability("volume_capabilities", c).is_ok())
            && (req.volume_capabilities.is_empty() || kind_of(&req.volume_capabilities).is_ok());
        let fits_params = req.parameters.is_empty();
        let available = if fits_topology && fits_caps && fits_params {
            self.free(&store) / GRANULARITY * GRANULARITY
        } else {
            0
        };
        Ok(GetCapacityResponse {
            available_capacity: available,
            maximum_volume_size: Some(available),
            minimum_volume_size: Some(GRANULARITY),
        })
    }

    pub fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let _key = self.keys.lock(Key::Volume(id.to_string()));
        let mut store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        if let Some(c) = &req.volume_capability
            && let Some(why) = mismatch(c, v.block)
        {
            return Err(CsiError::invalid("volume_capability", why));
        }
        let range = req.capacity_range;
        let block = v.block;
        let current = v.capacity;
        if range.contains(current) || range.required_bytes.is_none_or(|r| r <= current) {
            // Already large enough: expansion is idempotent and never shrinks.
            if range.limit_bytes.is_some_and(|l| l < current) {
                return Err(CsiError::out_of_range(format!(
                    "volume {id} is {current} bytes, more than limit_bytes; volumes do not shrink"
                )));
            }
            return Ok(ControllerExpandVolumeResponse {
                capacity_bytes: current,
                node_expansion_required: block,
            });
        }
        let size = range.choose(current, GRANULARITY).ok_or_else(|| {
            CsiError::out_of_range(format!(
                "no size in {range:?} is a multiple of {GRANULARITY} bytes"
            ))
        })?;
        let growth = size - current;
        let free = self.free(&store);
        if growth > free {
            return Err(CsiError::out_of_range(format!(
                "growing {id} to {size} bytes needs {growth} more bytes, {free} are free"
            )));
        }
        // The image grows before the record does: a crash in between leaves an image larger
        // than recorded (its record, and the CO's retry, which grows it to the same size, stay
        // right), where the other order would leave a record larger than its image, which a
        // retry finds "large enough" and never grows.
        let path = store.layout.volume_path(id, true);
        let set_len = |len: u64| -> std::io::Result<()> {
            let f = fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(len)?;
            f.sync_all()
        };
        if block {
            set_len(size).map_err(|e| io_err(format!("growing {}", path.display()), e))?;
        }
        let mut next = store.state.clone();
        if let Some(v) = next.volumes.get_mut(id).map(Arc::make_mut) {
            v.capacity = size;
        }
        if let Err(e) = store.commit(next) {
            // Not recorded: the image goes back to its recorded size (nothing has used the
            // new bytes: a node grows into them only after this call succeeds).
            if block && let Err(undo) = set_len(current) {
                tracing::warn!(
                    volume_id = %id, path = %path.display(), recorded = current, error = %undo,
                    "a volume's expansion was not recorded and its image could not be shrunk \
                     back; it stays larger than recorded until the expansion is retried"
                );
            }
            return Err(e);
        }
        tracing::info!(volume_id = %id, size, "volume expanded");
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: size,
            node_expansion_required: block,
        })
    }

    pub fn controller_modify_volume(
        &self,
        req: ControllerModifyVolumeRequest,
    ) -> Result<ControllerModifyVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        check_mutable("mutable_parameters", &req.mutable_parameters)?;
        let mut store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        if req
            .mutable_parameters
            .iter()
            .all(|(k, val)| v.mutable.get(k) == Some(val))
        {
            return Ok(ControllerModifyVolumeResponse {});
        }
        let mut next = store.state.clone();
        if let Some(v) = next.volumes.get_mut(id).map(Arc::make_mut) {
            v.mutable.extend(req.mutable_parameters.clone());
        }
        store.commit(next)?;
        Ok(ControllerModifyVolumeResponse {})
    }

    fn snapshot_of(&self, id: &str, s: &SnapshotRec) -> Result<Snapshot, CsiError> {
        let mut snap =
            Snapshot::try_new(id, s.source_volume.clone(), s.size, s.created.time(), true)?;
        if let Some(g) = &s.group {
            snap = snap.with_group_snapshot_id(
                GroupSnapshotId::new(g.clone()).map_err(|e| e.built_by_driver("Snapshot"))?,
            );
        }
        Ok(snap)
    }

    pub fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, CsiError> {
        if let Some(k) = req.parameters.keys().next() {
            return Err(CsiError::invalid(
                format!("parameters[{k:?}]"),
                "this driver takes no VolumeSnapshotClass parameters",
            ));
        }
        let vid = req.source_volume_id.as_str();
        let _keys = self.keys.lock_all(vec![
            Key::SnapshotName(req.name.to_string()),
            Key::Volume(vid.to_string()),
        ]);
        let mut store = self.lock();
        if let Some((id, s)) = store.state.snapshot_by_name(req.name.as_str()) {
            if s.source_volume != vid {
                return Err(CsiError::already_exists(format!(
                    "snapshot name {:?} is taken by {id}, a snapshot of volume {}",
                    req.name.as_str(),
                    s.source_volume
                )));
            }
            return Ok(CreateSnapshotResponse::new(self.snapshot_of(id, s)?));
        }
        let v = store
            .state
            .volumes
            .get(vid)
            .ok_or_else(|| not_found_volume(vid))?;
        let (size, block) = (v.capacity, v.block);
        let free = self.free(&store);
        if size > free {
            return Err(CsiError::resource_exhausted(format!(
                "a snapshot of {vid} needs {size} bytes, {free} are free"
            )));
        }
        let layout = store.layout.clone();
        let id = store.state.new_id("snap");
        store.reserved += size;
        drop(store);
        let path = layout.snapshot_path(&id, block);
        let built = materialize(&path, block, size, Some(&layout.volume_path(vid, block)));
        let mut store = self.lock();
        store.reserved -= size;
        built?;
        let rec = SnapshotRec {
            name: req.name.to_string(),
            source_volume: vid.to_string(),
            size,
            block,
            created: Stamp::now(),
            group: None,
        };
        let snap = self.snapshot_of(&id, &rec)?;
        let mut next = store.state.clone();
        next.snapshots.insert(id.clone(), rec);
        if let Err(e) = store.commit(next) {
            remove_data(&path);
            return Err(e);
        }
        tracing::info!(snapshot_id = %id, volume_id = %vid, "snapshot created");
        Ok(CreateSnapshotResponse::new(snap))
    }

    pub fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, CsiError> {
        let id = req.snapshot_id.as_str();
        let _key = self.keys.lock(Key::Snapshot(id.to_string()));
        let mut store = self.lock();
        let Some(s) = store.state.snapshots.get(id) else {
            return Ok(DeleteSnapshotResponse {});
        };
        if let Some(g) = &s.group {
            return Err(CsiError::invalid(
                "snapshot_id",
                format!("snapshot {id} belongs to group snapshot {g}; delete the group snapshot"),
            ));
        }
        let path = store.layout.snapshot_path(id, s.block);
        let mut next = store.state.clone();
        next.snapshots.remove(id);
        store.commit(next)?;
        store.remove_when_durable(path);
        Ok(DeleteSnapshotResponse {})
    }

    pub fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, CsiError> {
        let store = self.lock();
        let filtered = store
            .state
            .snapshots
            .iter()
            .filter(|(id, s)| req.wants(id, &s.source_volume));
        let Page {
            entries,
            next_token,
        } = Paging::snapshots(&req)?.page(filtered);
        let entries = entries
            .into_iter()
            .map(|(id, s)| self.snapshot_of(id, s))
            .collect::<Result<_, _>>()?;
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }

    pub fn get_snapshot(&self, req: GetSnapshotRequest) -> Result<GetSnapshotResponse, CsiError> {
        let id = req.snapshot_id.as_str();
        let store = self.lock();
        let s = store
            .state
            .snapshots
            .get(id)
            .ok_or_else(|| not_found_snapshot(id))?;
        Ok(GetSnapshotResponse::new(self.snapshot_of(id, s)?))
    }

    fn group_of(
        &self,
        state: &State,
        id: &str,
        g: &GroupRec,
    ) -> Result<VolumeGroupSnapshot, CsiError> {
        let snapshots = g
            .snapshots
            .iter()
            .map(|sid| {
                let s = state.snapshots.get(sid).ok_or_else(|| {
                    CsiError::internal(format!("group {id} names missing snapshot {sid}"))
                })?;
                self.snapshot_of(sid, s)
            })
            .collect::<Result<_, _>>()?;
        Ok(VolumeGroupSnapshot {
            group_snapshot_id: GroupSnapshotId::new(id)
                .map_err(|e| e.built_by_driver("VolumeGroupSnapshot"))?,
            snapshots,
            creation_time: g.created.time(),
            ready_to_use: true,
        })
    }

    /// The group's members must be exactly `ids` (as sets).
    fn check_members(id: &str, g: &GroupRec, ids: &[SnapshotId]) -> Result<(), CsiError> {
        let want: BTreeSet<&str> = g.snapshots.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = ids.iter().map(SnapshotId::as_str).collect();
        if want != got || ids.len() != g.snapshots.len() {
            return Err(CsiError::invalid(
                "snapshot_ids",
                format!("group snapshot {id} has members {want:?}, not {got:?}"),
            ));
        }
        Ok(())
    }

    pub fn create_volume_group_snapshot(
        &self,
        req: CreateVolumeGroupSnapshotRequest,
    ) -> Result<CreateVolumeGroupSnapshotResponse, CsiError> {
        if let Some(k) = req.parameters.keys().next() {
            return Err(CsiError::invalid(
                format!("parameters[{k:?}]"),
                "this driver takes no VolumeGroupSnapshotClass parameters",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, v) in req.source_volume_ids.iter().enumerate() {
            if !seen.insert(v.as_str()) {
                return Err(CsiError::invalid(
                    format!("source_volume_ids[{i}]"),
                    format!("volume {v} is listed twice"),
                ));
            }
        }
        let mut store = self.lock();
        if let Some((id, g)) = store
            .state
            .groups
            .iter()
            .find(|(_, g)| g.name == req.name.as_str())
        {
            let have: BTreeSet<&str> = g.source_volumes.iter().map(String::as_str).collect();
            if have != seen {
                return Err(CsiError::already_exists(format!(
                    "group snapshot name {:?} is taken by {id}, of volumes {have:?}",
                    req.name.as_str()
                )));
            }
            return Ok(CreateVolumeGroupSnapshotResponse::new(self.group_of(
                &store.state,
                id,
                g,
            )?));
        }
        let mut members = Vec::new();
        for v in &req.source_volume_ids {
            let rec = store
                .state
                .volumes
                .get(v.as_str())
                .ok_or_else(|| not_found_volume(v.as_str()))?;
            members.push((v.to_string(), rec.capacity, rec.block));
        }
        let needed: u64 = members.iter().map(|m| m.1).sum();
        let free = self.free(&store);
        if needed > free {
            return Err(CsiError::resource_exhausted(format!(
                "the group snapshot needs {needed} bytes, {free} are free"
            )));
        }
        let layout = store.layout.clone();
        let mut next = store.state.clone();
        let gid = next.new_id("group");
        let created = Stamp::now();
        let mut made: Vec<PathBuf> = Vec::new();
        let mut snapshot_ids = Vec::new();
        // The driver's lock keeps every driver operation out while the
        // members are copied one after another.
        for (vid, size, block) in &members {
            let sid = next.new_id("snap");
            let path = layout.snapshot_path(&sid, *block);
            if let Err(e) =
                materialize(&path, *block, *size, Some(&layout.volume_path(vid, *block)))
            {
                made.iter().for_each(|p| remove_data(p));
                return Err(e);
            }
            made.push(path);
            next.snapshots.insert(
                sid.clone(),
                SnapshotRec {
                    name: format!("{}/{vid}", req.name.as_str()),
                    source_volume: vid.clone(),
                    size: *size,
                    block: *block,
                    created,
                    group: Some(gid.clone()),
                },
            );
            snapshot_ids.push(sid);
        }
        let g = GroupRec {
            name: req.name.to_string(),
            snapshots: snapshot_ids,
            source_volumes: members.into_iter().map(|m| m.0).collect(),
            created,
        };
        next.groups.insert(gid.clone(), g.clone());
        let resp = self.group_of(&next, &gid, &g)?;
        if let Err(e) = store.commit(next) {
            made.iter().for_each(|p| remove_data(p));
            return Err(e);
        }
        tracing::info!(group_snapshot_id = %gid, "group snapshot created");
        Ok(CreateVolumeGroupSnapshotResponse::new(resp))
    }

    pub fn delete_volume_group_snapshot(
        &self,
        req: DeleteVolumeGroupSnapshotRequest,
    ) -> Result<DeleteVolumeGroupSnapshotResponse, CsiError> {
        let id = req.group_snapshot_id.as_str();
        // The members may be the sources of copies in progress: wait for
        // them (keys first, then the store, as everywhere).
        let members = match self.lock().state.groups.get(id) {
            Some(g) => g.snapshots.clone(),
            None => return Ok(DeleteVolumeGroupSnapshotResponse {}),
        };
        let _keys = self
            .keys
            .lock_all(members.into_iter().map(Key::Snapshot).collect());
        let mut store = self.lock();
        let Some(g) = store.state.groups.get(id) else {
            return Ok(DeleteVolumeGroupSnapshotResponse {});
        };
        Self::check_members(id, g, &req.snapshot_ids.get()?)?;
        let paths: Vec<PathBuf> = g
            .snapshots
            .iter()
            .filter_map(|sid| {
                store
                    .state
                    .snapshots
                    .get(sid)
                    .map(|s| store.layout.snapshot_path(sid, s.block))
            })
            .collect();
        let mut next = store.state.clone();
        if let Some(g) = next.groups.remove(id) {
            for sid in g.snapshots {
                next.snapshots.remove(&sid);
            }
        }
        store.commit(next)?;
        paths.into_iter().for_each(|p| store.remove_when_durable(p));
        Ok(DeleteVolumeGroupSnapshotResponse {})
    }

    pub fn get_volume_group_snapshot(
        &self,
        req: GetVolumeGroupSnapshotRequest,
    ) -> Result<GetVolumeGroupSnapshotResponse, CsiError> {
        let id = req.group_snapshot_id.as_str();
        let store = self.lock();
        let g =
            store.state.groups.get(id).ok_or_else(|| {
                CsiError::not_found(format!("group snapshot {id:?} does not exist"))
            })?;
        Self::check_members(id, g, &req.snapshot_ids.get()?)?;
        Ok(GetVolumeGroupSnapshotResponse::new(self.group_of(
            &store.state,
            id,
            g,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::{Config, LocalDriver};
    use csi_types::ids::VolumeId;
    use csi_types::ids::VolumeName;
    use csi_types::redact::Secrets;
    use csi_types::types::{AccessMode, CapacityRange};

    fn create(name: &str, source: Option<&str>) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: VolumeName::new(name).unwrap(),
            capacity_range: Some(CapacityRange::exactly(1 << 20)),
            volume_capabilities: vec![VolumeCapability::mount(AccessMode::SingleNodeWriter)],
            parameters: Map::new(),
            secrets: Secrets::default(),
            volume_content_source: source
                .map(|s| VolumeContentSource::Volume(VolumeId::new(s).unwrap())),
            accessibility_requirements: None,
            mutable_parameters: Map::new(),
        }
    }

    /// Runs `f` on a thread; the flag says whether it returned.
    fn spawn<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (std::thread::JoinHandle<T>, Arc<AtomicBool>) {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let h = std::thread::spawn(move || {
            let r = f();
            flag.store(true, Ordering::SeqCst);
            r
        });
        (h, done)
    }

    /// While one name (or a copy's source) is locked, operations on other
    /// names and volumes complete; the operation on the locked one waits
    /// for it, and same-name creations end with one volume.
    #[test]
    fn different_names_proceed_in_parallel_and_the_same_name_waits() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::open(Config::with_state_dir(dir.path().join("state"))).unwrap();
        let src = d.inner.create_volume(create("src", None)).unwrap().volume;
        let src_id = src.volume_id.to_string();

        // A creation of "x" is in progress (its name is held): "y", a
        // delete and a clone of another volume all complete meanwhile.
        let held = d.inner.keys.lock(Key::VolumeName("x".into()));
        let inner = d.inner.clone();
        let (x, x_done) = spawn(move || inner.create_volume(create("x", None)));
        let y = d.inner.create_volume(create("y", None)).unwrap().volume;
        d.inner
            .create_volume(create("clone", Some(&src_id)))
            .unwrap();
        d.inner
            .delete_volume(DeleteVolumeRequest {
                volume_id: y.volume_id.clone(),
                secrets: Secrets::default(),
            })
            .unwrap();
        assert!(!x_done.load(Ordering::SeqCst), "\"x\" waits for its name");
        // A second creation of "x" waits too, and both get the same volume.
        let inner = d.inner.clone();
        let (x2, _) = spawn(move || inner.create_volume(create("x", None)));
        drop(held);
        let (a, b) = (x.join().unwrap().unwrap(), x2.join().unwrap().unwrap());
        assert_eq!(a.volume.volume_id, b.volume.volume_id);

        // A volume being read by a copy cannot be deleted under it: the
        // delete waits for the copy; other creations do not.
        let copying = d.inner.keys.lock(Key::Volume(src_id.clone()));
        let inner = d.inner.clone();
        let id = src.volume_id.clone();
        let (del, del_done) = spawn(move || {
            inner.delete_volume(DeleteVolumeRequest {
                volume_id: id,
                secrets: Secrets::default(),
            })
        });
        d.inner.create_volume(create("z", None)).unwrap();
        assert!(!del_done.load(Ordering::SeqCst), "the delete waits");
        drop(copying);
        // The clone made above still names it as its source; deleting the
        // source is allowed (the clone is a copy).
        del.join().unwrap().unwrap();
        let store = d.inner.lock();
        assert!(store.state.volumes.get(src_id.as_str()).is_none());
        assert_eq!(store.reserved, 0, "no reservation outlives its creation");
        let names: std::collections::BTreeSet<_> = store
            .state
            .volumes
            .values()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(names, ["clone", "x", "z"].map(String::from).into());
    }
}
