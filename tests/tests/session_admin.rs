//! The observer on the real binaries. GetActor describes one actor from its registry entry and
//! from the actor itself, through a crash and with a watcher open; ListActors pages in strictly
//! increasing (kind, key) order and lists every key live throughout exactly once while other
//! keys are activated, killed, quarantined and passivated under it; its filters.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use proto::session::v1::{Actor, ActorStatus, ListActorsRequest, Session};
use tests::{
    SessionOptions,
    session::{AdminClient, CartClient, TodoClient},
    session_client::{
        add_entry, add_item, get_actor, get_session, kill_actor, list_entries, poll_until,
        quantity_of, start, stats, watch_session,
    },
    spawn_session_stack,
    store_client::get,
};
use tonic::Code;

/// Hang guard for things that happen soon (a stream's end noticed, a quarantine taking hold).
const SOON: Duration = Duration::from_secs(10);

/// How far apart two answers may place the same moment: the server sends times as its clock
/// now less a duration it keeps in milliseconds.
const CLOCK_JITTER: Duration = Duration::from_millis(5);

/// The wall-clock time of a timestamp the server sent.
fn time(timestamp: Option<prost_types::Timestamp>, what: &str) -> SystemTime {
    let timestamp = timestamp.unwrap_or_else(|| panic!("{what} is unset"));
    SystemTime::try_from(timestamp).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// How far apart two times are, either way round.
fn apart(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_actor_describes_a_live_cart_through_a_kill_and_a_watch() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let mut admin = stack.session.admin().await;
    let mut store = stack.store.client().await.unwrap();
    let key = "alice";
    let began = SystemTime::now();
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "A", 2, 100).await.unwrap();
    let before_kill = add_item(&mut cart, key, "B", 1, 300).await.unwrap();

    let live = get_actor(&mut admin, "cart", key).await.unwrap();
    assert_eq!((live.kind.as_str(), live.key.as_str()), ("cart", key));
    assert_eq!(live.status, ActorStatus::Live as i32, "{live:?}");
    assert_eq!(live.mailbox_len, 0, "{live:?}");
    assert!(live.state_bytes > 0, "{live:?}");
    let stored = get(&mut store, "cart", key).await.unwrap();
    assert!(live.version >= 1, "{live:?}");
    assert_eq!(live.version, stored.version, "the version store-svc holds");
    assert_eq!(live.version, before_kill.version);
    let activated = time(live.activated, "activated");
    let last_active = time(live.last_active, "last_active");
    let now = SystemTime::now();
    assert!(began <= activated + CLOCK_JITTER, "{live:?}");
    assert!(activated <= last_active && last_active <= now, "{live:?}");
    assert_eq!(live.restarts, 0, "{live:?}");
    assert_eq!((live.watchers, live.timers), (0, 0), "{live:?}");
    assert_eq!(live.quarantined_until, None, "{live:?}");
    // Carts get a durable reminder for their TTL (168 h by default) at every change.
    let reminder = time(live.reminder, "reminder");
    assert!(reminder > now + Duration::from_secs(167 * 3600), "{live:?}");

    // Asking is no activity: the actor stays as idle as it was.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = get_actor(&mut admin, "cart", key).await.unwrap();
    let again = get_actor(&mut admin, "cart", key).await.unwrap();
    let unchanged = apart(time(asked.last_active, "last_active"), last_active);
    assert!(unchanged < CLOCK_JITTER, "{asked:?} vs {live:?}");
    let idle = again.idle.expect("idle is set");
    assert!(
        idle.seconds > 0 || idle.nanos >= 300_000_000,
        "GetActor counted as activity: {again:?}"
    );

    kill_actor(&mut admin, "cart", key).await.unwrap();
    // The next request is served by the restarted actor, from the durable state.
    let restored = get_session(&mut cart, key).await.unwrap();
    assert_eq!(restored, before_kill);
    assert_eq!(
        (quantity_of(&restored, "A"), quantity_of(&restored, "B")),
        (2, 1)
    );
    let restarted = get_actor(&mut admin, "cart", key).await.unwrap();
    assert_eq!(restarted.restarts, 1, "{restarted:?}");
    assert_eq!(restarted.status, ActorStatus::Live as i32, "{restarted:?}");
    assert_eq!(
        restarted.version, stored.version,
        "reloaded at the same version"
    );
    assert!(restarted.state_bytes > 0, "{restarted:?}");
    assert!(
        apart(time(restarted.activated, "activated"), activated) < CLOCK_JITTER,
        "a restart is the same activation: {restarted:?} vs {live:?}"
    );
    assert!(time(restarted.last_active, "last_active") > last_active);

    // A watcher open on it is counted, and uncounted once its stream is gone.
    let mut stream = watch_session(&mut cart, key).await.unwrap();
    let first: Session = stream.message().await.unwrap().expect("the current state");
    assert_eq!(first.version, before_kill.version);
    let watched = get_actor(&mut admin, "cart", key).await.unwrap();
    assert_eq!(watched.watchers, 1, "{watched:?}");
    drop(stream);
    let unwatched = poll_until(SOON, Duration::from_millis(50), || {
        let mut admin = admin.clone();
        async move {
            let actor = get_actor(&mut admin, "cart", key).await.unwrap();
            (actor.watchers == 0).then_some(())
        }
    })
    .await;
    assert!(unwatched.is_some(), "the closed watch is still counted");

    // A key never started has no actor.
    let none = get_actor(&mut admin, "cart", "never-started")
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
}

/// Every page of ListActors for `kind` and `status`, `page_size` at a time, and how many
/// pages that took.
async fn list_all(
    admin: &mut AdminClient,
    kind: &str,
    status: ActorStatus,
    page_size: i32,
) -> Vec<Actor> {
    let mut actors = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListActorsRequest {
            kind: kind.to_owned(),
            status: status as i32,
            page_size,
            page_token,
        };
        let page = admin.list_actors(request).await.unwrap().into_inner();
        assert!(page.actors.len() <= page_size as usize, "{page:?}");
        actors.extend(page.actors);
        if page.next_page_token.is_empty() {
            return actors;
        }
        page_token = page.next_page_token;
    }
}

/// Kind and key of each actor.
fn names(actors: &[Actor]) -> Vec<(String, String)> {
    actors
        .iter()
        .map(|a| (a.kind.clone(), a.key.clone()))
        .collect()
}

/// Crashes `key` twice (a restart between): with `--max-restarts 1` that quarantines it.
async fn crash_loop(admin: &mut AdminClient, cart: &mut CartClient, key: &str) {
    let _ = kill_actor(admin, "cart", key).await;
    let _ = get_session(cart, key).await; // served by the restarted actor
    let _ = kill_actor(admin, "cart", key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_actors_filters_by_kind_and_status() {
    let options = SessionOptions::new()
        .max_restarts(1)
        .restart_window("60s")
        .quarantine("60s");
    let stack = spawn_session_stack(options).await;
    let mut cart = stack.session.cart().await;
    let mut todo = stack.session.todo().await;
    let mut admin = stack.session.admin().await;
    for key in ["a", "b", "loop"] {
        start(&mut cart, key).await.unwrap();
    }
    add_entry(&mut todo, "groceries", "2026-06-01", "milk")
        .await
        .unwrap();
    crash_loop(&mut admin, &mut cart, "loop").await;
    let quarantined = poll_until(SOON, Duration::from_millis(20), || {
        let mut admin = admin.clone();
        async move {
            let actor = get_actor(&mut admin, "cart", "loop").await.unwrap();
            (actor.status == ActorStatus::Quarantined as i32).then_some(actor)
        }
    })
    .await
    .expect("the crash loop was quarantined");
    let now = SystemTime::now();
    let until = time(quarantined.quarantined_until, "quarantined_until");
    assert!(
        now < until && until <= now + Duration::from_secs(61),
        "{quarantined:?}"
    );
    assert_eq!(quarantined.restarts, 2, "{quarantined:?}");
    assert_eq!(quarantined.activated, None, "no task: {quarantined:?}");
    assert_eq!(quarantined.last_active, None, "{quarantined:?}");

    let pair = |kind: &str, key: &str| (kind.to_owned(), key.to_owned());
    let all = list_all(&mut admin, "", ActorStatus::Unspecified, 2).await;
    assert_eq!(
        names(&all),
        [
            pair("cart", "a"),
            pair("cart", "b"),
            pair("cart", "loop"),
            pair("todo", "groceries")
        ]
    );
    let resting = list_all(&mut admin, "", ActorStatus::Quarantined, 2).await;
    assert_eq!(names(&resting), [pair("cart", "loop")]);
    let listed_until = time(resting[0].quarantined_until, "listed quarantined_until");
    assert!(
        apart(listed_until, until) < CLOCK_JITTER,
        "listed with the end of its quarantine: {resting:?}"
    );
    let live = list_all(&mut admin, "", ActorStatus::Live, 2).await;
    assert_eq!(
        names(&live),
        [
            pair("cart", "a"),
            pair("cart", "b"),
            pair("todo", "groceries")
        ]
    );
    assert!(
        live.iter()
            .all(|a| a.status == ActorStatus::Live as i32 && a.quarantined_until.is_none())
    );
    let lists = list_all(&mut admin, "todo", ActorStatus::Unspecified, 1).await;
    assert_eq!(names(&lists), [pair("todo", "groceries")]);
    let carts = list_all(&mut admin, "cart", ActorStatus::Unspecified, 1).await;
    assert_eq!(
        names(&carts),
        [pair("cart", "a"), pair("cart", "b"), pair("cart", "loop")]
    );
    assert!(
        list_all(&mut admin, "todo", ActorStatus::Quarantined, 5)
            .await
            .is_empty()
    );
    assert_eq!(
        names(&list_all(&mut admin, "cart", ActorStatus::Quarantined, 5).await),
        [pair("cart", "loop")]
    );
    let unknown = admin
        .list_actors(ListActorsRequest {
            kind: "basket".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
}

/// Carts and lists live from before the listing to after it.
const STABLE_CARTS: usize = 200;
const STABLE_LISTS: usize = 100;

/// A small page, so the listing takes many pages while keys come and go.
const PAGE: i32 = 7;

/// Rest between pages: the listing lasts a few seconds, through plenty of churn.
const PAGE_PAUSE: Duration = Duration::from_millis(60);

/// Lists passivate after this idle time (churn); the stable ones are read far more often.
const TODO_IDLE: &str = "3s";
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(250);

/// How long a crash-looping churn key is refused.
const QUARANTINE: Duration = Duration::from_secs(1);

fn stable_cart(i: usize) -> String {
    format!("c{i:03}")
}

fn stable_list(i: usize) -> String {
    format!("l{i:03}")
}

/// Activates, kills, quarantines and passivates keys that sort among the stable ones, until
/// `stop`; counts its rounds in `rounds`.
async fn churn(
    mut cart: CartClient,
    mut todo: TodoClient,
    mut admin: AdminClient,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
) {
    let mut n = 0;
    let mut resting = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let j = (n * 37) % STABLE_CARTS;
        let fresh = format!("c{j:03}-new{n}");
        start(&mut cart, &fresh).await.unwrap();
        // A key with no state: activated, then passivated straight after its request.
        let _ = get_session(&mut cart, &format!("c{j:03}-gone{n}")).await;
        // A new list, which passivates once idle for its timeout.
        let list = format!("l{:03}-new{n}", j % STABLE_LISTS);
        add_entry(&mut todo, &list, "2026-06-01", "churn")
            .await
            .unwrap();
        let _ = list_entries(&mut todo, &format!("l{:03}-gone{n}", j % STABLE_LISTS), "").await;
        if n > 0 {
            let previous = format!("c{:03}-new{}", ((n - 1) * 37) % STABLE_CARTS, n - 1);
            match n % 4 {
                // Killed: restarted, stays live.
                1 => {
                    let _ = kill_actor(&mut admin, "cart", &previous).await;
                }
                // Crash-looped: quarantined for a second.
                3 => {
                    crash_loop(&mut admin, &mut cart, &previous).await;
                    resting.push_back((previous, Instant::now()));
                }
                _ => {}
            }
        }
        // Asked for again once its quarantine is over: the entry goes, a new actor comes.
        if resting
            .front()
            .is_some_and(|(_, at)| at.elapsed() > QUARANTINE + Duration::from_millis(500))
            && let Some((rested, _)) = resting.pop_front()
        {
            let _ = get_session(&mut cart, &rested).await;
        }
        n += 1;
        rounds.store(n, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads every stable list often enough that none reaches its idle timeout.
async fn keep_lists_alive(mut todo: TodoClient, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        for i in 0..STABLE_LISTS {
            list_entries(&mut todo, &stable_list(i), "").await.unwrap();
        }
        tokio::time::sleep(KEEP_ALIVE_EVERY).await;
    }
}

/// One kind's counters from GetStats.
async fn kind_stats(admin: &mut AdminClient, kind: &str) -> proto::session::v1::KindStats {
    stats(admin)
        .await
        .kinds
        .into_iter()
        .find(|k| k.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in GetStats"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_actors_pages_stay_exact_for_keys_live_throughout_while_others_churn() {
    let options = SessionOptions::new()
        .todo_idle_timeout(TODO_IDLE)
        .max_restarts(1)
        .restart_window("60s")
        .quarantine(&format!("{}s", QUARANTINE.as_secs()));
    let stack = spawn_session_stack(options).await;
    let mut cart = stack.session.cart().await;
    let mut todo = stack.session.todo().await;
    let mut admin = stack.session.admin().await;
    for i in 0..STABLE_CARTS {
        start(&mut cart, &stable_cart(i)).await.unwrap();
    }
    for i in 0..STABLE_LISTS {
        add_entry(&mut todo, &stable_list(i), "2026-06-01", "stable")
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let keeper = tokio::spawn(keep_lists_alive(todo.clone(), stop.clone()));
    let churner = tokio::spawn(churn(
        cart.clone(),
        todo.clone(),
        admin.clone(),
        stop.clone(),
        rounds.clone(),
    ));
    // Some churn keys already live, so the first pages meet them too.
    let warm = poll_until(SOON, Duration::from_millis(20), || {
        let rounds = rounds.clone();
        async move { (rounds.load(Ordering::Relaxed) >= 20).then_some(()) }
    })
    .await;
    assert!(warm.is_some(), "the churn did not get going");

    let carts_before = kind_stats(&mut admin, "cart").await;
    let lists_before = kind_stats(&mut admin, "todo").await;
    let listing_began = SystemTime::now();
    let rounds_before = rounds.load(Ordering::Relaxed);
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let request = ListActorsRequest {
            kind: String::new(),
            status: ActorStatus::Unspecified as i32,
            page_size: PAGE,
            page_token,
        };
        let page = admin.list_actors(request).await.unwrap().into_inner();
        pages += 1;
        assert!(page.actors.len() <= PAGE as usize, "{page:?}");
        seen.extend(names(&page.actors));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        tokio::time::sleep(PAGE_PAUSE).await;
    }
    let rounds_during = rounds.load(Ordering::Relaxed) - rounds_before;
    let carts_after = kind_stats(&mut admin, "cart").await;
    let lists_after = kind_stats(&mut admin, "todo").await;
    stop.store(true, Ordering::Relaxed);
    churner.await.unwrap();
    keeper.await.unwrap();

    println!(
        "listed {} actors in {pages} pages of {PAGE} while {rounds_during} churn rounds ran; \
         carts {carts_before:?} → {carts_after:?}; lists {lists_before:?} → {lists_after:?}",
        seen.len()
    );
    // Strictly increasing (kind, key), across page boundaries too: so no key twice.
    for pair in seen.windows(2) {
        assert!(pair[0] < pair[1], "out of order or repeated: {pair:?}");
    }
    // Keys churned while the listing went on: activations, passivations, quarantines.
    assert!(rounds_during >= 10, "only {rounds_during} churn rounds");
    assert!(
        carts_after.activations > carts_before.activations
            && carts_after.passivations > carts_before.passivations
            && carts_after.restarts > carts_before.restarts
            && carts_after.quarantines > carts_before.quarantines,
        "carts did not churn during the listing: {carts_before:?} → {carts_after:?}"
    );
    assert!(
        lists_after.activations > lists_before.activations
            && lists_after.passivations > lists_before.passivations,
        "lists did not churn during the listing: {lists_before:?} → {lists_after:?}"
    );

    // Every stable key that was live for the whole listing (the same activation, begun
    // before it and still live after it) appears exactly once.
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for name in &seen {
        *count.entry(name.clone()).or_default() += 1;
    }
    let stable = (0..STABLE_CARTS)
        .map(|i| ("cart", stable_cart(i)))
        .chain((0..STABLE_LISTS).map(|i| ("todo", stable_list(i))));
    let mut throughout = HashMap::<&str, usize>::new();
    for (kind, key) in stable {
        let actor = get_actor(&mut admin, kind, &key).await.unwrap();
        let live_throughout = actor.status == ActorStatus::Live as i32
            && time(actor.activated, "activated") < listing_began;
        if !live_throughout {
            continue;
        }
        *throughout.entry(kind).or_default() += 1;
        assert_eq!(
            count.get(&(kind.to_owned(), key.clone())),
            Some(&1),
            "{kind}/{key} was live for the whole listing ({pages} pages)"
        );
    }
    // Carts never passivate here; a list could only if its reads stalled for seconds.
    assert_eq!(throughout.get("cart"), Some(&STABLE_CARTS));
    let lists = throughout.get("todo").copied().unwrap_or(0);
    assert!(
        lists * 10 >= STABLE_LISTS * 9,
        "only {lists} of {STABLE_LISTS} lists stayed live"
    );
    assert!(
        seen.len() > STABLE_CARTS + STABLE_LISTS,
        "the listing met no churned key: {} actors",
        seen.len()
    );
}
