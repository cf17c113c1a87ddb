//! The `mock` feature: mockall mocks of the driver traits, for code built
//! around a driver.
#![cfg(feature = "mock")]

use std::sync::Arc;

use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    capabilities::{ControllerCapabilities, PluginCapabilities},
    controller::CreateVolumeResponse,
    driver::{
        MockCapacityReporter, MockController, MockControllerExpander, MockControllerPublisher,
        MockGroupController, MockIdentity, MockNode, MockNodeExpander, MockNodeStager,
        MockNodeVolumeStats, MockProvisioner, MockSnapshotGetter, MockSnapshotLister,
        MockSnapshotMetadata, MockSnapshotter, MockVolumeGetter, MockVolumeLister,
        MockVolumeModifier,
    },
    identity::{GetPluginInfoRequest, GetPluginInfoResponse},
    ids::{PluginName, VolumeId},
    proto,
    types::{AccessMode, Volume, VolumeCapability},
};

#[tokio::test]
async fn mocks_stand_in_for_a_driver() {
    let mut identity = MockIdentity::new();
    identity
        .expect_get_plugin_info()
        .returning(|_| GetPluginInfoResponse::new(PluginName::new("mock.example.com")?, "9"));
    identity
        .expect_plugin_capabilities()
        .return_const(PluginCapabilities::empty());

    let mut controller = MockController::new();
    controller
        .expect_feature_capabilities()
        .return_const(ControllerCapabilities::empty());

    let mut provisioner = MockProvisioner::new();
    provisioner
        .expect_create_volume()
        .withf(|r| r.name.as_str() == "pvc-1")
        .times(1)
        .returning(|r| {
            Ok(CreateVolumeResponse::new(Volume::new(
                VolumeId::new(format!("id-{}", r.name))?,
                1 << 30,
            )))
        });

    let plugin = Plugin::builder(Arc::new(identity))
        .controller(Arc::new(controller))
        .provisioner(Arc::new(provisioner))
        .build()
        .unwrap();
    assert_eq!(
        plugin.controller_capabilities(),
        ControllerCapabilities::CREATE_DELETE_VOLUME
    );

    let info = Csi::get_plugin_info(&plugin, GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.name.as_str(), "mock.example.com");
    let created = RawCsi::raw_create_volume(
        &plugin,
        proto::CreateVolumeRequest {
            name: "pvc-1".into(),
            volume_capabilities: vec![VolumeCapability::block(AccessMode::SingleNodeWriter).into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(created.volume.unwrap().volume_id, "id-pvc-1");
}

#[test]
fn every_trait_has_a_mock() {
    let _ = (
        MockIdentity::new(),
        MockController::new(),
        MockProvisioner::new(),
        MockControllerPublisher::new(),
        MockVolumeLister::new(),
        MockCapacityReporter::new(),
        MockSnapshotter::new(),
        MockSnapshotLister::new(),
        MockSnapshotGetter::new(),
        MockControllerExpander::new(),
        MockVolumeGetter::new(),
        MockVolumeModifier::new(),
    );
    let _ = (
        MockNode::new(),
        MockNodeStager::new(),
        MockNodeVolumeStats::new(),
        MockNodeExpander::new(),
        MockGroupController::new(),
        MockSnapshotMetadata::new(),
    );
}
