//! Retries and watchers: a request id is applied once (even across a restart of session-svc),
//! and a watcher sees every change, in order, until the session ends.

use std::time::Duration;

use proto::session::v1::{AddItemRequest, CheckoutRequest, Session, SessionStatus};
use tests::{
    SessionOptions,
    session_client::{
        add_item, add_request, end_session, get_session, quantity_of, start, watch_session,
    },
    spawn_session_stack,
};
use tonic::Streaming;

/// Sequential changes the watcher must see one by one. Below the server's per-watcher buffer
/// (16), so even a slow reader is never entitled to skip.
const CHANGES: usize = 10;

/// Hang guard for one watch message.
const MESSAGE_LIMIT: Duration = Duration::from_secs(10);

fn with_id(mut request: AddItemRequest, request_id: &str) -> AddItemRequest {
    request.request_id = request_id.to_owned();
    request
}

async fn next(watch: &mut Streaming<Session>) -> Option<Session> {
    tokio::time::timeout(MESSAGE_LIMIT, watch.message())
        .await
        .unwrap_or_else(|_| panic!("no watch message or end within {MESSAGE_LIMIT:?}"))
        .expect("the watch stream ends cleanly")
}

#[tokio::test]
async fn a_retried_request_id_is_applied_once_and_answered_with_the_current_state() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "retried";
    start(&mut cart, key).await.unwrap();

    let first = cart
        .add_item(with_id(add_request(key, "A", 2, 100), "add-1"))
        .await
        .unwrap()
        .into_inner();
    let retry = cart
        .add_item(with_id(add_request(key, "A", 2, 100), "add-1"))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        retry, first,
        "nothing changed since, so the current state is the first reply"
    );
    assert_eq!(quantity_of(&first, "A"), 2);
    assert_eq!(get_session(&mut cart, key).await.unwrap(), first);
    // A new id is a new request.
    let second = cart
        .add_item(with_id(add_request(key, "A", 2, 100), "add-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quantity_of(&second, "A"), 4);
    assert_eq!(second.version, first.version + 1);

    // A retried Checkout returns the same order instead of FAILED_PRECONDITION.
    let checkout = || CheckoutRequest {
        key: key.into(),
        request_id: "buy-1".into(),
    };
    let order = cart.checkout(checkout()).await.unwrap().into_inner();
    let retried_order = cart.checkout(checkout()).await.unwrap().into_inner();
    assert_eq!(retried_order, order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_retried_after_a_session_svc_restart_is_still_applied_once() {
    let mut stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "retried-across-restart";
    start(&mut cart, key).await.unwrap();
    let first = cart
        .add_item(with_id(add_request(key, "A", 3, 100), "before-crash"))
        .await
        .unwrap()
        .into_inner();

    stack.session.kill().await.expect("SIGKILL session-svc");
    let restarted = stack.session.respawn().await;
    let mut cart = restarted.cart().await;
    let retry = cart
        .add_item(with_id(add_request(key, "A", 3, 100), "before-crash"))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(retry, first);
    let now = get_session(&mut cart, key).await.unwrap();
    assert_eq!(quantity_of(&now, "A"), 3);
    assert_eq!(now.version, first.version);
}

#[tokio::test]
async fn a_watcher_sees_the_current_state_then_every_change_in_order_until_checkout() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "watched";
    let started = start(&mut cart, key).await.unwrap();
    let mut watch = watch_session(&mut cart, key).await.unwrap();
    let current = next(&mut watch).await.expect("the current state first");
    assert_eq!(current, started);

    let mut replies = Vec::new();
    for _ in 0..CHANGES {
        replies.push(add_item(&mut cart, key, "A", 1, 100).await.unwrap());
    }
    let order = cart
        .checkout(CheckoutRequest {
            key: key.into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    for (n, reply) in replies.iter().enumerate() {
        let seen = next(&mut watch)
            .await
            .unwrap_or_else(|| panic!("the stream ended after {n} of {CHANGES} changes"));
        assert_eq!(seen.version, started.version + 1 + n as u64, "change {n}");
        assert_eq!(&seen, reply, "change {n} as the caller saw it");
    }
    let checked_out = next(&mut watch).await.expect("the checked-out state");
    assert_eq!(checked_out.status, SessionStatus::CheckedOut as i32);
    assert_eq!(checked_out.order_id, order.order_id);
    assert_eq!(checked_out.version, started.version + 1 + CHANGES as u64);
    assert_eq!(
        next(&mut watch).await,
        None,
        "the stream ends with the session"
    );
}

#[tokio::test]
async fn a_watch_ends_when_the_session_is_ended() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "watched-to-the-end";
    start(&mut cart, key).await.unwrap();
    let mut watch = watch_session(&mut cart, key).await.unwrap();
    next(&mut watch).await.expect("the current state");

    let ended = end_session(&mut cart, key).await.unwrap();

    assert_eq!(next(&mut watch).await, Some(ended));
    assert_eq!(next(&mut watch).await, None);
}
