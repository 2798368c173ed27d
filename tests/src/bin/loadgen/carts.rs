//! Cart clients, and the sessions a benchmark sets up before it measures.

use anyhow::Context;
use proto::session::v1::{
    AddItemRequest, Money, StartSessionRequest, cart_service_client::CartServiceClient,
};
use tests::ServiceProcess;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::servers::connect;

/// Sessions set up concurrently before a measurement (start, then add items).
const SETUP_WORKERS: usize = 64;

/// The cart API client.
pub type CartApi = CartServiceClient<Channel>;

/// One cart client per connection to `service`.
pub async fn cart_clients(
    service: &ServiceProcess,
    connections: u32,
) -> anyhow::Result<Vec<CartApi>> {
    let channels = connect(service, connections).await?;
    Ok(channels.into_iter().map(CartServiceClient::new).collect())
}

/// Starts `count` sessions with server-made keys and adds `items` skus to each, a few at a
/// time; returns their keys (in no particular order).
pub async fn start_sessions(
    carts: &[CartApi],
    count: usize,
    items: u32,
) -> anyhow::Result<Vec<String>> {
    let mut workers = JoinSet::new();
    for worker in 0..SETUP_WORKERS.min(count) {
        let mut cart = carts[worker % carts.len()].clone();
        workers.spawn(async move {
            let mut keys = Vec::new();
            for shopper in (worker..count).step_by(SETUP_WORKERS) {
                let key = start_session(&mut cart, shopper).await?;
                for sku in 0..items {
                    cart.add_item(add_item_request(&key, sku))
                        .await
                        .context("AddItem while setting up")?;
                }
                keys.push(key);
            }
            anyhow::Ok(keys)
        });
    }
    let mut keys = Vec::with_capacity(count);
    while let Some(started) = workers.join_next().await {
        keys.extend(started??);
    }
    Ok(keys)
}

/// Opens one session like a shop would (the server makes the key) and returns its key.
pub async fn start_session(cart: &mut CartApi, shopper: usize) -> anyhow::Result<String> {
    let session = cart
        .start_session(StartSessionRequest {
            key: String::new(),
            domain: "shop.example".to_owned(),
            landing: "/products/loadgen".to_owned(),
            ip: "203.0.113.7".to_owned(),
            member_id: format!("member-{shopper}"),
        })
        .await
        .context("StartSession")?;
    Ok(session.into_inner().key)
}

/// AddItem of one unit of sku number `sku` (each sku has its own fixed price, as a line must).
pub fn add_item_request(key: &str, sku: u32) -> AddItemRequest {
    AddItemRequest {
        key: key.to_owned(),
        sku: format!("SKU-{sku:03}"),
        name: format!("Loadgen item {sku}"),
        quantity: 1,
        unit_price: Some(Money {
            currency_code: "USD".to_owned(),
            minor_units: 1000 + i64::from(sku),
        }),
        request_id: String::new(),
    }
}
