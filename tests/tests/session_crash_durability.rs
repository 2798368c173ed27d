//! SIGKILL of session-svc loses nothing it acknowledged: OK means durable in store-svc.
//!
//! The burst (see `tests::cart_writers`) knows, per key, how many adds were acknowledged and
//! whether one more was in flight at the kill. After a restart against the same store, each
//! key's quantity must equal `acknowledged` exactly, or `acknowledged + 1` only for a key whose
//! add was in flight (its outcome was never reported, so either is correct). Fewer means a lost
//! acknowledged write; more means a write nobody made.

use std::time::Duration;

use tests::{
    SessionOptions,
    cart_writers::{CartBurst, reconcile},
    session_client::{add_item, get_session},
    spawn_session_stack,
};

/// Writers and the keys each owns.
const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 4;

/// Adds acknowledged before the kill, so it lands mid-burst.
const ACKNOWLEDGED_BEFORE_KILL: u64 = 400;

/// Hang guard for reaching [`ACKNOWLEDGED_BEFORE_KILL`]; not a speed requirement.
const BURST_START_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_session_svc_loses_no_acknowledged_write() {
    let mut stack = spawn_session_stack(SessionOptions::new()).await;
    let burst = CartBurst::start(&stack.session, "durable", WRITERS, KEYS_PER_WRITER).await;
    assert!(
        burst
            .wait_for_acknowledged(ACKNOWLEDGED_BEFORE_KILL, BURST_START_LIMIT)
            .await,
        "the burst never got going: {} adds acknowledged",
        burst.acknowledged()
    );

    burst.mark_disrupted();
    stack.session.kill().await.expect("SIGKILL session-svc");
    let acknowledged = burst.acknowledged();
    let report = burst.finish().await;
    assert!(
        report.problems.is_empty(),
        "contract broken before or during the kill:\n{}",
        report.problems.join("\n")
    );

    let restarted = stack.session.respawn().await;
    let mut cart = restarted.cart().await;
    let violations = reconcile(&mut cart, &report.tallies).await;
    let in_flight = report.tallies.iter().filter(|t| t.in_flight).count();
    eprintln!(
        "{acknowledged} adds acknowledged before SIGKILL; {} keys checked exactly, {in_flight} \
         with one add of unknown outcome",
        report.tallies.len() - in_flight
    );
    assert!(
        violations.is_empty(),
        "acknowledged adds lost (or phantom adds) across SIGKILL:\n{}",
        violations.join("\n")
    );
    // The restarted server carries on from the durable versions.
    let key = &report.tallies[0].key;
    let before = get_session(&mut cart, key).await.unwrap();
    let after = add_item(&mut cart, key, "NEXT", 1, 100).await.unwrap();
    assert_eq!(after.version, before.version + 1);
}
