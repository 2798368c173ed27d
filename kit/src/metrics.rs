//! Prometheus metrics on `prometheus-client`, served by hyper.
//!
//! - [`RpcMetrics`] counts every RPC by service, method and code and times it in a histogram
//!   ([`RpcMetricsLayer`] sits in every server's tower stack). Methods come from the servers'
//!   descriptor sets, so a client inventing paths adds no series: anything else counts as
//!   `unknown`.
//! - A server's own figures (actors, mailboxes, batches, flushes, connections) are
//!   [`Collector`]s read at scrape time from the counters the server keeps anyway: a scrape
//!   costs the same with a million live actors. [`gauge`], [`counter`] and their labelled
//!   forms write them.
//! - [`spawn`] serves `GET /metrics` (OpenMetrics text) on its own port, on hyper's HTTP/1.1
//!   server with a header-read timeout, a per-connection time limit and a connection cap, so a
//!   slow or hostile client cannot hold the endpoint.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::Full;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use prost::Message;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
use tonic::{Code, body::Body, codegen::http};
use tower::{Layer, Service};

use crate::error_info::code_reason;

/// Writes a gauge without labels.
pub fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Writes a counter without labels; `name` leaves out the `_total` the format adds.
pub fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// Writes one gauge per label set.
pub fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one counter per label set; `name` leaves out the `_total` the format adds.
pub fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The labels of one RPC's count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// The labels of one RPC's latency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
}

/// Latency buckets: 0.5 ms doubling to about 33 s (a watch stream lasts longer and lands in
/// `+Inf`).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Per-RPC counts and latencies (`grpc_server_handled_total`, `grpc_server_handling_seconds`,
/// named as go-grpc-prometheus names them so existing dashboards fit).
#[derive(Clone)]
pub struct RpcMetrics {
    handled: Family<HandledLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// `/service/method` → its labels, for every method the server's descriptor sets declare.
    methods: Arc<HashMap<String, MethodLabels>>,
}

/// The labels of a path that names no known method.
const UNKNOWN: MethodLabels = MethodLabels {
    grpc_service: "unknown",
    grpc_method: "unknown",
};

impl RpcMetrics {
    /// Registers the RPC metrics in `registry`, knowing the methods of the services in
    /// `descriptor_sets` (encoded `FileDescriptorSet`s) besides health and reflection. The
    /// method names are leaked once per call: a fixed few kilobytes per server.
    pub fn register(registry: &mut Registry, descriptor_sets: &[&[u8]]) -> Self {
        let mut methods = HashMap::new();
        let base: [&[u8]; 3] = [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        for set in base.iter().chain(descriptor_sets) {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let full = if package.is_empty() {
                        service.name().to_string()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    let full: &'static str = Box::leak(full.into_boxed_str());
                    for method in &service.method {
                        let name: &'static str = Box::leak(method.name().into());
                        methods.insert(
                            format!("/{full}/{name}"),
                            MethodLabels {
                                grpc_service: full,
                                grpc_method: name,
                            },
                        );
                    }
                }
            }
        }
        let handled = Family::<HandledLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed, by service, method and status code.",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a request's arrival to its status (a stream's end), by method.",
            latency.clone(),
        );
        Self {
            handled,
            latency,
            methods: Arc::new(methods),
        }
    }

    fn labels(&self, path: &str) -> MethodLabels {
        self.methods.get(path).cloned().unwrap_or(UNKNOWN)
    }

    fn record(&self, method: &MethodLabels, code: Code, started: Instant) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_service: method.grpc_service,
                grpc_method: method.grpc_method,
                grpc_code: code_reason(code),
            })
            .inc();
        self.latency
            .get_or_create(method)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The code in a `grpc-status` header, if there is one.
fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

/// Tower layer that records every RPC in [`RpcMetrics`].
#[derive(Clone)]
pub struct RpcMetricsLayer(pub RpcMetrics);

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the router.
#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B> Service<http::Request<B>> for RpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.metrics.labels(request.uri().path());
        RpcMetricsFuture {
            inner: self.inner.call(request),
            record: Some(Record {
                metrics: self.metrics.clone(),
                method,
                started: Instant::now(),
            }),
        }
    }
}

/// One RPC's pending measurement: taken exactly once, when its status is known (or, dropped
/// before that, as CANCELLED: the client went away or the connection closed).
struct Record {
    metrics: RpcMetrics,
    method: MethodLabels,
    started: Instant,
}

impl Record {
    fn finish(self, code: Code) {
        self.metrics.record(&self.method, code, self.started);
    }
}

/// Records CANCELLED for an RPC whose response or body was dropped before its status.
struct Pending(Option<Record>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            record.finish(Code::Cancelled);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`RpcMetricsService`].
    pub struct RpcMetricsFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }

    impl<F> PinnedDrop for RpcMetricsFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            drop(Pending(this.project().record.take()));
        }
    }
}

impl<F, E> Future for RpcMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(record) = this.record.take() else {
            return Poll::Ready(result);
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                record.finish(Code::Internal);
                return Poll::Ready(Err(error));
            }
        };
        if let Some(code) = status_code(response.headers()) {
            // Trailers-only: the status is already known.
            record.finish(code);
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|inner| {
            Body::new(RpcMetricsBody {
                inner,
                pending: Pending(Some(record)),
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its RPC when the trailers (or the end) arrive.
    struct RpcMetricsBody {
        #[pin]
        inner: Body,
        pending: Pending,
    }
}

impl http_body::Body for RpcMetricsBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|t| status_code(t).unwrap_or(Code::Unknown)),
            Some(Err(status)) => Some(status.code()),
            None => Some(Code::Unknown),
        };
        if let Some(code) = code
            && let Some(record) = this.pending.0.take()
        {
            record.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A [`Collector`] over a closure, for figures a server reads from its own counters.
pub struct FnCollector<F>(pub F);

impl<F> fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut encoder)
    }
}

/// Stops the metrics endpoint when dropped.
pub struct MetricsHandle(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for MetricsHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// How long a scraper may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// The request head hyper buffers at most.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Binds `addr` (if set) and serves `registry` at `GET /metrics` in the background until the
/// returned handle is dropped.
pub async fn spawn(
    addr: Option<SocketAddr>,
    registry: Arc<Registry>,
) -> anyhow::Result<MetricsHandle> {
    let Some(addr) = addr else {
        return Ok(MetricsHandle(None));
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, registry, async move {
        let _ = stopped.await;
    }));
    Ok(MetricsHandle(Some(stop)))
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(answer(&request, &registry)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
                Err(_) => tracing::debug!("metrics connection cut at its time limit"),
                Ok(Ok(())) => {}
            }
        });
    }
}

fn answer<B>(request: &http::Request<B>, registry: &Registry) -> http::Response<Full<Bytes>> {
    let reply = |status: http::StatusCode, content_type: &'static str, body: String| {
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "try GET /metrics\n".into(),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET /metrics\n".into(),
        );
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(
            http::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => reply(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "encoding the metrics failed\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_write_openmetrics_with_labels_escaped() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FnCollector(|e: &mut DescriptorEncoder| {
            gauge(e, "things", "Things now.", 3)?;
            counter(e, "events", "Events so far.", 7)?;
            counters(e, "by_kind", "Per kind.", [([("kind", "a\"b")], 2u64)])
        })));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("things 3\n"), "{text}");
        assert!(text.contains("events_total 7\n"), "{text}");
        assert!(
            text.contains("by_kind_total{kind=\"a\\\"b\"} 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn only_declared_methods_get_their_own_series() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry, &[]);
        let started = Instant::now();
        metrics.record(
            &metrics.labels("/grpc.health.v1.Health/Check"),
            Code::Ok,
            started,
        );
        metrics.record(&metrics.labels("/evil/x1"), Code::Unimplemented, started);
        metrics.record(&metrics.labels("/evil/x2"), Code::Unimplemented, started);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "grpc_server_handled_total{grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\",grpc_code=\"OK\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "grpc_server_handled_total{grpc_service=\"unknown\",grpc_method=\"unknown\",grpc_code=\"UNIMPLEMENTED\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("evil"), "{text}");
        assert!(
            text.contains("grpc_server_handling_seconds_count{grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\"} 1"),
            "{text}"
        );
    }
}
