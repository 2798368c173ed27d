//! One-line calls for the session-svc APIs, so tests say what they do rather than build
//! messages; and a bounded poll for things that happen "soon" (passivation, recovery).

use std::{future::Future, time::Duration};

use proto::session::v1::{
    Actor, AddEntryRequest, AddItemRequest, ApplyDiscountRequest, CheckoutRequest,
    EndSessionRequest, Entry, GetActorRequest, GetSessionRequest, GetStatsRequest,
    KillActorRequest, ListActorsRequest, ListEntriesRequest, Money, Order, RemoveItemRequest,
    Session, StartSessionRequest, Stats, WatchSessionRequest,
};
use tonic::{Request, Status, Streaming};

use crate::session::{AdminClient, CartClient, TodoClient};

/// The currency every test cart uses unless it is testing currencies.
pub const CURRENCY: &str = "USD";

/// `minor_units` of [`CURRENCY`].
pub fn usd(minor_units: i64) -> Money {
    money(CURRENCY, minor_units)
}

/// `minor_units` of `currency_code`, unvalidated (tests send bad ones on purpose).
pub fn money(currency_code: &str, minor_units: i64) -> Money {
    Money {
        currency_code: currency_code.to_owned(),
        minor_units,
    }
}

/// The StartSession of a shopper with every tracked field set.
pub fn start_request(key: &str) -> StartSessionRequest {
    StartSessionRequest {
        key: key.to_owned(),
        domain: "shop.example".to_owned(),
        landing: "/landing/spring-sale".to_owned(),
        ip: "192.0.2.7".to_owned(),
        member_id: "member-42".to_owned(),
    }
}

/// An AddItem of `quantity` × `sku` at `unit_price_cents` USD, named after the sku.
pub fn add_request(key: &str, sku: &str, quantity: i32, unit_price_cents: i64) -> AddItemRequest {
    AddItemRequest {
        key: key.to_owned(),
        sku: sku.to_owned(),
        name: format!("product {sku}"),
        quantity,
        unit_price: Some(usd(unit_price_cents)),
        request_id: String::new(),
    }
}

/// Starts (or returns) the session `key`; empty for a server-made key.
pub async fn start(cart: &mut CartClient, key: &str) -> Result<Session, Status> {
    Ok(cart.start_session(start_request(key)).await?.into_inner())
}

/// The current state of session `key`.
pub async fn get_session(cart: &mut CartClient, key: &str) -> Result<Session, Status> {
    let request = GetSessionRequest {
        key: key.to_owned(),
    };
    Ok(cart.get_session(request).await?.into_inner())
}

/// Adds `quantity` × `sku` at `unit_price_cents` USD.
pub async fn add_item(
    cart: &mut CartClient,
    key: &str,
    sku: &str,
    quantity: i32,
    unit_price_cents: i64,
) -> Result<Session, Status> {
    let request = add_request(key, sku, quantity, unit_price_cents);
    Ok(cart.add_item(request).await?.into_inner())
}

/// Removes `quantity` × `sku`.
pub async fn remove_item(
    cart: &mut CartClient,
    key: &str,
    sku: &str,
    quantity: i32,
) -> Result<Session, Status> {
    let request = RemoveItemRequest {
        key: key.to_owned(),
        sku: sku.to_owned(),
        quantity,
        request_id: String::new(),
    };
    Ok(cart.remove_item(request).await?.into_inner())
}

/// Applies discount `code`.
pub async fn apply_discount(
    cart: &mut CartClient,
    key: &str,
    code: &str,
) -> Result<Session, Status> {
    let request = ApplyDiscountRequest {
        key: key.to_owned(),
        code: code.to_owned(),
        request_id: String::new(),
    };
    Ok(cart.apply_discount(request).await?.into_inner())
}

/// Checks session `key` out.
pub async fn checkout(cart: &mut CartClient, key: &str) -> Result<Order, Status> {
    let request = CheckoutRequest {
        key: key.to_owned(),
        request_id: String::new(),
    };
    Ok(cart.checkout(request).await?.into_inner())
}

/// Ends session `key` without buying.
pub async fn end_session(cart: &mut CartClient, key: &str) -> Result<Session, Status> {
    let request = EndSessionRequest {
        key: key.to_owned(),
        request_id: String::new(),
    };
    Ok(cart.end_session(request).await?.into_inner())
}

/// Opens a watch on session `key`.
pub async fn watch_session(cart: &mut CartClient, key: &str) -> Result<Streaming<Session>, Status> {
    let request = WatchSessionRequest {
        key: key.to_owned(),
    };
    Ok(cart.watch_session(request).await?.into_inner())
}

/// Units of `sku` in the session's cart; 0 when it has no such line.
pub fn quantity_of(session: &Session, sku: &str) -> i32 {
    session
        .items
        .iter()
        .find(|item| item.sku == sku)
        .map_or(0, |item| item.quantity)
}

/// A request with a deadline of `timeout` (sent as `grpc-timeout`).
pub fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Adds an entry to `list`.
pub async fn add_entry(
    todo: &mut TodoClient,
    list: &str,
    date: &str,
    title: &str,
) -> Result<Entry, Status> {
    let request = AddEntryRequest {
        list: list.to_owned(),
        date: date.to_owned(),
        title: title.to_owned(),
        request_id: String::new(),
    };
    Ok(todo.add_entry(request).await?.into_inner())
}

/// The entries of `list` (of `date`, or all when empty), every page of them.
pub async fn list_entries(
    todo: &mut TodoClient,
    list: &str,
    date: &str,
) -> Result<Vec<Entry>, Status> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListEntriesRequest {
            list: list.to_owned(),
            date: date.to_owned(),
            page_size: 0,
            page_token,
        };
        let page = todo.list_entries(request).await?.into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(entries);
        }
        page_token = page.next_page_token;
    }
}

/// The runtime's stats.
pub async fn stats(admin: &mut AdminClient) -> Stats {
    admin
        .get_stats(GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner()
}

/// Keys of the live (not quarantined) actors of `kind`, sorted.
pub async fn live_keys(admin: &mut AdminClient, kind: &str) -> Vec<String> {
    let request = ListActorsRequest {
        kind: kind.to_owned(),
        status: proto::session::v1::ActorStatus::Live as i32,
        page_size: 1000,
        page_token: String::new(),
    };
    let mut keys: Vec<String> = admin
        .list_actors(request)
        .await
        .expect("ListActors")
        .into_inner()
        .actors
        .into_iter()
        .map(|actor| actor.key)
        .collect();
    keys.sort();
    keys
}

/// The admin's description of actor `kind/key` (GetActor).
pub async fn get_actor(admin: &mut AdminClient, kind: &str, key: &str) -> Result<Actor, Status> {
    let request = GetActorRequest {
        kind: kind.to_owned(),
        key: key.to_owned(),
    };
    Ok(admin.get_actor(request).await?.into_inner())
}

/// Crashes the live actor `kind/key` on purpose.
pub async fn kill_actor(admin: &mut AdminClient, kind: &str, key: &str) -> Result<(), Status> {
    let request = KillActorRequest {
        kind: kind.to_owned(),
        key: key.to_owned(),
    };
    admin.kill_actor(request).await.map(drop)
}

/// Asks `probe` every `every` until it returns `Some`, for at most `limit`: for things that
/// happen "soon" (passivation, recovery, reconnection), never a fixed sleep. `None` if the
/// limit passed first.
pub async fn poll_until<T, F, Fut>(limit: Duration, every: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}
