//! session-svc's own figures on `/metrics`: live actors against the cap, per kind, crashes,
//! quarantines and fired reminders, open watch streams against their cap, the store write
//! batcher's counters, the sweeper's progress and the connections. (The per-RPC counts and
//! latencies come from `kit::metrics::RpcMetrics`.)
//!
//! Every figure is a counter the runtime keeps as it goes: a scrape never walks the actors,
//! so it costs the same with a million live ones.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
};

use kit::{
    conn::Connections,
    metrics::{counter, counters, gauge, gauges},
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::{
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
}

impl SessionMetrics {
    /// Metrics of `actors`, the store write batcher, the sweeper and the connections.
    pub fn new(
        actors: Arc<Actors>,
        store_batches: Option<Arc<BatchStats>>,
        sweep: Arc<sweeper::Progress>,
        connections: Connections,
    ) -> Self {
        Self {
            actors,
            store_batches,
            sweep,
            connections,
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
        self.sweep.encode_metrics(&mut e)?;
        self.connections.encode_metrics(&mut e)
    }
}
