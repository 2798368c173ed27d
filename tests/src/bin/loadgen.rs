//! `loadgen`: benchmarks that drive the real services over gRPC on loopback and print Markdown
//! for BENCHMARKS.md.
//!
//! Build the release binaries first: `cargo build --release --workspace --bins`, then
//! `cargo run --release -p tests --bin loadgen -- store-put`. The harness starts the
//! `store-svc` found next to this executable, so a debug loadgen would drive a debug server.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use proto::store::v1::PutRequest;
use tests::{
    StoreClient, StoreOptions, StoreProcess,
    load::{self, Call, LoadConfig, LoadReport},
    locate_binary,
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tonic::Code;

/// How to build what this tool starts; said in `--help` and when the binary is missing.
const BUILD_FIRST: &str = "cargo build --release --workspace --bins";

/// The namespace every benchmark key lives in.
const NAMESPACE: &str = "loadgen";

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Benchmarks of this project's services over gRPC on 127.0.0.1, printed as Markdown",
    after_help = "Needs release binaries next to it: run `cargo build --release --workspace --bins` \
                  first, then `cargo run --release -p tests --bin loadgen -- store-put`."
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Durable Puts against store-svc: group commit vs one flush per write, side by side.
    StorePut(StorePut),
}

#[derive(Debug, Args)]
struct StorePut {
    /// Concurrent closed-loop clients (each has one Put in flight at a time).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// HTTP/2 connections the clients are spread over.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    connections: u32,
    /// Measured time per run and mode (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = bounded_duration)]
    duration: Duration,
    /// Unmeasured load before each measurement.
    #[arg(long, default_value = "2s", value_parser = bounded_duration)]
    warmup: Duration,
    /// Runs; each starts fresh servers for both modes, in alternating order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Bytes in each Put's value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    value_bytes: u32,
    /// store-svc `--max-batch` in group-commit mode (flush-per-write mode uses 1).
    #[arg(long, default_value_t = 512)]
    max_batch: u32,
    /// store-svc `--queue-size` in both modes: larger than --clients, so no Put is refused.
    #[arg(long, default_value_t = 4096)]
    queue_size: u32,
}

/// A `--duration`/`--warmup` value, at most ten minutes so a typo cannot run for hours.
fn bounded_duration(text: &str) -> anyhow::Result<Duration> {
    let duration = load::parse_duration(text)?;
    anyhow::ensure!(duration <= Duration::from_secs(600), "at most 10m");
    Ok(duration)
}

/// How store-svc makes writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Concurrent writes share one flush (`--max-batch N`).
    GroupCommit,
    /// Every write has its own flush (`--max-batch 1`).
    FlushPerWrite,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::GroupCommit => "group commit",
            Mode::FlushPerWrite => "flush per write",
        }
    }

    fn max_batch(self, args: &StorePut) -> u32 {
        match self {
            Mode::GroupCommit => args.max_batch,
            Mode::FlushPerWrite => 1,
        }
    }
}

/// One mode's measurement in one run.
struct Measured {
    /// Which run, from 1.
    run: u32,
    mode: Mode,
    report: LoadReport,
    /// What the machine did during the window, for spotting a saturated server.
    window: WindowSample,
}

/// CPU use of both processes and the server's batching, over the measured window.
#[derive(Default)]
struct WindowSample {
    /// store-svc's CPU use, in % of one core.
    server_cpu: Option<f64>,
    /// This process's CPU use, in % of one core.
    loadgen_cpu: Option<f64>,
    /// Everything else the machine ran, in % of one core: high means a noisy measurement.
    other_cpu: Option<f64>,
    /// Writes made durable per flush (from store-svc's `/metrics`).
    writes_per_flush: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::StorePut(args) => store_put(args).await,
    }
}

async fn store_put(args: StorePut) -> anyhow::Result<()> {
    locate_binary(STORE_BINARY, STORE_BINARY_ENV)
        .with_context(|| format!("store-svc release binary missing: run `{BUILD_FIRST}` first"))?;
    print_header(&args);

    println!("## Runs\n");
    println!(
        "| run | mode | ops/s | p50 ms | p99 ms | max ms | errors | RESOURCE_EXHAUSTED | writes/flush | store-svc CPU | loadgen CPU | other CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let order = if run % 2 == 1 {
            [Mode::GroupCommit, Mode::FlushPerWrite]
        } else {
            [Mode::FlushPerWrite, Mode::GroupCommit]
        };
        for mode in order {
            eprintln!("run {run}/{}: {} ...", args.runs, mode.label());
            let measured = measure_store_put(&args, run, mode).await?;
            print_run(&measured);
            results.push(measured);
        }
    }
    print_errors(&results);
    print_summary(&args, &results);
    Ok(())
}

/// Starts a fresh store-svc in `mode`, drives it, and lets it go (the harness kills it).
async fn measure_store_put(args: &StorePut, run: u32, mode: Mode) -> anyhow::Result<Measured> {
    let metrics_addr = free_loopback_addr()?;
    let store = StoreProcess::spawn(
        StoreOptions::new()
            .max_batch(mode.max_batch(args) as usize)
            .queue_size(args.queue_size as usize)
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string()),
    )
    .await
    .with_context(|| format!("starting store-svc for {}", mode.label()))?;

    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = store
            .channel()
            .await
            .with_context(|| format!("connecting to store-svc at {}", store.addr()))?;
        clients.push(StoreClient::new(channel));
    }
    let clients = Arc::new(clients);
    let value = Arc::new(vec![b'v'; args.value_bytes as usize]);
    let config = LoadConfig {
        clients: args.clients as usize,
        warmup: args.warmup,
        duration: args.duration,
        error_backoff: Duration::from_millis(1),
        drain_timeout: Duration::from_secs(10),
    };
    // Every Put creates a fresh key (expected_version 0): no two clients touch one key, and
    // every request is a real durable write that cannot fail on a version.
    let request = move |call: Call| {
        let mut client = clients[call.task % clients.len()].clone();
        let put = PutRequest {
            namespace: NAMESPACE.to_owned(),
            key: format!("c{}-{}", call.task, call.seq),
            value: value.as_ref().clone(),
            expected_version: 0,
        };
        async move { client.put(put).await.map(|_| ()) }
    };
    let (report, window) = tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, store.pid(), metrics_addr),
    );
    Ok(Measured {
        run,
        mode,
        report,
        window,
    })
}

/// Reads CPU times and the server's write/flush counters at the start and end of the window.
async fn sample_window(config: &LoadConfig, pid: u32, metrics: SocketAddr) -> WindowSample {
    tokio::time::sleep(config.warmup).await;
    let server_before = load::process_cpu_time(pid).ok();
    let own_before = load::own_cpu_time().ok();
    let machine_before = load::machine_busy_time().ok();
    let metrics_before = load::scrape_metrics(metrics).await.ok();
    tokio::time::sleep(config.duration).await;
    let server_after = load::process_cpu_time(pid).ok();
    let own_after = load::own_cpu_time().ok();
    let machine_after = load::machine_busy_time().ok();
    let metrics_after = load::scrape_metrics(metrics).await.ok();

    let percent = |before: Option<Duration>, after: Option<Duration>| {
        Some(100.0 * (after? - before?).as_secs_f64() / config.duration.as_secs_f64())
    };
    let writes_per_flush = metrics_before
        .zip(metrics_after)
        .and_then(|(before, after)| {
            let delta = |name: &str| Some(after.get(name)? - before.get(name)?);
            let flushes = delta("store_flushes_total")?;
            (flushes > 0.0).then_some(delta("store_writes_total")? / flushes)
        });
    let server_cpu = percent(server_before, server_after);
    let loadgen_cpu = percent(own_before, own_after);
    let other_cpu = percent(machine_before, machine_after)
        .zip(server_cpu.zip(loadgen_cpu))
        .map(|(machine, (server, own))| (machine - server - own).max(0.0));
    WindowSample {
        server_cpu,
        loadgen_cpu,
        other_cpu,
        writes_per_flush,
    }
}

/// A loopback port free right now, for store-svc's `/metrics` (which does not announce its
/// address). Another process could take it before store-svc binds; then startup fails loudly.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

fn print_header(args: &StorePut) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# store-svc durable Put: group commit vs flush per write\n");
    println!("- command: `{BUILD_FIRST} && {}`", command_line());
    println!("- date: {}", utc_now());
    println!(
        "- available parallelism: {cores} (shared by store-svc and loadgen, so figures are noisy)"
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections; every Put creates a fresh key \
         (`expected_version` 0) with a {}-byte value; {:?} warm-up, {:?} measured; {} run(s), \
         mode order alternating, a fresh store-svc and data dir per run and mode",
        args.clients, args.connections, args.value_bytes, args.warmup, args.duration, args.runs
    );
    println!(
        "- group commit: `store-svc --max-batch {} --queue-size {}`; flush per write: \
         `store-svc --max-batch 1 --queue-size {}`",
        args.max_batch, args.queue_size, args.queue_size
    );
    println!(
        "- latency: from sending a Put to its OK (which means flushed); CPU in % of one core \
         over the measured window; \"other CPU\" is everything else on the machine (noise)"
    );
    if cfg!(debug_assertions) {
        println!("- **warning: a debug build; use `--release` for figures worth keeping**");
    }
    println!();
}

fn print_run(measured: &Measured) {
    let report = &measured.report;
    let window = &measured.window;
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        measured.run,
        measured.mode.label(),
        report.ops_per_sec(),
        ms(report.percentile_ms(50.0)),
        ms(report.percentile_ms(99.0)),
        ms(report.percentile_ms(100.0)),
        report.error_count(),
        report.errors_of(Code::ResourceExhausted),
        window
            .writes_per_flush
            .map_or("n/a".to_owned(), |n| format!("{n:.1}")),
        percent(window.server_cpu),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    );
}

fn print_errors(results: &[Measured]) {
    let failed: Vec<_> = results
        .iter()
        .filter(|m| m.report.error_count() > 0 || m.report.unfinished > 0)
        .collect();
    if failed.is_empty() {
        println!("\nNo errors: every measured Put answered OK.\n");
        return;
    }
    println!("\nErrors:\n");
    for m in failed {
        let mut what = m.report.error_summary();
        if m.report.unfinished > 0 {
            what.push(format!(
                "{} clients never got an answer",
                m.report.unfinished
            ));
        }
        println!("- run {} {}: {}", m.run, m.mode.label(), what.join("; "));
    }
    println!();
}

fn print_summary(args: &StorePut, results: &[Measured]) {
    let of = |mode: Mode, stat: &dyn Fn(&LoadReport) -> Option<f64>| -> Vec<f64> {
        results
            .iter()
            .filter(|m| m.mode == mode)
            .filter_map(|m| stat(&m.report))
            .collect()
    };
    let ops = |r: &LoadReport| Some(r.ops_per_sec());
    let p50 = |r: &LoadReport| r.percentile_ms(50.0);
    let p99 = |r: &LoadReport| r.percentile_ms(99.0);

    println!("## Summary (median of {} runs)\n", args.runs);
    println!("| mode | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for mode in [Mode::GroupCommit, Mode::FlushPerWrite] {
        println!(
            "| {} | {:.0} | {} | {} |",
            mode.label(),
            load::median(&of(mode, &ops)).unwrap_or(0.0),
            ms(load::median(&of(mode, &p50))),
            ms(load::median(&of(mode, &p99))),
        );
    }
    let ratios: Vec<f64> = (1..=args.runs)
        .filter_map(|run| {
            let ops_of = |mode| {
                results
                    .iter()
                    .find(|m| m.run == run && m.mode == mode)
                    .map(|m| m.report.ops_per_sec())
            };
            let (group, single) = (ops_of(Mode::GroupCommit)?, ops_of(Mode::FlushPerWrite)?);
            (single > 0.0).then_some(group / single)
        })
        .collect();
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
    let ratio = load::median(&ratios);
    println!(
        "\nGroup commit / flush per write, ops/s: **{}** (median of per-run ratios {})\n",
        ratio.map_or("n/a".to_owned(), |r| format!("{r:.1}×")),
        listed.join(", ")
    );

    let group_ops = load::median(&of(Mode::GroupCommit, &ops)).unwrap_or(0.0);
    let group_p99 = load::median(&of(Mode::GroupCommit, &p99));
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "Targets of issue 2 (stated for 256 clients): ≥ 20,000 ops/s {}; ≥ 10× flush per write {}; \
         p99 ≤ 15 ms {}.",
        met(group_ops >= 20_000.0),
        met(ratio.is_some_and(|r| r >= 10.0)),
        met(group_p99.is_some_and(|p| p <= 15.0)),
    );
}

/// Milliseconds with two decimals, or `n/a`.
fn ms(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
}

/// A CPU share as `123%`, or `n/a`.
fn percent(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.0}%"))
}

/// This invocation as `cargo run` would spell it, so the figures can be reproduced.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg
            }
        })
        .collect();
    format!(
        "cargo run --release -p tests --bin loadgen -- {}",
        args.join(" ")
    )
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format_utc(seconds)
}

/// `seconds` since the Unix epoch as a UTC date and time (Howard Hinnant's civil_from_days).
fn format_utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn utc_dates_format_across_leap_days() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from(["loadgen", "store-put", "--clients", "64"]).unwrap();
        let Bench::StorePut(args) = cli.bench;
        assert_eq!(args.clients, 64);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["loadgen", "store-put", "--duration", "2h"]).is_err());
    }
}
