//! `import-latency`: do interactive requests keep their latency while an import runs? The p99
//! of ListEntries and of AddItem under a light interactive load, with no job running (idle)
//! and while a large ImportEntries job runs through the same list actors' runtime.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use proto::session::v1::{
    AddEntryRequest, GetJobRequest, ImportEntriesRequest, JobState, ListEntriesRequest,
    job_service_client::JobServiceClient, todo_service_client::TodoServiceClient,
};
use tests::{
    load::{self, Call, LoadConfig, LoadReport, median},
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tonic::transport::Channel;

use crate::{
    carts::{add_item_request, cart_clients, start_sessions},
    measure::{WindowSample, sample_window},
    report::{met, ms, p99, percent, print_header_end, print_header_start},
    servers::{SESSION_BINARY, connect, require_binaries, spawn_metered_stack},
};

/// Lists the interactive ListEntries read, each with [`INTERACTIVE_ENTRIES`] entries.
const INTERACTIVE_LISTS: usize = 100;
const INTERACTIVE_ENTRIES: usize = 20;
/// Carts the interactive AddItem writes to.
const INTERACTIVE_CARTS: usize = 100;
/// The target: interactive p99 during an import at most this many times the idle p99.
const TARGET_RATIO: f64 = 1.5;

#[derive(Debug, Args)]
pub struct ImportLatency {
    /// Closed-loop interactive clients: half send ListEntries, half AddItem.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub clients: u32,
    /// HTTP/2 connections the interactive clients are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub connections: u32,
    /// Measured time per run and target.
    #[arg(long, default_value = "10s", value_parser = crate::bounded_duration)]
    pub duration: std::time::Duration,
    /// Unmeasured interactive load before each measurement.
    #[arg(long, default_value = "2s", value_parser = crate::bounded_duration)]
    pub warmup: std::time::Duration,
    /// Runs; each measures idle and importing, in rotating order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// Entries in the import.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub entries: u64,
    /// Lists the import spreads its entries over (a list holds at most 10,000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub lists: u64,
    /// Extra session-svc flags, e.g. `--session-arg=--job-in-flight=4` (repeatable).
    #[arg(long = "session-arg", allow_hyphen_values = true)]
    pub session_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Importing,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Importing => "importing",
        }
    }
}

/// One phase's measurement.
struct Row {
    run: u32,
    phase: Phase,
    list: LoadReport,
    add: LoadReport,
    /// Entries the job processed per second during the window.
    imported_per_sec: Option<f64>,
    /// Whether the job ran the whole window (false: the measurement is not "during").
    ran_throughout: bool,
    window: WindowSample,
}

pub async fn run(args: ImportLatency) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    print_header(&args);
    println!("## Runs\n");
    println!(
        "| run | phase | ListEntries ok/s | ListEntries p50 ms | ListEntries p99 ms | AddItem ok/s | AddItem p50 ms | AddItem p99 ms | errors | import entries/s | job ran throughout | session-svc CPU | store-svc CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for run in 1..=args.runs {
        let order = if run % 2 == 1 {
            [Phase::Idle, Phase::Importing]
        } else {
            [Phase::Importing, Phase::Idle]
        };
        for phase in order {
            eprintln!("run {run}/{}: {} ...", args.runs, phase.label());
            let row = measure(&args, run, phase)
                .await
                .with_context(|| format!("import-latency, {}", phase.label()))?;
            print_row(&row);
            rows.push(row);
        }
    }
    print_summary(&rows);
    Ok(())
}

fn print_row(row: &Row) {
    let errors = row.list.error_count() + row.add.error_count();
    println!(
        "| {} | {} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
        row.run,
        row.phase.label(),
        row.list.ops_per_sec(),
        ms(row.list.percentile_ms(50.0)),
        ms(p99(&row.list)),
        row.add.ops_per_sec(),
        ms(row.add.percentile_ms(50.0)),
        ms(p99(&row.add)),
        errors,
        row.imported_per_sec
            .map_or("-".to_owned(), |r| format!("{r:.0}")),
        match row.phase {
            Phase::Idle => "-",
            Phase::Importing if row.ran_throughout => "yes",
            Phase::Importing => "**no**",
        },
        percent(row.window.cpu(0)),
        percent(row.window.cpu(1)),
    );
}

/// Which of a row's two reports.
type Pick = fn(&Row) -> &LoadReport;

fn print_summary(rows: &[Row]) {
    let median_p99 = |phase: Phase, pick: Pick| {
        let values: Vec<f64> = rows
            .iter()
            .filter(|r| r.phase == phase)
            .filter_map(|r| p99(pick(r)))
            .collect();
        median(&values)
    };
    println!("\n## Summary (medians of the runs)\n");
    println!(
        "| request | idle p99 ms | importing p99 ms | importing / idle | target ≤ {TARGET_RATIO}× |"
    );
    println!("|---|---|---|---|---|");
    let ops: [(&str, Pick); 2] = [("ListEntries", |r| &r.list), ("AddItem", |r| &r.add)];
    for (name, pick) in ops {
        let idle = median_p99(Phase::Idle, pick);
        let busy = median_p99(Phase::Importing, pick);
        let ratio = idle.zip(busy).map(|(i, b)| b / i);
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(idle),
            ms(busy),
            ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}×")),
            ratio.map_or("n/a", |r| met(r <= TARGET_RATIO)),
        );
    }
    let rates: Vec<f64> = rows.iter().filter_map(|r| r.imported_per_sec).collect();
    if let Some(rate) = median(&rates) {
        println!("\nThe import ran at a median {rate:.0} entries/s during the measured windows.");
    }
}

/// A fresh stack; the interactive data set; for `Importing`, a job uploaded and running; then
/// the two interactive loops side by side.
async fn measure(args: &ImportLatency, run: u32, phase: Phase) -> anyhow::Result<Row> {
    let (store, session, metrics) = spawn_metered_stack(None, &args.session_args).await?;
    let channels = connect(&session, args.connections).await?;
    let todos: Vec<TodoServiceClient<Channel>> = channels
        .iter()
        .cloned()
        .map(TodoServiceClient::new)
        .collect();
    let carts = cart_clients(&session, args.connections).await?;
    let mut setup = todos[0].clone();
    for list in 0..INTERACTIVE_LISTS {
        for n in 0..INTERACTIVE_ENTRIES {
            setup
                .add_entry(AddEntryRequest {
                    list: format!("desk-{list}"),
                    date: "2026-12-01".into(),
                    title: format!("task {n}"),
                    request_id: String::new(),
                })
                .await
                .context("setting up the interactive lists")?;
        }
    }
    let cart_keys = Arc::new(start_sessions(&carts, INTERACTIVE_CARTS, 0).await?);

    let mut jobs = JobServiceClient::new(channels[0].clone());
    let job = match phase {
        Phase::Idle => None,
        Phase::Importing => {
            let (entries, lists) = (args.entries, args.lists);
            let stream = tokio_stream::iter((0..entries).map(move |i| ImportEntriesRequest {
                list: format!("import-{}", i % lists),
                date: format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
                title: format!("imported entry {i}"),
                line: i + 1,
            }));
            let job = jobs
                .import_entries(stream)
                .await
                .context("ImportEntries")?
                .into_inner();
            Some(job.id)
        }
    };

    let config = LoadConfig {
        clients: (args.clients / 2) as usize,
        warmup: args.warmup,
        duration: args.duration,
        error_backoff: std::time::Duration::from_millis(1),
        drain_timeout: std::time::Duration::from_secs(10),
    };
    let todos = Arc::new(todos);
    let list_request = move |call: Call| {
        let mut client = todos[call.task % todos.len()].clone();
        let list = (call.task as u64 * 7 + call.seq) % INTERACTIVE_LISTS as u64;
        let request = ListEntriesRequest {
            list: format!("desk-{list}"),
            ..Default::default()
        };
        async move { client.list_entries(request).await.map(drop) }
    };
    let carts = Arc::new(carts);
    let add_request = move |call: Call| {
        let mut client = carts[call.task % carts.len()].clone();
        let key = &cart_keys[(call.task + call.seq as usize) % cart_keys.len()];
        let mut request = add_item_request(key, (call.seq % 50) as u32);
        request.request_id = format!("loadgen-{}-{}", call.task, call.seq);
        async move { client.add_item(request).await.map(drop) }
    };
    let processed = |jobs: &mut JobServiceClient<Channel>, id: Option<String>| {
        let mut jobs = jobs.clone();
        async move {
            let id = id?;
            let job = jobs.get_job(GetJobRequest { id }).await.ok()?.into_inner();
            Some((job.processed, job.state()))
        }
    };
    let before = tokio::spawn({
        let (mut jobs, id, warmup) = (jobs.clone(), job.clone(), args.warmup);
        async move {
            // Sampled when the warm-up ends, as the window opens.
            tokio::time::sleep(warmup).await;
            processed(&mut jobs, id).await
        }
    });
    let pids = [session.pid(), store.pid()];
    let window_config = config.clone();
    let (list, add, window) = tokio::join!(
        load::run_closed_loop(&config, list_request),
        load::run_closed_loop(&config, add_request),
        sample_window(&window_config, &pids, &metrics),
    );
    let after = processed(&mut jobs, job.clone()).await;
    let before = before.await.ok().flatten();
    let (imported_per_sec, ran_throughout) = match (before, after) {
        (Some((b, _)), Some((a, state))) => (
            Some((a - b) as f64 / window.duration.as_secs_f64().max(0.001)),
            state == JobState::Running && b > 0,
        ),
        _ => (None, false),
    };
    drop((store, session));
    Ok(Row {
        run,
        phase,
        list,
        add,
        imported_per_sec,
        ran_throughout,
        window,
    })
}

fn print_header(args: &ImportLatency) {
    print_header_start(
        "session-svc: interactive latency while an import job runs",
        "session-svc, store-svc and loadgen",
    );
    println!(
        "- load: {} closed-loop interactive clients over {} HTTP/2 connections, half sending \
         ListEntries of one of {INTERACTIVE_LISTS} lists of {INTERACTIVE_ENTRIES} entries, half \
         AddItem (with a request id) to one of {INTERACTIVE_CARTS} carts; {:?} warm-up, {:?} \
         measured; {} run(s), fresh servers per run and phase",
        args.clients, args.connections, args.warmup, args.duration, args.runs
    );
    println!(
        "- importing: an ImportEntries job of {} entries over {} lists, uploaded before the \
         warm-up and running through the window (session-svc flags: {})",
        args.entries,
        args.lists,
        if args.session_args.is_empty() {
            "defaults".to_owned()
        } else {
            args.session_args.join(" ")
        }
    );
    print_header_end();
}
