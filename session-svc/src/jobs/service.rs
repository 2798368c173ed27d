//! `session.v1.JobService`: the gRPC face of the job supervisor.

use std::time::Duration;

use kit::deadline::Deadline;
use proto::session::v1::{self as pb, JobState, job_service_server::JobService};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{Jobs, is_final};
use crate::error::{self, Error, reason};

/// Longest a WatchJob stream lasts; the client then watches again.
const WATCH_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// WatchJob streams open at once, over all jobs.
const MAX_WATCHERS: usize = 1_024;
/// Progress messages a watcher may lag behind before the oldest are skipped (each message is
/// the whole job, so only the latest matters).
const WATCH_BUFFER: usize = 4;
/// Least time between two progress messages of one stream.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// The JobService.
#[derive(Clone)]
pub struct JobApi {
    jobs: Jobs,
    default_deadline: Duration,
    watchers: std::sync::Arc<Semaphore>,
    draining: tokio::sync::watch::Receiver<bool>,
}

impl JobApi {
    /// A service over `jobs`; watch streams end when `draining` turns true.
    pub fn new(
        jobs: Jobs,
        default_deadline: Duration,
        draining: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            jobs,
            default_deadline,
            watchers: std::sync::Arc::new(Semaphore::new(MAX_WATCHERS)),
            draining,
        }
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn import_entries(
        &self,
        request: Request<Streaming<pb::ImportEntriesRequest>>,
    ) -> Result<Response<pb::Job>, Status> {
        // An upload takes as long as it takes: only a deadline the client set applies.
        let client_deadline = request.metadata().contains_key("grpc-timeout")
            || request
                .metadata()
                .contains_key(kit::deadline::ABSOLUTE_HEADER);
        let deadline = Deadline::accept(&request, self.default_deadline);
        let stream = request.into_inner();
        let job = self
            .jobs
            .upload(stream, client_deadline.then_some(deadline))
            .await?;
        tracing::info!(job = %job.id, total = job.total, failed = job.failed, "import uploaded");
        Ok(Response::new(job))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(job = %request.get_ref().id))]
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        Ok(Response::new(
            self.jobs.get(&request.get_ref().id, deadline).await?,
        ))
    }

    type WatchJobStream = ReceiverStream<Result<pb::Job, Status>>;

    #[tracing::instrument(level = "debug", skip_all, fields(job = %request.get_ref().id))]
    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let permit = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy {
                what: format!("{MAX_WATCHERS} WatchJob streams are open, the most allowed"),
                retry_after: Duration::from_secs(5),
            })?;
        let watched = self.jobs.watch(&request.get_ref().id, deadline).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let mut draining = self.draining.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut progress = match watched {
                Err(done) => {
                    let _ = tx.send(Ok(done)).await;
                    return;
                }
                Ok(progress) => progress,
            };
            let end = tokio::time::Instant::now() + WATCH_MAX_LIFETIME;
            loop {
                let job = progress.borrow_and_update().clone();
                let done = is_final(job.state());
                if tx.send(Ok(job)).await.is_err() || done {
                    return;
                }
                tokio::time::sleep(WATCH_EVERY).await;
                tokio::select! {
                    changed = progress.changed() => if changed.is_err() {
                        // The job left memory: its last state was published before.
                        let job = progress.borrow().clone();
                        if !is_final(job.state()) {
                            let _ = tx.send(Err(error::status(Code::Unavailable, reason::SHUTTING_DOWN,
                                "the job stopped on this server (it is shutting down); it resumes at the next start: watch again",
                            ))).await;
                        }
                        return;
                    },
                    _ = tx.closed() => return,
                    _ = super::until(&mut draining) => {
                        let _ = tx.send(Err(error::status(Code::Unavailable, reason::SHUTTING_DOWN,
                            "session-svc is shutting down; the job resumes at its next start: watch again",
                        ))).await;
                        return;
                    }
                    _ = tokio::time::sleep_until(end) => {
                        let _ = tx.send(Err(error::status(Code::Unavailable, reason::WATCH_EXPIRED,
                            "watch stream reached its longest lifetime; watch again",
                        ))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(job = %request.get_ref().id))]
    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        Ok(Response::new(
            self.jobs.cancel(&request.get_ref().id, deadline).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let r = request.get_ref();
        let state = match JobState::try_from(r.state) {
            Ok(JobState::Unspecified) => None,
            Ok(state) => Some(state),
            Err(_) => {
                return Err(Error::invalid(
                    "state",
                    format!(
                        "{} is not a JobState; use 0 for all, 1..=6 for one",
                        r.state
                    ),
                )
                .into());
            }
        };
        let page_size = match r.page_size {
            0 => 100,
            n if n < 0 => {
                return Err(Error::invalid(
                    "page_size",
                    format!("is {n}; use 0 for the default (100) or a positive count"),
                )
                .into());
            }
            n => (n as usize).min(1_000),
        };
        let (jobs, next_page_token) = self
            .jobs
            .list(state, page_size, r.page_token.clone(), deadline)
            .await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }
}
