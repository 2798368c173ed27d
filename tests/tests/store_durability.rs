//! Durability under SIGKILL: OK from Put means the write is on disk, whenever the server dies.
//!
//! On the PostgreSQL backend (`STORE_TEST_BACKEND=postgres`) the records live in the database,
//! so a dead store-svc alone proves little: there the test runs its own PostgreSQL server and
//! SIGKILLs it too, every cycle, before store-svc (commits in flight meet a dead database,
//! then crash recovery). On odd cycles store-svc is left running through the database's
//! restart and must answer again on its own, from new connections.
//!
//! `STORE_KILL_CYCLES=500 cargo test -p tests --test store_durability` runs the long mode.

use std::time::Duration;

use rand::Rng;
use tempfile::TempDir;
use tests::{
    KeyHistory, StoreClient, StoreOptions, StoreProcess,
    ledger::reconcile_all,
    postgres::PostgresServer,
    spawn_store_and_client,
    store::postgres_requested,
    writers::{LoadControl, join_writers, key_groups, spawn_writers},
};

const NS: &str = "durability";

/// Kill cycles when `STORE_KILL_CYCLES` is unset: enough to hit many phases of group commit,
/// few enough for the default suite.
const DEFAULT_KILL_CYCLES: usize = 20;

/// Concurrent writers, each owning its keys.
const WRITERS: usize = 8;

/// Keys per writer, written round-robin.
const KEYS_PER_WRITER: usize = 4;

/// How long the load runs before each SIGKILL, in milliseconds: random in this range, so the
/// kill lands in every phase (queued, mid-batch, mid-flush, replying).
const LOAD_MILLIS: std::ops::RangeInclusive<u64> = 50..=400;

/// The same on PostgreSQL, where each cycle also kills and recovers the database (about 2 s
/// each, against 0.2 s with sled): fewer, so the second CI run stays short.
const DEFAULT_KILL_CYCLES_POSTGRES: usize = 8;

fn kill_cycles() -> usize {
    match std::env::var("STORE_KILL_CYCLES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("STORE_KILL_CYCLES must be a whole number, got {text:?}")),
        Err(_) if postgres_requested() => DEFAULT_KILL_CYCLES_POSTGRES,
        Err(_) => DEFAULT_KILL_CYCLES,
    }
}

/// How long store-svc, left running, may take to reach a restarted database again.
const RECONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Starts store-svc with `options` (unless `running` is given: then it is still up), checks
/// every key against what was acknowledged before the last kill, and returns the running store
/// with its client.
async fn restart_and_verify(
    options: &StoreOptions,
    running: Option<(StoreProcess, StoreClient)>,
    groups: &mut [Vec<KeyHistory>],
    after: &str,
) -> (StoreProcess, StoreClient) {
    let (store, mut client) = match running {
        Some((store, mut client)) => {
            wait_until_serving(&mut client, after).await;
            (store, client)
        }
        None => spawn_store_and_client(options.clone()).await,
    };
    let violations = reconcile_all(&mut client, NS, groups.iter_mut().flatten())
        .await
        .unwrap_or_else(|status| panic!("reading keys back {after}: {status:?}"));
    assert!(
        violations.is_empty(),
        "acknowledged writes lost {after}:\n{}",
        violations.join("\n")
    );
    (store, client)
}

/// Waits until a store left running through its database's restart reads again.
async fn wait_until_serving(client: &mut StoreClient, after: &str) {
    let started = tokio::time::Instant::now();
    loop {
        match tests::store_client::get(client, NS, "never-written").await {
            Err(status) if status.code() == tonic::Code::NotFound => return,
            outcome => assert!(
                started.elapsed() < RECONNECT_LIMIT,
                "store-svc does not serve {RECONNECT_LIMIT:?} {after}: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill_at_random_moments() {
    let cycles = kill_cycles();
    let data = TempDir::with_prefix("store-durability-").unwrap();
    // Its own server, not the one the other tests of this process share: it gets killed.
    let database = postgres_requested().then(|| PostgresServer::start().unwrap());
    let options = match &database {
        Some(server) => StoreOptions::new().postgres(server.create_database("durability").unwrap()),
        None => StoreOptions::new().data_dir(data.path()),
    };
    let mut groups = key_groups(WRITERS, KEYS_PER_WRITER);
    let mut acknowledged = 0;
    let mut running = None;

    for cycle in 0..cycles {
        let after = format!("after kill {cycle}");
        let (mut store, client) =
            restart_and_verify(&options, running.take(), &mut groups, &after).await;

        let control = LoadControl::new();
        let writers = spawn_writers(
            &client,
            NS,
            std::mem::take(&mut groups),
            &control,
            &format!("c{cycle}"),
        );
        let load = Duration::from_millis(rand::rng().random_range(LOAD_MILLIS));
        tokio::time::sleep(load).await;
        control.mark_disrupted();
        if let Some(server) = &database {
            server.kill().expect("SIGKILL PostgreSQL");
        }
        let keep_store = database.is_some() && cycle % 2 == 1;
        if !keep_store {
            store.kill().await.expect("SIGKILL store-svc");
        }

        let report = join_writers(writers).await;
        assert!(
            report.unexpected.is_empty(),
            "contract broken before kill {cycle}:\n{}",
            report.unexpected.join("\n")
        );
        acknowledged += report.acknowledged;
        groups = report.groups;
        if let Some(server) = &database {
            server.restart().expect("restart PostgreSQL");
        }
        if keep_store {
            running = Some((store, client));
        }
    }

    let (mut store, _client) = restart_and_verify(
        &options,
        running,
        &mut groups,
        &format!("after kill {cycles}"),
    )
    .await;
    store.kill().await.expect("stop store-svc");
    println!("{cycles} kill cycles, {acknowledged} acknowledged writes verified");
    // Not a speed check: a run that acknowledged nothing would have verified nothing.
    assert!(
        acknowledged > 0,
        "no write was acknowledged in {cycles} cycles"
    );
}
