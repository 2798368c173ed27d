//! store-svc's one error type and its single mapping onto gRPC status codes.
//!
//! Client input appears in messages only through [`echo`]: at most 128 bytes of it, escaped,
//! so that no reply's trailers grow with what a client sent.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use kit::echo::{bounded, echo};

/// Everything a store request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; `field` is its proto name.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// The offending field, as named in store.proto (`mutations[2].put.key` in a commit).
        field: Cow<'static, str>,
        /// What is wrong and what would be accepted; client input in it is [`echo`]ed.
        description: String,
    },
    /// Get of a key that does not exist.
    #[error("key {} not found in namespace {}", echo(.key), echo(.namespace))]
    NotFound {
        /// The namespace asked for.
        namespace: String,
        /// The key asked for.
        key: String,
    },
    /// The compare-and-swap condition failed: someone else wrote first.
    #[error(
        "version conflict on {}/{}: expected version {expected}, current version {current} (0 means the key does not exist); read it again and retry",
        echo(.namespace),
        echo(.key)
    )]
    VersionConflict {
        /// Which write of its commit failed (0 for a lone Put or Delete).
        index: usize,
        /// The namespace written.
        namespace: String,
        /// The key written.
        key: String,
        /// The version the writer expected.
        expected: u64,
        /// The version actually stored.
        current: u64,
    },
    /// The write queue is full: the disk is the bottleneck right now.
    #[error(
        "write queue is full ({capacity} writes waiting for the disk); retry after {retry_after:?}"
    )]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
        /// How long a client should back off.
        retry_after: Duration,
    },
    /// The caller's deadline passed before the work ran; nothing was changed.
    #[error("deadline exceeded before the request ran; nothing was changed")]
    DeadlineExceeded,
    /// The server is draining for shutdown.
    #[error("store-svc is shutting down; retry on another replica or after restart")]
    ShuttingDown,
    /// sled failed.
    #[error("storage failure: {0}")]
    Storage(#[from] sled::Error),
    /// The SQL database (`--backend postgres`) cannot be reached, or the connection broke.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// The SQL database refused a statement for a reason other than a conflict or a timeout.
    #[error("database failure: {0}")]
    Database(String),
}

/// `google.rpc.ErrorInfo.reason` of an ABORTED version conflict.
pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
/// `google.rpc.ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: &str = "store.v1";

/// How long to tell clients to wait when the write queue is full.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_millis(50);

impl From<Error> for Status {
    /// Every status carries `google.rpc.ErrorInfo` (reason and [`ERROR_DOMAIN`]); a malformed
    /// field adds BadRequest, a version conflict names the write and the current version in the
    /// ErrorInfo's metadata, and a full queue adds RetryInfo.
    fn from(error: Error) -> Self {
        let code = error.code();
        let message = bounded(error.to_string());
        let mut details = ErrorDetails::new();
        let metadata: HashMap<String, String> = match &error {
            Error::VersionConflict { index, current, .. } => HashMap::from([
                ("index".to_string(), index.to_string()),
                ("current_version".to_string(), current.to_string()),
            ]),
            Error::InvalidArgument { field, .. } => {
                HashMap::from([("field".to_string(), bounded(field.to_string()))])
            }
            _ => HashMap::new(),
        };
        details.set_error_info(error.reason(), ERROR_DOMAIN, metadata);
        match &error {
            Error::InvalidArgument { field, description } => {
                details.add_bad_request_violation(
                    bounded(field.to_string()),
                    bounded(description.clone()),
                );
            }
            Error::QueueFull { retry_after, .. } => {
                details.set_retry_info(Some(*retry_after));
            }
            _ => {}
        }
        Status::with_error_details(code, message, details)
    }
}

impl Error {
    /// The stable `google.rpc.ErrorInfo.reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "INVALID_FIELD",
            Self::NotFound { .. } => "KEY_NOT_FOUND",
            Self::VersionConflict { .. } => VERSION_CONFLICT,
            Self::QueueFull { .. } => "QUEUE_FULL",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Storage(sled::Error::Io(_)) => "STORAGE_IO",
            Self::Storage(sled::Error::Corruption { .. }) => "STORAGE_CORRUPT",
            Self::Storage(_) => "STORAGE_FAILURE",
            Self::DatabaseUnavailable(_) => "DATABASE_UNAVAILABLE",
            Self::Database(_) => "DATABASE_FAILURE",
        }
    }

    /// The gRPC code of this error: the only mapping, used both for a call's [`Status`] and for
    /// a BatchWrite result's code.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::VersionConflict { .. } => Code::Aborted,
            Self::QueueFull { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::ShuttingDown
            | Self::Storage(sled::Error::Io(_))
            | Self::DatabaseUnavailable(_) => Code::Unavailable,
            Self::Storage(sled::Error::Corruption { .. }) => Code::DataLoss,
            Self::Storage(_) | Self::Database(_) => Code::Internal,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<Cow<'static, str>>, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_contract_code() {
        let cases = [
            (Error::invalid("key", "empty"), Code::InvalidArgument),
            (
                Error::NotFound {
                    namespace: "n".into(),
                    key: "k".into(),
                },
                Code::NotFound,
            ),
            (
                Error::VersionConflict {
                    index: 0,
                    namespace: "n".into(),
                    key: "k".into(),
                    expected: 1,
                    current: 2,
                },
                Code::Aborted,
            ),
            (
                Error::QueueFull {
                    capacity: 8,
                    retry_after: QUEUE_FULL_RETRY,
                },
                Code::ResourceExhausted,
            ),
            (Error::DeadlineExceeded, Code::DeadlineExceeded),
            (Error::ShuttingDown, Code::Unavailable),
            (
                Error::Storage(sled::Error::Io(std::io::Error::other("disk"))),
                Code::Unavailable,
            ),
            (
                Error::DatabaseUnavailable("connection refused".into()),
                Code::Unavailable,
            ),
            (Error::Database("syntax error".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn invalid_argument_names_the_field_in_bad_request_details() {
        let status = Status::from(Error::invalid("namespace", "must match [a-z0-9_-]{1,64}"));
        let details = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert_eq!(details.field_violations[0].field, "namespace");
        assert!(status.message().contains("namespace"));
    }

    #[test]
    fn messages_quote_at_most_128_bytes_of_a_key_or_namespace() {
        let key = "k".repeat(1024);
        let namespace = "n".repeat(64);
        for error in [
            Error::NotFound {
                namespace: namespace.clone(),
                key: key.clone(),
            },
            Error::VersionConflict {
                index: 0,
                namespace,
                key,
                expected: 1,
                current: 2,
            },
        ] {
            let message = Status::from(error).message().to_owned();
            assert!(!message.contains(&"k".repeat(129)), "{message}");
            assert!(message.contains("…(1024 bytes)"), "{message}");
        }
    }

    #[test]
    fn queue_full_carries_a_retry_hint_and_conflict_names_the_current_version() {
        let status = Status::from(Error::QueueFull {
            capacity: 8,
            retry_after: QUEUE_FULL_RETRY,
        });
        let retry = status.get_details_retry_info().expect("RetryInfo details");
        assert_eq!(retry.retry_delay, Some(QUEUE_FULL_RETRY));
        let status = Status::from(Error::VersionConflict {
            index: 2,
            namespace: "n".into(),
            key: "k".into(),
            expected: 3,
            current: 7,
        });
        assert!(status.message().contains("current version 7"));
        let info = status.get_details_error_info().expect("ErrorInfo details");
        assert_eq!(info.reason, VERSION_CONFLICT);
        assert_eq!(info.metadata["index"], "2");
        assert_eq!(info.metadata["current_version"], "7");
    }
}
