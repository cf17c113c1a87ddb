//! The smallest complete CSI plugin: an Identity service served on a unix
//! socket, called back through the SDK's client.
//!
//! `cargo run -p csi-types --example hello` serves on a temporary socket,
//! calls it and exits. With `--endpoint unix:///path` it serves until SIGTERM
//! or SIGINT instead, for a CSI client of your own.

use std::sync::Arc;

use async_trait::async_trait;
use csi_types::prelude::*;
use csi_types::{
    client,
    identity::{
        GetPluginCapabilitiesRequest, GetPluginInfoRequest, GetPluginInfoResponse, ProbeRequest,
    },
    ids::PluginName,
    node::NodeGetInfoRequest,
    server,
};

struct Hello;

#[async_trait]
impl Identity for Hello {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        Ok(GetPluginInfoResponse::new(
            PluginName::new("hello.csi.example.com")?,
            env!("CARGO_PKG_VERSION"),
        )?
        .with_manifest("example", "hello"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let plugin = Plugin::builder(Arc::new(Hello)).build()?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, endpoint] = args.as_slice()
        && flag == "--endpoint"
    {
        server::serve(plugin, endpoint, server::shutdown_signal()).await?;
        return Ok(());
    }
    if !args.is_empty() {
        return Err("usage: hello [--endpoint unix:///path/to/csi.sock]".into());
    }

    let dir = tempfile::tempdir()?;
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            server::serve(plugin, &endpoint, async {
                let _ = stopped.await;
            })
            .await
        }
    });

    let client = loop {
        match client::Client::connect(&endpoint).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    let info = Csi::get_plugin_info(&client, GetPluginInfoRequest {}).await?;
    println!(
        "GetPluginInfo: {} {} {:?}",
        info.name, info.vendor_version, info.manifest
    );
    let caps = Csi::get_plugin_capabilities(&client, GetPluginCapabilitiesRequest {}).await?;
    println!("GetPluginCapabilities: {:?}", caps.capabilities);
    println!("Probe: {:?}", Csi::probe(&client, ProbeRequest {}).await?);
    let err = Csi::node_get_info(&client, NodeGetInfoRequest {})
        .await
        .unwrap_err();
    println!("NodeGetInfo: {} ({err})", err.code());

    let _ = stop.send(());
    server.await??;
    Ok(())
}
