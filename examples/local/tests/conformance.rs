//! The workspace's CSI conformance suite (`csi-testkit`) against this driver,
//! in process and over a real unix socket.
//!
//! The only cases allowed to skip are those one node cannot support; any
//! other skip fails the test, so a case silently not running is caught.

mod common;

use std::sync::Arc;

use common::*;
use csi_testkit::{Outcome, Report, Suite};
use csi_types::RawCsi;

/// Cases that cannot apply to a single-node driver, with why (the README lists them).
const ONE_NODE_SKIPS: &[&str] = &[
    // Publishing to a second node: there is none (any other node id is NOT_FOUND).
    "controller/publish/second_node",
];

fn config(dir: &std::path::Path) -> csi_testkit::Config {
    let mut c = csi_testkit::Config::new(dir);
    c.mutable_parameters = [("iops-class".to_string(), "high".to_string())].into();
    c.proptest_cases = std::env::var("LOCAL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    c
}

fn check(report: &Report) {
    let root = csi_node::is_root();
    let mut bad = Vec::new();
    for r in &report.results {
        println!("{r}");
        // The reference driver gives the preferred answer wherever the spec
        // allows several (missing objects first, OK for what cannot be
        // found on unpublish): no warnings.
        if !r.warnings.is_empty() {
            bad.push(format!("{}: warnings: {:?}", r.name, r.warnings));
        }
        match &r.outcome {
            Outcome::Pass => {}
            Outcome::Skip(_) if ONE_NODE_SKIPS.iter().any(|s| r.name.contains(s)) => {}
            Outcome::Fail(why) if !root && why.contains("must run as root") => {
                eprintln!("{}: needs root to mount, not run as root", r.name);
            }
            _ => bad.push(r.to_string()),
        }
    }
    println!("{}", report.summary());
    assert!(
        bad.is_empty(),
        "{} case(s) failed, skipped or warned:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let driver =
        local::LocalDriver::open(local::Config::with_state_dir(dir.path().join("state"))).unwrap();
    let plugin: Arc<dyn RawCsi> = Arc::new(driver.plugin().unwrap());
    let report = Suite::new(config(&dir.path().join("kit")), plugin.clone(), plugin)
        .run()
        .await;
    csi_node::release_under(dir.path());
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_over_a_unix_socket() {
    let s = Served::start(|_| {}).await;
    let client: Arc<dyn RawCsi> = Arc::new(s.client.clone());
    let report = Suite::new(config(&s.dir.path().join("kit")), client.clone(), client)
        .run()
        .await;
    check(&report);
}
