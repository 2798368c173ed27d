//! Bounded connections: a cap on open connections, timeouts for connections that do nothing,
//! and the count of requests in flight that the drain waits for.
//!
//! Anything that can reach a port will eventually hold it open without sending a byte, so the
//! servers bound connections the way actors bound mailboxes:
//!
//! - At most [`ConnectionLimits::max_connections`] are open. Beyond it the listener stops
//!   accepting (new connections wait in the kernel's backlog), except that a connection which
//!   has never started a request and is older than [`EVICTABLE_AFTER`] is closed to make room:
//!   a flood of silent connections cannot lock clients out, and a client that has sent a
//!   request is never closed for it.
//! - A connection that starts no request within [`ConnectionLimits::first_request_timeout`]
//!   of being accepted (a silent TCP connection, a stalled TLS handshake, a bare HTTP/2
//!   preface) is closed, as is one with no request in flight for
//!   [`ConnectionLimits::idle_timeout`].
//! - The drain closes every connection as soon as no request is in flight, rather than
//!   waiting for idle and silent connections to leave on their own.
//!
//! [`Incoming`] is the stream of accepted connections handed to tonic; each is a
//! [`TrackedIo`], whose reads end (EOF) when the connection is to be closed, and whose
//! [`ConnInfo`] reaches every request's extensions, where [`TrackLayer`] counts the request
//! as in flight until its response body is finished or dropped.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::Frame;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
    time::{Instant, Sleep},
};
use tokio_stream::Stream;
use tonic::{
    body::Body,
    codegen::http,
    transport::server::{Connected, TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};

/// How old a connection that never started a request must be before it may be closed to make
/// room for a new one: long enough for any real client to send its first request.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// File descriptors kept back from the connection cap for everything else a server opens
/// (its database files, its own client connections, the metrics endpoint).
pub const RESERVED_FDS: u64 = 128;

/// The bounds on a server's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a new connection may take to start its first request.
    pub first_request_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// These limits with `max_connections` lowered, if need be, to what the process's file
    /// descriptor limit allows (after raising its soft limit to the hard one), keeping
    /// [`RESERVED_FDS`] back: past the fd limit `accept` fails, and then no one gets in.
    pub fn within_fd_limit(mut self) -> Self {
        let soft = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(soft) => soft,
            Err(error) => {
                tracing::warn!(%error, "cannot read the open-file limit; connection cap unchanged");
                return self;
            }
        };
        let allowed =
            usize::try_from(soft.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
        if allowed < self.max_connections {
            tracing::warn!(
                configured = self.max_connections,
                allowed,
                open_file_limit = soft,
                "lowering the connection cap to fit the open-file limit"
            );
            self.max_connections = allowed;
        }
        self
    }
}

/// Every open connection of one server, and its requests in flight.
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    limits: ConnectionLimits,
    /// Origin of the millisecond ticks below.
    epoch: Instant,
    /// The open connections by id; its length is the number open.
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// Signalled when a connection closes.
    slot_freed: Notify,
    /// Requests in flight on all connections.
    in_flight: AtomicUsize,
    /// Signalled when `in_flight` drops to zero.
    quiet: Notify,
    /// Connections accepted and closed, and closed by each rule (for logs and tests).
    accepted: AtomicU64,
    closed_silent: AtomicU64,
    closed_idle: AtomicU64,
    closed_for_room: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Silent,
    Idle,
    Room,
    Drain,
}

/// One open connection, as its reads and its requests see it.
pub struct ConnState {
    id: u64,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    opened_ms: u64,
    /// Requests in flight on this connection.
    in_flight: AtomicUsize,
    /// Whether any request ever started on it.
    started: AtomicBool,
    /// When its last request finished (ms ticks).
    last_active_ms: AtomicU64,
    /// Set to close it: its next read ends.
    close: AtomicBool,
    /// The reader to wake when it is closed from outside.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    /// When the connection is due to close if nothing happens, `None` while a request is in
    /// flight.
    fn expires_at(&self) -> Option<(u64, CloseReason)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let limits = &self.shared.limits;
        Some(if self.started.load(Ordering::Acquire) {
            let last = self.last_active_ms.load(Ordering::Acquire);
            (
                last.saturating_add(millis(limits.idle_timeout)),
                CloseReason::Idle,
            )
        } else {
            let first = millis(limits.first_request_timeout);
            (self.opened_ms.saturating_add(first), CloseReason::Silent)
        })
    }

    /// Marks the connection closed and wakes its reader, which then reads EOF.
    fn close(&self, reason: CloseReason) {
        if self.close.swap(true, Ordering::AcqRel) {
            return;
        }
        let counter = match reason {
            CloseReason::Silent => Some(&self.shared.closed_silent),
            CloseReason::Idle => Some(&self.shared.closed_idle),
            CloseReason::Room => Some(&self.shared.closed_for_room),
            CloseReason::Drain => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(peer = ?self.peer, ?reason, "closing connection");
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Connections {
    /// An empty set of connections bounded by `limits`.
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                epoch: Instant::now(),
                open: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                slot_freed: Notify::new(),
                in_flight: AtomicUsize::new(0),
                quiet: Notify::new(),
                accepted: AtomicU64::new(0),
                closed_silent: AtomicU64::new(0),
                closed_idle: AtomicU64::new(0),
                closed_for_room: AtomicU64::new(0),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Connections closed for never starting a request, for idling, and to make room.
    pub fn closed_counts(&self) -> (u64, u64, u64) {
        let shared = &self.shared;
        (
            shared.closed_silent.load(Ordering::Relaxed),
            shared.closed_idle.load(Ordering::Relaxed),
            shared.closed_for_room.load(Ordering::Relaxed),
        )
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// The cap in effect (after [`ConnectionLimits::within_fd_limit`]).
    pub fn max_connections(&self) -> usize {
        self.shared.limits.max_connections
    }

    /// Waits until no request is in flight.
    pub async fn quiet(&self) {
        loop {
            let notified = self.shared.quiet.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every connection has closed (its task ended and its socket was dropped).
    pub async fn all_closed(&self) {
        loop {
            let notified = self.shared.slot_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes every open connection: its reads end, so its server task finishes.
    pub fn close_all(&self) {
        let open: Vec<_> = self.lock().values().cloned().collect();
        for conn in open {
            conn.close(CloseReason::Drain);
        }
    }

    /// The accepted connections of `listener`, bounded by these limits, for tonic's
    /// `serve_with_incoming`. Dropping the stream closes the listener.
    pub fn incoming(&self, listener: TcpListener, keepalive: Duration) -> Incoming {
        Incoming {
            listener: Arc::new(listener),
            connections: self.clone(),
            keepalive,
            next: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a connection may be accepted: below the cap, or after closing a silent one.
    async fn wait_for_room(&self) {
        loop {
            let freed = self.shared.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let open = self.lock();
                if open.len() < self.shared.limits.max_connections {
                    return;
                }
                let now = self.shared.now_ms();
                let evictable_before = now.saturating_sub(millis(EVICTABLE_AFTER));
                // The oldest connection that never started a request: a scan, but only when
                // the cap is reached, over at most the cap's worth of connections.
                let silent = open
                    .values()
                    .filter(|conn| {
                        !conn.started.load(Ordering::Acquire)
                            && !conn.close.load(Ordering::Acquire)
                            && conn.opened_ms <= evictable_before
                    })
                    .min_by_key(|conn| conn.opened_ms);
                if let Some(conn) = silent {
                    conn.close(CloseReason::Room);
                }
            }
            // Either the closed connection's task or a later one frees a slot; re-check at
            // least every EVICTABLE_AFTER so that young silent connections become evictable.
            let _ = tokio::time::timeout(EVICTABLE_AFTER, freed).await;
        }
    }

    fn register(&self, stream: &TcpStream) -> Arc<ConnState> {
        let shared = &self.shared;
        let now = shared.now_ms();
        let conn = Arc::new(ConnState {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            shared: shared.clone(),
            peer: stream.peer_addr().ok(),
            local: stream.local_addr().ok(),
            opened_ms: now,
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(now),
            close: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        self.lock().insert(conn.id, conn.clone());
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        conn
    }
}

/// The next accepted connection, once there is room for it.
type Accepting = Pin<Box<dyn Future<Output = io::Result<TrackedIo>> + Send>>;

/// The stream of accepted connections; see [`Connections::incoming`].
pub struct Incoming {
    listener: Arc<TcpListener>,
    connections: Connections,
    keepalive: Duration,
    next: Option<Accepting>,
}

impl Stream for Incoming {
    type Item = io::Result<TrackedIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = this.next.get_or_insert_with(|| {
            let (listener, connections) = (this.listener.clone(), this.connections.clone());
            Box::pin(accept(listener, connections, this.keepalive))
        });
        let accepted = ready!(next.as_mut().poll(cx));
        this.next = None;
        Poll::Ready(Some(accepted))
    }
}

async fn accept(
    listener: Arc<TcpListener>,
    connections: Connections,
    keepalive: Duration,
) -> io::Result<TrackedIo> {
    loop {
        connections.wait_for_room().await;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) if is_transient(&error) => {
                // Out of file descriptors or a connection reset before it was accepted: wait a
                // little rather than spin, and keep serving the connections already open.
                tracing::warn!(%error, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        // Without TCP_NODELAY replies over ~4 KiB wait ~40 ms for a delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(keepalive);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let conn = connections.register(&stream);
        let timer = Box::pin(tokio::time::sleep(
            connections.shared.limits.first_request_timeout,
        ));
        return Ok(TrackedIo {
            io: stream,
            conn,
            timer,
        });
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(error.raw_os_error(), Some(23 | 24 | 105 | 12)) // ENFILE, EMFILE, ENOBUFS, ENOMEM
}

/// An accepted connection whose reads end when it is to be closed.
pub struct TrackedIo {
    io: TcpStream,
    conn: Arc<ConnState>,
    /// Fires when the connection may be due to close; re-armed from [`ConnState::expires_at`].
    timer: Pin<Box<Sleep>>,
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        let shared = &self.conn.shared;
        shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.conn.id);
        shared.slot_freed.notify_waiters();
        shared.slot_freed.notify_one();
    }
}

impl TrackedIo {
    /// True when the connection is to be closed now; re-arms the timer otherwise.
    fn due(&mut self, cx: &mut Context<'_>) -> bool {
        let conn = &self.conn;
        {
            let mut waker = conn.waker.lock().unwrap_or_else(PoisonError::into_inner);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        if conn.close.load(Ordering::Acquire) {
            return true;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let shared = &conn.shared;
            let now = shared.now_ms();
            let next = match conn.expires_at() {
                Some((at, reason)) if at <= now => {
                    conn.close(reason);
                    return true;
                }
                Some((at, _)) => at,
                None => now.saturating_add(millis(shared.limits.idle_timeout)),
            };
            let at = shared.epoch + Duration::from_millis(next);
            self.timer.as_mut().reset(at);
        }
        false
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.due(cx) {
            return Poll::Ready(Ok(())); // EOF: the server closes the connection.
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
}

/// What every request learns of its connection (in its extensions).
#[derive(Clone)]
pub struct ConnInfo {
    conn: Arc<ConnState>,
}

impl Connected for TrackedIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            conn: self.conn.clone(),
        }
    }
}

/// Tower layer counting each request in flight on its connection and in the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = TrackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackService { inner }
    }
}

/// The service [`TrackLayer`] wraps.
#[derive(Debug, Clone)]
pub struct TrackService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for TrackService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let extensions = request.extensions();
        let conn = extensions
            .get::<ConnInfo>()
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<ConnInfo>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .map(|info| info.conn.clone());
        let guard = conn.map(|conn| {
            // Handlers that ask tonic for the peer's address find it where tonic looks.
            request.extensions_mut().insert(TcpConnectInfo {
                local_addr: conn.local,
                remote_addr: conn.peer,
            });
            InFlight::start(conn)
        });
        TrackFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's response, its body carrying the in-flight guard to its end.
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(guard) = this.guard.take() {
            let body = std::mem::replace(response.body_mut(), Body::empty());
            *response.body_mut() = Body::new(TrackedBody {
                inner: body,
                _guard: guard,
            });
        }
        Poll::Ready(Ok(response))
    }
}

/// A request in flight, from its arrival until its response body is done or dropped.
pub struct InFlight {
    conn: Arc<ConnState>,
}

impl InFlight {
    fn start(conn: Arc<ConnState>) -> Self {
        conn.started.store(true, Ordering::Release);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { conn }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.conn;
        let shared = &conn.shared;
        conn.last_active_ms
            .store(shared.now_ms(), Ordering::Release);
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        if shared.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.quiet.notify_waiters();
        }
    }
}

/// A response body that holds its request's [`InFlight`] until it is finished or dropped.
struct TrackedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Connections {
    /// Writes the connection figures (open, cap, accepted, closed by reason, in flight).
    pub fn encode_metrics(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use crate::metrics::{counter, counters, gauge};
        let (silent, idle, room) = self.closed_counts();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            e,
            "grpc_connections_open",
            "Client connections open now.",
            count(self.open()),
        )?;
        gauge(
            e,
            "grpc_connections_max",
            "The cap on open connections.",
            count(self.max_connections()),
        )?;
        counter(
            e,
            "grpc_connections_accepted",
            "Client connections accepted.",
            self.accepted(),
        )?;
        counters(
            e,
            "grpc_connections_closed",
            "Connections the server closed, by reason.",
            [
                ([("reason", "no_first_request")], silent),
                ([("reason", "idle")], idle),
                ([("reason", "room_at_cap")], room),
            ],
        )?;
        gauge(
            e,
            "grpc_requests_in_flight",
            "Requests and streams in progress.",
            count(self.in_flight()),
        )
    }
}
