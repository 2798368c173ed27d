//! What every gRPC service of session-svc shares at the edge: request ids and watch streams.

pub mod watch;

use crate::error::Error;

/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// An optional idempotency key: empty means none; otherwise 1..=128 bytes, no control chars.
pub fn request_id(wire: String) -> Result<Option<String>, Error> {
    if wire.is_empty() {
        return Ok(None);
    }
    if wire.len() > MAX_REQUEST_ID_BYTES {
        return Err(Error::invalid(
            "request_id",
            format!(
                "is {} bytes; at most {MAX_REQUEST_ID_BYTES} are allowed",
                wire.len()
            ),
        ));
    }
    if wire.chars().any(char::is_control) {
        return Err(Error::invalid(
            "request_id",
            "must not contain control characters",
        ));
    }
    Ok(Some(wire))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_optional_bounded_and_printable() {
        assert_eq!(request_id(String::new()).unwrap(), None);
        assert_eq!(request_id("r-1".into()).unwrap(), Some("r-1".into()));
        assert!(request_id("r".repeat(129)).is_err());
        assert!(request_id("a\nb".into()).is_err());
    }
}
