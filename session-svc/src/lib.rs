//! session-svc: one live, supervised, persistent actor per `(kind, key)`, over gRPC.

#![forbid(unsafe_code)]

pub mod api;
pub mod cart;
pub mod config;
pub mod domain;
pub mod error;
pub mod runtime;
