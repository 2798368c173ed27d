//! The PostgreSQL backend (`--backend postgres`): the same `store.v1` semantics on one SQL table,
//! in portable SQL (no advisory locks, no extensions, no `ON CONFLICT ... DO UPDATE`), meant to
//! run unchanged on PostgreSQL (tested: 15), CockroachDB and YugabyteDB (not tested).
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS kv (
//!     namespace text NOT NULL,
//!     key       text COLLATE "C" NOT NULL,   -- byte order, as sled orders keys
//!     version   bigint NOT NULL,
//!     value     bytea NOT NULL,
//!     PRIMARY KEY (namespace, key))
//! ```
//!
//! Every write, a lone Put or Delete as much as a Commit, is one SERIALIZABLE transaction: read
//! the version of every key the commit names, compare each with its expected version (a
//! mismatch rolls back and answers ABORTED naming the mutation), then write each with the
//! version in its WHERE clause as well (`UPDATE ... WHERE version = $n`, `DELETE ... WHERE
//! version = $n`, a plain `INSERT` for expected 0). A serialization failure, deadlock or unique
//! violation means a concurrent transaction won: the transaction was rolled back, so it is
//! retried from the read while the deadline allows. The database commits durably itself
//! (`synchronous_commit` on, checked at start-up), so OK means committed and flushed.
//!
//! Deadlines: `SET LOCAL statement_timeout` to what remains of the request's budget, and the
//! whole call under the same deadline. Admission: at most `--queue-size` calls waiting for or
//! holding one of `--postgres-pool-size` connections; beyond that RESOURCE_EXHAUSTED at once.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
    Timeouts,
};
use kit::deadline::Deadline;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{IsolationLevel, NoTls, error::SqlState, types::ToSql};
use tokio_stream::StreamExt as _;

use crate::{
    db::{Change, Entry, MAX_PAGE_BYTES, Record, Write},
    error::{Error, QUEUE_FULL_RETRY},
    namespaces::Namespaces,
    writer::WriterStats,
};

/// The table, created at start-up when missing.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (\
    namespace text NOT NULL, \
    key text COLLATE \"C\" NOT NULL, \
    version bigint NOT NULL, \
    value bytea NOT NULL, \
    PRIMARY KEY (namespace, key))";

/// The distinct namespaces in the table, one index probe each (a loose index scan in portable
/// SQL: `SELECT DISTINCT` would read every row).
const STORED_NAMESPACES: &str = "WITH RECURSIVE ns (namespace) AS (\
    (SELECT namespace FROM kv ORDER BY namespace LIMIT 1) \
    UNION ALL \
    SELECT (SELECT k.namespace FROM kv k WHERE k.namespace > ns.namespace \
            ORDER BY k.namespace LIMIT 1) \
    FROM ns WHERE ns.namespace IS NOT NULL) \
    SELECT namespace FROM ns WHERE namespace IS NOT NULL";

const GET: &str = "SELECT version, value FROM kv WHERE namespace = $1 AND key = $2";
const INSERT: &str = "INSERT INTO kv (namespace, key, version, value) VALUES ($1, $2, 1, $3)";
const UPDATE: &str =
    "UPDATE kv SET version = $3, value = $4 WHERE namespace = $1 AND key = $2 AND version = $5";
const DELETE: &str = "DELETE FROM kv WHERE namespace = $1 AND key = $2 AND version = $3";

/// Longest a new connection may take to open, within a request's own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long past its deadline a commit may still wait for the database's answer before it is
/// given up as UNAVAILABLE with an unknown outcome.
const COMMIT_GRACE: Duration = Duration::from_secs(2);

/// Pause before retrying a transaction a concurrent one beat (doubled each time, up to 50 ms).
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// The backend: a bounded pool and an admission bound in front of it.
pub struct PgStore {
    /// Connections, at most `--postgres-pool-size`.
    pool: Pool,
    /// Calls admitted (waiting for a connection or holding one); `--queue-size` permits.
    admitted: Arc<Semaphore>,
    /// The number of permits `admitted` started with.
    capacity: usize,
    /// The same counters the sled writer keeps, for `/metrics`.
    stats: Arc<WriterStats>,
    /// Transactions retried after a serialization failure, for `/metrics`.
    retries: AtomicU64,
}

/// How one attempt at a transaction failed.
enum Attempt {
    /// A concurrent transaction won; this one was rolled back: run it again.
    Retry(tokio_postgres::Error),
    /// The answer.
    Fail(Error),
}

impl From<Error> for Attempt {
    fn from(error: Error) -> Self {
        Self::Fail(error)
    }
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(error: tokio_postgres::Error) -> Self {
        if retryable(&error) {
            Self::Retry(error)
        } else {
            Self::Fail(classify(error, false))
        }
    }
}

/// True for the errors after which the transaction was rolled back because another one won.
fn retryable(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
    })
}

/// The store's error for a database error. `committing`: it came from COMMIT, so whether the
/// transaction committed is unknown unless the server said it did not.
fn classify(error: tokio_postgres::Error, committing: bool) -> Error {
    if committing {
        // The server may have committed before the error (or before the connection broke).
        return Error::DatabaseUnavailable(format!(
            "COMMIT failed, so whether the write was applied is unknown; read the keys before \
             retrying: {error}"
        ));
    }
    match error.code().cloned() {
        Some(code) if code == SqlState::QUERY_CANCELED => Error::DeadlineExceeded,
        Some(code)
            if code.code().starts_with("08")
                || code == SqlState::ADMIN_SHUTDOWN
                || code == SqlState::CRASH_SHUTDOWN
                || code == SqlState::CANNOT_CONNECT_NOW
                || code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            Error::DatabaseUnavailable(format!("{error}"))
        }
        // A server error other than the above: the database refused the statement.
        Some(_) => Error::Database(format!("{error}")),
        // No SQLSTATE: the connection broke.
        None => Error::DatabaseUnavailable(format!("{error}")),
    }
}

impl PgStore {
    /// A pool of at most `pool_size` connections to `url` (`postgres://user@host:port/db`),
    /// admitting at most `queue_size` calls at once. Connects lazily: see [`PgStore::prepare`].
    pub fn new(url: &str, pool_size: usize, queue_size: usize) -> anyhow::Result<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--postgres-url is not a PostgreSQL URL: {e}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Only checks that the connection is open: every transaction of ours ends in
                // COMMIT or ROLLBACK, and a dropped one is rolled back by tokio-postgres.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            admitted: Arc::new(Semaphore::new(queue_size)),
            capacity: queue_size,
            stats: Arc::default(),
            retries: AtomicU64::new(0),
        })
    }

    /// Connects, creates the table if missing, checks that commits are durable
    /// (`synchronous_commit` not `off`) and names the stored namespaces `namespaces` does not
    /// list, as sled does for its trees. Called once before serving.
    pub async fn prepare(&self, timeout: Duration, namespaces: &Namespaces) -> anyhow::Result<()> {
        let client = self
            .client(Deadline::after(timeout))
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL: {e}"))?;
        client.batch_execute(SCHEMA).await?;
        let stored = client.query(STORED_NAMESPACES, &[]).await?;
        namespaces.warn_unserved(stored.iter().map(|row| row.get(0)), "the database");
        // CockroachDB and YugabyteDB may not know this setting: then say so and go on.
        match client.query_one("SHOW synchronous_commit", &[]).await {
            Ok(row) => {
                let value: String = row.get(0);
                if value == "off" {
                    anyhow::bail!(
                        "the database has synchronous_commit = off: an OK would not mean durable"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read synchronous_commit"),
        }
        Ok(())
    }

    /// The counters `/metrics` shows.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Transactions retried so far because a concurrent one won.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The pool's size, open connections and idle ones, for `/metrics`.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// A way to read [`PgStore::queued`] that holds nothing but the semaphore.
    pub fn queue_gauge(&self) -> (Arc<Semaphore>, usize) {
        (self.admitted.clone(), self.capacity)
    }

    /// Stops handing out connections; the open ones close as they are returned.
    pub fn close(&self) {
        self.pool.close();
    }

    /// One admission permit, or RESOURCE_EXHAUSTED at once.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.admitted.clone().try_acquire_owned().map_err(|_| {
            self.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
            Error::QueueFull {
                capacity: self.capacity,
                retry_after: QUEUE_FULL_RETRY,
            }
        })
    }

    /// A connection from the pool within `deadline`.
    async fn client(&self, deadline: Deadline) -> Result<Object, Error> {
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return Err(Error::DeadlineExceeded);
        }
        let timeouts = Timeouts {
            wait: Some(remaining),
            create: Some(remaining.min(CONNECT_TIMEOUT)),
            recycle: Some(remaining.min(CONNECT_TIMEOUT)),
        };
        self.pool
            .timeout_get(&timeouts)
            .await
            .map_err(|error| match error {
                // Every connection was busy until the deadline: nothing ran.
                PoolError::Timeout(TimeoutType::Wait) => Error::DeadlineExceeded,
                PoolError::Timeout(_) => {
                    Error::DatabaseUnavailable("timed out connecting to the database".into())
                }
                PoolError::Closed => Error::ShuttingDown,
                PoolError::Backend(error) => {
                    Error::DatabaseUnavailable(format!("cannot connect to the database: {error}"))
                }
                other => Error::DatabaseUnavailable(other.to_string()),
            })
    }

    /// The current record of a key, if any.
    pub async fn get(
        &self,
        deadline: Deadline,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Record>, Error> {
        let _permit = self.admit()?;
        within(deadline, async {
            let client = self.client(deadline).await?;
            let statement = client
                .prepare_cached(GET)
                .await
                .map_err(|e| classify(e, false))?;
            let params: [&(dyn ToSql + Sync); 2] = [&namespace, &key];
            let row = client
                .query_opt(&statement, &params)
                .await
                .map_err(|e| classify(e, false))?;
            Ok(row.map(|row| Record {
                version: version_of(row.get::<_, i64>(0)),
                value: row.get(1),
            }))
        })
        .await
    }

    /// As [`crate::db::Db::scan`]: up to `limit` entries whose key starts with `prefix`, after
    /// `after` if given, in key order, and whether more follow.
    pub async fn scan(
        &self,
        deadline: Deadline,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), Error> {
        let _permit = self.admit()?;
        let upper = prefix_upper_bound(prefix);
        let lower = after.unwrap_or(prefix);
        let sql = format!(
            "SELECT key, version, value FROM kv WHERE namespace = $1 AND key {} $2{} \
             ORDER BY key LIMIT {}",
            if after.is_some() { ">" } else { ">=" },
            if upper.is_some() { " AND key < $3" } else { "" },
            limit + 1
        );
        within(deadline, async {
            let client = self.client(deadline).await?;
            let statement = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| classify(e, false))?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&namespace, &lower];
            if let Some(upper) = &upper {
                params.push(upper);
            }
            let rows = client
                .query_raw(&statement, params)
                .await
                .map_err(|e| classify(e, false))?;
            let mut rows = std::pin::pin!(rows);
            let mut entries = Vec::with_capacity(limit.min(128));
            let mut page_bytes = 0;
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| classify(e, false))?;
                let key: String = row.get(0);
                let value: Vec<u8> = row.get(2);
                let record_bytes = 8 + value.len();
                if entries.len() == limit
                    || (page_bytes > 0 && page_bytes + record_bytes > MAX_PAGE_BYTES)
                {
                    return Ok((entries, true));
                }
                page_bytes += key.len() + record_bytes;
                entries.push(Entry {
                    key,
                    record: Record {
                        version: version_of(row.get::<_, i64>(1)),
                        value,
                    },
                });
            }
            Ok((entries, false))
        })
        .await
    }

    /// Applies `writes` all or nothing in one transaction and returns each one's version (the
    /// new version of a put, 0 for a delete, the checked version for a check).
    pub async fn commit(&self, writes: &[Write], deadline: Deadline) -> Result<Vec<u64>, Error> {
        let permit = self.admit()?;
        self.commit_admitted(writes, deadline, permit).await
    }

    /// [`PgStore::commit`] with the admission permit already taken (a BatchWrite takes one per
    /// write when it queues them all, so a full queue refuses only the writes that did not fit).
    pub async fn commit_admitted(
        &self,
        writes: &[Write],
        deadline: Deadline,
        _permit: OwnedSemaphorePermit,
    ) -> Result<Vec<u64>, Error> {
        // Not cut off at the deadline itself: once COMMIT is sent the write may land, and a
        // caller told DEADLINE_EXCEEDED must be able to rely on "nothing was changed". The
        // server-side statement timeout ends it on time; this is only for a silent network.
        let versions = tokio::time::timeout_at(deadline.instant() + COMMIT_GRACE, async {
            let mut client = self.client(deadline).await?;
            let mut pause = FIRST_RETRY_PAUSE;
            loop {
                match attempt(&mut client, writes, deadline).await {
                    Ok(versions) => return Ok(versions),
                    Err(Attempt::Fail(error)) => return Err(error),
                    Err(Attempt::Retry(error)) => {
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        // Rolled back: nothing changed, so running out of time here is an
                        // honest DEADLINE_EXCEEDED.
                        if deadline.remaining() <= pause {
                            tracing::debug!(%error, "out of time retrying a transaction");
                            return Err(Error::DeadlineExceeded);
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::DatabaseUnavailable(
                "the database did not answer in time; whether the write was applied is unknown"
                    .into(),
            ))
        })?;
        self.stats
            .writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        if writes.len() > 1 {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(versions)
    }
}

/// One try at a commit's transaction.
async fn attempt(
    client: &mut Object,
    writes: &[Write],
    deadline: Deadline,
) -> Result<Vec<u64>, Attempt> {
    let budget_ms = deadline.remaining().as_millis().max(1);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await?;
    tx.batch_execute(&format!("SET LOCAL statement_timeout = {budget_ms}"))
        .await?;

    // Every named key's version, in one statement: (namespace, key) IN ((..), ..).
    let mut sql =
        String::from("SELECT namespace, key, version FROM kv WHERE (namespace, key) IN (");
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(2 * writes.len());
    for (i, write) in writes.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
        params.push(&write.namespace);
        params.push(&write.key);
    }
    sql.push(')');
    let statement = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&statement, &params).await?;
    let mut current: HashMap<(&str, &str), u64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let namespace: &str = row.get(0);
        let key: &str = row.get(1);
        current.insert((namespace, key), version_of(row.get::<_, i64>(2)));
    }

    let mut versions = Vec::with_capacity(writes.len());
    for (index, write) in writes.iter().enumerate() {
        let stored = current
            .get(&(write.namespace.as_str(), write.key.as_str()))
            .copied()
            .unwrap_or(0);
        if stored != write.expected_version {
            drop(current);
            tx.rollback().await?;
            return Err(Attempt::Fail(Error::VersionConflict {
                index,
                namespace: write.namespace.clone(),
                key: write.key.clone(),
                expected: write.expected_version,
                current: stored,
            }));
        }
        versions.push(match write.change {
            Change::Put(_) => stored + 1,
            Change::Delete => 0,
            Change::Check => stored,
        });
    }

    for write in writes {
        let (namespace, key) = (&write.namespace, &write.key);
        // Versions matched above, so each fits i64 (they came from the table).
        let expected = write.expected_version as i64;
        let changed = match (&write.change, write.expected_version) {
            (Change::Check, _) | (Change::Delete, 0) => continue,
            (Change::Put(value), 0) => {
                let statement = tx.prepare_cached(INSERT).await?;
                let params: [&(dyn ToSql + Sync); 3] = [namespace, key, value];
                tx.execute(&statement, &params).await?
            }
            (Change::Put(value), _) => {
                let statement = tx.prepare_cached(UPDATE).await?;
                let next = expected + 1;
                let params: [&(dyn ToSql + Sync); 5] = [namespace, key, &next, value, &expected];
                tx.execute(&statement, &params).await?
            }
            (Change::Delete, _) => {
                let statement = tx.prepare_cached(DELETE).await?;
                let params: [&(dyn ToSql + Sync); 3] = [namespace, key, &expected];
                tx.execute(&statement, &params).await?
            }
        };
        if changed != 1 {
            // Under SERIALIZABLE the read above makes this impossible; at a weaker isolation
            // it means a concurrent writer won: answer from a fresh read.
            tx.rollback().await?;
            return Err(Attempt::Fail(Error::Database(format!(
                "a conditional write changed {changed} rows after its version matched; \
                 is the database running this transaction below SERIALIZABLE?"
            ))));
        }
    }
    if deadline.expired() {
        // The statements ran late: the caller is told "not applied", so it must not be.
        tx.rollback().await?;
        return Err(Attempt::Fail(Error::DeadlineExceeded));
    }
    tx.commit().await.map_err(|error| {
        if retryable(&error) {
            Attempt::Retry(error)
        } else {
            Attempt::Fail(classify(error, true))
        }
    })?;
    Ok(versions)
}

/// `work` under `deadline`: DEADLINE_EXCEEDED when it has not finished by then. Dropping a
/// tokio-postgres transaction mid-way rolls it back; a COMMIT already sent may still land, and
/// then the caller was told DEADLINE_EXCEEDED for a write that happened (see the notes).
async fn within<T>(
    deadline: Deadline,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    if deadline.expired() {
        return Err(Error::DeadlineExceeded);
    }
    tokio::time::timeout_at(deadline.instant(), work)
        .await
        .unwrap_or(Err(Error::DeadlineExceeded))
}

/// A stored version (never negative: the table only holds what we wrote).
fn version_of(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

/// The least string greater than every string that starts with `prefix`, in code point (= UTF-8
/// byte = `COLLATE "C"`) order; `None` when there is none (empty prefix, or only U+10FFFF).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_of_a_prefix_is_the_next_string_in_byte_order() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("user/"), Some("user0".into()));
        assert_eq!(prefix_upper_bound("a\u{D7FF}"), Some("a\u{E000}".into()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        for prefix in ["user/", "é", "a\u{FFFF}"] {
            let upper = prefix_upper_bound(prefix).unwrap();
            assert!(upper.as_bytes() > prefix.as_bytes());
            let longer = format!("{prefix}\u{10FFFF}\u{10FFFF}");
            assert!(longer.as_bytes() < upper.as_bytes(), "{prefix:?}");
        }
    }
}
