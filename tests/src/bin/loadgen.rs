//! `loadgen`: benchmarks that drive the real services over gRPC on loopback and print Markdown
//! for BENCHMARKS.md.
//!
//! - `store-put`: durable Puts against store-svc, group commit vs one flush per write.
//! - `session-get`: GetSession on live session-svc actors vs a bare tonic echo server
//!   (`echo_server`, a binary of this crate), the same clients driving both.
//! - `session-add-item`: durable AddItem end to end (session-svc → store-svc), with direct
//!   store-svc Puts of the same size as the baseline.
//!
//! Build the release binaries first: `cargo build --release --workspace --bins`, then
//! `cargo run --release -p tests --bin loadgen -- store-put`. The harness starts the binaries
//! found next to this executable, so a debug loadgen would drive debug servers.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use prost::Message;
use proto::{
    session::v1::{
        AddItemRequest, GetSessionRequest, Money, StartSessionRequest,
        cart_service_client::CartServiceClient,
    },
    store::v1::PutRequest,
};
use tests::{
    ServiceCommand, ServiceProcess, StoreClient, StoreOptions, StoreProcess,
    load::{self, Call, LoadConfig, LoadReport},
    locate_binary,
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tokio::task::JoinSet;
use tonic::{Code, transport::Channel};

/// How to build what this tool starts; said in `--help` and when a binary is missing.
const BUILD_FIRST: &str = "cargo build --release --workspace --bins";

/// The namespace every benchmark key lives in.
const NAMESPACE: &str = "loadgen";

/// session-svc's binary in `target/<profile>/`, and the variable that overrides where it is.
const SESSION_BINARY: (&str, &str) = ("session-svc", "SESSION_SVC_BIN");

/// The bare tonic server `session-get` compares session-svc with.
const ECHO_BINARY: (&str, &str) = ("echo_server", "ECHO_SERVER_BIN");

/// Line items each `session-get` session holds, so reads return a realistic cart.
const ITEMS_PER_READ_SESSION: u32 = 3;

/// Sessions set up concurrently before a measurement (start, then add items).
const SETUP_WORKERS: usize = 64;

/// AddItems on one cart before its size is taken for the Put baseline (at least): past
/// session-svc's default log limit (100 entries), so the cart is as large as it gets in a long
/// measurement.
const CALIBRATION_ADDS: u32 = 200;

/// The cart API client.
type CartApi = CartServiceClient<Channel>;

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
    /// Warm reads: GetSession on live session-svc actors vs a bare tonic echo server.
    SessionGet(SessionGet),
    /// Durable writes: AddItem through session-svc to store-svc vs direct store-svc Puts.
    SessionAddItem(SessionAddItem),
}

/// The closed loop every benchmark runs.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Concurrent closed-loop clients (each has one request in flight at a time).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// HTTP/2 connections the clients are spread over (per server).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    connections: u32,
    /// Measured time per run and target (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = bounded_duration)]
    duration: Duration,
    /// Unmeasured load before each measurement.
    #[arg(long, default_value = "2s", value_parser = bounded_duration)]
    warmup: Duration,
    /// Runs; each measures both compared targets, in an order that alternates between runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
}

impl LoadArgs {
    fn config(&self) -> LoadConfig {
        LoadConfig {
            clients: self.clients as usize,
            warmup: self.warmup,
            duration: self.duration,
            error_backoff: Duration::from_millis(1),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Args)]
struct StorePut {
    #[command(flatten)]
    load: LoadArgs,
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

#[derive(Debug, Args)]
struct SessionGet {
    #[command(flatten)]
    load: LoadArgs,
    /// Sessions started (3 items each) before measuring; reads go round-robin over them.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sessions: u32,
}

#[derive(Debug, Args)]
struct SessionAddItem {
    #[command(flatten)]
    load: LoadArgs,
    /// Skus each client cycles through: repeats add up on one line, so a cart stays far below
    /// its 500-line cap however long the run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    skus: u32,
    /// session-svc `--log-limit` (events kept per cart); its default when not set. Every
    /// AddItem logs an event, so this sets how large the cart Put to store-svc grows.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    log_limit: Option<u32>,
}

/// A `--duration`/`--warmup` value, at most ten minutes so a typo cannot run for hours.
fn bounded_duration(text: &str) -> anyhow::Result<Duration> {
    let duration = load::parse_duration(text)?;
    anyhow::ensure!(duration <= Duration::from_secs(600), "at most 10m");
    Ok(duration)
}

/// What a benchmark compares: one row per run and target.
trait Target: Copy + Eq {
    fn label(self) -> &'static str;
}

/// How store-svc makes writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Concurrent writes share one flush (`--max-batch N`).
    GroupCommit,
    /// Every write has its own flush (`--max-batch 1`).
    FlushPerWrite,
}

impl Target for Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::GroupCommit => "group commit",
            Mode::FlushPerWrite => "flush per write",
        }
    }
}

impl Mode {
    fn max_batch(self, args: &StorePut) -> u32 {
        match self {
            Mode::GroupCommit => args.max_batch,
            Mode::FlushPerWrite => 1,
        }
    }
}

/// Who answers GetSession in `session-get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    /// session-svc, from its live actors.
    SessionSvc,
    /// The bare tonic server with a canned answer: the floor.
    Echo,
}

impl Target for Reader {
    fn label(self) -> &'static str {
        match self {
            Reader::SessionSvc => "session-svc",
            Reader::Echo => "echo",
        }
    }
}

impl Reader {
    /// Where this server's CPU sits in a `session-get` window sample.
    fn cpu_index(self) -> usize {
        match self {
            Reader::SessionSvc => 0,
            Reader::Echo => 1,
        }
    }
}

/// What `session-add-item` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// AddItem through session-svc (which Puts the cart to store-svc before answering).
    AddItem,
    /// Direct store-svc Puts of a cart-sized value: the cost without session-svc.
    StorePut,
}

impl Target for Writer {
    fn label(self) -> &'static str {
        match self {
            Writer::AddItem => "session-svc AddItem",
            Writer::StorePut => "store-svc Put (baseline)",
        }
    }
}

/// One target's measurement in one run.
struct Measured<T> {
    /// Which run, from 1.
    run: u32,
    target: T,
    report: LoadReport,
    /// What the machine did during the window, for spotting a saturated process.
    window: WindowSample,
}

/// CPU use of the processes involved and store-svc's batching, over the measured window.
#[derive(Default)]
struct WindowSample {
    /// Each watched server's CPU use, in the order they were given, in % of one core.
    server_cpu: Vec<Option<f64>>,
    /// This process's CPU use, in % of one core.
    loadgen_cpu: Option<f64>,
    /// Everything else the machine ran, in % of one core: high means a noisy measurement.
    other_cpu: Option<f64>,
    /// Writes made durable per flush (from store-svc's `/metrics`), when it was scraped.
    writes_per_flush: Option<f64>,
}

impl WindowSample {
    /// The CPU use of the `index`th watched server.
    fn cpu(&self, index: usize) -> Option<f64> {
        self.server_cpu.get(index).copied().flatten()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::StorePut(args) => store_put(args).await,
        Bench::SessionGet(args) => session_get(args).await,
        Bench::SessionAddItem(args) => session_add_item(args).await,
    }
}

/// The two targets of a run, first-measured first: swapped every other run, so neither always
/// gets the cooler machine.
fn alternate<T: Copy>(run: u32, pair: [T; 2]) -> [T; 2] {
    if run % 2 == 1 {
        pair
    } else {
        [pair[1], pair[0]]
    }
}

/// Fails early, with the fix, when a binary the benchmark starts has not been built.
fn require_binaries(binaries: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, env) in binaries {
        locate_binary(name, env)
            .with_context(|| format!("{name} release binary missing: run `{BUILD_FIRST}` first"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// store-put
// ---------------------------------------------------------------------------------------------

async fn store_put(args: StorePut) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV)])?;
    print_store_put_header(&args);

    println!("## Runs\n");
    println!(
        "| run | mode | ops/s | p50 ms | p99 ms | max ms | errors | RESOURCE_EXHAUSTED | writes/flush | store-svc CPU | loadgen CPU | other CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for run in 1..=args.load.runs {
        for mode in alternate(run, [Mode::GroupCommit, Mode::FlushPerWrite]) {
            eprintln!("run {run}/{}: {} ...", args.load.runs, mode.label());
            let options = StoreOptions::new()
                .max_batch(mode.max_batch(&args) as usize)
                .queue_size(args.queue_size as usize);
            let (report, window) = drive_puts(options, &args.load, args.value_bytes as usize)
                .await
                .with_context(|| format!("store-put, {}", mode.label()))?;
            let measured = Measured {
                run,
                target: mode,
                report,
                window,
            };
            print_store_put_run(&measured);
            results.push(measured);
        }
    }
    print_errors(&results, "Put");
    print_store_put_summary(&args, &results);
    Ok(())
}

/// Starts a fresh store-svc with `options` (and a `/metrics` endpoint), drives Puts of
/// `value_bytes`-byte values at it, and lets it go (the harness kills it). The sample's only
/// server is store-svc.
async fn drive_puts(
    options: StoreOptions,
    load: &LoadArgs,
    value_bytes: usize,
) -> anyhow::Result<(LoadReport, WindowSample)> {
    let metrics_addr = free_loopback_addr()?;
    let store = StoreProcess::spawn(
        options
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string()),
    )
    .await
    .context("starting store-svc")?;
    let clients: Vec<StoreClient> = connect(&store, load.connections)
        .await?
        .into_iter()
        .map(StoreClient::new)
        .collect();
    let clients = Arc::new(clients);
    let value = Arc::new(vec![b'v'; value_bytes]);
    let config = load.config();
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
    let pids = [store.pid()];
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, Some(metrics_addr)),
    ))
}

fn print_store_put_header(args: &StorePut) {
    print_header_start(
        "store-svc durable Put: group commit vs flush per write",
        "store-svc and loadgen",
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections; every Put creates a fresh key \
         (`expected_version` 0) with a {}-byte value; {:?} warm-up, {:?} measured; {} run(s), \
         mode order alternating, a fresh store-svc and data dir per run and mode",
        args.load.clients,
        args.load.connections,
        args.value_bytes,
        args.load.warmup,
        args.load.duration,
        args.load.runs
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
    print_header_end();
}

fn print_store_put_run(measured: &Measured<Mode>) {
    let report = &measured.report;
    let window = &measured.window;
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        measured.run,
        measured.target.label(),
        report.ops_per_sec(),
        ms(report.percentile_ms(50.0)),
        ms(report.percentile_ms(99.0)),
        ms(report.percentile_ms(100.0)),
        report.error_count(),
        report.errors_of(Code::ResourceExhausted),
        per_flush(window.writes_per_flush),
        percent(window.cpu(0)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    );
}

fn print_store_put_summary(args: &StorePut, results: &[Measured<Mode>]) {
    print_summary_table(
        args.load.runs,
        results,
        &[Mode::GroupCommit, Mode::FlushPerWrite],
    );
    let ratios = per_run_ratios(results, Mode::GroupCommit, Mode::FlushPerWrite);
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
    let ratio = load::median(&ratios);
    println!(
        "\nGroup commit / flush per write, ops/s: **{}** (median of per-run ratios {})\n",
        ratio.map_or("n/a".to_owned(), |r| format!("{r:.1}×")),
        listed.join(", ")
    );

    let group_ops = median_of(results, Mode::GroupCommit, ops).unwrap_or(0.0);
    let group_p99 = median_of(results, Mode::GroupCommit, p99);
    println!(
        "Targets of issue 2 (stated for 256 clients): ≥ 20,000 ops/s {}; ≥ 10× flush per write {}; \
         p99 ≤ 15 ms {}.",
        met(group_ops >= 20_000.0),
        met(ratio.is_some_and(|r| r >= 10.0)),
        met(group_p99.is_some_and(|p| p <= 15.0)),
    );
}

// ---------------------------------------------------------------------------------------------
// session-get
// ---------------------------------------------------------------------------------------------

async fn session_get(args: SessionGet) -> anyhow::Result<()> {
    require_binaries(&[
        (STORE_BINARY, STORE_BINARY_ENV),
        SESSION_BINARY,
        ECHO_BINARY,
    ])?;
    // One set of servers for every run: the point is reads from actors that are already live.
    eprintln!(
        "setting up: store-svc, session-svc, {} sessions with {ITEMS_PER_READ_SESSION} items each ...",
        args.sessions
    );
    let store = StoreProcess::spawn(StoreOptions::new())
        .await
        .context("starting store-svc")?;
    let session = spawn_session_svc(&store, None).await?;
    let carts = cart_clients(&session, args.load.connections).await?;
    let keys = start_sessions(&carts, args.sessions as usize, ITEMS_PER_READ_SESSION).await?;
    // The echo server answers with a real session, so both reply with the same bytes.
    let canned = carts[0]
        .clone()
        .get_session(GetSessionRequest {
            key: keys[0].clone(),
        })
        .await
        .context("GetSession of a set-up session")?
        .into_inner()
        .encode_to_vec();
    let echo = ServiceProcess::spawn(
        &ServiceCommand::new(locate_binary(ECHO_BINARY.0, ECHO_BINARY.1)?)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--session")
            .arg(base64::engine::general_purpose::STANDARD.encode(&canned)),
    )
    .await
    .context("starting echo_server")?;
    let echo_carts = cart_clients(&echo, args.load.connections).await?;
    let keys = Arc::new(keys);
    // Every window samples all three, whichever is driven: store-svc should stay idle.
    let pids = [session.pid(), echo.pid(), store.pid()];

    print_session_get_header(&args, canned.len());
    println!("## Runs\n");
    println!(
        "| run | target | ops/s | p50 ms | p99 ms | max ms | errors | server CPU µs/op | session-svc CPU | echo CPU | store-svc CPU | loadgen CPU | other CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for run in 1..=args.load.runs {
        for target in alternate(run, [Reader::SessionSvc, Reader::Echo]) {
            eprintln!("run {run}/{}: {} ...", args.load.runs, target.label());
            let clients = match target {
                Reader::SessionSvc => carts.clone(),
                Reader::Echo => echo_carts.clone(),
            };
            let (report, window) = drive_gets(&args.load, clients, Arc::clone(&keys), &pids).await;
            let measured = Measured {
                run,
                target,
                report,
                window,
            };
            print_session_get_run(&measured);
            results.push(measured);
        }
    }
    print_errors(&results, "GetSession");
    print_session_get_summary(&args, &results);
    Ok(())
}

/// GetSession in a closed loop over `clients` (one per connection), keys round-robin.
async fn drive_gets(
    load: &LoadArgs,
    clients: Vec<CartApi>,
    keys: Arc<Vec<String>>,
    pids: &[u32],
) -> (LoadReport, WindowSample) {
    let config = load.config();
    let clients = Arc::new(clients);
    let tasks = config.clients as u64;
    let request = move |call: Call| {
        let mut client = clients[call.task % clients.len()].clone();
        // Each task starts at its own key and strides by the task count: all keys get read,
        // and no two tasks hammer one actor in lockstep.
        let index = (call.task as u64 + call.seq * tasks) % keys.len() as u64;
        let key = keys[index as usize].clone();
        async move {
            client
                .get_session(GetSessionRequest { key })
                .await
                .map(drop)
        }
    };
    tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, pids, None),
    )
}

fn print_session_get_header(args: &SessionGet, session_bytes: usize) {
    print_header_start(
        "session-svc warm reads: GetSession vs a bare tonic echo server",
        "store-svc, session-svc, echo_server and loadgen",
    );
    println!(
        "- set-up: one store-svc and one session-svc (defaults) for all runs; {} sessions started \
         with server-made keys and {ITEMS_PER_READ_SESSION} AddItems each, so every actor is live \
         before the first window",
        args.sessions
    );
    println!(
        "- echo: `echo_server`, a tonic server with TCP_NODELAY (as session-svc) and nothing else, \
         answering every GetSession with a clone of one real session fetched from session-svc \
         ({session_bytes} bytes encoded)"
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections per server; keys round-robin \
         over the {} sessions (the echo server ignores them); {:?} warm-up, {:?} measured; {} \
         run(s), target order alternating",
        args.load.clients,
        args.load.connections,
        args.sessions,
        args.load.warmup,
        args.load.duration,
        args.load.runs
    );
    println!(
        "- CPU in % of one core over the measured window, for every process whichever is driven; \
         \"server CPU µs/op\" is the driven server's CPU time per OK answer; \"other CPU\" is \
         everything else on the machine (noise)"
    );
    print_header_end();
}

fn print_session_get_run(measured: &Measured<Reader>) {
    let report = &measured.report;
    let window = &measured.window;
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        measured.run,
        measured.target.label(),
        report.ops_per_sec(),
        ms(report.percentile_ms(50.0)),
        ms(report.percentile_ms(99.0)),
        ms(report.percentile_ms(100.0)),
        report.error_count(),
        micros(server_cpu_per_op(measured)),
        percent(window.cpu(0)),
        percent(window.cpu(1)),
        percent(window.cpu(2)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    );
}

fn print_session_get_summary(args: &SessionGet, results: &[Measured<Reader>]) {
    print_summary_table(args.load.runs, results, &[Reader::SessionSvc, Reader::Echo]);
    let ratios = per_run_ratios(results, Reader::SessionSvc, Reader::Echo);
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let ratio = load::median(&ratios);
    println!(
        "\nsession-svc / echo, ops/s: **{}** (median of per-run ratios {})\n",
        ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}")),
        listed.join(", ")
    );
    let cpu_ratios: Vec<f64> = (1..=args.load.runs)
        .filter_map(|run| {
            let cost = |target| {
                results
                    .iter()
                    .find(|m| m.run == run && m.target == target)
                    .and_then(server_cpu_per_op)
            };
            Some(cost(Reader::Echo)? / cost(Reader::SessionSvc)?)
        })
        .collect();
    let listed: Vec<String> = cpu_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "Server CPU per GetSession, echo / session-svc: **{}** (median of per-run ratios {}; \
         less sensitive than ops/s to what else the machine runs, since the server and loadgen \
         share 2 cores with it)\n",
        load::median(&cpu_ratios).map_or("n/a".to_owned(), |r| format!("{r:.2}")),
        listed.join(", ")
    );
    println!(
        "Target of issue 3 (warm reads): ratio ≥ 0.8 {}; session-svc p99 {} ms (reported, no target).",
        met(ratio.is_some_and(|r| r >= 0.8)),
        ms(median_of(results, Reader::SessionSvc, p99)),
    );
}

// ---------------------------------------------------------------------------------------------
// session-add-item
// ---------------------------------------------------------------------------------------------

async fn session_add_item(args: SessionAddItem) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    eprintln!(
        "calibrating: the size of a cart after {} AddItems ...",
        calibration_adds(&args)
    );
    let cart_bytes = steady_cart_bytes(&args)
        .await
        .context("measuring a cart's size for the baseline")?;

    print_session_add_item_header(&args, cart_bytes);
    println!("## Runs\n");
    println!(
        "| run | target | ops/s | p50 ms | p99 ms | max ms | errors | writes/flush | session-svc CPU | store-svc CPU | loadgen CPU | other CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for run in 1..=args.load.runs {
        for target in alternate(run, [Writer::AddItem, Writer::StorePut]) {
            eprintln!("run {run}/{}: {} ...", args.load.runs, target.label());
            let (report, window) = match target {
                Writer::AddItem => drive_add_items(&args).await,
                Writer::StorePut => drive_puts(StoreOptions::new(), &args.load, cart_bytes).await,
            }
            .with_context(|| format!("session-add-item, {}", target.label()))?;
            let measured = Measured {
                run,
                target,
                report,
                window,
            };
            print_session_add_item_run(&measured);
            results.push(measured);
        }
    }
    print_errors(&results, "request");
    print_session_add_item_summary(&args, &results);
    Ok(())
}

/// Starts a fresh store-svc (defaults, plus `/metrics`) and session-svc, gives every client
/// its own session, and drives AddItem of quantity 1 over `skus` rotating skus. The sample's
/// servers are session-svc, then store-svc.
async fn drive_add_items(args: &SessionAddItem) -> anyhow::Result<(LoadReport, WindowSample)> {
    let metrics_addr = free_loopback_addr()?;
    let store = StoreProcess::spawn(
        StoreOptions::new()
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string()),
    )
    .await
    .context("starting store-svc")?;
    let session = spawn_session_svc(&store, args.log_limit).await?;
    let carts = cart_clients(&session, args.load.connections).await?;
    let keys = start_sessions(&carts, args.load.clients as usize, 0).await?;
    let carts = Arc::new(carts);
    let skus = u64::from(args.skus);
    let config = args.load.config();
    let request = move |call: Call| {
        let mut client = carts[call.task % carts.len()].clone();
        let add = add_item_request(&keys[call.task], (call.seq % skus) as u32);
        async move { client.add_item(add).await.map(drop) }
    };
    let pids = [session.pid(), store.pid()];
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, Some(metrics_addr)),
    ))
}

/// The encoded size of a cart that has had [`CALIBRATION_ADDS`] AddItems over `--skus` skus:
/// what session-svc Puts per AddItem once a cart's log is full, and so the baseline's value size.
async fn steady_cart_bytes(args: &SessionAddItem) -> anyhow::Result<usize> {
    let store = StoreProcess::spawn(StoreOptions::new())
        .await
        .context("starting store-svc")?;
    let session = spawn_session_svc(&store, args.log_limit).await?;
    let skus = args.skus;
    let adds = calibration_adds(args);
    let mut cart = cart_clients(&session, 1).await?.remove(0);
    let key = start_session(&mut cart, 0).await?;
    for seq in 0..adds {
        cart.add_item(add_item_request(&key, seq % skus))
            .await
            .context("AddItem")?;
    }
    let session = cart
        .get_session(GetSessionRequest { key })
        .await
        .context("GetSession")?;
    Ok(session.into_inner().encoded_len())
}

/// How many AddItems fill a cart's event log: [`CALIBRATION_ADDS`], or more for a longer log.
fn calibration_adds(args: &SessionAddItem) -> u32 {
    args.log_limit
        .map_or(CALIBRATION_ADDS, |limit| CALIBRATION_ADDS.max(limit))
}

fn print_session_add_item_header(args: &SessionAddItem, cart_bytes: usize) {
    print_header_start(
        "session-svc durable writes: AddItem end to end vs direct store-svc Put",
        "store-svc, session-svc and loadgen",
    );
    let session_flags = args
        .log_limit
        .map_or("defaults".to_owned(), |n| format!("`--log-limit {n}`"));
    println!(
        "- AddItem: a fresh store-svc (defaults: group commit) and session-svc ({session_flags}) \
         per run; each client starts its own session before the warm-up, then loops AddItem of \
         quantity 1 over {} rotating skus (the same sku adds up), no request_id; every OK means \
         the cart was Put to store-svc and flushed",
        args.skus
    );
    println!(
        "- baseline: a fresh store-svc (same defaults) per run, Puts of fresh keys with a \
         {cart_bytes}-byte value: the encoded size of a cart after {} AddItems over {} skus \
         (its event log full), i.e. about what session-svc Puts per AddItem in steady state",
        calibration_adds(args),
        args.skus
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections; {:?} warm-up, {:?} measured; \
         {} run(s), target order alternating",
        args.load.clients,
        args.load.connections,
        args.load.warmup,
        args.load.duration,
        args.load.runs
    );
    println!(
        "- latency: from sending the request to its OK (durable); CPU in % of one core over the \
         measured window (– where the process is not running); \"other CPU\" is everything else \
         on the machine (noise)"
    );
    print_header_end();
}

fn print_session_add_item_run(measured: &Measured<Writer>) {
    let report = &measured.report;
    let window = &measured.window;
    let (session_cpu, store_cpu) = match measured.target {
        Writer::AddItem => (percent(window.cpu(0)), percent(window.cpu(1))),
        Writer::StorePut => ("–".to_owned(), percent(window.cpu(0))),
    };
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        measured.run,
        measured.target.label(),
        report.ops_per_sec(),
        ms(report.percentile_ms(50.0)),
        ms(report.percentile_ms(99.0)),
        ms(report.percentile_ms(100.0)),
        report.error_count(),
        per_flush(window.writes_per_flush),
        session_cpu,
        store_cpu,
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    );
}

fn print_session_add_item_summary(args: &SessionAddItem, results: &[Measured<Writer>]) {
    print_summary_table(
        args.load.runs,
        results,
        &[Writer::AddItem, Writer::StorePut],
    );
    let ratios = per_run_ratios(results, Writer::AddItem, Writer::StorePut);
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\nAddItem / direct Put, ops/s: **{}** (median of per-run ratios {})\n",
        load::median(&ratios).map_or("n/a".to_owned(), |r| format!("{r:.2}")),
        listed.join(", ")
    );
    let add_ops = median_of(results, Writer::AddItem, ops).unwrap_or(0.0);
    let add_p99 = median_of(results, Writer::AddItem, p99);
    println!(
        "Targets of issue 3 (durable writes, stated for 256 clients): ≥ 15,000 ops/s {}; \
         p99 ≤ 20 ms {}.",
        met(add_ops >= 15_000.0),
        met(add_p99.is_some_and(|p| p <= 20.0)),
    );
}

// ---------------------------------------------------------------------------------------------
// Servers and set-up
// ---------------------------------------------------------------------------------------------

/// Starts session-svc in front of `store`: its defaults (no inherited `SESSION_*` setting),
/// but `--log-limit` when `log_limit` is given.
async fn spawn_session_svc(
    store: &StoreProcess,
    log_limit: Option<u32>,
) -> anyhow::Result<ServiceProcess> {
    let program = locate_binary(SESSION_BINARY.0, SESSION_BINARY.1)?;
    let command = ServiceCommand::new(program)
        .clear_env_prefix("SESSION_")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--store-addr")
        .arg(store.endpoint());
    let command = match log_limit {
        Some(entries) => command.arg("--log-limit").arg(entries.to_string()),
        None => command,
    };
    ServiceProcess::spawn(&command)
        .await
        .context("starting session-svc")
}

/// `count` independent HTTP/2 connections to `service`.
async fn connect(service: &ServiceProcess, count: u32) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count {
        let channel = service
            .channel()
            .await
            .with_context(|| format!("connecting to {} at {}", service.label(), service.addr()))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// One cart client per connection to `service`.
async fn cart_clients(service: &ServiceProcess, connections: u32) -> anyhow::Result<Vec<CartApi>> {
    let channels = connect(service, connections).await?;
    Ok(channels.into_iter().map(CartServiceClient::new).collect())
}

/// Starts `count` sessions with server-made keys and adds `items` skus to each, a few at a
/// time; returns their keys (in no particular order).
async fn start_sessions(
    carts: &[CartApi],
    count: usize,
    items: u32,
) -> anyhow::Result<Vec<String>> {
    let mut workers = JoinSet::new();
    for worker in 0..SETUP_WORKERS.min(count) {
        let mut cart = carts[worker % carts.len()].clone();
        workers.spawn(async move {
            let mut keys = Vec::new();
            for shopper in (worker..count).step_by(SETUP_WORKERS) {
                let key = start_session(&mut cart, shopper).await?;
                for sku in 0..items {
                    cart.add_item(add_item_request(&key, sku))
                        .await
                        .context("AddItem while setting up")?;
                }
                keys.push(key);
            }
            anyhow::Ok(keys)
        });
    }
    let mut keys = Vec::with_capacity(count);
    while let Some(started) = workers.join_next().await {
        keys.extend(started??);
    }
    Ok(keys)
}

/// Opens one session like a shop would (the server makes the key) and returns its key.
async fn start_session(cart: &mut CartApi, shopper: usize) -> anyhow::Result<String> {
    let session = cart
        .start_session(StartSessionRequest {
            key: String::new(),
            domain: "shop.example".to_owned(),
            landing: "/products/loadgen".to_owned(),
            ip: "203.0.113.7".to_owned(),
            member_id: format!("member-{shopper}"),
        })
        .await
        .context("StartSession")?;
    Ok(session.into_inner().key)
}

/// AddItem of one unit of sku number `sku` (each sku has its own fixed price, as a line must).
fn add_item_request(key: &str, sku: u32) -> AddItemRequest {
    AddItemRequest {
        key: key.to_owned(),
        sku: format!("SKU-{sku:03}"),
        name: format!("Loadgen item {sku}"),
        quantity: 1,
        unit_price: Some(Money {
            currency_code: "USD".to_owned(),
            minor_units: 1000 + i64::from(sku),
        }),
        request_id: String::new(),
    }
}

/// A loopback port free right now, for store-svc's `/metrics` (which does not announce its
/// address). Another process could take it before store-svc binds; then startup fails loudly.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

// ---------------------------------------------------------------------------------------------
// Measuring and reporting
// ---------------------------------------------------------------------------------------------

/// Reads the CPU times of `pids`, this process and the machine, and store-svc's write/flush
/// counters at `metrics` if given, at the start and end of the measured window.
async fn sample_window(
    config: &LoadConfig,
    pids: &[u32],
    metrics: Option<SocketAddr>,
) -> WindowSample {
    let servers = || -> Vec<Option<Duration>> {
        pids.iter()
            .map(|&pid| load::process_cpu_time(pid).ok())
            .collect()
    };
    let scrape = || async move {
        match metrics {
            Some(addr) => load::scrape_metrics(addr).await.ok(),
            None => None,
        }
    };
    tokio::time::sleep(config.warmup).await;
    let servers_before = servers();
    let own_before = load::own_cpu_time().ok();
    let machine_before = load::machine_busy_time().ok();
    let metrics_before = scrape().await;
    tokio::time::sleep(config.duration).await;
    let servers_after = servers();
    let own_after = load::own_cpu_time().ok();
    let machine_after = load::machine_busy_time().ok();
    let metrics_after = scrape().await;

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
    let server_cpu: Vec<Option<f64>> = servers_before
        .into_iter()
        .zip(servers_after)
        .map(|(before, after)| percent(before, after))
        .collect();
    let loadgen_cpu = percent(own_before, own_after);
    let servers_total: Option<f64> = server_cpu.iter().copied().sum();
    let other_cpu = percent(machine_before, machine_after)
        .zip(servers_total.zip(loadgen_cpu))
        .map(|(machine, (servers, own))| (machine - servers - own).max(0.0));
    WindowSample {
        server_cpu,
        loadgen_cpu,
        other_cpu,
        writes_per_flush,
    }
}

/// The title and what every benchmark states first: how to reproduce it and on what machine.
fn print_header_start(title: &str, sharing: &str) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# {title}\n");
    println!("- command: `{BUILD_FIRST} && {}`", command_line());
    println!("- date: {}", utc_now());
    println!("- available parallelism: {cores} (shared by {sharing}, so figures are noisy)");
    println!(
        "- load average at start (1, 5, 15 min): {}",
        load_average().unwrap_or_else(|| "n/a".to_owned())
    );
}

/// Ends the header list (with a warning when the figures come from a debug build).
fn print_header_end() {
    if cfg!(debug_assertions) {
        println!("- **warning: a debug build; use `--release` for figures worth keeping**");
    }
    println!();
}

/// The first three fields of `/proc/loadavg` (Linux only).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// Lists the non-OK answers of every run, by code; or says there were none.
fn print_errors<T: Target>(results: &[Measured<T>], what: &str) {
    let failed: Vec<_> = results
        .iter()
        .filter(|m| m.report.error_count() > 0 || m.report.unfinished > 0)
        .collect();
    if failed.is_empty() {
        println!("\nNo errors: every measured {what} answered OK.\n");
        return;
    }
    println!("\nErrors:\n");
    for m in failed {
        let mut seen = m.report.error_summary();
        if m.report.unfinished > 0 {
            seen.push(format!(
                "{} clients never got an answer",
                m.report.unfinished
            ));
        }
        println!("- run {} {}: {}", m.run, m.target.label(), seen.join("; "));
    }
    println!();
}

/// The `## Summary` table: each target's median ops/s, p50 and p99 over the runs.
fn print_summary_table<T: Target>(runs: u32, results: &[Measured<T>], targets: &[T]) {
    println!("## Summary (median of {runs} runs)\n");
    println!("| target | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for &target in targets {
        println!(
            "| {} | {:.0} | {} | {} |",
            target.label(),
            median_of(results, target, ops).unwrap_or(0.0),
            ms(median_of(results, target, p50)),
            ms(median_of(results, target, p99)),
        );
    }
}

/// The median over the runs of `stat` of `target`'s reports.
fn median_of<T: Target>(
    results: &[Measured<T>],
    target: T,
    stat: fn(&LoadReport) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = results
        .iter()
        .filter(|m| m.target == target)
        .filter_map(|m| stat(&m.report))
        .collect();
    load::median(&values)
}

/// For every run that measured both, `numerator`'s ops/s over `denominator`'s.
fn per_run_ratios<T: Target>(results: &[Measured<T>], numerator: T, denominator: T) -> Vec<f64> {
    let mut runs: Vec<u32> = results.iter().map(|m| m.run).collect();
    runs.dedup();
    runs.into_iter()
        .filter_map(|run| {
            let ops_of = |target| {
                results
                    .iter()
                    .find(|m| m.run == run && m.target == target)
                    .map(|m| m.report.ops_per_sec())
            };
            let (top, bottom) = (ops_of(numerator)?, ops_of(denominator)?);
            (bottom > 0.0).then_some(top / bottom)
        })
        .collect()
}

fn ops(report: &LoadReport) -> Option<f64> {
    Some(report.ops_per_sec())
}

fn p50(report: &LoadReport) -> Option<f64> {
    report.percentile_ms(50.0)
}

fn p99(report: &LoadReport) -> Option<f64> {
    report.percentile_ms(99.0)
}

/// `met` or `NOT met`, for target lines.
fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Milliseconds with two decimals, or `n/a`.
fn ms(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
}

/// A CPU share as `123%`, or `n/a`.
fn percent(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.0}%"))
}

/// The driven server's CPU time per answered GetSession, in microseconds.
fn server_cpu_per_op(measured: &Measured<Reader>) -> Option<f64> {
    let cpu = measured.window.cpu(measured.target.cpu_index())?;
    let ops = measured.report.ops_per_sec();
    (ops > 0.0).then(|| cpu / 100.0 * 1e6 / ops)
}

/// Microseconds with one decimal, or `n/a`.
fn micros(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.1}"))
}

/// Writes per flush with one decimal, or `n/a`.
fn per_flush(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |n| format!("{n:.1}"))
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
        let Bench::StorePut(args) = cli.bench else {
            panic!("not store-put: {:?}", cli.bench)
        };
        assert_eq!(args.load.clients, 64);
        assert_eq!(args.load.duration, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["loadgen", "store-put", "--duration", "2h"]).is_err());
    }

    #[test]
    fn the_session_benchmarks_default_to_the_issue_s_shape() {
        let cli = Cli::try_parse_from(["loadgen", "session-get"]).unwrap();
        let Bench::SessionGet(args) = cli.bench else {
            panic!("not session-get: {:?}", cli.bench)
        };
        assert_eq!((args.load.clients, args.load.connections), (256, 8));
        assert_eq!((args.load.runs, args.sessions), (3, 1000));
        assert_eq!(args.load.warmup, Duration::from_secs(2));

        let cli = Cli::try_parse_from(["loadgen", "session-add-item", "--skus", "5"]).unwrap();
        let Bench::SessionAddItem(args) = cli.bench else {
            panic!("not session-add-item: {:?}", cli.bench)
        };
        assert_eq!((args.load.clients, args.skus), (256, 5));
        assert!(Cli::try_parse_from(["loadgen", "session-add-item", "--skus", "501"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "session-get", "--sessions", "0"]).is_err());
    }

    #[test]
    fn the_first_target_alternates_between_runs() {
        assert_eq!(alternate(1, ['a', 'b']), ['a', 'b']);
        assert_eq!(alternate(2, ['a', 'b']), ['b', 'a']);
        assert_eq!(alternate(3, ['a', 'b']), ['a', 'b']);
    }
}
