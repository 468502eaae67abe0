//! [`LookAheadBody`]: a request body that knows it has ended when its last frame goes out.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

/// A body polled one frame ahead, so that [`Body::is_end_stream`] is true as soon as the frame
/// that ends it has been handed out.
///
/// Why: hyper's HTTP/2 client sends a body's frame with END_STREAM only when the body says it
/// has ended right after that frame. tonic's request bodies find out only on the next poll, so a
/// unary gRPC request went out as HEADERS, DATA and an empty DATA frame ending the stream: three
/// writes, three wake-ups of the connection task, three segments on the wire. Looked ahead, the
/// DATA frame carries END_STREAM itself. A streamed body loses nothing: at most one frame the
/// inner body had ready anyway is held, and a pending inner body is simply polled again later.
pub struct LookAheadBody<B: Body> {
    inner: B,
    /// A frame (or error) polled ahead, handed out next.
    next: Option<Result<Frame<B::Data>, B::Error>>,
    /// The inner body has ended (its last poll answered `None`).
    ended: bool,
}

/// `request` with its body looked ahead (see [`LookAheadBody`]): what the SDK's channel and a
/// `remote` backend's transport send.
pub fn looked_ahead(request: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    request.map(|body| tonic::body::Body::new(LookAheadBody::new(body)))
}

impl<B: Body> LookAheadBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner, next: None, ended: false }
    }
}

impl<B: Body + Unpin> Body for LookAheadBody<B>
where
    B::Data: Unpin,
    B::Error: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match this.next.take() {
            Some(ahead) => ahead,
            None if this.ended => return Poll::Ready(None),
            None => match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(frame)) => frame,
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        if frame.is_ok() && !this.ended && !this.inner.is_end_stream() {
            // One poll ahead: `None` now means this frame is the last. `Pending` registered
            // the waker, which at worst wakes the caller once for nothing.
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(ahead)) => this.next = Some(ahead),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        let mut hint = if self.ended { SizeHint::with_exact(0) } else { self.inner.size_hint() };
        if let Some(Ok(frame)) = &self.next
            && let Some(data) = frame.data_ref()
        {
            let held = data.remaining() as u64;
            hint.set_lower(hint.lower().saturating_add(held));
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(held));
            }
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::StreamExt as _;
    use http_body_util::{BodyExt as _, StreamBody};

    type Item = Result<Frame<Bytes>, std::io::Error>;
    type Frames = Vec<Item>;

    fn stream_of(frames: Frames) -> StreamBody<futures::stream::Iter<std::vec::IntoIter<Item>>> {
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_last_frame_comes_out_with_the_end_known() {
        // A stream body learns that it ended only on the poll after its last frame.
        let mut plain = stream_of(vec![Ok(Frame::data(Bytes::from_static(b"one")))]);
        plain.frame().await.unwrap().unwrap();
        assert!(!plain.is_end_stream(), "the plain body does not know yet");

        let mut body = LookAheadBody::new(stream_of(vec![Ok(Frame::data(Bytes::from_static(b"one")))]));
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "one");
        assert!(body.is_end_stream(), "known with the last frame");
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn every_frame_and_error_comes_out_in_order() {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"bc"))),
            Err(std::io::Error::other("cut")),
        ];
        let mut body = LookAheadBody::new(stream_of(frames));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().lower(), 2, "the frame held ahead counts");
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "bc");
        assert_eq!(body.frame().await.unwrap().unwrap_err().to_string(), "cut");
    }

    #[tokio::test]
    async fn a_body_still_coming_is_not_held_up() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
        let mut body = LookAheadBody::new(StreamBody::new(rx));
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"first")))).unwrap();
        // The next frame is not there yet: the first comes out at once, the end not known.
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        assert!(!body.is_end_stream());
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"second")))).unwrap();
        drop(tx);
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "second");
        assert!(body.is_end_stream());
        let rest: Vec<_> =
            futures::stream::unfold(body, |mut b| async move { b.frame().await.map(|f| (f, b)) })
                .collect()
                .await;
        assert!(rest.is_empty());
    }
}
