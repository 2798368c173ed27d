//! One gRPC call over a bare HTTP/2 connection, answered with the status exactly as sent.
//!
//! A gRPC client hands a test the decoded status, never the bytes the server put on the wire,
//! so it cannot tell a 200-byte `grpc-message` from a 20 MB one until a client refuses the
//! latter. [`call_measured`] sends one request message to any method (unary or streaming: a
//! server-streaming call takes one message too), reads the whole reply, and returns the status
//! fields wherever they came (the trailers, or the headers of a trailers-only reply) with their
//! encoded sizes.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::Status;

/// How long one measured call may take, a hang guard.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A reply as it was on the wire.
#[derive(Debug)]
pub struct MeasuredReply {
    /// The status the reply carried, decoded as a client decodes it.
    pub status: Status,
    /// Encoded bytes of `grpc-message` plus `grpc-status-details-bin`, as sent.
    pub status_bytes: usize,
    /// The response messages' bytes, frames concatenated (gRPC 5-byte prefixes included).
    pub body: Bytes,
}

impl MeasuredReply {
    /// The first response message, without its gRPC frame prefix (empty if none was sent).
    pub fn first_message(&self) -> &[u8] {
        if self.body.len() < 5 {
            return &[];
        }
        let len = u32::from_be_bytes([self.body[1], self.body[2], self.body[3], self.body[4]]);
        let end = (5 + len as usize).min(self.body.len());
        &self.body[5..end]
    }
}

/// Sends `message` (an encoded request) to the method at `path` on the plaintext server at
/// `addr` with extra `metadata`, on a new connection, and returns the reply as sent.
pub async fn call_measured(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
    metadata: &[(&str, &str)],
) -> anyhow::Result<MeasuredReply> {
    tokio::time::timeout(CALL_TIMEOUT, call(addr, path, message, metadata))
        .await
        .with_context(|| format!("{path} did not answer within {CALL_TIMEOUT:?}"))?
}

async fn call(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
    metadata: &[(&str, &str)],
) -> anyhow::Result<MeasuredReply> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .context("HTTP/2 handshake")?;
    let driver = tokio::spawn(connection);

    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    frame.extend_from_slice(message);
    let mut request = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(frame)))?;

    let response = sender.send_request(request).await.context("sending")?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.context("reading the reply")?;
    driver.abort();
    let mut status_fields = parts.headers;
    if let Some(trailers) = collected.trailers() {
        status_fields.extend(trailers.clone());
    }
    let body = collected.to_bytes();
    let Some(status) = Status::from_header_map(&status_fields) else {
        bail!(
            "{path}: the reply carries no grpc-status (HTTP {})",
            parts.status
        );
    };
    Ok(MeasuredReply {
        status_bytes: encoded_len(&status_fields, "grpc-message")
            + encoded_len(&status_fields, "grpc-status-details-bin"),
        status,
        body,
    })
}

fn encoded_len(headers: &HeaderMap, name: &str) -> usize {
    headers.get(name).map_or(0, |value| value.len())
}
