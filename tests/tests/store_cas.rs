//! Compare-and-swap: a write only lands on the version its writer saw, even under a race.

use std::sync::Arc;

use tests::{
    StoreClient, StoreOptions, StoreProcess, spawn_store_and_client,
    status::{expect_code, numbers_in},
    store_client::{delete, get, put},
};
use tokio::{sync::Barrier, task::JoinSet};
use tonic::Code;

const NS: &str = "cas";

/// Writers in each race: many more than cores, so they really overlap in the server.
const RACERS: usize = 64;

/// Connections the racers spread over, so the race is not serialised by one HTTP/2 stream
/// scheduler.
const CONNECTIONS: usize = 8;

/// Puts `count` versions of `key`, leaving it at version `count`.
async fn write_versions(client: &mut StoreClient, key: &str, count: u64) {
    for version in 0..count {
        put(client, NS, key, format!("v{}", version + 1), version)
            .await
            .unwrap();
    }
}

/// Runs [`RACERS`] concurrent Puts of `key`, all expecting `expected_version`, each with its own
/// value; returns each racer's value and outcome.
async fn race(
    store: &StoreProcess,
    key: &str,
    expected_version: u64,
) -> Vec<(Vec<u8>, Result<u64, tonic::Status>)> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(store.client().await.unwrap());
    }
    // Every racer is connected and ready before any sends, so they all start together.
    let start = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for racer in 0..RACERS {
        let mut client = clients[racer % CONNECTIONS].clone();
        let start = Arc::clone(&start);
        let key = key.to_owned();
        racers.spawn(async move {
            let value = format!("racer {racer}").into_bytes();
            start.wait().await;
            let outcome = put(&mut client, NS, &key, value.clone(), expected_version).await;
            (value, outcome)
        });
    }
    racers.join_all().await
}

/// Asserts exactly one racer won (with `expected_version + 1`), every other got ABORTED, and the
/// key holds the winner's value.
async fn assert_single_winner(
    client: &mut StoreClient,
    key: &str,
    expected_version: u64,
    outcomes: Vec<(Vec<u8>, Result<u64, tonic::Status>)>,
) {
    let mut winners = Vec::new();
    for (value, outcome) in outcomes {
        match outcome {
            Ok(version) => winners.push((value, version)),
            Err(status) => assert_eq!(
                status.code(),
                Code::Aborted,
                "a losing racer got {status:?}"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racer must win; winners: {winners:?}"
    );
    let (winner_value, winner_version) = winners.remove(0);
    assert_eq!(winner_version, expected_version + 1);
    let stored = get(client, NS, key).await.unwrap();
    assert_eq!(
        (stored.value, stored.version),
        (winner_value, expected_version + 1),
        "the key must hold the winner's write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_expecting_the_same_version_have_exactly_one_winner() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    write_versions(&mut client, "contended", 3).await;

    let outcomes = race(&store, "contended", 3).await;

    assert_single_winner(&mut client, "contended", 3, outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_a_new_key_have_exactly_one_winner() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let outcomes = race(&store, "fresh", 0).await;

    assert_single_winner(&mut client, "fresh", 0, outcomes).await;
}

#[tokio::test]
async fn put_with_a_stale_version_is_aborted_names_the_current_version_and_changes_nothing() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    write_versions(&mut client, "k", 7).await;

    let status = expect_code(
        put(&mut client, NS, "k", "late", 3).await,
        Code::Aborted,
        "stale Put",
    );

    assert!(
        numbers_in(status.message()).contains(&7),
        "ABORTED must state the current version 7: {:?}",
        status.message()
    );
    let stored = get(&mut client, NS, "k").await.unwrap();
    assert_eq!((stored.value.as_slice(), stored.version), (&b"v7"[..], 7));
}

#[tokio::test]
async fn put_with_a_version_ahead_of_the_store_is_aborted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    write_versions(&mut client, "k", 2).await;

    expect_code(
        put(&mut client, NS, "k", "future", 5).await,
        Code::Aborted,
        "Put expecting 5 at 2",
    );

    assert_eq!(get(&mut client, NS, "k").await.unwrap().version, 2);
}

#[tokio::test]
async fn put_expecting_absence_of_an_existing_key_is_aborted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    write_versions(&mut client, "k", 1).await;

    let status = expect_code(
        put(&mut client, NS, "k", "again", 0).await,
        Code::Aborted,
        "second create",
    );

    assert!(
        numbers_in(status.message()).contains(&1),
        "message: {:?}",
        status.message()
    );
    assert_eq!(get(&mut client, NS, "k").await.unwrap().value, b"v1");
}

#[tokio::test]
async fn put_expecting_a_version_of_a_missing_key_is_aborted_and_creates_nothing() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    expect_code(
        put(&mut client, NS, "ghost", "x", 1).await,
        Code::Aborted,
        "update of a missing key",
    );

    expect_code(
        get(&mut client, NS, "ghost").await,
        Code::NotFound,
        "Get after the refused update",
    );
}

#[tokio::test]
async fn delete_with_a_stale_version_is_aborted_and_keeps_the_value() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    write_versions(&mut client, "k", 4).await;

    let status = expect_code(
        delete(&mut client, NS, "k", 2).await,
        Code::Aborted,
        "stale Delete",
    );

    assert!(
        numbers_in(status.message()).contains(&4),
        "message: {:?}",
        status.message()
    );
    let stored = get(&mut client, NS, "k").await.unwrap();
    assert_eq!((stored.value.as_slice(), stored.version), (&b"v4"[..], 4));
}

#[tokio::test]
async fn delete_expecting_absence_of_an_existing_key_is_aborted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    write_versions(&mut client, "k", 1).await;

    expect_code(
        delete(&mut client, NS, "k", 0).await,
        Code::Aborted,
        "Delete expecting absence",
    );

    assert_eq!(get(&mut client, NS, "k").await.unwrap().version, 1);
}

#[tokio::test]
async fn delete_expecting_absence_of_a_missing_key_is_an_ok_no_op() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    delete(&mut client, NS, "never-there", 0).await.unwrap();

    expect_code(
        get(&mut client, NS, "never-there").await,
        Code::NotFound,
        "Get after the no-op",
    );
}

#[tokio::test]
async fn delete_expecting_a_version_of_a_missing_key_is_aborted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    expect_code(
        delete(&mut client, NS, "never-there", 3).await,
        Code::Aborted,
        "Delete of a missing key",
    );
}
