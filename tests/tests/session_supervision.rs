//! Supervision: a crashed actor restarts from its last durable state and nobody else notices;
//! a crash loop quarantines only its key, which recovers after the backoff.

use std::time::Duration;

use proto::session::v1::{ActorStatus, GetActorRequest};
use tests::{
    SessionOptions,
    session_client::{add_item, get_session, kill_actor, poll_until, quantity_of, start},
    spawn_session_stack,
    status::expect_code,
};
use tonic::Code;
use tonic_types::StatusExt;

/// Sessions that share the server with the crashing one.
const BYSTANDERS: usize = 5;

/// Quarantine settings of the crash-loop test: a second crash within the window quarantines.
const MAX_RESTARTS: u32 = 1;
const RESTART_WINDOW: &str = "5s";
const QUARANTINE: Duration = Duration::from_secs(2);

/// Hang guard for the quarantine to end: far above [`QUARANTINE`], not a speed requirement.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_killed_actor_restarts_from_durable_state_and_other_keys_do_not_notice() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut cart = stack.session.cart().await;
    let mut admin = stack.session.admin().await;
    let victim = "victim";
    start(&mut cart, victim).await.unwrap();
    add_item(&mut cart, victim, "A", 2, 100).await.unwrap();
    let before_crash = add_item(&mut cart, victim, "B", 1, 300).await.unwrap();
    let mut bystanders = Vec::new();
    for n in 0..BYSTANDERS {
        let key = format!("bystander/{n}");
        start(&mut cart, &key).await.unwrap();
        let quantity = i32::try_from(n).unwrap() + 1;
        bystanders.push(add_item(&mut cart, &key, "X", quantity, 50).await.unwrap());
    }

    kill_actor(&mut admin, "cart", victim).await.unwrap();

    // The next request is served by the restarted actor, from the durable state.
    let after_crash = get_session(&mut cart, victim).await.unwrap();
    assert_eq!(after_crash, before_crash);
    let actor = admin
        .get_actor(GetActorRequest {
            kind: "cart".into(),
            key: victim.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(actor.restarts, 1, "{actor:?}");
    assert_eq!(actor.status, ActorStatus::Live as i32, "{actor:?}");
    // And it keeps working, continuing the same version sequence.
    let changed = add_item(&mut cart, victim, "A", 1, 100).await.unwrap();
    assert_eq!(quantity_of(&changed, "A"), 3);
    assert_eq!(changed.version, before_crash.version + 1);
    // Nobody else noticed: same state, same versions.
    for bystander in &bystanders {
        assert_eq!(
            &get_session(&mut cart, &bystander.key).await.unwrap(),
            bystander
        );
    }
    // GetStats counts the restart, per kind.
    let stats = tests::session_client::stats(&mut admin).await;
    let carts = stats.kinds.iter().find(|k| k.kind == "cart").unwrap();
    assert_eq!(carts.restarts, 1, "{carts:?}");
    assert!(carts.activations > BYSTANDERS as u64, "{carts:?}");
    assert!(stats.uptime.is_some());
    let store = stats.store_calls.unwrap();
    assert!(store.calls > 0, "{store:?}");
    let nanos = |d: Option<prost_types::Duration>| {
        let d = d.expect("quantiles once calls were made");
        d.seconds * 1_000_000_000 + i64::from(d.nanos)
    };
    assert!(
        0 < nanos(store.p50) && nanos(store.p50) <= nanos(store.p99),
        "{store:?}"
    );
    // A key with no live actor cannot be killed, and the answer says why.
    let idle = kill_actor(&mut admin, "cart", "never-started")
        .await
        .unwrap_err();
    assert_eq!(idle.code(), tonic::Code::NotFound, "{idle:?}");
    assert!(idle.message().contains("is not live"), "{idle:?}");
}

#[tokio::test]
async fn a_crash_loop_quarantines_the_key_with_retry_info_then_it_recovers() {
    let options = SessionOptions::new()
        .max_restarts(MAX_RESTARTS)
        .restart_window(RESTART_WINDOW)
        .quarantine(&format!("{}s", QUARANTINE.as_secs()));
    let stack = spawn_session_stack(options).await;
    let mut cart = stack.session.cart().await;
    let mut admin = stack.session.admin().await;
    let looping = "crash-loop";
    let healthy = "healthy";
    start(&mut cart, looping).await.unwrap();
    let durable = add_item(&mut cart, looping, "A", 4, 100).await.unwrap();
    start(&mut cart, healthy).await.unwrap();

    // Crash, prove it restarted, crash again: two crashes within the window.
    kill_actor(&mut admin, "cart", looping).await.unwrap();
    assert_eq!(get_session(&mut cart, looping).await.unwrap(), durable);
    kill_actor(&mut admin, "cart", looping).await.unwrap();

    let status = expect_code(
        get_session(&mut cart, looping).await,
        Code::Unavailable,
        "GetSession of a quarantined key",
    );
    let retry = status
        .get_details_retry_info()
        .unwrap_or_else(|| panic!("UNAVAILABLE of a quarantine carries RetryInfo: {status:?}"));
    let delay = retry.retry_delay.expect("RetryInfo has a retry_delay");
    assert!(
        delay > Duration::ZERO && delay <= QUARANTINE,
        "retry_delay {delay:?} should be within the {QUARANTINE:?} quarantine"
    );
    let quarantined = admin
        .get_actor(GetActorRequest {
            kind: "cart".into(),
            key: looping.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quarantined.status, ActorStatus::Quarantined as i32);
    // Only that key: another session works throughout.
    add_item(&mut cart, healthy, "H", 1, 100).await.unwrap();

    // After the backoff the key activates again, from its durable state.
    let recovered = poll_until(RECOVERY_LIMIT, Duration::from_millis(100), || {
        let mut cart = cart.clone();
        async move {
            match get_session(&mut cart, looping).await {
                Ok(session) => Some(Ok(session)),
                Err(status) if status.code() == Code::Unavailable => None,
                Err(status) => Some(Err(status)),
            }
        }
    })
    .await
    .unwrap_or_else(|| panic!("{looping} still quarantined after {RECOVERY_LIMIT:?}"))
    .expect("the only error while quarantined is UNAVAILABLE");
    assert_eq!(recovered, durable);
    let changed = add_item(&mut cart, looping, "A", 1, 100).await.unwrap();
    assert_eq!(quantity_of(&changed, "A"), 5);
    assert_eq!(changed.version, durable.version + 1);
}
