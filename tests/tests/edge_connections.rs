//! Bounded connections at the edge, on the real binaries: silent TCP connections cannot lock
//! clients out even past the open-file limit, they are closed after the first-request
//! timeout, and a SIGTERM drains in well under the grace period however many idle or silent
//! connections are open, with or without the metrics endpoint.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tests::{
    SessionOptions, StoreOptions,
    session_client::{add_item, get_session, start, start_request, with_timeout},
    spawn_session, spawn_store_with,
};
use tokio::{io::AsyncReadExt, net::TcpStream, task::JoinSet};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Silent connections opened against a server limited to [`OPEN_FILE_LIMIT`] descriptors.
const SILENT: usize = 1_100;
const OPEN_FILE_LIMIT: u64 = 1_024;

/// The first-request timeout the silent connections run into.
const FIRST_REQUEST_TIMEOUT: &str = "3s";

/// A grace period far longer than a drain with nothing in flight needs: a drain that waited
/// for idle or silent connections to leave would take this long.
const GRACE: &str = "30s";

/// Hang guards (not performance targets): far above what the behaviour needs, far below
/// what the broken behaviour took.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Lets this test process hold more sockets than the server it is testing.
fn raise_own_file_limit() {
    let wanted = 4 * SILENT as u64;
    let soft = rlimit::increase_nofile_limit(wanted).expect("reading the open-file limit");
    assert!(
        soft >= 2 * SILENT as u64,
        "the test needs {} open files; the hard limit allows {soft}",
        2 * SILENT
    );
}

/// Opens `count` TCP connections to `addr` that never send a byte.
async fn open_silent(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    silent
}

/// Waits until every connection in `silent` was closed by the server (a read ends); returns
/// how long it took.
async fn all_closed(silent: Vec<TcpStream>) -> Duration {
    let started = Instant::now();
    let mut reads = JoinSet::new();
    for mut stream in silent {
        reads.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // An HTTP/2 server may send its SETTINGS before it gives up on us.
                    Ok(_) => continue,
                }
            }
        });
    }
    let waited = tokio::time::timeout(CLOSE_LIMIT, async {
        while reads.join_next().await.is_some() {}
    })
    .await;
    assert!(
        waited.is_ok(),
        "{} silent connections were still open after {CLOSE_LIMIT:?}",
        reads.len()
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_past_the_fd_limit_neither_lock_clients_out_nor_stay_open() {
    raise_own_file_limit();
    let store = spawn_store_with(StoreOptions::new()).await;
    let metrics = tests::load::free_loopback_addr().unwrap();
    let session = spawn_session(
        &store.endpoint(),
        SessionOptions::new()
            .open_file_limit(OPEN_FILE_LIMIT)
            .first_request_timeout(FIRST_REQUEST_TIMEOUT)
            .metrics_listen(metrics),
    )
    .await;
    let mut established = session.cart().await;
    start(&mut established, "established").await.unwrap();

    let silent = open_silent(session.addr(), SILENT).await;
    let opened = Instant::now();

    // The client that was already connected keeps being served throughout.
    for n in 0..20 {
        add_item(&mut established, "established", "A", 1, 100)
            .await
            .unwrap_or_else(|status| {
                panic!("AddItem {n} on the established connection: {status:?}")
            });
    }
    // So is a client that connects now, while the silent ones hold the listener: silent
    // connections older than a second are closed to make room for it.
    let mut newcomer = session.cart().await;
    let served = newcomer
        .start_session(with_timeout(
            start_request("newcomer"),
            Duration::from_secs(10),
        ))
        .await;
    assert!(served.is_ok(), "a new client was locked out: {served:?}");
    eprintln!(
        "a new client was served {:?} after the silent connections opened",
        opened.elapsed()
    );

    let took = all_closed(silent).await;
    eprintln!("{SILENT} silent connections were all closed {took:?} after opening");
    let samples = tests::load::scrape_metrics(metrics).await.unwrap();
    let closed = |reason: &str| {
        samples
            .get(&format!(
                "grpc_connections_closed_total{{reason=\"{reason}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let (timed_out, for_room) = (closed("no_first_request"), closed("room_at_cap"));
    eprintln!(
        "closed: {timed_out} after the first-request timeout, {for_room} to make room; cap {:?}",
        samples.get("grpc_connections_max")
    );
    assert_eq!(
        timed_out + for_room,
        SILENT as f64,
        "every silent connection was closed by one of the two rules: {samples:?}"
    );
    assert!(samples["grpc_connections_max"] < OPEN_FILE_LIMIT as f64);
    // The server stayed within its descriptors and is still serving.
    let session_after = get_session(&mut established, "established").await.unwrap();
    assert_eq!(session_after.key, "established");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", session.pid()))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert!(fds < OPEN_FILE_LIMIT as usize, "{fds} descriptors open");
    assert!(
        !session.stderr_tail(200).contains("panicked"),
        "session-svc panicked:\n{}",
        session.stderr_tail(50)
    );
}

/// SIGTERMs `process` and returns how long it took to exit, asserting exit code 0.
async fn terminate_timed(process: &mut tests::ServiceProcess) -> Duration {
    let started = Instant::now();
    process.terminate().await.expect("SIGTERM");
    let status = tokio::time::timeout(EXIT_LIMIT, process.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} still running {EXIT_LIMIT:?} after SIGTERM",
                process.label()
            )
        })
        .expect("wait");
    assert!(status.success(), "{} exited with {status}", process.label());
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_idle_and_silent_connections_and_metrics_exits_at_once() {
    let mut store = spawn_store_with(
        StoreOptions::new()
            .grace_period(GRACE)
            .arg("--metrics-listen")
            .arg(tests::load::free_loopback_addr().unwrap().to_string()),
    )
    .await;
    let mut session = spawn_session(
        &store.endpoint(),
        SessionOptions::new()
            .grace_period(GRACE)
            .metrics_listen(tests::load::free_loopback_addr().unwrap()),
    )
    .await;

    // An idle gRPC connection to each (each served one request) and silent TCP connections.
    let mut cart = session.cart().await;
    start(&mut cart, "drain").await.unwrap();
    let mut store_health = HealthClient::new(store.channel().await.unwrap());
    store_health
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let _silent_store = open_silent(store.addr(), 10).await;
    let _silent_session = open_silent(session.addr(), 10).await;

    let session_took = terminate_timed(&mut session).await;
    let store_took = terminate_timed(&mut store).await;
    eprintln!(
        "with a {GRACE} grace period: session-svc exited {session_took:?} after SIGTERM, store-svc {store_took:?}"
    );
    for (name, took) in [("session-svc", session_took), ("store-svc", store_took)] {
        assert!(
            took < Duration::from_secs(5),
            "{name} took {took:?} to drain with nothing in flight (grace {GRACE})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_its_client_reconnects_on_the_next_call() {
    let store = spawn_store_with(StoreOptions::new()).await;
    let metrics = tests::load::free_loopback_addr().unwrap();
    let session = spawn_session(
        &store.endpoint(),
        SessionOptions::new()
            .idle_connection_timeout("1s")
            .metrics_listen(metrics),
    )
    .await;
    let mut cart = session.cart().await;
    start(&mut cart, "idle").await.unwrap();
    let idle_closed = || async {
        let samples = tests::load::scrape_metrics(metrics).await.unwrap();
        samples
            .get("grpc_connections_closed_total{reason=\"idle\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let closed = tests::session_client::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (idle_closed().await >= 1.0).then_some(()) },
    )
    .await;
    assert!(closed.is_some(), "the idle connection was never closed");
    // The same client carries on: its channel reconnects.
    let session_now = get_session(&mut cart, "idle").await.unwrap();
    assert_eq!(session_now.key, "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_per_connection_limit_wait_and_other_connections_are_served() {
    let store = spawn_store_with(StoreOptions::new()).await;
    let session = spawn_session(
        &store.endpoint(),
        SessionOptions::new().max_concurrent_streams(2),
    )
    .await;
    let mut cart = session.cart().await;
    start(&mut cart, "streams").await.unwrap();
    // Two open watch streams take both of this connection's streams.
    let first = tests::session_client::watch_session(&mut cart, "streams")
        .await
        .unwrap();
    let _second = tests::session_client::watch_session(&mut cart, "streams")
        .await
        .unwrap();
    let blocked = cart
        .get_session(with_timeout(
            proto::session::v1::GetSessionRequest {
                key: "streams".into(),
            },
            Duration::from_secs(1),
        ))
        .await;
    assert!(
        blocked.is_err(),
        "a third stream on a connection limited to two was served: {blocked:?}"
    );
    // Another connection is not affected.
    let mut other = session.cart().await;
    get_session(&mut other, "streams").await.unwrap();
    // Ending one stream frees its slot for the waiting connection.
    drop(first);
    let freed = tests::session_client::poll_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let mut cart = cart.clone();
            async move { get_session(&mut cart, "streams").await.ok() }
        },
    )
    .await;
    assert!(freed.is_some(), "the freed stream slot was never reused");
}
