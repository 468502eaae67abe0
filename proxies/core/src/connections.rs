//! The loop that serves connections: hyper's HTTP/1 + HTTP/2 server on each accepted connection,
//! with the limits a proxy reachable by other hosts needs — a header-read timeout (a client that
//! opens a connection and sends its request line byte by byte, or not at all, is closed) and
//! HTTP/2 keep-alive pings (a peer that vanished without a FIN is found and its streams freed) —
//! and graceful shutdown: stop accepting, let every connection finish its in-flight requests.

use std::{convert::Infallible, time::Duration};

use axum::{Router, body::Body, extract::Request, serve::Listener};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::sync::watch;
use tower::ServiceExt as _;

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
}

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
        let service = app.clone().map_request(|request: Request<Incoming>| request.map(Body::new));
        let service = TowerToHyperService::new(service.map_err(|never: Infallible| match never {}));
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
