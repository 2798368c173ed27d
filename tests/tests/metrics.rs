//! `/metrics` of both services, scraped over HTTP and read with an independent parser
//! (prometheus-parse): every RPC is counted by service, method and code and timed in a
//! histogram; the services' own figures are there; the endpoint is a bounded HTTP server.

use std::{net::SocketAddr, time::Duration};

use prometheus_parse::{Scrape, Value};
use tests::{
    SessionOptions, StoreOptions,
    load::free_loopback_addr,
    raw_bytes::call_raw,
    session_client::{add_item, get_session, start},
    spawn_session, spawn_store_with,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// An HTTP/1.1 request and the whole answer (the server closes after `connection: close`).
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to /metrics");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    answer
}

/// `GET /metrics`: the content type and the parsed scrape.
async fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let answer = http(
        addr,
        "GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .expect("a content type");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    (
        content_type,
        Scrape::parse(lines).expect("a scrape the parser reads"),
    )
}

/// The value of the sample `metric` whose labels include all of `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn both_services_count_and_time_every_rpc_by_method_and_code() {
    let store_metrics = free_loopback_addr().unwrap();
    let session_metrics = free_loopback_addr().unwrap();
    let store = spawn_store_with(
        StoreOptions::new()
            .default_namespaces()
            .arg("--metrics-listen")
            .arg(store_metrics.to_string()),
    )
    .await;
    let session = spawn_session(
        &store.endpoint(),
        SessionOptions::new().metrics_listen(session_metrics),
    )
    .await;

    let mut cart = session.cart().await;
    start(&mut cart, "metrics/1").await.unwrap();
    for _ in 0..3 {
        add_item(&mut cart, "metrics/1", "A", 1, 100).await.unwrap();
    }
    let missing = get_session(&mut cart, "metrics/none").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let (content_type, scraped) = scrape(session_metrics).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let cart_rpc = |method: &'static str, code: &'static str| {
        [
            ("grpc_service", "session.v1.CartService"),
            ("grpc_method", method),
            ("grpc_code", code),
        ]
    };
    assert_eq!(
        value(
            &scraped,
            "grpc_server_handled_total",
            &cart_rpc("AddItem", "OK")
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scraped,
            "grpc_server_handled_total",
            &cart_rpc("StartSession", "OK")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scraped,
            "grpc_server_handled_total",
            &cart_rpc("GetSession", "NOT_FOUND")
        ),
        Some(1.0)
    );
    // The histogram: one observation per AddItem, in cumulative buckets up to +Inf.
    let histogram = scraped
        .samples
        .iter()
        .find(|s| {
            s.metric == "grpc_server_handling_seconds"
                && s.labels.get("grpc_method") == Some("AddItem")
        })
        .expect("AddItem's latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {:?}", histogram.value);
    };
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative buckets: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap().count, 3.0, "{buckets:?}");
    assert!(buckets.last().unwrap().less_than.is_infinite());
    // The service's own figures are on the same page.
    assert_eq!(
        value(
            &scraped,
            "session_actors",
            &[("kind", "cart"), ("status", "live")]
        ),
        Some(1.0)
    );
    assert!(value(&scraped, "grpc_connections_open", &[]).unwrap() >= 1.0);
    assert!(value(&scraped, "session_store_batched_writes_total", &[]).unwrap() >= 4.0);

    // store-svc counted the writes session-svc made, by its own method names.
    let (_, stored) = scrape(store_metrics).await;
    let writes: f64 = stored
        .samples
        .iter()
        .filter(|s| {
            s.metric == "grpc_server_handled_total"
                && s.labels.get("grpc_service") == Some("store.v1.StoreService")
                && s.labels.get("grpc_code") == Some("OK")
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(writes >= 4.0, "store-svc counted {writes} OK calls");
    assert!(value(&stored, "store_writes_total", &[]).unwrap() >= 4.0);
}

#[tokio::test]
async fn unknown_paths_share_one_series_and_the_endpoint_refuses_what_it_does_not_serve() {
    let session_metrics = free_loopback_addr().unwrap();
    let store = spawn_store_with(StoreOptions::new().default_namespaces()).await;
    let session = spawn_session(
        &store.endpoint(),
        SessionOptions::new().metrics_listen(session_metrics),
    )
    .await;
    // Calls to made-up methods: UNIMPLEMENTED, counted under `unknown`, never by their path.
    let channel = tonic::transport::Endpoint::from_shared(session.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for i in 0..5 {
        let path = format!("/session.v1.CartService/Invented{i}");
        let status = call_raw(channel.clone(), &path, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    let (_, scraped) = scrape(session_metrics).await;
    assert_eq!(
        value(
            &scraped,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "unknown"),
                ("grpc_method", "unknown"),
                ("grpc_code", "UNIMPLEMENTED")
            ]
        ),
        Some(5.0)
    );
    assert!(
        !scraped.samples.iter().any(|s| s
            .labels
            .get("grpc_method")
            .is_some_and(|m| m.starts_with("Invented"))),
        "a made-up method got a series of its own"
    );

    let not_found = http(
        session_metrics,
        "GET /other HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    let post = http(
        session_metrics,
        "POST /metrics HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // A client that connects and never sends its request is disconnected (header timeout),
    // rather than holding a connection slot for ever.
    let mut silent = TcpStream::connect(session_metrics).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), silent.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a silent connection was still open after 20 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_svc_on_postgres_shows_its_pool_and_retries() {
    let url = tokio::task::spawn_blocking(|| {
        tests::postgres::shared_server()?.create_database("metrics_pool")
    })
    .await
    .unwrap()
    .expect("a throwaway PostgreSQL (bash .ci/postgres.sh installs it)");
    let store_metrics = free_loopback_addr().unwrap();
    let store = spawn_store_with(
        StoreOptions::new()
            .postgres(url)
            .arg("--postgres-pool-size")
            .arg("4")
            .arg("--metrics-listen")
            .arg(store_metrics.to_string()),
    )
    .await;
    let mut client = store.client().await.unwrap();
    for key in ["a", "b", "c"] {
        tests::store_client::put(&mut client, "api", key, "v", 0)
            .await
            .unwrap();
    }

    let (_, stored) = scrape(store_metrics).await;
    assert_eq!(value(&stored, "store_postgres_pool_max", &[]), Some(4.0));
    let open = value(&stored, "store_postgres_pool_connections", &[]).unwrap();
    assert!((1.0..=4.0).contains(&open), "{open} connections open");
    let idle = value(&stored, "store_postgres_pool_idle", &[]).unwrap();
    assert!(idle <= open, "{idle} idle of {open}");
    // Three writes to three keys, one after another: nothing to retry.
    assert_eq!(
        value(&stored, "store_postgres_retries_total", &[]),
        Some(0.0)
    );
    assert_eq!(value(&stored, "store_writes_total", &[]), Some(3.0));
}
