//! One entity kind's live actors: get-or-activate, calls and casts, watches, and the
//! [`Table`] face that the cross-kind view uses for eviction and admin.
//!
//! Every change of a registry entry happens under its shard's lock, and so does every close
//! of a mailbox that changes it: an actor that stops (passivated, evicted, quarantined) hands
//! its exit to the registry, which closes the mailbox and replaces or removes the entry in
//! one step. A sender therefore either finds the old actor's mailbox still open (and its
//! message is handled or refused by it) or finds the new entry, never a closed mailbox under
//! a live entry: a crash-looping key cannot slip out of its quarantine.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use kit::{claim::Claim, deadline::Deadline, echo::echo};
use tokio::{
    sync::{OwnedSemaphorePermit, broadcast, oneshot, watch},
    task::AbortHandle,
    time::Instant,
};

use super::{
    Settings,
    actor::{self, Call, Cast, Job},
    entity::{Entity, Request},
    mailbox::{Mailbox, Refused},
    registry::{
        ActorDetail, ActorInfo, ActorStatus, Actors, Candidate, Counts, Described, Describing,
        FRONT_WINDOW, Front, ShardGuard, Sharded, Table,
    },
    store::Store,
};
use crate::{
    cluster::{Cluster, Fence},
    error::Error,
};

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
    if key.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if let Some(position) = key.chars().position(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("has a control character at character {position}; none are allowed"),
        ));
    }
    Ok(())
}

/// How long past its deadline a caller waits for a command the actor already started: the
/// actor bounds every step by its own, earlier deadline, so its answer is normally on the way.
const RUNNING_GRACE: Duration = Duration::from_millis(250);

/// The deadline an actor works to for a caller that must answer by `deadline`: a twentieth of
/// the time left earlier (1 to 25 ms), room for the actor's answer to reach the caller.
pub(super) fn actor_deadline(deadline: Deadline) -> Deadline {
    let remaining = deadline.remaining();
    let margin = (remaining / 20).clamp(Duration::from_millis(1), Duration::from_millis(25));
    Deadline::after(remaining.saturating_sub(margin))
}

/// What a message asks of an actor.
pub(super) enum Msg<E: Entity> {
    /// Handle a request: a call (answered, unless its caller abandoned it first) or a cast.
    Job(Box<dyn Job<E>>),
    /// Subscribe to changes: the current snapshot and a receiver of the next ones.
    Watch(oneshot::Sender<Result<Watching<E>, Error>>),
    /// Load the state and answer (prewarming; the activation benchmark).
    Activate(oneshot::Sender<Result<(), Error>>),
    /// Crash on purpose (admin KillActor): exercises the real supervision path.
    Crash,
    /// Say what only the task knows of itself (admin GetActor): answered between two
    /// messages, and no activity (the actor's last use and idleness stay as they were).
    Describe(oneshot::Sender<Described>),
}

/// A watcher's start: the state now, every change after it, and its place among the
/// `max_watchers` open streams.
pub struct Subscription<S> {
    /// The state when the watch began.
    pub first: S,
    /// Every later state; closed when the actor stops (passivated, evicted, quarantined).
    pub changes: broadcast::Receiver<S>,
    /// Held for as long as the stream is open: one of the `max_watchers`.
    pub slot: WatchSlot,
    /// When the stream must end, however busy: `watch_max_lifetime` after it began.
    pub ends_at: Instant,
}

/// A watch stream's place among the open ones (`max_watchers` in all, and the kind's count
/// of open streams): given back when dropped, with the stream.
pub struct WatchSlot {
    /// One of the cross-kind `max_watchers` permits.
    _permit: OwnedSemaphorePermit,
    /// One of the kind's open streams, if counted for a kind.
    _count: Option<WatcherCount>,
}

impl WatchSlot {
    /// A slot holding `permit` (from [`Actors::watcher_permit`]), counted for no kind.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            _count: None,
        }
    }
}

/// What the actor answers a watch with; the caller adds the permit and the end.
pub(super) type Watching<E> = (
    <E as Entity>::Snapshot,
    broadcast::Receiver<<E as Entity>::Snapshot>,
);

/// A message with the deadline and the span of the request that sent it.
pub(super) struct Envelope<E: Entity> {
    /// What to do.
    pub msg: Msg<E>,
    /// When the sender stops waiting; past it, the message is dropped unexecuted.
    pub deadline: Deadline,
    /// The sender's span (its request's server span, see `kit::trace`), which the actor
    /// handles the message in: its logs and store calls belong to the sender's trace.
    /// [`tracing::Span::none`] for messages no request sent (timers, reminders, the admin's).
    pub span: tracing::Span,
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
    /// registry can end their streams when it stops the actor.
    pub watchers: Mutex<Option<broadcast::Sender<E::Snapshot>>>,
    /// In-memory timers of this activation ([`Kind::send_after`]), made on the first: they
    /// are aborted when the activation ends. Boxed, so an actor without timers pays a pointer.
    pub timers: Mutex<Option<Box<Timers>>>,
    /// Several replicas: the epoch of the key's shard this activation serves under; every
    /// write it makes checks it. `None` for a single replica.
    pub fence: Option<Fence>,
}

/// The live timers of one activation.
#[derive(Debug, Default)]
pub(super) struct Timers(Vec<AbortHandle>);

impl<E: Entity> Drop for Cell<E> {
    /// The activation is over (passivated, evicted, quarantined, shut down): its timers go
    /// with it, like an OTP process's `send_after` timers with the process.
    fn drop(&mut self) {
        let timers = self
            .timers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for timer in timers.take().into_iter().flat_map(|t| t.0) {
            timer.abort();
        }
    }
}

/// A timer set by [`Kind::send_after`].
#[derive(Debug)]
pub struct Timer(AbortHandle);

impl Timer {
    /// Cancels it: its message is not sent (if it has not been already).
    pub fn cancel(&self) {
        self.0.abort();
    }
}

impl<E: Entity> Cell<E> {
    /// The watchers' sender, locked.
    pub fn watchers(&self) -> MutexGuard<'_, Option<broadcast::Sender<E::Snapshot>>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the mailbox if the actor is idle, watched or not, and ends its watch streams
    /// (they tell their clients to re-subscribe, which activates the key again); true if it
    /// closed. Called under the shard lock, with the entry removed in the same step.
    fn retire_if_idle(&self) -> bool {
        let closed = self.mailbox.close_if_idle();
        if closed {
            self.watchers().take();
        }
        closed
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
    /// Live actors of this kind (the cross-kind view counts all kinds together).
    live: AtomicUsize,
    /// Quarantine entries of this kind.
    quarantined: AtomicUsize,
    /// Handler crashes since start.
    crashes: AtomicU64,
    /// Keys quarantined since start.
    quarantines: AtomicU64,
    /// Durable reminders handed to their actors since start (a resend counts again).
    reminders_fired: AtomicU64,
    /// Activations since start.
    activations: AtomicU64,
    /// Actors stopped since start because they were idle, evicted at the cap, or held
    /// nothing (not crashes or quarantines).
    passivations: AtomicU64,
    /// Messages refused since start because the mailbox was full.
    mailbox_rejections: AtomicU64,
    /// Messages dropped unexecuted since start because their deadline passed first.
    pub(super) deadline_drops: AtomicU64,
    /// Open watch streams of this kind.
    watchers: Arc<AtomicUsize>,
    /// Set when the server starts draining: watch streams end.
    draining: watch::Sender<bool>,
    /// Set after the drain: no new activations, mailboxes closed.
    closed: AtomicBool,
    /// Several replicas: where keys are served, and the leases ([`Kind::join`]).
    cluster: OnceLock<Arc<Cluster>>,
}

impl<E: Entity> Inner<E> {
    /// The cluster this kind is part of, if any.
    pub(super) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Books a live entry leaving the map: its slot goes back to the cap.
    fn live_gone(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.actors.release();
    }

    /// Books an actor passivated (idle, evicted, or holding nothing): it leaves the map.
    fn passivated(&self) {
        self.live_gone();
        self.passivations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a handler crash (the actor calls it).
    pub(super) fn crashed(&self) {
        self.crashes.fetch_add(1, Ordering::Relaxed);
    }
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

/// Counts a watch stream of a kind for as long as it is open.
struct WatcherCount(Arc<AtomicUsize>);

impl Drop for WatcherCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<E: Entity> Kind<E> {
    /// A registry for `entity`, sharing `actors` (cap, eviction, admin) with other kinds.
    ///
    /// Its sweeper runs until the last `Kind` clone and the last actor of the kind are gone:
    /// the cross-kind view holds the kind weakly, so nothing else keeps it alive.
    pub fn new(entity: E, store: Store, settings: Settings, actors: Arc<Actors>) -> Self {
        let inner = Arc::new(Inner {
            entity,
            store,
            settings,
            actors: actors.clone(),
            map: Sharded::default(),
            live: AtomicUsize::new(0),
            quarantined: AtomicUsize::new(0),
            crashes: AtomicU64::new(0),
            quarantines: AtomicU64::new(0),
            reminders_fired: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            mailbox_rejections: AtomicU64::new(0),
            deadline_drops: AtomicU64::new(0),
            watchers: Arc::new(AtomicUsize::new(0)),
            draining: watch::channel(false).0,
            closed: AtomicBool::new(false),
            cluster: OnceLock::new(),
        });
        let table: Weak<Inner<E>> = Arc::downgrade(&inner);
        let table: Weak<dyn Table> = table;
        actors.register(table);
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        if E::REMINDERS {
            tokio::spawn(remind(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Passivates every actor idle for the idle timeout (watched or not: its streams end
    /// asking the client to re-subscribe), and forgets ended quarantines. Returns how many
    /// actors stopped.
    pub fn sweep(&self) -> usize {
        let inner = &self.inner;
        let now = inner.actors.now_tick();
        let idle_ms = u64::try_from(inner.settings.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let instant = Instant::now();
        let mut stopped = 0;
        inner.map.retain(|_, slot| match slot {
            Slot::Live(cell) => {
                let idle_for = now.saturating_sub(cell.last_used.load(Ordering::Relaxed));
                if idle_for >= idle_ms && cell.retire_if_idle() {
                    inner.passivated();
                    stopped += 1;
                    false
                } else {
                    true
                }
            }
            Slot::Quarantined { until, .. } => {
                let resting = *until > instant;
                if !resting {
                    inner.quarantined.fetch_sub(1, Ordering::Relaxed);
                }
                resting
            }
        });
        stopped
    }

    /// Makes this kind one replica's share of `cluster`: an actor is activated only under
    /// the lease of its key's shard, and its writes check the shard's epoch. Set once, before
    /// serving.
    pub fn join(&self, cluster: Arc<Cluster>) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// The cluster this kind is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.get()
    }

    /// The fence `key` is served under here: `None` for a single replica; with several, the
    /// lease of its shard, waited for while this replica is taking the shard over (at most
    /// until a little before `deadline`).
    async fn fence_for(&self, key: &str, deadline: Deadline) -> Result<Option<Fence>, Error> {
        match self.inner.cluster.get() {
            None => Ok(None),
            Some(cluster) => {
                validate_key(E::KEY_FIELD, key)?;
                let fence = cluster
                    .ready(E::KIND, key, actor_deadline(deadline))
                    .await?;
                Ok(Some(fence))
            }
        }
    }

    /// [`Kind::fence_for`] without waiting, for casts: SHARD_MOVED unless the lease is held.
    fn fence_now(&self, key: &str) -> Result<Option<Fence>, Error> {
        match self.inner.cluster.get() {
            None => Ok(None),
            Some(cluster) => {
                let shard = cluster.shard_of(E::KIND, key);
                cluster
                    .fence(shard)
                    .map(Some)
                    .ok_or_else(|| cluster.moved(E::KIND, key, shard))
            }
        }
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
        let fence = self.fence_for(key, deadline).await?;
        self.send(key, msg, actor_deadline(deadline), fence)?;
        let crashed = || Error::ActorCrashed {
            kind: E::KIND,
            key: key.to_string(),
        };
        match tokio::time::timeout_at(deadline.instant(), &mut answer).await {
            Ok(answer) => return answer.map_err(|_| crashed())?,
            Err(_) if claim.abandon() => {
                self.inner.deadline_drops.fetch_add(1, Ordering::Relaxed);
                return Err(Error::DeadlineExceeded(format!(
                    "{}/{} was busy until the deadline; the request was not executed",
                    E::KIND,
                    echo(key)
                )));
            }
            Err(_) => {}
        }
        match tokio::time::timeout(RUNNING_GRACE, answer).await {
            Ok(answer) => answer.map_err(|_| crashed())?,
            Err(_) => Err(Error::StoreUnavailable(format!(
                "{}/{} did not finish the request by its deadline; the outcome is unknown: \
                 retry with the same request id",
                E::KIND,
                echo(key)
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
        let fence = self.fence_now(key)?;
        self.send(key, Msg::Job(Box::new(Cast(request))), deadline, fence)
    }

    /// Sends `request` to the live actor of `key` after `delay`, as a cast: OTP's
    /// `Process.send_after`. The timer lives in memory with this activation of the actor: if
    /// the actor passivates, is evicted or quarantined, or the server stops first, the message
    /// is never sent, and the key is not reactivated for it (durable reminders are the kind
    /// that survive that: [`Entity::reminder_due`]). `None` when `key` is not live. A message
    /// that finds the mailbox full is dropped, like any cast refused for load.
    pub fn send_after<R: Request<E>>(
        &self,
        key: &str,
        request: R,
        delay: Duration,
    ) -> Option<Timer> {
        let cell = match self.inner.map.shard(key).get(key) {
            Some(Slot::Live(cell)) if !cell.mailbox.is_closed() => cell.clone(),
            _ => return None,
        };
        let weak = Arc::downgrade(&cell);
        let budget = self.inner.settings.idle_timeout;
        let fire = async move {
            tokio::time::sleep(delay).await;
            let Some(cell) = weak.upgrade() else {
                return; // the activation ended meanwhile
            };
            let msg = Msg::Job(Box::new(Cast(request)));
            let envelope = Box::new(Envelope {
                msg,
                deadline: Deadline::after(budget),
                span: tracing::Span::none(),
            });
            if let Err(refused) = cell.mailbox.push(envelope) {
                let why = match refused {
                    Refused::Full(_) => "mailbox full",
                    Refused::Closed(_) => "actor stopped",
                };
                tracing::debug!(kind = E::KIND, why, "timer message dropped");
            }
        };
        let handle = tokio::spawn(fire).abort_handle();
        let mut timers = cell.timers.lock().unwrap_or_else(PoisonError::into_inner);
        let timers = &mut timers.get_or_insert_with(Default::default).0;
        timers.retain(|t| !t.is_finished());
        timers.push(handle.clone());
        Some(Timer(handle))
    }

    /// Makes the actor of `key` live with its state loaded, without running a command.
    pub async fn activate(&self, key: &str, deadline: Deadline) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let fence = self.fence_for(key, deadline).await?;
        self.send(key, Msg::Activate(reply), deadline, fence)?;
        self.wait(key, answer, deadline).await?
    }

    /// The current snapshot of `key` and a receiver of every later one, within the watcher
    /// caps: `max_watchers` open streams in all, `max_watchers_per_key` per key; beyond
    /// either, RESOURCE_EXHAUSTED naming the cap.
    ///
    /// Watching does not keep the actor live: an actor that handles no message for its idle
    /// timeout passivates (or is evicted at the actor cap) even while watched, and its
    /// streams end then, asking the client to re-subscribe.
    pub async fn watch(
        &self,
        key: &str,
        deadline: Deadline,
    ) -> Result<Subscription<E::Snapshot>, Error> {
        let actors = &self.inner.actors;
        let settings = &self.inner.settings;
        let Some(permit) = actors.watcher_permit() else {
            return Err(Error::WatcherLimit {
                cap: format!(
                    "{} watch streams are open, the most this server allows (--max-watchers)",
                    actors.max_watchers()
                ),
                retry_after: settings.watcher_retry_after(),
            });
        };
        let (reply, answer) = oneshot::channel();
        let fence = self.fence_for(key, deadline).await?;
        self.send(key, Msg::Watch(reply), deadline, fence)?;
        let (first, changes) = self.wait(key, answer, deadline).await??;
        self.inner.watchers.fetch_add(1, Ordering::Relaxed);
        let count = WatcherCount(self.inner.watchers.clone());
        Ok(Subscription {
            first,
            changes,
            slot: WatchSlot {
                _permit: permit,
                _count: Some(count),
            },
            ends_at: Instant::now() + settings.watch_max_lifetime,
        })
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
                "{}/{} did not answer before the deadline",
                E::KIND,
                echo(key)
            ))),
        }
    }

    fn send(
        &self,
        key: &str,
        msg: Msg<E>,
        deadline: Deadline,
        fence: Option<Fence>,
    ) -> Result<(), Error> {
        validate_key(E::KEY_FIELD, key)?;
        // The current span: the request's, when a request sends this (cheap when there is
        // none, as with tracing off and no traceparent).
        let span = tracing::Span::current();
        let mut envelope = Box::new(Envelope {
            msg,
            deadline,
            span,
        });
        // A closed mailbox means the actor stopped between lookup and push, and the registry
        // replaced or removed its entry in the same step: the next lookup sees that. Twice in
        // a row is a passivation race, three times something else.
        for _ in 0..3 {
            let cell = self.get_or_activate(key, fence)?;
            match cell.mailbox.push(envelope) {
                Ok(()) => return Ok(()),
                Err(Refused::Full(_)) => {
                    self.inner
                        .mailbox_rejections
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::MailboxFull {
                        kind: E::KIND,
                        key: key.to_string(),
                        capacity: self.inner.settings.mailbox_capacity,
                        retry_after: self.inner.settings.retry_after,
                    });
                }
                Err(Refused::Closed(returned)) => envelope = returned,
            }
        }
        Err(Error::ShuttingDown)
    }

    fn get_or_activate(&self, key: &str, fence: Option<Fence>) -> Result<Arc<Cell<E>>, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let actors = &self.inner.actors;
        // The common path locks one shard and hashes the key once: found, or a free slot.
        {
            let mut shard = self.inner.map.shard(key);
            if let Some(cell) = self.live_in(&mut shard, key, fence)? {
                return Ok(cell);
            }
            if actors.try_reserve() {
                return Ok(self.activate_in(shard, key, fence));
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
        match self.live_in(&mut shard, key, fence) {
            Ok(None) => Ok(self.activate_in(shard, key, fence)),
            found => {
                actors.release(); // another request activated it (or it crashed) meanwhile
                found.map(|cell| cell.expect("matched above"))
            }
        }
    }

    /// Starts a new actor for `key` in the locked `shard`, whose live slot is reserved.
    fn activate_in(
        &self,
        mut shard: ShardGuard<'_, Slot<E>>,
        key: &str,
        fence: Option<Fence>,
    ) -> Arc<Cell<E>> {
        let actors = &self.inner.actors;
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(Cell {
            id: actors.next_id(),
            mailbox: Mailbox::new(self.inner.settings.mailbox_capacity),
            last_used: AtomicU64::new(actors.now_tick()),
            restarts: AtomicU32::new(0),
            watchers: Mutex::new(None),
            timers: Mutex::new(None),
            fence,
        });
        let key: Arc<str> = key.into();
        shard.insert(key.clone(), Slot::Live(cell.clone()));
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        drop(shard);
        // The state loads inside the new task, so a slow load delays only this key.
        tokio::spawn(actor::run(self.clone(), key, cell.clone()));
        cell
    }

    /// The live actor of `key` in the locked `shard`, if any, touched (moved to the back of
    /// the shard's LRU order); clears a stale entry (a mailbox closed by shutdown) and refuses
    /// a quarantined key.
    fn live_in(
        &self,
        shard: &mut ShardGuard<'_, Slot<E>>,
        key: &str,
        fence: Option<Fence>,
    ) -> Result<Option<Arc<Cell<E>>>, Error> {
        match shard.get(key) {
            None => Ok(None),
            // An activation from an earlier epoch of the shard (lost and taken again before
            // its passivation ran): its memory may be stale, so it stops for a fresh one.
            Some(Slot::Live(cell)) if fence.is_some() && cell.fence != fence => {
                for envelope in cell.mailbox.close() {
                    (*envelope).refuse(Error::ShardMoved(format!(
                        "{}/{} changed hands while this request waited",
                        E::KIND,
                        echo(key)
                    )));
                }
                cell.watchers().take();
                shard.remove(key);
                self.inner.passivated();
                Ok(None)
            }
            Some(Slot::Live(cell)) if !cell.mailbox.is_closed() => {
                let cell = cell.clone();
                cell.last_used
                    .store(self.inner.actors.now_tick(), Ordering::Relaxed);
                shard.to_back(key);
                Ok(Some(cell))
            }
            Some(Slot::Live(_)) => {
                shard.remove(key);
                self.inner.live_gone();
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
                    self.inner.quarantined.fetch_sub(1, Ordering::Relaxed);
                    Ok(None)
                }
            }
        }
    }

    /// The actor `id` of `key` stops because it holds nothing worth keeping live (no state),
    /// if it is idle: closes its mailbox and removes its entry in one step. True if it did;
    /// false if a message arrived meanwhile (the actor then goes on).
    pub(super) fn retire_if_idle(&self, key: &str, id: u64) -> bool {
        let mut shard = self.inner.map.shard(key);
        match shard.get(key) {
            Some(Slot::Live(cell)) if cell.id == id => {
                let retired = cell.retire_if_idle();
                if retired {
                    shard.remove(key);
                    self.inner.passivated();
                }
                retired
            }
            // Not ours any more (shutdown closed the mailbox): stop if nothing waits.
            _ => true,
        }
    }

    /// Quarantines `key` for `rest` after activation `id` crashed `restarts` times: closes
    /// its mailbox and replaces its entry in one step, under the shard lock, so no request
    /// can activate the key in between. Returns the messages that were still waiting, for
    /// the caller to refuse (outside the lock).
    pub(super) fn quarantine(
        &self,
        key: &str,
        cell: &Cell<E>,
        rest: Duration,
        restarts: u32,
    ) -> Vec<Envelope<E>> {
        let mut shard = self.inner.map.shard(key);
        let waiting = cell.mailbox.close();
        cell.watchers().take();
        let waiting = waiting.into_iter().map(|envelope| *envelope).collect();
        let same = matches!(shard.get(key), Some(Slot::Live(live)) if live.id == cell.id);
        if same {
            shard.insert(
                key.into(),
                Slot::Quarantined {
                    until: Instant::now() + rest,
                    restarts,
                },
            );
            self.inner.live_gone();
            self.inner.quarantined.fetch_add(1, Ordering::Relaxed);
            self.inner.quarantines.fetch_add(1, Ordering::Relaxed);
        }
        waiting
    }
}

/// How often the reminder task looks for due reminders: the lateness of a reminder, at most.
const REMINDER_TICK: Duration = Duration::from_secs(1);

/// Index records read per page, and pages read per tick at most: at most 4,096 reminders are
/// delivered per second per kind, the rest wait for the next tick (a bounded rate).
const REMINDER_PAGE: i32 = 512;
const REMINDER_PAGES_PER_TICK: usize = 8;

/// How long a delivered reminder is not sent again while its actor works on it.
const REMINDER_RESEND: Duration = Duration::from_secs(10);

/// Delivers `inner`'s due durable reminders, until the kind is gone: every tick it reads the
/// earliest records of the reminder index (ordered by due time, so the look stops at the
/// first one not yet due; no scan of all actors, no timer per actor) and sends each due one to
/// its actor as a [`Remind`], which activates a passivated actor like any message. The actor
/// retires the reminder in the commit that handles it, so a restart of session-svc loses
/// nothing: the next look finds what is still due. At least once: a reminder whose actor did
/// not get to it is sent again after [`REMINDER_RESEND`].
async fn remind<E: Entity>(inner: Weak<Inner<E>>) {
    let prefix = format!("{}/", E::KIND);
    let mut sent: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let mut ticks = tokio::time::interval(REMINDER_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let kind = Kind { inner };
        if kind.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let now = super::Ctx::now(0).now_ms;
        let now_instant = Instant::now();
        sent.retain(|_, at| now_instant.duration_since(*at) < REMINDER_RESEND);
        let mut token = String::new();
        for _ in 0..REMINDER_PAGES_PER_TICK {
            let deadline = Deadline::after(Duration::from_secs(5));
            let page = kind
                .inner
                .store
                .scan(
                    super::REMINDERS_NAMESPACE,
                    &prefix,
                    REMINDER_PAGE,
                    std::mem::take(&mut token),
                    deadline,
                )
                .await;
            let (entries, next) = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::debug!(kind = E::KIND, %error, "cannot read the reminder index");
                    break;
                }
            };
            let all_due = deliver(&kind, &prefix, entries, now, now_instant, &mut sent);
            if !all_due || next.is_empty() {
                break;
            }
            token = next;
        }
    }
}

/// Sends each due reminder of `entries` (index records, earliest first) to its actor, unless
/// it was sent recently, counting each one sent; false once it meets one not yet due.
fn deliver<E: Entity>(
    kind: &Kind<E>,
    prefix: &str,
    entries: Vec<proto::store::v1::Entry>,
    now: i64,
    now_instant: Instant,
    sent: &mut std::collections::HashMap<String, Instant>,
) -> bool {
    for entry in entries {
        let due = entry
            .key
            .strip_prefix(prefix)
            .and_then(|rest| rest.get(..20))
            .and_then(|digits| digits.parse::<i64>().ok());
        let Some(due) = due else {
            tracing::warn!(kind = E::KIND, key = %echo(&entry.key), "malformed reminder key");
            continue;
        };
        if due > now {
            return false;
        }
        if sent.contains_key(&entry.key) {
            continue;
        }
        let Ok(key) = String::from_utf8(entry.value) else {
            continue;
        };
        let remind = super::Remind { due_ms: due };
        match kind.cast(&key, remind, Deadline::after(REMINDER_RESEND)) {
            Ok(()) => {
                kind.inner.reminders_fired.fetch_add(1, Ordering::Relaxed);
                sent.insert(entry.key, now_instant);
            }
            Err(error) => {
                tracing::debug!(kind = E::KIND, key = %echo(&key), %error, "reminder not delivered yet");
            }
        }
    }
    true
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
            // Dropping the question unanswered tells the asker the actor is gone.
            Msg::Crash | Msg::Describe(_) => {}
        }
    }
}

impl<E: Entity> Table for Inner<E> {
    fn kind(&self) -> &'static str {
        E::KIND
    }

    fn front_candidate(&self, shard: usize) -> Front {
        let mut shard = self.map.shard_at(shard);
        let now = Instant::now();
        let mut skipped = Vec::new();
        let mut ended = Vec::new();
        let mut found = None;
        for (key, slot) in shard.iter().take(FRONT_WINDOW) {
            match slot {
                Slot::Live(cell) if cell.mailbox.is_idle() => {
                    found = Some(Candidate {
                        last_used: cell.last_used.load(Ordering::Relaxed),
                        table: 0,
                        key: key.clone(),
                        id: cell.id,
                    });
                    break;
                }
                Slot::Quarantined { until, .. } if *until <= now => ended.push(key.clone()),
                _ => skipped.push(key.clone()),
            }
        }
        for key in &ended {
            shard.remove(key);
            self.quarantined.fetch_sub(1, Ordering::Relaxed);
        }
        for key in &skipped {
            shard.to_back(key);
        }
        match found {
            Some(candidate) => Front::Idle(candidate),
            None if skipped.is_empty() && ended.is_empty() => Front::Empty,
            None => Front::Skipped,
        }
    }

    fn evict(&self, candidate: &Candidate) -> bool {
        let mut shard = self.map.shard(&candidate.key);
        let evicted = match shard.get(&candidate.key) {
            Some(Slot::Live(cell)) if cell.id == candidate.id => cell.retire_if_idle(),
            _ => false,
        };
        if evicted {
            shard.remove(&candidate.key);
            self.passivated();
        }
        evicted
    }

    fn list(&self, out: &mut Vec<ActorInfo>) {
        let now = (self.actors.now_tick(), Instant::now());
        self.map
            .for_each(|key, slot| out.push(info::<E>(key, slot, now)));
    }

    fn get(&self, key: &str) -> Option<ActorInfo> {
        let now = (self.actors.now_tick(), Instant::now());
        let shard = self.map.shard(key);
        shard
            .get_key_value(key)
            .map(|(key, slot)| info::<E>(key, slot, now))
    }

    fn describe(&self, key: &str, ask: Option<Deadline>) -> Option<Describing> {
        let now = (self.actors.now_tick(), Instant::now());
        let shard = self.map.shard(key);
        let (key, slot) = shard.get_key_value(key)?;
        let mut detail = ActorDetail {
            info: info::<E>(key, slot, now),
            watchers: 0,
            timers: 0,
            described: None,
        };
        let Slot::Live(cell) = slot else {
            return Some(Describing {
                detail,
                answer: None,
            });
        };
        if cell.mailbox.is_closed() {
            return None; // left behind by shutdown: no actor
        }
        let watchers = cell.watchers().as_ref().map_or(0, |w| w.receiver_count());
        let timers = cell
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |t| {
                t.0.iter().filter(|timer| !timer.is_finished()).count()
            });
        detail.watchers = u32::try_from(watchers).unwrap_or(u32::MAX);
        detail.timers = u32::try_from(timers).unwrap_or(u32::MAX);
        let answer = ask.and_then(|deadline| {
            let (reply, answer) = oneshot::channel();
            let envelope = Box::new(Envelope {
                msg: Msg::Describe(reply),
                deadline,
                span: tracing::Span::none(),
            });
            // Pushed under the shard lock, which every close of a live entry's mailbox also
            // holds: the entry just read is the actor that gets the question. A full mailbox
            // is answered from the entry alone, not refused: the observer must see an
            // overloaded actor too.
            cell.mailbox.push(envelope).ok().map(|()| answer)
        });
        Some(Describing { detail, answer })
    }

    fn counts(&self) -> Counts {
        Counts {
            live: self.live.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
            quarantines: self.quarantines.load(Ordering::Relaxed),
            reminders_fired: self.reminders_fired.load(Ordering::Relaxed),
            activations: self.activations.load(Ordering::Relaxed),
            passivations: self.passivations.load(Ordering::Relaxed),
            mailbox_rejections: self.mailbox_rejections.load(Ordering::Relaxed),
            deadline_drops: self.deadline_drops.load(Ordering::Relaxed),
            watchers: self.watchers.load(Ordering::Relaxed),
        }
    }

    /// Stops the live actors for which `stop(key)` holds at once, busy or not: their waiting
    /// messages are refused with SHARD_MOVED (never run), their watch streams end. A message
    /// an actor is handling finishes; its write, if any, is refused by the fence once the new
    /// owner has taken the shard. Returns how many stopped.
    fn passivate_where(&self, stop: &dyn Fn(&str) -> bool) -> usize {
        let inner = self;
        let mut stopped = 0;
        inner.map.retain(|key, slot| match slot {
            Slot::Live(cell) if stop(key) => {
                for envelope in cell.mailbox.close() {
                    (*envelope).refuse(Error::ShardMoved(format!(
                        "{}/{} moved to another replica while this request waited",
                        E::KIND,
                        echo(key)
                    )));
                }
                cell.watchers().take();
                inner.passivated();
                stopped += 1;
                false
            }
            _ => true,
        });
        stopped
    }

    fn kill(&self, key: &str) -> bool {
        let cell = match self.map.shard(key).get(key) {
            Some(Slot::Live(cell)) => cell.clone(),
            _ => return false,
        };
        let envelope = Box::new(Envelope {
            msg: Msg::Crash,
            deadline: Deadline::after(self.settings.retry_after.max(Duration::from_secs(5))),
            span: tracing::Span::none(),
        });
        cell.mailbox.push(envelope).is_ok()
    }
}

/// How the admin API sees the entry `slot` of `key`, `now` being a tick of
/// [`Actors::now_tick`] and the same moment as an instant.
fn info<E: Entity>(key: &Arc<str>, slot: &Slot<E>, (now, instant): (u64, Instant)) -> ActorInfo {
    match slot {
        Slot::Live(cell) => ActorInfo {
            kind: E::KIND,
            key: key.clone(),
            status: ActorStatus::Live,
            mailbox_len: cell.mailbox.len(),
            idle_for: Duration::from_millis(
                now.saturating_sub(cell.last_used.load(Ordering::Relaxed)),
            ),
            restarts: cell.restarts.load(Ordering::Relaxed),
            quarantined_for: None,
        },
        Slot::Quarantined { restarts, until } => ActorInfo {
            kind: E::KIND,
            key: key.clone(),
            status: ActorStatus::Quarantined,
            mailbox_len: 0,
            idle_for: Duration::ZERO,
            restarts: *restarts,
            quarantined_for: Some(until.saturating_duration_since(instant)),
        },
    }
}

#[cfg(test)]
mod reminder_tests {
    use std::collections::HashMap;

    use super::*;
    use crate::runtime::Store;

    /// An entity with no state to speak of: enough to receive reminders.
    struct Plain;

    impl Entity for Plain {
        const KIND: &'static str = "plain";
        const KEY_FIELD: &'static str = "key";
        type State = ();
        type Snapshot = ();

        fn decode_state(&self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn encode_state(&self, _: &()) -> Vec<u8> {
            Vec::new()
        }
        fn snapshot(&self, _: &(), _: u64) {}
        fn is_final(&self, _: &()) -> bool {
            false
        }
        fn missing(&self, key: &str) -> Error {
            Error::NotFound(crate::error::reason::NOT_FOUND, key.into())
        }
    }

    /// The index record of `key`'s reminder due at `due_ms`.
    fn indexed(due_ms: i64, key: &str) -> proto::store::v1::Entry {
        proto::store::v1::Entry {
            key: super::super::reminder_key(Plain::KIND, due_ms, key),
            value: key.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_reminders_sent_are_counted_as_fired() {
        let kind = Kind::new(
            Plain,
            Store::in_memory(),
            Settings::default(),
            Actors::new(8),
        );
        let prefix = format!("{}/", Plain::KIND);
        let now_instant = Instant::now();
        let entries = vec![
            indexed(100, "a"),
            indexed(150, "already-sent"),
            indexed(200, "b"),
            indexed(300, "later"),
        ];
        let mut sent = HashMap::from([(entries[1].key.clone(), now_instant)]);

        let all_due = deliver(&kind, &prefix, entries.clone(), 200, now_instant, &mut sent);

        assert!(!all_due, "stopped at the reminder not yet due");
        assert_eq!(
            kind.inner.counts().reminders_fired,
            2,
            "a and b, nothing else"
        );
        assert!(sent.contains_key(&entries[0].key) && sent.contains_key(&entries[2].key));
        assert!(!sent.contains_key(&entries[3].key));

        // The next look within the resend time sends nothing again.
        let all_due = deliver(
            &kind,
            &prefix,
            entries[..3].to_vec(),
            200,
            now_instant,
            &mut sent,
        );
        assert!(all_due);
        assert_eq!(kind.inner.counts().reminders_fired, 2);
    }
}
