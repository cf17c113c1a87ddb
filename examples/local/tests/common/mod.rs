//! Shared test harness: the driver served in process on a unix socket in a
//! temporary directory, and a `csi_types::client::Client` connected to it.

#![allow(dead_code)] // Each test crate uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_types::client::Client;
use csi_types::{
    Code, Csi, CsiError,
    controller::CreateVolumeRequest,
    ids::{NodePath, VolumeId, VolumeName},
    node::{
        NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
        NodeUnstageVolumeRequest,
    },
    redact::Secrets,
    types::{AccessMode, CapacityRange, Map, VolumeCapability, VolumeContentSource},
};
use local::{Config, LocalDriver};

/// A served driver. Dropping it stops the server.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub client: Client,
    pub endpoint: String,
    pub driver: LocalDriver,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Served {
    /// The driver with the default test configuration, adjusted by `tune`.
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_state_dir(dir.path().join("state"));
        tune(&mut cfg);
        Self::start_in(dir, cfg).await
    }

    /// Serves a driver with `cfg` (its state dir inside `dir`).
    pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> Served {
        let driver = LocalDriver::open(cfg).unwrap();
        let socket = dir.path().join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = {
            let driver = driver.clone();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                local::serve(&driver, &endpoint, async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        let client = connect(&endpoint).await;
        Served {
            dir,
            client,
            endpoint,
            driver,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the server and waits for it; returns the temp dir for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap().unwrap();
        }
        let socket = self.dir.path().join("csi.sock");
        assert!(!socket.exists(), "the socket is removed on shutdown");
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A fresh directory under the test's temp dir, as a node path.
    pub fn path(&self, name: &str) -> NodePath {
        node_path(&self.dir.path().join(name))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // A failed test may leave mounts and loop devices behind; never let
        // the temp dir's removal reach through them.
        csi_node::release_under(self.dir.path());
    }
}

pub fn node_path(p: &Path) -> NodePath {
    NodePath::new(p.to_string_lossy().into_owned()).unwrap()
}

/// Connects, retrying while the server starts (for at most a minute: a
/// debug build starting on a loaded CI box can take seconds).
pub async fn connect(endpoint: &str) -> Client {
    for _ in 0..3000 {
        if let Ok(c) = Client::connect(endpoint).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not connect to {endpoint}");
}

pub const MIB: u64 = 1 << 20;

/// A mount-volume request of `bytes` (required only).
/// Creates a volume and returns its id.
pub async fn new_volume(c: &Client, r: CreateVolumeRequest) -> csi_types::ids::VolumeId {
    c.create_volume(r).await.unwrap().volume.volume_id
}

pub fn mount_req(name: &str, bytes: u64) -> CreateVolumeRequest {
    req(
        name,
        bytes,
        VolumeCapability::mount(AccessMode::SingleNodeWriter),
    )
}

/// A block-volume request of `bytes`.
pub fn block_req(name: &str, bytes: u64) -> CreateVolumeRequest {
    req(
        name,
        bytes,
        VolumeCapability::block(AccessMode::SingleNodeWriter),
    )
}

pub fn req(name: &str, bytes: u64, cap: VolumeCapability) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: VolumeName::new(name).unwrap(),
        capacity_range: Some(CapacityRange {
            required_bytes: Some(bytes),
            limit_bytes: None,
        }),
        volume_capabilities: vec![cap],
        parameters: Map::new(),
        secrets: Secrets::default(),
        volume_content_source: None,
        accessibility_requirements: None,
        mutable_parameters: Map::new(),
    }
}

pub fn from(mut r: CreateVolumeRequest, source: VolumeContentSource) -> CreateVolumeRequest {
    r.volume_content_source = Some(source);
    r
}

/// The error code of a result, panicking with the value on success.
pub fn code<T: std::fmt::Debug>(r: Result<T, CsiError>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e.code()
        }
    }
}

/// Whether mount tests can run; prints why not when they cannot. With
/// `CI=true` a test that cannot mount fails instead of passing unchecked.
pub fn can_mount(test: &str) -> bool {
    if csi_node::is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test}: mounts need root and this test runs as uid != 0 (CI=true: failing, not skipping)"
    );
    eprintln!("skipping {test}: mounts need root and this test runs as uid != 0");
    false
}

/// Says why `test` skips its loop-device checks (a block stage refused with `FAILED_PRECONDITION`:
/// no free loop device, no loop module); under `CI=true` the test fails instead, as
/// [`can_mount`] does: CI runs where loop devices exist.
pub fn skip_without_loop_devices(test: &str, why: &dyn std::fmt::Display) {
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test}: a block volume did not stage ({why}) (CI=true: failing, not skipping)"
    );
    eprintln!("skipping the loop device checks of {test}: {why}");
}

/// Waits until `path` is gone: the driver disposes of a deleted volume's
/// data after answering the deletion (its remover task). Panics if it is
/// still there after ten seconds.
pub async fn gone(path: &Path) {
    for _ in 0..1000 {
        if std::fs::symlink_metadata(path).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} is still there ten seconds after its deletion",
        path.display()
    );
}

/// How many loop devices serve `image` (`losetup -j`).
pub fn loops_of(image: &Path) -> usize {
    loop_devices_of(image).len()
}

/// The loop devices serving `image` (`losetup -j`), by path.
pub fn loop_devices_of(image: &Path) -> Vec<String> {
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split_once(':')?.0.to_string()))
        .collect()
}

/// Detaches, when dropped, every loop device `losetup -j` finds over `image` (only this test's
/// own image), so that a test of the driver's own detaching leaks nothing when it fails.
pub struct DetachLoopsOf(pub std::path::PathBuf);

impl Drop for DetachLoopsOf {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("losetup")
            .arg("-j")
            .arg(&self.0)
            .output()
        else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((dev, _)) = line.split_once(':') {
                let _ = std::process::Command::new("losetup")
                    .args(["-d", dev])
                    .status();
            }
        }
    }
}

/// Whether `cond` holds within 30 s (a bound on a hang; udev on a loaded
/// box can take seconds). A detached loop device that udev is
/// still probing is cleared by the kernel when udev closes it, a moment later.
pub fn eventually(cond: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// The requests of the node calls for volume `v`, with no secrets and no context.
pub fn stage(v: &VolumeId, staging: &NodePath, cap: &VolumeCapability) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: v.clone(),
        publish_context: Map::new(),
        staging_target_path: staging.clone(),
        volume_capability: cap.clone(),
        secrets: Secrets::default(),
        volume_context: Map::new(),
    }
}

pub fn publish(
    v: &VolumeId,
    staging: Option<&NodePath>,
    target: &NodePath,
    cap: &VolumeCapability,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: v.clone(),
        publish_context: Map::new(),
        staging_target_path: staging.cloned(),
        target_path: target.clone(),
        volume_capability: cap.clone(),
        readonly,
        secrets: Secrets::default(),
        volume_context: Map::new(),
    }
}

pub fn unpublish(v: &VolumeId, target: &NodePath) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: v.clone(),
        target_path: target.clone(),
    }
}

pub fn unstage(v: &VolumeId, staging: &NodePath) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: v.clone(),
        staging_target_path: staging.clone(),
    }
}
