//! InventoryService on the real binaries: stock per sku in one actor, changes applied one at a
//! time and durable, so concurrent removals never take stock below zero, retries with a
//! request id apply once, and the stock survives a SIGKILL of session-svc.

use std::sync::Arc;

use proto::session::v1::{AdjustStockRequest, GetStockRequest, SetStockRequest, Stock};
use tests::{SessionOptions, session::InventoryClient, spawn_session_stack};
use tokio::sync::Barrier;
use tonic::{Code, Status};

/// Concurrent buyers racing for [`UNITS`] units.
const BUYERS: usize = 50;
const UNITS: i64 = 10;

async fn set(inventory: &mut InventoryClient, sku: &str, on_hand: i64) -> Result<Stock, Status> {
    inventory
        .set_stock(SetStockRequest {
            sku: sku.into(),
            on_hand,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn adjust(
    inventory: &mut InventoryClient,
    sku: &str,
    delta: i64,
    request_id: &str,
) -> Result<Stock, Status> {
    inventory
        .adjust_stock(AdjustStockRequest {
            sku: sku.into(),
            delta,
            request_id: request_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get(inventory: &mut InventoryClient, sku: &str) -> Result<Stock, Status> {
    inventory
        .get_stock(GetStockRequest { sku: sku.into() })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_removals_never_oversell_and_stock_survives_a_crash() {
    let mut stack = spawn_session_stack(SessionOptions::new()).await;
    let mut inventory = stack.session.inventory().await;

    let unknown = get(&mut inventory, "never-set").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("SetStock"), "{unknown:?}");

    let stock = set(&mut inventory, "last-units", UNITS).await.unwrap();
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (UNITS, 0, UNITS)
    );

    // Fifty buyers take one unit each at the same moment: exactly ten succeed.
    let barrier = Arc::new(Barrier::new(BUYERS));
    let mut buyers = Vec::new();
    for buyer in 0..BUYERS {
        let (mut inventory, barrier) = (inventory.clone(), barrier.clone());
        buyers.push(tokio::spawn(async move {
            barrier.wait().await;
            adjust(&mut inventory, "last-units", -1, &format!("buy-{buyer}")).await
        }));
    }
    let (mut sold, mut refused) = (0, 0);
    for buyer in buyers {
        match buyer.await.unwrap() {
            Ok(_) => sold += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("0 are available"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((sold, refused), (UNITS, BUYERS as i64 - UNITS));
    let after = get(&mut inventory, "last-units").await.unwrap();
    assert_eq!((after.on_hand, after.available), (0, 0));

    // A retried delivery with the same request id is applied once.
    let first = adjust(&mut inventory, "last-units", 5, "delivery-1")
        .await
        .unwrap();
    let retry = adjust(&mut inventory, "last-units", 5, "delivery-1")
        .await
        .unwrap();
    assert_eq!(first.on_hand, 5);
    assert_eq!(retry.on_hand, 5, "the retry was applied again");
    assert_eq!(retry.version, first.version);
    let reused = adjust(&mut inventory, "last-units", 6, "delivery-1")
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");

    // Acknowledged stock survives a SIGKILL of session-svc.
    stack.session.kill().await.unwrap();
    stack.session = stack.session.respawn().await;
    let mut inventory = stack.session.inventory().await;
    let recovered = get(&mut inventory, "last-units").await.unwrap();
    assert_eq!((recovered.on_hand, recovered.version), (5, first.version));
    let again = adjust(&mut inventory, "last-units", 5, "delivery-1")
        .await
        .unwrap();
    assert_eq!(
        again.on_hand, 5,
        "the request id is remembered across the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stock_requests_are_refused_with_the_field_named() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut inventory = stack.session.inventory().await;
    for (on_hand, sku, field) in [
        (-1, "mug", "on_hand"),
        (1_000_000_000_001, "mug", "on_hand"),
        (1, "", "sku"),
        (1, "a\u{1}b", "sku"),
    ] {
        let status = set(&mut inventory, sku, on_hand).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    set(&mut inventory, "mug", 1).await.unwrap();
    for delta in [0, i64::MIN, 1_000_000_000_001] {
        let status = adjust(&mut inventory, "mug", delta, "").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{delta}: {status:?}");
        assert!(status.message().contains("delta"), "{status:?}");
    }
    let unknown = adjust(&mut inventory, "unset", 1, "").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}
