//! The middleware seam over a real socket with real gRPC clients: the
//! user's tower layers, the Prometheus endpoint scraped over HTTP, the gRPC
//! health service and the per-call deadline.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{Served, TestDriver, full_plugin, mount_cap, serve_server};
use csi_types::client::Client;
use csi_types::server::{ServeOptions, Server};
use csi_types::{RawCsi, controller::*, identity::*, prelude::*, proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A loopback address with a port that was free a moment ago.
fn free_address() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A raw tonic channel to a `unix://` endpoint.
async fn channel(endpoint: &str) -> tonic::transport::Channel {
    let path = endpoint.strip_prefix("unix://").unwrap().to_string();
    tonic::transport::Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap()
}

/// One HTTP/1.1 GET; returns the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The samples of a text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The value of the series `name` whose labels are exactly `labels`, in any order.
fn series(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    s.iter().find_map(|(key, value)| {
        let (n, rest) = key.split_once('{').unwrap_or((key.as_str(), "}"));
        let got: BTreeMap<&str, &str> = rest
            .strip_suffix('}')?
            .split(',')
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        (n == name && got == want).then_some(*value)
    })
}

/// The plugin name of the test driver, which labels every SDK series.
const DRIVER: &str = "test.csi.example.com";

fn count(s: &BTreeMap<String, f64>, method: &str, code: &str) -> f64 {
    series(
        s,
        "csi_plugin_operations_seconds_count",
        &[
            ("driver_name", DRIVER),
            ("method_name", method),
            ("grpc_status_code", code),
        ],
    )
    .unwrap_or(0.0)
}

fn metrics_options() -> (ServeOptions, std::net::SocketAddr) {
    let addr = free_address();
    let mut options = ServeOptions::default();
    options.metrics_address = Some(addr);
    (options, addr)
}

#[tokio::test]
async fn metrics_are_scraped_over_http_after_grpc_calls() {
    let (options, addr) = metrics_options();
    let served =
        serve_server(Server::new(full_plugin(TestDriver::default())).options(options)).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    for _ in 0..3 {
        client
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .unwrap();
    }
    let create = |name: &str| proto::CreateVolumeRequest {
        name: name.into(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    };
    RawCsi::raw_create_volume(&client, create("vol-1"))
        .await
        .unwrap();
    let err = RawCsi::raw_create_volume(&client, create(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The full plugin has no stager.
    let err = RawCsi::raw_node_stage_volume(&client, proto::NodeStageVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // A path no service has is counted under one label, not its own.
    let mut grpc = tonic::client::Grpc::new(channel(&served.endpoint).await);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<_, proto::ProbeResponse, _>(
            tonic::Request::new(proto::ProbeRequest {}),
            http::uri::PathAndQuery::from_static("/csi.v1.Identity/NoSuchMethod"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    assert!(
        text.contains("# TYPE csi_plugin_operations_seconds histogram"),
        "{text}"
    );
    let s = samples(&text);
    assert_eq!(
        count(&s, "/csi.v1.Identity/GetPluginInfo", "OK"),
        3.0,
        "{text}"
    );
    assert_eq!(
        count(&s, "/csi.v1.Controller/CreateVolume", "OK"),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(&s, "/csi.v1.Controller/CreateVolume", "InvalidArgument"),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(&s, "/csi.v1.Node/NodeStageVolume", "Unimplemented"),
        1.0,
        "{text}"
    );
    assert_eq!(count(&s, "unknown", "Unimplemented"), 1.0, "{text}");
    // Every call lands in the +Inf bucket, and the buckets are the sidecars'.
    let got = series(
        &s,
        "csi_plugin_operations_seconds_bucket",
        &[
            ("driver_name", DRIVER),
            ("method_name", "/csi.v1.Identity/GetPluginInfo"),
            ("grpc_status_code", "OK"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(got, Some(3.0), "{text}");
    assert!(text.contains("le=\"600.0\""), "{text}");
    // No call made, no series.
    assert!(!text.contains("DeleteVolume"), "{text}");

    let (status, _) = http_get(addr, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    served.stop().await;
    // The endpoint stops with the server.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A driver whose `CreateVolume` hangs on its first call for a name
/// starting with "slow" and answers at once afterwards.
#[derive(Default)]
struct Slow {
    inner: TestDriver,
    hung: AtomicBool,
    dropped: Arc<AtomicBool>,
    ready: AtomicBool,
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Identity for Slow {
    async fn get_plugin_info(
        &self,
        r: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, CsiError> {
        self.inner.get_plugin_info(r).await
    }
    async fn probe(&self, _: ProbeRequest) -> Result<ProbeResponse, CsiError> {
        Ok(if self.ready.load(Ordering::SeqCst) {
            ProbeResponse::ready()
        } else {
            ProbeResponse::not_ready()
        })
    }
}

#[async_trait]
impl Controller for Slow {
    async fn validate_volume_capabilities(
        &self,
        r: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        self.inner.validate_volume_capabilities(r).await
    }
}

#[async_trait]
impl Provisioner for Slow {
    async fn create_volume(
        &self,
        r: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, CsiError> {
        if r.name.as_str().starts_with("slow") && !self.hung.swap(true, Ordering::SeqCst) {
            let _flag = SetOnDrop(Arc::clone(&self.dropped));
            std::future::pending::<()>().await;
        }
        self.inner.create_volume(r).await
    }
    async fn delete_volume(
        &self,
        r: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, CsiError> {
        self.inner.delete_volume(r).await
    }
}

fn slow_plugin(slow: Arc<Slow>) -> Plugin {
    Plugin::builder(slow.clone())
        .controller(slow.clone())
        .provisioner(slow)
        .build()
        .unwrap()
}

fn create(name: &str) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_call_timeout_answers_deadline_exceeded_and_releases_the_guard() {
    let slow = Arc::new(Slow::default());
    let (mut options, addr) = metrics_options();
    // The retry below runs under the same timeout: 2 s, not a fraction of a second that a
    // loaded machine can spend on an instant call.
    options.call_timeout = Some(Duration::from_secs(2));
    let served = serve_server(Server::new(slow_plugin(slow.clone())).options(options)).await;
    let client = Client::connect(&served.endpoint).await.unwrap();

    let err = RawCsi::raw_create_volume(&client, create("slow-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains("call timeout of 2s"), "{err}");
    // The driver's future was dropped before the answer left ...
    assert!(slow.dropped.load(Ordering::SeqCst));
    // ... so the retry on the same name is not refused ABORTED.
    RawCsi::raw_create_volume(&client, create("slow-1"))
        .await
        .unwrap();

    let s = samples(&http_get(addr, "/metrics").await.1);
    assert_eq!(
        count(&s, "/csi.v1.Controller/CreateVolume", "DeadlineExceeded"),
        1.0
    );
    assert_eq!(count(&s, "/csi.v1.Controller/CreateVolume", "OK"), 1.0);
    served.stop().await;
}

/// A client's `grpc-timeout` ends the call on the server too, with no
/// server timeout set: the driver's future is dropped and its guard freed.
/// (Which answer the client sees depends on which timer fires first: the
/// server's `DEADLINE_EXCEEDED`, or tonic's client giving up on its own
/// with `CANCELLED` "Timeout expired"; the layer's answer is checked
/// deterministically in its unit tests.)
#[tokio::test]
async fn the_clients_grpc_timeout_is_honoured_without_a_server_timeout() {
    let slow = Arc::new(Slow::default());
    let served = serve_server(Server::new(slow_plugin(slow.clone()))).await;
    let mut c = proto::controller_client::ControllerClient::new(channel(&served.endpoint).await);
    let mut req = tonic::Request::new(create("slow-2"));
    req.set_timeout(Duration::from_millis(300));
    let err = c.create_volume(req).await.unwrap_err();
    let server_answer =
        err.code() == tonic::Code::DeadlineExceeded && err.message().contains("client's deadline");
    let client_gave_up = err.code() == tonic::Code::Cancelled && err.message() == "Timeout expired";
    assert!(server_answer || client_gave_up, "{err:?}");
    // The server drops the driver's future at the deadline (wait for it:
    // the client may have given up a moment before the server did).
    for _ in 0..1000 {
        if slow.dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(slow.dropped.load(Ordering::SeqCst));
    // The guard was released: the same name is served again.
    let mut req = tonic::Request::new(create("slow-2"));
    req.set_timeout(Duration::from_secs(30));
    c.create_volume(req).await.unwrap();
    served.stop().await;
}

#[tokio::test]
async fn health_reflects_probe_readiness() {
    let slow = Arc::new(Slow::default());
    let served = serve_server(Server::new(slow_plugin(slow.clone()))).await;
    let mut health = HealthClient::new(channel(&served.endpoint).await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };

    let status =
        |r: tonic_health::pb::HealthCheckResponse| ServingStatus::try_from(r.status).unwrap();
    let r = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(status(r), ServingStatus::NotServing);
    let mut watch = health
        .watch(check("csi.v1.Controller"))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(status(first), ServingStatus::NotServing);

    slow.ready.store(true, Ordering::SeqCst);
    let r = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(status(r), ServingStatus::Serving);
    let r = health
        .check(check("csi.v1.Node"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r), ServingStatus::Serving);
    // Watch sends the change at its next look.
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(status(next), ServingStatus::Serving);

    let err = health.check(check("example.Other")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    served.stop().await;

    // Turned off, the health service is not there.
    let mut options = ServeOptions::default();
    options.health = false;
    let served =
        serve_server(Server::new(slow_plugin(Arc::new(Slow::default()))).options(options)).await;
    let mut health = HealthClient::new(channel(&served.endpoint).await);
    let err = health.check(check("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    served.stop().await;
}

/// A tower layer counting the calls it sees.
#[derive(Clone)]
struct Counting(Arc<AtomicUsize>);

impl<S> tower::Layer<S> for Counting {
    type Service = CountingService<S>;
    fn layer(&self, inner: S) -> CountingService<S> {
        CountingService(inner, Arc::clone(&self.0))
    }
}

#[derive(Clone)]
struct CountingService<S>(S, Arc<AtomicUsize>);

impl<S: tower::Service<R>, R> tower::Service<R> for CountingService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.call(req)
    }
}

fn require_token(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    match req.metadata().get("authorization") {
        Some(t) if t == "Bearer ok" => Ok(req),
        _ => Err(tonic::Status::unauthenticated("no token")),
    }
}

#[tokio::test]
async fn user_layers_wrap_the_plugin_and_metrics_see_what_they_refuse() {
    let seen = Arc::new(AtomicUsize::new(0));
    let (options, addr) = metrics_options();
    let server = Server::new(full_plugin(TestDriver::default()))
        .options(options)
        .layer(Counting(Arc::clone(&seen)))
        .layer(tonic::service::InterceptorLayer::new(require_token));
    let served: Served = serve_server(server).await;
    let mut c = proto::identity_client::IdentityClient::new(channel(&served.endpoint).await);

    let err = c
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(proto::GetPluginInfoRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer ok".parse().unwrap());
    let info = c.get_plugin_info(req).await.unwrap().into_inner();
    assert_eq!(info.name, "test.csi.example.com");
    // The plugin's own checks still run inside the layers.
    let mut cc = proto::controller_client::ControllerClient::new(channel(&served.endpoint).await);
    let mut req = tonic::Request::new(create(""));
    req.metadata_mut()
        .insert("authorization", "Bearer ok".parse().unwrap());
    assert_eq!(
        cc.create_volume(req).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // The outer layer saw all three calls, the refused one included.
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let s = samples(&http_get(addr, "/metrics").await.1);
    assert_eq!(
        count(&s, "/csi.v1.Identity/GetPluginInfo", "Unauthenticated"),
        1.0
    );
    assert_eq!(count(&s, "/csi.v1.Identity/GetPluginInfo", "OK"), 1.0);
    assert_eq!(
        count(&s, "/csi.v1.Controller/CreateVolume", "InvalidArgument"),
        1.0
    );
    served.stop().await;
}

/// The driver's own counter and histogram, registered in a registry handed to
/// the server, are scraped from the same endpoint as the SDK's series, which
/// carry the plugin's name.
#[tokio::test]
async fn a_drivers_own_metrics_are_served_next_to_the_sdks() {
    use csi_types::server::prometheus_client::metrics::counter::Counter;
    use csi_types::server::prometheus_client::metrics::family::Family;
    use csi_types::server::prometheus_client::metrics::histogram::Histogram;
    use csi_types::server::prometheus_client::registry::Registry;

    let copies: Counter = Counter::default();
    type Labels = Vec<(String, String)>;
    let sizes: Family<Labels, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(|| Histogram::new([1e6, 1e9]));
    let mut registry = Registry::default();
    registry.register("test_snapshot_copies", "Snapshots copied", copies.clone());
    registry.register("test_copy_bytes", "Bytes per copy", sizes.clone());

    let (options, addr) = metrics_options();
    let served = serve_server(
        Server::new(full_plugin(TestDriver::default()))
            .options(options)
            .metrics_registry(registry),
    )
    .await;
    let client = Client::connect(&served.endpoint).await.unwrap();
    client
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap();
    // The driver counts after the server started, through its clones.
    copies.inc_by(2);
    sizes
        .get_or_create(&vec![("tier".into(), "backup".into())])
        .observe(5e8);

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let s = samples(&text);
    assert_eq!(
        count(&s, "/csi.v1.Identity/GetPluginInfo", "OK"),
        1.0,
        "{text}"
    );
    assert_eq!(
        series(&s, "test_snapshot_copies_total", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&s, "test_copy_bytes_count", &[("tier", "backup")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(
            &s,
            "test_copy_bytes_bucket",
            &[("tier", "backup"), ("le", "1000000000.0")]
        ),
        Some(1.0),
        "{text}"
    );
    // The driver's series are its own: no driver_name is added to them.
    assert!(!text.contains("test_snapshot_copies_total{"), "{text}");
    // One exposition: a single end marker, at the end.
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    served.stop().await;
}

#[tokio::test]
async fn a_registry_without_a_metrics_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let err = Server::new(full_plugin(TestDriver::default()))
        .metrics_registry(Default::default())
        .serve(&endpoint, async {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, csi_types::server::ServeError::RegistryWithoutAddress),
        "{err}"
    );
    assert!(err.to_string().contains("metrics_address"), "{err}");
    assert!(!dir.path().join("csi.sock").exists());
}
