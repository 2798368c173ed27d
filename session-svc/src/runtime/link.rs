//! session-svc's view of its connection to store-svc: what a failed call means, and an
//! outage logged once when it starts and once when it ends.
//!
//! A store that restarts or goes away breaks calls in several ways: connections refused
//! (UNAVAILABLE), HTTP/2 streams reset by a GOAWAY or a closed socket (tonic reports those as
//! INTERNAL or UNKNOWN "h2 protocol error", with the transport error as the status's source),
//! or cancelled. None of them is a bug and none says anything about the stored state, so each
//! becomes UNAVAILABLE here, naming the store's address; for a write it also says that the
//! outcome is unknown. A status that store-svc itself sent (no transport source) keeps its
//! meaning.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use tonic::{Code, Status};

use super::batcher::outcome_unknown;

/// The connection to one store-svc.
#[derive(Debug)]
pub struct StoreLink {
    /// The store's address, as configured (`http://host:port`).
    addr: String,
    /// True while the store is unreachable (the hot path reads only this).
    down: AtomicBool,
    /// Outages so far: a call that started before the current outage and answered late
    /// (its connection was still draining) does not end it.
    outages: AtomicU64,
    /// When the current outage began.
    since: Mutex<Option<Instant>>,
}

impl StoreLink {
    /// The link to the store at `addr`, assumed reachable until a call says otherwise.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            down: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            since: Mutex::new(None),
        }
    }

    /// The store's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True while an outage is going on.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Taken when a call starts, and handed back with its outcome.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.outages.load(Ordering::Acquire))
    }

    /// The store answered a call that started with `ticket` (whatever it answered): an
    /// outage that began before the call started is over.
    pub fn answered(&self, ticket: Ticket) {
        if !self.down.load(Ordering::Relaxed) || ticket.0 != self.outages.load(Ordering::Acquire) {
            return;
        }
        if !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let since = self
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        tracing::info!(
            store = %self.addr,
            outage = ?since.map(|since| since.elapsed()),
            "store-svc is reachable again"
        );
    }

    /// What a failed call means for its caller. A transport failure starts an outage (logged
    /// once) and becomes UNAVAILABLE naming the store, with the outcome unknown for a
    /// `write`; a status the store sent is passed on, except that a write's CANCELLED,
    /// UNKNOWN or INTERNAL leaves its outcome unknown too.
    pub fn failed(&self, ticket: Ticket, status: &Status, write: bool) -> Status {
        if is_transport(status) {
            self.went_down(status);
            let why = format!(
                "the connection to store-svc at {} failed: {}",
                self.addr,
                status.message()
            );
            return if write {
                outcome_unknown(&why)
            } else {
                Status::unavailable(why)
            };
        }
        self.answered(ticket);
        match status.code() {
            Code::Cancelled | Code::Unknown | Code::Internal if write => outcome_unknown(&format!(
                "the call to store-svc at {} failed: {}",
                self.addr,
                status.message()
            )),
            code => Status::new(code, status.message()),
        }
    }

    fn went_down(&self, status: &Status) {
        if self.down.load(Ordering::Relaxed) || self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.outages.fetch_add(1, Ordering::AcqRel);
        *self.since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(
            store = %self.addr,
            error = %status.message(),
            "store-svc is unreachable: calls that need it answer UNAVAILABLE until it is back"
        );
    }
}

/// Which outage was current when a call started; see [`StoreLink::ticket`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// True when `status` comes from the connection rather than from store-svc: tonic attaches
/// the transport error as the source of the statuses it makes itself, and a refused or lost
/// connection is UNAVAILABLE. A call that tonic cut off at its own deadline
/// ([`tonic::TimeoutExpired`]) says nothing about the connection.
fn is_transport(status: &Status) -> bool {
    if status.code() == Code::Unavailable {
        return true;
    }
    let mut cause = std::error::Error::source(status);
    if cause.is_none() {
        return false;
    }
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() {
            return false;
        }
        cause = error.source();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport_error() -> Status {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let mut status = Status::internal("h2 protocol error: connection reset");
        status.set_source(std::sync::Arc::new(io));
        status
    }

    #[test]
    fn a_broken_connection_is_unavailable_naming_the_store_never_internal() {
        let link = StoreLink::new("http://127.0.0.1:7");
        let read = link.failed(link.ticket(), &transport_error(), false);
        assert_eq!(read.code(), Code::Unavailable);
        assert!(read.message().contains("http://127.0.0.1:7"), "{read:?}");
        let write = link.failed(link.ticket(), &transport_error(), true);
        assert_eq!(write.code(), Code::Unavailable);
        assert!(write.message().contains("outcome is unknown"), "{write:?}");
        assert!(link.is_down());
    }

    #[test]
    fn an_answer_ends_the_outage_and_store_statuses_keep_their_code() {
        let link = StoreLink::new("http://127.0.0.1:7");
        let before = link.ticket();
        link.failed(before, &Status::unavailable("connection refused"), false);
        assert!(link.is_down());
        link.answered(before);
        assert!(
            link.is_down(),
            "a call from before the outage does not end it"
        );
        let aborted = link.failed(link.ticket(), &Status::aborted("version conflict"), true);
        assert_eq!(aborted.code(), Code::Aborted);
        assert!(!link.is_down(), "the store answered");
        let internal = link.failed(link.ticket(), &Status::internal("store bug"), false);
        assert_eq!(
            internal.code(),
            Code::Internal,
            "a read keeps the store's INTERNAL"
        );
        let unknown = link.failed(link.ticket(), &Status::internal("store bug"), true);
        assert_eq!(
            unknown.code(),
            Code::Unavailable,
            "a write's outcome is unknown"
        );
    }
}
