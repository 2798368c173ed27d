//! The cart API, end to end: a shopper's whole walk, the order it leaves in the store, keys and
//! versions.

use std::collections::HashSet;

use prost::Message as _;
use proto::session::v1::{
    CheckoutRequest, DiscountKind, EndSessionRequest, GetSessionRequest, Order, RemoveItemRequest,
    SessionStatus, WatchSessionRequest,
};
use tests::{
    SessionOptions,
    session_client::{
        add_item, add_request, apply_discount, checkout, end_session, get_session, quantity_of,
        remove_item, start, usd,
    },
    spawn_session_stack,
    status::expect_code,
    store_client::get,
};
use tonic::Code;

/// The namespace and key Checkout writes the order to (DESIGN.md: store namespace `orders`).
const ORDERS_NAMESPACE: &str = "orders";

/// Length of a server-made key: 128 random bits in unpadded URL-safe base64.
const GENERATED_KEY_CHARS: usize = 22;

#[tokio::test]
async fn a_cart_walk_from_start_to_checkout_prices_the_order_and_stores_it() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "walk";

    let started = start(&mut cart, key).await.unwrap();
    assert_eq!(started.key, key);
    assert_eq!(started.status, SessionStatus::Active as i32);
    assert_eq!(
        (started.domain.as_str(), started.member_id.as_str()),
        ("shop.example", "member-42")
    );
    assert!(started.items.is_empty());

    // Same sku adds up.
    add_item(&mut cart, key, "A", 2, 1000).await.unwrap();
    let session = add_item(&mut cart, key, "A", 1, 1000).await.unwrap();
    assert_eq!(quantity_of(&session, "A"), 3);
    assert_eq!(session.items.len(), 1, "one line per sku: {session:?}");
    // Removing some units keeps the line; removing the rest removes it.
    add_item(&mut cart, key, "B", 2, 250).await.unwrap();
    let session = remove_item(&mut cart, key, "B", 1).await.unwrap();
    assert_eq!(quantity_of(&session, "B"), 1);
    let session = remove_item(&mut cart, key, "B", 1).await.unwrap();
    assert!(
        session.items.iter().all(|item| item.sku != "B"),
        "a line removed to zero must be gone: {session:?}"
    );
    // Subtotal now 3 × 1000 = 3000.
    assert_eq!(session.subtotal, Some(usd(3000)));

    // A percentage and a fixed discount; applying one again changes nothing.
    let with_percentage = apply_discount(&mut cart, key, "SAVE10").await.unwrap();
    let with_both = apply_discount(&mut cart, key, "FIVEOFF").await.unwrap();
    let again = apply_discount(&mut cart, key, "SAVE10").await.unwrap();
    assert_eq!(with_percentage.discount_total, Some(usd(300)));
    assert_eq!(with_both.discount_total, Some(usd(800)));
    assert_eq!(with_both.total, Some(usd(2200)));
    assert_eq!(
        again.version, with_both.version,
        "applying SAVE10 twice must not change the session"
    );
    assert_eq!(again.discounts, with_both.discounts);
    let kinds: Vec<(String, i32)> = with_both
        .discounts
        .iter()
        .map(|d| (d.code.clone(), d.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("SAVE10".to_owned(), DiscountKind::Percentage as i32),
            ("FIVEOFF".to_owned(), DiscountKind::Fixed as i32),
        ]
    );

    let order = checkout(&mut cart, key).await.unwrap();
    assert_eq!(order.order_id, key, "the order id is the session key");
    assert_eq!(order.session_key, key);
    assert_eq!(order.subtotal, Some(usd(3000)));
    assert_eq!(order.discount_total, Some(usd(800)));
    assert_eq!(order.total, Some(usd(2200)));
    assert_eq!(order.items, with_both.items);
    assert_eq!(order.discounts, with_both.discounts);
    assert_eq!(
        (
            order.domain.as_str(),
            order.landing.as_str(),
            order.ip.as_str()
        ),
        ("shop.example", "/landing/spring-sale", "192.0.2.7")
    );
    assert!(
        !order.logs.is_empty(),
        "the order carries the session's log"
    );

    // The order is durable in the store, as a session.v1.Order any language can read.
    let mut store = stack.store.client().await.unwrap();
    let stored = get(&mut store, ORDERS_NAMESPACE, &order.order_id)
        .await
        .expect("the order is in the store's `orders` namespace");
    let decoded = Order::decode(stored.value.as_slice()).expect("a session.v1.Order");
    assert_eq!(decoded, order);

    let after = get_session(&mut cart, key).await.unwrap();
    assert_eq!(after.status, SessionStatus::CheckedOut as i32);
    assert_eq!(after.order_id, order.order_id);
}

#[tokio::test]
async fn a_checked_out_session_refuses_every_mutation_with_failed_precondition() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "bought";
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "A", 1, 500).await.unwrap();
    checkout(&mut cart, key).await.unwrap();
    let before = get_session(&mut cart, key).await.unwrap();

    let case = "on a checked-out session";
    expect_code(
        add_item(&mut cart, key, "B", 1, 100).await,
        Code::FailedPrecondition,
        &format!("AddItem {case}"),
    );
    expect_code(
        remove_item(&mut cart, key, "A", 1).await,
        Code::FailedPrecondition,
        &format!("RemoveItem {case}"),
    );
    expect_code(
        apply_discount(&mut cart, key, "SAVE10").await,
        Code::FailedPrecondition,
        &format!("ApplyDiscount {case}"),
    );
    expect_code(
        checkout(&mut cart, key).await,
        Code::FailedPrecondition,
        &format!("Checkout {case}"),
    );
    expect_code(
        end_session(&mut cart, key).await,
        Code::FailedPrecondition,
        &format!("EndSession {case}"),
    );

    assert_eq!(get_session(&mut cart, key).await.unwrap(), before);
}

#[tokio::test]
async fn ending_a_session_marks_it_ended_and_refuses_later_mutations() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "abandoned";
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "A", 1, 500).await.unwrap();

    let ended = end_session(&mut cart, key).await.unwrap();

    assert_eq!(ended.status, SessionStatus::Ended as i32);
    assert_eq!(ended.order_id, "", "ending without buying makes no order");
    expect_code(
        add_item(&mut cart, key, "B", 1, 100).await,
        Code::FailedPrecondition,
        "AddItem on an ended session",
    );
    expect_code(
        checkout(&mut cart, key).await,
        Code::FailedPrecondition,
        "Checkout on an ended session",
    );
    let mut store = stack.store.client().await.unwrap();
    expect_code(
        get(&mut store, ORDERS_NAMESPACE, key).await,
        Code::NotFound,
        "an ended session's order",
    );
}

#[tokio::test]
async fn every_cart_rpc_on_a_never_started_key_is_not_found() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "never-started";
    let named = |rpc: &str| format!("{rpc} on a never-started key");

    expect_code(
        cart.get_session(GetSessionRequest { key: key.into() })
            .await,
        Code::NotFound,
        &named("GetSession"),
    );
    expect_code(
        cart.add_item(add_request(key, "A", 1, 100)).await,
        Code::NotFound,
        &named("AddItem"),
    );
    expect_code(
        cart.remove_item(RemoveItemRequest {
            key: key.into(),
            sku: "A".into(),
            quantity: 1,
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        &named("RemoveItem"),
    );
    expect_code(
        apply_discount(&mut cart, key, "SAVE10").await,
        Code::NotFound,
        &named("ApplyDiscount"),
    );
    expect_code(
        cart.checkout(CheckoutRequest {
            key: key.into(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        &named("Checkout"),
    );
    expect_code(
        cart.end_session(EndSessionRequest {
            key: key.into(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        &named("EndSession"),
    );
    expect_code(
        cart.watch_session(WatchSessionRequest { key: key.into() })
            .await
            .map(|_| ()),
        Code::NotFound,
        &named("WatchSession"),
    );
    // None of that created the session.
    expect_code(
        get_session(&mut cart, key).await,
        Code::NotFound,
        "GetSession after the refused calls",
    );
}

#[tokio::test]
async fn generated_keys_are_22_url_safe_characters_and_never_repeat() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let mut keys = HashSet::new();

    for _ in 0..50 {
        let session = start(&mut cart, "").await.unwrap();
        let key = session.key;
        assert_eq!(key.len(), GENERATED_KEY_CHARS, "generated key {key:?}");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "generated key {key:?} is not URL-safe base64"
        );
        assert!(keys.insert(key.clone()), "key {key:?} generated twice");
        // A generated key names a real session.
        assert_eq!(get_session(&mut cart, &key).await.unwrap().key, key);
    }
}

#[tokio::test]
async fn starting_an_existing_key_returns_the_session_unchanged() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "started-twice";
    start(&mut cart, key).await.unwrap();
    let filled = add_item(&mut cart, key, "A", 2, 100).await.unwrap();

    let mut other_shopper = proto::session::v1::StartSessionRequest {
        key: key.to_owned(),
        domain: "other.example".to_owned(),
        ..Default::default()
    };
    other_shopper.member_id = "someone-else".to_owned();
    let restarted = cart
        .start_session(other_shopper)
        .await
        .unwrap()
        .into_inner();

    assert_eq!(restarted, filled);
}

#[tokio::test]
async fn versions_start_at_one_and_grow_by_one_per_change_only() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "versions";

    assert_eq!(start(&mut cart, key).await.unwrap().version, 1);
    assert_eq!(start(&mut cart, key).await.unwrap().version, 1);
    assert_eq!(get_session(&mut cart, key).await.unwrap().version, 1);
    let changes = [
        add_item(&mut cart, key, "A", 1, 100).await.unwrap().version,
        add_item(&mut cart, key, "A", 1, 100).await.unwrap().version,
        remove_item(&mut cart, key, "A", 1).await.unwrap().version,
        apply_discount(&mut cart, key, "HALFOFF")
            .await
            .unwrap()
            .version,
    ];
    assert_eq!(changes, [2, 3, 4, 5]);
    assert_eq!(get_session(&mut cart, key).await.unwrap().version, 5);
    // The session's version is the store's version of its record.
    let mut store = stack.store.client().await.unwrap();
    assert_eq!(get(&mut store, "cart", key).await.unwrap().version, 5);
}
