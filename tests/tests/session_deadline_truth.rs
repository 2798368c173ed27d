//! Deadlines that tell the truth: behind a store that answers slowly, AddItems with deadlines
//! from 100 ms to 1.5 s each end in one of three ways, and each way means what the error
//! contract says. OK: applied. DEADLINE_EXCEEDED from the server: not applied, ever.
//! UNAVAILABLE "outcome unknown": a retry with the same request id settles it, applied once.

use std::time::Duration;

use tests::{
    DelayProxy, SessionOptions,
    session_client::{add_request, get_session, quantity_of, start, with_timeout},
    spawn_session, spawn_store,
};
use tokio::task::JoinSet;
use tonic::Code;

/// Latency the proxy adds to every chunk each way: a store round trip of about half a second.
const STORE_DELAY: Duration = Duration::from_millis(250);

/// Client deadlines swept, in milliseconds.
const DEADLINES_MS: [u64; 8] = [100, 300, 500, 700, 900, 1100, 1300, 1500];

/// Attempts per deadline, each on its own cart.
const ATTEMPTS: usize = 3;

/// Time for anything still in flight through the proxy to land before checking.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    NotApplied,
    Unknown,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answer_to_a_late_write_means_what_the_contract_says() {
    let store = spawn_store().await;
    let proxy = DelayProxy::start(store.addr(), Duration::ZERO)
        .await
        .unwrap();
    let session = spawn_session(&proxy.endpoint(), SessionOptions::new()).await;
    let mut cart = session.cart().await;
    let carts: Vec<(u64, String)> = DEADLINES_MS
        .iter()
        .flat_map(|ms| (0..ATTEMPTS).map(move |i| (*ms, format!("late-{ms}-{i}"))))
        .collect();
    for (_, key) in &carts {
        start(&mut cart, key).await.unwrap();
    }
    // Every AddItem first asks its sku's actor whether the sku's stock is tracked; that actor
    // stays live. Loaded now, it answers from memory, and the deadlines below measure the
    // carts' own slow writes rather than all of them queueing behind one slow first load.
    start(&mut cart, "warm-up").await.unwrap();
    tests::session_client::add_item(&mut cart, "warm-up", "A", 1, 100)
        .await
        .unwrap();

    proxy.set_delay(STORE_DELAY);
    let mut calls = JoinSet::new();
    for (ms, key) in carts.clone() {
        let mut raw = session.raw_cart().await;
        calls.spawn(async move {
            let mut request = add_request(&key, "A", 1, 100);
            request.request_id = format!("{key}-r");
            let deadline = Duration::from_millis(ms);
            let outcome = match raw.add_item(with_timeout(request, deadline)).await {
                Ok(_) => Outcome::Applied,
                Err(status) if status.code() == Code::DeadlineExceeded => Outcome::NotApplied,
                Err(status)
                    if status.code() == Code::Unavailable
                        && status.message().contains("unknown") =>
                {
                    Outcome::Unknown
                }
                Err(status) => panic!("AddItem on {key} with {ms} ms: unexpected {status:?}"),
            };
            (key, ms, outcome)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = calls.join_next().await {
        outcomes.push(done.expect("call task"));
    }
    proxy.set_delay(Duration::ZERO);
    tokio::time::sleep(SETTLE).await;

    let count = |which| outcomes.iter().filter(|(_, _, o)| *o == which).count();
    eprintln!(
        "{} AddItems: {} OK, {} DEADLINE_EXCEEDED, {} UNAVAILABLE (outcome unknown)",
        outcomes.len(),
        count(Outcome::Applied),
        count(Outcome::NotApplied),
        count(Outcome::Unknown)
    );
    for (key, ms, outcome) in &outcomes {
        let now = get_session(&mut cart, key).await.unwrap();
        match outcome {
            Outcome::Applied => assert_eq!(quantity_of(&now, "A"), 1, "{key} ({ms} ms) OK"),
            Outcome::NotApplied => assert_eq!(
                quantity_of(&now, "A"),
                0,
                "{key}: a server-sent DEADLINE_EXCEEDED ({ms} ms) was applied"
            ),
            Outcome::Unknown => {
                // The retry settles it: applied exactly once, whatever happened first.
                for _ in 0..2 {
                    let mut retry = add_request(key, "A", 1, 100);
                    retry.request_id = format!("{key}-r");
                    let session = cart.add_item(retry).await.expect("retry").into_inner();
                    assert_eq!(quantity_of(&session, "A"), 1, "{key} ({ms} ms) retried");
                }
            }
        }
    }
    assert!(
        count(Outcome::Applied) > 0,
        "even 1.5 s deadlines never succeeded: {outcomes:?}"
    );
    assert!(
        count(Outcome::Applied) < outcomes.len(),
        "no deadline was short enough to fail: {outcomes:?}"
    );
}
