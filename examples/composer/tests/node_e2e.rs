//! End to end on the node side with real mounts: RAID1 and RAID10 volumes
//! staged through raid-engine + FUSE + loop + ext4, a data set written through
//! the mounted filesystems, a tolerable drive failure (marked in the composer,
//! failed in the engine), every file read back equal, the repair plan applied
//! and the replacement rebuilt, a different tolerable failure, read back equal.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the test says so
//! and passes, except under `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use composer::ComposerDriver;
use composer::node::{Backend, NodeConfig};
use composer_core::{Inventory, MemStore};
use csi_types::prelude::*;
use csi_types::{
    controller::{ControllerGetVolumeRequest, ControllerPublishVolumeRequest},
    ids::{NodeId, NodePath, VolumeId},
    node::{
        NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
        NodeUnstageVolumeRequest,
    },
    redact::Secrets,
    types::{AccessMode, Map, VolumeCapability},
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The demo's inventory: two racks, a JBOD of ten 256 MiB HDDs in each.
const INVENTORY: &str = composer::demo::DEMO_INVENTORY;

/// Whether this host can mount (root, FUSE, loop); `None` when it can.
fn missing() -> Option<String> {
    composer::demo::missing_prerequisite()
}

/// Whether the test is to be skipped, said on stderr: this host cannot mount (a failure under
/// `CI=true`).
fn cannot_mount() -> bool {
    let Some(why) = missing() else {
        return false;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but this host cannot mount: {why}"
    );
    eprintln!("SKIPPED: the node side needs root, FUSE and loop devices: {why}");
    true
}

fn mount_cap() -> VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter)
}

mod common;

use common::InProcess as Setup;

fn setup() -> Setup {
    Setup::new()
}

/// Creates, controller-publishes, stages and publishes a volume; returns its
/// id and target path.
async fn provision(s: &Setup, name: &str, bytes: u64) -> (String, PathBuf) {
    let mut req =
        composer::create_request(name, &[("type", "hdd"), ("redundancy", "true")], bytes).unwrap();
    req.volume_capabilities = vec![mount_cap()];
    let vol = Csi::create_volume(&s.plugin, req).await.unwrap().volume;
    let id = vol.volume_id.clone();
    Csi::controller_publish_volume(
        &s.plugin,
        ControllerPublishVolumeRequest {
            volume_id: id.clone(),
            node_id: NodeId::new("r1-n1").unwrap(),
            volume_capability: mount_cap(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: vol.volume_context.clone(),
        },
    )
    .await
    .unwrap();
    let staging = s.dir.path().join("staging").join(name);
    let target = s.dir.path().join("target").join(name);
    stage_at(&s.plugin, &vol, &staging, Secrets::default())
        .await
        .unwrap();
    Csi::node_publish_volume(
        &s.plugin,
        NodePublishVolumeRequest {
            volume_id: id.clone(),
            publish_context: Map::new(),
            staging_target_path: Some(NodePath::new(staging.to_str().unwrap()).unwrap()),
            target_path: NodePath::new(target.to_str().unwrap()).unwrap(),
            volume_capability: mount_cap(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: vol.volume_context,
        },
    )
    .await
    .unwrap();
    assert!(csi_node::is_mount_point(&target).unwrap());
    (id.as_str().to_string(), target)
}

/// Writes a data set of files with seeded contents; returns name → bytes.
fn write_data(target: &Path, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut files = BTreeMap::new();
    for i in 0..24 {
        let len = rng.random_range(1..(2 << 20));
        let mut data = vec![0u8; len];
        rng.fill(&mut data[..]);
        let name = format!("f{i:02}");
        std::fs::write(target.join(&name), &data).unwrap();
        let f = std::fs::File::open(target.join(&name)).unwrap();
        f.sync_all().unwrap();
        files.insert(name, data);
    }
    files
}

fn drop_caches() {
    // Read through the volume, not the page cache (best effort).
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn verify(target: &Path, files: &BTreeMap<String, Vec<u8>>) {
    drop_caches();
    for (name, data) in files {
        let got = std::fs::read(target.join(name)).unwrap();
        assert!(got == *data, "{name} differs after the failure");
    }
}

/// Fails the member in `role` (composer mark + engine), checks the data,
/// applies the repair plan and rebuilds; returns the drive failed.
async fn fail_and_rebuild(
    s: &Setup,
    id: &str,
    role: usize,
    target: &Path,
    files: &BTreeMap<String, Vec<u8>>,
) -> String {
    let c = s.driver.composer();
    let side = s.driver.node_side().unwrap();
    let drive = c.get(id).unwrap().members[role].drive.clone();
    c.mark(&drive, composer_core::Health::Failed).unwrap();
    assert_eq!(side.fail_drive(&drive).unwrap(), vec![id.to_string()]);
    let cond = side.condition(id).unwrap();
    assert!(
        cond.abnormal && cond.message.contains("degraded"),
        "{cond:?}"
    );
    // The controller reports the engine's view too (same process).
    let got = Csi::controller_get_volume(
        &s.plugin,
        ControllerGetVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
        },
    )
    .await
    .unwrap();
    let cc = got.status.volume_condition.unwrap();
    assert!(cc.abnormal && cc.message.contains(&drive), "{cc:?}");
    verify(target, files);
    let plan = c.apply_repair(&drive).unwrap();
    assert!(
        !plan.moves.is_empty(),
        "the repair plan moves the failed member"
    );
    let rec = c.get(id).unwrap();
    assert_ne!(
        rec.members[role].drive, drive,
        "a replacement drive was chosen"
    );
    let last = std::sync::Mutex::new((0u64, 0u64));
    let roles = side
        .rebuild_to(&rec, None, &|_, p| {
            *last.lock().unwrap() = (p.done_bytes, p.total_bytes)
        })
        .unwrap();
    assert_eq!(roles, vec![role]);
    let (done, total) = *last.lock().unwrap();
    assert!(
        total > 0 && done == total,
        "progress reached the end: {done}/{total}"
    );
    let cond = side.condition(id).unwrap();
    assert!(!cond.abnormal, "{cond:?}");
    verify(target, files);
    drive
}

async fn teardown(s: &Setup, id: &str, name: &str) {
    let staging = s.dir.path().join("staging").join(name);
    let target = s.dir.path().join("target").join(name);
    Csi::node_unpublish_volume(
        &s.plugin,
        NodeUnpublishVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            target_path: NodePath::new(target.to_str().unwrap()).unwrap(),
        },
    )
    .await
    .unwrap();
    Csi::node_unstage_volume(
        &s.plugin,
        NodeUnstageVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            staging_target_path: NodePath::new(staging.to_str().unwrap()).unwrap(),
        },
    )
    .await
    .unwrap();
    assert!(!csi_node::is_mount_point(&staging).unwrap_or(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid1_and_raid10_survive_failures_and_rebuild_through_mounted_filesystems() {
    if cannot_mount() {
        return;
    }
    let s = setup();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    for (name, bytes, seed) in [("mirror", 200u64 << 20, 1u64), ("striped", 400 << 20, 2)] {
        let (id, target) = provision(&s, name, bytes).await;
        let rec = s.driver.composer().get(&id).unwrap();
        let kind = rec.layout.kind;
        let n = rec.members.len();
        match name {
            "mirror" => assert_eq!((kind.name(), n), ("raid1", 2)),
            _ => assert_eq!((kind.name(), n), ("raid10", 4)),
        }
        let files = write_data(&target, seed);
        // Any one member is a tolerable failure of RAID1 and RAID10 (n2).
        let first = rng.random_range(0..n);
        fail_and_rebuild(&s, &id, first, &target, &files).await;
        // A different one: in RAID10, also in the other mirror pair.
        let second = (first + 1 + rng.random_range(0..n - 1)) % n;
        assert_ne!(first, second);
        fail_and_rebuild(&s, &id, second, &target, &files).await;
        teardown(&s, &id, name).await;
    }
}

/// The mdadm backend never falls back to the user-space engine: it answers
/// FAILED_PRECONDITION saying why (no md here, or no mdadm assembly in this
/// build), before touching any mount.
/// A composer serving node r1-n1 with `backend`, its drives and run
/// directory under `dir`.
fn driver_with(dir: &Path, backend: Backend) -> ComposerDriver {
    let inv = Inventory::from_toml(INVENTORY).unwrap();
    ComposerDriver::open(inv, Arc::new(MemStore::default()), Some("r1-n1"))
        .unwrap()
        .with_node_side(NodeConfig {
            data_dir: dir.join("drives"),
            run_dir: dir.join("run"),
            backend,
        })
}

/// Creates a mount volume and controller-publishes it to r1-n1.
/// NodeStageVolume of `vol` at `staging` (mount access), with `secrets`.
async fn stage_at(
    plugin: &csi_types::Plugin,
    vol: &csi_types::types::Volume,
    staging: &Path,
    secrets: Secrets,
) -> Result<csi_types::node::NodeStageVolumeResponse, CsiError> {
    Csi::node_stage_volume(
        plugin,
        NodeStageVolumeRequest {
            volume_id: vol.volume_id.clone(),
            publish_context: Map::new(),
            staging_target_path: NodePath::new(staging.to_str().unwrap()).unwrap(),
            volume_capability: mount_cap(),
            secrets,
            volume_context: vol.volume_context.clone(),
        },
    )
    .await
}

async fn create_published(
    plugin: &csi_types::Plugin,
    name: &str,
    params: &[(&str, &str)],
    bytes: u64,
) -> csi_types::types::Volume {
    let mut req = composer::create_request(name, params, bytes).unwrap();
    req.volume_capabilities = vec![mount_cap()];
    let vol = Csi::create_volume(plugin, req).await.unwrap().volume;
    Csi::controller_publish_volume(
        plugin,
        ControllerPublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            node_id: NodeId::new("r1-n1").unwrap(),
            volume_capability: mount_cap(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: vol.volume_context.clone(),
        },
    )
    .await
    .unwrap();
    vol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdadm_backend_answers_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver_with(dir.path(), Backend::Mdadm);
    let plugin = driver.plugin().unwrap();
    let params = [("type", "hdd"), ("redundancy", "true")];
    let vol = create_published(&plugin, "m", &params, 200 << 20).await;
    let staging = dir.path().join("staging");
    let err = stage_at(&plugin, &vol, &staging, Secrets::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let md = Path::new("/proc/mdstat").exists();
    let want = if md {
        "not available in this composer build"
    } else {
        "needs Linux md"
    };
    assert!(err.to_string().contains(want), "{err}");
    assert!(!staging.exists(), "nothing was mounted or created");
}

/// An explicit dm-crypt/LUKS request never stages as plaintext nor falls
/// back to the engine's encryption: on a host without dm-crypt (here:
/// device-mapper's node is there, the driver is not) FAILED_PRECONDITION
/// naming what the host lacks, for a RAID1, a single drive and a slice,
/// before anything is touched: no drive file, loop device, mount, FUSE
/// directory, mapping or staged record is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn luks_request_answers_failed_precondition() {
    let missing = composer::luks::dm_crypt_missing();
    if missing.is_empty() {
        eprintln!(
            "SKIPPED: this host has dm-crypt; the FAILED_PRECONDITION answer is not given here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let driver = driver_with(dir.path(), Backend::Userspace);
    let plugin = driver.plugin().unwrap();
    let mappings = || -> Vec<String> {
        std::fs::read_dir("/dev/mapper")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("composer-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = mappings();
    for (name, kind) in [
        ("l-raid1", "hdd"),
        ("l-single", "hdd"),
        ("l-slice", "slice"),
    ] {
        let mut params = vec![
            ("type", kind),
            ("encrypt", "true"),
            ("encryptionFormat", "luks"),
        ];
        if name == "l-raid1" {
            params.push(("redundancy", "true"));
        }
        let vol = create_published(&plugin, name, &params, 100 << 20).await;
        let staging = dir.path().join("staging").join(name);
        let secrets = Secrets::new(
            [(
                composer::node::ENCRYPTION_SECRET.to_string(),
                "correct horse battery staple".to_string(),
            )]
            .into(),
        )
        .unwrap();
        let err = stage_at(&plugin, &vol, &staging, secrets)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains("encryptionFormat=luks"), "{text}");
        for m in &missing {
            assert!(
                text.contains(m.as_str()),
                "{name}: {text} does not name {m}"
            );
        }
        let side = driver.node_side().unwrap();
        assert!(side.staged_at(vol.volume_id.as_str()).is_none(), "{name}");
        assert!(!staging.exists(), "{name}: nothing was mounted or created");
        assert!(
            !dir.path().join("drives").exists(),
            "{name}: no drive was opened"
        );
        assert!(!dir.path().join("run").join(vol.volume_id.as_str()).exists());
        assert!(csi_node::LoopDevice::backed_under(dir.path()).is_empty());
        assert!(csi_node::mounts_under(dir.path()).unwrap().is_empty());
        assert_eq!(mappings(), before, "{name}: no device-mapper entry");
        let state = std::fs::read_to_string(dir.path().join("run").join("node-state.json"))
            .unwrap_or_default();
        assert!(!state.contains(vol.volume_id.as_str()), "{name}: {state}");
    }
}

/// Mounts a tmpfs on `path` as someone else would (an operator, another driver), with a marker
/// file in it.
fn stack_tmpfs(path: &Path) {
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "foreign-tmpfs"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", path.display());
    std::fs::write(path.join("marker"), b"not the composer's").unwrap();
}

/// Unpublish and unstage take off only the composer's own mounts: a tmpfs someone else stacked
/// on the published target (or on the staging path) is refused with FAILED_PRECONDITION naming
/// the path, and stays mounted with its files; once its owner unmounts it, the same calls
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_and_unstage_leave_a_mount_stacked_by_someone_else() {
    if cannot_mount() {
        return;
    }
    let s = setup();
    let name = "stacked";
    let (id, target) = provision(&s, name, 100 << 20).await;
    let staging = s.dir.path().join("staging").join(name);
    let vid = VolumeId::new(&id).unwrap();
    let unpublish = || {
        Csi::node_unpublish_volume(
            &s.plugin,
            NodeUnpublishVolumeRequest {
                volume_id: vid.clone(),
                target_path: NodePath::new(target.to_str().unwrap()).unwrap(),
            },
        )
    };
    let unstage = || {
        Csi::node_unstage_volume(
            &s.plugin,
            NodeUnstageVolumeRequest {
                volume_id: vid.clone(),
                staging_target_path: NodePath::new(staging.to_str().unwrap()).unwrap(),
            },
        )
    };

    stack_tmpfs(&target);
    let err = unpublish().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains(target.to_str().unwrap()), "{err}");
    assert!(
        std::fs::read(target.join("marker")).is_ok(),
        "the foreign tmpfs stays mounted"
    );
    csi_node::unmount(&target).unwrap();
    assert!(
        csi_node::is_mount_point(&target).unwrap(),
        "the volume's bind stayed under it"
    );
    unpublish().await.unwrap();
    assert!(!target.exists());

    stack_tmpfs(&staging);
    let err = unstage().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains(staging.to_str().unwrap()), "{err}");
    assert!(std::fs::read(staging.join("marker")).is_ok());
    csi_node::unmount(&staging).unwrap();
    unstage().await.unwrap();
    assert!(!csi_node::is_mount_point(&staging).unwrap_or(false));
}
