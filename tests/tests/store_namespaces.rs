//! Namespaces are configuration, not caller input (DESIGN.md, Security): store-svc serves the
//! namespaces of `--namespaces` (by default session-svc's), refuses every request naming
//! another with INVALID_ARGUMENT naming the field, and nothing a caller sends creates a tree.

use std::time::Duration;

use proto::store::v1::{BatchWriteRequest, DeleteRequest, GetRequest, ScanRequest, Write, write};
use tempfile::TempDir;
use tests::{
    SessionOptions, StoreOptions,
    session_client::{add_item, checkout, poll_until, start},
    spawn_session, spawn_store_and_client, spawn_store_at, spawn_store_with,
    status::assert_invalid_argument_naming,
    store_client::{check_mutation, commit, get, put, put_mutation},
};
use tokio::task::JoinSet;
use tonic::Code;

/// How many distinct junk namespaces the flood writes (twice the old namespace cap).
const JUNK_NAMESPACES: usize = 2_000;

/// The warning a store logs at start-up when its data directory holds unconfigured trees.
const UNSERVED_WARNING: &str = "namespaces that are not configured";

#[test]
fn store_svcs_default_namespaces_are_exactly_the_ones_session_svc_uses() {
    let mut store: Vec<&str> = store_svc::namespaces::DEFAULT_NAMESPACES
        .split(',')
        .collect();
    let mut session = session_svc::STORE_NAMESPACES.to_vec();
    store.sort_unstable();
    session.sort_unstable();
    assert_eq!(
        store, session,
        "store-svc's --namespaces default must list every namespace session-svc uses"
    );
}

#[tokio::test]
async fn every_request_naming_an_unconfigured_namespace_is_invalid_argument_naming_the_field() {
    let (_store, mut client) =
        spawn_store_and_client(StoreOptions::new().namespaces(&["served"])).await;

    let refused = put(&mut client, "junk", "k", "v", 0).await;
    let status = refused.as_ref().unwrap_err();
    assert!(
        status.message().contains("\"served\""),
        "the message lists the namespaces served: {status:?}"
    );
    assert_invalid_argument_naming(refused, "namespace", "Put");
    assert_invalid_argument_naming(get(&mut client, "junk", "k").await, "namespace", "Get");
    let delete = DeleteRequest {
        namespace: "junk".into(),
        key: "k".into(),
        expected_version: 0,
    };
    assert_invalid_argument_naming(client.delete(delete).await, "namespace", "Delete");
    let scan = ScanRequest {
        namespace: "junk".into(),
        ..Default::default()
    };
    assert_invalid_argument_naming(client.scan(scan).await, "namespace", "Scan");
    assert_invalid_argument_naming(
        commit(
            &mut client,
            vec![
                put_mutation("served", "k", "v", 0),
                check_mutation("junk", "k", 0),
            ],
        )
        .await,
        "mutations[1].check.namespace",
        "Commit",
    );

    let put_junk = |namespace: &str| Write {
        operation: Some(write::Operation::Put(proto::store::v1::PutRequest {
            namespace: namespace.into(),
            key: "k".into(),
            value: b"v".to_vec(),
            expected_version: 0,
        })),
        deadline_unix_ms: 0,
    };
    let batch = BatchWriteRequest {
        writes: vec![put_junk("served"), put_junk("junk")],
    };
    let results = client
        .batch_write(batch)
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results[0].code, Code::Ok as i32, "{results:?}");
    assert_eq!(results[1].code, Code::InvalidArgument as i32, "{results:?}");
    assert!(
        results[1].message.starts_with("writes[1].put.namespace: "),
        "{results:?}"
    );
    assert_eq!(get(&mut client, "served", "k").await.unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_namespaces_is_refused_creates_nothing_and_session_svc_keeps_working() {
    let data = TempDir::with_prefix("store-namespaces-").unwrap();
    // As deployed: no --namespaces, so the store serves its defaults.
    let mut store = spawn_store_with(
        StoreOptions::new()
            .default_namespaces()
            .data_dir(data.path()),
    )
    .await;
    let store_addr = store.addr();
    assert!(
        !store.stderr_tail(50).contains(UNSERVED_WARNING),
        "a fresh store warns of nothing"
    );
    let session = spawn_session(&store.endpoint(), SessionOptions::new()).await;
    let mut cart = session.cart().await;
    start(&mut cart, "before").await.unwrap();

    let client = store.client().await.unwrap();
    let mut flood = JoinSet::new();
    for worker in 0..16 {
        let mut client = client.clone();
        flood.spawn(async move {
            let mut codes = Vec::new();
            for n in (worker..JUNK_NAMESPACES).step_by(16) {
                let outcome = put(&mut client, &format!("junk-{n}"), "k", "v", 0).await;
                codes.push(outcome.map_err(|status| status.code()));
            }
            codes
        });
    }
    let codes: Vec<_> = flood.join_all().await.into_iter().flatten().collect();
    assert_eq!(codes.len(), JUNK_NAMESPACES);
    assert!(
        codes.iter().all(|code| *code == Err(Code::InvalidArgument)),
        "every junk Put is INVALID_ARGUMENT: {:?}",
        codes
            .iter()
            .find(|code| **code != Err(Code::InvalidArgument))
    );

    start(&mut cart, "after-flood").await.unwrap();
    add_item(&mut cart, "after-flood", "A", 2, 150)
        .await
        .unwrap();
    checkout(&mut cart, "after-flood").await.unwrap();

    store.terminate().await.unwrap();
    assert!(store.wait().await.unwrap().success());
    let store = spawn_store_at(store_addr, data.path()).await;
    assert!(
        !store.stderr_tail(50).contains(UNSERVED_WARNING),
        "the flood left no tree behind:\n{}",
        store.stderr_tail(50)
    );
    let reconnected = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let mut cart = cart.clone();
        async move {
            match start(&mut cart, "after-restart").await {
                Err(status) if status.code() == Code::Unavailable => None,
                other => Some(other),
            }
        }
    })
    .await
    .expect("session-svc reaches the restarted store");
    reconnected.unwrap();
    add_item(&mut cart, "after-restart", "A", 1, 150)
        .await
        .unwrap();
    checkout(&mut cart, "after-restart").await.unwrap();
}

#[tokio::test]
async fn trees_no_longer_configured_are_named_at_start_up_and_keep_their_data() {
    let data = TempDir::with_prefix("store-namespaces-").unwrap();
    let options = || StoreOptions::new().data_dir(data.path());
    {
        let (mut store, mut client) =
            spawn_store_and_client(options().namespaces(&["kept", "retired"])).await;
        put(&mut client, "retired", "k", "old data", 0)
            .await
            .unwrap();
        store.terminate().await.unwrap();
        store.wait().await.unwrap();
    }
    {
        let (mut store, mut client) = spawn_store_and_client(options().namespaces(&["kept"])).await;
        let log = store.stderr_tail(50);
        assert!(log.contains(UNSERVED_WARNING), "{log}");
        assert!(log.contains("retired"), "{log}");
        assert_invalid_argument_naming(
            get(&mut client, "retired", "k").await,
            "namespace",
            "Get of a retired namespace",
        );
        store.terminate().await.unwrap();
        store.wait().await.unwrap();
    }
    let (_store, mut client) =
        spawn_store_and_client(options().namespaces(&["kept", "retired"])).await;
    assert_eq!(
        get(&mut client, "retired", "k").await.unwrap().value,
        b"old data"
    );
}

#[tokio::test]
async fn a_bad_namespace_list_is_a_start_up_error_naming_the_flag() {
    for list in ["cart,Orders", "cart,,orders", "a/b", "cart,cart"] {
        let started = tests::StoreProcess::spawn(StoreOptions::new().namespaces(&[list])).await;
        let error = format!("{:#}", started.expect_err(list));
        assert!(error.contains("--namespaces"), "{list:?}: {error}");
    }
}

#[tokio::test]
async fn the_default_namespaces_are_served_without_any_flag() {
    let (_store, mut client) =
        spawn_store_and_client(StoreOptions::new().default_namespaces()).await;
    for namespace in session_svc::STORE_NAMESPACES {
        let request = GetRequest {
            namespace: (*namespace).into(),
            key: "absent".into(),
        };
        let status = client.get(request).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{namespace}: {status:?}");
    }
}
