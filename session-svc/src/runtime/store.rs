//! session-svc's client of store-svc: one shared channel, every call bounded by the caller's
//! deadline, which also travels to the store (relative and absolute) so the store drops work
//! whose caller has already given up.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use kit::deadline::{ABSOLUTE_HEADER, Deadline};
use proto::store::v1::{
    CommitRequest, DeleteRequest, Entry, GetRequest, Mutation, PutRequest, ScanRequest, Write,
    mutation::Kind, store_service_client::StoreServiceClient, write::Operation,
};
use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use super::{
    batcher::{BatchSettings, BatchStats, Batcher, outcome_unknown, store_deadline},
    link::StoreLink,
};
use crate::{cluster::Fence, error::Error};

/// How long opening a connection to the store may take before calls fail UNAVAILABLE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A cheap, cloneable handle on store-svc. The channel reconnects by itself, so a store that
/// comes back is used again without restarting session-svc.
#[derive(Clone, Debug)]
pub struct Store {
    /// Where records live.
    backend: Backend,
    /// How long its calls take, answered or not (GetStats' store p50 and p99).
    latency: Arc<super::latency::Latency>,
    /// Several replicas: the shard epoch every commit through this handle checks
    /// ([`Store::fenced`]); `None` for the shared handle.
    fence: Option<Fence>,
}

#[derive(Clone, Debug)]
enum Backend {
    /// store-svc; tonic multiplexes every actor's calls over one HTTP/2 connection. Writes go
    /// through the batcher when there is one, else one Put or Delete call each.
    Remote(StoreServiceClient<Channel>, Option<Batcher>, Arc<StoreLink>),
    /// A map in this process with the same version rules: for runtime unit tests and the
    /// in-process actor-memory benchmark, never for a server.
    Memory(Arc<Mutex<MemoryMap>>),
}

/// A stored record: its bytes and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The bytes.
    pub value: Vec<u8>,
    /// The store's version of them.
    pub version: u64,
}

impl Store {
    /// A client of the store at `addr` (`http://host:port`, or `https://host:port` with `tls`,
    /// whose server name is `host`). Connects on first use. Writes are batched with
    /// `batching`, or sent one call each when it is `None`.
    pub fn connect_lazy(
        addr: &str,
        tls: Option<ClientTlsConfig>,
        batching: Option<BatchSettings>,
    ) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("bad store address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = tls {
            endpoint = kit::tls::apply_client(endpoint, tls).map_err(|e| e.to_string())?;
        }
        let client = StoreServiceClient::new(endpoint.connect_lazy());
        let link = Arc::new(StoreLink::new(addr));
        let batcher =
            batching.map(|settings| Batcher::spawn(client.clone(), settings, link.clone()));
        Ok(Self {
            backend: Backend::Remote(client, batcher, link),
            latency: Arc::default(),
            fence: None,
        })
    }

    /// What the write batcher has sent, if writes are batched.
    pub fn batch_stats(&self) -> Option<Arc<BatchStats>> {
        match &self.backend {
            Backend::Remote(_, Some(batcher), _) => Some(batcher.stats().clone()),
            _ => None,
        }
    }

    /// A store inside this process (tests and benchmarks only): nothing is durable.
    pub fn in_memory() -> Self {
        Self {
            backend: Backend::Memory(Arc::default()),
            latency: Arc::default(),
            fence: None,
        }
    }

    /// How long this store's calls take.
    pub fn latency(&self) -> &Arc<super::latency::Latency> {
        &self.latency
    }

    /// The record at `namespace/key`, or `None`.
    pub async fn get(
        &self,
        namespace: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Stored>, Error> {
        let start = std::time::Instant::now();
        let got = self.get_call(namespace, key, deadline).await;
        self.latency.record(start.elapsed());
        got
    }

    /// One page of `namespace`'s records whose keys start with `prefix`, after `page_token`,
    /// and the token of the next page ("" after the last).
    pub async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
        page_size: i32,
        page_token: String,
        deadline: Deadline,
    ) -> Result<(Vec<Entry>, String), Error> {
        let start = std::time::Instant::now();
        let page = self
            .scan_call(namespace, prefix, page_size, page_token, deadline)
            .await;
        self.latency.record(start.elapsed());
        page
    }

    /// This store, with every commit checking `fence` (an actor's writes under its shard's
    /// lease); the same handle when `fence` is `None`.
    pub fn fenced(&self, fence: Option<Fence>) -> Self {
        Self {
            fence,
            ..self.clone()
        }
    }

    /// Applies `mutations` all or nothing; the new version of each. With a fence
    /// ([`Store::fenced`]), the commit also checks it.
    pub async fn commit(
        &self,
        mutations: Vec<Mutation>,
        deadline: Deadline,
    ) -> Result<Vec<u64>, Error> {
        self.commit_fenced(mutations, self.fence, deadline).await
    }

    /// Applies `mutations` all or nothing, and only while `fence` (if any) holds: the shard's
    /// owner record is still at the fence's version. SHARD_MOVED when the fence failed: the
    /// shard changed hands, and nothing was applied.
    pub async fn commit_fenced(
        &self,
        mut mutations: Vec<Mutation>,
        fence: Option<Fence>,
        deadline: Deadline,
    ) -> Result<Vec<u64>, Error> {
        if let Some(fence) = fence {
            mutations.push(crate::cluster::lease::check(fence.key(), fence.version));
        }
        let start = std::time::Instant::now();
        let committed = self.commit_call(mutations, deadline).await;
        self.latency.record(start.elapsed());
        let Some(fence) = fence else {
            return committed;
        };
        match committed {
            Ok(mut versions) => {
                versions.pop();
                Ok(versions)
            }
            // A conflict: the fence's, or one of the writes'? The owner record tells.
            Err(Error::Aborted(message)) => {
                let owner = self
                    .get(crate::cluster::NAMESPACE, &fence.key(), deadline)
                    .await;
                match owner {
                    Ok(owner) if owner.as_ref().map(|o| o.version) != Some(fence.version) => {
                        Err(Error::ShardMoved(format!(
                            "shard {} changed hands (epoch {} is over): this replica may no \
                             longer write its keys",
                            fence.shard, fence.version
                        )))
                    }
                    _ => Err(Error::Aborted(message)),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The record at `namespace/key`, or `None`.
    async fn get_call(
        &self,
        namespace: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Stored>, Error> {
        let (mut client, link) = match &self.backend {
            Backend::Remote(client, _, link) => (client.clone(), link),
            Backend::Memory(map) => {
                expired(deadline)?;
                return Ok(lock(map).get(namespace).and_then(|ns| ns.get(key)).cloned());
            }
        };
        let request = GetRequest {
            namespace: namespace.into(),
            key: key.into(),
        };
        match call(
            link,
            deadline,
            client.get(bounded(request, deadline)),
            false,
        )
        .await
        {
            Ok(response) => Ok(Some(Stored {
                value: response.value,
                version: response.version,
            })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::from_store(&status)),
        }
    }

    /// One page of the records of `namespace` whose keys start with `prefix`, after the
    /// page `page_token` ended (empty: the first page), and the token of the next page
    /// (empty: none). `page_size` 0 is the store's default.
    async fn scan_call(
        &self,
        namespace: &str,
        prefix: &str,
        page_size: i32,
        page_token: String,
        deadline: Deadline,
    ) -> Result<(Vec<Entry>, String), Error> {
        let (mut client, link) = match &self.backend {
            Backend::Remote(client, _, link) => (client.clone(), link),
            Backend::Memory(map) => {
                expired(deadline)?;
                return Ok(memory_scan(
                    &lock(map),
                    namespace,
                    prefix,
                    page_size,
                    &page_token,
                ));
            }
        };
        let request = ScanRequest {
            namespace: namespace.into(),
            prefix: prefix.into(),
            page_size,
            page_token,
        };
        match call(
            link,
            deadline,
            client.scan(bounded(request, deadline)),
            false,
        )
        .await
        {
            Ok(page) => Ok((page.entries, page.next_page_token)),
            // Only the page token comes from session-svc's client; any other refusal (an
            // unserved namespace, say) is the store's answer to session-svc itself.
            Err(status)
                if status.code() == Code::InvalidArgument
                    && status.message().contains("page_token") =>
            {
                Err(Error::invalid(
                    "page_token",
                    "is not a token this server issued for this listing; pass next_page_token \
                 unchanged, or empty for the first page",
                ))
            }
            Err(status) => Err(Error::from_store(&status)),
        }
    }

    /// Applies `mutations` all or nothing ([`CommitRequest`]); each one's version. ABORTED
    /// when any expected version does not match, and then nothing was applied.
    async fn commit_call(
        &self,
        mutations: Vec<Mutation>,
        deadline: Deadline,
    ) -> Result<Vec<u64>, Error> {
        let commit = CommitRequest { mutations };
        match &self.backend {
            Backend::Remote(_, Some(batcher), _) => {
                let write = Write {
                    operation: Some(Operation::Commit(commit)),
                    deadline_unix_ms: 0,
                };
                batcher
                    .write(write, deadline)
                    .await
                    .map_err(|status| Error::from_store(&status))
            }
            Backend::Remote(client, None, link) => {
                let store = store_deadline(deadline);
                call(
                    link,
                    deadline,
                    client.clone().commit(bounded(commit, store)),
                    true,
                )
                .await
                .map(|response| response.versions)
                .map_err(|status| Error::from_store(&status))
            }
            Backend::Memory(map) => {
                expired(deadline)?;
                memory_commit(&mut lock(map), commit.mutations)
            }
        }
    }
}

/// The in-memory store: namespace → key → record, ordered like store-svc's keys.
type MemoryMap = HashMap<String, BTreeMap<String, Stored>>;

/// A Put (`value` set) or Delete of a commit, expecting the key at `expected` (0: absent).
pub fn mutation(
    namespace: impl Into<String>,
    key: impl Into<String>,
    value: Option<Vec<u8>>,
    expected: u64,
) -> Mutation {
    let (namespace, key) = (namespace.into(), key.into());
    Mutation {
        kind: Some(match value {
            Some(value) => Kind::Put(PutRequest {
                namespace,
                key,
                value,
                expected_version: expected,
            }),
            None => Kind::Delete(DeleteRequest {
                namespace,
                key,
                expected_version: expected,
            }),
        }),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn expired(deadline: Deadline) -> Result<(), Error> {
    if deadline.expired() {
        Err(Error::DeadlineExceeded(
            "no time left to call the store".into(),
        ))
    } else {
        Ok(())
    }
}

/// The in-memory store's Commit: every version checked, then every change applied.
fn memory_commit(map: &mut MemoryMap, mutations: Vec<Mutation>) -> Result<Vec<u64>, Error> {
    let target = |m: &Mutation| match &m.kind {
        Some(Kind::Put(p)) => Some((p.namespace.clone(), p.key.clone(), p.expected_version)),
        Some(Kind::Delete(d)) => Some((d.namespace.clone(), d.key.clone(), d.expected_version)),
        Some(Kind::Check(c)) => Some((c.namespace.clone(), c.key.clone(), c.version)),
        None => None,
    };
    let mut versions = Vec::with_capacity(mutations.len());
    for mutation in &mutations {
        let (namespace, key, expected) =
            target(mutation).ok_or_else(|| Error::invalid("mutations", "empty mutation"))?;
        let current = map
            .get(&namespace)
            .and_then(|records| records.get(&key))
            .map_or(0, |s| s.version);
        if current != expected {
            return Err(Error::Aborted(format!(
                "version conflict on {namespace}/{}: expected version {expected}, current \
                 version {current}",
                kit::echo::echo(&key)
            )));
        }
        versions.push(match mutation.kind {
            Some(Kind::Put(_)) => current + 1,
            Some(Kind::Delete(_)) => 0,
            _ => current,
        });
    }
    for (mutation, version) in mutations.into_iter().zip(&versions) {
        match mutation.kind {
            Some(Kind::Put(put)) => {
                let stored = Stored {
                    value: put.value,
                    version: *version,
                };
                map.entry(put.namespace)
                    .or_default()
                    .insert(put.key, stored);
            }
            Some(Kind::Delete(delete)) => {
                if let Some(records) = map.get_mut(&delete.namespace) {
                    records.remove(&delete.key);
                }
            }
            _ => {}
        }
    }
    Ok(versions)
}

/// The in-memory store's Scan; its page token is the last key served.
fn memory_scan(
    map: &MemoryMap,
    namespace: &str,
    prefix: &str,
    page_size: i32,
    page_token: &str,
) -> (Vec<Entry>, String) {
    let Some(records) = map.get(namespace) else {
        return (Vec::new(), String::new());
    };
    let limit = if page_size <= 0 {
        100
    } else {
        page_size as usize
    };
    let start = if page_token.is_empty() {
        Bound::Included(prefix.to_string())
    } else {
        Bound::Excluded(page_token.to_string())
    };
    let mut entries: Vec<Entry> = records
        .range((start, Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(prefix))
        .take(limit + 1)
        .map(|(key, stored)| Entry {
            key: key.clone(),
            value: stored.value.clone(),
            version: stored.version,
        })
        .collect();
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.key.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    (entries, next)
}

/// A request carrying the deadline both ways the store understands, and the trace context of
/// the request it is made for (the current span's, when tracing is on), so store-svc's span
/// of the call is a child of the span that made it.
pub(super) fn bounded<T>(message: T, deadline: Deadline) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline.remaining());
    if let Ok(value) = MetadataValue::try_from(deadline.unix_ms().to_string()) {
        request.metadata_mut().insert(ABSOLUTE_HEADER, value);
    }
    kit::trace::inject_current(request.metadata_mut());
    request
}

/// Runs a store call, giving up at the deadline even if the store or the network hangs. A
/// `write` that got no answer in time may have been applied: that is reported as such, never
/// as DEADLINE_EXCEEDED.
pub(super) async fn call<T>(
    link: &StoreLink,
    deadline: Deadline,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    write: bool,
) -> Result<T, tonic::Status> {
    if deadline.expired() {
        return Err(tonic::Status::deadline_exceeded(
            "no time left to call the store",
        ));
    }
    let ticket = link.ticket();
    match tokio::time::timeout_at(deadline.instant(), call).await {
        Ok(Err(status)) => {
            let status = link.failed(ticket, &status, write);
            if status.code() == Code::Cancelled && !deadline.expired() {
                return Err(tonic::Status::unavailable(format!(
                    "the call to store-svc at {} was cancelled: {}",
                    link.addr(),
                    status.message()
                )));
            }
            Err(status)
        }
        Ok(Ok(response)) => {
            link.answered(ticket);
            Ok(response.into_inner())
        }
        Err(_) if write => Err(outcome_unknown(
            "the store did not answer before the deadline",
        )),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "the store did not answer before the deadline",
        )),
    }
}
