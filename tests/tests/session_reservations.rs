//! Carts reserve stock, on the real binaries. A cart's AddItem of a sku whose stock was set
//! holds the units at the sku's actor before the cart commits, so racing carts never hold more
//! than is on hand; RemoveItem, EndSession and expiry give units back, Checkout takes them out
//! of stock; every hold is a record of its own in the store's `reservations` namespace; and
//! after SIGKILLs in the middle of a race, the sweeper's reconciler returns whatever is held
//! for no cart.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use prost::Message;
use proto::session::v1::{
    GetStockRequest, ReservationRecord, SessionStatus, SetStockRequest, Stock,
};
use tests::{
    SessionOptions, StoreClient,
    session::{CartClient, InventoryClient},
    session_client::{
        add_item, add_request, checkout, end_session, get_session, poll_until, quantity_of,
        remove_item, start,
    },
    spawn_session_stack,
    status::expect_code,
    store_client::scan_all,
};
use tokio::sync::Barrier;
use tonic::{Code, Status};

/// The store namespace of the holds.
const RESERVATIONS: &str = "reservations";

/// Units on hand in the races.
const UNITS: i64 = 10;

/// Carts in each race.
const RACERS: usize = 50;

/// A unit price; every test uses one price per sku (a line keeps its first price).
const PRICE: i64 = 700;

/// Hang guard for an expiry: the reminder is due at the TTL and looked for every second.
const EXPIRY_LIMIT: Duration = Duration::from_secs(30);

/// Hang guard for a follow-up that runs after a commit (the release after an expiry).
const RELEASE_LIMIT: Duration = Duration::from_secs(10);

async fn set_stock(inventory: &mut InventoryClient, sku: &str, on_hand: i64) -> Stock {
    let request = SetStockRequest {
        sku: sku.into(),
        on_hand,
    };
    inventory
        .set_stock(request)
        .await
        .unwrap_or_else(|status| panic!("SetStock {sku} {on_hand}: {status:?}"))
        .into_inner()
}

async fn get_stock(inventory: &mut InventoryClient, sku: &str) -> Result<Stock, Status> {
    inventory
        .get_stock(GetStockRequest { sku: sku.into() })
        .await
        .map(tonic::Response::into_inner)
}

/// `(on_hand, reserved, available)` of `sku`, which must have stock set.
async fn counts(inventory: &mut InventoryClient, sku: &str) -> (i64, i64, i64) {
    let stock = get_stock(inventory, sku)
        .await
        .unwrap_or_else(|status| panic!("GetStock {sku}: {status:?}"));
    (stock.on_hand, stock.reserved, stock.available)
}

/// The store key of `cart`'s hold on `sku`, written out from the spec rather than taken from
/// session-svc: the sku escaped (`%` → `%25`, `/` → `%2F`), a slash, the cart's key.
fn hold_key(sku: &str, cart: &str) -> String {
    let sku = sku.replace('%', "%25").replace('/', "%2F");
    format!("{sku}/{cart}")
}

/// Every hold on `sku` the store has, as cart → units, after checking that each record sits
/// at the key its sku and cart make, holds at least a unit (a release deletes the record) and
/// is the only one of its cart.
async fn holds_in_store(store: &mut StoreClient, sku: &str) -> BTreeMap<String, i64> {
    let prefix = hold_key(sku, "");
    let (entries, _) = scan_all(store, RESERVATIONS, &prefix, 100)
        .await
        .unwrap_or_else(|status| panic!("Scan {RESERVATIONS}/{prefix}*: {status:?}"));
    let mut holds = BTreeMap::new();
    for entry in entries {
        let record = ReservationRecord::decode(entry.value.as_slice())
            .unwrap_or_else(|error| panic!("{RESERVATIONS}/{}: not a hold: {error}", entry.key));
        assert_eq!(
            entry.key,
            hold_key(sku, &record.cart),
            "a hold is stored at `<escaped sku>/<cart key>`: {record:?}"
        );
        assert!(
            record.quantity > 0,
            "{}: a hold of {} units is kept (a release should delete it)",
            entry.key,
            record.quantity
        );
        let previous = holds.insert(record.cart.clone(), record.quantity);
        assert!(previous.is_none(), "two holds of cart {}", record.cart);
    }
    holds
}

/// Waits until session `key` is expired; panics after [`EXPIRY_LIMIT`].
async fn wait_expired(cart: &CartClient, key: &str) {
    let expired = poll_until(EXPIRY_LIMIT, Duration::from_millis(200), || {
        let (mut cart, key) = (cart.clone(), key.to_string());
        async move {
            let session = get_session(&mut cart, &key).await.ok()?;
            (session.status == SessionStatus::Expired as i32).then_some(())
        }
    })
    .await;
    assert!(
        expired.is_some(),
        "{key} did not expire within {EXPIRY_LIMIT:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_carts_race_for_ten_units_and_exactly_ten_win() {
    // A slash in the sku: its holds' keys must escape it.
    const SKU: &str = "last/units";
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut inventory = stack.session.inventory().await;
    let mut cart = stack.session.cart().await;
    set_stock(&mut inventory, SKU, UNITS).await;
    let keys: Vec<String> = (0..RACERS).map(|n| format!("racer-{n:02}")).collect();
    for key in &keys {
        start(&mut cart, key).await.unwrap();
    }

    // Fifty carts add a unit each at the same moment: exactly ten get one.
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = Vec::new();
    for key in keys.clone() {
        let (mut cart, barrier) = (cart.clone(), barrier.clone());
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            let added = add_item(&mut cart, &key, SKU, 1, PRICE).await;
            (key, added)
        }));
    }
    let mut winners = Vec::new();
    for racer in racers {
        let (key, added) = racer.await.expect("a racer panicked");
        match added {
            Ok(session) => {
                assert_eq!(
                    quantity_of(&session, SKU),
                    1,
                    "{key} was told it got the unit: {session:?}"
                );
                winners.push(key);
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{key}: a cart that finds no stock left is refused with FAILED_PRECONDITION"
                );
                assert!(
                    status.message().contains(SKU) && status.message().contains("0 available"),
                    "{key}: the refusal should name sku {SKU:?} and say 0 are available: {:?}",
                    status.message()
                );
            }
        }
    }
    assert_eq!(
        winners.len(),
        UNITS as usize,
        "{RACERS} carts raced for {UNITS} units; these got one: {winners:?}"
    );
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (UNITS, UNITS, 0),
        "(on_hand, reserved, available) after the race: every unit held, none sold yet"
    );

    // The winners' carts hold their unit; the others hold none.
    winners.sort();
    for key in &keys {
        let session = get_session(&mut cart, key).await.unwrap();
        let won = winners.binary_search(key).is_ok();
        assert_eq!(
            quantity_of(&session, SKU),
            i32::from(won),
            "{key} (won: {won}) holds the wrong number of units: {session:?}"
        );
    }

    // One record of one unit per winning cart, and nothing else.
    let mut store = stack.store.client().await.unwrap();
    let expected: BTreeMap<String, i64> = winners.iter().map(|key| (key.clone(), 1)).collect();
    assert_eq!(
        holds_in_store(&mut store, SKU).await,
        expected,
        "the {RESERVATIONS} namespace should hold exactly the winners' units"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_takes_stock_and_ending_returns_it() {
    const SKU: &str = "mug";
    const UNTRACKED: &str = "gift-card";
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut inventory = stack.session.inventory().await;
    let mut cart = stack.session.cart().await;
    let mut store = stack.store.client().await.unwrap();
    set_stock(&mut inventory, SKU, 5).await;
    for key in ["a", "b", "c"] {
        start(&mut cart, key).await.unwrap();
    }

    add_item(&mut cart, "a", SKU, 2, PRICE).await.unwrap();
    add_item(&mut cart, "b", SKU, 3, PRICE).await.unwrap();
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (5, 5, 0),
        "a holds 2 and b 3 of the 5 on hand"
    );
    let refused = expect_code(
        add_item(&mut cart, "c", SKU, 1, PRICE).await,
        Code::FailedPrecondition,
        "c adds a unit when none is available",
    );
    assert!(
        refused.message().contains("0 available, 1 more asked for"),
        "the refusal should say how many are available and how many were asked for: {:?}",
        refused.message()
    );
    let c = get_session(&mut cart, "c").await.unwrap();
    assert_eq!(quantity_of(&c, SKU), 0, "a refused add changes nothing");

    // Removing a unit gives it back (before RemoveItem answers).
    remove_item(&mut cart, "b", SKU, 1).await.unwrap();
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (5, 4, 1),
        "b gave a unit back"
    );
    let holds = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
    assert_eq!(holds_in_store(&mut store, SKU).await, holds);

    // Checkout takes what a bought out of stock.
    let order = checkout(&mut cart, "a").await.unwrap();
    let bought: i32 = order
        .items
        .iter()
        .filter(|line| line.sku == SKU)
        .map(|line| line.quantity)
        .sum();
    assert_eq!(bought, 2, "a's order: {order:?}");
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (3, 2, 1),
        "a bought 2 (out of on hand and reserved); b still holds 2"
    );

    // Ending a session gives back everything it held.
    end_session(&mut cart, "b").await.unwrap();
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (3, 0, 3),
        "b ended: its 2 units are available again"
    );
    assert_eq!(
        holds_in_store(&mut store, SKU).await,
        BTreeMap::new(),
        "no cart holds anything: no hold records are left"
    );

    // A retried AddItem (same request id) reserves once: twice would be 4 of the 3 available.
    let mut add = add_request("c", SKU, 2, PRICE);
    add.request_id = "c-adds-two".into();
    let first = cart.add_item(add.clone()).await.unwrap().into_inner();
    let retried = cart
        .add_item(add)
        .await
        .unwrap_or_else(|status| panic!("the retry of an applied add failed: {status:?}"))
        .into_inner();
    assert_eq!(
        (quantity_of(&retried, SKU), retried.version),
        (2, first.version),
        "the retry was applied again"
    );
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (3, 2, 1),
        "the retry reserved again"
    );
    let holds = BTreeMap::from([("c".to_string(), 2)]);
    assert_eq!(holds_in_store(&mut store, SKU).await, holds);

    // A sku whose stock was never set is untracked: any quantity, no stock, no holds.
    let free = add_item(&mut cart, "c", UNTRACKED, 1_000, 100)
        .await
        .unwrap();
    assert_eq!(quantity_of(&free, UNTRACKED), 1_000);
    expect_code(
        get_stock(&mut inventory, UNTRACKED).await,
        Code::NotFound,
        "GetStock of an untracked sku",
    );
    assert_eq!(
        holds_in_store(&mut store, UNTRACKED).await,
        BTreeMap::new(),
        "an untracked sku is held nowhere"
    );

    // A cart with tracked and untracked lines checks out: the tracked units leave stock.
    checkout(&mut cart, "c").await.unwrap();
    assert_eq!(counts(&mut inventory, SKU).await, (1, 0, 1));
    expect_code(
        get_stock(&mut inventory, UNTRACKED).await,
        Code::NotFound,
        "GetStock of an untracked sku after a checkout",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cart_releases_what_it_held() {
    const SKU: &str = "lamp";
    // Both actors passivate long before the expiry, so the reminder wakes the cart and the
    // release loads the sku again, its holds from their records.
    let options = SessionOptions::new()
        .cart_ttl("2s")
        .cart_idle_timeout("300ms")
        .flag("--sku-idle-timeout", "300ms");
    let stack = spawn_session_stack(options).await;
    let mut inventory = stack.session.inventory().await;
    let mut cart = stack.session.cart().await;
    let mut store = stack.store.client().await.unwrap();
    set_stock(&mut inventory, SKU, 4).await;
    start(&mut cart, "idle").await.unwrap();
    add_item(&mut cart, "idle", SKU, 3, PRICE).await.unwrap();
    assert_eq!(counts(&mut inventory, SKU).await, (4, 3, 1));

    wait_expired(&cart, "idle").await;
    // The release follows the expiry's commit: give it a moment, not a fixed one.
    let released = poll_until(RELEASE_LIMIT, Duration::from_millis(100), || {
        let mut inventory = inventory.clone();
        async move {
            let stock = get_stock(&mut inventory, SKU).await.ok()?;
            (stock.reserved == 0).then_some(stock)
        }
    })
    .await;
    let stock = get_stock(&mut inventory, SKU).await.unwrap();
    assert!(
        released.is_some(),
        "the cart expired but its units are still held {RELEASE_LIMIT:?} later: {stock:?}"
    );
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (4, 0, 4),
        "an expired cart holds nothing and sold nothing"
    );
    assert_eq!(holds_in_store(&mut store, SKU).await, BTreeMap::new());

    // An expired cart takes nothing more.
    let refused = expect_code(
        add_item(&mut cart, "idle", SKU, 1, PRICE).await,
        Code::FailedPrecondition,
        "AddItem to an expired cart",
    );
    assert_eq!(
        counts(&mut inventory, SKU).await,
        (4, 0, 4),
        "a refused add to an expired cart reserved something: {refused:?}"
    );
}
