//! session-svc's own figures on `/metrics`: live actors against the cap, per kind, crashes,
//! quarantines and fired reminders, open watch streams against their cap, the store write
//! batcher's counters, the sweeper's progress and the connections. (The per-RPC counts and
//! latencies come from `kit::metrics::RpcMetrics`.)
//!
//! Every figure is a counter the runtime keeps as it goes: a scrape never walks the actors,
//! so it costs the same with a million live ones.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use kit::{
    conn::Connections,
    metrics::{counter, counters, gauge, gauges},
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::{
    cluster::Cluster,
    runtime::{Actors, Counts, batcher::BatchStats},
    sweeper,
};

/// A per-kind counter since start: its name (without `_total`), its help, and where it is in
/// [`Counts`].
type Lifetime = (&'static str, &'static str, fn(&Counts) -> u64);

/// Reads the runtime's figures at each scrape.
pub struct SessionMetrics {
    /// The cross-kind registry view.
    actors: Arc<Actors>,
    /// The store write batcher's counters, when writes are batched.
    store_batches: Option<Arc<BatchStats>>,
    /// The sweeper's progress.
    sweep: Arc<sweeper::Progress>,
    /// The gRPC port's connections.
    connections: Connections,
    /// Several replicas: membership, leases, forwarding, fencing.
    cluster: Option<Arc<Cluster>>,
}

impl SessionMetrics {
    /// Metrics of `actors`, the store write batcher, the sweeper and the connections.
    pub fn new(
        actors: Arc<Actors>,
        store_batches: Option<Arc<BatchStats>>,
        sweep: Arc<sweeper::Progress>,
        connections: Connections,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            actors,
            store_batches,
            sweep,
            connections,
            cluster,
        }
    }
}

impl fmt::Debug for SessionMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionMetrics")
    }
}

/// A count as a gauge value.
fn level(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for SessionMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let counts = self.actors.counts();
        gauges(
            &mut e,
            "session_actors",
            "Actors in the registry.",
            counts.iter().flat_map(|(kind, c)| {
                [
                    ([("kind", *kind), ("status", "live")], level(c.live)),
                    (
                        [("kind", *kind), ("status", "quarantined")],
                        level(c.quarantined),
                    ),
                ]
            }),
        )?;
        gauge(
            &mut e,
            "session_actors_max",
            "The --max-actors cap.",
            level(self.actors.max()),
        )?;
        let lifetimes: [Lifetime; 7] = [
            (
                "session_actor_crashes",
                "Handler crashes (each one a restart or a quarantine).",
                |c| c.crashes,
            ),
            (
                "session_actor_quarantines",
                "Keys quarantined after a crash loop.",
                |c| c.quarantines,
            ),
            (
                "session_reminders_fired",
                "Durable reminders sent to their actors (a resend counts again).",
                |c| c.reminders_fired,
            ),
            (
                "session_actor_activations",
                "Actors activated (loaded into memory).",
                |c| c.activations,
            ),
            (
                "session_actor_passivations",
                "Actors passivated: idle, evicted at --max-actors, or holding no state.",
                |c| c.passivations,
            ),
            (
                "session_mailbox_rejections",
                "Requests refused RESOURCE_EXHAUSTED for a full mailbox.",
                |c| c.mailbox_rejections,
            ),
            (
                "session_deadline_drops",
                "Requests dropped unexecuted because their deadline passed first.",
                |c| c.deadline_drops,
            ),
        ];
        for (name, help, value) in lifetimes {
            counters(
                &mut e,
                name,
                help,
                counts.iter().map(|(kind, c)| ([("kind", *kind)], value(c))),
            )?;
        }
        gauges(
            &mut e,
            "session_watchers",
            "Open watch streams.",
            counts
                .iter()
                .map(|(kind, c)| ([("kind", *kind)], level(c.watchers))),
        )?;
        gauge(
            &mut e,
            "session_watchers_max",
            "The --max-watchers cap.",
            level(self.actors.max_watchers()),
        )?;
        if let Some(stats) = &self.store_batches {
            counter(
                &mut e,
                "session_store_batches",
                "BatchWrite calls sent to store-svc.",
                stats.batches.load(Ordering::Relaxed),
            )?;
            counter(
                &mut e,
                "session_store_batched_writes",
                "Writes those calls carried.",
                stats.writes.load(Ordering::Relaxed),
            )?;
        }
        if let Some(cluster) = &self.cluster {
            encode_cluster(cluster, &mut e)?;
        }
        self.sweep.encode_metrics(&mut e)?;
        self.connections.encode_metrics(&mut e)
    }
}

/// The cluster's figures: members, shards held, and what its leases, forwarding and fences did.
fn encode_cluster(cluster: &Cluster, e: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        e,
        "session_cluster_members",
        "Live replicas in this replica's view, itself included.",
        level(cluster.members().len()),
    )?;
    gauge(
        e,
        "session_cluster_shards_held",
        "Shards whose lease this replica holds.",
        level(cluster.held_count()),
    )?;
    let c = &cluster.counters;
    let series: [(&str, &str, &AtomicU64); 6] = [
        (
            "session_cluster_leases_acquired",
            "Shard leases this replica took.",
            &c.acquired,
        ),
        (
            "session_cluster_leases_lost",
            "Shard leases lost: taken by another replica, or run out unrenewed.",
            &c.lost,
        ),
        (
            "session_cluster_leases_released",
            "Shard leases handed over (membership changed, or drain).",
            &c.released,
        ),
        (
            "session_cluster_forwarded",
            "Requests forwarded to the replica owning their key.",
            &c.forwarded,
        ),
        (
            "session_cluster_fence_refusals",
            "Actor writes the store refused because their shard had changed hands.",
            &c.fence_refusals,
        ),
        (
            "session_cluster_passivated",
            "Actors stopped because their shard left this replica.",
            &c.passivated,
        ),
    ];
    for (name, help, value) in series {
        counter(e, name, help, value.load(Ordering::Relaxed))?;
    }
    Ok(())
}
