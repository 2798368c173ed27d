//! Power loss under session-svc loses nothing it acknowledged: OK from AddItem means the cart
//! is on store-svc's disk, not in a page cache.
//!
//! store-svc keeps its data on LazyFS (see `tests::lazyfs`). Each cycle: a burst of AddItems
//! (see `tests::cart_writers`; every add carries its own request id) runs on fresh carts until
//! [`ACKNOWLEDGED_PER_CYCLE`] adds are acknowledged; then session-svc and store-svc are
//! SIGKILLed, every byte store-svc did not fsync is dropped, and both start again. Every cart
//! of every cycle so far must hold its acknowledged adds (one more only where an add was in
//! flight). The control runs the same cycles without dropping anything. Both print
//! `skipped: <reason>` where LazyFS cannot mount.

use std::{path::Path, time::Duration};

use tests::{
    SessionOptions, SessionProcess, StoreOptions, StoreProcess,
    cart_writers::{AddTally, CartBurst, check},
    lazyfs::LazyFs,
    spawn_session,
};

/// Power losses (or, for the control, plain SIGKILLs) per test.
const CYCLES: usize = 5;

/// Writers and the carts each owns; every cycle starts new carts.
const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 2;

/// Adds acknowledged before each kill, so it lands mid-burst.
const ACKNOWLEDGED_PER_CYCLE: u64 = 200;

/// Hang guard for reaching [`ACKNOWLEDGED_PER_CYCLE`]; not a speed requirement.
const BURST_LIMIT: Duration = Duration::from_secs(30);

/// What happens to the machine after the SIGKILLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// The processes die; the file system keeps everything written (the control).
    ProcessOnly,
    /// The power goes too: whatever store-svc did not fsync is gone.
    PowerLoss,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_add_survives_power_loss() {
    every_acknowledged_add_survives(Crash::PowerLoss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_add_survives_sigkill_on_lazyfs() {
    every_acknowledged_add_survives(Crash::ProcessOnly).await;
}

async fn every_acknowledged_add_survives(crash: Crash) {
    if let Err(reason) = LazyFs::available() {
        println!("skipped: {reason}");
        return;
    }
    // Declared first, dropped last: nothing may hold files on the mount when it goes.
    let mut lazyfs = LazyFs::mount().await.expect("mounting LazyFS");
    let data = lazyfs.mount_dir().join("store");
    let mut tallies: Vec<AddTally> = Vec::new();
    let mut acknowledged = 0;

    for cycle in 0..CYCLES {
        let after = after(crash, cycle);
        let (mut store, mut session) = restart_and_verify(&data, &tallies, &after).await;

        let burst = CartBurst::start_with_request_ids(
            &session,
            &format!("c{cycle}"),
            WRITERS,
            KEYS_PER_WRITER,
        )
        .await;
        let loaded = burst
            .wait_for_acknowledged(ACKNOWLEDGED_PER_CYCLE, BURST_LIMIT)
            .await;
        burst.mark_disrupted();
        // The whole machine goes: neither process gets to finish anything.
        session.kill().await.expect("SIGKILL session-svc");
        store.kill().await.expect("SIGKILL store-svc");
        let cycle_acknowledged = burst.acknowledged();
        acknowledged += cycle_acknowledged;
        let report = burst.finish().await;
        assert!(
            loaded,
            "only {cycle_acknowledged} adds acknowledged in {BURST_LIMIT:?}\n--- session-svc \
             stderr ---\n{}\n--- store-svc stderr ---\n{}",
            session.stderr_tail(20),
            store.stderr_tail(20)
        );
        assert!(
            report.problems.is_empty(),
            "contract broken before kill {cycle}:\n{}",
            report.problems.join("\n")
        );
        tallies.extend(report.tallies);

        // Both processes are dead and reaped: nothing can write or fsync any more.
        if crash == Crash::PowerLoss {
            lazyfs.power_loss().await.expect("dropping LazyFS's cache");
        }
    }

    let (mut store, mut session) = restart_and_verify(&data, &tallies, &after(crash, CYCLES)).await;
    session.kill().await.expect("stop session-svc");
    store.kill().await.expect("stop store-svc");
    println!(
        "{CYCLES} cycles ({crash:?}), {acknowledged} acknowledged adds over {} carts verified",
        tallies.len()
    );
}

/// Names the moment of a check, for messages.
fn after(crash: Crash, cycle: usize) -> String {
    match (cycle, crash) {
        (0, _) => "at the first start".to_owned(),
        (_, Crash::ProcessOnly) => format!("after SIGKILL {cycle}"),
        (_, Crash::PowerLoss) => format!("after SIGKILL and power loss {cycle}"),
    }
}

/// Starts store-svc on `data` and a session-svc on top, checks every cart written so far, and
/// returns both. A failure says how much was lost.
async fn restart_and_verify(
    data: &Path,
    tallies: &[AddTally],
    after: &str,
) -> (StoreProcess, SessionProcess) {
    let store = StoreProcess::spawn(StoreOptions::new().data_dir(data))
        .await
        .unwrap_or_else(|error| panic!("store-svc cannot start on its data {after}: {error:#}"));
    let session = spawn_session(&store.endpoint(), SessionOptions::new()).await;
    let found = check(&mut session.cart().await, tallies).await;
    assert!(
        found.violations.is_empty(),
        "acknowledged adds lost {after}: {} of {} acknowledged adds survived; {} of {} carts \
         hold fewer than acknowledged or are gone:\n{}",
        found.acknowledged - found.lost,
        found.acknowledged,
        found.keys_short,
        found.keys,
        found.violations.join("\n")
    );
    (store, session)
}
