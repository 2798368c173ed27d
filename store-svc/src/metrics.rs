//! store-svc's `/metrics`: the writer's counters and queue depth.

use std::{fmt::Write as _, sync::atomic::Ordering};

use kit::metrics::Render;

use crate::writer::WriterGauge;

/// Renders the writer's statistics in the Prometheus text format.
pub struct StoreMetrics {
    /// The queue depth and counters, without keeping the writer alive.
    writer: WriterGauge,
}

impl StoreMetrics {
    /// Metrics of this writer.
    pub fn new(writer: WriterGauge) -> Self {
        Self { writer }
    }
}

impl Render for StoreMetrics {
    fn render(&self, out: &mut String) {
        let stats = self.writer.stats();
        let counters = [
            (
                "store_writes_total",
                "Writes applied and flushed.",
                &stats.writes,
            ),
            (
                "store_commits_total",
                "Commits of several writes applied and flushed, all or nothing.",
                &stats.commits,
            ),
            (
                "store_flushes_total",
                "Group-commit flushes, each followed by an fsync.",
                &stats.flushes,
            ),
            (
                "store_writes_rejected_queue_full_total",
                "Writes refused: queue full.",
                &stats.rejected_full,
            ),
            (
                "store_writes_expired_total",
                "Writes dropped: deadline passed in the queue.",
                &stats.expired,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP store_write_queue_depth Writes waiting for the disk.\n# TYPE store_write_queue_depth gauge\nstore_write_queue_depth {}",
            self.writer.queued()
        );
    }
}
