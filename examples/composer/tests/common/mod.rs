//! What the tests that run the `composer` binary with its node side share.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use csi_types::client::Client;
use csi_types::{controller::*, ids::*, node::*, prelude::*, redact::*, types::*};

/// A `composer serve` process with its node side, and a client.
pub struct Server {
    pub child: Child,
    pub client: Client,
    pub admin: PathBuf,
}

impl Server {
    /// Starts with RUST_LOG=warn.
    pub async fn start(dir: &Path) -> Server {
        Server::start_logging(dir, "warn").await
    }

    /// Starts with RUST_LOG=`log`, the log in `dir/server.log`.
    // The child is moved into `Server` at once; `kill` reaps it.
    #[allow(clippy::zombie_processes)]
    pub async fn start_logging(dir: &Path, log: &str) -> Server {
        let sock = dir.join("csi.sock");
        let admin = dir.join("admin.sock");
        let _ = std::fs::remove_file(&admin);
        let endpoint = format!("unix://{}", sock.display());
        let inv = dir.join("inventory.toml");
        std::fs::write(&inv, composer::demo::DEMO_INVENTORY).unwrap();
        let child: Child = Command::new(env!("CARGO_BIN_EXE_composer"))
            .args(["serve", "--endpoint", &endpoint, "--state"])
            .arg(dir.join("state.redb"))
            .arg("--admin-socket")
            .arg(&admin)
            .arg("--inventory")
            .arg(&inv)
            .args(["--node-id", "r1-n1", "--data-dir"])
            .arg(dir.join("node"))
            .env("RUST_LOG", log)
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("server.log"))
                    .unwrap(),
            ))
            .spawn()
            .expect("the composer binary starts");
        for _ in 0..2400 {
            // A connection, not the file: the socket file exists a moment
            // before it listens.
            if tokio::net::UnixStream::connect(&admin).await.is_ok()
                && let Ok(client) = Client::connect(&endpoint).await
            {
                return Server {
                    child,
                    client,
                    admin,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the composer did not come up on {endpoint}");
    }

    /// Sends SIGTERM and waits for the process to end, at most `bound`
    /// (a generous bound on a hang, not a speed check); panics if it does
    /// not end.
    pub fn terminate(mut self, bound: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(st.success(), "kill -TERM {pid}");
        let until = std::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > until {
                self.child.kill().expect("SIGKILL");
                self.child.wait().expect("reaped");
                panic!("the composer did not end within {bound:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        // SIGKILL by PID: the process gets no chance to clean up.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    /// A test that panics leaves no composer behind (SIGKILL by PID; a
    /// process already reaped is not signalled again).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cap() -> VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter)
}

pub fn np(p: &Path) -> NodePath {
    NodePath::new(p.to_str().unwrap()).unwrap()
}

/// A volume staged and published by a test.
pub struct Vol {
    pub id: String,
    pub staging: PathBuf,
    pub target: PathBuf,
}

pub async fn stage<C: Csi>(c: &C, v: &Vol) -> Result<NodeStageVolumeResponse, CsiError> {
    stage_with(c, v, &Map::new()).await
}

/// Stages with the publish context `ctx` (an `nbd` volume's names the agent).
pub async fn stage_with<C: Csi>(
    c: &C,
    v: &Vol,
    ctx: &Map,
) -> Result<NodeStageVolumeResponse, CsiError> {
    Csi::node_stage_volume(
        c,
        NodeStageVolumeRequest {
            volume_id: VolumeId::new(&v.id).unwrap(),
            publish_context: ctx.clone(),
            staging_target_path: np(&v.staging),
            volume_capability: cap(),
            secrets: Secrets::default(),
            volume_context: Map::new(),
        },
    )
    .await
}

pub async fn publish<C: Csi>(c: &C, v: &Vol) -> Result<NodePublishVolumeResponse, CsiError> {
    Csi::node_publish_volume(
        c,
        NodePublishVolumeRequest {
            volume_id: VolumeId::new(&v.id).unwrap(),
            publish_context: Map::new(),
            staging_target_path: Some(np(&v.staging)),
            target_path: np(&v.target),
            volume_capability: cap(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        },
    )
    .await
}

pub async fn teardown<C: Csi>(c: &C, v: &Vol) {
    Csi::node_unpublish_volume(
        c,
        NodeUnpublishVolumeRequest {
            volume_id: VolumeId::new(&v.id).unwrap(),
            target_path: np(&v.target),
        },
    )
    .await
    .unwrap();
    Csi::node_unstage_volume(
        c,
        NodeUnstageVolumeRequest {
            volume_id: VolumeId::new(&v.id).unwrap(),
            staging_target_path: np(&v.staging),
        },
    )
    .await
    .unwrap();
    assert!(!csi_node::is_mount_point(&v.staging).unwrap_or(false));
    assert!(!csi_node::is_mount_point(&v.target).unwrap_or(false));
}

pub fn data(seed: u8) -> BTreeMap<String, Vec<u8>> {
    (0..4u8)
        .map(|i| {
            let d: Vec<u8> = (0..(1u32 << 20) + u32::from(i) * 8191)
                .map(|b| (b as u8).wrapping_mul(seed) ^ i)
                .collect();
            (format!("f{i}"), d)
        })
        .collect()
}

pub fn check(target: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    for (name, d) in files {
        let got = std::fs::read(target.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", target.join(name).display()));
        assert!(got == *d, "{name} differs after the restart");
    }
}

/// Asserts that no mount and no loop device is left under `dir`.
pub fn assert_nothing_left(dir: &Path) {
    let mounts = csi_node::mounts_under(dir).unwrap();
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    // The kernel defers a detach while a udev probe or a closing reader holds the device.
    let mut loops = Vec::new();
    for _ in 0..500 {
        loops = csi_node::LoopDevice::backed_under(dir)
            .iter()
            .map(|l| l.path().to_path_buf())
            .collect::<Vec<PathBuf>>();
        if loops.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(loops.is_empty(), "left attached: {loops:?}");
}

/// The loop devices a test's composer attached, by attachment (device and
/// disk sequence number), so that the end of the test can fail on any of
/// them still attached, including one whose backing file the kernel no
/// longer names below the test's directory (a FUSE file whose mount was
/// lazily unmounted shows as `/volume`), which no search below the directory
/// finds.
///
/// A device is the test's when it was not attached at the start and, at
/// some [`LoopLedger::note`], its backing file lay below the directory or a
/// mount below the directory was made from it. Devices that other processes
/// attach meanwhile (other tests, demos) are never counted, and never
/// touched: dropping the ledger detaches only the test's own attachments
/// that are left, so that a failing test does not leave them behind.
///
/// It does not fail on every new device whose backing path is gone
/// (`/volume`): other processes on the host leave such devices too (old
/// builds of this very test, run by someone else meanwhile), and a test
/// cannot tell theirs from its own without having noted it. On a kernel
/// without disk sequence numbers (before Linux 5.15) a device number is all
/// there is: one detached and attached again by another process would count
/// as left, and the drop then detaches nothing.
pub struct LoopLedger {
    dir: PathBuf,
    before: Vec<csi_node::LoopDevice>,
    seen: Vec<csi_node::LoopDevice>,
}

impl LoopLedger {
    /// Starts with the loop devices attached now, none of them the test's.
    pub fn start(dir: &Path) -> LoopLedger {
        LoopLedger {
            dir: std::fs::canonicalize(dir).unwrap(),
            before: csi_node::LoopDevice::all()
                .into_iter()
                .map(|(d, _)| d)
                .collect(),
            seen: Vec::new(),
        }
    }

    /// Notes the test's loop devices attached now: call it whenever volumes
    /// are staged (their devices are mounted below the directory then).
    pub fn note(&mut self) {
        let mut found = csi_node::LoopDevice::backed_under(&self.dir);
        for m in csi_node::mount_table().unwrap() {
            if m.mount_point.starts_with(&self.dir)
                && let Some(d) = csi_node::LoopDevice::open(Path::new(&m.source))
            {
                found.push(d);
            }
        }
        for d in found {
            if !self.before.contains(&d) && !self.seen.contains(&d) {
                self.seen.push(d);
            }
        }
    }

    /// The test's noted loop devices still attached, with their backing
    /// files as the kernel names them.
    pub fn attached(&self) -> Vec<(csi_node::LoopDevice, PathBuf)> {
        self.seen
            .iter()
            .filter_map(|d| d.backing_file().map(|b| (d.clone(), b)))
            .collect()
    }

    /// How many of the test's loop devices have been noted.
    pub fn noted(&self) -> usize {
        self.seen.len()
    }

    /// Asserts that every loop device the test attached is detached (after
    /// noting what is attached now), waiting a while for a detach that the
    /// kernel deferred until a udev probe or a closing reader lets go.
    pub fn assert_released(&mut self) {
        self.note();
        let mut left = Vec::new();
        for _ in 0..500 {
            left = self
                .attached()
                .iter()
                .map(|(d, b)| format!("{} over {}", d.path().display(), b.display()))
                .collect::<Vec<String>>();
            if left.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "loop devices the test attached are left attached: {left:?} (of {} noted)",
            self.seen.len()
        );
    }
}

impl Drop for LoopLedger {
    fn drop(&mut self) {
        // Only attachments the kernel numbers: a bare device number may
        // serve another process by now.
        for d in self.seen.iter().filter(|d| d.diskseq().is_some()) {
            let _ = d.detach();
        }
    }
}

/// Releases every mount and loop device under its directory when dropped.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        csi_node::release_under(&self.0.join("target"));
        csi_node::release_under(&self.0.join("staging"));
        csi_node::release_under(&self.0);
    }
}

/// Controller-publishes volume `id` (mount) to r1-n1; returns the publish
/// context.
pub async fn controller_publish<C: Csi>(c: &C, id: &str) -> Map {
    Csi::controller_publish_volume(
        c,
        ControllerPublishVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            node_id: NodeId::new("r1-n1").unwrap(),
            volume_capability: cap(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        },
    )
    .await
    .unwrap()
    .publish_context
}

/// Creates a mount volume, publishes it to r1-n1, stages and publishes it
/// under `dir/staging/NAME` and `dir/target/NAME`, through `c` (a client of
/// a `composer` process, or a plugin in this one).
pub async fn provision<C: Csi>(
    c: &C,
    dir: &Path,
    name: &str,
    params: &[(&str, &str)],
    bytes: u64,
) -> Vol {
    let v = provision_staged(c, dir, name, params, bytes).await;
    publish(c, &v).await.unwrap();
    v
}

/// [`provision`] without the node publish: the volume is staged under
/// `dir/staging/NAME` only.
pub async fn provision_staged<C: Csi>(
    c: &C,
    dir: &Path,
    name: &str,
    params: &[(&str, &str)],
    bytes: u64,
) -> Vol {
    let (id, _) = create_published(c, name, params, bytes).await;
    let v = Vol {
        id,
        staging: dir.join("staging").join(name),
        target: dir.join("target").join(name),
    };
    stage(c, &v).await.unwrap();
    v
}

/// Creates a mount volume and controller-publishes it to r1-n1; returns
/// its id and the publish context.
pub async fn create_published<C: Csi>(
    c: &C,
    name: &str,
    params: &[(&str, &str)],
    bytes: u64,
) -> (String, Map) {
    let mut req = composer::create_request(name, params, bytes).unwrap();
    req.volume_capabilities = vec![cap()];
    let id = Csi::create_volume(c, req)
        .await
        .unwrap()
        .volume
        .volume_id
        .as_str()
        .to_string();
    let ctx = controller_publish(c, &id).await;
    (id, ctx)
}

/// Writes `files` under `target`, each synced.
pub fn write(target: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (n, d) in files {
        std::fs::write(target.join(n), d).unwrap();
        std::fs::File::open(target.join(n))
            .unwrap()
            .sync_all()
            .unwrap();
    }
}

/// Whether this host can mount (root, `/dev/fuse`, loop devices): when it
/// cannot, prints why (the test then passes), except under `CI=true`, where
/// it fails.
pub fn can_mount() -> bool {
    composer::demo::can_mount_in_tests()
}

/// A composer with its node side for server `r1-n1` (the user-space
/// backend) over the demo's inventory and an in-memory store, its drive
/// files and run files under `dir`; for tests that call the composer and
/// the node side directly, without a `Plugin`.
pub fn driver_in(dir: &Path) -> composer::ComposerDriver {
    use composer::node::{Backend, NodeConfig};
    let inv = composer_core::Inventory::from_toml(composer::demo::DEMO_INVENTORY).unwrap();
    let store = std::sync::Arc::new(composer_core::MemStore::default());
    composer::ComposerDriver::open(inv, store, Some("r1-n1"))
        .unwrap()
        .with_node_side(NodeConfig {
            data_dir: dir.join("drives"),
            run_dir: dir.join("run"),
            backend: Backend::Userspace,
        })
}

/// StorageClass parameters from `key`, `value` pairs.
pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A composer with its node side in this process, over the demo's inventory
/// and a temporary directory; dropping it releases every mount and loop device
/// under that directory.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub driver: composer::ComposerDriver,
    pub plugin: Plugin,
}

impl InProcess {
    /// The node side serves server `r1-n1` with the user-space backend.
    pub fn new() -> InProcess {
        InProcess::build(false)
    }

    /// As [`InProcess::new`], with a JBOD agent exporting the drives over
    /// NBD from `DIR/agent` (the node's own drive files are `DIR/drives`).
    pub fn with_agent() -> InProcess {
        InProcess::build(true)
    }

    fn build(agent: bool) -> InProcess {
        use composer::node::{Backend, NodeConfig};
        let dir = tempfile::tempdir().unwrap();
        let inv = composer_core::Inventory::from_toml(composer::demo::DEMO_INVENTORY).unwrap();
        let store = std::sync::Arc::new(composer_core::MemStore::default());
        let mut driver = composer::ComposerDriver::open(inv.clone(), store, Some("r1-n1")).unwrap();
        if agent {
            let a = composer::agent::JbodAgent::start(
                std::sync::Arc::new(inv),
                &dir.path().join("agent"),
                "127.0.0.1:0",
            )
            .unwrap();
            driver = driver.with_agent(std::sync::Arc::new(a)).unwrap();
        }
        let driver = driver.with_node_side(NodeConfig {
            data_dir: dir.path().join("drives"),
            run_dir: dir.path().join("run"),
            backend: Backend::Userspace,
        });
        let plugin = driver.plugin().unwrap();
        InProcess {
            dir,
            driver,
            plugin,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // Targets and staging mounts first, so that the FUSE files are no
        // longer held when the volumes close.
        csi_node::release_under(&self.dir.path().join("target"));
        csi_node::release_under(&self.dir.path().join("staging"));
        if let Some(s) = self.driver.node_side() {
            s.release_all();
        }
        csi_node::release_under(self.dir.path());
    }
}
