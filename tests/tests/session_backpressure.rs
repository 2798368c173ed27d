//! Backpressure: a flood on one key fills its bounded mailbox; the excess is refused at once with
//! RESOURCE_EXHAUSTED and a retry hint, everything accepted is applied exactly, and memory stays
//! flat because nothing queues without bound.

use std::{sync::Arc, time::Duration};

use tests::{
    DelayProxy, SessionOptions,
    session_client::{add_item, get_session, quantity_of, start},
    spawn_session, spawn_store,
};
use tokio::{sync::Barrier, task::JoinSet};
use tonic::Code;
use tonic_types::StatusExt;

/// A tiny mailbox, so a modest flood overflows it.
const MAILBOX_CAPACITY: usize = 4;

/// Store latency per chunk each way: each write takes a few tens of milliseconds, so the
/// actor drains its mailbox slowly while the flood arrives.
const STORE_DELAY: Duration = Duration::from_millis(20);

/// Flooding tasks and the AddItems each sends back to back (ignoring the retry hint on
/// purpose: this client misbehaves).
const FLOODERS: usize = 64;
const SENDS_PER_FLOODER: usize = 100;

/// Connections the flood shares.
const CHANNELS: usize = 8;

/// Generous bound on session-svc's RSS growth during the flood: far above allocator noise, far
/// below what a queue or leak growing with the requests sent would need.
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

/// What one flooder saw.
#[derive(Debug, Default)]
struct Tally {
    accepted: i32,
    refused: usize,
    /// Anything other than OK or RESOURCE_EXHAUSTED with RetryInfo.
    unexpected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_flood_is_refused_with_retry_info_and_every_accepted_add_counts() {
    let store = spawn_store().await;
    let proxy = DelayProxy::start(store.addr(), STORE_DELAY).await.unwrap();
    let session = spawn_session(
        &proxy.endpoint(),
        SessionOptions::new().mailbox_capacity(MAILBOX_CAPACITY),
    )
    .await;
    let mut cart = session.cart().await;
    let key = "flooded";
    start(&mut cart, key).await.unwrap();
    add_item(&mut cart, key, "WARMUP", 1, 100).await.unwrap();
    let rss_before = session.rss_bytes().unwrap();

    let mut connections = Vec::new();
    for _ in 0..CHANNELS {
        connections.push(session.cart().await);
    }
    let barrier = Arc::new(Barrier::new(FLOODERS));
    let mut flood = JoinSet::new();
    for flooder in 0..FLOODERS {
        let mut cart = connections[flooder % CHANNELS].clone();
        let barrier = Arc::clone(&barrier);
        flood.spawn(async move {
            barrier.wait().await;
            let mut tally = Tally::default();
            for _ in 0..SENDS_PER_FLOODER {
                match add_item(&mut cart, key, "A", 1, 100).await {
                    Ok(_) => tally.accepted += 1,
                    Err(status)
                        if status.code() == Code::ResourceExhausted
                            && status.get_details_retry_info().is_some() =>
                    {
                        tally.refused += 1;
                    }
                    Err(status) => tally.unexpected.push(format!("{status:?}")),
                }
            }
            tally
        });
    }
    // Sample RSS while the flood runs.
    let mut rss_peak = rss_before;
    let mut tallies = Vec::new();
    while !flood.is_empty() {
        tokio::select! {
            Some(done) = flood.join_next() => tallies.push(done.expect("flooder panicked")),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        rss_peak = rss_peak.max(session.rss_bytes().unwrap());
    }

    let accepted: i32 = tallies.iter().map(|t| t.accepted).sum();
    let refused: usize = tallies.iter().map(|t| t.refused).sum();
    let unexpected: Vec<&String> = tallies.iter().flat_map(|t| &t.unexpected).collect();
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "flood of {} AddItems: {accepted} accepted, {refused} refused; RSS {} KiB before, \
         peak +{} KiB",
        FLOODERS * SENDS_PER_FLOODER,
        rss_before / 1024,
        growth / 1024
    );
    assert!(
        unexpected.is_empty(),
        "{} answers were neither OK nor RESOURCE_EXHAUSTED with RetryInfo, e.g. {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    assert!(
        refused > 0,
        "a {MAILBOX_CAPACITY}-slot mailbox never overflowed"
    );
    assert!(accepted > 0, "nothing got through the flood");
    let session_state = get_session(&mut cart, key).await.unwrap();
    assert_eq!(
        quantity_of(&session_state, "A"),
        accepted,
        "every accepted add, and only those, is in the cart"
    );
    // Start, warm-up add, then one version per accepted add.
    assert_eq!(session_state.version, 2 + u64::try_from(accepted).unwrap());
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "session-svc grew by {} KiB during the flood",
        growth / 1024
    );
}
