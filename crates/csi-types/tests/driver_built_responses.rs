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
    controller::{
        CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse},
    ids::PluginName,
    node::{
        NodeGetInfoRequest, NodeGetInfoResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
    },
    proto,
    types::Volume,
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

/// A driver that builds every response from bad values of its own, the way
/// a driver builds them from its state: a plugin name with an underscore, a
/// volume id of 129 bytes, an empty node id.
struct BadValues;

#[async_trait]
impl Identity for BadValues {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("bad_name.example.com")?, "1.0")
    }
}

#[async_trait]
impl Controller for BadValues {
    async fn validate_volume_capabilities(
        &self,
        _: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        Err(CsiError::unimplemented("not under test"))
    }
}

#[async_trait]
impl Provisioner for BadValues {
    async fn create_volume(
        &self,
        _: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        Ok(CreateVolumeResponse::new(Volume::try_new(
            "v".repeat(129),
            1 << 20,
        )?))
    }

    async fn delete_volume(
        &self,
        _: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        Ok(DeleteVolumeResponse {})
    }
}

#[async_trait]
impl Node for BadValues {
    async fn node_publish_volume(
        &self,
        _: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, CsiError> {
        Err(CsiError::unimplemented("not under test"))
    }

    async fn node_unpublish_volume(
        &self,
        _: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, CsiError> {
        Err(CsiError::unimplemented("not under test"))
    }

    async fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, CsiError> {
        NodeGetInfoResponse::try_new(String::new())
    }
}

/// Asserts an `INTERNAL` that names the response, the field and the rule.
fn assert_driver_bug(err: &CsiError, response: &str, field_and_rule: &str) {
    assert_eq!(err.code(), Code::Internal, "{err}");
    let want = format!("invalid {response} built by the driver: {field_and_rule}");
    assert!(err.to_string().contains(&want), "{err}\nwanted: {want}");
}

#[tokio::test]
async fn bad_ids_the_driver_builds_answer_internal_naming_the_field_and_rule() {
    let d = Arc::new(BadValues);
    let plugin = Plugin::builder(d.clone())
        .controller(d.clone())
        .provisioner(d.clone())
        .node(d)
        .build()
        .unwrap();
    let served = serve(plugin).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    let err = RawCsi::raw_get_plugin_info(&client, proto::GetPluginInfoRequest::default())
        .await
        .unwrap_err();
    assert_driver_bug(
        &err,
        "GetPluginInfoResponse",
        "name: the plugin name must follow domain name notation",
    );

    let create = proto::CreateVolumeRequest {
        name: "pvc-1".into(),
        volume_capabilities: vec![common::mount_cap()],
        ..Default::default()
    };
    let err = RawCsi::raw_create_volume(&client, create)
        .await
        .unwrap_err();
    assert_driver_bug(
        &err,
        "Volume",
        "volume_id: must be at most 128 bytes, got 129",
    );

    let err = RawCsi::raw_node_get_info(&client, proto::NodeGetInfoRequest::default())
        .await
        .unwrap_err();
    assert_driver_bug(
        &err,
        "NodeGetInfoResponse",
        "node_id: this field is REQUIRED",
    );

    served.stop().await;
}
