//! session-svc as several replicas over one store: any replica answers for any key (the
//! owner of its shard serves it, the others forward), acknowledged writes land exactly once,
//! watches see writes sent through other replicas, and a replica that dies, drains or freezes
//! hands its shards over without losing or duplicating anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use proto::session::v1::{
    AddItemRequest, GetActorRequest, GetJobRequest, GetStatsRequest, ImportEntriesRequest,
    JobState, ListActorsRequest, Session,
};
use tests::{
    DelayProxy, SessionOptions, StoreOptions, StoreProcess,
    clients::Frozen,
    cluster::{SessionCluster, fast_cluster_options},
    load::scrape_metrics,
    session::CartClient,
    session_client::{add_request, get_session, start, watch_session},
    spawn_store_with,
};
use tokio::{sync::Mutex, time::Instant};
use tonic::{Code, Status};

/// Codes after which a write is retried with the same request id: it was not applied, or
/// its outcome is unknown and the id makes the retry safe.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled
    ) || (status.code() == Code::Unknown && status.message().contains("transport"))
}

/// An AddItem of one unit of `sku` to `key`, with request id `sku`.
fn add_once(key: &str, sku: &str) -> AddItemRequest {
    let mut request = add_request(key, sku, 1, 100);
    request.request_id = format!("id-{sku}");
    request
}

/// Sends `request` through `carts` (rotating from `first` on each failure) until it is
/// acknowledged; how long it took. Panics on a non-retryable answer or after `budget`.
async fn add_until_acknowledged(
    carts: &mut [CartClient],
    first: usize,
    request: AddItemRequest,
    budget: Duration,
) -> Duration {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let cart = &mut carts[(first + attempt) % carts.len()];
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(Duration::from_secs(3));
        match cart.add_item(call).await {
            Ok(_) => return started.elapsed(),
            Err(status) if retryable(&status) && started.elapsed() < budget => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!(
                "AddItem {} to {} failed after {:?}: {status:?}",
                request.sku,
                request.key,
                started.elapsed()
            ),
        }
    }
}

/// The skus of `session` and their quantities.
fn lines(session: &Session) -> BTreeMap<String, i32> {
    session
        .items
        .iter()
        .map(|item| (item.sku.clone(), item.quantity))
        .collect()
}

/// Asserts that every replica of `carts` reads cart `key` with exactly the `acked` skus,
/// one unit each: nothing lost, nothing applied twice, nothing unacknowledged.
async fn assert_exactly_once(carts: &mut [CartClient], key: &str, acked: &BTreeSet<String>) {
    for (i, cart) in carts.iter_mut().enumerate() {
        let session = get_session(cart, key).await.unwrap();
        let lines = lines(&session);
        let expected: BTreeMap<String, i32> = acked.iter().map(|s| (s.clone(), 1)).collect();
        assert_eq!(lines, expected, "cart {key} as replica {i} reads it");
    }
}

/// Counters summed over the replicas whose `/metrics` are at `addrs`.
#[derive(Debug, Default, Clone, Copy)]
struct ClusterCounters {
    cart_activations: f64,
    fence_refusals: f64,
    forwarded: f64,
}

async fn cluster_counters(addrs: &[std::net::SocketAddr]) -> ClusterCounters {
    let mut sum = ClusterCounters::default();
    for addr in addrs {
        let page = scrape_metrics(*addr).await.unwrap();
        let get = |name: &str| page.get(name).copied().unwrap_or_default();
        sum.cart_activations += get("session_actor_activations_total{kind=\"cart\"}");
        sum.fence_refusals += get("session_cluster_fence_refusals_total");
        sum.forwarded += get("session_cluster_forwarded_total");
    }
    sum
}

/// The store-svc replicas a test cluster writes through.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// One store-svc on sled: every replica writes through it.
    Sled,
    /// Two store-svc replicas on one PostgreSQL database (a throwaway server): replicas 0 and
    /// 2 write through the first, replica 1 through the second.
    Postgres,
}

/// Running stores and which one each of three replicas writes through.
struct Stores {
    stores: Vec<StoreProcess>,
    /// Index into `stores` per replica.
    of_replica: [usize; 3],
}

impl Stores {
    async fn start(backend: Backend) -> Self {
        match backend {
            Backend::Sled => Self {
                stores: vec![spawn_store_with(StoreOptions::new().default_namespaces()).await],
                of_replica: [0, 0, 0],
            },
            Backend::Postgres => {
                let server = tests::postgres::shared_server().expect("a PostgreSQL server");
                let database = format!("cluster_{}", rand_suffix());
                let url = server.create_database(&database).expect("a database");
                let options = StoreOptions::new().default_namespaces().postgres(url);
                let mut stores = Vec::new();
                for _ in 0..2 {
                    stores.push(spawn_store_with(options.clone()).await);
                }
                Self {
                    stores,
                    of_replica: [0, 1, 0],
                }
            }
        }
    }

    /// The store replica `i` writes through.
    fn of(&self, i: usize) -> &StoreProcess {
        &self.stores[self.of_replica[i]]
    }

    /// [`Stores::each`], each replica with a `/metrics` port of its own (returned too).
    fn each_with_metrics(
        &self,
        options: &SessionOptions,
    ) -> (Vec<(String, SessionOptions)>, Vec<std::net::SocketAddr>) {
        let metrics: Vec<std::net::SocketAddr> = (0..3)
            .map(|_| tests::load::free_loopback_addr().unwrap())
            .collect();
        let settings = (0..3)
            .map(|i| {
                let options = options.clone().metrics_listen(metrics[i]);
                (self.of(i).endpoint(), options)
            })
            .collect();
        (settings, metrics)
    }

    /// Three replicas' settings: each its store, all `options`.
    fn each(&self, options: &SessionOptions) -> Vec<(String, SessionOptions)> {
        (0..3)
            .map(|i| (self.of(i).endpoint(), options.clone()))
            .collect()
    }
}

/// A name no other test of this process uses.
fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Each scenario twice: over one store-svc on sled, and over two store-svc replicas on
/// PostgreSQL.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::Sled).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

#[tokio::test]
async fn scaling_up_moves_only_the_shards_the_new_replica_wins() {
    let stores = Stores::start(Backend::Sled).await;
    let (settings, metrics) = stores.each_with_metrics(&fast_cluster_options());
    // Two replicas serve; the third is in their --peers but not started yet.
    let mut cluster = SessionCluster::spawn_first(settings, 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(metrics[0], "session_cluster_shards_held").await
        + counter(metrics[1], "session_cluster_shards_held").await
        < 64.0
    {
        assert!(
            Instant::now() < deadline,
            "two replicas never held all 64 shards"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members: Vec<Arc<str>> = cluster.addrs.iter().map(|a| a.to_string().into()).collect();
    let won = (0..64)
        .filter(|shard| session_svc::cluster::rendezvous(&members, *shard) == Some(&members[2]))
        .count() as f64;
    let moved = async |metrics: &[std::net::SocketAddr]| {
        [
            counter(metrics[0], "session_cluster_leases_released_total").await
                + counter(metrics[1], "session_cluster_leases_released_total").await,
            counter(metrics[0], "session_cluster_leases_acquired_total").await
                + counter(metrics[1], "session_cluster_leases_acquired_total").await,
        ]
    };
    let before = moved(&metrics).await;

    cluster.replicas[2] = Some(cluster.start(2).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(metrics[2], "session_cluster_shards_held").await < won {
        assert!(
            Instant::now() < deadline,
            "the new replica never took its {won} shards"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settled: exactly the shards the newcomer wins changed hands, and no other.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = moved(&metrics).await;
    assert_eq!(
        after[0] - before[0],
        won,
        "leases the old replicas released"
    );
    assert_eq!(after[1] - before[1], 0.0, "leases the old replicas took");
    assert_eq!(
        counter(metrics[2], "session_cluster_leases_acquired_total").await,
        won
    );
    let held: f64 = [
        counter(metrics[0], "session_cluster_shards_held").await,
        counter(metrics[1], "session_cluster_shards_held").await,
        counter(metrics[2], "session_cluster_shards_held").await,
    ]
    .iter()
    .sum();
    assert_eq!(held, 64.0);
}

/// One series of the `/metrics` page at `addr` (0 when absent); a replica just started may
/// open its metrics port a moment after its gRPC port.
async fn counter(addr: std::net::SocketAddr, name: &str) -> f64 {
    let mut tries = 0;
    loop {
        match scrape_metrics(addr).await {
            Ok(page) => return page.get(name).copied().unwrap_or_default(),
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("scraping {addr}: {error:#}"),
        }
    }
}

on_both_backends!(
    writes_through_any_replica_land_exactly_once_and_every_replica_reads_them,
    a_watch_on_one_replica_sees_writes_sent_through_the_others,
    a_sigkilled_replica_s_shards_move_within_the_lease_and_no_acknowledged_write_is_lost,
    a_drained_replica_hands_its_shards_over_at_once_not_after_its_lease,
    a_replica_frozen_past_its_lease_is_fenced_and_never_overwrites_newer_state,
    an_import_runs_where_its_list_is_and_any_replica_answers_for_the_job,
);

async fn writes_through_any_replica_land_exactly_once_and_every_replica_reads_them(
    backend: Backend,
) {
    let stores = Stores::start(backend).await;
    let (settings, metrics) = stores.each_with_metrics(&fast_cluster_options());
    let cluster = SessionCluster::spawn_each(settings).await;
    cluster.settle(8, Duration::from_secs(20)).await;

    let keys: Vec<String> = (0..6).map(|i| format!("shared-{i}")).collect();
    let mut carts = cluster.carts().await;
    for (i, key) in keys.iter().enumerate() {
        start(&mut carts[i % 3], key).await.unwrap();
    }
    let before = cluster_counters(&metrics).await;
    // 12 writers, four through each replica, each adding its own skus to two carts; after
    // each acknowledgement the next replica must already read it.
    let acked = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..12 {
        let mut carts = cluster.carts().await;
        let (keys, acked) = (keys.clone(), acked.clone());
        writers.spawn(async move {
            for n in 0..10 {
                let key = &keys[(writer + n) % keys.len()];
                let sku = format!("w{writer}-n{n}");
                let through = writer % 3;
                add_until_acknowledged(
                    &mut carts,
                    through,
                    add_once(key, &sku),
                    Duration::from_secs(10),
                )
                .await;
                acked
                    .lock()
                    .await
                    .entry(key.clone())
                    .or_default()
                    .insert(sku.clone());
                let next = &mut carts[(through + 1) % 3];
                let session = get_session(next, key).await.unwrap();
                assert_eq!(
                    lines(&session).get(&sku),
                    Some(&1),
                    "{sku}, acknowledged through replica {through}, as the next one reads {key}"
                );
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    // No cart was activated a second time anywhere, and no write was refused by a fence: one
    // activation per key, across the replicas. About two calls in three were forwarded.
    let after = cluster_counters(&metrics).await;
    assert_eq!(
        after.cart_activations, before.cart_activations,
        "{before:?} {after:?}"
    );
    assert_eq!(after.fence_refusals, 0.0, "{after:?}");
    assert!(
        after.forwarded - before.forwarded >= 60.0,
        "{before:?} {after:?}"
    );
    let acked = acked.lock().await;
    let total: usize = acked.values().map(BTreeSet::len).sum();
    assert_eq!(total, 120);
    for (key, skus) in acked.iter() {
        assert_exactly_once(&mut carts, key, skus).await;
    }

    // Admin through any one replica answers for the cluster: one activation per key, on the
    // replica placement names; every shard placed and leased once.
    let mut admin = cluster.replica(0).admin().await;
    let listed = admin
        .list_actors(ListActorsRequest {
            kind: "cart".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for key in &keys {
        let owners: Vec<&str> = listed
            .actors
            .iter()
            .filter(|a| a.key == *key)
            .map(|a| a.replica.as_str())
            .collect();
        let expected = cluster.addrs[cluster.owner_of("cart", key)].to_string();
        assert_eq!(owners, [expected.as_str()], "where {key} is live");
    }
    // A cart of replica 2, started through replica 0 (the six above may all be elsewhere:
    // about one run in eleven).
    let far = &(0..)
        .map(|i| format!("far-{i}"))
        .find(|key| cluster.owner_of("cart", key) == 2)
        .unwrap();
    start(&mut carts[0], far).await.unwrap();
    let actor = admin
        .get_actor(GetActorRequest {
            kind: "cart".into(),
            key: far.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(actor.replica, cluster.addrs[2].to_string());
    // Hundreds of calls forwarded over the one kept connection to the owner: a forwarder
    // that passed on the empty frame ending each request made the owner close that
    // connection (GOAWAY) every 100 calls, failing the calls in flight.
    let reader = (0..3)
        .find(|r| *r != cluster.owner_of("cart", far))
        .unwrap();
    for _ in 0..300 {
        get_session(&mut carts[reader], far).await.unwrap();
    }
    let stats = admin
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.replica, cluster.addrs[0].to_string());
    assert_eq!(stats.members.len(), 3, "{:?}", stats.members);
    assert!(
        stats.members.iter().all(|m| m.answered),
        "{:?}",
        stats.members
    );
    let placed: u32 = stats.members.iter().map(|m| m.shards).sum();
    let held: u32 = stats.members.iter().map(|m| m.shards_held).sum();
    assert_eq!((placed, held), (64, 64), "{:?}", stats.members);
}

async fn a_watch_on_one_replica_sees_writes_sent_through_the_others(backend: Backend) {
    let stores = Stores::start(backend).await;
    let cluster = SessionCluster::spawn_each(stores.each(&fast_cluster_options())).await;
    cluster.settle(8, Duration::from_secs(20)).await;
    let mut carts = cluster.carts().await;
    // A key the watching replica does not own, so the watch itself is forwarded too.
    let key = (0..)
        .map(|i| format!("watched-{i}"))
        .find(|key| cluster.owner_of("cart", key) != 0)
        .unwrap();
    start(&mut carts[0], &key).await.unwrap();
    let mut stream = watch_session(&mut carts[0], &key).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.items.is_empty());
    for (through, sku) in [(1, "via-b"), (2, "via-c")] {
        add_until_acknowledged(
            &mut carts,
            through,
            add_once(&key, sku),
            Duration::from_secs(10),
        )
        .await;
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let update = stream.message().await.unwrap().expect("stream open");
                if lines(&update).contains_key(sku) {
                    return update;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the watch on replica 0 never showed {sku}"));
        assert_eq!(lines(&seen).get(sku), Some(&1));
    }
}

/// Writers through replicas 1 and 2 add to carts, some owned by replica 0, while replica 0
/// is stopped by `stop`; returns the longest a write waited and checks every cart.
async fn writes_survive_losing_replica_zero(
    cluster: &mut SessionCluster,
    stop: impl AsyncFnOnce(&mut SessionCluster),
) -> Duration {
    cluster.settle(8, Duration::from_secs(20)).await;
    let keys: Vec<String> = (0..)
        .map(|i| format!("failover-{i}"))
        .filter(|key| cluster.owner_of("cart", key) == 0)
        .take(3)
        .chain(
            (0..)
                .map(|i| format!("elsewhere-{i}"))
                .filter(|key| cluster.owner_of("cart", key) != 0)
                .take(2),
        )
        .collect();
    let survivors = [
        cluster.replica(1).cart().await,
        cluster.replica(2).cart().await,
    ];
    let mut starter = survivors.to_vec();
    for key in &keys {
        start(&mut starter[0], key).await.unwrap();
    }
    let acked = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..6 {
        let mut carts = survivors.to_vec();
        let (keys, acked, longest, stop_rx) = (
            keys.clone(),
            acked.clone(),
            longest.clone(),
            stop_rx.clone(),
        );
        writers.spawn(async move {
            // Paced, and at most 150 each: carts hold at most 500 lines.
            let mut n = 0;
            while !*stop_rx.borrow() && n < 150 {
                let key = &keys[(writer + n) % keys.len()];
                let sku = format!("w{writer}-n{n}");
                let took = add_until_acknowledged(
                    &mut carts,
                    writer,
                    add_once(key, &sku),
                    Duration::from_secs(30),
                )
                .await;
                let mut longest = longest.lock().await;
                *longest = (*longest).max(took);
                drop(longest);
                acked
                    .lock()
                    .await
                    .entry(key.clone())
                    .or_default()
                    .insert(sku);
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(cluster).await;
    // Long enough for the shards to move and for writes to go on afterwards.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_tx.send(true).unwrap();
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let acked = acked.lock().await;
    for key in &keys {
        let skus = acked.get(key).cloned().unwrap_or_default();
        assert!(!skus.is_empty(), "no write to {key} was acknowledged");
        let mut readers = survivors.to_vec();
        assert_exactly_once(&mut readers, key, &skus).await;
    }
    *longest.lock().await
}

async fn a_sigkilled_replica_s_shards_move_within_the_lease_and_no_acknowledged_write_is_lost(
    backend: Backend,
) {
    let stores = Stores::start(backend).await;
    let mut cluster = SessionCluster::spawn_each(stores.each(&fast_cluster_options())).await;
    let longest = writes_survive_losing_replica_zero(&mut cluster, async |cluster| {
        cluster.replica_mut(0).kill().await.unwrap();
    })
    .await;
    // The dead replica's keys wait for its 2 s lease (plus skew, plus three missed 100 ms
    // health checks), then move: a write never waits much longer than that.
    assert!(
        longest < Duration::from_secs(6),
        "a write waited {longest:?} for the dead replica's shards"
    );
}

async fn a_drained_replica_hands_its_shards_over_at_once_not_after_its_lease(backend: Backend) {
    let stores = Stores::start(backend).await;
    // A lease far longer than the test: only a release can move the shards in time.
    let options = fast_cluster_options().flag("--lease-ttl", "60s");
    let mut cluster = SessionCluster::spawn_each(stores.each(&options)).await;
    let longest = writes_survive_losing_replica_zero(&mut cluster, async |cluster| {
        let replica = cluster.replica_mut(0);
        replica.terminate().await.unwrap();
        let status = replica.wait().await.unwrap();
        assert!(status.success(), "replica 0 drained with {status:?}");
    })
    .await;
    assert!(
        longest < Duration::from_secs(10),
        "a write waited {longest:?}: the drained replica's shards did not move at once"
    );
}

async fn a_replica_frozen_past_its_lease_is_fenced_and_never_overwrites_newer_state(
    backend: Backend,
) {
    let stores = Stores::start(backend).await;
    // Replica 0 reaches the store through a proxy whose latency the test controls.
    let proxy = DelayProxy::start(stores.of(0).addr(), Duration::ZERO)
        .await
        .unwrap();
    let metrics_addr = tests::load::free_loopback_addr().unwrap();
    let mut settings = stores.each(&fast_cluster_options());
    settings[0] = (
        proxy.endpoint(),
        fast_cluster_options().metrics_listen(metrics_addr),
    );
    let cluster = SessionCluster::spawn_each(settings).await;
    cluster.settle(8, Duration::from_secs(20)).await;
    let key = (0..)
        .map(|i| format!("frozen-{i}"))
        .find(|key| cluster.owner_of("cart", key) == 0)
        .unwrap();
    let mut carts = cluster.carts().await;
    start(&mut carts[0], &key).await.unwrap();

    // A write reaches replica 0's actor and is on its way to the store, slowly; then
    // replica 0 freezes for longer than its lease.
    proxy.set_delay(Duration::from_secs(6));
    let mut stale_cart = carts[0].clone();
    let stale_key = key.clone();
    let stale = tokio::spawn(async move {
        let mut call = tonic::Request::new(add_once(&stale_key, "stale"));
        call.set_timeout(Duration::from_secs(40));
        stale_cart.add_item(call).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = Frozen::freeze(cluster.replica(0).pid());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Meanwhile the others take the shard over and accept a newer write.
    let mut others = vec![carts[1].clone(), carts[2].clone()];
    add_until_acknowledged(
        &mut others,
        0,
        add_once(&key, "fresh"),
        Duration::from_secs(15),
    )
    .await;
    drop(frozen);

    // The frozen write reaches the store after the shard changed hands: refused by the fence.
    let answer = stale.await.unwrap();
    let status = answer.expect_err("a write under a lost lease must not be acknowledged");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("changed hands"), "{status:?}");
    proxy.set_delay(Duration::ZERO);

    // Every replica, the resumed one included, reads the newer state and only it.
    let mut all = cluster.carts().await;
    let fresh: BTreeSet<String> = ["fresh".to_string()].into();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match get_session(&mut all[0], &key).await {
            Ok(session) => {
                assert_eq!(lines(&session), BTreeMap::from([("fresh".to_string(), 1)]));
                break;
            }
            Err(status) if retryable(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("replica 0 never read the cart again: {status:?}"),
        }
    }
    assert_exactly_once(&mut all, &key, &fresh).await;
    let page = scrape_metrics(metrics_addr).await.unwrap();
    let refusals = page
        .get("session_cluster_fence_refusals_total")
        .copied()
        .unwrap_or_default();
    assert!(refusals >= 1.0, "no fence refusal counted: {page:?}");
}

async fn an_import_runs_where_its_list_is_and_any_replica_answers_for_the_job(backend: Backend) {
    let stores = Stores::start(backend).await;
    let cluster = SessionCluster::spawn_each(stores.each(&fast_cluster_options())).await;
    cluster.settle(8, Duration::from_secs(20)).await;
    let list = (0..)
        .map(|i| format!("imported-{i}"))
        .find(|list| cluster.owner_of("todo", list) == 1)
        .unwrap();
    let entries: Vec<ImportEntriesRequest> = (1..=50)
        .map(|line| ImportEntriesRequest {
            list: list.clone(),
            date: "2025-03-01".into(),
            title: format!("entry-{line}"),
            line,
        })
        .collect();
    // Sent to replica 0, run by replica 1 (the list's), asked about through replica 2.
    let mut jobs0 = cluster.replica(0).jobs().await;
    let job = jobs0
        .import_entries(tokio_stream::iter(entries))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.owner_of("job", &job.id), 1, "job {} placed", job.id);
    let mut jobs2 = cluster.replica(2).jobs().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let now = jobs2
            .get_job(GetJobRequest { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner();
        if now.state() == JobState::Succeeded || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    assert_eq!(done.imported, 50);
    let mut todo = cluster.replica(2).todo().await;
    let listed = tests::session_client::list_entries(&mut todo, &list, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 50);
}
