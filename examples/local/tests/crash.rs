//! The driver binary killed with SIGKILL in the middle of a workload of
//! creates, clones and deletes, restarted on the same state directory, and
//! checked: every volume whose CreateVolume was acknowledged is there with
//! all its data, every acknowledged delete stays deleted, and nothing half
//! made is left (no half-copied clone, no temporary data).
//! Finally SIGTERM stops it gracefully and the socket is removed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use csi_types::client::Client;
use csi_types::{
    Csi,
    controller::{ControllerGetVolumeRequest, DeleteVolumeRequest, ListVolumesRequest},
    ids::VolumeId,
    redact::Secrets,
    types::VolumeContentSource,
};
use rand::Rng;

const SEED_FILES: usize = 300;
const ROUNDS: usize = 4;

fn spawn(state: &Path, endpoint: &str, log: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_local"))
        .args([
            "--endpoint",
            endpoint,
            "--node-id",
            "node-1",
            "--capacity",
            "50Gi",
        ])
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[derive(Default)]
struct Ledger {
    /// Acknowledged creates: name -> id.
    created: BTreeMap<String, VolumeId>,
    /// Acknowledged deletes.
    deleted: BTreeSet<VolumeId>,
    /// Deletes cut short by the kill: the volume may or may not be gone.
    maybe_deleted: BTreeSet<VolumeId>,
    /// Acknowledged clones of the seed.
    clones: BTreeSet<VolumeId>,
}

async fn list_all(c: &Client) -> Vec<csi_types::controller::ListVolumesEntry> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_volumes(ListVolumesRequest {
                max_entries: Some(7),
                starting_token: token,
            })
            .await
            .unwrap();
        out.extend(page.entries);
        match page.next_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

async fn verify(c: &Client, state: &Path, ledger: &Ledger, seed: &VolumeId) {
    let listed = list_all(c).await;
    let ids: BTreeSet<VolumeId> = listed.iter().map(|e| e.volume.volume_id.clone()).collect();
    assert_eq!(ids.len(), listed.len(), "no volume listed twice");
    for (name, id) in &ledger.created {
        if !ledger.deleted.contains(id) && !ledger.maybe_deleted.contains(id) {
            assert!(
                ids.contains(id),
                "acknowledged volume {name} ({id}) is gone after the restart"
            );
            // CreateVolume stays idempotent across the restart.
            let again = c.create_volume(mount_req(name, MIB)).await;
            if let Ok(r) = again {
                assert_eq!(&r.volume.volume_id, id, "{name}");
            }
        }
    }
    for id in &ledger.deleted {
        assert!(!ids.contains(id), "acknowledged delete of {id} was undone");
    }
    // Every volume, acknowledged or not, is complete.
    for e in &listed {
        let id = &e.volume.volume_id;
        let got = c
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: id.clone(),
            })
            .await
            .unwrap();
        let cond = got.status.volume_condition.unwrap();
        assert!(!cond.abnormal, "{id}: {}", cond.message);
        if e.volume.content_source == Some(VolumeContentSource::Volume(seed.clone())) {
            let dir = local::volume_data_path(state, id.as_str(), false);
            let n = fs::read_dir(&dir).unwrap().count();
            assert_eq!(n, SEED_FILES, "clone {id} is complete");
            assert_eq!(fs::read(dir.join("f299")).unwrap(), vec![b'z'; 16 << 10]);
        }
    }
    for id in &ledger.clones {
        if !ledger.deleted.contains(id) && !ledger.maybe_deleted.contains(id) {
            assert!(ids.contains(id));
        }
    }
    // On disk: exactly the listed volumes, each in its shard, nothing
    // temporary (an entry outside the 256 shards counts as itself).
    let mut on_disk = BTreeSet::new();
    let mut shards = 0;
    for e in fs::read_dir(state.join("volumes")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let inner: Vec<_> = if name.len() == 2 && e.file_type().unwrap().is_dir() {
            shards += 1;
            fs::read_dir(e.path())
                .unwrap()
                .map(|i| i.unwrap().path())
                .collect()
        } else {
            vec![e.path()]
        };
        for path in inner {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let id = file.trim_end_matches(".img").to_string();
            assert_eq!(
                path,
                local::volume_data_path(state, &id, file.ends_with(".img")),
                "data in its shard"
            );
            on_disk.insert(id);
        }
    }
    assert_eq!(shards, 256);
    let listed_names: BTreeSet<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(on_disk, listed_names, "data on disk matches the metadata");
    assert!(!state.join("state.json.tmp").exists());
}

/// Creates, clones and deletes until the driver dies; records what was acknowledged.
async fn workload(
    c: Client,
    task: usize,
    round: usize,
    seed: VolumeId,
    ledger: Arc<Mutex<Ledger>>,
) {
    for i in 0.. {
        let name = format!("r{round}-t{task}-{i}");
        let result = match i % 4 {
            0 if task == 0 => {
                let victim = {
                    let l = ledger.lock().unwrap();
                    l.created
                        .values()
                        .rev()
                        .find(|id| {
                            !l.deleted.contains(*id)
                                && !l.maybe_deleted.contains(*id)
                                && **id != seed
                        })
                        .cloned()
                };
                if let Some(v) = victim {
                    ledger.lock().unwrap().maybe_deleted.insert(v.clone());
                    match c
                        .delete_volume(DeleteVolumeRequest {
                            volume_id: v.clone(),
                            secrets: Secrets::default(),
                        })
                        .await
                    {
                        Ok(_) => {
                            let mut l = ledger.lock().unwrap();
                            l.maybe_deleted.remove(&v);
                            l.deleted.insert(v);
                            continue;
                        }
                        Err(e) => return died(e),
                    }
                }
                continue;
            }
            1 | 3 => {
                c.create_volume(from(
                    mount_req(&name, 8 * MIB),
                    VolumeContentSource::Volume(seed.clone()),
                ))
                .await
            }
            2 => c.create_volume(block_req(&name, 64 * MIB)).await,
            _ => c.create_volume(mount_req(&name, MIB)).await,
        };
        match result {
            Ok(r) => {
                let mut l = ledger.lock().unwrap();
                let id = r.volume.volume_id;
                if r.volume.content_source.is_some() {
                    l.clones.insert(id.clone());
                }
                l.created.insert(name, id);
            }
            Err(e) => return died(e),
        }
    }
}

/// A call failed: only because the driver was killed, never for a reason of its own.
fn died(e: csi_types::CsiError) {
    use csi_types::Code;
    let own = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::OutOfRange,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
    ];
    assert!(
        !own.contains(&e.code()),
        "the workload failed on its own: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_any_moment_restarts_with_every_acknowledged_volume_and_nothing_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state");
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let log = dir.path().join("driver.log");

    let mut child = spawn(&state, &endpoint, &log);
    let c = connect(&endpoint).await;
    let seed = c
        .create_volume(mount_req("seed", 8 * MIB))
        .await
        .unwrap()
        .volume
        .volume_id;
    let seed_dir = local::volume_data_path(&state, seed.as_str(), false);
    for i in 0..SEED_FILES {
        fs::write(seed_dir.join(format!("f{i}")), vec![b'z'; 16 << 10]).unwrap();
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    ledger
        .lock()
        .unwrap()
        .created
        .insert("seed".into(), seed.clone());
    let mut rng = rand::rng();

    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..4)
            .map(|t| tokio::spawn(workload(c.clone(), t, round, seed.clone(), ledger.clone())))
            .collect();
        // Let the workload acknowledge a few calls, then kill at a random moment.
        let before = ledger.lock().unwrap().created.len();
        let start = std::time::Instant::now();
        while ledger.lock().unwrap().created.len() < before + 3 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round}: the workload made no progress"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        child = spawn(&state, &endpoint, &log);
        let c2 = connect(&endpoint).await;
        let snapshot = std::mem::take(&mut *ledger.lock().unwrap());
        verify(&c2, &state, &snapshot, &seed).await;
        *ledger.lock().unwrap() = snapshot;
    }
    let c = connect(&endpoint).await;
    let ledger = ledger.lock().unwrap();
    eprintln!(
        "{ROUNDS} kills survived: {} creates ({} clones) and {} deletes acknowledged",
        ledger.created.len(),
        ledger.clones.len(),
        ledger.deleted.len()
    );
    drop(c);

    // Graceful shutdown: SIGTERM, exit 0, socket removed.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!socket.exists(), "the socket is removed on shutdown");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGTERM"), "the shutdown is logged");
}
