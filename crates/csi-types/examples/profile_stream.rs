//! A `GetMetadataAllocated` stream through the [`Plugin`], for counting
//! instructions per streamed message with `valgrind --tool=callgrind`.
//!
//! The driver does next to nothing: it streams messages of `RANGES`
//! contiguous 4 KiB `VARIABLE_LENGTH` ranges, built as they are polled, so
//! what is counted is the SDK's share of a message:
//!
//! - `raw`: the stream is read through [`RawCsi`] on the Plugin, as the
//!   server does (each typed message turned into a wire one and checked
//!   against the spec before it is passed on);
//! - `typed`: the stream is read through [`Csi`] on the Plugin, so each wire
//!   message is also converted back into its typed value, as the client
//!   does with a message it receives.
//!
//! ```text
//! cargo build --release -p csi-types --example profile_stream
//! valgrind --tool=callgrind target/release/examples/profile_stream raw 64 1100
//! valgrind --tool=callgrind target/release/examples/profile_stream raw 64 100
//! ```
//!
//! The difference of the two totals divided by 1000 is the cost of one
//! message of 64 ranges, without the start-up and the call. The count does
//! not depend on the machine's load.

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use csi_types::identity::{GetPluginInfoRequest, GetPluginInfoResponse};
use csi_types::ids::{PluginName, SnapshotId};
use csi_types::prelude::*;
use csi_types::redact::Secrets;
use csi_types::snapshot_metadata::{
    BlockMetadata, BlockMetadataResponse, BlockMetadataType, GetMetadataAllocatedRequest,
    GetMetadataDeltaRequest,
};
use csi_types::{RawCsi, proto};
use futures::stream::{self, StreamExt};

const RANGE: u64 = 4096;

struct Driver {
    ranges: u64,
    messages: u64,
}

#[async_trait]
impl Identity for Driver {
    async fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        GetPluginInfoResponse::new(PluginName::new("stream.csi.example.com")?, "1.0.0")
    }
}

#[async_trait]
impl SnapshotMetadata for Driver {
    async fn get_metadata_allocated(
        &self,
        req: GetMetadataAllocatedRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        let (ranges, messages) = (self.ranges, self.messages);
        let capacity = req.starting_offset + ranges * messages * RANGE;
        let start = req.starting_offset;
        Ok(stream::iter(0..messages)
            .map(move |m| {
                let first = start + m * ranges * RANGE;
                Ok(BlockMetadataResponse {
                    block_metadata_type: BlockMetadataType::VariableLength,
                    volume_capacity_bytes: capacity,
                    block_metadata: (0..ranges)
                        .map(|r| BlockMetadata {
                            byte_offset: first + r * RANGE,
                            size_bytes: RANGE,
                        })
                        .collect(),
                })
            })
            .boxed())
    }

    async fn get_metadata_delta(
        &self,
        _: GetMetadataDeltaRequest,
    ) -> Result<BlockMetadataStream, CsiError> {
        Err(CsiError::failed_precondition("not tracked"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: profile_stream raw|typed RANGES MESSAGES";
    let [mode, ranges, messages] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(ranges), Ok(messages)) = (ranges.parse::<u64>(), messages.parse::<u64>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let driver = Arc::new(Driver { ranges, messages });
    let plugin = Plugin::builder(driver.clone())
        .snapshot_metadata(driver)
        .build()
        .expect("a valid plugin");
    let request = GetMetadataAllocatedRequest {
        snapshot_id: SnapshotId::new("snap-1").expect("a valid id"),
        starting_offset: 0,
        max_results: None,
        secrets: Secrets::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let read = rt.block_on(async {
        let mut read = 0u64;
        match mode.as_str() {
            "raw" => {
                let mut s = RawCsi::raw_get_metadata_allocated(
                    &plugin,
                    proto::GetMetadataAllocatedRequest::try_from(request).expect("offset 0 fits"),
                )
                .await
                .expect("the stream");
                while let Some(m) = s.next().await {
                    black_box(m.expect("a valid message"));
                    read += 1;
                }
            }
            "typed" => {
                let mut s = Csi::get_metadata_allocated(&plugin, request)
                    .await
                    .expect("the stream");
                while let Some(m) = s.next().await {
                    black_box(m.expect("a valid message"));
                    read += 1;
                }
            }
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
        read
    });
    assert_eq!(read, messages);
}
