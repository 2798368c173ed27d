//! Backpressure: beyond the queue, writes are refused at once with a retry hint; memory stays
//! flat; what was accepted is exactly right and what was refused never happened.

use tests::{
    StoreClient, StoreOptions, spawn_store_and_client,
    status::expect_code,
    store_client::{get, put},
};
use tokio::task::JoinSet;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const NS: &str = "backpressure";

/// A queue far smaller than the flood, flushed once per write so it drains slowly.
const QUEUE_SIZE: usize = 16;
const MAX_BATCH: usize = 1;

/// Concurrent writes per round: 64 times the queue.
const FLOOD: usize = 1024;

/// Connections the flood spreads over, so the server's per-connection stream limit does not
/// serialise it.
const CONNECTIONS: usize = 16;

/// Values big enough that buffering them without bound would show in RSS.
const VALUE_BYTES: usize = 32 * 1024;

/// Rounds of flood tried before concluding the queue never overflows.
const MAX_ROUNDS: usize = 10;

/// Generous: the server's steady state plus a full queue is far below this; an unbounded
/// backlog of 1024 × 32 KiB per round is not.
const MAX_RSS_BYTES: u64 = 300 * 1024 * 1024;

/// A value that is unique to its key, so a misplaced write shows.
fn value_for(key: &str) -> Vec<u8> {
    let mut value = key.as_bytes().to_vec();
    value.resize(VALUE_BYTES, b'#');
    value
}

/// One round: [`FLOOD`] concurrent creates of fresh keys; each key with its outcome.
async fn flood_round(clients: &[StoreClient], round: usize) -> Vec<(String, Result<u64, Status>)> {
    let mut writes = JoinSet::new();
    for i in 0..FLOOD {
        let mut client = clients[i % clients.len()].clone();
        let key = format!("r{round}/k{i:04}");
        writes.spawn(async move {
            let outcome = put(&mut client, NS, &key, value_for(&key), 0).await;
            (key, outcome)
        });
    }
    writes.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_queue_is_refused_with_retry_info_and_accepted_writes_are_exact() {
    let (store, mut client) = spawn_store_and_client(
        StoreOptions::new()
            .queue_size(QUEUE_SIZE)
            .max_batch(MAX_BATCH),
    )
    .await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(store.client().await.unwrap());
    }

    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut other = Vec::new();
    for round in 0..MAX_ROUNDS {
        for (key, outcome) in flood_round(&clients, round).await {
            match outcome {
                Ok(version) => accepted.push((key, version)),
                Err(status) if status.code() == Code::ResourceExhausted => {
                    refused.push((key, status))
                }
                Err(status) => other.push(format!("{key}: {status:?}")),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }

    assert!(
        other.is_empty(),
        "a flood may only be accepted or refused:\n{}",
        other.join("\n")
    );
    assert!(
        !refused.is_empty(),
        "{} concurrent writes against a queue of {QUEUE_SIZE} were all accepted",
        accepted.len()
    );
    for (key, status) in &refused {
        assert!(
            status.get_details_retry_info().is_some(),
            "{key}: RESOURCE_EXHAUSTED must carry google.rpc.RetryInfo: {status:?}"
        );
    }
    let rss = store.rss_bytes().expect("read the server's VmRSS");
    assert!(
        rss < MAX_RSS_BYTES,
        "server RSS after the flood: {} MiB",
        rss / (1024 * 1024)
    );

    for (key, version) in &accepted {
        assert_eq!(*version, 1, "{key}: a create makes version 1");
        let stored = get(&mut client, NS, key).await.unwrap();
        assert_eq!(stored.version, 1, "{key}");
        assert!(
            stored.value == value_for(key),
            "{key}: stored value differs from the one written"
        );
    }
    for (key, _) in &refused {
        // Refused at the door means never queued, so never written: retrying is safe.
        expect_code(
            get(&mut client, NS, key).await,
            Code::NotFound,
            "Get of a refused write",
        );
    }
    assert_eq!(
        put(&mut client, NS, "after-the-flood", "still serving", 0)
            .await
            .unwrap(),
        1
    );
}
