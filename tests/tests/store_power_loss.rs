//! Durability under power loss: OK from Put means the write is on the disk, not in a page cache
//! that a power cut empties. SIGKILL alone cannot tell the two apart; LazyFS can.
//!
//! store-svc keeps its data on LazyFS (see `tests::lazyfs`). Each cycle: concurrent writers Put
//! until [`ACKNOWLEDGED_PER_CYCLE`] writes are acknowledged, the store is SIGKILLed, every byte
//! it did not fsync is dropped, and it starts again on the same directory, where every key must
//! hold its last acknowledged version (or a later one the test sent). The control runs the same
//! cycles without dropping anything: when only the power-loss test fails, what is missing is an
//! fsync, not the harness. Both print `skipped: <reason>` where LazyFS cannot mount.
//!
//! On the PostgreSQL backend (`STORE_TEST_BACKEND=postgres`) the database holds the records, so
//! the database is what loses power: the test runs its own PostgreSQL server with its data
//! directory on LazyFS and, each cycle, SIGKILLs it and store-svc, drops what was not fsynced,
//! and starts both again (crash recovery replays the WAL that `synchronous_commit` flushed).

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use tests::{
    KeyHistory, StoreClient, StoreOptions, StoreProcess,
    lazyfs::LazyFs,
    ledger::reconcile_all,
    postgres::PostgresServer,
    store::postgres_requested,
    writers::{LoadControl, join_writers, key_groups, spawn_writers},
};

const NS: &str = "power-loss";

/// Power losses (or, for the control, plain SIGKILLs) per test.
const CYCLES: usize = 3;

/// Concurrent writers, each owning its keys.
const WRITERS: usize = 4;

/// Keys per writer, written round-robin.
const KEYS_PER_WRITER: usize = 4;

/// Writes acknowledged before each kill: enough that several group-commit flushes happened.
const ACKNOWLEDGED_PER_CYCLE: u64 = 200;

/// Hang guard for reaching [`ACKNOWLEDGED_PER_CYCLE`]; not a speed requirement.
const LOAD_LIMIT: Duration = Duration::from_secs(30);

/// What happens to the machine after the SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// The process dies; the file system keeps everything written (the control).
    ProcessOnly,
    /// The power goes too: whatever was not fsynced is gone.
    PowerLoss,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_power_loss() {
    every_acknowledged_write_survives(Crash::PowerLoss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill_on_lazyfs() {
    every_acknowledged_write_survives(Crash::ProcessOnly).await;
}

async fn every_acknowledged_write_survives(crash: Crash) {
    if let Err(reason) = LazyFs::available() {
        println!("skipped: {reason}");
        return;
    }
    // Declared first, dropped last: nothing may hold files on the mount when it goes.
    let mut lazyfs = LazyFs::mount().await.expect("mounting LazyFS");
    let data = lazyfs.mount_dir().join("store");
    // Declared after LazyFS, so stopped before it unmounts.
    let database = postgres_requested().then(|| {
        // The server runs as an unprivileged user, which must get through LazyFS's temp dir.
        let tmp = lazyfs
            .mount_dir()
            .parent()
            .expect("the mount is in a temp dir");
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o711)).unwrap();
        PostgresServer::start_on(lazyfs.mount_dir()).expect("PostgreSQL on LazyFS")
    });
    let options = match &database {
        Some(server) => StoreOptions::new().postgres(server.create_database("power_loss").unwrap()),
        None => StoreOptions::new().data_dir(&data),
    };
    let mut groups = key_groups(WRITERS, KEYS_PER_WRITER);
    let mut acknowledged = 0;

    for cycle in 0..CYCLES {
        let after = after(crash, cycle);
        let (mut store, client) = restart_and_verify(&options, &mut groups, &after).await;

        let control = LoadControl::new();
        let writers = spawn_writers(
            &client,
            NS,
            std::mem::take(&mut groups),
            &control,
            &format!("c{cycle}"),
        );
        let loaded = control
            .wait_for_acknowledged(ACKNOWLEDGED_PER_CYCLE, LOAD_LIMIT)
            .await;
        control.mark_disrupted();
        if let Some(server) = &database {
            server.kill().expect("SIGKILL PostgreSQL");
        }
        store.kill().await.expect("SIGKILL store-svc");
        let report = join_writers(writers).await;
        assert!(
            loaded,
            "only {} writes acknowledged in {LOAD_LIMIT:?}\n--- stderr ---\n{}",
            report.acknowledged,
            store.stderr_tail(40)
        );
        assert!(
            report.unexpected.is_empty(),
            "contract broken before kill {cycle}:\n{}",
            report.unexpected.join("\n")
        );
        acknowledged += report.acknowledged;
        groups = report.groups;

        // The process is dead and reaped: it can neither write nor fsync any more.
        if crash == Crash::PowerLoss {
            lazyfs.power_loss().await.expect("dropping LazyFS's cache");
        }
        if let Some(server) = &database {
            server
                .restart()
                .expect("restart PostgreSQL after the crash");
        }
    }

    let (mut store, _client) =
        restart_and_verify(&options, &mut groups, &after(crash, CYCLES)).await;
    store.kill().await.expect("stop store-svc");
    println!("{CYCLES} cycles ({crash:?}), {acknowledged} acknowledged writes verified");
}

/// Names the moment of a check, for messages.
fn after(crash: Crash, cycle: usize) -> String {
    match (cycle, crash) {
        (0, _) => "at the first start".to_owned(),
        (_, Crash::ProcessOnly) => format!("after SIGKILL {cycle}"),
        (_, Crash::PowerLoss) => format!("after SIGKILL and power loss {cycle}"),
    }
}

/// Starts store-svc with `options`, checks every key against what was acknowledged before the last
/// crash, and returns the running store with its client. A failure says how much was lost.
async fn restart_and_verify(
    options: &StoreOptions,
    groups: &mut [Vec<KeyHistory>],
    after: &str,
) -> (StoreProcess, StoreClient) {
    let store = StoreProcess::spawn(options.clone())
        .await
        .unwrap_or_else(|error| panic!("store-svc cannot start on its data {after}: {error:#}"));
    let mut client = store
        .client()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to store-svc {after}: {error}"));
    let acknowledged: Vec<u64> = groups
        .iter()
        .flatten()
        .map(KeyHistory::expected_version)
        .collect();
    let violations = reconcile_all(&mut client, NS, groups.iter_mut().flatten())
        .await
        .unwrap_or_else(|status| panic!("reading keys back {after}: {status:?}"));
    if !violations.is_empty() {
        // Reconciling adopted what the store holds: a key's writes up to that version survived.
        let found: Vec<u64> = groups
            .iter()
            .flatten()
            .map(KeyHistory::expected_version)
            .collect();
        let total: u64 = acknowledged.iter().sum();
        let survived: u64 = acknowledged.iter().zip(&found).map(|(a, f)| a.min(f)).sum();
        let keys_short = acknowledged
            .iter()
            .zip(&found)
            .filter(|(a, f)| f < a)
            .count();
        panic!(
            "acknowledged writes lost {after}: {survived} of {total} acknowledged writes \
             survived; {keys_short} of {} keys went back to an older version or vanished:\n{}",
            acknowledged.len(),
            violations.join("\n")
        );
    }
    (store, client)
}
