//! Secrets never reach the logs, over the socket or in process. This test
//! has a binary of its own: it installs a tracing subscriber, and tracing's
//! per-callsite interest cache must not be shared with tests that run
//! without one.

mod common;

use std::sync::{Arc, Mutex};

use common::{TestDriver, full_plugin, mount_cap, serve};
use csi_types::client::Client;
use csi_types::{
    RawCsi,
    controller::DeleteVolumeRequest,
    ids::VolumeId,
    proto,
    redact::{STRIPPED, Secrets},
};

/// A `tracing` writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let served = serve(full_plugin(TestDriver::default())).await;
    let client = Client::connect(&served.endpoint).await.unwrap();
    let secret = "hunter2-TOP-SECRET";
    let secrets = || {
        [("password".to_string(), secret.to_string())]
            .into_iter()
            .collect()
    };
    RawCsi::raw_create_volume(
        &client,
        proto::CreateVolumeRequest {
            name: "vol-s".into(),
            volume_capabilities: vec![mount_cap()],
            secrets: secrets(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A request that fails validation is logged too, before it is refused.
    let bad = RawCsi::raw_delete_volume(
        &client,
        proto::DeleteVolumeRequest {
            volume_id: String::new(),
            secrets: secrets(),
        },
    )
    .await;
    assert!(bad.is_err());
    // The in-process path logs the same way.
    let plugin = full_plugin(TestDriver::default());
    RawCsi::raw_node_stage_volume(
        &plugin,
        proto::NodeStageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "/tmp/x".into(),
            volume_capability: Some(mount_cap()),
            secrets: secrets(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    served.stop().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("CreateVolume"),
        "the calls were logged:\n{log}"
    );
    assert!(log.contains("DeleteVolume"), "{log}");
    assert!(log.contains("NodeStageVolume"), "{log}");
    assert!(log.contains(STRIPPED), "{log}");
    assert!(
        !log.contains(secret),
        "a secret leaked into the log:\n{log}"
    );
    // Typed requests redact too.
    let typed = DeleteVolumeRequest {
        volume_id: VolumeId::new("v").unwrap(),
        secrets: Secrets::new(secrets()).unwrap(),
    };
    assert!(!format!("{typed:?}").contains(secret));
}
