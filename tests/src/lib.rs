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
//! - `store_client`: one-line Get / Put / Delete / Scan calls.
//! - `raw_channel`: [`raw_channel::RawChannel`], HTTP/2 without tonic's client-side deadline,
//!   so a test sees the server's own answer to an expired request.
//! - `status`: reading statuses per the error contract (BadRequest fields, codes, numbers).
//! - `ledger`: [`KeyHistory`], what a test knows about its writes, and the durability check.
//! - `writers`: concurrent writers that record every acknowledged write.
//! - `grpcurl`: running grpcurl, failing loudly when it is not installed.

pub mod grpcurl;
pub mod ledger;
pub mod load;
pub mod process;
pub mod raw_channel;
pub mod status;
pub mod store;
pub mod store_client;
pub mod writers;

pub use ledger::KeyHistory;
pub use process::{ServiceCommand, ServiceProcess, Signal, locate_binary};
pub use store::{
    StoreClient, StoreOptions, StoreProcess, spawn_store, spawn_store_and_client, spawn_store_with,
};
