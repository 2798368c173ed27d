//! Catching a panic in an actor's message handling, so one bad message crashes one actor,
//! never the task's neighbours or the process ("let it crash", as OTP supervisors do, with a smaller blast
//! radius than OTP's).

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

/// A future that resolves to `Err(payload)` instead of unwinding when its inner future panics.
pub struct CatchUnwind<F> {
    /// Boxed so the actor's own future stays small however large the handling future is.
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    /// Wraps `future`.
    pub fn new(future: F) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        // The actor discards all state it held across the panic (it reloads from the store),
        // so observing broken invariants after an unwind is impossible.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The panic message, for the log.
pub fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_becomes_an_error_with_its_message() {
        let caught = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("boom");
        })
        .await;
        assert_eq!(message(caught.unwrap_err().as_ref()), "boom");
        assert_eq!(CatchUnwind::new(async { 7 }).await.unwrap(), 7);
    }
}
