//! `reminders`: durable reminders firing for many passivated carts. Each run starts a fresh
//! store-svc and session-svc with a short `--cart-ttl` and `--cart-idle-timeout`, seeds
//! `--carts` carts with StartSession, waits until every cart actor has passivated, then
//! watches the carts' expiry reminders fall due and fire: each one re-activates its cart,
//! which expires and passivates again. At the end a sample of the carts is read back to check
//! that they expired.
//!
//! What it reports per run: the seeding rate; session-svc's RSS fresh, right after seeding and
//! with every cart passivated (holding only its durable reminder); the firing rate (reminders
//! fired per second, from session-svc's `session_reminders_fired_total`) and how long it took
//! from the first due reminder until the reminder index was empty; live actors and RSS at
//! their peak while firing, and both servers' CPU over the firing.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Args;
use proto::{
    session::v1::{GetSessionRequest, SessionStatus, StartSessionRequest},
    store::v1::ScanRequest,
};
use tests::{
    ServiceProcess,
    load::{self, scrape_metrics},
    store::{STORE_BINARY, STORE_BINARY_ENV, StoreClient},
};
use tokio::task::JoinSet;

use crate::{
    carts::{CartApi, cart_clients},
    report::{percent, print_header_end, print_header_start},
    servers::{SESSION_BINARY, require_binaries, spawn_metered_stack},
};

/// The store namespace and key prefix of the carts' reminders (session-svc's index).
const REMINDERS_NAMESPACE: &str = "reminders";
const CART_REMINDERS: &str = "cart/";

/// session-svc's metrics this benchmark reads.
const FIRED: &str = "session_reminders_fired_total{kind=\"cart\"}";
const LIVE: &str = "session_actors{kind=\"cart\",status=\"live\"}";

/// Seeding rate assumed when `--ttl` is not given: slower than this machine seeds, so the
/// default TTL leaves time to seed and passivate before the first reminder falls due.
const ASSUMED_SEEDS_PER_SEC: u64 = 4_000;

/// Extra time the default TTL allows beyond seeding and three idle timeouts.
const TTL_MARGIN: Duration = Duration::from_secs(30);

/// How long the reminder index may stay non-empty with no reminder fired before a run fails.
const STALL: Duration = Duration::from_secs(60);

/// Attempts at one StartSession while seeding (a refusal under load is retried).
const SEED_ATTEMPTS: u32 = 5;

#[derive(Debug, Args)]
pub struct Reminders {
    /// Carts seeded per run, each holding a durable expiry reminder.
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub carts: u32,
    /// Concurrent seeding clients (each has one StartSession in flight at a time).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// HTTP/2 connections the seeding clients are spread over.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub connections: u32,
    /// session-svc `--cart-idle-timeout`: how soon a seeded cart passivates.
    #[arg(long, default_value = "5s", value_parser = bounded_duration)]
    pub idle_timeout: Duration,
    /// session-svc `--cart-ttl`: when the carts' reminders fall due, counted from each cart's
    /// StartSession. Default: the time to seed `--carts` at 4,000/s, plus three idle
    /// timeouts and 30 s, so that every cart has passivated before its reminder fires.
    #[arg(long, value_parser = bounded_duration)]
    pub ttl: Option<Duration>,
    /// Carts read back with GetSession after the firing, to check that they expired.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub verify: u32,
    /// Runs, each on fresh servers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
}

impl Reminders {
    /// The `--cart-ttl` session-svc gets.
    fn ttl(&self) -> Duration {
        self.ttl.unwrap_or_else(|| {
            Duration::from_secs(u64::from(self.carts).div_ceil(ASSUMED_SEEDS_PER_SEC))
                + self.idle_timeout * 3
                + TTL_MARGIN
        })
    }
}

/// A flag's duration, at most two hours so a typo cannot run for a day.
fn bounded_duration(text: &str) -> anyhow::Result<Duration> {
    let duration = load::parse_duration(text)?;
    anyhow::ensure!(duration >= Duration::from_millis(1), "at least 1ms");
    anyhow::ensure!(duration <= Duration::from_secs(7200), "at most 120m");
    Ok(duration)
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    /// Carts seeded, and how long it took.
    seeded: u64,
    seeding: Duration,
    /// StartSessions retried after a refusal while seeding.
    seed_retries: u64,
    /// From the first seeded cart's last update to the last one's: the window in which the
    /// reminders fall due, one TTL later.
    due_window: Duration,
    /// session-svc's RSS fresh, right after seeding, and with every cart passivated.
    rss_fresh: u64,
    rss_seeded: u64,
    rss_passivated: u64,
    /// Live carts right after seeding.
    live_seeded: f64,
    /// How long after seeding the last cart passivated.
    passivating: Duration,
    /// Reminder index records once seeding is done (one per cart).
    indexed: u64,
    /// Live carts and reminders already fired when the first reminder fell due.
    live_at_due: f64,
    fired_before_due: f64,
    /// From the first reminder falling due until the reminder index was empty.
    firing: Duration,
    /// Reminders fired in each second of the firing (from its first to its last one fired).
    per_second: Vec<f64>,
    /// Reminders fired in all (a resent one counts again).
    fired: f64,
    /// Peaks while firing.
    peak_live: f64,
    peak_rss: u64,
    /// CPU over the firing, in % of one core.
    session_cpu: Option<f64>,
    store_cpu: Option<f64>,
    /// Carts read back, and how many of them had expired (status and last event).
    verified: u32,
    expired: u32,
}

impl Run {
    fn seeds_per_sec(&self) -> f64 {
        self.seeded as f64 / self.seeding.as_secs_f64().max(1e-9)
    }

    /// The median of the per-second firing rates.
    fn median_rate(&self) -> Option<f64> {
        load::median(&self.per_second)
    }

    /// Reminders falling due per second (seeding's pace, one TTL later).
    fn due_rate(&self) -> f64 {
        self.seeded as f64 / self.due_window.as_secs_f64().max(1e-3)
    }

    /// Carts expired per second over the whole firing.
    fn mean_rate(&self) -> f64 {
        self.seeded as f64 / self.firing.as_secs_f64().max(1e-9)
    }
}

pub async fn run(args: Reminders) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    print_header(&args);
    print_runs_head();
    let mut runs = Vec::new();
    for number in 1..=args.runs {
        eprintln!("run {number}/{}: {} carts ...", args.runs, args.carts);
        let run = one_run(&args)
            .await
            .with_context(|| format!("reminders, run {number}"))?;
        print_run_row(number, &run);
        runs.push(run);
    }
    print_summary(&runs);
    Ok(())
}

/// Seeds, waits for passivation, watches the reminders fire, verifies: one run on fresh
/// servers, which are killed when it ends.
async fn one_run(args: &Reminders) -> anyhow::Result<Run> {
    let extra = [
        format!("--cart-ttl={}ms", args.ttl().as_millis()),
        format!("--cart-idle-timeout={}ms", args.idle_timeout.as_millis()),
    ];
    let (store, session, [_, session_metrics]) = spawn_metered_stack(None, &extra).await?;
    let metrics = || async move { scrape_metrics(session_metrics).await };
    let mut run = Run {
        rss_fresh: session.rss_bytes()?,
        ..Run::default()
    };
    let carts = cart_clients(&session, args.connections).await?;
    let mut index = store.client().await.context("connecting to store-svc")?;

    // Seed.
    let started = Instant::now();
    let seeded = seed(&carts, args).await?;
    run.seeding = started.elapsed();
    run.seeded = seeded.count;
    run.seed_retries = seeded.retries;
    run.due_window = Duration::from_millis(seeded.last_ms.saturating_sub(seeded.first_ms) as u64);
    run.rss_seeded = session.rss_bytes()?;
    run.live_seeded = metric(&metrics().await?, LIVE)?;
    eprintln!(
        "  seeded {} carts in {:.1} s ({:.0}/s); {} live",
        run.seeded,
        run.seeding.as_secs_f64(),
        run.seeds_per_sec(),
        run.live_seeded
    );

    // Wait until every cart has passivated.
    let seeded_at = Instant::now();
    let patience = args.idle_timeout * 4 + Duration::from_secs(60);
    loop {
        let live = metric(&metrics().await?, LIVE)?;
        if live == 0.0 {
            break;
        }
        if seeded_at.elapsed() > patience {
            bail!("{live} carts still live {patience:?} after seeding");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.passivating = seeded_at.elapsed();
    // A moment for the allocator to give back what the stopped actors freed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.rss_passivated = session.rss_bytes()?;
    run.indexed = count_index(&mut index).await?;
    eprintln!(
        "  all passivated after {:.1} s; RSS {} MiB; {} reminders indexed",
        run.passivating.as_secs_f64(),
        mib(run.rss_passivated),
        run.indexed
    );

    // Wait for the first reminder to fall due.
    let first_due = seeded.first_ms + i64::try_from(args.ttl().as_millis())?;
    let until_due = Duration::from_millis(first_due.saturating_sub(now_ms()).max(0) as u64);
    if until_due.is_zero() {
        eprintln!("  warning: the first reminder fell due before every cart had passivated");
    }
    eprintln!("  first reminder due in {:.1} s", until_due.as_secs_f64());
    tokio::time::sleep(until_due).await;
    let at_due = metrics().await?;
    run.live_at_due = metric(&at_due, LIVE)?;
    run.fired_before_due = metric(&at_due, FIRED)?;

    watch_firing(&mut run, &session, store.pid(), &metrics, &mut index).await?;
    eprintln!(
        "  fired {} reminders in {:.1} s (median {:.0}/s)",
        run.fired,
        run.firing.as_secs_f64(),
        run.median_rate().unwrap_or(0.0)
    );

    let mut cart = carts[0].clone();
    let (verified, expired) = verify(&mut cart, args).await?;
    run.verified = verified;
    run.expired = expired;

    drop(carts);
    drop(session);
    drop(store);
    Ok(run)
}

/// What seeding did.
struct Seeded {
    /// Carts started.
    count: u64,
    /// StartSessions retried.
    retries: u64,
    /// The earliest and latest update time of a seeded cart, in ms since the epoch.
    first_ms: i64,
    last_ms: i64,
}

/// The key of cart number `index`.
fn cart_key(index: u64) -> String {
    format!("remind-{index:08}")
}

/// Starts `--carts` carts with `--clients` concurrent clients; reports progress on stderr.
async fn seed(carts: &[CartApi], args: &Reminders) -> anyhow::Result<Seeded> {
    let total = u64::from(args.carts);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let first_ms = Arc::new(AtomicI64::new(i64::MAX));
    let last_ms = Arc::new(AtomicI64::new(i64::MIN));
    let mut workers = JoinSet::new();
    for worker in 0..args.clients as usize {
        let mut cart = carts[worker % carts.len()].clone();
        let (next, done, retries) = (next.clone(), done.clone(), retries.clone());
        let (first_ms, last_ms) = (first_ms.clone(), last_ms.clone());
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return anyhow::Ok(());
                }
                let request = StartSessionRequest {
                    key: cart_key(index),
                    domain: "shop.example".to_owned(),
                    landing: "/products/loadgen".to_owned(),
                    ip: "203.0.113.7".to_owned(),
                    member_id: format!("member-{index}"),
                };
                let mut attempt = 1;
                let session = loop {
                    match cart.start_session(request.clone()).await {
                        Ok(session) => break session.into_inner(),
                        Err(status) if attempt < SEED_ATTEMPTS => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            attempt += 1;
                            back_off(&status).await;
                        }
                        Err(status) => {
                            return Err(status).context(format!("StartSession {index}"));
                        }
                    }
                };
                let updated = session
                    .update_time
                    .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                first_ms.fetch_min(updated, Ordering::Relaxed);
                last_ms.fetch_max(updated, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(10));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                eprintln!("  seeding: {} carts", done.load(Ordering::Relaxed));
            }
        })
    };
    let mut outcome = Ok(());
    while let Some(worker) = workers.join_next().await {
        if let Err(error) = worker.context("a seeding task panicked").and_then(|r| r) {
            outcome = Err(error);
            workers.abort_all();
        }
    }
    progress.abort();
    outcome?;
    Ok(Seeded {
        count: done.load(Ordering::Relaxed),
        retries: retries.load(Ordering::Relaxed),
        first_ms: first_ms.load(Ordering::Relaxed),
        last_ms: last_ms.load(Ordering::Relaxed),
    })
}

/// Waits before retrying a refused StartSession: what the server's RetryInfo asks, or 100 ms.
async fn back_off(status: &tonic::Status) {
    let asked = tonic_types::StatusExt::get_details_retry_info(status)
        .and_then(|info| info.retry_delay)
        .unwrap_or(Duration::from_millis(100));
    tokio::time::sleep(asked.min(Duration::from_secs(2))).await;
}

/// Samples session-svc once a second from the first reminder's due time until the reminder
/// index is empty: reminders fired, live carts, RSS; and both servers' CPU over that time.
async fn watch_firing<F, Fut>(
    run: &mut Run,
    session: &ServiceProcess,
    store_pid: u32,
    metrics: &F,
    index: &mut StoreClient,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<std::collections::HashMap<String, f64>>>,
{
    let began = Instant::now();
    let cpu = |pid| load::process_cpu_time(pid).ok();
    let (session_cpu, store_cpu) = (cpu(session.pid()), cpu(store_pid));
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut previous = (began, run.fired_before_due);
    let mut rates = Vec::new();
    let mut last_progress = began;
    loop {
        ticks.tick().await;
        let sample = metrics().await?;
        let now = Instant::now();
        let fired = metric(&sample, FIRED)?;
        run.peak_live = run.peak_live.max(metric(&sample, LIVE)?);
        run.peak_rss = run.peak_rss.max(session.rss_bytes()?);
        rates.push((fired - previous.1) / (now - previous.0).as_secs_f64());
        if fired > previous.1 {
            last_progress = now;
        }
        previous = (now, fired);
        if index_is_empty(index).await? {
            run.firing = began.elapsed();
            run.fired = fired - run.fired_before_due;
            break;
        }
        if last_progress.elapsed() > STALL {
            bail!("no reminder fired for {STALL:?}, and the reminder index is not empty");
        }
        if rates.len() % 10 == 0 {
            eprintln!(
                "  firing: {fired} fired, last second {:.0}/s",
                rates.last().copied().unwrap_or(0.0)
            );
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let percent =
        |before: Option<Duration>, pid| Some(100.0 * (cpu(pid)? - before?).as_secs_f64() / elapsed);
    run.session_cpu = percent(session_cpu, session.pid());
    run.store_cpu = percent(store_cpu, store_pid);
    run.per_second = firing_seconds(&rates).to_vec();
    Ok(())
}

/// The per-second rates from the first second that fired to the last one that did: the
/// seconds before the first tick and after the last send are not the firing rate.
fn firing_seconds(rates: &[f64]) -> &[f64] {
    let first = rates.iter().position(|&r| r > 0.0);
    let last = rates.iter().rposition(|&r| r > 0.0);
    match (first, last) {
        (Some(first), Some(last)) => &rates[first..=last],
        _ => &[],
    }
}

/// Whether the carts' reminder index is empty: every reminder fired and was retired.
async fn index_is_empty(index: &mut StoreClient) -> anyhow::Result<bool> {
    let page = index
        .scan(scan_request(1, String::new()))
        .await
        .context("scanning the reminder index")?;
    Ok(page.into_inner().entries.is_empty())
}

/// Records in the carts' reminder index, page by page.
async fn count_index(index: &mut StoreClient) -> anyhow::Result<u64> {
    let mut count = 0;
    let mut token = String::new();
    loop {
        let page = index
            .scan(scan_request(1000, token))
            .await
            .context("scanning the reminder index")?
            .into_inner();
        count += page.entries.len() as u64;
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        token = page.next_page_token;
    }
}

fn scan_request(page_size: i32, page_token: String) -> ScanRequest {
    ScanRequest {
        namespace: REMINDERS_NAMESPACE.to_owned(),
        prefix: CART_REMINDERS.to_owned(),
        page_size,
        page_token,
    }
}

/// Reads `--verify` distinct random carts back; returns how many were read and how many of
/// those expired (status expired, and `expired` its latest event).
async fn verify(cart: &mut CartApi, args: &Reminders) -> anyhow::Result<(u32, u32)> {
    let amount = args.verify.min(args.carts) as usize;
    let picked = rand::seq::index::sample(&mut rand::rng(), args.carts as usize, amount);
    let mut expired = 0;
    for index in picked {
        let session = cart
            .get_session(GetSessionRequest {
                key: cart_key(index as u64),
            })
            .await
            .context("GetSession while verifying")?
            .into_inner();
        let last_event = session.logs.last().map(|log| log.event.as_str());
        if session.status == SessionStatus::Expired as i32 && last_event == Some("expired") {
            expired += 1;
        }
    }
    Ok((amount as u32, expired))
}

/// The value of sample `name`.
fn metric(sample: &std::collections::HashMap<String, f64>, name: &str) -> anyhow::Result<f64> {
    sample
        .get(name)
        .copied()
        .with_context(|| format!("session-svc's /metrics has no {name}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Bytes in MiB, no decimals.
fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

fn print_header(args: &Reminders) {
    print_header_start(
        "session-svc durable reminders: expiring many passivated carts",
        "session-svc, store-svc and loadgen",
    );
    println!(
        "- each run: a fresh store-svc (defaults) and session-svc with `--cart-ttl {}ms \
         --cart-idle-timeout {}ms`; {} carts seeded with StartSession by {} concurrent clients \
         over {} HTTP/2 connections (each commit writes the cart, its `started` event and its \
         reminder's index record, durable before OK; the reminders fall due one TTL later at the \
         pace the carts were seeded, \"due/s\"); then wait until every cart actor has \
         passivated; then, from the first reminder's due time, sample session-svc every second \
         until the reminder index is empty; then GetSession on {} random carts; {} run(s)",
        args.ttl().as_millis(),
        args.idle_timeout.as_millis(),
        args.carts,
        args.clients,
        args.connections,
        args.verify.min(args.carts),
        args.runs
    );
    println!(
        "- fired/s: `session_reminders_fired_total{{kind=\"cart\"}}` per second (a reminder is \
         counted when handed to its cart's mailbox, re-activating the cart; a resend counts \
         again); median over the seconds from the first to the last that fired; mean = carts \
         / firing time; firing time: from the first reminder's due time until the index is \
         empty (every cart expired and its reminder retired in the same commit)"
    );
    println!(
        "- RSS: session-svc's VmRSS; \"passivated\" is with 0 live actors after seeding; CPU in \
         % of one core over the firing time"
    );
    print_header_end();
}

fn print_runs_head() {
    println!("## Runs\n");
    println!(
        "| run | carts | seeding s | seeded/s | retries | RSS fresh MiB | RSS seeded MiB (live) \
         | RSS passivated MiB | indexed | due/s | live at due | firing s | fired/s median | fired/s \
         min–max | carts expired/s (mean) | fired | peak live | peak RSS MiB | session-svc CPU \
         | store-svc CPU | verified expired |"
    );
    println!("|---:{}", "|---:".repeat(20) + "|");
}

fn print_run_row(number: u32, run: &Run) {
    let min = run.per_second.iter().copied().fold(f64::INFINITY, f64::min);
    let max = run.per_second.iter().copied().fold(0.0, f64::max);
    let cells = [
        number.to_string(),
        run.seeded.to_string(),
        format!("{:.1}", run.seeding.as_secs_f64()),
        format!("{:.0}", run.seeds_per_sec()),
        run.seed_retries.to_string(),
        mib(run.rss_fresh),
        format!("{} ({})", mib(run.rss_seeded), run.live_seeded),
        mib(run.rss_passivated),
        run.indexed.to_string(),
        format!("{:.0}", run.due_rate()),
        run.live_at_due.to_string(),
        format!("{:.1}", run.firing.as_secs_f64()),
        format!("{:.0}", run.median_rate().unwrap_or(0.0)),
        format!("{min:.0}–{max:.0}"),
        format!("{:.0}", run.mean_rate()),
        run.fired.to_string(),
        run.peak_live.to_string(),
        mib(run.peak_rss),
        percent(run.session_cpu),
        percent(run.store_cpu),
        format!("{}/{}", run.expired, run.verified),
    ];
    println!("| {} |", cells.join(" | "));
}

fn print_summary(runs: &[Run]) {
    let median = |stat: fn(&Run) -> Option<f64>| {
        let values: Vec<f64> = runs.iter().filter_map(stat).collect();
        load::median(&values)
    };
    let number = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    let seconds = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    let in_mib = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| mib(v as u64));
    println!("\n## Summary (median of {} runs)\n", runs.len());
    println!("| figure | value |\n|---|---:|");
    let rows = [
        (
            "seeded carts/s",
            number(median(|r| Some(r.seeds_per_sec()))),
        ),
        (
            "session-svc RSS, carts passivated (MiB)",
            in_mib(median(|r| Some(r.rss_passivated as f64))),
        ),
        (
            "reminders fired/s (median of per-second rates)",
            number(median(Run::median_rate)),
        ),
        (
            "firing time (s)",
            seconds(median(|r| Some(r.firing.as_secs_f64()))),
        ),
        (
            "carts expired/s over the firing",
            number(median(|r| Some(r.mean_rate()))),
        ),
        (
            "peak live carts while firing",
            number(median(|r| Some(r.peak_live))),
        ),
        (
            "peak session-svc RSS while firing (MiB)",
            in_mib(median(|r| Some(r.peak_rss as f64))),
        ),
        (
            "session-svc CPU while firing (%)",
            number(median(|r| r.session_cpu)),
        ),
        (
            "store-svc CPU while firing (%)",
            number(median(|r| r.store_cpu)),
        ),
    ];
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
    let expired: u32 = runs.iter().map(|r| r.expired).sum();
    let verified: u32 = runs.iter().map(|r| r.verified).sum();
    println!("\nVerified: {expired} of {verified} carts read back had expired.\n");
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_firing_seconds_are_those_from_the_first_to_the_last_that_fired() {
        assert_eq!(
            firing_seconds(&[0.0, 0.0, 4096.0, 0.0, 4096.0, 8192.0, 0.0]),
            [4096.0, 0.0, 4096.0, 8192.0]
        );
        assert!(firing_seconds(&[0.0, 0.0]).is_empty());
    }

    #[test]
    fn the_default_ttl_leaves_time_to_seed_and_passivate() {
        let args = Reminders {
            carts: 1_000_000,
            clients: 256,
            connections: 8,
            idle_timeout: Duration::from_secs(5),
            ttl: None,
            verify: 1000,
            runs: 1,
        };
        assert_eq!(args.ttl(), Duration::from_secs(250 + 15 + 30));
        let args = Reminders {
            ttl: Some(Duration::from_secs(60)),
            ..args
        };
        assert_eq!(args.ttl(), Duration::from_secs(60));
    }
}
