//! Each accepted connection: the `:authority` rewriter on its read side, the
//! idle timer, and the per-call layer that counts calls in flight and maps
//! tonic's "message too large" to `RESOURCE_EXHAUSTED`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::authority::Rewriter;

/// What a connection and the calls on it share: how many calls are in
/// flight and when the last one started or ended.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `base` of the last call start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Holds a call in flight on its connection until dropped (when the
/// response body is finished or abandoned).
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<Activity>);

impl CallGuard {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        CallGuard(activity)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connect info tonic puts in every request's extensions: the
/// connection's [`Activity`].
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo(pub(crate) Arc<Activity>);

/// An accepted connection (see the module documentation).
pub(crate) struct ServerConn<IO> {
    io: IO,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the server, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    scratch: Box<[u8]>,
    activity: Arc<Activity>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    closed: bool,
}

impl<IO> ServerConn<IO> {
    pub(crate) fn new(io: IO, idle_timeout: Option<Duration>) -> Self {
        let activity = Arc::new(Activity::new());
        let idle = idle_timeout.map(|d| (d, Box::pin(tokio::time::sleep(d))));
        ServerConn {
            io,
            rewriter: Rewriter::default(),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; 8 * 1024].into_boxed_slice(),
            activity,
            idle,
            closed: false,
        }
    }

    /// Whether the idle timeout has passed with no call in flight. Arms
    /// the timer (registering the waker) otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((timeout, sleep)) = &mut self.idle else {
            return false;
        };
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = if self.activity.in_flight.load(Ordering::Relaxed) > 0 {
                Instant::now() + *timeout
            } else {
                self.activity.last() + *timeout
            };
            if deadline <= Instant::now() {
                return true;
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ServerConn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.idle_expired(cx) {
                tracing::debug!("closing a connection idle past the idle timeout");
                this.closed = true;
                return Poll::Ready(Ok(()));
            }
            let budget = this.rewriter.passthrough_budget().min(buf.remaining());
            if budget > 0 {
                // Bytes that pass unchanged go straight to the caller.
                let dst = buf.initialize_unfilled_to(budget);
                let mut direct = ReadBuf::new(dst);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut direct))?;
                let n = direct.filled().len();
                buf.advance(n);
                this.rewriter.passed_through(n);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut scratch))?;
            let n = scratch.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            this.rewriter
                .feed(&this.scratch[..n], &mut this.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ServerConn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO> tonic::transport::server::Connected for ServerConn<IO> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo(self.activity.clone())
    }
}

/// The per-call layer: holds a [`CallGuard`] for the call's lifetime and
/// answers tonic's "message too large" with `RESOURCE_EXHAUSTED`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallLayer;

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;
    fn layer(&self, inner: S) -> CallService<S> {
        CallService(inner)
    }
}

/// See [`CallLayer`].
#[derive(Clone, Debug)]
pub(crate) struct CallService<S>(S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for CallService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| CallGuard::new(c.0.clone()));
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            exhausted_not_out_of_range(resp.headers_mut());
            let (parts, body) = resp.into_parts();
            let body = tonic::body::Body::new(CallBody { inner: body, guard });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// Header names looked up on every response: as statics, a lookup hashes
/// them without parsing and lower-casing the name first.
pub(crate) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// tonic answers a message over the size limit with `OUT_OF_RANGE`; gRPC's
/// convention (and what other gRPC servers answer) is `RESOURCE_EXHAUSTED`.
/// Its message ("Error, decoded message length too large: found N bytes, the
/// limit is: M bytes") is said again naming the message and the setting
/// that raises the limit.
fn exhausted_not_out_of_range(headers: &mut http::HeaderMap) {
    // tonic's messages, as percent-encoded in `grpc-message`, and which
    // message each is about.
    const TOO_LARGE: [(&[u8], &str); 2] = [
        (
            b"Error,%20decoded%20message%20length%20too%20large",
            "request",
        ),
        (
            b"Error,%20encoded%20message%20length%20too%20large",
            "response",
        ),
    ];
    let out_of_range = headers
        .get(&GRPC_STATUS)
        .is_some_and(|s| s.as_bytes() == b"11");
    if !out_of_range {
        return;
    }
    let Some((message, which)) = headers.get(&GRPC_MESSAGE).and_then(|m| {
        TOO_LARGE
            .iter()
            .find(|(p, _)| m.as_bytes().starts_with(p))
            .map(|&(_, which)| (m.as_bytes(), which))
    }) else {
        return;
    };
    let said = too_large_message(message, which);
    headers.insert(GRPC_STATUS.clone(), http::HeaderValue::from_static("8"));
    if let Some(said) = said.and_then(|s| http::HeaderValue::try_from(s).ok()) {
        headers.insert(GRPC_MESSAGE.clone(), said);
    }
}

/// The `grpc-message` (percent-encoded) for tonic's "found N bytes, the
/// limit is: M bytes"; `None` if its numbers are not where they were.
fn too_large_message(tonic: &[u8], which: &str) -> Option<String> {
    let text = std::str::from_utf8(tonic).ok()?.replace("%20", " ");
    let (found, limit) = crate::error::tonic_too_large_sizes(&text)?;
    Some(
        format!(
            "the {which} is {found} bytes, over this server's limit of {limit} bytes \
             (ServeOptions::max_message_size)"
        )
        .replace(' ', "%20"),
    )
}

/// A response body that holds its call's [`CallGuard`] until it ends, and
/// applies [`exhausted_not_out_of_range`] to its trailers.
struct CallBody {
    inner: tonic::body::Body,
    guard: Option<CallGuard>,
}

impl http_body::Body for CallBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match frame {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    exhausted_not_out_of_range(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            None => {
                self.guard = None;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
        }
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
    fn a_response_over_the_limit_is_named_as_the_response() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert(GRPC_STATUS.clone(), http::HeaderValue::from_static("11"));
        trailers.insert(
            GRPC_MESSAGE.clone(),
            http::HeaderValue::from_static(
                "Error,%20encoded%20message%20length%20too%20large:%20found%205000000%20bytes,\
                 %20the%20limit%20is:%204194304%20bytes",
            ),
        );
        exhausted_not_out_of_range(&mut trailers);
        assert_eq!(trailers[&GRPC_STATUS], "8");
        assert_eq!(
            trailers[&GRPC_MESSAGE],
            "the%20response%20is%205000000%20bytes,%20over%20this%20server's%20limit%20of\
             %204194304%20bytes%20(ServeOptions::max_message_size)"
        );
        // Another OUT_OF_RANGE is left as it is.
        let mut other = http::HeaderMap::new();
        other.insert(GRPC_STATUS.clone(), http::HeaderValue::from_static("11"));
        other.insert(
            GRPC_MESSAGE.clone(),
            http::HeaderValue::from_static("offset"),
        );
        exhausted_not_out_of_range(&mut other);
        assert_eq!(other[&GRPC_STATUS], "11");
        assert_eq!(other[&GRPC_MESSAGE], "offset");
    }
}
