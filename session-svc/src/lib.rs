//! session-svc: one live, supervised, persistent actor per `(kind, key)`, over gRPC.
//!
//! Erlang/OTP's "one process per session" as a service: a shopping session or a to-do list
//! is a tokio task that owns its state and handles one message at a time. A sharded registry
//! finds or activates it; its state loads from store-svc inside its own task; every change is
//! written through to store-svc before the caller hears OK; a crash restarts it from that
//! durable state; idle actors passivate and come back on demand; bounded mailboxes and
//! end-to-end deadlines give backpressure instead of unbounded queues.
//!
//! # Layout
//!
//! - [`runtime`]: the generic actor runtime (registry, mailbox, supervision, store client).
//! - [`domain`]: pure cart and to-do logic, no I/O.
//! - [`cart`], [`todo`]: each kind's entity (domain on the runtime) and gRPC service.
//! - [`admin`]: the observer API (list, inspect, kill actors).
//! - [`jobs`]: supervised background jobs (imports), persisted and resumed.
//! - [`api`]: edge helpers shared by the services (request ids, watch streams).
//! - [`config`], [`error`], [`metrics`], [`server`]: settings, the error contract, `/metrics`,
//!   and the assembly with its drain.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod cart;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod inventory;
pub mod jobs;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod sweeper;
pub mod todo;

pub use server::SessionServer;

use runtime::Entity as _;

/// Every store namespace session-svc reads or writes. store-svc serves only the namespaces it
/// is configured with, and its default (`--namespaces`) is this list; the `tests` crate checks
/// that the two agree, so a namespace added here must be added there too.
pub const STORE_NAMESPACES: &[&str] = &[
    cart::CartEntity::KIND,
    cart::entity::EVENTS_NAMESPACE,
    cart::entity::ORDERS_NAMESPACE,
    todo::TodoEntity::KIND,
    todo::entity::ENTRIES_NAMESPACE,
    inventory::SkuEntity::KIND,
    inventory::entity::RESERVATIONS_NAMESPACE,
    runtime::REMINDERS_NAMESPACE,
    sweeper::ARCHIVE_NAMESPACE,
    sweeper::SWEEPER_NAMESPACE,
    jobs::JOBS_NAMESPACE,
    jobs::JOB_ENTRIES_NAMESPACE,
    cluster::NAMESPACE,
];
