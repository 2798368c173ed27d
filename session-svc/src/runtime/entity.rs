//! The traits an entity kind implements to run on the runtime: [`Entity`] for its state, and
//! [`Request`] for each kind of message, with its own reply type.
//!
//! The runtime knows nothing about carts or lists: it loads bytes, asks the entity to decode
//! them, hands the actor one request at a time, commits the state the request changed with
//! the records it wrote, and only then answers. A request's `handle` is pure (no I/O, no
//! clock: time comes in [`Ctx`]), so the whole behaviour of a kind is testable without a
//! runtime. Each request names its reply type, so a call is typed from the gRPC method to the
//! handler and back: no method can receive a reply of the wrong kind.
//!
//! `handle` changes the state in place rather than returning a new one: no copy of the state
//! per request. That is safe because a handler that fails leaves the state as it was (the
//! domain's contract), and a write that fails, times out or panics makes the actor discard
//! its in-memory state and reload the durable one.

use std::{
    pin::Pin,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use kit::deadline::Deadline;

use super::Store;
use crate::error::Error;

/// Work an actor does with others around its own write (a cart reserving stock at its sku's
/// actor), run inside the actor's task: its mailbox waits, like an OTP `gen_server:call`.
/// Calls go one way between kinds (cart → sku, never back), so no two actors can wait on
/// each other.
pub type Effect<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// Work that follows a durable write before its reply (releasing stock a cart let go of),
/// given the request's deadline. It cannot undo the write: a failure is logged, and whatever
/// it leaves undone is the sweeper's to reconcile.
pub struct After(pub Box<dyn FnOnce(Deadline) -> Effect<'static> + Send>);

impl std::fmt::Debug for After {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("After(..)")
    }
}

/// What a request's [`Request::prepare`] may use: the actor's current state, and the store
/// for reads (writes go through the actor's commit; only a request that says so with
/// [`Request::PREPARE_WRITES`] writes here).
pub struct Env<'a, E: Entity> {
    /// The kind.
    pub entity: &'a E,
    /// The actor's key.
    pub key: &'a str,
    /// Its state (`None`: no state yet).
    pub state: Option<&'a E::State>,
    /// The store, for reading records the state does not hold.
    pub store: &'a Store,
    /// The request's deadline: calls to other actors must end before it.
    pub deadline: Deadline,
}

/// What handling one command produced.
#[derive(Debug)]
pub enum Step<R> {
    /// Nothing changed: answer at once, no write.
    Read(R),
    /// The state changed in place: commit it with `records`, then answer `reply`. A state
    /// the handler set to `None` deletes the actor's record (archived, or never to return).
    Write {
        /// The answer, sent once the commit is durable.
        reply: R,
        /// Other records written in the same commit as the state, all or nothing (an event,
        /// an order, a list entry).
        records: Vec<RecordWrite>,
        /// What a retry of this request needs to find its result in the state later (the id
        /// of the entry it added); 0 when the state alone answers it.
        outcome: u64,
        /// What to do once the commit is durable, before answering.
        after: Option<After>,
    },
}

impl<R> Step<R> {
    /// A write of the state alone.
    pub fn write(reply: R) -> Self {
        Self::Write {
            reply,
            records: Vec::new(),
            outcome: 0,
            after: None,
        }
    }
}

/// A write of another record than the actor's own, committed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWrite {
    /// Store namespace, e.g. `cart_events`.
    pub namespace: &'static str,
    /// Store key, e.g. `<escaped cart key>/00000000000000000042`.
    pub key: String,
    /// The bytes to store, or `None` to delete the record.
    pub value: Option<Vec<u8>>,
    /// The version the record is at now (0: absent): the commit fails if it is not.
    pub expected_version: u64,
}

/// How to answer a retried request, whose first attempt was applied.
#[derive(Debug)]
pub enum Replay<R> {
    /// From the current state.
    Reply(R),
    /// From a record the first attempt wrote (a checkout's order).
    Fetch {
        /// Its namespace.
        namespace: &'static str,
        /// Its key.
        key: String,
        /// How its bytes become the reply.
        decode: fn(&[u8]) -> Result<R, String>,
    },
}

/// Records of another namespace that belong to one actor's state (a list's entries), loaded
/// with it: every record whose key starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Children {
    /// Their namespace.
    pub namespace: &'static str,
    /// The key prefix they share, which no other actor's children have.
    pub prefix: String,
}

/// A loaded child record: its key, bytes and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The full store key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Its store version.
    pub version: u64,
}

/// Escapes `key` for use inside another record's key, so that `<escaped>/...` prefixes of two
/// keys never overlap: `%` and `/` are percent-encoded, nothing else changes.
pub fn escape_key(key: &str) -> String {
    let mut escaped = String::with_capacity(key.len() + 2);
    for c in key.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Undoes [`escape_key`]; `None` for text it could not have produced.
pub fn unescape_key(escaped: &str) -> Option<String> {
    let mut key = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('%') {
        key.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("%25") => key.push('%'),
            Some("%2F") => key.push('/'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    key.push_str(rest);
    Some(key)
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

/// A kind of actor: carts, to-do lists, stock per sku. What its actors can be asked is a set
/// of [`Request`] types, each with its own reply type.
pub trait Entity: Send + Sync + 'static {
    /// Lowercase name: the registry's kind, the store namespace of the state, admin output.
    const KIND: &'static str;
    /// The request field that carries the key (`key` for carts, `list` for lists), for errors.
    const KEY_FIELD: &'static str;
    /// What one actor owns.
    type State: Send + Sync + 'static;
    /// What watchers receive after every change.
    type Snapshot: Clone + Send + Sync + 'static;

    /// Decodes the bytes `encode_state` stored.
    fn decode_state(&self, bytes: &[u8]) -> Result<Self::State, String>;
    /// Encodes the state for the store (protobuf: readable from any language).
    fn encode_state(&self, state: &Self::State) -> Vec<u8>;
    /// The records of other namespaces that belong to `key`'s state, if the kind has any.
    fn children(&self, _key: &str) -> Option<Children> {
        None
    }
    /// Adds the loaded children to the decoded state.
    fn attach_children(
        &self,
        _state: &mut Self::State,
        _children: Vec<Child>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// The watchers' view of `state` at `version`.
    fn snapshot(&self, state: &Self::State, version: u64) -> Self::Snapshot;
    /// True when no further change can follow (a checked-out cart): watch streams end there.
    fn is_final(&self, snapshot: &Self::Snapshot) -> bool;
    /// The error for a request that needs state at a key that has none (watching, reading).
    fn missing(&self, key: &str) -> Error;

    /// Whether an actor whose key has no state stays live like any other (until idle or
    /// evicted). By default it stops after its message: unknown keys, which anyone can send,
    /// must not fill the registry. A kind whose keys form a small catalog (skus) keeps them,
    /// so that "no state" is answered from memory rather than by a store read every time.
    const KEEP_WITHOUT_STATE: bool = false;

    /// Whether this kind's actors use durable reminders ([`Entity::reminder_due`]): only then
    /// does the runtime watch the reminder index for it.
    const REMINDERS: bool = false;

    /// When `state` wants its reminder, in milliseconds since the Unix epoch (`None`: never).
    /// The runtime keeps one indexed reminder per actor and moves it only earlier on a write
    /// (a later wish is met when the indexed one fires and finds nothing due yet), so a
    /// reminder that moves with every change costs no extra write per change.
    fn reminder_due(&self, _state: &Self::State) -> Option<i64> {
        None
    }

    /// Handles a reminder that fired for `key` at `ctx.now_ms`: changes `state` if something
    /// is due (an expiry), appending the records that change writes to `records`, and
    /// returning what must follow the commit (releasing what an expired cart held). Called
    /// at least once per due reminder, possibly more: it must be idempotent.
    fn on_reminder(
        &self,
        _key: &str,
        _state: &mut Self::State,
        _ctx: Ctx,
        _records: &mut Vec<RecordWrite>,
    ) -> Result<Option<After>, Error> {
        Ok(None)
    }
}

/// One kind of message an actor of `E` handles, with the type of its answer: a call is typed
/// end to end, so no handler can answer with the wrong kind of reply.
pub trait Request<E: Entity>: Sized + Send + 'static {
    /// What the actor answers.
    type Reply: Send + 'static;

    /// A name for logs and for the idempotency memory (`add_item`).
    fn name(&self) -> &'static str;

    /// The caller's idempotency key, if it sent one: a retry with the same id is applied once
    /// and answered from the current state by [`Request::replay`].
    fn request_id(&self) -> Option<&RequestId> {
        None
    }

    /// The due time of the durable reminder this message delivers, if it is one
    /// ([`Remind`]): the runtime then retires that reminder in the same commit.
    fn fired_reminder(&self) -> Option<i64> {
        None
    }

    /// Asks other actors, or reads the store, before [`Request::handle`] runs, keeping what
    /// it learns in `self` (a cart reserving the units an AddItem would hold). Runs in the
    /// actor's task after the idempotency check, so a retry never repeats it. An `Err` is the
    /// answer: the handler does not run and nothing is written.
    fn prepare<'a>(&'a mut self, _env: Env<'a, E>) -> Option<Effect<'a>> {
        None
    }

    /// True for a request whose `prepare` writes to the store itself (archiving a list,
    /// which outgrows one commit): if it fails, the in-memory state may no longer match the
    /// store, so the runtime reloads it before the next message.
    const PREPARE_WRITES: bool = false;

    /// Handles the request for `key`, changing its state in place (`None`: no state yet).
    /// Pure: no I/O, no clock. An `Err` is answered as is and must leave `state` unchanged;
    /// [`Step::Write`] says the state changed and must be persisted before the reply.
    fn handle(
        self,
        entity: &E,
        key: &str,
        state: &mut Option<E::State>,
        ctx: Ctx,
    ) -> Result<Step<Self::Reply>, Error>;

    /// Answers this request, a retry of one already applied (same request id, RPC and fields),
    /// from the current state without applying it again. `outcome` is what [`Step::Write`]
    /// said when it was applied. Only requests that carry a request id are ever replayed.
    fn replay(
        self,
        entity: &E,
        key: &str,
        state: Option<&E::State>,
        version: u64,
        outcome: u64,
    ) -> Result<Replay<Self::Reply>, Error> {
        let _ = (entity, state, version, outcome);
        Err(Error::Corrupt(format!(
            "{} of {} was replayed but carries no request id",
            self.name(),
            kit::echo::echo(key)
        )))
    }

    /// Encodes the state just written by this request, which answered `reply`. A request
    /// whose reply already is the stored form (a cart's `Session`) encodes the reply instead
    /// of converting the state a second time.
    fn encode_written(entity: &E, state: &E::State, _reply: &Self::Reply) -> Vec<u8> {
        entity.encode_state(state)
    }

    /// Hands back `reply` once `written`, the bytes [`Request::encode_written`] produced, are
    /// durable. A reply that is the stored form keeps them, so that the server sends them as
    /// they are instead of encoding the reply a second time.
    fn keep_written(reply: Self::Reply, _written: Bytes) -> Self::Reply {
        reply
    }
}

/// A request id and what identifies the request it was first sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// The client's idempotency key.
    pub id: String,
    /// A stable 64-bit hash of the request's fields other than its id (FNV-1a of its
    /// protobuf encoding): a reuse with other fields is told apart from a retry.
    pub fingerprint: u64,
}

/// A durable reminder delivered to its actor: the entity's [`Entity::on_reminder`] runs, and
/// the runtime retires the fired reminder (and indexes the next one the state wants) in the
/// same commit. Sent by the runtime's reminder task, never by clients.
#[derive(Debug, Clone, Copy)]
pub struct Remind {
    /// When the fired reminder was due.
    pub due_ms: i64,
}

impl<E: Entity> Request<E> for Remind {
    type Reply = ();

    fn name(&self) -> &'static str {
        "reminder"
    }

    fn fired_reminder(&self) -> Option<i64> {
        Some(self.due_ms)
    }

    fn handle(
        self,
        entity: &E,
        key: &str,
        state: &mut Option<E::State>,
        ctx: Ctx,
    ) -> Result<Step<()>, Error> {
        // A write even when nothing was due, or the actor has no state left (it was
        // archived): the fired reminder is retired, and the next one the state wants is
        // indexed, in the same commit.
        let Some(state) = state else {
            return Ok(Step::write(()));
        };
        let mut records = Vec::new();
        let after = entity.on_reminder(key, state, ctx, &mut records)?;
        Ok(Step::Write {
            reply: (),
            records,
            outcome: 0,
            after,
        })
    }
}
