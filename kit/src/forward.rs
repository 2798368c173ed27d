//! Forwarding a gRPC call to another server chosen by its first request message.
//!
//! A server that runs as one of several replicas owns some keys and not others. This layer
//! sits in front of the router: for the methods a [`Router`] names, it reads the request body
//! up to the end of its first message, asks the router where that message belongs, and
//! either serves the call here (the bytes already read are replayed to the handler) or sends
//! it, every frame untouched, to the owner over a kept HTTP/2 channel and streams the owner's
//! response back. Unary and streaming calls alike: only the first message is ever buffered.
//!
//! A forwarded call carries [`FORWARDED_HEADER`] and is never forwarded again, so replicas
//! whose views of the membership differ for a moment cannot bounce a call between them; its
//! deadline is what remains of the caller's, as `grpc-timeout` and as [`ABSOLUTE_HEADER`].

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::{StreamExt as _, stream};
use http_body::Frame;
use http_body_util::{BodyExt as _, BodyStream, StreamBody};
use tonic::{Status, body::Body, codegen::http, transport::Channel};
use tower::{Layer, Service, ServiceExt as _};
use tracing::Instrument as _;

use crate::deadline::{ABSOLUTE_HEADER, Deadline};

/// Metadata key set on a forwarded call: the address of the replica that forwarded it.
pub const FORWARDED_HEADER: &str = "x-forwarded-by";

/// The largest first message looked at (a larger one is served here, where the server's own
/// message limit refuses it precisely).
const MAX_PEEK: usize = 4 * 1024 * 1024;

/// Where calls go.
pub trait Router: Send + Sync + 'static {
    /// Whether calls to `path` (`/package.Service/Method`) are placed by their first message.
    fn routed(&self, path: &str) -> bool;
    /// Where a call to `path` whose first message is `message` (uncompressed protobuf) is
    /// served: `None` here, else the owner.
    fn route(&self, path: &str, message: &[u8]) -> Option<Target>;
    /// Called once per forwarded call (metrics).
    fn forwarded(&self, _path: &str, _to: &str) {}
}

/// A replica to forward to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its address, for the span and the header.
    pub addr: Arc<str>,
    /// A kept channel to it.
    pub channel: Channel,
}

/// Tower layer that forwards calls as its [`Router`] says; without one, it does nothing.
#[derive(Clone, Default)]
pub struct ForwardLayer {
    router: Option<Arc<dyn Router>>,
    me: Option<http::HeaderValue>,
}

impl ForwardLayer {
    /// Forwards by `router`'s placement; `me` is this replica's address, sent along.
    pub fn new(router: Option<Arc<dyn Router>>, me: &str) -> Self {
        Self {
            router,
            me: http::HeaderValue::from_str(me).ok(),
        }
    }
}

impl<S> Layer<S> for ForwardLayer {
    type Service = Forward<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Forward {
            inner,
            router: self.router.clone(),
            me: self.me.clone(),
        }
    }
}

/// The service [`ForwardLayer`] wraps around the router.
#[derive(Clone)]
pub struct Forward<S> {
    inner: S,
    router: Option<Arc<dyn Router>>,
    me: Option<http::HeaderValue>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Forward<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        futures_util::future::Either<S::Future, BoxFuture<Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(router) = self.router.clone() else {
            return futures_util::future::Either::Left(self.inner.call(request));
        };
        let path = request.uri().path();
        if request.headers().contains_key(FORWARDED_HEADER) || !router.routed(path) {
            return futures_util::future::Either::Left(self.inner.call(request));
        }
        // The ready service answers this call; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let me = self.me.clone();
        futures_util::future::Either::Right(Box::pin(async move {
            Ok(route(inner, router, me, request).await)
        }))
    }
}

/// Reads the first message of `request` and serves or forwards it.
async fn route<S>(
    inner: S,
    router: Arc<dyn Router>,
    me: Option<http::HeaderValue>,
    request: http::Request<Body>,
) -> http::Response<Body>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    let (parts, body) = request.into_parts();
    let (read, first, rest) = peek(body).await;
    let target = first.and_then(|message| router.route(parts.uri.path(), &message));
    let body = replay(read, rest);
    let mut request = http::Request::from_parts(parts, body);
    let Some(target) = target else {
        return match inner.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    };
    let path = request.uri().path().to_string();
    router.forwarded(&path, &target.addr);
    // The owner answers by the deadline now: the deadline layer need not race it.
    let deadline = Deadline::accept_http(&request);
    let headers = request.headers_mut();
    if let Some(deadline) = deadline {
        let millis = deadline.remaining().as_millis().clamp(1, 99_999_999);
        if let Ok(value) = http::HeaderValue::from_str(&format!("{millis}m")) {
            headers.insert("grpc-timeout", value);
        }
        if let Ok(value) = http::HeaderValue::from_str(&deadline.unix_ms().to_string()) {
            headers.insert(ABSOLUTE_HEADER, value);
        }
    }
    if let Some(me) = me {
        headers.insert(FORWARDED_HEADER, me);
    }
    let span = tracing::info_span!("forward", peer = %target.addr, rpc = %path);
    let sent = target.channel.oneshot(request).instrument(span).await;
    match sent {
        Ok(response) => response.map(Body::new),
        Err(error) => Status::unavailable(format!(
            "this replica forwards {path} to {}, the owner of its key, which did not answer ({error}); \
             retry: the membership moves the key to a live replica within seconds",
            target.addr
        ))
        .into_http(),
    }
}

/// Reads `body` until its first gRPC message is complete: the frames read, the message
/// (`None` when compressed, too large, malformed or missing) and the unread rest.
async fn peek(
    mut body: Body,
) -> (
    Vec<Result<Frame<Bytes>, Status>>,
    Option<Bytes>,
    Option<Body>,
) {
    let mut read = Vec::new();
    let mut data = BytesMut::new();
    loop {
        if let Some(message) = first_message(&data) {
            return (read, message, Some(body));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(bytes) = frame.data_ref() {
                    data.extend_from_slice(bytes);
                }
                let done = frame.is_trailers();
                read.push(Ok(frame));
                if done {
                    return (read, None, None);
                }
            }
            Some(Err(status)) => {
                read.push(Err(status));
                return (read, None, None);
            }
            None => {
                let message = first_message(&data).flatten();
                return (read, message, None);
            }
        }
    }
}

/// The first message of `data`: `None` while incomplete, `Some(None)` when it cannot be
/// looked at (compressed, or larger than [`MAX_PEEK`]), else its bytes.
fn first_message(data: &[u8]) -> Option<Option<Bytes>> {
    if data.len() < 5 {
        return None;
    }
    let mut header = &data[..5];
    let compressed = header.get_u8() != 0;
    let len = header.get_u32() as usize;
    if compressed || len > MAX_PEEK {
        return Some(None);
    }
    let end = 5 + len;
    (data.len() >= end).then(|| Some(Bytes::copy_from_slice(&data[5..end])))
}

/// A body that yields `read` again, then the rest of the original, without empty data frames.
///
/// Clients end a request with an empty DATA frame that carries END_STREAM. Passed on as a
/// frame of its own it would go out as an empty DATA frame *without* END_STREAM (the end of
/// this body sends another), and h2 servers count those: after 100 on one connection they
/// answer GOAWAY `ENHANCE_YOUR_CALM`, which failed every call then in flight on the kept
/// connection to the owner. An empty frame carries nothing, so none is passed on.
fn replay(read: Vec<Result<Frame<Bytes>, Status>>, rest: Option<Body>) -> Body {
    let rest = stream::iter(rest).flat_map(BodyStream::new);
    let frames = stream::iter(read).chain(rest).filter(|frame| {
        let empty = matches!(frame, Ok(f) if f.data_ref().is_some_and(Bytes::is_empty));
        std::future::ready(!empty)
    });
    Body::new(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn the_first_message_is_found_only_once_complete() {
        let whole = framed(b"hello");
        assert_eq!(first_message(&whole[..3]), None);
        assert_eq!(first_message(&whole[..7]), None);
        assert_eq!(
            first_message(&whole),
            Some(Some(Bytes::from_static(b"hello")))
        );
        let mut two = whole.clone();
        two.extend(framed(b"second"));
        assert_eq!(
            first_message(&two),
            Some(Some(Bytes::from_static(b"hello")))
        );
        let mut compressed = whole;
        compressed[0] = 1;
        assert_eq!(first_message(&compressed), Some(None));
    }

    #[tokio::test]
    async fn empty_data_frames_are_not_passed_on() {
        let mut chunks: Vec<Result<Frame<Bytes>, Status>> =
            vec![Ok(Frame::data(Bytes::from(framed(b"key"))))];
        chunks.push(Ok(Frame::data(Bytes::new())));
        let body = Body::new(StreamBody::new(stream::iter(chunks)));
        let (read, first, rest) = peek(body).await;
        assert_eq!(first, Some(Bytes::from_static(b"key")));
        let mut replayed = replay(read, rest);
        let mut frames = 0;
        while let Some(frame) = replayed.frame().await {
            let frame = frame.unwrap();
            assert!(frame.data_ref().is_some_and(|d| !d.is_empty()), "{frame:?}");
            frames += 1;
        }
        assert_eq!(frames, 1);
    }

    #[tokio::test]
    async fn a_peeked_body_replays_every_frame_in_order() {
        let mut bytes = framed(b"first");
        bytes.extend(framed(b"second"));
        let chunks: Vec<Result<Frame<Bytes>, Status>> = bytes
            .chunks(3)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = Body::new(StreamBody::new(stream::iter(chunks)));
        let (read, first, rest) = peek(body).await;
        assert_eq!(first, Some(Bytes::from_static(b"first")));
        let replayed = replay(read, rest).collect().await.unwrap().to_bytes();
        assert_eq!(replayed.as_ref(), bytes.as_slice());
    }
}
