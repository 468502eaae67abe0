//! HTTP/1.1 requests whose body the proxy answered without reading (an upload refused up front: a
//! missing bucket, a failed condition, an unknown route). The rest of a small body is read and
//! dropped, so the connection stays usable; a larger one is left, and the answer says
//! `Connection: close`, so the client knows not to send its next request on it (instead of
//! finding the connection closed under it). HTTP/2 streams end on their own, and a client that
//! sent `Expect: 100-continue` has sent no body, so both are left alone.
//! [`request_bodies`] is the one middleware that wraps request bodies: under
//! [`IdleBody`](crate::stalls::IdleBody) (a body that stops arriving fails), and watched here.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    response::Response,
};
use http::{HeaderValue, header};
use http_body::{Body as _, Frame, SizeHint};

use std::time::Duration;

use crate::stalls::IdleBody;

/// Middleware: every request body under [`IdleBody`]; on HTTP/1.1 one the answer left unread is
/// settled too (see the module docs).
pub async fn request_bodies(
    axum::extract::State(idle): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // A request without a body (GETs, probes) has nothing to stall: no wrapper, no allocation.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    // A client that asked to be told before sending (`Expect: 100-continue`) sends nothing when
    // the answer comes first: reading would ask it for the body after all.
    let expects_continue = request
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let watch = request.version() < http::Version::HTTP_2 && !expects_continue;
    let (parts, body) = request.into_parts();
    let body = IdleBody::new(body, idle);
    if !watch {
        return next.run(axum::extract::Request::from_parts(parts, Body::new(body))).await;
    }
    let unread = std::sync::Arc::new(Unread::default());
    let watched = Watched::new(body, unread.clone());
    let response = next.run(axum::extract::Request::from_parts(parts, Body::new(watched))).await;
    unread.settle(response).await
}

/// What the middleware and the body it handed on share: whether the body was read to its end,
/// and what is left of it once the handler dropped it before.
#[derive(Default)]
pub struct Unread {
    ended: AtomicBool,
    left: Mutex<Option<IdleBody>>,
}

impl Unread {
    /// Settles `response` for a body left unread (see the module docs).
    pub async fn settle(&self, mut response: Response) -> Response {
        if self.ended.load(Ordering::Acquire) {
            return response;
        }
        let left = self.left.lock().unwrap_or_else(|e| e.into_inner()).take();
        // A body still held elsewhere (a task reading on) stays there, and the connection
        // closes after the answer, as said.
        let drained = match left {
            Some(rest) => crate::auth::drain_small(Body::new(rest)).await,
            None => self.ended.load(Ordering::Acquire),
        };
        if !drained {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A request body that tells its [`Unread`] whether it was read to its end, and leaves itself
/// there when dropped before.
pub struct Watched {
    inner: Option<IdleBody>,
    unread: Arc<Unread>,
}

impl Watched {
    /// Watches `inner` for `unread`.
    pub fn new(inner: IdleBody, unread: Arc<Unread>) -> Self {
        Self { inner: Some(inner), unread }
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = <IdleBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.unread.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|inner| inner.size_hint()).unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if inner.is_end_stream() {
                self.unread.ended.store(true, Ordering::Release);
            } else {
                *self.unread.left.lock().unwrap_or_else(|e| e.into_inner()) = Some(inner);
            }
        }
    }
}
