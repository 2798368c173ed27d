//! Where live actors are found: a sharded concurrent map per kind, and the cross-kind view
//! that enforces `max_actors` and serves the admin API.
//!
//! Not a registry actor: one task owning the map would serialise every lookup, which is the
//! bottleneck of an Erlang registry kept in one cache process. Here a lookup locks one of
//! [`SHARDS`] small mutexes for a hash-map probe and never across an await.
//!
//! Each shard keeps its entries in least-recently-touched order (a linked hash map: a touch
//! moves the entry to the back in O(1), under the shard lock the lookup already holds), so
//! eviction at the cap looks at the fronts of the shards, never at every actor (Orleans'
//! activation collector, Akka's passivation). Counts for `/metrics` and GetStats are kept as
//! counters for the same reason; only the admin ListActors walks the maps.

use std::{
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hashlink::LinkedHashMap;
use kit::deadline::Deadline;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
    time::Instant,
};

/// Shards per kind: enough that two cores rarely contend, few enough that looking at the
/// front of each is cheap.
pub const SHARDS: usize = 64;

/// Entries looked at from the front of a shard when choosing an eviction victim: busy or
/// quarantined entries met there are moved to the back, so the next look sees new ones.
pub const FRONT_WINDOW: usize = 16;

/// Rounds over the shard fronts that find nothing idle before an activation is refused: a
/// round moves what it skipped to the back, so a later round looks deeper.
const EMPTY_ROUNDS: usize = 4;

/// One actor as the admin API and eviction see it, whatever its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorInfo {
    /// The kind (`cart`, `todo`).
    pub kind: &'static str,
    /// The key.
    pub key: Arc<str>,
    /// `live` or `quarantined`.
    pub status: ActorStatus,
    /// Messages waiting in its mailbox.
    pub mailbox_len: usize,
    /// Time since its last message.
    pub idle_for: Duration,
    /// Crashes of this activation.
    pub restarts: u32,
    /// Quarantined: how long it still refuses requests (zero once ended, until the entry is
    /// swept or looked up). `None` when live.
    pub quarantined_for: Option<Duration>,
}

/// One actor as admin GetActor sees it: its registry entry, and what the actor task said of
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorDetail {
    /// The registry entry.
    pub info: ActorInfo,
    /// Watch streams open on it now (0 when quarantined).
    pub watchers: u32,
    /// Its in-memory timers ([`super::Kind::send_after`]) still pending (0 when quarantined).
    pub timers: u32,
    /// What the actor task answered; `None` when it has no task (quarantined) or did not
    /// answer: its mailbox was full, or it was busy until the deadline.
    pub described: Option<Described>,
}

/// What only an actor task knows of itself, answered between two messages (OTP's
/// `sys:get_status`) rather than kept in its registry entry, where a million idle actors would
/// each pay for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Described {
    /// Its state is in memory (false before the first load, and between a crash and the next
    /// message, which reloads it).
    pub loaded: bool,
    /// Size of its state encoded as stored (0 when not loaded or holding none).
    pub state_bytes: u64,
    /// Store version of its record (0: never written, or not loaded).
    pub version: u64,
    /// When its durable reminder is due, in milliseconds since the Unix epoch, if it has one.
    pub reminder_ms: Option<i64>,
    /// Time since this activation began.
    pub active_for: Duration,
}

/// An admin GetActor under way: the entry as the registry sees it and, if the live actor's
/// mailbox took the question, its answer to come.
pub struct Describing {
    /// The entry, `described` left `None`.
    pub detail: ActorDetail,
    /// Where the actor's answer arrives; dropped unsent if the actor stops first.
    pub answer: Option<oneshot::Receiver<Described>>,
}

/// Whether a registry entry is a running actor or a resting crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorStatus {
    /// Running (busy or idle).
    Live,
    /// Crashed too often; refuses requests until its quarantine ends.
    Quarantined,
}

/// One kind's counters, read by `/metrics` and GetStats instead of listing actors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live actors of the kind now.
    pub live: usize,
    /// Quarantine entries now (an ended one counts until it is swept or looked up).
    pub quarantined: usize,
    /// Handler crashes since start.
    pub crashes: u64,
    /// Keys quarantined since start.
    pub quarantines: u64,
    /// Durable reminders handed to their actors since start (a resend counts again).
    pub reminders_fired: u64,
    /// Activations since start.
    pub activations: u64,
    /// Actors stopped since start for idleness, at the cap, or holding nothing.
    pub passivations: u64,
    /// Messages refused for a full mailbox since start.
    pub mailbox_rejections: u64,
    /// Messages dropped unexecuted since start, their deadline passed.
    pub deadline_drops: u64,
    /// Open watch streams of the kind now.
    pub watchers: usize,
}

/// What every kind's table offers the cross-kind view.
pub trait Table: Send + Sync + 'static {
    /// The kind it holds.
    fn kind(&self) -> &'static str;
    /// The first idle actor among the [`FRONT_WINDOW`] least recently touched entries of
    /// shard `shard`, as an eviction candidate (its `table` left 0). Entries skipped on the
    /// way (busy actors, quarantines) move to the back; ended quarantines are dropped.
    fn front_candidate(&self, shard: usize) -> Front;
    /// Passivates `key` if it is still the same idle actor; true if it stopped.
    fn evict(&self, candidate: &Candidate) -> bool;
    /// Every entry, for the admin API.
    fn list(&self, out: &mut Vec<ActorInfo>);
    /// The entry of `key`, if any: one lookup.
    fn get(&self, key: &str) -> Option<ActorInfo>;
    /// The entry of `key` with its watchers and timers, if any (admin GetActor): one lookup.
    /// With `ask`, a live actor is also sent a question about itself due by `ask`, unless
    /// its mailbox is full; it answers between two messages.
    fn describe(&self, key: &str, ask: Option<Deadline>) -> Option<Describing>;
    /// The kind's counters.
    fn counts(&self) -> Counts;
    /// Crashes the actor at `key` on purpose (admin KillActor); false if none is live.
    fn kill(&self, key: &str) -> bool;
    /// Stops every live actor whose key `stop` picks, at once, busy or not: its waiting
    /// messages are refused with SHARD_MOVED and its watch streams end (the key's shard left
    /// this replica). Returns how many stopped.
    fn passivate_where(&self, stop: &dyn Fn(&str) -> bool) -> usize;
}

/// What the front of one shard offers eviction.
#[derive(Debug, Clone)]
pub enum Front {
    /// An idle actor.
    Idle(Candidate),
    /// Nothing idle within the window, but entries were skipped (and moved back).
    Skipped,
    /// Nothing at all in the window.
    Empty,
}

/// An idle actor that could be passivated to make room.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// When it last handled a message (ticks of [`Actors::now_tick`]).
    pub last_used: u64,
    /// Index of its table in [`Actors`].
    pub table: usize,
    /// Its key.
    pub key: Arc<str>,
    /// Identity of the activation, so a newer actor of the same key is never evicted.
    pub id: u64,
}

/// The cross-kind view: the live-actor count against `max_actors`, the open watch streams
/// against `max_watchers`, and every kind's table.
pub struct Actors {
    /// Live actors of every kind.
    live: AtomicUsize,
    /// The cap; activations beyond it passivate idle actors first.
    max: usize,
    /// Every kind's table, in registration order. Weak: a kind owns this view (through its
    /// `Arc<Actors>`), so a strong reference back would keep both, and the kind's sweeper,
    /// alive for ever.
    tables: RwLock<Vec<Weak<dyn Table>>>,
    /// One permit per open watch stream, of any kind: the `max_watchers` cap.
    watchers: Arc<Semaphore>,
    /// The `max_watchers` cap, for messages and metrics.
    max_watchers: usize,
    /// Origin of the millisecond ticks in `last_used`.
    epoch: Instant,
    /// Source of activation ids.
    next_id: AtomicUsize,
}

/// Default of `max_watchers`, for views made without one (tests, benchmarks).
pub const DEFAULT_MAX_WATCHERS: usize = 10_000;

impl Actors {
    /// A view with a cap of `max` live actors and the default watcher cap.
    pub fn new(max: usize) -> Arc<Self> {
        Self::with_watchers(max, DEFAULT_MAX_WATCHERS)
    }

    /// A view with a cap of `max` live actors and of `max_watchers` open watch streams.
    pub fn with_watchers(max: usize, max_watchers: usize) -> Arc<Self> {
        let max_watchers = max_watchers.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            live: AtomicUsize::new(0),
            max: max.max(1),
            tables: RwLock::new(Vec::new()),
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            epoch: Instant::now(),
            next_id: AtomicUsize::new(1),
        })
    }

    /// Adds a kind's table; returns its index.
    pub fn register(&self, table: Weak<dyn Table>) -> usize {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        tables.push(table);
        tables.len() - 1
    }

    /// The tables of the kinds still alive, with their indexes.
    fn tables(&self) -> Vec<(usize, Arc<dyn Table>)> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.upgrade().map(|t| (i, t)))
            .collect()
    }

    /// Milliseconds since this view was made: the clock of `last_used`.
    pub fn now_tick(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A fresh activation id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) as u64
    }

    /// Live actors now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot for a new actor, passivating least recently used idle actors one at a
    /// time while the cap is reached. False only when nothing idle is left to passivate.
    ///
    /// One at a time, each followed by a fresh attempt: a batch freed at once is taken by
    /// concurrent activations as fast as by this one, which then found the cap reached again
    /// although idle actors remained.
    pub fn reserve(&self) -> bool {
        let mut empty_rounds = 0;
        loop {
            if self.try_reserve() {
                return true;
            }
            match self.evict_one() {
                Eviction::Evicted | Eviction::Raced => empty_rounds = 0,
                Eviction::Skipped if empty_rounds + 1 < EMPTY_ROUNDS => empty_rounds += 1,
                Eviction::Skipped | Eviction::Nothing => return self.try_reserve(),
            }
        }
    }

    /// Takes a slot if one is free, without evicting anything.
    pub fn try_reserve(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot (an actor stopped, or a reservation went unused).
    pub fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Passivates the least recently used idle actor found at the fronts of the shards of
    /// every kind.
    fn evict_one(&self) -> Eviction {
        let tables = self.tables();
        let mut best: Option<Candidate> = None;
        let mut skipped = false;
        for (index, table) in &tables {
            for shard in 0..SHARDS {
                match table.front_candidate(shard) {
                    Front::Idle(candidate) => {
                        if best
                            .as_ref()
                            .is_none_or(|b| candidate.last_used < b.last_used)
                        {
                            best = Some(Candidate {
                                table: *index,
                                ..candidate
                            });
                        }
                    }
                    Front::Skipped => skipped = true,
                    Front::Empty => {}
                }
            }
        }
        let Some(victim) = best else {
            return if skipped {
                Eviction::Skipped
            } else {
                Eviction::Nothing
            };
        };
        let evicted = tables
            .iter()
            .find(|(index, _)| *index == victim.table)
            .is_some_and(|(_, table)| table.evict(&victim));
        if evicted {
            Eviction::Evicted
        } else {
            Eviction::Raced
        }
    }

    /// Every actor of every kind, for the admin API.
    pub fn list(&self) -> Vec<ActorInfo> {
        let mut out = Vec::new();
        for (_, table) in self.tables() {
            table.list(&mut out);
        }
        out
    }

    /// The entry of `kind/key`, if any.
    pub fn get(&self, kind: &str, key: &str) -> Option<ActorInfo> {
        self.tables()
            .iter()
            .filter(|(_, t)| t.kind() == kind)
            .find_map(|(_, t)| t.get(key))
    }

    /// `kind/key` described for admin GetActor: its registry entry, and what the live actor
    /// says of itself if it answers before `deadline` (a little before, to leave time for the
    /// reply). One lookup, no store read. An actor that cannot answer in time (mailbox full,
    /// busy) is described by its entry alone; one that stops meanwhile, by its entry after.
    pub async fn describe(&self, kind: &str, key: &str, deadline: Deadline) -> Option<ActorDetail> {
        let tables = self.tables();
        let (_, table) = tables.iter().find(|(_, t)| t.kind() == kind)?;
        let ask = super::kind::actor_deadline(deadline);
        let Describing { mut detail, answer } = table.describe(key, Some(ask))?;
        let Some(answer) = answer else {
            return Some(detail);
        };
        match tokio::time::timeout_at(ask.instant(), answer).await {
            Ok(Ok(described)) => {
                detail.described = Some(described);
                Some(detail)
            }
            // Passivated, quarantined or shut down with the question waiting: as it is now.
            Ok(Err(_)) => table.describe(key, None).map(|now| now.detail),
            // Busy past the deadline: what the registry knew.
            Err(_) => Some(detail),
        }
    }

    /// Every kind's counters, in registration order.
    pub fn counts(&self) -> Vec<(&'static str, Counts)> {
        self.tables()
            .iter()
            .map(|(_, t)| (t.kind(), t.counts()))
            .collect()
    }

    /// Crashes the live actor `kind/key` on purpose; false if there is none.
    pub fn kill(&self, kind: &str, key: &str) -> bool {
        self.tables()
            .iter()
            .filter(|(_, t)| t.kind() == kind)
            .any(|(_, t)| t.kill(key))
    }

    /// Stops every live actor, of any kind, for which `stop(kind, key)` holds
    /// ([`Table::passivate_where`]); how many stopped.
    pub fn passivate_where(&self, stop: &dyn Fn(&'static str, &str) -> bool) -> usize {
        self.tables()
            .iter()
            .map(|(_, table)| {
                let kind = table.kind();
                table.passivate_where(&|key| stop(kind, key))
            })
            .sum()
    }

    /// A place for one more watch stream, held for as long as the stream is open; `None`
    /// when `max_watchers` streams are open.
    pub fn watcher_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.watchers.clone().try_acquire_owned().ok()
    }

    /// The `max_watchers` cap.
    pub fn max_watchers(&self) -> usize {
        self.max_watchers
    }

    /// Watch streams open now, of every kind.
    pub fn watchers(&self) -> usize {
        self.max_watchers - self.watchers.available_permits()
    }
}

/// What one eviction attempt did.
enum Eviction {
    /// An idle actor stopped and gave back its slot.
    Evicted,
    /// The chosen actor became busy or went away first: look again.
    Raced,
    /// Nothing idle at the fronts, but busy entries were moved back: a deeper look may find
    /// one.
    Skipped,
    /// No actor at all at the fronts.
    Nothing,
}

/// One shard's entries, least recently touched first.
pub type Entries<V> = LinkedHashMap<Arc<str>, V, RandomState>;

/// A locked shard.
pub type ShardGuard<'a, V> = MutexGuard<'a, Entries<V>>;

/// A map from key to `V`, split in [`SHARDS`] independently locked parts, each in least
/// recently touched order.
pub struct Sharded<V> {
    /// The parts; a key always lives in the same one.
    shards: Box<[Mutex<Entries<V>>]>,
    /// Picks the part; random per process so clients cannot aim at one shard.
    hasher: RandomState,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LinkedHashMap::with_hasher(RandomState::new())))
                .collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<V> Sharded<V> {
    /// The locked shard that holds `key`.
    pub fn shard(&self, key: &str) -> ShardGuard<'_, V> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shard_at(index)
    }

    /// The locked shard number `index` (below [`SHARDS`]).
    pub fn shard_at(&self, index: usize) -> ShardGuard<'_, V> {
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps only the entries for which `keep` is true, one shard locked at a time.
    pub fn retain(&self, mut keep: impl FnMut(&Arc<str>, &V) -> bool) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|key, value| keep(key, value));
        }
    }

    /// Visits every entry, one shard locked at a time.
    pub fn for_each(&self, mut visit: impl FnMut(&Arc<str>, &V)) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, value) in shard.iter() {
                visit(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_stops_at_the_cap_and_release_frees_a_slot() {
        let actors = Actors::new(2);
        assert!(actors.reserve());
        assert!(actors.reserve());
        assert!(!actors.reserve(), "a third slot with nothing to evict");
        assert_eq!(actors.live(), 2);
        actors.release();
        assert!(actors.reserve());
        assert_eq!(actors.live(), 2);
    }

    #[test]
    fn sharded_map_keeps_each_key_in_one_place() {
        let map = Sharded::<u32>::default();
        for i in 0..1000u32 {
            map.shard(&format!("k{i}"))
                .insert(format!("k{i}").into(), i);
        }
        assert_eq!(map.shard("k7").get("k7"), Some(&7));
        let mut seen = 0;
        map.for_each(|_, _| seen += 1);
        assert_eq!(seen, 1000);
    }

    #[test]
    fn a_touched_entry_moves_to_the_back_of_its_shard() {
        let map = Sharded::<u32>::default();
        let mut shard = map.shard("a");
        for key in ["a", "b", "c"] {
            shard.insert(key.into(), 0);
        }
        shard.to_back("a");
        let order: Vec<&str> = shard.keys().map(|k| &**k).collect();
        assert_eq!(order, ["b", "c", "a"]);
    }
}
