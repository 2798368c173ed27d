//! session-svc's `/metrics`: live actors against the cap, per kind, and the store write
//! batcher's counters.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
};

use store_svc::kit::metrics::Render;

use crate::runtime::{ActorStatus, Actors, batcher::BatchStats};

/// Renders the runtime's gauges in the Prometheus text format.
pub struct SessionMetrics {
    /// The cross-kind registry view.
    actors: Arc<Actors>,
    /// The store write batcher's counters, when writes are batched.
    store_batches: Option<Arc<BatchStats>>,
}

impl SessionMetrics {
    /// Metrics of `actors` and of the store write batcher.
    pub fn new(actors: Arc<Actors>, store_batches: Option<Arc<BatchStats>>) -> Self {
        Self {
            actors,
            store_batches,
        }
    }
}

impl Render for SessionMetrics {
    fn render(&self, out: &mut String) {
        let mut by_kind = BTreeMap::<(&str, &str), u64>::new();
        for actor in self.actors.list() {
            let status = match actor.status {
                ActorStatus::Live => "live",
                ActorStatus::Quarantined => "quarantined",
            };
            *by_kind.entry((actor.kind, status)).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP session_actors Actors in the registry.\n# TYPE session_actors gauge"
        );
        for ((kind, status), count) in by_kind {
            let _ = writeln!(
                out,
                "session_actors{{kind=\"{kind}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP session_actors_max The --max-actors cap.\n# TYPE session_actors_max gauge\nsession_actors_max {}",
            self.actors.max()
        );
        if let Some(stats) = &self.store_batches {
            let _ = writeln!(
                out,
                "# HELP session_store_batches_total BatchWrite calls sent to store-svc.\n# TYPE session_store_batches_total counter\nsession_store_batches_total {}",
                stats.batches.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "# HELP session_store_batched_writes_total Writes those calls carried.\n# TYPE session_store_batched_writes_total counter\nsession_store_batched_writes_total {}",
                stats.writes.load(Ordering::Relaxed)
            );
        }
    }
}
