//! Cart lifecycle on the real binaries: an active cart untouched for `--cart-ttl` is expired by
//! its durable reminder, which fires even though the actor passivated in between, and even
//! though session-svc was SIGKILLed and restarted; a cart that keeps being touched lives on; a
//! cart stored before reminders existed is given one by the sweeper.

use std::time::{Duration, Instant};

use prost::Message as _;
use proto::session::v1::{ActorRecord, ListSessionEventsRequest, SessionStatus};
use tests::{
    SessionOptions,
    session::{CartClient, spawn_session},
    session_client::{add_item, get_session, poll_until, start},
    spawn_session_stack,
    store_client::{delete, get, put, scan_all},
};
use tonic::Code;

/// The TTL under test, and an idle timeout shorter than it, so the actors passivate first.
const TTL: &str = "2s";
const TTL_DURATION: Duration = Duration::from_secs(2);
const IDLE: &str = "300ms";

/// A hang guard: a reminder is due at the TTL and looked for every second.
const EXPIRY_LIMIT: Duration = Duration::from_secs(30);

async fn status(cart: &mut CartClient, key: &str) -> SessionStatus {
    let session = get_session(cart, key).await.unwrap();
    SessionStatus::try_from(session.status).unwrap()
}

async fn wait_expired(cart: &CartClient, key: &str) -> Duration {
    let started = Instant::now();
    let expired = poll_until(EXPIRY_LIMIT, Duration::from_millis(200), || {
        let mut cart = cart.clone();
        let key = key.to_string();
        async move { (status(&mut cart, &key).await == SessionStatus::Expired).then_some(()) }
    })
    .await;
    assert!(
        expired.is_some(),
        "{key} did not expire within {EXPIRY_LIMIT:?}"
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_carts_expire_by_their_reminder_through_passivation_and_a_restart() {
    let options = SessionOptions::new().cart_ttl(TTL).cart_idle_timeout(IDLE);
    let mut stack = spawn_session_stack(options).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "stale").await.unwrap();
    add_item(&mut cart, "stale", "A", 2, 100).await.unwrap();
    start(&mut cart, "restarted").await.unwrap();

    // The reminders are durable: a SIGKILL before they are due loses neither.
    stack.session.kill().await.unwrap();
    stack.session = stack.session.respawn().await;
    let mut cart = stack.session.cart().await;

    // A cart touched more often than the TTL lives on past it.
    start(&mut cart, "busy").await.unwrap();
    let touched_until = Instant::now() + TTL_DURATION * 2;
    while Instant::now() < touched_until {
        add_item(&mut cart, "busy", "B", 1, 100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(status(&mut cart, "busy").await, SessionStatus::Active);

    for key in ["stale", "restarted"] {
        let waited = wait_expired(&cart, key).await;
        eprintln!("{key} was expired {waited:?} after the check started");
    }
    // Once left alone, the busy cart expires too.
    wait_expired(&cart, "busy").await;

    // An expired cart refuses changes, and its log says why.
    let refused = add_item(&mut cart, "stale", "A", 1, 100).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let events = cart
        .list_session_events(ListSessionEventsRequest {
            key: "stale".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.last(), Some(&"expired"), "events: {names:?}");
    assert_eq!(
        names.iter().filter(|name| **name == "expired").count(),
        1,
        "expired once, however often its reminder was delivered: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_stored_before_reminders_existed_is_given_one_and_expires() {
    // A cart as an older session-svc left it: its record carries no reminder, and the index
    // has none. Made by writing today's record back without them, session-svc stopped.
    let mut stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "legacy").await.unwrap();
    stack.session.kill().await.unwrap();
    let mut store = stack.store.client().await.unwrap();
    let stored = get(&mut store, "cart", "legacy").await.unwrap();
    let mut record = ActorRecord::decode(stored.value.as_slice()).unwrap();
    assert_ne!(
        record.reminder_ms, 0,
        "today's carts are stored with a reminder"
    );
    let index = scan_all(&mut store, "reminders", "cart/", 100)
        .await
        .unwrap()
        .0;
    assert_eq!(index.len(), 1);
    delete(&mut store, "reminders", &index[0].key, index[0].version)
        .await
        .unwrap();
    record.reminder_ms = 0;
    put(
        &mut store,
        "cart",
        "legacy",
        record.encode_to_vec(),
        stored.version,
    )
    .await
    .unwrap();

    // The sweeper finds it, gives it a reminder, and the reminder expires it.
    let options = SessionOptions::new().cart_ttl(TTL).sweep_interval("500ms");
    stack.session = spawn_session(&stack.store.endpoint(), options).await;
    let cart = stack.session.cart().await;
    wait_expired(&cart, "legacy").await;
}
