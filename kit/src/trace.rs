//! Distributed traces: W3C trace context in, one server span per RPC, context out to the calls a
//! request makes, spans exported over OTLP (set up by [`crate::telemetry::init_with_traces`]).
//!
//! Off unless an OTLP endpoint is configured. Off, [`TraceLayer`] only looks for a
//! `traceparent` header: when a caller sent one, the request's log lines carry its trace id
//! (a span `rpc{trace_id=…}` with nothing else), so logs can still be matched to the caller's
//! trace; no span is exported and nothing is propagated onward. Without the header nothing at
//! all is done.
//!
//! On, every RPC gets a server span named like `session.v1.CartService/AddItem` (`rpc.system`
//! = grpc, `rpc.service`, `rpc.method`, and `rpc.grpc.status_code` once the response's status
//! is known), the child of the caller's `traceparent` when there is one and the root of a new
//! trace otherwise. The spans handlers open are its children, and its `trace_id` field puts
//! the trace id on every log line written inside it, in the text and JSON formats alike.
//! Outgoing calls made within it carry it on with [`inject`].

use std::{
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::Frame;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, Status, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::{
    Code,
    body::Body,
    codegen::http,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};
use tower::{Layer, Service};
use tracing::{Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const STATUS_HEADER: &str = "grpc-status";

/// Whether spans are exported: set once by [`crate::telemetry::init_with_traces`].
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when an OTLP exporter is installed.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Checks an `--otlp-endpoint` value: an `http://HOST:PORT` URL of an OTLP/gRPC receiver
/// (a collector, Jaeger, an agent on the same host). TLS towards the collector is not offered.
pub fn parse_endpoint(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(value.trim_end_matches('/').to_string()),
        (Some("https"), _) => Err(
            "https:// is not supported: point it at a collector reached in plaintext (a \
             sidecar or node agent), http://HOST:PORT"
                .into(),
        ),
        _ => Err("expected http://HOST:PORT".into()),
    }
}

/// The endpoint to export to: the flag (or its service-specific variable, which clap read),
/// else OpenTelemetry's standard `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set and valid.
pub fn endpoint(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string).or_else(|| {
        let value = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| parse_endpoint(value).ok())?
    })
}

/// Reads trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes trace context into gRPC request metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Adds `span`'s trace context (`traceparent`, `tracestate`) to an outgoing call's metadata,
/// so the server it calls continues the trace. Nothing when tracing is off or `span` has no
/// trace.
pub fn inject(span: &Span, metadata: &mut MetadataMap) {
    if !enabled() || span.is_none() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// [`inject`] with the current span: for calls made on behalf of the request being served.
pub fn inject_current(metadata: &mut MetadataMap) {
    if enabled() {
        inject(&Span::current(), metadata);
    }
}

/// A client span for one call that serves several requests at once (a batch of writes): the
/// child of the first request's span, with links to the other requests' spans, so each
/// request's trace shows the call that carried its part. [`Span::none`] when tracing is off.
pub fn client_span<'a>(name: &'static str, requests: impl IntoIterator<Item = &'a Span>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let mut requests = requests.into_iter();
    let first = requests.next().cloned().unwrap_or_else(Span::none);
    let span = tracing::info_span!(
        parent: &first,
        "rpc",
        otel.name = name,
        otel.kind = "client",
        trace_id = field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service);
    span.set_attribute("rpc.method", method);
    let first_cx = first.context().span().span_context().clone();
    let mut linked: Vec<SpanContext> = Vec::new();
    for request in requests {
        let cx = request.context().span().span_context().clone();
        if cx.is_valid() && cx != first_cx && !linked.contains(&cx) {
            linked.push(cx);
        }
    }
    span.set_attribute("batch.linked_requests", linked.len() as i64);
    for cx in linked {
        span.add_link(cx);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", field::display(trace_id));
    span
}

/// The server span of `request` (see the module's documentation), or [`Span::none`].
fn server_span<B>(request: &http::Request<B>) -> Span {
    let enabled = enabled();
    let headers = request.headers();
    if !enabled && !headers.contains_key(TRACEPARENT) {
        return Span::none();
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let remote = parent.span().span_context().clone();
    let path = request.uri().path().trim_start_matches('/');
    if !enabled {
        if !remote.is_valid() {
            return Span::none();
        }
        let span = tracing::info_span!("rpc", trace_id = field::Empty);
        span.record("trace_id", field::display(remote.trace_id()));
        return span;
    }
    let span = tracing::info_span!(
        "rpc",
        otel.name = path,
        otel.kind = "server",
        trace_id = field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if remote.is_valid() {
        let _ = span.set_parent(parent);
    }
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_string());
    span.set_attribute("rpc.method", method.to_string());
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", field::display(trace_id));
    span
}

/// Records a response's gRPC status on its server span. Per OpenTelemetry's conventions for
/// gRPC servers, only the codes that mean the server failed mark the span as an error; a
/// client's mistake (INVALID_ARGUMENT, NOT_FOUND, ...) is not the server's error.
fn record_status(span: &Span, headers: &http::HeaderMap) {
    if !enabled() || span.is_none() {
        return;
    }
    let Some(code) = crate::error_info::status_code(headers) else {
        return;
    };
    span.set_attribute("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(Status::error(crate::error_info::code_reason(code)));
    }
}

/// Tower layer that gives every request its server span ([`server_span`]) and records the
/// response's status on it; the span stays open until the response body (and its trailers)
/// has been sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for TraceService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = server_span(&request);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TraceFuture { inner, span }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`TraceService`]: the handler runs inside the request's span.
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Span,
    }
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = {
            let _entered = this.span.enter();
            ready!(this.inner.poll(cx))?
        };
        if this.span.is_none() {
            return Poll::Ready(Ok(response));
        }
        if response.headers().contains_key(STATUS_HEADER) {
            // Trailers-only: the status is in the headers and the body is empty.
            record_status(this.span, response.headers());
            return Poll::Ready(Ok(response));
        }
        let span = std::mem::replace(this.span, Span::none());
        Poll::Ready(Ok(
            response.map(|inner| Body::new(TraceBody { inner, span }))
        ))
    }
}

pin_project_lite::pin_project! {
    /// A response body polled inside the request's span (a streaming handler's work happens
    /// there), whose trailers' status is recorded on it; the span ends with the body.
    struct TraceBody {
        #[pin]
        inner: Body,
        span: Span,
    }
}

impl http_body::Body for TraceBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = frame.as_ref()
            && let Some(trailers) = frame.trailers_ref()
        {
            record_status(this.span, trailers);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http_urls() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:4317/").unwrap(),
            "http://127.0.0.1:4317"
        );
        assert!(parse_endpoint("https://collector:4317").is_err());
        assert!(parse_endpoint("collector:4317").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }

    #[test]
    fn off_without_a_traceparent_no_span_is_made() {
        let request = http::Request::builder()
            .uri("/session.v1.CartService/AddItem")
            .body(())
            .unwrap();
        assert!(server_span(&request).is_none());
    }
}
