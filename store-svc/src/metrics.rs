//! store-svc's own figures on `/metrics`: the writer's counters and queue depth, the
//! PostgreSQL backend's retries and pool, and the connections. (The per-RPC counts and
//! latencies come from `kit::metrics::RpcMetrics`.)

use std::{
    fmt,
    sync::{Weak, atomic::Ordering},
};

use kit::{
    conn::Connections,
    metrics::{counter, gauge},
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::{pg::PgStore, writer::WriterGauge};

/// Reads the writer's statistics and the connections at each scrape.
pub struct StoreMetrics {
    /// The queue depth and counters, without keeping the writer alive.
    writer: WriterGauge,
    /// The gRPC port's connections.
    connections: Connections,
    /// The PostgreSQL backend, when it is the one in use; weak, as `writer` is.
    postgres: Option<Weak<PgStore>>,
}

impl StoreMetrics {
    /// Metrics of this writer and these connections, and of `postgres` when given.
    pub fn new(
        writer: WriterGauge,
        connections: Connections,
        postgres: Option<Weak<PgStore>>,
    ) -> Self {
        Self {
            writer,
            connections,
            postgres,
        }
    }
}

impl fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreMetrics")
    }
}

impl Collector for StoreMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let stats = self.writer.stats();
        let counters = [
            ("store_writes", "Writes applied and flushed.", &stats.writes),
            (
                "store_commits",
                "Commits of several writes applied and flushed, all or nothing.",
                &stats.commits,
            ),
            (
                "store_flushes",
                "Group-commit flushes, each followed by an fsync.",
                &stats.flushes,
            ),
            (
                "store_writes_rejected_queue_full",
                "Writes refused: queue full.",
                &stats.rejected_full,
            ),
            (
                "store_writes_expired",
                "Writes dropped: deadline passed in the queue.",
                &stats.expired,
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut e, name, help, value.load(Ordering::Relaxed))?;
        }
        gauge(
            &mut e,
            "store_write_queue_depth",
            "Writes waiting for the disk.",
            i64::try_from(self.writer.queued()).unwrap_or(i64::MAX),
        )?;
        if let Some(pg) = self.postgres.as_ref().and_then(Weak::upgrade) {
            counter(
                &mut e,
                "store_postgres_retries",
                "Transactions run again after a concurrent one won (serialization failure).",
                pg.retries(),
            )?;
            let pool = pg.pool_status();
            let gauges = [
                (
                    "store_postgres_pool_max",
                    "Connections the pool may open (--postgres-pool-size).",
                    pool.max_size,
                ),
                (
                    "store_postgres_pool_connections",
                    "Connections open to the database.",
                    pool.size,
                ),
                (
                    "store_postgres_pool_idle",
                    "Open connections not in use.",
                    pool.available,
                ),
            ];
            for (name, help, value) in gauges {
                gauge(&mut e, name, help, i64::try_from(value).unwrap_or(i64::MAX))?;
            }
        }
        self.connections.encode_metrics(&mut e)
    }
}
