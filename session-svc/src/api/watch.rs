//! Server streams of an actor's changes (WatchSession, WatchList).
//!
//! The actor publishes into a bounded broadcast and never waits for watchers. A forwarding
//! task per stream turns it into gRPC messages: the current state first, then every change in
//! order; a watcher that falls more than the buffer behind skips to the newest state. The
//! stream ends after a final state (a checked-out cart), when the actor stops, or when the
//! server drains.

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Messages buffered per stream between the forwarder and the HTTP/2 writer.
const STREAM_BUFFER: usize = 4;

/// Streams `first`, then what `changes` delivers, until `is_final` holds for a message sent,
/// the actor stops, the client goes away, or `closing` turns true.
pub fn stream<T: Clone + Send + Sync + 'static>(
    first: T,
    mut changes: broadcast::Receiver<T>,
    mut closing: watch::Receiver<bool>,
    is_final: impl Fn(&T) -> bool + Send + 'static,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
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
                        newest(&mut changes).map_or(Next::End, Next::Item)
                    }
                    Err(broadcast::error::RecvError::Closed) => Next::End,
                },
                drained = closing.wait_for(|closing| *closing) => {
                    if drained.is_ok() { Next::Drained } else { Next::End }
                }
                () = tx.closed() => Next::End,
            };
            next = match step {
                Next::Item(item) => item,
                Next::End => return,
                Next::Drained => {
                    let draining = Status::unavailable("session-svc is shutting down; watch again");
                    let _ = tx.send(Err(draining)).await;
                    return;
                }
            };
        }
    });
    ReceiverStream::new(rx)
}

/// What the forwarder does next.
enum Next<T> {
    /// Send this state.
    Item(T),
    /// The server drains: say so, then end.
    Drained,
    /// End quietly (actor stopped, client gone).
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
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn streams_first_then_changes_and_ends_at_a_final_state() {
        let (tx, rx) = broadcast::channel(16);
        let (_closing_tx, closing) = watch::channel(false);
        let mut stream = stream(0, rx, closing, |n| *n >= 3);
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
        drop(tx);
        let seen: Vec<i32> = stream(0, rx, closing, |_| false)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(seen, vec![0, 10]);
    }

    #[tokio::test]
    async fn draining_ends_the_stream_with_unavailable() {
        let (_tx, rx) = broadcast::channel::<i32>(2);
        let (closing_tx, closing) = watch::channel(false);
        let mut stream = stream(0, rx, closing, |_| false);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        closing_tx.send_replace(true);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
    }
}
