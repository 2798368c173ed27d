//! Concurrency: many clients on many sessions, and many clients on one session, lose nothing.

use std::sync::Arc;

use proto::session::v1::{LineItem, Session};
use tests::{
    CartClient, SessionOptions,
    session_client::{add_item, apply_discount, get_session, remove_item, start, usd},
    spawn_session_stack,
};
use tokio::{sync::Barrier, task::JoinSet};

/// Sessions in the many-sessions run.
const SESSIONS: usize = 1_000;

/// Client tasks and the connections they share.
const TASKS: usize = 64;
const CHANNELS: usize = 8;

/// Concurrent AddItems on the one hot key.
const HOT_ADDS: usize = 100;

/// The ten operations every session goes through, in order (StartSession first).
async fn shop(cart: &mut CartClient, key: &str) -> Result<(), tonic::Status> {
    start(cart, key).await?;
    add_item(cart, key, "A", 1, 100).await?;
    add_item(cart, key, "B", 2, 250).await?;
    add_item(cart, key, "A", 3, 100).await?;
    remove_item(cart, key, "B", 1).await?;
    add_item(cart, key, "C", 1, 1000).await?;
    apply_discount(cart, key, "SAVE10").await?;
    add_item(cart, key, "C", 2, 1000).await?;
    remove_item(cart, key, "A", 1).await?;
    add_item(cart, key, "B", 1, 250).await?;
    Ok(())
}

fn line(sku: &str, quantity: i32, cents: i64) -> LineItem {
    LineItem {
        sku: sku.to_owned(),
        name: format!("product {sku}"),
        quantity,
        unit_price: Some(usd(cents)),
    }
}

/// What [`shop`] must leave behind: A 3 × 1.00, B 2 × 2.50, C 3 × 10.00 = 38.00, less 10%.
fn assert_shopped(session: &Session) {
    let key = &session.key;
    assert_eq!(
        session.items,
        vec![line("A", 3, 100), line("B", 2, 250), line("C", 3, 1000)],
        "items of {key}"
    );
    assert_eq!(session.subtotal, Some(usd(3800)), "subtotal of {key}");
    assert_eq!(session.total, Some(usd(3420)), "total of {key}");
    assert_eq!(session.version, 10, "ten changes make version 10 for {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_of_ten_operations_from_concurrent_clients_end_exact() {
    // Mailboxes are never contended here (one client per key), so the defaults apply.
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut carts = Vec::new();
    for _ in 0..CHANNELS {
        carts.push(stack.session.cart().await);
    }

    let mut clients = JoinSet::new();
    for task in 0..TASKS {
        let mut cart = carts[task % CHANNELS].clone();
        clients.spawn(async move {
            let mut failures = Vec::new();
            for session in (task..SESSIONS).step_by(TASKS) {
                let key = format!("many/{session}");
                if let Err(status) = shop(&mut cart, &key).await {
                    failures.push(format!("{key}: {status:?}"));
                }
            }
            failures
        });
    }
    let failures: Vec<String> = clients.join_all().await.into_iter().flatten().collect();

    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions failed, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    let mut cart = carts[0].clone();
    for session in 0..SESSIONS {
        let key = format!("many/{session}");
        assert_shopped(&get_session(&mut cart, &key).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_adds_to_one_key_lose_no_update() {
    // Room for every concurrent add in the mailbox: this test is about lost updates, not
    // backpressure (session_backpressure.rs covers a full mailbox).
    let stack = spawn_session_stack(SessionOptions::new().mailbox_capacity(2 * HOT_ADDS)).await;
    let mut cart = stack.session.cart().await;
    let key = "hot";
    start(&mut cart, key).await.unwrap();
    let mut connections = Vec::new();
    for _ in 0..CHANNELS {
        connections.push(stack.session.cart().await);
    }

    // Released together, so the adds really race.
    let barrier = Arc::new(Barrier::new(HOT_ADDS));
    let mut adders = JoinSet::new();
    for adder in 0..HOT_ADDS {
        let mut cart = connections[adder % CHANNELS].clone();
        let barrier = Arc::clone(&barrier);
        adders.spawn(async move {
            barrier.wait().await;
            add_item(&mut cart, key, "HOT", 1, 100)
                .await
                .map(|session| session.version)
        });
    }
    let outcomes = adders.join_all().await;

    let mut versions: Vec<u64> = outcomes
        .iter()
        .map(|outcome| outcome.clone().expect("every concurrent AddItem succeeds"))
        .collect();
    versions.sort_unstable();
    let expected: Vec<u64> = (2..2 + HOT_ADDS as u64).collect();
    assert_eq!(
        versions, expected,
        "each add is its own change: versions 2..=101, once each"
    );
    let session = get_session(&mut cart, key).await.unwrap();
    assert_eq!(session.items, vec![line("HOT", HOT_ADDS as i32, 100)]);
    assert_eq!(session.version, 1 + HOT_ADDS as u64);
}
