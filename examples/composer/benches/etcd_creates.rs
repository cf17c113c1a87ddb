//! CreateVolume throughput and latency over the unix sockets of 1 and 2
//! composer replicas sharing one local etcd (Debian's `etcd-server`, started
//! on free ports with its data in a temp dir, stopped by PID), against the
//! generated inventory of 10,000 servers and 100,000 drives. Each replica is
//! a `ComposerDriver` with its own `EtcdStore` (its own etcd connection,
//! watch and runtime) serving its own socket, in this process; the clients
//! are spread evenly over the replicas' sockets. Every acknowledged create is
//! one etcd transaction (compare-and-swap on the revisions it read), made
//! durable by etcd's own fsync of its write-ahead log.
//!
//! `cargo bench -p composer --bench etcd_creates`.
//! `COMPOSER_BENCH_CREATES=N` sets the creates per run (default 3000),
//! `COMPOSER_BENCH_CLIENTS=N[,N…]` the numbers of clients, one line each
//! (default `1,8,64`; at least one per replica; a line with one client per
//! replica makes a tenth of the creates).
//! The target on the shared 2-core machine: at least 500 creates/s in total.

use std::sync::Arc;
use std::time::{Duration, Instant};

use composer::ComposerDriver;
use composer_core::inventory::Generate;
use composer_core::{EtcdConfig, EtcdStore, Inventory, LocalEtcd};
use csi_types::Csi;
use csi_types::client::Client;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Creates `creates` volumes from `clients` clients spread over `endpoints`;
/// prints creates/s, p50 and p99 and the ABORTED answers (retried).
async fn run(
    endpoints: &[String],
    clients: usize,
    creates: usize,
    params: &'static [(&'static str, &'static str)],
    tag: &str,
) {
    let per = creates / clients;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let endpoint = endpoints[c % endpoints.len()].clone();
            tokio::spawn(async move {
                let client = Client::connect(&endpoint).await.expect("connect");
                let mut lat = Vec::with_capacity(per);
                let mut aborted = 0usize;
                for i in 0..per {
                    let name = format!("{}-n{clients}-c{c}-{i}", params.len());
                    let req = composer::create_request(&name, params, 10 << 30).unwrap();
                    let t = Instant::now();
                    loop {
                        match Csi::create_volume(&client, req.clone()).await {
                            Ok(_) => break,
                            Err(e) if e.code() == csi_types::Code::Aborted => aborted += 1,
                            Err(e) => panic!("create: {e}"),
                        }
                    }
                    lat.push(t.elapsed());
                }
                (lat, aborted)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut aborted = 0;
    for t in tasks {
        let (l, a) = t.await.unwrap();
        lat.extend(l);
        aborted += a;
    }
    let elapsed = start.elapsed();
    lat.sort();
    println!(
        "{tag:<22} replicas={} clients={clients:<3} creates={:<5} {:>6.0} creates/s  p50 {:>8.2?} p99 {:>8.2?}  ABORTED retried {aborted}",
        endpoints.len(),
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}

fn main() {
    let creates: usize = std::env::var("COMPOSER_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let counts: Vec<usize> = std::env::var("COMPOSER_BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);
    let etcd = match LocalEtcd::start() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("etcd_creates: etcd could not be started: {why}");
            std::process::exit(1);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inv = Inventory::generate(&Generate::LARGE);
    println!(
        "inventory: {} servers, {} drives; etcd at {} (pid {:?})",
        inv.servers().len(),
        inv.drives().len(),
        etcd.url(),
        etcd.pid()
    );
    let dir = tempfile::tempdir().unwrap();
    for replicas in [1usize, 2] {
        // A fresh prefix per run: an empty state.
        let mut drivers = Vec::new();
        let mut endpoints = Vec::new();
        for r in 0..replicas {
            let mut cfg = EtcdConfig::parse(&etcd.url()).unwrap();
            cfg.prefix = format!("/bench-{replicas}");
            let store = Arc::new(EtcdStore::connect(cfg).expect("connecting to etcd"));
            drivers.push(ComposerDriver::open(inv.clone(), store, None).unwrap());
            endpoints.push(format!(
                "unix://{}",
                dir.path()
                    .join(format!("csi-{replicas}-{r}.sock"))
                    .display()
            ));
        }
        rt.block_on(async {
            let mut stops = Vec::new();
            let mut servers = Vec::new();
            for (d, e) in drivers.iter().zip(&endpoints) {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let (d, e) = (d.clone(), e.clone());
                servers.push(tokio::spawn(async move {
                    composer::serve(&d, &e, async {
                        let _ = rx.await;
                    })
                    .await
                }));
                stops.push(tx);
            }
            for e in &endpoints {
                while Client::connect(e).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for (params, name) in [
                (&[("type", "slice")][..], "slice"),
                (&[][..], "hdd (whole drive)"),
            ] {
                // One line per distinct number of clients (at least one per
                // replica): a repeated number would repeat an earlier line's
                // names and measure idempotent repeats, not creates.
                let mut lines: Vec<usize> = counts.iter().map(|&c| c.max(replicas)).collect();
                lines.sort_unstable();
                lines.dedup();
                for clients in lines {
                    let n = if clients == replicas {
                        creates / 10
                    } else {
                        creates
                    };
                    run(&endpoints, clients, n, params, name).await;
                }
            }
            for s in stops {
                let _ = s.send(());
            }
            for s in servers {
                s.await.unwrap().unwrap();
            }
        });
        drop(drivers);
    }
    drop(etcd);
}
