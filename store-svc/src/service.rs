//! `store.v1.StoreService`: validation at the edge, reads on the blocking pool, writes through
//! the group-commit writer.

use std::{sync::Arc, time::Duration};

use proto::store::v1::{
    DeleteRequest, DeleteResponse, Entry, GetRequest, GetResponse, PutRequest, PutResponse,
    ScanRequest, ScanResponse, store_service_server::StoreService,
};
use tonic::{Request, Response, Status};

use crate::{
    db::{Change, Db, Write},
    error::Error,
    kit::deadline::Deadline,
    validate::{self, PageToken},
    writer::Writer,
};

/// The gRPC face of the store.
#[derive(Clone)]
pub struct StoreApi {
    /// For reads; writes go through `writer`.
    db: Arc<Db>,
    /// The only path to a write.
    writer: Writer,
    /// Largest value a Put may carry.
    max_value_bytes: usize,
    /// Deadline of requests that did not pass through the deadline layer.
    default_deadline: Duration,
}

impl StoreApi {
    /// A service over `db`, writing through `writer`.
    pub fn new(
        db: Arc<Db>,
        writer: Writer,
        max_value_bytes: usize,
        default_deadline: Duration,
    ) -> Self {
        Self {
            db,
            writer,
            max_value_bytes,
            default_deadline,
        }
    }

    /// Runs a sled read on the blocking pool, unless the deadline already passed.
    async fn read<T: Send + 'static>(
        &self,
        deadline: Deadline,
        read: impl FnOnce(&Db) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        if deadline.expired() {
            return Err(Error::DeadlineExceeded);
        }
        let db = self.db.clone();
        let task = tokio::task::spawn_blocking(move || read(&db));
        match tokio::time::timeout_at(deadline.instant(), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::DeadlineExceeded),
        }
    }

    async fn write(&self, write: Write, deadline: Deadline) -> Result<u64, Error> {
        if deadline.expired() {
            return Err(Error::DeadlineExceeded);
        }
        self.writer.submit(write, deadline).await
    }
}

#[tonic::async_trait]
impl StoreService for StoreApi {
    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %request.get_ref().namespace, key = %request.get_ref().key))]
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let GetRequest { namespace, key } = request.into_inner();
        validate::namespace(&namespace)?;
        validate::key(&key)?;
        let record = self
            .read(deadline, {
                let (namespace, key) = (namespace.clone(), key.clone());
                move |db| db.get(&namespace, &key)
            })
            .await?
            .ok_or(Error::NotFound { namespace, key })?;
        Ok(Response::new(GetResponse {
            value: record.value,
            version: record.version,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %request.get_ref().namespace, key = %request.get_ref().key))]
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let PutRequest {
            namespace,
            key,
            value,
            expected_version,
        } = request.into_inner();
        validate::namespace(&namespace)?;
        validate::key(&key)?;
        validate::value(&value, self.max_value_bytes)?;
        let write = Write {
            namespace,
            key,
            change: Change::Put(value),
            expected_version,
        };
        let version = self.write(write, deadline).await?;
        Ok(Response::new(PutResponse { version }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %request.get_ref().namespace, key = %request.get_ref().key))]
    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let DeleteRequest {
            namespace,
            key,
            expected_version,
        } = request.into_inner();
        validate::namespace(&namespace)?;
        validate::key(&key)?;
        let write = Write {
            namespace,
            key,
            change: Change::Delete,
            expected_version,
        };
        self.write(write, deadline).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %request.get_ref().namespace, prefix = %request.get_ref().prefix))]
    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let ScanRequest {
            namespace,
            prefix,
            page_size,
            page_token,
        } = request.into_inner();
        validate::namespace(&namespace)?;
        validate::prefix(&prefix)?;
        let limit = validate::page_size(page_size)?;
        let after = PageToken::decode(&page_token, &namespace, &prefix)?.map(|t| t.last_key);
        let (entries, more) = self
            .read(deadline, {
                let (namespace, prefix) = (namespace.clone(), prefix.clone());
                move |db| db.scan(&namespace, &prefix, after.as_deref(), limit)
            })
            .await?;
        let next_page_token = match entries.last() {
            Some(last) if more => PageToken {
                namespace,
                prefix,
                last_key: last.key.clone(),
            }
            .encode(),
            _ => String::new(),
        };
        Ok(Response::new(ScanResponse {
            entries: entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    value: e.record.value,
                    version: e.record.version,
                })
                .collect(),
            next_page_token,
        }))
    }
}
