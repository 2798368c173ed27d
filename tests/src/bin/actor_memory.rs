//! `cargo run --release -p tests --bin actor_memory -- [--actors 1000000] [--runs 3]`
//!
//! How much memory a live, idle cart actor costs, and how fast actors activate. It drives the
//! session-svc runtime in process, over the in-memory store (no store round trip), so the
//! figure is the runtime's own cost: registry entry, mailbox, task, timer, bookkeeping.
//!
//! Per run: fill the in-memory store with N small carts (no actors yet), note RSS, activate
//! all N (each actor task starts, loads and decodes its cart, answers), note RSS and time.
//! RSS per actor = (after − before) / N. The state itself (the decoded `Cart`) is measured
//! separately by activating the same carts into plain `Vec<Cart>` and the same RSS method,
//! so "beyond the state" = per-actor − per-state.

use std::{sync::Arc, time::Instant};

use clap::Parser;
use kit::deadline::Deadline;
use session_svc::{
    SessionServer,
    cart::CartEntity,
    config::Config,
    domain::{Cart, Catalog, Ctx, StartArgs},
    runtime::{Entity, Kind, Store},
};

/// The allocator the service binaries use, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Actors to activate per run.
    #[arg(long, default_value_t = 1_000_000)]
    actors: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent activating tasks.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn small_cart(key: String) -> Cart {
    let ctx = Ctx {
        now_ms: 1_700_000_000_000,
        log_limit: 20,
    };
    Cart::start(
        StartArgs {
            key,
            domain: "shop.example".into(),
            landing: "/".into(),
            ip: "127.0.0.1".into(),
            member_id: String::new(),
        },
        &ctx,
    )
    .expect("a valid cart")
}

fn key(run: usize, i: usize) -> String {
    format!("r{run}-cart-{i:08}")
}

struct Sample {
    per_actor: f64,
    per_state: f64,
    activations_per_sec: f64,
}

async fn one_run(args: &Args, run: usize) -> Sample {
    let entity = CartEntity {
        catalog: Catalog::default(),
        log_limit: 20,
        events_per_cart: 10_000,
        ttl: None,
        inventory: None,
    };
    let store = Store::in_memory();
    let deadline = || Deadline::after(std::time::Duration::from_secs(60));
    for i in 0..args.actors {
        let cart = small_cart(key(run, i));
        let record = proto::session::v1::ActorRecord {
            state: entity.encode_state(&cart),
            recent_requests: vec![],
            reminder_ms: 0,
        };
        let put = proto::store::v1::PutRequest {
            namespace: "cart".into(),
            key: key(run, i),
            value: prost::Message::encode_to_vec(&record),
            expected_version: 0,
        };
        let mutation = proto::store::v1::Mutation {
            kind: Some(proto::store::v1::mutation::Kind::Put(put)),
        };
        store
            .commit(vec![mutation], deadline())
            .await
            .expect("in-memory commit");
    }

    // The state alone: the same carts decoded and held, measured the same way. Kept alive
    // through the actor phase so the actors cannot reuse its freed pages.
    let before_states = rss_bytes();
    let states: Vec<Cart> = (0..args.actors)
        .map(|i| {
            entity
                .decode_state(&entity.encode_state(&small_cart(key(run, i))))
                .expect("decodes")
        })
        .collect();
    let per_state = (rss_bytes().saturating_sub(before_states)) as f64 / args.actors as f64;

    let mut config = Config::try_parse_from(["session-svc"]).expect("defaults");
    config.max_actors = (args.actors * 2) as u64;
    let server = SessionServer::with_store(config, Catalog::default(), store);
    let carts: Kind<CartEntity> = server.carts().clone();
    let before = rss_bytes();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (carts, next) = (carts.clone(), next.clone());
            let n = args.actors;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    carts
                        .activate(&key(run, i), deadline())
                        .await
                        .expect("activation");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let elapsed = started.elapsed();
    let per_actor = (rss_bytes().saturating_sub(before)) as f64 / args.actors as f64;
    let sample = Sample {
        per_actor,
        per_state,
        activations_per_sec: args.actors as f64 / elapsed.as_secs_f64(),
    };
    println!(
        "run {run}: {} actors in {:.2} s = {:.0} activations/s; RSS {:.0} B/actor incl. state, state {:.0} B, beyond state {:.0} B",
        args.actors,
        elapsed.as_secs_f64(),
        sample.activations_per_sec,
        sample.per_actor,
        sample.per_state,
        sample.per_actor - sample.per_state
    );
    drop(server);
    drop(states);
    sample
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!(
        "actor_memory: {} actors × {} runs, {} cores, command: {}",
        args.actors,
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let mut samples = Vec::new();
    for run in 0..args.runs {
        samples.push(one_run(&args, run).await);
    }
    let beyond = median(samples.iter().map(|s| s.per_actor - s.per_state).collect());
    println!("\n| metric | median of {} runs |\n|---|---|", args.runs);
    println!(
        "| RSS per live idle actor, incl. state | {:.0} B |",
        median(samples.iter().map(|s| s.per_actor).collect())
    );
    println!(
        "| RSS per decoded cart state alone | {:.0} B |",
        median(samples.iter().map(|s| s.per_state).collect())
    );
    println!("| RSS per actor beyond the state | {beyond:.0} B |");
    println!(
        "| activations per second | {:.0} |",
        median(samples.iter().map(|s| s.activations_per_sec).collect())
    );
}
