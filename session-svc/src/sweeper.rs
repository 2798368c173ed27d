//! The sweeper: one background task doing the upkeep no request does, by paging through
//! store-svc at a bounded rate.
//!
//! - **Reconcile** (`reconcile` job): every hold in `reservations` is compared with the stored
//!   record of its cart. A hold whose cart is gone, closed, or holds another number is sent
//!   to that cart as a [`Reconcile`] message, so the cart's actor (never the sweeper) sets it
//!   to what the cart holds: over-held units return to stock after a crash between a sku's
//!   write and its cart's, or a release that failed.
//! - **Archive** (`archive_cart` and `archive_todo` jobs): checked-out, ended and expired carts untouched for
//!   `--archive-after` leave the live namespaces. Their events move first, in commits of at
//!   most [`EVENTS_PER_COMMIT`] (each an all-or-nothing move of a few events), then an
//!   [`Archive`] message through the cart's actor moves its record and order in one commit.
//!   A crash in between leaves a closed cart with fewer events, which the next pass finishes.
//!   To-do lists have no closed state: with `--todo-archive-after` set (it is off by
//!   default), a list untouched that long is moved by an [`ArchiveList`] message to its
//!   actor.
//!
//! Each job keeps its place in the `sweeper` namespace (the store's page token, saved after
//! every page), so a pass cut short by a restart resumes where it was. Records are looked at
//! no faster than `--sweep-rate` per second. Progress is counted in [`Progress`], shown in
//! `/metrics` and `AdminService/GetStats`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kit::{
    deadline::Deadline,
    echo::echo,
    metrics::{counter, counters, gauges},
};
use prometheus_client::encoding::DescriptorEncoder;
use prost::Message as _;
use proto::session::v1::{self as pb, ActorRecord};
use tokio::{sync::watch, time::Instant};

use crate::{
    cart::{
        Archive, CartEntity, Reconcile,
        entity::{EVENTS_NAMESPACE, archive_id, events_prefix},
    },
    config::ArchiveMode,
    domain::Cart,
    error::Error,
    inventory::entity::RESERVATIONS_NAMESPACE,
    runtime::{Ctx, Entity, Kind, Remind, Store, store::mutation, unescape_key},
    todo::{TodoEntity, entity::ArchiveList},
};

/// Store namespace archived sessions move to: `cart/<id>`, `orders/<id>` and
/// `cart_events/<id>/<seq>`, where `<id>` is [`archive_id`] (escaped key `@` start time).
pub const ARCHIVE_NAMESPACE: &str = "archive";
/// Store namespace of the sweeper's cursors, so a pass resumes after a restart.
pub const SWEEPER_NAMESPACE: &str = "sweeper";

/// Records read per page.
const PAGE: i32 = 100;
/// Events moved per commit: an archive put and a live delete each, within store-svc's 100
/// mutations per commit.
pub const EVENTS_PER_COMMIT: usize = 50;
/// How long one store call or actor message of the sweeper may take.
const CALL_BUDGET: Duration = Duration::from_secs(10);

/// How the sweeper runs.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// Rest between passes.
    pub interval: Duration,
    /// Records looked at per second, at most.
    pub rate: u32,
    /// Closed carts untouched this long are archived (`None`: never).
    pub archive_after: Option<Duration>,
    /// To-do lists untouched this long are archived (`None`: never, the default).
    pub todo_archive_after: Option<Duration>,
    /// Move or delete.
    pub archive: ArchiveMode,
}

/// The jobs of a pass, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Holds on stock against their carts.
    Reconcile,
    /// Old closed carts out of the live namespaces.
    ArchiveCart,
    /// Lists untouched for `--todo-archive-after` out of the live namespaces.
    ArchiveTodo,
}

impl Job {
    /// Every job, in the order a pass runs them.
    pub const ALL: [Job; 3] = [Job::Reconcile, Job::ArchiveCart, Job::ArchiveTodo];

    /// Its name: the cursor's key, the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Job::Reconcile => "reconcile",
            Job::ArchiveCart => "archive_cart",
            Job::ArchiveTodo => "archive_todo",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One job's counters.
#[derive(Debug, Default)]
pub struct JobProgress {
    /// Passes finished.
    pub passes: AtomicU64,
    /// Records looked at in the pass running now (or the last one, between passes).
    pub pass_scanned: AtomicU64,
    /// Records looked at, in all.
    pub scanned: AtomicU64,
    /// Records acted on (holds reconciled, carts archived), in all.
    pub acted: AtomicU64,
    /// Records it could not act on (a store outage, a busy actor); retried next pass.
    pub failed: AtomicU64,
}

/// The sweeper's progress, shared with `/metrics` and GetStats.
#[derive(Debug, Default)]
pub struct Progress {
    jobs: [JobProgress; 3],
    /// Events moved to the archive (or deleted), in all.
    pub events_moved: AtomicU64,
    /// Active carts stored without a reminder (from before reminders) given one.
    pub reminders_backfilled: AtomicU64,
}

impl Progress {
    /// The counters of `job`.
    pub fn job(&self, job: Job) -> &JobProgress {
        &self.jobs[job.index()]
    }

    /// GetStats' view.
    pub fn wire(&self) -> Vec<pb::SweepJob> {
        Job::ALL
            .iter()
            .map(|&job| {
                let p = self.job(job);
                pb::SweepJob {
                    job: job.name().to_string(),
                    passes: p.passes.load(Ordering::Relaxed),
                    pass_scanned: p.pass_scanned.load(Ordering::Relaxed),
                    scanned: p.scanned.load(Ordering::Relaxed),
                    acted: p.acted.load(Ordering::Relaxed),
                    failed: p.failed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// One metric of every job: name, whether it is a counter, help, and which counter.
type Series = (
    &'static str,
    bool,
    &'static str,
    fn(&JobProgress) -> &AtomicU64,
);

impl Progress {
    /// Writes the sweeper's figures, per job where they are per job.
    pub fn encode_metrics(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let series: [Series; 5] = [
            (
                "session_sweeper_passes",
                true,
                "Sweeper passes finished.",
                |p| &p.passes,
            ),
            (
                "session_sweeper_pass_scanned",
                false,
                "Records looked at in the current (or last) pass.",
                |p| &p.pass_scanned,
            ),
            (
                "session_sweeper_scanned",
                true,
                "Records the sweeper looked at.",
                |p| &p.scanned,
            ),
            (
                "session_sweeper_acted",
                true,
                "Holds reconciled or carts archived.",
                |p| &p.acted,
            ),
            (
                "session_sweeper_failed",
                true,
                "Records the sweeper could not act on; retried next pass.",
                |p| &p.failed,
            ),
        ];
        for (name, is_counter, help, field) in series {
            let values = Job::ALL.map(|job| {
                (
                    [("job", job.name())],
                    field(self.job(job)).load(Ordering::Relaxed),
                )
            });
            if is_counter {
                counters(e, name, help, values)?;
            } else {
                gauges(
                    e,
                    name,
                    help,
                    values.map(|(labels, v)| (labels, i64::try_from(v).unwrap_or(i64::MAX))),
                )?;
            }
        }
        counter(
            e,
            "session_sweeper_events_moved",
            "Cart events archived or deleted.",
            self.events_moved.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "session_sweeper_reminders_backfilled",
            "Active carts stored without a reminder (from before reminders) given one.",
            self.reminders_backfilled.load(Ordering::Relaxed),
        )
    }
}

/// Paces a job to `rate` records per second.
struct Pace {
    start: Instant,
    rate: f64,
    seen: u64,
}

impl Pace {
    fn new(rate: u32) -> Self {
        Self {
            start: Instant::now(),
            rate: f64::from(rate.max(1)),
            seen: 0,
        }
    }

    /// Waits until one more record is within the rate.
    async fn next(&mut self) {
        self.seen += 1;
        let due = self.start + Duration::from_secs_f64(self.seen as f64 / self.rate);
        tokio::time::sleep_until(due).await;
    }
}

/// The sweeper of the cart kind (and the holds carts put on skus).
pub struct Sweeper {
    carts: Kind<CartEntity>,
    todos: Kind<TodoEntity>,
    store: Store,
    settings: SweepSettings,
    progress: Arc<Progress>,
}

impl Sweeper {
    /// A sweeper over the store of `carts` and `todos`.
    pub fn new(
        carts: Kind<CartEntity>,
        todos: Kind<TodoEntity>,
        settings: SweepSettings,
        progress: Arc<Progress>,
    ) -> Self {
        let store = carts.store().clone();
        Self {
            carts,
            todos,
            store,
            settings,
            progress,
        }
    }

    /// Runs passes until `stop` turns true: each job from its saved place to the end, then a
    /// rest of `interval`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            for job in Job::ALL {
                if *stop.borrow() {
                    return;
                }
                let pass = self.pass(job, stop.clone());
                if let Err(error) = pass.await {
                    // Its cursor is saved: the next pass picks up where this one stopped.
                    tracing::warn!(job = job.name(), %error, "sweeper pass stopped early");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// One job from its saved cursor to the end of its namespace.
    async fn pass(&self, job: Job, stop: watch::Receiver<bool>) -> Result<(), Error> {
        let namespace = match job {
            Job::Reconcile => RESERVATIONS_NAMESPACE,
            Job::ArchiveCart
                if self.settings.archive_after.is_some() || self.carts.entity().ttl.is_some() =>
            {
                CartEntity::KIND
            }
            Job::ArchiveTodo if self.settings.todo_archive_after.is_some() => TodoEntity::KIND,
            Job::ArchiveCart | Job::ArchiveTodo => return Ok(()),
        };
        let progress = self.progress.job(job);
        let (mut token, mut cursor_version) = self.cursor(job).await?;
        if token.is_empty() {
            progress.pass_scanned.store(0, Ordering::Relaxed);
        }
        let mut pace = Pace::new(self.settings.rate);
        loop {
            let (page, next) = self
                .store
                .scan(
                    namespace,
                    "",
                    PAGE,
                    token.clone(),
                    Deadline::after(CALL_BUDGET),
                )
                .await?;
            for entry in page {
                if *stop.borrow() {
                    return Ok(());
                }
                pace.next().await;
                progress.scanned.fetch_add(1, Ordering::Relaxed);
                progress.pass_scanned.fetch_add(1, Ordering::Relaxed);
                let acted = match job {
                    Job::Reconcile => self.reconcile(&entry.key, &entry.value).await,
                    Job::ArchiveCart => self.archive(&entry.key, &entry.value).await,
                    Job::ArchiveTodo => self.archive_list(&entry.key, &entry.value).await,
                };
                match acted {
                    Ok(true) => {
                        progress.acted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(error) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(job = job.name(), key = %echo(&entry.key), %error, "sweeper will retry next pass");
                    }
                }
            }
            if next != token {
                cursor_version = self.save_cursor(job, &next, cursor_version).await?;
            }
            if next.is_empty() {
                progress.passes.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            token = next;
        }
    }

    /// The saved page token of `job` and its record's version ("" and 0: from the start).
    /// The key of `job`'s cursor record. With several replicas each sweeps the keys it serves
    /// and keeps its own place, named by its address.
    fn cursor_key(&self, job: Job) -> String {
        match self.carts.cluster() {
            None => job.name().to_string(),
            Some(cluster) => format!("{}@{}", job.name(), cluster.me()),
        }
    }

    /// Whether this replica serves `kind/key` (always, for a single replica).
    fn serves(&self, kind: &str, key: &str) -> bool {
        self.carts
            .cluster()
            .is_none_or(|c| c.fence(c.shard_of(kind, key)).is_some())
    }

    async fn cursor(&self, job: Job) -> Result<(String, u64), Error> {
        let stored = self
            .store
            .get(
                SWEEPER_NAMESPACE,
                &self.cursor_key(job),
                Deadline::after(CALL_BUDGET),
            )
            .await?;
        Ok(stored.map_or((String::new(), 0), |s| {
            (String::from_utf8_lossy(&s.value).into_owned(), s.version)
        }))
    }

    /// Saves `token` as `job`'s place; returns the cursor record's new version.
    async fn save_cursor(&self, job: Job, token: &str, version: u64) -> Result<u64, Error> {
        let put = mutation(
            SWEEPER_NAMESPACE,
            self.cursor_key(job),
            Some(token.as_bytes().to_vec()),
            version,
        );
        let versions = self
            .store
            .commit(vec![put], Deadline::after(CALL_BUDGET))
            .await?;
        Ok(versions.first().copied().unwrap_or(version + 1))
    }

    /// Checks one hold against its cart's stored record; sends the cart a [`Reconcile`] when
    /// they differ. True if it did.
    async fn reconcile(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        let hold = pb::ReservationRecord::decode(value)
            .map_err(|e| Error::Corrupt(format!("reservation {}: {e}", echo(key))))?;
        let sku = key
            .split_once('/')
            .and_then(|(sku, _)| unescape_key(sku))
            .ok_or_else(|| Error::Corrupt(format!("reservation key {}", echo(key))))?;
        if !self.serves(CartEntity::KIND, &hold.cart) {
            return Ok(false); // another replica's cart: its sweeper reconciles it
        }
        let cart = self.stored_cart(&hold.cart).await?;
        let holds = cart
            .as_ref()
            .filter(|cart| cart.is_active())
            .and_then(|cart| cart.line(&sku))
            .map_or(0, |line| i64::from(line.quantity));
        if cart.as_ref().is_some_and(Cart::is_active) && holds == hold.quantity {
            return Ok(false);
        }
        let deadline = Deadline::after(CALL_BUDGET);
        self.carts
            .call(&hold.cart, Reconcile { sku }, deadline)
            .await?;
        Ok(true)
    }

    /// Archives the cart stored as `value` under `key` if it is closed and old enough. True
    /// if it was archived.
    ///
    /// An active cart stored without a reminder (written before reminders existed) is sent
    /// one now, so that it too expires after `--cart-ttl`: the reminder's handler expires it
    /// if it is already past, and indexes its reminder in any case.
    async fn archive(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        if !self.serves(CartEntity::KIND, key) {
            return Ok(false); // another replica's cart: its sweeper archives it
        }
        let (cart, reminder_ms) = decode_cart_record(key, value)?;
        if cart.is_active() && reminder_ms == 0 && self.carts.entity().ttl.is_some() {
            let deadline = Deadline::after(CALL_BUDGET);
            self.carts.call(key, Remind { due_ms: 0 }, deadline).await?;
            self.progress
                .reminders_backfilled
                .fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let Some(after) = self.settings.archive_after else {
            return Ok(false);
        };
        let cutoff_ms = cutoff(after);
        if cart.is_active() || cart.updated_at_ms > cutoff_ms {
            return Ok(false);
        }
        let archive = self.archive_namespace();
        self.move_events(&cart, archive).await?;
        let deadline = Deadline::after(CALL_BUDGET);
        self.carts
            .call(key, Archive::new(cutoff_ms, archive), deadline)
            .await
    }

    /// Archives the list stored as `value` under `key` if it was untouched long enough.
    async fn archive_list(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        if !self.serves(TodoEntity::KIND, key) {
            return Ok(false); // another replica's list: its sweeper archives it
        }
        let Some(after) = self.settings.todo_archive_after else {
            return Ok(false);
        };
        let corrupt = |e: String| Error::Corrupt(format!("todo/{}: {e}", echo(key)));
        let record = ActorRecord::decode(value).map_err(|e| corrupt(e.to_string()))?;
        let head =
            pb::TodoList::decode(record.state.as_slice()).map_err(|e| corrupt(e.to_string()))?;
        let cutoff_ms = cutoff(after);
        if head.updated_ms == 0 || head.updated_ms > cutoff_ms {
            return Ok(false);
        }
        let request = ArchiveList {
            cutoff_ms,
            archive: self.archive_namespace(),
        };
        // A list of 10,000 entries moves in a few hundred store calls.
        let deadline = Deadline::after(CALL_BUDGET * 6);
        self.todos.call(key, request, deadline).await
    }

    /// Where archived records go (`None`: deleted).
    fn archive_namespace(&self) -> Option<&'static str> {
        match self.settings.archive {
            ArchiveMode::Move => Some(ARCHIVE_NAMESPACE),
            ArchiveMode::Delete => None,
        }
    }

    /// Moves every event of `cart` into `archive` (or deletes them), a few per commit. A
    /// closed cart writes no more events, so nothing races with this.
    async fn move_events(&self, cart: &Cart, archive: Option<&str>) -> Result<(), Error> {
        let id = archive_id(cart);
        let prefix = events_prefix(&cart.key);
        loop {
            let deadline = Deadline::after(CALL_BUDGET);
            let (page, _) = self
                .store
                .scan(
                    EVENTS_NAMESPACE,
                    &prefix,
                    EVENTS_PER_COMMIT as i32,
                    String::new(),
                    deadline,
                )
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            let mut mutations = Vec::with_capacity(2 * page.len());
            for event in &page {
                let seq = &event.key[prefix.len()..];
                if let Some(archive) = archive {
                    let key = format!("{EVENTS_NAMESPACE}/{id}/{seq}");
                    mutations.push(mutation(archive, key, Some(event.value.clone()), 0));
                }
                mutations.push(mutation(
                    EVENTS_NAMESPACE,
                    event.key.as_str(),
                    None,
                    event.version,
                ));
            }
            self.store.commit(mutations, deadline).await?;
            self.progress
                .events_moved
                .fetch_add(page.len() as u64, Ordering::Relaxed);
        }
    }

    /// The cart stored under `key`, if any.
    async fn stored_cart(&self, key: &str) -> Result<Option<Cart>, Error> {
        let deadline = Deadline::after(CALL_BUDGET);
        match self.store.get(CartEntity::KIND, key, deadline).await? {
            Some(stored) => decode_cart(key, &stored.value).map(Some),
            None => Ok(None),
        }
    }
}

/// The time `age` ago, in Unix milliseconds.
fn cutoff(age: Duration) -> i64 {
    Ctx::now(0)
        .now_ms
        .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// A cart from its stored actor record.
fn decode_cart(key: &str, value: &[u8]) -> Result<Cart, Error> {
    decode_cart_record(key, value).map(|(cart, _)| cart)
}

/// A cart and the due time of its indexed reminder (0: none) from its stored actor record.
fn decode_cart_record(key: &str, value: &[u8]) -> Result<(Cart, i64), Error> {
    let corrupt = |e: String| Error::Corrupt(format!("cart/{}: {e}", echo(key)));
    let record = ActorRecord::decode(value).map_err(|e| corrupt(e.to_string()))?;
    let entity = CartEntity {
        catalog: Default::default(),
        log_limit: 1,
        events_per_cart: 1,
        ttl: None,
        inventory: None,
    };
    let cart = entity.decode_state(&record.state).map_err(corrupt)?;
    Ok((cart, record.reminder_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_renders_every_job_and_reaches_get_stats() {
        let progress = Progress::default();
        progress
            .job(Job::ArchiveCart)
            .acted
            .store(3, Ordering::Relaxed);
        let progress = Arc::new(progress);
        let mut registry = prometheus_client::registry::Registry::default();
        let shown = progress.clone();
        registry.register_collector(Box::new(kit::metrics::FnCollector(
            move |e: &mut DescriptorEncoder| shown.encode_metrics(e),
        )));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("session_sweeper_acted_total{job=\"archive_cart\"} 3"));
        assert!(out.contains("session_sweeper_passes_total{job=\"reconcile\"} 0"));
        let wire = progress.wire();
        assert_eq!(wire.len(), 3);
        assert_eq!((wire[1].job.as_str(), wire[1].acted), ("archive_cart", 3));
    }

    #[tokio::test(start_paused = true)]
    async fn pace_lets_records_through_no_faster_than_the_rate() {
        let mut pace = Pace::new(10);
        let start = Instant::now();
        for _ in 0..20 {
            pace.next().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
