//! Traces, end to end: one client call is one trace across session-svc and store-svc, exported
//! over OTLP to a collector (a fake one inside the test), and the trace id is on the services'
//! log lines. With a collector that never answers, exporting never holds up the exit.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind},
};
use proto::session::v1::KillActorRequest;
use tests::{
    SessionOptions, StoreOptions,
    session_client::{add_request, start},
    spawn_session, spawn_store_with,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, codegen::async_trait, metadata::MetadataValue};

/// The trace the test's "client" started, and the span id of its call (W3C trace context).
const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const CLIENT_SPAN_ID: &str = "eee19b7ec3c1b174";
/// A second trace, for the call checked in JSON logs.
const JSON_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// What one exported span came with.
#[derive(Debug, Clone)]
struct Exported {
    /// The `service.name` of its resource.
    service: String,
    span: Span,
}

/// An OTLP/gRPC receiver that keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Exported {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on a free loopback port until the test ends; its `http://ADDR`.
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn traced<T>(message: T, trace_id: &str, parent: &str) -> Request<T> {
    let mut request = Request::new(message);
    let traceparent = format!("00-{trace_id}-{parent}-01");
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::try_from(traceparent).unwrap());
    request
}

#[tokio::test]
async fn one_call_is_one_trace_across_both_services_and_its_id_is_in_the_logs() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let mut store = spawn_store_with(
        StoreOptions::new()
            .default_namespaces()
            .arg("--otlp-endpoint")
            .arg(&otlp),
    )
    .await;
    let mut session = spawn_session(
        &store.endpoint(),
        SessionOptions::new().flag("--otlp-endpoint", &otlp),
    )
    .await;

    let mut cart = session.cart().await;
    start(&mut cart, "traced").await.unwrap();
    cart.add_item(traced(
        add_request("traced", "A", 1, 1000),
        TRACE_ID,
        CLIENT_SPAN_ID,
    ))
    .await
    .unwrap();
    // KillActor logs a warning inside its request: a log line to find the trace id on.
    let mut admin = session.admin().await;
    let kill = KillActorRequest {
        kind: "cart".into(),
        key: "traced".into(),
    };
    admin
        .kill_actor(traced(kill, TRACE_ID, CLIENT_SPAN_ID))
        .await
        .unwrap();

    // The exit flushes what the batch processors still hold.
    session.terminate().await.unwrap();
    assert!(session.wait().await.unwrap().success());
    store.terminate().await.unwrap();
    assert!(store.wait().await.unwrap().success());

    let spans = collector.spans();
    let in_trace: Vec<&Exported> = spans
        .iter()
        .filter(|e| hex(&e.span.trace_id) == TRACE_ID)
        .collect();
    let describe = || {
        in_trace
            .iter()
            .map(|e| {
                format!(
                    "{} {} kind={} span={} parent={}",
                    e.service,
                    e.span.name,
                    e.span.kind,
                    hex(&e.span.span_id),
                    hex(&e.span.parent_span_id)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let add_item = in_trace
        .iter()
        .find(|e| e.service == "session-svc" && e.span.name == "session.v1.CartService/AddItem")
        .unwrap_or_else(|| panic!("no session-svc AddItem span in the trace:\n{}", describe()));
    assert_eq!(add_item.span.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&add_item.span.parent_span_id),
        CLIENT_SPAN_ID,
        "session-svc's span continues the client's"
    );
    assert_eq!(
        attribute(&add_item.span, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&add_item.span, "rpc.service").as_deref(),
        Some("session.v1.CartService")
    );
    assert_eq!(
        attribute(&add_item.span, "rpc.method").as_deref(),
        Some("AddItem")
    );
    assert_eq!(
        attribute(&add_item.span, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    // The write travelled to the store in this trace: store-svc's server span's parent is one
    // of session-svc's spans of the trace (the BatchWrite client span, itself under AddItem).
    let session_span_ids: Vec<String> = in_trace
        .iter()
        .filter(|e| e.service == "session-svc")
        .map(|e| hex(&e.span.span_id))
        .collect();
    let store_span = in_trace
        .iter()
        .find(|e| e.service == "store-svc" && e.span.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no store-svc server span in the trace:\n{}", describe()));
    assert!(
        store_span.span.name.starts_with("store.v1.StoreService/"),
        "{}",
        store_span.span.name
    );
    assert!(
        session_span_ids.contains(&hex(&store_span.span.parent_span_id)),
        "store-svc's span must be a child of a session-svc span of the trace:\n{}",
        describe()
    );
    // The write went in a BatchWrite: its client span is under AddItem (the batch's first
    // request), and store-svc's BatchWrite span under it.
    let batch = in_trace
        .iter()
        .find(|e| e.service == "session-svc" && e.span.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("no BatchWrite client span:\n{}", describe()));
    assert_eq!(batch.span.name, "store.v1.StoreService/BatchWrite");
    assert_eq!(batch.span.parent_span_id, add_item.span.span_id);
    assert!(
        in_trace.iter().any(|e| e.service == "store-svc"
            && e.span.name == "store.v1.StoreService/BatchWrite"
            && e.span.parent_span_id == batch.span.span_id),
        "store-svc's BatchWrite span must be the child of session-svc's:\n{}",
        describe()
    );
    let killed = in_trace
        .iter()
        .find(|e| e.span.name == "session.v1.AdminService/KillActor")
        .unwrap_or_else(|| panic!("no KillActor span:\n{}", describe()));
    assert_eq!(
        attribute(&killed.span, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    let logs = std::fs::read_to_string(session.stderr_path()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("actor killed by admin"))
        .unwrap_or_else(|| panic!("no KillActor log line in:\n{logs}"));
    assert!(
        line.contains(&format!("trace_id={TRACE_ID}")),
        "the log line written inside the traced call names its trace: {line}"
    );
}

#[tokio::test]
async fn with_tracing_off_json_logs_still_carry_the_callers_trace_id() {
    let store = spawn_store_with(StoreOptions::new().default_namespaces()).await;
    let mut session = spawn_session(
        &store.endpoint(),
        SessionOptions::new().flag("--log-format", "json"),
    )
    .await;
    let mut cart = session.cart().await;
    start(&mut cart, "json").await.unwrap();
    let mut admin = session.admin().await;
    let kill = KillActorRequest {
        kind: "cart".into(),
        key: "json".into(),
    };
    admin
        .kill_actor(traced(kill, JSON_TRACE_ID, CLIENT_SPAN_ID))
        .await
        .unwrap();
    session.terminate().await.unwrap();
    assert!(session.wait().await.unwrap().success());

    let logs = std::fs::read_to_string(session.stderr_path()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("actor killed by admin"))
        .unwrap_or_else(|| panic!("no KillActor log line in:\n{logs}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        json["span"]["trace_id"], JSON_TRACE_ID,
        "the JSON log line carries the caller's trace id: {line}"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_does_not_delay_the_exit() {
    // Accepts connections and never says a word: every export waits for its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let store = spawn_store_with(StoreOptions::new().default_namespaces()).await;
    let mut session = spawn_session(
        &store.endpoint(),
        SessionOptions::new().flag("--otlp-endpoint", &otlp),
    )
    .await;
    let mut cart = session.cart().await;
    // Requests are served while spans wait for the collector.
    start(&mut cart, "wedged").await.unwrap();
    cart.add_item(traced(
        add_request("wedged", "A", 1, 1000),
        TRACE_ID,
        CLIENT_SPAN_ID,
    ))
    .await
    .unwrap();
    drop(cart);

    let stopping = Instant::now();
    session.terminate().await.unwrap();
    assert!(session.wait().await.unwrap().success());
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?} with a silent collector:\n{}",
        session.stderr_tail(20)
    );
    held.abort();
}
