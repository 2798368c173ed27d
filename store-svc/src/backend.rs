//! Where the records live: sled (the default, with the group-commit writer) or a
//! PostgreSQL-compatible database (`--backend postgres`). An enum, not a trait object: the sled
//! path stays what it was, one match away, with no boxing or dynamic dispatch.
//!
//! The level of the interface is the store's own: get, scan, and "apply this commit (puts,
//! deletes and checks with their expected versions) all or nothing → each one's version, or
//! the first conflict". sled does that through the writer thread (one flush and fsync per
//! group); the SQL database does it as one transaction and commits durably itself.

use std::sync::Arc;

use kit::deadline::Deadline;
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    db::{Db, Entry, Record, Write},
    error::Error,
    pg::PgStore,
    writer::{Pending, Writer},
};

/// The store's backend.
#[derive(Clone)]
pub enum Backend {
    /// sled: reads on the blocking pool, writes through the single writer thread.
    Sled {
        /// For reads; writes go through `writer`.
        db: Arc<Db>,
        /// The only path to a write.
        writer: Writer,
    },
    /// A PostgreSQL-compatible database; keeps no state of its own.
    Postgres(Arc<PgStore>),
}

/// A write of a BatchWrite, admitted and waiting for its outcome.
#[must_use = "a queued sled write runs even if nobody awaits its outcome"]
pub enum Queued {
    /// In the sled writer's queue.
    Sled(Pending),
    /// Not started: run when awaited, in request order, so writes to one key apply in order.
    Postgres {
        /// The commit (a lone Put or Delete is a commit of one).
        writes: Vec<Write>,
        /// Its deadline.
        deadline: Deadline,
        /// Its place in the admission bound, taken when it was queued.
        permit: OwnedSemaphorePermit,
    },
}

impl Backend {
    /// The current record of a key, if any.
    pub async fn get(
        &self,
        deadline: Deadline,
        namespace: String,
        key: String,
    ) -> Result<Option<Record>, Error> {
        match self {
            Self::Sled { db, .. } => read(db, deadline, move |db| db.get(&namespace, &key)).await,
            Self::Postgres(pg) => pg.get(deadline, &namespace, &key).await,
        }
    }

    /// Up to `limit` entries of `namespace` whose key starts with `prefix`, after `after` if
    /// given, in key order, and whether more follow.
    pub async fn scan(
        &self,
        deadline: Deadline,
        namespace: String,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), Error> {
        match self {
            Self::Sled { db, .. } => {
                read(db, deadline, move |db| {
                    db.scan(&namespace, &prefix, after.as_deref(), limit)
                })
                .await
            }
            Self::Postgres(pg) => {
                pg.scan(deadline, &namespace, &prefix, after.as_deref(), limit)
                    .await
            }
        }
    }

    /// Applies one conditional write and returns its version (as a commit of one).
    pub async fn write(&self, write: Write, deadline: Deadline) -> Result<u64, Error> {
        match self {
            Self::Sled { writer, .. } => writer.submit(write, deadline).await,
            Self::Postgres(pg) => Ok(pg.commit(std::slice::from_ref(&write), deadline).await?[0]),
        }
    }

    /// Applies `writes` all or nothing and returns each one's version.
    pub async fn commit(&self, writes: Vec<Write>, deadline: Deadline) -> Result<Vec<u64>, Error> {
        match self {
            Self::Sled { writer, .. } => writer.enqueue(writes, deadline)?.outcome().await,
            Self::Postgres(pg) => pg.commit(&writes, deadline).await,
        }
    }

    /// Queues a BatchWrite's commit without waiting (sled: into the writer's queue, so that
    /// the batch shares flushes); await it with [`Backend::outcome`].
    pub fn enqueue(&self, writes: Vec<Write>, deadline: Deadline) -> Result<Queued, Error> {
        match self {
            Self::Sled { writer, .. } => writer.enqueue(writes, deadline).map(Queued::Sled),
            Self::Postgres(pg) => Ok(Queued::Postgres {
                writes,
                deadline,
                permit: pg.admit()?,
            }),
        }
    }

    /// The outcome of a queued commit.
    pub async fn outcome(&self, queued: Queued) -> Result<Vec<u64>, Error> {
        match (self, queued) {
            (_, Queued::Sled(pending)) => pending.outcome().await,
            (
                Self::Postgres(pg),
                Queued::Postgres {
                    writes,
                    deadline,
                    permit,
                },
            ) => pg.commit_admitted(&writes, deadline, permit).await,
            (Self::Sled { .. }, Queued::Postgres { .. }) => {
                unreachable!("a sled backend queues only sled writes")
            }
        }
    }
}

/// Runs a sled read on the blocking pool, unless the deadline already passed.
async fn read<T: Send + 'static>(
    db: &Arc<Db>,
    deadline: Deadline,
    read: impl FnOnce(&Db) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if deadline.expired() {
        return Err(Error::DeadlineExceeded);
    }
    let db = db.clone();
    let task = tokio::task::spawn_blocking(move || read(&db));
    match tokio::time::timeout_at(deadline.instant(), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(Error::DeadlineExceeded),
    }
}
