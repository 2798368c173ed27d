//! Reading gRPC statuses the way the error contract (README) promises them.

use std::fmt::Debug;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The fields a status's `google.rpc.BadRequest` details name; empty without such details.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|details| {
            details
                .field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `result` is INVALID_ARGUMENT whose BadRequest details name `field`.
/// `case` says which input this was, for the failure message.
pub fn assert_invalid_argument_naming<T: Debug>(
    result: Result<T, Status>,
    field: &str,
    case: &str,
) {
    let status = match result {
        Ok(value) => {
            panic!("{case}: accepted ({value:?}), expected INVALID_ARGUMENT naming `{field}`")
        }
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{case}: expected INVALID_ARGUMENT naming `{field}`, got {status:?}"
    );
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|named| named == field),
        "{case}: INVALID_ARGUMENT should carry google.rpc.BadRequest naming `{field}`; \
         it names {fields:?} (message: {:?})",
        status.message()
    );
}

/// `google.rpc.ErrorInfo.reason` of an ABORTED version conflict.
pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";

/// What an ABORTED version conflict names in its `google.rpc.ErrorInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionConflict {
    /// Metadata `index`: which mutation of the commit failed (0 for a lone Put or Delete).
    pub index: usize,
    /// Metadata `current_version`: the key's version now (0 when absent).
    pub current_version: u64,
}

/// The version conflict `status` names: its ErrorInfo with reason [`VERSION_CONFLICT`] and
/// numeric `index` and `current_version` metadata. `None` when any of that is missing.
pub fn version_conflict(status: &Status) -> Option<VersionConflict> {
    let info = status.get_details_error_info()?;
    if info.reason != VERSION_CONFLICT {
        return None;
    }
    Some(VersionConflict {
        index: info.metadata.get("index")?.parse().ok()?,
        current_version: info.metadata.get("current_version")?.parse().ok()?,
    })
}

/// Asserts that `result` is ABORTED with a version conflict naming mutation `index` and
/// `current_version`.
pub fn assert_version_conflict<T: Debug>(
    result: Result<T, Status>,
    index: usize,
    current_version: u64,
    case: &str,
) {
    let status = expect_code(result, Code::Aborted, case);
    let expected = VersionConflict {
        index,
        current_version,
    };
    assert_eq!(
        version_conflict(&status),
        Some(expected),
        "{case}: ABORTED should carry ErrorInfo {VERSION_CONFLICT} with index {index} and \
         current_version {current_version}; details: {:?}, message: {:?}",
        status.get_details_error_info(),
        status.message()
    );
}

/// Asserts that `result` failed with `code`, and returns the status for further checks.
pub fn expect_code<T: Debug>(result: Result<T, Status>, code: Code, case: &str) -> Status {
    match result {
        Ok(value) => panic!("{case}: succeeded with {value:?}, expected {code:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{case}: got {status:?}");
            status
        }
    }
}

/// Whether `status` is tonic's own client-side deadline (tonic answers CANCELLED "Timeout
/// expired" when its timer beats the server's DEADLINE_EXCEEDED).
pub fn is_client_side_timeout(status: &Status) -> bool {
    // tonic wraps its marker in a transport error, so walk the whole chain.
    let mut cause = std::error::Error::source(status);
    for _ in 0..16 {
        match cause {
            Some(error) if error.is::<tonic::TimeoutExpired>() => return true,
            Some(error) => cause = error.source(),
            None => return false,
        }
    }
    false
}

/// Every whole number written in `text`, in order: `"current version is 7"` → `[7]`.
pub fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse().ok())
        .collect()
}

/// Codes that mean "your request was wrong", never "the server went away": seeing one while a
/// server is being killed is still a bug.
pub fn is_semantic_error(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

#[cfg(test)]
mod tests {
    use super::numbers_in;

    #[test]
    fn numbers_in_finds_whole_numbers_only() {
        assert_eq!(
            numbers_in("expected 3, current version is 17."),
            vec![3, 17]
        );
        assert_eq!(numbers_in("no digits"), Vec::<u64>::new());
    }
}
