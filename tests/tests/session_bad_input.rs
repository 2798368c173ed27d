//! Bad input on every RPC: INVALID_ARGUMENT whose google.rpc.BadRequest names the field, never
//! INTERNAL, nothing applied, and the server keeps serving.

use proto::session::v1::{
    AddEntryRequest, AddItemRequest, ApplyDiscountRequest, CheckoutRequest, DeleteEntryRequest,
    EndSessionRequest, GetSessionRequest, ListActorsRequest, ListEntriesRequest, Money,
    RemoveItemRequest, StartSessionRequest, UpdateEntryRequest, WatchListRequest,
    WatchSessionRequest,
};
use tests::{
    CartClient, SessionOptions, TodoClient,
    session_client::{add_entry, add_item, get_session, list_entries, money, start, usd},
    spawn_session_stack,
    status::assert_invalid_argument_naming,
};

/// The longest key allowed is 256 bytes.
fn oversized_key() -> String {
    "k".repeat(257)
}

/// Keys every keyed RPC must refuse, with what is wrong with them.
fn bad_keys() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("257 bytes", oversized_key()),
        ("a newline", "line\nbreak".to_owned()),
        ("a NUL", "nul\0byte".to_owned()),
        ("a DEL", "del\u{7f}".to_owned()),
    ]
}

/// A request id over the 128-byte limit.
fn oversized_request_id() -> String {
    "r".repeat(129)
}

/// A name or title of 1 MB: under tonic's 4 MiB message limit, so the server must judge it.
fn megabyte() -> String {
    "n".repeat(1024 * 1024)
}

const KEY: &str = "valid";
const LIST: &str = "valid-list";

fn add(edit: impl FnOnce(&mut AddItemRequest)) -> AddItemRequest {
    let mut request = AddItemRequest {
        key: KEY.into(),
        sku: "A".into(),
        name: "Apple".into(),
        quantity: 1,
        unit_price: Some(usd(100)),
        request_id: String::new(),
    };
    edit(&mut request);
    request
}

async fn cart_rpcs_refuse_bad_keys(cart: &mut CartClient) {
    for (what, key) in bad_keys() {
        let case = |rpc: &str| format!("{rpc} with a key of {what}");
        if !key.is_empty() {
            // An empty key asks StartSession for a generated one; the others are bad.
            let request = StartSessionRequest {
                key: key.clone(),
                ..Default::default()
            };
            assert_invalid_argument_naming(
                cart.start_session(request).await,
                "key",
                &case("StartSession"),
            );
        }
        assert_invalid_argument_naming(
            cart.get_session(GetSessionRequest { key: key.clone() })
                .await,
            "key",
            &case("GetSession"),
        );
        assert_invalid_argument_naming(
            cart.add_item(add(|r| r.key = key.clone())).await,
            "key",
            &case("AddItem"),
        );
        let remove = RemoveItemRequest {
            key: key.clone(),
            sku: "A".into(),
            quantity: 1,
            request_id: String::new(),
        };
        assert_invalid_argument_naming(cart.remove_item(remove).await, "key", &case("RemoveItem"));
        let discount = ApplyDiscountRequest {
            key: key.clone(),
            code: "SAVE10".into(),
            request_id: String::new(),
        };
        assert_invalid_argument_naming(
            cart.apply_discount(discount).await,
            "key",
            &case("ApplyDiscount"),
        );
        let checkout = CheckoutRequest {
            key: key.clone(),
            request_id: String::new(),
        };
        assert_invalid_argument_naming(cart.checkout(checkout).await, "key", &case("Checkout"));
        let end = EndSessionRequest {
            key: key.clone(),
            request_id: String::new(),
        };
        assert_invalid_argument_naming(cart.end_session(end).await, "key", &case("EndSession"));
        assert_invalid_argument_naming(
            cart.watch_session(WatchSessionRequest { key: key.clone() })
                .await
                .map(drop),
            "key",
            &case("WatchSession"),
        );
    }
}

async fn add_item_refuses_bad_fields(cart: &mut CartClient) {
    let price = |m: Money| Some(m);
    let cases: Vec<(&str, AddItemRequest, &str)> = vec![
        ("quantity 0", add(|r| r.quantity = 0), "quantity"),
        ("quantity -1", add(|r| r.quantity = -1), "quantity"),
        (
            "quantity i32::MIN",
            add(|r| r.quantity = i32::MIN),
            "quantity",
        ),
        ("an empty sku", add(|r| r.sku = String::new()), "sku"),
        ("a 65-byte sku", add(|r| r.sku = "s".repeat(65)), "sku"),
        ("a 1 MB name", add(|r| r.name = megabyte()), "name"),
        ("a 257-byte name", add(|r| r.name = "n".repeat(257)), "name"),
        ("no unit price", add(|r| r.unit_price = None), "unit_price"),
        (
            "a negative price",
            add(|r| r.unit_price = price(usd(-1))),
            "unit_price.minor_units",
        ),
        (
            "a lower-case currency",
            add(|r| r.unit_price = price(money("usd", 100))),
            "unit_price.currency_code",
        ),
        (
            "an empty currency",
            add(|r| r.unit_price = price(money("", 100))),
            "unit_price.currency_code",
        ),
        (
            "a four-letter currency",
            add(|r| r.unit_price = price(money("USDX", 100))),
            "unit_price.currency_code",
        ),
        (
            "a second currency in a USD cart",
            add(|r| r.unit_price = price(money("EUR", 100))),
            "unit_price.currency_code",
        ),
        (
            "a 129-byte request id",
            add(|r| r.request_id = oversized_request_id()),
            "request_id",
        ),
        (
            "a request id with a newline",
            add(|r| r.request_id = "a\nb".into()),
            "request_id",
        ),
    ];
    for (what, request, field) in cases {
        assert_invalid_argument_naming(
            cart.add_item(request).await,
            field,
            &format!("AddItem with {what}"),
        );
    }
}

async fn other_cart_rpcs_refuse_bad_fields(cart: &mut CartClient) {
    for quantity in [0, -5] {
        let request = RemoveItemRequest {
            key: KEY.into(),
            sku: "A".into(),
            quantity,
            request_id: String::new(),
        };
        assert_invalid_argument_naming(
            cart.remove_item(request).await,
            "quantity",
            &format!("RemoveItem with quantity {quantity}"),
        );
    }
    let request = RemoveItemRequest {
        key: KEY.into(),
        sku: "A".into(),
        quantity: 1,
        request_id: oversized_request_id(),
    };
    assert_invalid_argument_naming(
        cart.remove_item(request).await,
        "request_id",
        "RemoveItem with a 129-byte request id",
    );
    for code in ["NOSUCHCODE", "", "SAVE11", &"C".repeat(65)] {
        let request = ApplyDiscountRequest {
            key: KEY.into(),
            code: code.to_owned(),
            request_id: String::new(),
        };
        assert_invalid_argument_naming(
            cart.apply_discount(request).await,
            "code",
            &format!("ApplyDiscount with code {:?}", &code[..code.len().min(16)]),
        );
    }
    let request = CheckoutRequest {
        key: KEY.into(),
        request_id: oversized_request_id(),
    };
    assert_invalid_argument_naming(
        cart.checkout(request).await,
        "request_id",
        "Checkout with a 129-byte request id",
    );
    let request = EndSessionRequest {
        key: KEY.into(),
        request_id: oversized_request_id(),
    };
    assert_invalid_argument_naming(
        cart.end_session(request).await,
        "request_id",
        "EndSession with a 129-byte request id",
    );
}

async fn todo_rpcs_refuse_bad_fields(todo: &mut TodoClient) {
    let add = |edit: &dyn Fn(&mut AddEntryRequest)| {
        let mut request = AddEntryRequest {
            list: LIST.into(),
            date: "2026-06-01".into(),
            title: "valid".into(),
            request_id: String::new(),
        };
        edit(&mut request);
        request
    };
    let update = |edit: &dyn Fn(&mut UpdateEntryRequest)| {
        let mut request = UpdateEntryRequest {
            list: LIST.into(),
            id: 1,
            date: String::new(),
            title: "renamed".into(),
            request_id: String::new(),
        };
        edit(&mut request);
        request
    };
    for (what, list) in bad_keys() {
        let case = |rpc: &str| format!("{rpc} with a list name of {what}");
        assert_invalid_argument_naming(
            todo.add_entry(add(&|r| r.list = list.clone())).await,
            "list",
            &case("AddEntry"),
        );
        let request = ListEntriesRequest {
            list: list.clone(),
            ..Default::default()
        };
        assert_invalid_argument_naming(
            todo.list_entries(request).await,
            "list",
            &case("ListEntries"),
        );
        assert_invalid_argument_naming(
            todo.update_entry(update(&|r| r.list = list.clone())).await,
            "list",
            &case("UpdateEntry"),
        );
        let request = DeleteEntryRequest {
            list: list.clone(),
            id: 1,
            request_id: String::new(),
        };
        assert_invalid_argument_naming(
            todo.delete_entry(request).await,
            "list",
            &case("DeleteEntry"),
        );
        let request = WatchListRequest { list: list.clone() };
        assert_invalid_argument_naming(
            todo.watch_list(request).await.map(drop),
            "list",
            &case("WatchList"),
        );
    }
    let adds: Vec<(&str, AddEntryRequest, &str)> = vec![
        (
            "date 2026-02-30",
            add(&|r| r.date = "2026-02-30".into()),
            "date",
        ),
        ("an empty date", add(&|r| r.date = String::new()), "date"),
        (
            "a date 2026-1-1",
            add(&|r| r.date = "2026-1-1".into()),
            "date",
        ),
        ("an empty title", add(&|r| r.title = String::new()), "title"),
        ("a 1 MB title", add(&|r| r.title = megabyte()), "title"),
        (
            "a title with a NUL",
            add(&|r| r.title = "a\0b".into()),
            "title",
        ),
        (
            "a 129-byte request id",
            add(&|r| r.request_id = oversized_request_id()),
            "request_id",
        ),
    ];
    for (what, request, field) in adds {
        assert_invalid_argument_naming(
            todo.add_entry(request).await,
            field,
            &format!("AddEntry with {what}"),
        );
    }
    assert_invalid_argument_naming(
        list_entries(todo, LIST, "2026-13-01").await,
        "date",
        "ListEntries with date 2026-13-01",
    );
    let updates: Vec<(&str, UpdateEntryRequest, &str)> = vec![
        (
            "date 2026-02-30",
            update(&|r| r.date = "2026-02-30".into()),
            "date",
        ),
        ("a 1 MB title", update(&|r| r.title = megabyte()), "title"),
        (
            "a 129-byte request id",
            update(&|r| r.request_id = oversized_request_id()),
            "request_id",
        ),
    ];
    for (what, request, field) in updates {
        assert_invalid_argument_naming(
            todo.update_entry(request).await,
            field,
            &format!("UpdateEntry with {what}"),
        );
    }
    let request = DeleteEntryRequest {
        list: LIST.into(),
        id: 1,
        request_id: oversized_request_id(),
    };
    assert_invalid_argument_naming(
        todo.delete_entry(request).await,
        "request_id",
        "DeleteEntry with a 129-byte request id",
    );
}

#[tokio::test]
async fn every_rpc_refuses_bad_input_with_bad_request_naming_the_field_and_keeps_serving() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let mut todo = stack.session.todo().await;
    let mut admin = stack.session.admin().await;
    // Valid state for the field checks to run against: a USD cart and a list with entry 1.
    start(&mut cart, KEY).await.unwrap();
    add_item(&mut cart, KEY, "A", 1, 100).await.unwrap();
    let cart_before = get_session(&mut cart, KEY).await.unwrap();
    add_entry(&mut todo, LIST, "2026-06-01", "valid")
        .await
        .unwrap();
    let list_before = list_entries(&mut todo, LIST, "").await.unwrap();

    cart_rpcs_refuse_bad_keys(&mut cart).await;
    add_item_refuses_bad_fields(&mut cart).await;
    other_cart_rpcs_refuse_bad_fields(&mut cart).await;
    todo_rpcs_refuse_bad_fields(&mut todo).await;
    let request = ListActorsRequest {
        page_size: -1,
        ..Default::default()
    };
    assert_invalid_argument_naming(
        admin.list_actors(request).await,
        "page_size",
        "ListActors with page size -1",
    );
    let request = ListActorsRequest {
        page_token: "not a token".into(),
        ..Default::default()
    };
    assert_invalid_argument_naming(
        admin.list_actors(request).await,
        "page_token",
        "ListActors with a forged page token",
    );

    // Nothing refused was applied, and the server still serves.
    assert_eq!(get_session(&mut cart, KEY).await.unwrap(), cart_before);
    assert_eq!(
        list_entries(&mut todo, LIST, "").await.unwrap(),
        list_before
    );
    let after = add_item(&mut cart, KEY, "A", 1, 100).await.unwrap();
    assert_eq!(after.version, cart_before.version + 1);
    add_entry(&mut todo, LIST, "2026-06-02", "still serving")
        .await
        .unwrap();
}
