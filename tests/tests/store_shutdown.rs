//! Graceful shutdown: SIGTERM or SIGINT drains in-flight writes, flushes, and exits 0.

use std::time::Duration;

use tempfile::TempDir;
use tests::{
    StoreOptions,
    ledger::reconcile_all,
    spawn_store, spawn_store_and_client,
    writers::{LoadControl, join_writers, key_groups, spawn_writers},
};

const NS: &str = "shutdown";

/// Writers in the burst, each owning its keys.
const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 4;

/// Writes acknowledged before the signal, so it lands mid-burst rather than on an idle server.
const ACKNOWLEDGED_BEFORE_SIGNAL: u64 = 200;

/// The drain the server is given; the exit wait below is a hang guard well above it.
const GRACE_PERIOD: &str = "10s";
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// A hang guard for reaching [`ACKNOWLEDGED_BEFORE_SIGNAL`]; not a speed requirement.
const BURST_START_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_write_burst_exits_zero_and_keeps_every_acknowledged_write() {
    let data = TempDir::with_prefix("store-shutdown-").unwrap();
    let options = StoreOptions::new()
        .data_dir(data.path())
        .grace_period(GRACE_PERIOD);
    let (mut store, client) = spawn_store_and_client(options.clone()).await;
    let control = LoadControl::new();
    let writers = spawn_writers(
        &client,
        NS,
        key_groups(WRITERS, KEYS_PER_WRITER),
        &control,
        "burst",
    );
    assert!(
        control
            .wait_for_acknowledged(ACKNOWLEDGED_BEFORE_SIGNAL, BURST_START_LIMIT)
            .await,
        "the burst never got going: {} writes acknowledged",
        control.acknowledged()
    );

    control.mark_disrupted();
    store.terminate().await.expect("send SIGTERM");
    let exit = tokio::time::timeout(EXIT_WAIT, store.wait())
        .await
        .unwrap_or_else(|_| panic!("store-svc still running {EXIT_WAIT:?} after SIGTERM"))
        .expect("wait for store-svc");
    control.stop();
    let mut report = join_writers(writers).await;

    assert!(
        report.unexpected.is_empty(),
        "contract broken during the burst:\n{}",
        report.unexpected.join("\n")
    );
    assert_eq!(
        exit.code(),
        Some(0),
        "store-svc must exit 0 after SIGTERM, got {exit}; stderr:\n{}",
        store.stderr_tail(40)
    );
    let (_restarted, mut client) = spawn_store_and_client(options).await;
    let violations = reconcile_all(&mut client, NS, report.groups.iter_mut().flatten())
        .await
        .expect("read the keys back");
    assert!(
        violations.is_empty(),
        "acknowledged writes lost across a graceful shutdown:\n{}",
        violations.join("\n")
    );
}

#[tokio::test]
async fn sigint_on_an_idle_server_exits_zero() {
    let mut store = spawn_store().await;

    store.interrupt().await.expect("send SIGINT");
    let exit = tokio::time::timeout(EXIT_WAIT, store.wait())
        .await
        .unwrap_or_else(|_| panic!("store-svc still running {EXIT_WAIT:?} after SIGINT"))
        .expect("wait for store-svc");

    assert_eq!(
        exit.code(),
        Some(0),
        "got {exit}; stderr:\n{}",
        store.stderr_tail(40)
    );
}
