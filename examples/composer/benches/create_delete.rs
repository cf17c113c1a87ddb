//! CreateVolume + DeleteVolume over the unix socket against a generated
//! inventory of 10,000 servers and 100,000 drives, with 1 and 64 concurrent
//! clients, every acknowledgement durable (redb commit with fsync, grouped);
//! then the restart time of a state of 100,000 volumes.
//!
//! `cargo bench -p composer --bench create_delete` (about a minute).
//! `COMPOSER_BENCH_OPS=N` sets the create+delete pairs per run (default 4000);
//! `COMPOSER_BENCH_RESTART_ONLY=1` measures the restart alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use composer::ComposerDriver;
use composer_core::inventory::Generate;
use composer_core::{Batch, Composer, Inventory, MemStore, Op, RedbStore, Store};
use csi_types::Csi;
use csi_types::client::Client;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(
    endpoint: &str,
    clients: usize,
    pairs: usize,
    params: &'static [(&'static str, &'static str)],
    tag: &str,
) {
    let per = pairs / clients;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let endpoint = endpoint.to_string();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let client = Client::connect(&endpoint).await.expect("connect");
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let req =
                        composer::create_request(&format!("{tag}-c{c}-{i}"), params, 10 << 30)
                            .unwrap();
                    let t = Instant::now();
                    let v = Csi::create_volume(&client, req)
                        .await
                        .expect("create")
                        .volume;
                    lat.push(t.elapsed());
                    Csi::delete_volume(
                        &client,
                        composer::delete_request(v.volume_id.as_str()).unwrap(),
                    )
                    .await
                    .expect("delete");
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    let n = lat.len() as f64;
    println!(
        "{tag:<28} clients={clients:<3} creates={:<6} {:>7.0} create+delete pairs/s  create p50 {:>8.2?} p99 {:>8.2?}",
        lat.len(),
        n / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}

fn main() {
    let pairs: usize = std::env::var("COMPOSER_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let inv = Inventory::generate(&Generate::LARGE);
    println!(
        "inventory: {} servers, {} drives (generated in {:.2?})",
        inv.servers().len(),
        inv.drives().len(),
        t.elapsed()
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let t = Instant::now();
    let driver = ComposerDriver::open(inv.clone(), store, None).unwrap();
    println!("composer opened on an empty state in {:.2?}", t.elapsed());
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    let restart_only = std::env::var_os("COMPOSER_BENCH_RESTART_ONLY").is_some();
    rt.block_on(async {
        if restart_only {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = {
            let endpoint = endpoint.clone();
            let driver = driver.clone();
            tokio::spawn(async move {
                composer::serve(&driver, &endpoint, async {
                    let _ = rx.await;
                })
                .await
            })
        };
        while Client::connect(&endpoint).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (params, name) in [
            (&[][..], "hdd (whole drive)"),
            (&[("type", "slice")][..], "slice"),
            (&[("redundancy", "true")][..], "hdd raid1"),
        ] {
            for clients in [1usize, 64] {
                let n = if clients == 1 { pairs / 4 } else { pairs };
                run(&endpoint, clients, n, params, name).await;
            }
        }
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    });
    drop(driver);

    // Restart: 100,000 volumes recorded, then a fresh open.
    let mem = Arc::new(MemStore::default());
    let c = Composer::open(inv.clone(), mem.clone()).unwrap();
    let t = Instant::now();
    for i in 0..100_000 {
        let p: &[(&str, &str)] = if i % 2 == 0 {
            &[("type", "slice")]
        } else {
            &[]
        };
        let params = p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.create(
            &format!("pv-{i}"),
            &params,
            csi_types::types::CapacityRange::new(Some(10 << 30), None).unwrap(),
            true,
            true,
            None,
        )
        .unwrap();
    }
    println!(
        "placed 100,000 volumes (half slices, half whole HDDs) in memory in {:.2?}",
        t.elapsed()
    );
    let records = c.records();
    drop(c);
    let path = dir.path().join("restart.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        for chunk in records.chunks(10_000) {
            store
                .commit(Batch::of(
                    chunk
                        .iter()
                        .map(|r| Op::PutVolume(Box::new(r.clone())))
                        .collect(),
                ))
                .unwrap();
        }
    }
    for attempt in 0..3 {
        let t = Instant::now();
        let store = Arc::new(RedbStore::open(&path).unwrap());
        let loaded = store.load().unwrap();
        let read = t.elapsed();
        drop(loaded);
        let t = Instant::now();
        let c = Composer::open(inv.clone(), store).unwrap();
        println!("restart {attempt}: reading the 100,000 records alone takes {read:.2?}");
        assert_eq!(c.volume_count(), 100_000);
        assert!(c.reconcile_report().is_clean());
        println!(
            "restart {attempt}: recovered {} volumes in {:.2?}",
            c.volume_count(),
            t.elapsed()
        );
    }
}
