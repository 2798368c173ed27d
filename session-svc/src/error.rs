//! session-svc's one error type and its single mapping onto gRPC status codes
//! (the error contract in the README's table).
//!
//! A message quotes client input (a key, a sku) only through [`echo`]: at most 128 bytes of
//! it, escaped. Messages built elsewhere and carried as a `String` follow the same rule.

use std::time::Duration;

use kit::echo::{bounded, echo};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo.domain` of session-svc's errors.
pub const ERROR_DOMAIN: &str = "session.v1";

/// The stable `google.rpc.ErrorInfo.reason` strings session-svc sends: clients switch on them,
/// so they never change meaning (new ones may be added).
pub mod reason {
    /// INVALID_ARGUMENT: a request field is malformed (BadRequest names it).
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// NOT_FOUND: no shopping session with this key.
    pub const SESSION_NOT_FOUND: &str = "SESSION_NOT_FOUND";
    /// NOT_FOUND: no to-do list with this name.
    pub const LIST_NOT_FOUND: &str = "LIST_NOT_FOUND";
    /// NOT_FOUND: no entry with this id in the list.
    pub const ENTRY_NOT_FOUND: &str = "ENTRY_NOT_FOUND";
    /// NOT_FOUND: the sku has no stock set.
    pub const SKU_NOT_FOUND: &str = "SKU_NOT_FOUND";
    /// NOT_FOUND: the sku to remove is not in the cart.
    pub const ITEM_NOT_IN_CART: &str = "ITEM_NOT_IN_CART";
    /// NOT_FOUND: no such job.
    pub const JOB_NOT_FOUND: &str = "JOB_NOT_FOUND";
    /// NOT_FOUND: no such live actor.
    pub const ACTOR_NOT_FOUND: &str = "ACTOR_NOT_FOUND";
    /// NOT_FOUND of a kind with no more precise reason.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// FAILED_PRECONDITION: the cart is checked out.
    pub const CART_CHECKED_OUT: &str = "CART_CHECKED_OUT";
    /// FAILED_PRECONDITION: the cart was ended.
    pub const CART_ENDED: &str = "CART_ENDED";
    /// FAILED_PRECONDITION: the cart expired (idle past its TTL).
    pub const CART_EXPIRED: &str = "CART_EXPIRED";
    /// FAILED_PRECONDITION: checkout of an empty cart.
    pub const CART_EMPTY: &str = "CART_EMPTY";
    /// FAILED_PRECONDITION: the cart has as many lines as it may.
    pub const CART_FULL: &str = "CART_FULL";
    /// FAILED_PRECONDITION: the cart carries as many discount codes as it may.
    pub const TOO_MANY_DISCOUNTS: &str = "TOO_MANY_DISCOUNTS";
    /// FAILED_PRECONDITION: the list has as many entries as it may.
    pub const LIST_FULL: &str = "LIST_FULL";
    /// FAILED_PRECONDITION: the list has handed out every entry id.
    pub const LIST_IDS_EXHAUSTED: &str = "LIST_IDS_EXHAUSTED";
    /// FAILED_PRECONDITION: not enough stock available.
    pub const OUT_OF_STOCK: &str = "OUT_OF_STOCK";
    /// FAILED_PRECONDITION: on hand cannot go below what carts reserved.
    pub const STOCK_RESERVED: &str = "STOCK_RESERVED";
    /// FAILED_PRECONDITION: on hand would pass the per-sku limit.
    pub const STOCK_LIMIT: &str = "STOCK_LIMIT";
    /// FAILED_PRECONDITION: the change would make the stored record too large.
    pub const RECORD_TOO_LARGE: &str = "RECORD_TOO_LARGE";
    /// FAILED_PRECONDITION: the job already ended.
    pub const JOB_ENDED: &str = "JOB_ENDED";
    /// ABORTED: another writer changed the state first.
    pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
    /// RESOURCE_EXHAUSTED: the actor's mailbox is full.
    pub const MAILBOX_FULL: &str = "MAILBOX_FULL";
    /// RESOURCE_EXHAUSTED: the live-actor cap is reached and none is idle.
    pub const ACTOR_LIMIT: &str = "ACTOR_LIMIT";
    /// RESOURCE_EXHAUSTED: a watch-stream cap is reached.
    pub const WATCHER_LIMIT: &str = "WATCHER_LIMIT";
    /// RESOURCE_EXHAUSTED: a limit on jobs is reached.
    pub const JOB_LIMIT: &str = "JOB_LIMIT";
    /// DEADLINE_EXCEEDED: the deadline passed; the change was not applied.
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    /// UNAVAILABLE: store-svc cannot be reached or is overloaded.
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
    /// UNAVAILABLE: the key crashed repeatedly and is resting.
    pub const ACTOR_QUARANTINED: &str = "ACTOR_QUARANTINED";
    /// UNAVAILABLE: session-svc is draining for shutdown.
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    /// UNAVAILABLE: the watched actor stopped (idle, evicted, quarantined); watch again.
    pub const ACTOR_STOPPED: &str = "ACTOR_STOPPED";
    /// UNAVAILABLE: a watch stream reached its longest lifetime; watch again.
    pub const WATCH_EXPIRED: &str = "WATCH_EXPIRED";
    /// CANCELLED: the client's request stream broke.
    pub const CANCELLED: &str = "CANCELLED";
    /// UNAUTHENTICATED: an admin call without the right bearer token.
    pub const ADMIN_TOKEN_REQUIRED: &str = "ADMIN_TOKEN_REQUIRED";
    /// PERMISSION_DENIED: the admin API is off (no --admin-token).
    pub const ADMIN_API_DISABLED: &str = "ADMIN_API_DISABLED";
    /// INTERNAL: the actor panicked on this message (a bug).
    pub const ACTOR_CRASHED: &str = "ACTOR_CRASHED";
    /// INTERNAL: stored state could not be decoded.
    pub const STATE_CORRUPT: &str = "STATE_CORRUPT";
    /// INTERNAL: the store refused session-svc's request as invalid.
    pub const STORE_REFUSED: &str = "STORE_REFUSED";
    /// The key's shard is served by another replica (it moved, or this replica lost its
    /// lease): nothing was applied; retry, through any replica.
    pub const SHARD_MOVED: &str = "SHARD_MOVED";
    /// Another replica failed a call this one made to it, without a reason of ours.
    pub const PEER_FAILURE: &str = "PEER_FAILURE";

    /// Every reason above, to recognise one another replica sent.
    pub const ALL: &[&str] = &[
        INVALID_FIELD,
        SESSION_NOT_FOUND,
        LIST_NOT_FOUND,
        ENTRY_NOT_FOUND,
        SKU_NOT_FOUND,
        ITEM_NOT_IN_CART,
        JOB_NOT_FOUND,
        ACTOR_NOT_FOUND,
        NOT_FOUND,
        CART_CHECKED_OUT,
        CART_ENDED,
        CART_EXPIRED,
        CART_EMPTY,
        CART_FULL,
        TOO_MANY_DISCOUNTS,
        LIST_FULL,
        LIST_IDS_EXHAUSTED,
        OUT_OF_STOCK,
        STOCK_RESERVED,
        STOCK_LIMIT,
        RECORD_TOO_LARGE,
        JOB_ENDED,
        VERSION_CONFLICT,
        MAILBOX_FULL,
        ACTOR_LIMIT,
        WATCHER_LIMIT,
        JOB_LIMIT,
        DEADLINE_EXCEEDED,
        STORE_UNAVAILABLE,
        ACTOR_QUARANTINED,
        SHUTTING_DOWN,
        ACTOR_STOPPED,
        WATCH_EXPIRED,
        CANCELLED,
        ADMIN_TOKEN_REQUIRED,
        ADMIN_API_DISABLED,
        ACTOR_CRASHED,
        STATE_CORRUPT,
        STORE_REFUSED,
        SHARD_MOVED,
        PEER_FAILURE,
    ];
}

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
    /// No such session, list, entry or actor: a [`reason`] and the message.
    #[error("{1}")]
    NotFound(&'static str, String),
    /// Not allowed in the current state (e.g. adding to a checked-out cart): a [`reason`] and
    /// the message.
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
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
    /// Several replicas: this one does not hold the lease of the key's shard (any more);
    /// nothing was applied.
    #[error("{0}; nothing was applied: retry (any replica forwards to the shard's owner)")]
    ShardMoved(String),
    /// What another replica answered a call this one made to an actor it serves, relayed
    /// with its code and reason.
    #[error("{message}")]
    Relayed {
        code: Code,
        reason: &'static str,
        message: String,
    },
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
            Code::NotFound => Self::NotFound(reason::NOT_FOUND, message),
            Code::Unavailable | Code::ResourceExhausted | Code::Unknown => {
                Self::StoreUnavailable(message)
            }
            Code::InvalidArgument => Self::StoreRefused(message),
            code => Self::Corrupt(format!("store answered {code:?}: {message}")),
        }
    }
}

impl Error {
    /// The error another replica answered with `status`: its code, and its reason when it is
    /// one of ours (PEER_FAILURE otherwise, as for a replica that did not answer).
    pub fn from_peer(status: &Status) -> Self {
        let sent = status.get_error_details();
        let reason = sent
            .error_info()
            .and_then(|info| reason::ALL.iter().find(|r| **r == info.reason))
            .copied()
            .unwrap_or(reason::PEER_FAILURE);
        Self::Relayed {
            code: status.code(),
            reason,
            message: status.message().to_string(),
        }
    }

    /// The stable `google.rpc.ErrorInfo.reason` of this error (see [`reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => reason::INVALID_FIELD,
            Self::NotFound(reason, _) | Self::FailedPrecondition(reason, _) => reason,
            Self::Aborted(_) => reason::VERSION_CONFLICT,
            Self::MailboxFull { .. } => reason::MAILBOX_FULL,
            Self::ActorLimit { .. } => reason::ACTOR_LIMIT,
            Self::WatcherLimit { .. } => reason::WATCHER_LIMIT,
            Self::Busy { .. } => reason::JOB_LIMIT,
            Self::DeadlineExceeded(_) => reason::DEADLINE_EXCEEDED,
            Self::StoreUnavailable(_) => reason::STORE_UNAVAILABLE,
            Self::Quarantined { .. } => reason::ACTOR_QUARANTINED,
            Self::Cancelled(_) => reason::CANCELLED,
            Self::ShuttingDown => reason::SHUTTING_DOWN,
            Self::ActorCrashed { .. } => reason::ACTOR_CRASHED,
            Self::Corrupt(_) => reason::STATE_CORRUPT,
            Self::StoreRefused(_) => reason::STORE_REFUSED,
            Self::ShardMoved(_) => reason::SHARD_MOVED,
            Self::Relayed { reason, .. } => reason,
        }
    }

    /// The gRPC code of this error (the error contract in the README's table).
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound(..) => Code::NotFound,
            Self::FailedPrecondition(..) => Code::FailedPrecondition,
            Self::Aborted(_) => Code::Aborted,
            Self::MailboxFull { .. }
            | Self::ActorLimit { .. }
            | Self::WatcherLimit { .. }
            | Self::Busy { .. } => Code::ResourceExhausted,
            Self::Cancelled(_) => Code::Cancelled,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::StoreUnavailable(_)
            | Self::ShuttingDown
            | Self::Quarantined { .. }
            | Self::ShardMoved(_) => Code::Unavailable,
            Self::Relayed { code, .. } => *code,
            Self::ActorCrashed { .. } | Self::Corrupt(_) | Self::StoreRefused(_) => Code::Internal,
        }
    }
}

/// A status outside [`Error`]'s cases (a stream's end, the admin check) with its ErrorInfo.
pub fn status(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        bounded(message.into()),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new()),
    )
}

impl From<Error> for Status {
    /// Every status carries `google.rpc.ErrorInfo` (reason and domain); INVALID_ARGUMENT adds
    /// BadRequest naming the field, and the back-off answers add RetryInfo.
    fn from(error: Error) -> Self {
        // Every message is bounded, even one built by mistake from unbounded client input.
        let message = bounded(error.to_string());
        let mut details = ErrorDetails::new();
        let metadata: std::collections::HashMap<String, String> = match &error {
            Error::MailboxFull { kind, .. } | Error::Quarantined { kind, .. } => {
                [("kind".to_string(), kind.to_string())].into()
            }
            Error::InvalidArgument { field, .. } => {
                [("field".to_string(), bounded(field.clone()))].into()
            }
            _ => Default::default(),
        };
        details.set_error_info(error.reason(), ERROR_DOMAIN, metadata);
        match &error {
            Error::InvalidArgument { field, description } => {
                details.add_bad_request_violation(
                    bounded(field.clone()),
                    bounded(description.clone()),
                );
            }
            Error::MailboxFull { retry_after, .. }
            | Error::ActorLimit { retry_after, .. }
            | Error::WatcherLimit { retry_after, .. }
            | Error::Busy { retry_after, .. }
            | Error::Quarantined { retry_after, .. } => {
                details.set_retry_info(Some(*retry_after));
            }
            _ => {}
        }
        Status::with_error_details(error.code(), message, details)
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
            (
                Error::NotFound(reason::SESSION_NOT_FOUND, "no session".into()),
                Code::NotFound,
            ),
            (
                Error::FailedPrecondition(reason::CART_CHECKED_OUT, "checked out".into()),
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
            let status = Status::from(error.clone());
            assert_eq!(status.code(), code, "{error}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert_eq!(info.reason, error.reason());
        }
    }

    #[test]
    fn domain_errors_carry_their_precise_reason() {
        use crate::domain::{CartError, CartStatus, TodoError};
        let reason_of = |error: Error| {
            Status::from(error)
                .get_details_error_info()
                .expect("ErrorInfo")
                .reason
        };
        assert_eq!(
            reason_of(CartError::NotActive(CartStatus::CheckedOut).into()),
            "CART_CHECKED_OUT"
        );
        assert_eq!(reason_of(CartError::EmptyCart.into()), "CART_EMPTY");
        assert_eq!(
            reason_of(CartError::SkuNotInCart { sku: "mug".into() }.into()),
            "ITEM_NOT_IN_CART"
        );
        assert_eq!(
            reason_of(TodoError::EntryNotFound { id: 7 }.into()),
            "ENTRY_NOT_FOUND"
        );
        let invalid = Status::from(Error::from(CartError::QuantityTooSmall));
        assert_eq!(
            invalid.get_details_error_info().unwrap().reason,
            "INVALID_FIELD"
        );
        assert_eq!(
            invalid.get_details_bad_request().unwrap().field_violations[0].field,
            "quantity"
        );
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
        let status = Status::from(Error::NotFound(
            reason::ACTOR_NOT_FOUND,
            format!("no actor {}", "k".repeat(1 << 20)),
        ));
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
