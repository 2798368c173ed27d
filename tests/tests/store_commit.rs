//! Commit: puts, deletes and checks on any namespaces, applied all or nothing, for readers,
//! for racing writers and across SIGKILL; and commits nested in a BatchWrite.
//!
//! `STORE_COMMIT_KILL_CYCLES=100 cargo test -p tests --test store_commit` runs the crash test
//! longer.

use std::{
    collections::{BTreeSet, HashSet},
    ops::RangeInclusive,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use proto::store::v1::{
    BatchWriteRequest, CommitRequest, GetResponse, Mutation, PutRequest, Write, WriteResult,
    write::Operation,
};
use rand::Rng;
use tempfile::TempDir;
use tests::{
    StoreClient, StoreOptions, StoreProcess, spawn_store_and_client,
    status::{
        assert_invalid_argument_naming, assert_version_conflict, expect_code, is_semantic_error,
        version_conflict, violated_fields,
    },
    store_client::{
        check_mutation, commit, delete_mutation, get, lookup, put, put_mutation, scan_all,
    },
};
use tokio::{sync::Barrier, task::JoinSet};
use tonic::{Code, Status};

const NS_A: &str = "commit-a";
const NS_B: &str = "commit-b";

/// The server's default `--max-value-bytes` (1 MiB).
const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// A key's value and version, or `None` when it is absent: what Get shows of it.
type Seen = Option<(Vec<u8>, u64)>;

/// What Get shows of each `(namespace, key)`, in order.
async fn snapshot(client: &mut StoreClient, keys: &[(&str, &str)]) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(keys.len());
    for &(namespace, key) in keys {
        let found = lookup(client, namespace, key)
            .await
            .unwrap_or_else(|status| panic!("Get {namespace}/{key}: {status:?}"));
        seen.push(found.map(|found| (found.value, found.version)));
    }
    seen
}

/// Asserts that each `(namespace, key)` holds `value` at `version`.
async fn assert_stored(client: &mut StoreClient, expected: &[(&str, &str, &str, u64)]) {
    for &(namespace, key, value, version) in expected {
        let stored = get(client, namespace, key)
            .await
            .unwrap_or_else(|status| panic!("Get {namespace}/{key}: {status:?}"));
        assert_eq!(
            (stored.value.as_slice(), stored.version),
            (value.as_bytes(), version),
            "{namespace}/{key}"
        );
    }
}

/// Asserts that each `(namespace, key)` is absent.
async fn assert_absent(client: &mut StoreClient, keys: &[(&str, &str)]) {
    for &(namespace, key) in keys {
        let found = lookup(client, namespace, key).await.unwrap();
        assert_eq!(found, None, "{namespace}/{key} should be absent");
    }
}

/// A valid commit still works: bad input must never wedge or crash the server.
async fn assert_still_serving(client: &mut StoreClient, key: &str) {
    let versions = commit(
        client,
        vec![
            put_mutation(NS_A, key, "fine", 0),
            put_mutation(NS_B, key, "fine", 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!(versions, [1, 1]);
    assert_eq!(get(client, NS_B, key).await.unwrap().value, b"fine");
}

#[tokio::test]
async fn a_commit_across_two_namespaces_applies_every_mutation_and_answers_each_version() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS_A, "updated", "u1", 0).await.unwrap();
    put(&mut client, NS_A, "updated", "u2", 1).await.unwrap();
    put(&mut client, NS_B, "doomed", "d1", 0).await.unwrap();
    put(&mut client, NS_B, "fence", "f1", 0).await.unwrap();

    let versions = commit(
        &mut client,
        vec![
            put_mutation(NS_A, "created", "c-a", 0),
            put_mutation(NS_A, "updated", "u3", 2),
            delete_mutation(NS_B, "doomed", 1),
            check_mutation(NS_B, "fence", 1),
            // The same key name in another namespace is another key.
            put_mutation(NS_B, "created", "c-b", 0),
            delete_mutation(NS_B, "never-written", 0),
            check_mutation(NS_A, "absent", 0),
        ],
    )
    .await
    .unwrap();

    assert_eq!(
        versions,
        [1, 3, 0, 1, 1, 0, 0],
        "put: its new version; delete: 0; check: the version checked"
    );
    assert_stored(
        &mut client,
        &[
            (NS_A, "created", "c-a", 1),
            (NS_A, "updated", "u3", 3),
            (NS_B, "fence", "f1", 1),
            (NS_B, "created", "c-b", 1),
        ],
    )
    .await;
    assert_absent(
        &mut client,
        &[(NS_B, "doomed"), (NS_B, "never-written"), (NS_A, "absent")],
    )
    .await;
}

#[tokio::test]
async fn a_stale_check_aborts_the_whole_commit_naming_the_check_and_changes_nothing() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS_A, "x", "x1", 0).await.unwrap();
    put(&mut client, NS_B, "victim", "v1", 0).await.unwrap();
    put(&mut client, NS_B, "fence", "f1", 0).await.unwrap();
    put(&mut client, NS_B, "fence", "f2", 1).await.unwrap();
    let keys = [
        (NS_A, "x"),
        (NS_A, "new"),
        (NS_B, "victim"),
        (NS_B, "fence"),
    ];
    let before = snapshot(&mut client, &keys).await;

    let outcome = commit(
        &mut client,
        vec![
            put_mutation(NS_A, "x", "x2", 1),
            put_mutation(NS_A, "new", "n1", 0),
            delete_mutation(NS_B, "victim", 1),
            // The writer saw the fence at 1; someone has moved it to 2 since.
            check_mutation(NS_B, "fence", 1),
        ],
    )
    .await;

    assert_version_conflict(outcome, 3, 2, "a check of the fence at 1 when it is at 2");
    assert_eq!(
        snapshot(&mut client, &keys).await,
        before,
        "an aborted commit must change nothing"
    );
}

#[tokio::test]
async fn a_stale_put_delete_or_create_anywhere_in_a_commit_aborts_it_whole() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS_A, "k0", "a", 0).await.unwrap();
    put(&mut client, NS_B, "k1", "b", 0).await.unwrap();
    put(&mut client, NS_B, "k2", "c", 0).await.unwrap();
    let keys = [(NS_A, "k0"), (NS_B, "k1"), (NS_B, "k2"), (NS_A, "k3")];
    let before = snapshot(&mut client, &keys).await;
    // Each mutation with its right expected version, a wrong one, and the key's version now.
    let mutation = |index: usize, stale: bool| match index {
        0 => put_mutation(NS_A, "k0", "a2", if stale { 3 } else { 1 }),
        1 => delete_mutation(NS_B, "k1", if stale { 0 } else { 1 }),
        2 => put_mutation(NS_B, "k2", "c2", if stale { 2 } else { 1 }),
        _ => put_mutation(NS_A, "k3", "d1", if stale { 1 } else { 0 }),
    };
    let current = [1, 1, 1, 0];

    for (stale_index, current) in current.into_iter().enumerate() {
        let mutations = (0..keys.len())
            .map(|index| mutation(index, index == stale_index))
            .collect();

        assert_version_conflict(
            commit(&mut client, mutations).await,
            stale_index,
            current,
            &format!("mutation {stale_index} stale"),
        );
        assert_eq!(
            snapshot(&mut client, &keys).await,
            before,
            "the commit with mutation {stale_index} stale changed something"
        );
    }

    // The same commit with no stale mutation applies: the aborts above were the stale ones'.
    let mutations = (0..keys.len())
        .map(|index| mutation(index, false))
        .collect();
    assert_eq!(commit(&mut client, mutations).await.unwrap(), [2, 0, 2, 1]);
    assert_stored(
        &mut client,
        &[
            (NS_A, "k0", "a2", 2),
            (NS_B, "k2", "c2", 2),
            (NS_A, "k3", "d1", 1),
        ],
    )
    .await;
    assert_absent(&mut client, &[(NS_B, "k1")]).await;
}

#[tokio::test]
async fn a_commit_naming_a_namespace_the_store_does_not_serve_is_refused_whole() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let outcome = commit(
        &mut client,
        vec![
            put_mutation(NS_A, "k", "v", 0),
            check_mutation(NS_B, "fence", 0),
            put_mutation("not-served", "k", "v", 0),
        ],
    )
    .await;
    assert_invalid_argument_naming(
        outcome,
        "mutations[2].put.namespace",
        "a put to a namespace not in --namespaces",
    );
    assert_absent(&mut client, &[(NS_A, "k")]).await;

    let outcome = commit(&mut client, vec![check_mutation("not-served", "k", 0)]).await;
    assert_invalid_argument_naming(
        outcome,
        "mutations[0].check.namespace",
        "a check in a namespace not in --namespaces",
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: refused whole, INVALID_ARGUMENT naming the field, nothing applied.

/// `count` puts of fresh keys `m000`, `m001`, ... in [`NS_A`].
fn fresh_puts(count: usize) -> Vec<Mutation> {
    (0..count)
        .map(|i| put_mutation(NS_A, &format!("m{i:03}"), "v", 0))
        .collect()
}

#[tokio::test]
async fn a_commit_of_no_mutation_or_of_101_is_refused_naming_mutations_and_100_are_accepted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    assert_invalid_argument_naming(
        commit(&mut client, Vec::new()).await,
        "mutations",
        "no mutations",
    );
    assert_invalid_argument_naming(
        commit(&mut client, fresh_puts(101)).await,
        "mutations",
        "101 mutations",
    );
    assert_absent(&mut client, &[(NS_A, "m000"), (NS_A, "m100")]).await;

    let versions = commit(&mut client, fresh_puts(100)).await.unwrap();
    assert_eq!(
        versions,
        vec![1; 100],
        "100 mutations is the limit, not over it"
    );
    assert_eq!(get(&mut client, NS_A, "m099").await.unwrap().version, 1);
    assert_still_serving(&mut client, "after-counts").await;
}

#[tokio::test]
async fn a_key_named_twice_in_one_commit_is_refused_but_one_name_in_two_namespaces_is_not() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS_A, "twice", "t1", 0).await.unwrap();
    let cases = [
        (
            "a put and a delete of one key",
            vec![
                put_mutation(NS_A, "twice", "t2", 1),
                delete_mutation(NS_A, "twice", 2),
            ],
        ),
        (
            "a check and a put of one key",
            vec![
                check_mutation(NS_A, "twice", 1),
                put_mutation(NS_A, "twice", "t2", 1),
            ],
        ),
        (
            "two creates of one key after another key",
            vec![
                put_mutation(NS_A, "other", "o", 0),
                put_mutation(NS_A, "new", "n1", 0),
                put_mutation(NS_A, "new", "n2", 0),
            ],
        ),
    ];

    for (case, mutations) in cases {
        let status = expect_code(
            commit(&mut client, mutations).await,
            Code::InvalidArgument,
            case,
        );
        let fields = violated_fields(&status);
        assert!(
            fields.iter().any(|field| field.starts_with("mutations[")),
            "{case}: BadRequest should name the repeated mutation; it names {fields:?} \
             (message: {:?})",
            status.message()
        );
    }
    assert_stored(&mut client, &[(NS_A, "twice", "t1", 1)]).await;
    assert_absent(&mut client, &[(NS_A, "other"), (NS_A, "new")]).await;

    let versions = commit(
        &mut client,
        vec![
            put_mutation(NS_A, "shared-name", "a", 0),
            put_mutation(NS_B, "shared-name", "b", 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!(versions, [1, 1]);
    assert_still_serving(&mut client, "after-repeats").await;
}

#[tokio::test]
async fn an_invalid_mutation_is_refused_naming_its_path_in_the_commit() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let valid = || put_mutation(NS_A, "valid", "v", 0);
    let cases = [
        (
            "an empty key in mutation 1",
            vec![valid(), put_mutation(NS_A, "", "v", 0)],
            "mutations[1].put.key",
        ),
        (
            "a key with a newline in mutation 1",
            vec![valid(), put_mutation(NS_B, "a\nb", "v", 0)],
            "mutations[1].put.key",
        ),
        (
            "a mutation with no kind",
            vec![valid(), Mutation { kind: None }],
            "mutations[1]",
        ),
        (
            "an uppercase namespace in a delete",
            vec![delete_mutation("Bad", "k", 0), valid()],
            "mutations[0].delete.namespace",
        ),
        (
            "a check of a key with a NUL",
            vec![
                valid(),
                put_mutation(NS_B, "ok", "v", 0),
                check_mutation(NS_A, "a\0b", 0),
            ],
            "mutations[2].check.key",
        ),
        (
            "a value over the limit",
            vec![
                valid(),
                put_mutation(NS_B, "big", vec![0; DEFAULT_MAX_VALUE_BYTES + 1], 0),
            ],
            "mutations[1].put.value",
        ),
    ];

    for (case, mutations, field) in cases {
        assert_invalid_argument_naming(commit(&mut client, mutations).await, field, case);
    }
    assert_absent(
        &mut client,
        &[(NS_A, "valid"), (NS_B, "ok"), (NS_B, "big"), (NS_A, "k")],
    )
    .await;
    assert_still_serving(&mut client, "after-invalid-fields").await;
}

#[tokio::test]
async fn a_commit_carrying_more_than_two_value_limits_is_refused_and_exactly_two_are_accepted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let full = || vec![7u8; DEFAULT_MAX_VALUE_BYTES];
    let three_quarters = || vec![3u8; DEFAULT_MAX_VALUE_BYTES * 3 / 4];

    for (case, mutations) in [
        (
            "three values of 768 KiB",
            vec![
                put_mutation(NS_A, "q1", three_quarters(), 0),
                put_mutation(NS_B, "q2", three_quarters(), 0),
                put_mutation(NS_A, "q3", three_quarters(), 0),
            ],
        ),
        (
            "two full values and one byte",
            vec![
                put_mutation(NS_A, "full-1", full(), 0),
                put_mutation(NS_B, "full-2", full(), 0),
                put_mutation(NS_A, "byte", "x", 0),
            ],
        ),
    ] {
        assert_invalid_argument_naming(commit(&mut client, mutations).await, "mutations", case);
    }
    assert_absent(
        &mut client,
        &[
            (NS_A, "q1"),
            (NS_A, "full-1"),
            (NS_B, "full-2"),
            (NS_A, "byte"),
        ],
    )
    .await;

    let versions = commit(
        &mut client,
        vec![
            put_mutation(NS_A, "full-1", full(), 0),
            put_mutation(NS_B, "full-2", full(), 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!(versions, [1, 1], "two full values are exactly the limit");
    assert!(get(&mut client, NS_B, "full-2").await.unwrap().value == full());
    assert_still_serving(&mut client, "after-large").await;
}

// ---------------------------------------------------------------------------------------------
// All or nothing under racing committers.

/// Committers racing for the counter: many more than cores, so they really overlap.
const RACERS: usize = 64;
/// Commits each racer tries.
const ATTEMPTS_PER_RACER: usize = 8;
/// Connections the racers spread over.
const CONNECTIONS: usize = 8;
/// The key every racer increments.
const COUNTER: &str = "counter";

/// One racer's attempt: its marker key, and the counter version its commit made if it was
/// acknowledged (`None`: ABORTED).
type Attempt = (String, Option<u64>);

/// Reads the counter, then commits {counter at the version read, a fresh marker of its own},
/// [`ATTEMPTS_PER_RACER`] times.
async fn race_for_the_counter(client: &mut StoreClient, racer: usize) -> Vec<Attempt> {
    let mut attempts = Vec::with_capacity(ATTEMPTS_PER_RACER);
    for attempt in 0..ATTEMPTS_PER_RACER {
        let seen = lookup(client, NS_A, COUNTER)
            .await
            .unwrap()
            .map_or(0, |counter| counter.version);
        let marker = format!("racer-{racer:02}-attempt-{attempt}");
        let mutations = vec![
            put_mutation(NS_A, COUNTER, marker.clone(), seen),
            put_mutation(NS_B, &marker, marker.clone(), 0),
        ];
        match commit(client, mutations).await {
            Ok(versions) => {
                assert_eq!(versions, [seen + 1, 1], "{marker}");
                attempts.push((marker, Some(seen + 1)));
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "{marker}: {status:?}");
                let conflict = version_conflict(&status)
                    .unwrap_or_else(|| panic!("{marker}: ABORTED without ErrorInfo: {status:?}"));
                assert_eq!(
                    conflict.index, 0,
                    "{marker}: only the counter can conflict, the marker is new: {status:?}"
                );
                assert!(
                    conflict.current_version > seen,
                    "{marker}: read {seen}, the conflict says {}",
                    conflict.current_version
                );
                attempts.push((marker, None));
            }
        }
    }
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_commits_apply_all_or_nothing() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(store.client().await.unwrap());
    }

    let start = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for racer in 0..RACERS {
        let mut client = clients[racer % CONNECTIONS].clone();
        let start = Arc::clone(&start);
        racers.spawn(async move {
            start.wait().await;
            race_for_the_counter(&mut client, racer).await
        });
    }
    let attempts: Vec<Attempt> = tokio::time::timeout(Duration::from_secs(120), racers.join_all())
        .await
        .expect("the racers finished")
        .into_iter()
        .flatten()
        .collect();

    let (won, lost): (Vec<_>, Vec<_>) = attempts.into_iter().partition(|(_, won)| won.is_some());
    assert!(!won.is_empty(), "no commit succeeded");
    assert!(
        !lost.is_empty(),
        "no commit conflicted: the racers never raced"
    );
    let versions: BTreeSet<u64> = won.iter().filter_map(|(_, version)| *version).collect();
    assert_eq!(
        versions,
        (1..=won.len() as u64).collect(),
        "each counter version must be acknowledged exactly once"
    );
    let counter = get(&mut client, NS_A, COUNTER).await.unwrap();
    let (last_marker, _) = won
        .iter()
        .max_by_key(|(_, version)| *version)
        .expect("a winner");
    assert_eq!(
        (counter.version, counter.value.as_slice()),
        (won.len() as u64, last_marker.as_bytes()),
        "the counter's version counts the OK commits and holds the last one's value"
    );

    let (markers, _) = scan_all(&mut client, NS_B, "racer-", 1000).await.unwrap();
    let stored: HashSet<&str> = markers.iter().map(|entry| entry.key.as_str()).collect();
    for entry in &markers {
        assert_eq!(
            (entry.value.as_slice(), entry.version),
            (entry.key.as_bytes(), 1),
            "{}",
            entry.key
        );
    }
    for (marker, _) in &won {
        assert!(
            stored.contains(marker.as_str()),
            "{marker}: its commit was acknowledged but its marker is missing"
        );
    }
    for (marker, _) in &lost {
        assert!(
            !stored.contains(marker.as_str()),
            "{marker}: its commit was ABORTED but its marker was written"
        );
    }
    assert_eq!(stored.len(), won.len(), "markers of no one's commit");
    println!("{} commits acknowledged, {} aborted", won.len(), lost.len());
}

// ---------------------------------------------------------------------------------------------
// Readers never see part of a commit.

/// Committers and readers in the reader-isolation test.
const READ_COMMITTERS: usize = 4;
const READERS: usize = 4;
/// Reads each reader makes: each one is a Scan of the one-namespace pairs and a Get of both
/// keys of a two-namespace pair.
const READS_PER_READER: usize = 150;
/// Pairs each committer updates round-robin.
const PAIRS_PER_COMMITTER: usize = 4;

/// The version of `found`, 0 when absent.
fn version_of(found: Option<&GetResponse>) -> u64 {
    found.map_or(0, |found| found.version)
}

/// Commits `{a/i, b/i}` (one value, expected versions in lockstep) in one namespace and in two,
/// round-robin over its pairs, until `stop`; how many commits it made.
async fn commit_pairs(mut client: StoreClient, committer: usize, stop: Arc<AtomicBool>) -> u64 {
    let pairs: Vec<usize> = (0..PAIRS_PER_COMMITTER)
        .map(|p| committer * PAIRS_PER_COMMITTER + p)
        .collect();
    let mut versions = vec![0u64; pairs.len()];
    let mut commits = 0;
    while !stop.load(Ordering::SeqCst) && commits < MAX_COMMITS_PER_CYCLE {
        for (slot, &pair) in pairs.iter().enumerate() {
            let n = versions[slot];
            let value = format!("pair {pair} commit {}", n + 1);
            let (a, b) = (format!("a/{pair:03}"), format!("b/{pair:03}"));
            let mutations = vec![
                put_mutation("iso-one", &a, value.clone(), n),
                put_mutation("iso-one", &b, value.clone(), n),
                put_mutation("iso-a", &a, value.clone(), n),
                put_mutation("iso-b", &b, value, n),
            ];
            let answered = commit(&mut client, mutations).await.unwrap();
            assert_eq!(answered, [n + 1; 4], "pair {pair}");
            versions[slot] = n + 1;
            commits += 1;
        }
    }
    commits
}

/// Reads pairs while they are committed: `a/i` is always read before `b/i`, and both only grow
/// together, so reading `a` newer than `b` means a commit was seen half applied.
async fn read_pairs(mut client: StoreClient, reader: usize) -> Vec<String> {
    let mut torn = Vec::new();
    let pairs = READ_COMMITTERS * PAIRS_PER_COMMITTER;
    for read in 0..READS_PER_READER {
        // One namespace: a Scan returns every a/ before every b/.
        let (entries, _) = scan_all(&mut client, "iso-one", "", 1000).await.unwrap();
        for pair in 0..pairs {
            let find = |key: String| entries.iter().find(|e| e.key == key);
            let a = find(format!("a/{pair:03}")).map_or(0, |e| e.version);
            let b = find(format!("b/{pair:03}")).map_or(0, |e| e.version);
            if a > b {
                torn.push(format!(
                    "Scan {read} of reader {reader}: pair {pair} a@{a} b@{b}"
                ));
            }
        }
        // Two namespaces: Get a, then Get b.
        let pair = (read + reader) % pairs;
        let a = lookup(&mut client, "iso-a", &format!("a/{pair:03}"))
            .await
            .unwrap();
        let b = lookup(&mut client, "iso-b", &format!("b/{pair:03}"))
            .await
            .unwrap();
        let (a, b) = (version_of(a.as_ref()), version_of(b.as_ref()));
        if a > b {
            torn.push(format!(
                "Gets {read} of reader {reader}: pair {pair} a@{a} b@{b}"
            ));
        }
    }
    torn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_part_of_a_commit() {
    let (store, _client) = spawn_store_and_client(StoreOptions::new()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut committers = JoinSet::new();
    for committer in 0..READ_COMMITTERS {
        let client = store.client().await.unwrap();
        committers.spawn(commit_pairs(client, committer, Arc::clone(&stop)));
    }
    let mut readers = JoinSet::new();
    for reader in 0..READERS {
        let client = store.client().await.unwrap();
        readers.spawn(read_pairs(client, reader));
    }

    let torn: Vec<String> = tokio::time::timeout(Duration::from_secs(120), readers.join_all())
        .await
        .expect("the readers finished")
        .into_iter()
        .flatten()
        .collect();
    stop.store(true, Ordering::SeqCst);
    let commits: u64 = tokio::time::timeout(Duration::from_secs(60), committers.join_all())
        .await
        .expect("the committers stopped")
        .into_iter()
        .sum();

    assert!(
        torn.is_empty(),
        "{} reads saw half a commit:\n{}",
        torn.len(),
        torn.join("\n")
    );
    assert!(commits > 0, "nothing was committed while the readers read");
    println!("{commits} commits while {READERS} readers read");
}

// ---------------------------------------------------------------------------------------------
// All or nothing across SIGKILL.

/// Kill cycles when `STORE_COMMIT_KILL_CYCLES` is unset.
const DEFAULT_KILL_CYCLES: usize = 5;
/// Concurrent committers, each owning its groups.
const CRASH_WRITERS: usize = 8;
/// Groups per committer, committed round-robin.
const GROUPS_PER_WRITER: usize = 4;
/// How long the load runs after its first acknowledged commit before the SIGKILL, in
/// milliseconds: random, so the kill lands in every phase of a group flush.
const LOAD_MILLIS: RangeInclusive<u64> = 0..=300;
/// How long a restarted store may take to acknowledge its first commit.
const FIRST_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on one committer's commits per cycle, should the kill never stop it.
const MAX_COMMITS_PER_CYCLE: u64 = 100_000;

fn kill_cycles() -> usize {
    match std::env::var("STORE_COMMIT_KILL_CYCLES") {
        Ok(text) => text.parse().unwrap_or_else(|_| {
            panic!("STORE_COMMIT_KILL_CYCLES must be a whole number, got {text:?}")
        }),
        Err(_) => DEFAULT_KILL_CYCLES,
    }
}

/// Keys `a/i`, `b/i`, `c/i` that every commit of group `i` changes together, with one value:
/// `a` and `b` are put; `c` is put by odd-numbered commits and deleted by even-numbered ones,
/// so after `n` commits `a` and `b` are at version `n` and `c` exists (at version 1) iff `n` is
/// odd. Even groups span three namespaces (a sled transaction), odd groups one (a sled batch).
#[derive(Debug)]
struct Group {
    index: usize,
    /// Commits known applied: acknowledged, or read back after a restart.
    version: u64,
    /// The value of that last commit; empty before the first.
    value: Vec<u8>,
    /// The value of a commit sent when the server died, which may or may not have applied.
    in_doubt: Option<Vec<u8>>,
}

impl Group {
    fn new(index: usize) -> Self {
        Self {
            index,
            version: 0,
            value: Vec::new(),
            in_doubt: None,
        }
    }

    /// `(namespace, key)` of `a`, `b` and `c`.
    fn keys(&self) -> [(&'static str, String); 3] {
        let i = self.index;
        let namespaces = if i.is_multiple_of(2) {
            ["pair-a", "pair-b", "pair-c"]
        } else {
            ["pair-one"; 3]
        };
        [
            (namespaces[0], format!("a/{i}")),
            (namespaces[1], format!("b/{i}")),
            (namespaces[2], format!("c/{i}")),
        ]
    }

    /// The next commit, carrying `value`, and the versions it must answer.
    fn next_commit(&self, value: &[u8]) -> (Vec<Mutation>, [u64; 3]) {
        let [(ns_a, a), (ns_b, b), (ns_c, c)] = self.keys();
        let n = self.version;
        let (c_mutation, c_version) = if n % 2 == 1 {
            (delete_mutation(ns_c, &c, 1), 0)
        } else {
            (put_mutation(ns_c, &c, value.to_vec(), 0), 1)
        };
        let mutations = vec![
            put_mutation(ns_a, &a, value.to_vec(), n),
            put_mutation(ns_b, &b, value.to_vec(), n),
            c_mutation,
        ];
        (mutations, [n + 1, n + 1, c_version])
    }

    /// Checks what a restarted store holds (`a`, `b`, `c`) against the rules: never part of a
    /// commit, never less than acknowledged, nothing the test did not send; then adopts it.
    fn reconcile(&mut self, [a, b, c]: [Option<GetResponse>; 3]) -> Result<(), String> {
        let i = self.index;
        let show = |found: &Option<GetResponse>| {
            found.as_ref().map_or("absent".to_owned(), |found| {
                format!("{:?}@{}", lossy(&found.value), found.version)
            })
        };
        let state = format!("a={} b={} c={}", show(&a), show(&b), show(&c));
        let (version, value) = match (&a, &b) {
            (None, None) => (0, Vec::new()),
            (Some(a), Some(b)) if (&a.value, a.version) == (&b.value, b.version) => {
                (a.version, a.value.clone())
            }
            _ => {
                return Err(format!(
                    "group {i}: a and b hold parts of different commits: {state}"
                ));
            }
        };
        let c_expected = (version % 2 == 1).then(|| (value.clone(), 1));
        if c.map(|c| (c.value, c.version)) != c_expected {
            return Err(format!(
                "group {i}: c does not match commit {version} of a and b: {state}"
            ));
        }
        let as_acknowledged = version == self.version && value == self.value;
        // The commit in flight at the kill may or may not have been applied.
        let in_doubt_applied =
            version == self.version + 1 && self.in_doubt.as_ref() == Some(&value);
        let verdict = if as_acknowledged || in_doubt_applied {
            Ok(())
        } else {
            Err(format!(
                "group {i}: {version} commits applied, the last acknowledged was commit {} = \
                 {:?}{}: {state}",
                self.version,
                lossy(&self.value),
                self.in_doubt
                    .as_ref()
                    .map_or(String::new(), |v| format!(", in doubt {:?}", lossy(v)))
            ))
        };
        self.version = version;
        self.value = value;
        self.in_doubt = None;
        verdict
    }
}

/// Test values are UTF-8; show them as text in messages.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Switches shared by the crash test and its committers.
#[derive(Clone, Default)]
struct CrashControl {
    /// Set just before the SIGKILL: from then on, transport errors are expected.
    disrupted: Arc<AtomicBool>,
    /// Commits acknowledged in this cycle, across committers.
    acknowledged: Arc<AtomicU64>,
}

/// What one committer did in one cycle.
struct CommitterReport {
    groups: Vec<Group>,
    acknowledged: u64,
    /// Answers that break the contract; empty when all is well.
    unexpected: Vec<String>,
}

/// Commits its groups round-robin, one commit in flight, until the server fails while
/// disrupted or something unexpected happens.
async fn commit_until_killed(
    mut client: StoreClient,
    mut groups: Vec<Group>,
    control: CrashControl,
    tag: String,
) -> CommitterReport {
    let mut acknowledged = 0;
    let mut unexpected = Vec::new();
    let mut commits = 0;
    'load: while commits < MAX_COMMITS_PER_CYCLE {
        for group in &mut groups {
            commits += 1;
            let value = format!("g{}@{}#{tag}", group.index, group.version + 1).into_bytes();
            let (mutations, expected) = group.next_commit(&value);
            match commit(&mut client, mutations).await {
                Ok(versions) if versions == expected => {
                    group.version += 1;
                    group.value = value;
                    acknowledged += 1;
                    control.acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                Ok(versions) => {
                    unexpected.push(format!(
                        "group {}: commit answered {versions:?}, expected {expected:?}",
                        group.index
                    ));
                    break 'load;
                }
                Err(status) => {
                    if is_semantic_error(status.code()) || !control.disrupted.load(Ordering::SeqCst)
                    {
                        unexpected.push(format!(
                            "group {}: commit {}: {status:?}",
                            group.index,
                            group.version + 1
                        ));
                    }
                    // The server is gone: whether this commit applied is for reconcile to find.
                    group.in_doubt = Some(value);
                    break 'load;
                }
            }
        }
    }
    CommitterReport {
        groups,
        acknowledged,
        unexpected,
    }
}

/// Starts store-svc on `data`, reconciles every group with what it holds, and returns the
/// running store with its client.
async fn restart_and_verify(
    data: &TempDir,
    committers: &mut [Vec<Group>],
    after: &str,
) -> (StoreProcess, StoreClient) {
    let (store, mut client) =
        spawn_store_and_client(StoreOptions::new().data_dir(data.path())).await;
    let mut violations = Vec::new();
    for group in committers.iter_mut().flatten() {
        let mut held = Vec::with_capacity(3);
        for (namespace, key) in group.keys() {
            let found = lookup(&mut client, namespace, &key)
                .await
                .unwrap_or_else(|status| panic!("Get {namespace}/{key} {after}: {status:?}"));
            held.push(found);
        }
        let held: [Option<GetResponse>; 3] = held.try_into().expect("three keys");
        if let Err(violation) = group.reconcile(held) {
            violations.push(violation);
        }
    }
    assert!(
        violations.is_empty(),
        "commits broken {after}:\n{}\n--- store-svc stderr ---\n{}",
        violations.join("\n"),
        store.stderr_tail(20)
    );
    (store, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_never_half_applied_or_lost_across_sigkill() {
    let cycles = kill_cycles();
    let data = TempDir::with_prefix("store-commit-crash-").unwrap();
    let mut committers: Vec<Vec<Group>> = (0..CRASH_WRITERS)
        .map(|w| {
            (0..GROUPS_PER_WRITER)
                .map(|g| Group::new(w * GROUPS_PER_WRITER + g))
                .collect()
        })
        .collect();
    let mut acknowledged = 0;

    for cycle in 0..cycles {
        let (mut store, client) =
            restart_and_verify(&data, &mut committers, &format!("after kill {cycle}")).await;

        let control = CrashControl::default();
        let tasks: Vec<_> = std::mem::take(&mut committers)
            .into_iter()
            .enumerate()
            .map(|(w, groups)| {
                tokio::spawn(commit_until_killed(
                    client.clone(),
                    groups,
                    control.clone(),
                    format!("c{cycle}/w{w}"),
                ))
            })
            .collect();
        // Kill only once commits flow, then at a random moment of the load.
        let flowing = tokio::time::timeout(FIRST_COMMIT_TIMEOUT, async {
            while control.acknowledged.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let load = Duration::from_millis(rand::rng().random_range(LOAD_MILLIS));
        tokio::time::sleep(load).await;
        control.disrupted.store(true, Ordering::SeqCst);
        store.kill().await.expect("SIGKILL store-svc");

        let mut unexpected = Vec::new();
        for task in tasks {
            let report = task.await.expect("committer panicked");
            committers.push(report.groups);
            acknowledged += report.acknowledged;
            unexpected.extend(report.unexpected);
        }
        assert!(
            unexpected.is_empty(),
            "contract broken before kill {cycle}:\n{}",
            unexpected.join("\n")
        );
        assert!(
            flowing.is_ok(),
            "no commit was acknowledged within {FIRST_COMMIT_TIMEOUT:?} of cycle {cycle}"
        );
    }

    let (mut store, _client) =
        restart_and_verify(&data, &mut committers, &format!("after kill {cycles}")).await;
    store.kill().await.expect("stop store-svc");
    println!("{cycles} kill cycles, {acknowledged} acknowledged commits verified");
    assert!(acknowledged > 0, "no commit was acknowledged");
}

// ---------------------------------------------------------------------------------------------
// Commits nested in a BatchWrite.

fn put_op(namespace: &str, key: &str, value: &str, expected_version: u64) -> Write {
    Write {
        operation: Some(Operation::Put(PutRequest {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            expected_version,
        })),
        deadline_unix_ms: 0,
    }
}

fn commit_op(mutations: Vec<Mutation>) -> Write {
    Write {
        operation: Some(Operation::Commit(CommitRequest { mutations })),
        deadline_unix_ms: 0,
    }
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

/// Asserts `result` is OK with this `version` and these commit `versions`.
fn assert_ok(result: &WriteResult, version: u64, versions: &[u64], case: &str) {
    assert_eq!(
        (
            Code::from(result.code),
            result.version,
            result.versions.as_slice(),
            result.message.as_str()
        ),
        (Code::Ok, version, versions, ""),
        "{case}: {result:?}"
    );
}

#[tokio::test]
async fn a_commit_nested_in_a_batch_answers_its_versions_and_a_stale_one_fails_alone() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS_A, "fence", "f1", 0).await.unwrap();

    let results = batch(
        &mut client,
        vec![
            put_op(NS_A, "plain-0", "p0", 0),
            commit_op(vec![
                put_mutation(NS_A, "x", "x1", 0),
                put_mutation(NS_B, "y", "y1", 0),
                check_mutation(NS_A, "fence", 1),
            ]),
            put_op(NS_B, "plain-2", "p2", 0),
            commit_op(vec![
                put_mutation(NS_A, "z", "z1", 0),
                put_mutation(NS_B, "w", "w1", 0),
                check_mutation(NS_A, "fence", 0),
            ]),
            put_op(NS_A, "plain-4", "p4", 0),
            commit_op(Vec::new()),
            commit_op(vec![
                put_mutation(NS_A, "valid", "v", 0),
                put_mutation(NS_A, "", "v", 0),
            ]),
        ],
    )
    .await
    .unwrap();

    assert_ok(&results[0], 1, &[], "a plain put before the commits");
    assert_ok(&results[1], 0, &[1, 1, 1], "a commit whose check holds");
    assert_ok(&results[2], 1, &[], "a plain put between the commits");
    assert_ok(&results[4], 1, &[], "a plain put after the stale commit");
    let stale = &results[3];
    assert_eq!(
        (
            Code::from(stale.code),
            stale.version,
            stale.versions.as_slice()
        ),
        (Code::Aborted, 1, &[][..]),
        "a stale commit is ABORTED naming the fence's version 1: {stale:?}"
    );
    assert!(stale.message.contains("current version 1"), "{stale:?}");
    for (index, path) in [
        (5, "writes[5].commit.mutations: "),
        (6, "writes[6].commit.mutations[1].put.key: "),
    ] {
        let result = &results[index];
        assert_eq!(Code::from(result.code), Code::InvalidArgument, "{result:?}");
        assert!(
            result.message.starts_with(path),
            "the message should name {path:?}: {result:?}"
        );
        assert!(result.versions.is_empty(), "{result:?}");
    }

    assert_stored(
        &mut client,
        &[
            (NS_A, "plain-0", "p0", 1),
            (NS_A, "x", "x1", 1),
            (NS_B, "y", "y1", 1),
            (NS_B, "plain-2", "p2", 1),
            (NS_A, "plain-4", "p4", 1),
            (NS_A, "fence", "f1", 1),
        ],
    )
    .await;
    assert_absent(&mut client, &[(NS_A, "z"), (NS_B, "w"), (NS_A, "valid")]).await;
}

#[tokio::test]
async fn puts_and_commits_on_one_key_in_one_batch_apply_in_request_order() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let results = batch(
        &mut client,
        vec![
            put_op(NS_A, "seq", "1", 0),
            commit_op(vec![
                put_mutation(NS_A, "seq", "2", 1),
                put_mutation(NS_B, "seq", "b1", 0),
            ]),
            put_op(NS_A, "seq", "3", 2),
            commit_op(vec![
                check_mutation(NS_A, "seq", 3),
                delete_mutation(NS_B, "seq", 1),
            ]),
        ],
    )
    .await
    .unwrap();

    assert_ok(&results[0], 1, &[], "put seq expecting 0");
    assert_ok(
        &results[1],
        0,
        &[2, 1],
        "a commit expecting the put before it",
    );
    assert_ok(
        &results[2],
        3,
        &[],
        "put seq expecting the commit before it",
    );
    assert_ok(
        &results[3],
        0,
        &[3, 0],
        "a commit checking the put before it",
    );
    assert_stored(&mut client, &[(NS_A, "seq", "3", 3)]).await;
    assert_absent(&mut client, &[(NS_B, "seq")]).await;
}
