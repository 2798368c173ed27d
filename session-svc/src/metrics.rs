//! session-svc's `/metrics`: live actors against the cap, per kind, crashes, quarantines and
//! fired reminders, open watch streams against their cap, and the store write batcher's
//! counters.
//!
//! Every figure is a counter the runtime keeps as it goes: a scrape never walks the actors,
//! so it costs the same with a million live ones.

use std::{
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
};

use kit::metrics::Render;

use crate::runtime::{Actors, Counts, batcher::BatchStats};

/// A per-kind counter since start: its name, its help, and where it is in [`Counts`].
type Lifetime = (&'static str, &'static str, fn(&Counts) -> u64);

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
        let counts = self.actors.counts();
        let _ = writeln!(
            out,
            "# HELP session_actors Actors in the registry.\n# TYPE session_actors gauge"
        );
        for (kind, c) in &counts {
            let _ = writeln!(
                out,
                "session_actors{{kind=\"{kind}\",status=\"live\"}} {}\n\
                 session_actors{{kind=\"{kind}\",status=\"quarantined\"}} {}",
                c.live, c.quarantined
            );
        }
        let _ = writeln!(
            out,
            "# HELP session_actors_max The --max-actors cap.\n# TYPE session_actors_max gauge\nsession_actors_max {}",
            self.actors.max()
        );
        let _ = writeln!(
            out,
            "# HELP session_actor_crashes_total Handler crashes (each one a restart or a quarantine).\n# TYPE session_actor_crashes_total counter"
        );
        for (kind, c) in &counts {
            let _ = writeln!(
                out,
                "session_actor_crashes_total{{kind=\"{kind}\"}} {}",
                c.crashes
            );
        }
        let _ = writeln!(
            out,
            "# HELP session_actor_quarantines_total Keys quarantined after a crash loop.\n# TYPE session_actor_quarantines_total counter"
        );
        for (kind, c) in &counts {
            let _ = writeln!(
                out,
                "session_actor_quarantines_total{{kind=\"{kind}\"}} {}",
                c.quarantines
            );
        }
        let _ = writeln!(
            out,
            "# HELP session_reminders_fired_total Durable reminders sent to their actors (a resend counts again).\n# TYPE session_reminders_fired_total counter"
        );
        for (kind, c) in &counts {
            let _ = writeln!(
                out,
                "session_reminders_fired_total{{kind=\"{kind}\"}} {}",
                c.reminders_fired
            );
        }
        let lifetimes: [Lifetime; 4] = [
            (
                "session_actor_activations_total",
                "Actors activated (loaded into memory).",
                |c| c.activations,
            ),
            (
                "session_actor_passivations_total",
                "Actors passivated: idle, evicted at --max-actors, or holding no state.",
                |c| c.passivations,
            ),
            (
                "session_mailbox_rejections_total",
                "Requests refused RESOURCE_EXHAUSTED for a full mailbox.",
                |c| c.mailbox_rejections,
            ),
            (
                "session_deadline_drops_total",
                "Requests dropped unexecuted because their deadline passed first.",
                |c| c.deadline_drops,
            ),
        ];
        for (name, help, value) in lifetimes {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (kind, c) in &counts {
                let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", value(c));
            }
        }
        let _ = writeln!(
            out,
            "# HELP session_watchers Open watch streams.\n# TYPE session_watchers gauge"
        );
        for (kind, c) in &counts {
            let _ = writeln!(out, "session_watchers{{kind=\"{kind}\"}} {}", c.watchers);
        }
        let _ = writeln!(
            out,
            "# HELP session_watchers_max The --max-watchers cap.\n# TYPE session_watchers_max gauge\nsession_watchers_max {}",
            self.actors.max_watchers()
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
