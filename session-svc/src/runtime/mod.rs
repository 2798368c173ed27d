//! The actor runtime: generic, it knows nothing about carts or lists.
//!
//! An entity kind implements [`Entity`], and [`Request`] for each message it takes; a [`Kind`]
//! runs one actor per key of it. Actors are
//! found or activated through a sharded registry, load their state from store-svc inside their
//! own task, handle one message at a time from a bounded mailbox, write through to the store
//! before answering, passivate when idle, and restart from durable state when they crash.
//!
//! # Layout
//!
//! - [`entity`]: the traits a kind implements, and what its pure handlers return.
//! - [`kind`]: one kind's registry: get-or-activate, call, cast, watch.
//! - [`actor`]: the task per key: load, handle, persist, publish, passivate, restart.
//! - [`mailbox`]: the bounded mailbox with an atomic close-if-idle.
//! - [`registry`]: sharded maps, the cross-kind live count, LRU eviction at `max_actors`.
//! - [`store`]: the store-svc client, deadline-bounded, and its in-memory stand-in.
//! - [`batcher`]: client-side group commit: concurrent actors' writes share one `BatchWrite`.
//! - [`panic`]: turning a handler's panic into a crash of one actor.

pub mod actor;
pub mod batcher;
pub mod entity;
pub mod kind;
pub mod link;
pub mod mailbox;
pub mod panic;
pub mod registry;
pub mod store;

use std::time::Duration;

pub use entity::{
    Child, Children, Ctx, Entity, RecordWrite, Replay, Request, RequestId, Step, escape_key,
};
pub use kind::{Kind, validate_key};
pub use registry::{ActorInfo, ActorStatus, Actors};
pub use store::Store;

/// How a kind's actors behave under load, idleness and crashes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages that may wait per actor; beyond it, RESOURCE_EXHAUSTED.
    pub mailbox_capacity: usize,
    /// Idle time after which an actor passivates (its state is already durable).
    pub idle_timeout: Duration,
    /// Crashes tolerated within `restart_window` before the key is quarantined.
    pub max_restarts: u32,
    /// The window over which crashes are counted.
    pub restart_window: Duration,
    /// How long a crash-looping key is refused.
    pub quarantine: Duration,
    /// Request ids remembered per actor, at most.
    pub recent_requests: usize,
    /// How long a request id is remembered.
    pub request_id_ttl: Duration,
    /// Back-off suggested to clients refused for load (RetryInfo).
    pub retry_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mailbox_capacity: 64,
            idle_timeout: Duration::from_secs(30 * 60),
            max_restarts: 3,
            restart_window: Duration::from_secs(5),
            quarantine: Duration::from_secs(10),
            recent_requests: 64,
            request_id_ttl: Duration::from_secs(10 * 60),
            retry_after: Duration::from_millis(100),
        }
    }
}

#[cfg(test)]
mod tests;
