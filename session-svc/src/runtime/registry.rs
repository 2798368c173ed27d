//! Where live actors are found: a sharded concurrent map per kind, and the cross-kind view
//! that enforces `max_actors` and serves the admin API.
//!
//! Not a registry actor: one task owning the map would serialise every lookup, which is the
//! bottleneck seed 004 finds in its single cache process. Here a lookup locks one of
//! [`SHARDS`] small mutexes for a hash-map probe and never across an await.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// Shards per kind: enough that two cores rarely contend, few enough to scan quickly.
pub const SHARDS: usize = 64;

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
}

/// Whether a registry entry is a running actor or a resting crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorStatus {
    /// Running (busy or idle).
    Live,
    /// Crashed too often; refuses requests until its quarantine ends.
    Quarantined,
}

/// What every kind's table offers the cross-kind view.
pub trait Table: Send + Sync + 'static {
    /// The kind it holds.
    fn kind(&self) -> &'static str;
    /// Appends this table's idle, unwatched actors as eviction candidates.
    fn idle_candidates(&self, out: &mut Vec<Candidate>);
    /// Passivates `key` if it is still the same idle actor; true if it stopped.
    fn evict(&self, candidate: &Candidate) -> bool;
    /// Every entry, for the admin API.
    fn list(&self, out: &mut Vec<ActorInfo>);
    /// Crashes the actor at `key` on purpose (admin KillActor); false if none is live.
    fn kill(&self, key: &str) -> bool;
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

/// The cross-kind view: the live-actor count against `max_actors`, and every kind's table.
pub struct Actors {
    /// Live actors of every kind.
    live: AtomicUsize,
    /// The cap; activations beyond it passivate idle actors first.
    max: usize,
    /// Every kind's table, in registration order.
    tables: RwLock<Vec<Arc<dyn Table>>>,
    /// Origin of the millisecond ticks in `last_used`.
    epoch: Instant,
    /// Source of activation ids.
    next_id: AtomicUsize,
}

impl Actors {
    /// A view with a cap of `max` live actors.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicUsize::new(0),
            max: max.max(1),
            tables: RwLock::new(Vec::new()),
            epoch: Instant::now(),
            next_id: AtomicUsize::new(1),
        })
    }

    /// Adds a kind's table; returns its index.
    pub fn register(&self, table: Arc<dyn Table>) -> usize {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        tables.push(table);
        tables.len() - 1
    }

    /// Index of the table of `kind`; kinds are registered once each.
    pub fn index_of(&self, kind: &str) -> usize {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables
            .iter()
            .position(|t| t.kind() == kind)
            .expect("every kind registers its table on construction")
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

    /// Takes a slot for a new actor, passivating the least recently used idle actors if the
    /// cap is reached. False if every live actor is busy or watched.
    pub fn reserve(&self) -> bool {
        if self.try_reserve() {
            return true;
        }
        // Passivate a batch, not one, so that a steady stream of new keys at the cap pays for
        // one scan per batch rather than per activation.
        let batch = (self.max / 100).clamp(1, 10_000);
        self.evict_lru(batch);
        self.try_reserve()
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

    /// Passivates up to `n` idle actors, least recently used first; how many stopped.
    pub fn evict_lru(&self, n: usize) -> usize {
        let tables = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut candidates = Vec::new();
        for table in &tables {
            table.idle_candidates(&mut candidates);
        }
        if candidates.len() > n {
            candidates.select_nth_unstable_by_key(n, |c| c.last_used);
            candidates.truncate(n);
        }
        candidates.sort_unstable_by_key(|c| c.last_used);
        candidates
            .iter()
            .filter(|c| tables[c.table].evict(c))
            .count()
    }

    /// Every actor of every kind, for the admin API.
    pub fn list(&self) -> Vec<ActorInfo> {
        let tables = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Vec::new();
        for table in &tables {
            table.list(&mut out);
        }
        out
    }

    /// Crashes the live actor `kind/key` on purpose; false if there is none.
    pub fn kill(&self, kind: &str, key: &str) -> bool {
        let tables = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tables
            .iter()
            .filter(|t| t.kind() == kind)
            .any(|t| t.kill(key))
    }
}

/// One independently locked part of a [`Sharded`] map.
type Shard<V> = Mutex<HashMap<Arc<str>, V>>;

/// A locked shard.
pub type ShardGuard<'a, V> = MutexGuard<'a, HashMap<Arc<str>, V>>;

/// A map from key to `V`, split in [`SHARDS`] independently locked parts.
pub struct Sharded<V> {
    /// The parts; a key always lives in the same one.
    shards: Box<[Shard<V>]>,
    /// Picks the part; random per process so clients cannot aim at one shard.
    hasher: RandomState,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<V> Sharded<V> {
    /// The locked shard that holds `key`.
    pub fn shard(&self, key: &str) -> ShardGuard<'_, V> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
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
}
