//! The actor task: one per live key, owning its state, handling one message at a time, and
//! supervising itself.
//!
//! Supervision is local. A panic while handling a message is caught; the message's caller gets
//! an error (its reply is dropped unsent); the in-memory state is discarded and reloaded from
//! the store before the next message: a restart from the last durable state. More than
//! `max_restarts` crashes within `restart_window` quarantines the key for a while. Other keys
//! never notice (OTP would take the supervisor down after its intensity; we need not).

use std::{collections::VecDeque, sync::Arc, sync::atomic::Ordering};

use bytes::Bytes;
use prost::Message as _;
use proto::session::v1::{ActorRecord, RecentRequest};
use store_svc::kit::deadline::Deadline;
use tokio::{sync::broadcast, time::Instant};
use tracing::Instrument as _;

use super::{
    entity::{Command as _, Ctx, Entity, SideWrite, Step},
    kind::{Cell, Envelope, Inner, Kind, Msg, Subscription},
    panic::{CatchUnwind, message},
};
use crate::error::Error;

/// How many changes a slow watcher may fall behind before it skips to the newest.
const WATCH_BUFFER: usize = 16;

/// State as loaded from the store.
struct Loaded<E: Entity> {
    /// `None`: this key has no state yet.
    state: Option<E::State>,
    /// Store version of `state` (0: absent); the next write expects it.
    version: u64,
    /// Idempotency memory: request id and encoded reply, oldest first; kept in its stored
    /// form so that writing the record copies nothing.
    recent: VecDeque<RecentRequest>,
}

/// Writes what a command changed: the side records first (create-if-absent), then the
/// actor's record with the version it last read. On success `loaded` is at the new version,
/// and the reply comes back with the state's encoding kept ([`Entity::keep_written`]).
async fn persist<E: Entity>(
    inner: &Inner<E>,
    key: &str,
    loaded: &mut Loaded<E>,
    request_id: Option<String>,
    reply: E::Reply,
    side_writes: Vec<SideWrite>,
    deadline: Deadline,
) -> Result<E::Reply, Error> {
    for write in side_writes {
        // Create-if-absent with a key derived from the command: already there means a retry
        // after a crash between the two writes, and it counts as written.
        match inner
            .store
            .put(&write.namespace, &write.key, write.value, 0, deadline)
            .await
        {
            Ok(_) | Err(Error::Aborted(_)) => {}
            Err(error) => return Err(error),
        }
    }
    let state = loaded
        .state
        .as_ref()
        .ok_or_else(|| Error::Corrupt("a write step left no state".into()))?;
    let written = Bytes::from(inner.entity.encode_written(state, &reply));
    let reply = inner.entity.keep_written(reply, written.clone());
    if let Some(request_id) = request_id {
        let reply = inner.entity.encode_reply(&reply);
        loaded.recent.push_back(RecentRequest { request_id, reply });
        while loaded.recent.len() > inner.settings.recent_requests {
            loaded.recent.pop_front();
        }
    }
    let record = encode_record(&written, &loaded.recent);
    loaded.version = inner
        .store
        .put(E::KIND, key, record, loaded.version, deadline)
        .await?;
    Ok(reply)
}

/// `session.v1.ActorRecord`, encoded field by field so the remembered replies are not cloned.
fn encode_record(state: &[u8], recent: &VecDeque<RecentRequest>) -> Vec<u8> {
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
    buf
}

struct Actor<E: Entity> {
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
}

/// Runs the actor of `key` until its mailbox closes: passivated or evicted (by the registry's
/// sweeper, when idle), quarantined, or shut down.
///
///
/// The actor is boxed: an `async fn` stores its arguments and the moved-in copies apart, so a
/// by-value actor would sit twice in every idle task. Boxed, the task holds a pointer.
pub(super) fn run<E: Entity>(
    kind: Kind<E>,
    key: Arc<str>,
    cell: Arc<Cell<E>>,
) -> impl Future<Output = ()> + Send {
    Box::new(Actor {
        kind,
        key,
        cell,
        loaded: None,
        crashes: VecDeque::new(),
    })
    .run()
}

impl<E: Entity> Actor<E> {
    async fn run(mut self: Box<Self>) {
        // An idle actor is parked here and owns no timer: idleness is the sweeper's business,
        // which keeps a million idle actors cheap.
        while let Some(envelope) = self.cell.mailbox.recv().await {
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
            // A key with no state (a read of a session never started) keeps nothing worth a
            // live actor: stop now rather than let unknown keys fill the registry.
            if self.loaded.as_ref().is_some_and(|l| l.state.is_none()) && self.cell.close_if_idle()
            {
                self.kind.remove(&self.key, self.cell.id);
                return;
            }
        }
    }

    /// Handling one message, boxed and panic-catching. Built in a separate function so that
    /// the (large) handling future never takes space in the idle actor's own future.
    fn handling(
        &mut self,
        envelope: Box<Envelope<E>>,
    ) -> CatchUnwind<impl Future<Output = ()> + Send + '_> {
        // A span per message rather than per actor: an idle actor then holds no span.
        let span = tracing::debug_span!("actor", kind = E::KIND, key = %self.key);
        CatchUnwind::new(self.handle(envelope).instrument(span))
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
        for envelope in self.cell.mailbox.close() {
            (*envelope).refuse(Error::Quarantined {
                kind: E::KIND,
                key: self.key.to_string(),
                retry_after: settings.quarantine,
            });
        }
        self.kind
            .quarantine(&self.key, self.cell.id, settings.quarantine, restarts);
        false
    }

    async fn handle(&mut self, envelope: Box<Envelope<E>>) {
        let Envelope { msg, deadline } = *envelope;
        match msg {
            Msg::Command(command, reply) => {
                let result = self.command(command, deadline).await;
                let _ = reply.send(result); // the caller may have gone
            }
            Msg::Cast(command) => {
                if let Err(error) = self.command(command, deadline).await {
                    tracing::info!(%error, "cast failed");
                }
            }
            Msg::Watch(reply) => {
                let result = self.subscribe(deadline).await;
                let _ = reply.send(result);
            }
            Msg::Activate(reply) => {
                let result = self.load(deadline).await;
                let _ = reply.send(result);
            }
            Msg::Crash => panic!("crashed on purpose by KillActor"),
        }
    }

    async fn command(
        &mut self,
        command: E::Command,
        deadline: Deadline,
    ) -> Result<E::Reply, Error> {
        if deadline.expired() {
            return Err(Error::DeadlineExceeded(
                "the request waited in the actor's mailbox past its deadline and was not executed"
                    .into(),
            ));
        }
        self.load(deadline).await?;
        let inner = self.kind.inner.clone();
        let entity = &inner.entity;
        let loaded = self.loaded.as_mut().expect("loaded above");
        let request_id = command.request_id().map(str::to_owned);
        if let Some(id) = &request_id
            && let Some(seen) = loaded.recent.iter().find(|seen| seen.request_id == *id)
        {
            return entity
                .decode_reply(&seen.reply)
                .map_err(|e| Error::Corrupt(format!("remembered reply for {id:?}: {e}")));
        }
        let ctx = Ctx::now(loaded.version);
        let (reply, side_writes) =
            match entity.handle(&self.key, &mut loaded.state, command, ctx)? {
                Step::Read(reply) => return Ok(reply),
                Step::Write { reply, side_writes } => (reply, side_writes),
            };
        // From here the in-memory state is ahead of the store: any failure discards it.
        let written = persist(
            &inner,
            &self.key,
            loaded,
            request_id,
            reply,
            side_writes,
            deadline,
        )
        .await;
        match written {
            Ok(reply) => {
                self.publish();
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
            },
            Some(stored) => {
                let record = ActorRecord::decode(stored.value.as_slice())
                    .map_err(|e| Error::Corrupt(format!("{}/{}: {e}", E::KIND, self.key)))?;
                let state = inner
                    .entity
                    .decode_state(&record.state)
                    .map_err(|e| Error::Corrupt(format!("{}/{}: {e}", E::KIND, self.key)))?;
                Loaded {
                    state: Some(state),
                    version: stored.version,
                    recent: record.recent_requests.into(),
                }
            }
        };
        self.loaded = Some(loaded);
        Ok(())
    }

    async fn subscribe(&mut self, deadline: Deadline) -> Result<Subscription<E>, Error> {
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
        let snapshot = entity.snapshot(state, loaded.version);
        let mut watchers = self.cell.watchers();
        let sender = watchers.get_or_insert_with(|| broadcast::channel(WATCH_BUFFER).0);
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

    #[test]
    fn a_record_encoded_by_hand_decodes_as_an_actor_record() {
        let recent: VecDeque<RecentRequest> = vec![RecentRequest {
            request_id: "r-1".into(),
            reply: vec![1, 2, 3],
        }]
        .into();
        let bytes = encode_record(b"state", &recent);
        let record = ActorRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(record.state, b"state");
        assert_eq!(record.recent_requests, Vec::from(recent));
    }
}
