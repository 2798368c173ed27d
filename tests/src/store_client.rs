//! One-line calls for the store API, so tests say what they do rather than build messages.
//!
//! Commit's mutations are built with [`put_mutation`], [`delete_mutation`] and
//! [`check_mutation`] and sent with [`commit`].

use proto::store::v1::{
    Check, CommitRequest, DeleteRequest, Entry, GetRequest, GetResponse, Mutation, PutRequest,
    ScanRequest, ScanResponse, mutation::Kind,
};
use tokio::task::JoinSet;
use tonic::{Code, Status};

use crate::store::StoreClient;

/// How many writes [`put_all`] keeps in flight: enough to share flushes, few enough that a small
/// queue is never overrun by a test that is not about backpressure.
const PUT_ALL_CONCURRENCY: usize = 8;

/// Upper bound on the pages [`scan_all`] follows, so a server that never ends a scan fails the
/// test instead of looping forever.
const MAX_SCAN_PAGES: usize = 10_000;

/// Puts `value` at `key` if its current version is `expected_version`; the new version.
pub async fn put(
    client: &mut StoreClient,
    namespace: &str,
    key: &str,
    value: impl Into<Vec<u8>>,
    expected_version: u64,
) -> Result<u64, Status> {
    let request = PutRequest {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        value: value.into(),
        expected_version,
    };
    Ok(client.put(request).await?.into_inner().version)
}

/// Gets `key`: NOT_FOUND as an error.
pub async fn get(
    client: &mut StoreClient,
    namespace: &str,
    key: &str,
) -> Result<GetResponse, Status> {
    let request = GetRequest {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
    };
    Ok(client.get(request).await?.into_inner())
}

/// Gets `key`: NOT_FOUND as `None`.
pub async fn lookup(
    client: &mut StoreClient,
    namespace: &str,
    key: &str,
) -> Result<Option<GetResponse>, Status> {
    match get(client, namespace, key).await {
        Ok(found) => Ok(Some(found)),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

/// Deletes `key` if its current version is `expected_version`.
pub async fn delete(
    client: &mut StoreClient,
    namespace: &str,
    key: &str,
    expected_version: u64,
) -> Result<(), Status> {
    let request = DeleteRequest {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        expected_version,
    };
    client.delete(request).await.map(|_| ())
}

/// One page of a scan.
pub async fn scan_page(
    client: &mut StoreClient,
    namespace: &str,
    prefix: &str,
    page_size: i32,
    page_token: &str,
) -> Result<ScanResponse, Status> {
    let request = ScanRequest {
        namespace: namespace.to_owned(),
        prefix: prefix.to_owned(),
        page_size,
        page_token: page_token.to_owned(),
    };
    Ok(client.scan(request).await?.into_inner())
}

/// A whole scan, page after page; also how many pages it took.
pub async fn scan_all(
    client: &mut StoreClient,
    namespace: &str,
    prefix: &str,
    page_size: i32,
) -> Result<(Vec<Entry>, usize), Status> {
    let mut entries = Vec::new();
    let mut token = String::new();
    for pages in 1..=MAX_SCAN_PAGES {
        let page = scan_page(client, namespace, prefix, page_size, &token).await?;
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok((entries, pages));
        }
        token = page.next_page_token;
    }
    panic!("scan of {namespace}/{prefix}* did not end within {MAX_SCAN_PAGES} pages");
}

/// Creates every `(key, value)` (expected version 0), a few at a time; the first error wins.
pub async fn put_all(
    client: &StoreClient,
    namespace: &str,
    entries: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<(), Status> {
    let mut in_flight = JoinSet::new();
    for (key, value) in entries {
        if in_flight.len() >= PUT_ALL_CONCURRENCY
            && let Some(done) = in_flight.join_next().await
        {
            done.expect("put task panicked")?;
        }
        let mut client = client.clone();
        let namespace = namespace.to_owned();
        in_flight.spawn(async move { put(&mut client, &namespace, &key, value, 0).await });
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("put task panicked")?;
    }
    Ok(())
}

/// Applies `mutations` all or nothing; each one's version (the version a put made, 0 for a
/// delete, the checked version for a check), after checking there is one per mutation.
pub async fn commit(
    client: &mut StoreClient,
    mutations: Vec<Mutation>,
) -> Result<Vec<u64>, Status> {
    let sent = mutations.len();
    let versions = client
        .commit(CommitRequest { mutations })
        .await?
        .into_inner()
        .versions;
    assert_eq!(
        versions.len(),
        sent,
        "Commit must answer one version per mutation: {versions:?}"
    );
    Ok(versions)
}

/// A commit's put of `value` at `key`, if the key is at `expected_version` (0: absent).
pub fn put_mutation(
    namespace: &str,
    key: &str,
    value: impl Into<Vec<u8>>,
    expected_version: u64,
) -> Mutation {
    Mutation {
        kind: Some(Kind::Put(PutRequest {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value: value.into(),
            expected_version,
        })),
    }
}

/// A commit's delete of `key`, if it is at `expected_version` (0: absent, a no-op).
pub fn delete_mutation(namespace: &str, key: &str, expected_version: u64) -> Mutation {
    Mutation {
        kind: Some(Kind::Delete(DeleteRequest {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            expected_version,
        })),
    }
}

/// A commit's fence: writes nothing, but the commit applies only if `key` is at `version`
/// (0: absent).
pub fn check_mutation(namespace: &str, key: &str, version: u64) -> Mutation {
    Mutation {
        kind: Some(Kind::Check(Check {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            version,
        })),
    }
}
