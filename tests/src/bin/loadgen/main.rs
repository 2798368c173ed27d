//! `loadgen`: benchmarks that drive the real services over gRPC on loopback and print Markdown
//! for BENCHMARKS.md.
//!
//! - `store-put`: durable Puts against store-svc, group commit vs one flush per write.
//! - `session-get`: GetSession on live session-svc actors vs a bare tonic echo server
//!   (`echo_server`, a binary of this crate) and vs `redis_cart` (another binary of this crate:
//!   a stateless CartService over Redis), the same clients driving all of them.
//! - `session-add-item`: durable AddItem end to end (session-svc → store-svc), session-svc's
//!   store writes batched (its default) vs one Put call per write vs `redis_cart` over a Redis
//!   that fsyncs every write.
//! - `sku-adjust`: durable AdjustStock through the sku actors, on one hot sku (one mailbox)
//!   vs spread over many skus.
//! - `cart-reserve`: AddItem of tracked skus, each reserving at the sku's actor first, on one
//!   hot sku vs many, with untracked skus (no reservation) as the baseline.
//! - `import-latency`: p99 of ListEntries and AddItem under a light interactive load, idle vs
//!   while a 100,000-entry ImportEntries job runs.
//! - `reminders`: durable reminders firing for many passivated carts: seed carts with a short
//!   TTL, let them passivate, measure how fast their expiry reminders fire.
//!
//! The `redis_cart` contender needs `redis-server` (`apt-get install -y redis-server`); the
//! benchmarks start and stop their own, and skip the contender, saying so, when it is missing.
//!
//! Build the release binaries first: `cargo build --release --workspace --bins`, then
//! `cargo run --release -p tests --bin loadgen -- store-put`. The harness starts the binaries
//! found next to this executable, so a debug loadgen would drive debug servers.
//!
//! # Layout
//!
//! - `main.rs`: the command line, the flags every benchmark shares, and dispatch.
//! - `store_put.rs`, `session_get.rs`, `session_add_item.rs`, `sku_adjust.rs`,
//!   `cart_reserve.rs`, `reminders.rs`: one benchmark each (its flags, what it compares, how
//!   it drives load, its header and summary).
//! - `measure.rs`: the rotating runs every benchmark makes and what a window samples.
//! - `report.rs`: the Markdown they share (header, runs table, errors, summary, number formats).
//! - `servers.rs`: finding and starting the binaries, connecting to them.
//! - `redis_server.rs`: finding `redis-server` and starting it durable in a temp dir.
//! - `carts.rs`: cart clients and the sessions set up before a measurement.

mod cart_reserve;
mod carts;
mod cluster_forward;
mod import_latency;
mod measure;
mod redis_server;
mod reminders;
mod report;
mod servers;
mod session_add_item;
mod session_get;
mod sku_adjust;
mod store_put;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tests::load::{self, LoadConfig};

use crate::{
    cart_reserve::CartReserve, cluster_forward::ClusterForward, import_latency::ImportLatency,
    reminders::Reminders, session_add_item::SessionAddItem, session_get::SessionGet,
    sku_adjust::SkuAdjust, store_put::StorePut,
};

/// How to build what this tool starts; said in `--help` and when a binary is missing.
const BUILD_FIRST: &str = "cargo build --release --workspace --bins";

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
    /// Warm reads: GetSession on live session-svc actors vs a bare tonic echo server and
    /// vs redis_cart over Redis.
    SessionGet(SessionGet),
    /// Durable writes: AddItem end to end, store writes batched vs one Put call per write vs
    /// redis_cart over Redis.
    SessionAddItem(SessionAddItem),
    /// Stock: AdjustStock on one hot sku (one actor) vs spread over many skus.
    SkuAdjust(SkuAdjust),
    /// Reservations: AddItem of tracked skus on one hot sku vs many, vs untracked skus.
    CartReserve(CartReserve),
    /// Interactive latency (ListEntries, AddItem p99) idle vs while an import job runs.
    ImportLatency(ImportLatency),
    /// Durable reminders: seed many carts with a short TTL, let them passivate, measure how
    /// fast their expiry reminders fire.
    Reminders(Reminders),
    /// Forwarding between replicas: GetSession and AddItem answered by the key's owner vs
    /// arriving at another replica that forwards them.
    ClusterForward(ClusterForward),
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
    /// Runs; each measures every compared target, in an order that rotates between runs.
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

/// A `--duration`/`--warmup` value, at most ten minutes so a typo cannot run for hours.
fn bounded_duration(text: &str) -> anyhow::Result<Duration> {
    let duration = load::parse_duration(text)?;
    anyhow::ensure!(duration <= Duration::from_secs(600), "at most 10m");
    Ok(duration)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::StorePut(args) => store_put::run(args).await,
        Bench::SessionGet(args) => session_get::run(args).await,
        Bench::SessionAddItem(args) => session_add_item::run(args).await,
        Bench::SkuAdjust(args) => sku_adjust::run(args).await,
        Bench::CartReserve(args) => cart_reserve::run(args).await,
        Bench::ImportLatency(args) => import_latency::run(args).await,
        Bench::Reminders(args) => reminders::run(args).await,
        Bench::ClusterForward(args) => cluster_forward::run(args).await,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

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
}
