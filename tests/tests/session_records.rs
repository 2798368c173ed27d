//! What a write costs and what a record holds: every documented limit is reachable with request
//! ids on every call, a record's size does not grow with history, events and entries are
//! records of their own, and the event history pages in order and stays bounded.

use std::collections::BTreeSet;

use proto::session::v1::{
    AddEntryRequest, ApplyDiscountRequest, CheckoutRequest, DeleteEntryRequest,
    ListSessionEventsRequest, RemoveItemRequest, UpdateEntryRequest,
};
use tests::{
    CartClient, SessionOptions, TodoClient,
    session_client::{add_request, get_session, list_entries, start},
    spawn_session_stack,
    status::{assert_invalid_argument_naming, expect_code},
    store_client::lookup,
};
use tokio::task::JoinSet;
use tonic::Code;

/// The domain's limits, as the API documents them.
const MAX_LINES: usize = 500;
const MAX_SKU_BYTES: usize = 64;
const MAX_NAME_BYTES: usize = 256;
const MAX_ENTRIES: usize = 10_000;
const MAX_TITLE_BYTES: usize = 1_000;

/// A sku of exactly the maximum length, unique per `i`.
fn long_sku(i: usize) -> String {
    format!("{i:0width$}", width = MAX_SKU_BYTES)
}

/// Adds line `i` at maximum length, with a request id.
async fn add_long_line(cart: &mut CartClient, key: &str, i: usize) {
    let mut request = add_request(key, &long_sku(i), 1, 100);
    request.name = "n".repeat(MAX_NAME_BYTES);
    request.request_id = format!("add-{i}");
    cart.add_item(request)
        .await
        .unwrap_or_else(|status| panic!("AddItem of line {i}: {status:?}"));
}

/// Bytes of the cart's own stored record.
async fn record_size(stack: &tests::SessionStack, key: &str) -> usize {
    let mut store = stack.store.client().await.expect("store client");
    lookup(&mut store, "cart", key)
        .await
        .expect("store Get")
        .expect("the cart's record")
        .value
        .len()
}

/// RemoveItem then AddItem of one unit of line 0, each with a fresh request id: the cart's
/// content is unchanged afterwards, and two events more have happened.
async fn toggle(cart: &mut CartClient, key: &str, round: usize) {
    let remove = RemoveItemRequest {
        key: key.into(),
        sku: long_sku(0),
        quantity: 1,
        request_id: format!("toggle-remove-{round}"),
    };
    cart.remove_item(remove).await.expect("RemoveItem");
    let mut add = add_request(key, &long_sku(0), 1, 100);
    add.name = "n".repeat(MAX_NAME_BYTES);
    add.request_id = format!("toggle-add-{round}");
    cart.add_item(add).await.expect("AddItem");
}

#[tokio::test]
async fn a_cart_at_max_lines_with_max_length_fields_keeps_accepting_writes_at_a_constant_size() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let key = "k".repeat(256);
    start(&mut cart, &key).await.expect("StartSession");
    for i in 0..MAX_LINES {
        add_long_line(&mut cart, &key, i).await;
    }
    let full = get_session(&mut cart, &key).await.unwrap();
    assert_eq!(full.items.len(), MAX_LINES);
    let beyond = cart
        .add_item({
            let mut request = add_request(&key, "one-more", 1, 100);
            request.request_id = "beyond".into();
            request
        })
        .await;
    expect_code(beyond, Code::FailedPrecondition, "a line beyond MAX_LINES");

    // With the request-id memory full, more history changes nothing in the record.
    for round in 0..50 {
        toggle(&mut cart, &key, round).await;
    }
    let size_before = record_size(&stack, &key).await;
    for round in 50..250 {
        toggle(&mut cart, &key, round).await;
    }
    let size_after = record_size(&stack, &key).await;
    assert!(
        size_before.abs_diff(size_after) < 512,
        "400 more events grew the record from {size_before} to {size_after} bytes"
    );
    assert!(size_after < 1024 * 1024, "{size_after} bytes");

    let discount = ApplyDiscountRequest {
        key: key.clone(),
        code: "SAVE10".into(),
        request_id: "discount".into(),
    };
    cart.apply_discount(discount).await.expect("ApplyDiscount");
    let checkout = CheckoutRequest {
        key: key.clone(),
        request_id: "checkout".into(),
    };
    let order = cart
        .checkout(checkout)
        .await
        .expect("Checkout")
        .into_inner();
    assert_eq!(order.items.len(), MAX_LINES);
}

#[tokio::test]
async fn the_event_history_pages_in_order_and_keeps_only_the_newest() {
    let stack = spawn_session_stack(SessionOptions::new().events_per_cart(25).log_limit(5)).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "history").await.unwrap();
    for i in 0..39 {
        let mut request = add_request("history", &format!("sku-{}", i % 3), 1, 100);
        request.request_id = format!("r-{i}");
        cart.add_item(request).await.unwrap();
    }
    let session = get_session(&mut cart, "history").await.unwrap();
    assert_eq!(session.event_count, 40, "started + 39 adds");
    let shown: Vec<u64> = session.logs.iter().map(|l| l.sequence).collect();
    assert_eq!(
        shown,
        [36, 37, 38, 39, 40],
        "the Session shows the latest few"
    );

    let mut sequences = Vec::new();
    let mut page_token = String::new();
    for _ in 0..100 {
        let page = cart
            .list_session_events(ListSessionEventsRequest {
                key: "history".into(),
                page_size: 7,
                page_token,
            })
            .await
            .expect("ListSessionEvents")
            .into_inner();
        assert!(page.events.len() <= 7);
        sequences.extend(page.events.iter().map(|e| e.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        sequences,
        (16..=40).collect::<Vec<_>>(),
        "the 25 newest, in order"
    );
}

#[tokio::test]
async fn listing_events_refuses_bad_input_and_unknown_sessions() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "events").await.unwrap();
    let list = |key: &str, page_size, page_token: &str| ListSessionEventsRequest {
        key: key.into(),
        page_size,
        page_token: page_token.into(),
    };
    expect_code(
        cart.list_session_events(list("never-started", 0, "")).await,
        Code::NotFound,
        "events of a session never started",
    );
    assert_invalid_argument_naming(
        cart.list_session_events(list("events", -1, "")).await,
        "page_size",
        "a negative page size",
    );
    assert_invalid_argument_naming(
        cart.list_session_events(list("events", 0, "not-a-token"))
            .await,
        "page_token",
        "a made-up page token",
    );
    assert_invalid_argument_naming(
        cart.list_session_events(list("", 0, "")).await,
        "key",
        "an empty key",
    );
    let first = cart
        .list_session_events(list("events", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].event, "started");
}

/// Adds entry `i` of `list` with a maximum-length title and a request id.
fn long_entry(list: &str, i: usize) -> AddEntryRequest {
    AddEntryRequest {
        list: list.into(),
        date: format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
        title: format!("{i:0width$}", width = MAX_TITLE_BYTES),
        request_id: format!("entry-{i}"),
    }
}

#[tokio::test]
async fn a_list_at_max_entries_with_max_length_titles_works_and_survives_a_restart() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let todo = stack.session.todo().await;
    let mut writers = JoinSet::new();
    for w in 0..16 {
        let mut todo: TodoClient = todo.clone();
        writers.spawn(async move {
            for i in (w..MAX_ENTRIES).step_by(16) {
                todo.add_entry(long_entry("big", i))
                    .await
                    .unwrap_or_else(|status| panic!("AddEntry {i}: {status:?}"));
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let mut todo = todo;
    let full = list_entries(&mut todo, "big", "")
        .await
        .expect("ListEntries");
    assert_eq!(full.len(), MAX_ENTRIES);
    let ids: BTreeSet<u64> = full.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), MAX_ENTRIES, "every id once");

    let beyond = todo.add_entry(long_entry("big", MAX_ENTRIES)).await;
    expect_code(
        beyond,
        Code::FailedPrecondition,
        "an entry beyond MAX_ENTRIES",
    );
    let update = UpdateEntryRequest {
        list: "big".into(),
        id: full[0].id,
        title: "t".repeat(MAX_TITLE_BYTES),
        request_id: "update".into(),
        ..Default::default()
    };
    todo.update_entry(update).await.expect("UpdateEntry");
    let delete = DeleteEntryRequest {
        list: "big".into(),
        id: full[1].id,
        request_id: "delete".into(),
    };
    todo.delete_entry(delete).await.expect("DeleteEntry");
    todo.add_entry(long_entry("big", MAX_ENTRIES))
        .await
        .expect("room for one again");

    // A new process loads the list from its entries' records.
    let mut session = stack.session;
    session.kill().await.expect("SIGKILL session-svc");
    let session = session.respawn().await;
    let mut todo = session.todo().await;
    let reloaded = list_entries(&mut todo, "big", "")
        .await
        .expect("ListEntries");
    assert_eq!(reloaded.len(), MAX_ENTRIES);
    let updated = reloaded.iter().find(|e| e.id == full[0].id).unwrap();
    assert_eq!(updated.title, "t".repeat(MAX_TITLE_BYTES));
    assert!(reloaded.iter().all(|e| e.id != full[1].id));
}
