//! Server plumbing that every gRPC server of this project shares: deadlines taken from
//! `grpc-timeout`, health and reflection, signal-driven shutdown, logging and metrics, TLS,
//! and replies sent pre-encoded.
//!
//! Both servers use it, so they behave the same at the edges (same deadline rule, same drain
//! order, same metrics and logs), and session-svc links none of store-svc's storage code.

pub mod claim;
pub mod cli;
pub mod conn;
pub mod deadline;
pub mod duration;
pub mod echo;
pub mod error_info;
pub mod forward;
pub mod grpc;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod wire;
