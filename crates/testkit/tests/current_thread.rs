//! The suite on a current-thread runtime (the default of `#[tokio::test]`),
//! over a socket: the property runner's blocking thread must still get its
//! calls through while the runtime's only thread waits for it.

mod common;
use csi_testkit::memdriver::{MemDriver, MemDriverConfig};
use csi_types::RawCsi;
use std::sync::Arc;
#[tokio::test(flavor = "current_thread")]
async fn the_suite_runs_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let plugin = MemDriver::new(MemDriverConfig::default()).plugin();
    let ep = endpoint.clone();
    tokio::spawn(
        async move { csi_types::server::serve(plugin, &ep, std::future::pending()).await },
    );
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
    config.proptest_cases = 4;
    config.case_timeout = std::time::Duration::from_secs(20);
    let report = csi_testkit::Suite::new(config, client.clone(), client)
        .run()
        .await;
    common::assert_all_pass(&report);
}
