//! Several replicas, one activation per key.
//!
//! Keys hash to a fixed number of shards, and shards go to the live replicas by rendezvous
//! hashing (highest random weight): every replica computes the same owner from the same
//! membership, and a member joining or leaving moves only the shards it wins or held.
//!
//! Owning is not enough to serve. A replica serves a shard only while it holds the shard's
//! *lease*, a record in store-svc ([`lease`]) renewed before it expires. Next to the lease is
//! the shard's *owner* record, written only when the shard changes hands, so its version is
//! the shard's epoch; every actor write is a store `Commit` that checks it ([`Fence`]). A
//! replica that lost a shard (paused, partitioned, slow to notice) can therefore never write
//! again, whatever it holds in memory; the lease is what keeps its reads from going stale,
//! since it stops serving from memory when its lease runs out by its own monotonic clock.
//!
//! A request may arrive at any replica: one that does not own the key forwards it to the
//! owner ([`forward`]), which waits for the lease if it is still taking the shard over.

pub mod forward;
pub mod lease;
pub mod members;
pub mod peer;

use std::{
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use kit::{deadline::Deadline, echo::echo};
use tokio::{sync::watch, time::Instant};
use tonic::transport::Channel;

use crate::{error::Error, runtime::Store};

/// The store namespace of the lease and owner records.
pub const NAMESPACE: &str = "cluster";

/// Where the members come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// A fixed list of `host:port`.
    Static(Vec<String>),
    /// `name:port`, resolved again and again.
    Dns(String),
}

/// How a replica takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This replica's `host:port` as the others reach it.
    pub advertise: String,
    /// The others.
    pub peers: Peers,
    /// Shards the keys hash to.
    pub shards: u32,
    /// Lease length.
    pub lease_ttl: Duration,
    /// The most two clocks may differ.
    pub max_clock_skew: Duration,
    /// Health checks of the others, this often.
    pub probe_interval: Duration,
    /// DNS membership resolved again this often.
    pub dns_refresh: Duration,
}

impl ClusterSettings {
    /// Refuses addresses that cannot be dialled, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        fn host_port(flag: &str, addr: &str) -> Result<(), String> {
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
                _ => Err(format!(
                    "{flag} {}: expected host:port, as in 10.0.0.7:50051",
                    echo(addr)
                )),
            }
        }
        host_port("--advertise", &self.advertise)?;
        match &self.peers {
            Peers::Static(list) => list.iter().try_for_each(|p| host_port("--peers", p)),
            Peers::Dns(name) => host_port("--peers-dns", name),
        }
    }
}

/// The proof a write carries that its actor's replica still owns the key's shard: the owner
/// record's version when the activation began. A store `Commit` checks it with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The shard.
    pub shard: u32,
    /// Version of the shard's owner record (its epoch).
    pub version: u64,
}

impl Fence {
    /// The owner record's key.
    pub fn key(&self) -> String {
        owner_key(self.shard)
    }
}

/// Key of shard `shard`'s owner record.
pub fn owner_key(shard: u32) -> String {
    format!("shard/{shard:04}/owner")
}

/// Key of shard `shard`'s lease record.
pub fn lease_key(shard: u32) -> String {
    format!("shard/{shard:04}/lease")
}

/// A lease this replica holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// The owner record's version: the fence.
    pub owner_version: u64,
    /// The lease record's version, which each renewal expects.
    pub lease_version: u64,
    /// Until when this replica may serve the shard, by its monotonic clock: the start of the
    /// last successful acquisition or renewal plus the lease length.
    pub valid_until: Instant,
}

/// What happens to the actors of a shard this replica stops serving.
pub type OnLost = Box<dyn Fn(u32) -> usize + Send + Sync>;

/// Counters of the cluster machinery, for `/metrics` and GetStats.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Leases taken.
    pub acquired: AtomicU64,
    /// Leases lost (taken by another replica, or expired unrenewed).
    pub lost: AtomicU64,
    /// Leases handed over (membership changed, or drain).
    pub released: AtomicU64,
    /// Requests forwarded to the owner.
    pub forwarded: AtomicU64,
    /// Actor writes the store refused because the shard's epoch had moved on.
    pub fence_refusals: AtomicU64,
    /// Actors passivated because their shard left this replica.
    pub passivated: AtomicU64,
}

/// One replica's view of the cluster: members, placement, the leases it holds.
pub struct Cluster {
    /// The settings.
    settings: ClusterSettings,
    /// This replica's address, as placement and the lease records name it.
    me: Arc<str>,
    /// Where the lease records live.
    store: Store,
    /// The live members, sorted, this replica included.
    members: RwLock<Arc<[Arc<str>]>>,
    /// The owner of every shard by rendezvous hashing over `members`.
    owners: RwLock<Arc<[Arc<str>]>>,
    /// The lease held on each shard, if any.
    held: Box<[Mutex<Option<Held>>]>,
    /// Bumped at every change of membership or of a held lease: waiters for a lease look again.
    changed: watch::Sender<u64>,
    /// Passivates a shard's actors (set once the kinds exist).
    on_lost: OnceLock<OnLost>,
    /// Draining: this replica takes no more shards.
    draining: AtomicBool,
    /// A channel to each member, made on first use.
    channels: Mutex<std::collections::HashMap<Arc<str>, Channel>>,
    /// Turns true once the membership has had time to find the live members (three rounds
    /// of health checks): until then this replica believes it is alone.
    settled: watch::Sender<bool>,
    /// Counters.
    pub counters: ClusterCounters,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .field("shards", &self.settings.shards)
            .finish_non_exhaustive()
    }
}

/// FNV-1a, 64 bits, over several byte strings with a separator, then a 64-bit finaliser
/// (splitmix64's) so that nearby inputs spread over every bit: stable across versions,
/// machines and languages, as placement must be.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    mix(hash)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard of `kind/key` among `shards`.
pub fn shard_of(shards: u32, kind: &str, key: &str) -> u32 {
    (stable_hash(&[kind.as_bytes(), key.as_bytes()]) % u64::from(shards.max(1))) as u32
}

/// The member that wins `shard` by rendezvous hashing; `None` without members.
pub fn rendezvous(members: &[Arc<str>], shard: u32) -> Option<&Arc<str>> {
    let shard = shard.to_be_bytes();
    members.iter().max_by(|a, b| {
        let score = |m: &Arc<str>| stable_hash(&[m.as_bytes(), &shard]);
        score(a).cmp(&score(b)).then_with(|| a.cmp(b))
    })
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where a request for a key should be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here.
    Local,
    /// At this member.
    Remote(Arc<str>),
}

impl Cluster {
    /// A replica's view, alone in its membership until the first health checks answer.
    pub fn new(settings: ClusterSettings, store: Store) -> Arc<Self> {
        let me: Arc<str> = settings.advertise.as_str().into();
        let held = (0..settings.shards).map(|_| Mutex::new(None)).collect();
        let cluster = Arc::new(Self {
            me: me.clone(),
            store,
            members: RwLock::new(Arc::from(Vec::new())),
            owners: RwLock::new(Arc::from(Vec::new())),
            held,
            changed: watch::channel(0).0,
            on_lost: OnceLock::new(),
            draining: AtomicBool::new(false),
            channels: Mutex::default(),
            settled: watch::channel(false).0,
            counters: ClusterCounters::default(),
            settings,
        });
        cluster.set_members(vec![me]);
        cluster
    }

    /// The settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// This replica's address.
    pub fn me(&self) -> &Arc<str> {
        &self.me
    }

    /// Sets what happens to the actors of a shard this replica stops serving (once).
    pub fn on_lost(&self, passivate: OnLost) {
        let _ = self.on_lost.set(passivate);
    }

    /// The shard of `kind/key`.
    pub fn shard_of(&self, kind: &str, key: &str) -> u32 {
        shard_of(self.settings.shards, kind, key)
    }

    /// The live members now, sorted.
    pub fn members(&self) -> Arc<[Arc<str>]> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the membership (sorted and deduplicated here) and recomputes placement.
    pub(crate) fn set_members(&self, mut members: Vec<Arc<str>>) {
        members.sort();
        members.dedup();
        let members: Arc<[Arc<str>]> = members.into();
        {
            let current = self.members.read().unwrap_or_else(PoisonError::into_inner);
            if *current == members && !self.owners_empty() {
                return;
            }
        }
        let owners: Arc<[Arc<str>]> = (0..self.settings.shards)
            .map(|shard| {
                rendezvous(&members, shard)
                    .cloned()
                    .unwrap_or_else(|| self.me.clone())
            })
            .collect();
        tracing::info!(members = ?members.iter().map(|m| m.as_ref()).collect::<Vec<_>>(), "cluster membership");
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = members;
        *self.owners.write().unwrap_or_else(PoisonError::into_inner) = owners;
        self.changed.send_modify(|n| *n += 1);
    }

    fn owners_empty(&self) -> bool {
        self.owners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The member placement gives `shard` to.
    pub fn owner(&self, shard: u32) -> Arc<str> {
        let owners = self.owners.read().unwrap_or_else(PoisonError::into_inner);
        owners
            .get(shard as usize)
            .cloned()
            .unwrap_or_else(|| self.me.clone())
    }

    /// Where `kind/key` is served.
    pub fn placement(&self, kind: &str, key: &str) -> Placement {
        let owner = self.owner(self.shard_of(kind, key));
        if owner == self.me {
            Placement::Local
        } else {
            Placement::Remote(owner)
        }
    }

    /// Whether placement gives `shard` to this replica (never while draining).
    pub(crate) fn wants(&self, shard: u32) -> bool {
        !self.draining.load(Ordering::Acquire) && self.owner(shard) == self.me
    }

    /// The lease held on `shard`, if any (valid or not).
    pub(crate) fn held(&self, shard: u32) -> Option<Held> {
        *self.held[shard as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `held` as the lease on `shard` (`None`: no longer held) and wakes waiters.
    pub(crate) fn set_held(&self, shard: u32, held: Option<Held>) {
        *self.held[shard as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = held;
        self.changed.send_modify(|n| *n += 1);
    }

    /// The fence of `shard` if this replica may serve it now: it holds the lease and the lease
    /// has not run out by this replica's clock.
    pub fn fence(&self, shard: u32) -> Option<Fence> {
        let held = self.held(shard)?;
        (Instant::now() < held.valid_until).then_some(Fence {
            shard,
            version: held.owner_version,
        })
    }

    /// Whether `fence` is still this replica's current, valid fence of its shard.
    pub fn is_current(&self, fence: Fence) -> bool {
        self.fence(fence.shard) == Some(fence)
    }

    /// The fence to serve `kind/key` here under, waiting for the lease while this replica is
    /// taking the shard over, at most until `deadline`. SHARD_MOVED when another replica owns
    /// the shard; DEADLINE_EXCEEDED (nothing done) when the lease did not come in time.
    pub async fn ready(&self, kind: &str, key: &str, deadline: Deadline) -> Result<Fence, Error> {
        let shard = self.shard_of(kind, key);
        // The common case, a shard this replica serves, without subscribing to changes.
        if let Some(fence) = self.fence(shard) {
            return Ok(fence);
        }
        let mut changed = self.changed.subscribe();
        loop {
            if let Some(fence) = self.fence(shard) {
                return Ok(fence);
            }
            if !self.wants(shard) {
                return Err(self.moved(kind, key, shard));
            }
            changed.borrow_and_update();
            if tokio::time::timeout_at(deadline.instant(), changed.changed())
                .await
                .is_err()
            {
                return Err(Error::DeadlineExceeded(format!(
                    "shard {shard} of {kind}/{} is changing hands and this replica did not get \
                     its lease in time; the request was not executed",
                    echo(key)
                )));
            }
        }
    }

    /// The error for a key whose shard this replica does not serve.
    pub fn moved(&self, kind: &str, key: &str, shard: u32) -> Error {
        let owner = self.owner(shard);
        let whom = if owner == self.me {
            "this replica has not taken it over yet".to_string()
        } else {
            format!("it is served by {owner}")
        };
        Error::ShardMoved(format!(
            "{kind}/{} is in shard {shard}, which replica {} does not hold: {whom}",
            echo(key),
            self.me
        ))
    }

    /// A write under `fence` was refused because the shard's epoch moved on: this replica
    /// lost the shard. Stops serving it at once rather than at the next renewal.
    pub fn fenced_out(&self, fence: Fence) {
        self.counters.fence_refusals.fetch_add(1, Ordering::Relaxed);
        let current = self.held(fence.shard);
        if current.is_some_and(|held| held.owner_version == fence.version) {
            tracing::warn!(
                shard = fence.shard,
                "fenced out: another replica took the shard"
            );
            self.lose(fence.shard);
        }
    }

    /// Stops serving `shard`: forgets the lease and passivates its actors.
    pub(crate) fn lose(&self, shard: u32) {
        self.set_held(shard, None);
        self.counters.lost.fetch_add(1, Ordering::Relaxed);
        self.passivate(shard);
    }

    /// Passivates the actors of `shard`.
    pub(crate) fn passivate(&self, shard: u32) {
        if let Some(passivate) = self.on_lost.get() {
            let stopped = passivate(shard);
            self.counters
                .passivated
                .fetch_add(stopped as u64, Ordering::Relaxed);
        }
    }

    /// Shards whose lease this replica holds now.
    pub fn held_count(&self) -> usize {
        (0..self.settings.shards)
            .filter(|&s| self.fence(s).is_some())
            .count()
    }

    /// How many shards placement gives each member.
    pub fn shard_counts(&self) -> Vec<(Arc<str>, u32)> {
        let owners = self.owners.read().unwrap_or_else(PoisonError::into_inner);
        let mut counts: Vec<(Arc<str>, u32)> =
            self.members().iter().map(|m| (m.clone(), 0)).collect();
        for owner in owners.iter() {
            if let Some(entry) = counts.iter_mut().find(|(m, _)| m == owner) {
                entry.1 += 1;
            }
        }
        counts
    }

    /// The channel to member `addr` (plaintext HTTP/2), made on first use and kept.
    pub fn channel(&self, addr: &Arc<str>) -> Channel {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(addr.clone())
            .or_insert_with(|| members::connect_lazy(addr))
            .clone()
    }

    /// Starts draining: this replica takes no more shards; it keeps those it holds until
    /// [`Cluster::release_all`].
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until the membership has settled: three rounds of health checks since start.
    pub async fn settled(&self) {
        let mut settled = self.settled.subscribe();
        let _ = settled.wait_for(|s| *s).await;
    }

    /// Marks the membership settled.
    pub(crate) fn mark_settled(&self) {
        self.settled.send_replace(true);
    }

    /// The store the lease records live in.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn keys_spread_over_every_shard() {
        let mut seen = vec![0u32; 64];
        for i in 0..64_000 {
            seen[shard_of(64, "cart", &format!("user-{i}")) as usize] += 1;
        }
        // 1,000 expected per shard; a skewed hash would leave some far from it.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_ne!(shard_of(64, "cart", "a"), shard_of(64, "cart", "b"));
        // The kind is part of the key: a cart and a list of the same name are independent.
        let differ = (0..100)
            .filter(|i| {
                shard_of(64, "cart", &i.to_string()) != shard_of(64, "todo", &i.to_string())
            })
            .count();
        assert!(differ > 80, "{differ}");
    }

    #[test]
    fn placement_is_stable_and_moves_only_the_new_members_shards() {
        let three = members(&["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"]);
        let four = members(&[
            "10.0.0.1:50051",
            "10.0.0.2:50051",
            "10.0.0.3:50051",
            "10.0.0.4:50051",
        ]);
        let mut per_member = std::collections::HashMap::new();
        let mut moved = 0;
        for shard in 0..256 {
            let before = rendezvous(&three, shard).unwrap();
            let after = rendezvous(&four, shard).unwrap();
            *per_member.entry(before.clone()).or_insert(0) += 1;
            if before != after {
                moved += 1;
                assert_eq!(
                    after.as_ref(),
                    "10.0.0.4:50051",
                    "shard {shard} moved elsewhere"
                );
            }
            // The same answer whatever the order of the list.
            let mut reversed = three.clone();
            reversed.reverse();
            assert_eq!(rendezvous(&reversed, shard), Some(before));
        }
        // About a quarter moves to the newcomer; each of three held about a third.
        assert!((40..90).contains(&moved), "{moved}");
        assert!(
            per_member.values().all(|&n| (55..115).contains(&n)),
            "{per_member:?}"
        );
    }

    #[test]
    fn bad_addresses_are_refused_naming_the_flag() {
        let settings = ClusterSettings {
            advertise: "10.0.0.1".into(),
            peers: Peers::Static(vec!["10.0.0.2:50051".into()]),
            shards: 64,
            lease_ttl: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(1),
            probe_interval: Duration::from_millis(500),
            dns_refresh: Duration::from_secs(5),
        };
        assert!(settings.check().unwrap_err().contains("--advertise"));
        let settings = ClusterSettings {
            advertise: "10.0.0.1:50051".into(),
            peers: Peers::Static(vec!["nope".into()]),
            ..settings
        };
        assert!(settings.check().unwrap_err().contains("--peers"));
    }
}
