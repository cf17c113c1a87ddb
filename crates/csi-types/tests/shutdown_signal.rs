//! SIGTERM stops a server gracefully: in-flight work drains, the call
//! returns `Ok`, and the socket file is gone. This test signals its own
//! process, so it has a binary of its own.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use csi_types::prelude::*;
use csi_types::{
    client,
    identity::{GetPluginInfoRequest, GetPluginInfoResponse, ProbeRequest},
    ids::PluginName,
    server,
};

struct Id;

#[async_trait]
impl Identity for Id {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("sig.example.com")?, "1")
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", path.display());
    let plugin = Plugin::builder(Arc::new(Id)).build().unwrap();
    let ep = endpoint.clone();
    let task =
        tokio::spawn(async move { server::serve(plugin, &ep, server::shutdown_signal()).await });

    let client = loop {
        match client::Client::connect(&endpoint).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    Csi::probe(&client, ProbeRequest {}).await.unwrap();
    drop(client);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the server stops within 10 s of SIGTERM")
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "the socket file is removed");
}
