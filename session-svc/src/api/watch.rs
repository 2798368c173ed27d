//! Server streams of an actor's changes (WatchSession, WatchList).
//!
//! The actor publishes into a bounded broadcast and never waits for watchers. A forwarding
//! task per stream turns it into gRPC messages: the current state first, then every change in
//! order; a watcher that falls more than the buffer behind skips to the newest state.
//!
//! Streams are bounded like mailboxes: at most `max_watchers` open in all and
//! `max_watchers_per_key` per key (beyond, RESOURCE_EXHAUSTED with RetryInfo), each for at
//! most `watch_max_lifetime`. A stream ends quietly after a final state (a checked-out cart)
//! or when the client goes away; it ends UNAVAILABLE, telling the client to watch again, when
//! its lifetime is over, when the actor stops (a watched actor that is otherwise idle still
//! passivates, or is evicted at the actor cap; watching again reactivates it), or when the
//! server drains.

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{
    error::{self, reason},
    runtime::Subscription,
};

/// Messages buffered per stream between the forwarder and the HTTP/2 writer.
const STREAM_BUFFER: usize = 4;

/// Streams the subscription's first state, then what its changes deliver, until `is_final`
/// holds for a message sent, the client goes away, the stream's lifetime ends, the actor
/// stops, or `closing` turns true. The subscription's watcher slot is held until then.
pub fn stream<T: Clone + Send + Sync + 'static>(
    subscription: Subscription<T>,
    mut closing: watch::Receiver<bool>,
    is_final: impl Fn(&T) -> bool + Send + 'static,
) -> ReceiverStream<Result<T, Status>> {
    let Subscription {
        first,
        mut changes,
        slot,
        ends_at,
    } = subscription;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let _slot = slot;
        let lifetime = tokio::time::sleep_until(ends_at);
        tokio::pin!(lifetime);
        let mut next = first;
        loop {
            let done = is_final(&next);
            if tx.send(Ok(next)).await.is_err() || done {
                return;
            }
            let step = tokio::select! {
                received = changes.recv() => match received {
                    Ok(item) => Next::Item(item),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        newest(&mut changes).map_or(Next::Stopped, Next::Item)
                    }
                    Err(broadcast::error::RecvError::Closed) => Next::Stopped,
                },
                drained = closing.wait_for(|closing| *closing) => {
                    if drained.is_ok() { Next::Drained } else { Next::End }
                }
                () = &mut lifetime => Next::Expired,
                () = tx.closed() => Next::End,
            };
            next = match step {
                Next::Item(item) => item,
                Next::End => return,
                Next::Drained => {
                    let _ = tx
                        .send(Err(unavailable(reason::SHUTTING_DOWN, DRAINED)))
                        .await;
                    return;
                }
                Next::Stopped => {
                    let _ = tx
                        .send(Err(unavailable(reason::ACTOR_STOPPED, STOPPED)))
                        .await;
                    return;
                }
                Next::Expired => {
                    let _ = tx
                        .send(Err(unavailable(reason::WATCH_EXPIRED, EXPIRED)))
                        .await;
                    return;
                }
            };
        }
    });
    ReceiverStream::new(rx)
}

/// Why a stream ended when the server drains.
const DRAINED: &str = "session-svc is shutting down; watch again to re-subscribe";

/// Why a stream ended when its actor stopped.
const STOPPED: &str = "the watched actor stopped (idle, evicted at the actor limit, or \
     quarantined); watch again to re-subscribe, which activates it again";

/// Why a stream ended at its maximum lifetime.
const EXPIRED: &str = "this watch stream reached its maximum lifetime \
     (--watch-max-lifetime); watch again to re-subscribe";

fn unavailable(reason: &'static str, message: &str) -> Status {
    error::status(tonic::Code::Unavailable, reason, message)
}

/// What the forwarder does next.
enum Next<T> {
    /// Send this state.
    Item(T),
    /// The server drains: say so, then end.
    Drained,
    /// The actor stopped: say so, then end.
    Stopped,
    /// The stream's lifetime is over: say so, then end.
    Expired,
    /// End quietly (the client went away).
    End,
}

/// After a lag: everything still buffered is stale but the last; keep only that.
fn newest<T: Clone>(changes: &mut broadcast::Receiver<T>) -> Option<T> {
    let mut newest = None;
    loop {
        match changes.try_recv() {
            Ok(item) => newest = Some(item),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return newest,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::runtime::{Actors, WatchSlot};

    /// A subscription to `changes` starting at `first`, ending `lifetime` from now.
    fn subscription<T>(
        first: T,
        changes: broadcast::Receiver<T>,
        lifetime: Duration,
    ) -> Subscription<T> {
        let permit = Actors::new(1).watcher_permit().unwrap();
        Subscription {
            first,
            changes,
            slot: WatchSlot::new(permit),
            ends_at: Instant::now() + lifetime,
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn streams_first_then_changes_and_ends_at_a_final_state() {
        let (tx, rx) = broadcast::channel(16);
        let (_closing_tx, closing) = watch::channel(false);
        let mut stream = stream(subscription(0, rx, LONG), closing, |n| *n >= 3);
        for n in 1..=5 {
            tx.send(n).unwrap();
        }
        let seen: Vec<i32> = (&mut stream).map(|r| r.unwrap()).collect().await;
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_lagging_watcher_skips_to_the_newest_state() {
        let (tx, rx) = broadcast::channel(2);
        let (_closing_tx, closing) = watch::channel(false);
        for n in 1..=10 {
            tx.send(n).unwrap();
        }
        let mut stream = stream(subscription(0, rx, LONG), closing, |_| false);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        assert_eq!(stream.next().await.unwrap().unwrap(), 10);
        drop(tx);
        let _ = stream.next().await;
    }

    #[tokio::test]
    async fn an_actor_that_stops_ends_the_stream_asking_to_re_subscribe() {
        let (tx, rx) = broadcast::channel::<i32>(2);
        let (_closing_tx, closing) = watch::channel(false);
        let mut stream = stream(subscription(0, rx, LONG), closing, |_| false);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        drop(tx);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("re-subscribe"), "{status:?}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_at_its_maximum_lifetime_asking_to_re_subscribe() {
        let (_tx, rx) = broadcast::channel::<i32>(2);
        let (_closing_tx, closing) = watch::channel(false);
        let mut stream = stream(
            subscription(0, rx, Duration::from_secs(60)),
            closing,
            |_| false,
        );
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("maximum lifetime"), "{status:?}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_closed_stream_gives_its_watcher_slot_back() {
        let actors = Actors::new(1);
        let (_tx, rx) = broadcast::channel::<i32>(2);
        let (_closing_tx, closing) = watch::channel(false);
        let sub = Subscription {
            first: 0,
            changes: rx,
            slot: WatchSlot::new(actors.watcher_permit().unwrap()),
            ends_at: Instant::now() + LONG,
        };
        let mut stream = stream(sub, closing, |_| false);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        assert_eq!(actors.watchers(), 1);
        drop(stream);
        for _ in 0..100 {
            if actors.watchers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(actors.watchers(), 0, "the slot outlived its stream");
    }

    #[tokio::test]
    async fn draining_ends_the_stream_with_unavailable() {
        let (_tx, rx) = broadcast::channel::<i32>(2);
        let (closing_tx, closing) = watch::channel(false);
        let mut stream = stream(subscription(0, rx, LONG), closing, |_| false);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        closing_tx.send_replace(true);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
    }
}
