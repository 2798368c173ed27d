//! BatchWrite: many independent Puts and Deletes in one call, each answered as if sent alone.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use proto::store::v1::{
    BatchWriteRequest, DeleteRequest, PutRequest, Write, WriteResult, write::Operation,
};
use tests::{
    StoreClient, StoreOptions, spawn_store_and_client,
    status::{assert_invalid_argument_naming, expect_code},
    store_client::{get, lookup, put},
};
use tokio::task::JoinSet;
use tonic::{Code, Status};

const NS: &str = "batch";

fn put_op(namespace: &str, key: &str, value: impl Into<Vec<u8>>, expected_version: u64) -> Write {
    Write {
        operation: Some(Operation::Put(PutRequest {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value: value.into(),
            expected_version,
        })),
        deadline_unix_ms: 0,
    }
}

fn delete_op(namespace: &str, key: &str, expected_version: u64) -> Write {
    Write {
        operation: Some(Operation::Delete(DeleteRequest {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            expected_version,
        })),
        deadline_unix_ms: 0,
    }
}

fn now_unix_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(now.as_millis()).unwrap()
}

/// Sends one BatchWrite; the results, after checking there is one per write.
async fn batch(client: &mut StoreClient, writes: Vec<Write>) -> Result<Vec<WriteResult>, Status> {
    let sent = writes.len();
    let results = client
        .batch_write(BatchWriteRequest { writes })
        .await?
        .into_inner()
        .results;
    assert_eq!(results.len(), sent, "one result per write");
    Ok(results)
}

fn code(result: &WriteResult) -> Code {
    Code::from(result.code)
}

/// Asserts `result` is OK with `version` and no message.
fn assert_ok(result: &WriteResult, version: u64, case: &str) {
    assert_eq!(
        (code(result), result.version, result.message.as_str()),
        (Code::Ok, version, ""),
        "{case}: {result:?}"
    );
}

#[tokio::test]
async fn a_mixed_batch_over_several_namespaces_answers_what_get_then_shows() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, "carts", "alice", "a1", 0).await.unwrap();
    put(&mut client, "carts", "bob", "b1", 0).await.unwrap();
    put(&mut client, "carts", "bob", "b2", 1).await.unwrap();
    put(&mut client, "todos", "groceries", "milk", 0)
        .await
        .unwrap();

    let results = batch(
        &mut client,
        vec![
            put_op("carts", "alice", "a2", 1),
            put_op("carts", "carol", "c1", 0),
            delete_op("carts", "bob", 2),
            put_op("todos", "groceries", "oat milk", 1),
            put_op("orders", "o-1", "new", 0),
            delete_op("orders", "never-written", 0),
        ],
    )
    .await
    .unwrap();

    assert_ok(&results[0], 2, "put on version 1");
    assert_ok(&results[1], 1, "first put of a key");
    assert_ok(&results[2], 0, "delete");
    assert_ok(&results[3], 2, "put in another namespace");
    assert_ok(&results[4], 1, "put creating a namespace");
    assert_ok(&results[5], 0, "delete of an absent key on version 0");

    for (namespace, key, value, version) in [
        ("carts", "alice", "a2", 2),
        ("carts", "carol", "c1", 1),
        ("todos", "groceries", "oat milk", 2),
        ("orders", "o-1", "new", 1),
    ] {
        let stored = get(&mut client, namespace, key).await.unwrap();
        assert_eq!(
            (stored.value.as_slice(), stored.version),
            (value.as_bytes(), version),
            "{namespace}/{key}"
        );
    }
    for (namespace, key) in [("carts", "bob"), ("orders", "never-written")] {
        expect_code(
            get(&mut client, namespace, key).await,
            Code::NotFound,
            &format!("{namespace}/{key} after its delete"),
        );
    }
}

#[tokio::test]
async fn a_stale_and_an_invalid_write_fail_alone_and_the_rest_land() {
    let (_store, mut client) =
        spawn_store_and_client(StoreOptions::new().max_value_bytes(16)).await;
    put(&mut client, NS, "taken", "v1", 0).await.unwrap();
    put(&mut client, NS, "taken", "v2", 1).await.unwrap();

    let results = batch(
        &mut client,
        vec![
            put_op(NS, "good-0", "a", 0),
            put_op(NS, "taken", "stale", 1),
            put_op(NS, "", "no key", 0),
            put_op(NS, "good-3", "b", 0),
            delete_op("Bad/Namespace", "k", 0),
            put_op(NS, "too-big", vec![0; 17], 0),
            Write {
                operation: None,
                deadline_unix_ms: 0,
            },
            delete_op(NS, "taken", 1),
            put_op(NS, "good-8", "c", 0),
        ],
    )
    .await
    .unwrap();

    let conflict = &results[1];
    assert_eq!(code(conflict), Code::Aborted, "{conflict:?}");
    assert_eq!(conflict.version, 2, "ABORTED names the current version");
    assert!(
        conflict.message.contains("current version 2"),
        "{conflict:?}"
    );
    assert_eq!(code(&results[7]), Code::Aborted, "{:?}", results[7]);
    assert_eq!(results[7].version, 2);

    for (index, path) in [
        (2, "writes[2].put.key: "),
        (4, "writes[4].delete.namespace: "),
        (5, "writes[5].put.value: "),
        (6, "writes[6].operation: "),
    ] {
        let result = &results[index];
        assert_eq!(code(result), Code::InvalidArgument, "{result:?}");
        assert!(
            result.message.starts_with(path),
            "the message should name {path:?}: {result:?}"
        );
        assert_eq!(result.version, 0);
    }

    for (index, key, value) in [(0, "good-0", "a"), (3, "good-3", "b"), (8, "good-8", "c")] {
        assert_ok(&results[index], 1, key);
        let stored = get(&mut client, NS, key).await.unwrap();
        assert_eq!(
            (stored.value.as_slice(), stored.version),
            (value.as_bytes(), 1)
        );
    }
    let taken = get(&mut client, NS, "taken").await.unwrap();
    assert_eq!(
        (taken.value.as_slice(), taken.version),
        (&b"v2"[..], 2),
        "failed writes changed nothing"
    );
    expect_code(
        get(&mut client, NS, "too-big").await,
        Code::NotFound,
        "the oversized put",
    );
}

#[tokio::test]
async fn writes_to_one_key_in_one_batch_apply_in_request_order() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let results = batch(
        &mut client,
        vec![
            put_op(NS, "k", "first", 0),
            put_op(NS, "k", "second", 1),
            delete_op(NS, "k", 2),
            put_op(NS, "k", "again", 0),
            put_op(NS, "k", "last", 1),
        ],
    )
    .await
    .unwrap();

    assert_ok(&results[0], 1, "put k expecting 0");
    assert_ok(&results[1], 2, "put k expecting 1");
    assert_ok(&results[2], 0, "delete k expecting 2");
    assert_ok(&results[3], 1, "put k expecting 0 after the delete");
    assert_ok(&results[4], 2, "put k expecting 1 again");
    let stored = get(&mut client, NS, "k").await.unwrap();
    assert_eq!((stored.value.as_slice(), stored.version), (&b"last"[..], 2));
}

#[tokio::test]
async fn an_empty_or_oversized_batch_is_refused_whole_and_the_server_keeps_serving() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let writes = |count: usize| -> Vec<Write> {
        (0..count)
            .map(|i| put_op(NS, &format!("k{i:04}"), "v", 0))
            .collect()
    };

    assert_invalid_argument_naming(batch(&mut client, Vec::new()).await, "writes", "no writes");
    assert_invalid_argument_naming(
        batch(&mut client, writes(1001)).await,
        "writes",
        "1001 writes",
    );
    assert_eq!(
        lookup(&mut client, NS, "k0000").await.unwrap(),
        None,
        "a refused batch applies nothing"
    );

    let results = batch(&mut client, writes(1000)).await.unwrap();
    for (index, result) in results.iter().enumerate() {
        assert_ok(result, 1, &format!("write {index} of the largest batch"));
    }
    assert_eq!(get(&mut client, NS, "k0999").await.unwrap().version, 1);
}

#[tokio::test]
async fn a_write_past_its_own_deadline_never_runs_while_its_neighbours_land() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let with_deadline = |mut write: Write, deadline_unix_ms| {
        write.deadline_unix_ms = deadline_unix_ms;
        write
    };

    let results = batch(
        &mut client,
        vec![
            put_op(NS, "on-time", "v", 0),
            with_deadline(put_op(NS, "late", "v", 0), now_unix_ms() - 1_000),
            with_deadline(put_op(NS, "ages-late", "v", 0), 1),
            with_deadline(put_op(NS, "in-time", "v", 0), now_unix_ms() + 60_000),
        ],
    )
    .await
    .unwrap();

    assert_ok(&results[0], 1, "a write without its own deadline");
    assert_ok(&results[3], 1, "a write whose deadline is a minute away");
    for (index, key) in [(1, "late"), (2, "ages-late")] {
        let result = &results[index];
        assert_eq!(code(result), Code::DeadlineExceeded, "{key}: {result:?}");
        assert_eq!(result.version, 0);
        expect_code(
            get(&mut client, NS, key).await,
            Code::NotFound,
            &format!("{key}, whose deadline had passed"),
        );
    }
    for key in ["on-time", "in-time"] {
        assert_eq!(get(&mut client, NS, key).await.unwrap().version, 1, "{key}");
    }
}

#[tokio::test]
async fn a_full_queue_refuses_only_the_writes_that_did_not_fit() {
    // One flush per write: the writer drains the queue far slower than a batch fills it.
    let (_store, mut client) =
        spawn_store_and_client(StoreOptions::new().queue_size(8).max_batch(1)).await;
    let writes = (0..100)
        .map(|i| put_op(NS, &format!("k{i:03}"), "v", 0))
        .collect();

    let results = batch(&mut client, writes).await.unwrap();

    for (index, result) in results.iter().take(8).enumerate() {
        assert_ok(
            result,
            1,
            &format!("write {index}, queued while there was room"),
        );
    }
    let mut refused = 0;
    for (index, result) in results.iter().enumerate() {
        let key = format!("k{index:03}");
        let stored = lookup(&mut client, NS, &key).await.unwrap();
        match code(result) {
            Code::Ok => assert_eq!(stored.map(|s| s.version), Some(1), "{key}"),
            Code::ResourceExhausted => {
                refused += 1;
                assert!(result.message.contains("queue is full"), "{result:?}");
                assert_eq!(stored, None, "{key} was refused but applied");
            }
            other => panic!("{key}: unexpected {other:?}: {result:?}"),
        }
    }
    assert!(refused > 0, "100 writes fit in a queue of 8: {results:?}");
}

/// Keys the concurrency test's writers fight over.
const HOT_KEYS: usize = 8;
/// Tasks sending batches.
const BATCHERS: usize = 32;
/// Batches each of them sends.
const ROUNDS: usize = 5;
/// Writes per batch.
const BATCH: usize = 50;
/// Tasks racing them with plain Puts, and the Puts each sends.
const PUTTERS: usize = 4;
const PUTS: usize = 40;
/// Connections the tasks spread over.
const CONNECTIONS: usize = 8;

/// An acknowledged write: the version it made and the value it stored.
type Acked = (String, u64, Vec<u8>);

/// One batch of CAS increments on the hot keys, each expecting the version after the previous
/// increment of the same key in this batch, starting from what Get shows now.
async fn increment_batch(client: &mut StoreClient, writer: usize, round: usize) -> Vec<Acked> {
    let mut expected = Vec::with_capacity(HOT_KEYS);
    for key in 0..HOT_KEYS {
        let found = lookup(client, NS, &format!("hot-{key}")).await.unwrap();
        expected.push(found.map_or(0, |f| f.version));
    }
    let mut sent = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        let key = (i + writer) % HOT_KEYS;
        let value = format!("batcher {writer} round {round} write {i}").into_bytes();
        sent.push((format!("hot-{key}"), expected[key], value));
        expected[key] += 1;
    }
    let writes = sent
        .iter()
        .map(|(key, version, value)| put_op(NS, key, value.clone(), *version))
        .collect();
    let results = batch(client, writes).await.unwrap();
    let mut acked = Vec::new();
    for ((key, expected, value), result) in sent.into_iter().zip(results) {
        match code(&result) {
            Code::Ok => {
                assert_eq!(result.version, expected + 1, "{key}: {result:?}");
                acked.push((key, result.version, value));
            }
            Code::Aborted => assert_ne!(result.version, expected, "{key}: {result:?}"),
            other => panic!("{key}: unexpected {other:?}: {result:?}"),
        }
    }
    acked
}

/// Plain CAS Puts of the hot keys, racing the batches.
async fn increment_puts(client: &mut StoreClient, putter: usize) -> Vec<Acked> {
    let mut acked = Vec::new();
    for i in 0..PUTS {
        let key = format!("hot-{}", (i + putter) % HOT_KEYS);
        let seen = lookup(client, NS, &key)
            .await
            .unwrap()
            .map_or(0, |f| f.version);
        let value = format!("putter {putter} put {i}").into_bytes();
        match put(client, NS, &key, value.clone(), seen).await {
            Ok(version) => {
                assert_eq!(version, seen + 1, "{key}");
                acked.push((key, version, value));
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{key}: {status:?}"),
        }
    }
    acked
}

#[tokio::test]
async fn concurrent_batches_and_puts_lose_and_duplicate_no_write() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new().queue_size(4096)).await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(store.client().await.unwrap());
    }

    let mut tasks = JoinSet::new();
    for writer in 0..BATCHERS {
        let mut client = clients[writer % CONNECTIONS].clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                acked.extend(increment_batch(&mut client, writer, round).await);
            }
            acked
        });
    }
    for putter in 0..PUTTERS {
        let mut client = clients[putter % CONNECTIONS].clone();
        tasks.spawn(async move { increment_puts(&mut client, putter).await });
    }
    let acked: Vec<Acked> = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
        .await
        .expect("the writers finished")
        .into_iter()
        .flatten()
        .collect();

    let mut versions: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut latest: HashMap<String, (u64, Vec<u8>)> = HashMap::new();
    for (key, version, value) in acked {
        assert!(
            versions.entry(key.clone()).or_default().insert(version),
            "{key}: version {version} acknowledged twice"
        );
        let top = latest.entry(key).or_insert((0, Vec::new()));
        if version > top.0 {
            *top = (version, value);
        }
    }
    let total: usize = versions.values().map(HashSet::len).sum();
    assert!(
        total >= HOT_KEYS,
        "almost every write conflicted: {total} acknowledged"
    );
    for key in (0..HOT_KEYS).map(|k| format!("hot-{k}")) {
        let stored = get(&mut client, NS, &key).await.unwrap();
        let acked = versions.get(&key).map_or(0, HashSet::len) as u64;
        assert_eq!(
            stored.version, acked,
            "{key}: the final version must count the acknowledged writes exactly"
        );
        assert_eq!(
            Some(&(stored.version, stored.value)),
            latest.get(&key),
            "{key} holds the value of its last acknowledged write"
        );
    }
}
