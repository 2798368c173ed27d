//! End-to-end harness: start the project's real binaries on free loopback ports with temp data
//! directories, talk to them over gRPC, kill or stop them, and check what they promised.
//!
//! Tests in `tests/` read as specifications and keep their helpers here, in one place, so the
//! load generator and later suites (session-svc) reuse the same process handling and checks.
//!
//! # Layout
//!
//! - `process`: any service binary that announces `listening on ADDR` on stdout:
//!   [`ServiceProcess`] (spawn, signal, SIGKILL, wait, RSS, stderr log) and [`locate_binary`].
//! - `store`: store-svc specifics: [`StoreOptions`] → flags, [`StoreProcess`], [`spawn_store`].
//! - `store_client`: one-line Get / Put / Delete / Scan / Commit calls, and Commit's mutations.
//! - `raw_channel`: [`raw_channel::RawChannel`], HTTP/2 without tonic's client-side deadline,
//!   so a test sees the server's own answer to an expired request.
//! - `raw_bytes`: [`raw_bytes::call_raw`], any unary method called with bytes that need not be
//!   protobuf (through [`raw_bytes::RawBytesCodec`]), to test what a server makes of garbage.
//! - `trailers`: [`trailers::call_measured`], one call over bare HTTP/2 whose status comes
//!   back with its encoded size, to check that errors stay small whatever the input.
//! - `status`: reading statuses per the error contract (BadRequest fields, ErrorInfo version
//!   conflicts, codes, numbers).
//! - `ledger`: [`KeyHistory`], what a test knows about its writes, and the durability check.
//! - `writers`: concurrent writers that record every acknowledged write.
//! - `clients`: [`clients::ClientStack`], the servers for the client suites in other
//!   languages (`tests/clients/`), run as subprocesses; [`clients::Frozen`], a SIGSTOPped
//!   store.
//! - `grpcurl`: running grpcurl, failing loudly when it is not installed.
//! - `session`: session-svc specifics: [`SessionOptions`] → flags, [`SessionProcess`] and its
//!   cart / to-do / admin clients, [`spawn_session_stack`] (a store plus a session-svc), and
//!   [`spawn_store_at`] to bring a store back on the port its clients know.
//! - `sessionctl`: [`sessionctl::Sessionctl`], the `sessionctl` binary run against a test
//!   session-svc, its exit code, stdout and stderr collected within a time limit.
//! - `session_client`: one-line cart, to-do and admin calls, and [`session_client::poll_until`].
//! - `cart_writers`: [`cart_writers::CartBurst`], concurrent AddItems that record every
//!   acknowledgement, and the check that none was lost after a kill or shutdown.
//! - `proxy`: [`DelayProxy`], a TCP proxy that delays every chunk: a slow store on demand.
//! - `lazyfs`: [`lazyfs::LazyFs`], a LazyFS mount whose unsynced bytes a test can drop: a
//!   simulated power loss, which catches a missing fsync that SIGKILL alone cannot.
//! - `postgres`: [`postgres::PostgresServer`], a throwaway PostgreSQL (initdb into a temp dir as
//!   an unprivileged user, a free loopback port) for store-svc's PostgreSQL backend.
//! - `tls`: [`tls::DevCerts`], a development CA and the services' certificates (what the
//!   `devcerts` binary writes), and [`tls::tls_channel`], a client connection over (m)TLS.

pub mod cart_writers;
pub mod clients;
pub mod cluster;
pub mod grpcurl;
pub mod lazyfs;
pub mod ledger;
pub mod load;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod python;
pub mod raw_bytes;
pub mod raw_channel;
pub mod session;
pub mod session_client;
pub mod sessionctl;
pub mod status;
pub mod store;
pub mod store_client;
pub mod tls;
pub mod trailers;
pub mod writers;

pub use ledger::KeyHistory;
pub use process::{ServiceCommand, ServiceProcess, Signal, locate_binary};
pub use proxy::DelayProxy;
pub use session::{
    AdminClient, CartClient, SessionOptions, SessionProcess, SessionStack, TodoClient,
    spawn_session, spawn_session_stack, spawn_store_at,
};
pub use store::{
    StoreClient, StoreOptions, StoreProcess, spawn_store, spawn_store_and_client, spawn_store_with,
};
