//! sessionctl, end to end: the real binary against a real session-svc and store-svc on
//! loopback. Each command is run for its table and for its JSON, and what it shows is checked
//! against what the gRPC clients see.

use std::{collections::HashMap, time::Duration};

use proto::session::v1::{GetJobRequest, GetStockRequest, ListSessionEventsRequest};
use serde_json::{Value, json};
use tests::{
    SessionOptions,
    session::{ADMIN_TOKEN, JobClient, TodoClient},
    session_client::{add_item, apply_discount, get_session, list_entries, poll_until, start},
    sessionctl::{Run, Sessionctl, interrupt},
    spawn_session_stack,
    tls::DevCerts,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

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

/// How long a whole import through sessionctl may take before the test fails: a bound so that
/// a stuck job fails instead of hanging, not a timing assertion.
const IMPORT_LIMIT: Duration = Duration::from_secs(300);

/// A CSV file of `rows` entries under a `list,date,title` header, spread over `lists` lists
/// (`list-0`, ...), titled `row-<n>`; rows `n` in `bad` get an impossible date or a blank
/// title, alternately. Row n (from 0) is on line n + 2.
fn csv_file(dir: &std::path::Path, rows: u64, lists: u64, bad: &[u64]) -> std::path::PathBuf {
    let mut text = String::from("list,date,title\n");
    for n in 0..rows {
        let (mut date, mut title) = (
            format!("2026-{:02}-{:02}", 1 + n % 12, 1 + n % 28),
            format!("row-{n}"),
        );
        if let Some(i) = bad.iter().position(|b| *b == n) {
            if i % 2 == 0 {
                date = "2026-02-30".into();
            } else {
                title = " ".into();
            }
        }
        text.push_str(&format!("list-{},{date},{title}\n", n % lists));
    }
    let path = dir.join(format!("{rows}-rows.csv"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Titles in `list`, with how many times each appears.
async fn titles(todo: &mut TodoClient, list: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in list_entries(todo, list, "").await.unwrap_or_default() {
        *counts.entry(entry.title).or_default() += 1;
    }
    counts
}

/// Every title in lists `list-0` .. `list-{lists - 1}`, with how many times each appears.
async fn all_titles(todo: &mut TodoClient, lists: u64) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for list in 0..lists {
        for (title, n) in titles(todo, &format!("list-{list}")).await {
            *seen.entry(title).or_default() += n;
        }
    }
    seen
}

/// Waits until job `id` has processed at least `processed` entries.
async fn progressed(jobs: &JobClient, id: &str, processed: u64) {
    poll_until(IMPORT_LIMIT, Duration::from_millis(50), || {
        let mut jobs = jobs.clone();
        let id = id.to_owned();
        async move {
            let job = jobs.get_job(GetJobRequest { id }).await.ok()?.into_inner();
            (job.processed >= processed).then_some(())
        }
    })
    .await
    .unwrap_or_else(|| panic!("job {id} did not reach {processed} entries"));
}

#[tokio::test]
async fn import_of_10000_rows_fails_the_10_bad_ones_by_line_and_imports_the_rest_once() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session).timeout(IMPORT_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let bad: Vec<u64> = (0..10).map(|i| 317 + i * 997).collect();
    let file = csv_file(dir.path(), 10_000, 4, &bad);

    let run = ctl
        .run(&["import", file.to_str().unwrap(), "--json"])
        .await
        .ok();
    let job = run.json();
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(
        run.stderr
            .contains(&format!("job {id} uploaded (10000 entries)")),
        "{run:#?}"
    );
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");
    assert_eq!(
        (&job["total"], &job["imported"], &job["failed"]),
        (&json!(10_000), &json!(9_990), &json!(10))
    );
    let lines: Vec<u64> = job["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| {
            assert_eq!(failure["code"], "INVALID_ARGUMENT", "{failure}");
            failure["line"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(lines, bad.iter().map(|n| n + 2).collect::<Vec<_>>());

    let mut todo = stack.session.todo().await;
    let seen = all_titles(&mut todo, 4).await;
    assert_eq!(seen.len(), 9_990);
    assert!(seen.values().all(|n| *n == 1), "an entry imported twice");
    assert!(bad.iter().all(|n| !seen.contains_key(&format!("row-{n}"))));

    // The table of the same job: its state, counts and the failures with their lines.
    let shown = ctl.run(&["job", &id]).await.ok();
    assert_eq!(row(&shown, "state"), ["state", "succeeded"]);
    assert_eq!(row(&shown, "imported"), ["imported", "9990"]);
    assert_eq!(row(&shown, "failed"), ["failed", "10"]);
    let first = (bad[0] + 2).to_string();
    assert_eq!(
        row(&shown, &first)[1],
        "INVALID_ARGUMENT",
        "{}",
        shown.stdout
    );
    let shown = ctl.run(&["job", &id, "--json"]).await.ok().json();
    assert_eq!(shown["failures"], job["failures"]);

    // jobs: the table and JSON list it; stats counts it as succeeded.
    let listed = ctl.run(&["jobs", "--json"]).await.ok().json();
    assert_eq!(keys_of(&listed, "id"), std::slice::from_ref(&id));
    assert_eq!(listed[0]["imported"], 9_990);
    let table = ctl.run(&["jobs"]).await.ok();
    assert_eq!(row(&table, &id)[1], "succeeded", "{}", table.stdout);
    let stats = ctl.run(&["stats", "--json"]).await.ok().json();
    assert_eq!(stats["jobs"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["jobs"]["running"], 0, "{stats}");
    // Watching a job that ended shows it at once.
    let watched = ctl.run(&["job", "watch", &id, "--json"]).await.ok().json();
    assert_eq!(watched["state"], "JOB_STATE_SUCCEEDED", "{watched}");
    assert_rpc_error(&ctl.run(&["job", "0123456789ab-cdef"]).await, "NOT_FOUND");
}

#[tokio::test]
async fn import_takes_each_rows_line_from_the_file_and_no_wait_answers_the_id() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let ctl = Sessionctl::for_session(&stack.session).timeout(IMPORT_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entries.csv");
    // A header in any case, a blank line, a row without a title, a quoted title with a comma,
    // and a row with a field too many (warned about, the extra one ignored).
    std::fs::write(
        &file,
        "List,Date,Title\nhome,2026-01-01,milk\n\nwork,2026-01-02\nwork,2026-01-03,\"bread, rye\"\nhome,2026-01-04,eggs,extra\n",
    )
    .unwrap();

    let run = ctl.run(&["import", file.to_str().unwrap()]).await.ok();
    assert!(run.stderr.contains("line 6: 4 fields"), "{run:#?}");
    assert_eq!(row(&run, "state"), ["state", "succeeded"]);
    assert_eq!(row(&run, "total"), ["total", "4"]);
    assert_eq!(row(&run, "imported"), ["imported", "3"]);
    let failure = row(&run, "4");
    assert_eq!(failure[1], "INVALID_ARGUMENT", "{}", run.stdout);
    assert!(failure[2].contains("title"), "{}", run.stdout);
    let home = ctl
        .run(&["todo", "list", "home", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(keys_of(&home, "title"), ["milk", "eggs"]);
    let work = ctl
        .run(&["todo", "list", "work", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(keys_of(&work, "title"), ["bread, rye"]);

    // --list: two columns, every row in that list; --no-wait: the id alone, once uploaded.
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
    let id = run.stdout.trim_end().to_owned();
    assert_eq!(run.stdout, format!("{id}\n"));
    let watched = ctl.run(&["job", "watch", &id, "--json"]).await.ok().json();
    assert_eq!(watched["state"], "JOB_STATE_SUCCEEDED", "{watched}");
    assert_eq!(watched["imported"], 1, "{watched}");
    let family = ctl
        .run(&["todo", "list", "family", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(keys_of(&family, "title"), ["call mum"]);
    let listed = ctl.run(&["jobs", "--json"]).await.ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test]
async fn ctrl_c_without_a_terminal_cancels_the_import_and_what_was_imported_stays() {
    let stack = spawn_session_stack(SessionOptions::new().flag("--job-rate", 200)).await;
    let ctl = Sessionctl::for_session(&stack.session);
    let dir = tempfile::tempdir().unwrap();
    let file = csv_file(dir.path(), 5_000, 1, &[]);

    let mut import = ctl.spawn(&["import", file.to_str().unwrap()]).unwrap();
    // sessionctl says it follows the job once it has it; Ctrl-C is heard from then on.
    let mut stderr = BufReader::new(import.stderr.take().unwrap());
    let mut said = String::new();
    let id = tokio::time::timeout(WATCH_LIMIT, async {
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).await.unwrap() > 0, "{said}");
            said.push_str(&line);
            if let Some(rest) = line.strip_prefix("job ")
                && line.contains("following it")
            {
                break rest.split(' ').next().unwrap().to_owned();
            }
        }
    })
    .await
    .expect("sessionctl follows the job");
    let jobs = stack.session.jobs().await;
    progressed(&jobs, &id, 10).await;

    let status = interrupt(&mut import).await.unwrap();
    stderr.read_to_string(&mut said).await.unwrap();
    let mut stdout = String::new();
    import
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}\n{said}");
    assert!(
        said.contains(&format!("stdin is not a terminal, so cancelling job {id}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("error: job {id} was cancelled")),
        "{said}"
    );
    assert!(stdout.contains("cancelled"), "{stdout}");

    // The job stopped part way; what it imported stays, once each.
    let job = ctl.run(&["job", &id, "--json"]).await.ok().json();
    assert_eq!(job["state"], "JOB_STATE_CANCELLED", "{job}");
    let imported = job["imported"].as_u64().unwrap();
    assert!((10..5_000).contains(&imported), "{job}");
    let mut todo = stack.session.todo().await;
    let seen = titles(&mut todo, "list-0").await;
    assert_eq!(seen.len() as u64, imported);
    assert!(seen.values().all(|n| *n == 1));
    let stats = ctl.run(&["stats", "--json"]).await.ok().json();
    assert_eq!(stats["jobs"]["cancelled"], 1, "{stats}");
}

#[tokio::test]
async fn a_job_followed_across_a_sigkill_of_session_svc_finishes_without_duplicates() {
    let mut stack = spawn_session_stack(SessionOptions::new().flag("--job-rate", 1_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = csv_file(dir.path(), 4_000, 2, &[]);
    let ctl = Sessionctl::for_session(&stack.session).timeout(IMPORT_LIMIT);
    let run = ctl
        .run(&["import", file.to_str().unwrap(), "--no-wait"])
        .await
        .ok();
    let id = run.stdout.trim_end().to_owned();
    progressed(&stack.session.jobs().await, &id, 1_000).await;
    stack.session.kill().await.expect("SIGKILL session-svc");
    stack.session = stack.session.respawn().await;

    let ctl = Sessionctl::for_session(&stack.session).timeout(IMPORT_LIMIT);
    let done = ctl.run(&["job", "watch", &id, "--json"]).await.ok().json();
    assert_eq!(done["state"], "JOB_STATE_SUCCEEDED", "{done}");
    assert_eq!(
        (&done["imported"], &done["failed"]),
        (&json!(4_000), &json!(0))
    );
    assert!(done["resumes"].as_u64().unwrap() >= 1, "{done}");
    let mut todo = stack.session.todo().await;
    let seen = all_titles(&mut todo, 2).await;
    assert_eq!(seen.len(), 4_000);
    assert!(seen.values().all(|n| *n == 1), "an entry imported twice");
}
