//! `store-put`: durable Puts against store-svc, group commit vs one flush per write, and
//! Commits of two Puts (all or nothing) under group commit. With `--postgres`, the same Puts
//! and Commits against store-svc on PostgreSQL (`--backend postgres`) in the same runs: a
//! throwaway server this benchmark starts (`tests::postgres`), a fresh database per run and mode.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use anyhow::Context;
use clap::Args;
use proto::store::v1::{CommitRequest, Mutation, PutRequest, mutation::Kind};
use tests::{
    StoreClient, StoreOptions, StoreProcess,
    load::{self, Call, LoadReport, free_loopback_addr},
    postgres::PostgresServer,
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tonic::Code;

use crate::{
    LoadArgs,
    measure::{Measured, Target, WindowSample, measure_runs, sample_window},
    report::{
        Layout, median_of, met, ops, p99, per_flush, percent, print_header_end, print_header_start,
        print_ratio, print_summary,
    },
    servers::{connect, require_binaries},
};

/// The namespace every benchmark key lives in.
const NAMESPACE: &str = "loadgen";
/// The second namespace a Commit writes to.
const COMMIT_NAMESPACE: &str = "loadgen-events";

#[derive(Debug, Args)]
pub struct StorePut {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Bytes in each Put's value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub value_bytes: u32,
    /// store-svc `--max-batch` in group-commit mode (flush-per-write mode uses 1).
    #[arg(long, default_value_t = 512)]
    pub max_batch: u32,
    /// store-svc `--queue-size` in both modes: larger than --clients, so no Put is refused.
    #[arg(long, default_value_t = 4096)]
    pub queue_size: u32,
    /// Also measure store-svc on PostgreSQL (`--backend postgres`): Puts and Commits of 2
    /// against a throwaway PostgreSQL server (Debian's binaries: run `bash .ci/postgres.sh`
    /// first), with `synchronous_commit=on` and `fsync=on`.
    #[arg(long)]
    pub postgres: bool,
    /// store-svc `--postgres-pool-size` in the PostgreSQL modes.
    #[arg(long, default_value_t = 16)]
    pub postgres_pool_size: u32,
}

/// How store-svc makes writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Concurrent writes share one flush (`--max-batch N`).
    GroupCommit,
    /// Every write has its own flush (`--max-batch 1`).
    FlushPerWrite,
    /// Group commit, each request a Commit of two Puts to two namespaces (all or nothing).
    CommitOfTwo,
    /// `--backend postgres`: each Put one transaction, committed durably by the database.
    PostgresPut,
    /// `--backend postgres`: each request a Commit of two Puts, one transaction.
    PostgresCommitOfTwo,
}

/// Every sled mode, in the order runs measure them.
const MODES: [Mode; 3] = [Mode::GroupCommit, Mode::CommitOfTwo, Mode::FlushPerWrite];

/// With `--postgres`: the sled modes and the PostgreSQL ones.
const MODES_WITH_POSTGRES: [Mode; 5] = [
    Mode::GroupCommit,
    Mode::PostgresPut,
    Mode::CommitOfTwo,
    Mode::PostgresCommitOfTwo,
    Mode::FlushPerWrite,
];

impl Target for Mode {
    const PAIR: [Self; 2] = [Mode::GroupCommit, Mode::FlushPerWrite];

    fn label(self) -> &'static str {
        match self {
            Mode::GroupCommit => "group commit",
            Mode::FlushPerWrite => "flush per write",
            Mode::CommitOfTwo => "commit of 2 (group)",
            Mode::PostgresPut => "postgres (Put)",
            Mode::PostgresCommitOfTwo => "postgres commit of 2",
        }
    }
}

impl Mode {
    fn max_batch(self, args: &StorePut) -> u32 {
        match self {
            Mode::GroupCommit | Mode::CommitOfTwo => args.max_batch,
            Mode::FlushPerWrite => 1,
            // Not used by that backend; passed all the same, so the command lines differ only
            // in the backend.
            Mode::PostgresPut | Mode::PostgresCommitOfTwo => args.max_batch,
        }
    }

    fn commits(self) -> bool {
        matches!(self, Mode::CommitOfTwo | Mode::PostgresCommitOfTwo)
    }
}

const LAYOUT: Layout<Mode> = Layout {
    target_column: "mode",
    extra_columns: &[
        "RESOURCE_EXHAUSTED",
        "writes/flush",
        "store-svc CPU",
        "loadgen CPU",
        "other CPU",
    ],
    extra_cells: run_cells,
    summary_columns: &[],
    request: "Put",
    ratio: "Group commit / flush per write",
    ratio_decimals: 1,
    ratio_unit: "×",
};

pub async fn run(args: StorePut) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV)])?;
    let postgres = if args.postgres {
        Some(
            tokio::task::spawn_blocking(PostgresServer::start)
                .await?
                .context("starting a throwaway PostgreSQL (run `bash .ci/postgres.sh` first)")?,
        )
    } else {
        None
    };
    let modes: &[Mode] = if postgres.is_some() {
        &MODES_WITH_POSTGRES
    } else {
        &MODES
    };
    print_header(&args);
    let databases = AtomicU32::new(0);
    let results = measure_runs("store-put", args.load.runs, modes, &LAYOUT, |mode: Mode| {
        let options = store_options(mode, &args, postgres.as_ref(), &databases);
        let load = &args.load;
        let value_bytes = args.value_bytes as usize;
        async move { drive_puts(options?, load, value_bytes, mode.commits()).await }
    })
    .await?;
    let ratio = print_summary(&LAYOUT, args.load.runs, modes, &results);
    if postgres.is_some() {
        // PostgreSQL runs at a fraction of sled: one decimal would say little.
        let layout = Layout {
            ratio_decimals: 2,
            ..LAYOUT
        };
        for (postgres, sled, name) in [
            (
                Mode::PostgresPut,
                Mode::GroupCommit,
                "Put: PostgreSQL / sled group commit",
            ),
            (
                Mode::PostgresCommitOfTwo,
                Mode::CommitOfTwo,
                "Commit of 2: PostgreSQL / sled group commit",
            ),
        ] {
            print_ratio(&layout, &results, postgres, sled, name);
        }
        println!();
    }
    print_targets(&results, ratio);
    Ok(())
}

/// store-svc's settings for `mode`; on PostgreSQL, a fresh database of `postgres` (named from
/// the `databases` counter), so that every run creates its keys anew.
fn store_options(
    mode: Mode,
    args: &StorePut,
    postgres: Option<&PostgresServer>,
    databases: &AtomicU32,
) -> anyhow::Result<StoreOptions> {
    let options = StoreOptions::new()
        .max_batch(mode.max_batch(args) as usize)
        .queue_size(args.queue_size as usize);
    match (mode, postgres) {
        (Mode::PostgresPut | Mode::PostgresCommitOfTwo, Some(server)) => {
            let name = format!("bench_{}", databases.fetch_add(1, Ordering::Relaxed));
            Ok(options
                .postgres(server.create_database(&name)?)
                .arg("--postgres-pool-size")
                .arg(args.postgres_pool_size.to_string()))
        }
        (Mode::PostgresPut | Mode::PostgresCommitOfTwo, None) => {
            anyhow::bail!("{} needs --postgres", mode.label())
        }
        _ => Ok(options),
    }
}

/// Starts a fresh store-svc with `options` (and a `/metrics` endpoint), drives Puts of
/// `value_bytes`-byte values at it (with `commit`, Commits of two such Puts to two
/// namespaces), and lets it go (the harness kills it). The sample's only server is store-svc.
async fn drive_puts(
    options: StoreOptions,
    load: &LoadArgs,
    value_bytes: usize,
    commit: bool,
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
        let put = |namespace: &str| PutRequest {
            namespace: namespace.to_owned(),
            key: format!("c{}-{}", call.task, call.seq),
            value: value.as_ref().clone(),
            expected_version: 0,
        };
        let commit = commit.then(|| CommitRequest {
            mutations: [NAMESPACE, COMMIT_NAMESPACE]
                .map(|namespace| Mutation {
                    kind: Some(Kind::Put(put(namespace))),
                })
                .into(),
        });
        let put = put(NAMESPACE);
        async move {
            match commit {
                Some(commit) => client.commit(commit).await.map(|_| ()),
                None => client.put(put).await.map(|_| ()),
            }
        }
    };
    let pids = [store.pid()];
    let metrics = [metrics_addr];
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, &metrics),
    ))
}

fn print_header(args: &StorePut) {
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
         `store-svc --max-batch 1 --queue-size {}`; commit of 2: group commit, each request a \
         Commit of two such Puts (two namespaces, all or nothing; ops/s counts commits)",
        args.max_batch, args.queue_size, args.queue_size
    );
    if args.postgres {
        println!(
            "- postgres: the same Puts and Commits against `store-svc --backend postgres \
             --postgres-pool-size {} --queue-size {}` on a throwaway PostgreSQL on loopback \
             (`synchronous_commit=on`, `fsync=on`), a fresh database per run and mode; each \
             write is one SERIALIZABLE transaction (\"writes/flush\" counts writes per \
             transaction); the PostgreSQL server's CPU is in \"other CPU\"",
            args.postgres_pool_size, args.queue_size
        );
    }
    println!(
        "- latency: from sending a Put to its OK (which means flushed and fsynced); CPU in % of one core \
         over the measured window; \"other CPU\" is everything else on the machine (noise)"
    );
    print_header_end();
}

/// A run row's cells after the common ones.
fn run_cells(measured: &Measured<Mode>) -> Vec<String> {
    let window = &measured.window;
    vec![
        measured
            .report
            .errors_of(Code::ResourceExhausted)
            .to_string(),
        per_flush(window.writes_per_flush),
        percent(window.cpu(0)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    ]
}

/// Whether group commit met issue 2's targets; `ratio` is its median ops/s ratio.
fn print_targets(results: &[Measured<Mode>], ratio: Option<f64>) {
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
