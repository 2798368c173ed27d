//! Reading gRPC statuses the way the error contract (DESIGN.md) promises them.

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
