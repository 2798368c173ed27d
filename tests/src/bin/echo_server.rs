//! `echo_server`: the floor a gRPC read cannot beat on this machine. A bare tonic server for
//! `session.v1.CartService` whose `GetSession` answers a canned `Session` and does nothing else:
//! no actor, no registry, no deadline layer, no health or reflection. `loadgen session-get`
//! drives it and session-svc with the same clients, so the ratio of the two is what session-svc
//! costs on top of tonic itself.
//!
//! The canned answer comes from the caller (`--session`, a base64 `Session`), so loadgen can hand
//! it a real session fetched from session-svc: same key, items and log, same bytes on the wire.
//! Every other RPC is UNIMPLEMENTED. Like every server here it prints `listening on ADDR` when
//! ready and exits on SIGTERM or SIGINT.

use std::{net::SocketAddr, process::ExitCode};

use base64::Engine;
use clap::Parser;
use kit::{cli, telemetry};
use prost::Message;
use proto::session::v1::{
    AddItemRequest, ApplyDiscountRequest, CheckoutRequest, EndSessionRequest, GetSessionRequest,
    ListSessionEventsRequest, ListSessionEventsResponse, Order, RemoveItemRequest, Session,
    StartSessionRequest, WatchSessionRequest,
    cart_service_server::{CartService, CartServiceServer},
};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

/// A CartService that only answers GetSession, always with the same session.
#[derive(Debug, Parser)]
#[command(name = "echo_server", about)]
struct Config {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The `Session` every GetSession returns: protobuf-encoded, then base64 (standard alphabet).
    #[arg(long, value_parser = parse_session)]
    session: Session,
}

/// Decodes `--session`.
fn parse_session(text: &str) -> Result<Session, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|error| format!("not base64: {error}"))?;
    Session::decode(bytes.as_slice()).map_err(|error| format!("not a session.v1.Session: {error}"))
}

/// The service: one canned reply.
struct Echo {
    /// Cloned into every GetSession answer, as session-svc clones its actor's snapshot.
    session: Session,
}

#[tonic::async_trait]
impl CartService for Echo {
    async fn get_session(
        &self,
        _request: Request<GetSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Ok(Response::new(self.session.clone()))
    }

    async fn start_session(
        &self,
        _request: Request<StartSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn add_item(
        &self,
        _request: Request<AddItemRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn remove_item(
        &self,
        _request: Request<RemoveItemRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn apply_discount(
        &self,
        _request: Request<ApplyDiscountRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn checkout(
        &self,
        _request: Request<CheckoutRequest>,
    ) -> Result<Response<Order>, Status> {
        Err(unimplemented())
    }

    async fn end_session(
        &self,
        _request: Request<EndSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn list_session_events(
        &self,
        _request: Request<ListSessionEventsRequest>,
    ) -> Result<Response<ListSessionEventsResponse>, Status> {
        Err(unimplemented())
    }

    type WatchSessionStream = tokio_stream::Empty<Result<Session, Status>>;

    async fn watch_session(
        &self,
        _request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        Err(unimplemented())
    }
}

fn unimplemented() -> Status {
    Status::unimplemented("the echo server answers GetSession only")
}

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = match cli::parse() {
        Ok(config) => config,
        Err(code) => return code,
    };
    telemetry::init(telemetry::LogFormat::Text);
    let (listener, shutdown) = match cli::bind_and_announce(config.listen).await {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    // The listener is ours, so Server::tcp_nodelay would not reach it: set TCP_NODELAY on the
    // incoming stream, exactly as session-svc does, or replies would wait on delayed ACKs.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = Server::builder()
        .add_service(CartServiceServer::new(Echo {
            session: config.session,
        }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    cli::exit_code(served.map_err(anyhow::Error::from))
}
