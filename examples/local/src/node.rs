//! The Node service: staging and publishing with real bind mounts (mount
//! volumes) and loop devices (block volumes), usage from the filesystem.
//!
//! A mount volume is staged by bind-mounting its directory on the staging
//! path and published by bind-mounting the staging path on the target
//! (remounted read-only for a read-only publish). A block volume is staged
//! by checking that loop devices work, and published by attaching its image
//! to a free loop device (read-only for a read-only publish) and
//! bind-mounting the device node on the target file.
//!
//! Each mount is made before the record of it is saved, and a path that is
//! mounted without a record (left by a crash between the two) is unmounted
//! before it is used again, so a retried call never stacks mounts. Such a
//! path is unmounted only where what is mounted there is provably this
//! volume's own: its directory on a staging path; a bind of the staging path
//! (mount volume), or of its image or one of the image's loop devices (block
//! volume), on a target. Another mount there (someone else's) is refused,
//! naming the field, and left as it is. A failed publish removes only the
//! target it made. Unpublish and unstage likewise unmount only the
//! driver's own binds: a mount someone stacked on one is refused
//! (FAILED_PRECONDITION, naming it) and stays, with the bind under it and a
//! block volume's loop device, until its owner unmounts it and the CO
//! retries.

use std::fs;
use std::path::Path;

use csi_node::{LoopDevice, MountOptions};

use csi_types::prelude::*;
use csi_types::{
    node::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetInfoRequest, NodeGetInfoResponse,
        NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
        NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
        NodeUnstageVolumeResponse, UsageUnit, VolumeUsage,
    },
    types::{AccessMode, VolumeCapability, VolumeCondition},
};

use crate::driver::{Inner, cap_rec, check_capability, mismatch};
use crate::state::{PublishRec, StageRec, io_err};

/// The key a node path is recorded under: the path as the kernel reads it, without repeated or
/// trailing `/` and `.` components, so that `/pods/p/mount/` and `/pods/p/mount` name one
/// staging or publication (recorded apart, a retry under the other spelling unmounted the
/// first bind as a leftover and recorded a second publication, which then kept the volume
/// "still published" after its unpublish). A `..` is kept: what it names depends on the links
/// before it.
fn path_key(p: &csi_types::ids::NodePath) -> String {
    Path::new(p.as_str())
        .components()
        .collect::<std::path::PathBuf>()
        .to_string_lossy()
        .into_owned()
}

fn not_found_volume(id: &str) -> CsiError {
    CsiError::not_found(format!("volume {id:?} does not exist"))
}

/// Whether a capability's access mode forces a read-only publish.
fn read_only_mode(cap: &VolumeCapability) -> bool {
    cap.access_mode.is_read_only()
}

impl Inner {
    pub fn node_stage_volume(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let staging = req.staging_target_path.as_path();
        let mut store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        // A malformed capability is a bad field (INVALID_ARGUMENT naming it); one the volume
        // cannot serve (the other access type) exceeds its capabilities (FAILED_PRECONDITION).
        check_capability("volume_capability", &req.volume_capability)?;
        if let Some(why) = mismatch(&req.volume_capability, v.block) {
            return Err(CsiError::failed_precondition(format!(
                "cannot stage volume {id} with this capability: {why}"
            )));
        }
        // The volume's entry in its shard of volumes/ becomes durable
        // before a workload can write into it: CreateVolume leaves that to
        // here for a volume created empty (see `crate::state`).
        let shard = store.layout.volume_shard_dir(id);
        crate::state::fsync_dir(&shard)
            .map_err(|e| io_err(format!("syncing {}", shard.display()), e))?;
        let rec = StageRec {
            volume_id: id.to_string(),
            cap: cap_rec(&req.volume_capability),
        };
        let key = path_key(&req.staging_target_path);
        if let Some(existing) = store.state.staged.get(&key)
            && *existing != rec
        {
            return Err(CsiError::already_exists(format!(
                "{key} already has volume {} staged with another capability",
                existing.volume_id
            )));
        }
        let block = v.block;
        let data = store.layout.volume_path(id, block);
        // Durable before the mount: from here on the volume's directory is
        // never given to another volume, even if a crash comes between the
        // mount and the record of it.
        store.mark_staged(id)?;
        if block {
            LoopDevice::check_available()
                .map_err(|e| loop_error("block volumes need loop devices".into(), e))?;
        } else {
            check_target_kind("staging_target_path", staging, true, false)?;
            fs::create_dir_all(staging)
                .map_err(|e| io_err(format!("creating {}", staging.display()), e))?;
            let recorded = store.state.staged.contains_key(&key);
            if !recorded {
                // A bind of this volume's directory left by a crash before its record was
                // saved is ours to undo; any other mount there is refused, untouched.
                unmount_own_binds(
                    "staging_target_path",
                    staging,
                    std::slice::from_ref(&data),
                    &format!("volume {id}'s directory"),
                )?;
            }
            if !(recorded && csi_node::is_mount_point(staging)?) {
                csi_node::bind_mount(&data, staging, &MountOptions::default(), false)?;
            }
        }
        if store.state.staged.get(&key) == Some(&rec) {
            return Ok(NodeStageVolumeResponse {});
        }
        let mut next = store.state.clone();
        next.staged.insert(key, rec);
        if let Err(e) = store.commit(next) {
            // The bind this call just made, and nothing stacked under it.
            if !block && let Err(undo) = csi_node::unmount(staging) {
                tracing::warn!(
                    volume_id = %id, staging = %staging.display(), error = %undo,
                    "a stage whose record was not saved could not unmount its bind"
                );
            }
            return Err(e);
        }
        tracing::info!(volume_id = %id, staging = %staging.display(), "volume staged");
        Ok(NodeStageVolumeResponse {})
    }

    pub fn node_unstage_volume(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let key = path_key(&req.staging_target_path);
        let staging = req.staging_target_path.as_path();
        let mut store = self.lock();
        let Some(block) = store
            .state
            .staged
            .get(&key)
            .filter(|s| s.volume_id == id)
            .map(|s| s.cap.block)
        else {
            if !store.state.volumes.contains_key(id) {
                return Err(not_found_volume(id));
            }
            return Ok(NodeUnstageVolumeResponse {});
        };
        if let Some(target) = store
            .state
            .published
            .iter()
            .find(|(_, p)| p.volume_id == id && p.staging == key)
            .map(|(t, _)| t)
        {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is still published at {target} from {key}; unpublish it first"
            )));
        }
        // A block volume is staged without a mount: whatever is mounted there is not ours.
        if !block {
            let data = store.layout.volume_path(id, false);
            unmount_own_binds(
                "staging_target_path",
                staging,
                &[data],
                &format!("volume {id}'s directory"),
            )?;
        }
        let mut next = store.state.clone();
        next.staged.remove(&key);
        store.commit(next)?;
        tracing::info!(volume_id = %id, staging = %key, "volume unstaged");
        Ok(NodeUnstageVolumeResponse {})
    }

    pub fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let target = req.target_path.as_path();
        let key = path_key(&req.target_path);
        let mut store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        check_capability("volume_capability", &req.volume_capability)?;
        let staging = req.staging_target_path.as_ref().ok_or_else(|| {
            CsiError::failed_precondition(
                "staging_target_path is not set: this plugin has STAGE_UNSTAGE_VOLUME; call NodeStageVolume first",
            )
        })?;
        // A target that is the staging path, or lies inside it (inside the volume) or above it,
        // would bind the staging path onto itself or into itself, or hide it: the stage's own
        // bind was taken for a publish's leftover and unmounted.
        let (t, st) = (Path::new(&key), path_key(staging));
        if t.starts_with(&st) || Path::new(&st).starts_with(t) {
            return Err(CsiError::invalid(
                "target_path",
                format!(
                    "{key} is, lies inside or holds staging_target_path {st}: a volume is \
                     published at a path apart from where it is staged"
                ),
            ));
        }
        let Some(staged_mode) = store
            .state
            .staged
            .get(&path_key(staging))
            .filter(|s| s.volume_id == id)
            .map(|s| AccessMode::from(s.cap.mode))
        else {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is not staged at {staging}; call NodeStageVolume first"
            )));
        };
        if let Some(why) = mismatch(&req.volume_capability, v.block) {
            return Err(CsiError::failed_precondition(format!(
                "cannot publish volume {id} with this capability: {why}"
            )));
        }
        let controller_ro = v
            .published
            .get(self.cfg.node_id.as_str())
            .is_some_and(|p| p.readonly);
        // The mount flags, checked before anything is made: a bind applies per-mount flags
        // only, and an `ro` among them makes the publish read-only like `readonly` does (it
        // counts as one for SINGLE_NODE_SINGLE_WRITER).
        let flags = req
            .volume_capability
            .mount_options()
            .map(|m| MountOptions::parse(&m.mount_flags))
            .transpose()?
            .unwrap_or_default();
        flags.check_bindable()?;
        let readonly = req.readonly
            || controller_ro
            || read_only_mode(&req.volume_capability)
            || flags.is_read_only();
        // A publish is never looser than its stage: a volume staged with an access mode that
        // grants only read access is not published writable under another mode.
        if !readonly && staged_mode.is_read_only() {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is staged at {staging} with access mode {staged_mode:?}, which grants \
                 only read access; publish it with readonly set or a read-only access mode, or \
                 stage it again with a writable one"
            )));
        }
        let wanted = PublishRec {
            volume_id: id.to_string(),
            cap: cap_rec(&req.volume_capability),
            readonly,
            staging: path_key(staging),
            loop_device: None,
            loop_diskseq: None,
        };
        let same = |p: &PublishRec| {
            PublishRec {
                loop_device: None,
                loop_diskseq: None,
                ..p.clone()
            } == wanted
        };
        if let Some(existing) = store.state.published.get(&key) {
            if !same(existing) {
                return Err(CsiError::already_exists(format!(
                    "{key} already has volume {} published with other arguments (readonly={})",
                    existing.volume_id, existing.readonly
                )));
            }
            if csi_node::is_mount_point(target).unwrap_or(false) {
                return Ok(NodePublishVolumeResponse {});
            }
            // The record outlived its mount (a reboot, an outside umount): mount again below.
        }
        if req.volume_capability.access_mode == AccessMode::SingleNodeSingleWriter
            && !readonly
            && let Some(other) = store
                .state
                .published
                .iter()
                .find(|(t, p)| p.volume_id == id && !p.readonly && **t != key)
                .map(|(t, _)| t)
        {
            return Err(CsiError::failed_precondition(format!(
                "volume {id} is SINGLE_NODE_SINGLE_WRITER and already published read-write at {other}"
            )));
        }
        let block = v.block;
        check_target_kind("target_path", target, !block, true)?;
        let data = store.layout.volume_path(id, block);
        // Already done by NodeStageVolume; kept here so that no mount of a
        // volume is ever made with the volume still counted as never staged.
        store.mark_staged(id)?;
        // A mount on the target without a record of it is ours to undo only where it is what a
        // publish of this volume cut short by a crash leaves: a bind of the staging path (mount
        // volume), or of one of the image's loop devices or the image itself (block volume).
        // Anything else there (another driver's, an operator's tmpfs) is refused, untouched.
        let recorded_device = store
            .state
            .published
            .get(&key)
            .and_then(|p| p.loop_device.clone());
        unmount_own_publish_binds(
            id,
            target,
            block,
            &data,
            staging.as_path(),
            recorded_device.as_deref().map(Path::new),
        )?;
        // The target the CO made (kubelet makes a block volume's file) stays on a failed call:
        // only what this call makes is removed when it fails.
        let created = fs::symlink_metadata(target).is_err();
        let mut rec = wanted;
        if block {
            // Loop devices of this image that no publication records were
            // attached by a publish a crash (or a failed detach) cut short: detach them. One
            // that cannot be detached fails the call before anything is made (the CO retries):
            // left attached, it would hold the image for ever, with no record to find it by.
            let recorded: Vec<&String> = store
                .state
                .published
                .values()
                .filter_map(|p| p.loop_device.as_ref())
                .collect();
            for dev in LoopDevice::backed_by(&data) {
                if !recorded.iter().any(|r| Path::new(r) == dev.path()) {
                    tracing::info!(device = %dev.path().display(), "detaching a loop device no publication records");
                    dev.detach()
                        .map_err(|e| detach_error(&dev.path().to_string_lossy(), &data, e))?;
                }
            }
            csi_node::create_file_target(target)?;
            let dev = LoopDevice::attach(&data, readonly).map_err(|e| {
                if created {
                    let _ = fs::remove_file(target);
                }
                loop_error(
                    format!("cannot attach {} to a loop device", data.display()),
                    e,
                )
            })?;
            if let Err(e) =
                csi_node::bind_mount(dev.path(), target, &MountOptions::default(), readonly)
            {
                // The call fails with the bind's error either way; a device left attached is
                // found by the retry (no publication records it) and detached there.
                detach_logged(&dev, "after a failed bind");
                if created {
                    let _ = fs::remove_file(target);
                }
                return Err(e.into());
            }
            rec.loop_device = Some(dev.path().to_string_lossy().into_owned());
            rec.loop_diskseq = dev.diskseq();
        } else {
            match fs::create_dir(target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(e) => return Err(io_err(format!("creating {}", target.display()), e)),
            }
            csi_node::bind_mount(staging.as_path(), target, &flags, readonly).inspect_err(
                |_| {
                    if created {
                        let _ = fs::remove_dir(target);
                    }
                },
            )?;
        }
        let mut next = store.state.clone();
        next.published.insert(key, rec.clone());
        if let Err(e) = store.commit(next) {
            undo_publish(target, &rec, created);
            return Err(e);
        }
        tracing::info!(volume_id = %id, target = %target.display(), readonly, device = ?rec.loop_device, "volume published");
        Ok(NodePublishVolumeResponse {})
    }

    pub fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let key = path_key(&req.target_path);
        let target = req.target_path.as_path();
        let mut store = self.lock();
        let rec = match store.state.published.get(&key) {
            Some(p) if p.volume_id == id => p.clone(),
            _ => {
                if !store.state.volumes.contains_key(id) {
                    return Err(not_found_volume(id));
                }
                return Ok(NodeUnpublishVolumeResponse {});
            }
        };
        // Only this publication's bind is unmounted: a mount someone stacked on it since is
        // refused, and stays, as does the bind under it (and its loop device) until they
        // unmount theirs and the CO retries.
        let data = store.layout.volume_path(id, rec.cap.block);
        unmount_own_publish_binds(
            id,
            target,
            rec.cap.block,
            &data,
            Path::new(&rec.staging),
            rec.loop_device.as_deref().map(Path::new),
        )?;
        if let Some(dev) = &rec.loop_device {
            detach_if_ours(dev, rec.loop_diskseq, &store.layout.volume_path(id, true))?;
        }
        // Unmounted now (nothing is left mounted there once the binds are gone): the target
        // is removed, as the spec asks of what the plugin made there, but a directory that
        // holds files (written after the unmount, or by the CO) is the CO's to clear (kubelet
        // removes the target directory itself). Refusing would fail every retry the same way.
        let removed = if rec.cap.block {
            fs::remove_file(target)
        } else {
            fs::remove_dir(target)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                tracing::warn!(volume_id = %id, target = %key, "target directory left in place: it is not empty");
            }
            Err(e) => return Err(io_err(format!("removing {}", target.display()), e)),
        }
        let mut next = store.state.clone();
        next.published.remove(&key);
        store.commit(next)?;
        tracing::info!(volume_id = %id, target = %key, "volume unpublished");
        Ok(NodeUnpublishVolumeResponse {})
    }

    pub fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, CsiError> {
        let id = req.volume_id.as_str();
        let store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        // Object-bound fields: checked once the volume is known to exist.
        let volume_path = req.volume_path.get()?;
        req.staging_target_path.get()?;
        let path = volume_path.as_path();
        let key = path_key(&volume_path);
        let key = key.as_str();
        let published = store
            .state
            .published
            .get(key)
            .is_some_and(|p| p.volume_id == id);
        let staged = store
            .state
            .staged
            .get(key)
            .is_some_and(|s| s.volume_id == id);
        if !published && !staged {
            return Err(CsiError::not_found(format!(
                "volume {id} is neither published nor staged at {key}"
            )));
        }
        if !path.exists() {
            return Err(CsiError::not_found(format!(
                "volume path {key} does not exist"
            )));
        }
        let data = store.layout.volume_path(id, v.block);
        let used = csi_node::allocated_bytes(&data)?;
        let mut usage = Vec::new();
        let condition = if v.block {
            usage.push(VolumeUsage {
                unit: UsageUnit::Bytes,
                total: v.capacity,
                available: v.capacity.saturating_sub(used),
                used,
            });
            if published && !csi_node::is_mount_point(path).unwrap_or(false) {
                VolumeCondition::abnormal(format!("the device is no longer mounted at {key}"))
            } else {
                VolumeCondition::healthy(format!("{used} of {} bytes allocated", v.capacity))
            }
        } else {
            // The volume's own directory, not the path: a path whose mount is gone (the
            // condition below says so) shows the filesystem it lies on, someone else's.
            let fs = csi_node::filesystem_stats(&data)?;
            usage.push(VolumeUsage {
                unit: UsageUnit::Bytes,
                total: v.capacity,
                available: v.capacity.saturating_sub(used).min(fs.bytes_available),
                used,
            });
            usage.push(VolumeUsage {
                unit: UsageUnit::Inodes,
                total: fs.inodes_total,
                available: fs.inodes_free,
                used: fs.inodes_total.saturating_sub(fs.inodes_free),
            });
            if !csi_node::is_mount_point(path).unwrap_or(false) {
                VolumeCondition::abnormal(format!("the volume is no longer mounted at {key}"))
            } else if used > v.capacity {
                VolumeCondition::abnormal(format!(
                    "uses {used} bytes, over its quota of {} bytes",
                    v.capacity
                ))
            } else {
                VolumeCondition::healthy(format!("mounted, {used} of {} bytes used", v.capacity))
            }
        };
        Ok(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition),
        })
    }

    pub fn node_expand_volume(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, CsiError> {
        let id = req.volume_id.as_str();
        let store = self.lock();
        let v = store
            .state
            .volumes
            .get(id)
            .ok_or_else(|| not_found_volume(id))?;
        // Object-bound fields: checked once the volume is known to exist.
        let volume_path = req.volume_path.get()?;
        req.staging_target_path.get()?;
        let key = path_key(&volume_path);
        let key = key.as_str();
        let published = store
            .state
            .published
            .get(key)
            .is_some_and(|p| p.volume_id == id);
        let staged = store
            .state
            .staged
            .get(key)
            .is_some_and(|s| s.volume_id == id);
        if !published && !staged {
            return Err(CsiError::not_found(format!(
                "volume {id} is neither published nor staged at {key}"
            )));
        }
        if let Some(c) = &req.volume_capability
            && let Some(why) = mismatch(c, v.block)
        {
            return Err(CsiError::invalid("volume_capability", why));
        }
        if let Some(r) = &req.capacity_range {
            if r.required_bytes.is_some_and(|b| b > v.capacity) {
                return Err(CsiError::out_of_range(format!(
                    "volume {id} is {} bytes; call ControllerExpandVolume before asking the node for more",
                    v.capacity
                )));
            }
            if r.limit_bytes.is_some_and(|l| l < v.capacity) {
                return Err(CsiError::out_of_range(format!(
                    "volume {id} is already {} bytes, more than limit_bytes",
                    v.capacity
                )));
            }
        }
        if v.block {
            // Every loop device of the volume learns the image's new size; a recorded number
            // that now serves another file (detached behind the plugin's back and attached
            // again by anyone) is not this volume's, and is left alone.
            let image = store.layout.volume_path(id, true);
            for (target, p) in store
                .state
                .published
                .iter()
                .filter(|(_, p)| p.volume_id == id)
            {
                if let Some(dev) = &p.loop_device {
                    own_loop_device(dev, p.loop_diskseq, &image)
                        .ok_or_else(|| {
                            CsiError::internal(format!(
                                "loop device {dev} of volume {id} (published at {target}) no \
                                 longer serves its image; unpublish and publish it again"
                            ))
                        })?
                        .refresh()?;
                }
            }
        }
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: Some(v.capacity),
        })
    }

    pub fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        let mut info = NodeGetInfoResponse::new(self.cfg.node_id.clone());
        if self.cfg.max_volumes_per_node > 0 {
            info = info.with_max_volumes(self.cfg.max_volumes_per_node);
        }
        if !self.cfg.topology.segments().is_empty() {
            info = info.with_topology(self.cfg.topology.clone());
        }
        Ok(info)
    }
}

/// Checks what is at `path`, where the driver is to mount, before anything is made or changed
/// there: a directory (`dir`) for a mount volume, a file for a block volume, or nothing, with
/// (where `parent_given`, as the CO guarantees for `target_path`) its parent directory. A
/// mismatch is FAILED_PRECONDITION naming `field`, the path and the rule, where the system
/// call's `File exists` or `Not a directory` was answered as INTERNAL.
fn check_target_kind(
    field: &str,
    path: &Path,
    dir: bool,
    parent_given: bool,
) -> Result<(), CsiError> {
    let (want, kind) = if dir {
        ("a directory", "mount")
    } else {
        ("a file", "block")
    };
    match fs::metadata(path) {
        Ok(m) if m.is_dir() != dir => Err(CsiError::failed_precondition(format!(
            "{field} {} is {}: a {kind} volume is {} on {want}",
            path.display(),
            if m.is_dir() {
                "a directory"
            } else {
                "not a directory"
            },
            if field.starts_with("staging") {
                "staged"
            } else {
                "published"
            },
        ))),
        Ok(_) => Ok(()),
        Err(_) if parent_given && !path.parent().is_some_and(Path::is_dir) => {
            Err(CsiError::failed_precondition(format!(
                "the parent directory of {field} {} does not exist (the CO makes it; the plugin makes only {field} itself)",
                path.display()
            )))
        }
        Err(_) => Ok(()),
    }
}

/// A loop-device failure as FAILED_PRECONDITION, `what` first; but a `losetup` that hung and was
/// killed ([`csi_node::Error::Timeout`]) keeps its DEADLINE_EXCEEDED, which the CO retries (the
/// device may come back) and which kubelet takes for an uncertain outcome, not a final one.
fn loop_error(what: String, e: csi_node::Error) -> CsiError {
    if matches!(e, csi_node::Error::Timeout { .. }) {
        return e.into();
    }
    CsiError::failed_precondition(format!("{what}: {e}"))
}

/// The loop device at `dev` if it still serves `image` (it may have been detached and its
/// number attached again to another file since) and, where its attachment's disk sequence
/// number `diskseq` was recorded, is still that attachment: the number may serve another
/// publication of the same image since.
fn own_loop_device(dev: &str, diskseq: Option<u64>, image: &Path) -> Option<LoopDevice> {
    let device = match diskseq {
        Some(seq) => LoopDevice::open_attachment(Path::new(dev), seq)?,
        None => LoopDevice::open(Path::new(dev))?,
    };
    device
        .backing_file()
        .is_some_and(|b| fs::canonicalize(image).is_ok_and(|i| i == b) || b == image)
        .then_some(device)
}

/// Detaches a loop device if it still serves `image` (it may have been
/// detached and reused since). A detach that fails is the caller's error: answering OK would
/// tell the CO the volume is released while the device still holds its image. A `losetup`
/// killed at its timeout ([`csi_node::Error::Timeout`]) is DEADLINE_EXCEEDED, which the CO
/// retries; any other failure is INTERNAL naming the device and the image. The caller keeps
/// its record, so that the retry finds the device and detaches it.
fn detach_if_ours(dev: &str, diskseq: Option<u64>, image: &Path) -> Result<(), CsiError> {
    let Some(device) = own_loop_device(dev, diskseq, image) else {
        return Ok(());
    };
    device.detach().map_err(|e| detach_error(dev, image, e))
}

/// A failed detach of the loop device `dev` over `image`: DEADLINE_EXCEEDED for a `losetup`
/// killed at its timeout, which the CO retries; INTERNAL naming the device and the image
/// otherwise.
fn detach_error(dev: &str, image: &Path, e: csi_node::Error) -> CsiError {
    if matches!(e, csi_node::Error::Timeout { .. }) {
        return e.into();
    }
    CsiError::internal(format!(
        "cannot detach loop device {dev} of {}: {e}",
        image.display()
    ))
}

/// Detaches `device` on a path that fails its call anyway (`when` says which), logging a
/// failure at warn with the device and the error: the device then stays attached until the
/// next publish of the volume detaches it (no publication records it).
fn detach_logged(device: &LoopDevice, when: &str) {
    if let Err(e) = device.detach() {
        tracing::warn!(device = %device.path().display(), error = %e,
            "could not detach a loop device {when}; the next publish of the volume detaches it");
    }
}

/// Undoes a publish whose record could not be saved; the target itself is removed only where
/// the publish `created` it.
fn undo_publish(target: &Path, rec: &PublishRec, created: bool) {
    // The bind the publish just made: the top mount, over nothing (the publish refused any
    // other mount there). The call fails with the commit's error either way: what cannot be
    // undone is logged, and a retry unmounts the bind (its own, unrecorded) and detaches the
    // device (no publication records it).
    if let Err(e) = csi_node::unmount(target) {
        tracing::warn!(target = %target.display(), error = %e,
            "could not unmount the bind of a publish whose record was not saved");
    }
    if let Some(dev) = &rec.loop_device
        && let Some(device) = match rec.loop_diskseq {
            Some(seq) => LoopDevice::open_attachment(Path::new(dev), seq),
            None => LoopDevice::open(Path::new(dev)),
        }
    {
        detach_logged(&device, "of a publish whose record was not saved");
    }
    if created {
        let _ = if rec.loop_device.is_some() {
            fs::remove_file(target)
        } else {
            fs::remove_dir(target)
        };
    }
}

/// Unmounts from the publish target `target` the binds of volume `id` a publish makes there: of
/// the staging path `staging` (or the volume's directory `data`) for a mount volume, of one of
/// the image's loop devices (or the image `data` itself) for a block volume, and of the loop
/// device `recorded` for this publication, whatever that number serves now (its node was bound
/// there by this plugin). Anything else mounted there is refused as in [`unmount_own_binds`],
/// and stays.
fn unmount_own_publish_binds(
    id: &str,
    target: &Path,
    block: bool,
    data: &Path,
    staging: &Path,
    recorded: Option<&Path>,
) -> Result<(), CsiError> {
    let (own, whose): (Vec<std::path::PathBuf>, String) = if block {
        (
            LoopDevice::backed_by(data)
                .iter()
                .map(|d| d.path().to_path_buf())
                .chain(recorded.map(Path::to_path_buf))
                .chain([data.to_path_buf()])
                .collect(),
            format!("volume {id}'s image or one of its loop devices"),
        )
    } else {
        (
            vec![staging.to_path_buf(), data.to_path_buf()],
            format!("volume {id}'s staging path {}", staging.display()),
        )
    };
    unmount_own_binds("target_path", target, &own, &whose)
}

/// Unmounts from `path` (given as `field`) the binds of one of the volume's own files `own`
/// (`whose` describes them in the error) that are stacked there, top first: what a crash
/// between a mount and the record of it leaves, or a publish or stage being undone. A bind is
/// known for ours by what it shows ([`csi_node::unmount_own`]), one
/// of `own` itself (same device and inode), not by its path. Any other mount there (another
/// driver's volume, a tmpfs an operator mounted) is FAILED_PRECONDITION naming the field, the
/// path and what is mounted on it, and stays mounted.
fn unmount_own_binds(
    field: &str,
    path: &Path,
    own: &[std::path::PathBuf],
    whose: &str,
) -> Result<(), CsiError> {
    match csi_node::unmount_own(path, own) {
        Ok(_) => Ok(()),
        Err(csi_node::Error::ForeignMount { mounted, .. }) => {
            Err(CsiError::failed_precondition(format!(
                "{field} {} has {mounted} mounted on it, which is not {whose} and which this \
                 plugin did not mount; unmount it or use another path",
                path.display()
            )))
        }
        Err(e) => Err(e.into()),
    }
}
