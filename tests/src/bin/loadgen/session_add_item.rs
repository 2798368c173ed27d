//! `session-add-item`: durable AddItem end to end (session-svc → store-svc), with session-svc's
//! writes to the store batched (its default) against the same with one Put call per write.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use prost::Message;
use proto::session::v1::GetSessionRequest;
use tests::{
    StoreOptions, StoreProcess,
    load::{self, Call, LoadReport, free_loopback_addr},
    store::{STORE_BINARY, STORE_BINARY_ENV},
};

/// session-svc's flag that turns write batching off: every write its own Put call.
const UNBATCHED: &str = "--store-batch-writes=1";

use crate::{
    LoadArgs,
    carts::{add_item_request, cart_clients, start_session, start_sessions},
    measure::{Measured, Target, WindowSample, measure_runs, sample_window},
    report::{
        Layout, SummaryColumn, bytes, median_of, met, micros, ops, p99, per_flush, percent,
        print_header_end, print_header_start, print_summary,
    },
    servers::{SESSION_BINARY, require_binaries, spawn_session_svc},
};

/// AddItems on one cart before its size is taken (at least): past session-svc's default log
/// limit (100 entries), so the cart is as large as it gets in a long measurement.
const CALIBRATION_ADDS: u32 = 200;

#[derive(Debug, Args)]
pub struct SessionAddItem {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Skus each client cycles through: repeats add up on one line, so a cart stays far below
    /// its 500-line cap however long the run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub skus: u32,
    /// session-svc `--log-limit` (events kept per cart); its default when not set. Every
    /// AddItem logs an event, so this sets how large the cart Put to store-svc grows.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub log_limit: Option<u32>,
}

/// What `session-add-item` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// AddItem through session-svc on its defaults: concurrent actors' cart writes share one
    /// BatchWrite to store-svc.
    Batched,
    /// The same with `--store-batch-writes=1`: each cart write is its own Put call.
    Unbatched,
}

impl Target for Writer {
    const PAIR: [Self; 2] = [Writer::Batched, Writer::Unbatched];

    fn label(self) -> &'static str {
        match self {
            Writer::Batched => "AddItem, writes batched (default)",
            Writer::Unbatched => "AddItem, one Put per write",
        }
    }
}

const LAYOUT: Layout<Writer> = Layout {
    target_column: "target",
    extra_columns: &[
        "server CPU µs/op",
        "disk B/op",
        "writes/batch",
        "writes/flush",
        "session-svc CPU",
        "store-svc CPU",
        "loadgen CPU",
        "other CPU",
    ],
    extra_cells: run_cells,
    summary_columns: &[
        SummaryColumn {
            name: "server CPU µs/op",
            stat: server_cpu_per_op,
            format: micros,
        },
        SummaryColumn {
            name: "disk B/op",
            stat: disk_per_op,
            format: bytes,
        },
    ],
    request: "request",
    ratio: "batched / unbatched",
    ratio_decimals: 2,
    ratio_unit: "",
};

pub async fn run(args: SessionAddItem) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    eprintln!(
        "calibrating: the size of a cart after {} AddItems ...",
        calibration_adds(&args)
    );
    let cart_bytes = steady_cart_bytes(&args)
        .await
        .context("measuring a cart's size for the baseline")?;

    print_header(&args, cart_bytes);
    let results = measure_runs(
        "session-add-item",
        args.load.runs,
        &Writer::PAIR,
        &LAYOUT,
        |target| {
            let args = &args;
            async move { drive_add_items(args, target).await }
        },
    )
    .await?;
    print_summary(&LAYOUT, args.load.runs, &Writer::PAIR, &results);
    let add_ops = median_of(&results, Writer::Batched, ops).unwrap_or(0.0);
    let add_p99 = median_of(&results, Writer::Batched, p99);
    println!(
        "Targets of issue 3 (durable writes, stated for 256 clients): ≥ 15,000 ops/s {}; \
         p99 ≤ 20 ms {}.",
        met(add_ops >= 15_000.0),
        met(add_p99.is_some_and(|p| p <= 20.0)),
    );
    Ok(())
}

/// Starts a fresh store-svc (defaults, plus `/metrics`) and session-svc (batching as `writer`
/// says, plus `/metrics`), gives every client its own session, and drives AddItem of quantity 1
/// over `skus` rotating skus. The sample's servers are session-svc, then store-svc.
async fn drive_add_items(
    args: &SessionAddItem,
    writer: Writer,
) -> anyhow::Result<(LoadReport, WindowSample)> {
    let store_metrics = free_loopback_addr()?;
    let store = StoreProcess::spawn(
        StoreOptions::new()
            .arg("--metrics-listen")
            .arg(store_metrics.to_string()),
    )
    .await
    .context("starting store-svc")?;
    let session_metrics = free_loopback_addr()?;
    let mut session_args = vec![format!("--metrics-listen={session_metrics}")];
    if writer == Writer::Unbatched {
        session_args.push(UNBATCHED.to_owned());
    }
    let session = spawn_session_svc(&store, args.log_limit, &session_args).await?;
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
    let metrics = [store_metrics, session_metrics];
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, &metrics),
    ))
}

/// The encoded size of a cart that has had [`CALIBRATION_ADDS`] AddItems over `--skus` skus:
/// about what session-svc writes per AddItem once a cart's log is full.
async fn steady_cart_bytes(args: &SessionAddItem) -> anyhow::Result<usize> {
    let store = StoreProcess::spawn(StoreOptions::new())
        .await
        .context("starting store-svc")?;
    let session = spawn_session_svc(&store, args.log_limit, &[]).await?;
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

fn print_header(args: &SessionAddItem, cart_bytes: usize) {
    print_header_start(
        "session-svc durable writes: AddItem end to end, store writes batched vs unbatched",
        "store-svc, session-svc and loadgen",
    );
    let session_flags = args
        .log_limit
        .map_or("defaults".to_owned(), |n| format!("`--log-limit {n}`"));
    println!(
        "- each run: a fresh store-svc (defaults: group commit) and session-svc ({session_flags}; \
         unbatched adds `{UNBATCHED}`); each client starts its own session before the warm-up, \
         then loops AddItem of quantity 1 over {} rotating skus (the same sku adds up), no \
         request_id; every OK means the cart was written to store-svc and flushed",
        args.skus
    );
    println!(
        "- a cart is {cart_bytes} bytes once its event log is full (after {} AddItems over {} \
         skus): about what session-svc writes per AddItem in steady state",
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
         measured window; \"server CPU µs/op\" is session-svc's and store-svc's together per OK \
         AddItem; \"disk B/op\" is what store-svc sent to disk per OK AddItem (`write_bytes` of \
         /proc/PID/io: whole pages, file system journal not included); \"other CPU\" is \
         everything else on the machine (noise)"
    );
    print_header_end();
}

/// A run row's cells after the common ones.
fn run_cells(measured: &Measured<Writer>) -> Vec<String> {
    let window = &measured.window;
    vec![
        micros(server_cpu_per_op(measured)),
        bytes(disk_per_op(measured)),
        per_flush(window.writes_per_batch),
        per_flush(window.writes_per_flush),
        percent(window.cpu(0)),
        percent(window.cpu(1)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    ]
}

/// session-svc's and store-svc's CPU time per OK AddItem, in µs.
fn server_cpu_per_op(measured: &Measured<Writer>) -> Option<f64> {
    measured.cpu_micros_per_op(&[0, 1])
}

/// Bytes store-svc sent to disk per OK AddItem.
fn disk_per_op(measured: &Measured<Writer>) -> Option<f64> {
    measured.written_per_op(1)
}
