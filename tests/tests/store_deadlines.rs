//! Deadlines: a write whose caller's deadline passed while it waited is never executed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use proto::store::v1::PutRequest;
use tests::{
    StoreClient, StoreOptions,
    raw_channel::raw_store_client,
    spawn_store_and_client,
    status::{expect_code, is_client_side_timeout},
    store_client::{get, put},
};
use tokio::task::JoinSet;
use tonic::{Code, Request};

const NS: &str = "deadlines";

/// Queue and batch sizes that make the writer slow to reach a newcomer: 64 waiting slots,
/// drained 4 writes per flush.
const QUEUE_SIZE: usize = 64;
const MAX_BATCH: usize = 4;

/// Flooding tasks: fewer than the queue holds, so the queue stays busy but never full, and a
/// newcomer waits in line instead of being refused with RESOURCE_EXHAUSTED.
const FLOODERS: usize = 48;

/// Big values make each flush slow.
const FLOOD_VALUE_BYTES: usize = 256 * 1024;

/// Bound on each flooder's writes, so the flood (and the disk it fills) is finite even if
/// the test stalls.
const MAX_FLOOD_WRITES: u64 = 64;

/// Late requests sent into the saturated queue; each must be dropped.
const LATE_WRITES: usize = 5;

/// Keeps the writer busy: each flooder overwrites its own key until stopped.
fn start_flood(
    client: &StoreClient,
    stop: &Arc<AtomicBool>,
    acknowledged: &Arc<AtomicU64>,
) -> JoinSet<Vec<String>> {
    let mut flood = JoinSet::new();
    for flooder in 0..FLOODERS {
        let mut client = client.clone();
        let stop = Arc::clone(stop);
        let acknowledged = Arc::clone(acknowledged);
        flood.spawn(async move {
            let key = format!("flood/{flooder}");
            let value = vec![b'f'; FLOOD_VALUE_BYTES];
            let mut errors = Vec::new();
            let mut version = 0;
            for _ in 0..MAX_FLOOD_WRITES {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match put(&mut client, NS, &key, value.clone(), version).await {
                    Ok(new_version) => {
                        version = new_version;
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => {
                        errors.push(format!("{key}: {status:?}"));
                        break;
                    }
                }
            }
            errors
        });
    }
    flood
}

/// A create of `key` that may wait at most 1 ms.
fn late_put(key: &str) -> Request<PutRequest> {
    let mut request = Request::new(PutRequest {
        namespace: NS.to_owned(),
        key: key.to_owned(),
        value: b"must never appear".to_vec(),
        expected_version: 0,
    });
    request.set_timeout(Duration::from_millis(1));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_deadline_passes_in_the_queue_gets_deadline_exceeded_and_never_lands() {
    let (store, mut client) = spawn_store_and_client(
        StoreOptions::new()
            .queue_size(QUEUE_SIZE)
            .max_batch(MAX_BATCH),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let flood = start_flood(&client, &stop, &acknowledged);
    // Send the late writes only once the flood is flowing through the writer.
    for _ in 0..10_000 {
        if acknowledged.load(Ordering::SeqCst) >= FLOODERS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut raw = raw_store_client(store.addr()).await.unwrap();
    let mut late_keys = Vec::new();
    for late in 0..LATE_WRITES {
        // Without a client-side timer, the answer is the server's own.
        let key = format!("late/server/{late}");
        let outcome = raw.put(late_put(&key)).await;
        expect_code(
            outcome,
            Code::DeadlineExceeded,
            "Put with a 1 ms deadline, server's answer",
        );
        late_keys.push(key);

        // Through tonic's Channel, the client's timer may win instead; either way it fails.
        let key = format!("late/client/{late}");
        let status = client
            .put(late_put(&key))
            .await
            .expect_err("a 1 ms Put into a full queue");
        assert!(
            status.code() == Code::DeadlineExceeded || is_client_side_timeout(&status),
            "Put with a 1 ms deadline through tonic: {status:?}"
        );
        late_keys.push(key);
    }

    stop.store(true, Ordering::SeqCst);
    let flood_errors: Vec<String> = flood.join_all().await.into_iter().flatten().collect();
    assert!(
        flood_errors.is_empty(),
        "the flood itself failed:\n{}",
        flood_errors.join("\n")
    );

    for key in &late_keys {
        expect_code(
            get(&mut client, NS, key).await,
            Code::NotFound,
            "Get of an expired write",
        );
        // Had the expired write still been queued, it would now be run after ours (and refused,
        // as it expects absence); had it run before, ours would be ABORTED. Only ours may land.
        assert_eq!(put(&mut client, NS, key, "on time", 0).await.unwrap(), 1);
        assert_eq!(get(&mut client, NS, key).await.unwrap().value, b"on time");
    }
}
