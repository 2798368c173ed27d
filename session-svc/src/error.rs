//! session-svc's one error type and its single mapping onto gRPC status codes
//! (the error contract of DESIGN.md).
//!
//! A message quotes client input (a key, a sku) only through [`echo`]: at most 128 bytes of
//! it, escaped. Messages built elsewhere and carried as a `String` follow the same rule.

use std::time::Duration;

use kit::echo::{bounded, echo};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Everything a session-svc request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; `field` is its proto name (`unit_price.currency_code`).
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// The offending field as named in the proto.
        field: String,
        /// What is wrong and what would be accepted.
        description: String,
    },
    /// No such session, list, entry or actor.
    #[error("{0}")]
    NotFound(String),
    /// Not allowed in the current state (e.g. adding to a checked-out cart).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another writer changed the state first; the actor reloaded it. Retry.
    #[error("{0}")]
    Aborted(String),
    /// The actor's mailbox is full: it is receiving faster than it can handle.
    #[error(
        "mailbox of {kind}/{} is full ({capacity} waiting); retry after {retry_after:?}",
        echo(.key)
    )]
    MailboxFull {
        /// The actor's kind.
        kind: &'static str,
        /// The actor's key.
        key: String,
        /// The mailbox capacity.
        capacity: usize,
        /// Suggested back-off.
        retry_after: Duration,
    },
    /// `max_actors` are live and none is idle enough to passivate.
    #[error("actor limit reached ({limit} live, none idle); retry after {retry_after:?}")]
    ActorLimit {
        /// The configured cap.
        limit: usize,
        /// Suggested back-off.
        retry_after: Duration,
    },
    /// A watch stream beyond `max_watchers` or `max_watchers_per_key`; `cap` names which.
    #[error("watch refused: {cap}; retry after {retry_after:?}")]
    WatcherLimit {
        /// The cap that was reached, and its setting.
        cap: String,
        /// Suggested back-off.
        retry_after: Duration,
    },
    /// The caller's deadline passed before the work ran or finished.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// store-svc cannot be reached or is overloaded.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The key crashed too often and is resting; it may activate again after `retry_after`.
    #[error(
        "{kind}/{} is quarantined after repeated crashes; retry after {retry_after:?}",
        echo(.key)
    )]
    Quarantined {
        /// The actor's kind.
        kind: &'static str,
        /// The actor's key.
        key: String,
        /// Time left in quarantine.
        retry_after: Duration,
    },
    /// A server-wide limit on work of some kind (unfinished jobs) is reached.
    #[error("{what}; retry after {retry_after:?}")]
    Busy {
        /// What is at its limit, and the setting.
        what: String,
        /// Suggested back-off.
        retry_after: Duration,
    },
    /// The client cancelled or broke its request stream.
    #[error("the request stream broke: {0}")]
    Cancelled(String),
    /// The server is draining for shutdown.
    #[error("session-svc is shutting down; retry shortly")]
    ShuttingDown,
    /// The actor's handler panicked on this message (a bug); it restarts from durable state.
    #[error(
        "the actor for {kind}/{} crashed handling this request; it restarted from its last durable state",
        echo(.key)
    )]
    ActorCrashed {
        /// The actor's kind.
        kind: &'static str,
        /// The actor's key.
        key: String,
    },
    /// Stored state could not be decoded: a bug or a foreign writer.
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
    /// The store refused a request session-svc made as invalid: a bug, or a store that does
    /// not serve the namespaces session-svc uses (its `--namespaces`).
    #[error("the store refused session-svc's request: {0}")]
    StoreRefused(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The error a store status becomes when the store answers a session-svc call.
    pub fn from_store(status: &Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => Self::DeadlineExceeded(message),
            Code::Aborted => Self::Aborted(message),
            Code::NotFound => Self::NotFound(message),
            Code::Unavailable | Code::ResourceExhausted | Code::Unknown => {
                Self::StoreUnavailable(message)
            }
            Code::InvalidArgument => Self::StoreRefused(message),
            code => Self::Corrupt(format!("store answered {code:?}: {message}")),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        // Every message is bounded, even one built by mistake from unbounded client input.
        let message = bounded(error.to_string());
        let retry = |code, retry_after: &Duration| {
            Status::with_error_details(
                code,
                message.clone(),
                ErrorDetails::with_retry_info(Some(*retry_after)),
            )
        };
        match &error {
            Error::InvalidArgument { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                message.clone(),
                ErrorDetails::with_bad_request_violation(
                    bounded(field.clone()),
                    bounded(description.clone()),
                ),
            ),
            Error::NotFound(_) => Status::not_found(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::Aborted(_) => Status::aborted(message),
            Error::MailboxFull { retry_after, .. }
            | Error::ActorLimit { retry_after, .. }
            | Error::WatcherLimit { retry_after, .. }
            | Error::Busy { retry_after, .. } => retry(Code::ResourceExhausted, retry_after),
            Error::Cancelled(_) => Status::cancelled(message),
            Error::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            Error::StoreUnavailable(_) | Error::ShuttingDown => Status::unavailable(message),
            Error::Quarantined { retry_after, .. } => retry(Code::Unavailable, retry_after),
            Error::ActorCrashed { .. } | Error::Corrupt(_) | Error::StoreRefused(_) => {
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_contract_code() {
        let wait = Duration::from_millis(100);
        let cases = [
            (Error::invalid("key", "empty"), Code::InvalidArgument),
            (Error::NotFound("no session".into()), Code::NotFound),
            (
                Error::FailedPrecondition("checked out".into()),
                Code::FailedPrecondition,
            ),
            (Error::Aborted("conflict".into()), Code::Aborted),
            (
                Error::MailboxFull {
                    kind: "cart",
                    key: "k".into(),
                    capacity: 1,
                    retry_after: wait,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::ActorLimit {
                    limit: 1,
                    retry_after: wait,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::DeadlineExceeded("queued".into()),
                Code::DeadlineExceeded,
            ),
            (Error::StoreUnavailable("down".into()), Code::Unavailable),
            (
                Error::Quarantined {
                    kind: "cart",
                    key: "k".into(),
                    retry_after: wait,
                },
                Code::Unavailable,
            ),
            (Error::ShuttingDown, Code::Unavailable),
            (
                Error::ActorCrashed {
                    kind: "cart",
                    key: "k".into(),
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error.clone()).code(), code, "{error}");
        }
    }

    #[test]
    fn messages_quote_at_most_128_bytes_of_a_key() {
        let key = "k".repeat(256);
        let wait = Duration::from_millis(1);
        for error in [
            Error::MailboxFull {
                kind: "cart",
                key: key.clone(),
                capacity: 1,
                retry_after: wait,
            },
            Error::Quarantined {
                kind: "cart",
                key: key.clone(),
                retry_after: wait,
            },
            Error::ActorCrashed { kind: "cart", key },
        ] {
            let message = Status::from(error).message().to_owned();
            assert!(!message.contains(&"k".repeat(129)), "{message}");
            assert!(message.contains("…(256 bytes)"), "{message}");
        }
    }

    #[test]
    fn a_message_built_from_unbounded_input_is_still_cut() {
        let status = Status::from(Error::NotFound(format!("no actor {}", "k".repeat(1 << 20))));
        assert!(
            status.message().len() < 2048,
            "{} bytes",
            status.message().len()
        );
        let status = Status::from(Error::invalid("kind", "x".repeat(1 << 20)));
        assert!(
            status.details().len() < 2048,
            "{} bytes",
            status.details().len()
        );
    }

    #[test]
    fn backpressure_and_quarantine_carry_retry_info() {
        let wait = Duration::from_millis(250);
        for error in [
            Error::MailboxFull {
                kind: "cart",
                key: "k".into(),
                capacity: 1,
                retry_after: wait,
            },
            Error::Quarantined {
                kind: "cart",
                key: "k".into(),
                retry_after: wait,
            },
            Error::WatcherLimit {
                cap: "64 watch streams on this key".into(),
                retry_after: wait,
            },
        ] {
            let status = Status::from(error);
            assert_eq!(
                status.get_details_retry_info().unwrap().retry_delay,
                Some(wait)
            );
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid("unit_price.currency_code", "mixed currency"));
        let details = status.get_details_bad_request().unwrap();
        assert_eq!(
            details.field_violations[0].field,
            "unit_price.currency_code"
        );
    }

    #[test]
    fn store_statuses_become_contract_errors() {
        assert!(matches!(
            Error::from_store(&Status::unavailable("x")),
            Error::StoreUnavailable(_)
        ));
        assert!(matches!(
            Error::from_store(&Status::aborted("x")),
            Error::Aborted(_)
        ));
        assert!(matches!(
            Error::from_store(&Status::deadline_exceeded("x")),
            Error::DeadlineExceeded(_)
        ));
        assert!(matches!(
            Error::from_store(&Status::resource_exhausted("x")),
            Error::StoreUnavailable(_)
        ));
        let refused = Error::from_store(&Status::invalid_argument("namespace not served"));
        assert!(matches!(refused, Error::StoreRefused(_)));
        assert_eq!(Status::from(refused).code(), Code::Internal);
    }
}
