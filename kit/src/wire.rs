//! Replies sent as the bytes a handler already encoded.
//!
//! session-svc encodes a cart to write it to the store, and a cart's reply is that same
//! message, so tonic encoding it again doubles the work. A handler that holds the exact
//! protobuf encoding of its reply attaches it to the `tonic::Response` as a [`PreEncoded`]
//! extension; [`PreEncodedLayer`] then sends those bytes as the gRPC message and drops tonic's
//! body unpolled, so the message is never encoded twice. Replies without the extension pass
//! through untouched.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use tonic::{body::Body, codegen::http};
use tower::{Layer, Service};

/// The exact protobuf encoding of a unary reply's message: it is sent instead of the message.
#[derive(Debug, Clone)]
pub struct PreEncoded(pub Bytes);

/// Tower layer that sends [`PreEncoded`] replies as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreEncodedLayer;

impl<S> Layer<S> for PreEncodedLayer {
    type Service = PreEncodedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PreEncodedService { inner }
    }
}

/// The service [`PreEncodedLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct PreEncodedService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for PreEncodedService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PreEncodedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        PreEncodedFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's response, its body swapped for the [`PreEncoded`] bytes when it has them.
    pub struct PreEncodedFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, E> Future for PreEncodedFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        if let Some(PreEncoded(message)) = response.extensions_mut().remove::<PreEncoded>() {
            *response.body_mut() = Body::new(OneMessage::new(&message));
        }
        Poll::Ready(Ok(response))
    }
}

/// A gRPC response body of one uncompressed message, then `grpc-status: 0`.
struct OneMessage {
    /// The length-prefixed message, until sent.
    frame: Option<Bytes>,
    /// The trailers, until sent.
    trailers: Option<http::HeaderMap>,
}

impl OneMessage {
    fn new(message: &[u8]) -> Self {
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0); // Not compressed.
        frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        frame.put_slice(message);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Self {
            frame: Some(frame.freeze()),
            trailers: Some(trailers),
        }
    }
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = match self.frame.take() {
            Some(frame) => Some(Frame::data(frame)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(next.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frame.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt as _;
    use prost::Message;
    use proto::store::v1::GetResponse;

    use super::*;

    /// The data of `body` and its trailers, as a client reads them.
    async fn collect(body: Body) -> (Bytes, Option<http::HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    /// The layer's answer when the router answers `response`.
    async fn through_layer(response: http::Response<Body>) -> http::Response<Body> {
        let mut response = Some(response);
        let mut service = PreEncodedLayer.layer(tower::service_fn(move |_: http::Request<()>| {
            let response = response.take().expect("called once");
            async move { Ok::<_, Infallible>(response) }
        }));
        service.call(http::Request::new(())).await.unwrap()
    }

    #[tokio::test]
    async fn a_pre_encoded_reply_is_sent_as_one_grpc_message_and_status_ok() {
        let message = GetResponse {
            value: b"hello".to_vec(),
            version: 7,
        };
        let encoded = message.encode_to_vec();
        let mut response = http::Response::new(Body::empty());
        response
            .extensions_mut()
            .insert(PreEncoded(Bytes::from(encoded.clone())));

        let response = through_layer(response).await;
        assert!(response.extensions().get::<PreEncoded>().is_none());
        let (data, trailers) = collect(response.into_body()).await;
        assert_eq!(data[0], 0, "uncompressed");
        assert_eq!(
            u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize,
            encoded.len()
        );
        assert_eq!(GetResponse::decode(&data[5..]).unwrap(), message);
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn other_replies_pass_through_untouched() {
        let response = http::Response::new(Body::new(OneMessage::new(b"tonic's own")));
        let (data, _) = collect(through_layer(response).await.into_body()).await;
        assert_eq!(&data[5..], b"tonic's own");
    }
}
