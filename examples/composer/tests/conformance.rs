//! The workspace's CSI conformance suite (`csi-testkit`) against the
//! composer, in process and over a real unix socket, on the built-in
//! inventory with a redb state file.
//!
//! The first two serve Identity and Controller, with `NodeGetInfo` for one
//! server so that publish and topology cases know a node, but no node side:
//! the `node/…` cases that need it are the only ones allowed to fail, and
//! only with `UNIMPLEMENTED`; so is the state-machine property, only when the
//! call it fails at is a node call answered `UNIMPLEMENTED`. The third serves
//! the node side with real mounts and runs the `node/…` cases, all of which
//! must pass; the fourth runs the state-machine property (random sequences
//! of controller and node calls) against the node side with real mounts.

use std::sync::Arc;

use composer::ComposerDriver;
use composer_core::{Inventory, RedbStore};
use csi_testkit::{Outcome, Report, Suite};
use csi_types::RawCsi;

fn config(dir: &std::path::Path) -> csi_testkit::Config {
    let mut c = csi_testkit::Config::new(dir);
    c.parameters = [("type".to_string(), "slice".to_string())].into();
    c.second_node_id = Some("r1-n2".into());
    c.proptest_cases = std::env::var("COMPOSER_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    c
}

/// A failure that only says the node side is not there yet.
fn node_side_pending(name: &str, why: &str) -> bool {
    let unimplemented = why.contains("got UNIMPLEMENTED: unimplemented: the composer's node side");
    (name.starts_with("node/") && unimplemented)
        || (name == "properties/state_machine"
            && unimplemented
            && (why.contains("(NodePublishVolume(") || why.contains("(NodeStageVolume(")))
}

fn check(report: &Report) {
    let mut bad = Vec::new();
    for r in &report.results {
        println!("{r}");
        match &r.outcome {
            Outcome::Pass | Outcome::Skip(_) => {}
            Outcome::Fail(why) if node_side_pending(&r.name, why) => {}
            _ => bad.push(r.to_string()),
        }
    }
    println!("{}", report.summary());
    assert!(
        bad.is_empty(),
        "{} case(s) failed:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn driver(dir: &std::path::Path) -> ComposerDriver {
    let store = Arc::new(RedbStore::open(&dir.join("state.redb")).unwrap());
    ComposerDriver::open(Inventory::default_inventory(), store, Some("r1-n1")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let plugin: Arc<dyn RawCsi> = Arc::new(driver(dir.path()).plugin().unwrap());
    let report = Suite::new(config(&dir.path().join("kit")), plugin.clone(), plugin)
        .run()
        .await;
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", sock.display());
    let d = driver(dir.path());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            composer::serve(&d, &endpoint, async {
                let _ = rx.await;
            })
            .await
        })
    };
    let mut client = None;
    for _ in 0..2400 {
        if let Ok(c) = csi_types::client::Client::connect(&endpoint).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let client: Arc<dyn RawCsi> = Arc::new(client.expect("the composer serves its socket"));
    let report = Suite::new(config(&dir.path().join("kit")), client.clone(), client)
        .run()
        .await;
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    check(&report);
}

/// Runs the cases whose names start with `filter` against the composer
/// serving its node side (raid-engine + FUSE + loop + ext4, real mounts);
/// every one must pass. Needs root, FUSE and loop devices: without them it
/// says so, and fails under `CI=true`.
async fn with_node_side(filter: &str) {
    let why = composer::demo::missing_prerequisite();
    if let Some(why) = why {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but this host cannot mount: {why}"
        );
        eprintln!("SKIPPED: the node side needs root, FUSE and loop devices: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path()).with_node_side(composer::node::NodeConfig {
        data_dir: dir.path().join("drives"),
        run_dir: dir.path().join("run"),
        backend: composer::node::Backend::Userspace,
    });
    let plugin: Arc<dyn RawCsi> = Arc::new(d.plugin().unwrap());
    let mut cfg = config(&dir.path().join("kit"));
    cfg.filter = Some(filter.into());
    let report = Suite::new(cfg, plugin.clone(), plugin).run().await;
    if let Some(s) = d.node_side() {
        csi_node::release_under(&dir.path().join("kit"));
        s.release_all();
    }
    csi_node::release_under(dir.path());
    let mut bad = Vec::new();
    for r in &report.results {
        println!("{r}");
        if let Outcome::Fail(_) = &r.outcome {
            bad.push(r.to_string());
        }
    }
    println!("{}", report.summary());
    assert!(
        bad.is_empty(),
        "{} case(s) failed:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The suite's node cases with real mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_node_side_with_real_mounts() {
    with_node_side("node/").await;
}

/// The state-machine property with the node side: random sequences of
/// create, publish, stage, node publish, unpublish, unstage and delete, with
/// duplicates, against real mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_machine_with_node_side_and_real_mounts() {
    with_node_side("properties/state_machine").await;
}
