//! Shard leases in store-svc: taken, renewed, handed over and released with `Commit`s, so
//! the store's per-key versions decide every race between replicas.
//!
//! Each shard has two records in namespace [`super::NAMESPACE`]:
//! - `shard/NNNN/lease` ([`ShardLease`]): the holder and when its lease ends. Renewals rewrite
//!   it every third of the lease length.
//! - `shard/NNNN/owner` ([`ShardOwner`]): rewritten only when the shard changes hands, so its
//!   version is the shard's epoch. Actor writes check it ([`super::Fence`]); renewals check it
//!   too, so a holder that lost the shard finds out at its next renewal at the latest.
//!
//! Taking a shard writes both records in one Commit expecting the versions just read, and is
//! allowed only when the lease is released, expired by more than the allowed clock skew, or
//! already this replica's. Two replicas racing for it cannot both succeed.

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt as _, stream};
use kit::deadline::Deadline;
use prost::Message as _;
use proto::{
    session::v1::{ShardLease, ShardOwner},
    store::v1::{Check, Mutation, mutation::Kind},
};
use tokio::{sync::watch, time::Instant};

use super::{Cluster, Held, NAMESPACE, lease_key, owner_key, unix_ms};
use crate::{error::Error, runtime::store::mutation};

/// How many shards' store calls run at once.
const CONCURRENT_SHARDS: usize = 16;

/// Budget of one lease call to the store.
const CALL_BUDGET: Duration = Duration::from_secs(2);

/// A check of `key` at `version` inside a commit.
pub fn check(key: String, version: u64) -> Mutation {
    Mutation {
        kind: Some(Kind::Check(Check {
            namespace: NAMESPACE.into(),
            key,
            version,
        })),
    }
}

/// The lease record: holder and expiry, at `version` (0: absent).
struct Read {
    lease: ShardLease,
    lease_version: u64,
    owner_version: u64,
}

impl Cluster {
    /// Keeps this replica's leases in step with placement until `stop` turns true: takes the
    /// shards placement gives it, renews what it holds, hands over what placement moved away,
    /// and drops what it failed to renew in time. Looks every tenth of the lease length (at
    /// most every 250 ms).
    pub async fn run_leases(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let tick = (self.settings.lease_ttl / 10).min(Duration::from_millis(250));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let this = &self;
            stream::iter(0..self.settings.shards)
                .for_each_concurrent(CONCURRENT_SHARDS, |shard| async move {
                    this.step(shard).await;
                })
                .await;
        }
    }

    /// One look at `shard`.
    async fn step(&self, shard: u32) {
        match self.held(shard) {
            Some(held) if Instant::now() >= held.valid_until => {
                tracing::warn!(shard, "lease ran out before it could be renewed");
                self.lose(shard);
            }
            // Placement gave the shard to another member (one joined, or came back).
            Some(held) if self.owner(shard) != self.me => self.hand_over(shard, held).await,
            Some(held) => {
                let renew_at = held.valid_until - self.settings.lease_ttl * 2 / 3;
                if Instant::now() >= renew_at {
                    self.renew(shard, held).await;
                }
            }
            None if self.wants(shard) => self.acquire(shard).await,
            None => {}
        }
    }

    /// Reads `shard`'s lease and owner versions.
    async fn read(&self, shard: u32) -> Result<Read, Error> {
        let deadline = Deadline::after(CALL_BUDGET);
        let prefix = format!("shard/{shard:04}/");
        let (entries, _) = self
            .store()
            .scan(NAMESPACE, &prefix, 10, String::new(), deadline)
            .await?;
        let mut read = Read {
            lease: ShardLease::default(),
            lease_version: 0,
            owner_version: 0,
        };
        for entry in entries {
            if entry.key == lease_key(shard) {
                read.lease = ShardLease::decode(entry.value.as_slice())
                    .map_err(|e| Error::Corrupt(format!("{NAMESPACE}/{}: {e}", entry.key)))?;
                read.lease_version = entry.version;
            } else if entry.key == owner_key(shard) {
                read.owner_version = entry.version;
            }
        }
        Ok(read)
    }

    /// Takes `shard` if its lease is free.
    async fn acquire(&self, shard: u32) {
        let started = Instant::now();
        let read = match self.read(shard).await {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(shard, %error, "lease read failed");
                return;
            }
        };
        let now = unix_ms();
        let skew = i64::try_from(self.settings.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
        let lease = &read.lease;
        let free = read.lease_version == 0
            || lease.holder.is_empty()
            || lease.holder == *self.me
            || now > lease.expires_unix_ms.saturating_add(skew);
        if !free {
            return;
        }
        let owner = ShardOwner {
            owner: self.me.to_string(),
        };
        let mutations = vec![
            mutation(
                NAMESPACE,
                owner_key(shard),
                Some(owner.encode_to_vec()),
                read.owner_version,
            ),
            self.lease_put(shard, now, read.lease_version),
        ];
        match self
            .store()
            .commit(mutations, Deadline::after(CALL_BUDGET))
            .await
        {
            Ok(versions) if versions.len() == 2 && self.wants(shard) => {
                tracing::info!(shard, epoch = versions[0], previous = %lease.holder, "took shard");
                self.counters
                    .acquired
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.set_held(
                    shard,
                    Some(Held {
                        owner_version: versions[0],
                        lease_version: versions[1],
                        valid_until: started + self.settings.lease_ttl,
                    }),
                );
            }
            Ok(versions) if versions.len() == 2 => {
                // Placement moved on while taking it (or the drain began): give it back.
                let held = Held {
                    owner_version: versions[0],
                    lease_version: versions[1],
                    valid_until: started + self.settings.lease_ttl,
                };
                self.release(shard, held).await;
            }
            Ok(_) => tracing::error!(shard, "lease commit answered the wrong number of versions"),
            Err(error) => tracing::debug!(shard, %error, "lease not taken"),
        }
    }

    /// The lease record put for this replica from `now`, expecting `version`.
    fn lease_put(&self, shard: u32, now: i64, version: u64) -> Mutation {
        let ttl = i64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let lease = ShardLease {
            holder: self.me.to_string(),
            expires_unix_ms: now.saturating_add(ttl),
        };
        mutation(
            NAMESPACE,
            lease_key(shard),
            Some(lease.encode_to_vec()),
            version,
        )
    }

    /// Extends the lease on `shard`, if the shard is still this replica's.
    async fn renew(&self, shard: u32, held: Held) {
        let started = Instant::now();
        let mutations = vec![
            check(owner_key(shard), held.owner_version),
            self.lease_put(shard, unix_ms(), held.lease_version),
        ];
        match self
            .store()
            .commit(mutations, Deadline::after(CALL_BUDGET))
            .await
        {
            Ok(versions) if versions.len() == 2 => {
                // Only if nothing replaced the lease meanwhile (a loss, a drain).
                let current = self.held(shard);
                if current.is_some_and(|c| c.owner_version == held.owner_version) {
                    self.set_held(
                        shard,
                        Some(Held {
                            lease_version: versions[1],
                            valid_until: started + self.settings.lease_ttl,
                            ..held
                        }),
                    );
                }
            }
            Ok(_) => tracing::error!(shard, "lease commit answered the wrong number of versions"),
            Err(Error::Aborted(_)) => {
                tracing::warn!(shard, "lease lost: another replica took the shard");
                self.lose(shard);
            }
            // The store is slow or away: try again next tick; the lease runs out by itself.
            Err(error) => tracing::debug!(shard, %error, "lease renewal failed"),
        }
    }

    /// Stops serving `shard` (its actors passivated), then releases its lease, so that the
    /// member placement gives it to takes it at once.
    async fn hand_over(&self, shard: u32, held: Held) {
        self.set_held(shard, None);
        self.passivate(shard);
        self.release(shard, held).await;
    }

    /// Empties the lease record of `shard`, if this replica still owns it.
    async fn release(&self, shard: u32, held: Held) {
        let empty = ShardLease::default();
        let mutations = vec![
            check(owner_key(shard), held.owner_version),
            mutation(
                NAMESPACE,
                lease_key(shard),
                Some(empty.encode_to_vec()),
                held.lease_version,
            ),
        ];
        match self
            .store()
            .commit(mutations, Deadline::after(CALL_BUDGET))
            .await
        {
            Ok(_) => {
                self.counters
                    .released
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(shard, "released shard");
            }
            Err(error) => tracing::warn!(shard, %error, "lease not released; it will expire"),
        }
    }

    /// Drain: gives up every shard this replica holds (its actors already stopped), so the
    /// remaining replicas take them at once instead of after the lease length.
    pub async fn release_all(&self) {
        self.begin_drain();
        let held: Vec<(u32, Held)> = (0..self.settings.shards)
            .filter_map(|shard| self.held(shard).map(|held| (shard, held)))
            .collect();
        let count = held.len();
        stream::iter(held)
            .for_each_concurrent(CONCURRENT_SHARDS, |(shard, held)| async move {
                self.hand_over(shard, held).await;
            })
            .await;
        tracing::info!(shards = count, "released every lease");
    }
}
