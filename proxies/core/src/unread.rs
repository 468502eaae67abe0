//! HTTP/1.1 requests whose body the proxy answered without reading (an upload refused up front: a
//! missing bucket, a failed condition, an unknown route). The rest of a small body is read and
//! dropped, so the connection stays usable; a larger one is left, and the answer says
//! `Connection: close`, so the client knows not to send its next request on it (instead of
//! finding the connection closed under it). HTTP/2 streams end on their own and are left alone.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::body::Bytes;
use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use http::{HeaderValue, Version, header};
use http_body::{Body as _, Frame, SizeHint};

/// The middleware (see the module docs).
pub async fn settle_unread_body(request: Request, next: Next) -> Response {
    if request.version() >= Version::HTTP_2 || request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let ended = Arc::new(AtomicBool::new(false));
    let (give_back, mut left) = tokio::sync::oneshot::channel();
    let watched = Watched { inner: Some(body), ended: ended.clone(), give_back: Some(give_back) };
    let mut response = next.run(Request::from_parts(parts, Body::new(watched))).await;
    if ended.load(Ordering::Acquire) {
        return response;
    }
    // The handler dropped the body unread; one still holding it (a task reading on) keeps it,
    // and the connection closes after the answer, as said.
    let drained = match left.try_recv() {
        Ok(rest) => crate::auth::drain_small(rest).await,
        Err(_) => ended.load(Ordering::Acquire),
    };
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that says whether it was read to its end, and hands itself back when dropped
/// before.
struct Watched {
    inner: Option<Body>,
    ended: Arc<AtomicBool>,
    give_back: Option<tokio::sync::oneshot::Sender<Body>>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended.store(true, Ordering::Release);
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
        if let (Some(inner), Some(give_back)) = (self.inner.take(), self.give_back.take()) {
            if inner.is_end_stream() {
                self.ended.store(true, Ordering::Release);
            } else {
                let _ = give_back.send(inner);
            }
        }
    }
}
