//! session-svc: one live, supervised, persistent actor per `(kind, key)`, over gRPC.

#![forbid(unsafe_code)]

pub mod error;
pub mod runtime;
