//! Jobs: slow work off the request path, supervised, persisted and resumed (OTP's
//! `Task.Supervisor.async_nolink`: a task that reports back, whose crash takes no caller down).
//!
//! The one kind of job today imports to-do entries. [`Jobs::upload`] stores the entries a
//! client streams in, as chunks in namespace `job_entries`, and answers with the job's id
//! once they are all durable; a background task ([`import`]) then sends each entry to its
//! list's actor as an `AddEntry` with the request id `job/<id>/<index>`, like any client: it
//! never writes a list behind its actor's back, it waits out a full mailbox instead of
//! failing, and it keeps at most `--job-in-flight` entries in flight.
//!
//! Progress is checkpointed in the job's record (namespace `jobs`): every entry before
//! `next_index` was tried and is counted. After a restart the job resumes there. Entries it
//! had sent past the checkpoint are sent again with the same request ids, so the lists'
//! idempotency memory answers them without applying them twice. An actor keeps jobs' ids
//! apart from its clients' ([`crate::runtime::JOB_REQUEST_PREFIX`]): half of
//! `--recent-requests` of them, for a day. So the job never lets more than that many of one
//! list's entries get ahead of its last checkpoint: it checkpoints first.
//!
//! Each job runs in a task of its own, watched by a supervisor task that restarts it from the
//! last checkpoint if it panics (at most [`MAX_CRASHES`] times, then the job is FAILED).

pub mod import;
pub mod service;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kit::deadline::Deadline;
use prost::Message as _;
use proto::session::v1::{self as pb, JobRecord, JobState};
use tokio::sync::{Semaphore, watch};

use crate::{
    cart::convert::timestamp,
    error::{Error, reason},
    runtime::{Kind, Store, store::mutation},
    todo::TodoEntity,
};

pub use service::JobApi;

/// Store namespace of the job records, keyed by job id.
pub const JOBS_NAMESPACE: &str = "jobs";
/// Store namespace of uploaded entries: `<job id>/<10-digit chunk number>` → `ImportChunk`.
pub const JOB_ENTRIES_NAMESPACE: &str = "job_entries";

/// Failures a job keeps (the lowest lines); the rest are only counted.
pub const MAX_FAILURES: usize = 100;
/// Crashes of a job's task before the job is marked FAILED.
pub const MAX_CRASHES: u32 = 3;
/// How long one store call of a job may take.
const CALL_BUDGET: Duration = Duration::from_secs(10);
/// Longest job id accepted in a request.
const MAX_ID_BYTES: usize = 64;

/// How jobs run.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Entries one job has in flight at once.
    pub in_flight: usize,
    /// Jobs importing at once; more wait PENDING.
    pub max_running: usize,
    /// Jobs not yet final (uploading, pending, running) at once; more uploads are refused.
    pub max_unfinished: usize,
    /// Entries one import may hold.
    pub max_entries: u64,
    /// Entries per second one job sends at most (`None`: as fast as the lists take them).
    pub rate: Option<u32>,
    /// How long finished jobs are kept.
    pub retention: Duration,
    /// One list's entries a job may have sent past its last checkpoint: what a list remembers
    /// of a job's ids (half its idempotency memory), so a resume can always recognise them.
    pub ahead_per_list: usize,
    /// How long an upload may go without a message before it is abandoned.
    pub upload_idle: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            in_flight: 8,
            max_running: 2,
            max_unfinished: 32,
            max_entries: 1_000_000,
            rate: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            ahead_per_list: 32,
            upload_idle: Duration::from_secs(60),
        }
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether a job in `state` is done for good.
pub fn is_final(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

/// A gRPC code's canonical name (`NOT_FOUND`), as EntryFailure reports it.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Checks a job id from a request.
pub fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(
            "id",
            "is empty; pass the id ImportEntries answered",
        ));
    }
    if id.len() > MAX_ID_BYTES || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(Error::invalid(
            "id",
            "is not a job id (ids look like 0193a8c4f2e1-7c2a); pass the id ImportEntries answered",
        ));
    }
    Ok(())
}

/// A new job id: the creation time in hex milliseconds (so ids sort by age), then 16 random
/// bits.
fn new_id() -> String {
    format!("{:012x}-{:04x}", now_ms().max(0), rand::random::<u16>())
}

/// The kind name jobs are placed under when session-svc runs as several replicas: a job's
/// id decides which replica runs it and answers for it.
pub const JOB_KIND: &str = "job";

impl Jobs {
    /// A new job id that placement gives to this replica, so GetJob, WatchJob and CancelJob
    /// sent to any replica reach the one running it. (A single replica takes the first.)
    pub(crate) fn placed_id(&self) -> String {
        let Some(cluster) = self.inner.lists.cluster() else {
            return new_id();
        };
        // Each draw is this replica's with probability 1/members: 64 draws miss only with a
        // vanishing probability, and then the job is still found through the store.
        let mut id = new_id();
        for _ in 0..64 {
            if cluster.placement(JOB_KIND, &id) == crate::cluster::Placement::Local {
                break;
            }
            id = new_id();
        }
        id
    }

    /// Whether this replica runs job `id`: always for a single replica.
    fn runs_here(&self, id: &str) -> bool {
        self.inner
            .lists
            .cluster()
            .is_none_or(|c| c.placement(JOB_KIND, id) == crate::cluster::Placement::Local)
    }
}

/// The key of chunk `n` of job `id`.
fn chunk_key(id: &str, n: u64) -> String {
    format!("{id}/{n:010}")
}

/// What a job's live task and its watchers share.
#[derive(Debug)]
pub struct Live {
    /// The job as it is now (failures included), published as it moves.
    progress: watch::Sender<pb::Job>,
    /// Set by CancelJob.
    cancel: watch::Sender<bool>,
}

impl Live {
    fn new(job: pb::Job) -> Arc<Self> {
        Arc::new(Self {
            progress: watch::Sender::new(job),
            cancel: watch::Sender::new(false),
        })
    }

    /// The job now.
    pub fn snapshot(&self) -> pb::Job {
        self.progress.borrow().clone()
    }

    /// Changes the published job.
    fn publish(&self, change: impl FnOnce(&mut pb::Job)) {
        self.progress.send_modify(|job| {
            change(job);
            job.updated = Some(timestamp(now_ms()));
        });
    }
}

/// The job supervisor: the jobs in memory, the running slots, the counts by state.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    lists: Kind<TodoEntity>,
    settings: JobSettings,
    /// Jobs not final: uploading, pending or running in this process.
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// One permit per running job.
    slots: Arc<Semaphore>,
    /// Jobs kept, by state (indexed by the JobState number).
    counts: Mutex<[u64; 7]>,
    /// Supervisor tasks, so a drain can wait for their last checkpoint.
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

impl Jobs {
    /// A supervisor sending entries to `lists`.
    pub fn new(store: Store, lists: Kind<TodoEntity>, settings: JobSettings) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_running.max(1)));
        Self {
            inner: Arc::new(Inner {
                store,
                lists,
                settings,
                live: Mutex::default(),
                slots,
                counts: Mutex::default(),
                tasks: Mutex::default(),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &JobSettings {
        &self.inner.settings
    }

    /// Jobs kept, by state, for GetStats.
    pub fn counts(&self) -> pb::JobCounts {
        let c = *self.inner.counts.lock().expect("job counts");
        let at = |s: JobState| c[s as usize];
        pb::JobCounts {
            uploading: at(JobState::Uploading),
            pending: at(JobState::Pending),
            running: at(JobState::Running),
            succeeded: at(JobState::Succeeded),
            failed: at(JobState::Failed),
            cancelled: at(JobState::Cancelled),
        }
    }

    /// Counts a job moving from `from` (`None`: new) to `to` (`None`: deleted).
    fn count(&self, from: Option<JobState>, to: Option<JobState>) {
        let mut c = self.inner.counts.lock().expect("job counts");
        if let Some(from) = from {
            c[from as usize] = c[from as usize].saturating_sub(1);
        }
        if let Some(to) = to {
            c[to as usize] += 1;
        }
    }

    /// The live handle of job `id`, if it is not final and in this process.
    fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.inner.live.lock().expect("live jobs").get(id).cloned()
    }

    /// The job `id` now: from memory while it runs here, else from its record.
    pub async fn get(&self, id: &str, deadline: Deadline) -> Result<pb::Job, Error> {
        validate_id(id)?;
        if let Some(live) = self.live(id) {
            return Ok(live.snapshot());
        }
        match self.load(id, deadline).await? {
            Some((record, _)) => Ok(record.job.unwrap_or_default()),
            None => Err(not_found(id)),
        }
    }

    /// A watch of job `id`: its live progress, or `None` with the final job.
    pub async fn watch(
        &self,
        id: &str,
        deadline: Deadline,
    ) -> Result<Result<watch::Receiver<pb::Job>, pb::Job>, Error> {
        validate_id(id)?;
        if let Some(live) = self.live(id) {
            return Ok(Ok(live.progress.subscribe()));
        }
        match self.load(id, deadline).await? {
            Some((record, _)) => Ok(Err(record.job.unwrap_or_default())),
            None => Err(not_found(id)),
        }
    }

    /// Cancels job `id` and waits (until `deadline`) for it to stop.
    pub async fn cancel(&self, id: &str, deadline: Deadline) -> Result<pb::Job, Error> {
        validate_id(id)?;
        let Some(live) = self.live(id) else {
            let job = self.get(id, deadline).await?;
            return Err(Error::FailedPrecondition(
                reason::JOB_ENDED,
                format!(
                    "job {id} already ended ({}); only an unfinished job can be cancelled",
                    state_word(job.state())
                ),
            ));
        };
        let mut progress = live.progress.subscribe();
        live.cancel.send_replace(true);
        let stopped = tokio::time::timeout_at(
            deadline.instant(),
            progress.wait_for(|job| is_final(job.state())),
        )
        .await;
        Ok(match stopped {
            Ok(Ok(job)) => job.clone(),
            // Still stopping (entries in flight finish first) or gone from memory.
            _ => live.snapshot(),
        })
    }

    /// One page of jobs (oldest first), at most `page_size`, in `state` if given.
    pub async fn list(
        &self,
        state: Option<JobState>,
        page_size: usize,
        page_token: String,
        deadline: Deadline,
    ) -> Result<(Vec<pb::Job>, String), Error> {
        let mut jobs = Vec::new();
        let mut token = page_token;
        // A filter may skip whole pages: look at a bounded number of records per call.
        for _ in 0..10 {
            let want = i32::try_from(page_size - jobs.len()).unwrap_or(1000);
            let (page, next) = self
                .inner
                .store
                .scan(JOBS_NAMESPACE, "", want, token, deadline)
                .await
                .map_err(|e| match e {
                    Error::StoreRefused(m) if m.contains("page_token") => Error::invalid(
                        "page_token",
                        "is not a token ListJobs issued; pass next_page_token from the previous \
                         page unchanged, or empty for the first page",
                    ),
                    e => e,
                })?;
            for entry in page {
                let Ok(record) = JobRecord::decode(entry.value.as_slice()) else {
                    continue;
                };
                let mut job = record.job.unwrap_or_default();
                if let Some(live) = self.live(&job.id) {
                    job = live.snapshot();
                }
                if state.is_none_or(|s| job.state() == s) {
                    job.failures.clear();
                    jobs.push(job);
                }
            }
            token = next;
            if token.is_empty() || jobs.len() >= page_size {
                break;
            }
        }
        Ok((jobs, token))
    }

    /// The record of job `id` and its version.
    async fn load(&self, id: &str, deadline: Deadline) -> Result<Option<(JobRecord, u64)>, Error> {
        let Some(stored) = self.inner.store.get(JOBS_NAMESPACE, id, deadline).await? else {
            return Ok(None);
        };
        let record = JobRecord::decode(stored.value.as_slice())
            .map_err(|e| Error::Corrupt(format!("job record {id}: {e}")))?;
        Ok(Some((record, stored.version)))
    }

    /// Writes `record` over version `expected` (0: new) with `more` mutations in the same
    /// commit; its new version.
    async fn save(
        &self,
        record: &JobRecord,
        expected: u64,
        more: Vec<proto::store::v1::Mutation>,
    ) -> Result<u64, Error> {
        let id = record
            .job
            .as_ref()
            .map(|j| j.id.clone())
            .unwrap_or_default();
        let mut mutations = vec![mutation(
            JOBS_NAMESPACE,
            id,
            Some(record.encode_to_vec()),
            expected,
        )];
        mutations.extend(more);
        let versions = self
            .inner
            .store
            .commit(mutations, Deadline::after(CALL_BUDGET))
            .await?;
        Ok(versions[0])
    }

    /// Writes `record` over `version`, deleting its chunks before `to` on the way (at most
    /// 99 per commit, each commit moving `deleted_chunks` and `version`).
    async fn save_and_trim(
        &self,
        record: &mut JobRecord,
        version: &mut u64,
        to: u64,
    ) -> Result<(), Error> {
        let id = record
            .job
            .as_ref()
            .map(|j| j.id.clone())
            .unwrap_or_default();
        loop {
            let from = record.deleted_chunks;
            let end = to.min(from + 99).max(from);
            // Written once with expected version 0, a chunk is at version 1.
            let deletes = (from..end)
                .map(|n| mutation(JOB_ENTRIES_NAMESPACE, chunk_key(&id, n), None, 1))
                .collect();
            record.deleted_chunks = end;
            match self.save(record, *version, deletes).await {
                Ok(v) => *version = v,
                Err(error) => {
                    record.deleted_chunks = from;
                    return Err(error);
                }
            }
            if end >= to {
                return Ok(());
            }
        }
    }

    /// Starts the supervisor of job `id` (PENDING or RUNNING, its record stored).
    fn supervise(&self, id: String, live: Arc<Live>) {
        let jobs = self.clone();
        self.inner
            .tasks
            .lock()
            .expect("job tasks")
            .spawn(async move { jobs.supervisor(id, live).await });
    }

    /// Waits for a slot, runs the job's task, restarts it when it panics.
    async fn supervisor(self, id: String, live: Arc<Live>) {
        let mut cancelled = live.cancel.subscribe();
        let mut draining = self.inner.lists.draining();
        let permit = tokio::select! {
            permit = self.inner.slots.clone().acquire_owned() => permit,
            _ = until(&mut cancelled) => {
                import::finish_unstarted(&self, &id, &live, JobState::Cancelled, "cancelled before it started").await;
                return;
            }
            _ = until(&mut draining) => return,
        };
        let Ok(_permit) = permit else { return };
        let mut crashes = 0;
        loop {
            let task = tokio::spawn(import::run(self.clone(), id.clone(), live.clone()));
            match task.await {
                Ok(()) => break,
                Err(error) if error.is_panic() => {
                    crashes += 1;
                    let reason = panic_message(error.into_panic());
                    tracing::error!(job = %id, crashes, %reason, "import task crashed");
                    if crashes >= MAX_CRASHES {
                        let why = format!(
                            "its task crashed {crashes} times (last: {reason}); what was imported stays"
                        );
                        import::finish_unstarted(&self, &id, &live, JobState::Failed, &why).await;
                        break;
                    }
                    live.publish(|job| job.resumes += 1);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => break,
            }
        }
        let done = is_final(live.snapshot().state());
        if done {
            self.inner.live.lock().expect("live jobs").remove(&id);
        }
    }

    /// Resumes the jobs a previous run left unfinished, fails interrupted uploads, counts the
    /// jobs by state, then deletes finished jobs past `--job-retention` every hour. Retries
    /// while store-svc is unreachable.
    pub async fn recover_and_retain(self) {
        let mut draining = self.inner.lists.draining();
        // With several replicas, recovery waits for the membership: until then every replica
        // believes it is alone and would resume every job.
        if let Some(cluster) = self.inner.lists.cluster() {
            let cluster = cluster.clone();
            tokio::select! {
                () = cluster.settled() => {}
                _ = until(&mut draining) => return,
            }
        }
        let mut first = true;
        loop {
            match self.scan_all(first).await {
                Ok(()) => first = false,
                Err(error) => tracing::warn!(%error, "job recovery scan failed; retrying"),
            }
            let rest = if first {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = until(&mut draining) => return,
            }
        }
    }

    /// One pass over the job records: on the first, recovery and counting; on every pass,
    /// retention.
    async fn scan_all(&self, first: bool) -> Result<(), Error> {
        let mut token = String::new();
        let mut counts = [0u64; 7];
        let horizon = now_ms().saturating_sub(
            i64::try_from(self.inner.settings.retention.as_millis()).unwrap_or(i64::MAX),
        );
        loop {
            let (page, next) = self
                .inner
                .store
                .scan(JOBS_NAMESPACE, "", 100, token, Deadline::after(CALL_BUDGET))
                .await?;
            for entry in page {
                let Ok(mut record) = JobRecord::decode(entry.value.as_slice()) else {
                    tracing::warn!(key = %entry.key, "unreadable job record left alone");
                    continue;
                };
                let Some(mut job) = record.job.clone() else {
                    continue;
                };
                if self.live(&job.id).is_some() {
                    continue; // this process's own
                }
                let state = job.state();
                if is_final(state) {
                    let updated = job.updated.map_or(0, |t| t.seconds * 1000);
                    if updated < horizon {
                        self.save_delete(&job.id, entry.version).await?;
                        if !first {
                            self.count(Some(state), None);
                        }
                        continue;
                    }
                    counts[state as usize] += 1;
                    continue;
                }
                if !first || !self.runs_here(&job.id) {
                    continue; // with several replicas, the job's own replica recovers it
                }
                if state == JobState::Uploading {
                    job.state = JobState::Failed as i32;
                    job.error = "session-svc restarted during the upload; nothing was imported: \
                                 upload again"
                        .into();
                    job.updated = Some(timestamp(now_ms()));
                    record.job = Some(job.clone());
                    let chunks = record.chunks;
                    let mut version = entry.version;
                    self.save_and_trim(&mut record, &mut version, chunks)
                        .await?;
                    counts[JobState::Failed as usize] += 1;
                    continue;
                }
                if state == JobState::Running {
                    job.resumes += 1;
                }
                counts[state as usize] += 1;
                tracing::info!(job = %job.id, state = ?state, next_index = record.next_index, "resuming job");
                let live = Live::new(job.clone());
                self.inner
                    .live
                    .lock()
                    .expect("live jobs")
                    .insert(job.id.clone(), live.clone());
                self.supervise(job.id.clone(), live);
            }
            token = next;
            if token.is_empty() {
                break;
            }
        }
        if first {
            let mut c = self.inner.counts.lock().expect("job counts");
            for (total, found) in c.iter_mut().zip(counts) {
                *total += found;
            }
        }
        Ok(())
    }

    /// Deletes a finished job's record.
    async fn save_delete(&self, id: &str, version: u64) -> Result<(), Error> {
        self.inner
            .store
            .commit(
                vec![mutation(JOBS_NAMESPACE, id, None, version)],
                Deadline::after(CALL_BUDGET),
            )
            .await
            .map(drop)
    }

    /// Waits (at most `grace`) for the jobs' tasks to write their last checkpoint after the
    /// drain began.
    pub async fn stopped(&self, grace: Duration) {
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("job tasks"));
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "jobs still stopping after the grace period; they resume at the next start"
            );
        }
    }
}

/// Resolves once `flag` is true; never if its sender is gone.
pub async fn until(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// NOT_FOUND for job `id`.
fn not_found(id: &str) -> Error {
    Error::NotFound(
        reason::JOB_NOT_FOUND,
        format!(
            "no job {id} (finished jobs are kept for --job-retention; ListJobs shows the others)"
        ),
    )
}

/// A state as a word for messages.
fn state_word(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unknown",
        JobState::Uploading => "uploading",
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// The text of a panic payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_canonical_ones() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn ids_sort_by_creation_and_validate() {
        let a = new_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_id();
        assert!(a < b, "{a} < {b}");
        validate_id(&a).unwrap();
        assert!(validate_id("").is_err());
        assert!(validate_id("../etc").is_err());
        assert!(validate_id(&"a".repeat(65)).is_err());
    }
}
