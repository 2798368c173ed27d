//! What every gRPC service of session-svc shares at the edge: the one path from a request to
//! its actor and back ([`answer`]), request ids, and watch streams.

pub mod watch;

use std::time::Duration;

use kit::deadline::Deadline;
use tonic::{Response, Status};

use crate::{
    error::Error,
    runtime::{Entity, JOB_REQUEST_PREFIX, Kind, Request, RequestId, validate_key},
};

/// A reply an actor gives that a gRPC method returns as its response.
pub trait Respond {
    /// The response message.
    type Message;
    /// The response.
    fn respond(self) -> Response<Self::Message>;
}

/// Every service method's path: checks `key` (named by the kind's key field), sends `request`
/// to its actor under the call's deadline (`default` when the call did not pass through the
/// deadline layer), and answers with the actor's reply. The reply's type is the request's, so
/// a method can only ever answer with what its request produces.
pub async fn answer<E, R, T>(
    kind: &Kind<E>,
    default: Duration,
    call: &tonic::Request<T>,
    key: &str,
    request: R,
) -> Result<Response<<R::Reply as Respond>::Message>, Status>
where
    E: Entity,
    R: Request<E>,
    R::Reply: Respond,
{
    validate_key(E::KEY_FIELD, key)?;
    let deadline = Deadline::accept(call, default);
    Ok(kind.call(key, request, deadline).await?.respond())
}

/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The request id of `request` (`wire`, its `request_id` field), with the fingerprint of its
/// other fields: `without_id` is the request with `request_id` cleared. Empty means none;
/// otherwise 1..=128 bytes, no control characters.
pub fn request_id<M: prost::Message>(
    wire: &str,
    without_id: impl FnOnce() -> M,
) -> Result<Option<RequestId>, Error> {
    Ok(valid_request_id(wire.to_string())?.map(|id| RequestId {
        id,
        fingerprint: fingerprint(&without_id().encode_to_vec()),
    }))
}

/// FNV-1a, 64 bits: stable across versions and languages, which a stored fingerprint needs
/// (std's hashers promise neither).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An optional idempotency key: empty means none; otherwise 1..=128 bytes, no control chars.
fn valid_request_id(wire: String) -> Result<Option<String>, Error> {
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
    if wire.starts_with(JOB_REQUEST_PREFIX) {
        return Err(Error::invalid(
            "request_id",
            format!("must not start with {JOB_REQUEST_PREFIX:?}: those are the ids of import jobs"),
        ));
    }
    Ok(Some(wire))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_optional_bounded_and_printable() {
        assert_eq!(valid_request_id(String::new()).unwrap(), None);
        assert_eq!(valid_request_id("r-1".into()).unwrap(), Some("r-1".into()));
        assert!(valid_request_id("r".repeat(129)).is_err());
        assert!(valid_request_id("a\nb".into()).is_err());
        assert!(
            valid_request_id("job/0193-1/7".into()).is_err(),
            "reserved for jobs"
        );
    }

    #[test]
    fn fingerprints_are_fnv1a_and_tell_requests_apart() {
        // The reference values of FNV-1a 64.
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        let add = |quantity| proto::session::v1::AddItemRequest {
            key: "k".into(),
            sku: "A1".into(),
            quantity,
            ..Default::default()
        };
        let one = request_id("r", || add(1)).unwrap().unwrap();
        assert_eq!(one, request_id("r", || add(1)).unwrap().unwrap());
        assert_ne!(
            one.fingerprint,
            request_id("r", || add(2)).unwrap().unwrap().fingerprint
        );
    }
}
