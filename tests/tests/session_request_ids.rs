//! Request ids and Checkout, end to end: an id names one request (reused with another RPC or
//! other fields it is INVALID_ARGUMENT and nothing is applied); Checkout's order and the
//! checked-out cart are one commit, so neither is ever seen without the other, and a retried
//! Checkout returns the order the first attempt returned; bodies that do not decode are
//! INVALID_ARGUMENT.

use prost::Message;
use proto::session::v1::{
    AddItemRequest, CheckoutRequest, EndSessionRequest, Order, RemoveItemRequest, SessionStatus,
};
use tests::{
    SessionOptions,
    raw_bytes::{call_raw, length_delimited_field},
    session_client::{add_request, get_session, quantity_of, start},
    spawn_session_stack,
    status::{assert_invalid_argument_naming, expect_code},
    store_client::{lookup, put},
};
use tonic::Code;

fn with_id(mut request: AddItemRequest, id: &str) -> AddItemRequest {
    request.request_id = id.into();
    request
}

#[tokio::test]
async fn a_request_id_reused_for_another_rpc_or_other_fields_is_refused_and_applies_nothing() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "reuse").await.unwrap();
    let first = cart
        .add_item(with_id(add_request("reuse", "A", 2, 100), "x"))
        .await
        .unwrap()
        .into_inner();

    let checkout = CheckoutRequest {
        key: "reuse".into(),
        request_id: "x".into(),
    };
    assert_invalid_argument_naming(
        cart.checkout(checkout).await,
        "request_id",
        "Checkout with AddItem's request id",
    );
    assert_invalid_argument_naming(
        cart.add_item(with_id(add_request("reuse", "A", 3, 100), "x"))
            .await,
        "request_id",
        "AddItem with the same id and another quantity",
    );
    let remove = RemoveItemRequest {
        key: "reuse".into(),
        sku: "A".into(),
        quantity: 1,
        request_id: "x".into(),
    };
    assert_invalid_argument_naming(
        cart.remove_item(remove).await,
        "request_id",
        "RemoveItem with AddItem's request id",
    );

    let now = get_session(&mut cart, "reuse").await.unwrap();
    assert_eq!(now.status, SessionStatus::Active as i32, "not checked out");
    assert_eq!(quantity_of(&now, "A"), 2);
    assert_eq!(now.version, first.version, "nothing was applied");
    // The true retry is still recognised after the refusals.
    let retried = cart
        .add_item(with_id(add_request("reuse", "A", 2, 100), "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.version, first.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_checkout_returns_the_stored_order_the_first_attempt_returned() {
    let mut stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "buy").await.unwrap();
    cart.add_item(with_id(add_request("buy", "A", 2, 1999), "a"))
        .await
        .unwrap();
    let checkout = || CheckoutRequest {
        key: "buy".into(),
        request_id: "buy-1".into(),
    };
    let order = cart.checkout(checkout()).await.unwrap().into_inner();

    // The cart is final: edits are refused, and the retry still answers the first order.
    expect_code(
        cart.add_item(with_id(add_request("buy", "B", 1, 5), "b"))
            .await,
        Code::FailedPrecondition,
        "AddItem after Checkout",
    );
    assert_eq!(cart.checkout(checkout()).await.unwrap().into_inner(), order);

    let mut store = stack.store.client().await.unwrap();
    let stored = lookup(&mut store, "orders", "buy").await.unwrap().unwrap();
    assert_eq!(Order::decode(stored.value.as_slice()).unwrap(), order);

    // And after a restart, from the stored order.
    stack.session.kill().await.expect("SIGKILL session-svc");
    let session = stack.session.respawn().await;
    let mut cart = session.cart().await;
    assert_eq!(cart.checkout(checkout()).await.unwrap().into_inner(), order);
    let ended = EndSessionRequest {
        key: "buy".into(),
        request_id: "end".into(),
    };
    expect_code(
        cart.end_session(ended).await,
        Code::FailedPrecondition,
        "EndSession of a checked-out cart",
    );
}

#[tokio::test]
async fn checkout_writes_the_order_and_the_cart_together_or_not_at_all() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    start(&mut cart, "split").await.unwrap();
    cart.add_item(add_request("split", "A", 1, 100))
        .await
        .unwrap();
    // Another writer got an order record in first: the commit cannot apply, so the cart must
    // not become checked out either (the old create-if-absent order write let them diverge).
    let mut store = stack.store.client().await.unwrap();
    put(&mut store, "orders", "split", b"someone else's".to_vec(), 0)
        .await
        .unwrap();
    let checkout = CheckoutRequest {
        key: "split".into(),
        request_id: "c-1".into(),
    };
    expect_code(
        cart.checkout(checkout).await,
        Code::Aborted,
        "Checkout over a foreign order record",
    );
    let now = get_session(&mut cart, "split").await.unwrap();
    assert_eq!(now.status, SessionStatus::Active as i32);
    let foreign = lookup(&mut store, "orders", "split")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(foreign.value, b"someone else's");
    assert_eq!(foreign.version, 1);
}

#[tokio::test]
async fn bodies_that_do_not_decode_are_invalid_argument_on_session_svc() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let channel = stack.session.channel().await.unwrap();
    for method in ["StartSession", "GetSession", "AddItem", "Checkout"] {
        let path = format!("/session.v1.CartService/{method}");
        expect_code(
            call_raw(channel.clone(), &path, vec![0xff, 0xff, 0xff]).await,
            Code::InvalidArgument,
            &format!("{method} with garbage"),
        );
    }
    // A list name that is not UTF-8 (field 1 of ListEntriesRequest).
    expect_code(
        call_raw(
            channel.clone(),
            "/session.v1.TodoService/ListEntries",
            length_delimited_field(1, b"k\x80\xff"),
        )
        .await,
        Code::InvalidArgument,
        "ListEntries with a list name that is not UTF-8",
    );
    // The connection and the server are fine afterwards.
    let mut cart = stack.session.cart().await;
    start(&mut cart, "after-garbage").await.unwrap();
}
