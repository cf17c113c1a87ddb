//! Node behaviour over a real unix socket, with real bind mounts and loop
//! devices. The mount tests need root; they print why and pass without
//! checking anything when run as another user.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use csi_types::{
    Code, Csi,
    capabilities::NodeCapabilities,
    controller::{ControllerExpandVolumeRequest, DeleteVolumeRequest},
    ids::{NodePath, VolumeId},
    node::{
        NodeExpandVolumeRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest,
        NodeGetVolumeStatsRequest, UsageUnit,
    },
    redact::Secrets,
    types::{AccessMode, AccessType, CapacityRange, VolumeCapability},
};

/// Whether something is mounted on `p`, from csi-node's reading of the mount table: byte for
/// byte, with the kernel's escapes of space, tab, newline and backslash undone, and a mount
/// point elsewhere on the host whose path is not UTF-8 (the csi-node tests make one) spoils
/// nothing.
fn is_mounted(p: &Path) -> bool {
    let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    csi_node::mount_table()
        .unwrap()
        .iter()
        .any(|m| m.mount_point == p)
}

fn stats(v: &VolumeId, p: &NodePath) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: v.clone(),
        volume_path: p.clone().into(),
        staging_target_path: None.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_info_and_capabilities() {
    let s = Served::start(|c| c.max_volumes_per_node = 7).await;
    let info = s.client.node_get_info(NodeGetInfoRequest {}).await.unwrap();
    assert_eq!(info.node_id.as_str(), "node-1");
    assert_eq!(info.max_volumes_per_node, Some(7));
    let topo = info.accessible_topology.unwrap();
    assert_eq!(
        topo.get("topology.local.csi.example.com/node"),
        Some("node-1")
    );
    let caps = s
        .client
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .capabilities;
    assert!(caps.contains(
        NodeCapabilities::STAGE_UNSTAGE_VOLUME
            | NodeCapabilities::GET_VOLUME_STATS
            | NodeCapabilities::EXPAND_VOLUME
            | NodeCapabilities::VOLUME_CONDITION
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn node_errors_that_need_no_mount() {
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let missing = VolumeId::new("vol-nope").unwrap();
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let (staging, target) = (s.path("staging"), s.path("target"));
    assert_eq!(
        code(c.node_stage_volume(stage(&missing, &staging, &cap)).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.node_publish_volume(publish(&missing, Some(&staging), &target, &cap, false))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(c.node_unpublish_volume(unpublish(&missing, &target)).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.node_unstage_volume(unstage(&missing, &staging)).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.node_get_volume_stats(stats(&missing, &target)).await),
        Code::NotFound
    );
    let v = c
        .create_volume(mount_req("v", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    // Not staged, no staging path, wrong access type.
    assert_eq!(
        code(
            c.node_publish_volume(publish(&v, None, &target, &cap, false))
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
                .await
        ),
        Code::FailedPrecondition
    );
    let block = VolumeCapability::block(AccessMode::SingleNodeWriter);
    assert_eq!(
        code(c.node_stage_volume(stage(&v, &staging, &block)).await),
        Code::FailedPrecondition
    );
    // A mount flag a bind cannot apply is a bad field, not a capability the volume lacks: it
    // is refused naming the field, before the volume's state is looked at.
    let mut bad = cap.clone();
    if let csi_types::types::AccessType::Mount(m) = &mut bad.access_type {
        m.mount_flags = vec!["discard".into()];
    }
    let e = c
        .node_stage_volume(stage(&v, &staging, &bad))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.to_string()
            .contains("volume_capability.mount.mount_flags"),
        "{e}"
    );
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &bad, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.to_string()
            .contains("volume_capability.mount.mount_flags"),
        "{e}"
    );
    // Unpublishing or unstaging what is not there succeeds.
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    // Stats of a volume that is not at the path.
    assert_eq!(
        code(c.node_get_volume_stats(stats(&v, &target)).await),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_of_the_wrong_kind_is_refused_naming_the_field_and_left_as_it_was() {
    if !can_mount("a_path_of_the_wrong_kind_is_refused_naming_the_field") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let m = new_volume(c, mount_req("m", MIB)).await;
    let b = new_volume(c, block_req("b", MIB)).await;
    let (mcap, bcap) = (
        VolumeCapability::mount(AccessMode::SingleNodeWriter),
        VolumeCapability::block(AccessMode::SingleNodeWriter),
    );
    // A staging path that is a file.
    let file = s.path("a-file");
    fs::write(file.as_path(), b"kept").unwrap();
    let e = c
        .node_stage_volume(stage(&m, &file, &mcap))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("staging_target_path"), "{e}");
    assert!(e.to_string().contains("not a directory"), "{e}");
    let (mst, bst) = (s.path("mst"), s.path("bst"));
    c.node_stage_volume(stage(&m, &mst, &mcap)).await.unwrap();
    if !stage_block(c, &b, &bst, &bcap).await {
        return;
    }
    // A mount volume's target that is a file, a block volume's that is a directory, a target
    // whose parent is missing: each named, with the rule, and nothing changed.
    let dir = s.path("a-dir");
    fs::create_dir(dir.as_path()).unwrap();
    let orphan = s.path("no-parent/target");
    for (v, staging, target, cap, words) in [
        (
            &m,
            &mst,
            &file,
            &mcap,
            "is not a directory: a mount volume is published on a directory",
        ),
        (
            &b,
            &bst,
            &dir,
            &bcap,
            "is a directory: a block volume is published on a file",
        ),
        (&m, &mst, &orphan, &mcap, "parent directory of target_path"),
    ] {
        let e = c
            .node_publish_volume(publish(v, Some(staging), target, cap, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(words), "{msg}");
        assert!(msg.contains(target.as_str()), "{msg}");
    }
    assert_eq!(fs::read(file.as_path()).unwrap(), b"kept");
    assert!(dir.as_path().is_dir());
    assert!(!orphan.as_path().parent().unwrap().exists());
    let img = local::volume_data_path(&s.state_dir(), b.as_str(), true);
    assert!(eventually(|| loops_of(&img) == 0), "a loop device was left");
    // Only the mount volume's staging mount is there (a block volume stages without one).
    let mut mounts = csi_node::mounts_under(s.dir.path()).unwrap();
    mounts.sort();
    assert_eq!(mounts, [fs::canonicalize(mst.as_path()).unwrap()]);
    c.node_unstage_volume(unstage(&m, &mst)).await.unwrap();
    c.node_unstage_volume(unstage(&b, &bst)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_volume_life_cycle_with_real_bind_mounts() {
    if !can_mount("mount_volume_life_cycle_with_real_bind_mounts") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = c
        .create_volume(mount_req("v", 8 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let data = local::volume_data_path(&s.state_dir(), v.as_str(), false);
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let (staging, target, ro_target) = (s.path("staging"), s.path("pod-a"), s.path("pod-b"));
    fs::create_dir(staging.as_path()).unwrap();

    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    assert!(is_mounted(staging.as_path()));
    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    let other = VolumeCapability::mount(AccessMode::SingleNodeReaderOnly);
    assert_eq!(
        code(c.node_stage_volume(stage(&v, &staging, &other)).await),
        Code::AlreadyExists
    );

    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert!(is_mounted(target.as_path()));
    fs::write(target.as_path().join("f.txt"), vec![7u8; 100_000]).unwrap();
    assert_eq!(
        fs::read(data.join("f.txt")).unwrap().len(),
        100_000,
        "the write reached the volume"
    );
    // Same arguments again: OK. Other arguments at the same target: ALREADY_EXISTS.
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert_eq!(
        code(
            c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, true))
                .await
        ),
        Code::AlreadyExists
    );

    // A read-only publish is a read-only bind mount.
    c.node_publish_volume(publish(&v, Some(&staging), &ro_target, &cap, true))
        .await
        .unwrap();
    assert_eq!(
        fs::read(ro_target.as_path().join("f.txt")).unwrap().len(),
        100_000
    );
    let err = fs::write(ro_target.as_path().join("g.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS, got {err}");

    // Stats from the filesystem: bytes within the quota and inodes.
    let st = c.node_get_volume_stats(stats(&v, &target)).await.unwrap();
    let bytes = st
        .usage
        .iter()
        .find(|u| u.unit == UsageUnit::Bytes)
        .unwrap();
    assert_eq!(bytes.total, 8 * MIB);
    assert!(bytes.used >= 100_000, "{bytes:?}");
    assert!(bytes.available <= 8 * MIB - bytes.used);
    let inodes = st
        .usage
        .iter()
        .find(|u| u.unit == UsageUnit::Inodes)
        .unwrap();
    assert!(inodes.total > 0 && inodes.used > 0, "{inodes:?}");
    assert!(!st.volume_condition.unwrap().abnormal);
    // Staged paths have stats too.
    c.node_get_volume_stats(stats(&v, &staging)).await.unwrap();

    // In use: cannot delete, cannot unstage.
    let del = DeleteVolumeRequest {
        volume_id: v.clone(),
        secrets: Secrets::default(),
    };
    assert_eq!(
        code(c.delete_volume(del.clone()).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(c.node_unstage_volume(unstage(&v, &staging)).await),
        Code::FailedPrecondition
    );

    // NodeExpandVolume after a controller expansion.
    c.controller_expand_volume(ControllerExpandVolumeRequest {
        volume_id: v.clone(),
        capacity_range: CapacityRange::exactly(16 * MIB),
        secrets: Secrets::default(),
        volume_capability: None,
    })
    .await
    .unwrap();
    let expand = |bytes: u64| NodeExpandVolumeRequest {
        volume_id: v.clone(),
        volume_path: target.clone().into(),
        capacity_range: Some(CapacityRange {
            required_bytes: Some(bytes),
            limit_bytes: None,
        }),
        staging_target_path: Some(staging.clone()).into(),
        volume_capability: Some(cap.clone()),
        secrets: Secrets::default(),
    };
    assert_eq!(
        c.node_expand_volume(expand(16 * MIB))
            .await
            .unwrap()
            .capacity_bytes,
        Some(16 * MIB)
    );
    assert_eq!(
        code(c.node_expand_volume(expand(32 * MIB)).await),
        Code::OutOfRange
    );
    let st = c.node_get_volume_stats(stats(&v, &target)).await.unwrap();
    assert_eq!(st.usage[0].total, 16 * MIB);

    // Teardown removes the targets and the mounts.
    for t in [&target, &ro_target] {
        c.node_unpublish_volume(unpublish(&v, t)).await.unwrap();
        assert!(!t.as_path().exists(), "{t} removed");
        c.node_unpublish_volume(unpublish(&v, t)).await.unwrap();
    }
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(!is_mounted(staging.as_path()));
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    c.delete_volume(del).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_single_writer_publishes_once_read_write() {
    if !can_mount("single_node_single_writer_publishes_once_read_write") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeSingleWriter);
    let v = c
        .create_volume(req("v", MIB, cap.clone()))
        .await
        .unwrap()
        .volume
        .volume_id;
    let (staging, a, b) = (s.path("staging"), s.path("a"), s.path("b"));
    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    c.node_publish_volume(publish(&v, Some(&staging), &a, &cap, false))
        .await
        .unwrap();
    assert_eq!(
        code(
            c.node_publish_volume(publish(&v, Some(&staging), &b, &cap, false))
                .await
        ),
        Code::FailedPrecondition
    );
    // A read-only second publish is allowed.
    c.node_publish_volume(publish(&v, Some(&staging), &b, &cap, true))
        .await
        .unwrap();
    for t in [&a, &b] {
        c.node_unpublish_volume(unpublish(&v, t)).await.unwrap();
    }
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

/// Stages the block volume `v` at `staging`; false, after saying why, where this machine has no
/// loop devices (the driver answers FAILED_PRECONDITION).
async fn stage_block(
    c: &csi_types::client::Client,
    v: &VolumeId,
    staging: &NodePath,
    cap: &VolumeCapability,
) -> bool {
    match c.node_stage_volume(stage(v, staging, cap)).await {
        Ok(_) => true,
        Err(e) if e.code() == Code::FailedPrecondition => {
            skip_without_loop_devices("a block stage", &e);
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// A served driver with a 4 MiB block volume staged at its path `staging`, the capability it
/// was staged with, and a guard over its image that detaches the image's loop devices when
/// dropped; `None` (after saying why) where mounts or loop devices cannot be had.
async fn staged_block_volume(
    test: &str,
) -> Option<(Served, VolumeId, VolumeCapability, DetachLoopsOf)> {
    if !can_mount(test) {
        return None;
    }
    let s = Served::start(|_| {}).await;
    let v = new_volume(&s.client, block_req("b", 4 * MIB)).await;
    let loops = DetachLoopsOf(local::volume_data_path(&s.state_dir(), v.as_str(), true));
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    if !stage_block(&s.client, &v, &s.path("staging"), &cap).await {
        return None;
    }
    Some((s, v, cap, loops))
}

/// Grows the published block volume `v` to `bytes`: ControllerExpandVolume, then
/// NodeExpandVolume at `target`. Returns whether the controller asked for the node step.
async fn expand_block(
    c: &csi_types::client::Client,
    v: &VolumeId,
    staging: &NodePath,
    target: &NodePath,
    cap: &VolumeCapability,
    bytes: u64,
) -> bool {
    let r = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.clone(),
            capacity_range: CapacityRange::exactly(bytes),
            secrets: Secrets::default(),
            volume_capability: Some(cap.clone()),
        })
        .await
        .unwrap();
    c.node_expand_volume(NodeExpandVolumeRequest {
        volume_id: v.clone(),
        volume_path: target.clone().into(),
        capacity_range: Some(CapacityRange::exactly(bytes)),
        staging_target_path: Some(staging.clone()).into(),
        volume_capability: Some(cap.clone()),
        secrets: Secrets::default(),
    })
    .await
    .unwrap();
    r.node_expansion_required
}

/// The block device size the kernel reports for a device node, from sysfs.
fn device_size(dev: &Path) -> (u64, String) {
    let rdev = fs::metadata(dev).unwrap().rdev();
    let (major, minor) = (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    );
    let sys = format!("/sys/dev/block/{major}:{minor}");
    let sectors: u64 = fs::read_to_string(format!("{sys}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (sectors * 512, sys)
}

#[tokio::test(flavor = "multi_thread")]
async fn block_volume_is_published_as_a_loop_device() {
    if !can_mount("block_volume_is_published_as_a_loop_device") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = c
        .create_volume(block_req("b", 8 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let (staging, target, ro_target) = (s.path("staging"), s.path("dev-rw"), s.path("dev-ro"));
    if !stage_block(c, &v, &staging, &cap).await {
        return;
    }
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    let meta = fs::metadata(target.as_path()).unwrap();
    assert!(
        meta.file_type().is_block_device(),
        "a device node at the target"
    );
    let (size, _) = device_size(target.as_path());
    assert_eq!(size, 8 * MIB);
    {
        let mut dev = fs::OpenOptions::new()
            .write(true)
            .open(target.as_path())
            .unwrap();
        dev.seek(SeekFrom::Start(3 * MIB)).unwrap();
        dev.write_all(b"through the loop").unwrap();
        dev.sync_all().unwrap();
    }
    let mut back = [0u8; 16];
    let mut f = fs::File::open(&img).unwrap();
    f.seek(SeekFrom::Start(3 * MIB)).unwrap();
    f.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through the loop");

    // Read-only publish: a read-only loop device.
    c.node_publish_volume(publish(&v, Some(&staging), &ro_target, &cap, true))
        .await
        .unwrap();
    let (_, ro_sys) = device_size(ro_target.as_path());
    assert_eq!(
        fs::read_to_string(format!("{ro_sys}/ro")).unwrap().trim(),
        "1",
        "a read-only device"
    );
    let write = fs::OpenOptions::new()
        .write(true)
        .open(ro_target.as_path())
        .and_then(|mut d| d.write_all(b"x").and_then(|_| d.sync_all()));
    assert!(write.is_err(), "writing to a read-only publish fails");
    let mut ro = fs::File::open(ro_target.as_path()).unwrap();
    ro.seek(SeekFrom::Start(3 * MIB)).unwrap();
    ro.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through the loop");
    drop(ro);

    // Online expansion: the controller grows the image, the node makes the device see it.
    assert!(expand_block(c, &v, &staging, &target, &cap, 16 * MIB).await);
    assert_eq!(device_size(target.as_path()).0, 16 * MIB);
    let st = c.node_get_volume_stats(stats(&v, &target)).await.unwrap();
    assert_eq!(st.usage[0].total, 16 * MIB);

    for t in [&target, &ro_target] {
        c.node_unpublish_volume(unpublish(&v, t)).await.unwrap();
        assert!(!t.as_path().exists());
    }
    assert!(
        eventually(|| loops_of(&img) == 0),
        "the loop devices were detached: {:?}",
        loops_of(&img)
    );
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v,
        secrets: Secrets::default(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_volume_in_a_state_directory_whose_path_is_not_utf8_is_detached_at_unpublish() {
    use std::os::unix::ffi::OsStrExt;
    if !can_mount("a_block_volume_in_a_state_directory_whose_path_is_not_utf8") {
        return;
    }
    // `--state-dir` takes any path the OS does.
    let s = Served::start(|cfg| {
        cfg.state_dir = cfg
            .state_dir
            .with_file_name(std::ffi::OsStr::from_bytes(b"state-\xff"));
    })
    .await;
    let c = &s.client;
    let v = new_volume(c, block_req("b", 8 * MIB)).await;
    let img = local::volume_data_path(&s.driver.config().state_dir, v.as_str(), true);
    assert!(img.is_file(), "{}", img.display());
    let _cleanup = DetachLoopsOf(img.clone());
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let (staging, target) = (s.path("staging"), s.path("dev"));
    if !stage_block(c, &v, &staging, &cap).await {
        return;
    }
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert_eq!(loops_of(&img), 1);
    // The node finds the device to refresh it after an expansion...
    expand_block(c, &v, &staging, &target, &cap, 16 * MIB).await;
    assert_eq!(device_size(target.as_path()).0, 16 * MIB);
    // ... and to detach it at unpublish, where it took the device for gone and left it attached.
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    assert!(
        eventually(|| loops_of(&img) == 0),
        "{} loop devices still serve the image",
        loops_of(&img)
    );
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn publications_survive_a_driver_restart() {
    if !can_mount("publications_survive_a_driver_restart") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let v = s
        .client
        .create_volume(mount_req("v", MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let (staging, target) = (s.path("staging"), s.path("target"));
    s.client
        .node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    s.client
        .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    let dir = s.stop().await;
    let cfg = local::Config::with_state_dir(dir.path().join("state"));
    let s = Served::start_in(dir, cfg).await;
    let c = &s.client;
    // The restarted driver knows the publication: same args OK, other args refused.
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert_eq!(
        code(
            c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, true))
                .await
        ),
        Code::AlreadyExists
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    assert!(!target.as_path().exists());
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(!is_mounted(staging.as_path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_cut_short_by_a_crash_is_redone_cleanly() {
    if !can_mount("a_publish_cut_short_by_a_crash_is_redone_cleanly") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = c
        .create_volume(block_req("b", 4 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let (staging, target) = (s.path("staging"), s.path("dev"));
    if let Err(e) = c.node_stage_volume(stage(&v, &staging, &cap)).await {
        skip_without_loop_devices("a_publish_cut_short_by_a_crash_is_redone_cleanly", &e);
        return;
    }
    // What a driver killed between attaching and saving its record leaves:
    // a loop device of the image bound at the target, and no record.
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    let stale = String::from_utf8(out.stdout).unwrap().trim().to_string();
    fs::write(target.as_path(), b"").unwrap();
    let st = std::process::Command::new("mount")
        .args(["--bind", &stale])
        .arg(target.as_path())
        .status()
        .unwrap();
    assert!(st.success());

    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert_eq!(
        mounts_on(target.as_path()),
        1,
        "the stale mount was replaced, not stacked on"
    );
    // Only the new publication's device serves the image: the stale one was
    // detached (the kernel may hand its number out again).
    assert!(
        eventually(|| loops_of(&img) == 1),
        "{} loop devices serve the image",
        loops_of(&img)
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

/// Runs `mount ARGS…` (or `umount`), asserting it succeeds.
fn run(cmd: &str, args: &[&std::ffi::OsStr]) {
    let st = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

/// How many mounts are stacked on `p`.
fn mounts_on(p: &Path) -> usize {
    let p = fs::canonicalize(p).unwrap();
    csi_node::mount_table()
        .unwrap()
        .iter()
        .filter(|m| m.mount_point == p)
        .count()
}

/// A served driver with a mount volume staged at its path `staging`, and the capability it was
/// staged with; `None` (after saying why) where mounts cannot be made.
async fn staged_mount_volume(test: &str) -> Option<(Served, VolumeId, VolumeCapability)> {
    if !can_mount(test) {
        return None;
    }
    let s = Served::start(|_| {}).await;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let v = new_volume(&s.client, mount_req("v", MIB)).await;
    s.client
        .node_stage_volume(stage(&v, &s.path("staging"), &cap))
        .await
        .unwrap();
    Some((s, v, cap))
}

/// Mounts a tmpfs on the directory `dir`, as an operator might, holding a file of theirs.
fn operators_tmpfs_on(dir: &Path) {
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ],
    );
    fs::write(dir.join("theirs"), b"keep").unwrap();
}

/// Asserts that `e` refuses the tmpfs of [`operators_tmpfs_on`] at `dir`, given as `field`,
/// naming both and what is mounted, and that the tmpfs is still mounted with its file.
fn assert_refused_and_kept(e: &csi_types::CsiError, field: &str, dir: &Path) {
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(field) && msg.contains(dir.to_str().unwrap()),
        "{msg}"
    );
    assert!(msg.contains("tmpfs"), "names what is mounted there: {msg}");
    assert_eq!(mounts_on(dir), 1, "the tmpfs is still mounted");
    assert_eq!(fs::read(dir.join("theirs")).unwrap(), b"keep");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_on_the_staging_path_that_is_not_the_volumes_own_is_refused_and_left_mounted() {
    if !can_mount("a_mount_on_the_staging_path_that_is_not_the_volumes_own_is_refused") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let v = new_volume(c, mount_req("v", MIB)).await;
    let staging = s.path("staging");
    let dir = staging.as_path();
    fs::create_dir(dir).unwrap();
    // An operator's tmpfs on the staging path, holding a file of theirs.
    operators_tmpfs_on(dir);
    let e = c
        .node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap_err();
    assert_refused_and_kept(&e, "staging_target_path", dir);
    run("umount", &[dir.as_os_str()]);

    // A bind of the volume's own directory with no record (a crash between the mount and the
    // record) is the plugin's leftover: replaced, not stacked on.
    let data = local::volume_data_path(&s.state_dir(), v.as_str(), false);
    run(
        "mount",
        &["--bind".as_ref(), data.as_os_str(), dir.as_os_str()],
    );
    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    assert_eq!(
        mounts_on(dir),
        1,
        "the leftover was replaced, not stacked on"
    );
    fs::write(dir.join("through-staging"), b"x").unwrap();
    assert!(
        data.join("through-staging").exists(),
        "the volume is staged there"
    );

    // Unstage likewise leaves a mount stacked on the volume's by someone else.
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ],
    );
    let e = c
        .node_unstage_volume(unstage(&v, &staging))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert_eq!(mounts_on(dir), 2, "both mounts stay");
    run("umount", &[dir.as_os_str()]);
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(!is_mounted(dir));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_on_the_target_path_that_is_not_the_volumes_own_is_refused_and_left_mounted() {
    let Some((s, v, cap)) =
        staged_mount_volume("a_mount_on_the_target_path_that_is_not_the_volumes_own").await
    else {
        return;
    };
    let c = &s.client;
    let (staging, target) = (s.path("staging"), s.path("target"));
    let dir = target.as_path();
    fs::create_dir(dir).unwrap();
    // An operator's tmpfs on the target path, holding a file of theirs, and no record.
    operators_tmpfs_on(dir);
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap_err();
    assert_refused_and_kept(&e, "target_path", dir);
    run("umount", &[dir.as_os_str()]);

    // A bind of the staging path with no record (a crash between the mount and the record) is
    // the plugin's leftover: replaced, not stacked on.
    run(
        "mount",
        &[
            "--bind".as_ref(),
            staging.as_path().as_os_str(),
            dir.as_os_str(),
        ],
    );
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert_eq!(
        mounts_on(dir),
        1,
        "the leftover was replaced, not stacked on"
    );
    fs::write(dir.join("through-target"), b"x").unwrap();
    assert!(
        staging.as_path().join("through-target").exists(),
        "the volume is published there"
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(!is_mounted(dir));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_block_publish_keeps_the_target_file_the_co_made() {
    let Some((s, v, cap, loops)) =
        staged_block_volume("a_failed_block_publish_keeps_the_target_file_the_co_made").await
    else {
        return;
    };
    let (c, img) = (&s.client, loops.0.clone());
    let (staging, target) = (s.path("staging"), s.path("dev"));
    // The CO makes the target file, as kubelet does for a block volume.
    fs::write(target.as_path(), b"").unwrap();
    // The image out of the way: attaching it to a loop device fails.
    let aside = img.with_extension("aside");
    fs::rename(&img, &aside).unwrap();
    let r = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await;
    fs::rename(&aside, &img).unwrap();
    assert!(r.is_err(), "attaching a missing image fails");
    assert!(
        target.as_path().is_file(),
        "the target file the CO made is still there"
    );
    // The retry publishes on that same file.
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    assert!(is_mounted(target.as_path()));
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unpublish_answers_ok_once_unmounted_even_when_files_stay_in_the_target() {
    let Some((s, v, cap)) = staged_mount_volume(
        "unpublish_answers_ok_once_unmounted_even_when_files_stay_in_the_target",
    )
    .await
    else {
        return;
    };
    let c = &s.client;
    let (staging, target) = (s.path("staging"), s.path("target"));
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    let dir = target.as_path();
    // Unmounted under the plugin, then written into: the directory is no longer empty.
    run("umount", &[dir.as_os_str()]);
    fs::write(dir.join("written-after"), b"x").unwrap();
    for _ in 0..2 {
        c.node_unpublish_volume(unpublish(&v, &target))
            .await
            .unwrap();
        assert!(!is_mounted(dir));
    }
    assert!(
        dir.join("written-after").exists(),
        "files in the target are left to the CO"
    );
    // The publication is gone: unstaging is no longer refused.
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert!(!is_mounted(staging.as_path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn unstaging_a_block_volume_unmounts_nothing() {
    if !can_mount("unstaging_a_block_volume_unmounts_nothing") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = new_volume(c, block_req("b", 4 * MIB)).await;
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let staging = s.path("staging");
    let dir = staging.as_path();
    fs::create_dir(dir).unwrap();
    if !stage_block(c, &v, &staging, &cap).await {
        return;
    }
    // A block volume is staged without a mount: a mount there is someone else's.
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ],
    );
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    assert_eq!(mounts_on(dir), 1, "the tmpfs is still mounted");
    run("umount", &[dir.as_os_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_mount_publish_keeps_the_target_directory_the_co_made() {
    let Some((s, v, cap)) =
        staged_mount_volume("a_failed_mount_publish_keeps_the_target_directory_the_co_made").await
    else {
        return;
    };
    let c = &s.client;
    let (staging, target) = (s.path("staging"), s.path("target"));
    fs::create_dir(target.as_path()).unwrap();
    // The staging path unmounted and removed behind the plugin's back: the bind from it fails.
    run("umount", &[staging.as_path().as_os_str()]);
    fs::remove_dir(staging.as_path()).unwrap();
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(staging.as_str()), "{e}");
    assert!(
        target.as_path().is_dir(),
        "the target directory the CO made is still there"
    );
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unpublish_leaves_a_mount_stacked_on_the_target_by_someone_else() {
    let Some((s, v, cap)) =
        staged_mount_volume("unpublish_leaves_a_mount_stacked_on_the_target_by_someone_else").await
    else {
        return;
    };
    let c = &s.client;
    let (staging, target) = (s.path("staging"), s.path("target"));
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    let dir = target.as_path();
    // An operator's tmpfs stacked on the published target.
    operators_tmpfs_on(dir);
    for _ in 0..2 {
        let e = c
            .node_unpublish_volume(unpublish(&v, &target))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("target_path") && msg.contains(target.as_str()) && msg.contains("tmpfs"),
            "{msg}"
        );
        assert_eq!(mounts_on(dir), 2, "the tmpfs and the bind under it stay");
        assert_eq!(fs::read(dir.join("theirs")).unwrap(), b"keep");
    }
    // Still published: unstaging is refused.
    let e = c
        .node_unstage_volume(unstage(&v, &staging))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    // Once they take theirs away, the retry unmounts the bind.
    run("umount", &[dir.as_os_str()]);
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    assert!(!is_mounted(dir));
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

/// A file of someone else's, bind-mounted on the block target file `target`, as another
/// driver's device would be.
fn foreign_file_bind_on(s: &Served, target: &Path) -> std::path::PathBuf {
    let theirs = s.dir.path().join("theirs-device");
    fs::write(&theirs, b"theirs").unwrap();
    run(
        "mount",
        &["--bind".as_ref(), theirs.as_os_str(), target.as_os_str()],
    );
    theirs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_on_a_block_target_that_is_not_the_volumes_own_is_refused_and_left_mounted() {
    let Some((s, v, cap, loops)) =
        staged_block_volume("a_mount_on_a_block_target_that_is_not_the_volumes_own_is_refused")
            .await
    else {
        return;
    };
    let (c, img) = (&s.client, loops.0.clone());
    let (staging, target) = (s.path("staging"), s.path("dev"));
    // The CO's target file with someone else's file bound on it, and no record.
    fs::write(target.as_path(), b"").unwrap();
    let file = target.as_path();
    foreign_file_bind_on(&s, file);
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("target_path") && msg.contains(target.as_str()),
        "{msg}"
    );
    assert_eq!(mounts_on(file), 1, "their bind is still mounted");
    assert_eq!(fs::read(file).unwrap(), b"theirs");
    assert_eq!(
        loops_of(&img),
        0,
        "nothing was attached for the refused publish"
    );
    run("umount", &[file.as_os_str()]);

    // Published; then someone stacks theirs on it: unpublish leaves both, and the device.
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    foreign_file_bind_on(&s, file);
    let e = c
        .node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert_eq!(
        mounts_on(file),
        2,
        "their bind and the device's under it stay"
    );
    assert_eq!(fs::read(file).unwrap(), b"theirs");
    assert_eq!(
        loops_of(&img),
        1,
        "the device stays attached under their bind"
    );
    run("umount", &[file.as_os_str()]);
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    assert!(!is_mounted(file));
    assert!(eventually(|| loops_of(&img) == 0), "the device is detached");
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

/// `p` spelled with `suffix` after it (`/`, `//.`): the same directory for the kernel.
fn spelled(p: &NodePath, suffix: &str) -> NodePath {
    NodePath::new(format!("{}{suffix}", p.as_str())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_path_spelled_two_ways_is_one_staging_and_one_publication() {
    let Some((s, v, cap)) =
        staged_mount_volume("one_path_spelled_two_ways_is_one_staging_and_one_publication").await
    else {
        return;
    };
    let c = &s.client;
    let (staging, target) = (s.path("staging"), s.path("target"));
    // The stage again, with a trailing slash: the same staging, nothing stacked.
    c.node_stage_volume(stage(&v, &spelled(&staging, "/"), &cap))
        .await
        .unwrap();
    assert_eq!(mounts_on(staging.as_path()), 1);
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    // A retry under other spellings of both paths is the same publication.
    c.node_publish_volume(publish(
        &v,
        Some(&spelled(&staging, "//.")),
        &spelled(&target, "/"),
        &cap,
        false,
    ))
    .await
    .unwrap();
    assert_eq!(mounts_on(target.as_path()), 1);
    // Unpublished under a third spelling: unmounted, and nothing keeps the volume published.
    c.node_unpublish_volume(unpublish(&v, &spelled(&target, "//")))
        .await
        .unwrap();
    assert!(!is_mounted(target.as_path()));
    c.node_unstage_volume(unstage(&v, &spelled(&staging, "/.")))
        .await
        .unwrap();
    assert!(!is_mounted(staging.as_path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_staged_read_only_is_never_published_writable() {
    if !can_mount("a_volume_staged_read_only_is_never_published_writable") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let v = new_volume(c, mount_req("v", MIB)).await;
    let (staging, target) = (s.path("staging"), s.path("target"));
    let reader = VolumeCapability::mount(AccessMode::SingleNodeReaderOnly);
    c.node_stage_volume(stage(&v, &staging, &reader))
        .await
        .unwrap();
    // Published under a writable access mode, without readonly: refused, nothing made.
    let writer = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let e = c
        .node_publish_volume(publish(&v, Some(&staging), &target, &writer, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("SingleNodeReaderOnly"), "{e}");
    assert!(!target.as_path().exists());
    // With readonly set it is published, read-only.
    c.node_publish_volume(publish(&v, Some(&staging), &target, &writer, true))
        .await
        .unwrap();
    let err = fs::write(target.as_path().join("x"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_of_a_target_whose_mount_is_gone_are_the_volumes_not_its_parents() {
    let Some((s, v, cap)) =
        staged_mount_volume("stats_of_a_target_whose_mount_is_gone_are_the_volumes").await
    else {
        return;
    };
    let c = &s.client;
    // The target on a filesystem of its own, as kubelet's pod directories may be.
    let pods = s.path("pods");
    fs::create_dir(pods.as_path()).unwrap();
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            pods.as_path().as_os_str(),
        ],
    );
    let target = spelled(&pods, "/target");
    let staging = s.path("staging");
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    let inodes = |st: &csi_types::node::NodeGetVolumeStatsResponse| {
        st.usage
            .iter()
            .find(|u| u.unit == UsageUnit::Inodes)
            .map(|u| u.total)
            .unwrap()
    };
    let mounted = c.node_get_volume_stats(stats(&v, &target)).await.unwrap();
    // The bind is taken away behind the plugin's back.
    run("umount", &[target.as_path().as_os_str()]);
    let gone = c.node_get_volume_stats(stats(&v, &target)).await.unwrap();
    assert!(gone.volume_condition.as_ref().unwrap().abnormal);
    assert_eq!(
        inodes(&gone),
        inodes(&mounted),
        "the inodes are the volume's, not those of the tmpfs the target lies on"
    );
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    run("umount", &[pods.as_path().as_os_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_with_spaces_and_newlines_stage_publish_and_unpublish() {
    if !can_mount("paths_with_spaces_and_newlines_stage_publish_and_unpublish") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let v = new_volume(c, mount_req("v", MIB)).await;
    let (staging, target) = (s.path("staging dir\n1"), s.path("tar get\n\t\\x"));
    for _ in 0..2 {
        c.node_stage_volume(stage(&v, &staging, &cap))
            .await
            .unwrap();
        c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
            .await
            .unwrap();
    }
    assert_eq!(mounts_on(staging.as_path()), 1);
    assert_eq!(mounts_on(target.as_path()), 1);
    fs::write(target.as_path().join("f"), b"x").unwrap();
    assert!(staging.as_path().join("f").exists());
    c.node_get_volume_stats(stats(&v, &target)).await.unwrap();
    for _ in 0..2 {
        c.node_unpublish_volume(unpublish(&v, &target))
            .await
            .unwrap();
        c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
    }
    assert!(!target.as_path().exists());
    assert!(!is_mounted(staging.as_path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn node_expand_leaves_a_loop_number_that_now_serves_another_file_alone() {
    let Some((s, v, cap, loops)) =
        staged_block_volume("node_expand_leaves_a_loop_number_that_now_serves_another_file_alone")
            .await
    else {
        return;
    };
    let (c, img) = (&s.client, loops.0.clone());
    let (staging, target) = (s.path("staging"), s.path("dev"));
    c.node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
        .await
        .unwrap();
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(&img)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let dev = listing.split_once(':').unwrap().0.to_string();
    // Detached behind the plugin's back, and its number attached again to another file: by
    // this test where the number is still free, else by whoever took it first.
    let other = s.dir.path().join("other.img");
    fs::File::create(&other).unwrap().set_len(MIB).unwrap();
    let _other = DetachLoopsOf(other.clone());
    run("losetup", &["-d".as_ref(), dev.as_ref()]);
    assert!(eventually(|| loops_of(&img) == 0));
    let _ = std::process::Command::new("losetup")
        .arg(&dev)
        .arg(&other)
        .status();
    let reused = loops_of(&other) == 1;
    c.controller_expand_volume(ControllerExpandVolumeRequest {
        volume_id: v.clone(),
        capacity_range: CapacityRange::exactly(8 * MIB),
        secrets: Secrets::default(),
        volume_capability: Some(cap.clone()),
    })
    .await
    .unwrap();
    let e = c
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: v.clone(),
            volume_path: target.clone().into(),
            capacity_range: Some(CapacityRange::exactly(8 * MIB)),
            staging_target_path: Some(staging.clone()).into(),
            volume_capability: Some(cap.clone()),
            secrets: Secrets::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    assert!(
        e.to_string().contains(&dev) && e.to_string().contains("no longer serves its image"),
        "{e}"
    );
    // Unpublish unmounts the stale node and leaves the number's new attachment be.
    c.node_unpublish_volume(unpublish(&v, &target))
        .await
        .unwrap();
    if reused {
        assert_eq!(
            loops_of(&other),
            1,
            "the other file's device stays attached"
        );
    }
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_made_read_only_by_its_mount_flags_is_no_writer() {
    if !can_mount("a_publish_made_read_only_by_its_mount_flags_is_no_writer") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let c = &s.client;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeSingleWriter);
    let v = new_volume(c, req("v", MIB, cap.clone())).await;
    let (staging, a, b) = (s.path("staging"), s.path("a"), s.path("b"));
    c.node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap();
    // Published at `a` with `ro` among its mount flags (readonly unset): a read-only bind.
    let mut ro_flags = cap.clone();
    if let AccessType::Mount(m) = &mut ro_flags.access_type {
        m.mount_flags = vec!["ro".into(), "noatime".into()];
    }
    c.node_publish_volume(publish(&v, Some(&staging), &a, &ro_flags, false))
        .await
        .unwrap();
    let err = fs::write(a.as_path().join("x"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
    // So the one read-write publish SINGLE_NODE_SINGLE_WRITER allows is still to be had.
    c.node_publish_volume(publish(&v, Some(&staging), &b, &cap, false))
        .await
        .unwrap();
    fs::write(b.as_path().join("x"), b"x").unwrap();
    for t in [&a, &b] {
        c.node_unpublish_volume(unpublish(&v, t)).await.unwrap();
    }
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_path_that_is_or_lies_in_the_staging_path_is_refused_and_the_stage_kept() {
    let Some((s, v, cap)) = staged_mount_volume(
        "a_target_path_that_is_or_lies_in_the_staging_path_is_refused_and_the_stage_kept",
    )
    .await
    else {
        return;
    };
    let c = &s.client;
    let staging = s.path("staging");
    fs::write(staging.as_path().join("data"), b"kept").unwrap();
    // The staging path itself (spelled another way too), a path inside it (inside the
    // volume), and a directory that holds it.
    for target in [
        staging.clone(),
        spelled(&staging, "/."),
        node_path(&staging.as_path().join("inside")),
        s.path(""),
    ] {
        let e = c
            .node_publish_volume(publish(&v, Some(&staging), &target, &cap, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{target:?}: {e}");
        assert!(e.to_string().contains("target_path"), "{e}");
        // The stage is as it was: one bind of the volume, its data in view, nothing made in it.
        assert_eq!(mounts_on(staging.as_path()), 1, "{target:?}");
        assert_eq!(fs::read(staging.as_path().join("data")).unwrap(), b"kept");
        assert!(!staging.as_path().join("inside").exists());
    }
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_unpublish_never_detaches_the_device_another_publish_took_at_its_number() {
    let test = "a_retried_unpublish_never_detaches_the_device_another_publish_took_at_its_number";
    let Some((s, v, cap, _loops)) = staged_block_volume(test).await else {
        return;
    };
    let c = &s.client;
    let staging = s.path("staging");
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    // An unpublish cut short by a crash after its detach, before its record was removed;
    // then another publish of the volume takes the freed number (the lowest free one, unless
    // another process takes it first: then try again).
    let mut found = None;
    for attempt in 0..20 {
        let (a, b) = (
            s.path(&format!("a{attempt}")),
            s.path(&format!("b{attempt}")),
        );
        for t in [&a, &b] {
            fs::write(t.as_path(), b"").unwrap();
        }
        c.node_publish_volume(publish(&v, Some(&staging), &a, &cap, false))
            .await
            .unwrap();
        let dev_a = loop_devices_of(&img);
        assert_eq!(dev_a.len(), 1, "{dev_a:?}");
        run("umount", &[a.as_path().as_os_str()]);
        run("losetup", &["-d".as_ref(), dev_a[0].as_ref()]);
        c.node_publish_volume(publish(&v, Some(&staging), &b, &cap, false))
            .await
            .unwrap();
        if loop_devices_of(&img) == dev_a {
            found = Some((a, b, dev_a[0].clone()));
            break;
        }
        for t in [&a, &b] {
            c.node_unpublish_volume(unpublish(&v, t)).await.unwrap();
        }
    }
    let (a, b, dev) =
        found.expect("the freed loop device number was taken by another process 20 times");
    // The CO's retry of the first unpublish: its number now serves the other publication.
    c.node_unpublish_volume(unpublish(&v, &a)).await.unwrap();
    assert_eq!(
        loop_devices_of(&img),
        std::slice::from_ref(&dev),
        "the other publication's device {dev} was detached"
    );
    assert!(is_mounted(b.as_path()));
    c.node_unpublish_volume(unpublish(&v, &b)).await.unwrap();
    assert!(eventually(|| loops_of(&img) == 0), "a loop device was left");
    c.node_unstage_volume(unstage(&v, &staging)).await.unwrap();
}
