//! CreateVolume + DeleteVolume cycles through the SDK's serving path, for
//! counting instructions per cycle with `valgrind --tool=callgrind`.
//!
//! The driver does next to nothing (it answers with a volume shaped like the
//! `local` driver's: an id, a size, one `volume_context` entry and one
//! topology segment), so what is counted is the SDK's share of a cycle:
//!
//! - `direct`: the calls go to the [`Plugin`] in process, through
//!   [`RawCsi`] with wire requests (validation, the operation guard, the
//!   response check, the span);
//! - `duplex`: the calls go over gRPC in memory (`Server::serve_in_memory`), with
//!   `client::Client` and the server on one current-thread runtime (the
//!   server's whole stack: the `:authority` rewriter, HTTP/2, the dispatch
//!   to the CSI services and the Plugin; the client's side is counted too).
//!
//! ```text
//! cargo build --release -p csi-types --example profile_cycles
//! valgrind --tool=callgrind target/release/examples/profile_cycles duplex 50 600
//! valgrind --tool=callgrind target/release/examples/profile_cycles duplex 50 100
//! ```
//!
//! The difference of the two totals divided by 500 is the cost of one cycle,
//! without the start-up. The count does not depend on the machine's load.

#[path = "../benches/cycle/mod.rs"]
mod cycle;

use csi_types::RawCsi;
use csi_types::server::Server;

async fn cycles(api: &dyn RawCsi, from: usize, count: usize) {
    for n in from..from + count {
        cycle::cycle(api, n as u64).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: profile_cycles direct|duplex WARMUP CYCLES";
    let [mode, warmup, count] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(warmup), Ok(count)) = (warmup.parse::<usize>(), count.parse::<usize>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        // The in-memory server's handle: it stops the server when dropped.
        let mut _server = None;
        let api: Box<dyn RawCsi> = match mode.as_str() {
            "direct" => Box::new(cycle::plugin()),
            "duplex" => {
                let (client, server) = Server::new(cycle::plugin())
                    .serve_in_memory()
                    .await
                    .expect("the in-memory server");
                _server = Some(server);
                Box::new(client)
            }
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        };
        cycles(&*api, 0, warmup).await;
        cycles(&*api, warmup, count).await;
    });
}
