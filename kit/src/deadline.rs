//! End-to-end deadlines.
//!
//! A client's `grpc-timeout` header becomes a [`Deadline`] stamped on the request the moment it
//! arrives, before the body is read, so time spent receiving counts against it. Handlers use it
//! to refuse work whose deadline passed while it waited in a queue (in OTP, a timed-out call
//! that still runs later is the bug we fix) and to pass the remaining budget downstream.
//!
//! A caller may also send [`ABSOLUTE_HEADER`], its deadline as Unix milliseconds. session-svc
//! does, because `grpc-timeout` is relative: a request delayed in the network arrives with its
//! whole budget still in the header, and would run after its caller gave up. The earlier of
//! the two wins.
//!
//! tonic's transport also races every request against the header's timeout and answers
//! CANCELLED when that timer wins. Our deadline is set [`EARLY`] before tonic's, and
//! [`DeadlineLayer`] answers DEADLINE_EXCEEDED itself when it passes before a handler has taken
//! the request, say while the body is still arriving on a busy server. A handler takes it with
//! [`Deadline::accept`]; from then on answering by the deadline is the handler's job, because
//! only the handler knows whether work already started (a write the store's writer picked up
//! must report its real outcome, never a DEADLINE_EXCEEDED that claims it did not happen).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tower::{Layer, Service};

/// How much earlier than tonic's own timer our deadline fires (one tokio timer tick).
pub const EARLY: Duration = Duration::from_millis(1);

/// Metadata key of the caller's absolute deadline, in milliseconds since the Unix epoch.
pub const ABSOLUTE_HEADER: &str = "x-deadline-unix-ms";

/// The instant by which a request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// The deadline stamped on `request` by [`DeadlineLayer`], or `default` from now when the
    /// request did not pass through the layer (in-process callers, unit tests).
    ///
    /// Calling this takes the request over from the layer: the caller promises to answer by
    /// the deadline itself (or to report the real outcome of work it could not stop).
    pub fn accept<T>(request: &tonic::Request<T>, default: Duration) -> Self {
        if let Some(accepted) = request.extensions().get::<Accepted>() {
            accepted.0.store(true, Ordering::Release);
        }
        request
            .extensions()
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Self::after(default))
    }

    /// [`Deadline::accept`] for a request still in its HTTP form (a layer that answers it
    /// itself, such as forwarding); `None` when no deadline layer stamped it.
    pub fn accept_http<B>(request: &http::Request<B>) -> Option<Self> {
        if let Some(accepted) = request.extensions().get::<Accepted>() {
            accepted.0.store(true, Ordering::Release);
        }
        request.extensions().get::<Deadline>().copied()
    }

    /// The deadline as milliseconds since the Unix epoch, for [`ABSOLUTE_HEADER`].
    pub fn unix_ms(self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        u64::try_from((now + self.remaining()).as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// True once the deadline has passed.
    pub fn expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// What is left of the budget (zero once expired).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H M S m u n`), as the gRPC
/// over HTTP/2 spec defines it. Anything else is `None` (the header is then ignored, as tonic does).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Time left until a Unix-milliseconds deadline (zero if it passed); `None` if malformed.
fn remaining_until_unix_ms(value: &str) -> Option<Duration> {
    let deadline = Duration::from_millis(value.parse().ok()?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(deadline.saturating_sub(now))
}

/// Set by [`Deadline::accept`] on the request it stamps: the handler has taken the request.
#[derive(Debug, Clone, Default)]
struct Accepted(Arc<AtomicBool>);

/// Tower layer that stamps every request with its [`Deadline`]: the client's `grpc-timeout`
/// (minus [`EARLY`]) when present, else the server's default. Until a handler
/// [accepts](Deadline::accept) the request, the layer enforces the deadline itself.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    default: Duration,
}

impl DeadlineLayer {
    /// `default` applies to requests that carry no `grpc-timeout`.
    pub fn new(default: Duration) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            default: self.default,
        }
    }
}

/// The service [`DeadlineLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    default: Duration,
}

impl<S, B, R> Service<http::Request<B>> for DeadlineService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        let relative = header("grpc-timeout").and_then(parse_grpc_timeout);
        let absolute = header(ABSOLUTE_HEADER).and_then(remaining_until_unix_ms);
        let budget = match (relative, absolute) {
            (None, None) => self.default,
            (Some(relative), None) => relative.saturating_sub(EARLY),
            (None, Some(absolute)) => absolute,
            (Some(relative), Some(absolute)) => relative.saturating_sub(EARLY).min(absolute),
        };
        let deadline = Deadline::after(budget);
        let accepted = Accepted::default();
        request.extensions_mut().insert(deadline);
        request.extensions_mut().insert(accepted.clone());
        DeadlineFuture {
            inner: self.inner.call(request),
            cutoff: tokio::time::sleep_until(deadline.instant()),
            accepted,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`DeadlineService`]: the router's, or DEADLINE_EXCEEDED if the deadline
    /// passes before a handler [accepted](Deadline::accept) the request.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        cutoff: Sleep,
        accepted: Accepted,
    }
}

impl<F, R, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    R: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The handler first: if it has an answer, that answer stands even at the deadline.
        if let Poll::Ready(response) = this.inner.poll(cx) {
            return Poll::Ready(response);
        }
        if this.accepted.0.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        ready!(this.cutoff.poll(cx));
        Poll::Ready(Ok(tonic::Status::deadline_exceeded(
            "the call's deadline passed before its request reached a handler (it was still \
             arriving, or the server was too busy to start it); nothing was done; retry with a \
             longer deadline",
        )
        .into_http()))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// The answer to a call with `grpc-timeout: 100m` whose handler takes `work` to answer
    /// "done", accepting the request first if `accepts`.
    async fn answer(work: Duration, accepts: bool) -> http::Response<String> {
        let mut service = DeadlineLayer::new(Duration::from_secs(5)).layer(tower::service_fn(
            move |request: http::Request<()>| async move {
                if accepts {
                    Deadline::accept(&tonic::Request::from_http(request), Duration::ZERO);
                }
                tokio::time::sleep(work).await;
                Ok::<_, Infallible>(http::Response::new("done".to_owned()))
            },
        ));
        let request = http::Request::builder()
            .header("grpc-timeout", "100m")
            .body(())
            .unwrap();
        service.call(request).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_no_handler_took_gets_deadline_exceeded_at_the_deadline() {
        let started = Instant::now();
        let response = answer(Duration::from_secs(60), false).await;
        assert_eq!(started.elapsed(), Duration::from_millis(99));
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("nothing was done"), "{status:?}");
        assert_eq!(response.into_body(), "");
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_accepted_answers_even_after_the_deadline() {
        let response = answer(Duration::from_secs(1), true).await;
        assert!(tonic::Status::from_header_map(response.headers()).is_none());
        assert_eq!(response.into_body(), "done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_finishes_in_time_is_never_cut_off() {
        let response = answer(Duration::from_millis(50), false).await;
        assert_eq!(response.into_body(), "done");
    }

    #[test]
    fn parses_every_grpc_timeout_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("1000u"), Some(Duration::from_millis(1)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_grpc_timeouts() {
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "5 S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_expires_after_its_budget() {
        let deadline = Deadline::after(Duration::from_millis(100));
        assert!(!deadline.expired());
        assert_eq!(deadline.remaining(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(deadline.expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn layer_prefers_client_timeout_and_falls_back_to_default() {
        let seen = |header: Option<&str>| {
            let mut svc = DeadlineLayer::new(Duration::from_secs(5)).layer(tower::service_fn(
                |req: http::Request<()>| async move {
                    let deadline = req.extensions().get::<Deadline>().copied();
                    Ok::<_, Infallible>(http::Response::new(deadline))
                },
            ));
            let mut builder = http::Request::builder();
            if let Some(value) = header {
                builder = builder.header("grpc-timeout", value);
            }
            let request = builder.body(()).unwrap();
            async move {
                svc.call(request)
                    .await
                    .unwrap()
                    .into_body()
                    .unwrap()
                    .remaining()
            }
        };
        assert_eq!(seen(Some("100m")).await, Duration::from_millis(99));
        assert_eq!(seen(None).await, Duration::from_secs(5));
        assert_eq!(seen(Some("garbage")).await, Duration::from_secs(5));
    }

    #[test]
    fn absolute_deadlines_count_down_from_the_wall_clock() {
        let past = remaining_until_unix_ms("1000").unwrap();
        assert_eq!(past, Duration::ZERO);
        let soon = Deadline::after(Duration::from_secs(60)).unix_ms();
        let left = remaining_until_unix_ms(&soon.to_string()).unwrap();
        assert!(
            left > Duration::from_secs(58) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        assert_eq!(remaining_until_unix_ms("soon"), None);
    }
}
