//! CreateVolume + DeleteVolume cycles per second against the `local` driver
//! binary over its unix socket, with 1, 8 and 64 concurrent clients (each
//! its own connection) and 0, 1,000 and 10,000 volumes already present.
//! Prints cycles/s and the CreateVolume latency p50/p99 for each cell.
//!
//! ```text
//! cargo bench -p local --bench cycles -- [--seconds S] [--python PYTHON]
//!     [--workers 1,8,64] [--present 0,1000,10000] [--no-sdk] [--paired] [--no-sync]
//!     [--rounds N] [--driver-arg ARG]... [--variant LABEL=ARGS]...
//! ```
//!
//! Each number of volumes present has its own driver, filled once before
//! the first cell. `--workers` and `--present` run only the listed cells;
//! `--no-sdk` drives the cells with the Python client only. `--paired` runs
//! each cell with volumes present next to the same cell on the empty driver
//! (rows `0 (pair)`; with 0 in `--present`, the first pair's empty cell is
//! also the `0` row), so that the two are measured a few seconds apart and
//! the run-to-run spread of a shared machine does not pass for an effect of
//! the number of volumes.
//!
//! `--rounds N` (default 1) runs every cell N times, interleaved: a round
//! runs each group of cells (one number of clients and one client kind:
//! the cells for each number of volumes, or its pairs) once, the order of
//! the groups rotated by one from round to round and, with `--paired`, the
//! empty cell of a pair first in odd rounds and second in even ones. After
//! the last round it prints per cell the median and the min–max of cycles/s
//! over the rounds and the median create p50/p99, and per pair the median
//! (and min–max) of the ratio present / empty within each round. The figures
//! of a noisy shared machine are read from these medians.
//!
//! Before every cell the bench calls `sync(2)`, so that the kernel's
//! writeback of what the fill and earlier cells left dirty (directories and
//! inodes of thousands of volumes created, renamed and deleted) is not done
//! during the next cell's measured seconds, on the same disk and cores;
//! `--no-sync` leaves it out.
//!
//! `--driver-arg ARG` passes `ARG` to every driver the bench starts (say
//! `--driver-arg=--idle-poll=0` to measure without the idle poller).
//! `--variant LABEL=ARGS` (repeatable) compares drivers started with
//! different arguments in the same run: each variant has its own drivers
//! (ARGS split at spaces, after the `--driver-arg`s), and a group runs its
//! cells for every variant one after the other, the variants' order
//! reversed in odd rounds; with `--rounds` the summary also gives, per
//! cell, the median (min–max) of each variant's rate to the first
//! variant's in the same round. Say `--variant off=--idle-poll=0
//! --variant on=--idle-poll=2000`.
//!
//! Every cell also prints the driver's CPU time per cycle (its user and
//! system time from `/proc/PID/stat` over the cell, the connections'
//! set-up included) and, of it, the idle poller's threads' (their
//! `schedstat`).
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

impl Driver {
    /// The driver's CPU time so far and its idle poller threads' share, in
    /// seconds (`/proc/PID/stat`'s user and system ticks; the threads'
    /// `schedstat`, on-CPU nanoseconds).
    fn cpu(&self) -> (f64, f64) {
        let pid = self.child.id();
        let total = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // After the command name in parentheses: field 3 on.
                let rest = &stat[stat.rfind(')')? + 2..];
                let f: Vec<&str> = rest.split(' ').collect();
                let ticks: f64 =
                    f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
                Some(ticks / rustix::param::clock_ticks_per_second() as f64)
            })
            .unwrap_or(f64::NAN);
        let mut poller = 0.0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if !comm.starts_with("idle-poller") {
                    continue;
                }
                let ns = std::fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0);
                poller += ns / 1e9;
            }
        }
        (total, poller)
    }
}

fn start_driver(extra: &[String]) -> Driver {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("csi.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_local"))
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--node-id", "bench-node", "--capacity", "1Ti"])
        .args(extra)
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

async fn create(client: &Client, name: String) -> String {
    let resp = RawCsi::raw_create_volume(
        client,
        // The request the csi-types middleware bench sends too.
        proto::CreateVolumeRequest::single_node_mount(name, 4096),
    )
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
async fn cell_run(
    socket: &Path,
    workers: usize,
    seconds: f64,
    tag: &str,
) -> (f64, f64, f64, usize) {
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
    (lat.len() as f64 / elapsed, pct(0.5), pct(0.99), lat.len())
}

/// Writes back what the fill and earlier cells left dirty (see the module
/// documentation).
fn settle(sync: bool) {
    if sync {
        rustix::fs::sync();
    }
}

/// One measured cell: cycles/s and the CreateVolume p50/p99 in ms.
#[derive(Clone, Copy, Debug)]
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    /// The driver's CPU per cycle, ms, and of it the idle poller's.
    cpu: f64,
    poller: f64,
}

/// Runs `.ci/grpc_client.py bench`; its line as printed, and its figures
/// when it succeeded.
fn python_cell(
    python: &str,
    socket: &Path,
    workers: usize,
    seconds: f64,
) -> (String, Option<(Figures, usize)>) {
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
        let line = format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return (line, None);
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let figures = parse_python(&line);
    (line, figures)
}

/// The figures in the Python client's line (`... cycles=N cycles/s=N
/// create p50=Xms p99=Yms`), and its number of cycles.
fn parse_python(line: &str) -> Option<(Figures, usize)> {
    let field = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest.find([' ', 'm']).unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let figures = Figures {
        rate: field("cycles/s=")?,
        p50: field("p50=")?,
        p99: field("p99=")?,
        cpu: f64::NAN,
        poller: f64::NAN,
    };
    Some((figures, field(" cycles=")? as usize))
}

/// Which client drives a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sdk,
    Python,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Sdk => "sdk (tonic)",
            Kind::Python => "python",
        }
    }
}

/// A cell's place in the table: volumes present (0 for a pair's empty
/// cell, with `pair_of` the present count it is paired with), clients,
/// client kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cell {
    present: usize,
    pair_of: Option<usize>,
    workers: usize,
    kind: Kind,
    /// Index into the variants.
    variant: usize,
}

impl Cell {
    fn label(&self) -> String {
        match self.pair_of {
            Some(_) => "0 (pair)".to_string(),
            None => self.present.to_string(),
        }
    }
}

/// The cells of one group (one number of clients, one client kind) in the
/// order round `round` runs them (see the module documentation).
fn group_cells(
    present: &[usize],
    paired: bool,
    workers: usize,
    kind: Kind,
    round: usize,
    variant: usize,
) -> Vec<Cell> {
    let cell = |present, pair_of| Cell {
        present,
        pair_of,
        workers,
        kind,
        variant,
    };
    if !paired {
        return present.iter().map(|&p| cell(p, None)).collect();
    }
    let mut cells = Vec::new();
    let mut zero_row = present.contains(&0);
    let with_volumes: Vec<usize> = present.iter().copied().filter(|&p| p > 0).collect();
    if with_volumes.is_empty() && zero_row {
        cells.push(cell(0, None));
    }
    for p in with_volumes {
        // The first pair's empty cell is the `0` row when 0 was asked for.
        let empty = cell(0, if zero_row { None } else { Some(p) });
        zero_row = false;
        let pair = [empty, cell(p, None)];
        if round.is_multiple_of(2) {
            cells.extend(pair);
        } else {
            cells.extend(pair.into_iter().rev());
        }
    }
    cells
}

/// The median and the extremes of `v` (not empty).
fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench -p local --bench cycles -- [--seconds S] [--python PYTHON]
    [--workers 1,8,64] [--present 0,1000,10000] [--no-sdk] [--paired] [--no-sync] [--rounds N]
    [--driver-arg ARG]... [--variant LABEL=ARGS]...

  --seconds S        measured seconds per cell (default 3)
  --python PYTHON    also drive every cell with .ci/grpc_client.py on PYTHON (needs grpcio)
  --workers LIST     numbers of concurrent clients (default 1,8,64)
  --present LIST     numbers of volumes present (default 0,1000,10000)
  --no-sdk           only the Python client
  --paired           run each cell with volumes present next to the same cell on an empty driver
  --no-sync          no sync(2) before each cell
  --driver-arg ARG   pass ARG to every driver started (repeatable), e.g. --driver-arg=--idle-poll=0
  --variant L=ARGS   compare drivers started with ARGS (split at spaces) in the same run, each
                     cell run for every variant in turn (repeatable; the first is the reference),
                     e.g. --variant off=--idle-poll=0 --variant on=--idle-poll=2000
  --rounds N         run every cell N times, interleaved (groups rotated, pairs and variants
                     alternating), and print per cell the median and min-max over the rounds,
                     per pair the median of the present/empty ratios, and per variant the
                     median of its ratios to the first variant (default 1)

Every cell prints the driver's CPU per cycle (ms, /proc/PID/stat) and the idle poller's part."
    );
    std::process::exit(2)
}

/// Drivers started with the same arguments, one per number of volumes.
struct Variant {
    label: String,
    args: Vec<String>,
}

fn main() {
    let mut seconds = 3.0;
    let mut python: Option<String> = None;
    let mut workers_list = WORKERS.to_vec();
    let mut present_list = PRESENT.to_vec();
    let mut sdk = true;
    let mut paired = false;
    let mut sync = true;
    let mut rounds = 1usize;
    let mut driver_args: Vec<String> = Vec::new();
    let mut variant_args: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--python" => python = Some(args.next().unwrap_or_else(|| usage())),
            "--workers" => workers_list = counts(args.next(), &WORKERS),
            "--present" => present_list = counts(args.next(), &PRESENT),
            "--no-sdk" => sdk = false,
            "--paired" => paired = true,
            "--no-sync" => sync = false,
            "--driver-arg" => driver_args.push(args.next().unwrap_or_else(|| usage())),
            "--variant" => variant_args.push(args.next().unwrap_or_else(|| usage())),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "--help" | "-h" => usage(),
            other if other.starts_with("--driver-arg=") => {
                driver_args.push(other["--driver-arg=".len()..].to_string())
            }
            other if other.starts_with("--variant=") => {
                variant_args.push(other["--variant=".len()..].to_string())
            }
            _ => {} // cargo passes --bench
        }
    }
    let variants: Vec<Variant> = if variant_args.is_empty() {
        vec![Variant {
            label: String::new(),
            args: driver_args.clone(),
        }]
    } else {
        variant_args
            .iter()
            .map(|v| {
                let (label, extra) = v.split_once('=').unwrap_or_else(|| usage());
                let mut args = driver_args.clone();
                args.extend(extra.split(' ').filter(|a| !a.is_empty()).map(String::from));
                Variant {
                    label: label.to_string(),
                    args,
                }
            })
            .collect()
    };
    present_list.sort_unstable();
    present_list.dedup();
    let kinds: Vec<Kind> = [
        sdk.then_some(Kind::Sdk),
        python.as_ref().map(|_| Kind::Python),
    ]
    .into_iter()
    .flatten()
    .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // One driver per variant and number of volumes present (the empty one
    // also serves the pairs), each filled once.
    let mut levels: Vec<usize> = present_list.clone();
    if paired && !levels.contains(&0) {
        levels.insert(0, 0);
    }
    let mut drivers: Vec<(usize, usize, Driver)> = Vec::new();
    for (v, variant) in variants.iter().enumerate() {
        for &p in &levels {
            let d = start_driver(&variant.args);
            rt.block_on(fill(&d.socket, 0, p));
            drivers.push((v, p, d));
        }
    }
    let driver = |variant: usize, present: usize| {
        &drivers
            .iter()
            .find(|(v, p, _)| *v == variant && *p == present)
            .expect("a driver")
            .2
    };
    println!(
        "local, CreateVolume+DeleteVolume cycles over a unix socket, {seconds} s per cell{}{}",
        if sync { ", sync(2) before each" } else { "" },
        if rounds > 1 {
            format!(", {rounds} rounds")
        } else {
            String::new()
        }
    );
    if let Some(py) = &python {
        let version = Command::new(py)
            .args(["-c", "import grpc; print(grpc.__version__)"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_else(|| "its version unknown".to_string());
        println!("python client: {py}, grpcio {version}");
    }
    if variants.len() > 1 {
        for v in &variants {
            println!("variant {}: driver args {:?}", v.label, v.args);
        }
    }
    let round_col = if rounds > 1 { "round  " } else { "" };
    println!(
        "{round_col}variant  present   workers  client        cycles/s  create p50 ms  p99 ms  drv ms/cyc  poller"
    );
    let groups: Vec<(usize, Kind)> = workers_list
        .iter()
        .flat_map(|&w| kinds.iter().map(move |&k| (w, k)))
        .collect();
    let mut results: Vec<(usize, Cell, Figures)> = Vec::new();
    for round in 0..rounds {
        for g in 0..groups.len() {
            let (workers, kind) = groups[(g + round) % groups.len()];
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            let cells = order
                .into_iter()
                .flat_map(|v| group_cells(&present_list, paired, workers, kind, round, v));
            for cell in cells {
                let d = driver(cell.variant, cell.present);
                let socket = &d.socket;
                settle(sync);
                let label = cell.label();
                let vlabel = &variants[cell.variant].label;
                let round_no = if rounds > 1 {
                    format!("{:>5}  ", round + 1)
                } else {
                    String::new()
                };
                let before = d.cpu();
                let (mut figures, cycles, line) = match kind {
                    Kind::Sdk => {
                        let tag = format!(
                            "{}-{workers}-{round}-{}",
                            label.replace(['(', ')', ' '], ""),
                            cell.variant
                        );
                        let (rate, p50, p99, n) =
                            rt.block_on(cell_run(socket, workers, seconds, &tag));
                        let f = Figures {
                            rate,
                            p50,
                            p99,
                            cpu: f64::NAN,
                            poller: f64::NAN,
                        };
                        let line = format!("sdk (tonic)  {rate:>9.0}  {p50:>13.2}  {p99:>6.2}");
                        (Some(f), n, line)
                    }
                    Kind::Python => {
                        let py = python.as_deref().expect("a Python interpreter");
                        let (line, parsed) = python_cell(py, socket, workers, seconds);
                        match parsed {
                            Some((f, n)) => {
                                let line = format!(
                                    "python       {:>9.0}  {:>13.2}  {:>6.2}",
                                    f.rate, f.p50, f.p99
                                );
                                (Some(f), n, line)
                            }
                            None => (None, 0, format!("python       {line}")),
                        }
                    }
                };
                let after = d.cpu();
                let per_cycle = |a: f64, b: f64| (a - b) * 1000.0 / cycles.max(1) as f64;
                let (cpu, poller) = (per_cycle(after.0, before.0), per_cycle(after.1, before.1));
                println!(
                    "{round_no}{vlabel:>7}  {label:>7}  {workers:>7}  {line}  {cpu:>10.3}  {poller:>6.3}"
                );
                if let Some(f) = figures.as_mut() {
                    f.cpu = cpu;
                    f.poller = poller;
                    results.push((round, cell, *f));
                }
            }
        }
    }
    if rounds > 1 {
        summary(&results, rounds, &variants);
    }
}

/// The per-cell medians, the paired ratios and the variants' ratios over
/// the rounds.
fn summary(results: &[(usize, Cell, Figures)], rounds: usize, variants: &[Variant]) {
    println!();
    println!(
        "over {rounds} rounds: cycles/s median (min-max), create p50/p99 ms and the driver's \
         (and poller's) CPU ms per cycle, medians; with volumes present, the median (min-max) \
         of present / its pair in the same round; for a variant after the first, the median \
         (min-max) of its rate / the first variant's in the same round"
    );
    println!(
        "variant  present   workers  client        cycles/s median (min-max)  p50 ms  p99 ms  drv ms  poller  present/pair  variant/first"
    );
    let mut cells: Vec<Cell> = Vec::new();
    for (_, c, _) in results {
        if !cells.contains(c) {
            cells.push(*c);
        }
    }
    cells.sort_by_key(|c| {
        let level = c.present.max(c.pair_of.unwrap_or(0));
        (
            level,
            c.workers,
            c.kind == Kind::Python,
            c.present > 0,
            c.pair_of.is_some(),
            c.variant,
        )
    });
    let ratio_text = |ratios: Vec<f64>| {
        if ratios.is_empty() {
            String::new()
        } else {
            let (m, lo, hi) = median_min_max(&ratios);
            format!("{m:.2} ({lo:.2}-{hi:.2})")
        }
    };
    for c in &cells {
        let runs: Vec<(usize, &Figures)> = results
            .iter()
            .filter(|(_, x, _)| x == c)
            .map(|(r, _, f)| (*r, f))
            .collect();
        let median_of = |g: fn(&Figures) -> f64| {
            median_min_max(&runs.iter().map(|(_, f)| g(f)).collect::<Vec<_>>())
        };
        let (rate, lo, hi) = median_of(|f| f.rate);
        let (p50, _, _) = median_of(|f| f.p50);
        let (p99, _, _) = median_of(|f| f.p99);
        let (cpu, _, _) = median_of(|f| f.cpu);
        let (poller, _, _) = median_of(|f| f.poller);
        let pair = if c.present > 0 {
            ratio_text(
                runs.iter()
                    .filter_map(|(round, f)| Some(f.rate / pair_in_round(results, *round, c)?.rate))
                    .collect(),
            )
        } else {
            String::new()
        };
        let against_first = if c.variant > 0 {
            let first = Cell { variant: 0, ..*c };
            ratio_text(
                runs.iter()
                    .filter_map(|(round, f)| {
                        let base = results.iter().find(|(r, x, _)| r == round && *x == first)?;
                        Some(f.rate / base.2.rate)
                    })
                    .collect(),
            )
        } else {
            String::new()
        };
        let rates = format!("{rate:.0} ({lo:.0}-{hi:.0})");
        println!(
            "{:>7}  {:>7}  {:>7}  {:<12}  {rates:<25}  {p50:>6.2}  {p99:>6.2}  {cpu:>6.3}  {poller:>6.3}  {pair:<12}  {against_first}",
            variants[c.variant].label,
            c.label(),
            c.workers,
            c.kind.label(),
        );
    }
}

/// The empty cell that `c` (with volumes present) was paired with in
/// `round`: the one marked as its pair, or the `0` row standing for the
/// first pair of its group.
fn pair_in_round<'a>(
    results: &'a [(usize, Cell, Figures)],
    round: usize,
    c: &Cell,
) -> Option<&'a Figures> {
    let same = |x: &Cell| {
        x.present == 0 && x.workers == c.workers && x.kind == c.kind && x.variant == c.variant
    };
    let in_round = || {
        results
            .iter()
            .filter(move |(r, x, _)| *r == round && same(x))
    };
    in_round()
        .find(|(_, x, _)| x.pair_of == Some(c.present))
        .or_else(|| in_round().find(|(_, x, _)| x.pair_of.is_none()))
        .map(|(_, _, f)| f)
}
