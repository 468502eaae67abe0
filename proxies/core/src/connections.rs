//! The loop that serves connections: hyper's HTTP/1 + HTTP/2 server on each accepted connection,
//! with the limits a proxy reachable by other hosts needs — a first request within
//! `header-read-timeout` of the connection's start (a client that sends nothing, only the HTTP/2
//! preface, or its request line byte by byte is closed), connections with no request in flight
//! for `idle-timeout` closed gracefully (see [`crate::idle`]), and HTTP/2 keep-alive pings (a
//! peer that vanished without a FIN is found and its streams freed) — and graceful shutdown:
//! stop accepting, let every connection finish its in-flight requests.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::Request, serve::Listener};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::idle::{IdleReason, InFlight, Tracked};

/// Per-connection limits (from `server:`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// HTTP/2: interval of keep-alive pings, and how long an answer may take before the
    /// connection is closed.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// How long a connection closed for idling may take to finish (an HTTP/2 GOAWAY exchange).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on every connection `listener` hands out until `shutdown` resolves; then stops
/// accepting and returns once every connection has finished (or closed gracefully).
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Io: Tracked,
    L::Addr: std::fmt::Debug,
{
    // Dropped receivers tell connections to finish; the sender's `closed` says all have.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let activity = io.activity().clone();
        // The first request's time counts from here, after a TLS handshake.
        activity.restart_clock();
        // Each request counts as in flight on its connection until its response has been sent.
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            tower::service_fn(move |request: Request<Incoming>| {
                let in_flight = activity.request();
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(Body::new)).await?;
                    Ok::<_, Infallible>(
                        response.map(|body| InFlightBody { body, in_flight: Some(in_flight) }),
                    )
                }
            })
        };
        let service = TowerToHyperService::new(service);
        let (mut stop, done) = (stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.keepalive_interval)
                .keep_alive_timeout(limits.keepalive_timeout)
                .enable_connect_protocol();
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                // The sender only ever goes away: that is the signal.
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
                why = activity.idle_out(limits.header_read_timeout, limits.idle_timeout) => {
                    tracing::debug!(?peer, ?why, "closing an idle connection");
                    if why == IdleReason::NoRequest {
                        // Nothing was asked on it: nothing to close politely.
                        Ok(())
                    } else {
                        connection.as_mut().graceful_shutdown();
                        // A peer that does not take the close is cut once nothing is in flight
                        // (a request that came in as it fell idle is answered first).
                        loop {
                            match tokio::time::timeout(IDLE_CLOSE_GRACE, connection.as_mut()).await {
                                Ok(result) => break result,
                                Err(_) if !activity.busy() => break Ok(()),
                                Err(_) => {}
                            }
                        }
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(?peer, error = %err, "connection ended with an error");
            }
            drop(done);
        });
    }
    drop(listener);
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// A response body that keeps its request counted as in flight until it has produced its last
/// frame (or is dropped): a streamed receive or object download is not an idle connection, and
/// a response the client does not take in (a zero flow-control window) does not keep its
/// connection busy — the write-stall and idle timeouts deal with that one.
struct InFlightBody {
    body: Body,
    in_flight: Option<InFlight>,
}

impl http_body::Body for InFlightBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || this.body.is_end_stream() {
            this.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
