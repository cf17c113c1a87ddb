//! `Server::serve_in_memory` and `client::in_memory_channel`: a driver
//! called through the whole serving stack without a socket, and how the
//! in-memory server stops.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestDriver, full_plugin, mount_cap};
use csi_types::client::Client;
use csi_types::controller::{CreateVolumeRequest, ListVolumesRequest};
use csi_types::identity::GetPluginInfoRequest;
use csi_types::prelude::*;
use csi_types::server::{InMemoryServer, ServeError, ServeOptions, Server};
use csi_types::{RawCsi, proto};
use futures::StreamExt;

/// The message a call gets once the in-memory server has stopped.
const STOPPED: &str = "the in-memory server has stopped";

fn create_request(name: &str) -> CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    }
    .try_into()
    .unwrap()
}

#[tokio::test]
async fn calls_cross_the_whole_stack_and_stop_ends_them() {
    // A user layer that counts what it sees: the calls really cross the
    // server's stack, not a shortcut to the plugin.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let server = Server::new(full_plugin(TestDriver::default())).layer(
        tonic::service::InterceptorLayer::new(move |req: tonic::Request<()>| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(req)
        }),
    );
    let (client, server) = server.serve_in_memory().await.unwrap();

    let info = client
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.name.as_str(), "test.csi.example.com");
    let created = client.create_volume(create_request("pvc-1")).await.unwrap();
    // A clone shares the connection and sees the same driver.
    let listed = client
        .clone()
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].volume.volume_id, created.volume.volume_id);
    // The Plugin's validation answers a malformed request on the wire.
    let err = client
        .raw_create_volume(proto::CreateVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("`name`"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 4);

    server.stop().await.unwrap();

    // After stop, each call is refused (not hung), saying why.
    for _ in 0..2 {
        let err = client
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.to_string().contains(STOPPED), "{err}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_failed_check_is_an_error_and_nothing_is_served() {
    let registry = csi_types::server::prometheus_client::registry::Registry::default();
    let err = Server::new(full_plugin(TestDriver::default()))
        .metrics_registry(registry)
        .serve_in_memory()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, ServeError::RegistryWithoutAddress), "{err}");

    // A metrics address already taken: the bind fails before serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut options = ServeOptions::default();
    options.metrics_address = Some(taken.local_addr().unwrap());
    let err = Server::new(full_plugin(TestDriver::default()))
        .options(options)
        .serve_in_memory()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, ServeError::Io { .. }), "{err}");
    assert!(err.to_string().contains("metrics endpoint"), "{err}");
}

/// A server with a metrics endpoint on a free port (what shows when the
/// server has ended: the endpoint stops with it), its client and the port.
async fn with_metrics() -> (Client, InMemoryServer, std::net::SocketAddr) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let mut options = ServeOptions::default();
    options.metrics_address = Some(address);
    let (client, server) = Server::new(full_plugin(TestDriver::default()))
        .options(options)
        .serve_in_memory()
        .await
        .unwrap();
    (client, server, address)
}

/// `stop` returns once the server has returned: its metrics endpoint,
/// which stops with it, no longer accepts connections.
#[tokio::test]
async fn stop_waits_for_the_server_to_end() {
    let (client, server, address) = with_metrics().await;
    client.probe(Default::default()).await.unwrap();
    tokio::net::TcpStream::connect(address).await.unwrap();

    server.stop().await.unwrap();
    let refused = tokio::net::TcpStream::connect(address).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let (client, server) = Server::new(full_plugin(TestDriver::default()))
        .serve_in_memory()
        .await
        .unwrap();
    client.probe(Default::default()).await.unwrap();
    drop(server);
    // The server stops on its own task. A call racing its shutdown may get
    // whatever the closing HTTP/2 connection answers (as over a socket);
    // once it is down, the answer says so. The bound only guards against a
    // hang.
    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match client.probe(Default::default()).await {
                Err(err) if err.to_string().contains(STOPPED) => return err,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("the server never stopped");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
}

/// With the client and its clones gone, nothing can call the server: it
/// stops by itself (its metrics endpoint closes), and `stop` then returns
/// its result.
#[tokio::test]
async fn the_server_stops_when_its_clients_are_gone() {
    let (client, server, address) = with_metrics().await;
    let clone = client.clone();
    clone.probe(Default::default()).await.unwrap();
    drop(client);
    clone.probe(Default::default()).await.unwrap();
    drop(clone);
    // The bound only guards against a hang.
    tokio::time::timeout(Duration::from_secs(60), async {
        while tokio::net::TcpStream::connect(address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server never stopped");
    server.stop().await.unwrap();
}

/// The channel opens a new connection when the server closed the last one
/// (here by its idle timeout), as over a socket.
#[tokio::test]
async fn the_channel_reconnects_after_an_idle_close() {
    let (channel, incoming) = csi_types::client::in_memory_channel().await.unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let incoming = incoming.inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut options = ServeOptions::default();
    options.idle_timeout = Some(Duration::from_millis(200));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(
        Server::new(full_plugin(TestDriver::default()))
            .options(options)
            .serve_with_incoming(incoming, async {
                let _ = stopped.await;
            }),
    );
    let client = Client::from_channel(channel);
    RawCsi::raw_probe(&client, proto::ProbeRequest {})
        .await
        .unwrap();
    // (Normally one; more if a stalled machine let the idle timeout close
    // the first connection before the call.)
    let before = opened.load(Ordering::SeqCst);
    assert!(before >= 1);
    // Well past the idle timeout: the connection is closed meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    RawCsi::raw_probe(&client, proto::ProbeRequest {})
        .await
        .unwrap();
    assert!(opened.load(Ordering::SeqCst) > before, "no new connection");
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

/// `Duration::MAX` in every wait of `ServeOptions` used to panic in hyper's keepalive (an
/// `Instant` overflow) inside the connection task, and the call failed "transport error".
#[tokio::test]
async fn the_longest_durations_serve_calls() {
    let mut options = ServeOptions::default();
    options.idle_timeout = Some(Duration::MAX);
    options.keepalive_interval = Some(Duration::MAX);
    options.keepalive_timeout = Duration::MAX;
    options.call_timeout = Some(Duration::MAX);
    let (client, server) = Server::new(full_plugin(TestDriver::default()))
        .options(options)
        .serve_in_memory()
        .await
        .unwrap();
    let info = client.get_plugin_info(GetPluginInfoRequest {}).await;
    assert!(info.is_ok(), "{info:?}");
    drop(client);
    server.stop().await.unwrap();
}
