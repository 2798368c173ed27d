//! A closed-loop load driver: N tasks, each sending one request at a time, first for a warm-up
//! that is not measured, then for a measured window; plus the statistics a benchmark reports.
//!
//! It knows nothing about any service: a benchmark hands [`run_closed_loop`] a function that
//! makes one request from a [`Call`] (which task, which of its requests), and gets back a
//! [`LoadReport`] of every measured latency and every error by gRPC code. The `loadgen` binary
//! builds its subcommands (`store-put`, later session-svc ones) on it.

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail, ensure};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::Instant,
};
use tonic::{Code, Status};

/// `/proc/PID/stat` counts CPU time in these ticks per second (USER_HZ, fixed at 100 by the
/// Linux ABI whatever the kernel's internal HZ).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// How long [`scrape_metrics`] may take, so a stuck endpoint cannot stall a benchmark.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The shape of one closed-loop run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Concurrent tasks, each with at most one request in flight.
    pub clients: usize,
    /// Load before measuring: connections warm, caches and queues in their steady state.
    pub warmup: Duration,
    /// The measured window; a request counts when it starts inside it.
    pub duration: Duration,
    /// How long a task pauses after an error, so a server refusing at once (RESOURCE_EXHAUSTED)
    /// is not hammered by a hot loop that also starves it of CPU.
    pub error_backoff: Duration,
    /// How long requests still in flight at the end may take before their tasks are aborted,
    /// so a hung server cannot hang the benchmark.
    pub drain_timeout: Duration,
}

/// Which request a task is about to make: enough to derive keys that never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The task, `0..clients`.
    pub task: usize,
    /// The task's request number, from 0, warm-up included.
    pub seq: u64,
}

/// The non-OK answers of one gRPC code.
#[derive(Clone, Debug)]
pub struct ErrorTally {
    /// How many.
    pub count: u64,
    /// The first message seen, to show what went wrong.
    pub sample: String,
}

/// What one closed-loop run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Requests answered OK that started in the measured window.
    pub ok: u64,
    /// Latencies of those OK requests, in microseconds, sorted ascending.
    pub latencies_us: Vec<u32>,
    /// Non-OK answers in the measured window, by code.
    pub errors: HashMap<Code, ErrorTally>,
    /// The measured window's length.
    pub window: Duration,
    /// Tasks aborted because their last request outlived `drain_timeout`.
    pub unfinished: usize,
}

impl LoadReport {
    /// OK requests per second of the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }

    /// The `p`th percentile (0..=100) of the OK latencies, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_us, p).map(|us| f64::from(us) / 1000.0)
    }

    /// All non-OK answers.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|tally| tally.count).sum()
    }

    /// Answers of one code (RESOURCE_EXHAUSTED is the one a benchmark reports on its own).
    pub fn errors_of(&self, code: Code) -> u64 {
        self.errors.get(&code).map_or(0, |tally| tally.count)
    }

    /// Errors as `Code: count ("first message")`, in code order; empty when there were none.
    pub fn error_summary(&self) -> Vec<String> {
        let mut codes: Vec<_> = self.errors.iter().collect();
        codes.sort_by_key(|(code, _)| **code as i32);
        codes
            .into_iter()
            .map(|(code, tally)| format!("{code:?}: {} (\"{}\")", tally.count, tally.sample))
            .collect()
    }

    /// Folds one task's results in (latencies are sorted by [`run_closed_loop`] at the end).
    fn absorb(&mut self, task: LoadReport) {
        self.ok += task.ok;
        self.latencies_us.extend(task.latencies_us);
        for (code, tally) in task.errors {
            self.errors
                .entry(code)
                .and_modify(|seen| seen.count += tally.count)
                .or_insert(tally);
        }
    }

    /// Counts one non-OK answer.
    fn record_error(&mut self, status: &Status) {
        self.errors
            .entry(status.code())
            .and_modify(|seen| seen.count += 1)
            .or_insert_with(|| ErrorTally {
                count: 1,
                sample: status.message().chars().take(200).collect(),
            });
    }
}

/// Runs `config.clients` tasks, each calling `request` in a loop (the next call starts when the
/// previous one answers), for the warm-up and then the measured window, and reports what the
/// window saw. Bounded in time: no request starts after the window, and tasks still waiting
/// `drain_timeout` later are aborted and counted in [`LoadReport::unfinished`].
pub async fn run_closed_loop<F, Fut>(config: &LoadConfig, request: F) -> LoadReport
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let request = Arc::new(request);
    let measure_from = Instant::now() + config.warmup;
    let stop_at = measure_from + config.duration;
    let mut tasks = JoinSet::new();
    for task in 0..config.clients {
        let request = Arc::clone(&request);
        let backoff = config.error_backoff;
        tasks.spawn(async move {
            let mut tally = LoadReport::default();
            for seq in 0.. {
                let began = Instant::now();
                if began >= stop_at {
                    break;
                }
                let outcome = request(Call { task, seq }).await;
                let measured = began >= measure_from;
                match outcome {
                    Ok(()) if measured => {
                        tally.ok += 1;
                        let micros = began.elapsed().as_micros();
                        tally
                            .latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Ok(()) => {}
                    Err(status) => {
                        if measured {
                            tally.record_error(&status);
                        }
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
            tally
        });
    }

    let mut report = LoadReport {
        window: config.duration,
        ..LoadReport::default()
    };
    let give_up_at = stop_at + config.drain_timeout;
    loop {
        match tokio::time::timeout_at(give_up_at, tasks.join_next()).await {
            Ok(Some(Ok(tally))) => report.absorb(tally),
            Ok(Some(Err(error))) if error.is_panic() => {
                std::panic::resume_unwind(error.into_panic())
            }
            Ok(Some(Err(error))) => panic!("a load task was cancelled: {error}"),
            Ok(None) => break,
            Err(_) => {
                report.unfinished = tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    report.latencies_us.sort_unstable();
    report
}

/// The nearest-rank `p`th percentile (0..=100) of `sorted` (ascending): the smallest value with
/// at least `p`% of the values at or below it. `None` for no values.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (the mean of the middle two for an even count); `None` for none.
/// NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Parses `10s`, `250ms`, `2m` or a bare number of seconds, for command-line flags.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 10s, 250ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        _ => bail!("`{text}`: unknown unit `{unit}` (use ms, s or m)"),
    };
    ensure!(seconds.is_finite(), "`{text}` is out of range");
    Ok(Duration::from_secs_f64(seconds))
}

/// CPU time a process has used so far (user + system), from `/proc/PID/stat` (Linux only).
/// Take two readings around a window to get the process's CPU use in it.
pub fn process_cpu_time(pid: u32) -> std::io::Result<Duration> {
    cpu_time_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
        .ok_or_else(|| std::io::Error::other("unexpected /proc/PID/stat format"))
}

/// CPU time the whole machine has spent busy so far (every core; idle and iowait excluded),
/// from the first line of `/proc/stat`. What is neither the server nor the load generator is
/// other work competing for the cores: a noisy measurement.
pub fn machine_busy_time() -> std::io::Result<Duration> {
    busy_time_from_proc_stat(&std::fs::read_to_string("/proc/stat")?)
        .ok_or_else(|| std::io::Error::other("unexpected /proc/stat format"))
}

/// user + nice + system + irq + softirq + steal of the `cpu` line of `/proc/stat`.
fn busy_time_from_proc_stat(stat: &str) -> Option<Duration> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Some(Duration::from_secs_f64(
        busy as f64 / CLOCK_TICKS_PER_SECOND,
    ))
}

/// CPU time this process has used so far (see [`process_cpu_time`]).
pub fn own_cpu_time() -> std::io::Result<Duration> {
    process_cpu_time(std::process::id())
}

/// Bytes a process has caused to be sent to storage so far (`write_bytes` of `/proc/PID/io`,
/// Linux only; counted in pages as they are dirtied, so a 100-byte write that is fsynced costs
/// a page). Take two readings around a window to get what it wrote in it.
pub fn process_written_bytes(pid: u32) -> std::io::Result<u64> {
    written_bytes_from_io(&std::fs::read_to_string(format!("/proc/{pid}/io"))?)
        .ok_or_else(|| std::io::Error::other("no write_bytes line in /proc/PID/io"))
}

/// The `write_bytes:` field of a `/proc/PID/io` file.
fn written_bytes_from_io(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`: utime and stime are fields 14 and 15.
fn cpu_time_from_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / CLOCK_TICKS_PER_SECOND,
    ))
}

/// A loopback port free right now, for a server's `/metrics` (which does not announce its
/// address). Another process could take it before the server binds; then startup fails loudly.
pub fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Fetches `GET /metrics` from `addr` (Prometheus text format) and returns its samples by
/// name (a labelled one by `name{labels}` as written). Plain HTTP/1.0 over a socket: enough for a benchmark, no client crate.
pub async fn scrape_metrics(addr: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    })
    .await
    .with_context(|| format!("no answer from {addr} within {SCRAPE_TIMEOUT:?}"))??;
    let (_, body) = body
        .split_once("\r\n\r\n")
        .context("the metrics answer has no body")?;
    Ok(parse_metrics(body))
}

/// The `name value` lines of a Prometheus text body (comments skipped); label values here
/// never hold a space, so the sample ends at the last one.
fn parse_metrics(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 99.5), Some(100));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 51.0), Some(3));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        for bad in ["", "s", "10h", "ten", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_time_from_stat(stat), Some(Duration::from_secs(3)));
        assert_eq!(cpu_time_from_stat("garbage"), None);
        assert!(own_cpu_time().is_ok());
    }

    #[test]
    fn written_bytes_are_read_from_proc_io() {
        let io = "rchar: 42402\nwchar: 11507\nsyscr: 70\nsyscw: 18\nread_bytes: 2404352\n\
                  write_bytes: 32768\ncancelled_write_bytes: 0\n";
        assert_eq!(written_bytes_from_io(io), Some(32768));
        assert_eq!(written_bytes_from_io("cancelled_write_bytes: 5\n"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 10 50 9000 300 5 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(busy_time_from_proc_stat(stat), Some(Duration::from_secs(2)));
        assert_eq!(busy_time_from_proc_stat("intr 1 2 3"), None);
        assert!(machine_busy_time().is_ok());
    }

    #[test]
    fn metrics_lines_parse_by_name() {
        let body = "# HELP a_total A.\n# TYPE a_total counter\na_total 12\nb{x=\"1\"} 3\nc 0.5\n";
        let metrics = parse_metrics(body);
        assert_eq!(metrics.get("a_total"), Some(&12.0));
        assert_eq!(metrics.get("c"), Some(&0.5));
        assert_eq!(
            metrics.get("b{x=\"1\"}"),
            Some(&3.0),
            "labelled, by name and labels"
        );
        assert_eq!(metrics.len(), 3);
    }

    #[tokio::test]
    async fn the_driver_measures_only_the_window_and_counts_errors_by_code() {
        let config = LoadConfig {
            clients: 4,
            warmup: Duration::from_millis(30),
            duration: Duration::from_millis(120),
            error_backoff: Duration::from_millis(1),
            drain_timeout: Duration::from_secs(5),
        };
        let report = run_closed_loop(&config, |call: Call| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            match call.seq % 4 {
                3 => Err(Status::resource_exhausted("queue full")),
                _ => Ok(()),
            }
        })
        .await;
        assert!(report.ok > 0);
        assert_eq!(report.latencies_us.len() as u64, report.ok);
        assert!(report.latencies_us.is_sorted());
        assert!(report.percentile_ms(50.0).unwrap() >= 2.0);
        assert!(report.errors_of(Code::ResourceExhausted) > 0);
        assert_eq!(
            report.error_count(),
            report.errors_of(Code::ResourceExhausted)
        );
        assert_eq!(report.unfinished, 0);
        // Each task gets at most window / 2 ms requests in; warm-up ones are not counted.
        assert!(report.ok + report.error_count() <= 4 * (120 / 2 + 1));
    }

    #[tokio::test]
    async fn the_driver_gives_up_on_requests_that_never_answer() {
        let config = LoadConfig {
            clients: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(20),
            error_backoff: Duration::ZERO,
            drain_timeout: Duration::from_millis(50),
        };
        let report =
            run_closed_loop(&config, |_| std::future::pending::<Result<(), Status>>()).await;
        assert_eq!(report.unfinished, 2);
        assert_eq!(report.ok, 0);
    }
}
