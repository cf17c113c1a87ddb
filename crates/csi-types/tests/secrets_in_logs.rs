//! Secrets never reach the logs, over the socket or in process. This test
//! has a binary of its own: it installs a tracing subscriber, and tracing's
//! per-callsite interest cache must not be shared with tests that run
//! without one.

mod common;

use std::sync::{Arc, Mutex};

use common::{TestDriver, full_plugin, mount_cap, serve};
use csi_types::Code;
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

/// `logging::subscriber` in JSON: every line is one JSON object with the
/// level, the event's fields and the call's span, and secrets stay stripped.
#[tokio::test]
async fn json_logs_are_one_object_per_line_without_secrets() {
    use csi_types::logging::{LogFormat, subscriber};
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = tracing_subscriber::EnvFilter::new("trace");
    let _guard = tracing::subscriber::set_default(subscriber(
        LogFormat::Json,
        filter,
        move || writer.clone(),
        false,
    ));

    let secret = "hunter2-JSON-SECRET";
    let plugin = full_plugin(TestDriver::default());
    RawCsi::raw_create_volume(
        &plugin,
        proto::CreateVolumeRequest {
            name: "vol-j".into(),
            volume_capabilities: vec![mount_cap()],
            secrets: [("password".to_string(), secret.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = RawCsi::raw_delete_volume(&plugin, proto::DeleteVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        !log.contains(secret),
        "a secret leaked into the log:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|v| v["message"] == "done" && v["span"]["rpc"] == "CreateVolume")
        .unwrap_or_else(|| panic!("no `done` line for CreateVolume:\n{log}"));
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["code"], "OK");
    assert!(done["elapsed_ms"].is_number(), "{done}");
    assert!(done["timestamp"].is_string(), "{done}");
    let failed = lines
        .iter()
        .find(|v| v["message"] == "failed" && v["span"]["rpc"] == "DeleteVolume")
        .unwrap_or_else(|| panic!("no `failed` line for DeleteVolume:\n{log}"));
    assert_eq!(failed["code"], "INVALID_ARGUMENT", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("volume_id"),
        "{failed}"
    );
    let request = lines
        .iter()
        .find(|v| v["message"] == "request" && v["span"]["rpc"] == "CreateVolume")
        .unwrap_or_else(|| panic!("no request line:\n{log}"));
    assert!(
        request["request"].as_str().unwrap().contains(STRIPPED),
        "{request}"
    );
}
