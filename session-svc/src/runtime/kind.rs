//! One entity kind's live actors: get-or-activate, calls and casts, watches, and the
//! [`Table`] face that the cross-kind view uses for eviction and admin.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use store_svc::kit::{claim::Claim, deadline::Deadline};
use tokio::{
    sync::{broadcast, oneshot, watch},
    time::Instant,
};

use super::{
    Settings,
    actor::{self, Call, Cast, Job},
    entity::{Entity, Request},
    mailbox::{Mailbox, Refused},
    registry::{ActorInfo, ActorStatus, Actors, Candidate, ShardGuard, Sharded, Table},
    store::Store,
};
use crate::error::Error;

/// Longest actor key, in bytes: a quarter of the store's key limit, so that the key escaped
/// ([`super::escape_key`], up to 3 bytes per byte) plus a record suffix is still a store key.
pub const MAX_KEY_BYTES: usize = 256;

/// A key is 1 to 256 bytes of UTF-8 with no control characters (the store's key rule, within
/// [`MAX_KEY_BYTES`]), so every key an actor accepts can be stored. `field` names it in errors
/// (`key`, `list`).
pub fn validate_key(field: &str, key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes; at most {MAX_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    store_svc::validate::key(key).map_err(|error| match error {
        store_svc::error::Error::InvalidArgument { description, .. } => {
            Error::invalid(field, description)
        }
        other => Error::invalid(field, other.to_string()),
    })
}

/// How long past its deadline a caller waits for a command the actor already started: the
/// actor bounds every step by its own, earlier deadline, so its answer is normally on the way.
const RUNNING_GRACE: Duration = Duration::from_millis(250);

/// The deadline an actor works to for a caller that must answer by `deadline`: a twentieth of
/// the time left earlier (1 to 25 ms), room for the actor's answer to reach the caller.
fn actor_deadline(deadline: Deadline) -> Deadline {
    let remaining = deadline.remaining();
    let margin = (remaining / 20).clamp(Duration::from_millis(1), Duration::from_millis(25));
    Deadline::after(remaining.saturating_sub(margin))
}

/// What a message asks of an actor.
pub(super) enum Msg<E: Entity> {
    /// Handle a request: a call (answered, unless its caller abandoned it first) or a cast.
    Job(Box<dyn Job<E>>),
    /// Subscribe to changes: the current snapshot and a receiver of the next ones.
    Watch(oneshot::Sender<Result<Subscription<E>, Error>>),
    /// Load the state and answer (prewarming; the activation benchmark).
    Activate(oneshot::Sender<Result<(), Error>>),
    /// Crash on purpose (admin KillActor): exercises the real supervision path.
    Crash,
}

/// A watcher's start: the state now and every change after it.
pub type Subscription<E> = (
    <E as Entity>::Snapshot,
    broadcast::Receiver<<E as Entity>::Snapshot>,
);

/// A message with the deadline of the request that sent it.
pub(super) struct Envelope<E: Entity> {
    /// What to do.
    pub msg: Msg<E>,
    /// When the sender stops waiting; past it, the message is dropped unexecuted.
    pub deadline: Deadline,
}

/// One activation of one key: what the registry holds and the actor task shares.
pub(super) struct Cell<E: Entity> {
    /// Tells this activation from a later one of the same key.
    pub id: u64,
    /// Boxed envelopes keep an idle mailbox's retained capacity to a few pointers.
    pub mailbox: Mailbox<Box<Envelope<E>>>,
    /// Tick of the last message, for LRU eviction and idle time.
    pub last_used: AtomicU64,
    /// Crashes of this activation, for the admin API.
    pub restarts: AtomicU32,
    /// Watchers of this key, made on first watch. Here rather than in the actor so that the
    /// sweeper and the evictor can see whether anyone still watches.
    pub watchers: Mutex<Option<broadcast::Sender<E::Snapshot>>>,
}

impl<E: Entity> Cell<E> {
    /// The watchers' sender, locked.
    pub fn watchers(&self) -> MutexGuard<'_, Option<broadcast::Sender<E::Snapshot>>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True while a watch stream is open: such an actor is never passivated or evicted.
    fn watched(&self) -> bool {
        self.watchers()
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Closes the mailbox if the actor is idle and unwatched; true if it did.
    pub(super) fn close_if_idle(&self) -> bool {
        !self.watched() && self.mailbox.close_if_idle()
    }
}

/// A registry entry.
enum Slot<E: Entity> {
    /// A running actor.
    Live(Arc<Cell<E>>),
    /// A crash-looping key, refused until `until`.
    Quarantined {
        /// End of the quarantine.
        until: Instant,
        /// Crashes that led to it.
        restarts: u32,
    },
}

pub(super) struct Inner<E: Entity> {
    /// The kind's behaviour.
    pub entity: E,
    /// Where state is loaded from and written to.
    pub store: Store,
    /// Mailbox size, idle timeout, restart intensity.
    pub settings: Settings,
    /// The cross-kind view: live count, cap, eviction.
    pub actors: Arc<Actors>,
    /// This kind's actors.
    map: Sharded<Slot<E>>,
    /// Set when the server starts draining: watch streams end.
    draining: watch::Sender<bool>,
    /// Set after the drain: no new activations, mailboxes closed.
    closed: AtomicBool,
}

/// The live actors of one kind. Cheap to clone; every clone is the same registry.
pub struct Kind<E: Entity> {
    pub(super) inner: Arc<Inner<E>>,
}

impl<E: Entity> Clone for Kind<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E: Entity> Kind<E> {
    /// A registry for `entity`, sharing `actors` (cap, eviction, admin) with other kinds.
    pub fn new(entity: E, store: Store, settings: Settings, actors: Arc<Actors>) -> Self {
        let kind = Self {
            inner: Arc::new(Inner {
                entity,
                store,
                settings,
                actors: actors.clone(),
                map: Sharded::default(),
                draining: watch::channel(false).0,
                closed: AtomicBool::new(false),
            }),
        };
        actors.register(Arc::new(kind.clone()));
        tokio::spawn(sweep(Arc::downgrade(&kind.inner)));
        kind
    }

    /// Passivates every actor idle for the idle timeout (and unwatched), and forgets ended
    /// quarantines. Returns how many actors stopped.
    pub fn sweep(&self) -> usize {
        let inner = &self.inner;
        let now = inner.actors.now_tick();
        let idle_ms = u64::try_from(inner.settings.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let instant = Instant::now();
        let mut stopped = 0;
        inner.map.retain(|_, slot| match slot {
            Slot::Live(cell) => {
                let idle_for = now.saturating_sub(cell.last_used.load(Ordering::Relaxed));
                if idle_for >= idle_ms && cell.close_if_idle() {
                    inner.actors.release();
                    stopped += 1;
                    false
                } else {
                    true
                }
            }
            Slot::Quarantined { until, .. } => *until > instant,
        });
        stopped
    }

    /// The entity behind this kind.
    pub fn entity(&self) -> &E {
        &self.inner.entity
    }

    /// The store this kind's actors persist to, for reads of their durable records.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Sends `command` to the actor of `key` (activating it) and waits for its answer, at
    /// most until `deadline`. State-changing commands are answered once durable.
    ///
    /// The answer tells the truth about the outcome. The actor works to a deadline a little
    /// earlier than the caller's ([`actor_deadline`]), so its own answer (DEADLINE_EXCEEDED
    /// when it dropped the command unexecuted, UNAVAILABLE when a write's outcome is unknown)
    /// arrives in time. If the caller's deadline passes first, the command's claim decides:
    /// still queued, it is abandoned and never runs (DEADLINE_EXCEEDED); already running, its
    /// answer is awaited a little longer, and failing that the outcome is unknown.
    pub async fn call<R: Request<E>>(
        &self,
        key: &str,
        request: R,
        deadline: Deadline,
    ) -> Result<R::Reply, Error> {
        let (reply, mut answer) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        let call = Call {
            request,
            reply,
            claim: claim.clone(),
        };
        let msg = Msg::Job(Box::new(call));
        self.send(key, msg, actor_deadline(deadline))?;
        let crashed = || Error::ActorCrashed {
            kind: E::KIND,
            key: key.to_string(),
        };
        match tokio::time::timeout_at(deadline.instant(), &mut answer).await {
            Ok(answer) => return answer.map_err(|_| crashed())?,
            Err(_) if claim.abandon() => {
                return Err(Error::DeadlineExceeded(format!(
                    "{}/{key} was busy until the deadline; the request was not executed",
                    E::KIND
                )));
            }
            Err(_) => {}
        }
        match tokio::time::timeout(RUNNING_GRACE, answer).await {
            Ok(answer) => answer.map_err(|_| crashed())?,
            Err(_) => Err(Error::StoreUnavailable(format!(
                "{}/{key} did not finish the request by its deadline; the outcome is unknown: \
                 retry with the same request id",
                E::KIND
            ))),
        }
    }

    /// Queues `command` for the actor of `key` and returns at once: accepted, not done. For
    /// messages whose sender needs no result; backpressure still applies (a full mailbox
    /// refuses), and the message is dropped if not run by `deadline`.
    pub fn cast<R: Request<E>>(
        &self,
        key: &str,
        request: R,
        deadline: Deadline,
    ) -> Result<(), Error> {
        self.send(key, Msg::Job(Box::new(Cast(request))), deadline)
    }

    /// Makes the actor of `key` live with its state loaded, without running a command.
    pub async fn activate(&self, key: &str, deadline: Deadline) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(key, Msg::Activate(reply), deadline)?;
        self.wait(key, answer, deadline).await?
    }

    /// The current snapshot of `key` and a receiver of every later one.
    pub async fn watch(&self, key: &str, deadline: Deadline) -> Result<Subscription<E>, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(key, Msg::Watch(reply), deadline)?;
        self.wait(key, answer, deadline).await?
    }

    /// Turns true when the server starts draining (watch streams end then).
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.inner.draining.subscribe()
    }

    /// Starts the drain: watch streams end, so that in-flight requests can finish.
    pub fn begin_drain(&self) {
        self.inner.draining.send_replace(true);
    }

    /// Stops every actor: no new activations, waiting messages answered UNAVAILABLE.
    /// Called after the gRPC server stopped accepting and finished in-flight requests; the
    /// state of every actor is already durable, so nothing else needs saving.
    pub fn close(&self) {
        self.begin_drain();
        self.inner.closed.store(true, Ordering::Release);
        self.inner.map.for_each(|_, slot| {
            if let Slot::Live(cell) = slot {
                for envelope in cell.mailbox.close() {
                    (*envelope).refuse(Error::ShuttingDown);
                }
            }
        });
    }

    async fn wait<T>(
        &self,
        key: &str,
        answer: oneshot::Receiver<T>,
        deadline: Deadline,
    ) -> Result<T, Error> {
        match tokio::time::timeout_at(deadline.instant(), answer).await {
            Ok(Ok(answer)) => Ok(answer),
            // The reply was dropped unsent: the actor crashed while handling this message.
            Ok(Err(_)) => Err(Error::ActorCrashed {
                kind: E::KIND,
                key: key.to_string(),
            }),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "{}/{key} did not answer before the deadline",
                E::KIND
            ))),
        }
    }

    fn send(&self, key: &str, msg: Msg<E>, deadline: Deadline) -> Result<(), Error> {
        validate_key(E::KEY_FIELD, key)?;
        let mut envelope = Box::new(Envelope { msg, deadline });
        // A closed mailbox means the actor stopped between lookup and push; the next lookup
        // replaces it. Twice in a row is a passivation race, three times something else.
        for _ in 0..3 {
            let cell = self.get_or_activate(key)?;
            match cell.mailbox.push(envelope) {
                Ok(()) => return Ok(()),
                Err(Refused::Full(_)) => {
                    return Err(Error::MailboxFull {
                        kind: E::KIND,
                        key: key.to_string(),
                        capacity: self.inner.settings.mailbox_capacity,
                        retry_after: self.inner.settings.retry_after,
                    });
                }
                Err(Refused::Closed(returned)) => {
                    envelope = returned;
                    self.remove(key, cell.id);
                }
            }
        }
        Err(Error::ShuttingDown)
    }

    fn get_or_activate(&self, key: &str) -> Result<Arc<Cell<E>>, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let actors = &self.inner.actors;
        // The common path locks one shard and hashes the key once: found, or a free slot.
        {
            let mut shard = self.inner.map.shard(key);
            if let Some(cell) = self.live_in(&mut shard, key)? {
                return Ok(cell);
            }
            if actors.try_reserve() {
                return Ok(self.activate_in(shard, key));
            }
        }
        // At the cap: passivate least recently used idle actors (which locks other shards, so
        // not while holding this one), then look again.
        if !actors.reserve() {
            return Err(Error::ActorLimit {
                limit: actors.max(),
                retry_after: self.inner.settings.retry_after,
            });
        }
        let mut shard = self.inner.map.shard(key);
        if let Some(cell) = self.live_in(&mut shard, key)? {
            actors.release(); // another request activated it meanwhile
            return Ok(cell);
        }
        Ok(self.activate_in(shard, key))
    }

    /// Starts a new actor for `key` in the locked `shard`, whose live slot is reserved.
    fn activate_in(&self, mut shard: ShardGuard<'_, Slot<E>>, key: &str) -> Arc<Cell<E>> {
        let actors = &self.inner.actors;
        let cell = Arc::new(Cell {
            id: actors.next_id(),
            mailbox: Mailbox::new(self.inner.settings.mailbox_capacity),
            last_used: AtomicU64::new(actors.now_tick()),
            restarts: AtomicU32::new(0),
            watchers: Mutex::new(None),
        });
        let key: Arc<str> = key.into();
        shard.insert(key.clone(), Slot::Live(cell.clone()));
        drop(shard);
        // The state loads inside the new task, so a slow load delays only this key.
        tokio::spawn(actor::run(self.clone(), key, cell.clone()));
        cell
    }

    /// The live actor of `key` in the locked `shard`, if any; clears a stale entry (a closed
    /// mailbox) and refuses a quarantined key.
    fn live_in(
        &self,
        shard: &mut ShardGuard<'_, Slot<E>>,
        key: &str,
    ) -> Result<Option<Arc<Cell<E>>>, Error> {
        match shard.get(key) {
            None => Ok(None),
            Some(Slot::Live(cell)) if !cell.mailbox.is_closed() => {
                cell.last_used
                    .store(self.inner.actors.now_tick(), Ordering::Relaxed);
                Ok(Some(cell.clone()))
            }
            Some(Slot::Live(_)) => {
                shard.remove(key);
                self.inner.actors.release();
                Ok(None)
            }
            Some(Slot::Quarantined { until, .. }) => {
                let now = Instant::now();
                if now < *until {
                    Err(Error::Quarantined {
                        kind: E::KIND,
                        key: key.to_string(),
                        retry_after: *until - now,
                    })
                } else {
                    shard.remove(key);
                    Ok(None)
                }
            }
        }
    }

    /// Removes the entry of `key` if it is still activation `id`; true if it did (the caller
    /// then owned the live slot, and it is released).
    pub(super) fn remove(&self, key: &str, id: u64) -> bool {
        let mut shard = self.inner.map.shard(key);
        let same = matches!(shard.get(key), Some(Slot::Live(cell)) if cell.id == id);
        if same {
            shard.remove(key);
            self.inner.actors.release();
        }
        same
    }

    /// Replaces activation `id` of `key` by a quarantine entry lasting `rest`.
    pub(super) fn quarantine(&self, key: &str, id: u64, rest: Duration, restarts: u32) {
        let mut shard = self.inner.map.shard(key);
        let same = matches!(shard.get(key), Some(Slot::Live(cell)) if cell.id == id);
        if same {
            shard.insert(
                key.into(),
                Slot::Quarantined {
                    until: Instant::now() + rest,
                    restarts,
                },
            );
            self.inner.actors.release();
        }
    }
}

/// Sweeps `inner`'s actors for idleness a few times per idle timeout, until the kind is gone.
async fn sweep<E: Entity>(inner: Weak<Inner<E>>) {
    let period = match inner.upgrade() {
        Some(inner) => (inner.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(60)),
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let stopped = Kind { inner }.sweep();
        if stopped > 0 {
            tracing::debug!(kind = E::KIND, stopped, "passivated idle actors");
        }
    }
}

impl<E: Entity> Envelope<E> {
    /// Answers the sender with `error` without running the message.
    pub(super) fn refuse(self, error: Error) {
        match self.msg {
            Msg::Job(job) => job.refuse(error),
            Msg::Watch(reply) => {
                let _ = reply.send(Err(error));
            }
            Msg::Activate(reply) => {
                let _ = reply.send(Err(error));
            }
            Msg::Crash => {}
        }
    }
}

impl<E: Entity> Table for Kind<E> {
    fn kind(&self) -> &'static str {
        E::KIND
    }

    fn idle_candidates(&self, out: &mut Vec<Candidate>) {
        let table = self.table_index();
        self.inner.map.for_each(|key, slot| {
            if let Slot::Live(cell) = slot
                && cell.mailbox.is_idle()
                && !cell.watched()
            {
                out.push(Candidate {
                    last_used: cell.last_used.load(Ordering::Relaxed),
                    table,
                    key: key.clone(),
                    id: cell.id,
                });
            }
        });
    }

    fn evict(&self, candidate: &Candidate) -> bool {
        let mut shard = self.inner.map.shard(&candidate.key);
        let evicted = match shard.get(&candidate.key) {
            Some(Slot::Live(cell)) if cell.id == candidate.id => cell.close_if_idle(),
            _ => false,
        };
        if evicted {
            shard.remove(&candidate.key);
            self.inner.actors.release();
        }
        evicted
    }

    fn list(&self, out: &mut Vec<ActorInfo>) {
        let now = self.inner.actors.now_tick();
        self.inner.map.for_each(|key, slot| {
            out.push(match slot {
                Slot::Live(cell) => ActorInfo {
                    kind: E::KIND,
                    key: key.clone(),
                    status: ActorStatus::Live,
                    mailbox_len: cell.mailbox.len(),
                    idle_for: Duration::from_millis(
                        now.saturating_sub(cell.last_used.load(Ordering::Relaxed)),
                    ),
                    restarts: cell.restarts.load(Ordering::Relaxed),
                },
                Slot::Quarantined { restarts, .. } => ActorInfo {
                    kind: E::KIND,
                    key: key.clone(),
                    status: ActorStatus::Quarantined,
                    mailbox_len: 0,
                    idle_for: Duration::ZERO,
                    restarts: *restarts,
                },
            });
        });
    }

    fn kill(&self, key: &str) -> bool {
        let cell = match self.inner.map.shard(key).get(key) {
            Some(Slot::Live(cell)) => cell.clone(),
            _ => return false,
        };
        let envelope = Box::new(Envelope {
            msg: Msg::Crash,
            deadline: Deadline::after(self.inner.settings.retry_after.max(Duration::from_secs(5))),
        });
        cell.mailbox.push(envelope).is_ok()
    }
}

impl<E: Entity> Kind<E> {
    fn table_index(&self) -> usize {
        // Tables are registered once, in construction order; find ours by identity.
        self.inner.actors.index_of(E::KIND)
    }
}
