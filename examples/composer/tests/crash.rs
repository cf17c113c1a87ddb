//! SIGKILL crash test: the `composer` binary runs a create/delete workload
//! from 8 concurrent gRPC clients over its unix socket, is killed with
//! SIGKILL at a random instant, and restarted; then every acknowledged
//! volume must be present, every acknowledged delete gone, no drive or slice
//! byte held by two volumes, nothing held by a volume that does not exist,
//! and the start-up reconcile clean. Several rounds on one state file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use composer::admin::{self, Request};
use csi_types::client::Client;
use csi_types::controller::{CreateVolumeRequest, ListVolumesRequest};
use csi_types::prelude::*;
use rand::{Rng, SeedableRng};

struct Server {
    child: Child,
    endpoint: String,
    admin: PathBuf,
}

impl Server {
    // The child is moved into `Server` at once, whose `Drop` kills and reaps
    // it; the lint does not see through that.
    #[allow(clippy::zombie_processes)]
    async fn start(dir: &Path) -> Server {
        let sock = dir.join("csi.sock");
        let admin = dir.join("admin.sock");
        let endpoint = format!("unix://{}", sock.display());
        // The admin socket of a killed predecessor is still there: readiness
        // is a connection to the new one (which replaces that file), not the
        // file's existence.
        let _ = std::fs::remove_file(&admin);
        let child: Child = Command::new(env!("CARGO_BIN_EXE_composer"))
            .args(["serve", "--endpoint", &endpoint, "--state"])
            .arg(dir.join("state.redb"))
            .arg("--admin-socket")
            .arg(&admin)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("the composer binary starts");
        for _ in 0..2400 {
            if tokio::net::UnixStream::connect(&admin).await.is_ok()
                && let Ok(_) = Client::connect(&endpoint).await
            {
                return Server {
                    child,
                    endpoint,
                    admin,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the composer did not come up on {endpoint}");
    }

    fn kill(mut self) {
        // SIGKILL by PID: the process gets no chance to clean up.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

#[derive(Default, Clone)]
struct Ledger {
    /// Volumes whose create was acknowledged and not yet deleted (name → id).
    live: BTreeMap<String, String>,
    /// Ids whose delete was acknowledged.
    deleted: BTreeSet<String>,
}

fn create_req(name: &str, slice: bool) -> CreateVolumeRequest {
    let params: &[(&str, &str)] = if slice { &[("type", "slice")] } else { &[] };
    composer::create_request(name, params, 1 << 30).unwrap()
}

async fn workload(endpoint: String, ledger: Arc<Mutex<Ledger>>, worker: u64, round: u64) {
    let Ok(client) = Client::connect(&endpoint).await else {
        return;
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(worker * 1000 + round);
    for i in 0.. {
        let name = format!("r{round}-w{worker}-{i}");
        let slice = rng.random_bool(0.5);
        match Csi::create_volume(&client, create_req(&name, slice)).await {
            Ok(r) => {
                ledger
                    .lock()
                    .unwrap()
                    .live
                    .insert(name.clone(), r.volume.volume_id.to_string());
            }
            Err(e)
                if e.code() == Code::Unavailable
                    || e.code() == Code::Unknown
                    || e.code() == Code::Internal =>
            {
                return;
            }
            Err(e) if e.code() == Code::ResourceExhausted => {}
            Err(e) => panic!("CreateVolume {name}: {e}"),
        }
        if rng.random_bool(0.6) {
            // Picked and taken out of `live` in one hold: while the delete
            // is in flight the volume may or may not survive a crash, and no
            // other worker picks it (before, two workers could pick one
            // volume: the second's delete answered ABORTED while the first's
            // ran, put the volume back in `live`, and the first's then
            // deleted it, so the audit missed a volume that was never lost).
            let victim = {
                let mut l = ledger.lock().unwrap();
                let n = l.live.len();
                if n == 0 {
                    continue;
                }
                let k = rng.random_range(0..n);
                let vname = l.live.keys().nth(k).cloned();
                vname.and_then(|v| l.live.remove_entry(&v))
            };
            if let Some((vname, id)) = victim {
                let req = composer::delete_request(&id).unwrap();
                match Csi::delete_volume(&client, req).await {
                    Ok(_) => {
                        ledger.lock().unwrap().deleted.insert(id);
                    }
                    Err(e) if e.code() == Code::Aborted => {
                        ledger.lock().unwrap().live.insert(vname, id);
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

async fn audit(s: &Server, ledger: &Ledger) -> usize {
    let answer = admin::call(&s.admin, &Request::Volumes).await.unwrap();
    let records: Vec<composer_core::VolumeRecord> =
        serde_json::from_value(answer["ok"].clone()).unwrap();
    let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    for (name, id) in &ledger.live {
        assert!(
            ids.contains(id.as_str()),
            "acknowledged volume {name} ({id}) is missing after restart"
        );
    }
    for id in &ledger.deleted {
        assert!(
            !ids.contains(id.as_str()),
            "volume {id} was deleted but came back"
        );
    }
    // No byte of a drive is held twice.
    let mut extents: BTreeMap<&str, Vec<(u64, u64, &str)>> = BTreeMap::new();
    for r in &records {
        for m in &r.members {
            extents
                .entry(&m.drive)
                .or_default()
                .push((m.offset, m.offset + m.len, &r.id));
        }
    }
    for (drive, mut ex) in extents {
        ex.sort();
        for w in ex.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "drive {drive}: {} and {} overlap",
                w[0].2,
                w[1].2
            );
        }
    }
    // Nothing is held by a volume that does not exist: the drive report is
    // derived from the records, and the utilisation must match it.
    let drives = admin::call(&s.admin, &Request::Drives).await.unwrap();
    for d in drives["ok"].as_array().unwrap() {
        for v in d["volumes"].as_array().unwrap() {
            assert!(ids.contains(v.as_str().unwrap()));
        }
    }
    let rec = admin::call(&s.admin, &Request::Reconcile).await.unwrap();
    assert_eq!(
        rec["ok"],
        serde_json::json!([]),
        "reconcile found differences"
    );
    // Every listed volume is one of the records, and vice versa.
    let client = Client::connect(&s.endpoint).await.unwrap();
    let listed = Csi::list_volumes(&client, ListVolumesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), records.len());
    records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_create_delete_loses_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for round in 0..5u64 {
        let s = Server::start(dir.path()).await;
        let snapshot = ledger.lock().unwrap().clone();
        let count = audit(&s, &snapshot).await;
        println!("round {round}: {count} volumes after restart");
        let workers: Vec<_> = (0..8)
            .map(|w| tokio::spawn(workload(s.endpoint.clone(), ledger.clone(), w, round)))
            .collect();
        // Kill once the workload has made progress this round (a count of
        // acknowledged deletes, not a time, so that a slow machine still
        // tests something), then at a random instant.
        let progress = |l: &Ledger| l.deleted.len();
        let start = progress(&snapshot);
        for _ in 0..12_000 {
            if progress(&ledger.lock().unwrap()) >= start + 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            progress(&ledger.lock().unwrap()) >= start + 3,
            "round {round}: the workload acknowledged no 3 deletes in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
        s.kill();
        for w in workers {
            w.await.unwrap();
        }
    }
    let s = Server::start(dir.path()).await;
    let snapshot = ledger.lock().unwrap().clone();
    let count = audit(&s, &snapshot).await;
    let l = snapshot;
    println!(
        "final: {count} volumes, {} acknowledged live, {} acknowledged deletes",
        l.live.len(),
        l.deleted.len()
    );
    assert!(
        l.deleted.len() > 10 && !l.live.is_empty(),
        "the workload did too little to test anything"
    );
    s.kill();
}
