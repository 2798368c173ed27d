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
//! - [`registry`]: sharded maps in LRU order, the cross-kind live count and watcher cap,
//!   eviction at `max_actors` from the fronts of the shards, per-kind counters.
//! - [`store`]: the store-svc client, deadline-bounded, and its in-memory stand-in.
//! - [`batcher`]: client-side group commit: concurrent actors' writes share one `BatchWrite`.
//! - [`panic`]: turning a handler's panic into a crash of one actor.

pub mod actor;
pub mod batcher;
pub mod entity;
pub mod kind;
pub mod latency;
pub mod link;
pub mod mailbox;
pub mod panic;
pub mod registry;
pub mod store;

use std::time::Duration;

pub use entity::{
    After, Child, Children, Ctx, Effect, Entity, Env, RecordWrite, Remind, Replay, Request,
    RequestId, Step, escape_key, unescape_key,
};

/// Request ids that start with this are a background job's (`job/<job id>/<index>`): actors
/// remember them apart from their clients' ids (at most half as many, for
/// [`JOB_REQUEST_TTL`]), and clients may not send them.
pub const JOB_REQUEST_PREFIX: &str = "job/";

/// How long an actor remembers a job's request id: long enough for a job to resume after an
/// outage of a day and still recognise what it sent before.
pub const JOB_REQUEST_TTL: Duration = Duration::from_secs(24 * 3600);

/// The store namespace of the durable reminder index: one record per pending reminder, keyed
/// `<kind>/<20-digit due time in ms>/<escaped actor key>` so a scan finds the earliest first.
pub const REMINDERS_NAMESPACE: &str = "reminders";

/// The index key of the reminder of `kind/key` due at `due_ms`.
pub fn reminder_key(kind: &str, due_ms: i64, key: &str) -> String {
    format!("{kind}/{:020}/{}", due_ms.max(0), escape_key(key))
}
pub use kind::{Kind, Subscription, Timer, WatchSlot, validate_key};
pub use registry::{ActorDetail, ActorInfo, ActorStatus, Actors, Counts, Described};
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
    /// Watch streams open at once on one key; more are refused RESOURCE_EXHAUSTED.
    pub max_watchers_per_key: usize,
    /// How long a watch stream lasts at most; it then ends UNAVAILABLE, asking the client
    /// to re-subscribe (which also re-checks the caps and reactivates a passivated key).
    pub watch_max_lifetime: Duration,
}

impl Settings {
    /// Back-off suggested to a refused watcher: streams stay open for minutes, so a slot
    /// rarely frees within the `retry_after` of a full mailbox.
    pub fn watcher_retry_after(&self) -> Duration {
        self.retry_after.max(Duration::from_secs(1))
    }
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
            max_watchers_per_key: 64,
            watch_max_lifetime: Duration::from_secs(30 * 60),
        }
    }
}

#[cfg(test)]
mod tests;
