//! session-svc's client of store-svc: one shared channel, every call bounded by the caller's
//! deadline, which also travels to the store (relative and absolute) so the store drops work
//! whose caller has already given up.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use proto::store::v1::{
    DeleteRequest, GetRequest, PutRequest, Write, store_service_client::StoreServiceClient,
    write::Operation,
};
use store_svc::kit::deadline::{ABSOLUTE_HEADER, Deadline};
use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use super::batcher::{BatchSettings, BatchStats, Batcher, call_failure};
use crate::error::Error;

/// How long opening a connection to the store may take before calls fail UNAVAILABLE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A cheap, cloneable handle on store-svc. The channel reconnects by itself, so a store that
/// comes back is used again without restarting session-svc.
#[derive(Clone, Debug)]
pub struct Store {
    /// Where records live.
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    /// store-svc; tonic multiplexes every actor's calls over one HTTP/2 connection. Writes go
    /// through the batcher when there is one, else one Put or Delete call each.
    Remote(StoreServiceClient<Channel>, Option<Batcher>),
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
    /// A client of the store at `addr` (`http://host:port`). Connects on first use. Writes are
    /// batched with `batching`, or sent one call each when it is `None`.
    pub fn connect_lazy(addr: &str, batching: Option<BatchSettings>) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("bad store address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let client = StoreServiceClient::new(endpoint.connect_lazy());
        let batcher = batching.map(|settings| Batcher::spawn(client.clone(), settings));
        Ok(Self {
            backend: Backend::Remote(client, batcher),
        })
    }

    /// What the write batcher has sent, if writes are batched.
    pub fn batch_stats(&self) -> Option<Arc<BatchStats>> {
        match &self.backend {
            Backend::Remote(_, Some(batcher)) => Some(batcher.stats().clone()),
            _ => None,
        }
    }

    /// A store inside this process (tests and benchmarks only): nothing is durable.
    pub fn in_memory() -> Self {
        Self {
            backend: Backend::Memory(Arc::default()),
        }
    }

    /// The record at `namespace/key`, or `None`.
    pub async fn get(
        &self,
        namespace: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Stored>, Error> {
        let mut client = match &self.backend {
            Backend::Remote(client, _) => client.clone(),
            Backend::Memory(map) => {
                expired(deadline)?;
                return Ok(lock(map).get(namespace).and_then(|ns| ns.get(key)).cloned());
            }
        };
        let request = GetRequest {
            namespace: namespace.into(),
            key: key.into(),
        };
        match call(deadline, client.get(bounded(request, deadline))).await {
            Ok(response) => Ok(Some(Stored {
                value: response.value,
                version: response.version,
            })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::from_store(&status)),
        }
    }

    /// Writes `value` if the record is at `expected_version` (0: absent); the new version.
    pub async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        expected_version: u64,
        deadline: Deadline,
    ) -> Result<u64, Error> {
        let request = PutRequest {
            namespace: namespace.into(),
            key: key.into(),
            value,
            expected_version,
        };
        match &self.backend {
            Backend::Remote(_, Some(batcher)) => {
                batched(batcher, Operation::Put(request), deadline).await
            }
            Backend::Remote(client, None) => {
                call(deadline, client.clone().put(bounded(request, deadline)))
                    .await
                    .map(|response| response.version)
                    .map_err(|status| Error::from_store(&status))
            }
            Backend::Memory(map) => {
                expired(deadline)?;
                memory_write(map, namespace, key, expected_version, Some(request.value))
            }
        }
    }

    /// Deletes the record if it is at `expected_version`.
    pub async fn delete(
        &self,
        namespace: &str,
        key: &str,
        expected_version: u64,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let request = DeleteRequest {
            namespace: namespace.into(),
            key: key.into(),
            expected_version,
        };
        match &self.backend {
            Backend::Remote(_, Some(batcher)) => {
                batched(batcher, Operation::Delete(request), deadline)
                    .await
                    .map(drop)
            }
            Backend::Remote(client, None) => {
                call(deadline, client.clone().delete(bounded(request, deadline)))
                    .await
                    .map(drop)
                    .map_err(|status| Error::from_store(&status))
            }
            Backend::Memory(map) => {
                expired(deadline)?;
                memory_write(map, namespace, key, expected_version, None).map(drop)
            }
        }
    }
}

/// A write sent with the next batch.
async fn batched(
    batcher: &Batcher,
    operation: Operation,
    deadline: Deadline,
) -> Result<u64, Error> {
    let write = Write {
        operation: Some(operation),
        deadline_unix_ms: 0,
    };
    batcher
        .write(write, deadline)
        .await
        .map_err(|status| Error::from_store(&status))
}

/// The in-memory store: namespace → key → record (nested so lookups borrow, never allocate).
type MemoryMap = HashMap<String, HashMap<String, Stored>>;

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

/// The in-memory store's compare-and-swap: put `value`, or delete when it is `None`.
fn memory_write(
    map: &Mutex<MemoryMap>,
    namespace: &str,
    key: &str,
    expected_version: u64,
    value: Option<Vec<u8>>,
) -> Result<u64, Error> {
    let mut map = lock(map);
    let records = map.entry(namespace.to_string()).or_default();
    let current = records.get(key).map_or(0, |s| s.version);
    if current != expected_version {
        return Err(Error::Aborted(format!(
            "version conflict: expected version {expected_version}, current version {current}"
        )));
    }
    match value {
        Some(value) => {
            let version = current + 1;
            records.insert(key.to_string(), Stored { value, version });
            Ok(version)
        }
        None => {
            records.remove(key);
            Ok(0)
        }
    }
}

/// A request carrying the deadline both ways the store understands.
pub(super) fn bounded<T>(message: T, deadline: Deadline) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline.remaining());
    if let Ok(value) = MetadataValue::try_from(deadline.unix_ms().to_string()) {
        request.metadata_mut().insert(ABSOLUTE_HEADER, value);
    }
    request
}

/// Runs a store call, giving up at the deadline even if the store or the network hangs.
pub(super) async fn call<T>(
    deadline: Deadline,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    if deadline.expired() {
        return Err(tonic::Status::deadline_exceeded(
            "no time left to call the store",
        ));
    }
    match tokio::time::timeout_at(deadline.instant(), call).await {
        Ok(Err(status)) => Err(call_failure(&status, deadline)),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "the store did not answer before the deadline",
        )),
    }
}
