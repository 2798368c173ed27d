//! `session-get`: warm reads, GetSession on live session-svc actors vs a bare tonic echo
//! server answering with the same bytes, and vs `redis_cart` reading carts of the same shape
//! from Redis (when `redis-server` is installed), the same clients driving all three.

use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use prost::Message;
use proto::session::v1::GetSessionRequest;
use tests::{
    ServiceCommand, ServiceProcess, StoreOptions, StoreProcess,
    load::{self, Call, LoadReport},
    locate_binary,
    store::{STORE_BINARY, STORE_BINARY_ENV},
};

use crate::{
    LoadArgs,
    carts::{CartApi, cart_clients, start_sessions},
    measure::{Measured, Target, WindowSample, measure_runs, sample_window},
    redis_server::{INSTALL_REDIS, RedisServer, find_redis_server},
    report::{
        Layout, SummaryColumn, median_of, met, micros, ms, p99, percent, print_header_end,
        print_header_start, print_ratio, print_summary,
    },
    servers::{
        ECHO_BINARY, REDIS_CART_BINARY, SESSION_BINARY, require_binaries, spawn_redis_cart,
        spawn_session_svc,
    },
};

/// Line items each `session-get` session holds, so reads return a realistic cart.
const ITEMS_PER_READ_SESSION: u32 = 3;

#[derive(Debug, Args)]
pub struct SessionGet {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Sessions started (3 items each) before measuring; reads go round-robin over them.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sessions: u32,
}

/// Who answers GetSession in `session-get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    /// session-svc, from its live actors.
    SessionSvc,
    /// The bare tonic server with a canned answer: the floor.
    Echo,
    /// `redis_cart`: one Lua script (a GET) per read, the cart parsed and converted per read.
    Redis,
}

impl Target for Reader {
    const PAIR: [Self; 2] = [Reader::SessionSvc, Reader::Echo];

    fn label(self) -> &'static str {
        match self {
            Reader::SessionSvc => "session-svc",
            Reader::Echo => "echo",
            Reader::Redis => "redis_cart",
        }
    }
}

/// Where each server sits in a `session-get` window sample (every window samples all).
const SESSION_SVC: usize = 0;
const ECHO: usize = 1;
const STORE_SVC: usize = 2;
const REDIS_CART: usize = 3;
const REDIS_SERVER: usize = 4;

impl Reader {
    /// The processes that answer this target's reads, in a window sample.
    fn cpu_indices(self) -> &'static [usize] {
        match self {
            Reader::SessionSvc => &[SESSION_SVC],
            Reader::Echo => &[ECHO],
            Reader::Redis => &[REDIS_CART, REDIS_SERVER],
        }
    }
}

const LAYOUT: Layout<Reader> = Layout {
    target_column: "target",
    extra_columns: &[
        "server CPU µs/op",
        "session-svc CPU",
        "echo CPU",
        "store-svc CPU",
        "redis_cart CPU",
        "redis-server CPU",
        "loadgen CPU",
        "other CPU",
    ],
    extra_cells: run_cells,
    summary_columns: &[SummaryColumn {
        name: "server CPU µs/op",
        stat: server_cpu_per_op,
        format: micros,
    }],
    request: "GetSession",
    ratio: "session-svc / echo",
    ratio_decimals: 2,
    ratio_unit: "",
};

pub async fn run(args: SessionGet) -> anyhow::Result<()> {
    require_binaries(&[
        (STORE_BINARY, STORE_BINARY_ENV),
        SESSION_BINARY,
        ECHO_BINARY,
    ])?;
    let redis_program = find_redis_server();
    match redis_program {
        Some(_) => require_binaries(&[REDIS_CART_BINARY])?,
        None => eprintln!(
            "redis-server is not installed: the Redis contender is skipped (`{INSTALL_REDIS}`)"
        ),
    }
    // One set of servers for every run: the point is reads from actors that are already live.
    eprintln!(
        "setting up: store-svc, session-svc, {} sessions with {ITEMS_PER_READ_SESSION} items each ...",
        args.sessions
    );
    let store = StoreProcess::spawn(StoreOptions::new())
        .await
        .context("starting store-svc")?;
    let session = spawn_session_svc(&store, None, &[]).await?;
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
    // The same sessions again in Redis, behind redis_cart.
    let redis = match &redis_program {
        Some(program) => Some(RedisReads::set_up(&args, program).await?),
        None => None,
    };
    let mut targets = Reader::PAIR.to_vec();
    targets.extend(redis.is_some().then_some(Reader::Redis));
    // Every window samples all of them, whichever is driven: store-svc should stay idle.
    let mut pids = vec![session.pid(), echo.pid(), store.pid()];
    if let Some(redis) = &redis {
        pids.extend([redis.cart.pid(), redis.server.pid()]);
    }

    print_header(&args, canned.len(), redis.as_ref().map(|r| r.session_bytes));
    let results = measure_runs("session-get", args.load.runs, &targets, &LAYOUT, |target| {
        let (clients, keys) = match (target, &redis) {
            (Reader::SessionSvc, _) => (carts.clone(), Arc::clone(&keys)),
            (Reader::Echo, _) => (echo_carts.clone(), Arc::clone(&keys)),
            (Reader::Redis, Some(redis)) => (redis.carts.clone(), Arc::clone(&redis.keys)),
            (Reader::Redis, None) => unreachable!("the Redis target is measured with Redis"),
        };
        drive_gets(&args.load, clients, keys, &pids)
    })
    .await?;
    let ratio = print_summary(&LAYOUT, args.load.runs, &targets, &results);
    print_cpu_ratio(&args, &results);
    if redis.is_some() {
        let over_redis = print_ratio(
            &LAYOUT,
            &results,
            Reader::SessionSvc,
            Reader::Redis,
            "session-svc / redis_cart",
        );
        println!(
            "\nTarget (GetSession at ≥ 2× the Redis baseline): {}.\n",
            met(over_redis.is_some_and(|r| r >= 2.0))
        );
    }
    println!(
        "Target of issue 3 (warm reads): ratio ≥ 0.8 {}; session-svc p99 {} ms (reported, no target).",
        met(ratio.is_some_and(|r| r >= 0.8)),
        ms(median_of(&results, Reader::SessionSvc, p99)),
    );
    Ok(())
}

/// The Redis contender's processes and sessions, set up once for all runs like session-svc's.
struct RedisReads {
    server: RedisServer,
    cart: ServiceProcess,
    carts: Vec<CartApi>,
    keys: Arc<Vec<String>>,
    /// The encoded size of one of its sessions, to compare with session-svc's.
    session_bytes: usize,
}

impl RedisReads {
    async fn set_up(args: &SessionGet, program: &std::path::Path) -> anyhow::Result<Self> {
        eprintln!(
            "setting up: redis-server, redis_cart, the same {} sessions ...",
            args.sessions
        );
        let server = RedisServer::spawn(program).await?;
        let cart = spawn_redis_cart(&server, None).await?;
        let carts = cart_clients(&cart, args.load.connections).await?;
        let keys = start_sessions(&carts, args.sessions as usize, ITEMS_PER_READ_SESSION).await?;
        let session_bytes = carts[0]
            .clone()
            .get_session(GetSessionRequest {
                key: keys[0].clone(),
            })
            .await
            .context("GetSession of a set-up session from redis_cart")?
            .into_inner()
            .encoded_len();
        Ok(Self {
            server,
            cart,
            carts,
            keys: Arc::new(keys),
            session_bytes,
        })
    }
}

/// GetSession in a closed loop over `clients` (one per connection), keys round-robin.
async fn drive_gets(
    load: &LoadArgs,
    clients: Vec<CartApi>,
    keys: Arc<Vec<String>>,
    pids: &[u32],
) -> anyhow::Result<(LoadReport, WindowSample)> {
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
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, pids, &[]),
    ))
}

fn print_header(args: &SessionGet, session_bytes: usize, redis_bytes: Option<usize>) {
    print_header_start(
        "session-svc warm reads: GetSession vs a bare tonic echo server and vs Redis",
        "the servers and loadgen",
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
    match redis_bytes {
        Some(bytes) => println!(
            "- redis_cart: a durable `redis-server` (appendfsync always) and `redis_cart` for all \
             runs, the same number of sessions set up the same way through it; each GetSession \
             is one Lua script (a GET of the cart's JSON), parsed and converted to a Session \
             ({bytes} bytes encoded); its CPU per op is redis_cart's and redis-server's together"
        ),
        None => {
            println!("- redis_cart: **skipped**, redis-server is not installed (`{INSTALL_REDIS}`)")
        }
    }
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections per server; keys round-robin \
         over the {} sessions (the echo server ignores them); {:?} warm-up, {:?} measured; {} \
         run(s), target order rotating",
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

/// A run row's cells after the common ones.
fn run_cells(measured: &Measured<Reader>) -> Vec<String> {
    let window = &measured.window;
    vec![
        micros(server_cpu_per_op(measured)),
        percent(window.cpu(SESSION_SVC)),
        percent(window.cpu(ECHO)),
        percent(window.cpu(STORE_SVC)),
        percent(window.cpu(REDIS_CART)),
        percent(window.cpu(REDIS_SERVER)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    ]
}

/// The driven server's CPU time per answered GetSession, in microseconds (redis_cart's and
/// redis-server's together for the Redis target).
fn server_cpu_per_op(measured: &Measured<Reader>) -> Option<f64> {
    measured.cpu_micros_per_op(measured.target.cpu_indices())
}

/// The echo server's CPU per GetSession over session-svc's, run by run and their median.
fn print_cpu_ratio(args: &SessionGet, results: &[Measured<Reader>]) {
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
}
