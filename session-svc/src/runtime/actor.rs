//! The actor task: one per live key, owning its state, handling one message at a time, and
//! supervising itself.
//!
//! Supervision is local. A panic while handling a message is caught; the message's caller gets
//! an error (its reply is dropped unsent); the in-memory state is discarded and reloaded from
//! the store before the next message: a restart from the last durable state. More than
//! `max_restarts` crashes within `restart_window` quarantines the key for a while. Other keys
//! never notice (OTP would take the supervisor down after its intensity; we need not).
//!
//! The actor never stops itself: it hands its exit to the registry ([`Kind::quarantine`],
//! [`Kind::retire_if_idle`]), which closes the mailbox and replaces or removes the entry
//! under one lock, so no request can slip in between and start a fresh actor.

use std::{collections::VecDeque, pin::Pin, sync::Arc, sync::atomic::Ordering};

use bytes::Bytes;
use kit::{claim::Claim, deadline::Deadline, echo::echo};
use prost::Message as _;
use proto::session::v1::{ActorRecord, RecentRequest};
use tokio::{
    sync::{broadcast, oneshot},
    time::Instant,
};
use tracing::Instrument as _;

use super::{
    JOB_REQUEST_PREFIX, JOB_REQUEST_TTL,
    entity::{After, Child, Ctx, Entity, Env, RecordWrite, Replay, Request, RequestId, Step},
    kind::{Cell, Envelope, Inner, Kind, Msg, Watching},
    panic::{CatchUnwind, message},
    registry::Described,
    store::mutation,
};
use crate::error::{Error, reason};

/// How many changes a slow watcher may fall behind before it skips to the newest.
const WATCH_BUFFER: usize = 16;

/// Largest actor record session-svc writes: store-svc's default value limit. The documented
/// limits keep every record far below it; a change that would still pass it is refused.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// State as loaded from the store.
struct Loaded<E: Entity> {
    /// `None`: this key has no state yet.
    state: Option<E::State>,
    /// Store version of `state` (0: absent); the next write expects it.
    version: u64,
    /// Idempotency memory: the recent request ids, oldest first, bounded by count and age.
    recent: VecDeque<RecentRequest>,
    /// Due time of the reminder indexed for this actor (0: none).
    reminder_ms: i64,
}

/// Commits what a command changed: the actor's record (state and recent request ids) at the
/// version it last read, and the entity's other records, all or nothing. On success `loaded`
/// is at the new version, and the reply comes back with the state's encoding kept
/// ([`Entity::keep_written`]).
async fn persist<E: Entity, R: Request<E>>(
    inner: &Inner<E>,
    key: &str,
    loaded: &mut Loaded<E>,
    reply: R::Reply,
    records: Vec<RecordWrite>,
    fence: Option<crate::cluster::Fence>,
    deadline: Deadline,
) -> Result<R::Reply, Error> {
    let mut mutations = Vec::with_capacity(records.len() + 1);
    let reply = match loaded.state.as_ref() {
        Some(state) => {
            let written = Bytes::from(R::encode_written(&inner.entity, state, &reply));
            let reply = R::keep_written(reply, written.clone());
            let record = encode_record(&written, &loaded.recent, loaded.reminder_ms);
            if record.len() > MAX_RECORD_BYTES {
                return Err(Error::FailedPrecondition(
                    reason::RECORD_TOO_LARGE,
                    format!(
                        "this change would make the stored {} record {} bytes, over the \
                     {MAX_RECORD_BYTES}-byte record limit; nothing was changed",
                        E::KIND,
                        record.len()
                    ),
                ));
            }
            mutations.push(mutation(
                E::KIND.to_string(),
                key.to_string(),
                Some(record),
                loaded.version,
            ));
            reply
        }
        // The handler let the state go (archived): delete the record, if there is one.
        None if loaded.version > 0 => {
            mutations.push(mutation(
                E::KIND.to_string(),
                key.to_string(),
                None,
                loaded.version,
            ));
            reply
        }
        None => reply,
    };
    let own = !mutations.is_empty();
    for write in records {
        mutations.push(mutation(
            write.namespace.to_string(),
            write.key,
            write.value,
            write.expected_version,
        ));
    }
    let versions = match inner.store.commit_fenced(mutations, fence, deadline).await {
        Err(Error::ShardMoved(why)) => {
            // Another replica took the shard: stop serving it here at once.
            if let (Some(cluster), Some(fence)) = (inner.cluster(), fence) {
                cluster.fenced_out(fence);
            }
            return Err(Error::ShardMoved(why));
        }
        committed => committed?,
    };
    if loaded.state.is_none() {
        loaded.version = 0;
        loaded.recent.clear();
    } else if own {
        loaded.version = versions.first().copied().unwrap_or_default();
    }
    Ok(reply)
}

/// `session.v1.ActorRecord`, encoded field by field so the state's bytes are not copied twice.
fn encode_record(state: &[u8], recent: &VecDeque<RecentRequest>, reminder_ms: i64) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, message};
    let mut buf = Vec::with_capacity(
        state.len() + 8 + recent.iter().map(|r| r.encoded_len() + 4).sum::<usize>(),
    );
    if !state.is_empty() {
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(state.len() as u64, &mut buf);
        buf.extend_from_slice(state);
    }
    for request in recent {
        message::encode(2, request, &mut buf);
    }
    if reminder_ms != 0 {
        prost::encoding::int64::encode(3, &reminder_ms, &mut buf);
    }
    buf
}

/// The reminder index record of `kind/key` due at `due_ms` (see `session.v1.ActorRecord`).
fn reminder_record(kind: &str, key: &str, due_ms: i64, put: bool) -> RecordWrite {
    RecordWrite {
        namespace: super::REMINDERS_NAMESPACE,
        key: super::reminder_key(kind, due_ms, key),
        value: put.then(|| key.as_bytes().to_vec()),
        // Each index record is written once and deleted once.
        expected_version: u64::from(!put),
    }
}

/// Keeps the reminder index in step with a write: retires `fired` (the reminder this write
/// handles, if it is the indexed one) and indexes what the new state wants when that is
/// earlier than what is indexed (a later wish waits for the indexed one to fire). Returns the
/// due time indexed after the write.
fn reindex<E: Entity>(
    entity: &E,
    key: &str,
    state: Option<&E::State>,
    indexed: i64,
    fired: Option<i64>,
    now_ms: i64,
    records: &mut Vec<RecordWrite>,
) -> i64 {
    let Some(state) = state else {
        // No state left (archived, or a reminder left over for a key never stored): nothing
        // will be due again. Retire the indexed reminder and the one that fired.
        if let Some(fired) = fired.filter(|&f| f != indexed && f != 0) {
            records.push(reminder_record(E::KIND, key, fired, false));
        }
        if indexed != 0 {
            records.push(reminder_record(E::KIND, key, indexed, false));
        }
        return 0;
    };
    let mut current = indexed;
    if current != 0 && fired == Some(current) {
        records.push(reminder_record(E::KIND, key, current, false));
        current = 0;
    }
    let Some(wanted) = entity.reminder_due(state) else {
        return current;
    };
    // A wish already past (its handler did not settle it) is retried a second from now, and
    // never at the key just retired in this same commit.
    let wanted = wanted.max(now_ms.saturating_add(1_000));
    if current == 0 || wanted < current {
        if current != 0 {
            records.push(reminder_record(E::KIND, key, current, false));
        }
        records.push(reminder_record(E::KIND, key, wanted, true));
        current = wanted;
    }
    current
}

/// What the idempotency memory says about a request id.
enum Seen {
    /// Never seen (or forgotten): apply it.
    New,
    /// A retry of an applied request: answer it from the state, with this outcome.
    Retry(u64),
}

/// Looks `request` up among the recent requests of `rpc`. The same id with another RPC or
/// other fields is a client mistake, refused naming `request_id`.
fn seen(recent: &VecDeque<RecentRequest>, rpc: &str, request: &RequestId) -> Result<Seen, Error> {
    let Some(earlier) = recent.iter().find(|r| r.request_id == request.id) else {
        return Ok(Seen::New);
    };
    if earlier.rpc.is_empty() {
        // Remembered by a session-svc from before fingerprints (it stored the reply instead):
        // what it was sent with is unknown, so the id alone says it is a retry.
        return Ok(Seen::Retry(earlier.outcome));
    }
    if earlier.rpc != rpc {
        return Err(Error::invalid(
            "request_id",
            format!(
                "was already used for {}; a request id names one request: send a new id",
                earlier.rpc
            ),
        ));
    }
    if earlier.fingerprint != request.fingerprint {
        return Err(Error::invalid(
            "request_id",
            format!(
                "was already used for a {rpc} with other fields; a retry must repeat the request \
                 exactly, a new request needs a new id"
            ),
        ));
    }
    Ok(Seen::Retry(earlier.outcome))
}

/// Remembers `request`, then forgets what is older than `ttl` or beyond `count`. Ids of
/// background jobs ([`JOB_REQUEST_PREFIX`]) are kept apart, so that an import streaming
/// thousands of entries through one actor never pushes out its clients' ids: at most
/// `count / 2` of them, for [`JOB_REQUEST_TTL`].
fn remember(
    recent: &mut VecDeque<RecentRequest>,
    entry: RecentRequest,
    count: usize,
    ttl: std::time::Duration,
) {
    let before = |age: std::time::Duration| {
        entry
            .time_ms
            .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
    };
    // (cap, oldest time kept) of clients' ids, then of jobs' ids.
    let bounds = [
        (count, before(ttl)),
        ((count / 2).max(1), before(JOB_REQUEST_TTL)),
    ];
    recent.push_back(entry);
    let mut kept = [0usize; 2];
    let keep: Vec<bool> = recent
        .iter()
        .rev()
        .map(|r| {
            let class = usize::from(r.request_id.starts_with(JOB_REQUEST_PREFIX));
            let (cap, oldest) = bounds[class];
            let keep = kept[class] < cap && r.time_ms >= oldest;
            kept[class] += usize::from(keep);
            keep
        })
        .collect();
    let mut keep = keep.into_iter().rev();
    recent.retain(|_| keep.next().unwrap_or(true));
}

/// Every record of `children`, page by page.
async fn load_children(
    store: &super::Store,
    children: &super::entity::Children,
    deadline: Deadline,
) -> Result<Vec<Child>, Error> {
    let mut loaded = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = store
            .scan(children.namespace, &children.prefix, 1000, token, deadline)
            .await?;
        loaded.extend(page.into_iter().map(|e| Child {
            key: e.key,
            value: e.value,
            version: e.version,
        }));
        if next.is_empty() {
            return Ok(loaded);
        }
        token = next;
    }
}

/// A request on its way to an actor, its reply type erased so one mailbox carries them all.
pub(super) trait Job<E: Entity>: Send {
    /// Handles the request on `actor` and delivers the answer.
    fn run<'a>(
        self: Box<Self>,
        actor: &'a mut Actor<E>,
        deadline: Deadline,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
    /// Answers `error` without running (the mailbox closed under it).
    fn refuse(self: Box<Self>, error: Error);
}

/// A call: the request, where its typed answer goes, and who decides whether it still runs.
pub(super) struct Call<R: Send + 'static, T> {
    /// The request.
    pub request: R,
    /// The caller's end.
    pub reply: oneshot::Sender<Result<T, Error>>,
    /// Shared with the caller: a call its caller abandoned at the deadline never runs.
    pub claim: Arc<Claim>,
}

impl<E: Entity, R: Request<E>> Job<E> for Call<R, R::Reply> {
    fn run<'a>(
        self: Box<Self>,
        actor: &'a mut Actor<E>,
        deadline: Deadline,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Self {
                request,
                reply,
                claim,
            } = *self;
            if !claim.start() {
                return; // Its caller gave up and answered DEADLINE_EXCEEDED: never run it.
            }
            let result = actor.command(request, deadline).await;
            let _ = reply.send(result); // the caller may have gone
        })
    }

    fn refuse(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// A cast: a request whose sender wants no answer.
pub(super) struct Cast<R>(pub R);

impl<E: Entity, R: Request<E>> Job<E> for Cast<R> {
    fn run<'a>(
        self: Box<Self>,
        actor: &'a mut Actor<E>,
        deadline: Deadline,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Err(error) = actor.command(self.0, deadline).await {
                tracing::info!(%error, "cast failed");
            }
        })
    }

    fn refuse(self: Box<Self>, _error: Error) {}
}

pub(super) struct Actor<E: Entity> {
    /// The registry, entity and store.
    kind: Kind<E>,
    /// This actor's key.
    key: Arc<str>,
    /// Mailbox and bookkeeping shared with the registry.
    cell: Arc<Cell<E>>,
    /// `None` until loaded, and again after anything that leaves the durable state unknown
    /// (a crash, a failed or conflicting write): the next message reloads it.
    loaded: Option<Loaded<E>>,
    /// Times of recent crashes, for the restart intensity.
    crashes: VecDeque<Instant>,
    /// Set when a durable reminder activated this actor: once it is handled, the actor goes
    /// back to sleep if nothing else came for it, rather than stay live for an idle timeout
    /// (a backlog of reminders would otherwise fill the registry with woken actors).
    woken_by_reminder: bool,
    /// When this activation began, in ticks of [`super::Actors::now_tick`] (admin GetActor).
    /// Kept here rather than in the registry entry; the boxed actor stays within the same
    /// allocation size class with it.
    activated: u64,
}

/// Runs the actor of `key` until its mailbox closes: passivated or evicted (by the registry's
/// sweeper, when idle), quarantined, or shut down.
///
/// The actor is boxed: an `async fn` stores its arguments and the moved-in copies apart, so a
/// by-value actor would sit twice in every idle task. Boxed, the task holds a pointer.
pub(super) fn run<E: Entity>(
    kind: Kind<E>,
    key: Arc<str>,
    cell: Arc<Cell<E>>,
) -> impl Future<Output = ()> + Send {
    let activated = kind.inner.actors.now_tick();
    Box::new(Actor {
        kind,
        key,
        cell,
        loaded: None,
        crashes: VecDeque::new(),
        woken_by_reminder: false,
        activated,
    })
    .run()
}

impl<E: Entity> Actor<E> {
    async fn run(mut self: Box<Self>) {
        // An idle actor is parked here and owns no timer: idleness is the sweeper's business,
        // which keeps a million idle actors cheap.
        while let Some(envelope) = self.cell.mailbox.recv().await {
            let Some(envelope) = self.answer_describe(envelope) else {
                // No activity: the last use, which decides idleness and eviction, stays.
                self.cell.mailbox.done();
                continue;
            };
            let handling = self.handling(envelope);
            let handled = handling.await;
            self.cell.mailbox.done();
            self.cell
                .last_used
                .store(self.kind.inner.actors.now_tick(), Ordering::Relaxed);
            if let Err(payload) = handled
                && !self.restart(message(payload.as_ref()))
            {
                return;
            }
            if std::mem::take(&mut self.woken_by_reminder)
                && self
                    .cell
                    .watchers()
                    .as_ref()
                    .is_none_or(|w| w.receiver_count() == 0)
                && self.kind.retire_if_idle(&self.key, self.cell.id)
            {
                return;
            }
            // A key with no state (a read of a session never started) keeps nothing worth a
            // live actor: stop now rather than let unknown keys fill the registry.
            if !E::KEEP_WITHOUT_STATE
                && self.loaded.as_ref().is_some_and(|l| l.state.is_none())
                && self.kind.retire_if_idle(&self.key, self.cell.id)
            {
                return;
            }
        }
    }

    /// Answers a [`Msg::Describe`] at once, from what this task holds (no store read, no
    /// load); hands any other message back to be handled.
    fn answer_describe(&self, envelope: Box<Envelope<E>>) -> Option<Box<Envelope<E>>> {
        if !matches!(envelope.msg, Msg::Describe(_)) {
            return Some(envelope);
        }
        let Envelope { msg, deadline, .. } = *envelope;
        if let Msg::Describe(reply) = msg
            && !deadline.expired()
        {
            // Encoding the state is the entity's code: a panic there must not end the task
            // outside its supervision. The question then goes unanswered.
            let described =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.describe()));
            if let Ok(described) = described {
                let _ = reply.send(described); // the asker may have given up
            }
        }
        None
    }

    /// What this task alone knows of its actor, for admin GetActor.
    fn describe(&self) -> Described {
        let now = self.kind.inner.actors.now_tick();
        let loaded = self.loaded.as_ref();
        let state_bytes = loaded
            .and_then(|l| l.state.as_ref())
            .map_or(0, |state| self.kind.inner.entity.encode_state(state).len());
        Described {
            loaded: loaded.is_some(),
            state_bytes: state_bytes as u64,
            version: loaded.map_or(0, |l| l.version),
            reminder_ms: loaded.map(|l| l.reminder_ms).filter(|&due| due != 0),
            active_for: std::time::Duration::from_millis(now.saturating_sub(self.activated)),
        }
    }

    /// Handling one message, boxed and panic-catching. Built in a separate function so that
    /// the (large) handling future never takes space in the idle actor's own future.
    fn handling(
        &mut self,
        envelope: Box<Envelope<E>>,
    ) -> CatchUnwind<impl Future<Output = ()> + Send + '_> {
        // A span per message rather than per actor: an idle actor then holds no span. It is
        // the child of the sender's span, and the message is handled inside both: with the
        // debug span off, the sender's is still current, so the actor's log lines and store
        // calls are in the sender's trace.
        let sender = envelope.span.clone();
        let span = tracing::debug_span!(parent: &sender, "actor", kind = E::KIND, key = %self.key);
        CatchUnwind::new(self.handle(envelope).instrument(span).instrument(sender))
    }

    /// After a crash: discard the state (the next message reloads it), or quarantine the key
    /// if it crashes too often. False when the actor must stop.
    fn restart(&mut self, reason: &str) -> bool {
        let settings = &self.kind.inner.settings;
        let now = Instant::now();
        self.loaded = None;
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > settings.restart_window)
        {
            self.crashes.pop_front();
        }
        let restarts = self.cell.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        self.kind.inner.crashed();
        if self.crashes.len() <= settings.max_restarts as usize {
            tracing::warn!(
                reason,
                restarts,
                "actor crashed; restarting from durable state"
            );
            return true;
        }
        tracing::error!(
            reason,
            crashes = self.crashes.len(),
            window = ?settings.restart_window,
            quarantine = ?settings.quarantine,
            "actor crash loop; quarantining the key"
        );
        let waiting = self
            .kind
            .quarantine(&self.key, &self.cell, settings.quarantine, restarts);
        for envelope in waiting {
            envelope.refuse(Error::Quarantined {
                kind: E::KIND,
                key: self.key.to_string(),
                retry_after: settings.quarantine,
            });
        }
        false
    }

    async fn handle(&mut self, envelope: Box<Envelope<E>>) {
        let Envelope { msg, deadline, .. } = *envelope;
        match msg {
            Msg::Job(job) => job.run(self, deadline).await,
            Msg::Watch(reply) => {
                let result = self.subscribe(deadline).await;
                let _ = reply.send(result);
            }
            Msg::Activate(reply) => {
                let result = self.load(deadline).await;
                let _ = reply.send(result);
            }
            Msg::Crash => panic!("crashed on purpose by KillActor"),
            Msg::Describe(reply) => {
                let _ = reply.send(self.describe()); // normally answered before handling
            }
        }
    }

    async fn command<R: Request<E>>(
        &mut self,
        command: R,
        deadline: Deadline,
    ) -> Result<R::Reply, Error> {
        if deadline.expired() {
            self.kind
                .inner
                .deadline_drops
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::DeadlineExceeded(
                "the request waited in the actor's mailbox past its deadline and was not executed"
                    .into(),
            ));
        }
        let fired = command.fired_reminder();
        self.woken_by_reminder = fired.is_some() && self.loaded.is_none();
        self.load(deadline).await?;
        let inner = self.kind.inner.clone();
        let entity = &inner.entity;
        let loaded = self.loaded.as_mut().expect("loaded above");
        let rpc = command.name();
        let request = command.request_id().cloned();
        if let Some(request) = &request
            && let Seen::Retry(outcome) = seen(&loaded.recent, rpc, request)?
        {
            let state = loaded.state.as_ref();
            return match command.replay(entity, &self.key, state, loaded.version, outcome)? {
                Replay::Reply(reply) => Ok(reply),
                Replay::Fetch {
                    namespace,
                    key,
                    decode,
                } => {
                    let stored = inner.store.get(namespace, &key, deadline).await?;
                    let stored = stored.ok_or_else(|| {
                        Error::Corrupt(format!(
                            "{namespace}/{}, written by this request, is gone",
                            echo(&key)
                        ))
                    })?;
                    decode(&stored.value)
                        .map_err(|e| Error::Corrupt(format!("{namespace}/{}: {e}", echo(&key))))
                }
            };
        }
        let mut command = command;
        // Writes made while preparing check the shard's epoch like the commit does.
        let fenced;
        let store = if R::PREPARE_WRITES && self.cell.fence.is_some() {
            fenced = inner.store.fenced(self.cell.fence);
            &fenced
        } else {
            &inner.store
        };
        let env = Env {
            entity,
            key: &self.key,
            state: loaded.state.as_ref(),
            store,
            deadline,
        };
        let prepared = match command.prepare(env) {
            Some(effect) => effect.await,
            None => Ok(()),
        };
        if let Err(error) = prepared {
            if R::PREPARE_WRITES {
                self.loaded = None; // the store may have moved under the state: reload
            }
            return Err(error);
        }
        let ctx = Ctx::now(loaded.version);
        let (reply, mut records, outcome, after) =
            match command.handle(entity, &self.key, &mut loaded.state, ctx)? {
                Step::Read(reply) => return Ok(reply),
                Step::Write {
                    reply,
                    records,
                    outcome,
                    after,
                } => (reply, records, outcome, after),
            };
        // From here the in-memory state is ahead of the store: any failure discards it.
        if let Some(RequestId { id, fingerprint }) = request {
            let entry = RecentRequest {
                request_id: id,
                rpc: rpc.to_string(),
                fingerprint,
                time_ms: ctx.now_ms,
                outcome,
            };
            let settings = &inner.settings;
            remember(
                &mut loaded.recent,
                entry,
                settings.recent_requests,
                settings.request_id_ttl,
            );
        }
        if E::REMINDERS {
            loaded.reminder_ms = reindex(
                entity,
                &self.key,
                loaded.state.as_ref(),
                loaded.reminder_ms,
                fired,
                ctx.now_ms,
                &mut records,
            );
        }
        let written = persist::<E, R>(
            &inner,
            &self.key,
            loaded,
            reply,
            records,
            self.cell.fence,
            deadline,
        )
        .await;
        match written {
            Ok(reply) => {
                self.publish();
                if let Some(After(after)) = after
                    && let Err(error) = after(deadline).await
                {
                    // Committed already: the reply stands. What was left undone (units not
                    // yet released) is the sweeper's to reconcile.
                    tracing::info!(%error, "follow-up of a committed write failed; left to the sweeper");
                }
                Ok(reply)
            }
            Err(error) => {
                // Conflict, timeout or outage: whether the write landed is unknown or another
                // writer won. Never guess: reload before the next message.
                self.loaded = None;
                Err(error)
            }
        }
    }

    async fn load(&mut self, deadline: Deadline) -> Result<(), Error> {
        if self.loaded.is_some() {
            return Ok(());
        }
        let inner = self.kind.inner.clone();
        let loaded = match inner.store.get(E::KIND, &self.key, deadline).await? {
            None => Loaded {
                state: None,
                version: 0,
                recent: VecDeque::new(),
                reminder_ms: 0,
            },
            Some(stored) => {
                let record = ActorRecord::decode(stored.value.as_slice())
                    .map_err(|e| Error::Corrupt(format!("{}/{}: {e}", E::KIND, echo(&self.key))))?;
                let mut state = inner
                    .entity
                    .decode_state(&record.state)
                    .map_err(|e| Error::Corrupt(format!("{}/{}: {e}", E::KIND, echo(&self.key))))?;
                if let Some(children) = inner.entity.children(&self.key) {
                    let loaded = load_children(&inner.store, &children, deadline).await?;
                    inner
                        .entity
                        .attach_children(&mut state, loaded)
                        .map_err(|e| {
                            Error::Corrupt(format!("{}/{}: {e}", E::KIND, echo(&self.key)))
                        })?;
                }
                Loaded {
                    state: Some(state),
                    version: stored.version,
                    recent: record.recent_requests.into(),
                    reminder_ms: record.reminder_ms,
                }
            }
        };
        self.loaded = Some(loaded);
        Ok(())
    }

    /// Adds a watcher, within `max_watchers_per_key`: the actor handles one message at a
    /// time, so counting its receivers here cannot race with another subscription.
    async fn subscribe(&mut self, deadline: Deadline) -> Result<Watching<E>, Error> {
        if deadline.expired() {
            return Err(Error::DeadlineExceeded(
                "watch request expired in the mailbox".into(),
            ));
        }
        self.load(deadline).await?;
        let loaded = self.loaded.as_ref().expect("loaded above");
        let entity = &self.kind.inner.entity;
        let Some(state) = &loaded.state else {
            return Err(entity.missing(&self.key));
        };
        let settings = &self.kind.inner.settings;
        let mut watchers = self.cell.watchers();
        let sender = watchers.get_or_insert_with(|| broadcast::channel(WATCH_BUFFER).0);
        if sender.receiver_count() >= settings.max_watchers_per_key {
            return Err(Error::WatcherLimit {
                cap: format!(
                    "{} watch streams are open on this {}, the most one key may have \
                     (--max-watchers-per-key)",
                    settings.max_watchers_per_key,
                    E::KIND
                ),
                retry_after: settings.watcher_retry_after(),
            });
        }
        let snapshot = entity.snapshot(state, loaded.version);
        Ok((snapshot, sender.subscribe()))
    }

    /// Sends the new state to watchers; never waits for them (a slow one skips ahead).
    fn publish(&mut self) {
        let mut watchers = self.cell.watchers();
        if watchers.as_ref().is_some_and(|s| s.receiver_count() == 0) {
            *watchers = None;
        }
        if let (Some(sender), Some(loaded)) = (watchers.as_ref(), &self.loaded)
            && let Some(state) = &loaded.state
        {
            let _ = sender.send(self.kind.inner.entity.snapshot(state, loaded.version));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, time_ms: i64) -> RecentRequest {
        RecentRequest {
            request_id: id.into(),
            rpc: "add_item".into(),
            fingerprint: 7,
            time_ms,
            outcome: 3,
        }
    }

    #[test]
    fn a_record_encoded_by_hand_decodes_as_an_actor_record() {
        let recent: VecDeque<RecentRequest> = vec![request("r-1", 5)].into();
        let bytes = encode_record(b"state", &recent, 1_700_000_000_000);
        let record = ActorRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(record.state, b"state");
        assert_eq!(record.recent_requests, Vec::from(recent));
        assert_eq!(record.reminder_ms, 1_700_000_000_000);
        let none = ActorRecord::decode(encode_record(b"s", &VecDeque::new(), 0).as_slice());
        assert_eq!(none.unwrap().reminder_ms, 0);
    }

    /// An entity whose state is the reminder time it wants (0: none).
    struct Wants;

    impl Entity for Wants {
        const KIND: &'static str = "w";
        const KEY_FIELD: &'static str = "key";
        const REMINDERS: bool = true;
        type State = i64;
        type Snapshot = i64;

        fn decode_state(&self, _: &[u8]) -> Result<i64, String> {
            Ok(0)
        }
        fn encode_state(&self, _: &i64) -> Vec<u8> {
            Vec::new()
        }
        fn snapshot(&self, state: &i64, _: u64) -> i64 {
            *state
        }
        fn is_final(&self, _: &i64) -> bool {
            false
        }
        fn missing(&self, _: &str) -> Error {
            Error::NotFound(reason::NOT_FOUND, "none".into())
        }
        fn reminder_due(&self, state: &i64) -> Option<i64> {
            (*state > 0).then_some(*state)
        }
    }

    /// What `reindex` wrote, as `(due, put)` pairs, and the due time it left indexed.
    fn reindexed(wants: i64, indexed: i64, fired: Option<i64>) -> (Vec<(String, bool)>, i64) {
        let mut records = Vec::new();
        let now = 1_000;
        let current = reindex(&Wants, "k", Some(&wants), indexed, fired, now, &mut records);
        let writes = records
            .into_iter()
            .map(|r| {
                assert_eq!(r.namespace, super::super::REMINDERS_NAMESPACE);
                let put = r.value.is_some();
                assert_eq!(r.expected_version, u64::from(!put), "{}", r.key);
                (r.key, put)
            })
            .collect();
        (writes, current)
    }

    fn key(due: i64) -> String {
        super::super::reminder_key("w", due, "k")
    }

    #[test]
    fn the_reminder_index_moves_only_earlier_on_a_write_and_is_retired_when_it_fires() {
        assert_eq!(reindexed(5_000, 0, None), (vec![(key(5_000), true)], 5_000));
        // A later wish costs no write: the indexed reminder fires first and moves then.
        assert_eq!(reindexed(9_000, 5_000, None), (vec![], 5_000));
        assert_eq!(
            reindexed(3_000, 5_000, None),
            (vec![(key(5_000), false), (key(3_000), true)], 3_000)
        );
        // The indexed reminder fired: retired, and the next wish indexed.
        assert_eq!(
            reindexed(9_000, 5_000, Some(5_000)),
            (vec![(key(5_000), false), (key(9_000), true)], 9_000)
        );
        assert_eq!(
            reindexed(0, 5_000, Some(5_000)),
            (vec![(key(5_000), false)], 0)
        );
        // A second delivery of a reminder already retired touches nothing.
        assert_eq!(reindexed(9_000, 9_000, Some(5_000)), (vec![], 9_000));
        // A wish already past is retried a second later, never at the key just retired.
        assert_eq!(
            reindexed(500, 500, Some(500)),
            (vec![(key(500), false), (key(2_000), true)], 2_000)
        );
    }

    #[test]
    fn a_request_id_is_a_retry_only_for_the_same_rpc_and_fields() {
        let recent: VecDeque<RecentRequest> = vec![request("r-1", 5)].into();
        let id = |id: &str, fingerprint| RequestId {
            id: id.into(),
            fingerprint,
        };
        assert!(matches!(
            seen(&recent, "add_item", &id("r-1", 7)),
            Ok(Seen::Retry(3))
        ));
        assert!(matches!(
            seen(&recent, "add_item", &id("r-2", 7)),
            Ok(Seen::New)
        ));
        let before_fingerprints: VecDeque<RecentRequest> = vec![RecentRequest {
            rpc: String::new(),
            fingerprint: 0,
            ..request("old", 5)
        }]
        .into();
        assert!(matches!(
            seen(&before_fingerprints, "checkout", &id("old", 9)),
            Ok(Seen::Retry(_))
        ));
        for (rpc, fingerprint) in [("checkout", 7), ("add_item", 8)] {
            match seen(&recent, rpc, &id("r-1", fingerprint)) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "request_id"),
                _ => panic!("{rpc}/{fingerprint} must be refused naming request_id"),
            }
        }
    }

    #[test]
    fn job_ids_are_bounded_apart_and_never_push_out_clients_ids() {
        let ttl = std::time::Duration::from_secs(600);
        let mut recent = VecDeque::new();
        remember(&mut recent, request("client-1", 0), 4, ttl);
        for i in 0..10 {
            remember(&mut recent, request(&format!("job/j/{i}"), 1 + i), 4, ttl);
        }
        let ids: Vec<_> = recent.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(
            ids,
            ["client-1", "job/j/8", "job/j/9"],
            "half the count for jobs"
        );
        // Job ids outlive the clients' ttl (a job resumes after a long outage)...
        remember(&mut recent, request("client-2", 3_600_000), 4, ttl);
        let ids: Vec<_> = recent.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["job/j/8", "job/j/9", "client-2"]);
        // ...but not JOB_REQUEST_TTL.
        let late = i64::try_from(JOB_REQUEST_TTL.as_millis()).unwrap() + 100;
        remember(&mut recent, request("client-3", late), 4, ttl);
        let ids: Vec<_> = recent.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["client-3"]);
    }

    #[test]
    fn recent_requests_are_bounded_by_count_and_age() {
        let ttl = std::time::Duration::from_secs(10);
        let mut recent = VecDeque::new();
        for i in 0..5 {
            remember(&mut recent, request(&format!("r-{i}"), i * 1000), 3, ttl);
        }
        let ids: Vec<_> = recent.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["r-2", "r-3", "r-4"]);
        remember(&mut recent, request("late", 13_500), 3, ttl);
        let ids: Vec<_> = recent.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(
            ids,
            ["r-4", "late"],
            "ids older than 10 s before the newest are gone"
        );
    }
}
