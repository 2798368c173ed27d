//! The import job: its upload, and the task that sends its entries to the list actors.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use kit::deadline::Deadline;
use prost::Message as _;
use proto::session::v1::{self as pb, ImportChunk, ImportEntriesRequest, JobRecord, JobState};
use tokio::time::Instant;

use super::{
    CALL_BUDGET, JOB_ENTRIES_NAMESPACE, Jobs, Live, MAX_FAILURES, chunk_key, code_name, is_final,
    now_ms,
};
use crate::{
    api,
    cart::convert::timestamp,
    domain::{
        Date,
        text::{self, MAX_TITLE_BYTES},
    },
    error::Error,
    runtime::{JOB_REQUEST_PREFIX, RequestId, store::mutation, validate_key},
    todo::entity::AddEntry,
};

/// Entries per chunk at most.
const CHUNK_ENTRIES: usize = 1_000;
/// Encoded bytes per chunk at most (an entry is at most ~1.3 KB).
const CHUNK_BYTES: usize = 256 * 1024;
/// How often a running job checkpoints, at most.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often a running job publishes its progress, at most.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Longest wait between two tries of one entry.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where an upload is; dropped unfinished (the client went away, or the server cut the call),
/// it fails the job in a task of its own.
struct Upload {
    jobs: Jobs,
    record: JobRecord,
    version: u64,
    live: Arc<Live>,
    done: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (jobs, mut record, version, live) = (
            self.jobs.clone(),
            self.record.clone(),
            self.version,
            self.live.clone(),
        );
        tokio::spawn(async move {
            let why = "the upload was interrupted (the client went away); nothing was imported";
            fail_upload(&jobs, &mut record, version, &live, why).await;
        });
    }
}

/// Marks an upload FAILED and deletes what it stored.
async fn fail_upload(jobs: &Jobs, record: &mut JobRecord, version: u64, live: &Live, why: &str) {
    let job = record.job.get_or_insert_default();
    job.state = JobState::Failed as i32;
    job.error = why.to_string();
    job.updated = Some(timestamp(now_ms()));
    let id = job.id.clone();
    live.publish(|j| {
        j.state = JobState::Failed as i32;
        j.error = why.to_string();
    });
    jobs.count(Some(JobState::Uploading), Some(JobState::Failed));
    jobs.inner.live.lock().expect("live jobs").remove(&id);
    // Left behind on a store failure: the next start's recovery finishes it.
    let (chunks, mut version) = (record.chunks, version);
    if let Err(error) = jobs.save_and_trim(record, &mut version, chunks).await {
        tracing::warn!(job = %id, %error, "could not record a failed upload");
    }
}

/// Checks what the entry's list actor would refuse anyway, so a bad entry fails at once.
fn check(entry: &ImportEntriesRequest) -> Result<(), Error> {
    validate_key("list", &entry.list)?;
    Date::parse(&entry.date).map_err(|e| Error::invalid("date", e.to_string()))?;
    text::required("title", &entry.title, MAX_TITLE_BYTES)
        .map_err(|e| Error::invalid(e.field(), e.to_string()))
}

/// A failure of the entry at `line`.
fn failure(line: u64, error: Error) -> pb::EntryFailure {
    let status = tonic::Status::from(error);
    pb::EntryFailure {
        line,
        code: code_name(status.code()),
        message: status.message().to_string(),
    }
}

/// Adds `failure` to `job`, keeping the [`MAX_FAILURES`] lowest lines.
fn add_failure(job: &mut pb::Job, failure: pb::EntryFailure) {
    job.failed += 1;
    job.processed += 1;
    if job.failures.len() >= MAX_FAILURES
        && job.failures.last().is_some_and(|f| f.line <= failure.line)
    {
        return;
    }
    let at = job.failures.partition_point(|f| f.line <= failure.line);
    job.failures.insert(at, failure);
    job.failures.truncate(MAX_FAILURES);
}

impl Jobs {
    /// Stores the entries of `stream` as a new job and queues it; the job once uploaded.
    /// `deadline`: the client's, if it sent one; otherwise the upload may take as long as it
    /// needs, but fails after `--job-upload-idle` without a message.
    pub async fn upload<S>(
        &self,
        mut stream: S,
        deadline: Option<Deadline>,
    ) -> Result<pb::Job, Error>
    where
        S: futures_util::Stream<Item = Result<ImportEntriesRequest, tonic::Status>> + Unpin,
    {
        let settings = self.inner.settings.clone();
        let id = {
            let live = self.inner.live.lock().expect("live jobs");
            if live.len() >= settings.max_unfinished {
                return Err(Error::Busy {
                    what: format!(
                        "{} jobs are unfinished, the most --max-jobs allows; wait for one to end",
                        live.len()
                    ),
                    retry_after: Duration::from_secs(5),
                });
            }
            self.placed_id()
        };
        let now = timestamp(now_ms());
        let job = pb::Job {
            id: id.clone(),
            state: JobState::Uploading as i32,
            created: Some(now),
            updated: Some(now),
            ..Default::default()
        };
        let mut record = JobRecord {
            job: Some(job.clone()),
            ..Default::default()
        };
        // In memory before it is stored, so that recovery never takes it for an upload a
        // previous run left behind.
        let live = Live::new(job);
        self.inner
            .live
            .lock()
            .expect("live jobs")
            .insert(id.clone(), live.clone());
        let version = match self.save(&record, 0, Vec::new()).await {
            Ok(version) => version,
            Err(error) => {
                self.inner.live.lock().expect("live jobs").remove(&id);
                return Err(error);
            }
        };
        self.count(None, Some(JobState::Uploading));
        let mut upload = Upload {
            jobs: self.clone(),
            record,
            version,
            live: live.clone(),
            done: false,
        };
        match self.receive(&mut upload, &mut stream, deadline).await {
            Ok(()) => {}
            Err(error) => {
                upload.done = true;
                let why = format!(
                    "the upload failed ({}); nothing was imported",
                    tonic::Status::from(error.clone()).message()
                );
                let version = upload.version;
                fail_upload(self, &mut upload.record, version, &live, &why).await;
                return Err(error);
            }
        }
        upload.done = true;
        record = upload.record.clone();
        let job = record.job.get_or_insert_default();
        let state = if job.processed == job.total {
            JobState::Succeeded // nothing to send: every entry failed its checks, or none came
        } else {
            JobState::Pending
        };
        job.state = state as i32;
        job.updated = Some(timestamp(now_ms()));
        let job = job.clone();
        if let Err(error) = self.save(&record, upload.version, Vec::new()).await {
            let why = "its upload could not be recorded as complete; nothing was imported";
            fail_upload(self, &mut record, upload.version, &live, why).await;
            return Err(error);
        }
        self.count(Some(JobState::Uploading), Some(state));
        live.progress.send_replace(job.clone());
        if is_final(state) {
            self.inner.live.lock().expect("live jobs").remove(&id);
        } else {
            self.supervise(id, live);
        }
        Ok(job)
    }

    /// Reads the stream into chunks, each stored before more is read.
    async fn receive<S>(
        &self,
        upload: &mut Upload,
        stream: &mut S,
        deadline: Option<Deadline>,
    ) -> Result<(), Error>
    where
        S: futures_util::Stream<Item = Result<ImportEntriesRequest, tonic::Status>> + Unpin,
    {
        let settings = &self.inner.settings;
        let id = upload.live.snapshot().id;
        let mut chunk = ImportChunk::default();
        let mut chunk_bytes = 0;
        let mut received: u64 = 0;
        let mut staged: u64 = 0;
        loop {
            let idle = Instant::now() + settings.upload_idle;
            let until = deadline.map_or(idle, |d| d.instant().min(idle));
            let next = match tokio::time::timeout_at(until, stream.next()).await {
                Ok(next) => next,
                Err(_) if deadline.is_some_and(|d| d.instant() <= idle) => {
                    return Err(Error::DeadlineExceeded(format!(
                        "the upload did not end by the call's deadline ({received} entries came); \
                         nothing was imported"
                    )));
                }
                Err(_) => {
                    return Err(Error::invalid(
                        "entries",
                        format!(
                            "no entry came for {:?} after {received} entries; the upload was \
                             abandoned and nothing was imported",
                            settings.upload_idle
                        ),
                    ));
                }
            };
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|status| match status.code() {
                // The codec's answer for a message that does not decode: the client's error.
                tonic::Code::InvalidArgument => Error::invalid(
                    "entries",
                    format!(
                        "entry {} of the upload: {}; nothing was imported",
                        received + 1,
                        status.message()
                    ),
                ),
                _ => Error::Cancelled(status.message().to_string()),
            })?;
            received += 1;
            if received > settings.max_entries {
                return Err(Error::invalid(
                    "entries",
                    format!(
                        "more than {} entries in one import (--max-import-entries); split the \
                         file",
                        settings.max_entries
                    ),
                ));
            }
            if entry.line == 0 {
                entry.line = received;
            }
            let job = upload.record.job.get_or_insert_default();
            job.total = received;
            if let Err(error) = check(&entry) {
                add_failure(job, failure(entry.line, error));
                continue;
            }
            if chunk.entries.is_empty() {
                chunk.first_index = staged;
            }
            chunk_bytes += entry.encoded_len() + 4;
            chunk.entries.push(entry);
            staged += 1;
            if chunk.entries.len() >= CHUNK_ENTRIES || chunk_bytes >= CHUNK_BYTES {
                self.store_chunk(upload, &id, &mut chunk).await?;
                chunk_bytes = 0;
            }
            if received.is_multiple_of(1000) {
                let job = upload.record.job.clone().unwrap_or_default();
                upload.live.publish(|j| {
                    j.total = job.total;
                    j.failed = job.failed;
                    j.processed = job.processed;
                });
            }
        }
        if !chunk.entries.is_empty() {
            self.store_chunk(upload, &id, &mut chunk).await?;
        }
        let job = upload.record.job.get_or_insert_default();
        job.total = received;
        Ok(())
    }

    /// Stores `chunk` as the upload's next, and empties it.
    async fn store_chunk(
        &self,
        upload: &mut Upload,
        id: &str,
        chunk: &mut ImportChunk,
    ) -> Result<(), Error> {
        let n = upload.record.chunks;
        upload.record.chunks += 1;
        // The record counts the chunk in the same commit, so a failed upload's clean-up
        // knows every chunk to delete.
        let put = mutation(
            JOB_ENTRIES_NAMESPACE,
            chunk_key(id, n),
            Some(chunk.encode_to_vec()),
            0,
        );
        upload.version = self.save(&upload.record, upload.version, vec![put]).await?;
        chunk.entries.clear();
        Ok(())
    }
}

/// Ends a job that never ran (cancelled while pending, or crashed too often) with `state`.
pub async fn finish_unstarted(jobs: &Jobs, id: &str, live: &Live, state: JobState, why: &str) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match finish_record(jobs, id, state, why).await {
            Ok(from) => {
                jobs.count(Some(from), Some(state));
                break;
            }
            Err(error) => {
                tracing::warn!(job = %id, %error, "could not end the job; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    live.publish(|job| {
        job.state = state as i32;
        job.error = why.to_string();
    });
    jobs.inner.live.lock().expect("live jobs").remove(id);
}

/// Writes `state` into job `id`'s stored record and deletes its chunks; the state it had.
async fn finish_record(
    jobs: &Jobs,
    id: &str,
    state: JobState,
    why: &str,
) -> Result<JobState, Error> {
    let Some((mut record, version)) = jobs.load(id, Deadline::after(CALL_BUDGET)).await? else {
        return Ok(state);
    };
    let job = record.job.get_or_insert_default();
    let from = job.state();
    job.state = state as i32;
    job.error = why.to_string();
    job.updated = Some(timestamp(now_ms()));
    let (chunks, mut version) = (record.chunks, version);
    jobs.save_and_trim(&mut record, &mut version, chunks)
        .await?;
    Ok(from)
}

/// What became of one entry.
enum Outcome {
    /// In its list.
    Imported,
    /// Refused.
    Failed(pb::EntryFailure),
    /// Not finished: the job is stopping (cancel or drain). It may have been applied; a
    /// resume sends it again with its request id.
    Stopped,
}

/// An entry waiting to be sent.
struct Pending {
    index: u64,
    entry: ImportEntriesRequest,
}

/// The entries of a job from its stored chunks, from `next_index` on.
struct Source {
    id: String,
    next_chunk: u64,
    chunks: u64,
    buffered: VecDeque<Pending>,
    /// Chunks read, with the index just past their last entry.
    ends: VecDeque<(u64, u64)>,
}

impl Source {
    /// The number of leading chunks whose entries are all before `next_index`.
    fn done_below(&self, next_index: u64) -> Option<u64> {
        self.ends
            .iter()
            .take_while(|(_, end)| *end <= next_index)
            .last()
            .map(|(n, _)| n + 1)
    }
}

impl Source {
    async fn next(&mut self, jobs: &Jobs, from: u64) -> Result<Option<Pending>, Error> {
        loop {
            if let Some(p) = self.buffered.pop_front() {
                if p.index >= from {
                    return Ok(Some(p));
                }
                continue;
            }
            if self.next_chunk >= self.chunks {
                return Ok(None);
            }
            let key = chunk_key(&self.id, self.next_chunk);
            self.next_chunk += 1;
            let stored = jobs
                .inner
                .store
                .get(JOB_ENTRIES_NAMESPACE, &key, Deadline::after(CALL_BUDGET))
                .await?;
            // A chunk wholly before the checkpoint may already be deleted.
            let Some(stored) = stored else { continue };
            let chunk = ImportChunk::decode(stored.value.as_slice())
                .map_err(|e| Error::Corrupt(format!("job chunk {key}: {e}")))?;
            let end = chunk.first_index + chunk.entries.len() as u64;
            self.ends.push_back((self.next_chunk - 1, end));
            while self.ends.len() > 64 {
                self.ends.pop_front();
            }
            self.buffered.extend(
                chunk
                    .entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, entry)| Pending {
                        index: chunk.first_index + i as u64,
                        entry,
                    }),
            );
        }
    }
}

/// Sends one entry to its list until it is imported, refused, or the job stops.
async fn send(
    jobs: Jobs,
    id: Arc<str>,
    pending: Pending,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> (u64, Outcome) {
    let Pending { index, entry } = pending;
    // Fingerprinted like a client's AddEntry, so a resumed job's resend is a retry.
    let fingerprint = api::fingerprint(
        &pb::AddEntryRequest {
            list: entry.list.clone(),
            date: entry.date.clone(),
            title: entry.title.clone(),
            request_id: String::new(),
        }
        .encode_to_vec(),
    );
    let command = match Date::parse(&entry.date) {
        Ok(date) => AddEntry {
            date,
            title: entry.title.clone(),
            request_id: Some(RequestId {
                id: format!("{JOB_REQUEST_PREFIX}{id}/{index}"),
                fingerprint,
            }),
        },
        Err(e) => {
            let error = Error::invalid("date", e.to_string());
            return (index, Outcome::Failed(failure(entry.line, error)));
        }
    };
    let mut backoff = Duration::from_millis(20);
    loop {
        if *cancel.borrow() {
            return (index, Outcome::Stopped);
        }
        let called = jobs
            .inner
            .lists
            .call(&entry.list, command.clone(), Deadline::after(CALL_BUDGET))
            .await;
        let wait = match called {
            Ok(_) => return (index, Outcome::Imported),
            Err(Error::ShuttingDown) => return (index, Outcome::Stopped),
            // Backpressure and outages slow the job down; they fail no entry.
            Err(Error::MailboxFull { retry_after, .. } | Error::ActorLimit { retry_after, .. }) => {
                retry_after.min(MAX_BACKOFF)
            }
            Err(
                Error::DeadlineExceeded(_)
                | Error::StoreUnavailable(_)
                | Error::Aborted(_)
                | Error::Quarantined { .. },
            ) => backoff,
            Err(error) => return (index, Outcome::Failed(failure(entry.line, error))),
        };
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = super::until(&mut cancel) => return (index, Outcome::Stopped),
        }
    }
}

/// The state of a running import between checkpoints.
struct Run {
    record: JobRecord,
    version: u64,
    /// Outcomes of the entries from `record.next_index` on, in index order (`None`: not yet).
    window: VecDeque<Option<Outcome>>,
    /// Entries sent since the last checkpoint, per list, with their indices.
    ahead: HashMap<String, usize>,
    ahead_order: VecDeque<(u64, String)>,
    /// `next_index` as last stored.
    saved_index: u64,
}

impl Run {
    fn job(&mut self) -> &mut pb::Job {
        self.record.job.get_or_insert_default()
    }

    /// Folds the finished outcomes at the front of the window into the counts.
    fn advance(&mut self) {
        // A stopped entry was not tried: the place stays before it.
        while let Some(Some(Outcome::Imported | Outcome::Failed(_))) = self.window.front() {
            let Some(Some(outcome)) = self.window.pop_front() else {
                break;
            };
            self.fold(outcome);
            self.record.next_index += 1;
        }
    }

    fn fold(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Imported => {
                let job = self.job();
                job.imported += 1;
                job.processed += 1;
            }
            Outcome::Failed(f) => add_failure(self.job(), f),
            Outcome::Stopped => {}
        }
    }
}

/// Runs job `id` from its stored checkpoint until it ends, is cancelled, or the server drains.
pub async fn run(jobs: Jobs, id: String, live: Arc<Live>) {
    let mut cancel = live.cancel.subscribe();
    let mut draining = jobs.inner.lists.draining();
    // Load the checkpoint, riding out a store outage.
    let mut backoff = Duration::from_millis(100);
    let (record, version) = loop {
        match jobs.load(&id, Deadline::after(CALL_BUDGET)).await {
            Ok(Some(found)) => break found,
            Ok(None) => {
                tracing::warn!(job = %id, "job record vanished; the job ends");
                jobs.inner.live.lock().expect("live jobs").remove(&id);
                return;
            }
            Err(error) => tracing::warn!(job = %id, %error, "could not load the job; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = super::until(&mut draining) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    let mut run = Run {
        record,
        version,
        window: VecDeque::new(),
        ahead: HashMap::new(),
        ahead_order: VecDeque::new(),
        saved_index: 0,
    };
    run.saved_index = run.record.next_index;
    if run.job().resumes < live.snapshot().resumes {
        let resumes = live.snapshot().resumes;
        run.job().resumes = resumes;
    }
    if run.job().state() == JobState::Pending {
        let from = JobState::Pending;
        run.job().state = JobState::Running as i32;
        match jobs.save(&run.record, run.version, Vec::new()).await {
            Ok(v) => {
                run.version = v;
                jobs.count(Some(from), Some(JobState::Running));
            }
            Err(error) => {
                tracing::warn!(job = %id, %error, "could not start the job; it resumes at the next start");
                return;
            }
        }
    }
    let snapshot = run.job().clone();
    live.progress.send_replace(snapshot);

    let settings = jobs.inner.settings.clone();
    let shared_id: Arc<str> = Arc::from(id.as_str());
    let mut source = Source {
        id: id.clone(),
        next_chunk: run.record.deleted_chunks,
        chunks: run.record.chunks,
        buffered: VecDeque::new(),
        ends: VecDeque::new(),
    };
    let mut in_flight = FuturesUnordered::new();
    let mut dispatched = run.record.next_index;
    let mut exhausted = false;
    let mut stopping = false;
    let mut must_checkpoint = false;
    let mut held: Option<Pending> = None;
    let mut last_checkpoint = Instant::now();
    let mut last_publish = Instant::now();
    let pace = settings
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
    let mut next_send = Instant::now();

    loop {
        // Send while there is room, the lists' idempotency memory allows, and the pace.
        while !stopping && !exhausted && !must_checkpoint && in_flight.len() < settings.in_flight {
            if *cancel.borrow() || *draining.borrow() {
                stopping = true;
                break;
            }
            if pace.is_some() && Instant::now() < next_send {
                break;
            }
            let next = match held.take() {
                Some(p) => p,
                None => match source.next(&jobs, dispatched).await {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        exhausted = true;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(job = %id, %error, "could not read the job's entries; retrying");
                        break;
                    }
                },
            };
            let ahead = run.ahead.get(&next.entry.list).copied().unwrap_or(0);
            if ahead >= settings.ahead_per_list {
                held = Some(next);
                must_checkpoint = true;
                break;
            }
            *run.ahead.entry(next.entry.list.clone()).or_default() += 1;
            run.ahead_order
                .push_back((next.index, next.entry.list.clone()));
            dispatched = next.index + 1;
            run.window.push_back(None);
            in_flight.push(send(
                jobs.clone(),
                shared_id.clone(),
                next,
                live.cancel.subscribe(),
            ));
            if let Some(pace) = pace {
                next_send = next_send.max(Instant::now() - pace) + pace;
            }
        }
        if in_flight.is_empty() {
            if must_checkpoint {
                checkpoint(&jobs, &mut run, &source, &id).await;
                must_checkpoint = !run.ahead_order.is_empty();
                if must_checkpoint {
                    // The store refused the checkpoint: wait before trying again.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
            if exhausted || stopping {
                break;
            }
        }
        let wake = if pace.is_some() && !stopping {
            next_send.min(last_checkpoint + CHECKPOINT_EVERY)
        } else {
            last_checkpoint + CHECKPOINT_EVERY
        };
        let wake = if in_flight.is_empty() && !exhausted && !stopping {
            // Nothing in flight and nothing sent: a store read failed; wait a little.
            wake.min(Instant::now() + Duration::from_millis(200))
        } else {
            wake
        };
        tokio::select! {
            Some((index, outcome)) = in_flight.next() => {
                let slot = usize::try_from(index - run.record.next_index).unwrap_or(usize::MAX);
                if let Some(cell) = run.window.get_mut(slot) {
                    *cell = Some(outcome);
                }
                run.advance();
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = super::until(&mut cancel), if !stopping => stopping = true,
            _ = super::until(&mut draining), if !stopping => stopping = true,
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            let job = run.job().clone();
            live.progress.send_replace(job);
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            if run.saved_index != run.record.next_index {
                checkpoint(&jobs, &mut run, &source, &id).await;
            }
        }
    }

    let cancelled = *cancel.borrow();
    if cancelled {
        // Count what finished beyond a gap too: those entries are in their lists.
        let outcomes: Vec<_> = run.window.drain(..).flatten().collect();
        for outcome in outcomes {
            run.fold(outcome);
        }
        let (processed, total) = (run.job().processed, run.job().total);
        finish(
            &jobs,
            &mut run,
            &id,
            JobState::Cancelled,
            format!("cancelled after {processed} of {total} entries; what was imported stays"),
        )
        .await;
    } else if exhausted && run.window.is_empty() {
        finish(&jobs, &mut run, &id, JobState::Succeeded, String::new()).await;
    } else {
        // Draining: keep the place; the next start resumes here.
        checkpoint(&jobs, &mut run, &source, &id).await;
        return;
    }
    let job = run.job().clone();
    live.progress.send_replace(job);
}

/// Stores the job's progress, deleting the chunks every entry of which is before it; on
/// success, entries sent before the stored place are no longer "ahead".
async fn checkpoint(jobs: &Jobs, run: &mut Run, source: &Source, id: &str) {
    let next_index = run.record.next_index;
    run.job().updated = Some(timestamp(now_ms()));
    let trim_to = source
        .done_below(next_index)
        .unwrap_or(0)
        .max(run.record.deleted_chunks);
    match jobs
        .save_and_trim(&mut run.record, &mut run.version, trim_to)
        .await
    {
        Ok(()) => {
            run.saved_index = next_index;
            while run
                .ahead_order
                .front()
                .is_some_and(|(index, _)| *index < next_index)
            {
                if let Some((_, list)) = run.ahead_order.pop_front()
                    && let Some(n) = run.ahead.get_mut(&list)
                {
                    *n -= 1;
                    if *n == 0 {
                        run.ahead.remove(&list);
                    }
                }
            }
        }
        Err(error) => tracing::warn!(job = %id, %error, "job checkpoint failed; retrying"),
    }
}

/// Ends the job with `state`: record written, chunks deleted, counted.
async fn finish(jobs: &Jobs, run: &mut Run, id: &str, state: JobState, why: String) {
    let from = run.job().state();
    run.job().state = state as i32;
    run.job().error = why;
    run.job().updated = Some(timestamp(now_ms()));
    let mut backoff = Duration::from_millis(100);
    let chunks = run.record.chunks;
    loop {
        match jobs
            .save_and_trim(&mut run.record, &mut run.version, chunks)
            .await
        {
            Ok(()) => break,
            Err(Error::Aborted(message)) => {
                // Only a bug or a foreign writer moves the record under its runner.
                tracing::error!(job = %id, %message, "job record changed under its task; left as it is");
                break;
            }
            Err(error) => {
                tracing::warn!(job = %id, %error, "could not record the job's end; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    jobs.count(Some(from), Some(state));
}
