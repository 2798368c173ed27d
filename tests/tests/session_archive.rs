//! Archiving old sessions on the real binaries: checked-out, ended and expired carts older than
//! `--archive-after` leave the live namespaces (checked through store-svc's Scan), land in the
//! `archive` namespace where they can be read (or are gone with `--archive delete`), active
//! carts stay, and a sweeper pass SIGKILLed half-way resumes from its saved cursor. To-do lists
//! are kept until deleted unless `--todo-archive-after` is set.

use std::time::Duration;

use prost::Message as _;
use proto::{
    session::v1::{ListEntriesResponse, Session},
    store::v1::Entry,
};
use tests::{
    SessionOptions,
    session::{SessionProcess, spawn_session},
    session_client::{
        add_entry, add_item, checkout, end_session, get_session, list_entries, poll_until, start,
        stats,
    },
    spawn_session_stack,
    store::StoreProcess,
    store_client::scan_all,
};
use tonic::Code;

/// A hang guard: with `--sweep-interval 1s` every pass ends within seconds here.
const LIMIT: Duration = Duration::from_secs(60);

async fn scan(store: &StoreProcess, namespace: &str, prefix: &str) -> Vec<Entry> {
    let mut client = store.client().await.unwrap();
    scan_all(&mut client, namespace, prefix, 1000)
        .await
        .unwrap()
        .0
}

/// Waits until the live `cart` namespace holds exactly `left` records.
async fn wait_live_carts(store: &StoreProcess, left: usize) {
    let done = poll_until(LIMIT, Duration::from_millis(200), || async move {
        (scan(store, "cart", "").await.len() == left).then_some(())
    })
    .await;
    let now = scan(store, "cart", "").await.len();
    assert!(
        done.is_some(),
        "the live cart namespace still holds {now} records after {LIMIT:?}, expected {left}"
    );
}

/// Five checked-out, three ended and two active carts, each with an item.
async fn fill(session: &SessionProcess) {
    let mut cart = session.cart().await;
    for i in 0..10 {
        let key = format!("c/{i}");
        start(&mut cart, &key).await.unwrap();
        add_item(&mut cart, &key, "A", 1, 100).await.unwrap();
        match i {
            0..5 => drop(checkout(&mut cart, &key).await.unwrap()),
            5..8 => drop(end_session(&mut cart, &key).await.unwrap()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_sessions_move_to_the_archive_and_active_ones_stay() {
    let options = SessionOptions::new()
        .archive_after("1s")
        .sweep_interval("1s");
    let stack = spawn_session_stack(options).await;
    fill(&stack.session).await;
    let events_before = scan(&stack.store, "cart_events", "").await.len();
    assert_eq!(scan(&stack.store, "orders", "").await.len(), 5);

    wait_live_carts(&stack.store, 2).await;

    // Live storage shrank to the active carts: their record, their events, no orders.
    let live: Vec<String> = scan(&stack.store, "cart", "")
        .await
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(live, ["c/8", "c/9"]);
    let events_after = scan(&stack.store, "cart_events", "").await;
    assert!(
        events_after
            .iter()
            .all(|e| e.key.starts_with("c%2F8/") || e.key.starts_with("c%2F9/")),
        "events of archived carts are still live: {:?}",
        events_after.iter().map(|e| &e.key).collect::<Vec<_>>()
    );
    assert!(scan(&stack.store, "orders", "").await.is_empty());

    // Everything that left is readable in the archive: 8 sessions, 5 orders, every event.
    let sessions = scan(&stack.store, "archive", "cart/").await;
    assert_eq!(sessions.len(), 8, "archived sessions");
    let first = sessions
        .iter()
        .find(|e| e.key.starts_with("cart/c%2F0@"))
        .expect("c/0 is archived under its escaped key and start time");
    let session = Session::decode(first.value.as_slice()).unwrap();
    assert_eq!((session.key.as_str(), session.items.len()), ("c/0", 1));
    assert_eq!(scan(&stack.store, "archive", "orders/").await.len(), 5);
    let archived_events = scan(&stack.store, "archive", "cart_events/").await.len();
    assert_eq!(
        archived_events + events_after.len(),
        events_before,
        "every event is either live or archived, none lost"
    );

    // The archived keys are gone from the API; the active ones answer as before.
    let mut cart = stack.session.cart().await;
    let gone = get_session(&mut cart, "c/0").await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert_eq!(get_session(&mut cart, "c/9").await.unwrap().items.len(), 1);

    let mut admin = stack.session.admin().await;
    let stats = stats(&mut admin).await;
    let job = stats
        .sweeper
        .iter()
        .find(|j| j.job == "archive_cart")
        .unwrap();
    assert_eq!(job.acted, 8, "GetStats counts the archived carts: {job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_delete_leaves_nothing_behind() {
    let options = SessionOptions::new()
        .archive_after("1s")
        .archive("delete")
        .sweep_interval("1s");
    let stack = spawn_session_stack(options).await;
    fill(&stack.session).await;
    wait_live_carts(&stack.store, 2).await;
    assert!(scan(&stack.store, "archive", "").await.is_empty());
    assert!(scan(&stack.store, "orders", "").await.is_empty());
    let events = scan(&stack.store, "cart_events", "").await;
    assert!(
        events
            .iter()
            .all(|e| e.key.starts_with("c%2F8/") || e.key.starts_with("c%2F9/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_killed_half_way_resumes_from_its_cursor() {
    const CARTS: usize = 300;
    // Fill with archiving off, so that the pass under test starts with every cart old.
    let mut stack = spawn_session_stack(SessionOptions::new().archive_after("0s")).await;
    let mut cart = stack.session.cart().await;
    for i in 0..CARTS {
        let key = format!("old-{i:03}");
        start(&mut cart, &key).await.unwrap();
        end_session(&mut cart, &key).await.unwrap();
    }
    stack.session.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // older than --archive-after

    // 40 records a second: a page of 100 takes 2.5 s, the whole pass 7.5 s.
    let slow = SessionOptions::new()
        .archive_after("1s")
        .sweep_rate(40)
        .sweep_interval("1h");
    stack.session = spawn_session(&stack.store.endpoint(), slow.clone()).await;
    let saved = poll_until(LIMIT, Duration::from_millis(100), || {
        let store = &stack.store;
        async move {
            let cursor = scan(store, "sweeper", "archive_cart").await;
            cursor
                .first()
                .filter(|c| !c.value.is_empty())
                .map(|c| c.value.clone())
        }
    })
    .await;
    assert!(
        saved.is_some(),
        "the sweeper saved no cursor within {LIMIT:?}"
    );
    stack.session.kill().await.unwrap();
    let archived_before = CARTS - scan(&stack.store, "cart", "").await.len();
    assert!(
        (100..CARTS).contains(&archived_before),
        "killed after the first page: {archived_before} archived"
    );

    stack.session = spawn_session(&stack.store.endpoint(), slow).await;
    wait_live_carts(&stack.store, 0).await;
    assert_eq!(scan(&stack.store, "archive", "cart/").await.len(), CARTS);
    // The pass after the restart went on from the cursor instead of starting over: it looked
    // at fewer records than there were carts. (With --sweep-interval 1h it is the only pass.)
    let mut admin = stack.session.admin().await;
    let stats = stats(&mut admin).await;
    let job = stats
        .sweeper
        .iter()
        .find(|j| j.job == "archive_cart")
        .unwrap();
    assert_eq!(job.passes, 1, "{job:?}");
    assert!(
        (job.pass_scanned as usize) <= CARTS - 100,
        "the resumed pass rescanned from the start: {job:?}"
    );
    assert_eq!(job.acted as usize, CARTS - archived_before, "{job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_lists_are_kept_by_default_and_archived_whole_when_asked() {
    // 150 entries: more deletions than one commit may carry.
    const ENTRIES: usize = 150;
    async fn fill(session: &SessionProcess) {
        let mut todo = session.todo().await;
        for i in 0..ENTRIES {
            let title = format!("item {i}");
            add_entry(&mut todo, "groceries", "2026-12-01", &title)
                .await
                .unwrap();
        }
    }

    // By default a list stays, however many sweeper passes go by.
    let options = SessionOptions::new()
        .archive_after("1s")
        .sweep_interval("100ms");
    let stack = spawn_session_stack(options).await;
    fill(&stack.session).await;
    let mut admin = stack.session.admin().await;
    let passes = poll_until(LIMIT, Duration::from_millis(100), || {
        let mut admin = admin.clone();
        async move {
            let stats = stats(&mut admin).await;
            let cart = stats.sweeper.iter().find(|j| j.job == "archive_cart")?;
            (cart.passes >= 3).then_some(())
        }
    })
    .await;
    assert!(passes.is_some(), "the sweeper made no passes");
    let mut todo = stack.session.todo().await;
    assert_eq!(
        list_entries(&mut todo, "groceries", "")
            .await
            .unwrap()
            .len(),
        ENTRIES
    );
    let job = stats(&mut admin).await.sweeper;
    assert_eq!(
        job.iter().find(|j| j.job == "archive_todo").unwrap().acted,
        0
    );
    drop(stack);

    // With --todo-archive-after the untouched list moves out whole.
    let options = SessionOptions::new()
        .todo_archive_after("1s")
        .sweep_interval("1s");
    let stack = spawn_session_stack(options).await;
    fill(&stack.session).await;
    let moved = poll_until(LIMIT, Duration::from_millis(200), || async {
        scan(&stack.store, "todo", "")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(moved.is_some(), "the list is still live after {LIMIT:?}");
    assert!(scan(&stack.store, "todo_entries", "").await.is_empty());
    let heads = scan(&stack.store, "archive", "todo/groceries@").await;
    assert_eq!(heads.len(), 1, "the list's head is archived");
    let pages = scan(&stack.store, "archive", "todo_entries/groceries@").await;
    let archived: Vec<String> = pages
        .iter()
        .flat_map(|page| {
            ListEntriesResponse::decode(page.value.as_slice())
                .unwrap()
                .entries
        })
        .map(|entry| entry.title)
        .collect();
    assert_eq!(archived.len(), ENTRIES, "every entry is archived once");
    assert!(archived.contains(&"item 149".to_string()));
    let mut todo = stack.session.todo().await;
    let gone = list_entries(&mut todo, "groceries", "").await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
}
