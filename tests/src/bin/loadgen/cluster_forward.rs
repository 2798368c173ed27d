//! `cluster-forward`: what one hop between session-svc replicas costs. Two replicas (A, B) in
//! cluster mode over one store-svc; every key measured is one whose shard A owns. The same
//! clients send GetSession (warm reads) and AddItem (durable writes, each with a unique
//! request id) either to A, which serves them from its own actors ("owner"), or to B, which
//! forwards every one of them to A ("forwarded"), all in the same run.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use clap::Args;
use proto::session::v1::{GetSessionRequest, StartSessionRequest};
use tests::{
    ServiceProcess, StoreProcess,
    load::{self, Call, LoadReport, free_loopback_addr, scrape_metrics},
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::{
    LoadArgs,
    carts::{CartApi, add_item_request, cart_clients},
    measure::{Measured, Target, WindowSample, measure_runs, sample_window},
    report::{
        Layout, SummaryColumn, micros, per_flush, percent, print_header_end, print_header_start,
        print_ratio, print_summary,
    },
    servers::{SESSION_BINARY, require_binaries, spawn_metered_store, spawn_session_replica},
};

/// Line items each read session holds, as in `session-get`.
const ITEMS_PER_READ_SESSION: u32 = 3;

/// AddItems (with request ids) each write session gets before the first window: past the 64
/// request ids a cart remembers and its event log (20 by default), so the cart written per
/// AddItem is already as large as it gets.
const PREFILL_ADDS: u32 = 70;

/// The kind of the keys measured, as session-svc places carts.
const CART_KIND: &str = "cart";

/// session-svc's default `--shards`, which the replicas run with.
const SHARDS: u32 = 64;

/// How often each replica health-checks the other.
const PROBE_INTERVAL: &str = "200ms";

/// Probe keys started through each replica before setting up, so both serve.
const SETTLE_PROBES: usize = 16;

/// How long the replicas get to settle (membership, leases) before setup gives up.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// GetSessions sent through each replica to check, before measuring, that B forwards every
/// call for A's keys and A forwards none.
const CHECK_CALLS: u64 = 200;

/// Sessions set up concurrently.
const SETUP_WORKERS: usize = 64;

const FORWARDED_TOTAL: &str = "session_cluster_forwarded_total";
const LEASES_LOST_TOTAL: &str = "session_cluster_leases_lost_total";
const LEASES_RELEASED_TOTAL: &str = "session_cluster_leases_released_total";

#[derive(Debug, Args)]
pub struct ClusterForward {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Sessions (A's keys, 3 items each) the GetSession clients read round-robin.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sessions: u32,
    /// Skus each AddItem client cycles through (each client writes its own session).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub skus: u32,
}

/// What `cluster-forward` measures: a request kind, and where the clients send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// GetSession sent to A, which owns the key.
    GetOwner,
    /// GetSession sent to B, which forwards it to A.
    GetForwarded,
    /// AddItem sent to A.
    AddOwner,
    /// AddItem sent to B, forwarded to A.
    AddForwarded,
}

impl Target for Path {
    const PAIR: [Self; 2] = [Path::GetForwarded, Path::GetOwner];

    fn label(self) -> &'static str {
        match self {
            Path::GetOwner => "GetSession, owner (to A)",
            Path::GetForwarded => "GetSession, forwarded (to B → A)",
            Path::AddOwner => "AddItem, owner (to A)",
            Path::AddForwarded => "AddItem, forwarded (to B → A)",
        }
    }
}

impl Path {
    const ALL: [Self; 4] = [
        Path::GetOwner,
        Path::GetForwarded,
        Path::AddOwner,
        Path::AddForwarded,
    ];

    fn forwarded(self) -> bool {
        matches!(self, Path::GetForwarded | Path::AddForwarded)
    }

    fn writes(self) -> bool {
        matches!(self, Path::AddOwner | Path::AddForwarded)
    }
}

/// Where each server sits in a window sample (every window samples all three).
const REPLICA_A: usize = 0;
const REPLICA_B: usize = 1;
const STORE_SVC: usize = 2;

const LAYOUT: Layout<Path> = Layout {
    target_column: "request, sent to",
    extra_columns: &[
        "session-svc CPU µs/op",
        "store-svc CPU µs/op",
        "writes/flush",
        "A CPU",
        "B CPU",
        "store-svc CPU",
        "loadgen CPU",
        "other CPU",
    ],
    extra_cells: run_cells,
    summary_columns: &[
        SummaryColumn {
            name: "session-svc CPU µs/op",
            stat: session_cpu_per_op,
            format: micros,
        },
        SummaryColumn {
            name: "store-svc CPU µs/op",
            stat: store_cpu_per_op,
            format: micros,
        },
    ],
    request: "request",
    ratio: "GetSession forwarded / owner",
    ratio_decimals: 2,
    ratio_unit: "",
};

/// The servers, clients and keys every run shares.
struct Cluster {
    store: StoreProcess,
    a: ServiceProcess,
    b: ServiceProcess,
    /// `/metrics` of store-svc, A and B.
    metrics: [SocketAddr; 3],
    carts_a: Vec<CartApi>,
    carts_b: Vec<CartApi>,
    /// A's keys the GetSession clients read.
    read_keys: Arc<Vec<String>>,
    /// A's keys the AddItem clients write, one per client.
    write_keys: Arc<Vec<String>>,
}

/// The cluster counters of one replica that say whether calls were forwarded and whether
/// shards moved.
#[derive(Clone, Copy, Debug, Default)]
struct ClusterCounters {
    forwarded: f64,
    leases_lost: f64,
    leases_released: f64,
}

impl ClusterCounters {
    async fn scrape(addr: SocketAddr) -> anyhow::Result<Self> {
        let all = scrape_metrics(addr).await?;
        let get = |name: &str| {
            all.get(name)
                .copied()
                .with_context(|| format!("{name} missing from {addr}/metrics"))
        };
        Ok(Self {
            forwarded: get(FORWARDED_TOTAL)?,
            leases_lost: get(LEASES_LOST_TOTAL)?,
            leases_released: get(LEASES_RELEASED_TOTAL)?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            forwarded: self.forwarded - before.forwarded,
            leases_lost: self.leases_lost - before.leases_lost,
            leases_released: self.leases_released - before.leases_released,
        }
    }
}

pub async fn run(args: ClusterForward) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    eprintln!(
        "setting up: store-svc, replicas A and B, {} read sessions and {} write sessions on A's \
         keys ...",
        args.sessions, args.load.clients
    );
    let cluster = Cluster::set_up(&args).await?;
    let [_, metrics_a, metrics_b] = cluster.metrics;
    let check = cluster.check_forwarding().await?;
    let before = (
        ClusterCounters::scrape(metrics_a).await?,
        ClusterCounters::scrape(metrics_b).await?,
    );

    print_header(&args, &cluster, &check);
    let pids = [cluster.a.pid(), cluster.b.pid(), cluster.store.pid()];
    // The windows scrape store-svc (writes per flush) and A, which makes every write.
    let window_metrics = [cluster.metrics[0], metrics_a];
    let sent_to_b = Arc::new(AtomicU64::new(0));
    let mut measurement = 0_u64;
    let results = measure_runs(
        "cluster-forward",
        args.load.runs,
        &Path::ALL,
        &LAYOUT,
        |path| {
            measurement += 1;
            let (args, cluster, sent_to_b) = (&args, &cluster, Arc::clone(&sent_to_b));
            let (pids, metrics) = (&pids, &window_metrics);
            async move { drive(args, cluster, path, measurement, sent_to_b, pids, metrics).await }
        },
    )
    .await?;
    print_summary(&LAYOUT, args.load.runs, &Path::ALL, &results);
    print_ratio(
        &LAYOUT,
        &results,
        Path::AddForwarded,
        Path::AddOwner,
        "AddItem forwarded / owner",
    );
    println!();
    print_hop_cost(args.load.runs, &results);

    let after = (
        ClusterCounters::scrape(metrics_a).await?,
        ClusterCounters::scrape(metrics_b).await?,
    );
    let (delta_a, delta_b) = (after.0.since(before.0), after.1.since(before.1));
    let sent = sent_to_b.load(Ordering::Relaxed);
    println!(
        "Checked over all runs (warm-ups included): B forwarded {:.0} calls of the {sent} sent \
         to it, A forwarded {:.0}; shard leases lost / released meanwhile: A {:.0} / {:.0}, \
         B {:.0} / {:.0} (0 means no shard moved while measuring).\n",
        delta_b.forwarded,
        delta_a.forwarded,
        delta_a.leases_lost,
        delta_a.leases_released,
        delta_b.leases_lost,
        delta_b.leases_released,
    );
    Ok(())
}

impl Cluster {
    /// Starts store-svc and the two replicas, waits until both serve, and sets up the
    /// sessions on A's keys.
    async fn set_up(args: &ClusterForward) -> anyhow::Result<Self> {
        let (store, store_metrics) = spawn_metered_store().await?;
        let [addr_a, addr_b, metrics_a, metrics_b] = distinct_free_addrs()?;
        let peers = [addr_a, addr_b];
        let replica = |listen: SocketAddr, metrics: SocketAddr| {
            let extra = [
                format!("--peer-probe-interval={PROBE_INTERVAL}"),
                format!("--metrics-listen={metrics}"),
            ];
            let store = &store;
            async move { spawn_session_replica(store, listen, &peers, &extra).await }
        };
        let a = replica(addr_a, metrics_a).await?;
        let b = replica(addr_b, metrics_b).await?;
        let carts_a = cart_clients(&a, args.load.connections).await?;
        let carts_b = cart_clients(&b, args.load.connections).await?;
        settle(&carts_a, "a").await?;
        settle(&carts_b, "b").await?;

        let members: Vec<Arc<str>> = peers.iter().map(|p| p.to_string().into()).collect();
        let owned_by_a = |prefix: &str, count: usize| -> Vec<String> {
            (0..)
                .map(|i| format!("loadgen-{prefix}-{i}"))
                .filter(|key| {
                    let shard = session_svc::cluster::shard_of(SHARDS, CART_KIND, key);
                    session_svc::cluster::rendezvous(&members, shard)
                        .is_some_and(|owner| owner == &members[0])
                })
                .take(count)
                .collect()
        };
        let read_keys = owned_by_a("read", args.sessions as usize);
        let write_keys = owned_by_a("write", args.load.clients as usize);
        // Set up through A: the sessions start where they live.
        set_up_sessions(&carts_a, &read_keys, ITEMS_PER_READ_SESSION, false).await?;
        set_up_sessions(&carts_a, &write_keys, PREFILL_ADDS, true).await?;
        Ok(Self {
            store,
            a,
            b,
            metrics: [store_metrics, metrics_a, metrics_b],
            carts_a,
            carts_b,
            read_keys: Arc::new(read_keys),
            write_keys: Arc::new(write_keys),
        })
    }

    /// Sends [`CHECK_CALLS`] GetSessions of A's keys through A and then through B, and returns
    /// what A's and B's forwarded counters counted for each, and how many of those sent to B
    /// answered UNAVAILABLE (a forward that failed; counted, not fatal: the runs measure it).
    /// Retries (the membership may still be settling) until B forwards every call and A none,
    /// for at most [`SETTLE_WITHIN`].
    async fn check_forwarding(&self) -> anyhow::Result<ForwardCheck> {
        let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
        loop {
            let outcome = match self.check_round().await {
                Ok(check) if check.through_a == 0.0 && check.through_b == CHECK_CALLS as f64 => {
                    return Ok(check);
                }
                Ok(check) => anyhow::anyhow!(
                    "of {CHECK_CALLS} GetSessions of A's keys, those sent to A were forwarded \
                     {} times and those sent to B {}",
                    check.through_a,
                    check.through_b
                ),
                Err(error) => error,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(outcome.context(format!(
                    "forwarding never settled\n--- A's stderr ---\n{}\n--- B's stderr ---\n{}",
                    self.a.stderr_tail(20),
                    self.b.stderr_tail(20)
                )));
            }
            eprintln!("not settled yet: {outcome:#}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One round of [`Self::check_forwarding`].
    async fn check_round(&self) -> anyhow::Result<ForwardCheck> {
        let [_, metrics_a, metrics_b] = self.metrics;
        let forwarded = || async {
            anyhow::Ok(
                ClusterCounters::scrape(metrics_a).await?.forwarded
                    + ClusterCounters::scrape(metrics_b).await?.forwarded,
            )
        };
        let mut check = ForwardCheck::default();
        for (i, carts) in [&self.carts_a, &self.carts_b].into_iter().enumerate() {
            let before = forwarded().await?;
            for n in 0..CHECK_CALLS as usize {
                let key = self.read_keys[n % self.read_keys.len()].clone();
                let answer = carts[n % carts.len()]
                    .clone()
                    .get_session(GetSessionRequest { key })
                    .await;
                match answer {
                    Ok(_) => {}
                    Err(status) if i == 1 && status.code() == Code::Unavailable => {
                        check.failed_b += 1;
                        check
                            .failure
                            .get_or_insert_with(|| status.message().to_owned());
                    }
                    Err(status) => {
                        bail!("GetSession through {}: {status}", ["A", "B"][i])
                    }
                }
            }
            let counted = forwarded().await? - before;
            if i == 0 {
                check.through_a = counted;
            } else {
                check.through_b = counted;
            }
        }
        Ok(check)
    }
}

/// What [`Cluster::check_forwarding`] found.
#[derive(Debug, Default)]
struct ForwardCheck {
    /// Calls forwarded (by either replica) of those sent to A.
    through_a: f64,
    /// Calls forwarded of those sent to B.
    through_b: f64,
    /// Calls sent to B that answered UNAVAILABLE.
    failed_b: u64,
    /// The first such answer's message.
    failure: Option<String>,
}

/// Four loopback ports free right now, all different: A's and B's gRPC and `/metrics`.
fn distinct_free_addrs() -> anyhow::Result<[SocketAddr; 4]> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    while addrs.len() < 4 {
        let addr = free_loopback_addr()?;
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    Ok([addrs[0], addrs[1], addrs[2], addrs[3]])
}

/// StartSession of a key per call through `carts` until each of [`SETTLE_PROBES`] probe
/// keys (named after `replica`) starts, retrying UNAVAILABLE and DEADLINE_EXCEEDED while the
/// replicas agree on the membership and take their leases, for at most [`SETTLE_WITHIN`].
async fn settle(carts: &[CartApi], replica: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    for i in 0..SETTLE_PROBES {
        let key = format!("loadgen-probe-{replica}-{i}");
        let mut cart = carts[i % carts.len()].clone();
        start_retrying(&mut cart, &key, deadline)
            .await
            .with_context(|| format!("replica {replica} never served StartSession"))?;
    }
    Ok(())
}

/// StartSession of `key`, retried while the cluster is settling (until `deadline`).
async fn start_retrying(
    cart: &mut CartApi,
    key: &str,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    loop {
        let request = StartSessionRequest {
            key: key.to_owned(),
            domain: "shop.example".to_owned(),
            landing: "/products/loadgen".to_owned(),
            ip: "203.0.113.7".to_owned(),
            member_id: format!("member-{key}"),
        };
        match cart.start_session(request).await {
            Ok(_) => return Ok(()),
            Err(status)
                if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => bail!("StartSession {key}: {status}"),
        }
    }
}

/// Starts a session on each of `keys` through `carts` and adds `items` AddItems to each (over
/// skus 0.. `items`, or 20 rotating skus with request ids when `request_ids`), a few at a time.
async fn set_up_sessions(
    carts: &[CartApi],
    keys: &[String],
    items: u32,
    request_ids: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    let keys = Arc::new(keys.to_vec());
    let mut workers = JoinSet::new();
    for worker in 0..SETUP_WORKERS.min(keys.len()) {
        let mut cart = carts[worker % carts.len()].clone();
        let keys = Arc::clone(&keys);
        workers.spawn(async move {
            for key in keys.iter().skip(worker).step_by(SETUP_WORKERS) {
                start_retrying(&mut cart, key, deadline).await?;
                for n in 0..items {
                    let mut add = add_item_request(key, if request_ids { n % 20 } else { n });
                    if request_ids {
                        add.request_id = format!("loadgen-setup-{key}-{n}");
                    }
                    cart.add_item(add)
                        .await
                        .with_context(|| format!("AddItem to {key} while setting up"))?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// Drives `path` for one window: GetSession round-robin over the read sessions, or AddItem of
/// quantity 1 on each client's own session over `--skus` rotating skus with a request id
/// unique to this `measurement`, client and call; sent to A or to B as `path` says.
async fn drive(
    args: &ClusterForward,
    cluster: &Cluster,
    path: Path,
    measurement: u64,
    sent_to_b: Arc<AtomicU64>,
    pids: &[u32],
    metrics: &[SocketAddr],
) -> anyhow::Result<(LoadReport, WindowSample)> {
    let config = args.load.config();
    let clients = Arc::new(if path.forwarded() {
        cluster.carts_b.clone()
    } else {
        cluster.carts_a.clone()
    });
    let count = move || {
        if path.forwarded() {
            sent_to_b.fetch_add(1, Ordering::Relaxed);
        }
    };
    let report = if path.writes() {
        let keys = Arc::clone(&cluster.write_keys);
        let skus = u64::from(args.skus);
        let request = move |call: Call| {
            count();
            let mut client = clients[call.task % clients.len()].clone();
            let mut add = add_item_request(&keys[call.task], (call.seq % skus) as u32);
            add.request_id = format!("loadgen-{measurement}-{}-{}", call.task, call.seq);
            async move { client.add_item(add).await.map(drop) }
        };
        tokio::join!(
            load::run_closed_loop(&config, request),
            sample_window(&config, pids, metrics),
        )
    } else {
        let keys = Arc::clone(&cluster.read_keys);
        let tasks = config.clients as u64;
        let request = move |call: Call| {
            count();
            let mut client = clients[call.task % clients.len()].clone();
            // As in session-get: each task starts at its own key and strides by the task count.
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
            sample_window(&config, pids, metrics),
        )
    };
    ensure!(
        report.0.ok > 0,
        "no {} answered OK: {:?}",
        path.label(),
        report.0.error_summary()
    );
    Ok(report)
}

fn print_header(args: &ClusterForward, cluster: &Cluster, check: &ForwardCheck) {
    print_header_start(
        "session-svc forwarding: GetSession and AddItem answered by the owner vs arriving at \
         another replica",
        "the three servers and loadgen",
    );
    println!(
        "- set-up, for all runs: one store-svc (defaults) and two session-svc replicas, A ({}) \
         and B ({}), each `--peers A,B --advertise X --listen X --peer-probe-interval \
         {PROBE_INTERVAL}` and otherwise defaults ({SHARDS} shards); every key measured is one \
         whose shard A owns (`shard_of` + `rendezvous` over the two advertised addresses, as \
         the replicas place it), its session started through A",
        cluster.a.addr(),
        cluster.b.addr()
    );
    println!(
        "- checked before measuring: of {CHECK_CALLS} GetSessions of those keys sent to A, \
         {:.0} were forwarded; of {CHECK_CALLS} sent to B, {:.0} (`{FORWARDED_TOTAL}` of both \
         replicas); {} of those sent to B answered UNAVAILABLE{}",
        check.through_a,
        check.through_b,
        check.failed_b,
        check
            .failure
            .as_ref()
            .map_or(String::new(), |message| format!(" (first: \"{message}\")"))
    );
    println!(
        "- GetSession: {} sessions with {ITEMS_PER_READ_SESSION} items each, read round-robin \
         (warm: every actor live on A)",
        args.sessions
    );
    println!(
        "- AddItem: each client its own session ({} in all), given {PREFILL_ADDS} AddItems with \
         request ids before the first window (so its remembered ids and event log are full), \
         then AddItem of quantity 1 over {} rotating skus, each with a unique request_id; every \
         OK means A committed the cart to store-svc, flushed and fsynced",
        args.load.clients, args.skus
    );
    println!(
        "- owner: the clients' connections go to A, which serves every call itself; forwarded: \
         they go to B, which forwards every call, frames untouched, to A over the one HTTP/2 \
         channel it keeps to A, and relays the answer"
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections (to A or to B); {:?} \
         warm-up, {:?} measured; {} run(s) of the four targets, order rotating",
        args.load.clients,
        args.load.connections,
        args.load.warmup,
        args.load.duration,
        args.load.runs
    );
    println!(
        "- latency: from sending the request to its OK, as the client sees it; CPU in % of one \
         core over the measured window, from /proc of each process; \"session-svc CPU µs/op\" \
         is A's and B's CPU time together per OK call, \"store-svc CPU µs/op\" store-svc's; \
         \"writes/flush\" is store-svc's; \"other CPU\" is everything else on the machine \
         (noise)"
    );
    print_header_end();
}

/// A run row's cells after the common ones.
fn run_cells(measured: &Measured<Path>) -> Vec<String> {
    let window = &measured.window;
    vec![
        micros(session_cpu_per_op(measured)),
        micros(store_cpu_per_op(measured)),
        per_flush(window.writes_per_flush),
        percent(window.cpu(REPLICA_A)),
        percent(window.cpu(REPLICA_B)),
        percent(window.cpu(STORE_SVC)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    ]
}

/// Both replicas' CPU time per OK call, in µs: what the call cost session-svc, hop included.
fn session_cpu_per_op(measured: &Measured<Path>) -> Option<f64> {
    measured.cpu_micros_per_op(&[REPLICA_A, REPLICA_B])
}

/// store-svc's CPU time per OK call, in µs.
fn store_cpu_per_op(measured: &Measured<Path>) -> Option<f64> {
    measured.cpu_micros_per_op(&[STORE_SVC])
}

fn ops_of(measured: &Measured<Path>) -> Option<f64> {
    Some(measured.report.ops_per_sec())
}

fn p50_of(measured: &Measured<Path>) -> Option<f64> {
    measured.report.percentile_ms(50.0)
}

fn p99_of(measured: &Measured<Path>) -> Option<f64> {
    measured.report.percentile_ms(99.0)
}

/// For every run that measured both, `combine` of `forwarded`'s `stat` and `owner`'s.
fn per_run(
    results: &[Measured<Path>],
    forwarded: Path,
    owner: Path,
    stat: fn(&Measured<Path>) -> Option<f64>,
    combine: fn(f64, f64) -> Option<f64>,
) -> Vec<f64> {
    let mut runs: Vec<u32> = results.iter().map(|m| m.run).collect();
    runs.dedup();
    runs.into_iter()
        .filter_map(|run| {
            let of = |path| {
                results
                    .iter()
                    .find(|m| m.run == run && m.target == path)
                    .and_then(stat)
            };
            combine(of(forwarded)?, of(owner)?)
        })
        .collect()
}

fn ratio(forwarded: f64, owner: f64) -> Option<f64> {
    (owner > 0.0).then_some(forwarded / owner)
}

fn difference(forwarded: f64, owner: f64) -> Option<f64> {
    Some(forwarded - owner)
}

/// The `## What the hop costs` table: per request kind, forwarded over owner (ops/s, p50,
/// p99, session-svc CPU per call) and forwarded minus owner (p50, p99, CPU per call), each
/// the median of the per-run figures.
fn print_hop_cost(runs: u32, results: &[Measured<Path>]) {
    println!("## What the hop costs (forwarded vs owner, median of {runs} per-run figures)\n");
    println!(
        "| request | ops/s ÷ | p50 ÷ | p99 ÷ | session-svc CPU/op ÷ | p50 + ms | p99 + ms | \
         session-svc CPU + µs/op |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (request, forwarded, owner) in [
        ("GetSession", Path::GetForwarded, Path::GetOwner),
        ("AddItem", Path::AddForwarded, Path::AddOwner),
    ] {
        let median = |stat: fn(&Measured<Path>) -> Option<f64>,
                      combine: fn(f64, f64) -> Option<f64>| {
            load::median(&per_run(results, forwarded, owner, stat, combine))
        };
        let times = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:.2}×"));
        let plus_ms = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:+.2}"));
        let plus_us = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:+.1}"));
        println!(
            "| {request} | {} | {} | {} | {} | {} | {} | {} |",
            times(median(ops_of, ratio)),
            times(median(p50_of, ratio)),
            times(median(p99_of, ratio)),
            times(median(session_cpu_per_op, ratio)),
            plus_ms(median(p50_of, difference)),
            plus_ms(median(p99_of, difference)),
            plus_us(median(session_cpu_per_op, difference)),
        );
    }
    println!();
}
