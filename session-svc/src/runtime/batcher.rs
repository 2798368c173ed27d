//! Group commit on the client side: the writes of many actors travel to store-svc together.
//!
//! Every actor persists its own record, so a busy session-svc has many small writes in flight
//! at once. Sent as one `Put` each, every write pays for a whole HTTP/2 request at both ends,
//! which costs more CPU than its share of sled's flush. The batcher queues writes and sends
//! whatever has gathered as one `BatchWrite`, with at most `in_flight` batches outstanding.
//! Under light load a write goes out at once, alone; under heavy load the next batch grows
//! while the earlier ones are on the wire, so the batch size follows the load with no timer.
//!
//! Batching changes what a write costs, never its outcome: each write carries its own absolute
//! deadline (`deadline_unix_ms`, so the store drops it unexecuted once its caller gave up) and
//! gets its own result. An actor has at most one write in flight, so no reordering can occur
//! between writes of one key.
//!
//! A write's outcome is told truthfully (the error contract): DEADLINE_EXCEEDED only when the
//! write certainly did not happen (it was never sent, or the store said so), and
//! [`Error::OutcomeUnknown`]'s UNAVAILABLE when it was sent and no answer came in time. The
//! store gets a deadline a margin ahead of the caller's ([`store_deadline`]), so that its own
//! "not applied" can still reach the caller in time.
//!
//! Traces: each write remembers the span it was queued in (its request's). One `BatchWrite`
//! serves many requests but a span has one parent, so the batch gets a client span
//! `store.v1.StoreService/BatchWrite` that is the child of the first write's request span and
//! carries a span link to every other request's span; store-svc's server span of the call is
//! its child. The first request's trace shows the whole call; the others show it by link.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use kit::{claim::Claim, deadline::Deadline};
use prost::Message as _;
use proto::store::v1::{
    BatchWriteRequest, Write, store_service_client::StoreServiceClient, write::Operation,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Code, Request, Status, transport::Channel};
use tracing::Instrument as _;

use super::{
    link::StoreLink,
    store::{bounded, call},
};

/// Bytes of writes per `BatchWrite` at most, well under store-svc's 4 MiB decoding limit. A
/// single larger write still goes, alone.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// How the batcher groups writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Writes per `BatchWrite` at most (1 to 1000).
    pub max_writes: usize,
    /// `BatchWrite` calls outstanding at once; while all are out, the next batch gathers.
    pub in_flight: usize,
}

/// What the batcher has sent, for `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// `BatchWrite` calls made.
    pub batches: AtomicU64,
    /// Writes those calls carried.
    pub writes: AtomicU64,
}

/// A write's result: for a Put its version, for a Delete 0, for a Commit each mutation's.
pub type Versions = Vec<u64>;

/// A write waiting for its batch.
struct Queued {
    /// The write, its `deadline_unix_ms` set.
    write: Write,
    /// Its caller's deadline.
    deadline: Deadline,
    /// Sent or abandoned.
    claim: Arc<Claim>,
    /// Where its result goes.
    reply: oneshot::Sender<Result<Versions, Status>>,
    /// The span it was queued in: its request's ([`kit::trace::client_span`]).
    span: tracing::Span,
}

/// The deadline the store gets for a write whose caller must be answered by `deadline`: a
/// quarter of the time left earlier (between 2 and 250 ms), room for the store's answer to
/// travel back, so that the store's own DEADLINE_EXCEEDED ("not applied") reaches the caller.
pub fn store_deadline(deadline: Deadline) -> Deadline {
    let remaining = deadline.remaining();
    let margin = (remaining / 4).clamp(Duration::from_millis(2), Duration::from_millis(250));
    Deadline::after(remaining.saturating_sub(margin))
}

/// The status of a write that was sent and got no answer in time: it may have been applied.
pub fn outcome_unknown(why: &str) -> Status {
    Status::unavailable(format!(
        "{why}; the outcome is unknown (the write may or may not have been applied): retry \
         with the same request id, which is applied at most once"
    ))
}

/// A cheap, cloneable handle on the batching task; the task ends when the last handle is gone.
#[derive(Debug, Clone)]
pub struct Batcher {
    /// The queue into the batching task.
    queue: mpsc::Sender<Queued>,
    /// Shared with the task.
    stats: Arc<BatchStats>,
}

impl Batcher {
    /// Starts the batching task on the current tokio runtime.
    pub fn spawn(
        client: StoreServiceClient<Channel>,
        settings: BatchSettings,
        link: Arc<StoreLink>,
    ) -> Self {
        let max_writes = settings.max_writes.clamp(1, 1000);
        let in_flight = settings.in_flight.max(1);
        // Every live actor has at most one write queued, so this bound is rarely reached; when
        // it is, callers wait (within their deadlines) rather than queue without limit.
        let (queue, rx) = mpsc::channel(max_writes * in_flight * 4);
        let stats = Arc::new(BatchStats::default());
        let shared = Arc::new(Shared {
            client,
            link,
            stats: stats.clone(),
            no_batch_write: AtomicBool::new(false),
        });
        tokio::spawn(run(rx, shared, max_writes, in_flight));
        Self { queue, stats }
    }

    /// What has been sent so far.
    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.stats
    }

    /// Sends `write` with the next batch and waits for its own result: the version a Put
    /// created (0 for a Delete), or the status its own Put or Delete call would have had.
    pub async fn write(&self, mut write: Write, deadline: Deadline) -> Result<Versions, Status> {
        if deadline.expired() {
            return Err(Status::deadline_exceeded("no time left to call the store"));
        }
        write.deadline_unix_ms = store_deadline(deadline).unix_ms();
        let (reply, answer) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        let queued = Queued {
            write,
            deadline,
            claim: claim.clone(),
            reply,
            span: tracing::Span::current(),
        };
        match tokio::time::timeout_at(deadline.instant(), self.queue.send(queued)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Status::unavailable("session-svc is shutting down")),
            Err(_) => {
                // Never queued, so never sent: the write certainly did not happen.
                return Err(Status::deadline_exceeded(
                    "the deadline passed while the write waited to be sent to the store",
                ));
            }
        }
        match tokio::time::timeout_at(deadline.instant(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(outcome_unknown(
                "the batch carrying this write to the store was lost",
            )),
            Err(_) if claim.abandon() => Err(Status::deadline_exceeded(
                "the deadline passed while the write waited to be sent to the store; it was not \
                 applied",
            )),
            Err(_) => Err(outcome_unknown(
                "the store did not answer before the deadline",
            )),
        }
    }
}

/// What every batch's task shares.
struct Shared {
    /// The store.
    client: StoreServiceClient<Channel>,
    /// What its failures mean, and its outages.
    link: Arc<StoreLink>,
    /// What has been sent.
    stats: Arc<BatchStats>,
    /// Set once store-svc answered BatchWrite with UNIMPLEMENTED (a store older than this
    /// session-svc, say mid rolling upgrade): from then on each write goes as its own call.
    no_batch_write: AtomicBool,
}

/// The batching task: gathers what is queued, up to `max_writes`, whenever a slot is free.
async fn run(
    mut rx: mpsc::Receiver<Queued>,
    shared: Arc<Shared>,
    max_writes: usize,
    in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_writes);
        if rx.recv_many(&mut batch, max_writes).await == 0 {
            return; // Every handle is gone.
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            for chunk in split_by_size(batch) {
                send(&shared, chunk).await;
            }
            drop(slot);
        });
    }
}

/// Splits `batch` into runs of at most [`MAX_BATCH_BYTES`] (each at least one write).
fn split_by_size(batch: Vec<Queued>) -> Vec<Vec<Queued>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for queued in batch {
        let len = queued.write.encoded_len();
        if !chunk.is_empty() && bytes + len > MAX_BATCH_BYTES {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += len;
        chunk.push(queued);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// One `BatchWrite` (or one call per write, for a store without it); every write of `chunk`
/// gets its result.
async fn send(shared: &Shared, chunk: Vec<Queued>) {
    // A write whose caller gave up is not sent; one that is sent can no longer be abandoned.
    let chunk = chunk.into_iter().filter(|queued| queued.claim.start());
    if shared.no_batch_write.load(Ordering::Relaxed) {
        for queued in chunk {
            // In the write's own span: the call carries its request's trace context.
            let span = queued.span.clone();
            tokio::spawn(
                send_alone(shared.client.clone(), shared.link.clone(), queued).instrument(span),
            );
        }
        return;
    }
    let chunk: Vec<Queued> = chunk.collect();
    let span = kit::trace::client_span(
        "store.v1.StoreService/BatchWrite",
        chunk.iter().map(|queued| &queued.span),
    );
    let (writes, waiting): (Vec<_>, Vec<_>) = chunk
        .into_iter()
        .map(|queued| (queued.write, (queued.deadline, queued.reply)))
        .unzip();
    let Some(latest) = waiting.iter().map(|(deadline, _)| deadline.instant()).max() else {
        return;
    };
    shared.stats.batches.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .writes
        .fetch_add(writes.len() as u64, Ordering::Relaxed);
    let count = writes.len();
    let mut request = Request::new(BatchWriteRequest { writes });
    // The call lives as long as its longest-lived write; each write's own deadline travels
    // inside it and the store applies the earlier of the two.
    request.set_timeout(latest.saturating_duration_since(tokio::time::Instant::now()));
    kit::trace::inject(&span, request.metadata_mut());
    let mut client = shared.client.clone();
    let ticket = shared.link.ticket();
    let outcome = tokio::time::timeout_at(latest, client.batch_write(request))
        .instrument(span)
        .await;
    let results = match outcome {
        Ok(Ok(response)) => {
            shared.link.answered(ticket);
            let results = response.into_inner().results;
            if results.len() == count {
                Ok(results)
            } else {
                Err(Status::unknown(format!(
                    "the store answered {} results for {count} writes",
                    results.len()
                )))
            }
        }
        Ok(Err(status)) if status.code() == Code::Unimplemented => {
            if !shared.no_batch_write.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %status,
                    "store-svc has no BatchWrite (older than this session-svc?): sending each \
                     write as its own call from now on"
                );
            }
            Err(Status::unavailable(
                "store-svc does not offer BatchWrite (is it older than session-svc?): this write \
                 was not applied; retry, later writes go one call each",
            ))
        }
        Ok(Err(status)) => Err(shared.link.failed(ticket, &status, true)),
        Err(_) => Err(outcome_unknown(
            "the store did not answer before the deadline",
        )),
    };
    match results {
        Ok(results) => {
            for ((_, reply), result) in waiting.into_iter().zip(results) {
                let outcome = match Code::from_i32(result.code) {
                    Code::Ok if result.versions.is_empty() => Ok(vec![result.version]),
                    Code::Ok => Ok(result.versions),
                    code => Err(Status::new(code, result.message)),
                };
                let _ = reply.send(outcome);
            }
        }
        Err(status) => {
            for (_, reply) in waiting {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

/// Sends one write as its own Put or Delete call, for a store without `BatchWrite`.
async fn send_alone(mut client: StoreServiceClient<Channel>, link: Arc<StoreLink>, queued: Queued) {
    let Queued {
        write,
        deadline,
        reply,
        ..
    } = queued;
    let store = store_deadline(deadline);
    let result = match write.operation {
        Some(Operation::Put(put)) => call(&link, deadline, client.put(bounded(put, store)), true)
            .await
            .map(|response| vec![response.version]),
        Some(Operation::Delete(delete)) => {
            call(&link, deadline, client.delete(bounded(delete, store)), true)
                .await
                .map(|_| vec![0])
        }
        Some(Operation::Commit(commit)) => {
            call(&link, deadline, client.commit(bounded(commit, store)), true)
                .await
                .map(|response| response.versions)
        }
        None => Err(Status::invalid_argument(
            "a write with neither put, delete nor commit",
        )),
    };
    let _ = reply.send(result);
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_writes: 256,
            in_flight: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proto::store::v1::{
        BatchWriteResponse, CommitRequest, CommitResponse, DeleteRequest, DeleteResponse,
        GetRequest, GetResponse, PutRequest, PutResponse, ScanRequest, ScanResponse,
        store_service_server::{StoreService, StoreServiceServer},
    };
    use tonic::Response;

    use super::*;

    fn queued(value_bytes: usize) -> Queued {
        let write = Write {
            operation: Some(Operation::Put(PutRequest {
                namespace: "cart".into(),
                key: "k".into(),
                value: vec![0; value_bytes],
                expected_version: 0,
            })),
            deadline_unix_ms: 0,
        };
        Queued {
            write,
            deadline: Deadline::after(Duration::from_secs(1)),
            claim: Arc::default(),
            reply: oneshot::channel().0,
            span: tracing::Span::none(),
        }
    }

    /// A store-svc from before BatchWrite: it counts Puts and knows no BatchWrite.
    #[derive(Default, Clone)]
    struct OldStore {
        puts: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl StoreService for OldStore {
        async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            let version = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Response::new(PutResponse { version }))
        }

        async fn batch_write(
            &self,
            _: Request<BatchWriteRequest>,
        ) -> Result<Response<BatchWriteResponse>, Status> {
            Err(Status::unimplemented("unknown method BatchWrite"))
        }

        async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
            Err(Status::unimplemented("not used here"))
        }

        async fn delete(
            &self,
            _: Request<DeleteRequest>,
        ) -> Result<Response<DeleteResponse>, Status> {
            Err(Status::unimplemented("not used here"))
        }

        async fn scan(&self, _: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
            Err(Status::unimplemented("not used here"))
        }

        async fn commit(
            &self,
            _: Request<CommitRequest>,
        ) -> Result<Response<CommitResponse>, Status> {
            Err(Status::unimplemented("not used here"))
        }
    }

    #[tokio::test]
    async fn against_a_store_without_batch_write_writes_go_one_call_each() {
        let old = OldStore::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StoreServiceServer::new(old.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = StoreServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let link = Arc::new(StoreLink::new(format!("http://{addr}")));
        let batcher = Batcher::spawn(client, BatchSettings::default(), link);
        let soon = || Deadline::after(Duration::from_secs(5));

        // The write that discovers the old store is refused, retryably, and never applied.
        let refused = batcher.write(queued(10).write, soon()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains("BatchWrite"), "{refused:?}");
        assert_eq!(old.puts.load(Ordering::SeqCst), 0);

        // Later writes go as Puts and succeed.
        assert_eq!(batcher.write(queued(10).write, soon()).await.unwrap(), [1]);
        assert_eq!(batcher.write(queued(10).write, soon()).await.unwrap(), [2]);
        assert_eq!(old.puts.load(Ordering::SeqCst), 2);
        assert_eq!(batcher.stats().batches.load(Ordering::SeqCst), 1);
    }

    fn sizes(chunks: &[Vec<Queued>]) -> Vec<usize> {
        chunks.iter().map(Vec::len).collect()
    }

    #[test]
    fn small_writes_share_one_call() {
        let batch = (0..100).map(|_| queued(100)).collect();
        assert_eq!(sizes(&split_by_size(batch)), [100]);
    }

    #[test]
    fn a_call_carries_at_most_max_batch_bytes_but_at_least_one_write() {
        let third = MAX_BATCH_BYTES / 3;
        let batch = vec![
            queued(third),
            queued(third),
            queued(third), // With the framing, this one no longer fits beside the first two.
            queued(3 * MAX_BATCH_BYTES), // Larger than a call: goes alone.
            queued(10),
        ];
        let chunks = split_by_size(batch);
        assert_eq!(sizes(&chunks), [2, 1, 1, 1]);
        for chunk in &chunks[..2] {
            let bytes: usize = chunk.iter().map(|q| q.write.encoded_len()).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
    }
}
