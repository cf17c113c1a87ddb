//! Per-RPC Prometheus metrics, as the Kubernetes CSI sidecars export them
//! (csi-lib-utils' `operations_seconds` under the `csi_plugin` subsystem),
//! and the HTTP endpoint that serves them.
//!
//! One histogram, `csi_plugin_operations_seconds`, labelled `method_name`
//! (the full gRPC method, `/csi.v1.Controller/CreateVolume`) and
//! `grpc_status_code` (the code's name as Go's gRPC spells it: `OK`,
//! `InvalidArgument`, `DeadlineExceeded`, …). Its `_count` series is the
//! call counter by method and code. A path that names no served method is
//! counted as `method_name="unknown"`, so a client cannot grow the label set.
//! Every SDK series also carries `driver_name`, the plugin's name from
//! `GetPluginInfo`, as the sidecars' metrics do. The driver's own metrics,
//! registered in a [`Registry`] it hands to the server, are served next to
//! them at the same endpoint.

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

use super::stack::BoxError;

/// The histogram's name.
pub const OPERATIONS_SECONDS: &str = "csi_plugin_operations_seconds";

/// The label naming the plugin (its `GetPluginInfo` name) on every SDK series.
pub const DRIVER_NAME_LABEL: &str = "driver_name";

/// The buckets of csi-lib-utils' operations histogram, in seconds.
const BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    method_name: &'static str,
    grpc_status_code: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

macro_rules! method_names {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        /// Every method served, as `method_name` label values.
        const METHODS: &[&str] = &[
            $($(concat!("/csi.v1.", stringify!($service), "/", $rpc),)*)*
            "/csi.v1.SnapshotMetadata/GetMetadataAllocated",
            "/csi.v1.SnapshotMetadata/GetMetadataDelta",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        ];
    };
}
crate::api::for_each_unary_rpc!(method_names);

/// The metrics of one server.
pub(crate) struct Metrics {
    /// The SDK's own series, labelled with the driver's name.
    registry: Registry,
    /// The driver's series, served as the driver registered them.
    driver: Option<Registry>,
    operations: Family<Labels, Histogram, fn() -> Histogram>,
    methods: HashSet<&'static str>,
}

impl Metrics {
    /// The SDK's metrics for the plugin `driver_name`, next to the driver's
    /// own `driver` registry.
    pub(crate) fn new(driver_name: &str, driver: Option<Registry>) -> Metrics {
        let operations: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(histogram);
        let mut registry = Registry::default();
        let labelled = registry.sub_registry_with_label((
            Cow::Borrowed(DRIVER_NAME_LABEL),
            Cow::Owned(driver_name.to_string()),
        ));
        labelled.register(
            OPERATIONS_SECONDS,
            "Time taken by CSI operations, by gRPC method and status code",
            operations.clone(),
        );
        Metrics {
            registry,
            driver,
            operations,
            methods: METHODS.iter().copied().collect(),
        }
    }

    fn method(&self, path: &str) -> &'static str {
        self.methods.get(path).copied().unwrap_or("unknown")
    }

    fn observe(&self, method: &'static str, code: Code, start: Instant) {
        self.operations
            .get_or_create(&Labels {
                method_name: method,
                grpc_status_code: code_name(code),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    /// The text exposition (OpenMetrics, which Prometheus reads): the SDK's
    /// series, then the driver's, then the one `# EOF`.
    pub(crate) fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if let Some(driver) = &self.driver {
            let _ = encode_registry(&mut out, driver);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// The metrics endpoint's answer to one HTTP request.
    fn answer<B>(&self, req: &http::Request<B>) -> http::Response<String> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&http::Method::GET, "/metrics") => (
                http::StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.encode(),
            ),
            (_, "/metrics") => (
                http::StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only GET is served here\n".to_string(),
            ),
            (_, path) => (
                http::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("{path}: not found; the metrics are at /metrics\n"),
            ),
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        resp
    }
}

/// Go's names of the gRPC codes (`codes.Code.String()`), which the CSI
/// sidecars put in `grpc_status_code`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `grpc-status` in headers or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers.get(&super::conn::GRPC_STATUS)?;
    let n: i32 = std::str::from_utf8(v.as_bytes()).ok()?.parse().ok()?;
    Some(Code::from_i32(n))
}

/// Serves the metrics over HTTP/1.1 on `listener` until dropped; the
/// connections' tasks end with it.
pub(crate) async fn serve_http(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = metrics.answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics endpoint: connection ended");
            }
        });
    }
}

/// Records every call in the metrics (outermost layer).
#[derive(Clone)]
pub(crate) struct MetricsLayer(pub(crate) Option<Arc<Metrics>>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

/// One call being timed. Dropped unfinished (the client went away, or the
/// body ended without a status), it is counted as `Canceled`.
struct Recording {
    metrics: Arc<Metrics>,
    method: &'static str,
    start: Instant,
    done: bool,
}

impl Recording {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.metrics.observe(self.method, code, self.start);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

impl<S, B> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Unpin,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let recording = self.metrics.as_ref().map(|m| Recording {
            method: m.method(req.uri().path()),
            metrics: Arc::clone(m),
            start: Instant::now(),
            done: false,
        });
        MetricsFuture {
            inner: self.inner.call(req),
            recording,
        }
    }
}

/// See [`MetricsLayer`].
pub(crate) struct MetricsFuture<F> {
    inner: F,
    recording: Option<Recording>,
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let Some(mut recording) = this.recording.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(resp) => match grpc_status(resp.headers()) {
                // A trailers-only answer (every error): the code is here.
                Some(code) => {
                    recording.finish(code);
                    Ok(resp)
                }
                // The code comes in the trailers, after the message.
                None => Ok(resp.map(|inner| {
                    tonic::body::Body::new(MetricsBody {
                        inner,
                        recording: Some(recording),
                    })
                })),
            },
            Err(e) => {
                recording.finish(Code::Unknown);
                Err(e)
            }
        })
    }
}

/// A response body that records its call when the trailers pass.
struct MetricsBody {
    inner: tonic::body::Body,
    recording: Option<Recording>,
}

impl http_body::Body for MetricsBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(recording) = this.recording.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(code) = f.trailers_ref().and_then(grpc_status) {
                        recording.finish(code);
                    }
                }
                Some(Err(_)) | None => recording.finish(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_csi_rpc_has_a_label() {
        let m = Metrics::new("test.csi.example.com", None);
        assert_eq!(
            m.method("/csi.v1.Controller/CreateVolume"),
            "/csi.v1.Controller/CreateVolume"
        );
        assert_eq!(
            m.method("/csi.v1.Node/NodeGetInfo"),
            "/csi.v1.Node/NodeGetInfo"
        );
        assert_eq!(m.method("/csi.v1.Controller/Nope"), "unknown");
        // No method is listed twice.
        assert_eq!(m.methods.len(), METHODS.len());
    }

    #[test]
    fn go_code_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::DeadlineExceeded), "DeadlineExceeded");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("4"));
        assert_eq!(grpc_status(&h), Some(Code::DeadlineExceeded));
    }
}
