//! A burst of AddItems that knows exactly what was acknowledged, for kill and shutdown tests of
//! session-svc.
//!
//! Each writer owns its keys, has its own connection and one AddItem (quantity 1) in flight at
//! a time, and stops at its first failure. So for every key the test knows how many adds were
//! acknowledged and whether one more was in flight when the server went away (its outcome was
//! never reported: it may or may not have landed). After the server comes back, a key's
//! quantity must be `acknowledged` exactly, or `acknowledged + 1` only if an add was in flight:
//! fewer means an acknowledged write was lost, more means a write nobody made appeared.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::task::JoinSet;
use tonic::Code;

use crate::{
    session::{CartClient, SessionProcess},
    session_client::{add_request, get_session, quantity_of, start},
    status::is_semantic_error,
};

/// The sku every burst adds.
const SKU: &str = "BURST";

/// Bound on one writer's adds, so a server that never goes away cannot loop a test forever.
const MAX_ADDS_PER_WRITER: u64 = 100_000;

/// What a burst knows about one key.
#[derive(Debug, Default, Clone)]
pub struct AddTally {
    /// The session's key.
    pub key: String,
    /// Adds the server acknowledged.
    pub acknowledged: i32,
    /// Whether one more add was sent and never answered OK.
    pub in_flight: bool,
}

/// Switches shared by the test and its writers.
#[derive(Debug, Default)]
struct Shared {
    /// Adds acknowledged so far, across writers.
    acknowledged: AtomicU64,
    /// Set just before the test kills or stops the server: from then on, failures that say
    /// "the server went away" are expected.
    disrupted: AtomicBool,
}

/// Running writers.
#[derive(Debug)]
pub struct CartBurst {
    /// Shared with the writers.
    shared: Arc<Shared>,
    /// Each writer's tallies and, if it saw one, a contract violation.
    writers: JoinSet<(Vec<AddTally>, Option<String>)>,
}

/// What the burst did.
#[derive(Debug)]
pub struct BurstReport {
    /// Every key's tally.
    pub tallies: Vec<AddTally>,
    /// Failures before the disruption, or semantic errors at any time.
    pub problems: Vec<String>,
}

impl CartBurst {
    /// Starts `writers × keys_per_writer` sessions named `prefix/W/K` and a writer per group;
    /// the adds carry no request id.
    pub async fn start(
        session: &SessionProcess,
        prefix: &str,
        writers: usize,
        keys_per_writer: usize,
    ) -> Self {
        Self::launch(session, prefix, writers, keys_per_writer, false).await
    }

    /// Like [`CartBurst::start`], but every add carries a request id of its own
    /// (`KEY#add-N`), so each one also writes its entry in the cart's recent requests.
    pub async fn start_with_request_ids(
        session: &SessionProcess,
        prefix: &str,
        writers: usize,
        keys_per_writer: usize,
    ) -> Self {
        Self::launch(session, prefix, writers, keys_per_writer, true).await
    }

    async fn launch(
        session: &SessionProcess,
        prefix: &str,
        writers: usize,
        keys_per_writer: usize,
        request_ids: bool,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let mut cart = session.cart().await;
        let mut tasks = JoinSet::new();
        for writer in 0..writers {
            let mut keys = Vec::new();
            for n in 0..keys_per_writer {
                let key = format!("{prefix}/{writer}/{n}");
                start(&mut cart, &key).await.expect("StartSession");
                keys.push(AddTally {
                    key,
                    ..AddTally::default()
                });
            }
            // One connection per writer: the server going away cuts each the same way.
            let connection = session.cart().await;
            tasks.spawn(write_until_failure(
                connection,
                keys,
                Arc::clone(&shared),
                request_ids,
            ));
        }
        Self {
            shared,
            writers: tasks,
        }
    }

    /// Adds acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.shared.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits (polling, at most `limit`) until `count` adds were acknowledged; false if the
    /// limit passed first.
    pub async fn wait_for_acknowledged(&self, count: u64, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            while self.acknowledged() < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok()
    }

    /// Declares that the server is about to go away on purpose.
    pub fn mark_disrupted(&self) {
        self.shared.disrupted.store(true, Ordering::SeqCst);
    }

    /// Waits for every writer to stop (they stop at their first failure).
    pub async fn finish(self) -> BurstReport {
        let outcomes = self.writers.join_all().await;
        let problems = outcomes.iter().filter_map(|(_, p)| p.clone()).collect();
        let tallies = outcomes.into_iter().flat_map(|(keys, _)| keys).collect();
        BurstReport { tallies, problems }
    }
}

/// One writer: round-robin over its keys until the first failure.
async fn write_until_failure(
    mut cart: CartClient,
    mut keys: Vec<AddTally>,
    shared: Arc<Shared>,
    request_ids: bool,
) -> (Vec<AddTally>, Option<String>) {
    for add in 0..MAX_ADDS_PER_WRITER {
        let slot = add as usize % keys.len();
        let tally = &mut keys[slot];
        let mut request = add_request(&tally.key, SKU, 1, 100);
        if request_ids {
            // A key's adds are sequential and stop at the first failure: N is unique per key.
            request.request_id = format!("{}#add-{}", tally.key, tally.acknowledged + 1);
        }
        match cart.add_item(request).await {
            Ok(_) => {
                tally.acknowledged += 1;
                shared.acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            Err(status) => {
                tally.in_flight = true;
                let unexpected =
                    !shared.disrupted.load(Ordering::SeqCst) || is_semantic_error(status.code());
                let problem = unexpected.then(|| format!("{}: {status:?}", tally.key));
                return (keys, problem);
            }
        }
    }
    (keys, None)
}

/// What reading a burst's keys back found.
#[derive(Debug, Default)]
pub struct CartCheck {
    /// One line per key that breaks `acknowledged ≤ quantity ≤ acknowledged + in flight`, or
    /// that could not be read.
    pub violations: Vec<String>,
    /// Keys read back.
    pub keys: usize,
    /// Keys holding fewer adds than were acknowledged.
    pub keys_short: usize,
    /// Adds acknowledged, over every key.
    pub acknowledged: u64,
    /// Acknowledged adds missing from the carts: the sum of every short key's shortfall.
    pub lost: u64,
}

/// Reads every key back and lists the ones whose quantity breaks `acknowledged ≤ quantity ≤
/// acknowledged + in flight`.
pub async fn reconcile(cart: &mut CartClient, tallies: &[AddTally]) -> Vec<String> {
    check(cart, tallies).await.violations
}

/// Reads every key back, like [`reconcile`], and counts what is missing.
pub async fn check(cart: &mut CartClient, tallies: &[AddTally]) -> CartCheck {
    let mut check = CartCheck::default();
    for tally in tallies {
        check.keys += 1;
        check.acknowledged += u64::try_from(tally.acknowledged).unwrap_or(0);
        let quantity = match get_session(cart, &tally.key).await {
            Ok(session) => quantity_of(&session, SKU),
            // The session itself was acknowledged (StartSession), so it is lost with its adds.
            Err(status) if status.code() == Code::NotFound => {
                check.keys_short += 1;
                check.lost += u64::try_from(tally.acknowledged).unwrap_or(0);
                check.violations.push(format!(
                    "{}: the session is gone (NotFound), with its {} acknowledged adds",
                    tally.key, tally.acknowledged
                ));
                continue;
            }
            Err(status) => {
                check
                    .violations
                    .push(format!("{}: cannot read it back: {status:?}", tally.key));
                continue;
            }
        };
        let most = tally.acknowledged + i32::from(tally.in_flight);
        if quantity < tally.acknowledged {
            check.keys_short += 1;
            check.lost += u64::try_from(tally.acknowledged - quantity).unwrap_or(0);
        }
        if quantity < tally.acknowledged || quantity > most {
            check.violations.push(format!(
                "{}: quantity {quantity}, acknowledged {}, one more in flight: {}",
                tally.key, tally.acknowledged, tally.in_flight
            ));
        }
    }
    check
}
