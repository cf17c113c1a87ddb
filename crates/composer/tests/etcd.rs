//! Several composer replicas on one real etcd (Debian's `etcd-server`),
//! hammered concurrently, then an independent check over etcd's keys.
//!
//! The test installs etcd when it is missing (as root), starts it on free
//! ports of 127.0.0.1 with its data in a temp dir and stops it by PID. When
//! etcd cannot be started it says so and skips, except under `CI=true`,
//! where it fails.
#![cfg(feature = "etcd")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use composer_core::{Composer, Error, EtcdConfig, EtcdStore, Inventory, Store};

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn etcd_binary() -> Result<String, String> {
    let have = || Command::new("etcd").arg("--version").output().is_ok();
    if have() {
        return Ok("etcd".into());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return Err("etcd is not installed and this is not root".into());
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "etcd-server",
            ])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "update"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    if have() {
        Ok("etcd".into())
    } else {
        Err("installing etcd-server failed".into())
    }
}

/// Starts etcd, or returns why it could not.
fn start_etcd() -> Result<Etcd, String> {
    let bin = etcd_binary()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (c, p) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let child = Command::new(bin)
        .args(["--name", "test", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("test={peer}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting etcd: {e}"))?;
    let etcd = Etcd {
        child,
        url: format!("etcd://127.0.0.1:{c}"),
        _dir: dir,
    };
    // Ready when a client gets an answer (a readiness wait, not a timing assertion).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = EtcdStore::connect(config(&etcd.url))
            && s.load().is_ok()
        {
            return Ok(etcd);
        }
        if Instant::now() > until {
            return Err("etcd did not answer within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(url: &str) -> EtcdConfig {
    let mut c = EtcdConfig::parse(url).expect("url");
    c.prefix = "/test".into();
    c
}

/// etcd, or `None` after saying why (a failure under CI=true).
fn etcd_or_skip(test: &str) -> Option<Etcd> {
    match start_etcd() {
        Ok(e) => Some(e),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: etcd is needed under CI=true and could not be started: {why}");
            }
            eprintln!("SKIPPED {test}: etcd could not be started: {why}");
            None
        }
    }
}

fn replica(url: &str) -> Arc<Composer> {
    let store = Arc::new(EtcdStore::connect(config(url)).expect("connect"));
    Arc::new(Composer::open(Inventory::default_inventory(), store).expect("open"))
}

fn params(kind: &str) -> BTreeMap<String, String> {
    [("type".to_string(), kind.to_string())].into()
}

/// The independent check: reads every key under the prefix with its own
/// client and checks allocations against records.
fn check_etcd(url: &str, live: &HashSet<String>, deleted: &HashSet<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = url.replace("etcd://", "http://");
    let kvs: Vec<(String, Vec<u8>)> = rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let r = c
            .get("/test/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect()
    });
    let mut volumes: HashMap<String, serde_json::Value> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut alloc: Vec<(String, String, u64, u64)> = Vec::new();
    for (k, v) in &kvs {
        if let Some(id) = k.strip_prefix("/test/volumes/") {
            volumes.insert(id.to_string(), serde_json::from_slice(v).unwrap());
        } else if let Some(n) = k.strip_prefix("/test/names/") {
            names.insert(n.to_string(), String::from_utf8(v.clone()).unwrap());
        } else if let Some(rest) = k.strip_prefix("/test/alloc/") {
            let id = rest.rsplit_once('/').unwrap().0.to_string();
            let s = String::from_utf8(v.clone()).unwrap();
            let f: Vec<&str> = s.split(' ').collect();
            alloc.push((
                id,
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            ));
        }
    }
    // Every acknowledged volume present, every acknowledged delete gone.
    for id in live {
        assert!(
            volumes.contains_key(id),
            "acknowledged volume {id} is missing"
        );
    }
    for id in deleted {
        assert!(
            !volumes.contains_key(id),
            "deleted volume {id} is still there"
        );
    }
    // Names and records agree one to one.
    assert_eq!(
        names.len(),
        volumes.len(),
        "names and volumes differ in number"
    );
    for (n, id) in &names {
        let v = volumes
            .get(id)
            .unwrap_or_else(|| panic!("name {n} names missing {id}"));
        assert_eq!(v["name"].as_str(), Some(n.as_str()));
    }
    // Allocations are exactly the records' members: nothing leaked.
    let mut by_vol: HashMap<&str, Vec<(String, u64, u64)>> = HashMap::new();
    for (id, d, o, l) in &alloc {
        by_vol.entry(id).or_default().push((d.clone(), *o, *l));
    }
    assert_eq!(
        by_vol.len(),
        volumes.len(),
        "allocations of volumes without a record"
    );
    for (id, v) in &volumes {
        let members: Vec<(String, u64, u64)> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["drive"].as_str().unwrap().to_string(),
                    m["offset"].as_u64().unwrap(),
                    m["len"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            by_vol.get(id.as_str()),
            Some(&members),
            "allocations of {id}"
        );
    }
    // No byte of any drive allocated twice.
    let mut per_drive: HashMap<&str, Vec<(u64, u64, &str)>> = HashMap::new();
    for (id, d, o, l) in &alloc {
        per_drive.entry(d).or_default().push((*o, *l, id));
    }
    for (d, mut xs) in per_drive {
        xs.sort();
        for w in xs.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "drive {d}: {} [{}, +{}) overlaps {} at {}",
                w[0].2,
                w[0].0,
                w[0].1,
                w[1].2,
                w[1].0
            );
        }
    }
}

fn hammer(replicas: usize) {
    let test = format!("replicas_{replicas}");
    let Some(etcd) = etcd_or_skip(&test) else {
        return;
    };
    let rs: Vec<Arc<Composer>> = (0..replicas).map(|_| replica(&etcd.url)).collect();
    let live = Arc::new(Mutex::new(HashSet::new()));
    let deleted = Arc::new(Mutex::new(HashSet::new()));
    let mut threads = Vec::new();
    for (r, c) in rs.iter().enumerate() {
        for t in 0..4 {
            let (c, live, deleted) = (c.clone(), live.clone(), deleted.clone());
            threads.push(std::thread::spawn(move || {
                let mut mine: Vec<String> = Vec::new();
                for i in 0..40u64 {
                    let kind = if i % 5 == 0 { "hdd" } else { "slice" };
                    let size = if kind == "hdd" {
                        1 << 40
                    } else {
                        ((i % 7) + 1) * (50 << 30)
                    };
                    let range = csi_types::CapacityRange::new(Some(size), None).unwrap();
                    let name = format!("pvc-{r}-{t}-{i}");
                    match c.create(&name, &params(kind), range, true, true, None) {
                        Ok(v) => {
                            live.lock().unwrap().insert(v.id.clone());
                            mine.push(v.id.clone());
                        }
                        Err(Error::Exhausted(_)) | Err(Error::Conflict(_)) => {}
                        Err(e) => panic!("create {name}: {e}"),
                    }
                    if i % 3 == 1
                        && let Some(id) = mine.last().cloned()
                    {
                        let range =
                            csi_types::CapacityRange::new(Some(size + (20 << 30)), None).unwrap();
                        match c.expand(&id, range) {
                            Ok(_) | Err(Error::OutOfRange(_)) | Err(Error::Conflict(_)) => {}
                            Err(e) => panic!("expand {id}: {e}"),
                        }
                    }
                    if i % 2 == 0 && mine.len() > 2 {
                        let id = mine.remove(0);
                        match c.delete(&id) {
                            Ok(()) => {
                                live.lock().unwrap().remove(&id);
                                deleted.lock().unwrap().insert(id);
                            }
                            Err(Error::Conflict(_)) => {}
                            Err(e) => panic!("delete {id}: {e}"),
                        }
                    }
                }
            }));
        }
    }
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let live = live.lock().unwrap().clone();
    let deleted = deleted.lock().unwrap().clone();
    assert!(!live.is_empty());
    check_etcd(&etcd.url, &live, &deleted);
}

#[test]
fn two_replicas_never_allocate_twice() {
    hammer(2);
}

#[test]
fn three_replicas_never_allocate_twice() {
    hammer(3);
}
