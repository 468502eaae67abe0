//! The proxy's listener: at most `max_connections` connections at once, so one client opening
//! connections cannot exhaust the process's file descriptors and lock everyone out; and the
//! open-files limit raised to what the system allows at start.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// File descriptors kept free beside the connections: backend connections, the embedded
/// stores' files, logs.
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard limit (the usual soft 1024 is about 1 000
/// idle connections) and returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    }
}

/// The connection cap: the configured one, or less when the open-files limit is lower.
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let fds = open_files.saturating_sub(RESERVED_FDS).max(16);
    configured.min(usize::try_from(fds).unwrap_or(usize::MAX)).max(1)
}

/// A TCP listener handing out at most `cap` connections at once (TCP_NODELAY set on each).
/// At the cap it stops accepting, so new clients wait in the kernel's backlog, and says so
/// once in the log.
pub struct CappedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    cap: usize,
    write_stall: Duration,
}

impl CappedListener {
    /// Caps `listener` at `cap` connections, each closed when a write waits `write_stall` for
    /// its client.
    pub fn new(listener: TcpListener, cap: usize, write_stall: Duration) -> Self {
        Self { listener, slots: Arc::new(Semaphore::new(cap)), cap, write_stall }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    cap = self.cap,
                    "connection cap reached: new connections wait until one closes (server.max-connections)"
                );
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    // The semaphore is never closed; park rather than spin if it ever is.
                    return std::future::pending().await;
                };
                tracing::info!(cap = self.cap, "below the connection cap again");
                permit
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    // Without TCP_NODELAY small gRPC responses wait on delayed ACKs (~40 ms a call).
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                    }
                    let stall = crate::stalls::WriteStall::new(self.write_stall);
                    return (CountedStream { stream, stall, _permit: permit }, addr);
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning; the slot stays reserved.
                    tracing::error!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection holding one of the listener's slots until it closes, whose writes fail once
/// they wait too long for the client.
pub struct CountedStream {
    stream: TcpStream,
    stall: crate::stalls::WriteStall,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CountedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall.check(cx, polled)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall.check(cx, polled)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stall.check(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_other_files() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 768);
        assert_eq!(connection_cap(4096, 100), 16);
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() {
        use axum::serve::Listener as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut capped = CappedListener::new(listener, 2, Duration::from_secs(60));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let first = capped.accept().await;
        let second = capped.accept().await;
        let third = tokio::time::timeout(Duration::from_millis(200), capped.accept()).await;
        assert!(third.is_err(), "a third connection was accepted over the cap");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(2), capped.accept()).await;
        assert!(third.is_ok(), "a slot freed by a closed connection is reused");
        drop(second);
    }
}
