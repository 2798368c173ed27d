//! The one trait an entity kind implements to run on the runtime.
//!
//! The runtime knows nothing about carts or lists: it loads bytes, asks the entity to decode
//! them, hands it one command at a time, persists the state the entity changed, and only then
//! answers. The entity's `handle` is pure (no I/O, no clock: time comes in [`Ctx`]), so the
//! whole behaviour of a kind is testable without a runtime.
//!
//! `handle` changes the state in place rather than returning a new one: no copy of the state
//! per command. That is safe because a handler that fails leaves the state as it was (the
//! domain's contract), and a write that fails, times out or panics makes the actor discard
//! its in-memory state and reload the durable one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::Error;

/// What handling one command produced.
#[derive(Debug)]
pub enum Step<R> {
    /// Nothing changed: answer at once, no write.
    Read(R),
    /// The state changed in place: persist it (after `side_writes`), then answer `reply`.
    Write {
        /// The answer, sent once the state is durable.
        reply: R,
        /// Records in other namespaces written first, create-if-absent (e.g. an order).
        side_writes: Vec<SideWrite>,
    },
}

/// A create-if-absent write of another record, done before the state write. Its key must be
/// derived from the command so that a retry writes the same record (an existing record with
/// that key counts as written), which makes the pair safe without a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideWrite {
    /// Store namespace, e.g. `orders`.
    pub namespace: String,
    /// Store key, derived deterministically from the command.
    pub key: String,
    /// The record's bytes.
    pub value: Vec<u8>,
}

/// What a handler may know about the world besides the state: the time and the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Wall-clock time of handling, in milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// The store version of the current state (0: none yet). A write makes `version + 1`.
    pub version: u64,
}

impl Ctx {
    /// The context of handling a command now, against state at `version`.
    pub fn now(version: u64) -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            now_ms: i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            version,
        }
    }
}

/// A kind of actor: carts, to-do lists, stock per sku.
pub trait Entity: Send + Sync + 'static {
    /// Lowercase name: the registry's kind, the store namespace of the state, admin output.
    const KIND: &'static str;
    /// The request field that carries the key (`key` for carts, `list` for lists), for errors.
    const KEY_FIELD: &'static str;
    /// What one actor owns.
    type State: Send + Sync + 'static;
    /// The messages it handles.
    type Command: Command;
    /// Its answers; encoded to remember the replies of idempotent requests.
    type Reply: Send + Sync + 'static;
    /// What watchers receive after every change.
    type Snapshot: Clone + Send + Sync + 'static;

    /// Decodes the bytes `encode_state` stored.
    fn decode_state(&self, bytes: &[u8]) -> Result<Self::State, String>;
    /// Encodes the state for the store (protobuf: readable from any language).
    fn encode_state(&self, state: &Self::State) -> Vec<u8>;
    /// Encodes the state just written by the command that answered `reply`. A kind whose
    /// reply already is its stored form (a cart's `Session`) encodes the reply instead of
    /// converting the state a second time.
    fn encode_written(&self, state: &Self::State, _reply: &Self::Reply) -> Vec<u8> {
        self.encode_state(state)
    }
    /// Hands back `reply` once `written`, the bytes [`Entity::encode_written`] produced for
    /// it, are durable. A kind whose reply is its stored form keeps them in the reply, so that
    /// the server sends them as they are instead of encoding the reply a second time.
    fn keep_written(&self, reply: Self::Reply, _written: Bytes) -> Self::Reply {
        reply
    }
    /// Encodes a reply, so that a retried request id can be answered after a restart.
    fn encode_reply(&self, reply: &Self::Reply) -> Vec<u8>;
    /// Decodes a reply stored by `encode_reply`.
    fn decode_reply(&self, bytes: &[u8]) -> Result<Self::Reply, String>;

    /// The watchers' view of `state` at `version`.
    fn snapshot(&self, state: &Self::State, version: u64) -> Self::Snapshot;
    /// True when no further change can follow (a checked-out cart): watch streams end there.
    fn is_final(&self, snapshot: &Self::Snapshot) -> bool;
    /// The error for a request that needs state at a key that has none (watching, reading).
    fn missing(&self, key: &str) -> Error;

    /// Handles one command for `key`, changing its state in place (`None`: no state yet).
    /// Pure: no I/O, no clock. An `Err` is answered as is and must leave `state` unchanged;
    /// [`Step::Write`] says the state changed and must be persisted before the reply.
    fn handle(
        &self,
        key: &str,
        state: &mut Option<Self::State>,
        command: Self::Command,
        ctx: Ctx,
    ) -> Result<Step<Self::Reply>, Error>;
}

/// A message to an actor.
pub trait Command: Send + 'static {
    /// The caller's idempotency key, if it sent one: a retry with the same id is answered
    /// with the first reply and applied once.
    fn request_id(&self) -> Option<&str> {
        None
    }

    /// A name for logs and metrics ("add_item").
    fn name(&self) -> &'static str;
}
