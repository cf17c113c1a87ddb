//! Sizes are `u64` in the typed layer and `int64` on the wire. A size
//! above `i64::MAX` has no int64 to be sent as: a response a driver builds
//! with one answers `INTERNAL` (the driver's bug), and a request a client
//! builds with one is refused before it is sent with `INVALID_ARGUMENT`,
//! both naming the field. Before, either was sent as `i64::MAX`: a
//! different size than the one built, without a word.

mod common;

use std::sync::Arc;

use common::{TestDriver, serve};
use csi_types::client::Client;
use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    controller::{CreateVolumeRequest, ListVolumesRequest},
    ids::{SnapshotId, VolumeName},
    proto,
    snapshot_metadata::GetMetadataAllocatedRequest,
    types::{AccessMode, CapacityRange, VolumeCapability},
};
use futures::StreamExt;

const TOO_BIG: u64 = 1 << 63;

fn rule(got: u64) -> String {
    format!(
        "must be at most 9223372036854775807 (the largest int64, which the wire carries), got {got}"
    )
}

fn plugin(driver: Arc<TestDriver>) -> Plugin {
    Plugin::builder(driver.clone())
        .controller(driver.clone())
        .provisioner(driver.clone())
        .volume_lister(driver.clone())
        .snapshot_metadata(driver)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_size_beyond_int64_in_a_drivers_response_answers_internal_naming_the_field() {
    let driver = Arc::new(TestDriver::default());
    driver.volumes.lock().unwrap().insert("a".into(), 1 << 20);
    driver.volumes.lock().unwrap().insert("b".into(), u64::MAX);
    let plugin = plugin(driver);

    // In process, typed.
    let err = plugin
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "internal error: invalid ListVolumesResponse built by the driver: \
             entries[1].volume.capacity_bytes: {}",
            rule(u64::MAX)
        )
    );

    // Over a socket, and in a stream: the third message's range starts past i64::MAX
    // (the test driver streams three 4 KiB ranges from the starting offset).
    let served = serve(plugin).await;
    let client = Client::connect(&served.endpoint).await.unwrap();
    let err = RawCsi::raw_list_volumes(&client, proto::ListVolumesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(
        err.to_string().contains("entries[1].volume.capacity_bytes"),
        "{err}"
    );

    let start = i64::MAX - 4096;
    let mut stream = RawCsi::raw_get_metadata_allocated(
        &client,
        proto::GetMetadataAllocatedRequest {
            snapshot_id: "s".into(),
            starting_offset: start,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut offsets = vec![];
    let mut failure = None;
    while let Some(m) = stream.next().await {
        match m {
            Ok(m) => offsets.push(m.block_metadata[0].byte_offset),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    assert_eq!(offsets, [start, start + 4096]);
    let err = failure.expect("the third message is refused");
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "internal error: invalid GetMetadataAllocatedResponse built by the driver: \
             block_metadata[0].byte_offset: {}",
            rule(start as u64 + 8192)
        )
    );
    served.stop().await;
}

#[tokio::test]
async fn a_request_with_a_size_beyond_int64_is_refused_before_it_is_sent() {
    let driver = Arc::new(TestDriver::default());
    let served = serve(plugin(driver.clone())).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    // The fields are public, so a range can be built without `CapacityRange::new`'s check.
    let create = CreateVolumeRequest {
        name: VolumeName::new("pvc-1").unwrap(),
        capacity_range: Some(CapacityRange {
            required_bytes: Some(TOO_BIG),
            limit_bytes: None,
        }),
        volume_capabilities: vec![VolumeCapability::mount(AccessMode::SingleNodeWriter)],
        parameters: Default::default(),
        secrets: Default::default(),
        volume_content_source: None,
        accessibility_requirements: None,
        mutable_parameters: Default::default(),
    };
    let err = client.create_volume(create).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(
        err,
        CsiError::invalid("capacity_range.required_bytes", rule(TOO_BIG))
    );
    assert!(
        driver.volumes.lock().unwrap().is_empty(),
        "the request reached the driver"
    );

    let req = GetMetadataAllocatedRequest {
        snapshot_id: SnapshotId::new("s").unwrap(),
        starting_offset: u64::MAX,
        max_results: None,
        secrets: Default::default(),
    };
    let err = match client.get_metadata_allocated(req).await {
        Ok(_) => panic!("the request was sent"),
        Err(e) => e,
    };
    assert_eq!(err, CsiError::invalid("starting_offset", rule(u64::MAX)));

    // The conversion itself says the same, for code that converts by hand.
    let err = proto::CapacityRange::try_from(CapacityRange {
        required_bytes: None,
        limit_bytes: Some(u64::MAX),
    })
    .unwrap_err();
    assert_eq!(err, CsiError::invalid("limit_bytes", rule(u64::MAX)));
    assert_eq!(
        proto::CapacityRange::try_from(CapacityRange::exactly(i64::MAX as u64)),
        Ok(proto::CapacityRange {
            required_bytes: i64::MAX,
            limit_bytes: i64::MAX,
        })
    );
    served.stop().await;
}

proptest::proptest! {
    /// A size converts to the wire exactly when it fits an int64, and keeps its value; one
    /// that does not is refused naming its field, never clamped.
    #[test]
    fn a_size_converts_to_the_wire_iff_it_fits_an_int64(
        volume in proptest::arbitrary::any::<csi_types::types::Volume>(),
        size in proptest::prop_oneof![
            0..=i64::MAX as u64,
            (i64::MAX as u64 + 1)..=u64::MAX,
            proptest::strategy::Just(i64::MAX as u64),
            proptest::strategy::Just(i64::MAX as u64 + 1),
        ],
    ) {
        let mut volume = volume;
        volume.capacity_bytes = size;
        match proto::Volume::try_from(volume) {
            Ok(wire) => {
                proptest::prop_assert!(size <= i64::MAX as u64);
                proptest::prop_assert_eq!(wire.capacity_bytes as u64, size);
            }
            Err(e) => {
                proptest::prop_assert!(size > i64::MAX as u64);
                proptest::prop_assert_eq!(e, CsiError::invalid("capacity_bytes", rule(size)));
            }
        }
    }
}
