//! [`LocalDriver`]: the driver value, its registration with the SDK, and the
//! helpers its controller and node halves share.
//!
//! Every RPC runs on tokio's blocking pool (it does file and mount I/O),
//! except the quick ones, CreateVolume of an empty mount volume and
//! DeleteVolume, which run on the runtime thread that received them when
//! their name or volume is not in use (see `LocalDriver::run_quick`).
//! The state lives behind one store lock, held only to read and change it
//! and for quick filesystem calls (`mkdir`, `rename`, mounts); the work that
//! takes long, building a volume's or snapshot's data (copies for clones
//! and snapshots, a synced image), runs without it, under [`Keys`]: locks
//! per volume name, snapshot name and object id, so operations on
//! different names proceed in parallel and operations on the same name (or
//! on a volume being copied) wait for each other. A capacity reservation
//! holds the bytes of a creation in progress. No lock is held while a
//! change is made durable: a handler only queues its journal record (see
//! [`crate::state`]), and `run` (or `run_quick`) waits for the group commit
//! after the locks are released, so concurrent calls share one synchronous write
//! (one exception: a volume's first NodeStageVolume waits, with the store
//! locked, for its mark as staged to be durable before it mounts; see
//! `Store::mark_staged`). The
//! SDK's [`Plugin`] also refuses a second call on the same volume id while
//! one is in flight.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use async_trait::async_trait;
use csi_types::prelude::*;
use csi_types::{
    capabilities::{ControllerCapabilities, NodeCapabilities, PluginCapabilities},
    controller::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, ControllerGetVolumeRequest,
        ControllerGetVolumeResponse, ControllerModifyVolumeRequest, ControllerModifyVolumeResponse,
        ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
        ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse, CreateSnapshotRequest,
        CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
        DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest,
        GetCapacityResponse, GetSnapshotRequest, GetSnapshotResponse, ListSnapshotsRequest,
        ListSnapshotsResponse, ListVolumesRequest, ListVolumesResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
        DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
        GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse, ProbeRequest, ProbeResponse},
    ids::{SnapshotId, VolumeId},
    node::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetInfoRequest, NodeGetInfoResponse,
        NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
        NodeUnstageVolumeResponse,
    },
    snapshot_metadata::{GetMetadataAllocatedRequest, GetMetadataDeltaRequest},
    types::{Map, Volume, VolumeCapability, VolumeContentSource},
};
use futures::StreamExt;

use crate::config::Config;
use crate::state::{CapRec, Journal, Store, VolumeRec};

/// Volume sizes are multiples of this (a loop device needs 512-byte multiples).
pub const GRANULARITY: u64 = 4096;

/// The size of a volume created without a capacity range or a source.
pub const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;

/// The mutable parameters `CreateVolume` and `ControllerModifyVolume` accept.
///
/// - `iops-class`: one of `low`, `standard`, `high` (a label for the volume's
///   service class; this driver records and reports it).
/// - `label`: free text of 1 to 63 characters.
///
/// Any other key is `INVALID_ARGUMENT`.
pub const MUTABLE_PARAMETERS: &[&str] = &["iops-class", "label"];

/// The values `iops-class` may take.
pub const IOPS_CLASSES: &[&str] = &["low", "standard", "high"];

/// The single-node CSI driver. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LocalDriver {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: Config,
    /// The state directory's `lock` file, locked (`flock`, exclusive) while the driver lives:
    /// a second driver on the same directory would replay and clear the journal this one
    /// appends to and collect this one's new volumes as garbage.
    _lock: std::fs::File,
    store: Mutex<Store>,
    journal: Arc<Journal>,
    /// Per-object locks for the work done outside the store's lock.
    pub keys: Keys,
}

/// Creates the state directory if needed and takes the exclusive lock on its `lock` file, before
/// anything in it is read or changed. The lock goes with the process (the kernel drops it when
/// the file is closed, also after a crash), so no stale lock file can keep a driver out.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    // create_dir_all on a file says only "File exists".
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "state directory {} exists and is not a directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(format!(
            "state directory {} is in use by another local driver (it holds the lock on {}); \
             stop that driver or give this one its own --state-dir",
            dir.display(),
            path.display()
        )),
        Err(e) => Err(format!("locking {}: {e}", path.display())),
    }
}

/// Locks by name: a volume or snapshot name, or an object id (see
/// [`Key`]). Operations on different keys proceed in parallel; a second
/// operation on a held key waits for the first to finish. A caller takes
/// its keys before the store's lock, never while holding it, and takes
/// several id keys only in sorted order (`lock_all`), so no two callers
/// wait for each other.
#[derive(Default)]
pub(crate) struct Keys {
    held: Mutex<Held>,
    freed: Condvar,
}

/// The keys held, and how many callers sleep waiting for one: a release
/// with nobody asleep wakes nobody (a wake-all is a system call even with
/// no waiter).
#[derive(Default)]
struct Held {
    keys: HashSet<Key>,
    sleeping: usize,
}

/// What a [`Keys`] lock is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    /// A CreateVolume in progress for this name.
    VolumeName(String),
    /// A CreateSnapshot in progress for this name.
    SnapshotName(String),
    /// A volume being read (the source of a copy), grown or deleted.
    Volume(String),
    /// A snapshot being read (the source of a copy) or deleted.
    Snapshot(String),
}

/// Holds keys of a [`Keys`] until dropped.
pub(crate) struct KeyGuard<'a> {
    keys: &'a Keys,
    held: Vec<Key>,
}

impl Keys {
    fn set(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `key` is free and takes it.
    pub fn lock(&self, key: Key) -> KeyGuard<'_> {
        self.lock_all(vec![key])
    }

    /// Takes every key of `keys`, one after the other in sorted order.
    pub fn lock_all(&self, mut keys: Vec<Key>) -> KeyGuard<'_> {
        keys.sort();
        keys.dedup();
        let mut guard = KeyGuard {
            keys: self,
            held: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            let mut set = self.set();
            while set.keys.contains(&key) {
                set.sleeping += 1;
                set = self.freed.wait(set).unwrap_or_else(|e| e.into_inner());
                set.sleeping -= 1;
            }
            set.keys.insert(key.clone());
            guard.held.push(key);
        }
        guard
    }

    /// Takes every key of `keys` if all are free now; `None` (holding
    /// nothing) if one is not.
    pub fn try_lock_all(&self, keys: Vec<Key>) -> Option<KeyGuard<'_>> {
        let mut set = self.set();
        if keys.iter().any(|k| set.keys.contains(k)) {
            return None;
        }
        for k in &keys {
            set.keys.insert(k.clone());
        }
        Some(KeyGuard {
            keys: self,
            held: keys,
        })
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut set = self.keys.set();
        for k in self.held.drain(..) {
            set.keys.remove(&k);
        }
        let sleeping = set.sleeping > 0;
        drop(set);
        if sleeping {
            self.keys.freed.notify_all();
        }
    }
}

impl LocalDriver {
    /// Opens the state directory (creating it if needed, and removing data
    /// left by operations a crash cut short) and returns the driver.
    ///
    /// The tool time limits of [`Config::tool_timeouts`] are set first (for the whole process,
    /// see [`csi_node::Tool::set_timeout`]), once the state directory is known to be this
    /// driver's, so that the clean-up already runs under them. When the state cannot be opened
    /// the limits are put back as they were: a failed open changes nothing in the process.
    pub fn open(cfg: Config) -> Result<LocalDriver, String> {
        let lock = lock_state_dir(&cfg.state_dir)?;
        let previous: Vec<_> = cfg
            .tool_timeouts
            .iter()
            .map(|&(tool, _)| (tool, tool.timeout()))
            .collect();
        for (tool, limit) in &cfg.tool_timeouts {
            tool.set_timeout(*limit);
        }
        let store = Store::open(&cfg.state_dir).inspect_err(|_| {
            for &(tool, limit) in &previous {
                tool.set_timeout(limit);
            }
        })?;
        tracing::info!(
            state_dir = %cfg.state_dir.display(),
            volumes = store.state.volumes.len(),
            snapshots = store.state.snapshots.len(),
            "state loaded"
        );
        Ok(LocalDriver {
            inner: Arc::new(Inner {
                cfg,
                _lock: lock,
                journal: store.journal(),
                store: Mutex::new(store),
                keys: Keys::default(),
            }),
        })
    }

    /// The driver's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Registers every service of the driver with the SDK: Identity,
    /// Controller (all optional parts), GroupController, Node (stage, stats,
    /// expand) and SnapshotMetadata.
    pub fn plugin(&self) -> Result<Plugin, BuildError> {
        let d = Arc::new(self.clone());
        Plugin::builder(d.clone())
            .controller(d.clone())
            .provisioner(d.clone())
            .publisher(d.clone())
            .volume_lister(d.clone())
            .capacity_reporter(d.clone())
            .snapshotter(d.clone())
            .snapshot_lister(d.clone())
            .snapshot_getter(d.clone())
            .controller_expander(d.clone())
            .volume_getter(d.clone())
            .modifier(d.clone())
            .group_controller(d.clone())
            .node(d.clone())
            .stager(d.clone())
            .node_stats(d.clone())
            .node_expander(d.clone())
            .snapshot_metadata(d)
            .build()
    }

    /// Runs a synchronous operation on the blocking pool, then waits (with
    /// the lock released, so that concurrent calls share one `fdatasync`)
    /// until every change it made or could have seen is durable.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, CsiError> + Send + 'static,
    ) -> Result<T, CsiError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let result = op(&inner);
            inner.journal.wait_durable()?;
            result
        })
        .await
        .map_err(|e| CsiError::internal(format!("the operation did not complete: {e}")))?
    }

    /// Runs a quick synchronous operation (metadata and a directory entry
    /// or two, no data copied or synced, no mount) on the runtime thread
    /// that received the call, then waits for the group commit without
    /// holding a thread ([`Journal::durable`]): the call is answered from
    /// the thread that received it, with no hand-off to the blocking pool.
    async fn run_quick<T>(&self, result: Result<T, CsiError>) -> Result<T, CsiError> {
        self.inner.journal.durable().await?;
        result
    }
}

impl Inner {
    /// Where new mount volumes take the empty directories of deleted ones.
    pub fn recycler(&self) -> &crate::state::Recycler {
        &self.journal.recycler
    }

    /// The store, locked. A panic in an earlier operation left the state as
    /// it was (changes are made on a copy), so a poisoned lock is safe to take.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The volume as CSI shows it.
    pub fn volume_of(&self, id: &str, v: &VolumeRec) -> Result<Volume, CsiError> {
        let mut vol = Volume::try_new(id, v.capacity)?
            .with_context("kind", if v.block { "block" } else { "mount" });
        for (k, val) in &v.mutable {
            vol = vol.with_context(k.clone(), val.clone());
        }
        if let Some(src) = &v.source {
            vol = vol.with_content_source(match src {
                crate::state::SourceRec::Snapshot(s) => VolumeContentSource::Snapshot(
                    SnapshotId::new(s.clone()).map_err(|e| e.built_by_driver("Volume"))?,
                ),
                crate::state::SourceRec::Volume(s) => VolumeContentSource::Volume(
                    VolumeId::new(s.clone()).map_err(|e| e.built_by_driver("Volume"))?,
                ),
            });
        }
        if !self.cfg.topology.segments().is_empty() {
            vol = vol.with_accessible_topology(self.cfg.topology.clone());
        }
        Ok(vol)
    }
}

/// Checks a capability this driver can serve; `field` names it in errors.
pub(crate) fn check_capability(field: &str, cap: &VolumeCapability) -> Result<(), CsiError> {
    if let Some(m) = cap.mount_options() {
        // Volumes are published by bind mounts, which apply per-mount flags only.
        if let Err(e) =
            csi_node::MountOptions::parse(&m.mount_flags).and_then(|o| o.check_bindable())
        {
            return Err(CsiError::invalid(
                format!("{field}.mount.mount_flags"),
                e.to_string(),
            ));
        }
        if m.volume_mount_group.is_some() {
            return Err(CsiError::invalid(
                format!("{field}.mount.volume_mount_group"),
                "this driver does not advertise VOLUME_MOUNT_GROUP",
            ));
        }
    }
    Ok(())
}

/// Why a capability does not fit a volume, if it does not.
pub(crate) fn mismatch(cap: &VolumeCapability, block: bool) -> Option<String> {
    if let Err(e) = check_capability("volume_capability", cap) {
        return Some(e.to_string());
    }
    match (cap.is_block(), block) {
        (true, false) => {
            Some("the volume is a mount (directory) volume, not a block volume".into())
        }
        (false, true) => Some("the volume is a block volume, not a mount volume".into()),
        _ => None,
    }
}

/// Checks mutable parameters against [`MUTABLE_PARAMETERS`].
pub(crate) fn check_mutable(field: &str, params: &Map) -> Result<(), CsiError> {
    for (k, v) in params {
        let f = format!("{field}[{k:?}]");
        match k.as_str() {
            "iops-class" => {
                if !IOPS_CLASSES.contains(&v.as_str()) {
                    return Err(CsiError::invalid(
                        f,
                        format!("must be one of {}, got {v:?}", IOPS_CLASSES.join(", ")),
                    ));
                }
            }
            "label" => {
                let n = v.chars().count();
                if n == 0 || n > 63 {
                    return Err(CsiError::invalid(f, "must be 1 to 63 characters"));
                }
            }
            _ => {
                return Err(CsiError::invalid(
                    f,
                    format!(
                        "not a mutable parameter of this driver (supported: {})",
                        MUTABLE_PARAMETERS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Identity for LocalDriver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        Ok(GetPluginInfoResponse::new(
            self.inner.cfg.driver_name.clone(),
            env!("CARGO_PKG_VERSION"),
        )?
        .with_manifest("sdk", "csi-types"))
    }

    async fn probe(&self, _: ProbeRequest) -> Result<ProbeResponse, CsiError> {
        self.run(|d| {
            let root = d.lock().layout.root.clone();
            std::fs::metadata(&root).map_err(|e| {
                CsiError::failed_precondition(format!(
                    "the state directory {} is not usable: {e}",
                    root.display()
                ))
            })?;
            Ok(ProbeResponse::ready())
        })
        .await
    }

    fn plugin_capabilities(&self) -> PluginCapabilities {
        let mut caps = PluginCapabilities::VOLUME_EXPANSION_ONLINE;
        if !self.inner.cfg.topology.segments().is_empty() {
            caps |= PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS;
        }
        caps
    }
}

/// Forwards each listed trait method to the synchronous `Inner` method of the same name.
macro_rules! forward {
    ($trait:ident { $($method:ident: $req:ident => $resp:ident),* $(,)? } $($extra:item)*) => {
        #[async_trait]
        impl $trait for LocalDriver {
            $(
                async fn $method(&self, req: $req) -> Result<$resp, CsiError> {
                    self.run(move |d| d.$method(req)).await
                }
            )*
            $($extra)*
        }
    };
}

forward!(Controller {
    validate_volume_capabilities: ValidateVolumeCapabilitiesRequest => ValidateVolumeCapabilitiesResponse,
}
    fn feature_capabilities(&self) -> ControllerCapabilities {
        ControllerCapabilities::CLONE_VOLUME
            | ControllerCapabilities::PUBLISH_READONLY
            | ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES
            | ControllerCapabilities::VOLUME_CONDITION
            | ControllerCapabilities::SINGLE_NODE_MULTI_WRITER
    }
);
#[async_trait]
impl Provisioner for LocalDriver {
    async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        // An empty mount volume is one directory, made on the runtime
        // thread if its name is free now; an image is synced and a copy
        // takes long, and a name in use means waiting, so those run on the
        // blocking pool.
        if req.volume_content_source.is_none()
            && !req.volume_capabilities.iter().any(|c| c.is_block())
            && let Some(keys) = self.inner.keys.try_lock_all(Inner::create_keys(&req))
        {
            let result = self.inner.create_volume_locked(req, keys);
            self.run_quick(result).await
        } else {
            self.run(move |d| d.create_volume(req)).await
        }
    }

    /// Only changes metadata (the data goes once that is durable and the
    /// call answered, kept for reuse or removed by the journal's remover
    /// task on the blocking pool), so it runs on the runtime thread unless the
    /// volume is in use (being copied, say), which means waiting.
    async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        let key = Key::Volume(req.volume_id.to_string());
        if let Some(keys) = self.inner.keys.try_lock_all(vec![key]) {
            let result = self.inner.delete_volume_locked(req, keys);
            self.run_quick(result).await
        } else {
            self.run(move |d| d.delete_volume(req)).await
        }
    }
}
forward!(ControllerPublisher {
    controller_publish_volume: ControllerPublishVolumeRequest => ControllerPublishVolumeResponse,
    controller_unpublish_volume: ControllerUnpublishVolumeRequest => ControllerUnpublishVolumeResponse,
});
forward!(VolumeLister { list_volumes: ListVolumesRequest => ListVolumesResponse });
forward!(CapacityReporter { get_capacity: GetCapacityRequest => GetCapacityResponse });
forward!(Snapshotter {
    create_snapshot: CreateSnapshotRequest => CreateSnapshotResponse,
    delete_snapshot: DeleteSnapshotRequest => DeleteSnapshotResponse,
});
forward!(SnapshotLister { list_snapshots: ListSnapshotsRequest => ListSnapshotsResponse });
forward!(SnapshotGetter { get_snapshot: GetSnapshotRequest => GetSnapshotResponse });
forward!(ControllerExpander {
    controller_expand_volume: ControllerExpandVolumeRequest => ControllerExpandVolumeResponse,
});
forward!(VolumeGetter {
    controller_get_volume: ControllerGetVolumeRequest => ControllerGetVolumeResponse,
});
forward!(VolumeModifier {
    controller_modify_volume: ControllerModifyVolumeRequest => ControllerModifyVolumeResponse,
});
forward!(GroupController {
    create_volume_group_snapshot: CreateVolumeGroupSnapshotRequest => CreateVolumeGroupSnapshotResponse,
    delete_volume_group_snapshot: DeleteVolumeGroupSnapshotRequest => DeleteVolumeGroupSnapshotResponse,
    get_volume_group_snapshot: GetVolumeGroupSnapshotRequest => GetVolumeGroupSnapshotResponse,
});
forward!(Node {
    node_publish_volume: NodePublishVolumeRequest => NodePublishVolumeResponse,
    node_unpublish_volume: NodeUnpublishVolumeRequest => NodeUnpublishVolumeResponse,
    node_get_info: NodeGetInfoRequest => NodeGetInfoResponse,
}
    fn feature_capabilities(&self) -> NodeCapabilities {
        NodeCapabilities::VOLUME_CONDITION | NodeCapabilities::SINGLE_NODE_MULTI_WRITER
    }
);
forward!(NodeStager {
    node_stage_volume: NodeStageVolumeRequest => NodeStageVolumeResponse,
    node_unstage_volume: NodeUnstageVolumeRequest => NodeUnstageVolumeResponse,
});
forward!(NodeVolumeStats {
    node_get_volume_stats: NodeGetVolumeStatsRequest => NodeGetVolumeStatsResponse,
});
forward!(NodeExpander { node_expand_volume: NodeExpandVolumeRequest => NodeExpandVolumeResponse });

#[async_trait]
impl SnapshotMetadata for LocalDriver {
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        let messages = self.run(move |d| d.get_metadata_allocated(req)).await?;
        Ok(futures::stream::iter(messages.into_iter().map(Ok)).boxed())
    }

    async fn get_metadata_delta(
        &self,
        req: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        let messages = self.run(move |d| d.get_metadata_delta(req)).await?;
        Ok(futures::stream::iter(messages.into_iter().map(Ok)).boxed())
    }
}

/// A stored capability, for comparisons.
pub(crate) fn cap_rec(c: &VolumeCapability) -> CapRec {
    CapRec::from_cap(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutable_parameters_are_checked() {
        let ok: Map = [
            ("iops-class".into(), "high".into()),
            ("label".into(), "x".into()),
        ]
        .into();
        assert!(check_mutable("mutable_parameters", &ok).is_ok());
        let bad: Map = [("iops".into(), "1".into())].into();
        let e = check_mutable("mutable_parameters", &bad).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.to_string().contains("mutable_parameters[\"iops\"]"),
            "{e}"
        );
        let bad: Map = [("iops-class".into(), "ludicrous".into())].into();
        assert!(check_mutable("m", &bad).is_err());
    }
}
