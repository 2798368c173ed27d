//! `import`, `jobs` and `job`: uploading a CSV file of to-do entries as a job
//! (JobService.ImportEntries), following a job to its end with a progress bar, and Ctrl-C's
//! offer to cancel it.

use std::{
    io::{BufRead, IsTerminal},
    path::{Path, PathBuf},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::session::v1::{
    CancelJobRequest, GetJobRequest, ImportEntriesRequest, Job, JobState, ListJobsRequest,
    WatchJobRequest,
};
use tokio::{
    signal::unix::Signal,
    sync::{mpsc, oneshot},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};

use crate::{
    cli::{Global, ImportArgs, JobAction, JobArgs, StateFilter},
    client::{Conn, Failure, Outcome, ctrl_c, emit},
    commands::{PAGE_SIZE, all_pages, emit_json},
    format::{fields, is_final, job_state_cell, render, table, timestamp_cell},
    json,
};

/// Entries read ahead of the upload.
const UPLOAD_BUFFER: usize = 256;

/// Watch streams that may break in a row (UNAVAILABLE: a restart, the stream's maximum
/// lifetime) before following a job gives up.
const WATCH_RETRIES: u32 = 5;

/// `jobs [--state S]`.
pub async fn list(conn: &Conn, state: Option<StateFilter>, as_json: bool) -> Outcome {
    let client = conn.jobs();
    let state = state.map_or(JobState::Unspecified, StateFilter::wire) as i32;
    let jobs = all_pages(|page_token| {
        let mut client = client.clone();
        let request = conn.unary(ListJobsRequest {
            state,
            page_size: conn.page_size(PAGE_SIZE),
            page_token,
        });
        async move {
            let page = client.list_jobs(request).await?.into_inner();
            Ok((page.jobs, page.next_page_token))
        }
    })
    .await?;
    if as_json {
        return emit_json(&jobs.iter().map(json::job).collect());
    }
    let mut rows = table([
        "ID",
        "STATE",
        "TOTAL",
        "PROCESSED",
        "IMPORTED",
        "FAILED",
        "CREATED",
        "UPDATED",
        "ERROR",
    ]);
    for j in &jobs {
        rows.add_row(vec![
            j.id.clone(),
            job_state_cell(j.state),
            j.total.to_string(),
            j.processed.to_string(),
            j.imported.to_string(),
            j.failed.to_string(),
            timestamp_cell(j.created.as_ref()),
            timestamp_cell(j.updated.as_ref()),
            j.error.clone(),
        ]);
    }
    emit(&render(&rows))
}

/// `job ID`, `job watch ID`, `job cancel ID`.
pub async fn job(conn: &Conn, args: JobArgs, as_json: bool) -> Outcome {
    match (args.action, args.id) {
        (Some(JobAction::Watch { id }), _) => {
            let job = follow(conn, &id, as_json, &mut ctrl_c()?).await?;
            show(&job, as_json)?;
            outcome(&job)
        }
        (Some(JobAction::Cancel { id }), _) => {
            let job = conn
                .jobs()
                .cancel_job(conn.unary(CancelJobRequest { id }))
                .await?
                .into_inner();
            show(&job, as_json)
        }
        (None, Some(id)) => {
            let job = conn
                .jobs()
                .get_job(conn.unary(GetJobRequest { id }))
                .await?
                .into_inner();
            show(&job, as_json)
        }
        (None, None) => Err(Failure::Usage(
            "name a job: `sessionctl job ID`, `job watch ID` or `job cancel ID`".to_owned(),
        )),
    }
}

/// A job: its fields, then its failures.
fn show(job: &Job, as_json: bool) -> Outcome {
    if as_json {
        return emit_json(&json::job(job));
    }
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let mut text = render(&fields(vec![
        ("id", job.id.clone()),
        ("state", job_state_cell(job.state)),
        ("total", job.total.to_string()),
        ("processed", job.processed.to_string()),
        ("imported", job.imported.to_string()),
        ("failed", job.failed.to_string()),
        ("error", or_dash(&job.error)),
        ("created", timestamp_cell(job.created.as_ref())),
        ("updated", timestamp_cell(job.updated.as_ref())),
        ("resumes", job.resumes.to_string()),
    ]));
    if !job.failures.is_empty() {
        let shown = job.failures.len() as u64;
        text.push_str(&if shown < job.failed {
            format!("\nfailures (the first {shown} of {}):\n", job.failed)
        } else {
            "\nfailures:\n".to_owned()
        });
        let mut failures = table(["LINE", "CODE", "MESSAGE"]);
        for f in &job.failures {
            failures.add_row(vec![f.line.to_string(), f.code.clone(), f.message.clone()]);
        }
        text.push_str(&render(&failures));
    }
    emit(&text)
}

/// The exit status a finished job gives `import` and `job watch`.
fn outcome(job: &Job) -> Outcome {
    match JobState::try_from(job.state) {
        Ok(JobState::Succeeded) => Ok(()),
        Ok(JobState::Cancelled) => Err(Failure::Other(format!("job {} was cancelled", job.id))),
        _ if job.error.is_empty() => Err(Failure::Other(format!(
            "job {} ended {}",
            job.id,
            job_state_cell(job.state)
        ))),
        _ => Err(Failure::Other(format!(
            "job {} ended {}: {}",
            job.id,
            job_state_cell(job.state),
            job.error
        ))),
    }
}

/// `import FILE [--list L] [--no-wait]`.
pub async fn import(global: &Global, args: ImportArgs) -> Outcome {
    let as_json = global.json;
    let layout = Layout::new(args.list)?;
    // Read the whole file once first: a file that cannot be read, or is not UTF-8, stops here,
    // before any job exists.
    let rows = read_rows(&args.file, &layout, true, |_| true)?;
    if rows == 0 {
        return Err(Failure::Other(format!(
            "{} holds no entries to import",
            args.file.display()
        )));
    }
    let conn = Conn::open(global).await?;
    let bar = if as_json {
        ProgressBar::hidden()
    } else {
        progress_bar(rows, "uploading")
    };
    // Ctrl-C is heard from the start: during the upload it abandons the call, and the server
    // fails the unfinished upload without importing any of it.
    let mut interrupted = ctrl_c()?;
    let job = tokio::select! {
        job = upload(&conn, args.file, layout, bar.clone()) => job?,
        _ = interrupted.recv() => {
            bar.finish_and_clear();
            return Err(Failure::Other(
                "interrupted during the upload: the server fails the unfinished upload and \
                 imports none of it"
                    .to_owned(),
            ));
        }
    };
    bar.finish_and_clear();
    if args.no_wait {
        return if as_json {
            emit_json(&json::job(&job))
        } else {
            emit(&format!("{}\n", job.id))
        };
    }
    eprintln!(
        "job {} uploaded ({} entries); following it, Ctrl-C to cancel",
        job.id, job.total
    );
    let job = follow(&conn, &job.id, as_json, &mut interrupted).await?;
    show(&job, as_json)?;
    outcome(&job)
}

/// The columns of the file, and the list every row goes to with `--list`.
#[derive(Clone, Debug)]
struct Layout {
    list: Option<String>,
}

impl Layout {
    fn new(list: Option<String>) -> Outcome<Self> {
        if list.as_deref() == Some("") {
            return Err(Failure::Usage("--list must not be empty".to_owned()));
        }
        Ok(Self { list })
    }

    fn columns(&self) -> &'static [&'static str] {
        if self.list.is_some() {
            &["date", "title"]
        } else {
            &["list", "date", "title"]
        }
    }

    /// The other layout's columns, to recognise a header that does not match `--list`.
    fn other_columns(&self) -> &'static [&'static str] {
        if self.list.is_some() {
            &["list", "date", "title"]
        } else {
            &["date", "title"]
        }
    }
}

/// Whether `record` is a header naming `columns` (in any case, around blanks).
fn is_header(record: &csv::StringRecord, columns: &[&str]) -> bool {
    record.len() == columns.len()
        && record.iter().zip(columns).all(|(field, column)| {
            field
                .trim_start_matches('\u{feff}')
                .trim()
                .eq_ignore_ascii_case(column)
        })
}

/// Reads `path` as the import's CSV and calls `send` with each entry (its `line` set) until it
/// answers false; answers the number of entries read. With `warn`, a row with more fields than
/// columns is named on stderr. A row with fewer is sent with the missing fields empty, for the
/// server to report with its line.
fn read_rows(
    path: &Path,
    layout: &Layout,
    warn: bool,
    mut send: impl FnMut(ImportEntriesRequest) -> bool,
) -> Outcome<u64> {
    let unreadable = |error: csv::Error| {
        let at = error
            .position()
            .map(|p| format!(" line {}", p.line()))
            .unwrap_or_default();
        Failure::Other(format!("cannot read {}{at}: {error}", path.display()))
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(unreadable)?;
    let mut lines = LineFinder::open(path)?;
    let columns = layout.columns();
    let mut record = csv::StringRecord::new();
    let mut first = true;
    let mut sent = 0;
    while reader.read_record(&mut record).map_err(unreadable)? {
        let line = match record.position() {
            Some(position) => lines.first_line(position)?,
            None => 0,
        };
        if std::mem::take(&mut first) {
            if is_header(&record, columns) {
                continue;
            }
            if is_header(&record, layout.other_columns()) {
                return Err(Failure::Usage(format!(
                    "{} has the header {}, but {} columns: {}",
                    path.display(),
                    layout.other_columns().join(","),
                    columns.join(","),
                    if layout.list.is_some() {
                        "leave out --list to take each row's list from the file"
                    } else {
                        "add --list LIST to put every row in one list"
                    }
                )));
            }
        }
        if warn && record.len() > columns.len() {
            eprintln!(
                "warning: {} line {line}: {} fields where {} ({}) are expected; the extra ones \
                 are ignored",
                path.display(),
                record.len(),
                columns.len(),
                columns.join(",")
            );
        }
        let field = |index: usize| record.get(index).unwrap_or_default().to_owned();
        let entry = match &layout.list {
            Some(list) => ImportEntriesRequest {
                list: list.clone(),
                date: field(0),
                title: field(1),
                line,
            },
            None => ImportEntriesRequest {
                list: field(0),
                date: field(1),
                title: field(2),
                line,
            },
        };
        sent += 1;
        if !send(entry) {
            break;
        }
    }
    Ok(sent)
}

/// Finds the line a CSV record starts on. The csv crate skips blank lines before a record but
/// reports the position where the skipping began, so the newlines there are counted here, with
/// a second reader of the file that follows the first one (record offsets only grow).
struct LineFinder {
    path: PathBuf,
    file: std::io::BufReader<std::fs::File>,
    at: u64,
}

impl LineFinder {
    fn open(path: &Path) -> Outcome<Self> {
        let file = std::fs::File::open(path)
            .map_err(|error| Failure::Other(format!("cannot read {}: {error}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: std::io::BufReader::new(file),
            at: 0,
        })
    }

    /// The line of the first byte of the record at `position` that is not a line break.
    fn first_line(&mut self, position: &csv::Position) -> Outcome<u64> {
        self.skip_newlines(position)
            .map(|newlines| position.line() + newlines)
            .map_err(|error| {
                Failure::Other(format!("cannot read {}: {error}", self.path.display()))
            })
    }

    fn skip_newlines(&mut self, position: &csv::Position) -> std::io::Result<u64> {
        let ahead = i64::try_from(position.byte().saturating_sub(self.at)).unwrap_or(i64::MAX);
        self.file.seek_relative(ahead)?;
        self.at = position.byte();
        let mut newlines = 0;
        loop {
            let buffer = self.file.fill_buf()?;
            if buffer.is_empty() {
                return Ok(newlines);
            }
            let breaks = buffer
                .iter()
                .take_while(|&&byte| byte == b'\n' || byte == b'\r')
                .count();
            newlines += buffer[..breaks]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count() as u64;
            let whole_buffer = breaks == buffer.len();
            self.file.consume(breaks);
            self.at += breaks as u64;
            if !whole_buffer {
                return Ok(newlines);
            }
        }
    }
}

/// Streams the file's entries to ImportEntries and answers the job it made. If the file
/// cannot be read this time, the upload is abandoned unfinished (never ended cleanly), so the
/// server imports nothing of it.
async fn upload(conn: &Conn, file: PathBuf, layout: Layout, bar: ProgressBar) -> Outcome<Job> {
    let (entries, stream) = mpsc::channel(UPLOAD_BUFFER);
    let (broken_tx, broken_rx) = oneshot::channel::<(Failure, mpsc::Sender<_>)>();
    tokio::task::spawn_blocking(move || {
        let sent = read_rows(&file, &layout, false, |entry| {
            bar.inc(1);
            entries.blocking_send(entry).is_ok()
        });
        if let Err(failure) = sent {
            // Hands over the sender with the failure: the stream must not end before the
            // call is abandoned, or the server would take the entries so far as the upload.
            let _ = broken_tx.send((failure, entries));
        }
    });
    let mut client = conn.jobs();
    let mut call = Box::pin(client.import_entries(Request::new(ReceiverStream::new(stream))));
    let answered = tokio::select! {
        answered = &mut call => answered,
        Ok((failure, entries)) = broken_rx => {
            drop(call);
            // The process ends with the stream still open: the server sees it break.
            std::mem::forget(entries);
            return Err(failure);
        }
    };
    Ok(answered?.into_inner())
}

/// The bar for `len` units of work, drawn on stderr (nothing when stderr is not a terminal).
fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// Follows job `id` (WatchJob) until it is final, with a progress bar unless `as_json`, and
/// answers it with its failures (GetJob). Ctrl-C offers to cancel it (see `import --help`).
pub async fn follow(
    conn: &Conn,
    id: &str,
    as_json: bool,
    interrupted: &mut Signal,
) -> Outcome<Job> {
    let bar = if as_json {
        ProgressBar::hidden()
    } else {
        progress_bar(0, "waiting for the job")
    };
    let mut client = conn.jobs();
    // Watch streams in a row that ended (or broke UNAVAILABLE) before the job did.
    let mut broken = 0;
    let last = 'watch: loop {
        if broken > 0 {
            if broken > WATCH_RETRIES {
                return Err(Failure::Other(format!(
                    "the watch of job {id} kept ending before the job did"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100 << broken)).await;
        }
        let mut stream = match client
            .watch_job(WatchJobRequest { id: id.to_owned() })
            .await
        {
            Ok(stream) => stream.into_inner(),
            Err(status) if status.code() == Code::Unavailable && broken > 0 => {
                broken += 1;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(job)) => {
                        broken = 0;
                        draw(&bar, &job);
                        if is_final(job.state) {
                            break 'watch job;
                        }
                    }
                    Ok(None) => break,
                    Err(status) if status.code() == Code::Unavailable => break,
                    Err(status) => return Err(status.into()),
                },
                _ = interrupted.recv() => {
                    if let Some(job) = interrupt(conn, id, &bar, interrupted).await? {
                        draw(&bar, &job);
                        if is_final(job.state) {
                            break 'watch job;
                        }
                        // Cancelled but not final yet: the watch shows when it is.
                    }
                }
            }
        }
        broken += 1;
    };
    bar.finish_and_clear();
    // The summary shows the failures: GetJob has them whatever WatchJob sent.
    match client
        .get_job(conn.unary(GetJobRequest { id: id.to_owned() }))
        .await
    {
        Ok(job) if is_final(job.get_ref().state) => Ok(job.into_inner()),
        _ => Ok(last),
    }
}

/// Shows `job`'s progress on `bar`.
fn draw(bar: &ProgressBar, job: &Job) {
    bar.set_length(job.total);
    bar.set_position(job.processed);
    bar.set_message(format!(
        "imported {}, failed {} ({})",
        job.imported,
        job.failed,
        job_state_cell(job.state)
    ));
}

/// Ctrl-C while following job `id`: on a terminal, asks whether to cancel it; otherwise
/// cancels it. Answers the job CancelJob returned, or `None` when it was not cancelled. A
/// second Ctrl-C at the question leaves sessionctl with the job running.
async fn interrupt(
    conn: &Conn,
    id: &str,
    bar: &ProgressBar,
    interrupted: &mut Signal,
) -> Outcome<Option<Job>> {
    if std::io::stdin().is_terminal() {
        // The bar stands down while the question is on screen: the line it was drawn on (and
        // the terminal's `^C` after it) is cleared, the question takes it, and the bar comes
        // back on the line after the answer.
        let drawn = !bar.is_hidden();
        if drawn {
            bar.set_draw_target(ProgressDrawTarget::hidden());
            eprint!("\r\x1b[2K");
        } else {
            eprintln!();
        }
        eprint!("cancel job {id}? [y/N] ");
        let answer = tokio::select! {
            answer = read_answer() => answer,
            _ = interrupted.recv() => {
                eprintln!();
                return Err(Failure::Other(format!(
                    "interrupted; job {id} goes on: `sessionctl job watch {id}` follows it, \
                     `sessionctl job cancel {id}` cancels it"
                )));
            }
        };
        if !answer.ends_with('\n') {
            // End of input: the terminal did not move to the next line.
            eprintln!();
        }
        if drawn {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.force_draw();
        }
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Ok(None);
        }
    } else {
        bar.suspend(|| {
            eprintln!("interrupted: stdin is not a terminal, so cancelling job {id}");
        });
    }
    match conn
        .jobs()
        .cancel_job(conn.unary(CancelJobRequest { id: id.to_owned() }))
        .await
    {
        Ok(job) => Ok(Some(job.into_inner())),
        // It finished meanwhile: the watch shows how.
        Err(status) if status.code() == Code::FailedPrecondition => {
            bar.suspend(|| eprintln!("job {id} could not be cancelled: {}", status.message()));
            Ok(None)
        }
        Err(status) => Err(status.into()),
    }
}

/// One line from stdin, read on a thread of its own so that a second Ctrl-C can still be
/// heard; end of input reads as an empty answer.
async fn read_answer() -> String {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(csv: &str, list: Option<&str>) -> Outcome<Vec<ImportEntriesRequest>> {
        let dir = tempfile_dir();
        let path = dir.join("entries.csv");
        std::fs::write(&path, csv).unwrap();
        let layout = Layout::new(list.map(str::to_owned))?;
        let mut entries = Vec::new();
        read_rows(&path, &layout, false, |entry| {
            entries.push(entry);
            true
        })?;
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(entries)
    }

    /// A fresh directory under the system's temp dir (the bin has no tempfile dependency).
    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sessionctl-test-{}-{}",
            std::process::id(),
            crate::commands::request_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(list: &str, date: &str, title: &str, line: u64) -> ImportEntriesRequest {
        ImportEntriesRequest {
            list: list.into(),
            date: date.into(),
            title: title.into(),
            line,
        }
    }

    #[test]
    fn rows_carry_their_file_line_counting_the_header() {
        let csv = "List,Date,Title\nhome,2026-01-01,milk\n\nwork,2026-01-02,\"two\nlines\"\nwork,2026-01-03,after\r\n\r\n\r\nwork,2026-01-04,crlf\n";
        assert_eq!(
            rows(csv, None).unwrap(),
            vec![
                entry("home", "2026-01-01", "milk", 2),
                entry("work", "2026-01-02", "two\nlines", 4),
                entry("work", "2026-01-03", "after", 6),
                entry("work", "2026-01-04", "crlf", 9),
            ]
        );
    }

    #[test]
    fn without_a_header_the_first_row_is_an_entry() {
        assert_eq!(
            rows("2026-01-01, milk \n", Some("home")).unwrap(),
            vec![entry("home", "2026-01-01", "milk", 1)]
        );
    }

    #[test]
    fn short_rows_are_sent_with_empty_fields_and_long_ones_cut() {
        assert_eq!(
            rows("date,title\n2026-01-01\n2026-01-02,a,b\n", Some("home")).unwrap(),
            vec![
                entry("home", "2026-01-01", "", 2),
                entry("home", "2026-01-02", "a", 3),
            ]
        );
    }

    #[test]
    fn a_header_of_the_other_layout_is_a_usage_error() {
        let error = rows("list,date,title\nhome,2026-01-01,milk\n", Some("home")).unwrap_err();
        assert!(matches!(error, Failure::Usage(_)), "{error}");
        assert!(error.to_string().contains("--list"), "{error}");
        let error = rows("date,title\n2026-01-01,milk\n", None).unwrap_err();
        assert!(error.to_string().contains("--list"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_utf8_or_missing_is_named() {
        let error = rows("list,date,title\nhome,2026-01-01,caf\u{e9}\n", None);
        assert!(error.is_ok());
        let dir = tempfile_dir();
        let path = dir.join("latin1.csv");
        std::fs::write(&path, b"home,2026-01-01,caf\xe9\n").unwrap();
        let layout = Layout::new(None).unwrap();
        let error = read_rows(&path, &layout, false, |_| true).unwrap_err();
        assert!(matches!(error, Failure::Other(_)), "{error}");
        assert!(error.to_string().contains("latin1.csv line 1"), "{error}");
        let missing = dir.join("missing.csv");
        let error = read_rows(&missing, &layout, false, |_| true).unwrap_err();
        assert!(error.to_string().contains("missing.csv"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
