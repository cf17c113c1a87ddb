//! A driver whose own response building fails, and passes the error on with
//! `?`, answers `INTERNAL`: the bug is the driver's, and `INVALID_ARGUMENT`
//! would blame the CO's request. A bad request still answers
//! `INVALID_ARGUMENT`.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{TestDriver, full_plugin, serve};
use csi_types::client::Client;
use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    identity::{GetPluginInfoRequest, GetPluginInfoResponse},
    ids::PluginName,
    proto,
};

/// Builds a `GetPluginInfoResponse` with an empty `vendor_version`.
struct NoVersion;

#[async_trait]
impl Identity for NoVersion {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        let name = PluginName::new("noversion.csi.example.com")?;
        let resp = GetPluginInfoResponse::new(name, "")?;
        Ok(resp)
    }
}

#[tokio::test]
async fn an_invalid_response_built_by_the_driver_answers_internal() {
    let plugin = Plugin::builder(Arc::new(NoVersion)).build().unwrap();
    let served = serve(plugin).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    let err = RawCsi::raw_get_plugin_info(&client, proto::GetPluginInfoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("invalid GetPluginInfoResponse built by the driver")
            && msg.contains("vendor_version: this field is REQUIRED"),
        "{msg}"
    );

    served.stop().await;
}

#[tokio::test]
async fn a_bad_request_still_answers_invalid_argument() {
    let served = serve(full_plugin(TestDriver::default())).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    let err = RawCsi::raw_create_volume(&client, proto::CreateVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(err, CsiError::missing("name"));

    served.stop().await;
}
