//! The gRPC server on a real unix socket: all five services answer, what is
//! not offered answers UNIMPLEMENTED with a message, stale sockets are
//! replaced, and secrets never reach the logs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestDriver, full_plugin, mount_cap, serve};
use csi_types::client::Client;
use csi_types::prelude::*;
use csi_types::{
    RawCsi,
    controller::{CreateVolumeRequest, ListVolumesRequest},
    group_controller::{CreateVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotRequest},
    identity::{GetPluginInfoRequest, ProbeRequest, ProbeResponse},
    ids::{GroupSnapshotId, GroupSnapshotName, SnapshotId, VolumeId},
    node::NodeGetInfoRequest,
    proto,
    redact::Secrets,
    server,
    snapshot_metadata::{GetMetadataAllocatedRequest, GetMetadataDeltaRequest},
};
use futures::StreamExt;
use tokio::sync::oneshot;

#[tokio::test]
async fn all_five_services_answer_on_a_unix_socket() {
    let served = serve(full_plugin(TestDriver::default())).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    // Identity
    let info = Csi::get_plugin_info(&client, GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.vendor_version.as_str()),
        ("test.csi.example.com", "1.2.3")
    );
    assert_eq!(
        Csi::probe(&client, ProbeRequest {}).await.unwrap(),
        ProbeResponse::ready()
    );

    // Controller
    let created = Csi::create_volume(
        &client,
        CreateVolumeRequest::try_from(proto::CreateVolumeRequest {
            name: "vol-a".into(),
            volume_capabilities: vec![mount_cap()],
            capacity_range: Some(proto::CapacityRange {
                required_bytes: 3 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(created.volume.capacity_bytes, 3 << 20);
    let listed = Csi::list_volumes(&client, ListVolumesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1);

    // Node
    let node = Csi::node_get_info(&client, NodeGetInfoRequest {})
        .await
        .unwrap();
    assert_eq!(node.node_id.as_str(), "node-1");
    assert_eq!(node.max_volumes_per_node, Some(8));

    // GroupController
    let group = Csi::create_volume_group_snapshot(
        &client,
        CreateVolumeGroupSnapshotRequest {
            name: GroupSnapshotName::new("g").unwrap(),
            source_volume_ids: vec![VolumeId::new("vol-a").unwrap()],
            secrets: Secrets::default(),
            parameters: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(group.group_snapshot.snapshots.len(), 1);
    let err = Csi::get_volume_group_snapshot(
        &client,
        GetVolumeGroupSnapshotRequest {
            group_snapshot_id: GroupSnapshotId::new("nope").unwrap(),
            snapshot_ids: vec![SnapshotId::new("s").unwrap()].into(),
            secrets: Secrets::default(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        CsiError::not_found("group snapshot nope does not exist")
    );

    // SnapshotMetadata (server streaming)
    let stream = Csi::get_metadata_allocated(
        &client,
        GetMetadataAllocatedRequest {
            snapshot_id: SnapshotId::new("s").unwrap(),
            starting_offset: 8192,
            max_results: None,
            secrets: Secrets::default(),
        },
    )
    .await
    .unwrap();
    let messages: Vec<_> = stream.collect().await;
    let offsets: Vec<u64> = messages
        .iter()
        .map(|m| m.as_ref().unwrap().block_metadata[0].byte_offset)
        .collect();
    assert_eq!(offsets, [8192, 12288, 16384]);
    let err = Csi::get_metadata_delta(
        &client,
        GetMetadataDeltaRequest {
            base_snapshot_id: SnapshotId::new("a").unwrap(),
            target_snapshot_id: SnapshotId::new("b").unwrap(),
            starting_offset: 0,
            max_results: None,
            secrets: Secrets::default(),
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Errors keep their code and message across the wire.
    let err = RawCsi::raw_create_volume(&client, proto::CreateVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err, CsiError::missing("name"));

    served.stop().await;
}

#[tokio::test]
async fn unsupported_and_unknown_rpcs_answer_unimplemented_with_a_message() {
    let d = Arc::new(TestDriver::default());
    let plugin = Plugin::builder(d.clone()).controller(d).build().unwrap();
    let served = serve(plugin).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    let err = RawCsi::raw_create_volume(&client, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.to_string().contains("CreateVolume is not implemented"),
        "{err}"
    );
    let err = RawCsi::raw_node_get_info(&client, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.to_string().contains("does not serve the Node service"),
        "{err}"
    );
    let err = RawCsi::raw_get_metadata_allocated(&client, Default::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unimplemented);

    // A method no CSI service has, sent by hand.
    let channel = {
        let path = served.endpoint.trim_start_matches("unix://").to_string();
        tonic::transport::Endpoint::from_static("http://[::1]:1")
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap()
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    // The server dispatches on the service name between the path's first
    // two slashes: a name that only starts like a service's, or a path
    // without a method, is no service's.
    for path in [
        "/csi.v1.Nonexistent/Frobnicate",
        "/csi.v1.IdentityX/GetPluginInfo",
        "/csi.v1.Identity",
        "/",
    ] {
        let status = probe_at(&mut grpc, path).await;
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}");
        assert!(
            status
                .message()
                .contains(&format!("unknown method {path}:")),
            "{status:?}"
        );
    }
    // An unknown method of a known service: the service's own standard answer.
    let status = probe_at(&mut grpc, "/csi.v1.Node/Frobnicate").await;
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    served.stop().await;
}

/// A Probe request sent to `path`, whatever service and method it names;
/// the error it is answered with.
async fn probe_at(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
) -> tonic::Status {
    grpc.ready().await.unwrap();
    grpc.unary::<proto::ProbeRequest, proto::ProbeResponse, _>(
        tonic::Request::new(proto::ProbeRequest {}),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

/// `server::routes`, served by tonic's own server next to nothing else,
/// answers as `Server` does: the CSI calls, and UNIMPLEMENTED with the same
/// message for a path no service has.
#[tokio::test]
async fn the_public_routes_serve_the_same_answers() {
    let (channel, incoming) = csi_types::client::in_memory_channel().await.unwrap();
    let routes = server::routes(Arc::new(full_plugin(TestDriver::default())));
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let client = Client::from_channel(channel.clone());
    let info = Csi::get_plugin_info(&client, GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.name.as_str(), "test.csi.example.com");
    let mut grpc = tonic::client::Grpc::new(channel);
    let status = probe_at(&mut grpc, "/csi.v1.Nonexistent/Frobnicate").await;
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(
        status
            .message()
            .contains("unknown method /csi.v1.Nonexistent/Frobnicate:"),
        "{status:?}"
    );
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn stale_sockets_are_replaced_and_live_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    // A socket file whose listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let endpoint = format!("unix://{}", path.display());
    let (stop, stopped) = oneshot::channel::<()>();
    let ep = endpoint.clone();
    let task = tokio::spawn(async move {
        server::serve(full_plugin(TestDriver::default()), &ep, async {
            let _ = stopped.await;
        })
        .await
    });
    let client = loop {
        match Client::connect(&endpoint).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    Csi::probe(&client, ProbeRequest {}).await.unwrap();

    // A second server on the same live socket is refused.
    let err = server::serve(full_plugin(TestDriver::default()), &endpoint, async {})
        .await
        .unwrap_err();
    assert!(matches!(err, server::ServeError::SocketInUse(_)), "{err}");

    // A regular file is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = server::serve(
        full_plugin(TestDriver::default()),
        &format!("unix://{}", file.display()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, server::ServeError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // A path too long for a unix socket says the limit, and creates nothing: the parent
    // directories used to be made before `bind` refused it with "SUN_LEN".
    let long = dir.path().join("new-dir").join("s".repeat(120));
    let err = server::serve(
        full_plugin(TestDriver::default()),
        &format!("unix://{}", long.display()),
        async {},
    )
    .await
    .unwrap_err();
    let len = long.as_os_str().len();
    assert!(
        err.to_string().ends_with(&format!(
            "the socket path is {len} bytes, and a unix socket path must be shorter than \
             108 bytes (sun_path): use a shorter directory"
        )),
        "{err}"
    );
    assert!(!dir.path().join("new-dir").exists());

    // Only the socket's own directory is made: a chain of missing ones is more likely a typo
    // in the path, and used to be created whole.
    let typo = dir.path().join("kubelte/plugins/x/csi.sock");
    let err = server::serve(
        full_plugin(TestDriver::default()),
        &format!("unix://{}", typo.display()),
        async {},
    )
    .await
    .unwrap_err();
    let above = dir.path().join("kubelte/plugins");
    assert_eq!(
        err.to_string(),
        format!(
            "creating {}: {} does not exist either (a typo?): only the socket's own directory \
             is created",
            above.join("x").display(),
            above.display()
        )
    );
    assert!(!dir.path().join("kubelte").exists());

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(
        !path.exists(),
        "the socket is removed after a graceful shutdown"
    );
}

/// `check_unix_socket` tells each state of a socket path by the rule of
/// `prepare_unix_socket`, and creates, removes and binds nothing; each
/// refusal is the error the server's start gives. Before, csi-types had no
/// probe without those effects, and a program that checked its endpoint
/// before opening anything repeated the rules.
#[test]
fn check_unix_socket_tells_each_state_and_touches_nothing() {
    use server::{SocketState, check_unix_socket};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let listing = || {
        let mut names: Vec<_> = walk(d);
        names.sort();
        names
    };
    fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.extend(walk(&e));
            }
            out.push(e);
        }
        out
    }
    std::fs::create_dir(d.join("run")).unwrap();
    std::fs::write(d.join("run/file"), b"keep me").unwrap();
    let live = d.join("run/live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let stale = d.join("run/stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let before = listing();

    assert_eq!(
        check_unix_socket(&d.join("run/csi.sock")).unwrap(),
        SocketState::Free
    );
    assert_eq!(
        check_unix_socket(&d.join("csi-local/csi.sock")).unwrap(),
        SocketState::DirectoryMissing
    );
    assert_eq!(check_unix_socket(&stale).unwrap(), SocketState::Stale);
    let e = check_unix_socket(&live).unwrap_err();
    assert!(matches!(e, server::ServeError::SocketInUse(_)), "{e}");
    let e = check_unix_socket(&d.join("run/file")).unwrap_err();
    assert!(matches!(e, server::ServeError::NotASocket(_)), "{e}");
    let long = d.join("new-dir").join("s".repeat(120));
    match check_unix_socket(&long).unwrap_err() {
        server::ServeError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
            assert!(
                source.to_string().contains("shorter than 108 bytes"),
                "{source}"
            );
        }
        e => panic!("{e}"),
    }
    let typo = d.join("kubelte/plugins/x/csi.sock");
    match check_unix_socket(&typo).unwrap_err() {
        server::ServeError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            let above = d.join("kubelte/plugins");
            assert!(
                source.to_string().starts_with(&format!(
                    "{} does not exist either (a typo?)",
                    above.display()
                )),
                "{source}"
            );
        }
        e => panic!("{e}"),
    }
    // A relative path lies in the working directory, which exists.
    assert_eq!(
        check_unix_socket(std::path::Path::new("csi-types-check-unix-socket.sock")).unwrap(),
        SocketState::Free
    );
    assert_eq!(listing(), before, "the check changed the directory");
    // And `prepare_unix_socket` acts on what the check told.
    server::prepare_unix_socket(&stale).unwrap();
    assert!(!stale.exists());
    server::prepare_unix_socket(&d.join("csi-local/csi.sock")).unwrap();
    assert!(d.join("csi-local").is_dir());
    assert!(server::prepare_unix_socket(&live).is_err());
    assert!(live.exists());
}

/// A relative socket path lies in the working directory, which exists:
/// before, its parent (the empty path) was taken for a missing directory
/// and `prepare_unix_socket` failed creating it.
#[test]
fn a_relative_socket_path_is_prepared_in_the_working_directory() {
    let path = std::path::Path::new("csi-types-prepare-relative.sock");
    assert!(!path.exists());
    server::prepare_unix_socket(path).unwrap();
    assert!(!path.exists(), "nothing is made for a free path");
}
