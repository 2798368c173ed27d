//! `store.v1.StoreService`: validation at the edge, then the backend (`backend.rs`): sled with
//! reads on the blocking pool and writes through the group-commit writer, or PostgreSQL. Every namespace a request names, in any field, must be one the
//! store serves ([`Namespaces::check`](crate::namespaces::Namespaces::check)) before the
//! request goes further.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::{deadline::Deadline, echo::echo};
use proto::store::v1::{
    BatchWriteRequest, BatchWriteResponse, Check, CommitRequest, CommitResponse, DeleteRequest,
    DeleteResponse, Entry, GetRequest, GetResponse, Mutation, PutRequest, PutResponse, ScanRequest,
    ScanResponse, WriteResult, mutation::Kind, store_service_server::StoreService,
    write::Operation,
};
use tonic::{Request, Response, Status};

use crate::{
    backend::{Backend, Queued},
    db::{Change, Write},
    error::Error,
    namespaces::Namespaces,
    validate::{self, PageToken},
};

/// The gRPC face of the store.
#[derive(Clone)]
pub struct StoreApi {
    /// Where records live: sled through the writer, or PostgreSQL.
    backend: Backend,
    /// The namespaces served, checked before a request reaches the backend.
    namespaces: Namespaces,
    /// Largest value a Put may carry.
    max_value_bytes: usize,
    /// Deadline of requests that did not pass through the deadline layer.
    default_deadline: Duration,
}

impl StoreApi {
    /// A service over `backend`, serving `namespaces`.
    pub fn new(
        backend: Backend,
        namespaces: Namespaces,
        max_value_bytes: usize,
        default_deadline: Duration,
    ) -> Self {
        Self {
            backend,
            namespaces,
            max_value_bytes,
            default_deadline,
        }
    }

    /// The namespaces served.
    fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    async fn write(&self, write: Write, deadline: Deadline) -> Result<u64, Error> {
        if deadline.expired() {
            return Err(Error::DeadlineExceeded);
        }
        self.backend.write(write, deadline).await
    }

    /// A validated Put, as the Put handler and BatchWrite both take it.
    fn put_write(&self, request: PutRequest) -> Result<Write, Error> {
        let PutRequest {
            namespace,
            key,
            value,
            expected_version,
        } = request;
        self.namespaces().check(&namespace)?;
        validate::key(&key)?;
        validate::value(&value, self.max_value_bytes)?;
        Ok(Write {
            namespace,
            key,
            change: Change::Put(value),
            expected_version,
        })
    }

    /// A validated Delete, as the Delete handler and BatchWrite both take it.
    fn delete_write(&self, request: DeleteRequest) -> Result<Write, Error> {
        let DeleteRequest {
            namespace,
            key,
            expected_version,
        } = request;
        self.namespaces().check(&namespace)?;
        validate::key(&key)?;
        Ok(Write {
            namespace,
            key,
            change: Change::Delete,
            expected_version,
        })
    }

    /// A validated Commit: each mutation valid, each key once, and at most two value limits
    /// of bytes in all. An invalid field is named by its path (`mutations[2].put.key`).
    fn commit_writes(&self, request: CommitRequest) -> Result<Vec<Write>, Error> {
        let CommitRequest { mutations } = request;
        validate::commit_len(mutations.len())?;
        let mut writes = Vec::with_capacity(mutations.len());
        let mut bytes = 0;
        for (index, mutation) in mutations.into_iter().enumerate() {
            let Mutation { kind } = mutation;
            let (write, op) = match kind {
                Some(Kind::Put(put)) => (self.put_write(put), "put"),
                Some(Kind::Delete(delete)) => (self.delete_write(delete), "delete"),
                Some(Kind::Check(check)) => (self.check_write(check), "check"),
                None => {
                    return Err(Error::invalid(
                        format!("mutations[{index}]"),
                        "is empty; set put, delete or check",
                    ));
                }
            };
            let write = write.map_err(|e| within(e, &format!("mutations[{index}].{op}")))?;
            if let Change::Put(value) = &write.change {
                bytes += value.len();
            }
            if writes
                .iter()
                .any(|w: &Write| w.key == write.key && w.namespace == write.namespace)
            {
                return Err(Error::invalid(
                    format!("mutations[{index}].{op}.key"),
                    "names a key an earlier mutation of this commit names; each key at most once",
                ));
            }
            writes.push(write);
        }
        let limit = 2 * self.max_value_bytes;
        if bytes > limit {
            return Err(Error::invalid(
                "mutations",
                format!("carry {bytes} bytes of values; at most {limit} per commit"),
            ));
        }
        Ok(writes)
    }

    /// A validated Check of a commit.
    fn check_write(&self, check: Check) -> Result<Write, Error> {
        let Check {
            namespace,
            key,
            version,
        } = check;
        self.namespaces().check(&namespace)?;
        validate::key(&key)?;
        Ok(Write {
            namespace,
            key,
            change: Change::Check,
            expected_version: version,
        })
    }

    /// Validates `writes[index]` and queues it under the earlier of the call's deadline and
    /// its own. `Err` is already its result: it was refused without running.
    fn enqueue_batch_entry(
        &self,
        index: usize,
        entry: proto::store::v1::Write,
        call: Deadline,
    ) -> Result<(Queued, bool), WriteResult> {
        let (writes, op) = match entry.operation {
            Some(Operation::Put(put)) => (self.put_write(put).map(|w| vec![w]), "put"),
            Some(Operation::Delete(delete)) => {
                (self.delete_write(delete).map(|w| vec![w]), "delete")
            }
            Some(Operation::Commit(commit)) => (self.commit_writes(commit), "commit"),
            None => {
                return Err(refused(
                    Error::invalid("operation", "is empty; set put, delete or commit"),
                    index,
                    "",
                ));
            }
        };
        let writes = writes.map_err(|error| refused(error, index, op))?;
        let deadline = earlier_deadline(call, entry.deadline_unix_ms);
        if deadline.expired() {
            return Err(refused(Error::DeadlineExceeded, index, op));
        }
        self.backend
            .enqueue(writes, deadline)
            .map(|queued| (queued, op == "commit"))
            .map_err(|error| refused(error, index, op))
    }
}

/// `error` with its field named inside `path` (`key` → `mutations[2].put.key`).
fn within(error: Error, path: &str) -> Error {
    match error {
        Error::InvalidArgument { field, description } => Error::InvalidArgument {
            field: format!("{path}.{field}").into(),
            description,
        },
        other => other,
    }
}

/// The earlier of the call's deadline and a write's own `deadline_unix_ms` (0: none).
fn earlier_deadline(call: Deadline, deadline_unix_ms: u64) -> Deadline {
    if deadline_unix_ms == 0 {
        return call;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let own = Duration::from_millis(deadline_unix_ms).saturating_sub(now);
    if own < call.remaining() {
        Deadline::after(own)
    } else {
        call
    }
}

/// The result of `writes[index]` refused before it was queued. An invalid field is named by
/// its path in the request (`writes[3].put.key`).
fn refused(error: Error, index: usize, op: &str) -> WriteResult {
    match error {
        Error::InvalidArgument { field, description } => WriteResult {
            code: tonic::Code::InvalidArgument as i32,
            message: if op.is_empty() {
                format!("writes[{index}].{field}: {description}")
            } else {
                format!("writes[{index}].{op}.{field}: {description}")
            },
            version: 0,
            versions: Vec::new(),
        },
        error => write_result(Err(error), false),
    }
}

/// What the write's own Put, Delete or Commit would have answered, as a [`WriteResult`].
fn write_result(outcome: Result<Vec<u64>, Error>, commit: bool) -> WriteResult {
    match outcome {
        // The writer answers 0 for a delete and the new version for a put.
        Ok(versions) if commit => WriteResult {
            code: tonic::Code::Ok as i32,
            message: String::new(),
            version: 0,
            versions,
        },
        Ok(versions) => WriteResult {
            code: tonic::Code::Ok as i32,
            message: String::new(),
            version: versions.first().copied().unwrap_or(0),
            versions: Vec::new(),
        },
        Err(error) => WriteResult {
            code: error.code() as i32,
            message: error.to_string(),
            version: match error {
                Error::VersionConflict { current, .. } => current,
                _ => 0,
            },
            versions: Vec::new(),
        },
    }
}

#[tonic::async_trait]
impl StoreService for StoreApi {
    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %echo(&request.get_ref().namespace), key = %echo(&request.get_ref().key)))]
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let GetRequest { namespace, key } = request.into_inner();
        self.namespaces().check(&namespace)?;
        validate::key(&key)?;
        let record = self
            .backend
            .get(deadline, namespace.clone(), key.clone())
            .await?
            .ok_or(Error::NotFound { namespace, key })?;
        Ok(Response::new(GetResponse {
            value: record.value,
            version: record.version,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %echo(&request.get_ref().namespace), key = %echo(&request.get_ref().key)))]
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let write = self.put_write(request.into_inner())?;
        let version = self.write(write, deadline).await?;
        Ok(Response::new(PutResponse { version }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %echo(&request.get_ref().namespace), key = %echo(&request.get_ref().key)))]
    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let write = self.delete_write(request.into_inner())?;
        self.write(write, deadline).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(writes = request.get_ref().writes.len()))]
    async fn batch_write(
        &self,
        request: Request<BatchWriteRequest>,
    ) -> Result<Response<BatchWriteResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let BatchWriteRequest { writes } = request.into_inner();
        validate::batch_len(writes.len())?;
        // Queue every write before waiting for any, so that they share flushes. The writer
        // applies them in queue order, so awaiting them in order costs nothing.
        let queued: Vec<_> = writes
            .into_iter()
            .enumerate()
            .map(|(index, entry)| self.enqueue_batch_entry(index, entry, deadline))
            .collect();
        let mut results = Vec::with_capacity(queued.len());
        for entry in queued {
            results.push(match entry {
                Ok((queued, commit)) => write_result(self.backend.outcome(queued).await, commit),
                Err(refused) => refused,
            });
        }
        Ok(Response::new(BatchWriteResponse { results }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(mutations = request.get_ref().mutations.len()))]
    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let writes = self.commit_writes(request.into_inner())?;
        if deadline.expired() {
            return Err(Error::DeadlineExceeded.into());
        }
        let versions = self.backend.commit(writes, deadline).await?;
        Ok(Response::new(CommitResponse { versions }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(namespace = %echo(&request.get_ref().namespace), prefix = %echo(&request.get_ref().prefix)))]
    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let ScanRequest {
            namespace,
            prefix,
            page_size,
            page_token,
        } = request.into_inner();
        self.namespaces().check(&namespace)?;
        validate::prefix(&prefix)?;
        let limit = validate::page_size(page_size)?;
        let after = PageToken::decode(&page_token, &namespace, &prefix)?.map(|t| t.last_key);
        let (entries, more) = self
            .backend
            .scan(deadline, namespace.clone(), prefix.clone(), after, limit)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_ms_in(offset_ms: i64) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        (now.as_millis() as i64 + offset_ms) as u64
    }

    #[tokio::test]
    async fn a_write_runs_under_the_earlier_of_its_own_and_the_calls_deadline() {
        let call = Deadline::after(Duration::from_secs(10));
        assert_eq!(earlier_deadline(call, 0), call, "0 means the call's");
        assert_eq!(earlier_deadline(call, unix_ms_in(60_000)), call);
        assert_eq!(earlier_deadline(call, u64::MAX), call, "no overflow");
        assert!(earlier_deadline(call, unix_ms_in(-1_000)).expired());
        assert!(earlier_deadline(call, 1).expired());
        let own = earlier_deadline(call, unix_ms_in(2_000)).remaining();
        assert!(
            own > Duration::from_millis(1_000) && own <= Duration::from_millis(2_000),
            "{own:?}"
        );
    }

    #[test]
    fn results_carry_the_code_a_lone_call_would_get() {
        let invalid = refused(Error::invalid("key", "must not be empty"), 3, "put");
        assert_eq!(invalid.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(invalid.message, "writes[3].put.key: must not be empty");
        let conflict = write_result(
            Err(Error::VersionConflict {
                index: 0,
                namespace: "n".into(),
                key: "k".into(),
                expected: 1,
                current: 4,
            }),
            false,
        );
        assert_eq!(
            (conflict.code, conflict.version),
            (tonic::Code::Aborted as i32, 4)
        );
        assert!(conflict.message.contains("current version 4"));
        let late = refused(Error::DeadlineExceeded, 0, "delete");
        assert_eq!((late.code, late.version), (4, 0));
        let ok = write_result(Ok(vec![9]), false);
        assert_eq!((ok.code, ok.message.as_str(), ok.version), (0, "", 9));
        let committed = write_result(Ok(vec![3, 0, 1]), true);
        assert_eq!((committed.code, committed.versions), (0, vec![3, 0, 1]));
    }
}
