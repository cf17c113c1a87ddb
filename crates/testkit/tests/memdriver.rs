//! The whole suite against the in-memory reference driver, in process and
//! over a real unix socket.

mod common;

use std::sync::Arc;

use csi_testkit::memdriver::{MemDriver, MemDriverConfig};
use csi_testkit::{Outcome, Suite};
use csi_types::RawCsi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memdriver_passes_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let plugin: Arc<dyn RawCsi> = Arc::new(MemDriver::new(MemDriverConfig::default()).plugin());
    let report = Suite::new(common::config(dir.path()), plugin.clone(), plugin)
        .run()
        .await;
    common::assert_all_pass(&report);
    common::assert_skips_are_explained(&report);
    // The memdriver implements everything the suite checks: nothing is skipped.
    assert_eq!(report.skipped(), 0, "{}", report.summary());
    assert_eq!(report.results.len(), csi_testkit::all_cases().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memdriver_passes_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let plugin = MemDriver::new(MemDriverConfig::default()).plugin();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            csi_types::server::serve(plugin, &endpoint, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let mut client = None;
    for _ in 0..3000 {
        if let Ok(c) = csi_types::client::Client::connect(&endpoint).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let client: Arc<dyn RawCsi> = Arc::new(client.expect("the server came up"));
    let mut config = common::config(dir.path());
    config.proptest_cases = config.proptest_cases.min(8);
    let report = Suite::new(config, client.clone(), client).run().await;
    common::assert_all_pass(&report);
    assert_eq!(report.skipped(), 0, "{}", report.summary());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_without_optional_services_is_skipped_with_reasons() {
    // Identity and Node (with expansion) only: every controller and group case must skip,
    // naming the capability, and nothing may fail.
    let dir = tempfile::tempdir().unwrap();
    let driver = MemDriver::new(MemDriverConfig::default());
    let plugin: Arc<dyn RawCsi> = Arc::new(
        csi_types::Plugin::builder(driver.clone())
            .node(driver.clone())
            // The memdriver's node advertises VOLUME_CONDITION, which needs stats.
            .node_stats(driver.clone())
            // The memdriver advertises online expansion, which needs an expander.
            .node_expander(driver)
            .build()
            .unwrap(),
    );
    let mut config = common::config(dir.path());
    config.proptest_cases = 2;
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    common::assert_all_pass(&report);
    for name in [
        "controller/create_volume/idempotent",
        "controller/list_volumes/pagination",
        "group/lifecycle",
        "node/lifecycle",
        "node/get_volume_stats/volume_condition",
        "controller/get_volume/volume_condition",
        "controller/create_volume/topology_requisite",
        "controller/create_volume/topology_unsatisfiable",
        "properties/state_machine",
    ] {
        match report.outcome(name) {
            Some(Outcome::Skip(reason)) => assert!(
                reason.contains("CREATE_DELETE_VOLUME")
                    || reason.contains("GROUP")
                    || reason.contains("VOLUME_CONDITION"),
                "{name}: {reason}"
            ),
            other => panic!("{name}: expected a skip, got {other:?}"),
        }
    }
    assert_eq!(report.outcome("identity/probe"), Some(&Outcome::Pass));
}

/// The memdriver's `ValidateVolumeCapabilities`, with no feature
/// capabilities (no clones, read-only publishing or volume conditions).
struct NoFeatures(Arc<MemDriver>);

#[async_trait::async_trait]
impl csi_types::driver::Controller for NoFeatures {
    async fn validate_volume_capabilities(
        &self,
        req: csi_types::controller::ValidateVolumeCapabilitiesRequest,
    ) -> Result<csi_types::controller::ValidateVolumeCapabilitiesResponse, csi_types::CsiError>
    {
        self.0.validate_volume_capabilities(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_controller_passes() {
    // CREATE_DELETE_VOLUME alone on the controller (no listing, capacity,
    // snapshots, publishing or expansion) and a node with staging: what a
    // first driver often starts with. Nothing may fail; the state machine
    // runs with what the model can check without listings.
    let dir = tempfile::tempdir().unwrap();
    let driver = MemDriver::new(MemDriverConfig {
        topology: None,
        requires_controller_publish: false,
        ..MemDriverConfig::default()
    });
    let plugin: Arc<dyn RawCsi> = Arc::new(
        csi_types::Plugin::builder(driver.clone())
            .controller(Arc::new(NoFeatures(driver.clone())))
            .provisioner(driver.clone())
            .node(driver.clone())
            .stager(driver.clone())
            .node_stats(driver.clone())
            .node_expander(driver)
            .build()
            .unwrap(),
    );
    let mut config = common::config(dir.path());
    config.proptest_cases = 64;
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    common::assert_all_pass(&report);
    for name in ["node/lifecycle", "properties/state_machine"] {
        assert_eq!(report.outcome(name), Some(&Outcome::Pass), "{name}");
    }
    for name in [
        "controller/list_volumes/pagination",
        "controller/get_capacity",
        "controller/create_volume/topology_requisite",
    ] {
        assert!(
            matches!(report.outcome(name), Some(Outcome::Skip(_))),
            "{name}: {:?}",
            report.outcome(name)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memdriver_passes_with_separate_controller_and_node_plugins() {
    // One driver state, served as two plugins: a controller-only one and a
    // node-only one, as a driver deployed as a controller Deployment and a
    // node DaemonSet would be. Every case must still pass.
    let dir = tempfile::tempdir().unwrap();
    let d = MemDriver::new(MemDriverConfig::default());
    let controller = csi_types::Plugin::builder(d.clone())
        .controller(d.clone())
        .provisioner(d.clone())
        .publisher(d.clone())
        .volume_lister(d.clone())
        .capacity_reporter(d.clone())
        .snapshotter(d.clone())
        .snapshot_lister(d.clone())
        .snapshot_getter(d.clone())
        .controller_expander(d.clone())
        .volume_getter(d.clone())
        .modifier(d.clone())
        .group_controller(d.clone())
        .snapshot_metadata(d.clone())
        .build()
        .unwrap();
    let node = csi_types::Plugin::builder(d.clone())
        .node(d.clone())
        .stager(d.clone())
        .node_stats(d.clone())
        .node_expander(d)
        .build()
        .unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 8;
    let report = Suite::new(config, Arc::new(controller), Arc::new(node))
        .run()
        .await;
    common::assert_all_pass(&report);
    assert_eq!(report.skipped(), 0, "{}", report.summary());
}

/// `dir` written relative to the current directory.
fn relative_to_cwd(dir: &std::path::Path) -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let mut rel = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        rel.push("..");
    }
    rel.join(dir.strip_prefix("/").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_work_dirs_are_taken_from_the_current_directory() {
    // They used to be sent as they were, and every node case failed with INVALID_ARGUMENT.
    let dir = tempfile::tempdir().unwrap();
    let plugin: Arc<dyn RawCsi> = Arc::new(MemDriver::new(MemDriverConfig::default()).plugin());
    let mut config = common::config(dir.path());
    config.staging_dir = relative_to_cwd(&dir.path().join("staging"));
    config.target_dir = relative_to_cwd(&dir.path().join("target"));
    assert!(config.staging_dir.is_relative());
    config.filter = Some("node/".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    common::assert_all_pass(&report);
    assert!(report.results.len() > 3, "{}", report.summary());
    assert!(dir.path().join("staging").is_dir());
}
