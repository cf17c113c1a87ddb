//! The binary logs every call (RPC name and outcome) and never a secret.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::*;
use csi_types::{Csi, controller::DeleteVolumeRequest, redact::Secrets};

#[tokio::test(flavor = "multi_thread")]
async fn every_call_is_logged_and_secrets_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let log = dir.path().join("driver.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(["--endpoint", &endpoint, "--node-id", "node-1"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let c = connect(&endpoint).await;
    let secret = "hunter2-very-secret";
    let mut req = mount_req("logged", MIB);
    req.secrets = Secrets::new([("password".to_string(), secret.to_string())].into()).unwrap();
    let v = c.create_volume(req).await.unwrap().volume.volume_id;
    let del = DeleteVolumeRequest {
        volume_id: v,
        secrets: Secrets::new([("token".to_string(), secret.to_string())].into()).unwrap(),
    };
    c.delete_volume(del).await.unwrap();
    let again = c.create_volume(mount_req("logged", 2 * MIB)).await;
    assert!(again.is_ok(), "the name is free again after the delete");
    drop(c);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let text = fs::read_to_string(&log).unwrap();
    for rpc in ["CreateVolume", "DeleteVolume"] {
        assert!(text.contains(rpc), "{rpc} is logged:\n{text}");
    }
    assert!(text.contains("done"), "outcomes are logged:\n{text}");
    assert!(
        text.contains("***stripped***"),
        "secrets appear stripped:\n{text}"
    );
    assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no terminal colours in a log file"
    );
}
