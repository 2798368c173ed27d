//! JobService end to end: imports through the list actors, bad entries failing alone with
//! their lines, cancel, resume after SIGKILL without duplicates, and the contract's errors.

use std::{collections::HashMap, time::Duration};

use proto::session::v1::{
    CancelJobRequest, GetJobRequest, ImportEntriesRequest, Job, JobState, ListJobsRequest,
    WatchJobRequest,
};
use tests::{
    session::{JobClient, SessionOptions, TodoClient, spawn_session_stack},
    session_client::{list_entries, poll_until, stats},
};
use tonic::Code;

/// `count` entries for `list`, titles `entry-<line>`, dated in 2025; the lines in `bad` get an
/// impossible date (`2025-02-30`) or a blank title, alternately.
fn entries(list: &str, count: u64, bad: &[u64]) -> Vec<ImportEntriesRequest> {
    (1..=count)
        .map(|line| {
            let mut entry = ImportEntriesRequest {
                list: list.into(),
                date: format!("2025-{:02}-{:02}", 1 + line % 12, 1 + line % 28),
                title: format!("entry-{line}"),
                line,
            };
            if let Some(i) = bad.iter().position(|b| *b == line) {
                if i % 2 == 0 {
                    entry.date = "2025-02-30".into();
                } else {
                    entry.title = "   ".into();
                }
            }
            entry
        })
        .collect()
}

async fn import(jobs: &mut JobClient, entries: Vec<ImportEntriesRequest>) -> Job {
    jobs.import_entries(tokio_stream::iter(entries))
        .await
        .expect("ImportEntries")
        .into_inner()
}

async fn get(jobs: &mut JobClient, id: &str) -> Job {
    jobs.get_job(GetJobRequest { id: id.into() })
        .await
        .expect("GetJob")
        .into_inner()
}

/// Waits for job `id` to reach a final state (at most `limit`).
async fn finished(jobs: &mut JobClient, id: &str, limit: Duration) -> Job {
    poll_until(limit, Duration::from_millis(100), || {
        let mut jobs = jobs.clone();
        async move {
            let job = get(&mut jobs, id).await;
            matches!(
                job.state(),
                JobState::Succeeded | JobState::Failed | JobState::Cancelled
            )
            .then_some(job)
        }
    })
    .await
    .unwrap_or_else(|| panic!("job {id} did not finish within {limit:?}"))
}

/// Titles in `list`, with how many times each appears.
async fn titles(todo: &mut TodoClient, list: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in list_entries(todo, list, "").await.expect("ListEntries") {
        *counts.entry(entry.title).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn an_import_fails_only_its_bad_entries_and_reports_their_lines() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let (mut jobs, mut todo) = (stack.session.jobs().await, stack.session.todo().await);
    let bad = [
        3, 150, 999, 1_000, 2_500, 4_001, 5_555, 7_000, 8_888, 10_000,
    ];
    let uploaded = import(&mut jobs, entries("chores", 10_000, &bad)).await;
    assert_eq!(uploaded.total, 10_000);
    assert!(
        matches!(
            uploaded.state(),
            JobState::Pending | JobState::Running | JobState::Succeeded
        ),
        "{uploaded:?}"
    );
    let job = finished(&mut jobs, &uploaded.id, Duration::from_secs(300)).await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    assert_eq!(
        (job.processed, job.imported, job.failed),
        (10_000, 9_990, 10)
    );
    let lines: Vec<u64> = job.failures.iter().map(|f| f.line).collect();
    assert_eq!(lines, bad, "failures, ordered by line");
    assert!(
        job.failures
            .iter()
            .all(|f| f.code == "INVALID_ARGUMENT" && !f.message.is_empty()),
        "{:?}",
        job.failures
    );
    assert!(
        job.failures[0].message.contains("date"),
        "{:?}",
        job.failures[0]
    );
    assert!(
        job.failures[1].message.contains("title"),
        "{:?}",
        job.failures[1]
    );

    let titles = titles(&mut todo, "chores").await;
    assert_eq!(titles.len(), 9_990);
    for line in (1..=10_000).filter(|l| !bad.contains(l)) {
        assert_eq!(
            titles.get(&format!("entry-{line}")),
            Some(&1),
            "line {line}"
        );
    }

    // GetStats counts it; ListJobs lists it, without its failures.
    let stats = stats(&mut stack.session.admin().await).await;
    assert_eq!(stats.jobs.expect("jobs in GetStats").succeeded, 1);
    let listed = jobs
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    assert_eq!(listed.jobs[0].id, job.id);
    assert!(listed.jobs[0].failures.is_empty());
}

#[tokio::test]
async fn watch_streams_progress_until_the_job_ends() {
    let stack = spawn_session_stack(SessionOptions::new().flag("--job-rate", 2_000)).await;
    let mut jobs = stack.session.jobs().await;
    let job = import(&mut jobs, entries("watched", 2_000, &[])).await;
    let mut stream = jobs
        .watch_job(WatchJobRequest { id: job.id.clone() })
        .await
        .expect("WatchJob")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(update) = stream.message().await.expect("a progress message") {
        seen.push(update);
    }
    let last = seen.last().expect("at least one message");
    assert_eq!(last.state(), JobState::Succeeded);
    assert_eq!(last.imported, 2_000);
    assert!(
        seen.len() >= 3,
        "progress came in steps: {} messages",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0].processed <= w[1].processed),
        "progress never goes back"
    );
    // A finished job's watch is its result, once.
    let mut again = jobs
        .watch_job(WatchJobRequest { id: job.id.clone() })
        .await
        .expect("WatchJob")
        .into_inner();
    assert_eq!(
        again.message().await.unwrap().unwrap().state(),
        JobState::Succeeded
    );
    assert!(again.message().await.unwrap().is_none());
}

#[tokio::test]
async fn a_cancelled_job_stops_and_keeps_what_it_imported() {
    let stack = spawn_session_stack(SessionOptions::new().flag("--job-rate", 500)).await;
    let (mut jobs, mut todo) = (stack.session.jobs().await, stack.session.todo().await);
    let job = import(&mut jobs, entries("halfway", 5_000, &[])).await;
    poll_until(Duration::from_secs(60), Duration::from_millis(50), || {
        let mut jobs = jobs.clone();
        let id = job.id.clone();
        async move { (get(&mut jobs, &id).await.processed >= 500).then_some(()) }
    })
    .await
    .expect("the job made progress");
    let cancelled = jobs
        .cancel_job(CancelJobRequest { id: job.id.clone() })
        .await
        .expect("CancelJob")
        .into_inner();
    assert_eq!(cancelled.state(), JobState::Cancelled, "{cancelled:?}");
    assert!(cancelled.imported < 5_000 && cancelled.imported >= 500);
    // What it imported stays, each entry once, and nothing more arrives.
    let titles = titles(&mut todo, "halfway").await;
    assert_eq!(titles.len() as u64, cancelled.imported);
    assert!(titles.values().all(|n| *n == 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        list_entries(&mut todo, "halfway", "").await.unwrap().len() as u64,
        cancelled.imported
    );
    // A finished job cannot be cancelled again.
    let again = jobs
        .cancel_job(CancelJobRequest { id: job.id.clone() })
        .await
        .expect_err("cancel of a cancelled job");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("cancelled"), "{again:?}");
}

#[tokio::test]
async fn a_job_resumes_after_sigkill_without_importing_an_entry_twice() {
    let mut stack = spawn_session_stack(SessionOptions::new().flag("--job-rate", 1_000)).await;
    let (mut jobs, _) = (stack.session.jobs().await, ());
    // Two lists, so the resume must pick up both where they were.
    let mut all = entries("home", 3_000, &[]);
    all.extend(entries("work", 3_000, &[]).into_iter().map(|mut e| {
        e.line += 3_000;
        e.title = format!("entry-{}", e.line);
        e
    }));
    let job = import(&mut jobs, all).await;
    poll_until(Duration::from_secs(60), Duration::from_millis(50), || {
        let mut jobs = jobs.clone();
        let id = job.id.clone();
        async move { (get(&mut jobs, &id).await.processed >= 1_500).then_some(()) }
    })
    .await
    .expect("the job made progress");
    stack.session.kill().await.expect("SIGKILL session-svc");
    stack.session = stack.session.respawn().await;

    let mut jobs = stack.session.jobs().await;
    let done = finished(&mut jobs, &job.id, Duration::from_secs(300)).await;
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    assert_eq!((done.imported, done.failed), (6_000, 0));
    assert!(done.resumes >= 1, "the record says it resumed: {done:?}");
    let mut todo = stack.session.todo().await;
    let mut seen = titles(&mut todo, "home").await;
    seen.extend(titles(&mut todo, "work").await);
    assert_eq!(seen.len(), 6_000);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "imported twice: {twice:?}");
}

#[tokio::test]
async fn bad_requests_get_precise_statuses() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut jobs = stack.session.jobs().await;
    let unknown = jobs
        .get_job(GetJobRequest {
            id: "0123456789ab-cdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let malformed = jobs
        .get_job(GetJobRequest { id: "../x".into() })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    let token = jobs
        .list_jobs(ListJobsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(token.code(), Code::InvalidArgument, "{token:?}");
    let size = jobs
        .list_jobs(ListJobsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(size.code(), Code::InvalidArgument, "{size:?}");

    // An empty upload is a finished job with nothing in it.
    let empty = import(&mut jobs, Vec::new()).await;
    assert_eq!((empty.state(), empty.total), (JobState::Succeeded, 0));

    // An upload past --max-import-entries fails as a whole, and imports nothing.
    let stack = spawn_session_stack(SessionOptions::new().flag("--max-import-entries", 100)).await;
    let mut jobs = stack.session.jobs().await;
    let over = jobs
        .import_entries(tokio_stream::iter(entries("big", 101, &[])))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument, "{over:?}");
    assert!(over.message().contains("--max-import-entries"), "{over:?}");
    let failed = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let mut jobs = jobs.clone();
        async move {
            let page = jobs
                .list_jobs(ListJobsRequest::default())
                .await
                .ok()?
                .into_inner();
            page.jobs
                .into_iter()
                .find(|j| j.state() == JobState::Failed)
        }
    })
    .await
    .expect("the refused upload is a FAILED job");
    assert!(failed.error.contains("nothing was imported"), "{failed:?}");
    let mut todo = stack.session.todo().await;
    let none = list_entries(&mut todo, "big", "").await.unwrap_err();
    assert_eq!(
        none.code(),
        Code::NotFound,
        "no entry made the list: {none:?}"
    );
}

#[tokio::test]
async fn a_drained_job_keeps_its_place_and_resumes_at_the_next_start() {
    let mut stack = spawn_session_stack(SessionOptions::new().flag("--job-rate", 1_000)).await;
    let mut jobs = stack.session.jobs().await;
    let job = import(&mut jobs, entries("drained", 4_000, &[])).await;
    poll_until(Duration::from_secs(60), Duration::from_millis(50), || {
        let mut jobs = jobs.clone();
        let id = job.id.clone();
        async move { (get(&mut jobs, &id).await.processed >= 1_000).then_some(()) }
    })
    .await
    .expect("the job made progress");
    let mut watch = jobs
        .watch_job(WatchJobRequest { id: job.id.clone() })
        .await
        .expect("WatchJob")
        .into_inner();
    stack.session.terminate().await.expect("SIGTERM");
    let exit = tokio::time::timeout(Duration::from_secs(30), stack.session.wait())
        .await
        .expect("session-svc exits after SIGTERM")
        .expect("wait");
    assert_eq!(
        exit.code(),
        Some(0),
        "a running job does not stop the drain"
    );
    // The watcher was told to come back, not left hanging.
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    if let Some(status) = ended {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }

    stack.session = stack.session.respawn().await;
    let mut jobs = stack.session.jobs().await;
    let stopped = get(&mut jobs, &job.id).await;
    assert!(
        stopped.processed >= 1_000,
        "it resumes from where it stopped, not from the start: {stopped:?}"
    );
    let done = finished(&mut jobs, &job.id, Duration::from_secs(300)).await;
    assert_eq!((done.state(), done.imported), (JobState::Succeeded, 4_000));
    let mut todo = stack.session.todo().await;
    let seen = titles(&mut todo, "drained").await;
    assert_eq!(seen.len(), 4_000);
    assert!(seen.values().all(|n| *n == 1), "nothing imported twice");
}
