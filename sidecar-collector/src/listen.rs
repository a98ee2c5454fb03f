//! Every listener (OTLP gRPC and HTTP, query, sampling HTTP and gRPC) is served
//! here, the same way: HTTP/1.1 and HTTP/2 (gRPC) on one port, a limit on open
//! connections, and timeouts that free what a slow or silent client holds:
//!
//! - `header_timeout`: a new connection must send a complete request head in
//!   time (a TLS handshake included), and once a later request starts
//!   arriving its head must be complete in time too;
//! - `idle_timeout`: a connection with no request in flight and no bytes
//!   moving is closed;
//! - `request_timeout`: a request not answered in time (a body trickling in,
//!   a commit waiting) gets a retryable `503` (gRPC `UNAVAILABLE`).
//!
//! Over the connection limit a new connection is closed at once, so the
//! process never runs out of file descriptors whatever clients do.

use crate::grpc::{is_grpc, refusal};
use crate::telemetry::{ConnectionMetrics, ListenerLabels, TimeoutLabels};
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Listeners of one collector (OTLP gRPC and HTTP, query, sampling HTTP and gRPC).
pub const LISTENERS: u64 = 5;
/// File descriptors kept for the store, logs and upstream connections.
pub const RESERVED_FDS: u64 = 256;

/// The per-listener connection limit: `configured`, lowered to what `nofile`
/// open files allow for every listener and the reserve, so clients can never
/// exhaust file descriptors.
pub fn fit_connections(configured: usize, nofile: u64) -> usize {
    let budget = (nofile.saturating_sub(RESERVED_FDS) / LISTENERS).max(1);
    configured.min(usize::try_from(budget).unwrap_or(usize::MAX))
}

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// The configuration key of `request_timeout`, named in the timeout's answer.
    pub timeout_name: &'static str,
}

/// How a listener's connections are spoken: plain TCP, or TLS (rustls, ALPN
/// `h2` and `http/1.1`, client certificates if its configuration asks).
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(tokio_rustls::TlsAcceptor),
}

/// A connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Transport {
    async fn handshake(&self, tcp: TcpStream) -> io::Result<Conn> {
        match self {
            Transport::Plain => Ok(Conn::Plain(tcp)),
            Transport::Tls(acceptor) => Ok(Conn::Tls(Box::new(acceptor.accept(tcp).await?))),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// What one connection is doing, for the idle and first-request timeouts.
struct ConnState {
    born: Instant,
    /// Milliseconds since `born` of the last byte read or written.
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicUsize,
    /// 1 + milliseconds since `born` when bytes arrived with no request in
    /// flight and nothing answered since (a request head coming in); 0: none.
    pending_ms: AtomicU64,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            born: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            pending_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn read_some(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.pending_ms.compare_exchange(
                0,
                self.now_ms() + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Something was answered (a response, an HTTP/2 ping or settings ack):
    /// what arrived was not a stalled request head.
    fn wrote_some(&self) {
        self.touch();
        self.pending_ms.store(0, Ordering::Relaxed);
    }

    /// How long a request head has been coming in, if one is.
    fn pending_for(&self) -> Option<Duration> {
        match self.pending_ms.load(Ordering::Relaxed) {
            0 => None,
            p => Some(Duration::from_millis(self.now_ms().saturating_sub(p - 1))),
        }
    }

    fn idle_for(&self) -> Duration {
        self.born.elapsed().saturating_sub(Duration::from_millis(
            self.last_io_ms.load(Ordering::Relaxed),
        ))
    }
}

/// A stream that records when bytes last moved.
struct Watched<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.read_some();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote_some();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote_some();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves when the connection should be closed: no request started within
/// the header timeout, a later request head not complete within it, or idle
/// (nothing in flight, no bytes) for the idle timeout.
async fn watchdog(state: Arc<ConnState>, limits: Limits) -> &'static str {
    loop {
        if state.requests.load(Ordering::Relaxed) == 0 {
            let age = state.born.elapsed();
            if age >= limits.header_timeout {
                return "header";
            }
            tokio::time::sleep(limits.header_timeout - age).await;
            continue;
        }
        let mut wait = limits.idle_timeout;
        if let Some(pending) = state.pending_for() {
            if pending >= limits.header_timeout {
                return "header";
            }
            wait = wait.min(limits.header_timeout - pending);
        }
        if state.in_flight.load(Ordering::Relaxed) == 0 {
            let idle = state.idle_for();
            if idle >= limits.idle_timeout {
                return "idle";
            }
            wait = wait.min(limits.idle_timeout - idle);
        }
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}

/// The answer to a request that ran out of time: retryable, saying which limit.
fn timed_out(grpc: bool, limit: Duration, name: &str) -> Response<Body> {
    let msg = format!(
        "request not completed within {name} ({}); retry later",
        humantime::format_duration(limit)
    );
    refusal(
        grpc,
        tonic::Code::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        msg,
    )
}

/// Serves `app` on `listener` with `limits` until `shutdown` resolves, then
/// lets requests in flight finish (at most 30 s).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: Limits,
    handshake: Transport,
    metrics: Arc<ConnectionMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let label = ListenerLabels {
        listener: name.into(),
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header and idle timeouts are the watchdog's, the same for HTTP/1 and HTTP/2
    // (hyper's own HTTP/1 header timeout would also cut idle keep-alive connections).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or the like: wait, never spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.refused.get_or_create(&label).inc();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let (app, handshake, builder, metrics, label) = (
            app.clone(),
            handshake.clone(),
            builder.clone(),
            metrics.clone(),
            label.clone(),
        );
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let open = metrics.open.get_or_create(&label).clone();
            open.inc();
            let io =
                match tokio::time::timeout(limits.header_timeout, handshake.handshake(tcp)).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = label.listener, error = %e, "handshake failed");
                        open.dec();
                        drop(permit);
                        return;
                    }
                    Err(_) => {
                        metrics
                            .timed_out
                            .get_or_create(&TimeoutLabels {
                                listener: label.listener.clone(),
                                reason: "header".into(),
                            })
                            .inc();
                        open.dec();
                        drop(permit);
                        return;
                    }
                };
            let io = TokioIo::new(Watched {
                inner: io,
                state: state.clone(),
            });
            let st = state.clone();
            let request_timeouts = metrics
                .timed_out
                .get_or_create(&TimeoutLabels {
                    listener: label.listener.clone(),
                    reason: "request".into(),
                })
                .clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                let st = st.clone();
                let request_timeouts = request_timeouts.clone();
                st.requests.fetch_add(1, Ordering::Relaxed);
                st.in_flight.fetch_add(1, Ordering::Relaxed);
                st.pending_ms.store(0, Ordering::Relaxed);
                let grpc = is_grpc(req.headers());
                async move {
                    let answer = tokio::time::timeout(
                        limits.request_timeout,
                        app.oneshot(req.map(Body::new)),
                    )
                    .await;
                    st.in_flight.fetch_sub(1, Ordering::Relaxed);
                    st.touch();
                    Ok::<_, std::convert::Infallible>(match answer {
                        Ok(Ok(r)) => r,
                        Ok(Err(never)) => match never {},
                        Err(_) => {
                            request_timeouts.inc();
                            timed_out(grpc, limits.request_timeout, limits.timeout_name)
                        }
                    })
                }
            });
            let conn = builder.serve_connection(io, service);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                _ = conn => {}
                reason = watchdog(state, limits) => {
                    metrics
                        .timed_out
                        .get_or_create(&TimeoutLabels {
                            listener: label.listener.clone(),
                            reason: reason.into(),
                        })
                        .inc();
                }
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open 30 s after shutdown began; closing them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_names_the_key_that_set_it() {
        for (name, grpc) in [("query.timeout", false), ("server.request_timeout", true)] {
            let r = timed_out(grpc, Duration::from_secs(60), name);
            let text = if grpc {
                r.headers()["grpc-message"].to_str().unwrap().to_string()
            } else {
                assert_eq!(r.headers()["retry-after"], "1");
                let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
                String::from_utf8(body.to_vec()).unwrap()
            };
            assert!(text.contains(name) && text.contains("1m"), "{text}");
        }
    }

    #[test]
    fn connections_fit_the_open_files_limit() {
        assert_eq!(
            fit_connections(1024, 1_048_576),
            1024,
            "room: as configured"
        );
        assert_eq!(fit_connections(1024, 1024), 153, "(1024 - 256) / 5");
        assert_eq!(fit_connections(1024, 100), 1, "never zero");
    }
}
