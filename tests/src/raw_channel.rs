//! A gRPC connection that sends `grpc-timeout` but never enforces it itself.
//!
//! tonic's `Channel` races every call against its own `grpc-timeout` and, when its timer wins,
//! reports CANCELLED "Timeout expired" without waiting for the server. Since the server's
//! timer starts later than the client's, the client always wins, and a test could never see
//! what the server answers. Over this bare HTTP/2 connection the answer is the server's own.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use anyhow::Context as _;
use hyper::{body::Incoming, client::conn::http2::SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::store::v1::store_service_client::StoreServiceClient;
use tonic::body::Body;

/// One plain HTTP/2 connection, usable as the transport of any generated tonic client.
#[derive(Clone, Debug)]
pub struct RawChannel {
    /// hyper's handle on the connection; clones share it.
    sender: SendRequest<Body>,
}

impl RawChannel {
    /// Opens a prior-knowledge HTTP/2 connection to `addr`; the connection task runs on the
    /// current tokio runtime until the server or every handle goes away.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }
}

impl tower::Service<http::Request<Body>> for RawChannel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}

/// A store client whose deadlines only the server enforces.
pub async fn raw_store_client(addr: SocketAddr) -> anyhow::Result<StoreServiceClient<RawChannel>> {
    let origin = format!("http://{addr}")
        .parse()
        .context("building the origin URI")?;
    Ok(StoreServiceClient::with_origin(
        RawChannel::connect(addr).await?,
        origin,
    ))
}
