//! A request body that fails once its deadline has passed.
//!
//! The server wraps every request body in a [`DeadlineBody`] before dispatch (the `/iep04/`
//! routes included, whose reader is the exchange's own), so a client that sends its headers and
//! then trickles the body cannot hold a connection slot longer than `body_timeout_seconds`:
//! the next read of the body after the deadline fails with [`BodyError::Deadline`], the shared
//! [`Expired`] flag is set, and the server answers 408 and closes the connection.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why reading a wrapped body failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The whole body did not arrive within the deadline (the number of seconds is given).
    #[error("the request body was not received within {0} seconds")]
    Deadline(u64),
    /// The connection failed while reading the body.
    #[error("reading the request body: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
}

/// Set once a body's deadline has passed while it was being read; shared with the server.
#[derive(Debug, Clone, Default)]
pub struct Expired(Arc<AtomicBool>);

impl Expired {
    /// True once the deadline fired.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A body that fails after `timeout` from its creation.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    expired: Expired,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`; the deadline runs from now. Returns the body and its flag.
    pub fn new(inner: B, timeout: Duration) -> (Self, Expired) {
        let expired = Expired::default();
        (
            Self {
                inner,
                sleep: Box::pin(tokio::time::sleep(timeout)),
                timeout,
                expired: expired.clone(),
            },
            expired,
        )
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.expired.get() {
            return Poll::Ready(Some(Err(BodyError::Deadline(this.timeout.as_secs()))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(|e| BodyError::Read(Box::new(e)))));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.set();
            return Poll::Ready(Some(Err(BodyError::Deadline(this.timeout.as_secs()))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use http_body_util::BodyExt;

    /// One byte, then nothing more: the body never ends.
    struct Trickle(bool);

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.0 {
                return Poll::Pending;
            }
            self.0 = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test]
    async fn a_trickling_body_fails_at_its_deadline() {
        let (body, expired) = DeadlineBody::new(Trickle(false), Duration::from_millis(50));
        let r = body.collect().await;
        assert!(matches!(r, Err(BodyError::Deadline(_))));
        assert!(expired.get());
    }

    #[tokio::test]
    async fn a_complete_body_is_untouched() {
        let (body, expired) = DeadlineBody::new(
            http_body_util::Full::new(Bytes::from_static(b"abc")),
            Duration::from_secs(5),
        );
        let got = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok(), Some(Bytes::from_static(b"abc")));
        assert!(!expired.get());
    }
}
