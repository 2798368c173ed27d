//! session-svc's `/metrics`: live actors against the cap, per kind.

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc};

use store_svc::kit::metrics::Render;

use crate::runtime::{ActorStatus, Actors};

/// Renders the runtime's gauges in the Prometheus text format.
pub struct SessionMetrics {
    /// The cross-kind registry view.
    actors: Arc<Actors>,
}

impl SessionMetrics {
    /// Metrics of `actors`.
    pub fn new(actors: Arc<Actors>) -> Self {
        Self { actors }
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
    }
}
