//! Clients that stop halfway: a request body whose next bytes do not come within
//! `server.body-idle-timeout` fails (the handler sees a broken body, so an upload stores nothing),
//! and a connection whose client stops taking response bytes for `server.write-stall-timeout` is
//! closed (its connection slot freed). Neither counts time the proxy itself spends: the body
//! timer runs only while a handler waits for the body, the write timer only while a write waits
//! for the client.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A request body that fails when its next frame does not arrive within `idle`.
pub struct IdleBody {
    inner: Body,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, idle: Duration) -> Self {
        Self { inner, idle, timer: None }
    }
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no bytes for {0:?} (server.body-idle-timeout)")]
pub struct BodyStalled(pub Duration);

/// The error for a request body that could not be read (`err`, with its causes): TIMEOUT
/// (retryable) when it stopped arriving, since the same request sent again may well get
/// through; otherwise `otherwise(text)`.
pub fn body_error(
    err: &(dyn std::error::Error + 'static),
    otherwise: impl FnOnce(String) -> crate::ExoError,
) -> crate::ExoError {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(stalled) = current.downcast_ref::<BodyStalled>() {
            return crate::ExoError::new(exo_proto::common::v1::ErrorReason::Timeout, stalled.to_string())
                .retryable();
        }
        cause = current.source();
    }
    otherwise(crate::with_causes(err))
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::info!(?idle, "request body stalled: cut");
                        Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Times a write that waits for the client; `Err(TimedOut)` once it has waited `limit`.
#[derive(Debug)]
pub struct WriteStall {
    limit: Duration,
    since: Option<Pin<Box<Sleep>>>,
}

impl WriteStall {
    /// A stall limit of `limit`.
    pub fn new(limit: Duration) -> Self {
        Self { limit, since: None }
    }

    /// Feeds the outcome of a write poll through the timer.
    pub fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::info!(?limit, "client stopped reading: connection closed");
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "the client took no response bytes for {limit:?} (server.write-stall-timeout)"
                            ),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_that_stops_fails_after_the_idle_time_and_one_that_flows_does_not() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = IdleBody::new(Body::from_stream(rx), Duration::from_millis(300));
        let mut body = std::pin::pin!(body);
        tx.try_send(Ok(Bytes::from_static(b"half"))).unwrap();
        let first = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "half");
        let started = Instant::now();
        let second = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let err = second.unwrap().unwrap_err();
        assert!(err.to_string().contains("stalled"), "{err}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    }
}
