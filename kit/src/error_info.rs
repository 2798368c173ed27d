//! Every non-OK status leaves the server with a `google.rpc.ErrorInfo` among its details.
//!
//! The services' own errors attach a precise reason (`CART_CHECKED_OUT`, `MAILBOX_FULL`). A
//! status made anywhere else (tonic's UNIMPLEMENTED, a decode error, an interceptor, the
//! deadline layer) would leave without one, so [`StatusLayer`] checks every response's
//! `grpc-status` (in the headers of a trailers-only response, or in the trailers) and adds an
//! ErrorInfo whose reason is the code's name when none is there. Details already present
//! (BadRequest, RetryInfo) are kept. Clients can therefore switch on `ErrorInfo.reason` for
//! every failure without a special case for "no details".

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use prost::Message;
use tonic::{Code, body::Body, codegen::http};
use tonic_types::pb;
use tower::{Layer, Service};

use crate::metrics::{RpcMetrics, RpcRecord};

/// The type URL of `google.rpc.ErrorInfo` inside a `google.rpc.Status`'s details.
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

const STATUS_HEADER: &str = "grpc-status";
const MESSAGE_HEADER: &str = "grpc-message";
const DETAILS_HEADER: &str = "grpc-status-details-bin";

/// gRPC's `-bin` metadata: standard base64, written unpadded, read padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The stable reason of a status that carries no more precise one: the code's name as the
/// gRPC specification spells it.
pub fn code_reason(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Adds an ErrorInfo (`reason` = the code's name, `domain`) to the status in `headers` when
/// it is not OK and carries none. Leaves alone headers without a status, OK statuses, and
/// details it cannot decode (they are passed on as they are rather than replaced).
pub fn ensure_error_info(headers: &mut HeaderMap, domain: &str) {
    let Some(code) = status_code(headers) else {
        return;
    };
    if code == Code::Ok {
        return;
    }
    let code = code as i32;
    let mut status = match headers.get(DETAILS_HEADER) {
        Some(value) => match BASE64
            .decode(value.as_bytes())
            .ok()
            .and_then(|bytes| pb::Status::decode(bytes.as_slice()).ok())
        {
            Some(status) => status,
            None => return,
        },
        None => pb::Status {
            code,
            message: headers
                .get(MESSAGE_HEADER)
                .map(|v| percent_decode(v.as_bytes()))
                .unwrap_or_default(),
            details: Vec::new(),
        },
    };
    if status.details.iter().any(|d| d.type_url == ERROR_INFO_TYPE) {
        return;
    }
    let info = pb::ErrorInfo {
        reason: code_reason(Code::from_i32(code)).to_string(),
        domain: domain.to_string(),
        metadata: Default::default(),
    };
    status.details.push(prost_types::Any {
        type_url: ERROR_INFO_TYPE.to_string(),
        value: info.encode_to_vec(),
    });
    if let Ok(value) = HeaderValue::from_str(&BASE64.encode(status.encode_to_vec())) {
        headers.insert(DETAILS_HEADER, value);
    }
}

/// `grpc-message` is percent-encoded UTF-8; a malformed escape is kept as it is.
fn percent_decode(value: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The code in a `grpc-status` header, if there is one.
pub fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers
        .get(STATUS_HEADER)?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

/// Tower layer that watches every response's status: it applies [`ensure_error_info`] and
/// reports the RPC to [`RpcMetrics`]. One layer, and at most one wrapped body per response,
/// for both jobs: this runs on every request.
#[derive(Clone)]
pub struct StatusLayer {
    domain: &'static str,
    metrics: RpcMetrics,
}

impl StatusLayer {
    /// `domain` is the ErrorInfo domain of this server's errors (`session.v1`, `store.v1`);
    /// `metrics` counts and times its RPCs.
    pub fn new(domain: &'static str, metrics: RpcMetrics) -> Self {
        Self { domain, metrics }
    }
}

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`StatusLayer`] wraps around the router.
#[derive(Clone)]
pub struct StatusService<S> {
    inner: S,
    layer: StatusLayer,
}

impl<S, B> Service<http::Request<B>> for StatusService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = StatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let record = self.layer.metrics.start(request.uri().path());
        StatusFuture {
            inner: self.inner.call(request),
            pending: Pending(Some(record)),
            domain: self.layer.domain,
        }
    }
}

/// An RPC not yet counted. Dropped before its status (the client went away, the connection
/// closed), it counts as CANCELLED.
struct Pending(Option<RpcRecord>);

impl Pending {
    fn finish(&mut self, code: Code) {
        if let Some(record) = self.0.take() {
            record.finish(code);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// The response of [`StatusService`].
    pub struct StatusFuture<F> {
        #[pin]
        inner: F,
        pending: Pending,
        domain: &'static str,
    }
}

impl<F, E> Future for StatusFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                this.pending.finish(Code::Internal);
                return Poll::Ready(Err(error));
            }
        };
        let domain = *this.domain;
        if let Some(code) = status_code(response.headers()) {
            // Trailers-only: the status is in the headers and the body is empty.
            ensure_error_info(response.headers_mut(), domain);
            this.pending.finish(code);
            return Poll::Ready(Ok(response));
        }
        let pending = Pending(this.pending.0.take());
        Poll::Ready(Ok(response.map(|inner| {
            Body::new(StatusBody {
                inner,
                pending,
                domain,
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers get [`ensure_error_info`] and report the RPC.
    struct StatusBody {
        #[pin]
        inner: Body,
        pending: Pending,
        domain: &'static str,
    }
}

impl http_body::Body for StatusBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let mut frame = ready!(this.inner.poll_frame(cx));
        match frame.as_mut() {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_mut() {
                    ensure_error_info(trailers, this.domain);
                    this.pending
                        .finish(status_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(status)) => this.pending.finish(status.code()),
            None => this.pending.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    fn through_layer(status: Status) -> Status {
        let mut headers = status.into_http::<()>().into_parts().0.headers;
        ensure_error_info(&mut headers, "test.v1");
        Status::from_header_map(&headers).expect("a status")
    }

    #[test]
    fn a_bare_status_gets_the_codes_name_and_keeps_its_message() {
        let status = through_layer(Status::unimplemented("no such méthode: 100% sure"));
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(status.message(), "no such méthode: 100% sure");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "UNIMPLEMENTED");
        assert_eq!(info.domain, "test.v1");
    }

    #[test]
    fn other_details_are_kept_beside_the_new_error_info() {
        let status = through_layer(Status::with_error_details(
            Code::ResourceExhausted,
            "full",
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(50))),
        ));
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(std::time::Duration::from_millis(50))
        );
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "RESOURCE_EXHAUSTED"
        );
    }

    #[test]
    fn a_precise_error_info_is_left_as_it_is() {
        let status = through_layer(Status::with_error_details(
            Code::FailedPrecondition,
            "checked out",
            ErrorDetails::with_error_info("CART_CHECKED_OUT", "session.v1", []),
        ));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("CART_CHECKED_OUT", "session.v1")
        );
        assert_eq!(status.get_error_details_vec().len(), 1);
    }

    #[test]
    fn ok_and_statusless_headers_are_untouched() {
        let mut headers = HeaderMap::new();
        ensure_error_info(&mut headers, "test.v1");
        assert!(headers.is_empty());
        headers.insert(STATUS_HEADER, HeaderValue::from_static("0"));
        ensure_error_info(&mut headers, "test.v1");
        assert!(!headers.contains_key(DETAILS_HEADER));
    }

    #[test]
    fn undecodable_details_are_passed_on_unchanged() {
        let mut headers = HeaderMap::new();
        headers.insert(STATUS_HEADER, HeaderValue::from_static("13"));
        headers.insert(DETAILS_HEADER, HeaderValue::from_static("!!not base64"));
        ensure_error_info(&mut headers, "test.v1");
        assert_eq!(headers[DETAILS_HEADER], "!!not base64");
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode(b"a%20b%zz%4"), "a b%zz%4");
    }
}
