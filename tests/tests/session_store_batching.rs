//! session-svc's writes to store-svc: concurrent actors' writes share BatchWrite calls, each
//! write lands exactly once, and turning batching off (`--store-batch-writes 1`) gives the same
//! results through one Put per write.

use std::collections::HashMap;

use tests::{
    CartClient, SessionOptions,
    load::{free_loopback_addr, scrape_metrics},
    session_client::{add_item, get_session, start},
    spawn_session_stack,
};
use tokio::task::JoinSet;

/// Carts written concurrently, one client task each.
const CARTS: usize = 64;

/// AddItems per cart after its StartSession.
const ADDS: usize = 20;

/// Connections the client tasks share.
const CHANNELS: usize = 4;

const BATCHES: &str = "session_store_batches_total";
const BATCHED_WRITES: &str = "session_store_batched_writes_total";

/// Starts `carts` sessions and adds one unit of sku "A" `adds` times to each, every cart from
/// its own task; then checks that each cart holds exactly `adds` units at version `adds + 1`.
async fn fill_carts(connections: &[CartClient], prefix: &str, carts: usize, adds: usize) {
    let mut tasks = JoinSet::new();
    for task in 0..carts {
        let mut cart = connections[task % connections.len()].clone();
        let key = format!("{prefix}/{task}");
        tasks.spawn(async move {
            start(&mut cart, &key)
                .await
                .map_err(|s| format!("{key}: {s:?}"))?;
            for _ in 0..adds {
                add_item(&mut cart, &key, "A", 1, 100)
                    .await
                    .map_err(|s| format!("{key}: {s:?}"))?;
            }
            Ok::<_, String>(())
        });
    }
    let failures: Vec<String> = tasks
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "writes failed:\n{}",
        failures.join("\n")
    );

    let mut cart = connections[0].clone();
    for task in 0..carts {
        let key = format!("{prefix}/{task}");
        let session = get_session(&mut cart, &key).await.unwrap();
        assert_eq!(session.items.len(), 1, "lines of {key}");
        assert_eq!(session.items[0].quantity, adds as i32, "units in {key}");
        assert_eq!(session.version, adds as u64 + 1, "version of {key}");
    }
}

async fn connect(stack: &tests::SessionStack) -> Vec<CartClient> {
    let mut connections = Vec::new();
    for _ in 0..CHANNELS {
        connections.push(stack.session.cart().await);
    }
    connections
}

async fn session_metrics(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    scrape_metrics(addr)
        .await
        .expect("session-svc's /metrics answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_batches_and_each_lands_exactly_once() {
    let metrics = free_loopback_addr().unwrap();
    let stack = spawn_session_stack(SessionOptions::new().metrics_listen(metrics)).await;
    let connections = connect(&stack).await;

    fill_carts(&connections, "batched", CARTS, ADDS).await;

    // Every acknowledged change was exactly one write, and every write went in a batch.
    let counters = session_metrics(metrics).await;
    let writes = counters[BATCHED_WRITES];
    let batches = counters[BATCHES];
    assert_eq!(writes, (CARTS * (ADDS + 1)) as f64, "{counters:?}");
    // With 64 writers and at most 4 batches in flight, writes must have waited together.
    assert!(
        batches < writes / 2.0,
        "{batches} batches for {writes} writes: writes were not batched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batching_off_every_write_is_its_own_put_and_lands_the_same() {
    let metrics = free_loopback_addr().unwrap();
    let stack = spawn_session_stack(
        SessionOptions::new()
            .store_batch_writes(1)
            .metrics_listen(metrics),
    )
    .await;
    let connections = connect(&stack).await;

    fill_carts(&connections, "unbatched", CARTS / 4, ADDS / 4).await;

    let counters = session_metrics(metrics).await;
    assert!(
        !counters.contains_key(BATCHES) && !counters.contains_key(BATCHED_WRITES),
        "no batcher runs with --store-batch-writes 1: {counters:?}"
    );
}
