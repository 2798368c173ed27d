//! Passivation: idle actors stop and free their memory, the cap evicts the least recently used,
//! and either way the next request finds exactly the state that was there.

use std::time::Duration;

use tests::{
    AdminClient, SessionOptions,
    session_client::{add_item, get_session, live_keys, poll_until, start, stats},
    spawn_session_stack,
};

/// Idle carts passivate after this long.
const IDLE_TIMEOUT: &str = "1s";

/// Hang guard for the passivation to happen: well above [`IDLE_TIMEOUT`].
const PASSIVATION_LIMIT: Duration = Duration::from_secs(15);

/// Idle carts in the idle test.
const IDLE_CARTS: usize = 3;

/// The cap of the eviction test.
const MAX_ACTORS: usize = 3;

/// Pause between activations so their last-use times (millisecond ticks) are clearly ordered.
const USE_GAP: Duration = Duration::from_millis(30);

async fn live_carts(admin: &mut AdminClient) -> u64 {
    stats(admin)
        .await
        .live_by_kind
        .get("cart")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn idle_carts_passivate_and_come_back_with_identical_state() {
    // The skus the carts add stay live as untracked skus until their own idle timeout.
    let options = SessionOptions::new()
        .cart_idle_timeout(IDLE_TIMEOUT)
        .flag("--sku-idle-timeout", IDLE_TIMEOUT);
    let stack = spawn_session_stack(options).await;
    let mut cart = stack.session.cart().await;
    let mut admin = stack.session.admin().await;
    let mut before = Vec::new();
    for n in 0..IDLE_CARTS {
        let key = format!("idle/{n}");
        start(&mut cart, &key).await.unwrap();
        add_item(&mut cart, &key, "A", 1, 100).await.unwrap();
        before.push(add_item(&mut cart, &key, "B", 2, 200).await.unwrap());
    }
    assert_eq!(live_carts(&mut admin).await, IDLE_CARTS as u64);

    let passivated = poll_until(PASSIVATION_LIMIT, Duration::from_millis(100), || {
        let mut admin = admin.clone();
        async move { (live_carts(&mut admin).await == 0).then_some(()) }
    })
    .await;
    assert!(
        passivated.is_some(),
        "idle carts still live {PASSIVATION_LIMIT:?} after a {IDLE_TIMEOUT} idle timeout: {:?}",
        stats(&mut admin).await
    );
    assert_eq!(stats(&mut admin).await.live_actors, 0);

    for session in &before {
        // The whole session, logs and timestamps included, must come back as it was.
        assert_eq!(
            &get_session(&mut cart, &session.key).await.unwrap(),
            session
        );
    }
    assert_eq!(live_carts(&mut admin).await, IDLE_CARTS as u64);
    let changed = add_item(&mut cart, &before[0].key, "A", 1, 100)
        .await
        .unwrap();
    assert_eq!(changed.version, before[0].version + 1);
}

#[tokio::test]
async fn at_the_actor_cap_the_least_recently_used_idle_actor_is_evicted() {
    // One slot more than the carts need: the sku the carts add is an actor too, and stays
    // live (an untracked sku answers from memory); it is touched after every cart.
    let stack = spawn_session_stack(SessionOptions::new().max_actors(MAX_ACTORS + 1)).await;
    let mut cart = stack.session.cart().await;
    let mut admin = stack.session.admin().await;
    let mut states = Vec::new();
    for key in ["a", "b", "c"] {
        start(&mut cart, key).await.unwrap();
        states.push(add_item(&mut cart, key, "SKU", 1, 100).await.unwrap());
        tokio::time::sleep(USE_GAP).await;
    }
    let b_before = states[1].clone();

    // Touch a: b is now the least recently used.
    get_session(&mut cart, "a").await.unwrap();
    tokio::time::sleep(USE_GAP).await;
    start(&mut cart, "d").await.unwrap();

    assert_eq!(live_keys(&mut admin, "cart").await, ["a", "c", "d"]);
    assert_eq!(live_keys(&mut admin, "sku").await, ["SKU"]);
    assert_eq!(stats(&mut admin).await.live_actors, MAX_ACTORS as u64 + 1);
    // b lost nothing by being evicted.
    assert_eq!(get_session(&mut cart, "b").await.unwrap(), b_before);
}
