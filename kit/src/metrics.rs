//! Prometheus metrics on `prometheus-client`, served by hyper.
//!
//! - [`RpcMetrics`] counts every RPC by service, method and code and times it in a histogram
//!   (`error_info::StatusLayer`, in every server's tower stack, reports each RPC's status). Methods come from the servers'
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
    collections::HashMap, convert::Infallible, fmt, net::SocketAddr, sync::Arc, time::Duration,
};

use bytes::Bytes;
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
use tonic::{Code, codegen::http};

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

/// The labels of a path that names no declared method.
const UNKNOWN: MethodLabels = MethodLabels {
    grpc_service: "unknown",
    grpc_method: "unknown",
};

/// Per-RPC counts and latencies (`grpc_server_handled_total`, `grpc_server_handling_seconds`,
/// named as go-grpc-prometheus names them so existing dashboards fit). The series of every
/// declared method (its histogram, its OK counter) are made at start, so the common case
/// costs one map lookup and two atomic updates, not a family lookup under a lock.
#[derive(Clone)]
pub struct RpcMetrics {
    handled: Family<HandledLabels, Counter>,
    /// `/service/method` → its series, for every method the server's descriptor sets declare.
    methods: Arc<HashMap<String, MethodSeries>>,
    /// The series of every path that names no declared method.
    unknown: MethodSeries,
}

/// One method's labels and its most used series.
#[derive(Clone)]
struct MethodSeries {
    labels: MethodLabels,
    latency: Histogram,
    ok: Counter,
}

impl RpcMetrics {
    /// Registers the RPC metrics in `registry`, knowing the methods of the services in
    /// `descriptor_sets` (encoded `FileDescriptorSet`s) besides health and reflection. The
    /// method names are leaked once per call: a fixed few kilobytes per server.
    pub fn register(registry: &mut Registry, descriptor_sets: &[&[u8]]) -> Self {
        let handled = Family::<HandledLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let series = |labels: MethodLabels| MethodSeries {
            latency: latency.get_or_create(&labels).clone(),
            ok: handled
                .get_or_create(&HandledLabels {
                    grpc_service: labels.grpc_service,
                    grpc_method: labels.grpc_method,
                    grpc_code: "OK",
                })
                .clone(),
            labels,
        };
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
                            series(MethodLabels {
                                grpc_service: full,
                                grpc_method: name,
                            }),
                        );
                    }
                }
            }
        }
        let unknown = series(UNKNOWN);
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
            methods: Arc::new(methods),
            unknown,
        }
    }

    /// Starts timing a request for `path`; finish the returned record with its status code.
    pub fn start(&self, path: &str) -> RpcRecord {
        let series = self.methods.get(path).unwrap_or(&self.unknown).clone();
        RpcRecord {
            handled: self.handled.clone(),
            series,
            started: Instant::now(),
        }
    }
}

/// One RPC being timed ([`RpcMetrics::start`]); [`finish`](Self::finish) it exactly once.
pub struct RpcRecord {
    handled: Family<HandledLabels, Counter>,
    series: MethodSeries,
    started: Instant,
}

impl RpcRecord {
    /// Counts the RPC under `code` and records how long it took.
    pub fn finish(self, code: Code) {
        let MethodSeries {
            labels,
            latency,
            ok,
        } = &self.series;
        if code == Code::Ok {
            ok.inc();
        } else {
            self.handled
                .get_or_create(&HandledLabels {
                    grpc_service: labels.grpc_service,
                    grpc_method: labels.grpc_method,
                    grpc_code: code_reason(code),
                })
                .inc();
        }
        latency.observe(self.started.elapsed().as_secs_f64());
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
        metrics
            .start("/grpc.health.v1.Health/Check")
            .finish(Code::Ok);
        metrics.start("/evil/x1").finish(Code::Unimplemented);
        metrics.start("/evil/x2").finish(Code::Unimplemented);
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
