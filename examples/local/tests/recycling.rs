//! Which deleted volumes' directories are given to new volumes. Only the
//! directory of a volume never staged nor published is kept and reused; one
//! that was handed to a node is removed, so a descriptor a workload still
//! holds into it, or a mount of it left behind, reaches a deleted, empty
//! directory, never the next volume's data. That holds across a SIGKILL and
//! the journal's replay. These tests stage volumes: they need root (mounts).

mod common;

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use csi_node::MountOptions;
use csi_types::client::Client;
use csi_types::{
    Csi,
    controller::DeleteVolumeRequest,
    ids::{NodePath, VolumeId},
    node::{
        NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
        NodeUnstageVolumeRequest,
    },
    redact::Secrets,
    types::{AccessMode, Map, VolumeCapability},
};
use rustix::fs::{Mode, OFlags};

fn cap() -> VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter)
}

async fn create(c: &Client, name: &str) -> VolumeId {
    c.create_volume(mount_req(name, MIB))
        .await
        .unwrap()
        .volume
        .volume_id
}

/// Deletes `v` and waits until the driver disposed of its directory (after
/// the answer: moved into `free/` or removed).
async fn delete(c: &Client, state: &Path, v: &VolumeId) {
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.clone(),
        secrets: Secrets::default(),
    })
    .await
    .unwrap();
    gone(&data(state, v)).await;
}

fn data(state: &Path, v: &VolumeId) -> PathBuf {
    local::volume_data_path(state, v.as_str(), false)
}

fn stage_req(v: &VolumeId, staging: &NodePath) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: v.clone(),
        publish_context: Map::new(),
        staging_target_path: staging.clone(),
        volume_capability: cap(),
        secrets: Secrets::default(),
        volume_context: Map::new(),
    }
}

/// Stages `v` under `dir` (and publishes it, if `publish`), then takes it
/// all down again, as a node does for a pod that ran and ended.
async fn use_on_node(c: &Client, dir: &Path, v: &VolumeId, publish: bool) {
    let staging = node_path(&dir.join(format!("staging-{v}")));
    let target = node_path(&dir.join(format!("pod-{v}")));
    c.node_stage_volume(stage_req(v, &staging)).await.unwrap();
    if publish {
        c.node_publish_volume(publish_req(v, &staging, &target))
            .await
            .unwrap();
        fs::write(target.as_path().join("f"), b"pod data").unwrap();
        unpublish(c, v, target).await;
    }
    unstage(c, v, staging).await;
}

async fn unpublish(c: &Client, v: &VolumeId, target: NodePath) {
    c.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: v.clone(),
        target_path: target,
    })
    .await
    .unwrap();
}

async fn unstage(c: &Client, v: &VolumeId, staging: NodePath) {
    c.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: v.clone(),
        staging_target_path: staging,
    })
    .await
    .unwrap();
}

fn publish_req(v: &VolumeId, staging: &NodePath, target: &NodePath) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: v.clone(),
        publish_context: Map::new(),
        staging_target_path: Some(staging.clone()),
        target_path: target.clone(),
        volume_capability: cap(),
        readonly: false,
        secrets: Secrets::default(),
        volume_context: Map::new(),
    }
}

/// A descriptor of a volume's directory: it keeps the inode, so its number
/// is not reused while the test compares it with others.
fn pin(path: &Path) -> OwnedFd {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

/// The file system and inode of a descriptor, or of a path.
fn inode_of(fd: &OwnedFd) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

fn inode_at(path: &Path) -> (u64, u64) {
    let m = fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// The inodes of the directories kept for reuse in `STATE/free/`.
fn kept(state: &Path) -> Vec<(u64, u64)> {
    fs::read_dir(state.join("free"))
        .unwrap()
        .map(|e| inode_at(&e.unwrap().path()))
        .collect()
}

/// Waits until `STATE/free/` holds something (the remover task keeps a
/// directory after the deletion is answered), at most ten seconds.
async fn kept_soon(state: &Path) -> Vec<(u64, u64)> {
    for _ in 0..1000 {
        let k = kept(state);
        if !k.is_empty() {
            return k;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing was kept for reuse in ten seconds");
}

fn as_new(path: &Path) -> bool {
    let m = fs::metadata(path).unwrap();
    fs::read_dir(path).unwrap().next().is_none()
        && m.permissions().mode() & 0o7777 == 0o777
        && m.nlink() == 2
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_directory_of_a_volume_never_staged_is_given_to_a_new_volume() {
    if !can_mount("only_the_directory_of_a_volume_never_staged_is_given_to_a_new_volume") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let (c, state) = (&s.client, s.state_dir());
    let fresh = create(c, "fresh").await;
    let staged = create(c, "staged").await;
    let published = create(c, "published").await;
    use_on_node(c, s.dir.path(), &staged, false).await;
    use_on_node(c, s.dir.path(), &published, true).await;
    let [fresh_pin, staged_pin, published_pin] =
        [&fresh, &staged, &published].map(|v| pin(&data(&state, v)));

    delete(c, &state, &staged).await;
    delete(c, &state, &published).await;
    assert_eq!(kept(&state), [], "a staged volume's directory is not kept");
    for fd in [&staged_pin, &published_pin] {
        assert_eq!(rustix::fs::fstat(fd).unwrap().st_nlink, 0, "removed");
    }

    delete(c, &state, &fresh).await;
    // Listed for reuse as soon as it is in `free/`: the next creation takes it.
    assert_eq!(kept_soon(&state).await, [inode_of(&fresh_pin)]);
    let next = create(c, "next").await;
    let next_dir = data(&state, &next);
    assert_eq!(
        inode_at(&next_dir),
        inode_of(&fresh_pin),
        "the never-staged volume's directory is reused"
    );
    assert!(as_new(&next_dir), "and it is as a new one is");
    assert_eq!(kept(&state), []);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_descriptor_into_a_staged_volume_never_reaches_the_next_volumes() {
    if !can_mount("a_descriptor_into_a_staged_volume_never_reaches_the_next_volumes") {
        return;
    }
    let s = Served::start(|_| {}).await;
    let (c, state) = (&s.client, s.state_dir());
    let v = create(c, "workload").await;
    let staging = s.path("staging");
    let target = s.path("pod");
    c.node_stage_volume(stage_req(&v, &staging)).await.unwrap();
    c.node_publish_volume(publish_req(&v, &staging, &target))
        .await
        .unwrap();
    // A pod's mount namespace holds its own copy of the mount, which the
    // node's unmounts do not end: here a bind mount of the target, through
    // which the workload opens its descriptors, then detached lazily (it
    // lives on as long as they do).
    let ns = s.dir.path().join("pod-namespace");
    fs::create_dir(&ns).unwrap();
    csi_node::bind_mount(target.as_path(), &ns, &MountOptions::default(), false).unwrap();
    let dir = fs::File::open(&ns).unwrap();
    fs::write(ns.join("mine"), b"workload data").unwrap();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ns.join("mine"))
        .unwrap();
    // Left empty, as a new volume's directory is: only the rule on staged
    // volumes keeps it from being reused.
    fs::remove_file(ns.join("mine")).unwrap();
    csi_node::release_under(&ns);

    // A volume never staged, deleted after the workload's: its directory
    // is kept, so the next creation takes a kept one.
    let donor = create(c, "donor").await;
    unpublish(c, &v, target).await;
    unstage(c, &v, staging).await;
    delete(c, &state, &v).await;
    delete(c, &state, &donor).await;
    let kept_now = kept_soon(&state).await.len();
    // Every kept directory taken, and one more volume made new.
    let mut next = Vec::new();
    for i in 0..=kept_now {
        next.push(data(&state, &create(c, &format!("next-{i}")).await));
    }
    assert_eq!(kept(&state), [], "the kept directories were taken");
    for n in &next {
        fs::write(n.join("secret"), b"the next tenant's data").unwrap();
    }

    // Through its descriptor the workload sees nothing of the next
    // volumes and can put nothing into them: its directory is deleted.
    let seen = rustix::fs::openat(&dir, "secret", OFlags::RDONLY, Mode::empty());
    assert_eq!(
        seen.err(),
        Some(rustix::io::Errno::NOENT),
        "the workload reads the next volume's data"
    );
    let names: Vec<String> = rustix::fs::Dir::read_from(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    assert_eq!(names, Vec::<String>::new());
    let made = rustix::fs::openat(
        &dir,
        "probe",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    );
    assert_eq!(
        made.err(),
        Some(rustix::io::Errno::NOENT),
        "the workload writes into a next volume"
    );
    let st = rustix::fs::fstat(&dir).unwrap();
    assert_eq!(st.st_nlink, 0);
    for n in &next {
        assert_ne!(inode_at(n), (st.st_dev, st.st_ino));
    }
    // Its open file is still its own, and lands in no new volume.
    file.write_all(b" and more").unwrap();
    for n in &next {
        let names: Vec<_> = fs::read_dir(n)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{}", n.display());
    }
}

/// The driver binary, killed on drop unless stopped.
struct Driver(Child);

impl Driver {
    fn spawn(state: &Path, endpoint: &str) -> Driver {
        Driver(
            Command::new(env!("CARGO_BIN_EXE_local"))
                .args(["--endpoint", endpoint, "--node-id", "node-1"])
                .arg("--state-dir")
                .arg(state)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// SIGKILL: no record is written, no snapshot saved on the way out.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_sigkill_and_the_journal_s_replay_a_staged_volume_s_directory_is_still_not_reused()
{
    if !can_mount(
        "after_a_sigkill_and_the_journal_s_replay_a_staged_volume_s_directory_is_still_not_reused",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    let driver = Driver::spawn(&state, &endpoint);
    let c = connect(&endpoint).await;
    let fresh = create(&c, "fresh").await;
    let staged = create(&c, "staged").await;
    let published = create(&c, "published").await;
    let refused = create(&c, "refused").await;
    use_on_node(&c, dir.path(), &staged, false).await;
    use_on_node(&c, dir.path(), &published, true).await;
    // A stage that fails at its mount (the staging path lies under a file)
    // counts as a stage: the mark is saved before the mount is tried, so
    // that a mount a crash leaves unrecorded is of a marked volume.
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let under_file = node_path(&file.join("staging"));
    assert!(
        c.node_stage_volume(stage_req(&refused, &under_file))
            .await
            .is_err()
    );
    let pins: Vec<(VolumeId, OwnedFd)> = [&fresh, &staged, &published, &refused]
        .into_iter()
        .map(|v| (v.clone(), pin(&data(&state, v))))
        .collect();
    drop(c);
    driver.kill();

    let driver = Driver::spawn(&state, &endpoint);
    let c = connect(&endpoint).await;
    for (v, _) in &pins {
        delete(&c, &state, v).await;
    }
    let fresh_inode = inode_of(&pins[0].1);
    assert_eq!(
        kept_soon(&state).await,
        [fresh_inode],
        "only the never-staged volume's directory is kept"
    );
    for (v, fd) in &pins[1..] {
        assert_eq!(rustix::fs::fstat(fd).unwrap().st_nlink, 0, "{v} removed");
    }
    drop(c);
    drop(driver);
    csi_node::release_under(dir.path());
}
