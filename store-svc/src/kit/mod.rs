//! Server plumbing that every gRPC server of this project shares: deadlines taken from
//! `grpc-timeout`, health and reflection, signal-driven shutdown, logging and metrics, TLS,
//! and replies sent pre-encoded.
//!
//! It lives in store-svc's library because store-svc is the first server; session-svc depends
//! on it so both servers behave the same at the edges (same deadline rule, same drain order).

pub mod claim;
pub mod cli;
pub mod conn;
pub mod deadline;
pub mod duration;
pub mod echo;
pub mod grpc;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod wire;
