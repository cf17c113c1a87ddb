//! Connecting the client to endpoints that are not a working plugin: each
//! ends in an error that says what is wrong, never a hang or a panic. The
//! sockets are real, in a temporary directory; the listeners never read.

use std::future::Future;
use std::time::Duration;

mod common;

use csi_types::client::{Client, ConnectError, ConnectOptions, DEFAULT_KEEPALIVE_INTERVAL};
use csi_types::{Code, CsiError, RawCsi, proto};

/// Short waits, so that the bounds under test end the calls quickly.
fn short() -> ConnectOptions {
    let mut o = ConnectOptions::default();
    o.connect_timeout = Duration::from_millis(500);
    o.keepalive_interval = Duration::from_millis(100);
    o.keepalive_timeout = Duration::from_millis(200);
    o
}

/// Fails the test instead of hanging it when `f` never ends. The bound is
/// far above any timeout under test: it is a guard, not the assertion.
async fn ends<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("hung: neither an answer nor an error")
}

/// A unix socket that accepts connections (the kernel queues them) and never reads: a hung
/// driver, or a server that is not gRPC. Open while the value lives.
struct Mute {
    endpoint: String,
    _listener: std::os::unix::net::UnixListener,
    _dir: tempfile::TempDir,
}

fn mute_socket() -> Mute {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mute.sock");
    Mute {
        endpoint: format!("unix://{}", sock.display()),
        _listener: std::os::unix::net::UnixListener::bind(&sock).unwrap(),
        _dir: dir,
    }
}

async fn connect_err(endpoint: &str) -> String {
    match ends(Client::connect(endpoint)).await {
        Ok(_) => panic!("connected to {endpoint}"),
        Err(e) => e.to_string(),
    }
}

async fn plugin_info(client: &Client) -> CsiError {
    ends(client.raw_get_plugin_info(proto::GetPluginInfoRequest {}))
        .await
        .expect_err("an answer from a listener that never reads")
}

#[tokio::test]
async fn a_socket_that_accepts_but_never_answers_fails_unavailable() {
    let mute = mute_socket();
    let endpoint = &mute.endpoint;
    let client = ends(Client::connect_with(endpoint, short())).await.unwrap();
    let err = plugin_info(&client).await;
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("unavailable: GetPluginInfo: ")
            && msg.ends_with(
                "the plugin did not answer an HTTP/2 ping within 200ms (keepalive_timeout): \
                 is the driver hung, or not a gRPC server?"
            ),
        "{msg}"
    );
}

/// The defaults bound every wait (30 s to connect; a call whose peer stopped answering ends
/// one unanswered ping after the keepalive interval, where it used to wait for ever), without
/// pinging sooner than gRPC servers in Go and C core accept by default (5 minutes while they
/// send nothing): their `GOAWAY too_many_pings` would fail a CSI call that works quietly for
/// half a minute. The mute peer's end itself is shown with short waits by the tests around.
#[test]
fn the_defaults_bound_every_wait_and_ping_no_sooner_than_grpc_servers_accept() {
    let o = ConnectOptions::default();
    assert_eq!(o.connect_timeout, Duration::from_secs(30));
    assert_eq!(o.keepalive_interval, DEFAULT_KEEPALIVE_INTERVAL);
    assert!(o.keepalive_interval >= Duration::from_secs(300));
    assert_eq!(o.keepalive_timeout, Duration::from_secs(20));
    assert_eq!(o.call_timeout, None, "CSI calls may take minutes");
}

#[tokio::test]
async fn a_tcp_port_that_accepts_but_never_answers_fails_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    let client = ends(Client::connect_with(&endpoint, short()))
        .await
        .unwrap();
    let err = plugin_info(&client).await;
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn the_call_timeout_answers_deadline_exceeded_naming_the_rpc() {
    let mute = mute_socket();
    let endpoint = &mute.endpoint;
    let mut options = short();
    // The keepalive would end the call too; only the call timeout may here.
    options.keepalive_interval = Duration::from_secs(3600);
    options.keepalive_timeout = Duration::from_secs(3600);
    options.call_timeout = Some(Duration::from_millis(200));
    let client = ends(Client::connect_with(endpoint, options)).await.unwrap();
    let err = plugin_info(&client).await;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(
        err.to_string(),
        "deadline exceeded: no answer to GetPluginInfo within 200ms (call_timeout)"
    );
}

#[tokio::test]
async fn a_regular_file_or_a_directory_is_named_for_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a socket").unwrap();
    let e = connect_err(&format!("unix://{}", file.display())).await;
    assert!(e.ends_with("is a regular file, not a unix socket"), "{e}");
    let e = connect_err(&format!("unix://{}", dir.path().display())).await;
    assert!(e.ends_with("is a directory, not a unix socket"), "{e}");
    let missing = dir.path().join("missing.sock");
    let e = connect_err(&format!("unix://{}", missing.display())).await;
    assert!(e.contains("No such file or directory"), "{e}");
    assert!(
        e.ends_with(&format!(
            "nothing at {}: is the driver running, and serving this endpoint?",
            missing.display()
        )),
        "{e}"
    );
    let typo = dir.path().join("csi-lcoal/csi.sock");
    let e = connect_err(&format!("unix://{}", typo.display())).await;
    assert!(
        e.ends_with(&format!(
            "nothing at {}, and its directory {} does not exist either (a typo?)",
            typo.display(),
            dir.path().join("csi-lcoal").display()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_socket_path_too_long_for_sun_path_says_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s".repeat(120));
    let len = path.as_os_str().len();
    let e = connect_err(&format!("unix://{}", path.display())).await;
    assert!(
        e.ends_with(&format!(
            "the socket path is {len} bytes, and a unix socket path must be shorter than \
             108 bytes (sun_path): use a shorter directory"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_malformed_endpoint_is_refused_before_connecting() {
    let e = ends(Client::connect("unix://relative.sock"))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Endpoint(_)), "{e}");
}

/// Extreme options connect and call a working plugin: `Duration::MAX` used to panic in tonic (`grpc-timeout`) and hyper (the keepalive).
#[tokio::test]
async fn extreme_options_never_panic() {
    let served = common::serve(common::full_plugin(common::TestDriver::default())).await;
    let with = |f: fn(&mut ConnectOptions)| {
        let mut o = ConnectOptions::default();
        f(&mut o);
        o
    };
    let huge = with(|o| {
        o.connect_timeout = Duration::MAX;
        o.call_timeout = Some(Duration::MAX);
        o.keepalive_interval = Duration::MAX;
        o.keepalive_timeout = Duration::MAX;
    });
    for options in [
        huge,
        with(|o| o.keepalive_interval = Duration::ZERO),
        with(|o| o.keepalive_timeout = Duration::ZERO),
    ] {
        let client = ends(Client::connect_with(&served.endpoint, options.clone()))
            .await
            .unwrap();
        let answer = ends(client.raw_get_plugin_info(proto::GetPluginInfoRequest {})).await;
        assert!(answer.is_ok(), "{options:?}: {answer:?}");
    }
    let client = ends(Client::connect(&served.endpoint))
        .await
        .unwrap()
        .with_call_timeout(Some(Duration::MAX));
    let answer = ends(client.raw_get_plugin_info(proto::GetPluginInfoRequest {})).await;
    assert!(answer.is_ok(), "{answer:?}");
    served.stop().await;
}

/// A socket whose owner answers bytes that are not HTTP/2 (some other protocol's server):
/// the call used to fail with only "internal error: h2 protocol error: http2 error".
#[tokio::test]
async fn a_peer_that_does_not_speak_grpc_is_named_for_it() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("not-grpc.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        // Each connection gets bytes that are no HTTP/2 frame, and is kept open.
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let _ = conn.write_all(&[0u8; 64]);
            held.push(conn);
        }
    });
    let endpoint = format!("unix://{}", sock.display());
    let client = ends(Client::connect(&endpoint)).await.unwrap();
    let err = plugin_info(&client).await;
    // tonic's own code depended on which side noticed first: INTERNAL (a protocol error) or
    // CANCELLED (the connection closed under the call). Either way no answer came.
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("unavailable: GetPluginInfo: transport error: ")
            && msg.ends_with(
                "the peer broke the connection or does not speak gRPC (HTTP/2): \
                 is the endpoint a CSI plugin?"
            ),
        "{msg}"
    );
}

/// A response over the client's message size limit is `RESOURCE_EXHAUSTED` naming the
/// option that raises it (tonic's `OUT_OF_RANGE` "Error, decoded message length too large"
/// read as the plugin's CSI `OUT_OF_RANGE`), and `ConnectOptions::max_message_size` raises it
/// to match a server that sends larger messages (before, a client could not).
#[tokio::test]
async fn a_response_over_the_clients_limit_names_the_option_that_raises_it() {
    use csi_types::server::{ServeOptions, Server};
    let driver = common::TestDriver::default();
    // About 6 MiB of ListVolumes entries: 128-byte ids.
    for i in 0..45_000 {
        driver
            .volumes
            .lock()
            .unwrap()
            .insert(format!("{i:0>128}"), 1 << 20);
    }
    let mut options = ServeOptions::default();
    options.max_message_size = 16 << 20;
    let served =
        common::serve_server(Server::new(common::full_plugin(driver)).options(options)).await;

    let client = ends(Client::connect(&served.endpoint)).await.unwrap();
    let err = ends(RawCsi::raw_list_volumes(
        &client,
        proto::ListVolumesRequest::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("resource exhausted: ListVolumes: the response is ")
            && text.ends_with(
                " bytes, over this client's limit of 4194304 bytes (ConnectOptions::max_message_size)"
            ),
        "{text}"
    );

    let mut options = ConnectOptions::default();
    options.max_message_size = 16 << 20;
    let client = ends(Client::connect_with(&served.endpoint, options))
        .await
        .unwrap();
    let list = ends(RawCsi::raw_list_volumes(
        &client,
        proto::ListVolumesRequest::default(),
    ))
    .await
    .unwrap();
    assert_eq!(list.entries.len(), 45_000);
    served.stop().await;
}
