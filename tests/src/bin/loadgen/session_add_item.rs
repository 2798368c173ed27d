//! `session-add-item`: durable AddItem end to end (session-svc → store-svc), with session-svc's
//! writes to the store batched (its default) against the same with one Put call per write, and
//! against the baseline `redis_cart`: a stateless CartService over a Redis that fsyncs every
//! write (when `redis-server` is installed; skipped, with the command to install it, when not).

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context;
use clap::Args;
use prost::Message;
use proto::session::v1::GetSessionRequest;
use tests::{
    ServiceProcess, StoreOptions, StoreProcess,
    load::{self, Call, LoadReport},
    store::{STORE_BINARY, STORE_BINARY_ENV},
};

/// session-svc's flag that turns write batching off: every write its own Put call.
const UNBATCHED: &str = "--store-batch-writes=1";

use crate::{
    LoadArgs,
    carts::{add_item_request, cart_clients, start_session, start_sessions},
    measure::{Measured, Target, WindowSample, measure_runs, sample_window},
    redis_server::{DURABLE_FLAGS, INSTALL_REDIS, RedisServer, find_redis_server},
    report::{
        Layout, SummaryColumn, bytes, median_of, met, micros, ops, p99, per_flush, percent,
        print_header_end, print_header_start, print_ratio, print_summary,
    },
    servers::{
        REDIS_CART_BINARY, SESSION_BINARY, require_binaries, spawn_metered_stack, spawn_redis_cart,
        spawn_session_svc,
    },
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
    /// session-svc `--log-limit` (latest events a cart shows and keeps in its record); its
    /// default (20) when not set. Every AddItem logs an event, so this sets how large the cart
    /// record committed to store-svc grows; redis_cart keeps the same number.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_limit: Option<u32>,
    /// Send AddItems without a request_id. By default each carries a unique one, as the
    /// README tells clients to; session-svc then remembers the latest 64 ids (id, RPC and a
    /// fingerprint, no replies) in the cart's record.
    #[arg(long)]
    pub no_request_ids: bool,
}

/// What `session-add-item` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// AddItem through session-svc on its defaults: concurrent actors' cart writes share one
    /// BatchWrite to store-svc.
    Batched,
    /// The same with `--store-batch-writes=1`: each cart write is its own Put call.
    Unbatched,
    /// The baseline: `redis_cart`, one Lua script per AddItem in a Redis with
    /// `appendfsync always`.
    Redis,
}

impl Target for Writer {
    const PAIR: [Self; 2] = [Writer::Batched, Writer::Unbatched];

    fn label(self) -> &'static str {
        match self {
            Writer::Batched => "AddItem, writes batched (default)",
            Writer::Unbatched => "AddItem, one Put per write",
            Writer::Redis => "AddItem, redis_cart over Redis",
        }
    }
}

/// Where the processes of a window sample sit: every target has a service in front (session-svc
/// or redis_cart) and a storage process behind it (store-svc or redis-server).
const SERVICE: usize = 0;
const STORAGE: usize = 1;

const LAYOUT: Layout<Writer> = Layout {
    target_column: "target",
    extra_columns: &[
        "server CPU µs/op",
        "disk B/op",
        "writes/batch",
        "writes/flush",
        "service CPU",
        "storage CPU",
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
    let redis = find_redis_server();
    match redis {
        Some(_) => require_binaries(&[REDIS_CART_BINARY])?,
        None => eprintln!(
            "redis-server is not installed: the Redis contender is skipped (`{INSTALL_REDIS}`)"
        ),
    }
    let mut targets = Writer::PAIR.to_vec();
    targets.extend(redis.is_some().then_some(Writer::Redis));
    eprintln!(
        "calibrating: the size of a cart after {} AddItems ...",
        calibration_adds(&args)
    );
    let cart_bytes = session_svc_cart_bytes(&args)
        .await
        .context("measuring a cart's size for the baseline")?;
    let redis_cart_bytes = match &redis {
        Some(program) => Some(
            redis_cart_bytes(&args, program)
                .await
                .context("measuring a redis_cart cart's size")?,
        ),
        None => None,
    };

    print_header(&args, cart_bytes, redis_cart_bytes);
    let results = measure_runs(
        "session-add-item",
        args.load.runs,
        &targets,
        &LAYOUT,
        |target| {
            let (args, redis) = (&args, redis.as_deref());
            async move { drive_add_items(args, target, redis).await }
        },
    )
    .await?;
    print_summary(&LAYOUT, args.load.runs, &targets, &results);
    if redis.is_some() {
        print_ratio(
            &LAYOUT,
            &results,
            Writer::Batched,
            Writer::Redis,
            "session-svc (batched) / redis_cart",
        );
        println!();
    }
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

/// Starts fresh servers for `writer` and drives AddItems at them ([`drive`]): a store-svc
/// (defaults, plus `/metrics`) and a session-svc (batching as `writer` says, plus `/metrics`),
/// or a durable Redis (`redis` is `redis-server`) and a redis_cart.
async fn drive_add_items(
    args: &SessionAddItem,
    writer: Writer,
    redis: Option<&Path>,
) -> anyhow::Result<(LoadReport, WindowSample)> {
    if writer == Writer::Redis {
        let program = redis.context("redis-server is not installed")?;
        let redis = RedisServer::spawn(program).await?;
        let cart = spawn_redis_cart(&redis, args.log_limit).await?;
        return drive(args, &cart, [cart.pid(), redis.pid()], &[]).await;
    }
    let extra = match writer {
        Writer::Unbatched => vec![UNBATCHED.to_owned()],
        _ => Vec::new(),
    };
    let (store, session, metrics) = spawn_metered_stack(args.log_limit, &extra).await?;
    drive(args, &session, [session.pid(), store.pid()], &metrics).await
}

/// Gives every client its own session on `service`, and drives AddItem of quantity 1 over
/// `--skus` rotating skus, each with a unique request id unless `--no-request-ids`. `pids` are
/// the service's, then its storage's; `metrics` the `/metrics` endpoints to scrape.
async fn drive(
    args: &SessionAddItem,
    service: &ServiceProcess,
    pids: [u32; 2],
    metrics: &[SocketAddr],
) -> anyhow::Result<(LoadReport, WindowSample)> {
    let carts = cart_clients(service, args.load.connections).await?;
    let keys = start_sessions(&carts, args.load.clients as usize, 0).await?;
    let carts = Arc::new(carts);
    let skus = u64::from(args.skus);
    let request_ids = !args.no_request_ids;
    let config = args.load.config();
    let request = move |call: Call| {
        let mut client = carts[call.task % carts.len()].clone();
        let mut add = add_item_request(&keys[call.task], (call.seq % skus) as u32);
        if request_ids {
            // Unique per server: each task has its own session, and servers are fresh per run.
            add.request_id = format!("loadgen-{}-{}", call.task, call.seq);
        }
        async move { client.add_item(add).await.map(drop) }
    };
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, metrics),
    ))
}

/// The encoded size of a session-svc cart after [`calibration_adds`]: about what session-svc
/// writes per AddItem once a cart's log is full (without its remembered request ids).
async fn session_svc_cart_bytes(args: &SessionAddItem) -> anyhow::Result<usize> {
    let store = StoreProcess::spawn(StoreOptions::new())
        .await
        .context("starting store-svc")?;
    let session = spawn_session_svc(&store, args.log_limit, &[]).await?;
    steady_cart_bytes(args, &session).await
}

/// The same for redis_cart, whose reply should be the same size.
async fn redis_cart_bytes(args: &SessionAddItem, redis: &Path) -> anyhow::Result<usize> {
    let redis = RedisServer::spawn(redis).await?;
    let cart = spawn_redis_cart(&redis, args.log_limit).await?;
    steady_cart_bytes(args, &cart).await
}

/// The encoded size of a cart on `service` that has had [`calibration_adds`] AddItems over
/// `--skus` skus.
async fn steady_cart_bytes(
    args: &SessionAddItem,
    service: &ServiceProcess,
) -> anyhow::Result<usize> {
    let skus = args.skus;
    let adds = calibration_adds(args);
    let mut cart = cart_clients(service, 1).await?.remove(0);
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

fn print_header(args: &SessionAddItem, cart_bytes: usize, redis_cart_bytes: Option<usize>) {
    print_header_start(
        "session-svc durable writes: AddItem end to end, store writes batched vs unbatched vs \
         a stateless service over Redis",
        "the servers and loadgen",
    );
    let session_flags = args
        .log_limit
        .map_or("defaults".to_owned(), |n| format!("`--log-limit {n}`"));
    let request_ids = if args.no_request_ids {
        "no request_id"
    } else {
        "each with a unique request_id"
    };
    println!(
        "- each run: fresh servers, a store-svc (defaults: group commit) and session-svc \
         ({session_flags}; unbatched adds `{UNBATCHED}`); each client starts its own session \
         before the warm-up, then loops AddItem of quantity 1 over {} rotating skus (the same \
         sku adds up), {request_ids}; every OK means the cart and its new event were committed \
         to store-svc, flushed and fsynced",
        args.skus
    );
    println!(
        "- a cart is {cart_bytes} bytes once its event log is full (after {} AddItems over {} \
         skus): what session-svc commits per AddItem in steady state, with the remembered \
         request ids (about 40 bytes each) and one event record",
        calibration_adds(args),
        args.skus
    );
    match redis_cart_bytes {
        Some(redis_bytes) => println!(
            "- redis_cart: a `redis-server {}` on loopback (an OK means the AOF was fsynced; no \
             RDB, no AOF rewrite during a run) and `redis_cart` (the same log limit), one Lua \
             script per AddItem that dedups the request id, edits the cart (one JSON document), \
             writes it back and appends the event to the cart's history list (trimmed to \
             10,000); it remembers request ids only, like session-svc (a retry gets the current \
             cart); after the same AddItems its reply is {redis_bytes} bytes",
            DURABLE_FLAGS
                .iter()
                .map(|flag| if flag.is_empty() { "''" } else { flag })
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => {
            println!("- redis_cart: **skipped**, redis-server is not installed (`{INSTALL_REDIS}`)")
        }
    }
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections; {:?} warm-up, {:?} measured; \
         {} run(s), target order rotating",
        args.load.clients,
        args.load.connections,
        args.load.warmup,
        args.load.duration,
        args.load.runs
    );
    println!(
        "- latency: from sending the request to its OK (durable); CPU in % of one core over the \
         measured window; \"service\" is session-svc or redis_cart, \"storage\" store-svc or \
         redis-server; \"server CPU µs/op\" is both together per OK AddItem; \"disk B/op\" is \
         what storage sent to disk per OK AddItem (`write_bytes` of /proc/PID/io: whole pages, \
         file system journal not included); \"other CPU\" is everything else on the machine \
         (noise)"
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
        percent(window.cpu(SERVICE)),
        percent(window.cpu(STORAGE)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    ]
}

/// The service's and its storage's CPU time per OK AddItem, in µs.
fn server_cpu_per_op(measured: &Measured<Writer>) -> Option<f64> {
    measured.cpu_micros_per_op(&[SERVICE, STORAGE])
}

/// Bytes the storage process sent to disk per OK AddItem.
fn disk_per_op(measured: &Measured<Writer>) -> Option<f64> {
    measured.written_per_op(STORAGE)
}
