//! Group commit: one thread checks queued commits in batches, writes each batch to sled as one
//! unit, flushes and fsyncs once per batch, then answers the whole batch.
//!
//! This is the Elixir to-do app's `Todo.Database` with its two problems fixed: the queue in front of it is
//! bounded (a full queue refuses at once instead of growing until the VM dies), and a request
//! whose caller stopped waiting is dropped instead of executed later.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Instant,
};

use kit::{claim::Claim, deadline::Deadline};
use tokio::sync::{mpsc, oneshot};

use crate::{
    db::{Db, Group, Write},
    error::{Error, QUEUE_FULL_RETRY},
};

/// One commit waiting for the writer: a lone Put or Delete is a commit of one write.
struct Queued {
    writes: Vec<Write>,
    deadline: Instant,
    claim: Arc<Claim>,
    reply: oneshot::Sender<Result<Vec<u64>, Error>>,
}

/// Counters the writer keeps, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Writes applied and made durable (a commit counts each of its writes).
    pub writes: AtomicU64,
    /// Commits of more than one write applied and made durable.
    pub commits: AtomicU64,
    /// Flushes done (one per batch).
    pub flushes: AtomicU64,
    /// Writes refused because the queue was full.
    pub rejected_full: AtomicU64,
    /// Writes dropped unexecuted because their deadline passed in the queue.
    pub expired: AtomicU64,
}

/// The handlers' side: submit a write and wait for it to be durable.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Queued>,
    stats: Arc<WriterStats>,
}

/// What `/metrics` reads of the writer; see [`Writer::gauge`].
pub struct WriterGauge {
    queue: QueueGauge,
    stats: Arc<WriterStats>,
}

/// Where a [`WriterGauge`] reads the queue depth.
enum QueueGauge {
    /// The sled writer's queue.
    Writer(mpsc::WeakSender<Queued>),
    /// The PostgreSQL backend's admission permits, and how many there are.
    Permits(Arc<tokio::sync::Semaphore>, usize),
}

impl WriterGauge {
    /// A gauge of the PostgreSQL backend: `stats`, and `capacity` admission permits in
    /// `permits` (those taken are the queue depth).
    pub fn of_permits(
        stats: Arc<WriterStats>,
        permits: Arc<tokio::sync::Semaphore>,
        capacity: usize,
    ) -> Self {
        Self {
            queue: QueueGauge::Permits(permits, capacity),
            stats,
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Writes waiting in the queue now (0 once the writer has stopped).
    pub fn queued(&self) -> usize {
        match &self.queue {
            QueueGauge::Writer(queue) => queue
                .upgrade()
                .map_or(0, |queue| queue.max_capacity() - queue.capacity()),
            QueueGauge::Permits(permits, capacity) => {
                capacity.saturating_sub(permits.available_permits())
            }
        }
    }
}

/// The writer thread; join it after every [`Writer`] is dropped to get the final flush.
pub struct WriterThread(thread::JoinHandle<()>);

impl WriterThread {
    /// Waits until the queue is drained and the last flush is done.
    pub async fn join(self) {
        let handle = self.0;
        if tokio::task::spawn_blocking(move || handle.join())
            .await
            .is_err()
        {
            tracing::error!("writer thread panicked");
        }
    }
}

impl Writer {
    /// Starts the writer thread over `db`. `queue_size` bounds the writes waiting; `max_batch`
    /// bounds the writes one flush covers (1 = flush every write alone, the slow baseline).
    pub fn start(db: Arc<Db>, queue_size: usize, max_batch: usize) -> (Self, WriterThread) {
        let (tx, rx) = mpsc::channel(queue_size);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, rx, max_batch.max(1), &thread_stats))
            .expect("spawning the writer thread");
        (Self { queue: tx, stats }, WriterThread(handle))
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Writes waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// A read-only view of the queue and counters that does not keep the writer running:
    /// the writer's final flush waits for every [`Writer`] to be dropped, so an observer that
    /// outlives the handlers (the `/metrics` endpoint) must not hold one.
    pub fn gauge(&self) -> WriterGauge {
        WriterGauge {
            queue: QueueGauge::Writer(self.queue.downgrade()),
            stats: self.stats.clone(),
        }
    }

    /// Queues `write` and waits until it is durable. Refuses at once when the queue is full;
    /// gives up at `deadline`, and then the write is guaranteed never to run.
    pub async fn submit(&self, write: Write, deadline: Deadline) -> Result<u64, Error> {
        let versions = self.enqueue(vec![write], deadline)?.outcome().await?;
        Ok(versions[0])
    }

    /// Queues `writes`, to be applied all or nothing ([`Db::commit`]), without waiting:
    /// [`Error::QueueFull`] at once when the queue is full, [`Error::ShuttingDown`] when the
    /// writer is gone. Commits enqueued one after another by one caller are applied in that
    /// order. Await [`Pending::outcome`] for the result; a `Pending` dropped unawaited still
    /// runs (unless its deadline passes in the queue).
    pub fn enqueue(&self, writes: Vec<Write>, deadline: Deadline) -> Result<Pending, Error> {
        let claim = Arc::new(Claim::default());
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            writes,
            deadline: deadline.instant().into_std(),
            claim: claim.clone(),
            reply,
        };
        self.queue.try_send(queued).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
                Error::QueueFull {
                    capacity: self.queue.max_capacity(),
                    retry_after: QUEUE_FULL_RETRY,
                }
            }
            mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
        })?;
        Ok(Pending {
            claim,
            answer,
            deadline,
        })
    }
}

/// A queued write whose outcome is not known yet; see [`Writer::enqueue`].
#[must_use = "a pending write runs even if nobody awaits its outcome"]
#[derive(Debug)]
pub struct Pending {
    claim: Arc<Claim>,
    answer: oneshot::Receiver<Result<Vec<u64>, Error>>,
    deadline: Deadline,
}

impl Pending {
    /// Waits until the write is durable, or gives up at its deadline: then it either is
    /// abandoned (guaranteed never to run: [`Error::DeadlineExceeded`]) or the writer had
    /// already started it, and its real outcome is the answer: each write's version.
    pub async fn outcome(self) -> Result<Vec<u64>, Error> {
        let Self {
            claim,
            mut answer,
            deadline,
        } = self;
        tokio::select! {
            biased;
            result = &mut answer => result.unwrap_or(Err(Error::ShuttingDown)),
            () = tokio::time::sleep_until(deadline.instant()) => {
                if claim.abandon() {
                    Err(Error::DeadlineExceeded)
                } else {
                    // The writer started it just in time: its outcome is the answer.
                    answer.await.unwrap_or(Err(Error::ShuttingDown))
                }
            }
        }
    }
}

fn run(db: &Db, mut rx: mpsc::Receiver<Queued>, max_batch: usize, stats: &WriterStats) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut answers = Vec::with_capacity(max_batch);
    while rx.blocking_recv_many(&mut batch, max_batch) > 0 {
        let now = Instant::now();
        let mut applied = 0u64;
        let mut commits = 0u64;
        // Every commit of the batch is checked and staged, then all are written to sled as one
        // unit, flushed and fsynced once, and only then answered.
        let mut group = Group::default();
        for queued in batch.drain(..) {
            if !queued.claim.start() {
                continue; // Abandoned: its caller was already told DEADLINE_EXCEEDED.
            }
            let result = if now >= queued.deadline {
                stats.expired.fetch_add(1, Ordering::Relaxed);
                Err(Error::DeadlineExceeded)
            } else {
                let result = db.stage(&mut group, &queued.writes);
                if result.is_ok() {
                    applied += queued.writes.len() as u64;
                    commits += u64::from(queued.writes.len() > 1);
                }
                result
            };
            answers.push((queued.reply, result));
        }
        let written = if group.is_empty() {
            Ok(())
        } else {
            db.apply_group(group).and_then(|()| db.flush())
        };
        if let Err(error) = written {
            tracing::error!(%error, "writing or flushing a batch failed; failing the batch");
            let message = error.to_string();
            for (_, result) in &mut answers {
                if result.is_ok() {
                    *result = Err(Error::Storage(sled::Error::Io(std::io::Error::other(
                        message.clone(),
                    ))));
                }
            }
        } else if applied > 0 {
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(applied, Ordering::Relaxed);
            stats.commits.fetch_add(commits, Ordering::Relaxed);
        }
        for (reply, result) in answers.drain(..) {
            // The caller may have gone (client cancelled); the write is durable regardless.
            let _ = reply.send(result);
        }
    }
    // Every sender is gone: the server has drained. One last flush for good measure.
    if let Err(error) = db.flush() {
        tracing::error!(%error, "final flush failed");
    }
    tracing::info!("writer stopped after the final flush");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{db::Change, namespaces::Namespaces};

    fn put(key: &str, expected_version: u64) -> Write {
        Write {
            namespace: "ns".into(),
            key: key.into(),
            change: Change::Put(key.as_bytes().to_vec()),
            expected_version,
        }
    }

    fn start(queue: usize, batch: usize) -> (tempfile::TempDir, Arc<Db>, Writer, WriterThread) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), Namespaces::parse("ns").unwrap()).unwrap());
        let (writer, thread) = Writer::start(db.clone(), queue, batch);
        (dir, db, writer, thread)
    }

    #[tokio::test]
    async fn concurrent_writes_share_flushes() {
        let (_dir, db, writer, thread) = start(1024, 512);
        let deadline = Deadline::after(Duration::from_secs(10));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.submit(put(&format!("k{i}"), 0), deadline).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        let stats = writer.stats().clone();
        drop(writer);
        thread.join().await;
        assert_eq!(stats.writes.load(Ordering::Relaxed), 200);
        assert!(
            stats.flushes.load(Ordering::Relaxed) < 200,
            "no write shared a flush"
        );
        assert_eq!(db.get("ns", "k7").unwrap().unwrap().version, 1);
    }

    #[tokio::test]
    async fn an_expired_write_is_refused_and_never_applied() {
        let (_dir, db, writer, thread) = start(16, 16);
        let result = writer
            .submit(put("late", 0), Deadline::after(Duration::ZERO))
            .await;
        assert!(matches!(result, Err(Error::DeadlineExceeded)), "{result:?}");
        drop(writer);
        thread.join().await;
        assert_eq!(db.get("ns", "late").unwrap(), None);
    }

    #[tokio::test]
    async fn a_closed_queue_answers_shutting_down() {
        let (_dir, _db, writer, thread) = start(1, 1);
        let (tx, _) = mpsc::channel(1);
        let closed = Writer {
            queue: tx,
            stats: writer.stats.clone(),
        };
        let result = closed
            .submit(put("k", 0), Deadline::after(Duration::from_secs(1)))
            .await;
        assert!(matches!(result, Err(Error::ShuttingDown)), "{result:?}");
        drop(writer);
        thread.join().await;
    }

    #[tokio::test]
    async fn writes_enqueued_together_apply_in_order_and_answer_each_on_its_own() {
        let (_dir, db, writer, thread) = start(16, 16);
        let deadline = Deadline::after(Duration::from_secs(10));
        let pending = [put("k", 0), put("k", 1), put("k", 1), put("other", 0)]
            .map(|write| writer.enqueue(vec![write], deadline).unwrap());
        let mut outcomes = Vec::new();
        for pending in pending {
            outcomes.push(pending.outcome().await);
        }
        assert_eq!(outcomes[0].as_ref().unwrap(), &[1], "{outcomes:?}");
        assert_eq!(outcomes[1].as_ref().unwrap(), &[2], "{outcomes:?}");
        assert!(
            matches!(outcomes[2], Err(Error::VersionConflict { current: 2, .. })),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[3].as_ref().unwrap(), &[1], "{outcomes:?}");
        drop(writer);
        thread.join().await;
        assert_eq!(db.get("ns", "k").unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn enqueue_refuses_a_full_queue_at_once_and_an_abandoned_write_can_never_run() {
        // A queue nobody drains: the test plays the writer thread.
        let (tx, mut rx) = mpsc::channel(1);
        let writer = Writer {
            queue: tx,
            stats: Arc::default(),
        };
        let deadline = Deadline::after(Duration::from_millis(20));
        let first = writer.enqueue(vec![put("a", 0)], deadline).unwrap();
        let full = writer.enqueue(vec![put("b", 0)], deadline);
        assert!(
            matches!(full, Err(Error::QueueFull { capacity: 1, .. })),
            "{full:?}"
        );
        assert_eq!(writer.stats.rejected_full.load(Ordering::Relaxed), 1);

        let result = first.outcome().await;
        assert!(matches!(result, Err(Error::DeadlineExceeded)), "{result:?}");
        let queued = rx.recv().await.unwrap();
        assert!(
            !queued.claim.start(),
            "the writer could still run a write its caller was told never ran"
        );
    }

    #[tokio::test]
    async fn a_write_the_writer_claimed_reports_its_real_outcome_past_the_deadline() {
        let (tx, mut rx) = mpsc::channel(1);
        let writer = Writer {
            queue: tx,
            stats: Arc::default(),
        };
        let pending = writer
            .enqueue(
                vec![put("a", 0)],
                Deadline::after(Duration::from_millis(20)),
            )
            .unwrap();
        let queued = rx.recv().await.unwrap();
        assert!(queued.claim.start());
        let outcome = tokio::spawn(pending.outcome());
        tokio::time::sleep(Duration::from_millis(50)).await;
        queued.reply.send(Ok(vec![7])).unwrap();
        assert_eq!(outcome.await.unwrap().unwrap(), [7]);
    }
}
