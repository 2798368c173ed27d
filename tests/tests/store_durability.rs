//! Durability under SIGKILL: OK from Put means the write is on disk, whenever the server dies.
//!
//! `STORE_KILL_CYCLES=500 cargo test -p tests --test store_durability` runs the long mode.

use std::time::Duration;

use rand::Rng;
use tempfile::TempDir;
use tests::{
    KeyHistory, StoreOptions,
    ledger::reconcile_all,
    spawn_store_and_client,
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

fn kill_cycles() -> usize {
    match std::env::var("STORE_KILL_CYCLES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("STORE_KILL_CYCLES must be a whole number, got {text:?}")),
        Err(_) => DEFAULT_KILL_CYCLES,
    }
}

/// Starts store-svc on `data`, checks every key against what was acknowledged before the last
/// kill, and returns the running store with its client.
async fn restart_and_verify(
    data: &TempDir,
    groups: &mut [Vec<KeyHistory>],
    after: &str,
) -> (tests::StoreProcess, tests::StoreClient) {
    let (store, mut client) =
        spawn_store_and_client(StoreOptions::new().data_dir(data.path())).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill_at_random_moments() {
    let cycles = kill_cycles();
    let data = TempDir::with_prefix("store-durability-").unwrap();
    let mut groups = key_groups(WRITERS, KEYS_PER_WRITER);
    let mut acknowledged = 0;

    for cycle in 0..cycles {
        let after = format!("after kill {cycle}");
        let (mut store, client) = restart_and_verify(&data, &mut groups, &after).await;

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
        store.kill().await.expect("SIGKILL store-svc");

        let report = join_writers(writers).await;
        assert!(
            report.unexpected.is_empty(),
            "contract broken before kill {cycle}:\n{}",
            report.unexpected.join("\n")
        );
        acknowledged += report.acknowledged;
        groups = report.groups;
    }

    let (mut store, _client) =
        restart_and_verify(&data, &mut groups, &format!("after kill {cycles}")).await;
    store.kill().await.expect("stop store-svc");
    println!("{cycles} kill cycles, {acknowledged} acknowledged writes verified");
    // Not a speed check: a run that acknowledged nothing would have verified nothing.
    assert!(
        acknowledged > 0,
        "no write was acknowledged in {cycles} cycles"
    );
}
