//! Several `composer serve --store etcd://…` processes on one real etcd,
//! driven over their unix sockets by concurrent CreateVolume / DeleteVolume /
//! ControllerExpandVolume clients, with faults: a replica killed with SIGKILL
//! mid-workload and restarted, and etcd itself killed under load (calls
//! answer UNAVAILABLE, Probe says not ready) and restarted (every replica's
//! watch resumes and it serves again). After each step an independent check
//! over etcd's keys (`composer_core::store_etcd::audit`) against the
//! clients' ledger: no byte of a drive allocated twice, every acknowledged
//! volume present, nothing leaked.
//!
//! etcd is Debian's `etcd-server` (installed when missing, as root), started
//! on free ports with its data in a temp dir and stopped by PID. When it
//! cannot be started the test says so and skips, except under `CI=true`,
//! where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use composer_core::{EtcdConfig, LocalEtcd};
use csi_types::client::Client;
use csi_types::prelude::*;
use csi_types::{
    controller::ControllerExpandVolumeRequest, identity::ProbeRequest, ids::VolumeId,
    redact::Secrets, types::CapacityRange,
};

struct Replica {
    child: Child,
    endpoint: String,
}

impl Replica {
    async fn start(dir: &Path, n: usize, store: &str) -> Replica {
        Replica::start_with(dir, n, store, &[]).await
    }

    /// With more arguments; the log goes to `replica-N.log` in `dir`.
    // The child is moved into `Replica` at once, whose `Drop` kills and reaps it.
    #[allow(clippy::zombie_processes)]
    async fn start_with(dir: &Path, n: usize, store: &str, extra: &[&str]) -> Replica {
        let log = std::fs::File::create(dir.join(format!("replica-{n}.log"))).unwrap();
        let sock = dir.join(format!("csi-{n}.sock"));
        let admin = dir.join(format!("admin-{n}.sock"));
        let endpoint = format!("unix://{}", sock.display());
        let child = Command::new(env!("CARGO_BIN_EXE_composer"))
            .args(["serve", "--endpoint", &endpoint, "--store", store])
            .args(["--etcd-prefix", "/replicas", "--admin-socket"])
            .arg(&admin)
            .args(extra)
            .stderr(log)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("the composer binary starts");
        for _ in 0..1200 {
            if admin.exists() && Client::connect(&endpoint).await.is_ok() {
                return Replica { child, endpoint };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("replica {n} did not come up on {endpoint}");
    }

    fn kill(&mut self) {
        // SIGKILL by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct Ledger {
    /// Acknowledged and not deleted (id).
    live: BTreeSet<String>,
    /// Delete acknowledged.
    deleted: BTreeSet<String>,
    /// UNAVAILABLE answers seen.
    unavailable: usize,
}

/// Creates, expands and deletes until `ops` calls were made or the replica
/// went away. A call cut by a fault leaves its volume's fate unknown: it is
/// in neither set of the ledger.
async fn workload(endpoint: String, ledger: Arc<Mutex<Ledger>>, tag: String, ops: usize) {
    let Ok(client) = Client::connect(&endpoint).await else {
        return;
    };
    let mut mine: Vec<String> = Vec::new();
    for i in 0..ops {
        let name = format!("{tag}-{i}");
        let params: &[(&str, &str)] = if i % 4 == 0 {
            &[]
        } else {
            &[("type", "slice")]
        };
        match Csi::create_volume(
            &client,
            composer::create_request(&name, params, 20 << 30).unwrap(),
        )
        .await
        {
            Ok(r) => {
                let id = r.volume.volume_id.to_string();
                ledger.lock().unwrap().live.insert(id.clone());
                mine.push(id);
            }
            Err(e) if e.code() == Code::Unavailable => {
                ledger.lock().unwrap().unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if matches!(e.code(), Code::ResourceExhausted | Code::Aborted) => {}
            // The replica was killed under the call.
            Err(e) if matches!(e.code(), Code::Unknown | Code::Internal | Code::Cancelled) => {
                return;
            }
            Err(e) => panic!("CreateVolume {name}: {e}"),
        }
        if i % 3 == 1
            && let Some(id) = mine.last()
        {
            let req = ControllerExpandVolumeRequest {
                volume_id: VolumeId::new(id.as_str()).unwrap(),
                capacity_range: CapacityRange::new(Some(30 << 30), None).unwrap(),
                secrets: Secrets::default(),
                volume_capability: None,
            };
            match Csi::controller_expand_volume(&client, req).await {
                Ok(_) => {}
                Err(e) if e.code() == Code::Unavailable => ledger.lock().unwrap().unavailable += 1,
                Err(e) if matches!(e.code(), Code::OutOfRange | Code::Aborted) => {}
                Err(e) if matches!(e.code(), Code::Unknown | Code::Internal | Code::Cancelled) => {
                    return;
                }
                Err(e) => panic!("ControllerExpandVolume {id}: {e}"),
            }
        }
        if i % 2 == 0 && mine.len() > 2 {
            let id = mine.remove(0);
            ledger.lock().unwrap().live.remove(&id);
            match Csi::delete_volume(&client, composer::delete_request(&id).unwrap()).await {
                Ok(_) => {
                    ledger.lock().unwrap().deleted.insert(id);
                }
                // Unavailable: the delete may have reached etcd before
                // its answer was lost (etcd killed, or slower than the
                // request timeout): its fate is unknown.
                Err(e) if e.code() == Code::Unavailable => {
                    ledger.lock().unwrap().unavailable += 1;
                }
                Err(e) if e.code() == Code::Aborted => {
                    ledger.lock().unwrap().live.insert(id);
                }
                Err(e) if matches!(e.code(), Code::Unknown | Code::Internal | Code::Cancelled) => {
                    return;
                }
                Err(e) => panic!("DeleteVolume {id}: {e}"),
            }
        }
    }
}

fn check(etcd: &LocalEtcd, ledger: &Ledger) -> BTreeMap<String, String> {
    let mut cfg = EtcdConfig::parse(&etcd.url()).unwrap();
    cfg.prefix = "/replicas".into();
    let a = composer_core::store_etcd::audit(&cfg).expect("audit");
    assert!(
        a.problems.is_empty(),
        "etcd is inconsistent:\n{}",
        a.problems.join("\n")
    );
    for id in &ledger.live {
        assert!(
            a.volumes.contains_key(id),
            "acknowledged volume {id} is missing"
        );
    }
    for id in &ledger.deleted {
        assert!(
            !a.volumes.contains_key(id),
            "deleted volume {id} is still there"
        );
    }
    a.volumes
}

async fn run_replicas(n: usize) {
    let test = format!("{n}_replicas_with_faults");
    let Some(mut etcd) = LocalEtcd::start_or_skip(&test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = etcd.url();
    let mut rs = Vec::new();
    for i in 0..n {
        rs.push(Replica::start(dir.path(), i, &url).await);
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // 1. Four clients per replica; replica 0 is killed with SIGKILL while they run.
    let mut tasks = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        for c in 0..4 {
            tasks.push(tokio::spawn(workload(
                r.endpoint.clone(),
                ledger.clone(),
                format!("a-r{i}-c{c}"),
                60,
            )));
        }
    }
    // Kill once some volumes are acknowledged (progress, not time, decides).
    while ledger.lock().unwrap().live.len() < 10 && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rs[0].kill();
    for t in tasks {
        t.await.expect("a client panicked");
    }
    check(&etcd, &ledger.lock().unwrap());

    // 2. The killed replica comes back on the same etcd and serves at once.
    rs[0] = Replica::start(dir.path(), 0, &url).await;
    workload(rs[0].endpoint.clone(), ledger.clone(), "b-r0".into(), 10).await;
    check(&etcd, &ledger.lock().unwrap());

    // 3. etcd is killed (by PID) under load from every replica.
    let before = ledger.lock().unwrap().live.len();
    let mut tasks = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        for c in 0..3 {
            tasks.push(tokio::spawn(workload(
                r.endpoint.clone(),
                ledger.clone(),
                format!("c-r{i}-c{c}"),
                150,
            )));
        }
    }
    while ledger.lock().unwrap().live.len() < before + 10 && !tasks.iter().all(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    etcd.kill();
    // While it is down, every replica answers UNAVAILABLE and says it is not ready.
    for r in &rs {
        let client = Client::connect(&r.endpoint).await.unwrap();
        let e = Csi::create_volume(
            &client,
            composer::create_request("while-down", &[("type", "slice")], 1 << 30).unwrap(),
        )
        .await
        .expect_err("a create while etcd is down");
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        let mut probes = 0;
        while Csi::probe(&client, ProbeRequest::default())
            .await
            .unwrap()
            .ready
            != Some(false)
        {
            probes += 1;
            assert!(probes < 600, "Probe kept answering ready with etcd down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // 4. etcd restarts on its data; the clients keep going.
    etcd.restart().expect("etcd restarts");
    for t in tasks {
        t.await.expect("a client panicked");
    }
    // Every replica follows etcd again and serves: no ABORTED, no lasting UNAVAILABLE.
    for (i, r) in rs.iter().enumerate() {
        let client = Client::connect(&r.endpoint).await.unwrap();
        let mut attempts = 0;
        loop {
            match Csi::create_volume(
                &client,
                composer::create_request(&format!("after-{i}"), &[("type", "slice")], 1 << 30)
                    .unwrap(),
            )
            .await
            {
                Ok(v) => {
                    ledger
                        .lock()
                        .unwrap()
                        .live
                        .insert(v.volume.volume_id.to_string());
                    break;
                }
                // The watch reconnects with backoff (at most 2 s apart).
                Err(e) if e.code() == Code::Unavailable && attempts < 300 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("create after etcd restarted on replica {i}: {e}"),
            }
        }
        let ready = Csi::probe(&client, ProbeRequest::default()).await.unwrap();
        assert_eq!(
            ready.ready,
            Some(true),
            "replica {i} serves but is not ready"
        );
    }
    // And each sees what the others created meanwhile (its watch resumed).
    for r in &rs {
        let client = Client::connect(&r.endpoint).await.unwrap();
        for j in 0..n {
            let req =
                composer::create_request(&format!("after-{j}"), &[("type", "slice")], 1 << 30)
                    .unwrap();
            let mut attempts = 0;
            loop {
                match Csi::create_volume(&client, req.clone()).await {
                    Ok(_) => break,
                    Err(e) if e.code() == Code::Unavailable && attempts < 300 => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("repeating the create of after-{j}: {e}"),
                }
            }
        }
    }
    let ids = check(&etcd, &ledger.lock().unwrap());
    assert!(!ids.values().any(|n| n == "while-down"));
    assert_eq!(
        ids.values().filter(|n| n.starts_with("after-")).count(),
        n,
        "one volume per name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_faults() {
    run_replicas(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_faults() {
    run_replicas(3).await;
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {}", child.id());
}

/// The leader paused with SIGSTOP past its lease: the other replica takes
/// over; resumed with SIGCONT, the old leader finds its term over, steps
/// down and keeps serving CSI as a follower, and the leader key stays with
/// the new leader. (That etcd refuses the background writes of a term that
/// is over is `a_leader_whose_term_ended_has_its_background_write_refused`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_steps_down() {
    let Some(etcd) = LocalEtcd::start_or_skip("a_paused_leader_is_replaced_and_steps_down") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = etcd.url();
    let mut rs = Vec::new();
    for i in 0..2 {
        let id = format!("r{i}");
        rs.push(
            Replica::start_with(
                dir.path(),
                i,
                &url,
                &[
                    "--etcd-lease-ttl",
                    "2",
                    "--replica-id",
                    &id,
                    "--repair-every",
                    "1",
                ],
            )
            .await,
        );
    }
    let mut cfg = EtcdConfig::parse(&url).unwrap();
    cfg.prefix = "/replicas".into();
    let leader = |cfg: &EtcdConfig| composer_core::store_etcd::leader(cfg).unwrap();
    let mut polls = 0;
    let first = loop {
        if let Some(id) = leader(&cfg) {
            break id;
        }
        polls += 1;
        assert!(polls < 600, "no replica became the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let old: usize = first.trim_start_matches('r').parse().unwrap();
    let other = 1 - old;
    signal(&rs[old].child, "-STOP");
    polls = 0;
    while leader(&cfg) != Some(format!("r{other}")) {
        polls += 1;
        assert!(
            polls < 600,
            "r{other} did not take over from the paused r{old}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&rs[old].child, "-CONT");
    let log = dir.path().join(format!("replica-{old}.log"));
    polls = 0;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("leader: stepped down")
    {
        polls += 1;
        assert!(polls < 600, "the resumed r{old} did not step down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It serves CSI as a follower; the new leader keeps the key.
    let client = Client::connect(&rs[old].endpoint).await.unwrap();
    Csi::create_volume(
        &client,
        composer::create_request("after-pause", &[("type", "slice")], 1 << 30).unwrap(),
    )
    .await
    .expect("the old leader serves CSI");
    assert_eq!(leader(&cfg), Some(format!("r{other}")));
    let new_log = std::fs::read_to_string(dir.path().join(format!("replica-{other}.log"))).unwrap();
    assert!(
        new_log.contains(&format!("leader: r{other} took over")),
        "{new_log}"
    );
    check(&etcd, &Ledger::default());
}

/// The fence end to end: the leader's term is ended behind its back (its
/// lease revoked, as its expiry while it was paused would), and the
/// operator then marks a drive failed that holds a member. The old leader,
/// whose own clock still counts its lease as alive, starts the repair in
/// the background: etcd refuses that fenced write, the old leader logs the
/// refusal and steps down, and its repair never lands; the other replica
/// takes over and makes the repair itself. (The leader's next keep-alive
/// would also find the lease gone, but only a lease TTL/3 = 10 s after it
/// took over; the repair round runs every second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_term_ended_has_its_background_write_refused() {
    let Some(etcd) =
        LocalEtcd::start_or_skip("a_leader_whose_term_ended_has_its_background_write_refused")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = etcd.url();
    let mut rs = Vec::new();
    for i in 0..2 {
        let id = format!("r{i}");
        let args = [
            "--etcd-lease-ttl",
            "30",
            "--replica-id",
            &id,
            "--repair-every",
            "1",
        ];
        rs.push(Replica::start_with(dir.path(), i, &url, &args).await);
    }
    let client = Client::connect(&rs[0].endpoint).await.unwrap();
    let v = Csi::create_volume(
        &client,
        composer::create_request("fenced", &[("type", "slice")], 1 << 30).unwrap(),
    )
    .await
    .unwrap();
    let id = v.volume.volume_id.to_string();
    let mut cfg = EtcdConfig::parse(&url).unwrap();
    cfg.prefix = "/replicas".into();
    let mut polls = 0;
    while composer_core::store_etcd::leader(&cfg).unwrap().is_none() {
        polls += 1;
        assert!(polls < 600, "no replica became the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old: usize = composer_core::store_etcd::end_term(&cfg)
        .unwrap()
        .expect("a leader")
        .trim_start_matches('r')
        .parse()
        .unwrap();
    let other = 1 - old;
    let admin = dir.path().join(format!("admin-{old}.sock"));
    let vols = composer::admin::call(&admin, &composer::admin::Request::Volumes)
        .await
        .unwrap();
    let rec = vols["ok"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("the volume is listed")
        .clone();
    let drive = rec["members"][0]["drive"].as_str().unwrap().to_string();
    let marked = composer::admin::call(
        &admin,
        &composer::admin::Request::Mark {
            target: drive.clone(),
            health: composer_core::Health::Failed,
        },
    )
    .await
    .unwrap();
    assert!(marked.get("ok").is_some(), "{marked}");
    let old_log = dir.path().join(format!("replica-{old}.log"));
    let new_log = dir.path().join(format!("replica-{other}.log"));
    let repaired = format!("background: repaired failed drive {drive}");
    polls = 0;
    while !std::fs::read_to_string(&new_log)
        .unwrap_or_default()
        .contains(&repaired)
    {
        polls += 1;
        assert!(
            polls < 1200,
            "r{other} did not take over and repair {drive}:\nr{old}:\n{}\nr{other}:\n{}",
            std::fs::read_to_string(&old_log).unwrap_or_default(),
            std::fs::read_to_string(&new_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&old_log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("background: repair round stopped: ") && l.contains("fenced: term")),
        "the old leader's write was not refused by the fence:\n{log}"
    );
    assert!(
        log.contains("leader: stepped down from term") && log.contains("fenced: term"),
        "the old leader did not step down on the refusal:\n{log}"
    );
    assert!(
        !log.contains(&repaired),
        "the old leader's repair landed:\n{log}"
    );
    assert_eq!(
        composer_core::store_etcd::leader(&cfg).unwrap(),
        Some(format!("r{other}"))
    );
    check(&etcd, &Ledger::default());
}

/// `composer serve --store etcd://… --etcd-ca … --etcd-cert … --etcd-key …`
/// against an etcd that serves https only and asks for client
/// certificates: the replica serves CSI and its volume lands in etcd. With a
/// CA that did not sign etcd's certificate the replica does not start, and
/// says why; the TLS flags are checked before anything connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_over_tls_with_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let Some((etcd, tls)) =
        LocalEtcd::start_tls_or_skip("a_replica_over_tls_with_a_client_certificate", certs.path())
    else {
        return;
    };
    let (cert, key) = tls.client.identity.clone().unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--etcd-ca".to_string(),
        path(&tls.client.ca),
        "--etcd-cert".into(),
        path(&cert),
        "--etcd-key".into(),
        path(&key),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = Replica::start_with(dir.path(), 0, &etcd.url(), &args).await;
    let client = Client::connect(&r.endpoint).await.unwrap();
    let v = Csi::create_volume(
        &client,
        composer::create_request("over-tls", &[("type", "slice")], 1 << 30).unwrap(),
    )
    .await
    .unwrap();
    let mut cfg = etcd.config();
    cfg.prefix = "/replicas".into();
    let a = composer_core::store_etcd::audit(&cfg).unwrap();
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert!(a.volumes.contains_key(v.volume.volume_id.as_str()));

    let serve = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_composer"))
            .args(["serve", "--endpoint"])
            .arg(format!(
                "unix://{}",
                dir.path().join("wrong.sock").display()
            ))
            .args(["--store", &etcd.url(), "--admin-socket"])
            .arg(dir.path().join("wrong-admin.sock"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} must not start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let other = path(&tls.other_ca);
    let err = serve(&[
        "--etcd-ca",
        &other,
        "--etcd-cert",
        args[3],
        "--etcd-key",
        args[5],
    ]);
    assert!(
        err.contains("over TLS") && err.contains("other-ca.pem") && err.contains("UnknownIssuer"),
        "a wrong CA: {err}"
    );
    let err = serve(&["--etcd-cert", args[3], "--etcd-key", args[5]]);
    assert!(
        err.contains("--etcd-cert: TLS to etcd needs --etcd-ca"),
        "{err}"
    );
    let err = serve(&["--etcd-ca", args[1], "--etcd-cert", args[3]]);
    assert!(err.contains("--etcd-cert: needs --etcd-key"), "{err}");
    let err = serve(&["--etcd-password-file", args[1]]);
    assert!(
        err.contains("--etcd-password-file: needs --etcd-user"),
        "{err}"
    );
}
