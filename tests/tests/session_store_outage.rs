//! Store outage: with store-svc gone, session-svc answers UNAVAILABLE (fast, never a hang);
//! with store-svc back on the same port and data, the same session-svc process works again.

use std::time::{Duration, Instant};

use proto::session::v1::{GetSessionRequest, StartSessionRequest};
use tempfile::TempDir;
use tests::{
    SessionOptions, StoreOptions,
    session_client::{
        add_item, add_request, get_session, poll_until, quantity_of, start, with_timeout,
    },
    spawn_session, spawn_store_at, spawn_store_with,
    status::expect_code,
};
use tonic::Code;

/// The client deadline of calls made while the store is down.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// Hang guard for the channel to reconnect once the store is back.
const RECONNECT_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_unavailable_while_the_store_is_down_and_work_again_when_it_returns() {
    let data = TempDir::with_prefix("store-outage-").unwrap();
    let mut store = spawn_store_with(StoreOptions::new().data_dir(data.path())).await;
    let store_addr = store.addr();
    let session = spawn_session(&store.endpoint(), SessionOptions::new()).await;
    let mut cart = session.cart().await;
    let key = "through-the-outage";
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "A", 1, 100).await.unwrap();

    store.kill().await.expect("SIGKILL store-svc");

    // Each call's latency is reported, not asserted: the contract is the code.
    let started = Instant::now();
    let outcome = cart
        .add_item(with_timeout(add_request(key, "A", 1, 100), CALL_DEADLINE))
        .await;
    eprintln!("store down: AddItem failed after {:?}", started.elapsed());
    expect_code(
        outcome,
        Code::Unavailable,
        "AddItem on a live session, store down",
    );

    let started = Instant::now();
    let new_key = StartSessionRequest {
        key: "new-during-outage".into(),
        ..Default::default()
    };
    let outcome = cart
        .start_session(with_timeout(new_key, CALL_DEADLINE))
        .await;
    eprintln!(
        "store down: StartSession failed after {:?}",
        started.elapsed()
    );
    expect_code(
        outcome,
        Code::Unavailable,
        "StartSession of a new key, store down",
    );

    // The failed write left the actor's durable state unknown: it must reload, and cannot.
    let started = Instant::now();
    let read = GetSessionRequest { key: key.into() };
    let outcome = cart.get_session(with_timeout(read, CALL_DEADLINE)).await;
    eprintln!(
        "store down: GetSession failed after {:?}",
        started.elapsed()
    );
    expect_code(
        outcome,
        Code::Unavailable,
        "GetSession after a failed write, store down",
    );

    let _store_again = spawn_store_at(store_addr, data.path()).await;

    let reconnected = poll_until(RECONNECT_LIMIT, Duration::from_millis(100), || {
        let mut cart = cart.clone();
        async move {
            match cart
                .add_item(with_timeout(add_request(key, "A", 1, 100), CALL_DEADLINE))
                .await
            {
                Ok(reply) => Some(Ok(reply.into_inner())),
                Err(status) if status.code() == Code::Unavailable => None,
                Err(status) => Some(Err(status)),
            }
        }
    })
    .await
    .unwrap_or_else(|| panic!("still UNAVAILABLE {RECONNECT_LIMIT:?} after the store returned"))
    .expect("while reconnecting, the only error is UNAVAILABLE");

    // The add before the outage and the one after it; none of the refused ones.
    assert_eq!(quantity_of(&reconnected, "A"), 2);
    assert_eq!(reconnected.version, 3);
    assert_eq!(get_session(&mut cart, key).await.unwrap(), reconnected);
    start(&mut cart, "new-after-outage").await.unwrap();
    assert!(
        session.rss_bytes().is_ok(),
        "the same session-svc process (pid {}) served throughout",
        session.pid()
    );
}
