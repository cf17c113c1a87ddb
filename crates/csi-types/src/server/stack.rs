//! The middleware seam: the HTTP service stack every call goes through, the
//! user's tower layers in it, and the per-call deadline.
//!
//! From the connection inwards a call meets: per-RPC metrics (when an
//! address is set), the connection bookkeeping, the deadline, the user's
//! layers in the order they were added, and the CSI routes (where
//! [`crate::Plugin`] validates, guards, isolates panics and logs).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;
use tower::ServiceExt;

/// The error type of the services in the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The HTTP service a user's layer wraps (see [`super::Server::layer`]):
/// gRPC requests in, gRPC responses out, `Clone + Send`.
pub type HttpService = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    BoxError,
>;

/// A user's layer, applied when the server starts.
pub(crate) type LayerFn = Arc<dyn Fn(HttpService) -> HttpService + Send + Sync>;

/// The user's layers, first added outermost, over the CSI routes.
#[derive(Clone)]
pub(crate) struct UserLayers(pub(crate) Arc<[LayerFn]>);

impl tower::Layer<super::dispatch::Dispatch> for UserLayers {
    type Service = HttpService;
    fn layer(&self, csi: super::dispatch::Dispatch) -> HttpService {
        self.0
            .iter()
            .rev()
            .fold(boxed(csi), |inner, layer| layer(inner))
    }
}

/// Boxes any service with a gRPC-compatible body into an [`HttpService`].
pub(crate) fn boxed<S, B>(svc: S) -> HttpService
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    tower::util::BoxCloneService::new(
        svc.map_response(|r: http::Response<B>| r.map(tonic::body::Body::new))
            .map_err(|e: S::Error| -> BoxError { e.into() }),
    )
}

/// The client's deadline is answered this much early, so that the server's
/// `DEADLINE_EXCEEDED` wins over tonic's own `grpc-timeout` handling (which
/// starts its timer a few microseconds earlier and answers `CANCELLED`).
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// Answers `DEADLINE_EXCEEDED` when a call outlives the server's call
/// timeout or the client's `grpc-timeout`, whichever is shorter. The call's
/// future is dropped first, so its operation guard is released before the
/// answer leaves.
#[derive(Clone)]
pub(crate) struct DeadlineLayer(pub(crate) Option<Duration>);

impl tower::Layer<HttpService> for DeadlineLayer {
    type Service = Deadline;
    fn layer(&self, inner: HttpService) -> Deadline {
        Deadline {
            inner,
            timeout: self.0,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone)]
pub(crate) struct Deadline {
    inner: HttpService,
    timeout: Option<Duration>,
}

/// Which limit a call ran into, for the status message.
enum Limit {
    Server(Duration),
    Client(Duration),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The response of a call under a deadline.
pub(crate) struct DeadlineFuture {
    inner: Option<BoxFuture<Result<http::Response<tonic::body::Body>, BoxError>>>,
    sleep: Option<(Pin<Box<tokio::time::Sleep>>, Limit, String)>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Deadline {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = DeadlineFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> DeadlineFuture {
        let client = grpc_timeout(req.headers());
        let limit = match (self.timeout, client) {
            (Some(s), Some(c)) if c < s => Some(Limit::Client(c)),
            (Some(s), _) => Some(Limit::Server(s)),
            (None, Some(c)) => Some(Limit::Client(c)),
            (None, None) => None,
        };
        let sleep = limit.map(|limit| {
            let after = match limit {
                Limit::Server(d) => d,
                Limit::Client(d) => d.saturating_sub(CLIENT_DEADLINE_MARGIN),
            };
            let method = req.uri().path().to_string();
            (Box::pin(tokio::time::sleep(after)), limit, method)
        });
        DeadlineFuture {
            inner: Some(self.inner.call(req)),
            sleep,
        }
    }
}

impl Future for DeadlineFuture {
    type Output = Result<http::Response<tonic::body::Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err("a deadline future polled after completion".into()));
        };
        if let Poll::Ready(r) = inner.as_mut().poll(cx) {
            this.inner = None;
            return Poll::Ready(r);
        }
        let Some((sleep, limit, method)) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Dropping the call releases its operation guard now, before the
        // client can retry.
        this.inner = None;
        let message = match limit {
            Limit::Server(d) => {
                format!("{method} did not finish within the server's call timeout of {d:?}")
            }
            Limit::Client(d) => format!(
                "{method} did not finish within the client's deadline (grpc-timeout {:?})",
                *d
            ),
        };
        tracing::info!(method = %method, "deadline exceeded: {message}");
        Poll::Ready(Ok(Status::deadline_exceeded(message).into_http()))
    }
}

/// The `grpc-timeout` header (gRPC over HTTP/2: 1 to 8 digits and a unit),
/// or `None` when absent or malformed (tonic ignores a malformed one too).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    // A static name is looked up without parsing it on every call.
    static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Option<Duration> {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
        grpc_timeout(&h)
    }

    /// A service whose calls never finish.
    fn hanging() -> HttpService {
        boxed(tower::service_fn(|_: http::Request<tonic::body::Body>| {
            std::future::pending::<Result<http::Response<tonic::body::Body>, BoxError>>()
        }))
    }

    async fn call(
        timeout: Option<Duration>,
        header: Option<&str>,
    ) -> http::Response<tonic::body::Body> {
        let mut svc = tower::Layer::layer(&DeadlineLayer(timeout), hanging());
        let mut req = http::Request::new(tonic::body::Body::empty());
        *req.uri_mut() = http::Uri::from_static("/csi.v1.Controller/CreateVolume");
        if let Some(h) = header {
            req.headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_str(h).unwrap());
        }
        tower::ServiceExt::oneshot(&mut svc, req).await.unwrap()
    }

    fn status(resp: &http::Response<tonic::body::Body>) -> (String, String) {
        let h = resp.headers();
        let get = |k| String::from_utf8_lossy(h.get(k).unwrap().as_bytes()).into_owned();
        (get("grpc-status"), get("grpc-message"))
    }

    #[tokio::test]
    async fn the_shorter_limit_answers_deadline_exceeded() {
        // The client's deadline, with no server timeout.
        let (code, message) = status(&call(None, Some("20m")).await);
        assert_eq!(code, "4");
        assert!(message.contains("client's%20deadline"), "{message}");
        // The server's timeout when it is shorter than the client's.
        let (code, message) = status(&call(Some(Duration::from_millis(20)), Some("10S")).await);
        assert_eq!(code, "4");
        assert!(message.contains("call%20timeout%20of%2020ms"), "{message}");
        // The client's when it is shorter.
        let (_, message) = status(&call(Some(Duration::from_secs(10)), Some("20m")).await);
        assert!(message.contains("client's%20deadline"), "{message}");
    }

    #[test]
    fn grpc_timeout_units_and_malformed_values() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
