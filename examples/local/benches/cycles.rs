//! CreateVolume + DeleteVolume cycles per second against the `local` driver
//! binary over its unix socket, with 1, 8 and 64 concurrent clients (each
//! its own connection) and 0, 1,000 and 10,000 volumes already present.
//! Prints cycles/s and the CreateVolume latency p50/p99 for each cell.
//!
//! ```text
//! cargo bench -p local --bench cycles -- [--seconds S] [--python PYTHON]
//!     [--workers 1,8,64] [--present 0,1000,10000] [--no-sdk] [--paired] [--no-sync]
//! ```
//!
//! `--workers` and `--present` run only the listed cells (each list in
//! ascending order); `--no-sdk` drives the cells with the Python client only.
//! `--paired` also starts a second driver that stays empty and runs each
//! cell with volumes present right after the same cell on the empty driver
//! (rows `0 (pair)`), so that the two are measured a few seconds apart and
//! the run-to-run spread of a shared machine does not pass for an effect
//! of the number of volumes.
//!
//! Before every cell the bench calls `sync(2)`, so that the kernel's
//! writeback of what the fill and earlier cells left dirty (directories and
//! inodes of thousands of volumes created, renamed and deleted) is not done
//! during the next cell's measured seconds, on the same disk and cores;
//! `--no-sync` leaves it out.
//!
//! `--python` also drives every cell with `.ci/grpc_client.py bench` on that
//! interpreter (which must have `grpcio`), in the same run against the same
//! driver and volumes, for figures comparable with other drivers measured
//! with that client. The driver is a separate process, as in production;
//! the clients share the machine's cores with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_types::RawCsi;
use csi_types::client::Client;
use csi_types::proto;

const WORKERS: [usize; 3] = [1, 8, 64];
const PRESENT: [usize; 3] = [0, 1_000, 10_000];

/// A comma-separated list of counts.
fn counts(arg: Option<String>, default: &[usize]) -> Vec<usize> {
    arg.map_or_else(
        || default.to_vec(),
        |s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("a list of counts, as 1,8,64"))
                .collect()
        },
    )
}

struct Driver {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("csi.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_local"))
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--node-id", "bench-node", "--capacity", "1Ti"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the local binary starts");
    for _ in 0..400 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(socket.exists(), "the driver did not create its socket");
    Driver {
        child,
        socket,
        _dir: dir,
    }
}

fn create_request(name: String) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name,
        capacity_range: Some(proto::CapacityRange {
            required_bytes: 4096,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![proto::VolumeCapability {
            access_type: Some(proto::volume_capability::AccessType::Mount(
                proto::volume_capability::MountVolume::default(),
            )),
            access_mode: Some(proto::volume_capability::AccessMode {
                mode: proto::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        }],
        ..Default::default()
    }
}

async fn create(client: &Client, name: String) -> String {
    let resp = RawCsi::raw_create_volume(client, create_request(name))
        .await
        .expect("CreateVolume succeeds");
    resp.volume.expect("a volume").volume_id
}

async fn connect(socket: &Path) -> Client {
    Client::connect(&format!("unix://{}", socket.display()))
        .await
        .expect("the driver accepts connections")
}

/// Tops the driver up to `count` volumes with 16 concurrent clients.
async fn fill(socket: &Path, have: usize, count: usize) {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let client = connect(socket).await;
        tasks.push(tokio::spawn(async move {
            for i in (have + w..count).step_by(16) {
                create(&client, format!("present-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("filling succeeds");
    }
}

/// One cell: `workers` clients cycling for `seconds`.
async fn cell(socket: &Path, workers: usize, seconds: f64, tag: &str) -> (f64, f64, f64) {
    let mut clients = Vec::new();
    for _ in 0..workers {
        let c = connect(socket).await;
        RawCsi::raw_probe(&c, proto::ProbeRequest {})
            .await
            .expect("Probe");
        clients.push(c);
    }
    let start = Arc::new(tokio::sync::Barrier::new(workers + 1));
    let deadline = Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (w, client) in clients.into_iter().enumerate() {
        let start = start.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let t0 = Instant::now();
            let mut lat = Vec::new();
            let mut n = 0usize;
            while t0.elapsed() < deadline {
                let t = Instant::now();
                let id = create(&client, format!("cycle-{tag}-{w}-{n}")).await;
                lat.push(t.elapsed());
                RawCsi::raw_delete_volume(
                    &client,
                    proto::DeleteVolumeRequest {
                        volume_id: id,
                        secrets: Default::default(),
                    },
                )
                .await
                .expect("DeleteVolume succeeds");
                n += 1;
            }
            lat
        }));
    }
    start.wait().await;
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("a worker finished"));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    (lat.len() as f64 / elapsed, pct(0.5), pct(0.99))
}

/// Writes back what the fill and earlier cells left dirty (see the module
/// documentation).
fn settle(sync: bool) {
    if sync {
        rustix::fs::sync();
    }
}

fn python_cell(python: &str, socket: &Path, workers: usize, seconds: f64) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/grpc_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg("bench")
        .arg(socket)
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--seconds")
        .arg(seconds.to_string())
        .output()
        .expect("the Python client runs");
    if !out.status.success() {
        return format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    let mut seconds = 3.0;
    let mut python: Option<String> = None;
    let mut workers_list = WORKERS.to_vec();
    let mut present_list = PRESENT.to_vec();
    let mut sdk = true;
    let mut paired = false;
    let mut sync = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--python" => python = args.next(),
            "--workers" => workers_list = counts(args.next(), &WORKERS),
            "--present" => present_list = counts(args.next(), &PRESENT),
            "--no-sdk" => sdk = false,
            "--paired" => paired = true,
            "--no-sync" => sync = false,
            _ => {} // cargo passes --bench
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let driver = start_driver();
    let empty = paired.then(start_driver);
    println!(
        "local, CreateVolume+DeleteVolume cycles over a unix socket, {seconds} s per cell{}",
        if sync { ", sync(2) before each" } else { "" }
    );
    println!("present   workers  client        cycles/s  create p50 ms  p99 ms");
    let mut have = 0;
    for &present in &present_list {
        rt.block_on(fill(&driver.socket, have, present));
        have = have.max(present);
        for &workers in &workers_list {
            // The empty driver's cell first, when pairing.
            let runs = empty
                .as_ref()
                .filter(|_| present > 0)
                .map(|e| (e, "0 (pair)".to_string()))
                .into_iter()
                .chain([(&driver, present.to_string())]);
            for (d, label) in runs {
                if sdk {
                    settle(sync);
                    let tag = format!("{}-{workers}", label.replace(['(', ')', ' '], ""));
                    let (rate, p50, p99) = rt.block_on(cell(&d.socket, workers, seconds, &tag));
                    println!(
                        "{label:>8}  {workers:>7}  sdk (tonic)  {rate:>9.0}  {p50:>13.2}  {p99:>6.2}"
                    );
                }
                if let Some(py) = &python {
                    settle(sync);
                    println!(
                        "{label:>8}  {workers:>7}  python       {}",
                        python_cell(py, &d.socket, workers, seconds)
                    );
                }
            }
        }
    }
}
