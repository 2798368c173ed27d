//! Quarantine holds under load: a key that crashes every time it is handled (KillActor on a
//! loop), hammered by 64 concurrent callers, is quarantined after its restart intensity, and
//! every call until the quarantine ends is refused UNAVAILABLE: no request slips in between
//! the crash and the quarantine and starts a fresh actor.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use proto::session::v1::{ActorStatus, GetActorRequest};
use tests::{
    SessionOptions,
    session_client::{add_item, get_session, kill_actor, poll_until, start},
    spawn_session_stack,
};
use tokio::time::Instant;
use tonic::Code;
use tonic_types::StatusExt;

/// Concurrent callers of the crash-looping key.
const CALLERS: usize = 64;
/// Connections the callers share.
const CONNECTIONS: usize = 4;
/// Restarts tolerated before the quarantine: the second crash within the window quarantines.
const MAX_RESTARTS: u32 = 1;
/// Long enough that every crash of the test falls in one window.
const RESTART_WINDOW: &str = "60s";
/// The quarantine: long enough to hammer it for a while.
const QUARANTINE: Duration = Duration::from_secs(6);
/// Hang guard for the first quarantined answer: not a speed requirement.
const FIRST_QUARANTINE_LIMIT: Duration = Duration::from_secs(30);

/// One call as a caller saw it.
#[derive(Debug)]
struct Call {
    /// When it was sent.
    sent: Instant,
    /// When its answer arrived.
    received: Instant,
    /// What it was.
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// Served (before the quarantine, by a restarted actor).
    Ok,
    /// Refused for the quarantine, with the time it has left.
    Quarantined(Duration),
    /// Anything else (the crash itself answers INTERNAL to the call it was handling).
    Other(Code, String),
}

impl Outcome {
    /// For failure messages.
    fn describe(&self) -> String {
        match self {
            Outcome::Ok => "OK".into(),
            Outcome::Quarantined(left) => format!("quarantined, {left:?} left"),
            Outcome::Other(code, message) => format!("{code:?}: {message}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_hammered_by_64_callers_stays_quarantined_until_it_ends() {
    let options = SessionOptions::new()
        .max_restarts(MAX_RESTARTS)
        .restart_window(RESTART_WINDOW)
        .quarantine(&format!("{}s", QUARANTINE.as_secs()));
    let stack = spawn_session_stack(options).await;
    let key = "crash-loop";
    let mut carts = Vec::new();
    for _ in 0..CONNECTIONS {
        carts.push(stack.session.cart().await);
    }
    start(&mut carts[0], key).await.unwrap();
    add_item(&mut carts[0], key, "A", 1, 100).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let first_quarantined = Arc::new(Mutex::new(None::<Instant>));
    // Crashes the key whenever it is live: every activation dies on its next message.
    let killer = tokio::spawn({
        let mut admin = stack.session.admin().await;
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                if kill_actor(&mut admin, "cart", key).await.is_err() {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let mut cart = carts[n % CONNECTIONS].clone();
            let (stop, first_quarantined) = (stop.clone(), first_quarantined.clone());
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = get_session(&mut cart, key).await;
                    let received = Instant::now();
                    let outcome = match answer {
                        Ok(_) => Outcome::Ok,
                        Err(status) if status.code() == Code::Unavailable => {
                            let left = status
                                .get_details_retry_info()
                                .and_then(|retry| retry.retry_delay)
                                .unwrap_or_else(|| {
                                    panic!("quarantine without RetryInfo: {status:?}")
                                });
                            assert!(status.message().contains("quarantined"), "{status:?}");
                            first_quarantined.lock().unwrap().get_or_insert(received);
                            Outcome::Quarantined(left)
                        }
                        Err(status) => Outcome::Other(status.code(), status.message().to_owned()),
                    };
                    calls.push(Call {
                        sent,
                        received,
                        outcome,
                    });
                }
                calls
            })
        })
        .collect();

    let first = poll_until(FIRST_QUARANTINE_LIMIT, Duration::from_millis(20), || {
        let first = *first_quarantined.lock().unwrap();
        async move { first }
    })
    .await
    .unwrap_or_else(|| panic!("{key} was never quarantined"));
    // Hammer for half the quarantine: it cannot have ended before then.
    tokio::time::sleep_until(first + QUARANTINE / 2).await;
    let mut admin = stack.session.admin().await;
    let actor = admin
        .get_actor(GetActorRequest {
            kind: "cart".into(),
            key: key.into(),
        })
        .await
        .unwrap()
        .into_inner();
    stop.store(true, Ordering::Relaxed);
    killer.await.unwrap();
    let mut calls = Vec::new();
    for caller in callers {
        calls.extend(caller.await.unwrap());
    }

    // The registry holds the quarantine, and the crashes that led to it are the intensity
    // plus the one that tripped it: no escaped activation crashed on top.
    assert_eq!(actor.status, ActorStatus::Quarantined as i32, "{actor:?}");
    assert_eq!(actor.restarts, MAX_RESTARTS + 1, "{actor:?}");

    // A lower bound of the quarantine's end: a refusal says how long is left, counted from
    // a moment no earlier than when its call was sent.
    let ends = calls
        .iter()
        .filter_map(|call| match call.outcome {
            Outcome::Quarantined(left) => Some(call.sent + left),
            _ => None,
        })
        .max()
        .expect("quarantined answers were seen");
    let during: Vec<&Call> = calls
        .iter()
        .filter(|call| call.sent >= first && call.received <= ends)
        .collect();
    assert!(
        during.len() >= CALLERS,
        "only {} calls fell inside the quarantine",
        during.len()
    );
    let escaped: Vec<&&Call> = during
        .iter()
        .filter(|call| !matches!(call.outcome, Outcome::Quarantined(_)))
        .collect();
    assert!(
        escaped.is_empty(),
        "{} of {} calls during the quarantine were not refused as quarantined, e.g. {:?}",
        escaped.len(),
        during.len(),
        escaped.first().map(|call| call.outcome.describe())
    );
    eprintln!(
        "{} calls in all, {} during the quarantine, all refused",
        calls.len(),
        during.len()
    );
}
