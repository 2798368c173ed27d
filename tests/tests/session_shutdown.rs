//! Graceful shutdown: SIGTERM while requests are in flight turns health NOT_SERVING, ends open
//! watch streams instead of waiting on them, finishes what was accepted, and exits 0; every
//! acknowledged write is there after a restart.

use std::time::{Duration, Instant};

use tests::{
    SessionOptions,
    cart_writers::{CartBurst, reconcile},
    session_client::{start, watch_session},
    spawn_session_stack,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Writers in the burst, each owning its keys, one AddItem in flight at a time.
const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 2;

/// Adds acknowledged before the signal, so it lands mid-burst.
const ACKNOWLEDGED_BEFORE_SIGNAL: u64 = 200;

/// A grace period far longer than the drain needs: a shutdown that waited for an open stream
/// instead of ending it would take this long.
const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// Hang guards: the exit must come well before the grace period runs out.
const EXIT_LIMIT: Duration = Duration::from_secs(15);
const BURST_START_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_drains_ends_watches_exits_zero_and_keeps_every_acknowledged_write() {
    let grace = format!("{}s", GRACE_PERIOD.as_secs());
    let mut stack = spawn_session_stack(SessionOptions::new().grace_period(&grace)).await;
    let mut cart = stack.session.cart().await;

    // An open watch on a session nobody changes: only the shutdown can end it.
    start(&mut cart, "watched").await.unwrap();
    let mut session_watch = watch_session(&mut cart, "watched").await.unwrap();
    session_watch
        .message()
        .await
        .unwrap()
        .expect("the current state");
    // A health watcher that lets go as soon as it sees NOT_SERVING, so it never holds the drain.
    let mut health = HealthClient::new(stack.session.channel().await.unwrap());
    let mut health_watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first_health = health_watch.message().await.unwrap().map(|r| r.status);
    assert_eq!(first_health, Some(ServingStatus::Serving as i32));
    let health_seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(reply)) = health_watch.message().await {
            seen.push(reply.status);
            if reply.status == ServingStatus::NotServing as i32 {
                break;
            }
        }
        seen
    });

    let burst = CartBurst::start(&stack.session, "drained", WRITERS, KEYS_PER_WRITER).await;
    assert!(
        burst
            .wait_for_acknowledged(ACKNOWLEDGED_BEFORE_SIGNAL, BURST_START_LIMIT)
            .await,
        "the burst never got going: {} adds acknowledged",
        burst.acknowledged()
    );

    burst.mark_disrupted();
    let signalled_at = Instant::now();
    stack.session.terminate().await.expect("send SIGTERM");
    let exit = tokio::time::timeout(EXIT_LIMIT, stack.session.wait())
        .await
        .unwrap_or_else(|_| {
            panic!("session-svc still running {EXIT_LIMIT:?} after SIGTERM (grace {grace})")
        })
        .expect("wait for session-svc");
    eprintln!(
        "session-svc exited {:?} after SIGTERM",
        signalled_at.elapsed()
    );
    let watch_end = tokio::time::timeout(Duration::from_secs(5), session_watch.message())
        .await
        .expect("the session watch is over once the server has exited");
    let report = burst.finish().await;
    let health_seen = health_seen.await.unwrap();

    assert_eq!(
        exit.code(),
        Some(0),
        "session-svc must exit 0 after SIGTERM, got {exit}; stderr:\n{}",
        stack.session.stderr_tail(40)
    );
    match watch_end {
        Ok(None) => {}
        Err(status) if status.code() == Code::Unavailable => {}
        other => panic!("the open WatchSession should end with UNAVAILABLE or EOF: {other:?}"),
    }
    eprintln!("health watch saw {health_seen:?}");
    assert_eq!(
        health_seen.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "health should report NOT_SERVING during the drain"
    );
    assert!(
        report.problems.is_empty(),
        "contract broken during the burst:\n{}",
        report.problems.join("\n")
    );

    let restarted = stack.session.respawn().await;
    let violations = reconcile(&mut restarted.cart().await, &report.tallies).await;
    assert!(
        violations.is_empty(),
        "acknowledged adds lost (or phantom adds) across a graceful shutdown:\n{}",
        violations.join("\n")
    );
}
