//! Serves the in-memory reference driver on an endpoint until SIGTERM or
//! SIGINT, so the `csi-conformance` runner (or any CSI tool) can be pointed
//! at it:
//!
//! ```text
//! cargo run -p csi-testkit --example memdriver -- unix:///tmp/memdriver.sock
//! cargo run -p csi-testkit --bin csi-conformance -- --endpoint unix:///tmp/memdriver.sock \
//!     --second-node-id memdriver-node-2 --mutable-params iops=500 --block-targets-may-be-files
//! ```

use csi_testkit::memdriver::{MemDriver, MemDriverConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let Some(endpoint) = std::env::args().nth(1) else {
        eprintln!("usage: memdriver unix:///path/to/csi.sock");
        return std::process::ExitCode::from(2);
    };
    let plugin = MemDriver::new(MemDriverConfig::default()).plugin();
    match csi_types::server::serve(plugin, &endpoint, csi_types::server::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memdriver: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
