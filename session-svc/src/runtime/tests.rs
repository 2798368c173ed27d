//! Runtime specifications, run against a toy counter entity and the in-memory store, with
//! paused time so that idle timeouts and quarantines pass instantly.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use kit::deadline::Deadline;

use super::*;
use crate::error::{Error, reason};

/// A counter per key. `Add` changes it, `Get` reads it, `Boom` panics in the handler.
struct Counter {
    /// How many times `decode_state` ran: one per load from the store.
    loads: Arc<AtomicUsize>,
}

/// Add to the counter (with an optional request id); answers the new value.
struct Add(u64, Option<RequestId>);
/// Read the counter.
struct Get;
/// Panic in the handler.
struct Boom;

/// A request id whose request has fingerprint `n`.
fn id(id: &str, n: u64) -> Option<RequestId> {
    Some(RequestId {
        id: id.into(),
        fingerprint: n,
    })
}

/// prost encodes a bare u64 as `google.protobuf.UInt64Value`.
fn decode_u64(bytes: &[u8]) -> Result<u64, String> {
    <u64 as prost::Message>::decode(bytes).map_err(|e| e.to_string())
}

impl Entity for Counter {
    const KIND: &'static str = "counter";
    const KEY_FIELD: &'static str = "key";
    type State = u64;
    type Snapshot = u64;

    fn decode_state(&self, bytes: &[u8]) -> Result<u64, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        decode_u64(bytes)
    }
    fn encode_state(&self, state: &u64) -> Vec<u8> {
        prost::Message::encode_to_vec(state)
    }
    fn snapshot(&self, state: &u64, _version: u64) -> u64 {
        *state
    }
    fn is_final(&self, snapshot: &u64) -> bool {
        *snapshot >= 1000
    }
    fn missing(&self, key: &str) -> Error {
        Error::NotFound(reason::NOT_FOUND, format!("no counter {key}"))
    }
}

impl Request<Counter> for Add {
    type Reply = u64;

    fn name(&self) -> &'static str {
        "add"
    }
    fn request_id(&self) -> Option<&RequestId> {
        self.1.as_ref()
    }
    fn handle(
        self,
        _: &Counter,
        _: &str,
        state: &mut Option<u64>,
        _: Ctx,
    ) -> Result<Step<u64>, Error> {
        let value = state.unwrap_or(0) + self.0;
        *state = Some(value);
        Ok(Step::write(value))
    }
    fn replay(
        self,
        _: &Counter,
        _: &str,
        state: Option<&u64>,
        _: u64,
        _: u64,
    ) -> Result<Replay<u64>, Error> {
        Ok(Replay::Reply(state.copied().unwrap_or(0)))
    }
}

impl Request<Counter> for Get {
    type Reply = u64;

    fn name(&self) -> &'static str {
        "get"
    }
    fn handle(
        self,
        _: &Counter,
        _: &str,
        state: &mut Option<u64>,
        _: Ctx,
    ) -> Result<Step<u64>, Error> {
        Ok(Step::Read(state.unwrap_or(0)))
    }
}

impl Request<Counter> for Boom {
    type Reply = u64;

    fn name(&self) -> &'static str {
        "boom"
    }
    fn handle(
        self,
        _: &Counter,
        _: &str,
        state: &mut Option<u64>,
        _: Ctx,
    ) -> Result<Step<u64>, Error> {
        *state = Some(666); // a crash mid-change must not leak into the next answer
        panic!("handler bug")
    }
}

struct Fixture {
    kind: Kind<Counter>,
    actors: Arc<Actors>,
    loads: Arc<AtomicUsize>,
    store: Store,
}

fn fixture(settings: Settings, max_actors: usize) -> Fixture {
    let loads = Arc::new(AtomicUsize::new(0));
    let actors = Actors::new(max_actors);
    let store = Store::in_memory();
    let kind = Kind::new(
        Counter {
            loads: loads.clone(),
        },
        store.clone(),
        settings,
        actors.clone(),
    );
    Fixture {
        kind,
        actors,
        loads,
        store,
    }
}

fn soon() -> Deadline {
    Deadline::after(Duration::from_secs(5))
}

async fn add(kind: &Kind<Counter>, key: &str, n: u64) -> Result<u64, Error> {
    kind.call(key, Add(n, None), soon()).await
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_requests_activate_a_key_once() {
    let f = fixture(Settings::default(), 100);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let kind = f.kind.clone();
            tokio::spawn(async move { add(&kind, "k", 1).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 50);
    assert_eq!(f.actors.live(), 1);
}

#[tokio::test(start_paused = true)]
async fn writes_are_durable_before_the_answer() {
    let f = fixture(Settings::default(), 100);
    assert_eq!(add(&f.kind, "k", 7).await.unwrap(), 7);
    let stored = f.store.get("counter", "k", soon()).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
}

#[tokio::test(start_paused = true)]
async fn idle_actors_passivate_and_come_back_with_their_state() {
    let settings = Settings {
        idle_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    add(&f.kind, "k", 5).await.unwrap();
    assert_eq!(f.actors.live(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.actors.live(), 0, "idle actor still live");
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 5);
    assert_eq!(
        f.loads.load(Ordering::SeqCst),
        1,
        "state was not reloaded from the store"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_fails_only_its_message_and_restarts_from_durable_state() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 3).await.unwrap();
    add(&f.kind, "other", 1).await.unwrap();
    let crashed = f.kind.call("k", Boom, soon()).await;
    assert!(
        matches!(crashed, Err(Error::ActorCrashed { .. })),
        "{crashed:?}"
    );
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 3);
    assert_eq!(
        f.loads.load(Ordering::SeqCst),
        1,
        "the restart did not reload"
    );
    assert_eq!(add(&f.kind, "other", 1).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_quarantines_the_key_then_it_recovers() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 1).await.unwrap();
    for _ in 0..4 {
        let _ = f.kind.call("k", Boom, soon()).await;
    }
    match f.kind.call("k", Get, soon()).await {
        Err(Error::Quarantined { retry_after, .. }) => {
            assert!(retry_after <= Duration::from_secs(10));
        }
        other => panic!("expected quarantine, got {other:?}"),
    }
    assert_eq!(add(&f.kind, "neighbour", 1).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_mailbox_refuses_at_once_with_a_retry_hint() {
    let settings = Settings {
        mailbox_capacity: 4,
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    // Casts are queued synchronously; the actor task has not run yet, so nothing drains.
    for _ in 0..4 {
        f.kind.cast("k", Add(1, None), soon()).unwrap();
    }
    match f.kind.cast("k", Add(1, None), soon()) {
        Err(Error::MailboxFull { capacity: 4, .. }) => {}
        other => panic!("expected a full mailbox, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1)).await; // let the actor drain its mailbox
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_deadline_passed_in_the_mailbox_is_not_executed() {
    let f = fixture(Settings::default(), 100);
    f.kind
        .cast("k", Add(100, None), Deadline::after(Duration::ZERO))
        .unwrap();
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retried_request_id_is_applied_once_even_after_passivation() {
    let settings = Settings {
        idle_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    let op = || Add(10, id("req-1", 10));
    assert_eq!(f.kind.call("k", op(), soon()).await.unwrap(), 10);
    assert_eq!(f.kind.call("k", op(), soon()).await.unwrap(), 10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.kind.call("k", op(), soon()).await.unwrap(), 10);
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 10);
    // The same id with other fields is refused and changes nothing.
    let reused = f.kind.call("k", Add(5, id("req-1", 5)), soon()).await;
    assert!(
        matches!(&reused, Err(Error::InvalidArgument { field, .. }) if field == "request_id"),
        "{reused:?}"
    );
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 10);
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_least_recently_used_idle_actor_is_passivated() {
    let f = fixture(Settings::default(), 3);
    for key in ["a", "b", "c"] {
        add(&f.kind, key, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    add(&f.kind, "a", 1).await.unwrap(); // a is now the most recently used
    tokio::time::sleep(Duration::from_millis(10)).await;
    add(&f.kind, "d", 1).await.unwrap();
    let live: Vec<_> = f
        .actors
        .list()
        .into_iter()
        .map(|a| a.key.to_string())
        .collect();
    assert_eq!(f.actors.live(), 3);
    assert!(
        !live.contains(&"b".to_string()),
        "b should have been evicted: {live:?}"
    );
    for key in ["a", "c", "d"] {
        assert!(live.contains(&key.to_string()), "{key} missing: {live:?}");
    }
    assert_eq!(
        f.kind.call("b", Get, soon()).await.unwrap(),
        1,
        "state lost on eviction"
    );
}

#[tokio::test(start_paused = true)]
async fn watchers_see_the_current_state_then_every_change_in_order() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 1).await.unwrap();
    let watch = f.kind.watch("k", soon()).await.unwrap();
    assert_eq!(watch.first, 1);
    let mut changes = watch.changes;
    for _ in 0..5 {
        add(&f.kind, "k", 1).await.unwrap();
    }
    for expected in 2..=6 {
        assert_eq!(changes.recv().await.unwrap(), expected);
    }
    assert!(matches!(
        f.kind.watch("nobody", soon()).await,
        Err(Error::NotFound(..))
    ));
}

#[tokio::test(start_paused = true)]
async fn bad_keys_are_refused_before_any_actor_starts() {
    let f = fixture(Settings::default(), 100);
    for key in [String::new(), "k".repeat(257), "a\u{7}b".into()] {
        assert!(matches!(
            add(&f.kind, &key, 1).await,
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert_eq!(f.actors.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn close_refuses_new_work() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 1).await.unwrap();
    f.kind.close();
    assert!(matches!(
        add(&f.kind, "k", 1).await,
        Err(Error::ShuttingDown)
    ));
}

#[tokio::test(start_paused = true)]
async fn reading_a_key_without_state_leaves_no_live_actor() {
    let f = fixture(Settings::default(), 100);
    for i in 0..10 {
        assert_eq!(
            f.kind
                .call(&format!("ghost-{i}"), Get, soon())
                .await
                .unwrap(),
            0
        );
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(f.actors.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_stops_when_its_kind_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 1).await.unwrap();
    let inner = Arc::downgrade(&f.kind.inner);
    assert!(
        metrics.num_alive_tasks() > before,
        "sweeper and actor running"
    );
    // An actor keeps its kind alive until it passivates; then nothing does.
    f.kind.sweep();
    tokio::time::sleep(Settings::default().idle_timeout * 2).await;
    drop(f);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        inner.upgrade().is_none(),
        "the kind outlived its last handle"
    );
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "the sweeper (or an actor) is still running"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watched_idle_actor_passivates_and_its_watchers_are_told() {
    let settings = Settings {
        idle_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    add(&f.kind, "k", 1).await.unwrap();
    let mut watch = f.kind.watch("k", soon()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.actors.live(), 0, "a watched idle actor stayed live");
    assert!(matches!(
        watch.changes.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    ));
    // Watching again reactivates it.
    let again = f.kind.watch("k", soon()).await.unwrap();
    assert_eq!(again.first, 1);
    assert_eq!(f.actors.live(), 1);
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_watched_idle_actor_is_evicted_for_a_new_key() {
    let f = fixture(Settings::default(), 3);
    let mut watches = Vec::new();
    for key in ["a", "b", "c"] {
        add(&f.kind, key, 1).await.unwrap();
        watches.push(f.kind.watch(key, soon()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(add(&f.kind, "d", 1).await.unwrap(), 1);
    assert_eq!(f.actors.live(), 3);
    let ended: Vec<bool> = watches
        .iter_mut()
        .map(|w| {
            matches!(
                w.changes.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Closed)
            )
        })
        .collect();
    assert_eq!(
        ended,
        [true, false, false],
        "the least recently used one ends"
    );
}

#[tokio::test(start_paused = true)]
async fn watchers_are_capped_per_key_and_in_total() {
    let settings = Settings {
        max_watchers_per_key: 2,
        ..Settings::default()
    };
    let loads = Arc::new(AtomicUsize::new(0));
    let actors = Actors::with_watchers(100, 3);
    let kind = Kind::new(
        Counter { loads },
        Store::in_memory(),
        settings,
        actors.clone(),
    );
    add(&kind, "a", 1).await.unwrap();
    add(&kind, "b", 1).await.unwrap();
    let mut open = vec![
        kind.watch("a", soon()).await.unwrap(),
        kind.watch("a", soon()).await.unwrap(),
    ];
    match kind.watch("a", soon()).await {
        Err(Error::WatcherLimit { cap, .. }) => assert!(cap.contains("per-key"), "{cap}"),
        other => panic!("a third watcher of one key: {:?}", other.err()),
    }
    open.push(kind.watch("b", soon()).await.unwrap());
    match kind.watch("b", soon()).await {
        Err(Error::WatcherLimit { cap, .. }) => assert!(cap.contains("--max-watchers)"), "{cap}"),
        other => panic!("a fourth watcher in all: {:?}", other.err()),
    }
    assert_eq!(actors.watchers(), 3);
    assert_eq!(actors.counts()[0].1.watchers, 3);
    drop(open);
    assert_eq!(actors.watchers(), 0);
    assert!(kind.watch("b", soon()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn get_actor_and_counters_need_no_listing() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 1).await.unwrap();
    add(&f.kind, "loop", 1).await.unwrap();
    for _ in 0..4 {
        let _ = f.kind.call("loop", Boom, soon()).await;
    }
    let live = f.actors.get("counter", "k").unwrap();
    assert_eq!(live.status, ActorStatus::Live);
    let resting = f.actors.get("counter", "loop").unwrap();
    assert_eq!(resting.status, ActorStatus::Quarantined);
    assert_eq!(resting.restarts, 4);
    assert!(f.actors.get("counter", "nobody").is_none());
    assert!(f.actors.get("cart", "k").is_none());
    let counts = f.actors.counts();
    assert_eq!(counts.len(), 1);
    let (kind, c) = counts[0];
    assert_eq!(kind, "counter");
    assert_eq!(
        (c.live, c.quarantined, c.crashes, c.quarantines),
        (1, 1, 4, 1)
    );
    assert_eq!(f.actors.live(), 1);
}

/// New keys, many at once, at the cap while most live actors are idle (fewer activations run
/// at once than the cap): each gets a slot, however the activations interleave with the
/// evictions that free them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_cap_new_keys_are_refused_only_when_nothing_is_idle() {
    const CAP: usize = 50;
    let f = fixture(Settings::default(), CAP);
    for i in 0..CAP {
        add(&f.kind, &format!("old-{i}"), 1).await.unwrap();
    }
    for round in 0..20 {
        let calls: Vec<_> = (0..CAP / 2)
            .map(|i| {
                let kind = f.kind.clone();
                tokio::spawn(async move { add(&kind, &format!("new-{round}-{i}"), 1).await })
            })
            .collect();
        for call in calls {
            let answer = call.await.unwrap();
            assert!(
                answer.is_ok(),
                "refused although idle actors existed: {answer:?}"
            );
        }
        assert!(f.actors.live() <= CAP);
    }
}

/// Crash loops under concurrent callers in one process, where callers can reach the registry
/// within a microsecond of the crash: once a caller is told a key is quarantined, every
/// later call is refused the same way, and each key ends quarantined, never live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quarantine_admits_no_request_between_the_crash_and_the_swap() {
    const KEYS: usize = 100;
    const CALLERS_PER_KEY: usize = 4;
    let settings = Settings {
        max_restarts: 0,
        restart_window: Duration::from_secs(60),
        quarantine: Duration::from_secs(60),
        ..Settings::default()
    };
    let f = fixture(settings, 10_000);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for k in 0..KEYS {
        let key = format!("loop-{k}");
        add(&f.kind, &key, 1).await.unwrap();
        for _ in 0..CALLERS_PER_KEY {
            let (kind, key, stop) = (f.kind.clone(), key.clone(), stop.clone());
            callers.push(tokio::spawn(async move {
                let mut quarantined = false;
                let mut escaped = 0;
                while !stop.load(Ordering::Relaxed) {
                    match kind.call(&key, Get, soon()).await {
                        Err(Error::Quarantined { .. }) => quarantined = true,
                        Ok(_) if quarantined => escaped += 1,
                        _ => {}
                    }
                    tokio::task::yield_now().await;
                }
                escaped
            }));
        }
    }
    for k in 0..KEYS {
        let _ = f.kind.call(&format!("loop-{k}"), Boom, soon()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut escaped = 0;
    for caller in callers {
        escaped += caller.await.unwrap();
    }
    assert_eq!(escaped, 0, "calls served after their key was quarantined");
    for k in 0..KEYS {
        let key = format!("loop-{k}");
        let entry = f.actors.get("counter", &key).unwrap();
        assert_eq!(entry.status, ActorStatus::Quarantined, "{key}: {entry:?}");
    }
    assert_eq!(f.actors.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_timer_message_arrives_while_its_actor_lives_and_dies_with_it() {
    let settings = Settings {
        idle_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    assert!(
        f.kind
            .send_after("k", Add(1, None), Duration::ZERO)
            .is_none(),
        "a key that is not live has no timers"
    );
    add(&f.kind, "k", 1).await.unwrap();
    let timer = f
        .kind
        .send_after("k", Add(10, None), Duration::from_millis(500));
    assert!(timer.is_some());
    f.kind
        .send_after("k", Add(1000, None), Duration::from_millis(500))
        .unwrap()
        .cancel();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 11);

    // A timer longer than the actor's idle life goes with it: it neither fires into the next
    // activation nor reactivates the key.
    f.kind
        .send_after("k", Add(100, None), Duration::from_secs(5))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.actors.live(), 0, "the idle actor passivated");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.actors.live(), 0, "the timer reactivated the key");
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 11);
}

/// Adds what its `prepare` found (after a wait, as a call to another actor would) and counts
/// its follow-up, which must see the commit durable.
struct Prepared {
    found: Option<u64>,
    fail: bool,
    followed: Arc<AtomicUsize>,
    store: Store,
}

impl Request<Counter> for Prepared {
    type Reply = u64;

    fn name(&self) -> &'static str {
        "prepared"
    }

    fn prepare<'a>(&'a mut self, env: Env<'a, Counter>) -> Option<Effect<'a>> {
        Some(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.fail {
                return Err(Error::FailedPrecondition(
                    reason::OUT_OF_STOCK,
                    "not enough".into(),
                ));
            }
            self.found = Some(env.state.copied().unwrap_or(0) * 2);
            Ok(())
        }))
    }

    fn handle(
        self,
        _: &Counter,
        _: &str,
        state: &mut Option<u64>,
        _: Ctx,
    ) -> Result<Step<u64>, Error> {
        let value = state.unwrap_or(0) + self.found.expect("prepare ran first");
        *state = Some(value);
        let (followed, store) = (self.followed, self.store);
        Ok(Step::Write {
            reply: value,
            records: Vec::new(),
            outcome: 0,
            after: Some(After(Box::new(move |deadline| {
                Box::pin(async move {
                    let stored = store.get("counter", "k", deadline).await?;
                    assert_eq!(
                        stored.map(|s| s.version),
                        Some(2),
                        "after runs after the commit"
                    );
                    followed.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            }))),
        })
    }
}

/// Lets the state go: the actor's record is deleted.
struct Forget;

impl Request<Counter> for Forget {
    type Reply = ();

    fn name(&self) -> &'static str {
        "forget"
    }

    fn handle(
        self,
        _: &Counter,
        _: &str,
        state: &mut Option<u64>,
        _: Ctx,
    ) -> Result<Step<()>, Error> {
        *state = None;
        Ok(Step::write(()))
    }
}

#[tokio::test(start_paused = true)]
async fn prepare_runs_before_the_handler_and_after_follows_the_commit() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 3).await.unwrap();
    let followed = Arc::new(AtomicUsize::new(0));
    let request = |fail| Prepared {
        found: None,
        fail,
        followed: followed.clone(),
        store: f.store.clone(),
    };
    let refused = f.kind.call("k", request(true), soon()).await;
    assert!(matches!(refused, Err(Error::FailedPrecondition(..))));
    assert_eq!(
        f.kind.call("k", Get, soon()).await.unwrap(),
        3,
        "a failed prepare writes nothing"
    );
    assert_eq!(f.kind.call("k", request(false), soon()).await.unwrap(), 9);
    assert_eq!(
        followed.load(Ordering::SeqCst),
        1,
        "the reply waited for the follow-up"
    );

    f.kind.call("k", Forget, soon()).await.unwrap();
    let gone = f.store.get("counter", "k", soon()).await.unwrap();
    assert!(gone.is_none(), "a state set to None deletes the record");
    assert_eq!(f.kind.call("k", Get, soon()).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_actor_woken_by_a_reminder_sleeps_again_but_a_live_one_stays() {
    let settings = Settings {
        idle_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    add(&f.kind, "asleep", 1).await.unwrap();
    add(&f.kind, "awake", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.actors.live(), 0, "both passivated");

    f.kind.call("awake", Get, soon()).await.unwrap();
    f.kind
        .call("asleep", Remind { due_ms: 1 }, soon())
        .await
        .unwrap();
    f.kind
        .call("awake", Remind { due_ms: 1 }, soon())
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let live = f.actors.live();
    assert_eq!(
        live, 1,
        "the reminder's actor went back to sleep, the busy one stayed"
    );
    assert!(
        f.actors.get("counter", "awake").is_some(),
        "the busy actor is live"
    );
    assert_eq!(f.kind.call("asleep", Get, soon()).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn activations_passivations_rejections_and_deadline_drops_are_counted() {
    let settings = Settings {
        idle_timeout: Duration::from_secs(1),
        mailbox_capacity: 2,
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    add(&f.kind, "a", 1).await.unwrap();
    add(&f.kind, "b", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    add(&f.kind, "a", 1).await.unwrap();
    // Queued synchronously before the actor runs: the third is refused, and the one whose
    // deadline has passed is dropped when its turn comes.
    f.kind
        .cast("a", Add(100, None), Deadline::after(Duration::ZERO))
        .unwrap();
    f.kind.cast("a", Add(1, None), soon()).unwrap();
    assert!(f.kind.cast("a", Add(1, None), soon()).is_err());
    tokio::time::sleep(Duration::from_millis(1)).await; // let the actor drain its mailbox
    assert_eq!(f.kind.call("a", Get, soon()).await.unwrap(), 3);
    let (_, c) = f.actors.counts()[0];
    assert_eq!(
        (
            c.activations,
            c.passivations,
            c.mailbox_rejections,
            c.deadline_drops
        ),
        (3, 2, 1, 1)
    );
}

/// Holds its actor busy for a minute (in `prepare`, as a slow call to another actor would).
struct Stall;

impl Request<Counter> for Stall {
    type Reply = u64;

    fn name(&self) -> &'static str {
        "stall"
    }

    fn prepare<'a>(&'a mut self, _env: Env<'a, Counter>) -> Option<Effect<'a>> {
        Some(Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }))
    }

    fn handle(
        self,
        _: &Counter,
        _: &str,
        state: &mut Option<u64>,
        _: Ctx,
    ) -> Result<Step<u64>, Error> {
        Ok(Step::Read(state.unwrap_or(0)))
    }
}

#[tokio::test(start_paused = true)]
async fn an_actor_describes_itself_between_messages_without_counting_as_activity() {
    let f = fixture(Settings::default(), 100);
    assert!(f.actors.describe("counter", "k", soon()).await.is_none());
    add(&f.kind, "k", 7).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let detail = f.actors.describe("counter", "k", soon()).await.unwrap();
    assert_eq!(detail.info.status, ActorStatus::Live);
    assert_eq!((detail.info.mailbox_len, detail.info.restarts), (0, 0));
    assert_eq!(detail.info.quarantined_for, None);
    assert_eq!((detail.watchers, detail.timers), (0, 0));
    let described = detail.described.expect("an idle actor answers");
    let encoded = prost::Message::encode_to_vec(&7u64).len() as u64;
    assert_eq!(
        (described.loaded, described.state_bytes, described.version),
        (true, encoded, 1)
    );
    assert_eq!(described.reminder_ms, None);
    assert!(
        described.active_for >= Duration::from_secs(2),
        "{described:?}"
    );
    assert!(detail.info.idle_for >= Duration::from_secs(2), "{detail:?}");

    // Answering was no activity: the actor is as idle as before, and passivates on time.
    let again = f.actors.describe("counter", "k", soon()).await.unwrap();
    assert!(again.info.idle_for >= Duration::from_secs(2), "{again:?}");
}

#[tokio::test(start_paused = true)]
async fn a_described_actor_shows_its_timers_watchers_and_crashes() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "k", 1).await.unwrap();
    let _watch = f.kind.watch("k", soon()).await.unwrap();
    f.kind
        .send_after("k", Add(1, None), Duration::from_secs(5))
        .unwrap();
    let detail = f.actors.describe("counter", "k", soon()).await.unwrap();
    assert_eq!((detail.watchers, detail.timers), (1, 1), "{detail:?}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let detail = f.actors.describe("counter", "k", soon()).await.unwrap();
    assert_eq!(detail.timers, 0, "the timer fired: {detail:?}");
    assert_eq!(detail.described.unwrap().version, 2);

    // Between a crash and the next message nothing is loaded; the activation is the same.
    let before = detail.described.unwrap().active_for;
    let _ = f.kind.call("k", Boom, soon()).await;
    let crashed = f.actors.describe("counter", "k", soon()).await.unwrap();
    assert_eq!(crashed.info.restarts, 1);
    let described = crashed.described.unwrap();
    assert_eq!((described.loaded, described.version), (false, 0));
    assert!(
        described.active_for >= before,
        "a restart is no new activation"
    );
    f.kind.call("k", Get, soon()).await.unwrap();
    let reloaded = f.actors.describe("counter", "k", soon()).await.unwrap();
    assert_eq!(reloaded.described.unwrap().version, 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_or_busy_actor_is_described_by_its_registry_entry_alone() {
    let settings = Settings {
        mailbox_capacity: 2,
        ..Settings::default()
    };
    let f = fixture(settings, 100);
    add(&f.kind, "full", 1).await.unwrap();
    // Queued synchronously before the actor runs: the question finds no room.
    f.kind.cast("full", Add(1, None), soon()).unwrap();
    f.kind.cast("full", Add(1, None), soon()).unwrap();
    let full = f.actors.describe("counter", "full", soon()).await.unwrap();
    assert_eq!(full.info.mailbox_len, 2);
    assert_eq!(full.described, None);
    let (_, counts) = f.actors.counts()[0];
    assert_eq!(counts.mailbox_rejections, 0, "the question is no request");

    add(&f.kind, "busy", 1).await.unwrap();
    f.kind.cast("busy", Stall, soon()).unwrap();
    tokio::task::yield_now().await;
    let asked = tokio::time::Instant::now();
    let deadline = Deadline::after(Duration::from_secs(1));
    let busy = f
        .actors
        .describe("counter", "busy", deadline)
        .await
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "answered by the deadline"
    );
    assert_eq!(busy.info.status, ActorStatus::Live);
    assert_eq!(busy.described, None, "{busy:?}");
}

#[tokio::test(start_paused = true)]
async fn a_quarantined_key_is_described_by_its_quarantine() {
    let f = fixture(Settings::default(), 100);
    add(&f.kind, "loop", 1).await.unwrap();
    for _ in 0..4 {
        let _ = f.kind.call("loop", Boom, soon()).await;
    }
    let resting = f.actors.describe("counter", "loop", soon()).await.unwrap();
    assert_eq!(resting.info.status, ActorStatus::Quarantined);
    assert_eq!(resting.info.restarts, 4);
    let left = resting
        .info
        .quarantined_for
        .expect("a quarantine has an end");
    assert!(
        left > Duration::ZERO && left <= Duration::from_secs(10),
        "{left:?}"
    );
    assert_eq!((resting.watchers, resting.timers), (0, 0));
    assert_eq!(resting.described, None, "a quarantined key has no task");
    let listed = f.actors.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].quarantined_for, Some(left));
}
