//! Controller and GroupController behaviour over a real unix socket.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use csi_types::{
    Code, Csi,
    capabilities::{ControllerCapabilities, PluginCapabilities},
    controller::{
        ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest,
        ControllerGetVolumeRequest, ControllerModifyVolumeRequest, ControllerPublishVolumeRequest,
        ControllerUnpublishVolumeRequest, CreateSnapshotRequest, DeleteSnapshotRequest,
        DeleteVolumeRequest, GetCapacityRequest, GetSnapshotRequest, ListSnapshotsRequest,
        ListVolumesRequest, ValidateVolumeCapabilitiesRequest,
    },
    group_controller::{
        CreateVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotRequest,
        GetVolumeGroupSnapshotRequest,
    },
    identity::GetPluginCapabilitiesRequest,
    ids::{GroupSnapshotName, NodeId, SnapshotId, SnapshotName, VolumeId},
    redact::Secrets,
    types::{
        AccessMode, CapacityRange, Map, Topology, TopologyRequirement, VolumeCapability,
        VolumeContentSource,
    },
};

fn del(id: &VolumeId) -> DeleteVolumeRequest {
    DeleteVolumeRequest {
        volume_id: id.clone(),
        secrets: Secrets::default(),
    }
}

fn snap_req(vol: &VolumeId, name: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        source_volume_id: vol.clone(),
        name: SnapshotName::new(name).unwrap(),
        secrets: Secrets::default(),
        parameters: Map::new(),
    }
}

fn cpub(vol: &VolumeId, node: &str, readonly: bool) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.clone(),
        node_id: NodeId::new(node).unwrap(),
        volume_capability: VolumeCapability::mount(AccessMode::SingleNodeWriter),
        readonly,
        secrets: Secrets::default(),
        volume_context: Map::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_follow_what_is_implemented() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let caps = c
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap();
    for cap in [
        ControllerCapabilities::CREATE_DELETE_VOLUME,
        ControllerCapabilities::PUBLISH_UNPUBLISH_VOLUME,
        ControllerCapabilities::LIST_VOLUMES,
        ControllerCapabilities::GET_CAPACITY,
        ControllerCapabilities::CREATE_DELETE_SNAPSHOT,
        ControllerCapabilities::LIST_SNAPSHOTS,
        ControllerCapabilities::GET_SNAPSHOT,
        ControllerCapabilities::CLONE_VOLUME,
        ControllerCapabilities::EXPAND_VOLUME,
        ControllerCapabilities::GET_VOLUME,
        ControllerCapabilities::MODIFY_VOLUME,
        ControllerCapabilities::VOLUME_CONDITION,
        ControllerCapabilities::LIST_VOLUMES_PUBLISHED_NODES,
    ] {
        assert!(caps.capabilities.contains(cap), "{cap:?} missing");
    }
    let p = c
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap();
    assert!(p.capabilities.contains(
        PluginCapabilities::CONTROLLER_SERVICE
            | PluginCapabilities::GROUP_CONTROLLER_SERVICE
            | PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS
            | PluginCapabilities::VOLUME_EXPANSION_ONLINE
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_is_idempotent_by_name_and_refuses_incompatible_duplicates() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let a = c
        .create_volume(mount_req("a", 8 * MIB))
        .await
        .unwrap()
        .volume;
    assert_eq!(a.capacity_bytes, 8 * MIB);
    assert!(local::volume_data_path(&s.state_dir(), a.volume_id.as_str(), false).is_dir());
    assert_eq!(
        c.create_volume(mount_req("a", 8 * MIB))
            .await
            .unwrap()
            .volume,
        a
    );
    // Larger than the existing volume, or another access type: incompatible.
    assert_eq!(
        code(c.create_volume(mount_req("a", 16 * MIB)).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(c.create_volume(block_req("a", 8 * MIB)).await),
        Code::AlreadyExists
    );
    // Mixed block and mount capabilities cannot be one volume.
    let mut mixed = mount_req("m", MIB);
    mixed
        .volume_capabilities
        .push(VolumeCapability::block(AccessMode::SingleNodeWriter));
    assert_eq!(code(c.create_volume(mixed).await), Code::InvalidArgument);
    // Unknown parameters and mutable parameters are refused, naming the key.
    let mut p = mount_req("p", MIB);
    p.parameters.insert("fstype".into(), "xfs".into());
    let e = c.create_volume(p).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("parameters[\"fstype\"]"), "{e}");
    let mut m = mount_req("m2", MIB);
    m.mutable_parameters
        .insert("iops-class".into(), "warp".into());
    assert_eq!(code(c.create_volume(m).await), Code::InvalidArgument);
    // Nothing of the refused calls was created.
    let all = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert_eq!(all.entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_flags_that_contradict_each_other_are_refused_at_create() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let with_flags = |name: &str, flags: &[&str]| {
        let mut r = mount_req(name, MIB);
        if let csi_types::types::AccessType::Mount(m) = &mut r.volume_capabilities[0].access_type {
            m.mount_flags = flags.iter().map(|f| f.to_string()).collect();
        }
        r
    };
    // Accepted, a publish would have bind-mounted read-only or read-write as it pleased.
    for flags in [
        &["ro", "rw"][..],
        &["noatime,relatime"],
        &["nosuid", "suid"],
    ] {
        let e = c.create_volume(with_flags("x", flags)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{flags:?}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("volume_capabilities[0].mount.mount_flags"),
            "{msg}"
        );
        assert!(msg.contains("contradicts"), "{msg}");
    }
    // The same flag twice is fine.
    c.create_volume(with_flags("y", &["ro", "noatime,ro"]))
        .await
        .unwrap();
    let all = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert_eq!(all.entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_is_accounted_and_enforced() {
    let s = Served::start(|c| c.capacity = 64 * MIB).await;
    let c = &s.client;
    let cap = c.get_capacity(GetCapacityRequest::default()).await.unwrap();
    assert_eq!(cap.available_capacity, 64 * MIB);
    assert_eq!(cap.maximum_volume_size, Some(64 * MIB));

    let v = c
        .create_volume(mount_req("a", 40 * MIB))
        .await
        .unwrap()
        .volume;
    let cap = c.get_capacity(GetCapacityRequest::default()).await.unwrap();
    assert_eq!(cap.available_capacity, 24 * MIB);
    // Fits the driver but not what is left: RESOURCE_EXHAUSTED.
    assert_eq!(
        code(c.create_volume(mount_req("b", 32 * MIB)).await),
        Code::ResourceExhausted
    );
    // Larger than the whole driver, or a range no size satisfies: OUT_OF_RANGE.
    assert_eq!(
        code(c.create_volume(mount_req("c", 128 * MIB)).await),
        Code::OutOfRange
    );
    let mut odd = mount_req("d", 1000);
    odd.capacity_range = Some(CapacityRange::new(Some(1000), Some(2000)).unwrap());
    assert_eq!(code(c.create_volume(odd).await), Code::OutOfRange);
    // A snapshot takes space too.
    assert_eq!(
        code(c.create_snapshot(snap_req(&v.volume_id, "s1")).await),
        Code::ResourceExhausted
    );
    // Another topology has no capacity here.
    let elsewhere = GetCapacityRequest {
        accessible_topology: Some(
            Topology::new([("topology.local.csi.example.com/node", "other")]).unwrap(),
        ),
        ..Default::default()
    };
    assert_eq!(
        c.get_capacity(elsewhere).await.unwrap().available_capacity,
        0
    );
    c.delete_volume(del(&v.volume_id)).await.unwrap();
    c.delete_volume(del(&v.volume_id)).await.unwrap();
    let cap = c.get_capacity(GetCapacityRequest::default()).await.unwrap();
    assert_eq!(cap.available_capacity, 64 * MIB);
    gone(&local::volume_data_path(
        &s.state_dir(),
        v.volume_id.as_str(),
        false,
    ))
    .await;
}

/// A deletion is answered once its record is durable; its directory is
/// checked and kept for reuse (or removed) after the answer. A name created
/// again right away gets a fresh, empty volume each time, and what is kept
/// for reuse is only empty directories as a new volume's, each given once.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_created_again_right_after_its_deletion_gets_a_fresh_empty_volume() {
    use std::os::unix::fs::PermissionsExt;
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let state = s.state_dir();
    let path = |id: &VolumeId| local::volume_data_path(&state, id.as_str(), false);
    let empty_0777 = |p: &std::path::Path| {
        fs::read_dir(p).unwrap().next().is_none()
            && fs::metadata(p).unwrap().permissions().mode() & 0o7777 == 0o777
    };
    let mut ids = BTreeSet::new();
    for round in 0..40 {
        let v = c
            .create_volume(mount_req("again", MIB))
            .await
            .unwrap()
            .volume;
        assert!(ids.insert(v.volume_id.clone()), "a fresh volume each time");
        assert!(empty_0777(&path(&v.volume_id)), "round {round}: as new");
        // Every other volume gets data: its directory is never reused.
        if round % 2 == 0 {
            fs::write(path(&v.volume_id).join("f"), b"data").unwrap();
        }
        c.delete_volume(del(&v.volume_id)).await.unwrap();
        let again = c
            .create_volume(mount_req("again", MIB))
            .await
            .unwrap()
            .volume;
        assert_ne!(again.volume_id, v.volume_id);
        assert!(ids.insert(again.volume_id.clone()));
        assert!(empty_0777(&path(&again.volume_id)), "round {round}: as new");
        c.delete_volume(del(&again.volume_id)).await.unwrap();
    }
    for id in &ids {
        gone(&path(id)).await;
    }
    let kept = || -> Vec<std::path::PathBuf> {
        fs::read_dir(state.join("free"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let before = kept();
    assert!(!before.is_empty(), "the last empty directories are kept");
    assert!(before.len() <= 60, "only empty ones: {}", before.len());
    assert!(before.iter().all(|p| empty_0777(p)));
    // A new volume takes one of them.
    let v = c
        .create_volume(mount_req("last", MIB))
        .await
        .unwrap()
        .volume;
    assert!(empty_0777(&path(&v.volume_id)));
    assert_eq!(kept().len(), before.len() - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_requirements_are_honoured() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let here = Topology::new([("topology.local.csi.example.com/node", "node-1")]).unwrap();
    let there = Topology::new([("topology.local.csi.example.com/node", "node-2")]).unwrap();
    let mut r = mount_req("t", MIB);
    r.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![there.clone()],
        preferred: vec![],
    });
    assert_eq!(
        code(c.create_volume(r.clone()).await),
        Code::ResourceExhausted
    );
    r.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![there, here.clone()],
        preferred: vec![],
    });
    let v = c.create_volume(r).await.unwrap().volume;
    assert_eq!(v.accessible_topology, vec![here]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_covers_everything_once_under_concurrent_changes() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            c.create_volume(mount_req(&format!("v{i:02}"), MIB))
                .await
                .unwrap()
                .volume
                .volume_id,
        );
    }
    // Page through 5 at a time while volumes are deleted and created between pages.
    let mut seen = Vec::new();
    let mut token = None;
    let mut round = 0;
    loop {
        let page = c
            .list_volumes(ListVolumesRequest {
                max_entries: Some(5),
                starting_token: token.clone(),
            })
            .await
            .unwrap();
        assert!(page.entries.len() <= 5);
        seen.extend(page.entries.iter().map(|e| e.volume.volume_id.clone()));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
        // A listed volume and an unlisted one go; a new one comes.
        c.delete_volume(del(&ids[round])).await.unwrap();
        c.delete_volume(del(&ids[11 - round])).await.unwrap();
        c.create_volume(mount_req(&format!("new{round}"), MIB))
            .await
            .unwrap();
        round += 1;
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no volume is listed twice");
    // Every volume that existed throughout the listing was listed.
    let deleted: BTreeSet<_> = (0..round)
        .flat_map(|r| [ids[r].clone(), ids[11 - r].clone()])
        .collect();
    for id in ids.iter().filter(|i| !deleted.contains(*i)) {
        assert!(unique.contains(id), "{id} was skipped");
    }
    // Forged or foreign tokens abort.
    for bad in ["nonsense", "00.00000000", "7a.12345678"] {
        let r = c
            .list_volumes(ListVolumesRequest {
                max_entries: None,
                starting_token: Some(bad.into()),
            })
            .await;
        assert_eq!(code(r), Code::Aborted, "{bad}");
    }
    // Without max_entries everything comes in one page.
    let all = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert!(all.next_token.is_none());
    assert_eq!(all.entries.len(), 12 - 2 * round + round);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_volume_reports_publications_and_a_real_condition() {
    let s = Served::start(|c| c.max_volumes_per_node = 2).await;
    let c = &s.client;
    let v = c
        .create_volume(mount_req("a", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let get = || {
        c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.clone(),
        })
    };
    let st = get().await.unwrap().status;
    assert!(st.published_node_ids.is_empty());
    assert!(!st.volume_condition.unwrap().abnormal);

    // Publish to the node; wrong node is NOT_FOUND; same args again is fine,
    // other args ALREADY_EXISTS.
    c.controller_publish_volume(cpub(&v, "node-1", false))
        .await
        .unwrap();
    c.controller_publish_volume(cpub(&v, "node-1", false))
        .await
        .unwrap();
    assert_eq!(
        code(c.controller_publish_volume(cpub(&v, "node-1", true)).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(c.controller_publish_volume(cpub(&v, "node-9", false)).await),
        Code::NotFound
    );
    let missing = VolumeId::new("vol-nope").unwrap();
    assert_eq!(
        code(
            c.controller_publish_volume(cpub(&missing, "node-1", false))
                .await
        ),
        Code::NotFound
    );
    let st = get().await.unwrap().status;
    assert_eq!(st.published_node_ids, vec![NodeId::new("node-1").unwrap()]);
    let listed = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert_eq!(
        listed.entries[0]
            .status
            .as_ref()
            .unwrap()
            .published_node_ids
            .len(),
        1
    );
    // Published volumes cannot be deleted.
    assert_eq!(
        code(c.delete_volume(del(&v)).await),
        Code::FailedPrecondition
    );

    // The attach limit.
    let w = c
        .create_volume(mount_req("b", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let x = c
        .create_volume(mount_req("c", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    c.controller_publish_volume(cpub(&w, "node-1", false))
        .await
        .unwrap();
    assert_eq!(
        code(c.controller_publish_volume(cpub(&x, "node-1", false)).await),
        Code::ResourceExhausted
    );
    let unpub = |id: &VolumeId| ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        node_id: Some(NodeId::new("node-1").unwrap()),
        secrets: Secrets::default(),
    };
    c.controller_unpublish_volume(unpub(&w)).await.unwrap();
    c.controller_unpublish_volume(unpub(&w)).await.unwrap();
    c.controller_publish_volume(cpub(&x, "node-1", false))
        .await
        .unwrap();

    // Take the data away: the condition turns abnormal and says why.
    fs::remove_dir_all(local::volume_data_path(&s.state_dir(), v.as_str(), false)).unwrap();
    let cond = get().await.unwrap().status.volume_condition.unwrap();
    assert!(cond.abnormal);
    assert!(cond.message.contains("missing"), "{}", cond.message);
    assert_eq!(
        code(
            c.controller_get_volume(ControllerGetVolumeRequest { volume_id: missing })
                .await
        ),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_volume_capabilities() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = c
        .create_volume(mount_req("a", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let check = |cap: VolumeCapability, id: &VolumeId| ValidateVolumeCapabilitiesRequest {
        volume_id: id.clone(),
        volume_context: Map::new(),
        volume_capabilities: vec![cap],
        parameters: Map::new(),
        secrets: Secrets::default(),
        mutable_parameters: Map::new(),
    };
    let ok = c
        .validate_volume_capabilities(check(
            VolumeCapability::mount(AccessMode::SingleNodeReaderOnly),
            &v,
        ))
        .await
        .unwrap();
    assert!(ok.confirmed.is_some());
    let no = c
        .validate_volume_capabilities(check(
            VolumeCapability::block(AccessMode::SingleNodeWriter),
            &v,
        ))
        .await
        .unwrap();
    assert!(no.confirmed.is_none());
    assert!(no.message.contains("not a block volume"), "{}", no.message);
    let missing = VolumeId::new("vol-nope").unwrap();
    let r = c
        .validate_volume_capabilities(check(
            VolumeCapability::mount(AccessMode::SingleNodeWriter),
            &missing,
        ))
        .await;
    assert_eq!(code(r), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_and_clones_copy_the_data() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = c
        .create_volume(mount_req("src", 4 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let vdir = local::volume_data_path(&s.state_dir(), v.as_str(), false);
    fs::create_dir(vdir.join("sub")).unwrap();
    fs::write(vdir.join("sub/file"), b"version 1").unwrap();

    let snap = c
        .create_snapshot(snap_req(&v, "s1"))
        .await
        .unwrap()
        .snapshot;
    assert!(snap.ready_to_use);
    assert_eq!(snap.size_bytes, 4 * MIB);
    assert_eq!(
        c.create_snapshot(snap_req(&v, "s1"))
            .await
            .unwrap()
            .snapshot,
        snap
    );
    // Changing the volume afterwards does not change the snapshot.
    fs::write(vdir.join("sub/file"), b"version 2").unwrap();

    let restored = c
        .create_volume(from(
            mount_req("restored", 4 * MIB),
            VolumeContentSource::Snapshot(snap.snapshot_id.clone()),
        ))
        .await
        .unwrap()
        .volume;
    assert_eq!(
        restored.content_source,
        Some(VolumeContentSource::Snapshot(snap.snapshot_id.clone()))
    );
    let rdir = local::volume_data_path(&s.state_dir(), restored.volume_id.as_str(), false);
    assert_eq!(fs::read(rdir.join("sub/file")).unwrap(), b"version 1");

    let cloned = c
        .create_volume(from(
            mount_req("cloned", 4 * MIB),
            VolumeContentSource::Volume(v.clone()),
        ))
        .await
        .unwrap()
        .volume;
    let cdir = local::volume_data_path(&s.state_dir(), cloned.volume_id.as_str(), false);
    assert_eq!(fs::read(cdir.join("sub/file")).unwrap(), b"version 2");

    // Sources that do not exist, do not fit, or are of another kind.
    let nosnap = SnapshotId::new("snap-nope").unwrap();
    let r = c
        .create_volume(from(
            mount_req("x", MIB * 4),
            VolumeContentSource::Snapshot(nosnap.clone()),
        ))
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .create_volume(from(
            mount_req("x", MIB),
            VolumeContentSource::Snapshot(snap.snapshot_id.clone()),
        ))
        .await;
    assert_eq!(code(r), Code::OutOfRange);
    let r = c
        .create_volume(from(
            block_req("x", MIB * 4),
            VolumeContentSource::Volume(v.clone()),
        ))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    // Same snapshot name for another volume.
    assert_eq!(
        code(c.create_snapshot(snap_req(&restored.volume_id, "s1")).await),
        Code::AlreadyExists
    );

    // Block volumes: the image is copied, holes and all.
    let b = c
        .create_volume(block_req("blk", 8 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let img = local::volume_data_path(&s.state_dir(), b.as_str(), true);
    assert_eq!(fs::metadata(&img).unwrap().len(), 8 * MIB);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(5 * MIB)).unwrap();
        f.write_all(b"block!").unwrap();
    }
    let bs = c
        .create_snapshot(snap_req(&b, "bs"))
        .await
        .unwrap()
        .snapshot;
    let bclone = c
        .create_volume(from(
            block_req("blk2", 16 * MIB),
            VolumeContentSource::Snapshot(bs.snapshot_id.clone()),
        ))
        .await
        .unwrap()
        .volume;
    let img2 = local::volume_data_path(&s.state_dir(), bclone.volume_id.as_str(), true);
    let data = fs::read(&img2).unwrap();
    assert_eq!(data.len() as u64, 16 * MIB);
    assert_eq!(&data[5 * MIB as usize..5 * MIB as usize + 6], b"block!");

    // List with filters and pages.
    let all = c
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap();
    assert_eq!(all.entries.len(), 2);
    let of_b = c
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: Some(b.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_b.entries
            .iter()
            .map(|e| &e.snapshot_id)
            .collect::<Vec<_>>(),
        vec![&bs.snapshot_id]
    );
    let one = c
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: Some(snap.snapshot_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.entries, vec![snap.clone()]);
    let none = c
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: Some(nosnap.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    let p1 = c
        .list_snapshots(ListSnapshotsRequest {
            max_entries: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(p1.entries.len(), 1);
    let p2 = c
        .list_snapshots(ListSnapshotsRequest {
            max_entries: Some(1),
            starting_token: p1.next_token,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(p2.entries.len(), 1);
    assert_ne!(p1.entries[0], p2.entries[0]);
    assert!(p2.next_token.is_none());
    let bad = c
        .list_snapshots(ListSnapshotsRequest {
            starting_token: Some("junk".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad), Code::Aborted);

    assert_eq!(
        c.get_snapshot(GetSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            secrets: Secrets::default()
        })
        .await
        .unwrap()
        .snapshot,
        snap
    );
    let d = DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        secrets: Secrets::default(),
    };
    c.delete_snapshot(d.clone()).await.unwrap();
    c.delete_snapshot(d).await.unwrap();
    let r = c
        .get_snapshot(GetSnapshotRequest {
            snapshot_id: snap.snapshot_id,
            secrets: Secrets::default(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn group_snapshots() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let a = c
        .create_volume(mount_req("a", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let b = c
        .create_volume(block_req("b", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    fs::write(
        local::volume_data_path(&s.state_dir(), a.as_str(), false).join("f"),
        b"in a",
    )
    .unwrap();
    let create = |vols: Vec<VolumeId>| CreateVolumeGroupSnapshotRequest {
        name: GroupSnapshotName::new("g").unwrap(),
        source_volume_ids: vols,
        secrets: Secrets::default(),
        parameters: Map::new(),
    };
    let g = c
        .create_volume_group_snapshot(create(vec![a.clone(), b.clone()]))
        .await
        .unwrap()
        .group_snapshot;
    assert_eq!(g.snapshots.len(), 2);
    assert!(
        g.snapshots
            .iter()
            .all(|m| m.group_snapshot_id.as_ref() == Some(&g.group_snapshot_id))
    );
    let again = c
        .create_volume_group_snapshot(create(vec![b.clone(), a.clone()]))
        .await
        .unwrap()
        .group_snapshot;
    assert_eq!(again, g);
    assert_eq!(
        code(
            c.create_volume_group_snapshot(create(vec![a.clone()]))
                .await
        ),
        Code::AlreadyExists
    );
    // The member of `a` holds its data; a volume restored from it has it.
    let member = g
        .snapshots
        .iter()
        .find(|m| m.source_volume_id == a)
        .unwrap()
        .snapshot_id
        .clone();
    let r = c
        .create_volume(from(
            mount_req("r", MIB),
            VolumeContentSource::Snapshot(member.clone()),
        ))
        .await
        .unwrap();
    let rdir = local::volume_data_path(&s.state_dir(), r.volume.volume_id.as_str(), false);
    assert_eq!(fs::read(rdir.join("f")).unwrap(), b"in a");
    // Members are deleted with their group only.
    let r = c
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: member.clone(),
            secrets: Secrets::default(),
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let ids: Vec<SnapshotId> = g.snapshots.iter().map(|m| m.snapshot_id.clone()).collect();
    let get = |ids: Vec<SnapshotId>| GetVolumeGroupSnapshotRequest {
        group_snapshot_id: g.group_snapshot_id.clone(),
        snapshot_ids: ids.into(),
        secrets: Secrets::default(),
    };
    assert_eq!(
        c.get_volume_group_snapshot(get(ids.clone()))
            .await
            .unwrap()
            .group_snapshot,
        g
    );
    assert_eq!(
        code(c.get_volume_group_snapshot(get(vec![member.clone()])).await),
        Code::InvalidArgument
    );
    let delete = |ids: Vec<SnapshotId>| DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: g.group_snapshot_id.clone(),
        snapshot_ids: ids.into(),
        secrets: Secrets::default(),
    };
    assert_eq!(
        code(c.delete_volume_group_snapshot(delete(vec![member])).await),
        Code::InvalidArgument
    );
    c.delete_volume_group_snapshot(delete(ids.clone()))
        .await
        .unwrap();
    c.delete_volume_group_snapshot(delete(ids.clone()))
        .await
        .unwrap();
    assert_eq!(
        code(c.get_volume_group_snapshot(get(ids)).await),
        Code::NotFound
    );
    assert!(
        c.list_snapshots(ListSnapshotsRequest::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    let missing = VolumeId::new("vol-nope").unwrap();
    let mut r = create(vec![a, missing]);
    r.name = GroupSnapshotName::new("g2").unwrap();
    assert_eq!(
        code(c.create_volume_group_snapshot(r).await),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expand_and_modify() {
    let s = Served::start(|c| c.capacity = 64 * MIB).await;
    let c = &s.client;
    let v = c
        .create_volume(block_req("b", 4 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let expand = |bytes: u64| ControllerExpandVolumeRequest {
        volume_id: v.clone(),
        capacity_range: CapacityRange {
            required_bytes: Some(bytes),
            limit_bytes: None,
        },
        secrets: Secrets::default(),
        volume_capability: None,
    };
    let r = c.controller_expand_volume(expand(8 * MIB)).await.unwrap();
    assert_eq!(r.capacity_bytes, 8 * MIB);
    assert!(
        r.node_expansion_required,
        "a loop device must re-read the size"
    );
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    assert_eq!(fs::metadata(&img).unwrap().len(), 8 * MIB);
    // Asking again, or for less, is idempotent; volumes do not shrink below a limit.
    assert_eq!(
        c.controller_expand_volume(expand(8 * MIB))
            .await
            .unwrap()
            .capacity_bytes,
        8 * MIB
    );
    assert_eq!(
        c.controller_expand_volume(expand(MIB))
            .await
            .unwrap()
            .capacity_bytes,
        8 * MIB
    );
    let mut shrink = expand(MIB);
    shrink.capacity_range.limit_bytes = Some(2 * MIB);
    assert_eq!(
        code(c.controller_expand_volume(shrink).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(c.controller_expand_volume(expand(128 * MIB)).await),
        Code::OutOfRange
    );
    let mut wrong = expand(16 * MIB);
    wrong.volume_capability = Some(VolumeCapability::mount(AccessMode::SingleNodeWriter));
    assert_eq!(
        code(c.controller_expand_volume(wrong).await),
        Code::InvalidArgument
    );
    assert_eq!(
        c.get_capacity(GetCapacityRequest::default())
            .await
            .unwrap()
            .available_capacity,
        56 * MIB
    );

    let modify = |k: &str, val: &str| ControllerModifyVolumeRequest {
        volume_id: v.clone(),
        secrets: Secrets::default(),
        mutable_parameters: [(k.to_string(), val.to_string())].into(),
    };
    c.controller_modify_volume(modify("iops-class", "high"))
        .await
        .unwrap();
    c.controller_modify_volume(modify("label", "fast disk"))
        .await
        .unwrap();
    let vol = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.clone(),
        })
        .await
        .unwrap()
        .volume;
    assert_eq!(
        vol.volume_context.get("iops-class").map(String::as_str),
        Some("high")
    );
    assert_eq!(
        vol.volume_context.get("label").map(String::as_str),
        Some("fast disk")
    );
    let e = c
        .controller_modify_volume(modify("size", "1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.to_string().contains("mutable_parameters[\"size\"]"),
        "{e}"
    );
    assert_eq!(
        code(
            c.controller_modify_volume(modify("iops-class", "ludicrous"))
                .await
        ),
        Code::InvalidArgument
    );
    let mut missing = modify("label", "x");
    missing.volume_id = VolumeId::new("vol-nope").unwrap();
    assert_eq!(
        code(c.controller_modify_volume(missing).await),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_a_restart() {
    let s = Served::start(|_| {}).await;
    let v = s
        .client
        .create_volume(mount_req("keep", MIB))
        .await
        .unwrap()
        .volume;
    let snap = s
        .client
        .create_snapshot(snap_req(&v.volume_id, "keep-snap"))
        .await
        .unwrap()
        .snapshot;
    s.client
        .controller_publish_volume(cpub(&v.volume_id, "node-1", false))
        .await
        .unwrap();
    let dir = s.stop().await;
    let cfg = local::Config::with_state_dir(dir.path().join("state"));
    let s = Served::start_in(dir, cfg).await;
    let c = &s.client;
    let got = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got.volume, v);
    assert_eq!(got.status.published_node_ids.len(), 1);
    assert_eq!(
        c.get_snapshot(GetSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            secrets: Secrets::default()
        })
        .await
        .unwrap()
        .snapshot,
        snap
    );
    // Ids keep growing after a restart: a new volume does not reuse one.
    let w = c.create_volume(mount_req("new", MIB)).await.unwrap().volume;
    let num = |id: &str| id.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    assert!(num(w.volume_id.as_str()) > num(snap.snapshot_id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_the_drivers_own_state_holds_that_csi_refuses_answers_internal() {
    // The driver's state names a volume and a snapshot by ids longer than CSI allows (a
    // state directory edited by hand, or written by a build with other rules): the driver's
    // own bug to report, not the CO's request to blame.
    let s = Served::start(|_| {}).await;
    let v = new_volume(&s.client, mount_req("v", MIB)).await;
    s.client.create_snapshot(snap_req(&v, "s")).await.unwrap();
    let restart = |s: Served| async move {
        let dir = s.stop().await;
        let cfg = local::Config::with_state_dir(dir.path().join("state"));
        Served::start_in(dir, cfg).await
    };
    // A restart saves the state as replayed, whole, in state.json.
    let s = restart(s).await;
    let file = s.state_dir().join("state.json");
    let dir = s.stop().await;
    let mut state: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    for table in ["volumes", "snapshots"] {
        let entries = state[table].as_object_mut().unwrap();
        let (id, rec) = entries
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap();
        entries.remove(&id);
        entries.insert("x".repeat(129), rec);
    }
    fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    let cfg = local::Config::with_state_dir(dir.path().join("state"));
    let s = Served::start_in(dir, cfg).await;

    let e = s
        .client
        .list_volumes(ListVolumesRequest {
            max_entries: None,
            starting_token: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("invalid Volume built by the driver: volume_id: must be at most 128 bytes"),
        "{msg}"
    );

    let e = s
        .client
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(
            "invalid Snapshot built by the driver: snapshot_id: must be at most 128 bytes"
        ),
        "{msg}"
    );
}
