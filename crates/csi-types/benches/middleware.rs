//! What the serving stack costs per call: one unary `GetPluginInfo` through a
//! [`Plugin`], called
//!
//! - `direct`: as a typed method in the same task (the Plugin alone:
//!   validation, the response check, panic isolation, the call's span, no
//!   gRPC);
//! - over gRPC, on an in-memory connection (`duplex`,
//!   `Server::serve_in_memory`: HTTP/2 and tonic, no kernel) and on a unix socket (`unix`), with the server
//!   - `bare`: no metrics, no call timeout, no log subscriber, no user layer;
//!   - `standard`: the SDK's standard stack: Prometheus metrics on, a call
//!     timeout, and JSON logs at `info` (written to a sink, so the cost is
//!     formatting, not the terminal);
//!   - `user_layer`: `bare` plus one trivial tower layer of the driver's own
//!     (an identity `map_request`), the cost of the middleware seam itself.
//!
//! And one CreateVolume + DeleteVolume cycle (`create_delete`), `direct`
//! and over gRPC with the bare server (`duplex/bare`, `unix/bare`), through
//! a driver that answers with a volume shaped like the `local` driver's (an
//! id, a size, one `volume_context` entry, one topology segment): the path
//! where request validation and the response check have fields to look at.
//!
//! The gRPC client is `client::Client` sending the proto message as it is
//! (`RawCsi::raw_get_plugin_info`). Client and server run on one
//! current-thread runtime in this process, so a figure is the whole round
//! trip on one core. Run with
//! `cargo bench -p csi-types --bench middleware`.

mod cycle;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use csi_types::client::Client;
use csi_types::identity::GetPluginInfoRequest;
use csi_types::logging::{LogFormat, subscriber};
use csi_types::prelude::*;
use csi_types::server::{InMemoryServer, ServeOptions, Server};
use csi_types::{RawCsi, proto};

use cycle::{cycle, plugin};

#[derive(Clone, Copy)]
enum Stack {
    Bare,
    Standard,
    UserLayer,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Bare => "bare",
            Stack::Standard => "standard",
            Stack::UserLayer => "user_layer",
        }
    }

    fn server(self) -> Server {
        let mut options = ServeOptions::default();
        let server = Server::new(plugin());
        match self {
            Stack::Bare => server.options(options),
            Stack::Standard => {
                options.metrics_address = Some("127.0.0.1:0".parse().unwrap());
                options.call_timeout = Some(Duration::from_secs(30));
                server.options(options)
            }
            Stack::UserLayer => server
                .options(options)
                .layer(tower::util::MapRequestLayer::new(
                    |r: http::Request<tonic::body::Body>| r,
                )),
        }
    }
}

/// A client of a server for `stack` on `transport`, and the in-memory
/// server's handle, which stops that server when dropped.
async fn connect(
    stack: Stack,
    transport: &str,
    dir: &std::path::Path,
) -> (Client, Option<InMemoryServer>) {
    match transport {
        "duplex" => {
            let (client, server) = stack.server().serve_in_memory().await.unwrap();
            (client, Some(server))
        }
        _ => (unix(stack, dir).await, None),
    }
}

/// A server for `stack` on a unix socket in `dir`, and a client on it.
async fn unix(stack: Stack, dir: &std::path::Path) -> Client {
    let path = dir.join(format!("{}.sock", stack.name()));
    let endpoint = format!("unix://{}", path.display());
    let serve = endpoint.clone();
    tokio::spawn(async move { stack.server().serve(&serve, std::future::pending()).await });
    for _ in 0..500 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Client::connect(&endpoint).await.unwrap()
}

/// The JSON log subscriber of the standard stack, writing to a sink.
fn json_logs() -> tracing::subscriber::DefaultGuard {
    let filter = tracing_subscriber::EnvFilter::new("info");
    tracing::subscriber::set_default(subscriber(LogFormat::Json, filter, std::io::sink, false))
}

fn middleware(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("get_plugin_info");

    let direct = plugin();
    group.bench_function("direct", |b| {
        b.iter(|| {
            rt.block_on(direct.get_plugin_info(GetPluginInfoRequest {}))
                .unwrap()
        })
    });

    let dir = tempfile::tempdir().unwrap();
    for stack in [Stack::Bare, Stack::Standard, Stack::UserLayer] {
        for transport in ["duplex", "unix"] {
            // The subscriber is this thread's, and the runtime runs every task
            // on this thread: server, client and Plugin all log through it.
            let _logs = matches!(stack, Stack::Standard).then(json_logs);
            let (client, _server) = rt.block_on(connect(stack, transport, dir.path()));
            let id = format!("{transport}/{}", stack.name());
            group.bench_function(id, |b| {
                b.iter(|| {
                    rt.block_on(client.raw_get_plugin_info(proto::GetPluginInfoRequest {}))
                        .unwrap()
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("create_delete");
    let mut n = 0u64;
    group.bench_function("direct", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(cycle(&direct, n))
        })
    });
    for transport in ["duplex", "unix"] {
        let (client, _server) =
            rt.block_on(connect(Stack::Bare, transport, &dir.path().join("cycle")));
        group.bench_function(format!("{transport}/bare"), |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(cycle(&client, n))
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // Ten figures in a few minutes of a benchmark slot on a shared two-core machine.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = middleware
}
criterion_main!(benches);
