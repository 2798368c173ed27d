//! Slow store: a call whose deadline passes while session-svc waits on store-svc fails, and its
//! change is not applied later (seed 004: a timed-out call that still runs afterwards is the
//! bug we fix). The failure tells the truth: the write was already on its way to the store, so
//! session-svc answers UNAVAILABLE "outcome unknown" (never DEADLINE_EXCEEDED, which would
//! promise it was not applied), and a retry with the same request id settles it, once.
//!
//! The store sits behind a [`DelayProxy`]: every chunk, both ways, arrives 300 ms late, so the
//! store receives the write after its caller's 100 ms budget is gone.

use std::time::{Duration, Instant};

use tests::{
    DelayProxy, SessionOptions,
    session_client::{add_item, add_request, get_session, quantity_of, start, with_timeout},
    spawn_session, spawn_store,
    status::is_client_side_timeout,
    store_client::get,
};
use tonic::Code;

/// Latency the proxy adds to every chunk while the store is "slow".
const STORE_DELAY: Duration = Duration::from_millis(300);

/// The client's deadline: far less than one round trip through the proxy.
const CLIENT_DEADLINE: Duration = Duration::from_millis(100);

/// How long to let anything still in flight through the proxy land before checking that the
/// change never did: well above one slow round trip.
const SETTLE: Duration = Duration::from_millis(1500);

/// Hang guard on one expired call; not a latency requirement.
const HANG_LIMIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_deadline_passes_on_a_slow_store_is_never_applied_and_says_so_truthfully() {
    let store = spawn_store().await;
    let proxy = DelayProxy::start(store.addr(), Duration::ZERO)
        .await
        .unwrap();
    let session = spawn_session(&proxy.endpoint(), SessionOptions::new()).await;
    let mut cart = session.cart().await;
    let mut raw = session.raw_cart().await;
    let key = "slow";
    start(&mut cart, key).await.unwrap();
    let before = add_item(&mut cart, key, "A", 1, 100).await.unwrap();

    proxy.set_delay(STORE_DELAY);
    // Over a bare connection the answer is session-svc's own.
    let started = Instant::now();
    let slow = || {
        let mut request = add_request(key, "A", 1, 100);
        request.request_id = "slow-1".into();
        request
    };
    let outcome = raw.add_item(with_timeout(slow(), CLIENT_DEADLINE)).await;
    let elapsed = started.elapsed();
    eprintln!(
        "AddItem with a {CLIENT_DEADLINE:?} deadline on a slow store answered in {elapsed:?}"
    );
    let status = outcome.expect_err("AddItem with a 100 ms deadline on a slow store");
    assert!(
        status.code() == Code::Unavailable && status.message().contains("unknown"),
        "the write was sent, so its outcome is unknown: {status:?}"
    );
    assert!(elapsed < HANG_LIMIT, "the expired AddItem took {elapsed:?}");
    // Through tonic's Channel, its own timer may answer first; either way it fails.
    let started = Instant::now();
    let status = cart
        .add_item(with_timeout(add_request(key, "A", 1, 100), CLIENT_DEADLINE))
        .await
        .expect_err("AddItem with a 100 ms deadline on a slow store");
    eprintln!(
        "the same through tonic's Channel: {:?} after {:?}",
        status.code(),
        started.elapsed()
    );
    assert!(
        status.code() == Code::DeadlineExceeded || is_client_side_timeout(&status),
        "AddItem through tonic: {status:?}"
    );

    proxy.set_delay(Duration::ZERO);
    tokio::time::sleep(SETTLE).await;

    let after = get_session(&mut cart, key).await.unwrap();
    assert_eq!(
        quantity_of(&after, "A"),
        1,
        "an expired AddItem was applied"
    );
    assert_eq!(after.version, before.version);
    assert_eq!(after, before);
    // The durable record agrees: the store never took the expired writes.
    let mut store_client = store.client().await.unwrap();
    assert_eq!(
        get(&mut store_client, "cart", key).await.unwrap().version,
        before.version
    );
    // The retry the UNAVAILABLE asked for is applied, once; so is a new request.
    let retried = cart.add_item(slow()).await.unwrap().into_inner();
    assert_eq!(
        (quantity_of(&retried, "A"), retried.version),
        (2, before.version + 1)
    );
    let again = cart.add_item(slow()).await.unwrap().into_inner();
    assert_eq!(
        again.version, retried.version,
        "a second retry changes nothing"
    );
    let next = add_item(&mut cart, key, "A", 1, 100).await.unwrap();
    assert_eq!(
        (quantity_of(&next, "A"), next.version),
        (3, before.version + 2)
    );
}
