//! Get / Put / Delete / Scan: what each call returns, with versions and pagination.

use tests::{
    StoreOptions, spawn_store_and_client,
    status::expect_code,
    store_client::{delete, get, put, put_all, scan_all, scan_page},
};
use tonic::Code;

const NS: &str = "api";

/// `count` keys `{prefix}{i:04}` whose value names the key, in key order.
fn numbered(prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let key = format!("{prefix}{i:04}");
            let value = format!("value of {key}").into_bytes();
            (key, value)
        })
        .collect()
}

#[tokio::test]
async fn get_of_a_key_never_written_is_not_found() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    expect_code(
        get(&mut client, NS, "missing").await,
        Code::NotFound,
        "Get of a missing key",
    );
}

#[tokio::test]
async fn the_first_put_creates_version_one_and_each_write_adds_one() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    assert_eq!(put(&mut client, NS, "counter", "one", 0).await.unwrap(), 1);
    assert_eq!(put(&mut client, NS, "counter", "two", 1).await.unwrap(), 2);
    assert_eq!(
        put(&mut client, NS, "counter", "three", 2).await.unwrap(),
        3
    );

    let stored = get(&mut client, NS, "counter").await.unwrap();
    assert_eq!(
        (stored.value.as_slice(), stored.version),
        (&b"three"[..], 3)
    );
}

#[tokio::test]
async fn values_round_trip_byte_for_byte() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let every_byte: Vec<u8> = (0..=255).collect();

    put(&mut client, NS, "binary", every_byte.clone(), 0)
        .await
        .unwrap();
    put(&mut client, NS, "empty", Vec::new(), 0).await.unwrap();

    assert_eq!(
        get(&mut client, NS, "binary").await.unwrap().value,
        every_byte
    );
    let empty = get(&mut client, NS, "empty").await.unwrap();
    assert_eq!((empty.value.len(), empty.version), (0, 1));
}

#[tokio::test]
async fn delete_removes_the_key_and_a_new_put_starts_again_at_version_one() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS, "doomed", "v1", 0).await.unwrap();
    put(&mut client, NS, "doomed", "v2", 1).await.unwrap();

    delete(&mut client, NS, "doomed", 2).await.unwrap();

    expect_code(
        get(&mut client, NS, "doomed").await,
        Code::NotFound,
        "Get after Delete",
    );
    assert_eq!(
        put(&mut client, NS, "doomed", "reborn", 0).await.unwrap(),
        1
    );
    assert_eq!(
        get(&mut client, NS, "doomed").await.unwrap().value,
        b"reborn"
    );
}

#[tokio::test]
async fn namespaces_keep_the_same_key_apart() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    put(&mut client, "tenant-a", "shared", "a", 0)
        .await
        .unwrap();
    put(&mut client, "tenant_b", "shared", "b1", 0)
        .await
        .unwrap();
    put(&mut client, "tenant_b", "shared", "b2", 1)
        .await
        .unwrap();

    let a = get(&mut client, "tenant-a", "shared").await.unwrap();
    let b = get(&mut client, "tenant_b", "shared").await.unwrap();
    assert_eq!((a.value.as_slice(), a.version), (&b"a"[..], 1));
    assert_eq!((b.value.as_slice(), b.version), (&b"b2"[..], 2));
    let (only_a, _) = scan_all(&mut client, "tenant-a", "", 0).await.unwrap();
    assert_eq!(only_a.len(), 1);
}

#[tokio::test]
async fn scan_returns_only_keys_with_the_prefix_in_key_order_with_values_and_versions() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    // Written out of order, and around the prefix: "user" and "users" must not match "user/".
    for key in [
        "user/b", "admin", "user/a", "users", "user", "user/c/1", "zebra",
    ] {
        put(&mut client, NS, key, format!("value of {key}"), 0)
            .await
            .unwrap();
    }
    put(&mut client, NS, "user/a", "value of user/a, again", 1)
        .await
        .unwrap();

    let (entries, pages) = scan_all(&mut client, NS, "user/", 0).await.unwrap();

    assert_eq!(pages, 1);
    let seen: Vec<(&str, &[u8], u64)> = entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice(), e.version))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("user/a", &b"value of user/a, again"[..], 2),
            ("user/b", &b"value of user/b"[..], 1),
            ("user/c/1", &b"value of user/c/1"[..], 1),
        ]
    );
}

#[tokio::test]
async fn scan_with_an_empty_prefix_lists_the_whole_namespace_in_byte_order() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let keys = ["b", "a", "B", "aa", "é", "a b", "0"];
    for key in keys {
        put(&mut client, NS, key, "x", 0).await.unwrap();
    }

    let (entries, _) = scan_all(&mut client, NS, "", 0).await.unwrap();

    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort(); // str ordering is UTF-8 byte ordering, as sled's
    let listed: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(listed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_through_more_than_one_page_without_gaps_or_repeats() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let written = numbered("item/", 250);
    put_all(&client, NS, written.clone()).await.unwrap();

    let first = scan_page(&mut client, NS, "item/", 100, "").await.unwrap();
    let (entries, pages) = scan_all(&mut client, NS, "item/", 100).await.unwrap();

    assert_eq!(first.entries.len(), 100);
    assert!(
        !first.next_page_token.is_empty(),
        "a full first page must offer a next page"
    );
    assert_eq!(pages, 3, "250 entries at 100 per page");
    let listed: Vec<(String, Vec<u8>)> = entries.into_iter().map(|e| (e.key, e.value)).collect();
    assert_eq!(listed, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_page_size_zero_means_pages_of_100() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put_all(&client, NS, numbered("k", 150)).await.unwrap();

    let first = scan_page(&mut client, NS, "", 0, "").await.unwrap();
    let second = scan_page(&mut client, NS, "", 0, &first.next_page_token)
        .await
        .unwrap();

    assert_eq!(first.entries.len(), 100);
    assert_eq!(second.entries.len(), 50);
    assert!(
        second.next_page_token.is_empty(),
        "the last page must end the scan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_page_size_above_1000_is_capped_at_1000() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put_all(&client, NS, numbered("k", 1010)).await.unwrap();

    let first = scan_page(&mut client, NS, "", i32::MAX, "").await.unwrap();
    let second = scan_page(&mut client, NS, "", 5000, &first.next_page_token)
        .await
        .unwrap();

    assert_eq!(first.entries.len(), 1000);
    assert_eq!(second.entries.len(), 10);
    assert_eq!(second.entries[0].key, "k1000");
}

#[tokio::test]
async fn scan_of_a_namespace_never_written_is_empty() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let page = scan_page(&mut client, "never-written", "", 0, "")
        .await
        .unwrap();

    assert!(page.entries.is_empty());
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn deleted_keys_disappear_from_scan() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    for key in ["a", "b", "c"] {
        put(&mut client, NS, key, "x", 0).await.unwrap();
    }

    delete(&mut client, NS, "b", 1).await.unwrap();

    let (entries, _) = scan_all(&mut client, NS, "", 0).await.unwrap();
    let listed: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(listed, ["a", "c"]);
}
