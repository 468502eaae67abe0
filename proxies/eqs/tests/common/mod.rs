//! What the in-process server tests share.

use std::{net::SocketAddr, sync::Arc};

use eqs::{EqsProxy, config::EqsConfig, services::memory::MemoryQueue};

/// Serves `config` (on an ephemeral loopback port) over a memory backend until the returned
/// sender is dropped or fired.
pub async fn start(mut config: EqsConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let proxy = EqsProxy::bind_with(&config, Arc::new(MemoryQueue::new(256 * 1024))).await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        proxy
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}
