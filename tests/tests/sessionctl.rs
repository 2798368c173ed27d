//! sessionctl, end to end: the real binary against a real session-svc and store-svc on
//! loopback. Each command is run for its table and for its JSON, and what it shows is checked
//! against what the gRPC clients see. import, jobs and job need JobService, which session-svc
//! does not serve yet: they run against a stand-in (at the end of this file).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::session::v1::{
    CancelJobRequest, EntryFailure, GetJobRequest, GetStockRequest, ImportEntriesRequest, Job,
    JobState, ListJobsRequest, ListJobsResponse, ListSessionEventsRequest, WatchJobRequest,
    job_service_server::{JobService, JobServiceServer},
};
use serde_json::{Value, json};
use tests::{
    SessionOptions,
    session::ADMIN_TOKEN,
    session_client::{add_item, apply_discount, get_session, list_entries, start},
    sessionctl::{Run, Sessionctl, interrupt},
    spawn_session_stack,
    tls::DevCerts,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    sync::{Notify, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Server, server::TcpIncoming},
};

/// How long a watching sessionctl may take to print what a test waits for: a bound so that a
/// broken watch fails instead of hanging, not a timing assertion.
const WATCH_LIMIT: Duration = Duration::from_secs(20);

/// The keys of a JSON array of objects, in order.
fn keys_of(listed: &Value, field: &str) -> Vec<String> {
    listed
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {listed}"))
        .iter()
        .map(|item| item[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The line of a table whose first column is `first`, split into its cells.
fn row<'a>(run: &'a Run, first: &str) -> Vec<&'a str> {
    run.stdout
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()))
        .map(Iterator::collect::<Vec<_>>)
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row starting {first:?} in:\n{}", run.stdout))
}

/// Asserts that `run` failed as an RPC error with `code` (exit 1, `error: CODE: ...`).
fn assert_rpc_error(run: &Run, code: &str) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.starts_with(&format!("error: {code}: ")),
        "expected {code}: {run:#?}"
    );
}

#[tokio::test]
async fn the_observer_lists_describes_kills_and_counts_actors() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session);
    let mut cart = stack.session.cart().await;
    let key = "alice-cart";
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "A1", 2, 1999).await.unwrap();
    for n in 0..4 {
        start(&mut cart, &format!("other-{n}")).await.unwrap();
    }

    // Pages of two: sessionctl follows next_page_token to the end.
    let listed = ctl
        .run(&["actors", "--kind", "cart", "--json", "--page-size", "2"])
        .await
        .ok()
        .json();
    assert_eq!(
        keys_of(&listed, "key"),
        ["alice-cart", "other-0", "other-1", "other-2", "other-3"]
    );
    for actor in listed.as_array().unwrap() {
        assert_eq!(actor["kind"], "cart", "{actor}");
        assert_eq!(actor["status"], "ACTOR_STATUS_LIVE", "{actor}");
    }
    let table = ctl.run(&["actors", "--kind", "cart"]).await.ok();
    assert_eq!(row(&table, "cart")[1], "alice-cart", "{}", table.stdout);
    assert_eq!(row(&table, "cart")[2], "live", "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 1 + 5, "{}", table.stdout);
    let quarantined = ctl
        .run(&["actors", "--status", "quarantined", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(quarantined, json!([]));

    // One actor, every field of it.
    let actor = ctl.run(&["actor", "cart", key, "--json"]).await.ok().json();
    assert_eq!(actor["kind"], "cart");
    assert_eq!(actor["key"], key);
    assert_eq!(actor["status"], "ACTOR_STATUS_LIVE");
    assert_eq!(actor["restarts"], 0);
    for field in [
        "mailbox_len",
        "idle",
        "state_bytes",
        "version",
        "activated",
        "last_active",
        "quarantined_until",
        "watchers",
        "reminder",
        "timers",
    ] {
        assert!(actor.get(field).is_some(), "no {field} in {actor}");
    }
    assert_eq!(actor["quarantined_until"], Value::Null, "{actor}");
    let table = ctl.run(&["actor", "cart", key]).await.ok();
    assert_eq!(row(&table, "status"), ["status", "live"]);
    assert_eq!(row(&table, "restarts"), ["restarts", "0"]);
    assert_eq!(row(&table, "quarantined_until"), ["quarantined_until", "-"]);

    // Kill it; its next request restarts it, and GetActor counts the restart.
    let killed = ctl.run(&["kill", "cart", key]).await.ok();
    assert!(
        killed.stdout.contains("killed cart/alice-cart"),
        "{killed:#?}"
    );
    get_session(&mut cart, key).await.unwrap();
    let actor = ctl.run(&["actor", "cart", key, "--json"]).await.ok().json();
    assert_eq!(actor["restarts"], 1, "{actor}");
    assert_eq!(actor["status"], "ACTOR_STATUS_LIVE", "{actor}");
    let killed = ctl.run(&["kill", "cart", key, "--json"]).await.ok().json();
    assert_eq!(killed, json!({"kind": "cart", "key": key, "killed": true}));
    get_session(&mut cart, key).await.unwrap();

    // Stats: live actors per kind, and the two restarts.
    let stats = ctl.run(&["stats", "--json"]).await.ok().json();
    assert_eq!(stats["live_by_kind"]["cart"], 5, "{stats}");
    let carts = stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kind| kind["kind"] == "cart")
        .unwrap_or_else(|| panic!("no cart in {stats}"));
    assert_eq!(carts["live"], 5, "{stats}");
    assert_eq!(carts["restarts"], 2, "{stats}");
    assert!(stats["uptime"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["store_calls"]["calls"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let table = ctl.run(&["stats"]).await.ok();
    let cart_row = row(&table, "cart");
    assert_eq!(cart_row[1], "5", "{}", table.stdout);
    assert_eq!(cart_row[5], "2", "{}", table.stdout);

    // An actor that is not there.
    assert_rpc_error(
        &ctl.run(&["actor", "cart", "nobody", "--json"]).await,
        "NOT_FOUND",
    );
    assert_rpc_error(&ctl.run(&["kill", "cart", "nobody"]).await, "NOT_FOUND");
}

#[tokio::test]
async fn cart_show_and_events_match_what_the_cart_service_says() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session);
    let mut cart = stack.session.cart().await;
    let key = "bob-cart";
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "A1", 2, 1999).await.unwrap();
    add_item(&mut cart, key, "B2", 1, 500).await.unwrap();
    let session = apply_discount(&mut cart, key, "SAVE10").await.unwrap();

    let shown = ctl.run(&["cart", "show", key, "--json"]).await.ok().json();
    assert_eq!(shown["key"], key);
    assert_eq!(shown["status"], "SESSION_STATUS_ACTIVE");
    assert_eq!(shown["domain"], "shop.example");
    assert_eq!(shown["version"], session.version);
    assert_eq!(
        shown["items"],
        json!([
            {"sku": "A1", "name": "product A1", "quantity": 2,
             "unit_price": {"currency_code": "USD", "minor_units": 1999}},
            {"sku": "B2", "name": "product B2", "quantity": 1,
             "unit_price": {"currency_code": "USD", "minor_units": 500}},
        ])
    );
    assert_eq!(shown["discounts"][0]["code"], "SAVE10");
    assert_eq!(shown["discounts"][0]["kind"], "DISCOUNT_KIND_PERCENTAGE");
    assert_eq!(
        shown["total"]["minor_units"],
        session.total.as_ref().unwrap().minor_units
    );
    assert_eq!(shown["event_count"], session.event_count);
    let created = shown["create_time"].as_str().unwrap();
    assert!(
        created.len() >= 20 && created.ends_with('Z') && &created[10..11] == "T",
        "{created}"
    );

    let table = ctl.run(&["cart", "show", key]).await.ok();
    assert_eq!(row(&table, "A1"), ["A1", "product A1", "2", "19.99 USD"]);
    assert_eq!(row(&table, "B2"), ["B2", "product B2", "1", "5.00 USD"]);
    assert_eq!(row(&table, "subtotal"), ["subtotal", "44.98 USD"]);
    assert_eq!(row(&table, "SAVE10"), ["SAVE10", "10%"]);
    assert_eq!(row(&table, "status"), ["status", "active"]);

    // The whole history, in pages of two, as ListSessionEvents has it.
    let expected = cart
        .list_session_events(ListSessionEventsRequest {
            key: key.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(expected.len() as u64, session.event_count);
    assert!(expected.len() >= 4, "{expected:?}");
    let events = ctl
        .run(&["cart", "events", key, "--json", "--page-size", "2"])
        .await
        .ok()
        .json();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), expected.len(), "{events:?}");
    for (shown, expected) in events.iter().zip(&expected) {
        assert_eq!(shown["sequence"], expected.sequence);
        assert_eq!(shown["event"], expected.event.as_str());
        assert_eq!(shown["detail"], expected.detail.as_str());
        assert!(shown["time"].is_string(), "{shown}");
    }
    let table = ctl.run(&["cart", "events", key]).await.ok();
    for expected in &expected {
        let cells = row(&table, &expected.sequence.to_string());
        assert_eq!(cells[2], expected.event, "{}", table.stdout);
    }

    assert_rpc_error(
        &ctl.run(&["cart", "show", "never-started"]).await,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn todo_entries_are_added_and_listed_through_every_page() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session);
    let mut todo = stack.session.todo().await;
    let list = "groceries";

    let added = ctl
        .run(&["todo", "add", list, "2026-11-22", "milk", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(
        added,
        json!({"id": 1, "date": "2026-11-22", "title": "milk"})
    );
    let added = ctl
        .run(&["todo", "add", list, "2026-11-21", "oat milk"])
        .await
        .ok();
    assert_eq!(
        added.stdout.trim(),
        "added entry 2 to groceries: 2026-11-21 oat milk"
    );
    ctl.run(&["todo", "add", list, "2026-11-23", "bread"])
        .await
        .ok();

    // What the to-do service has, in its order (date, then id), every page of it.
    let entries = list_entries(&mut todo, list, "").await.unwrap();
    assert_eq!(entries.len(), 3);
    let listed = ctl
        .run(&["todo", "list", list, "--json", "--page-size", "1"])
        .await
        .ok()
        .json();
    let expected: Vec<Value> = entries
        .iter()
        .map(|e| json!({"id": e.id, "date": e.date, "title": e.title}))
        .collect();
    assert_eq!(listed, Value::Array(expected));
    assert_eq!(listed[0]["title"], "oat milk");
    let one_day = ctl
        .run(&["todo", "list", list, "--date", "2026-11-22", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(
        one_day,
        json!([{"id": 1, "date": "2026-11-22", "title": "milk"}])
    );
    let table = ctl.run(&["todo", "list", list]).await.ok();
    assert_eq!(row(&table, "2"), ["2", "2026-11-21", "oat milk"]);
    assert_eq!(row(&table, "1"), ["1", "2026-11-22", "milk"]);
    assert_eq!(table.stdout.lines().count(), 1 + 3, "{}", table.stdout);

    // A date the server refuses: its INVALID_ARGUMENT, nothing added.
    assert_rpc_error(
        &ctl.run(&["todo", "add", list, "tomorrow", "x"]).await,
        "INVALID_ARGUMENT",
    );
    assert_eq!(list_entries(&mut todo, list, "").await.unwrap().len(), 3);
}

#[tokio::test]
async fn stock_set_is_what_the_inventory_service_reports() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session);
    let mut inventory = stack.session.inventory().await;
    let on_hand = |stock: tonic::Response<proto::session::v1::Stock>| stock.into_inner().on_hand;

    let table = ctl.run(&["stock", "set", "mug", "7"]).await.ok();
    assert_eq!(row(&table, "on_hand"), ["on_hand", "7"]);
    let stock = inventory
        .get_stock(GetStockRequest { sku: "mug".into() })
        .await
        .unwrap();
    assert_eq!(on_hand(stock), 7);

    let set = ctl
        .run(&["stock", "set", "mug", "9", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(set["sku"], "mug");
    assert_eq!(set["on_hand"], 9);
    assert_eq!(set["available"], 9);
    let stock = inventory
        .get_stock(GetStockRequest { sku: "mug".into() })
        .await
        .unwrap();
    assert_eq!(on_hand(stock), 9);
    let shown = ctl
        .run(&["stock", "show", "mug", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown, set);

    assert_rpc_error(
        &ctl.run(&["stock", "show", "never-stocked"]).await,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn stats_watch_refreshes_until_ctrl_c() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session);
    let mut cart = stack.session.cart().await;
    start(&mut cart, "watched").await.unwrap();

    // --json: one object per line, per refresh.
    let mut watch = ctl
        .spawn(&["stats", "--watch", "--json", "--interval", "100ms"])
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let two_lines = tokio::time::timeout(WATCH_LIMIT, async {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let line = lines.next_line().await.unwrap().expect("stdout ended");
            seen.push(serde_json::from_str::<Value>(&line).expect("a JSON line"));
        }
        seen
    })
    .await
    .expect("two refreshes printed");
    for stats in &two_lines {
        assert_eq!(stats["live_by_kind"]["cart"], 1, "{stats}");
    }
    let status = interrupt(&mut watch).await.unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");

    // The table: each refresh clears the screen and draws again.
    let mut watch = ctl
        .spawn(&["stats", "--watch", "--interval", "100ms"])
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let screen = tokio::time::timeout(WATCH_LIMIT, async {
        let mut screen = String::new();
        let mut chunk = [0; 4096];
        while screen.matches("\x1b[2J").count() < 2 {
            let read = stdout.read(&mut chunk).await.unwrap();
            assert!(read > 0, "stdout ended: {screen}");
            screen.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
        screen
    })
    .await
    .expect("two frames drawn");
    let frame = screen.split("\x1b[2J").nth(1).unwrap();
    assert!(frame.contains("KIND"), "{frame}");
    assert!(
        frame.lines().any(|line| line.starts_with("cart  1 ")),
        "{frame}"
    );
    let status = interrupt(&mut watch).await.unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn failures_exit_1_with_the_grpc_code_and_bad_usage_exits_64() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session);

    // The admin API checks the token: a wrong one and none are both UNAUTHENTICATED.
    let wrong = ctl.clone().token(Some("not-the-token"));
    assert_rpc_error(&wrong.run(&["stats"]).await, "UNAUTHENTICATED");
    assert_rpc_error(&wrong.run(&["actors", "--json"]).await, "UNAUTHENTICATED");
    let missing = ctl.clone().token(None);
    assert_rpc_error(&missing.run(&["stats", "--json"]).await, "UNAUTHENTICATED");
    // The token and address may come from the environment instead.
    let from_env = ctl
        .clone()
        .without_addr()
        .token(None)
        .env("SESSIONCTL_ADDR", stack.session.endpoint())
        .env("SESSIONCTL_TOKEN", ADMIN_TOKEN);
    let stats = from_env.run(&["stats", "--json"]).await.ok().json();
    assert!(stats["live_actors"].is_u64(), "{stats}");

    // Usage errors: 64, clap's message on stderr, nothing sent.
    for args in [
        &["frobnicate"][..],
        &["actor", "cart"],
        &["todo", "add", "list-only"],
        &["stats", "--interval", "2"],
        &["actors", "--status", "asleep"],
        &["stock", "set", "mug", "seven"],
        &[],
    ] {
        let run = ctl.run(args).await;
        assert_eq!(run.code, Some(64), "{args:?}: {run:#?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
        assert!(!run.stderr.is_empty(), "{args:?}: {run:#?}");
    }
    let help = ctl.run(&["--help"]).await.ok();
    assert!(help.stdout.contains("Exit codes"), "{help:#?}");
    let help = ctl.run(&["import", "--help"]).await.ok();
    assert!(help.stdout.contains("cancel job"), "{help:#?}");

    // A closed loopback port: exit 1, naming the address.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nowhere = Sessionctl::new(format!("http://{closed}")).unwrap();
    let run = nowhere.run(&["stats"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot reach session-svc at http://{closed}"
        )),
        "{run:#?}"
    );

    // TLS settings that cannot work are usage errors.
    let https = Sessionctl::new(format!("https://{closed}")).unwrap();
    let run = https.run(&["stats"]).await;
    assert_eq!(run.code, Some(64), "{run:#?}");
    assert!(run.stderr.contains("--tls-ca"), "{run:#?}");
    let run = ctl.run(&["--tls-ca", "/nonexistent/ca.pem", "stats"]).await;
    assert_eq!(run.code, Some(64), "{run:#?}");
    assert!(run.stderr.contains("https://"), "{run:#?}");
}

#[tokio::test]
async fn a_tls_port_is_reached_with_the_ca_that_signed_it() {
    let certs = DevCerts::temp();
    let (cert, key) = certs.session_identity();
    let stack = spawn_session_stack(SessionOptions::new().tls(&cert, &key)).await;
    let addr = format!("https://{}", stack.session.addr());
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();

    let ctl = Sessionctl::new(&addr).unwrap();
    let stats = ctl
        .run(&["--tls-ca", ca, "stats", "--json"])
        .await
        .ok()
        .json();
    assert!(stats["live_actors"].is_u64(), "{stats}");
    let from_env = ctl.clone().env("SESSIONCTL_TLS_CA", ca);
    from_env
        .run(&["todo", "add", "over-tls", "2026-01-01", "a"])
        .await
        .ok();
    let listed = from_env
        .run(&["todo", "list", "over-tls", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(keys_of(&listed, "title"), ["a"]);

    // A CA that did not sign the server's certificate: the handshake fails, exit 1.
    let other = DevCerts::temp();
    let other_ca = other.ca();
    let run = ctl
        .run(&["--tls-ca", other_ca.to_str().unwrap(), "stats"])
        .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("cannot reach session-svc"), "{run:#?}");
    // Plaintext to a TLS port fails too, and says where.
    let plaintext = Sessionctl::new(stack.session.endpoint()).unwrap();
    let run = plaintext.run(&["stats"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
}

#[tokio::test]
async fn import_reads_its_file_before_it_connects() {
    // No server at all: what is wrong with the file is reported first.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let ctl = Sessionctl::new(format!("http://{closed}")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.csv");
    let run = ctl.run(&["import", missing.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("missing.csv"), "{run:#?}");

    let latin1 = dir.path().join("latin1.csv");
    std::fs::write(&latin1, b"list,date,title\nhome,2026-01-01,caf\xe9\n").unwrap();
    let run = ctl.run(&["import", latin1.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("latin1.csv line 2"), "{run:#?}");

    let header_only = dir.path().join("header-only.csv");
    std::fs::write(&header_only, "date,title\n").unwrap();
    let run = ctl
        .run(&["import", header_only.to_str().unwrap(), "--list", "home"])
        .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("no entries"), "{run:#?}");

    // A header that says the rows carry their list, with --list: a usage error.
    let with_lists = dir.path().join("with-lists.csv");
    std::fs::write(&with_lists, "list,date,title\nhome,2026-01-01,milk\n").unwrap();
    let run = ctl
        .run(&["import", with_lists.to_str().unwrap(), "--list", "home"])
        .await;
    assert_eq!(run.code, Some(64), "{run:#?}");
    assert!(run.stderr.contains("--list"), "{run:#?}");

    // A good file, then: only now does it try to connect.
    let run = ctl.run(&["import", with_lists.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("cannot reach session-svc"), "{run:#?}");
}

// JobService is not served by session-svc yet, so `import`, `jobs` and `job` run here against
// a stand-in JobService in this process that records what it is sent. It checks sessionctl's
// side of the contract (entries and their lines, following pages and the watch, Ctrl-C's
// cancel), not the server's.

/// A stand-in JobService: each upload becomes a job that either finishes at once (failing the
/// entries without a title) or runs until cancelled.
#[derive(Clone, Default)]
struct StandIn {
    inner: Arc<Mutex<StandInState>>,
    /// Told when a WatchJob starts.
    watching: Arc<Notify>,
}

#[derive(Default)]
struct StandInState {
    /// Jobs never finish by themselves.
    hold: bool,
    /// Every upload, in order: job i+1's entries.
    uploads: Vec<Vec<ImportEntriesRequest>>,
    /// The jobs as they are now.
    jobs: Vec<Job>,
    /// Where a held job's watch stream is, to send its cancellation.
    held: Vec<mpsc::Sender<Result<Job, Status>>>,
    /// Ids CancelJob was called with.
    cancelled: Vec<String>,
}

impl StandIn {
    /// Serves it on a free loopback port; answers the `http://` address.
    async fn serve(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = TcpIncoming::from(listener);
        tokio::spawn(
            Server::builder()
                .add_service(JobServiceServer::new(self))
                .serve_with_incoming(incoming),
        );
        format!("http://{addr}")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StandInState> {
        self.inner.lock().unwrap()
    }

    fn job(&self, id: &str) -> Result<Job, Status> {
        self.state()
            .jobs
            .iter()
            .find(|job| job.id == id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no job {id}")))
    }
}

/// What a job that tried every entry of `entries` reports.
fn finished(id: &str, entries: &[ImportEntriesRequest]) -> Job {
    let failures: Vec<EntryFailure> = entries
        .iter()
        .filter(|entry| entry.title.is_empty())
        .map(|entry| EntryFailure {
            line: entry.line,
            code: "INVALID_ARGUMENT".into(),
            message: "invalid title: must not be empty".into(),
        })
        .collect();
    let total = entries.len() as u64;
    Job {
        id: id.into(),
        state: JobState::Succeeded as i32,
        total,
        processed: total,
        imported: total - failures.len() as u64,
        failed: failures.len() as u64,
        failures,
        ..Job::default()
    }
}

#[tonic::async_trait]
impl JobService for StandIn {
    async fn import_entries(
        &self,
        request: Request<Streaming<ImportEntriesRequest>>,
    ) -> Result<Response<Job>, Status> {
        let mut stream = request.into_inner();
        let mut entries = Vec::new();
        while let Some(entry) = stream.message().await? {
            entries.push(entry);
        }
        let mut state = self.state();
        state.uploads.push(entries.clone());
        let id = format!("job-{}", state.uploads.len());
        let job = if state.hold {
            Job {
                id,
                state: JobState::Running as i32,
                total: entries.len() as u64,
                ..Job::default()
            }
        } else {
            finished(&id, &entries)
        };
        state.jobs.push(job.clone());
        // The upload's answer: the job waiting for a slot.
        Ok(Response::new(Job {
            state: JobState::Pending as i32,
            processed: 0,
            imported: 0,
            failed: 0,
            failures: Vec::new(),
            ..job
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        self.job(&request.into_inner().id).map(Response::new)
    }

    type WatchJobStream = ReceiverStream<Result<Job, Status>>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = self.job(&request.into_inner().id)?;
        let (tx, rx) = mpsc::channel(8);
        // Half way first, then the job as it is, without its failures (GetJob has them).
        let half = Job {
            state: JobState::Running as i32,
            processed: job.total / 2,
            failures: Vec::new(),
            ..job.clone()
        };
        tx.try_send(Ok(half)).unwrap();
        let mut state = self.state();
        if state.hold {
            state.held.push(tx);
        } else {
            let now = Job {
                failures: Vec::new(),
                ..job
            };
            tx.try_send(Ok(now)).unwrap();
        }
        drop(state);
        self.watching.notify_one();
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let id = request.into_inner().id;
        let mut state = self.state();
        state.cancelled.push(id.clone());
        let job = state
            .jobs
            .iter_mut()
            .find(|job| job.id == id)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        job.state = JobState::Cancelled as i32;
        job.error = "cancelled by a client".into();
        let job = job.clone();
        for held in state.held.drain(..) {
            let _ = held.try_send(Ok(job.clone()));
        }
        Ok(Response::new(job))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        // One job a page, whatever was asked: sessionctl must follow the tokens.
        let request = request.into_inner();
        let state = self.state();
        let at: usize = request.page_token.parse().unwrap_or(0);
        let jobs: Vec<Job> = state
            .jobs
            .iter()
            .filter(|job| request.state == 0 || job.state == request.state)
            .skip(at)
            .take(1)
            .map(|job| Job {
                failures: Vec::new(),
                ..job.clone()
            })
            .collect();
        let more = state.jobs.len() > at + 1;
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: if more {
                (at + 1).to_string()
            } else {
                String::new()
            },
        }))
    }
}

#[tokio::test]
async fn import_sends_each_row_with_its_line_and_follows_the_job_to_its_end() {
    let jobs = StandIn::default();
    let ctl = Sessionctl::new(jobs.clone().serve().await).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entries.csv");
    std::fs::write(
        &file,
        "List,Date,Title\nhome,2026-01-01,milk\n\nwork,2026-01-02\nwork,2026-01-03,\"two\nlines\"\nhome,2026-01-04,eggs,extra\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // The table: the job's state and counts, and the failure with its line.
    let run = ctl.run(&["import", file]).await.ok();
    let entry = |list: &str, date: &str, title: &str, line| ImportEntriesRequest {
        list: list.into(),
        date: date.into(),
        title: title.into(),
        line,
    };
    assert_eq!(
        jobs.state().uploads[0],
        [
            entry("home", "2026-01-01", "milk", 2),
            entry("work", "2026-01-02", "", 4),
            entry("work", "2026-01-03", "two\nlines", 5),
            entry("home", "2026-01-04", "eggs", 7),
        ]
    );
    assert_eq!(row(&run, "state"), ["state", "succeeded"]);
    assert_eq!(row(&run, "imported"), ["imported", "3"]);
    assert_eq!(row(&run, "failed"), ["failed", "1"]);
    assert_eq!(
        row(&run, "4"),
        ["4", "INVALID_ARGUMENT", "invalid title: must not be empty"]
    );
    assert!(run.stderr.contains("line 7: 4 fields"), "{run:#?}");

    // JSON: the final job, failures included.
    let job = ctl.run(&["import", file, "--json"]).await.ok().json();
    assert_eq!(job["id"], "job-2");
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED");
    assert_eq!(job["total"], 4);
    assert_eq!(
        job["failures"],
        json!([{"line": 4, "code": "INVALID_ARGUMENT", "message": "invalid title: must not be empty"}])
    );

    // --list: two columns, every row in that list; --no-wait: the id, once uploaded.
    let dated = dir.path().join("dated.csv");
    std::fs::write(&dated, "2026-02-01,call mum\n").unwrap();
    let run = ctl
        .run(&[
            "import",
            dated.to_str().unwrap(),
            "--list",
            "family",
            "--no-wait",
        ])
        .await
        .ok();
    assert_eq!(run.stdout, "job-3\n");
    assert_eq!(
        jobs.state().uploads[2],
        [entry("family", "2026-02-01", "call mum", 1)]
    );

    // jobs: every page; job ID: one, with its failures.
    let listed = ctl.run(&["jobs", "--json"]).await.ok().json();
    assert_eq!(keys_of(&listed, "id"), ["job-1", "job-2", "job-3"]);
    let table = ctl.run(&["jobs"]).await.ok();
    assert_eq!(row(&table, "job-3")[1], "succeeded", "{}", table.stdout);
    let shown = ctl.run(&["job", "job-1", "--json"]).await.ok().json();
    assert_eq!(shown["failures"][0]["line"], 4, "{shown}");
    let watched = ctl
        .run(&["job", "watch", "job-1", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(watched["state"], "JOB_STATE_SUCCEEDED", "{watched}");
    assert_rpc_error(&ctl.run(&["job", "job-9"]).await, "NOT_FOUND");
}

#[tokio::test]
async fn ctrl_c_without_a_terminal_cancels_the_job_being_followed() {
    let jobs = StandIn::default();
    jobs.state().hold = true;
    let ctl = Sessionctl::new(jobs.clone().serve().await).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entries.csv");
    std::fs::write(&file, "home,2026-01-01,milk\nhome,2026-01-02,eggs\n").unwrap();

    let watching = jobs.watching.notified();
    let mut import = ctl.spawn(&["import", file.to_str().unwrap()]).unwrap();
    tokio::time::timeout(WATCH_LIMIT, watching)
        .await
        .expect("sessionctl watches the job");
    let status = interrupt(&mut import).await.unwrap();
    let mut stdout = String::new();
    let mut stderr = String::new();
    import
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    import
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(jobs.state().cancelled, ["job-1"]);
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("stdin is not a terminal, so cancelling job job-1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: job job-1 was cancelled"),
        "{stderr}"
    );
    assert!(stdout.contains("cancelled"), "{stdout}");
}
