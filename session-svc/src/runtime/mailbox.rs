//! An actor's bounded mailbox.
//!
//! Hand-made rather than a tokio mpsc channel for two reasons. Size: a million idle actors
//! each own one, and an empty `VecDeque` allocates nothing, where an mpsc channel allocates a
//! block of slots up front. Control: passivation must close the mailbox only if it is still
//! empty, atomically with respect to senders, so that no message is ever accepted by an actor
//! that is about to stop.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
};

use tokio::sync::Notify;

/// Why a message was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The mailbox holds its capacity already: backpressure.
    Full(T),
    /// The actor stopped (passivated, evicted, crashed for good); activate a new one.
    Closed(T),
}

#[derive(Debug)]
struct Inner<T> {
    /// Waiting messages, oldest first.
    queue: VecDeque<T>,
    /// Set once; no message is accepted after.
    closed: bool,
    /// The actor is handling a message right now (so it is not idle even if `queue` is empty).
    busy: bool,
}

/// A bounded multi-producer, single-consumer queue with an atomic close-if-idle.
#[derive(Debug)]
pub struct Mailbox<T> {
    /// The queue and its flags; held only for a push or pop, never across an await.
    inner: Mutex<Inner<T>>,
    /// Wakes the actor when a message arrives or the mailbox closes.
    ready: Notify,
    /// Most messages waiting at once.
    capacity: usize,
}

impl<T> Mailbox<T> {
    /// An empty mailbox for at most `capacity` waiting messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                closed: false,
                busy: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message`, or gives it back if the mailbox is full or closed.
    pub fn push(&self, message: T) -> Result<(), Refused<T>> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(Refused::Closed(message));
            }
            if inner.queue.len() >= self.capacity {
                return Err(Refused::Full(message));
            }
            inner.queue.push_back(message);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for the next message and marks the actor busy; `None` once closed and empty.
    pub async fn recv(&self) -> Option<T> {
        loop {
            {
                let mut inner = self.lock();
                if let Some(message) = inner.queue.pop_front() {
                    inner.busy = true;
                    if inner.queue.is_empty() {
                        // Give the buffer back: most actors sit idle, and a million idle
                        // mailboxes each keeping a few slots would add up.
                        inner.queue = VecDeque::new();
                    }
                    return Some(message);
                }
                inner.busy = false;
                if inner.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Marks the current message done (the actor is idle if nothing else waits).
    pub fn done(&self) {
        self.lock().busy = false;
    }

    /// Closes the mailbox if nothing waits and nothing is being handled; true if it closed.
    /// Used for passivation and eviction: an idle actor may stop without losing a message.
    pub fn close_if_idle(&self) -> bool {
        let closed = {
            let mut inner = self.lock();
            if inner.busy || !inner.queue.is_empty() {
                false
            } else {
                inner.closed = true;
                true
            }
        };
        if closed {
            self.ready.notify_one();
        }
        closed
    }

    /// Closes the mailbox and returns whatever was still waiting, to be answered by the caller.
    pub fn close(&self) -> Vec<T> {
        let drained = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.queue.drain(..).collect()
        };
        self.ready.notify_one();
        drained
    }

    /// True when no message waits and none is being handled.
    pub fn is_idle(&self) -> bool {
        let inner = self.lock();
        !inner.busy && inner.queue.is_empty()
    }

    /// Messages waiting now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[test]
    fn refuses_beyond_capacity_and_gives_the_message_back() {
        let mailbox = Mailbox::new(2);
        assert_eq!(mailbox.push(1), Ok(()));
        assert_eq!(mailbox.push(2), Ok(()));
        assert_eq!(mailbox.push(3), Err(Refused::Full(3)));
        assert_eq!(mailbox.len(), 2);
    }

    #[tokio::test]
    async fn delivers_in_order_and_ends_after_close() {
        let mailbox = Mailbox::new(8);
        for i in 0..3 {
            mailbox.push(i).unwrap();
        }
        assert_eq!(mailbox.recv().await, Some(0));
        assert_eq!(mailbox.close(), vec![1, 2]);
        assert_eq!(mailbox.push(9), Err(Refused::Closed(9)));
        assert_eq!(mailbox.recv().await, None);
    }

    #[tokio::test]
    async fn close_if_idle_refuses_while_busy_or_queued() {
        let mailbox = Mailbox::new(8);
        mailbox.push(1).unwrap();
        assert!(!mailbox.close_if_idle(), "closed with a message waiting");
        assert_eq!(mailbox.recv().await, Some(1));
        assert!(!mailbox.close_if_idle(), "closed while the actor was busy");
        mailbox.done();
        assert!(mailbox.is_idle());
        assert!(mailbox.close_if_idle());
        assert!(mailbox.is_closed());
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_push_and_on_close() {
        let mailbox = Arc::new(Mailbox::new(8));
        let receiver = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { (mailbox.recv().await, mailbox.recv().await) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        mailbox.push(7).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        mailbox.done();
        assert!(mailbox.close_if_idle());
        assert_eq!(receiver.await.unwrap(), (Some(7), None));
    }
}
