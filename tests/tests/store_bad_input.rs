//! Bad input: every field's limits answer INVALID_ARGUMENT naming the field, limits themselves
//! are accepted, and the server keeps serving.

use tests::{
    StoreClient, StoreOptions, spawn_store_and_client,
    status::assert_invalid_argument_naming,
    store_client::{delete, get, put, put_all, scan_page},
};

const NS: &str = "bad-input";

/// The server's default `--max-value-bytes` (1 MiB).
const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Keys that break a rule: empty, too long in bytes (even when short in characters), or
/// holding control characters.
fn bad_keys() -> Vec<(&'static str, String)> {
    vec![
        ("an empty key", String::new()),
        ("a 1025-byte key", "k".repeat(1025)),
        (
            "a 1025-byte key of 513 characters",
            format!("{}a", "é".repeat(512)),
        ),
        ("a key with a NUL", "a\0b".to_owned()),
        ("a key with a newline", "a\nb".to_owned()),
        ("a key with a tab", "\tkey".to_owned()),
        ("a key with DEL", "key\u{7f}".to_owned()),
        ("a key with a C1 control", "key\u{85}".to_owned()),
    ]
}

/// Namespaces outside `[a-z0-9_-]{1,64}`.
fn bad_namespaces() -> Vec<(&'static str, String)> {
    vec![
        ("an empty namespace", String::new()),
        ("an uppercase namespace", "Users".to_owned()),
        ("a 65-character namespace", "n".repeat(65)),
        ("a namespace with a slash", "a/b".to_owned()),
        ("a namespace with a space", "a b".to_owned()),
        ("a namespace with a dot", "a.b".to_owned()),
        ("a non-ASCII namespace", "café".to_owned()),
    ]
}

/// A valid write and read still work: bad input must never wedge or crash the server.
async fn assert_still_serving(client: &mut StoreClient, key: &str) {
    assert_eq!(put(client, NS, key, "fine", 0).await.unwrap(), 1);
    assert_eq!(get(client, NS, key).await.unwrap().value, b"fine");
}

#[tokio::test]
async fn invalid_keys_are_rejected_naming_the_key_field() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    for (case, key) in bad_keys() {
        assert_invalid_argument_naming(
            get(&mut client, NS, &key).await,
            "key",
            &format!("Get of {case}"),
        );
        assert_invalid_argument_naming(
            put(&mut client, NS, &key, "v", 0).await,
            "key",
            &format!("Put of {case}"),
        );
        assert_invalid_argument_naming(
            delete(&mut client, NS, &key, 0).await,
            "key",
            &format!("Delete of {case}"),
        );
    }

    assert_still_serving(&mut client, "after-bad-keys").await;
}

#[tokio::test]
async fn keys_at_the_limits_are_accepted() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    for key in [
        "k".to_owned(),
        "k".repeat(1024),
        "é".repeat(512),
        "ключ/日本語 with spaces".to_owned(),
    ] {
        assert_eq!(
            put(&mut client, NS, &key, "v", 0).await.unwrap(),
            1,
            "{key:?}"
        );
        assert_eq!(
            get(&mut client, NS, &key).await.unwrap().version,
            1,
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn invalid_namespaces_are_rejected_naming_the_namespace_field() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    for (case, namespace) in bad_namespaces() {
        let ns = namespace.as_str();
        assert_invalid_argument_naming(
            get(&mut client, ns, "k").await,
            "namespace",
            &format!("Get in {case}"),
        );
        assert_invalid_argument_naming(
            put(&mut client, ns, "k", "v", 0).await,
            "namespace",
            &format!("Put in {case}"),
        );
        assert_invalid_argument_naming(
            delete(&mut client, ns, "k", 0).await,
            "namespace",
            &format!("Delete in {case}"),
        );
        assert_invalid_argument_naming(
            scan_page(&mut client, ns, "", 0, "").await,
            "namespace",
            &format!("Scan of {case}"),
        );
    }

    assert_still_serving(&mut client, "after-bad-namespaces").await;
}

#[tokio::test]
async fn namespaces_at_the_limits_are_accepted() {
    let longest = "n".repeat(64);
    let limits = ["a", &longest, "abc-xyz_0123456789"];
    let (_store, mut client) =
        spawn_store_and_client(StoreOptions::new().namespaces(&limits)).await;

    for namespace in limits {
        assert_eq!(
            put(&mut client, namespace, "k", "v", 0).await.unwrap(),
            1,
            "{namespace:?}"
        );
    }
}

#[tokio::test]
async fn a_value_over_the_default_limit_is_rejected_naming_the_value_field() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let too_big = vec![0u8; DEFAULT_MAX_VALUE_BYTES + 1];
    assert_invalid_argument_naming(
        put(&mut client, NS, "big", too_big, 0).await,
        "value",
        "a 1 MiB + 1 value",
    );

    let at_limit = vec![7u8; DEFAULT_MAX_VALUE_BYTES];
    assert_eq!(
        put(&mut client, NS, "big", at_limit.clone(), 0)
            .await
            .unwrap(),
        1
    );
    assert!(get(&mut client, NS, "big").await.unwrap().value == at_limit);
}

#[tokio::test]
async fn a_value_over_a_configured_limit_is_rejected_naming_the_value_field() {
    let (_store, mut client) =
        spawn_store_and_client(StoreOptions::new().max_value_bytes(1024)).await;

    assert_invalid_argument_naming(
        put(&mut client, NS, "k", vec![1u8; 1025], 0).await,
        "value",
        "a 1025-byte value",
    );

    assert_eq!(
        put(&mut client, NS, "k", vec![1u8; 1024], 0).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn a_negative_page_size_is_rejected_naming_page_size() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    for page_size in [-1, i32::MIN] {
        let scan = scan_page(&mut client, NS, "", page_size, "").await;
        assert_invalid_argument_naming(scan, "page_size", &format!("page_size {page_size}"));
    }

    assert_still_serving(&mut client, "after-bad-page-size").await;
}

#[tokio::test]
async fn a_garbage_page_token_is_rejected_naming_page_token() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    put(&mut client, NS, "a", "v", 0).await.unwrap();

    for token in ["garbage", "%%%not base64%%%", "\u{0}", &"z".repeat(4096)] {
        let scan = scan_page(&mut client, NS, "", 10, token).await;
        assert_invalid_argument_naming(
            scan,
            "page_token",
            &format!("page_token {:?}", &token[..token.len().min(20)]),
        );
    }

    assert_still_serving(&mut client, "after-bad-tokens").await;
}

#[tokio::test]
async fn a_page_token_from_another_prefix_is_rejected_naming_page_token() {
    let (_store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let keys = ["a/1", "a/2", "a/3", "b/1", "b/2", "b/3"];
    put_all(&client, NS, keys.map(|key| (key.to_owned(), b"v".to_vec())))
        .await
        .unwrap();
    let first_of_a = scan_page(&mut client, NS, "a/", 1, "").await.unwrap();
    assert!(
        !first_of_a.next_page_token.is_empty(),
        "a one-entry page of three must continue"
    );

    let scan = scan_page(&mut client, NS, "b/", 1, &first_of_a.next_page_token).await;

    assert_invalid_argument_naming(
        scan,
        "page_token",
        "a token of prefix a/ used with prefix b/",
    );
    assert_still_serving(&mut client, "after-foreign-token").await;
}
